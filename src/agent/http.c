/* The agent's HTTP/1.1 client (http.h).
 *
 * A transfer (struct ag_http_xfer) lives in the client's list from ag_http_start until its done
 * callback or its cancel. Its life: QUEUED (waiting for a place under ag_http_limit) → a 0 ms
 * "kick" timer (no callback ever runs inside the caller's call) → it takes an idle connection of
 * the same origin and TLS material, or opens one (resolve, non-blocking connect to each address
 * in turn, TLS handshake) → SEND (request head and body) → RECV (status line and headers, then
 * the body as framed) → done: the connection goes back to the idle pool when the reply was
 * complete and both sides allow it, else it is closed.
 *
 * A connection belongs to one transfer while it is busy; an idle one is watched for the server
 * closing it (then it is closed at once) and closed after AG_HTTP_IDLE_S. Its read buffer exists
 * only while it is busy, and TLS runs with SSL_MODE_RELEASE_BUFFERS, so an idle agent keeps a
 * socket and a few hundred bytes per kept connection.
 *
 * Callbacks: the client counts the callbacks running (busy). A callback may cancel its own
 * transfer (it is marked and destroyed when the callback returns) or free the client (marked
 * dead: everything else is destroyed at once, the struct itself when the last callback
 * returns). The code that called a callback checks both before it touches anything again.
 *
 * Timers, all per transfer: the kick (start, or go on with bytes already buffered after a pause
 * or a throttle), connect (TCP and TLS), total, stall (re-armed from the time of the last byte,
 * so that a busy transfer does not touch the timer heap for every read), and throttle (the rate
 * cap's wait). */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <inttypes.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "otter/buf.h"
#include "otter/encoding.h"
#include "otter/log.h"

#include "http.h"

#define IN_SIZE (16 * 1024)         /* read buffer of a busy connection */
#define HOST_MAX 255
#define CHUNK_LINE_MAX 1024         /* a chunk-size line with its extensions */
#define ROUND_MAX (256 * 1024)      /* bytes taken in one go before other events get a turn */
#define IDLE_MAX_DEFAULT 8
#define PIN_FILE_MAX (64 * 1024)
#define PROXY_PORT_DEFAULT "1080"   /* curl's */
#define PROXY_CRED_MAX 255          /* bytes of a proxy's user name, and of its password */

enum conn_state { C_CONNECTING, C_TUNNEL, C_HANDSHAKE, C_SEND, C_RECV, C_IDLE };

struct tls_ctx {
    struct tls_ctx *next;
    char *ca_file, *client_cert, *client_key; /* the material it was made with (NULL: none) */
    OSSL_LIB_CTX *lib;             /* OpenSSL's algorithm caches for TLS: freed with the context */
    SSL_CTX *ctx;
};

struct conn {
    struct conn *prev, *next;      /* in the idle pool */
    struct ag_http *h;
    struct ag_http_xfer *x;        /* the transfer it serves, NULL when idle */
    int fd;
    SSL *ssl;
    char *key;                     /* what it may be reused for: origin, TLS material, pin */
    enum conn_state state;
    uint32_t events;               /* what the loop watches */
    struct addrinfo *ai_list, *ai; /* connecting: the addresses, the one being tried */
    uint64_t idle_timer;
    bool reused;                   /* it served a transfer before this one */
    bool watched;
};

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };
enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };
enum xfer_state { X_QUEUED, X_STARTING, X_ACTIVE };

struct ag_http_xfer {
    struct ag_http_xfer *prev, *next;   /* in h->xfers */
    struct ag_http_xfer *qprev, *qnext; /* in h's queue while QUEUED (and in_queue) */
    bool in_queue;
    struct ag_http *h;
    enum xfer_state state;
    struct conn *c;
    /* the request */
    bool tls;
    char host[HOST_MAX + 1];
    char port[8];
    char *key;                          /* connection key */
    struct tls_ctx *tctx;               /* https: the context of its TLS material */
    char *pin;
    /* through a proxy (ag_http_request.proxy): connections go to it; https through a tunnel */
    char *proxy_host;                   /* NULL: straight to the server */
    char proxy_port[8];
    char *proxy_auth;                   /* "Proxy-Authorization: Basic ...", or NULL */
    char *tunnel;                       /* the CONNECT request, while the tunnel is being made */
    size_t tunnel_len, tunnel_off;
    uint8_t *out;                       /* head and body */
    size_t out_len, out_off;
    bool head_only;                     /* HEAD: no reply body */
    unsigned connect_timeout_s, timeout_s, stall_timeout_s;
    uint64_t max_rate;
    ag_http_head_fn head_fn;
    ag_http_data_fn data_fn;
    ag_http_done_fn done_fn;
    void *userdata;
    /* timers */
    uint64_t kick_timer, connect_timer, total_timer, stall_timer, throttle_timer;
    uint64_t start_us, last_rx_ms, rate_start_ms, rate_bytes;
    /* the reply */
    uint8_t *in;                        /* IN_SIZE bytes, while active */
    size_t in_off, in_len;
    char *head;                         /* the head being read (NUL-terminated) */
    size_t head_len, head_cap;
    bool in_head;                       /* reading the head (else the body) */
    int status;
    int minor;                          /* HTTP/1.minor */
    bool keep_alive;
    enum body_kind body;
    uint64_t remaining;                 /* BODY_LENGTH and CH_DATA: bytes still to come */
    enum chunk_state chunk;
    char line[CHUNK_LINE_MAX + 1];      /* a chunk-size line or a trailer line being read */
    size_t line_len;
    size_t trailer_bytes;
    uint64_t rx_total;                  /* bytes of reply received (head included) */
    bool retried;                       /* sent again after a reused connection died */
    bool paused, throttled;
    bool in_cb, cancelled;
};

struct ag_http {
    struct ag_loop *loop;
    unsigned idle_s;                    /* ag_http_keep_idle */
    struct ag_http_xfer *xfers;
    struct ag_http_xfer *qhead, *qtail;
    size_t max_active, nactive;
    struct conn *idle;                  /* most recently used first */
    size_t nidle;
    struct tls_ctx *tls;
    int busy;
    bool dead;
};

static void process(struct ag_http_xfer *x);
static void connect_next(struct ag_http_xfer *x);
static void open_connection(struct ag_http_xfer *x);

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool streq_null(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* OpenSSL's queued error, as text (or `fallback`). Clears the queue. */
static void ssl_error_text(char *out, size_t len, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(out, len, "%s", fallback);
        return;
    }
    const char *reason = ERR_reason_error_string(e);
    snprintf(out, len, "%s", reason ? reason : fallback);
    ERR_clear_error();
}

/* What a connection goes to, for messages: "proxy ", host, port (three printf arguments). */
#define PEER(x)                                                                                    \
    (x)->proxy_host ? "proxy " : "", (x)->proxy_host ? (x)->proxy_host : (x)->host,                \
        (x)->proxy_host ? (x)->proxy_port : (x)->port

static void cancel_timer(struct ag_http *h, uint64_t *t)
{
    if (*t) {
        ag_loop_timer_cancel(h->loop, *t);
        *t = 0;
    }
}

/* ---- connections ----------------------------------------------------------------------------- */

static void on_conn(void *userdata, int fd, uint32_t events);

/* Watches the connection for events; 0 takes it off the loop altogether (a paused transfer:
 * epoll would still report a hang-up, over and over). */
static void conn_watch(struct conn *c, uint32_t events)
{
    struct ag_loop *l = c->h->loop;
    if (c->watched && c->events == events)
        return;
    c->events = events;
    if (!events) {
        if (c->watched)
            ag_loop_fd_remove(l, c->fd);
        c->watched = false;
        return;
    }
    if (c->watched) {
        if (ag_loop_fd_modify(l, c->fd, events) != OT_OK)
            ot_debug("http: cannot change the events of fd %d", c->fd);
        return;
    }
    struct ot_diag d = {0};
    if (ag_loop_fd(l, c->fd, events, on_conn, c, &d) == OT_OK)
        c->watched = true;
    else /* the transfer's stall timer ends it */
        ot_log(OT_LOG_WARNING, "http: %s", d.msg);
}

static void idle_unlink(struct conn *c)
{
    struct ag_http *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else if (h->idle == c)
        h->idle = c->next;
    else
        return; /* not in the pool */
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    h->nidle--;
}

static void conn_close(struct conn *c)
{
    if (!c)
        return;
    idle_unlink(c);
    cancel_timer(c->h, &c->idle_timer);
    if (c->fd >= 0) {
        if (c->watched)
            ag_loop_fd_remove(c->h->loop, c->fd);
        close(c->fd);
    }
    if (c->ssl)
        SSL_free(c->ssl); /* no close_notify: the socket is closed already, nobody waits for it */
    if (c->ai_list)
        freeaddrinfo(c->ai_list);
    free(c->key);
    free(c);
}

