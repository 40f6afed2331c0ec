/* The device API messages (otter/wire.h): round trips of each message, canonical bytes, every
 * required field removed once, wrong types, every limit met and exceeded by one, hostile text, and
 * the rules an encoder enforces on what a caller built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/json.h"
#include "otter/manifest.h"
#include "otter/wire.h"

#define HA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HC "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HC_UPPER "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
#define RAW(s) s, sizeof(s) - 1 /* a literal as (bytes, length), NULs included */
#define PK_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" /* bytes 0x00..0x1f */

/* Valid documents, written by hand in a non-canonical order with single quotes (see jq). */
static const char auth_req_doc[] =
    "{'public_key':'" PK_B64 "','identity':{'serial':'SN 42','mac':'00:11:22:33:44:55'},"
    "'device_type':'gw-2','enrollment_token':'otr_abc'}";
static const char auth_accepted_doc[] =
    "{'status':'accepted','device_id':7,'token':'otd_secret','expires_in':3600}";
static const char auth_pending_doc[] = "{'status':'pending','device_id':7,'retry_after':60}";
static const char checkin_req_doc[] =
    "{'device_type':'gw-2','provides':{'rootfs.version':'1.2','bootloader.version':'2023.01'},"
    "'installed':{'rootfs':{'version':'1.2','sha256':'" HC "'},'app':{'version':'2.0 beta'}}}";
static const char checkin_none_doc[] = "{'action':'none','poll_interval':300,'poll_jitter':30}";
static const char checkin_install_doc[] =
    "{'action':'install','poll_interval':300,'poll_jitter':30,'deployment':{'id':12,"
    "'artifact':{'name':'gw-firmware','version':'4.2.0','size':123456,'sha256':'" HA "',"
    "'manifest':'{\\\"format\\\":1}\\n','signatures':'{\\\"signatures\\\":[]}\\n'},"
    "'download':['/api/device/v1/deployments/12/artifact','https://cdn.example.com/a?sig=x']}}";
static const char status_doc[] =
    "{'status':'downloading','progress':42,'message':'fetching','log':'line 1\\n\\tline 2\\n'}";
static const char inventory_doc[] =
    "{'attributes':{'os':'Debian 12','free_kb':'1234','old':null},'replace':false}";

/* ---- helpers --------------------------------------------------------------------------------- */

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

/* One message type behind a uniform interface, so the rules every decoder shares are tested on all
 * of them. */
struct codec {
    const char *name;
    size_t size, max;
    const char *doc;
    enum ot_err (*decode)(const uint8_t *, size_t, void *, struct ot_diag *);
    enum ot_err (*encode)(const void *, struct ot_buf *, struct ot_diag *);
    void (*release)(void *);
};

#define CODEC_FUNCS(name)                                                                          \
    static enum ot_err name##_dec(const uint8_t *b, size_t n, void *r, struct ot_diag *d)          \
    {                                                                                              \
        return ot_wire_##name##_decode(b, n, r, d);                                                \
    }                                                                                              \
    static enum ot_err name##_enc(const void *r, struct ot_buf *o, struct ot_diag *d)              \
    {                                                                                              \
        return ot_wire_##name##_encode(r, o, d);                                                   \
    }

CODEC_FUNCS(auth_req)
CODEC_FUNCS(auth_resp)
CODEC_FUNCS(checkin_req)
CODEC_FUNCS(checkin_resp)
CODEC_FUNCS(status_report)
CODEC_FUNCS(inventory)
static void auth_req_rel(void *r) { ot_wire_auth_req_release(r); }
static void auth_resp_rel(void *r) { memset(r, 0, sizeof(struct ot_wire_auth_resp)); }
static void checkin_req_rel(void *r) { ot_wire_checkin_req_release(r); }
static void checkin_resp_rel(void *r) { ot_wire_checkin_resp_release(r); }
static void status_report_rel(void *r) { ot_wire_status_report_release(r); }
static void inventory_rel(void *r) { ot_wire_inventory_release(r); }

#define CODEC(name, type, max, doc)                                                                \
    {#name, sizeof(struct type), max, doc, name##_dec, name##_enc, name##_rel}

static const struct codec AUTH_REQ = CODEC(auth_req, ot_wire_auth_req, OT_WIRE_BODY_MAX,
                                           auth_req_doc);
static const struct codec AUTH_RESP = CODEC(auth_resp, ot_wire_auth_resp, OT_WIRE_BODY_MAX,
                                            auth_accepted_doc);
static const struct codec CHECKIN_REQ = CODEC(checkin_req, ot_wire_checkin_req, OT_WIRE_BODY_MAX,
                                              checkin_req_doc);
static const struct codec CHECKIN_RESP = CODEC(checkin_resp, ot_wire_checkin_resp,
                                               OT_WIRE_CHECKIN_RESP_MAX, checkin_install_doc);
static const struct codec STATUS = CODEC(status_report, ot_wire_status_report, OT_WIRE_BODY_MAX,
                                         status_doc);
static const struct codec INVENTORY = CODEC(inventory, ot_wire_inventory, OT_WIRE_BODY_MAX,
                                            inventory_doc);
static const struct codec *const codecs[] = {&AUTH_REQ,     &AUTH_RESP, &CHECKIN_REQ,
                                             &CHECKIN_RESP, &STATUS,    &INVENTORY};

static void assert_auth_resp_equal(const struct ot_wire_auth_resp *a,
                                   const struct ot_wire_auth_resp *b)
{
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->device_id, b->device_id);
    assert_string_equal(a->token, b->token);
    assert_int_equal(a->expires_in, b->expires_in);
    assert_int_equal(a->retry_after, b->retry_after);
}

static void assert_zeroed(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(b[i], 0);
}

static void assert_printable(const char *s)
{
    assert_true(*s);
    for (; *s; s++)
        assert_true(*s >= 0x20 && *s < 0x7f);
}

/* Decodes raw bytes and expects err with needle in the message and the result zeroed. */
static void expect_raw(const struct codec *c, const void *buf, size_t len, enum ot_err err,
                       const char *needle)
{
    struct ot_diag d = {0};
    void *r = malloc(c->size);
    assert_non_null(r);
    memset(r, 0xa5, c->size); /* garbage: the decoder must zero it */
    enum ot_err got = c->decode(buf, len, r, &d);
    if (got != err || !strstr(d.msg, needle))
        print_error("%s: expected %s with '%s', got %s: %s\n", c->name, ot_err_name(err), needle,
                    ot_err_name(got), d.msg);
    assert_int_equal(got, err);
    assert_non_null(strstr(d.msg, needle));
    assert_printable(d.msg);
    assert_zeroed(r, c->size);
    c->release(r);
    free(r);
}

/* Same, on a single-quoted document. */
static void expect(const struct codec *c, const char *doc, enum ot_err err, const char *needle)
{
    char *text = jq(doc);
    expect_raw(c, text, strlen(text), err, needle);
    free(text);
}

/* doc (single-quoted) with the value at path ("a/b/c") replaced by value (single-quoted JSON
 * text), or removed when value is NULL; compact double-quoted text, caller frees. */
static char *mutate(const char *doc, const char *path, const char *value)
{
    char *text = jq(doc), *p = strdup(path), *slash, *key = p;
    json_error_t je;
    json_t *root = json_loads(text, 0, &je), *obj = root;
    assert_non_null(root);
    assert_non_null(p);
    while ((slash = strchr(key, '/'))) {
        *slash = '\0';
        obj = json_object_get(obj, key);
        assert_non_null(obj);
        key = slash + 1;
    }
    if (!value) {
        assert_int_equal(json_object_del(obj, key), 0);
    } else {
        char *v = jq(value);
        json_t *jv = json_loads(v, JSON_DECODE_ANY, &je);
        assert_non_null(jv);
        assert_int_equal(json_object_set_new(obj, key, jv), 0);
        free(v);
    }
    char *out = json_dumps(root, JSON_COMPACT);
    assert_non_null(out);
    json_decref(root);
    free(p);
    free(text);
    return out;
}

/* The document with one change, expected to fail. */
static void expect_mutated(const struct codec *c, const char *doc, const char *path,
                           const char *value, enum ot_err err, const char *needle)
{
    char *text = mutate(doc, path, value);
    expect_raw(c, text, strlen(text), err, needle);
    free(text);
}

/* The document with one change, expected to decode. */
static void accept_mutated(const struct codec *c, const char *doc, const char *path,
                           const char *value)
{
    char *text = mutate(doc, path, value);
    struct ot_diag d = {0};
    void *r = calloc(1, c->size);
    assert_non_null(r);
    enum ot_err err = c->decode((const uint8_t *)text, strlen(text), r, &d);
    if (err)
        print_error("%s: %s\n", c->name, d.msg);
    assert_int_equal(err, OT_OK);
    c->release(r);
    free(r);
    free(text);
}

