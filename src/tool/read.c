/* Reading artifacts from files: the feed loop shared by verify, unpack and inspect, the
 * manifest-only peek, and the signature report they print. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "tool.h"

#define PEEK_CHUNK (64 * 1024)

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) { interrupted = sig; }

void tool_catch_signals(void)
{
    /* No SA_RESTART: a blocked read returns EINTR and the loop notices at once. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

bool tool_interrupted(void) { return interrupted != 0; }

enum ot_err tool_open_artifact(const char *path, int *ret_fd, uint64_t *ret_size,
                               struct ot_diag *d)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    if (S_ISDIR(st.st_mode))
        return ot_diag_errno(d, OT_ERR_IO, EISDIR, "%s", path);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    *ret_size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    *ret_fd = TAKE_FD(fd);
    return OT_OK;
}

/* One read(2), retried on EINTR unless a signal asked us to stop. */
static enum ot_err read_some(int fd, uint8_t *buf, size_t n, size_t *ret_n, struct ot_diag *d)
{
    for (;;) {
        if (tool_interrupted())
            return ot_diag_set(d, OT_ERR_IO, "interrupted by signal %d", (int)interrupted);
        ssize_t r = read(fd, buf, n);
        if (r >= 0) {
            *ret_n = (size_t)r;
            return OT_OK;
        }
        if (errno != EINTR)
            return ot_diag_errno(d, OT_ERR_IO, errno, "read artifact");
    }
}

/* Not ot_artifact_reader_feed_fd: inspect stops as soon as the manifest is in, and unpack must be
 * able to stop on a signal and remove its temporary directory. */
enum ot_err tool_feed(struct ot_artifact_reader *r, int fd, size_t chunk, uint64_t total,
                      const bool *stop, struct tool_progress *p, struct ot_diag *d)
{
    _cleanup_free_ uint8_t *buf = malloc(chunk);
    if (!buf)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    uint64_t done = 0;
    for (;;) {
        if (stop && *stop)
            return OT_OK;
        size_t n = 0;
        enum ot_err err = read_some(fd, buf, chunk, &n, d);
        if (err)
            return err;
        if (n == 0)
            break;
        err = ot_artifact_reader_feed(r, buf, n, d);
        if (err)
            return err;
        done += n;
        tool_progress_cb(p, done, total);
    }
    return ot_artifact_reader_finish(r, d);
}

static enum ot_err peek_manifest_cb(void *userdata, const struct ot_manifest *m,
                                    const uint8_t *raw, size_t rawlen, const struct ot_sigset *sigs,
                                    const struct ot_sig_report *report, struct ot_diag *d)
{
    bool *seen = userdata;
    *seen = true;
    return OT_OK;
}

enum ot_err tool_peek_manifest(int fd, struct ot_artifact_reader **ret_reader, struct ot_diag *d)
{
    /* No trust set and stored mode: nothing is verified and no key is needed; the manifest
     * callback fires once manifest.json and manifest.sig are parsed, before any payload byte. */
    static const struct ot_reader_opts opts = {.mode = OT_READ_STORED};
    static const struct ot_reader_callbacks cb = {.manifest = peek_manifest_cb};
    bool seen = false;
    _cleanup_(ot_artifact_reader_freep) struct ot_artifact_reader *r = NULL;
    enum ot_err err = ot_artifact_reader_new(&opts, &cb, &seen, &r);
    if (err)
        return ot_diag_set(d, err, "%s", ot_strerror(err));
    err = tool_feed(r, fd, PEEK_CHUNK, 0, &seen, NULL, d);
    if (err)
        return err;
    if (!seen) /* cannot happen: the reader only finishes after the manifest */
        return ot_diag_set(d, OT_ERR_INTERNAL, "artifact ended without a manifest");
    *ret_reader = TAKE_PTR(r);
    return OT_OK;
}

static const char *status_text(enum ot_sig_status s)
{
    switch (s) {
    case OT_SIG_VALID:
        return "valid";
    case OT_SIG_INVALID:
        return "INVALID (the signature does not match the manifest)";
    case OT_SIG_UNKNOWN:
        return "unknown key (not in the trust file, does not count)";
    case OT_SIG_DUPLICATE:
        return "duplicate (this key already counted)";
    }
    return "?";
}

void tool_print_sig_report(const struct tool_ctx *ctx, const struct ot_sig_report *rep)
{
    for (size_t i = 0; i < rep->n; i++) {
        const char *name = rep->entries[i].name;
        tool_out(ctx, "signature: %s%s%s: %s\n", name, name[0] ? " " : "", rep->entries[i].key_id,
                 status_text(rep->entries[i].status));
    }
    tool_out(ctx, "signatures: %u of %u required signatures valid\n", rep->valid, rep->threshold);
}

json_t *tool_sig_report_json(const struct ot_sig_report *rep)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < rep->n; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "key_id", rep->entries[i].key_id,
                                              "name", rep->entries[i].name, "status",
                                              tool_sig_status_name(rep->entries[i].status)));
    return json_pack("{s:o*, s:I, s:I}", "signatures", list, "valid", (json_int_t)rep->valid,
                     "threshold", (json_int_t)rep->threshold);
}
