/* The store contract (src/server/store.h), run against every back end in `backends`: each case gets
 * a new, empty store of its own: a fresh SQLite file in a private temp directory, and a fresh
 * PostgreSQL database (otter_test_<pid>_<n>, dropped afterwards) on the server that
 * OTTER_TEST_PG_URL names (scripts/test.sh starts a throwaway one). Without that variable the
 * PostgreSQL cases are reported as skipped, except in CI (CI=true), where they fail: a CI run must
 * never pass without them. The cases after the contract ones check what only one back end has. */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "otter/file.h"
#include "store.h"

#define DAMAGED "database is damaged or not an otterd database"

struct fixture;

struct backend {
    const char *name;
    bool (*available)(void);
    /* The URL of a new, empty store for one case (may use f->dir for files). */
    void (*fresh_url)(struct fixture *f);
    /* Records schema version `version` by hand, as a newer otterd would have. */
    void (*force_version)(const struct fixture *f, int version);
    /* Removes what fresh_url made outside f->dir; may be NULL. */
    void (*cleanup)(struct fixture *f);
    /* Adds n accepted devices straight into the database (ids consecutive, created_at 1). */
    void (*seed_devices)(const struct fixture *f, int n);
    /* Runs SQL statements (no parameters) on the store's database, beside the store. */
    void (*exec)(const struct fixture *f, const char *sql);
    /* The same, for statements that may fail: whether they did not. */
    bool (*try_exec)(const struct fixture *f, const char *sql);
};

struct fixture {
    const struct backend *be;
    char dir[256];  /* private temp dir, removed afterwards */
    char path[512]; /* SQLite: the database file */
    char db[64];    /* PostgreSQL: the database made for this case */
    char url[1200];
};

/* ---- helpers --------------------------------------------------------------------------------- */

static char *in_dir(const struct fixture *f, const char *name)
{
    static char p[4][600];
    static int next;
    char *out = p[next++ % 4];
    snprintf(out, sizeof(p[0]), "%s/%s", f->dir, name);
    return out;
}

static struct srv_store *open_ok(const struct fixture *f)
{
    struct srv_store *s = NULL;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_open(f->url, &s, &d);
    if (err)
        print_error("open %s: %s\n", f->url, d.msg);
    assert_int_equal(err, OT_OK);
    assert_non_null(s);
    return s;
}

static struct srv_token token(const char *name, int64_t created_at, uint8_t seed)
{
    struct srv_token t;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.scopes = SRV_SCOPE_ADMIN;
    t.created_at = created_at;
    for (size_t i = 0; i < sizeof(t.hash); i++)
        t.hash[i] = (uint8_t)(seed * 31 + i); /* 31 is odd: a different hash[0] per seed */
    return t;
}

static void assert_token_equal(const struct srv_token *a, const struct srv_token *b)
{
    assert_int_equal(a->id, b->id);
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->scopes, b->scopes);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->expires_at, b->expires_at);
    assert_int_equal(a->revoked, b->revoked);
    assert_memory_equal(a->hash, b->hash, SRV_TOKEN_HASH_LEN);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static size_t audit_count(struct srv_store *s)
{
    size_t total = 0, n;
    int64_t after = 0;
    do {
        struct srv_audit *list = NULL;
        assert_int_equal(srv_store_audit_list(s, after, SRV_AUDIT_LIST_MAX, &list, &n, NULL),
                         OT_OK);
        if (n)
            after = list[n - 1].id;
        total += n;
        srv_audit_list_free(list, n);
    } while (n == SRV_AUDIT_LIST_MAX);
    return total;
}

static void write_file(const char *path, const void *data, size_t len)
{
    assert_int_equal(ot_file_write_atomic(path, data, len, 0644, NULL), OT_OK);
}

static void assert_file_content(const char *path, const void *data, size_t len)
{
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    assert_int_equal(ot_file_read(path, &b, NULL), OT_OK);
    assert_int_equal(b.len, len);
    assert_memory_equal(b.data, data, len);
    ot_buf_release(&b);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* ---- back ends ------------------------------------------------------------------------------- */

static bool always(void) { return true; }

static void sqlite_fresh_url(struct fixture *f)
{
    snprintf(f->path, sizeof(f->path), "%s/otter.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
}

/* A raw connection to the test's file, beside the store's, for what the store API cannot do. */
static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        print_error("%s: %s\n", sql, err);
    assert_null(err);
}

static void sqlite_force_version(const struct fixture *f, int version)
{
    sqlite3 *db = raw_open(f->path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO schema_migrations(version, applied_at)"
                                        " VALUES(?1, 0)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_int(st, 1, version), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* PostgreSQL: OTTER_TEST_PG_URL names a server and a database to connect to for maintenance (it
 * must be a postgresql:// URL); each case gets a database of its own made through it. */
static const char *pg_base_url(void)
{
    const char *url = getenv("OTTER_TEST_PG_URL");
    return url && *url ? url : NULL;
}

static bool pg_available(void) { return pg_base_url() != NULL; }

static void pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    assert_non_null(c);
    PQsetNoticeProcessor(c, pg_quiet, NULL); /* "drop cascades to ..." */
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to PostgreSQL: %s", PQerrorMessage(c));
    return c;
}

/* Runs sql with text parameters (up to 2) and returns the first column of the first row as an
 * integer (0 without rows). */
static int64_t pg_run(PGconn *c, const char *sql, const char *p1, const char *p2)
{
    const char *params[] = {p1, p2};
    PGresult *r = PQexecParams(c, sql, p2 ? 2 : p1 ? 1 : 0, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    int64_t v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                          : 0;
    PQclear(r);
    return v;
}

/* The base URL with its database (the path) replaced: scheme://authority/db?query. */
static void pg_url_for(char *out, size_t len, const char *base, const char *db)
{
    const char *auth = strstr(base, "://");
    assert_non_null(auth);
    auth += 3;
    size_t auth_len = strcspn(auth, "/?");
    const char *query = strchr(auth + auth_len, '?');
    int n = snprintf(out, len, "%.*s/%s%s", (int)(auth + auth_len - base), base, db,
                     query ? query : "");
    assert_true(n > 0 && (size_t)n < len);
}

static void pg_fresh_url(struct fixture *f)
{
    static int next;
    snprintf(f->db, sizeof(f->db), "otter_test_%ld_%d", (long)getpid(), next++);
    PGconn *c = pg_connect(pg_base_url());
    /* A name cannot be a parameter; this one is ours, made of [a-z0-9_]. */
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->db);
    pg_run(c, sql, NULL, NULL);
    PQfinish(c);
    pg_url_for(f->url, sizeof(f->url), pg_base_url(), f->db);
}

static void pg_cleanup(struct fixture *f)
{
    if (!f->db[0])
        return;
    PGconn *c = PQconnectdb(pg_base_url());
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->db);
    if (PQstatus(c) == CONNECTION_OK)
        PQclear(PQexec(c, sql));
    PQfinish(c);
}

static void pg_force_version(const struct fixture *f, int version)
{
    PGconn *c = pg_connect(f->url);
    char v[16];
    snprintf(v, sizeof(v), "%d", version);
    pg_run(c, "INSERT INTO schema_migrations(version, applied_at) VALUES($1, 0)", v, NULL);
    PQfinish(c);
}

static void sqlite_seed_devices(const struct fixture *f, int n)
{
    sqlite3 *db = raw_open(f->path);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
                                        " FROM c WHERE x < ?1) INSERT INTO devices(pubkey,"
                                        " identity, status, device_type, created_at, updated_at,"
                                        " attributes, installed) SELECT CAST(printf('%032d', x)"
                                        " AS BLOB), '{}', 2, '', 1, 1, '{}', '{}' FROM c",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_int(st, 1, n), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void pg_seed_devices(const struct fixture *f, int n)
{
    PGconn *c = pg_connect(f->url);
    char count[16];
    snprintf(count, sizeof(count), "%d", n);
    pg_run(c,
           "INSERT INTO devices(pubkey, identity, status, device_type, created_at, updated_at,"
           " attributes, installed) SELECT decode(lpad(x::text, 64, '0'), 'hex'), '{}', 2, '',"
           " 1, 1, '{}', '{}' FROM generate_series(1, $1::integer) AS x",
           count, NULL);
    PQfinish(c);
}

static void sqlite_exec(const struct fixture *f, const char *sql)
{
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, sql);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The foreign keys on, as the store has them. */
static bool sqlite_try_exec(const struct fixture *f, const char *sql)
{
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "PRAGMA foreign_keys = ON");
    bool ok = sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return ok;
}

static void pg_exec(const struct fixture *f, const char *sql)
{
    PGconn *c = pg_connect(f->url);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

static bool pg_try_exec(const struct fixture *f, const char *sql)
{
    PGconn *c = pg_connect(f->url);
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    PQfinish(c);
    return ok;
}

static const struct backend backends[] = {
    {"sqlite", always, sqlite_fresh_url, sqlite_force_version, NULL, sqlite_seed_devices,
     sqlite_exec, sqlite_try_exec},
    {"postgresql", pg_available, pg_fresh_url, pg_force_version, pg_cleanup, pg_seed_devices,
     pg_exec, pg_try_exec},
};
#define SQLITE (&backends[0])
#define PG (&backends[1])

/* ---- fixture --------------------------------------------------------------------------------- */

static int make_writable(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (type == FTW_D || type == FTW_DNR)
        chmod(path, 0700);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->be = *state;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/otter-test-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->be->fresh_url(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->be->cleanup)
        f->be->cleanup(f);
    /* Directories a case made read-only first, so that their contents can go. */
    nftw(f->dir, make_writable, 16, FTW_PHYS);
    int rc = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* ---- contract: schema ------------------------------------------------------------------------ */

static void test_migrations_apply_once(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    assert_true(v >= 1);
    assert_int_equal(srv_store_meta_set(s, "k", "kept", NULL), OT_OK);
    srv_store_close(s);
    for (int i = 0; i < 3; i++) { /* reopening is a no-op: same version, nothing lost */
        s = open_ok(f);
        assert_int_equal(srv_store_schema_version(s), v);
        char *val = NULL;
        assert_int_equal(srv_store_meta_get(s, "k", &val, NULL), OT_OK);
        assert_string_equal(val, "kept");
        free(val);
        srv_store_close(s);
    }
    srv_store_close(NULL);
}

static void test_future_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    srv_store_close(s);
    f->be->force_version(f, v + 1);

    struct ot_diag d = {0};
    char want[128];
    s = NULL;
    assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_UNSUPPORTED);
    assert_null(s);
    snprintf(want, sizeof(want),
             "database schema version %d is newer than this otterd supports (%d)", v + 1, v);
    assert_non_null(strstr(d.msg, want));
    /* Refused again, not "repaired" by the first attempt. */
    assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_UNSUPPORTED);
}

/* ---- contract: meta -------------------------------------------------------------------------- */

static void test_meta(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    char *v = NULL;
    assert_int_equal(srv_store_meta_get(s, "missing", &v, &d), OT_ERR_NOENT);
    assert_null(v);
    assert_non_null(strstr(d.msg, "missing"));

    assert_int_equal(srv_store_meta_set(s, "a", "1", &d), OT_OK);
    assert_int_equal(srv_store_meta_get(s, "a", &v, &d), OT_OK);
    assert_string_equal(v, "1");
    free(v);
    assert_int_equal(srv_store_meta_set(s, "a", "two", &d), OT_OK); /* overwrite */
    assert_int_equal(srv_store_meta_get(s, "a", &v, &d), OT_OK);
    assert_string_equal(v, "two");
    free(v);
    assert_int_equal(srv_store_meta_set(s, "empty", "", &d), OT_OK);
    assert_int_equal(srv_store_meta_get(s, "empty", &v, &d), OT_OK);
    assert_string_equal(v, "");
    free(v);

    /* Input is data, never SQL. */
    static const char *const hostile[] = {"'; DROP TABLE meta; --", "\" OR 1=1 --", "a\\b%_*?",
                                          "gr\xc3\xbc\xc3\x9f"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(hostile); i++) {
        assert_int_equal(srv_store_meta_set(s, hostile[i], hostile[i], &d), OT_OK);
        assert_int_equal(srv_store_meta_get(s, hostile[i], &v, &d), OT_OK);
        assert_string_equal(v, hostile[i]);
        free(v);
    }
    assert_int_equal(srv_store_meta_get(s, "a", &v, &d), OT_OK);
    assert_string_equal(v, "two");
    free(v);
    assert_int_equal(srv_store_meta_get(s, "%", &v, &d), OT_ERR_NOENT); /* no LIKE anywhere */
    srv_store_close(s);
}

