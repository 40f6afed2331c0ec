/* Install handlers against a real file system in a temp dir (ctx->root stands for "/"), with real
 * programs for scripts and update modules (/bin/sh). Each handler goes through its whole life,
 * and through every state a power cut can leave inside activate: activate must finish from there
 * and rollback must restore exactly what was there before. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "handler_internal.h"
#include "otter/file.h"
#include "otter/log.h"
#include "otter/tar.h"

struct fixture {
    char dir[64];
    char root[96], work[96], modules[96], slot[96];
    struct ag_install_ctx ctx;
    struct ot_manifest m;
};

#define PATHF(buf, ...) snprintf((buf), sizeof(buf), __VA_ARGS__)

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    PATHF(f->dir, "/tmp/otter-handlers-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    PATHF(f->root, "%s/root", f->dir);
    PATHF(f->work, "%s/work", f->dir);
    PATHF(f->modules, "%s/modules", f->dir);
    PATHF(f->slot, "%s/slot-b.img", f->dir);
    assert_int_equal(mkdir(f->root, 0755), 0);
    assert_int_equal(mkdir(f->work, 0700), 0);
    assert_int_equal(mkdir(f->modules, 0755), 0);
    f->ctx = (struct ag_install_ctx){
        .work_dir = f->work, .slot_path = f->slot, .modules_dir = f->modules, .root = f->root};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    PATHF(cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    ot_manifest_release(&f->m);
    free(f);
    return 0;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* A payload of the fixture's manifest (valid until the next one is added). */
static struct ot_payload *payload(struct fixture *f, const char *name, const char *type,
                                  const char *target, const void *data, size_t len)
{
    struct ot_payload *p;
    assert_int_equal(ot_manifest_add_payload(&f->m, &p), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->name, name), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->type, type), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->target, target), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->version, "2.0"), OT_OK);
    p->size = len;
    assert_int_equal(ot_sha256_buf(data, len, p->sha256), OT_OK);
    return p;
}

/* begin, the bytes in pieces, finish, end: what the engine does for a verified payload. */
static enum ot_err stream(const struct ag_handler_ops *ops, struct fixture *f,
                          const struct ot_payload *p, const void *data, size_t len,
                          struct ot_diag *d)
{
    struct ot_sink *s = NULL;
    enum ot_err err = ops->begin(&f->ctx, p, &s, d);
    for (size_t off = 0; !err && off < len; off += 1000)
        err = ot_sink_write(s, (const uint8_t *)data + off, OT_MIN(1000, len - off), d);
    if (!err)
        err = ot_sink_finish(s, d);
    ot_sink_free(s);
    if (!err)
        err = ops->end(&f->ctx, p, d);
    return err;
}

static void put_file(const char *path, const char *content, mode_t mode)
{
    assert_int_equal(ot_file_write_atomic(path, content, strlen(content), mode, NULL), OT_OK);
}

static void put_dir(const char *path)
{
    assert_int_equal(ag__mkdir_p(path, 0755, NULL), OT_OK);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void assert_content(const char *path, const void *want, size_t len)
{
    struct ot_buf b;
    ot_buf_init(&b, 16 << 20);
    struct ot_diag d = {0};
    if (ot_file_read(path, &b, &d) != OT_OK)
        fail_msg("%s", d.msg);
    assert_int_equal(b.len, len);
    if (len)
        assert_memory_equal(b.data, want, len);
    ot_buf_release(&b);
}

static void assert_text(const char *path, const char *want)
{
    assert_content(path, want, strlen(want));
}

static void assert_ok(enum ot_err err, const struct ot_diag *d)
{
    if (err != OT_OK)
        fail_msg("%s: %s", ot_err_name(err), d->msg);
}

static void staging_path(struct fixture *f, const char *name, const char *file, char *out,
                         size_t n)
{
    snprintf(out, n, "%s/%s%s%s", f->ctx.work_dir, name, file ? "/" : "", file ? file : "");
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* Regular files below dir, counted (symlinks and other types count too: there should be none). */
static int count_files(const char *dir)
{
    DIR *dd = opendir(dir);
    assert_non_null(dd);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dd))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char sub[512];
        PATHF(sub, "%s/%s", dir, de->d_name);
        struct stat st;
        assert_int_equal(lstat(sub, &st), 0);
        n += S_ISDIR(st.st_mode) ? count_files(sub) : 1;
    }
    closedir(dd);
    return n;
}

static void quiet_log(enum ot_log_level level, const char *msg, void *userdata)
{
    (void)level;
    (void)msg;
    (void)userdata;
}

/* ---- registry and shared helpers ------------------------------------------------------------- */

static void test_find(void **state)
{
    struct fixture *f = *state;
    static const char *const builtin[] = {"raw", "file", "archive", "script"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(builtin); i++) {
        const struct ag_handler_ops *h = ag_handler_find(builtin[i], f->modules);
        assert_non_null(h);
        assert_string_equal(h->type, builtin[i]);
    }
    assert_true(ag_handler_find("raw", NULL)->needs_reboot);
    assert_false(ag_handler_find("file", NULL)->needs_reboot);
    assert_null(ag_handler_find(NULL, f->modules));
    assert_null(ag_handler_find("docker", f->modules)); /* no such module */
    assert_null(ag_handler_find("docker", NULL));
    char path[256];
    PATHF(path, "%s/docker", f->modules);
    put_file(path, "#!/bin/sh\n", 0755);
    const struct ag_handler_ops *h = ag_handler_find("docker", f->modules);
    assert_non_null(h);
    assert_null(h->type);
    PATHF(path, "%s/plain", f->modules);
    put_file(path, "#!/bin/sh\n", 0644); /* not executable */
    assert_null(ag_handler_find("plain", f->modules));
    PATHF(path, "%s/dir", f->modules);
    put_dir(path);
    assert_null(ag_handler_find("dir", f->modules));
    assert_null(ag_handler_find("../modules/docker", f->modules));
    assert_null(ag_handler_find("", f->modules));
}

