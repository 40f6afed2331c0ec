/* Ed25519 signing keys and X25519 box keys (libsodium), their key files, and domain-separated
 * signatures.
 *
 * Secret material: every copy this file makes (stack structs, base64 text, the file buffer, the
 * strings jansson allocated while parsing) is wiped with sodium_memzero before it is released.
 * Buffers that receive secrets are reserved at their final size first, so realloc never leaves an
 * unwiped copy behind. Diagnostics never quote key-file contents (see clean_json_error). */
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>

#include "otter/encoding.h"
#include "otter/file.h"
#include "otter/hash.h"
#include "otter/json.h"
#include "otter/key.h"

/* ot_sign copies context || 0x00 || msg into one buffer (pure Ed25519 needs the whole message
 * twice). Signed documents are small: manifests are at most 1 MiB, trust files 64 KiB. */
#define SIGN_MSG_MAX (16u * 1024 * 1024)
#define SIGN_CONTEXT_MAX 64
#define TYPE_NAME_MAX 32
/* A formatted key file is at most ~400 bytes (name escaped to <= 126, base64 <= 88). */
#define KEY_TEXT_MAX 512

static const char *const type_names[] = {
    [OT_KEY_SIGN_SECRET] = "ed25519-secret",
    [OT_KEY_SIGN_PUBLIC] = "ed25519-public",
    [OT_KEY_BOX_SECRET] = "x25519-secret",
    [OT_KEY_BOX_PUBLIC] = "x25519-public",
};

static bool type_is_valid(enum ot_key_type type)
{
    return (unsigned)type < OT_ARRAY_SIZE(type_names);
}

static enum ot_err sodium_ready(void)
{
    /* 0: initialised now, 1: already initialised, -1: no usable randomness or CPU setup. */
    return sodium_init() < 0 ? OT_ERR_CRYPTO : OT_OK;
}

static void buf_wipe_release(struct ot_buf *b)
{
    if (b->data)
        sodium_memzero(b->data, b->cap);
    ot_buf_release(b);
}

/* Key names are free text for humans, shown in terminals and logs: printable ASCII only, so they
 * can carry no escape sequences, and at most OT_KEY_NAME_MAX - 1 bytes. */
bool ot_key_name_is_valid(const char *name)
{
    size_t len = strnlen(name, OT_KEY_NAME_MAX);
    if (len >= OT_KEY_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x20 || name[i] > 0x7e)
            return false;
    return true;
}

static size_t secret_len(enum ot_key_type type)
{
    switch (type) {
    case OT_KEY_SIGN_SECRET:
        return OT_SIGN_SK_LEN;
    case OT_KEY_BOX_SECRET:
        return OT_BOX_SK_LEN;
    default:
        return 0;
    }
}

const char *ot_key_type_name(enum ot_key_type type)
{
    return type_is_valid(type) ? type_names[type] : "unknown";
}

bool ot_key_is_secret(const struct ot_key *k)
{
    return k->type == OT_KEY_SIGN_SECRET || k->type == OT_KEY_BOX_SECRET;
}

bool ot_key_is_signing(const struct ot_key *k)
{
    return k->type == OT_KEY_SIGN_SECRET || k->type == OT_KEY_SIGN_PUBLIC;
}

static enum ot_err compute_id(const uint8_t pk[32], char out[OT_KEY_ID_STRLEN])
{
    uint8_t digest[OT_SHA256_LEN];
    enum ot_err err = ot_sha256_buf(pk, 32, digest);
    if (err)
        return err;
    ot_hex_encode(digest, OT_KEY_ID_LEN / 2, out);
    return OT_OK;
}

/* The contract gives no error return. Hashing 32 bytes fails only when libcrypto cannot allocate;
 * then the id is "", which equals no real id, so every comparison against it fails closed. */
void ot_key_id(const uint8_t pk[32], char out[OT_KEY_ID_STRLEN])
{
    if (compute_id(pk, out) != OT_OK)
        out[0] = '\0';
}