static void test_meta_limits(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    char *v = NULL;
    _cleanup_free_ char *key_max = repeat('k', SRV_META_KEY_MAX);
    _cleanup_free_ char *key_long = repeat('k', SRV_META_KEY_MAX + 1);
    _cleanup_free_ char *val_max = repeat('v', SRV_META_VALUE_MAX);
    _cleanup_free_ char *val_long = repeat('v', SRV_META_VALUE_MAX + 1);

    assert_int_equal(srv_store_meta_set(s, "", "x", &d), OT_ERR_INVALID);
    assert_string_equal(d.msg, "meta key is empty");
    assert_int_equal(srv_store_meta_set(s, NULL, "x", &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_meta_set(s, "k", NULL, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_meta_set(s, key_long, "x", &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_meta_get(s, key_long, &v, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_meta_set(s, "k", val_long, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "meta value is longer than 65536 bytes");

    assert_int_equal(srv_store_meta_set(s, key_max, val_max, &d), OT_OK);
    assert_int_equal(srv_store_meta_get(s, key_max, &v, &d), OT_OK);
    assert_string_equal(v, val_max);
    free(v);
    assert_int_equal(srv_store_meta_get(s, "k", &v, &d), OT_ERR_NOENT); /* nothing was stored */
    srv_store_close(s);
}

/* ---- contract: tokens ------------------------------------------------------------------------ */

static void test_token_create_and_lookup(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_token t = token("ci pipeline (main)", 1700000000, 1), got;
    t.scopes = SRV_SCOPE_TOKENS | SRV_SCOPE_AUDIT_READ | SRV_SCOPE_DEPLOYMENTS_WRITE;
    t.expires_at = 1800000000;
    assert_int_equal(srv_store_token_create(s, &t, &d), OT_OK);
    assert_true(t.id > 0);
    assert_int_equal(srv_store_token_by_hash(s, t.hash, &got, &d), OT_OK);
    assert_token_equal(&got, &t);

    struct srv_token t2 = token("x", 1, 2);
    t2.scopes = SRV_SCOPE_ALL;
    assert_int_equal(srv_store_token_create(s, &t2, &d), OT_OK);
    assert_true(t2.id > t.id);
    assert_int_equal(srv_store_token_by_hash(s, t2.hash, &got, &d), OT_OK);
    assert_token_equal(&got, &t2);

    /* A 63-byte name of every printable character class. */
    struct srv_token t3 = token("", 5, 3);
    memset(t3.name, '~', SRV_TOKEN_NAME_MAX - 1);
    memcpy(t3.name, " !\"'%;--/*", 10);
    assert_int_equal(srv_store_token_create(s, &t3, &d), OT_OK);
    assert_int_equal(srv_store_token_by_hash(s, t3.hash, &got, &d), OT_OK);
    assert_token_equal(&got, &t3);

    struct srv_token unknown = token("nobody", 0, 99);
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(srv_store_token_by_hash(s, unknown.hash, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_token_by_hash(s, NULL, &got, &d), OT_ERR_INVALID);
    srv_store_close(s);

    s = open_ok(f); /* all of it is still there */
    assert_int_equal(srv_store_token_by_hash(s, t.hash, &got, &d), OT_OK);
    assert_token_equal(&got, &t);
    srv_store_close(s);
}

static void test_token_list_order(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct srv_token *list = NULL;
    size_t n = 99;
    assert_int_equal(srv_store_token_list(s, &list, &n, NULL), OT_OK);
    assert_int_equal(n, 0);
    free(list);

    /* Oldest first by the caller's created_at, ties in creation order; 40 also grows the array. */
    static const struct {
        const char *name;
        int64_t at;
    } in[] = {{"c", 300}, {"a", 100}, {"b", 200}, {"b2", 200}, {"z", 0}};
    for (size_t i = 0; i < OT_ARRAY_SIZE(in); i++) {
        struct srv_token t = token(in[i].name, in[i].at, (uint8_t)i);
        assert_int_equal(srv_store_token_create(s, &t, NULL), OT_OK);
    }
    for (int i = 0; i < 35; i++) {
        char name[16];
        snprintf(name, sizeof(name), "late%02d", i);
        struct srv_token t = token(name, 1000 + i, (uint8_t)(100 + i));
        assert_int_equal(srv_store_token_create(s, &t, NULL), OT_OK);
    }
    assert_int_equal(srv_store_token_list(s, &list, &n, NULL), OT_OK);
    assert_int_equal(n, 40);
    static const char *const want[] = {"z", "a", "b", "b2", "c", "late00"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(want); i++)
        assert_string_equal(list[i].name, want[i]);
    assert_string_equal(list[39].name, "late34");
    for (size_t i = 1; i < n; i++)
        assert_true(list[i - 1].created_at <= list[i].created_at);
    assert_true(list[2].id < list[3].id);
    free(list);
    srv_store_close(s);
}

static void test_token_revoke(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_token a = token("a", 10, 1), b = token("b", 20, 2), got;
    assert_int_equal(srv_store_token_create(s, &a, &d), OT_OK);
    assert_int_equal(srv_store_token_create(s, &b, &d), OT_OK);
    assert_int_equal(srv_store_token_revoke(s, a.id, &d), OT_OK);
    assert_int_equal(srv_store_token_revoke(s, a.id, &d), OT_OK); /* twice is fine */
    assert_int_equal(srv_store_token_by_hash(s, a.hash, &got, &d), OT_OK);
    assert_true(got.revoked); /* returned all the same: the caller decides */
    assert_int_equal(srv_store_token_by_hash(s, b.hash, &got, &d), OT_OK);
    assert_false(got.revoked);

    static const int64_t unknown[] = {0, -1, 999999, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < OT_ARRAY_SIZE(unknown); i++) {
        assert_int_equal(srv_store_token_revoke(s, unknown[i], &d), OT_ERR_NOENT);
        assert_non_null(strstr(d.msg, "no token with id"));
    }
    srv_store_close(s);

    s = open_ok(f);
    struct srv_token *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_token_list(s, &list, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_true(list[0].revoked);
    assert_false(list[1].revoked);
    free(list);
    srv_store_close(s);
}

static void test_token_duplicate_hash(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_token a = token("first", 10, 7), b = token("second", 20, 7), got;
    assert_int_equal(srv_store_token_create(s, &a, &d), OT_OK);
    b.id = -7;
    assert_int_equal(srv_store_token_create(s, &b, &d), OT_ERR_EXISTS);
    assert_int_equal(b.id, -7); /* untouched on failure */
    assert_non_null(strstr(d.msg, "second"));
    assert_int_equal(srv_store_token_by_hash(s, a.hash, &got, &d), OT_OK);
    assert_string_equal(got.name, "first");
    struct srv_token *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_token_list(s, &list, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    free(list);
    /* The store still works after the refused insert. */
    struct srv_token c = token("third", 30, 8);
    assert_int_equal(srv_store_token_create(s, &c, &d), OT_OK);
    assert_true(c.id > a.id);
    srv_store_close(s);
}

static void test_token_validation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_token bad[10];
    size_t n = 0;
    bad[n++] = token("", 1, 1);
    bad[n] = token("x", 1, 1);
    memset(bad[n++].name, 'n', SRV_TOKEN_NAME_MAX); /* no terminator within the field */
    bad[n++] = token("line\nbreak", 1, 1);
    bad[n++] = token("tab\there", 1, 1);
    bad[n++] = token("del\x7f", 1, 1);
    bad[n++] = token("gr\xc3\xbc\xc3\x9f", 1, 1); /* printable ASCII only */
    bad[n] = token("noscope", 1, 1);
    bad[n++].scopes = 0;
    bad[n] = token("unknown scope", 1, 1);
    bad[n++].scopes = SRV_SCOPE_ALL + 1;
    bad[n++] = token("negative", -1, 1);
    bad[n] = token("negative expiry", 1, 1);
    bad[n++].expires_at = -5;
    for (size_t i = 0; i < n; i++) {
        d.msg[0] = '\0';
        assert_int_equal(srv_store_token_create(s, &bad[i], &d), OT_ERR_INVALID);
        assert_true(d.msg[0] != '\0');
    }
    assert_int_equal(srv_store_token_create(s, NULL, &d), OT_ERR_INVALID);
    struct srv_token *list = NULL;
    size_t count = 9;
    assert_int_equal(srv_store_token_list(s, &list, &count, &d), OT_OK);
    assert_int_equal(count, 0);
    free(list);
    srv_store_close(s);
}

/* ---- contract: audit log --------------------------------------------------------------------- */

static void test_audit_add_and_list(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_audit *list = NULL;
    size_t n = 9;
    assert_int_equal(srv_store_audit_list(s, 0, 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_audit_list_free(list, n);

    int64_t before = time(NULL);
    for (int i = 0; i < 5; i++) {
        char object[32], detail[32];
        snprintf(object, sizeof(object), "token:%d", i);
        snprintf(detail, sizeof(detail), "{\"i\":%d}", i);
        const char *det = i == 1 ? NULL : i == 2 ? "" : detail;
        assert_int_equal(srv_store_audit_add(s, "token:1 (ci)", "token.create", object, det, &d),
                         OT_OK);
    }
    int64_t after = time(NULL);

    assert_int_equal(srv_store_audit_list(s, 0, 1000, &list, &n, &d), OT_OK);
    assert_int_equal(n, 5);
    int64_t ids[5];
    for (size_t i = 0; i < n; i++) {
        char object[32];
        snprintf(object, sizeof(object), "token:%zu", i);
        ids[i] = list[i].id;
        if (i)
            assert_true(ids[i] > ids[i - 1]);
        assert_true(list[i].at >= before && list[i].at <= after);
        assert_string_equal(list[i].actor, "token:1 (ci)");
        assert_string_equal(list[i].action, "token.create");
        assert_string_equal(list[i].object, object);
    }
    assert_string_equal(list[0].detail, "{\"i\":0}");
    assert_null(list[1].detail);
    assert_string_equal(list[2].detail, ""); /* empty is not NULL */
    srv_audit_list_free(list, n);

    struct {
        int64_t after_id;
        size_t limit;
        size_t want_n;
        int first; /* index into ids, -1 when none */
    } pages[] = {
        {ids[1], 1000, 3, 2}, {0, 2, 2, 0}, {ids[0], 1, 1, 1},
        {ids[4], 10, 0, -1},  {-5, 10, 5, 0}, {INT64_MAX, 1, 0, -1},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(pages); i++) {
        assert_int_equal(srv_store_audit_list(s, pages[i].after_id, pages[i].limit, &list, &n, &d),
                         OT_OK);
        assert_int_equal(n, pages[i].want_n);
        if (pages[i].first >= 0)
            assert_int_equal(list[0].id, ids[pages[i].first]);
        srv_audit_list_free(list, n);
    }
    srv_audit_list_free(NULL, 0);
    srv_store_close(s);
}

static void test_audit_limits(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_audit *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_audit_list(s, 0, 0, &list, &n, &d), OT_ERR_RANGE);
    assert_string_equal(d.msg, "limit 0 is not between 1 and 1000");
    assert_int_equal(srv_store_audit_list(s, 0, SRV_AUDIT_LIST_MAX + 1, &list, &n, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_audit_list(s, 0, SIZE_MAX, &list, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_audit_list(s, 0, SRV_AUDIT_LIST_MAX, &list, &n, &d), OT_OK);
    srv_audit_list_free(list, n);

    _cleanup_free_ char *field_max = repeat('f', SRV_AUDIT_FIELD_MAX);
    _cleanup_free_ char *field_long = repeat('f', SRV_AUDIT_FIELD_MAX + 1);
    _cleanup_free_ char *detail_max = repeat('d', SRV_AUDIT_DETAIL_MAX);
    _cleanup_free_ char *detail_long = repeat('d', SRV_AUDIT_DETAIL_MAX + 1);
    assert_int_equal(srv_store_audit_add(s, field_max, field_max, field_max, detail_max, &d),
                     OT_OK);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, &d), OT_OK);

    assert_int_equal(srv_store_audit_add(s, field_long, "b", "c", NULL, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "audit actor is longer than 255 bytes");
    assert_int_equal(srv_store_audit_add(s, "a", field_long, "c", NULL, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_audit_add(s, "a", "b", field_long, NULL, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", detail_long, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "audit detail is longer than 65536 bytes");
    assert_int_equal(srv_store_audit_add(s, "", "b", "c", NULL, &d), OT_ERR_INVALID);
    assert_string_equal(d.msg, "audit actor is empty");
    assert_int_equal(srv_store_audit_add(s, "a", NULL, "c", NULL, &d), OT_ERR_INVALID);
    assert_string_equal(d.msg, "audit action is missing");
    assert_int_equal(srv_store_audit_add(s, "a", "b", "", NULL, &d), OT_ERR_INVALID);

    assert_int_equal(audit_count(s), 2); /* the refused ones left nothing */
    assert_int_equal(srv_store_audit_list(s, 0, 1, &list, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].detail, detail_max);
    srv_audit_list_free(list, n);
    srv_store_close(s);
}

/* ---- contract: threads and crashes ----------------------------------------------------------- */

#define WRITERS 8
#define WRITES 200

struct worker {
    pthread_t thread;
    struct srv_store *s;
    int index;
    enum ot_err err;
    char msg[OT_DIAG_MSG_MAX];
};

static void *writer(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < WRITES && !w->err; i++) {
        struct ot_diag d = {0};
        char actor[32], object[32];
        snprintf(actor, sizeof(actor), "thread:%d", w->index);
        snprintf(object, sizeof(object), "%d:%d", w->index, i);
        w->err = srv_store_audit_add(w->s, actor, "test.write", object, NULL, &d);
        memcpy(w->msg, d.msg, sizeof(w->msg));
    }
    return NULL;
}

static atomic_bool writers_done;

/* Reads alongside the writers: every page it sees is ordered. */
static void *reader(void *arg)
{
    struct worker *w = arg;
    while (!atomic_load(&writers_done) && !w->err) {
        struct ot_diag d = {0};
        struct srv_audit *list = NULL;
        size_t n = 0;
        w->err = srv_store_audit_list(w->s, 0, 100, &list, &n, &d);
        for (size_t i = 1; !w->err && i < n; i++)
            if (list[i].id <= list[i - 1].id)
                w->err = OT_ERR_INTERNAL;
        memcpy(w->msg, d.msg, sizeof(w->msg));
        srv_audit_list_free(list, n);
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct worker w[WRITERS + 1];
    memset(w, 0, sizeof(w));
    atomic_store(&writers_done, false);
    for (int i = 0; i <= WRITERS; i++) {
        w[i].s = s;
        w[i].index = i;
        assert_int_equal(pthread_create(&w[i].thread, NULL, i < WRITERS ? writer : reader, &w[i]),
                         0);
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(w[i].thread, NULL), 0);
    atomic_store(&writers_done, true);
    assert_int_equal(pthread_join(w[WRITERS].thread, NULL), 0);
    for (int i = 0; i <= WRITERS; i++) {
        if (w[i].err)
            print_error("thread %d: %s\n", i, w[i].msg);
        assert_int_equal(w[i].err, OT_OK);
    }

    /* Exactly WRITERS * WRITES entries, ids unique and increasing, each thread's in its order. */
    int next[WRITERS] = {0};
    int64_t last = 0;
    size_t total = 0, n;
    do {
        struct srv_audit *list = NULL;
        assert_int_equal(srv_store_audit_list(s, last, SRV_AUDIT_LIST_MAX, &list, &n, NULL), OT_OK);
        for (size_t i = 0; i < n; i++) {
            int t = -1, seq = -1;
            assert_true(list[i].id > last);
            last = list[i].id;
            assert_int_equal(sscanf(list[i].object, "%d:%d", &t, &seq), 2);
            assert_true(t >= 0 && t < WRITERS);
            assert_int_equal(seq, next[t]++);
        }
        total += n;
        srv_audit_list_free(list, n);
    } while (n > 0);
    assert_int_equal(total, WRITERS * WRITES);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(next[i], WRITES);
    srv_store_close(s);
}

/* A write acknowledged to the caller survives the process being killed right after. */
static void test_killed_writer_durable(void **state)
{
    struct fixture *f = *state;
    srv_store_close(open_ok(f)); /* exists, so the child only writes */
    struct srv_token t = token("written before the kill", 42, 5);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct srv_store *s = NULL;
        if (srv_store_open(f->url, &s, NULL) != OT_OK)
            _exit(2);
        if (srv_store_audit_add(s, "child", "audit.first", "x", NULL, NULL) != OT_OK ||
            srv_store_token_create(s, &t, NULL) != OT_OK)
            _exit(3);
        kill(getpid(), SIGKILL); /* no close, no checkpoint, no exit handlers */
        _exit(4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    struct srv_store *s = open_ok(f);
    struct srv_token got;
    assert_int_equal(srv_store_token_by_hash(s, t.hash, &got, NULL), OT_OK);
    assert_string_equal(got.name, "written before the kill");
    assert_int_equal(got.created_at, 42);
    assert_int_equal(audit_count(s), 1);
    srv_store_close(s);
}

/* ---- contract: devices ----------------------------------------------------------------------- */

#define T0 1700000000 /* a time for the cases: the store takes the caller's clock */

static void key_of(uint8_t key[SRV_DEVICE_PUBKEY_LEN], int seed)
{
    for (int i = 0; i < SRV_DEVICE_PUBKEY_LEN; i++)
        key[i] = (uint8_t)(i < 4 ? (unsigned)seed >> (8 * i) : 0xa5u ^ (unsigned)i);
}

static struct srv_device device_in(int seed, enum srv_device_status status, const char *type)
{
    static char identity[4][64];
    struct srv_device dev;
    memset(&dev, 0, sizeof(dev));
    key_of(dev.pubkey, seed);
    dev.identity = identity[seed % 4];
    snprintf(dev.identity, sizeof(identity[0]), "{\"mac\":\"02:00:00:00:%02x:%02x\"}",
             (seed >> 8) & 0xff, seed & 0xff);
    dev.status = status;
    snprintf(dev.device_type, sizeof(dev.device_type), "%s", type);
    dev.created_at = T0 + seed;
    return dev;
}

static int64_t add_device(struct srv_store *s, int seed, enum srv_device_status status,
                          const char *type, const char *const *tags, size_t ntags)
{
    struct srv_device dev = device_in(seed, status, type);
    dev.tags = (char **)tags;
    dev.ntags = ntags;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_device_create(s, &dev, &d);
    if (err)
        print_error("add device %d: %s\n", seed, d.msg);
    assert_int_equal(err, OT_OK);
    assert_true(dev.id > 0);
    return dev.id;
}

static void assert_tags(const struct srv_device *dev, const char *const *want, size_t n)
{
    assert_int_equal(dev->ntags, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(dev->tags[i], want[i]);
}

static void test_device_create_and_get(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    /* Unsorted with a duplicate; "null" and "NULL" are tags like any other. */
    static const char *const tags[] = {"lab", "eu-west.1", "null", "lab", "NULL", "A_b-c.9"};
    static const char *const sorted[] = {"A_b-c.9", "NULL", "eu-west.1", "lab", "null"};
    struct srv_device dev = device_in(1, SRV_DEVICE_PENDING, "gw-2");
    dev.tags = (char **)tags;
    dev.ntags = OT_ARRAY_SIZE(tags);
    dev.installed = "{\"rootfs\":{\"version\":\"1.2\"}}";
    dev.updated_at = 5;  /* ignored: updated_at = created_at */
    dev.last_seen = 99; /* ignored: never seen yet */
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_OK);
    assert_true(dev.id > 0);
    assert_int_equal(dev.last_seen, 99); /* the caller's struct is left alone */

    struct srv_device got;
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(srv_store_device_get(s, dev.id, &got, &d), OT_OK);
    assert_int_equal(got.id, dev.id);
    assert_memory_equal(got.pubkey, dev.pubkey, SRV_DEVICE_PUBKEY_LEN);
    assert_string_equal(got.identity, dev.identity);
    assert_int_equal(got.status, SRV_DEVICE_PENDING);
    assert_string_equal(got.device_type, "gw-2");
    assert_int_equal(got.created_at, T0 + 1);
    assert_int_equal(got.updated_at, T0 + 1);
    assert_int_equal(got.last_seen, 0);
    assert_string_equal(got.attributes, "{}");
    assert_string_equal(got.installed, dev.installed);
    assert_tags(&got, sorted, OT_ARRAY_SIZE(sorted));
    srv_device_release(&got);
    assert_null(got.identity);
    srv_device_release(&got); /* zeroed: safe again */
    srv_device_release(NULL);

    assert_int_equal(srv_store_device_by_pubkey(s, dev.pubkey, &got, &d), OT_OK);
    assert_int_equal(got.id, dev.id);
    assert_int_equal(got.ntags, OT_ARRAY_SIZE(sorted));
    srv_device_release(&got);

    /* The same key again: refused, nothing changes. */
    struct srv_device again = device_in(1, SRV_DEVICE_ACCEPTED, "other");
    again.identity = "{\"serial\":\"x\"}";
    again.id = -3;
    assert_int_equal(srv_store_device_create(s, &again, &d), OT_ERR_EXISTS);
    assert_int_equal(again.id, -3);
    int64_t second = add_device(s, 2, SRV_DEVICE_ACCEPTED, "", NULL, 0);
    assert_true(second > dev.id);
    assert_int_equal(srv_store_device_get(s, second, &got, &d), OT_OK);
    assert_string_equal(got.device_type, "");
    assert_int_equal(got.ntags, 0);
    assert_null(got.tags);
    srv_device_release(&got);

    uint8_t unknown[SRV_DEVICE_PUBKEY_LEN];
    key_of(unknown, 3);
    assert_int_equal(srv_store_device_by_pubkey(s, unknown, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_device_get(s, 999999, &got, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "no device with id 999999"));
    assert_int_equal(srv_store_device_get(s, 1, NULL, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_device_by_pubkey(s, NULL, &got, &d), OT_ERR_INVALID);
    srv_store_close(s);

    s = open_ok(f); /* durable */
    assert_int_equal(srv_store_device_get(s, dev.id, &got, &d), OT_OK);
    assert_tags(&got, sorted, OT_ARRAY_SIZE(sorted));
    srv_device_release(&got);
    srv_store_close(s);
}

static void test_device_updates(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    static const char *const tags[] = {"b", "a"};
    int64_t id = add_device(s, 1, SRV_DEVICE_PENDING, "", tags, 2);
    int64_t other = add_device(s, 2, SRV_DEVICE_PENDING, "", tags, 2);
    struct srv_device got;

    assert_int_equal(srv_store_device_set_status(s, id, SRV_DEVICE_ACCEPTED, T0 + 100, &d), OT_OK);
    assert_int_equal(srv_store_device_set_installed(s, id, "gw-3", "{\"rootfs\":{}}", T0 + 200,
                                                    &d),
                     OT_OK);
    assert_int_equal(srv_store_device_set_attributes(s, id, "{\"cpu\":\"arm64\",\"ram\":512}",
                                                     T0 + 300, &d),
                     OT_OK);
    assert_int_equal(srv_store_device_get(s, id, &got, &d), OT_OK);
    assert_int_equal(got.status, SRV_DEVICE_ACCEPTED);
    assert_string_equal(got.device_type, "gw-3");
    assert_string_equal(got.installed, "{\"rootfs\":{}}");
    assert_string_equal(got.attributes, "{\"cpu\":\"arm64\",\"ram\":512}");
    assert_int_equal(got.updated_at, T0 + 300);
    assert_int_equal(got.created_at, T0 + 1);
    srv_device_release(&got);

    /* Tags are replaced, merged, sorted; an empty set clears them. */
    static const char *const next[] = {"z", "m", "z", "c"};
    static const char *const want[] = {"c", "m", "z"};
    assert_int_equal(srv_store_device_set_tags(s, id, next, OT_ARRAY_SIZE(next), T0 + 400, &d),
                     OT_OK);
    assert_int_equal(srv_store_device_get(s, id, &got, &d), OT_OK);
    assert_tags(&got, want, OT_ARRAY_SIZE(want));
    assert_int_equal(got.updated_at, T0 + 400);
    srv_device_release(&got);
    assert_int_equal(srv_store_device_set_tags(s, id, NULL, 0, T0 + 500, &d), OT_OK);
    assert_int_equal(srv_store_device_get(s, id, &got, &d), OT_OK);
    assert_int_equal(got.ntags, 0);
    srv_device_release(&got);
    assert_int_equal(srv_store_device_get(s, other, &got, &d), OT_OK); /* the other one kept its */
    static const char *const other_want[] = {"a", "b"};
    assert_tags(&got, other_want, 2);
    assert_int_equal(got.status, SRV_DEVICE_PENDING);
    srv_device_release(&got);

    /* A refused tag set leaves the old one. */
    static const char *const bad[] = {"ok", "not ok"};
    assert_int_equal(srv_store_device_set_tags(s, other, bad, 2, T0, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_device_get(s, other, &got, &d), OT_OK);
    assert_tags(&got, other_want, 2);
    srv_device_release(&got);

    static const int64_t unknown[] = {0, -1, 999999};
    for (size_t i = 0; i < OT_ARRAY_SIZE(unknown); i++) {
        int64_t u = unknown[i];
        assert_int_equal(srv_store_device_set_status(s, u, SRV_DEVICE_REJECTED, T0, &d),
                         OT_ERR_NOENT);
        assert_int_equal(srv_store_device_set_installed(s, u, "x", "{}", T0, &d), OT_ERR_NOENT);
        assert_int_equal(srv_store_device_set_attributes(s, u, "{}", T0, &d), OT_ERR_NOENT);
        assert_int_equal(srv_store_device_set_tags(s, u, tags, 2, T0, &d), OT_ERR_NOENT);
        assert_non_null(strstr(d.msg, "no device with id"));
    }
    srv_store_close(s);
}

static size_t count_devices(struct srv_store *s)
{
    struct srv_device_filter all = {.limit = SRV_LIST_MAX};
    struct srv_device *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_device_list(s, &all, &list, &n, NULL), OT_OK);
    srv_device_list_free(list, n);
    return n;
}

static void test_device_validation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    _cleanup_free_ char *big_json = repeat(' ', SRV_DEVICE_JSON_MAX);
    big_json[0] = '{';
    big_json[SRV_DEVICE_JSON_MAX - 1] = '}';
    _cleanup_free_ char *too_big = repeat(' ', SRV_DEVICE_JSON_MAX + 1);
    too_big[0] = '{';
    too_big[SRV_DEVICE_JSON_MAX] = '}';
    _cleanup_free_ char *big_identity = repeat(' ', SRV_DEVICE_IDENTITY_MAX + 1);
    big_identity[0] = '{';
    big_identity[SRV_DEVICE_IDENTITY_MAX] = '}';
    _cleanup_free_ char *tag63 = repeat('t', SRV_TAG_MAX - 1);
    _cleanup_free_ char *tag64 = repeat('t', SRV_TAG_MAX);

    static const char *const not_objects[] = {"[]", "1", "\"x\"", "nope", "{\"a\":1,\"a\":2}",
                                              "{} {}", ""};
    for (size_t i = 0; i < OT_ARRAY_SIZE(not_objects); i++) {
        struct srv_device dev = device_in(1, SRV_DEVICE_PENDING, "");
        dev.identity = (char *)not_objects[i];
        assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
        dev = device_in(1, SRV_DEVICE_PENDING, "");
        dev.attributes = (char *)not_objects[i];
        assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
        dev.attributes = NULL;
        dev.installed = (char *)not_objects[i];
        assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
        assert_int_equal(srv_store_device_set_attributes(s, 1, not_objects[i], T0, &d),
                         OT_ERR_INVALID);
        assert_int_equal(srv_store_device_set_installed(s, 1, "", not_objects[i], T0, &d),
                         OT_ERR_INVALID);
    }
    struct srv_device dev = device_in(1, SRV_DEVICE_PENDING, "");
    dev.identity = NULL;
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
    dev = device_in(1, SRV_DEVICE_PENDING, "");
    dev.identity = big_identity;
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_LIMIT);
    dev = device_in(1, SRV_DEVICE_PENDING, "");
    dev.attributes = too_big;
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "device attributes is longer than 65536 bytes");
    dev.attributes = NULL;
    memset(dev.device_type, 'x', sizeof(dev.device_type)); /* no terminator within the field */
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_LIMIT);
    static const enum srv_device_status bad_status[] = {0, 6, -1};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_status); i++) {
        dev = device_in(1, bad_status[i], "");
        assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
        assert_int_equal(srv_store_device_set_status(s, 1, bad_status[i], T0, &d),
                         OT_ERR_INVALID);
    }
    dev = device_in(1, SRV_DEVICE_PENDING, "");
    dev.created_at = -1;
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);

    const char *bad_tags[] = {"", "a b", "x/y", "gr\xc3\xbc\xc3\x9f", "tab\t", "'; DROP", tag64,
                              NULL};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_tags); i++) {
        dev = device_in(1, SRV_DEVICE_PENDING, "");
        const char *one[] = {"fine", bad_tags[i]};
        dev.tags = (char **)one;
        dev.ntags = 2;
        assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_INVALID);
    }
    /* 33 distinct tags are too many; 40 that merge into 32 are fine. */
    char names[40][8];
    const char *many[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i < 32 ? i : i - 32);
        many[i] = names[i];
    }
    dev = device_in(1, SRV_DEVICE_PENDING, "");
    dev.tags = (char **)many;
    dev.ntags = 33;
    snprintf(names[32], sizeof(names[32]), "t32");
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_ERR_LIMIT);
    assert_int_equal(count_devices(s), 0); /* nothing stored so far */

    snprintf(names[32], sizeof(names[32]), "t0");
    dev.ntags = 40;
    dev.attributes = big_json;
    assert_int_equal(srv_store_device_create(s, &dev, &d), OT_OK);
    struct srv_device got;
    assert_int_equal(srv_store_device_get(s, dev.id, &got, &d), OT_OK);
    assert_int_equal(got.ntags, SRV_DEVICE_TAGS_MAX);
    assert_string_equal(got.attributes, big_json);
    srv_device_release(&got);
    const char *longest[] = {tag63};
    assert_int_equal(srv_store_device_set_tags(s, dev.id, longest, 1, T0, &d), OT_OK);

    _cleanup_free_ char *type_long = repeat('y', SRV_DEVICE_TYPE_MAX);
    assert_int_equal(srv_store_device_set_installed(s, dev.id, type_long, "{}", T0, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_device_set_installed(s, dev.id, NULL, "{}", T0, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_device_set_attributes(s, dev.id, too_big, T0, &d), OT_ERR_LIMIT);
    snprintf(names[32], sizeof(names[32]), "t32");
    assert_int_equal(srv_store_device_set_tags(s, dev.id, many, 33, T0, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_device_set_tags(s, dev.id, NULL, 1, T0, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_device_create(s, NULL, &d), OT_ERR_INVALID);
    assert_int_equal(count_devices(s), 1);
    srv_store_close(s);
}

static int64_t last_seen(struct srv_store *s, int64_t id)
{
    struct srv_device got;
    assert_int_equal(srv_store_device_get(s, id, &got, NULL), OT_OK);
    int64_t v = got.last_seen;
    assert_int_equal(got.updated_at, got.created_at); /* touching is not an update */
    srv_device_release(&got);
    return v;
}

static void test_device_touch(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t a = add_device(s, 1, SRV_DEVICE_ACCEPTED, "", NULL, 0);
    int64_t b = add_device(s, 2, SRV_DEVICE_ACCEPTED, "", NULL, 0);
    int64_t c = add_device(s, 3, SRV_DEVICE_ACCEPTED, "", NULL, 0);

    assert_int_equal(srv_store_device_touch(s, NULL, NULL, 0, &d), OT_OK);
    assert_int_equal(srv_store_device_touch(s, NULL, NULL, 1, &d), OT_ERR_INVALID);
    /* Unknown ids are skipped; a device twice in one batch keeps the later time. */
    int64_t ids[] = {a, 999999, b, a, -4};
    int64_t at[] = {T0 + 10, T0, T0 + 20, T0 + 5, T0};
    assert_int_equal(srv_store_device_touch(s, ids, at, OT_ARRAY_SIZE(ids), &d), OT_OK);
    assert_int_equal(last_seen(s, a), T0 + 10);
    assert_int_equal(last_seen(s, b), T0 + 20);
    assert_int_equal(last_seen(s, c), 0);

    /* Never backwards. */
    int64_t ids2[] = {a, b, c};
    int64_t at2[] = {T0 + 1, T0 + 30, T0 + 7};
    assert_int_equal(srv_store_device_touch(s, ids2, at2, 3, &d), OT_OK);
    assert_int_equal(last_seen(s, a), T0 + 10);
    assert_int_equal(last_seen(s, b), T0 + 30);
    assert_int_equal(last_seen(s, c), T0 + 7);
    srv_store_close(s);
}

/* Devices 1..12: status, type and tags by pattern. */
static void fleet(struct srv_store *s, int64_t ids[12])
{
    static const char *const lab[] = {"lab"}, *const both[] = {"eu", "lab"}, *const eu[] = {"eu"};
    for (int i = 0; i < 12; i++) {
        enum srv_device_status st = i % 3 == 0 ? SRV_DEVICE_PENDING : SRV_DEVICE_ACCEPTED;
        const char *const *tags = i % 4 == 0 ? lab : i % 4 == 1 ? both : i % 4 == 2 ? eu : NULL;
        ids[i] = add_device(s, i + 1, st, i % 2 ? "gw-2" : "gw-3", tags,
                            i % 4 == 1 ? 2 : i % 4 == 3 ? 0 : 1);
    }
}

/* The ids of a listed page, and a check that each row is complete. */
static size_t list_ids(struct srv_store *s, struct srv_device_filter flt, int64_t *out)
{
    struct srv_device *list = NULL;
    size_t n = 0;
    struct ot_diag d = {0};
    assert_int_equal(srv_store_device_list(s, &flt, &list, &n, &d), OT_OK);
    assert_true(n <= flt.limit);
    for (size_t i = 0; i < n; i++) {
        out[i] = list[i].id;
        assert_non_null(list[i].identity);
        assert_non_null(list[i].attributes);
        if (i)
            assert_true(list[i].id > list[i - 1].id);
        if (flt.tag) {
            bool has = false;
            for (size_t k = 0; k < list[i].ntags; k++)
                has |= strcmp(list[i].tags[k], flt.tag) == 0;
            assert_true(has);
        }
    }
    srv_device_list_free(list, n);
    return n;
}

static void test_device_list(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t ids[12], got[SRV_LIST_MAX];
    fleet(s, ids);

    assert_int_equal(list_ids(s, (struct srv_device_filter){.limit = 100}, got), 12);
    assert_memory_equal(got, ids, sizeof(ids));
    /* pending: 0, 3, 6, 9 */
    assert_int_equal(list_ids(s, (struct srv_device_filter){.status = SRV_DEVICE_PENDING,
                                                            .limit = 100},
                              got),
                     4);
    assert_int_equal(got[1], ids[3]);
    /* lab: 0, 1, 4, 5, 8, 9 */
    assert_int_equal(list_ids(s, (struct srv_device_filter){.tag = "lab", .limit = 100}, got), 6);
    assert_int_equal(got[2], ids[4]);
    /* gw-2 (odd) and lab and accepted: 1, 5 */
    assert_int_equal(list_ids(s,
                              (struct srv_device_filter){.status = SRV_DEVICE_ACCEPTED,
                                                         .tag = "lab", .device_type = "gw-2",
                                                         .limit = 100},
                              got),
                     2);
    assert_int_equal(got[0], ids[1]);
    assert_int_equal(got[1], ids[5]);
    assert_int_equal(list_ids(s, (struct srv_device_filter){.device_type = "", .limit = 100},
                              got),
                     0);
    assert_int_equal(list_ids(s, (struct srv_device_filter){.tag = "none", .limit = 100}, got),
                     0);
    assert_int_equal(list_ids(s, (struct srv_device_filter){.device_type = "' OR 1=1 --",
                                                            .limit = 100},
                              got),
                     0);

    /* Pages of 5 by after_id. */
    int64_t after = 0, all[12];
    size_t total = 0, n;
    do {
        n = list_ids(s, (struct srv_device_filter){.after_id = after, .limit = 5}, got);
        memcpy(all + total, got, n * sizeof(*got));
        total += n;
        if (n)
            after = got[n - 1];
    } while (n == 5);
    assert_int_equal(total, 12);
    assert_memory_equal(all, ids, sizeof(ids));
    assert_int_equal(list_ids(s, (struct srv_device_filter){.tag = "eu", .after_id = ids[5],
                                                            .limit = 2},
                              got),
                     2);
    assert_int_equal(got[0], ids[6]);
    assert_int_equal(got[1], ids[9]);

    struct srv_device *list = NULL;
    size_t count = 0;
    struct srv_device_filter bad[] = {
        {.limit = 0}, {.limit = SRV_LIST_MAX + 1}, {.limit = SIZE_MAX},
        {.status = 6, .limit = 1}, {.tag = "a b", .limit = 1}, {.tag = "", .limit = 1},
    };
    static const enum ot_err want[] = {OT_ERR_RANGE, OT_ERR_RANGE, OT_ERR_RANGE,
                                       OT_ERR_INVALID, OT_ERR_INVALID, OT_ERR_INVALID};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        assert_int_equal(srv_store_device_list(s, &bad[i], &list, &count, &d), want[i]);
    assert_int_equal(srv_store_device_list(s, NULL, &list, &count, &d), OT_ERR_INVALID);

    /* The tags of every device on a page are its own. */
    struct srv_device_filter page = {.limit = SRV_LIST_MAX};
    assert_int_equal(srv_store_device_list(s, &page, &list, &count, &d), OT_OK);
    assert_int_equal(count, 12);
    static const char *const want_both[] = {"eu", "lab"};
    assert_tags(&list[1], want_both, 2);
    assert_int_equal(list[3].ntags, 0);
    assert_string_equal(list[2].tags[0], "eu");
    srv_device_list_free(list, count);
    srv_device_list_free(NULL, 0);
    srv_store_close(s);
}

static void test_device_ids_by_tag(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t ids[12];
    fleet(s, ids);
    int64_t *got = NULL;
    size_t n = 0;
    /* lab: 0, 1, 4, 5, 8, 9; accepted of those: 1, 4, 5, 8 */
    assert_int_equal(srv_store_device_ids_by_tag(s, "lab", &got, &n, &d), OT_OK);
    assert_int_equal(n, 4);
    int64_t want[] = {ids[1], ids[4], ids[5], ids[8]};
    assert_memory_equal(got, want, sizeof(want));
    free(got);
    assert_int_equal(srv_store_device_set_status(s, ids[4], SRV_DEVICE_DECOMMISSIONED, T0, &d),
                     OT_OK);
    assert_int_equal(srv_store_device_ids_by_tag(s, "lab", &got, &n, &d), OT_OK);
    assert_int_equal(n, 3);
    free(got);
    got = (int64_t *)&n; /* must become NULL */
    assert_int_equal(srv_store_device_ids_by_tag(s, "nobody", &got, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    assert_null(got);
    assert_int_equal(srv_store_device_ids_by_tag(s, "bad tag", &got, &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_device_ids_by_tag(s, NULL, &got, &n, &d), OT_ERR_INVALID);
    srv_store_close(s);
}

/* ---- contract: artifacts --------------------------------------------------------------------- */

static struct srv_artifact artifact_in(const char *name, const char *version, int seed)
{
    static char sha[8][SRV_SHA256_HEX];
    struct srv_artifact a;
    memset(&a, 0, sizeof(a));
    a.name = (char *)name;
    a.version = (char *)version;
    snprintf(sha[seed % 8], sizeof(sha[0]), "%064x", seed);
    memcpy(a.sha256, sha[seed % 8], sizeof(a.sha256));
    a.size = 1000 + (uint64_t)seed;
    a.manifest = "{\"format\":1,\"name\":\"rootfs\"}\n";
    a.signatures = "{\"signatures\":[]}\n";
    a.device_types = "[\"gw-2\",\"gw-3\"]";
    a.created_at = T0 + seed;
    a.uploaded_by = "token:3 (ci)";
    return a;
}

static int64_t add_artifact(struct srv_store *s, const char *name, const char *version, int seed)
{
    struct srv_artifact a = artifact_in(name, version, seed);
    struct ot_diag d = {0};
    enum ot_err err = srv_store_artifact_create(s, &a, &d);
    if (err)
        print_error("add artifact: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    return a.id;
}

static void assert_artifact_equal(const struct srv_artifact *a, const struct srv_artifact *b)
{
    assert_int_equal(a->id, b->id);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->version, b->version);
    assert_string_equal(a->sha256, b->sha256);
    assert_int_equal(a->size, b->size);
    assert_string_equal(a->manifest, b->manifest);
    assert_string_equal(a->signatures, b->signatures);
    assert_string_equal(a->device_types, b->device_types);
    assert_int_equal(a->created_at, b->created_at);
    assert_string_equal(a->uploaded_by, b->uploaded_by);
    assert_string_equal(a->channel, b->channel ? b->channel : ""); /* NULL is stored as "" */
}

static void test_artifacts(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_artifact a = artifact_in("rootfs", "1.0", 1), got;
    a.size = INT64_MAX;
    assert_int_equal(srv_store_artifact_create(s, &a, &d), OT_OK);
    assert_true(a.id > 0);
    assert_int_equal(srv_store_artifact_get(s, a.id, &got, &d), OT_OK);
    assert_artifact_equal(&got, &a);
    srv_artifact_release(&got);
    assert_int_equal(srv_store_artifact_by_sha256(s, a.sha256, &got, &d), OT_OK);
    assert_artifact_equal(&got, &a);
    srv_artifact_release(&got);
    srv_artifact_release(&got);
    srv_artifact_release(NULL);

    struct srv_artifact same_sha = artifact_in("other", "2.0", 1);
    same_sha.id = -2;
    assert_int_equal(srv_store_artifact_create(s, &same_sha, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "sha256"));
    assert_int_equal(same_sha.id, -2);
    struct srv_artifact same_name = artifact_in("rootfs", "1.0", 2);
    assert_int_equal(srv_store_artifact_create(s, &same_name, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "rootfs version 1.0"));
    assert_null(strstr(d.msg, "sha256"));

    int64_t ids[6] = {a.id};
    for (int i = 1; i < 6; i++) {
        char version[16];
        snprintf(version, sizeof(version), "1.%d", i);
        ids[i] = add_artifact(s, "rootfs", version, 10 + i);
        assert_true(ids[i] > ids[i - 1]);
    }
    struct srv_artifact *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_artifact_list(s, 0, 4, &list, &n, &d), OT_OK);
    assert_int_equal(n, 4);
    assert_int_equal(list[0].id, ids[0]);
    assert_int_equal(list[3].id, ids[3]);
    assert_string_equal(list[2].version, "1.2");
    srv_artifact_list_free(list, n);
    assert_int_equal(srv_store_artifact_list(s, ids[3], SRV_LIST_MAX, &list, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].id, ids[4]);
    srv_artifact_list_free(list, n);
    assert_int_equal(srv_store_artifact_list(s, 0, 0, &list, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_artifact_list(s, 0, SRV_LIST_MAX + 1, &list, &n, &d),
                     OT_ERR_RANGE);

    assert_int_equal(srv_store_artifact_delete(s, ids[2], &d), OT_OK);
    assert_int_equal(srv_store_artifact_delete(s, ids[2], &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_artifact_delete(s, 999999, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_artifact_get(s, ids[2], &got, &d), OT_ERR_NOENT);
    struct srv_artifact sha_of_2 = artifact_in("x", "y", 12);
    assert_int_equal(srv_store_artifact_by_sha256(s, sha_of_2.sha256, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_artifact_create(s, &sha_of_2, &d), OT_OK); /* free again */
    assert_true(sha_of_2.id > ids[5]);                                      /* never reused */
    srv_store_close(s);
}

static void test_artifact_validation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    _cleanup_free_ char *long_name = repeat('n', SRV_ARTIFACT_FIELD_MAX + 1);
    _cleanup_free_ char *long_sig = repeat('s', SRV_ARTIFACT_SIGNATURES_MAX + 1);
    struct {
        struct srv_artifact a;
        enum ot_err want;
    } bad[16];
    size_t n = 0;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        bad[i].a = artifact_in("rootfs", "1.0", 1);
    bad[n].a.name = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.version = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.name = long_name;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].a.sha256[0] = 'A'; /* upper case */
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.sha256[63] = '\0';
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.sha256[10] = 'g';
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.size = (uint64_t)INT64_MAX + 1;
    bad[n++].want = OT_ERR_RANGE;
    bad[n].a.device_types = "{\"gw\":1}";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.device_types = "[";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.signatures = long_sig;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].a.manifest = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.uploaded_by = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].a.created_at = -1;
    bad[n++].want = OT_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        d.msg[0] = '\0';
        assert_int_equal(srv_store_artifact_create(s, &bad[i].a, &d), bad[i].want);
        assert_true(d.msg[0] != '\0');
    }
    assert_int_equal(srv_store_artifact_create(s, NULL, &d), OT_ERR_INVALID);
    struct srv_artifact got;
    assert_int_equal(srv_store_artifact_by_sha256(s, "ABC", &got, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_artifact_by_sha256(s, NULL, &got, &d), OT_ERR_INVALID);
    struct srv_artifact *list = NULL;
    size_t count = 9;
    assert_int_equal(srv_store_artifact_list(s, 0, 10, &list, &count, &d), OT_OK);
    assert_int_equal(count, 0);
    srv_artifact_list_free(list, count);
    srv_store_close(s);
}

/* ---- contract: deployments ------------------------------------------------------------------- */

static int64_t generation(struct srv_store *s)
{
    int64_t g = 0;
    assert_int_equal(srv_store_deployments_generation(s, &g, NULL), OT_OK);
    return g;
}

static struct srv_deployment deployment_in(const char *name, int64_t artifact_id)
{
    struct srv_deployment dep;
    memset(&dep, 0, sizeof(dep));
    dep.name = (char *)name;
    dep.artifact_id = artifact_id;
    dep.target = "{\"tag\":\"lab\"}";
    dep.created_at = T0 + 1000;
    dep.created_by = "token:1 (admin)";
    return dep;
}

static int64_t add_deployment(struct srv_store *s, int64_t artifact_id, const int64_t *ids,
                              size_t n, const bool *skipped)
{
    struct srv_deployment dep = deployment_in("rollout", artifact_id);
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_create(s, &dep, ids, skipped, n, "wrong type", &d);
    if (err)
        print_error("add deployment: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    return dep.id;
}

static struct srv_dd dd_of(struct srv_store *s, int64_t dep, int64_t dev)
{
    struct srv_dd dd;
    assert_int_equal(srv_store_dd_get(s, dep, dev, &dd, NULL), OT_OK);
    return dd;
}

static enum srv_dd_status dd_status(struct srv_store *s, int64_t dep, int64_t dev)
{
    struct srv_dd dd = dd_of(s, dep, dev);
    enum srv_dd_status st = dd.status;
    srv_dd_release(&dd);
    return st;
}

static struct srv_deployment dep_of(struct srv_store *s, int64_t id)
{
    struct srv_deployment dep;
    assert_int_equal(srv_store_deployment_get(s, id, &dep, NULL), OT_OK);
    return dep;
}

static enum srv_deployment_status dep_status(struct srv_store *s, int64_t id)
{
    struct srv_deployment dep = dep_of(s, id);
    enum srv_deployment_status st = dep.status;
    srv_deployment_release(&dep);
    return st;
}

/* A report that must be applied. */
static void report(struct srv_store *s, int64_t dep, int64_t dev, enum srv_dd_status st,
                   int64_t at)
{
    bool applied = false;
    enum srv_dd_status current = 0;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_dd_report(s, dep, dev, st, 50, "", NULL, at, &applied, &current,
                                          &d);
    if (err)
        print_error("report: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    assert_true(applied);
    assert_int_equal(current, st);
}

static void test_deployment_create(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t g0 = generation(s);

    struct srv_deployment dep = deployment_in("spring rollout (eu)", art);
    dep.status = 77;
    bool skipped[] = {false, true, false};
    assert_int_equal(srv_store_deployment_create(s, &dep, dev, skipped, 3, "needs gw-3", &d),
                     OT_OK);
    assert_true(dep.id > 0);
    assert_int_equal(dep.status, SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(dep.ndevices, 3);
    assert_int_equal(dep.finished_at, 0);
    assert_true(generation(s) != g0);

    struct srv_deployment got = dep_of(s, dep.id);
    assert_string_equal(got.name, "spring rollout (eu)");
    assert_int_equal(got.artifact_id, art);
    assert_string_equal(got.artifact_name, "rootfs");
    assert_string_equal(got.artifact_version, "2.0");
    assert_string_equal(got.target, "{\"tag\":\"lab\"}");
    assert_int_equal(got.status, SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(got.created_at, T0 + 1000);
    assert_int_equal(got.finished_at, 0);
    assert_string_equal(got.created_by, "token:1 (admin)");
    assert_int_equal(got.ndevices, 3);
    srv_deployment_release(&got);
    srv_deployment_release(&got);

    struct srv_dd row = dd_of(s, dep.id, dev[0]);
    assert_int_equal(row.deployment_id, dep.id);
    assert_int_equal(row.device_id, dev[0]);
    assert_int_equal(row.status, SRV_DD_PENDING);
    assert_int_equal(row.progress, -1);
    assert_string_equal(row.message, "");
    assert_int_equal(row.updated_at, T0 + 1000);
    srv_dd_release(&row);
    row = dd_of(s, dep.id, dev[1]);
    assert_int_equal(row.status, SRV_DD_SKIPPED);
    assert_string_equal(row.message, "needs gw-3");
    srv_dd_release(&row);

    /* Unknown or repeated devices: nothing is created. */
    int64_t g1 = generation(s);
    int64_t unknown[] = {dev[0], 999999};
    struct srv_deployment bad = deployment_in("bad", art);
    assert_int_equal(srv_store_deployment_create(s, &bad, unknown, NULL, 2, NULL, &d),
                     OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "999999"));
    int64_t twice[] = {dev[0], dev[1], dev[0]};
    assert_int_equal(srv_store_deployment_create(s, &bad, twice, NULL, 3, NULL, &d),
                     OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "twice"));
    assert_int_equal(srv_store_deployment_create(s, &bad, dev, NULL, 0, NULL, &d),
                     OT_ERR_INVALID);
    bad.artifact_id = 999999;
    assert_int_equal(srv_store_deployment_create(s, &bad, dev, NULL, 1, NULL, &d), OT_ERR_NOENT);
    assert_int_equal(bad.id, 0);
    assert_int_equal(generation(s), g1);
    struct srv_deployment *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_list(s, 0, 0, 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    srv_deployment_list_free(list, n);

    /* Every device skipped: finished at once. */
    bool all[] = {true, true};
    struct srv_deployment done = deployment_in("nothing to do", art);
    assert_int_equal(srv_store_deployment_create(s, &done, dev, all, 2, "no", &d), OT_OK);
    assert_int_equal(done.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(done.finished_at, T0 + 1000);
    got = dep_of(s, done.id);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 1000);
    srv_deployment_release(&got);
    assert_true(generation(s) != g1);

    /* Argument checks. */
    _cleanup_free_ char *name_long = repeat('n', SRV_DEPLOYMENT_NAME_MAX);
    _cleanup_free_ char *name_max = repeat('n', SRV_DEPLOYMENT_NAME_MAX - 1);
    _cleanup_free_ char *msg_long = repeat('m', SRV_DD_MESSAGE_MAX + 1);
    struct srv_deployment v = deployment_in("", art);
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_ERR_INVALID);
    v.name = name_long;
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_ERR_LIMIT);
    v.name = "line\nbreak";
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_ERR_INVALID);
    v.name = name_max;
    v.target = "[1,2]";
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_ERR_INVALID);
    v.target = "{}";
    v.created_by = NULL;
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_ERR_INVALID);
    v.created_by = "me";
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, msg_long, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_deployment_create(s, &v, NULL, NULL, 1, NULL, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_deployment_create(s, NULL, dev, NULL, 1, NULL, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_deployment_create(s, &v, dev, NULL, 1, NULL, &d), OT_OK);
    assert_int_equal(srv_store_deployment_get(s, 999999, &got, &d), OT_ERR_NOENT);
    srv_store_close(s);
}

static void test_deployment_list(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t ids[5];
    for (size_t i = 0; i < 5; i++)
        ids[i] = add_deployment(s, art, dev, i % 3 + 1, NULL);
    assert_int_equal(srv_store_deployment_cancel(s, ids[1], T0 + 2000, &d), OT_OK);
    assert_int_equal(srv_store_deployment_cancel(s, ids[3], T0 + 2000, &d), OT_OK);

    struct srv_deployment *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_list(s, 0, 0, SRV_LIST_MAX, &list, &n, &d), OT_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) { /* newest first */
        assert_int_equal(list[i].id, ids[4 - i]);
        assert_int_equal(list[i].ndevices, (4 - i) % 3 + 1);
        assert_string_equal(list[i].artifact_name, "rootfs");
    }
    srv_deployment_list_free(list, n);
    assert_int_equal(srv_store_deployment_list(s, 0, ids[3], 2, &list, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].id, ids[2]);
    assert_int_equal(list[1].id, ids[1]);
    srv_deployment_list_free(list, n);
    assert_int_equal(srv_store_deployment_list(s, SRV_DEPLOYMENT_CANCELLED, 0, 10, &list, &n, &d),
                     OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].id, ids[3]);
    assert_int_equal(list[0].status, SRV_DEPLOYMENT_CANCELLED);
    assert_int_equal(list[0].finished_at, T0 + 2000);
    srv_deployment_list_free(list, n);
    assert_int_equal(srv_store_deployment_list(s, SRV_DEPLOYMENT_ACTIVE, ids[2], 10, &list, &n,
                                               &d),
                     OT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].id, ids[0]);
    srv_deployment_list_free(list, n);
    assert_int_equal(srv_store_deployment_list(s, 0, ids[0], 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_deployment_list_free(list, n);

    assert_int_equal(srv_store_deployment_list(s, 0, 0, 0, &list, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_deployment_list(s, 0, 0, SRV_LIST_MAX + 1, &list, &n, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_deployment_list(s, 4, 0, 1, &list, &n, &d), OT_ERR_INVALID);
    srv_store_close(s);
}

static void test_deployment_rollup_and_devices(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[7];
    for (int i = 0; i < 7; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    bool skipped[7] = {[6] = true};
    int64_t order[7] = {dev[3], dev[0], dev[6], dev[5], dev[1], dev[4], dev[2]}; /* any order */
    int64_t dep = add_deployment(s, art, order, 7, skipped);
    assert_int_equal(dd_status(s, dep, dev[2]), SRV_DD_SKIPPED);
    report(s, dep, dev[0], SRV_DD_DOWNLOADING, T0 + 1);
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 2);
    report(s, dep, dev[3], SRV_DD_FAILURE, T0 + 3);

    uint64_t counts[SRV_DD__MAX];
    memset(counts, 0xff, sizeof(counts));
    assert_int_equal(srv_store_deployment_rollup(s, dep, counts, &d), OT_OK);
    uint64_t want[SRV_DD__MAX] = {[SRV_DD_PENDING] = 3, [SRV_DD_DOWNLOADING] = 1,
                                  [SRV_DD_SUCCESS] = 1, [SRV_DD_FAILURE] = 1,
                                  [SRV_DD_SKIPPED] = 1};
    assert_memory_equal(counts, want, sizeof(want));
    assert_int_equal(srv_store_deployment_rollup(s, 999999, counts, &d), OT_ERR_NOENT);

    struct srv_dd *rows = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_devices(s, dep, 0, 3, &rows, &n, &d), OT_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rows[i].device_id, dev[i]);
    assert_int_equal(rows[0].status, SRV_DD_DOWNLOADING);
    assert_int_equal(rows[0].progress, 50);
    assert_int_equal(rows[0].updated_at, T0 + 1);
    srv_dd_list_free(rows, n);
    assert_int_equal(srv_store_deployment_devices(s, dep, dev[2], SRV_LIST_MAX, &rows, &n, &d),
                     OT_OK);
    assert_int_equal(n, 4);
    assert_int_equal(rows[0].device_id, dev[3]);
    assert_int_equal(rows[3].device_id, dev[6]);
    srv_dd_list_free(rows, n);
    assert_int_equal(srv_store_deployment_devices(s, dep, dev[6], 10, &rows, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_dd_list_free(rows, n);
    srv_dd_list_free(NULL, 0);
    assert_int_equal(srv_store_deployment_devices(s, 999999, 0, 10, &rows, &n, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_deployment_devices(s, dep, 0, 0, &rows, &n, &d), OT_ERR_RANGE);
    srv_store_close(s);
}

static void test_deployment_cancel(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 3, NULL);
    report(s, dep, dev[1], SRV_DD_INSTALLING, T0 + 1);
    report(s, dep, dev[2], SRV_DD_SUCCESS, T0 + 2);
    int64_t g = generation(s);

    assert_int_equal(srv_store_deployment_cancel(s, dep, T0 + 50, &d), OT_OK);
    assert_true(generation(s) != g);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.status, SRV_DEPLOYMENT_CANCELLED);
    assert_int_equal(got.finished_at, T0 + 50);
    srv_deployment_release(&got);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_CANCELLED);
    assert_int_equal(row.updated_at, T0 + 50);
    srv_dd_release(&row);
    assert_int_equal(dd_status(s, dep, dev[1]), SRV_DD_INSTALLING); /* under way: untouched */
    assert_int_equal(dd_status(s, dep, dev[2]), SRV_DD_SUCCESS);

    /* The device under way keeps reporting; the deployment stays cancelled. */
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 60);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_CANCELLED);
    bool applied = true;
    enum srv_dd_status current = 0;
    assert_int_equal(srv_store_dd_report(s, dep, dev[0], SRV_DD_DOWNLOADING, 0, NULL, NULL,
                                         T0 + 61, &applied, &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_int_equal(current, SRV_DD_CANCELLED);

    g = generation(s);
    assert_int_equal(srv_store_deployment_cancel(s, dep, T0 + 70, &d), OT_ERR_EXISTS);
    assert_int_equal(srv_store_deployment_cancel(s, 999999, T0 + 70, &d), OT_ERR_NOENT);
    assert_int_equal(generation(s), g);
    got = dep_of(s, dep);
    assert_int_equal(got.finished_at, T0 + 50);
    srv_deployment_release(&got);

    /* A finished deployment cannot be cancelled either. */
    int64_t done = add_deployment(s, art, dev, 1, NULL);
    report(s, done, dev[0], SRV_DD_SUCCESS, T0 + 80);
    assert_int_equal(dep_status(s, done), SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(srv_store_deployment_cancel(s, done, T0 + 90, &d), OT_ERR_EXISTS);
    srv_store_close(s);
}

static void test_artifact_delete_in_use(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev = add_device(s, 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, &dev, 1, NULL);
    char want[64];
    snprintf(want, sizeof(want), "deployment %lld", (long long)dep);

    assert_int_equal(srv_store_artifact_delete(s, art, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, want));
    struct srv_artifact a;
    assert_int_equal(srv_store_artifact_get(s, art, &a, &d), OT_OK);
    srv_artifact_release(&a);

    assert_int_equal(srv_store_deployment_cancel(s, dep, T0 + 5, &d), OT_OK);
    assert_int_equal(srv_store_artifact_delete(s, art, &d), OT_OK);
    assert_int_equal(srv_store_artifact_get(s, art, &a, &d), OT_ERR_NOENT);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.artifact_id, 0);
    assert_string_equal(got.artifact_name, "rootfs");
    assert_string_equal(got.artifact_version, "2.0");
    assert_int_equal(got.status, SRV_DEPLOYMENT_CANCELLED);
    srv_deployment_release(&got);
    struct srv_deployment again = deployment_in("again", art);
    assert_int_equal(srv_store_deployment_create(s, &again, &dev, NULL, 1, NULL, &d),
                     OT_ERR_NOENT);
    srv_store_close(s);
}

static void test_device_next(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    struct srv_dd next;
    memset(&next, 0x5a, sizeof(next));
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_ERR_NOENT);

    int64_t first = add_deployment(s, art, dev, 2, NULL);
    int64_t second = add_deployment(s, art, dev, 2, NULL);
    int64_t third = add_deployment(s, art, dev, 1, NULL);
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_OK);
    assert_int_equal(next.deployment_id, first);
    assert_int_equal(next.device_id, dev[0]);
    assert_int_equal(next.status, SRV_DD_PENDING);
    srv_dd_release(&next);

    report(s, first, dev[0], SRV_DD_SUCCESS, T0 + 1); /* final: skipped over */
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_OK);
    assert_int_equal(next.deployment_id, second);
    srv_dd_release(&next);
    report(s, second, dev[0], SRV_DD_INSTALLING, T0 + 2); /* under way: still its work */
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_OK);
    assert_int_equal(next.deployment_id, second);
    assert_int_equal(next.status, SRV_DD_INSTALLING);
    srv_dd_release(&next);
    assert_int_equal(srv_store_deployment_cancel(s, second, T0 + 3, &d), OT_OK);
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_OK);
    assert_int_equal(next.deployment_id, third);
    srv_dd_release(&next);
    assert_int_equal(srv_store_dd_skip(s, third, dev[0], "no", T0 + 4, &d), OT_OK);
    assert_int_equal(srv_store_device_next(s, dev[0], &next, &d), OT_ERR_NOENT);

    assert_int_equal(srv_store_device_next(s, dev[1], &next, &d), OT_OK); /* the other device */
    assert_int_equal(next.deployment_id, first);
    srv_dd_release(&next);
    srv_dd_release(NULL);
    assert_int_equal(srv_store_dd_get(s, third, dev[1], &next, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_device_next(s, 999999, &next, &d), OT_ERR_NOENT);
    srv_store_close(s);
}

static void test_dd_report(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 2, NULL);
    int64_t g = generation(s);
    bool applied = false;
    enum srv_dd_status current = 0;

    assert_int_equal(srv_store_dd_report(s, dep, dev[0], SRV_DD_DOWNLOADING, 30, "fetching",
                                         "line 1\nline 2\n", T0 + 10, &applied, &current, &d),
                     OT_OK);
    assert_true(applied);
    assert_int_equal(current, SRV_DD_DOWNLOADING);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_DOWNLOADING);
    assert_int_equal(row.progress, 30);
    assert_string_equal(row.message, "fetching");
    assert_int_equal(row.updated_at, T0 + 10);
    srv_dd_release(&row);
    assert_int_equal(generation(s), g); /* a device's own progress is not a generation change */

    assert_int_equal(srv_store_dd_report(s, dep, dev[0], SRV_DD_ROLLED_BACK, -1, NULL, NULL,
                                         T0 + 20, &applied, NULL, &d),
                     OT_OK);
    assert_true(applied);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE); /* dev[1] is left */
    /* After a final status nothing changes, and the caller learns what it is. */
    applied = true;
    assert_int_equal(srv_store_dd_report(s, dep, dev[0], SRV_DD_SUCCESS, 100, "late", "log",
                                         T0 + 30, &applied, &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_int_equal(current, SRV_DD_ROLLED_BACK);
    row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_ROLLED_BACK);
    assert_int_equal(row.progress, -1);
    assert_string_equal(row.message, "");
    assert_int_equal(row.updated_at, T0 + 20);
    srv_dd_release(&row);

    struct srv_dd_event *ev = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, SRV_LIST_MAX, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 2); /* the refused report left no event */
    assert_int_equal(ev[0].status, SRV_DD_DOWNLOADING);
    assert_int_equal(ev[0].progress, 30);
    assert_int_equal(ev[0].at, T0 + 10);
    assert_string_equal(ev[0].message, "fetching");
    assert_string_equal(ev[0].log, "line 1\nline 2\n");
    assert_int_equal(ev[1].status, SRV_DD_ROLLED_BACK);
    assert_string_equal(ev[1].message, "");
    assert_null(ev[1].log);
    assert_true(ev[1].id > ev[0].id);
    srv_dd_event_list_free(ev, n);

    /* The last row to finish finishes the deployment. */
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 40);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 40);
    srv_deployment_release(&got);
    assert_true(generation(s) != g);

    /* What a device may not report, and the limits. */
    int64_t dep2 = add_deployment(s, art, dev, 2, NULL);
    static const enum srv_dd_status not_reportable[] = {0, SRV_DD_PENDING, SRV_DD_CANCELLED,
                                                        SRV_DD_SKIPPED, SRV_DD__MAX, -1};
    for (size_t i = 0; i < OT_ARRAY_SIZE(not_reportable); i++)
        assert_int_equal(srv_store_dd_report(s, dep2, dev[0], not_reportable[i], 0, NULL, NULL,
                                             T0, &applied, &current, &d),
                         OT_ERR_INVALID);
    _cleanup_free_ char *msg_max = repeat('m', SRV_DD_MESSAGE_MAX);
    _cleanup_free_ char *msg_long = repeat('m', SRV_DD_MESSAGE_MAX + 1);
    _cleanup_free_ char *log_max = repeat('l', SRV_DD_LOG_MAX);
    _cleanup_free_ char *log_long = repeat('l', SRV_DD_LOG_MAX + 1);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, 101, NULL, NULL,
                                         T0, &applied, &current, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, -2, NULL, NULL, T0,
                                         &applied, &current, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, 0, msg_long, NULL,
                                         T0, &applied, &current, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, 0, NULL, log_long,
                                         T0, &applied, &current, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, 0, NULL, NULL, T0,
                                         NULL, &current, &d),
                     OT_ERR_INVALID);
    assert_int_equal(dd_status(s, dep2, dev[0]), SRV_DD_PENDING);
    assert_int_equal(srv_store_dd_report(s, dep2, dev[0], SRV_DD_DOWNLOADING, 100, msg_max,
                                         log_max, T0, &applied, &current, &d),
                     OT_OK);
    assert_int_equal(srv_store_dd_events(s, dep2, dev[0], 0, 1, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].log, log_max);
    assert_string_equal(ev[0].message, msg_max);
    srv_dd_event_list_free(ev, n);

    assert_int_equal(srv_store_dd_report(s, dep2, 999999, SRV_DD_SUCCESS, 0, NULL, NULL, T0,
                                         &applied, &current, &d),
                     OT_ERR_NOENT);
    assert_int_equal(srv_store_dd_report(s, 999999, dev[0], SRV_DD_SUCCESS, 0, NULL, NULL, T0,
                                         &applied, &current, &d),
                     OT_ERR_NOENT);
    srv_store_close(s);
}

