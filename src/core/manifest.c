/* manifest.json: strict decoding, validation and canonical encoding (see manifest.h).
 *
 * Parsing is two steps: the JSON shape (types, unknown and missing fields, hex and base64) is read
 * into a struct ot_manifest, then ot_manifest_validate checks every value rule on the struct. A
 * manifest built in memory goes through the same validate before it is written, so the parser and
 * the writer can never disagree about what a valid manifest is.
 *
 * Canonical form: map-like fields (provides, depends, args) are kept sorted by key in memory (the
 * parser sorts, the builders insert in order), which is also the order ot_json_dump writes, so
 * parse(format(m)) gives m back field for field. */
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/manifest.h"
#include "otter/path.h"

#define VERSION_MAX 64
#define KEY_MAX 64
#define CIPHER_NAME "xchacha20poly1305-secretstream"
#define WHAT_MAX 160   /* "manifest: payloads[127] ('<64 bytes>'): encoding" fits */
#define EXCERPT_MAX 48 /* bytes of an untrusted string quoted in a message */

/* ---- text rules ------------------------------------------------------------------------------ */

enum text_kind {
    TEXT_NAME,    /* artifact, payload and device type names: ot_name_is_safe */
    TEXT_VERSION, /* versions: printable ASCII without blanks */
    TEXT_TYPE,    /* install handler names */
    TEXT_KEY,     /* provides, depends and args keys */
    TEXT_VALUE,   /* provides values */
    TEXT_DEPEND,  /* depends alternatives: like values, without the '|' that separates them */
    TEXT_TARGET,  /* payload targets, may be empty */
    TEXT_ARG,     /* handler argument values, may be empty */
};

struct text_rule {
    size_t min, max;
    bool (*char_ok)(unsigned char c); /* ASCII-only kinds; NULL: printable UTF-8 */
    const char *forbidden;            /* characters refused on top of the above */
    const char *desc;                 /* completes "must be ..." */
};

static bool version_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

static bool type_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static const struct text_rule text_rules[] = {
    [TEXT_NAME] = {1, OT_NAME_MAX, NULL, NULL,
                   "a safe name (1..64 of A-Z a-z 0-9 . _ + -, not starting with '.' or '-')"},
    [TEXT_VERSION] = {1, VERSION_MAX, version_char, NULL,
                      "1..64 printable ASCII characters without blanks"},
    [TEXT_TYPE] = {1, OT_MANIFEST_TYPE_MAX, type_char, NULL, "1..32 of a-z 0-9 _ -"},
    [TEXT_KEY] = {1, KEY_MAX, key_char, NULL, "1..64 of A-Z a-z 0-9 . _ -"},
    [TEXT_VALUE] = {1, OT_MANIFEST_STR_MAX, NULL, NULL, "1..255 bytes of printable UTF-8"},
    [TEXT_DEPEND] = {1, OT_MANIFEST_STR_MAX, NULL, "|",
                     "1..255 bytes of printable UTF-8 without '|'"},
    [TEXT_TARGET] = {0, OT_MANIFEST_STR_MAX, NULL, NULL, "at most 255 bytes of printable UTF-8"},
    [TEXT_ARG] = {0, OT_MANIFEST_ARG_MAX, NULL, NULL, "at most 1024 bytes of printable UTF-8"},
};

static bool text_valid(enum text_kind kind, const char *s)
{
    const struct text_rule *r = &text_rules[kind];
    if (!s)
        return false;
    size_t len = strlen(s);
    if (len < r->min || len > r->max)
        return false;
    if (kind == TEXT_NAME)
        return ot_name_is_safe(s, len);
    if (r->forbidden && strpbrk(s, r->forbidden))
        return false;
    if (!r->char_ok)
        return ot_utf8_printable(s, len, NULL);
    for (size_t i = 0; i < len; i++)
        if (!r->char_ok((unsigned char)s[i]))
            return false;
    return true;
}

/* A short copy of an untrusted string for a message: anything but printable ASCII becomes '?',
 * so a hostile manifest cannot put control sequences into a log line. */
static const char *excerpt(const char *s, char out[EXCERPT_MAX + 4])
{
    size_t i = 0;
    for (; s && s[i] && i < EXCERPT_MAX; i++)
        out[i] = version_char((unsigned char)s[i]) || s[i] == ' ' ? s[i] : '?';
    if (s && s[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

/* ---- validation ------------------------------------------------------------------------------ */

static enum ot_err check_field(const char *what, const char *field, const char *s,
                               enum text_kind kind, struct ot_diag *d)
{
    if (text_valid(kind, s))
        return OT_OK;
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be %s", what, field,
                       text_rules[kind].desc);
}

static enum ot_err check_count(const char *what, const char *field, size_t n, size_t min,
                               size_t max, struct ot_diag *d)
{
    if (n >= min && n <= max)
        return OT_OK;
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must have %zu..%zu entries, not %zu", what,
                       field, min, max, n);
}

static enum ot_err check_u63(const char *what, const char *field, uint64_t v, struct ot_diag *d)
{
    if (v <= (uint64_t)INT64_MAX)
        return OT_OK;
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' is larger than %lld", what, field,
                       (long long)INT64_MAX);
}

