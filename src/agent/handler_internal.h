/* What the install handlers share: their ops tables, the on-disk layout of staging and backups, and
 * helpers (handler.c) for paths, markers, recursive removal and running external programs.
 * Internal to handler*.c and their unit test; the engine only sees handler.h.
 *
 * Layout, for a payload named N with target path T (both documented in docs/update-modules.md):
 *   <work_dir>/N/payload          the staged bytes (file, script, module; raw writes in place)
 *   <work_dir>/N/.otter-activated written before activate's first side effect; its content says
 *                                 whether T existed then ("existed\n" or "absent\n"), which is
 *                                 what rollback needs to know after a crash ("started\n" for
 *                                 script and module payloads, which have no T)
 *   <root>T.otter-new             archive: the extracted tree, before the swap
 *   <root>T.otter-old             file, archive: what activate replaced, until commit/rollback */
#ifndef OTTER_AGENT_HANDLER_INTERNAL_H
#define OTTER_AGENT_HANDLER_INTERNAL_H

#include <sys/types.h>

#include "handler.h"

#define AG_STAGED_NAME "payload"
#define AG_MARKER_ACTIVATED ".otter-activated"
#define AG_SUFFIX_OLD ".otter-old"
#define AG_SUFFIX_NEW ".otter-new"

/* Bytes of a program's combined stdout/stderr kept (the last ones) for messages and the log. */
#define AG_RUN_OUTPUT_MAX 4096
/* After a timeout, SIGTERM to the process group, then SIGKILL after this grace period. */
#define AG_RUN_KILL_GRACE_MS 2000
/* Deepest directory nesting the recursive helpers walk (tar names are at most 255 bytes, so an
 * archive cannot nest deeper than 128). */
#define AG_TREE_DEPTH_MAX 256

extern const struct ag_handler_ops ag__handler_raw;
extern const struct ag_handler_ops ag__handler_file;
extern const struct ag_handler_ops ag__handler_archive;
extern const struct ag_handler_ops ag__handler_script;
extern const struct ag_handler_ops ag__handler_module;

/* ---- paths ----------------------------------------------------------------------------------- */

/* True when target is absolute and normalised: starts with '/', is not "/" itself, and has no
 * empty, "." or ".." component and no trailing '/'. Such a path cannot leave ctx->root. */
bool ag__target_is_safe(const char *target);
/* "<ctx->root><p->target><suffix>" (suffix may be ""), after checking the target with
 * ag__target_is_safe (OT_ERR_INVALID otherwise). Caller frees *ret. */
enum ot_err ag__target_path(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            const char *suffix, char **ret, struct ot_diag *d) OT_MUST_CHECK;
/* "<ctx->work_dir>/<p->name>", created (mkdir -p, 0700) when create is set. The name must pass
 * ot_name_is_safe. Caller frees *ret. */
enum ot_err ag__staging_dir(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                            bool create, char **ret, struct ot_diag *d) OT_MUST_CHECK;
/* rm -rf of the staging directory (absent is fine). */
enum ot_err ag__drop_staging(const struct ag_install_ctx *ctx, const struct ot_payload *p,
                             struct ot_diag *d) OT_MUST_CHECK;
/* "<dir>/<name>" or OT_ERR_NOMEM with a message. */
enum ot_err ag__join(const char *dir, const char *name, char **ret, struct ot_diag *d)
    OT_MUST_CHECK;

/* ---- file system ----------------------------------------------------------------------------- */

/* lstat: whether something (of any type, a dangling symlink included) exists at path. Errors other
 * than ENOENT/ENOTDIR are reported. */
enum ot_err ag__exists(const char *path, bool *ret, struct ot_diag *d) OT_MUST_CHECK;
/* mkdir -p; existing directories are fine, anything else in the way is an error. */
enum ot_err ag__mkdir_p(const char *path, mode_t mode, struct ot_diag *d) OT_MUST_CHECK;
/* rm -rf without following symlinks; nothing there is success. */
enum ot_err ag__rm_rf(const char *path, struct ot_diag *d) OT_MUST_CHECK;
/* fsync every regular file and directory below and including the directory path. */
enum ot_err ag__fsync_tree(const char *path, struct ot_diag *d) OT_MUST_CHECK;
/* Opens path (O_RDONLY) and fsyncs it; then fsyncs its directory. */
enum ot_err ag__fsync_file(const char *path, struct ot_diag *d) OT_MUST_CHECK;
/* rename(2), then fsync of the (shared) directory. */
enum ot_err ag__rename(const char *from, const char *to, struct ot_diag *d) OT_MUST_CHECK;
/* Atomic copy of a regular file's content to a new name with the given mode (temp, fsync, rename,
 * fsync dir): dst either does not exist or is complete. */
