/* The A/B protocol of boot.h, written once for every backend: which variables mean what, their
 * validation, the running slot (environment, else kernel command line), and what try, commit and
 * rollback change. The backends (boot_sim.c, boot_grub.c, boot_uboot.c) only load and store
 * variables; the key=value model the file backends share lives here too. */
#include <errno.h>

#include "otter/file.h"
#include "otter/parse.h"

#include "boot_backend.h"

#define CMDLINE_PATH_DEFAULT "/proc/cmdline"
/* The kernel's own limit is 2 KiB to 4 KiB depending on the architecture; this leaves room. */
#define CMDLINE_MAX (64u * 1024u)
#define CMDLINE_PARAM "otter.slot"

static const struct ag__boot_ops *const backends[] = {
    &ag__boot_sim_ops,
    &ag__boot_grub_ops,
    &ag__boot_uboot_ops,
};

/* ---- the key=value environment model ---------------------------------------------------- */

void ag__env_init(struct ag__env *e)
{
    memset(e, 0, sizeof(*e));
}

void ag__env_release(struct ag__env *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->vars[i].name);
        free(e->vars[i].value);
    }
    free(e->vars);
    ag__env_init(e);
}

static struct ag__env_var *env_find(const struct ag__env *e, const char *name)
{
    for (size_t i = 0; i < e->n; i++)
        if (e->vars[i].name && strcmp(e->vars[i].name, name) == 0)
            return &e->vars[i];
    return NULL;
}

const char *ag__env_get(const struct ag__env *e, const char *name)
{
    const struct ag__env_var *v = env_find(e, name);
    return v ? v->value : NULL;
}

/* Appends a line; takes ownership of name (may be NULL) and value (NULL: strdup failed), which
 * are freed on failure. */
static enum ot_err env_append(struct ag__env *e, char *name, char *value)
{
    enum ot_err err = OT_ERR_NOMEM;
    if (!value)
        goto fail;
    if (e->n == e->cap) {
        err = OT_ERR_LIMIT;
        if (e->n >= AG__ENV_VARS_MAX)
            goto fail;
        err = OT_ERR_NOMEM;
        size_t cap = e->cap ? e->cap * 2 : 16;
        struct ag__env_var *v = realloc(e->vars, cap * sizeof(*v));
        if (!v)
            goto fail;
        e->vars = v;
        e->cap = cap;
    }
    e->vars[e->n++] = (struct ag__env_var){name, value};
    return OT_OK;
fail:
    free(name);
    free(value);
    return err;
}

enum ot_err ag__env_set(struct ag__env *e, const char *name, const char *value)
{
    struct ag__env_var *v = env_find(e, name);
    if (v) {
        char *copy = strdup(value);
        if (!copy)
            return OT_ERR_NOMEM;
        free(v->value);
        v->value = copy;
        return OT_OK;
    }
    char *n = strdup(name);
    if (!n)
        return OT_ERR_NOMEM;
    return env_append(e, n, strdup(value));
}

/* A line that is not a variable: '#' comment or empty. At the end of a GRUB block without '\n'
 * it is the '#' padding and is dropped. */
static enum ot_err parse_other_line(struct ag__env *e, const char *p, size_t n, bool terminated,
                                    enum ag__env_syntax syn)
{
    if (!terminated && syn == AG__ENV_GRUB)
        return OT_OK;
    return env_append(e, NULL, strndup(p, n));
}

/* Length of the value starting at p, up to its unescaped '\n' (or the end); OT_ERR_FORMAT for
 * a GRUB escape cut off by the end. */
static enum ot_err value_len(const char *p, size_t avail, enum ag__env_syntax syn, size_t *ret)
{
    size_t i = 0;
    while (i < avail && p[i] != '\n') {
        if (syn == AG__ENV_GRUB && p[i] == '\\') {
            if (i + 1 >= avail)
                return OT_ERR_FORMAT;
            i++;
        }
        i++;
    }
    *ret = i;
    return OT_OK;
}

