/* The route table of both APIs, and the handlers of health, API tokens and the audit log.
 * Every route is declared here, with its auth and scope, so the test that walks the table
 * covers new routes automatically (tests/server/test_routes.py). */
#include <sodium.h>

#include "app.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"
#include "otter/wire.h"

#define SMALL_BODY (16 * 1024)
#define LIST_BODY (2 * 1024 * 1024)             /* a deployment's list of device ids */
#define ARTIFACT_BODY (64ull * 1024 * 1024 * 1024) /* streamed; max_artifact_size is the limit */
#define AUDIT_PAGE_MAX 1000
#define DDI_BASE "/{tenant}/controller/v1/{controllerId}"
#define DDI_BODY (256 * 1024) /* SWUpdate forwards up to 48 long log lines per feedback */

static void health(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    srv_reply_json(req, 200, json_pack("{s:s, s:s, s:i}", "status", "ok", "version", OTTER_VERSION,
                                       "schema_version", srv_store_schema_version(app->store)));
}

void srv_audit(struct srv_app *app, struct srv_request *req, const char *action,
                  const char *object, json_t *detail)
{
    struct ot_diag d = {0};
    char *text = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (srv_store_audit_add(app->store, srv_req_principal(req), action, object, text, &d) != OT_OK)
        ot_log(OT_LOG_ERR, "audit log write failed for %s %s: %s", action, object, d.msg);
    free(text);
    json_decref(detail);
}

static json_t *token_json(const struct srv_token *t)
{
    return json_pack("{s:I, s:s, s:o, s:I, s:I, s:b}", "id", (json_int_t)t->id, "name", t->name,
                     "scopes", srv_scopes_json(t->scopes), "created_at", (json_int_t)t->created_at,
                     "expires_at", (json_int_t)t->expires_at, "revoked", t->revoked);
}

/* Reads {"name": "...", "scopes": [...], "expires_in": seconds} into t. */
static enum ot_err token_request(const json_t *body, struct srv_app *app, struct srv_token *t,
                                 struct ot_diag *d)
{
    static const char *const keys[] = {"name", "scopes", "expires_in", NULL};
    const char *name = NULL;
    uint64_t expires_in = 0;
    enum ot_err err = ot_json_only_keys(body, keys, "token", d);
    if (!err)
        err = ot_json_get_str(body, "name", true, SRV_TOKEN_NAME_MAX - 1, "token", &name, d);
    if (!err)
        err = ot_json_get_u64(body, "expires_in", false, 100ull * 365 * 86400, "token", &expires_in,
                              d);
    if (!err)
        err = srv_scopes_parse(json_object_get(body, "scopes"), &t->scopes, d);
    if (err)
        return err;
    if (!name[0])
        return ot_diag_set(d, OT_ERR_FORMAT, "token: 'name' must not be empty");
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->created_at = app->now();
    t->expires_at = expires_in ? t->created_at + (int64_t)expires_in : 0;
    return OT_OK;
}

static void token_create(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    struct srv_token t = {0};
    struct ot_diag d = {0};
    enum ot_err err = token_request(body, app, &t, &d);
    json_decref(body);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    /* A token may hand out only what it holds itself (admin holds everything). */
    uint32_t mine = srv_req_scopes(req);
    if (!(mine & SRV_SCOPE_ADMIN) && (t.scopes & ~mine))
        return srv_reply_status(req, 403, "forbidden",
                                "a token cannot create a token with scopes it does not have");
    char text[SRV_TOKEN_TEXT_MAX];
    err = srv_token_generate(text, t.hash);
    if (!err)
        err = srv_store_token_create(app->store, &t, &d);
    if (err)
        return srv_reply_error(req, err, "cannot create the token: %s", d.msg);
    char object[32];
    snprintf(object, sizeof(object), "token:%lld", (long long)t.id);
    srv_audit(app, req, "token.create", object,
          json_pack("{s:s, s:o}", "name", t.name, "scopes", srv_scopes_json(t.scopes)));
    json_t *out = token_json(&t);
    json_object_set_new(out, "token", json_string(text)); /* the only time it is shown */
    sodium_memzero(text, sizeof(text));
    srv_reply_json(req, 201, out);
}

