/* hawkBit's Direct Device Integration API (DDI), so that SWUpdate's suricatta and
 * rauc-hawkbit-updater update from otterd unchanged (docs/hawkbit.md; what the real clients do is
 * in the hawkBit DDI spec notes). Base path /{tenant}/controller/v1/{controllerId}:
 *
 *   GET  /                                          poll: sleep, deploymentBase/configData links
 *   GET  /deploymentBase/{actionId}                 the open action (action id = deployment id)
 *   POST /deploymentBase/{actionId}/feedback        progress and result -> the device's row
 *   PUT  /configData                                device attributes (merge, replace, remove)
 *   GET  /installedBase/{actionId}                  a finished action, deploymentBase shape
 *   GET  /softwaremodules/{moduleId}/artifacts/{f}  the file (module id = artifact id), .MD5SUM
 *
 * A DDI device is an ordinary device (identity {"controller_id": ...}); its actions are its rows
 * in deployments, and feedback maps onto the same states otter-agent reports. Only foreign
 * artifacts (.swu, RAUC bundles: api_artifacts.c) are offered to DDI devices. */
#include <sodium.h>

#include "app.h"
#include "blob.h"
#include "fleet.h"
#include "groups.h"
#include "otter/hash.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"
#include "rollout.h"

#define DEVICE_META "ddi.device."
#define TOKEN_META "ddi.token."
#define TOKEN_OF_META "ddi.token_of."
#define TENANT_META "ddi.tenant." /* + controller id: its tenant; absent: the first (registered
                                   * before otterd served several tenants) */
#define DDI_TOKEN_PREFIX "ddi_"
#define DDI_TOKEN_MAX 64
#define HOST_MAX 255
#define HREF_MAX 1024
#define ATTRS_MAX 128          /* as the device API's inventory */
#define CONFIG_FIELD_MAX 128   /* hawkBit's limit for configData keys and values */
#define DETAILS_MAX 64         /* detail lines of one feedback kept */
#define SKIP_ROUNDS 8
#define DDI_RANGES_MAX 16      /* range-specs of one download answered (more: the whole file) */
#define OFFERED_META "ddi.offered." /* + device id: the action offered last (deployment id) */
#define KEEP_META "ddi.keep."       /* + device id: a cancel the device refused (deployment id) */

/* ---- registration and authentication --------------------------------------------------------- */

bool srv_ddi_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > SRV_DDI_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static int64_t meta_id(struct srv_app *app, const char *prefix, const char *name)
{
    char key[SRV_META_KEY_MAX + 1];
    _cleanup_free_ char *v = NULL;
    int64_t id = 0;
    struct ot_diag d = {0};
    snprintf(key, sizeof(key), "%s%s", prefix, name);
    enum ot_err err = srv_store_meta_get(app->store, key, &v, &d);
    if (err && err != OT_ERR_NOENT)
        ot_log(OT_LOG_ERR, "ddi: %s", d.msg);
    if (err || ot_parse_i64(v, 1, INT64_MAX, &id) != OT_OK)
        return 0;
    return id;
}

int64_t srv_ddi_device(struct srv_app *app, const char *controller_id)
{
    return srv_ddi_id_valid(controller_id) ? meta_id(app, DEVICE_META, controller_id) : 0;
}

const struct srv_ddi_tenant *srv_ddi_tenant_find(const struct srv_app *app, const char *name)
{
    for (size_t i = 0; name && i < app->ddi_ntenants; i++)
        if (strcasecmp(app->ddi_tenants[i].name, name) == 0)
            return &app->ddi_tenants[i];
    return NULL;
}

/* The tenant a controller belongs to: meta "ddi.tenant.<controllerId>", or the first tenant for
 * one registered before there were several. NULL when that tenant is no longer configured (its
 * controllers are refused everywhere) or the store failed. */
static const struct srv_ddi_tenant *controller_tenant(struct srv_app *app, const char *cid)
{
    char key[SRV_META_KEY_MAX + 1];
    _cleanup_free_ char *v = NULL;
    struct ot_diag d = {0};
    snprintf(key, sizeof(key), "%s%s", TENANT_META, cid);
    enum ot_err err = srv_store_meta_get(app->store, key, &v, &d);
    if (err == OT_ERR_NOENT || (!err && !v[0]))
        return &app->ddi_tenants[0];
    if (err)
        ot_log(OT_LOG_ERR, "ddi: %s", d.msg);
    return err ? NULL : srv_ddi_tenant_find(app, v);
}

/* The device of a controller registered in tenant t; 0 when unknown or in another tenant. */
static int64_t tenant_device(struct srv_app *app, const struct srv_ddi_tenant *t, const char *cid)
{
    int64_t id = srv_ddi_device(app, cid);
    return id && controller_tenant(app, cid) == t ? id : 0;
}

static enum ot_err meta_set_id(struct srv_app *app, const char *prefix, const char *name,
                               int64_t id, struct ot_diag *d)
{
    char key[SRV_META_KEY_MAX + 1], v[24];
    snprintf(key, sizeof(key), "%s%s", prefix, name);
    snprintf(v, sizeof(v), "%lld", (long long)id);
    return srv_store_meta_set(app->store, key, v, d);
}

/* The store needs a unique 32-byte key per device; a DDI device has none, so it gets a value no
 * Ed25519 device can claim by accident: SHA-256("otter-ddi:" + controller id). */
static enum ot_err ddi_pubkey(const char *controller_id, uint8_t out[SRV_DEVICE_PUBKEY_LEN])
{
    char text[SRV_DDI_ID_MAX + 16];
    snprintf(text, sizeof(text), "otter-ddi:%s", controller_id);
    return ot_sha256_buf(text, strlen(text), out);
}

