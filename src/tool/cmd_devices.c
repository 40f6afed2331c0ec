/* otter devices: the fleet as the server knows it. One subcommand table; every subcommand is a
 * small function over the management API's /api/v1/devices routes. */
#include "otter/client.h"
#include "otter/encoding.h"
#include "otter/parse.h"
#include "tool.h"

const char tool_usage_devices[] =
    "Usage: otter devices list [--status S] [--tag T] [--type T] [--limit N] [--json]\n"
    "       otter devices show ID [--json]\n"
    "       otter devices accept|reject|decommission ID [--json]\n"
    "       otter devices preauthorize --identity KEY=VALUE... --public-key FILE [--type T]\n"
    "                                  [--tag TAG]... [--json]\n"
    "       otter devices tag ID [TAG...] [--json]\n"
    "\n"
    "list           the devices, filtered (all of them: pages are followed to the end)\n"
    "show           one device: identity, key, type, tags, installed versions, inventory\n"
    "accept         let a pending (or rejected) device in\n"
    "reject         refuse a device; it may be accepted later\n"
    "decommission   retire a device for good: it never gets a token again\n"
    "preauthorize   register a device before it first connects: it is accepted when it\n"
    "               authenticates with this identity and key\n"
    "tag            set a device's tags (replacing them; no TAG clears them)\n"
    "\n"
    "  -s, --status S                list: pending, accepted, rejected, preauthorized or\n"
    "                                decommissioned\n"
    "  -t, --tag TAG                 list: devices with this tag; preauthorize: a tag to give\n"
    "                                the device (repeatable)\n"
    "  -T, --type TYPE               list: devices of this device type; preauthorize: the\n"
    "                                device's type\n"
    "  -n, --limit N                 list: at most N devices\n"
    "  -i, --identity KEY=VALUE      preauthorize: the identity the device will present\n"
    "                                (repeatable; e.g. mac=02:00:00:00:00:01)\n"
    "  -k, --public-key FILE         preauthorize: the device's Ed25519 identity key, an otter\n"
    "                                key file (public or secret: only the public key is sent)\n"
    "  -j, --json                    print the server's JSON (list: an array of devices)\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_REMOTE_HELP;

enum {
    O_STATUS = 1 << 0,
    O_TAG = 1 << 1,
    O_TYPE = 1 << 2,
    O_LIMIT = 1 << 3,
    O_IDENTITY = 1 << 4,
    O_PUBKEY = 1 << 5,
};

static const struct {
    unsigned bit;
    const char *name;
} opt_names[] = {
    {O_STATUS, "--status"},     {O_TAG, "--tag"},           {O_TYPE, "--type"},
    {O_LIMIT, "--limit"},       {O_IDENTITY, "--identity"}, {O_PUBKEY, "--public-key"},
};

struct devices_opts {
    struct tool_remote remote;
    unsigned seen;
    const char *status, *type, *public_key;
    struct tool_strv tags, identity;
    uint64_t limit;
    bool json;
    char **args; /* the subcommand's arguments */
    size_t nargs;
};

static void opts_release(struct devices_opts *o)
{
    tool_strv_release(&o->tags);
    tool_strv_release(&o->identity);
}

struct devices_sub;
typedef int (*sub_fn)(struct tool_ctx *ctx, const struct devices_sub *sub,
                      const struct devices_opts *o, struct ot_client *c);

struct devices_sub {
    const char *name;
    sub_fn run;
    unsigned opts;            /* the options it takes (--json and -q: all) */
    size_t min_args, max_args;
    const char *args;         /* for messages */
};

/* ---- output ---------------------------------------------------------------------------------- */

/* {"rootfs":{"version":"1.2"},...} as "rootfs=1.2,...". */
static const char *installed_text(const json_t *installed, char *buf, size_t len)
{
    json_t *flat = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)installed, k, v) {
        const json_t *ver = json_object_get(v, "version");
        json_object_set(flat, k, ver ? (json_t *)ver : v);
    }
    tool_jflat(flat, buf, len);
    json_decref(flat);
    return buf[0] ? buf : "-";
}

