/* Dynamic groups (groups.h): continuous deployments in memory, matched against devices that
 * change. */
#include <pthread.h>

#include "fleet.h"
#include "groups.h"
#include "otter/json.h"
#include "otter/log.h"
#include "rollout.h"

struct member_of {
    int64_t deployment_id;
    struct srv_query *query;    /* owned */
    uint64_t cap, ndevices;
    char *device_types;         /* owned: the artifact's JSON array */
};

struct srv_groups {
    struct srv_app *app;
    pthread_mutex_t lock;
    struct member_of *list;
    size_t n;
    int64_t generation;         /* the deployments generation the list was loaded at */
};

enum ot_err srv_group_target_parse(const json_t *t, struct srv_group_target *ret,
                                   struct ot_diag *d)
{
    static const char *const keys[] = {"query", "cap", "continuous", NULL};
    *ret = (struct srv_group_target){.continuous = true};
    const char *text = NULL;
    enum ot_err err = ot_json_only_keys(t, keys, "deployment target", d);
    if (!err)
        err = ot_json_get_str(t, "query", true, SRV_QUERY_TEXT_MAX, "deployment", &text, d);
    if (!err)
        err = ot_json_get_u64(t, "cap", false, 100000, "deployment", &ret->cap, d);
    const json_t *c = json_object_get(t, "continuous");
    if (!err && c && !json_is_boolean(c))
        err = ot_diag_set(d, OT_ERR_FORMAT, "deployment: 'continuous' must be true or false");
    if (!err && c)
        ret->continuous = json_is_true(c);
    if (!err && (err = srv_query_parse(text, &ret->query, d)))
        ot_diag_prefix(d, err, "deployment: 'query'");
    return err;
}

void srv_group_target_release(struct srv_group_target *t)
{
    srv_query_free(t->query);
    *t = (struct srv_group_target){0};
}

/* What a query sees of dev; js holds the parsed JSON members (json_decref each after use). */
static void group_view(const struct srv_device *dev, struct srv_query_device *v, json_t *js[3])
{
    js[0] = srv_json_text(dev->attributes);
    js[1] = srv_json_text(dev->installed);
    js[2] = srv_json_text(dev->identity);
    *v = (struct srv_query_device){
        .id = dev->id,
        .device_type = dev->device_type,
        .status = srv_device_status_name(dev->status),
        .attributes = js[0],
        .installed = js[1],
        .identity = js[2],
        .tags = (const char *const *)dev->tags,
        .ntags = dev->ntags,
    };
}

static bool matches(const struct srv_query *q, const struct srv_device *dev)
{
    struct srv_query_device v;
    json_t *js[3];
    group_view(dev, &v, js);
    bool yes = srv_query_match(q, &v);
    for (int i = 0; i < 3; i++)
        json_decref(js[i]);
    return yes;
}

enum ot_err srv_group_members(struct srv_app *app, const struct srv_query *q, uint64_t cap,
                              int64_t **ret, size_t *ret_n, struct ot_diag *d)
{
    int64_t *ids = NULL;
    size_t n = 0, have = 0;
    struct srv_device_filter f = {.status = SRV_DEVICE_ACCEPTED, .limit = SRV_LIST_MAX};
    enum ot_err err = OT_OK;
    for (;;) {
        struct srv_device *page = NULL;
        size_t np = 0;
        if ((err = srv_store_device_list(app->store, &f, &page, &np, d)))
            break;
        for (size_t i = 0; i < np && (!cap || n < cap); i++) {
            if (!matches(q, &page[i]))
                continue;
            if (n == have) {
                size_t grow = have ? have * 2 : 256;
                int64_t *more = reallocarray(ids, grow, sizeof(*ids));
                if (!more) {
                    err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
                    break;
                }
                ids = more;
                have = grow;
            }
            ids[n++] = page[i].id;
        }
        if (np)
            f.after_id = page[np - 1].id;
        srv_device_list_free(page, np);
        if (err || np < SRV_LIST_MAX || (cap && n >= cap))
            break;
    }
    if (err) {
        free(ids);
        return err;
    }
    *ret = ids;
    *ret_n = n;
    return OT_OK;
}

static void member_release(struct member_of *m)
{
    srv_query_free(m->query);
    free(m->device_types);
}

