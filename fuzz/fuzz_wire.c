/* libFuzzer harness for the device API messages (otter/wire.h): every input goes through every
 * decoder. Beyond "no crash, no leak":
 * - a rejected input leaves the struct zeroed and says why in printable text (OT_ERR_FORMAT, or
 *   OT_ERR_LIMIT for sizes and counts);
 * - an accepted one encodes, to at most one byte more than came in (the canonical form drops
 *   white space, unknown keys and needless escapes, and adds a newline), decodes back, and encodes
 *   again to the same bytes: what one peer sends, the other reads, and nothing drifts;
 * - the identity and installed texts the server stores are JSON objects. */
#include "otter/json.h"
#include "otter/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct codec {
    size_t size, max;
    enum ot_err (*decode)(const uint8_t *, size_t, void *, struct ot_diag *);
    enum ot_err (*encode)(const void *, struct ot_buf *, struct ot_diag *);
    void (*release)(void *);
    void (*extra)(const void *); /* checks specific to the message, or NULL */
};

/* Adapters to one signature, so one driver runs them all (no calls through mismatched types). */
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

static void check_message(enum ot_err err, const struct ot_diag *d)
{
    if ((err != OT_ERR_FORMAT && err != OT_ERR_LIMIT) || d->err != err)
        abort();
    if (!memchr(d->msg, '\0', sizeof(d->msg)) || d->msg[0] == '\0')
        abort();
    for (const char *p = d->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            abort(); /* untrusted bytes must not reach a log line raw */
}

static void check_zeroed(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            abort();
}

/* A malloc'd text that must be a compact JSON object without the trailing newline. */
static void check_object_text(char *s)
{
    json_t *v = NULL;
    size_t len = strlen(s);
    if (len < 2 || s[len - 1] == '\n' ||
        ot_json_parse((const uint8_t *)s, len, &v, NULL) != OT_OK || !json_is_object(v))
        abort();
    json_decref(v);
    free(s);
}

static void auth_req_extra(const void *p)
{
    const struct ot_wire_auth_req *r = p;
    char *s = NULL;
    if (ot_wire_identity_json(r, &s) != OT_OK)
        abort();
    check_object_text(s);
    for (size_t i = 0; i < r->nidentity; i++)
        if (!ot_wire_key_is_valid(r->identity[i].key) ||
            !ot_wire_value_is_valid(r->identity[i].value))
            abort();
}

static void checkin_req_extra(const void *p)
{
    const struct ot_wire_checkin_req *r = p;
    char *s = NULL;
    if (ot_wire_installed_json(r, &s) != OT_OK)
        abort();
    check_object_text(s);
    /* Decoded maps are sorted, so every name and key is unique. */
    for (size_t i = 1; i < r->ninstalled; i++)
        if (strcmp(r->installed[i - 1].name, r->installed[i].name) >= 0)
            abort();
    for (size_t i = 1; i < r->nprovides; i++)
        if (strcmp(r->provides[i - 1].key, r->provides[i].key) >= 0)
            abort();
}

static void checkin_resp_extra(const void *p)
{
    const struct ot_wire_checkin_resp *r = p;
    if (r->poll_interval < 1 || r->poll_jitter > r->poll_interval)
        abort();
    if (r->action == OT_WIRE_ACTION_NONE &&
        (r->deployment_id || r->artifact_name || r->manifest || r->download || r->ndownload))
        abort();
    if (r->action == OT_WIRE_ACTION_INSTALL &&
        (r->deployment_id < 1 || !r->manifest || !r->signatures || r->ndownload < 1 ||
         r->ndownload > 4))
        abort();
}

static void status_report_extra(const void *p)
{
    const struct ot_wire_status_report *r = p;
    enum ot_wire_status back;
    const char *name = ot_wire_status_name(r->status);
    if (!name || ot_wire_status_parse(name, &back) != OT_OK || back != r->status)
        abort();
    if (!r->message || (r->log && !*r->log) || r->progress < -1 || r->progress > 100)
        abort();
    (void)ot_wire_status_is_final(r->status);
}

static void inventory_extra(const void *p)
{
    const struct ot_wire_inventory *r = p;
    for (size_t i = 0; i < r->nattrs; i++)
        if (r->replace && !r->attrs[i].value)
            abort();
}

#define CODEC(name, type, max, extra)                                                              \
    {sizeof(struct type), max, name##_dec, name##_enc, name##_rel, extra}

static const struct codec codecs[] = {
    CODEC(auth_req, ot_wire_auth_req, OT_WIRE_BODY_MAX, auth_req_extra),
    CODEC(auth_resp, ot_wire_auth_resp, OT_WIRE_BODY_MAX, NULL),
    CODEC(checkin_req, ot_wire_checkin_req, OT_WIRE_BODY_MAX, checkin_req_extra),
    CODEC(checkin_resp, ot_wire_checkin_resp, OT_WIRE_CHECKIN_RESP_MAX, checkin_resp_extra),
    CODEC(status_report, ot_wire_status_report, OT_WIRE_BODY_MAX, status_report_extra),
    CODEC(inventory, ot_wire_inventory, OT_WIRE_BODY_MAX, inventory_extra),
};

/* Encodes r into a fresh out; false only when the input was within a byte of the size limit (the
 * canonical newline may then not fit), anything else is a bug. */
static bool encode_or_abort(const struct codec *c, const void *r, size_t in_size,
                            struct ot_buf *out)
{
    struct ot_diag d = {0};
    ot_buf_init(out, SIZE_MAX);
    enum ot_err err = c->encode(r, out, &d);
    if (err == OT_ERR_LIMIT && in_size >= c->max) {
        ot_buf_release(out);
        return false;
    }
    if (err != OT_OK || out->len == 0 || out->data[out->len - 1] != '\n' || out->len > c->max)
        abort();
    return true;
}

static void round_trip(const struct codec *c, const void *r, size_t in_size)
{
    struct ot_buf first, second;
    struct ot_diag d = {0};
    if (!encode_or_abort(c, r, in_size, &first))
        return;
    if (first.len > in_size + 1)
        abort();
    void *again = calloc(1, c->size);
    if (!again)
        abort();
    if (c->decode(first.data, first.len, again, &d) != OT_OK)
        abort();
    if (!encode_or_abort(c, again, first.len, &second) || first.len != second.len ||
        memcmp(first.data, second.data, first.len) != 0)
        abort();
    c->release(again);
    free(again);
    ot_buf_release(&first);
    ot_buf_release(&second);
}

static void run(const struct codec *c, const uint8_t *data, size_t size)
{
    struct ot_diag d = {0};
    void *r = malloc(c->size);
    if (!r)
        abort();
    memset(r, 0x5a, c->size); /* the decoder must overwrite all of it */
    enum ot_err err = c->decode(data, size, r, &d);
    if (err) {
        check_message(err, &d);
        check_zeroed(r, c->size);
    } else {
        if (c->extra)
            c->extra(r);
        round_trip(c, r, size);
    }
    c->release(r);
    check_zeroed(r, c->size);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(codecs); i++)
        run(&codecs[i], data, size);
    return 0;
}
