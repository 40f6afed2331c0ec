/* otterd's HTTP layer over libmicrohttpd (see http.h).
 *
 * One request goes through these states, one per call of libmicrohttpd's access handler:
 *
 *   on_uri            the request line has arrived: the request object is created with the *raw*
 *                     path (libmicrohttpd percent-decodes the url it hands the access handler,
 *                     which would turn "%2e%2e" into ".." and "%2F" into "/" before we could judge)
 *   REQ_HEADERS       first call, headers complete: path checks, routing, authentication,
 *                     Content-Length against the route's limit. An early answer (4xx) is queued
 *                     now only if a body is announced (then it is never read, and libmicrohttpd
 *                     closes the connection); otherwise it waits for the next call, so that the
 *                     connection stays alive (ARCHITECTURE.md §2).
 *   REQ_BODY          body chunks into a buffer bounded by the route's max_body, or, for a
 *                     streaming route, to its body callback as they arrive
 *   REQ_DISCARD       a chunked body grew past max_body: 413 is decided, the rest is read and
 *                     dropped (bounded) because libmicrohttpd 0.9.75 refuses a response queued
 *                     while a body is still arriving
 *   REQ_ANSWER        an early answer waits for the call that ends the request
 *   REQ_QUEUED        done; on_completed logs the request and frees it
 *
 * Handlers run on the pool's threads; everything per request lives in struct srv_request
 * (libmicrohttpd's con_cls), everything in struct srv_http is read-only once started except the
 * atomics. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>

#include <microhttpd.h>

#include "http.h"
#include "otter/file.h"
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"

#define PATH_LEN_MAX 2048 /* longer paths: 400 (beyond header_limit: 414 by MHD) */
#define PARAMS_MAX 8      /* {name} segments per route pattern */
#define METHOD_MAX 16
#define PRINCIPAL_MAX 128
#define CLIENT_MAX (INET6_ADDRSTRLEN + 1)
#define MSG_MAX 512
#define REPLY_MAX ((size_t)64 * 1024 * 1024) /* a JSON reply; lists are paginated well below */
#define DISCARD_MAX ((size_t)1024 * 1024)    /* body bytes dropped after a streaming 413 */
#define DRAIN_MS 10000 /* srv_http_stop waits this long for requests in flight */
#define PEM_MAX ((size_t)1024 * 1024)
#define LOG_PATH_MAX 256 /* bytes of the path in a request log line */
#define THREADS_MAX 256

enum req_state { REQ_HEADERS, REQ_BODY, REQ_DISCARD, REQ_ANSWER, REQ_QUEUED };

struct param {
    const char *name; /* points into the route pattern, not NUL-terminated */
    size_t name_len;
    char *value; /* percent-decoded, owned */
};

/* A {name} of a pattern and the raw segment it matched. */
struct param_ref {
    const char *name, *raw;
    size_t name_len, raw_len;
};

struct srv_http {
    struct MHD_Daemon *daemon;
    const struct srv_route *routes;
    size_t nroutes;
    srv_auth_fn auth;
    void *app;
    bool log_requests;
    uint16_t port;
    char *tls_cert, *tls_key; /* PEM text, owned; the key is wiped when freed */
    atomic_bool started;      /* libmicrohttpd's messages: captured until set, logged after */
    atomic_bool stopping;     /* new connections closed, replies say "Connection: close" */
    atomic_uint in_flight;    /* requests between on_uri and on_completed */
    pthread_mutex_t start_lock;
    char start_error[MSG_MAX]; /* libmicrohttpd's last message during start */
};

struct srv_request {
    struct srv_http *http;
    struct MHD_Connection *conn;
    enum req_state state;
    const struct srv_route *route;
    char *path; /* raw, without the query string (never logged: tokens) */
    bool path_too_long;
    char method[METHOD_MAX]; /* "" until the headers are in; longer methods are cut */
    char client[CLIENT_MAX];
    struct param params[PARAMS_MAX];
    size_t nparams;
    struct ot_buf body;
    size_t discarded;
    size_t discard_max; /* a streaming route's failed upload: read the rest, up to max_body */
    char principal[PRINCIPAL_MAX];
    uint32_t scopes; /* of the authenticated token */
    int64_t device;  /* of a device route */
    uint64_t streamed;                /* body bytes given to a streaming route's callback */
    void *ctx;                        /* the handler's, freed with ctx_free */
    void (*ctx_free)(void *);
    struct MHD_Response *response; /* the reply, until queued */
    unsigned status;
    size_t reply_bytes;
    struct timespec start;
};

/* ---- the one error -> status table ----------------------------------------------------------- */

static const unsigned err_status[OT_ERR__MAX] = {
    [OT_OK] = 200,
    [OT_ERR_NOENT] = 404,
    [OT_ERR_FORMAT] = 400,
    [OT_ERR_INVALID] = 400,
    [OT_ERR_RANGE] = 400,
    [OT_ERR_TRUNCATED] = 400,   /* an upload that ended early is the client's input */
    [OT_ERR_UNSUPPORTED] = 400, /* valid but unsupported input (a format version): not 501 */
    [OT_ERR_EXISTS] = 409,
    [OT_ERR_LIMIT] = 413,
    [OT_ERR_SIZE] = 413,
    [OT_ERR_PERM] = 403,
    [OT_ERR_SIGNATURE] = 422,
    [OT_ERR_UNTRUSTED] = 422,
    [OT_ERR_HASH] = 422,
    [OT_ERR_DECRYPT] = 422,
    [OT_ERR_NOKEY] = 422,
    [OT_ERR_INCOMPATIBLE] = 422,
    [OT_ERR_ROLLBACK] = 422,
    [OT_ERR_NOSPC] = 507,
};

unsigned srv_status_for_err(enum ot_err err)
{
    if ((unsigned)err >= OT_ERR__MAX || err_status[err] == 0)
        return 500; /* NOMEM, IO, CONFIG, CRYPTO, INTERNAL and anything new */
    return err_status[err];
}

/* ---- small helpers --------------------------------------------------------------------------- */

/* RFC 3986 pchar without '%': unreserved, sub-delims, ':' and '@'. */
static bool path_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@", c) != NULL;
}

/* Strict percent-decoding of n bytes: "%" must be followed by two hex digits. Returns the length
 * written to out (at most n), or -1. */