static void tls_ctx_free(struct tls_ctx *t);

/* Nothing to do and nothing kept: the TLS contexts go too (each with its OpenSSL library context;
 * made again at the next https request), and malloc_trim gives the heap's free pages back. Between
 * check-ins the agent then idles without TLS state, for one handshake per check-in: measured
 * 20 s after the start with a one-certificate CA file, 1,056 KiB of private memory instead of
 * 1,220 KiB without the trim and 1,168 KiB while the context was kept (bench/RESULTS.md). */
static void quiesce(struct ag_http *h)
{
    if (h->xfers || h->idle || h->dead)
        return;
    bool freed = h->tls != NULL;
    while (h->tls) {
        struct tls_ctx *t = h->tls;
        h->tls = t->next;
        tls_ctx_free(t);
    }
#ifdef __GLIBC__
    if (freed || h->idle_s < AG_HTTP_IDLE_S)
        malloc_trim(0);
#endif
}

static void on_idle_timer(void *userdata)
{
    struct conn *c = userdata;
    struct ag_http *h = c->h;
    c->idle_timer = 0;
    conn_close(c);
    quiesce(h);
}

/* Keeps a connection whose reply was complete; the oldest idle one goes when the pool is full. */
static void conn_park(struct ag_http *h, struct conn *c)
{
    size_t max = h->idle_s == 0 ? 0 : h->max_active ? h->max_active : IDLE_MAX_DEFAULT;
    c->x = NULL;
    c->state = C_IDLE;
    c->reused = true;
    if (h->dead || max == 0) {
        conn_close(c);
        return;
    }
    while (h->nidle >= max) {
        struct conn *last = h->idle;
        while (last->next)
            last = last->next;
        conn_close(last);
    }
    c->idle_timer = ag_loop_timer(h->loop, (uint64_t)h->idle_s * 1000u, on_idle_timer, c);
    if (!c->idle_timer) {
        conn_close(c);
        return;
    }
    conn_watch(c, EPOLLIN | EPOLLRDHUP);
    c->prev = NULL;
    c->next = h->idle;
    if (h->idle)
        h->idle->prev = c;
    h->idle = c;
    h->nidle++;
}

/* An idle connection that still looks open: nothing to read, no hang-up. */
static bool conn_alive(const struct conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) == 0;
}

static struct conn *conn_take_idle(struct ag_http *h, const char *key)
{
    for (struct conn *c = h->idle; c;) {
        struct conn *next = c->next;
        if (strcmp(c->key, key) == 0) {
            idle_unlink(c);
            cancel_timer(h, &c->idle_timer);
            if (conn_alive(c))
                return c;
            conn_close(c);
        }
        c = next;
    }
    return NULL;
}

/* ---- TLS contexts ---------------------------------------------------------------------------- */

static void tls_ctx_free(struct tls_ctx *t)
{
    SSL_CTX_free(t->ctx);
    OSSL_LIB_CTX_free(t->lib);
    free(t->ca_file);
    free(t->client_cert);
    free(t->client_key);
    free(t);
}

/* A directory of CA certificates named by their subject hash ("5ad8a5d6.0", made by
 * update-ca-certificates or `openssl rehash`)? */
static bool hashed_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        const char *n = e->d_name;
        size_t hex = strspn(n, "0123456789abcdef");
        found = hex == 8 && n[8] == '.' && n[9] >= '0' && n[9] <= '9';
    }
    closedir(d);
    return found;
}

/* The system's CA certificates. Where they are also in a hashed directory (Debian, Yocto and
 * Buildroot's ca-certificates make one), only that is used: OpenSSL then loads just the
 * certificates a chain needs, instead of parsing the whole bundle into memory (about 0.8 MiB
 * that stays). SSL_CERT_FILE, or no hashed directory: OpenSSL's default paths. */
static int load_system_cas(SSL_CTX *ctx)
{
    const char *dir = getenv(X509_get_default_cert_dir_env());
    if (!dir)
        dir = X509_get_default_cert_dir();
    if (!getenv(X509_get_default_cert_file_env()) && !strchr(dir, ':') && hashed_dir(dir))
        return SSL_CTX_load_verify_dir(ctx, dir);
    return SSL_CTX_set_default_verify_paths(ctx);
}

