/* U-Boot's environment through libubootenv: fw_env.config names where it lives (one line per
 * copy: device, offset, size[, sector size, sectors]); libubootenv checks the CRC, picks the
 * newer of two redundant copies and, on store, writes the other copy with a higher flag, so a
 * power cut during a write leaves the previous environment valid. With a single copy there is
 * no such guarantee: configure redundancy (CONFIG_SYS_REDUNDAND_ENVIRONMENT in U-Boot).
 *
 * Every operation opens the environment, does its reads or writes and closes it again, so the
 * agent always works on what is on the device now (the bootloader or fw_setenv may have
 * changed it) and holds libubootenv's lock only that long. Only the otter_* variables are read;
 * a store re-reads the device and changes only otter_default, otter_try, otter_bootcount and
 * otter_maxtries, so everything else (bootcmd, ...) is left as it is. otter_try="" is stored
 * by deleting the variable: U-Boot has no empty variables (its `setenv name` deletes, its import
 * drops "name="), and the boot script tests it with `test -n`.
 *
 * A blank or corrupt environment (no copy with a good CRC) is refused rather than initialised:
 * U-Boot is then running on its built-in default environment, and writing one holding only
 * otter's variables would lose that default (bootcmd included) at the next boot. */
#include <errno.h>

#include "boot_backend.h"

#ifdef HAVE_UBOOTENV

#include <libuboot.h>

/* The variables the agent writes; otter_booted is left to the bootloader. */
static const char *const written_vars[] = {AG__VAR_DEFAULT, AG__VAR_TRY, AG__VAR_BOOTCOUNT,
                                           AG__VAR_MAXTRIES};
static const char *const read_vars[] = {AG__VAR_DEFAULT, AG__VAR_TRY, AG__VAR_BOOTCOUNT,
                                        AG__VAR_MAXTRIES, AG__VAR_BOOTED};

/* libubootenv returns -errno, or sometimes -1. */
static int lib_errno(int r)
{
    return r < -1 ? -r : EIO;
}

static enum ot_err uboot_no_env(const struct ag_boot *b, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_CONFIG,
                       "uboot boot: no valid U-Boot environment where %s says (blank, or a bad "
                       "CRC): U-Boot is on its built-in default; save it once (`saveenv` at the "
                       "U-Boot prompt, or `fw_setenv -c %s -f DEFAULT-ENV-FILE otter_default a`)",
                       b->env_path, b->env_path);
}

/* Loads the environment into the context; the caller ends with libuboot_close. */
static enum ot_err env_open(struct ag_boot *b, struct uboot_ctx *ctx, struct ot_diag *d)
{
    int r = libuboot_open(ctx);
    if (r == 0)
        return OT_OK;
    libuboot_close(ctx);
    if (r == -ENODATA)
        return uboot_no_env(b, d);
    return ot_diag_errno(d, OT_ERR_IO, lib_errno(r),
                         "uboot boot: cannot read the U-Boot environment named in %s",
                         b->env_path);
}

static enum ot_err uboot_open(struct ag_boot *b, struct ot_diag *d)
{
    /* libubootenv reports a missing config only as EBADF: say what is missing ourselves. */
    if (access(b->env_path, R_OK) != 0)
        return ot_diag_errno(d, OT_ERR_CONFIG, errno,
                             "uboot boot: %s: write an fw_env.config naming where U-Boot keeps "
                             "its environment (docs/agent-boot.md)",
                             b->env_path);
    struct uboot_ctx *ctx = NULL;
    int r = libuboot_initialize(&ctx, NULL);
    if (r < 0)
        return ot_diag_errno(d, OT_ERR_IO, lib_errno(r), "uboot boot: libuboot_initialize");
    r = libuboot_read_config(ctx, b->env_path);
    if (r < 0) {
        libuboot_exit(ctx);
        return ot_diag_errno(d, OT_ERR_CONFIG, lib_errno(r),
                             "uboot boot: %s: not a usable fw_env.config (syntax, or a device "
                             "it names is missing)",
                             b->env_path);
    }
    b->priv = ctx;
    /* Check now that there is a valid environment, not at the first write. */
    enum ot_err err = env_open(b, ctx, d);
    if (!err)
        libuboot_close(ctx);
    return err;
}

static void uboot_close(struct ag_boot *b)
{
    if (b->priv)
        libuboot_exit(b->priv);
    b->priv = NULL;
}

static enum ot_err uboot_load(struct ag_boot *b, struct ag__env *env, struct ot_diag *d)
{
    struct uboot_ctx *ctx = b->priv;
    enum ot_err err = env_open(b, ctx, d);
    if (err)
        return err;
    for (size_t i = 0; !err && i < OT_ARRAY_SIZE(read_vars); i++) {
        _cleanup_free_ char *v = libuboot_get_env(ctx, read_vars[i]);
        if (v)
            err = ag__env_set(env, read_vars[i], v);
    }
    libuboot_close(ctx);
    if (err)
        return ot_diag_set(d, err, "uboot boot: %s", ot_strerror(err));
    return OT_OK;
}

static enum ot_err set_vars(struct uboot_ctx *ctx, const struct ag__env *env,
                            struct ot_diag *d)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(written_vars); i++) {
        const char *v = ag__env_get(env, written_vars[i]);
        if (!v)
            continue;
        int r = libuboot_set_env(ctx, written_vars[i], *v ? v : NULL);
        if (r == -EPERM)
            return ot_diag_set(d, OT_ERR_PERM,
                               "uboot boot: U-Boot's environment does not let %s be changed "
                               "(.flags or a writable-variables list)",
                               written_vars[i]);
        if (r < 0)
            return ot_diag_errno(d, OT_ERR_IO, lib_errno(r), "uboot boot: set %s",
                                 written_vars[i]);
    }
    return OT_OK;
}

static enum ot_err uboot_store(struct ag_boot *b, const struct ag__env *env, struct ot_diag *d)
{
    struct uboot_ctx *ctx = b->priv;
    /* Re-read: whatever else changed since load (by fw_setenv, say) is kept. */
    enum ot_err err = env_open(b, ctx, d);
    if (err)
        return err;
    err = set_vars(ctx, env, d);
    if (!err) {
        int r = libuboot_env_store(ctx);
        if (r < 0)
            err = ot_diag_errno(d, OT_ERR_IO, lib_errno(r),
                                "uboot boot: writing the U-Boot environment named in %s",
                                b->env_path);
    }
    libuboot_close(ctx);
    return err;
}

#else /* !HAVE_UBOOTENV */

static enum ot_err uboot_open(struct ag_boot *b, struct ot_diag *d)
{
    (void)b;
    return ot_diag_set(d, OT_ERR_UNSUPPORTED, "uboot boot: built without libubootenv");
}

static void uboot_close(struct ag_boot *b)
{
    (void)b;
}

static enum ot_err uboot_load(struct ag_boot *b, struct ag__env *env, struct ot_diag *d)
{
    (void)env;
    return uboot_open(b, d);
}

static enum ot_err uboot_store(struct ag_boot *b, const struct ag__env *env, struct ot_diag *d)
{
    (void)env;
    return uboot_open(b, d);
}

#endif

const struct ag__boot_ops ag__boot_uboot_ops = {
    .kind = "uboot",
    .default_env_path = "/etc/fw_env.config",
    .open = uboot_open,
    .close = uboot_close,
    .load = uboot_load,
    .store = uboot_store,
};