static void test_dd_skip(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 3, NULL);
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 1);
    report(s, dep, dev[2], SRV_DD_DOWNLOADING, T0 + 2);

    int64_t g = generation(s);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[0], "device type gw-2 is not gw-3", T0 + 10,
                                       &d),
                     OT_OK);
    assert_true(generation(s) != g);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_SKIPPED);
    assert_string_equal(row.message, "device type gw-2 is not gw-3");
    assert_int_equal(row.updated_at, T0 + 10);
    srv_dd_release(&row);

    /* A no-op on any other state, the generation included. */
    g = generation(s);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[0], "again", T0 + 20, &d), OT_OK);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[1], "x", T0 + 20, &d), OT_OK);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[2], "x", T0 + 20, &d), OT_OK);
    assert_int_equal(generation(s), g);
    assert_int_equal(dd_status(s, dep, dev[1]), SRV_DD_SUCCESS);
    assert_int_equal(dd_status(s, dep, dev[2]), SRV_DD_DOWNLOADING);
    row = dd_of(s, dep, dev[0]);
    assert_string_equal(row.message, "device type gw-2 is not gw-3");
    srv_dd_release(&row);
    assert_int_equal(srv_store_dd_skip(s, dep, 999999, "x", T0, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_dd_skip(s, 999999, dev[0], "x", T0, &d), OT_ERR_NOENT);
    _cleanup_free_ char *msg_long = repeat('m', SRV_DD_MESSAGE_MAX + 1);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[0], msg_long, T0, &d), OT_ERR_LIMIT);

    /* Skipping the last open row finishes the deployment. */
    int64_t dep2 = add_deployment(s, art, dev, 2, NULL);
    report(s, dep2, dev[0], SRV_DD_FAILURE, T0 + 30);
    assert_int_equal(srv_store_dd_skip(s, dep2, dev[1], NULL, T0 + 40, &d), OT_OK);
    struct srv_deployment got = dep_of(s, dep2);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 40);
    srv_deployment_release(&got);
    row = dd_of(s, dep2, dev[1]);
    assert_string_equal(row.message, "");
    srv_dd_release(&row);
    srv_store_close(s);
}

