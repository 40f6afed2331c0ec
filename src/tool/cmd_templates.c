/* otter templates: deployment templates (/api/v1/templates), the rules of continuous deployment.
 * A template binds a target and a rollout policy to a release channel; every artifact pushed to
 * that channel (otter push --channel) is deployed by each of its enabled templates. The target and
 * policy options are the ones of `otter deploy` (deploy_spec.c). */
#include "otter/client.h"
#include "tool.h"

#define TEMPLATE_NAME_MAX 127 /* bytes (otterd's limit, as for deployment names) */

const char tool_usage_templates[] =
    "Usage: otter templates create --name NAME --channel CHANNEL TARGET [POLICY] [--disabled]\n"
    "                              [--json]\n"
    "       otter templates list [--channel CHANNEL] [--json]\n"
    "       otter templates show ID [--json]\n"
    "       otter templates delete ID [--json]\n"
    "       otter templates enable|disable ID [--json]\n"
    "\n"
    "create   a template: each artifact pushed to CHANNEL (otter push --channel) is deployed\n"
    "         to TARGET with POLICY, in a deployment named \"NAME: ARTIFACT VERSION\"\n"
    "list     the templates, in id order (disabled ones too)\n"
    "show     one template\n"
    "delete   remove a template (the deployments it made stay)\n"
    "enable   a disabled template deploys again what is pushed from now on\n"
    "disable  the template deploys nothing until enabled again\n"
    "\n"
    "  -n, --name NAME               create: the template's name (1..127 bytes, unique)\n"
    "  -c, --channel CHANNEL         create: its release channel (1..63 of [A-Za-z0-9._-]);\n"
    "                                list: only this channel's templates\n"
    "      --disabled                create: make it disabled (it deploys nothing yet)\n"
    "  -j, --json                    print the server's JSON (list: an array of templates;\n"
    "                                delete: the template as it was)\n"
    "  -q, --quiet                   print nothing\n"
    "  -h, --help                    show this help\n"
    "\n" TOOL_TARGET_HELP "\n" TOOL_POLICY_HELP "\n" TOOL_REMOTE_HELP;

enum {
    O_NAME = 1 << 0,
    O_CHANNEL = 1 << 1,
    O_SPEC = 1 << 2, /* the target and policy options */
    O_DISABLED = 1 << 3,
};

enum { OPT_DISABLED = 0x2000 };

struct templates_opts {
    struct tool_remote remote;
    const char *name, *channel;
    struct tool_deploy_spec spec;
    bool disabled;
    bool json;
    int64_t id;
};

struct templates_sub {
    const char *name;
    int (*run)(struct tool_ctx *ctx, const struct templates_sub *sub,
               const struct templates_opts *o, struct ot_client *c);
    unsigned opts; /* the options it takes (--json, -q and the connection: all) */
    bool takes_id;
};

static int print_json_or_fail(const struct tool_ctx *ctx, const json_t *v)
{
    if (ctx->quiet || !tool_print_json(v))
        return TOOL_EXIT_OK;
    return tool_failf(ctx, OT_ERR_IO, "cannot write JSON");
}