enum ot_err srv_groups_add(struct srv_groups *g, int64_t deployment_id, const char *target,
                           const char *device_types, uint64_t ndevices, struct ot_diag *d)
{
    json_t *t = srv_json_text(target);
    struct srv_group_target gt = {0};
    enum ot_err err = t ? srv_group_target_parse(t, &gt, d)
                        : ot_diag_set(d, OT_ERR_FORMAT, "unreadable deployment target");
    json_decref(t);
    if (err || !gt.continuous) {
        srv_group_target_release(&gt);
        return err;
    }
    struct member_of m = {.deployment_id = deployment_id, .query = gt.query, .cap = gt.cap,
                          .ndevices = ndevices, .device_types = strdup(device_types)};
    pthread_mutex_lock(&g->lock);
    struct member_of *grown = m.device_types ? reallocarray(g->list, g->n + 1, sizeof(*grown))
                                             : NULL;
    if (grown) {
        g->list = grown;
        g->list[g->n++] = m;
    }
    pthread_mutex_unlock(&g->lock);
    if (!grown) {
        member_release(&m);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

/* Forgets a deployment that was cancelled (lock held). */
static void drop(struct srv_groups *g, int64_t deployment_id)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->list[i].deployment_id == deployment_id) {
            member_release(&g->list[i]);
            g->list[i] = g->list[--g->n];
            return;
        }
}

/* Whether the device may still join: the deployment's count from the store (other otterd
 * instances add devices too), under its cap. */
static bool below_cap(struct srv_groups *g, int64_t deployment_id, uint64_t cap)
{
    if (!cap)
        return true;
    struct srv_deployment dep = {0};
    struct ot_diag d = {0};
    bool ok = srv_store_deployment_get(g->app->store, deployment_id, &dep, &d) == OT_OK &&
              dep.ndevices < cap;
    srv_deployment_release(&dep);
    return ok;
}

static enum ot_err reload(struct srv_groups *g, struct ot_diag *d);

void srv_groups_device_changed(struct srv_groups *g, int64_t device_id)
{
    if (!g)
        return;
    struct ot_diag d = {0};
    /* with several instances, one of the others may have created a continuous deployment */
    if (srv_store_is_shared(g->app->store)) {
        int64_t gen = srv_fleet_generation(g->app->fleet);
        pthread_mutex_lock(&g->lock);
        bool stale = gen != g->generation;
        pthread_mutex_unlock(&g->lock);
        if (stale && reload(g, &d) != OT_OK)
            ot_log(OT_LOG_ERR, "dynamic groups: reload: %s", d.msg);
        ot_diag_clear(&d);
    }
    pthread_mutex_lock(&g->lock);
    size_t n = g->n;
    pthread_mutex_unlock(&g->lock);
    if (!n)
        return;
    struct srv_device dev = {0};
    if (srv_store_device_get(g->app->store, device_id, &dev, &d) != OT_OK) {
        ot_log(OT_LOG_ERR, "dynamic groups: device %lld: %s", (long long)device_id, d.msg);
        return;
    }
    if (dev.status != SRV_DEVICE_ACCEPTED) {
        srv_device_release(&dev);
        return;
    }
    struct srv_query_device v;
    json_t *js[3];
    group_view(&dev, &v, js);
    /* which deployments it matches now (under the lock: memory only), then the store */
    struct want {
        int64_t deployment_id;
        uint64_t cap;
        bool skip;
    } *want = NULL;
    size_t nwant = 0;
    pthread_mutex_lock(&g->lock);
    want = calloc(g->n ? g->n : 1, sizeof(*want));
    for (size_t i = 0; want && i < g->n; i++) {
        struct member_of *m = &g->list[i];
        if ((m->cap && m->ndevices >= m->cap) || !srv_query_match(m->query, &v))
            continue;
        want[nwant++] = (struct want){
            .deployment_id = m->deployment_id,
            .cap = m->cap,
            .skip = dev.device_type[0] && !srv_device_type_listed(m->device_types,
                                                                   dev.device_type),
        };
    }
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < 3; i++)
        json_decref(js[i]);
    if (!want)
        ot_log(OT_LOG_ERR, "dynamic groups: device %lld: out of memory", (long long)device_id);
    bool any = false;
    for (size_t i = 0; i < nwant; i++) {
        bool added = false;
        int64_t seq = 0;
        if (!below_cap(g, want[i].deployment_id, want[i].cap))
            continue;
        enum ot_err err = srv_store_deployment_add_device(
            g->app->store, want[i].deployment_id, device_id, want[i].skip,
            "the artifact is not for this device type", g->app->now(), &added, &seq, &d);
        if (err) {
            ot_log(OT_LOG_ERR, "dynamic groups: deployment %lld, device %lld: %s",
                   (long long)want[i].deployment_id, (long long)device_id, d.msg);
            ot_diag_clear(&d);
            continue;
        }
        struct srv_deployment dep = {0};
        bool cancelled = !added &&
                         srv_store_deployment_get(g->app->store, want[i].deployment_id, &dep,
                                                  &d) == OT_OK &&
                         dep.status == SRV_DEPLOYMENT_CANCELLED;
        srv_deployment_release(&dep);
        ot_diag_clear(&d);
        pthread_mutex_lock(&g->lock);
        for (size_t k = 0; k < g->n; k++)
            if (g->list[k].deployment_id == want[i].deployment_id && added)
                g->list[k].ndevices++;
        if (cancelled) /* it takes nobody any more */
            drop(g, want[i].deployment_id);
        pthread_mutex_unlock(&g->lock);
        if (added) {
            any = true;
            ot_log(OT_LOG_INFO, "dynamic groups: device %lld joined deployment %lld%s",
                   (long long)device_id, (long long)want[i].deployment_id,
                   want[i].skip ? " (skipped)" : "");
            if (seq > 0)
                srv_rollouts_kick(g->app->rollouts, 0, 0);
        }
    }
    free(want);
    srv_device_release(&dev);
    if (any)
        srv_fleet_bump(g->app->fleet);
}