/* decode(doc) then encode: the canonical bytes, as a C string (caller frees). */
static char *canonical(const struct codec *c, const char *doc)
{
    char *text = jq(doc);
    struct ot_diag d = {0};
    struct ot_buf out;
    void *r = calloc(1, c->size);
    assert_non_null(r);
    ot_buf_init(&out, c->max);
    enum ot_err err = c->decode((const uint8_t *)text, strlen(text), r, &d);
    if (!err)
        err = c->encode(r, &out, &d);
    if (err)
        print_error("%s: %s\n", c->name, d.msg);
    assert_int_equal(err, OT_OK);
    char *s = strdup(ot_buf_str(&out));
    assert_non_null(s);
    ot_buf_release(&out);
    c->release(r);
    free(r);
    free(text);
    return s;
}

static void assert_canonical(const struct codec *c, const char *doc, const char *expected)
{
    char *got = canonical(c, doc), *want = jq(expected);
    assert_string_equal(got, want);
    /* The canonical form is a fixed point. */
    char *again = canonical(c, got);
    assert_string_equal(again, want);
    free(again);
    free(want);
    free(got);
}

/* Encodes r twice (bytes identical), decodes, hands back the decoded struct in back. */
static void encode_decode(const struct codec *c, const void *r, void *back)
{
    struct ot_buf a, b;
    struct ot_diag d = {0};
    ot_buf_init(&a, c->max);
    ot_buf_init(&b, c->max);
    enum ot_err err = c->encode(r, &a, &d);
    if (err)
        print_error("%s: %s\n", c->name, d.msg);
    assert_int_equal(err, OT_OK);
    assert_int_equal(c->encode(r, &b, &d), OT_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(a.data[a.len - 1], '\n');
    err = c->decode(a.data, a.len, back, &d);
    if (err)
        print_error("%s: %s\n", c->name, d.msg);
    assert_int_equal(err, OT_OK);
    ot_buf_release(&a);
    ot_buf_release(&b);
}

static void expect_encode(const struct codec *c, const void *r, enum ot_err err,
                          const char *needle)
{
    struct ot_buf out;
    struct ot_diag d = {0};
    ot_buf_init(&out, c->max);
    enum ot_err got = c->encode(r, &out, &d);
    if (got != err || !strstr(d.msg, needle))
        print_error("%s: expected %s with '%s', got %s: %s\n", c->name, ot_err_name(err), needle,
                    ot_err_name(got), d.msg);
    assert_int_equal(got, err);
    assert_non_null(strstr(d.msg, needle));
    assert_int_equal(out.len, 0);
    ot_buf_release(&out);
}

/* n pairs (key, value; value may be NULL) as an owned kv vector. */
static struct ot_wire_kv *kvs(size_t n, const char *const *pairs)
{
    struct ot_wire_kv *kv = calloc(n ? n : 1, sizeof(*kv));
    assert_non_null(kv);
    for (size_t i = 0; i < n; i++) {
        kv[i].key = strdup(pairs[2 * i]);
        kv[i].value = pairs[2 * i + 1] ? strdup(pairs[2 * i + 1]) : NULL;
        assert_non_null(kv[i].key);
    }
    return kv;
}

/* A string of n copies of c (caller frees). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A single-quoted JSON object text with n entries "k<i>": value (caller frees). */
static char *object_of(size_t n, const char *value)
{
    struct ot_buf b;
    ot_buf_init(&b, SIZE_MAX);
    assert_int_equal(ot_buf_append_str(&b, "{"), OT_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ot_buf_printf(&b, "%s'k%zu':%s", i ? "," : "", i, value), OT_OK);
    assert_int_equal(ot_buf_append_str(&b, "}"), OT_OK);
    uint8_t *data;
    size_t len;
    assert_int_equal(ot_buf_steal(&b, &data, &len), OT_OK);
    return (char *)data;
}

static void expect_too_many(const struct codec *c, const char *path, size_t max, const char *value)
{
    char *ok = object_of(max, value), *over = object_of(max + 1, value);
    accept_mutated(c, c->doc, path, ok);
    expect_mutated(c, c->doc, path, over, OT_ERR_LIMIT, "more than");
    free(ok);
    free(over);
}

/* ---- builders -------------------------------------------------------------------------------- */

static void build_auth_req(struct ot_wire_auth_req *r)
{
    static const char *const id[] = {"mac", "00:11:22:33:44:55", "serial", "SN 42"};
    *r = (struct ot_wire_auth_req){.identity = kvs(2, id), .nidentity = 2};
    for (size_t i = 0; i < OT_SIGN_PK_LEN; i++)
        r->public_key[i] = (uint8_t)i;
    memcpy(r->device_type, "gw-2", 5);
    memcpy(r->enrollment_token, "otr_abc", 8);
}

static void set_sha(uint8_t *out, uint8_t seed)
{
    for (size_t i = 0; i < OT_SHA256_LEN; i++)
        out[i] = (uint8_t)(seed + i);
}

static void build_checkin_req(struct ot_wire_checkin_req *r)
{
    static const char *const prov[] = {"bootloader.version", "2023.01", "rootfs.version", "1.2"};
    *r = (struct ot_wire_checkin_req){.provides = kvs(2, prov), .nprovides = 2};
    memcpy(r->device_type, "gw-2", 5);
    r->installed = calloc(2, sizeof(*r->installed));
    assert_non_null(r->installed);
    r->ninstalled = 2;
    r->installed[0] = (struct ot_wire_installed){strdup("app"), strdup("2.0 beta"), false, {0}};
    r->installed[1] = (struct ot_wire_installed){strdup("rootfs"), strdup("1.2"), true, {0}};
    set_sha(r->installed[1].sha256, 0x10);
}

static void build_install(struct ot_wire_checkin_resp *r)
{
    *r = (struct ot_wire_checkin_resp){.action = OT_WIRE_ACTION_INSTALL, .poll_interval = 300,
                                       .poll_jitter = 30, .deployment_id = 12,
                                       .artifact_size = 123456};
    r->artifact_name = strdup("gw-firmware");
    r->artifact_version = strdup("4.2.0");
    set_sha(r->artifact_sha256, 0x80);
    r->manifest = strdup("{\n  \"format\": 1\n}\n");
    r->signatures = strdup("{\"signatures\":[]}\n");
    r->download = calloc(2, sizeof(char *));
    assert_non_null(r->download);
    r->download[0] = strdup("/api/device/v1/deployments/12/artifact");
    r->download[1] = strdup("https://cdn.example.com/a?sig=x&exp=1");
    r->ndownload = 2;
}

static void assert_kvs_equal(const struct ot_wire_kv *a, size_t na, const struct ot_wire_kv *b,
                             size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(a[i].key, b[i].key);
        if (a[i].value)
            assert_string_equal(a[i].value, b[i].value);
        else
            assert_null(b[i].value);
    }
}

/* ---- names and text rules -------------------------------------------------------------------- */

static void test_status_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        NULL,      "pending", "downloading", "installing",  "rebooting", "verifying",
        "success", "failure", "rolled_back", "cancelled", "skipped",   "waiting",
    };
    _Static_assert(sizeof(names) / sizeof(names[0]) == OT_WIRE_STATUS__MAX, "a status untested");
    for (int s = OT_WIRE_PENDING; s < OT_WIRE_STATUS__MAX; s++) {
        enum ot_wire_status back = 0;
        assert_string_equal(ot_wire_status_name((enum ot_wire_status)s), names[s]);
        assert_int_equal(ot_wire_status_parse(names[s], &back), OT_OK);
        assert_int_equal(back, s);
    }
    assert_null(ot_wire_status_name(0));
    assert_null(ot_wire_status_name(OT_WIRE_STATUS__MAX));
    enum ot_wire_status s = OT_WIRE_SUCCESS;
    assert_int_equal(ot_wire_status_parse("Pending", &s), OT_ERR_FORMAT);
    assert_int_equal(ot_wire_status_parse("", &s), OT_ERR_FORMAT);
    assert_int_equal(ot_wire_status_parse(NULL, &s), OT_ERR_FORMAT);
    assert_int_equal(s, OT_WIRE_SUCCESS);
    /* Final: the deployment is over for this device. */
    assert_false(ot_wire_status_is_final(OT_WIRE_PENDING));
    assert_false(ot_wire_status_is_final(OT_WIRE_DOWNLOADING));
    assert_false(ot_wire_status_is_final(OT_WIRE_INSTALLING));
    assert_false(ot_wire_status_is_final(OT_WIRE_REBOOTING));
    assert_false(ot_wire_status_is_final(OT_WIRE_VERIFYING));
    assert_true(ot_wire_status_is_final(OT_WIRE_SUCCESS));
    assert_true(ot_wire_status_is_final(OT_WIRE_FAILURE));
    assert_true(ot_wire_status_is_final(OT_WIRE_ROLLED_BACK));
    assert_true(ot_wire_status_is_final(OT_WIRE_CANCELLED));
    assert_true(ot_wire_status_is_final(OT_WIRE_SKIPPED));
    assert_false(ot_wire_status_is_final(OT_WIRE_WAITING));
}

