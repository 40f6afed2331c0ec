/* otter deployments: list, inspect, cancel deployments and steer staged rollouts
 * (/api/v1/deployments). */
#include <time.h>

#include "otter/client.h"
#include "otter/parse.h"
#include "tool.h"

const char tool_usage_deployments[] =
    "Usage: otter deployments list [--status active|finished|cancelled] [--limit N] [--json]\n"
    "       otter deployments show ID [--device DEVICE_ID] [--watch[=SECONDS]] [--json]\n"
    "       otter deployments cancel ID [--json]\n"
    "       otter deployments pause|resume ID [--json]\n"
    "       otter deployments approve ID [--phase N] [--json]\n"
    "       otter deployments decisions ID [--json]\n"
    "       otter deployments export ID [--json]\n"
    "\n"
    "list     deployments, newest first\n"
    "show     a deployment: its artifact, target, the devices per state, and every device's\n"
    "         state, progress and last message; with --device, one device's timeline;\n"
    "         for a staged rollout, its phases, ETA and install settings (type, retries,\n"
    "         maintenance window)\n"
    "cancel   stop an active deployment: devices that have not started will not; devices\n"
    "         already under way finish and report\n"
    "pause    a staged rollout releases no more devices (those under way go on)\n"
    "resume   a paused rollout goes on (failures seen before no longer count)\n"
    "approve  your approval of a rollout phase (each operator's token counts once)\n"
    "decisions  the rollout engine's decisions, with their reasons\n"
    "export   every device row as CSV (with --json: JSON), for spreadsheets and scripts\n"
    "\n"
    "  -s, --status S                list: active, finished or cancelled\n"
    "  -n, --limit N                 list: at most N deployments\n"
    "  -d, --device DEVICE_ID        show: this device's reports in the deployment, with logs\n"
    "  -w, --watch[=SECONDS]         show: print the progress again every SECONDS (2) until\n"
    "                                the deployment ends\n"
    "  -p, --phase N                 approve: the phase (default: the current one)\n"
    "  -j, --json                    print the server's JSON (list: an array; show: the\n"
    "                                deployment with its \"devices\" rows)\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_REMOTE_HELP;

struct deployments_opts {
    struct tool_remote remote;
    const char *sub;
    const char *status;
    uint64_t limit;
    int64_t device;
    bool json;
    int64_t id;
    uint64_t watch;    /* seconds, 0: no */
    uint64_t phase;
};

static int print_json_or_fail(const struct tool_ctx *ctx, const json_t *v)
{
    if (ctx->quiet || !tool_print_json(v))
        return TOOL_EXIT_OK;
    return tool_failf(ctx, OT_ERR_IO, "cannot write JSON");
}

/* Seconds for humans, at most max_units units: 725 as "12m5s" (2) or "12m" (1), 10800 as "3h". */
static const char *duration_text(int64_t secs, int max_units, char *buf, size_t len)
{
    static const struct {
        int64_t s;
        char unit;
    } units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    size_t pos = 0;
    int used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < OT_ARRAY_SIZE(units) && used < max_units && pos < len; i++) {
        int64_t n = secs / units[i].s;
        secs %= units[i].s;
        if (n == 0 && used == 0)
            continue; /* leading zero units are left out, inner ones count */
        used++;
        if (n == 0)
            continue;
        int w = snprintf(buf + pos, len - pos, "%lld%c", (long long)n, units[i].unit);
        pos = w > 0 ? OT_MIN(pos + (size_t)w, len - 1) : pos;
    }
    return buf[0] ? buf : "0s";
}

/* "eta_s": seconds, or null when the server cannot tell (nothing finished yet, paused, ...). */
static const char *eta_text(const json_t *obj, char *buf, size_t len)
{
    const json_t *eta = json_object_get(obj, "eta_s");
    if (!json_is_integer(eta) || json_integer_value(eta) < 0)
        return "-";
    return duration_text(json_integer_value(eta), 2, buf, len);
}

/* ---- list ------------------------------------------------------------------------------------ */