static ssize_t pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? ot_hex_digit_value(s[i + 1]) : -1;
        int lo = i + 2 < n ? ot_hex_digit_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return -1;
        out[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    return (ssize_t)o;
}

static double elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Copies s into out for a log line: printable ASCII as is, anything else as \xNN, cut at max
 * bytes of input (so a hostile path cannot forge log lines or flood the log). */
static const char *log_safe(const char *s, size_t max, char *out, size_t out_len)
{
    size_t o = 0, i = 0;
    for (; s[i] && i < max && o + 5 < out_len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c > 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, out_len - o, "\\x%02x", c);
    }
    if (s[i] && o + 4 < out_len)
        o += (size_t)snprintf(out + o, out_len - o, "...");
    out[o] = '\0';
    return out;
}

/* JSON strings must be UTF-8; messages can quote client input, so keep printable ASCII only. */
static void ascii_only(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

/* ---- the listen address ---------------------------------------------------------------------- */

static enum ot_err set_port(const char *s, const char *text, struct srv_listen *l,
                            struct ot_diag *d)
{
    uint64_t port;
    if (ot_parse_u64(s, 0, 65535, &port) != OT_OK)
        return ot_diag_set(d, OT_ERR_CONFIG, "listen address '%s': the port must be 0..65535",
                           text);
    l->port = (uint16_t)port;
    return OT_OK;
}

static enum ot_err set_host(const char *host, const char *text, struct srv_listen *l,
                            struct ot_diag *d)
{
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&l->addr;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&l->addr;
    if (l->ipv6 && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(l->port);
    } else if (!l->ipv6 && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(l->port);
    } else {
        return ot_diag_set(d, OT_ERR_CONFIG,
                           "listen address '%s': the host must be a numeric IPv4 address, an "
                           "IPv6 address in brackets ([::1]:8080) or localhost",
                           text);
    }
    snprintf(l->host, sizeof(l->host), "%s", host);
    return OT_OK;
}

enum ot_err srv_listen_parse(const char *s, struct srv_listen *ret, struct ot_diag *d)
{
    struct srv_listen l = {0};
    char host[INET6_ADDRSTRLEN];
    const char *colon;
    if (!s || strlen(s) > 64)
        return ot_diag_set(d, OT_ERR_CONFIG, "listen address: expected HOST:PORT");
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
            return ot_diag_set(d, OT_ERR_CONFIG, "listen address '%s': expected [IPv6]:PORT", s);
        l.ipv6 = true;
        snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)) || (size_t)(colon - s) >= sizeof(host))
            return ot_diag_set(d, OT_ERR_CONFIG,
                               "listen address '%s': expected HOST:PORT (IPv6 in brackets)", s);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
    }
    enum ot_err err = set_port(colon + 1, s, &l, d);
    if (!err)
        err = set_host(host, s, &l, d);
    if (!err)
        *ret = l;
    return err;
}

/* ---- routes ---------------------------------------------------------------------------------- */

static bool is_param(const char *seg, size_t n)
{
    return n > 2 && seg[0] == '{' && seg[n - 1] == '}';
}

static size_t seg_len(const char *s) { return strcspn(s, "/"); }

/* Matches path against a pattern segment by segment; {name} matches one non-empty segment. When
 * out is given, the parameters' names and raw (still encoded) values are recorded there. */
static bool pattern_match(const char *pattern, const char *path, struct param_ref *out,
                          size_t *nout)
{
    size_t n = 0;
    const char *p = pattern, *s = path;
    for (;;) {
        p++, s++; /* both are at a '/' */
        size_t pl = seg_len(p), sl = seg_len(s);
        if (is_param(p, pl)) {
            if (sl == 0)
                return false;
            if (out)
                out[n] =
                    (struct param_ref){.name = p + 1, .name_len = pl - 2, .raw = s, .raw_len = sl};
            n++;
        } else if (pl != sl || memcmp(p, s, pl) != 0) {
            return false;
        }
        p += pl, s += sl;
        if (!*p || !*s) {
            if (nout)
                *nout = n;
            return !*p && !*s;
        }
    }
}

/* Of two patterns matching the same path, the one with a literal segment where the other has a
 * parameter (reading left to right) wins: "/tokens/current" before "/tokens/{id}". */
static bool more_specific(const char *a, const char *b)
{
    while (*a && *b) {
        a++, b++;
        size_t al = seg_len(a), bl = seg_len(b);
        bool ap = is_param(a, al), bp = is_param(b, bl);
        if (ap != bp)
            return bp;
        a += al, b += bl;
    }
    return false;
}

static bool method_matches(const struct srv_route *r, const char *method)
{
    return strcmp(r->method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0);
}

/* Appends method to the Allow list ("GET, HEAD, POST") unless it is there. */
static void allow_add(char *allow, size_t len, const char *method)
{
    size_t m = strlen(method), n = strlen(allow);
    for (const char *p = allow; *p; p += strspn(p, ", ")) {
        size_t k = strcspn(p, ",");
        if (k == m && memcmp(p, method, m) == 0)
            return;
        p += k;
    }
    snprintf(allow + n, len - n, "%s%s", n ? ", " : "", method);
}

enum route_result { ROUTE_FOUND, ROUTE_NO_PATH, ROUTE_NO_METHOD };

/* Finds the route for path and method; when only the method differs, allow lists the methods the
 * path has (HEAD with GET). */
static enum route_result route_find(const struct srv_http *h, const char *path, const char *method,
                                    const struct srv_route **ret, char *allow, size_t allow_len)
{
    const struct srv_route *best = NULL;
    bool path_known = false;
    allow[0] = '\0';
    for (size_t i = 0; i < h->nroutes; i++) {
        const struct srv_route *r = &h->routes[i];
        if (!pattern_match(r->pattern, path, NULL, NULL))
            continue;
        path_known = true;
        allow_add(allow, allow_len, r->method);
        if (strcmp(r->method, "GET") == 0)
            allow_add(allow, allow_len, "HEAD");
        if (method_matches(r, method) && (!best || more_specific(r->pattern, best->pattern)))
            best = r;
    }
    *ret = best;
    return best ? ROUTE_FOUND : path_known ? ROUTE_NO_METHOD : ROUTE_NO_PATH;
}