static void test_dd_events(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 2, NULL);
    struct srv_dd_event *ev = NULL;
    size_t n = 9;
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, 10, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_dd_event_list_free(ev, n);

    for (int i = 0; i < 7; i++) {
        bool applied = false;
        char msg[16];
        snprintf(msg, sizeof(msg), "step %d", i);
        assert_int_equal(srv_store_dd_report(s, dep, dev[i % 2], SRV_DD_DOWNLOADING, i * 10, msg,
                                             NULL, T0 + i, &applied, NULL, &d),
                         OT_OK);
    }
    /* dev[0]: steps 0, 2, 4, 6 */
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, SRV_LIST_MAX, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 4);
    int64_t ids[4];
    for (size_t i = 0; i < n; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "step %zu", i * 2);
        assert_string_equal(ev[i].message, msg);
        assert_int_equal(ev[i].progress, (int)i * 20);
        ids[i] = ev[i].id;
    }
    srv_dd_event_list_free(ev, n);
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, 3, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ev[2].id, ids[2]);
    srv_dd_event_list_free(ev, n);
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], ids[2], 3, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].id, ids[3]);
    srv_dd_event_list_free(ev, n);
    srv_dd_event_list_free(NULL, 0);

    assert_int_equal(srv_store_dd_events(s, dep, 999999, 0, 10, &ev, &n, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, 0, &ev, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_dd_events(s, dep, dev[0], 0, SRV_LIST_MAX + 1, &ev, &n, &d),
                     OT_ERR_RANGE);
    srv_store_close(s);
}

static void test_generation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t seen[8];
    size_t n = 0;
    seen[n++] = generation(s);
    assert_int_equal(srv_store_deployments_generation(s, NULL, &d), OT_ERR_INVALID);
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    assert_int_equal(generation(s), seen[0]); /* devices and artifacts do not count */
    int64_t dep = add_deployment(s, art, dev, 2, NULL);
    seen[n++] = generation(s);
    assert_int_equal(srv_store_dd_skip(s, dep, dev[0], "x", T0, &d), OT_OK);
    seen[n++] = generation(s);
    report(s, dep, dev[1], SRV_DD_INSTALLING, T0);
    assert_int_equal(generation(s), seen[n - 1]);
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0); /* finishes it */
    seen[n++] = generation(s);
    int64_t dep2 = add_deployment(s, art, dev, 1, NULL);
    seen[n++] = generation(s);
    assert_int_equal(srv_store_deployment_cancel(s, dep2, T0, &d), OT_OK);
    seen[n++] = generation(s);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < i; k++)
            assert_true(seen[i] != seen[k]);
    srv_store_close(s);

    s = open_ok(f); /* kept in the database */
    assert_int_equal(generation(s), seen[n - 1]);
    srv_store_close(s);
}

/* Two connections (two otterd instances, or two of SQLite's processes) report a final status for
 * the same row at the same moment: exactly one is applied; and two rows finishing at once still
 * finish their deployment. */
struct racer {
    pthread_t thread;
    struct srv_store *s;
    pthread_barrier_t *go;
    int64_t dep, dev;
    enum srv_dd_status status;
    bool applied;
    enum srv_dd_status current;
    enum ot_err err;
    char msg[OT_DIAG_MSG_MAX];
};

static void *race_report(void *arg)
{
    struct racer *r = arg;
    struct ot_diag d = {0};
    pthread_barrier_wait(r->go);
    r->err = srv_store_dd_report(r->s, r->dep, r->dev, r->status, 100, "done", NULL, T0,
                                 &r->applied, &r->current, &d);
    memcpy(r->msg, d.msg, sizeof(r->msg));
    return NULL;
}

static void race(struct racer r[2])
{
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&r[i].thread, NULL, race_report, &r[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(r[i].thread, NULL), 0);
        if (r[i].err)
            print_error("racer %d: %s\n", i, r[i].msg);
        assert_int_equal(r[i].err, OT_OK);
    }
}

static void test_dd_report_concurrent(void **state)
{
    struct fixture *f = *state;
    enum { ROUNDS = 20 };
    struct srv_store *s[2] = {open_ok(f), open_ok(f)};
    int64_t art = add_artifact(s[0], "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s[0], i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
    for (int round = 0; round < ROUNDS; round++) {
        int64_t dep = add_deployment(s[round % 2], art, dev, 3, NULL);
        struct racer r[2] = {
            {.s = s[0], .go = &go, .dep = dep, .dev = dev[0], .status = SRV_DD_SUCCESS},
            {.s = s[1], .go = &go, .dep = dep, .dev = dev[0], .status = SRV_DD_FAILURE},
        };
        race(r);
        assert_true(r[0].applied != r[1].applied);
        int winner = r[0].applied ? 0 : 1;
        assert_int_equal(r[1 - winner].current, r[winner].status);
        assert_int_equal(dd_status(s[0], dep, dev[0]), r[winner].status);
        struct srv_dd_event *ev = NULL;
        size_t n = 0;
        assert_int_equal(srv_store_dd_events(s[1], dep, dev[0], 0, 10, &ev, &n, NULL), OT_OK);
        assert_int_equal(n, 1);
        srv_dd_event_list_free(ev, n);

        /* The last two rows finish at once: the deployment must not be left active. */
        r[0].dev = dev[1];
        r[1].dev = dev[2];
        r[0].applied = r[1].applied = false;
        race(r);
        assert_true(r[0].applied && r[1].applied);
        struct srv_deployment got = dep_of(s[round % 2], dep);
        assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
        srv_deployment_release(&got);
    }
    pthread_barrier_destroy(&go);
    srv_store_close(s[0]);
    srv_store_close(s[1]);
}

/* ---- contract: rollouts ---------------------------------------------------------------------- */

static struct srv_rollout rollout_in(void)
{
    struct srv_rollout r;
    memset(&r, 0, sizeof(r));
    r.deployment_id = 424242; /* ignored: the store sets it */
    r.policy = "{\"phases\":[{\"size\":1},{\"size\":100,\"percent\":true}]}";
    r.state = SRV_ROLLOUT_RUNNING;
    r.phase = 0;
    r.released = 1;
    r.phase_started_at = T0 + 1000;
    r.reason = "started";
    r.updated_at = T0 + 1000;
    return r;
}

/* A rollout deployment of ids[i] at seqs[i]; the rollout as rollout_in() gives it. */
static int64_t add_rollout(struct srv_store *s, int64_t artifact_id, const int64_t *ids,
                           const int64_t *seqs, size_t n, const bool *skipped)
{
    struct srv_deployment dep = deployment_in("staged", artifact_id);
    struct srv_rollout r = rollout_in();
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_create_rollout(s, &dep, ids, skipped, seqs, n,
                                                          "wrong type", &r, &d);
    if (err)
        print_error("add rollout: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    return dep.id;
}

static struct srv_rollout rollout_of(struct srv_store *s, int64_t dep)
{
    struct srv_rollout r;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_rollout_get(s, dep, &r, &d);
    if (err)
        print_error("rollout %lld: %s\n", (long long)dep, d.msg);
    assert_int_equal(err, OT_OK);
    return r;
}

static size_t deployment_count(struct srv_store *s)
{
    struct srv_deployment *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_list(s, 0, 0, SRV_LIST_MAX, &list, &n, NULL), OT_OK);
    srv_deployment_list_free(list, n);
    return n;
}

static void test_rollout_create(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[4];
    for (int i = 0; i < 4; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t g = generation(s);

    struct srv_deployment dep = deployment_in("staged", art);
    struct srv_rollout in = rollout_in();
    in.state = SRV_ROLLOUT_WAITING_APPROVAL;
    in.phase = 2;
    in.released = 3;
    in.phase_ready_at = T0 + 1500;
    in.base_failed = 3;
    in.base_finished = 8;
    in.updated_at = T0 + 1600;
    const int64_t seqs[] = {3, 1, 4, 2};
    const bool skipped[] = {false, false, true, false};
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, skipped, seqs, 4, "gw-3",
                                                         &in, &d),
                     OT_OK);
    assert_true(dep.id > 0);
    assert_int_equal(dep.status, SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(dep.ndevices, 4);
    assert_int_equal(in.deployment_id, 424242); /* the caller's struct is not touched */
    assert_true(generation(s) != g);

    for (int i = 0; i < 4; i++) {
        struct srv_dd row = dd_of(s, dep.id, dev[i]);
        assert_int_equal(row.seq, seqs[i]);
        assert_int_equal(row.status, skipped[i] ? SRV_DD_SKIPPED : SRV_DD_PENDING);
        srv_dd_release(&row);
    }
    struct srv_dd *rows = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_devices(s, dep.id, 0, 10, &rows, &n, &d), OT_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].device_id, dev[i]);
        assert_int_equal(rows[i].seq, seqs[i]);
    }
    srv_dd_list_free(rows, n);
    struct srv_dd next;
    assert_int_equal(srv_store_device_next(s, dev[1], &next, &d), OT_OK);
    assert_int_equal(next.deployment_id, dep.id);
    assert_int_equal(next.seq, 1);
    srv_dd_release(&next);

    struct srv_rollout got = rollout_of(s, dep.id);
    assert_int_equal(got.deployment_id, dep.id);
    assert_string_equal(got.policy, in.policy);
    assert_int_equal(got.state, SRV_ROLLOUT_WAITING_APPROVAL);
    assert_int_equal(got.phase, 2);
    assert_int_equal(got.released, 3);
    assert_int_equal(got.phase_started_at, T0 + 1000);
    assert_int_equal(got.phase_ready_at, T0 + 1500);
    assert_int_equal(got.base_failed, 3);
    assert_int_equal(got.base_finished, 8);
    assert_string_equal(got.reason, "started");
    assert_int_equal(got.updated_at, T0 + 1600);
    srv_rollout_release(&got);
    srv_rollout_release(&got);
    srv_rollout_release(NULL);

    /* A NULL reason is stored as "". */
    in.reason = NULL;
    struct srv_deployment dep2 = deployment_in("no reason", art);
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep2, dev, NULL, seqs, 4, NULL, &in,
                                                         &d),
                     OT_OK);
    got = rollout_of(s, dep2.id);
    assert_string_equal(got.reason, "");
    srv_rollout_release(&got);

    /* Every device skipped: finished at once, with its rollout row all the same. */
    const bool all[] = {true, true};
    const int64_t two[] = {2, 1};
    struct srv_deployment done = deployment_in("nothing to do", art);
    in = rollout_in();
    assert_int_equal(srv_store_deployment_create_rollout(s, &done, dev, all, two, 2, "no", &in,
                                                         &d),
                     OT_OK);
    assert_int_equal(done.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(dep_status(s, done.id), SRV_DEPLOYMENT_FINISHED);
    got = rollout_of(s, done.id);
    assert_int_equal(got.deployment_id, done.id);
    srv_rollout_release(&got);
    struct srv_dd row = dd_of(s, done.id, dev[0]);
    assert_int_equal(row.seq, 2); /* a skipped device keeps its seq */
    srv_dd_release(&row);

    /* Without a rollout: seq 0 everywhere, and no rollout to find. */
    int64_t plain = add_deployment(s, art, dev, 4, NULL);
    assert_int_equal(srv_store_deployment_devices(s, plain, 0, 10, &rows, &n, &d), OT_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rows[i].seq, 0);
    srv_dd_list_free(rows, n);
    row = dd_of(s, plain, dev[3]);
    assert_int_equal(row.seq, 0);
    srv_dd_release(&row);
    assert_int_equal(srv_store_rollout_get(s, plain, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_get(s, 999999, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_get(s, plain, NULL, &d), OT_ERR_INVALID);
    srv_store_close(s);
}

/* Bad orders and rollouts are refused before anything is written. */
static void test_rollout_create_validation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t g = generation(s);
    struct srv_deployment dep = deployment_in("staged", art);
    struct srv_rollout r = rollout_in();

    static const int64_t bad_seqs[][3] = {
        {1, 1, 2}, /* twice */
        {0, 1, 2}, /* 0 is "no rollout" */
        {1, 2, 4}, /* past n */
        {-1, 1, 2},
        {3, 3, 3},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_seqs); i++) {
        d.msg[0] = '\0';
        assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, bad_seqs[i], 3,
                                                             NULL, &r, &d),
                         OT_ERR_INVALID);
        assert_non_null(strstr(d.msg, "seq"));
    }
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, NULL, 3, NULL, &r,
                                                         &d),
                     OT_ERR_INVALID);
    const int64_t seqs[] = {2, 3, 1};
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, seqs, 3, NULL, NULL,
                                                         &d),
                     OT_ERR_INVALID);

    _cleanup_free_ char *policy_max = repeat('p', SRV_ROLLOUT_POLICY_MAX);
    _cleanup_free_ char *policy_long = repeat('p', SRV_ROLLOUT_POLICY_MAX + 1);
    _cleanup_free_ char *reason_max = repeat('r', SRV_ROLLOUT_REASON_MAX - 1);
    _cleanup_free_ char *reason_long = repeat('r', SRV_ROLLOUT_REASON_MAX);
    struct {
        struct srv_rollout r;
        enum ot_err want;
    } bad[16];
    size_t n = 0;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        bad[i].r = rollout_in();
    bad[n].r.policy = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.policy = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.policy = policy_long;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].r.reason = reason_long;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].r.state = 0;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.state = SRV_ROLLOUT__MAX;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.phase = -1;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.released = -1;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.updated_at = -1;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].r.phase_started_at = -1;
    bad[n++].want = OT_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        d.msg[0] = '\0';
        assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, seqs, 3, NULL,
                                                             &bad[i].r, &d),
                         bad[i].want);
        assert_true(d.msg[0] != '\0');
    }
    /* The checks of a plain create apply too. */
    int64_t unknown[] = {dev[0], 999999, dev[2]};
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, unknown, NULL, seqs, 3, NULL,
                                                         &r, &d),
                     OT_ERR_INVALID);
    int64_t twice[] = {dev[0], dev[1], dev[0]};
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, twice, NULL, seqs, 3, NULL, &r,
                                                         &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, seqs, 0, NULL, &r,
                                                         &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_deployment_create_rollout(s, NULL, dev, NULL, seqs, 3, NULL, &r,
                                                         &d),
                     OT_ERR_INVALID);
    dep.artifact_id = 999999;
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, seqs, 3, NULL, &r,
                                                         &d),
                     OT_ERR_NOENT);
    assert_int_equal(dep.id, 0);
    assert_int_equal(deployment_count(s), 0);
    assert_int_equal(generation(s), g);

    /* The limits themselves are fine. */
    dep.artifact_id = art;
    r.policy = policy_max;
    r.reason = reason_max;
    assert_int_equal(srv_store_deployment_create_rollout(s, &dep, dev, NULL, seqs, 3, NULL, &r,
                                                         &d),
                     OT_OK);
    struct srv_rollout got = rollout_of(s, dep.id);
    assert_string_equal(got.policy, policy_max);
    assert_string_equal(got.reason, reason_max);
    srv_rollout_release(&got);
    assert_int_equal(deployment_count(s), 1);
    srv_store_close(s);
}

