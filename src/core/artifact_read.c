/* Reading an artifact: a push-driven state machine over the tar reader.
 *
 * Order is part of the format: manifest.json, manifest.sig, then payload/<name> for every payload in
 * manifest order, then the end of the archive. The signature threshold is checked as soon as
 * manifest.sig is complete, before a single payload byte is looked at; every payload byte then
 * passes a chain that checks it against the signed manifest:
 *
 *   decode: stored bytes -> [decrypt] -> [zstd] -> hash(size, sha256) -> consumer sink
 *   decode, check_stored: stored bytes -> hash(stored_size, stored_sha256) -> [decrypt] -> [zstd]
 *           -> count(size) -> consumer sink
 *   stored: stored bytes -> hash(stored_size, stored_sha256) -> consumer sink
 *
 * Sizes are enforced as the bytes arrive (a payload or a decompression bomb stops at its declared
 * size); hashes are compared at the end of the entry, and only then is payload_end called. */
#include <fcntl.h>
#include <sodium.h>

#include "otter/artifact.h"
#include "otter/crypt.h"
#include "otter/encoding.h"
#include "otter/tar.h"

enum expect {
    EXPECT_MANIFEST,
    EXPECT_SIG,
    EXPECT_PAYLOAD,
    EXPECT_END,
};

#define CHAIN_MAX 5

struct ot_artifact_reader {
    struct ot_reader_opts opts;
    struct ot_reader_callbacks cb;
    void *userdata;
    struct ot_tar_reader *tar;
    enum expect expect;
    bool in_entry;
    struct ot_buf small;              /* manifest.json or manifest.sig being collected */
    uint8_t *manifest_raw;
    size_t manifest_len;
    struct ot_manifest manifest;
    bool have_manifest;
    struct ot_sigset sigs;
    bool have_sigs;
    struct ot_sig_report report;
    bool have_report;
    uint8_t content_key[OT_CONTENT_KEY_LEN];
    bool have_key;
    size_t payload;                   /* index of the current or next payload */
    struct ot_sink *chain[CHAIN_MAX]; /* stages of the current payload, head first */
    size_t nchain;
    struct ot_sink *stored_hash, *installed_hash, *null_end;
};

static void chain_free(struct ot_artifact_reader *r)
{
    for (size_t i = 0; i < r->nchain; i++)
        ot_sink_free(r->chain[i]);
    ot_sink_free(r->null_end);
    r->nchain = 0;
    r->null_end = r->stored_hash = r->installed_hash = NULL;
}

/* Puts a new stage in front of the chain (chains are built back to front). */
static void chain_push(struct ot_artifact_reader *r, struct ot_sink *stage)
{
    memmove(&r->chain[1], &r->chain[0], r->nchain * sizeof(r->chain[0]));
    r->chain[0] = stage;
    r->nchain++;
}

static struct ot_sink *chain_head(struct ot_artifact_reader *r, struct ot_sink *end)
{
    return r->nchain ? r->chain[0] : end;
}

/* Adds the decoding stages: installed hash (or, with check_stored, a count of the decoded bytes),
 * zstd and decryption, as the payload needs them. */
static enum ot_err build_decode(struct ot_artifact_reader *r, const struct ot_payload *p,
                                struct ot_sink *end)
{
    struct ot_sink *s;
    enum ot_err err = r->opts.check_stored ? ot_sink_count_new(end, p->size, "decoded data", &s)
                                           : ot_sink_hash_new(end, p->size, "decoded data", &s);
    if (err)
        return err;
    chain_push(r, s);
    r->installed_hash = s;
    if (p->compression == OT_COMPRESSION_ZSTD) {
        err = ot_sink_zstd_decompress_new(p->size, r->opts.decode_chunk, chain_head(r, end), &s);
        if (err)
            return err;
        chain_push(r, s);
    }
    if (p->encrypted) {
        err = ot_sink_decrypt_new(r->content_key, p->name, chain_head(r, end), &s);
        if (err)
            return err;
        chain_push(r, s);
    }
    return OT_OK;
}

/* Decoding checks one of the two signed hashes, never both: either would catch any change.
 * Checking every decoded byte against the installed hash (and an encrypted chunk against its tag)
 * catches tampering that changes the content, and tampering that does not is harmless. With
 * check_stored, the stored bytes are checked instead: decryption and zstd are deterministic, so
 * the signed stored bytes decode to exactly one content, the one the signers packed; the decoded
 * size is still held to the manifest exactly. Fewer bytes to hash for a compressed payload, and
 * as before nothing is reported verified before the whole entry was checked. Stored mode
 * (OT_READ_STORED: no keys, e.g. a signer or the server) can only check the stored hash. The
 * entry's size was checked against stored_size at its header either way. */
