/* Device group filters (otterd's query.c): matching over a small fleet of devices (precedence,
 * every operator, in/not in, exists, glob, tag, version(), id, missing keys, numeric against
 * bytewise order), the version order table, refusals with their columns, the limits, and a
 * bounded fuzz loop of random bytes, random token soups and mutated filters that must never
 * crash (run it under the ASan/UBSan build). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "query.h"

/* ---- devices ------------------------------------------------------------------------------------ */

struct dev {
    struct srv_query_device d;
    json_t *attrs, *installed, *identity;
};

static json_t *json_or_null(const char *text)
{
    if (!text)
        return NULL;
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    return j;
}

static void dev_init(struct dev *v, int64_t id, const char *type, const char *status,
                     const char *attrs, const char *installed, const char *identity,
                     const char *const *tags, size_t ntags)
{
    v->attrs = json_or_null(attrs);
    v->installed = json_or_null(installed);
    v->identity = json_or_null(identity);
    v->d = (struct srv_query_device){.id = id, .device_type = type, .status = status,
                                     .attributes = v->attrs, .installed = v->installed,
                                     .identity = v->identity, .tags = tags, .ntags = ntags};
}

static void dev_release(struct dev *v)
{
    json_decref(v->attrs);
    json_decref(v->installed);
    json_decref(v->identity);
}

static const char *const GW_TAGS[] = {"lab", "production"};

/* The fleet every matching test uses. */
static struct dev gw_eu, gw_us, gw_old, cam, bare;

static int fleet_setup(void **state)
{
    (void)state;
    dev_init(&gw_eu, 17, "gw-2", "accepted",
             "{\"region\":\"eu\",\"serial\":\"GW2-0042\",\"cores\":\"4\",\"ram\":\"512\","
             "\"site.name:x-1\":\"b\",\"with space\":\"yes\",\"count\":12,\"beta\":true,"
             "\"nested\":{\"a\":1}}",
             "{\"rootfs\":{\"version\":\"4.1.0\",\"sha256\":\"00\"},"
             "\"app\":{\"version\":\"1.0~rc1\"}}",
             "{\"mac\":\"02:00:00:00:00:01\"}", GW_TAGS, 2);
    dev_init(&gw_us, 18, "gw-2", "accepted", "{\"region\":\"us\",\"serial\":\"GW2-0043\"}",
             "{\"rootfs\":{\"version\":\"4.2\"}}", "{\"mac\":\"02:00:00:00:00:02\"}", NULL, 0);
    dev_init(&gw_old, 3, "gw-1", "pending", "{\"region\":\"eu\",\"cores\":\"10\",\"ram\":\"9a\"}",
             "{\"rootfs\":{\"version\":\"3.9.12\"}}", "{}", GW_TAGS + 1, 1);
    dev_init(&cam, 9000000000000000001, "cam", "rejected", "{\"region\":\"EU\"}",
             "{\"rootfs\":{\"sha256\":\"00\"}}", NULL, NULL, 0);
    dev_init(&bare, 5, "", "pending", NULL, NULL, NULL, NULL, 0);
    return 0;
}

static int fleet_teardown(void **state)
{
    (void)state;
    dev_release(&gw_eu);
    dev_release(&gw_us);
    dev_release(&gw_old);
    dev_release(&cam);
    dev_release(&bare);
    return 0;
}

/* The devices a filter matches, as a string of letters: e (gw_eu), u (gw_us), o (gw_old), c (cam),
 * b (bare). */
static const char *members(const char *text)
{
    static char out[8];
    struct ot_diag d = {0};
    struct srv_query *q = NULL;
    enum ot_err err = srv_query_parse(text, &q, &d);
    if (err)
        fail_msg("'%s' does not parse: %s", text, d.msg);
    const struct {
        char c;
        const struct dev *v;
    } all[] = {{'e', &gw_eu}, {'u', &gw_us}, {'o', &gw_old}, {'c', &cam}, {'b', &bare}};
    size_t n = 0;
    for (size_t i = 0; i < OT_ARRAY_SIZE(all); i++)
        if (srv_query_match(q, &all[i].v->d))
            out[n++] = all[i].c;
    out[n] = '\0';
    srv_query_free(q);
    return out;
}

