/* The front of the store (store.h): picks the back end from the URL, checks every argument once,
 * here, for all back ends, and dispatches through the back end's ops table (store_impl.h). */
#include <time.h>

#include "otter/json.h"
#include "store_impl.h"

/* URL prefixes, first match wins; a plain path (no scheme) is SQLite. ops NULL: a back end that is
 * planned but not built yet. keep_prefix: the back end gets the whole URL (libpq parses it). */
static const struct scheme {
    const char *prefix;
    const struct srv_store_ops *ops;
    bool keep_prefix;
} schemes[] = {
    {"sqlite:", &srv__store_sqlite_ops, false},
    {"postgresql://", &srv__store_pg_ops, true},
    {"postgres://", &srv__store_pg_ops, true},
};

/* "name://..." with a URL scheme name before "://", which a file name practically never has. */
static bool has_scheme(const char *url)
{
    size_t n = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
    return n > 0 && strncmp(url + n, "://", 3) == 0;
}

static enum ot_err open_with(const struct scheme *sc, const char *url, struct srv_store **ret,
                             struct ot_diag *d)
{
    if (!sc->ops)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                           "store URL '%.*s...': this back end is not supported by this otterd; "
                           "use sqlite:PATH",
                           (int)strlen(sc->prefix), url);
    const char *target = sc->keep_prefix ? url : url + strlen(sc->prefix);
    if (!*target) /* only "sqlite:" can get here: the other prefixes are the URL itself */
        return ot_diag_set(d, OT_ERR_INVALID, "store URL '%s' names no database", url);
    /* "sqlite:///abs/path" is a path, but "sqlite://host/x" would quietly mean "/host/x". */
    if (!sc->keep_prefix && strncmp(target, "//", 2) == 0 && target[2] != '/')
        return ot_diag_set(d, OT_ERR_INVALID,
                           "store URL '%s' has a host part; write sqlite:/absolute/path", url);
    return sc->ops->open(target, ret, d);
}

enum ot_err srv_store_open(const char *url, struct srv_store **ret, struct ot_diag *d)
{
    if (!url || !*url || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "no store URL given");
    for (size_t i = 0; i < OT_ARRAY_SIZE(schemes); i++)
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            return open_with(&schemes[i], url, ret, d);
    /* Never silently create a file named "mysql://..." for a URL we do not know. The URL itself
     * is not repeated: it may hold a password. */
    if (has_scheme(url))
        return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                           "unknown store URL scheme '%.*s' (use sqlite:PATH or a plain path)",
                           (int)(strstr(url, "://") - url), url);
    return srv__store_sqlite_ops.open(url, ret, d);
}

void srv_store_close(struct srv_store *s)
{
    if (s)
        s->ops->close(s);
}

bool srv_store_is_shared(const struct srv_store *s) { return s->ops != &srv__store_sqlite_ops; }

int srv_store_schema_version(struct srv_store *s) { return s->ops->schema_version(s); }

/* ---- argument checks, the same for every back end -------------------------------------------- */

static enum ot_err check_string(const char *what, const char *s, size_t min, size_t max,
                                struct ot_diag *d)
{
    if (!s)
        return ot_diag_set(d, OT_ERR_INVALID, "%s is missing", what);
    size_t n = strnlen(s, max + 1);
    if (n < min)
        return ot_diag_set(d, OT_ERR_INVALID, "%s is empty", what);
    if (n > max)
        return ot_diag_set(d, OT_ERR_LIMIT, "%s is longer than %zu bytes", what, max);
    return OT_OK;
}

/* 1..SRV_TOKEN_NAME_MAX-1 bytes of printable ASCII: names end up in logs, JSON and the dashboard,
 * so no control characters and nothing that is not valid UTF-8. */
