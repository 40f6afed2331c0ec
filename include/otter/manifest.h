/* manifest.json: everything a device needs to decide whether to install an artifact and to verify
 * every byte of it. Decoded and encoded only here. The format is documented in
 * docs/artifact-format.md; parsing is strict (unknown fields, wrong types, out-of-range values and
 * duplicate keys are errors) because these bytes decide what a device runs. */
#ifndef OTTER_MANIFEST_H
#define OTTER_MANIFEST_H

#include <jansson.h>

#include "otter/buf.h"
#include "otter/crypt.h"
#include "otter/hash.h"
#include "otter/key.h"

#define OT_MANIFEST_FORMAT 1
#define OT_MANIFEST_MAX (1024 * 1024)      /* bytes of manifest.json */
#define OT_MANIFEST_PAYLOADS_MAX 128
#define OT_MANIFEST_LIST_MAX 64            /* device types, provides, depends, values, args */
#define OT_MANIFEST_RECIPIENTS_MAX 32
#define OT_MANIFEST_STR_MAX 255            /* versions, targets, provides values */
#define OT_MANIFEST_ARG_MAX 1024           /* handler argument values */
#define OT_MANIFEST_TYPE_MAX 32            /* install handler names */

enum ot_compression {
    OT_COMPRESSION_NONE,
    OT_COMPRESSION_ZSTD,
};

struct ot_kv {
    char *key;
    char *value;
};

/* A dependency: the device's provides[key] must equal one of values. */
struct ot_depend {
    char *key;
    char **values;
    size_t nvalues;
};

struct ot_recipient {
    char key_id[OT_KEY_ID_STRLEN];       /* id of the device-class box key */
    uint8_t sealed_key[OT_SEALED_KEY_LEN];
};

struct ot_payload {
    char *name;          /* ot_name_is_safe(); the entry is payload/<name> */
    char *type;          /* install handler: raw, file, archive, script or a module: [a-z0-9_-]{1,32} */
    char *target;        /* slot, path or module argument; "" when the handler needs none */
    char *version;       /* this file's own version */
    uint64_t size;                  /* installed (decoded) size */
    uint8_t sha256[OT_SHA256_LEN];  /* of the installed content */
    enum ot_compression compression;
    bool encrypted;
    bool has_delta_base;            /* reserved: delta payloads; format 1 readers refuse them */
    uint8_t delta_base_sha256[OT_SHA256_LEN];
    uint64_t stored_size;           /* bytes of payload/<name> in the artifact */
    uint8_t stored_sha256[OT_SHA256_LEN];
    struct ot_kv *args;             /* handler arguments */
    size_t nargs;
};

struct ot_manifest {
    uint64_t format;               /* OT_MANIFEST_FORMAT */
    char *name;                    /* ot_name_is_safe() */
    char *version;                 /* printable, no blanks, 1..64 */
    char **device_types;           /* 1..OT_MANIFEST_LIST_MAX safe names */
    size_t ndevice_types;
    uint64_t security_version;     /* anti-rollback: devices refuse lower than their stored minimum */
    struct ot_kv *provides;
    size_t nprovides;
    struct ot_depend *depends;
    size_t ndepends;
    struct ot_recipient *recipients; /* non-empty iff the artifact is encrypted */
    size_t nrecipients;
    struct ot_payload *payloads;   /* 1..OT_MANIFEST_PAYLOADS_MAX, in archive order */
    size_t npayloads;
};

/* Parses and validates (untrusted bytes: fuzzed). On error *ret is left empty. */
enum ot_err ot_manifest_parse(const uint8_t *buf, size_t len, struct ot_manifest *ret,
                              struct ot_diag *d) OT_MUST_CHECK;
/* Checks every rule the parser enforces, on a manifest built in memory. */
enum ot_err ot_manifest_validate(const struct ot_manifest *m, struct ot_diag *d) OT_MUST_CHECK;
/* Validates, then writes canonical JSON (compact, sorted keys, trailing newline): parse(format(m))
 * gives m back, and format is deterministic, so the same manifest always has the same signature. */
enum ot_err ot_manifest_format(const struct ot_manifest *m, struct ot_buf *out, struct ot_diag *d)
    OT_MUST_CHECK;
/* The manifest as a jansson object (new reference), same shape as the file. */
enum ot_err ot_manifest_to_json(const struct ot_manifest *m, json_t **ret) OT_MUST_CHECK;
/* Frees everything and leaves *m empty; safe on an empty manifest. */
void ot_manifest_release(struct ot_manifest *m);

/* Builders (copy their arguments). */
enum ot_err ot_manifest_set_str(char **field, const char *value) OT_MUST_CHECK;
enum ot_err ot_manifest_add_device_type(struct ot_manifest *m, const char *type) OT_MUST_CHECK;
enum ot_err ot_manifest_add_provide(struct ot_manifest *m, const char *key, const char *value)
    OT_MUST_CHECK;
/* values: "a|b|c" alternatives. */
enum ot_err ot_manifest_add_depend(struct ot_manifest *m, const char *key, const char *values)
    OT_MUST_CHECK;
/* Appends a zeroed payload and returns it (valid until the next add). */
enum ot_err ot_manifest_add_payload(struct ot_manifest *m, struct ot_payload **ret) OT_MUST_CHECK;
enum ot_err ot_payload_add_arg(struct ot_payload *p, const char *key, const char *value)
    OT_MUST_CHECK;

const struct ot_payload *ot_manifest_payload(const struct ot_manifest *m, const char *name);
const char *ot_compression_name(enum ot_compression c);

/* Device-side decision. OT_ERR_INCOMPATIBLE when device_type is not listed or a dependency is not
 * met by the device's provides; OT_ERR_ROLLBACK when security_version < min_security_version.
 * The message says which rule failed. */
enum ot_err ot_manifest_check_device(const struct ot_manifest *m, const char *device_type,
                                     const struct ot_kv *provides, size_t nprovides,
                                     uint64_t min_security_version, struct ot_diag *d)
    OT_MUST_CHECK;

#endif
