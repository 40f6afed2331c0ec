/* Declarative configuration files (redis/git style).
 *
 * Syntax, one entry per line:
 *     # comment            ; comment
 *     key = value          value runs to the end of the line, surrounding blanks trimmed
 *     key = "quoted"       \" \\ \n \t escapes; anything after the closing quote is an error
 *     [section]
 *     [section "name"]     a named section (repeatable with different names: [payload "rootfs"])
 * Each program declares its keys in one table with type, range and default. Unknown keys, unknown
 * sections, duplicate keys, bad values and malformed lines are errors reported as "file:line: ...".
 * Everything is validated before the caller does any I/O with the result. */
#ifndef OTTER_CONFIG_H
#define OTTER_CONFIG_H

#include "otter/buf.h"

#define OT_CFG_FILE_MAX (1024 * 1024)
#define OT_CFG_LINE_MAX 4096

enum ot_cfg_type {
    OT_CFG_STRING,   /* char *, malloc'd; max = maximum length (0: 4095) */
    OT_CFG_U64,      /* uint64_t in [min, max] */
    OT_CFG_BOOL,     /* bool */
    OT_CFG_SIZE,     /* uint64_t bytes, "64K"/"10M" suffixes, in [min, max] */
    OT_CFG_DURATION, /* uint64_t milliseconds, "30s"/"5m" units, in [min, max] */
    OT_CFG_STRLIST,  /* struct ot_strlist: comma-separated, each item trimmed, none empty */
};

struct ot_strlist {
    char **v; /* n malloc'd strings */
    size_t n;
};

struct ot_cfg_key {
    const char *section; /* NULL: top level; for named sections, the section type ("payload") */
    const char *key;
    enum ot_cfg_type type;
    size_t offset;       /* offsetof(struct your_config, field) */
    uint64_t min, max;
    const char *def;     /* default in config syntax, parsed by the same code; NULL: none */
    const char *help;    /* one line, for --help and docs */
};

/* Low-level: one callback per key = value, with its section, section name ("" when none) and line.
 * Returning an error stops the parse; the error's message is prefixed with "file:line: ". */
typedef enum ot_err (*ot_cfg_entry_fn)(void *userdata, const char *section, const char *name,
                                       const char *key, const char *value, struct ot_diag *d);
/* Also called for each section header (key and value NULL), so callers can create objects. */
enum ot_err ot_cfg_parse(const char *filename, const uint8_t *buf, size_t len, ot_cfg_entry_fn fn,
                         void *userdata, struct ot_diag *d) OT_MUST_CHECK;

/* Table-driven: sets every default of the keys in section (NULL: top level) on obj. */
enum ot_err ot_cfg_defaults(const struct ot_cfg_key *table, size_t n, const char *section,
                            void *obj, struct ot_diag *d) OT_MUST_CHECK;
/* Parses value for section.key into obj. Unknown key: OT_ERR_CONFIG "unknown key 'k'". */
enum ot_err ot_cfg_set(const struct ot_cfg_key *table, size_t n, const char *section,
                       const char *key, const char *value, void *obj, struct ot_diag *d)
    OT_MUST_CHECK;
/* Reads a whole file with only top-level keys and sections without names ([http] → keys declared
 * with section "http"): defaults, then the file. Duplicate keys are errors. */
enum ot_err ot_cfg_load(const char *path, const struct ot_cfg_key *table, size_t n, void *obj,
                        struct ot_diag *d) OT_MUST_CHECK;
/* Frees the strings and lists the table owns in obj (all sections). */
void ot_cfg_release(const struct ot_cfg_key *table, size_t n, void *obj);
void ot_strlist_release(struct ot_strlist *l);
/* Splits "a, b ,c" into a list; empty items are errors. */
enum ot_err ot_strlist_split(const char *s, struct ot_strlist *ret, struct ot_diag *d) OT_MUST_CHECK;

#endif
