/* Tests of the tar container: the libarchive-based writer, the push-driven strict reader, and both
 * against the real thing (libarchive's own ustar/pax/gnutar writers and Debian's GNU tar). */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "otter/buf.h"
#include "otter/tar.h"

#define MAX_ENTRIES 64
#define DATA_MAX (8u * 1024 * 1024)
#define GIB (1024ull * 1024 * 1024)

/* ---- recording callbacks ---------------------------------------------------------------------- */

struct rec_entry {
    char name[OT_TAR_NAME_MAX + 1];
    uint64_t size;
    uint64_t got;
    bool ended;
    struct ot_buf data;
};

struct rec {
    struct rec_entry e[MAX_ENTRIES];
    size_t n;
    bool in_entry;
    /* The buffer being fed, to prove the data callback points into it. */
    const uint8_t *lo, *hi;
    size_t pieces, pieces_outside;
    const uint8_t *first_piece;
    enum ot_err fail_entry; /* returned by the entry callback when set */
    enum ot_err fail_data;  /* returned by the data callback, without a message */
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
}

static void rec_release(struct rec *r)
{
    for (size_t i = 0; i < r->n; i++)
        ot_buf_release(&r->e[i].data);
    r->n = 0;
}

static enum ot_err cb_entry(void *u, const char *name, uint64_t size, struct ot_diag *d)
{
    struct rec *r = u;
    assert_false(r->in_entry);
    assert_true(r->n < MAX_ENTRIES);
    if (r->fail_entry)
        return ot_diag_set(d, r->fail_entry, "test: entry '%s' refused by the callback", name);
    struct rec_entry *e = &r->e[r->n++];
    assert_true(strlen(name) <= OT_TAR_NAME_MAX);
    memcpy(e->name, name, strlen(name) + 1);
    e->size = size;
    e->got = 0;
    e->ended = false;
    ot_buf_init(&e->data, DATA_MAX);
    r->in_entry = true;
    return OT_OK;
}

static enum ot_err cb_data(void *u, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct rec *r = u;
    assert_true(r->in_entry);
    assert_true(n > 0);
    if (r->fail_data)
        return r->fail_data;
    struct rec_entry *e = &r->e[r->n - 1];
    e->got += n;
    assert_true(e->got <= e->size);
    if (r->pieces++ == 0)
        r->first_piece = p;
    if (r->lo && (p < r->lo || p + n > r->hi))
        r->pieces_outside++;
    if (e->data.len + n <= DATA_MAX)
        assert_int_equal(ot_buf_append(&e->data, p, n), OT_OK);
    return OT_OK;
}

static enum ot_err cb_end(void *u, struct ot_diag *d)
{
    struct rec *r = u;
    assert_true(r->in_entry);
    struct rec_entry *e = &r->e[r->n - 1];
    assert_int_equal(e->got, e->size);
    e->ended = true;
    r->in_entry = false;
    return OT_OK;
}

static const struct ot_tar_callbacks rec_cb = {cb_entry, cb_data, cb_end};

/* ---- feeding ---------------------------------------------------------------------------------- */

enum feed_mode { FEED_WHOLE, FEED_BYTES, FEED_RANDOM };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64: deterministic, so a failure replays with the same splits. */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t random_piece(size_t left)
{
    static const size_t sizes[] = {1, 2, 7, 100, 511, 512, 513, 1024, 4096, 10000, 65536};
    size_t k = sizes[rng() % OT_ARRAY_SIZE(sizes)];
    if (rng() % 4 == 0)
        k = (size_t)(rng() % 3000) + 1;
    return OT_MIN(k, left);
}

/* Feeds buf in the given way and finishes; returns the first error. Each piece is a private heap
 * copy in the byte and random modes, so ASan catches a reader that keeps a pointer too long. */
static enum ot_err feed_archive(const uint8_t *buf, size_t len, enum feed_mode mode, struct rec *r,
                             struct ot_diag *d)
{
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&rec_cb, r, &rd), OT_OK);
    enum ot_err e = OT_OK;
    if (mode == FEED_WHOLE) {
        r->lo = buf;
        r->hi = buf + len;
        e = ot_tar_reader_feed(rd, buf, len, d);
    } else {
        for (size_t off = 0; off < len && !e;) {
            size_t k = mode == FEED_BYTES ? 1 : random_piece(len - off);
            uint8_t *piece = malloc(k);
            assert_non_null(piece);
            memcpy(piece, buf + off, k);
            r->lo = piece;
            r->hi = piece + k;
            e = ot_tar_reader_feed(rd, piece, k, d);
            free(piece);
            off += k;
        }
        r->lo = r->hi = NULL;
    }
    if (!e) {
        assert_int_equal(ot_tar_reader_offset(rd), len);
        e = ot_tar_reader_finish(rd, d);
        assert_int_equal(ot_tar_reader_at_end(rd), e == OT_OK);
    }
    return e;
}

/* Every archive is read whole, byte by byte and in random pieces: all three must agree. */
static void expect_error(const uint8_t *buf, size_t len, enum ot_err want, const char *msg_part)
{
    for (int mode = FEED_WHOLE; mode <= FEED_RANDOM; mode++) {
        struct rec r;
        rec_init(&r);
        struct ot_diag d = {0};
        enum ot_err e = feed_archive(buf, len, (enum feed_mode)mode, &r, &d);
        if (e != want || (msg_part && !strstr(d.msg, msg_part)))
            fail_msg("mode %d: got %s '%s', want %s '%s'", mode, ot_err_name(e), d.msg,
                     ot_err_name(want), msg_part ? msg_part : "");
        assert_int_equal(d.err, want);
        rec_release(&r);
    }
}

static void read_ok(const uint8_t *buf, size_t len, enum feed_mode mode, struct rec *r)
{
    struct ot_diag d = {0};
    rec_init(r);
    enum ot_err e = feed_archive(buf, len, mode, r, &d);
    if (e)
        fail_msg("read failed: %s: %s", ot_err_name(e), d.msg);
    assert_false(r->in_entry);
}

/* ---- content and archive builders ------------------------------------------------------------- */

struct spec {
    const char *name;
    size_t size;
};

static uint8_t pattern(size_t i, const char *name)
{
    return (uint8_t)(i * 131 + (i >> 9) + (uint8_t)name[0] + strlen(name));
}

static uint8_t *make_content(const char *name, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    assert_non_null(p);
    for (size_t i = 0; i < size; i++)
        p[i] = pattern(i, name);
    return p;
}

static void check_entries(const struct rec *r, const struct spec *s, size_t n)
{
    assert_int_equal(r->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(r->e[i].name, s[i].name);
        assert_int_equal(r->e[i].size, s[i].size);
        assert_true(r->e[i].ended);
        assert_int_equal(r->e[i].data.len, s[i].size);
        _cleanup_free_ uint8_t *want = make_content(s[i].name, s[i].size);
        assert_memory_equal(r->e[i].data.data ? r->e[i].data.data : want, want, s[i].size);
    }
}

