/* The SQLite back end of the store (store.h), the default: one database file under the data
 * directory, no setup.
 *
 * Durability: WAL journal with synchronous=FULL, so every commit fsyncs the WAL before the call
 * returns: an acknowledged write survives a kill or a power cut. A call returns OT_OK only after
 * its statement ran to SQLITE_DONE, which is where an autocommit statement commits, or, for an
 * operation of several statements, after its COMMIT (BEGIN IMMEDIATE ... COMMIT).
 *
 * Threads: one connection, and a pthread mutex held for the whole of each operation (bind, step,
 * read the rows, reset). That is simple and obviously correct: a statement, its error message
 * (sqlite3_errmsg is per connection) and its rows can never interleave with another thread's. It
 * serialises the store, which is fine at today's load (the check-in path batches its last-seen
 * writes into one srv_store_device_touch transaction); per-thread read connections may come
 * later. SQLITE_OPEN_FULLMUTEX stays on as a second
 * line of defence in case a future caller slips past the mutex.
 *
 * File descriptors: SQLite's unix VFS opens the database, WAL and shm files with O_CLOEXEC
 * (robust_open in os_unix.c); tests/unit/test_store.c checks it.
 *
 * Every statement is prepared once at open from a constant string and takes its input only
 * through bound parameters; no SQL text is ever built from input. */
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <time.h>

#include "otter/file.h"
#include "otter/path.h"
#include "store_impl.h"

#define BUSY_TIMEOUT_MS 5000
/* In the file header (offset 68) so file(1) and this code can tell an otterd database from other
 * SQLite files: "OTRD" = 0x4f545244. */
#define APPLICATION_ID 1330926148
#define STR_(x) #x
#define STR(x) STR_(x)

/* ---- schema ---------------------------------------------------------------------------------- */

/* Created with migration 1, in the same transaction. */
static const char bootstrap_sql[] =
    "CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, applied_at INTEGER);"
    "PRAGMA application_id = " STR(APPLICATION_ID) ";";

/* Migration N is migrations[N - 1]. Append only: a released migration never changes. Ids are
 * AUTOINCREMENT so that they are never reused, even after old rows are pruned: the audit log is
 * paged by id, and "token:7" in the audit log must always mean the same token. */
static const char *const migrations[] = {
    /* 1: settings, API tokens, audit log */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE tokens(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    " scopes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0, hash BLOB NOT NULL UNIQUE);"
    "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,"
    " actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL, detail TEXT);",
    /* 2: devices, artifacts, deployments. Status numbers are those of store.h (store_impl.h
     * asserts them). deployments.ndevices is fixed at creation (rows are never added later), so
     * listing deployments counts nothing. deployment_devices(deployment_id, status) answers "is
     * any row of this deployment left?" at every final report without a scan; (device_id, status)
     * finds a device's next row. deployments_generation is one row, bumped in the transaction of
     * every change srv_store_deployments_generation promises to show. */
    "CREATE TABLE devices(id INTEGER PRIMARY KEY AUTOINCREMENT, pubkey BLOB NOT NULL UNIQUE,"
    " identity TEXT NOT NULL, status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 5),"
    " device_type TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " last_seen INTEGER NOT NULL DEFAULT 0, attributes TEXT NOT NULL, installed TEXT NOT NULL);"
    "CREATE TABLE device_tags(device_id INTEGER NOT NULL REFERENCES devices(id),"
    " tag TEXT NOT NULL, PRIMARY KEY(device_id, tag)) WITHOUT ROWID;"
    "CREATE INDEX device_tags_tag ON device_tags(tag, device_id);"
    "CREATE TABLE artifacts(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    " version TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,"
    " manifest TEXT NOT NULL, signatures TEXT NOT NULL, device_types TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, uploaded_by TEXT NOT NULL, UNIQUE(name, version));"
    "CREATE TABLE deployments(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    " artifact_id INTEGER REFERENCES artifacts(id) ON DELETE SET NULL,"
    " artifact_name TEXT NOT NULL, artifact_version TEXT NOT NULL, target TEXT NOT NULL,"
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 3), created_at INTEGER NOT NULL,"
    " finished_at INTEGER NOT NULL, created_by TEXT NOT NULL, ndevices INTEGER NOT NULL);"
    "CREATE INDEX deployments_artifact ON deployments(artifact_id, status);"
    "CREATE TABLE deployment_devices(deployment_id INTEGER NOT NULL REFERENCES deployments(id),"
    " device_id INTEGER NOT NULL REFERENCES devices(id),"
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 10), progress INTEGER NOT NULL,"
    " message TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY(deployment_id, device_id))"
    " WITHOUT ROWID;"
    "CREATE INDEX deployment_devices_device ON deployment_devices(device_id, status);"
    "CREATE INDEX deployment_devices_status ON deployment_devices(deployment_id, status);"
    "CREATE TABLE dd_events(id INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id INTEGER NOT NULL,"
    " device_id INTEGER NOT NULL, at INTEGER NOT NULL, status INTEGER NOT NULL,"
    " progress INTEGER NOT NULL, message TEXT NOT NULL, log TEXT,"
    " FOREIGN KEY(deployment_id, device_id)"
    " REFERENCES deployment_devices(deployment_id, device_id));"
    "CREATE INDEX dd_events_row ON dd_events(deployment_id, device_id, id);"
    "CREATE TABLE deployments_generation(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " value INTEGER NOT NULL);"
    "INSERT INTO deployments_generation(id, value) VALUES(1, 0);",
    /* 3: staged rollouts. A row's seq is its place in the rollout's release order (0 without a
     * rollout: existing rows keep 0); (deployment_id, seq) counts a phase's rows and finds the
     * released ones without touching the rest. One rollouts row per deployment that has one; its
     * decisions (rollout_events) are paged by id per deployment; rollout_approvals holds one row
     * per distinct approver of a phase, so counting them is counting rows. */
    "ALTER TABLE deployment_devices ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX deployment_devices_seq ON deployment_devices(deployment_id, seq);"
    "CREATE TABLE rollouts(deployment_id INTEGER PRIMARY KEY REFERENCES deployments(id),"
    " policy TEXT NOT NULL, state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 6),"
    " phase INTEGER NOT NULL, released INTEGER NOT NULL, phase_started_at INTEGER NOT NULL,"
    " phase_ready_at INTEGER NOT NULL, reason TEXT NOT NULL, updated_at INTEGER NOT NULL,"
    " base_failed INTEGER NOT NULL, base_finished INTEGER NOT NULL);"
    "CREATE TABLE rollout_events(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " deployment_id INTEGER NOT NULL REFERENCES deployments(id), at INTEGER NOT NULL,"
    " kind TEXT NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX rollout_events_deployment ON rollout_events(deployment_id, id);"
    "CREATE TABLE rollout_approvals(deployment_id INTEGER NOT NULL"
    " REFERENCES rollouts(deployment_id), phase INTEGER NOT NULL, approver TEXT NOT NULL,"
    " at INTEGER NOT NULL, PRIMARY KEY(deployment_id, phase, approver)) WITHOUT ROWID;",
    /* 4: continuous deployment. A row's attempts counts its retries (srv_store_dd_report_retry),
     * an artifact's channel is the release channel it was uploaded to ("" none), and a template is
     * what an upload to its channel deploys; deployment_templates_channel finds a channel's
     * enabled templates. deployments.ndevices is no longer fixed at creation: adding a device
     * to a deployment (srv_store_deployment_add_device) counts it in the same transaction.
     * Widening deployment_devices' status CHECK to WAITING (11) has no SQL in SQLite:
     * widen_dd_status() does it after this text, in the same transaction. */
    "ALTER TABLE deployment_devices ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE artifacts ADD COLUMN channel TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE deployment_templates(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE, channel TEXT NOT NULL, body TEXT NOT NULL,"
    " enabled INTEGER NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);"
    "CREATE INDEX deployment_templates_channel ON deployment_templates(channel, id);",
};
#define SCHEMA_VERSION ((int)OT_ARRAY_SIZE(migrations))

/* ---- statements, prepared once at open ------------------------------------------------------- */

#define TOKEN_COLUMNS "id, name, scopes, created_at, expires_at, revoked, hash"
/* The tags come joined by blanks (srv__store_split_tags), so a device is one row. */
#define DEVICE_COLUMNS                                                                             \
    "d.id, d.pubkey, d.identity, d.status, d.device_type, d.created_at, d.updated_at,"             \
    " d.last_seen, d.attributes, d.installed,"                                                     \
    " (SELECT group_concat(t.tag, ' ') FROM device_tags t WHERE t.device_id = d.id)"
#define ARTIFACT_COLUMNS                                                                           \
    "id, name, version, sha256, size, manifest, signatures, device_types, created_at, uploaded_by,"  \
    " channel"
#define DEPLOYMENT_COLUMNS                                                                         \
    "id, name, coalesce(artifact_id, 0), artifact_name, artifact_version, target, status,"         \
    " created_at, finished_at, created_by, ndevices"
#define DD_COLUMNS                                                                                 \
    "dd.deployment_id, dd.device_id, dd.status, dd.progress, dd.message, dd.updated_at, dd.seq,"    \
    " dd.attempts"
#define TEMPLATE_COLUMNS "id, name, channel, body, enabled, created_at, created_by"
/* A row that is not final (SRV_DD_IS_FINAL): PENDING..VERIFYING or WAITING. A list, not two
 * ranges joined by OR: each value is one seek in the (deployment_id, status) and (device_id,
 * status) indexes, where an OR left the planner scanning all of a deployment's rows. */
#define DD_OPEN(col) col " IN (1, 2, 3, 4, 5, 11)"
#define ROLLOUT_COLUMNS                                                                            \
    "r.deployment_id, r.policy, r.state, r.phase, r.released, r.phase_started_at,"                 \
    " r.phase_ready_at, r.reason, r.updated_at, r.base_failed, r.base_finished"
/* The rows rollout_timeout fails: released, started (not pending), not final, silent since
 * before (?3). */
#define TIMED_OUT                                                                                  \
    " WHERE deployment_id = ?1 AND seq BETWEEN 1 AND ?2 AND status BETWEEN 2 AND 5"                \
    " AND updated_at < ?3"

enum stmt_id {
    ST_MIGRATION_DONE,
    ST_META_GET,
    ST_META_SET,
    ST_TOKEN_INSERT,
    ST_TOKEN_BY_HASH,
    ST_TOKEN_LIST,
    ST_TOKEN_REVOKE,
    ST_AUDIT_INSERT,
    ST_AUDIT_LIST,
    ST_DEVICE_INSERT,
    ST_TAG_INSERT,
    ST_TAGS_DELETE,
    ST_DEVICE_GET,
    ST_DEVICE_BY_PUBKEY,
    ST_DEVICE_SET_STATUS,
    ST_DEVICE_SET_INSTALLED,
    ST_DEVICE_SET_ATTRIBUTES,
    ST_DEVICE_SET_UPDATED,
    ST_DEVICE_TOUCH,
    ST_DEVICE_LIST,
    ST_DEVICE_IDS_BY_TAG,
    ST_ARTIFACT_INSERT,
    ST_ARTIFACT_CONFLICT,
    ST_ARTIFACT_GET,
    ST_ARTIFACT_BY_SHA256,
    ST_ARTIFACT_LIST,
    ST_ARTIFACT_USER,
    ST_ARTIFACT_DELETE,
    ST_TEMPLATE_INSERT,
    ST_TEMPLATE_GET,
    ST_TEMPLATE_LIST,
    ST_TEMPLATE_LIST_CHANNEL,
    ST_TEMPLATE_SET_ENABLED,
    ST_TEMPLATE_DELETE,
    ST_DEPLOYMENT_INSERT,
    ST_DD_INSERT,
    ST_DEPLOYMENT_GET,
    ST_DEPLOYMENT_STATUS,
    ST_DEPLOYMENT_LIST,
    ST_DEPLOYMENT_ROLLUP,
    ST_DEPLOYMENT_DEVICES,
    ST_DEPLOYMENT_CANCEL,
    ST_DD_CANCEL_PENDING,
    ST_DEPLOYMENT_FINISH,
    ST_DEVICE_NEXT,
    ST_DD_GET,
    ST_DD_STATUS,
    ST_DD_UPDATE,
    ST_DD_ATTEMPTS,
    ST_DD_RETRY,
    ST_DD_SKIP,
    ST_DEVICE_EXISTS,
    ST_DD_MAX_SEQ,
    ST_DEPLOYMENT_GROW,
    ST_DEPLOYMENT_REOPEN,
    ST_EVENT_INSERT,
    ST_EVENTS,
    ST_GENERATION_BUMP,
    ST_GENERATION_GET,
    ST_ROLLOUT_INSERT,
    ST_ROLLOUT_GET,
    ST_ROLLOUT_LIST_ACTIVE,
    ST_ROLLOUT_UPDATE,
    ST_ROLLOUT_EVENT_INSERT,
    ST_ROLLOUT_EVENTS,
    ST_ROLLOUT_EXISTS,
    ST_APPROVAL_INSERT,
    ST_APPROVAL_COUNT,
    ST_ROLLOUT_COUNTS,
    ST_TIMEOUT_EVENTS,
    ST_TIMEOUT_ROWS,
    ST__MAX
};

