/* Writing artifacts: pack, and adding a signature to an existing one.
 *
 * Pack reads every input exactly once. Each payload streams through
 *     hash(installed) -> [zstd] -> [encrypt] -> hash(stored) -> unnamed temp file
 * next to the output; once all hashes are known the manifest is formatted and signed, and the tar
 * stream (manifest.json, manifest.sig, payloads) is written to a temp file that is renamed over
 * the output only when complete. The temp payload files are O_TMPFILE where the file system allows,
 * so a crash leaves nothing behind. */
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>

#include "otter/artifact.h"
#include "otter/crypt.h"
#include "otter/file.h"
#include "otter/path.h"
#include "otter/tar.h"

struct pack_ctx {
    const struct ot_pack_opts *opts;
    uint64_t total, done;
    uint8_t *io;          /* OT_ARTIFACT_IO_CHUNK bytes */
    uint8_t content_key[OT_CONTENT_KEY_LEN];
    int *stored_fds;      /* one temp file per payload */
    size_t nfds;
};

/* An unnamed temp file in dir (O_TMPFILE), or a named one unlinked at once where unsupported. */
static enum ot_err open_scratch(const char *dir, int *ret, struct ot_diag *d)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        *ret = fd;
        return OT_OK;
    }
    _cleanup_free_ char *tmpl = NULL;
    if (ot_path_join(dir, ".otter-pack-XXXXXX", &tmpl) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "create temporary file in %s", dir);
    unlink(tmpl);
    *ret = fd;
    return OT_OK;
}

static void chain_free(struct ot_sink **chain, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ot_sink_free(chain[i]);
}

/* Builds the encode chain for p into chain[] (head first, count in *ret_n):
 *     hash(installed) -> [zstd] -> [encrypt] -> hash(stored) -> fd
 * so chain[0] is the installed hash and chain[n-2] the stored hash. Built back to front. */
static enum ot_err build_encode(struct pack_ctx *c, const struct ot_payload *p, int fd,
                                struct ot_sink **chain, size_t *ret_n)
{
    struct ot_sink *tmp[5];
    size_t n = 0;
    enum ot_err err = ot_sink_fd_new(fd, &tmp[n]);
    n += err == OT_OK;
    if (!err) {
        err = ot_sink_hash_new(tmp[n - 1], INT64_MAX, "stored", &tmp[n]);
        n += err == OT_OK;
    }
    if (!err && p->encrypted) {
        err = ot_sink_encrypt_new(c->content_key, p->name, tmp[n - 1], &tmp[n]);
        n += err == OT_OK;
    }
    if (!err && p->compression == OT_COMPRESSION_ZSTD) {
        int level = c->opts->zstd_level ? c->opts->zstd_level : 3;
        err = ot_sink_zstd_compress_new(level, tmp[n - 1], &tmp[n]);
        n += err == OT_OK;
    }
    if (!err) {
        err = ot_sink_hash_new(tmp[n - 1], INT64_MAX, "input", &tmp[n]);
        n += err == OT_OK;
    }
    for (size_t i = 0; i < n; i++)
        chain[i] = tmp[n - 1 - i];
    *ret_n = n;
    return err;
}

static enum ot_err pump_file(struct pack_ctx *c, int in, struct ot_sink *head, const char *path,
                             struct ot_diag *d)
{
    for (;;) {
        ssize_t n = read(in, c->io, OT_ARTIFACT_IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ot_diag_errno(d, OT_ERR_IO, errno, "read %s", path);
        if (n == 0)
            return OT_OK;
        enum ot_err err = ot_sink_write(head, c->io, (size_t)n, d);
        if (err)
            return err;
        c->done += (uint64_t)n;
        if (c->opts->progress)
            c->opts->progress(c->opts->progress_userdata, c->done, c->total);
    }
}

static enum ot_err encode_payload(struct pack_ctx *c, struct ot_payload *p, const char *path,
                                  int out_fd, struct ot_diag *d)
{
    _cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "payload '%s': open %s", p->name, path);
    (void)posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
    struct ot_sink *chain[5];
    size_t n = 0;
    enum ot_err err = build_encode(c, p, out_fd, chain, &n);
    if (!err)
        err = pump_file(c, in, chain[0], path, d);
    if (!err)
        err = ot_sink_finish(chain[0], d);
    if (!err) {
        ot_sink_hash_result(chain[0], p->sha256, &p->size);
        ot_sink_hash_result(chain[n - 2], p->stored_sha256, &p->stored_size);
    }
    chain_free(chain, n);
    if (err)
        return ot_diag_prefix(d, err, "payload '%s'", p->name);
    return OT_OK;
}

