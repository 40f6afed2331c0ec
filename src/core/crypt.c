/* Payload encryption: content keys sealed to device-class keys (crypto_box_seal), and streaming
 * encryption / decryption stages over libsodium's secretstream (XChaCha20-Poly1305).
 *
 * Stream layout (crypt.h): header (24) || chunk_1 || ... || chunk_k, each chunk OT_CRYPT_CHUNK
 * plaintext bytes + 17, the last one 0..OT_CRYPT_CHUNK bytes tagged FINAL. Because the encryptor
 * holds back a full chunk until it sees a byte beyond it, the FINAL chunk always exists and the
 * stored size is a function of the plaintext size alone (ot_crypt_stored_size). */
#include <sodium.h>

#include "otter/crypt.h"

#define BLOCK (OT_CRYPT_CHUNK + OT_CRYPT_ABYTES) /* one stored chunk */

_Static_assert(OT_CRYPT_HEADER_LEN == crypto_secretstream_xchacha20poly1305_HEADERBYTES,
               "secretstream header size");
_Static_assert(OT_CRYPT_ABYTES == crypto_secretstream_xchacha20poly1305_ABYTES,
               "secretstream overhead");
_Static_assert(OT_CONTENT_KEY_LEN == crypto_secretstream_xchacha20poly1305_KEYBYTES,
               "content key size");
_Static_assert(OT_SEALED_KEY_LEN == OT_CONTENT_KEY_LEN + crypto_box_SEALBYTES, "sealed key size");

static enum ot_err sodium_ready(void)
{
    return sodium_init() < 0 ? OT_ERR_CRYPTO : OT_OK;
}

/* ---- content keys ---- */

enum ot_err ot_content_key_generate(uint8_t key[OT_CONTENT_KEY_LEN])
{
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    crypto_secretstream_xchacha20poly1305_keygen(key); /* randombytes_buf */
    return OT_OK;
}

enum ot_err ot_content_key_seal(const uint8_t key[OT_CONTENT_KEY_LEN],
                                const struct ot_key *recipient, uint8_t out[OT_SEALED_KEY_LEN])
{
    if (recipient->type != OT_KEY_BOX_PUBLIC && recipient->type != OT_KEY_BOX_SECRET)
        return OT_ERR_INVALID;
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    /* Fails for a small-order public key (the shared secret would be zero). */
    if (crypto_box_seal(out, key, OT_CONTENT_KEY_LEN, recipient->pk) != 0)
        return OT_ERR_CRYPTO;
    return OT_OK;
}

enum ot_err ot_content_key_unseal(const uint8_t sealed[OT_SEALED_KEY_LEN],
                                  const struct ot_key *box_secret, uint8_t key[OT_CONTENT_KEY_LEN])
{
    uint8_t k[OT_CONTENT_KEY_LEN];
    if (box_secret->type != OT_KEY_BOX_SECRET)
        return OT_ERR_INVALID;
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    if (crypto_box_seal_open(k, sealed, OT_SEALED_KEY_LEN, box_secret->pk, box_secret->sk) != 0)
        return OT_ERR_DECRYPT;
    memcpy(key, k, sizeof(k));
    sodium_memzero(k, sizeof(k));
    return OT_OK;
}

/* The stored size; saturates at UINT64_MAX for absurd inputs instead of wrapping. */
uint64_t ot_crypt_stored_size(uint64_t plain_len)
{
    uint64_t chunks = plain_len == 0 ? 1 : (plain_len - 1) / OT_CRYPT_CHUNK + 1;
    uint64_t overhead = OT_CRYPT_HEADER_LEN + chunks * OT_CRYPT_ABYTES;
    return plain_len > UINT64_MAX - overhead ? UINT64_MAX : plain_len + overhead;
}

/* ---- shared stage plumbing ---- */

struct stage {
    struct ot_sink sink;  /* first: a struct ot_sink * is a struct stage * */
    struct ot_sink *next; /* not owned */
    crypto_secretstream_xchacha20poly1305_state st;
    char *ad;
    size_t ad_len;
    enum ot_err failed; /* sticky: after an error the stream state is meaningless */
    bool finished;
};

static enum ot_err stage_init(struct stage *s, const char *ad, struct ot_sink *next)
{
    if (!ad || !next)
        return OT_ERR_INVALID;
    s->ad = strdup(ad);
    if (!s->ad)
        return OT_ERR_NOMEM;
    s->ad_len = strlen(ad);
    s->next = next;
    return OT_OK;
}

/* Frees a stage allocated as a struct of `size` bytes: the secretstream state holds the key, so
 * the whole struct (keys, buffered plaintext) is wiped first. */
static void stage_free(struct stage *s, size_t size)
{
    if (!s)
        return;
    free(s->ad);
    sodium_memzero(s, size);
    free(s);
}

/* Refuses use after an error or after finish; errors stay sticky. */
static enum ot_err stage_check(const struct stage *s, struct ot_diag *d)
{
    if (s->failed)
        return ot_diag_set(d, s->failed, "stream already failed");
    if (s->finished)
        return ot_diag_set(d, OT_ERR_INVALID, "write after finish");
    return OT_OK;
}

