#include <stdarg.h>

#include "otter/buf.h"

void ot_buf_init(struct ot_buf *b, size_t max)
{
    *b = (struct ot_buf){.max = max};
}

void ot_buf_release(struct ot_buf *b)
{
    free(b->data);
    *b = (struct ot_buf){.max = b->max};
}

void ot_buf_reset(struct ot_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

enum ot_err ot_buf_reserve(struct ot_buf *b, size_t extra)
{
    if (extra > b->max - b->len) /* len <= max always holds */
        return OT_ERR_LIMIT;
    size_t need = b->len + extra + 1; /* +1: the trailing NUL */
    if (need <= b->cap)
        return OT_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (b->max < SIZE_MAX && cap > b->max + 1) /* max + 1 would wrap for SIZE_MAX */
        cap = b->max + 1;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return OT_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return OT_OK;
}

enum ot_err ot_buf_append(struct ot_buf *b, const void *p, size_t n)
{
    enum ot_err err = ot_buf_reserve(b, n);
    if (err)
        return err;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return OT_OK;
}

enum ot_err ot_buf_append_str(struct ot_buf *b, const char *s)
{
    return ot_buf_append(b, s, strlen(s));
}

enum ot_err ot_buf_printf(struct ot_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return OT_ERR_INVALID;
    enum ot_err err = ot_buf_reserve(b, (size_t)n);
    if (err)
        return err;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return OT_OK;
}

const char *ot_buf_str(const struct ot_buf *b)
{
    return b->data ? (const char *)b->data : "";
}

enum ot_err ot_buf_steal(struct ot_buf *b, uint8_t **ret_data, size_t *ret_len)
{
    if (!b->data) {
        enum ot_err err = ot_buf_reserve(b, 0);
        if (err)
            return err;
        b->data[0] = '\0';
    }
    *ret_data = b->data;
    *ret_len = b->len;
    *b = (struct ot_buf){.max = b->max};
    return OT_OK;
}
