/* Boot backends: the A/B protocol of boot.h run against each backend's real storage in a private
 * temp dir: the sim file, a GRUB environment block, and a U-Boot environment through
 * libubootenv (two redundant copies in one image file, as on an eMMC).
 *
 * The same protocol cases run on every backend. The bootloader's part is played by
 * ag_boot_sim_power_on for sim, and for grub and uboot by this file following the grub.cfg and
 * boot script of docs/agent-boot.md, reading and writing the environment with its own code
 * (its own GRUB block editor; for U-Boot its own image reader/writer with the CRC and the
 * redundancy flag, the way U-Boot's saveenv does) so that the agent's format is checked against
 * an independent implementation, and with fw_printenv where it is installed. Write failures are
 * provoked with RLIMIT_FSIZE, which holds for root too. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "otter/file.h"

#include "boot.h"

#define GRUB_HEADER "# GRUB Environment Block\n"
#define UB_SIZE 0x4000u      /* one U-Boot environment copy */
#define UB_DATA (UB_SIZE - 5) /* after crc32 and the redundancy flag */
#define CMDLINE_A "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda2 ro quiet otter.slot=a\n"

/* ---- fixture ------------------------------------------------------------------------------- */

struct fx;

/* A backend as the tests see it: how to make a fresh environment, and the bootloader's own
 * access to its variables (absent: value ""). */
struct backend {
    const char *kind;
    void (*prepare)(struct fx *f);
    void (*bl_get)(struct fx *f, const char *name, char *out, size_t n);
    void (*bl_set)(struct fx *f, const char *name, const char *value);
};

struct fx {
    const struct backend *be;
    char dir[64];
    char env[160];     /* sim file, grubenv, or fw_env.config */
    char image[160];   /* uboot: the environment image */
    char cmdline[160];
    bool unsupported;  /* uboot, but built without libubootenv */
};

static char *fx_path(struct fx *f, char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", f->dir, name);
    return out;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void write_str(const char *path, const char *s)
{
    write_bytes(path, s, strlen(s));
}

/* The whole file; the caller releases. */
static struct ot_buf slurp(const char *path)
{
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    assert_int_equal(ot_file_read(path, &b, NULL), OT_OK);
    return b;
}

static bool same_content(const struct ot_buf *a, const char *path)
{
    struct ot_buf b = slurp(path);
    bool same = a->len == b.len && memcmp(a->data, b.data, a->len) == 0;
    ot_buf_release(&b);
    return same;
}

static ino_t inode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* A simple name=value list, the test's own model of an environment. */
struct kv {
    int n;
    char name[64][64];
    char value[64][512];
};

static int kv_find(const struct kv *kv, const char *name)
{
    for (int i = 0; i < kv->n; i++)
        if (strcmp(kv->name[i], name) == 0)
            return i;
    return -1;
}

static void kv_set(struct kv *kv, const char *name, const char *value)
{
    int i = kv_find(kv, name);
    if (i < 0) {
        assert_true(kv->n < 64);
        i = kv->n++;
        snprintf(kv->name[i], sizeof(kv->name[i]), "%s", name);
    }
    snprintf(kv->value[i], sizeof(kv->value[i]), "%s", value);
}

static void kv_del(struct kv *kv, const char *name)
{
    int i = kv_find(kv, name);
    if (i < 0)
        return;
    kv->n--;
    memmove(kv->name[i], kv->name[i + 1], (size_t)(kv->n - i) * sizeof(kv->name[0]));
    memmove(kv->value[i], kv->value[i + 1], (size_t)(kv->n - i) * sizeof(kv->value[0]));
}

/* Splits "name=value<sep>" records, stopping at a record starting with stop (if not 0). */
static void kv_parse(struct kv *kv, const char *p, size_t len, char sep, char stop)
{
    kv->n = 0;
    for (size_t pos = 0; pos < len && p[pos] != stop;) {
        const char *rec = p + pos;
        const char *end = memchr(rec, sep, len - pos);
        size_t n = end ? (size_t)(end - rec) : len - pos;
        const char *eq = memchr(rec, '=', n);
        if (eq && rec[0] != '#') {
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(eq - rec), rec);
            char value[512];
            snprintf(value, sizeof(value), "%.*s", (int)(n - (size_t)(eq - rec) - 1), eq + 1);
            kv_set(kv, name, value);
        }
        pos += n + 1;
    }
}

static void kv_get(const struct kv *kv, const char *name, char *out, size_t n)
{
    int i = kv_find(kv, name);
    snprintf(out, n, "%s", i < 0 ? "" : kv->value[i]);
}

/* ---- sim ------------------------------------------------------------------------------------ */

static void sim_prepare(struct fx *f)
{
    fx_path(f, f->env, sizeof(f->env), "sim.env"); /* created by ag_boot_open */
}

static void sim_get(struct fx *f, const char *name, char *out, size_t n)
{
    struct ot_buf b = slurp(f->env);
    struct kv *kv = calloc(1, sizeof(*kv));
    kv_parse(kv, (const char *)b.data, b.len, '\n', 0);
    kv_get(kv, name, out, n);
    free(kv);
    ot_buf_release(&b);
}

static void sim_set(struct fx *f, const char *name, const char *value)
{
    struct ot_buf b = slurp(f->env);
    struct kv *kv = calloc(1, sizeof(*kv));
    kv_parse(kv, (const char *)b.data, b.len, '\n', 0);
    kv_set(kv, name, value);
    ot_buf_reset(&b);
    for (int i = 0; i < kv->n; i++)
        assert_int_equal(ot_buf_printf(&b, "%s=%s\n", kv->name[i], kv->value[i]), OT_OK);
    write_bytes(f->env, b.data, b.len);
    free(kv);
    ot_buf_release(&b);
}

