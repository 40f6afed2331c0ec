/* Bounded buffers: the limit is hard, a refused append changes nothing, the data is always
 * NUL-terminated, and steal/reset/release leave a usable buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/buf.h"

static void assert_terminated(const struct ot_buf *b)
{
    if (b->data) {
        assert_true(b->len < b->cap);
        assert_int_equal(b->data[b->len], '\0');
    }
    assert_true(b->len <= b->max);
}

static void test_append_and_terminate(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 100);
    assert_null(b.data);
    assert_string_equal(ot_buf_str(&b), "");
    assert_int_equal(ot_buf_append(&b, "abc", 3), OT_OK);
    assert_terminated(&b);
    assert_string_equal(ot_buf_str(&b), "abc");
    assert_int_equal(ot_buf_append_str(&b, "def"), OT_OK);
    assert_int_equal(ot_buf_append(&b, "x\0y", 3), OT_OK); /* binary: NULs count */
    assert_int_equal(b.len, 9);
    assert_memory_equal(b.data, "abcdefx\0y", 10);
    assert_int_equal(ot_buf_append(&b, NULL, 0), OT_OK);
    assert_int_equal(b.len, 9);
    assert_terminated(&b);
    ot_buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 100); /* reusable */
    assert_int_equal(ot_buf_append_str(&b, "again"), OT_OK);
    assert_string_equal(ot_buf_str(&b), "again");
    ot_buf_release(&b);
    ot_buf_release(&b); /* twice is fine */
}

static void test_limit_is_hard(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 8);
    assert_int_equal(ot_buf_append(&b, "12345678", 8), OT_OK); /* exactly max */
    assert_terminated(&b);
    assert_true(b.cap <= 9);
    assert_int_equal(ot_buf_append(&b, "9", 1), OT_ERR_LIMIT);
    assert_int_equal(b.len, 8);
    assert_string_equal(ot_buf_str(&b), "12345678");
    assert_int_equal(ot_buf_reserve(&b, 1), OT_ERR_LIMIT);
    assert_int_equal(ot_buf_reserve(&b, SIZE_MAX), OT_ERR_LIMIT);
    assert_int_equal(ot_buf_reserve(&b, 0), OT_OK);
    assert_int_equal(ot_buf_printf(&b, "%d", 1), OT_ERR_LIMIT);
    assert_string_equal(ot_buf_str(&b), "12345678");
    ot_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(ot_buf_str(&b), "");
    assert_int_equal(ot_buf_append(&b, "123456789", 9), OT_ERR_LIMIT); /* all or nothing */
    assert_int_equal(b.len, 0);
    assert_string_equal(ot_buf_str(&b), "");
    ot_buf_release(&b);
}

static void test_zero_and_huge_max(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 0);
    assert_int_equal(ot_buf_append(&b, "", 0), OT_OK);
    assert_terminated(&b);
    assert_string_equal(ot_buf_str(&b), "");
    assert_int_equal(ot_buf_append(&b, "a", 1), OT_ERR_LIMIT);
    ot_buf_release(&b);

    /* max = SIZE_MAX ("no limit"): max + 1 must not wrap to a zero-sized allocation */
    ot_buf_init(&b, SIZE_MAX);
    assert_int_equal(ot_buf_append_str(&b, "hello"), OT_OK);
    assert_true(b.cap >= 6);
    assert_string_equal(ot_buf_str(&b), "hello");
    assert_int_equal(ot_buf_reserve(&b, SIZE_MAX - 4), OT_ERR_LIMIT);
    ot_buf_release(&b);
}

static void test_growth(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 100000);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(ot_buf_append(&b, &"0123456789"[i % 10], 1), OT_OK);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap <= 100001);
    assert_terminated(&b);
    assert_int_equal(ot_buf_append(&b, "x", 1), OT_ERR_LIMIT);
    assert_memory_equal(b.data + 99990, "0123456789", 10);
    ot_buf_release(&b);
}

static void test_printf(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 1000);
    assert_int_equal(ot_buf_printf(&b, "%s=%d", "a", 1), OT_OK);
    assert_int_equal(ot_buf_printf(&b, "%s", ""), OT_OK);
    assert_int_equal(ot_buf_printf(&b, ";%05.1f;", 2.5), OT_OK);
    assert_string_equal(ot_buf_str(&b), "a=1;002.5;");
    assert_int_equal(b.len, 10);
    assert_terminated(&b);
    char big[2000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ot_buf_printf(&b, "%s", big), OT_ERR_LIMIT);
    assert_string_equal(ot_buf_str(&b), "a=1;002.5;");
    assert_int_equal(ot_buf_printf(&b, "%.990s", big), OT_OK); /* exactly to max */
    assert_int_equal(b.len, 1000);
    assert_terminated(&b);
    ot_buf_release(&b);

    ot_buf_init(&b, 10); /* printf into an empty buffer allocates and terminates */
    assert_int_equal(ot_buf_printf(&b, "%s", ""), OT_OK);
    assert_non_null(b.data);
    assert_string_equal(ot_buf_str(&b), "");
    ot_buf_release(&b);
}

static void test_steal(void **state)
{
    (void)state;
    struct ot_buf b;
    uint8_t *data;
    size_t len;
    ot_buf_init(&b, 64);
    assert_int_equal(ot_buf_append_str(&b, "payload"), OT_OK);
    assert_int_equal(ot_buf_steal(&b, &data, &len), OT_OK);
    assert_int_equal(len, 7);
    assert_string_equal((char *)data, "payload");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 64);
    free(data);
    /* stealing an empty buffer still gives a terminated allocation */
    assert_int_equal(ot_buf_steal(&b, &data, &len), OT_OK);
    assert_non_null(data);
    assert_int_equal(len, 0);
    assert_int_equal(data[0], '\0');
    free(data);
    assert_int_equal(ot_buf_append_str(&b, "reuse"), OT_OK);
    assert_string_equal(ot_buf_str(&b), "reuse");
    ot_buf_release(&b);
}

static void test_reset_keeps_storage(void **state)
{
    (void)state;
    struct ot_buf b;
    ot_buf_init(&b, 64);
    ot_buf_reset(&b); /* before any allocation */
    assert_null(b.data);
    assert_int_equal(ot_buf_append_str(&b, "abc"), OT_OK);
    uint8_t *p = b.data;
    size_t cap = b.cap;
    ot_buf_reset(&b);
    assert_ptr_equal(b.data, p);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.len, 0);
    assert_string_equal(ot_buf_str(&b), "");
    ot_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_terminate),
        cmocka_unit_test(test_limit_is_hard),
        cmocka_unit_test(test_zero_and_huge_max),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_reset_keeps_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