static const char *const stmt_sql[ST__MAX] = {
    [ST_MIGRATION_DONE] = "INSERT INTO schema_migrations(version, applied_at) VALUES(?1, ?2)",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_TOKEN_INSERT] = "INSERT INTO tokens(name, scopes, created_at, expires_at, revoked, hash)"
                        " VALUES(?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    [ST_TOKEN_BY_HASH] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = ?1",
    [ST_TOKEN_LIST] = "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY created_at, id",
    [ST_TOKEN_REVOKE] = "UPDATE tokens SET revoked = 1 WHERE id = ?1 RETURNING id",
    [ST_AUDIT_INSERT] = "INSERT INTO audit(at, actor, action, object, detail)"
                        " VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_AUDIT_LIST] = "SELECT id, at, actor, action, object, detail FROM audit"
                      " WHERE id > ?1 ORDER BY id LIMIT ?2",
    [ST_DEVICE_INSERT] = "INSERT INTO devices(pubkey, identity, status, device_type, created_at,"
                         " updated_at, attributes, installed)"
                         " VALUES(?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) RETURNING id",
    [ST_TAG_INSERT] = "INSERT INTO device_tags(device_id, tag) VALUES(?1, ?2)",
    [ST_TAGS_DELETE] = "DELETE FROM device_tags WHERE device_id = ?1",
    [ST_DEVICE_GET] = "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.id = ?1",
    [ST_DEVICE_BY_PUBKEY] = "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.pubkey = ?1",
    [ST_DEVICE_SET_STATUS] = "UPDATE devices SET status = ?2, updated_at = ?3 WHERE id = ?1"
                             " RETURNING id",
    [ST_DEVICE_SET_INSTALLED] = "UPDATE devices SET device_type = ?2, installed = ?3,"
                                " updated_at = ?4 WHERE id = ?1 RETURNING id",
    [ST_DEVICE_SET_ATTRIBUTES] = "UPDATE devices SET attributes = ?2, updated_at = ?3"
                                 " WHERE id = ?1 RETURNING id",
    [ST_DEVICE_SET_UPDATED] = "UPDATE devices SET updated_at = ?2 WHERE id = ?1 RETURNING id",
    [ST_DEVICE_TOUCH] = "UPDATE devices SET last_seen = ?2 WHERE id = ?1 AND last_seen < ?2",
    /* One fixed query for every combination of filters: an absent filter is 0 or NULL. */
    [ST_DEVICE_LIST] = "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.id > ?1"
                       " AND (?2 = 0 OR d.status = ?2) AND (?3 IS NULL OR d.device_type = ?3)"
                       " AND (?4 IS NULL OR EXISTS (SELECT 1 FROM device_tags f"
                       " WHERE f.device_id = d.id AND f.tag = ?4)) ORDER BY d.id LIMIT ?5",
    [ST_DEVICE_IDS_BY_TAG] = "SELECT t.device_id FROM device_tags t JOIN devices d"
                             " ON d.id = t.device_id WHERE t.tag = ?1 AND d.status = 2"
                             " ORDER BY t.device_id",
    [ST_ARTIFACT_INSERT] = "INSERT INTO artifacts(name, version, sha256, size, manifest,"
                           " signatures, device_types, created_at, uploaded_by, channel)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
    /* Which unique key an insert ran into: the sha256 one first. */
    [ST_ARTIFACT_CONFLICT] = "SELECT id, sha256 = ?1 FROM artifacts"
                             " WHERE sha256 = ?1 OR (name = ?2 AND version = ?3)"
                             " ORDER BY 2 DESC LIMIT 1",
    [ST_ARTIFACT_GET] = "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE id = ?1",
    [ST_ARTIFACT_BY_SHA256] = "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE sha256 = ?1",
    [ST_ARTIFACT_LIST] = "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE id > ?1"
                         " ORDER BY id LIMIT ?2",
    [ST_ARTIFACT_USER] = "SELECT id FROM deployments WHERE artifact_id = ?1 AND status = 1"
                         " ORDER BY id LIMIT 1",
    [ST_ARTIFACT_DELETE] = "DELETE FROM artifacts WHERE id = ?1 RETURNING id",
    [ST_TEMPLATE_INSERT] = "INSERT INTO deployment_templates(name, channel, body, enabled,"
                           " created_at, created_by) VALUES(?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    [ST_TEMPLATE_GET] = "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates WHERE id = ?1",
    [ST_TEMPLATE_LIST] = "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates WHERE id > ?1"
                         " ORDER BY id LIMIT ?2",
    [ST_TEMPLATE_LIST_CHANNEL] = "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates"
                                 " WHERE channel = ?1 AND enabled = 1 AND id > ?2"
                                 " ORDER BY id LIMIT ?3",
    [ST_TEMPLATE_SET_ENABLED] = "UPDATE deployment_templates SET enabled = ?2 WHERE id = ?1"
                                " RETURNING id",
    [ST_TEMPLATE_DELETE] = "DELETE FROM deployment_templates WHERE id = ?1 RETURNING id",
    [ST_DEPLOYMENT_INSERT] = "INSERT INTO deployments(name, artifact_id, artifact_name,"
                             " artifact_version, target, status, created_at, finished_at,"
                             " created_by, ndevices) SELECT ?1, a.id, a.name, a.version, ?3, ?4,"
                             " ?5, ?6, ?7, ?8 FROM artifacts a WHERE a.id = ?2 RETURNING id",
    [ST_DD_INSERT] = "INSERT INTO deployment_devices(deployment_id, device_id, status, progress,"
                     " message, updated_at, seq) VALUES(?1, ?2, ?3, -1, ?4, ?5, ?6)",
    [ST_DEPLOYMENT_GET] = "SELECT " DEPLOYMENT_COLUMNS " FROM deployments WHERE id = ?1",
    [ST_DEPLOYMENT_STATUS] = "SELECT status FROM deployments WHERE id = ?1",
    [ST_DEPLOYMENT_LIST] = "SELECT " DEPLOYMENT_COLUMNS " FROM deployments"
                           " WHERE (?1 = 0 OR status = ?1) AND (?2 = 0 OR id < ?2)"
                           " ORDER BY id DESC LIMIT ?3",
    [ST_DEPLOYMENT_ROLLUP] = "SELECT status, count(*) FROM deployment_devices"
                             " WHERE deployment_id = ?1 GROUP BY status",
    [ST_DEPLOYMENT_DEVICES] = "SELECT " DD_COLUMNS " FROM deployment_devices dd"
                              " WHERE dd.deployment_id = ?1 AND dd.device_id > ?2"
                              " ORDER BY dd.device_id LIMIT ?3",
    [ST_DEPLOYMENT_CANCEL] = "UPDATE deployments SET status = 3, finished_at = ?2"
                             " WHERE id = ?1 AND status = 1 RETURNING id",
    [ST_DD_CANCEL_PENDING] = "UPDATE deployment_devices SET status = 9, updated_at = ?2"
                             " WHERE deployment_id = ?1 AND status IN (1, 11)",
    [ST_DEPLOYMENT_FINISH] = "UPDATE deployments SET status = 2, finished_at = ?2"
                             " WHERE id = ?1 AND status = 1 AND NOT EXISTS (SELECT 1 FROM"
                             " deployment_devices WHERE deployment_id = ?1"
                             " AND " DD_OPEN("status") ") RETURNING id",
    [ST_DEVICE_NEXT] = "SELECT " DD_COLUMNS " FROM deployment_devices dd JOIN deployments d"
                       " ON d.id = dd.deployment_id WHERE dd.device_id = ?1"
                       " AND " DD_OPEN("dd.status") " AND d.status = 1"
                       " ORDER BY dd.deployment_id LIMIT 1",
    [ST_DD_GET] = "SELECT " DD_COLUMNS " FROM deployment_devices dd"
                  " WHERE dd.deployment_id = ?1 AND dd.device_id = ?2",
    [ST_DD_STATUS] = "SELECT status FROM deployment_devices"
                     " WHERE deployment_id = ?1 AND device_id = ?2",
    [ST_DD_UPDATE] = "UPDATE deployment_devices SET status = ?3, progress = ?4, message = ?5,"
                     " updated_at = ?6 WHERE deployment_id = ?1 AND device_id = ?2",
    [ST_DD_ATTEMPTS] = "SELECT attempts FROM deployment_devices"
                       " WHERE deployment_id = ?1 AND device_id = ?2",
    [ST_DD_RETRY] = "UPDATE deployment_devices SET status = 1, progress = -1, message = ?3,"
                    " updated_at = ?4, attempts = attempts + 1"
                    " WHERE deployment_id = ?1 AND device_id = ?2",
    [ST_DD_SKIP] = "UPDATE deployment_devices SET status = 10, message = ?3, updated_at = ?4"
                   " WHERE deployment_id = ?1 AND device_id = ?2 AND status = 1"
                   " RETURNING device_id",
    [ST_DEVICE_EXISTS] = "SELECT 1 FROM devices WHERE id = ?1",
    [ST_DD_MAX_SEQ] = "SELECT coalesce(max(seq), 0) FROM deployment_devices"
                      " WHERE deployment_id = ?1",
    [ST_DEPLOYMENT_GROW] = "UPDATE deployments SET ndevices = ndevices + 1 WHERE id = ?1",
    [ST_DEPLOYMENT_REOPEN] = "UPDATE deployments SET status = 1, finished_at = 0"
                             " WHERE id = ?1 AND status = 2",
    [ST_EVENT_INSERT] = "INSERT INTO dd_events(deployment_id, device_id, at, status, progress,"
                        " message, log) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_EVENTS] = "SELECT id, at, status, progress, message, log FROM dd_events"
                  " WHERE deployment_id = ?1 AND device_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    [ST_GENERATION_BUMP] = "UPDATE deployments_generation SET value = value + 1",
    [ST_GENERATION_GET] = "SELECT value FROM deployments_generation",
    [ST_ROLLOUT_INSERT] = "INSERT INTO rollouts(deployment_id, policy, state, phase, released,"
                          " phase_started_at, phase_ready_at, reason, updated_at, base_failed,"
                          " base_finished) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_ROLLOUT_GET] = "SELECT " ROLLOUT_COLUMNS " FROM rollouts r WHERE r.deployment_id = ?1",
    [ST_ROLLOUT_LIST_ACTIVE] = "SELECT " ROLLOUT_COLUMNS " FROM rollouts r JOIN deployments d"
                               " ON d.id = r.deployment_id WHERE d.status = 1"
                               " ORDER BY r.deployment_id",
    [ST_ROLLOUT_UPDATE] = "UPDATE rollouts SET state = ?2, phase = ?3, released = ?4,"
                          " phase_started_at = ?5, phase_ready_at = ?6, reason = ?7,"
                          " updated_at = ?8, base_failed = ?9, base_finished = ?10"
                          " WHERE deployment_id = ?1 RETURNING deployment_id",
    [ST_ROLLOUT_EVENT_INSERT] = "INSERT INTO rollout_events(deployment_id, at, kind, message)"
                                " SELECT deployment_id, ?2, ?3, ?4 FROM rollouts"
                                " WHERE deployment_id = ?1 RETURNING id",
    [ST_ROLLOUT_EVENTS] = "SELECT id, at, kind, message FROM rollout_events"
                          " WHERE deployment_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [ST_ROLLOUT_EXISTS] = "SELECT 1 FROM rollouts WHERE deployment_id = ?1",
    [ST_APPROVAL_INSERT] = "INSERT INTO rollout_approvals(deployment_id, phase, approver, at)"
                           " VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING RETURNING 1",
    [ST_APPROVAL_COUNT] = "SELECT count(*) FROM rollout_approvals"
                          " WHERE deployment_id = ?1 AND phase = ?2",
    /* INDEXED BY: the promise of store.h (no scan of the deployment's other rows) as an error at
     * prepare time should the index ever go, rather than a quiet change of plan. */
    [ST_ROLLOUT_COUNTS] = "SELECT status, count(*) FROM deployment_devices"
                          " INDEXED BY deployment_devices_seq"
                          " WHERE deployment_id = ?1 AND seq > ?2 AND seq <= ?3 GROUP BY status",
    /* The events first (they read the rows as they were), then the rows, in one transaction. */
    [ST_TIMEOUT_EVENTS] = "INSERT INTO dd_events(deployment_id, device_id, at, status, progress,"
                          " message, log) SELECT deployment_id, device_id, ?4, 7, progress, ?5,"
                          " NULL FROM deployment_devices" TIMED_OUT " ORDER BY device_id",
    [ST_TIMEOUT_ROWS] = "UPDATE deployment_devices SET status = 7, message = ?5, updated_at = ?4"
                        TIMED_OUT,
};