enum ot_err ot_key_generate(enum ot_key_type type, const char *name, struct ot_key *ret)
{
    if (type != OT_KEY_SIGN_SECRET && type != OT_KEY_BOX_SECRET)
        return OT_ERR_INVALID;
    if (name && !ot_key_name_is_valid(name))
        return OT_ERR_INVALID;
    enum ot_err err = sodium_ready();
    if (err)
        return err;
    struct ot_key k = {.type = type};
    int rc = type == OT_KEY_SIGN_SECRET ? crypto_sign_keypair(k.pk, k.sk)
                                        : crypto_box_keypair(k.pk, k.sk);
    err = rc != 0 ? OT_ERR_CRYPTO : compute_id(k.pk, k.id);
    if (!err) {
        if (name)
            memcpy(k.name, name, strlen(name) + 1);
        *ret = k;
    }
    sodium_memzero(&k, sizeof(k));
    return err;
}

void ot_key_public(const struct ot_key *secret, struct ot_key *ret)
{
    /* Built field by field (never a struct copy) so the secret half is not duplicated; works when
     * ret == secret. */
    struct ot_key pub = {0};
    switch (secret->type) {
    case OT_KEY_SIGN_SECRET:
        pub.type = OT_KEY_SIGN_PUBLIC;
        break;
    case OT_KEY_BOX_SECRET:
        pub.type = OT_KEY_BOX_PUBLIC;
        break;
    default:
        pub.type = secret->type;
        break;
    }
    memcpy(pub.id, secret->id, sizeof(pub.id));
    memcpy(pub.name, secret->name, sizeof(pub.name));
    memcpy(pub.pk, secret->pk, sizeof(pub.pk));
    *ret = pub;
}

void ot_key_wipe(struct ot_key *k)
{
    if (k)
        sodium_memzero(k->sk, sizeof(k->sk));
}

/* ---- key files: parsing ---- */

/* jansson's messages quote up to 20 bytes of the offending token (" near '...'"), which in a key
 * file can be part of a secret key: cut the message there. */
static void clean_json_error(char *msg)
{
    char *near = strstr(msg, " near '");
    if (near)
        *near = '\0';
}

/* Cleanup for a parsed key file: zero the secret key text jansson allocated, then free it all.
 * json_string_value() points at the string's own heap storage, which is writable. */
static void json_scrub_decref(json_t **p)
{
    if (!*p)
        return;
    json_t *s = json_object_get(*p, "secret_key");
    if (json_is_string(s))
        sodium_memzero((char *)json_string_value(s), json_string_length(s));
    json_decref(*p);
}

static enum ot_err parse_json(const uint8_t *buf, size_t len, json_t **ret, struct ot_diag *d)
{
    struct ot_diag jd = {0};
    enum ot_err err = ot_json_parse(buf, len, ret, &jd);
    if (err) {
        clean_json_error(jd.msg);
        return ot_diag_set(d, err, "key file: %s", jd.msg);
    }
    return OT_OK;
}

static enum ot_err parse_header(const json_t *root, enum ot_key_type *ret_type, struct ot_diag *d)
{
    static const char *const fields[] = {"otter_key",  "type",       "key_id", "name",
                                         "public_key", "secret_key", NULL};
    uint64_t version = 0;
    const char *type = NULL;
    enum ot_err err = ot_json_only_keys(root, fields, "key file", d);
    if (!err)
        err = ot_json_get_u64(root, "otter_key", true, UINT64_MAX, "key file", &version, d);
    if (err)
        return err;
    if (version != 1)
        return ot_diag_set(d, OT_ERR_UNSUPPORTED,
                           "key file: version %llu is not supported (want 1)",
                           (unsigned long long)version);
    err = ot_json_get_str(root, "type", true, TYPE_NAME_MAX, "key file", &type, d);
    if (err)
        return err;
    for (size_t i = 0; i < OT_ARRAY_SIZE(type_names); i++) {
        if (strcmp(type, type_names[i]) == 0) {
            *ret_type = (enum ot_key_type)i;
            return OT_OK;
        }
    }
    return ot_diag_set(d, OT_ERR_FORMAT,
                       "key file: unknown key type (want ed25519-secret, ed25519-public, "
                       "x25519-secret or x25519-public)");
}

