/* The pack spec: a config file (otter/config.h syntax) plus flags, validated completely before
 * any payload is read.
 *
 *     name = demo-firmware             top level: name, version, device_types, security_version
 *     [provides]                       any keys
 *     [depends]                        any keys, values "a|b"
 *     [payload "rootfs.img"]           file, type, target, version, compression, arg.<key>
 */
#include <sys/stat.h>

#include "otter/file.h"
#include "otter/path.h"
#include "pack_spec.h"

#define TOP(f) offsetof(struct tool_spec_top, f)
#define PF(f) offsetof(struct tool_spec_payload_fields, f)
#define ARG_PREFIX "arg."

/* The spec keys with fixed names: one table per section type (STYLE.md: key, type, range). */
static const struct ot_cfg_key top_keys[] = {
    {NULL, "name", OT_CFG_STRING, TOP(name), 1, OT_NAME_MAX, NULL, "artifact name"},
    {NULL, "version", OT_CFG_STRING, TOP(version), 1, 64, NULL, "artifact version"},
    {NULL, "device_types", OT_CFG_STRLIST, TOP(device_types), 0, 0, NULL,
     "compatible device types, comma-separated"},
    {NULL, "security_version", OT_CFG_U64, TOP(security_version), 0, INT64_MAX, NULL,
     "anti-rollback counter: devices refuse anything lower than their stored minimum"},
};

static const struct ot_cfg_key payload_keys[] = {
    {"payload", "file", OT_CFG_STRING, PF(file), 1, 4095, NULL,
     "input file, relative to the spec file's directory"},
    {"payload", "type", OT_CFG_STRING, PF(type), 1, OT_MANIFEST_TYPE_MAX, NULL,
     "install handler: raw, file, archive, script or a module name"},
    {"payload", "target", OT_CFG_STRING, PF(target), 0, OT_MANIFEST_STR_MAX, NULL,
     "slot, path or module argument"},
    {"payload", "version", OT_CFG_STRING, PF(version), 1, OT_MANIFEST_STR_MAX, NULL,
     "this file's version (default: the artifact version)"},
    {"payload", "compression", OT_CFG_STRING, PF(compression), 0, 16, NULL,
     "zstd (default) or none"},
};

static int key_index(const struct ot_cfg_key *table, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].key, key) == 0)
            return (int)i;
    return -1;
}

/* ---- lifecycle ---- */

static void kvlist_release(struct tool_kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].value);
    }
    free(l->v);
    *l = (struct tool_kvlist){0};
}

static void payload_release(struct tool_spec_payload *p)
{
    free(p->name);
    free(p->path);
    ot_cfg_release(payload_keys, OT_ARRAY_SIZE(payload_keys), &p->f);
    kvlist_release(&p->args);
    *p = (struct tool_spec_payload){0};
}

void tool_spec_init(struct tool_spec *s) { *s = (struct tool_spec){0}; }

void tool_spec_release(struct tool_spec *s)
{
    for (size_t i = 0; i < s->npayloads; i++)
        payload_release(&s->payloads[i]);
    free(s->payloads);
    free(s->dir);
    ot_cfg_release(top_keys, OT_ARRAY_SIZE(top_keys), &s->top);
    kvlist_release(&s->provides);
    kvlist_release(&s->depends);
    *s = (struct tool_spec){0};
}

/* ---- key/value lists ---- */

static struct ot_kv *kv_find(const struct tool_kvlist *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].key, key) == 0)
            return &l->v[i];
    return NULL;
}

