/* Safe names (the gate between artifact/network names and the file system), join and dirname. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/path.h"

static bool safe(const char *s) { return ot_name_is_safe(s, strlen(s)); }

static void test_name_is_safe(void **state)
{
    (void)state;
    static const char *const good[] = {
        "a",
        "rootfs.img",
        "A-Z_0.9+x",
        "gw-2",
        "x..y",
        "a.",
        "0",
        "+",
        "_hidden",
        "v1.2.3-rc1",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 64 */
    };
    static const char *const bad[] = {
        "",
        ".",
        "..",
        ".hidden",
        "-rf",
        "--",
        "a/b",
        "/a",
        "a/",
        "../x",
        "a b",
        "a\tb",
        "a\\b",
        "a:b",
        "a*",
        "a?",
        "a\"",
        "a'",
        "a$b",
        "a\nb",
        "caf\xc3\xa9",
        "\xff",
        "a~",
        "a=b",
        "a,b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(good); i++)
        if (!safe(good[i]))
            fail_msg("'%s' should be safe", good[i]);
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        if (safe(bad[i]))
            fail_msg("'%s' should not be safe", bad[i]);
    /* len is what counts: a NUL inside it is unsafe, bytes after it are not looked at */
    assert_false(ot_name_is_safe("a\0b", 3));
    assert_false(ot_name_is_safe("ab\0", 3));
    assert_true(ot_name_is_safe("abc/../etc", 3));
    assert_false(ot_name_is_safe("abc", 0));
    assert_false(ot_name_is_safe(NULL, 3));
    assert_false(ot_name_is_safe("abc", SIZE_MAX));
}

static void join_case(const char *dir, const char *name, const char *want)
{
    char *p = NULL;
    assert_int_equal(ot_path_join(dir, name, &p), OT_OK);
    if (strcmp(p, want) != 0)
        fail_msg("join('%s', '%s') = '%s', want '%s'", dir, name, p, want);
    free(p);
}

static void test_join(void **state)
{
    (void)state;
    join_case("/var/lib/otter", "state.json", "/var/lib/otter/state.json");
    join_case("/var/lib/otter/", "state.json", "/var/lib/otter/state.json");
    join_case("/var/lib/otter///", "x", "/var/lib/otter/x");
    join_case("/", "etc", "/etc");
    join_case("//", "etc", "/etc");
    join_case(".", "a", "./a");
    join_case("rel", "a", "rel/a");
    join_case("", "a", "a"); /* never turns a relative name into an absolute path */
    join_case("dir", "", "dir/");
}

static void dirname_case(const char *path, const char *want)
{
    char *p = NULL;
    assert_int_equal(ot_path_dirname(path, &p), OT_OK);
    if (strcmp(p, want) != 0)
        fail_msg("dirname('%s') = '%s', want '%s'", path, p, want);
    free(p);
}

static void test_dirname(void **state)
{
    (void)state;
    dirname_case("/var/lib/otter/state.json", "/var/lib/otter");
    dirname_case("/etc", "/");
    dirname_case("/", "/");
    dirname_case("//", "/");
    dirname_case("file", ".");
    dirname_case("", ".");
    dirname_case("a/b", "a");
    dirname_case("a//b", "a");
    dirname_case("a/b/", "a");
    dirname_case("a/", ".");
    dirname_case("/a/b//", "/a");
    dirname_case("./x", ".");
    dirname_case("../x", "..");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_is_safe),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_dirname),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