static uint8_t *read_fd_all(int fd, size_t *ret_len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    assert_true(end >= 0);
    uint8_t *p = malloc((size_t)end + 1);
    assert_non_null(p);
    assert_int_equal(pread(fd, p, (size_t)end, 0), end);
    *ret_len = (size_t)end;
    return p;
}

/* Writes the specs with ot_tar_writer into fd, data in uneven chunks. */
static void write_specs(int fd, const struct spec *s, size_t n, int64_t mtime)
{
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fd, mtime, &w, &d), OT_OK);
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ uint8_t *c = make_content(s[i].name, s[i].size);
        if (ot_tar_writer_begin_entry(w, s[i].name, s[i].size, &d))
            fail_msg("begin_entry '%s': %s", s[i].name, d.msg);
        for (size_t off = 0; off < s[i].size;) {
            size_t k = (size_t)(rng() % 70000) + 1; /* not inside OT_MIN: evaluated twice */
            k = OT_MIN(k, s[i].size - off);
            assert_int_equal(ot_tar_writer_write(w, c + off, k, &d), OT_OK);
            off += k;
        }
        assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    }
    assert_int_equal(ot_tar_writer_close(w, &d), OT_OK);
}

static uint8_t *writer_archive(const struct spec *s, size_t n, size_t *ret_len)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    write_specs(fileno(f), s, n, 1700000000);
    uint8_t *p = read_fd_all(fileno(f), ret_len);
    fclose(f);
    return p;
}

/* Hand-made headers, for what no tool writes. */
static void put_octal(uint8_t *f, size_t width, uint64_t v)
{
    f[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0; v >>= 3)
        f[i] = (uint8_t)('0' + (v & 7));
}

static void set_checksum(uint8_t *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < OT_TAR_BLOCK; i++)
        sum += h[i];
    put_octal(h + 148, 7, sum); /* six digits, NUL, and the space left in place */
}

static void make_header(uint8_t *h, const char *name, uint64_t size, char type)
{
    memset(h, 0, OT_TAR_BLOCK);
    size_t nl = strlen(name);
    assert_true(nl <= 100);
    memcpy(h, name, nl);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, 1700000000);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar\0" "00", 8);
    set_checksum(h);
}

struct tb {
    uint8_t p[256 * 1024];
    size_t len;
};

static void tb_add(struct tb *t, const void *p, size_t n)
{
    assert_true(n <= sizeof(t->p) - t->len);
    memcpy(t->p + t->len, p, n);
    t->len += n;
}

static void tb_zero(struct tb *t, size_t n)
{
    assert_true(n <= sizeof(t->p) - t->len);
    memset(t->p + t->len, 0, n);
    t->len += n;
}

static void tb_pad(struct tb *t)
{
    tb_zero(t, (OT_TAR_BLOCK - t->len % OT_TAR_BLOCK) % OT_TAR_BLOCK);
}

static void tb_header(struct tb *t, const char *name, uint64_t size, char type)
{
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, name, size, type);
    tb_add(t, h, sizeof(h));
}

static void tb_file(struct tb *t, const char *name, const char *content)
{
    tb_header(t, name, strlen(content), '0');
    tb_add(t, content, strlen(content));
    tb_pad(t);
}

static void tb_end(struct tb *t)
{
    tb_zero(t, 2 * OT_TAR_BLOCK);
}

/* A pax extended header holding raw record bytes. */
static void tb_pax_raw(struct tb *t, const void *records, size_t n, char type)
{
    tb_header(t, "PaxHeader/x", n, type);
    tb_add(t, records, n);
    tb_pad(t);
}

/* One well-formed record "<len> key=value\n"; the length counts its own digits. */
static size_t pax_rec(char *out, size_t cap, const char *key, const char *value, size_t vlen)
{
    size_t body = strlen(key) + vlen + 3, total = body + 1;
    while (total != body + (size_t)snprintf(NULL, 0, "%zu", total))
        total = body + (size_t)snprintf(NULL, 0, "%zu", total);
    assert_true(total < cap);
    int k = snprintf(out, cap, "%zu %s=", total, key);
    memcpy(out + k, value, vlen);
    out[total - 1] = '\n';
    return total;
}

static void tb_pax(struct tb *t, const char *key, const char *value)
{
    char rec[1024];
    size_t n = pax_rec(rec, sizeof(rec), key, value, strlen(value));
    tb_pax_raw(t, rec, n, 'x');
}

/* ---- round trips ------------------------------------------------------------------------------ */

static char long_split[130], long_pax[160], max_name[OT_TAR_NAME_MAX + 1];

static const struct spec round_specs[] = {
    {"manifest.json", 321},
    {"payload/rootfs.img", 300000},
    {"empty", 0},
    {"exact-block", 1024},
    {long_split, 777},
    {long_pax, 5},
    {max_name, 1},
};

static int setup_names(void **state)
{
    /* 60 + '/' + 60: ustar stores it as prefix and name. */
    memset(long_split, 'a', 121);
    long_split[60] = '/';
    long_split[121] = '\0';
    /* The last component is 150 bytes: only a pax 'path' record can hold it. */
    memcpy(long_pax, "dir/", 4);
    memset(long_pax + 4, 'c', 150);
    long_pax[154] = '\0';
    /* Exactly OT_TAR_NAME_MAX bytes in components of 99 bytes. */
    memset(max_name, 'm', OT_TAR_NAME_MAX);
    max_name[99] = max_name[199] = '/';
    max_name[OT_TAR_NAME_MAX] = '\0';
    return 0;
}

static void roundtrip(enum feed_mode mode)
{
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(round_specs, OT_ARRAY_SIZE(round_specs), &len);
    assert_int_equal(len % 10240, 0); /* libarchive's default record size, as tar's */
    struct rec r;
    read_ok(buf, len, mode, &r);
    check_entries(&r, round_specs, OT_ARRAY_SIZE(round_specs));
    rec_release(&r);
}

static void test_roundtrip_whole(void **state)
{
    roundtrip(FEED_WHOLE);
}

static void test_roundtrip_bytes(void **state)
{
    roundtrip(FEED_BYTES);
}

static void test_roundtrip_random(void **state)
{
    rng_state = 42;
    for (int i = 0; i < 50; i++)
        roundtrip(FEED_RANDOM);
}

static void test_zero_copy(void **state)
{
    static const struct spec s[] = {{"big.img", 1024 * 1024}};
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(s, 1, &len);
    struct rec r;
    read_ok(buf, len, FEED_WHOLE, &r);
    check_entries(&r, s, 1);
    /* One piece for the whole entry, and it is the caller's own buffer right after the header. */
    assert_int_equal(r.pieces, 1);
    assert_int_equal(r.pieces_outside, 0);
    assert_ptr_equal(r.first_piece, buf + OT_TAR_BLOCK);
    rec_release(&r);

    /* Split feeds: every piece still points into the piece that was fed. */
    rng_state = 7;
    read_ok(buf, len, FEED_RANDOM, &r);
    assert_int_equal(r.pieces_outside, 0);
    rec_release(&r);
}

