/* otter-sim: many simulated devices in one process against a real otterd.
 *
 * Each device is the agent itself: its own configuration, identity key, state directory,
 * simulated bootloader file and A/B slot files, and its own ag_net and ag_engine (device.h), all
 * on one event loop. The simulator only adds behaviour through the engine's hooks (engine.h):
 * how long an install takes, which download attempts, installs, health checks and boots fail,
 * power cuts at a random moment of an update, and spells offline. Reboots are played out: the
 * device is torn down, the simulated bootloader powers it on (ag_boot_sim_power_on, the same
 * decision as the real boot scripts) and a fresh engine resumes from the saved state.
 *
 * Every random decision is drawn from (seed, device index, deployment, what), so a run with the
 * same seed makes the same decisions; the timing of the network is real and is not. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "device.h"
#include "http.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"

#ifndef OTTER_VERSION
#define OTTER_VERSION "unknown"
#endif

enum { EXIT_USAGE = 2 };

#define PROFILES_MAX 16
#define SETS_MAX 64
#define BOOT_FAIL_MAX_POWER_ONS 16
#define LAT_SUB 16                 /* latency histogram: buckets per power of two */
#define LAT_BUCKETS (40 * LAT_SUB)
#define NPHASES AG_PHASE__MAX

/* ---- behaviour profiles ------------------------------------------------------------------------ */

struct profile {
    char name[32];
    double weight;
    uint64_t install_min_ms, install_max_ms;
    double download_fail;          /* per download attempt */
    double install_fail;           /* the rest: per update */
    double health_fail;
    double boot_fail;
    double power_cut;
    double offline;
    uint64_t offline_ms;
    double postpone;               /* per consent question (soft updates) */
};

struct options {
    const char *server;
    const char *dir;
    const char *trust;
    const char *device_type;
    const char *enroll_token;
    const char *prefix;
    const char *poll;
    uint64_t ndevices, first;
    uint64_t ramp_ms, boot_ms, duration_ms, progress_ms;
    uint64_t until_done;
    uint64_t connections;          /* requests in flight at once, all devices together */
    uint64_t expect_ms;            /* a device silent this long at the end counts as stale */
    uint64_t seed;
    bool json, json_devices, quiet;
    int log_level;
    struct profile profiles[PROFILES_MAX];
    size_t nprofiles;
    const char *sets[SETS_MAX];    /* "key=value" agent configuration for every device */
    size_t nsets;
};

/* ---- devices ----------------------------------------------------------------------------------- */

struct sim;

struct result {
    int64_t deployment;
    char result;                   /* 's'uccess, 'f'ailure, 'r'olled back */
    bool accepted;                 /* the server took it (else it had a final state already) */
};

struct dev {
    struct sim *sim;
    uint32_t idx;
    const struct profile *prof;
    struct ag_engine_hooks hooks;
    struct ag_device ad;
    struct ag_net *net;
    struct ag_engine *eng;
    bool on;
    enum ag_phase phase;           /* while on */
    uint64_t timer;                /* power on / power off / power cut */
    uint64_t offline_timer;
    /* the current deployment's decisions */
    int64_t dep;
    bool install_fail, health_fail, boot_fail, power_cut, offline;
    enum ag_phase cut_phase;
    uint64_t cut_delay_ms, install_ms;
    bool install_held, cut_done, offline_done, health_done;
    uint32_t dl_attempts;
    uint32_t consent_asks;
    uint64_t last_ok_ms;           /* the last successful check-in (loop time) */
    char target_slot[2];
    struct result *results;
    uint32_t nresults;
};

struct sim {
    struct options o;
    struct ag_loop *loop;
    struct ag_http *http;         /* one HTTP client for every device: one connection cap */
    struct ot_trust trust;
    struct dev *devs;
    uint64_t started_ms;
    uint64_t progress_timer;
    int exit_code;
    /* counters */
    uint64_t phase_count[NPHASES];
    uint64_t on, off;
    uint64_t checkins_ok, checkins_failed, last_checkins;
    uint64_t lat[LAT_BUCKETS];
    uint64_t results_success, results_failure, results_rolled_back, results_refused;
    uint64_t first_result_ms, last_result_ms;
    uint64_t done_devices;         /* devices with until_done results */
    uint64_t reboots, power_cuts, offline_spells, boot_failures, start_errors, postponed;
    char last_error[300];
};

static void power_on(void *userdata);

/* splitmix64: a decision is a pure function of (seed, device, deployment, what). */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static uint64_t draw_u64(const struct dev *v, int64_t dep, uint64_t what)
{
    return mix(v->sim->o.seed ^ mix(v->idx ^ mix((uint64_t)dep ^ mix(what))));
}

static double draw(const struct dev *v, int64_t dep, uint64_t what)
{
    return (double)(draw_u64(v, dep, what) >> 11) / 9007199254740992.0; /* [0, 1) */
}

enum { D_INSTALL_FAIL = 1, D_HEALTH, D_BOOT, D_CUT, D_CUT_PHASE, D_CUT_DELAY, D_OFFLINE,
       D_INSTALL_MS, D_PROFILE, D_DOWNLOAD = 1000, D_POSTPONE = 1000000 };

