/* GRUB's environment block, the file grub.cfg reads with load_env and writes with save_env
 * (grub-core/lib/envblk.c, grub-editenv): exactly 1024 bytes, "# GRUB Environment Block\n",
 * then name=value lines (a backslash escapes '\\' and '\n' in values), padded with '#' to the
 * end. GRUB writes it in place, sector by sector, which is why its size never changes.
 *
 * Parsed strictly: a file of another size or without the header is refused (OT_ERR_FORMAT), not
 * "repaired", since GRUB would not read it either. A rewrite keeps every line the agent does not
 * own (other variables with their escapes, comments) as it was, regenerates the padding, and
 * replaces the file atomically (ot_file_write_atomic: temp, fsync, rename, fsync dir), keeping
 * its permission bits. */
#include <errno.h>
#include <sys/stat.h>

#include "otter/file.h"

#include "boot_backend.h"

#define GRUB_ENVBLK_SIZE 1024u
#define GRUB_ENVBLK_HEADER "# GRUB Environment Block\n"
#define GRUB_ENV_DEFAULT_PATH "/boot/grub/grubenv"

static enum ot_err grub_open(struct ag_boot *b, struct ot_diag *d)
{
    struct stat st;
    if (stat(b->env_path, &st) != 0) {
        if (errno == ENOENT)
            return ot_diag_set(d, OT_ERR_CONFIG,
                               "grub boot: %s does not exist: create it with `grub-editenv %s "
                               "create` and load it from grub.cfg (docs/agent-boot.md)",
                               b->env_path, b->env_path);
        return ot_diag_errno(d, OT_ERR_IO, errno, "grub boot: %s", b->env_path);
    }
    if (!S_ISREG(st.st_mode))
        return ot_diag_set(d, OT_ERR_CONFIG, "grub boot: %s is not a regular file", b->env_path);
    /* Some distributions make grubenv a symlink (to the EFI partition): rewrite the file it
     * points to, never replace the link with a file GRUB does not read. */
    char *real = realpath(b->env_path, NULL);
    if (!real)
        return ot_diag_errno(d, OT_ERR_IO, errno, "grub boot: %s", b->env_path);
    free(b->env_path);
    b->env_path = real;
    return OT_OK;
}

static void grub_close(struct ag_boot *b)
{
    (void)b;
}

static enum ot_err not_a_block(const char *path, const char *why, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a GRUB environment block (%s)", path, why);
}

static enum ot_err grub_load(struct ag_boot *b, struct ag__env *env, struct ot_diag *d)
{
    _cleanup_(ot_buf_release) struct ot_buf buf;
    ot_buf_init(&buf, GRUB_ENVBLK_SIZE);
    enum ot_err err = ot_file_read(b->env_path, &buf, d);
    if (err == OT_ERR_LIMIT)
        return not_a_block(b->env_path, "larger than 1024 bytes", d);
    if (err)
        return err;
    if (buf.len != GRUB_ENVBLK_SIZE) {
        char why[64];
        snprintf(why, sizeof(why), "%zu bytes, expected 1024", buf.len);
        return not_a_block(b->env_path, why, d);
    }
    size_t hlen = strlen(GRUB_ENVBLK_HEADER);
    if (memcmp(buf.data, GRUB_ENVBLK_HEADER, hlen) != 0)
        return not_a_block(b->env_path, "no \"# GRUB Environment Block\" header", d);
    return ag__env_parse(env, (const char *)buf.data + hlen, buf.len - hlen, AG__ENV_GRUB,
                         b->env_path, d);
}

/* The block's bytes: header, lines, '#' padding; OT_ERR_LIMIT when the lines do not fit. */
static enum ot_err grub_format(const char *path, const struct ag__env *env, struct ot_buf *out,
                               struct ot_diag *d)
{
    enum ot_err err = ot_buf_append_str(out, GRUB_ENVBLK_HEADER);
    if (!err)
        err = ag__env_format(env, out);
    if (!err && out->len > GRUB_ENVBLK_SIZE)
        return ot_diag_set(d, OT_ERR_LIMIT,
                           "%s: the variables need %zu bytes, more than the %u of a GRUB "
                           "environment block",
                           path, out->len, GRUB_ENVBLK_SIZE);
    if (!err && out->len < GRUB_ENVBLK_SIZE) {
        char pad[GRUB_ENVBLK_SIZE];
        memset(pad, '#', sizeof(pad));
        err = ot_buf_append(out, pad, GRUB_ENVBLK_SIZE - out->len);
    }
    if (err == OT_ERR_LIMIT)
        return ot_diag_set(d, err, "%s: the variables do not fit in a GRUB environment block",
                           path);
    if (err)
        return ot_diag_set(d, err, "%s: %s", path, ot_strerror(err));
    return OT_OK;
}

static enum ot_err grub_store(struct ag_boot *b, const struct ag__env *env, struct ot_diag *d)
{
    _cleanup_(ot_buf_release) struct ot_buf out;
    /* Room to measure how far over the limit a rewrite would be, for the message. */
    ot_buf_init(&out, 16 * GRUB_ENVBLK_SIZE);
    enum ot_err err = grub_format(b->env_path, env, &out, d);
    if (err)
        return err;
    struct stat st;
    mode_t mode = stat(b->env_path, &st) == 0 ? (st.st_mode & 07777) : 0644;
    return ot_file_write_atomic(b->env_path, out.data, out.len, mode, d);
}

const struct ag__boot_ops ag__boot_grub_ops = {
    .kind = "grub",
    .default_env_path = GRUB_ENV_DEFAULT_PATH,
    .open = grub_open,
    .close = grub_close,
    .load = grub_load,
    .store = grub_store,
};
