/* The handler registry and what the handlers share (handler_internal.h). */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "handler_internal.h"
#include "otter/file.h"
#include "otter/log.h"
#include "otter/path.h"

/* ---- registry -------------------------------------------------------------------------------- */

static const struct ag_handler_ops *const builtins[] = {
    &ag__handler_raw,
    &ag__handler_file,
    &ag__handler_archive,
    &ag__handler_script,
};

static bool is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

const struct ag_handler_ops *ag_handler_find(const char *type, const char *modules_dir)
{
    if (!type)
        return NULL;
    for (size_t i = 0; i < OT_ARRAY_SIZE(builtins); i++)
        if (strcmp(builtins[i]->type, type) == 0)
            return builtins[i];
    /* The type becomes a file name: it must be one plain component. */
    if (!modules_dir || !ot_name_is_safe(type, strlen(type)))
        return NULL;
    _cleanup_free_ char *path = NULL;
    if (ot_path_join(modules_dir, type, &path) != OT_OK)
        return NULL;
    return is_executable_file(path) ? &ag__handler_module : NULL;
}

/* ---- paths ----------------------------------------------------------------------------------- */

bool ag__target_is_safe(const char *target)
{
    if (!target || target[0] != '/' || strlen(target) >= PATH_MAX)
        return false;
    const char *p = target + 1;
    for (;;) {
        size_t n = strcspn(p, "/");
        /* Empty covers "/", "//" and a trailing '/'. */
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!p[n])
            return true;
        p += n + 1;
    }
}

enum ot_err ag__target_path(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            const char *suffix, char **ret, struct ot_diag *d)
{
    if (!ag__target_is_safe(p->target))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': target '%s' is not an absolute, normalised path "
                           "(no '.', '..' or empty components)",
                           p->name, p->target ? p->target : "");
    const char *root = ctx->root ? ctx->root : "";
    size_t rl = strlen(root);
    while (rl > 0 && root[rl - 1] == '/')
        rl--;
    size_t n = rl + strlen(p->target) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (!s)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    snprintf(s, n, "%.*s%s%s", (int)rl, root, p->target, suffix);
    *ret = s;
    return OT_OK;
}

enum ot_err ag__join(const char *dir, const char *name, char **ret, struct ot_diag *d)
{
    if (ot_path_join(dir, name, ret) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    return OT_OK;
}

enum ot_err ag__staging_dir(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            bool create, char **ret, struct ot_diag *d)
{
    if (!p->name || !ot_name_is_safe(p->name, strlen(p->name)))
        return ot_diag_set(d, OT_ERR_INVALID, "payload name is not a safe file name");
    if (!ctx->work_dir || !ctx->work_dir[0])
        return ot_diag_set(d, OT_ERR_INVALID, "no work directory");
    _cleanup_free_ char *dir = NULL;
    enum ot_err err = ag__join(ctx->work_dir, p->name, &dir, d);
    if (!err && create)
        err = ag__mkdir_p(dir, 0700, d);
    if (err)
        return err;
    *ret = TAKE_PTR(dir);
    return OT_OK;
}

enum ot_err ag__drop_staging(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                             struct ot_diag *d)
{
    _cleanup_free_ char *dir = NULL;
    enum ot_err err = ag__staging_dir(ctx, p, false, &dir, d);
    if (!err)
        err = ag__rm_rf(dir, d);
    return err;
}

/* ---- file system ----------------------------------------------------------------------------- */

enum ot_err ag__exists(const char *path, bool *ret, struct ot_diag *d)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        *ret = true;
        return OT_OK;
    }
    if (errno != ENOENT && errno != ENOTDIR)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    *ret = false;
    return OT_OK;
}

static enum ot_err mkdir_one(const char *path, mode_t mode, struct ot_diag *d)
{
    if (mkdir(path, mode) == 0)
        return OT_OK;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return OT_OK;
    if (e == EEXIST)
        return ot_diag_set(d, OT_ERR_EXISTS, "%s: exists and is not a directory", path);
    return ot_diag_errno(d, OT_ERR_IO, e, "mkdir %s", path);
}

