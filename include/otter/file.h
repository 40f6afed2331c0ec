/* Files that must survive a crash: temp file in the same directory, write, fsync, rename over the
 * target, fsync the directory. A crash at any instant leaves either the old or the new content.
 * Every fd opened here is O_CLOEXEC. */
#ifndef OTTER_FILE_H
#define OTTER_FILE_H

#include <sys/types.h>

#include "otter/buf.h"

/* A file being written atomically. Between open and commit the content lives in an unnamed
 * O_TMPFILE in the target's directory, so abort, a crash, SIGKILL or a power cut leaves nothing
 * behind and the target untouched. Where the file system has no O_TMPFILE, a named temp file
 * "<dir>/.<name>.tmp-XXXXXX" is used instead (removed on abort, left over only by a crash). */
struct ot_atomic_file {
    int fd;         /* write here; -1 when closed */
    char *path;     /* final path, owned */
    char *tmp_path; /* named temp file (fallback only), owned; NULL while unnamed */
};

/* Opens the temp file. The caller must end with ot_atomic_file_commit or ot_atomic_file_abort. */
enum ot_err ot_atomic_file_open(struct ot_atomic_file *f, const char *path, mode_t mode,
                                struct ot_diag *d) OT_MUST_CHECK;
/* fsync, give the content its name (replacing what was there), fsync the directory. On failure
 * the temp file is removed. */
enum ot_err ot_atomic_file_commit(struct ot_atomic_file *f, struct ot_diag *d) OT_MUST_CHECK;
/* Like commit, but only if nothing exists at path: OT_ERR_EXISTS otherwise (checked and created
 * in one atomic step with link(2), so a file that appeared meanwhile is never replaced). */
enum ot_err ot_atomic_file_commit_new(struct ot_atomic_file *f, struct ot_diag *d) OT_MUST_CHECK;
/* Removes the temp file; safe to call after commit or twice. */
void ot_atomic_file_abort(struct ot_atomic_file *f);

/* Whole-file atomic replace. */
enum ot_err ot_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                                 struct ot_diag *d) OT_MUST_CHECK;
/* Reads a whole file into out (whose max bounds it: OT_ERR_LIMIT if larger). */
enum ot_err ot_file_read(const char *path, struct ot_buf *out, struct ot_diag *d) OT_MUST_CHECK;

/* write(2) until done, retrying EINTR and short writes. */
enum ot_err ot_write_all(int fd, const void *p, size_t n, struct ot_diag *d) OT_MUST_CHECK;
/* read(2) up to n bytes, retrying EINTR; *ret_n < n only at end of file. */
enum ot_err ot_read_full(int fd, void *p, size_t n, size_t *ret_n, struct ot_diag *d) OT_MUST_CHECK;
/* fsync(2) of the directory holding path (or of path itself if it is a directory). */
enum ot_err ot_fsync_parent(const char *path, struct ot_diag *d) OT_MUST_CHECK;

#endif
