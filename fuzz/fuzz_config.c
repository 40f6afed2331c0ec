/* libFuzzer harness for the config parser. The callback checks what every event promises (names
 * from the allowed alphabets, bounded lengths, no control characters but escaped \n and \t) and
 * feeds each value through the typed table layer, so the number, size, duration, bool and list
 * parsers are fuzzed too. */
#include <stddef.h>

#include "otter/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
    char *s;
    uint64_t u, size, ms;
    bool b;
    struct ot_strlist list;
    char *named;
};

#define F(field) offsetof(struct sink, field)
static const struct ot_cfg_key table[] = {
    {NULL, "s", OT_CFG_STRING, F(s), 0, 16, "def", NULL},
    {NULL, "u", OT_CFG_U64, F(u), 1, 1000, "7", NULL},
    {NULL, "size", OT_CFG_SIZE, F(size), 1024, UINT64_C(1) << 40, "1M", NULL},
    {NULL, "ms", OT_CFG_DURATION, F(ms), 0, 0, "30s", NULL},
    {NULL, "b", OT_CFG_BOOL, F(b), 0, 0, "yes", NULL},
    {NULL, "list", OT_CFG_STRLIST, F(list), 0, 4, NULL, NULL},
    {"sec", "s", OT_CFG_STRING, F(named), 0, 0, NULL, NULL},
};

struct state {
    struct sink sink;
    bool in_section;
    size_t events;
};

static bool all_in(const char *s, const char *extra, bool dot)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr(extra, c)) || (dot && c == '.');
        if (!ok)
            return false;
    }
    return true;
}

static void check_text(const char *s, bool allow_newline)
{
    if (strlen(s) > OT_CFG_LINE_MAX)
        abort();
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t' && !(allow_newline && c == '\n')) || c == 0x7f)
            abort();
    }
}

static enum ot_err on_entry(void *userdata, const char *section, const char *name, const char *key,
                            const char *value, struct ot_diag *d)
{
    struct state *st = userdata;
    st->events++;
    if (!section || !name || (key == NULL) != (value == NULL))
        abort();
    check_text(name, false);
    if (!key) { /* a header: a section name, maybe a quoted name */
        if (!all_in(section, "_-", false))
            abort();
        st->in_section = true;
        return OT_OK;
    }
    if (st->in_section ? !all_in(section, "_-", false) : (*section || *name))
        abort();
    if (!all_in(key, "_-", true))
        abort();
    check_text(value, true);
    enum ot_err err = ot_cfg_set(table, OT_ARRAY_SIZE(table), section, key, value, &st->sink, d);
    if (err != OT_OK && err != OT_ERR_CONFIG)
        abort();
    struct ot_strlist l;
    if (ot_strlist_split(value, &l, NULL) == OT_OK)
        ot_strlist_release(&l);
    return OT_OK; /* keep going: bad values are fine here, the parser is what is fuzzed */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state st = {0};
    struct ot_diag d = {0};
    if (ot_cfg_defaults(table, OT_ARRAY_SIZE(table), NULL, &st.sink, &d) != OT_OK)
        abort();
    enum ot_err err = ot_cfg_parse("fuzz.conf", data, size, on_entry, &st, &d);
    if (err != OT_OK) {
        /* every syntax error is "fuzz.conf:<line>: ..." (or the size limit) */
        if (err != OT_ERR_CONFIG || strncmp(d.msg, "fuzz.conf:", 10) != 0 ||
            !memchr(d.msg, '\0', sizeof(d.msg)))
            abort();
        for (const char *p = d.msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                abort();
    }
    if (st.events > size) /* at most one event per line, and a line has at least one byte */
        abort();
    ot_cfg_release(table, OT_ARRAY_SIZE(table), &st.sink);
    return 0;
}