static void test_target_paths(void **state)
{
    struct fixture *f = *state;
    static const char *const good[] = {"/etc/app.conf", "/a", "/opt/app/bin/x.y", "/a/.hidden",
                                       "/a/..b", "/a/b..", "/a/.../b"};
    static const char *const bad[] = {"",        "etc/app.conf", "/",       "//etc",
                                      "/etc//x", "/etc/",        "/./etc",  "/etc/.",
                                      "/../etc", "/etc/../x",    "/etc/..", "slot"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(good); i++)
        assert_true(ag__target_is_safe(good[i]));
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        assert_false(ag__target_is_safe(bad[i]));
    /* Through a handler: refused before anything is written. */
    struct ot_diag d = {0};
    struct ot_payload *p = payload(f, "conf", "file", "/etc/../../escape", "x", 1);
    assert_int_equal(stream(&ag__handler_file, f, p, "x", 1, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "normalised"));
    char path[256];
    PATHF(path, "%s/escape", f->dir);
    assert_false(exists(path));
    /* The root prefix is joined without doubling its trailing slash. */
    char root_slash[128];
    PATHF(root_slash, "%s/", f->root);
    f->ctx.root = root_slash;
    p = payload(f, "conf2", "file", "/etc/x", "x", 1);
    _cleanup_free_ char *t = NULL;
    assert_int_equal(ag__target_path(&f->ctx, p, ".otter-old", &t, NULL), OT_OK);
    PATHF(path, "%s/etc/x.otter-old", f->root);
    assert_string_equal(t, path);
}

static void test_staging_dir(void **state)
{
    struct fixture *f = *state;
    char work[128], path[256];
    PATHF(work, "%s/deep/er/work", f->dir); /* mkdir -p */
    f->ctx.work_dir = work;
    struct ot_payload *p = payload(f, "app.conf", "file", "/etc/app.conf", "new\n", 4);
    _cleanup_free_ char *s = NULL;
    assert_int_equal(ag__staging_dir(&f->ctx, p, true, &s, NULL), OT_OK);
    PATHF(path, "%s/app.conf", work);
    assert_string_equal(s, path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* A name that is not one safe component never becomes a path. */
    p = payload(f, "x", "file", "/etc/app.conf", "new\n", 4);
    free(p->name);
    p->name = strdup("../x");
    _cleanup_free_ char *s2 = NULL;
    assert_int_equal(ag__staging_dir(&f->ctx, p, true, &s2, NULL), OT_ERR_INVALID);
}

static void test_rm_rf_does_not_follow_symlinks(void **state)
{
    struct fixture *f = *state;
    char outside[256], tree[256], path[512];
    PATHF(outside, "%s/outside", f->dir);
    put_dir(outside);
    PATHF(path, "%s/precious", outside);
    put_file(path, "keep", 0644);
    PATHF(tree, "%s/tree", f->dir);
    PATHF(path, "%s/a/b/c", tree);
    put_dir(path);
    PATHF(path, "%s/a/b/c/file", tree);
    put_file(path, "x", 0644);
    PATHF(path, "%s/a/link", tree);
    assert_int_equal(symlink(outside, path), 0);
    assert_ok(ag__rm_rf(tree, NULL), &(struct ot_diag){0});
    assert_false(exists(tree));
    PATHF(path, "%s/precious", outside);
    assert_text(path, "keep");
    assert_int_equal(ag__rm_rf(tree, NULL), OT_OK); /* nothing there: fine */
}

/* ---- raw ------------------------------------------------------------------------------------- */

static void test_raw_slot_file(void **state)
{
    struct fixture *f = *state;
    /* The old slot content is longer: a regular file is truncated, not overwritten in part. */
    uint8_t *old = malloc(300000), *img = malloc(200000);
    fill(old, 300000, 1);
    fill(img, 200000, 2);
    assert_int_equal(ot_file_write_atomic(f->slot, old, 300000, 0644, NULL), OT_OK);
    struct ot_payload *p = payload(f, "rootfs.img", "raw", "slot", img, 200000);
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_raw, f, p, img, 200000, &d), &d);
    assert_content(f->slot, img, 200000);
    assert_ok(ag__handler_raw.activate(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_raw.commit(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_raw.rollback(&f->ctx, p, &d), &d);
    assert_content(f->slot, img, 200000);
    /* "" means the slot too. */
    p = payload(f, "rootfs2.img", "raw", "", old, 1000);
    assert_ok(stream(&ag__handler_raw, f, p, old, 1000, &d), &d);
    assert_content(f->slot, old, 1000);
    free(old);
    free(img);
}

static void test_raw_target_path(void **state)
{
    struct fixture *f = *state;
    char dev[256];
    PATHF(dev, "%s/dev", f->root);
    put_dir(dev);
    PATHF(dev, "%s/dev/mmcblk0p5", f->root);
    uint8_t img[5000];
    fill(img, sizeof(img), 3);
    struct ot_payload *p = payload(f, "boot.img", "raw", "/dev/mmcblk0p5", img, sizeof(img));
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_raw, f, p, img, sizeof(img), &d), &d);
    assert_content(dev, img, sizeof(img));
    assert_false(exists(f->slot)); /* the slot was not touched */
}

static void test_raw_refusals(void **state)
{
    struct fixture *f = *state;
    struct ot_diag d = {0};
    struct ot_sink *s = NULL;
    /* No A/B slot on this device. */
    f->ctx.slot_path = NULL;
    struct ot_payload *p = payload(f, "rootfs.img", "raw", "slot", "x", 1);
    assert_int_equal(ag__handler_raw.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_null(s);
    /* A name other than "slot", a path that is not normalised, a directory target, an unknown
     * argument. */
    p = payload(f, "r.img", "raw", "rootfs", "x", 1);
    assert_int_equal(ag__handler_raw.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "neither \"slot\" nor an absolute path"));
    p = payload(f, "a.img", "raw", "/dev/../etc/passwd", "x", 1);
    assert_int_equal(ag__handler_raw.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    char dir[256];
    PATHF(dir, "%s/dev/sdz", f->root);
    put_dir(dir);
    p = payload(f, "b.img", "raw", "/dev/sdz", "x", 1);
    assert_int_equal(ag__handler_raw.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "neither a block device nor a regular file"));
    p = payload(f, "c.img", "raw", "/dev/sdy", "x", 1);
    assert_int_equal(ot_payload_add_arg(p, "offset", "4096"), OT_OK);
    assert_int_equal(ag__handler_raw.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "offset"));
    assert_null(s);
}

/* Block devices get their size as the sink's limit (creating one needs root, so the limit itself
 * is tested here): nothing past it is written, and the error is NOSPC. */
static void test_raw_sink_limit(void **state)
{
    struct fixture *f = *state;
    char path[256];
    PATHF(path, "%s/small-device", f->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    struct ot_sink *s;
    struct ot_diag d = {0};
    assert_int_equal(ag__fd_sink_new(fd, 1024, path, &s, &d), OT_OK);
    uint8_t buf[1000] = {0};
    assert_int_equal(ot_sink_write(s, buf, 1000, &d), OT_OK);
    assert_int_equal(ot_sink_write(s, buf, 24, &d), OT_OK);
    assert_int_equal(ot_sink_write(s, buf, 1, &d), OT_ERR_NOSPC);
    assert_non_null(strstr(d.msg, "1024"));
    ot_sink_free(s);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1024);
}

