/* otterd: the Otter server.
 *
 * main() reads the configuration (one key table; flags override the file) and validates all of it
 * before any I/O; then it prepares the data directory, opens the store, starts the HTTP layer,
 * prints the first admin token once, and waits for a signal. Errors are one line on stderr,
 * "otterd: <message>"; the running server logs through ot_log as "<N>message" lines on stderr
 * (syslog priorities, understood by journald). Exit status: 0 ok, 1 failure, 2 usage/config. */
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "app.h"
#include "fleet.h"
#include "groups.h"
#include "otter/config.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"
#include "rollout.h"

#ifndef OTTER_VERSION
#define OTTER_VERSION "unknown"
#endif

enum srv_exit {
    SRV_EXIT_OK = 0,
    SRV_EXIT_FAILURE = 1, /* cannot open the store, cannot listen, ... */
    SRV_EXIT_USAGE = 2,   /* bad command line or configuration */
};

struct srv_config {
    char *listen;
    char *data_dir;
    char *database;
    uint64_t threads;
    uint64_t connection_limit;
    uint64_t connection_timeout_ms;
    uint64_t header_limit;
    char *tls_cert;
    char *tls_key;
    char *log_level;
    uint64_t poll_interval_ms;
    uint64_t poll_jitter_ms;
    uint64_t rollout_tick_ms;
    bool rollout_engine;
    uint64_t device_token_ttl_ms;
    uint64_t max_artifact_size;
    uint64_t last_seen_flush_ms;
    uint64_t device_cache_ttl_ms;
    struct ot_strlist ddi_tenant;
    bool ddi_target_token;
    char *ddi_gateway_token;
    bool ddi_trust_controller_header;
    struct ddi_tenant_keys { /* ddi_*.<TENANT>, for the tenant of the same place in ddi_tenant */
        bool target_token;
        char *gateway_token; /* NULL: ddi_gateway_token's */
        bool trust_controller_header;
    } ddi[SRV_DDI_TENANTS_MAX];
};

#define CFG(f) offsetof(struct srv_config, f)

