/* Config files: the line parser (sections, quoting, comments, line endings, limits, every syntax
 * error with its line) and the table layer (types, ranges, defaults, unknown and duplicate keys).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/config.h"
#include "otter/file.h"

/* ---- a realistic table ----------------------------------------------------------------------- */

struct agent_cfg {
    char *server_url;
    char *device_type;
    uint64_t poll_interval_ms;
    uint64_t max_download;
    uint64_t retries;
    bool verify_tls;
    struct ot_strlist tags;
    uint64_t http_port;
    char *http_bind;
    uint64_t http_timeout_ms;
    bool log_json;
};

#define F(field) offsetof(struct agent_cfg, field)
static const struct ot_cfg_key table[] = {
    {NULL, "server_url", OT_CFG_STRING, F(server_url), 1, 0, NULL, "server base URL"},
    {NULL, "device_type", OT_CFG_STRING, F(device_type), 0, 64, "generic", "device type"},
    {NULL, "poll_interval", OT_CFG_DURATION, F(poll_interval_ms), 1000, 86400000, "5m", "poll"},
    {NULL, "max_download", OT_CFG_SIZE, F(max_download), 4096, UINT64_C(1) << 30, "64M", "max"},
    {NULL, "retries", OT_CFG_U64, F(retries), 0, 100, "3", "retries"},
    {NULL, "verify_tls", OT_CFG_BOOL, F(verify_tls), 0, 0, "true", "verify TLS"},
    {NULL, "tags", OT_CFG_STRLIST, F(tags), 0, 8, NULL, "tags"},
    {"http", "port", OT_CFG_U64, F(http_port), 1, 65535, "8080", "port"},
    {"http", "bind", OT_CFG_STRING, F(http_bind), 0, 0, "127.0.0.1", "bind address"},
    {"http", "timeout", OT_CFG_DURATION, F(http_timeout_ms), 1, 0, "30s", "timeout"},
    {"log", "json", OT_CFG_BOOL, F(log_json), 0, 0, "false", "JSON logs"},
};
#define N OT_ARRAY_SIZE(table)

static char tmpdir[] = "/tmp/otter-test-config-XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return rmdir(tmpdir);
}

static const char *write_cfg(const void *text, size_t len)
{
    snprintf(path, sizeof(path), "%s/agent.conf", tmpdir);
    assert_int_equal(ot_file_write_atomic(path, text, len, 0644, NULL), OT_OK);
    return path;
}

static enum ot_err load_text(const char *text, struct agent_cfg *c, struct ot_diag *d)
{
    *c = (struct agent_cfg){0};
    return ot_cfg_load(write_cfg(text, strlen(text)), table, N, c, d);
}

/* Loads text and expects an error whose message is exactly "<path>:<msg>". */
static void expect_load_error(const char *text, enum ot_err want, const char *msg)
{
    struct agent_cfg c;
    struct ot_diag d = {0};
    char full[OT_DIAG_MSG_MAX];
    enum ot_err err = load_text(text, &c, &d);
    snprintf(full, sizeof(full), "%s:%s", path, msg);
    if (err != want || strcmp(d.msg, full) != 0)
        fail_msg("%s\ngot  %s '%s'\nwant %s '%s'", text, ot_err_name(err), d.msg, ot_err_name(want),
                 full);
    /* nothing is left allocated for the caller after an error */
    assert_null(c.server_url);
    assert_null(c.device_type);
    assert_null(c.http_bind);
    assert_null(c.tags.v);
}