/* A route table mistake is a bug found at start, not a surprise on some request. */
static enum ot_err route_check(const struct srv_route *r, size_t i, struct ot_diag *d)
{
    if (!r->method || !*r->method || !r->pattern || r->pattern[0] != '/' || !r->handler)
        return ot_diag_set(d, OT_ERR_INTERNAL, "route %zu: method, pattern and handler needed", i);
    size_t nparams = 0;
    for (const char *s = r->pattern + 1;; s++) {
        size_t n = seg_len(s);
        if (n == 0 && s[n] == '/')
            return ot_diag_set(d, OT_ERR_INTERNAL, "route '%s': empty segment", r->pattern);
        if (memchr(s, '{', n) && !is_param(s, n))
            return ot_diag_set(d, OT_ERR_INTERNAL, "route '%s': bad {name}", r->pattern);
        nparams += is_param(s, n);
        s += n;
        if (!*s)
            break;
    }
    if (nparams > PARAMS_MAX)
        return ot_diag_set(d, OT_ERR_INTERNAL, "route '%s': more than %d parameters", r->pattern,
                           PARAMS_MAX);
    return OT_OK;
}

/* ---- path checks ----------------------------------------------------------------------------- */

/* "." and ".." segments, encoded or not ("%2e", ".%2E"). */
static bool dot_segment(const char *seg, size_t n)
{
    char out[6];
    if (n > 6)
        return false;
    ssize_t m = pct_decode(seg, n, out);
    return (m == 1 && out[0] == '.') || (m == 2 && out[0] == '.' && out[1] == '.');
}

/* Why path is refused before routing, or NULL. Paths must be normalized: clients and proxies
 * disagree on how to resolve "..", "//" and encoded dots, so none of them reaches a handler. */
static const char *path_problem(const char *path)
{
    if (path[0] != '/')
        return "the request path must start with '/'";
    if (strcasestr(path, "%2e%2e") || strstr(path, "%00"))
        return "the request path contains an encoded '..' or NUL";
    for (const char *s = path; *s; s++) {
        if (*s == '%' && (ot_hex_digit_value(s[1]) < 0 || ot_hex_digit_value(s[2]) < 0))
            return "the request path contains an invalid percent escape";
        if (*s != '/' && *s != '%' && !path_char((unsigned char)*s))
            return "the request path contains a character that must be percent-encoded";
    }
    for (const char *s = path + 1;; s++) {
        size_t n = seg_len(s);
        if (n == 0 && s[n] == '/')
            return "the request path contains an empty segment ('//')";
        if (dot_segment(s, n))
            return "the request path contains a '.' or '..' segment";
        s += n;
        if (!*s)
            return NULL;
    }
}

/* Decodes the route's parameters; a value may hold any byte but NUL, controls and '/' (a
 * parameter is one segment, even encoded). */
static bool params_decode(struct srv_request *req)
{
    struct param_ref raw[PARAMS_MAX];
    size_t n = 0;
    if (!pattern_match(req->route->pattern, req->path, raw, &n))
        return false;
    for (size_t i = 0; i < n; i++) {
        char *v = malloc(raw[i].raw_len + 1);
        ssize_t m = v ? pct_decode(raw[i].raw, raw[i].raw_len, v) : -1;
        req->params[req->nparams++] = (struct param){raw[i].name, raw[i].name_len, v};
        if (m < 0)
            return false;
        v[m] = '\0';
        for (ssize_t j = 0; j < m; j++)
            if ((unsigned char)v[j] < 0x20 || v[j] == 0x7f || v[j] == '/')
                return false;
    }
    return true;
}

/* ---- replies --------------------------------------------------------------------------------- */

static void add_header(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) != MHD_YES)
        ot_log(OT_LOG_ERR, "http: cannot add the response header %s", name);
}

/* RFC 6750 §3: a 401 names the scheme, and says whether a token was sent but refused. */
static void add_auth_challenge(struct srv_request *req, struct MHD_Response *r)
{
    bool sent = srv_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION) != NULL;
    if (req->route && req->route->auth == SRV_AUTH_DDI) {
        add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "TargetToken realm=\"otter\"");
        return;
    }
    add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
               sent ? "Bearer realm=\"otter\", error=\"invalid_token\"" : "Bearer realm=\"otter\"");
}

/* Records the reply (data is malloc'd or NULL, and taken). The first reply wins: a second one is
 * a handler bug, logged and dropped. */
