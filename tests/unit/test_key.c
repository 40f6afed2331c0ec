/* Keys (key.c): generation, key files (strict parsing, exact output, atomic no-clobber saving,
 * modes), domain-separated Ed25519 signatures. Fixed vectors: RFC 8032 test 1 (Ed25519) and
 * RFC 7748 §6.1 Alice (X25519). */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sodium.h>

#include "otter/file.h"
#include "otter/key.h"

#define ED_PK "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#define ED_SK                                                                                      \
    "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg=="
#define ED_ID "21fe31dfa154a261"
#define X_PK "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
#define X_SK "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
#define X_ID "300c9c9603b92a4b"
#define ZERO_B64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define ZERO_ID "66687aadf862bd77"

#define ED_SECRET_FILE                                                                             \
    "{\"otter_key\":1,\"type\":\"ed25519-secret\",\"key_id\":\"" ED_ID "\",\"name\":\"alice\","    \
    "\"public_key\":\"" ED_PK "\",\"secret_key\":\"" ED_SK "\"}\n"

static const uint8_t ed_pk[32] = {0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe,
                                  0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6,
                                  0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a};

static enum ot_err parse_text(const char *text, struct ot_key *k, struct ot_diag *d)
{
    return ot_key_parse((const uint8_t *)text, strlen(text), k, d);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void assert_same_key(const struct ot_key *a, const struct ot_key *b)
{
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->name, b->name);
    assert_memory_equal(a->pk, b->pk, 32);
    assert_memory_equal(a->sk, b->sk, 64);
}

/* ---- generation and helpers ---- */

static void test_generate_sign(void **state)
{
    (void)state;
    struct ot_key a, b;
    char id[OT_KEY_ID_STRLEN];
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "alice", &a), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &b), OT_OK);
    assert_int_equal(a.type, OT_KEY_SIGN_SECRET);
    assert_string_equal(a.name, "alice");
    assert_string_equal(b.name, "");
    ot_key_id(a.pk, id);
    assert_string_equal(a.id, id);
    assert_int_equal(strlen(a.id), 16);
    assert_memory_equal(a.sk + 32, a.pk, 32); /* libsodium layout: seed || pk */
    assert_memory_not_equal(a.pk, b.pk, 32);
    assert_true(ot_key_is_secret(&a));
    assert_true(ot_key_is_signing(&a));
    ot_key_wipe(&a);
    assert_true(all_zero(a.sk, sizeof(a.sk)));
    ot_key_wipe(NULL);
}

static void test_generate_box(void **state)
{
    (void)state;
    struct ot_key k;
    uint8_t pk[32];
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "fleet-a", &k), OT_OK);
    assert_int_equal(k.type, OT_KEY_BOX_SECRET);
    assert_int_equal(crypto_scalarmult_base(pk, k.sk), 0);
    assert_memory_equal(pk, k.pk, 32);
    assert_true(all_zero(k.sk + 32, 32));
    assert_true(ot_key_is_secret(&k));
    assert_false(ot_key_is_signing(&k));
}

static void test_generate_rejects(void **state)
{
    (void)state;
    struct ot_key k = {.name = "sentinel"};
    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_PUBLIC, NULL, &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_PUBLIC, NULL, &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate((enum ot_key_type)7, NULL, &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, name64, &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "tab\there", &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "caf\xc3\xa9", &k), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "esc\x1b[0m", &k), OT_ERR_INVALID);
    assert_string_equal(k.name, "sentinel"); /* untouched on error */
    name64[63] = '\0';
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, name64, &k), OT_OK);
    assert_string_equal(k.name, name64);
}