static void test_load_every_type(void **state)
{
    (void)state;
    struct agent_cfg c;
    struct ot_diag d = {0};
    const char *text = "# agent configuration\n"
                       "server_url = https://updates.example.com/api\n"
                       "device_type = gw-2\n"
                       "poll_interval = 90s\n"
                       "max_download = 256M\n"
                       "retries = 0\n"
                       "verify_tls = no\n"
                       "tags = lab, rack-4 ,  eu\n"
                       "\n"
                       "[http]\n"
                       "port = 443\n"
                       "bind = \"0.0.0.0\"\n"
                       "timeout = 250ms\n"
                       "[log]\n"
                       "json = on\n";
    assert_int_equal(load_text(text, &c, &d), OT_OK);
    assert_string_equal(c.server_url, "https://updates.example.com/api");
    assert_string_equal(c.device_type, "gw-2");
    assert_int_equal(c.poll_interval_ms, 90000);
    assert_int_equal(c.max_download, 256u << 20);
    assert_int_equal(c.retries, 0);
    assert_false(c.verify_tls);
    assert_int_equal(c.tags.n, 3);
    assert_string_equal(c.tags.v[0], "lab");
    assert_string_equal(c.tags.v[1], "rack-4");
    assert_string_equal(c.tags.v[2], "eu");
    assert_int_equal(c.http_port, 443);
    assert_string_equal(c.http_bind, "0.0.0.0");
    assert_int_equal(c.http_timeout_ms, 250);
    assert_true(c.log_json);
    ot_cfg_release(table, N, &c);
    assert_null(c.server_url);
    assert_null(c.tags.v);
    assert_int_equal(c.tags.n, 0);
    ot_cfg_release(table, N, &c); /* twice is fine */
}

static void test_load_defaults(void **state)
{
    (void)state;
    struct agent_cfg c;
    struct ot_diag d = {0};
    assert_int_equal(load_text("", &c, &d), OT_OK);
    assert_null(c.server_url); /* no default */
    assert_string_equal(c.device_type, "generic");
    assert_int_equal(c.poll_interval_ms, 300000);
    assert_int_equal(c.max_download, 64u << 20);
    assert_int_equal(c.retries, 3);
    assert_true(c.verify_tls);
    assert_int_equal(c.tags.n, 0);
    assert_int_equal(c.http_port, 8080);
    assert_string_equal(c.http_bind, "127.0.0.1");
    assert_int_equal(c.http_timeout_ms, 30000);
    assert_false(c.log_json);
    ot_cfg_release(table, N, &c);

    /* a key set in the file replaces its default without leaking it */
    assert_int_equal(load_text("device_type = x\n[http]\nbind = ::1", &c, &d), OT_OK);
    assert_string_equal(c.device_type, "x");
    assert_string_equal(c.http_bind, "::1");
    ot_cfg_release(table, N, &c);
}

static void test_defaults_per_section(void **state)
{
    (void)state;
    struct agent_cfg c = {0};
    assert_int_equal(ot_cfg_defaults(table, N, "http", &c, NULL), OT_OK);
    assert_int_equal(c.http_port, 8080);
    assert_null(c.device_type); /* top level untouched */
    assert_int_equal(c.retries, 0);
    assert_int_equal(ot_cfg_defaults(table, N, NULL, &c, NULL), OT_OK);
    assert_string_equal(c.device_type, "generic");
    assert_false(c.log_json);
    ot_cfg_release(table, N, &c);

    /* a default that does not parse is a bug in the table */
    static const struct ot_cfg_key bad[] = {
        {NULL, "n", OT_CFG_U64, 0, 0, 10, "eleven", NULL},
    };
    uint64_t n = 0;
    struct ot_diag d = {0};
    assert_int_equal(ot_cfg_defaults(bad, 1, NULL, &n, &d), OT_ERR_INTERNAL);
    assert_string_equal(d.msg,
                        "config table: bad default: key 'n': value 'eleven' is not a number");
}

static void test_range_errors(void **state)
{
    (void)state;
    expect_load_error("retries = 1\n\npoll_interval = 500ms\n", OT_ERR_CONFIG,
                      "3: key 'poll_interval': value '500ms' is out of range (1s..1d)");
    expect_load_error("poll_interval = 2d\n", OT_ERR_CONFIG,
                      "1: key 'poll_interval': value '2d' is out of range (1s..1d)");
    expect_load_error("max_download = 2G\n", OT_ERR_CONFIG,
                      "1: key 'max_download': value '2G' is out of range (4K..1G)");
    expect_load_error("max_download = 4095\n", OT_ERR_CONFIG,
                      "1: key 'max_download': value '4095' is out of range (4K..1G)");
    expect_load_error("retries = 101\n", OT_ERR_CONFIG,
                      "1: key 'retries': value '101' is out of range (0..100)");
    expect_load_error("retries = 99999999999999999999999\n", OT_ERR_CONFIG,
                      "1: key 'retries': value '99999999999999999999999' is out of range (0..100)");
    expect_load_error("[http]\nport = 0\n", OT_ERR_CONFIG,
                      "2: key 'http.port': value '0' is out of range (1..65535)");
    expect_load_error("[http]\nport = 65536\n", OT_ERR_CONFIG,
                      "2: key 'http.port': value '65536' is out of range (1..65535)");
    expect_load_error("tags = a,b,c,d,e,f,g,h,i\n", OT_ERR_CONFIG,
                      "1: key 'tags': list must have 0..8 items");
    expect_load_error("device_type = "
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                      OT_ERR_CONFIG, "1: key 'device_type': value is longer than 64 bytes");
    expect_load_error("server_url =\n", OT_ERR_CONFIG,
                      "1: key 'server_url': value is shorter than 1 bytes");
}