static int print_list(const struct tool_ctx *ctx, const json_t *deps)
{
    static const char *const head[] = {"ID", "STATUS", "NAME", "ARTIFACT", "TARGET", "DEVICES",
                                       "CREATED"};
    struct tool_table t;
    tool_table_init(&t, OT_ARRAY_SIZE(head));
    enum ot_err err = tool_table_row(&t, head);
    size_t i;
    json_t *dep;
    json_array_foreach(deps, i, dep) {
        char id[32], art[256], target[256], n[32], created[32];
        snprintf(art, sizeof(art), "%s %s", tool_jstr(dep, "artifact_name"),
                 tool_jstr(dep, "artifact_version"));
        const char *row[] = {
            tool_jint_str(dep, "id", id, sizeof(id)), tool_jstr(dep, "status"),
            tool_jstr(dep, "name"), art,
            tool_target_text(json_object_get(dep, "target"), target, sizeof(target)),
            tool_jint_str(dep, "device_count", n, sizeof(n)),
            tool_jtime(dep, "created_at", "-", created, sizeof(created)),
        };
        if (!err)
            err = tool_table_row(&t, row);
    }
    if (!err)
        tool_table_print(ctx, &t);
    tool_table_release(&t);
    return err ? tool_failf(ctx, err, "out of memory") : TOOL_EXIT_OK;
}

static int run_list(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    static const struct tool_paging pg = {"deployments", "before", "next_before", true};
    struct ot_buf path;
    ot_buf_init(&path, OT_CLIENT_URL_MAX);
    enum ot_err err = ot_buf_append_str(&path, "/api/v1/deployments");
    if (!err && o->status)
        err = ot_client_query_add(&path, "status", o->status);
    json_t *deps = NULL;
    int rc = err ? tool_failf(ctx, err, "request path too long")
                 : tool_api_list(ctx, c, ot_buf_str(&path), &pg, o->limit, &deps);
    ot_buf_release(&path);
    if (!rc)
        rc = o->json ? print_json_or_fail(ctx, deps) : print_list(ctx, deps);
    json_decref(deps);
    return rc;
}

/* ---- show ------------------------------------------------------------------------------------ */

static const char *const rollup_order[] = {"pending",   "downloading", "waiting",     "installing",
                                           "rebooting", "verifying",   "success",     "failure",
                                           "rolled_back", "cancelled", "skipped"};

/* The non-zero counts: "pending 2, success 1". */
static const char *rollup_text(const json_t *rollup, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < OT_ARRAY_SIZE(rollup_order) && pos < len; i++) {
        int64_t n = tool_jint(rollup, rollup_order[i]);
        if (n <= 0)
            continue;
        int w = snprintf(buf + pos, len - pos, "%s%s %lld", pos ? ", " : "", rollup_order[i],
                         (long long)n);
        pos = w > 0 ? OT_MIN(pos + (size_t)w, len - 1) : pos;
    }
    return buf[0] ? buf : "-";
}

static void print_deployment(const struct tool_ctx *ctx, const json_t *dep)
{
    char buf[1024], buf2[64];
    tool_out_field(ctx, "id", tool_jint_str(dep, "id", buf, sizeof(buf)));
    tool_out_field(ctx, "name", tool_jstr(dep, "name"));
    snprintf(buf, sizeof(buf), "%s %s (artifact %s)", tool_jstr(dep, "artifact_name"),
             tool_jstr(dep, "artifact_version"),
             tool_jint_str(dep, "artifact_id", buf2, sizeof(buf2)));
    tool_out_field(ctx, "artifact", buf);
    tool_out_field(ctx, "target",
                   tool_target_text(json_object_get(dep, "target"), buf, sizeof(buf)));
    tool_out_field(ctx, "status", tool_jstr(dep, "status"));
    tool_out_field(ctx, "created", tool_jtime(dep, "created_at", "-", buf, sizeof(buf)));
    tool_out_field(ctx, "created by", tool_jstr(dep, "created_by"));
    tool_out_field(ctx, "finished", tool_jtime(dep, "finished_at", "-", buf, sizeof(buf)));
    tool_out_field(ctx, "devices", tool_jint_str(dep, "device_count", buf, sizeof(buf)));
    tool_out_field(ctx, "states", rollup_text(json_object_get(dep, "rollup"), buf, sizeof(buf)));
}

/* How the policy has devices install, where it differs from the defaults (forced, no retries,
 * any time): "type soft, retries 2, window 0 2 * * * for 3h (Europe/Berlin)". */
