/* Trust files: the release keys a verifier accepts and the k-of-n threshold. A trust file decides
 * which artifacts a device installs, so it is parsed as strictly as a manifest: exact fields,
 * ids that match their keys, no key twice (a duplicate would let one person count twice). */
#include <sodium.h>

#include "otter/file.h"
#include "otter/json.h"
#include "otter/trust.h"


/* Canonical encoding, on the curve, in the prime-order subgroup, not of small order. */
static bool sign_pk_is_valid(const uint8_t pk[OT_SIGN_PK_LEN])
{
    return sodium_init() >= 0 && crypto_core_ed25519_is_valid_point(pk) == 1;
}

/* Two entries with the same key, or (a 64-bit id prefix can be forced with ~2^32 work) different
 * keys with the same id: either would make "k distinct keys" ambiguous. Returns the earlier index
 * or nkeys when there is none. */
static size_t find_clash(const struct ot_key *keys, size_t nkeys, const struct ot_key *k)
{
    for (size_t i = 0; i < nkeys; i++)
        if (memcmp(keys[i].pk, k->pk, sizeof(k->pk)) == 0 || strcmp(keys[i].id, k->id) == 0)
            return i;
    return nkeys;
}

/* ---- parsing ---- */

static enum ot_err parse_entry_id(const json_t *e, const char *what, struct ot_key *k,
                                  struct ot_diag *d)
{
    const char *id = NULL;
    enum ot_err err = ot_json_get_str(e, "key_id", true, OT_KEY_ID_LEN, what, &id, d);
    if (err)
        return err;
    ot_key_id(k->pk, k->id);
    if (!k->id[0])
        return ot_diag_set(d, OT_ERR_NOMEM, "%s: cannot compute the key id", what);
    if (strcmp(id, k->id) != 0)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "%s: key_id does not match the public key (its id is %s)", what, k->id);
    return OT_OK;
}

static enum ot_err parse_entry(const json_t *e, const char *what, struct ot_key *k,
                               struct ot_diag *d)
{
    static const char *const fields[] = {"key_id", "name", "public_key", NULL};
    const char *name = "";
    *k = (struct ot_key){.type = OT_KEY_SIGN_PUBLIC};
    enum ot_err err = ot_json_only_keys(e, fields, what, d);
    if (!err)
        err = ot_json_get_str(e, "name", false, OT_KEY_NAME_MAX - 1, what, &name, d);
    if (!err && !ot_key_name_is_valid(name))
        err = ot_diag_set(d, OT_ERR_FORMAT, "%s: name must be printable ASCII", what);
    if (!err)
        err = ot_json_get_b64(e, "public_key", true, OT_SIGN_PK_LEN, what, k->pk, d);
    if (!err && !sign_pk_is_valid(k->pk))
        err = ot_diag_set(d, OT_ERR_FORMAT, "%s: public_key is not a valid Ed25519 key", what);
    if (!err)
        err = parse_entry_id(e, what, k, d);
    if (!err)
        memcpy(k->name, name, strlen(name) + 1);
    return err;
}

static enum ot_err parse_keys(const json_t *keys, struct ot_trust *t, struct ot_diag *d)
{
    size_t n = json_array_size(keys);
    if (!json_is_array(keys))
        return ot_diag_set(d, OT_ERR_FORMAT, "trust file: field 'keys' must be an array");
    if (n == 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "trust file: 'keys' is empty");
    if (n > OT_TRUST_MAX_KEYS)
        return ot_diag_set(d, OT_ERR_LIMIT, "trust file: %zu keys, at most %d are allowed", n,
                           OT_TRUST_MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        char what[48];
        struct ot_key *k = &t->keys[i];
        snprintf(what, sizeof(what), "trust file: key %zu", i + 1);
        enum ot_err err = parse_entry(json_array_get(keys, i), what, k, d);
        if (err)
            return err;
        size_t j = find_clash(t->keys, i, k);
        if (j < i)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s (%s) clashes with key %zu: same key or key id",
                               what, k->id, j + 1);
        t->nkeys = i + 1;
    }
    return OT_OK;
}

static enum ot_err parse_trust(const json_t *root, struct ot_trust *t, struct ot_diag *d)
{
    static const char *const fields[] = {"otter_trust", "threshold", "keys", NULL};
    uint64_t version = 0, threshold = 0;
    enum ot_err err = ot_json_only_keys(root, fields, "trust file", d);
    if (!err)
        err = ot_json_get_u64(root, "otter_trust", true, UINT64_MAX, "trust file", &version, d);
    if (!err && version != 1)
        err =
            ot_diag_set(d, OT_ERR_UNSUPPORTED, "trust file: version %llu is not supported (want 1)",
                        (unsigned long long)version);
    if (!err)
        err = ot_json_get_u64(root, "threshold", true, UINT64_MAX, "trust file", &threshold, d);
    if (!err && !json_object_get(root, "keys"))
        err = ot_diag_set(d, OT_ERR_FORMAT, "trust file: missing field 'keys'");
    if (!err)
        err = parse_keys(json_object_get(root, "keys"), t, d);
    if (err)
        return err;
    if (threshold < 1 || threshold > t->nkeys)
        return ot_diag_set(d, OT_ERR_FORMAT, "trust file: threshold %llu is not between 1 and %zu",
                           (unsigned long long)threshold, t->nkeys);
    t->threshold = (unsigned)threshold;
    return OT_OK;
}