static enum ot_err build_chain(struct ot_artifact_reader *r, const struct ot_payload *p,
                               struct ot_sink *end, struct ot_diag *d)
{
    struct ot_sink *s = NULL;
    enum ot_err err = OT_OK;
    bool decode = r->opts.mode == OT_READ_DECODE;
    if (decode)
        err = build_decode(r, p, end);
    if (!err && (!decode || r->opts.check_stored)) {
        err = ot_sink_hash_new(chain_head(r, end), p->stored_size, "stored data", &s);
        if (!err) {
            chain_push(r, s);
            r->stored_hash = s;
        }
    }
    if (err)
        return ot_diag_set(d, err, "payload '%s': cannot set up decoding: %s", p->name,
                           ot_strerror(err));
    return OT_OK;
}

static enum ot_err begin_payload(struct ot_artifact_reader *r, const char *name, uint64_t size,
                                 struct ot_diag *d)
{
    const struct ot_manifest *m = &r->manifest;
    if (r->payload >= m->npayloads)
        return ot_diag_set(d, OT_ERR_FORMAT, "artifact: unexpected entry '%s' after the last payload",
                           name);
    const struct ot_payload *p = &m->payloads[r->payload];
    size_t plen = strlen(OT_ARTIFACT_PAYLOAD_PREFIX);
    if (strncmp(name, OT_ARTIFACT_PAYLOAD_PREFIX, plen) != 0 || strcmp(name + plen, p->name) != 0) {
        for (size_t i = 0; i < r->payload; i++)
            if (strncmp(name, OT_ARTIFACT_PAYLOAD_PREFIX, plen) == 0 &&
                strcmp(name + plen, m->payloads[i].name) == 0)
                return ot_diag_set(d, OT_ERR_FORMAT, "artifact: duplicate entry '%s'", name);
        return ot_diag_set(d, OT_ERR_FORMAT, "artifact: expected entry '%s%s', found '%s'",
                           OT_ARTIFACT_PAYLOAD_PREFIX, p->name, name);
    }
    if (size != p->stored_size)
        return ot_diag_set(d, OT_ERR_SIZE,
                           "payload '%s': archive entry has %llu bytes, the manifest declares %llu",
                           p->name, (unsigned long long)size, (unsigned long long)p->stored_size);
    if (p->has_delta_base && r->opts.mode == OT_READ_DECODE)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED, "payload '%s': delta payloads are not supported",
                           p->name);

    struct ot_sink *user = NULL;
    if (r->cb.payload_begin) {
        enum ot_err err = r->cb.payload_begin(r->userdata, p, r->payload, &user, d);
        if (err)
            return err;
    }
    if (!user) {
        enum ot_err err = ot_sink_null_new(&r->null_end);
        if (err)
            return ot_diag_set(d, err, "out of memory");
        user = r->null_end;
    }
    return build_chain(r, p, user, d);
}

static enum ot_err on_entry(void *userdata, const char *name, uint64_t size, struct ot_diag *d)
{
    struct ot_artifact_reader *r = userdata;
    const char *want = NULL;
    size_t max = 0;
    r->in_entry = true;
    switch (r->expect) {
    case EXPECT_MANIFEST:
        want = OT_ARTIFACT_MANIFEST_NAME;
        max = OT_MANIFEST_MAX;
        break;
    case EXPECT_SIG:
        want = OT_ARTIFACT_SIG_NAME;
        max = OT_SIG_FILE_MAX;
        break;
    case EXPECT_PAYLOAD:
        return begin_payload(r, name, size, d);
    case EXPECT_END:
        return ot_diag_set(d, OT_ERR_FORMAT, "artifact: unexpected entry '%s' after the last payload",
                           name);
    }
    if (strcmp(name, want) != 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "artifact: entry %d must be '%s', found '%s'",
                           r->expect == EXPECT_MANIFEST ? 1 : 2, want, name);
    if (size > max)
        return ot_diag_set(d, OT_ERR_LIMIT, "artifact: %s is %llu bytes, the limit is %zu", want,
                           (unsigned long long)size, max);
    ot_buf_init(&r->small, max);
    return OT_OK;
}

static enum ot_err on_data(void *userdata, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct ot_artifact_reader *r = userdata;
    if (r->expect == EXPECT_PAYLOAD) {
        enum ot_err err = ot_sink_write(r->chain[0], p, n, d);
        if (err)
            return ot_diag_prefix(d, err, "payload '%s'", r->manifest.payloads[r->payload].name);
        return OT_OK;
    }
    enum ot_err err = ot_buf_append(&r->small, p, n);
    return err ? ot_diag_set(d, err, "artifact: entry larger than its limit") : OT_OK;
}

/* Keeps the exact bytes: they are parsed only after their signatures check out (end_sig), so
 * nothing unauthenticated reaches the JSON parser when a trust set is given. */