struct sqlite_store {
    struct srv_store base; /* first: store.c sees only this */
    pthread_mutex_t lock;  /* held for each whole operation, see the top of the file */
    sqlite3 *db;
    sqlite3_stmt *stmt[ST__MAX];
    int version;           /* schema version, fixed after open */
};

/* ---- errors ---------------------------------------------------------------------------------- */

/* SQLite's result code (extended codes are on) to ours, with "what: sqlite's message". */
static enum ot_err map_error(sqlite3 *db, int rc, const char *what, struct ot_diag *d)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int sys = db ? sqlite3_system_errno(db) : 0;
    switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "%s: database is damaged or not an otterd database (%s)", what, msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return ot_diag_set(d, OT_ERR_IO,
                           "%s: the database stayed locked by another connection for %d s (%s)",
                           what, BUSY_TIMEOUT_MS / 1000, msg);
    case SQLITE_FULL:
        return ot_diag_set(d, OT_ERR_NOSPC, "%s: %s", what, msg);
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return ot_diag_set(d, OT_ERR_EXISTS, "%s: already exists (%s)", what, msg);
        return ot_diag_set(d, OT_ERR_INVALID, "%s: %s", what, msg);
    case SQLITE_NOMEM:
        return ot_diag_set(d, OT_ERR_NOMEM, "%s: out of memory", what);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return ot_diag_set(d, OT_ERR_PERM, "%s: %s", what, msg);
    case SQLITE_TOOBIG:
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: %s", what, msg);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        /* The errno says why (ENOSPC, EACCES, ENOTDIR ...) and picks the error code. */
        if (sys)
            return ot_diag_errno(d, OT_ERR_IO, sys, "%s: %s", what, msg);
        return ot_diag_set(d, OT_ERR_IO, "%s: %s", what, msg);
    default:
        return ot_diag_set(d, OT_ERR_INTERNAL, "%s: %s (SQLite code %d)", what, msg, rc);
    }
}

static enum ot_err db_error(struct sqlite_store *s, int rc, struct ot_diag *d, const char *fmt,
                            ...) OT_PRINTF(4, 5);

static enum ot_err db_error(struct sqlite_store *s, int rc, struct ot_diag *d, const char *fmt,
                            ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return map_error(s->db, rc, what, d);
}

/* ---- small helpers; the caller holds the lock ------------------------------------------------ */

static struct sqlite_store *lock_store(struct srv_store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    pthread_mutex_lock(&s->lock);
    return s;
}

static void unlock_storep(struct sqlite_store **s)
{
    if (*s)
        pthread_mutex_unlock(&(*s)->lock);
}

/* Resetting ends the statement's read transaction (a WAL reader holding a snapshot would keep the
 * checkpointer from finishing) and unbinds pointers into the caller's memory. */
static void stmt_resetp(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}

/* Declared in this order, the statement is reset before the lock is released. */
#define LOCKED_STMT(s, st, base, id)                                                               \
    _cleanup_(unlock_storep) struct sqlite_store *s = lock_store(base);                            \
    _cleanup_(stmt_resetp) sqlite3_stmt *st = s->stmt[id]

static enum ot_err exec(struct sqlite_store *s, const char *sql, const char *what,
                        struct ot_diag *d)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? OT_OK : db_error(s, rc, d, "%s", what);
}

/* One integer from a constant query (NULL reads as 0). */
static enum ot_err query_int(struct sqlite_store *s, const char *sql, int64_t *ret,
                             struct ot_diag *d)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *ret = sqlite3_column_int64(st, 0);
    enum ot_err err = rc == SQLITE_ROW ? OT_OK : db_error(s, rc, d, "read the database");
    sqlite3_finalize(st);
    return err;
}

/* Steps an INSERT/UPDATE ... RETURNING id to its end, which is where it commits. *ret_found is
 * false when no row matched. Returns SQLITE_DONE on success. */
static int step_returning(sqlite3_stmt *st, int64_t *ret_id, bool *ret_found)
{
    int rc = sqlite3_step(st);
    *ret_found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        *ret_id = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    return rc;
}

/* A copy of a text column; NULL only where the column may be NULL. */
static enum ot_err column_dup(sqlite3_stmt *st, int col, bool nullable, char **ret,
                              struct ot_diag *d)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        *ret = NULL;
        return nullable ? OT_OK : ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: NULL in %s",
                                              sqlite3_column_name(st, col));
    }
    const unsigned char *text = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    *ret = text ? strndup((const char *)text, (size_t)n) : NULL;
    return *ret ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

/* ---- open: connection, settings, migrations -------------------------------------------------- */

/* Why the file could not be opened. SQLite retries a failed read-write open read-only, so the
 * errno it keeps is often the retry's (ENOENT), not the reason (EACCES on the directory): ask. */
static int open_errno(const char *path, int sqlite_errno)
{
    if (faccessat(AT_FDCWD, path, R_OK | W_OK, AT_EACCESS) == 0)
        return sqlite_errno;
    if (errno != ENOENT)
        return errno; /* EACCES, ENOTDIR, ELOOP ... */
    _cleanup_free_ char *dir = NULL;
    if (ot_path_dirname(path, &dir) != OT_OK)
        return sqlite_errno;
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0)
        return errno; /* cannot create the file there */
    return sqlite_errno;
}

static enum ot_err open_db(struct sqlite_store *s, const char *path, struct ot_diag *d)
{
    /* No SQLITE_OPEN_URI: a "file:..." path is a file name, never a URI with options. */
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             NULL);
    if (!s->db)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    sqlite3_extended_result_codes(s->db, 1);
    if ((rc & 0xff) == SQLITE_CANTOPEN)
        return ot_diag_errno(d, OT_ERR_IO, open_errno(path, sqlite3_system_errno(s->db)),
                             "cannot open: %s", sqlite3_errmsg(s->db));
    if (rc != SQLITE_OK)
        return db_error(s, rc, d, "cannot open");
    /* SQLite falls back to read-only when it may not write; a store that cannot write is no use. */
    if (sqlite3_db_readonly(s->db, "main") == 1)
        return ot_diag_set(d, OT_ERR_PERM, "the database file is read-only for this user");
    return OT_OK;
}

/* Connection settings; none of them touches the file. */
static enum ot_err configure(struct sqlite_store *s, struct ot_diag *d)
{
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* No writable_schema or other ways to corrupt the file through SQL (one migration lifts it
     * for a documented edit: widen_dd_status). */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    return exec(s,
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF",
                "configure the connection", d);
}

/* The WAL journal mode is stored in the file, so this is the first write: only to a file known to
 * be ours or new. */
static enum ot_err use_wal(struct sqlite_store *s, struct ot_diag *d)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    enum ot_err err = OT_OK;
    if (rc != SQLITE_ROW)
        err = db_error(s, rc, d, "set the journal mode");
    else if (!mode || strcmp(mode, "wal") != 0)
        err = ot_diag_set(d, OT_ERR_UNSUPPORTED,
                          "journal mode is '%s', not WAL: otterd needs a database file on a local "
                          "file system",
                          mode ? mode : "?");
    sqlite3_finalize(st);
    return err;
}

static enum ot_err read_version(struct sqlite_store *s, int64_t *ret, struct ot_diag *d)
{
    int64_t has_table = 0;
    enum ot_err err = query_int(s,
                                "SELECT count(*) FROM sqlite_master"
                                " WHERE type = 'table' AND name = 'schema_migrations'",
                                &has_table, d);
    *ret = 0;
    if (err || !has_table)
        return err;
    return query_int(s, "SELECT coalesce(max(version), 0) FROM schema_migrations", ret, d);
}

/* Never migrate another program's database (a mistyped path, another app's "schema_migrations"). */
static enum ot_err check_identity(struct sqlite_store *s, int64_t version, struct ot_diag *d)
{
    int64_t app_id = 0, tables = 0;
    enum ot_err err = query_int(s, "PRAGMA application_id", &app_id, d);
    if (!err && version == 0 && app_id == 0)
        err = query_int(s, "SELECT count(*) FROM sqlite_master", &tables, d);
    if (err)
        return err;
    if (app_id == APPLICATION_ID || (app_id == 0 && version == 0 && tables == 0))
        return OT_OK; /* ours, or new and empty */
    if (app_id == 0)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "not an otterd database: it holds another program's tables");
    return ot_diag_set(d, OT_ERR_FORMAT, "not an otterd database (application id 0x%08x)",
                       (unsigned)app_id);
}

static enum ot_err check_not_newer(int64_t version, struct ot_diag *d)
{
    if (version <= SCHEMA_VERSION)
        return OT_OK;
    return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                       "database schema version %lld is newer than this otterd supports (%d)",
                       (long long)version, SCHEMA_VERSION);
}

/* The first reads of the file, before anything is written to it: a file that is not a database
 * fails here (SQLITE_NOTADB, SQLITE_CORRUPT), and so do another program's database and a newer
 * otterd's. */
static enum ot_err check_file(struct sqlite_store *s, int64_t *ret_version, struct ot_diag *d)
{
    enum ot_err err = read_version(s, ret_version, d);
    if (!err)
        err = check_identity(s, *ret_version, d);
    if (!err)
        err = check_not_newer(*ret_version, d);
    return err;
}

/* Migration 4's CHECK change, status BETWEEN 1 AND 10 -> 11. SQLite cannot alter a constraint,
 * and rebuilding deployment_devices (the generic 12-step procedure) would copy every row of the
 * biggest table from under dd_events' foreign key. The ALTER TABLE page documents a direct edit
 * of sqlite_schema for exactly this case, loosening a CHECK
 * (https://sqlite.org/lang_altertable.html#otheralter): no stored row can break a looser rule, so
 * the file needs no rewrite and stays consistent, and bumping the schema cookie makes every
 * connection, another process's too, read the new definition. The edit must match the text
 * migration 2 wrote exactly once, or the migration fails (and its transaction rolls back) rather
 * than leave the old rule in place. Defensive mode forbids writable_schema and setting the
 * cookie, so it is lifted for these statements only. */
static enum ot_err widen_dd_status(struct sqlite_store *s, struct ot_diag *d)
{
    int64_t cookie = 0;
    enum ot_err err = query_int(s, "PRAGMA schema_version", &cookie, d);
    if (err)
        return err;
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 0, NULL);
    err = exec(s, "PRAGMA writable_schema = ON", "migration 4: edit the schema", d);
    if (!err)
        err = exec(s,
                   "UPDATE sqlite_schema SET sql = replace(sql,"
                   " 'status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 10)',"
                   " 'status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 11)')"
                   " WHERE type = 'table' AND name = 'deployment_devices' AND instr(sql,"
                   " 'status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 10)') > 0",
                   "migration 4: widen the status rule of deployment_devices", d);
    if (!err && sqlite3_changes(s->db) != 1)
        err = ot_diag_set(d, OT_ERR_FORMAT,
                          "migration 4: deployment_devices is not as migration 2 made it");
    /* A PRAGMA takes no parameters: the number, read from the file above, goes into the text. */
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA schema_version = %lld", (long long)cookie + 1);
    if (!err)
        err = exec(s, bump, "migration 4: bump the schema version", d);
    /* RESET also rereads the schema on this connection, whatever happened above. */
    enum ot_err off = exec(s, "PRAGMA writable_schema = RESET", "migration 4: end the edit",
                           err ? NULL : d);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    return err ? err : off;
}

/* Migration N's part in C, run after its SQL text in its transaction (NULL: none). */
static enum ot_err (*const migration_code[SCHEMA_VERSION])(struct sqlite_store *s,
                                                           struct ot_diag *d) = {
    [3] = widen_dd_status,
};

static enum ot_err record_migration(struct sqlite_store *s, int64_t version, struct ot_diag *d)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, stmt_sql[ST_MIGRATION_DONE], -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 1, version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(s, rc, d, "record migration %lld", (long long)version);
    return OT_OK;
}

/* The next migration with its schema_migrations row, in one transaction. *v is read again under
 * the write lock: another otterd opening the same file may have applied it meanwhile. */
