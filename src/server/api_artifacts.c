/* Management API: artifacts (streaming upload into the blob store, list, show, download, delete)
 * and the release keys uploads are checked against.
 *
 * An upload is never buffered: each chunk of the request body is written to an unnamed temp file
 * in the blob store, hashed, and fed to the artifact reader in stored mode, which checks the
 * manifest's signatures against the server's trust set (PUT /api/v1/trust) before it parses the
 * manifest, then every payload's stored bytes against the signed hashes. A bad artifact is refused
 * as soon as the reader knows (the rest of the body is drained), and nothing of it is kept. A good
 * one is made durable under its SHA-256 first, and only then recorded in the store: a row never
 * names a missing file, and a killed server leaves no half upload visible. */
#include "app.h"
#include "blob.h"
#include "fleet.h"
#include "otter/artifact.h"
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/trust.h"

#include <openssl/evp.h>

#define TRUST_META "release_trust"
#define ARTIFACT_PAGE_MAX 1000

struct upload {
    struct srv_app *app;
    struct srv_blob_writer *blob;
    struct ot_artifact_reader *reader;
    struct ot_trust trust;
    char *manifest;                    /* exact manifest.json text, once read */
    bool failed;
    /* a foreign artifact (?format=swu|raucb): stored opaque, hashed as DDI clients need */
    const char *format;                /* the query argument's value, or NULL */
    EVP_MD_CTX *sha1, *md5;
};

static void upload_free(void *p)
{
    struct upload *u = p;
    if (!u)
        return;
    srv_blob_writer_free(u->blob);
    ot_artifact_reader_free(u->reader);
    free(u->manifest);
    EVP_MD_CTX_free(u->sha1);
    EVP_MD_CTX_free(u->md5);
    free(u);
}

static enum ot_err on_manifest(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                               size_t rawlen, const struct ot_sigset *sigs,
                               const struct ot_sig_report *report, struct ot_diag *d)
{
    (void)m, (void)sigs, (void)report;
    struct upload *u = userdata;
    u->manifest = strndup((const char *)raw, rawlen);
    return u->manifest ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

/* The trust set uploads are checked against; OT_ERR_NOENT when none was configured. */
static enum ot_err load_trust(struct srv_app *app, struct ot_trust *ret, struct ot_diag *d)
{
    _cleanup_free_ char *text = NULL;
    enum ot_err err = srv_store_meta_get(app->store, TRUST_META, &text, d);
    if (err)
        return err;
    return ot_trust_parse((const uint8_t *)text, strlen(text), ret, d);
}

static void reply_trust_missing(struct srv_request *req)
{
    srv_reply_status(req, 422, "untrusted",
                     "this server has no release keys yet: set them with PUT /api/v1/trust "
                     "(a trust file, see 'otter trust') before uploading artifacts");
}

/* ---- foreign artifacts ---------------------------------------------------------------------- */

#define FOREIGN_TYPES_MAX 64

static bool foreign_word(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._+-", *s)))
            return false;
    return true;
}

/* ?format=swu|raucb&name=N&version=V&device_type=T (repeatable): checked before the body. */
static enum ot_err foreign_query(struct srv_request *req, struct ot_diag *d)
{
    const char *format = srv_req_query(req, "format");
    const char *types[FOREIGN_TYPES_MAX];
    size_t n = srv_req_query_all(req, "device_type", types, FOREIGN_TYPES_MAX);
    if (strcmp(format, "swu") != 0 && strcmp(format, "raucb") != 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "query 'format' must be swu or raucb");
    if (!foreign_word(srv_req_query(req, "name"), 128) ||
        !foreign_word(srv_req_query(req, "version"), 64))
        return ot_diag_set(d, OT_ERR_FORMAT, "a foreign artifact needs the queries 'name' (1..128) "
                           "and 'version' (1..64) of [A-Za-z0-9._+-]");
    if (n == 0 || n > FOREIGN_TYPES_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT, "a foreign artifact needs 1..%d 'device_type' queries",
                           FOREIGN_TYPES_MAX);
    for (size_t i = 0; i < n; i++)
        if (!foreign_word(types[i], SRV_DEVICE_TYPE_MAX - 1))
            return ot_diag_set(d, OT_ERR_FORMAT, "query 'device_type' must be 1..%d characters "
                               "of [A-Za-z0-9._+-]", SRV_DEVICE_TYPE_MAX - 1);
    return OT_OK;
}

/* No signature check here: otterd cannot verify SWUpdate's or RAUC's signatures; the device does
 * (docs/hawkbit.md). */
static struct upload *foreign_start(struct srv_app *app, struct srv_request *req,
                                    struct upload *u)
{
    struct ot_diag d = {0};
    enum ot_err err = foreign_query(req, &d);
    if (err) {
        srv_reply_error(req, err, "%s", d.msg);
        return NULL;
    }
    u->format = srv_req_query(req, "format");
    u->sha1 = EVP_MD_CTX_new();
    u->md5 = EVP_MD_CTX_new();
    if (!u->sha1 || !u->md5 || EVP_DigestInit_ex(u->sha1, EVP_sha1(), NULL) != 1 ||
        EVP_DigestInit_ex(u->md5, EVP_md5(), NULL) != 1) {
        srv_reply_error(req, OT_ERR_CRYPTO, "cannot start the upload: sha1/md5 unavailable");
        return NULL;
    }
    err = srv_blob_writer_new(app->data_dir, &u->blob, &d);
    if (err) {
        srv_reply_error(req, err, "cannot start the upload: %s", d.msg);
        return NULL;
    }
    return u;
}

static void digest_hex(EVP_MD_CTX *ctx, char *out)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(ctx, md, &n) != 1)
        n = 0;
    ot_hex_encode(md, n, out);
}

