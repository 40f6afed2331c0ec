/* What otterd's handlers share: the store, the data directory, the clock, the device-side
 * settings and caches. One per process. */
#ifndef OTTERD_APP_H
#define OTTERD_APP_H

#include <stdatomic.h>

#include "http.h"
#include "store.h"

struct srv_fleet;
struct srv_rollouts;

#define SRV_DDI_TENANTS_MAX 16
#define SRV_DDI_TENANT_MAX 64 /* bytes of a tenant name: [A-Za-z0-9_-] */

/* One hawkBit DDI tenant and how its controllers may authenticate (configuration keys
 * ddi_target_token, ddi_gateway_token, ddi_trust_controller_header, and their per-tenant
 * overrides ddi_*.<TENANT>; docs/hawkbit.md). */
struct srv_ddi_tenant {
    const char *name;               /* as configured; paths match it case-insensitively */
    bool target_token;              /* "Authorization: TargetToken <per-device token>" */
    const char *gateway_token;      /* "GatewayToken <this>": any controller; NULL or "": off */
    bool trust_controller_header;   /* a TLS proxy's verified X-Controller-Id */
};
struct srv_groups;

struct srv_app {
    struct srv_store *store;
    const char *data_dir;
    int64_t (*now)(void);           /* Unix seconds; injectable for tests of expiry */
    /* the device API (configuration keys of the same names, see main.c) */
    uint32_t poll_interval;         /* seconds a device waits between check-ins */
    uint32_t poll_jitter;           /* +- seconds, spreads a fleet's polls */
    uint32_t device_token_ttl;      /* seconds a device token is valid */
    uint32_t pending_retry;         /* seconds a pending device waits before asking again */
    uint64_t max_artifact_size;     /* bytes of one upload */
    uint8_t device_token_key[32];   /* HMAC key of device tokens (meta "device_token_key") */
    struct srv_fleet *fleet;        /* device cache and batched last-seen writes (fleet.c) */
    struct srv_rollouts *rollouts;  /* staged rollouts: the engine and released counts */
    struct srv_groups *groups;      /* continuous deployments to dynamic groups (groups.c) */
    /* hawkBit DDI (api_ddi.c, docs/hawkbit.md): the tenants served (configuration key
     * ddi_tenant, 1..SRV_DDI_TENANTS_MAX), each with its switches; others get 404 */
    const struct srv_ddi_tenant *ddi_tenants;
    size_t ddi_ntenants;
};

/* ---- the route table (api.c) ---- */
extern const struct srv_route srv_routes[];
extern const size_t srv_nroutes;
/* The route table as JSON ([{method, path, auth, scope, max_body, summary}]) for `otterd --routes`, the docs
 * and the test that walks every route without and with the wrong token. */
json_t *srv_routes_json(void);

/* Handlers, one file per area. */
void srv_api_artifact_upload(void *app, struct srv_request *req);
bool srv_api_artifact_upload_body(void *app, struct srv_request *req, const uint8_t *data,
                                  size_t n);
void srv_api_artifact_list(void *app, struct srv_request *req);
void srv_api_artifact_show(void *app, struct srv_request *req);
void srv_api_artifact_download(void *app, struct srv_request *req);
void srv_api_artifact_delete(void *app, struct srv_request *req);
void srv_api_trust_get(void *app, struct srv_request *req);
void srv_api_trust_put(void *app, struct srv_request *req);
void srv_api_device_list(void *app, struct srv_request *req);
void srv_api_device_show(void *app, struct srv_request *req);
void srv_api_device_preauthorize(void *app, struct srv_request *req);
void srv_api_device_accept(void *app, struct srv_request *req);
void srv_api_device_reject(void *app, struct srv_request *req);
void srv_api_device_decommission(void *app, struct srv_request *req);
void srv_api_device_tags(void *app, struct srv_request *req);
void srv_api_deployment_create(void *app, struct srv_request *req);
/* Creates a deployment from a POST /api/v1/deployments body on behalf of principal (also used by
 * deployment templates); *ret_id its id. Errors name the field. */
enum ot_err srv_deployment_create_json(struct srv_app *app, const json_t *body,
                                       const char *principal, int64_t *ret_id, struct ot_diag *d)
    OT_MUST_CHECK;
