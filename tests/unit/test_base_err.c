/* Error codes, their names and texts, errno mapping and diagnostic formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/err.h"

static void test_names_and_texts(void **state)
{
    (void)state;
    for (int e = OT_OK; e < OT_ERR__MAX; e++) {
        const char *name = ot_err_name((enum ot_err)e), *text = ot_strerror((enum ot_err)e);
        assert_non_null(name);
        assert_non_null(text);
        assert_string_not_equal(name, "unknown");
        assert_string_not_equal(text, "unknown error");
        for (int o = OT_OK; o < e; o++) /* machine names are unique */
            assert_string_not_equal(name, ot_err_name((enum ot_err)o));
    }
    assert_string_equal(ot_err_name(OT_OK), "ok");
    assert_string_equal(ot_err_name(OT_ERR_HASH), "hash");
    assert_string_equal(ot_strerror(OT_ERR_HASH), "content does not match its SHA-256");
    assert_string_equal(ot_err_name(OT_ERR__MAX), "unknown");
    assert_string_equal(ot_err_name((enum ot_err) - 1), "unknown");
    assert_string_equal(ot_strerror((enum ot_err)1000), "unknown error");
}

static void test_from_errno(void **state)
{
    (void)state;
    static const struct {
        int errnum;
        enum ot_err err;
    } map[] = {
        {0, OT_OK},
        {ENOMEM, OT_ERR_NOMEM},
        {ENOSPC, OT_ERR_NOSPC},
        {EDQUOT, OT_ERR_NOSPC},
        {ENOENT, OT_ERR_NOENT},
        {ENOTDIR, OT_ERR_NOENT},
        {EEXIST, OT_ERR_EXISTS},
        {ENOTEMPTY, OT_ERR_EXISTS},
        {EACCES, OT_ERR_PERM},
        {EPERM, OT_ERR_PERM},
        {EROFS, OT_ERR_PERM},
        {EINVAL, OT_ERR_INVALID},
        {EIO, OT_ERR_IO},
        {EBADF, OT_ERR_IO},
        {12345, OT_ERR_IO},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(map); i++)
        assert_int_equal(ot_err_from_errno(map[i].errnum), map[i].err);
}

static void test_diag_set(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    assert_int_equal(ot_diag_set(&d, OT_ERR_HASH, "payload '%s': SHA-256 mismatch", "rootfs"),
                     OT_ERR_HASH);
    assert_int_equal(d.err, OT_ERR_HASH);
    assert_int_equal(d.sys_errno, 0);
    assert_string_equal(d.msg, "payload 'rootfs': SHA-256 mismatch");
    /* an empty message keeps the inner detail, but the code changes */
    assert_int_equal(ot_diag_set(&d, OT_ERR_SIGNATURE, "%s", ""), OT_ERR_SIGNATURE);
    assert_int_equal(d.err, OT_ERR_SIGNATURE);
    assert_string_equal(d.msg, "payload 'rootfs': SHA-256 mismatch");
    assert_int_equal(ot_diag_set(NULL, OT_ERR_IO, "no diag %d", 1), OT_ERR_IO);
    /* arguments may point into the message itself */
    assert_int_equal(ot_diag_set(&d, OT_ERR_IO, "outer: %s", d.msg), OT_ERR_IO);
    assert_string_equal(d.msg, "outer: payload 'rootfs': SHA-256 mismatch");
    /* long messages are truncated, never overflow */
    char big[2000];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ot_diag_set(&d, OT_ERR_LIMIT, "%s", big), OT_ERR_LIMIT);
    assert_int_equal(strlen(d.msg), OT_DIAG_MSG_MAX - 1);
    ot_diag_clear(&d);
    assert_int_equal(d.err, OT_OK);
    assert_string_equal(d.msg, "");
    ot_diag_clear(NULL);
}

static void test_diag_errno(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    char want[OT_DIAG_MSG_MAX];
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, ENOENT, "open %s", "/x"), OT_ERR_NOENT);
    snprintf(want, sizeof(want), "open /x: %s", strerror(ENOENT));
    assert_string_equal(d.msg, want);
    assert_int_equal(d.sys_errno, ENOENT);
    assert_int_equal(d.err, OT_ERR_NOENT);
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, ENOSPC, "write"), OT_ERR_NOSPC);
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, EACCES, "open"), OT_ERR_PERM);
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, EEXIST, "link"), OT_ERR_EXISTS);
    /* EINVAL and errno 0 from a system call are I/O errors to the caller */
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, EINVAL, "ioctl"), OT_ERR_IO);
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, 0, "short read"), OT_ERR_IO);
    assert_string_equal(d.msg, "short read"); /* no ": Success" */
    assert_int_equal(d.sys_errno, 0);
    /* an explicit code other than OT_ERR_IO is kept, including OT_ERR_INVALID */
    assert_int_equal(ot_diag_errno(&d, OT_ERR_HASH, ENOENT, "x"), OT_ERR_HASH);
    assert_int_equal(d.sys_errno, ENOENT);
    assert_int_equal(ot_diag_errno(&d, OT_ERR_INVALID, EINVAL, "bad flag"), OT_ERR_INVALID);
    assert_int_equal(d.err, OT_ERR_INVALID);
    assert_int_equal(ot_diag_errno(NULL, OT_ERR_IO, ENOSPC, "x"), OT_ERR_NOSPC);
    /* the errno text still fits after a long message */
    char big[600];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(ot_diag_errno(&d, OT_ERR_IO, EIO, "%s", big), OT_ERR_IO);
    assert_int_equal(strlen(d.msg), OT_DIAG_MSG_MAX - 1);
}

static void test_diag_prefix(void **state)
{
    (void)state;
    struct ot_diag d = {0};
    ot_diag_set(&d, OT_ERR_HASH, "payload 'boot': SHA-256 mismatch");
    assert_int_equal(ot_diag_prefix(&d, OT_ERR_IO, "unpack %s", "a.otr"), OT_ERR_HASH);
    assert_string_equal(d.msg, "unpack a.otr: payload 'boot': SHA-256 mismatch");
    assert_int_equal(d.err, OT_ERR_HASH); /* the inner code wins */
    ot_diag_clear(&d);
    assert_int_equal(ot_diag_prefix(&d, OT_ERR_FORMAT, "manifest"), OT_ERR_FORMAT);
    assert_string_equal(d.msg, "manifest");
    assert_int_equal(d.err, OT_ERR_FORMAT);
    assert_int_equal(ot_diag_prefix(NULL, OT_ERR_NOKEY, "x"), OT_ERR_NOKEY);
    /* a prefix that fills the message keeps it terminated */
    char big[600];
    memset(big, 'p', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ot_diag_set(&d, OT_ERR_IO, "inner");
    assert_int_equal(ot_diag_prefix(&d, OT_ERR_IO, "%s", big), OT_ERR_IO);
    assert_int_equal(strlen(d.msg), OT_DIAG_MSG_MAX - 1);
    /* prefixing a long message truncates its end */
    memset(big, 'i', sizeof(big) - 1);
    ot_diag_set(&d, OT_ERR_IO, "%s", big);
    assert_int_equal(ot_diag_prefix(&d, OT_ERR_IO, "outer"), OT_ERR_IO);
    assert_int_equal(strncmp(d.msg, "outer: iii", 10), 0);
    assert_int_equal(strlen(d.msg), OT_DIAG_MSG_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_texts), cmocka_unit_test(test_from_errno),
        cmocka_unit_test(test_diag_set),        cmocka_unit_test(test_diag_errno),
        cmocka_unit_test(test_diag_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