/* A controller known already (same public key) is found, if it is in tenant t. */
static enum ot_err find_registered(struct srv_app *app, const struct srv_ddi_tenant *t,
                                   const char *cid, struct srv_device *dev, struct ot_diag *d)
{
    uint8_t pk[SRV_DEVICE_PUBKEY_LEN];
    memcpy(pk, dev->pubkey, sizeof(pk));
    srv_device_release(dev);
    enum ot_err err = srv_store_device_by_pubkey(app->store, pk, dev, d);
    const struct srv_ddi_tenant *has = err ? NULL : controller_tenant(app, cid);
    if (!err && has != t)
        err = ot_diag_set(d, OT_ERR_EXISTS, "controller '%s' is registered in %s%s%s", cid,
                          has ? "tenant '" : "a tenant no longer configured",
                          has ? has->name : "", has ? "'" : "");
    return err;
}

enum ot_err srv_ddi_register(struct srv_app *app, const struct srv_ddi_tenant *tenant,
                             const char *controller_id, const char *device_type,
                             const char *principal, int64_t *ret_id, bool *ret_created,
                             struct ot_diag *d)
{
    const struct srv_ddi_tenant *t = tenant ? tenant : &app->ddi_tenants[0];
    if (!srv_ddi_id_valid(controller_id))
        return ot_diag_set(d, OT_ERR_FORMAT, "a controller id is 1..%d characters of "
                           "[A-Za-z0-9._:-]", SRV_DDI_ID_MAX);
    struct srv_device dev = {.status = SRV_DEVICE_ACCEPTED, .created_at = app->now()};
    json_t *ident = json_pack("{s:s, s:s}", "controller_id", controller_id, "tenant", t->name);
    dev.identity = ident ? json_dumps(ident, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(ident);
    snprintf(dev.device_type, sizeof(dev.device_type), "%s", device_type ? device_type : "");
    enum ot_err err = dev.identity ? ddi_pubkey(controller_id, dev.pubkey) : OT_ERR_NOMEM;
    if (err)
        err = ot_diag_set(d, err, "out of memory");
    bool created = false;
    if (!err) {
        err = srv_store_device_create(app->store, &dev, d);
        created = !err;
    }
    if (err == OT_ERR_EXISTS)
        err = find_registered(app, t, controller_id, &dev, d);
    char key[SRV_META_KEY_MAX + 1];
    snprintf(key, sizeof(key), "%s%s", TENANT_META, controller_id);
    if (!err)
        err = srv_store_meta_set(app->store, key, t->name, d);
    if (!err)
        err = meta_set_id(app, DEVICE_META, controller_id, dev.id, d);
    if (!err && created) {
        char object[32];
        snprintf(object, sizeof(object), "device:%lld", (long long)dev.id);
        if (srv_store_audit_add(app->store, principal, "device.ddi_register", object,
                                dev.identity, d) != OT_OK)
            ot_log(OT_LOG_ERR, "audit log write failed for device %lld: %s", (long long)dev.id,
                   d->msg);
        ot_log(OT_LOG_NOTICE, "device %lld registered for DDI: %s (tenant %s)",
               (long long)dev.id, controller_id, t->name);
    }
    if (!err) {
        *ret_id = dev.id;
        *ret_created = created;
    }
    srv_device_release(&dev);
    return err;
}

/* POST /api/v1/devices/ddi {"controller_id": "...", "device_type": "...", "tenant": "..."}:
 * registers (or finds) the controller in the tenant (default: the first), accepted, and returns a
 * new target token once (an older one stops working). */
void srv_api_device_ddi_register(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    static const char *const keys[] = {"controller_id", "device_type", "tenant", NULL};
    const char *cid = NULL, *type = "", *tname = NULL;
    const struct srv_ddi_tenant *tenant = &app->ddi_tenants[0];
    struct ot_diag d = {0};
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    enum ot_err err = ot_json_only_keys(body, keys, "ddi device", &d);
    if (!err)
        err = ot_json_get_str(body, "controller_id", true, SRV_DDI_ID_MAX, "ddi device", &cid, &d);
    if (!err)
        err = ot_json_get_str(body, "device_type", false, SRV_DEVICE_TYPE_MAX - 1, "ddi device",
                              &type, &d);
    if (!err)
        err = ot_json_get_str(body, "tenant", false, SRV_DDI_TENANT_MAX, "ddi device", &tname,
                              &d);
    if (!err && tname && !(tenant = srv_ddi_tenant_find(app, tname)))
        err = ot_diag_set(&d, OT_ERR_INVALID, "ddi device: no tenant '%s' is configured "
                          "(ddi_tenant)", tname);
    int64_t id = 0;
    bool created = false;
    if (!err)
        err = srv_ddi_register(app, tenant, cid, type, srv_req_principal(req), &id, &created,
                               &d);
    char text[DDI_TOKEN_MAX] = DDI_TOKEN_PREFIX, hex[OT_SHA256_HEX_LEN];
    uint8_t raw[32], hash[SRV_TOKEN_HASH_LEN];
    if (!err) {
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2base64(text + strlen(DDI_TOKEN_PREFIX), sizeof(text) - strlen(DDI_TOKEN_PREFIX),
                          raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sodium_memzero(raw, sizeof(raw));
        srv_token_hash(text, hash);
        sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
        /* the previous token of this controller stops working */
        _cleanup_free_ char *old = NULL;
        char key[SRV_META_KEY_MAX + 1];
        snprintf(key, sizeof(key), "%s%s", TOKEN_OF_META, cid);
        if (srv_store_meta_get(app->store, key, &old, NULL) == OT_OK) {
            char okey[SRV_META_KEY_MAX + 1];
            snprintf(okey, sizeof(okey), "%s%s", TOKEN_META, old);
            err = srv_store_meta_set(app->store, okey, "", &d);
        }
        if (!err)
            err = meta_set_id(app, TOKEN_META, hex, id, &d);
        if (!err)
            err = srv_store_meta_set(app->store, key, hex, &d);
    }
    if (err) {
        json_decref(body);
        sodium_memzero(text, sizeof(text));
        return srv_reply_error(req, err, "%s", d.msg);
    }
    srv_device_changed(app, id);
    char object[32];
    snprintf(object, sizeof(object), "device:%lld", (long long)id);
    srv_audit(app, req, "device.ddi_token", object,
              json_pack("{s:s, s:s}", "controller_id", cid, "tenant", tenant->name));
    json_t *out = json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "controller_id", cid,
                            "tenant", tenant->name, "target_token",
                            text); /* the only time it is shown */
    json_decref(body);
    sodium_memzero(text, sizeof(text));
    srv_reply_json(req, created ? 201 : 200, out);
}

/* The text after an exact, case-sensitive scheme prefix ("TargetToken "), or NULL. */
static const char *auth_value(struct srv_request *req, const char *scheme)
{
    const char *h = srv_req_header(req, "Authorization");
    size_t n = strlen(scheme);
    if (!h || strncmp(h, scheme, n) != 0 || h[n] != ' ')
        return NULL;
    h += n + 1;
    return *h && strlen(h) < DDI_TOKEN_MAX * 4 ? h : NULL;
}

static int64_t target_token_device(struct srv_app *app, const char *text)
{
    uint8_t hash[SRV_TOKEN_HASH_LEN];
    char hex[OT_SHA256_HEX_LEN];
    if (strncmp(text, DDI_TOKEN_PREFIX, strlen(DDI_TOKEN_PREFIX)) != 0 ||
        strlen(text) >= DDI_TOKEN_MAX)
        return 0;
    srv_token_hash(text, hash);
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    return meta_id(app, TOKEN_META, hex);
}

/* A gateway token compared in constant time (through hashes, so lengths leak nothing either). */
static bool gateway_token_ok(const struct srv_ddi_tenant *t, const char *text)
{
    if (!t->gateway_token || !t->gateway_token[0])
        return false;
    uint8_t a[SRV_TOKEN_HASH_LEN], b[SRV_TOKEN_HASH_LEN];
    srv_token_hash(text, a);
    srv_token_hash(t->gateway_token, b);
    return sodium_memcmp(a, b, sizeof(a)) == 0;
}

/* Which device the request's credentials make it, for the path's controller in tenant t (a
 * controller of another tenant is nobody here); 0: none. */
static int64_t ddi_credentials(struct srv_app *app, const struct srv_ddi_tenant *t,
                               struct srv_request *req, const char *cid)
{
    const char *tok;
    if (t->target_token && (tok = auth_value(req, "TargetToken"))) {
        int64_t id = target_token_device(app, tok);
        return id && id == tenant_device(app, t, cid) ? id : 0;
    }
    if ((tok = auth_value(req, "GatewayToken")) && gateway_token_ok(t, tok)) {
        if (srv_ddi_device(app, cid))
            return tenant_device(app, t, cid);
        int64_t id = 0;
        bool created;
        struct ot_diag d = {0};
        if (srv_ddi_register(app, t, cid, "", "ddi-gateway", &id, &created, &d) != OT_OK) {
            ot_log(OT_LOG_ERR, "ddi: cannot register a controller: %s", d.msg);
            return 0;
        }
        return id;
    }
    const char *h = srv_req_header(req, "X-Controller-Id");
    if (t->trust_controller_header && h && strcmp(h, cid) == 0)
        return tenant_device(app, t, cid);
    return 0;
}

int srv_ddi_auth(struct srv_app *app, struct srv_request *req, char *msg, size_t msg_len)
{
    const struct srv_ddi_tenant *t = srv_ddi_tenant_find(app, srv_req_param(req, "tenant"));
    const char *cid = srv_req_param(req, "controllerId");
    if (!t) {
        snprintf(msg, msg_len, "no such tenant");
        return 404;
    }
    int64_t id = srv_ddi_id_valid(cid) ? ddi_credentials(app, t, req, cid) : 0;
    if (!id)
        return 401;
    struct srv_fleet_dev dev;
    struct ot_diag d = {0};
    enum ot_err err = srv_fleet_get(app->fleet, id, app->now(), &dev, &d);
    if (err == OT_ERR_NOENT || (!err && dev.status != SRV_DEVICE_ACCEPTED))
        return 401;
    if (err) {
        ot_log(OT_LOG_ERR, "device %lld: %s", (long long)id, d.msg);
        snprintf(msg, msg_len, "the device registry is not available, try again later");
        return 503;
    }
    char principal[SRV_DDI_ID_MAX + 16];
    snprintf(principal, sizeof(principal), "ddi:%s", cid);
    srv_req_set_principal(req, principal);
    srv_req_set_device(req, id);
    return 0;
}

/* ---- actions --------------------------------------------------------------------------------- */

bool srv_manifest_is_foreign(const char *manifest)
{
    json_t *m = srv_json_text(manifest);
    bool foreign = json_is_string(json_object_get(m, "foreign"));
    json_decref(m);
    return foreign;
}

/* One action as DDI shows it: the deployment and its (foreign) artifact. */
struct action {
    int64_t id;
    enum srv_dd_status status;
    enum srv_deployment_status dep_status;
    struct srv_artifact a;
    char filename[SRV_ARTIFACT_FIELD_MAX + 16];
    char sha1[41], md5[33];
};

static void action_release(struct action *x) { srv_artifact_release(&x->a); }

/* The deployment's artifact, with its foreign manifest's fields. OT_ERR_NOENT when the artifact is
 * gone; OT_ERR_UNSUPPORTED for an otter artifact. */
static enum ot_err action_load(struct srv_app *app, int64_t dep_id, struct action *ret,
                               struct ot_diag *d)
{
    struct srv_deployment dep = {0};
    enum ot_err err = srv_store_deployment_get(app->store, dep_id, &dep, d);
    if (!err && !dep.artifact_id)
        err = ot_diag_set(d, OT_ERR_NOENT, "deployment %lld has no artifact", (long long)dep_id);
    if (!err)
        err = srv_store_artifact_get(app->store, dep.artifact_id, &ret->a, d);
    ret->dep_status = dep.status;
    srv_deployment_release(&dep);
    if (err)
        return err;
    ret->id = dep_id;
    json_t *m = srv_json_text(ret->a.manifest);
    const char *f = json_string_value(json_object_get(m, "filename"));
    const char *s1 = json_string_value(json_object_get(m, "sha1"));
    const char *m5 = json_string_value(json_object_get(m, "md5"));
    if (!json_is_string(json_object_get(m, "foreign")) || !f || !s1 || !m5)
        err = ot_diag_set(d, OT_ERR_UNSUPPORTED, "not a foreign artifact");
    else {
        snprintf(ret->filename, sizeof(ret->filename), "%s", f);
        snprintf(ret->sha1, sizeof(ret->sha1), "%s", s1);
        snprintf(ret->md5, sizeof(ret->md5), "%s", m5);
    }
    json_decref(m);
    return err;
}

/* The device's open action (ret->id 0: none). A row the device cannot take (an otter artifact,
 * another device type) is marked skipped once, as check-in does for otter-agent. */
static enum ot_err open_action(struct srv_app *app, int64_t dev_id, const char *device_type,
                               struct action *ret, struct ot_diag *d)
{
    for (int round = 0; round < SKIP_ROUNDS; round++) {
        struct srv_dd dd = {0};
        enum ot_err err = srv_store_device_next(app->store, dev_id, &dd, d);
        if (err == OT_ERR_NOENT)
            return OT_OK;
        if (err)
            return err;
        int64_t dep = dd.deployment_id;
        enum srv_dd_status st = dd.status;
        bool released = srv_rollouts_released(app->rollouts, dep, dd.seq);
        srv_dd_release(&dd);
        *ret = (struct action){0};
        if (!released) /* a staged rollout has not come to this device yet */
            return OT_OK;
        err = action_load(app, dep, ret, d);
        const char *why = NULL;
        if (err == OT_ERR_UNSUPPORTED)
            why = "not a foreign artifact (.swu or RAUC bundle): DDI devices cannot take it";
        else if (err == OT_ERR_NOENT) /* the artifact was deleted meanwhile */
            why = "the artifact is gone";
        else if (err)
            return err;
        else if (device_type[0] && !srv_device_type_listed(ret->a.device_types, device_type))
            why = "the artifact is not for this device type";
        if (!why) {
            ret->status = st;
            return OT_OK;
        }
        action_release(ret);
        *ret = (struct action){0};
        err = srv_store_dd_skip(app->store, dep, dev_id, why, app->now(), d);
        if (err)
            return err;
        if (st != SRV_DD_PENDING) /* under way already: skip cannot apply, stop looking */
            return OT_OK;
    }
    return OT_OK;
}

static int64_t dev_meta(struct srv_app *app, const char *prefix, int64_t dev_id)
{
    char name[24];
    snprintf(name, sizeof(name), "%lld", (long long)dev_id);
    return meta_id(app, prefix, name);
}

static void dev_meta_set(struct srv_app *app, const char *prefix, int64_t dev_id, int64_t dep)
{
    char name[24];
    struct ot_diag d = {0};
    snprintf(name, sizeof(name), "%lld", (long long)dev_id);
    if (meta_set_id(app, prefix, name, dep, &d) != OT_OK)
        ot_log(OT_LOG_ERR, "ddi: %s", d.msg);
}

/* The device's current action: the one offered last while the device's row in it is not final,
 * even when its deployment was cancelled meanwhile (*ret_cancel: the device must be asked to
 * stop, unless it refused already) - a device that is installing or restarting into new
 * software must not get another action under it (SWUpdate reports its post-restart result
 * against whatever action is offered then). Otherwise the next one (open_action). */
static enum ot_err current_action(struct srv_app *app, int64_t dev_id, const char *device_type,
                                  struct action *ret, bool *ret_cancel, struct ot_diag *d)
{
    int64_t off = dev_meta(app, OFFERED_META, dev_id);
    struct srv_dd dd = {0};
    *ret_cancel = false;
    if (off && srv_store_dd_get(app->store, off, dev_id, &dd, NULL) == OT_OK &&
        !SRV_DD_IS_FINAL(dd.status) && action_load(app, off, ret, NULL) == OT_OK) {
        ret->status = dd.status;
        srv_dd_release(&dd);
        if (ret->dep_status == SRV_DEPLOYMENT_CANCELLED)
            *ret_cancel = dev_meta(app, KEEP_META, dev_id) != off;
        if (ret->dep_status != SRV_DEPLOYMENT_CANCELLED || ret->status != SRV_DD_PENDING)
            return OT_OK;
    }
    srv_dd_release(&dd);
    action_release(ret);
    *ret = (struct action){0};
    *ret_cancel = false;
    enum ot_err err = open_action(app, dev_id, device_type, ret, d);
    if (!err && ret->id && ret->id != off)
        dev_meta_set(app, OFFERED_META, dev_id, ret->id);
    return err;
}

/* "http://host:port" of the request: absolute hrefs are what the clients need (they use them
 * verbatim). The Host header is checked to be a plain host[:port]. */
static bool base_url(struct srv_request *req, char *out, size_t len)
{
    const char *host = srv_req_header(req, "Host");
    if (!host || !*host || strlen(host) > HOST_MAX)
        return false;
    for (const char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr(".-:[]_", *p)))
            return false;
    snprintf(out, len, "%s://%s", srv_req_tls(req) ? "https" : "http", host);
    return true;
}