/* ---- grub: a block editor of our own, as grub-editenv / save_env --------------------------- */

static void grub_write_block(const char *path, const char *body)
{
    char blk[1024];
    size_t h = strlen(GRUB_HEADER), n = strlen(body);
    assert_true(h + n <= sizeof(blk));
    memset(blk, '#', sizeof(blk));
    memcpy(blk, GRUB_HEADER, h);
    memcpy(blk + h, body, n);
    write_bytes(path, blk, sizeof(blk));
}

static void grub_prepare(struct fx *f)
{
    fx_path(f, f->env, sizeof(f->env), "grubenv");
    grub_write_block(f->env, ""); /* what `grub-editenv grubenv create` makes */
}

static struct kv *grub_read(struct fx *f)
{
    struct ot_buf b = slurp(f->env);
    assert_int_equal(b.len, 1024);
    assert_memory_equal(b.data, GRUB_HEADER, strlen(GRUB_HEADER));
    struct kv *kv = calloc(1, sizeof(*kv));
    size_t h = strlen(GRUB_HEADER);
    kv_parse(kv, (const char *)b.data + h, b.len - h, '\n', 0);
    ot_buf_release(&b);
    return kv;
}

static void grub_get(struct fx *f, const char *name, char *out, size_t n)
{
    struct kv *kv = grub_read(f);
    kv_get(kv, name, out, n);
    free(kv);
}

static void grub_set(struct fx *f, const char *name, const char *value)
{
    struct kv *kv = grub_read(f);
    kv_set(kv, name, value);
    struct ot_buf body;
    ot_buf_init(&body, 1024);
    for (int i = 0; i < kv->n; i++)
        assert_int_equal(ot_buf_printf(&body, "%s=%s\n", kv->name[i], kv->value[i]), OT_OK);
    grub_write_block(f->env, ot_buf_str(&body));
    ot_buf_release(&body);
    free(kv);
}

/* ---- uboot: images of our own, the way U-Boot's saveenv writes them ----------------------- */

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Writes copy (0 or 1) of the image: crc32 (little endian), flag, data ("a=1\0b=2\0\0"). */
static void ub_write_copy(const char *image, int copy, uint8_t flag, const char *data, size_t n)
{
    uint8_t blk[UB_SIZE];
    memset(blk, 0, sizeof(blk));
    assert_true(n <= UB_DATA);
    memcpy(blk + 5, data, n);
    uint32_t crc = crc32_ieee(blk + 5, UB_DATA);
    for (int i = 0; i < 4; i++)
        blk[i] = (uint8_t)(crc >> (8 * i));
    blk[4] = flag;
    int fd = open(image, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, blk, sizeof(blk), (off_t)copy * UB_SIZE), (ssize_t)UB_SIZE);
    close(fd);
}

/* The current copy (valid CRC, higher flag), like U-Boot's env_import_redund; -1: none. */
static int ub_current(const char *image, uint8_t data[UB_DATA], uint8_t *flag)
{
    struct ot_buf b = slurp(image);
    assert_int_equal(b.len, 2 * UB_SIZE);
    int cur = -1;
    for (int c = 0; c < 2; c++) {
        const uint8_t *blk = b.data + c * UB_SIZE;
        uint32_t crc = (uint32_t)blk[0] | (uint32_t)blk[1] << 8 | (uint32_t)blk[2] << 16 |
                       (uint32_t)blk[3] << 24;
        if (crc != crc32_ieee(blk + 5, UB_DATA))
            continue;
        /* The flag counts up and wraps; on a tie copy 0 wins. */
        if (cur < 0 || (int8_t)(uint8_t)(blk[4] - *flag) > 0) {
            cur = c;
            *flag = blk[4];
            memcpy(data, blk + 5, UB_DATA);
        }
    }
    ot_buf_release(&b);
    return cur;
}

static struct kv *ub_read(struct fx *f, int *copy, uint8_t *flag)
{
    uint8_t data[UB_DATA];
    *copy = ub_current(f->image, data, flag);
    assert_true(*copy >= 0);
    struct kv *kv = calloc(1, sizeof(*kv));
    kv_parse(kv, (const char *)data, UB_DATA, '\0', '\0');
    return kv;
}

static void ub_save(struct fx *f, const struct kv *kv, int copy, uint8_t flag)
{
    char data[UB_DATA];
    size_t n = 0;
    for (int i = 0; i < kv->n; i++)
        n += (size_t)snprintf(data + n, sizeof(data) - n, "%s=%s", kv->name[i], kv->value[i]) + 1;
    data[n++] = '\0';
    ub_write_copy(f->image, !copy, (uint8_t)(flag + 1), data, n);
}

static void uboot_prepare(struct fx *f)
{
    fx_path(f, f->image, sizeof(f->image), "uboot.env");
    fx_path(f, f->env, sizeof(f->env), "fw_env.config");
    uint8_t blank[2 * UB_SIZE];
    memset(blank, 0xff, sizeof(blank));
    write_bytes(f->image, blank, sizeof(blank));
    /* Copy 0 valid, copy 1 blank (CRC wrong): the next store goes to copy 1. */
    static const char data[] = "bootcmd=run otter_boot\0bootdelay=0\0board=test\0";
    ub_write_copy(f->image, 0, 1, data, sizeof(data));
    char cfg[512];
    snprintf(cfg, sizeof(cfg), "# device offset size\n%s 0x0 0x%x\n%s 0x%x 0x%x\n", f->image,
             UB_SIZE, f->image, UB_SIZE, UB_SIZE);
    write_str(f->env, cfg);
}

