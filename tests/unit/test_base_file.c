/* Atomic file replacement and whole-file reads, on a real file system in a private temp dir. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "otter/file.h"

static char dir[] = "/tmp/otter-test-file-XXXXXX";

static char *in_dir(const char *name)
{
    static char p[4][512];
    static int next;
    char *out = p[next++ % 4];
    snprintf(out, sizeof(p[0]), "%s/%s", dir, name);
    return out;
}

/* Number of entries in the test dir (besides . and ..), and whether any is a temp file. */
static int count_entries(bool *has_tmp)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    *has_tmp = false;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        if (strstr(de->d_name, ".tmp-"))
            *has_tmp = true;
    }
    closedir(d);
    return n;
}

static void assert_content(const char *path, const char *want)
{
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    assert_int_equal(ot_file_read(path, &b, NULL), OT_OK);
    assert_int_equal(b.len, strlen(want));
    assert_string_equal(ot_buf_str(&b), want);
    ot_buf_release(&b);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' || strstr(de->d_name, ".tmp-"))
            unlink(in_dir(de->d_name));
    if (d)
        closedir(d);
    rmdir(in_dir("sub"));
    return rmdir(dir);
}

static void test_write_new_and_replace(void **state)
{
    (void)state;
    const char *p = in_dir("state.json");
    bool tmp;
    assert_int_equal(ot_file_write_atomic(p, "first\n", 6, 0644, NULL), OT_OK);
    assert_content(p, "first\n");
    assert_int_equal(ot_file_write_atomic(p, "second, longer\n", 15, 0644, NULL), OT_OK);
    assert_content(p, "second, longer\n");
    assert_int_equal(ot_file_write_atomic(p, "", 0, 0644, NULL), OT_OK);
    assert_content(p, "");
    assert_int_equal(count_entries(&tmp), 1); /* no temp file left behind */
    assert_false(tmp);
    unlink(p);
}

static void test_mode_is_honoured(void **state)
{
    (void)state;
    static const mode_t modes[] = {0600, 0644, 0640, 0400};
    mode_t old = umask(077); /* the requested mode wins over the umask */
    for (size_t i = 0; i < OT_ARRAY_SIZE(modes); i++) {
        const char *p = in_dir("secret.key");
        struct stat st;
        assert_int_equal(ot_file_write_atomic(p, "k", 1, modes[i], NULL), OT_OK);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, modes[i]);
        unlink(p);
    }
    umask(old);
}

static void test_abort_leaves_target(void **state)
{
    (void)state;
    const char *p = in_dir("keep");
    struct ot_atomic_file f;
    bool tmp;
    assert_int_equal(ot_file_write_atomic(p, "old", 3, 0644, NULL), OT_OK);
    assert_int_equal(ot_atomic_file_open(&f, p, 0644, NULL), OT_OK);
    assert_true(f.fd >= 0);
    assert_true(fcntl(f.fd, F_GETFD) & FD_CLOEXEC);
    /* The content being written has no name yet (O_TMPFILE): nothing to see, nothing to leak. */
    assert_null(f.tmp_path);
    assert_int_equal(ot_write_all(f.fd, "new content", 11, NULL), OT_OK);
    assert_int_equal(count_entries(&tmp), 1);
    assert_false(tmp);
    ot_atomic_file_abort(&f);
    assert_int_equal(f.fd, -1);
    assert_null(f.tmp_path);
    assert_null(f.path);
    ot_atomic_file_abort(&f); /* twice is fine */
    assert_content(p, "old");
    assert_int_equal(count_entries(&tmp), 1);
    assert_false(tmp);
    struct ot_diag d = {0};
    assert_int_equal(ot_atomic_file_commit(&f, &d), OT_ERR_INVALID); /* nothing open */
    unlink(p);
}