static void test_empty_archive(void **state)
{
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(NULL, 0, &len);
    assert_true(len >= 2 * OT_TAR_BLOCK);
    struct rec r;
    read_ok(buf, len, FEED_BYTES, &r);
    assert_int_equal(r.n, 0);
    /* The bare end marker, without record padding. */
    static const uint8_t zeros[2 * OT_TAR_BLOCK];
    read_ok(zeros, sizeof(zeros), FEED_WHOLE, &r);
    assert_int_equal(r.n, 0);
}

static void test_offset_and_at_end(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a", "hello");
    tb_end(t);
    struct rec r;
    rec_init(&r);
    struct ot_diag d = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&rec_cb, &r, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, t->p, 1000, &d), OT_OK);
    assert_int_equal(ot_tar_reader_offset(rd), 1000);
    assert_false(ot_tar_reader_at_end(rd));
    assert_int_equal(ot_tar_reader_feed(rd, t->p + 1000, t->len - 1001, &d), OT_OK);
    assert_false(ot_tar_reader_at_end(rd));
    assert_int_equal(ot_tar_reader_feed(rd, NULL, 0, &d), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, t->p + t->len - 1, 1, &d), OT_OK);
    assert_true(ot_tar_reader_at_end(rd));
    assert_int_equal(ot_tar_reader_offset(rd), t->len);
    assert_int_equal(ot_tar_reader_finish(rd, &d), OT_OK);
    assert_int_equal(r.n, 1);
    assert_memory_equal(r.e[0].data.data, "hello", 5);
    rec_release(&r);
    free(t);
}

static void test_callbacks_optional(void **state)
{
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(round_specs, 3, &len);
    static const struct ot_tar_callbacks none = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&none, NULL, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, buf, len, NULL), OT_OK);
    assert_int_equal(ot_tar_reader_finish(rd, NULL), OT_OK);
    assert_int_equal(ot_tar_reader_new(NULL, NULL, &rd), OT_ERR_INVALID);
    assert_int_equal(ot_tar_reader_feed(NULL, buf, 1, NULL), OT_ERR_INVALID);
    assert_int_equal(ot_tar_reader_feed(rd, NULL, 1, NULL), OT_ERR_INVALID);
    assert_int_equal(ot_tar_reader_finish(NULL, NULL), OT_ERR_INVALID);
    assert_false(ot_tar_reader_at_end(NULL));
    assert_int_equal(ot_tar_reader_offset(NULL), 0);
    ot_tar_reader_free(NULL);
}

static void test_callback_error_stops(void **state)
{
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(round_specs, 2, &len);
    struct rec r;
    rec_init(&r);
    r.fail_entry = OT_ERR_INCOMPATIBLE;
    struct ot_diag d = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&rec_cb, &r, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, buf, len, &d), OT_ERR_INCOMPATIBLE);
    assert_non_null(strstr(d.msg, "refused by the callback"));
    assert_int_equal(ot_tar_reader_offset(rd), OT_TAR_BLOCK);
    /* Sticky: the same error and message, whatever comes next. */
    struct ot_diag d2 = {0};
    assert_int_equal(ot_tar_reader_feed(rd, buf, len, &d2), OT_ERR_INCOMPATIBLE);
    assert_string_equal(d2.msg, d.msg);
    assert_int_equal(ot_tar_reader_finish(rd, &d2), OT_ERR_INCOMPATIBLE);
    assert_string_equal(d2.msg, d.msg);
    assert_int_equal(r.n, 0);
}

static void test_callback_error_without_message(void **state)
{
    /* A callback that returns an error without detail still yields a message saying where. */
    size_t len;
    _cleanup_free_ uint8_t *buf = writer_archive(round_specs, 1, &len);
    struct rec r;
    rec_init(&r);
    r.fail_data = OT_ERR_HASH;
    struct ot_diag d = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&rec_cb, &r, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, buf, 600, &d), OT_ERR_HASH);
    assert_string_equal(d.msg, "tar: stopped at offset 600: content does not match its SHA-256");
    assert_int_equal(ot_tar_reader_finish(rd, &d), OT_ERR_HASH);
    rec_release(&r);
}

