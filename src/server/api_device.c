/* The device API (/api/device/v1, docs/device-api.md): what otter-agent and otter-sim talk to.
 * Every body is encoded and decoded by core's wire.c, the one place that knows the format.
 *
 *   POST  auth                       signed identity -> device token (or pending / 403)
 *   POST  checkin                    what is installed -> nothing to do, or the next deployment
 *   GET   deployments/{id}/artifact  the artifact file (Range, If-Range, ETag; sendfile)
 *   POST  deployments/{id}/status    progress and result of the device's deployment
 *   PATCH inventory                  device attributes, merged or replaced
 *
 * The check-in path is built to cost no database write and, in the steady state, no database
 * read: the device's status, reported state and next action come from the fleet cache, and its
 * last-seen time is written in batches (fleet.h). */
#include <pthread.h>
#include <sodium.h>

#include "app.h"
#include "blob.h"
#include "fleet.h"
#include "groups.h"
#include "rollout.h"
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/wire.h"

#define CHECKIN_RESP_MAX (4 * 1024 * 1024)

void srv_device_changed(struct srv_app *app, int64_t id)
{
    struct ot_diag d = {0};
    if (srv_fleet_changed(app->fleet, id, &d) != OT_OK)
        ot_log(OT_LOG_WARNING, "device %lld: other otterd instances see the change only after "
               "device_cache_ttl: %s", (long long)id, d.msg);
    srv_groups_device_changed(app->groups, id);
}

/* ---- auth ------------------------------------------------------------------------------------ */

