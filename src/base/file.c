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

enum ot_err ot_atomic_file_open(struct ot_atomic_file *f, const char *path, mode_t mode,
                                struct ot_diag *d)
{
    *f = (struct ot_atomic_file){.fd = -1};
    const char *base = strrchr(path, '/');
    size_t dirlen = base ? (size_t)(base - path + 1) : 0;
    base = base ? base + 1 : path;
    if (!*base)
        return ot_diag_set(d, OT_ERR_INVALID, "%s: not a file path", path);

    /* "<dir>/.<name>.tmp-XXXXXX": same directory, so rename(2) is atomic. */
    size_t n = dirlen + 1 + strlen(base) + sizeof(".tmp-XXXXXX");
    _cleanup_free_ char *tmp = malloc(n);
    _cleanup_free_ char *final = strdup(path);
    if (!tmp || !final)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%.*s.%s.tmp-XXXXXX", (int)dirlen, path, base);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "create temporary file for %s", path);
    if (fchmod(fd, mode) < 0) {
        enum ot_err err = ot_diag_errno(d, OT_ERR_IO, errno, "chmod %s", tmp);
        close(fd);
        unlink(tmp);
        return err;
    }
    f->fd = fd;
    f->path = TAKE_PTR(final);
    f->tmp_path = TAKE_PTR(tmp);
    return OT_OK;
}

enum ot_err ot_atomic_file_commit(struct ot_atomic_file *f, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    if (f->fd < 0 || !f->tmp_path)
        return ot_diag_set(d, OT_ERR_INVALID, "atomic file is not open");
    if (fsync(f->fd) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s", f->path);
    if (close(f->fd) < 0 && !err)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "close %s", f->path);
    f->fd = -1;
    if (!err && rename(f->tmp_path, f->path) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "rename to %s", f->path);
    if (err) {
        ot_atomic_file_abort(f);
        return err;
    }
    free(f->tmp_path);
    f->tmp_path = NULL;
    err = ot_fsync_parent(f->path, d);
    ot_atomic_file_abort(f);
    return err;
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