struct case_ {
    const char *filter, *members;
};

static void check_cases(const struct case_ *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *got = members(cases[i].filter);
        if (strcmp(got, cases[i].members) != 0)
            fail_msg("'%s' matched \"%s\", expected \"%s\"", cases[i].filter, got,
                     cases[i].members);
    }
}

#define CHECK(...)                                                                                 \
    do {                                                                                           \
        const struct case_ cases_[] = {__VA_ARGS__};                                               \
        check_cases(cases_, OT_ARRAY_SIZE(cases_));                                                \
    } while (0)

/* ---- matching ----------------------------------------------------------------------------------- */

static void test_example(void **state)
{
    (void)state;
    CHECK({"device_type = \"gw-2\" and attr.region in (\"eu\", \"us\") and "
           "version(\"rootfs\") < \"4.2\"",
           "e"},
          {"device_type = \"gw-2\" and attr.region in (\"eu\", \"us\") and "
           "version(\"rootfs\") <= \"4.2\"",
           "eu"},
          {"device_type = \"gw-2\"", "eu"}, {"status = \"pending\"", "ob"});
}

static void test_precedence(void **state)
{
    (void)state;
    CHECK(/* and binds tighter than or, on either side */
          {"device_type = \"cam\" or device_type = \"gw-2\" and attr.region = \"us\"", "uc"},
          {"device_type = \"gw-2\" and attr.region = \"us\" or device_type = \"cam\"", "uc"},
          {"(device_type = \"cam\" or device_type = \"gw-2\") and attr.region = \"us\"", "u"},
          /* not binds tighter than and */
          {"not device_type = \"gw-2\" and status = \"pending\"", "ob"},
          {"not (device_type = \"gw-2\" and status = \"accepted\")", "ocb"},
          {"not not device_type = \"gw-2\"", "eu"},
          {"((((device_type = \"gw-1\"))))", "o"},
          /* long chains, mixed */
          {"id = 1 or id = 2 or id = 3 or id = 5", "ob"},
          {"id > 1 and id < 100 and id != 17 and status = \"accepted\"", "u"},
          {"id = 17 or id = 18 and status = \"pending\" or id = 3", "eo"});
}

static void test_words_and_blanks(void **state)
{
    (void)state;
    CHECK({"DEVICE_TYPE = \"gw-2\" AND Attr.region IN (\"us\")", "u"},
          {"NOT Tag(\"lab\") AND EXISTS(attr.ram)", "o"},
          {"device_type=\"gw-1\"", "o"},
          {"\t device_type\n=\r\n\"gw-1\"  ", "o"},
          {"attr.region in(\"us\")", "u"});
}

static void test_operators_on_text(void **state)
{
    (void)state;
    CHECK({"attr.region = \"eu\"", "eo"},         /* case-sensitive */
          {"attr.region != \"eu\"", "uc"},        /* missing: false, even for != */
          {"attr.region < \"eu\"", "c"},          /* bytewise: "EU" < "eu" */
          {"attr.region >= \"eu\"", "euo"},
          {"attr.region > \"eu\"", "u"},
          {"attr.region <= \"EU\"", "c"},
          {"status = \"accepted\"", "eu"},
          {"status != \"accepted\"", "ocb"},
          {"device_type != \"gw-2\"", "oc"},      /* unknown type: missing, false */
          {"identity.mac = \"02:00:00:00:00:02\"", "u"},
          {"identity.mac > \"02:00:00:00:00:01\"", "u"},
          {"identity[\"mac\"] = \"02:00:00:00:00:01\"", "e"});
}