static void test_key_rules(void **state)
{
    (void)state;
    char *k64 = repeat('k', 64), *k65 = repeat('k', 65);
    assert_true(ot_wire_key_is_valid("mac"));
    assert_true(ot_wire_key_is_valid("A-z_0.9:x"));
    assert_true(ot_wire_key_is_valid(k64));
    assert_false(ot_wire_key_is_valid(k65));
    assert_false(ot_wire_key_is_valid(""));
    assert_false(ot_wire_key_is_valid(NULL));
    assert_false(ot_wire_key_is_valid("a b"));
    assert_false(ot_wire_key_is_valid("a/b"));
    assert_false(ot_wire_key_is_valid("a\nb"));
    assert_false(ot_wire_key_is_valid("caf\xc3\xa9"));
    free(k64);
    free(k65);
}

static void test_value_rules(void **state)
{
    (void)state;
    char *v1024 = repeat('v', 1024), *v1025 = repeat('v', 1025);
    assert_true(ot_wire_value_is_valid(""));
    assert_true(ot_wire_value_is_valid("Debian GNU/Linux 12 (bookworm)"));
    assert_true(ot_wire_value_is_valid("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\xa6\xa6"));
    assert_true(ot_wire_value_is_valid(v1024));
    assert_false(ot_wire_value_is_valid(v1025));
    assert_false(ot_wire_value_is_valid(NULL));
    assert_false(ot_wire_value_is_valid("a\nb"));     /* C0 */
    assert_false(ot_wire_value_is_valid("a\tb"));
    assert_false(ot_wire_value_is_valid("\x1b[31m"));
    assert_false(ot_wire_value_is_valid("a\x7f"));    /* DEL */
    assert_false(ot_wire_value_is_valid("a\xc2\x85")); /* C1 (NEL) */
    assert_false(ot_wire_value_is_valid("\xff"));     /* not UTF-8 */
    assert_false(ot_wire_value_is_valid("\xc0\xaf")); /* overlong */
    assert_false(ot_wire_value_is_valid("\xed\xa0\x80")); /* surrogate */
    assert_false(ot_wire_value_is_valid("\xe6\x97")); /* truncated sequence */
    free(v1024);
    free(v1025);
}

/* ---- auth request ---------------------------------------------------------------------------- */

static void test_auth_req_round_trip(void **state)
{
    (void)state;
    struct ot_wire_auth_req r, back;
    build_auth_req(&r);
    encode_decode(&AUTH_REQ, &r, &back);
    assert_kvs_equal(r.identity, r.nidentity, back.identity, back.nidentity);
    assert_memory_equal(r.public_key, back.public_key, OT_SIGN_PK_LEN);
    assert_string_equal(r.device_type, back.device_type);
    assert_string_equal(r.enrollment_token, back.enrollment_token);
    ot_wire_auth_req_release(&back);
    ot_wire_auth_req_release(&r);
    assert_zeroed(&r, sizeof(r));
    assert_canonical(&AUTH_REQ, auth_req_doc,
                     "{'device_type':'gw-2','enrollment_token':'otr_abc','identity':{'mac':"
                     "'00:11:22:33:44:55','serial':'SN 42'},'public_key':'" PK_B64 "'}\n");
}

/* No enrollment token: omitted; an unknown device type: "". */
static void test_auth_req_minimal(void **state)
{
    (void)state;
    assert_canonical(&AUTH_REQ,
                     "{'identity':{'mac':'m'},'public_key':'" PK_B64 "','device_type':''}",
                     "{'device_type':'','identity':{'mac':'m'},'public_key':'" PK_B64 "'}\n");
    assert_canonical(&AUTH_REQ,
                     "{'identity':{'mac':'m'},'public_key':'" PK_B64 "','device_type':'',"
                     "'enrollment_token':''}",
                     "{'device_type':'','identity':{'mac':'m'},'public_key':'" PK_B64 "'}\n");
    /* Decoded maps come out sorted by key. */
    char *text = jq(auth_req_doc);
    struct ot_wire_auth_req r;
    assert_int_equal(ot_wire_auth_req_decode((const uint8_t *)text, strlen(text), &r, NULL), OT_OK);
    assert_int_equal(r.nidentity, 2);
    assert_string_equal(r.identity[0].key, "mac");
    assert_string_equal(r.identity[1].key, "serial");
    assert_string_equal(r.identity[1].value, "SN 42");
    ot_wire_auth_req_release(&r);
    free(text);
}

static void test_auth_req_missing_fields(void **state)
{
    (void)state;
    static const char *const fields[] = {"identity", "public_key", "device_type"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(fields); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "auth request: missing field '%s'", fields[i]);
        expect_mutated(&AUTH_REQ, auth_req_doc, fields[i], NULL, OT_ERR_FORMAT, needle);
    }
    accept_mutated(&AUTH_REQ, auth_req_doc, "enrollment_token", NULL);
}

static void test_auth_req_wrong_types(void **state)
{
    (void)state;
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", "['mac']", OT_ERR_FORMAT,
                   "field 'identity' must be an object");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", "42", OT_ERR_FORMAT,
                   "identity['mac'] must be a string");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", "null", OT_ERR_FORMAT,
                   "identity['mac'] must be a string");
    expect_mutated(&AUTH_REQ, auth_req_doc, "public_key", "7", OT_ERR_FORMAT,
                   "field 'public_key' must be a string");
    expect_mutated(&AUTH_REQ, auth_req_doc, "device_type", "true", OT_ERR_FORMAT,
                   "field 'device_type' must be a string");
    expect_mutated(&AUTH_REQ, auth_req_doc, "enrollment_token", "null", OT_ERR_FORMAT,
                   "field 'enrollment_token' must be a string");
}

static void test_auth_req_public_key(void **state)
{
    (void)state;
    /* 31 and 33 bytes, a bad character, no padding, hex. */
    static const char *const bad[] = {
        "'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=='",
        "'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ=='",
        "'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH!8='",
        "'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8'",
        "'" HA "'",
        "''",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++)
        expect_mutated(&AUTH_REQ, auth_req_doc, "public_key", bad[i], OT_ERR_FORMAT,
                       "field 'public_key' must be base64 of 32 bytes");
}

static void test_auth_req_identity_count(void **state)
{
    (void)state;
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", "{}", OT_ERR_FORMAT,
                   "field 'identity' must have 1..16 entries, not 0");
    expect_too_many(&AUTH_REQ, "identity", OT_WIRE_IDENTITY_MAX, "'v'");
    /* The encoder refuses what the decoder would. */
    struct ot_wire_auth_req r;
    build_auth_req(&r);
    static const char *const many[] = {"a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6",
                                       "g", "7", "h", "8", "i", "9", "j", "0", "k", "1", "l", "2",
                                       "m", "3", "n", "4", "o", "5", "p", "6", "q", "7"};
    struct ot_wire_auth_req big = r;
    big.identity = kvs(17, many);
    big.nidentity = 17;
    expect_encode(&AUTH_REQ, &big, OT_ERR_INVALID, "must have 1..16 entries, not 17");
    big.nidentity = 16;
    struct ot_buf out;
    ot_buf_init(&out, OT_WIRE_BODY_MAX);
    assert_int_equal(ot_wire_auth_req_encode(&big, &out, NULL), OT_OK);
    ot_buf_release(&out);
    big.nidentity = 17;
    ot_wire_auth_req_release(&big);
    size_t n = r.nidentity;
    r.nidentity = 0;
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "must have 1..16 entries, not 0");
    r.nidentity = n;
    ot_wire_auth_req_release(&r);
}

static void test_bad_keys(void **state)
{
    (void)state;
    char *k64 = repeat('k', 64), *k65 = repeat('k', 65);
    char ok[128], over[128];
    snprintf(ok, sizeof(ok), "{'%s':'v'}", k64);
    snprintf(over, sizeof(over), "{'%s':'v'}", k65);
    accept_mutated(&AUTH_REQ, auth_req_doc, "identity", ok);
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", over, OT_ERR_FORMAT,
                   "auth request: identity: key 'kkkk");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", "{'a b':'v'}", OT_ERR_FORMAT,
                   "identity: key 'a b' must be 1..64 of A-Z a-z 0-9 _ . : -");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", "{'':'v'}", OT_ERR_FORMAT,
                   "identity: key '' must be");
    /* A hostile key is quoted without its control characters. */
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity", "{'\\u001b[2J':'v'}", OT_ERR_FORMAT,
                   "key '?[2J' must be");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "provides", "{'a b':'v'}", OT_ERR_FORMAT,
                   "checkin request: provides: key 'a b'");
    expect_mutated(&INVENTORY, inventory_doc, "attributes", over, OT_ERR_FORMAT,
                   "inventory: attributes: key 'kkkk");
    /* And on encode. */
    struct ot_wire_auth_req r;
    build_auth_req(&r);
    free(r.identity[0].key);
    r.identity[0].key = strdup("a b");
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "identity: key 'a b' must be");
    free(r.identity[0].key);
    r.identity[0].key = strdup("serial"); /* a duplicate of [1] */
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "identity: duplicate key 'serial'");
    ot_wire_auth_req_release(&r);
    free(k64);
    free(k65);
}

