/* What every server command shares: where the server is and which token to use (flags, then the
 * environment, then the client config file), API calls with the error reporting of the rest of
 * the tool, paged listings, and aligned tables for humans.
 *
 * The token is a credential: it is never printed, never put in a URL, and a config file holding
 * one that others can read gets a warning (like ssh does for its keys). */
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "otter/client.h"
#include "otter/config.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/parse.h"
#include "otter/path.h"
#include "tool.h"

#define CONFIG_NAME "otter/client.conf"
#define TOKEN_FILE_MAX 4096
#define PAGE_SIZE 200

/* ---- the connection ---------------------------------------------------------------------------- */

bool tool_remote_opt(struct tool_remote *r, int c)
{
    switch (c) {
    case TOOL_OPT_SERVER:
        r->server = optarg;
        return true;
    case TOOL_OPT_TOKEN:
        r->token = optarg;
        return true;
    case TOOL_OPT_TOKEN_FILE:
        r->token_file = optarg;
        return true;
    case TOOL_OPT_CA_FILE:
        r->ca_file = optarg;
        return true;
    case TOOL_OPT_CONFIG:
        r->config = optarg;
        return true;
    default:
        return false;
    }
}

struct client_conf {
    char *server;
    char *token;
    char *token_file;
    char *ca_file;
};

static const struct ot_cfg_key conf_keys[] = {
    {NULL, "server", OT_CFG_STRING, offsetof(struct client_conf, server), 0, 2048, NULL,
     "otterd's URL"},
    {NULL, "token", OT_CFG_STRING, offsetof(struct client_conf, token), 0, 1024, NULL,
     "the API token"},
    {NULL, "token_file", OT_CFG_STRING, offsetof(struct client_conf, token_file), 0, 4095, NULL,
     "a file holding the API token (relative to the config file's directory)"},
    {NULL, "ca_file", OT_CFG_STRING, offsetof(struct client_conf, ca_file), 0, 4095, NULL,
     "PEM CA certificates (relative to the config file's directory)"},
};

/* Everything the connection is made of, each string owned. */
struct conn {
    char *config_path; /* the file read, or the default one looked for; NULL: none */
    bool config_read;
    struct client_conf conf;
    char *server, *token, *ca_file;
};

