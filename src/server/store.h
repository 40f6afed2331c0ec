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

#include <stdbool.h>
#include <stdint.h>

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
    SRV_SCOPE_DEVICES_ENROLL = 1u << 9,  /* a fleet's enrollment token: new devices auto-accepted */
};
#define SRV_SCOPE_ALL 0x3ffu

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
/* Whether several otterd instances may share this store (PostgreSQL), so that what one of them
 * caches can be changed by another. */
bool srv_store_is_shared(const struct srv_store *s);
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

/* ---- devices --------------------------------------------------------------------------------- */

/* A device's standing with the server (docs/otterd.md, "Devices"). */
enum srv_device_status {
    SRV_DEVICE_PENDING = 1,     /* authenticated with an unknown key: waits for an operator */
    SRV_DEVICE_ACCEPTED,        /* may get tokens, check in, download, report */
    SRV_DEVICE_REJECTED,        /* refused; an operator may still accept it later */
    SRV_DEVICE_PREAUTHORIZED,   /* registered in advance: accepted on its first authentication */
    SRV_DEVICE_DECOMMISSIONED,  /* retired for good: never gets a token again */
};

#define SRV_DEVICE_PUBKEY_LEN 32      /* Ed25519 public key */
#define SRV_DEVICE_TYPE_MAX 64        /* bytes, including NUL */
#define SRV_DEVICE_IDENTITY_MAX 24576 /* bytes of the identity JSON text (16 wire entries fit) */
#define SRV_DEVICE_JSON_MAX 65536     /* bytes of the attributes / installed JSON texts */
#define SRV_TAG_MAX 64                /* bytes, including NUL; tags are [A-Za-z0-9._-]{1,63} */
/* The rule of tag and release channel names, [A-Za-z0-9._-]{1,63}, for callers that check before
 * the store does (an upload's channel, before its body streams in). */
bool srv_store_name_valid(const char *name);
#define SRV_DEVICE_TAGS_MAX 32        /* tags per device */
#define SRV_LIST_MAX 1000             /* rows per page of any list call */

struct srv_device {
    int64_t id;                                /* assigned by the store, never reused */
    uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN];     /* unique */
    char *identity;        /* owned: canonical JSON object text, e.g. {"mac":"02:00:00:00:00:01"} */
    enum srv_device_status status;
    char device_type[SRV_DEVICE_TYPE_MAX];     /* "" until the device says */
    int64_t created_at, updated_at;            /* Unix seconds */
    int64_t last_seen;                         /* Unix seconds; 0 = never */
    char *attributes;      /* owned: JSON object text of inventory attributes, "{}" when none */
    char *installed;       /* owned: JSON object text, {"rootfs":{"version":"1.2","sha256":"<hex>"}} */
    char **tags;           /* owned, sorted, unique */
    size_t ntags;
};
/* Frees the owned members and zeroes d; safe on a zeroed struct. */
void srv_device_release(struct srv_device *d);
void srv_device_list_free(struct srv_device *list, size_t n);

/* create: stores identity, pubkey, status, device_type, created_at (= updated_at), attributes
 * ("{}" if NULL), installed ("{}" if NULL), tags; last_seen starts at 0; assigns d->id (nothing
 * else in *d changes). OT_ERR_EXISTS when a device with this public key exists. OT_ERR_INVALID for
 * a bad status, a tag outside the rule above, or JSON texts that are not objects; OT_ERR_LIMIT past
 * the sizes above. */
enum ot_err srv_store_device_create(struct srv_store *s, struct srv_device *d, struct ot_diag *diag)
    OT_MUST_CHECK;
/* get/by_pubkey: OT_ERR_NOENT when absent; the caller releases *ret. */
enum ot_err srv_store_device_get(struct srv_store *s, int64_t id, struct srv_device *ret,
                                 struct ot_diag *diag) OT_MUST_CHECK;
enum ot_err srv_store_device_by_pubkey(struct srv_store *s,
                                       const uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN],
                                       struct srv_device *ret, struct ot_diag *diag) OT_MUST_CHECK;
/* Sets the status and updated_at = now. OT_ERR_NOENT for an unknown id. (Which transitions are
 * allowed is the caller's rule, not the store's.) */
