/* The device API client (net.h) on the event loop (loop.h).
 *
 * Every call becomes a `struct request` that lives in the net's list until its callback is due.
 * Its life: QUEUED (a 0 ms timer starts it, so that no callback ever runs inside the caller's
 * call) → WAIT_AUTH (until the auth it waits for ends) → ACTIVE (its HTTP transfer runs)
 * → done: the request is freed first and its callback called last, so a callback may do anything,
 * ag_net_free included. A paused download that has no transfer is IDLE; a request that failed
 * before any transfer is FAILED until a 0 ms timer delivers the error.
 *
 * The data callback runs inside the HTTP client's data callback, and the code around it still
 * holds the request. So while a data callback runs (in_data_cb > 0), new requests only queue (as
 * always), and a request cancelled then becomes a ZOMBIE: out of the net, its transfer aborted
 * (the data callback's return) or cancelled by a 0 ms timer, then freed. ag_net_free inside a
 * callback frees everything but the struct itself, which the code that called the callback frees
 * when it gets control back (busy count, dead flag).
 *
 * Authentication (docs/device-api.md): the signed auth request is built and signed once in
 * ag_net_new (its bytes never change: there is no nonce), so the secret key is not kept. Requests
 * that need a token and find none wait for one auth request (auth_seq numbers them); its outcome
 * starts or fails all of them. A 401 drops the token if it is the one the request sent, and the
 * request waits for a new one, once.
 *
 * Out of memory for the request itself (a few hundred bytes) is the one case where a callback is
 * never called: there is nothing left to call it from. */
#include <inttypes.h>
#include <stdarg.h>
#include <strings.h>

#include "otter/client.h"
#include "otter/encoding.h"
#include "otter/json.h"

#include "http.h"
#include "net.h"

#ifndef OTTER_VERSION
#define OTTER_VERSION "0"
#endif

#define AUTH_PATH "/api/device/v1/auth"
#define CHECKIN_PATH "/api/device/v1/checkin"
#define INVENTORY_PATH "/api/device/v1/inventory"
#define SERVERS_MAX 16             /* configured server URLs */
#define SERVER_URL_MAX 1024        /* bytes of a server's base URL */
#define TOKEN_MARGIN_S 60          /* renew the token this long before it expires (at most a
                                      tenth of its lifetime) */
#define SERVER_MSG_MAX 300         /* bytes of the server's message quoted in a diagnostic */
#define HEADERS_MAX 6              /* request header lines of ours */
#define KEEP_IDLE_S 3              /* an idle connection of the agent's own client is kept this
                                      long: a check-in, its report and its download share it */

enum req_kind { REQ_AUTH, REQ_CHECKIN, REQ_REPORT, REQ_INVENTORY, REQ_DOWNLOAD };

enum req_state { RS_QUEUED, RS_WAIT_AUTH, RS_ACTIVE, RS_IDLE, RS_FAILED, RS_ZOMBIE };

struct request {
    struct request *prev, *next;   /* in net->requests; unlinked when delivered or a zombie */
    struct ag_net *net;            /* NULL once a zombie */
    struct ag_loop *loop;
    enum req_kind kind;
    enum req_state state;
    const char *method;
    char *path;                    /* server-relative path ("/api/..."), or NULL: */
    char *url;                     /* an absolute download URL */
    char *origin;                  /* scheme://host[:port] of url, for messages (never the URL:
                                      it may be a signed one) */
    bool send_token;
    struct ot_buf body;            /* request body (JSON) */
    struct ot_buf reply;           /* bounded reply body; an error reply's first bytes */
    struct ag_http_xfer *xfer;     /* ACTIVE and ZOMBIE: the HTTP exchange */
    char *headers[HEADERS_MAX];    /* this attempt's header lines (one may hold the token) */
    size_t nheaders;
    long status;                   /* the reply's status, once its head arrived */
    size_t server, tried;          /* the server of this attempt, attempts that failed over */
    bool reauthed;                 /* a 401 made it wait for a new token once already */
    uint64_t token_gen;            /* the token this attempt sent */
    uint64_t auth_seq;             /* WAIT_AUTH: the auth it waits for; for an auth, its own */
    uint64_t timer;                /* QUEUED, IDLE→QUEUED, FAILED, ZOMBIE: the loop timer */
    bool failed;                   /* a callback of ours aborted the transfer: res says why */
    struct ag_net_result res;
    char errors[OT_DIAG_MSG_MAX];  /* what each server that failed over said, "; "-joined */
    size_t errors_len;
    ag_net_checkin_fn checkin_fn;
    ag_net_done_fn done_fn;
    ag_net_data_fn data_fn;
    void *userdata;
    /* downloads */
    uint64_t offset;               /* the first byte asked for */
    uint64_t pos;                  /* the absolute offset of the next byte */
    char *if_range;                /* "If-Range: <etag>" or NULL */
    uint64_t max_rate;
    bool paused;
};

/* The caller's handle is the request itself. */
struct ag_download {
    struct request r;
};

struct ag_net {
    struct ag_loop *loop;
    char **servers;                /* base URLs without trailing '/' */
    size_t nservers;
    size_t current;                /* the server that answered last */
    char *ca_file, *pinned_key, *client_cert, *client_key, *user_agent;
    char *https_proxy, *http_proxy, *no_proxy;
    struct ag_http_tls tls;        /* the strings above */
    struct ag_http *http;
    bool own_http;                 /* made by ag_net_new (else the caller's, shared) */
    bool allow_http;
    long connect_timeout_s, request_timeout_s, stall_timeout_s;
    struct ot_buf auth_body;       /* the signed auth request: holds the enrollment token */
    char *sig_header;              /* "X-Otter-Signature: <base64>" */
    char *auth_header;             /* "Authorization: Bearer <token>", NULL without a token */
    uint64_t token_gen;            /* bumped by every new or dropped token */
    uint64_t token_renew_ms;       /* ag_loop_now_ms() after which the token is renewed */
    uint64_t auth_seq;             /* the last auth started */
    struct request *auth;          /* the auth in flight, or NULL */
    struct request *requests;
    int busy;                      /* callers' callbacks running */
    bool dead;                     /* ag_net_free ran inside one: the last to return frees n */
    bool offline;                  /* simulated: every attempt fails (ag_net_set_offline) */
};