static enum ot_err check_token(const struct srv_token *t, struct ot_diag *d)
{
    size_t n = strnlen(t->name, sizeof(t->name));
    if (n == 0 || n == sizeof(t->name))
        return ot_diag_set(d, OT_ERR_INVALID, "a token name must be 1 to %d bytes",
                           SRV_TOKEN_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if (t->name[i] < 0x20 || t->name[i] > 0x7e)
            return ot_diag_set(d, OT_ERR_INVALID,
                               "a token name must be printable ASCII (byte 0x%02x at %zu)",
                               (unsigned char)t->name[i], i);
    if (t->scopes == 0 || (t->scopes & ~SRV_SCOPE_ALL))
        return ot_diag_set(d, OT_ERR_INVALID, "token scopes 0x%x: none or unknown ones",
                           (unsigned)t->scopes);
    if (t->created_at < 0 || t->expires_at < 0)
        return ot_diag_set(d, OT_ERR_INVALID, "token times must not be negative");
    return OT_OK;
}

static enum ot_err check_limit(size_t limit, size_t max, struct ot_diag *d)
{
    if (limit < 1 || limit > max)
        return ot_diag_set(d, OT_ERR_RANGE, "limit %zu is not between 1 and %zu", limit, max);
    return OT_OK;
}

static enum ot_err check_time(const char *what, int64_t t, struct ot_diag *d)
{
    return t >= 0 ? OT_OK : ot_diag_set(d, OT_ERR_INVALID, "%s must not be negative", what);
}

/* A JSON text of the given type (JSON_OBJECT, JSON_ARRAY), parsed with the strict rules of
 * otter/json.h, so what the store keeps is always valid for whoever reads it back. */
static enum ot_err check_json(const char *what, const char *text, size_t max, json_type type,
                              struct ot_diag *d)
{
    enum ot_err err = check_string(what, text, 1, max, d);
    if (err)
        return err;
    json_t *v = NULL;
    struct ot_diag parse = {0};
    if (ot_json_parse((const uint8_t *)text, strlen(text), &v, &parse) != OT_OK)
        return ot_diag_set(d, OT_ERR_INVALID, "%s is not valid JSON: %s", what, parse.msg);
    bool ok = json_typeof(v) == type;
    json_decref(v);
    if (!ok)
        return ot_diag_set(d, OT_ERR_INVALID, "%s must be a JSON %s", what,
                           type == JSON_OBJECT ? "object" : "array");
    return OT_OK;
}

/* 1..max bytes of printable ASCII (0x20..0x7e), like token names: these end up in logs, JSON and
 * the dashboard. */
static enum ot_err check_printable(const char *what, const char *s, size_t max, struct ot_diag *d)
{
    enum ot_err err = check_string(what, s, 1, max, d);
    for (size_t i = 0; !err && s[i]; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            err = ot_diag_set(d, OT_ERR_INVALID, "%s must be printable ASCII (byte 0x%02x at %zu)",
                              what, (unsigned char)s[i], i);
    return err;
}

/* [A-Za-z0-9._-]{1,63}: tags go into URLs and filters unquoted, and the back ends join them with
 * blanks (srv__store_split_tags). Release channels follow the same rule, for the same reasons. */
bool srv_store_name_valid(const char *name)
{
    size_t n = strnlen(name, SRV_TAG_MAX);
    size_t ok = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
    return n > 0 && n < SRV_TAG_MAX && ok == n;
}

static enum ot_err check_name(const char *what, const char *name, struct ot_diag *d)
{
    if (!name)
        return ot_diag_set(d, OT_ERR_INVALID, "a %s is missing", what);
    size_t n = strnlen(name, SRV_TAG_MAX);
    if (!srv_store_name_valid(name))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "%s '%.*s' is not 1 to %d of the characters A-Z a-z 0-9 . _ -", what,
                           (int)OT_MIN(n, (size_t)SRV_TAG_MAX - 1), name, SRV_TAG_MAX - 1);
    return OT_OK;
}

static enum ot_err check_tag(const char *tag, struct ot_diag *d)
{
    return check_name("tag", tag, d);
}

static enum ot_err check_channel(const char *channel, struct ot_diag *d)
{
    return check_name("channel", channel, d);
}

static int compare_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The tag set as the back ends want it: checked, sorted, duplicates merged, at most
 * SRV_DEVICE_TAGS_MAX. *ret (malloc'd, NULL when there are none) points into tags. */
static enum ot_err normalize_tags(const char *const *tags, size_t n, const char ***ret,
                                  size_t *ret_n, struct ot_diag *d)
{
    *ret = NULL;
    *ret_n = 0;
    if (n && !tags)
        return ot_diag_set(d, OT_ERR_INVALID, "no tags given");
    for (size_t i = 0; i < n; i++) {
        enum ot_err err = check_tag(tags[i], d);
        if (err)
            return err;
    }
    if (n == 0)
        return OT_OK;
    const char **sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    memcpy(sorted, tags, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), compare_str);
    size_t m = 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i], sorted[m - 1]) != 0)
            sorted[m++] = sorted[i];
    if (m > SRV_DEVICE_TAGS_MAX) {
        free(sorted);
        return ot_diag_set(d, OT_ERR_LIMIT, "%zu tags: a device has at most %d", m,
                           SRV_DEVICE_TAGS_MAX);
    }
    *ret = sorted;
    *ret_n = m;
    return OT_OK;
}

enum ot_err srv__store_split_tags(const char *joined, char ***ret, size_t *ret_n,
                                  struct ot_diag *d)
{
    *ret = NULL;
    *ret_n = 0;
    const char *start = joined ? joined + strspn(joined, " ") : "";
    size_t n = 0;
    for (const char *p = start; *p; p += strspn(p, " "), n++)
        p += strcspn(p, " ");
    if (n == 0)
        return OT_OK;
    char **tags = calloc(n, sizeof(*tags));
    if (!tags)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    size_t i = 0;
    for (const char *p = start; *p; p += strspn(p, " "), i++) {
        size_t len = strcspn(p, " ");
        if (!(tags[i] = strndup(p, len))) {
            for (size_t k = 0; k < i; k++)
                free(tags[k]);
            free(tags);
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        }
        p += len;
    }
    qsort(tags, n, sizeof(*tags), compare_str); /* byte order, whatever the database collates */
    *ret = tags;
    *ret_n = n;
    return OT_OK;
}

static enum ot_err check_device_status(enum srv_device_status st, bool any_ok, struct ot_diag *d)
{
    if ((any_ok && st == 0) || (st >= SRV_DEVICE_PENDING && st <= SRV_DEVICE_DECOMMISSIONED))
        return OT_OK;
    return ot_diag_set(d, OT_ERR_INVALID, "unknown device status %d", (int)st);
}

static enum ot_err check_device_type(const char *type, struct ot_diag *d)
{
    return check_string("device type", type, 0, SRV_DEVICE_TYPE_MAX - 1, d);
}

static enum ot_err check_device(const struct srv_device *dev, struct ot_diag *d)
{
    enum ot_err err = check_device_status(dev->status, false, d);
    if (!err && strnlen(dev->device_type, sizeof(dev->device_type)) == sizeof(dev->device_type))
        err = ot_diag_set(d, OT_ERR_LIMIT, "device type is longer than %d bytes",
                          SRV_DEVICE_TYPE_MAX - 1);
    if (!err)
        err = check_json("device identity", dev->identity, SRV_DEVICE_IDENTITY_MAX, JSON_OBJECT,
                         d);
    if (!err && dev->attributes)
        err = check_json("device attributes", dev->attributes, SRV_DEVICE_JSON_MAX, JSON_OBJECT,
                         d);
    if (!err && dev->installed)
        err = check_json("installed payloads", dev->installed, SRV_DEVICE_JSON_MAX, JSON_OBJECT,
                         d);
    if (!err)
        err = check_time("device creation time", dev->created_at, d);
    return err;
}

static bool is_sha256_hex(const char *s)
{
    return strnlen(s, SRV_SHA256_HEX) == SRV_SHA256_HEX - 1 &&
           strspn(s, "0123456789abcdef") == SRV_SHA256_HEX - 1;
}

