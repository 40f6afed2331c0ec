/* The back-end side of store.h. store.c parses the URL, checks every argument against the limits
 * in store.h and then calls the back end through its ops table, so a back end only ever sees valid
 * input and a new one is one more table, with no change to the callers.
 *
 * A back end's store object starts with struct srv_store (its first member), so store.c can reach
 * the ops table without knowing the rest. */
#ifndef OTTERD_STORE_IMPL_H
#define OTTERD_STORE_IMPL_H

#include "store.h"

struct srv_store_ops {
    const char *name; /* "sqlite", for messages */
    /* target: what follows the URL prefix ("sqlite:" stripped) or the whole URL, per scheme */
    enum ot_err (*open)(const char *target, struct srv_store **ret, struct ot_diag *d);
    void (*close)(struct srv_store *s);
    int (*schema_version)(struct srv_store *s);
    enum ot_err (*meta_get)(struct srv_store *s, const char *key, char **ret, struct ot_diag *d);
    enum ot_err (*meta_set)(struct srv_store *s, const char *key, const char *value,
                            struct ot_diag *d);
    enum ot_err (*token_create)(struct srv_store *s, struct srv_token *t, struct ot_diag *d);
    enum ot_err (*token_by_hash)(struct srv_store *s, const uint8_t hash[SRV_TOKEN_HASH_LEN],
                                 struct srv_token *ret, struct ot_diag *d);
    enum ot_err (*token_list)(struct srv_store *s, struct srv_token **ret, size_t *ret_n,
                              struct ot_diag *d);
    enum ot_err (*token_revoke)(struct srv_store *s, int64_t id, struct ot_diag *d);
    enum ot_err (*audit_add)(struct srv_store *s, int64_t at, const char *actor,
                             const char *action, const char *object, const char *detail,
                             struct ot_diag *d);
    enum ot_err (*audit_list)(struct srv_store *s, int64_t after_id, size_t limit,
                              struct srv_audit **ret, size_t *ret_n, struct ot_diag *d);
};

struct srv_store {
    const struct srv_store_ops *ops;
};

/* The SQLite back end (store_sqlite.c). */
extern const struct srv_store_ops srv__store_sqlite_ops;
/* The PostgreSQL back end (store_pg.c); gets the whole "postgresql://" URL. */
extern const struct srv_store_ops srv__store_pg_ops;

#endif
