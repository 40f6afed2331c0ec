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

    /* Devices. d->tags is sorted and unique, attributes and installed are never NULL. */
    enum ot_err (*device_create)(struct srv_store *s, const struct srv_device *d, int64_t *ret_id,
                                 struct ot_diag *diag);
    enum ot_err (*device_get)(struct srv_store *s, int64_t id, struct srv_device *ret,
                              struct ot_diag *diag);
    enum ot_err (*device_by_pubkey)(struct srv_store *s,
                                    const uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN],
                                    struct srv_device *ret, struct ot_diag *diag);
    enum ot_err (*device_set_status)(struct srv_store *s, int64_t id,
                                     enum srv_device_status status, int64_t now,
                                     struct ot_diag *diag);
    enum ot_err (*device_set_installed)(struct srv_store *s, int64_t id, const char *device_type,
                                        const char *installed, int64_t now, struct ot_diag *diag);
    enum ot_err (*device_set_attributes)(struct srv_store *s, int64_t id, const char *attributes,
                                         int64_t now, struct ot_diag *diag);
    /* tags: sorted and unique */
    enum ot_err (*device_set_tags)(struct srv_store *s, int64_t id, const char *const *tags,
                                   size_t ntags, int64_t now, struct ot_diag *diag);
    enum ot_err (*device_touch)(struct srv_store *s, const int64_t *ids, const int64_t *at,
                                size_t n, struct ot_diag *diag);
    enum ot_err (*device_list)(struct srv_store *s, const struct srv_device_filter *f,
                               struct srv_device **ret, size_t *ret_n, struct ot_diag *diag);
    enum ot_err (*device_ids_by_tag)(struct srv_store *s, const char *tag, int64_t **ret,
                                     size_t *ret_n, struct ot_diag *diag);

    /* Artifacts. */
    enum ot_err (*artifact_create)(struct srv_store *s, const struct srv_artifact *a,
                                   int64_t *ret_id, struct ot_diag *d);
    enum ot_err (*artifact_get)(struct srv_store *s, int64_t id, struct srv_artifact *ret,
                                struct ot_diag *d);
    enum ot_err (*artifact_by_sha256)(struct srv_store *s, const char *sha256_hex,
                                      struct srv_artifact *ret, struct ot_diag *d);
    enum ot_err (*artifact_list)(struct srv_store *s, int64_t after_id, size_t limit,
                                 struct srv_artifact **ret, size_t *ret_n, struct ot_diag *d);
    enum ot_err (*artifact_delete)(struct srv_store *s, int64_t id, struct ot_diag *d);

    /* Deployment templates. create: every field checked, t->channel never NULL. list: channel
     * NULL for all of them. */
    enum ot_err (*template_create)(struct srv_store *s, const struct srv_template *t,
                                   int64_t *ret_id, struct ot_diag *d);
    enum ot_err (*template_get)(struct srv_store *s, int64_t id, struct srv_template *ret,
                                struct ot_diag *d);
    enum ot_err (*template_list)(struct srv_store *s, const char *channel, int64_t after_id,
                                 size_t limit, struct srv_template **ret, size_t *ret_n,
                                 struct ot_diag *d);
    enum ot_err (*template_set_enabled)(struct srv_store *s, int64_t id, bool enabled,
                                        struct ot_diag *d);
    enum ot_err (*template_delete)(struct srv_store *s, int64_t id, struct ot_diag *d);

    /* Deployments. create: dep->status, finished_at and ndevices are already what the row gets;
     * skipped is never NULL, skip_message never NULL, the ids are unique. seqs NULL: every row
     * gets seq 0; otherwise a permutation of 1..ndevices. rollout NULL: no rollout row; otherwise
     * its policy and reason are set and checked, and its deployment_id is ignored (the new id). */
    enum ot_err (*deployment_create)(struct srv_store *s, const struct srv_deployment *dep,
                                     const int64_t *device_ids, const bool *skipped,
                                     const int64_t *seqs, size_t ndevices,
                                     const char *skip_message, const struct srv_rollout *rollout,
                                     int64_t *ret_id, struct ot_diag *d);
    enum ot_err (*deployment_get)(struct srv_store *s, int64_t id, struct srv_deployment *ret,
                                  struct ot_diag *d);
    enum ot_err (*deployment_list)(struct srv_store *s, enum srv_deployment_status status,
                                   int64_t before_id, size_t limit, struct srv_deployment **ret,
                                   size_t *ret_n, struct ot_diag *d);
    enum ot_err (*deployment_rollup)(struct srv_store *s, int64_t id,
                                     uint64_t counts[SRV_DD__MAX], struct ot_diag *d);
    enum ot_err (*deployment_devices)(struct srv_store *s, int64_t id, int64_t after_device_id,
                                      size_t limit, struct srv_dd **ret, size_t *ret_n,
                                      struct ot_diag *d);
    enum ot_err (*deployment_cancel)(struct srv_store *s, int64_t id, int64_t now,
                                     struct ot_diag *d);
    enum ot_err (*device_next)(struct srv_store *s, int64_t device_id, struct srv_dd *ret,
                               struct ot_diag *d);
    enum ot_err (*dd_get)(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                          struct srv_dd *ret, struct ot_diag *d);
    /* srv_store_dd_report_retry; message never NULL. A retry's row message comes from
     * srv__store_retry_message, and *ret_current is then PENDING (what the row is now). */
    enum ot_err (*dd_report)(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                             enum srv_dd_status status, int progress, const char *message,
                             const char *log, int64_t at, uint32_t retries, bool *ret_applied,
                             bool *ret_retried, enum srv_dd_status *ret_current,
                             struct ot_diag *d);
    /* skip_message never NULL; *ret_seq written when the row was added. */
    enum ot_err (*deployment_add_device)(struct srv_store *s, int64_t deployment_id,
                                         int64_t device_id, bool skipped,
                                         const char *skip_message, int64_t at, bool *ret_added,
                                         int64_t *ret_seq, struct ot_diag *d);
    enum ot_err (*dd_skip)(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                           const char *message, int64_t at, struct ot_diag *d);
    enum ot_err (*dd_events)(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                             int64_t after_id, size_t limit, struct srv_dd_event **ret,
                             size_t *ret_n, struct ot_diag *d);
    enum ot_err (*deployments_generation)(struct srv_store *s, int64_t *ret, struct ot_diag *d);

    /* Rollouts. r->reason, kind and message are never NULL where the store.h call takes them
     * (kind NULL in rollout_update: no event). approve writes *ret_count on OT_OK and on
     * OT_ERR_EXISTS. */
    enum ot_err (*rollout_get)(struct srv_store *s, int64_t deployment_id, struct srv_rollout *ret,
                               struct ot_diag *d);
    enum ot_err (*rollout_list_active)(struct srv_store *s, struct srv_rollout **ret,
                                       size_t *ret_n, struct ot_diag *d);
    enum ot_err (*rollout_update)(struct srv_store *s, const struct srv_rollout *r,
                                  const char *kind, const char *message, struct ot_diag *d);
    enum ot_err (*rollout_event_add)(struct srv_store *s, int64_t deployment_id, int64_t at,
                                     const char *kind, const char *message, struct ot_diag *d);
    enum ot_err (*rollout_events)(struct srv_store *s, int64_t deployment_id, int64_t after_id,
                                  size_t limit, struct srv_rollout_event **ret, size_t *ret_n,
                                  struct ot_diag *d);
    enum ot_err (*rollout_approve)(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                   const char *approver, int64_t at, size_t *ret_count,
                                   struct ot_diag *d);
    enum ot_err (*rollout_approvals)(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                     size_t *ret_count, struct ot_diag *d);
    enum ot_err (*rollout_counts)(struct srv_store *s, int64_t deployment_id, int64_t seq_from,
                                  int64_t seq_to, uint64_t counts[SRV_DD__MAX], struct ot_diag *d);
    enum ot_err (*rollout_timeout)(struct srv_store *s, int64_t deployment_id, int64_t released,
                                   int64_t before, int64_t now, const char *message,
                                   size_t *ret_n, struct ot_diag *d);
};