/* The controller's base path: both parts were checked by authentication (no escaping needed). */
static void ctl_url(struct srv_request *req, const char *base, char *out, size_t len)
{
    snprintf(out, len, "%s/%s/controller/v1/%s", base, srv_req_param(req, "tenant"),
             srv_req_param(req, "controllerId"));
}

static json_t *href(const char *url)
{
    return json_pack("{s:s}", "href", url);
}

/* How the action is to be carried out, from its deployment's rollout policy (rollout.h). */
struct handling {
    enum ot_wire_deploy_type type;
    bool held;       /* the maintenance window is closed now: download only, for now */
    bool has_window;
};

static struct handling handling_of(struct srv_app *app, int64_t dep)
{
    struct handling h = {0};
    srv_rollouts_action(app->rollouts, dep, &h.type, &h.held);
    h.has_window = h.held || srv_rollouts_has_window(app->rollouts, dep);
    return h;
}

/* deploymentBase's "deployment" handling fields (hawkBit's mapping, spec notes): download is
 * "forced", or "attempt" for a soft action; update is "skip" for a download-only action or while
 * the maintenance window is closed, else the same as download; "maintenanceWindow" only when the
 * policy has a window. "update" is always sent: a missing one makes SWUpdate skip the install. */
static void handling_json(json_t *deployment, const struct handling *h)
{
    const char *download = h->type == OT_WIRE_TYPE_SOFT ? "attempt" : "forced";
    bool skip = h->type == OT_WIRE_TYPE_DOWNLOAD_ONLY || h->held;
    json_object_set_new(deployment, "download", json_string(download));
    json_object_set_new(deployment, "update", json_string(skip ? "skip" : download));
    if (h->has_window)
        json_object_set_new(deployment, "maintenanceWindow",
                            json_string(h->held ? "unavailable" : "available"));
}

