/* Streaming stages (codec.h): hashing, counting, zstd, and the chain ends (fd, buffer, nothing). */
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <zstd.h>

#include "otter/codec.h"
#include "otter/file.h"

/* Decoders refuse frames needing a bigger window: 8 MiB is what a small device can spare, and
 * the encoder never produces more (ot_sink_zstd_compress_new caps it). */
#define ZSTD_WINDOW_LOG_MAX 23
/* The window the encoder uses from level 3 up (zstd's own choice there is 2..8 MiB): what a
 * device decoding the payload must hold in memory. 1 MiB costs 0.65 % of size on bench/pack.sh's
 * image (174.1 -> 175.2 MB at level 3) and saves 1 MiB of the agent's peak while installing. */
#define ZSTD_WINDOW_LOG_PACK 20
/* Jobs of the compression worker: small enough to keep pack under 32 MiB RSS (zstd's default at
 * level 3 is 8 MiB and pack then peaks at 55 MiB); with full-window overlap the ratio is kept. */
#define ZSTD_JOB_SIZE (2 * 1024 * 1024)
/* Decoded bytes are handed on in pieces of this size: 8x fewer writes and hash calls than zstd's
 * 128 KiB suggestion (unpack of a 512 MiB image: 1.13 s -> 1.01 s here). */
#define ZSTD_DECODE_CHUNK (1024 * 1024)

/* ---- hash ---- */

struct hash_sink {
    struct ot_sink base;
    struct ot_sink *next;
    struct ot_sha256 sha;
    uint64_t count, max;
    uint8_t digest[OT_SHA256_LEN];
    bool hashing; /* false: a count sink (digest stays zero) */
    char what[96];
};

static enum ot_err hash_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct hash_sink *h = (struct hash_sink *)s;
    if (n > h->max - h->count)
        return ot_diag_set(d, OT_ERR_SIZE, "%s: more than the declared %llu bytes", h->what,
                           (unsigned long long)h->max);
    h->count += n;
    if (h->hashing)
        ot_sha256_update(&h->sha, p, n);
    return h->next ? ot_sink_write(h->next, p, n, d) : OT_OK;
}

static enum ot_err hash_finish(struct ot_sink *s, struct ot_diag *d)
{
    struct hash_sink *h = (struct hash_sink *)s;
    if (h->hashing)
        ot_sha256_final(&h->sha, h->digest);
    return h->next ? ot_sink_finish(h->next, d) : OT_OK;
}

static void hash_free(struct ot_sink *s)
{
    struct hash_sink *h = (struct hash_sink *)s;
    ot_sha256_release(&h->sha);
    free(h);
}

static enum ot_err hash_sink_new(struct ot_sink *next, uint64_t max, const char *what,
                                 bool hashing, struct ot_sink **ret)
{
    struct hash_sink *h = calloc(1, sizeof(*h));
    if (!h)
        return OT_ERR_NOMEM;
    enum ot_err err = hashing ? ot_sha256_init(&h->sha) : OT_OK;
    if (err) {
        free(h);
        return err;
    }
    h->base = (struct ot_sink){hash_write, hash_finish, hash_free};
    h->next = next;
    h->max = max;
    h->hashing = hashing;
    snprintf(h->what, sizeof(h->what), "%s", what ? what : "stream");
    *ret = &h->base;
    return OT_OK;
}

enum ot_err ot_sink_hash_new(struct ot_sink *next, uint64_t max, const char *what,
                             struct ot_sink **ret)
{
    return hash_sink_new(next, max, what, true, ret);
}

enum ot_err ot_sink_count_new(struct ot_sink *next, uint64_t max, const char *what,
                              struct ot_sink **ret)
{
    return hash_sink_new(next, max, what, false, ret);
}

void ot_sink_hash_result(struct ot_sink *s, uint8_t digest[OT_SHA256_LEN], uint64_t *count)
{
    struct hash_sink *h = (struct hash_sink *)s;
    if (digest)
        memcpy(digest, h->digest, OT_SHA256_LEN);
    if (count)
        *count = h->count;
}