/* The policy as compact JSON (the server keeps it as given); "-" for none. */
static const char *policy_text(const json_t *policy, char *buf, size_t len)
{
    if (!json_is_object(policy))
        return "-";
    _cleanup_free_ char *s = json_dumps(policy, JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(buf, len, "%s", s ? s : "?");
    return buf;
}

static void print_template(const struct tool_ctx *ctx, const json_t *t)
{
    char buf[2048];
    tool_out_field(ctx, "id", tool_jint_str(t, "id", buf, sizeof(buf)));
    tool_out_field(ctx, "name", tool_jstr(t, "name"));
    tool_out_field(ctx, "channel", tool_jstr(t, "channel"));
    tool_out_field(ctx, "target", tool_target_text(json_object_get(t, "target"), buf, sizeof(buf)));
    tool_out_field(ctx, "policy", policy_text(json_object_get(t, "policy"), buf, sizeof(buf)));
    tool_out_field(ctx, "enabled", json_is_true(json_object_get(t, "enabled")) ? "yes" : "no");
    tool_out_field(ctx, "created", tool_jtime(t, "created_at", "-", buf, sizeof(buf)));
    tool_out_field(ctx, "created by", tool_jstr(t, "created_by"));
}

/* "template 3 (nightly, channel beta): enabled" */
static void print_status(const struct tool_ctx *ctx, const json_t *t, const char *what)
{
    char id[32];
    tool_out_line(ctx, "template %s (%s, channel %s): %s", tool_jint_str(t, "id", id, sizeof(id)),
                  tool_jstr(t, "name"), tool_jstr(t, "channel"), what);
}

static int print_list(const struct tool_ctx *ctx, const json_t *list)
{
    static const char *const head[] = {"ID", "NAME", "CHANNEL", "ENABLED", "TARGET", "POLICY",
                                       "CREATED"};
    struct tool_table t;
    tool_table_init(&t, OT_ARRAY_SIZE(head));
    enum ot_err err = tool_table_row(&t, head);
    size_t i;
    json_t *tp;
    json_array_foreach(list, i, tp) {
        char id[32], target[512], policy[512], created[32];
        const char *row[] = {
            tool_jint_str(tp, "id", id, sizeof(id)), tool_jstr(tp, "name"),
            tool_jstr(tp, "channel"), json_is_true(json_object_get(tp, "enabled")) ? "yes" : "no",
            tool_target_text(json_object_get(tp, "target"), target, sizeof(target)),
            policy_text(json_object_get(tp, "policy"), policy, sizeof(policy)),
            tool_jtime(tp, "created_at", "-", created, sizeof(created)),
        };
        if (!err)
            err = tool_table_row(&t, row);
    }
    if (!err)
        tool_table_print(ctx, &t);
    tool_table_release(&t);
    return err ? tool_failf(ctx, err, "out of memory") : TOOL_EXIT_OK;
}

/* ---- subcommands ----------------------------------------------------------------------------- */

static json_t *create_body(const struct templates_opts *o)
{
    json_t *target = json_object();
    if (!target || tool_deploy_spec_target(&o->spec, target) != OT_OK) {
        json_decref(target);
        return NULL;
    }
    json_t *body = json_pack("{s:s, s:s, s:o, s:b}", "name", o->name, "channel", o->channel,
                             "target", target, "enabled", !o->disabled);
    if (body && o->spec.policy && json_object_set(body, "policy", o->spec.policy)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static int run_create(struct tool_ctx *ctx, const struct templates_sub *sub,
                      const struct templates_opts *o, struct ot_client *c)
{
    json_t *body = create_body(o), *t = NULL;
    if (!body)
        return tool_failf(ctx, OT_ERR_INVALID, "cannot build the request: out of memory, or text "
                          "that is not UTF-8");
    int rc = tool_api_object(ctx, c, "POST", "/api/v1/templates", body, &t);
    json_decref(body);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, t);
    else if (!rc)
        print_status(ctx, t, json_is_true(json_object_get(t, "enabled")) ? "created"
                                                                         : "created, disabled");
    json_decref(t);
    return rc;
}

/* Every template, filtered here by channel: the server's ?channel= lists only the enabled ones
 * (what an upload fires), and a disabled template must not vanish from the listing. */
static int run_list(struct tool_ctx *ctx, const struct templates_sub *sub,
                    const struct templates_opts *o, struct ot_client *c)
{
    static const struct tool_paging pg = {"templates", "after", "next_after", false};
    json_t *all = NULL, *list = json_array();
    int rc = list ? tool_api_list(ctx, c, "/api/v1/templates", &pg, 0, &all)
                  : tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    size_t i;
    json_t *t;
    json_array_foreach(all, i, t) {
        const char *ch = json_string_value(json_object_get(t, "channel"));
        if (!rc && (!o->channel || (ch && strcmp(ch, o->channel) == 0)) &&
            json_array_append(list, t))
            rc = tool_failf(ctx, OT_ERR_NOMEM, "out of memory");
    }
    if (!rc)
        rc = o->json ? print_json_or_fail(ctx, list) : print_list(ctx, list);
    json_decref(all);
    json_decref(list);
    return rc;
}

static int template_call(struct tool_ctx *ctx, const struct templates_opts *o,
                         struct ot_client *c, const char *method, const char *suffix,
                         json_t **ret)
{
    char path[96];
    return tool_api_object(ctx, c, method, tool_api_path(path, sizeof(path), "templates", o->id,
                                                         suffix),
                           NULL, ret);
}

static int run_show(struct tool_ctx *ctx, const struct templates_sub *sub,
                    const struct templates_opts *o, struct ot_client *c)
{
    json_t *t = NULL;
    int rc = template_call(ctx, o, c, "GET", NULL, &t);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, t);
    else if (!rc)
        print_template(ctx, t);
    json_decref(t);
    return rc;
}

/* enable, disable: the subcommand is the route's last path component. */
static int run_switch(struct tool_ctx *ctx, const struct templates_sub *sub,
                      const struct templates_opts *o, struct ot_client *c)
{
    json_t *t = NULL;
    int rc = template_call(ctx, o, c, "POST", sub->name, &t);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, t);
    else if (!rc)
        print_status(ctx, t, json_is_true(json_object_get(t, "enabled")) ? "enabled" : "disabled");
    json_decref(t);
    return rc;
}

/* DELETE answers 204 without a body: the template is read first, to say what was deleted. */
static int run_delete(struct tool_ctx *ctx, const struct templates_sub *sub,
                      const struct templates_opts *o, struct ot_client *c)
{
    json_t *t = NULL;
    char path[96];
    int rc = template_call(ctx, o, c, "GET", NULL, &t);
    if (!rc)
        rc = tool_api(ctx, c, "DELETE", tool_api_path(path, sizeof(path), "templates", o->id, NULL),
                      NULL, NULL);
    if (!rc && o->json)
        rc = print_json_or_fail(ctx, t);
    else if (!rc)
        print_status(ctx, t, "deleted");
    json_decref(t);
    return rc;
}