static void dev_name(const struct dev *v, char *out, size_t len)
{
    snprintf(out, len, "%s-%06u", v->sim->o.prefix, v->idx);
}

static void note(struct sim *s, const struct dev *v, const char *fmt, ...) OT_PRINTF(3, 4);
static void note(struct sim *s, const struct dev *v, const char *fmt, ...)
{
    char name[64], msg[200];
    dev_name(v, name, sizeof(name));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(s->last_error, sizeof(s->last_error), "%s: %s", name, msg);
    ot_log(OT_LOG_WARNING, "%s", s->last_error);
}

/* The decisions for the deployment the device is working on, made once per deployment. */
static void decide(struct dev *v)
{
    int64_t dep = v->eng ? ag_engine_state(v->eng)->deployment_id : 0;
    if (!dep || dep == v->dep)
        return;
    const struct profile *p = v->prof;
    static const enum ag_phase cut_phases[] = {AG_DOWNLOAD, AG_VERIFY, AG_INSTALL,
                                               AG_REBOOT_PENDING, AG_VERIFY_AFTER_BOOT,
                                               AG_COMMIT, AG_REPORT};
    v->dep = dep;
    v->install_fail = draw(v, dep, D_INSTALL_FAIL) < p->install_fail;
    v->health_fail = draw(v, dep, D_HEALTH) < p->health_fail;
    v->boot_fail = draw(v, dep, D_BOOT) < p->boot_fail;
    v->power_cut = draw(v, dep, D_CUT) < p->power_cut;
    v->cut_phase = cut_phases[draw_u64(v, dep, D_CUT_PHASE) % OT_ARRAY_SIZE(cut_phases)];
    v->cut_delay_ms = draw_u64(v, dep, D_CUT_DELAY) % 500;
    v->offline = draw(v, dep, D_OFFLINE) < p->offline;
    uint64_t span = p->install_max_ms - p->install_min_ms;
    v->install_ms = p->install_min_ms + (span ? draw_u64(v, dep, D_INSTALL_MS) % (span + 1) : 0);
    v->install_held = v->cut_done = v->offline_done = v->health_done = false;
    v->dl_attempts = v->consent_asks = 0;
}

/* ---- power ------------------------------------------------------------------------------------- */

static void count_phase(struct sim *s, enum ag_phase from, enum ag_phase to)
{
    s->phase_count[from]--;
    s->phase_count[to]++;
}

/* The device's agent gone: engine, network client, configuration and keys. */
static void teardown(struct dev *v)
{
    ag_engine_free(v->eng);
    ag_net_free(v->net);
    ag_device_release(&v->ad);
    v->eng = NULL;
    v->net = NULL;
}

static void power_off(struct dev *v)
{
    struct sim *s = v->sim;
    if (v->timer)
        ag_loop_timer_cancel(s->loop, v->timer);
    if (v->offline_timer)
        ag_loop_timer_cancel(s->loop, v->offline_timer);
    v->timer = v->offline_timer = 0;
    if (!v->on)
        return;
    teardown(v);
    v->on = false;
    s->phase_count[v->phase]--;
    s->on--;
    s->off++;
}

static void power_cycle(struct dev *v, uint64_t after_ms)
{
    power_off(v);
    v->timer = ag_loop_timer(v->sim->loop, after_ms, power_on, v);
}

static void on_power_cut(void *userdata)
{
    struct dev *v = userdata;
    v->timer = 0;
    v->sim->power_cuts++;
    power_cycle(v, v->sim->o.boot_ms);
}

static void on_reboot(void *userdata)
{
    struct dev *v = userdata;
    v->timer = 0;
    v->sim->reboots++;
    power_cycle(v, v->sim->o.boot_ms);
}

static void on_offline_end(void *userdata)
{
    struct dev *v = userdata;
    v->offline_timer = 0;
    if (v->net)
        ag_net_set_offline(v->net, false);
}

/* ---- engine hooks ------------------------------------------------------------------------------ */

static long hook_before(void *userdata, enum ag_phase phase, struct ot_diag *d)
{
    struct dev *v = userdata;
    decide(v);
    if (phase == AG_DOWNLOAD) {
        if (draw(v, v->dep, D_DOWNLOAD + v->dl_attempts++) < v->prof->download_fail) {
            ot_diag_set(d, OT_ERR_IO, "connection reset (simulated)");
            return -1;
        }
        return 0;
    }
    if (phase != AG_INSTALL)
        return 0;
    if (!v->install_held && v->install_ms) {
        v->install_held = true;
        return (long)v->install_ms;
    }
    if (v->install_fail) {
        ot_diag_set(d, OT_ERR_IO, "write error on the target (simulated)");
        return -1;
    }
    return 0;
}

/* A soft update asks the device's user: each question is a fresh draw, so a device that
 * postponed may agree at a later check-in. */
static bool hook_consent(void *userdata, int64_t deployment_id, const char *artifact_name,
                         const char *artifact_version)
{
    (void)deployment_id, (void)artifact_name, (void)artifact_version;
    struct dev *v = userdata;
    decide(v);
    if (draw(v, v->dep, D_POSTPONE + v->consent_asks++) < v->prof->postpone) {
        v->sim->postponed++;
        return false;
    }
    return true;
}

