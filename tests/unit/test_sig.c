/* manifest.sig (sig.c): parsing, output, adding signatures, and k-of-n verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otter/sig.h"

static const uint8_t manifest[] = "{\"format\":1,\"name\":\"demo\",\"version\":\"1.0\"}\n";
#define MLEN (sizeof(manifest) - 1)

struct fixture {
    struct ot_key alice, bob, carol, mallory; /* mallory is not trusted */
    struct ot_trust trust;                    /* alice, bob, carol; 2 of 3 */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || ot_key_generate(OT_KEY_SIGN_SECRET, "alice", &f->alice) ||
        ot_key_generate(OT_KEY_SIGN_SECRET, "bob", &f->bob) ||
        ot_key_generate(OT_KEY_SIGN_SECRET, "", &f->carol) ||
        ot_key_generate(OT_KEY_SIGN_SECRET, "mallory", &f->mallory))
        return -1;
    struct ot_key keys[3] = {f->alice, f->bob, f->carol};
    if (ot_trust_init(&f->trust, 2, keys, 3, NULL))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static void add(struct ot_sigset *s, const struct ot_key *k)
{
    struct ot_diag d = {0};
    if (ot_sigset_add(s, k, manifest, MLEN, &d) != OT_OK)
        fail_msg("add: %s", d.msg);
}

static enum ot_err verify(const struct ot_sigset *s, const struct ot_trust *t,
                          struct ot_sig_report *r, struct ot_diag *d)
{
    return ot_sigset_verify(s, t, manifest, MLEN, r, d);
}

static void test_add_format_parse(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0}, back;
    struct ot_buf b;
    struct ot_diag d = {0};
    add(&s, &f->alice);
    add(&s, &f->bob);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.sigs[0].key_id, f->alice.id);
    assert_string_equal(s.sigs[1].key_id, f->bob.id);
    assert_true(ot_sign_verify(&f->alice, OT_SIG_CONTEXT, manifest, MLEN, s.sigs[0].sig));
    ot_buf_init(&b, OT_SIG_FILE_MAX);
    assert_int_equal(ot_sigset_format(&s, &b), OT_OK);
    assert_int_equal(ot_sigset_parse(b.data, b.len, &back, &d), OT_OK);
    assert_int_equal(back.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(back.sigs[i].key_id, s.sigs[i].key_id);
        assert_memory_equal(back.sigs[i].sig, s.sigs[i].sig, OT_SIGNATURE_LEN);
    }
    ot_buf_release(&b);
}

static void test_format_exact(void **state)
{
    (void)state;
    struct ot_sigset s = {.n = 1};
    struct ot_buf b;
    memcpy(s.sigs[0].key_id, "0123456789abcdef", OT_KEY_ID_STRLEN);
    memset(s.sigs[0].sig, 0xff, OT_SIGNATURE_LEN);
    ot_buf_init(&b, OT_SIG_FILE_MAX);
    assert_int_equal(ot_sigset_format(&s, &b), OT_OK);
    assert_string_equal(ot_buf_str(&b),
                        "{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdef\","
                        "\"signature\":\"/////////////////////////////////////////////////////////"
                        "////////////////////////////w==\"}]}\n");
    ot_buf_reset(&b);
    s.n = OT_SIG_MAX + 1;
    assert_int_equal(ot_sigset_format(&s, &b), OT_ERR_INVALID); /* could not be read back */
    assert_int_equal(b.len, 0);
    s.n = 1;
    memcpy(s.sigs[0].key_id, "0123456789ABCDEF", OT_KEY_ID_STRLEN);
    assert_int_equal(ot_sigset_format(&s, &b), OT_ERR_INVALID);
    assert_int_equal(b.len, 0);
    ot_buf_release(&b);
}

static void test_add_rejects(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_diag d = {0};
    struct ot_key pub, box;
    add(&s, &f->alice);
    assert_int_equal(ot_sigset_add(&s, &f->alice, manifest, MLEN, &d), OT_ERR_EXISTS);
    assert_non_null(strstr(d.msg, "has already signed"));
    ot_key_public(&f->bob, &pub);
    assert_int_equal(ot_sigset_add(&s, &pub, manifest, MLEN, &d), OT_ERR_INVALID);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, NULL, &box), OT_OK);
    assert_int_equal(ot_sigset_add(&s, &box, manifest, MLEN, &d), OT_ERR_INVALID);
    assert_int_equal(s.n, 1);
    for (size_t i = 1; i < OT_SIG_MAX; i++) {
        struct ot_key k;
        assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &k), OT_OK);
        add(&s, &k);
    }
    struct ot_key extra;
    assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &extra), OT_OK);
    assert_int_equal(ot_sigset_add(&s, &extra, manifest, MLEN, &d), OT_ERR_LIMIT);
    assert_int_equal(s.n, OT_SIG_MAX);
}

