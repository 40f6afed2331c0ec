/* The device API's messages (docs/device-api.md), encoded and decoded only here: otterd decodes
 * what otter-agent and otter-sim encode and the other way round, so the three can never disagree
 * on a field.
 *
 * Decoders take untrusted bytes (fuzzed: fuzz/fuzz_wire.c): every field is type- and bound-checked
 * and duplicate keys are errors (ot_json_parse). Unknown keys are ignored, so that a newer peer may
 * add fields without breaking an older one; a missing required field is OT_ERR_FORMAT naming it; a
 * body over its size limit, or a map or list over its entry limit, is OT_ERR_LIMIT.
 * Encoders write canonical JSON (sorted keys, compact, trailing newline), appended to out, and
 * validate first (OT_ERR_INVALID), so what one side encodes the other side always decodes.
 * A field an encoder always writes is required by its decoder; an optional one is omitted when
 * empty. Maps (identity, installed, provides, attributes) come out of a decoder sorted by key.
 *
 * Every struct owns its strings; *_release frees them and zeroes the struct (safe on a zeroed one). */
#ifndef OTTER_WIRE_H
#define OTTER_WIRE_H

#include "otter/buf.h"
#include "otter/hash.h"
#include "otter/key.h"

/* The context of the device's signature over the exact bytes of an auth request body
 * (ot_sign/ot_sign_verify). The signature travels base64 in OT_WIRE_SIGNATURE_HEADER. */
#define OT_WIRE_AUTH_CONTEXT "otter-device-auth-v1"
#define OT_WIRE_SIGNATURE_HEADER "X-Otter-Signature"

#define OT_WIRE_BODY_MAX (256 * 1024)   /* bytes of any request or response body but: */
/* bytes of a check-in response: it carries a manifest (up to OT_MANIFEST_MAX, 1 MiB) and its
 * signatures (up to OT_SIG_FILE_MAX) as JSON strings, which escaping may double. */
#define OT_WIRE_CHECKIN_RESP_MAX (2 * 1024 * 1024 + 64 * 1024)
#define OT_WIRE_KEY_MAX 64               /* bytes of identity, provides and attribute keys */
#define OT_WIRE_VALUE_MAX 1024           /* bytes of identity, provides and attribute values */
#define OT_WIRE_IDENTITY_MAX 16          /* identity entries */
#define OT_WIRE_LIST_MAX 128             /* installed payloads, provides, attributes */
#define OT_WIRE_DEVICE_TYPE_MAX 64       /* bytes including NUL */
#define OT_WIRE_TOKEN_MAX 128            /* bytes including NUL */
#define OT_WIRE_MESSAGE_MAX 1024         /* bytes of a status message */
#define OT_WIRE_LOG_MAX 65536            /* bytes of log lines in one report */
#define OT_WIRE_URL_MAX 2048
#define OT_WIRE_POLL_MAX (7 * 24 * 3600) /* seconds: poll_interval and retry_after */

/* Keys (identity, provides, attributes): 1..64 bytes of [A-Za-z0-9_.:-]. Values: valid UTF-8
 * without control characters, 0..1024 bytes. Device types: ot_name_is_safe, < 64 bytes. */
bool ot_wire_key_is_valid(const char *key);
bool ot_wire_value_is_valid(const char *value);

struct ot_wire_kv {
    char *key;
    char *value;         /* inventory only: NULL means "delete this attribute" */
};

/* ---- POST /api/device/v1/auth ---------------------------------------------------------------- */

/* {"identity":{"mac":"..."},"public_key":"<base64>","device_type":"gw-2",
 *  "enrollment_token":"otr_..."}; identity has 1..16 entries; device_type may be "" (unknown yet);
 * enrollment_token is omitted when empty. */
struct ot_wire_auth_req {
    struct ot_wire_kv *identity;
    size_t nidentity;
    uint8_t public_key[OT_SIGN_PK_LEN];
    char device_type[OT_WIRE_DEVICE_TYPE_MAX];
    char enrollment_token[OT_WIRE_TOKEN_MAX];
};
/* The identity as canonical JSON text (sorted keys), as the server stores and shows it; malloc'd. */
enum ot_err ot_wire_identity_json(const struct ot_wire_auth_req *r, char **ret) OT_MUST_CHECK;

enum ot_wire_auth_status {
    OT_WIRE_AUTH_ACCEPTED = 1, /* 200, token set */
    OT_WIRE_AUTH_PENDING,      /* 202: an operator has not accepted the device yet; retry later */
};
/* {"status":"accepted","device_id":7,"token":"otd_...","expires_in":3600}
 * {"status":"pending","device_id":7,"retry_after":60}
 * (A rejected or decommissioned device gets 403 with the usual error body.) device_id >= 1; tokens
 * are 1..127 printable ASCII characters without blanks (they go into an HTTP header); the fields
 * of the other status must be zero when encoding and are ignored when decoding. */
