/* The device API's messages (see wire.h): strict decoding, validation and canonical encoding.
 *
 * Like manifest.c, each message goes through two steps when decoded: the JSON shape (types,
 * presence, lengths, entry counts, hex and base64) is read into the struct, then one check function
 * applies every value rule to the struct. An encoder runs the same check function first, so a
 * decoder and an encoder can never disagree about what a valid message is; only the error code
 * differs (OT_ERR_FORMAT for what came off the wire, OT_ERR_INVALID for what a caller built).
 *
 * Canonical form: a field the encoder always writes is required by the decoder, and an optional
 * field is omitted when empty (enrollment_token "", progress -1, message "", log NULL). installed,
 * provides, attributes and replace are always written, "{}"/false included, so peers written
 * against the documentation never have to guess a default. A decoded message therefore re-encodes
 * to at most as many bytes as it came in: decode(x) always encodes, and encode(decode(encode(m)))
 * is byte for byte encode(m) (fuzz/fuzz_wire.c checks both). */
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/manifest.h"
#include "otter/path.h"
#include "otter/sig.h"
#include "otter/wire.h"

#define AUTH_REQ "auth request"
#define AUTH_RESP "auth response"
#define CHECKIN_REQ "checkin request"
#define CHECKIN_RESP "checkin response"
#define STATUS_REPORT "status report"
#define INVENTORY "inventory"

#define VERSION_MAX 255 /* bytes of an installed or artifact version */
#define DOWNLOAD_MAX 4  /* URLs in a checkin response */
#define WHAT_MAX 160    /* "checkin request: installed['<48 bytes>...']" fits */
#define EXCERPT_MAX 48  /* bytes of an untrusted string quoted in a message */

/* Worst case of a check-in response: every string escaped to twice its length, plus the small
 * fields. A manifest the signing side accepts must always fit. */
_Static_assert(2 * (OT_MANIFEST_MAX + OT_SIG_FILE_MAX + DOWNLOAD_MAX * OT_WIRE_URL_MAX +
                    OT_NAME_MAX + VERSION_MAX) + 4096 <= OT_WIRE_CHECKIN_RESP_MAX,
               "OT_WIRE_CHECKIN_RESP_MAX too small for the largest check-in response");

/* ---- text rules ------------------------------------------------------------------------------ */

enum text_kind {
    TEXT_KEY,         /* identity, provides and attribute keys: ot_wire_key_is_valid */
    TEXT_VALUE,       /* their values: ot_wire_value_is_valid */
    TEXT_NAME,        /* payload and artifact names: ot_name_is_safe */
    TEXT_DEVICE_TYPE, /* ot_name_is_safe, and it fits a char[OT_WIRE_DEVICE_TYPE_MAX] */
    TEXT_VERSION,     /* installed and artifact versions */
    TEXT_TOKEN,       /* enrollment and access tokens */
    TEXT_URL,         /* download URLs */
    TEXT_MESSAGE,     /* a status message: one line */
    TEXT_LOG,         /* status log lines */
    TEXT_MANIFEST,    /* manifest.json, exact text */
    TEXT_SIGNATURES,  /* manifest.sig, exact text */
};

enum charset {
    CS_KEY,   /* [A-Za-z0-9_.:-] */
    CS_NAME,  /* ot_name_is_safe */
    CS_ASCII, /* printable ASCII without blanks: tokens and URLs go into HTTP headers and curl,
                 where a CR, LF or space could split or inject a header line */
    CS_UTF8,  /* well-formed UTF-8 without control characters except those in text_rule.controls */
};

struct text_rule {
    size_t min, max;
    enum charset cs;
    const char *controls; /* CS_UTF8: control characters allowed anyway */
    const char *desc;     /* completes "must be ..." */
};

static const struct text_rule text_rules[] = {
    [TEXT_KEY] = {1, OT_WIRE_KEY_MAX, CS_KEY, NULL, "1..64 of A-Z a-z 0-9 _ . : -"},
    [TEXT_VALUE] = {0, OT_WIRE_VALUE_MAX, CS_UTF8, "", "at most 1024 bytes of printable UTF-8"},
    [TEXT_NAME] = {1, OT_NAME_MAX, CS_NAME, NULL,
                   "a safe name (1..64 of A-Z a-z 0-9 . _ + -, not starting with '.' or '-')"},
    [TEXT_DEVICE_TYPE] = {1, OT_WIRE_DEVICE_TYPE_MAX - 1, CS_NAME, NULL,
                          "a safe name (1..63 of A-Z a-z 0-9 . _ + -, not starting with '.' or "
                          "'-')"},
    [TEXT_VERSION] = {1, VERSION_MAX, CS_UTF8, "", "1..255 bytes of printable UTF-8"},
    [TEXT_TOKEN] = {1, OT_WIRE_TOKEN_MAX - 1, CS_ASCII, NULL,
                    "1..127 printable ASCII characters without blanks"},
    [TEXT_URL] = {1, OT_WIRE_URL_MAX, CS_ASCII, NULL,
                  "1..2048 printable ASCII characters without blanks"},
    [TEXT_MESSAGE] = {0, OT_WIRE_MESSAGE_MAX, CS_UTF8, "",
                      "at most 1024 bytes of printable UTF-8 on one line"},
    [TEXT_LOG] = {0, OT_WIRE_LOG_MAX, CS_UTF8, "\t\n",
                  "at most 65536 bytes of printable UTF-8, tabs and newlines"},
    /* What a JSON document can hold raw: anything printable and JSON white space. This also keeps
     * the escaped form at most twice as long (see the static assertion above). */
    [TEXT_MANIFEST] = {1, OT_MANIFEST_MAX, CS_UTF8, "\t\n\r",
                       "1..1048576 bytes of printable UTF-8 and JSON white space"},
    [TEXT_SIGNATURES] = {1, OT_SIG_FILE_MAX, CS_UTF8, "\t\n\r",
                         "1..16384 bytes of printable UTF-8 and JSON white space"},
};

static bool ascii_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
}

static bool text_valid(enum text_kind kind, const char *s)
{
    const struct text_rule *r = &text_rules[kind];
    if (!s)
        return false;
    size_t len = strlen(s);
    if (len < r->min || len > r->max)
        return false;
    switch (r->cs) {
    case CS_NAME:
        return ot_name_is_safe(s, len);
    case CS_UTF8:
        return ot_utf8_printable(s, len, r->controls);
    case CS_KEY:
    case CS_ASCII:
        for (size_t i = 0; i < len; i++)
            if (!(r->cs == CS_KEY ? key_char : ascii_char)((unsigned char)s[i]))
                return false;
        return true;
    }
    return false;
}

bool ot_wire_key_is_valid(const char *key) { return text_valid(TEXT_KEY, key); }

bool ot_wire_value_is_valid(const char *value) { return text_valid(TEXT_VALUE, value); }