/* Every key of the configuration file (STYLE.md: key, type, range, default in one table). */
static const struct ot_cfg_key cfg_keys[] = {
    {NULL, "listen", OT_CFG_STRING, CFG(listen), 1, 64, "127.0.0.1:8080",
     "HOST:PORT or [IPv6]:PORT to listen on (port 0: any free port)"},
    {NULL, "data_dir", OT_CFG_STRING, CFG(data_dir), 1, 4095, "/var/lib/otter",
     "data directory: database and blobs/ (created with mode 0700)"},
    {NULL, "database", OT_CFG_STRING, CFG(database), 1, 4095, NULL,
     "store URL (default: sqlite:DATA_DIR/otter.db)"},
    {NULL, "threads", OT_CFG_U64, CFG(threads), 0, 256, "0",
     "HTTP worker threads (0: one per CPU)"},
    {NULL, "connection_limit", OT_CFG_U64, CFG(connection_limit), 1, 1000000, "1024",
     "concurrent connections"},
    {NULL, "connection_timeout", OT_CFG_DURATION, CFG(connection_timeout_ms), 1000, 86400000, "30s",
     "idle connections are closed after this"},
    {NULL, "header_limit", OT_CFG_SIZE, CFG(header_limit), 4096, 1048576, "16K",
     "request line and headers of one request (larger: 431)"},
    {NULL, "tls_cert", OT_CFG_STRING, CFG(tls_cert), 1, 4095, NULL,
     "PEM certificate (chain) file: HTTPS, with tls_key"},
    {NULL, "tls_key", OT_CFG_STRING, CFG(tls_key), 1, 4095, NULL, "PEM private key file"},
    {NULL, "log_level", OT_CFG_STRING, CFG(log_level), 1, 16, "info",
     "err, warning, notice, info (one line per request) or debug"},
    {NULL, "poll_interval", OT_CFG_DURATION, CFG(poll_interval_ms), 1000, 7 * 86400000ull, "5m",
     "how long devices wait between check-ins"},
    {NULL, "poll_jitter", OT_CFG_DURATION, CFG(poll_jitter_ms), 0, 7 * 86400000ull, "30s",
     "devices spread their check-ins by up to this much (at most poll_interval)"},
    {NULL, "device_token_ttl", OT_CFG_DURATION, CFG(device_token_ttl_ms), 60000, 30 * 86400000ull,
     "1h", "how long a device token is valid"},
    {NULL, "max_artifact_size", OT_CFG_SIZE, CFG(max_artifact_size), 4096,
     64ull * 1024 * 1024 * 1024, "8G", "largest artifact an upload may be"},
    {NULL, "last_seen_flush", OT_CFG_DURATION, CFG(last_seen_flush_ms), 100, 600000, "5s",
     "devices' last-seen times are written in one batch this often"},
    {NULL, "device_cache_ttl", OT_CFG_DURATION, CFG(device_cache_ttl_ms), 1000, 86400000, "10m",
     "PostgreSQL: how long a device's cached state may be used at most (changes made by other "
     "instances arrive within a second anyway; this is a safety net)"},
    {NULL, "rollout_tick", OT_CFG_DURATION, CFG(rollout_tick_ms), 100, 600000, "1s",
     "how often the rollout engine looks at each staged rollout"},
    {NULL, "rollout_engine", OT_CFG_BOOL, CFG(rollout_engine), 0, 1, "true",
     "this instance makes the rollout decisions (with several instances on one PostgreSQL "
     "database, set it true on exactly one)"},
    {NULL, "ddi_tenant", OT_CFG_STRLIST, CFG(ddi_tenant), 1, SRV_DDI_TENANTS_MAX, "DEFAULT",
     "hawkBit DDI: the tenants in /{tenant}/controller/v1/, comma-separated (others: 404); "
     "KEY.TENANT sets the next three keys for one of them"},
    {NULL, "ddi_target_token", OT_CFG_BOOL, CFG(ddi_target_token), 0, 1, "true",
     "hawkBit DDI: accept per-device target tokens (POST /api/v1/devices/ddi)"},
    {NULL, "ddi_gateway_token", OT_CFG_STRING, CFG(ddi_gateway_token), 0, 256, "",
     "hawkBit DDI: a gateway token acting as any controller, registering unknown ones (empty: "
     "off)"},
    {NULL, "ddi_trust_controller_header", OT_CFG_BOOL, CFG(ddi_trust_controller_header), 0, 1,
     "false", "hawkBit DDI: trust a TLS-terminating proxy's X-Controller-Id (the verified "
     "client certificate's CN)"},
};

/* The per-tenant DDI keys (ddi_target_token.ACME, ddi_gateway_token.ACME,
 * ddi_trust_controller_header.ACME) exist only for the tenants ddi_tenant lists, so the table
 * used is cfg_keys plus theirs: a first pass over the file finds the tenants and the plain keys'
 * values, which become the per-tenant keys' defaults. Everything else (types, unknown and
 * duplicate keys, file:line messages) is the table's, as for any key. */
#define DDI_SWITCHES 3
static const char *const ddi_switches[DDI_SWITCHES] = {"ddi_target_token", "ddi_gateway_token",
                                                       "ddi_trust_controller_header"};

struct cfg_table {
    struct ot_cfg_key keys[OT_ARRAY_SIZE(cfg_keys) + DDI_SWITCHES * SRV_DDI_TENANTS_MAX];
    size_t n;
    char names[DDI_SWITCHES * SRV_DDI_TENANTS_MAX][SRV_DDI_TENANT_MAX + 32];
    char *plain[3]; /* the file's values of prescanned[] (first pass), or NULL */
};

static const char *const prescanned[3] = {"ddi_tenant", "ddi_target_token",
                                          "ddi_trust_controller_header"};

static enum ot_err prescan_entry(void *userdata, const char *section, const char *name,
                                 const char *key, const char *value, struct ot_diag *d)
{
    struct cfg_table *t = userdata;
    for (size_t i = 0; key && !section[0] && i < OT_ARRAY_SIZE(prescanned); i++)
        if (strcmp(key, prescanned[i]) == 0) {
            free(t->plain[i]);
            if (!(t->plain[i] = strdup(value)))
                return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        }
    return OT_OK;
}

