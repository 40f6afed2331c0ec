/* Strict number parsing: whole string, no sign where unsigned, no blanks, overflow is an error, and
 * *ret is written only on success. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/parse.h"

#define UNTOUCHED UINT64_C(0xdeadbeef)

static void u64_case(const char *s, uint64_t min, uint64_t max, enum ot_err want, uint64_t value)
{
    uint64_t v = UNTOUCHED;
    enum ot_err err = ot_parse_u64(s, min, max, &v);
    if (err != want)
        fail_msg("ot_parse_u64('%s'): got %s, want %s", s ? s : "(null)", ot_err_name(err),
                 ot_err_name(want));
    assert_int_equal(v, want == OT_OK ? value : UNTOUCHED);
}

static void test_u64(void **state)
{
    (void)state;
    u64_case("0", 0, UINT64_MAX, OT_OK, 0);
    u64_case("42", 0, UINT64_MAX, OT_OK, 42);
    u64_case("007", 0, UINT64_MAX, OT_OK, 7);
    u64_case("18446744073709551615", 0, UINT64_MAX, OT_OK, UINT64_MAX);
    u64_case("18446744073709551616", 0, UINT64_MAX, OT_ERR_RANGE, 0);
    u64_case("99999999999999999999999999", 0, UINT64_MAX, OT_ERR_RANGE, 0);
    u64_case("10", 10, 20, OT_OK, 10);
    u64_case("20", 10, 20, OT_OK, 20);
    u64_case("9", 10, 20, OT_ERR_RANGE, 0);
    u64_case("21", 10, 20, OT_ERR_RANGE, 0);
    static const char *const bad[] = {"",      "-1",    "-0",   "+1",  " 1",
                                      "1 ",    "1\n",   "0x10", "1.0", "1e3",
                                      "1,000", "1_000", "one",  "1K",  "\xd9\xa1"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        u64_case(bad[i], 0, UINT64_MAX, OT_ERR_FORMAT, 0);
    u64_case(NULL, 0, UINT64_MAX, OT_ERR_FORMAT, 0);
}

static void i64_case(const char *s, int64_t min, int64_t max, enum ot_err want, int64_t value)
{
    int64_t v = 12345;
    enum ot_err err = ot_parse_i64(s, min, max, &v);
    if (err != want)
        fail_msg("ot_parse_i64('%s'): got %s, want %s", s ? s : "(null)", ot_err_name(err),
                 ot_err_name(want));
    assert_int_equal(v, want == OT_OK ? value : 12345);
}

static void test_i64(void **state)
{
    (void)state;
    i64_case("0", INT64_MIN, INT64_MAX, OT_OK, 0);
    i64_case("-0", INT64_MIN, INT64_MAX, OT_OK, 0);
    i64_case("-17", INT64_MIN, INT64_MAX, OT_OK, -17);
    i64_case("9223372036854775807", INT64_MIN, INT64_MAX, OT_OK, INT64_MAX);
    i64_case("-9223372036854775808", INT64_MIN, INT64_MAX, OT_OK, INT64_MIN);
    i64_case("9223372036854775808", INT64_MIN, INT64_MAX, OT_ERR_RANGE, 0);
    i64_case("-9223372036854775809", INT64_MIN, INT64_MAX, OT_ERR_RANGE, 0);
    i64_case("-99999999999999999999999", INT64_MIN, INT64_MAX, OT_ERR_RANGE, 0);
    i64_case("-5", -4, 4, OT_ERR_RANGE, 0);
    i64_case("5", -4, 4, OT_ERR_RANGE, 0);
    i64_case("-4", -4, 4, OT_OK, -4);
    static const char *const bad[] = {"",    "-",   "--1", "+1",  " -1",
                                      "- 1", "-1 ", "1-",  "0x1", "-1.5"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        i64_case(bad[i], INT64_MIN, INT64_MAX, OT_ERR_FORMAT, 0);
    i64_case(NULL, INT64_MIN, INT64_MAX, OT_ERR_FORMAT, 0);
}

static void size_case(const char *s, uint64_t max, enum ot_err want, uint64_t value)
{
    uint64_t v = UNTOUCHED;
    enum ot_err err = ot_parse_size(s, max, &v);
    if (err != want)
        fail_msg("ot_parse_size('%s'): got %s, want %s", s ? s : "(null)", ot_err_name(err),
                 ot_err_name(want));
    assert_int_equal(v, want == OT_OK ? value : UNTOUCHED);
}

static void test_size(void **state)
{
    (void)state;
    size_case("0", UINT64_MAX, OT_OK, 0);
    size_case("512", UINT64_MAX, OT_OK, 512);
    size_case("512B", UINT64_MAX, OT_OK, 512);
    size_case("64K", UINT64_MAX, OT_OK, 65536);
    size_case("64k", UINT64_MAX, OT_OK, 65536);
    size_case("64KiB", UINT64_MAX, OT_OK, 65536);
    size_case("10M", UINT64_MAX, OT_OK, 10u << 20);
    size_case("10MiB", UINT64_MAX, OT_OK, 10u << 20);
    size_case("1G", UINT64_MAX, OT_OK, 1u << 30);
    size_case("3GiB", UINT64_MAX, OT_OK, UINT64_C(3) << 30);
    size_case("2T", UINT64_MAX, OT_OK, UINT64_C(2) << 40);
    size_case("2TiB", UINT64_MAX, OT_OK, UINT64_C(2) << 40);
    size_case("16777215T", UINT64_MAX, OT_OK, UINT64_C(16777215) << 40);
    size_case("16777216T", UINT64_MAX, OT_ERR_RANGE, 0); /* 2^64 */
    size_case("18446744073709551615", UINT64_MAX, OT_OK, UINT64_MAX);
    size_case("18446744073709551615K", UINT64_MAX, OT_ERR_RANGE, 0);
    size_case("99999999999999999999", UINT64_MAX, OT_ERR_RANGE, 0);
    size_case("1G", (1u << 30) - 1, OT_ERR_RANGE, 0);
    size_case("1G", 1u << 30, OT_OK, 1u << 30);
    size_case("1025", 1024, OT_ERR_RANGE, 0);
    static const char *const bad[] = {"",   "K",  "-1K",  " 1K", "1 K", "1K ",  "1KB", "1Kib",
                                      "1m", "1g", "1.5M", "1P",  "1E",  "0x10", "1KK", "+1"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        size_case(bad[i], UINT64_MAX, OT_ERR_FORMAT, 0);
    size_case(NULL, UINT64_MAX, OT_ERR_FORMAT, 0);
}

