/* Strict JSON (json.c): what ot_json_parse refuses, the typed getters' errors, canonical output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/json.h"

static json_t *parse_ok(const char *text)
{
    json_t *v = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ot_json_parse((const uint8_t *)text, strlen(text), &v, &d);
    if (err)
        fail_msg("parse of '%s' failed: %s", text, d.msg);
    assert_non_null(v);
    return v;
}

static enum ot_err parse_len(const char *text, size_t len, struct ot_diag *d)
{
    json_t *v = (json_t *)(uintptr_t)0x1; /* must stay untouched on error */
    enum ot_err err = ot_json_parse((const uint8_t *)text, len, &v, d);
    if (err)
        assert_ptr_equal(v, (json_t *)(uintptr_t)0x1);
    else
        json_decref(v);
    return err;
}

static enum ot_err parse_err(const char *text, struct ot_diag *d)
{
    return parse_len(text, strlen(text), d);
}

/* "[[[...]]]" nested depth times. */
static char *nested(size_t depth)
{
    char *s = malloc(2 * depth + 1);
    assert_non_null(s);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\0';
    return s;
}

static void test_parse_valid(void **state)
{
    (void)state;
    json_t *v = parse_ok(" {\"a\": [1, 2.5, \"x\", true, null], \"b\": {}}\n");
    assert_true(json_is_object(v));
    assert_int_equal(json_array_size(json_object_get(v, "a")), 5);
    json_decref(v);
    v = parse_ok("42"); /* any value, not only objects */
    assert_int_equal(json_integer_value(v), 42);
    json_decref(v);
}

static void test_duplicates_rejected(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    assert_int_equal(parse_err("{\"a\":1,\"a\":2}", &d), OT_ERR_FORMAT);
    assert_int_equal(d.err, OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "duplicate object key"));
    assert_non_null(strstr(d.msg, "line 1"));
    /* Same key spelt with an escape, and deep inside. */
    assert_int_equal(parse_err("{\"a\":1,\"\\u0061\":2}", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("[{\"x\":{\"k\":1,\"k\":1}}]", NULL), OT_ERR_FORMAT);
}

static void test_depth_limit(void **state)
{
    (void)state;
    char *ok = nested(OT_JSON_MAX_DEPTH), *bad = nested(OT_JSON_MAX_DEPTH + 1),
         *huge = nested(5000);
    struct ot_diag d = {0};
    assert_int_equal(parse_err(ok, &d), OT_OK);
    assert_int_equal(parse_err(bad, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "deeper than 16"));
    assert_int_equal(parse_err(huge, NULL), OT_ERR_FORMAT);
    /* Objects count as levels too: 16 objects deep with a scalar inside is fine, 17 is not. */
    char obj[512] = "";
    for (int i = 0; i < OT_JSON_MAX_DEPTH; i++)
        memcpy(obj + strlen(obj), "{\"a\":", 6);
    memcpy(obj + strlen(obj), "1", 2);
    for (int i = 0; i < OT_JSON_MAX_DEPTH; i++)
        memcpy(obj + strlen(obj), "}", 2);
    assert_int_equal(parse_err(obj, NULL), OT_OK);
    char obj2[520] = "[";
    memcpy(obj2 + 1, obj, strlen(obj) + 1);
    memcpy(obj2 + strlen(obj2), "]", 2);
    assert_int_equal(parse_err(obj2, NULL), OT_ERR_FORMAT);
    free(ok);
    free(bad);
    free(huge);
}