enum ot_err srv_store_device_set_status(struct srv_store *s, int64_t id,
                                        enum srv_device_status status, int64_t now,
                                        struct ot_diag *diag) OT_MUST_CHECK;
/* What the device reported at check-in: its type and installed payloads (JSON object text).
 * updated_at = now. OT_ERR_NOENT for an unknown id. */
enum ot_err srv_store_device_set_installed(struct srv_store *s, int64_t id, const char *device_type,
                                           const char *installed, int64_t now,
                                           struct ot_diag *diag) OT_MUST_CHECK;
/* Replaces the attributes (JSON object text; the caller merges). updated_at = now. OT_ERR_NOENT for
 * an unknown id, here and in set_tags. */
enum ot_err srv_store_device_set_attributes(struct srv_store *s, int64_t id, const char *attributes,
                                            int64_t now, struct ot_diag *diag) OT_MUST_CHECK;
/* Replaces the tag set (duplicates are merged). updated_at = now. */
enum ot_err srv_store_device_set_tags(struct srv_store *s, int64_t id, const char *const *tags,
                                      size_t ntags, int64_t now, struct ot_diag *diag)
    OT_MUST_CHECK;
/* Last-seen times, batched: one transaction for all n (ids unknown by now are skipped). A time
 * never moves backwards (last_seen = max(last_seen, at)). n may be 0. */
enum ot_err srv_store_device_touch(struct srv_store *s, const int64_t *ids, const int64_t *at,
                                   size_t n, struct ot_diag *diag) OT_MUST_CHECK;

struct srv_device_filter {
    enum srv_device_status status;   /* 0: any */
    const char *tag;                 /* NULL: any */
    const char *device_type;         /* NULL: any */
    int64_t after_id;                /* pagination: ids > after_id, ascending */
    size_t limit;                    /* 1..SRV_LIST_MAX, OT_ERR_RANGE otherwise */
};
/* A page of devices matching every given filter, by id; free with srv_device_list_free. */
enum ot_err srv_store_device_list(struct srv_store *s, const struct srv_device_filter *f,
                                  struct srv_device **ret, size_t *ret_n, struct ot_diag *diag)
    OT_MUST_CHECK;
/* All ids of devices with this tag and status accepted, ascending; *ret malloc'd (NULL when none). */
enum ot_err srv_store_device_ids_by_tag(struct srv_store *s, const char *tag, int64_t **ret,
                                        size_t *ret_n, struct ot_diag *diag) OT_MUST_CHECK;

/* ---- artifacts ------------------------------------------------------------------------------- */

#define SRV_SHA256_HEX 65   /* 64 hex digits + NUL */
#define SRV_ARTIFACT_FIELD_MAX 255                /* bytes of name, version (OT_MANIFEST_STR_MAX) */
#define SRV_ARTIFACT_MANIFEST_MAX (1024 * 1024)   /* bytes of manifest (OT_MANIFEST_MAX) */
#define SRV_ARTIFACT_SIGNATURES_MAX (16 * 1024)   /* bytes of signatures (OT_SIG_FILE_MAX) */

struct srv_artifact {
    int64_t id;
    char *name, *version;           /* owned; (name, version) is unique */
    char sha256[SRV_SHA256_HEX];    /* of the whole artifact file, lower-case hex; unique; the blob */
    uint64_t size;                  /* bytes of the artifact file */
    char *manifest;                 /* owned: the exact manifest.json text */
    char *signatures;               /* owned: the exact manifest.sig text */
    char *device_types;             /* owned: JSON array text, e.g. ["gw-2","gw-3"] */
    int64_t created_at;
    char *uploaded_by;              /* owned: principal, "token:3 (ci)" */
    char *channel;                  /* owned: release channel ("beta"), "" none; a tag-like name
                                       [A-Za-z0-9._-]{1,63} (NULL on create means "") */
};
void srv_artifact_release(struct srv_artifact *a);
void srv_artifact_list_free(struct srv_artifact *list, size_t n);

