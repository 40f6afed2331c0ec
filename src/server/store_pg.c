/* The PostgreSQL back end of the store (store.h), for several otterd instances sharing one
 * database (ARCHITECTURE.md §7). Selected by a "postgresql://" or "postgres://" URL, which libpq
 * parses (docs/otterd.md, "PostgreSQL").
 *
 * Durability: a call returns OT_OK only after its statement completed, and each statement runs in
 * its own transaction (autocommit), so that is after the commit; an operation of several
 * statements runs them between BEGIN and COMMIT and returns after the COMMIT. We rely on PostgreSQL's default
 * synchronous_commit = on (the commit record is flushed to the WAL before the server answers);
 * a session that finds it "off" (a server-wide setting for bulk loads) sets it back to "on" for
 * itself, see session_setup().
 *
 * Threads: one connection, and a pthread mutex held for the whole of each operation (send, read
 * the rows, clear). A PGconn may be used by one thread at a time only, and its error message
 * (PQerrorMessage) is per connection: the same model as the SQLite back end, and the same reasons.
 *
 * Lost connections (server restart, failover, an idle connection killed by a proxy): an operation
 * that finds the connection bad resets it once (PQreset) and reports OT_ERR_IO if that fails. An
 * operation whose statement fails because the connection broke is retried once after a reset only
 * when repeating it is harmless (reads, the meta upsert, revoke, setting a device's fields); a
 * token, audit or artifact insert is not retried, because it may have committed before the answer
 * was lost: it reports OT_ERR_IO. Neither is a transaction: one that loses its connection is
 * rolled back by the server, or committed if only the answer to COMMIT was lost (OT_ERR_IO).
 *
 * Lock order, so that concurrent transactions wait instead of deadlocking: a deployment row
 * before its device rows (cancel, a report that may finish the deployment, skip, adding a device),
 * device rows in id order (last-seen batches), the generation row last.
 *
 * Which database is ours: the table otterd_database holds one row with application_id 'OTRD'
 * (0x4f545244, the value the SQLite back end keeps in its file header). A database with that table
 * or with no table at all in the current schema is ours; one with other tables is refused.
 *
 * Every statement with input goes through PQexecParams with $n parameters (a batch as array
 * parameters, $1::bigint[]); only the constant migration scripts and transaction control go
 * through PQexec. Results are requested in binary, so the token hash (BYTEA)
 * comes back as its 32 raw bytes and integers as 8-byte big-endian values. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>

#include "store_impl.h"

/* pg_advisory_xact_lock(APPLICATION_ID, LOCK_*): the first key says "otterd", the second what. */
#define APPLICATION_ID 1330926148 /* "OTRD" */
#define LOCK_MIGRATIONS 1
#define LOCK_AUDIT_ORDER 3 /* 2 is reserved for the rollout scheduler election */
#define STR_(x) #x
#define STR(x) STR_(x)
#define CONNECT_TIMEOUT_S "10"
#define MAX_PARAMS 12

/* ---- schema ---------------------------------------------------------------------------------- */

/* Created with migration 1, in the same transaction. */
static const char bootstrap_sql[] =
    "CREATE TABLE schema_migrations(version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);"
    "CREATE TABLE otterd_database(application_id BIGINT PRIMARY KEY);"
    "INSERT INTO otterd_database(application_id) VALUES(" STR(APPLICATION_ID) ");";

/* Migration N is migrations[N - 1]. Append only: a released migration never changes. Ids are
 * identity columns backed by sequences, which never hand out a number twice (the audit log is paged
 * by id, and "token:7" must always mean the same token). */
static const char *const migrations[] = {
    /* 1: settings, API tokens, audit log */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE tokens(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL,"
    " scopes BIGINT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0,"
    " revoked BOOLEAN NOT NULL DEFAULT false, hash BYTEA NOT NULL UNIQUE);"
    "CREATE TABLE audit(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL,"
    " actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL, detail TEXT);",
    /* 2: devices, artifacts, deployments; the same tables as the SQLite back end's migration 2
     * (see there for the indexes, ndevices and the generation row). PostgreSQL does not index the
     * referencing side of a foreign key by itself: every one here is the prefix of an index. */
    "CREATE TABLE devices(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " pubkey BYTEA NOT NULL UNIQUE, identity TEXT NOT NULL,"
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 5), device_type TEXT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, last_seen BIGINT NOT NULL DEFAULT 0,"
    " attributes TEXT NOT NULL, installed TEXT NOT NULL);"
    "CREATE TABLE device_tags(device_id BIGINT NOT NULL REFERENCES devices(id),"
    " tag TEXT NOT NULL, PRIMARY KEY(device_id, tag));"
    "CREATE INDEX device_tags_tag ON device_tags(tag, device_id);"
    "CREATE TABLE artifacts(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE,"
    " size BIGINT NOT NULL, manifest TEXT NOT NULL, signatures TEXT NOT NULL,"
    " device_types TEXT NOT NULL, created_at BIGINT NOT NULL, uploaded_by TEXT NOT NULL,"
    " UNIQUE(name, version));"
    "CREATE TABLE deployments(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " name TEXT NOT NULL, artifact_id BIGINT REFERENCES artifacts(id) ON DELETE SET NULL,"
    " artifact_name TEXT NOT NULL, artifact_version TEXT NOT NULL, target TEXT NOT NULL,"
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 3), created_at BIGINT NOT NULL,"
    " finished_at BIGINT NOT NULL, created_by TEXT NOT NULL, ndevices BIGINT NOT NULL);"
    "CREATE INDEX deployments_artifact ON deployments(artifact_id, status);"
    "CREATE TABLE deployment_devices(deployment_id BIGINT NOT NULL REFERENCES deployments(id),"
    " device_id BIGINT NOT NULL REFERENCES devices(id),"
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 10), progress INTEGER NOT NULL,"
    " message TEXT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY(deployment_id, device_id));"
    "CREATE INDEX deployment_devices_device ON deployment_devices(device_id, status);"
    "CREATE INDEX deployment_devices_status ON deployment_devices(deployment_id, status);"
    "CREATE TABLE dd_events(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " deployment_id BIGINT NOT NULL, device_id BIGINT NOT NULL, at BIGINT NOT NULL,"
    " status INTEGER NOT NULL, progress INTEGER NOT NULL, message TEXT NOT NULL, log TEXT,"
    " FOREIGN KEY(deployment_id, device_id)"
    " REFERENCES deployment_devices(deployment_id, device_id));"
    "CREATE INDEX dd_events_row ON dd_events(deployment_id, device_id, id);"
    "CREATE TABLE deployments_generation(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " value BIGINT NOT NULL);"
    "INSERT INTO deployments_generation(id, value) VALUES(1, 0);",
    /* 3: staged rollouts; the same tables as the SQLite back end's migration 3 (see there). Adding
     * a column with a constant default rewrites no rows (PostgreSQL 11 and later). */
    "ALTER TABLE deployment_devices ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;"
    "CREATE INDEX deployment_devices_seq ON deployment_devices(deployment_id, seq);"
    "CREATE TABLE rollouts(deployment_id BIGINT PRIMARY KEY REFERENCES deployments(id),"
    " policy TEXT NOT NULL, state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 6),"
    " phase BIGINT NOT NULL, released BIGINT NOT NULL, phase_started_at BIGINT NOT NULL,"
    " phase_ready_at BIGINT NOT NULL, reason TEXT NOT NULL, updated_at BIGINT NOT NULL,"
    " base_failed BIGINT NOT NULL, base_finished BIGINT NOT NULL);"
    "CREATE TABLE rollout_events(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " deployment_id BIGINT NOT NULL REFERENCES deployments(id), at BIGINT NOT NULL,"
    " kind TEXT NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX rollout_events_deployment ON rollout_events(deployment_id, id);"
    "CREATE TABLE rollout_approvals(deployment_id BIGINT NOT NULL"
    " REFERENCES rollouts(deployment_id), phase BIGINT NOT NULL, approver TEXT NOT NULL,"
    " at BIGINT NOT NULL, PRIMARY KEY(deployment_id, phase, approver));",
    /* 4: continuous deployment; the same as the SQLite back end's migration 4 (see there). The
     * status CHECK of deployment_devices (named by PostgreSQL's rule, <table>_<column>_check)
     * is replaced by a wider one in the same ALTER TABLE, which checks the rows once. */
    "ALTER TABLE deployment_devices ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0,"
    " DROP CONSTRAINT deployment_devices_status_check,"
    " ADD CONSTRAINT deployment_devices_status_check CHECK (status BETWEEN 1 AND 11);"
    "ALTER TABLE artifacts ADD COLUMN channel TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE deployment_templates(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE, channel TEXT NOT NULL, body TEXT NOT NULL,"
    " enabled BOOLEAN NOT NULL, created_at BIGINT NOT NULL, created_by TEXT NOT NULL);"
    "CREATE INDEX deployment_templates_channel ON deployment_templates(channel, id);",
};
#define SCHEMA_VERSION ((int)OT_ARRAY_SIZE(migrations))

/* ---- statements ------------------------------------------------------------------------------ */

#define TOKEN_COLUMNS "id, name, scopes, created_at, expires_at, revoked, hash"

static const char sql_table_exists[] =
    "SELECT count(*) FROM pg_catalog.pg_tables"
    " WHERE schemaname = current_schema() AND tablename = $1";
static const char sql_table_count[] =
    "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()";
static const char sql_version[] = "SELECT coalesce(max(version), 0) FROM schema_migrations";
static const char sql_app_id[] = "SELECT coalesce(min(application_id), 0) FROM otterd_database";
static const char sql_migration_lock[] =
    "SELECT pg_advisory_xact_lock(" STR(APPLICATION_ID) ", " STR(LOCK_MIGRATIONS) ")";
static const char sql_migration_done[] =
    "INSERT INTO schema_migrations(version, applied_at) VALUES($1, $2)";
static const char sql_meta_get[] = "SELECT value FROM meta WHERE key = $1";
static const char sql_meta_set[] = "INSERT INTO meta(key, value) VALUES($1, $2)"
                                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value";
static const char sql_token_insert[] =
    "INSERT INTO tokens(name, scopes, created_at, expires_at, revoked, hash)"
    " VALUES($1, $2, $3, $4, $5, $6) RETURNING id";
static const char sql_token_by_hash[] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = $1";
static const char sql_token_list[] = "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY created_at, id";
static const char sql_token_revoke[] = "UPDATE tokens SET revoked = true WHERE id = $1 RETURNING id";
/* Readers page the audit log by id, so ids must become visible in increasing order. A sequence
 * alone does not promise that with several otterd instances (id 6 may commit before id 5 and a
 * reader in between would skip 5 forever); the advisory lock, taken before the id is drawn and held
 * to the end of the transaction, makes drawing an id and committing it one step per database. */
static const char sql_audit_insert[] =
    "WITH serial AS (SELECT pg_advisory_xact_lock(" STR(APPLICATION_ID) ", " STR(
        LOCK_AUDIT_ORDER) "))"
                          " INSERT INTO audit(at, actor, action, object, detail)"
                          " SELECT $1::bigint, $2::text, $3::text, $4::text, $5::text FROM serial";
static const char sql_audit_list[] = "SELECT id, at, actor, action, object, detail FROM audit"
                                     " WHERE id > $1 ORDER BY id LIMIT $2";

/* The tags come joined by blanks (srv__store_split_tags), so a device is one row. */
#define DEVICE_COLUMNS                                                                             \
    "d.id, d.pubkey, d.identity, d.status, d.device_type, d.created_at, d.updated_at,"             \
    " d.last_seen, d.attributes, d.installed,"                                                     \
    " (SELECT string_agg(t.tag, ' ') FROM device_tags t WHERE t.device_id = d.id)"
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
/* A row that is not final (SRV_DD_IS_FINAL): PENDING..VERIFYING or WAITING, as a list that the
 * (deployment_id, status) and (device_id, status) indexes answer (see the SQLite back end). */
#define DD_OPEN(col) col " IN (1, 2, 3, 4, 5, 11)"
#define ROLLOUT_COLUMNS                                                                            \
    "r.deployment_id, r.policy, r.state, r.phase, r.released, r.phase_started_at,"                 \
    " r.phase_ready_at, r.reason, r.updated_at, r.base_failed, r.base_finished"

static const char sql_device_insert[] =
    "INSERT INTO devices(pubkey, identity, status, device_type, created_at, updated_at,"
    " attributes, installed) VALUES($1, $2, $3, $4, $5, $5, $6, $7) RETURNING id";
static const char sql_tags_insert[] =
    "INSERT INTO device_tags(device_id, tag) SELECT $1, unnest($2::text[])";
static const char sql_tags_delete[] = "DELETE FROM device_tags WHERE device_id = $1";
static const char sql_device_get[] = "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.id = $1";
static const char sql_device_by_pubkey[] =
    "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.pubkey = $1";