static enum ot_err check_artifact(const struct srv_artifact *a, struct ot_diag *d)
{
    enum ot_err err = check_string("artifact name", a->name, 1, SRV_ARTIFACT_FIELD_MAX, d);
    if (!err)
        err = check_string("artifact version", a->version, 1, SRV_ARTIFACT_FIELD_MAX, d);
    if (!err && !is_sha256_hex(a->sha256))
        err = ot_diag_set(d, OT_ERR_INVALID, "artifact sha256 is not 64 lower-case hex digits");
    if (!err && a->size > INT64_MAX)
        err = ot_diag_set(d, OT_ERR_RANGE, "artifact size %llu is too large",
                          (unsigned long long)a->size);
    if (!err)
        err = check_string("artifact manifest", a->manifest, 1, SRV_ARTIFACT_MANIFEST_MAX, d);
    if (!err)
        err = check_string("artifact signatures", a->signatures, 1, SRV_ARTIFACT_SIGNATURES_MAX,
                           d);
    if (!err)
        err = check_json("artifact device types", a->device_types, SRV_DEVICE_JSON_MAX,
                         JSON_ARRAY, d);
    if (!err)
        err = check_time("artifact creation time", a->created_at, d);
    if (!err)
        err = check_string("artifact uploader", a->uploaded_by, 1, SRV_AUDIT_FIELD_MAX, d);
    if (!err && a->channel && *a->channel) /* NULL and "" are no channel */
        err = check_channel(a->channel, d);
    return err;
}

static enum ot_err check_deployment(const struct srv_deployment *dep, struct ot_diag *d)
{
    enum ot_err err = check_printable("deployment name", dep->name, SRV_DEPLOYMENT_NAME_MAX - 1, d);
    if (!err)
        err = check_json("deployment target", dep->target, SRV_DEPLOYMENT_TARGET_MAX, JSON_OBJECT,
                         d);
    if (!err)
        err = check_time("deployment creation time", dep->created_at, d);
    if (!err)
        err = check_string("deployment creator", dep->created_by, 1, SRV_AUDIT_FIELD_MAX, d);
    return err;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A device listed twice would get two rows; the database would refuse the second one with a
 * message that names no device. */
static enum ot_err check_unique_ids(const int64_t *ids, size_t n, struct ot_diag *d)
{
    _cleanup_free_ int64_t *sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    memcpy(sorted, ids, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), compare_i64);
    for (size_t i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1])
            return ot_diag_set(d, OT_ERR_INVALID, "device %lld is listed twice",
                               (long long)sorted[i]);
    return OT_OK;
}

static enum ot_err check_message(const char *message, struct ot_diag *d)
{
    return message ? check_string("status message", message, 0, SRV_DD_MESSAGE_MAX, d) : OT_OK;
}

/* ---- dispatch -------------------------------------------------------------------------------- */

enum ot_err srv_store_meta_get(struct srv_store *s, const char *key, char **ret, struct ot_diag *d)
{
    enum ot_err err = check_string("meta key", key, 1, SRV_META_KEY_MAX, d);
    return err ? err : s->ops->meta_get(s, key, ret, d);
}

enum ot_err srv_store_meta_set(struct srv_store *s, const char *key, const char *value,
                               struct ot_diag *d)
{
    enum ot_err err = check_string("meta key", key, 1, SRV_META_KEY_MAX, d);
    if (!err)
        err = check_string("meta value", value, 0, SRV_META_VALUE_MAX, d);
    return err ? err : s->ops->meta_set(s, key, value, d);
}

enum ot_err srv_store_token_create(struct srv_store *s, struct srv_token *t, struct ot_diag *d)
{
    if (!t)
        return ot_diag_set(d, OT_ERR_INVALID, "no token given");
    enum ot_err err = check_token(t, d);
    return err ? err : s->ops->token_create(s, t, d);
}

enum ot_err srv_store_token_by_hash(struct srv_store *s, const uint8_t hash[SRV_TOKEN_HASH_LEN],
                                    struct srv_token *ret, struct ot_diag *d)
{
    if (!hash || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "no token hash given");
    return s->ops->token_by_hash(s, hash, ret, d);
}

enum ot_err srv_store_token_list(struct srv_store *s, struct srv_token **ret, size_t *ret_n,
                                 struct ot_diag *d)
{
    return s->ops->token_list(s, ret, ret_n, d);
}

enum ot_err srv_store_token_revoke(struct srv_store *s, int64_t id, struct ot_diag *d)
{
    return s->ops->token_revoke(s, id, d);
}

enum ot_err srv_store_audit_add(struct srv_store *s, const char *actor, const char *action,
                                const char *object, const char *detail, struct ot_diag *d)
{
    enum ot_err err = check_string("audit actor", actor, 1, SRV_AUDIT_FIELD_MAX, d);
    if (!err)
        err = check_string("audit action", action, 1, SRV_AUDIT_FIELD_MAX, d);
    if (!err)
        err = check_string("audit object", object, 1, SRV_AUDIT_FIELD_MAX, d);
    if (!err && detail)
        err = check_string("audit detail", detail, 0, SRV_AUDIT_DETAIL_MAX, d);
    return err ? err : s->ops->audit_add(s, (int64_t)time(NULL), actor, action, object, detail, d);
}

enum ot_err srv_store_audit_list(struct srv_store *s, int64_t after_id, size_t limit,
                                 struct srv_audit **ret, size_t *ret_n, struct ot_diag *d)
{
    if (limit < 1 || limit > SRV_AUDIT_LIST_MAX)
        return ot_diag_set(d, OT_ERR_RANGE, "limit %zu is not between 1 and %d", limit,
                           SRV_AUDIT_LIST_MAX);
    return s->ops->audit_list(s, after_id, limit, ret, ret_n, d);
}