static enum ot_err prescan(const char *path, struct cfg_table *t)
{
    struct ot_buf b;
    ot_buf_init(&b, OT_CFG_FILE_MAX);
    enum ot_err err = ot_file_read(path, &b, NULL);
    if (!err)
        err = ot_cfg_parse(path, b.data, b.len, prescan_entry, t, NULL);
    ot_buf_release(&b);
    return err;
}

static const char *key_default(const char *key)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(cfg_keys); i++)
        if (strcmp(cfg_keys[i].key, key) == 0)
            return cfg_keys[i].def;
    return NULL;
}

/* The value the tenants' bool keys default to: the plain key's, while it is a valid bool (a bad
 * one is reported on its own line by the second pass). */
static const char *bool_default(const struct cfg_table *t, size_t i)
{
    bool b;
    return t->plain[i] && ot_parse_bool(t->plain[i], &b) == OT_OK ? t->plain[i]
                                                                   : key_default(prescanned[i]);
}

static void add_tenant_keys(struct cfg_table *t, size_t i, const char *tenant)
{
    size_t base = CFG(ddi) + i * sizeof(struct ddi_tenant_keys);
    const struct ot_cfg_key keys[DDI_SWITCHES] = {
        {NULL, NULL, OT_CFG_BOOL, base + offsetof(struct ddi_tenant_keys, target_token), 0, 1,
         bool_default(t, 1), NULL},
        {NULL, NULL, OT_CFG_STRING, base + offsetof(struct ddi_tenant_keys, gateway_token), 0, 256,
         NULL, NULL},
        {NULL, NULL, OT_CFG_BOOL,
         base + offsetof(struct ddi_tenant_keys, trust_controller_header), 0, 1,
         bool_default(t, 2), NULL},
    };
    for (size_t k = 0; k < DDI_SWITCHES; k++) {
        char *name = t->names[i * DDI_SWITCHES + k];
        snprintf(name, sizeof(t->names[0]), "%s.%s", ddi_switches[k], tenant);
        t->keys[t->n] = keys[k];
        t->keys[t->n++].key = name;
    }
}

/* A file that cannot be read or parsed gets no tenant keys: the second pass reports why. */
static void cfg_table_build(const char *path, struct cfg_table *t)
{
    memcpy(t->keys, cfg_keys, sizeof(cfg_keys));
    t->n = OT_ARRAY_SIZE(cfg_keys);
    struct ot_strlist tenants = {0};
    if ((path && prescan(path, t) != OT_OK) ||
        ot_strlist_split(t->plain[0] ? t->plain[0] : key_default("ddi_tenant"), &tenants,
                         NULL) != OT_OK)
        return;
    for (size_t i = 0; i < tenants.n && i < SRV_DDI_TENANTS_MAX; i++)
        if (strlen(tenants.v[i]) <= SRV_DDI_TENANT_MAX) /* longer: refused by validate() */
            add_tenant_keys(t, i, tenants.v[i]);
    ot_strlist_release(&tenants);
}

static void cfg_table_release(struct cfg_table *t)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(t->plain); i++)
        free(t->plain[i]);
}

struct options {
    const char *config;
    const char *data_dir;
    const char *listen;
    bool routes;
};

static const struct {
    const char *name;
    enum ot_log_level level;
} log_levels[] = {
    {"err", OT_LOG_ERR},       {"error", OT_LOG_ERR}, {"warning", OT_LOG_WARNING},
    {"notice", OT_LOG_NOTICE}, {"info", OT_LOG_INFO}, {"debug", OT_LOG_DEBUG},
};

