/* otter trust: a trust file from public signing keys and a threshold (k of n). */
#include "otter/file.h"
#include "otter/parse.h"
#include "tool.h"

const char tool_usage_trust[] =
    "Usage: otter trust -o TRUST.json [--threshold K] KEY.pub...\n"
    "\n"
    "Writes a trust file: the release keys a verifier accepts, and how many distinct ones must\n"
    "sign an artifact (multi-person control: K of the N keys given).\n"
    "\n"
    "  -o, --output FILE     the trust file to write (replaced atomically)\n"
    "  -k, --threshold K     signatures required, 1..N (default 1)\n"
    "  -q, --quiet           print nothing\n"
    "  -h, --help            show this help\n";

struct trust_opts {
    const char *out;
    uint64_t threshold;
    char **keys;
    size_t nkeys;
};

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct trust_opts *o)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'}, {"threshold", required_argument, NULL, 'k'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    *o = (struct trust_opts){.threshold = 1};
    while ((c = getopt_long(argc, argv, ":o:k:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            o->out = optarg;
            break;
        case 'k':
            if (ot_parse_u64(optarg, 1, OT_TRUST_MAX_KEYS, &o->threshold) != OT_OK)
                return tool_usage_error(ctx, "--threshold must be a number from 1 to %d, not '%s'",
                                        OT_TRUST_MAX_KEYS, optarg);
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
    o->keys = argv + optind;
    o->nkeys = (size_t)(argc - optind);
    if (!o->out)
        return tool_usage_error(ctx, "missing -o TRUST.json");
    if (o->nkeys == 0)
        return tool_usage_error(ctx, "missing KEY.pub");
    if (o->nkeys > OT_TRUST_MAX_KEYS)
        return tool_usage_error(ctx, "at most %d keys", OT_TRUST_MAX_KEYS);
    if (o->threshold > o->nkeys)
        return tool_usage_error(ctx, "--threshold %llu is more than the %zu keys given",
                                (unsigned long long)o->threshold, o->nkeys);
    return TOOL_EXIT_OK;
}

static int write_trust(const struct tool_ctx *ctx, const struct trust_opts *o,
                       const struct ot_trust *t)
{
    struct ot_diag d = {0};
    struct ot_buf b;
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    enum ot_err err = ot_trust_format(t, &b);
    if (err) {
        ot_buf_release(&b);
        return tool_failf(ctx, err, "cannot format the trust file: %s", ot_strerror(err));
    }
    err = ot_file_write_atomic(o->out, b.data, b.len, 0644, &d);
    ot_buf_release(&b);
    return err ? tool_fail(ctx, err, TOOL_SRC_OTHER, &d) : TOOL_EXIT_OK;
}

int tool_cmd_trust(struct tool_ctx *ctx, int argc, char **argv)
{
    struct trust_opts o;
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;

    struct ot_diag d = {0};
    _cleanup_(tool_keys_release) struct tool_keys keys = {0};
    enum ot_err err = tool_keys_load(ctx, o.keys, o.nkeys, TOOL_KEY_SIGN_PUBLIC, &keys, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    struct ot_trust t;
    err = ot_trust_init(&t, (unsigned)o.threshold, keys.v, keys.n, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    rc = write_trust(ctx, &o, &t);
    if (rc)
        return rc;
    tool_out(ctx, "wrote %s: %u of %zu signatures required\n", o.out, t.threshold, t.nkeys);
    for (size_t i = 0; i < t.nkeys; i++)
        tool_out(ctx, "  key %s %s\n", t.keys[i].id, t.keys[i].name);
    return TOOL_EXIT_OK;
}
