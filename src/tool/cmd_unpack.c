/* otter unpack: verifies an artifact and extracts its payloads into a directory, all or nothing.
 *
 * Payloads stream into a temporary sibling directory ".DIR.tmp-XXXXXX" (same file system, so the
 * final rename is atomic); each file is fsync'ed when its payload is verified. Only when the whole
 * artifact has verified is the directory fsync'ed, renamed to DIR, and DIR's parent fsync'ed. On
 * any failure, or SIGINT/SIGTERM/SIGHUP, the temporary directory is removed and DIR is untouched:
 * nobody ever sees a DIR holding unverified bytes. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "otter/file.h"
#include "otter/path.h"
#include "tool.h"

const char tool_usage_unpack[] =
    "Usage: otter unpack --trust TRUST.json [--device-key DEV.key]... -C DIR ARTIFACT\n"
    "\n"
    "Verifies the artifact like 'otter verify' and writes each payload to DIR/<name>, and the\n"
    "signed manifest to DIR/manifest.json. DIR must not exist, or be an empty directory. Nothing\n"
    "appears in DIR unless every payload verified.\n"
    "\n"
    "  -t, --trust FILE        the trust file (otter trust)\n"
    "  -d, --device-key FILE   a secret device key for encrypted artifacts (repeatable)\n"
    "  -C, --directory DIR     where to put the payloads\n"
    "  -q, --quiet             print nothing\n"
    "  -h, --help              show this help\n";

struct unpack_opts {
    const char *trust;
    struct tool_strv device_keys;
    char *dir; /* without trailing slashes, owned */
    const char *artifact;
};

static void opts_release(struct unpack_opts *o)
{
    tool_strv_release(&o->device_keys);
    free(o->dir);
}

static int set_dir(struct tool_ctx *ctx, struct unpack_opts *o, const char *arg)
{
    size_t n = strlen(arg);
    while (n > 1 && arg[n - 1] == '/')
        n--;
    free(o->dir);
    o->dir = strndup(arg, n);
    if (!o->dir)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    if (n == 0 || strcmp(o->dir, "/") == 0 || strcmp(o->dir, ".") == 0 ||
        strcmp(o->dir, "..") == 0)
        return tool_usage_error(ctx, "-C '%s': give a new directory", arg);
    return TOOL_EXIT_OK;
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct unpack_opts *o)
{
    switch (c) {
    case 't':
        o->trust = optarg;
        return TOOL_EXIT_OK;
    case 'd':
        return tool_strv_push(&o->device_keys, optarg)
                   ? tool_failf(ctx, OT_ERR_NOMEM, "out of memory")
                   : TOOL_EXIT_OK;
    case 'C':
        return set_dir(ctx, o, optarg);
    case 'q':
        ctx->quiet = true;
        return TOOL_EXIT_OK;
    case 'h':
        return -1;
    default:
        return tool_bad_option(ctx, c, argv);
    }
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct unpack_opts *o)
{
    static const struct option longopts[] = {
        {"trust", required_argument, NULL, 't'},     {"device-key", required_argument, NULL, 'd'},
        {"directory", required_argument, NULL, 'C'}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},            {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":t:d:C:qh", longopts, NULL)) != -1)
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    if (!o->trust)
        return tool_usage_error(ctx, "missing --trust TRUST.json");
    if (!o->dir)
        return tool_usage_error(ctx, "missing -C DIR");
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing ARTIFACT" : "too many arguments");
    o->artifact = argv[optind];
    return TOOL_EXIT_OK;
}

/* ---- the destination ---- */

/* DIR must not exist or be an empty directory (checked before reading anything; the final
 * rename(2) checks again: it only replaces an empty directory). */