static void test_sticky_error(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a", "x");
    t->p[0] = 'b'; /* checksum now wrong */
    struct ot_diag d = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    struct rec r;
    rec_init(&r);
    assert_int_equal(ot_tar_reader_new(&rec_cb, &r, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, t->p, 600, &d), OT_ERR_FORMAT);
    char first[OT_DIAG_MSG_MAX];
    memcpy(first, d.msg, sizeof(first));
    static const uint8_t zeros[1024];
    ot_diag_clear(&d);
    assert_int_equal(ot_tar_reader_feed(rd, zeros, sizeof(zeros), &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, first);
    assert_int_equal(ot_tar_reader_finish(rd, NULL), OT_ERR_FORMAT);
    assert_int_equal(ot_tar_reader_feed(rd, zeros, sizeof(zeros), NULL), OT_ERR_FORMAT);
    free(t);
}

/* ---- libarchive's own writers ----------------------------------------------------------------- */

static size_t libarchive_archive(int (*set_format)(struct archive *), const struct spec *s,
                                 size_t n, bool extras, uint8_t *out, size_t cap)
{
    struct archive *a = archive_write_new();
    assert_non_null(a);
    assert_int_equal(set_format(a), ARCHIVE_OK);
    size_t used = 0;
    assert_int_equal(archive_write_open_memory(a, out, cap, &used), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, s[i].name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0600);
        archive_entry_set_size(e, (la_int64_t)s[i].size);
        archive_entry_set_uid(e, 1000);
        archive_entry_set_uname(e, "builder");
        archive_entry_set_mtime(e, 1700000000, 123456789);
        if (extras) { /* makes the pax writer emit extended headers with keys we ignore */
            archive_entry_set_atime(e, 1700000001, 5);
            archive_entry_set_ctime(e, 1700000002, 6);
            archive_entry_xattr_add_entry(e, "user.bin", "a\0b\n=c", 6);
        }
        int rc = archive_write_header(a, e);
        if (rc != ARCHIVE_OK)
            fail_msg("libarchive header: %s", archive_error_string(a));
        _cleanup_free_ uint8_t *c = make_content(s[i].name, s[i].size);
        assert_int_equal(archive_write_data(a, c, s[i].size), (la_ssize_t)s[i].size);
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return used;
}

static const struct spec la_specs[] = {
    {"a.txt", 11},
    {"dir/b.bin", 5000},
    {"dir/sub/zero", 0},
};

static void libarchive_format(int (*set_format)(struct archive *), bool extras)
{
    const size_t cap = 1024 * 1024;
    _cleanup_free_ uint8_t *buf = malloc(cap);
    size_t len = libarchive_archive(set_format, la_specs, OT_ARRAY_SIZE(la_specs), extras, buf, cap);
    for (int mode = FEED_WHOLE; mode <= FEED_RANDOM; mode++) {
        struct rec r;
        read_ok(buf, len, (enum feed_mode)mode, &r);
        check_entries(&r, la_specs, OT_ARRAY_SIZE(la_specs));
        rec_release(&r);
    }
}

static void test_libarchive_ustar(void **state)
{
    libarchive_format(archive_write_set_format_ustar, false);
}

static void test_libarchive_pax(void **state)
{
    libarchive_format(archive_write_set_format_pax, true);
    /* A long name through libarchive's full pax writer. */
    const struct spec s[] = {{long_pax, 3}, {long_split, 4}};
    const size_t cap = 256 * 1024;
    _cleanup_free_ uint8_t *buf = malloc(cap);
    size_t len = libarchive_archive(archive_write_set_format_pax, s, 2, true, buf, cap);
    struct rec r;
    read_ok(buf, len, FEED_BYTES, &r);
    check_entries(&r, s, 2);
    rec_release(&r);
}

static void test_libarchive_pax_restricted(void **state)
{
    libarchive_format(archive_write_set_format_pax_restricted, false);
}

static void test_libarchive_gnutar(void **state)
{
    libarchive_format(archive_write_set_format_gnutar, false);
}

static void test_libarchive_gnutar_longname(void **state)
{
    /* GNU long names are 'L' pseudo-entries: refused. */
    const struct spec s[] = {{long_pax, 3}};
    const size_t cap = 64 * 1024;
    _cleanup_free_ uint8_t *buf = malloc(cap);
    size_t len = libarchive_archive(archive_write_set_format_gnutar, s, 1, false, buf, cap);
    expect_error(buf, len, OT_ERR_FORMAT, "unsupported type 'GNU long name'");
}

static void test_libarchive_v7_refused(void **state)
{
    const size_t cap = 64 * 1024;
    _cleanup_free_ uint8_t *buf = malloc(cap);
    size_t len = libarchive_archive(archive_write_set_format_v7tar, la_specs, 1, false, buf, cap);
    expect_error(buf, len, OT_ERR_FORMAT, "neither ustar nor GNU");
}

/* ---- sizes ------------------------------------------------------------------------------------ */

static void test_pax_size_over_8gib(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "size", "10000000000"); /* more than the 8 GiB - 1 of an 11-digit octal field */
    tb_header(t, "huge.img", 0, '0');
    tb_zero(t, 4096); /* the first bytes of the data */
    struct rec r;
    rec_init(&r);
    struct ot_diag d = {0};
    _cleanup_(ot_tar_reader_freep) struct ot_tar_reader *rd = NULL;
    assert_int_equal(ot_tar_reader_new(&rec_cb, &r, &rd), OT_OK);
    assert_int_equal(ot_tar_reader_feed(rd, t->p, t->len, &d), OT_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.e[0].name, "huge.img");
    assert_int_equal(r.e[0].size, 10000000000ull);
    assert_int_equal(r.e[0].got, 4096);
    assert_int_equal(ot_tar_reader_finish(rd, &d), OT_ERR_TRUNCATED);
    if (!strstr(d.msg, "in entry 'huge.img' at offset 5632"))
        fail_msg("%s", d.msg);
    assert_non_null(strstr(d.msg, "4096 of 10000000000 bytes"));
    rec_release(&r);
    free(t);
}

static void test_pax_size_overrides_header(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "size", "3");
    tb_header(t, "f", 77777, '0'); /* the pax record wins */
    tb_add(t, "abc", 3);
    tb_pad(t);
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_RANDOM, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.e[0].size, 3);
    rec_release(&r);
    free(t);
}

static void header_with_size_field(struct tb *t, const uint8_t field[12], const char *content,
                                   size_t n)
{
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "s", 0, '0');
    memcpy(h + 124, field, 12);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_add(t, content, n);
    tb_pad(t);
    tb_end(t);
}

static void test_size_field_variants(void **state)
{
    static const struct {
        uint8_t field[12];
        size_t size;
    } ok[] = {
        {"00000000005 ", 5},                 /* space terminated */
        {"     5\0\0\0\0\0\0", 5},           /* leading spaces, NUL padding */
        {"000000000005", 5},                 /* all digits, no terminator */
        {"5\0 \0 \0 \0 \0 ", 5},             /* one digit, mixed terminators */
        {{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, 5}, /* GNU base-256 */
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(ok); i++) {
        struct tb *t = calloc(1, sizeof(*t));
        header_with_size_field(t, ok[i].field, "hello", 5);
        struct rec r;
        read_ok(t->p, t->len, FEED_BYTES, &r);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.e[0].size, ok[i].size);
        rec_release(&r);
        free(t);
    }
}

static void test_size_field_invalid(void **state)
{
    static const struct {
        uint8_t field[12];
        const char *msg;
    } bad[] = {
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb}, "negative"},
        {{0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, "negative"},
        {{0x80, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, "out of range"}, /* 2^63 */
        {{0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "out of range"},
        {"0000000000x\0", "not an octal number"},
        {"00000000008\0", "not an octal number"},
        {"\0\0\0\0\0\0\0\0\0\0\0\0", "not an octal number"},
        {"           \0", "not an octal number"},
        {"-0000000005\0", "not an octal number"},
        {"5 5\0\0\0\0\0\0\0\0\0", "not an octal number"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct tb *t = calloc(1, sizeof(*t));
        header_with_size_field(t, bad[i].field, "hello", 5);
        expect_error(t->p, t->len, OT_ERR_FORMAT, bad[i].msg);
        free(t);
    }
    /* The size field of a pax extended header goes through the same parser. */
    struct tb *t = calloc(1, sizeof(*t));
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "PaxHeader/x", 0, 'x');
    memcpy(h + 124, bad[0].field, 12);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "invalid size field of pax extended header (negative)");
    free(t);
}

/* ---- header refusals -------------------------------------------------------------------------- */

static void test_bad_checksum(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a.txt", "hello");
    tb_end(t);
    t->p[200] ^= 1; /* linkname: not looked at, but checksummed */
    expect_error(t->p, t->len, OT_ERR_FORMAT, "header at offset 0: checksum mismatch");
    t->p[200] ^= 1;
    memcpy(t->p + 148, "abcdef\0 ", 8);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "checksum mismatch");
    /* Random bytes are not an archive either. */
    rng_state = 3;
    for (size_t i = 0; i < 1024; i++)
        t->p[i] = (uint8_t)rng();
    expect_error(t->p, 1024, OT_ERR_FORMAT, "checksum mismatch");
    free(t);
}

static void test_signed_checksum(void **state)
{
    /* Historic tars summed signed chars: with bytes >= 0x80 in the header the sums differ. */
    struct tb *t = calloc(1, sizeof(*t));
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "a", 2, '0');
    memcpy(h + 265, "\xe9\xe9\xe9", 3); /* uname: not used by the reader */
    memset(h + 148, ' ', 8);
    int sum = 0;
    for (size_t i = 0; i < OT_TAR_BLOCK; i++)
        sum += (int8_t)h[i];
    put_octal(h + 148, 7, (uint64_t)sum);
    tb_add(t, h, sizeof(h));
    tb_add(t, "hi", 2);
    tb_pad(t);
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_WHOLE, &r);
    assert_int_equal(r.n, 1);
    rec_release(&r);
    free(t);
}