static enum ot_err setup_encryption(struct pack_ctx *c, struct ot_manifest *m, struct ot_diag *d)
{
    const struct ot_pack_opts *o = c->opts;
    if (o->nrecipients == 0)
        return OT_OK;
    if (o->nrecipients > OT_MANIFEST_RECIPIENTS_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "more than %d encryption recipients",
                           OT_MANIFEST_RECIPIENTS_MAX);
    enum ot_err err = ot_content_key_generate(c->content_key);
    if (err)
        return ot_diag_set(d, err, "cannot generate a content key");
    m->recipients = calloc(o->nrecipients, sizeof(*m->recipients));
    if (!m->recipients)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    m->nrecipients = o->nrecipients;
    for (size_t i = 0; i < o->nrecipients; i++) {
        const struct ot_key *k = &o->recipients[i];
        if (k->type != OT_KEY_BOX_PUBLIC && k->type != OT_KEY_BOX_SECRET)
            return ot_diag_set(d, OT_ERR_INVALID, "key %s is not a device (encryption) key", k->id);
        memcpy(m->recipients[i].key_id, k->id, OT_KEY_ID_STRLEN);
        err = ot_content_key_seal(c->content_key, k, m->recipients[i].sealed_key);
        if (err)
            return ot_diag_set(d, err, "cannot seal the content key to %s", k->id);
    }
    for (size_t i = 0; i < m->npayloads; i++)
        m->payloads[i].encrypted = true;
    return OT_OK;
}

/* Streams fd (from offset 0, size bytes) into the current tar entry. */
static enum ot_err copy_into_tar(struct pack_ctx *c, struct ot_tar_writer *w, int fd,
                                 uint64_t size, struct ot_diag *d)
{
    if (lseek(fd, 0, SEEK_SET) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "seek temporary file");
    while (size > 0) {
        size_t want = size < OT_ARTIFACT_IO_CHUNK ? (size_t)size : OT_ARTIFACT_IO_CHUNK, got;
        enum ot_err err = ot_read_full(fd, c->io, want, &got, d);
        if (err)
            return err;
        if (got != want)
            return ot_diag_set(d, OT_ERR_IO, "temporary payload file shrank");
        err = ot_tar_writer_write(w, c->io, got, d);
        if (err)
            return err;
        size -= got;
    }
    return OT_OK;
}

static enum ot_err write_small_entry(struct ot_tar_writer *w, const char *name,
                                     const struct ot_buf *b, struct ot_diag *d)
{
    enum ot_err err = ot_tar_writer_begin_entry(w, name, b->len, d);
    if (!err)
        err = ot_tar_writer_write(w, b->data, b->len, d);
    if (!err)
        err = ot_tar_writer_end_entry(w, d);
    return err;
}

static enum ot_err sign_all(const struct ot_pack_opts *o, const struct ot_buf *manifest,
                            struct ot_buf *sigfile, struct ot_diag *d)
{
    struct ot_sigset sigs = {0};
    for (size_t i = 0; i < o->nsigners; i++) {
        enum ot_err err = ot_sigset_add(&sigs, &o->signers[i], manifest->data, manifest->len, d);
        if (err)
            return err;
    }
    /* An unsigned artifact still carries a (empty) manifest.sig, so the layout never changes;
     * ot_sigset_format of an empty set gives {"otter_signatures":1,"signatures":[]}. */
    enum ot_err err = ot_sigset_format(&sigs, sigfile);
    return err ? ot_diag_set(d, err, "cannot format signatures") : OT_OK;
}

