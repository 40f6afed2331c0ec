/* Staged rollouts (rollout.h): the policy, the release order, the engine thread and the released
 * counts that check-ins consult. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "fleet.h"
#include "otter/encoding.h"
#include "otter/json.h"
#include "otter/log.h"
#include "otter/parse.h"
#include "rollout.h"
#include "ticker.h"

#define DURATION_MAX_S (366 * 86400ll)
#define DECISION_MAX SRV_ROLLOUT_REASON_MAX

/* ---- the policy --------------------------------------------------------------------------------- */

static enum ot_err bad(struct ot_diag *d, const char *key, const char *what)
{
    return ot_diag_set(d, OT_ERR_FORMAT, "policy: '%s' %s", key, what);
}

/* A duration: a number of seconds, or a string with a unit ("90s", "10m", "2h", "1d"). */
static enum ot_err get_duration(const json_t *o, const char *key, int64_t *ret, struct ot_diag *d)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return OT_OK;
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= DURATION_MAX_S) {
        *ret = json_integer_value(v);
        return OT_OK;
    }
    uint64_t ms;
    if (json_is_string(v) &&
        ot_parse_duration_ms(json_string_value(v), (uint64_t)DURATION_MAX_S * 1000, &ms) == OT_OK) {
        *ret = (int64_t)(ms / 1000);
        return OT_OK;
    }
    return bad(d, key, "must be seconds or a duration like \"10m\"");
}

/* A time: Unix seconds, or RFC 3339 in UTC ("2026-11-23T02:00:00Z"). */
static enum ot_err get_time(const json_t *o, const char *key, int64_t *ret, struct ot_diag *d)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) /* null: none (as the stored policy spells it) */
        return OT_OK;
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *ret = json_integer_value(v);
        return OT_OK;
    }
    struct tm tm = {0};
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (end && (strcmp(end, "Z") == 0 || strcmp(end, "+00:00") == 0)) {
        *ret = (int64_t)timegm(&tm);
        return OT_OK;
    }
    return bad(d, key, "must be Unix seconds or a UTC time like \"2026-11-23T02:00:00Z\"");
}

static enum ot_err get_u64(const json_t *o, const char *key, uint64_t max, uint64_t *ret,
                           struct ot_diag *d)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return OT_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        char what[64];
        snprintf(what, sizeof(what), "must be an integer from 0 to %llu", (unsigned long long)max);
        return bad(d, key, what);
    }
    *ret = (uint64_t)json_integer_value(v);
    return OT_OK;
}

static enum ot_err get_u32(const json_t *o, const char *key, uint32_t max, uint32_t *ret,
                           struct ot_diag *d)
{
    uint64_t v = *ret;
    enum ot_err err = get_u64(o, key, max, &v, d);
    if (!err)
        *ret = (uint32_t)v;
    return err;
}

static enum ot_err get_choice(const json_t *o, const char *key, const char *a, const char *b,
                              bool *ret_b, struct ot_diag *d)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return OT_OK;
    const char *s = json_string_value(v);
    if (s && (strcmp(s, a) == 0 || strcmp(s, b) == 0)) {
        *ret_b = strcmp(s, b) == 0;
        return OT_OK;
    }
    char what[96];
    snprintf(what, sizeof(what), "must be \"%s\" or \"%s\"", a, b);
    return bad(d, key, what);
}

static enum ot_err parse_phase(const json_t *j, size_t k, struct srv_phase *p, struct ot_diag *d)
{
    static const char *const keys[] = {"name", "size", "approvals", "soak", NULL};
    char what[48];
    snprintf(what, sizeof(what), "policy: phase %zu", k + 1);
    if (!json_is_object(j))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s must be an object", what);
    enum ot_err err = ot_json_only_keys(j, keys, what, d);
    if (err)
        return err;
    const json_t *name = json_object_get(j, "name");
    if (name && (!json_is_string(name) || !json_string_length(name) ||
                 json_string_length(name) >= SRV_PHASE_NAME_MAX ||
                 !ot_utf8_printable(json_string_value(name), json_string_length(name), NULL)))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: 'name' must be 1..%d printable bytes", what,
                           SRV_PHASE_NAME_MAX - 1);
    if (name)
        snprintf(p->name, sizeof(p->name), "%s", json_string_value(name));
    else
        snprintf(p->name, sizeof(p->name), "%s", k == 0 ? "canary" : "wave");
    if (!name && k > 0)
        snprintf(p->name, sizeof(p->name), "wave-%zu", k);
    const json_t *size = json_object_get(j, "size");
    const char *ss = json_string_value(size);
    uint64_t v = 0;
    if (json_is_integer(size) && json_integer_value(size) > 0) {
        p->size = (uint64_t)json_integer_value(size);
    } else if (ss && strlen(ss) >= 2 && ss[strlen(ss) - 1] == '%') {
        char num[16];
        snprintf(num, sizeof(num), "%.*s", (int)(strlen(ss) - 1), ss);
        if (ot_parse_u64(num, 1, 100, &v) != OT_OK)
            return ot_diag_set(d, OT_ERR_FORMAT, "%s: 'size' percentage must be 1%%..100%%",
                               what);
        p->size = v;
        p->percent = true;
    } else {
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "%s: 'size' must be a number of devices or a percentage (\"10%%\")",
                           what);
    }
    if ((err = get_u32(j, "approvals", 16, &p->approvals, d)) != OT_OK)
        return ot_diag_prefix(d, err, "%s", what);
    p->soak_s = -1;
    return get_duration(j, "soak", &p->soak_s, d);
}

/* {"cron": "0 2 * * *", "duration": "3h", "timezone": "Europe/Berlin"} (timezone: UTC when
 * absent), checked by parsing it as the engine will. */