static json_t *deployment_json(struct srv_request *req, const struct action *x, const char *base,
                               const struct handling *h)
{
    char ctl[HREF_MAX], file[HREF_MAX + 320], md5[HREF_MAX + 330], id[24];
    ctl_url(req, base, ctl, sizeof(ctl));
    snprintf(file, sizeof(file), "%s/softwaremodules/%lld/artifacts/%s", ctl, (long long)x->a.id,
             x->filename);
    snprintf(md5, sizeof(md5), "%s.MD5SUM", file);
    snprintf(id, sizeof(id), "%lld", (long long)x->id);
    json_t *art = json_pack("{s:s, s:{s:s, s:s, s:s}, s:I, s:{s:o, s:o, s:o}}", "filename",
                            x->filename, "hashes", "sha1", x->sha1, "md5", x->md5, "sha256",
                            x->a.sha256, "size", (json_int_t)x->a.size, "_links", "download",
                            href(file), "download-http", href(file), "md5sum-http", href(md5));
    json_t *chunk = json_pack("{s:s, s:s, s:s, s:[o], s:[]}", "part", "os", "version",
                              x->a.version, "name", x->a.name, "artifacts", art, "metadata");
    json_t *out = json_pack("{s:s, s:{s:[o]}}", "id", id, "deployment", "chunks", chunk);
    if (out)
        handling_json(json_object_get(out, "deployment"), h);
    return out;
}