/* The continuous deployments with this status, newest first, in pages. */
static enum ot_err load(struct srv_groups *g, enum srv_deployment_status status,
                        struct ot_diag *d)
{
    int64_t before = 0;
    for (;;) {
        struct srv_deployment *list = NULL;
        size_t n = 0;
        enum ot_err err = srv_store_deployment_list(g->app->store, status, before, SRV_LIST_MAX,
                                                    &list, &n, d);
        if (err)
            return err;
        for (size_t i = 0; !err && i < n; i++) {
            if (!strstr(list[i].target, "\"query\""))
                continue;
            struct srv_artifact a = {0};
            err = srv_store_artifact_get(g->app->store, list[i].artifact_id, &a, d);
            if (err == OT_ERR_NOENT) { /* its artifact is gone: nothing to install any more */
                ot_diag_clear(d);
                err = OT_OK;
                continue;
            }
            if (!err)
                err = srv_groups_add(g, list[i].id, list[i].target, a.device_types,
                                     list[i].ndevices, d);
            srv_artifact_release(&a);
        }
        before = n ? list[n - 1].id : 0;
        srv_deployment_list_free(list, n);
        if (err || n < SRV_LIST_MAX)
            return err;
    }
}

/* The list, loaded afresh from the store: what every instance created (a shared store). */
static enum ot_err reload(struct srv_groups *g, struct ot_diag *d)
{
    struct srv_groups fresh = {.app = g->app, .generation = srv_fleet_generation(g->app->fleet)};
    pthread_mutex_init(&fresh.lock, NULL);
    enum ot_err err = load(&fresh, SRV_DEPLOYMENT_ACTIVE, d);
    if (!err)
        err = load(&fresh, SRV_DEPLOYMENT_FINISHED, d);
    pthread_mutex_lock(&g->lock);
    if (!err) { /* swap the lists */
        struct member_of *old = g->list;
        size_t nold = g->n;
        g->list = fresh.list;
        g->n = fresh.n;
        fresh.list = old;
        fresh.n = nold;
    }
    g->generation = fresh.generation; /* on error too: retried at the next change of it */
    pthread_mutex_unlock(&g->lock);
    for (size_t i = 0; i < fresh.n; i++)
        member_release(&fresh.list[i]);
    free(fresh.list);
    pthread_mutex_destroy(&fresh.lock);
    return err;
}

enum ot_err srv_groups_start(struct srv_app *app, struct srv_groups **ret, struct ot_diag *d)
{
    struct srv_groups *g = calloc(1, sizeof(*g));
    if (!g)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    g->app = app;
    g->generation = srv_fleet_generation(app->fleet);
    pthread_mutex_init(&g->lock, NULL);
    enum ot_err err = load(g, SRV_DEPLOYMENT_ACTIVE, d);
    if (!err)
        err = load(g, SRV_DEPLOYMENT_FINISHED, d);
    if (err) {
        srv_groups_stop(g);
        return err;
    }
    *ret = g;
    return OT_OK;
}

void srv_groups_stop(struct srv_groups *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        member_release(&g->list[i]);
    free(g->list);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