static enum ot_err parse_var_line(struct ag__env *e, const char *p, size_t avail,
                                  enum ag__env_syntax syn, const char *what, unsigned line,
                                  size_t *ret_used, struct ot_diag *d)
{
    size_t name_len = 0;
    while (name_len < avail && p[name_len] != '=' && p[name_len] != '\n')
        name_len++;
    if (name_len == avail || p[name_len] != '=')
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: line %u: expected name=value", what, line);
    if (name_len == 0)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: line %u: empty variable name", what, line);
    const char *v = p + name_len + 1;
    size_t vlen;
    if (value_len(v, avail - name_len - 1, syn, &vlen))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: line %u: ends inside a backslash escape",
                           what, line);
    size_t used = name_len + 1 + vlen;
    if (used == avail && syn == AG__ENV_GRUB)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: line %u: no end of line (truncated block?)",
                           what, line);
    char *name = strndup(p, name_len);
    if (name && env_find(e, name)) {
        enum ot_err err = ot_diag_set(d, OT_ERR_FORMAT, "%s: line %u: %s set twice", what, line,
                                      name);
        free(name);
        return err;
    }
    enum ot_err err = name ? env_append(e, name, strndup(v, vlen)) : OT_ERR_NOMEM;
    if (err)
        return ot_diag_set(d, err, "%s: line %u: %s", what, line, ot_strerror(err));
    *ret_used = used + (used < avail); /* past the '\n' */
    return OT_OK;
}

enum ot_err ag__env_parse(struct ag__env *e, const char *text, size_t len, enum ag__env_syntax syn,
                          const char *what, struct ot_diag *d)
{
    if (memchr(text, '\0', len))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: contains a NUL byte", what);
    /* A GRUB block's body starts on line 2, after the header. */
    unsigned line = syn == AG__ENV_GRUB ? 2 : 1;
    for (size_t pos = 0; pos < len;) {
        const char *p = text + pos;
        size_t avail = len - pos, used = 0;
        if (*p == '#' || *p == '\n') {
            const char *nl = memchr(p, '\n', avail);
            used = nl ? (size_t)(nl - p) + 1 : avail;
            enum ot_err err = parse_other_line(e, p, nl ? used - 1 : used, nl != NULL, syn);
            if (err)
                return ot_diag_set(d, err, "%s: line %u: %s", what, line, ot_strerror(err));
        } else {
            enum ot_err err = parse_var_line(e, p, avail, syn, what, line, &used, d);
            if (err)
                return err;
        }
        /* Physical lines, for messages: an escaped '\n' inside a GRUB value starts one too. */
        for (size_t i = 0; i < used; i++)
            line += p[i] == '\n';
        pos += used;
    }
    return OT_OK;
}

enum ot_err ag__env_format(const struct ag__env *e, struct ot_buf *out)
{
    for (size_t i = 0; i < e->n; i++) {
        const struct ag__env_var *v = &e->vars[i];
        enum ot_err err = v->name ? ot_buf_printf(out, "%s=%s\n", v->name, v->value)
                                  : ot_buf_printf(out, "%s\n", v->value);
        if (err)
            return err;
    }
    return OT_OK;
}

/* ---- the protocol's variables --------------------------------------------------------------- */

const char *ag__slot_name(const char *s)
{
    if (s && strcmp(s, AG_SLOT_A) == 0)
        return AG_SLOT_A;
    if (s && strcmp(s, AG_SLOT_B) == 0)
        return AG_SLOT_B;
    return NULL;
}

const char *ag_boot_other(const char *slot)
{
    const char *s = ag__slot_name(slot);
    if (!s)
        return NULL;
    return s[0] == 'a' ? AG_SLOT_B : AG_SLOT_A;
}

/* Absent and empty are the same thing for every variable: U-Boot cannot even store an empty
 * one, and a GRUB script's `set x=` writes one. */
static const char *env_value(const struct ag__env *e, const char *name)
{
    const char *v = ag__env_get(e, name);
    return v && *v ? v : NULL;
}

static enum ot_err decode_slot(const struct ag__env *e, const char *name, const char *def,
                               const char *what, char out[2], struct ot_diag *d)
{
    const char *v = env_value(e, name);
    const char *s = v ? ag__slot_name(v) : def;
    if (!s)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: %s=%.40s: not a slot (a or b)", what, name, v);
    memcpy(out, s, strlen(s) + 1);
    return OT_OK;
}

