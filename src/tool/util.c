/* Shared helpers of the otter tool: error reporting and exit statuses, key loading, small parsers. */
#include <stdarg.h>
#include <time.h>

#include "otter/json.h"
#include "otter/parse.h"
#include "tool.h"

/* ---- errors and exit statuses ---- */

/* The exit status for an error that came out of reading an artifact (its bytes are at fault, or it
 * fails a check): TOOL_EXIT_REJECTED for anything that means "do not install this", TOOL_EXIT_FAILURE
 * for trouble on our side (I/O, memory). Errors from anything else (key and trust files, payload
 * inputs, the file system) are TOOL_EXIT_FAILURE: a malformed key file is a bad input, not a rejected
 * artifact. This is the only place where errors become exit statuses. */
static const uint8_t artifact_exit[OT_ERR__MAX] = {
    [OT_OK] = TOOL_EXIT_OK,
    [OT_ERR_NOMEM] = TOOL_EXIT_FAILURE,
    [OT_ERR_INVALID] = TOOL_EXIT_FAILURE,
    [OT_ERR_IO] = TOOL_EXIT_FAILURE,
    [OT_ERR_NOSPC] = TOOL_EXIT_FAILURE,
    [OT_ERR_NOENT] = TOOL_EXIT_FAILURE,
    [OT_ERR_EXISTS] = TOOL_EXIT_FAILURE,   /* e.g. this key already signed */
    [OT_ERR_PERM] = TOOL_EXIT_FAILURE,
    [OT_ERR_RANGE] = TOOL_EXIT_REJECTED,
    [OT_ERR_LIMIT] = TOOL_EXIT_REJECTED,   /* an entry or list beyond the format's limits */
    [OT_ERR_FORMAT] = TOOL_EXIT_REJECTED,  /* malformed archive, manifest or signature file */
    [OT_ERR_TRUNCATED] = TOOL_EXIT_REJECTED,
    [OT_ERR_UNSUPPORTED] = TOOL_EXIT_REJECTED,
    [OT_ERR_CONFIG] = TOOL_EXIT_FAILURE,
    [OT_ERR_CRYPTO] = TOOL_EXIT_FAILURE,
    [OT_ERR_SIGNATURE] = TOOL_EXIT_REJECTED,
    [OT_ERR_UNTRUSTED] = TOOL_EXIT_REJECTED,
    [OT_ERR_HASH] = TOOL_EXIT_REJECTED,
    [OT_ERR_SIZE] = TOOL_EXIT_REJECTED,
    [OT_ERR_DECRYPT] = TOOL_EXIT_REJECTED,
    [OT_ERR_NOKEY] = TOOL_EXIT_REJECTED,
    [OT_ERR_INCOMPATIBLE] = TOOL_EXIT_REJECTED,
    [OT_ERR_ROLLBACK] = TOOL_EXIT_REJECTED,
    [OT_ERR_INTERNAL] = TOOL_EXIT_FAILURE,
};

int tool_exit_code(enum ot_err err, enum tool_src src)
{
    if (err == OT_OK)
        return TOOL_EXIT_OK;
    if (src != TOOL_SRC_ARTIFACT || (unsigned)err >= OT_ERR__MAX)
        return TOOL_EXIT_FAILURE;
    return artifact_exit[err];
}

int tool_fail(const struct tool_ctx *ctx, enum ot_err err, enum tool_src src,
              const struct ot_diag *d)
{
    int code = tool_exit_code(err, src);
    const char *msg = d && d->msg[0] ? d->msg : ot_strerror(err);
    fflush(stdout);
    fprintf(stderr, "otter: %s: %s%s\n", ctx->cmd->name,
            code == TOOL_EXIT_REJECTED ? "artifact rejected: " : "", msg);
    return code == TOOL_EXIT_OK ? TOOL_EXIT_FAILURE : code;
}

int tool_failf(const struct tool_ctx *ctx, enum ot_err err, const char *fmt, ...)
{
    struct ot_diag d = {.err = err};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d.msg, sizeof(d.msg), fmt, ap);
    va_end(ap);
    return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
}

