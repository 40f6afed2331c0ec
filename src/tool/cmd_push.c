/* otter push: upload an artifact to otterd. The file streams from disk as the request body; the
 * server verifies it against its trust settings as it arrives and refuses what it would never
 * deploy (unsigned, untrusted, tampered: HTTP 422, exit status 3 like a local verify). Pushed to a
 * release channel, the artifact is deployed by the channel's templates at once; what they did
 * comes back in the upload's answer. */
#include "otter/client.h"
#include "tool.h"

const char tool_usage_push[] =
    "Usage: otter push [--channel NAME] [--json] [-q] [CONNECTION OPTIONS] ARTIFACT\n"
    "       otter push --format swu|raucb --name NAME --version VERSION -T TYPE...\n"
    "                  [--channel NAME] FILE\n"
    "\n"
    "Uploads an artifact to the server, which verifies its signatures against the release keys\n"
    "it trusts (PUT /api/v1/trust) and every payload before storing it.\n"
    "\n"
    "With --format, FILE is a foreign update for hawkBit (DDI) devices: an SWUpdate .swu or a\n"
    "RAUC bundle, stored as it is (the device checks its own format's signature; the server\n"
    "computes its SHA-1, MD5 and SHA-256). See docs/hawkbit.md.\n"
    "\n"
    "  -c, --channel NAME            publish it on this release channel: each enabled\n"
    "                                deployment template of the channel deploys it (see\n"
    "                                'otter templates'); NAME is 1..63 of [A-Za-z0-9._-]\n"
    "      --format FORMAT           swu or raucb: upload FILE as a foreign artifact\n"
    "      --name NAME               its name (with --format)\n"
    "      --version VERSION         its version (with --format)\n"
    "  -T, --device-type TYPE        a device type it is for (with --format; repeatable)\n"
    "  -j, --json                    print the server's artifact object (with --channel,\n"
    "                                its \"deployments\": what each template did)\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_REMOTE_HELP
    "\n"
    "Exit status: 0 stored (also when a template could not deploy it: that is a warning), 1\n"
    "failure (connection, authentication, already on the server), 2 usage error, 3 the server\n"
    "rejected the artifact (unsigned, untrusted or tampered).\n";

#define PUSH_TYPES_MAX 64

struct push_opts {
    struct tool_remote remote;
    bool json;
    const char *artifact;
    const char *format, *name, *version, *channel;
    const char *types[PUSH_TYPES_MAX];
    size_t ntypes;
};

enum { OPT_FORMAT = 0x2000, OPT_NAME, OPT_VERSION };

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct push_opts *o)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"name", required_argument, NULL, OPT_NAME},
        {"version", required_argument, NULL, OPT_VERSION},
        {"device-type", required_argument, NULL, 'T'},
        {"channel", required_argument, NULL, 'c'},
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, ":jqhT:c:", longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if (c == OPT_FORMAT)
            o->format = optarg;
        else if (c == OPT_NAME)
            o->name = optarg;
        else if (c == OPT_VERSION)
            o->version = optarg;
        else if (c == 'T' && o->ntypes == PUSH_TYPES_MAX)
            return tool_usage_error(ctx, "too many --device-type options");
        else if (c == 'T')
            o->types[o->ntypes++] = optarg;
        else if (c == 'c')
            o->channel = optarg;
        else if (c == 'j')
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
    if (o->channel && !tool_channel_valid(o->channel))
        return tool_usage_error(ctx, "--channel must be 1..63 characters of [A-Za-z0-9._-], not "
                                "'%s'", o->channel);
    if (o->format && strcmp(o->format, "swu") != 0 && strcmp(o->format, "raucb") != 0)
        return tool_usage_error(ctx, "--format must be swu or raucb");
    if (o->format && (!o->name || !o->version || !o->ntypes))
        return tool_usage_error(ctx, "--format needs --name, --version and at least one -T");
    if (!o->format && (o->name || o->version || o->ntypes))
        return tool_usage_error(ctx, "--name, --version and -T go with --format (an otter "
                                     "artifact carries its own)");
    return TOOL_EXIT_OK;
}

/* The upload path, with the channel and the foreign artifact's description in the query. */
static enum ot_err upload_path(const struct push_opts *o, struct ot_buf *path)
{
    enum ot_err err = ot_buf_append_str(path, "/api/v1/artifacts");
    if (!err && o->channel)
        err = ot_client_query_add(path, "channel", o->channel);
    if (!err && o->format) {
        err = ot_client_query_add(path, "format", o->format);
        if (!err)
            err = ot_client_query_add(path, "name", o->name);
        if (!err)
            err = ot_client_query_add(path, "version", o->version);
        for (size_t i = 0; !err && i < o->ntypes; i++)
            err = ot_client_query_add(path, "device_type", o->types[i]);
    }
    return err;
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

/* What the channel's templates did: the deployments they created on stdout, each failure as a
 * warning (also under -q and --json: the artifact is stored, but something did not deploy). */
static void report_templates(const struct tool_ctx *ctx, const struct push_opts *o,
                             const json_t *a)
{
    const json_t *deps = json_object_get(a, "deployments");
    if (!o->channel || !json_is_array(deps))
        return;
    if (json_array_size(deps) == 0 && !o->json)
        tool_out_line(ctx, "channel %s has no enabled deployment templates: nothing deployed",
                      o->channel);
    size_t i;
    json_t *r;
    json_array_foreach(deps, i, r) {
        char t[32], id[32];
        const char *err = json_string_value(json_object_get(r, "error"));
        if (err && !json_object_get(r, "template")) /* the templates could not be read */
            tool_warn(ctx, "the templates of channel %s did not deploy it: %s", o->channel, err);
        else if (err)
            tool_warn(ctx, "template %s did not deploy it: %s",
                      tool_jint_str(r, "template", t, sizeof(t)), err);
        else if (!o->json)
            tool_out_line(ctx, "template %s: deployment %s created",
                          tool_jint_str(r, "template", t, sizeof(t)),
                          tool_jint_str(r, "deployment_id", id, sizeof(id)));
    }
}

static int report(const struct tool_ctx *ctx, const struct push_opts *o, const json_t *a)
{
    if (o->json) {
        if (!ctx->quiet && tool_print_json(a))
            return tool_failf(ctx, OT_ERR_IO, "cannot write JSON");
        report_templates(ctx, o, a);
        return TOOL_EXIT_OK;
    }
    char id[32];
    tool_out_line(ctx, "pushed %s %s as artifact %s (sha256 %s)%s%s", tool_jstr(a, "name"),
                  tool_jstr(a, "version"), tool_jint_str(a, "id", id, sizeof(id)),
                  tool_jstr(a, "sha256"), o->channel ? " to channel " : "",
                  o->channel ? o->channel : "");
    report_templates(ctx, o, a);
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
    struct ot_buf path;
    ot_buf_init(&path, 16 * 1024);
    err = upload_path(o, &path);
    if (err) {
        ot_buf_release(&path);
        return tool_failf(ctx, err, "the upload's name, version or device types are too long");
    }
    err = ot_client_upload(c, ot_buf_str(&path), fd, size, tool_progress_cb, &p, &status, &reply,
                           &d);
    ot_buf_release(&path);
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