static void reply_bad_host(struct srv_request *req)
{
    srv_reply_status(req, 400, "bad_request", "the request needs a Host header (host[:port])");
}

/* ETag of a poll answer: FNV-1a of its bytes; If-None-Match with it gets 304. */
static void reply_polled(struct srv_request *req, json_t *out)
{
    char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return srv_reply_json(req, 200, out);
    char etag[24];
    snprintf(etag, sizeof(etag), "\"%016llx\"",
             (unsigned long long)srv_fleet_hash(SRV_FLEET_HASH_INIT, text, strlen(text)));
    free(text);
    const char *inm = srv_req_header(req, "If-None-Match");
    if (inm && strcmp(inm, etag) == 0) {
        json_decref(out);
        srv_reply_empty(req, 304);
    } else {
        srv_reply_json(req, 200, out);
    }
    srv_reply_header(req, "ETag", etag);
}

void srv_ddi_poll(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t id = srv_req_device(req);
    char base[HOST_MAX + 16], ctl[HREF_MAX], url[HREF_MAX + 64], sleep[16];
    if (!base_url(req, base, sizeof(base)))
        return reply_bad_host(req);
    struct srv_device dev = {0};
    struct action x = {0};
    struct ot_diag d = {0};
    enum ot_err err = srv_store_device_get(app->store, id, &dev, &d);
    bool cancel = false;
    if (!err)
        err = current_action(app, id, dev.device_type, &x, &cancel, &d);
    if (err) {
        action_release(&x);
        srv_device_release(&dev);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    uint32_t s = app->poll_interval;
    snprintf(sleep, sizeof(sleep), "%02u:%02u:%02u", s / 3600 % 100, s / 60 % 60, s % 60);
    json_t *links = json_object();
    ctl_url(req, base, ctl, sizeof(ctl));
    if (x.id && cancel) { /* no query string: SWUpdate appends "/feedback" to it */
        snprintf(url, sizeof(url), "%s/cancelAction/%lld", ctl, (long long)x.id);
        json_object_set_new(links, "cancelAction", href(url));
    } else if (x.id) { /* c changes with what the action says: the poll's ETag follows it */
        bool held = handling_of(app, x.id).held;
        snprintf(url, sizeof(url), "%s/deploymentBase/%lld?c=%d", ctl, (long long)x.id,
                 (int)x.status * 2 + held);
        json_object_set_new(links, "deploymentBase", href(url));
    }
    if (strcmp(dev.attributes ? dev.attributes : "{}", "{}") == 0) {
        snprintf(url, sizeof(url), "%s/configData", ctl);
        json_object_set_new(links, "configData", href(url));
    }
    action_release(&x);
    srv_device_release(&dev);
    json_t *out = json_pack("{s:{s:{s:s}}}", "config", "polling", "sleep", sleep);
    if (json_object_size(links))
        json_object_set_new(out, "_links", links);
    else
        json_decref(links);
    srv_fleet_seen(app->fleet, id, app->now());
    reply_polled(req, out);
}

/* The action {actionId} of the request's device; false when a reply was made. */
static bool my_action(struct srv_app *app, struct srv_request *req, struct srv_dd *ret)
{
    const char *s = srv_req_param(req, "actionId");
    int64_t dep = 0;
    struct ot_diag d = {0};
    enum ot_err err = s && ot_parse_i64(s, 1, INT64_MAX, &dep) == OT_OK
                          ? srv_store_dd_get(app->store, dep, srv_req_device(req), ret, &d)
                          : OT_ERR_NOENT;
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no such action for this controller");
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

/* deploymentBase (open: with the handling of now) or installedBase (a finished action: held no
 * more). */
static void reply_action(struct srv_app *app, struct srv_request *req, int64_t dep, bool open)
{
    char base[HOST_MAX + 16];
    if (!base_url(req, base, sizeof(base)))
        return reply_bad_host(req);
    struct action x = {0};
    struct ot_diag d = {0};
    enum ot_err err = action_load(app, dep, &x, &d);
    if (err == OT_ERR_UNSUPPORTED)
        err = OT_ERR_NOENT;
    if (err) {
        action_release(&x);
        return srv_reply_error(req, err, "%s", err == OT_ERR_NOENT ? "no such action" : d.msg);
    }
    struct handling h = handling_of(app, dep);
    if (!open)
        h.held = false;
    json_t *out = deployment_json(req, &x, base, &h);
    action_release(&x);
    srv_reply_json(req, 200, out);
}

void srv_ddi_deployment(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_dd dd = {0};
    if (!my_action(app, req, &dd))
        return;
    int64_t dep = dd.deployment_id;
    bool final = SRV_DD_IS_FINAL(dd.status);
    srv_dd_release(&dd);
    if (final)
        return srv_reply_error(req, OT_ERR_NOENT, "this action is closed");
    srv_fleet_seen(app->fleet, srv_req_device(req), app->now());
    reply_action(app, req, dep, true);
}

void srv_ddi_installed(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_dd dd = {0};
    if (!my_action(app, req, &dd))
        return;
    int64_t dep = dd.deployment_id;
    bool done = dd.status == SRV_DD_SUCCESS || dd.status == SRV_DD_FAILURE ||
                dd.status == SRV_DD_ROLLED_BACK;
    srv_dd_release(&dd);
    if (!done)
        return srv_reply_error(req, OT_ERR_NOENT, "this action is not finished");
    reply_action(app, req, dep, false);
}

/* ---- feedback -------------------------------------------------------------------------------- */

struct feedback {
    const char *execution, *finished;
    int progress;                  /* 0..100, -1 unknown */
    bool skipped;                  /* SWUpdate's "Skipped Update." */
    bool chunks_installed;         /* SWUpdate's "All Chunks Installed." */
    bool failed;                   /* closed with result failure: the device says it failed */
    char message[SRV_DD_MESSAGE_MAX];
    struct ot_buf log;             /* the detail lines, one per line */
};

static bool one_of(const char *s, const char *const *names)
{
    for (; *names; names++)
        if (strcmp(s, *names) == 0)
            return true;
    return false;
}

static enum ot_err feedback_details(const json_t *details, struct feedback *f, struct ot_diag *d)
{
    if (details && !json_is_array(details))
        return ot_diag_set(d, OT_ERR_FORMAT, "feedback: 'details' must be an array of strings");
    size_t i;
    json_t *v;
    json_array_foreach(details, i, v) {
        const char *s = json_string_value(v);
        if (!s)
            return ot_diag_set(d, OT_ERR_FORMAT, "feedback: 'details' must be strings");
        if (i >= DETAILS_MAX)
            continue;
        f->skipped |= strstr(s, "Skipped Update.") != NULL;
        f->chunks_installed |= strstr(s, "All Chunks Installed") != NULL;
        size_t n = strlen(f->message);
        if (n + 3 < sizeof(f->message))
            snprintf(f->message + n, sizeof(f->message) - n, "%s%s", n ? "; " : "", s);
        if (ot_buf_append(&f->log, s, strlen(s)) != OT_OK || ot_buf_append(&f->log, "\n", 1))
            break; /* the log is bounded: the rest is dropped */
    }
    return OT_OK;
}

/* {"status":{"execution":..., "result":{"finished":..., "progress":{"cnt":N,"of":M}},
 * "details":[...]}}; unknown fields (id, time, timestamp, code) are ignored. */
static enum ot_err feedback_parse(const json_t *body, struct feedback *f, struct ot_diag *d)
{
    static const char *const executions[] = {"closed", "proceeding", "canceled", "scheduled",
                                             "rejected", "resumed", "downloaded", "download",
                                             NULL};
    static const char *const results[] = {"success", "failure", "none", NULL};
    const json_t *st = json_object_get(body, "status");
    const json_t *res = json_object_get(st, "result");
    if (!json_is_object(st))
        return ot_diag_set(d, OT_ERR_FORMAT, "feedback: 'status' must be an object");
    enum ot_err err = ot_json_get_str(st, "execution", true, 32, "feedback", &f->execution, d);
    if (!err && !one_of(f->execution, executions))
        err = ot_diag_set(d, OT_ERR_FORMAT, "feedback: unknown execution '%.32s'", f->execution);
    if (!err && res && !json_is_object(res))
        err = ot_diag_set(d, OT_ERR_FORMAT, "feedback: 'result' must be an object");
    f->finished = "none";
    if (!err && res)
        err = ot_json_get_str(res, "finished", false, 32, "feedback", &f->finished, d);
    if (!err && !one_of(f->finished, results))
        err = ot_diag_set(d, OT_ERR_FORMAT, "feedback: unknown result '%.32s'", f->finished);
    const json_t *p = json_object_get(res, "progress");
    uint64_t cnt = 0, of = 0;
    f->progress = -1;
    if (!err && p && json_is_object(p)) {
        err = ot_json_get_u64(p, "cnt", false, UINT32_MAX, "feedback", &cnt, d);
        if (!err)
            err = ot_json_get_u64(p, "of", false, UINT32_MAX, "feedback", &of, d);
        if (!err && of)
            f->progress = (int)(OT_MIN(cnt, of) * 100 / of);
    }
    if (!err)
        err = feedback_details(json_object_get(st, "details"), f, d);
    return err;
}

/* A row's place in an action's life, so that a late or repeated feedback never moves it back:
 * WAITING (downloaded, the install held) comes after DOWNLOADING and before INSTALLING. */
static int stage(enum srv_dd_status s)
{
    return s == SRV_DD_WAITING ? 2 * SRV_DD_DOWNLOADING + 1 : 2 * (int)s;
}

static enum srv_dd_status at_least(enum srv_dd_status current, enum srv_dd_status want)
{
    return stage(current) > stage(want) ? current : want;
}

/* closed: failure fails (f->failed: the device reported it, the policy's retries apply), success
 * or none succeeds - unless it is SWUpdate's "Skipped Update." answer to update "skip": while the
 * maintenance window is closed that is the device waiting for it (the row WAITING, the action
 * offered again and installed once the window opens), otherwise no install happened: a failure. */
static enum srv_dd_status feedback_closed(struct feedback *f, const struct handling *h)
{
    if (strcmp(f->finished, "failure") == 0) {
        f->failed = true;
        return SRV_DD_FAILURE;
    }
    if (!f->skipped)
        return SRV_DD_SUCCESS;
    if (h->held && h->type != OT_WIRE_TYPE_DOWNLOAD_ONLY) {
        snprintf(f->message, sizeof(f->message), "the maintenance window is closed: the device "
                 "skipped the update; it is offered again when the window opens");
        return SRV_DD_WAITING;
    }
    snprintf(f->message, sizeof(f->message), "the device skipped the update%s",
             h->type == OT_WIRE_TYPE_DOWNLOAD_ONLY ? " (it cannot download only)" : "");
    return SRV_DD_FAILURE;
}

/* The device state a feedback means (0: only an event for the current state), for an action
 * handled as h says. */
static enum srv_dd_status feedback_status(struct feedback *f, enum srv_dd_status current,
                                          const struct handling *h)
{
    const char *e = f->execution;
    if (strcmp(e, "closed") == 0)
        return feedback_closed(f, h);
    if (strcmp(e, "canceled") == 0 || strcmp(e, "rejected") == 0) {
        if (!f->message[0])
            snprintf(f->message, sizeof(f->message), "the device %s the action",
                     e[0] == 'c' ? "cancelled" : "rejected");
        return SRV_DD_FAILURE;
    }
    if (strcmp(e, "download") == 0)
        return at_least(current, SRV_DD_DOWNLOADING);
    if (strcmp(e, "downloaded") == 0) { /* closes a download-only action (hawkBit's rule) */
        if (h->type == OT_WIRE_TYPE_DOWNLOAD_ONLY) {
            snprintf(f->message, sizeof(f->message), "downloaded (download only)");
            return SRV_DD_SUCCESS;
        }
        return at_least(current, h->held ? SRV_DD_WAITING : SRV_DD_INSTALLING);
    }
    /* proceeding, scheduled, resumed: the action goes on */
    if (f->chunks_installed) /* SWUpdate waits for the restart into the new software */
        return SRV_DD_REBOOTING;
    if (current == SRV_DD_PENDING || (current == SRV_DD_WAITING && !h->held))
        return SRV_DD_DOWNLOADING;
    return current;
}

void srv_ddi_feedback(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_dd dd = {0};
    if (!my_action(app, req, &dd))
        return;
    int64_t dev = srv_req_device(req), dep = dd.deployment_id;
    enum srv_dd_status current = dd.status;
    srv_dd_release(&dd);
    if (SRV_DD_IS_FINAL(current))
        return srv_reply_status(req, 410, "gone", "this action is closed");
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    struct feedback f = {0};
    struct ot_diag d = {0};
    struct handling h = handling_of(app, dep);
    ot_buf_init(&f.log, SRV_DD_LOG_MAX);
    enum ot_err err = feedback_parse(body, &f, &d);
    enum srv_dd_status want = err ? 0 : feedback_status(&f, current, &h);
    /* a failure the device reported may be retried (the policy's retries): the row goes back to
     * pending and the action is offered again */
    uint32_t retries = f.failed ? srv_rollouts_retries(app->rollouts, dep) : 0;
    bool applied = false;
    if (!err)
        err = srv_store_dd_report_retry(app->store, dep, dev, want, f.progress, f.message,
                                        f.log.len ? ot_buf_str(&f.log) : NULL, app->now(),
                                        retries, &applied, NULL, &current, &d);
    json_decref(body);
    ot_buf_release(&f.log);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_fleet_seen(app->fleet, dev, app->now());
    if (!applied)
        return srv_reply_status(req, 410, "gone", "this action is closed");
    srv_reply_empty(req, 200);
}

/* ---- configData ------------------------------------------------------------------------------ */

static bool printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* Applies {"mode": merge|replace|remove, "data": {k: v}} to attrs (replace empties it first). */
static enum ot_err config_apply(const json_t *body, json_t **attrs, struct ot_diag *d)
{
    const char *mode = "merge";
    enum ot_err err = ot_json_get_str(body, "mode", false, 16, "configData", &mode, d);
    const json_t *data = json_object_get(body, "data");
    if (err)
        return err;
    if (!json_is_object(data))
        return ot_diag_set(d, OT_ERR_FORMAT, "configData: 'data' must be an object");
    bool remove = strcmp(mode, "remove") == 0;
    if (!remove && strcmp(mode, "merge") != 0 && strcmp(mode, "replace") != 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "configData: unknown mode '%.16s'", mode);
    if (strcmp(mode, "replace") == 0)
        json_object_clear(*attrs);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)data, k, v) {
        const char *s = json_string_value(v);
        if (!printable(k, CONFIG_FIELD_MAX) || !k[0] || (!remove && (!s || !printable(s,
                                                                         CONFIG_FIELD_MAX))))
            return ot_diag_set(d, OT_ERR_FORMAT, "configData: keys and values are strings of "
                               "1..%d printable characters", CONFIG_FIELD_MAX);
        if (remove)
            json_object_del(*attrs, k);
        else
            json_object_set_new(*attrs, k, json_string(s));
    }
    if (json_object_size(*attrs) > ATTRS_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "a device may have at most %d attributes", ATTRS_MAX);
    return OT_OK;
}

