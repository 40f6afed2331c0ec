/* manifest.json: canonical round trips, every rule broken once (through the parser and through
 * validate on a manifest built in memory), encrypted consistency, and the device-side check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/json.h"
#include "otter/manifest.h"
#include "otter/path.h"

#define HA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HB "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HC "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define KEY1 "0011223344556677"
#define KEY2 "8899aabbccddeeff"
/* base64 of 80 bytes 0x00..0x4f */
#define SEALED                                                                                     \
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNE" \
    "RUZHSElKS0xNTk8="

/* The reference manifest, written by hand in an order that is not canonical and with single
 * quotes (turned into double quotes by jq()). */
static const char base_doc[] =
    "{'format':1,'name':'gw-firmware','version':'4.2.0','device_types':['gw-2','gw-3'],"
    "'security_version':7,'provides':{'rootfs.version':'4.2.0','kernel':'6.1'},"
    "'depends':{'bootloader.version':['2023.01','2023.04']},"
    "'payloads':["
    "{'name':'rootfs.img','type':'raw','target':'rootfs','version':'4.2.0','size':123,"
    "'sha256':'" HA "','encoding':{'compression':'zstd','encrypted':false},"
    "'stored':{'size':45,'sha256':'" HB "'},'args':{'fs':'ext4','block-size':'4096'}},"
    "{'name':'boot','type':'file','version':'1.0','size':10,'sha256':'" HC "',"
    "'encoding':{'compression':'none','encrypted':false},'stored':{'size':10,'sha256':'" HC "'}}"
    "]}";

/* The same manifest as ot_manifest_format writes it. */
static const char canonical_doc[] =
    "{'depends':{'bootloader.version':['2023.01','2023.04']},'device_types':['gw-2','gw-3'],"
    "'format':1,'name':'gw-firmware','payloads':["
    "{'args':{'block-size':'4096','fs':'ext4'},'encoding':{'compression':'zstd','encrypted':false},"
    "'name':'rootfs.img','sha256':'" HA "','size':123,'stored':{'sha256':'" HB "','size':45},"
    "'target':'rootfs','type':'raw','version':'4.2.0'},"
    "{'encoding':{'compression':'none','encrypted':false},'name':'boot','sha256':'" HC "',"
    "'size':10,'stored':{'sha256':'" HC "','size':10},'type':'file','version':'1.0'}],"
    "'provides':{'kernel':'6.1','rootfs.version':'4.2.0'},'security_version':7,"
    "'version':'4.2.0'}\n";

/* Single quotes to double quotes (the test documents never need a literal single quote). */
static char *jq(const char *s)
{
    char *out = strdup(s);
    assert_non_null(out);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

static enum ot_err parse_text(const char *text, struct ot_manifest *m, struct ot_diag *d)
{
    return ot_manifest_parse((const uint8_t *)text, strlen(text), m, d);
}

static void set_hex(uint8_t *out, const char *hex)
{
    for (size_t i = 0; i < OT_SHA256_LEN; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

/* The reference manifest through the builders. */
static void build_base(struct ot_manifest *m)
{
    *m = (struct ot_manifest){.format = OT_MANIFEST_FORMAT, .security_version = 7};
    struct ot_payload *p;
    assert_int_equal(ot_manifest_set_str(&m->name, "gw-firmware"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&m->version, "4.2.0"), OT_OK);
    assert_int_equal(ot_manifest_add_device_type(m, "gw-2"), OT_OK);
    assert_int_equal(ot_manifest_add_device_type(m, "gw-3"), OT_OK);
    assert_int_equal(ot_manifest_add_provide(m, "rootfs.version", "4.2.0"), OT_OK);
    assert_int_equal(ot_manifest_add_provide(m, "kernel", "6.1"), OT_OK);
    assert_int_equal(ot_manifest_add_depend(m, "bootloader.version", "2023.01|2023.04"), OT_OK);

    assert_int_equal(ot_manifest_add_payload(m, &p), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->name, "rootfs.img"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->type, "raw"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->target, "rootfs"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->version, "4.2.0"), OT_OK);
    p->size = 123;
    set_hex(p->sha256, HA);
    p->compression = OT_COMPRESSION_ZSTD;
    p->stored_size = 45;
    set_hex(p->stored_sha256, HB);
    assert_int_equal(ot_payload_add_arg(p, "fs", "ext4"), OT_OK);
    assert_int_equal(ot_payload_add_arg(p, "block-size", "4096"), OT_OK);

    assert_int_equal(ot_manifest_add_payload(m, &p), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->name, "boot"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->type, "file"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->version, "1.0"), OT_OK);
    p->size = p->stored_size = 10;
    set_hex(p->sha256, HC);
    set_hex(p->stored_sha256, HC);
}

static void make_encrypted(struct ot_manifest *m)
{
    m->recipients = calloc(2, sizeof(*m->recipients));
    assert_non_null(m->recipients);
    m->nrecipients = 2;
    memcpy(m->recipients[0].key_id, KEY1, sizeof(KEY1));
    memcpy(m->recipients[1].key_id, KEY2, sizeof(KEY2));
    for (size_t i = 0; i < OT_SEALED_KEY_LEN; i++) {
        m->recipients[0].sealed_key[i] = (uint8_t)i;
        m->recipients[1].sealed_key[i] = (uint8_t)(255 - i);
    }
    for (size_t i = 0; i < m->npayloads; i++)
        m->payloads[i].encrypted = true;
}

static const char *or_empty(const char *s) { return s ? s : ""; }

static void assert_kvs_equal(const struct ot_kv *a, size_t na, const struct ot_kv *b, size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(a[i].key, b[i].key);
        assert_string_equal(a[i].value, b[i].value);
    }
}

static void assert_payload_equal(const struct ot_payload *a, const struct ot_payload *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->type, b->type);
    assert_string_equal(or_empty(a->target), or_empty(b->target)); /* NULL and "" both: none */
    assert_string_equal(a->version, b->version);
    assert_int_equal(a->size, b->size);
    assert_memory_equal(a->sha256, b->sha256, OT_SHA256_LEN);
    assert_int_equal(a->compression, b->compression);
    assert_int_equal(a->encrypted, b->encrypted);
    assert_int_equal(a->has_delta_base, b->has_delta_base);
    if (a->has_delta_base)
        assert_memory_equal(a->delta_base_sha256, b->delta_base_sha256, OT_SHA256_LEN);
    assert_int_equal(a->stored_size, b->stored_size);
    assert_memory_equal(a->stored_sha256, b->stored_sha256, OT_SHA256_LEN);
    assert_kvs_equal(a->args, a->nargs, b->args, b->nargs);
}

static void assert_manifest_equal(const struct ot_manifest *a, const struct ot_manifest *b)
{
    assert_int_equal(a->format, b->format);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->version, b->version);
    assert_int_equal(a->ndevice_types, b->ndevice_types);
    for (size_t i = 0; i < a->ndevice_types; i++)
        assert_string_equal(a->device_types[i], b->device_types[i]);
    assert_int_equal(a->security_version, b->security_version);
    assert_kvs_equal(a->provides, a->nprovides, b->provides, b->nprovides);
    assert_int_equal(a->ndepends, b->ndepends);
    for (size_t i = 0; i < a->ndepends; i++) {
        assert_string_equal(a->depends[i].key, b->depends[i].key);
        assert_int_equal(a->depends[i].nvalues, b->depends[i].nvalues);
        for (size_t j = 0; j < a->depends[i].nvalues; j++)
            assert_string_equal(a->depends[i].values[j], b->depends[i].values[j]);
    }
    assert_int_equal(a->nrecipients, b->nrecipients);
    for (size_t i = 0; i < a->nrecipients; i++) {
        assert_string_equal(a->recipients[i].key_id, b->recipients[i].key_id);
        assert_memory_equal(a->recipients[i].sealed_key, b->recipients[i].sealed_key,
                            OT_SEALED_KEY_LEN);
    }
    assert_int_equal(a->npayloads, b->npayloads);
    for (size_t i = 0; i < a->npayloads; i++)
        assert_payload_equal(&a->payloads[i], &b->payloads[i]);
}