void srv_api_deployment_list(void *app, struct srv_request *req);
void srv_api_template_create(void *app, struct srv_request *req);
void srv_api_template_list(void *app, struct srv_request *req);
void srv_api_template_show(void *app, struct srv_request *req);
void srv_api_template_delete(void *app, struct srv_request *req);
void srv_api_template_enable(void *app, struct srv_request *req);
void srv_api_template_disable(void *app, struct srv_request *req);
void srv_api_deployment_show(void *app, struct srv_request *req);
void srv_api_deployment_devices(void *app, struct srv_request *req);
void srv_api_deployment_device(void *app, struct srv_request *req);
void srv_api_deployment_cancel(void *app, struct srv_request *req);
void srv_api_deployment_pause(void *app, struct srv_request *req);
void srv_api_deployment_resume(void *app, struct srv_request *req);
void srv_api_deployment_approve(void *app, struct srv_request *req);
void srv_api_deployment_decisions(void *app, struct srv_request *req);
void srv_api_deployment_export(void *app, struct srv_request *req);
void srv_api_device_versions(void *app, struct srv_request *req);
/* the device API (api_device.c) */
void srv_dev_auth(void *app, struct srv_request *req);
void srv_dev_checkin(void *app, struct srv_request *req);
void srv_dev_download(void *app, struct srv_request *req);
void srv_dev_status(void *app, struct srv_request *req);
void srv_dev_inventory(void *app, struct srv_request *req);
/* hawkBit DDI (api_ddi.c) */
void srv_ddi_poll(void *app, struct srv_request *req);
void srv_ddi_deployment(void *app, struct srv_request *req);
void srv_ddi_feedback(void *app, struct srv_request *req);
void srv_ddi_config_data(void *app, struct srv_request *req);
void srv_ddi_installed(void *app, struct srv_request *req);
void srv_ddi_artifact(void *app, struct srv_request *req);
void srv_ddi_cancel(void *app, struct srv_request *req);
void srv_ddi_cancel_feedback(void *app, struct srv_request *req);
void srv_api_device_ddi_register(void *app, struct srv_request *req);

/* DDI controller ids: 1..SRV_DDI_ID_MAX bytes of [A-Za-z0-9._:-] (they are path segments and meta
 * keys). */
#define SRV_DDI_ID_MAX 128
bool srv_ddi_id_valid(const char *id);
/* The device id of a DDI controller (meta "ddi.device.<controllerId>"), in any tenant; 0 when
 * unknown. Controller ids are unique across tenants. */
int64_t srv_ddi_device(struct srv_app *app, const char *controller_id);
/* The configured tenant of that name (case-insensitive), or NULL. */
const struct srv_ddi_tenant *srv_ddi_tenant_find(const struct srv_app *app, const char *name);
/* Registers a DDI controller in tenant (NULL: the first) as an accepted device, or finds it:
 * identity {"controller_id": ..., "tenant": ...}, public key SHA-256("otter-ddi:" + controller
 * id). OT_ERR_EXISTS when the controller belongs to another tenant. */
enum ot_err srv_ddi_register(struct srv_app *app, const struct srv_ddi_tenant *tenant,
                             const char *controller_id, const char *device_type,
                             const char *principal, int64_t *ret_id, bool *ret_created,
                             struct ot_diag *d) OT_MUST_CHECK;
/* A foreign artifact (.swu, RAUC bundle) carries {"foreign": "swu"|"raucb", ...} as its
 * manifest; otter-agent devices never get one, DDI devices get nothing else. */
bool srv_manifest_is_foreign(const char *manifest);

/* Continuous deployment (api_templates.c): creates a deployment from every enabled template of
 * the artifact's channel; returns what happened, [{"template":1,"deployment_id":9} |
 * {"template":2,"error":"..."}] (each also in the audit log). */
json_t *srv_templates_fire(struct srv_app *app, const struct srv_artifact *a);