static void test_rollout_update_and_events(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seqs[] = {1, 2, 3};
    int64_t dep = add_rollout(s, art, dev, seqs, 3, NULL);
    int64_t other = add_rollout(s, art, dev, seqs, 2, NULL);
    struct srv_rollout_event *ev = NULL;
    size_t n = 9;
    assert_int_equal(srv_store_rollout_events(s, dep, 0, 10, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_rollout_event_list_free(ev, n);

    int64_t g = generation(s);
    struct srv_rollout r = rollout_of(s, dep);
    struct srv_rollout w = r;
    w.policy = "{\"changed\":true}"; /* not written by an update */
    w.state = SRV_ROLLOUT_PAUSED;
    w.phase = 1;
    w.released = 3;
    w.phase_started_at = T0 + 1900;
    w.phase_ready_at = T0 + 1950;
    w.base_failed = 11;
    w.base_finished = 40;
    w.reason = "paused by token:1 (admin)";
    w.updated_at = T0 + 2000;
    assert_int_equal(srv_store_rollout_update(s, &w, "pause", "by an operator", &d), OT_OK);
    srv_rollout_release(&r);
    r = rollout_of(s, dep);
    assert_string_equal(r.policy, "{\"phases\":[{\"size\":1},{\"size\":100,\"percent\":true}]}");
    assert_int_equal(r.state, SRV_ROLLOUT_PAUSED);
    assert_int_equal(r.phase, 1);
    assert_int_equal(r.released, 3);
    assert_int_equal(r.phase_started_at, T0 + 1900);
    assert_int_equal(r.phase_ready_at, T0 + 1950);
    assert_int_equal(r.base_failed, 11);
    assert_int_equal(r.base_finished, 40);
    assert_string_equal(r.reason, "paused by token:1 (admin)");
    assert_int_equal(r.updated_at, T0 + 2000);
    srv_rollout_release(&r);
    assert_int_equal(generation(s), g); /* a rollout's own state is not a generation change */

    /* Without a kind: no event; a NULL reason and message are "". */
    w.state = SRV_ROLLOUT_RUNNING;
    w.reason = NULL;
    w.updated_at = T0 + 2100;
    assert_int_equal(srv_store_rollout_update(s, &w, NULL, "ignored", &d), OT_OK);
    r = rollout_of(s, dep);
    assert_int_equal(r.state, SRV_ROLLOUT_RUNNING);
    assert_string_equal(r.reason, "");
    srv_rollout_release(&r);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0 + 3000, "advance", "phase 2", &d),
                     OT_OK);
    assert_int_equal(srv_store_rollout_event_add(s, other, T0 + 3001, "release", "elsewhere", &d),
                     OT_OK);
    w.updated_at = T0 + 3100;
    assert_int_equal(srv_store_rollout_update(s, &w, "resume", NULL, &d), OT_OK);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0 + 3200, "release", NULL, &d), OT_OK);

    assert_int_equal(srv_store_rollout_events(s, dep, 0, SRV_LIST_MAX, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 4); /* oldest first, the other rollout's not among them */
    static const char *const kinds[] = {"pause", "advance", "resume", "release"};
    static const char *const messages[] = {"by an operator", "phase 2", "", ""};
    static const int64_t ats[] = {T0 + 2000, T0 + 3000, T0 + 3100, T0 + 3200};
    int64_t ids[4];
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ev[i].kind, kinds[i]);
        assert_string_equal(ev[i].message, messages[i]);
        assert_int_equal(ev[i].at, ats[i]);
        assert_true(i == 0 || ev[i].id > ev[i - 1].id);
        ids[i] = ev[i].id;
    }
    srv_rollout_event_list_free(ev, n);
    assert_int_equal(srv_store_rollout_events(s, dep, 0, 2, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ev[1].id, ids[1]);
    srv_rollout_event_list_free(ev, n);
    assert_int_equal(srv_store_rollout_events(s, dep, ids[1], 2, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].id, ids[2]);
    assert_int_equal(ev[1].id, ids[3]);
    srv_rollout_event_list_free(ev, n);
    assert_int_equal(srv_store_rollout_events(s, dep, ids[3], 2, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_rollout_event_list_free(ev, n);
    srv_rollout_event_list_free(NULL, 0);
    assert_int_equal(srv_store_rollout_events(s, other, 0, 10, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].message, "elsewhere");
    srv_rollout_event_list_free(ev, n);

    /* Limits and arguments. */
    assert_int_equal(srv_store_rollout_events(s, dep, 0, 0, &ev, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_rollout_events(s, dep, 0, SRV_LIST_MAX + 1, &ev, &n, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_rollout_events(s, dep, 0, 10, NULL, &n, &d), OT_ERR_INVALID);
    _cleanup_free_ char *kind_max = repeat('k', SRV_ROLLOUT_KIND_MAX - 1);
    _cleanup_free_ char *kind_long = repeat('k', SRV_ROLLOUT_KIND_MAX);
    _cleanup_free_ char *msg_max = repeat('m', SRV_ROLLOUT_REASON_MAX - 1);
    _cleanup_free_ char *msg_long = repeat('m', SRV_ROLLOUT_REASON_MAX);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0, "", "x", &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0, NULL, "x", &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0, kind_long, "x", &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0, "x", msg_long, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_event_add(s, dep, -1, "x", "x", &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_update(s, &w, kind_long, "x", &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_update(s, &w, "x", msg_long, &d), OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_update(s, NULL, "x", "x", &d), OT_ERR_INVALID);
    struct srv_rollout bad = w;
    bad.state = SRV_ROLLOUT__MAX;
    assert_int_equal(srv_store_rollout_update(s, &bad, NULL, NULL, &d), OT_ERR_INVALID);
    bad = w;
    bad.reason = msg_long;
    assert_int_equal(srv_store_rollout_update(s, &bad, NULL, NULL, &d), OT_ERR_LIMIT);
    bad = w;
    bad.phase = -1;
    assert_int_equal(srv_store_rollout_update(s, &bad, NULL, NULL, &d), OT_ERR_INVALID);
    r = rollout_of(s, dep); /* none of them wrote anything */
    assert_int_equal(r.updated_at, T0 + 3100);
    srv_rollout_release(&r);
    assert_int_equal(srv_store_rollout_event_add(s, dep, T0 + 4000, kind_max, msg_max, &d), OT_OK);
    assert_int_equal(srv_store_rollout_events(s, dep, ids[3], 10, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].kind, kind_max);
    assert_string_equal(ev[0].message, msg_max);
    srv_rollout_event_list_free(ev, n);

    /* No rollout: a deployment without one, or none at all. */
    int64_t plain = add_deployment(s, art, dev, 1, NULL);
    w.deployment_id = plain;
    assert_int_equal(srv_store_rollout_update(s, &w, "pause", "x", &d), OT_ERR_NOENT);
    w.deployment_id = 999999;
    assert_int_equal(srv_store_rollout_update(s, &w, NULL, NULL, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_event_add(s, plain, T0, "x", "x", &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_event_add(s, 999999, T0, "x", "x", &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_events(s, plain, 0, 10, &ev, &n, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_rollout_events(s, 999999, 0, 10, &ev, &n, &d), OT_ERR_NOENT);
    srv_store_close(s);

    s = open_ok(f); /* kept */
    assert_int_equal(srv_store_rollout_events(s, dep, 0, SRV_LIST_MAX, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 5);
    srv_rollout_event_list_free(ev, n);
    srv_store_close(s);
}

static size_t approve(struct srv_store *s, int64_t dep, int64_t phase, const char *who,
                      enum ot_err want)
{
    size_t count = 99;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_rollout_approve(s, dep, phase, who, T0 + 10, &count, &d);
    if (err != want)
        print_error("approve: %s\n", d.msg);
    assert_int_equal(err, want);
    return count;
}

static size_t approvals(struct srv_store *s, int64_t dep, int64_t phase)
{
    size_t count = 99;
    assert_int_equal(srv_store_rollout_approvals(s, dep, phase, &count, NULL), OT_OK);
    return count;
}

static void test_rollout_approvals(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seqs[] = {2, 1};
    int64_t dep = add_rollout(s, art, dev, seqs, 2, NULL);
    int64_t other = add_rollout(s, art, dev, seqs, 2, NULL);
    assert_int_equal(approvals(s, dep, 0), 0);

    assert_int_equal(approve(s, dep, 0, "token:1 (alice)", OT_OK), 1);
    assert_int_equal(approve(s, dep, 0, "token:2 (bob)", OT_OK), 2);
    /* The same approver again: refused, and the count still comes back. */
    assert_int_equal(approve(s, dep, 0, "token:1 (alice)", OT_ERR_EXISTS), 2);
    /* Another phase, another rollout: counted apart. */
    assert_int_equal(approve(s, dep, 1, "token:1 (alice)", OT_OK), 1);
    assert_int_equal(approve(s, other, 0, "token:1 (alice)", OT_OK), 1);
    assert_int_equal(approvals(s, dep, 0), 2);
    assert_int_equal(approvals(s, dep, 1), 1);
    assert_int_equal(approvals(s, dep, 2), 0);
    assert_int_equal(approvals(s, other, 0), 1);

    /* No rollout. */
    int64_t plain = add_deployment(s, art, dev, 1, NULL);
    assert_int_equal(approvals(s, plain, 0), 0);
    assert_int_equal(approvals(s, 999999, 0), 0);
    assert_int_equal(approve(s, plain, 0, "token:1 (alice)", OT_ERR_NOENT), 99);
    assert_int_equal(approve(s, 999999, 0, "token:1 (alice)", OT_ERR_NOENT), 99);

    /* Arguments. */
    _cleanup_free_ char *who_max = repeat('w', SRV_AUDIT_FIELD_MAX);
    _cleanup_free_ char *who_long = repeat('w', SRV_AUDIT_FIELD_MAX + 1);
    size_t count = 0;
    assert_int_equal(srv_store_rollout_approve(s, dep, 0, "", T0, &count, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approve(s, dep, 0, NULL, T0, &count, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approve(s, dep, 0, who_long, T0, &count, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_approve(s, dep, -1, "x", T0, &count, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approve(s, dep, 0, "x", -1, &count, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approve(s, dep, 0, "x", T0, NULL, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approvals(s, dep, 0, NULL, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_approvals(s, dep, -1, &count, &d), OT_ERR_INVALID);
    assert_int_equal(approvals(s, dep, 0), 2);
    assert_int_equal(approve(s, dep, 0, who_max, OT_OK), 3);
    srv_store_close(s);

    s = open_ok(f); /* kept */
    assert_int_equal(approvals(s, dep, 0), 3);
    assert_int_equal(approve(s, dep, 0, "token:2 (bob)", OT_ERR_EXISTS), 3);
    srv_store_close(s);
}

/* Two connections (two otterd instances) approve one phase at the same moment: the second to
 * commit counts the first's approval; the same approver twice is recorded once. */
struct approver {
    pthread_t thread;
    struct srv_store *s;
    pthread_barrier_t *go;
    int64_t dep, phase;
    const char *who;
    size_t count;
    enum ot_err err;
    char msg[OT_DIAG_MSG_MAX];
};

static void *race_approve(void *arg)
{
    struct approver *a = arg;
    struct ot_diag d = {0};
    pthread_barrier_wait(a->go);
    a->err = srv_store_rollout_approve(a->s, a->dep, a->phase, a->who, T0, &a->count, &d);
    memcpy(a->msg, d.msg, sizeof(a->msg));
    return NULL;
}

static void race_approvers(struct approver a[2])
{
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&a[i].thread, NULL, race_approve, &a[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(a[i].thread, NULL), 0);
        if (a[i].err && a[i].err != OT_ERR_EXISTS)
            print_error("approver %d: %s\n", i, a[i].msg);
    }
}

static void test_rollout_approve_concurrent(void **state)
{
    struct fixture *f = *state;
    enum { ROUNDS = 20 };
    struct srv_store *s[2] = {open_ok(f), open_ok(f)};
    int64_t art = add_artifact(s[0], "rootfs", "2.0", 1);
    int64_t dev = add_device(s[0], 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seq = 1;
    int64_t dep = add_rollout(s[0], art, &dev, &seq, 1, NULL);
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
    for (int round = 0; round < ROUNDS; round++) {
        struct approver a[2] = {
            {.s = s[0], .go = &go, .dep = dep, .phase = round, .who = "token:1 (alice)"},
            {.s = s[1], .go = &go, .dep = dep, .phase = round, .who = "token:2 (bob)"},
        };
        race_approvers(a);
        assert_int_equal(a[0].err, OT_OK);
        assert_int_equal(a[1].err, OT_OK);
        assert_int_equal(OT_MAX(a[0].count, a[1].count), 2);
        assert_int_equal(OT_MIN(a[0].count, a[1].count), 1);

        a[0].phase = a[1].phase = round + ROUNDS; /* the same approver from both */
        a[1].who = a[0].who;
        race_approvers(a);
        assert_true((a[0].err == OT_OK) != (a[1].err == OT_OK));
        assert_int_equal(a[0].err == OT_OK ? a[1].err : a[0].err, OT_ERR_EXISTS);
        assert_int_equal(a[0].count, 1);
        assert_int_equal(a[1].count, 1);
    }
    pthread_barrier_destroy(&go);
    srv_store_close(s[0]);
    srv_store_close(s[1]);
}

static void assert_counts(struct srv_store *s, int64_t dep, int64_t from, int64_t to,
                          const uint64_t want[SRV_DD__MAX])
{
    uint64_t counts[SRV_DD__MAX];
    memset(counts, 0xff, sizeof(counts));
    struct ot_diag d = {0};
    assert_int_equal(srv_store_rollout_counts(s, dep, from, to, counts, &d), OT_OK);
    for (int i = 0; i < SRV_DD__MAX; i++)
        if (counts[i] != want[i])
            fail_msg("counts(%lld, %lld)[%d] = %llu, want %llu", (long long)from, (long long)to,
                     i, (unsigned long long)counts[i], (unsigned long long)want[i]);
}

static void test_rollout_counts(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[6];
    for (int i = 0; i < 6; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    /* by seq: 1 dev[4], 2 dev[0], 3 dev[5], 4 dev[2], 5 dev[1], 6 dev[3] (skipped) */
    const int64_t seqs[] = {2, 5, 4, 6, 1, 3};
    const bool skipped[6] = {[3] = true};
    int64_t dep = add_rollout(s, art, dev, seqs, 6, skipped);
    int64_t other = add_rollout(s, art, dev, seqs, 6, NULL); /* the same devices elsewhere */
    report(s, dep, dev[4], SRV_DD_SUCCESS, T0 + 1);     /* seq 1 */
    report(s, dep, dev[0], SRV_DD_FAILURE, T0 + 2);     /* seq 2 */
    report(s, dep, dev[5], SRV_DD_DOWNLOADING, T0 + 3); /* seq 3 */
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 4);     /* seq 5 */
    report(s, other, dev[2], SRV_DD_ROLLED_BACK, T0 + 5);

    assert_counts(s, dep, 0, 2,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_SUCCESS] = 1, [SRV_DD_FAILURE] = 1});
    assert_counts(s, dep, 2, 4,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_DOWNLOADING] = 1, [SRV_DD_PENDING] = 1});
    assert_counts(s, dep, 4, 6,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_SUCCESS] = 1, [SRV_DD_SKIPPED] = 1});
    assert_counts(s, dep, 0, 6,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_PENDING] = 1, [SRV_DD_DOWNLOADING] = 1,
                                                [SRV_DD_SUCCESS] = 2, [SRV_DD_FAILURE] = 1,
                                                [SRV_DD_SKIPPED] = 1});
    assert_counts(s, dep, -5, 1000,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_PENDING] = 1, [SRV_DD_DOWNLOADING] = 1,
                                                [SRV_DD_SUCCESS] = 2, [SRV_DD_FAILURE] = 1,
                                                [SRV_DD_SKIPPED] = 1});
    static const uint64_t none[SRV_DD__MAX] = {0};
    assert_counts(s, dep, 3, 3, none);
    assert_counts(s, dep, 4, 2, none);
    assert_counts(s, dep, 6, 100, none);
    assert_counts(s, other, 3, 4,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_ROLLED_BACK] = 1});
    assert_counts(s, 999999, 0, 100, none);
    /* Rows without a rollout are seq 0: outside every range that starts at 0. */
    int64_t plain = add_deployment(s, art, dev, 6, NULL);
    assert_counts(s, plain, 0, 100, none);
    assert_counts(s, plain, -1, 0, (const uint64_t[SRV_DD__MAX]){[SRV_DD_PENDING] = 6});
    assert_int_equal(srv_store_rollout_counts(s, dep, 0, 1, NULL, &d), OT_ERR_INVALID);
    srv_store_close(s);
}

static void test_rollout_timeout(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[5];
    for (int i = 0; i < 5; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seqs[] = {1, 2, 3, 4, 5};
    int64_t dep = add_rollout(s, art, dev, seqs, 5, NULL); /* rows updated at T0 + 1000 */
    report(s, dep, dev[0], SRV_DD_SUCCESS, T0 + 1100);     /* final: left alone */
    report(s, dep, dev[1], SRV_DD_DOWNLOADING, T0 + 1500); /* heard from lately */
    report(s, dep, dev[2], SRV_DD_INSTALLING, T0 + 1100);  /* silent since T0 + 1100 */
    /* dev[3]: pending since T0 + 1000 (never picked the update up: does not time out);
     * dev[4] (seq 5) not released */

    int64_t g = generation(s);
    size_t n = 99;
    assert_int_equal(srv_store_rollout_timeout(s, dep, 4, T0 + 1200, T0 + 2000, "timed out", &n,
                                               &d),
                     OT_OK);
    assert_int_equal(n, 1);
    assert_true(generation(s) != g);
    struct srv_dd row = dd_of(s, dep, dev[2]);
    assert_int_equal(row.status, SRV_DD_FAILURE);
    assert_string_equal(row.message, "timed out");
    assert_int_equal(row.updated_at, T0 + 2000);
    assert_int_equal(row.progress, 50);
    srv_dd_release(&row);
    row = dd_of(s, dep, dev[3]);
    assert_int_equal(row.status, SRV_DD_PENDING);
    srv_dd_release(&row);
    assert_int_equal(dd_status(s, dep, dev[0]), SRV_DD_SUCCESS);
    assert_int_equal(dd_status(s, dep, dev[1]), SRV_DD_DOWNLOADING);
    assert_int_equal(dd_status(s, dep, dev[4]), SRV_DD_PENDING);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);

    /* An event per row, as a report leaves. */
    struct srv_dd_event *ev = NULL;
    size_t nev = 0;
    assert_int_equal(srv_store_dd_events(s, dep, dev[2], 0, 10, &ev, &nev, &d), OT_OK);
    assert_int_equal(nev, 2);
    assert_int_equal(ev[1].status, SRV_DD_FAILURE);
    assert_int_equal(ev[1].at, T0 + 2000);
    assert_int_equal(ev[1].progress, 50);
    assert_string_equal(ev[1].message, "timed out");
    assert_null(ev[1].log);
    srv_dd_event_list_free(ev, nev);
    assert_int_equal(srv_store_dd_events(s, dep, dev[3], 0, 10, &ev, &nev, &d), OT_OK);
    assert_int_equal(nev, 0);
    srv_dd_event_list_free(ev, nev);
    assert_int_equal(srv_store_dd_events(s, dep, dev[1], 0, 10, &ev, &nev, &d), OT_OK);
    assert_int_equal(nev, 1); /* its own report only */
    srv_dd_event_list_free(ev, nev);
    /* A timed-out device's late report changes nothing. */
    bool applied = true;
    enum srv_dd_status current = 0;
    assert_int_equal(srv_store_dd_report(s, dep, dev[2], SRV_DD_SUCCESS, 100, NULL, NULL,
                                         T0 + 2050, &applied, &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_int_equal(current, SRV_DD_FAILURE);

    /* Nothing left to time out: nothing changes, the generation included. */
    g = generation(s);
    assert_int_equal(srv_store_rollout_timeout(s, dep, 4, T0 + 1200, T0 + 2100, "again", &n, &d),
                     OT_OK);
    assert_int_equal(n, 0);
    assert_int_equal(generation(s), g);

    /* The last open row timing out finishes the deployment. */
    report(s, dep, dev[3], SRV_DD_SUCCESS, T0 + 2150);
    report(s, dep, dev[4], SRV_DD_SUCCESS, T0 + 2200);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(srv_store_rollout_timeout(s, dep, 5, T0 + 3000, T0 + 3100, NULL, &n, &d),
                     OT_OK);
    assert_int_equal(n, 1);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 3100);
    srv_deployment_release(&got);
    assert_true(generation(s) != g);
    row = dd_of(s, dep, dev[1]);
    assert_int_equal(row.status, SRV_DD_FAILURE);
    assert_string_equal(row.message, "");
    srv_dd_release(&row);

    /* Rows without a rollout (seq 0) never time out this way. */
    int64_t plain = add_deployment(s, art, dev, 2, NULL);
    g = generation(s);
    assert_int_equal(srv_store_rollout_timeout(s, plain, 1000, T0 + 100000, T0 + 100000, "x", &n,
                                               &d),
                     OT_OK);
    assert_int_equal(n, 0);
    assert_int_equal(dd_status(s, plain, dev[0]), SRV_DD_PENDING);
    assert_int_equal(generation(s), g);
    assert_int_equal(srv_store_rollout_timeout(s, 999999, 10, T0, T0, "x", &n, &d), OT_OK);
    assert_int_equal(n, 0);

    /* Arguments. */
    _cleanup_free_ char *msg_long = repeat('m', SRV_DD_MESSAGE_MAX + 1);
    assert_int_equal(srv_store_rollout_timeout(s, dep, 1, T0, T0, msg_long, &n, &d),
                     OT_ERR_LIMIT);
    assert_int_equal(srv_store_rollout_timeout(s, dep, 1, T0, -1, "x", &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_timeout(s, dep, 1, T0, T0, "x", NULL, &d),
                     OT_ERR_INVALID);
    srv_store_close(s);
}

static void test_rollout_list_active(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_rollout *list = NULL;
    size_t n = 9;
    assert_int_equal(srv_store_rollout_list_active(s, &list, &n, &d), OT_OK);
    assert_int_equal(n, 0);
    srv_rollout_list_free(list, n);
    srv_rollout_list_free(NULL, 0);

    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seqs[] = {1, 2};
    const bool all[] = {true, true};
    int64_t first = add_rollout(s, art, dev, seqs, 2, NULL);
    int64_t cancelled = add_rollout(s, art, dev, seqs, 2, NULL);
    int64_t finished = add_rollout(s, art, dev, seqs, 1, NULL);
    int64_t skipped = add_rollout(s, art, dev, seqs, 2, all); /* finished at creation */
    int64_t plain = add_deployment(s, art, dev, 2, NULL);     /* active, no rollout */
    int64_t last = add_rollout(s, art, dev, seqs, 2, NULL);
    assert_int_equal(srv_store_deployment_cancel(s, cancelled, T0 + 2000, &d), OT_OK);
    report(s, finished, dev[0], SRV_DD_SUCCESS, T0 + 2000);
    assert_int_equal(dep_status(s, finished), SRV_DEPLOYMENT_FINISHED);
    (void)skipped;
    (void)plain;

    /* Any rollout state counts: the deployment decides. */
    struct srv_rollout w = rollout_of(s, last);
    w.state = SRV_ROLLOUT_DONE;
    assert_int_equal(srv_store_rollout_update(s, &w, NULL, NULL, &d), OT_OK);
    srv_rollout_release(&w);

    assert_int_equal(srv_store_rollout_list_active(s, &list, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].deployment_id, first);
    assert_int_equal(list[0].state, SRV_ROLLOUT_RUNNING);
    assert_string_equal(list[0].policy, rollout_in().policy);
    assert_string_equal(list[0].reason, "started");
    assert_int_equal(list[0].released, 1);
    assert_int_equal(list[1].deployment_id, last);
    assert_int_equal(list[1].state, SRV_ROLLOUT_DONE);
    srv_rollout_list_free(list, n);

    assert_int_equal(srv_store_rollout_list_active(s, NULL, &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_rollout_list_active(s, &list, NULL, &d), OT_ERR_INVALID);
    srv_store_close(s);
}

/* A rollout over more devices than one statement's batch (the PostgreSQL back end sends rows in
 * batches of 10,000): every row gets its own seq. */
#define ROLLOUT_FLEET 25000

static void test_rollout_create_large(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    f->be->seed_devices(f, ROLLOUT_FLEET);
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t *ids = malloc(ROLLOUT_FLEET * sizeof(*ids));
    int64_t *seqs = malloc(ROLLOUT_FLEET * sizeof(*seqs));
    assert_non_null(ids);
    assert_non_null(seqs);
    struct srv_device_filter first = {.limit = 1};
    struct srv_device *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_device_list(s, &first, &list, &n, NULL), OT_OK);
    assert_int_equal(n, 1);
    int64_t base = list[0].id;
    srv_device_list_free(list, n);
    for (int i = 0; i < ROLLOUT_FLEET; i++) {
        ids[i] = base + i;
        seqs[i] = ROLLOUT_FLEET - i; /* the last device first */
    }
    int64_t dep = add_rollout(s, art, ids, seqs, ROLLOUT_FLEET, NULL);
    static const int probe[] = {0, 1, 9999, 10000, 10001, 19999, 20000, ROLLOUT_FLEET - 1};
    for (size_t i = 0; i < OT_ARRAY_SIZE(probe); i++) {
        struct srv_dd row = dd_of(s, dep, ids[probe[i]]);
        assert_int_equal(row.seq, ROLLOUT_FLEET - probe[i]);
        srv_dd_release(&row);
    }
    report(s, dep, ids[ROLLOUT_FLEET - 1], SRV_DD_SUCCESS, T0 + 1); /* seq 1 */
    assert_counts(s, dep, 0, 100,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_PENDING] = 99, [SRV_DD_SUCCESS] = 1});
    assert_counts(s, dep, 100, ROLLOUT_FLEET,
                  (const uint64_t[SRV_DD__MAX]){[SRV_DD_PENDING] = ROLLOUT_FLEET - 100});
    free(ids);
    free(seqs);
    srv_store_close(s);
}

static void raw_text_is(sqlite3 *db, const char *sql, const char *want)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), want);
    sqlite3_finalize(st);
}

/* Undoes exactly migration 4 by hand: the database is then as an otterd of schema version 3 left
 * it (extend when a later migration builds on its tables). SQLite has no ALTER TABLE for the
 * status CHECK either way: the old rule goes back with the same documented edit of sqlite_schema
 * that migration 4 makes, in reverse. */
static void undo_migration_4(const struct fixture *f)
{
    static const char common[] = "DROP TABLE deployment_templates;"
                                 " ALTER TABLE artifacts DROP COLUMN channel;"
                                 " DELETE FROM schema_migrations WHERE version = 4;";
    if (f->be == PG) {
        f->be->exec(f, "ALTER TABLE deployment_devices DROP COLUMN attempts,"
                       " DROP CONSTRAINT deployment_devices_status_check,"
                       " ADD CONSTRAINT deployment_devices_status_check"
                       " CHECK (status BETWEEN 1 AND 10);");
        f->be->exec(f, common);
        return;
    }
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "BEGIN; ALTER TABLE deployment_devices DROP COLUMN attempts;");
    raw_exec(db, common);
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA schema_version = %lld",
             (long long)raw_int(db, "PRAGMA schema_version") + 1);
    raw_exec(db, "PRAGMA writable_schema = ON;"
                 " UPDATE sqlite_schema SET sql = replace(sql, 'CHECK (status BETWEEN 1 AND 11)',"
                 " 'CHECK (status BETWEEN 1 AND 10)')"
                 " WHERE type = 'table' AND name = 'deployment_devices'");
    assert_int_equal(sqlite3_changes(db), 1);
    raw_exec(db, bump);
    raw_exec(db, "PRAGMA writable_schema = OFF; COMMIT");
    raw_text_is(db, "PRAGMA integrity_check", "ok");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A database at schema version 2 (made here by undoing migrations 4 and 3 by hand) is migrated:
 * its rows are kept, with seq 0, and rollouts work. */
static void test_rollout_migration(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    assert_int_equal(v, 4);
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 2, NULL);
    report(s, dep, dev[0], SRV_DD_INSTALLING, T0 + 5);
    int64_t g = generation(s);
    srv_store_close(s);
    undo_migration_4(f);
    /* Undoes exactly migration 3. */
    f->be->exec(f, "DROP TABLE rollout_approvals; DROP TABLE rollout_events; DROP TABLE rollouts;"
                   " DROP INDEX deployment_devices_seq;"
                   " ALTER TABLE deployment_devices DROP COLUMN seq;"
                   " DELETE FROM schema_migrations WHERE version = 3;");

    s = open_ok(f);
    assert_int_equal(srv_store_schema_version(s), 4);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_INSTALLING);
    assert_int_equal(row.updated_at, T0 + 5);
    assert_int_equal(row.seq, 0);
    srv_dd_release(&row);
    assert_int_equal(dd_status(s, dep, dev[1]), SRV_DD_PENDING);
    assert_int_equal(generation(s), g);
    struct srv_rollout r;
    assert_int_equal(srv_store_rollout_get(s, dep, &r, NULL), OT_ERR_NOENT);
    const int64_t seqs[] = {2, 1};
    int64_t staged = add_rollout(s, art, dev, seqs, 2, NULL);
    row = dd_of(s, staged, dev[0]);
    assert_int_equal(row.seq, 2);
    srv_dd_release(&row);
    r = rollout_of(s, staged);
    assert_int_equal(r.state, SRV_ROLLOUT_RUNNING);
    srv_rollout_release(&r);
    srv_store_close(s);
}