/* ---- file ------------------------------------------------------------------------------------ */

struct file_case {
    char target[256], backup[256], staged[256], marker[256];
    struct ot_payload *p;
};

/* "/etc/app.conf" with old content (when old is not NULL) and a payload with new content. */
static void file_case(struct fixture *f, struct file_case *c, const char *old, const char *new)
{
    PATHF(c->target, "%s/etc/app.conf", f->root);
    PATHF(c->backup, "%s/etc/app.conf.otter-old", f->root);
    staging_path(f, "app.conf", "payload", c->staged, sizeof(c->staged));
    staging_path(f, "app.conf", ".otter-activated", c->marker, sizeof(c->marker));
    if (old) {
        char dir[256];
        PATHF(dir, "%s/etc", f->root);
        put_dir(dir);
        put_file(c->target, old, 0640);
    }
    c->p = payload(f, "app.conf", "file", "/etc/app.conf", new, strlen(new));
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_file, f, c->p, new, strlen(new), &d), &d);
    assert_text(c->staged, new);
}

static void assert_mode(const char *path, mode_t want)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, want);
}

static void test_file_install_commit(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct ot_diag d = {0};
    assert_text(c.target, "old\n"); /* end stages, nothing is live yet */
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "new\n");
    assert_mode(c.target, 0644);
    assert_text(c.backup, "old\n");
    assert_mode(c.backup, 0640);
    assert_false(exists(c.staged));
    assert_ok(ag__handler_file.commit(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "new\n");
    assert_false(exists(c.backup));
    char staging[256];
    staging_path(f, "app.conf", NULL, staging, sizeof(staging));
    assert_false(exists(staging));
    assert_ok(ag__handler_file.commit(&f->ctx, c.p, &d), &d); /* again: nothing left to do */
}

static void test_file_mode_and_args(void **state)
{
    struct fixture *f = *state;
    char target[256];
    PATHF(target, "%s/usr/bin/tool", f->root);
    struct ot_payload *p = payload(f, "tool", "file", "/usr/bin/tool", "#!/bin/sh\n", 10);
    assert_int_equal(ot_payload_add_arg(p, "mode", "0755"), OT_OK);
    assert_int_equal(ot_payload_add_arg(p, "owner", "root:root"), OT_OK); /* accepted, ignored */
    struct ot_diag d = {0};
    mode_t old_umask = umask(077);
    assert_ok(stream(&ag__handler_file, f, p, "#!/bin/sh\n", 10, &d), &d);
    umask(old_umask);
    assert_ok(ag__handler_file.activate(&f->ctx, p, &d), &d);
    assert_mode(target, 0755); /* exactly the mode asked for, whatever the umask */
    static const char *const bad[] = {"0799", "rwx", "", "177777", "-1"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        p = payload(f, "tool2", "file", "/usr/bin/tool2", "x", 1);
        assert_int_equal(ot_payload_add_arg(p, "mode", bad[i]), OT_OK);
        struct ot_sink *s = NULL;
        assert_int_equal(ag__handler_file.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
        assert_null(s);
    }
    p = payload(f, "tool3", "file", "/usr/bin/tool3", "x", 1);
    assert_int_equal(ot_payload_add_arg(p, "user", "x"), OT_OK);
    struct ot_sink *s = NULL;
    assert_int_equal(ag__handler_file.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "unknown file argument 'user'"));
}

static void test_file_rollback_restores_old(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct stat before, after;
    assert_int_equal(stat(c.target, &before), 0);
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "old\n");
    assert_int_equal(stat(c.target, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino); /* the very same file, mode and all */
    assert_mode(c.target, 0640);
    assert_false(exists(c.backup));
    char staging[256];
    staging_path(f, "app.conf", NULL, staging, sizeof(staging));
    assert_false(exists(staging));
    /* Twice: nothing more happens. */
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "old\n");
}

static void test_file_rollback_removes_new_file(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, NULL, "new\n"); /* no /etc either: activate creates it */
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "new\n");
    assert_false(exists(c.backup));
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_false(exists(c.target));
    assert_false(exists(c.backup));
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_false(exists(c.target));
}

static void test_file_activate_twice(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "new\n");
    assert_text(c.backup, "old\n"); /* not overwritten by the new file */
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "old\n");
}

static void test_file_rollback_without_activate(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    /* A backup that is not ours (left by someone else): never put in place without a marker. */
    put_file(c.backup, "stale\n", 0644);
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "old\n");
    assert_false(exists(c.staged));
}

static void test_file_activate_checks_content_when_staged_is_gone(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    put_file(c.target, "tampered\n", 0644);
    assert_int_equal(ag__handler_file.activate(&f->ctx, c.p, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "does not hold the new content"));
    /* A directory in the way is refused before anything happens. */
    struct ot_payload *p = payload(f, "etc", "file", "/etc", "x", 1);
    struct ot_sink *s = NULL;
    assert_int_equal(ag__handler_file.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
}

/* The states activate passes through, made by hand: 1 = marker written, 2 = backup made,
 * 3 = staged file renamed over the target. */
static void file_crash_state(struct file_case *c, int step, bool existed)
{
    put_file(c->marker, existed ? "existed\n" : "absent\n", 0600);
    if (step >= 2 && existed)
        assert_int_equal(link(c->target, c->backup), 0);
    if (step >= 3) {
        char dir[300];
        PATHF(dir, "%s", c->target);
        *strrchr(dir, '/') = '\0';
        put_dir(dir);
        assert_int_equal(rename(c->staged, c->target), 0);
    }
}

static void test_file_crash_in_activate(void **state)
{
    struct fixture *f = *state;
    for (int existed = 0; existed < 2; existed++) {
        for (int step = 1; step <= 3; step++) {
            for (int then_rollback = 0; then_rollback < 2; then_rollback++) {
                char cmd[300];
                PATHF(cmd, "rm -rf '%s'/* '%s'/*", f->root, f->work);
                assert_int_equal(system(cmd), 0);
                ot_manifest_release(&f->m);
                struct file_case c;
                file_case(f, &c, existed ? "old\n" : NULL, "new\n");
                file_crash_state(&c, step, existed);
                struct ot_diag d = {0};
                if (then_rollback) {
                    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
                    if (existed)
                        assert_text(c.target, "old\n");
                    else
                        assert_false(exists(c.target));
                } else {
                    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
                    assert_text(c.target, "new\n");
                    if (existed)
                        assert_text(c.backup, "old\n");
                    assert_ok(ag__handler_file.commit(&f->ctx, c.p, &d), &d);
                    assert_text(c.target, "new\n");
                }
                assert_false(exists(c.backup));
                assert_false(exists(c.marker));
            }
        }
    }
}

static void test_file_crash_in_rollback(void **state)
{
    struct fixture *f = *state;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.activate(&f->ctx, c.p, &d), &d);
    /* Rollback cut short after its rename, before the staging directory went. */
    assert_int_equal(rename(c.backup, c.target), 0);
    assert_ok(ag__handler_file.rollback(&f->ctx, c.p, &d), &d);
    assert_text(c.target, "old\n");
    assert_false(exists(c.marker));
}

