/* What `otter deploy` and `otter templates create` share: the target of a deployment (device ids,
 * a tag, or a dynamic group given as a query) and its rollout policy. The policy is --policy's
 * JSON object with the convenience flags (--type, --retries, --window...) merged in; a key that
 * both set must have the same value, so that nothing is silently overridden. */
#include "otter/file.h"
#include "otter/json.h"
#include "otter/parse.h"
#include "tool.h"

#define POLICY_FILE_MAX (64 * 1024)
#define WINDOW_DURATION_MAX_MS (366ULL * 24 * 3600 * 1000) /* the server says what it takes */

/* ---- options --------------------------------------------------------------------------------- */

static int load_policy(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    _cleanup_(ot_buf_release) struct ot_buf buf;
    ot_buf_init(&buf, POLICY_FILE_MAX);
    struct ot_diag d = {0};
    enum ot_err err = arg[0] == '{' ? ot_buf_append_str(&buf, arg) : ot_file_read(arg, &buf, &d);
    if (err)
        return tool_usage_error(ctx, "--policy: %s", d.msg[0] ? d.msg : ot_strerror(err));
    json_decref(s->policy);
    s->policy = NULL;
    if (ot_json_parse(buf.data, buf.len, &s->policy, &d) != OT_OK || !json_is_object(s->policy))
        return tool_usage_error(ctx, "--policy: not a JSON object%s%s", d.msg[0] ? ": " : "",
                                d.msg);
    return TOOL_EXIT_OK;
}

static int add_device(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    int64_t id;
    int rc = tool_parse_id(ctx, "a device ID", arg, &id);
    if (rc)
        return rc;
    if (!s->devices && !(s->devices = json_array()))
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(s->devices, i, v)
        if (json_integer_value(v) == id)
            return TOOL_EXIT_OK; /* named twice: still one target */
    if (json_array_append_new(s->devices, json_integer(id)))
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    return TOOL_EXIT_OK;
}

static int add_devices(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    /* strtok_r skips empty fields, so "1,,2" and a trailing comma are refused by hand. */
    if (!arg[0] || arg[0] == ',' || arg[strlen(arg) - 1] == ',' || strstr(arg, ",,"))
        return tool_usage_error(ctx, "--devices wants ID,ID,..., not '%s'", arg);
    _cleanup_free_ char *copy = strdup(arg);
    if (!copy)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    char *save = NULL;
    int rc = TOOL_EXIT_OK;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save))
        rc = add_device(ctx, s, t);
    return rc;
}

/* A convenience flag's policy key; the same flag twice must say the same thing. */
static int set_flag(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *flag,
                    const char *key, json_t *v)
{
    if (!v || (!s->flags && !(s->flags = json_object()))) {
        json_decref(v);
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    }
    const json_t *old = json_object_get(s->flags, key);
    if (old && !json_equal(old, v)) {
        json_decref(v);
        return tool_usage_error(ctx, "%s given twice with different values", flag);
    }
    if (json_object_set_new(s->flags, key, v))
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    return TOOL_EXIT_OK;
}

