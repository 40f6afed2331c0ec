/* libFuzzer harness for the push-driven tar reader (src/core/tar_read.c).
 *
 * The input is read three ways: whole, split in two at a point derived from the first byte, and
 * (for small inputs) one byte at a time. Each piece is a private heap copy of exactly its size, so
 * ASan catches a reader that reads past a piece or keeps a pointer into it after the feed returns.
 * The callbacks abort() when an invariant of include/otter/tar.h breaks:
 *   - names are non-empty, at most OT_TAR_NAME_MAX bytes, relative, without "", "." or ".."
 *     components;
 *   - entry / data / entry_end come in order, data adds up to exactly the declared size, and every
 *     data pointer lies inside the piece being fed;
 *   - the outcome (error code, entries, data) does not depend on how the input was split;
 *   - errors come with a message and are sticky; OT_OK from finish means the end marker was read. */
#include "otter/tar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SMALL_INPUT 4096

struct run {
    const uint8_t *lo, *hi; /* the piece being fed */
    bool in_entry;
    uint64_t size, got, entries;
    uint64_t digest; /* FNV-1a over every event, to compare runs */
};

static void require(bool ok)
{
    if (!ok)
        abort();
}

static void mix(struct run *r, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        r->digest = (r->digest ^ b[i]) * 0x100000001b3ull;
}

static bool name_ok(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > OT_TAR_NAME_MAX || name[0] == '/')
        return false;
    for (const char *p = name;;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!p[n])
            return true;
        p += n + 1;
    }
}

static enum ot_err on_entry(void *u, const char *name, uint64_t size, struct ot_diag *d)
{
    struct run *r = u;
    require(!r->in_entry);
    require(name_ok(name));
    require(size <= INT64_MAX);
    mix(r, "E", 1);
    mix(r, name, strlen(name) + 1);
    mix(r, &size, sizeof(size));
    r->in_entry = true;
    r->size = size;
    r->got = 0;
    return OT_OK;
}

static enum ot_err on_data(void *u, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct run *r = u;
    require(r->in_entry);
    require(n > 0 && n <= r->size - r->got);
    require(p >= r->lo && n <= (size_t)(r->hi - p));
    mix(r, p, n);
    r->got += n;
    return OT_OK;
}

static enum ot_err on_end(void *u, struct ot_diag *d)
{
    struct run *r = u;
    require(r->in_entry && r->got == r->size);
    mix(r, "Z", 1);
    r->in_entry = false;
    r->entries++;
    return OT_OK;
}

static const struct ot_tar_callbacks callbacks = {on_entry, on_data, on_end};

static enum ot_err feed_copy(struct ot_tar_reader *rd, struct run *r, const uint8_t *p, size_t n,
                             struct ot_diag *d)
{
    uint8_t *copy = malloc(n ? n : 1);
    require(copy != NULL);
    if (n)
        memcpy(copy, p, n);
    r->lo = copy;
    r->hi = copy + n;
    enum ot_err e = ot_tar_reader_feed(rd, copy, n, d);
    free(copy);
    r->lo = r->hi = NULL;
    return e;
}

/* Feeds data in pieces of at most step bytes, the first one split bytes long. */
static enum ot_err run_once(const uint8_t *data, size_t size, size_t split, size_t step,
                            struct run *r)
{
    struct ot_tar_reader *rd = NULL;
    struct ot_diag d = {0};
    require(ot_tar_reader_new(&callbacks, r, &rd) == OT_OK);
    enum ot_err e = feed_copy(rd, r, data, split, &d);
    for (size_t off = split; !e && off < size; off += step)
        e = feed_copy(rd, r, data + off, OT_MIN(step, size - off), &d);
    if (!e) {
        require(ot_tar_reader_offset(rd) == size);
        e = ot_tar_reader_finish(rd, &d);
        require(e != OT_OK || ot_tar_reader_at_end(rd));
    }
    if (e) {
        require(d.err == e && d.msg[0] != '\0');
        struct ot_diag again = {0};
        require(ot_tar_reader_feed(rd, data, size, &again) == e);
        require(strcmp(again.msg, d.msg) == 0);
        require(ot_tar_reader_finish(rd, NULL) == e);
    } else {
        require(!r->in_entry);
    }
    ot_tar_reader_free(rd);
    return e;
}

/* A mutated header almost never keeps a valid checksum, which would leave the field parsers behind
 * it unexplored. The second pass repairs the checksum of every block that carries the ustar magic
 * (headers sit on block boundaries), like a writer would. */
static uint8_t *repair_checksums(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    require(p != NULL);
    if (size)
        memcpy(p, data, size);
    for (size_t off = 0; size - off >= OT_TAR_BLOCK; off += OT_TAR_BLOCK) {
        uint8_t *h = p + off;
        if (memcmp(h + 257, "ustar", 5) != 0)
            continue;
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (size_t i = 0; i < OT_TAR_BLOCK; i++)
            sum += h[i];
        char field[8];
        snprintf(field, sizeof(field), "%06o", sum & 0777777);
        memcpy(h + 148, field, 7); /* six digits and NUL; the eighth byte stays a space */
    }
    return p;
}

static void check_input(const uint8_t *data, size_t size)
{
    struct run whole = {.digest = 0xcbf29ce484222325ull};
    struct run split = whole, bytes = whole;
    enum ot_err e = run_once(data, size, size, 1, &whole);
    size_t at = size ? (size_t)data[0] * size / 255 : 0;
    require(run_once(data, size, at, size ? size : 1, &split) == e);
    require(split.digest == whole.digest && split.entries == whole.entries);
    if (size <= SMALL_INPUT) {
        require(run_once(data, size, 0, 1, &bytes) == e);
        require(bytes.digest == whole.digest && bytes.entries == whole.entries);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_input(data, size);
    uint8_t *fixed = repair_checksums(data, size);
    check_input(fixed, size);
    free(fixed);
    return 0;
}
