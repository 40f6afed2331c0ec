/* Update modules: any payload type that is not built in is handed to the executable
 * <modules_dir>/<type>, run once per step as "<module> STEP WORKDIR" (no shell, cwd WORKDIR, own
 * process group, AG_MODULE_TIMEOUT_S at most). The protocol is documented for device makers in
 * docs/update-modules.md; this file is its reference implementation.
 *
 *   begin     WORKDIR (the staging directory) with manifest-payload.json; the payload streams
 *             into WORKDIR/payload
 *   end       fsync, then Download
 *   activate  Install
 *   commit    Commit, then Cleanup
 *   rollback  Rollback (only if Install may have run), then Cleanup
 *   abort     Cleanup (only if Download may have run)
 *
 * Markers (written before the step they announce, so a crash during the step counts as "may
 * have run") are hidden files in WORKDIR, reserved with the ".otter-" prefix. Cleanup's exit
 * status is logged, not acted on: by then the outcome is decided, and WORKDIR goes either way. */
#include <jansson.h>
#include <stdlib.h>

#include "handler_internal.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/log.h"

#define AG_MODULE_TIMEOUT_S 600
#define MODULE_MANIFEST "manifest-payload.json"
#define MODULE_MARKER_DOWNLOAD ".otter-download"
#define MODULE_MANIFEST_MAX (256 * 1024)

/* Absolute paths of the module and of WORKDIR (the module runs in WORKDIR, so relative paths
 * from the configuration would not resolve there). */
struct module_paths {
    char *module, *workdir;
};

static void module_paths_release(struct module_paths *mp)
{
    free(mp->module);
    free(mp->workdir);
    *mp = (struct module_paths){0};
}

static enum ot_err module_paths(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                bool create, struct module_paths *mp, struct ot_diag *d)
{
    *mp = (struct module_paths){0};
    _cleanup_free_ char *staging = NULL, *module = NULL;
    enum ot_err err = ag__staging_dir(ctx, p, false, &staging, d);
    if (!err && (!ctx->modules_dir || !p->type || !p->type[0] || strchr(p->type, '/')))
        err = ot_diag_set(d, OT_ERR_INVALID, "payload '%s': no update module for type '%s'",
                          p->name, p->type ? p->type : "");
    if (!err)
        err = ag__join(ctx->modules_dir, p->type, &module, d);
    if (err)
        return err;
    if (!(mp->module = realpath(module, NULL)))
        return ot_diag_errno(d, OT_ERR_IO, errno, "update module %s", module);
    /* Made only once the module is known to be there. */
    if (create)
        err = ag__mkdir_p(staging, 0700, d);
    if (!err && !(mp->workdir = realpath(staging, NULL)))
        err = ot_diag_errno(d, OT_ERR_IO, errno, "%s", staging);
    if (err)
        module_paths_release(mp);
    return err;
}

/* True when WORKDIR is there: everything after the first commit or rollback finds it gone. */
static enum ot_err workdir_exists(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                  bool *ret, struct ot_diag *d)
{
    _cleanup_free_ char *staging = NULL;
    enum ot_err err = ag__staging_dir(ctx, p, false, &staging, d);
    if (!err)
        err = ag__exists(staging, ret, d);
    return err;
}

static enum ot_err run_step(const struct module_paths *mp, const struct ot_payload *p,
                            const char *step, struct ot_diag *d)
{
    const char *const argv[] = {mp->module, step, mp->workdir, NULL};
    char what[160];
    snprintf(what, sizeof(what), "update module '%s' %s (payload '%s')", p->type, step, p->name);
    struct ag_run_result *r = malloc(sizeof(*r));
    if (!r)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    enum ot_err err = ag__run(argv, mp->workdir, AG_MODULE_TIMEOUT_S, r, d);
    err = ag__run_verdict(err, r, what, d);
    free(r);
    return err;
}

/* Cleanup: its failure is only logged. */
static void run_cleanup(const struct module_paths *mp, const struct ot_payload *p)
{
    struct ot_diag cd = {0};
    if (run_step(mp, p, "Cleanup", &cd) != OT_OK)
        ot_log(OT_LOG_WARNING, "%s (ignored)", cd.msg);
}

