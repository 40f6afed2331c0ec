/* archive: a tar payload becomes a whole directory tree, swapped in with two renames.
 *
 * The tar is read by core's strict push reader (otter/tar.h), not libarchive: it accepts only
 * regular files (and pax path/size records) with relative names free of "." and ".."; links,
 * devices, FIFOs and directory entries are refused before they reach us. Directories come into
 * being as the parents of files. Extraction is still done with openat() from a descriptor of the
 * new tree, O_NOFOLLOW at every component and O_EXCL for files, so that even a reader bug could
 * not make a name leave the tree or write through a symlink.
 *
 * The reader does not report modes: files are created 0644 and directories 0755.
 *
 * Three directories take part, T (target), N (T.otter-new) and O (T.otter-old):
 *   begin/end: N is (re)built and fsynced, T untouched;
 *   activate:  marker ("did T exist?"), T -> O, N -> T;
 *   commit:    rm -rf O;
 *   rollback:  T -> N, O -> T, rm -rf N (or, when T did not exist, T -> N, rm -rf N).
 * A power cut leaves one of {T,N} {O,N} {O,T} {N} {T}, and which of them is new or old follows
 * from the marker, so activate and rollback both know what to do from any of them. */
#include <fcntl.h>
#include <sys/stat.h>

#include "handler_internal.h"
#include "otter/file.h"
#include "otter/path.h"
#include "otter/tar.h"

static const char *const archive_args[] = {NULL};

/* Bounds the work a payload can cause beyond its size: file creations, and so inodes. */
#define ARCHIVE_ENTRIES_MAX 1000000

struct archive_paths {
    char *staging, *target, *new_dir, *old_dir;
};

static void archive_paths_release(struct archive_paths *ap)
{
    free(ap->staging);
    free(ap->target);
    free(ap->new_dir);
    free(ap->old_dir);
    *ap = (struct archive_paths){0};
}

static enum ot_err archive_paths(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 bool create, struct archive_paths *ap, struct ot_diag *d)
{
    *ap = (struct archive_paths){0};
    /* The target first: a bad one is refused before the staging directory is made. */
    enum ot_err err = ag__target_path(ctx, p, "", &ap->target, d);
    if (!err)
        err = ag__target_path(ctx, p, AG_SUFFIX_NEW, &ap->new_dir, d);
    if (!err)
        err = ag__target_path(ctx, p, AG_SUFFIX_OLD, &ap->old_dir, d);
    if (!err)
        err = ag__staging_dir(ctx, p, create, &ap->staging, d);
    if (err)
        archive_paths_release(ap);
    return err;
}

/* ---- extraction ------------------------------------------------------------------------------ */

struct archive_sink {
    struct ot_sink base;
    struct ot_tar_reader *reader;
    int root_fd;   /* N */
    int file_fd;   /* the entry being written, -1 between entries */
    uint64_t entries;
    char *root;    /* N, for messages */
};

/* Opens (creating when missing) the directory component name of dirfd, never through a symlink. */
static int open_subdir(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0755) == 0) {
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && fchmod(fd, 0755) < 0) { /* 0755 whatever the umask */
            close(fd);
            return -1;
        }
        return fd;
    }
    if (errno != EEXIST)
        return -1;
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static bool component_ok(const char *c, size_t n)
{
    return n > 0 && !(n == 1 && c[0] == '.') && !(n == 2 && c[0] == '.' && c[1] == '.');
}