static enum ot_err apply_next(struct sqlite_store *s, int64_t *v, struct ot_diag *d)
{
    enum ot_err err = exec(s, "BEGIN IMMEDIATE", "start a migration", d);
    if (err)
        return err;
    err = read_version(s, v, d);
    if (!err && *v == 0)
        err = check_identity(s, 0, d);
    if (!err && *v == 0)
        err = exec(s, bootstrap_sql, "create schema_migrations", d);
    if (!err && *v < SCHEMA_VERSION) {
        char what[32];
        snprintf(what, sizeof(what), "migration %d", (int)*v + 1);
        err = exec(s, migrations[*v], what, d);
        if (!err && migration_code[*v])
            err = migration_code[*v](s, d);
        if (!err)
            err = record_migration(s, *v + 1, d);
    }
    if (!err)
        err = exec(s, "COMMIT", "commit a migration", d);
    if (err) {
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return err;
    }
    if (*v < SCHEMA_VERSION)
        (*v)++;
    return OT_OK;
}

static enum ot_err migrate(struct sqlite_store *s, int64_t v, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    while (!err && v < SCHEMA_VERSION)
        err = apply_next(s, &v, d);
    if (!err)
        err = check_not_newer(v, d); /* a newer otterd may have migrated it meanwhile */
    if (!err)
        s->version = (int)v;
    return err;
}

static enum ot_err prepare_all(struct sqlite_store *s, struct ot_diag *d)
{
    for (int i = 0; i < ST__MAX; i++) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                                    NULL);
        if (rc != SQLITE_OK)
            return db_error(s, rc, d, "prepare statement %d", i);
    }
    return OT_OK;
}

static void sl_close(struct srv_store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    for (int i = 0; i < ST__MAX; i++)
        sqlite3_finalize(s->stmt[i]);
    /* The last connection checkpoints the WAL into the database file and removes it. */
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static enum ot_err sl_open(const char *path, struct srv_store **ret, struct ot_diag *d)
{
    if (!sqlite3_threadsafe())
        return ot_diag_set(d, OT_ERR_UNSUPPORTED, "this SQLite library is built without threads");
    struct sqlite_store *s = calloc(1, sizeof(*s));
    if (!s)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    s->base.ops = &srv__store_sqlite_ops;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot create a mutex");
    }
    int64_t version = 0;
    enum ot_err err = open_db(s, path, d);
    if (!err)
        err = configure(s, d);
    if (!err)
        err = check_file(s, &version, d);
    if (!err)
        err = use_wal(s, d);
    if (!err)
        err = migrate(s, version, d);
    if (!err)
        err = prepare_all(s, d);
    /* The file may be new: make its name as durable as its content. */
    if (!err)
        err = ot_fsync_parent(path, d);
    if (err) {
        sl_close(&s->base);
        return ot_diag_prefix(d, err, "database '%s'", path);
    }
    *ret = &s->base;
    return OT_OK;
}

static int sl_schema_version(struct srv_store *base)
{
    return ((struct sqlite_store *)base)->version;
}

/* ---- meta ------------------------------------------------------------------------------------ */

static enum ot_err sl_meta_get(struct srv_store *base, const char *key, char **ret,
                               struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_META_GET);
    int rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return ot_diag_set(d, OT_ERR_NOENT, "no setting '%s'", key);
    if (rc != SQLITE_ROW)
        return db_error(s, rc, d, "read setting '%s'", key);
    return column_dup(st, 0, false, ret, d);
}

static enum ot_err sl_meta_set(struct srv_store *base, const char *key, const char *value,
                               struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_META_SET);
    int rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? OT_OK : db_error(s, rc, d, "write setting '%s'", key);
}

/* ---- tokens ---------------------------------------------------------------------------------- */

static int bind_token(sqlite3_stmt *st, const struct srv_token *t)
{
    int rc = sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, t->scopes);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, t->created_at);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, t->expires_at);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 5, t->revoked);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 6, t->hash, SRV_TOKEN_HASH_LEN, SQLITE_STATIC);
    return rc;
}

/* A row of TOKEN_COLUMNS. The checks guard the fixed-size fields against a damaged file. */
static enum ot_err read_token(sqlite3_stmt *st, struct srv_token *t, struct ot_diag *d)
{
    memset(t, 0, sizeof(*t));
    t->id = sqlite3_column_int64(st, 0);
    const unsigned char *name = sqlite3_column_text(st, 1);
    int name_len = sqlite3_column_bytes(st, 1);
    const void *hash = sqlite3_column_blob(st, 6);
    int hash_len = sqlite3_column_bytes(st, 6);
    if (!name || name_len < 1 || name_len >= SRV_TOKEN_NAME_MAX || !hash ||
        hash_len != SRV_TOKEN_HASH_LEN)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: token %lld",
                           (long long)t->id);
    memcpy(t->name, name, (size_t)name_len);
    t->scopes = (uint32_t)sqlite3_column_int64(st, 2);
    t->created_at = sqlite3_column_int64(st, 3);
    t->expires_at = sqlite3_column_int64(st, 4);
    t->revoked = sqlite3_column_int(st, 5) != 0;
    memcpy(t->hash, hash, SRV_TOKEN_HASH_LEN);
    return OT_OK;
}

static enum ot_err sl_token_create(struct srv_store *base, struct srv_token *t, struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_TOKEN_INSERT);
    int64_t id = 0;
    bool found = false;
    int rc = bind_token(st, t);
    if (rc == SQLITE_OK)
        rc = step_returning(st, &id, &found);
    if (rc != SQLITE_DONE || !found)
        return db_error(s, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, d, "store token '%s'",
                        t->name);
    t->id = id;
    return OT_OK;
}

static enum ot_err sl_token_by_hash(struct srv_store *base, const uint8_t hash[SRV_TOKEN_HASH_LEN],
                                    struct srv_token *ret, struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_TOKEN_BY_HASH);
    int rc = sqlite3_bind_blob(st, 1, hash, SRV_TOKEN_HASH_LEN, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return ot_diag_set(d, OT_ERR_NOENT, "no such token");
    if (rc != SQLITE_ROW)
        return db_error(s, rc, d, "look up a token");
    return read_token(st, ret, d);
}

static enum ot_err sl_token_list(struct srv_store *base, struct srv_token **ret, size_t *ret_n,
                                 struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_TOKEN_LIST);
    size_t n = 0, cap = 16;
    _cleanup_free_ struct srv_token *list = calloc(cap, sizeof(*list));
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            struct srv_token *bigger = reallocarray(list, cap * 2, sizeof(*list));
            if (!bigger)
                return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
            list = bigger;
            cap *= 2;
        }
        enum ot_err err = read_token(st, &list[n], d);
        if (err)
            return err;
        n++;
    }
    if (rc != SQLITE_DONE)
        return db_error(s, rc, d, "list tokens");
    *ret = TAKE_PTR(list);
    *ret_n = n;
    return OT_OK;
}

static enum ot_err sl_token_revoke(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_TOKEN_REVOKE);
    int64_t got = 0;
    bool found = false;
    int rc = sqlite3_bind_int64(st, 1, id);
    if (rc == SQLITE_OK)
        rc = step_returning(st, &got, &found);
    if (rc != SQLITE_DONE)
        return db_error(s, rc, d, "revoke token %lld", (long long)id);
    if (!found)
        return ot_diag_set(d, OT_ERR_NOENT, "no token with id %lld", (long long)id);
    return OT_OK;
}

/* ---- audit log ------------------------------------------------------------------------------- */

static enum ot_err sl_audit_add(struct srv_store *base, int64_t at, const char *actor,
                                const char *action, const char *object, const char *detail,
                                struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_AUDIT_INSERT);
    int rc = sqlite3_bind_int64(st, 1, at);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, actor, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, object, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC); /* NULL binds NULL */
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? OT_OK : db_error(s, rc, d, "add audit entry '%s'", action);
}

static enum ot_err read_audit(sqlite3_stmt *st, struct srv_audit *e, struct ot_diag *d)
{
    e->id = sqlite3_column_int64(st, 0);
    e->at = sqlite3_column_int64(st, 1);
    enum ot_err err = column_dup(st, 2, false, &e->actor, d);
    if (!err)
        err = column_dup(st, 3, false, &e->action, d);
    if (!err)
        err = column_dup(st, 4, false, &e->object, d);
    if (!err)
        err = column_dup(st, 5, true, &e->detail, d);
    return err;
}

static enum ot_err sl_audit_list(struct srv_store *base, int64_t after_id, size_t limit,
                                 struct srv_audit **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_AUDIT_LIST);
    struct srv_audit *list = calloc(limit, sizeof(*list)); /* limit ≤ SRV_AUDIT_LIST_MAX */
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    size_t n = 0;
    enum ot_err err = OT_OK;
    int rc = sqlite3_bind_int64(st, 1, after_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)limit);
    while (!err && rc == SQLITE_OK && n < limit) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            err = read_audit(st, &list[n++], d); /* a half-read entry is freed below */
            rc = SQLITE_OK;
        }
    }
    if (!err && rc != SQLITE_OK && rc != SQLITE_DONE)
        err = db_error(s, rc, d, "list the audit log");
    if (err) {
        srv_audit_list_free(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

/* ---- statements with arguments, for the operations below ------------------------------------- */

/* One bound parameter. ARG_I converts to int64_t, so any integer type is safe to pass. */
struct arg {
    char type;        /* 'i' integer, 't' text (NULL binds NULL), 'k' device public key */
    int64_t i;
    const void *p;
};
#define ARG_I(x) ((struct arg){'i', (int64_t)(x), NULL})
#define ARG_T(x) ((struct arg){'t', 0, (const char *)(x)})
#define ARG_K(x) ((struct arg){'k', 0, (const uint8_t *)(x)})
/* The array and its length, as the two arguments the helpers take. */
#define ARGS(...)                                                                                  \
    (const struct arg[]){__VA_ARGS__}, OT_ARRAY_SIZE(((const struct arg[]){__VA_ARGS__}))

#define LOCKED(s, base) _cleanup_(unlock_storep) struct sqlite_store *s = lock_store(base)

static int bind_args(sqlite3_stmt *st, const struct arg *a, size_t n)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        int col = (int)i + 1;
        if (a[i].type == 'i')
            rc = sqlite3_bind_int64(st, col, a[i].i);
        else if (a[i].type == 'k')
            rc = sqlite3_bind_blob(st, col, a[i].p, SRV_DEVICE_PUBKEY_LEN, SQLITE_STATIC);
        else
            rc = sqlite3_bind_text(st, col, a[i].p, -1, SQLITE_STATIC);
    }
    return rc;
}

static void reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs statement id to its end and resets it. *ret_found (may be NULL) says whether it produced a
 * row, and *ret_int (may be NULL) is the first row's first column. */
static enum ot_err run_stmt(struct sqlite_store *s, enum stmt_id id, const struct arg *a, size_t n,
                            bool *ret_found, int64_t *ret_int, struct ot_diag *d, const char *fmt,
                            ...) OT_PRINTF(8, 9);

static enum ot_err run_stmt(struct sqlite_store *s, enum stmt_id id, const struct arg *a, size_t n,
                            bool *ret_found, int64_t *ret_int, struct ot_diag *d, const char *fmt,
                            ...)
{
    sqlite3_stmt *st = s->stmt[id];
    bool found = false;
    int rc = bind_args(st, a, n);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && !found && ret_int)
            *ret_int = sqlite3_column_int64(st, 0);
        found |= rc == SQLITE_ROW;
    }
    enum ot_err err = OT_OK;
    if (rc != SQLITE_DONE) {
        char what[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        err = map_error(s->db, rc, what, d);
    }
    reset(st);
    if (!err && ret_found)
        *ret_found = found;
    return err;
}

/* Transactions: BEGIN IMMEDIATE takes the write lock at once, so a transaction that reads before
 * it writes never fails half-way with SQLITE_BUSY (another process may hold the file). */
static enum ot_err begin(struct sqlite_store *s, struct ot_diag *d)
{
    return exec(s, "BEGIN IMMEDIATE", "start a transaction", d);
}