static const char sql_device_set_status[] =
    "UPDATE devices SET status = $2, updated_at = $3 WHERE id = $1 RETURNING id";
static const char sql_device_set_installed[] =
    "UPDATE devices SET device_type = $2, installed = $3, updated_at = $4 WHERE id = $1"
    " RETURNING id";
static const char sql_device_set_attributes[] =
    "UPDATE devices SET attributes = $2, updated_at = $3 WHERE id = $1 RETURNING id";
static const char sql_device_set_updated[] =
    "UPDATE devices SET updated_at = $2 WHERE id = $1 RETURNING id";
/* A batch of last-seen times in one statement. Duplicate ids are merged first (UPDATE ... FROM
 * would apply an arbitrary one of them), and the rows are locked in id order, so two instances
 * touching overlapping batches wait for each other instead of deadlocking. */
static const char sql_device_touch[] =
    "WITH u AS (SELECT x.id, max(x.at) AS at FROM unnest($1::bigint[], $2::bigint[]) AS x(id, at)"
    " GROUP BY x.id),"
    " l AS (SELECT d.id, u.at FROM devices d JOIN u ON u.id = d.id WHERE d.last_seen < u.at"
    " ORDER BY d.id FOR NO KEY UPDATE OF d)"
    " UPDATE devices SET last_seen = l.at FROM l WHERE devices.id = l.id";
/* One fixed query for every combination of filters: an absent filter is 0 or NULL. */
static const char sql_device_list[] =
    "SELECT " DEVICE_COLUMNS " FROM devices d WHERE d.id > $1"
    " AND ($2::integer = 0 OR d.status = $2) AND ($3::text IS NULL OR d.device_type = $3)"
    " AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM device_tags f"
    " WHERE f.device_id = d.id AND f.tag = $4)) ORDER BY d.id LIMIT $5";
static const char sql_device_ids_by_tag[] =
    "SELECT t.device_id FROM device_tags t JOIN devices d ON d.id = t.device_id"
    " WHERE t.tag = $1 AND d.status = 2 ORDER BY t.device_id";

static const char sql_artifact_insert[] =
    "INSERT INTO artifacts(name, version, sha256, size, manifest, signatures, device_types,"
    " created_at, uploaded_by, channel) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " RETURNING id";
/* Which unique key an insert ran into: the sha256 one first. */
static const char sql_artifact_conflict[] =
    "SELECT id, sha256 = $1 FROM artifacts WHERE sha256 = $1 OR (name = $2 AND version = $3)"
    " ORDER BY 2 DESC LIMIT 1";
static const char sql_artifact_get[] = "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE id = $1";
static const char sql_artifact_by_sha256[] =
    "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE sha256 = $1";
static const char sql_artifact_list[] =
    "SELECT " ARTIFACT_COLUMNS " FROM artifacts WHERE id > $1 ORDER BY id LIMIT $2";
/* Locked before the check for users: a deployment being created with it waits for the delete
 * (its FOR KEY SHARE below) and then finds no artifact, or commits first and is seen. */
static const char sql_artifact_lock[] = "SELECT id FROM artifacts WHERE id = $1 FOR UPDATE";
static const char sql_artifact_user[] =
    "SELECT id FROM deployments WHERE artifact_id = $1 AND status = 1 ORDER BY id LIMIT 1";
static const char sql_artifact_delete[] = "DELETE FROM artifacts WHERE id = $1";

static const char sql_template_insert[] =
    "INSERT INTO deployment_templates(name, channel, body, enabled, created_at, created_by)"
    " VALUES($1, $2, $3, $4, $5, $6) RETURNING id";
static const char sql_template_get[] =
    "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates WHERE id = $1";
static const char sql_template_list[] =
    "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates WHERE id > $1 ORDER BY id LIMIT $2";
static const char sql_template_list_channel[] =
    "SELECT " TEMPLATE_COLUMNS " FROM deployment_templates WHERE channel = $1 AND enabled"
    " AND id > $2 ORDER BY id LIMIT $3";
static const char sql_template_set_enabled[] =
    "UPDATE deployment_templates SET enabled = $2 WHERE id = $1 RETURNING id";
static const char sql_template_delete[] =
    "DELETE FROM deployment_templates WHERE id = $1 RETURNING id";

static const char sql_deployment_insert[] =
    "INSERT INTO deployments(name, artifact_id, artifact_name, artifact_version, target, status,"
    " created_at, finished_at, created_by, ndevices) SELECT $1::text, a.id, a.name, a.version,"
    " $3::text, $4::integer, $5::bigint, $6::bigint, $7::text, $8::bigint FROM artifacts a"
    " WHERE a.id = $2 FOR KEY SHARE RETURNING id";
static const char sql_dd_unknown_device[] =
    "SELECT x.id FROM unnest($1::bigint[]) AS x(id)"
    " WHERE NOT EXISTS (SELECT 1 FROM devices v WHERE v.id = x.id) LIMIT 1";
/* $6 (the seqs) NULL: unnest pads the missing column with NULLs, which become seq 0. */
static const char sql_dd_insert[] =
    "INSERT INTO deployment_devices(deployment_id, device_id, status, progress, message,"
    " updated_at, seq) SELECT $1::bigint, x.id, CASE WHEN x.skip THEN 10 ELSE 1 END, -1,"
    " CASE WHEN x.skip THEN $4::text ELSE '' END, $5::bigint, coalesce(x.seq, 0)"
    " FROM unnest($2::bigint[], $3::boolean[], $6::bigint[]) AS x(id, skip, seq)";
static const char sql_deployment_get[] =
    "SELECT " DEPLOYMENT_COLUMNS " FROM deployments WHERE id = $1";
static const char sql_deployment_status[] = "SELECT status FROM deployments WHERE id = $1";
/* Held to the end of a transaction that may finish the deployment: see pg_dd_report. */
static const char sql_deployment_lock[] =
    "SELECT status FROM deployments WHERE id = $1 FOR NO KEY UPDATE";
static const char sql_deployment_list[] =
    "SELECT " DEPLOYMENT_COLUMNS " FROM deployments WHERE ($1::integer = 0 OR status = $1)"
    " AND ($2::bigint = 0 OR id < $2) ORDER BY id DESC LIMIT $3";
static const char sql_deployment_rollup[] =
    "SELECT status, count(*) FROM deployment_devices WHERE deployment_id = $1 GROUP BY status";
static const char sql_deployment_devices[] =
    "SELECT " DD_COLUMNS " FROM deployment_devices dd WHERE dd.deployment_id = $1"
    " AND dd.device_id > $2 ORDER BY dd.device_id LIMIT $3";
static const char sql_deployment_cancel[] =
    "UPDATE deployments SET status = 3, finished_at = $2 WHERE id = $1 AND status = 1"
    " RETURNING id";
static const char sql_dd_cancel_pending[] =
    "UPDATE deployment_devices SET status = 9, updated_at = $2"
    " WHERE deployment_id = $1 AND status IN (1, 11)";
static const char sql_deployment_finish[] =
    "UPDATE deployments SET status = 2, finished_at = $2 WHERE id = $1 AND status = 1"
    " AND NOT EXISTS (SELECT 1 FROM deployment_devices WHERE deployment_id = $1"
    " AND " DD_OPEN("status") ") RETURNING id";
static const char sql_device_next[] =
    "SELECT " DD_COLUMNS " FROM deployment_devices dd JOIN deployments d"
    " ON d.id = dd.deployment_id WHERE dd.device_id = $1 AND " DD_OPEN("dd.status")
    " AND d.status = 1 ORDER BY dd.deployment_id LIMIT 1";
static const char sql_dd_get[] = "SELECT " DD_COLUMNS " FROM deployment_devices dd"
                                 " WHERE dd.deployment_id = $1 AND dd.device_id = $2";
static const char sql_dd_status[] =
    "SELECT status FROM deployment_devices WHERE deployment_id = $1 AND device_id = $2";
/* Two reports for one row wait for each other here, so only one can see it non-final. */
static const char sql_dd_lock[] = "SELECT status FROM deployment_devices"
                                  " WHERE deployment_id = $1 AND device_id = $2 FOR NO KEY UPDATE";
static const char sql_dd_update[] =
    "UPDATE deployment_devices SET status = $3, progress = $4, message = $5, updated_at = $6"
    " WHERE deployment_id = $1 AND device_id = $2";
/* Read under the row lock (sql_dd_lock). */
static const char sql_dd_attempts[] =
    "SELECT attempts FROM deployment_devices WHERE deployment_id = $1 AND device_id = $2";
static const char sql_dd_retry[] =
    "UPDATE deployment_devices SET status = 1, progress = -1, message = $3, updated_at = $4,"
    " attempts = attempts + 1 WHERE deployment_id = $1 AND device_id = $2";
static const char sql_device_exists[] = "SELECT 1 FROM devices WHERE id = $1";
static const char sql_dd_max_seq[] =
    "SELECT coalesce(max(seq), 0) FROM deployment_devices WHERE deployment_id = $1";
static const char sql_dd_add[] =
    "INSERT INTO deployment_devices(deployment_id, device_id, status, progress, message,"
    " updated_at, seq) VALUES($1, $2, $3, -1, $4, $5, $6)";
static const char sql_deployment_grow[] =
    "UPDATE deployments SET ndevices = ndevices + 1 WHERE id = $1";
static const char sql_deployment_reopen[] =
    "UPDATE deployments SET status = 1, finished_at = 0 WHERE id = $1 AND status = 2";
static const char sql_dd_skip[] =
    "UPDATE deployment_devices SET status = 10, message = $3, updated_at = $4"
    " WHERE deployment_id = $1 AND device_id = $2 AND status = 1 RETURNING device_id";
static const char sql_event_insert[] =
    "INSERT INTO dd_events(deployment_id, device_id, at, status, progress, message, log)"
    " VALUES($1, $2, $3, $4, $5, $6, $7)";
static const char sql_events[] =
    "SELECT id, at, status, progress, message, log FROM dd_events WHERE deployment_id = $1"
    " AND device_id = $2 AND id > $3 ORDER BY id LIMIT $4";
static const char sql_generation_bump[] = "UPDATE deployments_generation SET value = value + 1";
static const char sql_generation_get[] = "SELECT value FROM deployments_generation";

static const char sql_rollout_insert[] =
    "INSERT INTO rollouts(deployment_id, policy, state, phase, released, phase_started_at,"
    " phase_ready_at, reason, updated_at, base_failed, base_finished)"
    " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
static const char sql_rollout_get[] =
    "SELECT " ROLLOUT_COLUMNS " FROM rollouts r WHERE r.deployment_id = $1";
static const char sql_rollout_list_active[] =
    "SELECT " ROLLOUT_COLUMNS " FROM rollouts r JOIN deployments d ON d.id = r.deployment_id"
    " WHERE d.status = 1 ORDER BY r.deployment_id";
static const char sql_rollout_update[] =
    "UPDATE rollouts SET state = $2, phase = $3, released = $4, phase_started_at = $5,"
    " phase_ready_at = $6, reason = $7, updated_at = $8, base_failed = $9, base_finished = $10"
    " WHERE deployment_id = $1"
    " RETURNING deployment_id";
/* Readers page a rollout's decisions by id, so its ids must become visible in increasing order
 * (see sql_audit_insert): the rollout row, locked before the id is drawn and to the end of the
 * transaction, makes that one step per rollout. An update holds the same lock already. */
static const char sql_rollout_event_insert[] =
    "WITH r AS (SELECT deployment_id FROM rollouts WHERE deployment_id = $1 FOR NO KEY UPDATE)"
    " INSERT INTO rollout_events(deployment_id, at, kind, message)"
    " SELECT r.deployment_id, $2::bigint, $3::text, $4::text FROM r RETURNING id";
static const char sql_rollout_events[] =
    "SELECT id, at, kind, message FROM rollout_events WHERE deployment_id = $1 AND id > $2"
    " ORDER BY id LIMIT $3";
static const char sql_rollout_exists[] = "SELECT 1 FROM rollouts WHERE deployment_id = $1";
/* Approvals of one rollout one at a time, so that of two approvers at once the second counts
 * the first's approval too. */
static const char sql_rollout_lock[] =
    "SELECT 1 FROM rollouts WHERE deployment_id = $1 FOR NO KEY UPDATE";
static const char sql_approval_insert[] =
    "INSERT INTO rollout_approvals(deployment_id, phase, approver, at) VALUES($1, $2, $3, $4)"
    " ON CONFLICT DO NOTHING RETURNING 1";
static const char sql_approval_count[] =
    "SELECT count(*) FROM rollout_approvals WHERE deployment_id = $1 AND phase = $2";
static const char sql_rollout_counts[] =
    "SELECT status, count(*) FROM deployment_devices WHERE deployment_id = $1 AND seq > $2"
    " AND seq <= $3 GROUP BY status";
/* The released rows ($2) that are not final and silent since $3 fail, each with an event, in
 * one statement; it answers how many. A report holding one of the rows is waited for, and the
 * row is then judged again as that report left it. */