/* A short copy of an untrusted string for a message: anything but printable ASCII becomes '?', so
 * a hostile peer cannot put control sequences into a log line. */
static const char *excerpt(const char *s, char out[EXCERPT_MAX + 4])
{
    size_t i = 0;
    for (; s && s[i] && i < EXCERPT_MAX; i++)
        out[i] = ascii_char((unsigned char)s[i]) || s[i] == ' ' ? s[i] : '?';
    if (s && s[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* ---- enum names ------------------------------------------------------------------------------ */

static const char *const status_names[] = {
    [OT_WIRE_PENDING] = "pending",         [OT_WIRE_DOWNLOADING] = "downloading",
    [OT_WIRE_INSTALLING] = "installing",   [OT_WIRE_REBOOTING] = "rebooting",
    [OT_WIRE_VERIFYING] = "verifying",     [OT_WIRE_SUCCESS] = "success",
    [OT_WIRE_FAILURE] = "failure",         [OT_WIRE_ROLLED_BACK] = "rolled_back",
    [OT_WIRE_CANCELLED] = "cancelled",     [OT_WIRE_SKIPPED] = "skipped",
    [OT_WIRE_WAITING] = "waiting",
};
_Static_assert(OT_ARRAY_SIZE(status_names) == OT_WIRE_STATUS__MAX, "a status without a name");

static const char *const auth_status_names[] = {
    [OT_WIRE_AUTH_ACCEPTED] = "accepted",
    [OT_WIRE_AUTH_PENDING] = "pending",
};

/* Index 0 is forced, the default, which is never written. */
static const char *const type_names[] = {
    [OT_WIRE_TYPE_FORCED] = "forced",
    [OT_WIRE_TYPE_SOFT] = "soft",
    [OT_WIRE_TYPE_DOWNLOAD_ONLY] = "download_only",
};
_Static_assert(OT_ARRAY_SIZE(type_names) == OT_WIRE_TYPE__MAX, "a type without a name");

static const char *const action_names[] = {
    [OT_WIRE_ACTION_NONE] = "none",
    [OT_WIRE_ACTION_INSTALL] = "install",
};

/* names[v] for a value of an enum that starts at 1; NULL out of range. */
static const char *enum_name(const char *const *names, size_t n, int v)
{
    return v > 0 && (size_t)v < n ? names[v] : NULL;
}

static int enum_value(const char *const *names, size_t n, const char *name)
{
    for (size_t v = 1; name && v < n; v++)
        if (strcmp(names[v], name) == 0)
            return (int)v;
    return 0;
}

const char *ot_wire_status_name(enum ot_wire_status s)
{
    return enum_name(status_names, OT_ARRAY_SIZE(status_names), (int)s);
}

const char *ot_wire_deploy_type_name(enum ot_wire_deploy_type t)
{
    return (unsigned)t < OT_ARRAY_SIZE(type_names) ? type_names[t] : NULL;
}

enum ot_err ot_wire_status_parse(const char *name, enum ot_wire_status *ret)
{
    int v = enum_value(status_names, OT_ARRAY_SIZE(status_names), name);
    if (!v)
        return OT_ERR_FORMAT;
    *ret = (enum ot_wire_status)v;
    return OT_OK;
}

bool ot_wire_status_is_final(enum ot_wire_status s)
{
    return s == OT_WIRE_SUCCESS || s == OT_WIRE_FAILURE || s == OT_WIRE_ROLLED_BACK ||
           s == OT_WIRE_CANCELLED || s == OT_WIRE_SKIPPED;
}

/* What a device may report: from downloading to rolled_back, and waiting. */
static bool status_is_reportable(enum ot_wire_status s)
{
    return (s >= OT_WIRE_DOWNLOADING && s <= OT_WIRE_ROLLED_BACK) || s == OT_WIRE_WAITING;
}

/* ---- validation ------------------------------------------------------------------------------ */

/* Where a check runs: the message it is about, and the code of a failure (OT_ERR_FORMAT for what a
 * decoder read, OT_ERR_INVALID for what a caller asks to encode). */
struct check {
    const char *what;
    enum ot_err code;
    struct ot_diag *d;
};

static enum ot_err check_text(const struct check *c, const char *field, const char *s,
                              enum text_kind kind)
{
    if (text_valid(kind, s))
        return OT_OK;
    return ot_diag_set(c->d, c->code, "%s: field '%s' must be %s", c->what, field,
                       text_rules[kind].desc);
}

/* A char[size] field: NUL-terminated inside the array, then "" or valid. */
static enum ot_err check_fixed(const struct check *c, const char *field, const char *s, size_t size,
                               bool required, enum text_kind kind)
{
    if (!memchr(s, '\0', size))
        return ot_diag_set(c->d, c->code, "%s: field '%s' is not terminated within %zu bytes",
                           c->what, field, size);
    if (!required && !*s)
        return OT_OK;
    return check_text(c, field, s, kind);
}

static enum ot_err check_count(const struct check *c, const char *field, size_t n, size_t min,
                               size_t max)
{
    if (n >= min && n <= max)
        return OT_OK;
    return ot_diag_set(c->d, c->code, "%s: field '%s' must have %zu..%zu entries, not %zu",
                       c->what, field, min, max, n);
}

static enum ot_err check_range(const struct check *c, const char *field, uint64_t v, uint64_t min,
                               uint64_t max)
{
    if (v >= min && v <= max)
        return OT_OK;
    return ot_diag_set(c->d, c->code, "%s: field '%s' must be %llu..%llu, not %llu", c->what,
                       field, (unsigned long long)min, (unsigned long long)max,
                       (unsigned long long)v);
}

static enum ot_err check_id(const struct check *c, const char *field, int64_t v)
{
    if (v >= 1)
        return OT_OK;
    return ot_diag_set(c->d, c->code, "%s: field '%s' must be a positive integer", c->what, field);
}

/* A map: entry count, keys valid and unique, values valid (NULL only where nulls is set). The
 * decoder cannot produce duplicates (ot_json_parse refuses them) but a caller can. */
static enum ot_err check_kvs(const struct check *c, const char *field, const struct ot_wire_kv *kv,
                             size_t n, size_t min, size_t max, bool nulls)
{
    char ex[EXCERPT_MAX + 4];
    enum ot_err err = check_count(c, field, n, min, max);
    if (!err && n && !kv)
        return ot_diag_set(c->d, c->code, "%s: field '%s' has %zu entries but no array", c->what,
                           field, n);
    for (size_t i = 0; !err && i < n; i++) {
        if (!ot_wire_key_is_valid(kv[i].key))
            return ot_diag_set(c->d, c->code, "%s: %s: key '%s' must be %s", c->what, field,
                               excerpt(kv[i].key, ex), text_rules[TEXT_KEY].desc);
        for (size_t j = 0; j < i; j++)
            if (strcmp(kv[i].key, kv[j].key) == 0)
                return ot_diag_set(c->d, c->code, "%s: %s: duplicate key '%s'", c->what, field,
                                   kv[i].key);
        if (!kv[i].value && !nulls)
            return ot_diag_set(c->d, c->code, "%s: %s['%s'] must be a string, not null", c->what,
                               field, kv[i].key);
        if (kv[i].value && !ot_wire_value_is_valid(kv[i].value))
            return ot_diag_set(c->d, c->code, "%s: %s['%s'] must be %s", c->what, field, kv[i].key,
                               text_rules[TEXT_VALUE].desc);
    }
    return err;
}

static enum ot_err check_auth_req(const struct ot_wire_auth_req *r, enum ot_err code,
                                  struct ot_diag *d)
{
    const struct check c = {AUTH_REQ, code, d};
    enum ot_err err;
    if ((err = check_kvs(&c, "identity", r->identity, r->nidentity, 1, OT_WIRE_IDENTITY_MAX,
                         false)) ||
        (err = check_fixed(&c, "device_type", r->device_type, sizeof(r->device_type), false,
                           TEXT_DEVICE_TYPE)))
        return err;
    return check_fixed(&c, "enrollment_token", r->enrollment_token, sizeof(r->enrollment_token),
                       false, TEXT_TOKEN);
}

/* The fields of the other status must be empty: a peer would otherwise lose them silently. */
static enum ot_err check_auth_resp(const struct ot_wire_auth_resp *r, enum ot_err code,
                                   struct ot_diag *d)
{
    const struct check c = {AUTH_RESP, code, d};
    enum ot_err err = check_id(&c, "device_id", r->device_id);
    if (err)
        return err;
    switch (r->status) {
    case OT_WIRE_AUTH_ACCEPTED:
        if ((err = check_fixed(&c, "token", r->token, sizeof(r->token), true, TEXT_TOKEN)) ||
            (err = check_range(&c, "expires_in", r->expires_in, 1, UINT32_MAX)))
            return err;
        if (r->retry_after)
            return ot_diag_set(d, code, "%s: status 'accepted' has no field 'retry_after'",
                               AUTH_RESP);
        return OT_OK;
    case OT_WIRE_AUTH_PENDING:
        if (r->token[0] || r->expires_in)
            return ot_diag_set(d, code, "%s: status 'pending' has no field '%s'", AUTH_RESP,
                               r->token[0] ? "token" : "expires_in");
        return check_range(&c, "retry_after", r->retry_after, 1, OT_WIRE_POLL_MAX);
    }
    return ot_diag_set(d, code, "%s: field 'status' must be 'accepted' or 'pending'", AUTH_RESP);
}

static enum ot_err check_installed(const struct check *c, const struct ot_wire_installed *v,
                                   size_t n)
{
    char ex[EXCERPT_MAX + 4];
    enum ot_err err = check_count(c, "installed", n, 0, OT_WIRE_LIST_MAX);
    if (!err && n && !v)
        return ot_diag_set(c->d, c->code, "%s: field 'installed' has %zu entries but no array",
                           c->what, n);
    for (size_t i = 0; !err && i < n; i++) {
        if (!text_valid(TEXT_NAME, v[i].name))
            return ot_diag_set(c->d, c->code, "%s: installed: name '%s' must be %s", c->what,
                               excerpt(v[i].name, ex), text_rules[TEXT_NAME].desc);
        for (size_t j = 0; j < i; j++)
            if (strcmp(v[i].name, v[j].name) == 0)
                return ot_diag_set(c->d, c->code, "%s: installed: duplicate name '%s'", c->what,
                                   v[i].name);
        if (!text_valid(TEXT_VERSION, v[i].version))
            return ot_diag_set(c->d, c->code, "%s: installed['%s']: field 'version' must be %s",
                               c->what, v[i].name, text_rules[TEXT_VERSION].desc);
    }
    return err;
}

static enum ot_err check_checkin_req(const struct ot_wire_checkin_req *r, enum ot_err code,
                                     struct ot_diag *d)
{
    const struct check c = {CHECKIN_REQ, code, d};
    enum ot_err err;
    if ((err = check_fixed(&c, "device_type", r->device_type, sizeof(r->device_type), true,
                           TEXT_DEVICE_TYPE)) ||
        (err = check_installed(&c, r->installed, r->ninstalled)))
        return err;
    return check_kvs(&c, "provides", r->provides, r->nprovides, 0, OT_WIRE_LIST_MAX, false);
}

/* The name of the first deployment field set in a "none" response, NULL when there is none. */
static const char *deployment_field_set(const struct ot_wire_checkin_resp *r)
{
    if (r->deployment_id)
        return "id";
    if (r->artifact_name || r->artifact_version || r->artifact_size ||
        !all_zero(r->artifact_sha256, sizeof(r->artifact_sha256)) || r->manifest || r->signatures)
        return "artifact";
    if (r->download || r->ndownload)
        return "download";
    if (r->type || r->install_held)
        return r->type ? "type" : "install_allowed";
    return NULL;
}

static enum ot_err check_download(const struct check *c, char *const *v, size_t n)
{
    enum ot_err err = check_count(c, "download", n, 1, DOWNLOAD_MAX);
    if (!err && !v)
        return ot_diag_set(c->d, c->code, "%s: field 'download' has %zu entries but no array",
                           c->what, n);
    for (size_t i = 0; !err && i < n; i++)
        if (!text_valid(TEXT_URL, v[i]))
            return ot_diag_set(c->d, c->code, "%s: download[%zu] must be %s", c->what, i,
                               text_rules[TEXT_URL].desc);
    return err;
}

static enum ot_err check_deployment(const struct ot_wire_checkin_resp *r, enum ot_err code,
                                    struct ot_diag *d)
{
    const struct check dep = {CHECKIN_RESP ": deployment", code, d};
    const struct check art = {CHECKIN_RESP ": deployment: artifact", code, d};
    enum ot_err err;
    if ((err = check_id(&dep, "id", r->deployment_id)) ||
        (err = check_text(&art, "name", r->artifact_name, TEXT_NAME)) ||
        (err = check_text(&art, "version", r->artifact_version, TEXT_VERSION)) ||
        (err = check_range(&art, "size", r->artifact_size, 0, INT64_MAX)) ||
        (err = check_text(&art, "manifest", r->manifest, TEXT_MANIFEST)) ||
        (err = check_text(&art, "signatures", r->signatures, TEXT_SIGNATURES)))
        return err;
    if (!ot_wire_deploy_type_name(r->type))
        return ot_diag_set(d, code, "%s: field 'type' must be 'forced', 'soft' or 'download_only'",
                           dep.what);
    return check_download(&dep, r->download, r->ndownload);
}

static enum ot_err check_checkin_resp(const struct ot_wire_checkin_resp *r, enum ot_err code,
                                      struct ot_diag *d)
{
    const struct check c = {CHECKIN_RESP, code, d};
    enum ot_err err;
    if (!enum_name(action_names, OT_ARRAY_SIZE(action_names), (int)r->action))
        return ot_diag_set(d, code, "%s: field 'action' must be 'none' or 'install'", c.what);
    if ((err = check_range(&c, "poll_interval", r->poll_interval, 1, OT_WIRE_POLL_MAX)) ||
        (err = check_range(&c, "poll_jitter", r->poll_jitter, 0, r->poll_interval)))
        return err;
    if (r->action == OT_WIRE_ACTION_INSTALL)
        return check_deployment(r, code, d);
    const char *set = deployment_field_set(r);
    if (set)
        return ot_diag_set(d, code, "%s: action 'none' carries no deployment, but '%s' is set",
                           c.what, set);
    return OT_OK;
}

static enum ot_err check_status_report(const struct ot_wire_status_report *r, enum ot_err code,
                                       struct ot_diag *d)
{
    const struct check c = {STATUS_REPORT, code, d};
    if (!status_is_reportable(r->status)) {
        const char *name = ot_wire_status_name(r->status);
        char was[32];
        if (name)
            snprintf(was, sizeof(was), "'%s'", name);
        else
            snprintf(was, sizeof(was), "%d", (int)r->status);
        return ot_diag_set(d, code,
                           "%s: field 'status' must be one a device reports (downloading, "
                           "installing, rebooting, verifying, success, failure, rolled_back), "
                           "not %s",
                           c.what, was);
    }
    if (r->progress != -1 && (r->progress < 0 || r->progress > 100))
        return ot_diag_set(d, code, "%s: field 'progress' must be 0..100 (or -1: none), not %d",
                           c.what, r->progress);
    enum ot_err err = OT_OK;
    if (r->message && *r->message)
        err = check_text(&c, "message", r->message, TEXT_MESSAGE);
    if (!err && r->log && *r->log)
        err = check_text(&c, "log", r->log, TEXT_LOG);
    return err;
}

static enum ot_err check_inventory(const struct ot_wire_inventory *r, enum ot_err code,
                                   struct ot_diag *d)
{
    const struct check c = {INVENTORY, code, d};
    enum ot_err err = check_kvs(&c, "attributes", r->attrs, r->nattrs, 0, OT_WIRE_LIST_MAX, true);
    /* A null deletes an attribute from the set a merge starts with; a replacement starts empty. */
    for (size_t i = 0; !err && r->replace && i < r->nattrs; i++)
        if (!r->attrs[i].value)
            return ot_diag_set(d, code,
                               "%s: attributes['%s'] is null (delete), which only a merge "
                               "(replace false) allows",
                               INVENTORY, r->attrs[i].key);
    return err;
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

static json_t *int_value(uint64_t v) { return json_integer((json_int_t)v); }

static json_t *kvs_json(const struct ot_wire_kv *kv, size_t n)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++)
        if (!put(obj, kv[i].key, kv[i].value ? json_string(kv[i].value) : json_null())) {
            json_decref(obj);
            return NULL;
        }
    return obj;
}

static json_t *installed_entry_json(const struct ot_wire_installed *e)
{
    json_t *obj = json_object();
    bool ok = obj && put(obj, "version", json_string(e->version));
    if (ok && e->has_sha256)
        ok = put(obj, "sha256", hex_value(e->sha256, OT_SHA256_LEN));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *installed_json(const struct ot_wire_installed *v, size_t n)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < n; i++)
        if (!put(obj, v[i].name, installed_entry_json(&v[i]))) {
            json_decref(obj);
            return NULL;
        }
    return obj;
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

static json_t *auth_req_json(const struct ot_wire_auth_req *r)
{
    char b64[64];
    _Static_assert(sizeof(b64) >= (OT_SIGN_PK_LEN + 2) / 3 * 4 + 1, "base64 buffer");
    ot_base64_encode(r->public_key, OT_SIGN_PK_LEN, b64);
    json_t *obj = json_object();
    bool ok = obj && put(obj, "identity", kvs_json(r->identity, r->nidentity)) &&
              put(obj, "public_key", json_string(b64)) &&
              put(obj, "device_type", json_string(r->device_type));
    if (ok && r->enrollment_token[0])
        ok = put(obj, "enrollment_token", json_string(r->enrollment_token));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *auth_resp_json(const struct ot_wire_auth_resp *r)
{
    json_t *obj = json_object();
    const char *status =
        enum_name(auth_status_names, OT_ARRAY_SIZE(auth_status_names), (int)r->status);
    bool ok = obj && put(obj, "status", json_string(status)) &&
              put(obj, "device_id", int_value((uint64_t)r->device_id));
    if (ok && r->status == OT_WIRE_AUTH_ACCEPTED)
        ok = put(obj, "token", json_string(r->token)) &&
             put(obj, "expires_in", int_value(r->expires_in));
    else if (ok)
        ok = put(obj, "retry_after", int_value(r->retry_after));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *checkin_req_json(const struct ot_wire_checkin_req *r)
{
    json_t *obj = json_object();
    if (obj && put(obj, "device_type", json_string(r->device_type)) &&
        put(obj, "installed", installed_json(r->installed, r->ninstalled)) &&
        put(obj, "provides", kvs_json(r->provides, r->nprovides)))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *artifact_json(const struct ot_wire_checkin_resp *r)
{
    json_t *obj = json_object();
    if (obj && put(obj, "name", json_string(r->artifact_name)) &&
        put(obj, "version", json_string(r->artifact_version)) &&
        put(obj, "size", int_value(r->artifact_size)) &&
        put(obj, "sha256", hex_value(r->artifact_sha256, OT_SHA256_LEN)) &&
        put(obj, "manifest", json_string(r->manifest)) &&
        put(obj, "signatures", json_string(r->signatures)))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *deployment_json(const struct ot_wire_checkin_resp *r)
{
    json_t *obj = json_object();
    if (obj && put(obj, "id", int_value((uint64_t)r->deployment_id)) &&
        put(obj, "artifact", artifact_json(r)) &&
        put(obj, "download", strv_json(r->download, r->ndownload)) &&
        (r->type == OT_WIRE_TYPE_FORCED ||
         put(obj, "type", json_string(ot_wire_deploy_type_name(r->type)))) &&
        (!r->install_held || put(obj, "install_allowed", json_false())))
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *checkin_resp_json(const struct ot_wire_checkin_resp *r)
{
    json_t *obj = json_object();
    bool ok = obj &&
              put(obj, "action",
                  json_string(enum_name(action_names, OT_ARRAY_SIZE(action_names),
                                        (int)r->action))) &&
              put(obj, "poll_interval", int_value(r->poll_interval)) &&
              put(obj, "poll_jitter", int_value(r->poll_jitter));
    if (ok && r->action == OT_WIRE_ACTION_INSTALL)
        ok = put(obj, "deployment", deployment_json(r));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *status_report_json(const struct ot_wire_status_report *r)
{
    json_t *obj = json_object();
    bool ok = obj && put(obj, "status", json_string(ot_wire_status_name(r->status)));
    if (ok && r->progress >= 0)
        ok = put(obj, "progress", int_value((uint64_t)r->progress));
    if (ok && r->message && *r->message)
        ok = put(obj, "message", json_string(r->message));
    if (ok && r->log && *r->log)
        ok = put(obj, "log", json_string(r->log));
    if (ok)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *inventory_json(const struct ot_wire_inventory *r)
{
    json_t *obj = json_object();
    if (obj && put(obj, "attributes", kvs_json(r->attrs, r->nattrs)) &&
        put(obj, "replace", json_boolean(r->replace)))
        return obj;
    json_decref(obj);
    return NULL;
}

/* Canonical bytes of obj (built from a checked message; NULL: out of memory) appended to out. The
 * size is checked against the limit the decoder applies, so an encoded message always decodes; out
 * is unchanged on failure. */
static enum ot_err emit(json_t *obj, size_t max, const char *what, struct ot_buf *out,
                        struct ot_diag *d)
{
    json_auto_t *owned = obj;
    if (!owned)
        return ot_diag_set(d, OT_ERR_NOMEM, "%s: out of memory", what);
    struct ot_buf tmp;
    ot_buf_init(&tmp, max);
    enum ot_err err = ot_json_dump(owned, &tmp);
    if (err == OT_ERR_LIMIT)
        ot_diag_set(d, err, "%s: larger than %zu bytes", what, max);
    else if (err)
        ot_diag_set(d, err, "%s: %s", what, ot_strerror(err));
    else if ((err = ot_buf_append(out, tmp.data, tmp.len)))
        ot_diag_set(d, err, "%s: output buffer: %s", what, ot_strerror(err));
    ot_buf_release(&tmp);
    return err;
}

enum ot_err ot_wire_auth_req_encode(const struct ot_wire_auth_req *r, struct ot_buf *out,
                                    struct ot_diag *d)
{
    enum ot_err err = check_auth_req(r, OT_ERR_INVALID, d);
    return err ? err : emit(auth_req_json(r), OT_WIRE_BODY_MAX, AUTH_REQ, out, d);
}

enum ot_err ot_wire_auth_resp_encode(const struct ot_wire_auth_resp *r, struct ot_buf *out,
                                     struct ot_diag *d)
{
    enum ot_err err = check_auth_resp(r, OT_ERR_INVALID, d);
    return err ? err : emit(auth_resp_json(r), OT_WIRE_BODY_MAX, AUTH_RESP, out, d);
}

enum ot_err ot_wire_checkin_req_encode(const struct ot_wire_checkin_req *r, struct ot_buf *out,
                                       struct ot_diag *d)
{
    enum ot_err err = check_checkin_req(r, OT_ERR_INVALID, d);
    return err ? err : emit(checkin_req_json(r), OT_WIRE_BODY_MAX, CHECKIN_REQ, out, d);
}

enum ot_err ot_wire_checkin_resp_encode(const struct ot_wire_checkin_resp *r, struct ot_buf *out,
                                        struct ot_diag *d)
{
    enum ot_err err = check_checkin_resp(r, OT_ERR_INVALID, d);
    return err ? err
               : emit(checkin_resp_json(r), OT_WIRE_CHECKIN_RESP_MAX, CHECKIN_RESP, out, d);
}

enum ot_err ot_wire_status_report_encode(const struct ot_wire_status_report *r, struct ot_buf *out,
                                         struct ot_diag *d)
{
    enum ot_err err = check_status_report(r, OT_ERR_INVALID, d);
    return err ? err : emit(status_report_json(r), OT_WIRE_BODY_MAX, STATUS_REPORT, out, d);
}

enum ot_err ot_wire_inventory_encode(const struct ot_wire_inventory *r, struct ot_buf *out,
                                     struct ot_diag *d)
{
    enum ot_err err = check_inventory(r, OT_ERR_INVALID, d);
    return err ? err : emit(inventory_json(r), OT_WIRE_BODY_MAX, INVENTORY, out, d);
}

/* A checked map as compact canonical JSON without the trailing newline, as a C string. */
static enum ot_err text_of(json_t *obj, char **ret)
{
    json_auto_t *owned = obj;
    if (!owned)
        return OT_ERR_NOMEM;
    struct ot_buf b;
    ot_buf_init(&b, OT_WIRE_BODY_MAX);
    uint8_t *data;
    size_t len;
    enum ot_err err = ot_json_dump(owned, &b);
    if (!err)
        err = ot_buf_steal(&b, &data, &len);
    ot_buf_release(&b);
    if (err)
        return err;
    data[len - 1] = '\0'; /* the newline ot_json_dump ends with */
    *ret = (char *)data;
    return OT_OK;
}

enum ot_err ot_wire_identity_json(const struct ot_wire_auth_req *r, char **ret)
{
    const struct check c = {AUTH_REQ, OT_ERR_INVALID, NULL};
    enum ot_err err =
        check_kvs(&c, "identity", r->identity, r->nidentity, 1, OT_WIRE_IDENTITY_MAX, false);
    return err ? err : text_of(kvs_json(r->identity, r->nidentity), ret);
}

enum ot_err ot_wire_installed_json(const struct ot_wire_checkin_req *r, char **ret)
{
    const struct check c = {CHECKIN_REQ, OT_ERR_INVALID, NULL};
    enum ot_err err = check_installed(&c, r->installed, r->ninstalled);
    return err ? err : text_of(installed_json(r->installed, r->ninstalled), ret);
}

/* ---- decoding -------------------------------------------------------------------------------- */

static enum ot_err nomem(const char *what, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_NOMEM, "%s: out of memory", what);
}

static enum ot_err dup_str(const char *s, const char *what, char **ret, struct ot_diag *d)
{
    char *copy = strdup(s);
    if (!copy)
        return nomem(what, d);
    free(*ret);
    *ret = copy;
    return OT_OK;
}

/* The body as a JSON object, at most max bytes. */
static enum ot_err parse_body(const uint8_t *buf, size_t len, size_t max, const char *what,
                              json_t **ret, struct ot_diag *d)
{
    if (len > max)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: larger than %zu bytes", what, max);
    json_t *root = NULL;
    enum ot_err err = ot_json_parse(buf, len, &root, d);
    if (err)
        return ot_diag_prefix(d, err, "%s", what);
    if (!json_is_object(root)) {
        json_decref(root);
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", what);
    }
    *ret = root;
    return OT_OK;
}

/* ot_json_get_str for the kinds whose rule allows some control characters (log lines, documents),
 * which the shared getter refuses outright: type and length here, the characters in check_*. */
static enum ot_err get_str_with_controls(const json_t *obj, const char *key, bool required,
                                         size_t max_len, const char *what, const char **ret,
                                         struct ot_diag *d)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return required ? ot_diag_set(d, OT_ERR_FORMAT, "%s: missing field '%s'", what, key)
                        : OT_OK;
    if (!json_is_string(v))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be a string", what, key);
    if (json_string_length(v) > max_len)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' is longer than %zu bytes", what, key,
                           max_len);
    *ret = json_string_value(v);
    return OT_OK;
}

/* A string field copied into *ret; absent and optional leaves *ret alone. The length is checked
 * before anything is copied; the value rules are the check functions'. */
static enum ot_err get_text(const json_t *obj, const char *key, bool required, enum text_kind kind,
                            const char *what, char **ret, struct ot_diag *d)
{
    const struct text_rule *r = &text_rules[kind];
    const char *s = NULL;
    enum ot_err err = r->controls && *r->controls
                          ? get_str_with_controls(obj, key, required, r->max, what, &s, d)
                          : ot_json_get_str(obj, key, required, r->max, what, &s, d);
    return err || !s ? err : dup_str(s, what, ret, d);
}

/* A string field into a char[size]; absent and optional leaves it alone. */
static enum ot_err get_fixed(const json_t *obj, const char *key, bool required, const char *what,
                             char *out, size_t size, struct ot_diag *d)
{
    const char *s = NULL;
    enum ot_err err = ot_json_get_str(obj, key, required, size - 1, what, &s, d);
    if (!err && s)
        memcpy(out, s, strlen(s) + 1);
    return err;
}

static enum ot_err get_u32(const json_t *obj, const char *key, uint64_t max, const char *what,
                           uint32_t *ret, struct ot_diag *d)
{
    uint64_t v = 0;
    enum ot_err err = ot_json_get_u64(obj, key, true, max, what, &v, d);
    if (!err)
        *ret = (uint32_t)v;
    return err;
}

static enum ot_err get_id(const json_t *obj, const char *key, const char *what, int64_t *ret,
                          struct ot_diag *d)
{
    uint64_t v = 0;
    enum ot_err err = ot_json_get_u64(obj, key, true, INT64_MAX, what, &v, d);
    if (!err)
        *ret = (int64_t)v;
    return err;
}

/* A required string naming a value of an enum that starts at 1 (names[0] unused). */
static enum ot_err get_enum(const json_t *obj, const char *key, const char *const *names, size_t n,
                            const char *what, int *ret, struct ot_diag *d)
{
    const char *s;
    enum ot_err err = ot_json_get_str(obj, key, true, 32, what, &s, d);
    if (err)
        return err;
    int v = enum_value(names, n, s);
    if (v) {
        *ret = v;
        return OT_OK;
    }
    char list[256] = "";
    size_t used = 0;
    for (size_t i = 1; i < n && used < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s'%s'", i > 1 ? ", " : "", names[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be one of %s", what, key, list);
}

/* obj[key] as an object (or an array) of at most max entries; *ret NULL when absent and optional.
 * Too many entries is OT_ERR_LIMIT, found before anything is copied. */
static enum ot_err get_container(const json_t *obj, const char *key, bool required, bool array,
                                 size_t max, const char *what, json_t **ret, struct ot_diag *d)
{
    json_t *v = json_object_get(obj, key);
    *ret = NULL;
    if (!v)
        return required ? ot_diag_set(d, OT_ERR_FORMAT, "%s: missing field '%s'", what, key)
                        : OT_OK;
    if (array ? !json_is_array(v) : !json_is_object(v))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field '%s' must be %s", what, key,
                           array ? "an array" : "an object");
    size_t n = array ? json_array_size(v) : json_object_size(v);
    if (n > max)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s: field '%s' has more than %zu entries", what, key,
                           max);
    *ret = v;
    return OT_OK;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ot_wire_kv *)a)->key, ((const struct ot_wire_kv *)b)->key);
}

static int installed_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ot_wire_installed *)a)->name,
                  ((const struct ot_wire_installed *)b)->name);
}