static enum ot_err hook_health(void *userdata, struct ot_diag *d)
{
    struct dev *v = userdata;
    decide(v);
    if (v->health_fail && !v->health_done) {
        v->health_done = true;
        return ot_diag_set(d, OT_ERR_IO, "the health check failed (simulated)");
    }
    return OT_OK;
}

static void hook_reboot(void *userdata)
{
    struct dev *v = userdata;
    snprintf(v->target_slot, sizeof(v->target_slot), "%s",
             ag_engine_state(v->eng)->target_slot);
    if (v->timer)
        ag_loop_timer_cancel(v->sim->loop, v->timer);
    v->timer = ag_loop_timer(v->sim->loop, 0, on_reboot, v); /* not from inside the engine */
}

static void hook_phase(void *userdata, enum ag_phase from, enum ag_phase to)
{
    struct dev *v = userdata;
    struct sim *s = v->sim;
    count_phase(s, from, to);
    v->phase = to;
    if (to == AG_IDLE)
        return;
    decide(v);
    if (v->power_cut && !v->cut_done && to == v->cut_phase && !v->timer) {
        v->cut_done = true;
        v->timer = ag_loop_timer(s->loop, v->cut_delay_ms, on_power_cut, v);
    }
    if (v->offline && !v->offline_done && to == AG_DOWNLOAD) {
        v->offline_done = true;
        s->offline_spells++;
        ag_net_set_offline(v->net, true);
        v->offline_timer = ag_loop_timer(s->loop, v->prof->offline_ms, on_offline_end, v);
    }
}

static unsigned lat_bucket(uint64_t us)
{
    if (us < LAT_SUB)
        return (unsigned)us;
    unsigned octave = 63u - (unsigned)__builtin_clzll(us); /* us in [2^octave, 2^(octave+1)) */
    unsigned sub = (unsigned)((us >> (octave - 4)) & (LAT_SUB - 1));
    unsigned b = (octave - 3) * LAT_SUB + sub;
    return OT_MIN(b, (unsigned)LAT_BUCKETS - 1);
}

/* The largest value of a bucket. */
static uint64_t lat_value(unsigned b)
{
    if (b < LAT_SUB)
        return b;
    unsigned octave = b / LAT_SUB + 3, sub = b % LAT_SUB;
    return ((uint64_t)(LAT_SUB + sub + 1) << (octave - 4)) - 1;
}

static void hook_checked_in(void *userdata, const struct ag_net_result *r)
{
    struct dev *v = userdata;
    struct sim *s = v->sim;
    if (r->err) {
        s->checkins_failed++;
        note(s, v, "check-in failed: %s", r->diag.msg);
        return;
    }
    s->checkins_ok++;
    s->lat[lat_bucket(r->elapsed_us)]++;
    v->last_ok_ms = ag_loop_now_ms();
}

/* Counts what the server accepted; a report it refused (the deployment was cancelled while the
 * device started, say) is kept apart. */
static void hook_reported(void *userdata, int64_t deployment_id, const char *result,
                          bool accepted)
{
    struct dev *v = userdata;
    struct sim *s = v->sim;
    char c = result[0] == 's' ? 's' : result[0] == 'r' ? 'r' : 'f';
    *(!accepted ? &s->results_refused
      : c == 's' ? &s->results_success
      : c == 'r' ? &s->results_rolled_back
                 : &s->results_failure) += 1;
    s->last_result_ms = ag_loop_now_ms() - s->started_ms;
    if (!s->first_result_ms)
        s->first_result_ms = s->last_result_ms;
    struct result *n = reallocarray(v->results, v->nresults + 1, sizeof(*n));
    if (n) {
        v->results = n;
        v->results[v->nresults++] = (struct result){deployment_id, c, accepted};
    }
    if (s->o.until_done && v->nresults == s->o.until_done &&
        ++s->done_devices == s->o.ndevices)
        ag_loop_stop(s->loop, 0);
}

/* ---- one device's configuration ---------------------------------------------------------------- */

static enum ot_err set_key(struct ag_config *cfg, const char *key, const char *value,
                           struct ot_diag *d)
{
    enum ot_err err = ot_cfg_set(ag_config_keys, ag_config_nkeys, NULL, key, value, cfg, d);
    return err ? ot_diag_prefix(d, err, "%s", key) : OT_OK;
}

