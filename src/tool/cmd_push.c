/* otter push: upload an artifact to otterd. The file streams from disk as the request body; the
 * server verifies it against its trust settings as it arrives and refuses what it would never
 * deploy (unsigned, untrusted, tampered: HTTP 422, exit status 3 like a local verify). */
#include "otter/client.h"
#include "tool.h"

const char tool_usage_push[] =
    "Usage: otter push [--json] [-q] [CONNECTION OPTIONS] ARTIFACT\n"
    "\n"
    "Uploads an artifact to the server, which verifies its signatures against the release keys\n"
    "it trusts (PUT /api/v1/trust) and every payload before storing it.\n"
    "\n"
    "  -j, --json                    print the server's artifact object\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_REMOTE_HELP
    "\n"
    "Exit status: 0 stored, 1 failure (connection, authentication, already on the server),\n"
    "2 usage error, 3 the server rejected the artifact (unsigned, untrusted or tampered).\n";

struct push_opts {
    struct tool_remote remote;
    bool json;
    const char *artifact;
};

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct push_opts *o)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, ":jqh", longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if (c == 'j')
            o->json = true;
        else if (c == 'q')
            ctx->quiet = true;
        else if (c == 'h')
            return -1;
        else
            return tool_bad_option(ctx, c, argv);
    }
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing ARTIFACT" : "too many arguments");
    o->artifact = argv[optind];
    return TOOL_EXIT_OK;
}

/* 422 is the server's verdict on the artifact itself: rejected, as `otter verify` would say. */
static int refused(const struct tool_ctx *ctx, long status, const json_t *reply)
{
    struct ot_diag d = {0};
    enum ot_err err = ot_client_status_error(status, reply, &d);
    if (status == 422) {
        fprintf(stderr, "otter: %s: artifact rejected: %s\n", ctx->cmd->name, d.msg);
        return TOOL_EXIT_REJECTED;
    }
    if (status == 409)
        ot_diag_prefix(&d, err, "already on the server");
    return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
}

static int report(const struct tool_ctx *ctx, const struct push_opts *o, const json_t *a)
{
    if (o->json) {
        if (!ctx->quiet && tool_print_json(a))
            return tool_failf(ctx, OT_ERR_IO, "cannot write JSON");
        return TOOL_EXIT_OK;
    }
    char id[32];
    tool_out_line(ctx, "pushed %s %s as artifact %s (sha256 %s)", tool_jstr(a, "name"),
                  tool_jstr(a, "version"), tool_jint_str(a, "id", id, sizeof(id)),
                  tool_jstr(a, "sha256"));
    return TOOL_EXIT_OK;
}

static int upload(struct tool_ctx *ctx, const struct push_opts *o, struct ot_client *c)
{
    struct ot_diag d = {0};
    _cleanup_close_ int fd = -1;
    uint64_t size;
    enum ot_err err = tool_open_artifact(o->artifact, &fd, &size, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    if (size == 0)
        return tool_failf(ctx, OT_ERR_INVALID, "%s: not a regular, non-empty file (the upload "
                          "needs its size up front)", o->artifact);
    struct tool_progress p;
    tool_progress_init(&p, ctx, "push");
    long status = 0;
    json_t *reply = NULL;
    err = ot_client_upload(c, "/api/v1/artifacts", fd, size, tool_progress_cb, &p, &status, &reply,
                           &d);
    tool_progress_clear(&p);
    int rc;
    if (err)
        rc = tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    else if (status < 200 || status >= 300)
        rc = refused(ctx, status, reply);
    else if (!json_is_object(reply))
        rc = tool_failf(ctx, OT_ERR_FORMAT, "the server's reply is not a JSON object");
    else
        rc = report(ctx, o, reply);
    json_decref(reply);
    return rc;
}

int tool_cmd_push(struct tool_ctx *ctx, int argc, char **argv)
{
    struct push_opts o = {0};
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    return rc ? rc : upload(ctx, &o, c);
}