/* An object of strings (or nulls, where nulls is set) into a key-sorted vector. *ret and *ret_n are
 * set first, so that a release after a failure half-way frees what was copied. */
static enum ot_err get_kvs(const json_t *obj, bool nulls, const char *what, const char *field,
                           struct ot_wire_kv **ret, size_t *ret_n, struct ot_diag *d)
{
    size_t n = json_object_size(obj), i = 0;
    struct ot_wire_kv *kv = calloc(n ? n : 1, sizeof(*kv));
    if (!kv)
        return nomem(what, d);
    *ret = kv;
    *ret_n = n;
    const char *key;
    json_t *v;
    json_object_foreach ((json_t *)obj, key, v) {
        char ex[EXCERPT_MAX + 4];
        if (!json_is_string(v) && !(nulls && json_is_null(v)))
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s['%s'] must be a string%s", what, field,
                               excerpt(key, ex), nulls ? " or null" : "");
        if (json_is_string(v) && json_string_length(v) > OT_WIRE_VALUE_MAX)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s['%s'] is longer than %d bytes", what,
                               field, excerpt(key, ex), OT_WIRE_VALUE_MAX);
        enum ot_err err = dup_str(key, what, &kv[i].key, d);
        if (!err && json_is_string(v))
            err = dup_str(json_string_value(v), what, &kv[i].value, d);
        if (err)
            return err;
        i++;
    }
    qsort(kv, n, sizeof(*kv), kv_cmp);
    return OT_OK;
}

