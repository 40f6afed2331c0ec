/* file: atomic replacement of one file, with the old one kept until commit.
 *
 * The payload is staged in <staging>/payload with its final mode. activate then
 *   1. writes the marker (did the target exist?) before touching anything,
 *   2. keeps the target as "<target>.otter-old" (hard link, else an atomic copy), unless that
 *      backup already exists from an earlier, interrupted activate,
 *   3. renames the staged file over the target (an atomic copy when they are on different file
 *      systems) and fsyncs the directory.
 * Every prefix of these steps is a state that activate can finish and rollback can undo:
 *   - no marker: nothing was touched;
 *   - marker "existed", no backup: the target is still the old file (the backup precedes step 3);
 *   - backup present: it is the old file, whatever the target is now;
 *   - marker "absent": whatever is at the target now came from us.
 * When the staged file is already gone, activate checks that the target holds the payload's
 * SHA-256 (from the signed manifest) rather than trusting that step 3 completed. */
#include <fcntl.h>
#include <sys/stat.h>

#include "handler_internal.h"
#include "otter/file.h"
#include "otter/path.h"

static const char *const file_args[] = {"mode", "owner", NULL};

#define FILE_MODE_DEFAULT 0644

/* Octal permission bits, "644" or "0644" up to 07777. */
static enum ot_err parse_mode(const struct ot_payload *p, mode_t *ret, struct ot_diag *d)
{
    const char *s = ag__arg(p, "mode");
    if (!s) {
        *ret = FILE_MODE_DEFAULT;
        return OT_OK;
    }
    size_t n = strlen(s);
    unsigned v = 0;
    for (size_t i = 0; i < n && n <= 5; i++) {
        if (s[i] < '0' || s[i] > '7') {
            n = 0;
            break;
        }
        v = v * 8 + (unsigned)(s[i] - '0');
    }
    if (n == 0 || n > 5 || v > 07777)
        return ot_diag_set(d, OT_ERR_INVALID, "payload '%s': mode '%s' is not an octal mode",
                           p->name, s);
    *ret = (mode_t)v;
    return OT_OK;
}

/* The paths every step needs. */
struct file_paths {
    char *staging, *staged, *target, *backup;
};

static void file_paths_release(struct file_paths *fp)
{
    free(fp->staging);
    free(fp->staged);
    free(fp->target);
    free(fp->backup);
    *fp = (struct file_paths){0};
}

static enum ot_err file_paths(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                              bool create, struct file_paths *fp, struct ot_diag *d)
{
    *fp = (struct file_paths){0};
    /* The target first: a bad one is refused before the staging directory is made. */
    enum ot_err err = ag__target_path(ctx, p, "", &fp->target, d);
    if (!err)
        err = ag__target_path(ctx, p, AG_SUFFIX_OLD, &fp->backup, d);
    if (!err)
        err = ag__staging_dir(ctx, p, create, &fp->staging, d);
    if (!err)
        err = ag__join(fp->staging, AG_STAGED_NAME, &fp->staged, d);
    if (err)
        file_paths_release(fp);
    return err;
}

static enum ot_err refuse_directory(const char *target, const struct ot_payload *p,
                                    struct ot_diag *d)
{
    struct stat st;
    if (lstat(target, &st) == 0 && S_ISDIR(st.st_mode))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': target %s is a directory (use an archive payload)",
                           p->name, target);
    return OT_OK;
}

static enum ot_err file_begin(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                              struct ot_sink **ret_sink, struct ot_diag *d)
{
    mode_t mode = FILE_MODE_DEFAULT;
    enum ot_err err = ag__args_only(p, file_args, d);
    if (!err)
        err = parse_mode(p, &mode, d);
    if (err)
        return err;
    _cleanup_(file_paths_release) struct file_paths fp;
    err = file_paths(ctx, p, true, &fp, d);
    if (err)
        return err;
    err = refuse_directory(fp.target, p, d);
    if (err)
        return err;
    return ag__staged_sink_new(fp.staged, mode, ret_sink, d);
}

static enum ot_err file_end(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            struct ot_diag *d)
{
    _cleanup_(file_paths_release) struct file_paths fp;
    enum ot_err err = file_paths(ctx, p, false, &fp, d);
    if (!err)
        err = ag__fsync_file(fp.staged, d);
    return err;
}

static void file_abort(const struct ag_install_ctx *ctx, const struct ot_payload *p)
{
    /* Best effort: nothing is active, and a leftover goes with the work directory. */
    enum ot_err err = ag__drop_staging(ctx, p, NULL);
    (void)err;
}

/* Step 2: a hard link costs nothing and keeps the exact inode (owner, mode, xattrs); file systems
 * without hard links get a copy, made atomically so a crash never leaves half a backup. */
static enum ot_err make_backup(const char *target, const char *backup, struct ot_diag *d)
{
    if (link(target, backup) == 0)
        return ot_fsync_parent(backup, d);
    if (errno != EPERM && errno != EOPNOTSUPP && errno != EMLINK && errno != ENOSYS)
        return ot_diag_errno(d, OT_ERR_IO, errno, "link %s to %s", target, backup);
    struct stat st;
    if (stat(target, &st) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "stat %s", target);
    return ag__copy_file(target, backup, st.st_mode & 07777, d);
}