struct ot_wire_auth_resp {
    enum ot_wire_auth_status status;
    int64_t device_id;
    char token[OT_WIRE_TOKEN_MAX];   /* accepted only */
    uint32_t expires_in;             /* seconds, accepted only */
    uint32_t retry_after;            /* seconds, pending only, 1..OT_WIRE_POLL_MAX */
};

/* ---- POST /api/device/v1/checkin ------------------------------------------------------------- */

/* What is installed, per payload name: {"rootfs":{"version":"1.2","sha256":"<64 hex>"}}. */
struct ot_wire_installed {
    char *name;                      /* ot_name_is_safe */
    char *version;                   /* 1..255 printable bytes */
    bool has_sha256;
    uint8_t sha256[OT_SHA256_LEN];
};

/* {"device_type":"gw-2","installed":{...},"provides":{"rootfs.version":"1.2"}}: installed and
 * provides are always written, "{}" when empty. */
struct ot_wire_checkin_req {
    char device_type[OT_WIRE_DEVICE_TYPE_MAX];   /* required, non-empty */
    struct ot_wire_installed *installed;
    size_t ninstalled;
    struct ot_wire_kv *provides;
    size_t nprovides;
};

/* How the device treats a deployment (the rollout policy's "type"):
 *  FORCED         download, verify, install, as soon as the server allows the install;
 *  SOFT           the same, but the device may postpone the install (otter-agent asks its
 *                 consent hook, docs/agent.md) and reports WAITING meanwhile;
 *  DOWNLOAD_ONLY  download and verify only, keep the file, report SUCCESS ("downloaded"); a later
 *                 deployment of the same artifact installs it without downloading again. */
enum ot_wire_deploy_type {
    OT_WIRE_TYPE_FORCED = 0,
    OT_WIRE_TYPE_SOFT,
    OT_WIRE_TYPE_DOWNLOAD_ONLY,
    OT_WIRE_TYPE__MAX
};
/* "forced", "soft", "download_only"; NULL out of range. */
const char *ot_wire_deploy_type_name(enum ot_wire_deploy_type t);

enum ot_wire_action {
    OT_WIRE_ACTION_NONE = 1,     /* nothing to do: poll again after poll_interval +- jitter */
    OT_WIRE_ACTION_INSTALL,      /* download the artifact, verify, install, report */
};

/* Nothing to do: {"action":"none","poll_interval":300,"poll_jitter":30}
 * Work:          {"action":"install","poll_interval":..,"poll_jitter":..,
 *                 "deployment":{"id":12,"artifact":{"name":"..","version":"..","size":N,
 *                 "sha256":"<hex of the whole artifact file>","manifest":"<manifest.json text>",
 *                 "signatures":"<manifest.sig text>"},"download":["<url>", ...],
 *                 "type":"soft","install_allowed":false}}
 * "type" is written unless FORCED (absent: forced); "install_allowed":false only when the server
 * holds the install (a maintenance window is closed): the device may download and verify, then
 * reports WAITING and asks again at its next check-in (absent: true).
 * The manifest and signatures let a device verify and decide before it downloads; the download URLs
 * (1..4, tried in order; relative ones are relative to the server URL) serve the artifact file.
 * With action "none" the deployment fields must be zero/NULL when encoding; a decoder ignores a
 * "deployment" there. */
struct ot_wire_checkin_resp {
    enum ot_wire_action action;
    uint32_t poll_interval;          /* seconds, 1..OT_WIRE_POLL_MAX */
    uint32_t poll_jitter;            /* seconds, <= poll_interval */
    /* action == INSTALL: */
    int64_t deployment_id;
    char *artifact_name, *artifact_version;
    uint64_t artifact_size;
    uint8_t artifact_sha256[OT_SHA256_LEN];
    char *manifest;                  /* exact text, 1..OT_MANIFEST_MAX bytes; the device checks it
                                        against signatures */
    char *signatures;                /* exact manifest.sig text, 1..OT_SIG_FILE_MAX bytes */
    char **download;                 /* 1..4 URLs, 1..OT_WIRE_URL_MAX printable ASCII bytes */
    size_t ndownload;
    enum ot_wire_deploy_type type;
    bool install_held;               /* "install_allowed": false */
};

/* ---- POST /api/device/v1/deployments/{id}/status --------------------------------------------- */