static enum ot_err get_installed_entry(const char *name, const json_t *obj,
                                       struct ot_wire_installed *e, struct ot_diag *d)
{
    char what[WHAT_MAX], ex[EXCERPT_MAX + 4];
    snprintf(what, sizeof(what), "%s: installed['%s']", CHECKIN_REQ, excerpt(name, ex));
    enum ot_err err = dup_str(name, CHECKIN_REQ, &e->name, d);
    if (err)
        return err;
    if (!json_is_object(obj))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", what);
    if ((err = get_text(obj, "version", true, TEXT_VERSION, what, &e->version, d)))
        return err;
    e->has_sha256 = json_object_get(obj, "sha256") != NULL;
    return ot_json_get_hex(obj, "sha256", false, OT_SHA256_LEN, what, e->sha256, d);
}

static enum ot_err get_installed(const json_t *root, struct ot_wire_checkin_req *r,
                                 struct ot_diag *d)
{
    json_t *obj;
    enum ot_err err =
        get_container(root, "installed", true, false, OT_WIRE_LIST_MAX, CHECKIN_REQ, &obj, d);
    if (err)
        return err;
    size_t n = json_object_size(obj), i = 0;
    r->installed = calloc(n ? n : 1, sizeof(*r->installed));
    if (!r->installed)
        return nomem(CHECKIN_REQ, d);
    r->ninstalled = n;
    const char *name;
    json_t *v;
    json_object_foreach (obj, name, v) {
        if ((err = get_installed_entry(name, v, &r->installed[i++], d)))
            return err;
    }
    qsort(r->installed, n, sizeof(*r->installed), installed_cmp);
    return OT_OK;
}