static enum ot_err stage_fail(struct stage *s, enum ot_err err)
{
    if (err)
        s->failed = err;
    return err;
}

/* ---- encryption ---- */

struct enc {
    struct stage s;
    bool header_sent;
    uint8_t header[OT_CRYPT_HEADER_LEN];
    size_t plain_len;
    uint8_t plain[OT_CRYPT_CHUNK];
    uint8_t out[BLOCK];
};

static enum ot_err enc_send_header(struct enc *e, struct ot_diag *d)
{
    if (e->header_sent)
        return OT_OK;
    e->header_sent = true;
    return ot_sink_write(e->s.next, e->header, sizeof(e->header), d);
}

static enum ot_err enc_push(struct enc *e, const uint8_t *p, size_t n, uint8_t tag,
                            struct ot_diag *d)
{
    unsigned long long clen = 0;
    if (crypto_secretstream_xchacha20poly1305_push(&e->s.st, e->out, &clen, p, n,
                                                   (const uint8_t *)e->s.ad, e->s.ad_len, tag) != 0)
        return ot_diag_set(d, OT_ERR_CRYPTO, "encryption failed");
    return ot_sink_write(e->s.next, e->out, (size_t)clen, d);
}

/* A full buffered chunk goes out (as a MESSAGE) only once more plaintext arrives, so finish()
 * always has a last chunk of 0..OT_CRYPT_CHUNK bytes to tag FINAL. */
static enum ot_err enc_consume(struct enc *e, const uint8_t *p, size_t n, struct ot_diag *d)
{
    const uint8_t tag = crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    while (n > 0) {
        enum ot_err err = OT_OK;
        if (e->plain_len == OT_CRYPT_CHUNK) {
            err = enc_push(e, e->plain, OT_CRYPT_CHUNK, tag, d);
            e->plain_len = 0;
        } else if (e->plain_len == 0 && n > OT_CRYPT_CHUNK) {
            /* Whole chunks straight from the caller's buffer, no copy. */
            err = enc_push(e, p, OT_CRYPT_CHUNK, tag, d);
            p += OT_CRYPT_CHUNK;
            n -= OT_CRYPT_CHUNK;
        } else {
            size_t take = OT_MIN(n, OT_CRYPT_CHUNK - e->plain_len);
            memcpy(e->plain + e->plain_len, p, take);
            e->plain_len += take;
            p += take;
            n -= take;
        }
        if (err)
            return err;
    }
    return OT_OK;
}

static enum ot_err enc_write(struct ot_sink *sink, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct enc *e = (struct enc *)sink;
    enum ot_err err = stage_check(&e->s, d);
    if (err)
        return err;
    err = enc_send_header(e, d);
    if (!err)
        err = enc_consume(e, p, n, d);
    return stage_fail(&e->s, err);
}

static enum ot_err enc_finish(struct ot_sink *sink, struct ot_diag *d)
{
    struct enc *e = (struct enc *)sink;
    enum ot_err err = stage_check(&e->s, d);
    if (err)
        return err;
    err = enc_send_header(e, d);
    if (!err)
        err =
            enc_push(e, e->plain, e->plain_len, crypto_secretstream_xchacha20poly1305_TAG_FINAL, d);
    e->plain_len = 0;
    e->s.finished = true;
    if (!err)
        err = ot_sink_finish(e->s.next, d);
    return stage_fail(&e->s, err);
}

static void enc_free(struct ot_sink *sink)
{
    stage_free((struct stage *)sink, sizeof(struct enc));
}

enum ot_err ot_sink_encrypt_new(const uint8_t key[OT_CONTENT_KEY_LEN], const char *ad,
                                struct ot_sink *next, struct ot_sink **ret)
{
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    struct enc *e = calloc(1, sizeof(*e));
    if (!e)
        return OT_ERR_NOMEM;
    e->s.sink = (struct ot_sink){.write = enc_write, .finish = enc_finish, .free = enc_free};
    err = stage_init(&e->s, ad, next);
    if (!err && crypto_secretstream_xchacha20poly1305_init_push(&e->s.st, e->header, key) != 0)
        err = OT_ERR_CRYPTO;
    if (err) {
        enc_free(&e->s.sink);
        return err;
    }
    *ret = &e->s.sink;
    return OT_OK;
}

/* ---- decryption ----
 *
 * Full blocks are decrypted as soon as they are complete; a shorter rest can only be the FINAL
 * chunk and is decrypted at finish. Such a short FINAL chunk has no length of its own, so bytes
 * appended to it become part of it and it fails authentication (OT_ERR_DECRYPT); OT_ERR_FORMAT is
 * for bytes after a FINAL chunk already recognised. Either way they are refused (and the stored
 * size and SHA-256 in the signed manifest catch them before decryption). */

struct dec {
    struct stage s;
    uint8_t key[OT_CONTENT_KEY_LEN]; /* until the header arrives, then wiped */
    size_t header_len;
    uint8_t header[OT_CRYPT_HEADER_LEN];
    bool final_seen;
    size_t block_len;
    uint8_t block[BLOCK];
    uint8_t plain[OT_CRYPT_CHUNK];
};