int tool_usage_error(const struct tool_ctx *ctx, const char *fmt, ...)
{
    char msg[OT_DIAG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "otter: %s: %s (see 'otter %s --help')\n", ctx->cmd->name, msg,
            ctx->cmd->name);
    return TOOL_EXIT_USAGE;
}

/* Option strings start with ':' so that getopt reports a missing argument as ':' and prints
 * nothing itself: every message has the "otter: <cmd>:" form. */
int tool_bad_option(const struct tool_ctx *ctx, int c, char **argv)
{
    /* A long option is named as written (without "=value"); a short one by its letter, since it
     * may sit in a cluster like -qx. */
    const char *arg = argv[optind - 1];
    char opt[64];
    if (strncmp(arg, "--", 2) == 0)
        snprintf(opt, sizeof(opt), "%.*s", (int)strcspn(arg, "="), arg);
    else
        snprintf(opt, sizeof(opt), "-%c", optopt);
    if (c == ':')
        return tool_usage_error(ctx, "option '%s' needs an argument", opt);
    return tool_usage_error(ctx, "unknown option '%s'", opt);
}

int tool_help(const struct tool_ctx *ctx)
{
    fputs(ctx->cmd->usage, stdout);
    return TOOL_EXIT_OK;
}

void tool_out(const struct tool_ctx *ctx, const char *fmt, ...)
{
    if (ctx->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

void tool_warn(const struct tool_ctx *ctx, const char *fmt, ...)
{
    char msg[OT_DIAG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "otter: %s: warning: %s\n", ctx->cmd->name, msg);
}

/* ---- keys ---- */

static const char *want_text(enum tool_key_want want)
{
    switch (want) {
    case TOOL_KEY_SIGN_SECRET:
        return "a secret signing key (otter keygen --type signing)";
    case TOOL_KEY_SIGN_PUBLIC:
        return "a public signing key (BASENAME.pub of otter keygen --type signing)";
    case TOOL_KEY_BOX_SECRET:
        return "a secret device key (otter keygen --type device)";
    case TOOL_KEY_BOX_PUBLIC:
        return "a public device key (BASENAME.pub of otter keygen --type device)";
    }
    return "?";
}

/* Where a public key is wanted, a secret key file works too (its public half is used), but
 * handing secret key files around is a habit worth a warning. */
static bool key_fits(const struct tool_ctx *ctx, const char *path, enum tool_key_want want,
                     struct ot_key *k)
{
    bool public_wanted = want == TOOL_KEY_SIGN_PUBLIC || want == TOOL_KEY_BOX_PUBLIC;
    bool signing_wanted = want == TOOL_KEY_SIGN_SECRET || want == TOOL_KEY_SIGN_PUBLIC;
    if (ot_key_is_signing(k) != signing_wanted)
        return false;
    if (!public_wanted)
        return ot_key_is_secret(k);
    if (ot_key_is_secret(k)) {
        struct ot_key pub;
        tool_warn(ctx, "%s is a secret key file; only its public half is used", path);
        ot_key_public(k, &pub);
        ot_key_wipe(k);
        *k = pub;
    }
    return true;
}

enum ot_err tool_key_load(const struct tool_ctx *ctx, const char *path, enum tool_key_want want,
                          struct ot_key *ret, struct ot_diag *d)
{
    _cleanup_(tool_key_wipep) struct ot_key k = {0};
    enum ot_err err = ot_key_load(path, &k, d);
    if (err)
        return err;
    if (!key_fits(ctx, path, want, &k))
        return ot_diag_set(d, OT_ERR_INVALID, "%s: is a key of type %s, but this needs %s", path,
                           ot_key_type_name(k.type), want_text(want));
    *ret = k;
    return OT_OK;
}

enum ot_err tool_keys_load(const struct tool_ctx *ctx, char *const *paths, size_t npaths,
                           enum tool_key_want want, struct tool_keys *ret, struct ot_diag *d)
{
    *ret = (struct tool_keys){0};
    if (npaths == 0)
        return OT_OK;
    ret->v = calloc(npaths, sizeof(*ret->v));
    if (!ret->v)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (; ret->n < npaths; ret->n++) {
        enum ot_err err = tool_key_load(ctx, paths[ret->n], want, &ret->v[ret->n], d);
        if (err)
            return err;
    }
    return OT_OK;
}

void tool_keys_release(struct tool_keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        ot_key_wipe(&k->v[i]);
    free(k->v);
    *k = (struct tool_keys){0};
}

void tool_key_wipep(struct ot_key *k) { ot_key_wipe(k); }

/* ---- small helpers ---- */

enum ot_err tool_strv_push(struct tool_strv *l, char *s)
{
    char **v = reallocarray(l->v, l->n + 1, sizeof(*v));
    if (!v)
        return OT_ERR_NOMEM;
    v[l->n++] = s;
    l->v = v;
    return OT_OK;
}

void tool_strv_release(struct tool_strv *l)
{
    free(l->v);
    *l = (struct tool_strv){0};
}

bool tool_split_kv(const char *s, char **ret_key, char **ret_value)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || !eq[1])
        return false;
    char *k = strndup(s, (size_t)(eq - s));
    char *v = strdup(eq + 1);
    if (!k || !v) {
        free(k);
        free(v);
        return false;
    }
    *ret_key = k;
    *ret_value = v;
    return true;
}