static void print_help(FILE *f)
{
    fputs("Usage: otterd [--config FILE] [--data DIR] [--listen HOST:PORT]\n"
          "       otterd --routes | --help | --version\n"
          "\n"
          "The Otter update server: stores artifacts, knows every device, serves the APIs.\n"
          "\n"
          "Options (they override the configuration file):\n"
          "  -c, --config FILE       read the configuration file FILE\n"
          "  -d, --data DIR          data directory (data_dir)\n"
          "  -l, --listen HOST:PORT  listen address (listen)\n"
          "      --routes            print the API's routes as JSON and exit\n"
          "  -h, --help              show this help\n"
          "  -V, --version           show the version\n"
          "\n"
          "Configuration keys (key = value lines, # comments):\n",
          f);
    for (size_t i = 0; i < OT_ARRAY_SIZE(cfg_keys); i++)
        fprintf(f, "  %-19s %s%s%s%s\n", cfg_keys[i].key, cfg_keys[i].help,
                cfg_keys[i].def ? " [" : "", cfg_keys[i].def ? cfg_keys[i].def : "",
                cfg_keys[i].def ? "]" : "");
    fputs("\n"
          "On first start otterd prints an admin API token on standard output, once.\n"
          "SIGTERM or SIGINT stop it gracefully. Exit status: 0 ok, 1 failure, 2 usage or\n"
          "configuration error.\n",
          f);
}

static int usage_error(const char *fmt, ...) OT_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("otterd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see 'otterd --help')\n", stderr);
    va_end(ap);
    return SRV_EXIT_USAGE;
}

static int fail(int code, const char *what, const struct ot_diag *d, enum ot_err err)
{
    fprintf(stderr, "otterd: %s%s%s\n", what ? what : "", what ? ": " : "",
            d && d->msg[0] ? d->msg : ot_strerror(err));
    return code;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct options *o)
{
    enum { OPT_ROUTES = 256 };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"routes", no_argument, NULL, OPT_ROUTES},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":c:d:l:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'l':
            o->listen = optarg;
            break;
        case OPT_ROUTES:
            o->routes = true;
            break;
        case 'h':
            print_help(stdout);
            return SRV_EXIT_OK;
        case 'V':
            printf("otterd %s\n", OTTER_VERSION);
            return SRV_EXIT_OK;
        case ':':
            return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default: /* optopt names a short option, even inside a cluster ("-Vx") */
            if (optopt)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    return -1;
}

static int print_routes(void)
{
    json_t *routes = srv_routes_json();
    struct ot_buf b;
    ot_buf_init(&b, 16 * 1024 * 1024);
    enum ot_err err = routes ? ot_json_dump_pretty(routes, &b) : OT_ERR_NOMEM;
    json_decref(routes);
    if (!err && (fwrite(b.data, 1, b.len, stdout) != b.len || fflush(stdout) != 0))
        err = OT_ERR_IO;
    ot_buf_release(&b);
    return err ? fail(SRV_EXIT_FAILURE, "--routes", NULL, err) : SRV_EXIT_OK;
}

/* ---- configuration --------------------------------------------------------------------------- */

static bool parse_log_level(const char *name, enum ot_log_level *ret)
{
    for (size_t i = 0; i < OT_ARRAY_SIZE(log_levels); i++)
        if (strcmp(log_levels[i].name, name) == 0) {
            *ret = log_levels[i].level;
            return true;
        }
    return false;
}

static int apply_flag(struct srv_config *cfg, const char *key, const char *value, const char *flag)
{
    struct ot_diag d = {0};
    if (!value)
        return SRV_EXIT_OK;
    enum ot_err err = ot_cfg_set(cfg_keys, OT_ARRAY_SIZE(cfg_keys), NULL, key, value, cfg, &d);
    return err ? fail(err == OT_ERR_NOMEM ? SRV_EXIT_FAILURE : SRV_EXIT_USAGE, flag, &d, err)
               : SRV_EXIT_OK;
}

/* Tenants are path segments and parts of key names; the same one twice is a mistake. */
static int validate_ddi_tenants(const struct ot_strlist *tenants)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    for (size_t i = 0; i < tenants->n; i++) {
        const char *t = tenants->v[i];
        if (strlen(t) > SRV_DDI_TENANT_MAX || t[strspn(t, chars)])
            return usage_error("ddi_tenant '%.64s': a tenant is 1..%d characters of "
                               "[A-Za-z0-9_-]", t, SRV_DDI_TENANT_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(t, tenants->v[j]) == 0)
                return usage_error("ddi_tenant: '%s' is listed twice (tenants are compared "
                                   "case-insensitively)", t);
    }
    return SRV_EXIT_OK;
}