static void assert_empty(const struct ot_manifest *m)
{
    static const struct ot_manifest zero;
    assert_memory_equal(m, &zero, sizeof(zero));
}

/* format(m) -> parse -> equal to m -> format again, byte-identical. */
static void assert_round_trip(const struct ot_manifest *m)
{
    struct ot_buf a, b;
    struct ot_diag d = {0};
    struct ot_manifest back;
    ot_buf_init(&a, OT_MANIFEST_MAX);
    ot_buf_init(&b, OT_MANIFEST_MAX);
    assert_int_equal(ot_manifest_format(m, &a, &d), OT_OK);
    assert_int_equal(ot_manifest_parse(a.data, a.len, &back, &d), OT_OK);
    assert_manifest_equal(m, &back);
    assert_int_equal(ot_manifest_format(&back, &b, &d), OT_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    ot_manifest_release(&back);
    ot_buf_release(&a);
    ot_buf_release(&b);
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void test_format_canonical_bytes(void **state)
{
    (void)state;
    struct ot_manifest m;
    struct ot_buf out;
    struct ot_diag d = {0};
    char *want = jq(canonical_doc);
    build_base(&m);
    ot_buf_init(&out, OT_MANIFEST_MAX);
    assert_int_equal(ot_manifest_format(&m, &out, &d), OT_OK);
    assert_string_equal(ot_buf_str(&out), want);
    ot_buf_release(&out);
    ot_manifest_release(&m);
    free(want);
}

static void test_parse_then_format_is_canonical(void **state)
{
    (void)state;
    char *text = jq(base_doc), *want = jq(canonical_doc);
    struct ot_manifest m, built;
    struct ot_diag d = {0};
    struct ot_buf out;
    assert_int_equal(parse_text(text, &m, &d), OT_OK);
    build_base(&built);
    assert_manifest_equal(&m, &built);
    assert_string_equal(m.payloads[1].target, ""); /* absent target reads as "" */
    ot_buf_init(&out, OT_MANIFEST_MAX);
    assert_int_equal(ot_manifest_format(&m, &out, &d), OT_OK);
    assert_string_equal(ot_buf_str(&out), want);
    ot_buf_release(&out);
    ot_manifest_release(&m);
    ot_manifest_release(&built);
    free(text);
    free(want);
}

static void test_round_trip_plain(void **state)
{
    (void)state;
    struct ot_manifest m;
    build_base(&m);
    assert_round_trip(&m);
    ot_manifest_release(&m);
}

static void test_round_trip_minimal(void **state)
{
    (void)state;
    struct ot_manifest m = {.format = 1};
    struct ot_payload *p;
    assert_int_equal(ot_manifest_set_str(&m.name, "a"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&m.version, "1"), OT_OK);
    assert_int_equal(ot_manifest_add_device_type(&m, "d"), OT_OK);
    assert_int_equal(ot_manifest_add_payload(&m, &p), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->name, "p"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->type, "raw"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->version, "1"), OT_OK);
    assert_round_trip(&m);
    ot_manifest_release(&m);
}

static void test_round_trip_encrypted_delta_unicode(void **state)
{
    (void)state;
    struct ot_manifest m;
    build_base(&m);
    make_encrypted(&m);
    struct ot_payload *p = &m.payloads[1];
    p->has_delta_base = true; /* reserved, but it must survive a round trip */
    set_hex(p->delta_base_sha256, HB);
    p->stored_size = 99;
    assert_int_equal(ot_manifest_add_provide(&m, "label", "caf\xc3\xa9 \xe2\x9c\x93 \"q\" \\"),
                     OT_OK);
    assert_int_equal(ot_payload_add_arg(p, "empty", ""), OT_OK);
    m.security_version = INT64_MAX;
    m.payloads[0].size = INT64_MAX;
    assert_round_trip(&m);
    ot_manifest_release(&m);
}

static void test_round_trip_limits(void **state)
{
    (void)state;
    /* Every list at its maximum, every string at its maximum length. */
    struct ot_manifest m = {.format = 1};
    char name[OT_NAME_MAX + 1], version[65], value[OT_MANIFEST_STR_MAX + 1];
    memset(version, 'v', 64);
    version[64] = '\0';
    memset(value, 'x', OT_MANIFEST_STR_MAX);
    value[OT_MANIFEST_STR_MAX] = '\0';
    assert_int_equal(ot_manifest_set_str(&m.name, "n"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&m.version, version), OT_OK);
    for (int i = 0; i < OT_MANIFEST_LIST_MAX; i++) {
        char key[16];
        snprintf(name, sizeof(name), "dev-%d", i);
        snprintf(key, sizeof(key), "k%02d", i);
        assert_int_equal(ot_manifest_add_device_type(&m, name), OT_OK);
        assert_int_equal(ot_manifest_add_provide(&m, key, value), OT_OK);
    }
    for (int i = 0; i < OT_MANIFEST_PAYLOADS_MAX; i++) {
        struct ot_payload *p;
        assert_int_equal(ot_manifest_add_payload(&m, &p), OT_OK);
        memset(name, 'p', OT_NAME_MAX);
        snprintf(name + OT_NAME_MAX - 3, 4, "%03d", i);
        assert_int_equal(ot_manifest_set_str(&p->name, name), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->type, "raw"), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->target, value), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->version, version), OT_OK);
    }
    assert_round_trip(&m);
    ot_manifest_release(&m);
}

/* s with the first occurrence of from replaced by to (new string). */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

static void test_parse_accepts_uppercase_hex_and_escapes(void **state)
{
    (void)state;
    /* Upper-case hex and \u escapes are accepted; format writes lower case and raw UTF-8. */
    char *base = jq(base_doc);
    char *upper = strdup(HC);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    char *t1 = replace(base, HC, upper);
    char *text = replace(t1, "\"6.1\"", "\"\\u00e9\"");
    struct ot_manifest m;
    struct ot_diag d = {0};
    assert_int_equal(parse_text(text, &m, &d), OT_OK);
    assert_string_equal(m.provides[0].value, "\xc3\xa9");
    uint8_t want[OT_SHA256_LEN];
    set_hex(want, HC);
    assert_memory_equal(m.payloads[1].sha256, want, OT_SHA256_LEN);
    assert_round_trip(&m);
    ot_manifest_release(&m);
    free(base);
    free(upper);
    free(t1);
    free(text);
}

/* ---- every rule, through the parser ---------------------------------------------------------- */

struct mutation {
    const char *path;  /* dotted path into base_doc; array elements by index */
    const char *value; /* JSON (single quotes) to put there; NULL deletes */
    enum ot_err err;
    const char *msg; /* expected substring of the message */
};

static const char *const s65 =
    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'";