/* ---- zstd compression ---- */

struct zc_sink {
    struct ot_sink base;
    struct ot_sink *next;
    ZSTD_CCtx *cctx;
    size_t out_cap;
    uint8_t *out;
};

static enum ot_err zstd_error(struct ot_diag *d, enum ot_err err, const char *what, size_t code)
{
    return ot_diag_set(d, err, "zstd %s: %s", what, ZSTD_getErrorName(code));
}

/* Runs the compressor over in (possibly empty) with the given directive, pushing all output. */
static enum ot_err zc_run(struct zc_sink *z, const uint8_t *p, size_t n, ZSTD_EndDirective mode,
                          struct ot_diag *d)
{
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {z->out, z->out_cap, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, &in, mode);
        if (ZSTD_isError(left))
            return zstd_error(d, OT_ERR_INTERNAL, "compression", left);
        if (out.pos) {
            enum ot_err err = ot_sink_write(z->next, z->out, out.pos, d);
            if (err)
                return err;
        }
        bool done = mode == ZSTD_e_continue ? in.pos == in.size : left == 0;
        if (done)
            return OT_OK;
    }
}

static enum ot_err zc_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    return zc_run((struct zc_sink *)s, p, n, ZSTD_e_continue, d);
}

static enum ot_err zc_finish(struct ot_sink *s, struct ot_diag *d)
{
    struct zc_sink *z = (struct zc_sink *)s;
    enum ot_err err = zc_run(z, NULL, 0, ZSTD_e_end, d);
    return err ? err : ot_sink_finish(z->next, d);
}

static void zc_free(struct ot_sink *s)
{
    struct zc_sink *z = (struct zc_sink *)s;
    ZSTD_freeCCtx(z->cctx);
    free(z->out);
    free(z);
}

enum ot_err ot_sink_zstd_compress_new(int level, struct ot_sink *next, struct ot_sink **ret)
{
    /* Levels 1..19 use windows of at most 2^ZSTD_WINDOW_LOG_MAX bytes (zstd's level table);
     * the "ultra" levels above need up to 128 MiB to decode, which devices cannot spare. */
    if (level < 1 || level > 19)
        return OT_ERR_RANGE;
    struct zc_sink *z = calloc(1, sizeof(*z));
    if (!z)
        return OT_ERR_NOMEM;
    z->base = (struct ot_sink){zc_write, zc_finish, zc_free};
    z->next = next;
    z->out_cap = ZSTD_CStreamOutSize();
    z->out = malloc(z->out_cap);
    z->cctx = ZSTD_createCCtx();
    if (!z->out || !z->cctx) {
        zc_free(&z->base);
        return OT_ERR_NOMEM;
    }
    /* Payload hashes are in the signed manifest: zstd's own checksum would be redundant work. */
    size_t rc = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 0);
    if (!ZSTD_isError(rc) && level >= 3) /* levels 1 and 2 stay below it anyway */
        rc = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_windowLog, ZSTD_WINDOW_LOG_PACK);
    if (ZSTD_isError(rc)) {
        zc_free(&z->base);
        return OT_ERR_INTERNAL;
    }
    /* One worker thread: compression runs beside the caller, which meanwhile reads, hashes and
     * writes (pack of a 512 MiB image: 2.8 s -> 2.25 s on 2 cores, bench/RESULTS.md). Jobs overlap
     * by a whole window, so the ratio matches single-threaded zstd. The output is deterministic
     * for any number of workers >= 1. A libzstd built without threads refuses the parameter:
     * then compression runs inline, same format. */
    if (!ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_nbWorkers, 1)))
    {
        (void)ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_jobSize, ZSTD_JOB_SIZE);
        (void)ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_overlapLog, 9); /* a whole window of context */
    }
    *ret = &z->base;
    return OT_OK;
}

