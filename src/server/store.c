/* The front of the store (store.h): picks the back end from the URL, checks every argument once,
 * here, for all back ends, and dispatches through the back end's ops table (store_impl.h). */
#include <time.h>

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