/* The CLI spells it download-only (like its other words); the API download_only. */
static int set_type(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    static const char *const types[][2] = {
        {"forced", "forced"},
        {"soft", "soft"},
        {"download-only", "download_only"},
        {"download_only", "download_only"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(types); i++)
        if (strcmp(arg, types[i][0]) == 0)
            return set_flag(ctx, s, "--type", "type", json_string(types[i][1]));
    return tool_usage_error(ctx, "--type must be forced, soft or download-only, not '%s'", arg);
}

static int set_retries(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    uint64_t n;
    if (ot_parse_u64(arg, 0, UINT32_MAX, &n) != OT_OK)
        return tool_usage_error(ctx, "--retries wants a number, not '%s'", arg);
    return set_flag(ctx, s, "--retries", "retries", json_integer((json_int_t)n));
}

/* A text option (the tag, the query, the window's parts): given twice, it must say the same. The
 * window's parts become one object in check_window. */
static int set_once(const struct tool_ctx *ctx, const char **part, const char *flag,
                           const char *arg)
{
    if (*part && strcmp(*part, arg) != 0)
        return tool_usage_error(ctx, "%s given twice with different values", flag);
    if (!arg[0])
        return tool_usage_error(ctx, "%s must not be empty", flag);
    *part = arg;
    return TOOL_EXIT_OK;
}

static int set_window_duration(const struct tool_ctx *ctx, struct tool_deploy_spec *s,
                               const char *arg)
{
    uint64_t ms;
    if (ot_parse_duration_ms(arg, WINDOW_DURATION_MAX_MS, &ms) != OT_OK || ms < 1000)
        return tool_usage_error(ctx, "--window-duration wants a duration like 3h or 90m, not "
                                "'%s'", arg);
    return set_once(ctx, &s->window_duration, "--window-duration", arg);
}

static int set_cap(const struct tool_ctx *ctx, struct tool_deploy_spec *s, const char *arg)
{
    if (ot_parse_u64(arg, 1, UINT32_MAX, &s->cap) != OT_OK)
        return tool_usage_error(ctx, "--cap wants a positive number of devices, not '%s'", arg);
    return TOOL_EXIT_OK;
}

static int take_opt(const struct tool_ctx *ctx, struct tool_deploy_spec *s, int c)
{
    switch (c) {
    case 'd':
        return add_device(ctx, s, optarg);
    case TOOL_OPT_DEVICES:
        return add_devices(ctx, s, optarg);
    case 't':
        return set_once(ctx, &s->tag, "--tag", optarg);
    case TOOL_OPT_QUERY:
        return set_once(ctx, &s->query, "--query", optarg);
    case TOOL_OPT_CAP:
        return set_cap(ctx, s, optarg);
    case TOOL_OPT_NO_CONTINUOUS:
        s->no_continuous = true;
        return TOOL_EXIT_OK;
    case 'p':
        return load_policy(ctx, s, optarg);
    case TOOL_OPT_TYPE:
        return set_type(ctx, s, optarg);
    case TOOL_OPT_RETRIES:
        return set_retries(ctx, s, optarg);
    case TOOL_OPT_WINDOW:
        return set_once(ctx, &s->window, "--window", optarg);
    case TOOL_OPT_WINDOW_DURATION:
        return set_window_duration(ctx, s, optarg);
    default: /* TOOL_OPT_WINDOW_TZ */
        return set_once(ctx, &s->window_tz, "--window-tz", optarg);
    }
}

bool tool_deploy_spec_opt(const struct tool_ctx *ctx, struct tool_deploy_spec *s, int c,
                          int *ret_rc)
{
    bool mine = c == 'd' || c == 't' || c == 'p' ||
                (c >= TOOL_OPT_DEVICES && c <= TOOL_OPT_WINDOW_TZ);
    if (mine)
        *ret_rc = take_opt(ctx, s, c);
    return mine;
}

/* ---- checks and the policy merge ------------------------------------------------------------- */

static int check_target(const struct tool_ctx *ctx, const struct tool_deploy_spec *s)
{
    const char *given[3];
    size_t n = 0;
    if (json_array_size(s->devices))
        given[n++] = "--device";
    if (s->tag)
        given[n++] = "--tag";
    if (s->query)
        given[n++] = "--query";
    if (n == 0)
        return tool_usage_error(ctx, "missing targets: --device, --devices, --tag or --query");
    if (n > 1)
        return tool_usage_error(ctx, "%s and %s: give one target, not both", given[0], given[1]);
    if ((s->cap || s->no_continuous) && !s->query)
        return tool_usage_error(ctx, "--cap and --no-continuous go with --query");
    return TOOL_EXIT_OK;
}

/* --window CRON --window-duration D [--window-tz TZ] as the policy's "maintenance_window". */
static int check_window(const struct tool_ctx *ctx, struct tool_deploy_spec *s)
{
    if (!s->window && (s->window_duration || s->window_tz))
        return tool_usage_error(ctx, "--window-duration and --window-tz go with --window CRON");
    if (!s->window)
        return TOOL_EXIT_OK;
    if (!s->window_duration)
        return tool_usage_error(ctx, "--window needs --window-duration (how long it stays open, "
                                "e.g. 3h)");
    /* A bare number is seconds for both; the server checks the cron expression and the zone. */
    uint64_t secs = 0;
    json_t *dur = ot_parse_u64(s->window_duration, 0, INT64_MAX, &secs) == OT_OK
                      ? json_integer((json_int_t)secs)
                      : json_string(s->window_duration);
    json_t *w = json_pack("{s:s, s:o}", "cron", s->window, "duration", dur);
    if (w && s->window_tz && json_object_set_new(w, "timezone", json_string(s->window_tz))) {
        json_decref(w);
        w = NULL;
    }
    if (!w)
        return tool_usage_error(ctx, "--window and --window-tz must be UTF-8 text");
    return set_flag(ctx, s, "--window", "maintenance_window", w);
}

static const char *flag_of(const char *key)
{
    return strcmp(key, "type") == 0      ? "--type"
           : strcmp(key, "retries") == 0 ? "--retries"
                                         : "--window";
}

/* Each flag's key into the policy; a key --policy already has must hold the same value there. */
static int merge_policy(const struct tool_ctx *ctx, struct tool_deploy_spec *s)
{
    if (!s->flags)
        return TOOL_EXIT_OK;
    if (!s->policy && !(s->policy = json_object()))
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(s->flags, key, v) {
        const json_t *old = json_object_get(s->policy, key);
        if (old && !json_equal(old, v)) {
            _cleanup_free_ char *there = json_dumps(old, JSON_COMPACT | JSON_ENCODE_ANY);
            _cleanup_free_ char *here = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            return tool_usage_error(ctx, "%s conflicts with --policy's \"%s\" (%s there, %s "
                                    "here): give it once", flag_of(key), key,
                                    there ? there : "?", here ? here : "?");
        }
        if (json_object_set(s->policy, key, v))
            return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    }
    return TOOL_EXIT_OK;
}

int tool_deploy_spec_check(const struct tool_ctx *ctx, struct tool_deploy_spec *s)
{
    int rc = check_target(ctx, s);
    if (!rc)
        rc = check_window(ctx, s);
    return rc ? rc : merge_policy(ctx, s);
}

enum ot_err tool_deploy_spec_target(const struct tool_deploy_spec *s, json_t *obj)
{
    int bad = 0;
    if (s->tag)
        bad |= json_object_set_new(obj, "tag", json_string(s->tag));
    else if (s->query)
        bad |= json_object_set_new(obj, "query", json_string(s->query));
    else
        bad |= json_object_set(obj, "devices", s->devices);
    if (s->query && s->cap)
        bad |= json_object_set_new(obj, "cap", json_integer((json_int_t)s->cap));
    if (s->query && s->no_continuous)
        bad |= json_object_set_new(obj, "continuous", json_false());
    return bad ? OT_ERR_INVALID : OT_OK; /* out of memory, or text that is not UTF-8 */
}

void tool_deploy_spec_release(struct tool_deploy_spec *s)
{
    json_decref(s->devices);
    json_decref(s->policy);
    json_decref(s->flags);
    *s = (struct tool_deploy_spec){0};
}

/* ---- showing a target ------------------------------------------------------------------------ */

const char *tool_target_text(const json_t *target, char *buf, size_t len)
{
    char list[512], cap[48] = "";
    const json_t *tag = json_object_get(target, "tag");
    const json_t *query = json_object_get(target, "query");
    if (json_is_string(tag)) {
        snprintf(buf, len, "tag %s", json_string_value(tag));
    } else if (json_is_string(query)) {
        if (json_is_integer(json_object_get(target, "cap")))
            snprintf(cap, sizeof(cap), "cap %lld, ", (long long)tool_jint(target, "cap"));
        snprintf(buf, len, "query %s (%s%s)", json_string_value(query), cap,
                 json_is_false(json_object_get(target, "continuous")) ? "fixed" : "continuous");
    } else if (json_is_array(json_object_get(target, "devices"))) {
        snprintf(buf, len, "devices %s",
                 tool_jflat(json_object_get(target, "devices"), list, sizeof(list)));
    } else {
        tool_jflat(target, buf, len);
    }
    return buf;
}