/* A list of strings: count, each value, no duplicates ("device_types", "depends['k']"). */
static enum ot_err check_strv(const char *what, const char *field, char *const *v, size_t n,
                              size_t min, enum text_kind kind, struct ot_diag *d)
{
    enum ot_err err = check_count(what, field, n, min, OT_MANIFEST_LIST_MAX, d);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (!text_valid(kind, v[i]))
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s[%zu] must be %s", what, field, i,
                               text_rules[kind].desc);
        for (size_t j = 0; j < i; j++)
            if (strcmp(v[i], v[j]) == 0)
                return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s[%zu]: duplicate '%s'", what, field, i,
                                   v[i]);
    }
    return OT_OK;
}

/* The key of entry i of a map-like field: valid and not used by an earlier entry. */
static enum ot_err check_map_key(const char *what, const char *field, const char *key,
                                 const char *const *earlier, size_t stride, size_t i,
                                 struct ot_diag *d)
{
    char ex[EXCERPT_MAX + 4];
    if (!text_valid(TEXT_KEY, key))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s: key '%s' must be %s", what, field,
                           excerpt(key, ex), text_rules[TEXT_KEY].desc);
    for (size_t j = 0; j < i; j++) {
        const char *other = *(const char *const *)((const char *)earlier + j * stride);
        if (strcmp(key, other) == 0)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s: duplicate key '%s'", what, field, key);
    }
    return OT_OK;
}

static enum ot_err check_kvs(const char *what, const char *field, const struct ot_kv *kv, size_t n,
                             enum text_kind value_kind, struct ot_diag *d)
{
    enum ot_err err = check_count(what, field, n, 0, OT_MANIFEST_LIST_MAX, d);
    for (size_t i = 0; !err && i < n; i++) {
        err = check_map_key(what, field, kv[i].key, (const char *const *)&kv[0].key, sizeof(*kv), i,
                            d);
        if (!err && !text_valid(value_kind, kv[i].value))
            err = ot_diag_set(d, OT_ERR_FORMAT, "%s: %s['%s'] must be %s", what, field, kv[i].key,
                              text_rules[value_kind].desc);
    }
    return err;
}

static enum ot_err check_format(const struct ot_manifest *m, struct ot_diag *d)
{
    if (m->format > OT_MANIFEST_FORMAT)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                           "manifest format %llu is newer than this program supports (%d)",
                           (unsigned long long)m->format, OT_MANIFEST_FORMAT);
    if (m->format != OT_MANIFEST_FORMAT)
        return ot_diag_set(d, OT_ERR_FORMAT, "manifest: field 'format' must be %d",
                           OT_MANIFEST_FORMAT);
    return OT_OK;
}

static enum ot_err check_head(const struct ot_manifest *m, struct ot_diag *d)
{
    enum ot_err err = check_field("manifest", "name", m->name, TEXT_NAME, d);
    if (!err)
        err = check_field("manifest", "version", m->version, TEXT_VERSION, d);
    if (!err)
        err = check_u63("manifest", "security_version", m->security_version, d);
    return err;
}

static enum ot_err check_device_types(const struct ot_manifest *m, struct ot_diag *d)
{
    return check_strv("manifest", "device_types", m->device_types, m->ndevice_types, 1, TEXT_NAME,
                      d);
}

static enum ot_err check_provides(const struct ot_manifest *m, struct ot_diag *d)
{
    return check_kvs("manifest", "provides", m->provides, m->nprovides, TEXT_VALUE, d);
}

static enum ot_err check_depends(const struct ot_manifest *m, struct ot_diag *d)
{
    enum ot_err err = check_count("manifest", "depends", m->ndepends, 0, OT_MANIFEST_LIST_MAX, d);
    for (size_t i = 0; !err && i < m->ndepends; i++) {
        const struct ot_depend *dep = &m->depends[i];
        err = check_map_key("manifest", "depends", dep->key,
                            (const char *const *)&m->depends[0].key, sizeof(*dep), i, d);
        if (err)
            break;
        char field[KEY_MAX + 16];
        snprintf(field, sizeof(field), "depends['%s']", dep->key);
        err = check_strv("manifest", field, dep->values, dep->nvalues, 1, TEXT_DEPEND, d);
    }
    return err;
}

static bool key_id_valid(const char id[OT_KEY_ID_STRLEN])
{
    if (!memchr(id, '\0', OT_KEY_ID_STRLEN) || strlen(id) != OT_KEY_ID_LEN)
        return false;
    for (size_t i = 0; i < OT_KEY_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

static enum ot_err check_recipients(const struct ot_manifest *m, struct ot_diag *d)
{
    enum ot_err err = check_count("manifest: encryption", "recipients", m->nrecipients, 0,
                                  OT_MANIFEST_RECIPIENTS_MAX, d);
    for (size_t i = 0; !err && i < m->nrecipients; i++) {
        const char *id = m->recipients[i].key_id;
        if (!key_id_valid(id))
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "manifest: encryption: recipients[%zu]: field 'key_id' must be "
                               "%d lowercase hex digits",
                               i, OT_KEY_ID_LEN);
        for (size_t j = 0; j < i; j++)
            if (strcmp(id, m->recipients[j].key_id) == 0)
                return ot_diag_set(d, OT_ERR_FORMAT,
                                   "manifest: encryption: recipients[%zu]: duplicate key id '%s'",
                                   i, id);
    }
    return err;
}

static enum ot_err check_encoding(const char *what, const struct ot_payload *p, bool encrypted,
                                  struct ot_diag *d)
{
    if (p->compression != OT_COMPRESSION_NONE && p->compression != OT_COMPRESSION_ZSTD)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "%s: encoding: field 'compression' must be 'none' or 'zstd'", what);
    if (p->encrypted != encrypted)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: encoding: field 'encrypted' must be %s: %s", what,
                           encrypted ? "true" : "false",
                           encrypted ? "the manifest has encryption recipients"
                                     : "the manifest has no encryption recipients");
    /* Stored bytes that are not encoded at all are the installed bytes: saying otherwise would let
     * the two hashes describe different content. */
    bool plain = p->compression == OT_COMPRESSION_NONE && !p->encrypted && !p->has_delta_base;
    if (plain &&
        (p->stored_size != p->size || memcmp(p->stored_sha256, p->sha256, OT_SHA256_LEN) != 0))
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "%s: stored size and sha256 must equal size and sha256 when the "
                           "payload is neither compressed nor encrypted",
                           what);
    return OT_OK;
}