/* The synthetic manifest of a foreign artifact: what DDI needs and nothing else. */
static enum ot_err foreign_fill(struct srv_app *app, struct srv_request *req, struct upload *u,
                                struct srv_artifact *a)
{
    char sha1[41], md5[33], filename[256];
    const char *types[FOREIGN_TYPES_MAX];
    size_t n = srv_req_query_all(req, "device_type", types, FOREIGN_TYPES_MAX);
    digest_hex(u->sha1, sha1);
    digest_hex(u->md5, md5);
    a->name = strdup(srv_req_query(req, "name"));
    a->version = strdup(srv_req_query(req, "version"));
    snprintf(filename, sizeof(filename), "%s-%s.%s", a->name ? a->name : "",
             a->version ? a->version : "", u->format);
    json_t *m = json_pack("{s:s, s:s, s:s, s:s}", "foreign", u->format, "filename", filename,
                          "sha1", sha1, "md5", md5);
    json_t *t = json_array();
    for (size_t i = 0; t && i < n; i++)
        json_array_append_new(t, json_string(types[i]));
    u->manifest = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    a->device_types = t ? json_dumps(t, JSON_COMPACT) : NULL;
    json_decref(m);
    json_decref(t);
    a->size = srv_blob_writer_size(u->blob);
    a->created_at = app->now();
    return a->name && a->version && u->manifest && a->device_types ? OT_OK : OT_ERR_NOMEM;
}