/* Staging on another file system than the target (here /dev/shm, a tmpfs, when /tmp is not one):
 * the file is copied next to the target and renamed there, still atomically. */
static void test_file_staging_on_other_file_system(void **state)
{
    struct fixture *f = *state;
    struct stat a, b;
    if (stat("/dev/shm", &a) < 0 || stat(f->dir, &b) < 0 || a.st_dev == b.st_dev)
        skip();
    char work[64];
    PATHF(work, "/dev/shm/otter-handlers-XXXXXX");
    assert_non_null(mkdtemp(work));
    f->ctx.work_dir = work;
    struct file_case c;
    file_case(f, &c, "old\n", "new\n");
    struct ot_diag d = {0};
    enum ot_err err = ag__handler_file.activate(&f->ctx, c.p, &d);
    if (!err) {
        assert_text(c.target, "new\n");
        assert_mode(c.target, 0644);
        assert_text(c.backup, "old\n");
        err = ag__handler_file.rollback(&f->ctx, c.p, &d);
    }
    if (!err)
        assert_text(c.target, "old\n");
    char cmd[128];
    PATHF(cmd, "rm -rf '%s'", work);
    assert_int_equal(system(cmd), 0);
    assert_ok(err, &d);
}

static void test_file_abort(void **state)
{
    struct fixture *f = *state;
    char target[256], staging[256];
    PATHF(target, "%s/etc/app.conf", f->root);
    staging_path(f, "app.conf", NULL, staging, sizeof(staging));
    struct ot_payload *p = payload(f, "app.conf", "file", "/etc/app.conf", "new\n", 4);
    struct ot_sink *s = NULL;
    struct ot_diag d = {0};
    assert_ok(ag__handler_file.begin(&f->ctx, p, &s, &d), &d);
    assert_int_equal(ot_sink_write(s, (const uint8_t *)"ne", 2, &d), OT_OK);
    assert_true(exists(staging));
    ag__handler_file.abort(&f->ctx, p); /* before the sink is freed, as the engine may do */
    ot_sink_free(s);
    assert_false(exists(staging));
    assert_false(exists(target));
    ag__handler_file.abort(&f->ctx, p);
}

/* ---- archive --------------------------------------------------------------------------------- */

struct tar_entry {
    const char *name;
    const char *content;
};

/* A tar from core's writer (what `otter` produces). Caller releases out. */
static void make_tar(struct fixture *f, const struct tar_entry *e, size_t n, struct ot_buf *out)
{
    char path[256];
    PATHF(path, "%s/tmp.tar", f->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    struct ot_tar_writer *w;
    assert_int_equal(ot_tar_writer_new(fd, 1700000000, &w, NULL), OT_OK);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(e[i].content);
        assert_int_equal(ot_tar_writer_begin_entry(w, e[i].name, len, NULL), OT_OK);
        assert_int_equal(ot_tar_writer_write(w, (const uint8_t *)e[i].content, len, NULL), OT_OK);
        assert_int_equal(ot_tar_writer_end_entry(w, NULL), OT_OK);
    }
    assert_int_equal(ot_tar_writer_close(w, NULL), OT_OK);
    ot_tar_writer_free(w);
    close(fd);
    ot_buf_init(out, 16 << 20);
    assert_int_equal(ot_file_read(path, out, NULL), OT_OK);
}

/* A hand-made ustar header, for entries no Otter tool would write. */
static void raw_header(struct ot_buf *b, const char *name, char type, size_t size,
                       const char *link)
{
    uint8_t h[OT_TAR_BLOCK] = {0};
    memcpy(h, name, strlen(name));
    memcpy(h + 100, "0000644", 7);
    memcpy(h + 108, "0000000", 7);
    memcpy(h + 116, "0000000", 7);
    snprintf((char *)h + 124, 12, "%011zo", size);
    memcpy(h + 136, "14540000000", 11);
    h[156] = (uint8_t)type;
    if (link)
        memcpy(h + 157, link, strlen(link));
    memcpy(h + 257, "ustar\0" "00", 8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < OT_TAR_BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    assert_int_equal(ot_buf_append(b, h, sizeof(h)), OT_OK);
}

static void raw_data(struct ot_buf *b, const char *content)
{
    size_t n = strlen(content);
    uint8_t zero[OT_TAR_BLOCK] = {0};
    assert_int_equal(ot_buf_append(b, content, n), OT_OK);
    assert_int_equal(ot_buf_append(b, zero, (OT_TAR_BLOCK - n % OT_TAR_BLOCK) % OT_TAR_BLOCK),
                     OT_OK);
}

static void raw_end(struct ot_buf *b)
{
    uint8_t zero[2 * OT_TAR_BLOCK] = {0};
    assert_int_equal(ot_buf_append(b, zero, sizeof(zero)), OT_OK);
}

static const char long_name[] =
    "sub/a-rather-long-directory-name-that-does-not-fit-into-the-ustar-name-field/and/more/"
    "nesting/to-push-it-past-one-hundred-bytes/file.txt";

static const struct tar_entry new_tree[] = {
    {"a.txt", "alpha\n"},
    {"sub/dir/b.txt", "bravo\n"},
    {"empty", ""},
    {long_name, "long\n"},
};

struct archive_case {
    char target[256], new_dir[256], old_dir[256], marker[256];
    struct ot_payload *p;
};

static void put_old_tree(const char *target)
{
    char path[512];
    PATHF(path, "%s/keep", target);
    put_dir(path);
    PATHF(path, "%s/old.txt", target);
    put_file(path, "old\n", 0644);
    PATHF(path, "%s/keep/x", target);
    put_file(path, "x\n", 0600);
}

static void assert_old_tree(const char *target)
{
    char path[512];
    PATHF(path, "%s/old.txt", target);
    assert_text(path, "old\n");
    PATHF(path, "%s/keep/x", target);
    assert_text(path, "x\n");
    assert_mode(path, 0600);
    assert_int_equal(count_files(target), 2);
}

static void assert_new_tree(const char *target)
{
    char path[512];
    for (size_t i = 0; i < OT_ARRAY_SIZE(new_tree); i++) {
        PATHF(path, "%s/%s", target, new_tree[i].name);
        assert_text(path, new_tree[i].content);
        assert_mode(path, 0644);
    }
    PATHF(path, "%s/sub/dir", target);
    assert_mode(path, 0755);
    assert_int_equal(count_files(target), (int)OT_ARRAY_SIZE(new_tree));
}

static void archive_case(struct fixture *f, struct archive_case *c, bool old)
{
    PATHF(c->target, "%s/opt/app", f->root);
    PATHF(c->new_dir, "%s/opt/app.otter-new", f->root);
    PATHF(c->old_dir, "%s/opt/app.otter-old", f->root);
    staging_path(f, "app.tar", ".otter-activated", c->marker, sizeof(c->marker));
    if (old)
        put_old_tree(c->target);
    struct ot_buf tar;
    make_tar(f, new_tree, OT_ARRAY_SIZE(new_tree), &tar);
    c->p = payload(f, "app.tar", "archive", "/opt/app", tar.data, tar.len);
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_archive, f, c->p, tar.data, tar.len, &d), &d);
    ot_buf_release(&tar);
    assert_new_tree(c->new_dir);
}