/* A process killed between open and commit leaves the old content and no temp file. */
static void test_killed_writer_leaves_nothing(void **state)
{
    (void)state;
    const char *p = in_dir("k");
    bool tmp;
    assert_int_equal(ot_file_write_atomic(p, "old", 3, 0644, NULL), OT_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ot_atomic_file f;
        if (ot_atomic_file_open(&f, p, 0644, NULL) != OT_OK ||
            ot_write_all(f.fd, "half-writ", 9, NULL) != OT_OK)
            _exit(2);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_content(p, "old");
    assert_int_equal(count_entries(&tmp), 1);
    assert_false(tmp);
    unlink(p);
}

static void test_commit_new(void **state)
{
    (void)state;
    const char *p = in_dir("n");
    struct ot_atomic_file f;
    struct ot_diag d = {0};
    bool tmp;
    assert_int_equal(ot_atomic_file_open(&f, p, 0600, NULL), OT_OK);
    assert_int_equal(ot_write_all(f.fd, "first", 5, NULL), OT_OK);
    assert_int_equal(ot_atomic_file_commit_new(&f, &d), OT_OK);
    assert_content(p, "first");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* A second writer must not replace it. */
    assert_int_equal(ot_atomic_file_open(&f, p, 0600, NULL), OT_OK);
    assert_int_equal(ot_write_all(f.fd, "second", 6, NULL), OT_OK);
    assert_int_equal(ot_atomic_file_commit_new(&f, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "already exists"));
    assert_content(p, "first");
    assert_int_equal(count_entries(&tmp), 1);
    assert_false(tmp);
    unlink(p);
}

static void test_commit_then_abort(void **state)
{
    (void)state;
    const char *p = in_dir("c");
    struct ot_atomic_file f;
    bool tmp;
    assert_int_equal(ot_atomic_file_open(&f, p, 0600, NULL), OT_OK);
    assert_int_equal(ot_write_all(f.fd, "data", 4, NULL), OT_OK);
    assert_int_equal(ot_atomic_file_commit(&f, NULL), OT_OK);
    assert_int_equal(f.fd, -1);
    ot_atomic_file_abort(&f); /* safe after commit, does not remove the target */
    assert_content(p, "data");
    assert_int_equal(count_entries(&tmp), 1);
    assert_false(tmp);
    unlink(p);
}

static void test_missing_directory(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    struct ot_atomic_file f;
    bool tmp;
    assert_int_equal(ot_file_write_atomic(in_dir("nodir/x"), "a", 1, 0644, &d), OT_ERR_NOENT);
    assert_int_equal(d.sys_errno, ENOENT);
    assert_non_null(strstr(d.msg, "nodir/x"));
    assert_int_equal(count_entries(&tmp), 0);

    /* the directory disappears between open and commit: commit fails and cleans up */
    const char *sub = in_dir("sub");
    char target[600];
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(target, sizeof(target), "%s/file", sub);
    assert_int_equal(ot_atomic_file_open(&f, target, 0644, &d), OT_OK);
    assert_int_equal(ot_write_all(f.fd, "x", 1, &d), OT_OK);
    assert_int_equal(rmdir(sub), 0); /* empty: the temp file has no name */
    assert_int_equal(ot_atomic_file_commit(&f, &d), OT_ERR_NOENT);
    assert_null(f.tmp_path);
    assert_null(f.path);
    assert_int_equal(f.fd, -1);
    assert_int_equal(count_entries(&tmp), 0);

    assert_int_equal(ot_atomic_file_open(&f, "/", 0644, &d), OT_ERR_INVALID);
    assert_int_equal(ot_atomic_file_open(&f, in_dir(""), 0644, &d), OT_ERR_INVALID);
}

static void test_read(void **state)
{
    (void)state;
    struct ot_buf b;
    struct ot_diag d = {0};
    const char *p = in_dir("r");
    size_t n = 100000;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(ot_file_write_atomic(p, data, n, 0644, NULL), OT_OK);
    ot_buf_init(&b, n);
    assert_int_equal(ot_buf_append_str(&b, "stale"), OT_OK);
    assert_int_equal(ot_file_read(p, &b, &d), OT_OK); /* exactly at the limit, replaces */
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, data, n);
    ot_buf_release(&b);
    ot_buf_init(&b, n - 1);
    assert_int_equal(ot_file_read(p, &b, &d), OT_ERR_LIMIT);
    assert_non_null(strstr(d.msg, "larger than 99999 bytes"));
    ot_buf_release(&b);
    assert_int_equal(ot_file_read(in_dir("missing"), &b, &d), OT_ERR_NOENT);
    assert_int_equal(d.sys_errno, ENOENT);
    assert_int_equal(ot_file_read(dir, &b, &d), OT_ERR_IO); /* a directory: EISDIR */
    assert_int_equal(d.sys_errno, EISDIR);
    ot_buf_release(&b);
    unlink(p);
    free(data);
}

static void test_write_all_read_full(void **state)
{
    (void)state;
    int fds[2];
    size_t got = 99;
    char buf[16];
    struct ot_diag d = {0};
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(ot_write_all(fds[1], "hello", 5, &d), OT_OK);
    assert_int_equal(ot_write_all(fds[1], "", 0, &d), OT_OK);
    close(fds[1]);
    assert_int_equal(ot_read_full(fds[0], buf, sizeof(buf), &got, &d), OT_OK);
    assert_int_equal(got, 5); /* short only at end of file */
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(ot_read_full(fds[0], buf, sizeof(buf), &got, &d), OT_OK);
    assert_int_equal(got, 0);
    close(fds[0]);
    assert_int_equal(ot_write_all(fds[1], "x", 1, &d), OT_ERR_IO); /* closed fd: EBADF */
    assert_int_equal(d.sys_errno, EBADF);
    assert_int_equal(ot_read_full(fds[0], buf, 1, &got, &d), OT_ERR_IO);
}

static void test_fsync_parent(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    const char *p = in_dir("f");
    assert_int_equal(ot_file_write_atomic(p, "x", 1, 0644, NULL), OT_OK);
    assert_int_equal(ot_fsync_parent(p, &d), OT_OK);
    assert_int_equal(ot_fsync_parent(dir, &d), OT_OK);
    assert_int_equal(ot_fsync_parent(in_dir("nodir/x"), &d), OT_ERR_NOENT);
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_new_and_replace), cmocka_unit_test(test_mode_is_honoured),
        cmocka_unit_test(test_abort_leaves_target),   cmocka_unit_test(test_commit_then_abort),
        cmocka_unit_test(test_killed_writer_leaves_nothing), cmocka_unit_test(test_commit_new),
        cmocka_unit_test(test_missing_directory),     cmocka_unit_test(test_read),
        cmocka_unit_test(test_write_all_read_full),   cmocka_unit_test(test_fsync_parent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