enum ot_err ag__mkdir_p(const char *path, mode_t mode, struct ot_diag *d)
{
    _cleanup_free_ char *buf = strdup(path);
    if (!buf)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    /* Each prefix ending before a '/' (skipping the leading one), then the whole path. */
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/' || s[-1] == '/')
            continue;
        *s = '\0';
        enum ot_err err = mkdir_one(buf, 0755, d);
        *s = '/';
        if (err)
            return err;
    }
    return mkdir_one(buf, mode, d);
}

static enum ot_err rm_at(int dirfd, const char *name, const char *top, unsigned depth,
                         struct ot_diag *d);

/* Empties the directory open at fd. Entries are removed while the directory is read; a second
 * pass catches any that readdir skipped because of that (unspecified by POSIX). */
static enum ot_err rm_contents(int fd, const char *top, unsigned depth, struct ot_diag *d)
{
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return ot_diag_errno(d, OT_ERR_IO, e, "open directory in %s", top);
    }
    enum ot_err err = OT_OK;
    for (int pass = 0; !err && pass < 2; pass++) {
        rewinddir(dir);
        struct dirent *de;
        while (!err && (de = readdir(dir))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            err = rm_at(dirfd(dir), de->d_name, top, depth + 1, d);
        }
    }
    closedir(dir);
    return err;
}

static enum ot_err rm_at(int dirfd, const char *name, const char *top, unsigned depth,
                         struct ot_diag *d)
{
    if (depth > AG_TREE_DEPTH_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: nested deeper than %d", top, AG_TREE_DEPTH_MAX);
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return OT_OK;
    if (errno != EISDIR && errno != EPERM)
        return ot_diag_errno(d, OT_ERR_IO, errno, "remove %s (in %s)", name, top);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "remove %s (in %s)", name, top);
    enum ot_err err = rm_contents(fd, top, depth, d);
    if (err)
        return err;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return ot_diag_errno(d, OT_ERR_IO, errno, "remove directory %s (in %s)", name, top);
    return OT_OK;
}

enum ot_err ag__rm_rf(const char *path, struct ot_diag *d)
{
    return rm_at(AT_FDCWD, path, path, 0, d);
}

static enum ot_err fsync_at(int dirfd, const char *name, const char *top, unsigned depth,
                            struct ot_diag *d);

static enum ot_err fsync_dir_fd(int fd, const char *top, unsigned depth, struct ot_diag *d)
{
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return ot_diag_errno(d, OT_ERR_IO, e, "open directory in %s", top);
    }
    enum ot_err err = OT_OK;
    struct dirent *de;
    while (!err && (de = readdir(dir))) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            err = fsync_at(dirfd(dir), de->d_name, top, depth + 1, d);
    }
    /* The directory last: its entries name files whose data is on disk by now. */
    if (!err && fsync(dirfd(dir)) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "fsync directory in %s", top);
    closedir(dir);
    return err;
}