/* Data callbacks running on this thread (see the top of this file). */
static _Thread_local int in_data_cb;

static void proceed(struct request *r);
static void complete(struct request *r);

/* ---- small helpers --------------------------------------------------------------------------- */

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* The proxy a request to url goes through, or NULL. */
static const char *proxy_for(const struct ag_net *n, const char *url)
{
    const char *proxy = has_prefix_ci(url, "https://") ? n->https_proxy : n->http_proxy;
    return proxy && !ag_http_proxy_skip(url, n->no_proxy) ? proxy : NULL;
}

/* The server's text goes into logs and terminals: control characters become '?'. */
static void safe_copy(char *out, size_t len, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = '\0';
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* Header lines may hold the token: wiped before they are freed. */
static void free_headers(struct request *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        free_secret(r->headers[i]);
    r->nheaders = 0;
}

/* Around every call of a caller's callback. leave() returns true when the callback (or one
 * nested in it) freed the net: then the net must not be touched any more. */
static void enter(struct ag_net *n) { n->busy++; }

static bool leave(struct ag_net *n)
{
    n->busy--;
    if (!n->dead)
        return false;
    if (n->busy == 0)
        free(n);
    return true;
}

/* ---- requests: life cycle -------------------------------------------------------------------- */

static void link_request(struct ag_net *n, struct request *r)
{
    r->prev = NULL;
    r->next = n->requests;
    if (n->requests)
        n->requests->prev = r;
    n->requests = r;
}

static void unlink_request(struct request *r)
{
    if (!r->net)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        r->net->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->net->auth == r)
        r->net->auth = NULL;
    r->prev = r->next = NULL;
    r->net = NULL;
}

/* Frees a request that is on no loop (no transfer; its timer cancelled). */
static void request_free(struct request *r)
{
    unlink_request(r);
    if (r->timer)
        ag_loop_timer_cancel(r->loop, r->timer);
    if (r->xfer)
        ag_http_cancel(r->xfer);
    free_headers(r);
    if (r->body.data)
        explicit_bzero(r->body.data, r->body.len); /* an auth body holds the enrollment token */
    ot_buf_release(&r->body);
    ot_buf_release(&r->reply);
    free(r->path);
    free(r->url);
    free(r->origin);
    free(r->if_range);
    free(r);
}

static void on_request_timer(void *userdata);

static void request_timer(struct request *r)
{
    r->timer = ag_loop_timer(r->loop, 0, on_request_timer, r);
}

/* A new request, linked and QUEUED (or NULL without memory). Downloads are allocated as the
 * struct ag_download that the caller gets. */
static struct request *request_new(struct ag_net *n, enum req_kind kind, const char *method,
                                   size_t reply_max)
{
    struct request *r;
    if (kind == REQ_DOWNLOAD) {
        struct ag_download *dl = calloc(1, sizeof(*dl));
        r = dl ? &dl->r : NULL;
    } else {
        r = calloc(1, sizeof(*r));
    }
    if (!r)
        return NULL;
    r->loop = n->loop;
    r->kind = kind;
    r->method = method;
    r->state = RS_QUEUED;
    ot_buf_init(&r->body, OT_WIRE_BODY_MAX);
    ot_buf_init(&r->reply, reply_max);
    r->net = n;
    link_request(n, r);
    return r;
}

/* Drops a request without its callback. Inside a data callback it becomes a zombie, reaped from
 * the loop in a moment (the code that called the data callback still holds it). */
static void discard(struct request *r)
{
    unlink_request(r);
    if (r->state == RS_ACTIVE && in_data_cb > 0) {
        if (r->timer)
            ag_loop_timer_cancel(r->loop, r->timer);
        ag_http_cancel(r->xfer); /* no callback of it runs any more */
        r->xfer = NULL;
        r->state = RS_ZOMBIE;
        request_timer(r); /* without memory: freed by download_data when the callback returns */
        return;
    }
    request_free(r); /* cancels its transfer */
}

/* ---- results --------------------------------------------------------------------------------- */

static const char *status_text(long status)
{
    switch (status) {
    case 400: return "bad request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not found";
    case 409: return "conflict";
    case 413: return "request too large";
    case 416: return "range not satisfiable";
    case 500: return "internal server error";
    case 502: return "bad gateway";
    case 503: return "service unavailable";
    case 504: return "gateway timeout";
    case 507: return "insufficient storage";
    default: return status >= 300 && status < 400 ? "redirect (not followed)" : "unexpected reply";
    }
}

/* Who answered, for messages: the server's base URL, or the origin of an absolute URL. */
static const char *who(const struct request *r)
{
    return r->path ? r->net->servers[r->server] : r->origin;
}

/* The server's message from its error body {"error":{"message":...}}, else the status text. */
static void server_message(const struct request *r, long status, char *out, size_t len)
{
    json_t *j = NULL;
    const char *msg = NULL;
    if (r->reply.len > 0 && ot_json_parse(r->reply.data, r->reply.len, &j, NULL) == OT_OK)
        msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    safe_copy(out, len, msg && msg[0] ? msg : status_text(status));
    json_decref(j);
}

static void set_http_error(struct request *r, long status)
{
    char msg[SERVER_MSG_MAX];
    server_message(r, status, msg, sizeof(msg));
    r->res.http_status = status;
    ot_diag_set(&r->res.diag, ot_client_err_for_status(status), "server %s: HTTP %ld: %s", who(r),
                status, msg);
    r->res.err = r->res.diag.err;
}