/* Adds key = value; an existing key is replaced when override is set, an error otherwise. */
static enum ot_err kv_put(struct tool_kvlist *l, const char *key, const char *value,
                          bool override, struct ot_diag *d)
{
    struct ot_kv *kv = kv_find(l, key);
    if (kv && !override)
        return ot_diag_set(d, OT_ERR_CONFIG, "duplicate key '%s'", key);
    char *v = strdup(value);
    if (!v)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (kv) {
        free(kv->value);
        kv->value = v;
        return OT_OK;
    }
    struct ot_kv *nv = reallocarray(l->v, l->n + 1, sizeof(*nv));
    char *k = strdup(key);
    if (nv)
        l->v = nv;
    if (!nv || !k) {
        free(v);
        free(k);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    l->v[l->n++] = (struct ot_kv){k, v};
    return OT_OK;
}

/* ---- payloads ---- */

/* The input must exist and be a regular file (or a block device: an image straight from a
 * partition). Checked with stat only: nothing is read before the whole spec is valid. */
static enum ot_err resolve_file(const char *dir, const char *file, char **ret,
                                struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    if (file[0] == '/' || !dir || strcmp(dir, ".") == 0)
        path = strdup(file);
    else if (ot_path_join(dir, file, &path) != OT_OK)
        path = NULL;
    if (!path)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct stat st;
    if (stat(path, &st) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "file '%s'", path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return ot_diag_set(d, OT_ERR_CONFIG, "file '%s' is not a regular file", path);
    *ret = TAKE_PTR(path);
    return OT_OK;
}

/* Sets one key of a payload, from the spec (dir = its directory) or a --payload flag. */
static enum ot_err payload_set(struct tool_spec_payload *p, const char *dir, const char *key,
                               const char *value, struct ot_diag *d)
{
    if (strncmp(key, ARG_PREFIX, strlen(ARG_PREFIX)) == 0 && key[strlen(ARG_PREFIX)])
        return kv_put(&p->args, key + strlen(ARG_PREFIX), value, false, d);
    int i = key_index(payload_keys, OT_ARRAY_SIZE(payload_keys), key);
    if (i < 0)
        return ot_diag_set(d, OT_ERR_CONFIG, "unknown payload key '%s' (file, type, target, "
                           "version, compression, arg.NAME)", key);
    if (p->set & (1u << i))
        return ot_diag_set(d, OT_ERR_CONFIG, "duplicate key '%s'", key);
    enum ot_err err = ot_cfg_set(payload_keys, OT_ARRAY_SIZE(payload_keys), "payload", key, value,
                                 &p->f, d);
    if (err)
        return err;
    p->set |= 1u << i;
    if (strcmp(key, "compression") == 0 && strcmp(value, "zstd") != 0 &&
        strcmp(value, "none") != 0)
        return ot_diag_set(d, OT_ERR_CONFIG, "compression must be 'zstd' or 'none', not '%s'",
                           value);
    if (strcmp(key, "file") == 0)
        return resolve_file(dir, value, &p->path, d);
    return OT_OK;
}

static struct tool_spec_payload *payload_find(const struct tool_spec *s, const char *name)
{
    for (size_t i = 0; i < s->npayloads; i++)
        if (strcmp(s->payloads[i].name, name) == 0)
            return &s->payloads[i];
    return NULL;
}

static enum ot_err payload_name_ok(const char *name, struct ot_diag *d)
{
    if (!ot_name_is_safe(name, strlen(name)))
        return ot_diag_set(d, OT_ERR_CONFIG, "payload name '%s' is not a safe file name "
                           "(1..%d of A-Z a-z 0-9 . _ + -, not starting with '.' or '-')",
                           name, OT_NAME_MAX);
    return OT_OK;
}

/* Appends an empty payload called name. */
static enum ot_err payload_new(struct tool_spec *s, const char *name,
                               struct tool_spec_payload **ret, struct ot_diag *d)
{
    if (s->npayloads >= OT_MANIFEST_PAYLOADS_MAX)
        return ot_diag_set(d, OT_ERR_CONFIG, "more than %d payloads", OT_MANIFEST_PAYLOADS_MAX);
    struct tool_spec_payload *v = reallocarray(s->payloads, s->npayloads + 1, sizeof(*v));
    if (!v)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    s->payloads = v;
    struct tool_spec_payload *p = &v[s->npayloads];
    *p = (struct tool_spec_payload){.name = strdup(name)};
    if (!p->name)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    s->npayloads++;
    *ret = p;
    return OT_OK;
}

/* ---- the spec file ---- */

static enum ot_err top_set(struct tool_spec *s, const char *key, const char *value, bool override,
                           struct ot_diag *d)
{
    int i = key_index(top_keys, OT_ARRAY_SIZE(top_keys), key);
    if (i < 0)
        return ot_diag_set(d, OT_ERR_CONFIG, "unknown key '%s' (name, version, device_types, "
                           "security_version, or a [section])", key);
    if ((s->top_set & (1u << i)) && !override)
        return ot_diag_set(d, OT_ERR_CONFIG, "duplicate key '%s'", key);
    if (s->top_set & (1u << i)) { /* a flag replaces the spec's value */
        char **field = (char **)((char *)&s->top + top_keys[i].offset);
        if (top_keys[i].type == OT_CFG_STRING) {
            free(*field);
            *field = NULL;
        }
    }
    enum ot_err err = ot_cfg_set(top_keys, OT_ARRAY_SIZE(top_keys), NULL, key, value, &s->top, d);
    if (err)
        return err;
    s->top_set |= 1u << i;
    if (strcmp(key, "security_version") == 0)
        s->have_security_version = true;
    return OT_OK;
}

static enum ot_err begin_section(struct tool_spec *s, const char *section, const char *name,
                                 struct ot_diag *d)
{
    s->cur = NULL;
    s->section = NULL;
    if (strcmp(section, "provides") == 0 || strcmp(section, "depends") == 0) {
        if (name && name[0])
            return ot_diag_set(d, OT_ERR_CONFIG, "[%s] takes no name", section);
        s->section = section[0] == 'p' ? "provides" : "depends";
        return OT_OK;
    }
    if (strcmp(section, "payload") != 0)
        return ot_diag_set(d, OT_ERR_CONFIG, "unknown section [%s] (provides, depends, "
                           "payload \"NAME\")", section);
    if (!name || !name[0])
        return ot_diag_set(d, OT_ERR_CONFIG, "[payload] needs a name: [payload \"rootfs.img\"]");
    enum ot_err err = payload_name_ok(name, d);
    if (!err && payload_find(s, name))
        err = ot_diag_set(d, OT_ERR_CONFIG, "duplicate [payload \"%s\"]", name);
    if (!err)
        err = payload_new(s, name, &s->cur, d);
    if (err)
        return err;
    snprintf(s->cur->origin, sizeof(s->cur->origin), "%s: [payload \"%s\"]", s->filename, name);
    s->section = "payload";
    return OT_OK;
}

static enum ot_err on_entry(void *userdata, const char *section, const char *name,
                            const char *key, const char *value, struct ot_diag *d)
{
    struct tool_spec *s = userdata;
    bool top = !section || !section[0];
    if (!key)
        return top ? OT_OK : begin_section(s, section, name, d);
    if (top)
        return top_set(s, key, value, false, d);
    if (!s->section)
        return ot_diag_set(d, OT_ERR_INTERNAL, "key outside of a known section");
    if (strcmp(s->section, "provides") == 0)
        return kv_put(&s->provides, key, value, false, d);
    if (strcmp(s->section, "depends") == 0)
        return kv_put(&s->depends, key, value, false, d);
    return payload_set(s->cur, s->dir, key, value, d);
}

enum ot_err tool_spec_load(struct tool_spec *s, const char *path, struct ot_diag *d)
{
    struct ot_buf b;
    ot_buf_init(&b, OT_CFG_FILE_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    s->filename = path;
    if (!err && ot_path_dirname(path, &s->dir) != OT_OK)
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!err)
        err = ot_cfg_parse(path, b.data, b.len, on_entry, s, d);
    ot_buf_release(&b);
    return err;
}

/* ---- flags ---- */

enum ot_err tool_spec_set_top(struct tool_spec *s, const char *key, const char *value,
                              struct ot_diag *d)
{
    enum ot_err err = top_set(s, key, value, true, d);
    return err ? ot_diag_prefix(d, err, "--%s", key) : OT_OK;
}

enum ot_err tool_spec_add_device_type(struct tool_spec *s, const char *type, struct ot_diag *d)
{
    struct ot_strlist *l = &s->top.device_types;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], type) == 0)
            return OT_OK;
    char **v = reallocarray(l->v, l->n + 1, sizeof(*v));
    if (v)
        l->v = v;
    char *t = v ? strdup(type) : NULL;
    if (!t)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    l->v[l->n++] = t;
    return OT_OK;
}