static void token_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_token *list = NULL;
    size_t n = 0;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_token_list(app->store, &list, &n, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, token_json(&list[i]));
    free(list);
    srv_reply_json(req, 200, json_pack("{s:o}", "tokens", a));
}

int64_t srv_param_id(struct srv_request *req, const char *name)
{
    int64_t id;
    const char *s = srv_req_param(req, name);
    return s && ot_parse_i64(s, 1, INT64_MAX, &id) == OT_OK ? id : 0;
}

static void token_revoke(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t id = srv_param_id(req, "id");
    if (!id)
        return srv_reply_error(req, OT_ERR_FORMAT, "token id must be a positive number");
    struct ot_diag d = {0};
    enum ot_err err = srv_store_token_revoke(app->store, id, &d);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "no token %lld", (long long)id);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char object[32];
    snprintf(object, sizeof(object), "token:%lld", (long long)id);
    srv_audit(app, req, "token.revoke", object, NULL);
    srv_reply_empty(req, 204);
}

enum ot_err srv_query_u64(struct srv_request *req, const char *name, uint64_t min, uint64_t max,
                             uint64_t *ret, struct ot_diag *d)
{
    const char *s = srv_req_query(req, name);
    if (!s)
        return OT_OK;
    if (ot_parse_u64(s, min, max, ret) != OT_OK)
        return ot_diag_set(d, OT_ERR_FORMAT, "query '%s' must be a number from %llu to %llu", name,
                           (unsigned long long)min, (unsigned long long)max);
    return OT_OK;
}

static void audit_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, AUDIT_PAGE_MAX, &limit, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct srv_audit *list = NULL;
    size_t n = 0;
    err = srv_store_audit_list(app->store, (int64_t)after, (size_t)limit, &list, &n, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *detail = list[i].detail ? json_loads(list[i].detail, 0, NULL) : NULL;
        json_array_append_new(a, json_pack("{s:I, s:I, s:s, s:s, s:s, s:o}", "id",
                                           (json_int_t)list[i].id, "at", (json_int_t)list[i].at,
                                           "actor", list[i].actor, "action", list[i].action,
                                           "object", list[i].object, "detail",
                                           detail ? detail : json_null()));
    }
    int64_t next = n ? list[n - 1].id : (int64_t)after;
    srv_audit_list_free(list, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "entries", a, "next_after", (json_int_t)next));
}