static enum ot_err write_artifact(struct pack_ctx *c, const struct ot_manifest *m,
                                  const struct ot_buf *mbuf, const struct ot_buf *sbuf,
                                  const char *out_path, struct ot_diag *d)
{
    struct ot_atomic_file out;
    enum ot_err err = ot_atomic_file_open(&out, out_path, 0644, d);
    if (err)
        return err;
    _cleanup_(ot_tar_writer_freep) struct ot_tar_writer *w = NULL;
    err = ot_tar_writer_new(out.fd, c->opts->mtime, &w, d);
    if (!err)
        err = write_small_entry(w, OT_ARTIFACT_MANIFEST_NAME, mbuf, d);
    if (!err)
        err = write_small_entry(w, OT_ARTIFACT_SIG_NAME, sbuf, d);
    for (size_t i = 0; !err && i < m->npayloads; i++) {
        char name[sizeof(OT_ARTIFACT_PAYLOAD_PREFIX) + OT_NAME_MAX];
        snprintf(name, sizeof(name), "%s%s", OT_ARTIFACT_PAYLOAD_PREFIX, m->payloads[i].name);
        err = ot_tar_writer_begin_entry(w, name, m->payloads[i].stored_size, d);
        if (!err)
            err = copy_into_tar(c, w, c->stored_fds[i], m->payloads[i].stored_size, d);
        if (!err)
            err = ot_tar_writer_end_entry(w, d);
    }
    if (!err)
        err = ot_tar_writer_close(w, d);
    if (err) {
        ot_atomic_file_abort(&out);
        return ot_diag_prefix(d, err, "write %s", out_path);
    }
    return ot_atomic_file_commit(&out, d);
}

static enum ot_err pack_inputs(struct pack_ctx *c, struct ot_manifest *m,
                               const char *const *inputs, const char *dir, struct ot_diag *d)
{
    for (size_t i = 0; i < m->npayloads; i++) {
        struct stat st;
        if (stat(inputs[i], &st) < 0)
            return ot_diag_errno(d, OT_ERR_IO, errno, "payload '%s': %s", m->payloads[i].name,
                                 inputs[i]);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
            return ot_diag_set(d, OT_ERR_INVALID, "payload '%s': %s is not a regular file",
                               m->payloads[i].name, inputs[i]);
        c->total += (uint64_t)st.st_size;
    }
    for (size_t i = 0; i < m->npayloads; i++) {
        enum ot_err err = open_scratch(dir, &c->stored_fds[i], d);
        if (err)
            return err;
        c->nfds++;
        err = encode_payload(c, &m->payloads[i], inputs[i], c->stored_fds[i], d);
        if (err)
            return err;
    }
    return OT_OK;
}

enum ot_err ot_artifact_pack(struct ot_manifest *m, const char *const *inputs,
                             const struct ot_pack_opts *opts, const char *out_path,
                             struct ot_diag *d)
{
    struct pack_ctx c = {.opts = opts};
    _cleanup_free_ char *dir = NULL;
    struct ot_buf mbuf, sbuf;
    ot_buf_init(&mbuf, OT_MANIFEST_MAX);
    ot_buf_init(&sbuf, OT_SIG_FILE_MAX);
    if (m->npayloads == 0 || m->npayloads > OT_MANIFEST_PAYLOADS_MAX)
        return ot_diag_set(d, OT_ERR_INVALID, "an artifact needs 1 to %d payloads",
                           OT_MANIFEST_PAYLOADS_MAX);
    c.io = malloc(OT_ARTIFACT_IO_CHUNK);
    c.stored_fds = calloc(m->npayloads, sizeof(int));
    enum ot_err err = (!c.io || !c.stored_fds || ot_path_dirname(out_path, &dir) != OT_OK)
                          ? ot_diag_set(d, OT_ERR_NOMEM, "out of memory")
                          : OT_OK;
    m->format = OT_MANIFEST_FORMAT;
    if (!err)
        err = setup_encryption(&c, m, d);
    /* Cheap checks of the caller's metadata before reading any input. */
    for (size_t i = 0; !err && i < m->npayloads; i++)
        if (!m->payloads[i].name || !ot_name_is_safe(m->payloads[i].name,
                                                     strlen(m->payloads[i].name)))
            err = ot_diag_set(d, OT_ERR_INVALID, "payload name '%s' is not a safe file name",
                              m->payloads[i].name ? m->payloads[i].name : "");
    if (!err)
        err = pack_inputs(&c, m, inputs, dir, d);
    if (!err)
        err = ot_manifest_format(m, &mbuf, d);
    if (!err)
        err = sign_all(opts, &mbuf, &sbuf, d);
    if (!err)
        err = write_artifact(&c, m, &mbuf, &sbuf, out_path, d);
    for (size_t i = 0; i < c.nfds; i++)
        close(c.stored_fds[i]);
    free(c.stored_fds);
    free(c.io);
    sodium_memzero(c.content_key, sizeof(c.content_key));
    ot_buf_release(&mbuf);
    ot_buf_release(&sbuf);
    return err;
}

/* ---- adding a signature ---- */

