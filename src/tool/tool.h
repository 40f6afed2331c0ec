/* otter: the command-line tool. Program-local declarations shared by main.c and the cmd_*.c files.
 *
 * Every command is a function `int tool_cmd_<name>(struct tool_ctx *ctx, int argc, char **argv)`
 * returning the process exit status. Errors are printed once, where they are handled, as
 *     otter: <command>: <message>
 * on stderr; normal output goes to stdout and -q suppresses it. */
#ifndef OTTER_TOOL_H
#define OTTER_TOOL_H

#include <getopt.h>
#include <jansson.h>

#include "otter/artifact.h"
#include "otter/key.h"
#include "otter/trust.h"

/* Documented exit statuses (docs/otter.md). */
enum tool_exit {
    TOOL_EXIT_OK = 0,
    TOOL_EXIT_FAILURE = 1,  /* I/O, a bad input file, a refused operation */
    TOOL_EXIT_USAGE = 2,    /* bad command line */
    TOOL_EXIT_REJECTED = 3, /* the artifact failed verification */
};

struct tool_ctx;

struct tool_cmd {
    const char *name;
    int (*run)(struct tool_ctx *ctx, int argc, char **argv);
    const char *summary; /* one line for `otter --help` */
    const char *usage;   /* the full text of `otter <cmd> --help` */
};

struct tool_ctx {
    const struct tool_cmd *cmd;
    bool quiet;
};

/* The command table (main.c), for `otter --help`. */
extern const struct tool_cmd tool_cmds[];
extern const size_t tool_ncmds;

