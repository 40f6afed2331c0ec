/* otter: keys, packing, signing and verifying artifacts, and otterd's command-line client.
 * main() only dispatches: one table of subcommands, each a tool_cmd_<name>() in its own
 * cmd_<name>.c. */
#include "tool.h"

#ifndef OTTER_VERSION
#define OTTER_VERSION "unknown"
#endif

const struct tool_cmd tool_cmds[] = {
    {"keygen", tool_cmd_keygen, "create a signing (release) key or a device (encryption) key",
     tool_usage_keygen},
    {"trust", tool_cmd_trust, "write a trust file: the release keys a device accepts, k of n",
     tool_usage_trust},
    {"pack", tool_cmd_pack, "pack payloads into an artifact (from a spec file and/or flags)",
     tool_usage_pack},
    {"sign", tool_cmd_sign, "add a signature to an artifact", tool_usage_sign},
    {"verify", tool_cmd_verify, "verify an artifact's signatures and every payload",
     tool_usage_verify},
    {"inspect", tool_cmd_inspect, "show an artifact's manifest (signatures not verified)",
     tool_usage_inspect},
    {"unpack", tool_cmd_unpack, "verify an artifact and extract its payloads into a directory",
     tool_usage_unpack},
    {"push", tool_cmd_push, "upload an artifact to the server", tool_usage_push},
    {"deploy", tool_cmd_deploy, "deploy an artifact to devices or to a tag", tool_usage_deploy},
    {"devices", tool_cmd_devices, "list, show, accept, reject, tag and preauthorize devices",
     tool_usage_devices},
    {"deployments", tool_cmd_deployments, "list, show and cancel deployments",
     tool_usage_deployments},
    {"templates", tool_cmd_templates, "deployment templates: what a push to a channel deploys",
     tool_usage_templates},
};
const size_t tool_ncmds = OT_ARRAY_SIZE(tool_cmds);

static void print_main_help(FILE *f)
{
    fputs("Usage: otter [--help] [--version] COMMAND [OPTIONS] [ARGS]\n"
          "\n"
          "Otter artifact tool: keys, packing, signing, verification; and the client of an\n"
          "otterd server: uploads, deployments, the device fleet.\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < tool_ncmds; i++)
        fprintf(f, "  %-12s %s\n", tool_cmds[i].name, tool_cmds[i].summary);
    fputs("\n"
          "Run 'otter COMMAND --help' for a command's options. The server commands (push,\n"
          "deploy, devices, deployments, templates) read the server URL and API token from\n"
          "--server and --token-file, OTTER_SERVER and OTTER_TOKEN, or\n"
          "~/.config/otter/client.conf.\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 usage error, 3 artifact rejected.\n",
          f);
}

static const struct tool_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < tool_ncmds; i++)
        if (strcmp(tool_cmds[i].name, name) == 0)
            return &tool_cmds[i];
    return NULL;
}

/* `otter help [COMMAND]`. */
static int run_help(int argc, char **argv)
{
    if (argc < 3) {
        print_main_help(stdout);
        return TOOL_EXIT_OK;
    }
    const struct tool_cmd *cmd = find_cmd(argv[2]);
    if (!cmd) {
        fprintf(stderr, "otter: unknown command '%s' (see 'otter --help')\n", argv[2]);
        return TOOL_EXIT_USAGE;
    }
    struct tool_ctx ctx = {.cmd = cmd};
    return tool_help(&ctx);
}

/* Output that could not be written (a full disk, a closed pipe) is a failure, not a success. */
static int finish_output(const struct tool_ctx *ctx, int rc)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return rc;
    fprintf(stderr, "otter: %s: cannot write the output: %s\n", ctx->cmd->name, strerror(errno));
    return rc == TOOL_EXIT_OK ? TOOL_EXIT_FAILURE : rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_main_help(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        print_main_help(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
        printf("otter %s\n", OTTER_VERSION);
        return TOOL_EXIT_OK;
    }
    if (strcmp(arg, "help") == 0)
        return run_help(argc, argv);
    const struct tool_cmd *cmd = find_cmd(arg);
    if (!cmd) {
        fprintf(stderr, "otter: unknown %s '%s' (see 'otter --help')\n",
                arg[0] == '-' ? "option" : "command", arg);
        return TOOL_EXIT_USAGE;
    }
    struct tool_ctx ctx = {.cmd = cmd};
    /* The command parses argv[1..] with getopt_long: argv[0] of that vector is its own name. */
    int rc = cmd->run(&ctx, argc - 1, argv + 1);
    return finish_output(&ctx, rc);
}
