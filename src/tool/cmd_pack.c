/* otter pack: a spec file and/or flags -> a manifest -> ot_artifact_pack. Everything about the
 * release description is checked (and reported with file:line or the flag) before the first
 * payload byte is read. */
#include <time.h>

#include "otter/parse.h"
#include "pack_spec.h"
#include "tool.h"

const char tool_usage_pack[] =
    "Usage: otter pack -o OUT.otter [SPEC] [OPTIONS]\n"
    "\n"
    "Packs payload files into an artifact. The release is described by a spec file (see\n"
    "docs/otter.md) and/or flags; flags add to or override the spec.\n"
    "\n"
    "  -o, --output FILE             the artifact to write (atomically)\n"
    "      --name NAME               artifact name\n"
    "      --version VERSION         artifact version\n"
    "  -T, --device-type TYPE        a compatible device type (repeatable)\n"
    "      --security-version N      anti-rollback counter (default 0)\n"
    "      --provides KEY=VALUE      what installing this provides (repeatable)\n"
    "      --depends KEY=V1|V2       what the device must provide (repeatable)\n"
    "  -p, --payload SPEC            a payload (repeatable):\n"
    "        name=NAME,file=PATH,type=TYPE[,target=T][,version=V][,compression=zstd|none]\n"
    "        [,arg.KEY=VALUE]...     (version defaults to the artifact version)\n"
    "  -k, --key SIGNING.key         sign with this key (repeatable; or sign later with\n"
    "                                'otter sign')\n"
    "  -e, --encrypt-to DEVICE.pub   encrypt every payload to this device key (repeatable)\n"
    "  -l, --level N                 zstd level 1..19 (default 3)\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n"
    "Environment: SOURCE_DATE_EPOCH sets the archive entry times (reproducible builds).\n";

enum {
    OPT_NAME = 0x100,
    OPT_VERSION,
    OPT_SECURITY_VERSION,
    OPT_PROVIDES,
    OPT_DEPENDS,
};

/* Description flags are kept in command-line order and applied after the spec is loaded. */
struct pack_flag {
    int opt;
    const char *arg;
};

struct pack_opts {
    const char *out;
    const char *spec;
    struct pack_flag *flags;
    size_t nflags;
    struct tool_strv keys;
    struct tool_strv recipients;
    uint64_t level;
};

static void opts_release(struct pack_opts *o)
{
    free(o->flags);
    tool_strv_release(&o->keys);
    tool_strv_release(&o->recipients);
}

static int push_flag(struct tool_ctx *ctx, struct pack_opts *o, int opt, const char *arg)
{
    struct pack_flag *v = reallocarray(o->flags, o->nflags + 1, sizeof(*v));
    if (!v)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    v[o->nflags++] = (struct pack_flag){opt, arg};
    o->flags = v;
    return TOOL_EXIT_OK;
}

static int push_str(struct tool_ctx *ctx, struct tool_strv *l, char *arg)
{
    return tool_strv_push(l, arg) ? tool_failf(ctx, OT_ERR_NOMEM, "out of memory")
                                  : TOOL_EXIT_OK;
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct pack_opts *o)
{
    switch (c) {
    case 'o':
        o->out = optarg;
        return TOOL_EXIT_OK;
    case 'k':
        return push_str(ctx, &o->keys, optarg);
    case 'e':
        return push_str(ctx, &o->recipients, optarg);
    case 'l':
        if (ot_parse_u64(optarg, 1, 19, &o->level) != OT_OK)
            return tool_usage_error(ctx, "--level must be 1..19, not '%s'", optarg);
        return TOOL_EXIT_OK;
    case 'q':
        ctx->quiet = true;
        return TOOL_EXIT_OK;
    case 'h':
        return -1;
    case 'T':
    case 'p':
    case OPT_NAME:
    case OPT_VERSION:
    case OPT_SECURITY_VERSION:
    case OPT_PROVIDES:
    case OPT_DEPENDS:
        return push_flag(ctx, o, c, optarg);
    default:
        return tool_bad_option(ctx, c, argv);
    }
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct pack_opts *o)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"name", required_argument, NULL, OPT_NAME},
        {"version", required_argument, NULL, OPT_VERSION},
        {"device-type", required_argument, NULL, 'T'},
        {"security-version", required_argument, NULL, OPT_SECURITY_VERSION},
        {"provides", required_argument, NULL, OPT_PROVIDES},
        {"depends", required_argument, NULL, OPT_DEPENDS},
        {"payload", required_argument, NULL, 'p'},
        {"key", required_argument, NULL, 'k'},
        {"encrypt-to", required_argument, NULL, 'e'},
        {"level", required_argument, NULL, 'l'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":o:T:p:k:e:l:qh", longopts, NULL)) != -1)
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    if (!o->out)
        return tool_usage_error(ctx, "missing -o OUT.otter");
    if (argc - optind > 1)
        return tool_usage_error(ctx, "at most one SPEC file");
    o->spec = optind < argc ? argv[optind] : NULL;
    return TOOL_EXIT_OK;
}