/* The context for this material, made on first use and kept for the client's life. */
static enum ot_err tls_ctx_get(struct ag_http *h, const struct ag_http_tls *m, struct tls_ctx **ret,
                               struct ot_diag *d)
{
    static const struct ag_http_tls none = {0};
    if (!m)
        m = &none;
    for (struct tls_ctx *t = h->tls; t; t = t->next)
        if (streq_null(t->ca_file, m->ca_file) && streq_null(t->client_cert, m->client_cert) &&
            streq_null(t->client_key, m->client_key)) {
            *ret = t;
            return OT_OK;
        }
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    bool ok = true;
    t->ca_file = ot_strdup_opt(m->ca_file, &ok);
    t->client_cert = ot_strdup_opt(m->client_cert, &ok);
    t->client_key = ot_strdup_opt(m->client_key, &ok);
    char why[256];
    ERR_clear_error();
    /* A library context of its own: a TLS context makes OpenSSL fetch and cache every cipher,
     * digest, signature algorithm and group it might negotiate (about 250 KiB), in the library
     * context, for the life of the process. In one of our own they go when quiesce() frees it. */
    t->lib = ok ? OSSL_LIB_CTX_new() : NULL;
    t->ctx = t->lib ? SSL_CTX_new_ex(t->lib, NULL, TLS_client_method()) : NULL;
    if (!t->ctx) {
        tls_ctx_free(t);
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot create a TLS context");
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One server, few connections: no session cache to keep in memory. */
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    enum ot_err err = OT_OK;
    if (t->ca_file ? SSL_CTX_load_verify_locations(t->ctx, t->ca_file, NULL) != 1
                   : load_system_cas(t->ctx) != 1) {
        ssl_error_text(why, sizeof(why), "unreadable");
        err = ot_diag_set(d, OT_ERR_IO, "cannot load the CA certificates %s: %s",
                          t->ca_file ? t->ca_file : "(the system's)", why);
    } else if (t->client_cert &&
               (SSL_CTX_use_certificate_chain_file(t->ctx, t->client_cert) != 1 ||
                SSL_CTX_use_PrivateKey_file(t->ctx, t->client_key, SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(t->ctx) != 1)) {
        ssl_error_text(why, sizeof(why), "unreadable");
        err = ot_diag_set(d, OT_ERR_IO, "cannot use the client certificate %s with key %s: %s",
                          t->client_cert, t->client_key, why);
    }
    if (err) {
        tls_ctx_free(t);
        return err;
    }
    t->next = h->tls;
    h->tls = t;
    *ret = t;
    return OT_OK;
}

/* The DER SubjectPublicKeyInfo of a pin file (PEM or DER), curl's file form of a pin. */
static bool pin_file_der(const char *path, uint8_t **der, int *der_len)
{
    BIO *b = BIO_new_file(path, "rb");
    if (!b)
        return false;
    EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    if (!k) {
        (void)BIO_reset(b);
        k = d2i_PUBKEY_bio(b, NULL);
    }
    BIO_free(b);
    if (!k)
        return false;
    *der = NULL;
    *der_len = i2d_PUBKEY(k, der);
    EVP_PKEY_free(k);
    return *der_len > 0;
}

/* Does the server's public key match the pin? */
static bool pin_matches(const char *pin, X509 *cert, char *why, size_t len)
{
    uint8_t *der = NULL;
    int der_len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
    if (der_len <= 0) {
        snprintf(why, len, "cannot read the server's public key");
        return false;
    }
    bool match = false;
    if (strncmp(pin, "sha256//", 8) == 0) {
        uint8_t digest[32];
        unsigned dlen = 0;
        if (EVP_Digest(der, (size_t)der_len, digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
            dlen = 0;
        for (const char *p = pin; dlen && p && *p;) {
            const char *end = strchr(p, ';');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            char b64[64];
            uint8_t want[32];
            if (n > 8 && n - 8 < sizeof(b64) && strncmp(p, "sha256//", 8) == 0) {
                memcpy(b64, p + 8, n - 8);
                b64[n - 8] = '\0';
                if (ot_base64_decode_exact(b64, want, sizeof(want)) == OT_OK &&
                    memcmp(want, digest, 32) == 0)
                    match = true;
            }
            p = end ? end + 1 : NULL;
        }
    } else {
        uint8_t *want = NULL;
        int want_len = 0;
        if (!pin_file_der(pin, &want, &want_len)) {
            snprintf(why, len, "cannot read the pinned public key %.100s", pin);
            OPENSSL_free(der);
            return false;
        }
        match = want_len == der_len && memcmp(want, der, (size_t)der_len) == 0;
        OPENSSL_free(want);
    }
    OPENSSL_free(der);
    if (!match)
        snprintf(why, len, "the server's public key does not match the pinned key");
    return match;
}

/* ---- transfers: life and end ------------------------------------------------------------------ */

/* Takes x out of everything and frees it; its connection is closed. */
static void xfer_destroy(struct ag_http_xfer *x)
{
    struct ag_http *h = x->h;
    cancel_timer(h, &x->kick_timer);
    cancel_timer(h, &x->connect_timer);
    cancel_timer(h, &x->total_timer);
    cancel_timer(h, &x->stall_timer);
    cancel_timer(h, &x->throttle_timer);
    conn_close(x->c);
    x->c = NULL;
    if (x->in_queue) {
        if (x->qprev)
            x->qprev->qnext = x->qnext;
        else
            h->qhead = x->qnext;
        if (x->qnext)
            x->qnext->qprev = x->qprev;
        else
            h->qtail = x->qprev;
    } else if (x->state != X_QUEUED && h->nactive > 0) {
        h->nactive--;
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        h->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (x->out)
        explicit_bzero(x->out, x->out_len); /* it holds the token */
    free(x->out);
    free(x->in);
    free(x->head);
    free(x->key);
    free(x->pin);
    free(x->proxy_host);
    if (x->proxy_auth)
        explicit_bzero(x->proxy_auth, strlen(x->proxy_auth));
    free(x->proxy_auth);
    if (x->tunnel)
        explicit_bzero(x->tunnel, x->tunnel_len);
    free(x->tunnel);
    free(x);
}

static void on_kick(void *userdata);

/* Gives waiting transfers the places that are free. They start from the loop. */
static void promote(struct ag_http *h)
{
    while (!h->dead && h->qhead && (h->max_active == 0 || h->nactive < h->max_active)) {
        struct ag_http_xfer *x = h->qhead;
        h->qhead = x->qnext;
        if (h->qhead)
            h->qhead->qprev = NULL;
        else
            h->qtail = NULL;
        x->qnext = NULL;
        x->in_queue = false;
        x->state = X_STARTING;
        h->nactive++;
        x->kick_timer = ag_loop_timer(h->loop, 0, on_kick, x);
        if (!x->kick_timer)
            ot_log(OT_LOG_ERR, "http: out of memory for a timer: a transfer waits for its timeout");
    }
}

static void client_free_final(struct ag_http *h)
{
    while (h->idle)
        conn_close(h->idle);
    while (h->tls) {
        struct tls_ctx *t = h->tls;
        h->tls = t->next;
        tls_ctx_free(t);
    }
    free(h);
}

/* After a callback: false when x must not be touched any more (cancelled, or the client freed;
 * both handled here). */
static bool after_callback(struct ag_http_xfer *x)
{
    struct ag_http *h = x->h;
    x->in_cb = false;
    h->busy--;
    if (h->dead) {
        xfer_destroy(x);
        if (h->busy == 0)
            client_free_final(h);
        return false;
    }
    if (x->cancelled) {
        xfer_destroy(x);
        promote(h);
        return false;
    }
    return true;
}

/* Ends x: its connection is kept (reply complete and reusable) or closed, x is freed, done runs
 * last. */
static void finish(struct ag_http_xfer *x, enum ot_err err, const struct ot_diag *d)
{
    struct ag_http *h = x->h;
    struct ag_http_result r = {.err = err, .status = x->status,
                               .elapsed_us = now_us() - x->start_us};
    if (err)
        ot_diag_set(&r.diag, err, "%s", d && d->msg[0] ? d->msg : ot_strerror(err));
    ag_http_done_fn fn = x->done_fn;
    void *ud = x->userdata;
    if (x->in && x->in_off < x->in_len)
        x->keep_alive = false; /* more than the reply came: do not trust the connection */
    if (!err && x->c && x->keep_alive) {
        struct conn *c = x->c;
        x->c = NULL;
        conn_park(h, c);
    }
    xfer_destroy(x);
    promote(h);
    h->busy++;
    fn(ud, &r);
    h->busy--;
    if (h->dead && h->busy == 0)
        client_free_final(h);
    else if (!h->dead && !h->busy && h->idle_s == 0)
        quiesce(h);
}

static void fail(struct ag_http_xfer *x, const char *fmt, ...) OT_PRINTF(2, 3);
static void fail(struct ag_http_xfer *x, const char *fmt, ...)
{
    struct ot_diag d = {0};
    char msg[OT_DIAG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ot_diag_set(&d, OT_ERR_IO, "%s", msg);
    finish(x, OT_ERR_IO, &d);
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void on_total_timer(void *userdata)
{
    struct ag_http_xfer *x = userdata;
    x->total_timer = 0;
    fail(x, "timed out after %u s", x->timeout_s);
}

static void on_connect_timer(void *userdata)
{
    struct ag_http_xfer *x = userdata;
    x->connect_timer = 0;
    struct conn *c = x->c;
    if (c && c->state == C_TUNNEL)
        fail(x, "proxy %s port %s did not open a tunnel to %s port %s within %u s",
             x->proxy_host, x->proxy_port, x->host, x->port, x->connect_timeout_s);
    else if (c && c->state == C_HANDSHAKE)
        fail(x, "no TLS handshake with %s port %s within %u s", x->host, x->port,
             x->connect_timeout_s);
    else
        fail(x, "could not connect to %s%s port %s within %u s", PEER(x), x->connect_timeout_s);
}

static void arm_stall(struct ag_http_xfer *x, uint64_t ms);

static void on_stall_timer(void *userdata)
{
    struct ag_http_xfer *x = userdata;
    x->stall_timer = 0;
    uint64_t now = ag_loop_now_ms(), limit = (uint64_t)x->stall_timeout_s * 1000u;
    if (x->paused || x->throttled || now - x->last_rx_ms < limit) {
        arm_stall(x, x->paused || x->throttled ? limit : limit - (now - x->last_rx_ms));
        return;
    }
    fail(x, "nothing received for %u s", x->stall_timeout_s);
}

static void arm_stall(struct ag_http_xfer *x, uint64_t ms)
{
    cancel_timer(x->h, &x->stall_timer);
    x->stall_timer = ag_loop_timer(x->h->loop, ms, on_stall_timer, x);
}

static void kick(struct ag_http_xfer *x)
{
    if (!x->kick_timer)
        x->kick_timer = ag_loop_timer(x->h->loop, 0, on_kick, x);
}

static void on_throttle_timer(void *userdata)
{
    struct ag_http_xfer *x = userdata;
    x->throttle_timer = 0;
    x->throttled = false;
    x->last_rx_ms = ag_loop_now_ms();
    process(x);
}

/* ---- the request ----------------------------------------------------------------------------- */

bool ag_http_is_clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Splits an authority's host[:port] (p, len bytes; no user info) into host and port. */
static enum ot_err parse_host_port(const char *p, size_t len, char host_out[HOST_MAX + 1],
                                   char port_out[8], const char *default_port, const char *what,
                                   struct ot_diag *d)
{
    const char *host = p, *host_end, *port = NULL;
    if (len && *p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', len - 1);
        if (!host_end)
            return ot_diag_set(d, OT_ERR_INVALID, "bad IPv6 address in the %s", what);
        if (host_end + 1 < p + len) {
            if (host_end[1] != ':')
                return ot_diag_set(d, OT_ERR_INVALID, "bad authority in the %s", what);
            port = host_end + 2;
        }
    } else {
        host_end = memchr(p, ':', len);
        if (host_end)
            port = host_end + 1;
        else
            host_end = p + len;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen > HOST_MAX)
        return ot_diag_set(d, OT_ERR_INVALID, "bad host in the %s", what);
    memcpy(host_out, host, hlen);
    host_out[hlen] = '\0';
    if (!port) {
        snprintf(port_out, 8, "%s", default_port);
        return OT_OK;
    }
    size_t plen = (size_t)(p + len - port);
    unsigned long v = 0;
    if (plen == 0 || plen > 5)
        return ot_diag_set(d, OT_ERR_INVALID, "bad port in the %s", what);
    for (size_t i = 0; i < plen; i++) {
        if (port[i] < '0' || port[i] > '9')
            return ot_diag_set(d, OT_ERR_INVALID, "bad port in the %s", what);
        v = v * 10 + (unsigned long)(port[i] - '0');
    }
    if (v == 0 || v > 65535)
        return ot_diag_set(d, OT_ERR_INVALID, "bad port in the %s", what);
    snprintf(port_out, 8, "%lu", v);
    return OT_OK;
}

/* Splits an absolute http(s) URL into its scheme, host and port; *path points into url (at its
 * path, its query, or its end: build_request sends "/" for an empty one). */
static enum ot_err parse_url(const char *url, bool *tls, char host[HOST_MAX + 1], char port[8],
                             const char **path, struct ot_diag *d)
{
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        *tls = true;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        *tls = false;
        p = url + 7;
    } else {
        return ot_diag_set(d, OT_ERR_INVALID, "only http:// and https:// URLs are supported");
    }
    size_t auth = strcspn(p, "/?#");
    if (memchr(p, '@', auth))
        return ot_diag_set(d, OT_ERR_INVALID, "user names in URLs are not supported");
    enum ot_err err = parse_host_port(p, auth, host, port, *tls ? "443" : "80", "URL", d);
    if (err)
        return err;
    *path = p + auth;
    if (**path == '#')
        *path = "";
    return OT_OK;
}

/* ---- proxies -------------------------------------------------------------------------------- */

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes p (len bytes) into out (PROXY_CRED_MAX + 1); false on a bad escape, a control
 * character or too long a result. */
static bool unescape_cred(const char *p, size_t len, char *out, size_t *out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)p[i];
        if (c == '%') {
            int hi = len - i >= 3 ? hex_value(p[i + 1]) : -1;
            int lo = len - i >= 3 ? hex_value(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n >= PROXY_CRED_MAX)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    *out_len = n;
    return true;
}

/* "[http://][user[:password]@]host[:port][/]": the proxy's host and port, and the header that
 * carries its credentials (NULL without any). */
static enum ot_err parse_proxy(const char *proxy, char host[HOST_MAX + 1], char port[8],
                               char **auth, struct ot_diag *d)
{
    *auth = NULL;
    const char *p = proxy;
    if (strncasecmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://"))
        return ot_diag_set(d, OT_ERR_INVALID, "proxy '%.100s': only http:// proxies are "
                           "supported", proxy);
    if (!ag_http_is_clean(proxy))
        return ot_diag_set(d, OT_ERR_INVALID, "proxy: printable ASCII without blanks expected");
    size_t len = strcspn(p, "/?#");
    if (p[len] && strcmp(p + len, "/") != 0)
        return ot_diag_set(d, OT_ERR_INVALID, "proxy '%.100s': expected "
                           "http://[user:password@]host[:port], without a path", proxy);
    const char *at = NULL;
    for (const char *q = p; q < p + len; q++)
        if (*q == '@')
            at = q;
    const char *hp = at ? at + 1 : p;
    enum ot_err err = parse_host_port(hp, (size_t)(p + len - hp), host, port, PROXY_PORT_DEFAULT,
                                      "proxy", d);
    if (err || !at)
        return err;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    size_t ulen = colon ? (size_t)(colon - p) : (size_t)(at - p);
    char user[PROXY_CRED_MAX + 1], pass[PROXY_CRED_MAX + 1], both[2 * PROXY_CRED_MAX + 2];
    size_t un = 0, pn = 0;
    pass[0] = '\0';
    if (!unescape_cred(p, ulen, user, &un) ||
        (colon && !unescape_cred(colon + 1, (size_t)(at - colon - 1), pass, &pn)) ||
        strchr(user, ':'))
        return ot_diag_set(d, OT_ERR_INVALID, "proxy: bad user name or password (escape "
                           "special characters as %%XX)");
    int blen = snprintf(both, sizeof(both), "%s:%s", user, pass);
    char *b64 = malloc(ot_base64_encoded_len((size_t)blen));
    if (b64) {
        ot_base64_encode((const uint8_t *)both, (size_t)blen, b64);
        if (asprintf(auth, "Proxy-Authorization: Basic %s", b64) < 0)
            *auth = NULL;
        explicit_bzero(b64, strlen(b64));
    }
    free(b64);
    explicit_bzero(both, sizeof(both));
    explicit_bzero(pass, sizeof(pass));
    return *auth ? OT_OK : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
}

enum ot_err ag_http_proxy_check(const char *proxy, struct ot_diag *d)
{
    char host[HOST_MAX + 1], port[8], *auth = NULL;
    enum ot_err err = parse_proxy(proxy, host, port, &auth, d);
    if (auth)
        explicit_bzero(auth, strlen(auth));
    free(auth);
    return err;
}

/* An address, or a network "address/bits", from text; false when it is neither. */
static bool parse_net(const char *s, size_t len, int *family, uint8_t addr[16], unsigned *bits)
{
    char buf[INET6_ADDRSTRLEN + 5];
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash)
        *slash++ = '\0';
    char *a = buf;
    size_t alen = strlen(a);
    if (a[0] == '[' && alen > 2 && a[alen - 1] == ']') {
        a[alen - 1] = '\0';
        a++;
    }
    if (inet_pton(AF_INET, a, addr) == 1)
        *family = AF_INET;
    else if (inet_pton(AF_INET6, a, addr) == 1)
        *family = AF_INET6;
    else
        return false;
    unsigned max = *family == AF_INET ? 32 : 128;
    *bits = max;
    if (slash) {
        char *end = NULL;
        unsigned long b = strtoul(slash, &end, 10);
        if (!*slash || *end || b > max)
            return false;
        *bits = (unsigned)b;
    }
    return true;
}

static bool net_contains(const uint8_t net[16], const uint8_t addr[16], unsigned bits)
{
    size_t whole = bits / 8;
    if (memcmp(net, addr, whole) != 0)
        return false;
    unsigned rest = bits % 8;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return rest == 0 || (net[whole] & mask) == (addr[whole] & mask);
}

bool ag_http_proxy_skip(const char *url, const char *no_proxy)
{
    bool tls;
    char host[HOST_MAX + 1], port[8];
    const char *path;
    struct ot_diag d = {0};
    if (parse_url(url, &tls, host, port, &path, &d) != OT_OK)
        return true; /* ag_http_start refuses it anyway */
    int fam;
    uint8_t addr[16];
    unsigned bits;
    bool is_ip = parse_net(host, strlen(host), &fam, addr, &bits);
    static const uint8_t v6_loopback[16] = {[15] = 1};
    if (strcasecmp(host, "localhost") == 0 || (is_ip && fam == AF_INET && addr[0] == 127) ||
        (is_ip && fam == AF_INET6 && memcmp(addr, v6_loopback, 16) == 0))
        return true;
    size_t hlen = strlen(host);
    while (hlen && host[hlen - 1] == '.')
        host[--hlen] = '\0';
    for (const char *p = no_proxy ? no_proxy : ""; *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (!len)
            break;
        const char *e = p;
        p += len;
        int nfam;
        uint8_t net[16];
        unsigned nbits;
        if (len == 1 && e[0] == '*')
            return true;
        if (parse_net(e, len, &nfam, net, &nbits)) {
            if (is_ip && nfam == fam && net_contains(net, addr, nbits))
                return true;
            continue;
        }
        const char *colon = memchr(e, ':', len); /* "host:port": the host is what counts */
        if (colon)
            len = (size_t)(colon - e);
        while (len && e[0] == '.') { /* ".example.com" is "example.com" and its sub-domains */
            e++;
            len--;
        }
        while (len && e[len - 1] == '.')
            len--;
        if (!len || len > hlen || strncasecmp(host + hlen - len, e, len) != 0 ||
            (is_ip && len != hlen)) /* "2.3" is no domain of 10.1.2.3 */
            continue;
        if (len == hlen || host[hlen - len - 1] == '.')
            return true;
    }
    return false;
}

static bool has_header(const struct ag_http_request *rq, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < rq->nheaders; i++)
        if (strncasecmp(rq->headers[i], name, n) == 0 && rq->headers[i][n] == ':')
            return true;
    return false;
}

static enum ot_err build_request(struct ag_http_xfer *x, const struct ag_http_request *rq,
                                 const char *path, struct ot_diag *d)
{
    struct ot_buf b;
    ot_buf_init(&b, SIZE_MAX);
    bool v6 = strchr(x->host, ':') != NULL;
    bool default_port = strcmp(x->port, x->tls ? "443" : "80") == 0;
    size_t plen = strcspn(path, "#");
    char authority[HOST_MAX + 16];
    snprintf(authority, sizeof(authority), "%s%s%s%s%s", v6 ? "[" : "", x->host, v6 ? "]" : "",
             default_port ? "" : ":", default_port ? "" : x->port);
    /* through a proxy, plain http asks for the absolute URL (RFC 9112 §3.2.2) */
    bool absolute = x->proxy_host && !x->tls;
    enum ot_err err = ot_buf_printf(&b, "%s %s%s%.*s%s HTTP/1.1\r\nHost: %s\r\n", rq->method,
                                    absolute ? "http://" : "", absolute ? authority : "",
                                    (int)plen, path, plen ? "" : "/", authority);
    if (!err && absolute && x->proxy_auth)
        err = ot_buf_printf(&b, "%s\r\n", x->proxy_auth);
    if (!err && rq->user_agent)
        err = ot_buf_printf(&b, "User-Agent: %s\r\n", rq->user_agent);
    if (!err && !has_header(rq, "Accept"))
        err = ot_buf_append_str(&b, "Accept: */*\r\n");
    for (size_t i = 0; !err && i < rq->nheaders; i++)
        err = ot_buf_printf(&b, "%s\r\n", rq->headers[i]);
    bool body = rq->body_len > 0 || (strcmp(rq->method, "GET") != 0 &&
                                     strcmp(rq->method, "HEAD") != 0);
    if (!err && body)
        err = ot_buf_printf(&b, "Content-Length: %zu\r\n", rq->body_len);
    if (!err)
        err = ot_buf_append_str(&b, "\r\n");
    if (!err && rq->body_len)
        err = ot_buf_append(&b, rq->body, rq->body_len);
    if (!err)
        err = ot_buf_steal(&b, &x->out, &x->out_len);
    if (err) {
        if (b.data)
            explicit_bzero(b.data, b.len);
        ot_buf_release(&b);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

struct ag_http_xfer *ag_http_start(struct ag_http *h, const struct ag_http_request *rq,
                                   ag_http_head_fn head, ag_http_data_fn data,
                                   ag_http_done_fn done, void *userdata, struct ot_diag *d)
{
    if (!rq || !rq->method || !rq->url || !done || !ag_http_is_clean(rq->method) ||
        !ag_http_is_clean(rq->url)) {
        ot_diag_set(d, OT_ERR_INVALID, "bad HTTP request");
        return NULL;
    }
    for (size_t i = 0; i < rq->nheaders; i++)
        if (strpbrk(rq->headers[i], "\r\n") || !strchr(rq->headers[i], ':')) {
            ot_diag_set(d, OT_ERR_INVALID, "bad request header");
            return NULL;
        }
    if (rq->user_agent && strpbrk(rq->user_agent, "\r\n")) {
        ot_diag_set(d, OT_ERR_INVALID, "bad user agent");
        return NULL;
    }
    struct ag_http_xfer *x = calloc(1, sizeof(*x));
    if (!x) {
        ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    x->h = h;
    x->state = X_QUEUED;
    x->next = h->xfers;
    if (h->xfers)
        h->xfers->prev = x;
    h->xfers = x;
    const char *path = NULL;
    const struct ag_http_tls *m = rq->tls;
    enum ot_err err = parse_url(rq->url, &x->tls, x->host, x->port, &path, d);
    if (!err && rq->proxy) {
        char host[HOST_MAX + 1];
        err = parse_proxy(rq->proxy, host, x->proxy_port, &x->proxy_auth, d);
        if (!err && !(x->proxy_host = strdup(host)))
            err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    if (!err)
        err = build_request(x, rq, path, d);
    if (!err && x->tls)
        err = tls_ctx_get(h, m, &x->tctx, d);
    if (!err && x->tls && m && m->pinned_key && !(x->pin = strdup(m->pinned_key)))
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    /* the proxy's credentials are not part of it: a tunnel is authorized once, when it is made,
     * and plain http sends them with every request */
    if (!err && asprintf(&x->key, "%s://%s:%s %p %s %s:%s", x->tls ? "https" : "http", x->host,
                         x->port, (void *)x->tctx, x->pin ? x->pin : "",
                         x->proxy_host ? x->proxy_host : "", x->proxy_port) < 0) {
        x->key = NULL;
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    if (err) {
        xfer_destroy(x);
        return NULL;
    }
    x->head_only = strcmp(rq->method, "HEAD") == 0;
    x->connect_timeout_s = rq->connect_timeout_s ? rq->connect_timeout_s : 10;
    x->timeout_s = rq->timeout_s;
    x->stall_timeout_s = rq->stall_timeout_s ? rq->stall_timeout_s : 60;
    x->max_rate = rq->max_rate;
    x->head_fn = head;
    x->data_fn = data;
    x->done_fn = done;
    x->userdata = userdata;
    x->qprev = h->qtail;
    x->in_queue = true;
    if (h->qtail)
        h->qtail->qnext = x;
    else
        h->qhead = x;
    h->qtail = x;
    promote(h);
    return x;
}

void ag_http_cancel(struct ag_http_xfer *x)
{
    if (!x || x->cancelled)
        return;
    if (x->in_cb) {
        x->cancelled = true;
        return;
    }
    struct ag_http *h = x->h;
    xfer_destroy(x);
    promote(h);
}

void ag_http_pause(struct ag_http_xfer *x, bool paused)
{
    if (x->paused == paused)
        return;
    x->paused = paused;
    if (!x->c || x->c->state != C_RECV)
        return; /* connecting or sending: the pause takes effect when the reply comes */
    if (paused) {
        conn_watch(x->c, 0);
    } else {
        x->last_rx_ms = ag_loop_now_ms();
        if (!x->in_cb)
            kick(x); /* bytes may wait in the buffer, or inside TLS, with nothing to wake us */
    }
}

/* ---- connecting ------------------------------------------------------------------------------ */

static enum ot_err conn_start_tls(struct ag_http_xfer *x, struct conn *c, char *why, size_t len)
{
    c->ssl = SSL_new(x->tctx->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(why, len, "cannot start TLS");
        return OT_ERR_NOMEM;
    }
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, x->host, ip) == 1 || inet_pton(AF_INET6, x->host, ip) == 1;
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), x->host) != 1) {
            snprintf(why, len, "cannot set the address to verify");
            return OT_ERR_NOMEM;
        }
    } else if (SSL_set_tlsext_host_name(c->ssl, x->host) != 1 || SSL_set1_host(c->ssl, x->host) != 1) {
        snprintf(why, len, "cannot set the host name to verify");
        return OT_ERR_NOMEM;
    }
    SSL_set_connect_state(c->ssl);
    return OT_OK;
}

static void start_send(struct ag_http_xfer *x)
{
    cancel_timer(x->h, &x->connect_timer);
    x->c->state = C_SEND;
    x->out_off = 0;
    conn_watch(x->c, EPOLLOUT);
    process(x);
}

static void handshake(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        char why[160];
        X509 *cert = SSL_get0_peer_certificate(c->ssl);
        if (x->pin && (!cert || !pin_matches(x->pin, cert, why, sizeof(why)))) {
            fail(x, "TLS with %s port %s: %s", x->host, x->port, cert ? why : "no certificate");
            return;
        }
        start_send(x);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        conn_watch(c, EPOLLIN);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        conn_watch(c, EPOLLOUT);
        return;
    }
    char why[256];
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
        snprintf(why, sizeof(why), "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else {
        ssl_error_text(why, sizeof(why), e == SSL_ERROR_SYSCALL ? "connection lost" : "failed");
    }
    fail(x, "TLS handshake with %s port %s failed: %s", x->host, x->port, why);
}

static void tunnel(struct ag_http_xfer *x);

/* The connection reaches the server (straight, or through the proxy's tunnel): TLS starts. */
static void tls_begin(struct ag_http_xfer *x)
{
    char why[128];
    if (conn_start_tls(x, x->c, why, sizeof(why))) {
        fail(x, "TLS with %s: %s", x->host, why);
        return;
    }
    x->c->state = C_HANDSHAKE;
    handshake(x);
}

/* TCP is up (to the server, or to the proxy): on to the tunnel, TLS, or the request. */
static void connected(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    freeaddrinfo(c->ai_list);
    c->ai_list = c->ai = NULL;
    if (!x->tls) {
        start_send(x);
        return;
    }
    if (x->proxy_host) {
        bool v6 = strchr(x->host, ':') != NULL;
        int n = asprintf(&x->tunnel, "CONNECT %s%s%s:%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n%s%s\r\n",
                         v6 ? "[" : "", x->host, v6 ? "]" : "", x->port, v6 ? "[" : "", x->host,
                         v6 ? "]" : "", x->port, x->proxy_auth ? x->proxy_auth : "",
                         x->proxy_auth ? "\r\n" : "");
        if (n < 0) {
            x->tunnel = NULL;
            fail(x, "out of memory");
            return;
        }
        x->tunnel_len = (size_t)n;
        x->tunnel_off = 0;
        c->state = C_TUNNEL;
        tunnel(x);
        return;
    }
    tls_begin(x);
}

/* Tries the addresses from c->ai on; fails x when none is left. */
static void connect_next(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    int last_errno = ECONNREFUSED;
    for (; c->ai; c->ai = c->ai->ai_next) {
        if (c->fd >= 0) {
            if (c->watched)
                ag_loop_fd_remove(x->h->loop, c->fd);
            c->watched = false;
            close(c->fd);
            c->fd = -1;
        }
        c->fd = socket(c->ai->ai_family, c->ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       c->ai->ai_protocol);
        if (c->fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        int rc = connect(c->fd, c->ai->ai_addr, c->ai->ai_addrlen);
        if (rc < 0 && errno != EINPROGRESS) {
            last_errno = errno;
            continue;
        }
        c->state = C_CONNECTING;
        conn_watch(c, EPOLLOUT);
        if (!c->watched) {
            fail(x, "cannot watch the connection to %s%s port %s", PEER(x));
            return;
        }
        if (rc == 0) {
            c->ai = NULL;
            connected(x);
        }
        return;
    }
    fail(x, "cannot connect to %s%s port %s: %s", PEER(x), strerror(last_errno));
}

/* A new connection for x. */
static void open_connection(struct ag_http_xfer *x)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->key = strdup(x->key))) {
        free(c);
        fail(x, "out of memory");
        return;
    }
    c->h = x->h;
    c->fd = -1;
    c->x = x;
    x->c = c;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = getaddrinfo(x->proxy_host ? x->proxy_host : x->host,
                         x->proxy_host ? x->proxy_port : x->port, &hints, &c->ai_list);
    if (rc != 0) {
        c->ai_list = NULL;
        fail(x, "cannot resolve %s%s: %s", x->proxy_host ? "proxy " : "",
             x->proxy_host ? x->proxy_host : x->host,
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    c->ai = c->ai_list;
    if (!x->connect_timer)
        x->connect_timer = ag_loop_timer(x->h->loop, (uint64_t)x->connect_timeout_s * 1000u,
                                         on_connect_timer, x);
    connect_next(x);
}

/* The kick: a transfer starts (takes or opens a connection), or goes on with buffered bytes. */
static void on_kick(void *userdata)
{
    struct ag_http_xfer *x = userdata;
    x->kick_timer = 0;
    if (x->c) {
        process(x);
        return;
    }
    x->state = X_ACTIVE;
    x->start_us = now_us(); /* time spent waiting for a place is not the exchange's */
    x->last_rx_ms = ag_loop_now_ms();
    if (x->timeout_s)
        x->total_timer = ag_loop_timer(x->h->loop, (uint64_t)x->timeout_s * 1000u, on_total_timer, x);
    arm_stall(x, (uint64_t)x->stall_timeout_s * 1000u);
    struct conn *c = conn_take_idle(x->h, x->key);
    if (c) {
        c->x = x;
        x->c = c;
        start_send(x);
        return;
    }
    open_connection(x);
}

/* The reused connection died before any byte of the reply: once more on a new one. */
static bool retry_fresh(struct ag_http_xfer *x)
{
    if (!x->c || !x->c->reused || x->rx_total > 0 || x->retried)
        return false;
    x->retried = true;
    conn_close(x->c);
    x->c = NULL;
    open_connection(x);
    return true;
}

/* ---- reading the reply ----------------------------------------------------------------------- */

/* One header line of the head: its name, and its value without the blanks around it. */
struct header {
    const char *name, *value;
    size_t name_len, value_len;
};

/* Reads the header line at p (after the status line). Returns the next line's start, or NULL at
 * the empty line that ends the head; h->name is NULL for a line that is not "name: value" (no
 * colon, an empty name, or an obsolete continuation line). */
static const char *next_header(const char *p, struct header *h)
{
    if (!*p || *p == '\r' || *p == '\n')
        return NULL;
    const char *eol = strchr(p, '\n');
    const char *end = eol ? eol : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    *h = (struct header){0};
    if (*p != ' ' && *p != '\t' && colon && colon > p) {
        const char *v = colon + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *h = (struct header){.name = p, .name_len = (size_t)(colon - p), .value = v,
                             .value_len = (size_t)(end - v)};
    }
    return eol ? eol + 1 : p + strlen(p);
}

/* The first header of that name, case-insensitive, from the head, or NULL. */
const char *ag_http_header(struct ag_http_xfer *x, const char *name)
{
    static char value[1024];
    const char *p = x->head ? strchr(x->head, '\n') : NULL; /* after the status line */
    size_t nlen = strlen(name);
    struct header h;
    for (p = p ? p + 1 : NULL; p && (p = next_header(p, &h));)
        if (h.name && h.name_len == nlen && strncasecmp(h.name, name, nlen) == 0) {
            size_t vlen = OT_MIN(h.value_len, sizeof(value) - 1);
            memcpy(value, h.value, vlen);
            value[vlen] = '\0';
            return value;
        }
    return NULL;
}

static bool token_in_list(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t len = strcspn(p, ",");
        size_t tl = len;
        while (tl > 0 && (p[tl - 1] == ' ' || p[tl - 1] == '\t'))
            tl--;
        if (tl == n && strncasecmp(p, token, n) == 0)
            return true;
        p += len;
    }
    return false;
}

/* Reads the head's status line and framing headers. Returns false with why set when the reply is
 * not one we can read. */
static bool parse_head(struct ag_http_xfer *x, char *why, size_t len)
{
    const char *s = x->head;
    if (strncmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9' || s[8] != ' ' ||
        s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
        (s[12] != ' ' && s[12] != '\r' && s[12] != '\n')) {
        snprintf(why, len, "not an HTTP/1.x reply");
        return false;
    }
    x->minor = s[7] - '0';
    x->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    bool have_length = false, chunked = false, conn_close_hdr = false, conn_keep = false;
    uint64_t length = 0;
    const char *p = strchr(s, '\n');
    struct header h;
    for (p = p ? p + 1 : NULL; p && (p = next_header(p, &h));) {
        if (!h.name) {
            snprintf(why, len, "malformed header line");
            return false;
        }
        char name[32];
        size_t nlen = h.name_len;
        if (nlen < sizeof(name)) {
            memcpy(name, h.name, nlen);
            name[nlen] = '\0';
            char val[256];
            size_t vlen = h.value_len;
            bool fits = vlen < sizeof(val);
            if (fits) {
                memcpy(val, h.value, vlen);
                val[vlen] = '\0';
            }
            if (strcasecmp(name, "Content-Length") == 0) {
                uint64_t n = 0;
                bool ok = fits && vlen > 0 && vlen <= 19;
                for (size_t i = 0; ok && i < vlen; i++) {
                    ok = val[i] >= '0' && val[i] <= '9';
                    n = n * 10 + (uint64_t)(val[i] - '0');
                }
                if (!ok || (have_length && n != length)) {
                    snprintf(why, len, "bad or conflicting Content-Length");
                    return false;
                }
                have_length = true;
                length = n;
            } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
                /* chunked must be the last coding; any other coding we cannot undo */
                if (!fits || strcasecmp(val, "chunked") != 0) {
                    snprintf(why, len, "unsupported Transfer-Encoding");
                    return false;
                }
                chunked = true;
            } else if (strcasecmp(name, "Connection") == 0 && fits) {
                conn_close_hdr |= token_in_list(val, "close");
                conn_keep |= token_in_list(val, "keep-alive");
            }
        }
    }
    x->keep_alive = !conn_close_hdr && (x->minor >= 1 || conn_keep);
    if (x->head_only || x->status == 204 || x->status == 304 || x->status < 200) {
        x->body = BODY_NONE;
    } else if (chunked) {
        x->body = BODY_CHUNKED;
        x->chunk = CH_SIZE;
        x->line_len = 0;
        if (have_length)
            x->keep_alive = false; /* RFC 9112 §6.3: a message with both is suspect */
    } else if (have_length) {
        x->body = length ? BODY_LENGTH : BODY_NONE;
        x->remaining = length;
    } else {
        x->body = BODY_CLOSE;
        x->keep_alive = false;
    }
    return true;
}

/* Hands body bytes to the caller. false: x is gone or failed (handled). */
static bool deliver(struct ag_http_xfer *x, const uint8_t *p, size_t n)
{
    if (n == 0 || !x->data_fn)
        return true;
    struct ot_diag d = {0};
    x->in_cb = true;
    x->h->busy++;
    enum ot_err err = x->data_fn(x->userdata, p, n, &d);
    if (!after_callback(x))
        return false;
    if (err) {
        finish(x, err, &d);
        return false;
    }
    return true;
}

/* The head is complete (x->head). false: x is gone or failed. */
static bool head_done(struct ag_http_xfer *x)
{
    char why[128];
    if (!parse_head(x, why, sizeof(why))) {
        fail(x, "bad reply from %s port %s: %s", x->host, x->port, why);
        return false;
    }
    if (x->status < 200) {
        if (x->status == 101) {
            fail(x, "bad reply from %s port %s: an unasked protocol switch", x->host, x->port);
            return false;
        }
        x->head_len = 0; /* an interim reply: the real one follows */
        x->status = 0;
        return true;
    }
    x->in_head = false;
    if (x->head_fn) {
        struct ot_diag d = {0};
        x->in_cb = true;
        x->h->busy++;
        enum ot_err err = x->head_fn(x->userdata, x, x->status, &d);
        if (!after_callback(x))
            return false;
        if (err) {
            finish(x, err, &d);
            return false;
        }
    }
    free(x->head);
    x->head = NULL;
    x->head_len = x->head_cap = 0;
    if (x->body == BODY_NONE) {
        finish(x, OT_OK, NULL);
        return false;
    }
    return true;
}

/* Takes head bytes from the buffer. false: x is gone or failed. */
static bool take_head(struct ag_http_xfer *x)
{
    while (x->in_off < x->in_len) {
        if (x->head_len == AG_HTTP_HEAD_MAX) {
            fail(x, "bad reply from %s port %s: headers larger than %d bytes", x->host, x->port,
                 AG_HTTP_HEAD_MAX);
            return false;
        }
        if (x->head_len + 1 >= x->head_cap) { /* room for the byte and the NUL */
            size_t cap = x->head_cap ? OT_MIN(x->head_cap * 2, (size_t)AG_HTTP_HEAD_MAX + 1) : 1024;
            char *p = realloc(x->head, cap);
            if (!p) {
                fail(x, "out of memory");
                return false;
            }
            x->head = p;
            x->head_cap = cap;
        }
        char ch = (char)x->in[x->in_off++];
        if (ch == '\0') {
            fail(x, "bad reply from %s port %s: a NUL byte in the headers", x->host, x->port);
            return false;
        }
        x->head[x->head_len++] = ch;
        x->head[x->head_len] = '\0';
        if (ch != '\n')
            continue;
        /* the end: an empty line ("\r\n\r\n" or "\n\n") */
        size_t l = x->head_len;
        bool end = (l >= 2 && x->head[l - 2] == '\n') ||
                   (l >= 4 && x->head[l - 2] == '\r' && x->head[l - 3] == '\n');
        if (l <= 2 && (x->head[0] == '\n' || x->head[0] == '\r')) {
            x->head_len = 0; /* blank lines before a status line are skipped (RFC 9112 §2.2) */
            continue;
        }
        if (end) {
            if (!head_done(x))
                return false;
            if (!x->in_head)
                return true;
        }
    }
    return true;
}

/* Reads a CRLF-terminated line of a chunked body into x->line. 1: complete, 0: more needed,
 * -1: too long (x failed). */
static int take_line(struct ag_http_xfer *x)
{
    while (x->in_off < x->in_len) {
        char ch = (char)x->in[x->in_off++];
        if (ch == '\n') {
            if (x->line_len > 0 && x->line[x->line_len - 1] == '\r')
                x->line_len--;
            x->line[x->line_len] = '\0';
            return 1;
        }
        if (x->line_len == CHUNK_LINE_MAX) {
            fail(x, "bad reply from %s port %s: a chunk line is too long", x->host, x->port);
            return -1;
        }
        x->line[x->line_len++] = ch;
    }
    return 0;
}

/* Takes chunked body bytes. false: x is gone, failed or finished. */
static bool take_chunked(struct ag_http_xfer *x)
{
    while (x->in_off < x->in_len) {
        if (x->chunk == CH_DATA) {
            size_t n = (size_t)OT_MIN((uint64_t)(x->in_len - x->in_off), x->remaining);
            const uint8_t *p = x->in + x->in_off;
            x->in_off += n;
            x->remaining -= n;
            if (!deliver(x, p, n))
                return false;
            if (x->remaining == 0) {
                x->chunk = CH_DATA_END;
                x->line_len = 0;
            }
            if (x->paused || x->throttled)
                return true;
            continue;
        }
        int got = take_line(x);
        if (got < 0)
            return false;
        if (got == 0)
            return true;
        x->line_len = 0;
        if (x->chunk == CH_DATA_END) {
            if (x->line[0]) {
                fail(x, "bad reply from %s port %s: no line end after a chunk", x->host, x->port);
                return false;
            }
            x->chunk = CH_SIZE;
        } else if (x->chunk == CH_SIZE) {
            uint64_t v = 0;
            size_t i = 0;
            for (; isxdigit((unsigned char)x->line[i]); i++) {
                if (v >> 59) {
                    fail(x, "bad reply from %s port %s: a chunk too large", x->host, x->port);
                    return false;
                }
                char ch = x->line[i];
                v = v * 16 + (uint64_t)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
            }
            size_t j = i;
            while (x->line[j] == ' ' || x->line[j] == '\t')
                j++;
            if (i == 0 || (x->line[j] && x->line[j] != ';')) {
                fail(x, "bad reply from %s port %s: bad chunk size", x->host, x->port);
                return false;
            }
            x->remaining = v;
            x->chunk = v ? CH_DATA : CH_TRAILER;
        } else { /* CH_TRAILER: header lines until an empty one */
            if (!x->line[0]) {
                finish(x, OT_OK, NULL);
                return false;
            }
            x->trailer_bytes += strlen(x->line);
            if (x->trailer_bytes > AG_HTTP_HEAD_MAX) {
                fail(x, "bad reply from %s port %s: trailers too large", x->host, x->port);
                return false;
            }
        }
    }
    return true;
}

/* Takes what the buffer holds. false: x is gone, failed or finished. */
static bool consume(struct ag_http_xfer *x)
{
    if (x->in_head && !take_head(x))
        return false;
    if (x->in_head || x->in_off == x->in_len)
        return true;
    if (x->body == BODY_CHUNKED)
        return take_chunked(x);
    size_t n = x->in_len - x->in_off;
    if (x->body == BODY_LENGTH)
        n = (size_t)OT_MIN((uint64_t)n, x->remaining);
    const uint8_t *p = x->in + x->in_off;
    x->in_off += n;
    if (!deliver(x, p, n))
        return false;
    if (x->body == BODY_LENGTH) {
        x->remaining -= n;
        if (x->remaining == 0) {
            finish(x, OT_OK, NULL);
            return false;
        }
    }
    return true;
}

/* The server closed the connection. */
static void on_eof(struct ag_http_xfer *x)
{
    if (!x->in_head && x->body == BODY_CLOSE) {
        x->keep_alive = false;
        finish(x, OT_OK, NULL);
        return;
    }
    if (retry_fresh(x))
        return;
    if (x->rx_total == 0)
        fail(x, "%s port %s closed the connection without a reply", x->host, x->port);
    else if (x->in_head)
        fail(x, "%s port %s closed the connection in the reply's headers", x->host, x->port);
    else if (x->body == BODY_LENGTH)
        fail(x, "%s port %s closed the connection with %" PRIu64 " bytes of the reply missing",
             x->host, x->port, x->remaining);
    else
        fail(x, "%s port %s closed the connection in a chunked reply", x->host, x->port);
}

enum io { IO_OK, IO_WAIT, IO_EOF, IO_ERR };

/* One read or write on the connection; IO_WAIT sets what to wait for. */
static enum io conn_io(struct conn *c, bool writing, void *p, size_t len, size_t *done, char *why,
                       size_t wlen)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t n = writing ? send(c->fd, p, len, MSG_NOSIGNAL) : recv(c->fd, p, len, 0);
            if (n > 0) {
                *done = (size_t)n;
                return IO_OK;
            }
            if (n == 0 && !writing)
                return IO_EOF;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                conn_watch(c, writing ? EPOLLOUT : EPOLLIN);
                return IO_WAIT;
            }
            if (n < 0 && !writing && errno == ECONNRESET)
                return IO_EOF;
            snprintf(why, wlen, "%s", n < 0 ? strerror(errno) : "wrote nothing");
            return IO_ERR;
        }
    }
    ERR_clear_error();
    int n = writing ? SSL_write(c->ssl, p, (int)OT_MIN(len, (size_t)INT_MAX))
                    : SSL_read(c->ssl, p, (int)OT_MIN(len, (size_t)INT_MAX));
    if (n > 0) {
        *done = (size_t)n;
        return IO_OK;
    }
    int e = SSL_get_error(c->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        conn_watch(c, EPOLLIN);
        return IO_WAIT;
    case SSL_ERROR_WANT_WRITE:
        conn_watch(c, EPOLLOUT);
        return IO_WAIT;
    case SSL_ERROR_ZERO_RETURN:
        return IO_EOF;
    case SSL_ERROR_SYSCALL:
        if (!writing && (errno == 0 || errno == ECONNRESET))
            return IO_EOF;
        snprintf(why, wlen, "%s", errno ? strerror(errno) : "connection lost");
        ERR_clear_error();
        return IO_ERR;
    default: {
        unsigned long err = ERR_peek_error();
        /* a server that closes without close_notify: framing tells whether the reply was whole */
        if (!writing && ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return IO_EOF;
        }
        ssl_error_text(why, wlen, "TLS error");
        return IO_ERR;
    }
    }
}