/* The states of a device in a deployment, with their wire names. A device reports DOWNLOADING to
 * ROLLED_BACK and WAITING; the server sets PENDING, CANCELLED and SKIPPED. Values match otterd's
 * store. */
enum ot_wire_status {
    OT_WIRE_PENDING = 1,
    OT_WIRE_DOWNLOADING,
    OT_WIRE_INSTALLING,
    OT_WIRE_REBOOTING,
    OT_WIRE_VERIFYING,
    OT_WIRE_SUCCESS,
    OT_WIRE_FAILURE,
    OT_WIRE_ROLLED_BACK,
    OT_WIRE_CANCELLED,
    OT_WIRE_SKIPPED,
    OT_WIRE_WAITING,             /* downloaded and verified, waiting to install (the server holds
                                    the install, or the device postponed a soft update); not final */
    OT_WIRE_STATUS__MAX
};
/* "pending", "downloading", ..., "rolled_back", "cancelled", "skipped", "waiting"; NULL out of
 * range. */
const char *ot_wire_status_name(enum ot_wire_status s);
/* OT_ERR_FORMAT for an unknown name. */
enum ot_err ot_wire_status_parse(const char *name, enum ot_wire_status *ret) OT_MUST_CHECK;
bool ot_wire_status_is_final(enum ot_wire_status s);

/* {"status":"downloading","progress":42,"message":"...","log":"line\nline\n"}: status must be one a
 * device reports (DOWNLOADING..ROLLED_BACK); progress 0..100 or absent (-1); message and log may
 * be absent (""/NULL). */
struct ot_wire_status_report {
    enum ot_wire_status status;
    int progress;
    char *message;                   /* "" when absent */
    char *log;                       /* NULL when absent */
};

/* ---- PATCH /api/device/v1/inventory ---------------------------------------------------------- */

/* {"attributes":{"os":"Debian 12","free_kb":"1234","old":null},"replace":false}: values are
 * strings; null deletes (merge mode only); replace=true sets the whole attribute set. At most
 * OT_WIRE_LIST_MAX entries. Both fields are always written. */
struct ot_wire_inventory {
    struct ot_wire_kv *attrs;
    size_t nattrs;
    bool replace;
};

/* ---- encode / decode -------------------------------------------------------------------------- */

enum ot_err ot_wire_auth_req_encode(const struct ot_wire_auth_req *r, struct ot_buf *out,
                                    struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_auth_req_decode(const uint8_t *buf, size_t len, struct ot_wire_auth_req *ret,
                                    struct ot_diag *d) OT_MUST_CHECK;
void ot_wire_auth_req_release(struct ot_wire_auth_req *r);

enum ot_err ot_wire_auth_resp_encode(const struct ot_wire_auth_resp *r, struct ot_buf *out,
                                     struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_auth_resp_decode(const uint8_t *buf, size_t len, struct ot_wire_auth_resp *ret,
                                     struct ot_diag *d) OT_MUST_CHECK;

enum ot_err ot_wire_checkin_req_encode(const struct ot_wire_checkin_req *r, struct ot_buf *out,
                                       struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_checkin_req_decode(const uint8_t *buf, size_t len,
                                       struct ot_wire_checkin_req *ret, struct ot_diag *d)
    OT_MUST_CHECK;
void ot_wire_checkin_req_release(struct ot_wire_checkin_req *r);
/* The installed set as canonical JSON text, as the server stores it ("{}" when empty); malloc'd. */
enum ot_err ot_wire_installed_json(const struct ot_wire_checkin_req *r, char **ret) OT_MUST_CHECK;

enum ot_err ot_wire_checkin_resp_encode(const struct ot_wire_checkin_resp *r, struct ot_buf *out,
                                        struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_checkin_resp_decode(const uint8_t *buf, size_t len,
                                        struct ot_wire_checkin_resp *ret, struct ot_diag *d)
    OT_MUST_CHECK;
void ot_wire_checkin_resp_release(struct ot_wire_checkin_resp *r);

enum ot_err ot_wire_status_report_encode(const struct ot_wire_status_report *r, struct ot_buf *out,
                                         struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_status_report_decode(const uint8_t *buf, size_t len,
                                         struct ot_wire_status_report *ret, struct ot_diag *d)
    OT_MUST_CHECK;
void ot_wire_status_report_release(struct ot_wire_status_report *r);

enum ot_err ot_wire_inventory_encode(const struct ot_wire_inventory *r, struct ot_buf *out,
                                     struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_wire_inventory_decode(const uint8_t *buf, size_t len, struct ot_wire_inventory *ret,
                                     struct ot_diag *d) OT_MUST_CHECK;
void ot_wire_inventory_release(struct ot_wire_inventory *r);

#endif
