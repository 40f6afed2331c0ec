/* Common macros for every layer: scope-exit cleanup, ownership transfer, attributes.
 *
 * Usage (systemd style):
 *     _cleanup_free_ char *s = strdup(x);
 *     _cleanup_close_ int fd = open(...);
 *     return TAKE_PTR(s);      // hand ownership to the caller, cleanup sees NULL
 */
#ifndef OTTER_MACRO_H
#define OTTER_MACRO_H

/* The system headers that banned.h would otherwise break are pulled in first. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OT_MUST_CHECK __attribute__((warn_unused_result))
#define OT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define OT_UNUSED __attribute__((unused))

#define OT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define OT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define OT_MAX(a, b) ((a) > (b) ? (a) : (b))

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void ot__freep(void *p) { free(*(void **)p); }
static inline void ot__closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
static inline void ot__fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}
/* strdup of s, or NULL for NULL; a failed copy sets *ok to false (and returns NULL), so that a
 * series of copies is checked once. */
static inline char *ot_strdup_opt(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *r = strdup(s);
    if (!r)
        *ok = false;
    return r;
}

#define _cleanup_free_ _cleanup_(ot__freep)
#define _cleanup_close_ _cleanup_(ot__closep)
#define _cleanup_fclose_ _cleanup_(ot__fclosep)

/* Take ownership of a pointer or fd out of a _cleanup_ variable. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) ot__tmp_ = (p);                                                              \
        (p) = NULL;                                                                                \
        ot__tmp_;                                                                                  \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int ot__tmpfd_ = (fd);                                                                     \
        (fd) = -1;                                                                                 \
        ot__tmpfd_;                                                                                \
    })

/* Defines a cleanup function name##p for a type whose destructor is name(T *) and accepts NULL. */
#define OT_DEFINE_CLEANUP(type, func)                                                              \
    static inline void func##p(type **p) { func(*p); }

#include "otter/banned.h"

#endif