/* create: assigns a->id. OT_ERR_EXISTS when the same sha256 or the same (name, version) is stored
 * (the message says which). OT_ERR_INVALID unless name, version and uploaded_by are non-empty,
 * sha256 is 64 lower-case hex digits, device_types is a JSON array and created_at is not negative;
 * OT_ERR_LIMIT past the sizes above (device_types: SRV_DEVICE_JSON_MAX, uploaded_by:
 * SRV_AUDIT_FIELD_MAX); OT_ERR_RANGE for a size above INT64_MAX. get/by_sha256: OT_ERR_NOENT when
 * absent; the caller releases *ret. */
enum ot_err srv_store_artifact_create(struct srv_store *s, struct srv_artifact *a,
                                      struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_artifact_get(struct srv_store *s, int64_t id, struct srv_artifact *ret,
                                   struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_artifact_by_sha256(struct srv_store *s, const char *sha256_hex,
                                         struct srv_artifact *ret, struct ot_diag *d) OT_MUST_CHECK;
/* A page by id ascending (ids > after_id, limit 1..SRV_LIST_MAX). */
enum ot_err srv_store_artifact_list(struct srv_store *s, int64_t after_id, size_t limit,
                                    struct srv_artifact **ret, size_t *ret_n, struct ot_diag *d)
    OT_MUST_CHECK;
/* Deletes the row. OT_ERR_NOENT for an unknown id; OT_ERR_EXISTS (with the deployment's id in the
 * message) while an active deployment uses it. Finished and cancelled deployments keep their
 * artifact's name and version and lose the link (artifact_id becomes 0). */
enum ot_err srv_store_artifact_delete(struct srv_store *s, int64_t id, struct ot_diag *d)
    OT_MUST_CHECK;

/* ---- deployment templates (continuous deployment) ---------------------------------------------- */

#define SRV_TEMPLATE_BODY_MAX (64 * 1024)   /* bytes of a template's JSON body */

/* A deployment template bound to a release channel: an artifact uploaded with that channel creates
 * a deployment from each enabled template of the channel. body is the JSON text of what the
 * deployment gets ({"target":{...},"policy":{...}}, otterd's API checks it, the store only wants
 * a JSON object). */
struct srv_template {
    int64_t id;
    char *name;                     /* owned: 1..SRV_DEPLOYMENT_NAME_MAX-1 printable ASCII, unique */
    char *channel;                  /* owned: [A-Za-z0-9._-]{1,63} */
    char *body;                     /* owned: JSON object text, <= SRV_TEMPLATE_BODY_MAX */
    bool enabled;
    int64_t created_at;
    char *created_by;               /* owned: principal */
};
void srv_template_release(struct srv_template *t);
void srv_template_list_free(struct srv_template *list, size_t n);
/* create: assigns t->id; OT_ERR_EXISTS for a name in use, OT_ERR_INVALID / OT_ERR_LIMIT for fields
 * outside their rules. get / delete: OT_ERR_NOENT when absent. list: by id ascending (ids >
 * after_id, limit 1..SRV_LIST_MAX); channel NULL: every template, else only the enabled ones of
 * that channel. set_enabled: OT_ERR_NOENT when absent. */
enum ot_err srv_store_template_create(struct srv_store *s, struct srv_template *t,
                                      struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_template_get(struct srv_store *s, int64_t id, struct srv_template *ret,
                                   struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_template_list(struct srv_store *s, const char *channel, int64_t after_id,
                                    size_t limit, struct srv_template **ret, size_t *ret_n,
                                    struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_template_set_enabled(struct srv_store *s, int64_t id, bool enabled,
                                           struct ot_diag *d) OT_MUST_CHECK;
enum ot_err srv_store_template_delete(struct srv_store *s, int64_t id, struct ot_diag *d)
    OT_MUST_CHECK;

/* ---- deployments ----------------------------------------------------------------------------- */

/* A staged rollout (otterd's rollout.c runs it): a deployment created with a policy. Its rows get
 * a position seq (1..n) in the order the policy releases devices; a device may start only once
 * seq <= released. Deployments without a rollout have seq 0 everywhere (all released). */
enum srv_rollout_state {
    SRV_ROLLOUT_WAITING_APPROVAL = 1, /* the current phase waits for approvals */
    SRV_ROLLOUT_SCHEDULED,            /* before the policy's start time */
    SRV_ROLLOUT_RUNNING,
    SRV_ROLLOUT_PAUSED,               /* by an operator, or by a failure threshold */
    SRV_ROLLOUT_DONE,                 /* every device released, or the end time passed */
    SRV_ROLLOUT_ABORTED,              /* a failure threshold (or the end time) cancelled the rest */
    SRV_ROLLOUT__MAX
};
#define SRV_ROLLOUT_POLICY_MAX (64 * 1024) /* bytes of the policy JSON */
#define SRV_ROLLOUT_REASON_MAX 512          /* bytes of a reason or decision message, with NUL */
#define SRV_ROLLOUT_KIND_MAX 32             /* bytes of a decision's kind, with NUL */

struct srv_rollout {
    int64_t deployment_id;
    char *policy;                     /* owned: the policy as JSON text (rollout.c's format) */
    enum srv_rollout_state state;
    int64_t phase;                    /* 0-based index of the current phase */
    int64_t released;                 /* rows with 1 <= seq <= released may start */
    int64_t phase_started_at;         /* Unix seconds: the current phase began (0: not yet) */
    int64_t phase_ready_at;           /* the phase met its success criteria, soak runs (0: no) */
    char *reason;                     /* owned: why it is in this state ("" none) */
    int64_t updated_at;
    int64_t base_failed, base_finished; /* at the last resume: the failure rate counts after */
};
void srv_rollout_release(struct srv_rollout *r);
void srv_rollout_list_free(struct srv_rollout *list, size_t n);

/* One decision of the rollout engine, with its reason. */
struct srv_rollout_event {
    int64_t id;
    int64_t at;
    char *kind;                       /* owned: "release", "advance", "pause", "abort", ... */
    char *message;                    /* owned */
};
void srv_rollout_event_list_free(struct srv_rollout_event *list, size_t n);

enum srv_deployment_status {
    SRV_DEPLOYMENT_ACTIVE = 1,
    SRV_DEPLOYMENT_FINISHED,     /* every device reached a final state */
    SRV_DEPLOYMENT_CANCELLED,
};

/* One device's state within a deployment. The device reports DOWNLOADING..ROLLED_BACK and
 * WAITING; PENDING is where every device starts; CANCELLED and SKIPPED are set by the server. */
enum srv_dd_status {
    SRV_DD_PENDING = 1,
    SRV_DD_DOWNLOADING,
    SRV_DD_INSTALLING,
    SRV_DD_REBOOTING,
    SRV_DD_VERIFYING,
    SRV_DD_SUCCESS,      /* final */
    SRV_DD_FAILURE,      /* final */
    SRV_DD_ROLLED_BACK,  /* final */
    SRV_DD_CANCELLED,    /* final: the deployment was cancelled before the device started */
    SRV_DD_SKIPPED,      /* final: not for this device (wrong device type); message says why */
    SRV_DD_WAITING,      /* downloaded and verified, waiting to install (a closed maintenance
                            window, or a soft update the device postponed); not final */
    SRV_DD__MAX
};
#define SRV_DD_IS_FINAL(st) ((st) >= SRV_DD_SUCCESS && (st) <= SRV_DD_SKIPPED)
#define SRV_DEPLOYMENT_NAME_MAX 128   /* bytes, including NUL */
#define SRV_DD_MESSAGE_MAX 1024       /* bytes of a status message */
#define SRV_DD_LOG_MAX 65536          /* bytes of log lines sent with one report */
#define SRV_DEPLOYMENT_TARGET_MAX (2 * 1024 * 1024) /* bytes of the target JSON text: 100,000 ids */

struct srv_deployment {
    int64_t id;
    char *name;                       /* owned */
    int64_t artifact_id;              /* 0 once the artifact was deleted */
    char *artifact_name, *artifact_version; /* owned copies, kept for history */
    char *target;                     /* owned: JSON text, {"devices":[1,2]} or {"tag":"lab"} */
    enum srv_deployment_status status;
    int64_t created_at, finished_at;  /* finished_at 0 while active */
    char *created_by;                 /* owned: principal */
    size_t ndevices;                  /* devices in the deployment (filled by get and list) */
};
void srv_deployment_release(struct srv_deployment *dep);
void srv_deployment_list_free(struct srv_deployment *list, size_t n);

struct srv_dd {
    int64_t deployment_id, device_id;
    int64_t seq;                      /* rollout position (1..n), 0 without a rollout */
    enum srv_dd_status status;
    int progress;                     /* 0..100, -1 when unknown */
    char *message;                    /* owned; "" when none */
    int64_t updated_at;
    uint32_t attempts;                /* retries taken so far (srv_store_dd_report_retry) */
};
/* Frees the message and zeroes dd (for the rows device_next and dd_get return). */
void srv_dd_release(struct srv_dd *dd);
void srv_dd_list_free(struct srv_dd *list, size_t n);

/* One report in a device's timeline. */
struct srv_dd_event {
    int64_t id;
    int64_t at;
    enum srv_dd_status status;
    int progress;
    char *message;                    /* owned */
    char *log;                        /* owned; may be NULL */
};
void srv_dd_event_list_free(struct srv_dd_event *list, size_t n);

/* Creates the deployment and one PENDING row per device (ids must exist, no duplicates:
 * OT_ERR_INVALID otherwise) in one transaction; assigns dep->id, sets status ACTIVE, copies the
 * artifact's name and version from the artifact row (OT_ERR_NOENT if it does not exist).
 * ndevices >= 1. skipped[i] (may be NULL) marks devices created directly as SKIPPED with
 * skip_message. When every device is skipped the deployment is created FINISHED. The store reads
 * dep's name (1..SRV_DEPLOYMENT_NAME_MAX-1 bytes of printable ASCII), artifact_id, target (a JSON
 * object), created_at and created_by (1..SRV_AUDIT_FIELD_MAX bytes), and sets id, status,
 * finished_at and ndevices; its other members are not touched. */
enum ot_err srv_store_deployment_create(struct srv_store *s, struct srv_deployment *dep,
                                        const int64_t *device_ids, const bool *skipped,
                                        size_t ndevices, const char *skip_message,
                                        struct ot_diag *d) OT_MUST_CHECK;
/* The same, for a staged rollout: seqs[i] (1..ndevices, each once; OT_ERR_INVALID otherwise) is
 * device i's position in the order the rollout releases devices, and the rollout row (its
 * deployment_id is set by the store; state, phase, released, times and reason as given; policy
 * 1..SRV_ROLLOUT_POLICY_MAX bytes, reason < SRV_ROLLOUT_REASON_MAX) is created in the same
 * transaction. A skipped device keeps its seq. */
enum ot_err srv_store_deployment_create_rollout(struct srv_store *s, struct srv_deployment *dep,
                                                const int64_t *device_ids, const bool *skipped,
                                                const int64_t *seqs, size_t ndevices,
                                                const char *skip_message,
                                                const struct srv_rollout *rollout,
                                                struct ot_diag *d) OT_MUST_CHECK;
/* OT_ERR_NOENT when absent; the caller releases *ret. */
enum ot_err srv_store_deployment_get(struct srv_store *s, int64_t id, struct srv_deployment *ret,
                                     struct ot_diag *d) OT_MUST_CHECK;
/* Newest first: ids < before_id (0 = from the newest), limit 1..SRV_LIST_MAX. status 0: any. */
enum ot_err srv_store_deployment_list(struct srv_store *s, enum srv_deployment_status status,
                                      int64_t before_id, size_t limit,
                                      struct srv_deployment **ret, size_t *ret_n,
                                      struct ot_diag *d) OT_MUST_CHECK;
/* Counts per enum srv_dd_status (counts[SRV_DD_PENDING] ...; counts[0] unused). OT_ERR_NOENT for an
 * unknown deployment, here and in srv_store_deployment_devices. */
enum ot_err srv_store_deployment_rollup(struct srv_store *s, int64_t id,
                                        uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
    OT_MUST_CHECK;
/* A page of the deployment's device rows by device id (> after_device_id), limit 1..SRV_LIST_MAX. */
enum ot_err srv_store_deployment_devices(struct srv_store *s, int64_t id, int64_t after_device_id,
                                         size_t limit, struct srv_dd **ret, size_t *ret_n,
                                         struct ot_diag *d) OT_MUST_CHECK;
/* Cancels an active deployment: status CANCELLED, finished_at = now, PENDING and WAITING rows ->
 * CANCELLED (nothing was installed; devices installing keep reporting). OT_ERR_NOENT unknown;
 * OT_ERR_EXISTS when it is not active any more. */
enum ot_err srv_store_deployment_cancel(struct srv_store *s, int64_t id, int64_t now,
                                        struct ot_diag *d) OT_MUST_CHECK;

/* The device's next piece of work: its row in the oldest ACTIVE deployment where the row is not
 * final. OT_ERR_NOENT when there is none. */
enum ot_err srv_store_device_next(struct srv_store *s, int64_t device_id, struct srv_dd *ret,
                                  struct ot_diag *d) OT_MUST_CHECK;
/* One row (OT_ERR_NOENT when the device is not in the deployment). */
enum ot_err srv_store_dd_get(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                             struct srv_dd *ret, struct ot_diag *d) OT_MUST_CHECK;

/* A status report, atomically: if the row's current status is final, nothing changes and
 * *ret_applied is false (*ret_current says what it is: a repeat of the same final status is the
 * caller's to accept). Otherwise the row takes status/progress/message/updated_at = at, an event
 * (with log, may be NULL) is appended, and when the row became final and no row of the deployment
 * is left non-final, an ACTIVE deployment becomes FINISHED (finished_at = at). status must be
 * DOWNLOADING..ROLLED_BACK (OT_ERR_INVALID otherwise). OT_ERR_NOENT when there is no such row. */
enum ot_err srv_store_dd_report(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                                enum srv_dd_status status, int progress, const char *message,
                                const char *log, int64_t at, bool *ret_applied,
                                enum srv_dd_status *ret_current, struct ot_diag *d) OT_MUST_CHECK;
/* srv_store_dd_report, with retries: when status is FAILURE or ROLLED_BACK, the row is not final
 * yet and its attempts < retries, the row goes back to PENDING instead (attempts + 1, progress -1,
 * message "retry <attempts+1> of <retries> after <status name>: <message>", updated_at = at), the
 * appended event records the reported status, message and log as given, the deployment does not
 * finish, and *ret_retried is true (*ret_applied too). Otherwise exactly srv_store_dd_report, with
 * *ret_retried false. srv_store_dd_report is this with retries 0. */
enum ot_err srv_store_dd_report_retry(struct srv_store *s, int64_t deployment_id,
                                      int64_t device_id, enum srv_dd_status status, int progress,
                                      const char *message, const char *log, int64_t at,
                                      uint32_t retries, bool *ret_applied, bool *ret_retried,
                                      enum srv_dd_status *ret_current, struct ot_diag *d)
    OT_MUST_CHECK;
/* Continuous membership (a deployment to a dynamic group): adds the device to an ACTIVE or FINISHED
 * deployment as a PENDING row (SKIPPED with skip_message when skipped), with seq = the highest seq
 * of its rows + 1 when it has a rollout (else 0), ndevices + 1 and the deployments generation
 * changed, in one transaction. A FINISHED deployment that gets a PENDING row becomes ACTIVE again
 * (finished_at 0); one that gets a SKIPPED row stays finished. *ret_added is false (and nothing
 * changes) when the device has a row there already or the deployment was cancelled;
 * OT_ERR_NOENT for an unknown deployment or device. *ret_seq (may be NULL) gets the seq given. */
enum ot_err srv_store_deployment_add_device(struct srv_store *s, int64_t deployment_id,
                                            int64_t device_id, bool skipped,
                                            const char *skip_message, int64_t at,
                                            bool *ret_added, int64_t *ret_seq, struct ot_diag *d)
    OT_MUST_CHECK;
/* Marks a PENDING row SKIPPED with message (the server found at check-in that the device cannot
 * take the artifact), finishing the deployment like a report does. No-op on other states. */
enum ot_err srv_store_dd_skip(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                              const char *message, int64_t at, struct ot_diag *d) OT_MUST_CHECK;
/* The device's timeline in the deployment: events with id > after_id, oldest first, at most limit
 * (1..SRV_LIST_MAX). OT_ERR_NOENT when there is no such row. */
enum ot_err srv_store_dd_events(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                                int64_t after_id, size_t limit, struct srv_dd_event **ret,
                                size_t *ret_n, struct ot_diag *d) OT_MUST_CHECK;
/* ---- rollouts (see struct srv_rollout) ---- */

/* OT_ERR_NOENT when the deployment has no rollout. */
enum ot_err srv_store_rollout_get(struct srv_store *s, int64_t deployment_id,
                                  struct srv_rollout *ret, struct ot_diag *d) OT_MUST_CHECK;
/* The rollouts of every ACTIVE deployment (any rollout state), by deployment id. */
enum ot_err srv_store_rollout_list_active(struct srv_store *s, struct srv_rollout **ret,
                                          size_t *ret_n, struct ot_diag *d) OT_MUST_CHECK;
/* Writes r's state, phase, released, phase_started_at, phase_ready_at, reason, updated_at and the
 * base counts (not the policy) and, when kind is not NULL, appends the decision (kind 1..SRV_ROLLOUT_KIND_MAX-1
 * bytes, message < SRV_ROLLOUT_REASON_MAX bytes, at = r->updated_at), in one transaction.
 * OT_ERR_NOENT when there is no such rollout. */
enum ot_err srv_store_rollout_update(struct srv_store *s, const struct srv_rollout *r,
                                     const char *kind, const char *message, struct ot_diag *d)
    OT_MUST_CHECK;
/* Appends a decision without changing the rollout. OT_ERR_NOENT when there is no rollout. */
enum ot_err srv_store_rollout_event_add(struct srv_store *s, int64_t deployment_id, int64_t at,
                                        const char *kind, const char *message, struct ot_diag *d)
    OT_MUST_CHECK;
/* Decisions with id > after_id, oldest first, at most limit (1..SRV_LIST_MAX). OT_ERR_NOENT when
 * there is no rollout. */
enum ot_err srv_store_rollout_events(struct srv_store *s, int64_t deployment_id, int64_t after_id,
                                     size_t limit, struct srv_rollout_event **ret, size_t *ret_n,
                                     struct ot_diag *d) OT_MUST_CHECK;
/* Records approver's approval of phase (approver 1..SRV_AUDIT_FIELD_MAX bytes, phase >= 0) and
 * returns how many distinct approvers that phase has now. OT_ERR_EXISTS (count still returned)
 * when this approver had approved that phase already; OT_ERR_NOENT when there is no rollout. */
enum ot_err srv_store_rollout_approve(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                      const char *approver, int64_t at, size_t *ret_count,
                                      struct ot_diag *d) OT_MUST_CHECK;
/* How many distinct approvers a phase has (0 when none or no rollout). */
enum ot_err srv_store_rollout_approvals(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                        size_t *ret_count, struct ot_diag *d) OT_MUST_CHECK;
/* Counts per enum srv_dd_status of the rows with seq_from < seq <= seq_to (counts[0] unused),
 * through an index on (deployment_id, seq): no scan of other rows. */
enum ot_err srv_store_rollout_counts(struct srv_store *s, int64_t deployment_id, int64_t seq_from,
                                     int64_t seq_to, uint64_t counts[SRV_DD__MAX],
                                     struct ot_diag *d) OT_MUST_CHECK;
/* Rows with 1 <= seq <= released that the device started (DOWNLOADING..VERIFYING: a device that
 * never picked the update up does not time out) and last reported before `before` become
 * FAILURE with message (an event appended, updated_at = now), finishing the deployment like a
 * report does and changing the deployments generation when any row changed. *ret_n: how many. */
enum ot_err srv_store_rollout_timeout(struct srv_store *s, int64_t deployment_id, int64_t released,
                                      int64_t before, int64_t now, const char *message,
                                      size_t *ret_n, struct ot_diag *d) OT_MUST_CHECK;

/* A cheap number that changes whenever any deployment is created, cancelled or finished, or any row
 * leaves PENDING for a server-side reason (skip), in the same transaction as the change: otterd's
 * check-in cache compares it instead of asking the database per request. With PostgreSQL it is
 * shared by every instance. */
enum ot_err srv_store_deployments_generation(struct srv_store *s, int64_t *ret, struct ot_diag *d)
    OT_MUST_CHECK;

#endif