static enum ot_err check_payload(const struct ot_manifest *m, size_t i, struct ot_diag *d)
{
    const struct ot_payload *p = &m->payloads[i];
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "manifest: payloads[%zu]", i);
    enum ot_err err = check_field(what, "name", p->name, TEXT_NAME, d);
    if (err)
        return err;
    snprintf(what, sizeof(what), "manifest: payloads[%zu] ('%s')", i, p->name);
    for (size_t j = 0; j < i; j++)
        if (strcmp(p->name, m->payloads[j].name) == 0)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: duplicate payload name", what);
    if ((err = check_field(what, "type", p->type, TEXT_TYPE, d)) ||
        (err = check_field(what, "target", p->target ? p->target : "", TEXT_TARGET, d)) ||
        (err = check_field(what, "version", p->version, TEXT_VERSION, d)) ||
        (err = check_u63(what, "size", p->size, d)) ||
        (err = check_u63(what, "stored.size", p->stored_size, d)) ||
        (err = check_encoding(what, p, m->nrecipients > 0, d)))
        return err;
    return check_kvs(what, "args", p->args, p->nargs, TEXT_ARG, d);
}

static enum ot_err check_payloads(const struct ot_manifest *m, struct ot_diag *d)
{
    enum ot_err err =
        check_count("manifest", "payloads", m->npayloads, 1, OT_MANIFEST_PAYLOADS_MAX, d);
    for (size_t i = 0; !err && i < m->npayloads; i++)
        err = check_payload(m, i, d);
    return err;
}

/* Every rule except the size of the encoded document, in the order a reader meets the fields. */
static enum ot_err validate_fields(const struct ot_manifest *m, struct ot_diag *d)
{
    static enum ot_err (*const checks[])(const struct ot_manifest *, struct ot_diag *) = {
        check_format,  check_head,       check_device_types, check_provides,
        check_depends, check_recipients, check_payloads,
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(checks); i++) {
        enum ot_err err = checks[i](m, d);
        if (err)
            return err;
    }
    return OT_OK;
}

/* ---- encoding -------------------------------------------------------------------------------- */

/* Sets obj[key] = v, stealing v (NULL v: failure, nothing leaked). */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v) == 0;
}

static bool append(json_t *arr, json_t *v) { return json_array_append_new(arr, v) == 0; }

static json_t *hex_value(const uint8_t *p, size_t n)
{
    char hex[2 * OT_SHA256_LEN + 1];
    ot_hex_encode(p, n, hex);
    return json_string(hex);
}

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (!append(arr, json_string(v[i]))) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

static json_t *kvs_json(const struct ot_kv *kv, size_t n)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++)
        if (!put(obj, kv[i].key, json_string(kv[i].value))) {
            json_decref(obj);
            return NULL;
        }
    return obj;
}

static json_t *depends_json(const struct ot_depend *dep, size_t n)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++)
        if (!put(obj, dep[i].key, strv_json(dep[i].values, dep[i].nvalues))) {
            json_decref(obj);
            return NULL;
        }
    return obj;
}