static enum ot_err fsync_at(int dirfd, const char *name, const char *top, unsigned depth,
                            struct ot_diag *d)
{
    if (depth > AG_TREE_DEPTH_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: nested deeper than %d", top, AG_TREE_DEPTH_MAX);
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "stat %s (in %s)", name, top);
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return OT_OK; /* a symlink's target name is written with the directory entry */
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s (in %s)", name, top);
    if (S_ISDIR(st.st_mode))
        return fsync_dir_fd(fd, top, depth, d);
    enum ot_err err = OT_OK;
    if (fsync(fd) < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s (in %s)", name, top);
    close(fd);
    return err;
}

enum ot_err ag__fsync_tree(const char *path, struct ot_diag *d)
{
    return fsync_at(AT_FDCWD, path, path, 0, d);
}

enum ot_err ag__fsync_file(const char *path, struct ot_diag *d)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", path);
    if (fsync(fd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "fsync %s", path);
    return ot_fsync_parent(path, d);
}

enum ot_err ag__rename(const char *from, const char *to, struct ot_diag *d)
{
    if (rename(from, to) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "rename %s to %s", from, to);
    return ot_fsync_parent(to, d);
}

static enum ot_err copy_fd(int in, int out, const char *src, struct ot_diag *d)
{
    uint8_t chunk[65536];
    for (;;) {
        size_t n;
        enum ot_err err = ot_read_full(in, chunk, sizeof(chunk), &n, d);
        if (!err && n)
            err = ot_write_all(out, chunk, n, d);
        if (err)
            return ot_diag_prefix(d, err, "copy %s", src);
        if (n < sizeof(chunk))
            return OT_OK;
    }
}

enum ot_err ag__copy_file(const char *src, const char *dst, mode_t mode, struct ot_diag *d)
{
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", src);
    struct ot_atomic_file f;
    enum ot_err err = ot_atomic_file_open(&f, dst, mode, d);
    if (err)
        return err;
    err = copy_fd(in, f.fd, src, d);
    if (err) {
        ot_atomic_file_abort(&f);
        return err;
    }
    return ot_atomic_file_commit(&f, d);
}

enum ot_err ag__file_sha256(const char *path, uint8_t digest[OT_SHA256_LEN], struct ot_diag *d)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "open %s", path);
    struct ot_sha256 h = {0};
    if (ot_sha256_init(&h) != OT_OK)
        return ot_diag_set(d, OT_ERR_CRYPTO, "SHA-256 init failed");
    uint8_t chunk[65536];
    for (;;) {
        size_t n;
        enum ot_err err = ot_read_full(fd, chunk, sizeof(chunk), &n, d);
        if (err) {
            ot_sha256_release(&h);
            return ot_diag_prefix(d, err, "%s", path);
        }
        ot_sha256_update(&h, chunk, n);
        if (n < sizeof(chunk))
            break;
    }
    ot_sha256_final(&h, digest);
    ot_sha256_release(&h);
    return OT_OK;
}

/* ---- the activate marker --------------------------------------------------------------------- */

static const char *const marker_text[] = {
    [AG_MARKER_EXISTED] = "existed\n",
    [AG_MARKER_ABSENT] = "absent\n",
    [AG_MARKER_STARTED] = "started\n",
};

enum ot_err ag__marker_read(const char *staging, enum ag_marker *ret, struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    enum ot_err err = ag__join(staging, AG_MARKER_ACTIVATED, &path, d);
    if (err)
        return err;
    struct ot_buf b;
    ot_buf_init(&b, 64);
    err = ot_file_read(path, &b, d);
    if (err == OT_ERR_NOENT) {
        ot_buf_release(&b);
        ot_diag_clear(d);
        *ret = AG_MARKER_NONE;
        return OT_OK;
    }
    *ret = AG_MARKER_NONE;
    for (size_t i = AG_MARKER_EXISTED; !err && i < OT_ARRAY_SIZE(marker_text); i++)
        if (strcmp(ot_buf_str(&b), marker_text[i]) == 0)
            *ret = (enum ag_marker)i;
    if (!err && *ret == AG_MARKER_NONE)
        err = ot_diag_set(d, OT_ERR_FORMAT, "%s: unexpected content", path);
    ot_buf_release(&b);
    return err;
}

enum ot_err ag__marker_write(const char *staging, enum ag_marker m, struct ot_diag *d)
{
    if (m == AG_MARKER_NONE || (size_t)m >= OT_ARRAY_SIZE(marker_text))
        return ot_diag_set(d, OT_ERR_INTERNAL, "invalid marker");
    _cleanup_free_ char *path = NULL;
    enum ot_err err = ag__join(staging, AG_MARKER_ACTIVATED, &path, d);
    if (err)
        return err;
    return ot_file_write_atomic(path, marker_text[m], strlen(marker_text[m]), 0600, d);
}

/* ---- arguments ------------------------------------------------------------------------------- */

