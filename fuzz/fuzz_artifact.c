/* Fuzzes the whole artifact reader: tar framing, entry order, manifest and signature parsing, and
 * the payload decoding chain (stored hash, zstd with its limits, installed hash). Signatures are
 * not verified here (no trust set): random input never carries a valid signature, and the point is
 * to reach the decoders behind the signature check. The input is fed in two different splits. */
#include "otter/artifact.h"

static enum ot_err on_begin(void *ud, const struct ot_payload *p, size_t index,
                            struct ot_sink **ret, struct ot_diag *d)
{
    (void)ud;
    (void)index;
    (void)d;
    /* Invariant: a payload only starts when its manifest entry passed validation. */
    if (!p->name || !p->type || !p->version)
        abort();
    *ret = NULL;
    return OT_OK;
}

static enum ot_err on_end(void *ud, const struct ot_payload *p, size_t index, struct ot_diag *d)
{
    (void)p;
    (void)d;
    size_t *ended = ud;
    if (index != *ended) /* payloads end in manifest order, once each */
        abort();
    (*ended)++;
    return OT_OK;
}

static void run(const uint8_t *data, size_t size, size_t split, enum ot_read_mode mode)
{
    static const struct ot_reader_callbacks cb = {NULL, on_begin, on_end};
    struct ot_reader_opts opts = {.mode = mode};
    size_t ended = 0;
    struct ot_artifact_reader *r;
    if (ot_artifact_reader_new(&opts, &cb, &ended, &r) != OT_OK)
        return;
    struct ot_diag d = {0};
    enum ot_err err = ot_artifact_reader_feed(r, data, split, &d);
    if (!err)
        err = ot_artifact_reader_feed(r, data + split, size - split, &d);
    if (!err)
        err = ot_artifact_reader_finish(r, &d);
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    if (!err && (!m || ended != m->npayloads)) /* success means every payload was verified */
        abort();
    if (err && d.msg[0] == '\0') /* every failure explains itself */
        abort();
    ot_artifact_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size, size, OT_READ_DECODE);
    run(data, size, size ? data[0] * size / 256 : 0, OT_READ_STORED);
    return 0;
}
