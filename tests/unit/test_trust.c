/* Trust sets (trust.c): building, strict parsing, exact output. Fixed keys: RFC 8032 tests 1-3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/file.h"
#include "otter/trust.h"

#define PK1 "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#define ID1 "21fe31dfa154a261"
#define PK2 "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw="
#define ID2 "39f713d0a644253f"
#define PK3 "/FHNjmIYoaONpH7QAjDwWAgW7RO6MwOsXeuRFUiQgCU="
#define ID3 "dac073e0123bdea5"
#define ZERO_B64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define ZERO_ID "66687aadf862bd77"

#define K1 "{\"key_id\":\"" ID1 "\",\"name\":\"alice\",\"public_key\":\"" PK1 "\"}"
#define K2 "{\"key_id\":\"" ID2 "\",\"name\":\"bob\",\"public_key\":\"" PK2 "\"}"
#define K3 "{\"key_id\":\"" ID3 "\",\"public_key\":\"" PK3 "\"}"
#define TRUST(th, keys) "{\"otter_trust\":1,\"threshold\":" #th ",\"keys\":[" keys "]}"

static enum ot_err parse_text(const char *text, struct ot_trust *t, struct ot_diag *d)
{
    return ot_trust_parse((const uint8_t *)text, strlen(text), t, d);
}

static void gen_keys(struct ot_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "key%zu", i);
        assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, name, &keys[i]), OT_OK);
    }
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void test_init_and_find(void **state)
{
    (void)state;
    struct ot_key keys[3];
    struct ot_trust t;
    struct ot_diag d = {0};
    gen_keys(keys, 3);
    assert_int_equal(ot_trust_init(&t, 2, keys, 3, &d), OT_OK);
    assert_int_equal(t.threshold, 2);
    assert_int_equal(t.nkeys, 3);
    for (size_t i = 0; i < 3; i++) {
        const struct ot_key *k = ot_trust_find(&t, keys[i].id);
        assert_ptr_equal(k, &t.keys[i]);
        assert_int_equal(k->type, OT_KEY_SIGN_PUBLIC); /* only the public half is kept */
        assert_true(all_zero(k->sk, sizeof(k->sk)));
        assert_memory_equal(k->pk, keys[i].pk, 32);
        assert_string_equal(k->name, keys[i].name);
    }
    assert_null(ot_trust_find(&t, "0000000000000000"));
    assert_null(ot_trust_find(&t, ""));
    assert_null(ot_trust_find(&t, NULL));
}

static void test_init_rejects(void **state)
{
    (void)state;
    static struct ot_key keys[OT_TRUST_MAX_KEYS + 1];
    struct ot_trust t = {.threshold = 77};
    struct ot_diag d = {0};
    gen_keys(keys, 3);
    assert_int_equal(ot_trust_init(&t, 1, keys, 0, &d), OT_ERR_INVALID);
    assert_int_equal(ot_trust_init(&t, 0, keys, 3, &d), OT_ERR_RANGE);
    assert_string_equal(d.msg, "threshold 0 is not between 1 and 3");
    assert_int_equal(ot_trust_init(&t, 4, keys, 3, &d), OT_ERR_RANGE);
    struct ot_key dup[2] = {keys[0], keys[0]};
    assert_int_equal(ot_trust_init(&t, 1, dup, 2, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "is the same as key 1"));
    /* The same key once secret, once public is still one key. */
    ot_key_public(&keys[0], &dup[1]);
    assert_int_equal(ot_trust_init(&t, 1, dup, 2, &d), OT_ERR_INVALID);
    struct ot_key box[2] = {keys[0]};
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "box", &box[1]), OT_OK);
    assert_int_equal(ot_trust_init(&t, 1, box, 2, &d), OT_ERR_INVALID);
    assert_non_null(strstr(d.msg, "not an Ed25519 signing key"));
    gen_keys(keys, OT_TRUST_MAX_KEYS + 1);
    assert_int_equal(ot_trust_init(&t, 1, keys, OT_TRUST_MAX_KEYS + 1, &d), OT_ERR_LIMIT);
    assert_int_equal(t.threshold, 77); /* untouched on every error */
    assert_int_equal(ot_trust_init(&t, OT_TRUST_MAX_KEYS, keys, OT_TRUST_MAX_KEYS, &d), OT_OK);
    assert_int_equal(t.nkeys, OT_TRUST_MAX_KEYS);
}

static void test_parse_valid(void **state)
{
    (void)state;
    struct ot_trust t;
    struct ot_diag d = {0};
    assert_int_equal(parse_text(TRUST(2, K1 "," K2 "," K3), &t, &d), OT_OK);
    assert_int_equal(t.threshold, 2);
    assert_int_equal(t.nkeys, 3);
    assert_string_equal(t.keys[0].id, ID1);
    assert_string_equal(t.keys[0].name, "alice");
    assert_string_equal(t.keys[1].name, "bob");
    assert_string_equal(t.keys[2].name, ""); /* name is optional */
    assert_int_equal(t.keys[0].type, OT_KEY_SIGN_PUBLIC);
    assert_int_equal(t.keys[0].pk[0], 0xd7);
    assert_ptr_equal(ot_trust_find(&t, ID3), &t.keys[2]);
}