static void test_control_characters(void **state)
{
    (void)state;
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", "'a\\u0001b'", OT_ERR_FORMAT,
                   "identity['mac'] must be at most 1024 bytes of printable UTF-8");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", "'a\\u007f'", OT_ERR_FORMAT,
                   "identity['mac'] must be");
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", "'a\\u0085'", OT_ERR_FORMAT,
                   "identity['mac'] must be");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "provides/rootfs.version", "'1\\n2'",
                   OT_ERR_FORMAT, "provides['rootfs.version'] must be");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/app/version", "'1\\t2'",
                   OT_ERR_FORMAT, "installed['app']: field 'version' contains control");
    expect_mutated(&INVENTORY, inventory_doc, "attributes/os", "'\\u001b[31mred'", OT_ERR_FORMAT,
                   "attributes['os'] must be");
    expect_mutated(&AUTH_REQ, auth_req_doc, "device_type", "'gw\\r2'", OT_ERR_FORMAT,
                   "field 'device_type' contains control characters");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "token", "'otd\\r\\nX-Evil: 1'", OT_ERR_FORMAT,
                   "field 'token' contains control characters");
    /* Encoders refuse them too (and invalid UTF-8, which jansson could not even represent). */
    struct ot_wire_auth_req r;
    build_auth_req(&r);
    free(r.identity[1].value);
    r.identity[1].value = strdup("two\nlines");
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "identity['serial'] must be");
    free(r.identity[1].value);
    r.identity[1].value = strdup("\xff\xfe");
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "identity['serial'] must be");
    ot_wire_auth_req_release(&r);
}

static void test_too_long_strings(void **state)
{
    (void)state;
    char *v = repeat('v', 1025), *t = repeat('t', 128), *dt = repeat('d', 64);
    char buf[1200];
    snprintf(buf, sizeof(buf), "'%s'", v);
    expect_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", buf, OT_ERR_FORMAT,
                   "identity['mac'] is longer than 1024 bytes");
    buf[1025] = '\'', buf[1026] = '\0'; /* 1024 bytes: fine */
    accept_mutated(&AUTH_REQ, auth_req_doc, "identity/mac", buf);
    snprintf(buf, sizeof(buf), "'%s'", t);
    expect_mutated(&AUTH_REQ, auth_req_doc, "enrollment_token", buf, OT_ERR_FORMAT,
                   "field 'enrollment_token' is longer than 127 bytes");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "token", buf, OT_ERR_FORMAT,
                   "field 'token' is longer than 127 bytes");
    buf[128] = '\'', buf[129] = '\0';
    accept_mutated(&AUTH_RESP, auth_accepted_doc, "token", buf);
    snprintf(buf, sizeof(buf), "'%s'", dt);
    expect_mutated(&AUTH_REQ, auth_req_doc, "device_type", buf, OT_ERR_FORMAT,
                   "field 'device_type' is longer than 63 bytes");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "device_type", buf, OT_ERR_FORMAT,
                   "field 'device_type' is longer than 63 bytes");
    buf[64] = '\'', buf[65] = '\0';
    accept_mutated(&CHECKIN_REQ, checkin_req_doc, "device_type", buf);
    free(v);
    free(t);
    free(dt);
}

static void test_auth_req_text_rules(void **state)
{
    (void)state;
    expect_mutated(&AUTH_REQ, auth_req_doc, "device_type", "'../etc'", OT_ERR_FORMAT,
                   "field 'device_type' must be a safe name");
    expect_mutated(&AUTH_REQ, auth_req_doc, "device_type", "'.hidden'", OT_ERR_FORMAT,
                   "field 'device_type' must be a safe name");
    expect_mutated(&AUTH_REQ, auth_req_doc, "enrollment_token", "'otr abc'", OT_ERR_FORMAT,
                   "field 'enrollment_token' must be 1..127 printable ASCII characters");
    expect_mutated(&AUTH_REQ, auth_req_doc, "enrollment_token", "'otr_\\u00e9'", OT_ERR_FORMAT,
                   "field 'enrollment_token' must be");
    /* A char[] field that is not terminated. */
    struct ot_wire_auth_req r;
    build_auth_req(&r);
    memset(r.device_type, 'x', sizeof(r.device_type));
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID,
                  "field 'device_type' is not terminated within 64 bytes");
    memcpy(r.device_type, "gw 2", 5);
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "field 'device_type' must be a safe name");
    memcpy(r.device_type, "gw-2", 5);
    memcpy(r.enrollment_token, "a\nb", 4);
    expect_encode(&AUTH_REQ, &r, OT_ERR_INVALID, "field 'enrollment_token' must be");
    ot_wire_auth_req_release(&r);
}

static void test_identity_json(void **state)
{
    (void)state;
    struct ot_wire_auth_req r;
    char *s = NULL;
    build_auth_req(&r);
    assert_int_equal(ot_wire_identity_json(&r, &s), OT_OK);
    assert_string_equal(s, "{\"mac\":\"00:11:22:33:44:55\",\"serial\":\"SN 42\"}");
    free(s);
    s = NULL;
    free(r.identity[0].key);
    r.identity[0].key = strdup("bad key");
    assert_int_equal(ot_wire_identity_json(&r, &s), OT_ERR_INVALID);
    assert_null(s);
    ot_wire_auth_req_release(&r);
}

/* ---- auth response --------------------------------------------------------------------------- */

static void test_auth_resp_round_trip(void **state)
{
    (void)state;
    struct ot_wire_auth_resp acc = {.status = OT_WIRE_AUTH_ACCEPTED, .device_id = 7,
                                    .token = "otd_secret", .expires_in = 3600};
    struct ot_wire_auth_resp pend = {.status = OT_WIRE_AUTH_PENDING, .device_id = INT64_MAX,
                                     .retry_after = OT_WIRE_POLL_MAX};
    struct ot_wire_auth_resp back;
    encode_decode(&AUTH_RESP, &acc, &back);
    assert_auth_resp_equal(&acc, &back);
    encode_decode(&AUTH_RESP, &pend, &back);
    assert_auth_resp_equal(&pend, &back);
    assert_canonical(&AUTH_RESP, auth_accepted_doc,
                     "{'device_id':7,'expires_in':3600,'status':'accepted',"
                     "'token':'otd_secret'}\n");
    assert_canonical(&AUTH_RESP, auth_pending_doc,
                     "{'device_id':7,'retry_after':60,'status':'pending'}\n");
    /* The other status's fields are not read. */
    assert_canonical(&AUTH_RESP,
                     "{'status':'pending','device_id':7,'retry_after':60,'token':7,"
                     "'expires_in':'x'}",
                     "{'device_id':7,'retry_after':60,'status':'pending'}\n");
}

static void test_auth_resp_rules(void **state)
{
    (void)state;
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "status", NULL, OT_ERR_FORMAT,
                   "auth response: missing field 'status'");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "device_id", NULL, OT_ERR_FORMAT,
                   "auth response: missing field 'device_id'");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "token", NULL, OT_ERR_FORMAT,
                   "auth response: missing field 'token'");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "expires_in", NULL, OT_ERR_FORMAT,
                   "auth response: missing field 'expires_in'");
    expect_mutated(&AUTH_RESP, auth_pending_doc, "retry_after", NULL, OT_ERR_FORMAT,
                   "auth response: missing field 'retry_after'");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "status", "'rejected'", OT_ERR_FORMAT,
                   "field 'status' must be one of 'accepted', 'pending'");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "device_id", "0", OT_ERR_FORMAT,
                   "field 'device_id' must be a positive integer");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "device_id", "-7", OT_ERR_FORMAT,
                   "field 'device_id' must be a non-negative integer");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "device_id", "'7'", OT_ERR_FORMAT,
                   "field 'device_id' must be a non-negative integer");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "expires_in", "0", OT_ERR_FORMAT,
                   "field 'expires_in' must be 1..4294967295, not 0");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "expires_in", "4294967296", OT_ERR_FORMAT,
                   "field 'expires_in' is larger than 4294967295");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "token", "''", OT_ERR_FORMAT,
                   "field 'token' must be 1..127 printable ASCII characters without blanks");
    expect_mutated(&AUTH_RESP, auth_accepted_doc, "token", "'a b'", OT_ERR_FORMAT,
                   "field 'token' must be");
    expect_mutated(&AUTH_RESP, auth_pending_doc, "retry_after", "0", OT_ERR_FORMAT,
                   "field 'retry_after' must be 1..604800, not 0");
    expect_mutated(&AUTH_RESP, auth_pending_doc, "retry_after", "604801", OT_ERR_FORMAT,
                   "field 'retry_after' is larger than 604800");
    /* Encoding refuses the fields of the other status and an unknown status. */
    struct ot_wire_auth_resp r = {.status = OT_WIRE_AUTH_ACCEPTED, .device_id = 7,
                                  .token = "otd_x", .expires_in = 60, .retry_after = 5};
    expect_encode(&AUTH_RESP, &r, OT_ERR_INVALID, "status 'accepted' has no field 'retry_after'");
    r = (struct ot_wire_auth_resp){.status = OT_WIRE_AUTH_PENDING, .device_id = 7,
                                   .token = "otd_x", .retry_after = 5};
    expect_encode(&AUTH_RESP, &r, OT_ERR_INVALID, "status 'pending' has no field 'token'");
    r = (struct ot_wire_auth_resp){.status = 0, .device_id = 7, .retry_after = 5};
    expect_encode(&AUTH_RESP, &r, OT_ERR_INVALID, "field 'status' must be");
    r = (struct ot_wire_auth_resp){.status = OT_WIRE_AUTH_PENDING, .retry_after = 5};
    expect_encode(&AUTH_RESP, &r, OT_ERR_INVALID, "field 'device_id' must be a positive integer");
}