static void set_reply(struct srv_request *req, unsigned status, uint8_t *data, size_t len)
{
    if (req->response) {
        ot_log(OT_LOG_ERR, "http: %s %s: a second reply (%u) was dropped: handler bug", req->method,
               req->route ? req->route->pattern : "-", status);
        free(data);
        return;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(len, data, data ? free : NULL);
    if (!r) {
        free(data);
        ot_log(OT_LOG_ERR, "http: out of memory for a response");
        return; /* queueing fails and libmicrohttpd closes the connection */
    }
    if (len > 0)
        add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    /* Replies can carry secrets (a new token): never cached, never sniffed. */
    add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    add_header(r, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_UNAUTHORIZED)
        add_auth_challenge(req, r);
    req->response = r;
    req->status = status;
    req->reply_bytes = len;
}

/* A 500 that needs no JSON encoding (so it cannot fail the way the reply it replaces did). */
static void reply_internal(struct srv_request *req)
{
    static const char body[] =
        "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}\n";
    char *copy = strdup(body);
    set_reply(req, 500, (uint8_t *)copy, copy ? strlen(copy) : 0);
}

void srv_reply_json(struct srv_request *req, unsigned status, json_t *body)
{
    struct ot_buf b;
    uint8_t *data = NULL;
    size_t len = 0;
    ot_buf_init(&b, REPLY_MAX);
    enum ot_err err = body ? ot_json_dump(body, &b) : OT_ERR_NOMEM;
    if (!err)
        err = ot_buf_steal(&b, &data, &len);
    ot_buf_release(&b);
    json_decref(body);
    if (err) {
        ot_log(OT_LOG_ERR, "http: cannot encode a reply: %s", ot_strerror(err));
        reply_internal(req);
        return;
    }
    set_reply(req, status, data, len);
}

OT_PRINTF(4, 0)
static void reply_verror(struct srv_request *req, unsigned status, const char *code,
                         const char *fmt, va_list ap)
{
    char msg[MSG_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    ascii_only(msg);
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    srv_reply_json(req, status, body);
}

void srv_reply_status(struct srv_request *req, unsigned status, const char *code, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_verror(req, status, code, fmt, ap);
    va_end(ap);
}

/* A 5xx message can hold what the client must not see (file names, SQL, library errors): it is
 * logged once here and the client gets the generic text of the error code. */
void srv_reply_error(struct srv_request *req, enum ot_err err, const char *fmt, ...)
{
    unsigned status = srv_status_for_err(err);
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (status >= 500) {
        char path[LOG_PATH_MAX * 4 + 8];
        ot_log(OT_LOG_ERR, "%s %s: %s", req->method,
               log_safe(req->path, LOG_PATH_MAX, path, sizeof(path)), msg);
        snprintf(msg, sizeof(msg), "%s", ot_strerror(err));
    }
    srv_reply_status(req, status, ot_err_name(err), "%s", msg);
}

void srv_reply_empty(struct srv_request *req, unsigned status) { set_reply(req, status, NULL, 0); }

void srv_reply_text(struct srv_request *req, unsigned status, const char *content_type,
                    const void *data, size_t len)
{
    uint8_t *copy = len ? malloc(len) : NULL;
    if (len && !copy)
        return reply_internal(req);
    if (len)
        memcpy(copy, data, len);
    set_reply(req, status, copy, len);
    if (req->response && len) {
        MHD_del_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        add_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    }
}

void srv_reply_header(struct srv_request *req, const char *name, const char *value)
{
    if (req->response)
        add_header(req->response, name, value);
}

void srv_reply_buf(struct srv_request *req, unsigned status, struct ot_buf *json_text)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (ot_buf_steal(json_text, &data, &len) != OT_OK)
        return reply_internal(req);
    set_reply(req, status, data, len);
}

/* ---- files: Range, If-Range, ETag ------------------------------------------------------------ */

#define RANGES_MAX 64            /* hard cap of srv_reply_file_ranges' max_ranges */
#define MP_BOUNDARY_LEN 32       /* hex digits of a multipart boundary */
#define MP_HEAD_MAX 384          /* one part's delimiter and headers */
#define MP_BLOCK (64 * 1024)     /* bytes libmicrohttpd asks the multipart reader for at once */

enum range_result { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

struct byte_range {
    uint64_t off, len;
};

/* One range-spec ("a-b", "a-", "-n"; n bytes of s) of a resource of size bytes (RFC 9110
 * §14.1.2). RANGE_NONE for a syntax error. */
static enum range_result parse_spec(const char *s, size_t n, uint64_t size, struct byte_range *ret)
{
    const char *dash = memchr(s, '-', n);
    if (!dash)
        return RANGE_NONE;
    char first[24], last[24];
    size_t fl = (size_t)(dash - s), ll = n - fl - 1;
    if (fl >= sizeof(first) || ll >= sizeof(last) || (fl == 0 && ll == 0))
        return RANGE_NONE;
    memcpy(first, s, fl), first[fl] = '\0';
    memcpy(last, dash + 1, ll), last[ll] = '\0';
    uint64_t a = 0, b = 0;
    if ((fl && ot_parse_u64(first, 0, UINT64_MAX, &a) != OT_OK) ||
        (ll && ot_parse_u64(last, 0, UINT64_MAX, &b) != OT_OK) || (fl && ll && b < a))
        return RANGE_NONE;
    if (!fl) { /* suffix: the last b bytes */
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        ret->len = OT_MIN(b, size);
        ret->off = size - ret->len;
        return RANGE_OK;
    }
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    if (!ll || b >= size)
        b = size - 1;
    *ret = (struct byte_range){a, b - a + 1};
    return RANGE_OK;
}

/* The satisfiable ranges of a "bytes=" header, in the order asked, at most max range-specs (the
 * list syntax of RFC 9110 §5.6.1: blanks around commas, empty elements skipped). Anything this
 * does not understand (other units, a syntax error in any spec, more than max specs) is ignored:
 * RANGE_NONE, the whole resource is sent, which the RFC allows. RANGE_UNSATISFIABLE when no spec
 * is satisfiable. */
static enum range_result parse_ranges(const char *h, uint64_t size, size_t max,
                                      struct byte_range *ret, size_t *ret_n)
{
    size_t n = 0, specs = 0;
    if (!h || strncmp(h, "bytes=", 6) != 0 || (max < 2 && strchr(h, ',')))
        return RANGE_NONE;
    for (const char *p = h + 6; *p;) {
        p += strspn(p, " \t");
        size_t k = strcspn(p, ",");
        size_t t = k;
        while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
            t--;
        if (t > 0) {
            if (++specs > max)
                return RANGE_NONE;
            enum range_result r = parse_spec(p, t, size, &ret[n]);
            if (r == RANGE_NONE)
                return RANGE_NONE;
            n += r == RANGE_OK;
        }
        p += k + (p[k] == ',');
    }
    if (specs == 0)
        return RANGE_NONE;
    *ret_n = n;
    return n ? RANGE_OK : RANGE_UNSATISFIABLE;
}

/* Coalesces ranges that overlap or touch (RFC 9110 §14.6 allows it), until none do; a merged
 * range keeps the place of the earlier one, so the parts stay in the order asked (its SHOULD). */
static size_t coalesce_ranges(struct byte_range *r, size_t n)
{
    for (bool merged = true; merged;) {
        merged = false;
        for (size_t i = 0; i < n && !merged; i++)
            for (size_t j = i + 1; j < n && !merged; j++) {
                uint64_t lo = OT_MAX(r[i].off, r[j].off);
                uint64_t hi = OT_MIN(r[i].off + r[i].len, r[j].off + r[j].len);
                if (lo > hi)
                    continue; /* a gap between them */
                uint64_t end = OT_MAX(r[i].off + r[i].len, r[j].off + r[j].len);
                r[i].off = OT_MIN(r[i].off, r[j].off);
                r[i].len = end - r[i].off;
                memmove(&r[j], &r[j + 1], (n - j - 1) * sizeof(*r));
                n--;
                merged = true;
            }
    }
    return n;
}

/* Whether an If-None-Match list names etag (weak comparison: W/ prefixes ignored, "*" matches). */
static bool etag_listed(const char *list, const char *etag)
{
    size_t n = strlen(etag);
    for (const char *p = list; *p;) {
        p += strspn(p, " \t,");
        if (!*p)
            break;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        size_t k = strcspn(p, " \t,");
        if (k == n && memcmp(p, etag, n) == 0)
            return true;
        p += k;
    }
    return false;
}

static void file_headers(struct MHD_Response *r, const char *content_type, const char *etag)
{
    add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    add_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    add_header(r, MHD_HTTP_HEADER_ETAG, etag);
    add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "private, no-transform");
    add_header(r, "X-Content-Type-Options", "nosniff");
}

/* A multipart/byteranges body (RFC 9110 §14.6), produced as libmicrohttpd asks for it: each part
 * is its delimiter and headers from memory, then its bytes read from the file; then the close
 * delimiter. */
struct multipart {
    int fd;
    size_t tail_len;
    char tail[MP_BOUNDARY_LEN + 16];
    size_t n;
    struct mp_part {
        uint64_t off, len; /* in the file */
        size_t head_len;
        char head[MP_HEAD_MAX];
    } part[];
};

static void multipart_free(void *cls)
{
    struct multipart *m = cls;
    close(m->fd);
    free(m);
}

static ssize_t copy_from(const char *s, size_t len, uint64_t at, char *buf, size_t max)
{
    size_t k = OT_MIN(max, len - (size_t)at);
    memcpy(buf, s + at, k);
    return (ssize_t)k;
}

static ssize_t multipart_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct multipart *m = cls;
    uint64_t at = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_part *p = &m->part[i];
        if (pos < at + p->head_len)
            return copy_from(p->head, p->head_len, pos - at, buf, max);
        at += p->head_len;
        if (pos < at + p->len) {
            size_t k = (size_t)OT_MIN((uint64_t)max, at + p->len - pos);
            ssize_t got;
            do
                got = pread(m->fd, buf, k, (off_t)(p->off + (pos - at)));
            while (got < 0 && errno == EINTR);
            return got > 0 ? got : MHD_CONTENT_READER_END_WITH_ERROR; /* 0: the file shrank */
        }
        at += p->len;
    }
    if (pos < at + m->tail_len)
        return copy_from(m->tail, m->tail_len, pos - at, buf, max);
    return MHD_CONTENT_READER_END_OF_STREAM;
}