static enum ot_err get_auth_req(const json_t *root, struct ot_wire_auth_req *r, struct ot_diag *d)
{
    json_t *identity;
    enum ot_err err;
    if ((err = get_container(root, "identity", true, false, OT_WIRE_IDENTITY_MAX, AUTH_REQ,
                             &identity, d)) ||
        (err = get_kvs(identity, false, AUTH_REQ, "identity", &r->identity, &r->nidentity, d)) ||
        (err = ot_json_get_b64(root, "public_key", true, OT_SIGN_PK_LEN, AUTH_REQ, r->public_key,
                               d)) ||
        (err = get_fixed(root, "device_type", true, AUTH_REQ, r->device_type,
                         sizeof(r->device_type), d)))
        return err;
    return get_fixed(root, "enrollment_token", false, AUTH_REQ, r->enrollment_token,
                     sizeof(r->enrollment_token), d);
}

/* Only the fields of the status are read: the others are unknown to it, so they are ignored. */
static enum ot_err get_auth_resp(const json_t *root, struct ot_wire_auth_resp *r,
                                 struct ot_diag *d)
{
    int status = 0;
    enum ot_err err;
    if ((err = get_enum(root, "status", auth_status_names, OT_ARRAY_SIZE(auth_status_names),
                        AUTH_RESP, &status, d)) ||
        (err = get_id(root, "device_id", AUTH_RESP, &r->device_id, d)))
        return err;
    r->status = (enum ot_wire_auth_status)status;
    if (r->status == OT_WIRE_AUTH_PENDING)
        return get_u32(root, "retry_after", OT_WIRE_POLL_MAX, AUTH_RESP, &r->retry_after, d);
    if ((err = get_fixed(root, "token", true, AUTH_RESP, r->token, sizeof(r->token), d)))
        return err;
    return get_u32(root, "expires_in", UINT32_MAX, AUTH_RESP, &r->expires_in, d);
}