static void test_bad_magic(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "a", 0, '0');
    memcpy(h + 257, "ustar\0" "01", 8);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "neither ustar nor GNU");
    free(t);
}

static void test_refused_types(void **state)
{
    static const struct {
        char type;
        const char *msg;
    } types[] = {
        {'1', "tar: entry 'node' (header at offset 0): unsupported type 'hard link'"},
        {'2', "unsupported type 'symlink'"},
        {'3', "unsupported type 'character device'"},
        {'4', "unsupported type 'block device'"},
        {'5', "unsupported type 'directory'"},
        {'6', "unsupported type 'FIFO'"},
        {'7', "unsupported type 'contiguous file'"},
        {'g', "unsupported type 'pax global header'"},
        {'K', "unsupported type 'GNU long link name'"},
        {'L', "unsupported type 'GNU long name'"},
        {'S', "unsupported type 'GNU sparse file'"},
        {'V', "unsupported type 'volume label'"},
        {'D', "unsupported type 'GNU dump directory'"},
        {'M', "unsupported type 'GNU multi-volume continuation'"},
        {'X', "unsupported type 'Solaris extended header'"},
        {'Z', "unknown type 'Z'"},
        {'\x01', "unknown type 0x01"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(types); i++) {
        struct tb *t = calloc(1, sizeof(*t));
        tb_header(t, "node", 0, types[i].type);
        tb_end(t);
        expect_error(t->p, t->len, OT_ERR_FORMAT, types[i].msg);
        free(t);
    }
}

static void test_global_pax_refused(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    char rec[64];
    size_t n = pax_rec(rec, sizeof(rec), "comment", "hi", 2);
    tb_pax_raw(t, rec, n, 'g');
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "unsupported type 'pax global header'");
    free(t);
}

static void test_type_refused_after_pax(void **state)
{
    /* The message names the pax path, which is what a tar tool would show. */
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "path", "real/name");
    tb_header(t, "trunc", 0, '2');
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "entry 'real/name'");
    free(t);
}

/* ---- names ------------------------------------------------------------------------------------ */

static void expect_bad_name(const char *name, const char *why)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, name, "data");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, why);
    free(t);
    /* The same name through a pax record. */
    t = calloc(1, sizeof(*t));
    tb_pax(t, "path", name);
    tb_file(t, "placeholder", "data");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, why);
    free(t);
}

static void test_name_dotdot(void **state)
{
    expect_bad_name("..", "invalid name: '.' or '..' component");
    expect_bad_name("../etc/passwd", "'.' or '..' component");
    expect_bad_name("a/../../b", "'.' or '..' component");
    expect_bad_name("a/..", "'.' or '..' component");
}

static void test_name_absolute(void **state)
{
    expect_bad_name("/etc/passwd", "invalid name: absolute name");
    expect_bad_name("/", "absolute name");
}

static void test_name_dot(void **state)
{
    expect_bad_name("./x", "'.' or '..' component");
    expect_bad_name("a/./b", "'.' or '..' component");
    expect_bad_name(".", "'.' or '..' component");
}

static void test_name_empty_component(void **state)
{
    expect_bad_name("a//b", "empty path component");
    expect_bad_name("dir/", "empty path component");
    /* Dot files are fine: only the components "." and ".." are special. */
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, ".hidden/..x/...", "ok");
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_WHOLE, &r);
    assert_string_equal(r.e[0].name, ".hidden/..x/...");
    rec_release(&r);
    free(t);
}

static void test_name_empty(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "", "data");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "invalid name: empty name");
    free(t);
    t = calloc(1, sizeof(*t));
    tb_pax(t, "path", "");
    tb_file(t, "placeholder", "data");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "empty name");
    free(t);
}

static void test_name_bytes_after_nul(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "good", 0, '0');
    memcpy(h + 5, "../evil", 7); /* "good\0../evil": readers disagree on such names */
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "after the NUL terminator of the name field");
    free(t);

    t = calloc(1, sizeof(*t));
    make_header(h, "good", 0, '0');
    memcpy(h + 345, "pre\0x", 5);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "prefix field");
    free(t);
}

static void test_name_prefix(void **state)
{
    /* ustar prefix + "/" + name; GNU headers have no prefix (the bytes mean something else). */
    struct tb *t = calloc(1, sizeof(*t));
    uint8_t h[OT_TAR_BLOCK];
    make_header(h, "file", 1, '0');
    memcpy(h + 345, "some/dir", 8);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_add(t, "1", 1);
    tb_pad(t);
    make_header(h, "gnu", 1, '0');
    memcpy(h + 257, "ustar  \0", 8);
    memcpy(h + 345, "00000000000", 11); /* atime in a GNU header */
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_add(t, "2", 1);
    tb_pad(t);
    make_header(h, "x", 0, '0');
    memset(h, 'n', 100); /* a name filling the field, no terminator */
    memset(h + 345, 'p', 154);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_BYTES, &r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.e[0].name, "some/dir/file");
    assert_string_equal(r.e[1].name, "gnu");
    assert_int_equal(strlen(r.e[2].name), 255);
    rec_release(&r);
    free(t);

    /* 155 + 1 + 100 = 256 bytes: one more than allowed. */
    t = calloc(1, sizeof(*t));
    make_header(h, "x", 0, '0');
    memset(h, 'n', 100);
    memset(h + 345, 'p', 155);
    set_checksum(h);
    tb_add(t, h, sizeof(h));
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "name longer than 255 bytes");
    free(t);
}

static void test_name_quoted_in_messages(void **state)
{
    /* Control bytes in a name never reach the message raw. */
    struct tb *t = calloc(1, sizeof(*t));
    tb_header(t, "evil\n\x1b[31m", 0, '2');
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "entry 'evil\\x0a\\x1b[31m'");
    free(t);
}

/* ---- pax records ------------------------------------------------------------------------------ */

static void test_pax_path(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "path", long_pax);
    tb_file(t, "truncated-name", "content");
    tb_file(t, "next", "pax applies to one entry only");
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_RANDOM, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.e[0].name, long_pax);
    assert_string_equal(r.e[1].name, "next");
    rec_release(&r);
    free(t);
}

static void test_pax_path_nul(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    char rec[64];
    size_t n = pax_rec(rec, sizeof(rec), "path", "a\0b", 3);
    tb_pax_raw(t, rec, n, 'x');
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "NUL byte in 'path'");
    free(t);
}

static void test_pax_path_too_long(void **state)
{
    char name[300];
    memset(name, 'a', 256);
    name[100] = name[200] = '/';
    name[256] = '\0';
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "path", name);
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "'path' longer than 255 bytes");
    free(t);
}

