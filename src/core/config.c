/* Declarative configuration files (see config.h): a line parser that reports one event per section
 * header and per key, and a table layer on top that types, range-checks and stores the values.
 *
 * Top-level keys are reported with section "" (the tables may say NULL or ""), and the section name
 * is "" unless the header had one ([payload "rootfs"]). */
#include <stdarg.h>

#include "otter/config.h"
#include "otter/file.h"
#include "otter/parse.h"

#define STRING_MAX_DEFAULT 4095
#define EXCERPT_MAX 64
#define MSG_MAX 384
#define BOM "\xef\xbb\xbf"

/* ---- low level: lines ------------------------------------------------------------------------ */

struct parser {
    const char *filename;
    ot_cfg_entry_fn fn;
    void *userdata;
    unsigned line;
    char section[OT_CFG_LINE_MAX + 1];
    char name[OT_CFG_LINE_MAX + 1];
    char key[OT_CFG_LINE_MAX + 1];
    char value[OT_CFG_LINE_MAX + 1];
};

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static const char *skip_blanks(const char *s)
{
    while (is_blank(*s))
        s++;
    return s;
}

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static bool section_char(unsigned char c) { return key_char(c) && c != '.'; }

static size_t span(const char *s, bool (*ok)(unsigned char c))
{
    size_t n = 0;
    while (s[n] && ok((unsigned char)s[n]))
        n++;
    return n;
}

