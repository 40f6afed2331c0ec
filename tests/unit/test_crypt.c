/* Payload encryption (crypt.c): content keys, sealing, and the secretstream stages against every
 * way a stored payload can be damaged. Inputs are fed in pseudo-random split sizes (fixed seeds,
 * so a failure reproduces). The stages are tested against a capture sink defined here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/crypt.h"

#define CHUNK OT_CRYPT_CHUNK
#define BLOCK (OT_CRYPT_CHUNK + OT_CRYPT_ABYTES)
#define HDR OT_CRYPT_HEADER_LEN

/* ---- a capture sink ---- */

struct cap {
    struct ot_sink sink;
    struct ot_buf buf;
    int finished;
    enum ot_err fail_with; /* returned by write when set */
};

static enum ot_err cap_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct cap *c = (struct cap *)s;
    if (c->fail_with)
        return ot_diag_set(d, c->fail_with, "capture: injected failure");
    if (c->finished)
        return ot_diag_set(d, OT_ERR_INTERNAL, "capture: write after finish");
    return ot_buf_append(&c->buf, p, n);
}

static enum ot_err cap_finish(struct ot_sink *s, struct ot_diag *d)
{
    struct cap *c = (struct cap *)s;
    c->finished++;
    return OT_OK;
}

static void cap_free(struct ot_sink *s)
{
    (void)s;
}

static void cap_init(struct cap *c)
{
    *c = (struct cap){.sink = {.write = cap_write, .finish = cap_finish, .free = cap_free}};
    ot_buf_init(&c->buf, 16 * 1024 * 1024);
}

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *pattern(size_t n, uint8_t salt)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + i / 251 + salt);
    return p;
}

/* Writes p in pieces of random size (1..max_piece) and finishes. */
static enum ot_err feed(struct ot_sink *s, const uint8_t *p, size_t n, size_t max_piece,
                        struct ot_diag *d)
{
    while (n > 0) {
        size_t r = (size_t)(rng() % max_piece) + 1; /* OT_MIN evaluates twice */
        size_t k = OT_MIN(n, r);
        enum ot_err err = ot_sink_write(s, p, k, d);
        if (err)
            return err;
        p += k;
        n -= k;
    }
    return ot_sink_finish(s, d);
}

