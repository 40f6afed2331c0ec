/* otter verify: signatures against a trust file, then every payload against the signed manifest,
 * optionally the compatibility rules for one device. Prints who signed even when it fails. */
#include <fcntl.h>

#include "otter/encoding.h"
#include "otter/parse.h"
#include "tool.h"

const char tool_usage_verify[] =
    "Usage: otter verify --trust TRUST.json [--device-key DEV.key]... [--device-type T]\n"
    "                    [--provides K=V]... [--min-security-version N] [--json] ARTIFACT\n"
    "\n"
    "Checks that enough trusted keys signed the manifest, then streams every payload through\n"
    "its checks: stored size and SHA-256, decryption, decompression, installed size and SHA-256.\n"
    "An encrypted artifact needs a device key for a full check; without one only the stored\n"
    "(encrypted) bytes are checked against the signed manifest, and the output says so.\n"
    "\n"
    "  -t, --trust FILE               the trust file (otter trust)\n"
    "  -d, --device-key FILE          a secret device key to decrypt with (repeatable)\n"
    "  -T, --device-type TYPE         also check the artifact is meant for this device type...\n"
    "  -p, --provides KEY=VALUE       ...whose installed versions are these (repeatable; checked\n"
    "                                 against the manifest's depends)...\n"
    "  -m, --min-security-version N   ...and which refuses security versions below N\n"
    "                                 (--provides and --min-security-version need --device-type)\n"
    "  -j, --json                     print one JSON object (also when verification fails)\n"
    "  -q, --quiet                    print nothing; the exit status tells\n"
    "  -h, --help                     show this help\n"
    "\n"
    "Exit status: 0 verified, 1 failure (e.g. an unreadable file), 2 usage error,\n"
    "3 artifact rejected.\n";

struct verify_opts {
    const char *trust;
    struct tool_strv device_keys;
    const char *device_type;
    struct ot_kv *provides;
    size_t nprovides;
    uint64_t min_security_version;
    bool have_min_sv;
    bool json;
    const char *artifact;
};

static void opts_release(struct verify_opts *o)
{
    tool_strv_release(&o->device_keys);
    for (size_t i = 0; i < o->nprovides; i++) {
        free(o->provides[i].key);
        free(o->provides[i].value);
    }
    free(o->provides);
}

static int add_provide(struct tool_ctx *ctx, struct verify_opts *o, const char *arg)
{
    struct ot_kv kv;
    if (!tool_split_kv(arg, &kv.key, &kv.value))
        return tool_usage_error(ctx, "--provides wants KEY=VALUE, not '%s'", arg);
    struct ot_kv *v = reallocarray(o->provides, o->nprovides + 1, sizeof(*v));
    if (!v) {
        free(kv.key);
        free(kv.value);
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    }
    v[o->nprovides++] = kv;
    o->provides = v;
    return TOOL_EXIT_OK;
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct verify_opts *o)
{
    switch (c) {
    case 't':
        o->trust = optarg;
        return TOOL_EXIT_OK;
    case 'd':
        return tool_strv_push(&o->device_keys, optarg) ? tool_failf(ctx, OT_ERR_NOMEM, "out of memory")
                                                     : TOOL_EXIT_OK;
    case 'T':
        o->device_type = optarg;
        return TOOL_EXIT_OK;
    case 'p':
        return add_provide(ctx, o, optarg);
    case 'm':
        o->have_min_sv = true;
        if (ot_parse_u64(optarg, 0, UINT64_MAX, &o->min_security_version) != OT_OK)
            return tool_usage_error(ctx, "--min-security-version wants a number, not '%s'",
                                    optarg);
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

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct verify_opts *o)
{
    static const struct option longopts[] = {
        {"trust", required_argument, NULL, 't'},
        {"device-key", required_argument, NULL, 'd'},
        {"device-type", required_argument, NULL, 'T'},
        {"provides", required_argument, NULL, 'p'},
        {"min-security-version", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":t:d:T:p:m:jqh", longopts, NULL)) != -1)
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    if (!o->trust)
        return tool_usage_error(ctx, "missing --trust TRUST.json");
    if ((o->nprovides || o->have_min_sv) && !o->device_type)
        return tool_usage_error(ctx, "--provides and --min-security-version need --device-type");
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing ARTIFACT" : "too many arguments");
    o->artifact = argv[optind];
    return TOOL_EXIT_OK;
}