static const struct templates_sub subs[] = {
    {"create", run_create, O_NAME | O_CHANNEL | O_SPEC | O_DISABLED, false},
    {"list", run_list, O_CHANNEL, false},
    {"show", run_show, 0, true},
    {"delete", run_delete, 0, true},
    {"enable", run_switch, 0, true},
    {"disable", run_switch, 0, true},
};

/* ---- the command line ------------------------------------------------------------------------ */

static unsigned opt_bit(int c)
{
    switch (c) {
    case 'n':
        return O_NAME;
    case 'c':
        return O_CHANNEL;
    case OPT_DISABLED:
        return O_DISABLED;
    case 'd':
    case 't':
    case 'p':
        return O_SPEC;
    default:
        return c >= TOOL_OPT_DEVICES && c <= TOOL_OPT_WINDOW_TZ ? O_SPEC : 0;
    }
}

static int parse_opt(struct tool_ctx *ctx, int c, char **argv, struct templates_opts *o)
{
    int rc;
    if (tool_deploy_spec_opt(ctx, &o->spec, c, &rc))
        return rc;
    switch (c) {
    case 'n':
        o->name = optarg;
        return TOOL_EXIT_OK;
    case 'c':
        o->channel = optarg;
        if (!tool_channel_valid(optarg))
            return tool_usage_error(ctx, "--channel must be 1..63 characters of [A-Za-z0-9._-], "
                                    "not '%s'", optarg);
        return TOOL_EXIT_OK;
    case OPT_DISABLED:
        o->disabled = true;
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

/* After the options: the arguments, and what create needs. */
static int check_args(struct tool_ctx *ctx, const struct templates_sub *sub,
                      struct templates_opts *o, int nargs, char **args)
{
    if (nargs > (sub->takes_id ? 1 : 0))
        return tool_usage_error(ctx, "too many arguments for 'templates %s'", sub->name);
    if (sub->takes_id)
        return nargs ? tool_parse_id(ctx, "ID", args[0], &o->id)
                     : tool_usage_error(ctx, "'templates %s' needs ID", sub->name);
    if (sub->run != run_create)
        return TOOL_EXIT_OK;
    if (!o->name || !o->channel)
        return tool_usage_error(ctx, "'templates create' needs --name and --channel");
    if (!o->name[0] || strlen(o->name) > TEMPLATE_NAME_MAX)
        return tool_usage_error(ctx, "--name must be 1..%d bytes", TEMPLATE_NAME_MAX);
    return tool_deploy_spec_check(ctx, &o->spec);
}

static int parse_args(struct tool_ctx *ctx, int argc, char **argv, const struct templates_sub *sub,
                      struct templates_opts *o)
{
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"channel", required_argument, NULL, 'c'},
        {"disabled", no_argument, NULL, OPT_DISABLED},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        TOOL_SPEC_LONGOPTS,
        TOOL_REMOTE_LONGOPTS,
        {0},
    };
    int c, rc, li = -1;
    while ((c = getopt_long(argc, argv, ":n:c:jqh" TOOL_SPEC_SHORTOPTS, longopts, &li)) != -1) {
        /* Options the subcommand does not take are refused rather than silently ignored. */
        if (opt_bit(c) && !(sub->opts & opt_bit(c))) {
            char name[32];
            if (li >= 0)
                snprintf(name, sizeof(name), "--%s", longopts[li].name);
            else
                snprintf(name, sizeof(name), "-%c", c);
            return tool_usage_error(ctx, "'templates %s' does not take %s", sub->name, name);
        }
        li = -1;
        if (tool_remote_opt(&o->remote, c))
            continue;
        if ((rc = parse_opt(ctx, c, argv, o)) != 0)
            return rc;
    }
    return check_args(ctx, sub, o, argc - optind, argv + optind);
}

int tool_cmd_templates(struct tool_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        return tool_usage_error(ctx, "missing a subcommand: create, list, show, delete, enable or "
                                "disable");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return tool_help(ctx);
    const struct templates_sub *sub = NULL;
    for (size_t i = 0; i < OT_ARRAY_SIZE(subs) && !sub; i++)
        if (strcmp(subs[i].name, argv[1]) == 0)
            sub = &subs[i];
    if (!sub)
        return tool_usage_error(ctx, "unknown subcommand '%s'", argv[1]);
    struct templates_opts o = {0};
    /* getopt sees "SUBCOMMAND [OPTIONS] [ARGS]", the subcommand in its argv[0]. */
    int rc = parse_args(ctx, argc - 1, argv + 1, sub, &o);
    if (rc) {
        tool_deploy_spec_release(&o.spec);
        return rc < 0 ? tool_help(ctx) : rc;
    }
    _cleanup_(ot_client_freep) struct ot_client *c = NULL;
    rc = tool_remote_connect(ctx, &o.remote, &c);
    if (!rc)
        rc = sub->run(ctx, sub, &o, c);
    tool_deploy_spec_release(&o.spec);
    return rc;
}