static void test_threshold(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    struct ot_diag d = {0};
    char want[256];
    add(&s, &f->alice);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    assert_int_equal(r.valid, 1);
    assert_int_equal(r.threshold, 2);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.entries[0].status, OT_SIG_VALID);
    assert_string_equal(r.entries[0].name, "alice");
    snprintf(want, sizeof(want), "1 of 2 required signatures (valid: alice %s)", f->alice.id);
    assert_string_equal(d.msg, want);
    add(&s, &f->carol);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_OK);
    assert_int_equal(r.valid, 2);
    assert_string_equal(r.entries[1].name, "");
    add(&s, &f->bob);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_OK);
    assert_int_equal(r.valid, 3);
    assert_int_equal(verify(&s, &f->trust, NULL, NULL), OT_OK); /* report is optional */
    /* A 3-of-3 trust set is not met by two. */
    struct ot_trust all = f->trust;
    all.threshold = 3;
    s.n = 2;
    assert_int_equal(verify(&s, &all, &r, &d), OT_ERR_SIGNATURE);
    snprintf(want, sizeof(want), "2 of 3 required signatures (valid: alice %s; valid: %s)",
             f->alice.id, f->carol.id);
    assert_string_equal(d.msg, want);
    /* A threshold of 0 (never produced by parse/init) accepts nothing. */
    all.threshold = 0;
    assert_int_not_equal(verify(&s, &all, &r, &d), OT_OK);
}

static void test_duplicates_count_once(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    struct ot_diag d = {0};
    add(&s, &f->alice);
    s.sigs[1] = s.sigs[0]; /* the same signature again */
    s.n = 2;
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    assert_int_equal(r.valid, 1);
    assert_int_equal(r.entries[0].status, OT_SIG_VALID);
    assert_int_equal(r.entries[1].status, OT_SIG_DUPLICATE);
    char want[256];
    snprintf(want, sizeof(want),
             "1 of 2 required signatures (valid: alice %s; duplicate: alice %s)", f->alice.id,
             f->alice.id);
    assert_string_equal(d.msg, want);
    /* Signing again gives the same bytes (Ed25519 is deterministic): still one key. */
    assert_int_equal(ot_sign(&f->alice, OT_SIG_CONTEXT, manifest, MLEN, s.sigs[1].sig), OT_OK);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    assert_int_equal(r.valid, 1);
    /* An invalid signature first does not stop a later good one from counting. */
    s.sigs[0].sig[0] ^= 1;
    add(&s, &f->bob);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_OK);
    assert_int_equal(r.entries[0].status, OT_SIG_INVALID);
    assert_int_equal(r.entries[1].status, OT_SIG_VALID);
    assert_int_equal(r.entries[2].status, OT_SIG_VALID);
    assert_int_equal(r.valid, 2);
}