static void test_numeric_and_bytewise(void **state)
{
    (void)state;
    CHECK({"attr.cores > 5", "o"},       /* 10 > 5 numerically, though "10" < "5" bytewise */
          {"attr.cores > \"5\"", "o"},   /* a quoted number is a number too */
          {"attr.cores < 5", "e"},
          {"attr.cores >= 4.0", "eo"},
          {"attr.cores <= 4.00", "e"},
          {"attr.cores = 4", "e"},
          {"attr.cores = 4.0", ""},      /* = compares the text */
          {"attr.cores > -1", "eo"},
          {"attr.cores > -11.5", "eo"},
          {"attr.cores < 0.5", ""},
          {"attr.ram > 100", "eo"},      /* "9a" is no number: bytewise, and '9' > '1' */
          {"attr.ram < 1000", "e"},      /* 512 < 1000 as numbers; "9a" > "1000" as text */
          {"attr.ram < \"9b\"", "eo"},   /* "512" < "9b" bytewise as well */
          {"attr.count = 12", "e"},      /* a JSON number attribute reads as its decimal text */
          {"attr.count > 9", "e"},
          {"attr.beta = \"true\"", "e"}, /* a boolean as true/false */
          {"exists(attr.nested)", ""});  /* an object is no value: missing */
}

static void test_id(void **state)
{
    (void)state;
    CHECK({"id = 17", "e"}, {"id = \"17\"", "e"}, {"id = 17.0", "e"}, {"id != 17", "uocb"},
          {"id < 10", "ob"}, {"id >= 18", "uc"}, {"id > 9000000000000000000", "c"},
          {"id < 9000000000000000001", "euob"}, /* exact past 2^53: no rounding through double */
          {"id in (3, 5, 99)", "ob"}, {"id not in (3, 5)", "euc"}, {"id ~ \"1?\"", "eu"},
          {"id ~ \"9*1\"", "c"}, {"exists(id)", "euocb"});
}

static void test_in_not_in(void **state)
{
    (void)state;
    CHECK({"attr.region in (\"eu\")", "eo"},
          {"attr.region in (\"eu\", \"us\", \"EU\")", "euoc"},
          {"attr.region not in (\"eu\", \"us\")", "c"},  /* missing: false for not in too */
          {"not attr.region in (\"eu\", \"us\")", "cb"}, /* ... but true under not */
          {"device_type not in (\"gw-2\")", "oc"},
          {"status in (\"pending\",\"rejected\")", "ocb"},
          {"version(\"rootfs\") in (\"4.2.0\", \"4.1\")", ""},
          {"version(\"rootfs\") in (\"04.2\", \"4.1.00\")", "eu"}); /* version equality */
}

static void test_missing_and_exists(void **state)
{
    (void)state;
    CHECK({"exists(attr.region)", "euoc"},
          {"not exists(attr.region)", "b"},
          {"attr.x = \"1\"", ""},
          {"attr.x != \"1\"", ""},
          {"not (attr.x = \"1\")", "euocb"},
          {"attr.x ~ \"*\"", ""},
          {"exists(device_type)", "euoc"},            /* "" is unknown */
          {"exists(status)", "euocb"},
          {"exists(identity.mac)", "eu"},
          {"exists(version(\"rootfs\"))", "euo"},    /* cam's rootfs has no version */
          {"exists(version(\"app\"))", "e"},
          {"version(\"nope\") < \"99\"", ""},
          {"version(\"nope\") != \"1\"", ""},
          {"exists(attr[\"with space\"])", "e"},
          {"exists(attr.site.name:x-1)", "e"});
}

static void test_glob(void **state)
{
    (void)state;
    CHECK({"attr.serial ~ \"GW2-*\"", "eu"},
          {"attr.serial ~ \"GW2-004?\"", "eu"},
          {"attr.serial ~ \"GW2-0042\"", "e"},
          {"attr.serial ~ \"GW2\"", ""},            /* whole text */
          {"attr.serial ~ \"*3\"", "u"},
          {"attr.serial ~ \"*\"", "eu"},
          {"attr.serial ~ \"G*2*4*\"", "eu"},
          {"attr.serial ~ \"gw2-*\"", ""},          /* case-sensitive */
          {"attr.region ~ \"?\"", ""},
          {"attr.region ~ \"??\"", "euoc"},
          {"identity.mac ~ \"*:01\"", "e"},
          {"version(\"rootfs\") ~ \"4.*\"", "eu"},
          {"device_type ~ \"gw-[12]\"", ""},        /* no classes: '[' is literal */
          {"not attr.serial ~ \"*42\"", "uocb"});
}

