/* manifest.sig: a list of Ed25519 signatures over the exact bytes of manifest.json, and the k-of-n
 * check against a trust set. Verification counts distinct trusted keys, never signatures: a
 * signature repeated under the same key id cannot help anyone reach the threshold. */
#include "otter/json.h"
#include "otter/sig.h"

/* Key ids are written by ot_key_id: exactly 16 lowercase hex digits. Other spellings of the same
 * id are refused so that one id has one textual form (comparisons are strcmp). */
static bool id_is_canonical(const char *id)
{
    size_t len = strlen(id);
    if (len != OT_KEY_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

/* ---- parsing ---- */

static enum ot_err parse_entry(const json_t *e, const char *what, struct ot_sig *s,
                               struct ot_diag *d)
{
    static const char *const fields[] = {"key_id", "signature", NULL};
    const char *id = NULL;
    enum ot_err err = ot_json_only_keys(e, fields, what, d);
    if (!err)
        err = ot_json_get_str(e, "key_id", true, OT_KEY_ID_LEN, what, &id, d);
    if (!err && !id_is_canonical(id))
        err = ot_diag_set(d, OT_ERR_FORMAT, "%s: key_id must be %d lowercase hex digits", what,
                          OT_KEY_ID_LEN);
    if (!err)
        err = ot_json_get_b64(e, "signature", true, OT_SIGNATURE_LEN, what, s->sig, d);
    if (!err)
        memcpy(s->key_id, id, OT_KEY_ID_STRLEN);
    return err;
}

static enum ot_err parse_list(const json_t *list, struct ot_sigset *s, struct ot_diag *d)
{
    size_t n = json_array_size(list);
    if (!json_is_array(list))
        return ot_diag_set(d, OT_ERR_FORMAT, "manifest.sig: field 'signatures' must be an array");
    if (n > OT_SIG_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "manifest.sig: %zu signatures, at most %d are allowed",
                           n, OT_SIG_MAX);
    for (size_t i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof(what), "manifest.sig: signature %zu", i + 1);
        enum ot_err err = parse_entry(json_array_get(list, i), what, &s->sigs[i], d);
        if (err)
            return err;
    }
    s->n = n;
    return OT_OK;
}

static enum ot_err parse_sigset(const json_t *root, struct ot_sigset *s, struct ot_diag *d)
{
    static const char *const fields[] = {"otter_signatures", "signatures", NULL};
    uint64_t version = 0;
    enum ot_err err = ot_json_only_keys(root, fields, "manifest.sig", d);
    if (!err)
        err = ot_json_get_u64(root, "otter_signatures", true, UINT64_MAX, "manifest.sig", &version,
                              d);
    if (!err && version != 1)
        err = ot_diag_set(d, OT_ERR_UNSUPPORTED,
                          "manifest.sig: version %llu is not supported (want 1)",
                          (unsigned long long)version);
    if (!err && !json_object_get(root, "signatures"))
        err = ot_diag_set(d, OT_ERR_FORMAT, "manifest.sig: missing field 'signatures'");
    if (!err)
        err = parse_list(json_object_get(root, "signatures"), s, d);
    return err;
}

enum ot_err ot_sigset_parse(const uint8_t *buf, size_t len, struct ot_sigset *ret,
                            struct ot_diag *d)
{
    _cleanup_(json_decrefp) json_t *root = NULL;
    struct ot_sigset s = {0};
    if (len > OT_SIG_FILE_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "manifest.sig: larger than %d bytes", OT_SIG_FILE_MAX);
    enum ot_err err = ot_json_parse(buf, len, &root, d);
    if (err)
        return ot_diag_prefix(d, err, "manifest.sig");
    err = parse_sigset(root, &s, d);
    if (!err)
        *ret = s;
    return err;
}

/* ---- output ---- */

static enum ot_err format_entry(const struct ot_sig *sig, json_t *arr)
{
    json_t *e = json_object();
    if (!e || json_array_append_new(arr, e) != 0)
        return OT_ERR_NOMEM;
    if (!id_is_canonical(sig->key_id))
        return OT_ERR_INVALID;
    enum ot_err err = ot_json_set_str(e, "key_id", sig->key_id);
    if (!err)
        err = ot_json_set_b64(e, "signature", sig->sig, OT_SIGNATURE_LEN);
    return err;
}

enum ot_err ot_sigset_format(const struct ot_sigset *s, struct ot_buf *out)
{
    /* An empty list is valid: an artifact packed without keys, to be signed later. */
    if (s->n > OT_SIG_MAX)
        return OT_ERR_INVALID;
    _cleanup_(json_decrefp) json_t *root = json_object();
    json_t *arr = json_array();
    if (!root || !arr || json_object_set_new(root, "signatures", arr) != 0)
        return OT_ERR_NOMEM;
    enum ot_err err = ot_json_set_u64(root, "otter_signatures", 1);
    for (size_t i = 0; !err && i < s->n; i++)
        err = format_entry(&s->sigs[i], arr);
    if (!err)
        err = ot_json_dump(root, out);
    return err;
}

/* ---- signing ---- */

enum ot_err ot_sigset_add(struct ot_sigset *s, const struct ot_key *sk, const uint8_t *manifest,
                          size_t len, struct ot_diag *d)
{
    char id[OT_KEY_ID_STRLEN];
    uint8_t sig[OT_SIGNATURE_LEN];
    if (sk->type != OT_KEY_SIGN_SECRET)
        return ot_diag_set(d, OT_ERR_INVALID, "key %s is a %s key: signing needs an %s key", sk->id,
                           ot_key_type_name(sk->type), ot_key_type_name(OT_KEY_SIGN_SECRET));
    ot_key_id(sk->pk, id);
    if (!id[0])
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot compute the key id");
    for (size_t i = 0; i < s->n && i < OT_SIG_MAX; i++)
        if (strcmp(s->sigs[i].key_id, id) == 0)
            return ot_diag_set(d, OT_ERR_EXISTS, "key %s (%s) has already signed", id, sk->name);
    if (s->n >= OT_SIG_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "already %d signatures, the most a manifest can carry",
                           OT_SIG_MAX);
    enum ot_err err = ot_sign(sk, OT_SIG_CONTEXT, manifest, len, sig);
    if (err)
        return ot_diag_set(d, err, "signing with key %s failed: %s", id, ot_strerror(err));
    memcpy(s->sigs[s->n].key_id, id, sizeof(id));
    memcpy(s->sigs[s->n].sig, sig, sizeof(sig));
    s->n++;
    return OT_OK;
}

/* ---- verification ---- */

/* Whether an earlier signature already counted for this trusted key. */
static bool already_counted(const struct ot_sig_report *r, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (r->entries[j].status == OT_SIG_VALID &&
            strcmp(r->entries[j].key_id, r->entries[i].key_id) == 0)
            return true;
    return false;
}

/* Statuses in file order. A bad signature is reported INVALID even when its key already counted:
 * tampering is worth seeing. A good one from a key that already counted is a DUPLICATE. */
static void check_one(const struct ot_sig *sig, const struct ot_trust *trust,
                      const uint8_t *manifest, size_t len, struct ot_sig_report *r, size_t i)
{
    const struct ot_key *k = ot_trust_find(trust, sig->key_id);
    memcpy(r->entries[i].key_id, sig->key_id, OT_KEY_ID_STRLEN);
    r->entries[i].key_id[OT_KEY_ID_LEN] = '\0';
    r->entries[i].name[0] = '\0';
    if (!k) {
        r->entries[i].status = OT_SIG_UNKNOWN;
        return;
    }
    memcpy(r->entries[i].name, k->name, OT_KEY_NAME_MAX);
    r->entries[i].name[OT_KEY_NAME_MAX - 1] = '\0';
    if (!ot_sign_verify(k, OT_SIG_CONTEXT, manifest, len, sig->sig))
        r->entries[i].status = OT_SIG_INVALID;
    else if (already_counted(r, i))
        r->entries[i].status = OT_SIG_DUPLICATE;
    else {
        r->entries[i].status = OT_SIG_VALID;
        r->valid++;
    }
}

static const char *status_label(enum ot_sig_status st)
{
    switch (st) {
    case OT_SIG_VALID:
        return "valid: ";
    case OT_SIG_INVALID:
        return "invalid signature: ";
    case OT_SIG_UNKNOWN:
        return "unknown key ";
    case OT_SIG_DUPLICATE:
        return "duplicate: ";
    }
    return "? ";
}

/* "valid: alice 1a2b3c4d5e6f7a8b; unknown key 9f8e7d6c5b4a3f2e" (truncated to fit). */
static void describe(const struct ot_sig_report *r, char *out, size_t size)
{
    size_t pos = 0;
    out[0] = '\0';
    if (r->n == 0)
        snprintf(out, size, "no signatures");
    for (size_t i = 0; i < r->n && pos < size; i++) {
        int w = snprintf(out + pos, size - pos, "%s%s%s%s%s", i ? "; " : "",
                         status_label(r->entries[i].status), r->entries[i].name,
                         r->entries[i].name[0] ? " " : "", r->entries[i].key_id);
        if (w < 0)
            break;
        pos += (size_t)w;
    }
}

enum ot_err ot_sigset_verify(const struct ot_sigset *s, const struct ot_trust *trust,
                             const uint8_t *manifest, size_t len, struct ot_sig_report *report,
                             struct ot_diag *d)
{
    struct ot_sig_report local;
    struct ot_sig_report *r = report ? report : &local;
    *r = (struct ot_sig_report){.threshold = trust->threshold};
    if (s->n > OT_SIG_MAX)
        return ot_diag_set(d, OT_ERR_INVALID, "signature set holds %zu entries (max %d)", s->n,
                           OT_SIG_MAX);
    bool any_trusted = false;
    for (size_t i = 0; i < s->n; i++) {
        check_one(&s->sigs[i], trust, manifest, len, r, i);
        any_trusted |= r->entries[i].status != OT_SIG_UNKNOWN;
    }
    r->n = s->n;
    /* A threshold of 0 (a trust set not built by ot_trust_parse/init) must not accept anything. */
    if (trust->threshold >= 1 && r->valid >= trust->threshold)
        return OT_OK;
    char detail[OT_DIAG_MSG_MAX];
    describe(r, detail, sizeof(detail));
    /* Unsigned is a missing signature, not an untrusted one. */
    return ot_diag_set(d, any_trusted || s->n == 0 ? OT_ERR_SIGNATURE : OT_ERR_UNTRUSTED,
                       "%u of %u required signatures (%s)", r->valid, trust->threshold, detail);
}