const struct srv_route srv_routes[] = {
    {"GET", "/api/v1/health", health, SRV_AUTH_NONE, 0, 0, "liveness and version"},
    {"POST", "/api/v1/tokens", token_create, SRV_AUTH_TOKEN, SRV_SCOPE_TOKENS, SMALL_BODY,
     "create an API token (shown once)"},
    {"GET", "/api/v1/tokens", token_list, SRV_AUTH_TOKEN, SRV_SCOPE_TOKENS, 0, "list API tokens"},
    {"DELETE", "/api/v1/tokens/{id}", token_revoke, SRV_AUTH_TOKEN, SRV_SCOPE_TOKENS, 0,
     "revoke an API token (at once)"},
    {"GET", "/api/v1/audit", audit_list, SRV_AUTH_TOKEN, SRV_SCOPE_AUDIT_READ, 0,
     "the audit log, oldest first (?after=ID&limit=N)"},
    {"GET", "/api/v1/trust", srv_api_trust_get, SRV_AUTH_TOKEN, SRV_SCOPE_ARTIFACTS_READ, 0,
     "the release keys uploads are checked against"},
    {"PUT", "/api/v1/trust", srv_api_trust_put, SRV_AUTH_TOKEN, SRV_SCOPE_ADMIN, 64 * 1024,
     "set the release keys (a trust file)"},
    {"POST", "/api/v1/artifacts", srv_api_artifact_upload, SRV_AUTH_TOKEN,
     SRV_SCOPE_ARTIFACTS_WRITE, ARTIFACT_BODY,
     "upload an artifact (the body is the file, streamed; verified before it is kept)",
     srv_api_artifact_upload_body},
    {"GET", "/api/v1/artifacts", srv_api_artifact_list, SRV_AUTH_TOKEN, SRV_SCOPE_ARTIFACTS_READ,
     0, "list artifacts (?after=ID&limit=N)"},
    {"GET", "/api/v1/artifacts/{id}", srv_api_artifact_show, SRV_AUTH_TOKEN,
     SRV_SCOPE_ARTIFACTS_READ, 0, "an artifact with its manifest"},
    {"GET", "/api/v1/artifacts/{id}/download", srv_api_artifact_download, SRV_AUTH_TOKEN,
     SRV_SCOPE_ARTIFACTS_READ, 0, "the artifact file (Range, ETag)"},
    {"DELETE", "/api/v1/artifacts/{id}", srv_api_artifact_delete, SRV_AUTH_TOKEN,
     SRV_SCOPE_ARTIFACTS_WRITE, 0, "delete an artifact no active deployment uses"},
    {"GET", "/api/v1/devices", srv_api_device_list, SRV_AUTH_TOKEN, SRV_SCOPE_DEVICES_READ, 0,
     "list devices (?status=&tag=&device_type=&after=ID&limit=N)"},
    {"POST", "/api/v1/devices", srv_api_device_preauthorize, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, SMALL_BODY, "preauthorize a device (identity and public key)"},
    {"GET", "/api/v1/devices/{id}", srv_api_device_show, SRV_AUTH_TOKEN, SRV_SCOPE_DEVICES_READ, 0,
     "a device"},
    {"POST", "/api/v1/devices/{id}/accept", srv_api_device_accept, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, 0, "accept a pending or rejected device"},
    {"POST", "/api/v1/devices/{id}/reject", srv_api_device_reject, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, 0, "reject a device (its tokens stop working at once)"},
    {"POST", "/api/v1/devices/{id}/decommission", srv_api_device_decommission, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, 0, "retire a device for good"},
    {"PUT", "/api/v1/devices/{id}/tags", srv_api_device_tags, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, SMALL_BODY, "set a device's tags"},
    {"POST", "/api/v1/deployments", srv_api_deployment_create, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, LIST_BODY, "deploy an artifact to devices or a tag"},
    {"GET", "/api/v1/deployments", srv_api_deployment_list, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "list deployments, newest first (?status=&before=ID&limit=N)"},
    {"GET", "/api/v1/deployments/{id}", srv_api_deployment_show, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "a deployment with its rollup"},
    {"GET", "/api/v1/deployments/{id}/devices", srv_api_deployment_devices, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "per-device states (?after=DEVICE_ID&limit=N)"},
    {"GET", "/api/v1/deployments/{id}/devices/{device_id}", srv_api_deployment_device,
     SRV_AUTH_TOKEN, SRV_SCOPE_DEPLOYMENTS_READ, 0, "one device's state and timeline"},
    {"POST", "/api/v1/deployments/{id}/cancel", srv_api_deployment_cancel, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "cancel a deployment (devices not started stop)"},
    {"POST", "/api/v1/deployments/{id}/pause", srv_api_deployment_pause, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "pause a staged rollout (no more devices are released)"},
    {"POST", "/api/v1/deployments/{id}/resume", srv_api_deployment_resume, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "resume a paused rollout"},
    {"POST", "/api/v1/deployments/{id}/approve", srv_api_deployment_approve, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, SMALL_BODY, "approve a rollout phase (one vote per operator)"},
    {"GET", "/api/v1/deployments/{id}/export", srv_api_deployment_export, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "every device row at once, as CSV or JSON (?format=)"},
    {"GET", "/api/v1/reports/versions", srv_api_device_versions, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_READ, 0, "which version of each payload the fleet runs (?tag=&device_type=)"},
    {"GET", "/api/v1/deployments/{id}/decisions", srv_api_deployment_decisions, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "the rollout engine's decisions and reasons (?after=&limit=)"},
    {"POST", "/api/v1/templates", srv_api_template_create, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, SMALL_BODY, "a deployment template for a release channel"},
    {"GET", "/api/v1/templates", srv_api_template_list, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "list deployment templates (?channel=&after=ID&limit=N)"},
    {"GET", "/api/v1/templates/{id}", srv_api_template_show, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_READ, 0, "one deployment template"},
    {"DELETE", "/api/v1/templates/{id}", srv_api_template_delete, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "delete a deployment template"},
    {"POST", "/api/v1/templates/{id}/enable", srv_api_template_enable, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "let a template deploy new releases of its channel"},
    {"POST", "/api/v1/templates/{id}/disable", srv_api_template_disable, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEPLOYMENTS_WRITE, 0, "stop a template from deploying"},
    {"POST", "/api/device/v1/auth", srv_dev_auth, SRV_AUTH_NONE, 0, OT_WIRE_BODY_MAX,
     "device: authenticate with the identity key, get a device token"},
    {"POST", "/api/device/v1/checkin", srv_dev_checkin, SRV_AUTH_DEVICE, 0, OT_WIRE_BODY_MAX,
     "device: report what is installed, get the next action"},
    {"GET", "/api/device/v1/deployments/{id}/artifact", srv_dev_download, SRV_AUTH_DEVICE, 0, 0,
     "device: download the artifact of its deployment (Range, If-Range, ETag)"},
    {"POST", "/api/device/v1/deployments/{id}/status", srv_dev_status, SRV_AUTH_DEVICE, 0,
     OT_WIRE_BODY_MAX, "device: report progress or the result (409 after a final state)"},
    {"PATCH", "/api/device/v1/inventory", srv_dev_inventory, SRV_AUTH_DEVICE, 0, OT_WIRE_BODY_MAX,
     "device: update its attributes"},
    {"POST", "/api/v1/devices/ddi", srv_api_device_ddi_register, SRV_AUTH_TOKEN,
     SRV_SCOPE_DEVICES_WRITE, SMALL_BODY,
     "register a hawkBit DDI controller (accepted) and get its target token (shown once)"},
    /* hawkBit DDI (api_ddi.c, docs/hawkbit.md) */
    {"GET", DDI_BASE, srv_ddi_poll, SRV_AUTH_DDI, 0, 0, "DDI: poll (sleep, links to the work)"},
    {"GET", DDI_BASE "/deploymentBase/{actionId}", srv_ddi_deployment, SRV_AUTH_DDI, 0, 0,
     "DDI: the open action"},
    {"POST", DDI_BASE "/deploymentBase/{actionId}/feedback", srv_ddi_feedback, SRV_AUTH_DDI, 0,
     DDI_BODY, "DDI: progress and result of an action (410 once closed)"},
    {"GET", DDI_BASE "/cancelAction/{actionId}", srv_ddi_cancel, SRV_AUTH_DDI, 0, 0,
     "DDI: the cancel of an action under way whose deployment was cancelled"},
    {"POST", DDI_BASE "/cancelAction/{actionId}/feedback", srv_ddi_cancel_feedback, SRV_AUTH_DDI,
     0, DDI_BODY, "DDI: the device stopped (closed) or refused (rejected) the cancel"},
    {"PUT", DDI_BASE "/configData", srv_ddi_config_data, SRV_AUTH_DDI, 0, DDI_BODY,
     "DDI: device attributes (merge, replace, remove)"},
    {"GET", DDI_BASE "/installedBase/{actionId}", srv_ddi_installed, SRV_AUTH_DDI, 0, 0,
     "DDI: a finished action"},
    {"GET", DDI_BASE "/softwaremodules/{moduleId}/artifacts/{filename}", srv_ddi_artifact,
     SRV_AUTH_DDI, 0, 0, "DDI: the artifact of the open action (Range, ETag), or its .MD5SUM"},
};
const size_t srv_nroutes = OT_ARRAY_SIZE(srv_routes);

json_t *srv_routes_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < srv_nroutes; i++) {
        const struct srv_route *r = &srv_routes[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s*, s:I, s:s}", "method", r->method,
                                           "path", r->pattern, "auth",
                                           r->auth == SRV_AUTH_TOKEN    ? "token"
                                           : r->auth == SRV_AUTH_DEVICE ? "device"
                                           : r->auth == SRV_AUTH_DDI    ? "ddi"
                                                                        : "none",
                                           "scope",
                                           r->auth == SRV_AUTH_TOKEN ? srv_scope_name(r->scope)
                                                                     : NULL,
                                           "max_body", (json_int_t)r->max_body, "summary",
                                           r->summary));
    }
    return a;
}