static void uboot_get(struct fx *f, const char *name, char *out, size_t n)
{
    int copy;
    uint8_t flag;
    struct kv *kv = ub_read(f, &copy, &flag);
    kv_get(kv, name, out, n);
    free(kv);
}

/* U-Boot's `setenv name ""` deletes; then saveenv. */
static void uboot_set(struct fx *f, const char *name, const char *value)
{
    int copy;
    uint8_t flag;
    struct kv *kv = ub_read(f, &copy, &flag);
    if (*value)
        kv_set(kv, name, value);
    else
        kv_del(kv, name);
    ub_save(f, kv, copy, flag);
    free(kv);
}

static const struct backend be_sim = {"sim", sim_prepare, sim_get, sim_set};
static const struct backend be_grub = {"grub", grub_prepare, grub_get, grub_set};
static const struct backend be_uboot = {"uboot", uboot_prepare, uboot_get, uboot_set};

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    chmod(p, 0700);
    return remove(p);
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->be = *state;
    snprintf(f->dir, sizeof(f->dir), "/tmp/otter-test-boot-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    fx_path(f, f->cmdline, sizeof(f->cmdline), "cmdline");
    write_str(f->cmdline, CMDLINE_A);
    f->be->prepare(f);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    int r = nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return r;
}

static struct ag_boot *fx_open_max(struct fx *f, unsigned max_tries)
{
    struct ag_boot_config cfg = {f->be->kind, f->env, f->cmdline, max_tries};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_open(&cfg, &b, &d);
    if (err == OT_ERR_UNSUPPORTED && strcmp(f->be->kind, "uboot") == 0) {
        assert_string_equal(d.msg, "uboot boot: built without libubootenv");
        f->unsupported = true;
        return NULL;
    }
    if (err)
        fail_msg("open %s: %s: %s", f->be->kind, ot_err_name(err), d.msg);
    return b;
}

/* Opens the fixture's backend; a uboot test on a build without libubootenv is skipped, saying
 * so (test_uboot_unsupported checks that case properly). */
#define OPEN(f, max)                                                                               \
    ({                                                                                             \
        struct ag_boot *b_ = fx_open_max(f, max);                                                  \
        if (!b_) {                                                                                 \
            print_message("# SKIP: otter built without libubootenv\n");                            \
            skip();                                                                                \
        }                                                                                          \
        b_;                                                                                        \
    })

static struct ag_boot_state read_state(struct ag_boot *b)
{
    struct ag_boot_state st;
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_read(b, &st, &d);
    if (err)
        fail_msg("read: %s: %s", ot_err_name(err), d.msg);
    return st;
}

static void ok(enum ot_err err, const struct ot_diag *d)
{
    if (err)
        fail_msg("%s: %s", ot_err_name(err), d->msg);
}

/* The bootloader at power-on. sim: the real ag_boot_sim_power_on. grub/uboot: the decision of
 * the grub.cfg / boot script in docs/agent-boot.md, then the kernel command line it passes. */
static void power_on(struct fx *f, char slot[2])
{
    if (strcmp(f->be->kind, "sim") == 0) {
        struct ot_diag d = {0};
        ok(ag_boot_sim_power_on(f->env, slot, &d), &d);
        return;
    }
    char def[16], try[16], count[16], max[16];
    f->be->bl_get(f, "otter_default", def, sizeof(def));
    f->be->bl_get(f, "otter_try", try, sizeof(try));
    f->be->bl_get(f, "otter_bootcount", count, sizeof(count));
    f->be->bl_get(f, "otter_maxtries", max, sizeof(max));
    const char *boot = *def ? def : "a";
    if (*try) {
        int c = *count ? count[0] - '0' : 0, m = *max ? max[0] - '0' : 3;
        if (c < m) {
            char next[2] = {(char)('0' + c + 1), 0};
            f->be->bl_set(f, "otter_bootcount", next);
            boot = try;
        } else {
            f->be->bl_set(f, "otter_try", "");
        }
    }
    slot[0] = boot[0];
    slot[1] = '\0';
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda%d ro otter.slot=%s\n",
             slot[0] == 'a' ? 2 : 3, slot);
    write_str(f->cmdline, cmd);
}

static void assert_state(const struct ag_boot_state *st, const char *booted, const char *def,
                         const char *try, unsigned count, unsigned max)
{
    assert_string_equal(st->booted, booted);
    assert_string_equal(st->default_slot, def);
    assert_string_equal(st->try_slot, try);
    assert_int_equal(st->bootcount, count);
    assert_int_equal(st->max_tries, max);
}

/* The file whose bytes change on a write (uboot: the image, not fw_env.config). */
static const char *store_path(struct fx *f)
{
    return strcmp(f->be->kind, "uboot") == 0 ? f->image : f->env;
}

/* ---- the protocol, on every backend ------------------------------------------------------- */

static void test_fresh_defaults(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "", 0, 3);
    assert_string_equal(ag_boot_other(st.booted), "b");
    ag_boot_close(b);
}

static void test_try_boots_tried_slot(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "b", 0, 3);
    char slot[2];
    power_on(f, slot);
    assert_string_equal(slot, "b");
    st = read_state(b);
    assert_state(&st, "b", "a", "b", 1, 3);
    ag_boot_close(b);
}

static void test_fallback_after_max_tries(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 2);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    char slot[2];
    for (unsigned i = 1; i <= 2; i++) {
        power_on(f, slot);
        assert_string_equal(slot, "b");
        struct ag_boot_state st = read_state(b);
        assert_state(&st, "b", "a", "b", i, 2);
    }
    power_on(f, slot); /* the third: out of tries */
    assert_string_equal(slot, "a");
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "", 2, 2); /* bootcount tells how far the trial got */
    power_on(f, slot);
    assert_string_equal(slot, "a");
    ag_boot_close(b);
}