static struct upload *upload_start(struct srv_app *app, struct srv_request *req)
{
    struct ot_diag d = {0};
    struct upload *u = calloc(1, sizeof(*u));
    if (!u) {
        srv_reply_error(req, OT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    u->app = app;
    srv_req_set_ctx(req, u, upload_free);
    const char *channel = srv_req_query(req, "channel");
    if (channel && !srv_store_name_valid(channel)) {
        srv_reply_error(req, OT_ERR_FORMAT,
                        "query 'channel' must be 1..63 characters of [A-Za-z0-9._-]");
        return NULL;
    }
    if (srv_req_query(req, "format"))
        return foreign_start(app, req, u);
    enum ot_err err = load_trust(app, &u->trust, &d);
    if (err == OT_ERR_NOENT) {
        reply_trust_missing(req);
        return NULL;
    }
    if (err) {
        srv_reply_error(req, err, "release keys: %s", d.msg);
        return NULL;
    }
    struct ot_reader_opts opts = {.trust = &u->trust, .mode = OT_READ_STORED};
    struct ot_reader_callbacks cb = {.manifest = on_manifest};
    err = ot_artifact_reader_new(&opts, &cb, u, &u->reader);
    if (!err)
        err = srv_blob_writer_new(app->data_dir, &u->blob, &d);
    if (err) {
        srv_reply_error(req, err, "cannot start the upload: %s", d.msg);
        return NULL;
    }
    return u;
}

/* Refusals of the artifact itself are the client's problem (4xx, with the reader's message). */
static void reply_artifact_error(struct srv_request *req, enum ot_err err, const struct ot_diag *d)
{
    srv_reply_error(req, err, "artifact refused: %s", d->msg[0] ? d->msg : ot_strerror(err));
}

bool srv_api_artifact_upload_body(void *app_, struct srv_request *req, const uint8_t *data,
                                  size_t n)
{
    struct srv_app *app = app_;
    struct upload *u = srv_req_ctx(req);
    struct ot_diag d = {0};
    if (!u && !(u = upload_start(app, req)))
        return false;
    if (srv_blob_writer_size(u->blob) + n > app->max_artifact_size) {
        srv_reply_error(req, OT_ERR_LIMIT, "the artifact is larger than max_artifact_size (%llu "
                        "bytes)", (unsigned long long)app->max_artifact_size);
        return false;
    }
    enum ot_err err = srv_blob_writer_write(u->blob, data, n, &d);
    if (err) {
        srv_reply_error(req, err, "%s", d.msg);
        return false;
    }
    if (u->format) {
        EVP_DigestUpdate(u->sha1, data, n);
        EVP_DigestUpdate(u->md5, data, n);
        return true;
    }
    err = ot_artifact_reader_feed(u->reader, data, n, &d);
    if (err) {
        reply_artifact_error(req, err, &d);
        return false;
    }
    return true;
}

static json_t *device_types_of(const struct ot_manifest *m)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < m->ndevice_types; i++)
        json_array_append_new(a, json_string(m->device_types[i]));
    return a;
}

json_t *srv_json_text(const char *text)
{
    json_t *v = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *artifact_json(const struct srv_artifact *a)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:o, s:I, s:s, s:s}", "id", (json_int_t)a->id,
                     "name", a->name, "version", a->version, "sha256", a->sha256, "size",
                     (json_int_t)a->size, "device_types", srv_json_text(a->device_types),
                     "created_at", (json_int_t)a->created_at, "uploaded_by", a->uploaded_by,
                     "channel", a->channel ? a->channel : "");
}