static void test_archive_install_commit(void **state)
{
    struct fixture *f = *state;
    struct archive_case c;
    archive_case(f, &c, true);
    assert_old_tree(c.target); /* end only stages */
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d);
    assert_new_tree(c.target);
    assert_old_tree(c.old_dir);
    assert_false(exists(c.new_dir));
    assert_ok(ag__handler_archive.commit(&f->ctx, c.p, &d), &d);
    assert_new_tree(c.target);
    assert_false(exists(c.old_dir));
    assert_false(exists(c.marker));
    assert_ok(ag__handler_archive.commit(&f->ctx, c.p, &d), &d);
}

static void test_archive_rollback(void **state)
{
    struct fixture *f = *state;
    struct archive_case c;
    archive_case(f, &c, true);
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d);
    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d); /* twice */
    assert_new_tree(c.target);
    assert_old_tree(c.old_dir);
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
    assert_old_tree(c.target);
    assert_false(exists(c.old_dir));
    assert_false(exists(c.new_dir));
    assert_false(exists(c.marker));
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d); /* twice */
    assert_old_tree(c.target);
}

static void test_archive_rollback_removes_new_dir(void **state)
{
    struct fixture *f = *state;
    struct archive_case c;
    archive_case(f, &c, false);
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d);
    assert_new_tree(c.target);
    assert_false(exists(c.old_dir));
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
    assert_false(exists(c.target));
    assert_false(exists(c.new_dir));
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
    assert_false(exists(c.target));
}

static void test_archive_rollback_without_activate(void **state)
{
    struct fixture *f = *state;
    struct archive_case c;
    archive_case(f, &c, true);
    put_old_tree(c.old_dir); /* stale backup, not ours */
    char path[512];
    PATHF(path, "%s/old.txt", c.old_dir);
    put_file(path, "stale\n", 0644);
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
    assert_old_tree(c.target);
    assert_false(exists(c.new_dir));
    /* The stale backup is dropped by the next deployment's activate, not put in place. */
    assert_text(path, "stale\n");
}

/* Every state a power cut can leave, from marker to swap complete (see handler_archive.c):
 * 1 = marker, 2 = T moved to O, 3 = N moved to T. */
static void archive_crash_state(struct archive_case *c, int step, bool existed)
{
    put_file(c->marker, existed ? "existed\n" : "absent\n", 0600);
    if (step >= 2 && existed)
        assert_int_equal(rename(c->target, c->old_dir), 0);
    if (step >= 3)
        assert_int_equal(rename(c->new_dir, c->target), 0);
}

static void test_archive_crash_in_activate(void **state)
{
    struct fixture *f = *state;
    for (int existed = 0; existed < 2; existed++) {
        for (int step = 1; step <= 3; step++) {
            for (int then_rollback = 0; then_rollback < 2; then_rollback++) {
                char cmd[300];
                PATHF(cmd, "rm -rf '%s'/* '%s'/*", f->root, f->work);
                assert_int_equal(system(cmd), 0);
                ot_manifest_release(&f->m);
                struct archive_case c;
                archive_case(f, &c, existed);
                archive_crash_state(&c, step, existed);
                struct ot_diag d = {0};
                if (then_rollback) {
                    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
                    if (existed)
                        assert_old_tree(c.target);
                    else
                        assert_false(exists(c.target));
                } else {
                    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d);
                    assert_new_tree(c.target);
                    if (existed)
                        assert_old_tree(c.old_dir);
                    assert_ok(ag__handler_archive.commit(&f->ctx, c.p, &d), &d);
                    assert_new_tree(c.target);
                }
                assert_false(exists(c.new_dir));
                assert_false(exists(c.old_dir));
                assert_false(exists(c.marker));
            }
        }
    }
}

static void test_archive_crash_in_rollback(void **state)
{
    struct fixture *f = *state;
    struct archive_case c;
    archive_case(f, &c, true);
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.activate(&f->ctx, c.p, &d), &d);
    /* Rollback cut short after moving the new tree aside (T -> N), before O -> T. */
    assert_int_equal(rename(c.target, c.new_dir), 0);
    assert_ok(ag__handler_archive.rollback(&f->ctx, c.p, &d), &d);
    assert_old_tree(c.target);
    assert_false(exists(c.new_dir));
    assert_false(exists(c.old_dir));
}

/* Feeds a hostile tar; the handler must fail and abort must leave nothing. */
static void assert_tar_refused(struct fixture *f, const struct ot_buf *tar, enum ot_err want,
                               const char *why)
{
    ot_manifest_release(&f->m);
    struct ot_payload *p = payload(f, "evil.tar", "archive", "/opt/app", tar->data, tar->len);
    struct ot_diag d = {0};
    enum ot_err err = stream(&ag__handler_archive, f, p, tar->data, tar->len, &d);
    if (err != want)
        fail_msg("%s: got %s (%s)", why, ot_err_name(err), d.msg);
    ag__handler_archive.abort(&f->ctx, p);
    char path[512];
    PATHF(path, "%s/opt/app.otter-new", f->root);
    assert_false(exists(path));
    staging_path(f, "evil.tar", NULL, path, sizeof(path));
    assert_false(exists(path));
    PATHF(path, "%s/outside", f->dir);
    assert_int_equal(count_files(path), 0);
}

