/* Streaming byte pipelines. A sink consumes bytes and usually pushes its output into a next sink:
 *
 *   pack:   file -> hash(installed) -> zstd compress -> encrypt -> hash(stored) -> fd
 *   verify: tar entry -> hash(stored) -> decrypt -> zstd decompress -> hash(installed) -> consumer
 *   install: tar entry -> hash(stored) -> decrypt -> zstd decompress -> count(size) -> consumer
 *
 * Stages never hold more than one bounded chunk, so memory stays flat whatever the payload size.
 * A stage does not own its next stage; ot_sink_free frees one stage. finish() flushes this stage
 * and then finishes the next one, so finishing the head finishes the whole chain. */
#ifndef OTTER_CODEC_H
#define OTTER_CODEC_H

#include "otter/buf.h"
#include "otter/hash.h"

struct ot_sink {
    enum ot_err (*write)(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d);
    enum ot_err (*finish)(struct ot_sink *s, struct ot_diag *d);
    void (*free)(struct ot_sink *s);
};

static inline OT_MUST_CHECK enum ot_err ot_sink_write(struct ot_sink *s, const uint8_t *p, size_t n,
                                                      struct ot_diag *d)
{
    return s->write(s, p, n, d);
}
static inline OT_MUST_CHECK enum ot_err ot_sink_finish(struct ot_sink *s, struct ot_diag *d)
{
    return s->finish(s, d);
}
static inline void ot_sink_free(struct ot_sink *s)
{
    if (s)
        s->free(s);
}
OT_DEFINE_CLEANUP(struct ot_sink, ot_sink_free)

/* Counts and hashes what passes through; next may be NULL (a terminal hash). More than max bytes
 * fails with OT_ERR_SIZE ("what" names the stream in messages, e.g. "payload 'rootfs' stored"). */
enum ot_err ot_sink_hash_new(struct ot_sink *next, uint64_t max, const char *what,
                             struct ot_sink **ret) OT_MUST_CHECK;
/* The same stage without the hash: counts what passes through and enforces max, for a stream
 * authenticated elsewhere whose size must still be exact (e.g. decoded bytes whose stored form
 * was hashed). Its digest is all zeros. */
enum ot_err ot_sink_count_new(struct ot_sink *next, uint64_t max, const char *what,
                              struct ot_sink **ret) OT_MUST_CHECK;
/* After finish: the digest and the byte count (hash and count sinks). */
void ot_sink_hash_result(struct ot_sink *s, uint8_t digest[OT_SHA256_LEN], uint64_t *count);

/* zstd compression (level 1..19; the window is capped at 8 MiB so any device can decode). */
enum ot_err ot_sink_zstd_compress_new(int level, struct ot_sink *next, struct ot_sink **ret)
    OT_MUST_CHECK;
/* zstd decompression. Output beyond max_out fails with OT_ERR_SIZE at once (decompression bombs
 * stop at the limit); frames needing a window above 8 MiB are refused; trailing garbage and a
 * truncated frame are errors. out_chunk: bytes of output handed on per step (0: 1 MiB, the fastest
 * here; a device short of memory passes less, e.g. 128 KiB). */
enum ot_err ot_sink_zstd_decompress_new(uint64_t max_out, size_t out_chunk, struct ot_sink *next,
                                        struct ot_sink **ret) OT_MUST_CHECK;

/* Writes everything to fd (not owned). */
enum ot_err ot_sink_fd_new(int fd, struct ot_sink **ret) OT_MUST_CHECK;
/* The same, for a file the caller will fsync: writeback is started behind the writer (every
 * 8 MiB, waiting for the chunk before), so the disk works while the pipeline decodes and the
 * final fsync is short. On fds that do not support it (pipes), the same as ot_sink_fd_new. */
enum ot_err ot_sink_file_new(int fd, struct ot_sink **ret) OT_MUST_CHECK;
/* Discards everything (end of a verify-only chain). */
enum ot_err ot_sink_null_new(struct ot_sink **ret) OT_MUST_CHECK;
/* Appends to a bounded buffer (not owned); exceeding its max fails with OT_ERR_LIMIT. */
enum ot_err ot_sink_buf_new(struct ot_buf *buf, struct ot_sink **ret) OT_MUST_CHECK;

#endif