void srv_ddi_config_data(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t id = srv_req_device(req);
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    struct srv_device dev = {0};
    struct ot_diag d = {0};
    enum ot_err err = srv_store_device_get(app->store, id, &dev, &d);
    json_t *attrs = err ? NULL : srv_json_text(dev.attributes);
    if (!err && !json_is_object(attrs)) {
        json_decref(attrs);
        attrs = json_object();
    }
    if (!err)
        err = attrs ? config_apply(body, &attrs, &d) : ot_diag_set(&d, OT_ERR_NOMEM, "no memory");
    char *text = err ? NULL : json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS);
    if (!err && !text)
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err && strlen(text) > SRV_DEVICE_JSON_MAX)
        err = ot_diag_set(&d, OT_ERR_LIMIT, "the attributes are larger than %d bytes",
                          SRV_DEVICE_JSON_MAX);
    if (!err)
        err = srv_store_device_set_attributes(app->store, id, text, app->now(), &d);
    free(text);
    json_decref(attrs);
    json_decref(body);
    srv_device_release(&dev);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_fleet_seen(app->fleet, id, app->now());
    srv_groups_device_changed(app->groups, id); /* it may join a dynamic group */
    srv_reply_empty(req, 200);
}

/* ---- artifacts ------------------------------------------------------------------------------- */