static void test_value_format_errors(void **state)
{
    (void)state;
    expect_load_error("retries = 1\n\npoll_interval = 5x\n", OT_ERR_CONFIG,
                      "3: key 'poll_interval': value '5x' is not a duration (use 30s, 5m, 1h)");
    expect_load_error("poll_interval = -5s\n", OT_ERR_CONFIG,
                      "1: key 'poll_interval': value '-5s' is not a duration (use 30s, 5m, 1h)");
    expect_load_error("max_download = 10X\n", OT_ERR_CONFIG,
                      "1: key 'max_download': value '10X' is not a size (use 512, 64K, 10M, 1G)");
    expect_load_error("retries = three\n", OT_ERR_CONFIG,
                      "1: key 'retries': value 'three' is not a number");
    expect_load_error("retries = \" 3\"\n", OT_ERR_CONFIG,
                      "1: key 'retries': value ' 3' is not a number");
    expect_load_error("retries = -1\n", OT_ERR_CONFIG,
                      "1: key 'retries': value '-1' is not a number");
    expect_load_error(
        "verify_tls = maybe\n", OT_ERR_CONFIG,
        "1: key 'verify_tls': value 'maybe' is not a boolean (use true/false, yes/no, "
        "on/off, 1/0)");
    expect_load_error("tags = a,,b\n", OT_ERR_CONFIG, "1: key 'tags': list has an empty item");
    /* control characters from escapes are shown as '?' in messages */
    expect_load_error("retries = \"1\\n2\"\n", OT_ERR_CONFIG,
                      "1: key 'retries': value '1?2' is not a number");
}

static void test_unknown_keys_and_sections(void **state)
{
    (void)state;
    expect_load_error("retries = 1\n# comment\n\n  ; another\n\ncolour = blue\n", OT_ERR_CONFIG,
                      "6: unknown key 'colour'");
    expect_load_error("[http]\nport = 1\nretries = 2\n", OT_ERR_CONFIG,
                      "3: unknown key 'retries' in section [http]");
    expect_load_error("retries = 1\n[nope]\nx = 1\n", OT_ERR_CONFIG, "2: unknown section [nope]");
    expect_load_error("[http \"main\"]\n", OT_ERR_CONFIG,
                      "1: section [http \"main\"]: named sections are not allowed in this file");
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_load_error("retries = 1\nverify_tls = yes\nretries = 1\n", OT_ERR_CONFIG,
                      "3: duplicate key 'retries' (first set on line 1)");
    expect_load_error("[http]\nport = 1\n[log]\njson = 1\n[http]\nport = 2\n", OT_ERR_CONFIG,
                      "6: duplicate key 'http.port' (first set on line 2)");
    /* the same key name in two sections is two keys */
    struct agent_cfg c;
    static const struct ot_cfg_key two[] = {
        {"a", "x", OT_CFG_U64, offsetof(struct agent_cfg, retries), 0, 0, NULL, NULL},
        {"b", "x", OT_CFG_U64, offsetof(struct agent_cfg, http_port), 0, 0, NULL, NULL},
    };
    const char *text = "[a]\nx = 1\n[b]\nx = 2\n";
    c = (struct agent_cfg){0};
    assert_int_equal(ot_cfg_load(write_cfg(text, strlen(text)), two, 2, &c, NULL), OT_OK);
    assert_int_equal(c.retries, 1);
    assert_int_equal(c.http_port, 2);
}