int tool_cmd_keygen(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_trust(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_pack(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_sign(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_verify(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_unpack(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_inspect(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_push(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_deploy(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_devices(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_deployments(struct tool_ctx *ctx, int argc, char **argv);
int tool_cmd_templates(struct tool_ctx *ctx, int argc, char **argv);

extern const char tool_usage_keygen[], tool_usage_trust[], tool_usage_pack[], tool_usage_sign[],
    tool_usage_verify[], tool_usage_unpack[], tool_usage_inspect[], tool_usage_push[],
    tool_usage_deploy[], tool_usage_devices[], tool_usage_deployments[], tool_usage_templates[];

/* ---- errors and exit statuses (util.c) ---- */

/* Where an error came from: the artifact's own bytes (malformed input means "rejected"), or
 * anything else (a key file, the file system, the command line). */
enum tool_src {
    TOOL_SRC_OTHER,
    TOOL_SRC_ARTIFACT,
};

/* The exit status for err (the one table mapping errors to exit statuses). */
int tool_exit_code(enum ot_err err, enum tool_src src);
/* Prints "otter: <cmd>: <message>" for err (the diag's message, else ot_strerror) and returns the
 * exit status. d may be NULL. */
int tool_fail(const struct tool_ctx *ctx, enum ot_err err, enum tool_src src,
              const struct ot_diag *d);
int tool_failf(const struct tool_ctx *ctx, enum ot_err err, const char *fmt, ...) OT_PRINTF(3, 4);
/* Prints a usage error and returns TOOL_EXIT_USAGE. */
int tool_usage_error(const struct tool_ctx *ctx, const char *fmt, ...) OT_PRINTF(2, 3);
/* Handles getopt's '?' and ':' results (unknown option, missing argument). */
int tool_bad_option(const struct tool_ctx *ctx, int c, char **argv);
/* Prints the command's --help text on stdout and returns TOOL_EXIT_OK. */
int tool_help(const struct tool_ctx *ctx);
/* Normal output: printf to stdout unless -q. */
void tool_out(const struct tool_ctx *ctx, const char *fmt, ...) OT_PRINTF(2, 3);
/* Warnings go to stderr ("otter: <cmd>: warning: ..."), also under -q. */
void tool_warn(const struct tool_ctx *ctx, const char *fmt, ...) OT_PRINTF(2, 3);

/* ---- keys (util.c) ---- */

enum tool_key_want {
    TOOL_KEY_SIGN_SECRET,  /* --key for pack and sign */
    TOOL_KEY_SIGN_PUBLIC,  /* trust: a public signing key (a secret one is accepted, with a warning) */
    TOOL_KEY_BOX_SECRET,   /* --device-key */
    TOOL_KEY_BOX_PUBLIC,   /* --encrypt-to (a secret one is accepted, with a warning) */
};

/* Loads a key file and checks it is what the option needs. Errors name the file. */
enum ot_err tool_key_load(const struct tool_ctx *ctx, const char *path, enum tool_key_want want,
                          struct ot_key *ret, struct ot_diag *d) OT_MUST_CHECK;

/* A list of keys loaded from files, wiped when released. */
struct tool_keys {
    struct ot_key *v;
    size_t n;
};
enum ot_err tool_keys_load(const struct tool_ctx *ctx, char *const *paths, size_t npaths,
                           enum tool_key_want want, struct tool_keys *ret, struct ot_diag *d)
    OT_MUST_CHECK;
void tool_keys_release(struct tool_keys *k);
/* What a verifying command needs: the trust file and the --device-key files. Prints the error and
 * returns an exit code (TOOL_EXIT_OK on success). */
int tool_load_verifier(const struct tool_ctx *ctx, const char *trust_path, char *const *key_paths,
                       size_t nkeys, struct ot_trust *ret_trust, struct tool_keys *ret_keys);
void tool_key_wipep(struct ot_key *k);

/* ---- small helpers (util.c) ---- */

/* A growable list of option arguments (pointers into argv, not copied). */
struct tool_strv {
    char **v;
    size_t n;
};
enum ot_err tool_strv_push(struct tool_strv *l, char *s) OT_MUST_CHECK;
void tool_strv_release(struct tool_strv *l);

/* Splits "KEY=VALUE" at the first '='; both sides non-empty. Returns false otherwise. */
bool tool_split_kv(const char *s, char **ret_key, char **ret_value);
/* "12.3 MiB" into buf. */
const char *tool_fmt_size(uint64_t bytes, char *buf, size_t len);
/* Tar entry times for files we write: SOURCE_DATE_EPOCH (reproducible-builds.org) or now. */
int tool_entry_time(const struct tool_ctx *ctx, int64_t *ret);
/* Prints a JSON value (pretty, sorted keys) on stdout. */
enum ot_err tool_print_json(const json_t *v) OT_MUST_CHECK;
const char *tool_sig_status_name(enum ot_sig_status s);
/* A release channel name as otterd takes it: 1..63 characters of [A-Za-z0-9._-]. */
bool tool_channel_valid(const char *s);

/* ---- reading artifacts (read.c) ---- */

/* Opens an artifact file for reading and returns its size (for progress). */
enum ot_err tool_open_artifact(const char *path, int *ret_fd, uint64_t *ret_size,
                               struct ot_diag *d) OT_MUST_CHECK;

/* Set from SIGINT/SIGTERM/SIGHUP once tool_catch_signals was called; long loops poll it so that
 * they can clean up (unpack removes its temporary directory). */
void tool_catch_signals(void);
bool tool_interrupted(void);

struct tool_progress;

/* Feeds fd to the reader in chunks of `chunk` bytes until the end (then finishes the reader) or
 * until *stop becomes true (stop may be NULL; then the reader is not finished). Reports progress. */
enum ot_err tool_feed(struct ot_artifact_reader *r, int fd, size_t chunk, uint64_t total,
                      const bool *stop, struct tool_progress *p, struct ot_diag *d) OT_MUST_CHECK;

/* Reads only as far as the manifest and signatures, without verifying anything. On success
 * *ret_reader holds the parsed manifest and signature set. */
enum ot_err tool_peek_manifest(int fd, struct ot_artifact_reader **ret_reader, struct ot_diag *d)
    OT_MUST_CHECK;

/* Human-readable signature report lines ("signature: alice 0123456789abcdef: valid"). */
void tool_print_sig_report(const struct tool_ctx *ctx, const struct ot_sig_report *rep);
json_t *tool_sig_report_json(const struct ot_sig_report *rep);

/* ---- progress (progress.c) ---- */

/* A single updating line on stderr (percent, MiB done/total, MiB/s), at most ~10 updates a second;
 * only when stderr is a terminal and not -q. */
struct tool_progress {
    bool enabled;
    bool drawn;
    const char *label;
    uint64_t start_ns, last_ns;
};

void tool_progress_init(struct tool_progress *p, const struct tool_ctx *ctx, const char *label);
/* An ot_progress_fn: userdata is the struct tool_progress. */
void tool_progress_cb(void *userdata, uint64_t done, uint64_t total);
/* Erases the line (call before printing anything else, and at the end). */
void tool_progress_clear(struct tool_progress *p);

/* ---- talking to otterd (remote.c) ---- */

struct ot_client;

/* The connection options every server command takes (add TOOL_REMOTE_LONGOPTS to its getopt
 * table and TOOL_REMOTE_HELP to its --help). */
enum {
    TOOL_OPT_SERVER = 0x1000,
    TOOL_OPT_TOKEN,
    TOOL_OPT_TOKEN_FILE,
    TOOL_OPT_CA_FILE,
    TOOL_OPT_CONFIG,
};
#define TOOL_REMOTE_LONGOPTS                                                                       \
    {"server", required_argument, NULL, TOOL_OPT_SERVER},                                          \
        {"token", required_argument, NULL, TOOL_OPT_TOKEN},                                        \
        {"token-file", required_argument, NULL, TOOL_OPT_TOKEN_FILE},                              \
        {"ca-file", required_argument, NULL, TOOL_OPT_CA_FILE},                                    \
        {"config", required_argument, NULL, TOOL_OPT_CONFIG}
#define TOOL_REMOTE_HELP                                                                           \
    "Server connection (flags first, then OTTER_SERVER, OTTER_TOKEN, OTTER_CA_FILE, then the\n"     \
    "config file: --config, $OTTER_CONFIG or ~/.config/otter/client.conf):\n"                      \
    "      --server URL              otterd's URL, e.g. https://ota.example.com\n"                  \
    "      --token TOKEN             API token (visible to other users in ps: prefer the others)\n"  \
    "      --token-file FILE         read the API token from FILE\n"                                \
    "      --ca-file FILE            PEM CA certificates to verify the server with\n"               \
    "      --config FILE             the client config file\n"

struct tool_remote {
    const char *server, *token, *token_file, *ca_file, *config;
};

/* Takes the connection option c (with optarg); false when c is not one of them. */
bool tool_remote_opt(struct tool_remote *r, int c);
/* Resolves server, token and CA file (flags > environment > config file) and creates the client.
 * Prints the error and returns its exit status (TOOL_EXIT_USAGE when no server or token is
 * given anywhere); TOOL_EXIT_OK and *ret on success. */
int tool_remote_connect(const struct tool_ctx *ctx, const struct tool_remote *r,
                        struct ot_client **ret);

/* One API call that must succeed (2xx): otherwise prints "server: <message> (HTTP <status>)" or
 * the transport error and returns the exit status. *ret (may be NULL) gets the reply, NULL when
 * it was empty. */
int tool_api(const struct tool_ctx *ctx, struct ot_client *c, const char *method,
             const char *path, const json_t *body, json_t **ret);
/* Like tool_api, but the reply must be a JSON object. */
int tool_api_object(const struct tool_ctx *ctx, struct ot_client *c, const char *method,
                    const char *path, const json_t *body, json_t **ret);

/* A paged list: GET path (which may hold filters already) with cursor_param=<cursor>&limit=N,
 * page after page, collecting reply[items] until an empty page, a missing cursor or max items
 * (0: all). The cursor is reply[cursor_key]; descending lists (newest first) must see it fall. */
struct tool_paging {
    const char *items;        /* "devices" */
    const char *cursor_param; /* "after" */
    const char *cursor_key;   /* "next_after" */
    bool descending;
};
int tool_api_list(const struct tool_ctx *ctx, struct ot_client *c, const char *path,
                  const struct tool_paging *pg, size_t max, json_t **ret_items);

/* "ID" arguments: a positive decimal number, else a usage error naming what. */
int tool_parse_id(const struct tool_ctx *ctx, const char *what, const char *arg, int64_t *ret);
/* "/api/v1/<collection>/<id>[/<suffix>]" into buf. */
const char *tool_api_path(char *buf, size_t len, const char *collection, int64_t id,
                          const char *suffix);

/* A table for humans: aligned columns, two blanks apart. Row 0 is the header. Cells are copied,
 * with control characters (terminal escapes in server data) replaced by '?'. */
struct tool_table {
    size_t ncols, nrows;
    char **cells; /* nrows * ncols */
};
void tool_table_init(struct tool_table *t, size_t ncols);
enum ot_err tool_table_row(struct tool_table *t, const char *const *cells) OT_MUST_CHECK;
void tool_table_print(const struct tool_ctx *ctx, const struct tool_table *t);
void tool_table_release(struct tool_table *t);

/* Printing what the server sent. Each returns buf (or a constant), never NULL. */
const char *tool_jstr(const json_t *obj, const char *key);            /* "-" when absent/empty */
int64_t tool_jint(const json_t *obj, const char *key);                /* 0 when absent */
const char *tool_jint_str(const json_t *obj, const char *key, char *buf, size_t len);
/* Unix seconds as "2024-05-01 12:00:00Z" (UTC); 0 or null: never_text. */
const char *tool_jtime(const json_t *obj, const char *key, const char *never_text, char *buf,
                       size_t len);
/* An object as "k=v,k2=v2" (non-string values as compact JSON), a string array as "a,b". */
const char *tool_jflat(const json_t *v, char *buf, size_t len);
/* One line on stdout (the newline is added), made safe for a terminal like table cells. */
void tool_out_line(const struct tool_ctx *ctx, const char *fmt, ...) OT_PRINTF(2, 3);
/* "label:       value" lines of the show commands, via tool_out_line. */
void tool_out_field(const struct tool_ctx *ctx, const char *label, const char *value);

/* ---- deployment targets and rollout policies (deploy_spec.c) ---- */

/* What `deploy` and `templates create` share: whom to deploy to (device ids, a tag, or a query
 * with an optional cap) and the rollout policy (--policy, plus flags for its type, retries and
 * maintenance window, merged into it). Add TOOL_SPEC_LONGOPTS and TOOL_SPEC_SHORTOPTS to the
 * getopt tables and TOOL_TARGET_HELP and TOOL_POLICY_HELP to --help. */
enum {
    TOOL_OPT_DEVICES = 0x1100,
    TOOL_OPT_QUERY,
    TOOL_OPT_CAP,
    TOOL_OPT_NO_CONTINUOUS,
    TOOL_OPT_TYPE,
    TOOL_OPT_RETRIES,
    TOOL_OPT_WINDOW,
    TOOL_OPT_WINDOW_DURATION,
    TOOL_OPT_WINDOW_TZ,
};
#define TOOL_SPEC_SHORTOPTS "d:t:p:"
#define TOOL_SPEC_LONGOPTS                                                                         \
    {"device", required_argument, NULL, 'd'},                                                      \
        {"devices", required_argument, NULL, TOOL_OPT_DEVICES},                                    \
        {"tag", required_argument, NULL, 't'},                                                     \
        {"query", required_argument, NULL, TOOL_OPT_QUERY},                                        \
        {"cap", required_argument, NULL, TOOL_OPT_CAP},                                            \
        {"no-continuous", no_argument, NULL, TOOL_OPT_NO_CONTINUOUS},                              \
        {"policy", required_argument, NULL, 'p'},                                                  \
        {"type", required_argument, NULL, TOOL_OPT_TYPE},                                          \
        {"retries", required_argument, NULL, TOOL_OPT_RETRIES},                                    \
        {"window", required_argument, NULL, TOOL_OPT_WINDOW},                                      \
        {"window-duration", required_argument, NULL, TOOL_OPT_WINDOW_DURATION},                    \
        {"window-tz", required_argument, NULL, TOOL_OPT_WINDOW_TZ}
#define TOOL_TARGET_HELP                                                                           \
    "Target (one of):\n"                                                                           \
    "  -d, --device ID               a device (repeatable)\n"                                      \
    "      --devices ID,ID,...       devices, comma-separated (adds to --device)\n"                \
    "  -t, --tag TAG                 every accepted device with this tag\n"                        \
    "      --query FILTER            a dynamic group: the accepted devices matching FILTER\n"      \
    "                                (docs/query-language.md), and those that match later\n"       \
    "      --cap N                   with --query: at most N devices in all\n"                     \
    "      --no-continuous           with --query: only the devices matching now\n"
#define TOOL_POLICY_HELP                                                                           \
    "Rollout policy (the flags are merged into --policy; a key set both ways must agree):\n"       \
    "  -p, --policy FILE|JSON        phases, thresholds, pace, schedule, approvals (a JSON\n"      \
    "                                file, or the JSON itself; see docs/rollouts.md)\n"            \
    "      --type TYPE               forced (default), soft (the device may postpone) or\n"        \
    "                                download-only\n"                                              \
    "      --retries N               offer the update again to a device that failed, N times\n"    \
    "      --window CRON             install only in a maintenance window opening at CRON\n"       \
    "                                (\"0 2 * * *\"; needs --window-duration)\n"                   \
    "      --window-duration D       how long the window stays open (\"3h\", \"90m\")\n"           \
    "      --window-tz TZ            the time zone of CRON (default UTC), e.g. Europe/Berlin\n"

struct tool_deploy_spec {
    json_t *devices;          /* device ids in the order given, no duplicates (NULL: none) */
    const char *tag, *query;  /* pointers into argv */
    uint64_t cap;             /* 0: none */
    bool no_continuous;
    json_t *policy;           /* --policy's object; after tool_deploy_spec_check, merged */
    json_t *flags;            /* the policy keys the convenience flags set */
    const char *window, *window_duration, *window_tz;
};

/* Takes option c (with optarg) when it is one of TOOL_SPEC_LONGOPTS: returns true and sets
 * *ret_rc (TOOL_EXIT_OK, or the exit status of the error it printed). False: not one of them. */
bool tool_deploy_spec_opt(const struct tool_ctx *ctx, struct tool_deploy_spec *s, int c,
                          int *ret_rc);
/* After the options: exactly one target, --cap and --no-continuous only with --query, the window
 * flags complete, and the policy flags merged into s->policy (created when there was none).
 * Prints usage errors. */
int tool_deploy_spec_check(const struct tool_ctx *ctx, struct tool_deploy_spec *s);
/* Adds the target's keys ("devices", "tag" or "query" with "cap" and "continuous") to obj. */
enum ot_err tool_deploy_spec_target(const struct tool_deploy_spec *s, json_t *obj) OT_MUST_CHECK;
void tool_deploy_spec_release(struct tool_deploy_spec *s);

/* A target as the server shows it: "devices 1,2", "tag lab", "query FILTER (cap 10, continuous)"
 * (or "fixed" when it does not grow). */
const char *tool_target_text(const json_t *target, char *buf, size_t len);

#endif