static void test_glob_escapes_and_utf8(void **state)
{
    (void)state;
    struct dev v;
    dev_init(&v, 1, "t", "accepted", "{\"s\":\"a*b?c\\\\d\",\"u\":\"\xc3\xa9t\xc3\xa9\"}", NULL,
             NULL, NULL, 0);
    const struct {
        const char *filter;
        bool match;
    } cases[] = {
        {"attr.s ~ \"a\\\\*b\\\\?c\\\\\\\\d\"", true}, /* pattern a\*b\?c\\d: all literal */
        {"attr.s ~ \"a\\\\*b*\"", true},
        {"attr.s ~ \"ax*\"", false},
        {"attr.s ~ \"a\\\\?*\"", false},               /* the second byte is '*', not '?' */
        {"attr.s = \"a*b?c\\\\d\"", true},
        {"attr.u ~ \"?t?\"", true},                     /* '?' is one UTF-8 character */
        {"attr.u ~ \"??t??\"", false},
        {"attr.u ~ \"*t\xc3\xa9\"", true},
        {"attr.u ~ \"\xc3\xa9*\"", true},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        struct srv_query *q = NULL;
        assert_int_equal(srv_query_parse(cases[i].filter, &q, NULL), OT_OK);
        if (srv_query_match(q, &v.d) != cases[i].match)
            fail_msg("'%s' should %smatch", cases[i].filter, cases[i].match ? "" : "not ");
        srv_query_free(q);
    }
    dev_release(&v);
}

static void test_tag(void **state)
{
    (void)state;
    CHECK({"tag(\"lab\")", "e"}, {"tag(\"production\")", "eo"}, {"tag(\"Lab\")", ""},
          {"not tag(\"lab\")", "uocb"}, {"tag(\"lab\") or tag(\"production\")", "eo"},
          {"tag(\"production\") and not tag(\"lab\")", "o"});
}

static void test_version_operand(void **state)
{
    (void)state;
    CHECK({"version(\"rootfs\") < \"4.2\"", "eo"},
          {"version(\"rootfs\") < 4.2", "eo"},     /* a number's text is the version */
          {"version(\"rootfs\") = \"4.2\"", "u"},
          {"version(\"rootfs\") = \"4.02\"", "u"},  /* version order, not text */
          {"version(\"rootfs\") > \"3.9.9\"", "euo"},
          {"version(\"rootfs\") >= \"4.1\"", "eu"},
          {"version(\"rootfs\") != \"4.2\"", "eo"},
          {"version(\"app\") < \"1.0\"", "e"},     /* 1.0~rc1 < 1.0 */
          {"VERSION(\"rootfs\") > \"4.1.0~\"", "eu"});
}

static void test_device_without_anything(void **state)
{
    (void)state;
    /* every pointer NULL: nothing matches but negations, nothing crashes */
    struct srv_query_device none = {.id = 1};
    const char *filters[] = {"device_type = \"x\"", "status != \"y\"", "attr.a = \"1\"",
                             "identity.b ~ \"*\"", "version(\"r\") > \"0\"", "tag(\"t\")",
                             "exists(status)"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(filters); i++) {
        struct srv_query *q = NULL;
        assert_int_equal(srv_query_parse(filters[i], &q, NULL), OT_OK);
        assert_false(srv_query_match(q, &none));
        srv_query_free(q);
    }
    struct srv_query *q = NULL;
    assert_int_equal(srv_query_parse("not exists(status) and id = 1", &q, NULL), OT_OK);
    assert_true(srv_query_match(q, &none));
    assert_false(srv_query_match(NULL, &none));
    assert_false(srv_query_match(q, NULL));
    srv_query_free(q);
    srv_query_free(NULL);
}

/* ---- version order ------------------------------------------------------------------------------ */