/* Records the verified upload: blob first, then the row. */
static enum ot_err upload_record(struct srv_app *app, struct srv_request *req, struct upload *u,
                                 struct srv_artifact *a, struct ot_diag *d)
{
    struct ot_buf sigs;
    ot_buf_init(&sigs, OT_SIG_FILE_MAX);
    enum ot_err err = OT_OK;
    if (u->format) {
        err = foreign_fill(app, req, u, a);
        a->signatures = (char *)"{}"; /* none by otter: the store wants a non-empty text */
    } else {
        const struct ot_manifest *m = ot_artifact_reader_manifest(u->reader);
        err = ot_sigset_format(ot_artifact_reader_sigset(u->reader), &sigs);
        json_t *types = device_types_of(m);
        a->device_types = types ? json_dumps(types, JSON_COMPACT) : NULL;
        json_decref(types);
        a->name = strdup(m->name);
        a->version = strdup(m->version);
        a->signatures = (char *)ot_buf_str(&sigs);
        a->size = srv_blob_writer_size(u->blob);
        a->created_at = app->now();
    }
    a->manifest = u->manifest;
    a->uploaded_by = (char *)srv_req_principal(req);
    a->channel = (char *)srv_req_query(req, "channel");
    srv_blob_writer_finish(u->blob, a->sha256);
    if (!err && (!a->device_types || !a->name || !a->version))
        err = OT_ERR_NOMEM;
    if (err) {
        err = ot_diag_set(d, err, "out of memory");
    } else {
        struct srv_artifact old = {0};
        err = srv_store_artifact_by_sha256(app->store, a->sha256, &old, d);
        if (!err) {
            err = ot_diag_set(d, OT_ERR_EXISTS, "this artifact was uploaded before, as artifact %lld"
                              " (%s %s)", (long long)old.id, old.name, old.version);
            srv_artifact_release(&old);
        } else if (err == OT_ERR_NOENT) {
            err = srv_blob_writer_commit(u->blob, d);
            if (!err)
                err = srv_store_artifact_create(app->store, a, d);
            /* a name clash: drop the blob unless a concurrent upload of the same bytes won */
            if (err == OT_ERR_EXISTS &&
                srv_store_artifact_by_sha256(app->store, a->sha256, &old, NULL) == OT_ERR_NOENT)
                if (srv_blob_remove(app->data_dir, a->sha256, NULL) != OT_OK)
                    ot_log(OT_LOG_WARNING, "could not remove the refused upload's blob");
            srv_artifact_release(&old);
        }
    }
    /* borrowed or owned elsewhere: not ours to free */
    a->manifest = NULL;
    a->signatures = NULL;
    a->uploaded_by = NULL;
    a->channel = NULL;
    ot_buf_release(&sigs);
    return err;
}

void srv_api_artifact_upload(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct upload *u = srv_req_ctx(req);
    struct ot_diag d = {0};
    if (!u && srv_req_query(req, "format"))
        return srv_reply_error(req, OT_ERR_FORMAT,
                               "the request body must be the file (it was empty)");
    if (!u) { /* no body at all */
        struct ot_trust t;
        if (load_trust(app, &t, &d) == OT_ERR_NOENT)
            return reply_trust_missing(req);
        return srv_reply_error(req, OT_ERR_FORMAT,
                               "the request body must be the artifact file (it was empty)");
    }
    enum ot_err err = u->format ? OT_OK : ot_artifact_reader_finish(u->reader, &d);
    if (err)
        return reply_artifact_error(req, err, &d);
    struct srv_artifact a = {0};
    err = upload_record(app, req, u, &a, &d);
    if (err) {
        srv_artifact_release(&a);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    char object[32];
    snprintf(object, sizeof(object), "artifact:%lld", (long long)a.id);
    srv_audit(app, req, "artifact.upload", object,
              json_pack("{s:s, s:s, s:s, s:I}", "name", a.name, "version", a.version, "sha256",
                        a.sha256, "size", (json_int_t)a.size));
    ot_log(OT_LOG_NOTICE, "artifact %lld uploaded: %s %s, %llu bytes", (long long)a.id, a.name,
           a.version, (unsigned long long)a.size);
    a.uploaded_by = strdup(srv_req_principal(req));
    a.channel = strdup(srv_req_query(req, "channel") ? srv_req_query(req, "channel") : "");
    json_t *out = a.uploaded_by && a.channel ? artifact_json(&a) : NULL;
    /* continuous deployment: the channel's templates deploy it */
    if (out && a.channel[0])
        json_object_set_new(out, "deployments", srv_templates_fire(app, &a));
    srv_artifact_release(&a);
    srv_reply_json(req, 201, out);
}

void srv_api_artifact_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, ARTIFACT_PAGE_MAX, &limit, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct srv_artifact *list = NULL;
    size_t n = 0;
    err = srv_store_artifact_list(app->store, (int64_t)after, (size_t)limit, &list, &n, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, artifact_json(&list[i]));
    int64_t next = n ? list[n - 1].id : (int64_t)after;
    srv_artifact_list_free(list, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "artifacts", a, "next_after", (json_int_t)next));
}