static void test_commit_makes_default(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    char slot[2];
    ok(ag_boot_try(b, "b", &d), &d);
    power_on(f, slot);
    ok(ag_boot_commit(b, "b", &d), &d);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "b", "b", "", 0, 3);
    for (int i = 0; i < 5; i++) {
        power_on(f, slot);
        assert_string_equal(slot, "b");
    }
    st = read_state(b);
    assert_state(&st, "b", "b", "", 0, 3);
    ag_boot_close(b);
}

static void test_rollback_clears_trial(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    char slot[2];
    ok(ag_boot_try(b, "b", &d), &d);
    power_on(f, slot);
    assert_string_equal(slot, "b");
    ok(ag_boot_rollback(b, &d), &d); /* the health check failed */
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "b", "a", "", 0, 3);
    power_on(f, slot);
    assert_string_equal(slot, "a");
    st = read_state(b);
    assert_state(&st, "a", "a", "", 0, 3);
    ag_boot_close(b);
}

static void test_idempotent(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    ok(ag_boot_commit(b, "b", &d), &d);
    struct ot_buf before = slurp(store_path(f));
    ino_t ino = inode_of(store_path(f));
    /* Repeats, and a rollback with no trial armed: nothing to write, nothing written. */
    ok(ag_boot_commit(b, "b", &d), &d);
    ok(ag_boot_rollback(b, &d), &d);
    ok(ag_boot_rollback(b, &d), &d);
    assert_true(same_content(&before, store_path(f)));
    assert_int_equal(inode_of(store_path(f)), ino);
    ok(ag_boot_try(b, "a", &d), &d);
    ot_buf_release(&before);
    before = slurp(store_path(f));
    ok(ag_boot_try(b, "a", &d), &d);
    assert_true(same_content(&before, store_path(f)));
    struct ag_boot_state st = read_state(b);
    assert_string_equal(st.default_slot, "b");
    assert_string_equal(st.try_slot, "a");
    ot_buf_release(&before);
    ag_boot_close(b);
}

static void test_bad_slot_argument(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    assert_int_equal(ag_boot_try(b, "c", &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "not a slot"));
    assert_int_equal(ag_boot_try(b, "", NULL), OT_ERR_INVALID);
    assert_int_equal(ag_boot_try(b, "ab", NULL), OT_ERR_INVALID);
    assert_int_equal(ag_boot_commit(b, NULL, NULL), OT_ERR_INVALID);
    assert_int_equal(ag_boot_commit(b, "A", NULL), OT_ERR_INVALID);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "", 0, 3);
    ag_boot_close(b);
}

/* A bad value in the environment is refused, by read and by every write (nothing is written
 * over it). */
static void test_bad_env_values(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    static const struct {
        const char *name, *value, *msg;
        enum ot_err err;
    } cases[] = {
        {"otter_default", "c", "otter_default=c: not a slot", OT_ERR_FORMAT},
        {"otter_try", "slot_b", "otter_try=slot_b: not a slot", OT_ERR_FORMAT},
        {"otter_booted", "B", "otter_booted=B: not a slot", OT_ERR_FORMAT},
        {"otter_bootcount", "x1", "otter_bootcount=x1: not a number 0..9", OT_ERR_FORMAT},
        {"otter_bootcount", "10", "otter_bootcount=10", OT_ERR_RANGE},
        {"otter_maxtries", "0", "otter_maxtries=0: not a number 1..9", OT_ERR_RANGE},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        char old[16];
        f->be->bl_get(f, cases[i].name, old, sizeof(old));
        f->be->bl_set(f, cases[i].name, cases[i].value);
        struct ot_diag d = {0};
        struct ag_boot_state st;
        assert_int_equal(ag_boot_read(b, &st, &d), cases[i].err);
        assert_non_null(strstr(d.msg, cases[i].msg));
        if (strcmp(cases[i].name, "otter_booted") != 0) {
            struct ot_buf before = slurp(store_path(f));
            assert_int_equal(ag_boot_rollback(b, NULL), cases[i].err);
            assert_int_equal(ag_boot_try(b, "b", NULL), cases[i].err);
            assert_true(same_content(&before, store_path(f)));
            ot_buf_release(&before);
        }
        f->be->bl_set(f, cases[i].name, old);
        (void)read_state(b);
    }
    ag_boot_close(b);
}

static void restore_fsize(struct rlimit *old)
{
    assert_int_equal(setrlimit(RLIMIT_FSIZE, old), 0);
}

/* A write that fails half way (the file system refuses more bytes) leaves the old environment,
 * whole and valid, and returns the error. */
static void test_failed_write_keeps_old(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_buf before = slurp(store_path(f));
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    /* sim: its ~100 bytes; grub: its 1024; uboot: the second copy, at 0x4000. */
    lim.rlim_cur = strcmp(f->be->kind, "uboot") == 0 ? UB_SIZE : 16;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_try(b, "b", &d);
    restore_fsize(&old);
    assert_int_not_equal(err, OT_OK);
    assert_true(d.msg[0] != '\0');
    assert_true(same_content(&before, store_path(f)));
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "", 0, 3);
    char slot[2];
    power_on(f, slot);
    assert_string_equal(slot, "a");
    /* And with room again, the same call works. */
    ok(ag_boot_try(b, "b", &d), &d);
    st = read_state(b);
    assert_string_equal(st.try_slot, "b");
    ot_buf_release(&before);
    ag_boot_close(b);
}