static void test_archive_path_traversal_refused(void **state)
{
    struct fixture *f = *state;
    char outside[256];
    PATHF(outside, "%s/outside", f->dir);
    put_dir(outside);
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    /* "../x" climbing out of the tree (relative to the new tree: <root>/opt/outside). */
    raw_header(&b, "../../../outside/x", '0', 4, NULL);
    raw_data(&b, "bad\n");
    raw_end(&b);
    assert_tar_refused(f, &b, OT_ERR_FORMAT, "dot-dot");
    /* An absolute name. */
    ot_buf_reset(&b);
    char abs[300];
    PATHF(abs, "%s/x", outside);
    raw_header(&b, abs, '0', 4, NULL);
    raw_data(&b, "bad\n");
    raw_end(&b);
    assert_tar_refused(f, &b, OT_ERR_FORMAT, "absolute");
    /* A symlink to the outside, then a file through it. */
    ot_buf_reset(&b);
    raw_header(&b, "link", '2', 0, outside);
    raw_header(&b, "link/x", '0', 4, NULL);
    raw_data(&b, "bad\n");
    raw_end(&b);
    assert_tar_refused(f, &b, OT_ERR_FORMAT, "symlink");
    /* A relative symlink out, a hard link, a device, a directory entry with dot-dot. */
    static const struct {
        const char *name;
        char type;
        const char *link;
    } others[] = {
        {"up", '2', "../../../outside"},
        {"hard", '1', "/etc/shadow"},
        {"dev", '3', NULL},
        {"blk", '4', NULL},
        {"sub/../../x", '5', NULL},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(others); i++) {
        ot_buf_reset(&b);
        raw_header(&b, others[i].name, others[i].type, 0, others[i].link);
        raw_end(&b);
        assert_tar_refused(f, &b, OT_ERR_FORMAT, others[i].name);
    }
    ot_buf_release(&b);
}

static void test_archive_malformed_refused(void **state)
{
    struct fixture *f = *state;
    char outside[256];
    PATHF(outside, "%s/outside", f->dir);
    put_dir(outside);
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    /* The same file twice. */
    raw_header(&b, "a", '0', 2, NULL);
    raw_data(&b, "1\n");
    raw_header(&b, "a", '0', 2, NULL);
    raw_data(&b, "2\n");
    raw_end(&b);
    assert_tar_refused(f, &b, OT_ERR_FORMAT, "duplicate");
    /* A file, then a file "below" it. */
    ot_buf_reset(&b);
    raw_header(&b, "a", '0', 2, NULL);
    raw_data(&b, "1\n");
    raw_header(&b, "a/b", '0', 2, NULL);
    raw_data(&b, "2\n");
    raw_end(&b);
    assert_tar_refused(f, &b, OT_ERR_FORMAT, "file as directory");
    /* Truncated: no end-of-archive marker. */
    ot_buf_reset(&b);
    raw_header(&b, "a", '0', 2, NULL);
    raw_data(&b, "1\n");
    assert_tar_refused(f, &b, OT_ERR_TRUNCATED, "truncated");
    ot_buf_release(&b);
    /* The target is a file, not a directory. */
    char path[256];
    PATHF(path, "%s/opt", f->root);
    put_dir(path);
    PATHF(path, "%s/opt/app", f->root);
    put_file(path, "file\n", 0644);
    struct ot_payload *p = payload(f, "app2.tar", "archive", "/opt/app", "", 0);
    struct ot_sink *s = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag__handler_archive.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
    assert_null(s);
}

static void test_archive_abort(void **state)
{
    struct fixture *f = *state;
    struct ot_buf tar;
    make_tar(f, new_tree, OT_ARRAY_SIZE(new_tree), &tar);
    struct ot_payload *p = payload(f, "app.tar", "archive", "/opt/app", tar.data, tar.len);
    struct ot_sink *s = NULL;
    struct ot_diag d = {0};
    assert_ok(ag__handler_archive.begin(&f->ctx, p, &s, &d), &d);
    assert_int_equal(ot_sink_write(s, tar.data, 1500, &d), OT_OK); /* mid-entry */
    ag__handler_archive.abort(&f->ctx, p);
    ot_sink_free(s);
    char path[256];
    PATHF(path, "%s/opt/app.otter-new", f->root);
    assert_false(exists(path));
    PATHF(path, "%s/opt/app", f->root);
    assert_false(exists(path));
    staging_path(f, "app.tar", NULL, path, sizeof(path));
    assert_false(exists(path));
    ot_buf_release(&tar);
}

/* ---- script ---------------------------------------------------------------------------------- */

/* A script payload whose body follows a line that logs "$1 $(pwd)" to <dir>/script.log. */
static struct ot_payload *script_case(struct fixture *f, const char *body, const char *timeout,
                                      char *script, size_t n)
{
    snprintf(script, n, "#!/bin/sh\necho \"$1 $(pwd)\" >> '%s/script.log'\n%s\n", f->dir, body);
    struct ot_payload *p = payload(f, "hook", "script", "", script, strlen(script));
    if (timeout)
        assert_int_equal(ot_payload_add_arg(p, "timeout", timeout), OT_OK);
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_script, f, p, script, strlen(script), &d), &d);
    return p;
}

static void assert_script_log(struct fixture *f, const char *steps)
{
    char path[256], staging[256], want[1024] = "";
    PATHF(path, "%s/script.log", f->dir);
    staging_path(f, "hook", NULL, staging, sizeof(staging));
    size_t o = 0;
    for (const char *s = steps; *s;) {
        size_t k = strcspn(s, " ");
        o += (size_t)snprintf(want + o, sizeof(want) - o, "%.*s %s\n", (int)k, s, staging);
        s += k + (s[k] == ' ');
    }
    if (!*steps)
        assert_false(exists(path));
    else
        assert_text(path, want);
}

static void test_script_success(void **state)
{
    struct fixture *f = *state;
    char script[512], staged[256];
    struct ot_payload *p = script_case(f, "exit 0", NULL, script, sizeof(script));
    staging_path(f, "hook", "payload", staged, sizeof(staged));
    assert_mode(staged, 0700);
    assert_script_log(f, ""); /* end does not run it */
    struct ot_diag d = {0};
    assert_ok(ag__handler_script.activate(&f->ctx, p, &d), &d);
    assert_script_log(f, "install");
    assert_ok(ag__handler_script.commit(&f->ctx, p, &d), &d);
    assert_script_log(f, "install");
    staging_path(f, "hook", NULL, staged, sizeof(staged));
    assert_false(exists(staged));
}

static void test_script_failure_reports_status_and_output(void **state)
{
    struct fixture *f = *state;
    char script[512];
    struct ot_payload *p =
        script_case(f, "echo 'no space for the database' >&2\nexit 3", NULL, script,
                    sizeof(script));
    struct ot_diag d = {0};
    assert_int_equal(ag__handler_script.activate(&f->ctx, p, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "script 'hook' install"));
    assert_non_null(strstr(d.msg, "exited with status 3"));
    assert_non_null(strstr(d.msg, "no space for the database"));
}

