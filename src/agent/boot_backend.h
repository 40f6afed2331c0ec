/* Internals shared by boot.c and the backends (boot_sim.c, boot_grub.c, boot_uboot.c): the ops
 * table each backend provides, the handle, and the key=value environment model that the file
 * backends parse and rewrite. Other agent code uses boot.h only.
 *
 * Division of work: a backend only moves variables between its storage and a struct ag__env
 * (load, store); boot.c owns the A/B protocol (which variables mean what, their validation, the
 * running slot, what try/commit/rollback change). So the protocol is written once, and a
 * backend cannot get it subtly different. */
#ifndef OTTER_AGENT_BOOT_BACKEND_H
#define OTTER_AGENT_BOOT_BACKEND_H

#include "otter/buf.h"

#include "boot.h"

/* The protocol's variables (boot.h). */
#define AG__VAR_DEFAULT "otter_default"
#define AG__VAR_TRY "otter_try"
#define AG__VAR_BOOTCOUNT "otter_bootcount"
#define AG__VAR_MAXTRIES "otter_maxtries"
#define AG__VAR_BOOTED "otter_booted"

#define AG__MAX_TRIES_DEFAULT 3u
/* The bootloader scripts count with a 1-digit table (GRUB has no arithmetic, U-Boot's setexpr
 * prints hex), so counts stay single decimal digits. */
#define AG__MAX_TRIES_MAX 9u

/* Hard limits on what is parsed from a file (GRUB's block is 1024 bytes anyway). */
#define AG__ENV_VARS_MAX 512u
#define AG__SIM_FILE_MAX 4096u

/* One line of a key=value environment. name == NULL: a line that is not a variable (a '#'
 * comment or an empty line), kept verbatim in value so a rewrite reproduces it. value is the
 * raw text as stored (GRUB's backslash escapes are kept as they are). */
struct ag__env_var {
    char *name;
    char *value;
};

/* An environment in file order; owns every string. */
struct ag__env {
    struct ag__env_var *vars;
    size_t n, cap;
};

void ag__env_init(struct ag__env *e);
void ag__env_release(struct ag__env *e);
/* The raw value of name, NULL when absent. */
const char *ag__env_get(const struct ag__env *e, const char *name);
/* Replaces name's value in place, or appends name=value. */
enum ot_err ag__env_set(struct ag__env *e, const char *name, const char *value) OT_MUST_CHECK;

/* Line syntax for ag__env_parse. Both: "name=value\n" lines, '#' comment lines and empty lines
 * kept, NUL bytes refused, at most AG__ENV_VARS_MAX lines, a name appears once. */
enum ag__env_syntax {
    /* The sim file: no escapes; the last line may lack its '\n'. */
    AG__ENV_PLAIN,
    /* The body of a GRUB block after its header: a backslash escapes the next byte (so "\\\n"
     * does not end the line); every variable line ends with '\n'; a final '#' run without '\n'
     * is the block's padding and is dropped. */
    AG__ENV_GRUB,
};
/* Parses text into e (which must be empty); what names the source in messages. OT_ERR_FORMAT
 * with "what: line N: ..." for bad syntax. */
enum ot_err ag__env_parse(struct ag__env *e, const char *text, size_t len, enum ag__env_syntax syn,
                          const char *what, struct ot_diag *d) OT_MUST_CHECK;
/* Appends every line of e to out, each ending with '\n'. */
enum ot_err ag__env_format(const struct ag__env *e, struct ot_buf *out) OT_MUST_CHECK;

/* The protocol variables decoded from an environment: everything in struct ag_boot_state but
 * booted (which may come from the kernel command line). A missing variable takes its default:
 * otter_default "a", otter_try "" (absent and empty are the same), otter_bootcount 0,
 * otter_maxtries def_max_tries. Any other value is OT_ERR_FORMAT naming the variable. */
enum ot_err ag__boot_decode(const struct ag__env *e, unsigned def_max_tries, const char *what,
                            struct ag_boot_state *ret, struct ot_diag *d) OT_MUST_CHECK;
/* "a" or "b" (the canonical string) for a slot name, NULL for anything else. */
const char *ag__slot_name(const char *s);

struct ag__boot_ops {
    const char *kind;
    const char *default_env_path; /* used when the config gives none; NULL: required */
    /* Checks and prepares the environment (b's paths are set). May set b->priv. */
    enum ot_err (*open)(struct ag_boot *b, struct ot_diag *d);
    /* Frees b->priv (never NULL-checked by the caller: must accept an unopened priv). */
    void (*close)(struct ag_boot *b);
    /* Reads the environment now into env (empty). File backends load every line so that store
     * can write back what they do not know; uboot loads the otter_* variables only. */
    enum ot_err (*load)(struct ag_boot *b, struct ag__env *env, struct ot_diag *d);
    /* Writes env atomically. env came from load and only the otter_* variables other than
     * otter_booted were changed; an otter_try of "" means "no trial". */
    enum ot_err (*store)(struct ag_boot *b, const struct ag__env *env, struct ot_diag *d);
};

extern const struct ag__boot_ops ag__boot_sim_ops;
extern const struct ag__boot_ops ag__boot_grub_ops;
extern const struct ag__boot_ops ag__boot_uboot_ops;

/* The handle behind struct ag_boot; one owner (ag_boot_open's caller, ended by ag_boot_close). */
struct ag_boot {
    const struct ag__boot_ops *ops;
    char *env_path;     /* owned */
    char *cmdline_path; /* owned */
    unsigned max_tries; /* 1..9 */
    void *priv;         /* the backend's */
};

#endif