static json_t *recipient_json(const struct ot_recipient *r)
{
    char b64[128];
    _Static_assert(sizeof(b64) >= (OT_SEALED_KEY_LEN + 2) / 3 * 4 + 1, "base64 buffer");
    ot_base64_encode(r->sealed_key, OT_SEALED_KEY_LEN, b64);
    json_t *obj = json_object();
    if (obj && put(obj, "key_id", json_string(r->key_id)) &&
        put(obj, "sealed_key", json_string(b64)))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *encryption_json(const struct ot_manifest *m)
{
    json_t *obj = json_object(), *arr = json_array();
    bool ok = obj && arr;
    for (size_t i = 0; ok && i < m->nrecipients; i++)
        ok = append(arr, recipient_json(&m->recipients[i]));
    if (!ok) {
        json_decref(arr);
        json_decref(obj);
        return NULL;
    }
    /* put() steals arr whatever happens, so it goes first. */
    if (put(obj, "recipients", arr) && put(obj, "cipher", json_string(CIPHER_NAME)))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *encoding_json(const struct ot_payload *p)
{
    json_t *obj = json_object();
    bool ok = obj && put(obj, "compression", json_string(ot_compression_name(p->compression))) &&
              put(obj, "encrypted", json_boolean(p->encrypted));
    if (ok && p->has_delta_base)
        ok = put(obj, "delta_base_sha256", hex_value(p->delta_base_sha256, OT_SHA256_LEN));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *stored_json(const struct ot_payload *p)
{
    json_t *obj = json_object();
    if (obj && put(obj, "size", json_integer((json_int_t)p->stored_size)) &&
        put(obj, "sha256", hex_value(p->stored_sha256, OT_SHA256_LEN)))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *payload_json(const struct ot_payload *p)
{
    json_t *obj = json_object();
    bool ok = obj && put(obj, "name", json_string(p->name)) &&
              put(obj, "type", json_string(p->type)) &&
              put(obj, "version", json_string(p->version)) &&
              put(obj, "size", json_integer((json_int_t)p->size)) &&
              put(obj, "sha256", hex_value(p->sha256, OT_SHA256_LEN)) &&
              put(obj, "encoding", encoding_json(p)) && put(obj, "stored", stored_json(p));
    /* Optional fields are written only when they say something, so there is one canonical form. */
    if (ok && p->target && *p->target)
        ok = put(obj, "target", json_string(p->target));
    if (ok && p->nargs)
        ok = put(obj, "args", kvs_json(p->args, p->nargs));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *payloads_json(const struct ot_manifest *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < m->npayloads; i++)
        if (!append(arr, payload_json(&m->payloads[i]))) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

/* Builds the document of a manifest that passed validate_fields; NULL only when out of memory. */
static json_t *manifest_json(const struct ot_manifest *m)
{
    json_t *obj = json_object();
    bool ok = obj && put(obj, "format", json_integer((json_int_t)m->format)) &&
              put(obj, "name", json_string(m->name)) &&
              put(obj, "version", json_string(m->version)) &&
              put(obj, "device_types", strv_json(m->device_types, m->ndevice_types)) &&
              put(obj, "security_version", json_integer((json_int_t)m->security_version)) &&
              put(obj, "payloads", payloads_json(m));
    if (ok && m->nprovides)
        ok = put(obj, "provides", kvs_json(m->provides, m->nprovides));
    if (ok && m->ndepends)
        ok = put(obj, "depends", depends_json(m->depends, m->ndepends));
    if (ok && m->nrecipients)
        ok = put(obj, "encryption", encryption_json(m));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

/* Canonical bytes of a manifest that passed validate_fields, into a fresh buffer (caller releases)
 * bounded by OT_MANIFEST_MAX. */
static enum ot_err serialize(const struct ot_manifest *m, struct ot_buf *out, struct ot_diag *d)
{
    json_auto_t *obj = manifest_json(m);
    ot_buf_init(out, OT_MANIFEST_MAX);
    if (!obj)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    enum ot_err err = ot_json_dump(obj, out);
    if (err == OT_ERR_LIMIT)
        return ot_diag_set(d, err, "manifest: larger than %d bytes", OT_MANIFEST_MAX);
    if (err)
        return ot_diag_set(d, err, "manifest: %s", ot_strerror(err));
    return OT_OK;
}

enum ot_err ot_manifest_validate(const struct ot_manifest *m, struct ot_diag *d)
{
    enum ot_err err = validate_fields(m, d);
    if (err)
        return err;
    struct ot_buf tmp;
    err = serialize(m, &tmp, d);
    ot_buf_release(&tmp);
    return err;
}

enum ot_err ot_manifest_format(const struct ot_manifest *m, struct ot_buf *out, struct ot_diag *d)
{
    enum ot_err err = validate_fields(m, d);
    if (err)
        return err;
    struct ot_buf tmp;
    err = serialize(m, &tmp, d);
    if (!err && (err = ot_buf_append(out, tmp.data, tmp.len)))
        ot_diag_set(d, err, "manifest: output buffer: %s", ot_strerror(err));
    ot_buf_release(&tmp);
    return err;
}

enum ot_err ot_manifest_to_json(const struct ot_manifest *m, json_t **ret)
{
    enum ot_err err = validate_fields(m, NULL);
    if (err)
        return err;
    json_t *obj = manifest_json(m);
    if (!obj)
        return OT_ERR_NOMEM;
    *ret = obj;
    return OT_OK;
}

/* ---- decoding -------------------------------------------------------------------------------- */

static const char *const top_keys[] = {
    "format",   "name",    "version",    "device_types", "security_version",
    "provides", "depends", "encryption", "payloads",     NULL,
};
static const char *const encryption_keys[] = {"cipher", "recipients", NULL};
static const char *const recipient_keys[] = {"key_id", "sealed_key", NULL};
static const char *const payload_keys[] = {
    "name", "type", "target", "version", "size", "sha256", "encoding", "stored", "args", NULL,
};
static const char *const encoding_keys[] = {"compression", "encrypted", "delta_base_sha256", NULL};
static const char *const stored_keys[] = {"size", "sha256", NULL};

static enum ot_err dup_str(const char *s, char **ret, struct ot_diag *d)
{
    char *copy = strdup(s);
    if (!copy)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    free(*ret);
    *ret = copy;
    return OT_OK;
}

/* A string field copied into *ret; an absent optional one becomes "". The value rules are left to
 * validate, but the length limit is applied here so nothing large is copied. */
static enum ot_err get_text(const json_t *obj, const char *key, bool required, enum text_kind kind,
                            const char *what, char **ret, struct ot_diag *d)
{
    const char *s = "";
    enum ot_err err = ot_json_get_str(obj, key, required, text_rules[kind].max, what, &s, d);
    if (err)
        return err;
    return dup_str(s, ret, d);
}

/* obj[key] as an array or object with min..max entries; *ret NULL when absent and optional. */
static enum ot_err get_container(const json_t *obj, const char *key, bool required, bool array,
                                 size_t min, size_t max, const char *what, json_t **ret,
                                 struct ot_diag *d)
{
    json_t *v = json_object_get(obj, key);
    *ret = NULL;
    if (!v)
        return required ? ot_diag_set(d, OT_ERR_FORMAT, "%s: missing field '%s'", what, key)
                        : OT_OK;
    if (array ? !json_is_array(v) : !json_is_object(v))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be %s", what, key,
                           array ? "an array" : "an object");
    enum ot_err err =
        check_count(what, key, array ? json_array_size(v) : json_object_size(v), min, max, d);
    if (!err)
        *ret = v;
    return err;
}

/* Array of strings into a new vector; *ret_v and *ret_n are set first so that a release after a
 * failure half-way frees what was copied. */
static enum ot_err get_strv(const json_t *arr, const char *what, const char *field, char ***ret_v,
                            size_t *ret_n, struct ot_diag *d)
{
    size_t n = json_array_size(arr);
    char **v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    *ret_v = v;
    *ret_n = n;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(arr, i);
        if (!json_is_string(item))
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s[%zu] must be a string", what, field, i);
        if (json_string_length(item) > OT_MANIFEST_STR_MAX)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s[%zu] is longer than %d bytes", what, field,
                               i, OT_MANIFEST_STR_MAX);
        enum ot_err err = dup_str(json_string_value(item), &v[i], d);
        if (err)
            return err;
    }
    return OT_OK;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ot_kv *)a)->key, ((const struct ot_kv *)b)->key);
}

