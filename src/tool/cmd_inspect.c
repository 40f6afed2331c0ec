/* otter inspect: shows what an artifact's manifest says, without verifying it. Reading stops right
 * after manifest.json and manifest.sig, so inspecting a large artifact costs almost nothing. */
#include "otter/encoding.h"
#include "tool.h"

const char tool_usage_inspect[] =
    "Usage: otter inspect [--json] ARTIFACT\n"
    "\n"
    "Prints the artifact's manifest: name, version, device types, security version,\n"
    "provides/depends, encryption recipients, and per payload its name, type, target,\n"
    "version, size, compression, stored size and SHA-256; then the key ids of its signatures.\n"
    "Nothing is verified: use 'otter verify' before trusting any of it.\n"
    "\n"
    "  -j, --json    print one JSON object {\"manifest\": ..., \"signatures\": [...],\n"
    "                \"verified\": false}\n"
    "  -q, --quiet   print nothing (exit status only: the manifest parses)\n"
    "  -h, --help    show this help\n";

static void print_header(const struct tool_ctx *ctx, const struct ot_manifest *m)
{
    tool_out(ctx, "name:             %s\n", m->name);
    tool_out(ctx, "version:          %s\n", m->version);
    tool_out(ctx, "format:           %llu\n", (unsigned long long)m->format);
    tool_out(ctx, "device types:    ");
    for (size_t i = 0; i < m->ndevice_types; i++)
        tool_out(ctx, "%s %s", i ? "," : "", m->device_types[i]);
    tool_out(ctx, "\nsecurity version: %llu\n", (unsigned long long)m->security_version);
    for (size_t i = 0; i < m->nprovides; i++)
        tool_out(ctx, "provides:         %s = %s\n", m->provides[i].key, m->provides[i].value);
    for (size_t i = 0; i < m->ndepends; i++) {
        tool_out(ctx, "depends:          %s = ", m->depends[i].key);
        for (size_t j = 0; j < m->depends[i].nvalues; j++)
            tool_out(ctx, "%s%s", j ? " | " : "", m->depends[i].values[j]);
        tool_out(ctx, "\n");
    }
    if (m->nrecipients == 0)
        tool_out(ctx, "encrypted:        no\n");
    for (size_t i = 0; i < m->nrecipients; i++)
        tool_out(ctx, "encrypted to:     device key %s\n", m->recipients[i].key_id);
}

static void print_payload(const struct tool_ctx *ctx, const struct ot_payload *p)
{
    char hex[OT_SHA256_HEX_LEN], sz[32];
    tool_out(ctx, "payload %s\n", p->name);
    tool_out(ctx, "  type:           %s\n", p->type);
    tool_out(ctx, "  target:         %s\n", p->target[0] ? p->target : "(none)");
    tool_out(ctx, "  version:        %s\n", p->version);
    tool_out(ctx, "  size:           %llu (%s)\n", (unsigned long long)p->size,
             tool_fmt_size(p->size, sz, sizeof(sz)));
    tool_out(ctx, "  compression:    %s\n", ot_compression_name(p->compression));
    tool_out(ctx, "  encrypted:      %s\n", p->encrypted ? "yes" : "no");
    tool_out(ctx, "  stored size:    %llu (%s)\n", (unsigned long long)p->stored_size,
             tool_fmt_size(p->stored_size, sz, sizeof(sz)));
    ot_hex_encode(p->sha256, OT_SHA256_LEN, hex);
    tool_out(ctx, "  sha256:         %s\n", hex);
    ot_hex_encode(p->stored_sha256, OT_SHA256_LEN, hex);
    tool_out(ctx, "  stored sha256:  %s\n", hex);
    for (size_t i = 0; i < p->nargs; i++)
        tool_out(ctx, "  arg:            %s = %s\n", p->args[i].key, p->args[i].value);
}

static void print_text(const struct tool_ctx *ctx, const char *path, const struct ot_manifest *m,
                       const struct ot_sigset *sigs)
{
    tool_out(ctx, "artifact:         %s\n", path);
    print_header(ctx, m);
    for (size_t i = 0; i < m->npayloads; i++)
        print_payload(ctx, &m->payloads[i]);
    tool_out(ctx, "signatures:       %zu (NOT verified by inspect; use otter verify)\n", sigs->n);
    for (size_t i = 0; i < sigs->n; i++)
        tool_out(ctx, "  signed by key   %s\n", sigs->sigs[i].key_id);
}

static int print_json(const struct tool_ctx *ctx, const struct ot_manifest *m,
                      const struct ot_sigset *sigs)
{
    json_t *mj = NULL;
    enum ot_err err = ot_manifest_to_json(m, &mj);
    if (err)
        return tool_failf(ctx, err, "%s", ot_strerror(err));
    json_t *list = json_array();
    for (size_t i = 0; list && i < sigs->n; i++)
        json_array_append_new(list, json_pack("{s:s}", "key_id", sigs->sigs[i].key_id));
    json_t *root = json_pack("{s:o, s:o*, s:b}", "manifest", mj, "signatures", list, "verified", 0);
    if (!root)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    err = tool_print_json(root);
    json_decref(root);
    return err ? tool_failf(ctx, err, "cannot write JSON: %s", ot_strerror(err)) : TOOL_EXIT_OK;
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, bool *json,
                      const char **path)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, ":jqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            *json = true;
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
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing ARTIFACT" : "too many arguments");
    *path = argv[optind];
    return TOOL_EXIT_OK;
}

int tool_cmd_inspect(struct tool_ctx *ctx, int argc, char **argv)
{
    bool json = false;
    const char *path = NULL;
    int rc = parse_args(ctx, argc, argv, &json, &path);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;

    struct ot_diag d = {0};
    _cleanup_close_ int fd = -1;
    uint64_t size;
    enum ot_err err = tool_open_artifact(path, &fd, &size, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    _cleanup_(ot_artifact_reader_freep) struct ot_artifact_reader *r = NULL;
    err = tool_peek_manifest(fd, &r, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_ARTIFACT, &d);
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    const struct ot_sigset *sigs = ot_artifact_reader_sigset(r);
    if (ctx->quiet)
        return TOOL_EXIT_OK;
    if (json)
        return print_json(ctx, m, sigs);
    print_text(ctx, path, m, sigs);
    return TOOL_EXIT_OK;
}