/* Marks the transfer as failed by us (the HTTP client is told to stop by our callback's return). */
static void fail(struct request *r, enum ot_err err, const char *fmt, ...) OT_PRINTF(3, 4);
static void fail(struct request *r, enum ot_err err, const char *fmt, ...)
{
    char msg[OT_DIAG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->failed = true;
    ot_diag_set(&r->res.diag, err, "server %s: %s", who(r), msg);
    r->res.err = err;
}

/* Fails a request that has no transfer: its callback runs from the loop in a moment. */
static void fail_soon(struct request *r, enum ot_err err, const struct ot_diag *d)
{
    r->res.err = err;
    ot_diag_set(&r->res.diag, err, "%s", d && d->msg[0] ? d->msg : ot_strerror(err));
    r->state = RS_FAILED;
    request_timer(r);
    if (!r->timer) /* no memory for the timer either: the callback cannot be called */
        request_free(r);
}

/* ---- transfers ------------------------------------------------------------------------------- */

static enum ot_err on_head(void *userdata, struct ag_http_xfer *x, int status, struct ot_diag *d);
static enum ot_err on_data(void *userdata, const uint8_t *p, size_t n, struct ot_diag *d);
static void on_done(void *userdata, const struct ag_http_result *res);
static void next_server(struct request *r, enum ot_err err, const char *msg);

static bool add_header(struct request *r, const char *fmt, ...) OT_PRINTF(2, 3);
static bool add_header(struct request *r, const char *fmt, ...)
{
    if (r->nheaders == HEADERS_MAX)
        return false;
    va_list ap;
    va_start(ap, fmt);
    char *h = NULL;
    int n = vasprintf(&h, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    r->headers[r->nheaders++] = h;
    return true;
}

/* This attempt's header lines: JSON, the signature of an auth, the token, the range. */
static bool set_headers(struct request *r)
{
    struct ag_net *n = r->net;
    bool ok = true;
    free_headers(r);
    if (r->kind != REQ_DOWNLOAD) {
        ok &= add_header(r, "Accept: application/json");
        ok &= add_header(r, "Content-Type: application/json");
    }
    if (r->kind == REQ_AUTH)
        ok &= add_header(r, "%s", n->sig_header);
    r->token_gen = n->token_gen;
    if (r->send_token && n->auth_header)
        ok &= add_header(r, "%s", n->auth_header);
    if (r->kind == REQ_DOWNLOAD && r->offset > 0) /* a 200 answer is ours to judge (If-Range) */
        ok &= add_header(r, "Range: bytes=%" PRIu64 "-", r->offset);
    if (r->if_range)
        ok &= add_header(r, "%s", r->if_range);
    return ok;
}

/* One attempt on server r->server (or the absolute URL). */
static void attempt(struct request *r)
{
    struct ag_net *n = r->net;
    if (r->kind == REQ_DOWNLOAD && r->paused) {
        r->state = RS_IDLE; /* ag_net_download_pause(false) goes on from here */
        return;
    }
    if (n->offline) {
        r->tried = n->nservers; /* nowhere else to go either */
        next_server(r, OT_ERR_IO, "network unreachable (simulated)");
        return;
    }
    struct ot_buf url;
    ot_buf_init(&url, SERVER_URL_MAX + OT_WIRE_URL_MAX + 1);
    struct ot_diag d = {0};
    enum ot_err err = r->path ? ot_buf_printf(&url, "%s%s", n->servers[r->server], r->path)
                              : ot_buf_append_str(&url, r->url);
    if (err)
        ot_diag_set(&d, err, "request URL too long");
    r->reply.len = 0;
    r->failed = false;
    r->status = 0;
    r->pos = r->offset;
    if (!err && !set_headers(r))
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err) {
        bool dl = r->kind == REQ_DOWNLOAD;
        struct ag_http_request rq = {
            .method = r->method,
            .url = ot_buf_str(&url),
            .headers = (const char *const *)r->headers,
            .nheaders = r->nheaders,
            .body = dl ? NULL : r->body.data,
            .body_len = dl ? 0 : r->body.len,
            .tls = &n->tls,
            .user_agent = n->user_agent,
            .connect_timeout_s = (unsigned)n->connect_timeout_s,
            .timeout_s = dl ? 0 : (unsigned)n->request_timeout_s,
            .stall_timeout_s = (unsigned)n->stall_timeout_s,
            .max_rate = dl ? r->max_rate : 0,
            .proxy = proxy_for(n, ot_buf_str(&url)),
        };
        r->xfer = ag_http_start(n->http, &rq, on_head, on_data, on_done, r, &d);
        if (!r->xfer)
            err = d.err ? d.err : OT_ERR_INTERNAL;
        else if (r->paused)
            ag_http_pause(r->xfer, true);
    }
    ot_buf_release(&url); /* the client copied it */
    if (err) {
        r->res.err = err;
        ot_diag_set(&r->res.diag, err, "%s", d.msg);
        complete(r);
        return;
    }
    r->state = RS_ACTIVE;
}

/* A transport error or a 5xx: the next server, or the end when every one has failed. A download
 * that has delivered data does not move (the caller resumes it from where it is). */
static void next_server(struct request *r, enum ot_err err, const char *msg)
{
    struct ag_net *n = r->net;
    int w = snprintf(r->errors + r->errors_len, sizeof(r->errors) - r->errors_len, "%s%s",
                     r->errors_len ? "; " : "", msg);
    if (w > 0)
        r->errors_len = OT_MIN(r->errors_len + (size_t)w, sizeof(r->errors) - 1);
    r->tried++;
    if (!r->path || r->tried >= n->nservers || r->pos > r->offset) {
        ot_diag_set(&r->res.diag, err, "%s", r->errors);
        r->res.err = err;
        complete(r);
        return;
    }
    r->server = (r->server + 1) % n->nservers;
    attempt(r);
}

/* ---- authentication -------------------------------------------------------------------------- */

static bool token_valid(const struct ag_net *n)
{
    return n->auth_header && ag_loop_now_ms() < n->token_renew_ms;
}

static void drop_token(struct ag_net *n)
{
    free_secret(n->auth_header);
    n->auth_header = NULL;
    n->token_gen++;
}

static enum ot_err set_token(struct ag_net *n, const struct ot_wire_auth_resp *a)
{
    char *h = NULL;
    if (asprintf(&h, "Authorization: Bearer %s", a->token) < 0)
        return OT_ERR_NOMEM;
    drop_token(n);
    n->auth_header = h;
    uint64_t margin = OT_MIN((uint64_t)TOKEN_MARGIN_S, (uint64_t)a->expires_in / 10);
    n->token_renew_ms = ag_loop_now_ms() + ((uint64_t)a->expires_in - margin) * 1000u;
    return OT_OK;
}

/* The first waiter for auth number seq, or NULL. */
static struct request *find_waiter(struct ag_net *n, uint64_t seq)
{
    for (struct request *r = n->requests; r; r = r->next)
        if (r->state == RS_WAIT_AUTH && r->auth_seq == seq)
            return r;
    return NULL;
}

/* Starts or fails everything that waited for auth number seq. Looked up again after each one:
 * a callback may cancel others, start new ones (they wait for the next auth) or free the net. */
static void release_waiters(struct ag_net *n, uint64_t seq, const struct ag_net_result *res)
{
    enter(n);
    struct request *w;
    while ((w = find_waiter(n, seq))) {
        if (res->err == OT_OK) {
            attempt(w); /* with the new token, however short-lived: never an auth loop */
        } else {
            w->res = *res;
            complete(w);
        }
        if (n->dead)
            break;
    }
    leave(n);
}

/* The auth request ended with a->res (OT_OK: the token is set). */
static void auth_complete(struct request *a)
{
    struct ag_net *n = a->net;
    uint64_t seq = a->auth_seq;
    struct ag_net_result res = a->res;
    request_free(a);
    release_waiters(n, seq, &res);
}

static void start_auth(struct ag_net *n)
{
    uint64_t seq = ++n->auth_seq;
    struct request *a = request_new(n, REQ_AUTH, "POST", OT_WIRE_BODY_MAX);
    if (!a || ot_buf_append(&a->body, n->auth_body.data, n->auth_body.len) ||
        !(a->path = strdup(AUTH_PATH))) {
        if (a)
            request_free(a);
        struct ag_net_result res = {.err = OT_ERR_NOMEM};
        ot_diag_set(&res.diag, OT_ERR_NOMEM, "out of memory");
        release_waiters(n, seq, &res);
        return;
    }
    a->auth_seq = seq;
    a->server = n->current;
    n->auth = a;
    attempt(a);
}

static void wait_auth(struct request *r)
{
    struct ag_net *n = r->net;
    r->state = RS_WAIT_AUTH;
    if (n->auth) {
        r->auth_seq = n->auth_seq;
        return;
    }
    r->auth_seq = n->auth_seq + 1; /* the one start_auth is about to start */
    start_auth(n);
}

static void auth_reply(struct request *a, long status)
{
    struct ot_wire_auth_resp resp = {0};
    struct ot_diag d = {0};
    if (status != 200 && status != 202) {
        set_http_error(a, status);
    } else if (ot_wire_auth_resp_decode(a->reply.data, a->reply.len, &resp, &d)) {
        ot_diag_set(&a->res.diag, OT_ERR_FORMAT, "server %s: bad auth reply: %s", who(a), d.msg);
    } else if ((status == 200) != (resp.status == OT_WIRE_AUTH_ACCEPTED)) {
        ot_diag_set(&a->res.diag, OT_ERR_FORMAT, "server %s: auth reply status does not match "
                    "HTTP %ld", who(a), status);
    } else if (resp.status == OT_WIRE_AUTH_PENDING) {
        a->res.retry_after = resp.retry_after;
        ot_diag_set(&a->res.diag, OT_ERR_PERM, "server %s: this device is pending: an operator "
                    "has not accepted it yet (ask again in %" PRIu32 " s)", who(a),
                    resp.retry_after);
    } else if (set_token(a->net, &resp)) {
        ot_diag_set(&a->res.diag, OT_ERR_NOMEM, "out of memory");
    }
    explicit_bzero(resp.token, sizeof(resp.token));
    a->res.err = a->res.diag.err;
    a->res.http_status = status;
    complete(a);
}

/* ---- replies --------------------------------------------------------------------------------- */

/* Reads one decimal number (digits only, no overflow). */
static bool parse_num(const char **p, uint64_t *ret)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *ret = v;
    return true;
}