static int depend_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ot_depend *)a)->key, ((const struct ot_depend *)b)->key);
}

/* Object of strings into a key-sorted ot_kv vector (provides, args). */
static enum ot_err get_kvs(const json_t *obj, const char *what, const char *field, size_t max_len,
                           struct ot_kv **ret, size_t *ret_n, struct ot_diag *d)
{
    size_t n = json_object_size(obj), i = 0;
    struct ot_kv *kv = calloc(n ? n : 1, sizeof(*kv));
    if (!kv)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    *ret = kv;
    *ret_n = n;
    const char *key;
    json_t *v;
    json_object_foreach ((json_t *)obj, key, v) {
        char ex[EXCERPT_MAX + 4];
        if (!json_is_string(v) || json_string_length(v) > max_len)
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "%s: %s['%s'] must be a string of at most %zu bytes", what, field,
                               excerpt(key, ex), max_len);
        enum ot_err err = dup_str(key, &kv[i].key, d);
        if (!err)
            err = dup_str(json_string_value(v), &kv[i].value, d);
        if (err)
            return err;
        i++;
    }
    qsort(kv, n, sizeof(*kv), kv_cmp);
    return OT_OK;
}

/* One dependency: a non-empty array of alternatives. The key is untrusted until validate, so
 * messages quote it through excerpt(). */
static enum ot_err get_depend(const char *key, const json_t *arr, struct ot_depend *dep,
                              struct ot_diag *d)
{
    char ex[EXCERPT_MAX + 4], field[EXCERPT_MAX + 16];
    snprintf(field, sizeof(field), "depends['%s']", excerpt(key, ex));
    enum ot_err err = dup_str(key, &dep->key, d);
    if (err)
        return err;
    if (!json_is_array(arr))
        return ot_diag_set(d, OT_ERR_FORMAT, "manifest: %s must be an array of strings", field);
    err = check_count("manifest", field, json_array_size(arr), 1, OT_MANIFEST_LIST_MAX, d);
    if (err)
        return err;
    return get_strv(arr, "manifest", field, &dep->values, &dep->nvalues, d);
}

static enum ot_err get_depends(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    json_t *obj;
    enum ot_err err =
        get_container(root, "depends", false, false, 0, OT_MANIFEST_LIST_MAX, "manifest", &obj, d);
    if (err || !obj)
        return err;
    m->depends = calloc(json_object_size(obj) + 1, sizeof(*m->depends));
    if (!m->depends)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    m->ndepends = json_object_size(obj);
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach (obj, key, v) {
        if ((err = get_depend(key, v, &m->depends[i++], d)))
            return err;
    }
    qsort(m->depends, m->ndepends, sizeof(*m->depends), depend_cmp);
    return OT_OK;
}

static enum ot_err get_recipient(const json_t *obj, size_t i, struct ot_recipient *r,
                                 struct ot_diag *d)
{
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "manifest: encryption: recipients[%zu]", i);
    const char *id;
    enum ot_err err = ot_json_only_keys(obj, recipient_keys, what, d);
    if (!err)
        err = ot_json_get_str(obj, "key_id", true, OT_KEY_ID_LEN, what, &id, d);
    if (err)
        return err;
    memcpy(r->key_id, id, strlen(id) + 1);
    return ot_json_get_b64(obj, "sealed_key", true, OT_SEALED_KEY_LEN, what, r->sealed_key, d);
}

static enum ot_err get_encryption(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    const char *what = "manifest: encryption", *cipher;
    json_t *enc, *arr;
    enum ot_err err =
        get_container(root, "encryption", false, false, 0, SIZE_MAX, "manifest", &enc, d);
    if (err || !enc)
        return err;
    if ((err = ot_json_only_keys(enc, encryption_keys, what, d)) ||
        (err = ot_json_get_str(enc, "cipher", true, 64, what, &cipher, d)))
        return err;
    char ex[EXCERPT_MAX + 4];
    if (strcmp(cipher, CIPHER_NAME) != 0)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED, "%s: cipher '%s' is not supported (only %s)",
                           what, excerpt(cipher, ex), CIPHER_NAME);
    err =
        get_container(enc, "recipients", true, true, 1, OT_MANIFEST_RECIPIENTS_MAX, what, &arr, d);
    if (err)
        return err;
    m->recipients = calloc(json_array_size(arr), sizeof(*m->recipients));
    if (!m->recipients)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    m->nrecipients = json_array_size(arr);
    for (size_t i = 0; !err && i < m->nrecipients; i++)
        err = get_recipient(json_array_get(arr, i), i, &m->recipients[i], d);
    return err;
}

