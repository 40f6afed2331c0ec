/* libFuzzer harness for key files (ot_key_parse). Beyond "no crash": every error is explained
 * in printable text, and every accepted key formats back to a file that parses to the same key. */
#include "otter/key.h"

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static bool same_key(const struct ot_key *a, const struct ot_key *b)
{
    return a->type == b->type && strcmp(a->id, b->id) == 0 && strcmp(a->name, b->name) == 0 &&
           memcmp(a->pk, b->pk, sizeof(a->pk)) == 0 && memcmp(a->sk, b->sk, sizeof(a->sk)) == 0;
}

static void check_roundtrip(const struct ot_key *k)
{
    struct ot_buf b;
    struct ot_key back;
    ot_buf_init(&b, OT_KEY_FILE_MAX);
    if (ot_key_format(k, false, &b) != OT_OK || ot_key_parse(b.data, b.len, &back, NULL) != OT_OK ||
        !same_key(k, &back))
        abort();
    ot_buf_release(&b);
    ot_key_wipe(&back);
}

static void check_signing(const struct ot_key *k)
{
    static const uint8_t msg[] = "fuzz";
    uint8_t sig[OT_SIGNATURE_LEN];
    if (k->type != OT_KEY_SIGN_SECRET)
        return;
    if (ot_sign(k, "fuzz", msg, sizeof(msg), sig) != OT_OK ||
        !ot_sign_verify(k, "fuzz", msg, sizeof(msg), sig) ||
        ot_sign_verify(k, "fuzz2", msg, sizeof(msg), sig))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ot_key k;
    struct ot_diag d = {0};
    if (ot_key_parse(data, size, &k, &d) != OT_OK) {
        if (d.err == OT_OK || !d.msg[0] || !printable(d.msg))
            abort();
        return 0;
    }
    char id[OT_KEY_ID_STRLEN];
    ot_key_id(k.pk, id);
    if (strcmp(id, k.id) != 0 || !printable(k.name))
        abort();
    check_roundtrip(&k);
    check_signing(&k);
    ot_key_wipe(&k);
    return 0;
}