/* GET/HEAD softwaremodules/{moduleId}/artifacts/{filename}[.MD5SUM]: only the artifact of the
 * device's open action (a device learns nothing about other artifacts). */
void srv_ddi_artifact(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t dev = srv_req_device(req), module = 0;
    const char *mod = srv_req_param(req, "moduleId"), *name = srv_req_param(req, "filename");
    struct srv_device device = {0};
    struct action x = {0};
    struct ot_diag d = {0};
    bool cancel = false;
    enum ot_err err = mod && ot_parse_i64(mod, 1, INT64_MAX, &module) == OT_OK
                          ? srv_store_device_get(app->store, dev, &device, &d)
                          : OT_ERR_NOENT;
    if (!err)
        err = current_action(app, dev, device.device_type, &x, &cancel, &d);
    if (!err && !x.id)
        err = OT_ERR_NOENT;
    srv_device_release(&device);
    size_t fl = strlen(x.filename), nl = name ? strlen(name) : 0;
    bool md5 = !err && nl == fl + 7 && strcmp(name + fl, ".MD5SUM") == 0;
    if (!err && (x.a.id != module || strncmp(name, x.filename, fl) != 0 || (nl != fl && !md5)))
        err = OT_ERR_NOENT;
    if (err == OT_ERR_UNSUPPORTED || err == OT_ERR_NOENT) {
        action_release(&x);
        return srv_reply_error(req, OT_ERR_NOENT, "no such artifact for this controller");
    }
    if (err) {
        action_release(&x);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    if (md5) {
        char line[SRV_ARTIFACT_FIELD_MAX + 64];
        int n = snprintf(line, sizeof(line), "%s  %s\n", x.md5, x.filename);
        action_release(&x);
        return srv_reply_text(req, 200, "text/plain", line, (size_t)n);
    }
    char etag[48];
    int fd;
    uint64_t size;
    snprintf(etag, sizeof(etag), "\"%s\"", x.sha1);
    err = srv_blob_open(app->data_dir, x.a.sha256, &fd, &size, &d);
    action_release(&x);
    if (err)
        return srv_reply_error(req, err == OT_ERR_NOENT ? OT_ERR_IO : err,
                               "the artifact's file is missing from the blob store: %s", d.msg);
    srv_fleet_seen(app->fleet, dev, app->now());
    srv_reply_file_ranges(req, fd, size, etag, "application/octet-stream", DDI_RANGES_MAX);
}

/* ---- cancel ---------------------------------------------------------------------------------- */

/* The cancel the device is asked for: {actionId} must be it; false when a reply was made. */
static bool my_cancel(struct srv_app *app, struct srv_request *req, int64_t *ret)
{
    const char *s = srv_req_param(req, "actionId");
    int64_t dep = 0, dev = srv_req_device(req);
    struct srv_device device = {0};
    struct action x = {0};
    struct ot_diag d = {0};
    bool cancel = false;
    enum ot_err err = s && ot_parse_i64(s, 1, INT64_MAX, &dep) == OT_OK
                          ? srv_store_device_get(app->store, dev, &device, &d)
                          : OT_ERR_NOENT;
    if (!err)
        err = current_action(app, dev, device.device_type, &x, &cancel, &d);
    if (!err && (!cancel || x.id != dep))
        err = ot_diag_set(&d, OT_ERR_NOENT, "no cancel for this action");
    srv_device_release(&device);
    action_release(&x);
    if (err)
        srv_reply_error(req, err, "%s", d.msg);
    *ret = dep;
    return !err;
}

void srv_ddi_cancel(void *app_, struct srv_request *req)
{
    int64_t dep;
    if (!my_cancel(app_, req, &dep))
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)dep);
    srv_reply_json(req, 200, json_pack("{s:s, s:{s:s}}", "id", id, "cancelAction", "stopId", id));
}