/* Everything is checked here, before the first mkdir. */
static int validate(struct srv_config *cfg, enum ot_log_level *ret_level)
{
    struct ot_diag d = {0};
    struct srv_listen l;
    if (srv_listen_parse(cfg->listen, &l, &d) != OT_OK)
        return fail(SRV_EXIT_USAGE, NULL, &d, d.err);
    if (!cfg->tls_cert != !cfg->tls_key)
        return usage_error("tls_cert and tls_key must be set together");
    if (!parse_log_level(cfg->log_level, ret_level))
        return usage_error("log_level '%s': use err, warning, notice, info or debug",
                           cfg->log_level);
    if (cfg->poll_jitter_ms > cfg->poll_interval_ms)
        return usage_error("poll_jitter must not be larger than poll_interval");
    int rc = validate_ddi_tenants(&cfg->ddi_tenant);
    if (rc)
        return rc;
    if (!cfg->database && asprintf(&cfg->database, "sqlite:%s/otter.db", cfg->data_dir) < 0) {
        cfg->database = NULL;
        return fail(SRV_EXIT_FAILURE, NULL, NULL, OT_ERR_NOMEM);
    }
    return SRV_EXIT_OK;
}

static int load_config(const struct options *o, struct cfg_table *t, struct srv_config *cfg,
                       enum ot_log_level *ret_level)
{
    struct ot_diag d = {0};
    cfg_table_build(o->config, t);
    enum ot_err err = o->config ? ot_cfg_load(o->config, t->keys, t->n, cfg, &d)
                                : ot_cfg_defaults(t->keys, t->n, NULL, cfg, &d);
    if (err)
        return fail(err == OT_ERR_NOMEM ? SRV_EXIT_FAILURE : SRV_EXIT_USAGE, NULL, &d, err);
    int rc = apply_flag(cfg, "data_dir", o->data_dir, "--data");
    if (!rc)
        rc = apply_flag(cfg, "listen", o->listen, "--listen");
    return rc ? rc : validate(cfg, ret_level);
}

/* ---- running --------------------------------------------------------------------------------- */

/* One write(2) per line, so lines from the HTTP threads never interleave. */
static void log_sink(enum ot_log_level level, const char *msg, void *userdata)
{
    char line[1100];
    int n = snprintf(line, sizeof(line), "<%d>%s\n", (int)level, msg);
    if (n < 0)
        return;
    size_t len = OT_MIN((size_t)n, sizeof(line) - 1);
    line[len - 1] = '\n';
    if (ot_write_all(STDERR_FILENO, line, len, NULL) != OT_OK)
        return; /* nowhere left to report it */
}

/* The clock. For tests, OTTERD_TEST_CLOCK_FILE names a file holding seconds to add to the real
 * time (read again at most every 50 ms), so that a test can let an hour pass at once. */
static const char *test_clock_file;
static _Atomic int64_t test_clock_offset, test_clock_read_ms;

static int64_t now_unix(void)
{
    int64_t now = (int64_t)time(NULL);
    if (!test_clock_file)
        return now;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (ms - atomic_load(&test_clock_read_ms) >= 50) {
        FILE *f = fopen(test_clock_file, "re");
        long long off = 0;
        if (f && fscanf(f, "%lld", &off) == 1)
            atomic_store(&test_clock_offset, (int64_t)off);
        if (f)
            fclose(f);
        atomic_store(&test_clock_read_ms, ms);
    }
    return now + atomic_load(&test_clock_offset);
}

static enum ot_err make_dir(const char *path, struct ot_diag *d)
{
    struct stat st;
    if (mkdir(path, 0700) == 0)
        return OT_OK;
    if (errno != EEXIST)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot create the directory %s", path);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ot_diag_set(d, OT_ERR_IO, "%s exists and is not a directory", path);
    return OT_OK;
}