static enum ot_err dev_config(struct dev *v, struct ag_config *cfg, struct ot_diag *d)
{
    const struct options *o = &v->sim->o;
    char name[64], base[4096], path[4200], ident[96];
    dev_name(v, name, sizeof(name));
    snprintf(base, sizeof(base), "%s/%s", o->dir, name);
    snprintf(ident, sizeof(ident), "serial=%s", name);
    enum ot_err err = ag_config_load(NULL, cfg, d);
    struct {
        const char *key, *suffix, *value;
    } keys[] = {
        {"servers", NULL, o->server},      {"device_type", NULL, o->device_type},
        {"trust", NULL, o->trust},         {"identity", NULL, ident},
        {"state_dir", "", NULL},           {"boot", NULL, "sim"},
        {"boot_env", "/boot.env", NULL},   {"slot_a", "/slot-a", NULL},
        {"slot_b", "/slot-b", NULL},       {"root", "/root", NULL},
        {"modules_dir", "/modules", NULL}, {"inventory_dir", "/inventory.d", NULL},
        {"control_socket", NULL, "/nonexistent/otter-sim.sock"},
        {"allow_http", NULL, strncmp(o->server, "http://", 7) == 0 ? "true" : "false"},
        {"enrollment_token", NULL, o->enroll_token},
        {"poll_interval", NULL, o->poll},
    };
    for (size_t i = 0; !err && i < OT_ARRAY_SIZE(keys); i++) {
        const char *value = keys[i].value;
        if (keys[i].suffix) {
            snprintf(path, sizeof(path), "%s%s", base, keys[i].suffix);
            value = path;
        }
        if (value)
            err = set_key(cfg, keys[i].key, value, d);
    }
    for (size_t i = 0; !err && i < o->nsets; i++) {
        char key[64];
        const char *eq = strchr(o->sets[i], '=');
        snprintf(key, sizeof(key), "%.*s", (int)(eq - o->sets[i]), o->sets[i]);
        if (strcmp(key, "servers") == 0 || strcmp(key, "trust") == 0 ||
            strcmp(key, "state_dir") == 0 || strcmp(key, "boot") == 0)
            return ot_diag_set(d, OT_ERR_CONFIG, "--set %s: otter-sim sets it", key);
        err = set_key(cfg, key, eq + 1, d); /* replaces the value set above */
    }
    if (!err)
        err = ag_config_check(cfg, d);
    if (!err && mkdir(base, 0700) < 0 && errno != EEXIST)
        err = ot_diag_errno(d, OT_ERR_IO, errno, "cannot create %s", base);
    return err;
}

/* The bootloader's part, then a fresh agent resuming from the saved state. */
static void power_on(void *userdata)
{
    struct dev *v = userdata;
    struct sim *s = v->sim;
    struct ot_diag d = {0};
    v->timer = 0;
    if (v->on)
        return;
    enum ot_err err = dev_config(v, &v->ad.cfg, &d);
    char slot[2] = "";
    for (int i = 0; !err && i < BOOT_FAIL_MAX_POWER_ONS; i++) {
        err = ag_boot_sim_power_on(v->ad.cfg.boot_env, slot, &d);
        /* a new slot that does not boot: the watchdog resets the board until the bootloader
         * gives up on it */
        if (err || !v->boot_fail || !v->target_slot[0] || strcmp(slot, v->target_slot) != 0)
            break;
        s->boot_failures++;
    }
    v->target_slot[0] = '\0';
    if (!err)
        err = ag_device_open(&v->ad, true, &s->trust, &d);
    if (!err)
        err = ag_device_identity(&v->ad, &d);
    if (!err) {
        struct ag_net_config nc = ag_device_net_config(&v->ad);
        nc.http = s->http;
        err = ag_net_new(s->loop, &nc, &v->net, &d);
    }
    if (!err) {
        struct ag_engine_env env = ag_device_engine_env(&v->ad, s->loop, v->net);
        env.hooks = &v->hooks;
        err = ag_engine_new(&env, &v->eng, &d);
    }
    if (err) {
        s->start_errors++;
        note(s, v, "cannot start: %s", d.msg);
        return teardown(v);
    }
    v->on = true;
    v->phase = ag_engine_state(v->eng)->phase;
    s->phase_count[v->phase]++;
    s->on++;
    s->off--;
    ag_engine_start(v->eng);
}

/* ---- progress and summary ---------------------------------------------------------------------- */

static uint64_t percentile_us(const struct sim *s, double q)
{
    uint64_t total = 0, seen = 0;
    for (unsigned b = 0; b < LAT_BUCKETS; b++)
        total += s->lat[b];
    if (!total)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)total);
    for (unsigned b = 0; b < LAT_BUCKETS; b++)
        if ((seen += s->lat[b]) >= want)
            return lat_value(b);
    return lat_value(LAT_BUCKETS - 1);
}

static uint64_t rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %llu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void on_progress(void *userdata)
{
    struct sim *s = userdata;
    uint64_t now = ag_loop_now_ms() - s->started_ms;
    uint64_t n = s->checkins_ok + s->checkins_failed;
    uint64_t rate = (n - s->last_checkins) * 1000 / OT_MAX(s->o.progress_ms, 1);
    s->last_checkins = n;
    fprintf(stderr,
            "[%5llus] on %llu off %llu | idle %llu download %llu waiting %llu install %llu "
            "reboot %llu verify %llu report %llu | check-ins %llu/s failed %llu | success %llu "
            "failure %llu rolled_back %llu\n",
            (unsigned long long)(now / 1000), (unsigned long long)s->on,
            (unsigned long long)s->off, (unsigned long long)s->phase_count[AG_IDLE],
            (unsigned long long)(s->phase_count[AG_DOWNLOAD] + s->phase_count[AG_VERIFY]),
            (unsigned long long)s->phase_count[AG_WAITING],
            (unsigned long long)s->phase_count[AG_INSTALL],
            (unsigned long long)s->phase_count[AG_REBOOT_PENDING],
            (unsigned long long)(s->phase_count[AG_VERIFY_AFTER_BOOT] +
                                 s->phase_count[AG_COMMIT] + s->phase_count[AG_ROLLBACK]),
            (unsigned long long)s->phase_count[AG_REPORT], (unsigned long long)rate,
            (unsigned long long)s->checkins_failed, (unsigned long long)s->results_success,
            (unsigned long long)s->results_failure, (unsigned long long)s->results_rolled_back);
    s->progress_timer = ag_loop_timer(s->loop, s->o.progress_ms, on_progress, s);
}