static void test_nul_refused(void **state)
{
    (void)state;
    assert_int_equal(parse_err("\"a\\u0000b\"", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("{\"a\\u0000\":1}", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_len("\"a\0b\"", 5, NULL), OT_ERR_FORMAT); /* raw NUL in a string */
    assert_int_equal(parse_len("{}\0", 3, NULL), OT_ERR_FORMAT);     /* raw NUL after */
}

static void test_malformed(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    assert_int_equal(parse_len("", 0, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "invalid JSON at line 1 column 0"));
    json_t *v = NULL;
    assert_int_equal(ot_json_parse(NULL, 0, &v, &d), OT_ERR_FORMAT); /* empty, not "no buffer" */
    assert_non_null(strstr(d.msg, "invalid JSON at line 1"));
    assert_int_equal(ot_json_parse(NULL, 5, &v, &d), OT_ERR_INVALID);
    assert_null(v);
    assert_int_equal(parse_err("{} x", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("{}{}", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("{\"a\":1,}", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("{'a':1}", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("\"\xff\"", NULL), OT_ERR_FORMAT);    /* bad UTF-8 */
    assert_int_equal(parse_err("\"\\ud800\"", NULL), OT_ERR_FORMAT); /* lone surrogate */
    assert_int_equal(parse_err("9223372036854775808", NULL), OT_ERR_FORMAT);
    assert_int_equal(parse_err("1e400", NULL), OT_ERR_FORMAT);
    /* The message shows where, and quotes input only as printable ASCII. */
    assert_int_equal(parse_err("[\x1b[2J]", &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "line 1 column 2"));
    assert_null(strchr(d.msg, '\x1b'));
}

static void test_only_keys(void **state)
{
    (void)state;
    static const char *const allowed[] = {"a", "b", NULL};
    struct ot_diag d = {0};
    json_t *v = parse_ok("{\"a\":1,\"b\":2}");
    assert_int_equal(ot_json_only_keys(v, allowed, "thing", &d), OT_OK);
    json_decref(v);
    v = parse_ok("{\"a\":1,\"c\":2}");
    assert_int_equal(ot_json_only_keys(v, allowed, "thing", &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "thing: unknown field 'c'");
    json_decref(v);
    v = parse_ok("{\"\\u001b[31m\":1}");
    assert_int_equal(ot_json_only_keys(v, allowed, "thing", &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "thing: unknown field '?[31m'");
    json_decref(v);
    v = parse_ok("[1]");
    assert_int_equal(ot_json_only_keys(v, allowed, "thing", &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "thing: not a JSON object");
    json_decref(v);
}

static void test_get_str(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    json_t *v = parse_ok("{\"s\":\"hello\",\"n\":1,\"c\":\"a\\u0001b\",\"del\":\"\\u007f\","
                         "\"u\":\"h\\u00e9\"}");
    const char *s = NULL;
    assert_int_equal(ot_json_get_str(v, "s", true, 5, "doc", &s, &d), OT_OK);
    assert_string_equal(s, "hello");
    assert_int_equal(ot_json_get_str(v, "s", true, 4, "doc", &s, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 's' is longer than 4 bytes");
    assert_int_equal(ot_json_get_str(v, "n", true, 5, "doc", &s, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 'n' must be a string");
    assert_int_equal(ot_json_get_str(v, "c", true, 5, "doc", &s, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 'c' contains control characters");
    assert_int_equal(ot_json_get_str(v, "del", true, 5, "doc", &s, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_str(v, "u", true, 3, "doc", &s, &d), OT_OK); /* UTF-8: 3 bytes */
    assert_int_equal(ot_json_get_str(v, "zz", true, 5, "doc", &s, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: missing field 'zz'");
    s = "untouched";
    assert_int_equal(ot_json_get_str(v, "zz", false, 5, "doc", &s, &d), OT_OK);
    assert_string_equal(s, "untouched");
    json_decref(v);
}

static void test_get_u64(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    json_t *v =
        parse_ok("{\"a\":7,\"neg\":-1,\"real\":1.0,\"str\":\"7\",\"big\":9223372036854775807,"
                 "\"t\":true}");
    uint64_t u = 0;
    assert_int_equal(ot_json_get_u64(v, "a", true, 7, "doc", &u, &d), OT_OK);
    assert_int_equal(u, 7);
    assert_int_equal(ot_json_get_u64(v, "a", true, 6, "doc", &u, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 'a' is larger than 6");
    assert_int_equal(ot_json_get_u64(v, "big", true, UINT64_MAX, "doc", &u, &d), OT_OK);
    assert_true(u == (uint64_t)INT64_MAX);
    const char *bad[] = {"neg", "real", "str", "t"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        assert_int_equal(ot_json_get_u64(v, bad[i], true, 100, "doc", &u, &d), OT_ERR_FORMAT);
        assert_non_null(strstr(d.msg, "must be a non-negative integer"));
    }
    u = 99;
    assert_int_equal(ot_json_get_u64(v, "missing", false, 100, "doc", &u, &d), OT_OK);
    assert_int_equal(u, 99);
    assert_int_equal(ot_json_get_u64(v, "missing", true, 100, "doc", &u, &d), OT_ERR_FORMAT);
    json_decref(v);
}

static void test_get_bool(void **state)
{
    (void)state;
    json_t *v = parse_ok("{\"t\":true,\"f\":false,\"one\":1,\"s\":\"true\"}");
    bool b = false;
    assert_int_equal(ot_json_get_bool(v, "t", true, "doc", &b, NULL), OT_OK);
    assert_true(b);
    assert_int_equal(ot_json_get_bool(v, "f", true, "doc", &b, NULL), OT_OK);
    assert_false(b);
    assert_int_equal(ot_json_get_bool(v, "one", true, "doc", &b, NULL), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_bool(v, "s", true, "doc", &b, NULL), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_bool(v, "x", true, "doc", &b, NULL), OT_ERR_FORMAT);
    b = true;
    assert_int_equal(ot_json_get_bool(v, "x", false, "doc", &b, NULL), OT_OK);
    assert_true(b);
    json_decref(v);
}

static void test_get_hex_b64(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    json_t *v = parse_ok("{\"h\":\"00ff\",\"H\":\"00FF\",\"short\":\"00f\",\"long\":\"00ff00\","
                         "\"g\":\"00fg\",\"b\":\"AP8=\",\"b2\":\"AP8\",\"n\":5}");
    uint8_t out[2] = {0};
    const uint8_t want[2] = {0x00, 0xff};
    assert_int_equal(ot_json_get_hex(v, "h", true, 2, "doc", out, &d), OT_OK);
    assert_memory_equal(out, want, 2);
    memset(out, 0, 2);
    assert_int_equal(ot_json_get_hex(v, "H", true, 2, "doc", out, &d), OT_OK);
    assert_memory_equal(out, want, 2);
    assert_int_equal(ot_json_get_hex(v, "short", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 'short' must be 4 hex digits");
    assert_int_equal(ot_json_get_hex(v, "long", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_hex(v, "g", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_hex(v, "n", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    memset(out, 0, 2);
    assert_int_equal(ot_json_get_b64(v, "b", true, 2, "doc", out, &d), OT_OK);
    assert_memory_equal(out, want, 2);
    assert_int_equal(ot_json_get_b64(v, "b2", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "doc: field 'b2' must be base64 of 2 bytes");
    assert_int_equal(ot_json_get_b64(v, "b", true, 3, "doc", out, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_b64(v, "b", true, 1, "doc", out, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_b64(v, "nope", true, 2, "doc", out, &d), OT_ERR_FORMAT);
    assert_int_equal(ot_json_get_b64(v, "nope", false, 2, "doc", out, &d), OT_OK);
    json_decref(v);
}

static void test_dump_canonical(void **state)
{
    (void)state;
    json_t *a =
        parse_ok("{ \"b\" : 1, \"a\" : [1, 2, {\"d\": true, \"c\": null}], \"c\": \"\xc3\xa9\" }");
    json_t *b = parse_ok("{\"c\":\"\\u00e9\",\"a\":[1,2,{\"c\":null,\"d\":true}],\"b\":1}");
    struct ot_buf x, y;
    ot_buf_init(&x, 1024);
    ot_buf_init(&y, 1024);
    assert_int_equal(ot_json_dump(a, &x), OT_OK);
    assert_int_equal(ot_json_dump(b, &y), OT_OK);
    assert_string_equal(ot_buf_str(&x),
                        "{\"a\":[1,2,{\"c\":null,\"d\":true}],\"b\":1,\"c\":\"\xc3\xa9\"}\n");
    assert_string_equal(ot_buf_str(&x), ot_buf_str(&y));
    ot_buf_reset(&y);
    assert_int_equal(ot_json_dump_pretty(a, &y), OT_OK);
    assert_string_equal(ot_buf_str(&y),
                        "{\n  \"a\": [\n    1,\n    2,\n    {\n      \"c\": null,\n"
                        "      \"d\": true\n    }\n  ],\n  \"b\": 1,\n  \"c\": \"\xc3\xa9\"\n}\n");
    ot_buf_release(&x);
    ot_buf_release(&y);
    json_decref(a);
    json_decref(b);
}

static void test_dump_limit(void **state)
{
    (void)state;
    json_t *v = parse_ok("{\"abc\":1}"); /* {"abc":1}\n = 10 bytes */
    struct ot_buf b;
    ot_buf_init(&b, 9);
    assert_int_equal(ot_json_dump(v, &b), OT_ERR_LIMIT);
    assert_int_equal(b.len, 0); /* nothing half-written */
    ot_buf_release(&b);
    ot_buf_init(&b, 10);
    assert_int_equal(ot_json_dump(v, &b), OT_OK);
    assert_int_equal(b.len, 10);
    ot_buf_release(&b);
    json_decref(v);
}

static void test_setters(void **state)
{
    (void)state;
    json_t *o = json_object();
    const uint8_t bin[3] = {0xde, 0xad, 0x01};
    assert_int_equal(ot_json_set_str(o, "s", "v"), OT_OK);
    assert_int_equal(ot_json_set_u64(o, "u", (uint64_t)INT64_MAX), OT_OK);
    assert_int_equal(ot_json_set_u64(o, "big", (uint64_t)INT64_MAX + 1), OT_ERR_RANGE);
    assert_int_equal(ot_json_set_hex(o, "h", bin, 3), OT_OK);
    assert_int_equal(ot_json_set_b64(o, "b", bin, 3), OT_OK);
    assert_int_equal(ot_json_set_str(o, "s", "w"), OT_OK); /* replaces */
    struct ot_buf out;
    ot_buf_init(&out, 1024);
    assert_int_equal(ot_json_dump(o, &out), OT_OK);
    assert_string_equal(
        ot_buf_str(&out),
        "{\"b\":\"3q0B\",\"h\":\"dead01\",\"s\":\"w\",\"u\":9223372036854775807}\n");
    /* And the getters read back what the setters wrote. */
    uint8_t back[3];
    uint64_t u = 0;
    assert_int_equal(ot_json_get_hex(o, "h", true, 3, "doc", back, NULL), OT_OK);
    assert_memory_equal(back, bin, 3);
    assert_int_equal(ot_json_get_b64(o, "b", true, 3, "doc", back, NULL), OT_OK);
    assert_memory_equal(back, bin, 3);
    assert_int_equal(ot_json_get_u64(o, "u", true, UINT64_MAX, "doc", &u, NULL), OT_OK);
    assert_true(u == (uint64_t)INT64_MAX);
    ot_buf_release(&out);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),    cmocka_unit_test(test_duplicates_rejected),
        cmocka_unit_test(test_depth_limit),    cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_malformed),      cmocka_unit_test(test_only_keys),
        cmocka_unit_test(test_get_str),        cmocka_unit_test(test_get_u64),
        cmocka_unit_test(test_get_bool),       cmocka_unit_test(test_get_hex_b64),
        cmocka_unit_test(test_dump_canonical), cmocka_unit_test(test_dump_limit),
        cmocka_unit_test(test_setters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
