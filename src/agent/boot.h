/* Boot backends: how the agent asks the bootloader to try the new slot once, learns which slot it
 * booted, and commits or falls back. One file per backend, one ops table each:
 *
 *   sim    a small file standing in for the bootloader's environment (tests, otter-sim);
 *          ag_boot_sim_power_on() plays the bootloader's part at a simulated power-on
 *   grub   GRUB's environment block (grub-editenv format: "# GRUB Environment Block\n", then
 *          key=value lines, padded with '#' to exactly 1024 bytes), plus the grub.cfg snippet in
 *          docs/agent-boot.md that reads it
 *   uboot  U-Boot's environment through libubootenv (fw_env.config), plus the boot script
 *          snippet in docs/agent-boot.md
 *
 * The A/B protocol, the same variables in every backend (slots are "a" and "b"):
 *   otter_default      the slot that boots when no trial is armed ("a" | "b")
 *   otter_try          the slot to try once, "" when none
 *   otter_bootcount    tries of otter_try so far (the bootloader increments it before booting
 *                      otter_try, and falls back to otter_default once it exceeds otter_maxtries)
 *   otter_maxtries     1..9
 *   otter_booted       the slot the bootloader actually started (set by the bootloader; with
 *                      real hardware also known from /proc/cmdline, see booted_from_cmdline)
 *
 * A trial: try(b) sets otter_try=b, otter_bootcount=0. The bootloader boots b while bootcount <
 * maxtries (incrementing it), otherwise clears otter_try and boots otter_default. After a good
 * boot of b the agent calls commit(b): otter_default=b, otter_try="", bootcount 0. rollback()
 * clears the trial (otter_try="", bootcount 0): the next boot is otter_default again.
 * Every write is atomic (a power cut leaves the old or the new environment, never a mix: the
 * sim and grub files are replaced with ot_file_write_atomic; libubootenv keeps a redundant copy).
 * Every call is idempotent. */
#ifndef OTTER_AGENT_BOOT_H
#define OTTER_AGENT_BOOT_H

#include "otter/err.h"

#define AG_SLOT_A "a"
#define AG_SLOT_B "b"

struct ag_boot;

struct ag_boot_config {
    const char *kind;          /* "sim", "grub", "uboot" */
    const char *env_path;      /* sim: the state file; grub: grubenv path; uboot: fw_env.config
                                * path (NULL: /etc/fw_env.config) */
    const char *cmdline_path;  /* NULL: /proc/cmdline; read for "otter.slot=a|b" when the
                                * environment has no otter_booted (grub/uboot on real hardware) */
    unsigned max_tries;        /* written as otter_maxtries by try(); 1..9 (0: 3) */
};

struct ag_boot_state {
    char booted[2];            /* slot running now: "a" or "b" */
    char default_slot[2];      /* otter_default */
    char try_slot[2];          /* otter_try, "" when no trial is armed */
    unsigned bootcount;
    unsigned max_tries;
};

/* Opens the backend; OT_ERR_CONFIG for an unknown kind or a missing/unusable environment (the
 * message says what to set up). A sim file that does not exist yet is created with slot a as
 * default and booted. */
enum ot_err ag_boot_open(const struct ag_boot_config *cfg, struct ag_boot **ret,
                         struct ot_diag *d) OT_MUST_CHECK;
void ag_boot_close(struct ag_boot *b);
/* Reads the environment (and cmdline) now. */
enum ot_err ag_boot_read(struct ag_boot *b, struct ag_boot_state *ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* The slot that is not running now. */
const char *ag_boot_other(const char *slot);
enum ot_err ag_boot_try(struct ag_boot *b, const char *slot, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ag_boot_commit(struct ag_boot *b, const char *slot, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ag_boot_rollback(struct ag_boot *b, struct ot_diag *d) OT_MUST_CHECK;

/* The sim bootloader's power-on: reads the sim file, picks the slot as described above (bumping
 * bootcount for a trial, falling back past max tries), writes otter_booted and the new counters
 * atomically. Returns the slot booted in ret_slot. Used by `otter-agent sim-boot FILE`, the
 * torture test and otter-sim. */
enum ot_err ag_boot_sim_power_on(const char *path, char ret_slot[2], struct ot_diag *d)
    OT_MUST_CHECK;

#endif