/* Commits when err is OT_OK, rolls back otherwise; returns the outcome. */
static enum ot_err end(struct sqlite_store *s, enum ot_err err, struct ot_diag *d)
{
    if (!err)
        err = exec(s, "COMMIT", "commit", d);
    if (err && !sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

/* How to read one kind of row into its struct (read_*) and free a list of them. */
struct row_kind {
    size_t size;
    enum ot_err (*read)(sqlite3_stmt *st, void *elem, struct ot_diag *d);
    void (*free_list)(void *list, size_t n);
};

/* The first row of statement id into *ret (a struct of kind k), written only on success;
 * OT_ERR_NOENT without a message when there is none: the caller says what was missing. */
static enum ot_err query_one(struct sqlite_store *s, enum stmt_id id, const struct arg *a,
                             size_t n, const struct row_kind *k, void *ret, struct ot_diag *d)
{
    sqlite3_stmt *st = s->stmt[id];
    int rc = bind_args(st, a, n);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    enum ot_err err = OT_OK;
    void *row = NULL;
    if (rc == SQLITE_DONE)
        err = OT_ERR_NOENT;
    else if (rc != SQLITE_ROW)
        err = db_error(s, rc, d, "read the database");
    else if (!(row = calloc(1, k->size)))
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    else
        err = k->read(st, row, d);
    reset(st);
    if (!err)
        memcpy(ret, row, k->size);
    else if (row)
        k->free_list(row, 1);
    if (!err)
        free(row);
    return err;
}

/* Up to limit rows of statement id (limit ≤ SRV_LIST_MAX) into a new array of kind k. */
static enum ot_err query_list(struct sqlite_store *s, enum stmt_id id, const struct arg *a,
                              size_t nargs, const struct row_kind *k, size_t limit, void **ret,
                              size_t *ret_n, struct ot_diag *d)
{
    sqlite3_stmt *st = s->stmt[id];
    char *list = calloc(limit, k->size);
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    size_t n = 0;
    enum ot_err err = OT_OK;
    int rc = bind_args(st, a, nargs);
    while (!err && rc == SQLITE_OK && n < limit) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            err = k->read(st, list + n++ * k->size, d); /* a half-read row is freed below */
            rc = SQLITE_OK;
        }
    }
    if (!err && rc != SQLITE_OK && rc != SQLITE_DONE)
        err = db_error(s, rc, d, "read the database");
    reset(st);
    if (err) {
        k->free_list(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

/* A text column into a fixed field of size max (NUL included); anything longer is damage. */
static enum ot_err column_copy(sqlite3_stmt *st, int col, char *out, size_t max, struct ot_diag *d)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (!text || n < 0 || (size_t)n >= max)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: %s",
                           sqlite3_column_name(st, col));
    memcpy(out, text, (size_t)n);
    out[n] = '\0';
    return OT_OK;
}

static enum ot_err bump_generation(struct sqlite_store *s, struct ot_diag *d)
{
    return run_stmt(s, ST_GENERATION_BUMP, NULL, 0, NULL, NULL, d, "bump the generation");
}

/* ---- devices --------------------------------------------------------------------------------- */

/* A row of DEVICE_COLUMNS. */
static enum ot_err read_device(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_device *dev = elem;
    dev->id = sqlite3_column_int64(st, 0);
    const void *key = sqlite3_column_blob(st, 1);
    if (!key || sqlite3_column_bytes(st, 1) != SRV_DEVICE_PUBKEY_LEN)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: device %lld",
                           (long long)dev->id);
    memcpy(dev->pubkey, key, SRV_DEVICE_PUBKEY_LEN);
    dev->status = (enum srv_device_status)sqlite3_column_int(st, 3);
    dev->created_at = sqlite3_column_int64(st, 5);
    dev->updated_at = sqlite3_column_int64(st, 6);
    dev->last_seen = sqlite3_column_int64(st, 7);
    enum ot_err err = column_copy(st, 4, dev->device_type, sizeof(dev->device_type), d);
    if (!err)
        err = column_dup(st, 2, false, &dev->identity, d);
    if (!err)
        err = column_dup(st, 8, false, &dev->attributes, d);
    if (!err)
        err = column_dup(st, 9, false, &dev->installed, d);
    if (!err)
        err = srv__store_split_tags((const char *)sqlite3_column_text(st, 10), &dev->tags,
                                    &dev->ntags, d);
    return err;
}

static void free_devices(void *list, size_t n) { srv_device_list_free(list, n); }

static const struct row_kind device_rows = {sizeof(struct srv_device), read_device, free_devices};

static enum ot_err insert_tags(struct sqlite_store *s, int64_t id, const char *const *tags,
                               size_t n, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    for (size_t i = 0; !err && i < n; i++)
        err = run_stmt(s, ST_TAG_INSERT, ARGS(ARG_I(id), ARG_T(tags[i])), NULL, NULL, d,
                       "tag device %lld", (long long)id);
    return err;
}

static enum ot_err sl_device_create(struct srv_store *base, const struct srv_device *dev,
                                    int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    int64_t id = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = run_stmt(s, ST_DEVICE_INSERT,
                       ARGS(ARG_K(dev->pubkey), ARG_T(dev->identity), ARG_I(dev->status),
                            ARG_T(dev->device_type), ARG_I(dev->created_at),
                            ARG_T(dev->attributes), ARG_T(dev->installed)),
                       NULL, &id, d, "add device");
    if (!err)
        err = insert_tags(s, id, (const char *const *)dev->tags, dev->ntags, d);
    err = end(s, err, d);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err sl_device_get(struct srv_store *base, int64_t id, struct srv_device *ret,
                                 struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_DEVICE_GET, ARGS(ARG_I(id)), &device_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no device with id %lld", (long long)id);
    return err;
}

static enum ot_err sl_device_by_pubkey(struct srv_store *base,
                                       const uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN],
                                       struct srv_device *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_DEVICE_BY_PUBKEY, ARGS(ARG_K(pubkey)), &device_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no device with this public key");
    return err;
}

/* An UPDATE ... WHERE id = ?1 RETURNING id of one device: OT_ERR_NOENT when there is none. */
static enum ot_err update_device(struct sqlite_store *s, enum stmt_id id, const struct arg *a,
                                 size_t n, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, id, a, n, &found, NULL, d, "update device %lld",
                               (long long)a[0].i);
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_NOENT, "no device with id %lld", (long long)a[0].i);
    return err;
}

static enum ot_err sl_device_set_status(struct srv_store *base, int64_t id,
                                        enum srv_device_status status, int64_t now,
                                        struct ot_diag *d)
{
    LOCKED(s, base);
    return update_device(s, ST_DEVICE_SET_STATUS, ARGS(ARG_I(id), ARG_I(status), ARG_I(now)), d);
}

static enum ot_err sl_device_set_installed(struct srv_store *base, int64_t id,
                                           const char *device_type, const char *installed,
                                           int64_t now, struct ot_diag *d)
{
    LOCKED(s, base);
    return update_device(s, ST_DEVICE_SET_INSTALLED,
                         ARGS(ARG_I(id), ARG_T(device_type), ARG_T(installed), ARG_I(now)), d);
}

static enum ot_err sl_device_set_attributes(struct srv_store *base, int64_t id,
                                            const char *attributes, int64_t now,
                                            struct ot_diag *d)
{
    LOCKED(s, base);
    return update_device(s, ST_DEVICE_SET_ATTRIBUTES,
                         ARGS(ARG_I(id), ARG_T(attributes), ARG_I(now)), d);
}

static enum ot_err sl_device_set_tags(struct srv_store *base, int64_t id, const char *const *tags,
                                      size_t ntags, int64_t now, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = update_device(s, ST_DEVICE_SET_UPDATED, ARGS(ARG_I(id), ARG_I(now)), d);
    if (!err)
        err = run_stmt(s, ST_TAGS_DELETE, ARGS(ARG_I(id)), NULL, NULL, d, "untag device %lld",
                       (long long)id);
    if (!err)
        err = insert_tags(s, id, tags, ntags, d);
    return end(s, err, d);
}

/* The check-in path's batch: one transaction (one WAL fsync) for all of them, one prepared UPDATE
 * per device. */
static enum ot_err sl_device_touch(struct srv_store *base, const int64_t *ids, const int64_t *at,
                                   size_t n, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    for (size_t i = 0; !err && i < n; i++)
        err = run_stmt(s, ST_DEVICE_TOUCH, ARGS(ARG_I(ids[i]), ARG_I(at[i])), NULL, NULL, d,
                       "update last-seen time of device %lld", (long long)ids[i]);
    return end(s, err, d);
}

static enum ot_err sl_device_list(struct srv_store *base, const struct srv_device_filter *f,
                                  struct srv_device **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    return query_list(s, ST_DEVICE_LIST,
                      ARGS(ARG_I(f->after_id), ARG_I(f->status), ARG_T(f->device_type),
                           ARG_T(f->tag), ARG_I(f->limit)),
                      &device_rows, f->limit, (void **)ret, ret_n, d);
}

static enum ot_err sl_device_ids_by_tag(struct srv_store *base, const char *tag, int64_t **ret,
                                        size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    sqlite3_stmt *st = s->stmt[ST_DEVICE_IDS_BY_TAG];
    _cleanup_free_ int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = bind_args(st, ARGS(ARG_T(tag)));
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t bigger = cap ? cap * 2 : 64;
            int64_t *p = reallocarray(ids, bigger, sizeof(*ids));
            if (!p) {
                reset(st);
                return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
            }
            ids = p;
            cap = bigger;
        }
        ids[n++] = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    enum ot_err err =
        rc == SQLITE_DONE ? OT_OK : db_error(s, rc, d, "list devices tagged '%s'", tag);
    reset(st);
    if (err)
        return err;
    *ret = TAKE_PTR(ids);
    *ret_n = n;
    return OT_OK;
}

/* ---- artifacts ------------------------------------------------------------------------------- */

/* A row of ARTIFACT_COLUMNS. */
static enum ot_err read_artifact(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_artifact *a = elem;
    a->id = sqlite3_column_int64(st, 0);
    a->size = (uint64_t)sqlite3_column_int64(st, 4);
    a->created_at = sqlite3_column_int64(st, 8);
    enum ot_err err = column_copy(st, 3, a->sha256, sizeof(a->sha256), d);
    if (!err)
        err = column_dup(st, 1, false, &a->name, d);
    if (!err)
        err = column_dup(st, 2, false, &a->version, d);
    if (!err)
        err = column_dup(st, 5, false, &a->manifest, d);
    if (!err)
        err = column_dup(st, 6, false, &a->signatures, d);
    if (!err)
        err = column_dup(st, 7, false, &a->device_types, d);
    if (!err)
        err = column_dup(st, 9, false, &a->uploaded_by, d);
    if (!err)
        err = column_dup(st, 10, false, &a->channel, d);
    return err;
}

static void free_artifacts(void *list, size_t n) { srv_artifact_list_free(list, n); }

static const struct row_kind artifact_rows = {sizeof(struct srv_artifact), read_artifact,
                                              free_artifacts};

/* After a refused insert: which of the two unique keys, for the message. */
static enum ot_err artifact_conflict(struct sqlite_store *s, const struct srv_artifact *a,
                                     struct ot_diag *d)
{
    sqlite3_stmt *st = s->stmt[ST_ARTIFACT_CONFLICT];
    int rc = bind_args(st, ARGS(ARG_T(a->sha256), ARG_T(a->name), ARG_T(a->version)));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    bool same_sha = rc == SQLITE_ROW && sqlite3_column_int(st, 1);
    reset(st);
    if (same_sha)
        return ot_diag_set(d, OT_ERR_EXISTS, "sha256 %s is already stored as artifact %lld",
                           a->sha256, (long long)id);
    return ot_diag_set(d, OT_ERR_EXISTS, "%s version %s is already stored as artifact %lld",
                       a->name, a->version, (long long)id);
}

static enum ot_err sl_artifact_create(struct srv_store *base, const struct srv_artifact *a,
                                      int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    int64_t id = 0;
    enum ot_err err = run_stmt(s, ST_ARTIFACT_INSERT,
                               ARGS(ARG_T(a->name), ARG_T(a->version), ARG_T(a->sha256),
                                    ARG_I(a->size), ARG_T(a->manifest), ARG_T(a->signatures),
                                    ARG_T(a->device_types), ARG_I(a->created_at),
                                    ARG_T(a->uploaded_by), ARG_T(a->channel)),
                               NULL, &id, d, "store artifact %s %s", a->name, a->version);
    if (err == OT_ERR_EXISTS)
        return artifact_conflict(s, a, d);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err sl_artifact_get(struct srv_store *base, int64_t id, struct srv_artifact *ret,
                                   struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_ARTIFACT_GET, ARGS(ARG_I(id)), &artifact_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no artifact with id %lld", (long long)id);
    return err;
}

static enum ot_err sl_artifact_by_sha256(struct srv_store *base, const char *sha256_hex,
                                         struct srv_artifact *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_ARTIFACT_BY_SHA256, ARGS(ARG_T(sha256_hex)), &artifact_rows,
                                ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no artifact with sha256 %s", sha256_hex);
    return err;
}

static enum ot_err sl_artifact_list(struct srv_store *base, int64_t after_id, size_t limit,
                                    struct srv_artifact **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    return query_list(s, ST_ARTIFACT_LIST, ARGS(ARG_I(after_id), ARG_I(limit)), &artifact_rows,
                      limit, (void **)ret, ret_n, d);
}

static enum ot_err delete_artifact(struct sqlite_store *s, int64_t id, struct ot_diag *d)
{
    bool used = false, found = false;
    int64_t user = 0;
    enum ot_err err = run_stmt(s, ST_ARTIFACT_USER, ARGS(ARG_I(id)), &used, &user, d,
                               "delete artifact %lld", (long long)id);
    if (!err && used)
        return ot_diag_set(d, OT_ERR_EXISTS, "artifact %lld is used by active deployment %lld",
                           (long long)id, (long long)user);
    if (!err)
        err = run_stmt(s, ST_ARTIFACT_DELETE, ARGS(ARG_I(id)), &found, NULL, d,
                       "delete artifact %lld", (long long)id);
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_NOENT, "no artifact with id %lld", (long long)id);
    return err;
}

