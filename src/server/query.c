/* Dynamic device group filters (query.h): a recursive-descent parser into a small tree, and its
 * evaluation against one device.
 *
 * Bounds: the text is at most SRV_QUERY_TEXT_MAX bytes, the tree at most SRV_QUERY_NODES_MAX
 * nodes, and nesting at most SRV_QUERY_DEPTH_MAX levels, so both the parser's and the
 * evaluator's recursion are bounded whatever the input. The tree and its strings live in one
 * allocation; strings are referenced by offset so the parser can build them in scratch space and
 * copy the result once. */
#include <stdarg.h>
#include <strings.h>

#include "query.h"

enum kind { N_OR, N_AND, N_NOT, N_CMP, N_IN, N_EXISTS, N_TAG, N_VALUE };
enum field { F_DEVICE_TYPE, F_STATUS, F_ID, F_ATTR, F_IDENTITY, F_VERSION };
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_GLOB };

#define NONE UINT16_MAX /* no child / sibling */

struct node {
    uint8_t kind;     /* enum kind */
    uint8_t field;    /* enum field: N_CMP, N_IN, N_EXISTS */
    uint8_t op;       /* enum op: N_CMP */
    bool negate;      /* N_IN: "not in" */
    uint16_t first;   /* first child: N_OR, N_AND, N_NOT, and the values of N_IN */
    uint16_t next;    /* next sibling */
    uint32_t key;     /* string offset: attr/identity key, payload name, tag */
    uint32_t value;   /* string offset: N_CMP, N_VALUE */
};

struct srv_query {
    uint16_t root;
    uint16_t nnodes;
    char *strs;       /* into this allocation, after nodes */
    struct node nodes[];
};

/* Every string of the tree decodes to at most its source bytes, plus a NUL that its delimiter
 * (quote, dot, operator or blank) or the text's own NUL pays for; the slack is for safety. */
#define STRS_MAX (SRV_QUERY_TEXT_MAX + 16)

struct parser {
    const char *s;
    size_t pos;
    unsigned depth;
    struct ot_diag *d;
    size_t nnodes, nstrs;
    struct node nodes[SRV_QUERY_NODES_MAX];
    char strs[STRS_MAX];
};

/* ---- characters: ASCII only, no locale ---------------------------------------------------------- */

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_word(int c) { return is_alpha(c) || is_digit(c) || c == '_'; }
static bool is_key(int c) { return is_word(c) || c == '.' || c == ':' || c == '-'; }
static bool is_blank(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* ---- version order ------------------------------------------------------------------------------ */

/* dpkg's order of a non-digit: '~' first, the end (and a digit, which ends the run) next, then
 * letters, then everything else. */
static int order(unsigned char c)
{
    if (is_digit(c) || c == '\0')
        return 0;
    if (is_alpha(c))
        return c;
    if (c == '~')
        return -1;
    return c + 256;
}

int srv_version_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    while (*x || *y) {
        /* the loop advances only past equal non-digits, never past a NUL: order(0) is unique to
         * the end and digits, and a digit's side stops the loop */
        while ((*x && !is_digit(*x)) || (*y && !is_digit(*y))) {
            int ox = order(*x), oy = order(*y);
            if (ox != oy)
                return ox < oy ? -1 : 1;
            x++, y++;
        }
        while (*x == '0')
            x++;
        while (*y == '0')
            y++;
        int first_diff = 0;
        for (; is_digit(*x) && is_digit(*y); x++, y++)
            if (!first_diff)
                first_diff = *x - *y;
        if (is_digit(*x))
            return 1;
        if (is_digit(*y))
            return -1;
        if (first_diff)
            return first_diff < 0 ? -1 : 1;
    }
    return 0;
}

/* ---- numbers, exactly ---------------------------------------------------------------------------- */

struct decimal {
    bool neg;
    const char *ip, *fp; /* integer digits without leading zeros, fraction without trailing ones */
    size_t il, fl;
};

/* "-"? [0-9]+ ("." [0-9]+)?, the whole string. Compared digit by digit, not through a double, so
 * 64-bit ids and long serial numbers keep their order. */
static bool decimal_parse(const char *s, struct decimal *ret)
{
    struct decimal v = {.neg = *s == '-'};
    s += v.neg;
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    if (n == 0)
        return false;
    v.ip = s, v.il = n;
    s += n;
    v.fp = s;
    if (*s == '.') {
        v.fp = ++s;
        while (is_digit(s[v.fl]))
            v.fl++;
        if (v.fl == 0)
            return false;
        s += v.fl;
    }
    if (*s)
        return false;
    while (v.il && *v.ip == '0')
        v.ip++, v.il--;
    while (v.fl && v.fp[v.fl - 1] == '0')
        v.fl--;
    if (v.il == 0 && v.fl == 0)
        v.neg = false; /* -0 = 0 */
    *ret = v;
    return true;
}