static void test_version_cmp(void **state)
{
    (void)state;
    const struct {
        const char *a, *b;
        int want;
    } cases[] = {
        {"1.2", "1.10", -1},     {"1.0~rc1", "1.0", -1}, {"4.1.9", "4.2", -1},
        {"4.2", "4.2", 0},       {"1.0a", "1.0", 1},     {"1.0", "1.0.0", -1},
        {"4.02", "4.2", 0},      {"", "", 0},            {"", "0", 0},
        {"~", "", -1},           {"~~", "~", -1},        {"~~a", "~", -1},
        {"1.0~rc1", "1.0~rc2", -1}, {"1.0~rc2", "1.0~beta", 1}, {"1.0a", "1.0b", -1},
        {"1.0a", "1.0.", -1},    {"1.0-1", "1.0.1", -1}, /* '-' < '.' (as bytes, both +256) */
        {"1.0+x", "1.0", 1},     {"a", "1", 1},          {"10", "9", 1},
        {"2.0", "10.0", -1},     {"1.000000000000000000000000000001", "1.1", 0},
        {"99999999999999999999999", "99999999999999999999998", 1},
        {"1.9", "1.10", -1},     {"1.0.0", "1.0", 1},    {"1", "1.0", -1},
        {"4.1.0", "4.2", -1},    {"3.9.12", "4.2", -1},  {"\xc3\xa9", "z", 1},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        int got = srv_version_cmp(cases[i].a, cases[i].b);
        int rev = srv_version_cmp(cases[i].b, cases[i].a);
        int sign = (got > 0) - (got < 0), rsign = (rev > 0) - (rev < 0);
        if (sign != cases[i].want || rsign != -cases[i].want)
            fail_msg("srv_version_cmp(\"%s\", \"%s\") = %d (reverse %d), expected %d",
                     cases[i].a, cases[i].b, got, rev, cases[i].want);
    }
}

/* ---- refusals and limits ------------------------------------------------------------------------ */

struct refusal {
    const char *filter;
    enum ot_err err;
    int column;
};