/* ---- the running slot from the kernel command line (sim file without otter_booted) --------- */

static void cmdline_case(struct fx *f, const char *cmdline, enum ot_err want, const char *slot,
                         const char *msg)
{
    write_str(f->env, "otter_default=a\notter_try=\notter_bootcount=0\notter_maxtries=3\n");
    write_str(f->cmdline, cmdline);
    struct ag_boot_config cfg = {"sim", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_open(&cfg, &b, &d);
    if (err != want)
        fail_msg("cmdline '%s': %s, want %s (%s)", cmdline, ot_err_name(err), ot_err_name(want),
                 d.msg);
    if (!err) {
        struct ag_boot_state st = read_state(b);
        assert_string_equal(st.booted, slot);
        ag_boot_close(b);
    } else {
        assert_null(b);
        assert_non_null(strstr(d.msg, msg));
    }
}

static void test_cmdline_slot(void **state)
{
    struct fx *f = *state;
    cmdline_case(f, "BOOT_IMAGE=/vmlinuz root=/dev/mmcblk0p3 rootwait otter.slot=b quiet\n",
                 OT_OK, "b", NULL);
    cmdline_case(f, "otter.slot=a", OT_OK, "a", NULL);
    cmdline_case(f, "console=ttyS0\totter.slot=\"b\"\n", OT_OK, "b", NULL);
    /* Quotes group: the otter.slot=a inside the quoted value is not a parameter. */
    cmdline_case(f, "dyndbg=\"file x otter.slot=a +p\" otter.slot=b", OT_OK, "b", NULL);
    /* The last one wins, as with the kernel's own parameters. */
    cmdline_case(f, "otter.slot=a ro otter.slot=b", OT_OK, "b", NULL);
    /* Other parameters that merely start alike are not ours. */
    cmdline_case(f, "otter.slots=zz otter.slot_x=q otter.slot=a", OT_OK, "a", NULL);
}

static void test_cmdline_missing(void **state)
{
    struct fx *f = *state;
    cmdline_case(f, "root=/dev/sda2 ro quiet\n", OT_ERR_CONFIG, NULL,
                 "the bootloader must pass otter.slot=a or otter.slot=b");
    cmdline_case(f, "", OT_ERR_CONFIG, NULL, "no otter.slot=");
    /* After "--" the arguments are init's, not the kernel's. */
    cmdline_case(f, "root=/dev/sda2 -- otter.slot=b", OT_ERR_CONFIG, NULL, "no otter.slot=");
    /* No command line file at all. */
    unlink(f->cmdline);
    write_str(f->env, "otter_default=a\n");
    struct ag_boot_config cfg = {"sim", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "otter.slot="));
}

static void test_cmdline_bad_value(void **state)
{
    struct fx *f = *state;
    cmdline_case(f, "otter.slot=c", OT_ERR_FORMAT, NULL, "otter.slot=c: not a slot");
    cmdline_case(f, "ro otter.slot= quiet", OT_ERR_FORMAT, NULL, "not a slot");
    cmdline_case(f, "otter.slot", OT_ERR_FORMAT, NULL, "not a slot");
    cmdline_case(f, "otter.slot=ab", OT_ERR_FORMAT, NULL, "not a slot");
    cmdline_case(f, "otter.slot=B", OT_ERR_FORMAT, NULL, "not a slot");
    char longv[200];
    snprintf(longv, sizeof(longv), "otter.slot=a%0150d", 0);
    cmdline_case(f, longv, OT_ERR_FORMAT, NULL, "not a slot");
}

/* otter_booted in the environment (the sim bootloader writes it) is believed before the
 * command line; empty counts as absent. */
static void test_env_booted_before_cmdline(void **state)
{
    struct fx *f = *state;
    write_str(f->env, "otter_booted=b\n");
    write_str(f->cmdline, "otter.slot=a\n");
    struct ag_boot_config cfg = {"sim", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    ok(ag_boot_open(&cfg, &b, &d), &d);
    assert_string_equal(read_state(b).booted, "b");
    write_str(f->env, "otter_booted=\n");
    assert_string_equal(read_state(b).booted, "a");
    ag_boot_close(b);
}

/* ---- sim ------------------------------------------------------------------------------------- */

static void test_sim_open_creates_file(void **state)
{
    struct fx *f = *state;
    assert_int_not_equal(access(f->env, F_OK), 0);
    struct ag_boot *b = OPEN(f, 5);
    struct ot_buf c = slurp(f->env);
    const char *s = ot_buf_str(&c);
    assert_non_null(strstr(s, "\notter_default=a\n"));
    assert_non_null(strstr(s, "\notter_try=\n"));
    assert_non_null(strstr(s, "\notter_bootcount=0\n"));
    assert_non_null(strstr(s, "\notter_maxtries=5\n"));
    assert_non_null(strstr(s, "\notter_booted=a\n"));
    ot_buf_release(&c);
    /* An existing file is used as it is. */
    ag_boot_close(b);
    f->be->bl_set(f, "otter_default", "b");
    f->be->bl_set(f, "otter_booted", "b");
    b = OPEN(f, 5);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "b", "b", "", 0, 5);
    ag_boot_close(b);
}

static void test_sim_power_on_fresh(void **state)
{
    struct fx *f = *state;
    char slot[2] = "x";
    struct ot_diag d = {0};
    ok(ag_boot_sim_power_on(f->env, slot, &d), &d);
    assert_string_equal(slot, "a");
    char v[16];
    f->be->bl_get(f, "otter_booted", v, sizeof(v));
    assert_string_equal(v, "a");
    /* No file and no directory for it: an error, not a crash. */
    char bad[200];
    snprintf(bad, sizeof(bad), "%s/nodir/sim.env", f->dir);
    assert_int_equal(ag_boot_sim_power_on(bad, slot, &d), OT_ERR_NOENT);
}

