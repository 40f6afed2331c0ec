/* A small, blocking client for otterd's management API (/api/v1/...), over libcurl's easy
 * interface. One request at a time; the connection is kept alive between requests (pagination).
 * The device agent does not use this: it has its own HTTP client on its event loop
 * (src/agent/http.c), without libcurl.
 *
 * Security rules, fixed here so that no caller can get them wrong:
 *   - only http:// and https:// URLs, and redirects are never followed (a redirect would carry the
 *     token, or a request body, somewhere the user did not name);
 *   - TLS peers are always verified (the system CA bundle, or ca_file); there is no switch to turn
 *     verification off;
 *   - the token only ever goes into the Authorization header; it never appears in a URL or in a
 *     diagnostic message.
 * Timeouts: connecting 10 s; any transfer that moves less than 1 byte/s for stall_timeout_s fails;
 * JSON requests also have a total timeout, uploads and downloads do not (a 4 GiB image on a slow
 * uplink takes as long as it takes, as long as it keeps moving).
 *
 * Replies are JSON (at most OT_CLIENT_REPLY_MAX bytes), parsed with ot_json_parse. The server's
 * error body is {"error":{"code":"<name>","message":"..."}}; ot_client_status_error turns a non-2xx
 * reply into a diagnostic "server: <message> (HTTP <status>)". */
#ifndef OTTER_CLIENT_H
#define OTTER_CLIENT_H

#include <jansson.h>

#include "otter/artifact.h"
#include "otter/buf.h"

#define OT_CLIENT_REPLY_MAX (16 * 1024 * 1024) /* bytes of one JSON reply */
#define OT_CLIENT_ERROR_BODY_MAX (64 * 1024)   /* bytes of an error reply to a download */
#define OT_CLIENT_URL_MAX 8192                 /* bytes of a request URL */
#define OT_CLIENT_CONNECT_TIMEOUT_S 10
#define OT_CLIENT_STALL_TIMEOUT_S 60
#define OT_CLIENT_REQUEST_TIMEOUT_S 300

struct ot_client_opts {
    const char *server;     /* base URL: "http://127.0.0.1:8080", "https://ota.example.com/otter" */
    const char *token;      /* API token (Authorization: Bearer); NULL sends none */
    const char *ca_file;    /* PEM CA certificates for https; NULL: the system's bundle */
    const char *user_agent; /* NULL: "otter" */
    long stall_timeout_s;   /* 0: OT_CLIENT_STALL_TIMEOUT_S */
    long timeout_s;         /* total time of a JSON request; 0: OT_CLIENT_REQUEST_TIMEOUT_S */
};

struct ot_client;

/* Checks the options (scheme, no control characters in the URL or token) and sets up a handle;
 * nothing is sent yet. The strings are copied. Free with ot_client_free. */
enum ot_err ot_client_new(const struct ot_client_opts *o, struct ot_client **ret, struct ot_diag *d)
    OT_MUST_CHECK;
void ot_client_free(struct ot_client *c);
OT_DEFINE_CLEANUP(struct ot_client, ot_client_free)

/* One request. path starts with '/' and may carry a query (build it with ot_client_query_add).
 * body, if not NULL, is sent as JSON; a POST or PUT without a body sends an empty one.
 * OT_OK means an HTTP reply arrived, whatever its status: *ret_status is the status and *ret_json
 * the parsed reply body (NULL when the body was empty; the caller owns it). A 2xx reply whose body
 * is not JSON is OT_ERR_FORMAT; a non-2xx one with a non-JSON body gives *ret_json NULL (proxies
 * answer in HTML). Transport failures (no connection, TLS, timeouts) are OT_ERR_IO with curl's
 * message and the URL. */
enum ot_err ot_client_request(struct ot_client *c, const char *method, const char *path,
                              const json_t *body, long *ret_status, json_t **ret_json,
                              struct ot_diag *d) OT_MUST_CHECK;

/* POSTs size bytes read from fd (from its current position) as the raw body
 * (Content-Type: application/octet-stream), streaming: the file is never held in memory. progress
 * (may be NULL) is called with the bytes sent so far. The reply is handled as in ot_client_request. */
enum ot_err ot_client_upload(struct ot_client *c, const char *path, int fd, uint64_t size,
                             ot_progress_fn progress, void *userdata, long *ret_status,
                             json_t **ret_json, struct ot_diag *d) OT_MUST_CHECK;

/* GETs path and writes a 2xx reply's body to out_fd, streaming. A non-2xx reply's body is not
 * written: it is parsed into *ret_json (NULL if it is not JSON) for ot_client_status_error. */
enum ot_err ot_client_download(struct ot_client *c, const char *path, int out_fd,
                               ot_progress_fn progress, void *userdata, long *ret_status,
                               json_t **ret_json, struct ot_diag *d) OT_MUST_CHECK;

/* For a non-2xx reply: an error whose message is "server: <the error's message> (HTTP <status>)"
 * (or the status text when the body has no error object). The code maps the server's error code
 * back when it is an ot_err name ("untrusted" → OT_ERR_UNTRUSTED), else the status (401/403 PERM,
 * 404 NOENT, 409 EXISTS, 413 LIMIT, other 4xx INVALID, 5xx IO). Returns OT_OK for a 2xx status. */
enum ot_err ot_client_status_error(long status, const json_t *reply, struct ot_diag *d)
    OT_MUST_CHECK;
/* The error code an HTTP error status stands for (401/403 PERM, 404 NOENT, 409 EXISTS, 413 LIMIT,
 * 416 RANGE, other 4xx INVALID, else IO); shared with the agent's asynchronous client. */
enum ot_err ot_client_err_for_status(long status);

/* Appends "?key=value" (or "&key=value" when path already has a query) to path, with the value
 * percent-encoded (RFC 3986 unreserved characters are kept). */
enum ot_err ot_client_query_add(struct ot_buf *path, const char *key, const char *value)
    OT_MUST_CHECK;

#endif