static int print_json_or_fail(const struct tool_ctx *ctx, const json_t *v)
{
    if (ctx->quiet || !tool_print_json(v))
        return TOOL_EXIT_OK;
    return tool_failf(ctx, OT_ERR_IO, "cannot write JSON");
}

static int print_list(const struct tool_ctx *ctx, const json_t *devices)
{
    struct tool_table t;
    tool_table_init(&t, 7);
    static const char *const head[] = {"ID", "STATUS", "TYPE", "IDENTITY", "TAGS", "INSTALLED",
                                       "LAST SEEN"};
    enum ot_err err = tool_table_row(&t, head);
    size_t i;
    json_t *dv;
    json_array_foreach(devices, i, dv) {
        char id[32], ident[256], tags[256], inst[256], seen[32];
        const char *row[] = {
            tool_jint_str(dv, "id", id, sizeof(id)), tool_jstr(dv, "status"),
            tool_jstr(dv, "device_type"),
            tool_jflat(json_object_get(dv, "identity"), ident, sizeof(ident)),
            tool_jflat(json_object_get(dv, "tags"), tags, sizeof(tags)),
            installed_text(json_object_get(dv, "installed"), inst, sizeof(inst)),
            tool_jtime(dv, "last_seen", "never", seen, sizeof(seen)),
        };
        if (!err)
            err = tool_table_row(&t, row);
    }
    if (!err)
        tool_table_print(ctx, &t);
    tool_table_release(&t);
    return err ? tool_failf(ctx, err, "out of memory") : TOOL_EXIT_OK;
}

static void print_installed(const struct tool_ctx *ctx, const json_t *installed)
{
    const char *k;
    json_t *v;
    bool any = false;
    json_object_foreach((json_t *)installed, k, v) {
        tool_out_line(ctx, "  %s %s%s%s", k, tool_jstr(v, "version"),
                      json_is_string(json_object_get(v, "sha256")) ? " sha256 " : "",
                      json_is_string(json_object_get(v, "sha256")) ? tool_jstr(v, "sha256") : "");
        any = true;
    }
    if (!any)
        tool_out(ctx, "  (nothing reported yet)\n");
}

static void print_device(const struct tool_ctx *ctx, const json_t *dv)
{
    char buf[1024];
    tool_out_field(ctx, "id", tool_jint_str(dv, "id", buf, sizeof(buf)));
    tool_out_field(ctx, "status", tool_jstr(dv, "status"));
    tool_out_field(ctx, "device type", tool_jstr(dv, "device_type"));
    tool_out_field(ctx, "identity", tool_jflat(json_object_get(dv, "identity"), buf, sizeof(buf)));
    tool_out_field(ctx, "public key", tool_jstr(dv, "public_key"));
    tool_out_field(ctx, "tags", tool_jflat(json_object_get(dv, "tags"), buf, sizeof(buf)));
    tool_out_field(ctx, "created", tool_jtime(dv, "created_at", "-", buf, sizeof(buf)));
    tool_out_field(ctx, "updated", tool_jtime(dv, "updated_at", "-", buf, sizeof(buf)));
    tool_out_field(ctx, "last seen", tool_jtime(dv, "last_seen", "never", buf, sizeof(buf)));
    tool_out_field(ctx, "attributes",
                   tool_jflat(json_object_get(dv, "attributes"), buf, sizeof(buf)));
    tool_out(ctx, "installed:\n");
    print_installed(ctx, json_object_get(dv, "installed"));
}

/* ---- subcommands ----------------------------------------------------------------------------- */

static int add_filter(struct ot_buf *path, const char *key, const char *value)
{
    return value ? ot_client_query_add(path, key, value) : OT_OK;
}