static enum ot_err decode_count(const struct ag__env *e, const char *name, unsigned min,
                                unsigned max, unsigned def, const char *what, unsigned *out,
                                struct ot_diag *d)
{
    const char *v = env_value(e, name);
    uint64_t n = def;
    enum ot_err err = v ? ot_parse_u64(v, min, max, &n) : OT_OK;
    if (err)
        return ot_diag_set(d, err, "%s: %s=%.40s: not a number %u..%u", what, name, v, min, max);
    *out = (unsigned)n;
    return OT_OK;
}

enum ot_err ag__boot_decode(const struct ag__env *e, unsigned def_max_tries, const char *what,
                            struct ag_boot_state *ret, struct ot_diag *d)
{
    struct ag_boot_state st = {{0}};
    enum ot_err err = decode_slot(e, AG__VAR_DEFAULT, AG_SLOT_A, what, st.default_slot, d);
    if (!err)
        err = decode_slot(e, AG__VAR_TRY, "", what, st.try_slot, d);
    if (!err)
        err = decode_count(e, AG__VAR_BOOTCOUNT, 0, AG__MAX_TRIES_MAX, 0, what, &st.bootcount, d);
    if (!err)
        err = decode_count(e, AG__VAR_MAXTRIES, 1, AG__MAX_TRIES_MAX, def_max_tries, what,
                           &st.max_tries, d);
    if (err)
        return err;
    *ret = st;
    return OT_OK;
}

/* ---- the running slot from the kernel command line ---------------------------------------- */

static bool cmdline_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '\0';
}

/* Copies token [p, p+n) without its double quotes into out (size outsz); false if cut. The
 * kernel lets quotes group a value with spaces (param="a b") and drops them. */
static bool dequote(const char *p, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"')
            continue;
        if (o + 1 >= outsz) {
            out[o] = '\0';
            return false;
        }
        out[o++] = p[i];
    }
    out[o] = '\0';
    return true;
}

/* One parameter of the command line: ignored unless it is otter.slot; writes ret on a match. */
static enum ot_err cmdline_token(const char *tok, size_t n, const char *what, char ret[2],
                                 bool *found, struct ot_diag *d)
{
    char buf[64];
    bool whole = dequote(tok, n, buf, sizeof(buf));
    size_t plen = strlen(CMDLINE_PARAM);
    if (strncmp(buf, CMDLINE_PARAM, plen) != 0 || (buf[plen] != '=' && buf[plen] != '\0'))
        return OT_OK; /* otter.slotfoo=...: another parameter */
    const char *s = whole && buf[plen] == '=' ? ag__slot_name(buf + plen + 1) : NULL;
    if (!s)
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: %.*s: not a slot (otter.slot=a or otter.slot=b)",
                           what, (int)OT_MIN(n, 40), tok);
    memcpy(ret, s, 2);
    *found = true;
    return OT_OK;
}

/* Finds otter.slot= in a kernel command line, with the kernel's rules: whitespace separates
 * parameters, double quotes group, "--" ends the kernel's parameters (the rest is init's), and
 * a later setting overrides an earlier one. OT_ERR_NOENT when there is none. */
static enum ot_err cmdline_slot(const char *s, size_t len, const char *what, char ret[2],
                                struct ot_diag *d)
{
    bool found = false;
    size_t pos = 0;
    for (;;) {
        while (pos < len && cmdline_space(s[pos]))
            pos++;
        if (pos == len)
            break;
        size_t start = pos;
        bool quoted = false;
        for (; pos < len && (quoted || !cmdline_space(s[pos])); pos++)
            if (s[pos] == '"')
                quoted = !quoted;
        size_t n = pos - start;
        if (n == 2 && memcmp(s + start, "--", 2) == 0)
            break;
        if (n >= strlen(CMDLINE_PARAM)) {
            enum ot_err err = cmdline_token(s + start, n, what, ret, &found, d);
            if (err)
                return err;
        }
    }
    return found ? OT_OK : OT_ERR_NOENT;
}