static void check_refusals(const struct refusal *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct ot_diag d = {0};
        struct srv_query *q = (struct srv_query *)&d; /* must stay untouched */
        enum ot_err err = srv_query_parse(r[i].filter, &q, &d);
        char want[32];
        snprintf(want, sizeof(want), "at column %d: ", r[i].column);
        if (err != r[i].err || strncmp(d.msg, want, strlen(want)) != 0)
            fail_msg("'%s': got %s \"%s\", expected %s \"%s...\"", r[i].filter, ot_err_name(err),
                     d.msg, ot_err_name(r[i].err), want);
        assert_ptr_equal(q, (struct srv_query *)&d);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    const struct refusal cases[] = {
        {"", OT_ERR_FORMAT, 1},
        {"   ", OT_ERR_FORMAT, 4},
        {"device_type", OT_ERR_FORMAT, 12},
        {"device_type =", OT_ERR_FORMAT, 14},
        {"device_type == \"a\"", OT_ERR_FORMAT, 14},
        {"device_type = gw", OT_ERR_FORMAT, 15},
        {"device_type = \"gw", OT_ERR_FORMAT, 15},              /* unterminated: its quote */
        {"device_type = \"a\\nb\"", OT_ERR_FORMAT, 17},         /* unknown escape: its backslash */
        {"device_type = \"a\" and", OT_ERR_FORMAT, 22},
        {"device_type = \"a\" or or status = \"b\"", OT_ERR_FORMAT, 22},
        {"device_type = \"a\" status = \"b\"", OT_ERR_FORMAT, 19},
        {"device_type = \"a\")", OT_ERR_FORMAT, 18},
        {"(device_type = \"a\"", OT_ERR_FORMAT, 19},
        {"()", OT_ERR_FORMAT, 2},
        {"colour = \"red\"", OT_ERR_FORMAT, 1},
        {"  tag = \"x\"", OT_ERR_FORMAT, 7},
        {"tag(x)", OT_ERR_FORMAT, 5},
        {"tag(\"\")", OT_ERR_FORMAT, 5},
        {"tag(\"x\"", OT_ERR_FORMAT, 8},
        {"attr = \"x\"", OT_ERR_FORMAT, 6},
        {"attr. = \"x\"", OT_ERR_FORMAT, 6},
        {"attr.a/b = \"x\"", OT_ERR_FORMAT, 7},
        {"attr[\"\"] = \"x\"", OT_ERR_FORMAT, 6},
        {"attr[\"a\" = \"x\"", OT_ERR_FORMAT, 10},
        {"attr[a] = \"x\"", OT_ERR_FORMAT, 6},
        {"identity = \"x\"", OT_ERR_FORMAT, 10},
        {"version = \"1\"", OT_ERR_FORMAT, 9},
        {"version(\"\") = \"1\"", OT_ERR_FORMAT, 9},
        {"version(rootfs) = \"1\"", OT_ERR_FORMAT, 9},
        {"id = \"seven\"", OT_ERR_FORMAT, 6},
        {"id in (1, \"x\")", OT_ERR_FORMAT, 11},
        {"id = 4.2.1", OT_ERR_FORMAT, 6},
        {"attr.v = 1.", OT_ERR_FORMAT, 10},
        {"attr.v = .5", OT_ERR_FORMAT, 10},
        {"attr.v = -", OT_ERR_FORMAT, 10},
        {"attr.v = 12ab", OT_ERR_FORMAT, 10},
        {"attr.v = 1-2", OT_ERR_FORMAT, 10},
        {"attr.v in ()", OT_ERR_FORMAT, 12},
        {"attr.v in (\"a\",)", OT_ERR_FORMAT, 16},
        {"attr.v in (\"a\" \"b\")", OT_ERR_FORMAT, 16},
        {"attr.v in \"a\"", OT_ERR_FORMAT, 11},
        {"attr.v not \"a\"", OT_ERR_FORMAT, 12},
        {"attr.v not = \"a\"", OT_ERR_FORMAT, 12},
        {"exists(attr.v", OT_ERR_FORMAT, 14},
        {"exists(tag)", OT_ERR_FORMAT, 8},
        {"exists(\"a\")", OT_ERR_FORMAT, 8},
        {"not", OT_ERR_FORMAT, 4},
        {"status = 'x'", OT_ERR_FORMAT, 10},
        {"status = \"x\" \x01", OT_ERR_FORMAT, 14},
        {"status = \"x\" && id = 1", OT_ERR_FORMAT, 14},
        {"status \xff \"x\"", OT_ERR_FORMAT, 8},
        {"status => \"x\"", OT_ERR_FORMAT, 9},
        {"id = 3or id = 5", OT_ERR_FORMAT, 6},
        {"status = \"x\"\nand\nid = x", OT_ERR_FORMAT, 23},    /* a newline is one byte */
    };
    check_refusals(cases, OT_ARRAY_SIZE(cases));
    struct ot_diag d = {0};
    struct srv_query *q = NULL;
    assert_int_equal(srv_query_parse(NULL, &q, &d), OT_ERR_INVALID);
    assert_null(q);
    /* messages say what was expected without echoing the input's strings */
    assert_int_equal(srv_query_parse("status = \"x\" \x1b[31m", &q, &d), OT_ERR_FORMAT);
    assert_null(strchr(d.msg, '\x1b'));
    assert_non_null(strstr(d.msg, "byte 0x1b"));
    assert_int_equal(srv_query_parse("colour = \"secret\"", &q, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "unknown field 'colour'"));
    assert_int_equal(srv_query_parse("attr.x = \"secret", &q, &d), OT_ERR_FORMAT);
    assert_null(strstr(d.msg, "secret"));
}

/* A filter of n comparisons "id = 1 or id = 1 ...": n + 1 nodes (the or chain is one). */
static char *chain(size_t n)
{
    char *s = malloc(n * 12 + 1);
    assert_non_null(s);
    s[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, 13, "%sid = 1", i ? " or " : "");
    return s;
}

static char *nest(size_t n, const char *open, const char *inner, const char *close)
{
    size_t cap = n * (strlen(open) + strlen(close)) + strlen(inner) + 1, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s", open);
    len += (size_t)snprintf(s + len, cap - len, "%s", inner);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s", close);
    return s;
}