static void test_key_id_vector(void **state)
{
    (void)state;
    static const uint8_t zero[32];
    char id[OT_KEY_ID_STRLEN];
    ot_key_id(zero, id);
    assert_string_equal(id, ZERO_ID); /* SHA-256(32 zero bytes) = 66687aad... */
    ot_key_id(ed_pk, id);
    assert_string_equal(id, ED_ID);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(ot_key_type_name(OT_KEY_SIGN_SECRET), "ed25519-secret");
    assert_string_equal(ot_key_type_name(OT_KEY_SIGN_PUBLIC), "ed25519-public");
    assert_string_equal(ot_key_type_name(OT_KEY_BOX_SECRET), "x25519-secret");
    assert_string_equal(ot_key_type_name(OT_KEY_BOX_PUBLIC), "x25519-public");
    assert_string_equal(ot_key_type_name((enum ot_key_type)42), "unknown");
    struct ot_key k = {.type = OT_KEY_BOX_PUBLIC};
    assert_false(ot_key_is_secret(&k));
    assert_false(ot_key_is_signing(&k));
    k.type = OT_KEY_SIGN_PUBLIC;
    assert_false(ot_key_is_secret(&k));
    assert_true(ot_key_is_signing(&k));
}

static void test_public_half(void **state)
{
    (void)state;
    struct ot_key s, p;
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "bob", &s), OT_OK);
    ot_key_public(&s, &p);
    assert_int_equal(p.type, OT_KEY_SIGN_PUBLIC);
    assert_string_equal(p.id, s.id);
    assert_string_equal(p.name, "bob");
    assert_memory_equal(p.pk, s.pk, 32);
    assert_true(all_zero(p.sk, sizeof(p.sk)));
    ot_key_public(&s, &s); /* in place */
    assert_int_equal(s.type, OT_KEY_SIGN_PUBLIC);
    assert_true(all_zero(s.sk, sizeof(s.sk)));
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, NULL, &s), OT_OK);
    ot_key_public(&s, &p);
    assert_int_equal(p.type, OT_KEY_BOX_PUBLIC);
    ot_key_public(&p, &s); /* a public key maps to itself */
    assert_int_equal(s.type, OT_KEY_BOX_PUBLIC);
    assert_memory_equal(s.pk, p.pk, 32);
}

/* ---- key files ---- */

static void test_parse_vectors(void **state)
{
    (void)state;
    struct ot_key k;
    struct ot_diag d = {0};
    assert_int_equal(parse_text(ED_SECRET_FILE, &k, &d), OT_OK);
    assert_int_equal(k.type, OT_KEY_SIGN_SECRET);
    assert_string_equal(k.id, ED_ID);
    assert_string_equal(k.name, "alice");
    assert_memory_equal(k.pk, ed_pk, 32);
    assert_memory_equal(k.sk + 32, ed_pk, 32);
    assert_int_equal(k.sk[0], 0x9d);
    /* Field order does not matter, name is optional. */
    assert_int_equal(parse_text("{\"public_key\":\"" ED_PK "\",\"key_id\":\"" ED_ID
                                "\",\"type\":\"ed25519-public\",\"otter_key\":1}",
                                &k, &d),
                     OT_OK);
    assert_int_equal(k.type, OT_KEY_SIGN_PUBLIC);
    assert_string_equal(k.name, "");
    assert_true(all_zero(k.sk, sizeof(k.sk)));
    assert_int_equal(parse_text("{\"otter_key\":1,\"type\":\"x25519-secret\",\"key_id\":\"" X_ID
                                "\",\"name\":\"\",\"public_key\":\"" X_PK
                                "\",\"secret_key\":\"" X_SK "\"}",
                                &k, &d),
                     OT_OK);
    assert_int_equal(k.type, OT_KEY_BOX_SECRET);
    assert_int_equal(k.sk[0], 0x77);
    assert_int_equal(k.pk[0], 0x85);
    assert_int_equal(parse_text("{\"otter_key\":1,\"type\":\"x25519-public\",\"key_id\":\"" X_ID
                                "\",\"name\":\"a \\\"quoted\\\" \\\\ name\",\"public_key\":\"" X_PK
                                "\"}",
                                &k, &d),
                     OT_OK);
    assert_string_equal(k.name, "a \"quoted\" \\ name");
}