/* ---- checkin request ------------------------------------------------------------------------- */

static void test_checkin_req_round_trip(void **state)
{
    (void)state;
    struct ot_wire_checkin_req r, back;
    build_checkin_req(&r);
    encode_decode(&CHECKIN_REQ, &r, &back);
    assert_string_equal(r.device_type, back.device_type);
    assert_int_equal(r.ninstalled, back.ninstalled);
    for (size_t i = 0; i < r.ninstalled; i++) {
        assert_string_equal(r.installed[i].name, back.installed[i].name);
        assert_string_equal(r.installed[i].version, back.installed[i].version);
        assert_int_equal(r.installed[i].has_sha256, back.installed[i].has_sha256);
        assert_memory_equal(r.installed[i].sha256, back.installed[i].sha256, OT_SHA256_LEN);
    }
    assert_kvs_equal(r.provides, r.nprovides, back.provides, back.nprovides);
    ot_wire_checkin_req_release(&back);
    ot_wire_checkin_req_release(&r);
    /* Upper-case hex is read, lower-case written; maps sorted. */
    char *doc = mutate(checkin_req_doc, "installed/rootfs/sha256", "'" HC_UPPER "'");
    assert_canonical(&CHECKIN_REQ, doc,
                     "{'device_type':'gw-2','installed':{'app':{'version':'2.0 beta'},'rootfs':{"
                     "'sha256':'" HC "','version':'1.2'}},'provides':{'bootloader.version':"
                     "'2023.01','rootfs.version':'1.2'}}\n");
    free(doc);
}

/* Empty maps are written as {} (and required when decoding). */
static void test_checkin_req_empty(void **state)
{
    (void)state;
    struct ot_wire_checkin_req r = {.device_type = "gw-2"}, back;
    struct ot_buf out;
    ot_buf_init(&out, OT_WIRE_BODY_MAX);
    assert_int_equal(ot_wire_checkin_req_encode(&r, &out, NULL), OT_OK);
    assert_string_equal(ot_buf_str(&out),
                        "{\"device_type\":\"gw-2\",\"installed\":{},\"provides\":{}}\n");
    assert_int_equal(ot_wire_checkin_req_decode(out.data, out.len, &back, NULL), OT_OK);
    assert_int_equal(back.ninstalled, 0);
    assert_int_equal(back.nprovides, 0);
    ot_wire_checkin_req_release(&back);
    ot_buf_release(&out);
    char *s = NULL;
    assert_int_equal(ot_wire_installed_json(&r, &s), OT_OK);
    assert_string_equal(s, "{}");
    free(s);
}

static void test_checkin_req_missing_fields(void **state)
{
    (void)state;
    static const struct {
        const char *path, *needle;
    } cases[] = {
        {"device_type", "checkin request: missing field 'device_type'"},
        {"installed", "checkin request: missing field 'installed'"},
        {"provides", "checkin request: missing field 'provides'"},
        {"installed/app/version", "checkin request: installed['app']: missing field 'version'"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++)
        expect_mutated(&CHECKIN_REQ, checkin_req_doc, cases[i].path, NULL, OT_ERR_FORMAT,
                       cases[i].needle);
    accept_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/rootfs/sha256", NULL);
}

static void test_checkin_req_rules(void **state)
{
    (void)state;
    char *v256 = repeat('v', 256), buf[300];
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "device_type", "''", OT_ERR_FORMAT,
                   "field 'device_type' must be a safe name");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed", "{'../etc':{'version':'1'}}",
                   OT_ERR_FORMAT, "installed: name '../etc' must be a safe name");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/app", "'2.0'", OT_ERR_FORMAT,
                   "installed['app']: not a JSON object");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/app/version", "''", OT_ERR_FORMAT,
                   "installed['app']: field 'version' must be 1..255 bytes");
    snprintf(buf, sizeof(buf), "'%s'", v256);
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/app/version", buf, OT_ERR_FORMAT,
                   "field 'version' is longer than 255 bytes");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/rootfs/sha256", "'" HA "0'",
                   OT_ERR_FORMAT, "field 'sha256' must be 64 hex digits");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/rootfs/sha256",
                   "'" "zz" HA "'", OT_ERR_FORMAT, "field 'sha256' must be 64 hex digits");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "installed/rootfs/sha256", "null",
                   OT_ERR_FORMAT, "field 'sha256' must be a string");
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "provides", "[]", OT_ERR_FORMAT,
                   "field 'provides' must be an object");
    expect_too_many(&CHECKIN_REQ, "installed", OT_WIRE_LIST_MAX, "{'version':'1'}");
    expect_too_many(&CHECKIN_REQ, "provides", OT_WIRE_LIST_MAX, "''");
    free(v256);

    struct ot_wire_checkin_req r;
    build_checkin_req(&r);
    free(r.installed[0].name);
    r.installed[0].name = strdup("rootfs");
    expect_encode(&CHECKIN_REQ, &r, OT_ERR_INVALID, "installed: duplicate name 'rootfs'");
    free(r.installed[0].name);
    r.installed[0].name = NULL;
    expect_encode(&CHECKIN_REQ, &r, OT_ERR_INVALID, "installed: name '' must be a safe name");
    r.installed[0].name = strdup("app");
    free(r.installed[0].version);
    r.installed[0].version = NULL;
    expect_encode(&CHECKIN_REQ, &r, OT_ERR_INVALID, "installed['app']: field 'version' must be");
    char *s = NULL;
    assert_int_equal(ot_wire_installed_json(&r, &s), OT_ERR_INVALID);
    assert_null(s);
    r.device_type[0] = '\0';
    expect_encode(&CHECKIN_REQ, &r, OT_ERR_INVALID, "field 'device_type' must be a safe name");
    ot_wire_checkin_req_release(&r);
}

static void test_installed_json(void **state)
{
    (void)state;
    struct ot_wire_checkin_req r;
    char *s = NULL;
    build_checkin_req(&r);
    assert_int_equal(ot_wire_installed_json(&r, &s), OT_OK);
    assert_string_equal(s, "{\"app\":{\"version\":\"2.0 beta\"},\"rootfs\":{\"sha256\":"
                           "\"101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f\","
                           "\"version\":\"1.2\"}}");
    free(s);
    ot_wire_checkin_req_release(&r);
}

/* ---- checkin response ------------------------------------------------------------------------ */

static void assert_checkin_resp_equal(const struct ot_wire_checkin_resp *a,
                                      const struct ot_wire_checkin_resp *b)
{
    assert_int_equal(a->action, b->action);
    assert_int_equal(a->poll_interval, b->poll_interval);
    assert_int_equal(a->poll_jitter, b->poll_jitter);
    assert_int_equal(a->deployment_id, b->deployment_id);
    if (a->action == OT_WIRE_ACTION_NONE) {
        assert_null(b->artifact_name);
        assert_null(b->manifest);
        assert_null(b->download);
        return;
    }
    assert_string_equal(a->artifact_name, b->artifact_name);
    assert_string_equal(a->artifact_version, b->artifact_version);
    assert_int_equal(a->artifact_size, b->artifact_size);
    assert_memory_equal(a->artifact_sha256, b->artifact_sha256, OT_SHA256_LEN);
    assert_string_equal(a->manifest, b->manifest);
    assert_string_equal(a->signatures, b->signatures);
    assert_int_equal(a->ndownload, b->ndownload);
    for (size_t i = 0; i < a->ndownload; i++)
        assert_string_equal(a->download[i], b->download[i]);
}

static void test_checkin_resp_round_trip(void **state)
{
    (void)state;
    struct ot_wire_checkin_resp none = {.action = OT_WIRE_ACTION_NONE, .poll_interval = 1,
                                        .poll_jitter = 1};
    struct ot_wire_checkin_resp install, back;
    encode_decode(&CHECKIN_RESP, &none, &back);
    assert_checkin_resp_equal(&none, &back);
    ot_wire_checkin_resp_release(&back);
    build_install(&install);
    encode_decode(&CHECKIN_RESP, &install, &back);
    assert_checkin_resp_equal(&install, &back);
    ot_wire_checkin_resp_release(&back);
    ot_wire_checkin_resp_release(&install);
    assert_zeroed(&install, sizeof(install));
    assert_canonical(&CHECKIN_RESP, checkin_none_doc,
                     "{'action':'none','poll_interval':300,'poll_jitter':30}\n");
    assert_canonical(&CHECKIN_RESP, checkin_install_doc,
                     "{'action':'install','deployment':{'artifact':{'manifest':"
                     "'{\\\"format\\\":1}\\n','name':'gw-firmware','sha256':'" HA "',"
                     "'signatures':'{\\\"signatures\\\":[]}\\n','size':123456,'version':'4.2.0'},"
                     "'download':['/api/device/v1/deployments/12/artifact',"
                     "'https://cdn.example.com/a?sig=x'],'id':12},'poll_interval':300,"
                     "'poll_jitter':30}\n");
}