static json_t *payload_json(const struct ot_payload *p)
{
    json_t *o = json_object(), *args = json_object();
    bool ok = o && args;
    for (size_t i = 0; ok && i < p->nargs; i++)
        ok = json_object_set_new(args, p->args[i].key, json_string(p->args[i].value)) == 0;
    ok = ok && json_object_set_new(o, "args", args) == 0;
    if (!ok)
        json_decref(args);
    ok = ok && ot_json_set_str(o, "name", p->name) == OT_OK &&
         ot_json_set_str(o, "type", p->type) == OT_OK &&
         ot_json_set_str(o, "target", p->target ? p->target : "") == OT_OK &&
         ot_json_set_str(o, "version", p->version ? p->version : "") == OT_OK &&
         ot_json_set_u64(o, "size", p->size) == OT_OK &&
         ot_json_set_hex(o, "sha256", p->sha256, OT_SHA256_LEN) == OT_OK;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static enum ot_err write_manifest(const char *workdir, const struct ot_payload *p,
                                  struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    enum ot_err err = ag__join(workdir, MODULE_MANIFEST, &path, d);
    if (err)
        return err;
    json_t *o = payload_json(p);
    if (!o)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct ot_buf b;
    ot_buf_init(&b, MODULE_MANIFEST_MAX);
    err = ot_json_dump_pretty(o, &b);
    json_decref(o);
    if (err)
        err = ot_diag_set(d, err, "%s: %s", path, ot_strerror(err));
    else
        err = ot_file_write_atomic(path, b.data, b.len, 0644, d);
    ot_buf_release(&b);
    return err;
}

static enum ot_err module_begin(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                struct ot_sink **ret_sink, struct ot_diag *d)
{
    _cleanup_(module_paths_release) struct module_paths mp;
    _cleanup_free_ char *staged = NULL;
    enum ot_err err = module_paths(ctx, p, true, &mp, d);
    if (err)
        return err;
    err = write_manifest(mp.workdir, p, d);
    if (!err)
        err = ag__join(mp.workdir, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__staged_sink_new(staged, 0600, ret_sink, d);
    return err;
}

/* A marker file in WORKDIR, written durably. */
static enum ot_err write_mark(const char *workdir, const char *name, struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    enum ot_err err = ag__join(workdir, name, &path, d);
    if (!err)
        err = ot_file_write_atomic(path, "", 0, 0600, d);
    return err;
}

static enum ot_err module_end(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                              struct ot_diag *d)
{
    _cleanup_(module_paths_release) struct module_paths mp;
    _cleanup_free_ char *staged = NULL;
    enum ot_err err = module_paths(ctx, p, false, &mp, d);
    if (!err)
        err = ag__join(mp.workdir, AG_STAGED_NAME, &staged, d);
    if (!err)
        err = ag__fsync_file(staged, d);
    if (!err)
        err = write_mark(mp.workdir, MODULE_MARKER_DOWNLOAD, d);
    if (!err)
        err = run_step(&mp, p, "Download", d);
    return err;
}

static void module_abort(const struct ag_install_ctx *ctx, const struct ot_payload *p)
{
    struct module_paths mp;
    _cleanup_free_ char *mark = NULL;
    bool downloaded = false;
    if (module_paths(ctx, p, false, &mp, NULL) != OT_OK) {
        enum ot_err err = ag__drop_staging(ctx, p, NULL); /* best effort */
        (void)err;
        return;
    }
    if (ag__join(mp.workdir, MODULE_MARKER_DOWNLOAD, &mark, NULL) == OT_OK &&
        ag__exists(mark, &downloaded, NULL) == OT_OK && downloaded)
        run_cleanup(&mp, p);
    enum ot_err err = ag__rm_rf(mp.workdir, NULL);
    (void)err;
    module_paths_release(&mp);
}

static enum ot_err module_activate(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                   struct ot_diag *d)
{
    _cleanup_(module_paths_release) struct module_paths mp;
    enum ag_marker m = AG_MARKER_NONE;
    enum ot_err err = module_paths(ctx, p, false, &mp, d);
    if (!err)
        err = ag__marker_read(mp.workdir, &m, d);
    if (!err && m == AG_MARKER_NONE)
        err = ag__marker_write(mp.workdir, AG_MARKER_STARTED, d);
    if (!err)
        err = run_step(&mp, p, "Install", d);
    return err;
}

/* Commit or Rollback, then Cleanup and WORKDIR's removal. A failed step keeps WORKDIR so that
 * the engine can repeat it. */
static enum ot_err finish(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                          const char *step, struct ot_diag *d)
{
    bool there = false;
    enum ot_err err = workdir_exists(ctx, p, &there, d);
    if (err || !there)
        return err; /* finished before */
    _cleanup_(module_paths_release) struct module_paths mp;
    enum ag_marker m = AG_MARKER_NONE;
    err = module_paths(ctx, p, false, &mp, d);
    if (!err)
        err = ag__marker_read(mp.workdir, &m, d);
    /* Rollback only undoes an Install that may have happened; Commit follows an Install. */
    if (!err && (m != AG_MARKER_NONE || strcmp(step, "Commit") == 0))
        err = run_step(&mp, p, step, d);
    if (err)
        return err;
    run_cleanup(&mp, p);
    return ag__rm_rf(mp.workdir, d);
}

static enum ot_err module_commit(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                 struct ot_diag *d)
{
    return finish(ctx, p, "Commit", d);
}

static enum ot_err module_rollback(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                                   struct ot_diag *d)
{
    return finish(ctx, p, "Rollback", d);
}

const struct ag_handler_ops ag__handler_module = {
    .type = NULL,
    .needs_reboot = false,
    .begin = module_begin,
    .end = module_end,
    .abort = module_abort,
    .activate = module_activate,
    .commit = module_commit,
    .rollback = module_rollback,
};