static const uint8_t key1[OT_CONTENT_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t key2[OT_CONTENT_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 10};

static void encrypt(const uint8_t *key, const char *ad, const uint8_t *p, size_t n,
                    size_t max_piece, struct ot_buf *out)
{
    struct cap c;
    struct ot_sink *enc = NULL;
    struct ot_diag d = {0};
    cap_init(&c);
    assert_int_equal(ot_sink_encrypt_new(key, ad, &c.sink, &enc), OT_OK);
    if (feed(enc, p, n, max_piece, &d) != OT_OK)
        fail_msg("encrypt: %s", d.msg);
    assert_int_equal(c.finished, 1); /* finish reached the next stage */
    ot_sink_free(enc);
    *out = c.buf;
}

/* Decrypts; returns the error, the plaintext passed on in *plain, whether next was finished. */
static enum ot_err decrypt(const uint8_t *key, const char *ad, const uint8_t *p, size_t n,
                           size_t max_piece, struct ot_buf *plain, int *finished, struct ot_diag *d)
{
    struct cap c;
    struct ot_sink *dec = NULL;
    cap_init(&c);
    assert_int_equal(ot_sink_decrypt_new(key, ad, &c.sink, &dec), OT_OK);
    enum ot_err err = feed(dec, p, n, max_piece, d);
    ot_sink_free(dec);
    if (finished)
        *finished = c.finished;
    if (plain)
        *plain = c.buf;
    else
        ot_buf_release(&c.buf);
    return err;
}

static enum ot_err decrypt_simple(const uint8_t *p, size_t n, size_t *plain_len, struct ot_diag *d)
{
    struct ot_buf plain;
    int finished = 0;
    enum ot_err err = decrypt(key1, "rootfs", p, n, 3 * BLOCK, &plain, &finished, d);
    if (plain_len)
        *plain_len = plain.len;
    assert_int_equal(finished, err == OT_OK); /* next finished exactly when all was good */
    ot_buf_release(&plain);
    return err;
}

/* ---- content keys ---- */

static void test_content_keys(void **state)
{
    (void)state;
    uint8_t a[OT_CONTENT_KEY_LEN], b[OT_CONTENT_KEY_LEN], back[OT_CONTENT_KEY_LEN];
    uint8_t s1[OT_SEALED_KEY_LEN], s2[OT_SEALED_KEY_LEN];
    struct ot_key dev, other, pub, sign;
    assert_int_equal(ot_content_key_generate(a), OT_OK);
    assert_int_equal(ot_content_key_generate(b), OT_OK);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "dev", &dev), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "other", &other), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "sign", &sign), OT_OK);
    ot_key_public(&dev, &pub);
    assert_int_equal(ot_content_key_seal(a, &pub, s1), OT_OK);
    assert_int_equal(ot_content_key_seal(a, &dev, s2), OT_OK); /* a secret key: its public half */
    assert_memory_not_equal(s1, s2, sizeof(s1));               /* fresh ephemeral key each time */
    assert_int_equal(ot_content_key_unseal(s1, &dev, back), OT_OK);
    assert_memory_equal(back, a, sizeof(a));
    memset(back, 0, sizeof(back));
    assert_int_equal(ot_content_key_unseal(s2, &dev, back), OT_OK);
    assert_memory_equal(back, a, sizeof(a));
    memset(back, 0xee, sizeof(back));
    assert_int_equal(ot_content_key_unseal(s1, &other, back), OT_ERR_DECRYPT);
    for (size_t i = 0; i < OT_SEALED_KEY_LEN; i += 9) {
        s1[i] ^= 1;
        assert_int_equal(ot_content_key_unseal(s1, &dev, back), OT_ERR_DECRYPT);
        s1[i] ^= 1;
    }
    for (size_t i = 0; i < sizeof(back); i++)
        assert_int_equal(back[i], 0xee); /* untouched on failure */
    assert_int_equal(ot_content_key_unseal(s1, &pub, back), OT_ERR_INVALID);
    assert_int_equal(ot_content_key_seal(a, &sign, s1), OT_ERR_INVALID);
    assert_int_equal(ot_content_key_unseal(s2, &sign, back), OT_ERR_INVALID);
    /* A low-order recipient key is refused, not sealed to. */
    struct ot_key zero = {.type = OT_KEY_BOX_PUBLIC};
    assert_int_equal(ot_content_key_seal(a, &zero, s1), OT_ERR_CRYPTO);
}

/* ---- sizes ---- */

static void test_stored_size(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK};
    const uint64_t want[] = {
        41, 42, CHUNK + 40, CHUNK + 41, CHUNK + 59, 2 * CHUNK + 58, 3 * CHUNK + 75};
    rng_state = 42;
    for (size_t i = 0; i < OT_ARRAY_SIZE(sizes); i++) {
        uint8_t *p = pattern(sizes[i], 0);
        struct ot_buf out;
        assert_int_equal(ot_crypt_stored_size(sizes[i]), want[i]);
        encrypt(key1, "rootfs", p, sizes[i], 5000, &out);
        assert_int_equal(out.len, want[i]);
        ot_buf_release(&out);
        /* The same size in one single write (whole chunks bypass the buffer). */
        encrypt(key1, "rootfs", p, sizes[i], SIZE_MAX, &out);
        assert_int_equal(out.len, want[i]);
        ot_buf_release(&out);
        free(p);
    }
    assert_true(ot_crypt_stored_size(UINT64_MAX) == UINT64_MAX);
    assert_true(ot_crypt_stored_size(UINT64_MAX - 100) == UINT64_MAX);
}