/* The check and the delete in one transaction: no deployment can start using it in between. */
static enum ot_err sl_artifact_delete(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = delete_artifact(s, id, d);
    return end(s, err, d);
}

/* ---- deployment templates -------------------------------------------------------------------- */

/* A row of TEMPLATE_COLUMNS. */
static enum ot_err read_template(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_template *t = elem;
    t->id = sqlite3_column_int64(st, 0);
    t->enabled = sqlite3_column_int(st, 4) != 0;
    t->created_at = sqlite3_column_int64(st, 5);
    enum ot_err err = column_dup(st, 1, false, &t->name, d);
    if (!err)
        err = column_dup(st, 2, false, &t->channel, d);
    if (!err)
        err = column_dup(st, 3, false, &t->body, d);
    if (!err)
        err = column_dup(st, 6, false, &t->created_by, d);
    return err;
}

static void free_templates(void *list, size_t n) { srv_template_list_free(list, n); }

static const struct row_kind template_rows = {sizeof(struct srv_template), read_template,
                                              free_templates};

static enum ot_err no_template(int64_t id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "no template with id %lld", (long long)id);
}

static enum ot_err sl_template_create(struct srv_store *base, const struct srv_template *t,
                                      int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    int64_t id = 0;
    enum ot_err err = run_stmt(s, ST_TEMPLATE_INSERT,
                               ARGS(ARG_T(t->name), ARG_T(t->channel), ARG_T(t->body),
                                    ARG_I(t->enabled), ARG_I(t->created_at),
                                    ARG_T(t->created_by)),
                               NULL, &id, d, "store template '%s'", t->name);
    if (err == OT_ERR_EXISTS) /* the one unique key besides the id */
        return ot_diag_set(d, err, "a template named '%s' exists already", t->name);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err sl_template_get(struct srv_store *base, int64_t id, struct srv_template *ret,
                                   struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_TEMPLATE_GET, ARGS(ARG_I(id)), &template_rows, ret, d);
    return err == OT_ERR_NOENT ? no_template(id, d) : err;
}

static enum ot_err sl_template_list(struct srv_store *base, const char *channel,
                                    int64_t after_id, size_t limit, struct srv_template **ret,
                                    size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    if (!channel)
        return query_list(s, ST_TEMPLATE_LIST, ARGS(ARG_I(after_id), ARG_I(limit)),
                          &template_rows, limit, (void **)ret, ret_n, d);
    return query_list(s, ST_TEMPLATE_LIST_CHANNEL,
                      ARGS(ARG_T(channel), ARG_I(after_id), ARG_I(limit)), &template_rows, limit,
                      (void **)ret, ret_n, d);
}

/* An UPDATE or DELETE ... WHERE id = ?1 RETURNING id of one template. */
static enum ot_err change_template(struct sqlite_store *s, enum stmt_id id, const struct arg *a,
                                   size_t n, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, id, a, n, &found, NULL, d, "change template %lld",
                               (long long)a[0].i);
    return !err && !found ? no_template(a[0].i, d) : err;
}

static enum ot_err sl_template_set_enabled(struct srv_store *base, int64_t id, bool enabled,
                                           struct ot_diag *d)
{
    LOCKED(s, base);
    return change_template(s, ST_TEMPLATE_SET_ENABLED, ARGS(ARG_I(id), ARG_I(enabled)), d);
}

static enum ot_err sl_template_delete(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED(s, base);
    return change_template(s, ST_TEMPLATE_DELETE, ARGS(ARG_I(id)), d);
}

/* ---- deployments ----------------------------------------------------------------------------- */

/* A row of DEPLOYMENT_COLUMNS. */
static enum ot_err read_deployment(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_deployment *dep = elem;
    dep->id = sqlite3_column_int64(st, 0);
    dep->artifact_id = sqlite3_column_int64(st, 2);
    dep->status = (enum srv_deployment_status)sqlite3_column_int(st, 6);
    dep->created_at = sqlite3_column_int64(st, 7);
    dep->finished_at = sqlite3_column_int64(st, 8);
    dep->ndevices = (size_t)sqlite3_column_int64(st, 10);
    enum ot_err err = column_dup(st, 1, false, &dep->name, d);
    if (!err)
        err = column_dup(st, 3, false, &dep->artifact_name, d);
    if (!err)
        err = column_dup(st, 4, false, &dep->artifact_version, d);
    if (!err)
        err = column_dup(st, 5, false, &dep->target, d);
    if (!err)
        err = column_dup(st, 9, false, &dep->created_by, d);
    return err;
}

static void free_deployments(void *list, size_t n) { srv_deployment_list_free(list, n); }

static const struct row_kind deployment_rows = {sizeof(struct srv_deployment), read_deployment,
                                                free_deployments};

/* A row of DD_COLUMNS. */
static enum ot_err read_dd(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_dd *dd = elem;
    dd->deployment_id = sqlite3_column_int64(st, 0);
    dd->device_id = sqlite3_column_int64(st, 1);
    dd->status = (enum srv_dd_status)sqlite3_column_int(st, 2);
    dd->progress = sqlite3_column_int(st, 3);
    dd->updated_at = sqlite3_column_int64(st, 5);
    dd->seq = sqlite3_column_int64(st, 6);
    dd->attempts = (uint32_t)sqlite3_column_int64(st, 7);
    return column_dup(st, 4, false, &dd->message, d);
}

static void free_dds(void *list, size_t n) { srv_dd_list_free(list, n); }

static const struct row_kind dd_rows = {sizeof(struct srv_dd), read_dd, free_dds};

static enum ot_err read_event(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_dd_event *e = elem;
    e->id = sqlite3_column_int64(st, 0);
    e->at = sqlite3_column_int64(st, 1);
    e->status = (enum srv_dd_status)sqlite3_column_int(st, 2);
    e->progress = sqlite3_column_int(st, 3);
    enum ot_err err = column_dup(st, 4, false, &e->message, d);
    if (!err)
        err = column_dup(st, 5, true, &e->log, d);
    return err;
}

static void free_events(void *list, size_t n) { srv_dd_event_list_free(list, n); }

static const struct row_kind event_rows = {sizeof(struct srv_dd_event), read_event, free_events};

static enum ot_err insert_deployment(struct sqlite_store *s, const struct srv_deployment *dep,
                                     int64_t *ret_id, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_DEPLOYMENT_INSERT,
                               ARGS(ARG_T(dep->name), ARG_I(dep->artifact_id), ARG_T(dep->target),
                                    ARG_I(dep->status), ARG_I(dep->created_at),
                                    ARG_I(dep->finished_at), ARG_T(dep->created_by),
                                    ARG_I(dep->ndevices)),
                               &found, ret_id, d, "create deployment '%s'", dep->name);
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_NOENT, "no artifact with id %lld",
                          (long long)dep->artifact_id);
    return err;
}

/* A device that does not exist fails the foreign key, which SQLite checks at each statement. */
static enum ot_err insert_dd(struct sqlite_store *s, int64_t deployment_id, int64_t device_id,
                             bool skipped, int64_t seq, const char *skip_message, int64_t at,
                             struct ot_diag *d)
{
    sqlite3_stmt *st = s->stmt[ST_DD_INSERT];
    int rc = bind_args(st, ARGS(ARG_I(deployment_id), ARG_I(device_id),
                                ARG_I(skipped ? SRV_DD_SKIPPED : SRV_DD_PENDING),
                                ARG_T(skipped ? skip_message : ""), ARG_I(at), ARG_I(seq)));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    enum ot_err err = OT_OK;
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        err = ot_diag_set(d, OT_ERR_INVALID, "device %lld does not exist", (long long)device_id);
    else if (rc != SQLITE_DONE)
        err = db_error(s, rc, d, "add device %lld to the deployment", (long long)device_id);
    reset(st);
    return err;
}

static enum ot_err insert_rollout(struct sqlite_store *s, int64_t deployment_id,
                                  const struct srv_rollout *r, struct ot_diag *d)
{
    return run_stmt(s, ST_ROLLOUT_INSERT,
                    ARGS(ARG_I(deployment_id), ARG_T(r->policy), ARG_I(r->state), ARG_I(r->phase),
                         ARG_I(r->released), ARG_I(r->phase_started_at),
                         ARG_I(r->phase_ready_at), ARG_T(r->reason), ARG_I(r->updated_at),
                         ARG_I(r->base_failed), ARG_I(r->base_finished)),
                    NULL, NULL, d, "create the rollout of deployment %lld",
                    (long long)deployment_id);
}

static enum ot_err sl_deployment_create(struct srv_store *base, const struct srv_deployment *dep,
                                        const int64_t *device_ids, const bool *skipped,
                                        const int64_t *seqs, size_t ndevices,
                                        const char *skip_message,
                                        const struct srv_rollout *rollout, int64_t *ret_id,
                                        struct ot_diag *d)
{
    LOCKED(s, base);
    int64_t id = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = insert_deployment(s, dep, &id, d);
    for (size_t i = 0; !err && i < ndevices; i++)
        err = insert_dd(s, id, device_ids[i], skipped[i], seqs ? seqs[i] : 0, skip_message,
                        dep->created_at, d);
    if (!err && rollout)
        err = insert_rollout(s, id, rollout, d);
    if (!err)
        err = bump_generation(s, d);
    err = end(s, err, d);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err sl_deployment_get(struct srv_store *base, int64_t id,
                                     struct srv_deployment *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_DEPLOYMENT_GET, ARGS(ARG_I(id)), &deployment_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no deployment with id %lld", (long long)id);
    return err;
}

static enum ot_err sl_deployment_list(struct srv_store *base, enum srv_deployment_status status,
                                      int64_t before_id, size_t limit,
                                      struct srv_deployment **ret, size_t *ret_n,
                                      struct ot_diag *d)
{
    LOCKED(s, base);
    return query_list(s, ST_DEPLOYMENT_LIST, ARGS(ARG_I(status), ARG_I(before_id), ARG_I(limit)),
                      &deployment_rows, limit, (void **)ret, ret_n, d);
}

/* OT_ERR_NOENT for an unknown deployment; *ret_status (may be NULL) is its status. */
static enum ot_err deployment_status(struct sqlite_store *s, int64_t id, int64_t *ret_status,
                                     struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_DEPLOYMENT_STATUS, ARGS(ARG_I(id)), &found, ret_status, d,
                               "read deployment %lld", (long long)id);
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_NOENT, "no deployment with id %lld", (long long)id);
    return err;
}

static enum ot_err sl_deployment_rollup(struct srv_store *base, int64_t id,
                                        uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = deployment_status(s, id, NULL, d);
    if (err)
        return err;
    uint64_t got[SRV_DD__MAX] = {0};
    sqlite3_stmt *st = s->stmt[ST_DEPLOYMENT_ROLLUP];
    int rc = bind_args(st, ARGS(ARG_I(id)));
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int status = sqlite3_column_int(st, 0);
        if (status >= SRV_DD_PENDING && status < SRV_DD__MAX)
            got[status] = (uint64_t)sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        err = db_error(s, rc, d, "count the rows of deployment %lld", (long long)id);
    reset(st);
    if (!err)
        memcpy(counts, got, sizeof(got));
    return err;
}

static enum ot_err sl_deployment_devices(struct srv_store *base, int64_t id,
                                         int64_t after_device_id, size_t limit,
                                         struct srv_dd **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = deployment_status(s, id, NULL, d);
    if (err)
        return err;
    return query_list(s, ST_DEPLOYMENT_DEVICES, ARGS(ARG_I(id), ARG_I(after_device_id),
                                                     ARG_I(limit)),
                      &dd_rows, limit, (void **)ret, ret_n, d);
}