static void test_pax_ignored_keys(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    char recs[2048];
    size_t n = 0;
    n += pax_rec(recs + n, sizeof(recs) - n, "mtime", "1700000000.123456789", 20);
    n += pax_rec(recs + n, sizeof(recs) - n, "atime", "1700000000.5", 12);
    n += pax_rec(recs + n, sizeof(recs) - n, "ctime", "-1.5", 4);
    n += pax_rec(recs + n, sizeof(recs) - n, "SCHILY.xattr.user.x", "\0\n=\xff", 4);
    n += pax_rec(recs + n, sizeof(recs) - n, "LIBARCHIVE.creationtime", "1", 1);
    n += pax_rec(recs + n, sizeof(recs) - n, "uname", "", 0);
    n += pax_rec(recs + n, sizeof(recs) - n, "path", "p/q", 3);
    n += pax_rec(recs + n, sizeof(recs) - n, "comment", "a=b=c", 5);
    tb_pax_raw(t, recs, n, 'x');
    tb_file(t, "short", "data");
    /* An empty pax header is valid too. */
    tb_pax_raw(t, "", 0, 'x');
    tb_file(t, "after-empty", "d");
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_BYTES, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.e[0].name, "p/q");
    assert_string_equal(r.e[1].name, "after-empty");
    rec_release(&r);
    free(t);
}

static void test_pax_malformed(void **state)
{
    static const struct {
        const char *rec;
        size_t len;
        const char *msg;
    } bad[] = {
        {"12 path=abcd\n", 13, "record length does not match"},  /* really 13 bytes */
        {"11 path=abc\n", 12, "record length does not match"},   /* claims one too few */
        {"30 path=abc\n", 12, "runs past the header"},
        {"12 pathabcd\n", 12, "without '='"},
        {"9 =value\n", 9, "empty key"},
        {"x2 path=abc\n", 12, "does not start with a decimal length"},
        {" 12 path=ab\n", 12, "does not start with a decimal length"},
        {"012 path=ab\n", 12, "leading zero"},
        {"12path=abcd\n", 12, "no space after the record length"},
        {"13 path=abcdX", 13, "record length does not match"},
        {"3 \n", 3, "record length does not match"},
        {"12 path=abc\n\n", 13, "does not start with a decimal length"},
        {"11 size=1x\n", 11, "'size' is not a decimal number"},
        {"12 size=-10\n", 12, "'size' is not a decimal number"},
        {"8 size=\n", 8, "empty 'size'"},
        {"28 size=9223372036854775808\n", 28, "'size' out of range"},
        {"99999999999999999999999 a=b\n", 28, "runs past the header"},
        {"10 path=a\n10 path=b\n", 20, "duplicate 'path'"},
        {"9 size=1\n9 size=1\n", 18, "duplicate 'size'"},
        {"24 GNU.sparse.size=1000\n", 24, "sparse files are not supported"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct tb *t = calloc(1, sizeof(*t));
        tb_pax_raw(t, bad[i].rec, bad[i].len, 'x');
        tb_file(t, "a", "x");
        tb_end(t);
        expect_error(t->p, t->len, OT_ERR_FORMAT, bad[i].msg);
        free(t);
    }
}

static void test_pax_size_max(void **state)
{
    /* A pax header of exactly OT_TAR_PAX_MAX bytes is fine, one byte more is not. */
    struct tb *t = calloc(1, sizeof(*t));
    char *recs = malloc(OT_TAR_PAX_MAX + 2);
    const size_t vlen = OT_TAR_PAX_MAX - 27; /* "65536 SCHILY.xattr.user.a=" + value + "\n" */
    char *value = malloc(vlen);
    memset(value, 'v', vlen);
    size_t n = pax_rec(recs, OT_TAR_PAX_MAX + 1, "SCHILY.xattr.user.a", value, vlen);
    assert_int_equal(n, OT_TAR_PAX_MAX);
    tb_pax_raw(t, recs, n, 'x');
    tb_file(t, "a", "x");
    tb_end(t);
    struct rec r;
    read_ok(t->p, t->len, FEED_RANDOM, &r);
    assert_int_equal(r.n, 1);
    rec_release(&r);
    free(t);

    t = calloc(1, sizeof(*t));
    n = pax_rec(recs, OT_TAR_PAX_MAX + 2, "SCHILY.xattr.user.ab", value, vlen);
    assert_int_equal(n, OT_TAR_PAX_MAX + 1);
    tb_pax_raw(t, recs, n, 'x');
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_LIMIT, "more than the limit of 65536");
    free(t);
    free(value);
    free(recs);
}

static void test_pax_without_entry(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_pax(t, "path", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "pax extended header not followed by an entry");
    free(t);
    t = calloc(1, sizeof(*t));
    tb_pax(t, "path", "x");
    tb_pax(t, "path", "y");
    tb_file(t, "a", "x");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "follows another one");
    free(t);
    /* Input ending inside the records. */
    t = calloc(1, sizeof(*t));
    tb_pax(t, "path", "x");
    expect_error(t->p, OT_TAR_BLOCK + 5, OT_ERR_TRUNCATED, "in a pax extended header");
    free(t);
}

/* ---- truncation and the end of the archive ---------------------------------------------------- */

static void test_truncated(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "payload/x", "0123456789");
    tb_end(t);
    expect_error(t->p, 0, OT_ERR_TRUNCATED, "before the end-of-archive marker at offset 0");
    expect_error(t->p, 100, OT_ERR_TRUNCATED, "in a header block at offset 100");
    expect_error(t->p, 512, OT_ERR_TRUNCATED,
                 "archive truncated in entry 'payload/x' at offset 512 (0 of 10 bytes)");
    expect_error(t->p, 517, OT_ERR_TRUNCATED, "in entry 'payload/x' at offset 517 (5 of 10");
    expect_error(t->p, 600, OT_ERR_TRUNCATED, "in the padding to a block boundary at offset 600");
    expect_error(t->p, 1024, OT_ERR_TRUNCATED, "before the end-of-archive marker at offset 1024");
    expect_error(t->p, 1536, OT_ERR_TRUNCATED, "in the end-of-archive marker at offset 1536");
    expect_error(t->p, 2047, OT_ERR_TRUNCATED, "in the end-of-archive marker at offset 2047");
    struct rec r;
    read_ok(t->p, 2048, FEED_WHOLE, &r);
    rec_release(&r);
    free(t);
}

static void test_lone_zero_block(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a", "x");
    tb_zero(t, OT_TAR_BLOCK);
    tb_file(t, "b", "y");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "lone zero block at offset 1024");
    free(t);
}

static void test_garbage_after_end(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a", "x");
    tb_end(t);
    tb_zero(t, 5000);
    tb_add(t, "\x01", 1);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "data after end of archive at offset 7048");
    free(t);
    /* A whole second archive appended (as `cat a.tar b.tar` would do). */
    t = calloc(1, sizeof(*t));
    tb_file(t, "a", "x");
    tb_end(t);
    tb_file(t, "smuggled", "y");
    tb_end(t);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "data after end of archive");
    free(t);
}