struct srv_store {
    const struct srv_store_ops *ops;
};

/* The back ends write these numbers into their SQL (CHECK constraints, "status < 6" ...). */
_Static_assert(SRV_DEVICE_PENDING == 1 && SRV_DEVICE_ACCEPTED == 2 &&
                   SRV_DEVICE_DECOMMISSIONED == 5,
               "device status numbers are in the schema");
_Static_assert(SRV_DEPLOYMENT_ACTIVE == 1 && SRV_DEPLOYMENT_FINISHED == 2 &&
                   SRV_DEPLOYMENT_CANCELLED == 3,
               "deployment status numbers are in the schema");
_Static_assert(SRV_DD_PENDING == 1 && SRV_DD_DOWNLOADING == 2 && SRV_DD_SUCCESS == 6 &&
                   SRV_DD_ROLLED_BACK == 8 && SRV_DD_CANCELLED == 9 && SRV_DD_SKIPPED == 10 &&
                   SRV_DD_WAITING == 11 && SRV_DD__MAX == 12,
               "device-deployment status numbers are in the schema");
_Static_assert(SRV_ROLLOUT_WAITING_APPROVAL == 1 && SRV_ROLLOUT_ABORTED == 6 &&
                   SRV_ROLLOUT__MAX == 7,
               "rollout state numbers are in the schema");

/* Tags travel between the database and the back ends as one text, separated by single spaces
 * (the tag rule has no blanks): this splits one into a sorted array of copies. NULL or "" is no
 * tag. Both back ends use it; it lives in store.c. */
enum ot_err srv__store_split_tags(const char *joined, char ***ret, size_t *ret_n,
                                  struct ot_diag *d) OT_MUST_CHECK;

/* The message a retry leaves in the row (srv_store_dd_report_retry): "retry <attempt> of
 * <retries> after <status>: <message>", cut to SRV_DD_MESSAGE_MAX bytes on a character boundary.
 * out has SRV_DD_MESSAGE_MAX + 1 bytes. Both back ends use it; it lives in store.c. */
void srv__store_retry_message(char *out, uint32_t attempt, uint32_t retries,
                              enum srv_dd_status status, const char *message);

/* The SQLite back end (store_sqlite.c). */
extern const struct srv_store_ops srv__store_sqlite_ops;
/* The PostgreSQL back end (store_pg.c); gets the whole "postgresql://" URL. */
extern const struct srv_store_ops srv__store_pg_ops;

#endif