/* A boundary that cannot be predicted, so no file can be made to contain it. */
static void mp_boundary(char out[MP_BOUNDARY_LEN + 1])
{
    uint8_t raw[MP_BOUNDARY_LEN / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        struct timespec ts; /* getrandom does not fail for 16 bytes once booted; still */
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t v[2] = {(uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32, (uint64_t)ts.tv_sec};
        memcpy(raw, v, sizeof(raw));
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/* The 206 multipart/byteranges reply for n >= 2 ranges; takes fd. */
static void reply_multipart(struct srv_request *req, int fd, uint64_t size, const char *etag,
                            const char *content_type, const struct byte_range *r, size_t n)
{
    struct multipart *m = calloc(1, sizeof(*m) + n * sizeof(m->part[0]));
    char boundary[MP_BOUNDARY_LEN + 1], type[MP_BOUNDARY_LEN + 64];
    if (!m) {
        close(fd);
        return reply_internal(req);
    }
    mp_boundary(boundary);
    m->fd = fd;
    m->n = n;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        struct mp_part *p = &m->part[i];
        int k = snprintf(p->head, sizeof(p->head),
                         "%s--%s\r\nContent-Type: %s\r\n"
                         "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                         i ? "\r\n" : "", boundary, content_type, (unsigned long long)r[i].off,
                         (unsigned long long)(r[i].off + r[i].len - 1), (unsigned long long)size);
        if (k < 0 || (size_t)k >= sizeof(p->head)) { /* a content type no caller uses */
            multipart_free(m);
            return reply_internal(req);
        }
        p->off = r[i].off;
        p->len = r[i].len;
        p->head_len = (size_t)k;
        total += p->head_len + p->len;
    }
    m->tail_len = (size_t)snprintf(m->tail, sizeof(m->tail), "\r\n--%s--\r\n", boundary);
    total += m->tail_len;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(total, MP_BLOCK, multipart_read, m, multipart_free);
    if (!resp) {
        multipart_free(m);
        return reply_internal(req);
    }
    snprintf(type, sizeof(type), "multipart/byteranges; boundary=%s", boundary);
    file_headers(resp, type, etag);
    req->response = resp;
    req->status = 206;
    req->reply_bytes = (size_t)total;
}

/* 416 with "Content-Range: bytes * /size" (RFC 9110 §15.5.17); takes fd. */
static void reply_unsatisfiable(struct srv_request *req, int fd, uint64_t size)
{
    char content_range[48];
    close(fd);
    srv_reply_status(req, 416, "range_not_satisfiable",
                     "the requested range is outside the %llu-byte file", (unsigned long long)size);
    snprintf(content_range, sizeof(content_range), "bytes */%llu", (unsigned long long)size);
    if (req->response)
        add_header(req->response, MHD_HTTP_HEADER_CONTENT_RANGE, content_range);
}

void srv_reply_file(struct srv_request *req, int fd, uint64_t size, const char *etag,
                    const char *content_type)
{
    srv_reply_file_ranges(req, fd, size, etag, content_type, 1);
}

void srv_reply_file_ranges(struct srv_request *req, int fd, uint64_t size, const char *etag,
                           const char *content_type, size_t max_ranges)
{
    if (req->response) {
        close(fd);
        return set_reply(req, 500, NULL, 0); /* logs the handler bug */
    }
    const char *inm = srv_req_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
    const char *range = srv_req_header(req, MHD_HTTP_HEADER_RANGE);
    const char *if_range = srv_req_header(req, MHD_HTTP_HEADER_IF_RANGE);
    struct byte_range ranges[RANGES_MAX] = {{0, size}};
    size_t n = 1;
    unsigned status = 200;
    if (inm && etag_listed(inm, etag)) {
        close(fd);
        set_reply(req, 304, NULL, 0);
        if (req->response)
            add_header(req->response, MHD_HTTP_HEADER_ETAG, etag);
        return;
    }
    /* If-Range with a strong validator: the range only if the client's copy is this one. */
    enum range_result rr = RANGE_NONE;
    if (range && (!if_range || strcmp(if_range, etag) == 0))
        rr = parse_ranges(range, size, OT_MAX(OT_MIN(max_ranges, (size_t)RANGES_MAX), 1), ranges,
                          &n);
    if (rr == RANGE_NONE) {
        ranges[0] = (struct byte_range){0, size};
        n = 1;
    }
    if (rr == RANGE_UNSATISFIABLE)
        return reply_unsatisfiable(req, fd, size);
    n = coalesce_ranges(ranges, n);
    if (n > 1) /* never a multipart reply for a single range (RFC 9110 §14.6) */
        return reply_multipart(req, fd, size, etag, content_type, ranges, n);
    uint64_t off = ranges[0].off, len = ranges[0].len;
    char content_range[96];
    if (rr == RANGE_OK) {
        status = 206;
        snprintf(content_range, sizeof(content_range), "bytes %llu-%llu/%llu",
                 (unsigned long long)off, (unsigned long long)(off + len - 1),
                 (unsigned long long)size);
    }
    /* libmicrohttpd sends it with sendfile(2) on plain connections and closes fd at the end. */
    struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, off);
    if (!r) {
        close(fd);
        return reply_internal(req);
    }
    file_headers(r, content_type, etag);
    if (status == 206)
        add_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, content_range);
    req->response = r;
    req->status = status;
    req->reply_bytes = (size_t)len;
}

