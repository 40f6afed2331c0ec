/* The management API client (see client.h): libcurl easy interface, one handle per client, reset
 * before every request so that no option of one request leaks into the next, while its connection
 * cache keeps the connection to the server alive. */
#include <pthread.h>
#include <strings.h>

#include <curl/curl.h>

#include "otter/client.h"
#include "otter/file.h"
#include "otter/json.h"

#define TOKEN_MAX 1024 /* bytes of an API token (otterd's are 47) */

struct ot_client {
    CURL *curl;
    char *base;       /* the server URL without trailing '/' */
    char *auth;       /* "Authorization: Bearer <token>", or NULL */
    char *ca_file;
    char *user_agent;
    long stall_s, timeout_s;
    char errbuf[CURL_ERROR_SIZE];
};

/* One transfer's state, shared with the curl callbacks. A callback that fails records why in
 * diag and makes curl stop; the transfer's result then reports that instead of curl's message. */
struct xfer {
    struct ot_client *c;
    const char *method;
    struct ot_buf reply;  /* the JSON reply, or a download's error body */
    int out_fd;           /* download target; -1 for other transfers */
    int in_fd;            /* upload source; -1 for other transfers */
    off_t in_start;       /* where the upload started in in_fd (for rewinds) */
    uint64_t in_size, in_left;
    ot_progress_fn progress;
    void *userdata;
    bool failed;          /* a callback failed: diag says why */
    struct ot_diag diag;
};

/* ---- global set-up --------------------------------------------------------------------------- */

static CURLcode global_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe in every libcurl build: run it once. */
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static enum ot_err ensure_global(struct ot_diag *d)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    if (global_rc != CURLE_OK)
        return ot_diag_set(d, OT_ERR_INTERNAL, "libcurl initialisation failed: %s",
                           curl_easy_strerror(global_rc));
    return OT_OK;
}

/* ---- options --------------------------------------------------------------------------------- */

/* Header values and URLs must not smuggle in CR/LF (a second header, a second request) or other
 * control characters, and never blanks. */
static bool is_clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static enum ot_err check_server(const char *url, struct ot_diag *d)
{
    if (!url || !url[0])
        return ot_diag_set(d, OT_ERR_INVALID, "no server URL");
    if (strlen(url) > OT_CLIENT_URL_MAX / 2 || !is_clean(url))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "server URL must be printable ASCII without blanks, at most %d bytes",
                           OT_CLIENT_URL_MAX / 2);
    const char *host = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        host = url + 8;
    if (!host)
        return ot_diag_set(d, OT_ERR_INVALID,
                           "server URL '%.200s' must start with http:// or https://", url);
    if (!host[0] || host[0] == '/' || strchr(url, '?') || strchr(url, '#'))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "server URL '%.200s' must be scheme://host[:port][/path], without a "
                           "query", url);
    return OT_OK;
}

static enum ot_err check_token(const char *token, struct ot_diag *d)
{
    if (!token)
        return OT_OK;
    /* The token itself is never quoted in a message. */
    if (!token[0] || strlen(token) > TOKEN_MAX || !is_clean(token))
        return ot_diag_set(d, OT_ERR_INVALID, "the API token must be 1..%d printable ASCII "
                           "characters without blanks", TOKEN_MAX);
    return OT_OK;
}