enum ot_err tool_spec_set_kv(struct tool_kvlist *l, const char *flag, const char *arg,
                             struct ot_diag *d)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return ot_diag_set(d, OT_ERR_INVALID, "%s wants KEY=VALUE, not '%s'", flag, arg);
    _cleanup_free_ char *key = strndup(arg, (size_t)(eq - arg));
    if (!key)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    enum ot_err err = kv_put(l, key, eq + 1, true, d);
    return err ? ot_diag_prefix(d, err, "%s", flag) : OT_OK;
}

/* Parses "k=v,k=v" into p (name excluded; it was taken first). */
static enum ot_err payload_flag_fields(struct tool_spec_payload *p, char *list, struct ot_diag *d)
{
    char *item;
    while ((item = strsep(&list, ","))) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item)
            return ot_diag_set(d, OT_ERR_INVALID, "'%s' is not KEY=VALUE", item);
        *eq = '\0';
        if (strcmp(item, "name") == 0)
            continue;
        enum ot_err err = payload_set(p, NULL, item, eq + 1, d);
        if (err)
            return err;
    }
    return OT_OK;
}

/* The name=... item of a --payload argument. */
static enum ot_err payload_flag_name(const char *arg, char **ret, struct ot_diag *d)
{
    _cleanup_free_ char *copy = strdup(arg);
    char *list = copy, *item;
    if (!copy)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    while ((item = strsep(&list, ",")))
        if (strncmp(item, "name=", 5) == 0) {
            *ret = strdup(item + 5);
            return *ret ? payload_name_ok(*ret, d)
                        : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        }
    return ot_diag_set(d, OT_ERR_INVALID, "missing name=NAME");
}