const char *tool_fmt_size(uint64_t bytes, char *buf, size_t len)
{
    if (bytes < 1024)
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else if (bytes < 1024 * 1024)
        snprintf(buf, len, "%.1f KiB", (double)bytes / 1024.0);
    else if (bytes < 1024ULL * 1024 * 1024)
        snprintf(buf, len, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
    else
        snprintf(buf, len, "%.2f GiB", (double)bytes / (1024.0 * 1024.0 * 1024.0));
    return buf;
}

enum ot_err tool_print_json(const json_t *v)
{
    struct ot_buf b;
    ot_buf_init(&b, 64 * 1024 * 1024);
    enum ot_err err = ot_json_dump_pretty(v, &b);
    if (!err && fwrite(b.data, 1, b.len, stdout) != b.len)
        err = OT_ERR_IO;
    ot_buf_release(&b);
    return err;
}

const char *tool_sig_status_name(enum ot_sig_status s)
{
    switch (s) {
    case OT_SIG_VALID:
        return "valid";
    case OT_SIG_INVALID:
        return "invalid";
    case OT_SIG_UNKNOWN:
        return "unknown";
    case OT_SIG_DUPLICATE:
        return "duplicate";
    }
    return "?";
}

/* The same rule as otterd's: a channel becomes part of URLs and deployment names. */
bool tool_channel_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 63 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int tool_entry_time(const struct tool_ctx *ctx, int64_t *ret)
{
    const char *env = getenv("SOURCE_DATE_EPOCH");
    if (!env || !env[0]) {
        *ret = (int64_t)time(NULL);
        return TOOL_EXIT_OK;
    }
    if (ot_parse_i64(env, 0, INT64_MAX, ret) != OT_OK)
        return tool_usage_error(ctx, "SOURCE_DATE_EPOCH must be a number of seconds, not '%s'",
                                env);
    return TOOL_EXIT_OK;
}

int tool_load_verifier(const struct tool_ctx *ctx, const char *trust_path, char *const *key_paths,
                       size_t nkeys, struct ot_trust *ret_trust, struct tool_keys *ret_keys)
{
    struct ot_diag d = {0};
    enum ot_err err = ot_trust_load(trust_path, ret_trust, &d);
    if (!err)
        err = tool_keys_load(ctx, key_paths, nkeys, TOOL_KEY_BOX_SECRET, ret_keys, &d);
    return err ? tool_fail(ctx, err, TOOL_SRC_OTHER, &d) : TOOL_EXIT_OK;
}