/* Builds JSON (single quotes) for a list of n copies of fmt(i); fmt is always a literal. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static char *repeat(const char *open, const char *fmt, int n, const char *close)
{
    struct ot_buf b;
    ot_buf_init(&b, 1 << 20);
    assert_int_equal(ot_buf_append_str(&b, open), OT_OK);
    for (int i = 0; i < n; i++) {
        if (i)
            assert_int_equal(ot_buf_append_str(&b, ","), OT_OK);
        assert_int_equal(ot_buf_printf(&b, fmt, i), OT_OK);
    }
    assert_int_equal(ot_buf_append_str(&b, close), OT_OK);
    uint8_t *data;
    size_t len;
    assert_int_equal(ot_buf_steal(&b, &data, &len), OT_OK);
    return (char *)data;
}

#pragma GCC diagnostic pop

static char *long_string(size_t n)
{
    char *s = malloc(n + 3);
    assert_non_null(s);
    s[0] = '\'';
    memset(s + 1, 'x', n);
    s[n + 1] = '\'';
    s[n + 2] = '\0';
    return s;
}

static json_t *walk(json_t *v, const char *part)
{
    if (json_is_array(v))
        return json_array_get(v, (size_t)strtoul(part, NULL, 10));
    return json_object_get(v, part);
}

static void apply(json_t *root, const char *path, const char *value)
{
    char *copy = strdup(path), *part = copy, *dot;
    json_t *v = root;
    while ((dot = strchr(part, '.'))) {
        *dot = '\0';
        v = walk(v, part);
        assert_non_null(v);
        part = dot + 1;
    }
    json_t *nv = NULL;
    if (value) {
        char *text = jq(value);
        json_error_t je;
        nv = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!nv)
            fail_msg("bad test value %s: %s", value, je.text);
        free(text);
    }
    if (json_is_array(v)) {
        size_t i = (size_t)strtoul(part, NULL, 10);
        if (nv && i == json_array_size(v))
            assert_int_equal(json_array_append_new(v, nv), 0);
        else
            assert_int_equal(nv ? json_array_set_new(v, i, nv) : json_array_remove(v, i), 0);
    } else if (nv) {
        assert_int_equal(json_object_set_new(v, part, nv), 0);
    } else {
        assert_int_equal(json_object_del(v, part), 0);
    }
    free(copy);
}

/* Applies the mutations (a list ending at path NULL) to base_doc, parses, checks the outcome. */
static void expect_mutation(const struct mutation *mut, size_t n)
{
    char *text = jq(base_doc);
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    assert_non_null(root);
    for (size_t i = 0; i < n; i++)
        apply(root, mut[i].path, mut[i].value);
    char *doc = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(doc);
    struct ot_manifest m = {.name = (char *)"garbage"};
    struct ot_diag d = {0};
    enum ot_err err = parse_text(doc, &m, &d);
    const struct mutation *last = &mut[n - 1];
    if (err != last->err || !strstr(d.msg, last->msg))
        fail_msg("%s = %.80s: got %s '%s', want %s '%s'", last->path, or_empty(last->value),
                 ot_err_name(err), d.msg, ot_err_name(last->err), last->msg);
    if (err)
        assert_empty(&m);
    else
        ot_manifest_release(&m);
    json_decref(root);
    free(doc);
    free(text);
}

static void expect_one(const char *path, const char *value, enum ot_err err, const char *msg)
{
    struct mutation m = {path, value, err, msg};
    expect_mutation(&m, 1);
}

#define P0 "manifest: payloads[0] ('rootfs.img')"
#define P1 "manifest: payloads[1] ('boot')"