/* The artifact named by the {id} parameter; false when a reply was made. */
static bool artifact_param(struct srv_app *app, struct srv_request *req, struct srv_artifact *ret)
{
    int64_t id = srv_param_id(req, "id");
    struct ot_diag d = {0};
    if (!id) {
        srv_reply_error(req, OT_ERR_FORMAT, "artifact id must be a positive number");
        return false;
    }
    enum ot_err err = srv_store_artifact_get(app->store, id, ret, &d);
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no artifact %lld", (long long)id);
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

void srv_api_artifact_show(void *app_, struct srv_request *req)
{
    struct srv_artifact a = {0};
    if (!artifact_param(app_, req, &a))
        return;
    json_t *out = artifact_json(&a);
    json_object_set_new(out, "manifest", srv_json_text(a.manifest));
    json_object_set_new(out, "signatures", srv_json_text(a.signatures));
    srv_artifact_release(&a);
    srv_reply_json(req, 200, out);
}

void srv_api_artifact_download(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_artifact a = {0};
    if (!artifact_param(app, req, &a))
        return;
    int fd;
    uint64_t size;
    char etag[OT_SHA256_HEX_LEN + 2];
    struct ot_diag d = {0};
    enum ot_err err = srv_blob_open(app->data_dir, a.sha256, &fd, &size, &d);
    snprintf(etag, sizeof(etag), "\"%s\"", a.sha256);
    srv_artifact_release(&a);
    if (err)
        return srv_reply_error(req, err == OT_ERR_NOENT ? OT_ERR_IO : err,
                               "the artifact's file is missing from the blob store: %s", d.msg);
    srv_reply_file(req, fd, size, etag, "application/octet-stream");
}

void srv_api_artifact_delete(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_artifact a = {0};
    if (!artifact_param(app, req, &a))
        return;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_artifact_delete(app->store, a.id, &d);
    if (!err && srv_blob_remove(app->data_dir, a.sha256, &d) != OT_OK)
        ot_log(OT_LOG_WARNING, "artifact %lld deleted, but its file stays: %s", (long long)a.id,
               d.msg);
    if (err) {
        srv_artifact_release(&a);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    char object[32];
    snprintf(object, sizeof(object), "artifact:%lld", (long long)a.id);
    srv_audit(app, req, "artifact.delete", object,
              json_pack("{s:s, s:s, s:s}", "name", a.name, "version", a.version, "sha256",
                        a.sha256));
    srv_artifact_release(&a);
    srv_reply_empty(req, 204);
}

void srv_api_trust_get(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    _cleanup_free_ char *text = NULL;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_meta_get(app->store, TRUST_META, &text, &d);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "no release keys are configured (PUT /api/v1/trust)");
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_reply_json(req, 200, srv_json_text(text));
}

void srv_api_trust_put(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const struct ot_buf *body = srv_req_body(req);
    struct ot_trust *t = calloc(1, sizeof(*t));
    struct ot_buf out;
    struct ot_diag d = {0};
    ot_buf_init(&out, OT_TRUST_FILE_MAX * 2);
    enum ot_err err = t ? ot_trust_parse(body->data, body->len, t, &d) : OT_ERR_NOMEM;
    if (!err)
        err = ot_trust_format(t, &out);
    if (!err)
        err = srv_store_meta_set(app->store, TRUST_META, ot_buf_str(&out), &d);
    if (err) {
        free(t);
        ot_buf_release(&out);
        return srv_reply_error(req, err, "trust file: %s", d.msg[0] ? d.msg : ot_strerror(err));
    }
    json_t *ids = json_array();
    for (size_t i = 0; i < t->nkeys; i++)
        json_array_append_new(ids, json_string(t->keys[i].id));
    srv_audit(app, req, "trust.set", "trust",
              json_pack("{s:I, s:o}", "threshold", (json_int_t)t->threshold, "keys", ids));
    srv_reply_json(req, 200, srv_json_text(ot_buf_str(&out)));
    free(t);
    ot_buf_release(&out);
}