static enum ot_err end_manifest(struct ot_artifact_reader *r, struct ot_diag *d)
{
    enum ot_err err = ot_buf_steal(&r->small, &r->manifest_raw, &r->manifest_len);
    if (err)
        return ot_diag_set(d, err, "out of memory");
    r->expect = EXPECT_SIG;
    return OT_OK;
}

/* Opens the content key with the first device key that is among the recipients. */
static enum ot_err unseal_content_key(struct ot_artifact_reader *r, struct ot_diag *d)
{
    const struct ot_manifest *m = &r->manifest;
    for (size_t k = 0; k < r->opts.ndevice_keys; k++) {
        const struct ot_key *dk = &r->opts.device_keys[k];
        for (size_t i = 0; i < m->nrecipients; i++) {
            if (strcmp(m->recipients[i].key_id, dk->id) != 0)
                continue;
            if (ot_content_key_unseal(m->recipients[i].sealed_key, dk, r->content_key) == OT_OK) {
                r->have_key = true;
                return OT_OK;
            }
            return ot_diag_set(d, OT_ERR_DECRYPT,
                               "artifact: the content key sealed to device key %s does not open "
                               "with it (tampered or wrong key)",
                               dk->id);
        }
    }
    char ids[256] = "";
    for (size_t i = 0; i < m->nrecipients && strlen(ids) + OT_KEY_ID_STRLEN + 2 < sizeof(ids); i++)
        snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "%s%s", i ? ", " : "",
                 m->recipients[i].key_id);
    return ot_diag_set(d, OT_ERR_NOKEY,
                       "artifact is encrypted for device keys %s; %s", ids,
                       r->opts.ndevice_keys ? "none of the given device keys is among them"
                                            : "no device key was given");
}

/* In OT_READ_AUTO, an encrypted artifact read without any device key is checked as stored bytes. */
static void settle_mode(struct ot_artifact_reader *r)
{
    if (r->opts.mode == OT_READ_AUTO)
        r->opts.mode = r->manifest.nrecipients && r->opts.ndevice_keys == 0 ? OT_READ_STORED
                                                                            : OT_READ_DECODE;
}

static enum ot_err end_sig(struct ot_artifact_reader *r, struct ot_diag *d)
{
    enum ot_err err = ot_sigset_parse(r->small.data, r->small.len, &r->sigs, d);
    ot_buf_release(&r->small);
    if (err)
        return err;
    r->have_sigs = true;
    if (r->opts.trust) {
        err = ot_sigset_verify(&r->sigs, r->opts.trust, r->manifest_raw, r->manifest_len,
                               &r->report, d);
        r->have_report = true;
        if (err)
            return err;
    }
    err = ot_manifest_parse(r->manifest_raw, r->manifest_len, &r->manifest, d);
    if (err)
        return err;
    r->have_manifest = true;
    settle_mode(r);
    if (r->opts.mode == OT_READ_DECODE && r->manifest.nrecipients) {
        err = unseal_content_key(r, d);
        if (err)
            return err;
    }
    r->expect = EXPECT_PAYLOAD;
    if (r->cb.manifest) {
        err = r->cb.manifest(r->userdata, &r->manifest, r->manifest_raw, r->manifest_len, &r->sigs,
                             r->have_report ? &r->report : NULL, d);
        if (err)
            return err;
    }
    return OT_OK;
}

/* want NULL: a count sink, only the size is checked. */
static enum ot_err check_digest(struct ot_sink *hash, const uint8_t want[OT_SHA256_LEN],
                                uint64_t want_size, const char *name, const char *what,
                                struct ot_diag *d)
{
    uint8_t got[OT_SHA256_LEN];
    uint64_t count;
    ot_sink_hash_result(hash, got, &count);
    if (count != want_size)
        return ot_diag_set(d, OT_ERR_SIZE, "payload '%s': %s size is %llu bytes, the manifest "
                           "declares %llu", name, what, (unsigned long long)count,
                           (unsigned long long)want_size);
    if (want && sodium_memcmp(got, want, OT_SHA256_LEN) != 0) {
        char hex[OT_SHA256_HEX_LEN];
        ot_hex_encode(got, OT_SHA256_LEN, hex);
        return ot_diag_set(d, OT_ERR_HASH, "payload '%s': %s content has SHA-256 %s, which is not "
                           "the one in the signed manifest", name, what, hex);
    }
    return OT_OK;
}