static const char sql_rollout_timeout[] =
    "WITH t AS (UPDATE deployment_devices SET status = 7, message = $5::text,"
    " updated_at = $4::bigint WHERE deployment_id = $1::bigint AND seq BETWEEN 1 AND $2::bigint"
    " AND status BETWEEN 2 AND 5 AND updated_at < $3::bigint RETURNING device_id, progress),"
    " e AS (INSERT INTO dd_events(deployment_id, device_id, at, status, progress, message)"
    " SELECT $1::bigint, t.device_id, $4::bigint, 7, t.progress, $5::text FROM t"
    " ORDER BY t.device_id)"
    " SELECT count(*) FROM t";

struct pg_store {
    struct srv_store base; /* first: store.c sees only this */
    pthread_mutex_t lock;  /* held for each whole operation, see the top of the file */
    PGconn *conn;
    int version;           /* schema version, fixed after open */
};

/* Parameters of one statement: text, except the hash (binary BYTEA). Numbers are formatted into
 * num[]; strings and the hash point into the caller's memory for the duration of the call. */
struct params {
    int n;
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    char num[MAX_PARAMS][24];
};

static void param_text(struct params *p, const char *s)
{
    p->values[p->n] = s; /* NULL sends SQL NULL */
    p->lengths[p->n] = 0;
    p->formats[p->n++] = 0;
}

static void param_i64(struct params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%lld", (long long)v);
    param_text(p, p->num[p->n]);
}

static void param_bytes(struct params *p, const uint8_t *buf, int len)
{
    p->values[p->n] = (const char *)buf;
    p->lengths[p->n] = len;
    p->formats[p->n++] = 1;
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* libpq's messages end in a newline and may span lines; the first line is the message. They never
 * contain the password, which is why they may be shown. */
static const char *first_line(const char *msg, int *ret_len)
{
    if (!msg || !*msg)
        msg = "unknown error";
    *ret_len = (int)strcspn(msg, "\n");
    return msg;
}

static enum ot_err sqlstate_error(const char *state)
{
    static const struct {
        const char *prefix; /* an SQLSTATE or its two-character class */
        enum ot_err err;
    } map[] = {
        {"23505", OT_ERR_EXISTS}, /* unique_violation */
        {"53100", OT_ERR_NOSPC},  /* disk_full */
        {"53200", OT_ERR_NOMEM},  /* out_of_memory */
        {"54", OT_ERR_LIMIT},     /* program_limit_exceeded */
        {"22", OT_ERR_INVALID},   /* data exception: bytes the database encoding cannot hold */
        {"23", OT_ERR_INVALID},   /* other integrity constraints */
        {"42501", OT_ERR_PERM},   /* insufficient_privilege */
        {"28", OT_ERR_PERM},      /* invalid authorization */
        {"08", OT_ERR_IO},        /* connection exception */
        {"40", OT_ERR_IO},        /* serialization failure, deadlock: try again */
        {"53", OT_ERR_IO},        /* other insufficient resources */
        {"55", OT_ERR_IO},        /* lock not available, object in use */
        {"57", OT_ERR_IO},        /* operator intervention: shutdown, cancel */
        {"58", OT_ERR_IO},        /* system error (I/O) */
        {"XX", OT_ERR_FORMAT},    /* data corrupted, index corrupted */
    };
    for (size_t i = 0; state && i < OT_ARRAY_SIZE(map); i++)
        if (strncmp(state, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].err;
    return OT_ERR_INTERNAL;
}

/* A failed statement (res may be NULL: out of memory or no connection) to ours, with
 * "what: PostgreSQL's message". */
static enum ot_err map_error(PGconn *conn, const PGresult *res, const char *what,
                             struct ot_diag *d)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(conn);
    int len = 0;
    msg = first_line(msg, &len);
    if (PQstatus(conn) != CONNECTION_OK)
        return ot_diag_set(d, OT_ERR_IO, "%s: lost the connection to PostgreSQL (%.*s)", what, len,
                           msg);
    enum ot_err err = sqlstate_error(state);
    if (err == OT_ERR_EXISTS)
        return ot_diag_set(d, err, "%s: already exists (%.*s)", what, len, msg);
    if (err == OT_ERR_INTERNAL)
        return ot_diag_set(d, err, "%s: %.*s (SQLSTATE %s)", what, len, msg, state ? state : "?");
    return ot_diag_set(d, err, "%s: %.*s", what, len, msg);
}

static enum ot_err db_error(struct pg_store *s, const PGresult *res, struct ot_diag *d,
                            const char *fmt, ...) OT_PRINTF(4, 5);

static enum ot_err db_error(struct pg_store *s, const PGresult *res, struct ot_diag *d,
                            const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return map_error(s->conn, res, what, d);
}

/* ---- running statements; the caller holds the lock ------------------------------------------- */

static void pq_clearp(PGresult **res)
{
    if (*res)
        PQclear(*res);
}

#define _cleanup_result_ _cleanup_(pq_clearp)

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res); /* PGRES_FATAL_ERROR for NULL */
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static struct pg_store *lock_store(struct srv_store *base)
{
    struct pg_store *s = (struct pg_store *)base;
    pthread_mutex_lock(&s->lock);
    return s;
}

static void unlock_storep(struct pg_store **s)
{
    if (*s)
        pthread_mutex_unlock(&(*s)->lock);
}

#define LOCKED(s, base) _cleanup_(unlock_storep) struct pg_store *s = lock_store(base)

static enum ot_err session_setup(struct pg_store *s, struct ot_diag *d);

/* A connection found broken is reset once; still broken is an I/O error. */
static enum ot_err ensure_connected(struct pg_store *s, struct ot_diag *d)
{
    if (PQstatus(s->conn) == CONNECTION_OK)
        return OT_OK;
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        int len = 0;
        const char *msg = first_line(PQerrorMessage(s->conn), &len);
        return ot_diag_set(d, OT_ERR_IO, "cannot reconnect to PostgreSQL: %.*s", len, msg);
    }
    return session_setup(s, d);
}

static PGresult *exec_params(struct pg_store *s, const char *sql, const struct params *p)
{
    return PQexecParams(s->conn, sql, p ? p->n : 0, NULL, p ? p->values : NULL,
                        p ? p->lengths : NULL, p ? p->formats : NULL, 1);
}

/* Runs one statement; *ret is the result, failed or not (NULL only when out of memory). A
 * statement that failed because the connection broke is sent once more on a fresh connection when
 * `again` says that repeating it is harmless. */
static enum ot_err run(struct pg_store *s, const char *sql, const struct params *p, bool again,
                       PGresult **ret, struct ot_diag *d)
{
    *ret = NULL;
    enum ot_err err = ensure_connected(s, d);
    if (err)
        return err;
    /* Never inside a transaction: a fresh connection would run the rest of it without one. */
    bool in_txn = PQtransactionStatus(s->conn) != PQTRANS_IDLE;
    *ret = exec_params(s, sql, p);
    if (!result_ok(*ret) && again && !in_txn && PQstatus(s->conn) != CONNECTION_OK &&
        ensure_connected(s, NULL) == OT_OK) {
        PQclear(*ret);
        *ret = exec_params(s, sql, p);
    }
    return OT_OK;
}

/* One integer of a binary result: int2, int4 or int8, big-endian. */
static bool get_int(const PGresult *res, int row, int col, int64_t *ret)
{
    const unsigned char *v = (const unsigned char *)PQgetvalue(res, row, col);
    int len = PQgetlength(res, row, col);
    if (PQgetisnull(res, row, col) || PQfformat(res, col) != 1)
        return false;
    uint64_t x = 0;
    for (int i = 0; i < len; i++)
        x = x << 8 | v[i];
    if (len == 8)
        *ret = (int64_t)x;
    else if (len == 4)
        *ret = (int32_t)(uint32_t)x;
    else if (len == 2)
        *ret = (int16_t)(uint16_t)x;
    else
        return false;
    return true;
}

/* A copy of a text column; NULL only where the column may be NULL. */
static enum ot_err column_dup(const PGresult *res, int row, int col, bool nullable, char **ret,
                              struct ot_diag *d)
{
    *ret = NULL;
    if (PQgetisnull(res, row, col))
        return nullable ? OT_OK : ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: NULL in %s",
                                              PQfname(res, col));
    *ret = strndup(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
    return *ret ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

/* One integer from a query that returns one row. */
static enum ot_err query_int(struct pg_store *s, const char *sql, const struct params *p,
                             int64_t *ret, struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql, p, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "read the database");
    if (PQntuples(res) != 1 || !get_int(res, 0, 0, ret))
        return ot_diag_set(d, OT_ERR_INTERNAL, "read the database: unexpected result");
    return OT_OK;
}

/* A constant script (no input): migrations and transaction control. */
static enum ot_err exec_script(struct pg_store *s, const char *sql, const char *what,
                               struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = PQexec(s->conn, sql);
    return result_ok(res) ? OT_OK : db_error(s, res, d, "%s", what);
}

/* ---- open: connection, identity, migrations -------------------------------------------------- */

/* See the top of the file: durability rests on synchronous commits. Also run after a reset. */
static enum ot_err session_setup(struct pg_store *s, struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = exec_params(
        s,
        "SELECT set_config('synchronous_commit', 'on', false)"
        " WHERE current_setting('synchronous_commit') = 'off'",
        NULL);
    return result_ok(res) ? OT_OK : db_error(s, res, d, "configure the session");
}

/* libpq prints notices (NOTICE, WARNING) to stderr by default; the store reports through its
 * return values and never writes to the program's output. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static enum ot_err connect_db(struct pg_store *s, const char *url, struct ot_diag *d)
{
    /* Later entries override earlier ones: the URL may change the timeout and the application
     * name, never the client encoding (strings are UTF-8 throughout otterd). */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", "client_encoding",
                                NULL};
    const char *const values[] = {CONNECT_TIMEOUT_S, "otterd", url, "UTF8", NULL};
    s->conn = PQconnectdbParams(keys, values, 1);
    if (!s->conn)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    PQsetNoticeProcessor(s->conn, ignore_notice, NULL); /* kept across PQreset */
    if (PQstatus(s->conn) != CONNECTION_OK) {
        int len = 0;
        const char *msg = first_line(PQerrorMessage(s->conn), &len);
        return ot_diag_set(d, OT_ERR_IO, "cannot connect: %.*s", len, msg);
    }
    return session_setup(s, d);
}

static enum ot_err table_exists(struct pg_store *s, const char *name, bool *ret,
                                struct ot_diag *d)
{
    struct params p = {0};
    param_text(&p, name);
    int64_t n = 0;
    enum ot_err err = query_int(s, sql_table_exists, &p, &n, d);
    *ret = n > 0;
    return err;
}

static enum ot_err read_version(struct pg_store *s, int64_t *ret, struct ot_diag *d)
{
    bool has = false;
    enum ot_err err = table_exists(s, "schema_migrations", &has, d);
    *ret = 0;
    if (err || !has)
        return err;
    return query_int(s, sql_version, NULL, ret, d);
}

/* Never migrate another program's database (a mistyped URL, another app's "schema_migrations"). */
static enum ot_err check_identity(struct pg_store *s, struct ot_diag *d)
{
    bool marked = false;
    int64_t app_id = 0, tables = 0;
    enum ot_err err = table_exists(s, "otterd_database", &marked, d);
    if (!err && marked)
        err = query_int(s, sql_app_id, NULL, &app_id, d);
    if (!err && !marked)
        err = query_int(s, sql_table_count, NULL, &tables, d);
    if (err)
        return err;
    if (app_id == APPLICATION_ID || (!marked && tables == 0))
        return OT_OK; /* ours, or new and empty */
    if (!marked)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "not an otterd database: it holds another program's tables");
    return ot_diag_set(d, OT_ERR_FORMAT, "not an otterd database (application id 0x%08llx)",
                       (unsigned long long)app_id);
}

static enum ot_err check_not_newer(int64_t version, struct ot_diag *d)
{
    if (version <= SCHEMA_VERSION)
        return OT_OK;
    return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                       "database schema version %lld is newer than this otterd supports (%d)",
                       (long long)version, SCHEMA_VERSION);
}

/* One snapshot for all the checks: as separate autocommit statements (READ COMMITTED), another
 * otterd's first migration could commit between "is there a marker?" (no) and "are there tables?"
 * (yes), and this database would look like another program's. Seen in the concurrent-open test. */
static enum ot_err check_db(struct pg_store *s, int64_t *ret_version, struct ot_diag *d)
{
    enum ot_err err = exec_script(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                                  "check the database", d);
    if (err)
        return err;
    err = check_identity(s, d);
    if (!err)
        err = read_version(s, ret_version, d);
    if (!err)
        err = exec_script(s, "COMMIT", "check the database", d);
    if (err) {
        if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            PQclear(PQexec(s->conn, "ROLLBACK"));
        return err;
    }
    return check_not_newer(*ret_version, d);
}