static void test_load_file_errors(void **state)
{
    (void)state;
    struct agent_cfg c = {0};
    struct ot_diag d = {0};
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/missing.conf", tmpdir);
    assert_int_equal(ot_cfg_load(missing, table, N, &c, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "missing.conf"));
    assert_null(c.device_type); /* defaults were released */

    size_t len = OT_CFG_FILE_MAX + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '\n', len);
    write_cfg(big, len);
    assert_int_equal(ot_cfg_load(path, table, N, &c, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "larger than 1048576 bytes"));
    assert_null(c.device_type);
    write_cfg(big, len - 1); /* exactly at the limit: fine */
    assert_int_equal(ot_cfg_load(path, table, N, &c, &d), OT_OK);
    ot_cfg_release(table, N, &c);
    free(big);
}

static void test_set_directly(void **state)
{
    (void)state;
    struct agent_cfg c = {0};
    struct ot_diag d = {0};
    assert_int_equal(ot_cfg_set(table, N, "http", "port", "22", &c, &d), OT_OK);
    assert_int_equal(c.http_port, 22);
    assert_int_equal(ot_cfg_set(table, N, "", "retries", "7", &c, &d), OT_OK); /* "" = top */
    assert_int_equal(c.retries, 7);
    assert_int_equal(ot_cfg_set(table, N, NULL, "retries", "x", &c, &d), OT_ERR_CONFIG);
    assert_int_equal(c.retries, 7); /* unchanged on error */
    assert_int_equal(ot_cfg_set(table, N, NULL, "nope", "1", &c, &d), OT_ERR_CONFIG);
    assert_string_equal(d.msg, "unknown key 'nope'");
    assert_int_equal(ot_cfg_set(table, N, "http", "nope", "1", &c, &d), OT_ERR_CONFIG);
    assert_string_equal(d.msg, "unknown key 'nope' in section [http]");
    assert_int_equal(ot_cfg_set(table, N, NULL, "port", "1", &c, &d), OT_ERR_CONFIG);

    /* string max 0 means 4095 bytes */
    char s[4097];
    memset(s, 'b', 4096);
    s[4096] = '\0';
    assert_int_equal(ot_cfg_set(table, N, "http", "bind", s, &c, &d), OT_ERR_CONFIG);
    assert_string_equal(d.msg, "key 'http.bind': value is longer than 4095 bytes");
    s[4095] = '\0';
    assert_int_equal(ot_cfg_set(table, N, "http", "bind", s, &c, &d), OT_OK);
    assert_int_equal(strlen(c.http_bind), 4095);
    assert_int_equal(ot_cfg_set(table, N, "http", "bind", "x", &c, &d), OT_OK); /* replaces */
    assert_string_equal(c.http_bind, "x");

    assert_int_equal(ot_cfg_set(table, N, NULL, "max_download", "64KiB", &c, &d), OT_OK);
    assert_int_equal(c.max_download, 65536);
    assert_int_equal(ot_cfg_set(table, N, NULL, "poll_interval", "2h", &c, &d), OT_OK);
    assert_int_equal(c.poll_interval_ms, 7200000);
    assert_int_equal(ot_cfg_set(table, N, NULL, "poll_interval", "30", &c, &d), OT_OK);
    assert_int_equal(c.poll_interval_ms, 30000); /* bare number: seconds */
    assert_int_equal(ot_cfg_set(table, N, NULL, "tags", "a", &c, &d), OT_OK);
    assert_int_equal(ot_cfg_set(table, N, NULL, "tags", "b, c", &c, &d), OT_OK); /* replaces */
    assert_int_equal(c.tags.n, 2);
    assert_int_equal(ot_cfg_set(table, N, NULL, "tags", "", &c, &d), OT_OK);
    assert_int_equal(c.tags.n, 0);
    assert_int_equal(ot_cfg_set(table, N, NULL, "tags", NULL, &c, &d), OT_ERR_INVALID);
    ot_cfg_release(table, N, &c);
}