enum ot_err ot_trust_parse(const uint8_t *buf, size_t len, struct ot_trust *ret, struct ot_diag *d)
{
    _cleanup_(json_decrefp) json_t *root = NULL;
    if (len > OT_TRUST_FILE_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "trust file: larger than %d bytes", OT_TRUST_FILE_MAX);
    enum ot_err err = ot_json_parse(buf, len, &root, d);
    if (err)
        return ot_diag_prefix(d, err, "trust file");
    _cleanup_free_ struct ot_trust *t = calloc(1, sizeof(*t));
    if (!t)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = parse_trust(root, t, d);
    if (!err)
        *ret = *t;
    return err;
}

enum ot_err ot_trust_load(const char *path, struct ot_trust *ret, struct ot_diag *d)
{
    struct ot_buf b;
    ot_buf_init(&b, OT_TRUST_FILE_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    if (!err) {
        err = ot_trust_parse(b.data, b.len, ret, d);
        if (err)
            ot_diag_prefix(d, err, "%s", path);
    }
    ot_buf_release(&b);
    return err;
}

/* ---- output ---- */

static bool trust_is_valid(const struct ot_trust *t)
{
    return t->nkeys >= 1 && t->nkeys <= OT_TRUST_MAX_KEYS && t->threshold >= 1 &&
           t->threshold <= t->nkeys;
}

static enum ot_err format_entry(const struct ot_key *k, json_t *arr)
{
    char id[OT_KEY_ID_STRLEN];
    json_t *e = json_object();
    if (!e || json_array_append_new(arr, e) != 0)
        return OT_ERR_NOMEM;
    if (!ot_key_is_signing(k) || !ot_key_name_is_valid(k->name))
        return OT_ERR_INVALID;
    ot_key_id(k->pk, id); /* recomputed: the file must verify against its own keys */
    if (!id[0])
        return OT_ERR_NOMEM;
    enum ot_err err = ot_json_set_str(e, "key_id", id);
    if (!err)
        err = ot_json_set_str(e, "name", k->name);
    if (!err)
        err = ot_json_set_b64(e, "public_key", k->pk, sizeof(k->pk));
    return err;
}

enum ot_err ot_trust_format(const struct ot_trust *t, struct ot_buf *out)
{
    if (!trust_is_valid(t))
        return OT_ERR_INVALID;
    _cleanup_(json_decrefp) json_t *root = json_object();
    json_t *arr = json_array();
    if (!root || !arr || json_object_set_new(root, "keys", arr) != 0)
        return OT_ERR_NOMEM;
    enum ot_err err = ot_json_set_u64(root, "otter_trust", 1);
    if (!err)
        err = ot_json_set_u64(root, "threshold", t->threshold);
    for (size_t i = 0; !err && i < t->nkeys; i++)
        err = format_entry(&t->keys[i], arr);
    if (!err)
        err = ot_json_dump_pretty(root, out);
    return err;
}

/* ---- building ---- */

static enum ot_err add_key(struct ot_trust *t, const struct ot_key *key, struct ot_diag *d)
{
    struct ot_key *k = &t->keys[t->nkeys];
    if (!ot_key_is_signing(key))
        return ot_diag_set(d, OT_ERR_INVALID,
                           "key %zu (%s) is a %s key, not an Ed25519 signing key", t->nkeys + 1,
                           key->id, ot_key_type_name(key->type));
    if (!ot_key_name_is_valid(key->name) || !sign_pk_is_valid(key->pk))
        return ot_diag_set(d, OT_ERR_INVALID, "key %zu: bad name or public key", t->nkeys + 1);
    ot_key_public(key, k);
    ot_key_id(k->pk, k->id);
    if (!k->id[0])
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot compute a key id");
    size_t j = find_clash(t->keys, t->nkeys, k);
    if (j < t->nkeys)
        return ot_diag_set(d, OT_ERR_INVALID, "key %zu (%s) is the same as key %zu", t->nkeys + 1,
                           k->id, j + 1);
    t->nkeys++;
    return OT_OK;
}

enum ot_err ot_trust_init(struct ot_trust *t, unsigned threshold, const struct ot_key *keys,
                          size_t nkeys, struct ot_diag *d)
{
    if (nkeys == 0)
        return ot_diag_set(d, OT_ERR_INVALID, "a trust set needs at least one key");
    if (nkeys > OT_TRUST_MAX_KEYS)
        return ot_diag_set(d, OT_ERR_LIMIT, "%zu keys, a trust set holds at most %d", nkeys,
                           OT_TRUST_MAX_KEYS);
    if (threshold < 1 || threshold > nkeys)
        return ot_diag_set(d, OT_ERR_RANGE, "threshold %u is not between 1 and %zu", threshold,
                           nkeys);
    _cleanup_free_ struct ot_trust *tmp = calloc(1, sizeof(*tmp));
    if (!tmp)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    tmp->threshold = threshold;
    for (size_t i = 0; i < nkeys; i++) {
        enum ot_err err = add_key(tmp, &keys[i], d);
        if (err)
            return err;
    }
    *t = *tmp;
    return OT_OK;
}

const struct ot_key *ot_trust_find(const struct ot_trust *t, const char *key_id)
{
    if (!key_id)
        return NULL;
    for (size_t i = 0; i < t->nkeys && i < OT_TRUST_MAX_KEYS; i++)
        if (strcmp(t->keys[i].id, key_id) == 0)
            return &t->keys[i];
    return NULL;
}