static enum ot_err get_checkin_req(const json_t *root, struct ot_wire_checkin_req *r,
                                   struct ot_diag *d)
{
    json_t *provides;
    enum ot_err err;
    if ((err = get_fixed(root, "device_type", true, CHECKIN_REQ, r->device_type,
                         sizeof(r->device_type), d)) ||
        (err = get_installed(root, r, d)) ||
        (err = get_container(root, "provides", true, false, OT_WIRE_LIST_MAX, CHECKIN_REQ,
                             &provides, d)))
        return err;
    return get_kvs(provides, false, CHECKIN_REQ, "provides", &r->provides, &r->nprovides, d);
}

static enum ot_err get_download(const json_t *dep, struct ot_wire_checkin_resp *r, const char *what,
                                struct ot_diag *d)
{
    json_t *arr;
    enum ot_err err = get_container(dep, "download", true, true, DOWNLOAD_MAX, what, &arr, d);
    if (err)
        return err;
    size_t n = json_array_size(arr);
    r->download = calloc(n ? n : 1, sizeof(*r->download));
    if (!r->download)
        return nomem(what, d);
    r->ndownload = n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || json_string_length(v) > OT_WIRE_URL_MAX)
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "%s: download[%zu] must be a string of at most %d bytes", what, i,
                               OT_WIRE_URL_MAX);
        if ((err = dup_str(json_string_value(v), what, &r->download[i], d)))
            return err;
    }
    return OT_OK;
}