/* ---- the verification run ---- */

struct verify_run {
    const struct tool_ctx *ctx;
    const struct verify_opts *o;
    enum ot_read_mode mode;                 /* DECODE or STORED, once the manifest is read */
    const struct ot_artifact_reader *reader;
    bool compatible;      /* --device-type given and the check passed */
    json_t *payloads;     /* verified so far: [{name, size, sha256, ...}] */
};

static enum ot_err on_manifest(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                               size_t rawlen, const struct ot_sigset *sigs,
                               const struct ot_sig_report *report, struct ot_diag *d)
{
    struct verify_run *v = userdata;
    const struct verify_opts *o = v->o;
    /* OT_READ_AUTO: full verification unless the artifact is encrypted and no device key was
     * given; then only the stored bytes can be checked. Decided now that the manifest is known. */
    v->mode = ot_artifact_reader_decodes(v->reader) ? OT_READ_DECODE : OT_READ_STORED;
    if (!o->device_type)
        return OT_OK;
    enum ot_err err = ot_manifest_check_device(m, o->device_type, o->provides, o->nprovides,
                                               o->min_security_version, d);
    v->compatible = err == OT_OK;
    return err;
}

static enum ot_err on_payload_end(void *userdata, const struct ot_payload *p, size_t index,
                                  struct ot_diag *d)
{
    struct verify_run *v = userdata;
    char hex[OT_SHA256_HEX_LEN], shex[OT_SHA256_HEX_LEN];
    ot_hex_encode(p->sha256, OT_SHA256_LEN, hex);
    ot_hex_encode(p->stored_sha256, OT_SHA256_LEN, shex);
    json_t *j = json_pack("{s:s, s:I, s:s, s:I, s:s, s:b}", "name", p->name, "size",
                          (json_int_t)p->size, "sha256", hex, "stored_size",
                          (json_int_t)p->stored_size, "stored_sha256", shex, "decoded",
                          v->mode == OT_READ_DECODE);
    if (!j || json_array_append_new(v->payloads, j) != 0)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    return OT_OK;
}

static void print_payloads_text(const struct verify_run *v)
{
    size_t i;
    json_t *p;
    char sz[32];
    json_array_foreach(v->payloads, i, p) {
        json_int_t size = json_integer_value(json_object_get(p, "size"));
        json_int_t stored = json_integer_value(json_object_get(p, "stored_size"));
        const char *name = json_string_value(json_object_get(p, "name"));
        if (v->mode == OT_READ_DECODE)
            tool_out(v->ctx, "payload %s: verified (%s, sha256 %s)\n", name,
                     tool_fmt_size((uint64_t)size, sz, sizeof(sz)),
                     json_string_value(json_object_get(p, "sha256")));
        else
            tool_out(v->ctx, "payload %s: stored bytes verified (%s stored; not decrypted)\n",
                     name, tool_fmt_size((uint64_t)stored, sz, sizeof(sz)));
    }
}

static void print_text(const struct verify_run *v, const struct ot_artifact_reader *r, bool ok)
{
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    const struct ot_sig_report *rep = ot_artifact_reader_sig_report(r);
    if (m)
        tool_out(v->ctx, "artifact: %s (%s %s)\n", v->o->artifact, m->name, m->version);
    if (rep)
        tool_print_sig_report(v->ctx, rep);
    if (!ok)
        return;
    if (v->o->device_type)
        tool_out(v->ctx, "device: compatible with device type %s\n", v->o->device_type);
    if (v->mode == OT_READ_STORED)
        tool_out(v->ctx, "content: encrypted and NOT decrypted (no --device-key given): only the "
                         "stored bytes were checked against the signed manifest\n");
    print_payloads_text(v);
    tool_out(v->ctx, "OK: %s %s: %u of %u required signatures, %zu payloads verified%s\n",
             m->name, m->version, rep->valid, rep->threshold, json_array_size(v->payloads),
             v->mode == OT_READ_STORED ? " (stored bytes only, content not decrypted)" : "");
}