static enum ot_err get_compression(const json_t *obj, const char *what, enum ot_compression *ret,
                                   struct ot_diag *d)
{
    const char *s;
    enum ot_err err = ot_json_get_str(obj, "compression", true, 16, what, &s, d);
    if (err)
        return err;
    for (int c = OT_COMPRESSION_NONE; c <= OT_COMPRESSION_ZSTD; c++)
        if (strcmp(s, ot_compression_name((enum ot_compression)c)) == 0) {
            *ret = (enum ot_compression)c;
            return OT_OK;
        }
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: field 'compression' must be 'none' or 'zstd'", what);
}

static enum ot_err get_encoding(const json_t *obj, const char *payload_what, struct ot_payload *p,
                                struct ot_diag *d)
{
    char what[WHAT_MAX + 16];
    snprintf(what, sizeof(what), "%s: encoding", payload_what);
    json_t *enc;
    enum ot_err err =
        get_container(obj, "encoding", true, false, 0, SIZE_MAX, payload_what, &enc, d);
    if (err || (err = ot_json_only_keys(enc, encoding_keys, what, d)) ||
        (err = get_compression(enc, what, &p->compression, d)) ||
        (err = ot_json_get_bool(enc, "encrypted", true, what, &p->encrypted, d)))
        return err;
    p->has_delta_base = json_object_get(enc, "delta_base_sha256") != NULL;
    return ot_json_get_hex(enc, "delta_base_sha256", false, OT_SHA256_LEN, what,
                           p->delta_base_sha256, d);
}

static enum ot_err get_stored(const json_t *obj, const char *payload_what, struct ot_payload *p,
                              struct ot_diag *d)
{
    char what[WHAT_MAX + 16];
    snprintf(what, sizeof(what), "%s: stored", payload_what);
    json_t *st;
    enum ot_err err = get_container(obj, "stored", true, false, 0, SIZE_MAX, payload_what, &st, d);
    if (err || (err = ot_json_only_keys(st, stored_keys, what, d)) ||
        (err = ot_json_get_u64(st, "size", true, INT64_MAX, what, &p->stored_size, d)))
        return err;
    return ot_json_get_hex(st, "sha256", true, OT_SHA256_LEN, what, p->stored_sha256, d);
}

static enum ot_err get_payload(const json_t *obj, size_t i, struct ot_payload *p, struct ot_diag *d)
{
    char what[WHAT_MAX];
    snprintf(what, sizeof(what), "manifest: payloads[%zu]", i);
    if (!json_is_object(obj))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", what);
    /* The name first, so every later message can say which payload it is about. */
    enum ot_err err = get_text(obj, "name", true, TEXT_NAME, what, &p->name, d);
    if (err || (err = check_field(what, "name", p->name, TEXT_NAME, d)))
        return err;
    snprintf(what, sizeof(what), "manifest: payloads[%zu] ('%s')", i, p->name);
    json_t *args;
    if ((err = ot_json_only_keys(obj, payload_keys, what, d)) ||
        (err = get_text(obj, "type", true, TEXT_TYPE, what, &p->type, d)) ||
        (err = get_text(obj, "target", false, TEXT_TARGET, what, &p->target, d)) ||
        (err = get_text(obj, "version", true, TEXT_VERSION, what, &p->version, d)) ||
        (err = ot_json_get_u64(obj, "size", true, INT64_MAX, what, &p->size, d)) ||
        (err = ot_json_get_hex(obj, "sha256", true, OT_SHA256_LEN, what, p->sha256, d)) ||
        (err = get_encoding(obj, what, p, d)) || (err = get_stored(obj, what, p, d)) ||
        (err = get_container(obj, "args", false, false, 0, OT_MANIFEST_LIST_MAX, what, &args, d)))
        return err;
    return args ? get_kvs(args, what, "args", OT_MANIFEST_ARG_MAX, &p->args, &p->nargs, d) : OT_OK;
}

static enum ot_err get_payloads(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    json_t *arr;
    enum ot_err err = get_container(root, "payloads", true, true, 1, OT_MANIFEST_PAYLOADS_MAX,
                                    "manifest", &arr, d);
    if (err)
        return err;
    m->payloads = calloc(json_array_size(arr), sizeof(*m->payloads));
    if (!m->payloads)
        return ot_diag_set(d, OT_ERR_NOMEM, "manifest: out of memory");
    m->npayloads = json_array_size(arr);
    for (size_t i = 0; !err && i < m->npayloads; i++)
        err = get_payload(json_array_get(arr, i), i, &m->payloads[i], d);
    return err;
}

/* The format number comes first: a newer document may well have fields this program does not
 * know, and "format 2 is newer" is the useful message then, not "unknown field". */
static enum ot_err get_format(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    if (!json_is_object(root))
        return ot_diag_set(d, OT_ERR_FORMAT, "manifest: not a JSON object");
    enum ot_err err = ot_json_get_u64(root, "format", true, UINT64_MAX, "manifest", &m->format, d);
    if (!err)
        err = check_format(m, d);
    if (!err)
        err = ot_json_only_keys(root, top_keys, "manifest", d);
    return err;
}

