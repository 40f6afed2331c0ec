/* API tokens and request authentication.
 *
 * A token is 32 random bytes, shown once as "otr_" + base64url. Only its SHA-256 is stored: the
 * token has 256 bits of entropy, so a plain hash is enough (argon2 is for low-entropy passwords),
 * and lookup by hash keeps every request to one indexed query. Nothing is cached: a revoked token
 * is refused by the very next request. */
#include <sodium.h>

#include "app.h"
#include "fleet.h"
#include "otter/hash.h"
#include "otter/log.h"

#define TOKEN_PREFIX "otr_"
#define TOKEN_RAW_LEN 32

static const struct {
    const char *name;
    uint32_t bit;
} scope_table[] = {
    {"admin", SRV_SCOPE_ADMIN},
    {"tokens", SRV_SCOPE_TOKENS},
    {"audit:read", SRV_SCOPE_AUDIT_READ},
    {"artifacts:read", SRV_SCOPE_ARTIFACTS_READ},
    {"artifacts:write", SRV_SCOPE_ARTIFACTS_WRITE},
    {"devices:read", SRV_SCOPE_DEVICES_READ},
    {"devices:write", SRV_SCOPE_DEVICES_WRITE},
    {"deployments:read", SRV_SCOPE_DEPLOYMENTS_READ},
    {"deployments:write", SRV_SCOPE_DEPLOYMENTS_WRITE},
    {"devices:enroll", SRV_SCOPE_DEVICES_ENROLL},
};

const char *srv_scope_name(uint32_t scope_bit)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(scope_table); i++)
        if (scope_table[i].bit == scope_bit)
            return scope_table[i].name;
    return "?";
}

enum ot_err srv_scopes_parse(const json_t *names, uint32_t *ret, struct ot_diag *d)
{
    if (!json_is_array(names) || json_array_size(names) == 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "'scopes' must be a non-empty array of scope names");
    uint32_t bits = 0;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v) {
        const char *s = json_string_value(v);
        uint32_t bit = 0;
        for (size_t k = 0; s && k < OT_ARRAY_SIZE(scope_table) && !bit; k++)
            if (strcmp(s, scope_table[k].name) == 0)
                bit = scope_table[k].bit;
        if (!bit)
            return ot_diag_set(d, OT_ERR_FORMAT, "unknown scope %s%.40s%s (known: admin, tokens, "
                               "audit:read, artifacts:read|write, devices:read|write, "
                               "deployments:read|write, devices:enroll)", s ? "'" : "", s ? s : "(not a string)",
                               s ? "'" : "");
        bits |= bit;
    }
    *ret = bits;
    return OT_OK;
}

json_t *srv_scopes_json(uint32_t scopes)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < OT_ARRAY_SIZE(scope_table); i++)
        if (scopes & scope_table[i].bit)
            json_array_append_new(a, json_string(scope_table[i].name));
    return a;
}

void srv_token_hash(const char *text, uint8_t hash[SRV_TOKEN_HASH_LEN])
{
    if (ot_sha256_buf(text, strlen(text), hash) != OT_OK)
        randombytes_buf(hash, SRV_TOKEN_HASH_LEN); /* fails closed: matches no stored token */
}