static enum ot_err get_artifact(const json_t *dep, struct ot_wire_checkin_resp *r,
                                struct ot_diag *d)
{
    const char *what = CHECKIN_RESP ": deployment: artifact";
    json_t *art;
    enum ot_err err = get_container(dep, "artifact", true, false, SIZE_MAX,
                                    CHECKIN_RESP ": deployment", &art, d);
    if (err || (err = get_text(art, "name", true, TEXT_NAME, what, &r->artifact_name, d)) ||
        (err = get_text(art, "version", true, TEXT_VERSION, what, &r->artifact_version, d)) ||
        (err = ot_json_get_u64(art, "size", true, INT64_MAX, what, &r->artifact_size, d)) ||
        (err = ot_json_get_hex(art, "sha256", true, OT_SHA256_LEN, what, r->artifact_sha256, d)) ||
        (err = get_text(art, "manifest", true, TEXT_MANIFEST, what, &r->manifest, d)))
        return err;
    return get_text(art, "signatures", true, TEXT_SIGNATURES, what, &r->signatures, d);
}

/* A "deployment" next to action "none" is not read: there is nothing to do, whatever it says. */
static enum ot_err get_checkin_resp(const json_t *root, struct ot_wire_checkin_resp *r,
                                    struct ot_diag *d)
{
    const char *what = CHECKIN_RESP ": deployment";
    int action = 0;
    json_t *dep;
    enum ot_err err;
    if ((err = get_enum(root, "action", action_names, OT_ARRAY_SIZE(action_names), CHECKIN_RESP,
                        &action, d)) ||
        (err = get_u32(root, "poll_interval", OT_WIRE_POLL_MAX, CHECKIN_RESP, &r->poll_interval,
                       d)) ||
        (err = get_u32(root, "poll_jitter", OT_WIRE_POLL_MAX, CHECKIN_RESP, &r->poll_jitter, d)))
        return err;
    r->action = (enum ot_wire_action)action;
    if (r->action != OT_WIRE_ACTION_INSTALL)
        return OT_OK;
    if ((err = get_container(root, "deployment", true, false, SIZE_MAX, CHECKIN_RESP, &dep, d)) ||
        (err = get_id(dep, "id", what, &r->deployment_id, d)) || (err = get_artifact(dep, r, d)) ||
        (err = get_download(dep, r, what, d)))
        return err;
    json_t *type = json_object_get(dep, "type");
    if (type) {
        int v = json_is_string(type) ? enum_value(type_names, OT_ARRAY_SIZE(type_names),
                                                  json_string_value(type))
                                     : 0;
        if (!v && !(json_is_string(type) && strcmp(json_string_value(type), "forced") == 0))
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "%s: field 'type' must be 'forced', 'soft' or 'download_only'",
                               what);
        r->type = (enum ot_wire_deploy_type)v;
    }
    json_t *allowed = json_object_get(dep, "install_allowed");
    if (allowed && !json_is_boolean(allowed))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: field 'install_allowed' must be a boolean", what);
    r->install_held = allowed && json_is_false(allowed);
    return OT_OK;
}