static enum ot_err end_payload(struct ot_artifact_reader *r, struct ot_diag *d)
{
    const struct ot_payload *p = &r->manifest.payloads[r->payload];
    enum ot_err err = ot_sink_finish(r->chain[0], d);
    if (err)
        return ot_diag_prefix(d, err, "payload '%s'", p->name);
    if (r->stored_hash)
        err = check_digest(r->stored_hash, p->stored_sha256, p->stored_size, p->name, "stored", d);
    if (!err && r->installed_hash)
        err = check_digest(r->installed_hash, r->opts.check_stored ? NULL : p->sha256, p->size,
                           p->name, "decoded", d);
    chain_free(r);
    if (err)
        return err;
    if (r->cb.payload_end) {
        err = r->cb.payload_end(r->userdata, p, r->payload, d);
        if (err)
            return err;
    }
    r->payload++;
    if (r->payload == r->manifest.npayloads)
        r->expect = EXPECT_END;
    return OT_OK;
}

static enum ot_err on_entry_end(void *userdata, struct ot_diag *d)
{
    struct ot_artifact_reader *r = userdata;
    r->in_entry = false;
    switch (r->expect) {
    case EXPECT_MANIFEST:
        return end_manifest(r, d);
    case EXPECT_SIG:
        return end_sig(r, d);
    case EXPECT_PAYLOAD:
        return end_payload(r, d);
    case EXPECT_END:
        break;
    }
    return ot_diag_set(d, OT_ERR_INTERNAL, "artifact: entry end in the wrong state");
}

static const struct ot_tar_callbacks tar_callbacks = {on_entry, on_data, on_entry_end};

enum ot_err ot_artifact_reader_new(const struct ot_reader_opts *opts,
                                   const struct ot_reader_callbacks *cb, void *userdata,
                                   struct ot_artifact_reader **ret)
{
    struct ot_artifact_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return OT_ERR_NOMEM;
    r->opts = *opts;
    if (cb)
        r->cb = *cb;
    r->userdata = userdata;
    enum ot_err err = ot_tar_reader_new(&tar_callbacks, r, &r->tar);
    if (err) {
        free(r);
        return err;
    }
    *ret = r;
    return OT_OK;
}

enum ot_err ot_artifact_reader_feed(struct ot_artifact_reader *r, const uint8_t *p, size_t n,
                                    struct ot_diag *d)
{
    return ot_tar_reader_feed(r->tar, p, n, d);
}

enum ot_err ot_artifact_reader_finish(struct ot_artifact_reader *r, struct ot_diag *d)
{
    if (r->expect != EXPECT_END) {
        if (r->expect == EXPECT_MANIFEST)
            return ot_diag_set(d, OT_ERR_TRUNCATED, "artifact ends before its manifest is complete");
        if (r->expect == EXPECT_SIG)
            return ot_diag_set(d, OT_ERR_TRUNCATED, "artifact ends before its signatures");
        return ot_diag_set(d, OT_ERR_TRUNCATED, "artifact ends after %zu of %zu payloads%s",
                           r->payload, r->manifest.npayloads, r->in_entry ? " (inside a payload)" : "");
    }
    return ot_tar_reader_finish(r->tar, d);
}

enum ot_err ot_artifact_reader_feed_fd(struct ot_artifact_reader *r, int fd, uint64_t total,
                                       ot_progress_fn progress, void *userdata, struct ot_diag *d)
{
    _cleanup_free_ uint8_t *buf = malloc(OT_ARTIFACT_IO_CHUNK);
    if (!buf)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint64_t done = 0;
    for (;;) {
        ssize_t n = read(fd, buf, OT_ARTIFACT_IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ot_diag_errno(d, OT_ERR_IO, errno, "read artifact");
        if (n == 0)
            break;
        enum ot_err err = ot_artifact_reader_feed(r, buf, (size_t)n, d);
        if (err)
            return err;
        done += (uint64_t)n;
        if (progress)
            progress(userdata, done, total);
    }
    return ot_artifact_reader_finish(r, d);
}

const struct ot_manifest *ot_artifact_reader_manifest(const struct ot_artifact_reader *r)
{
    return r->have_manifest ? &r->manifest : NULL;
}

const struct ot_sig_report *ot_artifact_reader_sig_report(const struct ot_artifact_reader *r)
{
    return r->have_report ? &r->report : NULL;
}

const struct ot_sigset *ot_artifact_reader_sigset(const struct ot_artifact_reader *r)
{
    return r->have_sigs ? &r->sigs : NULL;
}

bool ot_artifact_reader_decodes(const struct ot_artifact_reader *r)
{
    return r->opts.mode == OT_READ_DECODE;
}

uint64_t ot_artifact_reader_offset(const struct ot_artifact_reader *r)
{
    return ot_tar_reader_offset(r->tar);
}

void ot_artifact_reader_free(struct ot_artifact_reader *r)
{
    if (!r)
        return;
    chain_free(r);
    ot_tar_reader_free(r->tar);
    ot_buf_release(&r->small);
    free(r->manifest_raw);
    ot_manifest_release(&r->manifest);
    sodium_memzero(r->content_key, sizeof(r->content_key));
    free(r);
}