const char *ag__arg(const struct ot_payload *p, const char *key)
{
    for (size_t i = 0; i < p->nargs; i++)
        if (strcmp(p->args[i].key, key) == 0)
            return p->args[i].value;
    return NULL;
}

enum ot_err ag__args_only(const struct ot_payload *p, const char *const *allowed,
                          struct ot_diag *d)
{
    for (size_t i = 0; i < p->nargs; i++) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, p->args[i].key) == 0;
        if (!ok)
            return ot_diag_set(d, OT_ERR_INVALID, "payload '%s': unknown %s argument '%s'",
                               p->name, p->type, p->args[i].key);
    }
    return OT_OK;
}

/* ---- sinks ----------------------------------------------------------------------------------- */

struct fd_sink {
    struct ot_sink base;
    struct ot_sink *inner; /* core's file sink: write-behind so the final fsync is short */
    int fd;
    uint64_t limit, written;
    char *what;
};

static enum ot_err fd_sink_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct fd_sink *f = (struct fd_sink *)s;
    if (n > f->limit - f->written)
        return ot_diag_set(d, OT_ERR_NOSPC, "%s: more than the %llu bytes that fit", f->what,
                           (unsigned long long)f->limit);
    enum ot_err err = ot_sink_write(f->inner, p, n, d);
    if (err)
        return ot_diag_prefix(d, err, "%s", f->what);
    f->written += n;
    return OT_OK;
}

static enum ot_err fd_sink_finish(struct ot_sink *s, struct ot_diag *d)
{
    struct fd_sink *f = (struct fd_sink *)s;
    return ot_sink_finish(f->inner, d);
}

static void fd_sink_free(struct ot_sink *s)
{
    struct fd_sink *f = (struct fd_sink *)s;
    ot_sink_free(f->inner);
    if (f->fd >= 0)
        close(f->fd);
    free(f->what);
    free(f);
}

enum ot_err ag__fd_sink_new(int fd, uint64_t limit, const char *what, struct ot_sink **ret,
                            struct ot_diag *d)
{
    struct fd_sink *f = calloc(1, sizeof(*f));
    if (!f || !(f->what = strdup(what))) {
        free(f);
        close(fd);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    f->base = (struct ot_sink){fd_sink_write, fd_sink_finish, fd_sink_free};
    f->fd = fd;
    f->limit = limit;
    if (ot_sink_file_new(fd, &f->inner) != OT_OK) {
        fd_sink_free(&f->base);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    *ret = &f->base;
    return OT_OK;
}

enum ot_err ag__staged_sink_new(const char *path, mode_t mode, struct ot_sink **ret,
                                struct ot_diag *d)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "create %s", path);
    if (fchmod(fd, mode) < 0) { /* exactly the requested bits, whatever the umask */
        int e = errno;
        close(fd);
        return ot_diag_errno(d, OT_ERR_IO, e, "chmod %s", path);
    }
    return ag__fd_sink_new(fd, UINT64_MAX, path, ret, d);
}

/* ---- running programs ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Keeps the last AG_RUN_OUTPUT_MAX bytes: out is a sliding window, moved down when full. */
static void keep_output(struct ag_run_result *r, const char *p, size_t n)
{
    if (n >= AG_RUN_OUTPUT_MAX) {
        r->out_cut |= r->out_len > 0 || n > AG_RUN_OUTPUT_MAX;
        memcpy(r->out, p + n - AG_RUN_OUTPUT_MAX, AG_RUN_OUTPUT_MAX);
        r->out_len = AG_RUN_OUTPUT_MAX;
    } else {
        size_t drop = r->out_len + n > AG_RUN_OUTPUT_MAX ? r->out_len + n - AG_RUN_OUTPUT_MAX : 0;
        if (drop) {
            memmove(r->out, r->out + drop, r->out_len - drop);
            r->out_len -= drop;
            r->out_cut = true;
        }
        memcpy(r->out + r->out_len, p, n);
        r->out_len += n;
    }
    r->out[r->out_len] = '\0';
}

