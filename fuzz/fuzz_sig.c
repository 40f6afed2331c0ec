/* libFuzzer harness for manifest.sig (ot_sigset_parse), and for ot_sigset_verify on whatever
 * parses: against a fixed 2-of-3 trust set (keys from fixed seeds, so the corpus can hold real
 * signatures over FUZZ_MANIFEST), the report must agree with the result code and count each
 * trusted key at most once. */
#include <sodium.h>

#include "otter/sig.h"

#define FUZZ_MANIFEST "{\"name\":\"fuzz\"}\n"

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

/* Trusted: seeds 1, 2, 3 (every seed byte equal to the number); threshold 2. */
static const struct ot_trust *fixed_trust(void)
{
    static struct ot_trust t;
    static bool ready;
    if (ready)
        return &t;
    struct ot_key keys[3];
    for (size_t i = 0; i < 3; i++) {
        uint8_t seed[32], sk[64];
        memset(seed, (int)i + 1, sizeof(seed));
        keys[i] = (struct ot_key){.type = OT_KEY_SIGN_PUBLIC};
        if (sodium_init() < 0 || crypto_sign_seed_keypair(keys[i].pk, sk, seed) != 0)
            abort();
        ot_key_id(keys[i].pk, keys[i].id);
        snprintf(keys[i].name, sizeof(keys[i].name), "key%zu", i + 1);
    }
    if (ot_trust_init(&t, 2, keys, 3, NULL) != OT_OK)
        abort();
    ready = true;
    return &t;
}

static void check_roundtrip(const struct ot_sigset *s)
{
    struct ot_sigset back;
    struct ot_buf b;
    ot_buf_init(&b, OT_SIG_FILE_MAX);
    if (ot_sigset_format(s, &b) != OT_OK || ot_sigset_parse(b.data, b.len, &back, NULL) != OT_OK ||
        back.n != s->n)
        abort();
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(back.sigs[i].key_id, s->sigs[i].key_id) ||
            memcmp(back.sigs[i].sig, s->sigs[i].sig, OT_SIGNATURE_LEN))
            abort();
    ot_buf_release(&b);
}

static void check_report(const struct ot_sigset *s, const struct ot_trust *t,
                         const struct ot_sig_report *r, enum ot_err err)
{
    unsigned valid = 0;
    bool any_trusted = false;
    if (r->n != s->n || r->threshold != t->threshold)
        abort();
    for (size_t i = 0; i < r->n; i++) {
        bool known = ot_trust_find(t, s->sigs[i].key_id) != NULL;
        if (known != (r->entries[i].status != OT_SIG_UNKNOWN))
            abort();
        any_trusted |= known;
        if (r->entries[i].status != OT_SIG_VALID)
            continue;
        valid++;
        for (size_t j = 0; j < i; j++) /* each key counts once */
            if (r->entries[j].status == OT_SIG_VALID &&
                strcmp(r->entries[j].key_id, r->entries[i].key_id) == 0)
                abort();
    }
    /* No signature at all is a missing signature; only signatures by unknown keys are untrusted. */
    enum ot_err want = valid >= t->threshold     ? OT_OK
                       : any_trusted || s->n == 0 ? OT_ERR_SIGNATURE
                                                  : OT_ERR_UNTRUSTED;
    if (valid != r->valid || err != want)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ot_sigset s;
    struct ot_sig_report r;
    struct ot_diag d = {0};
    if (ot_sigset_parse(data, size, &s, &d) != OT_OK) {
        if (d.err == OT_OK || !d.msg[0] || !printable(d.msg))
            abort();
        return 0;
    }
    if (s.n > OT_SIG_MAX)
        abort();
    check_roundtrip(&s);
    const struct ot_trust *t = fixed_trust();
    ot_diag_clear(&d);
    enum ot_err err =
        ot_sigset_verify(&s, t, (const uint8_t *)FUZZ_MANIFEST, strlen(FUZZ_MANIFEST), &r, &d);
    check_report(&s, t, &r, err);
    if (err != OT_OK && !printable(d.msg))
        abort();
    return 0;
}