static enum ot_err apply_flag(struct tool_spec *s, const struct pack_flag *f, struct ot_diag *d)
{
    uint64_t n;
    switch (f->opt) {
    case OPT_NAME:
        return tool_spec_set_top(s, "name", f->arg, d);
    case OPT_VERSION:
        return tool_spec_set_top(s, "version", f->arg, d);
    case OPT_SECURITY_VERSION:
        /* Parsed here too so that the message names the flag, not a config key. */
        if (ot_parse_u64(f->arg, 0, INT64_MAX, &n) != OT_OK)
            return ot_diag_set(d, OT_ERR_INVALID, "--security-version wants a number, not '%s'",
                               f->arg);
        return tool_spec_set_top(s, "security_version", f->arg, d);
    case 'T':
        return tool_spec_add_device_type(s, f->arg, d);
    case OPT_PROVIDES:
        return tool_spec_set_kv(&s->provides, "--provides", f->arg, d);
    case OPT_DEPENDS:
        return tool_spec_set_kv(&s->depends, "--depends", f->arg, d);
    case 'p':
        return tool_spec_add_payload_flag(s, f->arg, d);
    }
    return ot_diag_set(d, OT_ERR_INTERNAL, "unhandled flag");
}

/* The whole release description, from the spec and the flags, as a validated manifest. */
static int describe(struct tool_ctx *ctx, const struct pack_opts *o, struct tool_spec *s,
                    struct ot_manifest *m, const char ***ret_inputs)
{
    struct ot_diag d = {0};
    enum ot_err err = o->spec ? tool_spec_load(s, o->spec, &d) : OT_OK;
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    for (size_t i = 0; i < o->nflags; i++) {
        err = apply_flag(s, &o->flags[i], &d);
        if (err == OT_ERR_NOMEM || err == OT_ERR_INTERNAL)
            return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
        if (err)
            return tool_usage_error(ctx, "%s", d.msg);
    }
    err = tool_spec_build(s, m, ret_inputs, &d);
    if (err && !o->spec)
        return tool_usage_error(ctx, "%s", d.msg);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    return TOOL_EXIT_OK;
}

static void print_summary(const struct tool_ctx *ctx, const struct pack_opts *o,
                          const struct ot_manifest *m, const struct tool_keys *signers)
{
    uint64_t in = 0, stored = 0;
    char a[32], b[32];
    for (size_t i = 0; i < m->npayloads; i++) {
        in += m->payloads[i].size;
        stored += m->payloads[i].stored_size;
    }
    tool_out(ctx, "packed %s: %s %s, %zu payloads, %s (%s stored)\n", o->out, m->name,
             m->version, m->npayloads, tool_fmt_size(in, a, sizeof(a)),
             tool_fmt_size(stored, b, sizeof(b)));
    for (size_t i = 0; i < signers->n; i++)
        tool_out(ctx, "signed by key %s (%s)\n", signers->v[i].id, signers->v[i].name);
    if (signers->n == 0)
        tool_out(ctx, "not signed yet: add signatures with 'otter sign --key KEY %s'\n", o->out);
    for (size_t i = 0; i < m->nrecipients; i++)
        tool_out(ctx, "encrypted to device key %s\n", m->recipients[i].key_id);
}

static int pack(struct tool_ctx *ctx, const struct pack_opts *o, struct ot_manifest *m,
                const char *const *inputs)
{
    int64_t mtime;
    int rc = tool_entry_time(ctx, &mtime);
    if (rc)
        return rc;
    struct ot_diag d = {0};
    _cleanup_(tool_keys_release) struct tool_keys signers = {0}, recipients = {0};
    enum ot_err err =
        tool_keys_load(ctx, o->keys.v, o->keys.n, TOOL_KEY_SIGN_SECRET, &signers, &d);
    if (!err)
        err = tool_keys_load(ctx, o->recipients.v, o->recipients.n, TOOL_KEY_BOX_PUBLIC,
                             &recipients, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);

    struct tool_progress p;
    tool_progress_init(&p, ctx, "pack");
    struct ot_pack_opts popts = {
        .zstd_level = (int)o->level, .signers = signers.v, .nsigners = signers.n,
        .recipients = recipients.v, .nrecipients = recipients.n, .mtime = mtime,
        .progress = tool_progress_cb, .progress_userdata = &p,
    };
    err = ot_artifact_pack(m, inputs, &popts, o->out, &d);
    tool_progress_clear(&p);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    print_summary(ctx, o, m, &signers);
    return TOOL_EXIT_OK;
}

int tool_cmd_pack(struct tool_ctx *ctx, int argc, char **argv)
{
    _cleanup_(opts_release) struct pack_opts o = {.level = 3};
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    _cleanup_(tool_spec_release) struct tool_spec spec;
    tool_spec_init(&spec);
    _cleanup_(ot_manifest_release) struct ot_manifest m = {0};
    _cleanup_free_ const char **inputs = NULL;
    rc = describe(ctx, &o, &spec, &m, &inputs);
    if (rc)
        return rc;
    return pack(ctx, &o, &m, inputs);
}