static void test_checkin_resp_missing_fields(void **state)
{
    (void)state;
    static const struct {
        const char *path, *needle;
    } cases[] = {
        {"action", "checkin response: missing field 'action'"},
        {"poll_interval", "checkin response: missing field 'poll_interval'"},
        {"poll_jitter", "checkin response: missing field 'poll_jitter'"},
        {"deployment", "checkin response: missing field 'deployment'"},
        {"deployment/id", "checkin response: deployment: missing field 'id'"},
        {"deployment/artifact", "checkin response: deployment: missing field 'artifact'"},
        {"deployment/download", "checkin response: deployment: missing field 'download'"},
        {"deployment/artifact/name", "deployment: artifact: missing field 'name'"},
        {"deployment/artifact/version", "deployment: artifact: missing field 'version'"},
        {"deployment/artifact/size", "deployment: artifact: missing field 'size'"},
        {"deployment/artifact/sha256", "deployment: artifact: missing field 'sha256'"},
        {"deployment/artifact/manifest", "deployment: artifact: missing field 'manifest'"},
        {"deployment/artifact/signatures", "deployment: artifact: missing field 'signatures'"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++)
        expect_mutated(&CHECKIN_RESP, checkin_install_doc, cases[i].path, NULL, OT_ERR_FORMAT,
                       cases[i].needle);
}

static void test_checkin_resp_wrong_types(void **state)
{
    (void)state;
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "action", "'download'", OT_ERR_FORMAT,
                   "field 'action' must be one of 'none', 'install'");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "action", "1", OT_ERR_FORMAT,
                   "field 'action' must be a string");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "poll_interval", "300.0", OT_ERR_FORMAT,
                   "field 'poll_interval' must be a non-negative integer");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment", "[]", OT_ERR_FORMAT,
                   "field 'deployment' must be an object");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/id", "'12'", OT_ERR_FORMAT,
                   "deployment: field 'id' must be a non-negative integer");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/id", "0", OT_ERR_FORMAT,
                   "deployment: field 'id' must be a positive integer");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/size", "-1",
                   OT_ERR_FORMAT, "artifact: field 'size' must be a non-negative integer");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/manifest", "{}",
                   OT_ERR_FORMAT, "artifact: field 'manifest' must be a string");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/manifest", "''",
                   OT_ERR_FORMAT, "artifact: field 'manifest' must be 1..1048576 bytes");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/signatures",
                   "'a\\u0007b'", OT_ERR_FORMAT, "artifact: field 'signatures' must be");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/name", "'a/b'",
                   OT_ERR_FORMAT, "artifact: field 'name' must be a safe name");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/sha256", "'abc'",
                   OT_ERR_FORMAT, "artifact: field 'sha256' must be 64 hex digits");
}

static void test_checkin_resp_poll(void **state)
{
    (void)state;
    expect_mutated(&CHECKIN_RESP, checkin_none_doc, "poll_interval", "0", OT_ERR_FORMAT,
                   "field 'poll_interval' must be 1..604800, not 0");
    expect_mutated(&CHECKIN_RESP, checkin_none_doc, "poll_interval", "604801", OT_ERR_FORMAT,
                   "field 'poll_interval' is larger than 604800");
    expect_mutated(&CHECKIN_RESP, checkin_none_doc, "poll_jitter", "301", OT_ERR_FORMAT,
                   "field 'poll_jitter' must be 0..300, not 301");
    accept_mutated(&CHECKIN_RESP, checkin_none_doc, "poll_jitter", "300");
    accept_mutated(&CHECKIN_RESP, checkin_none_doc, "poll_interval", "604800");
    struct ot_wire_checkin_resp r = {.action = OT_WIRE_ACTION_NONE, .poll_interval = 10,
                                     .poll_jitter = 11};
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'poll_jitter' must be 0..10, not 11");
    r = (struct ot_wire_checkin_resp){.action = OT_WIRE_ACTION_NONE};
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'poll_interval' must be 1..604800");
    r = (struct ot_wire_checkin_resp){.poll_interval = 10};
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'action' must be");
}

static void test_checkin_resp_download(void **state)
{
    (void)state;
    char *url = repeat('u', OT_WIRE_URL_MAX + 1), *buf = malloc(OT_WIRE_URL_MAX + 8);
    assert_non_null(buf);
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", "[]",
                   OT_ERR_FORMAT, "deployment: field 'download' must have 1..4 entries, not 0");
    accept_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download",
                   "['a','b','c','d']");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download",
                   "['a','b','c','d','e']", OT_ERR_LIMIT, "field 'download' has more than 4");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", "'/a'",
                   OT_ERR_FORMAT, "field 'download' must be an array");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", "['/a',7]",
                   OT_ERR_FORMAT, "download[1] must be a string");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download",
                   "['/a b']", OT_ERR_FORMAT,
                   "download[0] must be 1..2048 printable ASCII characters without blanks");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download",
                   "['/a\\r\\nHost: evil']", OT_ERR_FORMAT, "download[0] must be");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", "['']",
                   OT_ERR_FORMAT, "download[0] must be");
    snprintf(buf, OT_WIRE_URL_MAX + 8, "['%s']", url);
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", buf,
                   OT_ERR_FORMAT, "download[0] must be a string of at most 2048 bytes");
    snprintf(buf, OT_WIRE_URL_MAX + 8, "['%s']", url + 1);
    accept_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", buf);
    free(url);
    free(buf);
}

/* action none: a decoder ignores a deployment; an encoder refuses one. */
static void test_checkin_resp_none(void **state)
{
    (void)state;
    char *doc = mutate(checkin_install_doc, "action", "'none'");
    char *canon = canonical(&CHECKIN_RESP, doc), *want = jq("{'action':'none',"
                                                            "'poll_interval':300,"
                                                            "'poll_jitter':30}\n");
    assert_string_equal(canon, want);
    free(canon);
    free(want);
    free(doc);

    struct ot_wire_checkin_resp r;
    build_install(&r);
    r.action = OT_WIRE_ACTION_NONE;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID,
                  "action 'none' carries no deployment, but 'id' is set");
    r.deployment_id = 0;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "but 'artifact' is set");
    ot_wire_checkin_resp_release(&r);
    r = (struct ot_wire_checkin_resp){.action = OT_WIRE_ACTION_NONE, .poll_interval = 5};
    r.artifact_sha256[31] = 1;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "but 'artifact' is set");
    r.artifact_sha256[31] = 0;
    r.artifact_size = 1;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "but 'artifact' is set");
    r.artifact_size = 0;
    r.ndownload = 1;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "but 'download' is set");
}

static void test_checkin_resp_install_encode_rules(void **state)
{
    (void)state;
    struct ot_wire_checkin_resp r;
    build_install(&r);
    r.deployment_id = 0;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "deployment: field 'id' must be a positive");
    r.deployment_id = 12;
    char *m = r.manifest;
    r.manifest = NULL;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "artifact: field 'manifest' must be");
    r.manifest = m;
    r.artifact_size = (uint64_t)INT64_MAX + 1;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "artifact: field 'size' must be");
    r.artifact_size = 1;
    r.ndownload = 5;
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'download' must have 1..4 entries");
    r.ndownload = 2;
    free(r.download[1]);
    r.download[1] = strdup("https://x/ y");
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "download[1] must be");
    ot_wire_checkin_resp_release(&r);
}

/* A response with a large manifest is over OT_WIRE_BODY_MAX but within its own limit. */
static void test_checkin_resp_large(void **state)
{
    (void)state;
    struct ot_wire_checkin_resp r, back;
    struct ot_buf out;
    struct ot_diag d = {0};
    build_install(&r);
    free(r.manifest);
    r.manifest = repeat('"', OT_MANIFEST_MAX); /* escaped: twice that on the wire */
    encode_decode(&CHECKIN_RESP, &r, &back);
    assert_string_equal(back.manifest, r.manifest);
    ot_wire_checkin_resp_release(&back);
    /* One byte more is refused by the encoder. */
    free(r.manifest);
    r.manifest = repeat('m', OT_MANIFEST_MAX + 1);
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'manifest' must be 1..1048576");
    free(r.signatures);
    r.signatures = repeat('s', 16 * 1024 + 1);
    r.manifest[10] = '\0';
    expect_encode(&CHECKIN_RESP, &r, OT_ERR_INVALID, "field 'signatures' must be 1..16384");
    ot_wire_checkin_resp_release(&r);
    /* Past the response limit: refused unread. */
    ot_buf_init(&out, SIZE_MAX);
    char *doc = jq(checkin_install_doc);
    assert_int_equal(ot_buf_append_str(&out, doc), OT_OK);
    while (out.len <= OT_WIRE_CHECKIN_RESP_MAX)
        assert_int_equal(ot_buf_append(&out, "                ", 16), OT_OK);
    assert_int_equal(ot_wire_checkin_resp_decode(out.data, out.len, &back, &d), OT_ERR_LIMIT);
    assert_non_null(strstr(d.msg, "checkin response: larger than 2162688 bytes"));
    assert_zeroed(&back, sizeof(back));
    ot_buf_release(&out);
    free(doc);
}

/* ---- status report --------------------------------------------------------------------------- */

