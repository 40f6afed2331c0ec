/* What otterd's handlers share: the store, the data directory, the clock. One per process. */
#ifndef OTTERD_APP_H
#define OTTERD_APP_H

#include "http.h"
#include "store.h"

struct srv_app {
    struct srv_store *store;
    const char *data_dir;
    int64_t (*now)(void);           /* Unix seconds; injectable for tests of expiry */
};

/* ---- the management API's route table (api.c) ---- */
extern const struct srv_route srv_routes[];
extern const size_t srv_nroutes;
/* The route table as JSON ([{method, path, auth, scope, max_body, summary}]) for `otterd --routes`, the docs
 * and the test that walks every route without and with the wrong token. */
json_t *srv_routes_json(void);

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

/* The srv_auth_fn for http.c: "Authorization: Bearer <token>", token known, not revoked, not
 * expired, and holding the route's scope (or admin). 401 otherwise, 403 for a missing scope. */
int srv_auth_check(void *app, struct srv_request *req, const struct srv_route *route, char *msg,
                   size_t msg_len);

/* On a store that has never had one, creates the first admin token and writes its text to ret
 * (the caller prints it once). OT_ERR_EXISTS when the store was bootstrapped before. */
enum ot_err srv_auth_bootstrap_admin(struct srv_app *app, char ret[SRV_TOKEN_TEXT_MAX],
                                     struct ot_diag *d) OT_MUST_CHECK;

#endif