static enum ot_err record_migration(struct pg_store *s, int64_t version, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, version);
    param_i64(&p, (int64_t)time(NULL));
    _cleanup_result_ PGresult *res = exec_params(s, sql_migration_done, &p);
    return result_ok(res) ? OT_OK : db_error(s, res, d, "record migration %lld", (long long)version);
}

/* Inside the migration transaction, holding the lock. */
static enum ot_err migrate_locked(struct pg_store *s, int64_t *v, struct ot_diag *d)
{
    enum ot_err err = read_version(s, v, d);
    if (!err && *v == 0)
        err = check_identity(s, d);
    if (!err && *v == 0)
        err = exec_script(s, bootstrap_sql, "create schema_migrations", d);
    if (!err && *v < SCHEMA_VERSION) {
        char what[32];
        snprintf(what, sizeof(what), "migration %d", (int)*v + 1);
        err = exec_script(s, migrations[*v], what, d);
        if (!err)
            err = record_migration(s, *v + 1, d);
    }
    return err;
}

/* The next migration with its schema_migrations row, in one transaction. The advisory lock, held to
 * the end of the transaction, keeps a second otterd opening the same database at the same time
 * waiting; *v is read again under it, as that otterd may have applied the migration meanwhile. */
static enum ot_err apply_next(struct pg_store *s, int64_t *v, struct ot_diag *d)
{
    enum ot_err err = exec_script(s, "BEGIN", "start a migration", d);
    if (err)
        return err;
    err = exec_script(s, sql_migration_lock, "lock the schema", d);
    if (!err)
        err = migrate_locked(s, v, d);
    if (!err)
        err = exec_script(s, "COMMIT", "commit a migration", d);
    if (err) {
        if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            PQclear(PQexec(s->conn, "ROLLBACK"));
        return err;
    }
    if (*v < SCHEMA_VERSION)
        (*v)++;
    return OT_OK;
}

static enum ot_err migrate(struct pg_store *s, int64_t v, struct ot_diag *d)
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

static void pg_close(struct srv_store *base)
{
    struct pg_store *s = (struct pg_store *)base;
    PQfinish(s->conn); /* accepts NULL */
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static enum ot_err pg_open(const char *url, struct srv_store **ret, struct ot_diag *d)
{
    if (!PQisthreadsafe())
        return ot_diag_set(d, OT_ERR_UNSUPPORTED, "this libpq is built without thread safety");
    struct pg_store *s = calloc(1, sizeof(*s));
    if (!s)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    s->base.ops = &srv__store_pg_ops;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot create a mutex");
    }
    int64_t version = 0;
    enum ot_err err = connect_db(s, url, d);
    if (!err)
        err = check_db(s, &version, d);
    if (!err)
        err = migrate(s, version, d);
    if (err) {
        /* Named by the database, never by the URL: it may hold a password. */
        const char *db = s->conn ? PQdb(s->conn) : NULL;
        err = ot_diag_prefix(d, err, "PostgreSQL database '%s'", db && *db ? db : "?");
        pg_close(&s->base);
        return err;
    }
    *ret = &s->base;
    return OT_OK;
}

static int pg_schema_version(struct srv_store *base)
{
    return ((struct pg_store *)base)->version;
}

/* ---- meta ------------------------------------------------------------------------------------ */

static enum ot_err pg_meta_get(struct srv_store *base, const char *key, char **ret,
                               struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, key);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_meta_get, &p, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "read setting '%s'", key);
    if (PQntuples(res) == 0)
        return ot_diag_set(d, OT_ERR_NOENT, "no setting '%s'", key);
    return column_dup(res, 0, 0, false, ret, d);
}

static enum ot_err pg_meta_set(struct srv_store *base, const char *key, const char *value,
                               struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, key);
    param_text(&p, value);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_meta_set, &p, true, &res, d); /* an upsert: safe to repeat */
    if (err)
        return err;
    return result_ok(res) ? OT_OK : db_error(s, res, d, "write setting '%s'", key);
}

/* ---- tokens ---------------------------------------------------------------------------------- */

/* A row of TOKEN_COLUMNS. The checks guard the fixed-size fields against unexpected content. */
static enum ot_err read_token(const PGresult *res, int row, struct srv_token *t,
                              struct ot_diag *d)
{
    memset(t, 0, sizeof(*t));
    int64_t scopes = 0;
    int name_len = PQgetlength(res, row, 1);
    bool ok = get_int(res, row, 0, &t->id) && get_int(res, row, 2, &scopes) &&
              get_int(res, row, 3, &t->created_at) && get_int(res, row, 4, &t->expires_at) &&
              !PQgetisnull(res, row, 1) && name_len >= 1 && name_len < SRV_TOKEN_NAME_MAX &&
              PQgetlength(res, row, 5) == 1 && PQgetlength(res, row, 6) == SRV_TOKEN_HASH_LEN;
    if (!ok)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: token %lld", (long long)t->id);
    memcpy(t->name, PQgetvalue(res, row, 1), (size_t)name_len);
    t->scopes = (uint32_t)scopes;
    t->revoked = PQgetvalue(res, row, 5)[0] != 0;
    memcpy(t->hash, PQgetvalue(res, row, 6), SRV_TOKEN_HASH_LEN);
    return OT_OK;
}

static enum ot_err pg_token_create(struct srv_store *base, struct srv_token *t, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, t->name);
    param_i64(&p, t->scopes);
    param_i64(&p, t->created_at);
    param_i64(&p, t->expires_at);
    param_text(&p, t->revoked ? "true" : "false");
    param_bytes(&p, t->hash, SRV_TOKEN_HASH_LEN);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_token_insert, &p, false, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "store token '%s'", t->name);
    int64_t id = 0;
    if (PQntuples(res) != 1 || !get_int(res, 0, 0, &id))
        return ot_diag_set(d, OT_ERR_INTERNAL, "store token '%s': no id returned", t->name);
    t->id = id;
    return OT_OK;
}

static enum ot_err pg_token_by_hash(struct srv_store *base, const uint8_t hash[SRV_TOKEN_HASH_LEN],
                                    struct srv_token *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_bytes(&p, hash, SRV_TOKEN_HASH_LEN);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_token_by_hash, &p, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "look up a token");
    if (PQntuples(res) == 0)
        return ot_diag_set(d, OT_ERR_NOENT, "no such token");
    return read_token(res, 0, ret, d);
}

static enum ot_err pg_token_list(struct srv_store *base, struct srv_token **ret, size_t *ret_n,
                                 struct ot_diag *d)
{
    LOCKED(s, base);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_token_list, NULL, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "list tokens");
    size_t n = (size_t)PQntuples(res);
    _cleanup_free_ struct srv_token *list = calloc(n ? n : 1, sizeof(*list));
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        err = read_token(res, (int)i, &list[i], d);
        if (err)
            return err;
    }
    *ret = TAKE_PTR(list);
    *ret_n = n;
    return OT_OK;
}

static enum ot_err pg_token_revoke(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_token_revoke, &p, true, &res, d); /* revoking twice is fine */
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "revoke token %lld", (long long)id);
    if (PQntuples(res) == 0)
        return ot_diag_set(d, OT_ERR_NOENT, "no token with id %lld", (long long)id);
    return OT_OK;
}

/* ---- audit log ------------------------------------------------------------------------------- */

static enum ot_err pg_audit_add(struct srv_store *base, int64_t at, const char *actor,
                                const char *action, const char *object, const char *detail,
                                struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, at);
    param_text(&p, actor);
    param_text(&p, action);
    param_text(&p, object);
    param_text(&p, detail); /* NULL sends NULL */
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_audit_insert, &p, false, &res, d);
    if (err)
        return err;
    return result_ok(res) ? OT_OK : db_error(s, res, d, "add audit entry '%s'", action);
}

static enum ot_err read_audit(const PGresult *res, int row, struct srv_audit *e,
                              struct ot_diag *d)
{
    if (!get_int(res, row, 0, &e->id) || !get_int(res, row, 1, &e->at))
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: audit entry");
    enum ot_err err = column_dup(res, row, 2, false, &e->actor, d);
    if (!err)
        err = column_dup(res, row, 3, false, &e->action, d);
    if (!err)
        err = column_dup(res, row, 4, false, &e->object, d);
    if (!err)
        err = column_dup(res, row, 5, true, &e->detail, d);
    return err;
}