/* ---- round trips ---- */

static void test_roundtrip_random_splits(void **state)
{
    (void)state;
    const size_t sizes[] = {
        0, 1, 17, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 12345};
    const size_t pieces[] = {1, 7, 1000, BLOCK - 1, BLOCK + 1, 3 * BLOCK};
    for (size_t i = 0; i < OT_ARRAY_SIZE(sizes); i++) {
        uint8_t *p = pattern(sizes[i], (uint8_t)i);
        for (size_t j = 0; j < OT_ARRAY_SIZE(pieces); j++) {
            if (pieces[j] == 1 && sizes[i] > 2 * CHUNK)
                continue; /* byte by byte: covered on the smaller sizes */
            rng_state = 1000 + 17 * i + j;
            struct ot_buf ct, pt;
            struct ot_diag d = {0};
            int finished = 0;
            encrypt(key1, "rootfs", p, sizes[i], pieces[j], &ct);
            assert_int_equal(ct.len, ot_crypt_stored_size(sizes[i]));
            assert_int_equal(decrypt(key1, "rootfs", ct.data, ct.len,
                                     pieces[(j + 1) % OT_ARRAY_SIZE(pieces)], &pt, &finished, &d),
                             OT_OK);
            assert_int_equal(finished, 1);
            assert_int_equal(pt.len, sizes[i]);
            if (sizes[i])
                assert_memory_equal(pt.data, p, sizes[i]);
            ot_buf_release(&ct);
            ot_buf_release(&pt);
        }
        free(p);
    }
}