struct resign_ctx {
    const struct ot_key *sk;
    int64_t mtime;
    const char *out_path;
    struct ot_atomic_file out;
    bool out_open;
    struct ot_tar_writer *w;
    struct ot_sink sink; /* forwards stored payload bytes into the open tar entry */
};

static enum ot_err tar_sink_write(struct ot_sink *s, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct resign_ctx *c = (struct resign_ctx *)((char *)s - offsetof(struct resign_ctx, sink));
    return ot_tar_writer_write(c->w, p, n, d);
}

static enum ot_err tar_sink_finish(struct ot_sink *s, struct ot_diag *d)
{
    (void)s;
    (void)d;
    return OT_OK;
}

static void tar_sink_free(struct ot_sink *s) { (void)s; }

static enum ot_err resign_manifest(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                                   size_t rawlen, const struct ot_sigset *sigs,
                                   const struct ot_sig_report *report, struct ot_diag *d)
{
    struct resign_ctx *c = userdata;
    struct ot_sigset next = *sigs;
    (void)m;
    (void)report;
    enum ot_err err = ot_sigset_add(&next, c->sk, raw, rawlen, d);
    if (err)
        return err;
    struct ot_buf mbuf = {.data = (uint8_t *)raw, .len = rawlen, .max = rawlen};
    struct ot_buf sbuf;
    ot_buf_init(&sbuf, OT_SIG_FILE_MAX);
    err = ot_sigset_format(&next, &sbuf);
    if (err) {
        ot_buf_release(&sbuf);
        return ot_diag_set(d, err, "cannot format signatures");
    }
    err = ot_atomic_file_open(&c->out, c->out_path, 0644, d);
    c->out_open = !err;
    if (!err)
        err = ot_tar_writer_new(c->out.fd, c->mtime, &c->w, d);
    if (!err)
        err = write_small_entry(c->w, OT_ARTIFACT_MANIFEST_NAME, &mbuf, d);
    if (!err)
        err = write_small_entry(c->w, OT_ARTIFACT_SIG_NAME, &sbuf, d);
    ot_buf_release(&sbuf);
    return err;
}

static enum ot_err resign_payload_begin(void *userdata, const struct ot_payload *p, size_t index,
                                        struct ot_sink **ret_sink, struct ot_diag *d)
{
    struct resign_ctx *c = userdata;
    char name[sizeof(OT_ARTIFACT_PAYLOAD_PREFIX) + OT_NAME_MAX];
    (void)index;
    snprintf(name, sizeof(name), "%s%s", OT_ARTIFACT_PAYLOAD_PREFIX, p->name);
    *ret_sink = &c->sink;
    return ot_tar_writer_begin_entry(c->w, name, p->stored_size, d);
}

static enum ot_err resign_payload_end(void *userdata, const struct ot_payload *p, size_t index,
                                      struct ot_diag *d)
{
    struct resign_ctx *c = userdata;
    (void)p;
    (void)index;
    return ot_tar_writer_end_entry(c->w, d);
}

enum ot_err ot_artifact_add_signature(int in_fd, uint64_t in_size, const struct ot_key *sk,
                                      int64_t mtime, const char *out_path, ot_progress_fn progress,
                                      void *userdata, struct ot_diag *d)
{
    if (!ot_key_is_signing(sk) || !ot_key_is_secret(sk))
        return ot_diag_set(d, OT_ERR_INVALID, "key %s is not a secret signing key", sk->id);
    struct resign_ctx c = {.sk = sk, .mtime = mtime, .out_path = out_path};
    c.sink = (struct ot_sink){tar_sink_write, tar_sink_finish, tar_sink_free};
    static const struct ot_reader_callbacks cb = {resign_manifest, resign_payload_begin,
                                                  resign_payload_end};
    /* Stored mode: no keys needed, and the stored hashes prove the payloads are the ones the
     * manifest names before the new signature is committed. */
    struct ot_reader_opts opts = {.mode = OT_READ_STORED};
    _cleanup_(ot_artifact_reader_freep) struct ot_artifact_reader *r = NULL;
    enum ot_err err = ot_artifact_reader_new(&opts, &cb, &c, &r);
    if (err)
        return ot_diag_set(d, err, "out of memory");
    err = ot_artifact_reader_feed_fd(r, in_fd, in_size, progress, userdata, d);
    if (!err)
        err = ot_tar_writer_close(c.w, d);
    ot_tar_writer_free(c.w);
    if (err) {
        if (c.out_open)
            ot_atomic_file_abort(&c.out);
        return err;
    }
    return ot_atomic_file_commit(&c.out, d);
}