static void expect_parse(const char *text, enum ot_err want, int column)
{
    struct ot_diag d = {0};
    struct srv_query *q = NULL;
    enum ot_err err = srv_query_parse(text, &q, &d);
    if (err != want)
        fail_msg("got %s (%s), expected %s", ot_err_name(err), d.msg, ot_err_name(want));
    if (want == OT_OK) {
        struct srv_query_device dev = {.id = 1, .status = "accepted"};
        assert_true(srv_query_match(q, &dev)); /* every limit test filter matches this one */
        srv_query_free(q);
        return;
    }
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "at column %d: ", column);
    if (strncmp(d.msg, prefix, strlen(prefix)) != 0)
        fail_msg("message \"%s\", expected \"%s...\"", d.msg, prefix);
}

static void test_limits(void **state)
{
    (void)state;
    /* nodes: 255 comparisons + the or = 256; one more is too many */
    char *s = chain(255);
    expect_parse(s, OT_OK, 0);
    free(s);
    s = chain(256);
    expect_parse(s, OT_ERR_LIMIT, (int)(255 * 10 + 1)); /* at the 256th comparison */
    free(s);
    /* each value of an in list is a node: in + 255 values = 256 */
    char list[1024] = "id in (1", more[1024];
    for (int i = 1; i < 255; i++)
        memcpy(list + strlen(list), ",1", 3);
    memcpy(more, list, strlen(list));
    memcpy(more + strlen(list), ",1)", 4);
    memcpy(list + strlen(list), ")", 2);
    assert_int_equal(strlen(list), 7 + 255 * 2);
    expect_parse(list, OT_OK, 0);
    expect_parse(more, OT_ERR_LIMIT, (int)strlen(more) - 1);
    /* depth: 32 nested parentheses or nots, not 33 */
    s = nest(32, "(", "id = 1", ")");
    expect_parse(s, OT_OK, 0);
    free(s);
    s = nest(33, "(", "id = 1", ")");
    expect_parse(s, OT_ERR_LIMIT, 33);
    free(s);
    s = nest(32, "not (", "id = 2", ")"); /* 64 levels: past the limit at the 17th not */
    expect_parse(s, OT_ERR_LIMIT, 17 * 5 - 4);
    free(s);
    s = nest(16, "not (", "id = 1", ")"); /* 32 levels, an even number of nots */
    expect_parse(s, OT_OK, 0);
    free(s);
    s = nest(33, "not ", "id = 2", "");
    expect_parse(s, OT_ERR_LIMIT, 32 * 4 + 1);
    free(s);
    /* text: 4096 bytes (blanks count) pass, 4097 do not */
    char text[SRV_QUERY_TEXT_MAX + 2];
    memset(text, ' ', sizeof(text));
    memcpy(text, "id = 1", 6);
    text[SRV_QUERY_TEXT_MAX] = '\0';
    expect_parse(text, OT_OK, 0);
    text[SRV_QUERY_TEXT_MAX] = ' ';
    text[SRV_QUERY_TEXT_MAX + 1] = '\0';
    expect_parse(text, OT_ERR_LIMIT, SRV_QUERY_TEXT_MAX + 1);
    /* keys: 64 bytes, dotted or bracketed */
    char key[80], f[128];
    memset(key, 'k', 65);
    key[64] = '\0';
    snprintf(f, sizeof(f), "attr.%s = \"1\" or id = 1", key);
    expect_parse(f, OT_OK, 0);
    snprintf(f, sizeof(f), "attr[\"%s\"] = \"1\" or id = 1", key);
    expect_parse(f, OT_OK, 0);
    key[64] = 'k';
    key[65] = '\0';
    snprintf(f, sizeof(f), "attr.%s = \"1\"", key);
    expect_parse(f, OT_ERR_FORMAT, 6);
    snprintf(f, sizeof(f), "identity[\"%s\"] = \"1\"", key);
    expect_parse(f, OT_ERR_FORMAT, 10);
    /* the largest text the string space has to hold: one long string */
    memset(text, 'x', sizeof(text));
    memcpy(text, "status != \"", 11);
    text[SRV_QUERY_TEXT_MAX - 1] = '"';
    text[SRV_QUERY_TEXT_MAX] = '\0';
    expect_parse(text, OT_OK, 0);
}

/* ---- fuzz-ish ----------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Parses; when it parses, matches against the whole fleet. Returns whether it parsed, and checks
 * that a refusal always says where. */
