/* Keys: Ed25519 signing keys (release keys) and X25519 box keys (device-class keys that encrypted
 * artifacts are sealed to). Both libsodium.
 *
 * Key files are small JSON documents (mode 0600 for secret keys):
 *   {"otter_key":1,"type":"ed25519-secret","key_id":"<16 hex>","name":"alice",
 *    "public_key":"<base64>","secret_key":"<base64>"}
 * type is one of ed25519-secret, ed25519-public, x25519-secret, x25519-public. The key id is the first
 * 8 bytes of SHA-256(public key) in hex; a file whose key_id does not match its key is rejected. */
#ifndef OTTER_KEY_H
#define OTTER_KEY_H

#include "otter/buf.h"

#define OT_KEY_ID_LEN 16          /* hex characters */
#define OT_KEY_ID_STRLEN 17       /* + NUL */
#define OT_KEY_NAME_MAX 64        /* bytes including NUL */
#define OT_KEY_FILE_MAX 4096      /* bytes: larger files are rejected unread */
#define OT_SIGN_PK_LEN 32
#define OT_SIGN_SK_LEN 64
#define OT_SIGNATURE_LEN 64
#define OT_BOX_PK_LEN 32
#define OT_BOX_SK_LEN 32

enum ot_key_type {
    OT_KEY_SIGN_SECRET,
    OT_KEY_SIGN_PUBLIC,
    OT_KEY_BOX_SECRET,
    OT_KEY_BOX_PUBLIC,
};

struct ot_key {
    enum ot_key_type type;
    char id[OT_KEY_ID_STRLEN];
    char name[OT_KEY_NAME_MAX];   /* free text for humans, printable ASCII, may be empty */
    uint8_t pk[32];
    uint8_t sk[64];               /* signing: 64 bytes (libsodium layout); box: first 32; public: zero */
};

/* Generates a new key pair of a *_SECRET type. name may be NULL. */
enum ot_err ot_key_generate(enum ot_key_type type, const char *name, struct ot_key *ret)
    OT_MUST_CHECK;
/* The public half of a secret key (same id and name). */
void ot_key_public(const struct ot_key *secret, struct ot_key *ret);
bool ot_key_is_secret(const struct ot_key *k);
bool ot_key_is_signing(const struct ot_key *k);
/* Computes the key id of a public key. */
void ot_key_id(const uint8_t pk[32], char out[OT_KEY_ID_STRLEN]);
const char *ot_key_type_name(enum ot_key_type type);
/* Key names are free text shown in terminals and logs: printable ASCII only (no escape sequences),
 * at most OT_KEY_NAME_MAX - 1 bytes. Trust files use the same rule. */
bool ot_key_name_is_valid(const char *name);

/* Parses a key file (untrusted bytes: fuzzed). Checks type, lengths, id, and for secret keys that
 * the public key matches the secret one. */
enum ot_err ot_key_parse(const uint8_t *buf, size_t len, struct ot_key *ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Serializes (JSON, trailing newline). public_only writes the public form of a secret key. */
enum ot_err ot_key_format(const struct ot_key *k, bool public_only, struct ot_buf *out) OT_MUST_CHECK;
enum ot_err ot_key_load(const char *path, struct ot_key *ret, struct ot_diag *d) OT_MUST_CHECK;
/* Atomic write; mode 0600 for secret keys, 0644 for public. Refuses to overwrite an existing file
 * (OT_ERR_EXISTS) unless overwrite is set. */
enum ot_err ot_key_save(const char *path, const struct ot_key *k, bool public_only, bool overwrite,
                        struct ot_diag *d) OT_MUST_CHECK;
/* Zeroes secret material (sodium_memzero). */
void ot_key_wipe(struct ot_key *k);

/* Ed25519 over a domain-separated message: sig = Sign(sk, context || 0x00 || msg). Contexts keep a
 * signature made for one purpose from being valid for another. */
enum ot_err ot_sign(const struct ot_key *sk, const char *context, const uint8_t *msg, size_t len,
                    uint8_t sig[OT_SIGNATURE_LEN]) OT_MUST_CHECK;
bool ot_sign_verify(const struct ot_key *pk, const char *context, const uint8_t *msg, size_t len,
                    const uint8_t sig[OT_SIGNATURE_LEN]);

#endif