static void test_format_exact(void **state)
{
    (void)state;
    struct ot_trust t;
    struct ot_buf b;
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    assert_int_equal(parse_text(TRUST(1, K1 "," K3), &t, NULL), OT_OK);
    assert_int_equal(ot_trust_format(&t, &b), OT_OK);
    assert_string_equal(ot_buf_str(&b), "{\n"
                                        "  \"keys\": [\n"
                                        "    {\n"
                                        "      \"key_id\": \"" ID1 "\",\n"
                                        "      \"name\": \"alice\",\n"
                                        "      \"public_key\": \"" PK1 "\"\n"
                                        "    },\n"
                                        "    {\n"
                                        "      \"key_id\": \"" ID3 "\",\n"
                                        "      \"name\": \"\",\n"
                                        "      \"public_key\": \"" PK3 "\"\n"
                                        "    }\n"
                                        "  ],\n"
                                        "  \"otter_trust\": 1,\n"
                                        "  \"threshold\": 1\n"
                                        "}\n");
    t.threshold = 0;
    ot_buf_reset(&b);
    assert_int_equal(ot_trust_format(&t, &b), OT_ERR_INVALID);
    t.threshold = 3;
    assert_int_equal(ot_trust_format(&t, &b), OT_ERR_INVALID);
    assert_int_equal(b.len, 0);
    ot_buf_release(&b);
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct ot_key keys[5];
    struct ot_trust t, back;
    struct ot_buf b;
    struct ot_diag d = {0};
    gen_keys(keys, 5);
    assert_int_equal(ot_trust_init(&t, 3, keys, 5, &d), OT_OK);
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    assert_int_equal(ot_trust_format(&t, &b), OT_OK);
    assert_int_equal(ot_trust_parse(b.data, b.len, &back, &d), OT_OK);
    assert_int_equal(back.threshold, 3);
    assert_int_equal(back.nkeys, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(back.keys[i].id, t.keys[i].id);
        assert_string_equal(back.keys[i].name, t.keys[i].name);
        assert_memory_equal(back.keys[i].pk, t.keys[i].pk, 32);
        assert_int_equal(back.keys[i].type, OT_KEY_SIGN_PUBLIC);
    }
    ot_buf_release(&b);
}

static const struct {
    const char *text;
    enum ot_err err;
    const char *msg;
} bad_files[] = {
    {"{\"otter_trust\":2,\"threshold\":1,\"keys\":[" K1 "]}", OT_ERR_UNSUPPORTED,
     "version 2 is not supported"},
    {"{\"threshold\":1,\"keys\":[" K1 "]}", OT_ERR_FORMAT, "missing field 'otter_trust'"},
    {"{\"otter_trust\":1,\"keys\":[" K1 "]}", OT_ERR_FORMAT, "missing field 'threshold'"},
    {"{\"otter_trust\":1,\"threshold\":1}", OT_ERR_FORMAT, "missing field 'keys'"},
    {TRUST(0, K1), OT_ERR_FORMAT, "threshold 0 is not between 1 and 1"},
    {TRUST(3, K1 "," K2), OT_ERR_FORMAT, "threshold 3 is not between 1 and 2"},
    {TRUST(-1, K1), OT_ERR_FORMAT, "'threshold' must be a non-negative integer"},
    {TRUST("1", K1), OT_ERR_FORMAT, "'threshold' must be a non-negative integer"},
    {TRUST(1, ), OT_ERR_FORMAT, "'keys' is empty"},
    {"{\"otter_trust\":1,\"threshold\":1,\"keys\":" K1 "}", OT_ERR_FORMAT,
     "'keys' must be an array"},
    {TRUST(1, K1 ",7"), OT_ERR_FORMAT, "key 2: not a JSON object"},
    {TRUST(1, K1 "," K1), OT_ERR_FORMAT, "key 2 (" ID1 ") clashes with key 1"},
    {TRUST(1,
           K2 ",{\"key_id\":\"" ID1 "\",\"name\":\"alice again\",\"public_key\":\"" PK1 "\"}," K1),
     OT_ERR_FORMAT, "key 3 (" ID1 ") clashes with key 2"},
    {TRUST(1, "{\"key_id\":\"" ID2 "\",\"public_key\":\"" PK1 "\"}"), OT_ERR_FORMAT,
     "key 1: key_id does not match the public key (its id is " ID1 ")"},
    {TRUST(1, "{\"public_key\":\"" PK1 "\"}"), OT_ERR_FORMAT, "key 1: missing field 'key_id'"},
    {TRUST(1, "{\"key_id\":\"" ID1 "\"}"), OT_ERR_FORMAT, "key 1: missing field 'public_key'"},
    {TRUST(1, "{\"key_id\":\"" ID1 "\",\"public_key\":\"" PK1 "\",\"type\":\"x\"}"), OT_ERR_FORMAT,
     "key 1: unknown field 'type'"},
    {TRUST(1, "{\"key_id\":\"" ZERO_ID "\",\"public_key\":\"" ZERO_B64 "\"}"), OT_ERR_FORMAT,
     "key 1: public_key is not a valid Ed25519 key"},
    {TRUST(1, "{\"key_id\":\"" ID1 "\",\"name\":\"\\u00e9\",\"public_key\":\"" PK1 "\"}"),
     OT_ERR_FORMAT, "key 1: name must be printable ASCII"},
    {TRUST(1, "{\"key_id\":\"" ID1 "\",\"public_key\":\"AAAA\"}"), OT_ERR_FORMAT,
     "'public_key' must be base64 of 32 bytes"},
    {"{\"otter_trust\":1,\"threshold\":1,\"keys\":[" K1 "],\"expires\":0}", OT_ERR_FORMAT,
     "unknown field 'expires'"},
    {"{\"otter_trust\":1,\"otter_trust\":1,\"threshold\":1,\"keys\":[" K1 "]}", OT_ERR_FORMAT,
     "duplicate object key"},
    {"[]", OT_ERR_FORMAT, "not a JSON object"},
    {"", OT_ERR_FORMAT, "trust file: invalid JSON"},
};

