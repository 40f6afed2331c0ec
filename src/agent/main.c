/* otter-agent: the device agent. main() parses the command line, loads and checks the
 * configuration, and runs one of:
 *
 *   otter-agent [daemon]         poll the server, download, install, report (the event loop)
 *   otter-agent install FILE     standalone: verify and install a local artifact now
 *   otter-agent commit           standalone: accept the running update (after the reboot)
 *   otter-agent rollback         standalone: go back to the previous version
 *   otter-agent status           what the agent is doing (asks the daemon, else reads the state)
 *   otter-agent check-now | pause | resume     tell the running daemon
 *   otter-agent sim-boot FILE    the simulated bootloader's power-on (tests, otter-sim)
 *
 * Log lines go to stderr as "<N>message" (syslog priority prefixes, understood by journald).
 * Exit status: 0 ok, 1 failure, 2 usage or configuration, 3 artifact refused, 75 reboot needed. */
#include <getopt.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "device.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/log.h"

#ifndef OTTER_VERSION
#define OTTER_VERSION "unknown"
#endif

enum { EXIT_USAGE = 2, EXIT_REFUSED = 3 };

static void usage(FILE *f)
{
    fputs("Usage: otter-agent [--config FILE] [COMMAND]\n"
          "\n"
          "The Otter device agent.\n"
          "\n"
          "Commands:\n"
          "  daemon          poll the server and apply updates (default)\n"
          "  install FILE    verify and install a local artifact now (standalone)\n"
          "  commit          accept the update running after a reboot\n"
          "  rollback        go back to the previous version\n"
          "  status          show the agent's state (as JSON)\n"
          "  check-now       ask the running daemon to check in now\n"
          "  pause, resume   stop and restart the running daemon's downloads and check-ins\n"
          "  sim-boot FILE   power on the simulated bootloader (tests)\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE   configuration file (default /etc/otter/agent.conf)\n"
          "  -h, --help          show this help (with the configuration keys)\n"
          "  -V, --version       show the version\n"
          "\n"
          "Configuration keys:\n",
          f);
    for (size_t i = 0; i < ag_config_nkeys; i++)
        fprintf(f, "  %-17s %s%s%s%s\n", ag_config_keys[i].key, ag_config_keys[i].help,
                ag_config_keys[i].def ? " [" : "", ag_config_keys[i].def ? ag_config_keys[i].def : "",
                ag_config_keys[i].def ? "]" : "");
    fputs("\nExit status: 0 ok, 1 failure, 2 usage or configuration error, 3 artifact refused,\n"
          "75 a reboot is needed (reboot_command is empty).\n",
          f);
}

static int fail(int code, const char *what, const struct ot_diag *d)
{
    fprintf(stderr, "otter-agent: %s%s%s\n", what ? what : "", what ? ": " : "",
            d->msg[0] ? d->msg : ot_strerror(d->err));
    return code;
}

static void log_sink(enum ot_log_level level, const char *msg, void *userdata)
{
    (void)userdata;
    char line[1100];
    int n = snprintf(line, sizeof(line), "<%d>%s\n", (int)level, msg);
    if (n > 0)
        (void)!write(STDERR_FILENO, line, OT_MIN((size_t)n, sizeof(line) - 1));
}

/* ---- what every command needs ----------------------------------------------------------------- */

static enum ot_err agent_load(struct ag_device *a, const char *config, bool need_server,
                              struct ot_diag *d)
{
    enum ot_err err = ag_config_load(config, &a->cfg, d);
    if (!err)
        err = ag_config_check(&a->cfg, d);
    if (!err)
        err = ag_device_open(a, need_server, NULL, d);
    return err;
}

/* ---- the daemon ------------------------------------------------------------------------------- */

struct daemon {
    struct ag_loop *loop;
    struct ag_engine *engine;
    int control_fd;
};

static void on_signal(void *userdata, int signo)
{
    struct daemon *dm = userdata;
    ot_log(OT_LOG_NOTICE, "%s: stopping", strsignal(signo));
    ag_loop_stop(dm->loop, 0);
}