static void test_strlist_split(void **state)
{
    (void)state;
    struct ot_strlist l;
    struct ot_diag d = {0};
    assert_int_equal(ot_strlist_split("a, b ,c", &l, &d), OT_OK);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[0], "a");
    assert_string_equal(l.v[1], "b");
    assert_string_equal(l.v[2], "c");
    ot_strlist_release(&l);
    assert_null(l.v);
    assert_int_equal(ot_strlist_split("\tone item with spaces ", &l, &d), OT_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0], "one item with spaces");
    ot_strlist_release(&l);
    assert_int_equal(ot_strlist_split("  ", &l, &d), OT_OK);
    assert_int_equal(l.n, 0);
    ot_strlist_release(&l);
    static const char *const bad[] = {"a,,b", ",a", "a,", " , ", ","};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        l = (struct ot_strlist){.n = 99};
        assert_int_equal(ot_strlist_split(bad[i], &l, &d), OT_ERR_CONFIG);
        assert_string_equal(d.msg, "list has an empty item");
        assert_int_equal(l.n, 99); /* untouched on error */
    }
}

/* ---- the low-level parser -------------------------------------------------------------------- */

/* Records every event as "[section/name] key=value;" for comparison. */
struct recorder {
    struct ot_buf log;
    int fail_at; /* event number that fails, 0: none */
    bool with_message;
    int events;
};

static enum ot_err record(void *userdata, const char *section, const char *name, const char *key,
                          const char *value, struct ot_diag *d)
{
    struct recorder *r = userdata;
    assert_non_null(section);
    assert_non_null(name);
    assert_true((key == NULL) == (value == NULL));
    if (++r->events == r->fail_at)
        return r->with_message ? ot_diag_set(d, OT_ERR_INVALID, "boom at %s", key ? key : "header")
                               : OT_ERR_INVALID;
    enum ot_err err = key ? ot_buf_printf(&r->log, "[%s/%s] %s=%s;", section, name, key, value)
                          : ot_buf_printf(&r->log, "[%s/%s];", section, name);
    assert_int_equal(err, OT_OK);
    return OT_OK;
}

static void expect_parse(const char *text, size_t len, const char *want_log)
{
    struct recorder r = {0};
    struct ot_diag d = {0};
    ot_buf_init(&r.log, 1 << 20);
    enum ot_err err = ot_cfg_parse("t.conf", (const uint8_t *)text, len, record, &r, &d);
    if (err)
        fail_msg("%s: %s", text, d.msg);
    assert_string_equal(ot_buf_str(&r.log), want_log);
    ot_buf_release(&r.log);
}

static void expect_syntax_error(const char *text, const char *msg)
{
    struct recorder r = {0};
    struct ot_diag d = {0};
    ot_buf_init(&r.log, 1 << 20);
    enum ot_err err = ot_cfg_parse("t.conf", (const uint8_t *)text, strlen(text), record, &r, &d);
    if (err != OT_ERR_CONFIG || strcmp(d.msg, msg) != 0)
        fail_msg("%s\ngot  %s '%s'\nwant '%s'", text, ot_err_name(err), d.msg, msg);
    ot_buf_release(&r.log);
}

#define PARSE(text, log) expect_parse(text, sizeof(text) - 1, log)

static void test_parse_named_sections(void **state)
{
    (void)state;
    PARSE("name = fw\n"
          "[payload \"rootfs\"]\n"
          "type = raw\n"
          "[payload \"boot loader\"]\n"
          "type = file\n"
          "[ artifact ]\n"
          "x = 1\n"
          "[payload  \"a\\\"b\\\\c\" ]\n",
          "[/] name=fw;[payload/rootfs];[payload/rootfs] type=raw;[payload/boot loader];"
          "[payload/boot loader] type=file;[artifact/];[artifact/] x=1;[payload/a\"b\\c];");
}

static void test_parse_quoting(void **state)
{
    (void)state;
    PARSE("a = \"x \\\"y\\\" \\\\ z\"\n", "[/] a=x \"y\" \\ z;");
    PARSE("a = \"line\\nnext\\ttab\"\n", "[/] a=line\nnext\ttab;");
    PARSE("a = \"  padded  \"  \n", "[/] a=  padded  ;");
    PARSE("a = \"#not a comment\"\n", "[/] a=#not a comment;");
    PARSE("a = value # not a comment either\n", "[/] a=value # not a comment either;");
    PARSE("a = \"\"\n", "[/] a=;");
    PARSE("a =\n", "[/] a=;");
    PARSE("a=b=c\n", "[/] a=b=c;");
    PARSE("a = it's \"raw\"\n", "[/] a=it's \"raw\";");
    PARSE("a.b-c_D9 =\tv  v\t\n", "[/] a.b-c_D9=v  v;");
    PARSE("a = \"caf\xc3\xa9\"\n", "[/] a=caf\xc3\xa9;");
}