/* Reads what is there; false at end of file (or error: the output is best effort). */
static bool read_output(int fd, struct ag_run_result *r)
{
    char chunk[4096];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n > 0) {
            keep_output(r, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && errno == EAGAIN;
    }
}

/* In the child, between fork and exec: only async-signal-safe calls. An exec failure is reported
 * through errfd (close-on-exec, so the parent reads EOF when exec succeeds). */
static _Noreturn void child(const char *const argv[], char *const envp[], const char *cwd,
                            int outfd, int errfd)
{
    int e = 0;
    sigset_t none;
    sigemptyset(&none);
    /* The agent's loop may block or ignore signals; a program expects the defaults. */
    sigprocmask(SIG_SETMASK, &none, NULL);
    static const int sigs[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,
                               SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < OT_ARRAY_SIZE(sigs); i++)
        signal(sigs[i], SIG_DFL);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (setpgid(0, 0) < 0 || null < 0 || dup2(null, 0) < 0 || dup2(outfd, 1) < 0 ||
        dup2(outfd, 2) < 0 || chdir(cwd) < 0)
        e = errno;
    if (null == 0)
        fcntl(0, F_SETFD, 0); /* dup2 onto itself keeps O_CLOEXEC */
    if (!e) {
        if (envp)
            execve(argv[0], (char *const *)argv, envp);
        else
            execv(argv[0], (char *const *)argv);
        e = errno;
    }
    ssize_t w = write(errfd, &e, sizeof(e));
    (void)w;
    _exit(127);
}

static enum ot_err start(const char *const argv[], char *const envp[], const char *cwd,
                         pid_t *ret_pid, int *ret_out, struct ot_diag *d)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "pipe");
    if (pipe2(err, O_CLOEXEC) < 0) {
        int e = errno;
        close(out[0]);
        close(out[1]);
        return ot_diag_errno(d, OT_ERR_IO, e, "pipe");
    }
    pid_t pid = fork();
    if (pid == 0)
        child(argv, envp, cwd, out[1], err[1]);
    int fork_errno = errno;
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(out[0]);
        close(err[0]);
        return ot_diag_errno(d, OT_ERR_IO, fork_errno, "fork");
    }
    setpgid(pid, pid); /* also in the parent, so a kill right after fork reaches the group */
    int child_errno = 0;
    ssize_t n;
    while ((n = read(err[0], &child_errno, sizeof(child_errno))) < 0 && errno == EINTR) {
    }
    close(err[0]);
    if (n == (ssize_t)sizeof(child_errno)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        close(out[0]);
        return ot_diag_errno(d, OT_ERR_IO, child_errno, "cannot run %s (in %s)", argv[0], cwd);
    }
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    *ret_pid = pid;
    *ret_out = out[0];
    return OT_OK;
}

/* Waits until pid has ended (without reaping it, so its process group id stays reserved for a
 * kill) or deadline (ms, monotonic), collecting output. True when it ended. */
static bool wait_until(pid_t pid, int *outfd, int64_t deadline, struct ag_run_result *r)
{
    for (;;) {
        siginfo_t si = {0};
        int rc = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if ((rc == 0 && si.si_pid == pid) || (rc < 0 && errno != EINTR))
            return true;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return false;
        if (*outfd < 0) {
            sleep_ms(OT_MIN(left, 20));
            continue;
        }
        struct pollfd pfd = {.fd = *outfd, .events = POLLIN};
        if (poll(&pfd, 1, (int)OT_MIN(left, 50)) > 0 && !read_output(*outfd, r)) {
            close(*outfd); /* end of output: everything holding the pipe closed it */
            *outfd = -1;
        }
    }
}

enum ot_err ag__run(const char *const argv[], const char *cwd, unsigned timeout_s,
                    struct ag_run_result *r, struct ot_diag *d)
{
    return ag__run_env(argv, NULL, cwd, timeout_s, r, d);
}