static bool try_filter(const char *text)
{
    struct ot_diag d = {0};
    struct srv_query *q = NULL;
    enum ot_err err = srv_query_parse(text, &q, &d);
    if (err) {
        if ((err != OT_ERR_FORMAT && err != OT_ERR_LIMIT) || strncmp(d.msg, "at column ", 10))
            fail_msg("refusal without a column: %s \"%s\"", ot_err_name(err), d.msg);
        assert_null(q);
        return false;
    }
    const struct dev *all[] = {&gw_eu, &gw_us, &gw_old, &cam, &bare};
    for (size_t i = 0; i < OT_ARRAY_SIZE(all); i++)
        (void)srv_query_match(q, &all[i]->d);
    srv_query_free(q);
    return true;
}

static void test_fuzz(void **state)
{
    (void)state;
    static const char *const tokens[] = {
        "device_type", "status", "id", "attr.region", "attr[\"a b\"]", "identity.mac",
        "version(\"rootfs\")", "version(\"app\")", "tag(\"lab\")", "exists(", "exists(attr.x)",
        "and", "or", "not", "in", "not in", "(", ")", ",", "=", "!=", "<", "<=", ">", ">=", "~",
        "\"eu\"", "\"4.2\"", "\"GW2-*\"", "\"*?*\\\\\"", "12", "-3.5", "\"\"", "\"", "\\", "[",
        "]", ".", "attr.", "tag", "4.2.1", "\xc3\xa9", "\xff", "*"};
    char buf[1024];
    size_t parsed = 0;
    /* 1. random bytes: almost all refused, none may crash or read past the end */
    for (int round = 0; round < 20000; round++) {
        size_t n = rnd() % 64;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)(1 + rnd() % 255);
        buf[n] = '\0';
        parsed += try_filter(buf);
    }
    /* 2. token soups: deep into the grammar, often valid */
    for (int round = 0; round < 20000; round++) {
        size_t n = 1 + rnd() % 40, len = 0;
        for (size_t i = 0; i < n && len < sizeof(buf) - 64; i++)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s",
                                    rnd() % 4 ? " " : "", tokens[rnd() % OT_ARRAY_SIZE(tokens)]);
        parsed += try_filter(buf);
    }
    /* 3. valid filters with a byte replaced, inserted or cut off */
    static const char *const seeds[] = {
        ("device_type = \"gw-2\" and attr.region in (\"eu\", \"us\") and "
         "version(\"rootfs\") < \"4.2\""),
        "not (tag(\"lab\") or exists(identity.mac)) and id not in (1, 2, 3)",
        "attr[\"with space\"] ~ \"y*s\" or attr.cores >= 4.5"};
    for (int round = 0; round < 20000; round++) {
        const char *seed = seeds[rnd() % OT_ARRAY_SIZE(seeds)];
        size_t len = strlen(seed), at = rnd() % len;
        snprintf(buf, sizeof(buf), "%s", seed);
        switch (rnd() % 3) {
        case 0: /* replace */
            buf[at] = (char)(1 + rnd() % 255);
            break;
        case 1: /* insert */
            memmove(buf + at + 1, buf + at, len - at + 1);
            buf[at] = (char)(1 + rnd() % 255);
            break;
        default: /* cut */
            buf[at] = '\0';
            break;
        }
        parsed += try_filter(buf);
    }
    /* the loops reached the evaluator, not only the first error */
    print_message("# fuzz: %zu of 60000 filters parsed\n", parsed);
    assert_true(parsed > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_words_and_blanks),
        cmocka_unit_test(test_operators_on_text),
        cmocka_unit_test(test_numeric_and_bytewise),
        cmocka_unit_test(test_id),
        cmocka_unit_test(test_in_not_in),
        cmocka_unit_test(test_missing_and_exists),
        cmocka_unit_test(test_glob),
        cmocka_unit_test(test_glob_escapes_and_utf8),
        cmocka_unit_test(test_tag),
        cmocka_unit_test(test_version_operand),
        cmocka_unit_test(test_device_without_anything),
        cmocka_unit_test(test_version_cmp),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, fleet_setup, fleet_teardown);
}