static void test_parse_comments_and_blanks(void **state)
{
    (void)state;
    PARSE("# hash\n; semicolon\n   # indented\n\t; tab\n\n   \n\t\na = 1\n", "[/] a=1;");
    PARSE("", "");
    PARSE("\n\n\n", "");
    PARSE("a = 1", "[/] a=1;"); /* no final newline */
    PARSE("\xef\xbb\xbf"
          "a = 1\n",
          "[/] a=1;"); /* UTF-8 byte order mark */
}

static void test_parse_crlf(void **state)
{
    (void)state;
    PARSE("a = 1\r\nb = \"2\"\r\n[s]\r\n\r\nc = 3\r\n", "[/] a=1;[/] b=2;[s/];[s/] c=3;");
    expect_syntax_error("a = 1\r\nb = 2\rc = 3\r\n", "t.conf:2: control character 0x0d");
    expect_syntax_error("a = 1\r\n\r\nq\r\n", "t.conf:3: expected '=' after key 'q'");
}

static void test_parse_line_limits(void **state)
{
    (void)state;
    static char text[OT_CFG_LINE_MAX + 16];
    size_t n = OT_CFG_LINE_MAX;
    memcpy(text, "a = 1\nk = ", 10);
    memset(text + 10, 'v', n - 4); /* line 2 is exactly OT_CFG_LINE_MAX bytes */
    memcpy(text + 6 + n, "\r\n", 3);
    struct recorder r = {0};
    struct ot_diag d = {0};
    ot_buf_init(&r.log, 1 << 20);
    assert_int_equal(ot_cfg_parse("t.conf", (uint8_t *)text, strlen(text), record, &r, &d), OT_OK);
    assert_int_equal(r.events, 2);
    text[6 + n] = 'v'; /* now 4097 bytes */
    assert_int_equal(ot_cfg_parse("t.conf", (uint8_t *)text, strlen(text), record, &r, &d),
                     OT_ERR_CONFIG);
    assert_string_equal(d.msg, "t.conf:2: line is longer than 4096 bytes");
    ot_buf_release(&r.log);

    uint8_t *big = calloc(1, OT_CFG_FILE_MAX + 1);
    assert_non_null(big);
    assert_int_equal(ot_cfg_parse("big.conf", big, OT_CFG_FILE_MAX + 1, record, &r, &d),
                     OT_ERR_CONFIG);
    assert_string_equal(d.msg, "big.conf: larger than 1048576 bytes");
    free(big);
}