/* ---- request accessors ----------------------------------------------------------------------- */

const char *srv_req_method(const struct srv_request *req) { return req->method; }

const char *srv_req_path(const struct srv_request *req) { return req->path; }

const char *srv_req_param(const struct srv_request *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nparams; i++)
        if (req->params[i].name_len == n && memcmp(req->params[i].name, name, n) == 0)
            return req->params[i].value;
    return NULL;
}

const char *srv_req_query(const struct srv_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *srv_req_header(const struct srv_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct query_all {
    const char *name;
    const char **out;
    size_t max, n;
};

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct query_all *q = cls;
    if (key && value && strcmp(key, q->name) == 0) {
        if (q->n < q->max)
            q->out[q->n] = value;
        q->n++;
    }
    return MHD_YES;
}

size_t srv_req_query_all(const struct srv_request *req, const char *name, const char **out,
                         size_t max)
{
    struct query_all q = {.name = name, .out = out, .max = max};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_one, &q);
    return q.n;
}

bool srv_req_tls(const struct srv_request *req) { return req->http->tls_cert != NULL; }

const struct ot_buf *srv_req_body(const struct srv_request *req) { return &req->body; }

json_t *srv_req_json(struct srv_request *req)
{
    struct ot_diag d = {0};
    json_t *v = NULL;
    enum ot_err err = ot_json_parse(req->body.data, req->body.len, &v, &d);
    if (err) {
        srv_reply_error(req, err == OT_ERR_NOMEM ? err : OT_ERR_FORMAT, "request body: %s", d.msg);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        srv_reply_error(req, OT_ERR_FORMAT, "request body: expected a JSON object");
        return NULL;
    }
    return v;
}

const char *srv_req_principal(const struct srv_request *req) { return req->principal; }

uint32_t srv_req_scopes(const struct srv_request *req) { return req->scopes; }

void srv_req_set_scopes(struct srv_request *req, uint32_t scopes) { req->scopes = scopes; }

int64_t srv_req_device(const struct srv_request *req) { return req->device; }

void srv_req_set_device(struct srv_request *req, int64_t device_id) { req->device = device_id; }

void srv_req_set_ctx(struct srv_request *req, void *ctx, void (*free_fn)(void *))
{
    if (req->ctx_free)
        req->ctx_free(req->ctx);
    req->ctx = ctx;
    req->ctx_free = free_fn;
}

void *srv_req_ctx(const struct srv_request *req) { return req->ctx; }

void srv_req_set_principal(struct srv_request *req, const char *principal)
{
    snprintf(req->principal, sizeof(req->principal), "%s", principal ? principal : "");
}

/* ---- the request's life ---------------------------------------------------------------------- */

/* IPv4 clients of a dual-stack socket arrive as ::ffff:a.b.c.d; they are logged as a.b.c.d. */
static void ipv6_text(const struct in6_addr *a, char *out, size_t len)
{
    if (IN6_IS_ADDR_V4MAPPED(a))
        inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len);
    else
        inet_ntop(AF_INET6, a, out, (socklen_t)len);
}

static void client_address(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(out, len, "-");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        ipv6_text(&((const struct sockaddr_in6 *)sa)->sin6_addr, out, len);
}

/* libmicrohttpd calls this with the raw request target once the request line is in; what it
 * returns is the request's con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct srv_http *h = cls;
    struct srv_request *req = calloc(1, sizeof(*req));
    size_t n = strcspn(uri, "?");
    if (!req)
        return NULL;
    req->path_too_long = n > PATH_LEN_MAX;
    req->path = strndup(uri, OT_MIN(n, (size_t)PATH_LEN_MAX + 1));
    if (!req->path) {
        free(req);
        return NULL;
    }
    req->http = h;
    req->conn = conn;
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    client_address(conn, req->client, sizeof(req->client));
    ot_buf_init(&req->body, 0);
    atomic_fetch_add(&h->in_flight, 1);
    return req;
}

static void request_free(struct srv_request *req)
{
    if (req->ctx_free)
        req->ctx_free(req->ctx);
    for (size_t i = 0; i < req->nparams; i++)
        free(req->params[i].value);
    if (req->response)
        MHD_destroy_response(req->response);
    ot_buf_release(&req->body);
    free(req->path);
    free(req);
}

static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return "";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return " (timed out)";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return " (server shutdown)";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return " (client went away)";
    default:
        return " (closed on error)";
    }
}

/* One line per request: client, method, path (never the query string: it may carry tokens),
 * status ("-" when libmicrohttpd answered itself, e.g. 431), reply bytes, duration, principal. */
static void log_request(const struct srv_request *req, enum MHD_RequestTerminationCode toe)
{
    char path[LOG_PATH_MAX * 4 + 8], method[METHOD_MAX * 4 + 8], status[16];
    if (req->status)
        snprintf(status, sizeof(status), "%u", req->status);
    else
        snprintf(status, sizeof(status), "-");
    ot_log(OT_LOG_INFO, "%s %s %s %s %zuB %.1fms%s%s%s", req->client,
           req->method[0] ? log_safe(req->method, METHOD_MAX, method, sizeof(method)) : "-",
           log_safe(req->path, LOG_PATH_MAX, path, sizeof(path)), status, req->reply_bytes,
           elapsed_ms(&req->start), req->principal[0] ? " " : "", req->principal,
           termination_name(toe));
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct srv_http *h = cls;
    struct srv_request *req = *con_cls;
    if (!req)
        return;
    if (h->log_requests)
        log_request(req, toe);
    request_free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&h->in_flight, 1);
}

