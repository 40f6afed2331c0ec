/* Device tokens (app.h): short-lived bearer tokens an accepted device gets from POST
 * /api/device/v1/auth, checked on every device request without the database:
 *
 *     "otd_" base64url( 0x01 | device id (8, big-endian) | expiry (8, big-endian, Unix s) | mac )
 *     mac = HMAC-SHA256(key, "otter-device-token-v1" | the 17 bytes before it)
 *
 * The key is 32 random bytes kept in the store's meta table, so every otterd instance sharing a
 * PostgreSQL store accepts the tokens of the others. A token carries no right beyond "this is
 * device N until T": whether device N may do anything is its status, checked per request. */
#include <sodium.h>

#include "app.h"
#include "otter/encoding.h"
#include "otter/log.h"

#define PREFIX "otd_"
#define CONTEXT "otter-device-token-v1"
#define BODY_LEN 17
#define RAW_LEN (BODY_LEN + crypto_auth_hmacsha256_BYTES)
#define META_KEY "device_token_key"

static void mac(const struct srv_app *app, const uint8_t body[BODY_LEN],
                uint8_t out[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, app->device_token_key, sizeof(app->device_token_key));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)CONTEXT, sizeof(CONTEXT) - 1);
    crypto_auth_hmacsha256_update(&st, body, BODY_LEN);
    crypto_auth_hmacsha256_final(&st, out);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void srv_devtoken_issue(const struct srv_app *app, int64_t device_id, int64_t expires_at,
                        char out[SRV_DEVICE_TOKEN_MAX])
{
    uint8_t raw[RAW_LEN];
    raw[0] = 1;
    put_be64(raw + 1, (uint64_t)device_id);
    put_be64(raw + 9, (uint64_t)expires_at);
    mac(app, raw, raw + BODY_LEN);
    memcpy(out, PREFIX, sizeof(PREFIX));
    sodium_bin2base64(out + sizeof(PREFIX) - 1, SRV_DEVICE_TOKEN_MAX - (sizeof(PREFIX) - 1), raw,
                      sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int64_t srv_devtoken_check(const struct srv_app *app, const char *text, int64_t now)
{
    uint8_t raw[RAW_LEN + 1], want[crypto_auth_hmacsha256_BYTES];
    size_t len = 0;
    const char *end = NULL;
    if (strncmp(text, PREFIX, sizeof(PREFIX) - 1) != 0)
        return 0;
    text += sizeof(PREFIX) - 1;
    if (sodium_base642bin(raw, sizeof(raw), text, strlen(text), NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        *end || len != RAW_LEN || raw[0] != 1)
        return 0;
    mac(app, raw, want);
    if (sodium_memcmp(want, raw + BODY_LEN, sizeof(want)) != 0)
        return 0;
    uint64_t id = get_be64(raw + 1), expires = get_be64(raw + 9);
    if (id == 0 || id > INT64_MAX || expires > INT64_MAX || (int64_t)expires <= now)
        return 0;
    return (int64_t)id;
}

enum ot_err srv_devtoken_init(struct srv_app *app, struct ot_diag *d)
{
    _cleanup_free_ char *text = NULL;
    enum ot_err err = srv_store_meta_get(app->store, META_KEY, &text, d);
    if (err == OT_ERR_NOENT) {
        char b64[64];
        randombytes_buf(app->device_token_key, sizeof(app->device_token_key));
        ot_base64_encode(app->device_token_key, sizeof(app->device_token_key), b64);
        err = srv_store_meta_set(app->store, META_KEY, b64, d);
        sodium_memzero(b64, sizeof(b64));
        if (!err)
            ot_log(OT_LOG_NOTICE, "first start: created the device token key");
        return err;
    }
    if (err)
        return err;
    if (ot_base64_decode_exact(text, app->device_token_key, sizeof(app->device_token_key)) !=
        OT_OK)
        err = ot_diag_set(d, OT_ERR_FORMAT, "the store's device token key is damaged");
    sodium_memzero(text, strlen(text));
    return err;
}