static void test_encryption_is_randomized(void **state)
{
    (void)state;
    struct ot_buf a, b;
    rng_state = 7;
    encrypt(key1, "rootfs", (const uint8_t *)"same", 4, 100, &a);
    encrypt(key1, "rootfs", (const uint8_t *)"same", 4, 100, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_not_equal(a.data, b.data, HDR);            /* fresh header */
    assert_memory_not_equal(a.data + HDR, b.data + HDR, 21); /* so different ciphertext */
    assert_null(memmem(a.data, a.len, "same", 4));
    ot_buf_release(&a);
    ot_buf_release(&b);
}

static void test_empty_plaintext(void **state)
{
    (void)state;
    struct ot_buf ct;
    size_t n = 99;
    struct ot_diag d = {0};
    encrypt(key1, "rootfs", NULL, 0, 1, &ct);
    assert_int_equal(ct.len, HDR + OT_CRYPT_ABYTES);
    assert_int_equal(decrypt_simple(ct.data, ct.len, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    /* Header alone is not an empty payload: the FINAL chunk is missing. */
    assert_int_equal(decrypt_simple(ct.data, HDR, &n, &d), OT_ERR_TRUNCATED);
    assert_int_equal(decrypt_simple(ct.data, 0, &n, &d), OT_ERR_TRUNCATED);
    assert_non_null(strstr(d.msg, "ends inside its header"));
    ot_buf_release(&ct);
}

/* ---- damage ---- */

struct sample {
    uint8_t *plain;
    size_t plain_len;
    struct ot_buf ct; /* 4 chunks: 3 full MESSAGE + a FINAL of 100 bytes */
};

static int sample_setup(void **state)
{
    struct sample *s = calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->plain_len = 3 * CHUNK + 100;
    s->plain = pattern(s->plain_len, 3);
    rng_state = 99;
    encrypt(key1, "rootfs", s->plain, s->plain_len, 40000, &s->ct);
    *state = s;
    return 0;
}

static int sample_teardown(void **state)
{
    struct sample *s = *state;
    free(s->plain);
    ot_buf_release(&s->ct);
    free(s);
    return 0;
}

static void test_wrong_key_and_ad(void **state)
{
    struct sample *s = *state;
    struct ot_buf pt;
    struct ot_diag d = {0};
    int finished = 0;
    rng_state = 5;
    assert_int_equal(decrypt(key2, "rootfs", s->ct.data, s->ct.len, 5000, &pt, &finished, &d),
                     OT_ERR_DECRYPT);
    assert_int_equal(pt.len, 0); /* nothing unauthenticated was passed on */
    assert_int_equal(finished, 0);
    /* Stages describe the failure; the artifact reader adds which payload it was. */
    assert_non_null(strstr(d.msg, "failed authentication"));
    ot_buf_release(&pt);
    assert_int_equal(decrypt(key1, "rootfs2", s->ct.data, s->ct.len, 5000, &pt, &finished, &d),
                     OT_ERR_DECRYPT);
    assert_int_equal(pt.len, 0);
    ot_buf_release(&pt);
    assert_int_equal(decrypt(key1, "", s->ct.data, s->ct.len, 5000, &pt, &finished, &d),
                     OT_ERR_DECRYPT);
    ot_buf_release(&pt);
}

static void test_truncated_at_boundaries(void **state)
{
    struct sample *s = *state;
    struct ot_diag d = {0};
    size_t n = 0;
    /* Inside or right after the header. */
    for (size_t cut = 0; cut <= HDR; cut += 4) {
        assert_int_equal(decrypt_simple(s->ct.data, cut, &n, &d), OT_ERR_TRUNCATED);
        assert_int_equal(n, 0);
    }
    /* After each complete non-final chunk: what came before was authentic and passed on. */
    for (size_t k = 1; k <= 3; k++) {
        assert_int_equal(decrypt_simple(s->ct.data, HDR + k * BLOCK, &n, &d), OT_ERR_TRUNCATED);
        assert_int_equal(n, k * CHUNK);
        assert_non_null(strstr(d.msg, "before its final chunk"));
    }
    assert_int_equal(decrypt_simple(s->ct.data, s->ct.len, &n, &d), OT_OK);
    assert_int_equal(n, s->plain_len);
}

static void test_truncated_mid_chunk(void **state)
{
    struct sample *s = *state;
    struct ot_diag d = {0};
    size_t n = 0;
    for (size_t k = 0; k < 4; k++) {
        size_t start = HDR + k * BLOCK;
        /* Fewer bytes than a chunk's overhead: cannot be a chunk at all. */
        assert_int_equal(decrypt_simple(s->ct.data, start + 1, &n, &d), OT_ERR_TRUNCATED);
        assert_int_equal(decrypt_simple(s->ct.data, start + OT_CRYPT_ABYTES - 1, &n, &d),
                         OT_ERR_TRUNCATED);
        assert_int_equal(n, k * CHUNK);
        /* Long enough to be a chunk, but it is a cut one: it fails authentication. */
        assert_int_equal(decrypt_simple(s->ct.data, start + OT_CRYPT_ABYTES, &n, &d),
                         OT_ERR_DECRYPT);
        assert_int_equal(n, k * CHUNK);
    }
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(decrypt_simple(s->ct.data, HDR + k * BLOCK + 1000, &n, &d),
                         OT_ERR_DECRYPT);
        assert_int_equal(decrypt_simple(s->ct.data, HDR + (k + 1) * BLOCK - 1, &n, &d),
                         OT_ERR_DECRYPT);
        assert_int_equal(n, k * CHUNK);
    }
    assert_int_equal(decrypt_simple(s->ct.data, s->ct.len - 1, &n, &d), OT_ERR_DECRYPT);
    assert_int_equal(n, 3 * CHUNK);
}

static void test_flipped_bytes(void **state)
{
    struct sample *s = *state;
    struct ot_diag d = {0};
    size_t n = 0;
    uint8_t *c = s->ct.data;
    const struct {
        size_t pos, good_chunks;
    } flips[] = {
        {0, 0},                    /* header */
        {HDR - 1, 0},              /* header, last byte */
        {HDR, 0},                  /* chunk 1: encrypted tag byte */
        {HDR + 1, 0},              /* chunk 1: ciphertext */
        {HDR + BLOCK - 1, 0},      /* chunk 1: MAC */
        {HDR + BLOCK + 30000, 1},  /* chunk 2: ciphertext */
        {HDR + 2 * BLOCK - 16, 1}, /* chunk 2: MAC */
        {HDR + 3 * BLOCK, 3},      /* final chunk: tag byte */
        {s->ct.len - 1, 3},        /* final chunk: MAC */
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(flips); i++) {
        for (uint8_t bit = 1; bit; bit = (uint8_t)(bit << 3)) {
            c[flips[i].pos] ^= bit;
            assert_int_equal(decrypt_simple(c, s->ct.len, &n, &d), OT_ERR_DECRYPT);
            assert_int_equal(n, flips[i].good_chunks * CHUNK);
            c[flips[i].pos] ^= bit;
        }
    }
    assert_int_equal(decrypt_simple(c, s->ct.len, &n, &d), OT_OK);
}

static void test_reordered_chunks(void **state)
{
    struct sample *s = *state;
    struct ot_diag d = {0};
    size_t n = 0;
    uint8_t *c = malloc(s->ct.len + BLOCK);
    assert_non_null(c);
    /* Swap chunks 1 and 2. */
    memcpy(c, s->ct.data, s->ct.len);
    memcpy(c + HDR, s->ct.data + HDR + BLOCK, BLOCK);
    memcpy(c + HDR + BLOCK, s->ct.data + HDR, BLOCK);
    assert_int_equal(decrypt_simple(c, s->ct.len, &n, &d), OT_ERR_DECRYPT);
    assert_int_equal(n, 0);
    /* Drop chunk 2. */
    memcpy(c, s->ct.data, HDR + BLOCK);
    memcpy(c + HDR + BLOCK, s->ct.data + HDR + 2 * BLOCK, s->ct.len - HDR - 2 * BLOCK);
    assert_int_equal(decrypt_simple(c, s->ct.len - BLOCK, &n, &d), OT_ERR_DECRYPT);
    assert_int_equal(n, CHUNK);
    /* Repeat chunk 1. */
    memcpy(c, s->ct.data, HDR + BLOCK);
    memcpy(c + HDR + BLOCK, s->ct.data + HDR, s->ct.len - HDR);
    assert_int_equal(decrypt_simple(c, s->ct.len + BLOCK, &n, &d), OT_ERR_DECRYPT);
    assert_int_equal(n, CHUNK);
    /* Drop the final chunk and end on chunk 3: truncation. */
    assert_int_equal(decrypt_simple(s->ct.data, HDR + 3 * BLOCK, &n, &d), OT_ERR_TRUNCATED);
    free(c);
}

static void test_chunk_moved_between_payloads(void **state)
{
    struct sample *s = *state;
    struct ot_buf other;
    struct ot_diag d = {0};
    size_t n = 0;
    rng_state = 3;
    encrypt(key1, "bootloader", s->plain, s->plain_len, 40000, &other);
    /* Same key, same position, other payload's chunk (with this payload's header): refused. */
    uint8_t *c = malloc(s->ct.len);
    assert_non_null(c);
    memcpy(c, other.data, s->ct.len);
    memcpy(c, s->ct.data, HDR);
    assert_int_equal(decrypt_simple(c, s->ct.len, &n, &d), OT_ERR_DECRYPT);
    free(c);
    ot_buf_release(&other);
}

/* Bytes after the FINAL chunk. A short final chunk has no length field: appended bytes merge
 * into it and it fails authentication (OT_ERR_DECRYPT). Once a FINAL chunk has been recognised
 * (a full-size one), anything after it is OT_ERR_FORMAT. Rejected either way. */
static void test_appended_data(void **state)
{
    struct sample *s = *state;
    struct ot_diag d = {0};
    size_t n = 0;
    size_t final_len = s->ct.len - HDR - 3 * BLOCK;
    uint8_t *c = malloc(s->ct.len + BLOCK);
    assert_non_null(c);
    memcpy(c, s->ct.data, s->ct.len);
    c[s->ct.len] = 0;
    assert_int_equal(decrypt_simple(c, s->ct.len + 1, &n, &d), OT_ERR_DECRYPT);
    assert_int_equal(n, 3 * CHUNK);
    /* A whole extra copy of the final chunk. */
    memcpy(c + s->ct.len, s->ct.data + HDR + 3 * BLOCK, final_len);
    assert_int_equal(decrypt_simple(c, s->ct.len + final_len, &n, &d), OT_ERR_DECRYPT);
    free(c);
    /* A full-size FINAL chunk followed by more bytes: in the same write, and in a later one. */
    uint8_t *p = pattern(2 * CHUNK, 9);
    struct ot_buf ct;
    rng_state = 11;
    encrypt(key1, "rootfs", p, 2 * CHUNK, 100000, &ct);
    assert_int_equal(ct.len, HDR + 2 * BLOCK);
    assert_int_equal(ot_buf_append(&ct, "x", 1), OT_OK);
    assert_int_equal(decrypt(key1, "rootfs", ct.data, ct.len, SIZE_MAX, NULL, NULL, &d),
                     OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "data after the final chunk"));
    for (size_t piece = 1; piece < 1000; piece += 333) {
        assert_int_equal(decrypt(key1, "rootfs", ct.data, ct.len, piece, NULL, NULL, &d),
                         OT_ERR_FORMAT);
    }
    assert_int_equal(decrypt(key1, "rootfs", ct.data, ct.len - 1, SIZE_MAX, NULL, NULL, &d), OT_OK);
    /* An empty write after the end is not data. */
    struct cap cp;
    struct ot_sink *dec = NULL;
    cap_init(&cp);
    assert_int_equal(ot_sink_decrypt_new(key1, "rootfs", &cp.sink, &dec), OT_OK);
    assert_int_equal(ot_sink_write(dec, ct.data, ct.len - 1, &d), OT_OK);
    assert_int_equal(ot_sink_write(dec, ct.data, 0, &d), OT_OK);
    assert_int_equal(ot_sink_write(dec, ct.data, 1, &d), OT_ERR_FORMAT);
    ot_sink_free(dec);
    ot_buf_release(&cp.buf);
    ot_buf_release(&ct);
    free(p);
}

/* ---- stage behaviour ---- */

static void test_stage_misuse(void **state)
{
    (void)state;
    struct cap c;
    struct ot_sink *st = NULL;
    struct ot_diag d = {0};
    cap_init(&c);
    assert_int_equal(ot_sink_encrypt_new(key1, NULL, &c.sink, &st), OT_ERR_INVALID);
    assert_int_equal(ot_sink_encrypt_new(key1, "x", NULL, &st), OT_ERR_INVALID);
    assert_int_equal(ot_sink_decrypt_new(key1, NULL, &c.sink, &st), OT_ERR_INVALID);
    assert_null(st);
    /* Write after finish. */
    assert_int_equal(ot_sink_encrypt_new(key1, "x", &c.sink, &st), OT_OK);
    assert_int_equal(ot_sink_write(st, (const uint8_t *)"abc", 3, &d), OT_OK);
    assert_int_equal(ot_sink_finish(st, &d), OT_OK);
    assert_int_equal(ot_sink_write(st, (const uint8_t *)"abc", 3, &d), OT_ERR_INVALID);
    assert_int_equal(ot_sink_finish(st, &d), OT_ERR_INVALID);
    assert_int_equal(c.finished, 1);
    ot_sink_free(st);
    ot_sink_free(NULL);
    /* Errors from the next stage come back and stick. */
    ot_buf_reset(&c.buf);
    c.finished = 0;
    c.fail_with = OT_ERR_NOSPC;
    assert_int_equal(ot_sink_encrypt_new(key1, "x", &c.sink, &st), OT_OK);
    assert_int_equal(ot_sink_write(st, (const uint8_t *)"abc", 3, &d), OT_ERR_NOSPC);
    c.fail_with = OT_OK;
    assert_int_equal(ot_sink_write(st, (const uint8_t *)"abc", 3, &d), OT_ERR_NOSPC);
    assert_int_equal(ot_sink_finish(st, &d), OT_ERR_NOSPC);
    assert_int_equal(c.finished, 0);
    ot_sink_free(st);
    ot_buf_release(&c.buf);
}

static void test_decrypt_error_is_sticky(void **state)
{
    struct sample *s = *state;
    struct cap c;
    struct ot_sink *dec = NULL;
    struct ot_diag d = {0};
    cap_init(&c);
    assert_int_equal(ot_sink_decrypt_new(key2, "rootfs", &c.sink, &dec), OT_OK);
    assert_int_equal(ot_sink_write(dec, s->ct.data, HDR + BLOCK, &d), OT_ERR_DECRYPT);
    assert_int_equal(ot_sink_write(dec, s->ct.data + HDR + BLOCK, BLOCK, &d), OT_ERR_DECRYPT);
    assert_int_equal(ot_sink_finish(dec, &d), OT_ERR_DECRYPT);
    assert_int_equal(c.finished, 0);
    assert_int_equal(c.buf.len, 0);
    ot_sink_free(dec);
    ot_buf_release(&c.buf);
}

/* Plaintext is released chunk by chunk, as soon as each chunk is complete and authentic. */
static void test_decrypt_streams(void **state)
{
    struct sample *s = *state;
    struct cap c;
    struct ot_sink *dec = NULL;
    struct ot_diag d = {0};
    cap_init(&c);
    assert_int_equal(ot_sink_decrypt_new(key1, "rootfs", &c.sink, &dec), OT_OK);
    assert_int_equal(ot_sink_write(dec, s->ct.data, HDR + BLOCK - 1, &d), OT_OK);
    assert_int_equal(c.buf.len, 0);
    assert_int_equal(ot_sink_write(dec, s->ct.data + HDR + BLOCK - 1, 1, &d), OT_OK);
    assert_int_equal(c.buf.len, CHUNK);
    assert_memory_equal(c.buf.data, s->plain, CHUNK);
    assert_int_equal(ot_sink_write(dec, s->ct.data + HDR + BLOCK, s->ct.len - HDR - BLOCK, &d),
                     OT_OK);
    /* A short last chunk can only be known complete when the input ends. */
    assert_int_equal(c.buf.len, 3 * CHUNK);
    assert_int_equal(ot_sink_finish(dec, &d), OT_OK);
    assert_int_equal(c.buf.len, s->plain_len);
    assert_memory_equal(c.buf.data, s->plain, s->plain_len);
    assert_int_equal(c.finished, 1);
    ot_sink_free(dec);
    ot_buf_release(&c.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_keys),
        cmocka_unit_test(test_stored_size),
        cmocka_unit_test(test_roundtrip_random_splits),
        cmocka_unit_test(test_encryption_is_randomized),
        cmocka_unit_test(test_empty_plaintext),
        cmocka_unit_test_setup_teardown(test_wrong_key_and_ad, sample_setup, sample_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_at_boundaries, sample_setup,
                                        sample_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_mid_chunk, sample_setup, sample_teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bytes, sample_setup, sample_teardown),
        cmocka_unit_test_setup_teardown(test_reordered_chunks, sample_setup, sample_teardown),
        cmocka_unit_test_setup_teardown(test_chunk_moved_between_payloads, sample_setup,
                                        sample_teardown),
        cmocka_unit_test_setup_teardown(test_appended_data, sample_setup, sample_teardown),
        cmocka_unit_test(test_stage_misuse),
        cmocka_unit_test_setup_teardown(test_decrypt_error_is_sticky, sample_setup,
                                        sample_teardown),
        cmocka_unit_test_setup_teardown(test_decrypt_streams, sample_setup, sample_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
