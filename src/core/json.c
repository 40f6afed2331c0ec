/* Strict JSON on top of jansson. Every document Otter parses from outside (manifests, signatures,
 * keys, trust files, API bodies) comes through ot_json_parse, so the rules live in one place. */
#include "otter/encoding.h"
#include "otter/json.h"

static size_t depth_of(const json_t *v, size_t limit)
{
    size_t max = 0;
    if (limit == 0)
        return 1;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            size_t dd = depth_of(c, limit - 1);
            max = dd > max ? dd : max;
        }
        return max + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) {
            size_t dd = depth_of(c, limit - 1);
            max = dd > max ? dd : max;
        }
        return max + 1;
    }
    return 0;
}

/* Copies untrusted text for a diagnostic, replacing anything but printable ASCII with '?': error
 * messages end up on terminals and in logs, where an escape sequence must not pass through. */
static void printable_copy(char *out, size_t size, const char *in)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[i] = '\0';
}

enum ot_err ot_json_parse(const uint8_t *buf, size_t len, json_t **ret, struct ot_diag *d)
{
    char text[JSON_ERROR_TEXT_LENGTH];
    json_error_t je;
    if (!buf && len > 0)
        return ot_diag_set(d, OT_ERR_INVALID, "JSON parser: no buffer");
    if (!buf) /* jansson refuses NULL ("wrong arguments"); empty input is just malformed JSON */
        buf = (const uint8_t *)"";
    /* No JSON_ALLOW_NUL: a NUL inside a string is refused, so C strings are the whole value.
     * JSON_REJECT_DUPLICATES: {"a":1,"a":2} could be read two ways by two parsers. */
    json_t *v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v) {
        /* jansson quotes the offending token, raw bytes included. */
        printable_copy(text, sizeof(text), je.text);
        return ot_diag_set(d, OT_ERR_FORMAT, "invalid JSON at line %d column %d: %s", je.line,
                           je.column, text);
    }
    if (depth_of(v, OT_JSON_MAX_DEPTH + 1) > OT_JSON_MAX_DEPTH) {
        json_decref(v);
        return ot_diag_set(d, OT_ERR_FORMAT, "JSON nested deeper than %d levels",
                           OT_JSON_MAX_DEPTH);
    }
    *ret = v;
    return OT_OK;
}

static enum ot_err dump(const json_t *v, size_t flags, struct ot_buf *out)
{
    _cleanup_free_ char *s = json_dumps(v, flags | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!s)
        return OT_ERR_NOMEM;
    size_t n = strlen(s);
    /* Text and newline reserved together: on OT_ERR_LIMIT out is unchanged, not half-written. */
    enum ot_err err = ot_buf_reserve(out, n + 1);
    if (!err)
        err = ot_buf_append(out, s, n);
    if (!err)
        err = ot_buf_append(out, "\n", 1);
    return err;
}

enum ot_err ot_json_dump(const json_t *v, struct ot_buf *out)
{
    return dump(v, JSON_COMPACT, out);
}

enum ot_err ot_json_dump_pretty(const json_t *v, struct ot_buf *out)
{
    return dump(v, JSON_INDENT(2), out);
}

enum ot_err ot_json_only_keys(const json_t *obj, const char *const *allowed, const char *what,
                              struct ot_diag *d)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", what);
    json_object_foreach((json_t *)obj, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            char name[65];
            printable_copy(name, sizeof(name), k); /* keys may hold "\u001b" */
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: unknown field '%s'", what, name);
        }
    }
    return OT_OK;
}

/* Looks up key; OT_OK with *ret NULL when absent and optional. */
static enum ot_err lookup(const json_t *obj, const char *key, bool required, const char *what,
                          json_t **ret, struct ot_diag *d)
{
    if (!json_is_object(obj))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", what);
    *ret = json_object_get(obj, key);
    if (!*ret && required)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: missing field '%s'", what, key);
    return OT_OK;
}

