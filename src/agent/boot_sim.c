/* The simulated bootloader: its "environment" is a small text file of name=value lines ('#'
 * comments and empty lines allowed, no escapes, at most AG__SIM_FILE_MAX bytes), replaced
 * whole with ot_file_write_atomic on every change. ag_boot_sim_power_on() plays U-Boot's or
 * GRUB's part at a power-on, with exactly the decision the grub.cfg and U-Boot snippets in
 * docs/agent-boot.md make. Used by the tests, the torture test and otter-sim. */
#include <errno.h>

#include "otter/file.h"

#include "boot_backend.h"

#define SIM_MODE 0644

static enum ot_err sim_load_file(const char *path, struct ag__env *env, struct ot_diag *d)
{
    _cleanup_(ot_buf_release) struct ot_buf buf;
    ot_buf_init(&buf, AG__SIM_FILE_MAX);
    enum ot_err err = ot_file_read(path, &buf, d);
    if (err)
        return err;
    return ag__env_parse(env, (const char *)ot_buf_str(&buf), buf.len, AG__ENV_PLAIN, path, d);
}

static enum ot_err sim_format(const char *path, const struct ag__env *env, struct ot_buf *out,
                              struct ot_diag *d)
{
    enum ot_err err = ag__env_format(env, out);
    if (err == OT_ERR_LIMIT)
        return ot_diag_set(d, err, "%s: more than %u bytes of variables", path,
                           AG__SIM_FILE_MAX);
    if (err)
        return ot_diag_set(d, err, "%s: %s", path, ot_strerror(err));
    return OT_OK;
}

static enum ot_err sim_write(const char *path, const struct ag__env *env, struct ot_diag *d)
{
    _cleanup_(ot_buf_release) struct ot_buf out;
    ot_buf_init(&out, AG__SIM_FILE_MAX);
    enum ot_err err = sim_format(path, env, &out, d);
    if (err)
        return err;
    return ot_file_write_atomic(path, out.data, out.len, SIM_MODE, d);
}

/* Creates the file unless it exists, for a new device: slot a is the default and what runs.
 * link(2)-based commit_new: a file another process created meanwhile is kept, never replaced. */
static enum ot_err sim_ensure(const char *path, unsigned max_tries, struct ot_diag *d)
{
    if (access(path, F_OK) == 0)
        return OT_OK;
    if (errno != ENOENT)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    char text[256];
    int n = snprintf(text, sizeof(text),
                     "# otter: simulated bootloader environment (docs/agent-boot.md)\n"
                     "%s=%s\n%s=\n%s=0\n%s=%u\n%s=%s\n",
                     AG__VAR_DEFAULT, AG_SLOT_A, AG__VAR_TRY, AG__VAR_BOOTCOUNT, AG__VAR_MAXTRIES,
                     max_tries, AG__VAR_BOOTED, AG_SLOT_A);
    struct ot_atomic_file f;
    enum ot_err err = ot_atomic_file_open(&f, path, SIM_MODE, d);
    if (err)
        return err;
    err = ot_write_all(f.fd, text, (size_t)n, d);
    if (!err)
        err = ot_atomic_file_commit_new(&f, d);
    ot_atomic_file_abort(&f);
    return err == OT_ERR_EXISTS ? OT_OK : err;
}

static enum ot_err sim_open(struct ag_boot *b, struct ot_diag *d)
{
    return sim_ensure(b->env_path, b->max_tries, d);
}

static void sim_close(struct ag_boot *b)
{
    (void)b;
}

static enum ot_err sim_load(struct ag_boot *b, struct ag__env *env, struct ot_diag *d)
{
    return sim_load_file(b->env_path, env, d);
}

static enum ot_err sim_store(struct ag_boot *b, const struct ag__env *env, struct ot_diag *d)
{
    return sim_write(b->env_path, env, d);
}

const struct ag__boot_ops ag__boot_sim_ops = {
    .kind = "sim",
    .default_env_path = NULL,
    .open = sim_open,
    .close = sim_close,
    .load = sim_load,
    .store = sim_store,
};

/* The bootloader's decision (boot.h): the trial slot while it has tries left, counting this
 * one; past them the trial is dropped and the default boots. On that fallback otter_bootcount
 * is left as it was (= otter_maxtries): it records how many tries the failed trial had until the
 * agent's next try, commit or rollback resets it. */
static const char *choose_slot(struct ag_boot_state *st)
{
    if (!st->try_slot[0])
        return st->default_slot;
    if (st->bootcount < st->max_tries) {
        st->bootcount++;
        return st->try_slot;
    }
    st->try_slot[0] = '\0';
    return st->default_slot;
}

static enum ot_err power_on(const char *path, struct ag__env *env, char ret_slot[2],
                            struct ot_diag *d)
{
    struct ag_boot_state st;
    enum ot_err err = ag__boot_decode(env, AG__MAX_TRIES_DEFAULT, path, &st, d);
    if (err)
        return err;
    const char *slot = choose_slot(&st);
    char count[4];
    snprintf(count, sizeof(count), "%u", st.bootcount);
    err = ag__env_set(env, AG__VAR_TRY, st.try_slot);
    if (!err)
        err = ag__env_set(env, AG__VAR_BOOTCOUNT, count);
    if (!err)
        err = ag__env_set(env, AG__VAR_BOOTED, slot);
    if (err)
        return ot_diag_set(d, err, "%s: %s", path, ot_strerror(err));
    err = sim_write(path, env, d);
    if (err)
        return err;
    memcpy(ret_slot, slot, 2);
    return OT_OK;
}

enum ot_err ag_boot_sim_power_on(const char *path, char ret_slot[2], struct ot_diag *d)
{
    if (!path || !ret_slot)
        return ot_diag_set(d, OT_ERR_INVALID, "sim power-on: no file");
    /* A device powered on for the first time: the same fresh environment ag_boot_open makes. */
    enum ot_err err = sim_ensure(path, AG__MAX_TRIES_DEFAULT, d);
    if (err)
        return err;
    _cleanup_(ag__env_release) struct ag__env env;
    ag__env_init(&env);
    err = sim_load_file(path, &env, d);
    if (err)
        return err;
    return power_on(path, &env, ret_slot, d);
}