static int run_list(struct tool_ctx *ctx, const struct devices_sub *sub,
                    const struct devices_opts *o, struct ot_client *c)
{
    static const struct tool_paging pg = {"devices", "after", "next_after", false};
    struct ot_buf path;
    ot_buf_init(&path, OT_CLIENT_URL_MAX);
    enum ot_err err = ot_buf_append_str(&path, "/api/v1/devices");
    if (!err)
        err = add_filter(&path, "status", o->status);
    if (!err)
        err = add_filter(&path, "tag", o->tags.n ? o->tags.v[0] : NULL);
    if (!err)
        err = add_filter(&path, "device_type", o->type);
    json_t *devices = NULL;
    int rc = err ? tool_failf(ctx, err, "request path too long")
                 : tool_api_list(ctx, c, ot_buf_str(&path), &pg, o->limit, &devices);
    ot_buf_release(&path);
    if (!rc)
        rc = o->json ? print_json_or_fail(ctx, devices) : print_list(ctx, devices);
    json_decref(devices);
    return rc;
}

/* show, and the replies of the commands that change a device. */
static int device_call(struct tool_ctx *ctx, const struct devices_opts *o, struct ot_client *c,
                       const char *method, const char *suffix, const json_t *body,
                       json_t **ret)
{
    int64_t id;
    int rc = tool_parse_id(ctx, "ID", o->args[0], &id);
    if (rc)
        return rc;
    char path[96];
    return tool_api_object(ctx, c, method, tool_api_path(path, sizeof(path), "devices", id, suffix),
                           body, ret);
}

static int run_show(struct tool_ctx *ctx, const struct devices_sub *sub,
                    const struct devices_opts *o, struct ot_client *c)
{
    json_t *dv = NULL;
    int rc = device_call(ctx, o, c, "GET", NULL, NULL, &dv);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, dv);
    else if (!rc)
        print_device(ctx, dv);
    json_decref(dv);
    return rc;
}

/* accept, reject, decommission: the subcommand is the route's last path component. */
static int run_status(struct tool_ctx *ctx, const struct devices_sub *sub,
                      const struct devices_opts *o, struct ot_client *c)
{
    json_t *dv = NULL;
    int rc = device_call(ctx, o, c, "POST", sub->name, NULL, &dv);
    char id[32];
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, dv);
    else if (!rc)
        tool_out_line(ctx, "device %s: %s", tool_jint_str(dv, "id", id, sizeof(id)),
                      tool_jstr(dv, "status"));
    json_decref(dv);
    return rc;
}

static json_t *string_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static int run_tag(struct tool_ctx *ctx, const struct devices_sub *sub,
                   const struct devices_opts *o, struct ot_client *c)
{
    json_t *tags = string_array(o->args + 1, o->nargs - 1);
    json_t *body = tags ? json_pack("{s:o}", "tags", tags) : NULL;
    if (!body)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    json_t *dv = NULL;
    int rc = device_call(ctx, o, c, "PUT", "tags", body, &dv);
    json_decref(body);
    char id[32], buf[1024];
    const json_t *now = json_object_get(dv, "tags");
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, dv);
    else if (!rc)
        tool_out_line(ctx, "device %s: %s%s", tool_jint_str(dv, "id", id, sizeof(id)),
                      json_array_size(now) ? "tags " : "no tags",
                      json_array_size(now) ? tool_jflat(now, buf, sizeof(buf)) : "");
    json_decref(dv);
    return rc;
}

/* --identity KEY=VALUE... as an object; a key given twice is a usage error. */
static int identity_object(struct tool_ctx *ctx, const struct devices_opts *o, json_t **ret)
{
    json_t *id = json_object();
    if (!id)
        return tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    int rc = TOOL_EXIT_OK;
    for (size_t i = 0; i < o->identity.n && !rc; i++) {
        _cleanup_free_ char *k = NULL, *v = NULL;
        if (!tool_split_kv(o->identity.v[i], &k, &v))
            rc = tool_usage_error(ctx, "--identity wants KEY=VALUE, not '%s'", o->identity.v[i]);
        else if (json_object_get(id, k))
            rc = tool_usage_error(ctx, "--identity %s given twice", k);
        else if (json_object_set_new(id, k, json_string(v)))
            rc = tool_usage_error(ctx, "--identity %s: not valid UTF-8", k);
    }
    if (rc)
        json_decref(id);
    else
        *ret = id;
    return rc;
}