static void test_sim_corrupt_refused(void **state)
{
    struct fx *f = *state;
    static const char *const bad[] = {
        "otter_default=a\njust words\n", "=a\n", "otter_default=a\notter_default=b\n",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        write_str(f->env, bad[i]);
        struct ag_boot_config cfg = {"sim", f->env, f->cmdline, 0};
        struct ag_boot *b = NULL;
        struct ot_diag d = {0};
        assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_FORMAT);
        assert_non_null(strstr(d.msg, f->env));
        assert_non_null(strstr(d.msg, "line "));
        char slot[2];
        assert_int_equal(ag_boot_sim_power_on(f->env, slot, NULL), OT_ERR_FORMAT);
    }
    write_bytes(f->env, "otter_default=a\0\n", 17);
    char slot[2];
    assert_int_equal(ag_boot_sim_power_on(f->env, slot, NULL), OT_ERR_FORMAT);
}

/* ---- grub ------------------------------------------------------------------------------------ */

static bool have_program(const char *name)
{
    const char *path = getenv("PATH");
    char buf[512];
    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
        if (access(buf, X_OK) == 0)
            return true;
        path = end ? end + 1 : NULL;
    }
    return false;
}


static void test_grub_exact_block(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 4);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    struct ot_buf c = slurp(f->env);
    assert_int_equal(c.len, 1024);
    static const char want[] = GRUB_HEADER "otter_try=b\notter_bootcount=0\notter_maxtries=4\n";
    assert_memory_equal(c.data, want, strlen(want));
    for (size_t i = strlen(want); i < c.len; i++)
        assert_int_equal(c.data[i], '#');
    ot_buf_release(&c);
    ok(ag_boot_commit(b, "b", &d), &d);
    c = slurp(f->env);
    static const char want2[] =
        GRUB_HEADER "otter_try=\notter_bootcount=0\notter_maxtries=4\notter_default=b\n";
    assert_int_equal(c.len, 1024);
    assert_memory_equal(c.data, want2, strlen(want2));
    assert_int_equal(c.data[strlen(want2)], '#');
    ot_buf_release(&c);
    ag_boot_close(b);
}

/* Variables and comments otter does not own stay byte for byte, escapes included, in order. */
static void test_grub_keeps_unknown(void **state)
{
    struct fx *f = *state;
    static const char body[] = "saved_entry=Debian GNU/Linux\n"
                               "# a comment kept\n"
                               "otter_default=a\n"
                               "odd=back\\\\slash and \\\nnewline\n"
                               "next_entry=\n";
    grub_write_block(f->env, body);
    chmod(f->env, 0600);
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    ok(ag_boot_commit(b, "b", &d), &d);
    struct ot_buf c = slurp(f->env);
    static const char want[] = GRUB_HEADER "saved_entry=Debian GNU/Linux\n"
                                           "# a comment kept\n"
                                           "otter_default=b\n"
                                           "odd=back\\\\slash and \\\nnewline\n"
                                           "next_entry=\n"
                                           "otter_try=\notter_bootcount=0\notter_maxtries=3\n";
    assert_int_equal(c.len, 1024);
    assert_memory_equal(c.data, want, strlen(want));
    ot_buf_release(&c);
    struct stat st;
    assert_int_equal(stat(f->env, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    ag_boot_close(b);
}

static void run(const char *cmd)
{
    int r = system(cmd);
    if (r != 0)
        fail_msg("'%s' exited with %d", cmd, r);
}

/* GRUB's own tool reads what the agent wrote, and the agent reads what the tool wrote (with
 * the "# WARNING" comment Debian's grub-editenv puts in, and escapes). */
static void test_grub_editenv_agrees(void **state)
{
    struct fx *f = *state;
    if (!have_program("grub-editenv")) {
        print_message("# SKIP: grub-editenv (grub-common) not installed\n");
        skip();
    }
    char cmd[512];
    unlink(f->env);
    snprintf(cmd, sizeof(cmd), "grub-editenv %s create && grub-editenv %s set "
             "'saved_entry=a\\b' 'multi=line1\nline2' otter_maxtries=2", f->env, f->env);
    run(cmd);
    struct ag_boot *b = OPEN(f, 0);
    struct ag_boot_state st = read_state(b);
    assert_state(&st, "a", "a", "", 0, 2);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    snprintf(cmd, sizeof(cmd), "grub-editenv %s list", f->env);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[2048];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, "saved_entry=a\\b\nmulti=line1\nline2\notter_maxtries=3\n"
                             "otter_try=b\notter_bootcount=0\n");
    /* GRUB's save_env after one boot of the trial. */
    snprintf(cmd, sizeof(cmd), "grub-editenv %s set otter_bootcount=1", f->env);
    run(cmd);
    write_str(f->cmdline, "otter.slot=b\n");
    st = read_state(b);
    assert_state(&st, "b", "a", "b", 1, 3);
    ag_boot_close(b);
}

static void expect_grub_refused(struct fx *f, const void *data, size_t len, enum ot_err want,
                                const char *msg)
{
    write_bytes(f->env, data, len);
    struct ag_boot_config cfg = {"grub", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), want);
    assert_null(b);
    assert_non_null(strstr(d.msg, f->env));
    if (!strstr(d.msg, msg))
        fail_msg("message '%s' lacks '%s'", d.msg, msg);
}