static enum ot_err no_running_slot(const struct ag_boot *b, struct ot_diag *d)
{
    return ot_diag_set(d, OT_ERR_CONFIG,
                       "%s boot: the running slot is unknown: no %s in %s and no otter.slot= on "
                       "the kernel command line (%s); the bootloader must pass otter.slot=a or "
                       "otter.slot=b (see docs/agent-boot.md for the grub.cfg and U-Boot snippets)",
                       b->ops->kind, AG__VAR_BOOTED, b->env_path, b->cmdline_path);
}

/* booted_from_cmdline: the slot the kernel was told it runs from. */
static enum ot_err booted_from_cmdline(const struct ag_boot *b, char ret[2], struct ot_diag *d)
{
    _cleanup_(ot_buf_release) struct ot_buf buf;
    ot_buf_init(&buf, CMDLINE_MAX);
    enum ot_err err = ot_file_read(b->cmdline_path, &buf, d);
    if (err == OT_ERR_NOENT)
        return no_running_slot(b, d);
    if (err)
        return err;
    err = cmdline_slot((const char *)ot_buf_str(&buf), buf.len, b->cmdline_path, ret, d);
    return err == OT_ERR_NOENT ? no_running_slot(b, d) : err;
}

/* ---- the handle and the operations -------------------------------------------------------- */

static const struct ag__boot_ops *find_backend(const char *kind)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(backends); i++)
        if (strcmp(backends[i]->kind, kind) == 0)
            return backends[i];
    return NULL;
}

static enum ot_err check_config(const struct ag_boot_config *cfg, const struct ag__boot_ops **ops,
                                struct ot_diag *d)
{
    if (!cfg->kind || !(*ops = find_backend(cfg->kind)))
        return ot_diag_set(d, OT_ERR_CONFIG, "boot backend '%s': unknown (sim, grub or uboot)",
                           cfg->kind ? cfg->kind : "");
    if (cfg->max_tries > AG__MAX_TRIES_MAX)
        return ot_diag_set(d, OT_ERR_CONFIG, "boot max_tries %u: must be 1..%u", cfg->max_tries,
                           AG__MAX_TRIES_MAX);
    if (!cfg->env_path && !(*ops)->default_env_path)
        return ot_diag_set(d, OT_ERR_CONFIG, "%s boot: the environment file must be set",
                           cfg->kind);
    return OT_OK;
}

enum ot_err ag_boot_open(const struct ag_boot_config *cfg, struct ag_boot **ret,
                         struct ot_diag *d)
{
    const struct ag__boot_ops *ops = NULL;
    if (!cfg || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "ag_boot_open: no config");
    enum ot_err err = check_config(cfg, &ops, d);
    if (err)
        return err;
    struct ag_boot *b = calloc(1, sizeof(*b));
    if (!b)
        return ot_diag_set(d, OT_ERR_NOMEM, "boot: %s", ot_strerror(OT_ERR_NOMEM));
    b->ops = ops;
    b->max_tries = cfg->max_tries ? cfg->max_tries : AG__MAX_TRIES_DEFAULT;
    b->env_path = strdup(cfg->env_path ? cfg->env_path : ops->default_env_path);
    b->cmdline_path = strdup(cfg->cmdline_path ? cfg->cmdline_path : CMDLINE_PATH_DEFAULT);
    err = b->env_path && b->cmdline_path ? ops->open(b, d)
                                         : ot_diag_set(d, OT_ERR_NOMEM, "boot: out of memory");
    /* Read everything once now, so that a bad environment or a bootloader that does not pass
     * otter.slot= stops the agent at start, not at its first update. */
    struct ag_boot_state st;
    if (!err)
        err = ag_boot_read(b, &st, d);
    if (err) {
        ag_boot_close(b);
        return err;
    }
    *ret = b;
    return OT_OK;
}

void ag_boot_close(struct ag_boot *b)
{
    if (!b)
        return;
    b->ops->close(b);
    free(b->env_path);
    free(b->cmdline_path);
    free(b);
}

