/* SHA-256 (hash.c) against the NIST FIPS 180-2 example vectors, one-shot and streamed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/encoding.h"
#include "otter/hash.h"

static void hex_of(const uint8_t digest[OT_SHA256_LEN], char out[OT_SHA256_HEX_LEN])
{
    ot_hex_encode(digest, OT_SHA256_LEN, out);
}

static void assert_oneshot(const char *msg, const char *want)
{
    uint8_t md[OT_SHA256_LEN];
    char hex[OT_SHA256_HEX_LEN];
    assert_int_equal(ot_sha256_buf(msg, strlen(msg), md), OT_OK);
    hex_of(md, hex);
    assert_string_equal(hex, want);
}

static void test_empty(void **state)
{
    (void)state;
    assert_oneshot("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* NULL with length 0 is the empty message too. */
    uint8_t md[OT_SHA256_LEN];
    char hex[OT_SHA256_HEX_LEN];
    assert_int_equal(ot_sha256_buf(NULL, 0, md), OT_OK);
    hex_of(md, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_abc(void **state)
{
    (void)state;
    assert_oneshot("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_two_blocks(void **state)
{
    (void)state;
    assert_oneshot("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_oneshot("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                   "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                   "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* One million 'a', fed in pieces of odd, varying sizes (1, 3, 5, ... bytes) so that every
 * position relative to the 64-byte block boundary is exercised. */
static void test_million_a(void **state)
{
    (void)state;
    static uint8_t a[4096];
    memset(a, 'a', sizeof(a));
    struct ot_sha256 h = {0};
    assert_int_equal(ot_sha256_init(&h), OT_OK);
    size_t left = 1000000, piece = 1;
    while (left > 0) {
        size_t n = OT_MIN(piece, left);
        ot_sha256_update(&h, a, n);
        left -= n;
        piece = piece + 2 > sizeof(a) ? 1 : piece + 2;
    }
    uint8_t md[OT_SHA256_LEN];
    char hex[OT_SHA256_HEX_LEN];
    ot_sha256_final(&h, md);
    assert_null(h.ctx);
    hex_of(md, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_reinit_and_release(void **state)
{
    (void)state;
    struct ot_sha256 h = {0};
    ot_sha256_release(&h); /* zeroed struct: fine */
    uint8_t md[OT_SHA256_LEN];
    char hex[OT_SHA256_HEX_LEN];
    for (int round = 0; round < 2; round++) {
        assert_int_equal(ot_sha256_init(&h), OT_OK);
        ot_sha256_update(&h, "a", 1);
        ot_sha256_update(&h, NULL, 0);
        ot_sha256_update(&h, "bc", 2);
        ot_sha256_final(&h, md);
        hex_of(md, hex);
        assert_string_equal(hex,
                            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
    ot_sha256_release(&h); /* after final: fine */
    ot_sha256_release(&h); /* twice: fine */
    /* Abandoned midway: release frees it (ASan checks the leak). */
    assert_int_equal(ot_sha256_init(&h), OT_OK);
    ot_sha256_update(&h, "x", 1);
    ot_sha256_release(&h);
    assert_null(h.ctx);
}

static void test_streamed_equals_oneshot(void **state)
{
    (void)state;
    uint8_t data[10007];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    uint8_t one[OT_SHA256_LEN], two[OT_SHA256_LEN];
    assert_int_equal(ot_sha256_buf(data, sizeof(data), one), OT_OK);
    struct ot_sha256 h = {0};
    assert_int_equal(ot_sha256_init(&h), OT_OK);
    for (size_t off = 0, n = 1; off < sizeof(data); off += n, n = n * 3 % 1000 + 1)
        ot_sha256_update(&h, data + off, OT_MIN(n, sizeof(data) - off));
    ot_sha256_final(&h, two);
    assert_memory_equal(one, two, OT_SHA256_LEN);
    data[5000] ^= 1;
    assert_int_equal(ot_sha256_buf(data, sizeof(data), two), OT_OK);
    assert_memory_not_equal(one, two, OT_SHA256_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_abc),
        cmocka_unit_test(test_two_blocks),
        cmocka_unit_test(test_million_a),
        cmocka_unit_test(test_reinit_and_release),
        cmocka_unit_test(test_streamed_equals_oneshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