/* "bytes first-last/size" (size may be "*"), RFC 9110 §14.4. */
static bool parse_content_range(const char *v, uint64_t *first, uint64_t *last)
{
    uint64_t size;
    if (!has_prefix_ci(v, "bytes "))
        return false;
    v += 6;
    if (!parse_num(&v, first) || *v++ != '-' || !parse_num(&v, last) || *v++ != '/')
        return false;
    if (v[0] == '*' && !v[1])
        return *first <= *last;
    return parse_num(&v, &size) && !*v && *first <= *last && *last < size;
}

/* Before the first byte of a download reaches the caller: is this the part asked for? */
static bool check_download_start(struct request *r, long status, const char *content_range)
{
    if (status == 206) {
        uint64_t first, last;
        if (!content_range) {
            fail(r, OT_ERR_FORMAT, "HTTP 206 without Content-Range");
            return false;
        }
        if (!parse_content_range(content_range, &first, &last) || first != r->offset) {
            char v[80];
            safe_copy(v, sizeof(v), content_range);
            fail(r, OT_ERR_FORMAT, "Content-Range '%s' does not answer a request from byte "
                 "%" PRIu64, v, r->offset);
            return false;
        }
        return true;
    }
    if (r->offset > 0) { /* 200: the whole file */
        if (r->if_range)
            fail(r, OT_ERR_INVALID, "the file changed (If-Range did not match): download it again "
                 "from the start");
        else
            fail(r, OT_ERR_INVALID, "the range request was answered with the whole file");
        return false;
    }
    return true;
}