static enum ot_err prepare_data_dir(const char *dir, struct ot_diag *d)
{
    _cleanup_free_ char *blobs = NULL;
    enum ot_err err = make_dir(dir, d);
    if (err)
        return err;
    if (asprintf(&blobs, "%s/blobs", dir) < 0) {
        blobs = NULL;
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return make_dir(blobs, d);
}

/* Blocked before any thread exists, so every thread inherits the mask and only sigwait() in the
 * main thread sees them. */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that went away is an error return, not a death */
}

static void wait_for_stop(const sigset_t *set)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig != SIGHUP) {
            ot_log(OT_LOG_NOTICE, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
        ot_log(OT_LOG_NOTICE, "SIGHUP ignored: restart otterd to apply configuration changes");
    }
}

/* The admin token exists once per store; its text is shown here and nowhere else, never logged. */
static enum ot_err bootstrap(struct srv_app *app, struct ot_diag *d)
{
    char token[SRV_TOKEN_TEXT_MAX];
    enum ot_err err = srv_auth_bootstrap_admin(app, token, d);
    if (err == OT_ERR_EXISTS)
        return OT_OK;
    if (err)
        return ot_diag_prefix(d, err, "cannot create the admin token");
    printf("otterd: first start: admin API token (shown only once, store it now):\n  %s\n", token);
    explicit_bzero(token, sizeof(token));
    /* A token nobody saw locks everyone out: that is a failure, not a detail. */
    if (fflush(stdout) != 0 || ferror(stdout))
        return ot_diag_errno(d, OT_ERR_IO, errno,
                             "cannot print the new admin token on standard output (it cannot be "
                             "shown again: start on a new data directory)");
    ot_log(OT_LOG_NOTICE, "first start: created the admin API token (printed on stdout)");
    return OT_OK;
}

static void print_listening(const struct srv_config *cfg, uint16_t port)
{
    struct srv_listen l;
    if (srv_listen_parse(cfg->listen, &l, NULL) != OT_OK)
        return; /* validated before */
    const char *scheme = cfg->tls_cert ? "https" : "http";
    if (l.ipv6)
        printf("otterd: listening on %s://[%s]:%u\n", scheme, l.host, (unsigned)port);
    else
        printf("otterd: listening on %s://%s:%u\n", scheme, l.host, (unsigned)port);
    fflush(stdout);
    ot_log(OT_LOG_INFO, "otterd %s: listening on %s port %u, data directory %s", OTTER_VERSION,
           l.host, (unsigned)port, cfg->data_dir);
}

static struct srv_http_config http_config(const struct srv_config *cfg)
{
    return (struct srv_http_config){
        .listen = cfg->listen,
        .threads = (unsigned)cfg->threads,
        .connection_limit = (unsigned)cfg->connection_limit,
        .connection_timeout_s = (unsigned)((cfg->connection_timeout_ms + 999) / 1000),
        .header_limit = (size_t)cfg->header_limit,
        .tls_cert = cfg->tls_cert,
        .tls_key = cfg->tls_key,
        .log_requests = true,
    };
}

/* Each tenant's switches: its own keys where set, else the plain ones (their defaults). */
static size_t ddi_tenants(const struct srv_config *cfg, struct srv_ddi_tenant *out)
{
    size_t n = OT_MIN(cfg->ddi_tenant.n, (size_t)SRV_DDI_TENANTS_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct ddi_tenant_keys *k = &cfg->ddi[i];
        out[i] = (struct srv_ddi_tenant){
            .name = cfg->ddi_tenant.v[i],
            .target_token = k->target_token,
            .gateway_token = k->gateway_token ? k->gateway_token : cfg->ddi_gateway_token,
            .trust_controller_header = k->trust_controller_header,
        };
    }
    return n;
}

/* The HTTP layer starts before the admin token is created: when the port is taken, no token is
 * made (and shown) for a server that never ran; the next start that listens shows it. */