static void reply_auth(struct srv_app *app, struct srv_request *req,
                       const struct ot_wire_auth_resp *r, unsigned status)
{
    struct ot_buf out;
    struct ot_diag d = {0};
    ot_buf_init(&out, OT_WIRE_BODY_MAX);
    (void)app;
    enum ot_err err = ot_wire_auth_resp_encode(r, &out, &d);
    if (err) {
        ot_buf_release(&out);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    srv_reply_buf(req, status, &out);
    ot_buf_release(&out);
}

/* A new key: pending, or accepted at once with a valid enrollment token. */
static enum ot_err auth_register(struct srv_app *app, const struct ot_wire_auth_req *ar,
                                 const char *identity, struct srv_device *dev, struct ot_diag *d)
{
    bool enroll = ar->enrollment_token[0] &&
                  srv_token_text_allows(app, ar->enrollment_token, SRV_SCOPE_DEVICES_ENROLL);
    if (ar->enrollment_token[0] && !enroll)
        return ot_diag_set(d, OT_ERR_PERM, "the enrollment token is not valid (unknown, revoked, "
                                           "expired, or without the devices:enroll scope)");
    *dev = (struct srv_device){
        .status = enroll ? SRV_DEVICE_ACCEPTED : SRV_DEVICE_PENDING,
        .created_at = app->now(),
    };
    dev->identity = strdup(identity);
    if (!dev->identity)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    memcpy(dev->pubkey, ar->public_key, sizeof(dev->pubkey));
    snprintf(dev->device_type, sizeof(dev->device_type), "%s", ar->device_type);
    enum ot_err err = srv_store_device_create(app->store, dev, d);
    if (err == OT_ERR_EXISTS) /* a concurrent first request with the same key won */
        err = srv_store_device_by_pubkey(app->store, ar->public_key, dev, d);
    if (!err) {
        char object[32];
        snprintf(object, sizeof(object), "device:%lld", (long long)dev->id);
        if (srv_store_audit_add(app->store, "device", enroll ? "device.enroll" : "device.register",
                                object, identity, d) != OT_OK)
            ot_log(OT_LOG_ERR, "audit log write failed for device %lld: %s", (long long)dev->id,
                   d->msg);
        ot_log(OT_LOG_NOTICE, "device %lld %s: %s", (long long)dev->id,
               enroll ? "enrolled" : "registered, pending", identity);
    }
    return err;
}

void srv_dev_auth(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const struct ot_buf *body = srv_req_body(req);
    const char *sig_b64 = srv_req_header(req, OT_WIRE_SIGNATURE_HEADER);
    struct ot_wire_auth_req ar = {0};
    struct ot_diag d = {0};
    uint8_t sig[OT_SIGNATURE_LEN];
    if (!sig_b64 || ot_base64_decode_exact(sig_b64, sig, sizeof(sig)) != OT_OK)
        return srv_reply_status(req, 401, "unauthorized",
                                "the request needs an %s header: base64 of the Ed25519 signature "
                                "of the body", OT_WIRE_SIGNATURE_HEADER);
    enum ot_err err = ot_wire_auth_req_decode(body->data, body->len, &ar, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct ot_key pk = {.type = OT_KEY_SIGN_PUBLIC};
    memcpy(pk.pk, ar.public_key, sizeof(pk.pk));
    if (!ot_sign_verify(&pk, OT_WIRE_AUTH_CONTEXT, body->data, body->len, sig)) {
        ot_wire_auth_req_release(&ar);
        return srv_reply_status(req, 401, "unauthorized",
                                "the signature does not match the body and public key");
    }
    _cleanup_free_ char *identity = NULL;
    struct srv_device dev = {0};
    err = ot_wire_identity_json(&ar, &identity);
    if (!err)
        err = srv_store_device_by_pubkey(app->store, ar.public_key, &dev, &d);
    if (err == OT_ERR_NOENT)
        err = auth_register(app, &ar, identity, &dev, &d);
    if (!err && dev.status == SRV_DEVICE_PREAUTHORIZED) {
        if (strcmp(dev.identity, identity) != 0) {
            err = ot_diag_set(&d, OT_ERR_PERM, "the identity does not match the one this key "
                                               "was preauthorized with");
        } else {
            err = srv_store_device_set_status(app->store, dev.id, SRV_DEVICE_ACCEPTED, app->now(),
                                              &d);
            dev.status = SRV_DEVICE_ACCEPTED;
            srv_device_changed(app, dev.id);
        }
    }
    if (!err && dev.status == SRV_DEVICE_PENDING && ar.enrollment_token[0] &&
        srv_token_text_allows(app, ar.enrollment_token, SRV_SCOPE_DEVICES_ENROLL)) {
        err = srv_store_device_set_status(app->store, dev.id, SRV_DEVICE_ACCEPTED, app->now(), &d);
        dev.status = SRV_DEVICE_ACCEPTED;
        srv_device_changed(app, dev.id);
    }
    ot_wire_auth_req_release(&ar);
    if (err) {
        srv_device_release(&dev);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    struct ot_wire_auth_resp r = {.device_id = dev.id};
    enum srv_device_status status = dev.status;
    srv_device_release(&dev);
    switch (status) {
    case SRV_DEVICE_ACCEPTED: {
        int64_t now = app->now();
        r.status = OT_WIRE_AUTH_ACCEPTED;
        r.expires_in = app->device_token_ttl;
        char token[SRV_DEVICE_TOKEN_MAX];
        srv_devtoken_issue(app, r.device_id, now + app->device_token_ttl, token);
        snprintf(r.token, sizeof(r.token), "%s", token);
        sodium_memzero(token, sizeof(token));
        srv_fleet_seen(app->fleet, r.device_id, now);
        reply_auth(app, req, &r, 200);
        sodium_memzero(r.token, sizeof(r.token));
        return;
    }
    case SRV_DEVICE_PENDING:
        r.status = OT_WIRE_AUTH_PENDING;
        r.retry_after = app->pending_retry;
        return reply_auth(app, req, &r, 202);
    default:
        return srv_reply_status(req, 403, "forbidden", "this device was %s by an operator",
                                status == SRV_DEVICE_REJECTED ? "rejected" : "decommissioned");
    }
}

/* ---- check-in -------------------------------------------------------------------------------- */

/* One deployment's artifact as a device needs it, cached: deployments are few and their
 * artifacts never change, so a check-in that finds work reads nothing from the database. */
struct dep_info {
    int64_t id;
    bool active;
    bool foreign;          /* a .swu or RAUC bundle: for DDI devices only */
    int64_t artifact_id;
    char *name, *version, *manifest, *signatures, *device_types;
    uint64_t size;
    uint8_t sha256[OT_SHA256_LEN];
};

#define DEP_CACHE 64
static pthread_mutex_t dep_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dep_info dep_cache[DEP_CACHE];
static int64_t dep_cache_gen = -1;

static void dep_info_release(struct dep_info *i)
{
    free(i->name);
    free(i->version);
    free(i->manifest);
    free(i->signatures);
    free(i->device_types);
    *i = (struct dep_info){0};
}

static enum ot_err dep_info_copy(const struct dep_info *src, struct dep_info *dst)
{
    *dst = *src;
    dst->name = strdup(src->name);
    dst->version = strdup(src->version);
    dst->manifest = strdup(src->manifest);
    dst->signatures = strdup(src->signatures);
    dst->device_types = strdup(src->device_types);
    if (!dst->name || !dst->version || !dst->manifest || !dst->signatures || !dst->device_types) {
        dep_info_release(dst);
        return OT_ERR_NOMEM;
    }
    return OT_OK;
}

static enum ot_err dep_info_load(struct srv_app *app, int64_t id, struct dep_info *ret,
                                 struct ot_diag *d)
{
    int64_t gen = srv_fleet_generation(app->fleet);
    pthread_mutex_lock(&dep_cache_lock);
    if (dep_cache_gen != gen) { /* a deployment was cancelled or created: start over */
        for (size_t i = 0; i < DEP_CACHE; i++)
            dep_info_release(&dep_cache[i]);
        dep_cache_gen = gen;
    }
    struct dep_info *slot = &dep_cache[(uint64_t)id % DEP_CACHE];
    enum ot_err err = OT_ERR_NOENT;
    if (id > 0 && slot->id == id)
        err = dep_info_copy(slot, ret);
    pthread_mutex_unlock(&dep_cache_lock);
    if (err != OT_ERR_NOENT)
        return err ? ot_diag_set(d, err, "out of memory") : OT_OK;

    struct srv_deployment dep = {0};
    struct srv_artifact a = {0};
    err = srv_store_deployment_get(app->store, id, &dep, d);
    if (!err && !dep.artifact_id)
        err = ot_diag_set(d, OT_ERR_NOENT, "deployment %lld has no artifact", (long long)id);
    if (!err)
        err = srv_store_artifact_get(app->store, dep.artifact_id, &a, d);
    struct dep_info info = {.id = id, .active = dep.status == SRV_DEPLOYMENT_ACTIVE};
    if (!err) {
        info.artifact_id = a.id;
        info.size = a.size;
        info.foreign = srv_manifest_is_foreign(a.manifest);
        err = ot_hex_decode(a.sha256, info.sha256, sizeof(info.sha256));
        info.name = TAKE_PTR(a.name);
        info.version = TAKE_PTR(a.version);
        info.manifest = TAKE_PTR(a.manifest);
        info.signatures = TAKE_PTR(a.signatures);
        info.device_types = TAKE_PTR(a.device_types);
    }
    srv_deployment_release(&dep);
    srv_artifact_release(&a);
    if (!err)
        err = dep_info_copy(&info, ret);
    if (!err) {
        pthread_mutex_lock(&dep_cache_lock);
        if (dep_cache_gen == gen) {
            dep_info_release(slot);
            *slot = info;
            info = (struct dep_info){0};
        }
        pthread_mutex_unlock(&dep_cache_lock);
    }
    dep_info_release(&info);
    return err;
}

bool srv_device_type_listed(const char *device_types_json, const char *type)
{
    json_t *a = srv_json_text(device_types_json);
    bool found = false;
    for (size_t i = 0; !found && i < json_array_size(a); i++)
        found = strcmp(json_string_value(json_array_get(a, i)) ?: "", type) == 0;
    json_decref(a);
    return found;
}

/* Stores what the device reports when it changed since the last check-in (hash compare). */
static enum ot_err update_reported(struct srv_app *app, struct srv_fleet_dev *dev,
                                   const struct ot_wire_checkin_req *cr, struct ot_diag *d)
{
    _cleanup_free_ char *installed = NULL;
    enum ot_err err = ot_wire_installed_json(cr, &installed);
    if (err)
        return ot_diag_set(d, err, "out of memory");
    uint64_t h = srv_fleet_hash(SRV_FLEET_HASH_INIT, cr->device_type, strlen(cr->device_type) + 1);
    h = srv_fleet_hash(h, installed, strlen(installed));
    if (h == dev->reported_hash)
        return OT_OK;
    err = srv_store_device_set_installed(app->store, dev->id, cr->device_type, installed,
                                         app->now(), d);
    if (!err) {
        dev->reported_hash = h;
        snprintf(dev->device_type, sizeof(dev->device_type), "%s", cr->device_type);
        srv_groups_device_changed(app->groups, dev->id); /* it may join a dynamic group */
    }
    return err;
}

/* The device's next deployment (0: none), from the cache while the generation holds. A pending
 * row the device cannot take is skipped here, once. */
static enum ot_err next_action(struct srv_app *app, struct srv_fleet_dev *dev,
                               struct dep_info *ret, struct ot_diag *d)
{
    for (int round = 0; round < 8; round++) {
        int64_t gen = srv_fleet_generation(app->fleet);
        if (dev->action_gen != gen) {
            struct srv_dd dd = {0};
            enum ot_err err = srv_store_device_next(app->store, dev->id, &dd, d);
            if (err && err != OT_ERR_NOENT)
                return err;
            dev->action_deployment = err ? 0 : dd.deployment_id;
            dev->action_seq = err ? 0 : dd.seq;
            dev->action_gen = gen;
            srv_dd_release(&dd);
        }
        if (!dev->action_deployment)
            return OT_OK;
        enum ot_err err = dep_info_load(app, dev->action_deployment, ret, d);
        if (err == OT_ERR_NOENT) { /* deleted meanwhile */
            dev->action_gen = -1;
            continue;
        }
        if (err)
            return err;
        /* a foreign artifact (.swu, RAUC bundle) is for DDI devices only (api_ddi.c) */
        bool foreign = ret->active && ret->foreign;
        if (ret->active && !foreign &&
            srv_device_type_listed(ret->device_types, dev->device_type))
            return OT_OK;
        if (ret->active) {
            char msg[160];
            if (foreign)
                snprintf(msg, sizeof(msg), "not an otter artifact");
            else
                snprintf(msg, sizeof(msg), "the artifact is not for device type '%s'",
                         dev->device_type);
            err = srv_store_dd_skip(app->store, ret->id, dev->id, msg, app->now(), d);
            if (err)
                return err;
        }
        dep_info_release(ret);
        dev->action_gen = -1; /* look again */
    }
    dev->action_deployment = 0;
    return OT_OK;
}

void srv_dev_checkin(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const struct ot_buf *body = srv_req_body(req);
    int64_t id = srv_req_device(req), now = app->now();
    struct ot_wire_checkin_req cr = {0};
    struct ot_diag d = {0};
    enum ot_err err = ot_wire_checkin_req_decode(body->data, body->len, &cr, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct srv_fleet_dev dev;
    err = srv_fleet_get(app->fleet, id, now, &dev, &d);
    if (!err)
        err = update_reported(app, &dev, &cr, &d);
    ot_wire_checkin_req_release(&cr);
    struct dep_info info = {0};
    if (!err)
        err = next_action(app, &dev, &info, &d);
    if (err) {
        dep_info_release(&info);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    srv_fleet_put(app->fleet, &dev);
    srv_fleet_seen(app->fleet, id, now);

    struct ot_wire_checkin_resp r = {.action = OT_WIRE_ACTION_NONE,
                                     .poll_interval = app->poll_interval,
                                     .poll_jitter = app->poll_jitter};
    char url[96];
    char *urls[1] = {url};
    /* a staged rollout that has not come to this device yet: nothing to do for now */
    if (dev.action_deployment &&
        srv_rollouts_released(app->rollouts, dev.action_deployment, dev.action_seq)) {
        snprintf(url, sizeof(url), "/api/device/v1/deployments/%lld/artifact",
                 (long long)info.id);
        r.action = OT_WIRE_ACTION_INSTALL;
        r.deployment_id = info.id;
        r.artifact_name = info.name;
        r.artifact_version = info.version;
        r.artifact_size = info.size;
        memcpy(r.artifact_sha256, info.sha256, sizeof(r.artifact_sha256));
        r.manifest = info.manifest;
        r.signatures = info.signatures;
        r.download = urls;
        r.ndownload = 1;
        srv_rollouts_action(app->rollouts, info.id, &r.type, &r.install_held);
    }
    struct ot_buf out;
    ot_buf_init(&out, CHECKIN_RESP_MAX);
    err = ot_wire_checkin_resp_encode(&r, &out, &d);
    dep_info_release(&info);
    if (err) {
        ot_buf_release(&out);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    srv_reply_buf(req, 200, &out);
    ot_buf_release(&out);
}

/* ---- the device's deployment ---------------------------------------------------------------- */

/* The device's row in deployment {id}; a deployment the device is not in is "not found", the
 * same answer as for one that does not exist (a device learns nothing about others). */
static bool my_row(struct srv_app *app, struct srv_request *req, struct srv_dd *ret)
{
    int64_t dep = srv_param_id(req, "id");
    struct ot_diag d = {0};
    enum ot_err err = dep ? srv_store_dd_get(app->store, dep, srv_req_device(req), ret, &d)
                          : OT_ERR_NOENT;
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no such deployment for this device");
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

void srv_dev_download(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_dd dd = {0};
    if (!my_row(app, req, &dd))
        return;
    int64_t dep = dd.deployment_id;
    bool final = SRV_DD_IS_FINAL(dd.status);
    srv_dd_release(&dd);
    struct dep_info info = {0};
    struct ot_diag d = {0};
    enum ot_err err = dep_info_load(app, dep, &info, &d);
    /* Only while the device still has work in it: a finished or cancelled deployment's artifact
     * is not the device's to fetch any more. */
    if (err == OT_ERR_NOENT || (!err && final)) {
        dep_info_release(&info);
        return srv_reply_error(req, OT_ERR_NOENT, "no artifact to download in this deployment");
    }
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char hex[OT_SHA256_HEX_LEN], etag[OT_SHA256_HEX_LEN + 2];
    ot_hex_encode(info.sha256, sizeof(info.sha256), hex);
    dep_info_release(&info);
    snprintf(etag, sizeof(etag), "\"%s\"", hex);
    int fd;
    uint64_t size;
    err = srv_blob_open(app->data_dir, hex, &fd, &size, &d);
    if (err)
        return srv_reply_error(req, err == OT_ERR_NOENT ? OT_ERR_IO : err,
                               "the artifact's file is missing from the blob store: %s", d.msg);
    srv_fleet_seen(app->fleet, srv_req_device(req), app->now());
    srv_reply_file(req, fd, size, etag, "application/octet-stream");
}

void srv_dev_status(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const struct ot_buf *body = srv_req_body(req);
    int64_t dev = srv_req_device(req), dep = srv_param_id(req, "id");
    struct ot_wire_status_report rep = {0};
    struct ot_diag d = {0};
    enum ot_err err = ot_wire_status_report_decode(body->data, body->len, &rep, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    bool applied = false, retried = false;
    enum srv_dd_status current = 0;
    err = dep ? srv_store_dd_report_retry(app->store, dep, dev, (enum srv_dd_status)rep.status,
                                          rep.progress, rep.message, rep.log, app->now(),
                                          srv_rollouts_retries(app->rollouts, dep), &applied,
                                          &retried, &current, &d)
              : OT_ERR_NOENT;
    enum srv_dd_status wanted = (enum srv_dd_status)rep.status;
    ot_wire_status_report_release(&rep);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "no such deployment for this device");
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_fleet_seen(app->fleet, dev, app->now());
    if (!applied && current != wanted)
        return srv_reply_status(req, 409, "conflict",
                                "this deployment is already %s for this device: a final state "
                                "never changes",
                                ot_wire_status_name((enum ot_wire_status)current));
    if (SRV_DD_IS_FINAL(wanted)) {
        /* the device's next action is whatever comes after this deployment (or this one again,
         * when the policy retries it) */
        struct srv_fleet_dev fd;
        if (srv_fleet_get(app->fleet, dev, app->now(), &fd, NULL) == OT_OK) {
            fd.action_gen = -1;
            srv_fleet_put(app->fleet, &fd);
        }
    }
    srv_reply_empty(req, 204);
}

/* ---- inventory ------------------------------------------------------------------------------- */

#define ATTRS_MAX 128

void srv_dev_inventory(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const struct ot_buf *body = srv_req_body(req);
    int64_t id = srv_req_device(req);
    struct ot_wire_inventory inv = {0};
    struct srv_device dev = {0};
    struct ot_diag d = {0};
    enum ot_err err = ot_wire_inventory_decode(body->data, body->len, &inv, &d);
    if (!err)
        err = srv_store_device_get(app->store, id, &dev, &d);
    json_t *attrs = NULL;
    if (!err) {
        attrs = inv.replace ? json_object() : srv_json_text(dev.attributes);
        if (!json_is_object(attrs)) {
            json_decref(attrs);
            attrs = json_object();
        }
        for (size_t i = 0; attrs && i < inv.nattrs; i++) {
            if (inv.attrs[i].value)
                json_object_set_new(attrs, inv.attrs[i].key, json_string(inv.attrs[i].value));
            else
                json_object_del(attrs, inv.attrs[i].key);
        }
        if (!attrs)
            err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
        else if (json_object_size(attrs) > ATTRS_MAX)
            err = ot_diag_set(&d, OT_ERR_LIMIT, "a device may have at most %d attributes",
                              ATTRS_MAX);
    }
    char *text = !err ? json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!err && !text)
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err && strlen(text) > SRV_DEVICE_JSON_MAX)
        err = ot_diag_set(&d, OT_ERR_LIMIT, "the attributes are larger than %d bytes",
                          SRV_DEVICE_JSON_MAX);
    if (!err)
        err = srv_store_device_set_attributes(app->store, id, text, app->now(), &d);
    free(text);
    json_decref(attrs);
    srv_device_release(&dev);
    ot_wire_inventory_release(&inv);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_fleet_seen(app->fleet, id, app->now());
    srv_groups_device_changed(app->groups, id);
    srv_reply_empty(req, 204);
}