static enum ot_err get_head(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    json_t *v;
    enum ot_err err;
    if ((err = get_text(root, "name", true, TEXT_NAME, "manifest", &m->name, d)) ||
        (err = get_text(root, "version", true, TEXT_VERSION, "manifest", &m->version, d)) ||
        (err = get_container(root, "device_types", true, true, 1, OT_MANIFEST_LIST_MAX, "manifest",
                             &v, d)) ||
        (err = get_strv(v, "manifest", "device_types", &m->device_types, &m->ndevice_types, d)) ||
        (err = ot_json_get_u64(root, "security_version", false, INT64_MAX, "manifest",
                               &m->security_version, d)) ||
        (err = get_container(root, "provides", false, false, 0, OT_MANIFEST_LIST_MAX, "manifest",
                             &v, d)))
        return err;
    return v ? get_kvs(v, "manifest", "provides", OT_MANIFEST_STR_MAX, &m->provides, &m->nprovides,
                       d)
             : OT_OK;
}

static enum ot_err from_json(const json_t *root, struct ot_manifest *m, struct ot_diag *d)
{
    static enum ot_err (*const steps[])(const json_t *, struct ot_manifest *, struct ot_diag *) = {
        get_format, get_head, get_depends, get_encryption, get_payloads,
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(steps); i++) {
        enum ot_err err = steps[i](root, m, d);
        if (err)
            return err;
    }
    return OT_OK;
}

enum ot_err ot_manifest_parse(const uint8_t *buf, size_t len, struct ot_manifest *ret,
                              struct ot_diag *d)
{
    *ret = (struct ot_manifest){0};
    if (len > OT_MANIFEST_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "manifest: larger than %d bytes", OT_MANIFEST_MAX);
    json_auto_t *root = NULL;
    enum ot_err err = ot_json_parse(buf, len, &root, d);
    if (err)
        return ot_diag_prefix(d, err, "manifest");
    _cleanup_(ot_manifest_release) struct ot_manifest m = {0};
    if ((err = from_json(root, &m, d)) || (err = ot_manifest_validate(&m, d)))
        return err;
    *ret = m;
    m = (struct ot_manifest){0};
    return OT_OK;
}