/* The device's identity key is Ed25519 (what `otter keygen` makes by default); only its public
 * half leaves this machine. */
static int public_key_b64(struct tool_ctx *ctx, const char *path, char *out, size_t len)
{
    _cleanup_(tool_key_wipep) struct ot_key k = {0};
    struct ot_diag d = {0};
    enum ot_err err = ot_key_load(path, &k, &d);
    if (err)
        return tool_fail(ctx, err, TOOL_SRC_OTHER, &d);
    if (!ot_key_is_signing(&k))
        return tool_failf(ctx, OT_ERR_INVALID, "%s: is a key of type %s, but a device identity "
                          "key is Ed25519 (otter keygen --type signing)", path,
                          ot_key_type_name(k.type));
    if (ot_key_is_secret(&k))
        tool_warn(ctx, "%s is a secret key file; only its public key is sent (the secret key "
                  "belongs on the device alone)", path);
    if (len < ot_base64_encoded_len(OT_SIGN_PK_LEN))
        return tool_failf(ctx, OT_ERR_INTERNAL, "buffer too small");
    ot_base64_encode(k.pk, OT_SIGN_PK_LEN, out);
    return TOOL_EXIT_OK;
}

static int preauthorize_body(struct tool_ctx *ctx, const struct devices_opts *o, json_t **ret)
{
    if (!o->identity.n || !o->public_key)
        return tool_usage_error(ctx, "preauthorize needs --identity KEY=VALUE and --public-key");
    char pk[64];
    json_t *identity = NULL;
    int rc = public_key_b64(ctx, o->public_key, pk, sizeof(pk));
    if (!rc)
        rc = identity_object(ctx, o, &identity);
    if (rc)
        return rc;
    json_t *body = json_pack("{s:o, s:s}", "identity", identity, "public_key", pk);
    if (body && o->type && json_object_set_new(body, "device_type", json_string(o->type)))
        rc = tool_usage_error(ctx, "--type: not valid UTF-8");
    if (body && !rc && o->tags.n &&
        json_object_set_new(body, "tags", string_array(o->tags.v, o->tags.n)))
        rc = tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    if (!body)
        rc = tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    if (rc)
        json_decref(body);
    else
        *ret = body;
    return rc;
}

static int run_preauthorize(struct tool_ctx *ctx, const struct devices_sub *sub,
                            const struct devices_opts *o, struct ot_client *c)
{
    json_t *body = NULL, *dv = NULL;
    int rc = preauthorize_body(ctx, o, &body);
    if (!rc)
        rc = tool_api_object(ctx, c, "POST", "/api/v1/devices", body, &dv);
    json_decref(body);
    char id[32], ident[512];
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, dv);
    else if (!rc)
        tool_out_line(ctx, "device %s: %s (%s)", tool_jint_str(dv, "id", id, sizeof(id)),
                      tool_jstr(dv, "status"),
                      tool_jflat(json_object_get(dv, "identity"), ident, sizeof(ident)));
    json_decref(dv);
    return rc;
}

static const struct devices_sub subs[] = {
    {"list", run_list, O_STATUS | O_TAG | O_TYPE | O_LIMIT, 0, 0, ""},
    {"show", run_show, 0, 1, 1, "ID"},
    {"accept", run_status, 0, 1, 1, "ID"},
    {"reject", run_status, 0, 1, 1, "ID"},
    {"decommission", run_status, 0, 1, 1, "ID"},
    {"preauthorize", run_preauthorize, O_IDENTITY | O_PUBKEY | O_TYPE | O_TAG, 0, 0, ""},
    {"tag", run_tag, 0, 1, SIZE_MAX, "ID [TAG...]"},
};

/* ---- the command line ------------------------------------------------------------------------ */

static const char *const statuses[] = {"pending", "accepted", "rejected", "preauthorized",
                                       "decommissioned"};

static int check_status(struct tool_ctx *ctx, const char *s)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(statuses); i++)
        if (strcmp(s, statuses[i]) == 0)
            return TOOL_EXIT_OK;
    return tool_usage_error(ctx, "--status must be pending, accepted, rejected, preauthorized or "
                            "decommissioned, not '%s'", s);
}

