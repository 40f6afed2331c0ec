/* The device's inventory (engine.h): what operators see as attributes. Built-in: device type,
 * agent version, installed versions per payload, os-release, kernel, free space in the state
 * directory; plus "key=value" lines printed by each executable in inventory_dir (bounded: 10 s,
 * 16 KiB of output, OT_WIRE_LIST_MAX attributes in all; a failing script is logged and skipped). */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#include "engine.h"
#include "otter/log.h"

#define SCRIPT_OUTPUT_MAX (16 * 1024)
#define SCRIPT_TIMEOUT_MS 10000

extern char **environ;

static enum ot_err add(struct ot_wire_inventory *inv, const char *key, const char *value)
{
    if (inv->nattrs >= OT_WIRE_LIST_MAX || !ot_wire_key_is_valid(key) ||
        !ot_wire_value_is_valid(value))
        return OT_OK; /* skipped: bounded and clean, never an error for the device */
    for (size_t i = 0; i < inv->nattrs; i++)
        if (strcmp(inv->attrs[i].key, key) == 0)
            return OT_OK; /* built-ins first, scripts cannot override them */
    struct ot_wire_kv *grown = realloc(inv->attrs, (inv->nattrs + 1) * sizeof(*grown));
    if (!grown)
        return OT_ERR_NOMEM;
    inv->attrs = grown;
    grown[inv->nattrs] = (struct ot_wire_kv){strdup(key), strdup(value)};
    if (!grown[inv->nattrs].key || !grown[inv->nattrs].value) {
        free(grown[inv->nattrs].key);
        free(grown[inv->nattrs].value);
        return OT_ERR_NOMEM;
    }
    inv->nattrs++;
    return OT_OK;
}

static void os_release(struct ot_wire_inventory *inv)
{
    FILE *f = fopen("/etc/os-release", "re");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        const char *key = strncmp(line, "PRETTY_NAME=", 12) == 0 ? "os"
                          : strncmp(line, "VERSION_ID=", 11) == 0 ? "os_version"
                                                                  : NULL;
        if (!key)
            continue;
        char *v = strchr(line, '=') + 1;
        size_t n = strlen(v);
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v[n - 1] = '\0';
            v++;
        }
        if (add(inv, key, v) != OT_OK)
            break;
    }
    if (f)
        fclose(f);
}

/* Runs one attribute script and adds its key=value lines. */
static void run_script(const char *path, struct ot_wire_inventory *inv)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    /* the loop blocks signals (signalfd): a child gets the defaults back */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {(char *)path, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, path, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(pipefd[1]);
    if (rc != 0) {
        close(pipefd[0]);
        ot_log(OT_LOG_WARNING, "inventory: cannot run %s: %s", path, strerror(rc));
        return;
    }
    char *out = malloc(SCRIPT_OUTPUT_MAX + 1);
    size_t len = 0;
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    bool timed_out = false;
    while (out) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = SCRIPT_TIMEOUT_MS - ((now.tv_sec - start.tv_sec) * 1000 +
                                         (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(pipefd[0], out + len, SCRIPT_OUTPUT_MAX - len);
        if (n <= 0 || (len += (size_t)n) >= SCRIPT_OUTPUT_MAX)
            break;
    }
    close(pipefd[0]);
    if (timed_out)
        kill(-pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!out)
        return;
    out[len] = '\0';
    if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ot_log(OT_LOG_WARNING, "inventory: %s failed%s", path, timed_out ? " (timed out)" : "");
    } else {
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char *eq = strchr(line, '=');
            if (!eq)
                continue;
            *eq = '\0';
            if (add(inv, line, eq + 1) != OT_OK)
                break;
        }
    }
    free(out);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void scripts(const char *dir, struct ot_wire_inventory *inv)
{
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, by_name);
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
        if (list[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            (st.st_mode & S_IXUSR))
            run_script(path, inv);
        free(list[i]);
    }
    free(list);
}

enum ot_err ag_inventory_collect(const struct ag_config *cfg, const struct ag_installed *in,
                                 struct ot_wire_inventory *ret, struct ot_diag *d)
{
    struct ot_wire_inventory inv = {.replace = true};
    char buf[256];
    struct utsname u;
    struct statvfs vfs;
    enum ot_err err = add(&inv, "device_type", cfg->device_type);
    if (!err)
        err = add(&inv, "agent_version", OTTER_VERSION);
    for (size_t i = 0; !err && i < in->n; i++) {
        snprintf(buf, sizeof(buf), "version.%s", in->payloads[i].name);
        err = add(&inv, buf, in->payloads[i].version);
    }
    if (!err && uname(&u) == 0) {
        err = add(&inv, "kernel", u.release);
        if (!err)
            err = add(&inv, "arch", u.machine);
    }
    if (!err && statvfs(cfg->state_dir, &vfs) == 0) {
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)vfs.f_bavail * vfs.f_frsize);
        err = add(&inv, "free_bytes", buf);
    }
    if (!err) {
        os_release(&inv);
        scripts(cfg->inventory_dir, &inv);
    }
    if (err) {
        ot_wire_inventory_release(&inv);
        return ot_diag_set(d, err, "out of memory");
    }
    *ret = inv;
    return OT_OK;
}
