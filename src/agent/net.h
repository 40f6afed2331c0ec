/* The agent's side of the device API (docs/device-api.md), asynchronous on the loop: every call
 * starts a request and returns; its callback runs once with the outcome. Messages are encoded and
 * decoded by core's wire.c.
 *
 * Authentication is handled here: the first request (or one answered 401) first POSTs a signed
 * auth request (identity key, ot_sign with OT_WIRE_AUTH_CONTEXT over the exact body bytes,
 * header OT_WIRE_SIGNATURE_HEADER), keeps the token in memory and repeats the request once.
 * A pending device gets OT_ERR_PERM with retry_after seconds in the result; a rejected one
 * (403) OT_ERR_PERM without it.
 *
 * Servers: a list tried in order: a transport error (connection refused, TLS failure, timeout)
 * or a 5xx moves to the next server for this request; the server that answered last is tried
 * first next time. HTTP and TLS come from http.h: CA bundle (ca_file, else the system's), optional
 * pinned public key ("sha256//..." or a key file), optional client certificate and key; http://
 * URLs are refused unless allow_http. No redirects are followed. Through an HTTP proxy when
 * configured (https_proxy, http_proxy, no_proxy), for the API and for downloads alike. */
#ifndef OTTER_AGENT_NET_H
#define OTTER_AGENT_NET_H

#include "http.h"
#include "loop.h"
#include "otter/key.h"
#include "otter/wire.h"

struct ag_net;

struct ag_net_config {
    const char *const *servers;   /* base URLs, "https://updates.example.com" */
    size_t nservers;
    const char *ca_file;          /* NULL: the system's CA bundle */
    const char *pinned_key;       /* NULL, "sha256//BASE64[;sha256//...]" or a public key file */
    const char *client_cert, *client_key;  /* PEM paths, both or neither */
    bool allow_http;
    const struct ot_key *identity_key;     /* Ed25519 secret key */
    const struct ot_wire_kv *identity;     /* identity attributes */
    size_t nidentity;
    const char *device_type;
    const char *enrollment_token;          /* NULL or "" for none */
    unsigned connect_timeout_s;            /* 0: 10 */
    unsigned request_timeout_s;            /* JSON requests; 0: 60 */
    unsigned stall_timeout_s;              /* downloads: fail below 1 byte/s for this long; 0: 60 */
    const char *user_agent;                /* NULL: "otter-agent/<version>" */
    const char *https_proxy, *http_proxy;  /* NULL: none; for https:// and http:// URLs (http.h) */
    const char *no_proxy;                  /* hosts that skip them (ag_http_proxy_skip) */
    struct ag_http *http;                  /* NULL: the net makes its own; else shared (otter-sim:
                                              one client, one connection cap, for every device) */
};

struct ag_net_result {
    enum ot_err err;               /* OT_OK, OT_ERR_IO (transport, 5xx after every server), */
    struct ot_diag diag;           /* OT_ERR_PERM (pending/rejected), OT_ERR_NOENT (404), */
    long http_status;              /* OT_ERR_EXISTS (409 on a report), OT_ERR_FORMAT (bad reply) */
    uint32_t retry_after;          /* seconds, for a pending device */
    uint64_t elapsed_us;           /* the last exchange's duration */
};

typedef void (*ag_net_checkin_fn)(void *userdata, const struct ag_net_result *r,
                                  const struct ot_wire_checkin_resp *resp /* NULL on error */);
typedef void (*ag_net_done_fn)(void *userdata, const struct ag_net_result *r);
/* Download data: bytes at absolute offset `offset` of the file; return OT_OK to go on, an error
 * to abort the transfer (that error ends up in the done callback). */
typedef enum ot_err (*ag_net_data_fn)(void *userdata, uint64_t offset, const uint8_t *p, size_t n,
                                      struct ot_diag *d);

enum ot_err ag_net_new(struct ag_loop *loop, const struct ag_net_config *cfg, struct ag_net **ret,
                       struct ot_diag *d) OT_MUST_CHECK;
/* Cancels everything in flight without calling callbacks. */
void ag_net_free(struct ag_net *n);

/* The configuration is copied: the caller's may go away after ag_net_new. */
void ag_net_checkin(struct ag_net *n, const struct ot_wire_checkin_req *req, ag_net_checkin_fn fn,
                    void *userdata);
void ag_net_report(struct ag_net *n, int64_t deployment_id, const struct ot_wire_status_report *r,
                   ag_net_done_fn fn, void *userdata);
void ag_net_inventory(struct ag_net *n, const struct ot_wire_inventory *inv, ag_net_done_fn fn,
                      void *userdata);

/* Simulation (otter-sim): while offline, every attempt fails at once like an unreachable
 * network (OT_ERR_IO). */
void ag_net_set_offline(struct ag_net *n, bool offline);

struct ag_download;
/* GET url (relative to the server that answers, or absolute) from byte `offset` (a Range request
 * when > 0, with If-Range: etag when etag is given: a 200 instead of 206 then means the file
 * changed, reported as OT_ERR_INVALID before any data callback). max_rate: bytes/s cap,
 * 0 unlimited. Returns a handle for pause/cancel, NULL when it
 * could not start (done is then called from the loop with the error, never synchronously). */
struct ag_download *ag_net_download(struct ag_net *n, const char *url, uint64_t offset,
                                    const char *etag, uint64_t max_rate, ag_net_data_fn data,
                                    ag_net_done_fn done, void *userdata);
void ag_net_download_pause(struct ag_download *dl, bool paused);
/* Stops it; done is not called. */
void ag_net_download_cancel(struct ag_download *dl);

#endif
