/* otter pack: the release description, gathered from a spec file and command-line flags before
 * anything is read, then turned into a manifest. Flags add to or override the spec:
 * --name/--version/--security-version replace, --provides/--depends replace the same key,
 * --device-type adds, --payload adds or replaces the payload of the same name. */
#ifndef OTTER_TOOL_PACK_SPEC_H
#define OTTER_TOOL_PACK_SPEC_H

#include "otter/config.h"
#include "otter/manifest.h"

#define TOOL_ORIGIN_MAX 300

/* Fields declared in the config table (one per section type). */
struct tool_spec_top {
    char *name;
    char *version;
    struct ot_strlist device_types;
    uint64_t security_version;
};

struct tool_spec_payload_fields {
    char *file;
    char *type;
    char *target;
    char *version;
    char *compression;
};

struct tool_kvlist {
    struct ot_kv *v;
    size_t n;
};

struct tool_spec_payload {
    char *name;
    char origin[TOOL_ORIGIN_MAX]; /* "demo.spec: [payload \"x\"]" or "--payload x" */
    struct tool_spec_payload_fields f;
    unsigned set;                 /* bit per field of f set so far (duplicates are errors) */
    struct tool_kvlist args;
    char *path;                   /* the input file: f.file resolved against the spec's directory */
};

struct tool_spec {
    const char *filename;         /* the spec file, NULL when none */
    char *dir;                    /* its directory, for relative payload files */
    struct tool_spec_top top;
    unsigned top_set;
    bool have_security_version;
    struct tool_kvlist provides;
    struct tool_kvlist depends;   /* values are "a|b" alternatives */
    struct tool_spec_payload *payloads;
    size_t npayloads;
    /* parser state */
    const char *section;
    struct tool_spec_payload *cur;
};

void tool_spec_init(struct tool_spec *s);
void tool_spec_release(struct tool_spec *s);

/* Reads and parses a spec file; errors carry "file:line: ". */
enum ot_err tool_spec_load(struct tool_spec *s, const char *path, struct ot_diag *d) OT_MUST_CHECK;

/* Flags. Errors name the flag. */
enum ot_err tool_spec_set_top(struct tool_spec *s, const char *key, const char *value,
                              struct ot_diag *d) OT_MUST_CHECK;
enum ot_err tool_spec_add_device_type(struct tool_spec *s, const char *type, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err tool_spec_set_kv(struct tool_kvlist *l, const char *flag, const char *arg,
                             struct ot_diag *d) OT_MUST_CHECK;
/* --payload 'name=..,file=..,type=..[,target=..][,version=..][,compression=..][,arg.K=V]' */
enum ot_err tool_spec_add_payload_flag(struct tool_spec *s, const char *arg, struct ot_diag *d)
    OT_MUST_CHECK;

/* Checks completeness, then builds the manifest and the list of input files (inputs[i] belongs
 * to m->payloads[i]; the strings are owned by s). */
enum ot_err tool_spec_build(const struct tool_spec *s, struct ot_manifest *m,
                            const char ***ret_inputs, struct ot_diag *d) OT_MUST_CHECK;

#endif