static enum ot_err pg_audit_list(struct srv_store *base, int64_t after_id, size_t limit,
                                 struct srv_audit **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, after_id);
    param_i64(&p, (int64_t)limit); /* limit ≤ SRV_AUDIT_LIST_MAX */
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_audit_list, &p, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "list the audit log");
    size_t n = (size_t)PQntuples(res);
    if (n > limit)
        return ot_diag_set(d, OT_ERR_INTERNAL, "list the audit log: too many rows");
    struct srv_audit *list = calloc(limit, sizeof(*list));
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !err && i < n; i++)
        err = read_audit(res, (int)i, &list[i], d); /* a half-read entry is freed below */
    if (err) {
        srv_audit_list_free(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

/* ---- helpers for the operations below -------------------------------------------------------- */

/* Statements with input in arrays (a batch in one statement): PostgreSQL array literals, sent as
 * text parameters and cast in the SQL ($1::bigint[]). Numbers and booleans need no quoting. */
static char *i64_array(const int64_t *v, size_t n)
{
    size_t cap = n * 21 + 3, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? "," : "", (long long)v[i]);
    snprintf(out + len, cap - len, "}");
    return out;
}

static char *bool_array(const bool *v, size_t n)
{
    char *out = malloc(n * 2 + 3);
    if (!out)
        return NULL;
    size_t len = 0;
    out[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            out[len++] = ',';
        out[len++] = v[i] ? 't' : 'f';
    }
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

/* Tags only: each is quoted, or a tag named "null" would be read as NULL; the tag rule leaves
 * nothing inside the quotes that needs escaping. */
static char *tag_array(const char *const *tags, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += strlen(tags[i]) + 3;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t len = 0;
    out[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i ? "," : "", tags[i]);
    snprintf(out + len, cap - len, "}");
    return out;
}

/* Transactions: BEGIN and COMMIT on the store's connection, under its lock. The statements in
 * between go through step(), never run(): a connection reset half-way would run the rest without
 * the transaction. */
static enum ot_err begin(struct pg_store *s, struct ot_diag *d)
{
    enum ot_err err = ensure_connected(s, d);
    return err ? err : exec_script(s, "BEGIN", "start a transaction", d);
}

/* Commits when err is OT_OK, rolls back otherwise; returns the outcome. A lost answer to COMMIT is
 * OT_ERR_IO (it may have committed), as for the single inserts. */
static enum ot_err end(struct pg_store *s, enum ot_err err, struct ot_diag *d)
{
    if (!err)
        err = exec_script(s, "COMMIT", "commit", d);
    if (err && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        PQclear(PQexec(s->conn, "ROLLBACK"));
    return err;
}

/* One statement inside a transaction. *ret_found (may be NULL): it returned a row; *ret_int (may
 * be NULL): that row's first column, an integer. */
static enum ot_err step(struct pg_store *s, const char *sql, const struct params *p,
                        bool *ret_found, int64_t *ret_int, struct ot_diag *d, const char *fmt,
                        ...) OT_PRINTF(7, 8);

static enum ot_err step(struct pg_store *s, const char *sql, const struct params *p,
                        bool *ret_found, int64_t *ret_int, struct ot_diag *d, const char *fmt,
                        ...)
{
    _cleanup_result_ PGresult *res = exec_params(s, sql, p);
    if (!result_ok(res)) {
        char what[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        return map_error(s->conn, res, what, d);
    }
    bool found = PQntuples(res) > 0;
    if (found && ret_int && !get_int(res, 0, 0, ret_int))
        return ot_diag_set(d, OT_ERR_INTERNAL, "unexpected result");
    if (ret_found)
        *ret_found = found;
    return OT_OK;
}

/* How to read one kind of row into its struct (read_*) and free a list of them. */
struct row_kind {
    size_t size;
    enum ot_err (*read)(const PGresult *res, int row, void *elem, struct ot_diag *d);
    void (*free_list)(void *list, size_t n);
};

/* A read outside a transaction, repeated once on a new connection if the old one broke. */
static enum ot_err read_rows(struct pg_store *s, const char *sql, const struct params *p,
                             PGresult **ret, struct ot_diag *d)
{
    enum ot_err err = run(s, sql, p, true, ret, d);
    if (!err && !result_ok(*ret))
        err = db_error(s, *ret, d, "read the database");
    return err;
}

/* The first row into *ret (a struct of kind k), written only on success; OT_ERR_NOENT without a
 * message when there is none: the caller says what was missing. */
static enum ot_err query_one(struct pg_store *s, const char *sql, const struct params *p,
                             const struct row_kind *k, void *ret, struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql, p, &res, d);
    if (err)
        return err;
    if (PQntuples(res) == 0)
        return OT_ERR_NOENT;
    void *row = calloc(1, k->size);
    if (!row)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = k->read(res, 0, row, d);
    if (err) {
        k->free_list(row, 1);
        return err;
    }
    memcpy(ret, row, k->size);
    free(row);
    return OT_OK;
}

/* Up to limit rows (limit ≤ SRV_LIST_MAX) into a new array of kind k. */
static enum ot_err query_list(struct pg_store *s, const char *sql, const struct params *p,
                              const struct row_kind *k, size_t limit, void **ret, size_t *ret_n,
                              struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql, p, &res, d);
    if (err)
        return err;
    size_t n = (size_t)PQntuples(res);
    if (n > limit)
        return ot_diag_set(d, OT_ERR_INTERNAL, "read the database: too many rows");
    char *list = calloc(limit, k->size);
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !err && i < n; i++)
        err = k->read(res, (int)i, list + i * k->size, d); /* a half-read row is freed below */
    if (err) {
        k->free_list(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

/* A text column into a fixed field of size max (NUL included); anything longer is damage. */
static enum ot_err column_copy(const PGresult *res, int row, int col, char *out, size_t max,
                               struct ot_diag *d)
{
    int n = PQgetlength(res, row, col);
    if (PQgetisnull(res, row, col) || n < 0 || (size_t)n >= max)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: %s", PQfname(res, col));
    memcpy(out, PQgetvalue(res, row, col), (size_t)n);
    out[n] = '\0';
    return OT_OK;
}

/* Integer columns of one row, in order from first; false when one is NULL or not an integer. */
static bool get_ints(const PGresult *res, int row, int first, int64_t *const *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!get_int(res, row, first + (int)i, out[i]))
            return false;
    return true;
}

static enum ot_err bump_generation(struct pg_store *s, struct ot_diag *d)
{
    return step(s, sql_generation_bump, NULL, NULL, NULL, d, "bump the generation");
}

/* ---- devices --------------------------------------------------------------------------------- */

/* A row of DEVICE_COLUMNS. */
static enum ot_err read_device(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_device *dev = elem;
    int64_t status = 0;
    bool ok = get_int(res, row, 0, &dev->id) && get_int(res, row, 3, &status) &&
              get_ints(res, row, 5, (int64_t *const[]){&dev->created_at, &dev->updated_at,
                                                       &dev->last_seen}, 3) &&
              PQgetlength(res, row, 1) == SRV_DEVICE_PUBKEY_LEN;
    if (!ok)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: device %lld",
                           (long long)dev->id);
    memcpy(dev->pubkey, PQgetvalue(res, row, 1), SRV_DEVICE_PUBKEY_LEN);
    dev->status = (enum srv_device_status)status;
    enum ot_err err = column_copy(res, row, 4, dev->device_type, sizeof(dev->device_type), d);
    if (!err)
        err = column_dup(res, row, 2, false, &dev->identity, d);
    if (!err)
        err = column_dup(res, row, 8, false, &dev->attributes, d);
    if (!err)
        err = column_dup(res, row, 9, false, &dev->installed, d);
    if (!err)
        err = srv__store_split_tags(PQgetisnull(res, row, 10) ? NULL : PQgetvalue(res, row, 10),
                                    &dev->tags, &dev->ntags, d);
    return err;
}

static void free_devices(void *list, size_t n) { srv_device_list_free(list, n); }

static const struct row_kind device_rows = {sizeof(struct srv_device), read_device, free_devices};

static enum ot_err insert_tags(struct pg_store *s, int64_t id, const char *const *tags, size_t n,
                               struct ot_diag *d)
{
    if (n == 0)
        return OT_OK;
    _cleanup_free_ char *array = tag_array(tags, n);
    if (!array)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct params p = {0};
    param_i64(&p, id);
    param_text(&p, array);
    return step(s, sql_tags_insert, &p, NULL, NULL, d, "tag device %lld", (long long)id);
}

static enum ot_err insert_device(struct pg_store *s, const struct srv_device *dev, int64_t *ret_id,
                                 struct ot_diag *d)
{
    struct params p = {0};
    param_bytes(&p, dev->pubkey, SRV_DEVICE_PUBKEY_LEN);
    param_text(&p, dev->identity);
    param_i64(&p, dev->status);
    param_text(&p, dev->device_type);
    param_i64(&p, dev->created_at);
    param_text(&p, dev->attributes);
    param_text(&p, dev->installed);
    enum ot_err err = step(s, sql_device_insert, &p, NULL, ret_id, d, "add device");
    if (!err)
        err = insert_tags(s, *ret_id, (const char *const *)dev->tags, dev->ntags, d);
    return err;
}

static enum ot_err pg_device_create(struct srv_store *base, const struct srv_device *dev,
                                    int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    int64_t id = 0;
    enum ot_err err = begin(s, d);
    if (!err)
        err = insert_device(s, dev, &id, d);
    err = end(s, err, d);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err pg_device_get(struct srv_store *base, int64_t id, struct srv_device *ret,
                                 struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    enum ot_err err = query_one(s, sql_device_get, &p, &device_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no device with id %lld", (long long)id);
    return err;
}

static enum ot_err pg_device_by_pubkey(struct srv_store *base,
                                       const uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN],
                                       struct srv_device *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_bytes(&p, pubkey, SRV_DEVICE_PUBKEY_LEN);
    enum ot_err err = query_one(s, sql_device_by_pubkey, &p, &device_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no device with this public key");
    return err;
}

/* An UPDATE ... WHERE id = $1 RETURNING id of one device, outside a transaction (again: it is
 * safe to repeat), or inside one (in_txn). OT_ERR_NOENT when there is no such device. */
static enum ot_err update_device(struct pg_store *s, const char *sql, const struct params *p,
                                 int64_t id, bool in_txn, struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = OT_OK;
    if (in_txn)
        res = exec_params(s, sql, p);
    else
        err = run(s, sql, p, true, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "update device %lld", (long long)id);
    if (PQntuples(res) == 0)
        return ot_diag_set(d, OT_ERR_NOENT, "no device with id %lld", (long long)id);
    return OT_OK;
}

static enum ot_err pg_device_set_status(struct srv_store *base, int64_t id,
                                        enum srv_device_status status, int64_t now,
                                        struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    param_i64(&p, status);
    param_i64(&p, now);
    return update_device(s, sql_device_set_status, &p, id, false, d);
}

static enum ot_err pg_device_set_installed(struct srv_store *base, int64_t id,
                                           const char *device_type, const char *installed,
                                           int64_t now, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    param_text(&p, device_type);
    param_text(&p, installed);
    param_i64(&p, now);
    return update_device(s, sql_device_set_installed, &p, id, false, d);
}

static enum ot_err pg_device_set_attributes(struct srv_store *base, int64_t id,
                                            const char *attributes, int64_t now,
                                            struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    param_text(&p, attributes);
    param_i64(&p, now);
    return update_device(s, sql_device_set_attributes, &p, id, false, d);
}

/* The device row is locked first (the UPDATE), so two calls for one device take turns. */
static enum ot_err replace_tags(struct pg_store *s, int64_t id, const char *const *tags,
                                size_t ntags, int64_t now, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, id);
    param_i64(&p, now);
    enum ot_err err = update_device(s, sql_device_set_updated, &p, id, true, d);
    if (!err) {
        p.n = 1;
        err = step(s, sql_tags_delete, &p, NULL, NULL, d, "untag device %lld", (long long)id);
    }
    if (!err)
        err = insert_tags(s, id, tags, ntags, d);
    return err;
}

static enum ot_err pg_device_set_tags(struct srv_store *base, int64_t id, const char *const *tags,
                                      size_t ntags, int64_t now, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = replace_tags(s, id, tags, ntags, now, d);
    return end(s, err, d);
}

#define BATCH_MAX 10000 /* array elements per statement */

struct seen {
    int64_t id, at;
};

static int compare_seen(const void *a, const void *b)
{
    const struct seen *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static enum ot_err touch_chunk(struct pg_store *s, const struct seen *v, size_t n,
                               struct ot_diag *d)
{
    _cleanup_free_ int64_t *ids = malloc(n * sizeof(*ids));
    _cleanup_free_ int64_t *at = malloc(n * sizeof(*at));
    if (!ids || !at)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        ids[i] = v[i].id;
        at[i] = v[i].at;
    }
    _cleanup_free_ char *id_text = i64_array(ids, n);
    _cleanup_free_ char *at_text = i64_array(at, n);
    if (!id_text || !at_text)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct params p = {0};
    param_text(&p, id_text);
    param_text(&p, at_text);
    return step(s, sql_device_touch, &p, NULL, NULL, d, "update last-seen times");
}

/* The check-in path's batch: one transaction, BATCH_MAX devices per statement, sorted by id so
 * that the row locks of the whole batch are taken in one order (see sql_device_touch). */
static enum ot_err pg_device_touch(struct srv_store *base, const int64_t *ids, const int64_t *at,
                                   size_t n, struct ot_diag *d)
{
    _cleanup_free_ struct seen *v = calloc(n, sizeof(*v));
    if (!v)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = (struct seen){ids[i], at[i]};
    qsort(v, n, sizeof(*v), compare_seen);
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    for (size_t i = 0; !err && i < n; i += BATCH_MAX)
        err = touch_chunk(s, v + i, OT_MIN(n - i, (size_t)BATCH_MAX), d);
    return end(s, err, d);
}

static enum ot_err pg_device_list(struct srv_store *base, const struct srv_device_filter *f,
                                  struct srv_device **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, f->after_id);
    param_i64(&p, f->status);
    param_text(&p, f->device_type); /* NULL sends NULL: any */
    param_text(&p, f->tag);
    param_i64(&p, (int64_t)f->limit);
    return query_list(s, sql_device_list, &p, &device_rows, f->limit, (void **)ret, ret_n, d);
}

static enum ot_err pg_device_ids_by_tag(struct srv_store *base, const char *tag, int64_t **ret,
                                        size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, tag);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_device_ids_by_tag, &p, &res, d);
    if (err)
        return err;
    size_t n = (size_t)PQntuples(res);
    _cleanup_free_ int64_t *ids = n ? calloc(n, sizeof(*ids)) : NULL;
    if (n && !ids)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!get_int(res, (int)i, 0, &ids[i]))
            return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: device_tags");
    *ret = TAKE_PTR(ids);
    *ret_n = n;
    return OT_OK;
}

/* ---- artifacts ------------------------------------------------------------------------------- */

/* A row of ARTIFACT_COLUMNS. */
static enum ot_err read_artifact(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_artifact *a = elem;
    int64_t size = 0;
    if (!get_int(res, row, 0, &a->id) || !get_int(res, row, 4, &size) ||
        !get_int(res, row, 8, &a->created_at) || size < 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: artifact %lld",
                           (long long)a->id);
    a->size = (uint64_t)size;
    enum ot_err err = column_copy(res, row, 3, a->sha256, sizeof(a->sha256), d);
    if (!err)
        err = column_dup(res, row, 1, false, &a->name, d);
    if (!err)
        err = column_dup(res, row, 2, false, &a->version, d);
    if (!err)
        err = column_dup(res, row, 5, false, &a->manifest, d);
    if (!err)
        err = column_dup(res, row, 6, false, &a->signatures, d);
    if (!err)
        err = column_dup(res, row, 7, false, &a->device_types, d);
    if (!err)
        err = column_dup(res, row, 9, false, &a->uploaded_by, d);
    if (!err)
        err = column_dup(res, row, 10, false, &a->channel, d);
    return err;
}

static void free_artifacts(void *list, size_t n) { srv_artifact_list_free(list, n); }

static const struct row_kind artifact_rows = {sizeof(struct srv_artifact), read_artifact,
                                              free_artifacts};

/* After a refused insert: which of the two unique keys, for the message. */
static enum ot_err artifact_conflict(struct pg_store *s, const struct srv_artifact *a,
                                     struct ot_diag *d)
{
    struct params p = {0};
    param_text(&p, a->sha256);
    param_text(&p, a->name);
    param_text(&p, a->version);
    _cleanup_result_ PGresult *res = NULL;
    int64_t id = 0;
    bool same_sha = false;
    if (read_rows(s, sql_artifact_conflict, &p, &res, NULL) == OT_OK && PQntuples(res) == 1 &&
        get_int(res, 0, 0, &id))
        same_sha = PQgetlength(res, 0, 1) == 1 && PQgetvalue(res, 0, 1)[0];
    if (same_sha)
        return ot_diag_set(d, OT_ERR_EXISTS, "sha256 %s is already stored as artifact %lld",
                           a->sha256, (long long)id);
    return ot_diag_set(d, OT_ERR_EXISTS, "%s version %s is already stored as artifact %lld",
                       a->name, a->version, (long long)id);
}