/* Authenticates and decrypts one stored chunk; only then is its plaintext passed on. */
static enum ot_err dec_chunk(struct dec *x, const uint8_t *c, size_t n, struct ot_diag *d)
{
    unsigned long long mlen = 0;
    uint8_t tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&x->s.st, x->plain, &mlen, &tag, c, n,
                                                   (const uint8_t *)x->s.ad, x->s.ad_len) != 0)
        return ot_diag_set(d, OT_ERR_DECRYPT,
                           "a chunk failed authentication (wrong key, tampered, "
                           "reordered or cut short)");
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
        x->final_seen = true;
    else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
        return ot_diag_set(d, OT_ERR_FORMAT, "unexpected chunk tag %u",
                           (unsigned)tag);
    return ot_sink_write(x->s.next, x->plain, (size_t)mlen, d);
}

static size_t dec_header(struct dec *x, const uint8_t *p, size_t n)
{
    size_t take = OT_MIN(n, OT_CRYPT_HEADER_LEN - x->header_len);
    memcpy(x->header + x->header_len, p, take);
    x->header_len += take;
    return take;
}

static enum ot_err dec_start(struct dec *x, struct ot_diag *d)
{
    int rc = crypto_secretstream_xchacha20poly1305_init_pull(&x->s.st, x->header, x->key);
    sodium_memzero(x->key, sizeof(x->key));
    if (rc != 0)
        return ot_diag_set(d, OT_ERR_DECRYPT, "invalid encryption header");
    return OT_OK;
}

/* One step over the input: header bytes, a whole chunk straight from p, or bytes into the chunk
 * buffer (decrypted as soon as it is full). Returns how much of p it used in *used. */
static enum ot_err dec_step(struct dec *x, const uint8_t *p, size_t n, size_t *used,
                            struct ot_diag *d)
{
    if (x->final_seen)
        return ot_diag_set(d, OT_ERR_FORMAT, "data after the final chunk");
    if (x->header_len < OT_CRYPT_HEADER_LEN) {
        *used = dec_header(x, p, n);
        return x->header_len == OT_CRYPT_HEADER_LEN ? dec_start(x, d) : OT_OK;
    }
    if (x->block_len == 0 && n >= BLOCK) {
        *used = BLOCK;
        return dec_chunk(x, p, BLOCK, d);
    }
    size_t take = OT_MIN(n, BLOCK - x->block_len);
    memcpy(x->block + x->block_len, p, take);
    x->block_len += take;
    *used = take;
    if (x->block_len < BLOCK)
        return OT_OK;
    x->block_len = 0;
    return dec_chunk(x, x->block, BLOCK, d);
}

static enum ot_err dec_write(struct ot_sink *sink, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct dec *x = (struct dec *)sink;
    enum ot_err err = stage_check(&x->s, d);
    while (!err && n > 0) {
        size_t used = 0;
        err = dec_step(x, p, n, &used, d);
        p += used;
        n -= used;
    }
    return stage_fail(&x->s, err);
}

/* The input ended: what is left must be a whole FINAL chunk (shorter than a full block). */
static enum ot_err dec_drain(struct dec *x, struct ot_diag *d)
{
    if (x->header_len < OT_CRYPT_HEADER_LEN)
        return ot_diag_set(d, OT_ERR_TRUNCATED,
                           "encrypted data ends inside its header");
    if (!x->final_seen && x->block_len > 0) {
        if (x->block_len < OT_CRYPT_ABYTES)
            return ot_diag_set(d, OT_ERR_TRUNCATED, "encrypted data ends mid-chunk");
        enum ot_err err = dec_chunk(x, x->block, x->block_len, d);
        x->block_len = 0;
        if (err)
            return err;
    }
    if (!x->final_seen)
        return ot_diag_set(d, OT_ERR_TRUNCATED,
                           "encrypted data ends before its final chunk");
    return OT_OK;
}

static enum ot_err dec_finish(struct ot_sink *sink, struct ot_diag *d)
{
    struct dec *x = (struct dec *)sink;
    enum ot_err err = stage_check(&x->s, d);
    if (err)
        return err;
    x->s.finished = true;
    err = dec_drain(x, d);
    if (!err)
        err = ot_sink_finish(x->s.next, d);
    return stage_fail(&x->s, err);
}

static void dec_free(struct ot_sink *sink)
{
    stage_free((struct stage *)sink, sizeof(struct dec));
}

enum ot_err ot_sink_decrypt_new(const uint8_t key[OT_CONTENT_KEY_LEN], const char *ad,
                                struct ot_sink *next, struct ot_sink **ret)
{
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    struct dec *x = calloc(1, sizeof(*x));
    if (!x)
        return OT_ERR_NOMEM;
    x->s.sink = (struct ot_sink){.write = dec_write, .finish = dec_finish, .free = dec_free};
    err = stage_init(&x->s, ad, next);
    if (err) {
        dec_free(&x->s.sink);
        return err;
    }
    memcpy(x->key, key, OT_CONTENT_KEY_LEN);
    *ret = &x->s.sink;
    return OT_OK;
}
