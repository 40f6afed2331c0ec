#include <fcntl.h>
#include <sys/stat.h>

#include "otter/file.h"
#include "otter/path.h"

enum ot_err ot_write_all(int fd, const void *p, size_t n, struct ot_diag *d)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ot_diag_errno(d, OT_ERR_IO, errno, "write");
        }
        if (w == 0)
            return ot_diag_errno(d, OT_ERR_IO, EIO, "write returned 0");
        q += w;
        n -= (size_t)w;
    }
    return OT_OK;
}

enum ot_err ot_read_full(int fd, void *p, size_t n, size_t *ret_n, struct ot_diag *d)
{
    uint8_t *q = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, q + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ot_diag_errno(d, OT_ERR_IO, errno, "read");
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *ret_n = got;
    return OT_OK;
}

enum ot_err ot_fsync_parent(const char *path, struct ot_diag *d)
{
    struct stat st;
    _cleanup_free_ char *dir = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        dir = strdup(path);
    else if (ot_path_dirname(path, &dir) != OT_OK)
        dir = NULL;
    if (!dir)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open directory %s", dir);
    if (fsync(fd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "fsync directory %s", dir);
    return OT_OK;
}

/* The named fallback: "<dir>/.<name>.tmp-XXXXXX", same directory so rename(2) is atomic. */
static char *temp_template(const char *path, size_t dirlen, const char *base)
{
    size_t n = dirlen + 1 + strlen(base) + sizeof(".tmp-XXXXXX");
    char *tmp = malloc(n);
    if (tmp)
        snprintf(tmp, n, "%.*s.%s.tmp-XXXXXX", (int)dirlen, path, base);
    return tmp;
}

static int open_unnamed(const char *path, size_t dirlen, mode_t mode)
{
    _cleanup_free_ char *dir = dirlen ? strndup(path, dirlen) : strdup(".");
    if (!dir)
        return -1;
    return open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
}

enum ot_err ot_atomic_file_open(struct ot_atomic_file *f, const char *path, mode_t mode,
                                struct ot_diag *d)
{
    *f = (struct ot_atomic_file){.fd = -1};
    const char *base = strrchr(path, '/');
    size_t dirlen = base ? (size_t)(base - path + 1) : 0;
    base = base ? base + 1 : path;
    if (!*base)
        return ot_diag_set(d, OT_ERR_INVALID, "%s: not a file path", path);
    _cleanup_free_ char *final = strdup(path);
    if (!final)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    _cleanup_free_ char *tmp = NULL;
    int fd = open_unnamed(path, dirlen, mode);
    if (fd < 0 && errno != ENOENT && errno != EACCES && errno != EROFS && errno != ENOSPC) {
        tmp = temp_template(path, dirlen, base);
        if (!tmp)
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        fd = mkostemp(tmp, O_CLOEXEC);
    }
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "create temporary file for %s", path);
    if (fchmod(fd, mode) < 0) {
        enum ot_err err = ot_diag_errno(d, OT_ERR_IO, errno, "chmod temporary file for %s", path);
        close(fd);
        if (tmp)
            unlink(tmp);
        return err;
    }
    f->fd = fd;
    f->path = TAKE_PTR(final);
    f->tmp_path = TAKE_PTR(tmp);
    return OT_OK;
}

/* Gives the unnamed file fd the name target; fails with EEXIST if target exists. */
static int link_unnamed(int fd, const char *target)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    if (errno != ENOENT) /* /proc is there: the error is real */
        return -1;
    return linkat(fd, "", AT_FDCWD, target, AT_EMPTY_PATH); /* no /proc: needs privileges */
}