static int push_arg(struct tool_ctx *ctx, struct tool_strv *l)
{
    return tool_strv_push(l, optarg) ? tool_failf(ctx, OT_ERR_NOMEM, "out of memory")
                                     : TOOL_EXIT_OK;
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct devices_opts *o)
{
    switch (c) {
    case 's':
        o->seen |= O_STATUS;
        o->status = optarg;
        return check_status(ctx, optarg);
    case 't':
        o->seen |= O_TAG;
        return push_arg(ctx, &o->tags);
    case 'T':
        o->seen |= O_TYPE;
        o->type = optarg;
        return TOOL_EXIT_OK;
    case 'n':
        o->seen |= O_LIMIT;
        if (ot_parse_u64(optarg, 1, SIZE_MAX, &o->limit) != OT_OK)
            return tool_usage_error(ctx, "--limit wants a positive number, not '%s'", optarg);
        return TOOL_EXIT_OK;
    case 'i':
        o->seen |= O_IDENTITY;
        return push_arg(ctx, &o->identity);
    case 'k':
        o->seen |= O_PUBKEY;
        o->public_key = optarg;
        return TOOL_EXIT_OK;
    case 'j':
        o->json = true;
        return TOOL_EXIT_OK;
    case 'q':
        ctx->quiet = true;
        return TOOL_EXIT_OK;
    case 'h':
        return -1;
    default:
        return tool_bad_option(ctx, c, argv);
    }
}

/* Options that the subcommand does not take are refused rather than silently ignored. */
static int check_sub(struct tool_ctx *ctx, const struct devices_sub *sub, struct devices_opts *o)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(opt_names); i++)
        if ((o->seen & opt_names[i].bit) && !(sub->opts & opt_names[i].bit))
            return tool_usage_error(ctx, "'devices %s' does not take %s", sub->name,
                                    opt_names[i].name);
    if (o->nargs < sub->min_args)
        return tool_usage_error(ctx, "'devices %s' needs %s", sub->name, sub->args);
    if (o->nargs > sub->max_args)
        return tool_usage_error(ctx, "too many arguments for 'devices %s'", sub->name);
    if (sub->run == run_list && o->tags.n > 1)
        return tool_usage_error(ctx, "'devices list' takes one --tag");
    return TOOL_EXIT_OK;
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, const struct devices_sub *sub,
                      struct devices_opts *o)
{
    static const struct option longopts[] = {
        {"status", required_argument, NULL, 's'},
        {"tag", required_argument, NULL, 't'},
        {"type", required_argument, NULL, 'T'},
        {"limit", required_argument, NULL, 'n'},
        {"identity", required_argument, NULL, 'i'},
        {"public-key", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c, rc;
    while ((c = getopt_long(argc, argv, ":s:t:T:n:i:k:jqh", longopts, NULL)) != -1) {
        if (tool_remote_opt(&o->remote, c))
            continue;
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    }
    o->args = argv + optind;
    o->nargs = (size_t)(argc - optind);
    return check_sub(ctx, sub, o);
}

static const struct devices_sub *find_sub(const char *name)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(subs); i++)
        if (strcmp(subs[i].name, name) == 0)
            return &subs[i];
    return NULL;
}

int tool_cmd_devices(struct tool_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        return tool_usage_error(ctx, "missing a subcommand: list, show, accept, reject, "
                                "decommission, preauthorize or tag");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return tool_help(ctx);
    const struct devices_sub *sub = find_sub(argv[1]);
    if (!sub)
        return tool_usage_error(ctx, "unknown subcommand '%s'", argv[1]);
    _cleanup_(opts_release) struct devices_opts o = {0};
    /* getopt sees "SUBCOMMAND [OPTIONS] [ARGS]", the subcommand in its argv[0]. */
    int rc = parse_args(ctx, argc - 1, argv + 1, sub, &o);
    if (rc)
        return rc < 0 ? tool_help(ctx) : rc;
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    return rc ? rc : sub->run(ctx, sub, &o, c);
}
