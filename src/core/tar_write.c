/* Tar writer on top of libarchive (see include/otter/tar.h).
 *
 * The format is "pax restricted": plain ustar headers, with a pax extended header only for a value
 * ustar cannot hold (a name that does not fit prefix/name, a size of 8 GiB or more). Standard tar
 * tools therefore list every artifact, and ot_tar_reader reads it.
 *
 * Output goes through our own write callback rather than archive_write_open_fd, for two reasons:
 *   - A size mismatch or an I/O error leaves a stream that must not be used, so such errors are
 *     sticky, and from then on the callback drops everything. libarchive's finish_entry would pad a
 *     short entry with zeros and its close would add an end-of-archive marker, making a broken
 *     stream look complete.
 *   - libarchive 3.6 frees its output buffer only in close, and skips close once the archive is in
 *     the FATAL state (archive_write_fail, or a failed write): the buffer leaks. The callback
 *     therefore never fails; it records errno, and every wrapper below checks it.
 * The record size is libarchive's default (10240 bytes, the last record padded with zeros), the
 * same as tar's, whatever kind of file fd is. */
#include <archive.h>
#include <archive_entry.h>
#include <inttypes.h>

#include "otter/tar.h"

#define QUOTE_MAX 128

struct ot_tar_writer {
    struct archive *a;
    int fd;           /* not owned */
    int io_errno;     /* first write(2) failure, reported by the wrapper that caused it */
    int64_t mtime;
    enum ot_err err;  /* sticky failure, OT_OK while usable */
    bool in_entry;
    bool closed;
    uint64_t size;    /* declared size of the current entry */
    uint64_t written; /* bytes written to it so far */
    char name[OT_TAR_NAME_MAX + 1];
};

/* Printable ASCII only. libarchive converts a non-ASCII name from the process locale to UTF-8 for
 * a pax record, so the same name would be written, refused, or written as different bytes
 * depending on LANG; its hdrcharset=BINARY option avoids that but puts a pax header (which GNU tar
 * warns about) in front of every entry. Artifact names are ASCII anyway. */
static bool printable_ascii(const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return false;
    return true;
}

/* Names are checked with the reader's rules, so the writer never produces an artifact that the
 * reader (or a careful tar) refuses. Kept in step with name_problem() in tar_read.c. */
static const char *name_problem(const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return "empty name";
    if (len > OT_TAR_NAME_MAX)
        return "name longer than 255 bytes";
    if (!printable_ascii(name))
        return "not printable ASCII";
    if (name[0] == '/')
        return "absolute name";
    for (const char *p = name;;) {
        size_t n = strcspn(p, "/");
        if (n == 0)
            return "empty path component";
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return "'.' or '..' component";
        if (!p[n])
            return NULL;
        p += n + 1;
    }
}

/* Printable form of a caller's name for messages. */
static const char *quote(const char *s, char out[QUOTE_MAX])
{
    size_t o = 0;
    for (; *s && o + 8 < QUOTE_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, QUOTE_MAX - o, "\\x%02x", c);
    }
    if (*s) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* Marks the writer unusable: nothing more reaches fd. */
static enum ot_err poison(struct ot_tar_writer *w, enum ot_err e)
{
    w->err = e;
    return e;
}

static la_ssize_t client_write(struct archive *a, void *userdata, const void *buf, size_t n)
{
    struct ot_tar_writer *w = userdata;
    const uint8_t *p = buf;
    size_t left = n;
    while (left > 0 && !w->err && !w->io_errno) {
        ssize_t k = write(w->fd, p, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            w->io_errno = k < 0 ? errno : EIO;
            break;
        }
        p += k;
        left -= (size_t)k;
    }
    return (la_ssize_t)n; /* see the top of the file: libarchive must not go FATAL */
}

/* Maps the last libarchive error: a system errno keeps its meaning (ENOSPC stays "no space"),
 * libarchive's own codes become format or internal errors. */
static enum ot_err archive_failed(struct ot_tar_writer *w, const char *what, struct ot_diag *d)
{
    if (w->io_errno)
        return poison(w, ot_diag_errno(d, OT_ERR_IO, w->io_errno, "tar: %s: write error", what));
    int errnum = archive_errno(w->a);
    const char *msg = archive_error_string(w->a);
    if (!msg)
        msg = "unknown libarchive error";
    enum ot_err e;
    if (errnum == EILSEQ) /* ARCHIVE_ERRNO_FILE_FORMAT: a value the format cannot hold */
        e = ot_diag_set(d, OT_ERR_INVALID, "tar: %s: %s", what, msg);
    else if (errnum == EINVAL) /* ARCHIVE_ERRNO_PROGRAMMER */
        e = ot_diag_set(d, OT_ERR_INTERNAL, "tar: %s: %s", what, msg);
    else if (errnum > 0)
        e = ot_diag_errno(d, OT_ERR_IO, errnum, "tar: %s: %s", what, msg);
    else
        e = ot_diag_set(d, OT_ERR_IO, "tar: %s: %s", what, msg);
    return poison(w, e);
}

/* The result of a libarchive call, including a write(2) failure inside it. */
static enum ot_err check(struct ot_tar_writer *w, int rc, const char *what, struct ot_diag *d)
{
    if (rc != ARCHIVE_OK || w->io_errno)
        return archive_failed(w, what, d);
    return OT_OK;
}