static enum ot_err parse_name(const json_t *root, struct ot_key *k, struct ot_diag *d)
{
    const char *name = "";
    enum ot_err err =
        ot_json_get_str(root, "name", false, OT_KEY_NAME_MAX - 1, "key file", &name, d);
    if (err)
        return err;
    if (!ot_key_name_is_valid(name))
        return ot_diag_set(d, OT_ERR_FORMAT, "key file: name must be printable ASCII");
    memcpy(k->name, name, strlen(name) + 1);
    return OT_OK;
}

static enum ot_err parse_material(const json_t *root, struct ot_key *k, struct ot_diag *d)
{
    enum ot_err err = ot_json_get_b64(root, "public_key", true, 32, "key file", k->pk, d);
    if (err)
        return err;
    size_t sk_len = secret_len(k->type);
    if (sk_len)
        return ot_json_get_b64(root, "secret_key", true, sk_len, "key file", k->sk, d);
    if (json_object_get(root, "secret_key"))
        return ot_diag_set(d, OT_ERR_FORMAT, "key file: a public key has no field 'secret_key'");
    return OT_OK;
}

static enum ot_err check_id(const json_t *root, struct ot_key *k, struct ot_diag *d)
{
    const char *id = NULL;
    enum ot_err err = ot_json_get_str(root, "key_id", true, OT_KEY_ID_LEN, "key file", &id, d);
    if (err)
        return err;
    if (compute_id(k->pk, k->id) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "key file: cannot compute the key id");
    if (strcmp(id, k->id) != 0)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "key file: key_id does not match the public key (its id is %s)", k->id);
    return OT_OK;
}

/* An Ed25519 secret key in libsodium's layout is seed || public key. Regenerate both halves from
 * the seed: that checks the public_key field and the copy embedded in secret_key at once. */
static bool sign_secret_matches(const struct ot_key *k)
{
    uint8_t pk[OT_SIGN_PK_LEN], sk[OT_SIGN_SK_LEN];
    bool ok = crypto_sign_seed_keypair(pk, sk, k->sk) == 0 &&
              sodium_memcmp(sk, k->sk, sizeof(sk)) == 0 && memcmp(pk, k->pk, sizeof(pk)) == 0;
    sodium_memzero(sk, sizeof(sk));
    return ok;
}

static bool box_secret_matches(const struct ot_key *k)
{
    uint8_t pk[OT_BOX_PK_LEN];
    return crypto_scalarmult_base(pk, k->sk) == 0 && memcmp(pk, k->pk, sizeof(pk)) == 0;
}

/* X25519 with any clamped scalar gives the all-zero point (libsodium returns -1) exactly when the
 * public key lies in the small-order subgroup: such a key would make sealing to it meaningless. */
static bool box_public_is_valid(const uint8_t pk[OT_BOX_PK_LEN])
{
    static const uint8_t scalar[crypto_scalarmult_SCALARBYTES] = {1};
    uint8_t q[crypto_scalarmult_BYTES];
    return crypto_scalarmult(q, scalar, pk) == 0;
}

static enum ot_err check_material(const struct ot_key *k, struct ot_diag *d)
{
    switch (k->type) {
    case OT_KEY_SIGN_SECRET:
        if (!sign_secret_matches(k))
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "key file: public_key and secret_key do not belong together");
        return OT_OK;
    case OT_KEY_BOX_SECRET:
        if (!box_secret_matches(k))
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "key file: public_key and secret_key do not belong together");
        return OT_OK;
    case OT_KEY_SIGN_PUBLIC:
        /* Canonical encoding, on the curve, in the prime-order subgroup, not of small order. */
        if (crypto_core_ed25519_is_valid_point(k->pk) != 1)
            return ot_diag_set(d, OT_ERR_FORMAT, "key file: public_key is not a valid Ed25519 key");
        return OT_OK;
    case OT_KEY_BOX_PUBLIC:
        if (!box_public_is_valid(k->pk))
            return ot_diag_set(d, OT_ERR_FORMAT, "key file: public_key is not a valid X25519 key");
        return OT_OK;
    }
    return ot_diag_set(d, OT_ERR_INTERNAL, "key file: bad key type");
}

static enum ot_err parse_key(const json_t *root, struct ot_key *k, struct ot_diag *d)
{
    enum ot_err err = parse_header(root, &k->type, d);
    if (!err)
        err = parse_name(root, k, d);
    if (!err)
        err = parse_material(root, k, d);
    if (!err)
        err = check_id(root, k, d);
    if (!err)
        err = check_material(k, d);
    return err;
}

