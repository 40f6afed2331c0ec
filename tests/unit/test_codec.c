/* Streaming stages: hashing, zstd both ways with limits, chain ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <zstd.h>

#include "otter/codec.h"

/* Deterministic, compressible-but-not-trivial test data. */
static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (i % 64 < 40) ? (uint8_t)(i / 64) : (uint8_t)x;
    }
}

/* Writes p into s in pieces whose sizes come from a seeded generator (1..max_piece). */
static enum ot_err write_split(struct ot_sink *s, const uint8_t *p, size_t n, size_t max_piece,
                               uint32_t seed, struct ot_diag *d)
{
    uint32_t x = seed | 1;
    while (n) {
        x = x * 1103515245u + 12345u;
        size_t k = 1 + (x >> 8) % max_piece;
        k = k > n ? n : k;
        enum ot_err err = ot_sink_write(s, p, k, d);
        if (err)
            return err;
        p += k;
        n -= k;
    }
    return OT_OK;
}

static void test_hash_sink_matches_oneshot(void **state)
{
    (void)state;
    size_t n = 300000;
    uint8_t *data = malloc(n);
    fill(data, n, 7);
    uint8_t want[OT_SHA256_LEN], got[OT_SHA256_LEN];
    assert_int_equal(ot_sha256_buf(data, n, want), OT_OK);
    struct ot_sink *h;
    assert_int_equal(ot_sink_hash_new(NULL, n, "t", &h), OT_OK);
    assert_int_equal(write_split(h, data, n, 5000, 3, NULL), OT_OK);
    assert_int_equal(ot_sink_finish(h, NULL), OT_OK);
    uint64_t count;
    ot_sink_hash_result(h, got, &count);
    assert_memory_equal(got, want, OT_SHA256_LEN);
    assert_int_equal(count, n);
    ot_sink_free(h);
    free(data);
}

static void test_hash_sink_enforces_max(void **state)
{
    (void)state;
    struct ot_sink *h;
    struct ot_diag d = {0};
    uint8_t b[10] = {0};
    assert_int_equal(ot_sink_hash_new(NULL, 15, "payload 'x'", &h), OT_OK);
    assert_int_equal(ot_sink_write(h, b, 10, &d), OT_OK);
    assert_int_equal(ot_sink_write(h, b, 6, &d), OT_ERR_SIZE);
    assert_non_null(strstr(d.msg, "payload 'x'"));
    ot_sink_free(h);
}

/* Compresses data through the sink into a buffer. */
static void compress_to(const uint8_t *data, size_t n, int level, struct ot_buf *out)
{
    struct ot_sink *bs, *zc;
    assert_int_equal(ot_sink_buf_new(out, &bs), OT_OK);
    assert_int_equal(ot_sink_zstd_compress_new(level, bs, &zc), OT_OK);
    assert_int_equal(write_split(zc, data, n, 70000, 11, NULL), OT_OK);
    assert_int_equal(ot_sink_finish(zc, NULL), OT_OK);
    ot_sink_free(zc);
    ot_sink_free(bs);
}

static enum ot_err decompress_to(const uint8_t *z, size_t zn, uint64_t max, size_t piece,
                                 struct ot_buf *out, struct ot_diag *d)
{
    struct ot_sink *bs, *zd;
    assert_int_equal(ot_sink_buf_new(out, &bs), OT_OK);
    assert_int_equal(ot_sink_zstd_decompress_new(max, 0, bs, &zd), OT_OK);
    enum ot_err err = write_split(zd, z, zn, piece, 5, d);
    if (!err)
        err = ot_sink_finish(zd, d);
    ot_sink_free(zd);
    ot_sink_free(bs);
    return err;
}

static void test_zstd_round_trip(void **state)
{
    (void)state;
    size_t n = 3 * 1024 * 1024 + 17;
    uint8_t *data = malloc(n);
    fill(data, n, 99);
    struct ot_buf z, back;
    ot_buf_init(&z, 64 << 20);
    ot_buf_init(&back, 64 << 20);
    compress_to(data, n, 3, &z);
    assert_true(z.len < n); /* it does compress */
    /* The frame must be decodable by the reference decoder too. */
    uint8_t *ref = malloc(n);
    assert_int_equal(ZSTD_decompress(ref, n, z.data, z.len), n);
    assert_memory_equal(ref, data, n);
    for (size_t piece = 1; piece <= 1 << 20; piece *= 64) {
        ot_buf_reset(&back);
        assert_int_equal(decompress_to(z.data, z.len, n, piece, &back, NULL), OT_OK);
        assert_int_equal(back.len, n);
        assert_memory_equal(back.data, data, n);
    }
    free(ref);
    free(data);
    ot_buf_release(&z);
    ot_buf_release(&back);
}