enum ot_err ag__run_env(const char *const argv[], char *const envp[], const char *cwd,
                        unsigned timeout_s, struct ag_run_result *r, struct ot_diag *d)
{
    *r = (struct ag_run_result){0};
    pid_t pid = -1;
    int outfd = -1;
    enum ot_err err = start(argv, envp, cwd, &pid, &outfd, d);
    if (err)
        return err;
    if (!wait_until(pid, &outfd, now_ms() + (int64_t)timeout_s * 1000, r)) {
        r->timed_out = true;
        kill(-pid, SIGTERM);
        wait_until(pid, &outfd, now_ms() + AG_RUN_KILL_GRACE_MS, r);
        /* The whole group, whether or not the leader obeyed SIGTERM: what a timed-out step left
         * running must not carry on beside the next step. The leader is not reaped yet, so the
         * group id cannot have been reused. */
        kill(-pid, SIGKILL);
    }
    pid_t w;
    while ((w = waitpid(pid, &r->status, 0)) < 0 && errno == EINTR) {
    }
    int wait_errno = errno;
    if (outfd >= 0) {
        read_output(outfd, r);
        close(outfd);
    }
    /* With SIGCHLD ignored the kernel reaps children itself and the status is lost: never take
     * that for success. */
    if (w != pid)
        return ot_diag_errno(d, OT_ERR_INTERNAL, wait_errno, "%s: exit status unknown", argv[0]);
    if (r->timed_out)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: timed out after %u s, killed", argv[0],
                           timeout_s);
    return OT_OK;
}

/* The tail of the output that fits in room bytes, from a line start where possible, without
 * trailing blank lines. */
static const char *output_tail(const struct ag_run_result *r, size_t room, int *ret_len)
{
    const char *s = r->out;
    size_t len = r->out_len;
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' ' || s[len - 1] == '\r'))
        len--;
    const char *t = s;
    if (len > room) {
        t = s + len - room;
        const char *nl = memchr(t, '\n', room / 2);
        if (nl)
            t = nl + 1;
    }
    *ret_len = (int)(s + len - t);
    return t;
}

/* Program output in the log, one line per message, control characters made visible. */
static void log_output(const struct ag_run_result *r, const char *what)
{
    const char *p = r->out;
    while (*p) {
        size_t n = strcspn(p, "\n");
        char line[256];
        size_t o = 0;
        for (size_t i = 0; i < n && o + 5 < sizeof(line); i++) {
            unsigned char c = (unsigned char)p[i];
            if (c >= 0x20 && c != 0x7f)
                line[o++] = (char)c;
            else
                o += (size_t)snprintf(line + o, sizeof(line) - o, "\\x%02x", c);
        }
        line[o] = '\0';
        if (o)
            ot_log(OT_LOG_INFO, "%s: %s", what, line);
        p += n + (p[n] == '\n');
    }
}

enum ot_err ag__run_verdict(enum ot_err run_err, const struct ag_run_result *r, const char *what,
                            struct ot_diag *d)
{
    log_output(r, what);
    char how[64];
    if (run_err == OT_ERR_LIMIT && r->timed_out)
        snprintf(how, sizeof(how), "timed out and was killed");
    else if (run_err)
        return ot_diag_prefix(d, run_err, "%s", what);
    else if (WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0)
        return OT_OK;
    else if (WIFEXITED(r->status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(r->status));
    else if (WIFSIGNALED(r->status))
        snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(r->status));
    else
        snprintf(how, sizeof(how), "ended with wait status 0x%x", (unsigned)r->status);
    /* The message has room for the last few lines, which usually say why. */
    size_t used = strlen(what) + strlen(how) + 8;
    size_t room = used < OT_DIAG_MSG_MAX - 64 ? OT_DIAG_MSG_MAX - 1 - used : 64;
    int tlen;
    const char *tail = output_tail(r, room, &tlen);
    return ot_diag_set(d, run_err ? run_err : OT_ERR_INVALID, "%s: %s%s%.*s", what, how,
                       tlen ? ": " : "", tlen, tail);
}
