/* One error enum for the whole code base (curl's CURLcode pattern).
 *
 * Every fallible function returns enum ot_err and is marked OT_MUST_CHECK. Detail for a human goes
 * into an optional, caller-owned struct ot_diag: pass NULL when you do not need it. Functions never
 * log an error themselves; the program logs once where it handles it. */
#ifndef OTTER_ERR_H
#define OTTER_ERR_H

#include "otter/macro.h"

enum ot_err {
    OT_OK = 0,
    OT_ERR_NOMEM,        /* out of memory */
    OT_ERR_INVALID,      /* invalid argument or usage */
    OT_ERR_IO,           /* I/O error (see diag errno) */
    OT_ERR_NOSPC,        /* no space left on device */
    OT_ERR_NOENT,        /* file or object not found */
    OT_ERR_EXISTS,       /* already exists */
    OT_ERR_PERM,         /* permission denied */
    OT_ERR_RANGE,        /* number out of range */
    OT_ERR_LIMIT,        /* a size or count limit was exceeded */
    OT_ERR_FORMAT,       /* malformed input (JSON, manifest, archive, key file) */
    OT_ERR_TRUNCATED,    /* input ended early */
    OT_ERR_UNSUPPORTED,  /* valid but not supported (format version, algorithm) */
    OT_ERR_CONFIG,       /* configuration error */
    OT_ERR_CRYPTO,       /* a crypto library call failed */
    OT_ERR_SIGNATURE,    /* signatures missing, invalid, or below the threshold */
    OT_ERR_UNTRUSTED,    /* signed only by keys that are not trusted */
    OT_ERR_HASH,         /* content does not match its SHA-256 */
    OT_ERR_SIZE,         /* content does not match its declared size */
    OT_ERR_DECRYPT,      /* decryption failed: wrong key or tampered data */
    OT_ERR_NOKEY,        /* no key that can decrypt this content */
    OT_ERR_INCOMPATIBLE, /* device type or dependencies do not match */
    OT_ERR_ROLLBACK,     /* security version lower than allowed */
    OT_ERR_INTERNAL,     /* a bug */
    OT_ERR__MAX
};

#define OT_DIAG_MSG_MAX 512

/* Optional detail about the last error, owned by the caller. */
struct ot_diag {
    enum ot_err err;
    int sys_errno;                 /* errno at the failure, 0 if none */
    char msg[OT_DIAG_MSG_MAX];     /* human-readable context, never secrets */
};

/* Short, stable description of an error code ("content does not match its SHA-256"). */
const char *ot_strerror(enum ot_err err);
/* Stable machine name ("hash"), used in JSON output and logs. */
const char *ot_err_name(enum ot_err err);

/* Records err and a formatted message in d (d may be NULL). Returns err, so callers can write
 *     return ot_diag_set(d, OT_ERR_HASH, "payload '%s': SHA-256 mismatch", name);
 * A message already set is kept when the new one is empty, so inner detail survives. */
enum ot_err ot_diag_set(struct ot_diag *d, enum ot_err err, const char *fmt, ...) OT_PRINTF(3, 4);
/* Same, with a system errno; err is derived from errnum when err is OT_ERR_IO. */
enum ot_err ot_diag_errno(struct ot_diag *d, enum ot_err err, int errnum, const char *fmt, ...)
    OT_PRINTF(4, 5);
/* Prepends context to an existing message: "unpack: <old message>". Returns d->err (or err). */
enum ot_err ot_diag_prefix(struct ot_diag *d, enum ot_err err, const char *fmt, ...) OT_PRINTF(3, 4);
void ot_diag_clear(struct ot_diag *d);

/* Maps an errno value to the closest error code (ENOSPC → OT_ERR_NOSPC, ...). */
enum ot_err ot_err_from_errno(int errnum);

#endif