static enum ot_err pg_artifact_create(struct srv_store *base, const struct srv_artifact *a,
                                      int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, a->name);
    param_text(&p, a->version);
    param_text(&p, a->sha256);
    param_i64(&p, (int64_t)a->size); /* ≤ INT64_MAX, checked in store.c */
    param_text(&p, a->manifest);
    param_text(&p, a->signatures);
    param_text(&p, a->device_types);
    param_i64(&p, a->created_at);
    param_text(&p, a->uploaded_by);
    param_text(&p, a->channel);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_artifact_insert, &p, false, &res, d);
    if (err)
        return err;
    if (!result_ok(res)) {
        err = db_error(s, res, d, "store artifact %s %s", a->name, a->version);
        return err == OT_ERR_EXISTS ? artifact_conflict(s, a, d) : err;
    }
    if (PQntuples(res) != 1 || !get_int(res, 0, 0, ret_id))
        return ot_diag_set(d, OT_ERR_INTERNAL, "store artifact: no id returned");
    return OT_OK;
}

static enum ot_err pg_artifact_get(struct srv_store *base, int64_t id, struct srv_artifact *ret,
                                   struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    enum ot_err err = query_one(s, sql_artifact_get, &p, &artifact_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no artifact with id %lld", (long long)id);
    return err;
}

static enum ot_err pg_artifact_by_sha256(struct srv_store *base, const char *sha256_hex,
                                         struct srv_artifact *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, sha256_hex);
    enum ot_err err = query_one(s, sql_artifact_by_sha256, &p, &artifact_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no artifact with sha256 %s", sha256_hex);
    return err;
}

static enum ot_err pg_artifact_list(struct srv_store *base, int64_t after_id, size_t limit,
                                    struct srv_artifact **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, after_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, sql_artifact_list, &p, &artifact_rows, limit, (void **)ret, ret_n, d);
}

static enum ot_err delete_artifact(struct pg_store *s, int64_t id, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, id);
    bool found = false, used = false;
    int64_t user = 0;
    enum ot_err err = step(s, sql_artifact_lock, &p, &found, NULL, d, "delete artifact %lld",
                           (long long)id);
    if (!err && !found)
        return ot_diag_set(d, OT_ERR_NOENT, "no artifact with id %lld", (long long)id);
    if (!err)
        err = step(s, sql_artifact_user, &p, &used, &user, d, "delete artifact %lld",
                   (long long)id);
    if (!err && used)
        return ot_diag_set(d, OT_ERR_EXISTS, "artifact %lld is used by active deployment %lld",
                           (long long)id, (long long)user);
    if (!err)
        err = step(s, sql_artifact_delete, &p, NULL, NULL, d, "delete artifact %lld",
                   (long long)id);
    return err;
}

static enum ot_err pg_artifact_delete(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = delete_artifact(s, id, d);
    return end(s, err, d);
}

/* ---- deployment templates -------------------------------------------------------------------- */

/* A row of TEMPLATE_COLUMNS. */
static enum ot_err read_template(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_template *t = elem;
    if (!get_int(res, row, 0, &t->id) || !get_int(res, row, 5, &t->created_at) ||
        PQgetlength(res, row, 4) != 1)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: template %lld",
                           (long long)t->id);
    t->enabled = PQgetvalue(res, row, 4)[0] != 0;
    enum ot_err err = column_dup(res, row, 1, false, &t->name, d);
    if (!err)
        err = column_dup(res, row, 2, false, &t->channel, d);
    if (!err)
        err = column_dup(res, row, 3, false, &t->body, d);
    if (!err)
        err = column_dup(res, row, 6, false, &t->created_by, d);
    return err;
}

static void free_templates(void *list, size_t n) { srv_template_list_free(list, n); }

static const struct row_kind template_rows = {sizeof(struct srv_template), read_template,
                                              free_templates};

static enum ot_err no_template(int64_t id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "no template with id %lld", (long long)id);
}

/* Not repeated after a lost connection: it may have committed (see the top of the file). */
static enum ot_err pg_template_create(struct srv_store *base, const struct srv_template *t,
                                      int64_t *ret_id, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_text(&p, t->name);
    param_text(&p, t->channel);
    param_text(&p, t->body);
    param_text(&p, t->enabled ? "true" : "false");
    param_i64(&p, t->created_at);
    param_text(&p, t->created_by);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql_template_insert, &p, false, &res, d);
    if (err)
        return err;
    if (!result_ok(res)) {
        err = db_error(s, res, d, "store template '%s'", t->name);
        return err == OT_ERR_EXISTS /* the one unique key besides the id */
                   ? ot_diag_set(d, err, "a template named '%s' exists already", t->name)
                   : err;
    }
    if (PQntuples(res) != 1 || !get_int(res, 0, 0, ret_id))
        return ot_diag_set(d, OT_ERR_INTERNAL, "store template: no id returned");
    return OT_OK;
}

static enum ot_err pg_template_get(struct srv_store *base, int64_t id, struct srv_template *ret,
                                   struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    enum ot_err err = query_one(s, sql_template_get, &p, &template_rows, ret, d);
    return err == OT_ERR_NOENT ? no_template(id, d) : err;
}

static enum ot_err pg_template_list(struct srv_store *base, const char *channel,
                                    int64_t after_id, size_t limit, struct srv_template **ret,
                                    size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    if (channel)
        param_text(&p, channel);
    param_i64(&p, after_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, channel ? sql_template_list_channel : sql_template_list, &p,
                      &template_rows, limit, (void **)ret, ret_n, d);
}

/* An UPDATE or DELETE ... WHERE id = $1 RETURNING id of one template; again: whether it is
 * harmless to repeat (a repeated delete would find nothing and say so). */
static enum ot_err change_template(struct pg_store *s, const char *sql, const struct params *p,
                                   int64_t id, bool again, struct ot_diag *d)
{
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = run(s, sql, p, again, &res, d);
    if (err)
        return err;
    if (!result_ok(res))
        return db_error(s, res, d, "change template %lld", (long long)id);
    return PQntuples(res) == 0 ? no_template(id, d) : OT_OK;
}

static enum ot_err pg_template_set_enabled(struct srv_store *base, int64_t id, bool enabled,
                                           struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    param_text(&p, enabled ? "true" : "false");
    return change_template(s, sql_template_set_enabled, &p, id, true, d);
}

static enum ot_err pg_template_delete(struct srv_store *base, int64_t id, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    return change_template(s, sql_template_delete, &p, id, false, d);
}

/* ---- deployments ----------------------------------------------------------------------------- */

/* A row of DEPLOYMENT_COLUMNS. */
static enum ot_err read_deployment(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_deployment *dep = elem;
    int64_t status = 0, ndevices = 0;
    bool ok = get_int(res, row, 0, &dep->id) && get_int(res, row, 2, &dep->artifact_id) &&
              get_ints(res, row, 6, (int64_t *const[]){&status, &dep->created_at,
                                                       &dep->finished_at}, 3) &&
              get_int(res, row, 10, &ndevices) && ndevices >= 0;
    if (!ok)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: deployment %lld",
                           (long long)dep->id);
    dep->status = (enum srv_deployment_status)status;
    dep->ndevices = (size_t)ndevices;
    enum ot_err err = column_dup(res, row, 1, false, &dep->name, d);
    if (!err)
        err = column_dup(res, row, 3, false, &dep->artifact_name, d);
    if (!err)
        err = column_dup(res, row, 4, false, &dep->artifact_version, d);
    if (!err)
        err = column_dup(res, row, 5, false, &dep->target, d);
    if (!err)
        err = column_dup(res, row, 9, false, &dep->created_by, d);
    return err;
}

static void free_deployments(void *list, size_t n) { srv_deployment_list_free(list, n); }

static const struct row_kind deployment_rows = {sizeof(struct srv_deployment), read_deployment,
                                                free_deployments};

/* A row of DD_COLUMNS. */
static enum ot_err read_dd(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_dd *dd = elem;
    int64_t status = 0, progress = 0, attempts = 0;
    if (!get_ints(res, row, 0, (int64_t *const[]){&dd->deployment_id, &dd->device_id, &status,
                                                  &progress}, 4) ||
        !get_ints(res, row, 5, (int64_t *const[]){&dd->updated_at, &dd->seq, &attempts}, 3) ||
        attempts < 0 || attempts > UINT32_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: deployment_devices");
    dd->status = (enum srv_dd_status)status;
    dd->progress = (int)progress;
    dd->attempts = (uint32_t)attempts;
    return column_dup(res, row, 4, false, &dd->message, d);
}

static void free_dds(void *list, size_t n) { srv_dd_list_free(list, n); }

static const struct row_kind dd_rows = {sizeof(struct srv_dd), read_dd, free_dds};

static enum ot_err read_event(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_dd_event *e = elem;
    int64_t status = 0, progress = 0;
    if (!get_ints(res, row, 0, (int64_t *const[]){&e->id, &e->at, &status, &progress}, 4))
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: dd_events");
    e->status = (enum srv_dd_status)status;
    e->progress = (int)progress;
    enum ot_err err = column_dup(res, row, 4, false, &e->message, d);
    if (!err)
        err = column_dup(res, row, 5, true, &e->log, d);
    return err;
}

static void free_events(void *list, size_t n) { srv_dd_event_list_free(list, n); }

static const struct row_kind event_rows = {sizeof(struct srv_dd_event), read_event, free_events};

static enum ot_err insert_deployment(struct pg_store *s, const struct srv_deployment *dep,
                                     int64_t *ret_id, struct ot_diag *d)
{
    struct params p = {0};
    param_text(&p, dep->name);
    param_i64(&p, dep->artifact_id);
    param_text(&p, dep->target);
    param_i64(&p, dep->status);
    param_i64(&p, dep->created_at);
    param_i64(&p, dep->finished_at);
    param_text(&p, dep->created_by);
    param_i64(&p, (int64_t)dep->ndevices);
    bool found = false;
    enum ot_err err = step(s, sql_deployment_insert, &p, &found, ret_id, d,
                           "create deployment '%s'", dep->name);
    if (!err && !found)
        err = ot_diag_set(d, OT_ERR_NOENT, "no artifact with id %lld",
                          (long long)dep->artifact_id);
    return err;
}

/* Up to BATCH_MAX rows of a new deployment. Devices are never deleted, so one that exists now
 * still does at the commit; the foreign key stays the last word all the same. */
struct dd_batch {
    const int64_t *ids;
    const bool *skipped;
    const int64_t *seqs; /* NULL: every seq 0 */
    size_t n;
};

static enum ot_err insert_dds(struct pg_store *s, int64_t deployment_id, const struct dd_batch *b,
                              const char *skip_message, int64_t at, struct ot_diag *d)
{
    _cleanup_free_ char *id_text = i64_array(b->ids, b->n);
    _cleanup_free_ char *skip_text = bool_array(b->skipped, b->n);
    _cleanup_free_ char *seq_text = b->seqs ? i64_array(b->seqs, b->n) : NULL;
    if (!id_text || !skip_text || (b->seqs && !seq_text))
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct params p = {0};
    param_text(&p, id_text);
    bool unknown = false;
    int64_t id = 0;
    enum ot_err err = step(s, sql_dd_unknown_device, &p, &unknown, &id, d, "check the devices");
    if (!err && unknown)
        return ot_diag_set(d, OT_ERR_INVALID, "device %lld does not exist", (long long)id);
    p.n = 0;
    param_i64(&p, deployment_id);
    param_text(&p, id_text);
    param_text(&p, skip_text);
    param_text(&p, skip_message);
    param_i64(&p, at);
    param_text(&p, seq_text); /* NULL sends NULL */
    if (!err)
        err = step(s, sql_dd_insert, &p, NULL, NULL, d, "add the devices to the deployment");
    return err;
}

static enum ot_err insert_rollout(struct pg_store *s, int64_t deployment_id,
                                  const struct srv_rollout *r, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_text(&p, r->policy);
    param_i64(&p, r->state);
    param_i64(&p, r->phase);
    param_i64(&p, r->released);
    param_i64(&p, r->phase_started_at);
    param_i64(&p, r->phase_ready_at);
    param_text(&p, r->reason);
    param_i64(&p, r->updated_at);
    param_i64(&p, r->base_failed);
    param_i64(&p, r->base_finished);
    return step(s, sql_rollout_insert, &p, NULL, NULL, d, "create the rollout of deployment %lld",
                (long long)deployment_id);
}

static enum ot_err pg_deployment_create(struct srv_store *base, const struct srv_deployment *dep,
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
    for (size_t i = 0; !err && i < ndevices; i += BATCH_MAX) {
        const struct dd_batch b = {device_ids + i, skipped + i, seqs ? seqs + i : NULL,
                                   OT_MIN(ndevices - i, (size_t)BATCH_MAX)};
        err = insert_dds(s, id, &b, skip_message, dep->created_at, d);
    }
    if (!err && rollout)
        err = insert_rollout(s, id, rollout, d);
    if (!err)
        err = bump_generation(s, d);
    err = end(s, err, d);
    if (!err)
        *ret_id = id;
    return err;
}

static enum ot_err pg_deployment_get(struct srv_store *base, int64_t id,
                                     struct srv_deployment *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, id);
    enum ot_err err = query_one(s, sql_deployment_get, &p, &deployment_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no deployment with id %lld", (long long)id);
    return err;
}

static enum ot_err pg_deployment_list(struct srv_store *base, enum srv_deployment_status status,
                                      int64_t before_id, size_t limit,
                                      struct srv_deployment **ret, size_t *ret_n,
                                      struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, status);
    param_i64(&p, before_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, sql_deployment_list, &p, &deployment_rows, limit, (void **)ret, ret_n,
                      d);
}

