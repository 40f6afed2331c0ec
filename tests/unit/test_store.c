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

static const struct backend backends[] = {
    {"sqlite", always, sqlite_fresh_url, sqlite_force_version, NULL},
    {"postgresql", pg_available, pg_fresh_url, pg_force_version, pg_cleanup},
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
