/* otter deploy: create a deployment of one artifact to a list of devices or to every accepted
 * device with a tag. The artifact is named by id or as NAME@VERSION (looked up in the server's
 * artifact list). */
#include "otter/client.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/parse.h"
#include "tool.h"

#define DEPLOYMENT_NAME_MAX 127 /* bytes (otterd's limit) */

const char tool_usage_deploy[] =
    "Usage: otter deploy --artifact ID|NAME@VERSION (--device ID... | --devices ID,ID,... |\n"
    "                    --tag TAG) [--name NAME] [--policy FILE|JSON] [--json] [-q]\n"
    "                    [CONNECTION OPTIONS]\n"
    "\n"
    "Creates a deployment: the devices install the artifact when they next check in.\n"
    "\n"
    "  -a, --artifact ID|NAME@VERSION  the artifact, by id or by name and version\n"
    "  -d, --device ID               a target device (repeatable)\n"
    "      --devices ID,ID,...       target devices, comma-separated (adds to --device)\n"
    "  -t, --tag TAG                 target every accepted device with this tag (instead)\n"
    "  -n, --name NAME               the deployment's name (default: \"NAME VERSION\")\n"
    "  -p, --policy FILE|JSON        a staged rollout: phases, thresholds, pace, schedule,\n"
    "                                approvals (a JSON file, or the JSON itself; see\n"
    "                                docs/rollouts.md)\n"
    "  -j, --json                    print the server's deployment object\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_REMOTE_HELP;

enum { OPT_DEVICES = 0x100 };

struct deploy_opts {
    struct tool_remote remote;
    const char *artifact;
    json_t *devices; /* array of ids */
    const char *tag;
    const char *name;
    json_t *policy;
    bool json;
};

#define POLICY_FILE_MAX (64 * 1024)

static int load_policy(struct tool_ctx *ctx, struct deploy_opts *o, const char *arg)
{
    _cleanup_(ot_buf_release) struct ot_buf buf;
    ot_buf_init(&buf, POLICY_FILE_MAX);
    struct ot_diag d = {0};
    enum ot_err err = arg[0] == '{' ? ot_buf_append_str(&buf, arg) : ot_file_read(arg, &buf, &d);
    if (err)
        return tool_usage_error(ctx, "--policy: %s", d.msg[0] ? d.msg : ot_strerror(err));
    json_decref(o->policy);
    o->policy = NULL;
    if (ot_json_parse(buf.data, buf.len, &o->policy, &d) != OT_OK || !json_is_object(o->policy))
        return tool_usage_error(ctx, "--policy: not a JSON object%s%s", d.msg[0] ? ": " : "",
                                d.msg);
    return TOOL_EXIT_OK;
}

static int add_device(struct tool_ctx *ctx, struct deploy_opts *o, const char *arg)
{
    int64_t id;
    int rc = tool_parse_id(ctx, "a device ID", arg, &id);
    if (rc)
        return rc;
    size_t i;
    json_t *v;
    json_array_foreach(o->devices, i, v)
        if (json_integer_value(v) == id)
            return TOOL_EXIT_OK; /* named twice: still one target */
    if (json_array_append_new(o->devices, json_integer(id)))
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    return TOOL_EXIT_OK;
}