/* "pending", "accepted", ... (api_devices.c); "?" out of range. */
const char *srv_device_status_name(enum srv_device_status s);
/* Whether the device type is in an artifact's device_types (JSON array text). */
bool srv_device_type_listed(const char *device_types_json, const char *type);
/* A device's status changed: every otterd instance's device cache must forget it (fleet.h). */
void srv_device_changed(struct srv_app *app, int64_t id);

/* Shared by the handlers (api.c). */
/* Records a management action in the audit log (takes detail); a failure is logged, never hidden. */
void srv_audit(struct srv_app *app, struct srv_request *req, const char *action,
               const char *object, json_t *detail);
/* A positive decimal id from a path parameter, or 0. */
int64_t srv_param_id(struct srv_request *req, const char *name);
/* A numeric query argument within [min, max]; absent leaves *ret. OT_ERR_FORMAT otherwise. */
enum ot_err srv_query_u64(struct srv_request *req, const char *name, uint64_t min, uint64_t max,
                          uint64_t *ret, struct ot_diag *d) OT_MUST_CHECK;
/* JSON text from the store (an object or array it wrote) as a jansson value; null if damaged. */
json_t *srv_json_text(const char *text);

/* ---- API tokens and authentication (auth.c) ---- */

/* Token text: "otr_" followed by 43 base64url characters (32 random bytes). Only its SHA-256 is
 * stored; the text is shown once, when created. */
#define SRV_TOKEN_TEXT_MAX 64
enum ot_err srv_token_generate(char text[SRV_TOKEN_TEXT_MAX], uint8_t hash[SRV_TOKEN_HASH_LEN])
    OT_MUST_CHECK;
void srv_token_hash(const char *text, uint8_t hash[SRV_TOKEN_HASH_LEN]);
/* Scope names ("admin", "tokens", "artifacts:read", ...) to bits and back. */
enum ot_err srv_scopes_parse(const json_t *names, uint32_t *ret, struct ot_diag *d) OT_MUST_CHECK;
json_t *srv_scopes_json(uint32_t scopes);
const char *srv_scope_name(uint32_t scope_bit);
/* An API token's text checked as a credential (exists, not revoked, not expired, holds scope or
 * admin). Used for enrollment tokens in device authentication. */
bool srv_token_text_allows(struct srv_app *app, const char *text, uint32_t scope);

/* The srv_auth_fn for http.c. SRV_AUTH_TOKEN: "Authorization: Bearer <token>", token known, not
 * revoked, not expired, and holding the route's scope (or admin); 401 otherwise, 403 for a
 * missing scope. SRV_AUTH_DEVICE: a valid device token of a device that is accepted now; 401
 * otherwise. */
int srv_auth_check(void *app, struct srv_request *req, const struct srv_route *route, char *msg,
                   size_t msg_len);
/* SRV_AUTH_DDI (api_ddi.c): tenant (404 for one not configured), then TargetToken, GatewayToken
 * or the proxy's X-Controller-Id as that tenant allows, for an accepted device that is the path's
 * controller and belongs to that tenant. */
int srv_ddi_auth(struct srv_app *app, struct srv_request *req, char *msg, size_t msg_len);

/* On a store that has never had one, creates the first admin token and writes its text to ret
 * (the caller prints it once). OT_ERR_EXISTS when the store was bootstrapped before. */
enum ot_err srv_auth_bootstrap_admin(struct srv_app *app, char ret[SRV_TOKEN_TEXT_MAX],
                                     struct ot_diag *d) OT_MUST_CHECK;

/* ---- device tokens (devtoken.c) ---- */

/* "otd_" + base64url(version 1 | device id | expiry | HMAC-SHA256): checked without the database;
 * revocation is the device's status, checked per request in the fleet cache. */
#define SRV_DEVICE_TOKEN_MAX 96
/* Loads the HMAC key from the store's meta, creating it on first start. */
enum ot_err srv_devtoken_init(struct srv_app *app, struct ot_diag *d) OT_MUST_CHECK;
void srv_devtoken_issue(const struct srv_app *app, int64_t device_id, int64_t expires_at,
                        char out[SRV_DEVICE_TOKEN_MAX]);
/* The device id of a valid, unexpired token, or 0. */
int64_t srv_devtoken_check(const struct srv_app *app, const char *text, int64_t now);

#endif