static enum ot_err download_data(struct request *r, const uint8_t *p, size_t len)
{
    struct ag_net *n = r->net;
    struct ot_diag d = {0};
    enter(n);
    in_data_cb++;
    enum ot_err err = r->data_fn(r->userdata, r->pos, p, len, &d);
    in_data_cb--;
    bool gone = leave(n);
    if (r->state == RS_ZOMBIE) { /* cancelled by the callback (maybe with the whole net) */
        if (!r->timer) /* no memory for the timer that frees it */
            request_free(r);
        return OT_ERR_INVALID; /* its transfer is cancelled: nobody reads this */
    }
    if (gone)
        return OT_ERR_INVALID;
    if (err) {
        r->failed = true;
        r->res.err = err;
        ot_diag_set(&r->res.diag, err, "%s", d.msg[0] ? d.msg : ot_strerror(err));
        return err;
    }
    r->pos += len;
    return OT_OK;
}

/* The reply's head: a download's status and range are checked before any byte is delivered. */
static enum ot_err on_head(void *userdata, struct ag_http_xfer *x, int status, struct ot_diag *d)
{
    struct request *r = userdata;
    r->status = status;
    if (r->kind == REQ_DOWNLOAD && (status == 200 || status == 206) &&
        !check_download_start(r, status, ag_http_header(x, "Content-Range")))
        return r->res.err;
    return OT_OK;
}

/* The reply's body: download data goes to the caller, everything else to the bounded reply
 * buffer. An error ends the transfer (r->failed says it was ours). */
static enum ot_err on_data(void *userdata, const uint8_t *p, size_t len, struct ot_diag *d)
{
    struct request *r = userdata;
    long status = r->status;
    bool ok = status >= 200 && status < 300;
    if (r->kind == REQ_DOWNLOAD && (status == 200 || status == 206))
        return download_data(r, p, len);
    if (ok && r->kind != REQ_DOWNLOAD) {
        if (ot_buf_append(&r->reply, p, len) == OT_OK)
            return OT_OK;
        fail(r, r->reply.len + len > r->reply.max ? OT_ERR_LIMIT : OT_ERR_NOMEM,
             "the reply is larger than %zu bytes", r->reply.max);
        return r->res.err;
    }
    /* An error reply is read for its message only: its first bytes are kept, the rest dropped. */
    size_t room = r->reply.max - r->reply.len;
    if (room > 0 && ot_buf_append(&r->reply, p, OT_MIN(len, room))) {
        /* no memory: the message falls back to the status text */
    }
    return OT_OK;
}

static void checkin_reply(struct request *r, long status, struct ot_wire_checkin_resp *resp)
{
    struct ot_diag d = {0};
    if (status != 200) {
        set_http_error(r, status);
        return;
    }
    if (ot_wire_checkin_resp_decode(r->reply.data, r->reply.len, resp, &d)) {
        ot_diag_set(&r->res.diag, OT_ERR_FORMAT, "server %s: bad check-in reply: %s", who(r),
                    d.msg);
        r->res.err = OT_ERR_FORMAT;
    }
}

/* An HTTP reply that is neither a 5xx nor a 401 to retry. */
static void handle_reply(struct request *r, long status)
{
    struct ot_wire_checkin_resp resp = {0};
    r->res.http_status = status;
    switch (r->kind) {
    case REQ_AUTH:
        auth_reply(r, status);
        return;
    case REQ_CHECKIN:
        checkin_reply(r, status, &resp);
        break;
    case REQ_REPORT:
    case REQ_INVENTORY:
        if (status < 200 || status >= 300)
            set_http_error(r, status);
        break;
    case REQ_DOWNLOAD:
        if (status != 200 && status != 206)
            set_http_error(r, status);
        break;
    }
    /* Deliver: the request is freed first, the callback called last. */
    struct ag_net *n = r->net;
    struct ag_net_result res = r->res;
    ag_net_checkin_fn cfn = r->checkin_fn;
    ag_net_done_fn dfn = r->done_fn;
    void *ud = r->userdata;
    request_free(r);
    enter(n);
    if (cfn)
        cfn(ud, &res, res.err ? NULL : &resp);
    else
        dfn(ud, &res);
    ot_wire_checkin_resp_release(&resp);
    leave(n);
}

static void on_done(void *userdata, const struct ag_http_result *hr)
{
    struct request *r = userdata;
    r->xfer = NULL;
    struct ag_net *n = r->net;
    r->state = RS_QUEUED; /* no transfer now; whatever comes next sets the state */
    r->res.elapsed_us = hr->elapsed_us;
    long status = hr->status;
    if (hr->err && r->failed) { /* our own: limit, bad range, the caller's data callback */
        r->res.http_status = status;
        complete(r);
        return;
    }
    if (hr->err) {
        char msg[OT_DIAG_MSG_MAX];
        snprintf(msg, sizeof(msg), "server %s: %.*s", who(r), OT_DIAG_MSG_MAX - 100,
                 hr->diag.msg);
        r->res.http_status = 0;
        next_server(r, OT_ERR_IO, msg);
        return;
    }
    if (status >= 500) {
        char text[SERVER_MSG_MAX], msg[OT_DIAG_MSG_MAX];
        server_message(r, status, text, sizeof(text));
        snprintf(msg, sizeof(msg), "server %s: HTTP %ld: %s", who(r), status, text);
        r->res.http_status = status;
        next_server(r, OT_ERR_IO, msg);
        return;
    }
    if (r->path)
        n->current = r->server;
    if (status == 401 && r->send_token && !r->reauthed) {
        r->reauthed = true;
        if (r->token_gen == n->token_gen)
            drop_token(n);
        proceed(r);
        return;
    }
    handle_reply(r, status);
}