static const char *install_text(const json_t *policy, char *buf, size_t len)
{
    const char *type = json_string_value(json_object_get(policy, "type"));
    int64_t retries = tool_jint(policy, "retries");
    const json_t *w = json_object_get(policy, "maintenance_window");
    size_t pos = 0;
    buf[0] = '\0';
    if (type && strcmp(type, "forced") != 0)
        pos += (size_t)OT_MAX(snprintf(buf, len, "type %s", type), 0);
    if (retries > 0 && pos < len)
        pos += (size_t)OT_MAX(snprintf(buf + pos, len - pos, "%sretries %lld", pos ? ", " : "",
                                       (long long)retries), 0);
    if (json_is_object(w) && pos < len) {
        char dur[32];
        snprintf(buf + pos, len - pos, "%swindow %s for %s (%s)", pos ? ", " : "",
                 tool_jstr(w, "cron"), duration_text(tool_jint(w, "duration"), 4, dur, sizeof(dur)),
                 json_is_string(json_object_get(w, "timezone")) ? tool_jstr(w, "timezone") : "UTC");
    }
    return buf;
}

static void print_phase(const struct tool_ctx *ctx, const json_t *ph, size_t i, bool current)
{
    char buf[1024], states[512], rate[16] = "-", field[96], eta[48] = "", e[32];
    const json_t *sr = json_object_get(ph, "success_rate");
    if (json_is_integer(sr))
        snprintf(rate, sizeof(rate), "%lld%%", (long long)json_integer_value(sr));
    const json_t *counts = json_object_get(ph, "counts");
    rollup_text(counts, states, sizeof(states)); /* states stays "" when all are 0 */
    long long unreleased = (long long)tool_jint(counts, "unreleased");
    if (current)
        snprintf(eta, sizeof(eta), ", eta %s", eta_text(ph, e, sizeof(e)));
    snprintf(field, sizeof(field), "  %zu %s", i + 1, tool_jstr(ph, "name"));
    snprintf(buf, sizeof(buf), "%s: devices %lld..%lld, success %s; %s%s%lld not released%s%s",
             tool_jstr(ph, "state"), (long long)tool_jint(ph, "first"),
             (long long)tool_jint(ph, "last"), rate, states, states[0] ? ", " : "", unreleased,
             eta, tool_jint(ph, "approvals_needed") ? " (approvals needed)" : "");
    tool_out_field(ctx, field, buf);
}

/* A staged rollout: its state, how devices install, and each phase's counts. */
static void print_rollout(const struct tool_ctx *ctx, const json_t *ro)
{
    if (!ro)
        return;
    char buf[1024], eta[32];
    int64_t phase = tool_jint(ro, "phase");
    snprintf(buf, sizeof(buf),
             "%s, phase %lld of %zu (%s), %lld of %lld devices released, eta %s",
             tool_jstr(ro, "state"), (long long)phase,
             json_array_size(json_object_get(ro, "phases")), tool_jstr(ro, "phase_name"),
             (long long)tool_jint(ro, "released"), (long long)tool_jint(ro, "devices"),
             eta_text(ro, eta, sizeof(eta)));
    tool_out_field(ctx, "rollout", buf);
    if (tool_jstr(ro, "reason")[0] != '-')
        tool_out_field(ctx, "reason", tool_jstr(ro, "reason"));
    if (install_text(json_object_get(ro, "policy"), buf, sizeof(buf))[0])
        tool_out_field(ctx, "install", buf);
    size_t i;
    json_t *ph;
    json_array_foreach(json_object_get(ro, "phases"), i, ph)
        print_phase(ctx, ph, i, (int64_t)i + 1 == phase);
}

static const char *progress_text(const json_t *row, char *buf, size_t len)
{
    const json_t *p = json_object_get(row, "progress");
    if (!json_is_integer(p) || json_integer_value(p) < 0)
        return "-";
    snprintf(buf, len, "%lld%%", (long long)json_integer_value(p));
    return buf;
}

/* The RETRIES column only where retries can happen: a policy with "retries", or a row that
 * took some (a policy otterd no longer reports). */
static bool shows_retries(const json_t *dep, const json_t *rows)
{
    if (tool_jint(json_object_get(json_object_get(dep, "rollout"), "policy"), "retries") > 0)
        return true;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
        if (tool_jint(r, "retries") > 0)
            return true;
    return false;
}