static enum ot_err cancel_deployment(struct sqlite_store *s, int64_t id, int64_t now,
                                     struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_DEPLOYMENT_CANCEL, ARGS(ARG_I(id), ARG_I(now)), &found, NULL,
                               d, "cancel deployment %lld", (long long)id);
    if (!err && !found) {
        err = deployment_status(s, id, NULL, d);
        return err ? err : ot_diag_set(d, OT_ERR_EXISTS, "deployment %lld is not active",
                                       (long long)id);
    }
    if (!err)
        err = run_stmt(s, ST_DD_CANCEL_PENDING, ARGS(ARG_I(id), ARG_I(now)), NULL, NULL, d,
                       "cancel the devices of deployment %lld", (long long)id);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err sl_deployment_cancel(struct srv_store *base, int64_t id, int64_t now,
                                        struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = cancel_deployment(s, id, now, d);
    return end(s, err, d);
}

static enum ot_err sl_device_next(struct srv_store *base, int64_t device_id, struct srv_dd *ret,
                                  struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_DEVICE_NEXT, ARGS(ARG_I(device_id)), &dd_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no work for device %lld", (long long)device_id);
    return err;
}

static enum ot_err no_row(int64_t deployment_id, int64_t device_id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "device %lld is not in deployment %lld",
                       (long long)device_id, (long long)deployment_id);
}

static enum ot_err sl_dd_get(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                             struct srv_dd *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_DD_GET, ARGS(ARG_I(deployment_id), ARG_I(device_id)),
                                &dd_rows, ret, d);
    return err == OT_ERR_NOENT ? no_row(deployment_id, device_id, d) : err;
}

/* The current status of a row; OT_ERR_NOENT when there is none. */
static enum ot_err dd_status(struct sqlite_store *s, int64_t deployment_id, int64_t device_id,
                             int64_t *ret, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_DD_STATUS, ARGS(ARG_I(deployment_id), ARG_I(device_id)),
                               &found, ret, d, "read device %lld in deployment %lld",
                               (long long)device_id, (long long)deployment_id);
    return !err && !found ? no_row(deployment_id, device_id, d) : err;
}

/* After a row became final: an active deployment with no row left to finish is finished. */
static enum ot_err finish_if_done(struct sqlite_store *s, int64_t deployment_id, int64_t at,
                                  struct ot_diag *d)
{
    bool finished = false;
    enum ot_err err = run_stmt(s, ST_DEPLOYMENT_FINISH, ARGS(ARG_I(deployment_id), ARG_I(at)),
                               &finished, NULL, d, "finish deployment %lld",
                               (long long)deployment_id);
    return !err && finished ? bump_generation(s, d) : err;
}

struct report {
    int64_t deployment_id, device_id;
    enum srv_dd_status status;
    int progress;
    const char *message, *log;
    int64_t at;
    uint32_t retries;
};

/* Whether a report sends the row back to PENDING instead (srv_store_dd_report_retry); *ret_attempts
 * is the row's count so far. */
static enum ot_err wants_retry(struct sqlite_store *s, const struct report *r, bool *ret_retry,
                               int64_t *ret_attempts, struct ot_diag *d)
{
    *ret_retry = false;
    if ((r->status != SRV_DD_FAILURE && r->status != SRV_DD_ROLLED_BACK) || r->retries == 0)
        return OT_OK;
    enum ot_err err = run_stmt(s, ST_DD_ATTEMPTS, ARGS(ARG_I(r->deployment_id),
                                                       ARG_I(r->device_id)),
                               NULL, ret_attempts, d, "read the attempts of device %lld",
                               (long long)r->device_id);
    if (!err)
        *ret_retry = *ret_attempts >= 0 && *ret_attempts < (int64_t)r->retries;
    return err;
}

/* The row back to PENDING with one more attempt; the event still says what the device reported. */
static enum ot_err write_retry(struct sqlite_store *s, const struct report *r, int64_t attempts,
                               struct ot_diag *d)
{
    char message[SRV_DD_MESSAGE_MAX + 1];
    srv__store_retry_message(message, (uint32_t)attempts + 1, r->retries, r->status, r->message);
    return run_stmt(s, ST_DD_RETRY,
                    ARGS(ARG_I(r->deployment_id), ARG_I(r->device_id), ARG_T(message),
                         ARG_I(r->at)),
                    NULL, NULL, d, "retry device %lld in deployment %lld",
                    (long long)r->device_id, (long long)r->deployment_id);
}

static enum ot_err write_report(struct sqlite_store *s, const struct report *r, struct ot_diag *d)
{
    return run_stmt(s, ST_DD_UPDATE,
                    ARGS(ARG_I(r->deployment_id), ARG_I(r->device_id), ARG_I(r->status),
                         ARG_I(r->progress), ARG_T(r->message), ARG_I(r->at)),
                    NULL, NULL, d, "update device %lld in deployment %lld",
                    (long long)r->device_id, (long long)r->deployment_id);
}

static enum ot_err apply_report(struct sqlite_store *s, const struct report *r, bool *ret_applied,
                                bool *ret_retried, enum srv_dd_status *ret_current,
                                struct ot_diag *d)
{
    int64_t current = 0, attempts = 0;
    enum ot_err err = dd_status(s, r->deployment_id, r->device_id, &current, d);
    if (err)
        return err;
    *ret_applied = !SRV_DD_IS_FINAL(current);
    *ret_current = *ret_applied ? r->status : (enum srv_dd_status)current;
    if (!*ret_applied)
        return OT_OK;
    err = wants_retry(s, r, ret_retried, &attempts, d);
    if (!err && *ret_retried) {
        *ret_current = SRV_DD_PENDING;
        err = write_retry(s, r, attempts, d);
    } else if (!err) {
        err = write_report(s, r, d);
    }
    if (!err)
        err = run_stmt(s, ST_EVENT_INSERT,
                       ARGS(ARG_I(r->deployment_id), ARG_I(r->device_id), ARG_I(r->at),
                            ARG_I(r->status), ARG_I(r->progress), ARG_T(r->message),
                            ARG_T(r->log)),
                       NULL, NULL, d, "record the report of device %lld",
                       (long long)r->device_id);
    if (!err && !*ret_retried && SRV_DD_IS_FINAL(r->status))
        err = finish_if_done(s, r->deployment_id, r->at, d);
    return err;
}

static enum ot_err sl_dd_report(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                                enum srv_dd_status status, int progress, const char *message,
                                const char *log, int64_t at, uint32_t retries, bool *ret_applied,
                                bool *ret_retried, enum srv_dd_status *ret_current,
                                struct ot_diag *d)
{
    LOCKED(s, base);
    const struct report r = {deployment_id, device_id, status, progress, message, log, at,
                             retries};
    bool applied = false, retried = false;
    enum srv_dd_status current = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = apply_report(s, &r, &applied, &retried, &current, d);
    err = end(s, err, d);
    if (!err) {
        *ret_applied = applied;
        *ret_retried = retried;
        *ret_current = current;
    }
    return err;
}

static enum ot_err skip_row(struct sqlite_store *s, int64_t deployment_id, int64_t device_id,
                            const char *message, int64_t at, struct ot_diag *d)
{
    bool skipped = false;
    enum ot_err err = run_stmt(s, ST_DD_SKIP,
                               ARGS(ARG_I(deployment_id), ARG_I(device_id), ARG_T(message),
                                    ARG_I(at)),
                               &skipped, NULL, d, "skip device %lld in deployment %lld",
                               (long long)device_id, (long long)deployment_id);
    if (!err && !skipped) /* not pending (a no-op), or no such row */
        return dd_status(s, deployment_id, device_id, NULL, d);
    if (!err)
        err = finish_if_done(s, deployment_id, at, d);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err sl_dd_skip(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                              const char *message, int64_t at, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = skip_row(s, deployment_id, device_id, message, at, d);
    return end(s, err, d);
}

/* ---- continuous membership ---- */

struct membership {
    int64_t deployment_id, device_id;
    bool skipped;
    const char *skip_message;
    int64_t at;
};

static enum ot_err device_exists(struct sqlite_store *s, int64_t id, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_DEVICE_EXISTS, ARGS(ARG_I(id)), &found, NULL, d,
                               "read device %lld", (long long)id);
    return !err && !found ? ot_diag_set(d, OT_ERR_NOENT, "no device with id %lld", (long long)id)
                          : err;
}

/* A new row's seq: after the highest one when the deployment has a rollout, else 0. */
static enum ot_err next_seq(struct sqlite_store *s, int64_t deployment_id, int64_t *ret,
                            struct ot_diag *d)
{
    bool staged = false;
    *ret = 0;
    enum ot_err err = run_stmt(s, ST_ROLLOUT_EXISTS, ARGS(ARG_I(deployment_id)), &staged, NULL, d,
                               "read the rollout of deployment %lld", (long long)deployment_id);
    if (!err && staged)
        err = run_stmt(s, ST_DD_MAX_SEQ, ARGS(ARG_I(deployment_id)), NULL, ret, d,
                       "read the rollout order of deployment %lld", (long long)deployment_id);
    if (!err && staged)
        (*ret)++;
    return err;
}

/* *ret_added stays false for a cancelled deployment or a device that has its row already; a
 * finished deployment is reopened. */
static enum ot_err add_member(struct sqlite_store *s, const struct membership *m, bool *ret_added,
                              int64_t *ret_seq, struct ot_diag *d)
{
    int64_t status = 0;
    bool has_row = false;
    enum ot_err err = deployment_status(s, m->deployment_id, &status, d);
    if (!err)
        err = device_exists(s, m->device_id, d);
    if (!err && status != SRV_DEPLOYMENT_CANCELLED)
        err = run_stmt(s, ST_DD_STATUS, ARGS(ARG_I(m->deployment_id), ARG_I(m->device_id)),
                       &has_row, NULL, d, "read device %lld in deployment %lld",
                       (long long)m->device_id, (long long)m->deployment_id);
    if (err || status == SRV_DEPLOYMENT_CANCELLED || has_row)
        return err;
    err = next_seq(s, m->deployment_id, ret_seq, d);
    if (!err)
        err = insert_dd(s, m->deployment_id, m->device_id, m->skipped, *ret_seq,
                        m->skip_message, m->at, d);
    if (!err)
        err = run_stmt(s, ST_DEPLOYMENT_GROW, ARGS(ARG_I(m->deployment_id)), NULL, NULL, d,
                       "count the devices of deployment %lld", (long long)m->deployment_id);
    if (!err && status == SRV_DEPLOYMENT_FINISHED && !m->skipped)
        err = run_stmt(s, ST_DEPLOYMENT_REOPEN, ARGS(ARG_I(m->deployment_id)), NULL, NULL, d,
                       "reopen deployment %lld", (long long)m->deployment_id);
    if (!err)
        err = bump_generation(s, d);
    *ret_added = !err;
    return err;
}

static enum ot_err sl_deployment_add_device(struct srv_store *base, int64_t deployment_id,
                                            int64_t device_id, bool skipped,
                                            const char *skip_message, int64_t at,
                                            bool *ret_added, int64_t *ret_seq, struct ot_diag *d)
{
    LOCKED(s, base);
    const struct membership m = {deployment_id, device_id, skipped, skip_message, at};
    bool added = false;
    int64_t seq = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = add_member(s, &m, &added, &seq, d);
    err = end(s, err, d);
    if (!err) {
        *ret_added = added;
        *ret_seq = seq;
    }
    return err;
}

static enum ot_err sl_dd_events(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                                int64_t after_id, size_t limit, struct srv_dd_event **ret,
                                size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = dd_status(s, deployment_id, device_id, NULL, d);
    if (err)
        return err;
    return query_list(s, ST_EVENTS,
                      ARGS(ARG_I(deployment_id), ARG_I(device_id), ARG_I(after_id),
                           ARG_I(limit)),
                      &event_rows, limit, (void **)ret, ret_n, d);
}

static enum ot_err sl_deployments_generation(struct srv_store *base, int64_t *ret,
                                             struct ot_diag *d)
{
    LOCKED(s, base);
    bool found = false;
    int64_t g = 0;
    enum ot_err err = run_stmt(s, ST_GENERATION_GET, NULL, 0, &found, &g, d,
                               "read the deployments generation");
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: no deployments generation");
    if (!err)
        *ret = g;
    return err;
}

/* ---- rollouts -------------------------------------------------------------------------------- */

/* A row of ROLLOUT_COLUMNS. */
static enum ot_err read_rollout(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_rollout *r = elem;
    r->deployment_id = sqlite3_column_int64(st, 0);
    r->state = (enum srv_rollout_state)sqlite3_column_int(st, 2);
    r->phase = sqlite3_column_int64(st, 3);
    r->released = sqlite3_column_int64(st, 4);
    r->phase_started_at = sqlite3_column_int64(st, 5);
    r->phase_ready_at = sqlite3_column_int64(st, 6);
    r->updated_at = sqlite3_column_int64(st, 8);
    r->base_failed = sqlite3_column_int64(st, 9);
    r->base_finished = sqlite3_column_int64(st, 10);
    enum ot_err err = column_dup(st, 1, false, &r->policy, d);
    if (!err)
        err = column_dup(st, 7, false, &r->reason, d);
    return err;
}

