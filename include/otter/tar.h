/* The artifact container is a tar stream.
 *
 * Writing goes through libarchive (POSIX ustar, pax records only where ustar cannot express a value,
 * e.g. sizes of 8 GiB and more), so `tar tvf` lists every artifact.
 *
 * Reading is push-driven: bytes are fed as they arrive (from a file, or from libcurl inside the
 * agent's single event loop), and entry data is handed on without copying. libarchive only offers a
 * pull interface, which cannot run inside a non-blocking event loop, so the reader is a small strict
 * parser for exactly what Otter writes (docs/internals/dependencies.md):
 *   - ustar or GNU headers with valid checksums; regular files only;
 *   - pax extended headers ('x') with "path" and "size" records for the next entry ('g' refused);
 *   - names relative, without "." / ".." components, NUL, or empty components, at most 255 bytes;
 *   - after the end-of-archive marker (two zero blocks) only zero padding, at most 64 KiB.
 * Everything else is an error. Fuzzed (fuzz/fuzz_tar.c). */
#ifndef OTTER_TAR_H
#define OTTER_TAR_H

#include "otter/err.h"

#define OT_TAR_BLOCK 512
#define OT_TAR_NAME_MAX 255
#define OT_TAR_PAX_MAX (64 * 1024)       /* bytes of one pax extended header */
#define OT_TAR_TRAILER_MAX (64 * 1024)   /* zero padding accepted after the end marker */

struct ot_tar_callbacks {
    /* A regular file entry starts. name is NUL-terminated and already validated. */
    enum ot_err (*entry)(void *userdata, const char *name, uint64_t size, struct ot_diag *d);
    /* The entry's data, in order, in pieces that add up to size. p may point into the caller's
     * buffer: use it before returning. */
    enum ot_err (*data)(void *userdata, const uint8_t *p, size_t n, struct ot_diag *d);
    /* All of the entry's bytes were delivered. */
    enum ot_err (*entry_end)(void *userdata, struct ot_diag *d);
};

struct ot_tar_reader;

enum ot_err ot_tar_reader_new(const struct ot_tar_callbacks *cb, void *userdata,
                              struct ot_tar_reader **ret) OT_MUST_CHECK;
/* Consumes n bytes; calls the callbacks for what they complete. A callback's error stops the reader
 * and is returned; after any error the reader only returns that error. */
enum ot_err ot_tar_reader_feed(struct ot_tar_reader *r, const uint8_t *p, size_t n,
                               struct ot_diag *d) OT_MUST_CHECK;
/* End of input: OT_OK only after the end-of-archive marker; OT_ERR_TRUNCATED otherwise. */
enum ot_err ot_tar_reader_finish(struct ot_tar_reader *r, struct ot_diag *d) OT_MUST_CHECK;
/* True once the end-of-archive marker was read. */
bool ot_tar_reader_at_end(const struct ot_tar_reader *r);
/* Bytes consumed so far. */
uint64_t ot_tar_reader_offset(const struct ot_tar_reader *r);
void ot_tar_reader_free(struct ot_tar_reader *r);
OT_DEFINE_CLEANUP(struct ot_tar_reader, ot_tar_reader_free)

struct ot_tar_writer;

/* Writes a tar stream to fd (not owned). Every entry gets mode 0644, uid/gid 0, the given mtime. */
enum ot_err ot_tar_writer_new(int fd, int64_t mtime, struct ot_tar_writer **ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Starts a regular file; exactly size bytes must follow before ot_tar_writer_end_entry. */
enum ot_err ot_tar_writer_begin_entry(struct ot_tar_writer *w, const char *name, uint64_t size,
                                      struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_tar_writer_write(struct ot_tar_writer *w, const uint8_t *p, size_t n,
                                struct ot_diag *d) OT_MUST_CHECK;
/* OT_ERR_SIZE when fewer or more bytes than declared were written. */
enum ot_err ot_tar_writer_end_entry(struct ot_tar_writer *w, struct ot_diag *d) OT_MUST_CHECK;
/* Writes the end-of-archive marker and flushes. Does not close or fsync fd. */
enum ot_err ot_tar_writer_close(struct ot_tar_writer *w, struct ot_diag *d) OT_MUST_CHECK;
void ot_tar_writer_free(struct ot_tar_writer *w);
OT_DEFINE_CLEANUP(struct ot_tar_writer, ot_tar_writer_free)

#endif