/* The tunnel through the proxy: CONNECT is sent, then its reply's head read. After the head of a
 * 2xx comes nothing until the client starts TLS: a byte more is a proxy not to trust. */
static void tunnel(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    char why[160];
    while (x->tunnel_off < x->tunnel_len) {
        size_t n = 0;
        enum io io = conn_io(c, true, x->tunnel + x->tunnel_off, x->tunnel_len - x->tunnel_off,
                             &n, why, sizeof(why));
        if (io == IO_WAIT)
            return;
        if (io != IO_OK) {
            fail(x, "cannot send to proxy %s port %s: %s", x->proxy_host, x->proxy_port, why);
            return;
        }
        x->tunnel_off += n;
        if (x->tunnel_off == x->tunnel_len)
            x->in_len = 0;
    }
    if (!x->in && !(x->in = malloc(IN_SIZE))) {
        fail(x, "out of memory");
        return;
    }
    const char *end = NULL;
    while (!end) {
        if (x->in_len >= IN_SIZE - 1) {
            fail(x, "proxy %s port %s: its reply to CONNECT is too long", x->proxy_host,
                 x->proxy_port);
            return;
        }
        size_t n = 0;
        enum io io = conn_io(c, false, x->in + x->in_len, IN_SIZE - 1 - x->in_len, &n, why,
                             sizeof(why));
        if (io == IO_WAIT) {
            conn_watch(c, EPOLLIN);
            return;
        }
        if (io != IO_OK) {
            fail(x, "proxy %s port %s%s%s", x->proxy_host, x->proxy_port,
                 io == IO_EOF ? " closed the connection instead of opening a tunnel" : ": ",
                 io == IO_EOF ? "" : why);
            return;
        }
        x->in_len += n;
        x->in[x->in_len] = '\0';
        end = memmem(x->in, x->in_len, "\r\n\r\n", 4);
    }
    const char *line = (const char *)x->in;
    int minor = 0, status = 0, used = 0;
    if (sscanf(line, "HTTP/1.%1d %3d%n", &minor, &status, &used) != 2 || status < 100) {
        fail(x, "proxy %s port %s: its reply to CONNECT is not HTTP", x->proxy_host,
             x->proxy_port);
        return;
    }
    if (status / 100 != 2) {
        char reason[96] = "";
        size_t r = 0;
        for (const char *p = line + used + (line[used] == ' '); *p && *p != '\r' &&
                                                                r + 1 < sizeof(reason); p++)
            reason[r++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        reason[r] = '\0';
        if (status == 407)
            fail(x, "proxy %s port %s wants a user name and password (HTTP 407%s%s)%s",
                 x->proxy_host, x->proxy_port, r ? " " : "", reason,
                 x->proxy_auth ? ": it refused the ones given" : ": give them in the proxy URL");
        else
            fail(x, "proxy %s port %s refused a tunnel to %s port %s: HTTP %d%s%s",
                 x->proxy_host, x->proxy_port, x->host, x->port, status, r ? " " : "", reason);
        return;
    }
    if ((size_t)(end + 4 - line) != x->in_len) {
        fail(x, "proxy %s port %s sent more than its reply to CONNECT", x->proxy_host,
             x->proxy_port);
        return;
    }
    x->in_len = 0;
    explicit_bzero(x->tunnel, x->tunnel_len);
    free(x->tunnel);
    x->tunnel = NULL;
    x->tunnel_len = x->tunnel_off = 0;
    tls_begin(x);
}

static void send_request(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    while (x->out_off < x->out_len) {
        size_t n = 0;
        char why[160];
        enum io io = conn_io(c, true, x->out + x->out_off, x->out_len - x->out_off, &n, why,
                             sizeof(why));
        if (io == IO_WAIT)
            return;
        if (io != IO_OK) {
            if (retry_fresh(x))
                return;
            fail(x, "cannot send to %s port %s: %s", x->host, x->port, why);
            return;
        }
        x->out_off += n;
    }
    c->state = C_RECV;
    x->in_head = true;
    if (!x->in && !(x->in = malloc(IN_SIZE))) {
        fail(x, "out of memory");
        return;
    }
    x->in_off = x->in_len = 0;
    x->rate_start_ms = ag_loop_now_ms();
    x->rate_bytes = 0;
    conn_watch(c, x->paused ? 0 : EPOLLIN);
    if (!x->paused)
        process(x);
}

/* How much may be read now under the rate cap; 0 arms the throttle. */
static size_t rate_allowance(struct ag_http_xfer *x)
{
    if (!x->max_rate)
        return IN_SIZE;
    uint64_t elapsed = ag_loop_now_ms() - x->rate_start_ms;
    uint64_t allowed = x->max_rate * elapsed / 1000u + OT_MIN(x->max_rate / 4 + 1, (uint64_t)IN_SIZE);
    if (x->rate_bytes < allowed)
        return (size_t)OT_MIN(allowed - x->rate_bytes, (uint64_t)IN_SIZE);
    uint64_t wait_ms = (x->rate_bytes - allowed) * 1000u / x->max_rate + 1;
    x->throttled = true;
    conn_watch(x->c, 0);
    x->throttle_timer = ag_loop_timer(x->h->loop, wait_ms, on_throttle_timer, x);
    return 0;
}

static void receive(struct ag_http_xfer *x)
{
    size_t round = 0;
    for (;;) {
        if (x->in_off < x->in_len) {
            if (!consume(x))
                return;
            if (x->paused || x->throttled) {
                conn_watch(x->c, 0);
                return;
            }
            continue;
        }
        if (round >= ROUND_MAX) { /* let the other sockets have a turn */
            kick(x);
            return;
        }
        size_t want = rate_allowance(x);
        if (want == 0)
            return;
        size_t n = 0;
        char why[160];
        enum io io = conn_io(x->c, false, x->in, want, &n, why, sizeof(why));
        if (io == IO_WAIT)
            return;
        if (io == IO_EOF) {
            on_eof(x);
            return;
        }
        if (io == IO_ERR) {
            if (retry_fresh(x))
                return;
            fail(x, "cannot receive from %s port %s: %s", x->host, x->port, why);
            return;
        }
        x->in_off = 0;
        x->in_len = n;
        x->rx_total += n;
        x->rate_bytes += n;
        x->last_rx_ms = ag_loop_now_ms();
        round += n;
        if (!x->c->ssl && n < want) { /* level-triggered: epoll says when there is more */
            if (!consume(x))
                return;
            if (x->paused || x->throttled) {
                conn_watch(x->c, 0);
                return;
            }
            if (x->in_off == x->in_len) {
                conn_watch(x->c, EPOLLIN);
                return;
            }
        }
    }
}

static void process(struct ag_http_xfer *x)
{
    struct conn *c = x->c;
    if (!c)
        return;
    switch (c->state) {
    case C_CONNECTING:
        break;
    case C_TUNNEL:
        tunnel(x);
        break;
    case C_HANDSHAKE:
        handshake(x);
        break;
    case C_SEND:
        send_request(x);
        break;
    case C_RECV:
        if (!x->paused && !x->throttled)
            receive(x);
        break;
    case C_IDLE:
        break;
    }
}

static void on_conn(void *userdata, int fd, uint32_t events)
{
    struct conn *c = userdata;
    if (c->state == C_IDLE) { /* the server closed it, or sent what nobody asked for */
        struct ag_http *h = c->h;
        conn_close(c);
        quiesce(h);
        return;
    }
    struct ag_http_xfer *x = c->x;
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && !(events & (EPOLLERR | EPOLLHUP))) {
            c->ai = NULL;
            connected(x);
            return;
        }
        if (c->ai)
            c->ai = c->ai->ai_next;
        if (!c->ai) {
            fail(x, "cannot connect to %s%s port %s: %s", PEER(x),
                 strerror(err ? err : ECONNREFUSED));
            return;
        }
        connect_next(x);
        return;
    }
    process(x);
}

/* ---- the client ------------------------------------------------------------------------------ */

enum ot_err ag_http_new(struct ag_loop *loop, struct ag_http **ret, struct ot_diag *d)
{
    struct ag_http *h = calloc(1, sizeof(*h));
    if (!h)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    h->loop = loop;
    h->idle_s = AG_HTTP_IDLE_S;
    *ret = h;
    return OT_OK;
}

void ag_http_keep_idle(struct ag_http *h, unsigned seconds)
{
    h->idle_s = OT_MIN(seconds, (unsigned)AG_HTTP_IDLE_S);
    while (h->idle_s == 0 && h->idle)
        conn_close(h->idle);
}

void ag_http_limit(struct ag_http *h, size_t max)
{
    h->max_active = max;
    promote(h);
}

void ag_http_free(struct ag_http *h)
{
    if (!h || h->dead)
        return;
    h->dead = true;
    for (struct ag_http_xfer *x = h->xfers, *next; x; x = next) {
        next = x->next;
        if (x->in_cb)
            x->cancelled = true; /* destroyed when its callback returns */
        else
            xfer_destroy(x);
    }
    while (h->idle)
        conn_close(h->idle);
    if (h->busy == 0)
        client_free_final(h);
}