enum ot_err ag_boot_read(struct ag_boot *b, struct ag_boot_state *ret, struct ot_diag *d)
{
    if (!b || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "ag_boot_read: no handle");
    _cleanup_(ag__env_release) struct ag__env env;
    ag__env_init(&env);
    struct ag_boot_state st;
    enum ot_err err = b->ops->load(b, &env, d);
    if (!err)
        err = ag__boot_decode(&env, b->max_tries, b->env_path, &st, d);
    if (err)
        return err;
    if (env_value(&env, AG__VAR_BOOTED))
        err = decode_slot(&env, AG__VAR_BOOTED, NULL, b->env_path, st.booted, d);
    else
        err = booted_from_cmdline(b, st.booted, d);
    if (err)
        return err;
    *ret = st;
    return OT_OK;
}

/* What an operation writes; NULL leaves a variable as it is. */
struct change {
    const char *default_slot, *try_slot, *bootcount, *max_tries;
};

static enum ot_err apply(struct ag__env *env, const char *name, const char *value, bool *changed)
{
    if (!value)
        return OT_OK;
    const char *cur = ag__env_get(env, name);
    if (strcmp(cur ? cur : "", value) == 0)
        return OT_OK;
    *changed = true;
    return ag__env_set(env, name, value);
}

/* Loads, validates (a bad environment is refused, never half-rewritten), applies c and stores,
 * only when something changed: repeating an operation writes nothing (no flash wear). */
static enum ot_err update(struct ag_boot *b, const struct change *c, struct ot_diag *d)
{
    _cleanup_(ag__env_release) struct ag__env env;
    ag__env_init(&env);
    struct ag_boot_state st;
    enum ot_err err = b->ops->load(b, &env, d);
    if (!err)
        err = ag__boot_decode(&env, b->max_tries, b->env_path, &st, d);
    if (err)
        return err;
    bool changed = false;
    err = apply(&env, AG__VAR_DEFAULT, c->default_slot, &changed);
    if (!err)
        err = apply(&env, AG__VAR_TRY, c->try_slot, &changed);
    if (!err)
        err = apply(&env, AG__VAR_BOOTCOUNT, c->bootcount, &changed);
    if (!err)
        err = apply(&env, AG__VAR_MAXTRIES, c->max_tries, &changed);
    if (err)
        return ot_diag_set(d, err, "%s: %s", b->env_path, ot_strerror(err));
    return changed ? b->ops->store(b, &env, d) : OT_OK;
}

static enum ot_err check_slot(const char *op, const char *slot, const char **ret,
                              struct ot_diag *d)
{
    *ret = ag__slot_name(slot);
    if (!*ret)
        return ot_diag_set(d, OT_ERR_INVALID, "boot %s: '%.40s' is not a slot (a or b)", op,
                           slot ? slot : "(null)");
    return OT_OK;
}

enum ot_err ag_boot_try(struct ag_boot *b, const char *slot, struct ot_diag *d)
{
    const char *s;
    if (!b)
        return ot_diag_set(d, OT_ERR_INVALID, "ag_boot_try: no handle");
    enum ot_err err = check_slot("try", slot, &s, d);
    if (err)
        return err;
    char max[4];
    snprintf(max, sizeof(max), "%u", b->max_tries);
    return update(b, &(struct change){.try_slot = s, .bootcount = "0", .max_tries = max}, d);
}

enum ot_err ag_boot_commit(struct ag_boot *b, const char *slot, struct ot_diag *d)
{
    const char *s;
    if (!b)
        return ot_diag_set(d, OT_ERR_INVALID, "ag_boot_commit: no handle");
    enum ot_err err = check_slot("commit", slot, &s, d);
    if (err)
        return err;
    return update(b, &(struct change){.default_slot = s, .try_slot = "", .bootcount = "0"}, d);
}

enum ot_err ag_boot_rollback(struct ag_boot *b, struct ot_diag *d)
{
    if (!b)
        return ot_diag_set(d, OT_ERR_INVALID, "ag_boot_rollback: no handle");
    return update(b, &(struct change){.try_slot = "", .bootcount = "0"}, d);
}
