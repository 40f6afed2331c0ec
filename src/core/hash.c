/* SHA-256 through OpenSSL's EVP interface: libcrypto picks the SHA-NI / AVX2 code paths at run
 * time, several times faster than libsodium's portable SHA-256 on the payload sizes we hash. */
#include <openssl/evp.h>
#include <sodium.h>

#include "otter/hash.h"

enum ot_err ot_sha256_init(struct ot_sha256 *h)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return OT_ERR_NOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return OT_ERR_CRYPTO;
    }
    h->ctx = ctx;
    return OT_OK;
}

/* update and final cannot report errors (void in the contract). libcrypto's SHA-256 does not fail
 * once initialised, but if it ever did we fail closed: the context is dropped and final() then
 * yields a random digest, which matches no expected hash. */
void ot_sha256_update(struct ot_sha256 *h, const void *p, size_t n)
{
    if (!h->ctx || n == 0)
        return;
    if (EVP_DigestUpdate(h->ctx, p, n) != 1)
        ot_sha256_release(h);
}

void ot_sha256_final(struct ot_sha256 *h, uint8_t out[OT_SHA256_LEN])
{
    unsigned int len = 0;
    if (!h->ctx || EVP_DigestFinal_ex(h->ctx, out, &len) != 1 || len != OT_SHA256_LEN)
        randombytes_buf(out, OT_SHA256_LEN);
    ot_sha256_release(h);
}

void ot_sha256_release(struct ot_sha256 *h)
{
    EVP_MD_CTX_free(h->ctx); /* accepts NULL */
    h->ctx = NULL;
}

enum ot_err ot_sha256_buf(const void *p, size_t n, uint8_t out[OT_SHA256_LEN])
{
    unsigned int len = 0;
    /* EVP_Digest reports every failure, unlike the void update/final pair. */
    if (EVP_Digest(n ? p : "", n, out, &len, EVP_sha256(), NULL) != 1 || len != OT_SHA256_LEN)
        return OT_ERR_CRYPTO;
    return OT_OK;
}