/* One command per connection: a line in, a JSON line out. */
static void on_control(void *userdata, int fd, uint32_t events)
{
    (void)events;
    struct daemon *dm = userdata;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    struct timeval tv = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char cmd[64] = "";
    ssize_t n = read(c, cmd, sizeof(cmd) - 1);
    cmd[n > 0 ? n : 0] = '\0';
    cmd[strcspn(cmd, "\r\n")] = '\0';
    json_t *reply;
    if (strcmp(cmd, "status") == 0) {
        reply = ag_engine_status(dm->engine);
    } else if (strcmp(cmd, "check-now") == 0) {
        ag_engine_check_now(dm->engine);
        reply = json_pack("{s:b}", "ok", 1);
    } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
        ag_engine_pause(dm->engine, cmd[0] == 'p');
        reply = json_pack("{s:b}", "ok", 1);
    } else {
        reply = json_pack("{s:s}", "error", "unknown command");
    }
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n';
        (void)!write(c, text, len + 1);
    }
    free(text);
    json_decref(reply);
    close(c);
}

static enum ot_err control_listen(const char *path, int *ret, struct ot_diag *d)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return ot_diag_set(d, OT_ERR_CONFIG, "control_socket: path too long");
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "control socket");
    unlink(path);
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, 8) < 0) {
        int e = errno;
        close(fd);
        return ot_diag_errno(d, OT_ERR_IO, e, "control socket %s", path);
    }
    *ret = fd;
    return OT_OK;
}

static int run_daemon(struct ag_device *a)
{
    struct ot_diag d = {0};
    struct daemon dm = {.control_fd = -1};
    struct ag_net *net = NULL;
    int rc = 1;
    enum ot_err err = ag_device_identity(a, &d);
    if (!err)
        err = ag_loop_new(&dm.loop, &d);
    if (!err) {
        struct ag_net_config nc = ag_device_net_config(a);
        err = ag_net_new(dm.loop, &nc, &net, &d);
    }
    if (!err) {
        struct ag_engine_env env = ag_device_engine_env(a, dm.loop, net);
        err = ag_engine_new(&env, &dm.engine, &d);
    }
    if (!err)
        err = ag_loop_signal(dm.loop, SIGTERM, on_signal, &dm, &d);
    if (!err)
        err = ag_loop_signal(dm.loop, SIGINT, on_signal, &dm, &d);
    if (!err && control_listen(a->cfg.control_socket, &dm.control_fd, &d) != OT_OK) {
        ot_log(OT_LOG_WARNING, "%s: the control commands will not work", d.msg);
        ot_diag_clear(&d);
    }
    if (!err && dm.control_fd >= 0)
        err = ag_loop_fd(dm.loop, dm.control_fd, EPOLLIN, on_control, &dm, &d);
    if (err) {
        rc = fail(err == OT_ERR_CONFIG ? EXIT_USAGE : 1, NULL, &d);
    } else {
        signal(SIGPIPE, SIG_IGN);
        ot_log(OT_LOG_INFO, "otter-agent %s: device type %s, state in %s", OTTER_VERSION,
               a->cfg.device_type, a->cfg.state_dir);
        ag_engine_start(dm.engine);
        rc = ag_loop_run(dm.loop);
    }
    if (dm.control_fd >= 0) {
        close(dm.control_fd);
        unlink(a->cfg.control_socket);
    }
    ag_engine_free(dm.engine);
    ag_net_free(net);
    ag_loop_free(dm.loop);
    return rc;
}

/* ---- the other commands ------------------------------------------------------------------------ */

static int ask_daemon(const char *path, const char *cmd, bool quiet_fail)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        if (!quiet_fail)
            fprintf(stderr, "otter-agent: the daemon is not running (no %s)\n", path);
        return -1;
    }
    char line[64];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);
    char buf[8192];
    ssize_t got = write(fd, line, (size_t)n) == n ? read(fd, buf, sizeof(buf) - 1) : -1;
    close(fd);
    if (got <= 0) {
        fprintf(stderr, "otter-agent: no answer from the daemon\n");
        return 1;
    }
    fwrite(buf, 1, (size_t)got, stdout);
    return 0;
}