static enum ot_err get_status_report(const json_t *root, struct ot_wire_status_report *r,
                                     struct ot_diag *d)
{
    int status = 0;
    uint64_t progress = UINT64_MAX;
    enum ot_err err;
    if ((err = get_enum(root, "status", status_names, OT_ARRAY_SIZE(status_names), STATUS_REPORT,
                        &status, d)) ||
        (err = ot_json_get_u64(root, "progress", false, 100, STATUS_REPORT, &progress, d)) ||
        (err = get_text(root, "message", false, TEXT_MESSAGE, STATUS_REPORT, &r->message, d)) ||
        (err = get_text(root, "log", false, TEXT_LOG, STATUS_REPORT, &r->log, d)))
        return err;
    r->status = (enum ot_wire_status)status;
    r->progress = progress == UINT64_MAX ? -1 : (int)progress;
    /* Absent and empty are the same thing: one representation each ("" and NULL). */
    if (!r->message && (err = dup_str("", STATUS_REPORT, &r->message, d)))
        return err;
    if (r->log && !*r->log) {
        free(r->log);
        r->log = NULL;
    }
    return OT_OK;
}

static enum ot_err get_inventory(const json_t *root, struct ot_wire_inventory *r,
                                 struct ot_diag *d)
{
    json_t *attrs;
    enum ot_err err;
    if ((err = get_container(root, "attributes", true, false, OT_WIRE_LIST_MAX, INVENTORY, &attrs,
                             d)) ||
        (err = ot_json_get_bool(root, "replace", true, INVENTORY, &r->replace, d)))
        return err;
    /* Nulls are read whatever replace says; check_inventory refuses them with replace. */
    return get_kvs(attrs, true, INVENTORY, "attributes", &r->attrs, &r->nattrs, d);
}

/* Every decoder: *ret zeroed first; body -> JSON object -> struct (get_*) -> rules (check_*), in a
 * local that is released on any failure and handed over only on success. */

enum ot_err ot_wire_auth_req_decode(const uint8_t *buf, size_t len, struct ot_wire_auth_req *ret,
                                    struct ot_diag *d)
{
    *ret = (struct ot_wire_auth_req){0};
    json_auto_t *root = NULL;
    _cleanup_(ot_wire_auth_req_release) struct ot_wire_auth_req r = {0};
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_BODY_MAX, AUTH_REQ, &root, d)) ||
        (err = get_auth_req(root, &r, d)) || (err = check_auth_req(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    r = (struct ot_wire_auth_req){0};
    return OT_OK;
}

enum ot_err ot_wire_auth_resp_decode(const uint8_t *buf, size_t len, struct ot_wire_auth_resp *ret,
                                     struct ot_diag *d)
{
    *ret = (struct ot_wire_auth_resp){0};
    json_auto_t *root = NULL;
    struct ot_wire_auth_resp r = {0}; /* owns no memory */
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_BODY_MAX, AUTH_RESP, &root, d)) ||
        (err = get_auth_resp(root, &r, d)) || (err = check_auth_resp(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    return OT_OK;
}

enum ot_err ot_wire_checkin_req_decode(const uint8_t *buf, size_t len,
                                       struct ot_wire_checkin_req *ret, struct ot_diag *d)
{
    *ret = (struct ot_wire_checkin_req){0};
    json_auto_t *root = NULL;
    _cleanup_(ot_wire_checkin_req_release) struct ot_wire_checkin_req r = {0};
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_BODY_MAX, CHECKIN_REQ, &root, d)) ||
        (err = get_checkin_req(root, &r, d)) || (err = check_checkin_req(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    r = (struct ot_wire_checkin_req){0};
    return OT_OK;
}

enum ot_err ot_wire_checkin_resp_decode(const uint8_t *buf, size_t len,
                                        struct ot_wire_checkin_resp *ret, struct ot_diag *d)
{
    *ret = (struct ot_wire_checkin_resp){0};
    json_auto_t *root = NULL;
    _cleanup_(ot_wire_checkin_resp_release) struct ot_wire_checkin_resp r = {0};
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_CHECKIN_RESP_MAX, CHECKIN_RESP, &root, d)) ||
        (err = get_checkin_resp(root, &r, d)) || (err = check_checkin_resp(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    r = (struct ot_wire_checkin_resp){0};
    return OT_OK;
}

enum ot_err ot_wire_status_report_decode(const uint8_t *buf, size_t len,
                                         struct ot_wire_status_report *ret, struct ot_diag *d)
{
    *ret = (struct ot_wire_status_report){0};
    json_auto_t *root = NULL;
    _cleanup_(ot_wire_status_report_release) struct ot_wire_status_report r = {0};
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_BODY_MAX, STATUS_REPORT, &root, d)) ||
        (err = get_status_report(root, &r, d)) ||
        (err = check_status_report(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    r = (struct ot_wire_status_report){0};
    return OT_OK;
}

enum ot_err ot_wire_inventory_decode(const uint8_t *buf, size_t len, struct ot_wire_inventory *ret,
                                     struct ot_diag *d)
{
    *ret = (struct ot_wire_inventory){0};
    json_auto_t *root = NULL;
    _cleanup_(ot_wire_inventory_release) struct ot_wire_inventory r = {0};
    enum ot_err err;
    if ((err = parse_body(buf, len, OT_WIRE_BODY_MAX, INVENTORY, &root, d)) ||
        (err = get_inventory(root, &r, d)) || (err = check_inventory(&r, OT_ERR_FORMAT, d)))
        return err;
    *ret = r;
    r = (struct ot_wire_inventory){0};
    return OT_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void kvs_free(struct ot_wire_kv *kv, size_t n)
{
    for (size_t i = 0; kv && i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void ot_wire_auth_req_release(struct ot_wire_auth_req *r)
{
    kvs_free(r->identity, r->nidentity);
    *r = (struct ot_wire_auth_req){0};
}

void ot_wire_checkin_req_release(struct ot_wire_checkin_req *r)
{
    for (size_t i = 0; r->installed && i < r->ninstalled; i++) {
        free(r->installed[i].name);
        free(r->installed[i].version);
    }
    free(r->installed);
    kvs_free(r->provides, r->nprovides);
    *r = (struct ot_wire_checkin_req){0};
}

void ot_wire_checkin_resp_release(struct ot_wire_checkin_resp *r)
{
    free(r->artifact_name);
    free(r->artifact_version);
    free(r->manifest);
    free(r->signatures);
    for (size_t i = 0; r->download && i < r->ndownload; i++)
        free(r->download[i]);
    free(r->download);
    *r = (struct ot_wire_checkin_resp){0};
}

void ot_wire_status_report_release(struct ot_wire_status_report *r)
{
    free(r->message);
    free(r->log);
    *r = (struct ot_wire_status_report){0};
}

void ot_wire_inventory_release(struct ot_wire_inventory *r)
{
    kvs_free(r->attrs, r->nattrs);
    *r = (struct ot_wire_inventory){0};
}