static void conn_release(struct conn *c)
{
    free(c->config_path);
    ot_cfg_release(conf_keys, OT_ARRAY_SIZE(conf_keys), &c->conf);
    free(c->server);
    if (c->token) {
        explicit_bzero(c->token, strlen(c->token));
        free(c->token);
    }
    free(c->ca_file);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* --config, else $OTTER_CONFIG (both must exist), else the XDG default if it exists. */
static enum ot_err config_path(const struct tool_remote *r, char **ret, bool *ret_required,
                               struct ot_diag *d)
{
    const char *p = r->config ? r->config : env("OTTER_CONFIG");
    const char *xdg = env("XDG_CONFIG_HOME"), *home = env("HOME");
    *ret_required = p != NULL;
    *ret = NULL;
    int n = 0;
    if (p)
        n = asprintf(ret, "%s", p);
    else if (xdg && xdg[0] == '/') /* the XDG spec: a relative value is ignored */
        n = asprintf(ret, "%s/%s", xdg, CONFIG_NAME);
    else if (home)
        n = asprintf(ret, "%s/.config/%s", home, CONFIG_NAME);
    if (n < 0) {
        *ret = NULL;
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

/* A path from the config file is relative to the config file's directory. */
static enum ot_err config_relative(const char *config, const char *path, char **ret,
                                   struct ot_diag *d)
{
    _cleanup_free_ char *dir = NULL;
    enum ot_err err = OT_OK;
    if (path[0] == '/')
        *ret = strdup(path);
    else if (!(err = ot_path_dirname(config, &dir)))
        err = ot_path_join(dir, path, ret);
    if (!err && !*ret)
        err = OT_ERR_NOMEM;
    return err ? ot_diag_set(d, err, "%s", ot_strerror(err)) : OT_OK;
}

static void warn_if_readable(const struct tool_ctx *ctx, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 0044))
        tool_warn(ctx, "%s holds an API token and is readable by other users (chmod 600 it)",
                  path);
}

static enum ot_err load_config(const struct tool_ctx *ctx, const struct tool_remote *r,
                               struct conn *c, struct ot_diag *d)
{
    bool required;
    enum ot_err err = config_path(r, &c->config_path, &required, d);
    if (err || !c->config_path)
        return err;
    if (!required && access(c->config_path, F_OK) != 0 && errno == ENOENT)
        return OT_OK;
    err = ot_cfg_load(c->config_path, conf_keys, OT_ARRAY_SIZE(conf_keys), &c->conf, d);
    if (err)
        return err;
    c->config_read = true;
    if (c->conf.token && c->conf.token_file)
        return ot_diag_set(d, OT_ERR_CONFIG, "%s: set either token or token_file, not both",
                           c->config_path);
    if (c->conf.token)
        warn_if_readable(ctx, c->config_path);
    return OT_OK;
}

/* The first line of the file, trailing blanks and line ends removed. */
static enum ot_err read_token_file(const char *path, char **ret, struct ot_diag *d)
{
    struct ot_buf b;
    ot_buf_init(&b, TOKEN_FILE_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    if (err) {
        ot_buf_release(&b);
        return err;
    }
    size_t n = strcspn(ot_buf_str(&b), "\r\n");
    while (n > 0 && (b.data[n - 1] == ' ' || b.data[n - 1] == '\t'))
        n--;
    if (n == 0 || memchr(b.data, '\0', n)) {
        explicit_bzero(b.data, b.len);
        ot_buf_release(&b);
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: no token in the file's first line", path);
    }
    *ret = strndup((const char *)b.data, n);
    explicit_bzero(b.data, b.len);
    ot_buf_release(&b);
    return *ret ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

static enum ot_err dup_to(char **dst, const char *s, struct ot_diag *d)
{
    if (!s)
        return OT_OK;
    *dst = strdup(s);
    return *dst ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

static enum ot_err resolve_token(const struct tool_remote *r, struct conn *c, struct ot_diag *d)
{
    if (r->token)
        return dup_to(&c->token, r->token, d);
    if (r->token_file)
        return read_token_file(r->token_file, &c->token, d);
    if (env("OTTER_TOKEN"))
        return dup_to(&c->token, env("OTTER_TOKEN"), d);
    if (c->conf.token)
        return dup_to(&c->token, c->conf.token, d);
    if (!c->conf.token_file)
        return OT_OK;
    _cleanup_free_ char *path = NULL;
    enum ot_err err = config_relative(c->config_path, c->conf.token_file, &path, d);
    return err ? err : read_token_file(path, &c->token, d);
}

static enum ot_err resolve(const struct tool_remote *r, struct conn *c, struct ot_diag *d)
{
    const char *server = r->server ? r->server : env("OTTER_SERVER");
    enum ot_err err = dup_to(&c->server, server ? server : c->conf.server, d);
    if (!err)
        err = resolve_token(r, c, d);
    if (err)
        return err;
    const char *ca = r->ca_file ? r->ca_file : env("OTTER_CA_FILE");
    if (ca || !c->conf.ca_file)
        return dup_to(&c->ca_file, ca, d);
    return config_relative(c->config_path, c->conf.ca_file, &c->ca_file, d);
}

static int missing(const struct tool_ctx *ctx, const struct conn *c, const char *what,
                   const char *flag, const char *var, const char *key)
{
    return tool_usage_error(ctx, "no %s given: use %s, set %s, or put '%s = ...' in %s", what,
                            flag, var, key,
                            c->config_path ? c->config_path : "a config file (--config FILE)");
}

int tool_remote_connect(const struct tool_ctx *ctx, const struct tool_remote *r,
                        struct ot_client **ret)
{
    if (r->token && r->token_file)
        return tool_usage_error(ctx, "give --token or --token-file, not both");
    _cleanup_(conn_release) struct conn c = {0};
    struct ot_diag d = {0};
    enum ot_err err = load_config(ctx, r, &c, &d);
    if (!err)
        err = resolve(r, &c, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    if (!c.server)
        return missing(ctx, &c, "server", "--server URL", "OTTER_SERVER", "server");
    if (!c.token)
        return missing(ctx, &c, "API token", "--token-file FILE (or --token)", "OTTER_TOKEN",
                       "token");
    struct ot_client_opts o = {.server = c.server, .token = c.token, .ca_file = c.ca_file,
                               .user_agent = "otter/" OTTER_VERSION};
    err = ot_client_new(&o, ret, &d);
    if (err == OT_ERR_INVALID)
        return tool_usage_error(ctx, "%s", d.msg);
    return err ? tool_fail(ctx, err, TOOL_SRC_OTHER, &d) : TOOL_EXIT_OK;
}

/* ---- API calls ------------------------------------------------------------------------------- */

int tool_api(const struct tool_ctx *ctx, struct ot_client *c, const char *method,
             const char *path, const json_t *body, json_t **ret)
{
    struct ot_diag d = {0};
    long status = 0;
    json_t *j = NULL;
    enum ot_err err = ot_client_request(c, method, path, body, &status, &j, &d);
    if (!err)
        err = ot_client_status_error(status, j, &d);
    if (err) {
        json_decref(j);
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    }
    if (ret)
        *ret = j;
    else
        json_decref(j);
    return TOOL_EXIT_OK;
}

int tool_api_object(const struct tool_ctx *ctx, struct ot_client *c, const char *method,
                    const char *path, const json_t *body, json_t **ret)
{
    json_t *j = NULL;
    int rc = tool_api(ctx, c, method, path, body, &j);
    if (rc)
        return rc;
    if (!json_is_object(j)) {
        json_decref(j);
        return tool_failf(ctx, OT_ERR_FORMAT, "%s %s: the server's reply is not a JSON object",
                          method, path);
    }
    *ret = j;
    return TOOL_EXIT_OK;
}

static enum ot_err page_path(const char *path, const struct tool_paging *pg, int64_t cursor,
                             size_t limit, struct ot_buf *out)
{
    char num[32];
    enum ot_err err = ot_buf_append_str(out, path);
    snprintf(num, sizeof(num), "%lld", (long long)cursor);
    if (!err && cursor > 0)
        err = ot_client_query_add(out, pg->cursor_param, num);
    snprintf(num, sizeof(num), "%zu", limit);
    return err ? err : ot_client_query_add(out, "limit", num);
}

/* Appends one page's items to all (at most max in total); *ret_next is the next cursor, or 0
 * when the listing has ended. */
static int take_page(const struct tool_ctx *ctx, const json_t *reply, const struct tool_paging *pg,
                     int64_t cursor, size_t max, json_t *all, int64_t *ret_next)
{
    const json_t *items = json_object_get(reply, pg->items);
    if (!json_is_array(items))
        return tool_failf(ctx, OT_ERR_FORMAT, "the server's reply has no '%s' list", pg->items);
    size_t i;
    json_t *v;
    json_array_foreach(items, i, v) {
        if (max && json_array_size(all) >= max)
            break;
        if (json_array_append(all, v))
            return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    }
    const json_t *next = json_object_get(reply, pg->cursor_key);
    *ret_next = json_array_size(items) && json_is_integer(next) ? json_integer_value(next) : 0;
    /* A cursor that does not move would page forever. */
    if (*ret_next > 0 && cursor > 0 && (pg->descending ? *ret_next >= cursor : *ret_next <= cursor))
        return tool_failf(ctx, OT_ERR_FORMAT, "the server's '%s' does not advance",
                          pg->cursor_key);
    if (max && json_array_size(all) >= max)
        *ret_next = 0;
    return TOOL_EXIT_OK;
}

int tool_api_list(const struct tool_ctx *ctx, struct ot_client *c, const char *path,
                  const struct tool_paging *pg, size_t max, json_t **ret_items)
{
    json_t *all = json_array();
    if (!all)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    int64_t cursor = 0;
    int rc = TOOL_EXIT_OK;
    do {
        size_t want = max ? OT_MIN(max - json_array_size(all), (size_t)PAGE_SIZE) : PAGE_SIZE;
        struct ot_buf p;
        ot_buf_init(&p, OT_CLIENT_URL_MAX);
        json_t *reply = NULL;
        if (page_path(path, pg, cursor, want, &p))
            rc = tool_failf(ctx, OT_ERR_LIMIT, "request path too long");
        if (!rc)
            rc = tool_api_object(ctx, c, "GET", ot_buf_str(&p), NULL, &reply);
        ot_buf_release(&p);
        int64_t next = 0;
        if (!rc)
            rc = take_page(ctx, reply, pg, cursor, max, all, &next);
        json_decref(reply);
        cursor = next;
    } while (!rc && cursor > 0);
    if (rc)
        json_decref(all);
    else
        *ret_items = all;
    return rc;
}

int tool_parse_id(const struct tool_ctx *ctx, const char *what, const char *arg, int64_t *ret)
{
    uint64_t v;
    if (ot_parse_u64(arg, 1, INT64_MAX, &v) != OT_OK)
        return tool_usage_error(ctx, "%s must be a positive number, not '%s'", what, arg);
    *ret = (int64_t)v;
    return TOOL_EXIT_OK;
}

const char *tool_api_path(char *buf, size_t len, const char *collection, int64_t id,
                          const char *suffix)
{
    snprintf(buf, len, "/api/v1/%s/%lld%s%s", collection, (long long)id, suffix ? "/" : "",
             suffix ? suffix : "");
    return buf;
}

/* ---- output for humans ----------------------------------------------------------------------- */

/* Server data goes to a terminal: no control characters (escape sequences). */
static char *sanitized(const char *s)
{
    char *r = strdup(s ? s : "");
    for (char *p = r; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return r;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

void tool_table_init(struct tool_table *t, size_t ncols) { *t = (struct tool_table){.ncols = ncols}; }

enum ot_err tool_table_row(struct tool_table *t, const char *const *cells)
{
    char **v = reallocarray(t->cells, (t->nrows + 1) * t->ncols, sizeof(*v));
    if (!v)
        return OT_ERR_NOMEM;
    t->cells = v;
    char **row = v + t->nrows * t->ncols;
    bool ok = true;
    for (size_t i = 0; i < t->ncols; i++)
        ok &= (row[i] = sanitized(cells[i])) != NULL;
    t->nrows++; /* even when incomplete, so that release frees what was copied */
    return ok ? OT_OK : OT_ERR_NOMEM;
}

void tool_table_print(const struct tool_ctx *ctx, const struct tool_table *t)
{
    size_t w[16] = {0};
    size_t ncols = OT_MIN(t->ncols, OT_ARRAY_SIZE(w));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < ncols; i++)
            w[i] = OT_MAX(w[i], width(t->cells[r * t->ncols + i]));
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < ncols; i++) {
            const char *cell = t->cells[r * t->ncols + i];
            bool last = i + 1 == ncols;
            /* The last column is not padded: no trailing blanks. */
            tool_out(ctx, "%s%*s%s", cell, last ? 0 : (int)(w[i] - width(cell)), "",
                     last ? "\n" : "  ");
        }
    }
}

void tool_table_release(struct tool_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    *t = (struct tool_table){0};
}

const char *tool_jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && s[0] ? s : "-";
}

int64_t tool_jint(const json_t *obj, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(obj, key));
}

const char *tool_jint_str(const json_t *obj, const char *key, char *buf, size_t len)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return "-";
    snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    return buf;
}

const char *tool_jtime(const json_t *obj, const char *key, const char *never_text, char *buf,
                       size_t len)
{
    const json_t *v = json_object_get(obj, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return never_text;
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        return "?";
    return buf;
}

static void flat_append(char *buf, size_t len, size_t *pos, const char *s)
{
    int n = snprintf(buf + *pos, len - *pos, "%s", s);
    if (n > 0)
        *pos = OT_MIN(*pos + (size_t)n, len - 1);
}

static void flat_value(const json_t *v, char *buf, size_t len, size_t *pos)
{
    if (json_is_string(v)) {
        flat_append(buf, len, pos, json_string_value(v));
        return;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    flat_append(buf, len, pos, s ? s : "?");
    free(s);
}

const char *tool_jflat(const json_t *v, char *buf, size_t len)
{
    size_t pos = 0, i;
    const char *k;
    json_t *item;
    buf[0] = '\0';
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, item) {
            flat_append(buf, len, &pos, pos ? "," : "");
            flat_append(buf, len, &pos, k);
            flat_append(buf, len, &pos, "=");
            flat_value(item, buf, len, &pos);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item) {
            flat_append(buf, len, &pos, i ? "," : "");
            flat_value(item, buf, len, &pos);
        }
    } else if (v && !json_is_null(v)) {
        flat_value(v, buf, len, &pos);
    }
    return buf[0] ? buf : "-";
}

void tool_out_line(const struct tool_ctx *ctx, const char *fmt, ...)
{
    _cleanup_free_ char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s = NULL;
        tool_warn(ctx, "out of memory");
        return;
    }
    _cleanup_free_ char *safe = sanitized(s);
    tool_out(ctx, "%s\n", safe ? safe : "?");
}

void tool_out_field(const struct tool_ctx *ctx, const char *label, const char *value)
{
    char l[32];
    snprintf(l, sizeof(l), "%s:", label);
    tool_out_line(ctx, "%-13s %s", l, value);
}