static bool is_number(const char *s)
{
    struct decimal v;
    return decimal_parse(s, &v);
}

static int magnitude_cmp(const struct decimal *a, const struct decimal *b)
{
    if (a->il != b->il)
        return a->il < b->il ? -1 : 1;
    int c = memcmp(a->ip, b->ip, a->il);
    if (c)
        return c < 0 ? -1 : 1;
    for (size_t i = 0; i < a->fl || i < b->fl; i++) {
        char x = i < a->fl ? a->fp[i] : '0', y = i < b->fl ? b->fp[i] : '0';
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* false unless both are numbers */
static bool decimal_cmp(const char *a, const char *b, int *ret)
{
    struct decimal x, y;
    if (!decimal_parse(a, &x) || !decimal_parse(b, &y))
        return false;
    if (x.neg != y.neg)
        *ret = x.neg ? -1 : 1;
    else
        *ret = x.neg ? -magnitude_cmp(&x, &y) : magnitude_cmp(&x, &y);
    return true;
}

/* ---- glob ---------------------------------------------------------------------------------------- */

static const char *next_char(const char *s)
{
    s++;
    while (((unsigned char)*s & 0xc0) == 0x80)
        s++;
    return s;
}

/* '*' any run, '?' one UTF-8 character, '\' quotes the next byte. Iterative with one backtrack
 * point (the last '*'): no recursion for a hostile pattern to exploit, O(len(pat) * len(str)) at
 * worst. Bounded by the text limit and the device's values (OT_WIRE_VALUE_MAX): the worst case
 * measured, "*" + 512 'a' + "b" against 1024 'a', takes about 0.35 ms. */
static bool glob_match(const char *pat, const char *str)
{
    const char *star_p = NULL, *star_s = NULL;
    while (*str) {
        if (*pat == '*') {
            star_p = ++pat;
            star_s = str;
            continue;
        }
        if (*pat == '?') {
            pat++;
            str = next_char(str);
            continue;
        }
        if (*pat) {
            const char *lit = *pat == '\\' && pat[1] ? pat + 1 : pat;
            if (*lit == *str) {
                pat = lit + 1;
                str++;
                continue;
            }
        }
        if (!star_p)
            return false;
        pat = star_p;
        str = star_s = next_char(star_s);
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

/* ---- parser: tokens -------------------------------------------------------------------------------- */

static enum ot_err fail(struct parser *p, enum ot_err err, size_t pos, const char *fmt, ...)
    OT_PRINTF(4, 5);
static enum ot_err fail(struct parser *p, enum ot_err err, size_t pos, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return ot_diag_set(p->d, err, "at column %zu: %s", pos + 1, what);
}

/* What is at pos, for a message: the input itself only as one printable ASCII character. */
static const char *found(const struct parser *p, char buf[32])
{
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c == '\0')
        snprintf(buf, 32, "the end of the filter");
    else if (c == '"')
        snprintf(buf, 32, "a string");
    else if (is_digit(c) || c == '-')
        snprintf(buf, 32, "a number");
    else if (c > ' ' && c < 0x7f)
        snprintf(buf, 32, "'%c'", c);
    else
        snprintf(buf, 32, "byte 0x%02x", c);
    return buf;
}

static enum ot_err expected(struct parser *p, const char *what)
{
    char buf[32];
    return fail(p, OT_ERR_FORMAT, p->pos, "expected %s, found %s", what, found(p, buf));
}

static void skip_blanks(struct parser *p)
{
    while (is_blank(p->s[p->pos]))
        p->pos++;
}

static size_t word_len(const struct parser *p)
{
    size_t n = 0;
    if (is_alpha(p->s[p->pos]) || p->s[p->pos] == '_')
        while (is_word(p->s[p->pos + n]))
            n++;
    return n;
}

/* Consumes the word w (case-insensitive) when it is next, whole. */
static bool accept_word(struct parser *p, const char *w)
{
    skip_blanks(p);
    size_t n = word_len(p);
    if (n != strlen(w) || strncasecmp(p->s + p->pos, w, n) != 0)
        return false;
    p->pos += n;
    return true;
}

static bool accept_char(struct parser *p, char c)
{
    skip_blanks(p);
    if (p->s[p->pos] != c)
        return false;
    p->pos++;
    return true;
}

static enum ot_err expect_char(struct parser *p, char c)
{
    if (accept_char(p, c))
        return OT_OK;
    char what[8];
    snprintf(what, sizeof(what), "'%c'", c);
    return expected(p, what);
}

static uint32_t str_begin(const struct parser *p) { return (uint32_t)p->nstrs; }

static enum ot_err str_put(struct parser *p, char c)
{
    if (p->nstrs >= STRS_MAX) /* cannot happen for text within SRV_QUERY_TEXT_MAX */
        return fail(p, OT_ERR_INTERNAL, p->pos, "string space exhausted");
    p->strs[p->nstrs++] = c;
    return OT_OK;
}

/* Copies n bytes of the text from start as a string; its offset at *ret. */
static enum ot_err str_copy(struct parser *p, size_t start, size_t n, uint32_t *ret)
{
    uint32_t off = str_begin(p);
    enum ot_err err = OT_OK;
    for (size_t i = 0; !err && i < n; i++)
        err = str_put(p, p->s[start + i]);
    if (!err)
        err = str_put(p, '\0');
    *ret = off;
    return err;
}

/* A string token; its decoded bytes (NUL-terminated) at *ret, 1..max bytes when max. */
static enum ot_err parse_string(struct parser *p, size_t min, size_t max, const char *what,
                                uint32_t *ret)
{
    skip_blanks(p);
    size_t start = p->pos;
    if (p->s[p->pos] != '"')
        return expected(p, what);
    p->pos++;
    uint32_t off = str_begin(p);
    enum ot_err err = OT_OK;
    for (char c; !err && (c = p->s[p->pos]) != '"'; p->pos++) {
        if (c == '\0')
            return fail(p, OT_ERR_FORMAT, start, "unterminated string");
        if (c == '\\') {
            c = p->s[p->pos + 1];
            if (c != '"' && c != '\\')
                return fail(p, OT_ERR_FORMAT, p->pos,
                            "unknown escape in a string (only \\\" and \\\\)");
            p->pos++;
        }
        err = str_put(p, c);
    }
    if (!err)
        err = str_put(p, '\0');
    if (err)
        return err;
    p->pos++;
    size_t len = p->nstrs - off - 1;
    if (len < min || (max && len > max))
        return fail(p, OT_ERR_FORMAT, start, "%s must be %zu to %zu bytes", what, min, max);
    *ret = off;
    return OT_OK;
}

static enum ot_err parse_number(struct parser *p, uint32_t *ret)
{
    size_t start = p->pos, n = p->s[p->pos] == '-';
    while (is_digit(p->s[start + n]) || p->s[start + n] == '.')
        n++;
    uint32_t off;
    enum ot_err err = str_copy(p, start, n, &off);
    if (err)
        return err;
    if (!is_number(p->strs + off) || is_word(p->s[start + n]) || p->s[start + n] == '-')
        return fail(p, OT_ERR_FORMAT, start,
                    "malformed number (a number is like 12, -3 or 4.5; quote other values: "
                    "\"4.2.1\")");
    p->pos += n;
    *ret = off;
    return OT_OK;
}

static enum ot_err parse_value(struct parser *p, uint32_t *ret)
{
    skip_blanks(p);
    char c = p->s[p->pos];
    if (c == '"')
        return parse_string(p, 0, 0, "a value", ret);
    if (is_digit(c) || c == '-')
        return parse_number(p, ret);
    return expected(p, "a value (a \"string\" or a number)");
}

/* ---- parser: the tree ------------------------------------------------------------------------------ */

static enum ot_err new_node(struct parser *p, enum kind k, uint16_t *ret)
{
    if (p->nnodes >= SRV_QUERY_NODES_MAX)
        return fail(p, OT_ERR_LIMIT, p->pos, "the filter has more than %d nodes",
                    SRV_QUERY_NODES_MAX);
    p->nodes[p->nnodes] = (struct node){.kind = k, .first = NONE, .next = NONE};
    *ret = (uint16_t)p->nnodes++;
    return OT_OK;
}

static enum ot_err parse_or(struct parser *p, uint16_t *ret);

/* attr.<key> or attr["key"] (and identity): the key's string at *ret. */
static enum ot_err parse_key(struct parser *p, const char *name, uint32_t *ret)
{
    if (p->s[p->pos] == '.') { /* the key is part of the word: no blanks around the dot */
        size_t start = ++p->pos, n = 0;
        while (is_key(p->s[start + n]))
            n++;
        if (n == 0 || n > SRV_QUERY_KEY_MAX)
            return fail(p, OT_ERR_FORMAT, start, "expected a key of 1 to %d of [A-Za-z0-9_.:-] "
                        "after '%s.' (or %s[\"key\"])", SRV_QUERY_KEY_MAX, name, name);
        p->pos += n;
        return str_copy(p, start, n, ret);
    }
    if (!accept_char(p, '[')) {
        char what[48];
        snprintf(what, sizeof(what), "'.' or '[' after '%s'", name);
        return expected(p, what);
    }
    enum ot_err err = parse_string(p, 1, SRV_QUERY_KEY_MAX, "a \"key\"", ret);
    return err ? err : expect_char(p, ']');
}

static const char FIELDS[] = "a field (device_type, status, id, attr.<key>, identity.<key>, "
                             "version(\"<payload>\"))";

static enum ot_err parse_operand(struct parser *p, struct node *n)
{
    skip_blanks(p);
    size_t start = p->pos, len = word_len(p);
    static const char *const names[] = {
        [F_DEVICE_TYPE] = "device_type", [F_STATUS] = "status", [F_ID] = "id",
        [F_ATTR] = "attr", [F_IDENTITY] = "identity", [F_VERSION] = "version"};
    for (size_t f = 0; f < OT_ARRAY_SIZE(names); f++) {
        if (len != strlen(names[f]) || strncasecmp(p->s + start, names[f], len) != 0)
            continue;
        p->pos += len;
        n->field = (uint8_t)f;
        if (f == F_ATTR || f == F_IDENTITY)
            return parse_key(p, names[f], &n->key);
        if (f != F_VERSION)
            return OT_OK;
        enum ot_err err = expect_char(p, '(');
        if (!err)
            err = parse_string(p, 1, SRV_QUERY_NAME_MAX, "a \"payload name\"", &n->key);
        return err ? err : expect_char(p, ')');
    }
    if (len == 3 && strncasecmp(p->s + start, "tag", 3) == 0)
        return fail(p, OT_ERR_FORMAT, start, "'tag' is a function: tag(\"name\")");
    if (len)
        return fail(p, OT_ERR_FORMAT, start, "unknown field '%.*s'; expected %s",
                    (int)OT_MIN(len, (size_t)32), p->s + start, FIELDS);
    return expected(p, FIELDS);
}

/* id is a number: its values must be too (but a glob matches its decimal text). */
static enum ot_err check_id_value(struct parser *p, const struct node *n, uint32_t value,
                                  size_t pos)
{
    if (n->field != F_ID || (n->kind == N_CMP && n->op == OP_GLOB) || is_number(p->strs + value))
        return OT_OK;
    return fail(p, OT_ERR_FORMAT, pos, "id compares with numbers");
}

/* The values of an in list become the node's children. */
static enum ot_err parse_list(struct parser *p, uint16_t in)
{
    enum ot_err err = expect_char(p, '(');
    uint16_t prev = NONE;
    do {
        uint16_t v = NONE;
        if (!err)
            err = new_node(p, N_VALUE, &v);
        skip_blanks(p);
        size_t at = p->pos;
        if (!err)
            err = parse_value(p, &p->nodes[v].value);
        if (!err)
            err = check_id_value(p, &p->nodes[in], p->nodes[v].value, at);
        if (err)
            return err;
        if (prev == NONE)
            p->nodes[in].first = v;
        else
            p->nodes[prev].next = v;
        prev = v;
    } while (accept_char(p, ','));
    return expect_char(p, ')');
}

static enum ot_err parse_op(struct parser *p, uint8_t *ret)
{
    static const struct {
        const char *text;
        enum op op;
    } ops[] = {{"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE}, {"=", OP_EQ},
               {"<", OP_LT},  {">", OP_GT},  {"~", OP_GLOB}};
    skip_blanks(p);
    for (size_t i = 0; i < OT_ARRAY_SIZE(ops); i++) {
        size_t n = strlen(ops[i].text);
        if (strncmp(p->s + p->pos, ops[i].text, n) == 0) {
            p->pos += n;
            *ret = (uint8_t)ops[i].op;
            return OT_OK;
        }
    }
    return expected(p, "an operator (=, !=, <, <=, >, >=, ~, in, not in)");
}

static enum ot_err parse_comparison(struct parser *p, uint16_t *ret)
{
    uint16_t i = NONE;
    enum ot_err err = new_node(p, N_CMP, &i);
    if (!err)
        err = parse_operand(p, &p->nodes[i]);
    if (err)
        return err;
    struct node *n = &p->nodes[i]; /* a fixed array: stays put while nodes are added */
    bool in = accept_word(p, "in");
    if (!in && accept_word(p, "not")) {
        if (!accept_word(p, "in"))
            return expected(p, "'in' after 'not'");
        in = n->negate = true;
    }
    if (in) {
        n->kind = N_IN;
        err = parse_list(p, i);
    } else {
        err = parse_op(p, &n->op);
        skip_blanks(p);
        size_t at = p->pos;
        if (!err)
            err = parse_value(p, &n->value);
        if (!err)
            err = check_id_value(p, n, n->value, at);
    }
    *ret = i;
    return err;
}

static enum ot_err parse_unary(struct parser *p, uint16_t *ret);

/* "not" and "(" nest: both are bounded by SRV_QUERY_DEPTH_MAX. */
static enum ot_err parse_nested(struct parser *p, bool not, size_t at, uint16_t *ret)
{
    if (++p->depth > SRV_QUERY_DEPTH_MAX)
        return fail(p, OT_ERR_LIMIT, at, "nested deeper than %d levels", SRV_QUERY_DEPTH_MAX);
    enum ot_err err;
    if (not) {
        err = new_node(p, N_NOT, ret);
        if (!err)
            err = parse_unary(p, &p->nodes[*ret].first);
    } else {
        err = parse_or(p, ret);
        if (!err)
            err = expect_char(p, ')');
    }
    p->depth--;
    return err;
}

static enum ot_err parse_unary(struct parser *p, uint16_t *ret)
{
    skip_blanks(p);
    size_t at = p->pos;
    if (accept_word(p, "not"))
        return parse_nested(p, true, at, ret);
    if (accept_char(p, '('))
        return parse_nested(p, false, at, ret);
    bool tag = accept_word(p, "tag");
    if (tag || accept_word(p, "exists")) {
        enum ot_err err = new_node(p, tag ? N_TAG : N_EXISTS, ret);
        if (!err)
            err = expect_char(p, '(');
        if (!err && tag)
            err = parse_string(p, 1, SRV_QUERY_NAME_MAX, "a \"tag\"", &p->nodes[*ret].key);
        else if (!err)
            err = parse_operand(p, &p->nodes[*ret]);
        return err ? err : expect_char(p, ')');
    }
    return parse_comparison(p, ret);
}

/* and := unary ("and" unary)*, or := and ("or" and)*: one node with a list of children. */
static enum ot_err parse_chain(struct parser *p, enum kind k, uint16_t *ret)
{
    const char *w = k == N_AND ? "and" : "or";
    uint16_t first = NONE;
    enum ot_err err = k == N_AND ? parse_unary(p, &first) : parse_chain(p, N_AND, &first);
    if (err || !accept_word(p, w)) {
        *ret = first;
        return err;
    }
    uint16_t chain = NONE, last = first;
    if ((err = new_node(p, k, &chain)) != OT_OK)
        return err;
    p->nodes[chain].first = first;
    do {
        uint16_t next;
        err = k == N_AND ? parse_unary(p, &next) : parse_chain(p, N_AND, &next);
        if (err)
            return err;
        p->nodes[last].next = next;
        last = next;
    } while (accept_word(p, w));
    *ret = chain;
    return OT_OK;
}

static enum ot_err parse_or(struct parser *p, uint16_t *ret) { return parse_chain(p, N_OR, ret); }

enum ot_err srv_query_parse(const char *text, struct srv_query **ret, struct ot_diag *d)
{
    if (!text || !ret)
        return ot_diag_set(d, OT_ERR_INVALID, "no filter");
    size_t len = strnlen(text, SRV_QUERY_TEXT_MAX + 1);
    if (len > SRV_QUERY_TEXT_MAX)
        return ot_diag_set(d, OT_ERR_LIMIT, "at column %d: the filter is longer than %d bytes",
                           SRV_QUERY_TEXT_MAX + 1, SRV_QUERY_TEXT_MAX);
    _cleanup_free_ struct parser *p = malloc(sizeof(*p));
    if (!p)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    *p = (struct parser){.s = text, .d = d};
    uint16_t root;
    enum ot_err err = parse_or(p, &root);
    if (err)
        return err;
    skip_blanks(p);
    if (p->s[p->pos])
        return expected(p, "'and', 'or' or the end of the filter");
    size_t nodes = p->nnodes * sizeof(struct node);
    struct srv_query *q = malloc(sizeof(*q) + nodes + p->nstrs);
    if (!q)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    q->root = root;
    q->nnodes = (uint16_t)p->nnodes;
    memcpy(q->nodes, p->nodes, nodes);
    q->strs = (char *)q->nodes + nodes;
    memcpy(q->strs, p->strs, p->nstrs);
    *ret = q;
    return OT_OK;
}

void srv_query_free(struct srv_query *q) { free(q); }

/* ---- evaluation ------------------------------------------------------------------------------------ */

/* A JSON scalar as text (buf for numbers and booleans); NULL for anything else. */
static const char *scalar_text(const json_t *v, char buf[40])
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, 40, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, 40, "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, 40, "%s", json_is_true(v) ? "true" : "false");
    else
        return NULL;
    return buf;
}

/* The operand's text on this device, or NULL when the device lacks it. */
static const char *operand(const struct srv_query *q, const struct node *n,
                           const struct srv_query_device *dev, char buf[40])
{
    const char *key = q->strs + n->key;
    switch ((enum field)n->field) {
    case F_DEVICE_TYPE:
        return dev->device_type && dev->device_type[0] ? dev->device_type : NULL;
    case F_STATUS:
        return dev->status && dev->status[0] ? dev->status : NULL;
    case F_ID:
        snprintf(buf, 40, "%lld", (long long)dev->id);
        return buf;
    case F_ATTR:
        return scalar_text(json_object_get(dev->attributes, key), buf);
    case F_IDENTITY:
        return scalar_text(json_object_get(dev->identity, key), buf);
    case F_VERSION:
        return json_string_value(json_object_get(json_object_get(dev->installed, key), "version"));
    }
    return NULL;
}

/* have (the device's) against want (the query's) by the field's rule; equality only when eq. */
static int field_cmp(enum field f, bool eq, const char *have, const char *want)
{
    int c;
    if (f == F_VERSION)
        return srv_version_cmp(have, want);
    if (f == F_ID && decimal_cmp(have, want, &c))
        return c;
    if (!eq && decimal_cmp(have, want, &c))
        return c;
    return strcmp(have, want);
}

static bool compare(enum field f, enum op op, const char *have, const char *want)
{
    if (op == OP_GLOB)
        return glob_match(want, have);
    int c = field_cmp(f, op == OP_EQ || op == OP_NE, have, want);
    switch (op) {
    case OP_EQ: return c == 0;
    case OP_NE: return c != 0;
    case OP_LT: return c < 0;
    case OP_LE: return c <= 0;
    case OP_GT: return c > 0;
    case OP_GE: return c >= 0;
    case OP_GLOB: break;
    }
    return false;
}

static bool has_tag(const struct srv_query_device *dev, const char *tag)
{
    for (size_t i = 0; dev->tags && i < dev->ntags; i++)
        if (dev->tags[i] && strcmp(dev->tags[i], tag) == 0)
            return true;
    return false;
}

/* Recursion depth is the tree's: at most about 3 * SRV_QUERY_DEPTH_MAX (or, and, not/paren). */
static bool eval(const struct srv_query *q, uint16_t i, const struct srv_query_device *dev)
{
    const struct node *n = &q->nodes[i];
    char buf[40];
    const char *have;
    switch ((enum kind)n->kind) {
    case N_OR:
    case N_AND:
        for (uint16_t k = n->first; k != NONE; k = q->nodes[k].next)
            if (eval(q, k, dev) == (n->kind == N_OR))
                return n->kind == N_OR;
        return n->kind == N_AND;
    case N_NOT:
        return !eval(q, n->first, dev);
    case N_TAG:
        return has_tag(dev, q->strs + n->key);
    case N_EXISTS:
        return operand(q, n, dev, buf) != NULL;
    case N_CMP:
        have = operand(q, n, dev, buf);
        return have && compare(n->field, n->op, have, q->strs + n->value);
    case N_IN:
        if (!(have = operand(q, n, dev, buf)))
            return false;
        for (uint16_t k = n->first; k != NONE; k = q->nodes[k].next)
            if (compare(n->field, OP_EQ, have, q->strs + q->nodes[k].value))
                return !n->negate;
        return n->negate;
    case N_VALUE:
        break;
    }
    return false;
}

bool srv_query_match(const struct srv_query *q, const struct srv_query_device *dev)
{
    return q && dev && eval(q, q->root, dev);
}