static void test_status_report_round_trip(void **state)
{
    (void)state;
    struct ot_wire_status_report full = {.status = OT_WIRE_ROLLED_BACK, .progress = 100,
                                         .message = (char *)"health check failed: caf\xc3\xa9",
                                         .log = (char *)"line 1\n\tdetail\nline 2\n"};
    struct ot_wire_status_report bare = {.status = OT_WIRE_DOWNLOADING, .progress = -1};
    struct ot_wire_status_report back;
    encode_decode(&STATUS, &full, &back);
    assert_int_equal(back.status, full.status);
    assert_int_equal(back.progress, full.progress);
    assert_string_equal(back.message, full.message);
    assert_string_equal(back.log, full.log);
    ot_wire_status_report_release(&back);
    encode_decode(&STATUS, &bare, &back);
    assert_int_equal(back.status, OT_WIRE_DOWNLOADING);
    assert_int_equal(back.progress, -1);
    assert_string_equal(back.message, ""); /* absent: "" */
    assert_null(back.log);                 /* absent: NULL */
    ot_wire_status_report_release(&back);
    assert_canonical(&STATUS, status_doc,
                     "{'log':'line 1\\n\\tline 2\\n','message':'fetching','progress':42,"
                     "'status':'downloading'}\n");
    assert_canonical(&STATUS, "{'status':'success','progress':0,'message':'','log':''}",
                     "{'progress':0,'status':'success'}\n");
    /* Every status a device reports. */
    for (int s = OT_WIRE_DOWNLOADING; s <= OT_WIRE_ROLLED_BACK; s++) {
        struct ot_wire_status_report r = {.status = (enum ot_wire_status)s, .progress = -1};
        encode_decode(&STATUS, &r, &back);
        assert_int_equal(back.status, s);
        ot_wire_status_report_release(&back);
    }
}

static void test_status_report_rules(void **state)
{
    (void)state;
    static const char *const server_only[] = {"'pending'", "'cancelled'", "'skipped'"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(server_only); i++)
        expect_mutated(&STATUS, status_doc, "status", server_only[i], OT_ERR_FORMAT,
                       "field 'status' must be one a device reports");
    expect_mutated(&STATUS, status_doc, "status", NULL, OT_ERR_FORMAT,
                   "status report: missing field 'status'");
    expect_mutated(&STATUS, status_doc, "status", "'paused'", OT_ERR_FORMAT,
                   "field 'status' must be one of 'pending', 'downloading'");
    expect_mutated(&STATUS, status_doc, "progress", "101", OT_ERR_FORMAT,
                   "field 'progress' is larger than 100");
    expect_mutated(&STATUS, status_doc, "progress", "-1", OT_ERR_FORMAT,
                   "field 'progress' must be a non-negative integer");
    expect_mutated(&STATUS, status_doc, "progress", "null", OT_ERR_FORMAT,
                   "field 'progress' must be a non-negative integer");
    expect_mutated(&STATUS, status_doc, "message", "'a\\nb'", OT_ERR_FORMAT,
                   "field 'message' contains control characters");
    expect_mutated(&STATUS, status_doc, "log", "'a\\r\\nb'", OT_ERR_FORMAT,
                   "field 'log' must be at most 65536 bytes of printable UTF-8, tabs and "
                   "newlines");
    expect_mutated(&STATUS, status_doc, "log", "'\\u001b[2J'", OT_ERR_FORMAT,
                   "field 'log' must be");
    expect_mutated(&STATUS, status_doc, "log", "['a']", OT_ERR_FORMAT,
                   "field 'log' must be a string");
    char *m = repeat('m', OT_WIRE_MESSAGE_MAX + 1), *l = repeat('l', OT_WIRE_LOG_MAX + 1);
    char *buf = malloc(OT_WIRE_LOG_MAX + 8);
    assert_non_null(buf);
    snprintf(buf, OT_WIRE_LOG_MAX + 8, "'%s'", m);
    expect_mutated(&STATUS, status_doc, "message", buf, OT_ERR_FORMAT,
                   "field 'message' is longer than 1024 bytes");
    snprintf(buf, OT_WIRE_LOG_MAX + 8, "'%s'", l);
    expect_mutated(&STATUS, status_doc, "log", buf, OT_ERR_FORMAT,
                   "field 'log' is longer than 65536 bytes");
    snprintf(buf, OT_WIRE_LOG_MAX + 8, "'%s'", l + 1);
    accept_mutated(&STATUS, status_doc, "log", buf);
    free(m);
    free(l);
    free(buf);

    struct ot_wire_status_report r = {.status = OT_WIRE_PENDING, .progress = -1};
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "must be one a device reports");
    r.status = OT_WIRE_STATUS__MAX;
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "must be one a device reports");
    r.status = OT_WIRE_INSTALLING;
    r.progress = 101;
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "field 'progress' must be 0..100");
    r.progress = -2;
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "field 'progress' must be 0..100");
    r.progress = 5;
    r.message = (char *)"two\nlines";
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "field 'message' must be");
    r.message = NULL;
    r.log = (char *)"bell\a";
    expect_encode(&STATUS, &r, OT_ERR_INVALID, "field 'log' must be");
}

/* ---- inventory ------------------------------------------------------------------------------- */

static void test_inventory_round_trip(void **state)
{
    (void)state;
    static const char *const merge[] = {"os", "Debian 12", "old", NULL, "free_kb", "1234"};
    static const char *const all[] = {"os", "Debian 12", "kernel", "6.1.0"};
    struct ot_wire_inventory m = {.attrs = kvs(3, merge), .nattrs = 3};
    struct ot_wire_inventory r = {.attrs = kvs(2, all), .nattrs = 2, .replace = true};
    struct ot_wire_inventory e = {.replace = true}, back;
    static const char *const sorted[] = {"free_kb", "1234", "old", NULL, "os", "Debian 12"};
    struct ot_wire_kv *want = kvs(3, sorted);
    encode_decode(&INVENTORY, &m, &back);
    assert_false(back.replace);
    assert_kvs_equal(want, 3, back.attrs, back.nattrs);
    ot_wire_inventory_release(&back);
    encode_decode(&INVENTORY, &r, &back);
    assert_true(back.replace);
    assert_int_equal(back.nattrs, 2);
    assert_string_equal(back.attrs[0].key, "kernel");
    ot_wire_inventory_release(&back);
    encode_decode(&INVENTORY, &e, &back); /* replace with nothing: clear all */
    assert_true(back.replace);
    assert_int_equal(back.nattrs, 0);
    ot_wire_inventory_release(&back);
    ot_wire_inventory_release(&m);
    ot_wire_inventory_release(&r);
    struct ot_wire_inventory w = {.attrs = want, .nattrs = 3};
    ot_wire_inventory_release(&w);
    assert_canonical(&INVENTORY, inventory_doc,
                     "{'attributes':{'free_kb':'1234','old':null,'os':'Debian 12'},"
                     "'replace':false}\n");
}

static void test_inventory_rules(void **state)
{
    (void)state;
    char *doc = mutate(inventory_doc, "replace", "true");
    expect(&INVENTORY, doc, OT_ERR_FORMAT,
           "inventory: attributes['old'] is null (delete), which only a merge (replace false) "
           "allows");
    free(doc);
    expect_mutated(&INVENTORY, inventory_doc, "attributes", NULL, OT_ERR_FORMAT,
                   "inventory: missing field 'attributes'");
    expect_mutated(&INVENTORY, inventory_doc, "replace", NULL, OT_ERR_FORMAT,
                   "inventory: missing field 'replace'");
    expect_mutated(&INVENTORY, inventory_doc, "replace", "0", OT_ERR_FORMAT,
                   "field 'replace' must be true or false");
    expect_mutated(&INVENTORY, inventory_doc, "attributes/os", "12", OT_ERR_FORMAT,
                   "attributes['os'] must be a string or null");
    expect_mutated(&INVENTORY, inventory_doc, "attributes/os", "{}", OT_ERR_FORMAT,
                   "attributes['os'] must be a string or null");
    expect_too_many(&INVENTORY, "attributes", OT_WIRE_LIST_MAX, "null");

    static const char *const pairs[] = {"os", "Debian", "gone", NULL};
    struct ot_wire_inventory r = {.attrs = kvs(2, pairs), .nattrs = 2, .replace = true};
    expect_encode(&INVENTORY, &r, OT_ERR_INVALID, "attributes['gone'] is null (delete)");
    r.replace = false;
    free(r.attrs[0].key);
    r.attrs[0].key = strdup("gone");
    expect_encode(&INVENTORY, &r, OT_ERR_INVALID, "attributes: duplicate key 'gone'");
    ot_wire_inventory_release(&r);
}

/* ---- rules every decoder shares -------------------------------------------------------------- */