static enum ot_err parse_window(const json_t *w, struct srv_policy *p, struct ot_diag *d)
{
    static const char *const keys[] = {"cron", "duration", "timezone", NULL};
    const char *what = "policy: maintenance_window";
    if (!json_is_object(w))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s must be an object", what);
    enum ot_err err = ot_json_only_keys(w, keys, what, d);
    if (err)
        return err;
    const char *cron = json_string_value(json_object_get(w, "cron"));
    const json_t *tzv = json_object_get(w, "timezone");
    const char *tz = tzv ? json_string_value(tzv) : "UTC";
    if (!cron || strlen(cron) >= sizeof(p->window_cron))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: 'cron' must be a cron expression of at most "
                           "%d bytes (\"0 2 * * *\")", what, SRV_WINDOW_CRON_MAX - 1);
    if (!tz || strlen(tz) >= sizeof(p->window_tz))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: 'timezone' must be a time zone name of at "
                           "most %d bytes", what, SRV_WINDOW_TZ_NAME_MAX - 1);
    int64_t len = 0;
    if ((err = get_duration(w, "duration", &len, d)))
        return ot_diag_prefix(d, err, "%s", what);
    if (!json_object_get(w, "duration"))
        return ot_diag_set(d, OT_ERR_FORMAT, "%s: 'duration' is needed (\"2h\")", what);
    struct srv_window *win = NULL;
    if ((err = srv_window_parse(cron, len, tz, &win, d)))
        return ot_diag_prefix(d, err, "%s", what);
    srv_window_free(win);
    snprintf(p->window_cron, sizeof(p->window_cron), "%s", cron);
    snprintf(p->window_tz, sizeof(p->window_tz), "%s", tz);
    p->window_s = len;
    p->has_window = true;
    return OT_OK;
}

enum ot_err srv_policy_parse(const json_t *j, uint64_t seed_default, struct srv_policy *p,
                             struct ot_diag *d)
{
    static const char *const keys[] = {
        "phases", "order", "seed", "order_tags", "success_threshold", "min_finished", "soak",
        "failure_threshold", "min_executed", "on_failure", "max_per_minute", "ramp_factor",
        "max_in_progress", "start_at", "end_at", "on_end", "approvals", "device_timeout", "type",
        "retries", "maintenance_window", NULL};
    *p = (struct srv_policy){.seed = seed_default, .success_threshold = 100, .min_executed = 1,
                             .ramp_factor = 1.0};
    if (!json_is_object(j))
        return ot_diag_set(d, OT_ERR_FORMAT, "policy: must be an object");
    enum ot_err err = ot_json_only_keys(j, keys, "policy", d);
    const json_t *phases = json_object_get(j, "phases");
    if (!err && phases && (!json_is_array(phases) || json_array_size(phases) == 0 ||
                           json_array_size(phases) > SRV_PHASES_MAX))
        err = ot_diag_set(d, OT_ERR_FORMAT, "policy: 'phases' must be a list of 1..%d phases",
                          SRV_PHASES_MAX);
    for (size_t k = 0; !err && k < json_array_size(phases); k++)
        err = parse_phase(json_array_get(phases, k), k, &p->phases[p->nphases++], d);
    if (!err && !phases) { /* one phase: everything at once, still paced and guarded */
        p->phases[0] = (struct srv_phase){.name = "all", .size = 100, .percent = true, .soak_s = -1};
        p->nphases = 1;
    }
    if (!err)
        err = get_choice(j, "order", "random", "tags", &p->order_by_tags, d);
    if (!err)
        err = get_u64(j, "seed", UINT32_MAX, &p->seed, d);
    const json_t *tags = json_object_get(j, "order_tags");
    if (!err && tags && (!json_is_array(tags) || json_array_size(tags) > SRV_ORDER_TAGS_MAX))
        err = bad(d, "order_tags", "must be a list of at most 16 tags");
    for (size_t i = 0; !err && i < json_array_size(tags); i++) {
        const char *t = json_string_value(json_array_get(tags, i));
        if (!t || !t[0] || strlen(t) >= SRV_TAG_MAX)
            err = bad(d, "order_tags", "must hold tags (1..63 bytes)");
        else
            snprintf(p->order_tags[p->norder_tags++], SRV_TAG_MAX, "%s", t);
    }
    if (!err && p->order_by_tags && p->norder_tags == 0)
        err = bad(d, "order_tags", "is needed with \"order\": \"tags\"");
    if (!err)
        err = get_u32(j, "success_threshold", 100, &p->success_threshold, d);
    if (!err)
        err = get_u64(j, "min_finished", INT64_MAX, &p->min_finished, d);
    if (!err)
        err = get_duration(j, "soak", &p->soak_s, d);
    if (!err)
        err = get_u32(j, "failure_threshold", 100, &p->failure_threshold, d);
    if (!err)
        err = get_u64(j, "min_executed", INT64_MAX, &p->min_executed, d);
    if (!err)
        err = get_choice(j, "on_failure", "pause", "abort", &p->abort_on_failure, d);
    if (!err)
        err = get_u64(j, "max_per_minute", 100000000, &p->max_per_minute, d);
    const json_t *ramp = json_object_get(j, "ramp_factor");
    if (!err && ramp) {
        if (!json_is_number(ramp) || json_number_value(ramp) < 1.0 || json_number_value(ramp) > 100)
            err = bad(d, "ramp_factor", "must be a number from 1 to 100");
        else
            p->ramp_factor = json_number_value(ramp);
    }
    if (!err && p->ramp_factor > 1.0 && !p->max_per_minute)
        err = bad(d, "ramp_factor", "needs max_per_minute (the rate it starts from)");
    if (!err)
        err = get_u64(j, "max_in_progress", INT64_MAX, &p->max_in_progress, d);
    if (!err)
        err = get_time(j, "start_at", &p->start_at, d);
    if (!err)
        err = get_time(j, "end_at", &p->end_at, d);
    if (!err && p->start_at && p->end_at && p->end_at <= p->start_at)
        err = bad(d, "end_at", "must be after start_at");
    if (!err)
        err = get_choice(j, "on_end", "stop", "cancel", &p->cancel_at_end, d);
    uint32_t approvals = 0; /* before the first phase: the first phase's own, at least */
    if (!err)
        err = get_u32(j, "approvals", 16, &approvals, d);
    p->phases[0].approvals = OT_MAX(p->phases[0].approvals, approvals);
    int64_t timeout = 0;
    if (!err)
        err = get_duration(j, "device_timeout", &timeout, d);
    p->device_timeout_s = (uint64_t)timeout;
    const json_t *type = json_object_get(j, "type");
    if (!err && type) {
        const char *ts = json_string_value(type);
        int v = OT_WIRE_TYPE__MAX;
        for (int i = 0; ts && i < OT_WIRE_TYPE__MAX; i++)
            if (strcmp(ts, ot_wire_deploy_type_name((enum ot_wire_deploy_type)i)) == 0)
                v = i;
        if (v == OT_WIRE_TYPE__MAX)
            err = bad(d, "type", "must be \"forced\", \"soft\" or \"download_only\"");
        else
            p->type = (enum ot_wire_deploy_type)v;
    }
    if (!err)
        err = get_u32(j, "retries", SRV_RETRIES_MAX, &p->retries, d);
    const json_t *w = json_object_get(j, "maintenance_window");
    if (!err && w && !json_is_null(w))
        err = parse_window(w, p, d);
    return err;
}

