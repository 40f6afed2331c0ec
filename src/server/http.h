/* otterd's HTTP layer over libmicrohttpd: an internal epoll thread pool, a route table, bounded
 * request bodies, one JSON error shape, one err -> status table, a request log line per request.
 *
 * A handler runs once the whole request (headers and body) has arrived and answers with exactly
 * one srv_reply_* call. libmicrohttpd's rule, measured (ARCHITECTURE.md §2): a response queued on
 * the access handler's first call makes it answer "Connection: close" (about 4x slower), so the
 * layer always queues on a later call, after the body is complete. */
#ifndef OTTERD_HTTP_H
#define OTTERD_HTTP_H

#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "otter/buf.h"

struct srv_http;
struct srv_request;

/* The listen address syntax ("127.0.0.1:8080", "[::1]:8080", "localhost:0"), parsed without any
 * I/O so that main() validates its configuration before touching the disk, and srv_http_start()
 * binds exactly what was validated. */
struct srv_listen {
    struct sockaddr_storage addr; /* sockaddr_in or sockaddr_in6 */
    bool ipv6;
    char host[INET6_ADDRSTRLEN]; /* numeric, without brackets ("::1", "127.0.0.1") */
    uint16_t port;               /* 0: the kernel picks one (see srv_http_port) */
};

/* Host: a numeric IPv4 address, a numeric IPv6 address in brackets, or "localhost" (127.0.0.1);
 * names are not resolved. Port: 0..65535. OT_ERR_CONFIG with a message naming the problem. */
enum ot_err srv_listen_parse(const char *s, struct srv_listen *ret,
                             struct ot_diag *d) OT_MUST_CHECK;


/* How a route authenticates. */
enum srv_auth_kind {
    SRV_AUTH_NONE,   /* public (health) */
    SRV_AUTH_TOKEN,  /* management API: "Authorization: Bearer <token>" with the route's scope */
    SRV_AUTH_DEVICE, /* device API: "Authorization: Bearer <device token>" of an accepted device */
    SRV_AUTH_DDI,    /* hawkBit DDI (api_ddi.c): TargetToken / GatewayToken / proxy header; a
                      * refusal (401) has an empty body, as hawkBit's clients expect */
};

typedef void (*srv_handler_fn)(void *app, struct srv_request *req);
/* A streaming route's body callback: gets the body chunk by chunk as it arrives (nothing is
 * buffered), then the handler runs once the body is complete. Returning false means the callback
 * made an error reply (srv_reply_*): the rest of the body is read and dropped (bounded by
 * max_body), the handler is not called, and the reply goes out at the end. */
typedef bool (*srv_body_fn)(void *app, struct srv_request *req, const uint8_t *data, size_t n);

struct srv_route {
    const char *method;       /* "GET", "POST", "PUT", "DELETE" (HEAD is answered by GET routes) */
    const char *pattern;      /* "/api/v1/tokens/{id}": {name} matches one path segment */
    srv_handler_fn handler;
    enum srv_auth_kind auth;
    uint32_t scope;           /* required scope (SRV_AUTH_TOKEN), a srv_scope bit */
    size_t max_body;          /* bytes; larger bodies get 413 before they are read */
    const char *summary;      /* one line, for --routes and the docs */
    srv_body_fn body;         /* NULL: the body is buffered (bounded by max_body) */
};

/* Authenticates a request for a route (SRV_AUTH_TOKEN): returns 0 when allowed, else the HTTP
 * status to answer (401 no/bad token, 403 missing scope) with msg filled. principal (e.g.
 * "token:3 (ci)") is copied into the request for handlers and the audit log. Called before the
 * body is read. */
typedef int (*srv_auth_fn)(void *app, struct srv_request *req, const struct srv_route *route,
                           char *msg, size_t msg_len);

struct srv_http_config {
    const char *listen;            /* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080" */
    unsigned threads;              /* thread pool size; 0 = number of CPUs */
    unsigned connection_limit;     /* concurrent connections */
    unsigned connection_timeout_s; /* idle connection timeout */
    size_t header_limit;           /* bytes of request line + headers per connection */
    const char *tls_cert, *tls_key; /* PEM paths: HTTPS when both are set */
    bool log_requests;             /* one line per request on the log (method path status bytes ms) */
};

/* Starts serving (returns once listening). routes must outlive the server. The bound port is
 * available through srv_http_port (useful with "127.0.0.1:0"). */
enum ot_err srv_http_start(const struct srv_http_config *cfg, const struct srv_route *routes,
                           size_t nroutes, srv_auth_fn auth, void *app, struct srv_http **ret,
                           struct ot_diag *d) OT_MUST_CHECK;
uint16_t srv_http_port(const struct srv_http *h);
/* Stops accepting, lets requests in flight finish (bounded), frees. */
void srv_http_stop(struct srv_http *h);

/* ---- for handlers ---- */