static enum ot_err copy_opts(struct ot_client *c, const struct ot_client_opts *o, struct ot_diag *d)
{
    bool ok = true;
    c->base = strdup(o->server);
    if (!c->base)
        ok = false;
    else
        for (size_t n = strlen(c->base); n > 0 && c->base[n - 1] == '/'; n--)
            c->base[n - 1] = '\0';
    if (o->token && asprintf(&c->auth, "Authorization: Bearer %s", o->token) < 0) {
        c->auth = NULL;
        ok = false;
    }
    c->ca_file = ot_strdup_opt(o->ca_file, &ok);
    c->user_agent = ot_strdup_opt(o->user_agent ? o->user_agent : "otter", &ok);
    c->stall_s = o->stall_timeout_s > 0 ? o->stall_timeout_s : OT_CLIENT_STALL_TIMEOUT_S;
    c->timeout_s = o->timeout_s > 0 ? o->timeout_s : OT_CLIENT_REQUEST_TIMEOUT_S;
    return ok ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

enum ot_err ot_client_new(const struct ot_client_opts *o, struct ot_client **ret, struct ot_diag *d)
{
    enum ot_err err = check_server(o->server, d);
    if (!err)
        err = check_token(o->token, d);
    if (!err && o->ca_file && !o->ca_file[0])
        err = ot_diag_set(d, OT_ERR_INVALID, "empty CA file name");
    if (!err)
        err = ensure_global(d);
    if (err)
        return err;
    _cleanup_(ot_client_freep) struct ot_client *c = calloc(1, sizeof(*c));
    if (!c)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = copy_opts(c, o, d);
    if (err)
        return err;
    c->curl = curl_easy_init();
    if (!c->curl)
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot create a libcurl handle");
    *ret = TAKE_PTR(c);
    return OT_OK;
}

void ot_client_free(struct ot_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    if (c->auth) {
        /* The token should not outlive the client in freed memory. */
        explicit_bzero(c->auth, strlen(c->auth));
        free(c->auth);
    }
    free(c->base);
    free(c->ca_file);
    free(c->user_agent);
    free(c);
}

/* ---- callbacks ------------------------------------------------------------------------------- */

static bool status_ok(long status) { return status >= 200 && status < 300; }

static size_t fail_cb(struct xfer *x, size_t ret)
{
    x->failed = true;
    return ret;
}

/* A download's body goes to the file only when the reply is a success: an error body is kept
 * (bounded) for the message. Everything else goes to the bounded reply buffer. */
static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;
    long status = 0;
    if (x->out_fd >= 0) {
        curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status_ok(status))
            return ot_write_all(x->out_fd, p, n, &x->diag) ? fail_cb(x, 0) : n;
        if (ot_buf_append(&x->reply, p, OT_MIN(n, x->reply.max - x->reply.len)))
            return fail_cb(x, 0);
        return n; /* the rest of an oversized error body is dropped */
    }
    if (ot_buf_append(&x->reply, p, n) == OT_OK)
        return n;
    ot_diag_set(&x->diag, OT_ERR_LIMIT, "the server's reply is larger than %zu bytes",
                x->reply.max);
    return fail_cb(x, 0);
}

static size_t read_cb(char *p, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t want = (size_t)OT_MIN((uint64_t)(size * nitems), x->in_left);
    if (want == 0)
        return 0;
    ssize_t n;
    do
        n = read(x->in_fd, p, want);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        ot_diag_errno(&x->diag, OT_ERR_IO, errno, "cannot read the file being uploaded");
        return fail_cb(x, CURL_READFUNC_ABORT);
    }
    if (n == 0) {
        ot_diag_set(&x->diag, OT_ERR_TRUNCATED, "the file became shorter while it was uploaded");
        return fail_cb(x, CURL_READFUNC_ABORT);
    }
    x->in_left -= (uint64_t)n;
    return (size_t)n;
}