static bool process_gone(pid_t pid)
{
    char path[64];
    PATHF(path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return true;
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z'; /* a zombie nobody reaps here yet */
}

static void test_script_timeout_kills_group(void **state)
{
    struct fixture *f = *state;
    char script[512], body[256];
    PATHF(body, "sleep 30 &\necho $! > '%s/sleeper.pid'\nwait", f->dir);
    struct ot_payload *p = script_case(f, body, "1", script, sizeof(script));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct ot_diag d = {0};
    assert_int_equal(ag__handler_script.activate(&f->ctx, p, &d), OT_ERR_LIMIT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(strstr(d.msg, "timed out"));
    assert_true(t1.tv_sec - t0.tv_sec < 10);
    char path[256];
    PATHF(path, "%s/sleeper.pid", f->dir);
    struct ot_buf b;
    ot_buf_init(&b, 64);
    assert_int_equal(ot_file_read(path, &b, NULL), OT_OK);
    pid_t pid = (pid_t)strtol(ot_buf_str(&b), NULL, 10);
    ot_buf_release(&b);
    assert_true(pid > 0);
    for (int i = 0; i < 100 && !process_gone(pid); i++)
        usleep(20000);
    assert_true(process_gone(pid));
}

static void test_script_rollback(void **state)
{
    struct fixture *f = *state;
    char script[512];
    struct ot_payload *p = script_case(f, "exit 0", NULL, script, sizeof(script));
    struct ot_diag d = {0};
    assert_ok(ag__handler_script.activate(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_script.activate(&f->ctx, p, &d), &d); /* scripts must be idempotent */
    assert_ok(ag__handler_script.rollback(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_script.rollback(&f->ctx, p, &d), &d); /* twice: runs once */
    assert_script_log(f, "install install rollback");
}

static void test_script_rollback_without_activate(void **state)
{
    struct fixture *f = *state;
    char script[512], staging[256];
    struct ot_payload *p = script_case(f, "exit 0", NULL, script, sizeof(script));
    struct ot_diag d = {0};
    assert_ok(ag__handler_script.rollback(&f->ctx, p, &d), &d);
    assert_script_log(f, "");
    staging_path(f, "hook", NULL, staging, sizeof(staging));
    assert_false(exists(staging));
}

static void test_script_failed_rollback_keeps_staging(void **state)
{
    struct fixture *f = *state;
    char script[512], staging[256];
    struct ot_payload *p = script_case(f, "[ \"$1\" = install ] && exit 1\nexit 4", NULL, script,
                                       sizeof(script));
    struct ot_diag d = {0};
    assert_int_equal(ag__handler_script.activate(&f->ctx, p, &d), OT_ERR_INVALID);
    assert_int_equal(ag__handler_script.rollback(&f->ctx, p, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "status 4"));
    staging_path(f, "hook", NULL, staging, sizeof(staging));
    assert_true(exists(staging)); /* the engine can try again */
    assert_script_log(f, "install rollback");
}

static void test_script_args(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {"0", "-1", "1s", "", "86401", "99999999999999999999"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct ot_payload *p = payload(f, "hook", "script", "", "x", 1);
        assert_int_equal(ot_payload_add_arg(p, "timeout", bad[i]), OT_OK);
        struct ot_sink *s = NULL;
        struct ot_diag d = {0};
        assert_int_equal(ag__handler_script.begin(&f->ctx, p, &s, &d), OT_ERR_INVALID);
        assert_null(s);
    }
    ag__handler_script.abort(&f->ctx, &f->m.payloads[0]);
    char staging[256];
    staging_path(f, "hook", NULL, staging, sizeof(staging));
    assert_false(exists(staging));
}

static void test_run_missing_program(void **state)
{
    struct fixture *f = *state;
    char prog[256];
    PATHF(prog, "%s/does-not-exist", f->dir);
    const char *const argv[] = {prog, NULL};
    struct ag_run_result *r = malloc(sizeof(*r));
    struct ot_diag d = {0};
    assert_int_equal(ag__run(argv, f->dir, 5, r, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "cannot run"));
    /* Output is bounded: the last AG_RUN_OUTPUT_MAX bytes are kept. */
    const char *const sh[] = {"/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line$i; "
                              "i=$((i+1)); done; exit 7", NULL};
    assert_int_equal(ag__run(sh, f->dir, 30, r, &d), OT_OK);
    assert_true(r->out_cut);
    assert_int_equal(r->out_len, AG_RUN_OUTPUT_MAX);
    assert_non_null(strstr(r->out, "line1999\n"));
    assert_int_equal(ag__run_verdict(OT_OK, r, "flood", &d), OT_ERR_INVALID);
    assert_true(strlen(d.msg) < OT_DIAG_MSG_MAX);
    assert_non_null(strstr(d.msg, "flood: exited with status 7: line"));
    assert_non_null(strstr(d.msg, "line1999"));
    free(r);
}

/* An agent that ignores SIGCHLD gets no exit status: that must be an error, never success. */
static void test_run_without_exit_status(void **state)
{
    struct fixture *f = *state;
    const char *const argv[] = {"/bin/sh", "-c", "exit 5", NULL};
    struct ag_run_result *r = malloc(sizeof(*r));
    struct ot_diag d = {0};
    void (*old)(int) = signal(SIGCHLD, SIG_IGN);
    enum ot_err err = ag__run(argv, f->dir, 5, r, &d);
    signal(SIGCHLD, old);
    assert_int_equal(err, OT_ERR_INTERNAL);
    assert_non_null(strstr(d.msg, "exit status unknown"));
    free(r);
}

/* ---- update modules -------------------------------------------------------------------------- */

/* A module that logs "STEP WORKDIR" and checks what the protocol promises; fail_step exits 2
 * after printing a reason. */
static void put_module(struct fixture *f, const char *name, const char *fail_step)
{
    char path[256], text[1024];
    PATHF(path, "%s/%s", f->modules, name);
    PATHF(text,
          "#!/bin/sh\n"
          "echo \"$1 $2\" >> '%s/module.log'\n"
          "[ \"$(pwd)\" = \"$2\" ] || { echo 'wrong cwd'; exit 8; }\n"
          "[ -f \"$2/manifest-payload.json\" ] || { echo 'no manifest'; exit 9; }\n"
          "case \"$1\" in Download|Install) [ -f \"$2/payload\" ] || exit 10 ;; esac\n"
          "if [ \"$1\" = '%s' ]; then echo 'progress 50%%'; echo 'disk on fire' >&2; exit 2; fi\n"
          "exit 0\n",
          f->dir, fail_step ? fail_step : "");
    put_file(path, text, 0755);
}

static struct ot_payload *module_payload(struct fixture *f, const char *type)
{
    static const char data[] = "container image bytes\n";
    struct ot_payload *p = payload(f, "web.img", type, "web", data, strlen(data));
    assert_int_equal(ot_payload_add_arg(p, "restart", "always"), OT_OK);
    return p;
}

static void assert_module_log(struct fixture *f, const char *steps)
{
    char path[256], staging[256], want[1024] = "";
    PATHF(path, "%s/module.log", f->dir);
    staging_path(f, "web.img", NULL, staging, sizeof(staging));
    _cleanup_free_ char *real = realpath(f->work, NULL);
    assert_non_null(real);
    size_t o = 0;
    for (const char *s = steps; *s;) {
        size_t k = strcspn(s, " ");
        o += (size_t)snprintf(want + o, sizeof(want) - o, "%.*s %s/web.img\n", (int)k, s, real);
        s += k + (s[k] == ' ');
    }
    if (!*steps)
        assert_false(exists(path));
    else
        assert_text(path, want);
}

static void test_module_steps_commit(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", NULL);
    assert_ptr_equal(ag_handler_find("docker", f->modules), &ag__handler_module);
    struct ot_payload *p = module_payload(f, "docker");
    static const char data[] = "container image bytes\n";
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_module, f, p, data, strlen(data), &d), &d);
    assert_module_log(f, "Download");
    /* WORKDIR holds the payload and its description. */
    char path[256];
    staging_path(f, "web.img", "payload", path, sizeof(path));
    assert_text(path, data);
    staging_path(f, "web.img", "manifest-payload.json", path, sizeof(path));
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "web.img");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "docker");
    assert_string_equal(json_string_value(json_object_get(j, "target")), "web");
    assert_string_equal(json_string_value(json_object_get(j, "version")), "2.0");
    assert_int_equal(json_integer_value(json_object_get(j, "size")), strlen(data));
    assert_int_equal(strlen(json_string_value(json_object_get(j, "sha256"))), 64);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "args"), "restart")), "always");
    json_decref(j);
    assert_ok(ag__handler_module.activate(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_module.commit(&f->ctx, p, &d), &d);
    assert_module_log(f, "Download Install Commit Cleanup");
    staging_path(f, "web.img", NULL, path, sizeof(path));
    assert_false(exists(path));
    assert_ok(ag__handler_module.commit(&f->ctx, p, &d), &d); /* finished: not called again */
    assert_module_log(f, "Download Install Commit Cleanup");
}