static void test_parse_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_files); i++) {
        struct ot_trust t = {.threshold = 77};
        struct ot_diag d = {0};
        enum ot_err err = parse_text(bad_files[i].text, &t, &d);
        if (err != bad_files[i].err || !strstr(d.msg, bad_files[i].msg))
            fail_msg("case %zu: got %s '%s', want %s '%s'", i, ot_err_name(err), d.msg,
                     ot_err_name(bad_files[i].err), bad_files[i].msg);
        assert_int_equal(t.threshold, 77);
    }
}

static void test_parse_too_many_keys(void **state)
{
    (void)state;
    static struct ot_key keys[OT_TRUST_MAX_KEYS + 1];
    struct ot_trust t;
    struct ot_buf b;
    struct ot_diag d = {0};
    gen_keys(keys, OT_TRUST_MAX_KEYS + 1);
    assert_int_equal(ot_trust_init(&t, 1, keys, OT_TRUST_MAX_KEYS, &d), OT_OK);
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    assert_int_equal(ot_trust_format(&t, &b), OT_OK);
    assert_int_equal(ot_trust_parse(b.data, b.len, &t, &d), OT_OK);
    /* One more entry spliced in before the closing "]". */
    char *end = strrchr((char *)b.data, ']');
    assert_non_null(end);
    size_t head = (size_t)(end - (char *)b.data);
    struct ot_buf more;
    ot_buf_init(&more, OT_TRUST_FILE_MAX);
    assert_int_equal(ot_buf_append(&more, b.data, head), OT_OK);
    assert_int_equal(ot_buf_printf(&more, ",{\"key_id\":\"%s\",\"public_key\":\"%s\"}", ID1, PK1),
                     OT_OK);
    assert_int_equal(ot_buf_append_str(&more, end), OT_OK);
    assert_int_equal(ot_trust_parse(more.data, more.len, &t, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "trust file: 33 keys, at most 32 are allowed");
    ot_buf_release(&more);
    ot_buf_release(&b);
}

static void test_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/otter-test-trust-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/trust.json", dir);
    struct ot_trust t;
    struct ot_diag d = {0};
    assert_int_equal(ot_trust_load(path, &t, &d), OT_ERR_NOENT);
    const char *text = TRUST(1, K1);
    assert_int_equal(ot_file_write_atomic(path, text, strlen(text), 0644, &d), OT_OK);
    assert_int_equal(ot_trust_load(path, &t, &d), OT_OK);
    assert_int_equal(t.nkeys, 1);
    assert_int_equal(ot_file_write_atomic(path, "{}", 2, 0644, &d), OT_OK);
    assert_int_equal(ot_trust_load(path, &t, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, path));
    static char big[OT_TRUST_FILE_MAX + 1];
    memset(big, ' ', sizeof(big));
    assert_int_equal(ot_file_write_atomic(path, big, sizeof(big), 0644, &d), OT_OK);
    assert_int_equal(ot_trust_load(path, &t, &d), OT_ERR_LIMIT);
    assert_int_equal(ot_trust_parse((uint8_t *)big, sizeof(big), &t, &d), OT_ERR_LIMIT);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_find),       cmocka_unit_test(test_init_rejects),
        cmocka_unit_test(test_parse_valid),         cmocka_unit_test(test_format_exact),
        cmocka_unit_test(test_roundtrip),           cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_too_many_keys), cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