static const struct mutation top_rules[] = {
    {"format", "2", OT_ERR_UNSUPPORTED,
     "manifest format 2 is newer than this program supports (1)"},
    {"format", "0", OT_ERR_FORMAT, "manifest: field 'format' must be 1"},
    {"format", "'1'", OT_ERR_FORMAT, "field 'format' must be a non-negative integer"},
    {"format", "1.0", OT_ERR_FORMAT, "field 'format' must be a non-negative integer"},
    {"format", NULL, OT_ERR_FORMAT, "manifest: missing field 'format'"},
    {"extra", "1", OT_ERR_FORMAT, "manifest: unknown field 'extra'"},
    {"name", NULL, OT_ERR_FORMAT, "manifest: missing field 'name'"},
    {"name", "5", OT_ERR_FORMAT, "field 'name' must be a string"},
    {"name", "null", OT_ERR_FORMAT, "field 'name' must be a string"},
    {"name", "'..'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'../etc'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'a/b'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'.hidden'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'-rf'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "''", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'a b'", OT_ERR_FORMAT, "field 'name' must be a safe name"},
    {"name", "'a\\u0000b'", OT_ERR_FORMAT, "manifest: invalid JSON"},
    {"version", "''", OT_ERR_FORMAT, "field 'version' must be 1..64 printable ASCII"},
    {"version", "'4.2 0'", OT_ERR_FORMAT, "field 'version' must be 1..64 printable ASCII"},
    {"version", "'4.2\\u00e9'", OT_ERR_FORMAT, "field 'version' must be 1..64 printable ASCII"},
    {"version", "'4\\t2'", OT_ERR_FORMAT, "field 'version' contains control characters"},
    {"version", "[]", OT_ERR_FORMAT, "field 'version' must be a string"},
    {"device_types", NULL, OT_ERR_FORMAT, "missing field 'device_types'"},
    {"device_types", "[]", OT_ERR_FORMAT, "field 'device_types' must have 1..64 entries, not 0"},
    {"device_types", "'gw-2'", OT_ERR_FORMAT, "field 'device_types' must be an array"},
    {"device_types", "['gw-2','gw-3','gw-2']", OT_ERR_FORMAT,
     "manifest: device_types[2]: duplicate 'gw-2'"},
    {"device_types", "['gw-2',1]", OT_ERR_FORMAT, "device_types[1] must be a string"},
    {"device_types", "['gw-2','..']", OT_ERR_FORMAT, "device_types[1] must be a safe name"},
    {"device_types", "['gw/2']", OT_ERR_FORMAT, "device_types[0] must be a safe name"},
    {"device_types", "['gw\\u001b[2J']", OT_ERR_FORMAT, "device_types[0] must be a safe name"},
    {"security_version", "-1", OT_ERR_FORMAT, "'security_version' must be a non-negative integer"},
    {"security_version", "true", OT_ERR_FORMAT, "'security_version' must be a non-negative"},
    {"security_version", "9223372036854775807", OT_OK, ""},
    {"provides", "[]", OT_ERR_FORMAT, "field 'provides' must be an object"},
    {"provides", "{'a b':'1'}", OT_ERR_FORMAT, "manifest: provides: key 'a b' must be 1..64 of"},
    {"provides", "{'':'1'}", OT_ERR_FORMAT, "manifest: provides: key '' must be"},
    {"provides", "{'k':''}", OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes"},
    {"provides", "{'k':1}", OT_ERR_FORMAT, "provides['k'] must be a string"},
    {"provides", "{'k':'a\\u0001'}", OT_ERR_FORMAT,
     "provides['k'] must be 1..255 bytes of printable"},
    {"provides", "{'k':'a\\u0085'}", OT_ERR_FORMAT,
     "provides['k'] must be 1..255 bytes of printable"},
    {"provides", "{'k\\u0007':'1'}", OT_ERR_FORMAT, "manifest: provides: key 'k?' must be"},
    {"depends", "[]", OT_ERR_FORMAT, "field 'depends' must be an object"},
    {"depends", "{'k':[]}", OT_ERR_FORMAT, "field 'depends['k']' must have 1..64 entries, not 0"},
    {"depends", "{'k':'1'}", OT_ERR_FORMAT, "depends['k'] must be an array of strings"},
    {"depends", "{'k':['1','1']}", OT_ERR_FORMAT, "depends['k'][1]: duplicate '1'"},
    {"depends", "{'k':['1|2']}", OT_ERR_FORMAT,
     "depends['k'][0] must be 1..255 bytes of printable UTF-8 without '|'"},
    {"depends", "{'k':['']}", OT_ERR_FORMAT, "depends['k'][0] must be 1..255"},
    {"depends", "{'k':[1]}", OT_ERR_FORMAT, "depends['k'][0] must be a string"},
    {"depends", "{'k k':['1']}", OT_ERR_FORMAT, "manifest: depends: key 'k k' must be"},
    {"payloads", NULL, OT_ERR_FORMAT, "manifest: missing field 'payloads'"},
    {"payloads", "[]", OT_ERR_FORMAT, "field 'payloads' must have 1..128 entries, not 0"},
    {"payloads", "{}", OT_ERR_FORMAT, "field 'payloads' must be an array"},
    {"payloads", "[1]", OT_ERR_FORMAT, "manifest: payloads[0]: not a JSON object"},
    {"payloads.1.name", "'rootfs.img'", OT_ERR_FORMAT,
     "manifest: payloads[1] ('rootfs.img'): duplicate payload name"},
};

static const struct mutation payload_rules[] = {
    {"payloads.0.name", NULL, OT_ERR_FORMAT, "manifest: payloads[0]: missing field 'name'"},
    {"payloads.0.name", "'..'", OT_ERR_FORMAT,
     "manifest: payloads[0]: field 'name' must be a safe"},
    {"payloads.0.name", "'a/b'", OT_ERR_FORMAT,
     "manifest: payloads[0]: field 'name' must be a safe"},
    {"payloads.0.name", "'.a'", OT_ERR_FORMAT,
     "manifest: payloads[0]: field 'name' must be a safe"},
    {"payloads.0.name", "'a\\u0000'", OT_ERR_FORMAT, "invalid JSON"},
    {"payloads.0.extra", "{}", OT_ERR_FORMAT, P0 ": unknown field 'extra'"},
    {"payloads.0.type", NULL, OT_ERR_FORMAT, P0 ": missing field 'type'"},
    {"payloads.0.type", "'Raw'", OT_ERR_FORMAT, P0 ": field 'type' must be 1..32 of a-z 0-9 _ -"},
    {"payloads.0.type", "'raw handler'", OT_ERR_FORMAT, P0 ": field 'type' must be 1..32"},
    {"payloads.0.type", "''", OT_ERR_FORMAT, P0 ": field 'type' must be 1..32"},
    {"payloads.0.target", "'a\\nb'", OT_ERR_FORMAT, P0 ": field 'target' contains control"},
    {"payloads.0.target", "7", OT_ERR_FORMAT, P0 ": field 'target' must be a string"},
    {"payloads.0.version", NULL, OT_ERR_FORMAT, P0 ": missing field 'version'"},
    {"payloads.0.version", "'1 0'", OT_ERR_FORMAT, P0 ": field 'version' must be 1..64"},
    {"payloads.0.size", NULL, OT_ERR_FORMAT, P0 ": missing field 'size'"},
    {"payloads.0.size", "-1", OT_ERR_FORMAT, P0 ": field 'size' must be a non-negative integer"},
    {"payloads.0.size", "1.5", OT_ERR_FORMAT, P0 ": field 'size' must be a non-negative integer"},
    {"payloads.0.size", "'12'", OT_ERR_FORMAT, P0 ": field 'size' must be a non-negative integer"},
    {"payloads.1.sha256", "'abc'", OT_ERR_FORMAT, P1 ": field 'sha256' must be 64 hex digits"},
    {"payloads.1.sha256", "'" HA "a'", OT_ERR_FORMAT, P1 ": field 'sha256' must be 64 hex digits"},
    {"payloads.1.sha256", "'gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg'",
     OT_ERR_FORMAT, P1 ": field 'sha256' must be 64 hex digits"},
    {"payloads.1.sha256", NULL, OT_ERR_FORMAT, P1 ": missing field 'sha256'"},
    {"payloads.0.encoding", NULL, OT_ERR_FORMAT, P0 ": missing field 'encoding'"},
    {"payloads.0.encoding", "'zstd'", OT_ERR_FORMAT, P0 ": field 'encoding' must be an object"},
    {"payloads.0.encoding.compression", "'gzip'", OT_ERR_FORMAT,
     P0 ": encoding: field 'compression' must be 'none' or 'zstd'"},
    {"payloads.0.encoding.compression", NULL, OT_ERR_FORMAT,
     P0 ": encoding: missing field 'compression'"},
    {"payloads.0.encoding.encrypted", "'no'", OT_ERR_FORMAT,
     P0 ": encoding: field 'encrypted' must be true or false"},
    {"payloads.0.encoding.encrypted", NULL, OT_ERR_FORMAT,
     P0 ": encoding: missing field 'encrypted'"},
    {"payloads.0.encoding.delta", "'x'", OT_ERR_FORMAT, P0 ": encoding: unknown field 'delta'"},
    {"payloads.0.encoding.delta_base_sha256", "'xyz'", OT_ERR_FORMAT,
     P0 ": encoding: field 'delta_base_sha256' must be 64 hex digits"},
    {"payloads.0.stored", NULL, OT_ERR_FORMAT, P0 ": missing field 'stored'"},
    {"payloads.0.stored.size", "'x'", OT_ERR_FORMAT, P0 ": stored: field 'size' must be a non-neg"},
    {"payloads.0.stored.sha256", "'x'", OT_ERR_FORMAT,
     P0 ": stored: field 'sha256' must be 64 hex"},
    {"payloads.0.stored.extra", "1", OT_ERR_FORMAT, P0 ": stored: unknown field 'extra'"},
    {"payloads.1.stored.size", "11", OT_ERR_FORMAT,
     P1 ": stored size and sha256 must equal size and sha256"},
    {"payloads.1.stored.sha256", "'" HA "'", OT_ERR_FORMAT,
     P1 ": stored size and sha256 must equal size and sha256"},
    {"payloads.0.args", "[]", OT_ERR_FORMAT, P0 ": field 'args' must be an object"},
    {"payloads.0.args", "{'k':1}", OT_ERR_FORMAT, P0 ": args['k'] must be a string"},
    {"payloads.0.args", "{'a/b':'x'}", OT_ERR_FORMAT, P0 ": args: key 'a/b' must be 1..64 of"},
    {"payloads.0.args", "{'k':'a\\u007f'}", OT_ERR_FORMAT, P0 ": args['k'] must be at most 1024"},
    {"payloads.0.encoding.encrypted", "true", OT_ERR_FORMAT,
     P0 ": encoding: field 'encrypted' must be false: the manifest has no encryption recipients"},
};

static void test_parse_rules_top(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(top_rules); i++)
        expect_mutation(&top_rules[i], 1);
}

static void test_parse_rules_payload(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(payload_rules); i++)
        expect_mutation(&payload_rules[i], 1);
}

