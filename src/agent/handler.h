/* Install handlers: what to do with each payload type, one file each, one ops table each,
 * registered in handler.c's table (ag_handler_find). The engine (engine.c) drives them in this
 * order for an artifact, persisting its state before each step, so every step must be idempotent
 * (a power cut may repeat it):
 *
 *   begin(p)      -> a sink that receives the payload's verified-as-it-streams decoded bytes
 *   end(p)        the payload is complete and its SHA-256 matched: make it durable (fsync), staged
 *                 but not active. (If the stream fails, abort(p) is called instead.)
 *   activate(p)   make it the live version: swap files/dirs in, keeping what it replaced for
 *                 rollback; for `raw` nothing (the bootloader switch does it, see boot.h)
 *   commit(p)     the update is good: drop backups and staging
 *   rollback(p)   put back what activate replaced (safe to call when activate never ran, or ran
 *                 halfway, or ran twice); drop staging
 *
 * Staging lives in ctx->work_dir/<payload name>/ (created by the engine, removed after commit or
 * rollback). Backups live next to their target ("<target>.otter-old") so that renames stay on one
 * file system. Nothing unverified is ever made active: activate only runs after every payload's
 * end succeeded.
 *
 * Handlers:
 *   raw      target "slot" (default): writes the image into the inactive A/B slot's device or
 *            file (ctx->slot_path); needs_reboot. A target that is a path writes there instead
 *            (no A/B; still only after verification... it writes directly, so it is meant for
 *            partitions not in use). Other targets are refused.
 *   file     target = absolute path: atomic replace (staged copy, fsync, rename), backup kept;
 *            args: mode (octal, default 0644)
 *   archive  target = absolute directory: the payload is a tar (core's strict reader, no
 *            libarchive); extracted into <target>.otter-new, then swapped in (target ->
 *            target.otter-old, new -> target); args: none
 *   script   the payload is an executable run at activate with argument "install" (and at
 *            rollback with "rollback"), cwd = its staging dir; exit 0 = success; args: timeout
 *            (seconds, default 300)
 *   <other>  an update module: ctx->modules_dir/<type> is executed per step with arguments
 *            STEP WORKDIR, STEP one of Download (the payload is in WORKDIR/payload), Install,
 *            Commit, Rollback, Cleanup; exit 0 = success; stdout/stderr go to the agent log.
 *            Protocol documented in docs/update-modules.md. */
#ifndef OTTER_AGENT_HANDLER_H
#define OTTER_AGENT_HANDLER_H

#include "otter/codec.h"
#include "otter/manifest.h"

struct ag_install_ctx {
    const char *work_dir;      /* per-deployment staging root, exists */
    const char *slot_path;     /* raw: device or file of the inactive slot (NULL: no A/B) */
    const char *modules_dir;   /* update modules */
    const char *root;          /* prefix for target paths of file, archive and raw payloads
                                * ("" normally; tests use a temp dir so that "/etc/app.conf"
                                * lands inside it) */
};

struct ag_handler_ops {
    const char *type;          /* NULL for the module fallback */
    bool needs_reboot;
    enum ot_err (*begin)(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                         struct ot_sink **ret_sink, struct ot_diag *d);
    enum ot_err (*end)(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                       struct ot_diag *d);
    void (*abort)(const struct ag_install_ctx *ctx, const struct ot_payload *p);
    enum ot_err (*activate)(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            struct ot_diag *d);
    enum ot_err (*commit)(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                          struct ot_diag *d);
    enum ot_err (*rollback)(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            struct ot_diag *d);
};

/* The handler for a payload type: a built-in one, else the module runner when
 * modules_dir/<type> is an executable file, else NULL (the engine refuses the artifact before
 * downloading anything). */
const struct ag_handler_ops *ag_handler_find(const char *type, const char *modules_dir);

#endif