/* OT_ERR_NOENT for an unknown deployment (outside a transaction). */
static enum ot_err deployment_exists(struct pg_store *s, int64_t id, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, id);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_deployment_status, &p, &res, d);
    if (!err && PQntuples(res) == 0)
        err = ot_diag_set(d, OT_ERR_NOENT, "no deployment with id %lld", (long long)id);
    return err;
}

static enum ot_err pg_deployment_rollup(struct srv_store *base, int64_t id,
                                        uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = deployment_exists(s, id, d);
    if (err)
        return err;
    struct params p = {0};
    param_i64(&p, id);
    _cleanup_result_ PGresult *res = NULL;
    err = read_rows(s, sql_deployment_rollup, &p, &res, d);
    if (err)
        return err;
    uint64_t got[SRV_DD__MAX] = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t status = 0, n = 0;
        if (!get_int(res, i, 0, &status) || !get_int(res, i, 1, &n))
            return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: deployment_devices");
        if (status >= SRV_DD_PENDING && status < SRV_DD__MAX)
            got[status] = (uint64_t)n;
    }
    memcpy(counts, got, sizeof(got));
    return OT_OK;
}

static enum ot_err pg_deployment_devices(struct srv_store *base, int64_t id,
                                         int64_t after_device_id, size_t limit,
                                         struct srv_dd **ret, size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = deployment_exists(s, id, d);
    if (err)
        return err;
    struct params p = {0};
    param_i64(&p, id);
    param_i64(&p, after_device_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, sql_deployment_devices, &p, &dd_rows, limit, (void **)ret, ret_n, d);
}

/* Locks the deployment row first (the UPDATE), then its pending rows: the same order as a report
 * that may finish it (pg_dd_report), so the two never deadlock. */
static enum ot_err cancel_deployment(struct pg_store *s, int64_t id, int64_t now,
                                     struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, id);
    param_i64(&p, now);
    bool found = false;
    enum ot_err err = step(s, sql_deployment_cancel, &p, &found, NULL, d,
                           "cancel deployment %lld", (long long)id);
    if (!err && !found) {
        p.n = 1;
        err = step(s, sql_deployment_status, &p, &found, NULL, d, "read deployment %lld",
                   (long long)id);
        if (!err && !found)
            return ot_diag_set(d, OT_ERR_NOENT, "no deployment with id %lld", (long long)id);
        return err ? err : ot_diag_set(d, OT_ERR_EXISTS, "deployment %lld is not active",
                                       (long long)id);
    }
    if (!err)
        err = step(s, sql_dd_cancel_pending, &p, NULL, NULL, d,
                   "cancel the devices of deployment %lld", (long long)id);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err pg_deployment_cancel(struct srv_store *base, int64_t id, int64_t now,
                                        struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = cancel_deployment(s, id, now, d);
    return end(s, err, d);
}

static enum ot_err pg_device_next(struct srv_store *base, int64_t device_id, struct srv_dd *ret,
                                  struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, device_id);
    enum ot_err err = query_one(s, sql_device_next, &p, &dd_rows, ret, d);
    if (err == OT_ERR_NOENT)
        return ot_diag_set(d, err, "no work for device %lld", (long long)device_id);
    return err;
}

static enum ot_err no_row(int64_t deployment_id, int64_t device_id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "device %lld is not in deployment %lld",
                       (long long)device_id, (long long)deployment_id);
}

static enum ot_err pg_dd_get(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                             struct srv_dd *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, device_id);
    enum ot_err err = query_one(s, sql_dd_get, &p, &dd_rows, ret, d);
    return err == OT_ERR_NOENT ? no_row(deployment_id, device_id, d) : err;
}

/* Inside a transaction: the deployment row, locked to the end of it. */
static enum ot_err lock_deployment(struct pg_store *s, int64_t id, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, id);
    return step(s, sql_deployment_lock, &p, NULL, NULL, d, "lock deployment %lld",
                (long long)id);
}

/* After a row became final: an active deployment with no row left to finish is finished. The
 * caller holds the deployment's lock, so of two reports finishing its last two rows at once, the
 * second waits and then sees the first's row final (a new snapshot per statement). */
static enum ot_err finish_if_done(struct pg_store *s, int64_t deployment_id, int64_t at,
                                  struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, at);
    bool finished = false;
    enum ot_err err = step(s, sql_deployment_finish, &p, &finished, NULL, d,
                           "finish deployment %lld", (long long)deployment_id);
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

/* The row's key, $1 and $2. */
static void params_row(struct params *p, const struct report *r)
{
    param_i64(p, r->deployment_id);
    param_i64(p, r->device_id);
}

/* Whether a report sends the row back to PENDING instead (srv_store_dd_report_retry); *ret_attempts
 * is the row's count so far. The caller holds the row lock. */
static enum ot_err wants_retry(struct pg_store *s, const struct report *r, bool *ret_retry,
                               int64_t *ret_attempts, struct ot_diag *d)
{
    *ret_retry = false;
    if ((r->status != SRV_DD_FAILURE && r->status != SRV_DD_ROLLED_BACK) || r->retries == 0)
        return OT_OK;
    struct params p = {0};
    params_row(&p, r);
    enum ot_err err = step(s, sql_dd_attempts, &p, NULL, ret_attempts, d,
                           "read the attempts of device %lld", (long long)r->device_id);
    if (!err)
        *ret_retry = *ret_attempts >= 0 && *ret_attempts < (int64_t)r->retries;
    return err;
}

/* The row back to PENDING with one more attempt; the event still says what the device reported. */
static enum ot_err write_retry(struct pg_store *s, const struct report *r, int64_t attempts,
                               struct ot_diag *d)
{
    char message[SRV_DD_MESSAGE_MAX + 1];
    srv__store_retry_message(message, (uint32_t)attempts + 1, r->retries, r->status, r->message);
    struct params p = {0};
    params_row(&p, r);
    param_text(&p, message);
    param_i64(&p, r->at);
    return step(s, sql_dd_retry, &p, NULL, NULL, d, "retry device %lld in deployment %lld",
                (long long)r->device_id, (long long)r->deployment_id);
}

static enum ot_err write_report(struct pg_store *s, const struct report *r, struct ot_diag *d)
{
    struct params p = {0};
    params_row(&p, r);
    param_i64(&p, r->status);
    param_i64(&p, r->progress);
    param_text(&p, r->message);
    param_i64(&p, r->at);
    return step(s, sql_dd_update, &p, NULL, NULL, d, "update device %lld in deployment %lld",
                (long long)r->device_id, (long long)r->deployment_id);
}

static enum ot_err write_event(struct pg_store *s, const struct report *r, struct ot_diag *d)
{
    struct params p = {0};
    params_row(&p, r);
    param_i64(&p, r->at);
    param_i64(&p, r->status);
    param_i64(&p, r->progress);
    param_text(&p, r->message);
    param_text(&p, r->log);
    return step(s, sql_event_insert, &p, NULL, NULL, d, "record the report of device %lld",
                (long long)r->device_id);
}

/* Lock order: the deployment (only when this report may finish it), then the row; a cancel takes
 * the same order. The row lock makes the final-state check and the write one step: a second
 * report for the row waits, then reads what the first one wrote. */
static enum ot_err apply_report(struct pg_store *s, const struct report *r, bool *ret_applied,
                                bool *ret_retried, enum srv_dd_status *ret_current,
                                struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    if (SRV_DD_IS_FINAL(r->status))
        err = lock_deployment(s, r->deployment_id, d);
    struct params p = {0};
    params_row(&p, r);
    bool found = false;
    int64_t current = 0, attempts = 0;
    if (!err)
        err = step(s, sql_dd_lock, &p, &found, &current, d, "read device %lld in deployment %lld",
                   (long long)r->device_id, (long long)r->deployment_id);
    if (!err && !found)
        return no_row(r->deployment_id, r->device_id, d);
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
        err = write_event(s, r, d);
    if (!err && !*ret_retried && SRV_DD_IS_FINAL(r->status))
        err = finish_if_done(s, r->deployment_id, r->at, d);
    return err;
}

static enum ot_err pg_dd_report(struct srv_store *base, int64_t deployment_id, int64_t device_id,
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

static enum ot_err skip_row(struct pg_store *s, int64_t deployment_id, int64_t device_id,
                            const char *message, int64_t at, struct ot_diag *d)
{
    enum ot_err err = lock_deployment(s, deployment_id, d);
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, device_id);
    param_text(&p, message);
    param_i64(&p, at);
    bool skipped = false, found = false;
    if (!err)
        err = step(s, sql_dd_skip, &p, &skipped, NULL, d, "skip device %lld in deployment %lld",
                   (long long)device_id, (long long)deployment_id);
    if (!err && !skipped) { /* not pending (a no-op), or no such row */
        p.n = 2;
        err = step(s, sql_dd_status, &p, &found, NULL, d, "read device %lld in deployment %lld",
                   (long long)device_id, (long long)deployment_id);
        return !err && !found ? no_row(deployment_id, device_id, d) : err;
    }
    if (!err)
        err = finish_if_done(s, deployment_id, at, d);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err pg_dd_skip(struct srv_store *base, int64_t deployment_id, int64_t device_id,
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

/* A new row's seq: after the highest one when the deployment has a rollout, else 0. The caller
 * holds the deployment's lock, so two devices added at once get different ones. */
static enum ot_err next_seq(struct pg_store *s, int64_t deployment_id, int64_t *ret,
                            struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    bool staged = false;
    *ret = 0;
    enum ot_err err = step(s, sql_rollout_exists, &p, &staged, NULL, d,
                           "read the rollout of deployment %lld", (long long)deployment_id);
    if (!err && staged)
        err = step(s, sql_dd_max_seq, &p, NULL, ret, d,
                   "read the rollout order of deployment %lld", (long long)deployment_id);
    if (!err && staged)
        (*ret)++;
    return err;
}

static enum ot_err insert_member(struct pg_store *s, const struct membership *m, int64_t seq,
                                 struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, m->deployment_id);
    param_i64(&p, m->device_id);
    param_i64(&p, m->skipped ? SRV_DD_SKIPPED : SRV_DD_PENDING);
    param_text(&p, m->skipped ? m->skip_message : "");
    param_i64(&p, m->at);
    param_i64(&p, seq);
    enum ot_err err = step(s, sql_dd_add, &p, NULL, NULL, d,
                           "add device %lld to deployment %lld", (long long)m->device_id,
                           (long long)m->deployment_id);
    p.n = 1;
    if (!err)
        err = step(s, sql_deployment_grow, &p, NULL, NULL, d,
                   "count the devices of deployment %lld", (long long)m->deployment_id);
    return err;
}

/* The deployment row first, locked to the end (the lock order at the top of the file): a cancel,
 * a finishing report or another add for it waits. *ret_added stays false for a cancelled
 * deployment or a device that has its row already; a finished one is reopened. */
static enum ot_err add_member(struct pg_store *s, const struct membership *m, bool *ret_added,
                              int64_t *ret_seq, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, m->deployment_id);
    bool found = false, has_row = false;
    int64_t status = 0;
    enum ot_err err = step(s, sql_deployment_lock, &p, &found, &status, d,
                           "lock deployment %lld", (long long)m->deployment_id);
    if (!err && !found)
        return ot_diag_set(d, OT_ERR_NOENT, "no deployment with id %lld",
                           (long long)m->deployment_id);
    param_i64(&p, m->device_id);
    if (!err)
        err = step(s, sql_dd_status, &p, &has_row, NULL, d, "read device %lld in deployment %lld",
                   (long long)m->device_id, (long long)m->deployment_id);
    p.n = 0;
    param_i64(&p, m->device_id);
    if (!err)
        err = step(s, sql_device_exists, &p, &found, NULL, d, "read device %lld",
                   (long long)m->device_id);
    if (!err && !found)
        return ot_diag_set(d, OT_ERR_NOENT, "no device with id %lld", (long long)m->device_id);
    if (err || status == SRV_DEPLOYMENT_CANCELLED || has_row)
        return err;
    err = next_seq(s, m->deployment_id, ret_seq, d);
    if (!err)
        err = insert_member(s, m, *ret_seq, d);
    p.n = 0;
    param_i64(&p, m->deployment_id);
    if (!err && status == SRV_DEPLOYMENT_FINISHED && !m->skipped)
        err = step(s, sql_deployment_reopen, &p, NULL, NULL, d, "reopen deployment %lld",
                   (long long)m->deployment_id);
    if (!err)
        err = bump_generation(s, d);
    *ret_added = !err;
    return err;
}