/* ---- lifecycle and builders ------------------------------------------------------------------ */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void kvs_free(struct ot_kv *kv, size_t n)
{
    for (size_t i = 0; kv && i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static void payload_release(struct ot_payload *p)
{
    free(p->name);
    free(p->type);
    free(p->target);
    free(p->version);
    kvs_free(p->args, p->nargs);
}

void ot_manifest_release(struct ot_manifest *m)
{
    free(m->name);
    free(m->version);
    strv_free(m->device_types, m->ndevice_types);
    kvs_free(m->provides, m->nprovides);
    for (size_t i = 0; m->depends && i < m->ndepends; i++) {
        free(m->depends[i].key);
        strv_free(m->depends[i].values, m->depends[i].nvalues);
    }
    free(m->depends);
    free(m->recipients);
    for (size_t i = 0; m->payloads && i < m->npayloads; i++)
        payload_release(&m->payloads[i]);
    free(m->payloads);
    *m = (struct ot_manifest){0};
}

enum ot_err ot_manifest_set_str(char **field, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return OT_ERR_NOMEM;
    free(*field);
    *field = copy;
    return OT_OK;
}

/* Makes room for one more element of size bytes in *v (n elements now). */
static enum ot_err grow(void *v, size_t n, size_t size)
{
    void *p = reallocarray(*(void **)v, n + 1, size);
    if (!p)
        return OT_ERR_NOMEM;
    *(void **)v = p;
    return OT_OK;
}

enum ot_err ot_manifest_add_device_type(struct ot_manifest *m, const char *type)
{
    char *copy = type ? strdup(type) : NULL;
    if (!copy || grow(&m->device_types, m->ndevice_types, sizeof(char *))) {
        free(copy);
        return type ? OT_ERR_NOMEM : OT_ERR_INVALID;
    }
    m->device_types[m->ndevice_types++] = copy;
    return OT_OK;
}

/* Index at which key keeps the keys of a sorted vector sorted (after equal keys). */
static size_t sorted_pos(const void *base, size_t n, size_t stride, const char *key)
{
    size_t pos = n;
    while (pos > 0 &&
           strcmp(*(const char *const *)((const char *)base + (pos - 1) * stride), key) > 0)
        pos--;
    return pos;
}

static enum ot_err kv_insert(struct ot_kv **kv, size_t *n, const char *key, const char *value)
{
    if (!key || !value)
        return OT_ERR_INVALID;
    struct ot_kv e = {strdup(key), strdup(value)};
    if (!e.key || !e.value || grow(kv, *n, sizeof(**kv))) {
        free(e.key);
        free(e.value);
        return OT_ERR_NOMEM;
    }
    size_t pos = sorted_pos(*kv, *n, sizeof(**kv), key);
    memmove(*kv + pos + 1, *kv + pos, (*n - pos) * sizeof(**kv));
    (*kv)[pos] = e;
    (*n)++;
    return OT_OK;
}

enum ot_err ot_manifest_add_provide(struct ot_manifest *m, const char *key, const char *value)
{
    return kv_insert(&m->provides, &m->nprovides, key, value);
}

enum ot_err ot_payload_add_arg(struct ot_payload *p, const char *key, const char *value)
{
    return kv_insert(&p->args, &p->nargs, key, value);
}

/* "a|b|c" into a vector of alternatives; empty ones are kept for validate to report. */
static enum ot_err split_alternatives(const char *s, char ***ret_v, size_t *ret_n)
{
    _cleanup_free_ char *copy = strdup(s);
    if (!copy)
        return OT_ERR_NOMEM;
    char **v = NULL;
    size_t n = 0;
    for (char *p = copy, *bar; p; p = bar ? bar + 1 : NULL) {
        bar = strchr(p, '|');
        if (bar)
            *bar = '\0';
        char *item = strdup(p);
        if (!item || grow(&v, n, sizeof(*v))) {
            free(item);
            strv_free(v, n);
            return OT_ERR_NOMEM;
        }
        v[n++] = item;
    }
    *ret_v = v;
    *ret_n = n;
    return OT_OK;
}

enum ot_err ot_manifest_add_depend(struct ot_manifest *m, const char *key, const char *values)
{
    if (!key || !values)
        return OT_ERR_INVALID;
    struct ot_depend e = {.key = strdup(key)};
    enum ot_err err = e.key ? split_alternatives(values, &e.values, &e.nvalues) : OT_ERR_NOMEM;
    if (!err)
        err = grow(&m->depends, m->ndepends, sizeof(*m->depends));
    if (err) {
        free(e.key);
        strv_free(e.values, e.nvalues);
        return err;
    }
    size_t pos = sorted_pos(m->depends, m->ndepends, sizeof(*m->depends), key);
    memmove(m->depends + pos + 1, m->depends + pos, (m->ndepends - pos) * sizeof(*m->depends));
    m->depends[pos] = e;
    m->ndepends++;
    return OT_OK;
}

enum ot_err ot_manifest_add_payload(struct ot_manifest *m, struct ot_payload **ret)
{
    if (grow(&m->payloads, m->npayloads, sizeof(*m->payloads)))
        return OT_ERR_NOMEM;
    struct ot_payload *p = &m->payloads[m->npayloads++];
    *p = (struct ot_payload){0};
    *ret = p;
    return OT_OK;
}

/* ---- queries --------------------------------------------------------------------------------- */

const struct ot_payload *ot_manifest_payload(const struct ot_manifest *m, const char *name)
{
    for (size_t i = 0; name && i < m->npayloads; i++)
        if (m->payloads[i].name && strcmp(m->payloads[i].name, name) == 0)
            return &m->payloads[i];
    return NULL;
}

const char *ot_compression_name(enum ot_compression c)
{
    static const char *const names[] = {
        [OT_COMPRESSION_NONE] = "none",
        [OT_COMPRESSION_ZSTD] = "zstd",
    };
    return (unsigned)c < OT_ARRAY_SIZE(names) ? names[c] : "unknown";
}

/* Joins v with sep into out (truncated to size, always terminated). */
static const char *join(char *out, size_t size, char *const *v, size_t n, const char *sep)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < size; i++) {
        int w = snprintf(out + len, size - len, "%s%s", i ? sep : "", v[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    return out;
}

static const char *kv_find(const struct ot_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key && strcmp(kv[i].key, key) == 0)
            return kv[i].value;
    return NULL;
}

static enum ot_err check_device_type(const struct ot_manifest *m, const char *device_type,
                                     struct ot_diag *d)
{
    for (size_t i = 0; i < m->ndevice_types; i++)
        if (strcmp(m->device_types[i], device_type) == 0)
            return OT_OK;
    char list[OT_DIAG_MSG_MAX], ex[EXCERPT_MAX + 4];
    return ot_diag_set(d, OT_ERR_INCOMPATIBLE, "artifact is for device types %s; this device is %s",
                       join(list, sizeof(list), m->device_types, m->ndevice_types, ", "),
                       excerpt(device_type, ex));
}

static enum ot_err check_depend(const struct ot_depend *dep, const struct ot_kv *provides,
                                size_t nprovides, struct ot_diag *d)
{
    const char *have = kv_find(provides, nprovides, dep->key);
    for (size_t i = 0; have && i < dep->nvalues; i++)
        if (strcmp(dep->values[i], have) == 0)
            return OT_OK;
    char alts[OT_DIAG_MSG_MAX], ex[EXCERPT_MAX + 4];
    join(alts, sizeof(alts), dep->values, dep->nvalues, "|");
    if (!have)
        return ot_diag_set(d, OT_ERR_INCOMPATIBLE, "depends on %s %s; device does not provide %s",
                           dep->key, alts, dep->key);
    return ot_diag_set(d, OT_ERR_INCOMPATIBLE, "depends on %s %s; device has %s", dep->key, alts,
                       excerpt(have, ex));
}

enum ot_err ot_manifest_check_device(const struct ot_manifest *m, const char *device_type,
                                     const struct ot_kv *provides, size_t nprovides,
                                     uint64_t min_security_version, struct ot_diag *d)
{
    if (!device_type || (nprovides && !provides))
        return ot_diag_set(d, OT_ERR_INVALID, "check device: no device type");
    enum ot_err err = check_device_type(m, device_type, d);
    for (size_t i = 0; !err && i < m->ndepends; i++)
        err = check_depend(&m->depends[i], provides, nprovides, d);
    if (err)
        return err;
    if (m->security_version < min_security_version)
        return ot_diag_set(
            d, OT_ERR_ROLLBACK, "security version %llu is lower than the device's minimum %llu",
            (unsigned long long)m->security_version, (unsigned long long)min_security_version);
    return OT_OK;
}