static enum ot_err check_dest(const char *dir, struct ot_diag *d)
{
    struct stat st;
    if (lstat(dir, &st) < 0)
        return errno == ENOENT ? OT_OK : ot_diag_errno(d, OT_ERR_IO, errno, "%s", dir);
    if (!S_ISDIR(st.st_mode))
        return ot_diag_set(d, OT_ERR_EXISTS, "%s exists and is not a directory", dir);
    DIR *dh = opendir(dir);
    if (!dh)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", dir);
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(dh)))
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(dh);
    return empty ? OT_OK
                 : ot_diag_set(d, OT_ERR_EXISTS, "%s exists and is not empty", dir);
}

struct unpack_run {
    const struct tool_ctx *ctx;
    const char *dir;
    char *tmp;          /* ".DIR.tmp-XXXXXX" next to DIR, owned */
    int tmpfd;          /* the temporary directory */
    int fd;             /* the payload being written, -1 between payloads */
    struct ot_sink *sink;
    size_t npayloads;
    uint64_t bytes;
};

static enum ot_err make_tmpdir(struct unpack_run *u, struct ot_diag *d)
{
    const char *slash = strrchr(u->dir, '/');
    int dirlen = slash ? (int)(slash - u->dir + 1) : 0;
    const char *base = slash ? slash + 1 : u->dir;
    if (asprintf(&u->tmp, "%.*s.%s.tmp-XXXXXX", dirlen, u->dir, base) < 0) {
        u->tmp = NULL;
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    if (!mkdtemp(u->tmp)) {
        enum ot_err err = ot_diag_errno(d, OT_ERR_IO, errno, "create a directory next to %s",
                                        u->dir);
        free(u->tmp);
        u->tmp = NULL;
        return err;
    }
    u->tmpfd = open(u->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (u->tmpfd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", u->tmp);
    /* mkdtemp makes it 0700; DIR should look like any directory the user makes. */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(u->tmpfd, 0777 & ~mask) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "chmod %s", u->tmp);
    return OT_OK;
}

static void close_payload(struct unpack_run *u)
{
    ot_sink_free(u->sink);
    u->sink = NULL;
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

/* The directory is flat (only files this run created), so removing it needs no recursion. */
static void remove_tmpdir(struct unpack_run *u)
{
    close_payload(u);
    if (u->tmpfd >= 0) {
        int fd = dup(u->tmpfd);
        DIR *dh = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *e;
        while (dh && (e = readdir(dh)))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(u->tmpfd, e->d_name, 0);
        if (dh)
            closedir(dh);
        else if (fd >= 0)
            close(fd);
        close(u->tmpfd);
        u->tmpfd = -1;
    }
    if (u->tmp)
        rmdir(u->tmp);
    free(u->tmp);
    u->tmp = NULL;
}

static enum ot_err create_file(struct unpack_run *u, const char *name, int *ret,
                               struct ot_diag *d)
{
    /* Names were validated by the manifest parser; checked again because this one touches the
     * file system. O_EXCL|O_NOFOLLOW: never follow or reuse anything already there. */
    if (!ot_name_is_safe(name, strlen(name)))
        return ot_diag_set(d, OT_ERR_FORMAT, "unsafe payload name '%s'", name);
    int fd = openat(u->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST)
        return ot_diag_set(d, OT_ERR_EXISTS, "payload name '%s' collides with another file in %s",
                           name, u->dir);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "create %s/%s", u->tmp, name);
    *ret = fd;
    return OT_OK;
}

static enum ot_err sync_close(struct unpack_run *u, const char *name, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    if (fsync(u->fd) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s/%s", u->tmp, name);
    if (close(u->fd) < 0 && !err)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "close %s/%s", u->tmp, name);
    u->fd = -1;
    return err;
}

/* ---- reader callbacks ---- */

static enum ot_err on_manifest(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                               size_t rawlen, const struct ot_sigset *sigs,
                               const struct ot_sig_report *report, struct ot_diag *d)
{
    struct unpack_run *u = userdata;
    enum ot_err err = create_file(u, OT_ARTIFACT_MANIFEST_NAME, &u->fd, d);
    if (!err)
        err = ot_write_all(u->fd, raw, rawlen, d);
    if (!err)
        err = sync_close(u, OT_ARTIFACT_MANIFEST_NAME, d);
    return err;
}

static enum ot_err on_payload_begin(void *userdata, const struct ot_payload *p, size_t index,
                                    struct ot_sink **ret_sink, struct ot_diag *d)
{
    struct unpack_run *u = userdata;
    enum ot_err err = create_file(u, p->name, &u->fd, d);
    if (err)
        return err;
    err = ot_sink_file_new(u->fd, &u->sink);
    if (err)
        return ot_diag_set(d, err, "out of memory");
    *ret_sink = u->sink;
    return OT_OK;
}

static enum ot_err on_payload_end(void *userdata, const struct ot_payload *p, size_t index,
                                  struct ot_diag *d)
{
    struct unpack_run *u = userdata;
    ot_sink_free(u->sink);
    u->sink = NULL;
    u->npayloads++;
    u->bytes += p->size;
    return sync_close(u, p->name, d);
}

/* Everything verified: make it durable, then make it visible under its name. */
static enum ot_err publish(struct unpack_run *u, struct ot_diag *d)
{
    if (fsync(u->tmpfd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s", u->tmp);
    if (rename(u->tmp, u->dir) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "rename %s to %s", u->tmp, u->dir);
    free(u->tmp);
    u->tmp = NULL;
    close(u->tmpfd);
    u->tmpfd = -1;
    return ot_fsync_parent(u->dir, d);
}

static enum ot_err unpack_fd(struct unpack_run *u, int fd, uint64_t size,
                             const struct ot_reader_opts *ropts, struct ot_diag *d)
{
    static const struct ot_reader_callbacks cb = {on_manifest, on_payload_begin, on_payload_end};
    _cleanup_(ot_artifact_reader_freep) struct ot_artifact_reader *r = NULL;
    enum ot_err err = ot_artifact_reader_new(ropts, &cb, u, &r);
    if (err)
        return ot_diag_set(d, err, "%s", ot_strerror(err));
    struct tool_progress p;
    tool_progress_init(&p, u->ctx, "unpack");
    err = tool_feed(r, fd, OT_ARTIFACT_IO_CHUNK, size, NULL, &p, d);
    tool_progress_clear(&p);
    if (err)
        return err;
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    err = publish(u, d);
    if (!err)
        tool_out(u->ctx, "unpacked %s %s into %s: %zu payloads, %llu bytes, and manifest.json\n",
                 m->name, m->version, u->dir, u->npayloads, (unsigned long long)u->bytes);
    return err;
}

static int unpack(struct tool_ctx *ctx, const struct unpack_opts *o,
                  const struct ot_reader_opts *ropts)
{
    struct ot_diag d = {0};
    _cleanup_close_ int fd = -1;
    uint64_t size;
    enum ot_err err = check_dest(o->dir, &d);
    if (!err)
        err = tool_open_artifact(o->artifact, &fd, &size, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);

    struct unpack_run u = {.ctx = ctx, .dir = o->dir, .tmpfd = -1, .fd = -1};
    tool_catch_signals();
    err = make_tmpdir(&u, &d);
    if (err) {
        remove_tmpdir(&u);
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    }
    err = unpack_fd(&u, fd, size, ropts, &d);
    remove_tmpdir(&u); /* after success only the fds are left to close */
    return err ? tool_fail(ctx, err, TOOL_SRC_ARTIFACT, &d) : TOOL_EXIT_OK;
}

int tool_cmd_unpack(struct tool_ctx *ctx, int argc, char **argv)
{
    _cleanup_(opts_release) struct unpack_opts o = {0};
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    struct ot_trust trust;
    _cleanup_(tool_keys_release) struct tool_keys keys = {0};
    rc = tool_load_verifier(ctx, o.trust, o.device_keys.v, o.device_keys.n, &trust, &keys);
    if (rc)
        return rc;
    struct ot_reader_opts ropts = {.trust = &trust, .device_keys = keys.v,
                                   .ndevice_keys = keys.n, .mode = OT_READ_DECODE};
    return unpack(ctx, &o, &ropts);
}
