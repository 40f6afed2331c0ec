/* otter deploy: create a deployment of one artifact to a list of devices, to every accepted device
 * with a tag, or to a dynamic group (the devices matching a query). The artifact is named by id or
 * as NAME@VERSION (looked up in the server's artifact list). The target and policy options are
 * shared with `otter templates create` (deploy_spec.c). */
#include "otter/client.h"
#include "otter/parse.h"
#include "tool.h"

#define DEPLOYMENT_NAME_MAX 127 /* bytes (otterd's limit) */

const char tool_usage_deploy[] =
    "Usage: otter deploy --artifact ID|NAME@VERSION (--device ID... | --devices ID,ID,... |\n"
    "                    --tag TAG | --query FILTER [--cap N] [--no-continuous])\n"
    "                    [--name NAME] [--policy FILE|JSON] [--type TYPE] [--retries N]\n"
    "                    [--window CRON --window-duration D [--window-tz TZ]]\n"
    "                    [--json] [-q] [CONNECTION OPTIONS]\n"
    "\n"
    "Creates a deployment: the devices install the artifact when they next check in.\n"
    "\n"
    "  -a, --artifact ID|NAME@VERSION  the artifact, by id or by name and version\n"
    "  -n, --name NAME               the deployment's name (default: \"NAME VERSION\")\n"
    "  -j, --json                    print the server's deployment object\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_TARGET_HELP "\n" TOOL_POLICY_HELP "\n" TOOL_REMOTE_HELP;

struct deploy_opts {
    struct tool_remote remote;
    const char *artifact;
    struct tool_deploy_spec spec;
    const char *name;
    bool json;
};

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct deploy_opts *o)
{
    switch (c) {
    case 'a':
        o->artifact = optarg;
        return TOOL_EXIT_OK;
    case 'n':
        o->name = optarg;
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

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct deploy_opts *o)
{
    static const struct option longopts[] = {
        {"artifact", required_argument, NULL, 'a'},
        {"name", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_SPEC_LONGOPTS,
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":a:n:jqh" TOOL_SPEC_SHORTOPTS, longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if (!tool_deploy_spec_opt(ctx, &o->spec, c, &rc))
            rc = parse_opt(ctx, c, argv, o);
        if (rc)
            return rc;
    }
    if (optind != argc)
        return tool_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    if (!o->artifact)
        return tool_usage_error(ctx, "missing --artifact ID|NAME@VERSION");
    if (o->name && (!o->name[0] || strlen(o->name) > DEPLOYMENT_NAME_MAX))
        return tool_usage_error(ctx, "--name must be 1..%d bytes", DEPLOYMENT_NAME_MAX);
    return tool_deploy_spec_check(ctx, &o->spec);
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
    json_t *body = json_pack("{s:s, s:I}", "name", name, "artifact_id",
                             (json_int_t)tool_jint(artifact, "id"));
    if (body && (tool_deploy_spec_target(&o->spec, body) != OT_OK ||
                 (o->spec.policy && json_object_set(body, "policy", o->spec.policy) != 0))) {
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
    const json_t *target = json_object_get(dep, "target");
    bool grows = json_object_get(target, "query") &&
                 !json_is_false(json_object_get(target, "continuous"));
    tool_out_line(ctx, "deployment %s created: %s %s to %s device%s%s",
                  tool_jint_str(dep, "id", id, sizeof(id)), tool_jstr(dep, "artifact_name"),
                  tool_jstr(dep, "artifact_version"),
                  tool_jint_str(dep, "device_count", n, sizeof(n)), count == 1 ? "" : "s",
                  grows ? " (and those that match the query later)" : "");
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
        return tool_failf(ctx, OT_ERR_INVALID, "cannot build the request: out of memory, or text "
                          "that is not UTF-8");
    rc = tool_api_object(ctx, c, "POST", "/api/v1/deployments", body, &dep);
    json_decref(body);
    if (!rc)
        rc = report(ctx, o, dep);
    json_decref(dep);
    return rc;
}

int tool_cmd_deploy(struct tool_ctx *ctx, int argc, char **argv)
{
    struct deploy_opts o = {0};
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc) {
        tool_deploy_spec_release(&o.spec);
        return rc < 0 ? tool_help(ctx) : rc;
    }
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    if (!rc)
        rc = deploy(ctx, &o, c);
    tool_deploy_spec_release(&o.spec);
    return rc;
}