/* curl rewinds the body when it must send it again (a reused connection that turned out dead). */
static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
    struct xfer *x = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->in_size)
        return CURL_SEEKFUNC_CANTSEEK;
    if (lseek(x->in_fd, x->in_start + (off_t)offset, SEEK_SET) < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    x->in_left = x->in_size - (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int xferinfo_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = userdata;
    if (x->in_fd >= 0)
        x->progress(x->userdata, (uint64_t)ulnow, x->in_size);
    else
        x->progress(x->userdata, (uint64_t)dlnow, dltotal > 0 ? (uint64_t)dltotal : 0);
    return 0;
}

/* ---- the transfer ---------------------------------------------------------------------------- */

/* Sets a curl option or returns OT_ERR_INTERNAL (with the enclosing function's diag d): a
 * refused option means a libcurl built without something we rely on, never a user error. */
#define SETOPT(c, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt((c)->curl, opt, val) != CURLE_OK)                                     \
            return ot_diag_set(d, OT_ERR_INTERNAL, "libcurl refused option " #opt);               \
    } while (0)

/* What every request gets: the security rules and timeouts of client.h. */
static enum ot_err setup_common(struct ot_client *c, const char *url, struct xfer *x,
                                struct ot_diag *d)
{
    curl_easy_reset(c->curl);
    c->errbuf[0] = '\0';
    SETOPT(c, CURLOPT_URL, url);
    SETOPT(c, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(c, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(c, CURLOPT_NOSIGNAL, 1L);
    SETOPT(c, CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(c, CURLOPT_CONNECTTIMEOUT, (long)OT_CLIENT_CONNECT_TIMEOUT_S);
    SETOPT(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(c, CURLOPT_LOW_SPEED_TIME, c->stall_s);
    SETOPT(c, CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file)
        SETOPT(c, CURLOPT_CAINFO, c->ca_file);
    SETOPT(c, CURLOPT_USERAGENT, c->user_agent);
    SETOPT(c, CURLOPT_WRITEFUNCTION, write_cb);
    SETOPT(c, CURLOPT_WRITEDATA, x);
    if (x->progress) {
        SETOPT(c, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
        SETOPT(c, CURLOPT_XFERINFODATA, x);
        SETOPT(c, CURLOPT_NOPROGRESS, 0L);
    }
    return OT_OK;
}

static enum ot_err build_url(const struct ot_client *c, const char *path, struct ot_buf *url,
                             struct ot_diag *d)
{
    if (path[0] != '/' || !is_clean(path))
        return ot_diag_set(d, OT_ERR_INVALID, "bad request path");
    if (ot_buf_printf(url, "%s%s", c->base, path))
        return ot_diag_set(d, OT_ERR_LIMIT, "request URL longer than %d bytes", OT_CLIENT_URL_MAX);
    return OT_OK;
}

/* Appends a header; out of memory leaves the list as it was and clears *ok. */
static struct curl_slist *add_header(struct curl_slist *l, const char *h, bool *ok)
{
    struct curl_slist *n = curl_slist_append(l, h);
    if (!n)
        *ok = false;
    return n ? n : l;
}

static enum ot_err set_headers(struct ot_client *c, const char *content_type,
                               struct curl_slist **list, struct ot_diag *d)
{
    bool ok = true;
    struct curl_slist *l = add_header(NULL, "Accept: application/json", &ok);
    if (c->auth)
        l = add_header(l, c->auth, &ok);
    /* Without a type, "Content-Type:" removes the form type curl would give an empty POST. */
    char h[128];
    snprintf(h, sizeof(h), "Content-Type:%s%s", content_type ? " " : "",
             content_type ? content_type : "");
    l = add_header(l, h, &ok);
    *list = l;
    if (!ok)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    SETOPT(c, CURLOPT_HTTPHEADER, l);
    return OT_OK;
}

/* curl's message with the request, e.g. "GET http://127.0.0.1:1/api/v1/devices: Failed to
 * connect to 127.0.0.1 port 1 after 0 ms: Connection refused". */
static enum ot_err transport_error(struct xfer *x, CURLcode rc, const char *url, struct ot_diag *d)
{
    if (x->failed) {
        ot_diag_prefix(&x->diag, x->diag.err, "%s %s", x->method, url);
        *d = x->diag;
        return x->diag.err;
    }
    const char *why = x->c->errbuf[0] ? x->c->errbuf : curl_easy_strerror(rc);
    return ot_diag_set(d, OT_ERR_IO, "%s %s: %s", x->method, url, why);
}

/* Runs the prepared transfer and interprets its reply. */
static enum ot_err perform(struct xfer *x, const char *url, long *ret_status, json_t **ret_json,
                           struct ot_diag *d)
{
    CURLcode rc = curl_easy_perform(x->c->curl);
    if (rc != CURLE_OK)
        return transport_error(x, rc, url, d);
    long status = 0;
    curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = NULL;
    if (x->reply.len > 0) {
        struct ot_diag pd = {0};
        enum ot_err err = ot_json_parse(x->reply.data, x->reply.len, &j, &pd);
        /* A non-JSON error page (a proxy's HTML) still has a status worth reporting. */
        if (err && status_ok(status))
            return ot_diag_set(d, OT_ERR_FORMAT, "%s %s: the reply (HTTP %ld) is not JSON: %s",
                               x->method, url, status, pd.msg);
        if (err)
            j = NULL;
    }
    *ret_status = status;
    if (ret_json)
        *ret_json = j;
    else
        json_decref(j);
    return OT_OK;
}

static void xfer_init(struct xfer *x, struct ot_client *c, const char *method, size_t reply_max)
{
    *x = (struct xfer){.c = c, .method = method, .out_fd = -1, .in_fd = -1};
    ot_buf_init(&x->reply, reply_max);
}

/* ---- requests -------------------------------------------------------------------------------- */

/* body NULL: no body at all for GET and DELETE, an empty one (Content-Length: 0) otherwise. */
static enum ot_err set_method(struct ot_client *c, const char *method, const struct ot_buf *body,
                              struct ot_diag *d)
{
    bool get = strcmp(method, "GET") == 0;
    if (!body && (get || strcmp(method, "DELETE") == 0)) {
        SETOPT(c, CURLOPT_HTTPGET, 1L);
        if (!get)
            SETOPT(c, CURLOPT_CUSTOMREQUEST, method);
        return OT_OK;
    }
    /* POSTFIELDS with an explicit size: an empty body is sent as Content-Length: 0. */
    SETOPT(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body->len : 0));
    SETOPT(c, CURLOPT_POSTFIELDS, body && body->data ? (const char *)body->data : "");
    if (strcmp(method, "POST") != 0)
        SETOPT(c, CURLOPT_CUSTOMREQUEST, method);
    return OT_OK;
}

enum ot_err ot_client_request(struct ot_client *c, const char *method, const char *path,
                              const json_t *body, long *ret_status, json_t **ret_json,
                              struct ot_diag *d)
{
    struct ot_buf url, text;
    struct xfer x;
    struct curl_slist *headers = NULL;
    ot_buf_init(&url, OT_CLIENT_URL_MAX);
    ot_buf_init(&text, OT_CLIENT_REPLY_MAX);
    xfer_init(&x, c, method, OT_CLIENT_REPLY_MAX);
    enum ot_err err = build_url(c, path, &url, d);
    if (!err && body && ot_json_dump(body, &text))
        err = ot_diag_set(d, OT_ERR_LIMIT, "request body too large");
    if (!err)
        err = setup_common(c, ot_buf_str(&url), &x, d);
    if (!err)
        err = set_headers(c, body ? "application/json" : NULL, &headers, d);
    if (!err)
        err = set_method(c, method, body ? &text : NULL, d);
    if (!err && curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, c->timeout_s) != CURLE_OK)
        err = ot_diag_set(d, OT_ERR_INTERNAL, "libcurl refused CURLOPT_TIMEOUT");
    if (!err)
        err = perform(&x, ot_buf_str(&url), ret_status, ret_json, d);
    curl_slist_free_all(headers);
    ot_buf_release(&x.reply);
    ot_buf_release(&text);
    ot_buf_release(&url);
    return err;
}

/* The upload's body comes from read_cb with a known length: curl sends Content-Length, and
 * "Expect: 100-continue" so that a server that refuses the upload up front (authentication, size)
 * says so before the first byte is sent; libmicrohttpd answers 100 at once when it accepts. */
static enum ot_err setup_upload(struct ot_client *c, struct xfer *x, struct ot_diag *d)
{
    SETOPT(c, CURLOPT_POST, 1L);
    SETOPT(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->in_size);
    SETOPT(c, CURLOPT_READFUNCTION, read_cb);
    SETOPT(c, CURLOPT_READDATA, x);
    SETOPT(c, CURLOPT_SEEKFUNCTION, seek_cb);
    SETOPT(c, CURLOPT_SEEKDATA, x);
    return OT_OK;
}

enum ot_err ot_client_upload(struct ot_client *c, const char *path, int fd, uint64_t size,
                             ot_progress_fn progress, void *userdata, long *ret_status,
                             json_t **ret_json, struct ot_diag *d)
{
    if (size > (uint64_t)INT64_MAX)
        return ot_diag_set(d, OT_ERR_RANGE, "upload too large");
    struct ot_buf url;
    struct xfer x;
    struct curl_slist *headers = NULL;
    ot_buf_init(&url, OT_CLIENT_URL_MAX);
    xfer_init(&x, c, "POST", OT_CLIENT_REPLY_MAX);
    x.in_fd = fd;
    x.in_size = x.in_left = size;
    x.progress = progress;
    x.userdata = userdata;
    x.in_start = lseek(fd, 0, SEEK_CUR);
    if (x.in_start < 0)
        x.in_start = 0; /* a pipe: curl cannot rewind it, and says so if it ever must */
    enum ot_err err = build_url(c, path, &url, d);
    if (!err)
        err = setup_common(c, ot_buf_str(&url), &x, d);
    if (!err)
        err = set_headers(c, "application/octet-stream", &headers, d);
    if (!err)
        err = setup_upload(c, &x, d);
    if (!err)
        err = perform(&x, ot_buf_str(&url), ret_status, ret_json, d);
    curl_slist_free_all(headers);
    ot_buf_release(&x.reply);
    ot_buf_release(&url);
    return err;
}

enum ot_err ot_client_download(struct ot_client *c, const char *path, int out_fd,
                               ot_progress_fn progress, void *userdata, long *ret_status,
                               json_t **ret_json, struct ot_diag *d)
{
    struct ot_buf url;
    struct xfer x;
    struct curl_slist *headers = NULL;
    ot_buf_init(&url, OT_CLIENT_URL_MAX);
    xfer_init(&x, c, "GET", OT_CLIENT_ERROR_BODY_MAX);
    x.out_fd = out_fd;
    x.progress = progress;
    x.userdata = userdata;
    enum ot_err err = build_url(c, path, &url, d);
    if (!err)
        err = setup_common(c, ot_buf_str(&url), &x, d);
    if (!err)
        err = set_headers(c, NULL, &headers, d);
    if (!err && curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L) != CURLE_OK)
        err = ot_diag_set(d, OT_ERR_INTERNAL, "libcurl refused CURLOPT_HTTPGET");
    if (!err)
        err = perform(&x, ot_buf_str(&url), ret_status, ret_json, d);
    curl_slist_free_all(headers);
    ot_buf_release(&x.reply);
    ot_buf_release(&url);
    return err;
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* The server's error code, when it is one of ours ("untrusted", "NOENT"). */
static enum ot_err err_for_code(const char *code)
{
    for (int e = OT_OK + 1; code && e < OT_ERR__MAX; e++)
        if (strcasecmp(code, ot_err_name((enum ot_err)e)) == 0)
            return (enum ot_err)e;
    return OT_OK;
}

static const char *status_text(long status)
{
    switch (status) {
    case 400: return "bad request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 409: return "conflict";
    case 413: return "request too large";
    case 422: return "unprocessable content";
    case 429: return "too many requests";
    case 500: return "internal server error";
    case 502: return "bad gateway";
    case 503: return "service unavailable";
    case 504: return "gateway timeout";
    default: return "unexpected reply";
    }
}

/* The message is the server's text, shown on a terminal: control characters (escape sequences)
 * are replaced, and it is cut to fit. */
static void safe_copy(char *out, size_t len, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = '\0';
}

enum ot_err ot_client_status_error(long status, const json_t *reply, struct ot_diag *d)
{
    if (status_ok(status))
        return OT_OK;
    const json_t *e = json_object_get(reply, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    enum ot_err err = err_for_code(json_string_value(json_object_get(e, "code")));
    if (!err)
        err = ot_client_err_for_status(status);
    char text[OT_DIAG_MSG_MAX - 64];
    safe_copy(text, sizeof(text), msg && msg[0] ? msg : status_text(status));
    return ot_diag_set(d, err, "server: %s (HTTP %ld)", text, status);
}

enum ot_err ot_client_query_add(struct ot_buf *path, const char *key, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    bool has_query = path->len > 0 && memchr(path->data, '?', path->len) != NULL;
    enum ot_err err = ot_buf_printf(path, "%c%s=", has_query ? '&' : '?', key);
    for (const unsigned char *p = (const unsigned char *)value; !err && *p; p++) {
        bool keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("-._~", *p);
        char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
        err = keep ? ot_buf_append(path, p, 1) : ot_buf_append(path, enc, 3);
    }
    return err;
}