/* ---- zstd decompression ---- */

struct zd_sink {
    struct ot_sink base;
    struct ot_sink *next;
    ZSTD_DCtx *dctx;
    uint64_t produced, max_out;
    size_t last;      /* last ZSTD_decompressStream result: 0 = at a frame boundary */
    bool any_input;
    size_t out_cap;
    uint8_t *out;
};

/* Passes n decoded bytes on, refusing to go past the declared size (decompression bombs). */
static enum ot_err zd_emit(struct zd_sink *z, size_t n, struct ot_diag *d)
{
    if (n > z->max_out - z->produced)
        return ot_diag_set(d, OT_ERR_SIZE,
                           "decompressed data exceeds the declared size of %llu bytes",
                           (unsigned long long)z->max_out);
    z->produced += n;
    return n ? ot_sink_write(z->next, z->out, n, d) : OT_OK;
}

static enum ot_err zd_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct zd_sink *z = (struct zd_sink *)s;
    ZSTD_inBuffer in = {p, n, 0};
    z->any_input |= n > 0;
    while (in.pos < in.size) {
        ZSTD_outBuffer out = {z->out, z->out_cap, 0};
        size_t rc = ZSTD_decompressStream(z->dctx, &out, &in);
        if (ZSTD_isError(rc))
            return zstd_error(d, OT_ERR_FORMAT, "decompression", rc);
        z->last = rc;
        enum ot_err err = zd_emit(z, out.pos, d);
        if (err)
            return err;
    }
    return OT_OK;
}

static enum ot_err zd_finish(struct ot_sink *s, struct ot_diag *d)
{
    struct zd_sink *z = (struct zd_sink *)s;
    /* A frame that is not complete yet may still hold output when the last call filled the out
     * buffer; drain it. (Once a frame is complete, zstd returned 0: calling again would start
     * a new frame.) */
    while (z->last != 0 && z->any_input) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        ZSTD_outBuffer out = {z->out, z->out_cap, 0};
        size_t rc = ZSTD_decompressStream(z->dctx, &out, &in);
        if (ZSTD_isError(rc))
            return zstd_error(d, OT_ERR_FORMAT, "decompression", rc);
        z->last = rc;
        if (out.pos == 0)
            break;
        enum ot_err err = zd_emit(z, out.pos, d);
        if (err)
            return err;
    }
    if (!z->any_input || z->last != 0)
        return ot_diag_set(d, OT_ERR_TRUNCATED, "compressed data ends inside a zstd frame");
    return ot_sink_finish(z->next, d);
}

static void zd_free(struct ot_sink *s)
{
    struct zd_sink *z = (struct zd_sink *)s;
    ZSTD_freeDCtx(z->dctx);
    free(z->out);
    free(z);
}