/* Names an unnamed file at a fresh temp name, so that it can be renamed over the target. */
static enum ot_err name_unnamed(struct ot_atomic_file *f, struct ot_diag *d)
{
    const char *base = strrchr(f->path, '/');
    size_t dirlen = base ? (size_t)(base - f->path + 1) : 0;
    _cleanup_free_ char *tmp = temp_template(f->path, dirlen, base ? base + 1 : f->path);
    if (!tmp)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    char *x = tmp + strlen(tmp) - 6;
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        uint32_t r = (uint32_t)rand() ^ ((uint32_t)getpid() << 8) ^ attempt * 2654435761u;
        for (int i = 0; i < 6; i++, r /= 36)
            x[i] = chars[r % 36];
        if (link_unnamed(f->fd, tmp) == 0) {
            f->tmp_path = TAKE_PTR(tmp);
            return OT_OK;
        }
        if (errno != EEXIST)
            return ot_diag_errno(d, OT_ERR_IO, errno, "link temporary file for %s", f->path);
    }
    return ot_diag_set(d, OT_ERR_IO, "no free temporary name for %s", f->path);
}

static enum ot_err sync_data(struct ot_atomic_file *f, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    if (f->fd < 0)
        return ot_diag_set(d, OT_ERR_INVALID, "atomic file is not open");
    if (fsync(f->fd) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s", f->path);
    return err;
}

/* Ends a commit: on success fsync the directory so the new name is durable; always clean up. */
static enum ot_err finish_commit(struct ot_atomic_file *f, enum ot_err err, struct ot_diag *d)
{
    if (!err) {
        free(f->tmp_path); /* the temp name is gone: renamed, or never created */
        f->tmp_path = NULL;
        err = ot_fsync_parent(f->path, d);
    }
    ot_atomic_file_abort(f);
    return err;
}

enum ot_err ot_atomic_file_commit(struct ot_atomic_file *f, struct ot_diag *d)
{
    enum ot_err err = sync_data(f, d);
    if (!err && !f->tmp_path)
        err = name_unnamed(f, d);
    if (!err && rename(f->tmp_path, f->path) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "rename to %s", f->path);
    return finish_commit(f, err, d);
}

enum ot_err ot_atomic_file_commit_new(struct ot_atomic_file *f, struct ot_diag *d)
{
    enum ot_err err = sync_data(f, d);
    if (err)
        return finish_commit(f, err, d);
    int rc = f->tmp_path ? link(f->tmp_path, f->path) : link_unnamed(f->fd, f->path);
    if (rc < 0 && f->tmp_path && (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS)) {
        /* No hard links here (FAT): check, then rename; not atomic against a racing creator. */
        struct stat st;
        if (lstat(f->path, &st) == 0)
            errno = EEXIST;
        else
            rc = rename(f->tmp_path, f->path);
        if (rc == 0) {
            free(f->tmp_path);
            f->tmp_path = NULL;
        }
    }
    if (rc < 0 && errno == EEXIST)
        err = ot_diag_set(d, OT_ERR_EXISTS, "%s: already exists, refusing to overwrite it",
                          f->path);
    else if (rc < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "create %s", f->path);
    if (!err && f->tmp_path) {
        unlink(f->tmp_path); /* the content now lives at path; drop the temp name */
        free(f->tmp_path);
        f->tmp_path = NULL;
    }
    return finish_commit(f, err, d);
}

void ot_atomic_file_abort(struct ot_atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    f->tmp_path = NULL;
    f->path = NULL;
}

enum ot_err ot_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                                 struct ot_diag *d)
{
    struct ot_atomic_file f;
    enum ot_err err = ot_atomic_file_open(&f, path, mode, d);
    if (err)
        return err;
    err = ot_write_all(f.fd, data, len, d);
    if (err) {
        ot_atomic_file_abort(&f);
        return ot_diag_prefix(d, err, "%s", path);
    }
    return ot_atomic_file_commit(&f, d);
}

enum ot_err ot_file_read(const char *path, struct ot_buf *out, struct ot_diag *d)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    ot_buf_reset(out);
    uint8_t chunk[16384];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ot_diag_errno(d, OT_ERR_IO, errno, "read %s", path);
        }
        if (r == 0)
            return OT_OK;
        enum ot_err err = ot_buf_append(out, chunk, (size_t)r);
        if (err == OT_ERR_LIMIT)
            return ot_diag_set(d, err, "%s: larger than %zu bytes", path, out->max);
        if (err)
            return ot_diag_set(d, err, "%s: %s", path, ot_strerror(err));
    }
}