/* Step 3. */
static enum ot_err install_staged(const char *staged, const char *target, struct ot_diag *d)
{
    _cleanup_free_ char *parent = NULL;
    if (ot_path_dirname(target, &parent) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    enum ot_err err = ag__mkdir_p(parent, 0755, d);
    if (err)
        return err;
    if (rename(staged, target) == 0)
        return ot_fsync_parent(target, d);
    if (errno != EXDEV)
        return ot_diag_errno(d, OT_ERR_IO, errno, "rename %s to %s", staged, target);
    /* Staging is on another file system: copy next to the target first, then rename there. */
    struct stat st;
    if (stat(staged, &st) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "stat %s", staged);
    err = ag__copy_file(staged, target, st.st_mode & 07777, d);
    if (!err && unlink(staged) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "remove %s", staged);
    return err;
}

/* activate already ran to its end: the staged file is gone, so the target must hold exactly the
 * payload. */
static enum ot_err check_installed(const struct file_paths *fp, const struct ot_payload *p,
                                   struct ot_diag *d)
{
    uint8_t digest[OT_SHA256_LEN];
    bool there;
    enum ot_err err = ag__exists(fp->target, &there, d);
    if (!err && there)
        err = ag__file_sha256(fp->target, digest, d);
    if (err)
        return err;
    if (!there || memcmp(digest, p->sha256, OT_SHA256_LEN) != 0)
        return ot_diag_set(d, OT_ERR_NOENT,
                           "payload '%s': staged file %s is missing and %s does not hold the new "
                           "content",
                           p->name, fp->staged, fp->target);
    return OT_OK;
}

/* Step 1, on the first activate only. A backup left from an earlier deployment (a commit cut
 * short before it removed it) is not ours: drop it so that step 2 keeps the current file. */
static enum ot_err start_activate(const struct file_paths *fp, const struct ot_payload *p,
                                  enum ag_marker *m, struct ot_diag *d)
{
    bool staged, target;
    enum ot_err err = ag__exists(fp->staged, &staged, d);
    if (!err && !staged)
        err = ot_diag_set(d, OT_ERR_NOENT, "payload '%s': nothing staged at %s", p->name,
                          fp->staged);
    if (!err && unlink(fp->backup) < 0 && errno != ENOENT)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "remove stale %s", fp->backup);
    if (!err)
        err = ag__exists(fp->target, &target, d);
    if (err)
        return err;
    *m = target ? AG_MARKER_EXISTED : AG_MARKER_ABSENT;
    return ag__marker_write(fp->staging, *m, d);
}

static enum ot_err file_activate(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 struct ot_diag *d)
{
    _cleanup_(file_paths_release) struct file_paths fp;
    enum ot_err err = file_paths(ctx, p, false, &fp, d);
    enum ag_marker m = AG_MARKER_NONE;
    if (!err)
        err = refuse_directory(fp.target, p, d);
    if (!err)
        err = ag__marker_read(fp.staging, &m, d);
    if (!err && m == AG_MARKER_NONE)
        err = start_activate(&fp, p, &m, d);
    bool staged = false, target = false, backup = false;
    if (!err)
        err = ag__exists(fp.staged, &staged, d);
    if (!err)
        err = ag__exists(fp.target, &target, d);
    if (!err)
        err = ag__exists(fp.backup, &backup, d);
    if (err)
        return err;
    if (!staged)
        return check_installed(&fp, p, d);
    /* With marker "absent", a target that exists now is our own, from a cut-short step 3. */
    if (m == AG_MARKER_EXISTED && target && !backup)
        err = make_backup(fp.target, fp.backup, d);
    if (!err)
        err = install_staged(fp.staged, fp.target, d);
    return err;
}

static enum ot_err file_commit(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                               struct ot_diag *d)
{
    _cleanup_(file_paths_release) struct file_paths fp;
    enum ot_err err = file_paths(ctx, p, false, &fp, d);
    if (err)
        return err;
    if (unlink(fp.backup) == 0)
        err = ot_fsync_parent(fp.backup, d);
    else if (errno != ENOENT)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "remove %s", fp.backup);
    if (!err)
        err = ag__rm_rf(fp.staging, d);
    return err;
}

static enum ot_err remove_new(const char *target, struct ot_diag *d)
{
    if (unlink(target) == 0)
        return ot_fsync_parent(target, d);
    if (errno != ENOENT)
        return ot_diag_errno(d, OT_ERR_IO, errno, "remove %s", target);
    return OT_OK;
}

/* Puts the backup back. When activate stopped right after the hard link, both names are the same
 * file, and rename(2) of a file onto another link of itself does nothing at all (POSIX): the
 * backup name is then simply dropped. */
static enum ot_err restore_backup(const char *backup, const char *target, struct ot_diag *d)
{
    struct stat b, t;
    if (lstat(backup, &b) == 0 && lstat(target, &t) == 0 && b.st_dev == t.st_dev &&
        b.st_ino == t.st_ino) {
        if (unlink(backup) < 0)
            return ot_diag_errno(d, OT_ERR_IO, errno, "remove %s", backup);
        return ot_fsync_parent(backup, d);
    }
    return ag__rename(backup, target, d);
}

static enum ot_err file_rollback(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 struct ot_diag *d)
{
    _cleanup_(file_paths_release) struct file_paths fp;
    enum ot_err err = file_paths(ctx, p, false, &fp, d);
    enum ag_marker m = AG_MARKER_NONE;
    bool backup = false;
    if (!err)
        err = ag__marker_read(fp.staging, &m, d);
    if (!err)
        err = ag__exists(fp.backup, &backup, d);
    if (err)
        return err;
    /* The marker goes last (with the staging directory), so a cut-short rollback runs again. */
    if (m != AG_MARKER_NONE && backup)
        err = restore_backup(fp.backup, fp.target, d);
    else if (m == AG_MARKER_ABSENT)
        err = remove_new(fp.target, d);
    if (!err)
        err = ag__rm_rf(fp.staging, d);
    return err;
}

const struct ag_handler_ops ag__handler_file = {
    .type = "file",
    .needs_reboot = false,
    .begin = file_begin,
    .end = file_end,
    .abort = file_abort,
    .activate = file_activate,
    .commit = file_commit,
    .rollback = file_rollback,
};