static int print_rows(const struct tool_ctx *ctx, const json_t *rows, bool retries)
{
    static const char *const head[] = {"DEVICE", "STATUS", "PROGRESS", "RETRIES", "UPDATED",
                                       "MESSAGE"};
    /* without retries, the same table minus that column */
    static const size_t cols_all[] = {0, 1, 2, 3, 4, 5}, cols_plain[] = {0, 1, 2, 4, 5};
    const size_t *cols = retries ? cols_all : cols_plain;
    size_t ncols = retries ? OT_ARRAY_SIZE(cols_all) : OT_ARRAY_SIZE(cols_plain);
    struct tool_table t;
    tool_table_init(&t, ncols);
    const char *cells[OT_ARRAY_SIZE(head)];
    for (size_t k = 0; k < ncols; k++)
        cells[k] = head[cols[k]];
    enum ot_err err = tool_table_row(&t, cells);
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        char id[32], prog[16], upd[32], tries[32];
        const char *row[] = {
            tool_jint_str(r, "device_id", id, sizeof(id)), tool_jstr(r, "status"),
            progress_text(r, prog, sizeof(prog)), tool_jint_str(r, "retries", tries, sizeof(tries)),
            tool_jtime(r, "updated_at", "-", upd, sizeof(upd)), tool_jstr(r, "message"),
        };
        for (size_t k = 0; k < ncols; k++)
            cells[k] = row[cols[k]];
        if (!err)
            err = tool_table_row(&t, cells);
    }
    if (!err) {
        tool_out(ctx, "\n");
        tool_table_print(ctx, &t);
    }
    tool_table_release(&t);
    return err ? tool_failf(ctx, err, "out of memory") : TOOL_EXIT_OK;
}

static int show_deployment(struct tool_ctx *ctx, const struct deployments_opts *o,
                           struct ot_client *c)
{
    static const struct tool_paging pg = {"devices", "after", "next_after", false};
    char path[96];
    json_t *dep = NULL, *rows = NULL;
    int rc = tool_api_object(ctx, c, "GET",
                             tool_api_path(path, sizeof(path), "deployments", o->id, NULL), NULL,
                             &dep);
    if (!rc)
        rc = tool_api_list(ctx, c, tool_api_path(path, sizeof(path), "deployments", o->id,
                                                 "devices"),
                           &pg, 0, &rows);
    if (!rc && o->json) {
        rc = json_object_set(dep, "devices", rows) ? tool_failf(ctx, OT_ERR_NOMEM, "out of memory")
                                                   : print_json_or_fail(ctx, dep);
    } else if (!rc) {
        print_deployment(ctx, dep);
        print_rollout(ctx, json_object_get(dep, "rollout"));
        rc = print_rows(ctx, rows, shows_retries(dep, rows));
    }
    json_decref(dep);
    json_decref(rows);
    return rc;
}

/* --watch: one progress line per round (bounded: a day at most) until the deployment ends. */
static int watch_deployment(struct tool_ctx *ctx, const struct deployments_opts *o,
                            struct ot_client *c)
{
    char path[96], buf[512];
    uint64_t rounds = 86400 / o->watch + 1;
    for (uint64_t r = 0; r < rounds; r++) {
        json_t *dep = NULL;
        int rc = tool_api_object(ctx, c, "GET",
                                 tool_api_path(path, sizeof(path), "deployments", o->id, NULL),
                                 NULL, &dep);
        if (rc)
            return rc;
        const json_t *ro = json_object_get(dep, "rollout");
        char when[16], eta[32];
        time_t now = time(NULL);
        strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
        rollup_text(json_object_get(dep, "rollup"), buf, sizeof(buf));
        if (ro)
            tool_out_line(ctx,
                          "%s %s | rollout %s, phase %lld (%s), released %lld/%lld, eta %s | %s",
                          when, tool_jstr(dep, "status"), tool_jstr(ro, "state"),
                          (long long)tool_jint(ro, "phase"), tool_jstr(ro, "phase_name"),
                          (long long)tool_jint(ro, "released"),
                          (long long)tool_jint(ro, "devices"), eta_text(ro, eta, sizeof(eta)),
                          buf);
        else
            tool_out_line(ctx, "%s %s | %s", when, tool_jstr(dep, "status"), buf);
        bool active = strcmp(tool_jstr(dep, "status"), "active") == 0;
        json_decref(dep);
        if (!active)
            return TOOL_EXIT_OK;
        struct timespec ts = {(time_t)o->watch, 0};
        nanosleep(&ts, NULL);
    }
    return TOOL_EXIT_OK;
}