void srv_audit_list_free(struct srv_audit *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].actor);
        free(list[i].action);
        free(list[i].object);
        free(list[i].detail);
    }
    free(list);
}

/* ---- devices --------------------------------------------------------------------------------- */

enum ot_err srv_store_device_create(struct srv_store *s, struct srv_device *d, struct ot_diag *diag)
{
    if (!d)
        return ot_diag_set(diag, OT_ERR_INVALID, "no device given");
    _cleanup_free_ const char **tags = NULL;
    size_t ntags = 0;
    enum ot_err err = check_device(d, diag);
    if (!err)
        err = normalize_tags((const char *const *)d->tags, d->ntags, &tags, &ntags, diag);
    if (err)
        return err;
    struct srv_device row = *d;
    row.updated_at = row.created_at;
    row.last_seen = 0;
    row.attributes = d->attributes ? d->attributes : (char *)"{}";
    row.installed = d->installed ? d->installed : (char *)"{}";
    row.tags = (char **)tags;
    row.ntags = ntags;
    int64_t id = 0;
    err = s->ops->device_create(s, &row, &id, diag);
    if (!err)
        d->id = id;
    return err;
}

enum ot_err srv_store_device_get(struct srv_store *s, int64_t id, struct srv_device *ret,
                                 struct ot_diag *diag)
{
    if (!ret)
        return ot_diag_set(diag, OT_ERR_INVALID, "nowhere to put the device");
    return s->ops->device_get(s, id, ret, diag);
}

enum ot_err srv_store_device_by_pubkey(struct srv_store *s,
                                       const uint8_t pubkey[SRV_DEVICE_PUBKEY_LEN],
                                       struct srv_device *ret, struct ot_diag *diag)
{
    if (!pubkey || !ret)
        return ot_diag_set(diag, OT_ERR_INVALID, "no public key given");
    return s->ops->device_by_pubkey(s, pubkey, ret, diag);
}

enum ot_err srv_store_device_set_status(struct srv_store *s, int64_t id,
                                        enum srv_device_status status, int64_t now,
                                        struct ot_diag *diag)
{
    enum ot_err err = check_device_status(status, false, diag);
    if (!err)
        err = check_time("time", now, diag);
    return err ? err : s->ops->device_set_status(s, id, status, now, diag);
}

enum ot_err srv_store_device_set_installed(struct srv_store *s, int64_t id, const char *device_type,
                                           const char *installed, int64_t now,
                                           struct ot_diag *diag)
{
    enum ot_err err = check_device_type(device_type, diag);
    if (!err)
        err = check_json("installed payloads", installed, SRV_DEVICE_JSON_MAX, JSON_OBJECT, diag);
    if (!err)
        err = check_time("time", now, diag);
    return err ? err : s->ops->device_set_installed(s, id, device_type, installed, now, diag);
}

enum ot_err srv_store_device_set_attributes(struct srv_store *s, int64_t id, const char *attributes,
                                            int64_t now, struct ot_diag *diag)
{
    enum ot_err err = check_json("device attributes", attributes, SRV_DEVICE_JSON_MAX,
                                 JSON_OBJECT, diag);
    if (!err)
        err = check_time("time", now, diag);
    return err ? err : s->ops->device_set_attributes(s, id, attributes, now, diag);
}

enum ot_err srv_store_device_set_tags(struct srv_store *s, int64_t id, const char *const *tags,
                                      size_t ntags, int64_t now, struct ot_diag *diag)
{
    _cleanup_free_ const char **sorted = NULL;
    size_t n = 0;
    enum ot_err err = normalize_tags(tags, ntags, &sorted, &n, diag);
    if (!err)
        err = check_time("time", now, diag);
    return err ? err : s->ops->device_set_tags(s, id, sorted, n, now, diag);
}

/* No check of the times: this is a batch from the check-in path, retried as a whole when it fails,
 * and max() makes any value harmless. */
enum ot_err srv_store_device_touch(struct srv_store *s, const int64_t *ids, const int64_t *at,
                                   size_t n, struct ot_diag *diag)
{
    if (n == 0)
        return OT_OK;
    if (!ids || !at)
        return ot_diag_set(diag, OT_ERR_INVALID, "no device ids or times given");
    return s->ops->device_touch(s, ids, at, n, diag);
}

enum ot_err srv_store_device_list(struct srv_store *s, const struct srv_device_filter *f,
                                  struct srv_device **ret, size_t *ret_n, struct ot_diag *diag)
{
    if (!f || !ret || !ret_n)
        return ot_diag_set(diag, OT_ERR_INVALID, "no device filter given");
    enum ot_err err = check_limit(f->limit, SRV_LIST_MAX, diag);
    if (!err)
        err = check_device_status(f->status, true, diag);
    if (!err && f->tag)
        err = check_tag(f->tag, diag);
    if (!err && f->device_type)
        err = check_device_type(f->device_type, diag);
    return err ? err : s->ops->device_list(s, f, ret, ret_n, diag);
}

enum ot_err srv_store_device_ids_by_tag(struct srv_store *s, const char *tag, int64_t **ret,
                                        size_t *ret_n, struct ot_diag *diag)
{
    if (!ret || !ret_n)
        return ot_diag_set(diag, OT_ERR_INVALID, "nowhere to put the ids");
    enum ot_err err = check_tag(tag, diag);
    return err ? err : s->ops->device_ids_by_tag(s, tag, ret, ret_n, diag);
}

void srv_device_release(struct srv_device *d)
{
    if (!d)
        return;
    free(d->identity);
    free(d->attributes);
    free(d->installed);
    for (size_t i = 0; d->tags && i < d->ntags; i++)
        free(d->tags[i]);
    free(d->tags);
    memset(d, 0, sizeof(*d));
}

void srv_device_list_free(struct srv_device *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_device_release(&list[i]);
    free(list);
}

/* ---- artifacts ------------------------------------------------------------------------------- */