static int standalone(struct ag_device *a, const char *cmd, const char *arg)
{
    struct ot_diag d = {0};
    struct ag_engine *e = NULL;
    struct ag_engine_env env = ag_device_engine_env(a, NULL, NULL);
    enum ot_err err = ag_engine_new(&env, &e, &d);
    if (err)
        return fail(1, NULL, &d);
    bool reboot = false;
    int rc = 0;
    if (strcmp(cmd, "install") == 0)
        err = ag_engine_install_file(e, arg, &reboot, &d);
    else if (strcmp(cmd, "commit") == 0)
        err = ag_engine_commit(e, &d);
    else
        err = ag_engine_rollback(e, &reboot, &d);
    if (err) {
        bool refused = err == OT_ERR_SIGNATURE || err == OT_ERR_UNTRUSTED || err == OT_ERR_HASH ||
                       err == OT_ERR_INCOMPATIBLE || err == OT_ERR_ROLLBACK ||
                       err == OT_ERR_FORMAT || err == OT_ERR_TRUNCATED;
        rc = fail(refused ? EXIT_REFUSED : 1, cmd, &d);
    } else if (reboot) {
        printf("otter-agent: %s: reboot now%s\n", cmd,
               strcmp(cmd, "install") == 0 ? ", then run 'otter-agent commit'" : "");
        rc = AG_EXIT_REBOOT;
    } else {
        printf("otter-agent: %s: done\n", cmd);
    }
    ag_engine_free(e);
    return rc;
}

static int status(struct ag_device *a)
{
    if (ask_daemon(a->cfg.control_socket, "status", true) == 0)
        return 0;
    struct ag_state st;
    struct ot_diag d = {0};
    if (ag_state_load(a->cfg.state_dir, &st, &d) != OT_OK)
        return fail(1, "status", &d);
    json_t *o = json_pack("{s:s, s:I, s:s, s:s?, s:s, s:b, s:s?, s:b}", "phase",
                          ag_phase_name(st.phase), "deployment_id", (json_int_t)st.deployment_id,
                          "target_slot", st.target_slot, "message", st.message, "type",
                          ot_wire_deploy_type_name(st.type), "install_held", st.install_held,
                          "waiting", st.phase == AG_WAITING ? st.wait_reason : NULL, "daemon", 0);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
    ag_state_release(&st);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("otter-agent %s\n", OTTER_VERSION);
            return 0;
        default:
            fprintf(stderr, "otter-agent: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    const char *cmd = optind < argc ? argv[optind++] : "daemon";
    const char *arg = optind < argc ? argv[optind++] : NULL;
    if (optind < argc) {
        fprintf(stderr, "otter-agent: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    srandom((unsigned)(time(NULL) ^ getpid())); /* poll jitter */
    ot_log_set_sink(log_sink, NULL);
    ot_log_set_level(OT_LOG_INFO);
    if (strcmp(cmd, "sim-boot") == 0) {
        char slot[2];
        struct ot_diag d = {0};
        if (!arg) {
            fprintf(stderr, "otter-agent: sim-boot needs the simulated bootloader's file\n");
            return EXIT_USAGE;
        }
        if (ag_boot_sim_power_on(arg, slot, &d) != OT_OK)
            return fail(1, "sim-boot", &d);
        printf("%s\n", slot);
        return 0;
    }
    bool known = strcmp(cmd, "daemon") == 0 || strcmp(cmd, "install") == 0 ||
                 strcmp(cmd, "commit") == 0 || strcmp(cmd, "rollback") == 0 ||
                 strcmp(cmd, "status") == 0 || strcmp(cmd, "check-now") == 0 ||
                 strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0;
    if (!known) {
        fprintf(stderr, "otter-agent: unknown command '%s' (see --help)\n", cmd);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "install") == 0 && !arg) {
        fprintf(stderr, "otter-agent: install needs an artifact file\n");
        return EXIT_USAGE;
    }
    if (!config && access("/etc/otter/agent.conf", F_OK) == 0)
        config = "/etc/otter/agent.conf";
    struct ag_device a = {0};
    struct ot_diag d = {0};
    bool daemon = strcmp(cmd, "daemon") == 0;
    enum ot_err err = agent_load(&a, config, daemon, &d);
    int rc;
    if (err)
        rc = fail(err == OT_ERR_CONFIG ? EXIT_USAGE : 1, NULL, &d);
    else if (daemon)
        rc = run_daemon(&a);
    else if (strcmp(cmd, "status") == 0)
        rc = status(&a);
    else if (strcmp(cmd, "check-now") == 0 || strcmp(cmd, "pause") == 0 ||
             strcmp(cmd, "resume") == 0)
        rc = ask_daemon(a.cfg.control_socket, cmd, false) == 0 ? 0 : 1;
    else
        rc = standalone(&a, cmd, arg);
    ag_device_release(&a);
    return rc;
}
