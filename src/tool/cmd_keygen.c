/* otter keygen: a new key pair as BASENAME.key (secret, 0600) and BASENAME.pub (public). */
#include <sys/stat.h>

#include "otter/path.h"
#include "tool.h"

const char tool_usage_keygen[] =
    "Usage: otter keygen [--type signing|device] [--name NAME] [--force] BASENAME\n"
    "\n"
    "Creates a key pair: BASENAME.key (secret, mode 0600) and BASENAME.pub (public), and prints\n"
    "the key id.\n"
    "\n"
    "  -t, --type TYPE   signing: an Ed25519 release key that signs artifacts (default)\n"
    "                    device:  an X25519 device-class key that encrypted artifacts are sealed to\n"
    "  -n, --name NAME   a name for humans, shown in signature reports (default: BASENAME's\n"
    "                    file name)\n"
    "  -f, --force       overwrite existing key files\n"
    "  -q, --quiet       print nothing\n"
    "  -h, --help        show this help\n";

struct keygen_opts {
    enum ot_key_type type;
    const char *name;
    bool force;
    const char *base;
};

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, struct keygen_opts *o)
{
    static const struct option longopts[] = {
        {"type", required_argument, NULL, 't'}, {"name", required_argument, NULL, 'n'},
        {"force", no_argument, NULL, 'f'},      {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},       {0},
    };
    int c;
    *o = (struct keygen_opts){.type = OT_KEY_SIGN_SECRET};
    while ((c = getopt_long(argc, argv, ":t:n:fqh", longopts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (strcmp(optarg, "signing") == 0)
                o->type = OT_KEY_SIGN_SECRET;
            else if (strcmp(optarg, "device") == 0)
                o->type = OT_KEY_BOX_SECRET;
            else
                return tool_usage_error(ctx, "--type must be 'signing' or 'device', not '%s'",
                                        optarg);
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'f':
            o->force = true;
            break;
        case 'q':
            ctx->quiet = true;
            break;
        case 'h':
            return -1;
        default:
            return tool_bad_option(ctx, c, argv);
        }
    }
    if (optind != argc - 1)
        return tool_usage_error(ctx, optind == argc ? "missing BASENAME" : "too many arguments");
    o->base = argv[optind];
    if (!o->base[0] || o->base[strlen(o->base) - 1] == '/')
        return tool_usage_error(ctx, "BASENAME '%s' must name a file, not a directory", o->base);
    return TOOL_EXIT_OK;
}

/* The default name: BASENAME's last component ("keys/alice" -> "alice"). */
static const char *default_name(const char *base)
{
    const char *slash = strrchr(base, '/');
    return slash ? slash + 1 : base;
}

static int refuse_existing(const struct tool_ctx *ctx, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return tool_failf(ctx, OT_ERR_EXISTS, "%s already exists (use --force to overwrite it)",
                          path);
    return TOOL_EXIT_OK;
}

/* Saves both halves. The public file is written last; if it fails, a secret file that did not
 * exist before is removed again, so there is never a secret key without its public half. */
static int save_pair(const struct tool_ctx *ctx, const struct keygen_opts *o,
                     const struct ot_key *k, const char *keypath, const char *pubpath)
{
    struct ot_diag d = {0};
    enum ot_err err = ot_key_save(keypath, k, false, o->force, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    err = ot_key_save(pubpath, k, true, o->force, &d);
    if (err) {
        if (!o->force)
            unlink(keypath);
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    }
    return TOOL_EXIT_OK;
}

int tool_cmd_keygen(struct tool_ctx *ctx, int argc, char **argv)
{
    struct keygen_opts o;
    int rc = parse_args(ctx, argc, argv, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    _cleanup_free_ char *keypath = NULL, *pubpath = NULL;
    if (asprintf(&keypath, "%s.key", o.base) < 0 || asprintf(&pubpath, "%s.pub", o.base) < 0)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    if (!o.force && ((rc = refuse_existing(ctx, keypath)) || (rc = refuse_existing(ctx, pubpath))))
        return rc;

    const char *name = o.name ? o.name : default_name(o.base);
    _cleanup_(tool_key_wipep) struct ot_key k = {0};
    enum ot_err err = ot_key_generate(o.type, name, &k);
    if (err == OT_ERR_INVALID)
        return tool_usage_error(ctx, "'%s' is not a valid key name (printable ASCII, at most %d "
                                "bytes; use --name)", name, OT_KEY_NAME_MAX - 1);
    if (err)
        return tool_failf(ctx, err, "cannot generate a key: %s", ot_strerror(err));
    rc = save_pair(ctx, &o, &k, keypath, pubpath);
    if (rc)
        return rc;
    tool_out(ctx, "%s key %s (%s)\n", o.type == OT_KEY_SIGN_SECRET ? "signing" : "device", k.id,
             k.name);
    tool_out(ctx, "secret key: %s (mode 0600: keep it private)\n", keypath);
    tool_out(ctx, "public key: %s\n", pubpath);
    return TOOL_EXIT_OK;
}
