/* otterd's persistent state behind one interface, with two back ends: SQLite (store_sqlite.c, the
 * default, embedded) and PostgreSQL (store_pg.c, for several otterd instances). One contract test
 * suite (tests/unit/test_store.c) runs against both; the test run starts a real PostgreSQL.
 *
 * Rules every back end keeps:
 *  - a call that returns OT_OK has committed its writes durably (SQLite: WAL, synchronous=FULL);
 *  - the store is safe to call from several threads at once (libmicrohttpd's thread pool);
 *  - schema changes are versioned migrations, applied in order at open, each in a transaction;
 *  - strings are copied in and out: the caller owns what it passes and what it gets back. */
#ifndef OTTERD_STORE_H
#define OTTERD_STORE_H

#include "otter/err.h"

struct srv_store;

#define SRV_TOKEN_NAME_MAX 64        /* bytes, including NUL */
#define SRV_TOKEN_HASH_LEN 32        /* SHA-256 of the token text */
/* Limits every back end enforces at the boundary (OT_ERR_LIMIT past them), so callers can check
 * early with the same numbers. */
#define SRV_META_KEY_MAX 255         /* bytes */
#define SRV_META_VALUE_MAX 65536     /* bytes */
#define SRV_AUDIT_FIELD_MAX 255      /* bytes, for actor, action and object */
#define SRV_AUDIT_DETAIL_MAX 65536   /* bytes */
#define SRV_AUDIT_LIST_MAX 1000      /* entries per srv_store_audit_list call */

/* What an API token may do. A route requires one scope; SRV_SCOPE_ADMIN allows everything. */
enum srv_scope {
    SRV_SCOPE_ADMIN = 1u << 0,
    SRV_SCOPE_TOKENS = 1u << 1,          /* create, list, revoke tokens */
    SRV_SCOPE_AUDIT_READ = 1u << 2,
    SRV_SCOPE_ARTIFACTS_READ = 1u << 3,
    SRV_SCOPE_ARTIFACTS_WRITE = 1u << 4,
    SRV_SCOPE_DEVICES_READ = 1u << 5,
    SRV_SCOPE_DEVICES_WRITE = 1u << 6,
    SRV_SCOPE_DEPLOYMENTS_READ = 1u << 7,
    SRV_SCOPE_DEPLOYMENTS_WRITE = 1u << 8,
};
#define SRV_SCOPE_ALL 0x1ffu

struct srv_token {
    int64_t id;                          /* assigned by the store */
    char name[SRV_TOKEN_NAME_MAX];
    uint32_t scopes;                     /* enum srv_scope bits */
    int64_t created_at;                  /* Unix seconds */
    int64_t expires_at;                  /* Unix seconds; 0 = never */
    bool revoked;
    uint8_t hash[SRV_TOKEN_HASH_LEN];    /* the token itself is never stored */
};

struct srv_audit {
    int64_t id;                          /* increasing */
    int64_t at;                          /* Unix seconds */
    char *actor;                         /* "token:3 (ci)", owned */
    char *action;                        /* "token.create", owned */
    char *object;                        /* "token:7", owned */
    char *detail;                        /* JSON text, owned, may be NULL */
};

/* Opens (creating if needed) the store named by url and applies pending migrations:
 *   "sqlite:/var/lib/otter/otter.db"  (or a plain path)
 *   "postgresql://user@host/db", "postgres://..." (libpq connection URIs; messages never repeat
 *   the URL, which may hold a password) */
enum ot_err srv_store_open(const char *url, struct srv_store **ret, struct ot_diag *d)
    OT_MUST_CHECK;
void srv_store_close(struct srv_store *s);
/* The schema version after migrations (the number of the last one applied). */
int srv_store_schema_version(struct srv_store *s);

/* Small key/value settings ("admin_token_created" ...). get: OT_ERR_NOENT when absent; *ret is
 * malloc'd. */
enum ot_err srv_store_meta_get(struct srv_store *s, const char *key, char **ret, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err srv_store_meta_set(struct srv_store *s, const char *key, const char *value,
                               struct ot_diag *d) OT_MUST_CHECK;

/* API tokens. create stores t as given (created_at too: the caller's clock) and assigns t->id;
 * OT_ERR_INVALID unless the name is 1..63 printable ASCII bytes, scopes are non-zero and known, and
 * the times are not negative; OT_ERR_EXISTS when a token with this hash exists. by_hash:
 * OT_ERR_NOENT when no token has this hash (revoked and expired tokens are returned, the caller
 * decides). revoke: OT_ERR_NOENT for an unknown id; revoking twice is fine. */
enum ot_err srv_store_token_create(struct srv_store *s, struct srv_token *t, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err srv_store_token_by_hash(struct srv_store *s, const uint8_t hash[SRV_TOKEN_HASH_LEN],
                                    struct srv_token *ret, struct ot_diag *d) OT_MUST_CHECK;
/* All tokens, oldest first; *ret malloc'd array (free it). */
enum ot_err srv_store_token_list(struct srv_store *s, struct srv_token **ret, size_t *ret_n,
                                 struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_token_revoke(struct srv_store *s, int64_t id, struct ot_diag *d)
    OT_MUST_CHECK;

/* Audit log: every management action, who/what/when; add stamps it with time(NULL). list: entries
 * with id > after_id, oldest first, at most limit (1..SRV_AUDIT_LIST_MAX, OT_ERR_RANGE otherwise);
 * free with srv_audit_list_free. */
enum ot_err srv_store_audit_add(struct srv_store *s, const char *actor, const char *action,
                                const char *object, const char *detail, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err srv_store_audit_list(struct srv_store *s, int64_t after_id, size_t limit,
                                 struct srv_audit **ret, size_t *ret_n, struct ot_diag *d)
    OT_MUST_CHECK;
void srv_audit_list_free(struct srv_audit *list, size_t n);

#endif
