/* The blob store: artifact files under DATA_DIR/blobs/, named by the lower-case hex SHA-256 of
 * their content. A blob is written into an unnamed temp file in that directory (O_TMPFILE: a
 * kill or power cut mid-upload leaves nothing), hashed while it is written, then fsync'd and
 * linked under its name, and the directory fsync'd: a name only ever points to a complete,
 * durable file. The database row that refers to a blob is written after the blob, so a row never
 * points to a missing file (a crash in between leaves an unreferenced blob, removed by the next
 * upload of the same content or by hand). */
#ifndef OTTERD_BLOB_H
#define OTTERD_BLOB_H

#include "otter/err.h"
#include "otter/hash.h"

struct srv_blob_writer;

enum ot_err srv_blob_writer_new(const char *data_dir, struct srv_blob_writer **ret,
                                struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_blob_writer_write(struct srv_blob_writer *w, const uint8_t *p, size_t n,
                                  struct ot_diag *d) OT_MUST_CHECK;
uint64_t srv_blob_writer_size(const struct srv_blob_writer *w);
/* The content's SHA-256 (lower-case hex); ends writing. */
void srv_blob_writer_finish(struct srv_blob_writer *w, char hex[OT_SHA256_HEX_LEN]);
/* Makes the blob durable under its name; content that is already stored is fine (OT_OK). */
enum ot_err srv_blob_writer_commit(struct srv_blob_writer *w, struct ot_diag *d) OT_MUST_CHECK;
/* Drops an uncommitted blob; safe on NULL. */
void srv_blob_writer_free(struct srv_blob_writer *w);

/* Opens a stored blob for reading (O_CLOEXEC); OT_ERR_NOENT when missing. */
enum ot_err srv_blob_open(const char *data_dir, const char *hex, int *ret_fd, uint64_t *ret_size,
                          struct ot_diag *d) OT_MUST_CHECK;
/* Removes a blob (missing is fine). */
enum ot_err srv_blob_remove(const char *data_dir, const char *hex, struct ot_diag *d)
    OT_MUST_CHECK;

#endif