enum ot_err srv_token_generate(char text[SRV_TOKEN_TEXT_MAX], uint8_t hash[SRV_TOKEN_HASH_LEN])
{
    if (sodium_init() < 0)
        return OT_ERR_CRYPTO;
    uint8_t raw[TOKEN_RAW_LEN];
    randombytes_buf(raw, sizeof(raw));
    size_t plen = strlen(TOKEN_PREFIX);
    memcpy(text, TOKEN_PREFIX, plen);
    sodium_bin2base64(text + plen, SRV_TOKEN_TEXT_MAX - plen, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    srv_token_hash(text, hash);
    return OT_OK;
}

/* The token of "Authorization: Bearer <token>" if it starts with prefix, or NULL. The scheme is
 * case-insensitive (RFC 7235); the token must look like one of ours before it costs any work. */
static const char *bearer_token(struct srv_request *req, const char *prefix, size_t max)
{
    const char *h = srv_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    if (n <= strlen(prefix) || n >= max || strncmp(h, prefix, strlen(prefix)) != 0)
        return NULL;
    return h;
}

/* Looks up an API token's text; fills why (for the 401 message) when it is not usable. */
static bool token_usable(struct srv_app *app, const char *text, struct srv_token *ret, char *why,
                         size_t why_len)
{
    uint8_t hash[SRV_TOKEN_HASH_LEN];
    srv_token_hash(text, hash);
    struct ot_diag d = {0};
    enum ot_err err = srv_store_token_by_hash(app->store, hash, ret, &d);
    if (err) {
        if (err != OT_ERR_NOENT)
            ot_log(OT_LOG_ERR, "token lookup failed: %s", d.msg);
        snprintf(why, why_len, "invalid API token");
        return false;
    }
    if (ret->revoked) {
        snprintf(why, why_len, "this API token was revoked");
        return false;
    }
    if (ret->expires_at && app->now() >= ret->expires_at) {
        snprintf(why, why_len, "this API token has expired");
        return false;
    }
    return true;
}

bool srv_token_text_allows(struct srv_app *app, const char *text, uint32_t scope)
{
    struct srv_token t;
    char why[64];
    if (strncmp(text, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) != 0 || strlen(text) >= SRV_TOKEN_TEXT_MAX)
        return false;
    return token_usable(app, text, &t, why, sizeof(why)) && (t.scopes & (SRV_SCOPE_ADMIN | scope));
}

static int token_auth(struct srv_app *app, struct srv_request *req,
                      const struct srv_route *route, char *msg, size_t msg_len)
{
    struct srv_token t;
    const char *text = bearer_token(req, TOKEN_PREFIX, SRV_TOKEN_TEXT_MAX);
    if (!text) {
        snprintf(msg, msg_len, "this route needs 'Authorization: Bearer <API token>'");
        return 401;
    }
    if (!token_usable(app, text, &t, msg, msg_len))
        return 401;
    if (!(t.scopes & (SRV_SCOPE_ADMIN | route->scope))) {
        snprintf(msg, msg_len, "this API token lacks the scope '%s'", srv_scope_name(route->scope));
        return 403;
    }
    char principal[SRV_TOKEN_NAME_MAX + 32];
    snprintf(principal, sizeof(principal), "token:%lld (%s)", (long long)t.id, t.name);
    srv_req_set_principal(req, principal);
    srv_req_set_scopes(req, t.scopes);
    return 0;
}

/* A device token, then the device's status now (the fleet cache): a device that was rejected or
 * decommissioned is refused on its next request, whatever its token says. */
static int device_auth(struct srv_app *app, struct srv_request *req, char *msg, size_t msg_len)
{
    const char *text = bearer_token(req, "otd_", SRV_DEVICE_TOKEN_MAX);
    int64_t now = app->now();
    int64_t id = text ? srv_devtoken_check(app, text, now) : 0;
    if (!id) {
        snprintf(msg, msg_len, "this route needs a valid device token: authenticate again "
                               "(POST /api/device/v1/auth)");
        return 401;
    }
    struct srv_fleet_dev dev;
    struct ot_diag d = {0};
    enum ot_err err = srv_fleet_get(app->fleet, id, now, &dev, &d);
    if (err == OT_ERR_NOENT || (!err && dev.status != SRV_DEVICE_ACCEPTED)) {
        snprintf(msg, msg_len, "this device is not accepted (any more)");
        return 401;
    }
    if (err) {
        ot_log(OT_LOG_ERR, "device %lld: %s", (long long)id, d.msg);
        snprintf(msg, msg_len, "the device registry is not available, try again later");
        return 503;
    }
    char principal[32];
    snprintf(principal, sizeof(principal), "device:%lld", (long long)id);
    srv_req_set_principal(req, principal);
    srv_req_set_device(req, id);
    return 0;
}

int srv_auth_check(void *app, struct srv_request *req, const struct srv_route *route, char *msg,
                   size_t msg_len)
{
    switch (route->auth) {
    case SRV_AUTH_NONE:
        return 0;
    case SRV_AUTH_TOKEN:
        return token_auth(app, req, route, msg, msg_len);
    case SRV_AUTH_DEVICE:
        return device_auth(app, req, msg, msg_len);
    case SRV_AUTH_DDI:
        return srv_ddi_auth(app, req, msg, msg_len);
    }
    return 401;
}

enum ot_err srv_auth_bootstrap_admin(struct srv_app *app, char ret[SRV_TOKEN_TEXT_MAX],
                                     struct ot_diag *d)
{
    _cleanup_free_ char *done = NULL;
    enum ot_err err = srv_store_meta_get(app->store, "admin_token_created", &done, d);
    if (err == OT_OK)
        return OT_ERR_EXISTS;
    if (err != OT_ERR_NOENT)
        return err;
    struct srv_token t = {.scopes = SRV_SCOPE_ADMIN, .created_at = app->now()};
    snprintf(t.name, sizeof(t.name), "admin");
    err = srv_token_generate(ret, t.hash);
    if (!err)
        err = srv_store_token_create(app->store, &t, d);
    if (!err)
        err = srv_store_meta_set(app->store, "admin_token_created", "1", d);
    if (!err) {
        char object[32];
        snprintf(object, sizeof(object), "token:%lld", (long long)t.id);
        err = srv_store_audit_add(app->store, "otterd", "token.create", object,
                                  "{\"name\":\"admin\",\"bootstrap\":true}", d);
    }
    if (err)
        sodium_memzero(ret, SRV_TOKEN_TEXT_MAX);
    return err;
}