static void test_parse_syntax_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"a = 1\nkey value\n", "t.conf:2: expected '=' after key 'key'"},
        {"key\n", "t.conf:1: expected '=' after key 'key'"},
        {"= x\n", "t.conf:1: missing key before '='"},
        {"@x = 1\n", "t.conf:1: invalid character '@' at the start of a key"},
        {"\"a\" = 1\n", "t.conf:1: invalid character '\"' at the start of a key"},
        {"k@ = 1\n", "t.conf:1: invalid character '@' in key 'k'"},
        {"k\xc3\xa9 = 1\n", "t.conf:1: invalid character 0xc3 in key 'k'"},
        {"a = \"abc\n", "t.conf:1: unterminated quoted string"},
        {"a = \"abc\\\n", "t.conf:1: unterminated quoted string"},
        {"a = \"abc\\\"\n", "t.conf:1: unterminated quoted string"},
        {"a = \"a\\x\"\n",
         "t.conf:1: unknown escape \\'x' in quoted string (use \\\" \\\\ \\n \\t)"},
        {"a = \"x\" y\n", "t.conf:1: unexpected text after the closing quote"},
        {"a = \"x\" # comment\n", "t.conf:1: unexpected text after the closing quote"},
        {"a = \"x\"\"y\"\n", "t.conf:1: unexpected text after the closing quote"},
        {"[http\n", "t.conf:1: unterminated section header"},
        {"[http \"x\"\n", "t.conf:1: unterminated section header"},
        {"[http \"x]\n", "t.conf:1: unterminated quoted string"},
        {"[]\n", "t.conf:1: missing section name"},
        {"[ \"x\" ]\n", "t.conf:1: missing section name"},
        {"[\n", "t.conf:1: unterminated section header"},
        {"[a b]\n", "t.conf:1: invalid character 'b' in section name"},
        {"[a.b]\n", "t.conf:1: invalid character '.' in section name"},
        {"[a \"\"]\n", "t.conf:1: a section name must be non-empty, without tabs or newlines"},
        {"[a \"x\\ny\"]\n", "t.conf:1: a section name must be non-empty, without tabs or newlines"},
        {"[a] x\n", "t.conf:1: unexpected text after section header"},
        {"[a] # comment\n", "t.conf:1: unexpected text after section header"},
        {"a = 1\n\n\nb = x\x01y\n", "t.conf:4: control character 0x01"},
        {"a = x\x7f\n", "t.conf:1: control character 0x7f"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++)
        expect_syntax_error(cases[i].text, cases[i].msg);

    /* a NUL byte cannot go through strlen-based helpers */
    static const char nul[] = "a = 1\nb = x\0y\n";
    struct recorder r = {0};
    struct ot_diag d = {0};
    ot_buf_init(&r.log, 1 << 20);
    assert_int_equal(ot_cfg_parse(NULL, (const uint8_t *)nul, sizeof(nul) - 1, record, &r, &d),
                     OT_ERR_CONFIG);
    assert_string_equal(d.msg, "<config>:2: control character 0x00");
    assert_int_equal(ot_cfg_parse("x", NULL, 0, record, &r, &d), OT_OK);
    assert_int_equal(ot_cfg_parse("x", NULL, 1, record, &r, &d), OT_ERR_INVALID);
    assert_int_equal(ot_cfg_parse("x", (const uint8_t *)"a=1", 3, NULL, &r, &d), OT_ERR_INVALID);
    ot_buf_release(&r.log);
}

static void test_parse_callback_errors(void **state)
{
    (void)state;
    const char *text = "a = 1\n\n[s \"n\"]\nb = 2\n";
    struct recorder r = {.fail_at = 3, .with_message = true};
    struct ot_diag d = {0};
    ot_buf_init(&r.log, 1 << 20);
    assert_int_equal(ot_cfg_parse("t.conf", (const uint8_t *)text, strlen(text), record, &r, &d),
                     OT_ERR_INVALID);
    assert_string_equal(d.msg, "t.conf:4: boom at b");
    assert_int_equal(d.err, OT_ERR_INVALID);
    assert_string_equal(ot_buf_str(&r.log), "[/] a=1;[s/n];"); /* stopped there */

    ot_buf_release(&r.log);

    /* an error without a message gets the error's text; a stale message is not reused */
    r = (struct recorder){.fail_at = 2};
    ot_buf_init(&r.log, 1 << 20);
    snprintf(d.msg, sizeof(d.msg), "stale message from before");
    assert_int_equal(ot_cfg_parse("t.conf", (const uint8_t *)text, strlen(text), record, &r, &d),
                     OT_ERR_INVALID);
    assert_string_equal(d.msg, "t.conf:3: invalid argument");
    ot_buf_release(&r.log);
    r = (struct recorder){.fail_at = 1};
    ot_buf_init(&r.log, 1 << 20);
    assert_int_equal(ot_cfg_parse("t.conf", (const uint8_t *)text, strlen(text), record, &r, NULL),
                     OT_ERR_INVALID);
    ot_buf_release(&r.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_every_type),
        cmocka_unit_test(test_load_defaults),
        cmocka_unit_test(test_defaults_per_section),
        cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_value_format_errors),
        cmocka_unit_test(test_unknown_keys_and_sections),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_set_directly),
        cmocka_unit_test(test_strlist_split),
        cmocka_unit_test(test_parse_named_sections),
        cmocka_unit_test(test_parse_quoting),
        cmocka_unit_test(test_parse_comments_and_blanks),
        cmocka_unit_test(test_parse_crlf),
        cmocka_unit_test(test_parse_line_limits),
        cmocka_unit_test(test_parse_syntax_errors),
        cmocka_unit_test(test_parse_callback_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