/* Devices without a successful check-in in the last expect_ms. */
static uint64_t stale_devices(const struct sim *s)
{
    uint64_t now = ag_loop_now_ms(), n = 0;
    for (uint64_t i = 0; s->o.expect_ms && i < s->o.ndevices; i++)
        n += now - s->devs[i].last_ok_ms > s->o.expect_ms;
    return n;
}

static json_t *device_json(const struct dev *v)
{
    char name[64];
    dev_name(v, name, sizeof(name));
    json_t *results = json_array();
    for (uint32_t i = 0; results && i < v->nresults; i++)
        json_array_append_new(
            results,
            json_pack("{s:I, s:s, s:b}", "deployment", (json_int_t)v->results[i].deployment,
                      "result", v->results[i].result == 's'   ? "success"
                                : v->results[i].result == 'r' ? "rolled_back"
                                                              : "failure",
                      "accepted", v->results[i].accepted));
    return json_pack("{s:s, s:s, s:s, s:o*}", "name", name, "profile", v->prof->name, "phase",
                     v->on ? ag_phase_name(v->phase) : "off", "results", results);
}

static int summary(struct sim *s)
{
    double elapsed = (double)(ag_loop_now_ms() - s->started_ms) / 1000.0;
    uint64_t n = s->checkins_ok + s->checkins_failed;
    json_t *phases = json_object();
    for (int p = 0; phases && p < NPHASES; p++)
        json_object_set_new(phases, ag_phase_name((enum ag_phase)p),
                            json_integer((json_int_t)s->phase_count[p]));
    json_t *j = json_pack(
        "{s:I, s:f, s:I, s:I, s:o*, s:{s:I, s:I, s:f, s:f, s:f, s:f}, s:{s:I, s:I, s:I, s:I}, "
        "s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
        "devices", (json_int_t)s->o.ndevices, "elapsed_s", elapsed, "on", (json_int_t)s->on,
        "off", (json_int_t)s->off, "phases", phases, "checkins", "ok",
        (json_int_t)s->checkins_ok, "failed", (json_int_t)s->checkins_failed, "per_s",
        elapsed > 0 ? (double)n / elapsed : 0.0, "p50_ms",
        (double)percentile_us(s, 0.50) / 1000.0, "p99_ms",
        (double)percentile_us(s, 0.99) / 1000.0, "max_ms",
        (double)percentile_us(s, 1.0) / 1000.0, "results", "success",
        (json_int_t)s->results_success, "failure", (json_int_t)s->results_failure, "rolled_back",
        (json_int_t)s->results_rolled_back, "refused", (json_int_t)s->results_refused,
        "first_result_s",
        (double)s->first_result_ms / 1000.0, "last_result_s", (double)s->last_result_ms / 1000.0,
        "reboots", (json_int_t)s->reboots, "power_cuts", (json_int_t)s->power_cuts,
        "offline_spells", (json_int_t)s->offline_spells, "boot_failures",
        (json_int_t)s->boot_failures, "start_errors", (json_int_t)s->start_errors, "postponed",
        (json_int_t)s->postponed,
        "stale_devices", (json_int_t)stale_devices(s), "rss_kib",
        (json_int_t)rss_kib(), "last_error", s->last_error);
    if (j && s->o.json_devices) {
        json_t *list = json_array();
        for (uint64_t i = 0; list && i < s->o.ndevices; i++)
            json_array_append_new(list, device_json(&s->devs[i]));
        json_object_set_new(j, "device_list", list);
    }
    if (!j) {
        fprintf(stderr, "otter-sim: out of memory\n");
        return 1;
    }
    if (s->o.json) {
        char *text = json_dumps(j, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
    } else {
        printf("otter-sim: %llu devices, %.1f s: %llu check-ins (%.0f/s, %llu failed, p50 %.2f "
               "ms, p99 %.2f ms); results: %llu success, %llu failure, %llu rolled back "
               "(last at %.1f s); %llu reboots, %llu power cuts, %llu offline spells; "
               "RSS %llu MiB\n",
               (unsigned long long)s->o.ndevices, elapsed, (unsigned long long)n,
               elapsed > 0 ? (double)n / elapsed : 0.0, (unsigned long long)s->checkins_failed,
               (double)percentile_us(s, 0.50) / 1000.0, (double)percentile_us(s, 0.99) / 1000.0,
               (unsigned long long)s->results_success, (unsigned long long)s->results_failure,
               (unsigned long long)s->results_rolled_back, (double)s->last_result_ms / 1000.0,
               (unsigned long long)s->reboots, (unsigned long long)s->power_cuts,
               (unsigned long long)s->offline_spells, (unsigned long long)(rss_kib() / 1024));
    }
    json_decref(j);
    return s->exit_code;
}

/* ---- command line ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("Usage: otter-sim --server URL --trust FILE [options]\n"
          "\n"
          "Simulates many devices in one process, each running the agent's own engine against a\n"
          "real otterd (simulated bootloader and A/B slots in files under --dir).\n"
          "\n"
          "Options:\n"
          "  -s, --server URL        otterd's base URL (http:// is allowed)\n"
          "  -T, --trust FILE        the release trust file (otter trust)\n"
          "  -n, --devices N         how many devices [100]\n"
          "      --first N           index of the first device [0]\n"
          "      --prefix NAME       devices are NAME-000000, ... (identity serial=...) [sim]\n"
          "  -d, --dir DIR           where the devices keep their state [./otter-sim]\n"
          "  -t, --device-type TYPE  [sim-device]\n"
          "  -e, --enroll-token TOK  an API token with scope devices:enroll (accepted at once)\n"
          "      --poll DURATION     poll interval until the server says otherwise [agent's]\n"
          "      --ramp DURATION     power the devices on over this long [0]\n"
          "      --boot-time DURATION  how long a reboot takes [1s]\n"
          "      --profile SPEC      NAME:WEIGHT[:key=value,...] (repeatable, see below)\n"
          "      --seed N            makes the random decisions reproducible [1]\n"
          "      --duration DURATION stop after this long [until Ctrl-C]\n"
          "      --until-done N      stop once every device has reported N final results\n"
          "      --set KEY=VALUE     an otter-agent configuration key for every device\n"
          "      --connections N     requests (and connections) in flight at once, for all devices\n"
          "                          together [64]\n"
          "      --expect-interval DURATION  the summary counts devices without a check-in\n"
          "                          in this long before the end (stale_devices)\n"
          "      --progress DURATION live progress every so often on stderr [1s]\n"
          "  -q, --quiet             no live progress\n"
          "      --json              the final summary as JSON on stdout\n"
          "      --json-devices      ... with every device's phase and results\n"
          "  -v, --verbose           the agents' warnings on stderr (-vv: notices)\n"
          "  -h, --help, -V, --version\n"
          "\n"
          "Profile keys (probabilities per update unless said): install_time=DURATION[-DURATION],\n"
          "download_fail=P (per attempt), install_fail=P, health_fail=P (rolled back),\n"
          "boot_fail=P (the new slot does not boot), power_cut=P, offline=P, offline_time=DURATION,\n"
          "postpone=P (per consent question of a soft update).\n"
          "Without --profile every device is 'ok:1' (everything succeeds).\n",
          f);
}

static bool parse_prob(const char *v, double *ret)
{
    char *end;
    errno = 0;
    double p = strtod(v, &end);
    if (errno || end == v || *end || !(p >= 0.0 && p <= 1.0))
        return false;
    *ret = p;
    return true;
}

static bool parse_profile_key(struct profile *p, const char *key, const char *v)
{
    struct {
        const char *key;
        double *field;
    } probs[] = {{"download_fail", &p->download_fail}, {"install_fail", &p->install_fail},
                 {"health_fail", &p->health_fail},     {"boot_fail", &p->boot_fail},
                 {"power_cut", &p->power_cut},         {"offline", &p->offline},
                 {"postpone", &p->postpone}};
    for (size_t i = 0; i < OT_ARRAY_SIZE(probs); i++)
        if (strcmp(key, probs[i].key) == 0)
            return parse_prob(v, probs[i].field);
    if (strcmp(key, "offline_time") == 0)
        return ot_parse_duration_ms(v, 7 * 86400000ull, &p->offline_ms) == OT_OK;
    if (strcmp(key, "install_time") == 0) {
        char lo[64];
        const char *dash = strchr(v, '-');
        snprintf(lo, sizeof(lo), "%.*s", dash ? (int)(dash - v) : (int)strlen(v), v);
        if (ot_parse_duration_ms(lo, 86400000ull, &p->install_min_ms) != OT_OK)
            return false;
        p->install_max_ms = p->install_min_ms;
        return !dash ||
               (ot_parse_duration_ms(dash + 1, 86400000ull, &p->install_max_ms) == OT_OK &&
                p->install_max_ms >= p->install_min_ms);
    }
    return false;
}

static bool parse_weight(const char *v, double *ret)
{
    char *end;
    errno = 0;
    double w = strtod(v, &end);
    if (errno || end == v || *end || !(w > 0.0 && w < 1e9))
        return false;
    *ret = w;
    return true;
}

/* NAME:WEIGHT[:key=value,...] */
static bool parse_profile(const char *spec, struct profile *p)
{
    *p = (struct profile){.offline_ms = 30000};
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL, *name = strtok_r(buf, ":", &save), *weight = strtok_r(NULL, ":", &save);
    char *keys = strtok_r(NULL, "", &save);
    if (!name || !weight || strlen(name) >= sizeof(p->name) || !parse_weight(weight, &p->weight))
        return false;
    snprintf(p->name, sizeof(p->name), "%s", name);
    for (char *kv = keys ? strtok_r(keys, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return false;
        *eq = '\0';
        if (!parse_profile_key(p, kv, eq + 1))
            return false;
    }
    return true;
}

static bool parse_u64_opt(const char *v, uint64_t max, uint64_t *ret)
{
    return ot_parse_u64(v, 0, max, ret) == OT_OK;
}

static bool parse_ms_opt(const char *v, uint64_t *ret)
{
    return ot_parse_duration_ms(v, 365 * 86400000ull, ret) == OT_OK;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct options *o)
{
    enum { O_FIRST = 256, O_PREFIX, O_POLL, O_RAMP, O_BOOT, O_PROFILE, O_SEED, O_DURATION,
           O_UNTIL, O_SET, O_PROGRESS, O_JSON, O_JSON_DEVICES, O_CONNECTIONS, O_EXPECT };
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"trust", required_argument, NULL, 'T'},
        {"devices", required_argument, NULL, 'n'},
        {"first", required_argument, NULL, O_FIRST},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"dir", required_argument, NULL, 'd'},
        {"device-type", required_argument, NULL, 't'},
        {"enroll-token", required_argument, NULL, 'e'},
        {"poll", required_argument, NULL, O_POLL},
        {"ramp", required_argument, NULL, O_RAMP},
        {"boot-time", required_argument, NULL, O_BOOT},
        {"profile", required_argument, NULL, O_PROFILE},
        {"seed", required_argument, NULL, O_SEED},
        {"duration", required_argument, NULL, O_DURATION},
        {"until-done", required_argument, NULL, O_UNTIL},
        {"set", required_argument, NULL, O_SET},
        {"connections", required_argument, NULL, O_CONNECTIONS},
        {"expect-interval", required_argument, NULL, O_EXPECT},
        {"progress", required_argument, NULL, O_PROGRESS},
        {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, O_JSON},
        {"json-devices", no_argument, NULL, O_JSON_DEVICES},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.dir = "./otter-sim", .device_type = "sim-device", .prefix = "sim",
                          .ndevices = 100, .connections = 64, .boot_ms = 1000, .progress_ms = 1000, .seed = 1,
                          .log_level = OT_LOG_ERR};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:T:n:d:t:e:qvhV", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 's': o->server = optarg; break;
        case 'T': o->trust = optarg; break;
        case 'n': ok = parse_u64_opt(optarg, 10000000, &o->ndevices) && o->ndevices > 0; break;
        case O_FIRST: ok = parse_u64_opt(optarg, 100000000, &o->first); break;
        case O_PREFIX: o->prefix = optarg; ok = optarg[0] && strlen(optarg) < 32 && !strchr(optarg, '/'); break;
        case 'd': o->dir = optarg; break;
        case 't': o->device_type = optarg; break;
        case 'e': o->enroll_token = optarg; break;
        case O_POLL: o->poll = optarg; break;
        case O_RAMP: ok = parse_ms_opt(optarg, &o->ramp_ms); break;
        case O_BOOT: ok = parse_ms_opt(optarg, &o->boot_ms); break;
        case O_PROFILE:
            ok = o->nprofiles < PROFILES_MAX && parse_profile(optarg, &o->profiles[o->nprofiles]);
            o->nprofiles += ok;
            break;
        case O_SEED: ok = parse_u64_opt(optarg, UINT64_MAX, &o->seed); break;
        case O_DURATION: ok = parse_ms_opt(optarg, &o->duration_ms); break;
        case O_UNTIL: ok = parse_u64_opt(optarg, 1000000, &o->until_done); break;
        case O_CONNECTIONS: ok = parse_u64_opt(optarg, 100000, &o->connections) && o->connections; break;
        case O_EXPECT: ok = parse_ms_opt(optarg, &o->expect_ms); break;
        case O_SET:
            ok = o->nsets < SETS_MAX && strchr(optarg, '=') && optarg[0] != '=';
            if (ok)
                o->sets[o->nsets++] = optarg;
            break;
        case O_PROGRESS: ok = parse_ms_opt(optarg, &o->progress_ms) && o->progress_ms > 0; break;
        case 'q': o->quiet = true; break;
        case O_JSON: o->json = true; break;
        case O_JSON_DEVICES: o->json = o->json_devices = true; break;
        case 'v': o->log_level = o->log_level == OT_LOG_ERR ? OT_LOG_WARNING : OT_LOG_NOTICE; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("otter-sim %s\n", OTTER_VERSION); return 0;
        default:
            fprintf(stderr, "otter-sim: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
        if (!ok) {
            fprintf(stderr, "otter-sim: bad value for %s: '%s' (see --help)\n", argv[optind - 2 >= 0 ? optind - 2 : 0], optarg);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "otter-sim: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->server || !o->trust) {
        fprintf(stderr, "otter-sim: --server and --trust are needed (see --help)\n");
        return EXIT_USAGE;
    }
    if (o->nprofiles == 0)
        o->profiles[o->nprofiles++] = (struct profile){.name = "ok", .weight = 1};
    return -1;
}