static void duration_case(const char *s, uint64_t max, enum ot_err want, uint64_t value)
{
    uint64_t v = UNTOUCHED;
    enum ot_err err = ot_parse_duration_ms(s, max, &v);
    if (err != want)
        fail_msg("ot_parse_duration_ms('%s'): got %s, want %s", s ? s : "(null)", ot_err_name(err),
                 ot_err_name(want));
    assert_int_equal(v, want == OT_OK ? value : UNTOUCHED);
}

static void test_duration(void **state)
{
    (void)state;
    duration_case("250ms", UINT64_MAX, OT_OK, 250);
    duration_case("0ms", UINT64_MAX, OT_OK, 0);
    duration_case("30s", UINT64_MAX, OT_OK, 30000);
    duration_case("30", UINT64_MAX, OT_OK, 30000); /* bare number: seconds */
    duration_case("0", UINT64_MAX, OT_OK, 0);
    duration_case("5m", UINT64_MAX, OT_OK, 300000);
    duration_case("2h", UINT64_MAX, OT_OK, 7200000);
    duration_case("1d", UINT64_MAX, OT_OK, 86400000);
    duration_case("18446744073709551615ms", UINT64_MAX, OT_OK, UINT64_MAX);
    duration_case("18446744073709551615s", UINT64_MAX, OT_ERR_RANGE, 0);
    duration_case("213503982335d", UINT64_MAX, OT_ERR_RANGE, 0);
    duration_case("1h", 3599999, OT_ERR_RANGE, 0);
    duration_case("1h", 3600000, OT_OK, 3600000);
    static const char *const bad[] = {"",   "s",    "5x",   "1.5s", "-1s", " 1s", "1 s",   "1s ",
                                      "1S", "1sec", "1min", "1w",   "1y",  "1us", "1h30m", "+1s"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        duration_case(bad[i], UINT64_MAX, OT_ERR_FORMAT, 0);
    duration_case(NULL, UINT64_MAX, OT_ERR_FORMAT, 0);
}

static void test_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    static const char *const bad[] = {"",      "TRUE",  "True",   "y",  "n", "2",
                                      " true", "true ", "enable", "01", "-1"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(yes); i++) {
        bool v = false;
        assert_int_equal(ot_parse_bool(yes[i], &v), OT_OK);
        assert_true(v);
        assert_int_equal(ot_parse_bool(no[i], &v), OT_OK);
        assert_false(v);
    }
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        bool v = true;
        if (ot_parse_bool(bad[i], &v) != OT_ERR_FORMAT)
            fail_msg("ot_parse_bool('%s') accepted", bad[i]);
        assert_true(v);
    }
    bool v;
    assert_int_equal(ot_parse_bool(NULL, &v), OT_ERR_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64),      cmocka_unit_test(test_i64),  cmocka_unit_test(test_size),
        cmocka_unit_test(test_duration), cmocka_unit_test(test_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
