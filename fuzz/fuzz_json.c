/* libFuzzer harness for the strict JSON layer (ot_json_parse and the getters). Invariants: errors
 * are explained in printable text; accepted documents respect the depth limit; the canonical dump
 * parses back and dumps to the same bytes. */
#include "otter/json.h"

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

/* What ot_json_get_str promises: at most max bytes, no C0 control character, no DEL. */
static bool clean_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return n <= max;
}

static void check_error(enum ot_err err, const struct ot_diag *d)
{
    if (err != OT_OK && (err != OT_ERR_FORMAT || !d->msg[0] || !printable(d->msg)))
        abort();
}

static void check_canonical(const json_t *v)
{
    struct ot_buf a, b;
    json_t *again = NULL;
    ot_buf_init(&a, 1 << 24);
    ot_buf_init(&b, 1 << 24);
    if (ot_json_dump(v, &a) != OT_OK || ot_json_parse(a.data, a.len, &again, NULL) != OT_OK ||
        ot_json_dump(again, &b) != OT_OK || a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
        abort();
    json_decref(again);
    ot_buf_release(&a);
    ot_buf_release(&b);
}

/* The getters on a few likely field names, each with every type. */
static void exercise_getters(const json_t *v)
{
    static const char *const keys[] = {"a", "name", "n", "key_id", "public_key", NULL};
    struct ot_diag d = {0};
    for (const char *const *k = keys; *k; k++) {
        const char *s = NULL;
        uint64_t u = 0;
        bool b = false;
        uint8_t bin[32];
        check_error(ot_json_get_str(v, *k, false, 64, "fuzz", &s, &d), &d);
        if (s && !clean_text(s, 64))
            abort();
        check_error(ot_json_get_u64(v, *k, true, 1000, "fuzz", &u, &d), &d);
        if (u > 1000)
            abort();
        check_error(ot_json_get_bool(v, *k, false, "fuzz", &b, &d), &d);
        check_error(ot_json_get_hex(v, *k, false, 8, "fuzz", bin, &d), &d);
        check_error(ot_json_get_b64(v, *k, false, 32, "fuzz", bin, &d), &d);
    }
    check_error(ot_json_only_keys(v, keys, "fuzz", &d), &d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ot_json_parse(data, size, &v, &d);
    check_error(err, &d);
    if (err)
        return 0;
    check_canonical(v);
    exercise_getters(v);
    json_decref(v);
    return 0;
}