static enum ot_err pg_deployment_add_device(struct srv_store *base, int64_t deployment_id,
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

static enum ot_err pg_dd_events(struct srv_store *base, int64_t deployment_id, int64_t device_id,
                                int64_t after_id, size_t limit, struct srv_dd_event **ret,
                                size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, device_id);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_dd_status, &p, &res, d);
    if (err)
        return err;
    if (PQntuples(res) == 0)
        return no_row(deployment_id, device_id, d);
    param_i64(&p, after_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, sql_events, &p, &event_rows, limit, (void **)ret, ret_n, d);
}

static enum ot_err pg_deployments_generation(struct srv_store *base, int64_t *ret,
                                             struct ot_diag *d)
{
    LOCKED(s, base);
    return query_int(s, sql_generation_get, NULL, ret, d);
}

/* ---- rollouts -------------------------------------------------------------------------------- */

/* A row of ROLLOUT_COLUMNS. */
static enum ot_err read_rollout(const PGresult *res, int row, void *elem, struct ot_diag *d)
{
    struct srv_rollout *r = elem;
    int64_t state = 0;
    bool ok = get_int(res, row, 0, &r->deployment_id) &&
              get_ints(res, row, 2, (int64_t *const[]){&state, &r->phase, &r->released,
                                                       &r->phase_started_at, &r->phase_ready_at},
                       5) &&
              get_int(res, row, 8, &r->updated_at) && get_int(res, row, 9, &r->base_failed) &&
              get_int(res, row, 10, &r->base_finished);
    if (!ok)
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: rollout %lld",
                           (long long)r->deployment_id);
    r->state = (enum srv_rollout_state)state;
    enum ot_err err = column_dup(res, row, 1, false, &r->policy, d);
    if (!err)
        err = column_dup(res, row, 7, false, &r->reason, d);
    return err;
}

static void free_rollouts(void *list, size_t n) { srv_rollout_list_free(list, n); }

static const struct row_kind rollout_rows = {sizeof(struct srv_rollout), read_rollout,
                                             free_rollouts};

static enum ot_err read_rollout_event(const PGresult *res, int row, void *elem,
                                      struct ot_diag *d)
{
    struct srv_rollout_event *e = elem;
    if (!get_int(res, row, 0, &e->id) || !get_int(res, row, 1, &e->at))
        return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: rollout_events");
    enum ot_err err = column_dup(res, row, 2, false, &e->kind, d);
    if (!err)
        err = column_dup(res, row, 3, false, &e->message, d);
    return err;
}

static void free_rollout_events(void *list, size_t n) { srv_rollout_event_list_free(list, n); }

static const struct row_kind rollout_event_rows = {sizeof(struct srv_rollout_event),
                                                   read_rollout_event, free_rollout_events};

static enum ot_err no_rollout(int64_t deployment_id, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOENT, "deployment %lld has no rollout",
                       (long long)deployment_id);
}

static enum ot_err pg_rollout_get(struct srv_store *base, int64_t deployment_id,
                                  struct srv_rollout *ret, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    enum ot_err err = query_one(s, sql_rollout_get, &p, &rollout_rows, ret, d);
    return err == OT_ERR_NOENT ? no_rollout(deployment_id, d) : err;
}

static enum ot_err pg_rollout_list_active(struct srv_store *base, struct srv_rollout **ret,
                                          size_t *ret_n, struct ot_diag *d)
{
    LOCKED(s, base);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_rollout_list_active, NULL, &res, d);
    if (err)
        return err;
    size_t n = (size_t)PQntuples(res);
    struct srv_rollout *list = calloc(n ? n : 1, sizeof(*list));
    if (!list)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !err && i < n; i++)
        err = read_rollout(res, (int)i, &list[i], d); /* a half-read row is freed below */
    if (err) {
        srv_rollout_list_free(list, n);
        return err;
    }
    *ret = list;
    *ret_n = n;
    return OT_OK;
}

/* A decision (in a transaction or on its own); OT_ERR_NOENT when there is no rollout. */
static enum ot_err add_decision(struct pg_store *s, int64_t deployment_id, int64_t at,
                                const char *kind, const char *message, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, at);
    param_text(&p, kind);
    param_text(&p, message);
    bool found = false;
    enum ot_err err = step(s, sql_rollout_event_insert, &p, &found, NULL, d,
                           "record a decision of rollout %lld", (long long)deployment_id);
    return !err && !found ? no_rollout(deployment_id, d) : err;
}

static enum ot_err update_rollout(struct pg_store *s, const struct srv_rollout *r,
                                  const char *kind, const char *message, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, r->deployment_id);
    param_i64(&p, r->state);
    param_i64(&p, r->phase);
    param_i64(&p, r->released);
    param_i64(&p, r->phase_started_at);
    param_i64(&p, r->phase_ready_at);
    param_text(&p, r->reason);
    param_i64(&p, r->updated_at);
    param_i64(&p, r->base_failed);
    param_i64(&p, r->base_finished);
    bool found = false;
    enum ot_err err = step(s, sql_rollout_update, &p, &found, NULL, d,
                           "update the rollout of deployment %lld", (long long)r->deployment_id);
    if (!err && !found)
        return no_rollout(r->deployment_id, d);
    if (!err && kind)
        err = add_decision(s, r->deployment_id, r->updated_at, kind, message, d);
    return err;
}

static enum ot_err pg_rollout_update(struct srv_store *base, const struct srv_rollout *r,
                                     const char *kind, const char *message, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = begin(s, d);
    if (!err)
        err = update_rollout(s, r, kind, message, d);
    return end(s, err, d);
}

/* One statement, not retried: it may have committed before a lost answer (like the audit log). */
static enum ot_err pg_rollout_event_add(struct srv_store *base, int64_t deployment_id, int64_t at,
                                        const char *kind, const char *message, struct ot_diag *d)
{
    LOCKED(s, base);
    enum ot_err err = ensure_connected(s, d);
    return err ? err : add_decision(s, deployment_id, at, kind, message, d);
}

static enum ot_err pg_rollout_events(struct srv_store *base, int64_t deployment_id,
                                     int64_t after_id, size_t limit,
                                     struct srv_rollout_event **ret, size_t *ret_n,
                                     struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_rollout_exists, &p, &res, d);
    if (err)
        return err;
    if (PQntuples(res) == 0)
        return no_rollout(deployment_id, d);
    param_i64(&p, after_id);
    param_i64(&p, (int64_t)limit);
    return query_list(s, sql_rollout_events, &p, &rollout_event_rows, limit, (void **)ret, ret_n,
                      d);
}

static enum ot_err count_approvals(struct pg_store *s, int64_t deployment_id, int64_t phase,
                                   size_t *ret_count, struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, phase);
    int64_t n = 0;
    enum ot_err err = step(s, sql_approval_count, &p, NULL, &n, d,
                           "count the approvals of rollout %lld", (long long)deployment_id);
    if (!err)
        *ret_count = (size_t)n;
    return err;
}

static enum ot_err approve(struct pg_store *s, int64_t deployment_id, int64_t phase,
                           const char *approver, int64_t at, bool *ret_added, size_t *ret_count,
                           struct ot_diag *d)
{
    struct params p = {0};
    param_i64(&p, deployment_id);
    bool found = false;
    enum ot_err err = step(s, sql_rollout_lock, &p, &found, NULL, d,
                           "read the rollout of deployment %lld", (long long)deployment_id);
    if (!err && !found)
        return no_rollout(deployment_id, d);
    param_i64(&p, phase);
    param_text(&p, approver);
    param_i64(&p, at);
    if (!err)
        err = step(s, sql_approval_insert, &p, ret_added, NULL, d,
                   "record an approval of rollout %lld", (long long)deployment_id);
    if (!err)
        err = count_approvals(s, deployment_id, phase, ret_count, d);
    return err;
}

static enum ot_err pg_rollout_approve(struct srv_store *base, int64_t deployment_id,
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

static enum ot_err pg_rollout_approvals(struct srv_store *base, int64_t deployment_id,
                                        int64_t phase, size_t *ret_count, struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, phase);
    int64_t n = 0;
    enum ot_err err = query_int(s, sql_approval_count, &p, &n, d);
    if (!err)
        *ret_count = (size_t)n;
    return err;
}

static enum ot_err pg_rollout_counts(struct srv_store *base, int64_t deployment_id,
                                     int64_t seq_from, int64_t seq_to,
                                     uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
{
    LOCKED(s, base);
    struct params p = {0};
    param_i64(&p, deployment_id);
    param_i64(&p, seq_from);
    param_i64(&p, seq_to);
    _cleanup_result_ PGresult *res = NULL;
    enum ot_err err = read_rows(s, sql_rollout_counts, &p, &res, d);
    if (err)
        return err;
    uint64_t got[SRV_DD__MAX] = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t status = 0, n = 0;
        if (!get_int(res, i, 0, &status) || !get_int(res, i, 1, &n))
            return ot_diag_set(d, OT_ERR_FORMAT, "database is damaged: deployment_devices");
        if (status >= SRV_DD_PENDING && status < SRV_DD__MAX)
            got[status] = (uint64_t)n;
    }
    memcpy(counts, got, sizeof(got));
    return OT_OK;
}

struct timeout {
    int64_t deployment_id, released, before, now;
    const char *message;
};

/* Lock order as for a report that may finish the deployment: the deployment, then its rows. */
static enum ot_err time_out(struct pg_store *s, const struct timeout *t, size_t *ret_n,
                            struct ot_diag *d)
{
    enum ot_err err = lock_deployment(s, t->deployment_id, d);
    struct params p = {0};
    param_i64(&p, t->deployment_id);
    param_i64(&p, t->released);
    param_i64(&p, t->before);
    param_i64(&p, t->now);
    param_text(&p, t->message);
    int64_t n = 0;
    if (!err)
        err = step(s, sql_rollout_timeout, &p, NULL, &n, d,
                   "time out the devices of deployment %lld", (long long)t->deployment_id);
    if (err)
        return err;
    *ret_n = (size_t)n;
    if (n == 0)
        return OT_OK;
    err = finish_if_done(s, t->deployment_id, t->now, d);
    if (!err)
        err = bump_generation(s, d);
    return err;
}

static enum ot_err pg_rollout_timeout(struct srv_store *base, int64_t deployment_id,
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

const struct srv_store_ops srv__store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_schema_version,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .token_create = pg_token_create,
    .token_by_hash = pg_token_by_hash,
    .token_list = pg_token_list,
    .token_revoke = pg_token_revoke,
    .audit_add = pg_audit_add,
    .audit_list = pg_audit_list,
    .device_create = pg_device_create,
    .device_get = pg_device_get,
    .device_by_pubkey = pg_device_by_pubkey,
    .device_set_status = pg_device_set_status,
    .device_set_installed = pg_device_set_installed,
    .device_set_attributes = pg_device_set_attributes,
    .device_set_tags = pg_device_set_tags,
    .device_touch = pg_device_touch,
    .device_list = pg_device_list,
    .device_ids_by_tag = pg_device_ids_by_tag,
    .artifact_create = pg_artifact_create,
    .artifact_get = pg_artifact_get,
    .artifact_by_sha256 = pg_artifact_by_sha256,
    .artifact_list = pg_artifact_list,
    .artifact_delete = pg_artifact_delete,
    .template_create = pg_template_create,
    .template_get = pg_template_get,
    .template_list = pg_template_list,
    .template_set_enabled = pg_template_set_enabled,
    .template_delete = pg_template_delete,
    .deployment_create = pg_deployment_create,
    .deployment_get = pg_deployment_get,
    .deployment_list = pg_deployment_list,
    .deployment_rollup = pg_deployment_rollup,
    .deployment_devices = pg_deployment_devices,
    .deployment_cancel = pg_deployment_cancel,
    .device_next = pg_device_next,
    .dd_get = pg_dd_get,
    .dd_report = pg_dd_report,
    .deployment_add_device = pg_deployment_add_device,
    .dd_skip = pg_dd_skip,
    .dd_events = pg_dd_events,
    .deployments_generation = pg_deployments_generation,
    .rollout_get = pg_rollout_get,
    .rollout_list_active = pg_rollout_list_active,
    .rollout_update = pg_rollout_update,
    .rollout_event_add = pg_rollout_event_add,
    .rollout_events = pg_rollout_events,
    .rollout_approve = pg_rollout_approve,
    .rollout_approvals = pg_rollout_approvals,
    .rollout_counts = pg_rollout_counts,
    .rollout_timeout = pg_rollout_timeout,
};
