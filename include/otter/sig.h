/* manifest.sig: the signatures over the exact bytes of manifest.json.
 *   {"otter_signatures":1,"signatures":[{"key_id":"<16 hex>","signature":"<base64 64 bytes>"}]}
 * Each signature is ot_sign(key, OT_SIG_CONTEXT, manifest bytes). Signatures are added one at a time
 * (multi-person control): people holding different keys sign the same manifest independently. */
#ifndef OTTER_SIG_H
#define OTTER_SIG_H

#include "otter/trust.h"

#define OT_SIG_CONTEXT "otter-manifest-v1"
#define OT_SIG_MAX 16
#define OT_SIG_FILE_MAX (16 * 1024)

struct ot_sig {
    char key_id[OT_KEY_ID_STRLEN];
    uint8_t sig[OT_SIGNATURE_LEN];
};

struct ot_sigset {
    size_t n;
    struct ot_sig sigs[OT_SIG_MAX];
};

/* What verification found, per signature, in file order. */
enum ot_sig_status {
    OT_SIG_VALID,     /* trusted key, signature good */
    OT_SIG_INVALID,   /* trusted key, signature bad */
    OT_SIG_UNKNOWN,   /* key not in the trust file */
    OT_SIG_DUPLICATE, /* a second signature by a key that already counted */
};

struct ot_sig_report {
    size_t n;
    struct {
        char key_id[OT_KEY_ID_STRLEN];
        char name[OT_KEY_NAME_MAX]; /* from the trust file, "" when unknown */
        enum ot_sig_status status;
    } entries[OT_SIG_MAX];
    unsigned valid;     /* distinct trusted keys with a good signature */
    unsigned threshold; /* what the trust file requires */
};

/* Parses manifest.sig (untrusted: fuzzed). Rejects more than OT_SIG_MAX entries, bad ids or
 * signature lengths, and unknown fields. An empty list is valid: an artifact packed without keys
 * (e.g. by a CI job that holds none) is signed later with ot_artifact_add_signature. */
enum ot_err ot_sigset_parse(const uint8_t *buf, size_t len, struct ot_sigset *ret,
                            struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_sigset_format(const struct ot_sigset *s, struct ot_buf *out) OT_MUST_CHECK;
/* Signs manifest bytes with a secret signing key and appends the signature. OT_ERR_EXISTS when this
 * key already signed, OT_ERR_LIMIT when the set is full. */
enum ot_err ot_sigset_add(struct ot_sigset *s, const struct ot_key *sk, const uint8_t *manifest,
                          size_t len, struct ot_diag *d) OT_MUST_CHECK;
/* Checks every signature against the trust set. OT_OK when at least trust->threshold distinct
 * trusted keys signed validly; otherwise OT_ERR_UNTRUSTED when no signature is from a trusted key,
 * or OT_ERR_SIGNATURE. The report is filled in every case (report may be NULL). */
enum ot_err ot_sigset_verify(const struct ot_sigset *s, const struct ot_trust *trust,
                             const uint8_t *manifest, size_t len, struct ot_sig_report *report,
                             struct ot_diag *d) OT_MUST_CHECK;

#endif
