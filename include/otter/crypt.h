/* Payload encryption.
 *
 * An encrypted artifact has one random 32-byte content key. It is sealed (crypto_box_seal: X25519 +
 * XSalsa20-Poly1305, anonymous sender) to each recipient device-class public key, and the sealed
 * copies sit in the signed manifest. Each payload is encrypted with libsodium's secretstream
 * (XChaCha20-Poly1305) under the content key:
 *
 *   stored = header (24 bytes) || chunk_1 || ... || chunk_k
 *
 * each chunk the encryption of OT_CRYPT_CHUNK plaintext bytes (the last one 0..OT_CRYPT_CHUNK bytes,
 * tagged FINAL) plus 17 bytes of tag; every chunk authenticates the payload name as additional
 * data, so chunks cannot be moved between payloads, reordered, dropped or truncated undetected. */
#ifndef OTTER_CRYPT_H
#define OTTER_CRYPT_H

#include "otter/codec.h"
#include "otter/key.h"

#define OT_CONTENT_KEY_LEN 32
#define OT_SEALED_KEY_LEN 80 /* 32 + crypto_box_SEALBYTES */
#define OT_CRYPT_HEADER_LEN 24
#define OT_CRYPT_CHUNK 65536
#define OT_CRYPT_ABYTES 17

enum ot_err ot_content_key_generate(uint8_t key[OT_CONTENT_KEY_LEN]) OT_MUST_CHECK;
/* Seals key to a box key (public or secret; its public half is used). */
enum ot_err ot_content_key_seal(const uint8_t key[OT_CONTENT_KEY_LEN], const struct ot_key *recipient,
                                uint8_t out[OT_SEALED_KEY_LEN]) OT_MUST_CHECK;
/* Opens a sealed key with a box secret key; OT_ERR_DECRYPT when it was not sealed to this key. */
enum ot_err ot_content_key_unseal(const uint8_t sealed[OT_SEALED_KEY_LEN],
                                  const struct ot_key *box_secret, uint8_t key[OT_CONTENT_KEY_LEN])
    OT_MUST_CHECK;

/* Encrypting stage; ad (the payload name) is authenticated with every chunk. key is copied. */
enum ot_err ot_sink_encrypt_new(const uint8_t key[OT_CONTENT_KEY_LEN], const char *ad,
                                struct ot_sink *next, struct ot_sink **ret) OT_MUST_CHECK;
/* Decrypting stage. A chunk that fails authentication → OT_ERR_DECRYPT; input ending before the
 * FINAL chunk → OT_ERR_TRUNCATED; bytes after it → OT_ERR_FORMAT when the FINAL chunk is full-size,
 * otherwise they merge into it and fail authentication (OT_ERR_DECRYPT): rejected either way.
 * Plaintext of a chunk is passed on only after that chunk authenticated. */
enum ot_err ot_sink_decrypt_new(const uint8_t key[OT_CONTENT_KEY_LEN], const char *ad,
                                struct ot_sink *next, struct ot_sink **ret) OT_MUST_CHECK;

/* Size of the stored (encrypted) form of plain_len plaintext bytes. */
uint64_t ot_crypt_stored_size(uint64_t plain_len);

#endif