static void test_parse_rules_sizes(void **state)
{
    (void)state;
    char *s;
    expect_one("name", s65, OT_ERR_FORMAT, "field 'name' is longer than 64 bytes");
    expect_one("version", s65, OT_ERR_FORMAT, "field 'version' is longer than 64 bytes");
    expect_one("payloads.0.type", "'abcdefghijklmnopqrstuvwxyzabcdefg'", OT_ERR_FORMAT,
               "field 'type' is longer than 32 bytes");
    s = long_string(256);
    expect_one("payloads.0.target", s, OT_ERR_FORMAT, P0 ": field 'target' is longer than 255");
    free(s);
    s = long_string(255);
    expect_one("payloads.0.target", s, OT_OK, "");
    free(s);
    s = repeat("[", "'d%d'", OT_MANIFEST_LIST_MAX + 1, "]");
    expect_one("device_types", s, OT_ERR_FORMAT,
               "field 'device_types' must have 1..64 entries, not 65");
    free(s);
    s = repeat("{", "'k%d':'v'", OT_MANIFEST_LIST_MAX + 1, "}");
    expect_one("provides", s, OT_ERR_FORMAT, "field 'provides' must have 0..64 entries, not 65");
    expect_one("payloads.0.args", s, OT_ERR_FORMAT, P0 ": field 'args' must have 0..64 entries");
    free(s);
    s = repeat("{", "'k%d':['v']", OT_MANIFEST_LIST_MAX + 1, "}");
    expect_one("depends", s, OT_ERR_FORMAT, "field 'depends' must have 0..64 entries, not 65");
    free(s);
    s = repeat("{'k':[", "'v%d'", OT_MANIFEST_LIST_MAX + 1, "]}");
    expect_one("depends", s, OT_ERR_FORMAT, "field 'depends['k']' must have 1..64 entries, not 65");
    free(s);
    s = long_string(256);
    char *obj = malloc(strlen(s) + 16);
    snprintf(obj, strlen(s) + 16, "{'k':%s}", s);
    expect_one("provides", obj, OT_ERR_FORMAT, "provides['k'] must be a string of at most 255");
    free(obj);
    free(s);
    s = long_string(OT_MANIFEST_ARG_MAX + 1);
    obj = malloc(strlen(s) + 16);
    snprintf(obj, strlen(s) + 16, "{'k':%s}", s);
    expect_one("payloads.0.args", obj, OT_ERR_FORMAT, "args['k'] must be a string of at most 1024");
    free(obj);
    free(s);
    s = repeat("[",
               "{'name':'p%d','type':'raw','version':'1','size':0,'sha256':'" HA "',"
               "'encoding':{'compression':'none','encrypted':false},"
               "'stored':{'size':0,'sha256':'" HA "'}}",
               OT_MANIFEST_PAYLOADS_MAX + 1, "]");
    expect_one("payloads", s, OT_ERR_FORMAT, "field 'payloads' must have 1..128 entries, not 129");
    free(s);
}

