#include <stdarg.h>

#include "otter/err.h"

static const struct {
    const char *name;
    const char *text;
} err_table[OT_ERR__MAX] = {
    [OT_OK] = {"ok", "success"},
    [OT_ERR_NOMEM] = {"nomem", "out of memory"},
    [OT_ERR_INVALID] = {"invalid", "invalid argument"},
    [OT_ERR_IO] = {"io", "input/output error"},
    [OT_ERR_NOSPC] = {"nospc", "no space left on device"},
    [OT_ERR_NOENT] = {"noent", "not found"},
    [OT_ERR_EXISTS] = {"exists", "already exists"},
    [OT_ERR_PERM] = {"perm", "permission denied"},
    [OT_ERR_RANGE] = {"range", "number out of range"},
    [OT_ERR_LIMIT] = {"limit", "limit exceeded"},
    [OT_ERR_FORMAT] = {"format", "malformed input"},
    [OT_ERR_TRUNCATED] = {"truncated", "input is truncated"},
    [OT_ERR_UNSUPPORTED] = {"unsupported", "not supported"},
    [OT_ERR_CONFIG] = {"config", "configuration error"},
    [OT_ERR_CRYPTO] = {"crypto", "cryptographic operation failed"},
    [OT_ERR_SIGNATURE] = {"signature", "signature verification failed"},
    [OT_ERR_UNTRUSTED] = {"untrusted", "not signed by a trusted key"},
    [OT_ERR_HASH] = {"hash", "content does not match its SHA-256"},
    [OT_ERR_SIZE] = {"size", "content does not match its declared size"},
    [OT_ERR_DECRYPT] = {"decrypt", "decryption failed (wrong key or tampered data)"},
    [OT_ERR_NOKEY] = {"nokey", "no key can decrypt this content"},
    [OT_ERR_INCOMPATIBLE] = {"incompatible", "not compatible with this device"},
    [OT_ERR_ROLLBACK] = {"rollback", "security version is lower than allowed"},
    [OT_ERR_INTERNAL] = {"internal", "internal error"},
};

const char *ot_strerror(enum ot_err err)
{
    if ((unsigned)err >= OT_ERR__MAX || !err_table[err].text)
        return "unknown error";
    return err_table[err].text;
}

const char *ot_err_name(enum ot_err err)
{
    if ((unsigned)err >= OT_ERR__MAX || !err_table[err].name)
        return "unknown";
    return err_table[err].name;
}

enum ot_err ot_err_from_errno(int errnum)
{
    switch (errnum) {
    case 0:
        return OT_OK;
    case ENOMEM:
        return OT_ERR_NOMEM;
    case ENOSPC:
    case EDQUOT:
        return OT_ERR_NOSPC;
    case ENOENT:
    case ENOTDIR:
        return OT_ERR_NOENT;
    case EEXIST:
    case ENOTEMPTY:
        return OT_ERR_EXISTS;
    case EACCES:
    case EPERM:
    case EROFS:
        return OT_ERR_PERM;
    case EINVAL:
        return OT_ERR_INVALID;
    default:
        return OT_ERR_IO;
    }
}

OT_PRINTF(3, 0)
static void diag_vset(struct ot_diag *d, enum ot_err err, const char *fmt, va_list ap)
    OT_PRINTF(3, 0);
OT_PRINTF(3, 0)
static void diag_vset(struct ot_diag *d, enum ot_err err, const char *fmt, va_list ap)
{
    /* Formatted into a scratch buffer first: the test for "empty" is on the result (a format of
     * "%s" with "" keeps the inner detail too), and arguments may point into d->msg itself. */
    char msg[OT_DIAG_MSG_MAX];
    d->err = err;
    if (!fmt || vsnprintf(msg, sizeof(msg), fmt, ap) <= 0)
        return;
    memcpy(d->msg, msg, sizeof(msg));
}

enum ot_err ot_diag_set(struct ot_diag *d, enum ot_err err, const char *fmt, ...)
{
    if (d) {
        va_list ap;
        va_start(ap, fmt);
        d->sys_errno = 0;
        diag_vset(d, err, fmt, ap);
        va_end(ap);
    }
    return err;
}

enum ot_err ot_diag_errno(struct ot_diag *d, enum ot_err err, int errnum, const char *fmt, ...)
{
    if (err == OT_ERR_IO) {
        err = ot_err_from_errno(errnum);
        /* errno 0, or EINVAL from a system call, is an I/O failure to the caller's caller; an
         * OT_ERR_INVALID the caller chose itself stays as it is. */
        if (err == OT_OK || err == OT_ERR_INVALID)
            err = OT_ERR_IO;
    }
    if (d) {
        va_list ap;
        va_start(ap, fmt);
        diag_vset(d, err, fmt, ap);
        va_end(ap);
        d->sys_errno = errnum;
        if (errnum) {
            size_t n = strlen(d->msg);
            snprintf(d->msg + n, sizeof(d->msg) - n, ": %s", strerror(errnum));
        }
    }
    return err;
}

enum ot_err ot_diag_prefix(struct ot_diag *d, enum ot_err err, const char *fmt, ...)
{
    if (!d)
        return err;
    char old[OT_DIAG_MSG_MAX];
    memcpy(old, d->msg, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
    va_end(ap);
    /* Append ": <old>", cut to fit; written as copies so the intended truncation is explicit. */
    size_t used = n < 0 ? 0 : (size_t)n, room = sizeof(d->msg) - 1;
    if (used + 2 < room && old[0]) {
        size_t take = OT_MIN(strlen(old), room - used - 2);
        memcpy(d->msg + used, ": ", 2);
        memcpy(d->msg + used + 2, old, take);
        d->msg[used + 2 + take] = '\0';
    }
    if (d->err == OT_OK)
        d->err = err;
    return d->err;
}

void ot_diag_clear(struct ot_diag *d)
{
    if (d) {
        d->err = OT_OK;
        d->sys_errno = 0;
        d->msg[0] = '\0';
    }
}