/* What otter pack makes decodes within a 1 MiB window at every level, even for inputs far larger
 * than zstd's own windows (2..8 MiB from level 3 up): a device's install memory. */
static void test_zstd_window_is_one_mib(void **state)
{
    (void)state;
    size_t n = 12 * 1024 * 1024;
    uint8_t *data = malloc(n), *back = malloc(n);
    assert_non_null(data);
    assert_non_null(back);
    fill(data, n, 7);
    memcpy(data + n - 4 * 1024 * 1024, data, 4 * 1024 * 1024); /* a long-distance repeat */
    for (int level = 1; level <= 19; level += 6) {
        struct ot_buf z;
        ot_buf_init(&z, 64 << 20);
        compress_to(data, n, level, &z);
        ZSTD_DCtx *dc = ZSTD_createDCtx();
        assert_false(ZSTD_isError(ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, 20)));
        ZSTD_inBuffer in = {z.data, z.len, 0};
        ZSTD_outBuffer out = {back, n, 0};
        size_t rc = ZSTD_decompressStream(dc, &out, &in);
        if (ZSTD_isError(rc))
            fail_msg("level %d: %s", level, ZSTD_getErrorName(rc));
        assert_int_equal(rc, 0);
        assert_int_equal(out.pos, n);
        assert_memory_equal(back, data, n);
        ZSTD_freeDCtx(dc);
        ot_buf_release(&z);
    }
    free(data);
    free(back);
}

static void test_zstd_empty_input(void **state)
{
    (void)state;
    struct ot_buf z, back;
    ot_buf_init(&z, 1024);
    ot_buf_init(&back, 1024);
    compress_to((const uint8_t *)"", 0, 3, &z);
    assert_true(z.len > 0); /* an empty frame, not nothing */
    assert_int_equal(decompress_to(z.data, z.len, 0, 1, &back, NULL), OT_OK);
    assert_int_equal(back.len, 0);
    /* No frame at all is not a valid empty payload. */
    struct ot_diag d = {0};
    assert_int_equal(decompress_to(z.data, 0, 0, 1, &back, &d), OT_ERR_TRUNCATED);
    ot_buf_release(&z);
    ot_buf_release(&back);
}

static void test_zstd_bomb_stops_at_limit(void **state)
{
    (void)state;
    size_t n = 64 * 1024 * 1024; /* 64 MiB of zeros compress to a few KiB */
    uint8_t *zeros = calloc(1, n);
    struct ot_buf z, back;
    ot_buf_init(&z, 1 << 20);
    ot_buf_init(&back, 2 << 20);
    compress_to(zeros, n, 3, &z);
    free(zeros);
    assert_true(z.len < 64 * 1024);
    struct ot_diag d = {0};
    assert_int_equal(decompress_to(z.data, z.len, 1 << 20, 1 << 20, &back, &d), OT_ERR_SIZE);
    assert_true(back.len <= 1 << 20); /* never more than the limit reached the consumer */
    assert_non_null(strstr(d.msg, "declared size"));
    ot_buf_release(&z);
    ot_buf_release(&back);
}

static void test_zstd_truncated_and_garbage(void **state)
{
    (void)state;
    size_t n = 200000;
    uint8_t *data = malloc(n);
    fill(data, n, 5);
    struct ot_buf z, back;
    ot_buf_init(&z, 1 << 20);
    ot_buf_init(&back, 1 << 20);
    compress_to(data, n, 3, &z);
    struct ot_diag d = {0};
    /* Every strict prefix is refused. */
    for (size_t cut = 0; cut < z.len; cut += 1 + z.len / 97) {
        ot_buf_reset(&back);
        enum ot_err err = decompress_to(z.data, cut, n, 4096, &back, &d);
        assert_true(err == OT_ERR_TRUNCATED || err == OT_ERR_FORMAT);
    }
    /* Garbage after a complete frame is refused. */
    assert_int_equal(ot_buf_append(&z, "garbage!", 8), OT_OK);
    ot_buf_reset(&back);
    enum ot_err err = decompress_to(z.data, z.len, n, 4096, &back, &d);
    assert_true(err == OT_ERR_FORMAT || err == OT_ERR_TRUNCATED);
    /* Not zstd at all. */
    ot_buf_reset(&back);
    assert_int_equal(decompress_to(data, 1000, n, 100, &back, &d), OT_ERR_FORMAT);
    free(data);
    ot_buf_release(&z);
    ot_buf_release(&back);
}