static void print_events(const struct tool_ctx *ctx, const json_t *events)
{
    size_t i;
    json_t *e;
    if (json_array_size(events) == 0)
        tool_out(ctx, "  (no reports yet)\n");
    json_array_foreach(events, i, e) {
        char at[32], prog[16];
        tool_out_line(ctx, "  %s  %-11s %4s  %s", tool_jtime(e, "at", "-", at, sizeof(at)),
                      tool_jstr(e, "status"), progress_text(e, prog, sizeof(prog)),
                      tool_jstr(e, "message"));
        const char *log = json_string_value(json_object_get(e, "log"));
        /* Log lines are the device's own text: each one made safe and indented. */
        for (const char *p = log; p && *p;) {
            size_t n = strcspn(p, "\n");
            tool_out_line(ctx, "      | %.*s", (int)OT_MIN(n, (size_t)INT32_MAX), p);
            p += n + (p[n] == '\n');
        }
    }
}

static int show_device(struct tool_ctx *ctx, const struct deployments_opts *o,
                       struct ot_client *c)
{
    char path[128], sub[48];
    snprintf(sub, sizeof(sub), "devices/%lld", (long long)o->device);
    json_t *row = NULL;
    int rc = tool_api_object(ctx, c, "GET",
                             tool_api_path(path, sizeof(path), "deployments", o->id, sub), NULL,
                             &row);
    if (!rc && o->json) {
        rc = print_json_or_fail(ctx, row);
    } else if (!rc) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%lld", (long long)o->id);
        tool_out_field(ctx, "deployment", buf);
        tool_out_field(ctx, "device", tool_jint_str(row, "device_id", buf, sizeof(buf)));
        tool_out_field(ctx, "status", tool_jstr(row, "status"));
        tool_out_field(ctx, "progress", progress_text(row, buf, sizeof(buf)));
        if (json_is_integer(json_object_get(row, "retries")))
            tool_out_field(ctx, "retries", tool_jint_str(row, "retries", buf, sizeof(buf)));
        tool_out_field(ctx, "message", tool_jstr(row, "message"));
        tool_out_field(ctx, "updated", tool_jtime(row, "updated_at", "-", buf, sizeof(buf)));
        tool_out(ctx, "events:\n");
        print_events(ctx, json_object_get(row, "events"));
    }
    json_decref(row);
    return rc;
}

static int run_show(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    if (o->watch)
        return watch_deployment(ctx, o, c);
    return o->device ? show_device(ctx, o, c) : show_deployment(ctx, o, c);
}

/* ---- staged rollouts --------------------------------------------------------------------------- */

static int rollout_action(struct tool_ctx *ctx, const struct deployments_opts *o,
                          struct ot_client *c, const char *action, json_t *body)
{
    char path[96];
    json_t *ro = NULL;
    int rc = tool_api_object(ctx, c, "POST",
                             tool_api_path(path, sizeof(path), "deployments", o->id, action), body,
                             &ro);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, ro);
    else if (!rc)
        print_rollout(ctx, ro);
    json_decref(ro);
    return rc;
}

static int run_pause(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    return rollout_action(ctx, o, c, "pause", NULL);
}

static int run_resume(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    return rollout_action(ctx, o, c, "resume", NULL);
}

static int run_approve(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    json_t *body = o->phase ? json_pack("{s:I}", "phase", (json_int_t)o->phase) : NULL;
    int rc = rollout_action(ctx, o, c, "approve", body);
    json_decref(body);
    return rc;
}

static int run_export(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    char path[128], id[32];
    snprintf(id, sizeof(id), "%lld", (long long)o->id);
    snprintf(path, sizeof(path), "/api/v1/deployments/%s/export?format=%s", id,
             o->json ? "json" : "csv");
    long status = 0;
    json_t *reply = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ot_client_download(c, path, STDOUT_FILENO, NULL, NULL, &status, &reply, &d);
    if (!err)
        err = ot_client_status_error(status, reply, &d);
    json_decref(reply);
    return err ? tool_fail(ctx, err, TOOL_SRC_OTHER, &d) : TOOL_EXIT_OK;
}

static int run_decisions(struct tool_ctx *ctx, const struct deployments_opts *o,
                         struct ot_client *c)
{
    static const struct tool_paging pg = {"decisions", "after", "next_after", false};
    char path[96];
    json_t *list = NULL;
    int rc = tool_api_list(ctx, c,
                           tool_api_path(path, sizeof(path), "deployments", o->id, "decisions"),
                           &pg, 0, &list);
    if (!rc && o->json) {
        rc = print_json_or_fail(ctx, list);
    } else if (!rc) {
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) {
            char when[32];
            tool_out_line(ctx, "%s  %-9s %s", tool_jtime(e, "at", "-", when, sizeof(when)),
                          tool_jstr(e, "kind"), tool_jstr(e, "message"));
        }
    }
    json_decref(list);
    return rc;
}

