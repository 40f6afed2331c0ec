/* Hex and base64 (encoding.c): RFC 4648 vectors and the strictness of the decoders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/encoding.h"

static void test_hex_encode(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[2 * sizeof(in) + 1];
    memset(out, 'x', sizeof(out));
    ot_hex_encode(in, sizeof(in), out);
    assert_string_equal(out, "00017f80abff");
    ot_hex_encode(in, 0, out);
    assert_string_equal(out, "");
}

static void test_hex_decode(void **state)
{
    (void)state;
    uint8_t out[4] = {0};
    assert_int_equal(ot_hex_decode("deadBEEF", out, 4), OT_OK);
    const uint8_t want[] = {0xde, 0xad, 0xbe, 0xef};
    assert_memory_equal(out, want, 4);
    assert_int_equal(ot_hex_decode("", out, 0), OT_OK);
}

static void test_hex_decode_rejects(void **state)
{
    (void)state;
    uint8_t out[4] = {0x11, 0x22, 0x33, 0x44};
    assert_int_equal(ot_hex_decode("deadbee", out, 4), OT_ERR_FORMAT);    /* odd, short */
    assert_int_equal(ot_hex_decode("deadbe", out, 4), OT_ERR_FORMAT);     /* short */
    assert_int_equal(ot_hex_decode("deadbeef00", out, 4), OT_ERR_FORMAT); /* long */
    assert_int_equal(ot_hex_decode("deadbeeg", out, 4), OT_ERR_FORMAT);   /* bad digit */
    assert_int_equal(ot_hex_decode(" eadbeef", out, 4), OT_ERR_FORMAT);
    assert_int_equal(ot_hex_decode("0xadbeef", out, 4), OT_ERR_FORMAT);
    assert_int_equal(ot_hex_decode("a", out, 0), OT_ERR_FORMAT);
}

static const struct {
    const char *plain, *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_base64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(rfc4648); i++) {
        size_t n = strlen(rfc4648[i].plain);
        char enc[16];
        assert_int_equal(ot_base64_encoded_len(n), strlen(rfc4648[i].b64) + 1);
        ot_base64_encode((const uint8_t *)rfc4648[i].plain, n, enc);
        assert_string_equal(enc, rfc4648[i].b64);
        uint8_t dec[8] = {0};
        assert_int_equal(ot_base64_decode_exact(rfc4648[i].b64, dec, n), OT_OK);
        assert_memory_equal(dec, rfc4648[i].plain, n);
    }
    assert_int_equal(ot_base64_encoded_len(32), 45);
    assert_int_equal(ot_base64_encoded_len(64), 89);
}

static void test_base64_all_bytes(void **state)
{
    (void)state;
    uint8_t in[256], out[256];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    char enc[400];
    assert_true(ot_base64_encoded_len(sizeof(in)) <= sizeof(enc));
    ot_base64_encode(in, sizeof(in), enc);
    assert_int_equal(strlen(enc), 344);
    assert_int_equal(ot_base64_decode_exact(enc, out, sizeof(out)), OT_OK);
    assert_memory_equal(in, out, sizeof(in));
}

static void test_base64_rejects(void **state)
{
    (void)state;
    uint8_t out[8];
    assert_int_equal(ot_base64_decode_exact("Zm9v", out, 2), OT_ERR_FORMAT);  /* too long */
    assert_int_equal(ot_base64_decode_exact("Zm8=", out, 3), OT_ERR_FORMAT);  /* too short */
    assert_int_equal(ot_base64_decode_exact("Zm8", out, 2), OT_ERR_FORMAT);   /* no padding */
    assert_int_equal(ot_base64_decode_exact("Zh==", out, 1), OT_ERR_FORMAT);  /* stray bits */
    assert_int_equal(ot_base64_decode_exact("Zm9v ", out, 3), OT_ERR_FORMAT); /* blank */
    assert_int_equal(ot_base64_decode_exact(" Zm9v", out, 3), OT_ERR_FORMAT);
    assert_int_equal(ot_base64_decode_exact("Zm\n9v", out, 3), OT_ERR_FORMAT);
    assert_int_equal(ot_base64_decode_exact("Zm9v====", out, 3), OT_ERR_FORMAT); /* trailing */
    assert_int_equal(ot_base64_decode_exact("Zm-v", out, 3), OT_ERR_FORMAT);     /* URL alphabet */
    assert_int_equal(ot_base64_decode_exact("Zm9vYmFyZm9v", out, 3), OT_ERR_FORMAT);
    assert_int_equal(ot_base64_decode_exact("Zg==Zg==", out, 2), OT_ERR_FORMAT);
    assert_int_equal(ot_base64_decode_exact("A", out, 0), OT_ERR_FORMAT);
    assert_int_equal(ot_base64_decode_exact("", out, 1), OT_ERR_FORMAT);
}

static void test_base64_large_n_refused(void **state)
{
    (void)state;
    /* The decoder's scratch buffer is 1 KiB: larger outputs are refused, never overflowed. */
    static uint8_t big[2048];
    static char enc[4096];
    ot_base64_encode(big, 1500, enc);
    assert_int_equal(ot_base64_decode_exact(enc, big, 1500), OT_ERR_FORMAT);
    ot_base64_encode(big, 1000, enc);
    assert_int_equal(ot_base64_decode_exact(enc, big, 1000), OT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_decode),
        cmocka_unit_test(test_hex_decode_rejects),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_all_bytes),
        cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_base64_large_n_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
