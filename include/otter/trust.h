/* A trust file: the release keys a verifier accepts and how many distinct ones must sign (k of n).
 *   {"otter_trust":1,"threshold":2,"keys":[{"key_id":"..","name":"alice","public_key":"<b64>"}]}
 * Keys must be Ed25519 public keys; ids must match the keys; no key may appear twice;
 * 1 <= threshold <= number of keys. */
#ifndef OTTER_TRUST_H
#define OTTER_TRUST_H

#include "otter/key.h"

#define OT_TRUST_MAX_KEYS 32
#define OT_TRUST_FILE_MAX (64 * 1024)

struct ot_trust {
    unsigned threshold;
    size_t nkeys;
    struct ot_key keys[OT_TRUST_MAX_KEYS]; /* OT_KEY_SIGN_PUBLIC */
};

enum ot_err ot_trust_parse(const uint8_t *buf, size_t len, struct ot_trust *ret, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err ot_trust_load(const char *path, struct ot_trust *ret, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_trust_format(const struct ot_trust *t, struct ot_buf *out) OT_MUST_CHECK;
/* Builds a trust set from public (or secret: the public half is used) signing keys. */
enum ot_err ot_trust_init(struct ot_trust *t, unsigned threshold, const struct ot_key *keys,
                          size_t nkeys, struct ot_diag *d) OT_MUST_CHECK;
/* The trusted key with this id, or NULL. */
const struct ot_key *ot_trust_find(const struct ot_trust *t, const char *key_id);

#endif