enum ot_err ot_key_parse(const uint8_t *buf, size_t len, struct ot_key *ret, struct ot_diag *d)
{
    _cleanup_(json_scrub_decref) json_t *root = NULL;
    struct ot_key k = {0};
    if (len > OT_KEY_FILE_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "key file: larger than %d bytes", OT_KEY_FILE_MAX);
    enum ot_err err = sodium_ready();
    if (err)
        return ot_diag_set(d, err, "libsodium initialisation failed");
    err = parse_json(buf, len, &root, d);
    if (!err)
        err = parse_key(root, &k, d);
    if (!err)
        *ret = k;
    sodium_memzero(&k, sizeof(k));
    return err;
}

/* ---- key files: output ---- */

/* Names are printable ASCII (checked), so only '"' and '\' need escaping. */
static void json_escape_name(const char *name, char out[2 * OT_KEY_NAME_MAX])
{
    size_t o = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '"' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o] = '\0';
}

/* Written by hand rather than through jansson so that no unwiped copy of the secret key is left
 * in freed heap memory. Field order follows the documented example. */
static enum ot_err format_key(const struct ot_key *k, enum ot_key_type type, const char *id,
                              struct ot_buf *out)
{
    char name[2 * OT_KEY_NAME_MAX];
    char pk[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    char sk[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)] = "";
    size_t sk_len = secret_len(type);
    json_escape_name(k->name, name);
    ot_base64_encode(k->pk, sizeof(k->pk), pk);
    if (sk_len)
        ot_base64_encode(k->sk, sk_len, sk);
    enum ot_err err = ot_buf_printf(
        out,
        "{\"otter_key\":1,\"type\":\"%s\",\"key_id\":\"%s\",\"name\":\"%s\",\"public_key\":\"%s\"",
        type_names[type], id, name, pk);
    if (!err && sk_len)
        err = ot_buf_printf(out, ",\"secret_key\":\"%s\"", sk);
    if (!err)
        err = ot_buf_append_str(out, "}\n");
    sodium_memzero(sk, sizeof(sk));
    return err;
}

enum ot_err ot_key_format(const struct ot_key *k, bool public_only, struct ot_buf *out)
{
    char id[OT_KEY_ID_STRLEN];
    if (!type_is_valid(k->type) || !ot_key_name_is_valid(k->name))
        return OT_ERR_INVALID;
    /* The id is recomputed, so a file can never carry one that does not match its key. */
    enum ot_err err = compute_id(k->pk, id);
    if (err)
        return err;
    enum ot_key_type type = k->type;
    if (public_only && type == OT_KEY_SIGN_SECRET)
        type = OT_KEY_SIGN_PUBLIC;
    else if (public_only && type == OT_KEY_BOX_SECRET)
        type = OT_KEY_BOX_PUBLIC;
    size_t start = out->len;
    /* Reserve the whole text first (or as much as out may hold: more fails with OT_ERR_LIMIT
     * before any realloc), so no partial copy of the secret is left in freed memory. */
    err = ot_buf_reserve(out, OT_MIN((size_t)KEY_TEXT_MAX, out->max - out->len));
    if (!err)
        err = format_key(k, type, id, out);
    if (err && out->data) {
        sodium_memzero(out->data + start, out->len - start);
        out->len = start;
        out->data[start] = '\0';
    }
    return err;
}

enum ot_err ot_key_load(const char *path, struct ot_key *ret, struct ot_diag *d)
{
    _cleanup_(buf_wipe_release) struct ot_buf b = {0};
    ot_buf_init(&b, OT_KEY_FILE_MAX);
    /* Full size up front: no realloc, so the wipe at cleanup reaches the only copy. */
    enum ot_err err = ot_buf_reserve(&b, OT_KEY_FILE_MAX);
    if (err)
        return ot_diag_set(d, err, "%s: out of memory", path);
    err = ot_file_read(path, &b, d);
    if (err)
        return err;
    err = ot_key_parse(b.data, b.len, ret, d);
    if (err)
        return ot_diag_prefix(d, err, "%s", path);
    return OT_OK;
}