static json_t *error_json(enum ot_err err, const struct ot_diag *d)
{
    if (err == OT_OK)
        return json_null();
    return json_pack("{s:s, s:s, s:i}", "code", ot_err_name(err), "message",
                     d->msg[0] ? d->msg : ot_strerror(err), "exit_status",
                     tool_exit_code(err, TOOL_SRC_ARTIFACT));
}

static enum ot_err print_json(const struct verify_run *v, const struct ot_artifact_reader *r,
                              enum ot_err err, const struct ot_diag *d)
{
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    const struct ot_sig_report *rep = ot_artifact_reader_sig_report(r);
    json_t *root = json_pack(
        "{s:s, s:b, s:s*, s:s*, s:b, s:b, s:s*, s:O, s:o}", "artifact", v->o->artifact, "ok",
        err == OT_OK, "name", m ? m->name : NULL, "version", m ? m->version : NULL, "encrypted",
        m && m->nrecipients > 0, "decrypted", m && m->nrecipients > 0 && v->mode == OT_READ_DECODE,
        "device_type", v->o->device_type, "payloads", v->payloads, "error", error_json(err, d));
    if (!root)
        return OT_ERR_NOMEM;
    if (v->o->device_type)
        json_object_set_new(root, "compatible", json_boolean(v->compatible));
    if (rep)
        json_object_update_new(root, tool_sig_report_json(rep));
    enum ot_err perr = tool_print_json(root);
    json_decref(root);
    return perr;
}

static int run(struct tool_ctx *ctx, struct verify_run *v, int fd, uint64_t size,
               const struct ot_reader_opts *ropts)
{
    static const struct ot_reader_callbacks cb = {.manifest = on_manifest,
                                                  .payload_end = on_payload_end};
    struct ot_diag d = {0};
    _cleanup_(ot_artifact_reader_freep) struct ot_artifact_reader *r = NULL;
    enum ot_err err = ot_artifact_reader_new(ropts, &cb, v, &r);
    if (err)
        return tool_failf(ctx, err, "%s", ot_strerror(err));
    v->reader = r;
    struct tool_progress p;
    tool_progress_init(&p, ctx, "verify");
    err = tool_feed(r, fd, OT_ARTIFACT_IO_CHUNK, size, NULL, &p, &d);
    tool_progress_clear(&p);
    if (v->o->json && !ctx->quiet) {
        enum ot_err perr = print_json(v, r, err, &d);
        if (perr && !err)
            return tool_failf(ctx, perr, "cannot write JSON: %s", ot_strerror(perr));
    } else {
        print_text(v, r, err == OT_OK);
    }
    return err ? tool_fail(ctx, err, TOOL_SRC_ARTIFACT, &d) : TOOL_EXIT_OK;
}

static int verify_file(struct tool_ctx *ctx, const struct verify_opts *o,
                       const struct ot_trust *trust, const struct tool_keys *keys)
{
    struct ot_diag d = {0};
    _cleanup_close_ int fd = -1;
    uint64_t size;
    enum ot_err err = tool_open_artifact(o->artifact, &fd, &size, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    struct verify_run v = {.ctx = ctx, .o = o, .payloads = json_array()};
    if (!v.payloads)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    struct ot_reader_opts ropts = {.trust = trust, .device_keys = keys->v,
                                   .ndevice_keys = keys->n, .mode = OT_READ_AUTO};
    int rc = run(ctx, &v, fd, size, &ropts);
    json_decref(v.payloads);
    return rc;
}

int tool_cmd_verify(struct tool_ctx *ctx, int argc, char **argv)
{
    _cleanup_(opts_release) struct verify_opts o = {0};
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    struct ot_trust trust;
    _cleanup_(tool_keys_release) struct tool_keys keys = {0};
    rc = tool_load_verifier(ctx, o.trust, o.device_keys.v, o.device_keys.n, &trust, &keys);
    if (rc)
        return rc;
    return verify_file(ctx, &o, &trust, &keys);
}