enum ot_err tool_spec_add_payload_flag(struct tool_spec *s, const char *arg, struct ot_diag *d)
{
    _cleanup_free_ char *name = NULL, *copy = strdup(arg);
    if (!copy)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    enum ot_err err = payload_flag_name(arg, &name, d);
    if (err)
        return ot_diag_prefix(d, err, "--payload '%s'", arg);
    struct tool_spec_payload p = {.name = TAKE_PTR(name)};
    snprintf(p.origin, sizeof(p.origin), "--payload %s", p.name);
    err = payload_flag_fields(&p, copy, d);
    if (err) {
        ot_diag_prefix(d, err, "--payload %s", p.name);
        payload_release(&p);
        return err;
    }
    struct tool_spec_payload *slot = payload_find(s, p.name);
    if (!slot && (err = payload_new(s, p.name, &slot, d)) != OT_OK) {
        payload_release(&p);
        return err;
    }
    payload_release(slot); /* a flag replaces the spec's payload of the same name */
    *slot = p;
    return OT_OK;
}

/* ---- building the manifest ---- */

static enum ot_err check_complete(const struct tool_spec *s, struct ot_diag *d)
{
    if (!s->top.name)
        return ot_diag_set(d, OT_ERR_INVALID, "missing the artifact name (name = ..., or "
                           "--name)");
    if (!s->top.version)
        return ot_diag_set(d, OT_ERR_INVALID, "missing the artifact version (version = ..., or "
                           "--version)");
    if (s->top.device_types.n == 0)
        return ot_diag_set(d, OT_ERR_INVALID, "missing device types (device_types = ..., or "
                           "--device-type)");
    if (s->npayloads == 0)
        return ot_diag_set(d, OT_ERR_INVALID, "no payloads ([payload \"NAME\"] sections, or "
                           "--payload)");
    for (size_t i = 0; i < s->npayloads; i++) {
        const struct tool_spec_payload *p = &s->payloads[i];
        if (!p->f.file || !p->f.type)
            return ot_diag_set(d, OT_ERR_INVALID, "%s: missing '%s'", p->origin,
                               p->f.file ? "type" : "file");
    }
    return OT_OK;
}

static enum ot_err build_payload(const struct tool_spec *s, const struct tool_spec_payload *sp,
                                 struct ot_manifest *m)
{
    struct ot_payload *p;
    enum ot_err err = ot_manifest_add_payload(m, &p);
    if (!err)
        err = ot_manifest_set_str(&p->name, sp->name);
    if (!err)
        err = ot_manifest_set_str(&p->type, sp->f.type);
    if (!err)
        err = ot_manifest_set_str(&p->target, sp->f.target ? sp->f.target : "");
    if (!err)
        err = ot_manifest_set_str(&p->version, sp->f.version ? sp->f.version : s->top.version);
    p->compression = sp->f.compression && strcmp(sp->f.compression, "none") == 0
                         ? OT_COMPRESSION_NONE
                         : OT_COMPRESSION_ZSTD;
    for (size_t i = 0; !err && i < sp->args.n; i++)
        err = ot_payload_add_arg(p, sp->args.v[i].key, sp->args.v[i].value);
    return err;
}

static enum ot_err build_head(const struct tool_spec *s, struct ot_manifest *m)
{
    enum ot_err err = ot_manifest_set_str(&m->name, s->top.name);
    if (!err)
        err = ot_manifest_set_str(&m->version, s->top.version);
    for (size_t i = 0; !err && i < s->top.device_types.n; i++)
        err = ot_manifest_add_device_type(m, s->top.device_types.v[i]);
    for (size_t i = 0; !err && i < s->provides.n; i++)
        err = ot_manifest_add_provide(m, s->provides.v[i].key, s->provides.v[i].value);
    for (size_t i = 0; !err && i < s->depends.n; i++)
        err = ot_manifest_add_depend(m, s->depends.v[i].key, s->depends.v[i].value);
    m->format = OT_MANIFEST_FORMAT;
    m->security_version = s->top.security_version;
    return err;
}

enum ot_err tool_spec_build(const struct tool_spec *s, struct ot_manifest *m,
                            const char ***ret_inputs, struct ot_diag *d)
{
    enum ot_err err = check_complete(s, d);
    if (err)
        return err;
    _cleanup_free_ const char **inputs = calloc(s->npayloads, sizeof(*inputs));
    if (!inputs)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = build_head(s, m);
    for (size_t i = 0; !err && i < s->npayloads; i++) {
        err = build_payload(s, &s->payloads[i], m);
        inputs[i] = s->payloads[i].path;
    }
    if (err)
        return ot_diag_set(d, err, "%s", ot_strerror(err));
    /* Every rule of the format, now, before a single input byte is read. The validator does not
     * say which input line a field came from: name the spec (or the command line). */
    err = ot_manifest_validate(m, d);
    if (err)
        return ot_diag_prefix(d, err, "%s", s->filename ? s->filename : "command line");
    *ret_inputs = TAKE_PTR(inputs);
    return OT_OK;
}