/* closed (success or none): the device stopped, its row ends as a failure "cancelled";
 * rejected or closed+failure: it goes on with the action (which is offered again). Anything
 * else: noted only. */
void srv_ddi_cancel_feedback(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t dep, dev = srv_req_device(req);
    if (!my_cancel(app, req, &dep))
        return;
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    struct feedback f = {0};
    struct ot_diag d = {0};
    ot_buf_init(&f.log, SRV_DD_LOG_MAX);
    enum ot_err err = feedback_parse(body, &f, &d);
    bool closed = !err && strcmp(f.execution, "closed") == 0;
    bool refused = !err && (strcmp(f.execution, "rejected") == 0 ||
                            (closed && strcmp(f.finished, "failure") == 0));
    struct srv_dd dd = {0};
    if (!err)
        err = srv_store_dd_get(app->store, dep, dev, &dd, &d);
    bool applied = false;
    enum srv_dd_status current = dd.status;
    if (!err && (closed || refused)) {
        snprintf(f.message, sizeof(f.message), "%s", refused ? "the device refused the cancel"
                                                             : "cancelled on the device");
        err = srv_store_dd_report(app->store, dep, dev, refused ? dd.status : SRV_DD_FAILURE,
                                  -1, f.message, f.log.len ? ot_buf_str(&f.log) : NULL,
                                  app->now(), &applied, &current, &d);
    }
    srv_dd_release(&dd);
    ot_buf_release(&f.log);
    json_decref(body); /* f's strings point into it */
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    if (refused)
        dev_meta_set(app, KEEP_META, dev, dep);
    srv_fleet_seen(app->fleet, dev, app->now());
    srv_reply_empty(req, 200);
}
