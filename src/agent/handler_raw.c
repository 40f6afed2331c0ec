/* raw: the decoded image goes straight into the inactive slot (or the partition or file the target
 * names). Nothing is staged: the slot is not in use, and the bootloader switch (boot.h) is what
 * makes it live, so activate, commit and rollback have nothing to do on the slot itself.
 *
 * Block devices are opened without O_TRUNC or O_CREAT (neither means anything for them, and a
 * typo must not create a regular file in /dev) and their size is checked before the first byte,
 * so an image that does not fit fails at once instead of after most of it was written. */
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "handler_internal.h"
#include "otter/file.h"

static const char *const raw_args[] = {NULL};

/* The slot for target "slot" or "", "<root><target>" for a path. Nothing else: a name like "rootfs"
 * would leave the engine (which arms the bootloader only for "slot" and "") and this handler
 * disagreeing about where the image goes. */
static enum ot_err raw_path(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            char **ret, struct ot_diag *d)
{
    const char *t = p->target ? p->target : "";
    if (t[0] == '/')
        return ag__target_path(ctx, p, "", ret, d);
    if (t[0] && strcmp(t, "slot") != 0)
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': raw target '%s' is neither \"slot\" nor an absolute path",
                           p->name, t);
    if (!ctx->slot_path || !ctx->slot_path[0])
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': raw payload for the A/B slot, but this device has no "
                           "slot configured",
                           p->name);
    *ret = strdup(ctx->slot_path);
    return *ret ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

static enum ot_err open_block(const char *path, const struct ot_payload *p, int *ret_fd,
                              uint64_t *ret_limit, struct ot_diag *d)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", path);
    uint64_t size;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "size of %s", path);
    if (p->size > size)
        return ot_diag_set(d, OT_ERR_NOSPC,
                           "payload '%s': %llu bytes do not fit into %s (%llu bytes)", p->name,
                           (unsigned long long)p->size, path, (unsigned long long)size);
    *ret_limit = size;
    *ret_fd = TAKE_FD(fd);
    return OT_OK;
}

static enum ot_err open_target(const char *path, const struct ot_payload *p, int *ret_fd,
                               uint64_t *ret_limit, struct ot_diag *d)
{
    struct stat st;
    /* stat, not lstat: slots are often named through /dev/disk/by-* symlinks. */
    if (stat(path, &st) == 0 && S_ISBLK(st.st_mode))
        return open_block(path, p, ret_fd, ret_limit, d);
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': %s is neither a block device nor a regular file",
                           p->name, path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", path);
    *ret_fd = fd;
    *ret_limit = UINT64_MAX;
    return OT_OK;
}

static enum ot_err raw_begin(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                             struct ot_sink **ret_sink, struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    enum ot_err err = ag__args_only(p, raw_args, d);
    if (!err)
        err = raw_path(ctx, p, &path, d);
    int fd = -1;
    uint64_t limit = 0;
    if (!err)
        err = open_target(path, p, &fd, &limit, d);
    if (err)
        return err;
    return ag__fd_sink_new(fd, limit, path, ret_sink, d);
}

/* Runs in a later process than begin after a power cut, so it reopens rather than keeping the
 * writer's fd. */
static enum ot_err raw_end(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                           struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    enum ot_err err = raw_path(ctx, p, &path, d);
    if (err)
        return err;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", path);
    if (fsync(fd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s", path);
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        return ot_fsync_parent(path, d); /* the file may be new: make its name durable too */
    return OT_OK;
}

/* A half-written inactive slot is harmless: it is never booted without a complete install. */
static void raw_abort(const struct ag_install_ctx *ctx, const struct ot_payload *p)
{
    (void)ctx;
    (void)p;
}

static enum ot_err raw_activate(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                struct ot_diag *d)
{
    (void)ctx;
    (void)p;
    (void)d;
    return OT_OK;
}

/* commit and rollback: the boot backend switches (or not); only the staging directory the engine
 * made for this payload is left to drop. */
static enum ot_err raw_finish(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                              struct ot_diag *d)
{
    return ag__drop_staging(ctx, p, d);
}

const struct ag_handler_ops ag__handler_raw = {
    .type = "raw",
    .needs_reboot = true,
    .begin = raw_begin,
    .end = raw_end,
    .abort = raw_abort,
    .activate = raw_activate,
    .commit = raw_finish,
    .rollback = raw_finish,
};