static json_t *time_json(int64_t t)
{
    if (!t)
        return json_null();
    char buf[32];
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

json_t *srv_policy_json(const struct srv_policy *p)
{
    json_t *phases = json_array(), *tags = json_array();
    for (size_t k = 0; phases && k < p->nphases; k++) {
        const struct srv_phase *ph = &p->phases[k];
        char pct[8];
        snprintf(pct, sizeof(pct), "%u%%", (unsigned)ph->size);
        json_t *o = json_pack("{s:s, s:o, s:i}", "name", ph->name, "size",
                              ph->percent ? json_string(pct) : json_integer((json_int_t)ph->size),
                              "approvals", (int)ph->approvals);
        if (o && ph->soak_s >= 0)
            json_object_set_new(o, "soak", json_integer(ph->soak_s));
        json_array_append_new(phases, o);
    }
    for (size_t i = 0; tags && i < p->norder_tags; i++)
        json_array_append_new(tags, json_string(p->order_tags[i]));
    json_t *window = p->has_window
                         ? json_pack("{s:s, s:I, s:s}", "cron", p->window_cron, "duration",
                                     (json_int_t)p->window_s, "timezone", p->window_tz)
                         : json_null();
    return json_pack("{s:o*, s:s, s:I, s:o*, s:i, s:I, s:I, s:i, s:I, s:s, s:I, s:f, s:I, s:o, "
                     "s:o, s:s, s:I, s:s, s:i, s:o}",
                     "phases", phases, "order", p->order_by_tags ? "tags" : "random", "seed",
                     (json_int_t)p->seed, "order_tags", tags, "success_threshold",
                     (int)p->success_threshold, "min_finished", (json_int_t)p->min_finished,
                     "soak", (json_int_t)p->soak_s, "failure_threshold",
                     (int)p->failure_threshold, "min_executed", (json_int_t)p->min_executed,
                     "on_failure", p->abort_on_failure ? "abort" : "pause", "max_per_minute",
                     (json_int_t)p->max_per_minute, "ramp_factor", p->ramp_factor,
                     "max_in_progress", (json_int_t)p->max_in_progress, "start_at",
                     time_json(p->start_at), "end_at", time_json(p->end_at), "on_end",
                     p->cancel_at_end ? "cancel" : "stop", "device_timeout",
                     (json_int_t)p->device_timeout_s, "type", ot_wire_deploy_type_name(p->type),
                     "retries", (int)p->retries, "maintenance_window", window);
}

int64_t srv_policy_bound(const struct srv_policy *p, size_t k, int64_t n)
{
    if (k + 1 >= p->nphases)
        return n; /* the last phase takes the rest */
    int64_t bound = 0;
    for (size_t i = 0; i <= k; i++) {
        const struct srv_phase *ph = &p->phases[i];
        int64_t size = ph->percent ? (int64_t)((ph->size * (uint64_t)n + 99) / 100)
                                   : (int64_t)OT_MIN(ph->size, (uint64_t)n);
        bound = OT_MIN(n, bound + OT_MAX(size, 1));
    }
    return bound;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

struct ranked {
    uint64_t rank;  /* tag group in the high bits, a seeded hash of the id below */
    size_t index;
};

static int by_rank(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    return x->rank < y->rank ? -1 : x->rank > y->rank ? 1 : (x->index > y->index) - (x->index < y->index);
}

static int by_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

enum ot_err srv_policy_order(const struct srv_policy *p, struct srv_app *app, const int64_t *ids,
                             size_t n, int64_t *seqs, struct ot_diag *d)
{
    struct ranked *r = calloc(n ? n : 1, sizeof(*r));
    if (!r)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        r[i] = (struct ranked){.rank = (mix(p->seed ^ mix((uint64_t)ids[i])) >> 8) |
                                       ((uint64_t)0xff << 56),
                               .index = i};
    /* By tags: a device's group is the first of order_tags it has (devices with none go last). */
    for (size_t t = p->order_by_tags ? p->norder_tags : 0; t-- > 0;) {
        int64_t *tagged = NULL;
        size_t ntagged = 0;
        enum ot_err err = srv_store_device_ids_by_tag(app->store, p->order_tags[t], &tagged,
                                                      &ntagged, d);
        if (err) {
            free(r);
            return err;
        }
        qsort(tagged, ntagged, sizeof(*tagged), by_id);
        for (size_t i = 0; i < n; i++)
            if (bsearch(&ids[i], tagged, ntagged, sizeof(*tagged), by_id))
                r[i].rank = (r[i].rank & ~((uint64_t)0xff << 56)) | ((uint64_t)t << 56);
        free(tagged);
    }
    qsort(r, n, sizeof(*r), by_rank);
    for (size_t i = 0; i < n; i++)
        seqs[r[i].index] = (int64_t)i + 1;
    free(r);
    return OT_OK;
}

const char *srv_rollout_state_name(enum srv_rollout_state s)
{
    switch (s) {
    case SRV_ROLLOUT_WAITING_APPROVAL: return "waiting_approval";
    case SRV_ROLLOUT_SCHEDULED: return "scheduled";
    case SRV_ROLLOUT_RUNNING: return "running";
    case SRV_ROLLOUT_PAUSED: return "paused";
    case SRV_ROLLOUT_DONE: return "done";
    case SRV_ROLLOUT_ABORTED: return "aborted";
    default: return "unknown";
    }
}

/* ---- released counts for check-ins ---------------------------------------------------------------- */

/* A rollout in memory: how far it has released (what check-ins need), and its policy, parsed
 * once per rollout (the engine's ticks and check-ins read it from here). */
struct watermark {
    int64_t deployment_id, released;
    struct srv_policy pol;
    bool pol_ok;                /* pol was read; else installs are held and the engine skips it */
    struct srv_window *window;  /* pol's maintenance window; NULL: none; owned */
    bool held;                  /* the window was closed at the last look */
};

/* The engine's own memory of a rollout between ticks (not stored: a restart starts a fresh
 * minute of rate). */
struct pace {
    int64_t deployment_id;
    double tokens;              /* devices that may be released now */
    int64_t last;               /* Unix seconds of the last refill */
    int64_t first_release;      /* for the ramp */
    bool seen;
};

struct srv_rollouts {
    struct srv_app *app;
    unsigned tick_ms;
    bool engine;
    pthread_mutex_t lock;       /* marks */
    struct watermark *marks;
    size_t nmarks;
    struct pace *paces;         /* engine thread only */
    size_t npaces;
    struct srv_ticker ticker;   /* the engine thread */
};

/* The mark of a deployment (lock held); NULL when it has none. */
static struct watermark *mark_of(struct srv_rollouts *r, int64_t deployment_id)
{
    for (size_t i = 0; i < r->nmarks; i++)
        if (r->marks[i].deployment_id == deployment_id)
            return &r->marks[i];
    return NULL;
}

bool srv_rollouts_released(struct srv_rollouts *r, int64_t deployment_id, int64_t seq)
{
    if (seq <= 0 || !r)
        return true;
    pthread_mutex_lock(&r->lock);
    const struct watermark *m = mark_of(r, deployment_id);
    bool ok = m && seq <= m->released;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

void srv_rollouts_action(struct srv_rollouts *r, int64_t deployment_id,
                         enum ot_wire_deploy_type *ret_type, bool *ret_held)
{
    *ret_type = OT_WIRE_TYPE_FORCED;
    *ret_held = false;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    const struct watermark *m = mark_of(r, deployment_id);
    if (m) {
        *ret_type = m->pol.type;
        *ret_held = m->held;
    }
    pthread_mutex_unlock(&r->lock);
}

uint32_t srv_rollouts_retries(struct srv_rollouts *r, int64_t deployment_id)
{
    if (!r)
        return 0;
    pthread_mutex_lock(&r->lock);
    const struct watermark *m = mark_of(r, deployment_id);
    uint32_t n = m ? m->pol.retries : 0;
    pthread_mutex_unlock(&r->lock);
    return n;
}

bool srv_rollouts_has_window(struct srv_rollouts *r, int64_t deployment_id)
{
    if (!r)
        return false;
    pthread_mutex_lock(&r->lock);
    const struct watermark *m = mark_of(r, deployment_id);
    bool yes = m && m->window;
    pthread_mutex_unlock(&r->lock);
    return yes;
}

/* A new mark's policy part, from the stored policy text (the window parsed once, here). */
static void mark_fill(struct watermark *m, const char *policy_text)
{
    struct ot_diag d = {0};
    json_t *pj = srv_json_text(policy_text);
    enum ot_err err = pj ? srv_policy_parse(pj, 0, &m->pol, &d)
                         : ot_diag_set(&d, OT_ERR_FORMAT, "unreadable policy");
    json_decref(pj);
    if (!err && m->pol.has_window)
        err = srv_window_parse(m->pol.window_cron, m->pol.window_s, m->pol.window_tz, &m->window,
                               &d);
    if (err) { /* cannot happen for a policy this otterd stored; hold installs to be safe */
        ot_log(OT_LOG_ERR, "rollout of deployment %lld: policy: %s", (long long)m->deployment_id,
               d.msg);
        m->held = true;
        return;
    }
    m->pol_ok = true;
}

/* The rollout's policy as its mark holds it; false when it has none that could be read. */
static bool mark_policy(struct srv_rollouts *r, int64_t deployment_id, struct srv_policy *ret)
{
    pthread_mutex_lock(&r->lock);
    const struct watermark *m = mark_of(r, deployment_id);
    bool ok = m && m->pol_ok;
    if (ok)
        *ret = m->pol;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

static void mark_held(struct watermark *m, int64_t now)
{
    if (m->window)
        m->held = !srv_window_open(m->window, now);
}

static void marks_free(struct watermark *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        srv_window_free(m[i].window);
    free(m);
}

static void mark_set(struct srv_rollouts *r, int64_t deployment_id, int64_t released)
{
    pthread_mutex_lock(&r->lock);
    struct watermark *m = mark_of(r, deployment_id);
    if (m)
        m->released = released;
    pthread_mutex_unlock(&r->lock);
    if (m)
        return;
    /* a new rollout: its policy first (outside the lock: it reads the store and zone files) */
    struct watermark fresh = {.deployment_id = deployment_id, .released = released};
    struct srv_rollout ro = {0};
    struct ot_diag d = {0};
    if (srv_store_rollout_get(r->app->store, deployment_id, &ro, &d) == OT_OK)
        mark_fill(&fresh, ro.policy);
    srv_rollout_release(&ro);
    mark_held(&fresh, r->app->now());
    pthread_mutex_lock(&r->lock);
    if ((m = mark_of(r, deployment_id))) { /* the engine was faster */
        m->released = released;
    } else {
        struct watermark *grown = reallocarray(r->marks, r->nmarks + 1, sizeof(*grown));
        if (grown) {
            r->marks = grown;
            r->marks[r->nmarks++] = fresh;
            fresh.window = NULL;
        }
    }
    pthread_mutex_unlock(&r->lock);
    srv_window_free(fresh.window);
}

/* Replaces every mark with the active rollouts' (finished deployments drop out), and looks at the
 * maintenance windows. */
static void marks_reload(struct srv_rollouts *r, const struct srv_rollout *list, size_t n)
{
    struct watermark *m = calloc(n ? n : 1, sizeof(*m));
    if (!m)
        return;
    int64_t now = r->app->now();
    for (size_t i = 0; i < n; i++) {
        m[i] = (struct watermark){.deployment_id = list[i].deployment_id,
                                  .released = list[i].released};
        pthread_mutex_lock(&r->lock);
        struct watermark *old = mark_of(r, list[i].deployment_id);
        if (old) { /* the policy part is known: take it over */
            m[i].pol = old->pol;
            m[i].pol_ok = old->pol_ok;
            m[i].window = old->window;
            m[i].held = old->held;
        }
        pthread_mutex_unlock(&r->lock);
        if (!old)
            mark_fill(&m[i], list[i].policy);
        mark_held(&m[i], now);
    }
    pthread_mutex_lock(&r->lock);
    struct watermark *gone = r->marks;
    size_t ngone = r->nmarks;
    r->marks = m;
    r->nmarks = n;
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < ngone; i++) /* windows taken over belong to the new marks */
        for (size_t k = 0; gone[i].window && k < n; k++)
            if (m[k].window == gone[i].window)
                gone[i].window = NULL;
    marks_free(gone, ngone);
}

/* ---- the engine ----------------------------------------------------------------------------------- */

static struct pace *pace_of(struct srv_rollouts *r, int64_t deployment_id, int64_t now)
{
    for (size_t i = 0; i < r->npaces; i++)
        if (r->paces[i].deployment_id == deployment_id) {
            r->paces[i].seen = true;
            return &r->paces[i];
        }
    struct pace *p = reallocarray(r->paces, r->npaces + 1, sizeof(*p));
    if (!p)
        return NULL;
    r->paces = p;
    p = &r->paces[r->npaces++];
    *p = (struct pace){.deployment_id = deployment_id, .last = now, .seen = true, .tokens = -1};
    return p;
}

struct tick {
    struct srv_rollouts *r;
    struct srv_app *app;
    struct srv_rollout *ro;
    struct srv_policy pol;
    struct srv_deployment dep;
    int64_t now;
};

/* Records a decision: with a state change it is written with the rollout, else appended. */
static void decide(struct tick *t, bool change, const char *kind, const char *fmt, ...)
    OT_PRINTF(4, 5);
static void decide(struct tick *t, bool change, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[DECISION_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ot_log(OT_LOG_NOTICE, "rollout of deployment %lld: %s: %s", (long long)t->ro->deployment_id,
           kind, msg);
    struct ot_diag d = {0};
    t->ro->updated_at = t->now;
    if (change) {
        if (strcmp(t->ro->reason ? t->ro->reason : "", msg) != 0) {
            char *reason = strdup(msg);
            if (reason) {
                free(t->ro->reason);
                t->ro->reason = reason;
            }
        }
        if (srv_store_rollout_update(t->app->store, t->ro, kind, msg, &d) != OT_OK)
            ot_log(OT_LOG_ERR, "rollout of deployment %lld: cannot save: %s",
                   (long long)t->ro->deployment_id, d.msg);
    } else if (srv_store_rollout_event_add(t->app->store, t->ro->deployment_id, t->now, kind, msg,
                                           &d) != OT_OK) {
        ot_log(OT_LOG_ERR, "rollout of deployment %lld: cannot record a decision: %s",
               (long long)t->ro->deployment_id, d.msg);
    }
}

/* Sets the state with its reason, recording the decision once (not again while it holds). */
static void enter(struct tick *t, enum srv_rollout_state st, const char *kind, const char *msg)
{
    if (t->ro->state == st && strcmp(t->ro->reason ? t->ro->reason : "", msg) == 0)
        return;
    t->ro->state = st;
    decide(t, true, kind, "%s", msg);
}

static uint64_t failed_of(const uint64_t c[SRV_DD__MAX])
{
    return c[SRV_DD_FAILURE] + c[SRV_DD_ROLLED_BACK];
}

static uint64_t finished_of(const uint64_t c[SRV_DD__MAX])
{
    return c[SRV_DD_SUCCESS] + failed_of(c);
}

static uint64_t final_of(const uint64_t c[SRV_DD__MAX])
{
    return finished_of(c) + c[SRV_DD_CANCELLED] + c[SRV_DD_SKIPPED];
}

static void abort_rollout(struct tick *t, const char *why)
{
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_cancel(t->app->store, t->ro->deployment_id, t->now, &d);
    if (err && err != OT_ERR_EXISTS) {
        ot_log(OT_LOG_ERR, "rollout of deployment %lld: cannot cancel: %s",
               (long long)t->ro->deployment_id, d.msg);
        return;
    }
    srv_fleet_bump(t->app->fleet);
    enter(t, SRV_ROLLOUT_ABORTED, "abort", why);
}

/* How many more devices the pace allows now (rate limit and cap on devices in progress). */
static int64_t pace_budget(struct tick *t, int64_t want, const uint64_t released_counts[SRV_DD__MAX])
{
    const struct srv_policy *p = &t->pol;
    if (p->max_in_progress) {
        int64_t in_progress = t->ro->released - (int64_t)final_of(released_counts);
        want = OT_MIN(want, OT_MAX((int64_t)p->max_in_progress - in_progress, 0));
    }
    if (!p->max_per_minute || want <= 0)
        return want;
    struct pace *pc = pace_of(t->r, t->ro->deployment_id, t->now);
    if (!pc)
        return 0;
    double minutes = pc->first_release ? (double)(t->now - pc->first_release) / 60.0 : 0.0;
    double rate = (double)p->max_per_minute * pow(p->ramp_factor, floor(minutes));
    rate = OT_MIN(rate, 1e9);
    if (pc->tokens < 0) /* first look (or after a restart): one minute's worth at most */
        pc->tokens = OT_MIN(rate, (double)want);
    else
        pc->tokens = OT_MIN(rate, pc->tokens + rate * (double)(t->now - pc->last) / 60.0);
    pc->last = t->now;
    int64_t n = OT_MIN(want, (int64_t)floor(pc->tokens));
    pc->tokens -= (double)n;
    if (n > 0 && !pc->first_release)
        pc->first_release = t->now;
    return n;
}

/* Devices that joined a dynamic group after every device had been released: they are released
 * at the policy's pace, the phases being over. */
static void release_late(struct tick *t, int64_t n)
{
    struct srv_rollout *ro = t->ro;
    uint64_t all[SRV_DD__MAX] = {0};
    struct ot_diag d = {0};
    if (srv_store_rollout_counts(t->app->store, ro->deployment_id, 0, ro->released, all, &d)) {
        ot_log(OT_LOG_ERR, "rollout: counts: %s", d.msg);
        return;
    }
    int64_t from = ro->released, more = pace_budget(t, n - ro->released, all);
    if (more <= 0)
        return;
    ro->released += more;
    mark_set(t->r, ro->deployment_id, ro->released);
    decide(t, true, "release", "released devices %lld..%lld (joined the group later)",
           (long long)from + 1, (long long)ro->released);
}

static void tick_one(struct tick *t)
{
    struct srv_rollout *ro = t->ro;
    const struct srv_policy *p = &t->pol;
    int64_t n = (int64_t)t->dep.ndevices;
    struct ot_diag d = {0};
    if (ro->state == SRV_ROLLOUT_ABORTED)
        return;
    /* devices that take too long (also while paused, and after the last release) */
    if (p->device_timeout_s && ro->released > 0) {
        size_t timed_out = 0;
        char msg[128];
        snprintf(msg, sizeof(msg), "timed out: no report for %llu s and no final state",
                 (unsigned long long)p->device_timeout_s);
        if (srv_store_rollout_timeout(t->app->store, ro->deployment_id, ro->released,
                                      t->now - (int64_t)p->device_timeout_s, t->now, msg,
                                      &timed_out, &d) != OT_OK)
            ot_log(OT_LOG_ERR, "rollout: timeouts: %s", d.msg);
        else if (timed_out)
            decide(t, false, "timeout", "%zu device(s) counted as failed: no report for %llu s",
                   timed_out, (unsigned long long)p->device_timeout_s);
    }
    if (ro->state == SRV_ROLLOUT_DONE && ro->released < n && !(p->end_at && t->now >= p->end_at))
        return release_late(t, n);
    if (ro->state == SRV_ROLLOUT_PAUSED || ro->state == SRV_ROLLOUT_DONE)
        return;
    /* schedule */
    if (p->start_at && t->now < p->start_at)
        return enter(t, SRV_ROLLOUT_SCHEDULED, "schedule", "waiting for the start time");
    if (p->end_at && t->now >= p->end_at) {
        if (p->cancel_at_end)
            return abort_rollout(t, "the end time passed: the devices not started were cancelled");
        return enter(t, SRV_ROLLOUT_DONE, "schedule",
                     "the end time passed: no more devices are started");
    }
    /* the failure rate over every device released so far */
    uint64_t all[SRV_DD__MAX] = {0};
    if (srv_store_rollout_counts(t->app->store, ro->deployment_id, 0, ro->released, all, &d)) {
        ot_log(OT_LOG_ERR, "rollout: counts: %s", d.msg);
        return;
    }
    /* failures from before the last resume do not count again */
    uint64_t finished = finished_of(all) - OT_MIN(finished_of(all), (uint64_t)ro->base_finished);
    uint64_t failed = failed_of(all) - OT_MIN(failed_of(all), (uint64_t)ro->base_failed);
    if (p->failure_threshold && finished >= OT_MAX(p->min_executed, 1) &&
        failed * 100 >= (uint64_t)p->failure_threshold * finished) {
        char why[256];
        snprintf(why, sizeof(why), "failure rate %llu%% (%llu of %llu finished) reached the "
                 "threshold of %u%%", (unsigned long long)(failed * 100 / finished),
                 (unsigned long long)failed, (unsigned long long)finished, p->failure_threshold);
        if (p->abort_on_failure)
            return abort_rollout(t, why);
        return enter(t, SRV_ROLLOUT_PAUSED, "pause", why);
    }
    size_t k = (size_t)ro->phase;
    const struct srv_phase *ph = &p->phases[k];
    int64_t lo = k ? srv_policy_bound(p, k - 1, n) : 0, hi = srv_policy_bound(p, k, n);
    /* approvals before the phase starts */
    if (ph->approvals && !ro->phase_started_at) {
        size_t have = 0;
        if (srv_store_rollout_approvals(t->app->store, ro->deployment_id, ro->phase, &have, &d)) {
            ot_log(OT_LOG_ERR, "rollout: approvals: %s", d.msg);
            return;
        }
        if (have < ph->approvals) {
            char why[160];
            snprintf(why, sizeof(why), "phase %zu (%s) waits for %u approval(s), has %zu", k + 1,
                     ph->name, ph->approvals, have);
            return enter(t, SRV_ROLLOUT_WAITING_APPROVAL, "approval", why);
        }
    }
    if (!ro->phase_started_at) {
        ro->phase_started_at = t->now;
        ro->state = SRV_ROLLOUT_RUNNING;
        decide(t, true, "phase", "phase %zu (%s) started: devices %lld..%lld of %lld", k + 1,
               ph->name, (long long)lo + 1, (long long)hi, (long long)n);
    } else if (ro->state != SRV_ROLLOUT_RUNNING) {
        ro->state = SRV_ROLLOUT_RUNNING;
        decide(t, true, "resume", "running phase %zu (%s)", k + 1, ph->name);
    }
    /* release the phase's devices, as fast as the pace allows */
    if (ro->released < hi) {
        int64_t from = ro->released;
        int64_t more = pace_budget(t, hi - ro->released, all);
        if (more > 0) {
            ro->released += more;
            mark_set(t->r, ro->deployment_id, ro->released);
            decide(t, true, "release", "released devices %lld..%lld (phase %zu, %s)",
                   (long long)from + 1, (long long)ro->released, k + 1, ph->name);
        }
        return;
    }
    /* every device of the phase is released: judge it */
    uint64_t c[SRV_DD__MAX] = {0};
    if (srv_store_rollout_counts(t->app->store, ro->deployment_id, lo, hi, c, &d)) {
        ot_log(OT_LOG_ERR, "rollout: counts: %s", d.msg);
        return;
    }
    uint64_t pf = finished_of(c), ps = c[SRV_DD_SUCCESS];
    uint64_t phase_devices = (uint64_t)(hi - lo) - c[SRV_DD_SKIPPED] - c[SRV_DD_CANCELLED];
    uint64_t need = p->min_finished ? OT_MIN(p->min_finished, phase_devices) : phase_devices;
    bool all_final = final_of(c) == (uint64_t)(hi - lo);
    if (k + 1 == p->nphases) {
        char why[160];
        snprintf(why, sizeof(why), "every device is released (phase %zu, %s)", k + 1, ph->name);
        return enter(t, SRV_ROLLOUT_DONE, "done", why);
    }
    if (pf < need)
        return;
    bool good = pf == 0 || ps * 100 >= (uint64_t)p->success_threshold * pf ||
                ro->phase_ready_at; /* an operator resumed a phase held below the threshold */
    if (!good) {
        if (!all_final)
            return; /* more may still succeed */
        char why[200];
        snprintf(why, sizeof(why), "phase %zu (%s) ended at %llu%% success (%llu of %llu), below "
                 "the threshold of %u%%", k + 1, ph->name, (unsigned long long)(ps * 100 / pf),
                 (unsigned long long)ps, (unsigned long long)pf, p->success_threshold);
        return enter(t, SRV_ROLLOUT_PAUSED, "pause", why);
    }
    int64_t soak = ph->soak_s >= 0 ? ph->soak_s : p->soak_s;
    if (!ro->phase_ready_at) {
        ro->phase_ready_at = t->now;
        decide(t, true, "ready", "phase %zu (%s): %llu%% success (%llu of %llu finished)%s",
               k + 1, ph->name, (unsigned long long)(pf ? ps * 100 / pf : 100),
               (unsigned long long)ps, (unsigned long long)pf, soak ? ", soaking" : "");
    }
    if (t->now < ro->phase_ready_at + soak)
        return;
    ro->phase++;
    ro->phase_started_at = 0;
    ro->phase_ready_at = 0;
    decide(t, true, "advance", "phase %zu (%s) passed: on to phase %zu (%s)", k + 1, ph->name,
           k + 2, p->phases[k + 1].name);
    tick_one(t); /* start it now (approvals, first releases) */
}

static void tick(struct srv_rollouts *r)
{
    struct srv_rollout *list = NULL;
    size_t n = 0;
    struct ot_diag d = {0};
    if (srv_store_rollout_list_active(r->app->store, &list, &n, &d) != OT_OK) {
        ot_log(OT_LOG_ERR, "rollouts: %s", d.msg);
        return;
    }
    /* first the marks: every rollout's policy is read once, when it is new; releases during the
     * tick update them (mark_set) */
    marks_reload(r, list, n);
    for (size_t i = 0; r->engine && i < n; i++) {
        struct tick t = {.r = r, .app = r->app, .ro = &list[i], .now = r->app->now()};
        enum ot_err err = mark_policy(r, list[i].deployment_id, &t.pol)
                              ? OT_OK
                              : ot_diag_set(&d, OT_ERR_FORMAT, "unreadable policy");
        if (!err)
            err = srv_store_deployment_get(r->app->store, list[i].deployment_id, &t.dep, &d);
        if (!err && t.dep.status == SRV_DEPLOYMENT_ACTIVE &&
            list[i].phase < (int64_t)t.pol.nphases)
            tick_one(&t);
        else if (err)
            ot_log(OT_LOG_ERR, "rollout of deployment %lld: %s",
                   (long long)list[i].deployment_id, d.msg);
        srv_deployment_release(&t.dep);
        ot_diag_clear(&d);
    }
    /* forget the pace of rollouts that are gone */
    size_t keep = 0;
    for (size_t i = 0; i < r->npaces; i++)
        if (r->paces[i].seen) {
            r->paces[i].seen = false;
            r->paces[keep++] = r->paces[i];
        }
    r->npaces = keep;
    srv_rollout_list_free(list, n);
}

static void on_tick(void *arg) { tick(arg); }

void srv_rollouts_kick(struct srv_rollouts *r, int64_t deployment_id, int64_t released)
{
    if (!r)
        return;
    if (deployment_id)
        mark_set(r, deployment_id, released);
    srv_ticker_kick(&r->ticker);
}

enum ot_err srv_rollouts_start(struct srv_app *app, unsigned tick_ms, bool engine,
                               struct srv_rollouts **ret, struct ot_diag *d)
{
    struct srv_rollouts *r = calloc(1, sizeof(*r));
    if (!r)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    *r = (struct srv_rollouts){.app = app, .tick_ms = OT_MAX(tick_ms, 10u), .engine = engine};
    pthread_mutex_init(&r->lock, NULL);
    struct srv_rollout *list = NULL;
    size_t n = 0;
    enum ot_err err = srv_store_rollout_list_active(app->store, &list, &n, d);
    if (!err) {
        marks_reload(r, list, n);
        srv_rollout_list_free(list, n);
        err = srv_ticker_start(&r->ticker, r->tick_ms, on_tick, r, "rollout", d);
    }
    if (err) {
        srv_rollouts_stop(r);
        return err;
    }
    *ret = r;
    return OT_OK;
}

void srv_rollouts_stop(struct srv_rollouts *r)
{
    if (!r)
        return;
    srv_ticker_stop(&r->ticker);
    pthread_mutex_destroy(&r->lock);
    marks_free(r->marks, r->nmarks);
    free(r->paces);
    free(r);
}

/* ---- the report ------------------------------------------------------------------------------------ */

static json_t *counts_json(const uint64_t c[SRV_DD__MAX], int64_t unreleased)
{
    static const char *const names[SRV_DD__MAX] = {
        [SRV_DD_PENDING] = "pending",       [SRV_DD_DOWNLOADING] = "downloading",
        [SRV_DD_INSTALLING] = "installing", [SRV_DD_REBOOTING] = "rebooting",
        [SRV_DD_VERIFYING] = "verifying",   [SRV_DD_SUCCESS] = "success",
        [SRV_DD_FAILURE] = "failure",       [SRV_DD_ROLLED_BACK] = "rolled_back",
        [SRV_DD_CANCELLED] = "cancelled",   [SRV_DD_SKIPPED] = "skipped",
        [SRV_DD_WAITING] = "waiting"};
    json_t *o = json_object();
    for (int s = SRV_DD_PENDING; o && s < SRV_DD__MAX; s++) {
        uint64_t v = c[s];
        if (s == SRV_DD_PENDING)
            v -= (uint64_t)OT_MIN((uint64_t)unreleased, v);
        json_object_set_new(o, names[s], json_integer((json_int_t)v));
    }
    if (o)
        json_object_set_new(o, "unreleased", json_integer((json_int_t)unreleased));
    return o;
}

json_t *srv_rollout_report(struct srv_app *app, int64_t deployment_id, size_t ndevices,
                           struct ot_diag *d)
{
    struct srv_rollout ro = {0};
    struct srv_policy p;
    enum ot_err err = srv_store_rollout_get(app->store, deployment_id, &ro, d);
    if (err) {
        if (err == OT_ERR_NOENT)
            ot_diag_clear(d);
        return NULL;
    }
    json_t *pj = srv_json_text(ro.policy), *phases = json_array(), *out = NULL;
    err = pj ? srv_policy_parse(pj, 0, &p, d) : ot_diag_set(d, OT_ERR_FORMAT, "unreadable policy");
    int64_t n = (int64_t)ndevices;
    uint64_t all_left = 0;
    double all_left_rate = 0;
    for (size_t k = 0; !err && phases && k < p.nphases; k++) {
        int64_t lo = k ? srv_policy_bound(&p, k - 1, n) : 0, hi = srv_policy_bound(&p, k, n);
        uint64_t c[SRV_DD__MAX] = {0};
        size_t approvals = 0;
        err = srv_store_rollout_counts(app->store, deployment_id, lo, hi, c, d);
        if (!err)
            err = srv_store_rollout_approvals(app->store, deployment_id, (int64_t)k, &approvals, d);
        int64_t unreleased = OT_MAX(hi - OT_MAX(ro.released, lo), 0);
        uint64_t fin = finished_of(c);
        const char *state = (int64_t)k < ro.phase    ? "passed"
                            : (int64_t)k == ro.phase ? srv_rollout_state_name(ro.state)
                                                     : "waiting";
        /* the estimate: the current phase's pace of finishing so far, for what is left. A done
         * rollout starts no more devices, but those it released may still be on their way. */
        json_t *eta = NULL;
        bool done = ro.state == SRV_ROLLOUT_DONE;
        int64_t todo = done ? OT_MAX(OT_MIN(hi, ro.released) - lo, 0) : hi - lo;
        uint64_t left = (uint64_t)todo - OT_MIN(final_of(c), (uint64_t)todo);
        if ((int64_t)k == ro.phase && ro.phase_started_at && fin && left &&
            (ro.state == SRV_ROLLOUT_RUNNING || done)) {
            double per_s = (double)fin / (double)OT_MAX(app->now() - ro.phase_started_at, 1);
            double secs = (double)left / per_s;
            if (p.max_per_minute && unreleased && !done) /* no faster than the pace */
                secs = OT_MAX(secs, (double)unreleased * 60.0 / (double)p.max_per_minute);
            all_left_rate = per_s;
            eta = json_integer((json_int_t)ceil(secs));
        }
        if ((int64_t)k >= ro.phase)
            all_left += left;
        if (!err)
            json_array_append_new(
                phases,
                json_pack("{s:s, s:s, s:I, s:I, s:o, s:o*, s:i, s:I, s:o}", "name", p.phases[k].name,
                          "state", state, "first", (json_int_t)(lo + 1), "last", (json_int_t)hi,
                          "counts", counts_json(c, unreleased), "success_rate",
                          fin ? json_integer((json_int_t)(c[SRV_DD_SUCCESS] * 100 / fin))
                              : json_null(),
                          "approvals_needed", (int)p.phases[k].approvals, "approvals",
                          (json_int_t)approvals, "eta_s", eta ? eta : json_null()));
        else
            json_decref(eta);
    }
    /* every device left at the current phase's pace, plus the soak times still ahead */
    json_t *eta = NULL;
    if (!err && all_left_rate > 0) {
        double secs = (double)all_left / all_left_rate;
        for (size_t k = (size_t)ro.phase; k + 1 < p.nphases; k++)
            secs += (double)(p.phases[k].soak_s >= 0 ? p.phases[k].soak_s : p.soak_s);
        eta = json_integer((json_int_t)ceil(secs));
    }
    if (!err)
        out = json_pack("{s:s, s:I, s:s, s:I, s:I, s:s, s:o, s:O, s:o}", "state",
                        srv_rollout_state_name(ro.state), "phase", (json_int_t)ro.phase + 1,
                        "phase_name",
                        ro.phase < (int64_t)p.nphases ? p.phases[ro.phase].name : "",
                        "released", (json_int_t)ro.released, "devices", (json_int_t)n, "reason",
                        ro.reason ? ro.reason : "", "phases", phases, "policy", pj, "eta_s",
                        eta ? eta : json_null());
    else {
        json_decref(phases);
        json_decref(eta);
    }
    json_decref(pj);
    srv_rollout_release(&ro);
    return out;
}
