/* script: the payload is a program, staged as <staging>/payload (mode 0700) and run, with no
 * shell in between, as "./payload install" at activate and "./payload rollback" at rollback, with
 * the staging directory as its working directory. Only exit status 0 is success.
 *
 * The marker is written before the first run, so rollback runs the script exactly when activate
 * may have started it (even if the agent died while it ran), and never when it did not. A power
 * cut can repeat either run: scripts must be idempotent (docs/update-modules.md). */
#include <sys/stat.h>

#include "handler_internal.h"
#include "otter/parse.h"
#include "otter/path.h"

static const char *const script_args[] = {"timeout", NULL};

#define SCRIPT_TIMEOUT_DEFAULT 300
#define SCRIPT_TIMEOUT_MAX 86400

static enum ot_err parse_timeout(const struct ot_payload *p, unsigned *ret, struct ot_diag *d)
{
    const char *s = ag__arg(p, "timeout");
    uint64_t v = SCRIPT_TIMEOUT_DEFAULT;
    if (s && ot_parse_u64(s, 1, SCRIPT_TIMEOUT_MAX, &v) != OT_OK)
        return ot_diag_set(d, OT_ERR_INVALID,
                           "payload '%s': timeout '%s' is not a number of seconds in 1..%d",
                           p->name, s, SCRIPT_TIMEOUT_MAX);
    *ret = (unsigned)v;
    return OT_OK;
}

static enum ot_err script_begin(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                struct ot_sink **ret_sink, struct ot_diag *d)
{
    unsigned timeout;
    _cleanup_free_ char *staging = NULL, *staged = NULL;
    /* Arguments are checked before the download, not when the script is about to run. */
    enum ot_err err = ag__args_only(p, script_args, d);
    if (!err)
        err = parse_timeout(p, &timeout, d);
    if (!err)
        err = ag__staging_dir(ctx, p, true, &staging, d);
    if (!err)
        err = ag__join(staging, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__staged_sink_new(staged, 0700, ret_sink, d);
    return err;
}

static enum ot_err script_end(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                              struct ot_diag *d)
{
    _cleanup_free_ char *staging = NULL, *staged = NULL;
    enum ot_err err = ag__staging_dir(ctx, p, false, &staging, d);
    if (!err)
        err = ag__join(staging, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__fsync_file(staged, d);
    return err;
}

static void script_abort(const struct ag_install_ctx *ctx, const struct ot_payload *p)
{
    enum ot_err err = ag__drop_staging(ctx, p, NULL); /* best effort: nothing ran */
    (void)err;
}

/* Runs "./payload <step>" in staging. */
static enum ot_err run_script(const char *staging, const struct ot_payload *p, const char *step,
                              struct ot_diag *d)
{
    unsigned timeout;
    enum ot_err err = parse_timeout(p, &timeout, d);
    if (err)
        return err;
    const char *const argv[] = {"./" AG_STAGED_NAME, step, NULL};
    char what[OT_NAME_MAX + 48];
    snprintf(what, sizeof(what), "script '%s' %s", p->name, step);
    struct ag_run_result *r = malloc(sizeof(*r));
    if (!r)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = ag__run(argv, staging, timeout, r, d);
    err = ag__run_verdict(err, r, what, d);
    free(r);
    return err;
}

static enum ot_err script_activate(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                   struct ot_diag *d)
{
    _cleanup_free_ char *staging = NULL, *staged = NULL;
    enum ag_marker m = AG_MARKER_NONE;
    bool there = false;
    enum ot_err err = ag__staging_dir(ctx, p, false, &staging, d);
    if (!err)
        err = ag__join(staging, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__exists(staged, &there, d);
    if (!err && !there)
        err = ot_diag_set(d, OT_ERR_NOENT, "payload '%s': nothing staged at %s", p->name, staged);
    if (!err)
        err = ag__marker_read(staging, &m, d);
    if (!err && m == AG_MARKER_NONE)
        err = ag__marker_write(staging, AG_MARKER_STARTED, d);
    if (!err)
        err = run_script(staging, p, "install", d);
    return err;
}

static enum ot_err script_commit(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 struct ot_diag *d)
{
    return ag__drop_staging(ctx, p, d);
}

/* A failed "rollback" run keeps the staging directory, so that the engine can try again. */
static enum ot_err script_rollback(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                   struct ot_diag *d)
{
    _cleanup_free_ char *staging = NULL, *staged = NULL;
    enum ag_marker m = AG_MARKER_NONE;
    bool there = false;
    enum ot_err err = ag__staging_dir(ctx, p, false, &staging, d);
    if (!err)
        err = ag__join(staging, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__marker_read(staging, &m, d);
    if (!err)
        err = ag__exists(staged, &there, d);
    if (!err && m != AG_MARKER_NONE && there)
        err = run_script(staging, p, "rollback", d);
    if (!err)
        err = ag__rm_rf(staging, d);
    return err;
}

const struct ag_handler_ops ag__handler_script = {
    .type = "script",
    .needs_reboot = false,
    .begin = script_begin,
    .end = script_end,
    .abort = script_abort,
    .activate = script_activate,
    .commit = script_commit,
    .rollback = script_rollback,
};
