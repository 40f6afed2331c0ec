/* The update engine (engine.h): one function per phase, each doing its phase's side effects (all
 * idempotent) and then saving the next phase with go(), which runs it. Network steps (check-in,
 * download, reports) are asynchronous on the loop; the rest runs inline.
 *
 * Crash safety rests on three rules: a phase is saved before its side effects start; a side effect
 * can be repeated (handlers and boot backends promise it); and what the bootloader did while we
 * were away is read back on start (booted slot, armed trial) rather than assumed. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>

#include "engine.h"
#include "handler.h"
#include "handler_internal.h"
#include "otter/artifact.h"
#include "otter/encoding.h"
#include "otter/file.h"
#include "otter/log.h"
#include "otter/sig.h"

#define DOWNLOAD_FILE "download.part"
#define WORK_DIR "work"
#define CACHE_DIR "cache"          /* the last download-only artifact: <sha256>.otter */
#define CACHE_SUFFIX ".otter"
#define MAX_ATTEMPTS 5
#define RETRY_MIN_MS 2000
/* A device's memory is scarce: read and decode in small steps (the CLI uses 1 MiB, a little
 * faster on a PC; bench/agent.sh measures the agent's peak). */
#define INSTALL_READ_CHUNK (64 * 1024)
#define INSTALL_DECODE_CHUNK (128 * 1024)

extern char **environ;

struct pipeline;

struct ag_engine {
    struct ag_engine_env env;
    const struct ag_config *cfg;
    struct ag_state st;
    struct ag_installed installed;
    bool paused;
    bool in_run;                   /* run() is on the stack: go() only records */
    bool rerun;
    uint64_t timer;                /* the pending wake-up, 0 none */
    unsigned failures;             /* consecutive network failures (backoff) */
    uint32_t poll_interval_s, poll_jitter_s;
    struct ag_download *dl;
    struct pipeline *stream;       /* streaming mode: the install pipeline fed by the download */
    int dl_fd;
    uint64_t dl_offset;
    unsigned last_progress;        /* percent reported */
    bool report_in_flight;
    int64_t report_deployment;     /* the deployment the progress report in flight is for */
    int report_status;             /* ... and its status */
    char report_reason[16];        /* ... a waiting one's reason (st.wait_reason when sent) */
    int pending_status;            /* a progress report waiting for the one in flight, 0 none */
    int pending_progress;
    bool reboot_after_report;      /* reboot once the "rebooting" report went out */
    bool checkin_in_flight;
    bool final_in_flight;
    bool inventory_sent;
    int64_t last_checkin;          /* Unix seconds */
    char last_error[256];
    char *work_dir, *download_path, *cache_dir;
    struct ot_kv *provides;        /* from the configuration: what the device provides */
    size_t nprovides;
    struct ot_wire_kv *wire_provides;
    int exit_code;                 /* set when the loop must stop (reboot) */
};

static void run(struct ag_engine *e);
static void schedule(struct ag_engine *e, uint64_t ms);

/* ---- simulation hooks (engine.h) ---------------------------------------------------------------- */

#define HOOK(e, name) ((e)->env.hooks && (e)->env.hooks->name)

static long hook_before(struct ag_engine *e, enum ag_phase phase, struct ot_diag *d)
{
    return HOOK(e, before) ? e->env.hooks->before(e->env.hooks->userdata, phase, d) : 0;
}

static void hook_checked_in(struct ag_engine *e, const struct ag_net_result *r)
{
    if (HOOK(e, checked_in))
        e->env.hooks->checked_in(e->env.hooks->userdata, r);
}

/* ---- small helpers ---------------------------------------------------------------------------- */

static void note_error(struct ag_engine *e, const char *fmt, ...) OT_PRINTF(2, 3);
static void note_error(struct ag_engine *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->last_error, sizeof(e->last_error), fmt, ap);
    va_end(ap);
    ot_log(OT_LOG_WARNING, "%s", e->last_error);
}

/* Saves the state with its new phase, then runs it (or lets the running run() continue). */
static bool go(struct ag_engine *e, enum ag_phase phase)
{
    struct ot_diag d = {0};
    enum ag_phase old = e->st.phase;
    e->st.phase = phase;
    if (ag_state_save(e->cfg->state_dir, &e->st, &d) != OT_OK) {
        e->st.phase = old;
        note_error(e, "cannot save the state (%s): retrying", d.msg);
        schedule(e, RETRY_MIN_MS);
        return false;
    }
    ot_log(OT_LOG_INFO, "phase %s -> %s", ag_phase_name(old), ag_phase_name(phase));
    if (HOOK(e, phase))
        e->env.hooks->phase(e->env.hooks->userdata, old, phase);
    e->rerun = true;
    return true;
}

/* Ends the update with a result: after activation through rollback, before it straight to the
 * report. */
static void finish(struct ag_engine *e, const char *result, const char *fmt, ...)
    OT_PRINTF(3, 4);
static void finish(struct ag_engine *e, const char *result, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(e->st.result, sizeof(e->st.result), "%s", result);
    if (ag_state_set(&e->st.message, msg) != OT_OK)
        ot_log(OT_LOG_ERR, "out of memory");
    ot_log(strcmp(result, "success") ? OT_LOG_WARNING : OT_LOG_NOTICE, "update %s: %s", result,
           msg);
    bool undo = e->st.activated || e->st.boot_armed || strcmp(result, "rolled_back") == 0;
    go(e, undo && strcmp(result, "success") ? AG_ROLLBACK : AG_REPORT);
}

/* Saves the state without a phase change. */
static bool save(struct ag_engine *e)
{
    struct ot_diag d = {0};
    if (ag_state_save(e->cfg->state_dir, &e->st, &d) == OT_OK)
        return true;
    note_error(e, "cannot save the state: %s", d.msg);
    return false;
}

static const char *wait_message(const char *reason)
{
    return strcmp(reason, AG_WAIT_POSTPONED) == 0 ? AG_WAIT_POSTPONED_MESSAGE
                                                  : AG_WAIT_HELD_MESSAGE;
}