static void test_parse_rules_encryption(void **state)
{
    (void)state;
    const char *enc = "{'cipher':'xchacha20poly1305-secretstream','recipients':"
                      "[{'key_id':'" KEY1 "','sealed_key':'" SEALED "'}]}";
    const struct mutation encrypted[] = {
        {"encryption", enc, OT_OK, ""},
        {"payloads.0.encoding.encrypted", "true", OT_OK, ""},
        {"payloads.1.encoding.encrypted", "true", OT_OK, ""},
    };
    expect_mutation(encrypted, 3);
    /* one payload left unencrypted */
    struct mutation mixed[] = {encrypted[0],
                               encrypted[1],
                               {"payloads.0.name", "'rootfs.img'", OT_ERR_FORMAT,
                                P1 ": encoding: field 'encrypted' must be true: the manifest has "
                                   "encryption recipients"}};
    expect_mutation(mixed, 3);

    static const struct mutation rules[] = {
        {"encryption.cipher", "'aes-256-gcm'", OT_ERR_UNSUPPORTED,
         "manifest: encryption: cipher 'aes-256-gcm' is not supported"},
        {"encryption.cipher", NULL, OT_ERR_FORMAT, "manifest: encryption: missing field 'cipher'"},
        {"encryption.extra", "1", OT_ERR_FORMAT, "manifest: encryption: unknown field 'extra'"},
        {"encryption.recipients", "[]", OT_ERR_FORMAT,
         "encryption: field 'recipients' must have 1..32 entries, not 0"},
        {"encryption.recipients", NULL, OT_ERR_FORMAT, "encryption: missing field 'recipients'"},
        {"encryption.recipients.0.key_id", "'0011223344556677AA'", OT_ERR_FORMAT,
         "recipients[0]: field 'key_id' is longer than 16 bytes"},
        {"encryption.recipients.0.key_id", "'00112233445566'", OT_ERR_FORMAT,
         "recipients[0]: field 'key_id' must be 16 lowercase hex digits"},
        {"encryption.recipients.0.key_id", "'00112233445566AA'", OT_ERR_FORMAT,
         "recipients[0]: field 'key_id' must be 16 lowercase hex digits"},
        {"encryption.recipients.0.sealed_key", "'AAEC'", OT_ERR_FORMAT,
         "recipients[0]: field 'sealed_key' must be base64 of 80 bytes"},
        {"encryption.recipients.0.sealed_key", "'" SEALED "='", OT_ERR_FORMAT,
         "recipients[0]: field 'sealed_key' must be base64 of 80 bytes"},
        {"encryption.recipients.0.sealed_key", NULL, OT_ERR_FORMAT,
         "recipients[0]: missing field 'sealed_key'"},
        {"encryption.recipients.0.extra", "1", OT_ERR_FORMAT,
         "recipients[0]: unknown field 'extra'"},
        {"encryption.recipients.0", "'x'", OT_ERR_FORMAT, "recipients[0]: not a JSON object"},
        {"encryption.recipients.1", "{'key_id':'" KEY1 "','sealed_key':'" SEALED "'}",
         OT_ERR_FORMAT, "recipients[1]: duplicate key id '" KEY1 "'"},
        {"encryption", "[]", OT_ERR_FORMAT, "field 'encryption' must be an object"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(rules); i++) {
        struct mutation m[] = {encrypted[0], encrypted[1], encrypted[2], rules[i]};
        expect_mutation(m, 4);
    }
    char *many = repeat("[", "{'key_id':'%016x','sealed_key':'" SEALED "'}",
                        OT_MANIFEST_RECIPIENTS_MAX + 1, "]");
    struct mutation m[] = {encrypted[0],
                           encrypted[1],
                           encrypted[2],
                           {"encryption.recipients", many, OT_ERR_FORMAT,
                            "field 'recipients' must have 1..32 entries, not 33"}};
    expect_mutation(m, 4);
    free(many);
}

/* Documents the mutation table cannot express. */
static void test_parse_raw(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *msg;
    } cases[] = {
        {"", "manifest: invalid JSON"},
        {"nope", "manifest: invalid JSON"},
        {"[]", "manifest: not a JSON object"},
        {"1", "manifest: not a JSON object"},
        {"{'format':1,'format':1}", "duplicate object key"},
        {"{'format':1,'provides':{'a':'1','a':'2'}}", "duplicate object key"},
        {"{'format':1} {}", "manifest: invalid JSON"},
        {"{'format':1,'name':'\xff'}", "manifest: invalid JSON"},
        {"{'format':1,'name':'a\\ud800'}", "manifest: invalid JSON"},
        {"{'format':1,'name':'x'}", "manifest: missing field 'version'"},
        {"{'format':3,'whatever':{}}", "manifest format 3 is newer"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        char *text = jq(cases[i].text);
        struct ot_manifest m;
        struct ot_diag d = {0};
        enum ot_err err = parse_text(text, &m, &d);
        if (err == OT_OK || !strstr(d.msg, cases[i].msg))
            fail_msg("%s: got %s '%s', want '%s'", cases[i].text, ot_err_name(err), d.msg,
                     cases[i].msg);
        assert_empty(&m);
        free(text);
    }
    /* replacements in the reference document */
    static const struct {
        const char *from, *to, *msg;
    } edits[] = {
        {"'size':45", "'size':9223372036854775808", "manifest: invalid JSON"},
        {"'size':45", "'size':1e3", "stored: field 'size' must be a non-negative integer"},
        {"'security_version':7", "'security_version':-0", NULL},
        {"'kernel':'6.1'", "'kernel':'6.1','kernel':'6.2'", "duplicate object key"},
        {"'fs':'ext4'", "'fs':'ext4','fs':'ext4'", "duplicate object key"},
        {"'name':'boot'", "'name':'boot','name':'boot'", "duplicate object key"},
        {"'format':1", "'format':1,'format':2", "duplicate object key"},
        {"'provides':{", "'provides':{'deep':[[[[[[[[[[[[[[[[[[[['x']]]]]]]]]]]]]]]]]]]],",
         "nested deeper than 16 levels"},
        {"{'format':1", " \t\n{'format':1", NULL},
        {"]}", "]}\n\n", NULL},
        {"]}", "]}x", "manifest: invalid JSON"},
    };
    char *base = jq(base_doc);
    for (size_t i = 0; i < OT_ARRAY_SIZE(edits); i++) {
        char *from = jq(edits[i].from), *to = jq(edits[i].to);
        char *text = replace(base, from, to);
        struct ot_manifest m;
        struct ot_diag d = {0};
        enum ot_err err = parse_text(text, &m, &d);
        if (edits[i].msg ? err == OT_OK || !strstr(d.msg, edits[i].msg) : err != OT_OK)
            fail_msg("%s: got %s '%s', want '%s'", edits[i].to, ot_err_name(err), d.msg,
                     edits[i].msg ? edits[i].msg : "ok");
        ot_manifest_release(&m);
        free(from);
        free(to);
        free(text);
    }
    free(base);
}

static void test_parse_size_limit(void **state)
{
    (void)state;
    size_t len = OT_MANIFEST_MAX + 1;
    uint8_t *big = malloc(len);
    assert_non_null(big);
    memset(big, ' ', len);
    struct ot_manifest m;
    struct ot_diag d = {0};
    assert_int_equal(ot_manifest_parse(big, len, &m, &d), OT_ERR_LIMIT);
    assert_string_equal(d.msg, "manifest: larger than 1048576 bytes");
    assert_empty(&m);
    free(big);
}

/* ---- every rule, through validate ------------------------------------------------------------ */

static void expect_invalid(struct ot_manifest *m, enum ot_err want, const char *msg)
{
    struct ot_diag d = {0};
    struct ot_buf out;
    ot_buf_init(&out, OT_MANIFEST_MAX);
    enum ot_err err = ot_manifest_validate(m, &d);
    if (err != want || !strstr(d.msg, msg))
        fail_msg("got %s '%s', want %s '%s'", ot_err_name(err), d.msg, ot_err_name(want), msg);
    /* format refuses what validate refuses, and writes nothing */
    assert_int_equal(ot_manifest_format(m, &out, NULL), want);
    assert_int_equal(out.len, 0);
    json_t *j = NULL;
    if (want != OT_ERR_LIMIT) { /* to_json has no size limit */
        assert_int_equal(ot_manifest_to_json(m, &j), want);
        assert_null(j);
    }
    ot_buf_release(&out);
    ot_manifest_release(m);
}

typedef void (*breaker_fn)(struct ot_manifest *m);

static void b_format0(struct ot_manifest *m) { m->format = 0; }
static void b_format2(struct ot_manifest *m) { m->format = 2; }
static void b_name_null(struct ot_manifest *m) { free(m->name), m->name = NULL; }
static void b_name_dotdot(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->name, ".."));
}
static void b_version_blank(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->version, "1 2"));
}
static void b_secver(struct ot_manifest *m) { m->security_version = (uint64_t)INT64_MAX + 1; }
static void b_dev_dup(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_device_type(m, "gw-2"));
}
static void b_dev_none(struct ot_manifest *m)
{
    for (size_t i = 0; i < m->ndevice_types; i++)
        free(m->device_types[i]);
    m->ndevice_types = 0;
}
static void b_dev_bad(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_device_type(m, "a b"));
}
static void b_provide_dup(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "kernel", "7"));
}
static void b_provide_key(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "a=b", "7"));
}
static void b_provide_utf8(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "k", "\xff"));
}
static void b_provide_overlong(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "k", "\xc0\xaf"));
}
static void b_provide_surrogate(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "k", "\xed\xa0\x80"));
}
static void b_provide_c1(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "k", "\xc2\x85"));
}
static void b_provide_trunc(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_provide(m, "k", "\xe2\x9c"));
}
static void b_depend_empty_alt(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_depend(m, "k", "a||b"));
}
static void b_depend_dup_key(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_depend(m, "bootloader.version", "1"));
}
static void b_depend_dup_val(struct ot_manifest *m)
{
    assert_false(ot_manifest_add_depend(m, "k", "1|1"));
}
static void b_no_payloads(struct ot_manifest *m)
{
    struct ot_payload *p = m->payloads;
    for (size_t i = 0; i < m->npayloads; i++) {
        free(p[i].name), free(p[i].type), free(p[i].target), free(p[i].version);
        for (size_t j = 0; j < p[i].nargs; j++)
            free(p[i].args[j].key), free(p[i].args[j].value);
        free(p[i].args);
    }
    m->npayloads = 0;
}
static void b_payload_dup(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].name, "rootfs.img"));
}
static void b_payload_name(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].name, "x/../y"));
}
static void b_payload_type(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].type, "FILE"));
}
static void b_payload_type_null(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].type, NULL));
}
static void b_payload_target(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].target, "a\tb"));
}
static void b_payload_version(struct ot_manifest *m)
{
    assert_false(ot_manifest_set_str(&m->payloads[1].version, ""));
}
static void b_payload_size(struct ot_manifest *m) { m->payloads[0].size = UINT64_MAX; }
static void b_payload_stored_size(struct ot_manifest *m)
{
    m->payloads[0].stored_size = UINT64_MAX;
}
static void b_payload_compression(struct ot_manifest *m)
{
    m->payloads[0].compression = (enum ot_compression)7;
}
static void b_payload_plain(struct ot_manifest *m) { m->payloads[1].stored_size = 11; }
static void b_payload_encrypted(struct ot_manifest *m) { m->payloads[1].encrypted = true; }
static void b_payload_arg_key(struct ot_manifest *m)
{
    assert_false(ot_payload_add_arg(&m->payloads[1], "", "x"));
}
static void b_payload_arg_dup(struct ot_manifest *m)
{
    assert_false(ot_payload_add_arg(&m->payloads[0], "fs", "xfs"));
}
static void b_payload_arg_value(struct ot_manifest *m)
{
    assert_false(ot_payload_add_arg(&m->payloads[0], "x", "a\nb"));
}
static void b_enc_partial(struct ot_manifest *m)
{
    make_encrypted(m);
    m->payloads[0].encrypted = false;
}
static void b_enc_key_id(struct ot_manifest *m)
{
    make_encrypted(m);
    memcpy(m->recipients[1].key_id, "001122334455667G", 17);
}
static void b_enc_key_id_unterminated(struct ot_manifest *m)
{
    make_encrypted(m);
    memset(m->recipients[1].key_id, 'a', OT_KEY_ID_STRLEN);
}
static void b_enc_dup(struct ot_manifest *m)
{
    make_encrypted(m);
    memcpy(m->recipients[1].key_id, KEY1, sizeof(KEY1));
}
static void b_enc_many(struct ot_manifest *m)
{
    make_encrypted(m);
    m->recipients = realloc(m->recipients, 33 * sizeof(*m->recipients));
    assert_non_null(m->recipients);
    memset(m->recipients, 0, 33 * sizeof(*m->recipients));
    for (size_t i = 0; i < 33; i++)
        snprintf(m->recipients[i].key_id, OT_KEY_ID_STRLEN, "%016zx", i);
    m->nrecipients = 33;
}