/* ---- contract: continuous deployment (schema version 4) -------------------------------------- */

/* A report through srv_store_dd_report_retry that must be applied; *ret_retried is returned. */
static bool report_retry(struct srv_store *s, int64_t dep, int64_t dev, enum srv_dd_status st,
                         const char *message, int64_t at, uint32_t retries)
{
    bool applied = false, retried = true;
    enum srv_dd_status current = 0;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_dd_report_retry(s, dep, dev, st, 70, message, "the log", at,
                                                retries, &applied, &retried, &current, &d);
    if (err)
        print_error("report: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    assert_true(applied);
    assert_int_equal(current, retried ? SRV_DD_PENDING : st);
    return retried;
}

static struct srv_dd_event last_event(struct srv_store *s, int64_t dep, int64_t dev)
{
    struct srv_dd_event *ev = NULL, last;
    size_t n = 0;
    assert_int_equal(srv_store_dd_events(s, dep, dev, 0, SRV_LIST_MAX, &ev, &n, NULL), OT_OK);
    assert_true(n > 0);
    last = ev[n - 1];
    ev[n - 1].message = ev[n - 1].log = NULL; /* moved out */
    srv_dd_event_list_free(ev, n);
    return last;
}

/* WAITING: reported by the device, not final, never timed out. */
static void test_dd_waiting(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    const int64_t seqs[] = {1, 2};
    int64_t dep = add_rollout(s, art, dev, seqs, 2, NULL);
    report(s, dep, dev[0], SRV_DD_WAITING, T0 + 1100);
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 1100);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_WAITING);
    assert_int_equal(row.progress, 50);
    srv_dd_release(&row);
    struct srv_dd_event ev = last_event(s, dep, dev[0]);
    assert_int_equal(ev.status, SRV_DD_WAITING);
    free(ev.message);
    free(ev.log);
    /* The other row finished: a waiting one keeps the deployment open, and stays the device's
     * work. */
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(srv_store_device_next(s, dev[0], &row, &d), OT_OK);
    assert_int_equal(row.deployment_id, dep);
    assert_int_equal(row.status, SRV_DD_WAITING);
    srv_dd_release(&row);
    uint64_t counts[SRV_DD__MAX];
    assert_int_equal(srv_store_deployment_rollup(s, dep, counts, &d), OT_OK);
    assert_int_equal(counts[SRV_DD_WAITING], 1);
    assert_int_equal(counts[SRV_DD_SUCCESS], 1);
    assert_int_equal(srv_store_rollout_counts(s, dep, 0, 2, counts, &d), OT_OK);
    assert_int_equal(counts[SRV_DD_WAITING], 1);

    /* Silent for long, released: still not timed out (the device waits on purpose). */
    size_t n = 99;
    assert_int_equal(srv_store_rollout_timeout(s, dep, 2, T0 + 9000, T0 + 9000, "timed out", &n,
                                               &d),
                     OT_OK);
    assert_int_equal(n, 0);
    assert_int_equal(dd_status(s, dep, dev[0]), SRV_DD_WAITING);

    /* Nothing installed yet: a cancel ends it like a pending row, and a later report is refused
     * (the final state stays). */
    int64_t other = add_deployment(s, art, dev, 1, NULL);
    report(s, other, dev[0], SRV_DD_WAITING, T0 + 1200);
    assert_int_equal(srv_store_deployment_cancel(s, other, T0 + 1300, &d), OT_OK);
    assert_int_equal(dd_status(s, other, dev[0]), SRV_DD_CANCELLED);
    bool applied = true;
    enum srv_dd_status current = 0;
    assert_int_equal(srv_store_dd_report(s, other, dev[0], SRV_DD_INSTALLING, -1, "", NULL,
                                         T0 + 1400, &applied, &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_int_equal(current, SRV_DD_CANCELLED);

    report(s, dep, dev[0], SRV_DD_INSTALLING, T0 + 9100); /* the window opened */
    report(s, dep, dev[0], SRV_DD_SUCCESS, T0 + 9200);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 9200);
    srv_deployment_release(&got);
    assert_false(SRV_DD_IS_FINAL(SRV_DD_WAITING));
    assert_true(SRV_DD_IS_FINAL(SRV_DD_SKIPPED));
    srv_store_close(s);
}

static void test_dd_report_retry(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[2];
    for (int i = 0; i < 2; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 1, NULL); /* one device: its failure would end it */
    report(s, dep, dev[0], SRV_DD_INSTALLING, T0 + 1);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.attempts, 0);
    srv_dd_release(&row);

    assert_true(report_retry(s, dep, dev[0], SRV_DD_FAILURE, "disk full", T0 + 10, 2));
    row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_PENDING);
    assert_int_equal(row.attempts, 1);
    assert_int_equal(row.progress, -1);
    assert_int_equal(row.updated_at, T0 + 10);
    assert_string_equal(row.message, "retry 1 of 2 after failure: disk full");
    srv_dd_release(&row);
    struct srv_dd_event ev = last_event(s, dep, dev[0]); /* what the device said */
    assert_int_equal(ev.status, SRV_DD_FAILURE);
    assert_int_equal(ev.progress, 70);
    assert_int_equal(ev.at, T0 + 10);
    assert_string_equal(ev.message, "disk full");
    assert_string_equal(ev.log, "the log");
    free(ev.message);
    free(ev.log);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    assert_int_equal(srv_store_device_next(s, dev[0], &row, &d), OT_OK); /* work again */
    assert_int_equal(row.deployment_id, dep);
    assert_int_equal(row.status, SRV_DD_PENDING);
    assert_int_equal(row.attempts, 1);
    srv_dd_release(&row);
    /* The same report again (its answer was lost): not a second failure, no retry used up. */
    bool applied = true, retried = true;
    enum srv_dd_status current = 0;
    assert_int_equal(srv_store_dd_report_retry(s, dep, dev[0], SRV_DD_FAILURE, 70, "disk full",
                                               "the log", T0 + 11, 2, &applied, &retried,
                                               &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_false(retried);
    assert_int_equal(current, SRV_DD_PENDING);
    row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.attempts, 1);
    assert_int_equal(row.updated_at, T0 + 10);
    srv_dd_release(&row);

    report(s, dep, dev[0], SRV_DD_DOWNLOADING, T0 + 20);
    assert_true(report_retry(s, dep, dev[0], SRV_DD_ROLLED_BACK, "no boot", T0 + 30, 2));
    row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.attempts, 2);
    assert_string_equal(row.message, "retry 2 of 2 after rolled_back: no boot");
    srv_dd_release(&row);
    ev = last_event(s, dep, dev[0]);
    assert_int_equal(ev.status, SRV_DD_ROLLED_BACK);
    free(ev.message);
    free(ev.log);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);

    /* Progress is not a failure, and the last failure is final: it finishes the deployment. */
    assert_false(report_retry(s, dep, dev[0], SRV_DD_INSTALLING, "again", T0 + 35, 2));
    assert_false(report_retry(s, dep, dev[0], SRV_DD_FAILURE, "disk full", T0 + 40, 2));
    row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_FAILURE);
    assert_int_equal(row.attempts, 2);
    assert_int_equal(row.progress, 70);
    assert_string_equal(row.message, "disk full");
    srv_dd_release(&row);
    struct srv_deployment got = dep_of(s, dep);
    assert_int_equal(got.status, SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(got.finished_at, T0 + 40);
    srv_deployment_release(&got);
    /* Final: nothing changes, retries or not. */
    applied = true;
    retried = true;
    current = 0;
    assert_int_equal(srv_store_dd_report_retry(s, dep, dev[0], SRV_DD_FAILURE, 0, NULL, NULL,
                                               T0 + 50, 9, &applied, &retried, &current, &d),
                     OT_OK);
    assert_false(applied);
    assert_false(retried);
    assert_int_equal(current, SRV_DD_FAILURE);

    /* Without retries (srv_store_dd_report is retries 0) and on success: never a retry. */
    int64_t dep2 = add_deployment(s, art, dev, 2, NULL);
    assert_false(report_retry(s, dep2, dev[0], SRV_DD_SUCCESS, "", T0 + 60, 3));
    assert_false(report_retry(s, dep2, dev[1], SRV_DD_FAILURE, "x", T0 + 60, 0));
    row = dd_of(s, dep2, dev[1]);
    assert_int_equal(row.status, SRV_DD_FAILURE);
    assert_int_equal(row.attempts, 0);
    srv_dd_release(&row);
    assert_int_equal(dep_status(s, dep2), SRV_DEPLOYMENT_FINISHED);

    /* A retry straight from PENDING; the row's message is cut to SRV_DD_MESSAGE_MAX bytes on a
     * character boundary ("é" is two bytes, the prefix 29: the cut falls inside one). */
    int64_t dep3 = add_deployment(s, art, dev, 2, NULL);
    char msg[SRV_DD_MESSAGE_MAX + 1];
    for (size_t i = 0; i < SRV_DD_MESSAGE_MAX; i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[SRV_DD_MESSAGE_MAX] = '\0';
    assert_true(report_retry(s, dep3, dev[0], SRV_DD_FAILURE, msg, T0 + 70, 10));
    row = dd_of(s, dep3, dev[0]);
    assert_int_equal(strlen(row.message), SRV_DD_MESSAGE_MAX - 1);
    assert_memory_equal(row.message, "retry 1 of 10 after failure: \xc3\xa9", 31);
    assert_string_equal(row.message + SRV_DD_MESSAGE_MAX - 3, "\xc3\xa9");
    srv_dd_release(&row);
    ev = last_event(s, dep3, dev[0]);
    assert_string_equal(ev.message, msg); /* the event keeps it whole */
    free(ev.message);
    free(ev.log);

    /* attempts in every call that returns rows */
    struct srv_dd *rows = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_devices(s, dep3, 0, 10, &rows, &n, &d), OT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].attempts, 1);
    assert_int_equal(rows[1].attempts, 0);
    srv_dd_list_free(rows, n);

    /* The checks of srv_store_dd_report. */
    assert_int_equal(srv_store_dd_report_retry(s, dep3, dev[1], SRV_DD_PENDING, 0, NULL, NULL,
                                               T0, 1, &applied, &retried, &current, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_dd_report_retry(s, dep3, dev[1], SRV_DD__MAX, 0, NULL, NULL, T0,
                                               1, &applied, &retried, &current, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_dd_report_retry(s, dep3, dev[1], SRV_DD_FAILURE, 0, NULL, NULL,
                                               T0, 1, NULL, &retried, &current, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_dd_report_retry(s, dep3, dev[1], SRV_DD_FAILURE, 0, NULL, NULL,
                                               -1, 1, &applied, &retried, &current, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_dd_report_retry(s, dep3, 999999, SRV_DD_FAILURE, 0, NULL, NULL,
                                               T0, 1, &applied, &retried, &current, &d),
                     OT_ERR_NOENT);
    assert_int_equal(dd_status(s, dep3, dev[1]), SRV_DD_PENDING);
    srv_store_close(s);
}

/* srv_store_deployment_add_device; *ret_seq is checked to be written only with a new row. */
static bool add_member(struct srv_store *s, int64_t dep, int64_t dev, bool skipped,
                       int64_t *ret_seq)
{
    bool added = !skipped; /* the opposite of what a refusal leaves */
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_add_device(s, dep, dev, skipped, "wrong type",
                                                      T0 + 500, &added, ret_seq, &d);
    if (err)
        print_error("add device %lld: %s\n", (long long)dev, d.msg);
    assert_int_equal(err, OT_OK);
    return added;
}

static size_t ndevices_of(struct srv_store *s, int64_t dep)
{
    struct srv_deployment got = dep_of(s, dep);
    size_t n = got.ndevices;
    srv_deployment_release(&got);
    return n;
}

static void test_deployment_add_device(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[6];
    for (int i = 0; i < 6; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 2, NULL);
    report(s, dep, dev[0], SRV_DD_SUCCESS, T0 + 1);

    int64_t g = generation(s), seq = 77;
    assert_true(add_member(s, dep, dev[2], false, &seq));
    assert_int_equal(seq, 0); /* no rollout */
    assert_true(generation(s) != g);
    assert_int_equal(ndevices_of(s, dep), 3);
    struct srv_dd row = dd_of(s, dep, dev[2]);
    assert_int_equal(row.status, SRV_DD_PENDING);
    assert_int_equal(row.progress, -1);
    assert_string_equal(row.message, "");
    assert_int_equal(row.updated_at, T0 + 500);
    assert_int_equal(row.attempts, 0);
    srv_dd_release(&row);
    assert_int_equal(srv_store_device_next(s, dev[2], &row, &d), OT_OK);
    assert_int_equal(row.deployment_id, dep);
    srv_dd_release(&row);
    struct srv_deployment *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_deployment_list(s, 0, 0, 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].ndevices, 3);
    srv_deployment_list_free(list, n);

    /* A device that has its row already (any state): nothing changes. */
    g = generation(s);
    seq = 77;
    assert_false(add_member(s, dep, dev[2], false, &seq));
    assert_false(add_member(s, dep, dev[0], true, &seq));
    assert_int_equal(seq, 77);
    assert_int_equal(generation(s), g);
    assert_int_equal(ndevices_of(s, dep), 3);
    assert_int_equal(dd_status(s, dep, dev[0]), SRV_DD_SUCCESS);

    /* Skipped: the row is final, the deployment stays active, ret_seq may be NULL. */
    assert_true(add_member(s, dep, dev[3], true, NULL));
    row = dd_of(s, dep, dev[3]);
    assert_int_equal(row.status, SRV_DD_SKIPPED);
    assert_string_equal(row.message, "wrong type");
    assert_int_equal(row.updated_at, T0 + 500);
    srv_dd_release(&row);
    assert_true(generation(s) != g);
    assert_int_equal(ndevices_of(s, dep), 4);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    uint64_t counts[SRV_DD__MAX];
    assert_int_equal(srv_store_deployment_rollup(s, dep, counts, &d), OT_OK);
    assert_int_equal(counts[SRV_DD_SKIPPED], 1);
    assert_int_equal(counts[SRV_DD_PENDING], 2);
    struct srv_dd_event *ev = NULL;
    assert_int_equal(srv_store_dd_events(s, dep, dev[3], 0, 10, &ev, &n, &d), OT_OK);
    assert_int_equal(n, 0); /* as a row created skipped */
    srv_dd_event_list_free(ev, n);
    /* A new row counts for finishing: the last open rows finish it. */
    report(s, dep, dev[1], SRV_DD_SUCCESS, T0 + 600);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    report(s, dep, dev[2], SRV_DD_SUCCESS, T0 + 700);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_FINISHED);

    /* Finished: a skipped joiner leaves it finished, a pending one reopens it. */
    int64_t late[2] = {add_device(s, 7, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0),
                       add_device(s, 8, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0)};
    assert_true(add_member(s, dep, late[0], true, &seq));
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_FINISHED);
    g = generation(s);
    assert_true(add_member(s, dep, late[1], false, &seq));
    assert_true(generation(s) != g);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_ACTIVE);
    struct srv_deployment reopened = dep_of(s, dep);
    assert_int_equal(reopened.finished_at, 0);
    srv_deployment_release(&reopened);
    report(s, dep, late[1], SRV_DD_SUCCESS, T0 + 750);
    assert_int_equal(dep_status(s, dep), SRV_DEPLOYMENT_FINISHED);
    assert_int_equal(ndevices_of(s, dep), 6);

    /* Cancelled: nothing changes. */
    int64_t cancelled = add_deployment(s, art, dev, 1, NULL);
    assert_int_equal(srv_store_deployment_cancel(s, cancelled, T0 + 800, &d), OT_OK);
    g = generation(s);
    seq = 77;
    assert_false(add_member(s, cancelled, dev[4], false, &seq));
    assert_false(add_member(s, cancelled, dev[4], true, &seq));
    assert_int_equal(seq, 77);
    assert_int_equal(generation(s), g);
    assert_int_equal(ndevices_of(s, cancelled), 1);
    assert_int_equal(ndevices_of(s, dep), 6);
    assert_int_equal(srv_store_dd_get(s, cancelled, dev[4], &row, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_dd_get(s, dep, dev[4], &row, &d), OT_ERR_NOENT);

    /* With a rollout: after the highest seq, whatever the order of the adds. */
    const int64_t seqs[] = {2, 1};
    int64_t staged = add_rollout(s, art, dev, seqs, 2, NULL);
    assert_true(add_member(s, staged, dev[4], false, &seq));
    assert_int_equal(seq, 3);
    assert_true(add_member(s, staged, dev[5], true, &seq));
    assert_int_equal(seq, 4);
    row = dd_of(s, staged, dev[5]);
    assert_int_equal(row.seq, 4);
    assert_int_equal(row.status, SRV_DD_SKIPPED);
    srv_dd_release(&row);
    assert_int_equal(ndevices_of(s, staged), 4);
    assert_int_equal(srv_store_rollout_counts(s, staged, 2, 3, counts, &d), OT_OK);
    assert_int_equal(counts[SRV_DD_PENDING], 1);

    /* Errors: nothing changes. */
    bool added = true;
    g = generation(s);
    assert_int_equal(srv_store_deployment_add_device(s, 999999, dev[0], false, NULL, T0, &added,
                                                     NULL, &d),
                     OT_ERR_NOENT);
    assert_int_equal(srv_store_deployment_add_device(s, staged, 999999, false, NULL, T0, &added,
                                                     NULL, &d),
                     OT_ERR_NOENT);
    assert_int_equal(srv_store_deployment_add_device(s, cancelled, 999999, false, NULL, T0,
                                                     &added, NULL, &d),
                     OT_ERR_NOENT);
    assert_int_equal(srv_store_deployment_add_device(s, staged, dev[3], false, NULL, T0, NULL,
                                                     NULL, &d),
                     OT_ERR_INVALID);
    assert_int_equal(srv_store_deployment_add_device(s, staged, dev[3], false, NULL, -1, &added,
                                                     NULL, &d),
                     OT_ERR_INVALID);
    _cleanup_free_ char *msg_long = repeat('m', SRV_DD_MESSAGE_MAX + 1);
    assert_int_equal(srv_store_deployment_add_device(s, staged, dev[3], true, msg_long, T0,
                                                     &added, NULL, &d),
                     OT_ERR_LIMIT);
    assert_true(added);
    assert_int_equal(generation(s), g);
    assert_int_equal(ndevices_of(s, staged), 4);
    assert_int_equal(srv_store_dd_get(s, staged, dev[3], &row, &d), OT_ERR_NOENT);
    srv_store_close(s);
}