static enum MHD_Result queue(struct srv_request *req)
{
    req->state = REQ_QUEUED;
    if (!req->response)
        return MHD_NO;
    if (atomic_load(&req->http->stopping))
        add_header(req->response, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result r = MHD_queue_response(req->conn, req->status, req->response);
    MHD_destroy_response(req->response); /* libmicrohttpd holds its own reference */
    req->response = NULL;
    if (r != MHD_YES)
        ot_log(OT_LOG_ERR, "http: libmicrohttpd refused the reply (%u)", req->status);
    return r;
}

static bool has_body(const struct srv_request *req)
{
    const char *cl = srv_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return srv_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING) || (cl && strcmp(cl, "0") != 0);
}

static bool body_too_large(const struct srv_request *req)
{
    const char *cl = srv_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n;
    return cl && ot_parse_u64(cl, 0, UINT64_MAX, &n) == OT_OK && n > req->route->max_body;
}

static void reply_not_allowed(struct srv_request *req, const char *allow)
{
    srv_reply_status(req, 405, "method_not_allowed", "this path does not support %s", req->method);
    if (req->response)
        add_header(req->response, MHD_HTTP_HEADER_ALLOW, allow);
}

/* Path checks and routing; false when a reply was made. */
static bool route_request(struct srv_request *req)
{
    char allow[128];
    const char *problem =
        req->path_too_long ? "the request path is too long" : path_problem(req->path);
    if (problem) {
        srv_reply_status(req, 400, "bad_request", "%s", problem);
        return false;
    }
    switch (route_find(req->http, req->path, req->method, &req->route, allow, sizeof(allow))) {
    case ROUTE_NO_PATH:
        srv_reply_status(req, 404, "not_found", "no such API path");
        return false;
    case ROUTE_NO_METHOD:
        reply_not_allowed(req, allow);
        return false;
    case ROUTE_FOUND:
        break;
    }
    if (!params_decode(req)) {
        srv_reply_status(req, 400, "bad_request", "invalid path parameter");
        return false;
    }
    return true;
}

/* Authentication, then the announced body size: both before a byte of the body is read. */
static bool admit_request(struct srv_request *req)
{
    struct srv_http *h = req->http;
    if (req->route->auth != SRV_AUTH_NONE) {
        char msg[MSG_MAX] = "";
        int status = h->auth ? h->auth(h->app, req, req->route, msg, sizeof(msg)) : 401;
        if (status == 401 && req->route->auth == SRV_AUTH_DDI) {
            srv_reply_empty(req, 401); /* hawkBit's clients expect no body */
            return false;
        }
        if (status != 0) {
            srv_reply_status(req, (unsigned)status,
                             status == 403   ? "forbidden"
                             : status == 404 ? "not_found"
                             : status == 503 ? "unavailable"
                                             : "unauthorized",
                             "%s", msg[0] ? msg : "authentication required");
            return false;
        }
    }
    if (body_too_large(req)) {
        srv_reply_status(req, 413, "too_large", "the request body is larger than %zu bytes",
                         req->route->max_body);
        return false;
    }
    return true;
}

static enum MHD_Result on_headers(struct srv_request *req, const char *method)
{
    snprintf(req->method, sizeof(req->method), "%s", method);
    if (strlen(method) >= sizeof(req->method)) /* no route has such a method */
        snprintf(req->method, sizeof(req->method), "?");
    if (route_request(req) && admit_request(req)) {
        ot_buf_init(&req->body, req->route->body ? 0 : req->route->max_body);
        req->state = REQ_BODY;
        return MHD_YES;
    }
    if (has_body(req))
        return queue(req); /* the body is refused unread; libmicrohttpd closes the connection */
    req->state = REQ_ANSWER;
    return MHD_YES;
}

static enum MHD_Result run_handler(struct srv_request *req)
{
    req->route->handler(req->http->app, req);
    if (!req->response) {
        ot_log(OT_LOG_ERR, "http: the handler of %s %s returned without a reply: bug",
               req->route->method, req->route->pattern);
        reply_internal(req);
    }
    return queue(req);
}

/* A streaming route: the chunk goes to the route's callback, bounded by max_body in total. */
static enum MHD_Result on_stream(struct srv_request *req, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (n > req->route->max_body - OT_MIN(req->streamed, req->route->max_body)) {
        srv_reply_status(req, 413, "too_large", "the request body is larger than %zu bytes",
                         req->route->max_body);
        req->state = REQ_DISCARD;
        return MHD_YES;
    }
    req->streamed += n;
    if (!req->route->body(req->http->app, req, (const uint8_t *)data, n)) {
        if (!req->response) {
            ot_log(OT_LOG_ERR, "http: the body callback of %s %s failed without a reply: bug",
                   req->route->method, req->route->pattern);
            reply_internal(req);
        }
        req->discard_max = req->route->max_body;
        req->state = REQ_DISCARD;
    }
    return MHD_YES;
}

static enum MHD_Result on_body(struct srv_request *req, const char *data, size_t *size)
{
    if (*size == 0)
        return run_handler(req);
    if (req->route->body)
        return on_stream(req, data, size);
    if (ot_buf_append(&req->body, data, *size) != OT_OK) {
        /* Only a body without Content-Length (chunked) gets here: the rest is dropped. */
        srv_reply_status(req, 413, "too_large", "the request body is larger than %zu bytes",
                         req->route->max_body);
        ot_buf_release(&req->body);
        req->state = REQ_DISCARD;
    }
    *size = 0;
    return MHD_YES;
}

static enum MHD_Result on_discard(struct srv_request *req, size_t *size)
{
    if (*size == 0)
        return queue(req);
    req->discarded += *size;
    *size = 0;
    /* MHD_NO: close, no reply */
    return req->discarded > OT_MAX(req->discard_max, DISCARD_MAX) ? MHD_NO : MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct srv_request *req = *con_cls;
    if (!req)
        return MHD_NO; /* on_uri ran out of memory */
    switch (req->state) {
    case REQ_HEADERS:
        return on_headers(req, method);
    case REQ_BODY:
        return on_body(req, upload_data, upload_data_size);
    case REQ_DISCARD:
    case REQ_ANSWER:
        return on_discard(req, upload_data_size);
    case REQ_QUEUED:
        break;
    }
    return MHD_YES;
}