static void test_unknown_keys(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    struct ot_diag d = {0};
    char want[256];
    add(&s, &f->mallory);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_UNTRUSTED);
    assert_int_equal(r.entries[0].status, OT_SIG_UNKNOWN);
    assert_string_equal(r.entries[0].name, "");
    assert_string_equal(r.entries[0].key_id, f->mallory.id);
    snprintf(want, sizeof(want), "0 of 2 required signatures (unknown key %s)", f->mallory.id);
    assert_string_equal(d.msg, want);
    add(&s, &f->alice);
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    snprintf(want, sizeof(want), "1 of 2 required signatures (unknown key %s; valid: alice %s)",
             f->mallory.id, f->alice.id);
    assert_string_equal(d.msg, want);
    /* Many unknown keys never add up to the threshold. */
    struct ot_sigset many = {0};
    for (size_t i = 0; i < OT_SIG_MAX; i++) {
        struct ot_key k;
        assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, NULL, &k), OT_OK);
        add(&many, &k);
    }
    assert_int_equal(verify(&many, &f->trust, &r, &d), OT_ERR_UNTRUSTED);
    assert_int_equal(r.valid, 0);
    assert_int_equal(r.n, OT_SIG_MAX);
    /* A signature by an untrusted key under a trusted key's id is invalid, not valid. */
    struct ot_sigset forged = {0};
    add(&forged, &f->mallory);
    memcpy(forged.sigs[0].key_id, f->alice.id, OT_KEY_ID_STRLEN);
    assert_int_equal(verify(&forged, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    assert_int_equal(r.entries[0].status, OT_SIG_INVALID);
}

static void test_empty_set(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    struct ot_diag d = {0};
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
    assert_string_equal(d.msg, "0 of 2 required signatures (no signatures)");
    assert_int_equal(r.n, 0);
}

/* An unsigned artifact (packed by a CI job without keys) has an empty list, to be signed later. */
static void test_empty_set_round_trip(void **state)
{
    (void)state;
    struct ot_sigset s = {0}, back = {.n = 5};
    struct ot_buf b;
    ot_buf_init(&b, OT_SIG_FILE_MAX);
    assert_int_equal(ot_sigset_format(&s, &b), OT_OK);
    assert_int_equal(ot_sigset_parse(b.data, b.len, &back, NULL), OT_OK);
    assert_int_equal(back.n, 0);
    ot_buf_release(&b);
}

static void test_tampering(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    struct ot_diag d = {0};
    uint8_t m[sizeof(manifest)];
    add(&s, &f->alice);
    add(&s, &f->bob);
    memcpy(m, manifest, sizeof(m));
    for (size_t i = 0; i < MLEN; i += 7) {
        m[i] ^= 0x20;
        assert_int_equal(ot_sigset_verify(&s, &f->trust, m, MLEN, &r, &d), OT_ERR_SIGNATURE);
        assert_int_equal(r.valid, 0);
        assert_int_equal(r.entries[0].status, OT_SIG_INVALID);
        assert_int_equal(r.entries[1].status, OT_SIG_INVALID);
        m[i] ^= 0x20;
    }
    char want[256];
    m[0] ^= 1;
    assert_int_equal(ot_sigset_verify(&s, &f->trust, m, MLEN, &r, &d), OT_ERR_SIGNATURE);
    snprintf(want, sizeof(want),
             "0 of 2 required signatures (invalid signature: alice %s; invalid signature: bob %s)",
             f->alice.id, f->bob.id);
    assert_string_equal(d.msg, want);
    /* Appending or dropping bytes. */
    assert_int_equal(ot_sigset_verify(&s, &f->trust, manifest, MLEN - 1, &r, &d), OT_ERR_SIGNATURE);
    assert_int_equal(ot_sigset_verify(&s, &f->trust, manifest, MLEN + 1, &r, &d), OT_ERR_SIGNATURE);
    /* One flipped bit in one signature. */
    for (size_t bit = 0; bit < 8 * OT_SIGNATURE_LEN; bit += 37) {
        s.sigs[1].sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(verify(&s, &f->trust, &r, &d), OT_ERR_SIGNATURE);
        assert_int_equal(r.entries[0].status, OT_SIG_VALID);
        assert_int_equal(r.entries[1].status, OT_SIG_INVALID);
        s.sigs[1].sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(verify(&s, &f->trust, &r, &d), OT_OK);
}

static void test_context_separation(void **state)
{
    struct fixture *f = *state;
    struct ot_sigset s = {0};
    struct ot_sig_report r;
    /* Signatures by trusted keys over the same bytes, but for another purpose. */
    s.n = 2;
    memcpy(s.sigs[0].key_id, f->alice.id, OT_KEY_ID_STRLEN);
    memcpy(s.sigs[1].key_id, f->bob.id, OT_KEY_ID_STRLEN);
    assert_int_equal(ot_sign(&f->alice, "otter-trust-v1", manifest, MLEN, s.sigs[0].sig), OT_OK);
    assert_int_equal(ot_sign(&f->bob, "otter-manifest-v2", manifest, MLEN, s.sigs[1].sig), OT_OK);
    assert_int_equal(verify(&s, &f->trust, &r, NULL), OT_ERR_SIGNATURE);
    assert_int_equal(r.entries[0].status, OT_SIG_INVALID);
    assert_int_equal(r.entries[1].status, OT_SIG_INVALID);
    assert_int_equal(ot_sign(&f->alice, OT_SIG_CONTEXT, manifest, MLEN, s.sigs[0].sig), OT_OK);
    assert_int_equal(ot_sign(&f->bob, OT_SIG_CONTEXT, manifest, MLEN, s.sigs[1].sig), OT_OK);
    assert_int_equal(verify(&s, &f->trust, &r, NULL), OT_OK);
}

#define SIG_B64                                                                                    \
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
#define ENTRY "{\"key_id\":\"0123456789abcdef\",\"signature\":\"" SIG_B64 "\"}"

static const struct {
    const char *text;
    enum ot_err err;
    const char *msg;
} bad_files[] = {
    {"{\"otter_signatures\":2,\"signatures\":[" ENTRY "]}", OT_ERR_UNSUPPORTED, "version 2"},
    {"{\"signatures\":[" ENTRY "]}", OT_ERR_FORMAT, "missing field 'otter_signatures'"},
    {"{\"otter_signatures\":1}", OT_ERR_FORMAT, "missing field 'signatures'"},
    {"{\"otter_signatures\":1,\"signatures\":{}}", OT_ERR_FORMAT, "must be an array"},
    {"{\"otter_signatures\":1,\"signatures\":[" ENTRY "],\"x\":1}", OT_ERR_FORMAT,
     "unknown field 'x'"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdef\",\"signature\":"
     "\"" SIG_B64 "\",\"alg\":\"ed25519\"}]}",
     OT_ERR_FORMAT, "signature 1: unknown field 'alg'"},
    {"{\"otter_signatures\":1,\"signatures\":[" ENTRY
     ",{\"key_id\":\"0123456789ABCDEF\",\"signature\":\"" SIG_B64 "\"}]}",
     OT_ERR_FORMAT, "signature 2: key_id must be 16 lowercase hex digits"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcde\",\"signature\":"
     "\"" SIG_B64 "\"}]}",
     OT_ERR_FORMAT, "key_id must be 16 lowercase hex digits"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdeg\",\"signature\":"
     "\"" SIG_B64 "\"}]}",
     OT_ERR_FORMAT, "key_id must be 16 lowercase hex digits"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdef0\",\"signature\":"
     "\"" SIG_B64 "\"}]}",
     OT_ERR_FORMAT, "'key_id' is longer than 16 bytes"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdef\",\"signature\":"
     "\"AAAA\"}]}",
     OT_ERR_FORMAT, "'signature' must be base64 of 64 bytes"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"key_id\":\"0123456789abcdef\"}]}", OT_ERR_FORMAT,
     "missing field 'signature'"},
    {"{\"otter_signatures\":1,\"signatures\":[{\"signature\":\"" SIG_B64 "\"}]}", OT_ERR_FORMAT,
     "missing field 'key_id'"},
    {"{\"otter_signatures\":1,\"signatures\":[7]}", OT_ERR_FORMAT,
     "signature 1: not a JSON object"},
    {"{\"otter_signatures\":1,\"signatures\":[" ENTRY "]} x", OT_ERR_FORMAT,
     "manifest.sig: invalid JSON"},
    {"\"otter\"", OT_ERR_FORMAT, "not a JSON object"},
};

static void test_parse_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad_files); i++) {
        struct ot_sigset s = {.n = 77};
        struct ot_diag d = {0};
        enum ot_err err =
            ot_sigset_parse((const uint8_t *)bad_files[i].text, strlen(bad_files[i].text), &s, &d);
        if (err != bad_files[i].err || !strstr(d.msg, bad_files[i].msg))
            fail_msg("case %zu: got %s '%s', want %s '%s'", i, ot_err_name(err), d.msg,
                     ot_err_name(bad_files[i].err), bad_files[i].msg);
        assert_int_equal(s.n, 77);
    }
}