static int serve(const struct srv_config *cfg, struct srv_store *store, const sigset_t *signals)
{
    struct ot_diag d = {0};
    struct srv_app app = {
        .store = store,
        .data_dir = cfg->data_dir,
        .now = now_unix,
        .poll_interval = (uint32_t)(cfg->poll_interval_ms / 1000),
        .poll_jitter = (uint32_t)(cfg->poll_jitter_ms / 1000),
        .device_token_ttl = (uint32_t)(cfg->device_token_ttl_ms / 1000),
        .pending_retry = (uint32_t)(cfg->poll_interval_ms / 1000),
        .max_artifact_size = cfg->max_artifact_size,
    };
    struct srv_ddi_tenant tenants[SRV_DDI_TENANTS_MAX];
    app.ddi_ntenants = ddi_tenants(cfg, tenants);
    app.ddi_tenants = tenants;
    struct srv_http_config hc = http_config(cfg);
    struct srv_http *http = NULL;
    enum ot_err err = srv_devtoken_init(&app, &d);
    if (!err)
        err = srv_fleet_new(store, (unsigned)cfg->last_seen_flush_ms,
                            srv_store_is_shared(store)
                                ? (unsigned)(cfg->device_cache_ttl_ms / 1000)
                                : 0, /* one process: every change goes through it */
                            &app.fleet, &d);
    if (!err)
        err = srv_rollouts_start(&app, (unsigned)cfg->rollout_tick_ms, cfg->rollout_engine,
                                 &app.rollouts, &d);
    if (!err)
        err = srv_groups_start(&app, &app.groups, &d);
    if (!err)
        err = srv_http_start(&hc, srv_routes, srv_nroutes, srv_auth_check, &app, &http, &d);
    if (err) {
        srv_groups_stop(app.groups);
        srv_rollouts_stop(app.rollouts);
        srv_fleet_free(app.fleet);
        sodium_memzero(app.device_token_key, sizeof(app.device_token_key));
        return fail(SRV_EXIT_FAILURE, NULL, &d, err);
    }
    err = bootstrap(&app, &d);
    if (err) {
        srv_http_stop(http);
        srv_groups_stop(app.groups);
        srv_rollouts_stop(app.rollouts);
        srv_fleet_free(app.fleet);
        sodium_memzero(app.device_token_key, sizeof(app.device_token_key));
        return fail(SRV_EXIT_FAILURE, NULL, &d, err);
    }
    print_listening(cfg, srv_http_port(http));
    wait_for_stop(signals);
    srv_http_stop(http);
    srv_groups_stop(app.groups);
    srv_rollouts_stop(app.rollouts);
    srv_fleet_free(app.fleet); /* writes the last last-seen batch */
    sodium_memzero(app.device_token_key, sizeof(app.device_token_key));
    ot_log(OT_LOG_INFO, "stopped");
    return SRV_EXIT_OK;
}

static int run(const struct srv_config *cfg)
{
    struct ot_diag d = {0};
    struct srv_store *store = NULL;
    sigset_t signals;
    block_signals(&signals);
    enum ot_err err = prepare_data_dir(cfg->data_dir, &d);
    if (err)
        return fail(SRV_EXIT_FAILURE, "data directory", &d, err);
    err = srv_store_open(cfg->database, &store, &d);
    if (err)
        return fail(SRV_EXIT_FAILURE, "cannot open the store", &d, err);
    int rc = serve(cfg, store, &signals);
    srv_store_close(store);
    return rc;
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    struct srv_config cfg = {0};
    struct cfg_table table = {0};
    enum ot_log_level level = OT_LOG_INFO;
    int rc = parse_args(argc, argv, &opt);
    if (rc >= 0)
        return rc;
    if (opt.routes)
        return print_routes();
    rc = load_config(&opt, &table, &cfg, &level);
    if (!rc) {
        ot_log_set_sink(log_sink, NULL);
        ot_log_set_level(level);
        test_clock_file = getenv("OTTERD_TEST_CLOCK_FILE");
        rc = run(&cfg);
    }
    ot_cfg_release(table.keys, table.n, &cfg);
    cfg_table_release(&table);
    return rc;
}