static void test_artifact_channel(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    _cleanup_free_ char *longest = repeat('c', SRV_TAG_MAX - 1);
    _cleanup_free_ char *too_long = repeat('c', SRV_TAG_MAX);
    const char *const good[] = {"beta", NULL, "", "Stable-1.x_rc", longest};
    int64_t ids[OT_ARRAY_SIZE(good)];
    for (size_t i = 0; i < OT_ARRAY_SIZE(good); i++) {
        char version[16];
        snprintf(version, sizeof(version), "1.%zu", i);
        struct srv_artifact a = artifact_in("rootfs", version, (int)i + 1), got;
        a.channel = (char *)good[i];
        assert_int_equal(srv_store_artifact_create(s, &a, &d), OT_OK);
        ids[i] = a.id;
        assert_int_equal(srv_store_artifact_get(s, a.id, &got, &d), OT_OK);
        assert_artifact_equal(&got, &a);
        srv_artifact_release(&got);
        assert_int_equal(srv_store_artifact_by_sha256(s, a.sha256, &got, &d), OT_OK);
        assert_string_equal(got.channel, good[i] ? good[i] : "");
        srv_artifact_release(&got);
    }
    struct srv_artifact *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_artifact_list(s, 0, 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, OT_ARRAY_SIZE(good));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i].id, ids[i]);
        assert_string_equal(list[i].channel, good[i] ? good[i] : "");
    }
    srv_artifact_list_free(list, n);

    const char *const bad[] = {"two words", "a/b", "\xc3\xa9t\xc3\xa9", "x\n", too_long};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct srv_artifact a = artifact_in("other", "1.0", 7);
        a.channel = (char *)bad[i];
        d.msg[0] = '\0';
        assert_int_equal(srv_store_artifact_create(s, &a, &d), OT_ERR_INVALID);
        assert_non_null(strstr(d.msg, "channel"));
    }
    assert_int_equal(srv_store_artifact_list(s, 0, 10, &list, &n, &d), OT_OK);
    assert_int_equal(n, OT_ARRAY_SIZE(good)); /* none of them stored */
    srv_artifact_list_free(list, n);
    srv_store_close(s);
}

static struct srv_template template_in(const char *name, const char *channel)
{
    struct srv_template t;
    memset(&t, 0, sizeof(t));
    t.name = (char *)name;
    t.channel = (char *)channel;
    t.body = "{\"target\":{\"tag\":\"lab\"},\"policy\":{\"phases\":[{\"size\":1}]}}";
    t.enabled = true;
    t.created_at = T0 + 3;
    t.created_by = "token:1 (admin)";
    return t;
}

static int64_t add_template(struct srv_store *s, const char *name, const char *channel,
                            bool enabled)
{
    struct srv_template t = template_in(name, channel);
    t.enabled = enabled;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_template_create(s, &t, &d);
    if (err)
        print_error("add template: %s\n", d.msg);
    assert_int_equal(err, OT_OK);
    assert_true(t.id > 0);
    return t.id;
}

/* The ids a template list call returns, in order; n of them at most. */
static size_t template_ids(struct srv_store *s, const char *channel, int64_t after, size_t limit,
                           int64_t *out)
{
    struct srv_template *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_template_list(s, channel, after, limit, &list, &n, NULL), OT_OK);
    for (size_t i = 0; i < n; i++)
        out[i] = list[i].id;
    srv_template_list_free(list, n);
    return n;
}

static void test_templates(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    struct srv_template t = template_in("nightly to the lab", "beta"), got;
    assert_int_equal(srv_store_template_create(s, &t, &d), OT_OK);
    assert_true(t.id > 0);
    assert_int_equal(srv_store_template_get(s, t.id, &got, &d), OT_OK);
    assert_int_equal(got.id, t.id);
    assert_string_equal(got.name, t.name);
    assert_string_equal(got.channel, "beta");
    assert_string_equal(got.body, t.body);
    assert_true(got.enabled);
    assert_int_equal(got.created_at, T0 + 3);
    assert_string_equal(got.created_by, "token:1 (admin)");
    srv_template_release(&got);
    srv_template_release(&got);
    srv_template_release(NULL);
    struct srv_template same = template_in("nightly to the lab", "stable");
    same.id = -5;
    assert_int_equal(srv_store_template_create(s, &same, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "nightly to the lab"));
    assert_int_equal(same.id, -5);

    /* Listing: all of them by id, or the enabled ones of one channel. */
    int64_t id[6] = {t.id};
    id[1] = add_template(s, "stable fleet", "stable", true);
    id[2] = add_template(s, "beta canaries", "beta", false);
    id[3] = add_template(s, "beta fleet", "beta", true);
    id[4] = add_template(s, "Beta, other case", "Beta", true);
    id[5] = add_template(s, "stable lab", "stable", true);
    int64_t got_ids[8];
    assert_int_equal(template_ids(s, NULL, 0, SRV_LIST_MAX, got_ids), 6);
    assert_memory_equal(got_ids, id, sizeof(id));
    assert_int_equal(template_ids(s, NULL, id[1], 2, got_ids), 2);
    assert_int_equal(got_ids[0], id[2]);
    assert_int_equal(got_ids[1], id[3]);
    assert_int_equal(template_ids(s, "beta", 0, SRV_LIST_MAX, got_ids), 2);
    assert_int_equal(got_ids[0], id[0]);
    assert_int_equal(got_ids[1], id[3]);
    assert_int_equal(template_ids(s, "beta", id[0], 1, got_ids), 1);
    assert_int_equal(got_ids[0], id[3]);
    assert_int_equal(template_ids(s, "Beta", 0, SRV_LIST_MAX, got_ids), 1);
    assert_int_equal(got_ids[0], id[4]);
    assert_int_equal(template_ids(s, "nightly", 0, SRV_LIST_MAX, got_ids), 0);

    assert_int_equal(srv_store_template_set_enabled(s, id[2], true, &d), OT_OK);
    assert_int_equal(srv_store_template_set_enabled(s, id[0], false, &d), OT_OK);
    assert_int_equal(srv_store_template_set_enabled(s, id[0], false, &d), OT_OK); /* twice */
    assert_int_equal(template_ids(s, "beta", 0, SRV_LIST_MAX, got_ids), 2);
    assert_int_equal(got_ids[0], id[2]);
    assert_int_equal(got_ids[1], id[3]);
    assert_int_equal(srv_store_template_get(s, id[0], &got, &d), OT_OK);
    assert_false(got.enabled);
    srv_template_release(&got);
    assert_int_equal(template_ids(s, NULL, 0, SRV_LIST_MAX, got_ids), 6); /* still listed */

    assert_int_equal(srv_store_template_delete(s, id[3], &d), OT_OK);
    assert_int_equal(srv_store_template_delete(s, id[3], &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_template_get(s, id[3], &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_template_set_enabled(s, id[3], true, &d), OT_ERR_NOENT);
    assert_int_equal(template_ids(s, "beta", 0, SRV_LIST_MAX, got_ids), 1);
    assert_int_equal(template_ids(s, NULL, 0, SRV_LIST_MAX, got_ids), 5);
    assert_true(add_template(s, "beta fleet", "beta", true) > id[5]); /* name free, id new */
    assert_int_equal(srv_store_template_get(s, 999999, &got, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_template_delete(s, 999999, &d), OT_ERR_NOENT);
    assert_int_equal(srv_store_template_set_enabled(s, 999999, false, &d), OT_ERR_NOENT);

    struct srv_template *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_template_list(s, NULL, 0, 0, &list, &n, &d), OT_ERR_RANGE);
    assert_int_equal(srv_store_template_list(s, NULL, 0, SRV_LIST_MAX + 1, &list, &n, &d),
                     OT_ERR_RANGE);
    assert_int_equal(srv_store_template_list(s, "a b", 0, 10, &list, &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_template_list(s, "", 0, 10, &list, &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_template_list(s, NULL, 0, 10, NULL, &n, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_template_get(s, id[0], NULL, &d), OT_ERR_INVALID);
    srv_template_list_free(NULL, 0);
    srv_store_close(s);
}

static void test_template_validation(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    _cleanup_free_ char *name_max = repeat('n', SRV_DEPLOYMENT_NAME_MAX - 1);
    _cleanup_free_ char *name_long = repeat('n', SRV_DEPLOYMENT_NAME_MAX);
    _cleanup_free_ char *channel_long = repeat('c', SRV_TAG_MAX);
    _cleanup_free_ char *by_long = repeat('b', SRV_AUDIT_FIELD_MAX + 1);
    /* {"k":"vvv..."}: 8 bytes around the value */
    _cleanup_free_ char *body_max = repeat('v', SRV_TEMPLATE_BODY_MAX);
    memcpy(body_max, "{\"k\":\"", 6);
    memcpy(body_max + SRV_TEMPLATE_BODY_MAX - 2, "\"}", 2);
    _cleanup_free_ char *body_long = repeat(' ', SRV_TEMPLATE_BODY_MAX + 1);
    memcpy(body_long, "{}", 2); /* an object, with blanks past the limit */
    struct {
        struct srv_template t;
        enum ot_err want;
    } bad[20];
    size_t n = 0;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        bad[i].t = template_in("fleet", "beta");
    bad[n].t.name = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.name = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.name = "two\nlines";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.name = name_long;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].t.channel = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.channel = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.channel = "be ta";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.channel = channel_long;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = NULL;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = "[1]";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = "{\"a\":";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = "{} {}";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.body = body_long;
    bad[n++].want = OT_ERR_LIMIT;
    bad[n].t.created_at = -1;
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.created_by = "";
    bad[n++].want = OT_ERR_INVALID;
    bad[n].t.created_by = by_long;
    bad[n++].want = OT_ERR_LIMIT;
    for (size_t i = 0; i < n; i++) {
        d.msg[0] = '\0';
        bad[i].t.id = -3;
        assert_int_equal(srv_store_template_create(s, &bad[i].t, &d), bad[i].want);
        assert_true(d.msg[0] != '\0');
        assert_int_equal(bad[i].t.id, -3);
    }
    assert_int_equal(srv_store_template_create(s, NULL, &d), OT_ERR_INVALID);
    int64_t ids[4];
    assert_int_equal(template_ids(s, NULL, 0, 10, ids), 0); /* nothing stored */

    struct srv_template edge = template_in(name_max, "beta"), got;
    edge.body = body_max;
    assert_int_equal(srv_store_template_create(s, &edge, &d), OT_OK);
    assert_int_equal(srv_store_template_get(s, edge.id, &got, &d), OT_OK);
    assert_string_equal(got.name, name_max);
    assert_string_equal(got.body, body_max);
    srv_template_release(&got);
    srv_store_close(s);
}

/* A database at schema version 3 with rows in it (made by undoing migration 4 by hand) is
 * migrated: the rows are kept (attempts 0, no channel), the status rule takes WAITING and still
 * refuses what is past it, and the file or database is sound. */
static void test_migration_4(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    int64_t art = add_artifact(s, "rootfs", "2.0", 1);
    int64_t dev[3];
    for (int i = 0; i < 3; i++)
        dev[i] = add_device(s, i + 1, SRV_DEVICE_ACCEPTED, "gw-2", NULL, 0);
    int64_t dep = add_deployment(s, art, dev, 3, NULL);
    report(s, dep, dev[0], SRV_DD_INSTALLING, T0 + 5);
    report(s, dep, dev[1], SRV_DD_FAILURE, T0 + 6);
    const int64_t seqs[] = {3, 1, 2};
    int64_t staged = add_rollout(s, art, dev, seqs, 3, NULL);
    int64_t g = generation(s);
    srv_store_close(s);
    undo_migration_4(f);
    char sql[256];
    /* The old rule is back: without migration 4, WAITING cannot be stored. */
    snprintf(sql, sizeof(sql),
             "UPDATE deployment_devices SET status = 11 WHERE deployment_id = %lld"
             " AND device_id = %lld",
             (long long)dep, (long long)dev[2]);
    assert_false(f->be->try_exec(f, sql));

    /* SQLite: a connection that read the old schema before the migration sees the new one. */
    sqlite3 *other = NULL;
    if (f->be == SQLITE) {
        other = raw_open(f->path);
        assert_int_equal(raw_int(other, "SELECT count(*) FROM deployment_devices"), 6);
    }
    s = open_ok(f);
    assert_int_equal(srv_store_schema_version(s), 4);
    struct srv_dd row = dd_of(s, dep, dev[0]);
    assert_int_equal(row.status, SRV_DD_INSTALLING);
    assert_int_equal(row.updated_at, T0 + 5);
    assert_int_equal(row.attempts, 0);
    srv_dd_release(&row);
    assert_int_equal(dd_status(s, dep, dev[1]), SRV_DD_FAILURE);
    row = dd_of(s, staged, dev[0]);
    assert_int_equal(row.seq, 3);
    srv_dd_release(&row);
    struct srv_dd_event ev = last_event(s, dep, dev[1]);
    assert_int_equal(ev.status, SRV_DD_FAILURE);
    free(ev.message);
    free(ev.log);
    assert_int_equal(generation(s), g);
    struct srv_artifact a;
    assert_int_equal(srv_store_artifact_get(s, art, &a, NULL), OT_OK);
    assert_string_equal(a.channel, "");
    srv_artifact_release(&a);
    int64_t ids[2];
    assert_int_equal(template_ids(s, NULL, 0, 10, ids), 0);
    add_template(s, "after the migration", "beta", true);

    /* WAITING through the store's own connection, then straight into the table. */
    report(s, dep, dev[0], SRV_DD_WAITING, T0 + 7);
    assert_int_equal(dd_status(s, dep, dev[0]), SRV_DD_WAITING);
    assert_true(report_retry(s, staged, dev[0], SRV_DD_FAILURE, "x", T0 + 8, 1));
    assert_true(f->be->try_exec(f, sql));
    assert_int_equal(dd_status(s, dep, dev[2]), SRV_DD_WAITING);
    snprintf(sql, sizeof(sql),
             "UPDATE deployment_devices SET status = 12 WHERE deployment_id = %lld"
             " AND device_id = %lld",
             (long long)dep, (long long)dev[2]);
    assert_false(f->be->try_exec(f, sql));
    assert_false(f->be->try_exec(f, "UPDATE deployment_devices SET status = 0"));
    assert_int_equal(dd_status(s, dep, dev[2]), SRV_DD_WAITING);
    srv_store_close(s);

    if (f->be == SQLITE) {
        raw_exec(other, "PRAGMA foreign_keys = ON");
        snprintf(sql, sizeof(sql),
                 "UPDATE deployment_devices SET status = 11 WHERE deployment_id = %lld"
                 " AND device_id = %lld",
                 (long long)staged, (long long)dev[1]);
        raw_exec(other, sql);
        assert_int_equal(sqlite3_exec(other,
                                      "UPDATE deployment_devices SET status = 12"
                                      " WHERE status = 11",
                                      NULL, NULL, NULL),
                         SQLITE_CONSTRAINT);
        raw_text_is(other, "PRAGMA integrity_check", "ok");
        assert_int_equal(raw_int(other, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
        assert_int_equal(raw_int(other, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE"
                                        " '%status BETWEEN 1 AND 11%'"),
                         1);
        assert_int_equal(sqlite3_close(other), SQLITE_OK);
    } else {
        PGconn *c = pg_connect(f->url);
        assert_int_equal(pg_run(c,
                                "SELECT count(*) FROM pg_constraint WHERE"
                                " conrelid = 'deployment_devices'::regclass AND contype = 'c'",
                                NULL, NULL),
                         1);
        assert_int_equal(pg_run(c,
                                "SELECT count(*) FROM pg_constraint WHERE"
                                " conname = 'deployment_devices_status_check' AND"
                                " pg_get_constraintdef(oid) LIKE '%status <= 11%'",
                                NULL, NULL),
                         1);
        PQfinish(c);
    }
    /* And it opens again as it is. */
    s = open_ok(f);
    assert_int_equal(srv_store_schema_version(s), 4);
    srv_store_close(s);
}

/* The check-in path's batch at fleet size: 100,000 devices (made directly in the database: one at
 * a time through the store would be 100,000 commits), touched in one call. */
#define FLEET 100000

static void test_device_touch_fleet(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    f->be->seed_devices(f, FLEET);
    int64_t *ids = malloc(FLEET * sizeof(*ids)), *at = malloc(FLEET * sizeof(*at));
    assert_non_null(ids);
    assert_non_null(at);
    struct srv_device_filter first = {.limit = 1};
    struct srv_device *list = NULL;
    size_t n = 0;
    assert_int_equal(srv_store_device_list(s, &first, &list, &n, NULL), OT_OK);
    assert_int_equal(n, 1);
    int64_t base = list[0].id;
    srv_device_list_free(list, n);
    for (int i = 0; i < FLEET; i++) {
        ids[i] = base + (FLEET - 1 - i); /* not in id order */
        at[i] = T0 + i;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct ot_diag d = {0};
    assert_int_equal(srv_store_device_touch(s, ids, at, FLEET, &d), OT_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("# %s: touched %d devices in one batch in %.0f ms\n", f->be->name, FLEET, ms);
    assert_int_equal(last_seen(s, base), T0 + FLEET - 1);
    assert_int_equal(last_seen(s, base + FLEET - 1), T0);
    assert_int_equal(last_seen(s, base + 500), T0 + FLEET - 501);
    free(ids);
    free(at);
    srv_store_close(s);
}

/* ---- URLs (no back end needed) --------------------------------------------------------------- */

static void test_urls(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = NULL;
    struct ot_diag d = {0};
    /* PostgreSQL URLs go to libpq; no server behind this socket. A URL may carry a password: it
     * is never echoed. */
    static const char *const pg_urls[] = {
        "postgresql://otter:s3cret@/otter?host=/nonexistent-otter-test",
        "postgres://otter:s3cret@/otter?host=/nonexistent-otter-test",
        "postgresql:///otter?host=/nonexistent-otter-test&password=s3cret",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(pg_urls); i++) {
        assert_int_equal(srv_store_open(pg_urls[i], &s, &d), OT_ERR_IO);
        assert_non_null(strstr(d.msg, "PostgreSQL database 'otter': cannot connect: "));
        assert_null(strstr(d.msg, "s3cret"));
    }
    assert_int_equal(srv_store_open("mysql://otter:s3cret@db/otter", &s, &d), OT_ERR_UNSUPPORTED);
    assert_string_equal(d.msg,
                        "unknown store URL scheme 'mysql' (use sqlite:PATH or a plain path)");
    assert_int_equal(srv_store_open("", &s, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_open(NULL, &s, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_open("sqlite:", &s, &d), OT_ERR_INVALID);
    assert_int_equal(srv_store_open("sqlite://host/otter.db", &s, &d), OT_ERR_INVALID);
    assert_null(s);
    assert_false(exists(in_dir(f, "otter.db")));
}

/* ---- SQLite only ----------------------------------------------------------------------------- */

/* "sqlite:PATH", a plain PATH and "sqlite://" + absolute PATH name the same file. */
static void test_sqlite_url_forms(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    assert_int_equal(srv_store_meta_set(s, "via", "prefix", NULL), OT_OK);
    srv_store_close(s);
    char url[700];
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof(url), "%s%s", i ? "sqlite://" : "", f->path);
        char *v = NULL;
        assert_int_equal(srv_store_open(url, &s, NULL), OT_OK);
        assert_int_equal(srv_store_meta_get(s, "via", &v, NULL), OT_OK);
        assert_string_equal(v, "prefix");
        free(v);
        srv_store_close(s);
    }
}

/* What is on disk: WAL mode (persistent), the application id, one row per migration. */
static void test_sqlite_schema(void **state)
{
    struct fixture *f = *state;
    int64_t before = time(NULL);
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    srv_store_close(s);
    srv_store_close(open_ok(f));

    sqlite3 *db = raw_open(f->path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(raw_int(db, "PRAGMA application_id"), 0x4f545244);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_migrations"), v);
    assert_int_equal(raw_int(db, "SELECT max(version) FROM schema_migrations"), v);
    assert_true(raw_int(db, "SELECT min(applied_at) FROM schema_migrations") >= before);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                                 " name IN ('meta', 'tokens', 'audit')"),
                     3);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void assert_refused_unchanged(const struct fixture *f, const void *data, size_t len,
                                     const char *want)
{
    struct srv_store *s = NULL;
    struct ot_diag d = {0};
    write_file(f->path, data, len);
    assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_FORMAT);
    assert_null(s);
    assert_non_null(strstr(d.msg, want));
    assert_non_null(strstr(d.msg, f->path));
    assert_file_content(f->path, data, len); /* looked at, never written */
    assert_false(exists(in_dir(f, "otter.db-wal")));
}

static void test_sqlite_not_a_database(void **state)
{
    struct fixture *f = *state;
    static const char text[] = "[server]\nlisten = 0.0.0.0:8080\n";
    assert_refused_unchanged(f, text, sizeof(text) - 1, DAMAGED);

    uint8_t junk[8192];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1103515245 + 12345;
        junk[i] = (uint8_t)(x >> 16);
    }
    assert_refused_unchanged(f, junk, sizeof(junk), DAMAGED);
    memcpy(junk, "SQLite format 3", 16); /* the right magic, garbage after it */
    assert_refused_unchanged(f, junk, sizeof(junk), DAMAGED);
}

/* Cut at any of these places, a real otterd database is refused at open, not half used. */
static void test_sqlite_truncated(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    _cleanup_free_ char *big = repeat('x', SRV_META_VALUE_MAX);
    for (int i = 0; i < 4; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(srv_store_meta_set(s, key, big, NULL), OT_OK);
    }
    srv_store_close(s); /* the last close checkpoints everything into the file */
    assert_false(exists(in_dir(f, "otter.db-wal")));

    struct ot_buf whole;
    ot_buf_init(&whole, 1 << 20);
    assert_int_equal(ot_file_read(f->path, &whole, NULL), OT_OK);
    assert_true(whole.len > 16384);
    /* Any cut that loses a whole page. A file short of only part of its last page reads as
     * zero-filled; only a full integrity check, too slow for every start, could tell. */
    const size_t cuts[] = {20, 99, 100, 1000, 4096, 4097, whole.len / 2, whole.len - 4096,
                           whole.len - 4097};
    for (size_t i = 0; i < OT_ARRAY_SIZE(cuts); i++)
        assert_refused_unchanged(f, whole.data, cuts[i], DAMAGED);
    ot_buf_release(&whole);
}

/* A real SQLite file of another program is refused and left alone. */
static void test_sqlite_foreign_database(void **state)
{
    struct fixture *f = *state;
    static const char *const schemas[] = {
        "CREATE TABLE users(name TEXT)",
        /* Rails and others keep a table of this name too. */
        "CREATE TABLE schema_migrations(version TEXT); INSERT INTO schema_migrations VALUES('1')",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(schemas); i++) {
        unlink(f->path);
        sqlite3 *db = raw_open(f->path);
        raw_exec(db, schemas[i]);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        struct srv_store *s = NULL;
        struct ot_diag d = {0};
        assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_FORMAT);
        assert_non_null(strstr(d.msg, "not an otterd database"));
        /* Left exactly as it was: no table added, not even switched to WAL. */
        assert_false(exists(in_dir(f, "otter.db-wal")));
        db = raw_open(f->path);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master"), 1);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "delete");
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
    }
}

static void test_sqlite_unwritable_location(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = NULL;
    struct ot_diag d = {0};
    char url[700];

    /* Under a regular file: ENOTDIR, which root cannot override either. */
    write_file(in_dir(f, "plain"), "x", 1);
    snprintf(url, sizeof(url), "sqlite:%s", in_dir(f, "plain/otter.db"));
    assert_int_equal(srv_store_open(url, &s, &d), OT_ERR_NOENT);
    assert_int_equal(d.sys_errno, ENOTDIR);
    assert_non_null(strstr(d.msg, in_dir(f, "plain/otter.db")));
    assert_non_null(strstr(d.msg, "Not a directory"));

    snprintf(url, sizeof(url), "sqlite:%s", in_dir(f, "missing/otter.db"));
    assert_int_equal(srv_store_open(url, &s, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "No such file or directory"));
    assert_null(s);

    if (geteuid() == 0)
        return; /* root ignores permissions; the ENOTDIR case above is the real check */
    assert_int_equal(mkdir(in_dir(f, "ro"), 0500), 0);
    snprintf(url, sizeof(url), "sqlite:%s", in_dir(f, "ro/otter.db"));
    assert_int_equal(srv_store_open(url, &s, &d), OT_ERR_PERM);
    assert_non_null(strstr(d.msg, "Permission denied"));
    srv_store_close(open_ok(f));
    assert_int_equal(chmod(f->path, 0400), 0);
    assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_PERM);
    assert_non_null(strstr(d.msg, "read-only"));
}

/* Every fd the store holds (database, WAL, shm) is close-on-exec: a hook or update module that
 * otterd runs later must not inherit the database. */
static void test_sqlite_fds_cloexec(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, NULL), OT_OK);
    int found = 0;
    for (int fd = 0; fd < 1024; fd++) {
        char link[64], target[600];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, f->dir, strlen(f->dir)) != 0)
            continue;
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        found++;
    }
    assert_true(found >= 2); /* at least the database and its WAL */
    srv_store_close(s);
}