/* UTF-8 (jansson has validated the encoding) without C0 control characters or DEL. */
static bool text_is_clean(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

enum ot_err ot_json_get_str(const json_t *obj, const char *key, bool required, size_t max_len,
                            const char *what, const char **ret, struct ot_diag *d)
{
    json_t *v;
    enum ot_err err = lookup(obj, key, required, what, &v, d);
    if (err || !v)
        return err;
    if (!json_is_string(v))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be a string", what, key);
    size_t len = json_string_length(v);
    if (len > max_len)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' is longer than %zu bytes", what, key,
                           max_len);
    if (!text_is_clean(json_string_value(v), len))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' contains control characters", what,
                           key);
    *ret = json_string_value(v);
    return OT_OK;
}

enum ot_err ot_json_get_u64(const json_t *obj, const char *key, bool required, uint64_t max,
                            const char *what, uint64_t *ret, struct ot_diag *d)
{
    json_t *v;
    enum ot_err err = lookup(obj, key, required, what, &v, d);
    if (err || !v)
        return err;
    /* jansson integers are json_int_t (long long): values above INT64_MAX do not parse at all. */
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be a non-negative integer", what,
                           key);
    uint64_t u = (uint64_t)json_integer_value(v);
    if (u > max)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' is larger than %llu", what, key,
                           (unsigned long long)max);
    *ret = u;
    return OT_OK;
}

enum ot_err ot_json_get_bool(const json_t *obj, const char *key, bool required, const char *what,
                             bool *ret, struct ot_diag *d)
{
    json_t *v;
    enum ot_err err = lookup(obj, key, required, what, &v, d);
    if (err || !v)
        return err;
    if (!json_is_boolean(v))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be true or false", what, key);
    *ret = json_is_true(v);
    return OT_OK;
}

enum ot_err ot_json_get_hex(const json_t *obj, const char *key, bool required, size_t n,
                            const char *what, uint8_t *ret, struct ot_diag *d)
{
    const char *s = NULL;
    /* No length bound here: a wrong length gets the specific message below. */
    enum ot_err err = ot_json_get_str(obj, key, required, SIZE_MAX, what, &s, d);
    if (err || !s)
        return err;
    if (strlen(s) != 2 * n || ot_hex_decode(s, ret, n) != OT_OK)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be %zu hex digits", what, key,
                           2 * n);
    return OT_OK;
}

enum ot_err ot_json_get_b64(const json_t *obj, const char *key, bool required, size_t n,
                            const char *what, uint8_t *ret, struct ot_diag *d)
{
    const char *s = NULL;
    enum ot_err err = ot_json_get_str(obj, key, required, SIZE_MAX, what, &s, d);
    if (err || !s)
        return err;
    if (ot_base64_decode_exact(s, ret, n) != OT_OK)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be base64 of %zu bytes", what,
                           key, n);
    return OT_OK;
}

static enum ot_err set_new(json_t *obj, const char *key, json_t *v)
{
    if (!v)
        return OT_ERR_NOMEM;
    return json_object_set_new(obj, key, v) == 0 ? OT_OK : OT_ERR_NOMEM;
}

enum ot_err ot_json_set_str(json_t *obj, const char *key, const char *value)
{
    return set_new(obj, key, json_string(value));
}

enum ot_err ot_json_set_u64(json_t *obj, const char *key, uint64_t value)
{
    if (value > (uint64_t)INT64_MAX)
        return OT_ERR_RANGE;
    return set_new(obj, key, json_integer((json_int_t)value));
}

enum ot_err ot_json_set_hex(json_t *obj, const char *key, const uint8_t *p, size_t n)
{
    _cleanup_free_ char *s = malloc(2 * n + 1);
    if (!s)
        return OT_ERR_NOMEM;
    ot_hex_encode(p, n, s);
    return set_new(obj, key, json_string(s));
}

enum ot_err ot_json_set_b64(json_t *obj, const char *key, const uint8_t *p, size_t n)
{
    _cleanup_free_ char *s = malloc(ot_base64_encoded_len(n));
    if (!s)
        return OT_ERR_NOMEM;
    ot_base64_encode(p, n, s);
    return set_new(obj, key, json_string(s));
}