#define HEAD(type, id) "{\"otter_key\":1,\"type\":\"" type "\",\"key_id\":\"" id "\","
static const struct {
    const char *text;
    enum ot_err err;
    const char *msg; /* expected part of the diagnostic */
} bad_files[] = {
    {"{\"otter_key\":2,\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID "\",\"public_key\":\"" ED_PK
     "\"}",
     OT_ERR_UNSUPPORTED, "version 2 is not supported"},
    {"{\"otter_key\":0,\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID "\",\"public_key\":\"" ED_PK
     "\"}",
     OT_ERR_UNSUPPORTED, "version 0"},
    {"{\"otter_key\":\"1\",\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID
     "\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "'otter_key' must be a non-negative integer"},
    {"{\"otter_key\":1.0,\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID
     "\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "'otter_key'"},
    {"{\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID "\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "missing field 'otter_key'"},
    {HEAD("ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\",\"comment\":\"x\"}", OT_ERR_FORMAT,
     "unknown field 'comment'"},
    {HEAD("rsa", ED_ID) "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT, "unknown key type"},
    {HEAD("Ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "unknown key type"},
    {"{\"otter_key\":1,\"key_id\":\"" ED_ID "\",\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "missing field 'type'"},
    {"{\"otter_key\":1,\"type\":\"ed25519-public\",\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "missing field 'key_id'"},
    {HEAD("ed25519-public", ED_ID) "\"name\":\"x\"}", OT_ERR_FORMAT, "missing field 'public_key'"},
    {HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "missing field 'secret_key'"},
    {HEAD("ed25519-public", X_ID) "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "key_id does not match the public key (its id is " ED_ID ")"},
    {HEAD("ed25519-public", "21FE31DFA154A261") "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "key_id does not match"},
    {HEAD("ed25519-public", ED_ID "00") "\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "'key_id' is longer than 16 bytes"},
    {HEAD("ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\",\"secret_key\":\"" ED_SK "\"}",
     OT_ERR_FORMAT, "a public key has no field 'secret_key'"},
    {HEAD("ed25519-public",
          ED_ID) "\"public_key\":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHUQ==\"}",
     OT_ERR_FORMAT, "'public_key' must be base64 of 32 bytes"},
    {HEAD("ed25519-public",
          ED_ID) "\"public_key\":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
     OT_ERR_FORMAT, "'public_key' must be base64 of 32 bytes"},
    {HEAD("ed25519-public",
          ED_ID) "\"public_key\":"
                 "\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"}",
     OT_ERR_FORMAT, "'public_key'"},
    {HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK "\",\"secret_key\":\"" X_SK "\"}",
     OT_ERR_FORMAT, "'secret_key' must be base64 of 64 bytes"},
    /* A public key that does not belong to the secret one (id made to match the public key). */
    {HEAD("ed25519-secret", X_ID) "\"public_key\":\"" X_PK "\",\"secret_key\":\"" ED_SK "\"}",
     OT_ERR_FORMAT, "public_key and secret_key do not belong together"},
    /* Seed of RFC 8032 test 1 with a different public key embedded in secret_key. */
    {HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK "\",\"secret_key\":"
                                   "\"nWGxne/"
                                   "9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2CFIPAJiTCnVHSLfdy0PvdaDb86DS"
                                   "Y4GvTrpKmOqptOag==\"}",
     OT_ERR_FORMAT, "do not belong together"},
    {HEAD("x25519-secret", ED_ID) "\"public_key\":\"" ED_PK "\",\"secret_key\":\"" X_SK "\"}",
     OT_ERR_FORMAT, "do not belong together"},
    {HEAD("x25519-secret", X_ID) "\"public_key\":\"" X_PK "\",\"secret_key\":\"" ED_SK "\"}",
     OT_ERR_FORMAT, "'secret_key' must be base64 of 32 bytes"},
    {HEAD("ed25519-public", ZERO_ID) "\"public_key\":\"" ZERO_B64 "\"}", OT_ERR_FORMAT,
     "not a valid Ed25519 key"},
    {HEAD("x25519-public", ZERO_ID) "\"public_key\":\"" ZERO_B64 "\"}", OT_ERR_FORMAT,
     "not a valid X25519 key"},
    {HEAD("ed25519-public",
          ED_ID) "\"name\":\"0123456789012345678901234567890123456789012345678901234567890123\","
                 "\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "'name' is longer than 63 bytes"},
    {HEAD("ed25519-public", ED_ID) "\"name\":\"caf\\u00e9\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "name must be printable ASCII"},
    {HEAD("ed25519-public", ED_ID) "\"name\":\"a\\tb\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "'name' contains control characters"},
    {HEAD("ed25519-public", ED_ID) "\"name\":7,\"public_key\":\"" ED_PK "\"}", OT_ERR_FORMAT,
     "'name' must be a string"},
    {HEAD("ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\",\"public_key\":\"" ED_PK "\"}",
     OT_ERR_FORMAT, "duplicate object key"},
    {"[" HEAD("ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\"}]", OT_ERR_FORMAT,
     "not a JSON object"},
    {HEAD("ed25519-public", ED_ID) "\"public_key\":\"" ED_PK "\"} {}", OT_ERR_FORMAT,
     "invalid JSON"},
    {"", OT_ERR_FORMAT, "invalid JSON"},
};

static void test_parse_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_files); i++) {
        struct ot_key k = {.name = "sentinel"};
        struct ot_diag d = {0};
        enum ot_err err = parse_text(bad_files[i].text, &k, &d);
        if (err != bad_files[i].err || !strstr(d.msg, bad_files[i].msg))
            fail_msg("case %zu: got %s '%s', want %s '%s'", i, ot_err_name(err), d.msg,
                     ot_err_name(bad_files[i].err), bad_files[i].msg);
        assert_int_equal(d.err, err);
        assert_string_equal(k.name, "sentinel"); /* *ret untouched */
    }
}

static void test_parse_size_limit(void **state)
{
    (void)state;
    size_t n = OT_KEY_FILE_MAX + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    memcpy(big, ED_SECRET_FILE, strlen(ED_SECRET_FILE));
    struct ot_key k;
    struct ot_diag d = {0};
    assert_int_equal(ot_key_parse((uint8_t *)big, n, &k, &d), OT_ERR_LIMIT);
    assert_int_equal(ot_key_parse((uint8_t *)big, n - 1, &k, &d), OT_OK); /* trailing blanks */
    free(big);
}

/* Diagnostics never quote secret material, even when the JSON breaks inside the secret. */
static void test_diag_hides_secret(void **state)
{
    (void)state;
    static const char *const texts[] = {
        HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK
                                      "\",\"secret_key\":\"nWGxne/9WmC6\x01\"}",
        HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK
                                      "\",\"secret_key\":\"nWGxne/9WmC6\"x}",
        HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK "\",\"secret_key\":nWGxne/9WmC6}",
        HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" X_PK "\",\"secret_key\":\"" ED_SK "\"}",
        HEAD("ed25519-secret", ED_ID) "\"public_key\":\"" ED_PK
                                      "\",\"secret_key\":\"nWGxne/9WmC6=\"}",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(texts); i++) {
        struct ot_key k;
        struct ot_diag d = {0};
        assert_int_not_equal(parse_text(texts[i], &k, &d), OT_OK);
        assert_true(d.msg[0] != '\0');
        if (strstr(d.msg, "nWGx"))
            fail_msg("case %zu leaks secret text: %s", i, d.msg);
    }
}

static void test_format_exact(void **state)
{
    (void)state;
    struct ot_key k;
    struct ot_buf b;
    ot_buf_init(&b, OT_KEY_FILE_MAX);
    assert_int_equal(parse_text(ED_SECRET_FILE, &k, NULL), OT_OK);
    assert_int_equal(ot_key_format(&k, false, &b), OT_OK);
    assert_string_equal(ot_buf_str(&b), ED_SECRET_FILE);
    ot_buf_reset(&b);
    assert_int_equal(ot_key_format(&k, true, &b), OT_OK);
    assert_string_equal(ot_buf_str(&b),
                        "{\"otter_key\":1,\"type\":\"ed25519-public\",\"key_id\":\"" ED_ID
                        "\",\"name\":\"alice\",\"public_key\":\"" ED_PK "\"}\n");
    /* Appends; on a limit leaves the buffer as it was. */
    size_t len = b.len;
    struct ot_buf small;
    ot_buf_init(&small, 100);
    assert_int_equal(ot_buf_append_str(&small, "x"), OT_OK);
    assert_int_equal(ot_key_format(&k, false, &small), OT_ERR_LIMIT);
    assert_string_equal(ot_buf_str(&small), "x");
    /* Invalid structs are refused rather than written. */
    struct ot_key bad = k;
    bad.type = (enum ot_key_type)9;
    assert_int_equal(ot_key_format(&bad, false, &b), OT_ERR_INVALID);
    bad = k;
    memcpy(bad.name, "new\nline", 9);
    assert_int_equal(ot_key_format(&bad, false, &b), OT_ERR_INVALID);
    assert_int_equal(b.len, len);
    ot_buf_release(&small);
    ot_buf_release(&b);
}

static void test_format_parse_roundtrip(void **state)
{
    (void)state;
    static const enum ot_key_type types[] = {OT_KEY_SIGN_SECRET, OT_KEY_BOX_SECRET};
    for (size_t i = 0; i < OT_ARRAY_SIZE(types); i++) {
        struct ot_key k, back, pub;
        struct ot_buf b;
        struct ot_diag d = {0};
        ot_buf_init(&b, OT_KEY_FILE_MAX);
        assert_int_equal(ot_key_generate(types[i], "q\"uote\\back slash", &k), OT_OK);
        assert_int_equal(ot_key_format(&k, false, &b), OT_OK);
        assert_int_equal(ot_key_parse(b.data, b.len, &back, &d), OT_OK);
        assert_same_key(&k, &back);
        ot_buf_reset(&b);
        assert_int_equal(ot_key_format(&k, true, &b), OT_OK);
        assert_null(strstr(ot_buf_str(&b), "secret"));
        assert_int_equal(ot_key_parse(b.data, b.len, &back, &d), OT_OK);
        ot_key_public(&k, &pub);
        assert_same_key(&pub, &back);
        ot_buf_reset(&b);
        assert_int_equal(ot_key_format(&pub, false, &b), OT_OK); /* public key, not public_only */
        assert_int_equal(ot_key_parse(b.data, b.len, &back, &d), OT_OK);
        assert_same_key(&pub, &back);
        ot_buf_release(&b);
    }
}

/* ---- files ---- */

struct tmpdir {
    char path[64];
};

static int tmp_setup(void **state)
{
    struct tmpdir *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    snprintf(t->path, sizeof(t->path), "/tmp/otter-test-key-XXXXXX");
    if (!mkdtemp(t->path))
        return -1;
    *state = t;
    return 0;
}

static int tmp_teardown(void **state)
{
    struct tmpdir *t = *state;
    DIR *dir = opendir(t->path);
    struct dirent *de;
    while (dir && (de = readdir(dir)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(dir), de->d_name, 0);
    if (dir)
        closedir(dir);
    rmdir(t->path);
    free(t);
    return 0;
}

static size_t count_entries(const char *path)
{
    size_t n = 0;
    DIR *dir = opendir(path);
    struct dirent *de;
    assert_non_null(dir);
    while ((de = readdir(dir)))
        n += de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."));
    closedir(dir);
    return n;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static void test_save_load(void **state)
{
    struct tmpdir *t = *state;
    char sec[128], pub[128];
    snprintf(sec, sizeof(sec), "%s/alice.key", t->path);
    snprintf(pub, sizeof(pub), "%s/alice.pub", t->path);
    struct ot_key k, back;
    struct ot_diag d = {0};
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "alice", &k), OT_OK);
    assert_int_equal(ot_key_save(sec, &k, false, false, &d), OT_OK);
    assert_int_equal(ot_key_save(pub, &k, true, false, &d), OT_OK);
    assert_int_equal(mode_of(sec), 0600);
    assert_int_equal(mode_of(pub), 0644);
    assert_int_equal(ot_key_load(sec, &back, &d), OT_OK);
    assert_same_key(&k, &back);
    assert_int_equal(ot_key_load(pub, &back, &d), OT_OK);
    assert_int_equal(back.type, OT_KEY_SIGN_PUBLIC);
    assert_memory_equal(back.pk, k.pk, 32);
    assert_int_equal(count_entries(t->path), 2); /* no temp files left behind */
}

static void test_save_no_clobber(void **state)
{
    struct tmpdir *t = *state;
    char path[128], link_path[128];
    snprintf(path, sizeof(path), "%s/k", t->path);
    snprintf(link_path, sizeof(link_path), "%s/dangling", t->path);
    struct ot_key a, b, back;
    struct ot_diag d = {0};
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "a", &a), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "b", &b), OT_OK);
    assert_int_equal(ot_key_save(path, &a, false, false, &d), OT_OK);
    assert_int_equal(ot_key_save(path, &b, false, false, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "already exists"));
    assert_int_equal(ot_key_load(path, &back, &d), OT_OK);
    assert_same_key(&a, &back); /* unchanged */
    assert_int_equal(ot_key_save(path, &b, false, true, &d), OT_OK);
    assert_int_equal(ot_key_load(path, &back, &d), OT_OK);
    assert_same_key(&b, &back);
    assert_int_equal(mode_of(path), 0600);
    /* A dangling symlink counts as existing: never write through it. */
    assert_int_equal(symlink("/nonexistent/otter-target", link_path), 0);
    assert_int_equal(ot_key_save(link_path, &a, false, false, &d), OT_ERR_EXISTS);
    assert_int_equal(count_entries(t->path), 2);
}

static void test_load_errors(void **state)
{
    struct tmpdir *t = *state;
    char path[128];
    struct ot_key k = {.name = "sentinel"};
    struct ot_diag d = {0};
    snprintf(path, sizeof(path), "%s/missing", t->path);
    assert_int_equal(ot_key_load(path, &k, &d), OT_ERR_NOENT);
    snprintf(path, sizeof(path), "%s/big", t->path);
    static char big[OT_KEY_FILE_MAX + 1];
    memset(big, ' ', sizeof(big));
    assert_int_equal(ot_file_write_atomic(path, big, sizeof(big), 0600, NULL), OT_OK);
    assert_int_equal(ot_key_load(path, &k, &d), OT_ERR_LIMIT);
    snprintf(path, sizeof(path), "%s/bad", t->path);
    assert_int_equal(ot_file_write_atomic(path, "{}", 2, 0600, NULL), OT_OK);
    assert_int_equal(ot_key_load(path, &k, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, path)); /* the message names the file */
    assert_non_null(strstr(d.msg, "missing field"));
    assert_string_equal(k.name, "sentinel");
    k.type = (enum ot_key_type)9;
    assert_int_equal(ot_key_save(path, &k, false, true, &d), OT_ERR_INVALID); /* bad struct */
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &k), OT_OK);
    assert_int_equal(ot_key_save(t->path, &k, false, true, &d), OT_ERR_IO); /* a directory */
}

/* ---- signatures ---- */

static void test_sign_verify(void **state)
{
    (void)state;
    struct ot_key a, b, pub;
    uint8_t sig[OT_SIGNATURE_LEN];
    uint8_t msg[100];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)i;
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "a", &a), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, "b", &b), OT_OK);
    ot_key_public(&a, &pub);
    assert_int_equal(ot_sign(&a, "ctx", msg, sizeof(msg), sig), OT_OK);
    assert_true(ot_sign_verify(&pub, "ctx", msg, sizeof(msg), sig));
    assert_true(ot_sign_verify(&a, "ctx", msg, sizeof(msg), sig)); /* secret key: its public half */
    assert_false(ot_sign_verify(&b, "ctx", msg, sizeof(msg), sig));
    assert_false(ot_sign_verify(&pub, "ctx", msg, sizeof(msg) - 1, sig));
    for (size_t i = 0; i < sizeof(msg); i += 33) {
        msg[i] ^= 0x01;
        assert_false(ot_sign_verify(&pub, "ctx", msg, sizeof(msg), sig));
        msg[i] ^= 0x01;
    }
    for (size_t i = 0; i < OT_SIGNATURE_LEN; i++) {
        sig[i] ^= 0x80;
        assert_false(ot_sign_verify(&pub, "ctx", msg, sizeof(msg), sig));
        sig[i] ^= 0x80;
    }
    assert_true(ot_sign_verify(&pub, "ctx", msg, sizeof(msg), sig));
    /* Empty messages are fine. */
    assert_int_equal(ot_sign(&a, "ctx", NULL, 0, sig), OT_OK);
    assert_true(ot_sign_verify(&pub, "ctx", NULL, 0, sig));
    assert_true(ot_sign_verify(&pub, "ctx", msg, 0, sig));
}

static void test_context_separation(void **state)
{
    (void)state;
    struct ot_key k;
    uint8_t sig[OT_SIGNATURE_LEN];
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &k), OT_OK);
    assert_int_equal(ot_sign(&k, "otter-manifest-v1", (const uint8_t *)"m", 1, sig), OT_OK);
    assert_false(ot_sign_verify(&k, "otter-trust-v1", (const uint8_t *)"m", 1, sig));
    assert_false(ot_sign_verify(&k, "otter-manifest-v", (const uint8_t *)"1m", 2, sig));
    /* The 0x00 separator: ("ab", "c") and ("a", "bc") sign different bytes. */
    assert_int_equal(ot_sign(&k, "ab", (const uint8_t *)"c", 1, sig), OT_OK);
    assert_false(ot_sign_verify(&k, "a", (const uint8_t *)"bc", 2, sig));
    assert_false(ot_sign_verify(&k, "abc", NULL, 0, sig));
    /* The construction is exactly Ed25519(context || 0x00 || msg). */
    assert_int_equal(crypto_sign_verify_detached(sig, (const uint8_t *)"ab\0c", 4, k.pk), 0);
    /* Bad contexts. */
    assert_int_equal(ot_sign(&k, "", (const uint8_t *)"m", 1, sig), OT_ERR_INVALID);
    assert_int_equal(ot_sign(&k, NULL, (const uint8_t *)"m", 1, sig), OT_ERR_INVALID);
    assert_false(ot_sign_verify(&k, "", (const uint8_t *)"m", 1, sig));
}

static void test_sign_rejects_wrong_keys(void **state)
{
    (void)state;
    struct ot_key s, p, box;
    uint8_t sig[OT_SIGNATURE_LEN] = {0};
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &s), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, NULL, &box), OT_OK);
    ot_key_public(&s, &p);
    assert_int_equal(ot_sign(&p, "ctx", (const uint8_t *)"m", 1, sig), OT_ERR_INVALID);
    assert_int_equal(ot_sign(&box, "ctx", (const uint8_t *)"m", 1, sig), OT_ERR_INVALID);
    assert_int_equal(ot_sign(&s, "ctx", (const uint8_t *)"m", 1, sig), OT_OK);
    /* A box key with the same public bytes is not a signing key. */
    memcpy(box.pk, s.pk, 32);
    box.type = OT_KEY_BOX_PUBLIC;
    assert_false(ot_sign_verify(&box, "ctx", (const uint8_t *)"m", 1, sig));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_sign),
        cmocka_unit_test(test_generate_box),
        cmocka_unit_test(test_generate_rejects),
        cmocka_unit_test(test_key_id_vector),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_public_half),
        cmocka_unit_test(test_parse_vectors),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_diag_hides_secret),
        cmocka_unit_test(test_format_exact),
        cmocka_unit_test(test_format_parse_roundtrip),
        cmocka_unit_test_setup_teardown(test_save_load, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_save_no_clobber, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, tmp_setup, tmp_teardown),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_context_separation),
        cmocka_unit_test(test_sign_rejects_wrong_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