enum ot_err srv_store_artifact_create(struct srv_store *s, struct srv_artifact *a,
                                      struct ot_diag *d)
{
    if (!a)
        return ot_diag_set(d, OT_ERR_INVALID, "no artifact given");
    int64_t id = 0;
    enum ot_err err = check_artifact(a, d);
    if (err)
        return err;
    struct srv_artifact row = *a;
    if (!row.channel)
        row.channel = (char *)"";
    err = s->ops->artifact_create(s, &row, &id, d);
    if (!err)
        a->id = id;
    return err;
}

enum ot_err srv_store_artifact_get(struct srv_store *s, int64_t id, struct srv_artifact *ret,
                                   struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the artifact");
    return s->ops->artifact_get(s, id, ret, d);
}

enum ot_err srv_store_artifact_by_sha256(struct srv_store *s, const char *sha256_hex,
                                         struct srv_artifact *ret, struct ot_diag *d)
{
    if (!sha256_hex || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "no sha256 given");
    if (!is_sha256_hex(sha256_hex))
        return ot_diag_set(d, OT_ERR_INVALID, "'%.64s' is not 64 lower-case hex digits",
                           sha256_hex);
    return s->ops->artifact_by_sha256(s, sha256_hex, ret, d);
}

enum ot_err srv_store_artifact_list(struct srv_store *s, int64_t after_id, size_t limit,
                                    struct srv_artifact **ret, size_t *ret_n, struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the artifacts");
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    return err ? err : s->ops->artifact_list(s, after_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_artifact_delete(struct srv_store *s, int64_t id, struct ot_diag *d)
{
    return s->ops->artifact_delete(s, id, d);
}

void srv_artifact_release(struct srv_artifact *a)
{
    if (!a)
        return;
    free(a->name);
    free(a->version);
    free(a->manifest);
    free(a->signatures);
    free(a->device_types);
    free(a->uploaded_by);
    free(a->channel);
    memset(a, 0, sizeof(*a));
}

void srv_artifact_list_free(struct srv_artifact *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_artifact_release(&list[i]);
    free(list);
}

/* ---- deployment templates -------------------------------------------------------------------- */

static enum ot_err check_template(const struct srv_template *t, struct ot_diag *d)
{
    if (!t)
        return ot_diag_set(d, OT_ERR_INVALID, "no template given");
    enum ot_err err = check_printable("template name", t->name, SRV_DEPLOYMENT_NAME_MAX - 1, d);
    if (!err)
        err = check_channel(t->channel, d);
    if (!err)
        err = check_json("template body", t->body, SRV_TEMPLATE_BODY_MAX, JSON_OBJECT, d);
    if (!err)
        err = check_time("template creation time", t->created_at, d);
    if (!err)
        err = check_string("template creator", t->created_by, 1, SRV_AUDIT_FIELD_MAX, d);
    return err;
}

enum ot_err srv_store_template_create(struct srv_store *s, struct srv_template *t,
                                      struct ot_diag *d)
{
    int64_t id = 0;
    enum ot_err err = check_template(t, d);
    if (!err)
        err = s->ops->template_create(s, t, &id, d);
    if (!err)
        t->id = id;
    return err;
}

enum ot_err srv_store_template_get(struct srv_store *s, int64_t id, struct srv_template *ret,
                                   struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the template");
    return s->ops->template_get(s, id, ret, d);
}

enum ot_err srv_store_template_list(struct srv_store *s, const char *channel, int64_t after_id,
                                    size_t limit, struct srv_template **ret, size_t *ret_n,
                                    struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the templates");
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    if (!err && channel)
        err = check_channel(channel, d);
    return err ? err : s->ops->template_list(s, channel, after_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_template_set_enabled(struct srv_store *s, int64_t id, bool enabled,
                                           struct ot_diag *d)
{
    return s->ops->template_set_enabled(s, id, enabled, d);
}

enum ot_err srv_store_template_delete(struct srv_store *s, int64_t id, struct ot_diag *d)
{
    return s->ops->template_delete(s, id, d);
}

void srv_template_release(struct srv_template *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->channel);
    free(t->body);
    free(t->created_by);
    memset(t, 0, sizeof(*t));
}

void srv_template_list_free(struct srv_template *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_template_release(&list[i]);
    free(list);
}

/* ---- deployments ----------------------------------------------------------------------------- */

static bool all_true(const bool *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!v[i])
            return false;
    return true;
}

/* What a rollout row may hold, for create (with_policy) and update. A NULL reason is "". */
static enum ot_err check_rollout(const struct srv_rollout *r, bool with_policy, struct ot_diag *d)
{
    if (!r)
        return ot_diag_set(d, OT_ERR_INVALID, "no rollout given");
    enum ot_err err = OT_OK;
    if (with_policy)
        err = check_string("rollout policy", r->policy, 1, SRV_ROLLOUT_POLICY_MAX, d);
    if (!err && r->reason)
        err = check_string("rollout reason", r->reason, 0, SRV_ROLLOUT_REASON_MAX - 1, d);
    if (!err && (r->state < SRV_ROLLOUT_WAITING_APPROVAL || r->state >= SRV_ROLLOUT__MAX))
        err = ot_diag_set(d, OT_ERR_INVALID, "unknown rollout state %d", (int)r->state);
    if (!err && (r->phase < 0 || r->released < 0))
        err = ot_diag_set(d, OT_ERR_INVALID, "rollout phase %lld or released %lld is negative",
                          (long long)r->phase, (long long)r->released);
    if (!err)
        err = check_time("rollout phase start", r->phase_started_at, d);
    if (!err)
        err = check_time("rollout phase ready time", r->phase_ready_at, d);
    if (!err)
        err = check_time("rollout update time", r->updated_at, d);
    return err;
}

/* seqs[i] is device i's place in the release order: 1..n, each once. */
static enum ot_err check_seqs(const int64_t *seqs, const int64_t *ids, size_t n,
                              struct ot_diag *d)
{
    if (!seqs)
        return ot_diag_set(d, OT_ERR_INVALID, "no rollout order (seqs) given");
    _cleanup_free_ bool *seen = calloc(n + 1, sizeof(*seen));
    if (!seen)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (seqs[i] < 1 || (uint64_t)seqs[i] > n)
            return ot_diag_set(d, OT_ERR_INVALID,
                               "seq %lld of device %lld is not between 1 and %zu",
                               (long long)seqs[i], (long long)ids[i], n);
        if (seen[seqs[i]])
            return ot_diag_set(d, OT_ERR_INVALID, "seq %lld is given twice (device %lld)",
                               (long long)seqs[i], (long long)ids[i]);
        seen[seqs[i]] = true;
    }
    return OT_OK;
}

/* Both creates: without a rollout (seqs and rollout NULL) or with one (both given). */
static enum ot_err create_deployment(struct srv_store *s, struct srv_deployment *dep,
                                     const int64_t *device_ids, const bool *skipped,
                                     const int64_t *seqs, size_t ndevices,
                                     const char *skip_message, const struct srv_rollout *rollout,
                                     struct ot_diag *d)
{
    _cleanup_free_ bool *none = skipped ? NULL : calloc(ndevices, sizeof(*none));
    if (!skipped && !none)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct srv_deployment row = *dep;
    bool finished = all_true(skipped ? skipped : none, ndevices);
    row.status = finished ? SRV_DEPLOYMENT_FINISHED : SRV_DEPLOYMENT_ACTIVE;
    row.finished_at = finished ? dep->created_at : 0;
    row.ndevices = ndevices;
    struct srv_rollout r = rollout ? *rollout : (struct srv_rollout){0};
    if (rollout && !r.reason)
        r.reason = "";
    int64_t id = 0;
    enum ot_err err = s->ops->deployment_create(s, &row, device_ids, skipped ? skipped : none,
                                                seqs, ndevices, skip_message ? skip_message : "",
                                                rollout ? &r : NULL, &id, d);
    if (err)
        return err;
    dep->id = id;
    dep->status = row.status;
    dep->finished_at = row.finished_at;
    dep->ndevices = ndevices;
    return OT_OK;
}

static enum ot_err check_deployment_create(const struct srv_deployment *dep,
                                           const int64_t *device_ids, size_t ndevices,
                                           const char *skip_message, struct ot_diag *d)
{
    if (!dep)
        return ot_diag_set(d, OT_ERR_INVALID, "no deployment given");
    if (ndevices == 0 || !device_ids)
        return ot_diag_set(d, OT_ERR_INVALID, "a deployment needs at least one device");
    enum ot_err err = check_deployment(dep, d);
    if (!err)
        err = check_message(skip_message, d);
    if (!err)
        err = check_unique_ids(device_ids, ndevices, d);
    return err;
}

enum ot_err srv_store_deployment_create(struct srv_store *s, struct srv_deployment *dep,
                                        const int64_t *device_ids, const bool *skipped,
                                        size_t ndevices, const char *skip_message,
                                        struct ot_diag *d)
{
    enum ot_err err = check_deployment_create(dep, device_ids, ndevices, skip_message, d);
    return err ? err
               : create_deployment(s, dep, device_ids, skipped, NULL, ndevices, skip_message,
                                   NULL, d);
}

enum ot_err srv_store_deployment_create_rollout(struct srv_store *s, struct srv_deployment *dep,
                                                const int64_t *device_ids, const bool *skipped,
                                                const int64_t *seqs, size_t ndevices,
                                                const char *skip_message,
                                                const struct srv_rollout *rollout,
                                                struct ot_diag *d)
{
    enum ot_err err = check_deployment_create(dep, device_ids, ndevices, skip_message, d);
    if (!err)
        err = check_seqs(seqs, device_ids, ndevices, d);
    if (!err)
        err = check_rollout(rollout, true, d);
    return err ? err
               : create_deployment(s, dep, device_ids, skipped, seqs, ndevices, skip_message,
                                   rollout, d);
}

enum ot_err srv_store_deployment_get(struct srv_store *s, int64_t id, struct srv_deployment *ret,
                                     struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the deployment");
    return s->ops->deployment_get(s, id, ret, d);
}

enum ot_err srv_store_deployment_list(struct srv_store *s, enum srv_deployment_status status,
                                      int64_t before_id, size_t limit,
                                      struct srv_deployment **ret, size_t *ret_n,
                                      struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the deployments");
    if (status != 0 && (status < SRV_DEPLOYMENT_ACTIVE || status > SRV_DEPLOYMENT_CANCELLED))
        return ot_diag_set(d, OT_ERR_INVALID, "unknown deployment status %d", (int)status);
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    return err ? err : s->ops->deployment_list(s, status, before_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_deployment_rollup(struct srv_store *s, int64_t id,
                                        uint64_t counts[SRV_DD__MAX], struct ot_diag *d)
{
    if (!counts)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the counts");
    return s->ops->deployment_rollup(s, id, counts, d);
}

enum ot_err srv_store_deployment_devices(struct srv_store *s, int64_t id, int64_t after_device_id,
                                         size_t limit, struct srv_dd **ret, size_t *ret_n,
                                         struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the rows");
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    return err ? err : s->ops->deployment_devices(s, id, after_device_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_deployment_cancel(struct srv_store *s, int64_t id, int64_t now,
                                        struct ot_diag *d)
{
    enum ot_err err = check_time("time", now, d);
    return err ? err : s->ops->deployment_cancel(s, id, now, d);
}

enum ot_err srv_store_device_next(struct srv_store *s, int64_t device_id, struct srv_dd *ret,
                                  struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the row");
    return s->ops->device_next(s, device_id, ret, d);
}

enum ot_err srv_store_dd_get(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                             struct srv_dd *ret, struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the row");
    return s->ops->dd_get(s, deployment_id, device_id, ret, d);
}

static bool device_reports(enum srv_dd_status status)
{
    return (status >= SRV_DD_DOWNLOADING && status <= SRV_DD_ROLLED_BACK) ||
           status == SRV_DD_WAITING;
}

/* Whether this failure report was already taken as the cause of the row's latest retry (a device
 * whose answer got lost sends its report again): the row is PENDING, and its message is the one
 * that report made. Such a repeat must not use up another retry. */
static enum ot_err repeated_failure(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                                    enum srv_dd_status status, const char *message,
                                    uint32_t retries, bool *ret, struct ot_diag *d)
{
    struct srv_dd row = {0};
    *ret = false;
    enum ot_err err = srv_store_dd_get(s, deployment_id, device_id, &row, d);
    if (err == OT_ERR_NOENT) { /* the report itself says so */
        ot_diag_clear(d);
        return OT_OK;
    }
    if (!err && row.status == SRV_DD_PENDING && row.attempts > 0) {
        char expect[SRV_DD_MESSAGE_MAX + 1];
        srv__store_retry_message(expect, row.attempts, retries, status, message);
        *ret = strcmp(expect, row.message ? row.message : "") == 0;
    }
    srv_dd_release(&row);
    return err;
}

enum ot_err srv_store_dd_report_retry(struct srv_store *s, int64_t deployment_id,
                                      int64_t device_id, enum srv_dd_status status, int progress,
                                      const char *message, const char *log, int64_t at,
                                      uint32_t retries, bool *ret_applied, bool *ret_retried,
                                      enum srv_dd_status *ret_current, struct ot_diag *d)
{
    if (!ret_applied)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the outcome");
    if (!device_reports(status))
        return ot_diag_set(d, OT_ERR_INVALID, "status %d cannot be reported by a device",
                           (int)status);
    if (progress < -1 || progress > 100)
        return ot_diag_set(d, OT_ERR_RANGE, "progress %d is not between -1 and 100", progress);
    enum ot_err err = check_message(message, d);
    if (!err && log)
        err = check_string("report log", log, 0, SRV_DD_LOG_MAX, d);
    if (!err)
        err = check_time("report time", at, d);
    if (err)
        return err;
    enum srv_dd_status current = 0;
    bool retried = false;
    if (retries && (status == SRV_DD_FAILURE || status == SRV_DD_ROLLED_BACK) &&
        (err = repeated_failure(s, deployment_id, device_id, status, message ? message : "",
                                retries, &retried, d)) == OT_OK &&
        retried) { /* a repeat of the report that caused the retry: nothing changes */
        *ret_applied = false;
        if (ret_current)
            *ret_current = SRV_DD_PENDING;
        if (ret_retried)
            *ret_retried = false;
        return OT_OK;
    }
    if (err)
        return err;
    err = s->ops->dd_report(s, deployment_id, device_id, status, progress, message ? message : "",
                            log, at, retries, ret_applied, &retried, &current, d);
    if (!err && ret_current)
        *ret_current = current;
    if (!err && ret_retried)
        *ret_retried = retried;
    return err;
}

enum ot_err srv_store_dd_report(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                                enum srv_dd_status status, int progress, const char *message,
                                const char *log, int64_t at, bool *ret_applied,
                                enum srv_dd_status *ret_current, struct ot_diag *d)
{
    return srv_store_dd_report_retry(s, deployment_id, device_id, status, progress, message, log,
                                     at, 0, ret_applied, NULL, ret_current, d);
}

/* Where a cut may fall: not before a UTF-8 continuation byte (10xxxxxx), so that the text stays
 * valid UTF-8 for the database (PostgreSQL refuses anything else) and the dashboard. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

void srv__store_retry_message(char *out, uint32_t attempt, uint32_t retries,
                              enum srv_dd_status status, const char *message)
{
    /* message is at most SRV_DD_MESSAGE_MAX bytes (checked above), the rest fits in 64 */
    char buf[SRV_DD_MESSAGE_MAX + 64];
    int n = snprintf(buf, sizeof(buf), "retry %u of %u after %s: %s", attempt, retries,
                     status == SRV_DD_ROLLED_BACK ? "rolled_back" : "failure", message);
    size_t len = OT_MIN((size_t)OT_MAX(n, 0), sizeof(buf) - 1);
    if (len > SRV_DD_MESSAGE_MAX)
        len = utf8_cut(buf, SRV_DD_MESSAGE_MAX);
    memcpy(out, buf, len);
    out[len] = '\0';
}

enum ot_err srv_store_deployment_add_device(struct srv_store *s, int64_t deployment_id,
                                            int64_t device_id, bool skipped,
                                            const char *skip_message, int64_t at,
                                            bool *ret_added, int64_t *ret_seq, struct ot_diag *d)
{
    if (!ret_added)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the outcome");
    enum ot_err err = check_message(skip_message, d);
    if (!err)
        err = check_time("time", at, d);
    if (err)
        return err;
    bool added = false;
    int64_t seq = 0;
    err = s->ops->deployment_add_device(s, deployment_id, device_id, skipped,
                                        skip_message ? skip_message : "", at, &added, &seq, d);
    if (err)
        return err;
    *ret_added = added;
    if (added && ret_seq)
        *ret_seq = seq;
    return OT_OK;
}

enum ot_err srv_store_dd_skip(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                              const char *message, int64_t at, struct ot_diag *d)
{
    enum ot_err err = check_message(message, d);
    if (!err)
        err = check_time("time", at, d);
    return err ? err : s->ops->dd_skip(s, deployment_id, device_id, message ? message : "", at, d);
}

enum ot_err srv_store_dd_events(struct srv_store *s, int64_t deployment_id, int64_t device_id,
                                int64_t after_id, size_t limit, struct srv_dd_event **ret,
                                size_t *ret_n, struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the events");
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    return err ? err
               : s->ops->dd_events(s, deployment_id, device_id, after_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_deployments_generation(struct srv_store *s, int64_t *ret, struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the generation");
    return s->ops->deployments_generation(s, ret, d);
}

/* ---- rollouts -------------------------------------------------------------------------------- */

/* A decision's kind (1..SRV_ROLLOUT_KIND_MAX-1 bytes) and message (NULL is ""). */
static enum ot_err check_decision(const char *kind, const char *message, struct ot_diag *d)
{
    enum ot_err err = check_string("rollout event kind", kind, 1, SRV_ROLLOUT_KIND_MAX - 1, d);
    if (!err && message)
        err = check_string("rollout event message", message, 0, SRV_ROLLOUT_REASON_MAX - 1, d);
    return err;
}

static enum ot_err check_phase(int64_t phase, struct ot_diag *d)
{
    return phase >= 0 ? OT_OK
                      : ot_diag_set(d, OT_ERR_INVALID, "rollout phase %lld is negative",
                                    (long long)phase);
}

enum ot_err srv_store_rollout_get(struct srv_store *s, int64_t deployment_id,
                                  struct srv_rollout *ret, struct ot_diag *d)
{
    if (!ret)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the rollout");
    return s->ops->rollout_get(s, deployment_id, ret, d);
}

enum ot_err srv_store_rollout_list_active(struct srv_store *s, struct srv_rollout **ret,
                                          size_t *ret_n, struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the rollouts");
    return s->ops->rollout_list_active(s, ret, ret_n, d);
}

enum ot_err srv_store_rollout_update(struct srv_store *s, const struct srv_rollout *r,
                                     const char *kind, const char *message, struct ot_diag *d)
{
    enum ot_err err = check_rollout(r, false, d);
    if (!err && kind)
        err = check_decision(kind, message, d);
    if (err)
        return err;
    struct srv_rollout row = *r;
    if (!row.reason)
        row.reason = "";
    return s->ops->rollout_update(s, &row, kind, message ? message : "", d);
}

enum ot_err srv_store_rollout_event_add(struct srv_store *s, int64_t deployment_id, int64_t at,
                                        const char *kind, const char *message, struct ot_diag *d)
{
    enum ot_err err = check_decision(kind, message, d);
    if (!err)
        err = check_time("rollout event time", at, d);
    return err ? err
               : s->ops->rollout_event_add(s, deployment_id, at, kind, message ? message : "", d);
}

enum ot_err srv_store_rollout_events(struct srv_store *s, int64_t deployment_id, int64_t after_id,
                                     size_t limit, struct srv_rollout_event **ret, size_t *ret_n,
                                     struct ot_diag *d)
{
    if (!ret || !ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the events");
    enum ot_err err = check_limit(limit, SRV_LIST_MAX, d);
    return err ? err : s->ops->rollout_events(s, deployment_id, after_id, limit, ret, ret_n, d);
}

enum ot_err srv_store_rollout_approve(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                      const char *approver, int64_t at, size_t *ret_count,
                                      struct ot_diag *d)
{
    if (!ret_count)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the count");
    enum ot_err err = check_phase(phase, d);
    if (!err)
        err = check_string("approver", approver, 1, SRV_AUDIT_FIELD_MAX, d);
    if (!err)
        err = check_time("approval time", at, d);
    if (err)
        return err;
    size_t count = 0;
    err = s->ops->rollout_approve(s, deployment_id, phase, approver, at, &count, d);
    if (!err || err == OT_ERR_EXISTS)
        *ret_count = count;
    return err;
}

enum ot_err srv_store_rollout_approvals(struct srv_store *s, int64_t deployment_id, int64_t phase,
                                        size_t *ret_count, struct ot_diag *d)
{
    if (!ret_count)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the count");
    enum ot_err err = check_phase(phase, d);
    return err ? err : s->ops->rollout_approvals(s, deployment_id, phase, ret_count, d);
}

enum ot_err srv_store_rollout_counts(struct srv_store *s, int64_t deployment_id, int64_t seq_from,
                                     int64_t seq_to, uint64_t counts[SRV_DD__MAX],
                                     struct ot_diag *d)
{
    if (!counts)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the counts");
    return s->ops->rollout_counts(s, deployment_id, seq_from, seq_to, counts, d);
}

enum ot_err srv_store_rollout_timeout(struct srv_store *s, int64_t deployment_id, int64_t released,
                                      int64_t before, int64_t now, const char *message,
                                      size_t *ret_n, struct ot_diag *d)
{
    if (!ret_n)
        return ot_diag_set(d, OT_ERR_INVALID, "nowhere to put the count");
    enum ot_err err = check_message(message, d);
    if (!err)
        err = check_time("time", now, d);
    return err ? err
               : s->ops->rollout_timeout(s, deployment_id, released, before, now,
                                         message ? message : "", ret_n, d);
}

void srv_deployment_release(struct srv_deployment *dep)
{
    if (!dep)
        return;
    free(dep->name);
    free(dep->artifact_name);
    free(dep->artifact_version);
    free(dep->target);
    free(dep->created_by);
    memset(dep, 0, sizeof(*dep));
}

void srv_deployment_list_free(struct srv_deployment *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_deployment_release(&list[i]);
    free(list);
}

void srv_dd_release(struct srv_dd *dd)
{
    if (!dd)
        return;
    free(dd->message);
    memset(dd, 0, sizeof(*dd));
}

void srv_dd_list_free(struct srv_dd *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_dd_release(&list[i]);
    free(list);
}

void srv_dd_event_list_free(struct srv_dd_event *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].message);
        free(list[i].log);
    }
    free(list);
}

void srv_rollout_release(struct srv_rollout *r)
{
    if (!r)
        return;
    free(r->policy);
    free(r->reason);
    memset(r, 0, sizeof(*r));
}

void srv_rollout_list_free(struct srv_rollout *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        srv_rollout_release(&list[i]);
    free(list);
}

void srv_rollout_event_list_free(struct srv_rollout_event *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].kind);
        free(list[i].message);
    }
    free(list);
}
