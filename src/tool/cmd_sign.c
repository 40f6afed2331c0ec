/* otter sign: adds one signature to an artifact (in place, atomically, or to -o OUT). */
#include "tool.h"

const char tool_usage_sign[] =
    "Usage: otter sign --key SIGNING.key [-o OUT] ARTIFACT\n"
    "\n"
    "Adds a signature by SIGNING.key to the artifact's manifest. Each holder of a release key\n"
    "signs independently (k-of-n multi-person control). Every payload's stored bytes are\n"
    "checked against the manifest while copying, so a manifest is never signed for payloads it\n"
    "does not describe. The artifact is replaced atomically: on any error it is unchanged.\n"
    "\n"
    "  -k, --key FILE      the secret signing key\n"
    "  -o, --output FILE   write the signed artifact here instead of replacing ARTIFACT\n"
    "  -q, --quiet         print nothing\n"
    "  -h, --help          show this help\n";

struct sign_opts {
    const char *key;
    const char *out;
    const char *artifact;
};

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct sign_opts *o)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, 'k'}, {"output", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},     {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    *o = (struct sign_opts){0};
    while ((c = getopt_long(argc, argv, ":k:o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'k':
            if (o->key)
                return tool_usage_error(ctx, "--key given twice (sign once per key)");
            o->key = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'q':
            ctx->quiet = true;
            break;
        case 'h':
            return -1;
        default:
            return tool_bad_option(ctx, c, argv);
        }
    }
    if (!o->key)
        return tool_usage_error(ctx, "missing --key SIGNING.key");
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing ARTIFACT" : "too many arguments");
    o->artifact = argv[optind];
    if (!o->out)
        o->out = o->artifact;
    return TOOL_EXIT_OK;
}

int tool_cmd_sign(struct tool_ctx *ctx, int argc, char **argv)
{
    struct sign_opts o;
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;

    struct ot_diag d = {0};
    _cleanup_(tool_key_wipep) struct ot_key sk = {0};
    enum ot_err err = tool_key_load(ctx, o.key, TOOL_KEY_SIGN_SECRET, &sk, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    _cleanup_close_ int fd = -1;
    uint64_t size;
    err = tool_open_artifact(o.artifact, &fd, &size, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);

    int64_t mtime;
    rc = tool_entry_time(ctx, &mtime);
    if (rc)
        return rc;
    struct tool_progress p;
    tool_progress_init(&p, ctx, "sign");
    err = ot_artifact_add_signature(fd, size, &sk, mtime, o.out, tool_progress_cb, &p, &d);
    tool_progress_clear(&p);
    if (err == OT_ERR_EXISTS)
        return tool_failf(ctx, err, "%s is already signed by key %s (%s)", o.artifact, sk.id,
                          sk.name);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_ARTIFACT, &d);
    tool_out(ctx, "signed %s with key %s (%s)\n", o.out, sk.id, sk.name);
    return TOOL_EXIT_OK;
}