/* Common entry checks; returns OT_OK when the writer may be used. */
static enum ot_err usable(const struct ot_tar_writer *w, struct ot_diag *d)
{
    if (!w)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: no writer");
    if (w->err)
        return ot_diag_set(d, w->err, "tar: the writer stopped after an earlier error");
    if (w->closed)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: the writer is already closed");
    return OT_OK;
}

enum ot_err ot_tar_writer_new(int fd, int64_t mtime, struct ot_tar_writer **ret, struct ot_diag *d)
{
    if (fd < 0 || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: invalid arguments to writer_new");
    struct ot_tar_writer *w = calloc(1, sizeof(*w));
    if (!w || !(w->a = archive_write_new())) {
        free(w);
        return ot_diag_set(d, OT_ERR_NOMEM, "tar: out of memory");
    }
    w->fd = fd;
    w->mtime = mtime;
    if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_add_filter_none(w->a) != ARCHIVE_OK ||
        archive_write_open2(w->a, w, NULL, client_write, NULL, NULL) != ARCHIVE_OK) {
        enum ot_err e = archive_failed(w, "open", d);
        ot_tar_writer_free(w);
        return e;
    }
    *ret = w;
    return OT_OK;
}

static struct archive_entry *new_entry(const struct ot_tar_writer *w, const char *name,
                                       uint64_t size)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, (time_t)w->mtime, 0);
    return e; /* uname and gname stay unset: empty fields */
}

enum ot_err ot_tar_writer_begin_entry(struct ot_tar_writer *w, const char *name, uint64_t size,
                                      struct ot_diag *d)
{
    char q[QUOTE_MAX];
    enum ot_err err = usable(w, d);
    if (err)
        return err;
    if (!name)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: entry without a name");
    if (w->in_entry)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: entry '%s' started before '%s' ended",
                           quote(name, q), w->name);
    const char *why = name_problem(name);
    if (why)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: entry '%s': invalid name: %s",
                           quote(name, q), why);
    if (size > INT64_MAX)
        return ot_diag_set(d, OT_ERR_RANGE, "tar: entry '%s': size %" PRIu64 " too large",
                           quote(name, q), size);
    struct archive_entry *e = new_entry(w, name, size);
    if (!e)
        return ot_diag_set(d, OT_ERR_NOMEM, "tar: out of memory");
    /* ARCHIVE_WARN means the header was written lossily (e.g. a name that could not be
     * converted): not good enough for an artifact. */
    int rc = archive_write_header(w->a, e);
    archive_entry_free(e);
    snprintf(w->name, sizeof(w->name), "%s", quote(name, q));
    err = check(w, rc, "write header", d);
    if (err)
        return err;
    w->in_entry = true;
    w->size = size;
    w->written = 0;
    return OT_OK;
}

enum ot_err ot_tar_writer_write(struct ot_tar_writer *w, const uint8_t *p, size_t n,
                                struct ot_diag *d)
{
    enum ot_err err = usable(w, d);
    if (err)
        return err;
    if (!w->in_entry || (!p && n))
        return ot_diag_set(d, OT_ERR_INVALID, "tar: write outside of an entry");
    if (n > w->size - w->written)
        return poison(w, ot_diag_set(d, OT_ERR_SIZE,
                                     "tar: entry '%s': more than its declared %" PRIu64 " bytes",
                                     w->name, w->size));
    while (n > 0) {
        la_ssize_t k = archive_write_data(w->a, p, n);
        if (k <= 0 || (size_t)k > n || w->io_errno)
            return archive_failed(w, "write data", d);
        p += k;
        n -= (size_t)k;
        w->written += (uint64_t)k;
    }
    return OT_OK;
}

enum ot_err ot_tar_writer_end_entry(struct ot_tar_writer *w, struct ot_diag *d)
{
    enum ot_err err = usable(w, d);
    if (err)
        return err;
    if (!w->in_entry)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: end_entry without an entry");
    if (w->written != w->size)
        return poison(w, ot_diag_set(d, OT_ERR_SIZE,
                                     "tar: entry '%s': %" PRIu64 " bytes written, %" PRIu64
                                     " declared",
                                     w->name, w->written, w->size));
    err = check(w, archive_write_finish_entry(w->a), "finish entry", d);
    if (err)
        return err;
    w->in_entry = false;
    return OT_OK;
}

enum ot_err ot_tar_writer_close(struct ot_tar_writer *w, struct ot_diag *d)
{
    enum ot_err err = usable(w, d);
    if (err)
        return err;
    if (w->in_entry)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: close before entry '%s' ended", w->name);
    err = check(w, archive_write_close(w->a), "close", d);
    if (err)
        return err;
    w->closed = true;
    return OT_OK;
}

void ot_tar_writer_free(struct ot_tar_writer *w)
{
    if (!w)
        return;
    if (w->a) {
        if (!w->closed && !w->err) /* never finish a stream the caller did not close */
            w->err = OT_ERR_INVALID;
        archive_write_free(w->a); /* closes: frees libarchive's buffers, writes nothing */
    }
    free(w);
}