static void free_rollouts(void *list, size_t n) { srv_rollout_list_free(list, n); }

static const struct row_kind rollout_rows = {sizeof(struct srv_rollout), read_rollout,
                                             free_rollouts};

static enum ot_err read_rollout_event(sqlite3_stmt *st, void *elem, struct ot_diag *d)
{
    struct srv_rollout_event *e = elem;
    e->id = sqlite3_column_int64(st, 0);
    e->at = sqlite3_column_int64(st, 1);
    enum ot_err err = column_dup(st, 2, false, &e->kind, d);
    if (!err)
        err = column_dup(st, 3, false, &e->message, d);
    return err;
}

static void free_rollout_events(void *list, size_t n) { srv_rollout_event_list_free(list, n); }

static const struct row_kind rollout_event_rows = {sizeof(struct srv_rollout_event),
                                                   read_rollout_event, free_rollout_events};

/* Every row of statement id into a new array of kind k, grown as needed (for lists whose size
 * the caller does not bound: the rollouts of the active deployments). */
static enum ot_err query_all(struct sqlite_store *s, enum stmt_id id, const struct row_kind *k,
                             void **ret, size_t *ret_n, struct ot_diag *d)
{
    sqlite3_stmt *st = s->stmt[id];
    char *list = NULL;
    size_t n = 0, cap = 0;
    enum ot_err err = OT_OK;
    int rc = SQLITE_OK;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t grow = cap ? cap * 2 : 16;
            char *bigger = realloc(list, grow * k->size);
            if (!bigger) {
                err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
                break;
            }
            memset(bigger + cap * k->size, 0, (grow - cap) * k->size);
            list = bigger;
            cap = grow;
        }
        err = k->read(st, list + n++ * k->size, d); /* a half-read row is freed below */
    }
    if (!err && rc != SQLITE_DONE)
        err = db_error(s, rc, d, "read the database");
    reset(st);
    if (err) {
        k->free_list(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

static enum ot_err no_rollout(int64_t deployment_id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "deployment %lld has no rollout",
                       (long long)deployment_id);
}

/* OT_ERR_NOENT when the deployment has no rollout. */
static enum ot_err rollout_exists(struct sqlite_store *s, int64_t deployment_id,
                                  struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_ROLLOUT_EXISTS, ARGS(ARG_I(deployment_id)), &found, NULL, d,
                               "read the rollout of deployment %lld", (long long)deployment_id);
    return !err && !found ? no_rollout(deployment_id, d) : err;
}

static enum ot_err sl_rollout_get(struct srv_store *base, int64_t deployment_id,
                                  struct srv_rollout *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = query_one(s, ST_ROLLOUT_GET, ARGS(ARG_I(deployment_id)), &rollout_rows,
                                ret, d);
    return err == OT_ERR_NOENT ? no_rollout(deployment_id, d) : err;
}

static enum ot_err sl_rollout_list_active(struct srv_store *base, struct srv_rollout **ret,
                                          size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    return query_all(s, ST_ROLLOUT_LIST_ACTIVE, &rollout_rows, (void **)ret, ret_n, d);
}

/* A decision; OT_ERR_NOENT when the deployment has no rollout. */
static enum ot_err add_decision(struct sqlite_store *s, int64_t deployment_id, int64_t at,
                                const char *kind, const char *message, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_ROLLOUT_EVENT_INSERT,
                               ARGS(ARG_I(deployment_id), ARG_I(at), ARG_T(kind),
                                    ARG_T(message)),
                               &found, NULL, d, "record a decision of rollout %lld",
                               (long long)deployment_id);
    return !err && !found ? no_rollout(deployment_id, d) : err;
}

static enum ot_err update_rollout(struct sqlite_store *s, const struct srv_rollout *r,
                                  const char *kind, const char *message, struct ot_diag *d)
{
    bool found = false;
    enum ot_err err = run_stmt(s, ST_ROLLOUT_UPDATE,
                               ARGS(ARG_I(r->deployment_id), ARG_I(r->state), ARG_I(r->phase),
                                    ARG_I(r->released), ARG_I(r->phase_started_at),
                                    ARG_I(r->phase_ready_at), ARG_T(r->reason),
                                    ARG_I(r->updated_at), ARG_I(r->base_failed),
                                    ARG_I(r->base_finished)),
                               &found, NULL, d, "update the rollout of deployment %lld",
                               (long long)r->deployment_id);
    if (!err && !found)
        return no_rollout(r->deployment_id, d);
    if (!err && kind)
        err = add_decision(s, r->deployment_id, r->updated_at, kind, message, d);
    return err;
}

static enum ot_err sl_rollout_update(struct srv_store *base, const struct srv_rollout *r,
                                     const char *kind, const char *message, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = update_rollout(s, r, kind, message, d);
    return end(s, err, d);
}

static enum ot_err sl_rollout_event_add(struct srv_store *base, int64_t deployment_id, int64_t at,
                                        const char *kind, const char *message, struct ot_diag *d)
{
    LOCKED(s, base);
    return add_decision(s, deployment_id, at, kind, message, d);
}

static enum ot_err sl_rollout_events(struct srv_store *base, int64_t deployment_id,
                                     int64_t after_id, size_t limit,
                                     struct srv_rollout_event **ret, size_t *ret_n,
                                     struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = rollout_exists(s, deployment_id, d);
    if (err)
        return err;
    return query_list(s, ST_ROLLOUT_EVENTS,
                      ARGS(ARG_I(deployment_id), ARG_I(after_id), ARG_I(limit)),
                      &rollout_event_rows, limit, (void **)ret, ret_n, d);
}

static enum ot_err count_approvals(struct sqlite_store *s, int64_t deployment_id, int64_t phase,
                                   size_t *ret_count, struct ot_diag *d)
{
    int64_t n = 0;
    enum ot_err err = run_stmt(s, ST_APPROVAL_COUNT, ARGS(ARG_I(deployment_id), ARG_I(phase)),
                               NULL, &n, d, "count the approvals of rollout %lld",
                               (long long)deployment_id);
    if (!err)
        *ret_count = (size_t)n;
    return err;
}

static enum ot_err approve(struct sqlite_store *s, int64_t deployment_id, int64_t phase,
                           const char *approver, int64_t at, bool *ret_added, size_t *ret_count,
                           struct ot_diag *d)
{
    enum ot_err err = rollout_exists(s, deployment_id, d);
    if (!err)
        err = run_stmt(s, ST_APPROVAL_INSERT,
                       ARGS(ARG_I(deployment_id), ARG_I(phase), ARG_T(approver), ARG_I(at)),
                       ret_added, NULL, d, "record an approval of rollout %lld",
                       (long long)deployment_id);
    if (!err)
        err = count_approvals(s, deployment_id, phase, ret_count, d);
    return err;
}

static enum ot_err sl_rollout_approve(struct srv_store *base, int64_t deployment_id,
                                      int64_t phase, const char *approver, int64_t at,
                                      size_t *ret_count, struct ot_diag *d)
{
    LOCKED(s, base);
    bool added = false;
    size_t count = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = approve(s, deployment_id, phase, approver, at, &added, &count, d);
    err = end(s, err, d);
    if (err)
        return err;
    *ret_count = count;
    if (!added)
        return ot_diag_set(d, OT_ERR_EXISTS, "'%s' approved phase %lld of rollout %lld already",
                           approver, (long long)phase, (long long)deployment_id);
    return OT_OK;
}

static enum ot_err sl_rollout_approvals(struct srv_store *base, int64_t deployment_id,
                                        int64_t phase, size_t *ret_count, struct ot_diag *d)
{
    LOCKED(s, base);
    return count_approvals(s, deployment_id, phase, ret_count, d);
}

static enum ot_err sl_rollout_counts(struct srv_store *base, int64_t deployment_id,
                                     int64_t seq_from, int64_t seq_to,
                                     uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
{
    LOCKED_STMT(s, st, base, ST_ROLLOUT_COUNTS);
    uint64_t got[SRV_DD__MAX] = {0};
    int rc = bind_args(st, ARGS(ARG_I(deployment_id), ARG_I(seq_from), ARG_I(seq_to)));
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int status = sqlite3_column_int(st, 0);
        if (status >= SRV_DD_PENDING && status < SRV_DD__MAX)
            got[status] = (uint64_t)sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        return db_error(s, rc, d, "count the rows of rollout %lld", (long long)deployment_id);
    memcpy(counts, got, sizeof(got));
    return OT_OK;
}

struct timeout {
    int64_t deployment_id, released, before, now;
    const char *message;
};

static enum ot_err time_out(struct sqlite_store *s, const struct timeout *t, size_t *ret_n,
                            struct ot_diag *d)
{
    enum ot_err err = run_stmt(s, ST_TIMEOUT_EVENTS,
                               ARGS(ARG_I(t->deployment_id), ARG_I(t->released),
                                    ARG_I(t->before), ARG_I(t->now), ARG_T(t->message)),
                               NULL, NULL, d, "record the timeouts of deployment %lld",
                               (long long)t->deployment_id);
    if (!err)
        err = run_stmt(s, ST_TIMEOUT_ROWS,
                       ARGS(ARG_I(t->deployment_id), ARG_I(t->released), ARG_I(t->before),
                            ARG_I(t->now), ARG_T(t->message)),
                       NULL, NULL, d, "time out the devices of deployment %lld",
                       (long long)t->deployment_id);
    if (err)
        return err;
    *ret_n = (size_t)sqlite3_changes64(s->db); /* of the UPDATE, which ran to its end above */
    if (*ret_n == 0)
        return OT_OK;
    err = finish_if_done(s, t->deployment_id, t->now, d);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err sl_rollout_timeout(struct srv_store *base, int64_t deployment_id,
                                      int64_t released, int64_t before, int64_t now,
                                      const char *message, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    const struct timeout t = {deployment_id, released, before, now, message};
    size_t n = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = time_out(s, &t, &n, d);
    err = end(s, err, d);
    if (!err)
        *ret_n = n;
    return err;
}

const struct srv_store_ops srv__store_sqlite_ops = {
    .name = "sqlite",
    .open = sl_open,
    .close = sl_close,
    .schema_version = sl_schema_version,
    .meta_get = sl_meta_get,
    .meta_set = sl_meta_set,
    .token_create = sl_token_create,
    .token_by_hash = sl_token_by_hash,
    .token_list = sl_token_list,
    .token_revoke = sl_token_revoke,
    .audit_add = sl_audit_add,
    .audit_list = sl_audit_list,
    .device_create = sl_device_create,
    .device_get = sl_device_get,
    .device_by_pubkey = sl_device_by_pubkey,
    .device_set_status = sl_device_set_status,
    .device_set_installed = sl_device_set_installed,
    .device_set_attributes = sl_device_set_attributes,
    .device_set_tags = sl_device_set_tags,
    .device_touch = sl_device_touch,
    .device_list = sl_device_list,
    .device_ids_by_tag = sl_device_ids_by_tag,
    .artifact_create = sl_artifact_create,
    .artifact_get = sl_artifact_get,
    .artifact_by_sha256 = sl_artifact_by_sha256,
    .artifact_list = sl_artifact_list,
    .artifact_delete = sl_artifact_delete,
    .template_create = sl_template_create,
    .template_get = sl_template_get,
    .template_list = sl_template_list,
    .template_set_enabled = sl_template_set_enabled,
    .template_delete = sl_template_delete,
    .deployment_create = sl_deployment_create,
    .deployment_get = sl_deployment_get,
    .deployment_list = sl_deployment_list,
    .deployment_rollup = sl_deployment_rollup,
    .deployment_devices = sl_deployment_devices,
    .deployment_cancel = sl_deployment_cancel,
    .device_next = sl_device_next,
    .dd_get = sl_dd_get,
    .dd_report = sl_dd_report,
    .deployment_add_device = sl_deployment_add_device,
    .dd_skip = sl_dd_skip,
    .dd_events = sl_dd_events,
    .deployments_generation = sl_deployments_generation,
    .rollout_get = sl_rollout_get,
    .rollout_list_active = sl_rollout_list_active,
    .rollout_update = sl_rollout_update,
    .rollout_event_add = sl_rollout_event_add,
    .rollout_events = sl_rollout_events,
    .rollout_approve = sl_rollout_approve,
    .rollout_approvals = sl_rollout_approvals,
    .rollout_counts = sl_rollout_counts,
    .rollout_timeout = sl_rollout_timeout,
};