const char *srv_req_method(const struct srv_request *req);
const char *srv_req_path(const struct srv_request *req);
/* A {name} path parameter of the matched pattern, or NULL. */
const char *srv_req_param(const struct srv_request *req, const char *name);
/* A query-string argument, or NULL. */
const char *srv_req_query(const struct srv_request *req, const char *name);
const char *srv_req_header(const struct srv_request *req, const char *name);
/* Every value of a repeated query argument (?t=a&t=b), in order: at most max are stored in out;
 * returns how many there are. */
size_t srv_req_query_all(const struct srv_request *req, const char *name, const char **out,
                         size_t max);
/* Whether the request came over TLS (the scheme of absolute URLs built for the client). */
bool srv_req_tls(const struct srv_request *req);
/* The whole body (bounded by the route's max_body). */
const struct ot_buf *srv_req_body(const struct srv_request *req);
/* Parses the body as a JSON object with ot_json_parse; on failure answers 400 itself and
 * returns NULL. The caller owns the reference. */
json_t *srv_req_json(struct srv_request *req);
/* Who made the request ("token:3 (ci)") and what it may do (srv_scope bits), set by the auth
 * callback once per request; "" and 0 for public routes. */
const char *srv_req_principal(const struct srv_request *req);
void srv_req_set_principal(struct srv_request *req, const char *principal);
uint32_t srv_req_scopes(const struct srv_request *req);
void srv_req_set_scopes(struct srv_request *req, uint32_t scopes);

/* Per-request state of a handler (a streaming upload's temp file ...): free_fn runs when the
 * request ends, also when the client went away mid-body. */
void srv_req_set_ctx(struct srv_request *req, void *ctx, void (*free_fn)(void *));
void *srv_req_ctx(const struct srv_request *req);
/* The authenticated device of a SRV_AUTH_DEVICE route (set by the auth callback), or 0. */
int64_t srv_req_device(const struct srv_request *req);
void srv_req_set_device(struct srv_request *req, int64_t device_id);

/* Replies (exactly one per request). The JSON reply takes ownership of body. */
void srv_reply_json(struct srv_request *req, unsigned status, json_t *body);
/* {"error":{"code":"<ot_err_name>","message":"..."}} with the status from the one err -> status
 * table (OT_ERR_NOENT 404, OT_ERR_FORMAT/INVALID 400, OT_ERR_EXISTS 409, OT_ERR_LIMIT 413, ...). */
void srv_reply_error(struct srv_request *req, enum ot_err err, const char *fmt, ...)
    OT_PRINTF(3, 4);
/* An error with an explicit status (401, 403, 404 unknown route, 405, ...). */
void srv_reply_status(struct srv_request *req, unsigned status, const char *code,
                      const char *fmt, ...) OT_PRINTF(4, 5);
void srv_reply_empty(struct srv_request *req, unsigned status);
/* A reply of content_type with a copy of len bytes of data. */
void srv_reply_text(struct srv_request *req, unsigned status, const char *content_type,
                    const void *data, size_t len);
/* Adds a header to the reply already made (ETag of a JSON reply ...); nothing without one. */
void srv_reply_header(struct srv_request *req, const char *name, const char *value);
/* A reply already encoded as JSON text (a wire message): takes the buffer's storage. */
void srv_reply_buf(struct srv_request *req, unsigned status, struct ot_buf *json_text);
/* A file, with sendfile where the connection allows (plain HTTP). Takes fd (closed when the
 * reply is done). Implements, for one resource of `size` bytes with the strong validator etag
 * (quoted, e.g. "\"<sha256 hex>\""): HEAD; If-None-Match (304); Range with one range
 * ("bytes=a-b", "a-", "-n"; 206 with Content-Range; an unsatisfiable one 416 with
 * "Content-Range: bytes * / size"; several ranges are answered with the whole file, as RFC 9110
 * allows: see srv_reply_file_ranges); If-Range (the range only while the ETag matches). */
void srv_reply_file(struct srv_request *req, int fd, uint64_t size, const char *etag,
                    const char *content_type);
/* srv_reply_file that also answers several ranges ("bytes=0-9,20-29", at most max_ranges
 * range-specs, capped at 64; more: the whole file, 200). Unsatisfiable specs are dropped (none
 * left: 416); ranges that overlap or touch are coalesced, a merged one taking the place of the
 * earlier, so the parts come in the order asked. One range left: a plain 206 as srv_reply_file;
 * several: 206 multipart/byteranges (RFC 9110 §14.6) with a random boundary, each part with
 * Content-Type content_type and its Content-Range, and an exact Content-Length. The multipart body
 * is read from fd as it is sent (no sendfile). With max_ranges 1 this is srv_reply_file. */
void srv_reply_file_ranges(struct srv_request *req, int fd, uint64_t size, const char *etag,
                           const char *content_type, size_t max_ranges);
unsigned srv_status_for_err(enum ot_err err);

#endif