static bool is_control(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

/* 'c' for printable ASCII, 0xNN otherwise, for messages. */
static const char *show_char(unsigned char c, char out[8])
{
    if (c >= 0x20 && c < 0x7f)
        snprintf(out, 8, "'%c'", c);
    else
        snprintf(out, 8, "0x%02x", c);
    return out;
}

/* A bounded copy of an untrusted string for a message, control characters and non-ASCII as '?'. */
static const char *excerpt(const char *s, char out[EXCERPT_MAX + 4])
{
    size_t i = 0;
    for (; s[i] && i < EXCERPT_MAX; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

static enum ot_err syntax_error(const struct parser *p, struct ot_diag *d, const char *fmt, ...)
    OT_PRINTF(3, 4);

static enum ot_err syntax_error(const struct parser *p, struct ot_diag *d, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ot_diag_set(d, OT_ERR_CONFIG, "%s:%u: %s", p->filename, p->line, msg);
}

/* Calls the entry callback; its error is returned with "file:line: " in front of its message. */
static enum ot_err emit(struct parser *p, const char *key, const char *value, struct ot_diag *d)
{
    ot_diag_clear(d); /* so that only what this callback says ends up in the message */
    enum ot_err err = p->fn(p->userdata, p->section, p->name, key, value, d);
    if (!err || !d)
        return err;
    if (!d->msg[0])
        snprintf(d->msg, sizeof(d->msg), "%s", ot_strerror(err));
    d->err = err;
    ot_diag_prefix(d, err, "%s:%u", p->filename, p->line);
    return err;
}

/* After the opening quote at *s: unescapes into out (which has room for the whole line) and
 * leaves *s after the closing quote. */
static enum ot_err read_quoted(const struct parser *p, const char **s, char *out, struct ot_diag *d)
{
    static const char esc_in[] = "\"\\nt", esc_out[] = "\"\\\n\t";
    const char *q = *s;
    size_t n = 0;
    for (; *q && *q != '"'; q++) {
        char c = *q;
        if (c == '\\') {
            char shown[8];
            const char *e = q[1] ? strchr(esc_in, q[1]) : NULL;
            if (!q[1])
                break;
            if (!e)
                return syntax_error(p, d,
                                    "unknown escape \\%s in quoted string (use \\\" \\\\ \\n \\t)",
                                    show_char((unsigned char)q[1], shown));
            c = esc_out[e - esc_in];
            q++;
        }
        out[n++] = c;
    }
    if (*q != '"')
        return syntax_error(p, d, "unterminated quoted string");
    out[n] = '\0';
    *s = q + 1;
    return OT_OK;
}

static enum ot_err section_name_error(const struct parser *p, const char *s, struct ot_diag *d)
{
    char shown[8];
    if (!*s)
        return syntax_error(p, d, "unterminated section header");
    if (*s == ']' || *s == '"')
        return syntax_error(p, d, "missing section name");
    return syntax_error(p, d, "invalid character %s in section name",
                        show_char((unsigned char)*s, shown));
}

/* "[section]" or "[section "name"]", s just after the '['. */
static enum ot_err parse_section(struct parser *p, const char *s, struct ot_diag *d)
{
    s = skip_blanks(s);
    size_t n = span(s, section_char);
    if (n == 0)
        return section_name_error(p, s, d);
    memcpy(p->section, s, n);
    p->section[n] = '\0';
    p->name[0] = '\0';
    s = skip_blanks(s + n);
    if (*s == '"') {
        s++;
        enum ot_err err = read_quoted(p, &s, p->name, d);
        if (err)
            return err;
        if (!p->name[0] || strpbrk(p->name, "\t\n"))
            return syntax_error(p, d, "a section name must be non-empty, without tabs or newlines");
        s = skip_blanks(s);
    }
    if (!*s)
        return syntax_error(p, d, "unterminated section header");
    if (*s != ']')
        return section_name_error(p, s, d);
    if (*skip_blanks(s + 1))
        return syntax_error(p, d, "unexpected text after section header");
    return emit(p, NULL, NULL, d);
}

static enum ot_err key_error(const struct parser *p, const char *s, struct ot_diag *d)
{
    char shown[8];
    if (*s == '=')
        return syntax_error(p, d, "missing key before '='");
    return syntax_error(p, d, "invalid character %s at the start of a key",
                        show_char((unsigned char)*s, shown));
}

/* The value after '=' and its blanks into p->value: quoted with escapes, or raw to the end of the
 * line without trailing blanks. */
static enum ot_err parse_value(struct parser *p, const char *s, struct ot_diag *d)
{
    if (*s != '"') {
        size_t n = strlen(s);
        while (n > 0 && is_blank(s[n - 1]))
            n--;
        memcpy(p->value, s, n);
        p->value[n] = '\0';
        return OT_OK;
    }
    s++;
    enum ot_err err = read_quoted(p, &s, p->value, d);
    if (!err && *skip_blanks(s))
        err = syntax_error(p, d, "unexpected text after the closing quote");
    return err;
}

/* "key = value" or "key = "quoted"". */
static enum ot_err parse_entry(struct parser *p, const char *s, struct ot_diag *d)
{
    char shown[8];
    size_t n = span(s, key_char);
    if (n == 0)
        return key_error(p, s, d);
    memcpy(p->key, s, n);
    p->key[n] = '\0';
    s += n;
    if (*s && *s != '=' && !is_blank(*s))
        return syntax_error(p, d, "invalid character %s in key '%.64s'",
                            show_char((unsigned char)*s, shown), p->key);
    s = skip_blanks(s);
    if (*s != '=')
        return syntax_error(p, d, "expected '=' after key '%.64s'", p->key);
    enum ot_err err = parse_value(p, skip_blanks(s + 1), d);
    return err ? err : emit(p, p->key, p->value, d);
}

/* One line without its line ending: bounded, no control characters, then dispatched. */
static enum ot_err parse_line(struct parser *p, const uint8_t *raw, size_t n, struct ot_diag *d)
{
    char line[OT_CFG_LINE_MAX + 1], shown[8];
    if (n > OT_CFG_LINE_MAX)
        return syntax_error(p, d, "line is longer than %d bytes", OT_CFG_LINE_MAX);
    for (size_t i = 0; i < n; i++)
        if (is_control(raw[i]))
            return syntax_error(p, d, "control character %s", show_char(raw[i], shown));
    memcpy(line, raw, n);
    line[n] = '\0';
    const char *s = skip_blanks(line);
    if (!*s || *s == '#' || *s == ';')
        return OT_OK;
    if (*s == '[')
        return parse_section(p, s + 1, d);
    return parse_entry(p, s, d);
}

static enum ot_err parser_run(struct parser *p, const uint8_t *buf, size_t len, struct ot_diag *d)
{
    if (len > OT_CFG_FILE_MAX)
        return ot_diag_set(d, OT_ERR_CONFIG, "%s: larger than %d bytes", p->filename,
                           OT_CFG_FILE_MAX);
    size_t pos = len >= 3 && memcmp(buf, BOM, 3) == 0 ? 3 : 0; /* editors on Windows add one */
    while (pos < len) {
        const uint8_t *start = buf + pos;
        const uint8_t *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && start[n - 1] == '\r') /* CRLF */
            n--;
        p->line++;
        enum ot_err err = parse_line(p, start, n, d);
        if (err)
            return err;
    }
    return OT_OK;
}

static struct parser *parser_new(const char *filename, ot_cfg_entry_fn fn, void *userdata)
{
    struct parser *p = calloc(1, sizeof(*p));
    if (p)
        *p = (struct parser){
            .filename = filename ? filename : "<config>", .fn = fn, .userdata = userdata};
    return p;
}

enum ot_err ot_cfg_parse(const char *filename, const uint8_t *buf, size_t len, ot_cfg_entry_fn fn,
                         void *userdata, struct ot_diag *d)
{
    if (!fn || (!buf && len))
        return ot_diag_set(d, OT_ERR_INVALID, "config parse: no callback or no buffer");
    _cleanup_free_ struct parser *p = parser_new(filename, fn, userdata);
    if (!p)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    return parser_run(p, buf, len, d);
}

/* ---- string lists ---------------------------------------------------------------------------- */

void ot_strlist_release(struct ot_strlist *l)
{
    for (size_t i = 0; l->v && i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (struct ot_strlist){0};
}

static enum ot_err strlist_append(struct ot_strlist *l, const char *s, size_t n)
{
    char *item = strndup(s, n);
    char **v = item ? reallocarray(l->v, l->n + 1, sizeof(*v)) : NULL;
    if (!v) {
        free(item);
        return OT_ERR_NOMEM;
    }
    v[l->n++] = item;
    l->v = v;
    return OT_OK;
}

enum ot_err ot_strlist_split(const char *s, struct ot_strlist *ret, struct ot_diag *d)
{
    _cleanup_(ot_strlist_release) struct ot_strlist l = {0};
    if (!s)
        return ot_diag_set(d, OT_ERR_INVALID, "list: no string");
    for (const char *p = *skip_blanks(s) ? s : NULL; p;) {
        const char *comma = strchr(p, ',');
        const char *b = skip_blanks(p), *e = comma ? comma : p + strlen(p);
        while (e > b && is_blank(e[-1]))
            e--;
        if (e == b)
            return ot_diag_set(d, OT_ERR_CONFIG, "list has an empty item");
        if (strlist_append(&l, b, (size_t)(e - b)))
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        p = comma ? comma + 1 : NULL;
    }
    *ret = l;
    l = (struct ot_strlist){0};
    return OT_OK;
}

/* ---- table layer: typed values --------------------------------------------------------------- */

static bool section_eq(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static const struct ot_cfg_key *find_key(const struct ot_cfg_key *table, size_t n,
                                         const char *section, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (section_eq(table[i].section, section) && strcmp(table[i].key, key) == 0)
            return &table[i];
    return NULL;
}

/* "port" or "http.port", as the key is named in messages. */
static const char *qualified(const struct ot_cfg_key *k, char *out, size_t size)
{
    if (k->section && *k->section)
        snprintf(out, size, "%s.%s", k->section, k->key);
    else
        snprintf(out, size, "%s", k->key);
    return out;
}

static uint64_t max_or_unlimited(uint64_t max) { return max ? max : UINT64_MAX; }

/* 64K, 10M, 1G... when exact, plain bytes otherwise. */
static const char *show_size(uint64_t v, char out[32])
{
    static const char *const units[] = {"T", "G", "M", "K"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(units); i++) {
        unsigned shift = 40 - 10 * (unsigned)i;
        if (v && v % (UINT64_C(1) << shift) == 0) {
            snprintf(out, 32, "%llu%s", (unsigned long long)(v >> shift), units[i]);
            return out;
        }
    }
    snprintf(out, 32, "%llu", (unsigned long long)v);
    return out;
}

/* 1h, 30s, 250ms... in the largest exact unit. */
static const char *show_duration(uint64_t ms, char out[32])
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    for (size_t i = 0; i < OT_ARRAY_SIZE(units); i++)
        if ((ms && ms % units[i].ms == 0) || units[i].ms == 1) {
            snprintf(out, 32, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return out;
        }
    return out;
}

typedef enum ot_err (*setter_fn)(const struct ot_cfg_key *k, const char *name, const char *value,
                                 void *dst, struct ot_diag *d);

static enum ot_err bad_value(struct ot_diag *d, const char *name, const char *value,
                             const char *problem)
{
    char ex[EXCERPT_MAX + 4];
    return ot_diag_set(d, OT_ERR_CONFIG, "key '%s': value '%s' %s", name, excerpt(value, ex),
                       problem);
}

static enum ot_err out_of_range(struct ot_diag *d, const char *name, const char *value,
                                const char *lo, const char *hi)
{
    char range[80];
    snprintf(range, sizeof(range), "is out of range (%s..%s)", lo, hi);
    return bad_value(d, name, value, range);
}

static enum ot_err set_string(const struct ot_cfg_key *k, const char *name, const char *value,
                              void *dst, struct ot_diag *d)
{
    size_t len = strlen(value), max = k->max ? (size_t)k->max : STRING_MAX_DEFAULT;
    if (len > max)
        return ot_diag_set(d, OT_ERR_CONFIG, "key '%s': value is longer than %zu bytes", name, max);
    if (len < k->min)
        return ot_diag_set(d, OT_ERR_CONFIG, "key '%s': value is shorter than %llu bytes", name,
                           (unsigned long long)k->min);
    char *copy = strdup(value);
    if (!copy)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    free(*(char **)dst);
    *(char **)dst = copy;
    return OT_OK;
}

static enum ot_err set_u64(const struct ot_cfg_key *k, const char *name, const char *value,
                           void *dst, struct ot_diag *d)
{
    uint64_t v, max = max_or_unlimited(k->max);
    enum ot_err err = ot_parse_u64(value, k->min, max, &v);
    if (err == OT_ERR_RANGE) {
        char lo[24], hi[24];
        snprintf(lo, sizeof(lo), "%llu", (unsigned long long)k->min);
        snprintf(hi, sizeof(hi), "%llu", (unsigned long long)max);
        return out_of_range(d, name, value, lo, hi);
    }
    if (err)
        return bad_value(d, name, value, "is not a number");
    *(uint64_t *)dst = v;
    return OT_OK;
}

static enum ot_err set_bool(const struct ot_cfg_key *k, const char *name, const char *value,
                            void *dst, struct ot_diag *d)
{
    if (ot_parse_bool(value, (bool *)dst) != OT_OK)
        return bad_value(d, name, value, "is not a boolean (use true/false, yes/no, on/off, 1/0)");
    return OT_OK;
}

static enum ot_err set_size(const struct ot_cfg_key *k, const char *name, const char *value,
                            void *dst, struct ot_diag *d)
{
    uint64_t v, max = max_or_unlimited(k->max);
    enum ot_err err = ot_parse_size(value, max, &v);
    if (err == OT_ERR_FORMAT)
        return bad_value(d, name, value, "is not a size (use 512, 64K, 10M, 1G)");
    if (err || v < k->min) {
        char lo[32], hi[32];
        return out_of_range(d, name, value, show_size(k->min, lo), show_size(max, hi));
    }
    *(uint64_t *)dst = v;
    return OT_OK;
}

static enum ot_err set_duration(const struct ot_cfg_key *k, const char *name, const char *value,
                                void *dst, struct ot_diag *d)
{
    uint64_t v, max = max_or_unlimited(k->max);
    enum ot_err err = ot_parse_duration_ms(value, max, &v);
    if (err == OT_ERR_FORMAT)
        return bad_value(d, name, value, "is not a duration (use 30s, 5m, 1h)");
    if (err || v < k->min) {
        char lo[32], hi[32];
        return out_of_range(d, name, value, show_duration(k->min, lo), show_duration(max, hi));
    }
    *(uint64_t *)dst = v;
    return OT_OK;
}

/* min and max bound the number of items (max 0: no limit); each item is a string of at most the
 * default string length. */
static enum ot_err set_strlist(const struct ot_cfg_key *k, const char *name, const char *value,
                               void *dst, struct ot_diag *d)
{
    struct ot_strlist l;
    enum ot_err err = ot_strlist_split(value, &l, d);
    if (err)
        return ot_diag_prefix(d, err, "key '%s'", name);
    if (l.n < k->min || l.n > max_or_unlimited(k->max)) {
        ot_strlist_release(&l);
        return ot_diag_set(d, OT_ERR_CONFIG, "key '%s': list must have %llu..%llu items", name,
                           (unsigned long long)k->min,
                           (unsigned long long)max_or_unlimited(k->max));
    }
    for (size_t i = 0; i < l.n; i++)
        if (strlen(l.v[i]) > STRING_MAX_DEFAULT) {
            ot_strlist_release(&l);
            return ot_diag_set(d, OT_ERR_CONFIG, "key '%s': item %zu is longer than %d bytes", name,
                               i + 1, STRING_MAX_DEFAULT);
        }
    ot_strlist_release((struct ot_strlist *)dst);
    *(struct ot_strlist *)dst = l;
    return OT_OK;
}

static const setter_fn setters[] = {
    [OT_CFG_STRING] = set_string, [OT_CFG_U64] = set_u64,           [OT_CFG_BOOL] = set_bool,
    [OT_CFG_SIZE] = set_size,     [OT_CFG_DURATION] = set_duration, [OT_CFG_STRLIST] = set_strlist,
};

/* Parses value into the field of k; nothing changes on error. */
static enum ot_err set_value(const struct ot_cfg_key *k, const char *value, void *obj,
                             struct ot_diag *d)
{
    char name[160];
    qualified(k, name, sizeof(name));
    if ((unsigned)k->type >= OT_ARRAY_SIZE(setters) || !setters[k->type])
        return ot_diag_set(d, OT_ERR_INTERNAL, "key '%s': unknown type %d", name, (int)k->type);
    return setters[k->type](k, name, value, (char *)obj + k->offset, d);
}

static enum ot_err unknown_key(const char *section, const char *key, struct ot_diag *d)
{
    char ex[EXCERPT_MAX + 4], exs[EXCERPT_MAX + 4];
    if (section && *section)
        return ot_diag_set(d, OT_ERR_CONFIG, "unknown key '%s' in section [%s]", excerpt(key, ex),
                           excerpt(section, exs));
    return ot_diag_set(d, OT_ERR_CONFIG, "unknown key '%s'", excerpt(key, ex));
}

enum ot_err ot_cfg_set(const struct ot_cfg_key *table, size_t n, const char *section,
                       const char *key, const char *value, void *obj, struct ot_diag *d)
{
    if (!key || !value || !obj)
        return ot_diag_set(d, OT_ERR_INVALID, "config set: no key, value or object");
    const struct ot_cfg_key *k = find_key(table, n, section, key);
    if (!k)
        return unknown_key(section, key, d);
    return set_value(k, value, obj, d);
}

/* Defaults of the keys of one section, or of every section when all is set. A default that does
 * not parse is a bug in the table, not in the file. */
static enum ot_err set_defaults(const struct ot_cfg_key *table, size_t n, bool all,
                                const char *section, void *obj, struct ot_diag *d)
{
    for (size_t i = 0; i < n; i++) {
        if (!table[i].def || (!all && !section_eq(table[i].section, section)))
            continue;
        if (set_value(&table[i], table[i].def, obj, d) != OT_OK) {
            if (d)
                d->err = OT_ERR_INTERNAL;
            return ot_diag_prefix(d, OT_ERR_INTERNAL, "config table: bad default");
        }
    }
    return OT_OK;
}

enum ot_err ot_cfg_defaults(const struct ot_cfg_key *table, size_t n, const char *section,
                            void *obj, struct ot_diag *d)
{
    return set_defaults(table, n, false, section, obj, d);
}

void ot_cfg_release(const struct ot_cfg_key *table, size_t n, void *obj)
{
    for (size_t i = 0; obj && i < n; i++) {
        void *field = (char *)obj + table[i].offset;
        if (table[i].type == OT_CFG_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (table[i].type == OT_CFG_STRLIST) {
            ot_strlist_release(field);
        }
    }
}

/* ---- table layer: whole files ---------------------------------------------------------------- */

struct load {
    const struct ot_cfg_key *table;
    size_t n;
    void *obj;
    const struct parser *parser; /* for the current line */
    unsigned *first_line;        /* per table entry: line that set it, 0 when not yet */
};

static bool section_known(const struct ot_cfg_key *table, size_t n, const char *section)
{
    for (size_t i = 0; i < n; i++)
        if (section_eq(table[i].section, section))
            return true;
    return false;
}

static enum ot_err load_header(struct load *l, const char *section, const char *name,
                               struct ot_diag *d)
{
    char ex[EXCERPT_MAX + 4];
    if (*name)
        return ot_diag_set(d, OT_ERR_CONFIG,
                           "section [%s \"%s\"]: named sections are not allowed in this file",
                           section, excerpt(name, ex));
    if (!section_known(l->table, l->n, section))
        return ot_diag_set(d, OT_ERR_CONFIG, "unknown section [%s]", section);
    return OT_OK;
}

static enum ot_err load_entry(void *userdata, const char *section, const char *name,
                              const char *key, const char *value, struct ot_diag *d)
{
    struct load *l = userdata;
    if (!key)
        return load_header(l, section, name, d);
    const struct ot_cfg_key *k = find_key(l->table, l->n, section, key);
    if (!k)
        return unknown_key(section, key, d);
    size_t i = (size_t)(k - l->table);
    if (l->first_line[i]) {
        char qname[160];
        return ot_diag_set(d, OT_ERR_CONFIG, "duplicate key '%s' (first set on line %u)",
                           qualified(k, qname, sizeof(qname)), l->first_line[i]);
    }
    l->first_line[i] = l->parser->line;
    return set_value(k, value, l->obj, d);
}

static enum ot_err load_file(const char *path, struct load *l, struct ot_diag *d)
{
    struct ot_buf b;
    ot_buf_init(&b, OT_CFG_FILE_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    if (err == OT_ERR_LIMIT) { /* the message already says "<path>: larger than ..." */
        err = OT_ERR_CONFIG;
        if (d)
            d->err = err;
    }
    _cleanup_free_ struct parser *p = err ? NULL : parser_new(path, load_entry, l);
    if (!err && !p)
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!err) {
        l->parser = p;
        err = parser_run(p, b.data, b.len, d);
    }
    ot_buf_release(&b);
    return err;
}

enum ot_err ot_cfg_load(const char *path, const struct ot_cfg_key *table, size_t n, void *obj,
                        struct ot_diag *d)
{
    _cleanup_free_ unsigned *first_line = calloc(n ? n : 1, sizeof(*first_line));
    if (!first_line)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct load l = {.table = table, .n = n, .obj = obj, .first_line = first_line};
    enum ot_err err = set_defaults(table, n, true, NULL, obj, d);
    if (!err)
        err = load_file(path, &l, d);
    if (err)
        ot_cfg_release(table, n, obj); /* nothing half-loaded is left for the caller to use */
    return err;
}