static const struct {
    breaker_fn fn;
    enum ot_err err;
    const char *msg;
} validate_rules[] = {
    {b_format0, OT_ERR_FORMAT, "manifest: field 'format' must be 1"},
    {b_format2, OT_ERR_UNSUPPORTED, "manifest format 2 is newer than this program supports (1)"},
    {b_name_null, OT_ERR_FORMAT, "manifest: field 'name' must be a safe name"},
    {b_name_dotdot, OT_ERR_FORMAT, "manifest: field 'name' must be a safe name"},
    {b_version_blank, OT_ERR_FORMAT, "manifest: field 'version' must be 1..64 printable ASCII"},
    {b_secver, OT_ERR_FORMAT, "field 'security_version' is larger than 9223372036854775807"},
    {b_dev_dup, OT_ERR_FORMAT, "manifest: device_types[2]: duplicate 'gw-2'"},
    {b_dev_none, OT_ERR_FORMAT, "field 'device_types' must have 1..64 entries, not 0"},
    {b_dev_bad, OT_ERR_FORMAT, "manifest: device_types[2] must be a safe name"},
    {b_provide_dup, OT_ERR_FORMAT, "manifest: provides: duplicate key 'kernel'"},
    {b_provide_key, OT_ERR_FORMAT, "manifest: provides: key 'a=b' must be 1..64 of"},
    {b_provide_utf8, OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes of printable"},
    {b_provide_overlong, OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes"},
    {b_provide_surrogate, OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes"},
    {b_provide_c1, OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes"},
    {b_provide_trunc, OT_ERR_FORMAT, "manifest: provides['k'] must be 1..255 bytes"},
    {b_depend_empty_alt, OT_ERR_FORMAT, "manifest: depends['k'][1] must be 1..255 bytes"},
    {b_depend_dup_key, OT_ERR_FORMAT, "manifest: depends: duplicate key 'bootloader.version'"},
    {b_depend_dup_val, OT_ERR_FORMAT, "manifest: depends['k'][1]: duplicate '1'"},
    {b_no_payloads, OT_ERR_FORMAT, "field 'payloads' must have 1..128 entries, not 0"},
    {b_payload_dup, OT_ERR_FORMAT, "manifest: payloads[1] ('rootfs.img'): duplicate payload name"},
    {b_payload_name, OT_ERR_FORMAT, "manifest: payloads[1]: field 'name' must be a safe name"},
    {b_payload_type, OT_ERR_FORMAT, P1 ": field 'type' must be 1..32 of a-z 0-9 _ -"},
    {b_payload_type_null, OT_ERR_FORMAT, P1 ": field 'type' must be"},
    {b_payload_target, OT_ERR_FORMAT, P1 ": field 'target' must be at most 255 bytes of printable"},
    {b_payload_version, OT_ERR_FORMAT, P1 ": field 'version' must be 1..64"},
    {b_payload_size, OT_ERR_FORMAT, P0 ": field 'size' is larger than 9223372036854775807"},
    {b_payload_stored_size, OT_ERR_FORMAT, P0 ": field 'stored.size' is larger than"},
    {b_payload_compression, OT_ERR_FORMAT, P0 ": encoding: field 'compression' must be 'none'"},
    {b_payload_plain, OT_ERR_FORMAT, P1 ": stored size and sha256 must equal size and sha256"},
    {b_payload_encrypted, OT_ERR_FORMAT, P1 ": encoding: field 'encrypted' must be false"},
    {b_payload_arg_key, OT_ERR_FORMAT, P1 ": args: key '' must be 1..64"},
    {b_payload_arg_dup, OT_ERR_FORMAT, P0 ": args: duplicate key 'fs'"},
    {b_payload_arg_value, OT_ERR_FORMAT, P0 ": args['x'] must be at most 1024 bytes of printable"},
    {b_enc_partial, OT_ERR_FORMAT, P0 ": encoding: field 'encrypted' must be true"},
    {b_enc_key_id, OT_ERR_FORMAT, "encryption: recipients[1]: field 'key_id' must be 16 lowercase"},
    {b_enc_key_id_unterminated, OT_ERR_FORMAT, "recipients[1]: field 'key_id' must be 16"},
    {b_enc_dup, OT_ERR_FORMAT, "encryption: recipients[1]: duplicate key id '" KEY1 "'"},
    {b_enc_many, OT_ERR_FORMAT, "encryption: field 'recipients' must have 0..32 entries, not 33"},
};

static void test_validate_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(validate_rules); i++) {
        struct ot_manifest m;
        build_base(&m);
        validate_rules[i].fn(&m);
        expect_invalid(&m, validate_rules[i].err, validate_rules[i].msg);
    }
}

static void test_validate_document_size(void **state)
{
    (void)state;
    /* Every field within its own limit, but the whole document over OT_MANIFEST_MAX: 20 payloads
     * with 64 arguments of 1024 bytes each is about 1.3 MiB. */
    struct ot_manifest m;
    build_base(&m);
    char value[OT_MANIFEST_ARG_MAX + 1], name[16];
    memset(value, 'v', OT_MANIFEST_ARG_MAX);
    value[OT_MANIFEST_ARG_MAX] = '\0';
    while (m.npayloads < 20) {
        struct ot_payload *p;
        assert_int_equal(ot_manifest_add_payload(&m, &p), OT_OK);
        snprintf(name, sizeof(name), "extra%zu", m.npayloads);
        assert_int_equal(ot_manifest_set_str(&p->name, name), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->type, "raw"), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->version, "1"), OT_OK);
    }
    for (size_t j = 0; j < m.npayloads; j++)
        for (int k = 0; k < OT_MANIFEST_LIST_MAX - 2; k++) {
            snprintf(name, sizeof(name), "a%02d", k);
            assert_int_equal(ot_payload_add_arg(&m.payloads[j], name, value), OT_OK);
        }
    expect_invalid(&m, OT_ERR_LIMIT, "manifest: larger than 1048576 bytes");
}

/* ---- builders, queries, lifecycle ------------------------------------------------------------ */