static enum ot_err refuse_existing(const char *path, struct ot_diag *d)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return ot_diag_set(d, OT_ERR_EXISTS, "%s: already exists, refusing to overwrite it", path);
    if (errno != ENOENT)
        return ot_diag_errno(d, OT_ERR_IO, errno, "%s", path);
    return OT_OK;
}

static enum ot_err write_new(const char *path, const struct ot_buf *b, mode_t mode,
                             struct ot_diag *d)
{
    struct ot_atomic_file f;
    enum ot_err err = refuse_existing(path, d);
    if (!err)
        err = ot_atomic_file_open(&f, path, mode, d);
    if (err)
        return err;
    err = ot_write_all(f.fd, b->data, b->len, d);
    if (err) {
        ot_atomic_file_abort(&f);
        return ot_diag_prefix(d, err, "%s", path);
    }
    /* link(2) creates path only if nothing is there: a file that appeared since the check above
     * is never replaced, and the key appears with its full content. */
    return ot_atomic_file_commit_new(&f, d);
}

enum ot_err ot_key_save(const char *path, const struct ot_key *k, bool public_only, bool overwrite,
                        struct ot_diag *d)
{
    _cleanup_(buf_wipe_release) struct ot_buf b = {0};
    ot_buf_init(&b, OT_KEY_FILE_MAX);
    enum ot_err err = ot_key_format(k, public_only, &b);
    if (err)
        return ot_diag_set(d, err, "%s: cannot format the key: %s", path, ot_strerror(err));
    bool secret = ot_key_is_secret(k) && !public_only;
    mode_t mode = secret ? 0600 : 0644;
    if (overwrite)
        return ot_file_write_atomic(path, b.data, b.len, mode, d);
    return write_new(path, &b, mode, d);
}

/* ---- signatures ---- */

/* context || 0x00 || msg. The context has no NUL, so the 0x00 ends it unambiguously: no message
 * under one context can be read as a message under another. */
static enum ot_err frame(const char *context, const uint8_t *msg, size_t len, uint8_t **ret,
                         size_t *ret_len)
{
    size_t clen = context ? strnlen(context, SIGN_CONTEXT_MAX + 1) : 0;
    if (clen == 0 || clen > SIGN_CONTEXT_MAX || (len && !msg))
        return OT_ERR_INVALID;
    if (len > SIGN_MSG_MAX)
        return OT_ERR_LIMIT;
    uint8_t *m = malloc(clen + 1 + len);
    if (!m)
        return OT_ERR_NOMEM;
    memcpy(m, context, clen);
    m[clen] = 0;
    if (len)
        memcpy(m + clen + 1, msg, len);
    *ret = m;
    *ret_len = clen + 1 + len;
    return OT_OK;
}

enum ot_err ot_sign(const struct ot_key *sk, const char *context, const uint8_t *msg, size_t len,
                    uint8_t sig[OT_SIGNATURE_LEN])
{
    _cleanup_free_ uint8_t *m = NULL;
    size_t mlen = 0;
    if (sk->type != OT_KEY_SIGN_SECRET)
        return OT_ERR_INVALID;
    enum ot_err err = sodium_ready();
    if (!err)
        err = frame(context, msg, len, &m, &mlen);
    if (err)
        return err;
    uint8_t s[OT_SIGNATURE_LEN];
    if (crypto_sign_detached(s, NULL, m, mlen, sk->sk) != 0)
        return OT_ERR_CRYPTO;
    memcpy(sig, s, sizeof(s));
    return OT_OK;
}

bool ot_sign_verify(const struct ot_key *pk, const char *context, const uint8_t *msg, size_t len,
                    const uint8_t sig[OT_SIGNATURE_LEN])
{
    _cleanup_free_ uint8_t *m = NULL;
    size_t mlen = 0;
    if (!ot_key_is_signing(pk) || sodium_ready() != OT_OK)
        return false;
    if (frame(context, msg, len, &m, &mlen) != OT_OK)
        return false;
    /* libsodium rejects non-canonical S, small-order R and A: signatures are not malleable. */
    return crypto_sign_verify_detached(sig, m, mlen, pk->pk) == 0;
}