/* Unknown keys, at the top and inside, are ignored and not written back. */
static void test_unknown_keys_ignored(void **state)
{
    (void)state;
    static const struct {
        const struct codec *c;
        const char *doc, *path;
    } cases[] = {
        {&AUTH_REQ, auth_req_doc, "hardware"},
        {&AUTH_RESP, auth_accepted_doc, "refresh_token"},
        {&CHECKIN_REQ, checkin_req_doc, "installed/app/installed_at"},
        {&CHECKIN_REQ, checkin_req_doc, "uptime"},
        {&CHECKIN_RESP, checkin_install_doc, "deployment/artifact/delta"},
        {&CHECKIN_RESP, checkin_install_doc, "deployment/force"},
        {&CHECKIN_RESP, checkin_install_doc, "maintenance_window"},
        {&STATUS, status_doc, "bytes_done"},
        {&INVENTORY, inventory_doc, "hint"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        char *plain = canonical(cases[i].c, cases[i].doc);
        char *doc = mutate(cases[i].doc, cases[i].path, "{'x':[1,2,{'y':null}],'s':'\\u0001'}");
        char *extra = canonical(cases[i].c, doc);
        assert_string_equal(plain, extra);
        free(plain);
        free(doc);
        free(extra);
    }
}

static void test_not_object(void **state)
{
    (void)state;
    static const char *const docs[] = {"[]", "'x'", "1", "null", "true", "[{}]"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(codecs); i++)
        for (size_t j = 0; j < OT_ARRAY_SIZE(docs); j++)
            expect(codecs[i], docs[j], OT_ERR_FORMAT, ": not a JSON object");
}

/* Every prefix of every valid document is refused, the result left empty. */
static void test_truncated(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(codecs); i++) {
        char *text = jq(codecs[i]->doc);
        size_t len = strlen(text);
        for (size_t n = 0; n < len; n++)
            expect_raw(codecs[i], text, n, OT_ERR_FORMAT, "invalid JSON");
        free(text);
    }
}

static void test_invalid_json(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(codecs); i++) {
        const struct codec *c = codecs[i];
        expect_raw(c, NULL, 0, OT_ERR_FORMAT, "invalid JSON");
        expect_raw(c, RAW("{}\0"), OT_ERR_FORMAT, "invalid JSON");
        expect_raw(c, RAW("{} {}"), OT_ERR_FORMAT, "invalid JSON");
        expect_raw(c, RAW("{\"a\":1,\"a\":2}"), OT_ERR_FORMAT, "invalid JSON");
        expect_raw(c, RAW("{\"a\":\"\xff\"}"), OT_ERR_FORMAT, "invalid JSON");
        expect_raw(c, RAW("{\"a\":\"\\u0000\"}"), OT_ERR_FORMAT, "invalid JSON");
        expect(c, "{'a':[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]}", OT_ERR_FORMAT,
               "nested deeper than 16");
        expect(c, "{}", OT_ERR_FORMAT, "missing field");
    }
    /* Duplicate keys inside a map: the strict parser refuses them, so no map has duplicates. */
    expect(&AUTH_REQ,
           "{'identity':{'mac':'a','mac':'b'},'public_key':'" PK_B64 "','device_type':''}",
           OT_ERR_FORMAT, "duplicate object key");
}

/* The body limit: OT_WIRE_BODY_MAX bytes decode, one more is OT_ERR_LIMIT unread. */
static void test_body_limit(void **state)
{
    (void)state;
    for (size_t i = 0; i < OT_ARRAY_SIZE(codecs); i++) {
        const struct codec *c = codecs[i];
        char *text = jq(c->doc);
        size_t len = strlen(text);
        uint8_t *buf = malloc(c->max + 1);
        assert_non_null(buf);
        memset(buf, ' ', c->max + 1);
        memcpy(buf, text, len); /* trailing white space is allowed by JSON */
        void *r = calloc(1, c->size);
        assert_non_null(r);
        assert_int_equal(c->decode(buf, c->max, r, NULL), OT_OK);
        c->release(r);
        free(r);
        char needle[64];
        snprintf(needle, sizeof(needle), "larger than %zu bytes", c->max);
        expect_raw(c, buf, c->max + 1, OT_ERR_LIMIT, needle);
        free(buf);
        free(text);
    }
}

/* An encoder refuses to write what the decoder would refuse for its size. */
static void test_encode_body_limit(void **state)
{
    (void)state;
    struct ot_wire_checkin_req r = {.device_type = "gw-2"};
    char *quotes = repeat('"', OT_WIRE_VALUE_MAX); /* 2048 bytes escaped */
    r.provides = calloc(OT_WIRE_LIST_MAX, sizeof(*r.provides));
    assert_non_null(r.provides);
    r.nprovides = OT_WIRE_LIST_MAX;
    for (size_t i = 0; i < OT_WIRE_LIST_MAX; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%zu", i);
        r.provides[i] = (struct ot_wire_kv){strdup(key), strdup(quotes)};
    }
    expect_encode(&CHECKIN_REQ, &r, OT_ERR_LIMIT, "checkin request: larger than 262144 bytes");
    /* Half of them fit. */
    struct ot_buf out;
    ot_buf_init(&out, OT_WIRE_BODY_MAX);
    size_t n = r.nprovides;
    r.nprovides = n / 2;
    assert_int_equal(ot_wire_checkin_req_encode(&r, &out, NULL), OT_OK);
    r.nprovides = n;
    ot_buf_release(&out);
    ot_wire_checkin_req_release(&r);
    free(quotes);
}

/* Encoders append to what out holds and respect its maximum, leaving it unchanged then. */
static void test_encode_appends(void **state)
{
    (void)state;
    struct ot_wire_status_report r = {.status = OT_WIRE_SUCCESS, .progress = -1};
    struct ot_buf out;
    struct ot_diag d = {0};
    ot_buf_init(&out, 64);
    assert_int_equal(ot_buf_append_str(&out, "HTTP body: "), OT_OK);
    assert_int_equal(ot_wire_status_report_encode(&r, &out, &d), OT_OK);
    assert_string_equal(ot_buf_str(&out), "HTTP body: {\"status\":\"success\"}\n");
    size_t len = out.len;
    assert_int_equal(ot_wire_status_report_encode(&r, &out, &d), OT_OK);
    assert_int_equal(out.len, 2 * len - strlen("HTTP body: "));
    ot_buf_release(&out);
    ot_buf_init(&out, 10);
    assert_int_equal(ot_wire_status_report_encode(&r, &out, &d), OT_ERR_LIMIT);
    assert_non_null(strstr(d.msg, "status report: output buffer"));
    assert_int_equal(out.len, 0);
    ot_buf_release(&out);
}

/* Release on zeroed structs, twice, and decode into a struct still holding data from before is
 * the caller's leak, not a crash: the decoder zeroes *ret first. */
static void test_release(void **state)
{
    (void)state;
    struct ot_wire_auth_req a = {0};
    struct ot_wire_checkin_req b = {0};
    struct ot_wire_checkin_resp c = {0};
    struct ot_wire_status_report s = {0};
    struct ot_wire_inventory i = {0};
    for (int k = 0; k < 2; k++) {
        ot_wire_auth_req_release(&a);
        ot_wire_checkin_req_release(&b);
        ot_wire_checkin_resp_release(&c);
        ot_wire_status_report_release(&s);
        ot_wire_inventory_release(&i);
    }
    assert_zeroed(&c, sizeof(c));
    /* A failure late in a decode (after maps were copied) frees everything (LSan checks). */
    expect_mutated(&CHECKIN_REQ, checkin_req_doc, "provides/zz", "7", OT_ERR_FORMAT,
                   "provides['zz'] must be a string");
    expect_mutated(&CHECKIN_RESP, checkin_install_doc, "deployment/download", "['/a','b c']",
                   OT_ERR_FORMAT, "download[1] must be");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_key_rules),
        cmocka_unit_test(test_value_rules),
        cmocka_unit_test(test_auth_req_round_trip),
        cmocka_unit_test(test_auth_req_minimal),
        cmocka_unit_test(test_auth_req_missing_fields),
        cmocka_unit_test(test_auth_req_wrong_types),
        cmocka_unit_test(test_auth_req_public_key),
        cmocka_unit_test(test_auth_req_identity_count),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_too_long_strings),
        cmocka_unit_test(test_auth_req_text_rules),
        cmocka_unit_test(test_identity_json),
        cmocka_unit_test(test_auth_resp_round_trip),
        cmocka_unit_test(test_auth_resp_rules),
        cmocka_unit_test(test_checkin_req_round_trip),
        cmocka_unit_test(test_checkin_req_empty),
        cmocka_unit_test(test_checkin_req_missing_fields),
        cmocka_unit_test(test_checkin_req_rules),
        cmocka_unit_test(test_installed_json),
        cmocka_unit_test(test_checkin_resp_round_trip),
        cmocka_unit_test(test_checkin_resp_missing_fields),
        cmocka_unit_test(test_checkin_resp_wrong_types),
        cmocka_unit_test(test_checkin_resp_poll),
        cmocka_unit_test(test_checkin_resp_download),
        cmocka_unit_test(test_checkin_resp_none),
        cmocka_unit_test(test_checkin_resp_install_encode_rules),
        cmocka_unit_test(test_checkin_resp_large),
        cmocka_unit_test(test_status_report_round_trip),
        cmocka_unit_test(test_status_report_rules),
        cmocka_unit_test(test_inventory_round_trip),
        cmocka_unit_test(test_inventory_rules),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_encode_body_limit),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
