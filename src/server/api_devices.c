/* Management API: the device registry. Devices enter it by authenticating (pending, or accepted
 * with an enrollment token) or by preauthorization; operators accept, reject, decommission and
 * tag them. Every change drops the device from the fleet cache, so the device API sees it on the
 * device's very next request. */
#include "app.h"
#include "fleet.h"
#include "groups.h"
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/wire.h"

#define DEVICE_PAGE_MAX 1000
#define TAGS_BODY_MAX 32

static const char *const status_names[] = {
    [SRV_DEVICE_PENDING] = "pending",
    [SRV_DEVICE_ACCEPTED] = "accepted",
    [SRV_DEVICE_REJECTED] = "rejected",
    [SRV_DEVICE_PREAUTHORIZED] = "preauthorized",
    [SRV_DEVICE_DECOMMISSIONED] = "decommissioned",
};

const char *srv_device_status_name(enum srv_device_status s)
{
    return (size_t)s < OT_ARRAY_SIZE(status_names) && status_names[s] ? status_names[s] : "?";
}

static enum srv_device_status device_status_parse(const char *s)
{
    for (size_t i = 1; i < OT_ARRAY_SIZE(status_names); i++)
        if (strcmp(status_names[i], s) == 0)
            return (enum srv_device_status)i;
    return 0;
}

json_t *srv_device_json(const struct srv_device *dev);
json_t *srv_device_json(const struct srv_device *dev)
{
    char pk[64];
    ot_base64_encode(dev->pubkey, sizeof(dev->pubkey), pk);
    json_t *tags = json_array();
    for (size_t i = 0; tags && i < dev->ntags; i++)
        json_array_append_new(tags, json_string(dev->tags[i]));
    return json_pack("{s:I, s:o, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:o}", "id",
                     (json_int_t)dev->id, "identity", srv_json_text(dev->identity), "public_key",
                     pk, "status", srv_device_status_name(dev->status), "device_type",
                     dev->device_type, "created_at", (json_int_t)dev->created_at, "updated_at",
                     (json_int_t)dev->updated_at, "last_seen", (json_int_t)dev->last_seen,
                     "attributes", srv_json_text(dev->attributes), "installed",
                     srv_json_text(dev->installed), "tags", tags);
}

/* SQLite keeps fresh last-seen times in memory until the next batch: write them first, so that
 * what an operator reads is what the devices did. */
static void flush_last_seen(struct srv_app *app)
{
    struct ot_diag d = {0};
    if (srv_fleet_flush(app->fleet, &d) != OT_OK)
        ot_log(OT_LOG_WARNING, "last-seen times not written yet: %s", d.msg);
}

void srv_api_device_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct ot_diag d = {0};
    struct srv_device_filter f = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, DEVICE_PAGE_MAX, &limit, &d);
    const char *status = srv_req_query(req, "status");
    if (!err && status && !(f.status = device_status_parse(status)))
        err = ot_diag_set(&d, OT_ERR_FORMAT,
                          "query 'status' must be pending, accepted, rejected, preauthorized or "
                          "decommissioned");
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    flush_last_seen(app);
    f.tag = srv_req_query(req, "tag");
    f.device_type = srv_req_query(req, "device_type");
    f.after_id = (int64_t)after;
    f.limit = (size_t)limit;
    struct srv_device *list = NULL;
    size_t n = 0;
    err = srv_store_device_list(app->store, &f, &list, &n, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, srv_device_json(&list[i]));
    int64_t next = n ? list[n - 1].id : (int64_t)after;
    srv_device_list_free(list, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "devices", a, "next_after", (json_int_t)next));
}