/* A writer that holds the lock longer than the busy timeout: a clear I/O error, not a hang. */
static void test_sqlite_busy(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "BEGIN IMMEDIATE");
    struct ot_diag d = {0};
    time_t t0 = time(NULL);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, &d), OT_ERR_IO);
    assert_true(time(NULL) - t0 >= 4);
    assert_non_null(strstr(d.msg, "locked by another connection"));
    char *v = NULL; /* readers are not blocked by a writer in WAL mode */
    assert_int_equal(srv_store_meta_get(s, "nothing", &v, &d), OT_ERR_NOENT);
    raw_exec(db, "ROLLBACK");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, &d), OT_OK);
    srv_store_close(s);
}

/* A full disk, simulated where the kernel would answer: SQLite's unix VFS lets a program replace
 * the system calls it makes (its own tests simulate a full disk the same way), so write(2) and
 * pwrite(2) fail with ENOSPC and everything above them is the real code. */
static bool disk_full;
static sqlite3_syscall_ptr real_write, real_pwrite, real_pwrite64;

static ssize_t full_write(int fd, const void *p, size_t n)
{
    if (disk_full)
        return errno = ENOSPC, -1;
    return ((ssize_t(*)(int, const void *, size_t))real_write)(fd, p, n);
}

static ssize_t full_pwrite(int fd, const void *p, size_t n, off_t off)
{
    if (disk_full)
        return errno = ENOSPC, -1;
    return ((ssize_t(*)(int, const void *, size_t, off_t))real_pwrite)(fd, p, n, off);
}

static ssize_t full_pwrite64(int fd, const void *p, size_t n, off64_t off)
{
    if (disk_full)
        return errno = ENOSPC, -1;
    return ((ssize_t(*)(int, const void *, size_t, off64_t))real_pwrite64)(fd, p, n, off);
}

static void test_sqlite_disk_full(void **state)
{
    struct fixture *f = *state;
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    assert_non_null(vfs);
    assert_true(vfs->iVersion >= 3);
    real_write = vfs->xGetSystemCall(vfs, "write");
    real_pwrite = vfs->xGetSystemCall(vfs, "pwrite");
    real_pwrite64 = vfs->xGetSystemCall(vfs, "pwrite64");
    static const struct {
        const char *name;
        sqlite3_syscall_ptr fn;
    } calls[] = {{"write", (sqlite3_syscall_ptr)full_write},
                 {"pwrite", (sqlite3_syscall_ptr)full_pwrite},
                 {"pwrite64", (sqlite3_syscall_ptr)full_pwrite64}};
    for (size_t i = 0; i < OT_ARRAY_SIZE(calls); i++)
        assert_int_equal(vfs->xSetSystemCall(vfs, calls[i].name, calls[i].fn), SQLITE_OK);

    struct srv_store *s = open_ok(f);
    assert_int_equal(srv_store_meta_set(s, "small", "ok", NULL), OT_OK);
    struct ot_diag d = {0};
    disk_full = true;
    enum ot_err err = srv_store_meta_set(s, "big", "x", &d);
    disk_full = false;
    vfs->xSetSystemCall(vfs, NULL, NULL); /* all back to the real ones */
    assert_int_equal(err, OT_ERR_NOSPC);
    assert_non_null(strstr(d.msg, "write setting 'big': database or disk is full"));
    assert_int_equal(srv_store_meta_set(s, "after", "ok", &d), OT_OK); /* usable again */
    srv_store_close(s);

    s = open_ok(f);
    char *v = NULL;
    assert_int_equal(srv_store_meta_get(s, "small", &v, NULL), OT_OK);
    assert_string_equal(v, "ok");
    free(v);
    assert_int_equal(srv_store_meta_get(s, "big", &v, NULL), OT_ERR_NOENT);
    assert_int_equal(srv_store_meta_get(s, "after", &v, NULL), OT_OK);
    free(v);
    srv_store_close(s);
}

/* ---- PostgreSQL only ------------------------------------------------------------------------- */

static int64_t pg_count(const struct fixture *f, const char *sql)
{
    PGconn *c = pg_connect(f->url);
    int64_t v = pg_run(c, sql, NULL, NULL);
    PQfinish(c);
    return v;
}

/* What is in the database: the otterd marker, one row per migration, the tables. */
static void test_pg_schema(void **state)
{
    struct fixture *f = *state;
    int64_t before = time(NULL);
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    srv_store_close(s);
    srv_store_close(open_ok(f));
    assert_int_equal(pg_count(f, "SELECT application_id FROM otterd_database"), 0x4f545244);
    assert_int_equal(pg_count(f, "SELECT count(*) FROM otterd_database"), 1);
    assert_int_equal(pg_count(f, "SELECT count(*) FROM schema_migrations"), v);
    assert_int_equal(pg_count(f, "SELECT max(version) FROM schema_migrations"), v);
    assert_true(pg_count(f, "SELECT min(applied_at) FROM schema_migrations") >= before);
    assert_int_equal(pg_count(f, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                                 " AND tablename IN ('meta', 'tokens', 'audit')"),
                     3);
}

/* Another program's database is refused and left alone; so is one marked as another's. */
static void test_pg_foreign_database(void **state)
{
    struct fixture *f = *state;
    static const char *const schemas[] = {
        "CREATE TABLE users(name TEXT)",
        /* Rails and others keep a table of this name too. */
        "CREATE TABLE schema_migrations(version TEXT); INSERT INTO schema_migrations VALUES('1')",
        "CREATE TABLE otterd_database(application_id BIGINT); INSERT INTO otterd_database"
        " VALUES(42)",
    };
    static const char *const want[] = {"not an otterd database: it holds another program's",
                                       "not an otterd database: it holds another program's",
                                       "not an otterd database (application id 0x0000002a)"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(schemas); i++) {
        PGconn *c = pg_connect(f->url);
        pg_run(c, "DROP SCHEMA public CASCADE", NULL, NULL);
        pg_run(c, "CREATE SCHEMA public", NULL, NULL);
        PGresult *r = PQexec(c, schemas[i]);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        PQfinish(c);
        struct srv_store *s = NULL;
        struct ot_diag d = {0};
        assert_int_equal(srv_store_open(f->url, &s, &d), OT_ERR_FORMAT);
        assert_null(s);
        assert_non_null(strstr(d.msg, want[i]));
        assert_non_null(strstr(d.msg, f->db));
        assert_int_equal(pg_count(f, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
                         1); /* no table added */
    }
}

/* Several otterd processes opening the same new database at once: each migration is applied
 * exactly once, and every one of them opens it. */
static void test_pg_concurrent_open(void **state)
{
    struct fixture *f = *state;
    enum { N = 6 };
    int go[2];
    pid_t pids[N];
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 0) /* EOF: all start together */
                _exit(5);
            struct srv_store *s = NULL;
            struct ot_diag d = {0};
            if (srv_store_open(f->url, &s, &d) != OT_OK) {
                fprintf(stderr, "# child: %s\n", d.msg);
                _exit(2);
            }
            srv_store_close(s);
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    struct srv_store *s = open_ok(f);
    int v = srv_store_schema_version(s);
    srv_store_close(s);
    assert_int_equal(pg_count(f, "SELECT count(*) FROM schema_migrations"), v);
    assert_int_equal(pg_count(f, "SELECT count(*) FROM otterd_database"), 1);
}

/* The server ends the store's connection (restart, failover, a proxy's idle timeout): a read is
 * repeated on a new connection; an insert, which may have committed, reports an I/O error once
 * and the next one reconnects. */
static void pg_kill_store_connections(const struct fixture *f)
{
    PGconn *c = pg_connect(pg_base_url());
    assert_int_equal(pg_run(c,
                            "SELECT count(pg_terminate_backend(pid, 5000)) FROM"
                            " (SELECT pid FROM pg_stat_activity WHERE datname = $1"
                            " AND pid <> pg_backend_pid() OFFSET 0) AS store",
                            f->db, NULL),
                     1);
    PQfinish(c);
}

static void test_pg_reconnect(void **state)
{
    struct fixture *f = *state;
    struct srv_store *s = open_ok(f);
    struct ot_diag d = {0};
    char *v = NULL;
    assert_int_equal(srv_store_meta_set(s, "k", "v", &d), OT_OK);

    pg_kill_store_connections(f);
    assert_int_equal(srv_store_meta_get(s, "k", &v, &d), OT_OK);
    assert_string_equal(v, "v");
    free(v);

    pg_kill_store_connections(f);
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, &d), OT_ERR_IO);
    assert_non_null(strstr(d.msg, "lost the connection to PostgreSQL"));
    assert_int_equal(srv_store_audit_add(s, "a", "b", "c", NULL, &d), OT_OK);
    assert_int_equal(audit_count(s), 1);
    srv_store_close(s);
}

/* Without a server to test against: skipped, and failed in CI. */
static void test_pg_unavailable(void **state)
{
    (void)state;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0)
        fail_msg("OTTER_TEST_PG_URL is not set and CI=true: the PostgreSQL cases must run in CI");
    skip();
}

/* ---- the table ------------------------------------------------------------------------------- */

struct case_def {
    const char *name;
    CMUnitTestFunction fn;
};

#define CASE(fn) {#fn, fn}

/* Every back end must pass these. */
static const struct case_def contract[] = {
    CASE(test_migrations_apply_once),   CASE(test_future_schema_refused),
    CASE(test_meta),                    CASE(test_meta_limits),
    CASE(test_token_create_and_lookup), CASE(test_token_list_order),
    CASE(test_token_revoke),            CASE(test_token_duplicate_hash),
    CASE(test_token_validation),        CASE(test_audit_add_and_list),
    CASE(test_audit_limits),            CASE(test_concurrent_writers),
    CASE(test_killed_writer_durable),
    CASE(test_device_create_and_get),   CASE(test_device_updates),
    CASE(test_device_validation),       CASE(test_device_touch),
    CASE(test_device_list),             CASE(test_device_ids_by_tag),
    CASE(test_artifacts),               CASE(test_artifact_validation),
    CASE(test_deployment_create),       CASE(test_deployment_list),
    CASE(test_deployment_rollup_and_devices), CASE(test_deployment_cancel),
    CASE(test_artifact_delete_in_use),  CASE(test_device_next),
    CASE(test_dd_report),               CASE(test_dd_skip),
    CASE(test_dd_events),               CASE(test_generation),
    CASE(test_dd_report_concurrent),    CASE(test_device_touch_fleet),
    CASE(test_rollout_create),          CASE(test_rollout_create_validation),
    CASE(test_rollout_update_and_events), CASE(test_rollout_approvals),
    CASE(test_rollout_approve_concurrent), CASE(test_rollout_counts),
    CASE(test_rollout_timeout),         CASE(test_rollout_list_active),
    CASE(test_rollout_create_large),    CASE(test_rollout_migration),
    CASE(test_dd_waiting),              CASE(test_dd_report_retry),
    CASE(test_deployment_add_device),   CASE(test_artifact_channel),
    CASE(test_templates),               CASE(test_template_validation),
    CASE(test_migration_4),
};

static const struct case_def sqlite_only[] = {
    CASE(test_urls),
    CASE(test_sqlite_url_forms),
    CASE(test_sqlite_schema),
    CASE(test_sqlite_not_a_database),
    CASE(test_sqlite_truncated),
    CASE(test_sqlite_foreign_database),
    CASE(test_sqlite_unwritable_location),
    CASE(test_sqlite_fds_cloexec),
    CASE(test_sqlite_busy),
    CASE(test_sqlite_disk_full),
};

static const struct case_def pg_only[] = {
    CASE(test_pg_schema),
    CASE(test_pg_foreign_database),
    CASE(test_pg_concurrent_open),
    CASE(test_pg_reconnect),
};

#define NCASES                                                                                     \
    (OT_ARRAY_SIZE(contract) * OT_ARRAY_SIZE(backends) + OT_ARRAY_SIZE(sqlite_only) +              \
     OT_ARRAY_SIZE(pg_only))

/* A back end that is not available still lists every case, each one skipped (or failed in CI). */
static void add_case(struct CMUnitTest *t, char *name, size_t name_len, const struct case_def *c,
                     const struct backend *be)
{
    snprintf(name, name_len, "%s: %s", be->name, c->name + strlen("test_"));
    if (be->available())
        *t = (struct CMUnitTest){name, c->fn, setup, teardown, (void *)be};
    else
        *t = (struct CMUnitTest){name, test_pg_unavailable, NULL, NULL, NULL};
}

int main(void)
{
    static struct CMUnitTest tests[NCASES];
    static char names[NCASES][96];
    size_t n = 0;
    for (size_t b = 0; b < OT_ARRAY_SIZE(backends); b++)
        for (size_t i = 0; i < OT_ARRAY_SIZE(contract); i++, n++)
            add_case(&tests[n], names[n], sizeof(names[n]), &contract[i], &backends[b]);
    for (size_t i = 0; i < OT_ARRAY_SIZE(sqlite_only); i++, n++)
        add_case(&tests[n], names[n], sizeof(names[n]), &sqlite_only[i], SQLITE);
    for (size_t i = 0; i < OT_ARRAY_SIZE(pg_only); i++, n++)
        add_case(&tests[n], names[n], sizeof(names[n]), &pg_only[i], PG);
    if (!PG->available())
        printf("# PostgreSQL cases %s: OTTER_TEST_PG_URL is not set (scripts/test.sh sets it)\n",
               getenv("CI") && strcmp(getenv("CI"), "true") == 0 ? "FAIL (CI=true)" : "skipped");
    return _cmocka_run_group_tests("store", tests, n, NULL, NULL);
}
