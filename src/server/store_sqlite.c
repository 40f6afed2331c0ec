/* The SQLite back end of the store (store.h), the default: one database file under the data
 * directory, no setup.
 *
 * Durability: WAL journal with synchronous=FULL, so every commit fsyncs the WAL before the call
 * returns: an acknowledged write survives a kill or a power cut. A call returns OT_OK only after
 * its statement ran to SQLITE_DONE, which is where an autocommit statement commits.
 *
 * Threads: one connection, and a pthread mutex held for the whole of each operation (bind, step,
 * read the rows, reset). That is simple and obviously correct: a statement, its error message
 * (sqlite3_errmsg is per connection) and its rows can never interleave with another thread's. It
 * serialises the store, which is fine at today's load; per-thread read connections and batched
 * last-seen writes come with the device check-in path. SQLITE_OPEN_FULLMUTEX stays on as a second
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
};
#define SCHEMA_VERSION ((int)OT_ARRAY_SIZE(migrations))

/* ---- statements, prepared once at open ------------------------------------------------------- */

#define TOKEN_COLUMNS "id, name, scopes, created_at, expires_at, revoked, hash"

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
    /* No writable_schema or other ways to corrupt the file through SQL. */
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
};
