/* The PostgreSQL back end of the store (store.h), for several otterd instances sharing one
 * database (ARCHITECTURE.md §7). Selected by a "postgresql://" or "postgres://" URL, which libpq
 * parses (docs/otterd.md, "PostgreSQL").
 *
 * Durability: a call returns OT_OK only after its statement completed, and each statement runs in
 * its own transaction (autocommit), so that is after the commit. We rely on PostgreSQL's default
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
 * when repeating it is harmless (reads, the meta upsert, revoke); a token or audit insert is not
 * retried, because it may have committed before the answer was lost: it reports OT_ERR_IO.
 *
 * Which database is ours: the table otterd_database holds one row with application_id 'OTRD'
 * (0x4f545244, the value the SQLite back end keeps in its file header). A database with that table
 * or with no table at all in the current schema is ours; one with other tables is refused.
 *
 * Every statement with input goes through PQexecParams with $n parameters; only the constant
 * migration scripts go through PQexec. Results are requested in binary, so the token hash (BYTEA)
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
#define MAX_PARAMS 6

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
};
