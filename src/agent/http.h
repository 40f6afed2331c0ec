/* otter-agent's HTTP/1.1 client, on its event loop (loop.h): non-blocking sockets, TLS through
 * OpenSSL's libssl, connections kept alive and reused. It replaces libcurl, whose Debian build
 * pulls 26 libraries (LDAP, SSH, Kerberos, GnuTLS, RTMP ...) into a daemon that talks to one JSON
 * API and downloads files: those libraries alone cost more private memory than the agent's whole
 * budget (bench/RESULTS.md, issue #4).
 *
 * What it does, and what it does not:
 * - http:// and https:// URLs (IPv4, IPv6 "[::1]" and names; names are resolved with
 *   getaddrinfo, which blocks the loop for as long as the system resolver takes).
 * - Requests: any method, a body sent with Content-Length, the caller's header lines. Replies:
 *   Content-Length, chunked, or read until the server closes; 1xx interim replies skipped;
 *   header block at most AG_HTTP_HEAD_MAX bytes.
 * - One request at a time per connection; a connection is kept after a complete reply unless
 *   either side said "Connection: close" (HTTP/1.0 only with "keep-alive"), and an idle one is
 *   closed after AG_HTTP_IDLE_S (ag_http_keep_idle) or when the server closes it. When nothing
 *   runs and nothing is kept, the TLS contexts are freed too, and the heap trimmed. A request on a reused connection
 *   that the server had closed meanwhile (no byte of a reply) is sent again once on a new one.
 * - TLS 1.2 and up, always verified: the CA file (else the system's store: its hashed directory
 *   when it has one, read certificate by certificate, else OpenSSL's default paths), the host name
 *   or IP address against the certificate, optionally a pinned public key (curl's syntax:
 *   "sha256//BASE64[;sha256//BASE64...]" or the path of a PEM or DER public key), an optional
 *   client certificate (PEM chain and key).
 * - Timeouts: connect (TCP and TLS handshake), total (0: none), stall (no byte received for that
 *   long while not paused); a receive rate cap (bytes/s); pause and resume of receiving.
 * - HTTP proxies (ag_http_request.proxy): https goes through a CONNECT tunnel, TLS end to end
 *   with the server as without a proxy; plain http asks the proxy for the absolute URL. Basic
 *   authentication with the proxy from the URL's user info. Which URLs skip the proxy
 *   (no_proxy, loopback) is ag_http_proxy_skip's to say; the caller decides.
 * - Not: redirects (the device API never sends one; a 3xx is the caller's to judge), https://
 *   or SOCKS proxies, compression, cookies, pipelining, HTTP/2.
 *
 * Callbacks run on the loop, never inside ag_http_start. From any of them the caller may start
 * and cancel transfers (the running one included) and free the whole client. A write on a closed
 * socket raises SIGPIPE with TLS: the programs using this ignore SIGPIPE. */
#ifndef OTTER_AGENT_HTTP_H
#define OTTER_AGENT_HTTP_H

#include "loop.h"

#define AG_HTTP_HEAD_MAX (64 * 1024) /* bytes of a reply's status line and headers */
#define AG_HTTP_IDLE_S 60            /* an idle kept-alive connection is closed after this */

struct ag_http;
struct ag_http_xfer;

/* TLS material of a request; connections are reused only between requests with equal material
 * and pin. NULL fields: none (ca_file NULL: the system's CA paths). */
struct ag_http_tls {
    const char *ca_file;
    const char *pinned_key;
    const char *client_cert, *client_key;
};

struct ag_http_request {
    const char *method;                 /* "GET", "POST", ... */
    const char *url;                    /* absolute http(s) URL, printable ASCII */
    const char *const *headers;         /* "Name: value" lines, without CRLF */
    size_t nheaders;
    const void *body;                   /* sent with Content-Length when method is not GET; copied */
    size_t body_len;
    const struct ag_http_tls *tls;      /* NULL: all defaults */
    const char *user_agent;             /* NULL: none sent */
    unsigned connect_timeout_s;         /* 0: 10 */
    unsigned timeout_s;                 /* the whole exchange; 0: none */
    unsigned stall_timeout_s;           /* 0: 60 */
    uint64_t max_rate;                  /* bytes/s received; 0: unlimited */
    const char *proxy;                  /* "[http://][user[:password]@]host[:port]" (port 1080
                                           by default, user and password %-escaped), or NULL:
                                           straight to the server */
};