enum ot_err ag__copy_file(const char *src, const char *dst, mode_t mode, struct ot_diag *d)
    OT_MUST_CHECK;
/* SHA-256 of a file's content. */
enum ot_err ag__file_sha256(const char *path, uint8_t digest[OT_SHA256_LEN], struct ot_diag *d)
    OT_MUST_CHECK;

/* ---- the activate marker --------------------------------------------------------------------- */

enum ag_marker {
    AG_MARKER_NONE,    /* activate never started */
    AG_MARKER_EXISTED, /* activate started; the target existed then */
    AG_MARKER_ABSENT,  /* activate started; the target did not exist */
    AG_MARKER_STARTED, /* activate started (handlers without a target: script, module) */
};

/* Reads <staging>/.otter-activated. A marker with other content is OT_ERR_FORMAT. */
enum ot_err ag__marker_read(const char *staging, enum ag_marker *ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Writes it atomically (durable before the caller's first side effect). */
enum ot_err ag__marker_write(const char *staging, enum ag_marker m, struct ot_diag *d)
    OT_MUST_CHECK;

/* ---- arguments ------------------------------------------------------------------------------- */

const char *ag__arg(const struct ot_payload *p, const char *key);
/* OT_ERR_INVALID naming the first argument not in allowed (NULL-terminated). */
enum ot_err ag__args_only(const struct ot_payload *p, const char *const *allowed,
                          struct ot_diag *d) OT_MUST_CHECK;

/* ---- sinks ----------------------------------------------------------------------------------- */

/* A sink that writes to fd and owns it (closed by free). More than limit bytes (UINT64_MAX: no
 * limit) fail with OT_ERR_NOSPC before anything past it is written. what names it in messages. */
enum ot_err ag__fd_sink_new(int fd, uint64_t limit, const char *what, struct ot_sink **ret,
                            struct ot_diag *d) OT_MUST_CHECK;

/* Creates (truncating) the staged file path with exactly mode, and a sink writing into it. */
enum ot_err ag__staged_sink_new(const char *path, mode_t mode, struct ot_sink **ret,
                                struct ot_diag *d) OT_MUST_CHECK;

/* ---- running programs ------------------------------------------------------------------------ */

struct ag_run_result {
    int status;                       /* waitpid status */
    bool timed_out;
    size_t out_len;                   /* bytes in out: the last ones the program printed */
    bool out_cut;                     /* earlier output was dropped */
    char out[AG_RUN_OUTPUT_MAX + 1];  /* NUL-terminated */
};

/* Runs argv[0] (a path, no PATH search, no shell) with argv, in cwd, in its own process group,
 * stdin /dev/null, stdout and stderr captured together. After timeout_s seconds the group gets
 * SIGTERM and, AG_RUN_KILL_GRACE_MS later, SIGKILL. Returns OT_OK when the program ran to an end
 * (look at r->status), OT_ERR_LIMIT on timeout, an I/O error when it could not be started. */
enum ot_err ag__run(const char *const argv[], const char *cwd, unsigned timeout_s,
                    struct ag_run_result *r, struct ot_diag *d) OT_MUST_CHECK;
/* The same with envp (NULL-terminated "NAME=value" strings) as the program's whole environment
 * (NULL: the agent's own). */
enum ot_err ag__run_env(const char *const argv[], char *const envp[], const char *cwd,
                        unsigned timeout_s, struct ag_run_result *r, struct ot_diag *d)
    OT_MUST_CHECK;
/* Turns a finished run into the handler's verdict: OT_OK for exit 0, else OT_ERR_INVALID
 * "<what>: exited with status N: <last output>" (or killed by signal N, or timed out). Also logs
 * the output at info level, one line each. */
enum ot_err ag__run_verdict(enum ot_err run_err, const struct ag_run_result *r, const char *what,
                            struct ot_diag *d) OT_MUST_CHECK;

#endif