/* ---- cancel ---------------------------------------------------------------------------------- */

static int run_cancel(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c)
{
    char path[96], id[32];
    json_t *dep = NULL;
    int rc = tool_api_object(ctx, c, "POST",
                             tool_api_path(path, sizeof(path), "deployments", o->id, "cancel"),
                             NULL, &dep);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, dep);
    else if (!rc)
        tool_out_line(ctx, "deployment %s: %s", tool_jint_str(dep, "id", id, sizeof(id)),
                      tool_jstr(dep, "status"));
    json_decref(dep);
    return rc;
}

/* ---- the command line ------------------------------------------------------------------------ */

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct deployments_opts *o)
{
    switch (c) {
    case 's':
        if (strcmp(optarg, "active") && strcmp(optarg, "finished") && strcmp(optarg, "cancelled"))
            return tool_usage_error(ctx, "--status must be active, finished or cancelled, not "
                                    "'%s'", optarg);
        o->status = optarg;
        return TOOL_EXIT_OK;
    case 'n':
        if (ot_parse_u64(optarg, 1, SIZE_MAX, &o->limit) != OT_OK)
            return tool_usage_error(ctx, "--limit wants a positive number, not '%s'", optarg);
        return TOOL_EXIT_OK;
    case 'd':
        return tool_parse_id(ctx, "--device", optarg, &o->device);
    case 'w':
        o->watch = 2;
        if (optarg && ot_parse_u64(optarg, 1, 3600, &o->watch) != OT_OK)
            return tool_usage_error(ctx, "--watch wants seconds (1..3600), not '%s'", optarg);
        return TOOL_EXIT_OK;
    case 'p':
        if (ot_parse_u64(optarg, 1, 32, &o->phase) != OT_OK)
            return tool_usage_error(ctx, "--phase wants a phase number (1..32), not '%s'", optarg);
        return TOOL_EXIT_OK;
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

/* Which options each subcommand takes; the others are refused rather than ignored. */
static int check_args(struct tool_ctx *ctx, struct deployments_opts *o, int nargs, char **args)
{
    bool list = strcmp(o->sub, "list") == 0;
    if (!list && (o->status || o->limit))
        return tool_usage_error(ctx, "--status and --limit are for 'deployments list'");
    if ((o->device || o->watch) && strcmp(o->sub, "show") != 0)
        return tool_usage_error(ctx, "--device and --watch are for 'deployments show'");
    if (o->phase && strcmp(o->sub, "approve") != 0)
        return tool_usage_error(ctx, "--phase is for 'deployments approve'");
    if (list)
        return nargs ? tool_usage_error(ctx, "too many arguments for 'deployments list'")
                     : TOOL_EXIT_OK;
    if (nargs != 1)
        return tool_usage_error(ctx, nargs ? "too many arguments for 'deployments %s'"
                                           : "'deployments %s' needs ID", o->sub);
    return tool_parse_id(ctx, "ID", args[0], &o->id);
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct deployments_opts *o)
{
    static const struct option longopts[] = {
        {"status", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"device", required_argument, NULL, 'd'},
        {"watch", optional_argument, NULL, 'w'},
        {"phase", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":s:n:d:w::p:jqh", longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    }
    return check_args(ctx, o, argc - optind, argv + optind);
}

static const struct {
    const char *name;
    int (*run)(struct tool_ctx *ctx, const struct deployments_opts *o, struct ot_client *c);
} subs[] = {
    {"list", run_list},
    {"show", run_show},
    {"cancel", run_cancel},
    {"pause", run_pause},
    {"resume", run_resume},
    {"approve", run_approve},
    {"decisions", run_decisions},
    {"export", run_export},
};

int tool_cmd_deployments(struct tool_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        return tool_usage_error(ctx, "missing a subcommand: list, show, cancel, pause, resume, "
                                     "approve, decisions or export");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return tool_help(ctx);
    size_t i = 0;
    while (i < OT_ARRAY_SIZE(subs) && strcmp(subs[i].name, argv[1]) != 0)
        i++;
    if (i == OT_ARRAY_SIZE(subs))
        return tool_usage_error(ctx, "unknown subcommand '%s'", argv[1]);
    struct deployments_opts o = {.sub = subs[i].name};
    /* getopt sees "SUBCOMMAND [OPTIONS] [ARGS]", the subcommand in its argv[0]. */
    int rc = parse_args(ctx, argc - 1, argv + 1, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    return rc ? rc : subs[i].run(ctx, &o, c);
}
