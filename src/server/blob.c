/* The content-addressed blob store (blob.h). */
#include <fcntl.h>
#include <sys/stat.h>

#include "blob.h"
#include "otter/encoding.h"
#include "otter/file.h"

struct srv_blob_writer {
    char *dir;                      /* DATA_DIR/blobs */
    struct ot_atomic_file file;
    struct ot_sha256 hash;
    uint64_t size;
    char hex[OT_SHA256_HEX_LEN];    /* set by finish */
};

static char *blob_path(const char *data_dir, const char *hex)
{
    char *p = NULL;
    return asprintf(&p, "%s/blobs/%s", data_dir, hex) < 0 ? NULL : p;
}

static bool hex_is_valid(const char *hex)
{
    size_t n = strlen(hex);
    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    return true;
}

enum ot_err srv_blob_writer_new(const char *data_dir, struct srv_blob_writer **ret,
                                struct ot_diag *d)
{
    struct srv_blob_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    w->file.fd = -1;
    char *path = blob_path(data_dir, "upload");
    enum ot_err err = path ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!err)
        err = ot_atomic_file_open(&w->file, path, 0600, d);
    free(path);
    if (!err && ot_sha256_init(&w->hash) != OT_OK)
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (err) {
        srv_blob_writer_free(w);
        return err;
    }
    *ret = w;
    return OT_OK;
}

enum ot_err srv_blob_writer_write(struct srv_blob_writer *w, const uint8_t *p, size_t n,
                                  struct ot_diag *d)
{
    enum ot_err err = ot_write_all(w->file.fd, p, n, d);
    if (err)
        return err == OT_ERR_NOSPC ? err : ot_diag_prefix(d, err, "cannot store the upload");
    ot_sha256_update(&w->hash, p, n);
    w->size += n;
    return OT_OK;
}

uint64_t srv_blob_writer_size(const struct srv_blob_writer *w) { return w->size; }

void srv_blob_writer_finish(struct srv_blob_writer *w, char hex[OT_SHA256_HEX_LEN])
{
    if (!w->hex[0]) {
        uint8_t sum[OT_SHA256_LEN];
        ot_sha256_final(&w->hash, sum);
        ot_hex_encode(sum, sizeof(sum), w->hex);
    }
    memcpy(hex, w->hex, OT_SHA256_HEX_LEN);
}

enum ot_err srv_blob_writer_commit(struct srv_blob_writer *w, struct ot_diag *d)
{
    char hex[OT_SHA256_HEX_LEN];
    srv_blob_writer_finish(w, hex);
    /* The temp file lives in blobs/ already; only its final name changes. */
    const char *slash = strrchr(w->file.path, '/');
    char *final = NULL;
    if (asprintf(&final, "%.*s/%s", (int)(slash - w->file.path), w->file.path, hex) < 0)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    free(w->file.path);
    w->file.path = final;
    enum ot_err err = ot_atomic_file_commit_new(&w->file, d);
    return err == OT_ERR_EXISTS ? OT_OK : err; /* the same bytes are stored already */
}

void srv_blob_writer_free(struct srv_blob_writer *w)
{
    if (!w)
        return;
    ot_atomic_file_abort(&w->file);
    ot_sha256_release(&w->hash);
    free(w);
}

enum ot_err srv_blob_open(const char *data_dir, const char *hex, int *ret_fd, uint64_t *ret_size,
                          struct ot_diag *d)
{
    if (!hex_is_valid(hex))
        return ot_diag_set(d, OT_ERR_INVALID, "not a blob name");
    _cleanup_free_ char *path = blob_path(data_dir, hex);
    if (!path)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return ot_diag_errno(d, errno == ENOENT ? OT_ERR_NOENT : OT_ERR_IO, errno,
                             "blob %.12s", hex);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ot_diag_set(d, OT_ERR_IO, "blob %.12s is not a regular file", hex);
    }
    *ret_fd = fd;
    *ret_size = (uint64_t)st.st_size;
    return OT_OK;
}

enum ot_err srv_blob_remove(const char *data_dir, const char *hex, struct ot_diag *d)
{
    if (!hex_is_valid(hex))
        return ot_diag_set(d, OT_ERR_INVALID, "not a blob name");
    _cleanup_free_ char *path = blob_path(data_dir, hex);
    if (!path)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (unlink(path) < 0 && errno != ENOENT)
        return ot_diag_errno(d, OT_ERR_IO, errno, "remove blob %.12s", hex);
    return ot_fsync_parent(path, d);
}
