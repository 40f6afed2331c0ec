/* libFuzzer harness for trust files (ot_trust_parse): errors are explained in printable text;
 * an accepted trust set is internally consistent and formats back to the same set. */
#include "otter/trust.h"

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static void check_consistent(const struct ot_trust *t)
{
    if (t->nkeys < 1 || t->nkeys > OT_TRUST_MAX_KEYS || t->threshold < 1 || t->threshold > t->nkeys)
        abort();
    for (size_t i = 0; i < t->nkeys; i++) {
        char id[OT_KEY_ID_STRLEN];
        ot_key_id(t->keys[i].pk, id);
        if (t->keys[i].type != OT_KEY_SIGN_PUBLIC || strcmp(id, t->keys[i].id) != 0 ||
            ot_trust_find(t, id) != &t->keys[i]) /* also: ids are unique */
            abort();
    }
}

static void check_roundtrip(const struct ot_trust *t)
{
    static struct ot_trust back;
    struct ot_buf b;
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    if (ot_trust_format(t, &b) != OT_OK || ot_trust_parse(b.data, b.len, &back, NULL) != OT_OK)
        abort();
    if (back.threshold != t->threshold || back.nkeys != t->nkeys)
        abort();
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(back.keys[i].id, t->keys[i].id) || strcmp(back.keys[i].name, t->keys[i].name) ||
            memcmp(back.keys[i].pk, t->keys[i].pk, 32))
            abort();
    ot_buf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ot_trust t;
    struct ot_diag d = {0};
    if (ot_trust_parse(data, size, &t, &d) != OT_OK) {
        if (d.err == OT_OK || !d.msg[0] || !printable(d.msg))
            abort();
        return 0;
    }
    check_consistent(&t);
    check_roundtrip(&t);
    return 0;
}