static void test_parse_limits(void **state)
{
    (void)state;
    struct ot_buf b;
    struct ot_sigset s;
    struct ot_diag d = {0};
    ot_buf_init(&b, 2 * OT_SIG_FILE_MAX);
    assert_int_equal(ot_buf_append_str(&b, "{\"otter_signatures\":1,\"signatures\":[" ENTRY),
                     OT_OK);
    for (int i = 1; i < OT_SIG_MAX; i++)
        assert_int_equal(ot_buf_append_str(&b, "," ENTRY), OT_OK);
    size_t len16 = b.len;
    assert_int_equal(ot_buf_append_str(&b, "]}"), OT_OK);
    assert_int_equal(ot_sigset_parse(b.data, b.len, &s, &d), OT_OK);
    assert_int_equal(s.n, OT_SIG_MAX);
    b.len = len16;
    assert_int_equal(ot_buf_append_str(&b, "," ENTRY "]}"), OT_OK);
    assert_int_equal(ot_sigset_parse(b.data, b.len, &s, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "manifest.sig: 17 signatures, at most 16 are allowed");
    /* Larger than the file limit: refused before parsing. */
    ot_buf_reset(&b);
    assert_int_equal(ot_buf_append_str(&b, "{\"otter_signatures\":1,\"signatures\":[" ENTRY "]}"),
                     OT_OK);
    while (b.len <= OT_SIG_FILE_MAX)
        assert_int_equal(ot_buf_append_str(&b, "          "), OT_OK);
    assert_int_equal(ot_sigset_parse(b.data, b.len, &s, &d), OT_ERR_LIMIT);
    ot_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_format_parse, setup, teardown),
        cmocka_unit_test(test_format_exact),
        cmocka_unit_test_setup_teardown(test_add_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_count_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_set, setup, teardown),
        cmocka_unit_test(test_empty_set_round_trip),
        cmocka_unit_test_setup_teardown(test_tampering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_context_separation, setup, teardown),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
