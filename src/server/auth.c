/* API tokens and request authentication.
 *
 * A token is 32 random bytes, shown once as "otr_" + base64url. Only its SHA-256 is stored: the
 * token has 256 bits of entropy, so a plain hash is enough (argon2 is for low-entropy passwords),
 * and lookup by hash keeps every request to one indexed query. Nothing is cached: a revoked token
 * is refused by the very next request. */
#include <sodium.h>

#include "app.h"
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
                               "deployments:read|write)", s ? "'" : "", s ? s : "(not a string)",
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

/* The token text of "Authorization: Bearer <token>", or NULL. The scheme is case-insensitive
 * (RFC 7235); the token must look like one of ours before it costs a database query. */
static const char *bearer_token(struct srv_request *req)
{
    const char *h = srv_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    if (n <= strlen(TOKEN_PREFIX) || n >= SRV_TOKEN_TEXT_MAX ||
        strncmp(h, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) != 0)
        return NULL;
    return h;
}

/* Looks up the request's token; fills why (for the 401 message) when it is not usable. */
static bool current_token(struct srv_app *app, struct srv_request *req, struct srv_token *ret,
                          char *why, size_t why_len)
{
    const char *text = bearer_token(req);
    if (!text) {
        snprintf(why, why_len, "this route needs 'Authorization: Bearer <API token>'");
        return false;
    }
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

int srv_auth_check(void *app, struct srv_request *req, const struct srv_route *route, char *msg,
                   size_t msg_len)
{
    struct srv_token t;
    if (route->auth == SRV_AUTH_NONE)
        return 0;
    if (!current_token(app, req, &t, msg, msg_len))
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