static void test_trailer_limit(void **state)
{
    struct tb *t = calloc(1, sizeof(*t));
    tb_file(t, "a", "x");
    tb_end(t);
    tb_zero(t, OT_TAR_TRAILER_MAX);
    struct rec r;
    read_ok(t->p, t->len, FEED_RANDOM, &r);
    rec_release(&r);
    tb_zero(t, 1);
    expect_error(t->p, t->len, OT_ERR_FORMAT, "more than 65536 bytes of padding");
    free(t);
}

/* ---- writer ----------------------------------------------------------------------------------- */

static void test_writer_too_many_bytes(void **state)
{
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", 3, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"ab", 2, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"cd", 2, &d), OT_ERR_SIZE);
    assert_non_null(strstr(d.msg, "entry 'a': more than its declared 3 bytes"));
    /* The writer is unusable afterwards, and no end marker is written for it. */
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_ERR_SIZE);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_SIZE);
    ot_tar_writer_free(TAKE_PTR(w));
    size_t len;
    _cleanup_free_ uint8_t *buf = read_fd_all(fileno(f), &len);
    fclose(f);
    expect_error(buf, len, OT_ERR_TRUNCATED, NULL);
}

static void test_writer_too_few_bytes(void **state)
{
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "dir/a", 10, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"abc", 3, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_ERR_SIZE);
    assert_non_null(strstr(d.msg, "entry 'dir/a': 3 bytes written, 10 declared"));
    assert_int_equal(ot_tar_writer_begin_entry(w, "b", 0, &d), OT_ERR_SIZE);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_SIZE);
    ot_tar_writer_free(TAKE_PTR(w));
    size_t len;
    _cleanup_free_ uint8_t *buf = read_fd_all(fileno(f), &len);
    fclose(f);
    expect_error(buf, len, OT_ERR_TRUNCATED, NULL);
}

static void test_writer_usage(void **state)
{
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(-1, 0, &w, &d), OT_ERR_INVALID);
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"x", 1, &d), OT_ERR_INVALID);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_ERR_INVALID);
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", 1, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "b", 1, &d), OT_ERR_INVALID);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "close before entry 'a' ended"));
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", (uint64_t)INT64_MAX + 1, &d),
                     OT_ERR_INVALID);
    /* Usage errors do not break the stream. */
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"x", 1, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "big", (uint64_t)INT64_MAX + 1, &d),
                     OT_ERR_RANGE);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_INVALID);
    ot_tar_writer_free(TAKE_PTR(w));
    ot_tar_writer_free(NULL);
    size_t len;
    _cleanup_free_ uint8_t *buf = read_fd_all(fileno(f), &len);
    fclose(f);
    struct rec r;
    read_ok(buf, len, FEED_WHOLE, &r);
    assert_int_equal(r.n, 1);
    rec_release(&r);
}

static void test_writer_free_without_close(void **state)
{
    /* An abandoned writer must not complete the stream: nothing buffered reaches the file. */
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", 1, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"x", 1, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    ot_tar_writer_free(w);
    assert_int_equal(lseek(fileno(f), 0, SEEK_END), 0);
    fclose(f);
}

static void test_writer_invalid_names(void **state)
{
    /* Non-ASCII names are refused rather than converted through the process locale. */
    static const char *bad[] = {"", "/abs", "../x", "a/../b", "./x", "a/.", "a//b", "dir/", ".",
                                "caf\xc3\xa9", "tab\tname", "new\nline", "del\x7f"};
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        ot_diag_clear(&d);
        assert_int_equal(ot_tar_writer_begin_entry(w, bad[i], 0, &d), OT_ERR_INVALID);
        assert_non_null(strstr(d.msg, "invalid name"));
    }
    char too_long[OT_TAR_NAME_MAX + 2];
    memset(too_long, 'x', sizeof(too_long) - 1);
    too_long[100] = '/';
    too_long[sizeof(too_long) - 1] = '\0';
    assert_int_equal(ot_tar_writer_begin_entry(w, too_long, 0, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "longer than 255"));
    assert_int_equal(ot_tar_writer_begin_entry(w, max_name, 0, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, NULL, 0, &d), OT_ERR_INVALID);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_OK);
    fclose(f);
}

static void test_writer_nospc(void **state)
{
    /* /dev/full: every write fails with ENOSPC, which must come back as OT_ERR_NOSPC. */
    _cleanup_close_ int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        skip();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fd, 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", 3, &d), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)"abc", 3, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_NOSPC);
    assert_int_equal(d.sys_errno, ENOSPC);
    assert_non_null(strstr(d.msg, "tar: close:"));
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_NOSPC);
}

static void test_writer_bad_fd(void **state)
{
    _cleanup_close_ int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fd, 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "a", 0, &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_close(w, &d), OT_ERR_IO);
    assert_int_equal(d.sys_errno, EBADF);
}

static void test_writer_huge_entry_header(void **state)
{
    /* A 9 GiB entry needs a pax 'size' record. Only its start is written; the reader sees the
     * declared size and then reports the truncation. */
    FILE *f = tmpfile();
    struct ot_diag d = {0};
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    assert_int_equal(ot_tar_writer_new(fileno(f), 0, &w, &d), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "huge.img", 9 * GIB, &d), OT_OK);
    static uint8_t chunk[32768];
    assert_int_equal(ot_tar_writer_write(w, chunk, sizeof(chunk), &d), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, &d), OT_ERR_SIZE);
    ot_tar_writer_free(TAKE_PTR(w));
    size_t len;
    _cleanup_free_ uint8_t *buf = read_fd_all(fileno(f), &len);
    fclose(f);
    assert_true(len >= 10240);
    struct rec r;
    rec_init(&r);
    assert_int_equal(feed_archive(buf, len, FEED_WHOLE, &r, &d), OT_ERR_TRUNCATED);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.e[0].name, "huge.img");
    assert_int_equal(r.e[0].size, 9 * GIB);
    assert_non_null(strstr(d.msg, "in entry 'huge.img'"));
    rec_release(&r);
}

/* ---- GNU tar ---------------------------------------------------------------------------------- */

static bool have_gnu_tar(void)
{
    return system("tar --version 2>/dev/null | grep -q 'GNU tar'") == 0;
}

static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/otter-tar-XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

static void remove_tmpdir(char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

/* Writes root/name with the content pattern of name, creating directories. */
static void write_file(const char *root, const char *name, size_t size)
{
    char path[4200], cmd[4300];
    int k = snprintf(path, sizeof(path), "%s/%s", root, name);
    assert_true(k > 0 && (size_t)k < sizeof(path));
    *strrchr(path, '/') = '\0';
    k = snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    assert_true(k > 0 && (size_t)k < sizeof(cmd));
    assert_int_equal(system(cmd), 0);
    path[strlen(path)] = '/';
    _cleanup_free_ uint8_t *c = make_content(name, size);
    _cleanup_fclose_ FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(c, 1, size, f), size);
}