static bool device_param(struct srv_app *app, struct srv_request *req, struct srv_device *ret)
{
    int64_t id = srv_param_id(req, "id");
    struct ot_diag d = {0};
    if (!id) {
        srv_reply_error(req, OT_ERR_FORMAT, "device id must be a positive number");
        return false;
    }
    enum ot_err err = srv_store_device_get(app->store, id, ret, &d);
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no device %lld", (long long)id);
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

void srv_api_device_show(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_device dev = {0};
    flush_last_seen(app);
    if (!device_param(app, req, &dev))
        return;
    json_t *out = srv_device_json(&dev);
    srv_device_release(&dev);
    srv_reply_json(req, 200, out);
}

/* Operator decisions, and from which states each is allowed. */
static void set_status(struct srv_app *app, struct srv_request *req, enum srv_device_status to,
                       uint32_t allowed_from, const char *action)
{
    struct srv_device dev = {0};
    if (!device_param(app, req, &dev))
        return;
    struct ot_diag d = {0};
    if (dev.status != to && !(allowed_from & (1u << dev.status))) {
        srv_reply_status(req, 409, "conflict", "device %lld is %s: it cannot be %s", (long long)dev.id,
                         srv_device_status_name(dev.status), action);
        srv_device_release(&dev);
        return;
    }
    enum ot_err err = dev.status == to ? OT_OK
                                       : srv_store_device_set_status(app->store, dev.id, to,
                                                                     app->now(), &d);
    srv_device_changed(app, dev.id);
    int64_t id = dev.id;
    srv_device_release(&dev);
    if (!err)
        err = srv_store_device_get(app->store, id, &dev, &d);
    if (err) {
        srv_device_release(&dev);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    char object[32], name[48];
    snprintf(object, sizeof(object), "device:%lld", (long long)dev.id);
    snprintf(name, sizeof(name), "device.%s", action);
    srv_audit(app, req, name, object, NULL);
    json_t *out = srv_device_json(&dev);
    srv_device_release(&dev);
    srv_reply_json(req, 200, out);
}

#define FROM(s) (1u << (s))

void srv_api_device_accept(void *app, struct srv_request *req)
{
    set_status(app, req, SRV_DEVICE_ACCEPTED,
               FROM(SRV_DEVICE_PENDING) | FROM(SRV_DEVICE_REJECTED), "accepted");
}

void srv_api_device_reject(void *app, struct srv_request *req)
{
    set_status(app, req, SRV_DEVICE_REJECTED,
               FROM(SRV_DEVICE_PENDING) | FROM(SRV_DEVICE_ACCEPTED) |
                   FROM(SRV_DEVICE_PREAUTHORIZED),
               "rejected");
}

void srv_api_device_decommission(void *app, struct srv_request *req)
{
    set_status(app, req, SRV_DEVICE_DECOMMISSIONED,
               FROM(SRV_DEVICE_PENDING) | FROM(SRV_DEVICE_ACCEPTED) | FROM(SRV_DEVICE_REJECTED) |
                   FROM(SRV_DEVICE_PREAUTHORIZED),
               "decommissioned");
}

/* {"tags":["a","b"]} into a malloc'd array of pointers into body. */
static enum ot_err tags_parse(const json_t *v, const char ***ret, size_t *ret_n, struct ot_diag *d)
{
    if (!json_is_array(v) || json_array_size(v) > SRV_DEVICE_TAGS_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT, "'tags' must be an array of at most %d tag names",
                           SRV_DEVICE_TAGS_MAX);
    size_t n = json_array_size(v);
    const char **tags = calloc(n + 1, sizeof(*tags));
    if (!tags)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        tags[i] = json_string_value(json_array_get(v, i));
        if (!tags[i]) {
            free(tags);
            return ot_diag_set(d, OT_ERR_FORMAT, "'tags' must hold strings");
        }
    }
    *ret = tags;
    *ret_n = n;
    return OT_OK;
}

void srv_api_device_tags(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_device dev = {0};
    if (!device_param(app, req, &dev))
        return;
    json_t *body = srv_req_json(req);
    if (!body) {
        srv_device_release(&dev);
        return;
    }
    static const char *const keys[] = {"tags", NULL};
    const char **tags = NULL;
    size_t n = 0;
    struct ot_diag d = {0};
    enum ot_err err = ot_json_only_keys(body, keys, "tags", &d);
    if (!err)
        err = tags_parse(json_object_get(body, "tags"), &tags, &n, &d);
    if (!err)
        err = srv_store_device_set_tags(app->store, dev.id, tags, n, app->now(), &d);
    free(tags);
    if (!err)
        srv_groups_device_changed(app->groups, dev.id);
    if (!err) {
        srv_device_release(&dev);
        err = srv_store_device_get(app->store, srv_param_id(req, "id"), &dev, &d);
    }
    if (err) {
        json_decref(body);
        srv_device_release(&dev);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    char object[32];
    snprintf(object, sizeof(object), "device:%lld", (long long)dev.id);
    srv_audit(app, req, "device.tags", object,
              json_pack("{s:O}", "tags", json_object_get(body, "tags")));
    json_decref(body);
    json_t *out = srv_device_json(&dev);
    srv_device_release(&dev);
    srv_reply_json(req, 200, out);
}

/* {"identity":{...},"public_key":"<b64>","device_type":"gw-2","tags":[...]}: a device registered
 * before it ever connects; its first authentication with this key accepts it. */
void srv_api_device_preauthorize(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    static const char *const keys[] = {"identity", "public_key", "device_type", "tags", NULL};
    struct srv_device dev = {.status = SRV_DEVICE_PREAUTHORIZED, .created_at = app->now()};
    struct ot_wire_auth_req ar = {0};
    const char *type = "";
    const char **tags = NULL;
    size_t ntags = 0;
    struct ot_diag d = {0};
    enum ot_err err = ot_json_only_keys(body, keys, "device", &d);
    /* The identity follows the device API's rules: decode it the way an auth request is. */
    json_t *probe = NULL;
    if (!err) {
        json_t *dt = json_object_get(body, "device_type");
        probe = json_pack("{s:O*, s:O*, s:o}", "identity", json_object_get(body, "identity"),
                          "public_key", json_object_get(body, "public_key"), "device_type",
                          json_is_string(dt) ? json_incref(dt) : json_string(""));
        char *text = probe ? json_dumps(probe, JSON_COMPACT) : NULL;
        err = text ? ot_wire_auth_req_decode((const uint8_t *)text, strlen(text), &ar, &d)
                   : ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
        free(text);
    }
    if (!err)
        err = ot_json_get_str(body, "device_type", false, SRV_DEVICE_TYPE_MAX - 1, "device",
                              &type, &d);
    if (!err && json_object_get(body, "tags"))
        err = tags_parse(json_object_get(body, "tags"), &tags, &ntags, &d);
    if (!err)
        err = ot_wire_identity_json(&ar, &dev.identity);
    if (!err) {
        memcpy(dev.pubkey, ar.public_key, sizeof(dev.pubkey));
        snprintf(dev.device_type, sizeof(dev.device_type), "%s", type);
        dev.tags = (char **)tags;
        dev.ntags = ntags;
        err = srv_store_device_create(app->store, &dev, &d);
        dev.tags = NULL;
        dev.ntags = 0;
    }
    free(tags);
    json_decref(probe);
    json_decref(body);
    ot_wire_auth_req_release(&ar);
    if (err == OT_ERR_EXISTS)
        err = ot_diag_set(&d, err, "a device with this public key is registered already");
    if (err) {
        srv_device_release(&dev);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    int64_t id = dev.id;
    srv_device_release(&dev);
    err = srv_store_device_get(app->store, id, &dev, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char object[32];
    snprintf(object, sizeof(object), "device:%lld", (long long)id);
    srv_audit(app, req, "device.preauthorize", object, json_pack("{s:o}", "identity",
                                                                srv_json_text(dev.identity)));
    json_t *out = srv_device_json(&dev);
    srv_device_release(&dev);
    srv_reply_json(req, 201, out);
}

/* Which version of each payload the fleet runs: {"devices": N, "payloads": {"rootfs":
 * {"4.2.0": 9500, "4.1.0": 500}}} over the accepted devices (?tag=&device_type= narrow it). A
 * report: it pages through the devices, it is not for every check-in. */
void srv_api_device_versions(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_device_filter f = {.status = SRV_DEVICE_ACCEPTED,
                                  .tag = srv_req_query(req, "tag"),
                                  .device_type = srv_req_query(req, "device_type"),
                                  .limit = SRV_LIST_MAX};
    json_t *payloads = json_object();
    json_int_t devices = 0;
    struct ot_diag d = {0};
    enum ot_err err = payloads ? OT_OK : OT_ERR_NOMEM;
    for (int page = 0; !err && page < 100000; page++) {
        struct srv_device *list = NULL;
        size_t n = 0;
        err = srv_store_device_list(app->store, &f, &list, &n, &d);
        for (size_t i = 0; !err && i < n; i++) {
            json_t *inst = srv_json_text(list[i].installed);
            const char *name;
            json_t *p;
            devices++;
            json_object_foreach(inst, name, p) {
                const char *version = json_string_value(json_object_get(p, "version"));
                json_t *per = json_object_get(payloads, name);
                if (!per && json_object_set_new(payloads, name, per = json_object()) != 0)
                    err = OT_ERR_NOMEM;
                json_t *count = per ? json_object_get(per, version ? version : "") : NULL;
                if (!err && per &&
                    json_object_set_new(per, version ? version : "",
                                        json_integer(json_integer_value(count) + 1)) != 0)
                    err = OT_ERR_NOMEM;
            }
            json_decref(inst);
        }
        if (n)
            f.after_id = list[n - 1].id;
        srv_device_list_free(list, n);
        if (n < SRV_LIST_MAX)
            break;
    }
    if (err) {
        json_decref(payloads);
        return srv_reply_error(req, err, "%s", d.msg[0] ? d.msg : "out of memory");
    }
    srv_reply_json(req, 200, json_pack("{s:I, s:o}", "devices", devices, "payloads", payloads));
}