/* Delivers r->res: an auth's to its waiters, any other's to the caller. */
static void complete(struct request *r)
{
    if (r->kind == REQ_AUTH) {
        auth_complete(r);
        return;
    }
    struct ag_net *n = r->net;
    struct ag_net_result res = r->res;
    if (!res.err) /* cannot be: complete() is for failures; keep the contract anyway */
        res.err = ot_diag_set(&res.diag, OT_ERR_INTERNAL, "request ended without a result");
    ag_net_checkin_fn cfn = r->checkin_fn;
    ag_net_done_fn dfn = r->done_fn;
    void *ud = r->userdata;
    request_free(r);
    enter(n);
    if (cfn)
        cfn(ud, &res, NULL);
    else
        dfn(ud, &res);
    leave(n);
}

/* Goes on with a request that has no transfer: waits for a token, or makes its next attempt. */
static void proceed(struct request *r)
{
    if (r->send_token && !token_valid(r->net)) {
        if (r->net->auth_header) /* due for renewal */
            drop_token(r->net);
        wait_auth(r);
        return;
    }
    attempt(r);
}

static void on_request_timer(void *userdata)
{
    struct request *r = userdata;
    r->timer = 0;
    switch (r->state) {
    case RS_QUEUED:
        r->server = r->net->current;
        proceed(r);
        break;
    case RS_FAILED:
        complete(r);
        break;
    case RS_ZOMBIE:
        request_free(r);
        break;
    default:
        break;
    }
}

/* ---- the API --------------------------------------------------------------------------------- */

/* A JSON request to a server path, sent with the token. */
static struct request *json_request(struct ag_net *n, enum req_kind kind, const char *method,
                                    const char *path, size_t reply_max)
{
    struct request *r = request_new(n, kind, method, reply_max);
    if (!r)
        return NULL;
    r->send_token = true;
    r->path = strdup(path); /* checked by the caller */
    return r;
}

static void start_or_fail(struct request *r, enum ot_err err, const struct ot_diag *d)
{
    if (err) {
        fail_soon(r, err, d);
        return;
    }
    request_timer(r);
    if (!r->timer) {
        struct ot_diag nd = {0};
        ot_diag_set(&nd, OT_ERR_NOMEM, "out of memory");
        fail_soon(r, OT_ERR_NOMEM, &nd);
    }
}

void ag_net_checkin(struct ag_net *n, const struct ot_wire_checkin_req *req, ag_net_checkin_fn fn,
                    void *userdata)
{
    struct request *r = json_request(n, REQ_CHECKIN, "POST", CHECKIN_PATH,
                                     OT_WIRE_CHECKIN_RESP_MAX);
    if (!r)
        return;
    r->checkin_fn = fn;
    r->userdata = userdata;
    struct ot_diag d = {0};
    enum ot_err err = r->path ? ot_wire_checkin_req_encode(req, &r->body, &d) : OT_ERR_NOMEM;
    if (err)
        ot_diag_prefix(&d, err, "check-in request");
    start_or_fail(r, err, &d);
}

void ag_net_report(struct ag_net *n, int64_t deployment_id, const struct ot_wire_status_report *rep,
                   ag_net_done_fn fn, void *userdata)
{
    char path[96];
    snprintf(path, sizeof(path), "/api/device/v1/deployments/%" PRId64 "/status", deployment_id);
    struct request *r = json_request(n, REQ_REPORT, "POST", path, OT_WIRE_BODY_MAX);
    if (!r)
        return;
    r->done_fn = fn;
    r->userdata = userdata;
    struct ot_diag d = {0};
    enum ot_err err = r->path ? OT_OK : ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err && deployment_id < 1)
        err = ot_diag_set(&d, OT_ERR_INVALID, "status report: bad deployment id %" PRId64,
                          deployment_id);
    if (!err) {
        err = ot_wire_status_report_encode(rep, &r->body, &d);
        if (err)
            ot_diag_prefix(&d, err, "status report");
    }
    start_or_fail(r, err, &d);
}

void ag_net_inventory(struct ag_net *n, const struct ot_wire_inventory *inv, ag_net_done_fn fn,
                      void *userdata)
{
    struct request *r = json_request(n, REQ_INVENTORY, "PATCH", INVENTORY_PATH, OT_WIRE_BODY_MAX);
    if (!r)
        return;
    r->done_fn = fn;
    r->userdata = userdata;
    struct ot_diag d = {0};
    enum ot_err err = r->path ? ot_wire_inventory_encode(inv, &r->body, &d) : OT_ERR_NOMEM;
    if (err)
        ot_diag_prefix(&d, err, "inventory");
    start_or_fail(r, err, &d);
}

/* The origin (scheme://authority) of an absolute URL, or NULL. */
static char *url_origin(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = memchr(p, '@', auth); /* user:password@ stays out of messages */
    const char *host = at ? at + 1 : p;
    char *o = NULL;
    if (asprintf(&o, "%.*s%.*s", (int)(p - url), url, (int)(p + auth - host), host) < 0)
        return NULL;
    return o;
}

/* Sets the download's target: a path on the servers, or an absolute URL that gets the token only
 * when it is on one of the servers (never to a third party: a mirror, a CDN). */