static void test_builders_and_queries(void **state)
{
    (void)state;
    struct ot_manifest m;
    build_base(&m);
    /* sorted on insertion, whatever the order of the calls */
    assert_string_equal(m.provides[0].key, "kernel");
    assert_string_equal(m.provides[1].key, "rootfs.version");
    assert_string_equal(m.payloads[0].args[0].key, "block-size");
    assert_int_equal(m.depends[0].nvalues, 2);
    assert_string_equal(m.depends[0].values[1], "2023.04");
    assert_int_equal(ot_manifest_add_depend(&m, "a.version", "1"), OT_OK);
    assert_string_equal(m.depends[0].key, "a.version");
    assert_int_equal(m.depends[0].nvalues, 1);

    assert_ptr_equal(ot_manifest_payload(&m, "boot"), &m.payloads[1]);
    assert_null(ot_manifest_payload(&m, "missing"));
    assert_null(ot_manifest_payload(&m, NULL));
    assert_string_equal(ot_compression_name(OT_COMPRESSION_NONE), "none");
    assert_string_equal(ot_compression_name(OT_COMPRESSION_ZSTD), "zstd");
    assert_string_equal(ot_compression_name((enum ot_compression)42), "unknown");

    assert_int_equal(ot_manifest_set_str(&m.version, "5.0"), OT_OK); /* replaces, no leak */
    assert_string_equal(m.version, "5.0");
    assert_int_equal(ot_manifest_add_device_type(&m, NULL), OT_ERR_INVALID);
    assert_int_equal(ot_manifest_add_provide(&m, NULL, "x"), OT_ERR_INVALID);
    assert_int_equal(ot_manifest_add_depend(&m, "k", NULL), OT_ERR_INVALID);
    assert_int_equal(ot_payload_add_arg(&m.payloads[0], "k", NULL), OT_ERR_INVALID);

    ot_manifest_release(&m);
    assert_empty(&m);
    ot_manifest_release(&m); /* twice is fine */
}

static void test_to_json(void **state)
{
    (void)state;
    struct ot_manifest m;
    build_base(&m);
    make_encrypted(&m);
    json_t *j = NULL;
    assert_int_equal(ot_manifest_to_json(&m, &j), OT_OK);
    assert_int_equal(json_integer_value(json_object_get(j, "format")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "gw-firmware");
    json_t *enc = json_object_get(j, "encryption");
    assert_string_equal(json_string_value(json_object_get(enc, "cipher")),
                        "xchacha20poly1305-secretstream");
    json_t *r0 = json_array_get(json_object_get(enc, "recipients"), 0);
    assert_string_equal(json_string_value(json_object_get(r0, "key_id")), KEY1);
    assert_string_equal(json_string_value(json_object_get(r0, "sealed_key")), SEALED);
    json_t *p1 = json_array_get(json_object_get(j, "payloads"), 1);
    assert_null(json_object_get(p1, "target"));
    assert_null(json_object_get(p1, "args"));
    assert_true(json_is_true(json_object_get(json_object_get(p1, "encoding"), "encrypted")));
    /* the same bytes as format */
    struct ot_buf a, b;
    ot_buf_init(&a, OT_MANIFEST_MAX);
    ot_buf_init(&b, OT_MANIFEST_MAX);
    assert_int_equal(ot_json_dump(j, &a), OT_OK);
    assert_int_equal(ot_manifest_format(&m, &b, NULL), OT_OK);
    assert_string_equal(ot_buf_str(&a), ot_buf_str(&b));
    json_decref(j);
    ot_buf_release(&a);
    ot_buf_release(&b);
    ot_manifest_release(&m);
}

static void test_format_small_output_buffer(void **state)
{
    (void)state;
    struct ot_manifest m;
    struct ot_buf out;
    struct ot_diag d = {0};
    build_base(&m);
    ot_buf_init(&out, 100);
    assert_int_equal(ot_manifest_format(&m, &out, &d), OT_ERR_LIMIT);
    assert_int_equal(out.len, 0);
    ot_buf_release(&out);
    ot_manifest_release(&m);
}

/* ---- device check ---------------------------------------------------------------------------- */

static void device_case(const char *device, const struct ot_kv *provides, size_t n, uint64_t min,
                        enum ot_err want, const char *msg)
{
    struct ot_manifest m;
    struct ot_diag d = {0};
    build_base(&m);
    m.security_version = 3;
    enum ot_err err = ot_manifest_check_device(&m, device, provides, n, min, &d);
    if (err != want || (msg && strcmp(d.msg, msg) != 0))
        fail_msg("got %s '%s', want %s '%s'", ot_err_name(err), d.msg, ot_err_name(want),
                 msg ? msg : "");
    ot_manifest_release(&m);
}

static void test_check_device(void **state)
{
    (void)state;
    struct ot_kv ok[] = {{(char *)"other", (char *)"1"},
                         {(char *)"bootloader.version", (char *)"2023.04"}};
    struct ot_kv old[] = {{(char *)"bootloader.version", (char *)"2022.10"}};
    struct ot_kv other[] = {{(char *)"rootfs.version", (char *)"2023.01"}};
    device_case("gw-3", ok, 2, 0, OT_OK, NULL);
    device_case("gw-2", ok, 2, 3, OT_OK, NULL); /* equal to the minimum is fine */
    device_case("gw-1", ok, 2, 0, OT_ERR_INCOMPATIBLE,
                "artifact is for device types gw-2, gw-3; this device is gw-1");
    device_case("gw-2", old, 1, 0, OT_ERR_INCOMPATIBLE,
                "depends on bootloader.version 2023.01|2023.04; device has 2022.10");
    device_case("gw-2", other, 1, 0, OT_ERR_INCOMPATIBLE,
                "depends on bootloader.version 2023.01|2023.04; device does not provide "
                "bootloader.version");
    device_case("gw-2", NULL, 0, 0, OT_ERR_INCOMPATIBLE, NULL);
    device_case("gw-2", ok, 2, 5, OT_ERR_ROLLBACK,
                "security version 3 is lower than the device's minimum 5");
    /* the device type is checked first, then dependencies, then the security version */
    device_case("gw-1", old, 1, 5, OT_ERR_INCOMPATIBLE, NULL);
    device_case("gw-2", old, 1, 5, OT_ERR_INCOMPATIBLE, NULL);
    device_case(NULL, ok, 2, 0, OT_ERR_INVALID, NULL);
}

static void test_check_device_no_depends(void **state)
{
    (void)state;
    struct ot_manifest m;
    build_base(&m);
    free(m.depends[0].key);
    for (size_t i = 0; i < m.depends[0].nvalues; i++)
        free(m.depends[0].values[i]);
    free(m.depends[0].values);
    m.ndepends = 0;
    assert_int_equal(ot_manifest_check_device(&m, "gw-2", NULL, 0, 7, NULL), OT_OK);
    assert_int_equal(ot_manifest_check_device(&m, "gw-2", NULL, 0, 8, NULL), OT_ERR_ROLLBACK);
    ot_manifest_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_canonical_bytes),
        cmocka_unit_test(test_parse_then_format_is_canonical),
        cmocka_unit_test(test_round_trip_plain),
        cmocka_unit_test(test_round_trip_minimal),
        cmocka_unit_test(test_round_trip_encrypted_delta_unicode),
        cmocka_unit_test(test_round_trip_limits),
        cmocka_unit_test(test_parse_accepts_uppercase_hex_and_escapes),
        cmocka_unit_test(test_parse_rules_top),
        cmocka_unit_test(test_parse_rules_payload),
        cmocka_unit_test(test_parse_rules_sizes),
        cmocka_unit_test(test_parse_rules_encryption),
        cmocka_unit_test(test_parse_raw),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_validate_rules),
        cmocka_unit_test(test_validate_document_size),
        cmocka_unit_test(test_builders_and_queries),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_format_small_output_buffer),
        cmocka_unit_test(test_check_device),
        cmocka_unit_test(test_check_device_no_depends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