/* SHA-256 of the first limit bytes of fd (fewer at its end); *ret_total says how many. */
static enum ot_err hash_fd(int fd, uint64_t limit, uint8_t sum[OT_SHA256_LEN],
                           uint64_t *ret_total, struct ot_diag *d)
{
    struct ot_sha256 h = {0};
    _cleanup_free_ uint8_t *buf = malloc(INSTALL_READ_CHUNK);
    if (!buf || ot_sha256_init(&h) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    uint64_t total = 0;
    while (total < limit) {
        ssize_t n = read(fd, buf, (size_t)OT_MIN((uint64_t)INSTALL_READ_CHUNK, limit - total));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ot_sha256_release(&h);
            return ot_diag_errno(d, OT_ERR_IO, errno, "read");
        }
        if (n == 0)
            break;
        ot_sha256_update(&h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    ot_sha256_final(&h, sum);
    *ret_total = total;
    return OT_OK;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup_files(struct ag_engine *e)
{
    remove_tree(e->work_dir);
    unlink(e->download_path);
}

static uint64_t jittered(uint64_t ms, uint64_t jitter_ms)
{
    if (!jitter_ms)
        return ms;
    uint64_t r = (uint64_t)random() % (2 * jitter_ms + 1);
    return ms + r > jitter_ms ? ms + r - jitter_ms : 1000;
}

static uint64_t backoff_ms(struct ag_engine *e)
{
    unsigned n = OT_MIN(e->failures, 16u);
    uint64_t ms = (uint64_t)RETRY_MIN_MS << n;
    return jittered(OT_MIN(ms, e->cfg->retry_max_ms), OT_MIN(ms, e->cfg->retry_max_ms) / 4);
}

static void on_timer(void *userdata)
{
    struct ag_engine *e = userdata;
    e->timer = 0;
    run(e);
}

static void schedule(struct ag_engine *e, uint64_t ms)
{
    if (!e->env.loop)
        return;
    if (e->timer)
        ag_loop_timer_cancel(e->env.loop, e->timer);
    e->timer = ag_loop_timer(e->env.loop, ms, on_timer, e);
}

/* The manifest saved with the state (the announced one, or the local file's). */
static enum ot_err state_manifest(struct ag_engine *e, struct ot_manifest *m, struct ot_diag *d)
{
    if (!e->st.manifest)
        return ot_diag_set(d, OT_ERR_FORMAT, "the saved state has no manifest");
    return ot_manifest_parse((const uint8_t *)e->st.manifest, strlen(e->st.manifest), m, d);
}

static bool uses_slot(const struct ot_payload *p)
{
    return strcmp(p->type, "raw") == 0 && (!p->target[0] || strcmp(p->target, "slot") == 0);
}

static struct ag_install_ctx install_ctx(struct ag_engine *e)
{
    const char *slot = NULL;
    if (e->st.target_slot[0])
        slot = strcmp(e->st.target_slot, AG_SLOT_A) == 0 ? e->cfg->slot_a : e->cfg->slot_b;
    return (struct ag_install_ctx){.work_dir = e->work_dir,
                                   .slot_path = slot,
                                   .modules_dir = e->cfg->modules_dir,
                                   .root = e->cfg->root};
}

/* Checks an artifact's manifest against this device before anything is written: signatures
 * (when sigs is given), compatibility, anti-rollback, a handler for every payload, slots. */
static enum ot_err check_announced(struct ag_engine *e, const char *manifest, const char *sigs,
                                   struct ot_manifest *m, struct ot_diag *d)
{
    size_t len = strlen(manifest);
    if (sigs) {
        struct ot_sigset set;
        enum ot_err err = ot_sigset_parse((const uint8_t *)sigs, strlen(sigs), &set, d);
        if (!err)
            err = ot_sigset_verify(&set, e->env.trust, (const uint8_t *)manifest, len, NULL, d);
        if (err)
            return err;
    }
    enum ot_err err = ot_manifest_parse((const uint8_t *)manifest, len, m, d);
    if (!err)
        err = ot_manifest_check_device(m, e->cfg->device_type, e->provides, e->nprovides,
                                       e->installed.min_security_version, d);
    for (size_t i = 0; !err && i < m->npayloads; i++) {
        const struct ot_payload *p = &m->payloads[i];
        if (!ag_handler_find(p->type, e->cfg->modules_dir))
            err = ot_diag_set(d, OT_ERR_UNSUPPORTED, "payload '%s': no handler for type '%s'",
                              p->name, p->type);
        else if (uses_slot(p) && !e->env.boot)
            err = ot_diag_set(d, OT_ERR_UNSUPPORTED, "payload '%s' goes to an A/B slot, but "
                              "this device has no boot backend configured", p->name);
    }
    if (err)
        ot_manifest_release(m);
    return err;
}

static bool needs_reboot(const struct ot_manifest *m)
{
    for (size_t i = 0; i < m->npayloads; i++)
        if (uses_slot(&m->payloads[i]))
            return true;
    return false;
}

/* ---- the install pipeline: artifact bytes -> reader -> handlers ------------------------------ */

struct pipeline {
    struct ag_engine *e;
    struct ag_install_ctx ctx;
    struct ot_artifact_reader *reader;
    struct ot_sink *sink;          /* the current payload's (owned) */
    const struct ot_payload *current;
    size_t begun;                  /* payloads begun (abort those on failure) */
    bool manifest_ok;
};

static enum ot_err pl_manifest(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                               size_t rawlen, const struct ot_sigset *sigs,
                               const struct ot_sig_report *report, struct ot_diag *d)
{
    (void)sigs, (void)report, (void)m;
    struct pipeline *pl = userdata;
    const char *want = pl->e->st.manifest;
    if (want && (strlen(want) != rawlen || memcmp(want, raw, rawlen) != 0))
        return ot_diag_set(d, OT_ERR_SIGNATURE, "the artifact's manifest is not the one the "
                                                "server announced");
    char *text = strndup((const char *)raw, rawlen); /* raw is not NUL-terminated */
    if (!text)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct ot_manifest checked = {0};
    enum ot_err err = check_announced(pl->e, text, NULL, &checked, d);
    ot_manifest_release(&checked);
    if (!err && !want) { /* a local file: this verified manifest is the one to keep */
        free(pl->e->st.manifest);
        pl->e->st.manifest = text;
        text = NULL;
    }
    free(text);
    if (!err)
        pl->manifest_ok = true;
    return err;
}

static enum ot_err pl_begin(void *userdata, const struct ot_payload *p, size_t index,
                            struct ot_sink **ret_sink, struct ot_diag *d)
{
    struct pipeline *pl = userdata;
    const struct ag_handler_ops *h = ag_handler_find(p->type, pl->ctx.modules_dir);
    if (!h)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED, "no handler for '%s'", p->type);
    enum ot_err err = h->begin(&pl->ctx, p, &pl->sink, d);
    if (err)
        return ot_diag_prefix(d, err, "payload '%s'", p->name);
    pl->begun = index + 1;
    pl->current = p;
    *ret_sink = pl->sink;
    return OT_OK;
}

static enum ot_err pl_end(void *userdata, const struct ot_payload *p, size_t index,
                          struct ot_diag *d)
{
    (void)index;
    struct pipeline *pl = userdata;
    ot_sink_free(pl->sink);
    pl->sink = NULL;
    pl->current = NULL;
    enum ot_err err = ag_handler_find(p->type, pl->ctx.modules_dir)->end(&pl->ctx, p, d);
    return err ? ot_diag_prefix(d, err, "payload '%s'", p->name) : OT_OK;
}

static void pl_free(struct pipeline *pl, bool abort_payloads)
{
    if (!pl)
        return;
    ot_sink_free(pl->sink);
    const struct ot_manifest *m = pl->reader ? ot_artifact_reader_manifest(pl->reader) : NULL;
    for (size_t i = 0; abort_payloads && m && i < pl->begun && i < m->npayloads; i++) {
        const struct ag_handler_ops *h = ag_handler_find(m->payloads[i].type, pl->ctx.modules_dir);
        if (h)
            h->abort(&pl->ctx, &m->payloads[i]);
    }
    ot_artifact_reader_free(pl->reader);
    free(pl);
}

static enum ot_err pl_new(struct ag_engine *e, struct pipeline **ret, struct ot_diag *d)
{
    struct pipeline *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    pl->e = e;
    pl->ctx = install_ctx(e);
    if (mkdir(e->work_dir, 0700) < 0 && errno != EEXIST) {
        free(pl);
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot create %s", e->work_dir);
    }
    /* check_stored: each payload is checked against its signed stored hash, which covers the
     * decoded content as well (decoding is deterministic) and is about 3x fewer bytes to hash for
     * a zstd image (issue #4). The staged path (install_staged) hashes the slot itself. */
    struct ot_reader_opts opts = {.trust = e->env.trust,
                                  .device_keys = e->env.device_keys,
                                  .ndevice_keys = e->env.ndevice_keys,
                                  .mode = OT_READ_DECODE,
                                  .decode_chunk = INSTALL_DECODE_CHUNK,
                                  .check_stored = true};
    struct ot_reader_callbacks cb = {.manifest = pl_manifest,
                                     .payload_begin = pl_begin,
                                     .payload_end = pl_end};
    enum ot_err err = ot_artifact_reader_new(&opts, &cb, pl, &pl->reader);
    if (err) {
        free(pl);
        return ot_diag_set(d, err, "out of memory");
    }
    *ret = pl;
    return OT_OK;
}

/* Every payload was written and verified: make them live (in-place handlers) or wait for the
 * reboot (A/B). "activated" is saved before the first activate. */
static void after_install(struct ag_engine *e)
{
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    if (state_manifest(e, &m, &d) != OT_OK)
        return finish(e, "failure", "%s", d.msg);
    e->st.activated = true;
    struct ot_diag sd = {0};
    if (ag_state_save(e->cfg->state_dir, &e->st, &sd) != OT_OK) {
        ot_manifest_release(&m);
        note_error(e, "cannot save the state: %s", sd.msg);
        return schedule(e, RETRY_MIN_MS);
    }
    ag_crash_point("before:activate");
    struct ag_install_ctx ctx = install_ctx(e);
    enum ot_err err = OT_OK;
    for (size_t i = 0; !err && i < m.npayloads; i++)
        err = ag_handler_find(m.payloads[i].type, e->cfg->modules_dir)
                  ->activate(&ctx, &m.payloads[i], &d);
    ot_manifest_release(&m);
    if (err)
        return finish(e, "failure", "activating the update failed: %s", d.msg);
    go(e, e->st.needs_reboot ? AG_REBOOT_PENDING : AG_VERIFY_AFTER_BOOT);
}

static void abandon(struct ag_engine *e, const char *why);

/* ---- the download cache ------------------------------------------------------------------------ */

/* A download-only deployment leaves its verified artifact in STATE_DIR/cache/<sha256>.otter; a
 * later deployment of the same file (same SHA-256) takes it from there instead of downloading it.
 * At most one file is kept: a new one replaces it, a download that needs its space drops it, and
 * it goes once the artifact is installed. It is never trusted: VERIFY hashes it as any download. */

static char *cache_file(const struct ag_engine *e, const char *sha_hex)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s%s", e->cache_dir, sha_hex, CACHE_SUFFIX) < 0 ? NULL : p;
}

/* Removes every file in the cache but the one named keep (NULL: all of them). */
static void cache_prune(struct ag_engine *e, const char *keep)
{
    DIR *dir = opendir(e->cache_dir);
    struct dirent *de;
    while (dir && (de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            (keep && strcmp(de->d_name, keep) == 0))
            continue;
        if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
            ot_log(OT_LOG_INFO, "dropped the cached artifact %s", de->d_name);
    }
    if (dir)
        closedir(dir);
}

/* Bytes the cache holds (what dropping it would free). */
static uint64_t cache_bytes(struct ag_engine *e)
{
    DIR *dir = opendir(e->cache_dir);
    struct dirent *de;
    struct stat st;
    uint64_t n = 0;
    while (dir && (de = readdir(dir)) != NULL)
        if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            n += (uint64_t)st.st_blocks * 512;
    if (dir)
        closedir(dir);
    return n;
}

/* The cached copy of this deployment's artifact, if any, becomes the download: a second name for
 * the same file (renamed instead where the file system has no hard links). True when it did. */
static bool take_from_cache(struct ag_engine *e)
{
    _cleanup_free_ char *path = cache_file(e, e->st.artifact_sha256);
    struct stat st;
    if (!path || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return false;
    unlink(e->download_path);
    if (link(path, e->download_path) < 0 && rename(path, e->download_path) < 0) {
        note_error(e, "cannot use the cached artifact %s: %s", path, strerror(errno));
        return false;
    }
    struct ot_diag d = {0};
    if (ot_fsync_parent(e->download_path, &d) != OT_OK)
        ot_log(OT_LOG_WARNING, "%s", d.msg);
    ot_log(OT_LOG_NOTICE, "deployment %lld: using the cached artifact %s (no download)",
           (long long)e->st.deployment_id, path);
    return true;
}

static void cache_drop(struct ag_engine *e, const char *sha_hex)
{
    _cleanup_free_ char *path = sha_hex[0] ? cache_file(e, sha_hex) : NULL;
    if (path && unlink(path) == 0)
        ot_log(OT_LOG_INFO, "dropped the cached artifact %s", path);
}

/* Download only: the verified download becomes the cached artifact, the only one, and the
 * deployment is done. A power cut before the report is saved restarts in VERIFY: the download is
 * gone, DOWNLOAD finds it in the cache, VERIFY hashes it again and this runs again. */
static void keep_download(struct ag_engine *e)
{
    _cleanup_free_ char *path = cache_file(e, e->st.artifact_sha256);
    struct ot_diag d = {0};
    enum ot_err err = path ? OT_OK : ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err && mkdir(e->cache_dir, 0700) < 0 && errno != EEXIST)
        err = ot_diag_errno(&d, OT_ERR_IO, errno, "cannot create %s", e->cache_dir);
    /* A download taken from the cache is the cached file itself: rename(2) then does nothing,
     * and the unlink drops the second name. */
    if (!err && rename(e->download_path, path) < 0)
        err = ot_diag_errno(&d, OT_ERR_IO, errno, "cannot keep the download as %s", path);
    if (!err && unlink(e->download_path) < 0 && errno != ENOENT)
        err = ot_diag_errno(&d, OT_ERR_IO, errno, "cannot remove %s", e->download_path);
    if (!err)
        err = ot_fsync_parent(path, &d);
    if (!err)
        err = ot_fsync_parent(e->download_path, &d);
    if (err)
        return finish(e, "failure", "download only: %s", d.msg);
    cache_prune(e, strrchr(path, '/') + 1);
    ot_log(OT_LOG_NOTICE, "deployment %lld: kept as %s", (long long)e->st.deployment_id, path);
    finish(e, "success", "downloaded (download only)");
}

/* ---- the hold point ----------------------------------------------------------------------------- */

/* The hold point is where the artifact is downloaded and verified and nothing on the running
 * system has changed yet (docs/agent.md, "Waiting"): in stored mode right after VERIFY, before any
 * handler sees a byte; in streaming mode after the slot image was written and verified, before
 * "activated" is saved and the bootloader is touched. There a deployment is kept (download
 * only), waits (the server holds the install, or the device postpones a soft update), or goes on.
 */

static bool consent_possible(const struct ag_engine *e)
{
    return HOOK(e, consent) || e->cfg->consent_command[0];
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* consent_command, without a shell, with the deployment in its environment. Exit 0 = now. */
static bool run_consent(struct ag_engine *e, const struct ot_manifest *m)
{
    static const char *const ours[] = {"OTTER_DEPLOYMENT_ID=", "OTTER_ARTIFACT_NAME=",
                                       "OTTER_ARTIFACT_VERSION="};
    _cleanup_free_ char *dep = NULL, *name = NULL, *version = NULL;
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    _cleanup_free_ char **envp = calloc(n + OT_ARRAY_SIZE(ours) + 1, sizeof(*envp));
    _cleanup_free_ struct ag_run_result *r = malloc(sizeof(*r));
    struct ot_diag d = {0};
    if (!envp || !r || asprintf(&dep, "%s%lld", ours[0], (long long)e->st.deployment_id) < 0 ||
        asprintf(&name, "%s%s", ours[1], m->name) < 0 ||
        asprintf(&version, "%s%s", ours[2], m->version) < 0) {
        note_error(e, "the consent command: out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (!has_prefix(environ[i], ours[0]) && !has_prefix(environ[i], ours[1]) &&
            !has_prefix(environ[i], ours[2]))
            envp[k++] = environ[i];
    envp[k++] = dep;
    envp[k++] = name;
    envp[k++] = version;
    const char *argv[] = {e->cfg->consent_command, NULL};
    unsigned timeout_s = (unsigned)OT_MAX((e->cfg->consent_timeout_ms + 999) / 1000, 1);
    enum ot_err err = ag__run_env(argv, envp, "/", timeout_s, r, &d);
    err = ag__run_verdict(err, r, "the consent command", &d);
    if (err)
        ot_log(OT_LOG_NOTICE, "deployment %lld: not now: %s", (long long)e->st.deployment_id,
               d.msg);
    return err == OT_OK;
}

static bool ask_consent(struct ag_engine *e)
{
    if (!consent_possible(e))
        return true; /* nobody to ask: a soft update installs like a forced one */
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    if (state_manifest(e, &m, &d) != OT_OK) {
        note_error(e, "consent: %s", d.msg);
        return false;
    }
    bool yes = HOOK(e, consent) ? e->env.hooks->consent(e->env.hooks->userdata,
                                                        e->st.deployment_id, m.name, m.version)
                                : run_consent(e, &m);
    ot_manifest_release(&m);
    return yes;
}

/* Why the install cannot go ahead now (NULL: it can). The device is asked only when the server
 * allows the install, and once: a deployment that left waiting is approved. */
static const char *hold_reason(struct ag_engine *e)
{
    if (e->st.install_held)
        return AG_WAIT_HELD;
    if (e->st.type == OT_WIRE_TYPE_SOFT && !e->st.approved && !ask_consent(e))
        return AG_WAIT_POSTPONED;
    return NULL;
}

/* Saves phase waiting with its reason; phase_waiting tells the server (once per reason) and the
 * next regular check-in asks again. */
static void enter_waiting(struct ag_engine *e, const char *reason)
{
    if (e->st.phase == AG_WAITING && strcmp(e->st.wait_reason, reason) == 0)
        return;
    snprintf(e->st.wait_reason, sizeof(e->st.wait_reason), "%s", reason);
    if (ag_state_set(&e->st.message, wait_message(reason)) != OT_OK)
        ot_log(OT_LOG_ERR, "out of memory");
    ot_log(OT_LOG_NOTICE, "deployment %lld: %s", (long long)e->st.deployment_id,
           wait_message(reason));
    if (e->st.phase == AG_WAITING ? !save(e) : !go(e, AG_WAITING))
        return schedule(e, RETRY_MIN_MS);
    uint64_t ms = e->poll_interval_s ? (uint64_t)e->poll_interval_s * 1000
                                     : e->cfg->poll_interval_ms;
    schedule(e, jittered(ms, (uint64_t)e->poll_jitter_s * 1000));
}

/* Downloaded and verified (stored: download.part; streamed: the image in the slot). */
static void at_hold_point(struct ag_engine *e, bool streamed)
{
    if (e->st.type == OT_WIRE_TYPE_DOWNLOAD_ONLY)
        return keep_download(e);
    const char *why = hold_reason(e);
    if (why) {
        e->st.staged = streamed;
        return enter_waiting(e, why);
    }
    if (streamed)
        return after_install(e);
    go(e, AG_INSTALL);
}

/* The hold is lifted, and a soft update has the device's consent: on to the install. Stored:
 * through VERIFY, so that a file that sat on disk for days is hashed once more before it is used
 * (a damaged one is downloaded again); streamed: INSTALL checks the image in the slot. */
static void leave_waiting(struct ag_engine *e)
{
    e->st.approved = true;
    e->st.wait_reason[0] = '\0';
    if (ag_state_set(&e->st.message, NULL) != OT_OK)
        ot_log(OT_LOG_ERR, "out of memory");
    ot_log(OT_LOG_NOTICE, "deployment %lld: the install may go ahead",
           (long long)e->st.deployment_id);
    go(e, e->st.staged ? AG_INSTALL : AG_VERIFY);
}

/* A check-in while waiting: the server's latest word on the deployment. */
static void waiting_answer(struct ag_engine *e, const struct ot_wire_checkin_resp *w)
{
    char hex[65] = "";
    if (w->action == OT_WIRE_ACTION_INSTALL)
        ot_hex_encode(w->artifact_sha256, sizeof(w->artifact_sha256), hex);
    if (w->action != OT_WIRE_ACTION_INSTALL || w->deployment_id != e->st.deployment_id ||
        strcmp(hex, e->st.artifact_sha256) != 0)
        return abandon(e, "the server does not offer it any more");
    if (w->install_held != e->st.install_held) {
        e->st.install_held = w->install_held;
        if (!save(e))
            return; /* asked again at the next check-in */
    }
    const char *why = hold_reason(e);
    if (why)
        return enter_waiting(e, why);
    leave_waiting(e);
}

/* The waiting report for report_reason got through: not sent again for that reason. */
static void waiting_reported(struct ag_engine *e)
{
    if (e->st.phase != AG_WAITING || strcmp(e->st.wait_reported, e->report_reason) == 0)
        return;
    snprintf(e->st.wait_reported, sizeof(e->st.wait_reported), "%s", e->report_reason);
    (void)save(e);
}

/* Streamed and then held: the image has been in the inactive slot since before the wait. Check
 * it is still the verified one (days may have passed and the power gone more than once) before
 * the bootloader is pointed at it; if not, stream it again. */
static void install_staged(struct ag_engine *e)
{
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    if (state_manifest(e, &m, &d) != OT_OK)
        return finish(e, "failure", "%s", d.msg);
    struct ag_install_ctx ctx = install_ctx(e);
    bool ok = false;
    if (m.npayloads == 1 && uses_slot(&m.payloads[0]) && ctx.slot_path) {
        uint8_t sum[OT_SHA256_LEN];
        uint64_t got = 0;
        _cleanup_close_ int fd = open(ctx.slot_path, O_RDONLY | O_CLOEXEC);
        ok = fd >= 0 && hash_fd(fd, m.payloads[0].size, sum, &got, &d) == OT_OK &&
             got == m.payloads[0].size && memcmp(sum, m.payloads[0].sha256, sizeof(sum)) == 0;
    }
    ot_manifest_release(&m);
    if (!ok) {
        note_error(e, "the image in slot %s is not the verified one any more: downloading it "
                   "again", e->st.target_slot);
        e->st.staged = false;
        return (void)go(e, AG_DOWNLOAD);
    }
    after_install(e);
}

/* ---- phases ----------------------------------------------------------------------------------- */

static void report_progress(struct ag_engine *e, enum ot_wire_status status, int progress);
static void reboot_now(struct ag_engine *e);

static void on_final_report(void *userdata, const struct ag_net_result *r)
{
    struct ag_engine *e = userdata;
    e->final_in_flight = false;
    /* 409: the server has a final state already (our earlier report got through); 404: the
     * deployment is gone. Either way there is nothing more to tell. */
    if (r->err && r->err != OT_ERR_EXISTS && r->err != OT_ERR_NOENT) {
        e->failures++;
        note_error(e, "final report not delivered (%s): retrying", r->diag.msg);
        return schedule(e, backoff_ms(e));
    }
    e->failures = 0;
    cleanup_files(e);
    int64_t dep = e->st.deployment_id;
    if (HOOK(e, reported))
        e->env.hooks->reported(e->env.hooks->userdata, dep, e->st.result, r->err == OT_OK);
    ag_state_release(&e->st);
    e->st.phase = AG_REPORT; /* go() saves idle */
    if (go(e, AG_IDLE)) {
        ot_log(OT_LOG_NOTICE, "deployment %lld: result reported", (long long)dep);
        e->inventory_sent = false; /* versions changed */
    }
    run(e);
}

static void phase_report(struct ag_engine *e)
{
    if (!e->st.deployment_id || !e->env.net) {
        cleanup_files(e);
        struct ag_state idle = {.phase = AG_IDLE};
        ag_state_release(&e->st);
        e->st = idle;
        e->st.phase = AG_REPORT;
        go(e, AG_IDLE);
        return;
    }
    if (e->final_in_flight)
        return;
    enum ot_wire_status s = strcmp(e->st.result, "success") == 0       ? OT_WIRE_SUCCESS
                            : strcmp(e->st.result, "rolled_back") == 0 ? OT_WIRE_ROLLED_BACK
                                                                       : OT_WIRE_FAILURE;
    struct ot_wire_status_report r = {.status = s,
                                      .progress = -1,
                                      .message = e->st.message ? e->st.message : (char *)""};
    e->final_in_flight = true;
    ag_net_report(e->env.net, e->st.deployment_id, &r, on_final_report, e);
}

/* A configured shell command (health check, reboot) through the handlers' program runner. */
static enum ot_err run_command(const char *cmd, uint64_t timeout_ms, const char *what,
                               struct ot_diag *d)
{
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    struct ag_run_result *r = malloc(sizeof(*r));
    if (!r)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    unsigned timeout_s = (unsigned)OT_MAX((timeout_ms + 999) / 1000, 1);
    enum ot_err err = ag__run(argv, "/", timeout_s, r, d);
    err = ag__run_verdict(err, r, what, d);
    free(r);
    return err;
}

static void reboot_now(struct ag_engine *e)
{
    ag_crash_point("before:reboot");
    if (HOOK(e, reboot)) {
        e->exit_code = AG_EXIT_REBOOT; /* no more work in this life */
        e->env.hooks->reboot(e->env.hooks->userdata);
        return;
    }
    if (!e->cfg->reboot_command[0]) {
        ot_log(OT_LOG_NOTICE, "reboot needed: exiting with status %d", AG_EXIT_REBOOT);
        e->exit_code = AG_EXIT_REBOOT;
        if (e->env.loop)
            ag_loop_stop(e->env.loop, AG_EXIT_REBOOT);
        return;
    }
    ot_log(OT_LOG_NOTICE, "rebooting: %s", e->cfg->reboot_command);
    struct ot_diag d = {0};
    if (run_command(e->cfg->reboot_command, 60000, "the reboot command", &d) != OT_OK)
        note_error(e, "%s", d.msg);
    schedule(e, 60000); /* still here a minute later: try again */
}

static void on_reboot_timer(void *userdata)
{
    struct ag_engine *e = userdata;
    e->timer = 0;
    if (e->reboot_after_report) {
        e->reboot_after_report = false;
        reboot_now(e);
    }
}

static void schedule_reboot(struct ag_engine *e)
{
    if (e->timer)
        ag_loop_timer_cancel(e->env.loop, e->timer);
    e->timer = ag_loop_timer(e->env.loop, 10000, on_reboot_timer, e);
}

static void phase_reboot_pending(struct ag_engine *e)
{
    if (e->reboot_after_report)
        return; /* already on its way */
    struct ag_boot_state bs;
    struct ot_diag d = {0};
    if (ag_boot_read(e->env.boot, &bs, &d) != OT_OK)
        return finish(e, "failure", "cannot read the boot environment: %s", d.msg);
    if (strcmp(bs.booted, e->st.target_slot) == 0)
        return (void)go(e, AG_VERIFY_AFTER_BOOT);
    if (e->st.boot_armed && !bs.try_slot[0])
        return finish(e, "rolled_back", "the new slot %s did not boot: the bootloader fell "
                      "back to %s", e->st.target_slot, bs.booted);
    if (!e->st.boot_armed) {
        if (ag_boot_try(e->env.boot, e->st.target_slot, &d) != OT_OK)
            return finish(e, "failure", "cannot arm the bootloader: %s", d.msg);
        ag_crash_point("after:boot_try");
        e->st.boot_armed = true;
        if (ag_state_save(e->cfg->state_dir, &e->st, &d) != OT_OK) {
            note_error(e, "cannot save the state: %s", d.msg);
            return schedule(e, RETRY_MIN_MS);
        }
    }
    if (e->env.net && e->st.deployment_id && e->env.loop) {
        /* tell the server first (bounded: the reboot goes ahead after 10 s regardless) */
        report_progress(e, OT_WIRE_REBOOTING, -1);
        e->reboot_after_report = true;
        return schedule_reboot(e);
    }
    if (e->env.loop)
        reboot_now(e);
}

static enum ot_err health_check(struct ag_engine *e, struct ot_diag *d)
{
    if (HOOK(e, health))
        return e->env.hooks->health(e->env.hooks->userdata, d);
    if (!e->cfg->health_command[0])
        return OT_OK;
    return run_command(e->cfg->health_command, e->cfg->health_timeout_ms, "the health check", d);
}

static void on_health_checkin(void *userdata, const struct ag_net_result *r,
                              const struct ot_wire_checkin_resp *resp)
{
    (void)resp;
    struct ag_engine *e = userdata;
    e->checkin_in_flight = false;
    hook_checked_in(e, r);
    if (e->st.phase != AG_VERIFY_AFTER_BOOT)
        return;
    if (r->err) {
        /* The new version must reach the server; give it a few tries before giving up. */
        if (++e->failures < MAX_ATTEMPTS) {
            note_error(e, "health: the server is not reachable yet (%s)", r->diag.msg);
            return schedule(e, backoff_ms(e));
        }
        e->failures = 0;
        return finish(e, "rolled_back", "after the update the server could not be reached: %s",
                      r->diag.msg);
    }
    e->failures = 0;
    go(e, AG_COMMIT);
    run(e);
}

static void checkin_request(struct ag_engine *e, ag_net_checkin_fn fn);

static void phase_verify_after_boot(struct ag_engine *e, bool with_server)
{
    struct ot_diag d = {0};
    if (e->st.needs_reboot) {
        struct ag_boot_state bs;
        if (ag_boot_read(e->env.boot, &bs, &d) != OT_OK)
            return finish(e, "failure", "cannot read the boot environment: %s", d.msg);
        if (strcmp(bs.booted, e->st.target_slot) != 0)
            return finish(e, "rolled_back", "the new slot %s did not boot: running %s",
                          e->st.target_slot, bs.booted);
    }
    if (e->env.net && e->st.deployment_id)
        report_progress(e, OT_WIRE_VERIFYING, -1);
    if (health_check(e, &d) != OT_OK)
        return finish(e, "rolled_back", "%s", d.msg);
    if (with_server && e->env.net) {
        if (!e->checkin_in_flight)
            checkin_request(e, on_health_checkin);
        return;
    }
    go(e, AG_COMMIT);
}

static void provides_free(struct ag_engine *e)
{
    for (size_t i = 0; i < e->nprovides; i++) {
        free(e->provides[i].key);
        free(e->provides[i].value);
    }
    free(e->provides);
    free(e->wire_provides);
    e->provides = NULL;
    e->wire_provides = NULL;
    e->nprovides = 0;
}

/* What the device provides (checked against artifacts' depends, sent with every check-in): the
 * configuration's `provides`, then what committed artifacts provided, which wins for a key both
 * name (a bootloader artifact that provides bootloader=3 outdates the configured bootloader=2).
 * False: out of memory. */
static bool provides_rebuild(struct ag_engine *e)
{
    provides_free(e);
    size_t max = e->cfg->provides.n + e->installed.nprovides;
    if (!max)
        return true;
    e->provides = calloc(max, sizeof(*e->provides));
    e->wire_provides = calloc(max, sizeof(*e->wire_provides));
    if (!e->provides || !e->wire_provides) {
        provides_free(e);
        return false;
    }
    for (size_t i = 0; i < max; i++) {
        bool conf = i < e->cfg->provides.n;
        const char *kv = conf ? e->cfg->provides.v[i] : NULL, *eq = kv ? strchr(kv, '=') : NULL;
        const struct ot_kv *in = conf ? NULL : &e->installed.provides[i - e->cfg->provides.n];
        char *key = conf ? strndup(kv, (size_t)(eq - kv)) : strdup(in->key);
        char *value = strdup(conf ? eq + 1 : in->value);
        size_t k = 0;
        while (k < e->nprovides && (!key || strcmp(e->provides[k].key, key) != 0))
            k++;
        if (k == e->nprovides) {
            e->nprovides++;
        } else {
            free(e->provides[k].key);
            free(e->provides[k].value);
        }
        e->provides[k] = (struct ot_kv){key, value};
        e->wire_provides[k] = (struct ot_wire_kv){key, value};
        if (!key || !value) {
            provides_free(e); /* none rather than half: a check-in must not see a NULL */
            return false;
        }
    }
    return true;
}

static void phase_commit(struct ag_engine *e)
{
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    if (state_manifest(e, &m, &d) != OT_OK)
        return finish(e, "failure", "%s", d.msg);
    struct ag_install_ctx ctx = install_ctx(e);
    enum ot_err err = OT_OK;
    if (e->st.needs_reboot)
        err = ag_boot_commit(e->env.boot, e->st.target_slot, &d);
    for (size_t i = 0; !err && i < m.npayloads; i++)
        err = ag_handler_find(m.payloads[i].type, e->cfg->modules_dir)
                  ->commit(&ctx, &m.payloads[i], &d);
    for (size_t i = 0; !err && i < m.npayloads; i++)
        err = ag_installed_put(&e->installed, m.payloads[i].name, m.payloads[i].version,
                               m.payloads[i].sha256);
    for (size_t i = 0; !err && i < m.nprovides; i++)
        err = ag_installed_provide(&e->installed, m.provides[i].key, m.provides[i].value);
    if (!err)
        e->installed.min_security_version =
            OT_MAX(e->installed.min_security_version, m.security_version);
    if (!err)
        err = ag_installed_save(e->cfg->state_dir, &e->installed, &d);
    if (!err && !provides_rebuild(e))
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    ot_manifest_release(&m);
    if (err) {
        /* The new version runs; what failed is bookkeeping. Retry rather than roll back. */
        note_error(e, "commit: %s (retrying)", d.msg);
        return schedule(e, backoff_ms(e));
    }
    ag_crash_point("after:commit");
    cache_drop(e, e->st.artifact_sha256); /* installed: the copy has done its job */
    snprintf(e->st.result, sizeof(e->st.result), "success");
    if (ag_state_set(&e->st.message, "installed") != OT_OK)
        ot_log(OT_LOG_ERR, "out of memory");
    go(e, AG_REPORT);
}

static void phase_rollback(struct ag_engine *e)
{
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    enum ot_err err = state_manifest(e, &m, &d);
    struct ag_install_ctx ctx = install_ctx(e);
    for (size_t i = 0; !err && i < m.npayloads; i++)
        err = ag_handler_find(m.payloads[i].type, e->cfg->modules_dir)
                  ->rollback(&ctx, &m.payloads[i], &d);
    ot_manifest_release(&m);
    if (!err && e->st.needs_reboot) {
        struct ag_boot_state bs;
        err = ag_boot_rollback(e->env.boot, &d);
        if (!err)
            err = ag_boot_read(e->env.boot, &bs, &d);
        if (!err && strcmp(bs.booted, e->st.target_slot) == 0) {
            /* running the new slot: back to the old one (the trial is cleared, so the
             * bootloader boots the default) */
            ag_crash_point("before:rollback_reboot");
            if (e->env.loop)
                return reboot_now(e);
            e->exit_code = AG_EXIT_REBOOT;
            return;
        }
    }
    if (err) {
        note_error(e, "rollback: %s (retrying)", d.msg);
        return schedule(e, backoff_ms(e));
    }
    go(e, AG_REPORT);
}

/* Install from the downloaded (or local) file. */
static void phase_install(struct ag_engine *e)
{
    struct ot_diag d = {0};
    long hold = hook_before(e, AG_INSTALL, &d);
    if (hold > 0) { /* a simulated install that takes this long */
        report_progress(e, OT_WIRE_INSTALLING, -1);
        return schedule(e, (uint64_t)hold);
    }
    if (hold < 0)
        return finish(e, "failure", "installation failed: %s", d.msg);
    if (++e->st.attempts > MAX_ATTEMPTS)
        return finish(e, "failure", "the installation was interrupted %d times", MAX_ATTEMPTS);
    if (ag_state_save(e->cfg->state_dir, &e->st, &d) != OT_OK) {
        note_error(e, "cannot save the state: %s", d.msg);
        return schedule(e, RETRY_MIN_MS);
    }
    if (e->env.net && e->st.deployment_id)
        report_progress(e, OT_WIRE_INSTALLING, -1);
    if (e->st.staged)
        return install_staged(e);
    const char *src = e->st.deployment_id ? e->download_path : e->st.url;
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return finish(e, "failure", "cannot open the artifact %s: %s", src, strerror(errno));
    struct pipeline *pl = NULL;
    enum ot_err err = pl_new(e, &pl, &d);
    uint8_t *buf = err ? NULL : malloc(INSTALL_READ_CHUNK);
    if (!err && !buf)
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    while (!err) {
        ssize_t n = read(fd, buf, INSTALL_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            err = ot_diag_errno(&d, OT_ERR_IO, errno, "reading %s", src);
        else if (n == 0)
            break;
        else
            err = ot_artifact_reader_feed(pl->reader, buf, (size_t)n, &d);
    }
    free(buf);
    if (!err)
        err = ot_artifact_reader_finish(pl->reader, &d);
    close(fd);
    pl_free(pl, err != OT_OK);
    if (err)
        return finish(e, "failure", "%s", d.msg);
    after_install(e);
}

static void phase_verify(struct ag_engine *e)
{
    uint8_t sum[32], want[32];
    char hex[65];
    int fd = open(e->download_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return (void)go(e, AG_DOWNLOAD);
    uint64_t total = 0;
    struct ot_diag d = {0};
    enum ot_err err = hash_fd(fd, UINT64_MAX, sum, &total, &d);
    close(fd);
    if (err) { /* out of memory or a read error: nothing was decided, try again */
        note_error(e, "cannot read the download to verify it (%s): retrying", d.msg);
        return schedule(e, RETRY_MIN_MS);
    }
    ot_hex_encode(sum, sizeof(sum), hex);
    if (ot_hex_decode(e->st.artifact_sha256, want, sizeof(want)) != OT_OK ||
        memcmp(sum, want, sizeof(sum)) != 0 || total != e->st.artifact_size) {
        unlink(e->download_path);
        cache_drop(e, e->st.artifact_sha256); /* if that is where it came from: never again */
        if (++e->st.attempts > MAX_ATTEMPTS)
            return finish(e, "failure", "the download does not match its SHA-256 (got %.16s..., "
                          "%llu bytes)", hex, (unsigned long long)total);
        note_error(e, "the download does not match its SHA-256: downloading again");
        return (void)go(e, AG_DOWNLOAD);
    }
    e->st.attempts = 0;
    at_hold_point(e, false);
}

/* ---- download ---------------------------------------------------------------------------------- */

static bool in_window(const char *w)
{
    unsigned h1, m1, h2, m2;
    if (!w[0] || sscanf(w, "%u:%u-%u:%u", &h1, &m1, &h2, &m2) != 4)
        return true;
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    unsigned now = (unsigned)(tm.tm_hour * 60 + tm.tm_min), a = h1 * 60 + m1, b = h2 * 60 + m2;
    return a <= b ? now >= a && now < b : now >= a || now < b;
}

/* Stored mode: everything of download.part up to `end` goes to the disk, and the state says so.
 * A download resumes from there after a power cut (phase_download): bytes written after it may
 * be lost or garbage when the power goes. */
static enum ot_err download_durable(struct ag_engine *e, uint64_t end, struct ot_diag *d)
{
    if (e->dl_fd < 0 || end <= e->st.downloaded)
        return OT_OK;
    if (fdatasync(e->dl_fd) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "syncing the download");
    e->st.downloaded = end;
    return ag_state_save(e->cfg->state_dir, &e->st, d);
}

static enum ot_err on_dl_data(void *userdata, uint64_t offset, const uint8_t *p, size_t n,
                              struct ot_diag *d)
{
    struct ag_engine *e = userdata;
    enum ot_err err;
    if (e->stream) {
        err = ot_artifact_reader_feed(e->stream->reader, p, n, d);
    } else {
        ssize_t w = pwrite(e->dl_fd, p, n, (off_t)offset);
        err = w == (ssize_t)n ? OT_OK
                              : ot_diag_errno(d, OT_ERR_IO, w < 0 ? errno : ENOSPC,
                                              "writing the download");
        /* the bytes come in order: a block boundary crossed is a block complete */
        uint64_t block = e->cfg->download_block;
        if (!err && block && (offset + n) / block > offset / block)
            err = download_durable(e, (offset + n) / block * block, d);
    }
    if (err)
        return err; /* dl_offset stays the end of what was written */
    e->dl_offset = offset + n;
    unsigned pct = e->st.artifact_size ? (unsigned)(e->dl_offset * 100 / e->st.artifact_size) : 0;
    if (pct >= e->last_progress + 10) {
        e->last_progress = pct - pct % 10;
        report_progress(e, OT_WIRE_DOWNLOADING, (int)e->last_progress);
    }
    return err;
}

/* A download attempt broke (or a simulated one): retried later with backoff, or, after too many,
 * the end of the update (returns true: the caller runs the next phase). */
static bool download_interrupted(struct ag_engine *e, const char *msg)
{
    if (++e->failures > 20 || e->st.attempts > MAX_ATTEMPTS) {
        finish(e, "failure", "download failed: %s", msg);
        return true;
    }
    note_error(e, "download interrupted (%s): resuming later", msg);
    schedule(e, backoff_ms(e));
    return false;
}

static void on_dl_done(void *userdata, const struct ag_net_result *r)
{
    struct ag_engine *e = userdata;
    e->dl = NULL;
    struct ot_diag d = {0};
    enum ot_err err = r->err;
    if (!err && e->stream)
        err = ot_artifact_reader_finish(e->stream->reader, &d);
    else if (!err && fsync(e->dl_fd) < 0)
        err = ot_diag_errno(&d, OT_ERR_IO, errno, "fsync of the download");
    else if (!err)
        e->st.downloaded = e->dl_offset; /* saved with the next phase */
    else if (err == OT_ERR_IO && !e->stream && download_durable(e, e->dl_offset, &d) != OT_OK)
        ot_log(OT_LOG_WARNING, "download: %s", d.msg); /* it resumes from the last block */
    if (e->dl_fd >= 0)
        close(e->dl_fd);
    e->dl_fd = -1;
    if (e->stream) {
        bool verified = !err && e->stream->manifest_ok;
        pl_free(e->stream, !verified);
        e->stream = NULL;
        if (verified) {
            e->failures = 0;
            return at_hold_point(e, true), run(e);
        }
        /* a verification error ends the update; a network one restarts it from the start */
        if (err && err != OT_ERR_IO && err != OT_ERR_RANGE)
            return finish(e, "failure", "%s", d.msg[0] ? d.msg : r->diag.msg), run(e);
    }
    if (err == OT_ERR_NOENT)
        return finish(e, "failure", "the artifact is not available any more: %s", r->diag.msg),
               run(e);
    if (err == OT_ERR_INVALID || err == OT_ERR_RANGE) {
        /* the file on the server is not the one we have part of: start over */
        unlink(e->download_path);
        e->st.attempts++;
    }
    if (err) {
        if (download_interrupted(e, r->diag.msg[0] ? r->diag.msg : d.msg))
            run(e);
        return;
    }
    e->failures = 0;
    go(e, AG_VERIFY);
    run(e);
}

/* Streaming installs while it downloads, so its hold point comes after the slot image was written
 * and verified, before activation. That is harmless only for a single image for the inactive
 * slot: any other payload's handler would run before the hold is lifted. So a deployment that may
 * have to wait (held by the server, or soft with someone to ask) is downloaded in stored mode
 * unless it is such an image; and a download-only one, whose file is kept, always is. */
static bool streams(const struct ag_engine *e)
{
    if (!e->cfg->streaming || e->st.type == OT_WIRE_TYPE_DOWNLOAD_ONLY)
        return false;
    bool may_wait = e->st.install_held ||
                    (e->st.type == OT_WIRE_TYPE_SOFT && !e->st.approved && consent_possible(e));
    return !may_wait || e->st.slot_only;
}

/* Stored mode: is there room for the rest of the download? The cached artifact (never the one
 * being downloaded: that would have been taken) counts as free space, and is dropped when the
 * download needs it. */
static bool room_for_download(struct ag_engine *e, uint64_t offset)
{
    struct statvfs vfs;
    if (fstatvfs(e->dl_fd, &vfs) != 0)
        return true; /* unknown: the writes will tell */
    uint64_t need = e->st.artifact_size - offset;
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (avail >= need)
        return true;
    uint64_t cached = cache_bytes(e);
    if (cached && avail + cached >= need) {
        ot_log(OT_LOG_NOTICE, "dropping the cached artifact to make room for the download");
        cache_prune(e, NULL);
        return true;
    }
    close(e->dl_fd);
    e->dl_fd = -1;
    finish(e, "failure", "not enough free space for the download: %llu bytes needed, %llu free%s",
           (unsigned long long)need, (unsigned long long)(avail + cached),
           cached ? " (with the cached artifact)" : "");
    return false;
}

static void phase_download(struct ag_engine *e)
{
    if (e->dl || e->paused)
        return;
    if (e->st.deployment_id && take_from_cache(e))
        return (void)go(e, AG_VERIFY);
    if (!e->env.net)
        return finish(e, "failure", "no server to download from");
    if (!in_window(e->cfg->download_window))
        return schedule(e, 60000);
    struct ot_diag d = {0};
    long hold = hook_before(e, AG_DOWNLOAD, &d);
    if (hold > 0)
        return schedule(e, (uint64_t)hold);
    if (hold < 0) {
        download_interrupted(e, d.msg); /* inside run(): a finish goes on by itself */
        return;
    }
    uint64_t offset = 0;
    if (streams(e)) {
        if (pl_new(e, &e->stream, &d) != OT_OK)
            return finish(e, "failure", "%s", d.msg);
        e->dl_fd = -1;
    } else {
        e->dl_fd = open(e->download_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (e->dl_fd < 0 || fstat(e->dl_fd, &st) < 0)
            return finish(e, "failure", "cannot open %s: %s", e->download_path, strerror(errno));
        /* from the last synced block: what lies after it may be what a power cut lost */
        offset = OT_MIN((uint64_t)st.st_size, e->st.downloaded);
        if (offset > e->st.artifact_size)
            offset = 0;
        if ((uint64_t)st.st_size > offset && ftruncate(e->dl_fd, (off_t)offset) < 0)
            return finish(e, "failure", "cannot truncate the download: %s", strerror(errno));
        if (offset < (uint64_t)st.st_size)
            ot_log(OT_LOG_INFO, "download: resuming from byte %llu, the end of the last synced "
                   "block (%llu bytes were in the file)", (unsigned long long)offset,
                   (unsigned long long)st.st_size);
        if (e->st.downloaded != offset) { /* the file was removed, or cut short */
            e->st.downloaded = offset;
            if (!save(e)) {
                close(e->dl_fd);
                e->dl_fd = -1;
                download_interrupted(e, "cannot save the state");
                return;
            }
        }
        if (offset == e->st.artifact_size) {
            close(e->dl_fd);
            e->dl_fd = -1;
            return (void)go(e, AG_VERIFY);
        }
        if (!room_for_download(e, offset))
            return;
    }
    char etag[72];
    snprintf(etag, sizeof(etag), "\"%s\"", e->st.artifact_sha256);
    e->dl_offset = offset;
    e->last_progress = e->st.artifact_size ? (unsigned)(offset * 100 / e->st.artifact_size) : 0;
    e->last_progress -= e->last_progress % 10;
    e->dl = ag_net_download(e->env.net, e->st.url, offset, etag, e->cfg->max_rate, on_dl_data,
                            on_dl_done, e);
}

/* ---- check-in ----------------------------------------------------------------------------------- */

/* The server closed the deployment (cancelled it) before this device's first report reached it,
 * or stopped offering a deployment that waits here: nothing was activated, so the device drops it
 * as if it had never come. (A slot written by a streamed download is never booted.) */
static void abandon(struct ag_engine *e, const char *why)
{
    if (e->dl)
        ag_net_download_cancel(e->dl);
    e->dl = NULL;
    pl_free(e->stream, true);
    e->stream = NULL;
    if (e->dl_fd >= 0)
        close(e->dl_fd);
    e->dl_fd = -1;
    e->pending_status = 0;
    ot_log(OT_LOG_WARNING, "deployment %lld: %s: dropping it", (long long)e->st.deployment_id,
           why);
    cleanup_files(e);
    enum ag_phase from = e->st.phase;
    ag_state_release(&e->st);
    e->st.phase = from; /* go() saves idle */
    go(e, AG_IDLE);
}

static void waiting_reported(struct ag_engine *e);

static void on_report(void *userdata, const struct ag_net_result *r)
{
    struct ag_engine *e = userdata;
    e->report_in_flight = false;
    bool ours = e->report_deployment == e->st.deployment_id && e->st.deployment_id;
    /* 409: the row is final on the server already. Before anything was activated that means
     * the deployment was cancelled as this device took it: drop it rather than install it. */
    if (r->err == OT_ERR_EXISTS && ours && !e->st.activated &&
        (e->st.phase == AG_DOWNLOAD || e->st.phase == AG_VERIFY || e->st.phase == AG_INSTALL ||
         e->st.phase == AG_WAITING))
        return abandon(e, "the server closed it before it was installed here"), run(e);
    if (r->err)
        ot_log(OT_LOG_INFO, "progress report not delivered: %s", r->diag.msg);
    else if (ours && e->report_status == OT_WIRE_WAITING)
        waiting_reported(e);
    if (e->pending_status) {
        int s = e->pending_status;
        e->pending_status = 0;
        return report_progress(e, (enum ot_wire_status)s, e->pending_progress);
    }
    if (e->reboot_after_report) {
        e->reboot_after_report = false;
        reboot_now(e);
    }
}

/* Progress is best effort and never waits: one report in flight, the latest one queued. */
static void report_progress(struct ag_engine *e, enum ot_wire_status status, int progress)
{
    if (!e->env.net || !e->st.deployment_id)
        return;
    if (status == OT_WIRE_WAITING && e->st.phase != AG_WAITING)
        return; /* queued while waiting, and the wait is over */
    if (e->report_in_flight) {
        e->pending_status = (int)status;
        e->pending_progress = progress;
        return;
    }
    struct ot_wire_status_report r = {.status = status, .progress = progress, .message = ""};
    if (status == OT_WIRE_WAITING) { /* the message says why; which why was told is noted */
        r.message = (char *)wait_message(e->st.wait_reason);
        snprintf(e->report_reason, sizeof(e->report_reason), "%s", e->st.wait_reason);
    }
    e->report_in_flight = true;
    e->report_deployment = e->st.deployment_id;
    e->report_status = (int)status;
    ag_net_report(e->env.net, e->st.deployment_id, &r, on_report, e);
}

static void checkin_request(struct ag_engine *e, ag_net_checkin_fn fn)
{
    struct ot_wire_checkin_req req = {.installed = e->installed.payloads,
                                      .ninstalled = e->installed.n,
                                      .provides = e->wire_provides,
                                      .nprovides = e->nprovides};
    snprintf(req.device_type, sizeof(req.device_type), "%s", e->cfg->device_type);
    e->checkin_in_flight = true;
    ag_net_checkin(e->env.net, &req, fn, e);
}

static void on_inventory(void *userdata, const struct ag_net_result *r)
{
    struct ag_engine *e = userdata;
    if (r->err) {
        e->inventory_sent = false;
        ot_log(OT_LOG_INFO, "inventory not delivered: %s", r->diag.msg);
    }
}

static void send_inventory(struct ag_engine *e)
{
    struct ot_wire_inventory inv = {0};
    struct ot_diag d = {0};
    if (ag_inventory_collect(e->cfg, &e->installed, &inv, &d) != OT_OK) {
        ot_log(OT_LOG_WARNING, "inventory: %s", d.msg);
        return;
    }
    e->inventory_sent = true;
    ag_net_inventory(e->env.net, &inv, on_inventory, e);
    ot_wire_inventory_release(&inv);
}

/* Work from the server: check it against this device, then start downloading. */
static void take_work(struct ag_engine *e, const struct ot_wire_checkin_resp *w)
{
    struct ot_manifest m = {0};
    struct ot_diag d = {0};
    char hex[65];
    ot_hex_encode(w->artifact_sha256, sizeof(w->artifact_sha256), hex);
    ag_state_release(&e->st);
    e->st.deployment_id = w->deployment_id;
    snprintf(e->st.artifact_sha256, sizeof(e->st.artifact_sha256), "%s", hex);
    e->st.artifact_size = w->artifact_size;
    e->st.type = w->type;
    e->st.install_held = w->install_held;
    if (ag_state_set(&e->st.url, w->download[0]) != OT_OK ||
        ag_state_set(&e->st.manifest, w->manifest) != OT_OK) {
        note_error(e, "out of memory");
        return;
    }
    ot_log(OT_LOG_NOTICE, "deployment %lld: %s %s (%llu bytes)%s%s%s",
           (long long)w->deployment_id, w->artifact_name, w->artifact_version,
           (unsigned long long)w->artifact_size, w->type ? ", " : "",
           w->type ? ot_wire_deploy_type_name(w->type) : "",
           w->install_held ? ", install held" : "");
    if (check_announced(e, w->manifest, w->signatures, &m, &d) != OT_OK)
        return finish(e, "failure", "refused before download: %s", d.msg);
    e->st.needs_reboot = needs_reboot(&m);
    e->st.slot_only = m.npayloads == 1 && uses_slot(&m.payloads[0]);
    ot_manifest_release(&m);
    /* download only installs nothing: which slot is running does not matter */
    if (e->st.needs_reboot && e->st.type != OT_WIRE_TYPE_DOWNLOAD_ONLY) {
        struct ag_boot_state bs;
        if (ag_boot_read(e->env.boot, &bs, &d) != OT_OK)
            return finish(e, "failure", "cannot read the boot environment: %s", d.msg);
        snprintf(e->st.previous_slot, sizeof(e->st.previous_slot), "%s", bs.booted);
        snprintf(e->st.target_slot, sizeof(e->st.target_slot), "%s", ag_boot_other(bs.booted));
    }
    cleanup_files(e);
    if (go(e, AG_DOWNLOAD))
        report_progress(e, OT_WIRE_DOWNLOADING, 0);
}

static void on_checkin(void *userdata, const struct ag_net_result *r,
                       const struct ot_wire_checkin_resp *resp)
{
    struct ag_engine *e = userdata;
    e->checkin_in_flight = false;
    hook_checked_in(e, r);
    if (r->err) {
        e->failures++;
        if (r->err == OT_ERR_PERM && r->retry_after) {
            ot_log(OT_LOG_NOTICE, "waiting for an operator to accept this device");
            return schedule(e, (uint64_t)r->retry_after * 1000);
        }
        note_error(e, "check-in failed: %s", r->diag.msg);
        return schedule(e, backoff_ms(e));
    }
    e->failures = 0;
    e->last_checkin = time(NULL);
    e->poll_interval_s = resp->poll_interval;
    e->poll_jitter_s = resp->poll_jitter;
    if (!e->inventory_sent)
        send_inventory(e);
    if (e->st.phase == AG_WAITING && !e->paused)
        waiting_answer(e, resp); /* may drop it: then the answer may be new work */
    if (e->st.phase == AG_IDLE && resp->action == OT_WIRE_ACTION_INSTALL && !e->paused)
        take_work(e, resp);
    if ((e->st.phase == AG_IDLE || e->st.phase == AG_WAITING) && !e->timer)
        /* the next check-in, at the server's interval (unless a retry is due sooner) */
        schedule(e, jittered((uint64_t)e->poll_interval_s * 1000,
                             (uint64_t)e->poll_jitter_s * 1000));
    run(e);
}

static void phase_idle(struct ag_engine *e)
{
    if (e->paused || e->checkin_in_flight || !e->env.net)
        return;
    if (e->timer)
        return; /* the next check-in is scheduled */
    checkin_request(e, on_checkin);
}

/* Waiting checks in like idle (waiting_answer reads the answers), and tells the server why it
 * waits, once per reason (a report that did not get through goes again). */
static void phase_waiting(struct ag_engine *e)
{
    bool told = strcmp(e->st.wait_reported, e->st.wait_reason) == 0;
    bool telling = (e->report_in_flight && e->report_status == OT_WIRE_WAITING &&
                    strcmp(e->report_reason, e->st.wait_reason) == 0) ||
                   e->pending_status == OT_WIRE_WAITING;
    if (!told && !telling && e->st.wait_reason[0])
        report_progress(e, OT_WIRE_WAITING, -1);
    phase_idle(e);
}

/* ---- driving ------------------------------------------------------------------------------------ */

static void run_phase(struct ag_engine *e)
{
    switch (e->st.phase) {
    case AG_IDLE:
        return phase_idle(e);
    case AG_DOWNLOAD:
        return phase_download(e);
    case AG_VERIFY:
        return phase_verify(e);
    case AG_INSTALL:
        return phase_install(e);
    case AG_REBOOT_PENDING:
        return phase_reboot_pending(e);
    case AG_VERIFY_AFTER_BOOT:
        return phase_verify_after_boot(e, true);
    case AG_COMMIT:
        return phase_commit(e);
    case AG_ROLLBACK:
        return phase_rollback(e);
    case AG_REPORT:
        return phase_report(e);
    case AG_WAITING:
        return phase_waiting(e);
    case AG_PHASE__MAX:
        break;
    }
}

static void run(struct ag_engine *e)
{
    if (e->in_run) {
        e->rerun = true;
        return;
    }
    e->in_run = true;
    for (int i = 0; i < 64 && e->exit_code == 0; i++) {
        e->rerun = false;
        enum ag_phase before = e->st.phase;
        run_phase(e);
        if (!e->rerun && e->st.phase == before)
            break;
    }
    e->in_run = false;
    /* idle or waiting: the next check-in */
    if ((e->st.phase == AG_IDLE || e->st.phase == AG_WAITING) && !e->timer &&
        !e->checkin_in_flight && e->env.loop && e->last_checkin) {
        uint64_t ms = e->poll_interval_s ? (uint64_t)e->poll_interval_s * 1000
                                         : e->cfg->poll_interval_ms;
        schedule(e, jittered(ms, (uint64_t)e->poll_jitter_s * 1000));
    }
}

/* ---- public ------------------------------------------------------------------------------------- */

enum ot_err ag_engine_new(const struct ag_engine_env *env, struct ag_engine **ret,
                          struct ot_diag *d)
{
    struct ag_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    e->env = *env;
    e->cfg = env->cfg;
    e->dl_fd = -1;
    if (asprintf(&e->work_dir, "%s/%s", e->cfg->state_dir, WORK_DIR) < 0 ||
        asprintf(&e->download_path, "%s/%s", e->cfg->state_dir, DOWNLOAD_FILE) < 0 ||
        asprintf(&e->cache_dir, "%s/%s", e->cfg->state_dir, CACHE_DIR) < 0) {
        ag_engine_free(e);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    enum ot_err err = ag_state_load(e->cfg->state_dir, &e->st, d);
    if (err == OT_ERR_FORMAT) {
        /* Never stuck on a damaged file: keep it for inspection and go on from idle; the boot
         * environment, not this file, decides what the device runs. */
        char from[4096], to[4096];
        snprintf(from, sizeof(from), "%s/state.json", e->cfg->state_dir);
        snprintf(to, sizeof(to), "%s/state.json.damaged", e->cfg->state_dir);
        ot_log(OT_LOG_ERR, "%s: starting from idle (kept as %s)", d->msg, to);
        if (rename(from, to) < 0)
            ot_log(OT_LOG_ERR, "cannot move %s away: %s", from, strerror(errno));
        ag_state_release(&e->st);
        ot_diag_clear(d);
        err = OT_OK;
    }
    if (!err)
        err = ag_installed_load(e->cfg->state_dir, &e->installed, d);
    if (err) {
        ag_engine_free(e);
        return err;
    }
    if (!provides_rebuild(e)) {
        ag_engine_free(e);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    *ret = e;
    return OT_OK;
}

void ag_engine_free(struct ag_engine *e)
{
    if (!e)
        return;
    if (e->dl)
        ag_net_download_cancel(e->dl);
    pl_free(e->stream, true);
    if (e->dl_fd >= 0)
        close(e->dl_fd);
    if (e->timer && e->env.loop)
        ag_loop_timer_cancel(e->env.loop, e->timer);
    ag_state_release(&e->st);
    ag_installed_release(&e->installed);
    provides_free(e);
    free(e->work_dir);
    free(e->download_path);
    free(e->cache_dir);
    free(e);
}

const struct ag_state *ag_engine_state(const struct ag_engine *e) { return &e->st; }

void ag_engine_start(struct ag_engine *e)
{
    ot_log(OT_LOG_INFO, "starting in phase %s", ag_phase_name(e->st.phase));
    /* a streamed install cut short starts over: nothing of it was activated */
    if (e->st.phase == AG_DOWNLOAD && streams(e)) {
        struct ot_diag d = {0};
        e->st.attempts++;
        if (ag_state_save(e->cfg->state_dir, &e->st, &d) != OT_OK)
            ot_log(OT_LOG_WARNING, "cannot save the state: %s", d.msg);
        if (e->st.attempts > MAX_ATTEMPTS)
            finish(e, "failure", "the streamed installation was interrupted %d times",
                   MAX_ATTEMPTS);
    }
    run(e);
}

void ag_engine_check_now(struct ag_engine *e)
{
    if (e->timer) {
        ag_loop_timer_cancel(e->env.loop, e->timer);
        e->timer = 0;
    }
    run(e);
}

void ag_engine_pause(struct ag_engine *e, bool paused)
{
    e->paused = paused;
    if (e->dl)
        ag_net_download_pause(e->dl, paused);
    if (!paused)
        run(e);
}

json_t *ag_engine_status(struct ag_engine *e)
{
    bool waiting = e->st.phase == AG_WAITING;
    return json_pack("{s:s, s:I, s:s, s:b, s:I, s:s, s:s?, s:I, s:I, s:s, s:s, s:b, s:s?}",
                     "phase", ag_phase_name(e->st.phase), "deployment_id",
                     (json_int_t)e->st.deployment_id, "result", e->st.result, "paused",
                     e->paused, "downloaded", (json_int_t)e->dl_offset, "target_slot",
                     e->st.target_slot, "message", e->st.message, "artifact_size",
                     (json_int_t)e->st.artifact_size, "last_checkin",
                     (json_int_t)e->last_checkin, "last_error", e->last_error, "type",
                     ot_wire_deploy_type_name(e->st.type), "install_held", e->st.install_held,
                     "waiting", waiting ? e->st.wait_reason : NULL);
}

/* Runs the synchronous phases until one needs the network, a reboot, or is done. */
static enum ot_err drive(struct ag_engine *e, bool *ret_reboot, struct ot_diag *d)
{
    for (int i = 0; i < 32; i++) {
        e->rerun = false;
        enum ag_phase p = e->st.phase;
        switch (p) {
        case AG_IDLE:
            return OT_OK;
        case AG_VERIFY_AFTER_BOOT:
            phase_verify_after_boot(e, false);
            break;
        case AG_REBOOT_PENDING: {
            phase_reboot_pending(e);
            if (e->st.phase == AG_REBOOT_PENDING) {
                *ret_reboot = true;
                return OT_OK;
            }
            break;
        }
        case AG_ROLLBACK:
            phase_rollback(e);
            if (e->exit_code == AG_EXIT_REBOOT) {
                e->exit_code = 0;
                *ret_reboot = true;
                return OT_OK;
            }
            break;
        case AG_REPORT: {
            bool ok = strcmp(e->st.result, "success") == 0;
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", e->st.message ? e->st.message : e->st.result);
            if (e->st.deployment_id) /* a server's deployment: the daemon reports it */
                return OT_OK;
            phase_report(e);
            if (!ok)
                return ot_diag_set(d, OT_ERR_INVALID, "%s", msg);
            break;
        }
        default:
            run_phase(e);
        }
        if (e->st.phase == p && !e->rerun)
            return e->last_error[0] ? ot_diag_set(d, OT_ERR_IO, "%s", e->last_error) : OT_OK;
    }
    return OT_OK;
}

enum ot_err ag_engine_install_file(struct ag_engine *e, const char *path, bool *ret_reboot,
                                   struct ot_diag *d)
{
    *ret_reboot = false;
    if (e->st.phase != AG_IDLE)
        return ot_diag_set(d, OT_ERR_EXISTS, "an update is in progress (phase %s): commit or "
                           "roll it back first", ag_phase_name(e->st.phase));
    /* Read the manifest first (verified), to know the slots and handlers before writing. */
    struct ot_reader_opts opts = {.trust = e->env.trust, .mode = OT_READ_STORED};
    struct ot_artifact_reader *r = NULL;
    enum ot_err err = ot_artifact_reader_new(&opts, &(struct ot_reader_callbacks){0}, NULL, &r);
    int fd = err ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (!err && fd < 0)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    uint8_t buf[64 * 1024];
    while (!err && !ot_artifact_reader_manifest(r)) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            err = ot_diag_set(d, OT_ERR_TRUNCATED, "%s: no manifest", path);
            break;
        }
        err = ot_artifact_reader_feed(r, buf, (size_t)n, d);
    }
    if (fd >= 0)
        close(fd);
    struct ot_buf mtext;
    ot_buf_init(&mtext, OT_MANIFEST_MAX + 1);
    if (!err)
        err = ot_manifest_format(ot_artifact_reader_manifest(r), &mtext, d);
    ot_artifact_reader_free(r);
    struct ot_manifest m = {0};
    if (!err)
        err = check_announced(e, ot_buf_str(&mtext), NULL, &m, d);
    if (err) {
        ot_buf_release(&mtext);
        return err;
    }
    ag_state_release(&e->st);
    e->st.needs_reboot = needs_reboot(&m);
    ot_manifest_release(&m);
    if (e->st.needs_reboot) {
        struct ag_boot_state bs;
        err = ag_boot_read(e->env.boot, &bs, d);
        if (err) {
            ot_buf_release(&mtext);
            return err;
        }
        snprintf(e->st.previous_slot, sizeof(e->st.previous_slot), "%s", bs.booted);
        snprintf(e->st.target_slot, sizeof(e->st.target_slot), "%s", ag_boot_other(bs.booted));
    }
    char abs[4096];
    if (!realpath(path, abs))
        snprintf(abs, sizeof(abs), "%s", path);
    err = ag_state_set(&e->st.url, abs);
    /* Saved with the state, so that a power cut during the install still knows what to roll
     * back. The reader accepts canonical manifests only, so these are the file's exact bytes
     * (pl_manifest compares them). */
    if (!err)
        err = ag_state_set(&e->st.manifest, ot_buf_str(&mtext));
    ot_buf_release(&mtext);
    if (err)
        return ot_diag_set(d, err, "out of memory");
    cleanup_files(e);
    if (!go(e, AG_INSTALL))
        return ot_diag_set(d, OT_ERR_IO, "%s", e->last_error);
    phase_install(e);
    if (e->st.phase == AG_REPORT || e->st.phase == AG_ROLLBACK) {
        err = ot_diag_set(d, OT_ERR_INVALID, "%s", e->st.message ? e->st.message : "failed");
        bool reboot = false;
        struct ot_diag ignored = {0};
        (void)drive(e, &reboot, &ignored);
        return err;
    }
    return drive(e, ret_reboot, d);
}

enum ot_err ag_engine_commit(struct ag_engine *e, struct ot_diag *d)
{
    if (e->st.phase != AG_VERIFY_AFTER_BOOT && e->st.phase != AG_REBOOT_PENDING &&
        e->st.phase != AG_COMMIT)
        return ot_diag_set(d, OT_ERR_INVALID, "nothing to commit (phase %s)",
                           ag_phase_name(e->st.phase));
    bool reboot = false;
    if (e->st.phase == AG_REBOOT_PENDING) {
        phase_reboot_pending(e);
        if (e->st.phase == AG_REBOOT_PENDING)
            return ot_diag_set(d, OT_ERR_INVALID, "reboot into slot %s first",
                               e->st.target_slot);
    }
    return drive(e, &reboot, d);
}

enum ot_err ag_engine_rollback(struct ag_engine *e, bool *ret_reboot, struct ot_diag *d)
{
    *ret_reboot = false;
    if (e->st.phase == AG_IDLE)
        return ot_diag_set(d, OT_ERR_INVALID, "nothing to roll back");
    snprintf(e->st.result, sizeof(e->st.result), "rolled_back");
    if (ag_state_set(&e->st.message, "rolled back by hand") != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!go(e, AG_ROLLBACK))
        return ot_diag_set(d, OT_ERR_IO, "%s", e->last_error);
    return drive(e, ret_reboot, d);
}