/* Creates the file name (relative to the tree) and its parents; returns its fd or -1 with errno. */
static int create_entry(int root_fd, const char *name)
{
    char comp[OT_TAR_NAME_MAX + 1];
    int dirfd = root_fd;
    const char *p = name;
    for (;;) {
        size_t n = strcspn(p, "/");
        if (!component_ok(p, n) || n >= sizeof(comp)) {
            errno = EINVAL;
            break;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        if (!p[n]) {
            int fd = openat(dirfd, comp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0644);
            if (fd >= 0 && fchmod(fd, 0644) < 0) {
                close(fd);
                fd = -1;
            }
            if (dirfd != root_fd)
                close(dirfd);
            return fd;
        }
        int sub = open_subdir(dirfd, comp);
        if (dirfd != root_fd)
            close(dirfd);
        if (sub < 0)
            return -1;
        dirfd = sub;
        p += n + 1;
    }
    if (dirfd != root_fd) {
        int e = errno;
        close(dirfd);
        errno = e;
    }
    return -1;
}

static enum ot_err on_entry(void *userdata, const char *name, uint64_t size, struct ot_diag *d)
{
    struct archive_sink *s = userdata;
    (void)size;
    if (name[0] == '/')
        return ot_diag_set(d, OT_ERR_FORMAT, "archive: absolute name '%s'", name);
    if (++s->entries > ARCHIVE_ENTRIES_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "archive: more than %d entries",
                           ARCHIVE_ENTRIES_MAX);
    s->file_fd = create_entry(s->root_fd, name);
    if (s->file_fd >= 0)
        return OT_OK;
    if (errno == EEXIST)
        return ot_diag_set(d, OT_ERR_FORMAT, "archive: '%s' appears twice (or as a file and a "
                           "directory)", name);
    if (errno == ELOOP || errno == ENOTDIR)
        return ot_diag_set(d, OT_ERR_FORMAT, "archive: a parent of '%s' is not a directory",
                           name);
    return ot_diag_errno(d, OT_ERR_IO, errno, "archive: create '%s' in %s", name, s->root);
}

static enum ot_err on_data(void *userdata, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct archive_sink *s = userdata;
    enum ot_err err = ot_write_all(s->file_fd, p, n, d);
    return err ? ot_diag_prefix(d, err, "archive: %s", s->root) : OT_OK;
}

/* fsync happens once for the whole tree at end(), which must work after a reboot anyway. */
static enum ot_err on_entry_end(void *userdata, struct ot_diag *d)
{
    struct archive_sink *s = userdata;
    int fd = s->file_fd;
    s->file_fd = -1;
    if (close(fd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "archive: close file in %s", s->root);
    return OT_OK;
}

static const struct ot_tar_callbacks tar_callbacks = {on_entry, on_data, on_entry_end};

static enum ot_err archive_write(struct ot_sink *base, const uint8_t *p, size_t n,
                                 struct ot_diag *d)
{
    struct archive_sink *s = (struct archive_sink *)base;
    return ot_tar_reader_feed(s->reader, p, n, d);
}

static enum ot_err archive_finish(struct ot_sink *base, struct ot_diag *d)
{
    struct archive_sink *s = (struct archive_sink *)base;
    return ot_tar_reader_finish(s->reader, d);
}

static void archive_free(struct ot_sink *base)
{
    struct archive_sink *s = (struct archive_sink *)base;
    ot_tar_reader_free(s->reader);
    if (s->file_fd >= 0)
        close(s->file_fd);
    if (s->root_fd >= 0)
        close(s->root_fd);
    free(s->root);
    free(s);
}

static enum ot_err archive_sink_new(const char *root, struct ot_sink **ret, struct ot_diag *d)
{
    struct archive_sink *s = calloc(1, sizeof(*s));
    if (!s)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    s->base = (struct ot_sink){archive_write, archive_finish, archive_free};
    s->file_fd = -1;
    s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->root_fd < 0) {
        int e = errno;
        archive_free(&s->base);
        return ot_diag_errno(d, OT_ERR_IO, e, "open %s", root);
    }
    if (!(s->root = strdup(root)) || ot_tar_reader_new(&tar_callbacks, s, &s->reader) != OT_OK) {
        archive_free(&s->base);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    *ret = &s->base;
    return OT_OK;
}

/* ---- steps ----------------------------------------------------------------------------------- */

static enum ot_err refuse_non_directory(const char *target, const struct ot_payload *p,
                                        struct ot_diag *d)
{
    struct stat st;
    if (lstat(target, &st) == 0 && !S_ISDIR(st.st_mode))
        return ot_diag_set(d, OT_ERR_INVALID, "payload '%s': target %s is not a directory",
                           p->name, target);
    return OT_OK;
}

/* A fresh, empty N next to T (on T's file system, so that the swap is a rename). */
static enum ot_err fresh_new_dir(const struct archive_paths *ap, struct ot_diag *d)
{
    _cleanup_free_ char *parent = NULL;
    if (ot_path_dirname(ap->target, &parent) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    enum ot_err err = ag__mkdir_p(parent, 0755, d);
    if (!err)
        err = ag__rm_rf(ap->new_dir, d);
    if (err)
        return err;
    if (mkdir(ap->new_dir, 0755) < 0 || chmod(ap->new_dir, 0755) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "mkdir %s", ap->new_dir);
    return OT_OK;
}

static enum ot_err archive_begin(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 struct ot_sink **ret_sink, struct ot_diag *d)
{
    enum ot_err err = ag__args_only(p, archive_args, d);
    if (err)
        return err;
    _cleanup_(archive_paths_release) struct archive_paths ap;
    err = archive_paths(ctx, p, true, &ap, d);
    if (!err)
        err = refuse_non_directory(ap.target, p, d);
    if (!err)
        err = fresh_new_dir(&ap, d);
    if (!err)
        err = archive_sink_new(ap.new_dir, ret_sink, d);
    return err;
}

static enum ot_err archive_end(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                               struct ot_diag *d)
{
    _cleanup_(archive_paths_release) struct archive_paths ap;
    enum ot_err err = archive_paths(ctx, p, false, &ap, d);
    if (!err)
        err = ag__fsync_tree(ap.new_dir, d);
    if (!err)
        err = ot_fsync_parent(ap.new_dir, d);
    return err;
}

static void archive_abort(const struct ag_install_ctx *ctx, const struct ot_payload *p)
{
    struct archive_paths ap;
    if (archive_paths(ctx, p, false, &ap, NULL) != OT_OK)
        return;
    /* Best effort: nothing here is active, and begin starts from scratch anyway. */
    enum ot_err err = ag__rm_rf(ap.new_dir, NULL);
    if (!err)
        err = ag__rm_rf(ap.staging, NULL);
    (void)err;
    archive_paths_release(&ap);
}

struct tree_state {
    bool target, new_dir, old_dir;
};

static enum ot_err tree_state(const struct archive_paths *ap, struct tree_state *ts,
                              struct ot_diag *d)
{
    enum ot_err err = ag__exists(ap->target, &ts->target, d);
    if (!err)
        err = ag__exists(ap->new_dir, &ts->new_dir, d);
    if (!err)
        err = ag__exists(ap->old_dir, &ts->old_dir, d);
    return err;
}

/* The first activate: N must be complete (end ran), a stale O from an earlier deployment (whose
 * commit was cut short) is not ours to keep, and the marker records whether T exists. */
static enum ot_err start_activate(const struct archive_paths *ap, const struct ot_payload *p,
                                  struct ot_diag *d)
{
    struct tree_state ts;
    enum ot_err err = tree_state(ap, &ts, d);
    if (err)
        return err;
    if (!ts.new_dir)
        return ot_diag_set(d, OT_ERR_NOENT, "payload '%s': nothing extracted at %s", p->name,
                           ap->new_dir);
    if (ts.old_dir)
        err = ag__rm_rf(ap->old_dir, d);
    if (!err)
        err = ag__marker_write(ap->staging, ts.target ? AG_MARKER_EXISTED : AG_MARKER_ABSENT, d);
    return err;
}

static enum ot_err archive_activate(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                    struct ot_diag *d)
{
    _cleanup_(archive_paths_release) struct archive_paths ap;
    enum ot_err err = archive_paths(ctx, p, false, &ap, d);
    enum ag_marker m = AG_MARKER_NONE;
    struct tree_state ts = {0};
    if (!err)
        err = refuse_non_directory(ap.target, p, d);
    if (!err)
        err = ag__marker_read(ap.staging, &m, d);
    if (!err && m == AG_MARKER_NONE)
        err = start_activate(&ap, p, d);
    if (!err)
        err = tree_state(&ap, &ts, d);
    if (err)
        return err;
    if (!ts.new_dir && ts.target)
        return OT_OK; /* {O,T} or {T}: the swap is complete */
    if (!ts.new_dir)
        return ot_diag_set(d, OT_ERR_NOENT, "payload '%s': neither %s nor %s exists", p->name,
                           ap.new_dir, ap.target);
    if (ts.target && ts.old_dir)
        return ot_diag_set(d, OT_ERR_EXISTS,
                           "payload '%s': %s, %s and %s all exist; refusing to guess which is "
                           "which",
                           p->name, ap.target, ap.new_dir, ap.old_dir);
    if (ts.target)
        err = ag__rename(ap.target, ap.old_dir, d);
    if (!err)
        err = ag__rename(ap.new_dir, ap.target, d);
    return err;
}

static enum ot_err archive_commit(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                  struct ot_diag *d)
{
    _cleanup_(archive_paths_release) struct archive_paths ap;
    enum ot_err err = archive_paths(ctx, p, false, &ap, d);
    if (!err)
        err = ag__rm_rf(ap.old_dir, d);
    if (!err)
        err = ag__rm_rf(ap.new_dir, d); /* only there if activate never ran: nothing to keep */
    if (!err)
        err = ag__rm_rf(ap.staging, d);
    return err;
}

/* Moves the new tree out of T's place (atomically: T vanishes in one rename), for removal. */
static enum ot_err set_new_aside(const struct archive_paths *ap, bool new_exists,
                                 struct ot_diag *d)
{
    enum ot_err err = new_exists ? ag__rm_rf(ap->new_dir, d) : OT_OK;
    if (!err)
        err = ag__rename(ap->target, ap->new_dir, d);
    return err;
}

static enum ot_err archive_rollback(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                    struct ot_diag *d)
{
    _cleanup_(archive_paths_release) struct archive_paths ap;
    enum ot_err err = archive_paths(ctx, p, false, &ap, d);
    enum ag_marker m = AG_MARKER_NONE;
    struct tree_state ts = {0};
    if (!err)
        err = ag__marker_read(ap.staging, &m, d);
    if (!err)
        err = tree_state(&ap, &ts, d);
    if (err)
        return err;
    /* Without the marker activate never touched T or O. With it: an O is always the old tree,
     * so a T beside it is new; without O, T is new only if there was no T before. */
    if (m != AG_MARKER_NONE && ts.old_dir) {
        if (ts.target)
            err = set_new_aside(&ap, ts.new_dir, d);
        if (!err)
            err = ag__rename(ap.old_dir, ap.target, d);
    } else if (m == AG_MARKER_ABSENT && ts.target) {
        err = set_new_aside(&ap, ts.new_dir, d);
    }
    if (!err)
        err = ag__rm_rf(ap.new_dir, d);
    if (!err)
        err = ag__rm_rf(ap.staging, d); /* the marker last: a cut-short rollback runs again */
    return err;
}

const struct ag_handler_ops ag__handler_archive = {
    .type = "archive",
    .needs_reboot = false,
    .begin = archive_begin,
    .end = archive_end,
    .abort = archive_abort,
    .activate = archive_activate,
    .commit = archive_commit,
    .rollback = archive_rollback,
};