static int add_devices(struct tool_ctx *ctx, struct deploy_opts *o, const char *arg)
{
    _cleanup_free_ char *copy = strdup(arg);
    if (!copy)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    char *save = NULL;
    int rc = TOOL_EXIT_OK;
    /* strtok_r skips empty fields, so "1,,2" and a trailing comma are refused by hand. */
    if (!arg[0] || arg[0] == ',' || arg[strlen(arg) - 1] == ',' || strstr(arg, ",,"))
        return tool_usage_error(ctx, "--devices wants ID,ID,..., not '%s'", arg);
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save))
        rc = add_device(ctx, o, t);
    return rc;
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct deploy_opts *o)
{
    switch (c) {
    case 'a':
        o->artifact = optarg;
        return TOOL_EXIT_OK;
    case 'd':
        return add_device(ctx, o, optarg);
    case OPT_DEVICES:
        return add_devices(ctx, o, optarg);
    case 't':
        o->tag = optarg;
        return TOOL_EXIT_OK;
    case 'n':
        o->name = optarg;
        return TOOL_EXIT_OK;
    case 'p':
        return load_policy(ctx, o, optarg);
    case 'j':
        o->json = true;
        return TOOL_EXIT_OK;
    case 'q':
        ctx->quiet = true;
        return TOOL_EXIT_OK;
    case 'h':
        return -1;
    default:
        return tool_bad_option(ctx, c, argv);
    }
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct deploy_opts *o)
{
    static const struct option longopts[] = {
        {"artifact", required_argument, NULL, 'a'},
        {"device", required_argument, NULL, 'd'},
        {"devices", required_argument, NULL, OPT_DEVICES},
        {"tag", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},
        {"policy", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":a:d:t:n:p:jqh", longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    }
    if (optind != argc)
        return tool_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    if (!o->artifact)
        return tool_usage_error(ctx, "missing --artifact ID|NAME@VERSION");
    bool have_devices = json_array_size(o->devices) > 0;
    if (have_devices == (o->tag != NULL))
        return tool_usage_error(ctx, have_devices ? "give devices or --tag, not both"
                                                  : "missing targets: --device, --devices or --tag");
    if (o->name && (!o->name[0] || strlen(o->name) > DEPLOYMENT_NAME_MAX))
        return tool_usage_error(ctx, "--name must be 1..%d bytes", DEPLOYMENT_NAME_MAX);
    return TOOL_EXIT_OK;
}

/* ---- which artifact ---------------------------------------------------------------------------- */

static bool matches(const json_t *a, const char *name, const char *version)
{
    const char *n = json_string_value(json_object_get(a, "name"));
    const char *v = json_string_value(json_object_get(a, "version"));
    return n && v && strcmp(n, name) == 0 && strcmp(v, version) == 0;
}

/* NAME@VERSION: artifact names cannot hold '@' (they are safe file names), versions can. */
static int find_by_name(struct tool_ctx *ctx, struct ot_client *c, const char *spec,
                        json_t **ret)
{
    const char *at = strchr(spec, '@');
    if (!at || at == spec || !at[1])
        return tool_usage_error(ctx, "--artifact wants an ID or NAME@VERSION, not '%s'", spec);
    _cleanup_free_ char *name = strndup(spec, (size_t)(at - spec));
    if (!name)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    static const struct tool_paging pg = {"artifacts", "after", "next_after", false};
    json_t *all = NULL;
    int rc = tool_api_list(ctx, c, "/api/v1/artifacts", &pg, 0, &all);
    if (rc)
        return rc;
    size_t i;
    json_t *a;
    json_array_foreach(all, i, a) {
        if (matches(a, name, at + 1)) {
            *ret = json_incref(a);
            json_decref(all);
            return TOOL_EXIT_OK;
        }
    }
    json_decref(all);
    return tool_failf(ctx, OT_ERR_NOENT, "no artifact %s version %s on the server", name, at + 1);
}

static int find_artifact(struct tool_ctx *ctx, struct ot_client *c, const char *spec,
                         json_t **ret)
{
    uint64_t id;
    if (ot_parse_u64(spec, 1, INT64_MAX, &id) != OT_OK)
        return find_by_name(ctx, c, spec, ret);
    char path[64];
    return tool_api_object(ctx, c, "GET", tool_api_path(path, sizeof(path), "artifacts",
                                                        (int64_t)id, NULL),
                           NULL, ret);
}

/* ---- the deployment ---------------------------------------------------------------------------- */

static json_t *request_body(const struct deploy_opts *o, const json_t *artifact)
{
    char name[DEPLOYMENT_NAME_MAX + 1];
    if (o->name)
        snprintf(name, sizeof(name), "%s", o->name);
    else
        snprintf(name, sizeof(name), "%s %s", tool_jstr(artifact, "name"),
                 tool_jstr(artifact, "version"));
    json_t *body = o->tag ? json_pack("{s:s, s:I, s:s}", "name", name, "artifact_id",
                                      (json_int_t)tool_jint(artifact, "id"), "tag", o->tag)
                          : json_pack("{s:s, s:I, s:O}", "name", name, "artifact_id",
                                      (json_int_t)tool_jint(artifact, "id"), "devices",
                                      o->devices);
    if (body && o->policy && json_object_set(body, "policy", o->policy) != 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static int report(const struct tool_ctx *ctx, const struct deploy_opts *o, const json_t *dep)
{
    if (o->json)
        return !ctx->quiet && tool_print_json(dep) ? tool_failf(ctx, OT_ERR_IO, "cannot write JSON")
                                                   : TOOL_EXIT_OK;
    char id[32], n[32];
    int64_t count = tool_jint(dep, "device_count");
    tool_out_line(ctx, "deployment %s created: %s %s to %s device%s",
                  tool_jint_str(dep, "id", id, sizeof(id)), tool_jstr(dep, "artifact_name"),
                  tool_jstr(dep, "artifact_version"),
                  tool_jint_str(dep, "device_count", n, sizeof(n)), count == 1 ? "" : "s");
    return TOOL_EXIT_OK;
}

static int deploy(struct tool_ctx *ctx, const struct deploy_opts *o, struct ot_client *c)
{
    json_t *artifact = NULL, *dep = NULL;
    int rc = find_artifact(ctx, c, o->artifact, &artifact);
    if (rc)
        return rc;
    json_t *body = request_body(o, artifact);
    json_decref(artifact);
    if (!body)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    rc = tool_api_object(ctx, c, "POST", "/api/v1/deployments", body, &dep);
    json_decref(body);
    if (!rc)
        rc = report(ctx, o, dep);
    json_decref(dep);
    return rc;
}

int tool_cmd_deploy(struct tool_ctx *ctx, int argc, char **argv)
{
    struct deploy_opts o = {.devices = json_array()};
    if (!o.devices)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc) {
        json_decref(o.devices);
        json_decref(o.policy);
        return rc < 0 ? tool_help(ctx) : rc;
    }
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    if (!rc)
        rc = deploy(ctx, &o, c);
    json_decref(o.devices);
    json_decref(o.policy);
    return rc;
}