static void test_module_steps_rollback(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", NULL);
    struct ot_payload *p = module_payload(f, "docker");
    static const char data[] = "container image bytes\n";
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_module, f, p, data, strlen(data), &d), &d);
    assert_ok(ag__handler_module.activate(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_module.activate(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_module.rollback(&f->ctx, p, &d), &d);
    assert_ok(ag__handler_module.rollback(&f->ctx, p, &d), &d);
    assert_module_log(f, "Download Install Install Rollback Cleanup");
}

static void test_module_rollback_without_install(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", NULL);
    struct ot_payload *p = module_payload(f, "docker");
    static const char data[] = "container image bytes\n";
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_module, f, p, data, strlen(data), &d), &d);
    assert_ok(ag__handler_module.rollback(&f->ctx, p, &d), &d);
    assert_module_log(f, "Download Cleanup");
}

static void test_module_failing_step(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", "Install");
    struct ot_payload *p = module_payload(f, "docker");
    static const char data[] = "container image bytes\n";
    struct ot_diag d = {0};
    assert_ok(stream(&ag__handler_module, f, p, data, strlen(data), &d), &d);
    assert_int_equal(ag__handler_module.activate(&f->ctx, p, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "update module 'docker' Install (payload 'web.img')"));
    assert_non_null(strstr(d.msg, "exited with status 2"));
    assert_non_null(strstr(d.msg, "progress 50%\ndisk on fire"));
    /* Install may have done something: rollback runs Rollback. */
    assert_ok(ag__handler_module.rollback(&f->ctx, p, &d), &d);
    assert_module_log(f, "Download Install Rollback Cleanup");
}

static void test_module_failing_download(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", "Download");
    struct ot_payload *p = module_payload(f, "docker");
    static const char data[] = "container image bytes\n";
    struct ot_diag d = {0};
    assert_int_equal(stream(&ag__handler_module, f, p, data, strlen(data), &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "Download"));
    ag__handler_module.abort(&f->ctx, p); /* Download ran: the module gets its Cleanup */
    assert_module_log(f, "Download Cleanup");
    char path[256];
    staging_path(f, "web.img", NULL, path, sizeof(path));
    assert_false(exists(path));
}

static void test_module_abort_before_download(void **state)
{
    struct fixture *f = *state;
    put_module(f, "docker", NULL);
    struct ot_payload *p = module_payload(f, "docker");
    struct ot_sink *s = NULL;
    struct ot_diag d = {0};
    assert_ok(ag__handler_module.begin(&f->ctx, p, &s, &d), &d);
    assert_int_equal(ot_sink_write(s, (const uint8_t *)"cont", 4, &d), OT_OK);
    ot_sink_free(s);
    ag__handler_module.abort(&f->ctx, p);
    assert_module_log(f, ""); /* the module never saw this payload */
    char path[256];
    staging_path(f, "web.img", NULL, path, sizeof(path));
    assert_false(exists(path));
}

static void test_module_missing(void **state)
{
    struct fixture *f = *state;
    struct ot_payload *p = module_payload(f, "gone");
    struct ot_sink *s = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag__handler_module.begin(&f->ctx, p, &s, &d), OT_ERR_NOENT);
    assert_null(s);
    assert_non_null(strstr(d.msg, "update module"));
}

int main(void)
{
    ot_log_set_sink(quiet_log, NULL); /* program output is logged at info: keep TAP clean */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_staging_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_rf_does_not_follow_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_slot_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_target_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_sink_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_install_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rollback_restores_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rollback_removes_new_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_activate_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rollback_without_activate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_activate_checks_content_when_staged_is_gone,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_crash_in_activate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_crash_in_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_staging_on_other_file_system, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_install_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_rollback_removes_new_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_rollback_without_activate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_crash_in_activate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_crash_in_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_path_traversal_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_malformed_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_failure_reports_status_and_output, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_script_timeout_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_rollback_without_activate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_failed_rollback_keeps_staging, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_script_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_missing_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_without_exit_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_steps_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_steps_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_rollback_without_install, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_failing_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_failing_download, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_abort_before_download, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_missing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
