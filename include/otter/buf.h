/* Bounded growable byte buffer. Every buffer that untrusted input flows into has a hard maximum
 * fixed at creation (curl's dynbuf): appending past it fails with OT_ERR_LIMIT and changes nothing.
 * The data is always followed by a NUL byte (not counted in len), so text can be used as a C string. */
#ifndef OTTER_BUF_H
#define OTTER_BUF_H

#include "otter/err.h"

struct ot_buf {
    uint8_t *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max;    /* hard limit on len */
};

void ot_buf_init(struct ot_buf *b, size_t max);
/* Frees the storage; the buffer can be reused after ot_buf_init. */
void ot_buf_release(struct ot_buf *b);
/* Empties the buffer, keeping its storage. */
void ot_buf_reset(struct ot_buf *b);
enum ot_err ot_buf_reserve(struct ot_buf *b, size_t extra) OT_MUST_CHECK;
enum ot_err ot_buf_append(struct ot_buf *b, const void *p, size_t n) OT_MUST_CHECK;
enum ot_err ot_buf_append_str(struct ot_buf *b, const char *s) OT_MUST_CHECK;
enum ot_err ot_buf_printf(struct ot_buf *b, const char *fmt, ...) OT_PRINTF(2, 3) OT_MUST_CHECK;
/* The contents as a NUL-terminated string ("" when empty); valid until the next change. */
const char *ot_buf_str(const struct ot_buf *b);
/* Hands the storage to the caller (free() it) and leaves the buffer empty. Never NULL when ok. */
enum ot_err ot_buf_steal(struct ot_buf *b, uint8_t **ret_data, size_t *ret_len) OT_MUST_CHECK;

#endif