/* ---- the daemon ------------------------------------------------------------------------------ */

OT_PRINTF(2, 0)
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct srv_http *h = cls;
    char msg[MSG_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\r\n")] = '\0';
    char *html = strstr(msg, " ('<html>"); /* its canned error page says nothing more */
    if (html)
        snprintf(html, sizeof(msg) - (size_t)(html - msg), ")");
    if (atomic_load(&h->started)) {
        ot_log(OT_LOG_INFO, "http: libmicrohttpd: %s", msg);
        return;
    }
    pthread_mutex_lock(&h->start_lock);
    snprintf(h->start_error, sizeof(h->start_error), "%s", msg);
    pthread_mutex_unlock(&h->start_lock);
}

static enum ot_err read_pem(const char *path, const char *what, char **ret, struct ot_diag *d)
{
    struct ot_buf b;
    uint8_t *data;
    size_t len;
    ot_buf_init(&b, PEM_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    if (!err)
        err = ot_buf_steal(&b, &data, &len);
    ot_buf_release(&b);
    if (err)
        return ot_diag_prefix(d, err, "cannot read the TLS %s", what);
    *ret = (char *)data; /* NUL-terminated, as libmicrohttpd needs */
    return OT_OK;
}

static void http_free(struct srv_http *h)
{
    if (!h)
        return;
    if (h->tls_key)
        explicit_bzero(h->tls_key, strlen(h->tls_key));
    free(h->tls_key);
    free(h->tls_cert);
    pthread_mutex_destroy(&h->start_lock);
    free(h);
}
OT_DEFINE_CLEANUP(struct srv_http, http_free)

/* Each pool thread takes its share of the connection limit: never more threads than connections. */
static unsigned pool_size(unsigned threads, unsigned connection_limit)
{
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    return OT_MIN(OT_MIN(threads, (unsigned)THREADS_MAX), connection_limit);
}

/* While stopping, new connections are closed as soon as they are accepted. (MHD_quiesce_daemon
 * would stop accepting altogether, but with a thread pool on epoll it races a worker removing the
 * same listen socket, and libmicrohttpd 0.9.75 aborts the process when it loses that race.) */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    const struct srv_http *h = cls;
    return atomic_load(&h->stopping) ? MHD_NO : MHD_YES;
}

static enum ot_err daemon_start(struct srv_http *h, const struct srv_http_config *cfg,
                                const struct srv_listen *l, struct ot_diag *d)
{
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem extra[4] = {{MHD_OPTION_SOCK_ADDR, 0, (void *)&l->addr}};
    size_t n = 1;
    if (l->ipv6)
        flags |= MHD_USE_DUAL_STACK; /* "[::]" also answers IPv4 */
    if (h->tls_cert) {
        flags |= MHD_USE_TLS;
        extra[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key};
        extra[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert};
    }
    extra[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->daemon = MHD_start_daemon(
        flags, l->port, on_accept, h, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_THREAD_POOL_SIZE, pool_size(cfg->threads, cfg->connection_limit),
        MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->header_limit,
        MHD_OPTION_ARRAY, extra, MHD_OPTION_END);
    if (h->daemon)
        return OT_OK;
    int errnum = errno;
    pthread_mutex_lock(&h->start_lock);
    enum ot_err err = ot_diag_set(d, OT_ERR_IO, "cannot listen on %s: %s", cfg->listen,
                                  h->start_error[0] ? h->start_error : strerror(errnum));
    pthread_mutex_unlock(&h->start_lock);
    return err;
}

static enum ot_err config_check(const struct srv_http_config *cfg, struct ot_diag *d)
{
    if (!cfg || !cfg->listen || cfg->connection_limit == 0)
        return ot_diag_set(d, OT_ERR_INVALID, "http: listen address and connection limit needed");
    if (!cfg->tls_cert != !cfg->tls_key)
        return ot_diag_set(d, OT_ERR_CONFIG, "tls_cert and tls_key must be set together");
    return OT_OK;
}

static enum ot_err http_init(struct srv_http *h, const struct srv_http_config *cfg,
                             struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    if (cfg->tls_cert) {
        err = read_pem(cfg->tls_cert, "certificate", &h->tls_cert, d);
        if (!err)
            err = read_pem(cfg->tls_key, "key", &h->tls_key, d);
    }
    return err;
}

enum ot_err srv_http_start(const struct srv_http_config *cfg, const struct srv_route *routes,
                           size_t nroutes, srv_auth_fn auth, void *app, struct srv_http **ret,
                           struct ot_diag *d)
{
    struct srv_listen l;
    enum ot_err err = config_check(cfg, d);
    if (!err)
        err = srv_listen_parse(cfg->listen, &l, d);
    for (size_t i = 0; !err && i < nroutes; i++)
        err = route_check(&routes[i], i, d);
    if (err)
        return err;
    _cleanup_(http_freep) struct srv_http *h = calloc(1, sizeof(*h));
    if (!h)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    *h = (struct srv_http){.routes = routes,
                           .nroutes = nroutes,
                           .auth = auth,
                           .app = app,
                           .log_requests = cfg->log_requests};
    pthread_mutex_init(&h->start_lock, NULL);
    err = http_init(h, cfg, d);
    if (!err)
        err = daemon_start(h, cfg, &l, d);
    if (err)
        return err;
    atomic_store(&h->started, true);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : l.port;
    *ret = TAKE_PTR(h);
    return OT_OK;
}

uint16_t srv_http_port(const struct srv_http *h) { return h ? h->port : 0; }

/* Waits (bounded) until no request is between its request line and its reply. */
static void drain(struct srv_http *h)
{
    const struct timespec tick = {0, 10 * 1000 * 1000};
    for (int waited = 0; atomic_load(&h->in_flight) > 0 && waited < DRAIN_MS; waited += 10)
        nanosleep(&tick, NULL);
    unsigned left = atomic_load(&h->in_flight);
    if (left)
        ot_log(OT_LOG_WARNING, "http: %u request(s) still in flight after %d ms, closing", left,
               DRAIN_MS);
}

void srv_http_stop(struct srv_http *h)
{
    if (!h)
        return;
    atomic_store(&h->stopping, true);
    /* From here new connections are closed at once and keep-alive ones get "Connection: close"
     * on their reply (see on_accept). */
    drain(h);
    MHD_stop_daemon(h->daemon);
    http_free(h);
}