struct ag_http_result {
    enum ot_err err;                    /* OT_OK: a complete reply; OT_ERR_IO: transport; else the
                                           error a callback returned */
    struct ot_diag diag;
    int status;                         /* the reply's status, 0 before one arrived */
    uint64_t elapsed_us;                /* from its start (after any wait for a place under
                                           ag_http_limit) to the end */
};

/* The reply's status line and headers arrived (the final ones, not a 1xx). ag_http_header works
 * during this call. Return OT_OK to receive the body, an error to abort (it reaches done). */
typedef enum ot_err (*ag_http_head_fn)(void *userdata, struct ag_http_xfer *x, int status,
                                       struct ot_diag *d);
/* Body bytes, in order, already de-chunked. Return OT_OK to go on, an error to abort. */
typedef enum ot_err (*ag_http_data_fn)(void *userdata, const uint8_t *p, size_t n,
                                       struct ot_diag *d);
/* The end, once, unless the transfer was cancelled. The transfer is gone when this runs. */
typedef void (*ag_http_done_fn)(void *userdata, const struct ag_http_result *r);

enum ot_err ag_http_new(struct ag_loop *loop, struct ag_http **ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Cancels every transfer (no callbacks) and closes every connection. Allowed in callbacks. */
void ag_http_free(struct ag_http *h);
/* At most max transfers at once (0: no cap, the default); more wait in order and start (with
 * their timeouts) as others end. Idle connections kept: at most max (8 without a cap). For
 * otter-sim, where thousands of devices share one client. */
void ag_http_limit(struct ag_http *h, size_t max);
/* How long an idle connection is kept, at most AG_HTTP_IDLE_S (the default). otter-agent keeps
 * one for a few seconds (a check-in, its report and its download share it) and then lets go of
 * everything between check-ins: a kept TLS connection and its context cost more memory than the
 * agent's whole idle budget, and one handshake per check-in costs milliseconds. */
void ag_http_keep_idle(struct ag_http *h, unsigned seconds);

/* Starts a request. Fails only on a bad URL or request (OT_ERR_INVALID) or no memory; everything
 * after that (resolving, connecting, TLS, the reply) ends in done. */
struct ag_http_xfer *ag_http_start(struct ag_http *h, const struct ag_http_request *rq,
                                   ag_http_head_fn head, ag_http_data_fn data,
                                   ag_http_done_fn done, void *userdata, struct ot_diag *d);
/* Stops it without calling done; its connection is closed unless it was idle. */
void ag_http_cancel(struct ag_http_xfer *x);
void ag_http_pause(struct ag_http_xfer *x, bool paused);
/* Printable ASCII without blanks: what may go into a request line or a header value unquoted
 * (URLs, tokens, ETags), so that nothing can split a line. */
bool ag_http_is_clean(const char *s);
/* OT_OK when ag_http_request.proxy would take `proxy`; else why not (OT_ERR_INVALID). */
enum ot_err ag_http_proxy_check(const char *proxy, struct ot_diag *d) OT_MUST_CHECK;
/* Whether url goes straight to its server despite a proxy: its host is loopback ("localhost",
 * 127.0.0.0/8, ::1), or matches an entry of no_proxy (NULL: none), a list separated by commas or
 * blanks, as curl reads it: "*" (everything), a host name that also covers its sub-domains
 * (".example.com" too), an IP address, or a network "10.0.0.0/8", "fd00::/8"; a ":port" after a
 * name is ignored. */
bool ag_http_proxy_skip(const char *url, const char *no_proxy);
/* A reply header's value (the first of that name, case-insensitive, blanks trimmed), or NULL.
 * Only inside the head callback. */
const char *ag_http_header(struct ag_http_xfer *x, const char *name);

#endif