static void test_grub_refuses_bad_size(void **state)
{
    struct fx *f = *state;
    char blk[1100];
    memset(blk, '#', sizeof(blk));
    memcpy(blk, GRUB_HEADER, strlen(GRUB_HEADER));
    expect_grub_refused(f, blk, 1023, OT_ERR_FORMAT, "1023 bytes, expected 1024");
    expect_grub_refused(f, blk, 1025, OT_ERR_FORMAT, "larger than 1024 bytes");
    expect_grub_refused(f, blk, 0, OT_ERR_FORMAT, "0 bytes, expected 1024");
    expect_grub_refused(f, blk, strlen(GRUB_HEADER), OT_ERR_FORMAT, "expected 1024");
}

static void test_grub_refuses_bad_header(void **state)
{
    struct fx *f = *state;
    char blk[1024];
    memset(blk, '#', sizeof(blk));
    memcpy(blk, "# GRUB Environment Blok\n", 24);
    expect_grub_refused(f, blk, sizeof(blk), OT_ERR_FORMAT, "no \"# GRUB Environment Block\"");
    memset(blk, 0, sizeof(blk));
    expect_grub_refused(f, blk, sizeof(blk), OT_ERR_FORMAT, "header");
}

static void test_grub_refuses_bad_body(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *body, *msg;
    } cases[] = {
        {"otter_default=a\nno equals sign\n", "line 3: expected name=value"},
        {"=a\n", "line 2: empty variable name"},
        {"x=1\nx=2\n", "line 3: x set twice"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        grub_prepare(f);
        grub_write_block(f->env, cases[i].body);
        struct ot_buf c = slurp(f->env);
        expect_grub_refused(f, c.data, c.len, OT_ERR_FORMAT, cases[i].msg);
        ot_buf_release(&c);
    }
    /* A NUL inside, and a variable running into the end of the block (no '\n', no padding). */
    char blk[1024];
    memset(blk, '#', sizeof(blk));
    memcpy(blk, GRUB_HEADER "a=1\n", 29);
    blk[40] = '\0';
    expect_grub_refused(f, blk, sizeof(blk), OT_ERR_FORMAT, "NUL");
    memset(blk, 'x', sizeof(blk));
    memcpy(blk, GRUB_HEADER "a=", 27);
    expect_grub_refused(f, blk, sizeof(blk), OT_ERR_FORMAT, "no end of line");
    blk[sizeof(blk) - 1] = '\\';
    expect_grub_refused(f, blk, sizeof(blk), OT_ERR_FORMAT, "backslash escape");
}

static void test_grub_overflow_refused(void **state)
{
    struct fx *f = *state;
    char body[1024];
    /* Header 25 + "big=" 4 + 960 + '\n' = 990 bytes: otter's variables no longer fit. */
    memcpy(body, "big=", 4);
    memset(body + 4, 'v', 960);
    memcpy(body + 964, "\n", 2);
    grub_write_block(f->env, body);
    struct ag_boot *b = OPEN(f, 0);
    struct ot_buf before = slurp(f->env);
    struct ot_diag d = {0};
    assert_int_equal(ag_boot_try(b, "b", &d), OT_ERR_LIMIT);
    assert_non_null(strstr(d.msg, "more than the 1024 of a GRUB environment block"));
    assert_true(same_content(&before, f->env));
    assert_string_equal(read_state(b).try_slot, "");
    ot_buf_release(&before);
    ag_boot_close(b);
}

static void test_grub_missing_file(void **state)
{
    struct fx *f = *state;
    unlink(f->env);
    struct ag_boot_config cfg = {"grub", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "grub-editenv"));
    assert_int_not_equal(access(f->env, F_OK), 0); /* not created behind GRUB's back */
}

/* ---- uboot ----------------------------------------------------------------------------------- */

static void test_uboot_keeps_other_vars(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    int copy;
    uint8_t flag;
    struct kv *kv = ub_read(f, &copy, &flag);
    assert_int_equal(copy, 1); /* written to the other copy, with a higher flag */
    assert_int_equal(flag, 2);
    char v[64];
    kv_get(kv, "bootcmd", v, sizeof(v));
    assert_string_equal(v, "run otter_boot");
    kv_get(kv, "board", v, sizeof(v));
    assert_string_equal(v, "test");
    kv_get(kv, "otter_try", v, sizeof(v));
    assert_string_equal(v, "b");
    assert_true(kv_find(kv, "otter_booted") < 0);
    free(kv);
    /* No trial: otter_try is deleted, not stored empty. */
    ok(ag_boot_commit(b, "b", &d), &d);
    kv = ub_read(f, &copy, &flag);
    assert_int_equal(copy, 0);
    assert_true(kv_find(kv, "otter_try") < 0);
    kv_get(kv, "otter_default", v, sizeof(v));
    assert_string_equal(v, "b");
    kv_get(kv, "bootcmd", v, sizeof(v));
    assert_string_equal(v, "run otter_boot");
    free(kv);
    ag_boot_close(b);
}

/* What libubootenv's own tool sees in what the agent wrote. */
static void test_uboot_fw_printenv_agrees(void **state)
{
    struct fx *f = *state;
    if (!have_program("fw_printenv")) {
        print_message("# SKIP: fw_printenv (libubootenv-tool) not installed\n");
        skip();
    }
    struct ag_boot *b = OPEN(f, 0);
    struct ot_diag d = {0};
    ok(ag_boot_try(b, "b", &d), &d);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "fw_printenv -c %s 2>&1", f->env);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_non_null(strstr(out, "bootcmd=run otter_boot\n"));
    assert_non_null(strstr(out, "otter_try=b\n"));
    assert_non_null(strstr(out, "otter_bootcount=0\n"));
    assert_non_null(strstr(out, "otter_maxtries=3\n"));
    ag_boot_close(b);
}