static void test_gnu_tar_lists_writer_output(void **state)
{
    if (!have_gnu_tar())
        skip();
    char *dir = make_tmpdir();
    char path[4200];
    snprintf(path, sizeof(path), "%s/a.tar", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    write_specs(fd, round_specs, OT_ARRAY_SIZE(round_specs), 1700000000);
    close(fd);

    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "TZ=UTC tar --numeric-owner --full-time -tvf '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[1024];
    size_t n = 0;
    while (fgets(line, sizeof(line), p)) {
        char perm[16], owner[32], date[16], tm[16];
        uint64_t size;
        int off = 0;
        line[strcspn(line, "\n")] = '\0';
        assert_int_equal(sscanf(line, "%15s %31s %" SCNu64 " %15s %15s %n", perm, owner, &size,
                                date, tm, &off),
                         5);
        assert_true(n < OT_ARRAY_SIZE(round_specs));
        assert_string_equal(perm, "-rw-r--r--");
        assert_string_equal(owner, "0/0");
        assert_string_equal(date, "2023-11-14");
        assert_string_equal(tm, "22:13:20");
        assert_int_equal(size, round_specs[n].size);
        assert_string_equal(line + off, round_specs[n].name);
        n++;
    }
    assert_int_equal(pclose(p), 0);
    assert_int_equal(n, OT_ARRAY_SIZE(round_specs));

    /* And the content extracts byte for byte. */
    snprintf(cmd, sizeof(cmd), "tar -xOf '%s' payload/rootfs.img", path);
    p = popen(cmd, "r");
    assert_non_null(p);
    size_t want = round_specs[1].size;
    _cleanup_free_ uint8_t *got = malloc(want + 1);
    _cleanup_free_ uint8_t *exp = make_content(round_specs[1].name, want);
    assert_int_equal(fread(got, 1, want + 1, p), want);
    assert_int_equal(pclose(p), 0);
    assert_memory_equal(got, exp, want);
    remove_tmpdir(dir);
}

/* GNU tar archives the files it is given (no directory entries), in the given format. */
static void gnu_tar_format(const char *format, const struct spec *s, size_t n)
{
    if (!have_gnu_tar())
        skip();
    char *dir = make_tmpdir();
    char in[4200], cmd[8192];
    snprintf(in, sizeof(in), "%s/in", dir);
    int k = snprintf(cmd, sizeof(cmd), "cd '%s' && tar --format=%s -cf ../out.tar", in, format);
    for (size_t i = 0; i < n; i++) {
        write_file(in, s[i].name, s[i].size);
        k += snprintf(cmd + k, sizeof(cmd) - (size_t)k, " '%s'", s[i].name);
    }
    assert_true((size_t)k < sizeof(cmd));
    assert_int_equal(system(cmd), 0);
    char path[4200];
    snprintf(path, sizeof(path), "%s/out.tar", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    size_t len;
    _cleanup_free_ uint8_t *buf = read_fd_all(fd, &len);
    close(fd);
    for (int mode = FEED_WHOLE; mode <= FEED_RANDOM; mode++) {
        struct rec r;
        read_ok(buf, len, (enum feed_mode)mode, &r);
        check_entries(&r, s, n);
        rec_release(&r);
    }
    remove_tmpdir(dir);
}

static const struct spec gnu_specs[] = {
    {"hello.txt", 5},
    {"dir/data.bin", 100000},
    {"empty", 0},
    {long_split, 600},
};

static void test_gnu_tar_ustar(void **state)
{
    gnu_tar_format("ustar", gnu_specs, OT_ARRAY_SIZE(gnu_specs));
}

static void test_gnu_tar_pax(void **state)
{
    /* GNU tar's pax headers carry atime/ctime/mtime with fractions; plus a name only pax holds. */
    const struct spec s[] = {gnu_specs[0], gnu_specs[1], gnu_specs[2], gnu_specs[3], {long_pax, 9}};
    gnu_tar_format("pax", s, OT_ARRAY_SIZE(s));
}

static void test_gnu_tar_gnu(void **state)
{
    /* Without long_split: GNU headers have no prefix, so it would need an 'L' entry. */
    gnu_tar_format("gnu", gnu_specs, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_whole),
        cmocka_unit_test(test_roundtrip_bytes),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_empty_archive),
        cmocka_unit_test(test_offset_and_at_end),
        cmocka_unit_test(test_callbacks_optional),
        cmocka_unit_test(test_callback_error_stops),
        cmocka_unit_test(test_callback_error_without_message),
        cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_libarchive_ustar),
        cmocka_unit_test(test_libarchive_pax),
        cmocka_unit_test(test_libarchive_pax_restricted),
        cmocka_unit_test(test_libarchive_gnutar),
        cmocka_unit_test(test_libarchive_gnutar_longname),
        cmocka_unit_test(test_libarchive_v7_refused),
        cmocka_unit_test(test_pax_size_over_8gib),
        cmocka_unit_test(test_pax_size_overrides_header),
        cmocka_unit_test(test_size_field_variants),
        cmocka_unit_test(test_size_field_invalid),
        cmocka_unit_test(test_bad_checksum),
        cmocka_unit_test(test_signed_checksum),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_refused_types),
        cmocka_unit_test(test_global_pax_refused),
        cmocka_unit_test(test_type_refused_after_pax),
        cmocka_unit_test(test_name_dotdot),
        cmocka_unit_test(test_name_absolute),
        cmocka_unit_test(test_name_dot),
        cmocka_unit_test(test_name_empty_component),
        cmocka_unit_test(test_name_empty),
        cmocka_unit_test(test_name_bytes_after_nul),
        cmocka_unit_test(test_name_prefix),
        cmocka_unit_test(test_name_quoted_in_messages),
        cmocka_unit_test(test_pax_path),
        cmocka_unit_test(test_pax_path_nul),
        cmocka_unit_test(test_pax_path_too_long),
        cmocka_unit_test(test_pax_ignored_keys),
        cmocka_unit_test(test_pax_malformed),
        cmocka_unit_test(test_pax_size_max),
        cmocka_unit_test(test_pax_without_entry),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_lone_zero_block),
        cmocka_unit_test(test_garbage_after_end),
        cmocka_unit_test(test_trailer_limit),
        cmocka_unit_test(test_writer_too_many_bytes),
        cmocka_unit_test(test_writer_too_few_bytes),
        cmocka_unit_test(test_writer_usage),
        cmocka_unit_test(test_writer_free_without_close),
        cmocka_unit_test(test_writer_invalid_names),
        cmocka_unit_test(test_writer_nospc),
        cmocka_unit_test(test_writer_bad_fd),
        cmocka_unit_test(test_writer_huge_entry_header),
        cmocka_unit_test(test_gnu_tar_lists_writer_output),
        cmocka_unit_test(test_gnu_tar_ustar),
        cmocka_unit_test(test_gnu_tar_pax),
        cmocka_unit_test(test_gnu_tar_gnu),
    };
    return cmocka_run_group_tests(tests, setup_names, NULL);
}