static enum ot_err download_target(struct ag_net *n, struct request *r, const char *url,
                                   struct ot_diag *d)
{
    if (!url || !url[0] || strlen(url) > OT_WIRE_URL_MAX || !ag_http_is_clean(url))
        return ot_diag_set(d, OT_ERR_INVALID, "download: the URL must be 1..%d printable ASCII "
                           "characters without blanks", OT_WIRE_URL_MAX);
    if (url[0] == '/') {
        r->send_token = true;
        r->path = strdup(url);
        return r->path ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    bool https = has_prefix_ci(url, "https://");
    if (!https && !has_prefix_ci(url, "http://"))
        return ot_diag_set(d, OT_ERR_INVALID, "download: the URL must be a path or an http(s) URL");
    r->url = strdup(url);
    r->origin = url_origin(url);
    if (!r->url || !r->origin)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!https && !n->allow_http)
        return ot_diag_set(d, OT_ERR_PERM, "download from %s refused: plain http is not allowed",
                           r->origin);
    for (size_t i = 0; i < n->nservers; i++) {
        size_t len = strlen(n->servers[i]);
        if (strncasecmp(url, n->servers[i], len) == 0 && (url[len] == '/' || !url[len]))
            r->send_token = true;
    }
    return OT_OK;
}

static enum ot_err download_if_range(struct request *r, const char *etag, struct ot_diag *d)
{
    if (!etag || !etag[0])
        return OT_OK;
    if (strlen(etag) > 256 || !ag_http_is_clean(etag))
        return ot_diag_set(d, OT_ERR_INVALID, "download: bad ETag");
    /* The server's ETag is quoted ("<sha256>"); a bare value is quoted here. */
    bool quoted = etag[0] == '"' || strncmp(etag, "W/\"", 3) == 0;
    if (asprintf(&r->if_range, quoted ? "If-Range: %s" : "If-Range: \"%s\"", etag) < 0) {
        r->if_range = NULL;
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

struct ag_download *ag_net_download(struct ag_net *n, const char *url, uint64_t offset,
                                    const char *etag, uint64_t max_rate, ag_net_data_fn data,
                                    ag_net_done_fn done, void *userdata)
{
    struct request *r = request_new(n, REQ_DOWNLOAD, "GET", OT_WIRE_BODY_MAX);
    if (!r)
        return NULL;
    r->data_fn = data;
    r->done_fn = done;
    r->userdata = userdata;
    r->offset = r->pos = offset;
    r->max_rate = max_rate;
    struct ot_diag d = {0};
    enum ot_err err = data ? OT_OK : ot_diag_set(&d, OT_ERR_INVALID, "download: no data callback");
    if (!err)
        err = download_target(n, r, url, &d);
    if (!err)
        err = download_if_range(r, etag, &d);
    if (!err && offset > (uint64_t)INT64_MAX)
        err = ot_diag_set(&d, OT_ERR_RANGE, "download: offset out of range");
    start_or_fail(r, err, &d);
    return err ? NULL : (struct ag_download *)r;
}

void ag_net_download_pause(struct ag_download *dl, bool paused)
{
    struct request *r = &dl->r;
    if (r->paused == paused)
        return;
    r->paused = paused;
    if (r->state == RS_ACTIVE)
        ag_http_pause(r->xfer, paused);
    else if (!paused && r->state == RS_IDLE) {
        r->state = RS_QUEUED;
        request_timer(r);
        if (!r->timer)
            r->state = RS_IDLE; /* no memory: it stays paused */
    }
}

void ag_net_download_cancel(struct ag_download *dl)
{
    if (dl)
        discard(&dl->r);
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static enum ot_err check_server(const char *url, bool allow_http, struct ot_diag *d)
{
    if (!url || !url[0] || strlen(url) > SERVER_URL_MAX || !ag_http_is_clean(url))
        return ot_diag_set(d, OT_ERR_CONFIG, "server URL must be 1..%d printable ASCII characters "
                           "without blanks", SERVER_URL_MAX);
    const char *host = has_prefix_ci(url, "https://") ? url + 8
                       : has_prefix_ci(url, "http://") ? url + 7 : NULL;
    if (!host)
        return ot_diag_set(d, OT_ERR_CONFIG, "server URL '%.200s' must start with https://", url);
    if (!host[0] || host[0] == '/' || strpbrk(url, "?#"))
        return ot_diag_set(d, OT_ERR_CONFIG, "server URL '%.200s' must be "
                           "scheme://host[:port][/path], without a query", url);
    if (host == url + 7 && !allow_http)
        return ot_diag_set(d, OT_ERR_CONFIG, "server URL '%.200s': plain http is refused (tokens "
                           "and updates would travel unprotected) unless allow_http is set", url);
    return OT_OK;
}

static enum ot_err check_config(const struct ag_net_config *c, struct ot_diag *d)
{
    if (!c->servers || c->nservers == 0 || c->nservers > SERVERS_MAX)
        return ot_diag_set(d, OT_ERR_CONFIG, "1..%d server URLs are needed", SERVERS_MAX);
    for (size_t i = 0; i < c->nservers; i++) {
        enum ot_err err = check_server(c->servers[i], c->allow_http, d);
        if (err)
            return err;
    }
    if (!c->client_cert != !c->client_key)
        return ot_diag_set(d, OT_ERR_CONFIG, "a client certificate needs its key, and the other "
                           "way round");
    if (!c->identity_key || c->identity_key->type != OT_KEY_SIGN_SECRET)
        return ot_diag_set(d, OT_ERR_CONFIG, "the identity key must be an Ed25519 secret key");
    struct {
        const char *name, *value;
    } proxies[] = {{"https_proxy", c->https_proxy}, {"http_proxy", c->http_proxy}};
    for (size_t i = 0; i < OT_ARRAY_SIZE(proxies); i++) {
        struct ot_diag why = {0};
        if (proxies[i].value && ag_http_proxy_check(proxies[i].value, &why) != OT_OK)
            return ot_diag_set(d, OT_ERR_CONFIG, "%s: %s", proxies[i].name, why.msg);
    }
    if (c->user_agent && (!c->user_agent[0] || strlen(c->user_agent) > 256 ||
                          !ot_utf8_printable(c->user_agent, strlen(c->user_agent), NULL)))
        return ot_diag_set(d, OT_ERR_CONFIG, "bad user agent");
    return OT_OK;
}

/* Encodes and signs the auth request once: the same bytes serve every authentication. */
static enum ot_err make_auth(struct ag_net *n, const struct ag_net_config *c, struct ot_diag *d)
{
    struct ot_wire_auth_req a = {.identity = (struct ot_wire_kv *)c->identity,
                                 .nidentity = c->nidentity};
    memcpy(a.public_key, c->identity_key->pk, OT_SIGN_PK_LEN);
    const char *type = c->device_type ? c->device_type : "";
    const char *token = c->enrollment_token ? c->enrollment_token : "";
    if (strlen(type) >= sizeof(a.device_type))
        return ot_diag_set(d, OT_ERR_CONFIG, "device type too long");
    if (strlen(token) >= sizeof(a.enrollment_token))
        return ot_diag_set(d, OT_ERR_CONFIG, "enrollment token too long");
    memcpy(a.device_type, type, strlen(type) + 1);
    memcpy(a.enrollment_token, token, strlen(token) + 1);
    enum ot_err err = ot_wire_auth_req_encode(&a, &n->auth_body, d);
    explicit_bzero(a.enrollment_token, sizeof(a.enrollment_token));
    if (err)
        return ot_diag_prefix(d, OT_ERR_CONFIG, "auth request");
    uint8_t sig[OT_SIGNATURE_LEN];
    err = ot_sign(c->identity_key, OT_WIRE_AUTH_CONTEXT, n->auth_body.data, n->auth_body.len, sig);
    if (err)
        return ot_diag_set(d, err, "cannot sign the auth request");
    char b64[128];
    ot_base64_encode(sig, sizeof(sig), b64);
    if (asprintf(&n->sig_header, "%s: %s", OT_WIRE_SIGNATURE_HEADER, b64) < 0) {
        n->sig_header = NULL;
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

static enum ot_err copy_config(struct ag_net *n, const struct ag_net_config *c, struct ot_diag *d)
{
    bool ok = true;
    n->servers = calloc(c->nservers, sizeof(*n->servers));
    if (!n->servers)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->nservers; i++, n->nservers++) {
        char *s = n->servers[i] = ot_strdup_opt(c->servers[i], &ok);
        for (size_t l = s ? strlen(s) : 0; l > 0 && s[l - 1] == '/'; l--)
            s[l - 1] = '\0';
    }
    n->ca_file = ot_strdup_opt(c->ca_file, &ok);
    n->pinned_key = ot_strdup_opt(c->pinned_key, &ok);
    n->client_cert = ot_strdup_opt(c->client_cert, &ok);
    n->client_key = ot_strdup_opt(c->client_key, &ok);
    n->user_agent =
        ot_strdup_opt(c->user_agent ? c->user_agent : "otter-agent/" OTTER_VERSION, &ok);
    n->https_proxy = ot_strdup_opt(c->https_proxy, &ok);
    n->http_proxy = ot_strdup_opt(c->http_proxy, &ok);
    n->no_proxy = ot_strdup_opt(c->no_proxy, &ok);
    n->tls = (struct ag_http_tls){.ca_file = n->ca_file, .pinned_key = n->pinned_key,
                                  .client_cert = n->client_cert, .client_key = n->client_key};
    n->allow_http = c->allow_http;
    n->connect_timeout_s = c->connect_timeout_s ? (long)c->connect_timeout_s : 10;
    n->request_timeout_s = c->request_timeout_s ? (long)c->request_timeout_s : 60;
    n->stall_timeout_s = c->stall_timeout_s ? (long)c->stall_timeout_s : 60;
    return ok ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

enum ot_err ag_net_new(struct ag_loop *loop, const struct ag_net_config *cfg, struct ag_net **ret,
                       struct ot_diag *d)
{
    enum ot_err err = check_config(cfg, d);
    if (err)
        return err;
    struct ag_net *n = calloc(1, sizeof(*n));
    if (!n)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    n->loop = loop;
    ot_buf_init(&n->auth_body, OT_WIRE_BODY_MAX);
    err = copy_config(n, cfg, d);
    if (!err)
        err = make_auth(n, cfg, d);
    if (!err && cfg->http) {
        n->http = cfg->http;
    } else if (!err) {
        err = ag_http_new(loop, &n->http, d);
        n->own_http = !err;
        if (!err) /* between check-ins the agent keeps no connection (http.h) */
            ag_http_keep_idle(n->http, KEEP_IDLE_S);
    }
    if (err) {
        ag_net_free(n);
        return err;
    }
    *ret = n;
    return OT_OK;
}

void ag_net_set_offline(struct ag_net *n, bool offline) { n->offline = offline; }

void ag_net_free(struct ag_net *n)
{
    if (!n || n->dead)
        return;
    n->dead = true;
    while (n->requests)
        discard(n->requests);
    if (n->own_http)
        ag_http_free(n->http);
    for (size_t i = 0; i < n->nservers; i++)
        free(n->servers[i]);
    free(n->servers);
    free(n->ca_file);
    free(n->pinned_key);
    free(n->client_cert);
    free(n->client_key);
    free(n->user_agent);
    free_secret(n->https_proxy); /* they may hold a password */
    free_secret(n->http_proxy);
    free(n->no_proxy);
    if (n->auth_body.data)
        explicit_bzero(n->auth_body.data, n->auth_body.len);
    ot_buf_release(&n->auth_body);
    free(n->sig_header);
    free_secret(n->auth_header);
    n->auth_header = NULL;
    if (n->busy == 0)
        free(n);
}