static void test_uboot_blank_env_refused(void **state)
{
    struct fx *f = *state;
    uint8_t blank[2 * UB_SIZE];
    memset(blank, 0xff, sizeof(blank));
    write_bytes(f->image, blank, sizeof(blank));
    struct ag_boot_config cfg = {"uboot", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_open(&cfg, &b, &d);
    if (err == OT_ERR_UNSUPPORTED) {
        print_message("# SKIP: otter built without libubootenv\n");
        skip();
    }
    assert_int_equal(err, OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "no valid U-Boot environment"));
    /* Nothing was written: U-Boot keeps running on its built-in default. */
    struct ot_buf c = slurp(f->image);
    for (size_t i = 0; i < c.len; i++)
        assert_int_equal(c.data[i], 0xff);
    ot_buf_release(&c);
}

static void test_uboot_bad_config(void **state)
{
    struct fx *f = *state;
    struct ag_boot_config cfg = {"uboot", NULL, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    char missing[200];
    cfg.env_path = fx_path(f, missing, sizeof(missing), "no-fw_env.config");
    enum ot_err err = ag_boot_open(&cfg, &b, &d);
    if (err == OT_ERR_UNSUPPORTED) {
        print_message("# SKIP: otter built without libubootenv\n");
        skip();
    }
    assert_int_equal(err, OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "no-fw_env.config"));
    /* A config naming a device that does not exist. */
    char cfgtext[300];
    snprintf(cfgtext, sizeof(cfgtext), "%s/nonexistent 0x0 0x4000\n", f->dir);
    write_str(f->env, cfgtext);
    cfg.env_path = f->env;
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "not a usable fw_env.config"));
}

/* On a build without libubootenv, uboot is refused with the reason; with it, it opens. */
static void test_uboot_unsupported(void **state)
{
    struct fx *f = *state;
    struct ag_boot_config cfg = {"uboot", f->env, f->cmdline, 0};
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ag_boot_open(&cfg, &b, &d);
    if (err == OT_ERR_UNSUPPORTED) {
        assert_string_equal(d.msg, "uboot boot: built without libubootenv");
        assert_null(b);
        return;
    }
    ok(err, &d);
    ag_boot_close(b);
}

/* ---- configuration ------------------------------------------------------------------------- */

static void test_open_bad_config(void **state)
{
    struct fx *f = *state;
    struct ag_boot *b = NULL;
    struct ot_diag d = {0};
    struct ag_boot_config cfg = {"lilo", f->env, f->cmdline, 0};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "'lilo': unknown (sim, grub or uboot)"));
    cfg.kind = NULL;
    assert_int_equal(ag_boot_open(&cfg, &b, NULL), OT_ERR_CONFIG);
    cfg = (struct ag_boot_config){"sim", f->env, f->cmdline, 10};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "1..9"));
    cfg = (struct ag_boot_config){"sim", NULL, f->cmdline, 0};
    assert_int_equal(ag_boot_open(&cfg, &b, &d), OT_ERR_CONFIG);
    assert_int_equal(ag_boot_open(NULL, &b, NULL), OT_ERR_INVALID);
    assert_null(b);
    ag_boot_close(NULL);
}

static void test_other(void **state)
{
    (void)state;
    assert_string_equal(ag_boot_other("a"), "b");
    assert_string_equal(ag_boot_other(AG_SLOT_B), "a");
    assert_null(ag_boot_other("c"));
    assert_null(ag_boot_other(""));
    assert_null(ag_boot_other(NULL));
}

/* Named "<backend>: <test>" in the TAP output. */
#define ON(be, t) {#be ": " #t, t, fx_setup, fx_teardown, (void *)&be}
#define ALL(t) ON(be_sim, t), ON(be_grub, t), ON(be_uboot, t)

int main(void)
{
    /* Write failures are provoked with RLIMIT_FSIZE: get EFBIG, not the signal. */
    signal(SIGXFSZ, SIG_IGN);
    const struct CMUnitTest tests[] = {
        ALL(test_fresh_defaults),
        ALL(test_try_boots_tried_slot),
        ALL(test_fallback_after_max_tries),
        ALL(test_commit_makes_default),
        ALL(test_rollback_clears_trial),
        ALL(test_idempotent),
        ALL(test_bad_slot_argument),
        ALL(test_bad_env_values),
        ALL(test_failed_write_keeps_old),
        ON(be_sim, test_cmdline_slot),
        ON(be_sim, test_cmdline_missing),
        ON(be_sim, test_cmdline_bad_value),
        ON(be_sim, test_env_booted_before_cmdline),
        ON(be_sim, test_sim_open_creates_file),
        ON(be_sim, test_sim_power_on_fresh),
        ON(be_sim, test_sim_corrupt_refused),
        ON(be_grub, test_grub_exact_block),
        ON(be_grub, test_grub_keeps_unknown),
        ON(be_grub, test_grub_editenv_agrees),
        ON(be_grub, test_grub_refuses_bad_size),
        ON(be_grub, test_grub_refuses_bad_header),
        ON(be_grub, test_grub_refuses_bad_body),
        ON(be_grub, test_grub_overflow_refused),
        ON(be_grub, test_grub_missing_file),
        ON(be_uboot, test_uboot_keeps_other_vars),
        ON(be_uboot, test_uboot_fw_printenv_agrees),
        ON(be_uboot, test_uboot_blank_env_refused),
        ON(be_uboot, test_uboot_bad_config),
        ON(be_uboot, test_uboot_unsupported),
        ON(be_sim, test_open_bad_config),
        cmocka_unit_test(test_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