enum ot_err ot_sink_zstd_decompress_new(uint64_t max_out, size_t out_chunk,
                                        struct ot_sink *next, struct ot_sink **ret)
{
    struct zd_sink *z = calloc(1, sizeof(*z));
    if (!z)
        return OT_ERR_NOMEM;
    z->base = (struct ot_sink){zd_write, zd_finish, zd_free};
    z->next = next;
    z->max_out = max_out;
    z->last = 1;
    z->out_cap = out_chunk ? OT_MAX(out_chunk, (size_t)4096) : ZSTD_DECODE_CHUNK;
    z->out = malloc(z->out_cap);
    z->dctx = ZSTD_createDCtx();
    if (!z->out || !z->dctx ||
        ZSTD_isError(ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
        zd_free(&z->base);
        return OT_ERR_NOMEM;
    }
    *ret = &z->base;
    return OT_OK;
}

/* ---- chain ends ---- */

/* Write-behind for files that will be fsync'ed: every WRITEBACK_CHUNK bytes, start writeback of
 * the new chunk and wait for the one before it. The disk then works while the writer decodes,
 * dirty memory stays bounded (2 chunks), and the final fsync only waits for the tail. */
#define WRITEBACK_CHUNK (8 * 1024 * 1024)

struct fd_sink {
    struct ot_sink base;
    int fd;
    bool writeback;
    uint64_t written, started; /* bytes written, and how far writeback was started */
};

static enum ot_err start_writeback(struct fd_sink *f, struct ot_diag *d)
{
    while (f->writeback && f->written - f->started >= WRITEBACK_CHUNK) {
        int rc = sync_file_range(f->fd, (off64_t)f->started, WRITEBACK_CHUNK,
                                 SYNC_FILE_RANGE_WRITE);
        if (rc == 0 && f->started >= WRITEBACK_CHUNK)
            rc = sync_file_range(f->fd, (off64_t)(f->started - WRITEBACK_CHUNK), WRITEBACK_CHUNK,
                                 SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                     SYNC_FILE_RANGE_WAIT_AFTER);
        if (rc < 0 && (errno == ESPIPE || errno == EINVAL || errno == ENOSYS)) {
            f->writeback = false; /* not a file that supports it: fsync alone will do */
            break;
        }
        if (rc < 0)
            return ot_diag_errno(d, OT_ERR_IO, errno, "write");
        f->started += WRITEBACK_CHUNK;
    }
    return OT_OK;
}

static enum ot_err fd_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct fd_sink *f = (struct fd_sink *)s;
    enum ot_err err = ot_write_all(f->fd, p, n, d);
    if (err)
        return err;
    f->written += n;
    return start_writeback(f, d);
}

static enum ot_err end_finish(struct ot_sink *s, struct ot_diag *d)
{
    (void)s;
    (void)d;
    return OT_OK;
}

static void plain_free(struct ot_sink *s) { free(s); }

static enum ot_err fd_sink_new(int fd, bool writeback, struct ot_sink **ret)
{
    struct fd_sink *f = calloc(1, sizeof(*f));
    if (!f)
        return OT_ERR_NOMEM;
    f->base = (struct ot_sink){fd_write, end_finish, plain_free};
    f->fd = fd;
    off_t pos = writeback ? lseek(fd, 0, SEEK_CUR) : -1;
    struct statfs fs;
    /* A memory file system has no disk to start writing to. */
    f->writeback = pos >= 0 && !(fstatfs(fd, &fs) == 0 && fs.f_type == TMPFS_MAGIC);
    f->written = f->started = pos > 0 ? (uint64_t)pos : 0;
    *ret = &f->base;
    return OT_OK;
}

enum ot_err ot_sink_fd_new(int fd, struct ot_sink **ret)
{
    return fd_sink_new(fd, false, ret);
}

enum ot_err ot_sink_file_new(int fd, struct ot_sink **ret)
{
    return fd_sink_new(fd, true, ret);
}

static enum ot_err null_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    (void)s;
    (void)p;
    (void)n;
    (void)d;
    return OT_OK;
}

enum ot_err ot_sink_null_new(struct ot_sink **ret)
{
    struct ot_sink *s = calloc(1, sizeof(*s));
    if (!s)
        return OT_ERR_NOMEM;
    *s = (struct ot_sink){null_write, end_finish, plain_free};
    *ret = s;
    return OT_OK;
}

struct buf_sink {
    struct ot_sink base;
    struct ot_buf *buf;
};

static enum ot_err buf_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct buf_sink *b = (struct buf_sink *)s;
    enum ot_err err = ot_buf_append(b->buf, p, n);
    if (err)
        return ot_diag_set(d, err, "more than %zu bytes", b->buf->max);
    return OT_OK;
}

enum ot_err ot_sink_buf_new(struct ot_buf *buf, struct ot_sink **ret)
{
    struct buf_sink *b = calloc(1, sizeof(*b));
    if (!b)
        return OT_ERR_NOMEM;
    b->base = (struct ot_sink){buf_write, end_finish, plain_free};
    b->buf = buf;
    *ret = &b->base;
    return OT_OK;
}