/* ---- main -------------------------------------------------------------------------------------- */

static void on_signal(void *userdata, int signo)
{
    struct sim *s = userdata;
    fprintf(stderr, "otter-sim: %s: stopping\n", strsignal(signo));
    ag_loop_stop(s->loop, 0);
}

static void on_duration(void *userdata)
{
    struct sim *s = userdata;
    if (s->o.until_done) {
        fprintf(stderr, "otter-sim: --duration passed before every device had %llu results\n",
                (unsigned long long)s->o.until_done);
        s->exit_code = 1;
    }
    ag_loop_stop(s->loop, 0);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static const struct profile *pick_profile(const struct sim *s, const struct dev *v)
{
    double total = 0;
    for (size_t i = 0; i < s->o.nprofiles; i++)
        total += s->o.profiles[i].weight;
    double x = draw(v, 0, D_PROFILE) * total;
    for (size_t i = 0; i < s->o.nprofiles; i++) {
        if (x < s->o.profiles[i].weight)
            return &s->o.profiles[i];
        x -= s->o.profiles[i].weight;
    }
    return &s->o.profiles[s->o.nprofiles - 1];
}

static int setup(struct sim *s)
{
    struct ot_diag d = {0};
    if (mkdir(s->o.dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "otter-sim: cannot create %s: %s\n", s->o.dir, strerror(errno));
        return 1;
    }
    if (ot_trust_load(s->o.trust, &s->trust, &d) != OT_OK) {
        fprintf(stderr, "otter-sim: trust file: %s\n", d.msg);
        return EXIT_USAGE;
    }
    s->devs = calloc(s->o.ndevices, sizeof(*s->devs));
    if (!s->devs || ag_loop_new(&s->loop, &d) != OT_OK || ag_http_new(s->loop, &s->http, &d) != OT_OK) {
        fprintf(stderr, "otter-sim: %s\n", d.msg[0] ? d.msg : "out of memory");
        return 1;
    }
    for (uint64_t i = 0; i < s->o.ndevices; i++) {
        struct dev *v = &s->devs[i];
        v->sim = s;
        v->idx = (uint32_t)(s->o.first + i);
        v->prof = pick_profile(s, v);
        v->hooks = (struct ag_engine_hooks){.userdata = v,
                                            .before = hook_before,
                                            .consent = hook_consent,
                                            .health = hook_health,
                                            .reboot = hook_reboot,
                                            .phase = hook_phase,
                                            .checked_in = hook_checked_in,
                                            .reported = hook_reported};
    }
    /* The configuration every device gets, checked once before anything starts. */
    struct ag_config cfg = {0};
    enum ot_err err = dev_config(&s->devs[0], &cfg, &d);
    ag_config_release(&cfg);
    if (err) {
        fprintf(stderr, "otter-sim: %s\n", d.msg);
        return EXIT_USAGE;
    }
    ag_http_limit(s->http, (size_t)s->o.connections);
    if (ag_loop_signal(s->loop, SIGINT, on_signal, s, &d) != OT_OK ||
        ag_loop_signal(s->loop, SIGTERM, on_signal, s, &d) != OT_OK) {
        fprintf(stderr, "otter-sim: %s\n", d.msg);
        return 1;
    }
    s->off = s->o.ndevices;
    for (uint64_t i = 0; i < s->o.ndevices; i++) {
        uint64_t at = s->o.ramp_ms * i / s->o.ndevices;
        s->devs[i].timer = ag_loop_timer(s->loop, at, power_on, &s->devs[i]);
        if (!s->devs[i].timer) {
            fprintf(stderr, "otter-sim: out of memory\n");
            return 1;
        }
    }
    if (s->o.duration_ms && !ag_loop_timer(s->loop, s->o.duration_ms, on_duration, s))
        return 1;
    if (!s->o.quiet)
        s->progress_timer = ag_loop_timer(s->loop, s->o.progress_ms, on_progress, s);
    return -1;
}

static void log_sink(enum ot_log_level level, const char *msg, void *userdata)
{
    (void)userdata;
    fprintf(stderr, "<%d>%s\n", (int)level, msg);
}

int main(int argc, char **argv)
{
    static struct sim sim; /* large; and the hooks point into it */
    struct sim *s = &sim;
    int rc = parse_args(argc, argv, &s->o);
    if (rc >= 0)
        return rc;
    srandom((unsigned)mix(s->o.seed)); /* the agents' poll jitter */
    signal(SIGPIPE, SIG_IGN);
    ot_log_set_sink(log_sink, NULL);
    ot_log_set_level((enum ot_log_level)s->o.log_level);
    raise_fd_limit();
    rc = setup(s);
    if (rc < 0) {
        s->started_ms = ag_loop_now_ms();
        ag_loop_run(s->loop);
        rc = summary(s);
    }
    for (uint64_t i = 0; s->devs && i < s->o.ndevices; i++) {
        power_off(&s->devs[i]);
        free(s->devs[i].results);
    }
    free(s->devs);
    ag_http_free(s->http);
    ag_loop_free(s->loop);
    return rc;
}