static void test_zstd_refuses_huge_window(void **state)
{
    (void)state;
    /* A frame that announces a 128 MiB window (zstd --long=27 without a known size). */
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 27)));
    size_t n = 1 << 20;
    uint8_t *data = malloc(n), *out = malloc(ZSTD_compressBound(n));
    fill(data, n, 1);
    ZSTD_inBuffer in = {data, n, 0};
    ZSTD_outBuffer o = {out, ZSTD_compressBound(n), 0};
    /* e_continue first: with e_end alone zstd would learn the size and shrink the window. */
    assert_false(ZSTD_isError(ZSTD_compressStream2(c, &o, &in, ZSTD_e_continue)));
    ZSTD_inBuffer none = {NULL, 0, 0};
    assert_int_equal(ZSTD_compressStream2(c, &o, &none, ZSTD_e_end), 0);
    struct ot_buf back;
    ot_buf_init(&back, 4 << 20);
    struct ot_diag d = {0};
    assert_int_equal(decompress_to(out, o.pos, n, 1 << 20, &back, &d), OT_ERR_FORMAT);
    assert_int_equal(back.len, 0);
    ZSTD_freeCCtx(c);
    free(data);
    free(out);
    ot_buf_release(&back);
}

static void test_level_range(void **state)
{
    (void)state;
    struct ot_sink *s = NULL;
    assert_int_equal(ot_sink_zstd_compress_new(0, NULL, &s), OT_ERR_RANGE);
    assert_int_equal(ot_sink_zstd_compress_new(20, NULL, &s), OT_ERR_RANGE);
    assert_null(s);
}

static void test_buf_and_fd_sinks(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 8);
    struct ot_sink *s;
    assert_int_equal(ot_sink_buf_new(&b, &s), OT_OK);
    assert_int_equal(ot_sink_write(s, (const uint8_t *)"12345678", 8, NULL), OT_OK);
    assert_int_equal(ot_sink_write(s, (const uint8_t *)"9", 1, NULL), OT_ERR_LIMIT);
    ot_sink_free(s);
    ot_buf_release(&b);

    char path[] = "/tmp/otter-codec-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ot_sink_fd_new(fd, &s), OT_OK);
    assert_int_equal(ot_sink_write(s, (const uint8_t *)"hello", 5, NULL), OT_OK);
    assert_int_equal(ot_sink_finish(s, NULL), OT_OK);
    ot_sink_free(s);
    char back[8] = {0};
    assert_int_equal(pread(fd, back, sizeof(back), 0), 5);
    assert_string_equal(back, "hello");
    close(fd);
    /* Writing to a closed fd reports an I/O error, not success. */
    assert_int_equal(ot_sink_fd_new(fd, &s), OT_OK);
    assert_int_not_equal(ot_sink_write(s, (const uint8_t *)"x", 1, NULL), OT_OK);
    ot_sink_free(s);
}

/* The write-behind file sink: content intact across many writeback chunks, in odd write sizes, on
 * a file that did not start at offset 0; and the same sink works on a pipe (no writeback there). */
static void test_file_sink_writeback(void **state)
{
    (void)state;
    char path[] = "/tmp/otter-codec-wb-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, "head", 4), 4);
    size_t n = 20 * 1024 * 1024 + 12345;
    uint8_t *data = malloc(n), *back = malloc(n);
    fill(data, n, 42);
    struct ot_sink *s;
    assert_int_equal(ot_sink_file_new(fd, &s), OT_OK);
    assert_int_equal(write_split(s, data, n, 3 << 20, 9, NULL), OT_OK);
    assert_int_equal(ot_sink_finish(s, NULL), OT_OK);
    ot_sink_free(s);
    assert_int_equal(fsync(fd), 0);
    assert_int_equal(pread(fd, back, n, 4), (ssize_t)n);
    assert_memory_equal(back, data, n);
    close(fd);

    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(ot_sink_file_new(p[1], &s), OT_OK);
    assert_int_equal(ot_sink_write(s, data, 4096, NULL), OT_OK);
    ot_sink_free(s);
    assert_int_equal(read(p[0], back, 4096), 4096);
    assert_memory_equal(back, data, 4096);
    close(p[0]);
    close(p[1]);
    free(data);
    free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_sink_matches_oneshot),
        cmocka_unit_test(test_hash_sink_enforces_max),
        cmocka_unit_test(test_zstd_round_trip),
        cmocka_unit_test(test_zstd_window_is_one_mib),
        cmocka_unit_test(test_zstd_empty_input),
        cmocka_unit_test(test_zstd_bomb_stops_at_limit),
        cmocka_unit_test(test_zstd_truncated_and_garbage),
        cmocka_unit_test(test_zstd_refuses_huge_window),
        cmocka_unit_test(test_level_range),
        cmocka_unit_test(test_buf_and_fd_sinks),
        cmocka_unit_test(test_file_sink_writeback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
