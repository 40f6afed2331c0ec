/* Management API: deployments. A deployment installs one artifact on a set of devices fixed when
 * it is created (a list of ids, or the accepted devices carrying a tag at that moment); each
 * device then moves through its own states, reported by the device. Devices whose type the
 * artifact does not list are marked skipped at once (or at their first check-in, if their type
 * was not known yet). Creating or cancelling bumps the fleet generation: every device's cached
 * next action is recomputed on its next check-in. */
#include "app.h"
#include <sodium.h>

#include "fleet.h"
#include "groups.h"
#include "otter/log.h"
#include "rollout.h"
#include "otter/json.h"
#include "otter/wire.h"

#define DEPLOYMENT_PAGE_MAX 1000
#define DEPLOYMENT_DEVICES_MAX 100000

static const char *const deployment_status_names[] = {
    [SRV_DEPLOYMENT_ACTIVE] = "active",
    [SRV_DEPLOYMENT_FINISHED] = "finished",
    [SRV_DEPLOYMENT_CANCELLED] = "cancelled",
};

static const char *dd_name(enum srv_dd_status s)
{
    const char *n = ot_wire_status_name((enum ot_wire_status)s);
    return n ? n : "?";
}

static json_t *deployment_json(const struct srv_deployment *dep)
{
    const char *status = (size_t)dep->status < OT_ARRAY_SIZE(deployment_status_names)
                             ? deployment_status_names[dep->status]
                             : NULL;
    return json_pack("{s:I, s:s, s:I, s:s, s:s, s:o, s:s, s:I, s:I, s:s, s:I}", "id",
                     (json_int_t)dep->id, "name", dep->name, "artifact_id",
                     (json_int_t)dep->artifact_id, "artifact_name", dep->artifact_name,
                     "artifact_version", dep->artifact_version, "target",
                     srv_json_text(dep->target), "status", status ? status : "?", "created_at",
                     (json_int_t)dep->created_at, "finished_at", (json_int_t)dep->finished_at,
                     "created_by", dep->created_by, "device_count", (json_int_t)dep->ndevices);
}

static json_t *rollup_json(const uint64_t counts[SRV_DD__MAX])
{
    json_t *o = json_object();
    for (int s = SRV_DD_PENDING; o && s < SRV_DD__MAX; s++)
        json_object_set_new(o, dd_name((enum srv_dd_status)s), json_integer((json_int_t)counts[s]));
    return o;
}

static json_t *dd_json(const struct srv_dd *dd)
{
    return json_pack("{s:I, s:s, s:i, s:s, s:I, s:o*, s:I}", "device_id",
                     (json_int_t)dd->device_id, "status", dd_name(dd->status), "progress",
                     dd->progress, "message", dd->message ? dd->message : "", "updated_at",
                     (json_int_t)dd->updated_at, "release_order",
                     dd->seq > 0 ? json_integer((json_int_t)dd->seq) : NULL, "retries",
                     (json_int_t)dd->attempts);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A dynamic group: the accepted devices matching {"query": "..."} now (at most "cap"); with
 * "continuous" (the default) later ones join (groups.c). */
static enum ot_err target_query(struct srv_app *app, const json_t *body, int64_t **ret,
                                size_t *ret_n, json_t **ret_target, struct ot_diag *d)
{
    json_t *t = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v)
        if (strcmp(k, "query") == 0 || strcmp(k, "cap") == 0 || strcmp(k, "continuous") == 0)
            json_object_set(t, k, v);
    struct srv_group_target gt = {0};
    enum ot_err err = t ? srv_group_target_parse(t, &gt, d)
                        : ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!err)
        err = srv_group_members(app, gt.query, gt.cap, ret, ret_n, d);
    if (!err && *ret_n == 0) {
        free(*ret);
        err = ot_diag_set(d, OT_ERR_INVALID, "no accepted device matches the query");
    }
    if (!err && !json_object_get(t, "continuous"))
        json_object_set_new(t, "continuous", json_boolean(gt.continuous));
    srv_group_target_release(&gt);
    if (err) {
        json_decref(t);
        return err;
    }
    *ret_target = t;
    return OT_OK;
}

/* Device ids from {"devices":[...]}, the accepted devices with {"tag":"..."} or those matching
 * {"query":"..."}; sorted unique. */
static enum ot_err target_devices(struct srv_app *app, const json_t *body, int64_t **ret,
                                  size_t *ret_n, json_t **ret_target, struct ot_diag *d)
{
    const json_t *devices = json_object_get(body, "devices");
    const json_t *tag = json_object_get(body, "tag");
    const json_t *query = json_object_get(body, "query");
    if (!devices + !tag + !query != 2)
        return ot_diag_set(d, OT_ERR_FORMAT, "deployment: give one of 'devices' (a list of "
                                             "device ids), 'tag' or 'query'");
    if ((json_object_get(body, "cap") || json_object_get(body, "continuous")) && !query)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "deployment: 'cap' and 'continuous' go with a 'query'");
    if (query)
        return target_query(app, body, ret, ret_n, ret_target, d);
    if (tag) {
        if (!json_is_string(tag))
            return ot_diag_set(d, OT_ERR_FORMAT, "deployment: 'tag' must be a string");
        enum ot_err err = srv_store_device_ids_by_tag(app->store, json_string_value(tag), ret,
                                                      ret_n, d);
        if (!err && *ret_n == 0)
            err = ot_diag_set(d, OT_ERR_INVALID, "no accepted device has the tag '%.64s'",
                              json_string_value(tag));
        if (!err)
            *ret_target = json_pack("{s:O}", "tag", tag);
        return err;
    }
    size_t n = json_is_array(devices) ? json_array_size(devices) : 0;
    if (n == 0 || n > DEPLOYMENT_DEVICES_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "deployment: 'devices' must be a list of 1 to %d device ids",
                           DEPLOYMENT_DEVICES_MAX);
    int64_t *ids = calloc(n, sizeof(*ids));
    if (!ids)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(devices, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            free(ids);
            return ot_diag_set(d, OT_ERR_FORMAT, "deployment: 'devices' must hold device ids");
        }
        ids[i] = (int64_t)json_integer_value(v);
    }
    qsort(ids, n, sizeof(*ids), cmp_id);
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] == ids[i]) {
            long long twice = (long long)ids[i];
            free(ids);
            return ot_diag_set(d, OT_ERR_FORMAT, "deployment: device %lld is listed twice", twice);
        }
    *ret = ids;
    *ret_n = n;
    *ret_target = json_pack("{s:O}", "devices", devices);
    return OT_OK;
}

/* Which devices cannot take the artifact: accepted ones only are allowed in a list, and a
 * device whose type is known and not among the artifact's is skipped. */
static enum ot_err check_devices(struct srv_app *app, const struct srv_artifact *a,
                                 const int64_t *ids, size_t n, bool *skipped, struct ot_diag *d)
{
    enum ot_err err = OT_OK;
    for (size_t i = 0; !err && i < n; i++) {
        struct srv_device dev = {0};
        err = srv_store_device_get(app->store, ids[i], &dev, d);
        if (err == OT_ERR_NOENT)
            err = ot_diag_set(d, OT_ERR_INVALID, "no device %lld", (long long)ids[i]);
        if (!err && dev.status != SRV_DEVICE_ACCEPTED)
            err = ot_diag_set(d, OT_ERR_INVALID, "device %lld is not accepted", (long long)ids[i]);
        if (!err && dev.device_type[0])
            skipped[i] = !srv_device_type_listed(a->device_types, dev.device_type);
        srv_device_release(&dev);
    }
    return err;
}

/* A policy's rollout row and release order (rollout.h). The seed, when the policy has none, is
 * random: the normalized policy stored with the rollout keeps it. */
static enum ot_err rollout_prepare(struct srv_app *app, const json_t *policy, const int64_t *ids,
                                   size_t n, int64_t **ret_seqs, struct srv_rollout *ro,
                                   struct ot_diag *d)
{
    struct srv_policy p;
    enum ot_err err = srv_policy_parse(policy, randombytes_uniform(UINT32_MAX), &p, d);
    if (err)
        return ot_diag_prefix(d, OT_ERR_FORMAT, "deployment");
    int64_t *seqs = calloc(n ? n : 1, sizeof(*seqs));
    if (!seqs)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    err = srv_policy_order(&p, app, ids, n, seqs, d);
    json_t *norm = err ? NULL : srv_policy_json(&p);
    ro->policy = norm ? json_dumps(norm, JSON_COMPACT) : NULL;
    json_decref(norm);
    if (!err && !ro->policy)
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (err) {
        free(seqs);
        return err;
    }
    ro->state = p.start_at && p.start_at > app->now() ? SRV_ROLLOUT_SCHEDULED
                : p.phases[0].approvals               ? SRV_ROLLOUT_WAITING_APPROVAL
                                                      : SRV_ROLLOUT_RUNNING;
    ro->reason = strdup("created");
    ro->updated_at = app->now();
    if (!ro->reason) {
        free(seqs);
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    *ret_seqs = seqs;
    return OT_OK;
}

enum ot_err srv_deployment_create_json(struct srv_app *app, const json_t *body,
                                       const char *principal, int64_t *ret_id,
                                       struct ot_diag *d)
{
    static const char *const keys[] = {"name",  "artifact_id", "devices",    "tag",
                                       "query", "cap",         "continuous", "policy", NULL};
    const char *name = NULL;
    uint64_t artifact_id = 0;
    int64_t *ids = NULL;
    size_t n = 0;
    bool *skipped = NULL;
    json_t *target = NULL;
    struct srv_artifact a = {0};
    struct srv_deployment dep = {0};
    enum ot_err err = ot_json_only_keys(body, keys, "deployment", d);
    if (!err)
        err = ot_json_get_str(body, "name", true, SRV_DEPLOYMENT_NAME_MAX - 1, "deployment", &name,
                              d);
    if (!err && !name[0])
        err = ot_diag_set(d, OT_ERR_FORMAT, "deployment: 'name' must not be empty");
    if (!err)
        err = ot_json_get_u64(body, "artifact_id", true, INT64_MAX, "deployment", &artifact_id,
                              d);
    if (!err) {
        err = srv_store_artifact_get(app->store, (int64_t)artifact_id, &a, d);
        if (err == OT_ERR_NOENT)
            err = ot_diag_set(d, OT_ERR_INVALID, "no artifact %llu",
                              (unsigned long long)artifact_id);
    }
    if (!err)
        err = target_devices(app, body, &ids, &n, &target, d);
    if (!err && !(skipped = calloc(n, sizeof(*skipped))))
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!err)
        err = check_devices(app, &a, ids, n, skipped, d);
    struct srv_rollout ro = {0};
    int64_t *seqs = NULL;
    const json_t *policy = json_object_get(body, "policy");
    if (!err && policy)
        err = rollout_prepare(app, policy, ids, n, &seqs, &ro, d);
    if (!err) {
        dep.name = (char *)name;
        dep.artifact_id = a.id;
        dep.target = target ? json_dumps(target, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        dep.created_at = app->now();
        dep.created_by = (char *)principal;
        const char *skip = "the artifact is not for this device type";
        err = !dep.target ? ot_diag_set(d, OT_ERR_NOMEM, "out of memory")
              : policy    ? srv_store_deployment_create_rollout(app->store, &dep, ids, skipped,
                                                                seqs, n, skip, &ro, d)
                          : srv_store_deployment_create(app->store, &dep, ids, skipped, n, skip,
                                                        d);
        dep.name = NULL;
        dep.created_by = NULL;
    }
    srv_rollout_release(&ro);
    free(seqs);
    free(ids);
    free(skipped);
    json_decref(target);
    if (err) {
        srv_artifact_release(&a);
        srv_deployment_release(&dep);
        return err;
    }
    srv_fleet_bump(app->fleet);
    if (policy)
        srv_rollouts_kick(app->rollouts, dep.id, 0);
    struct ot_diag gd = {0};
    if (json_object_get(body, "query") &&
        srv_groups_add(app->groups, dep.id, dep.target, a.device_types, dep.ndevices, &gd) != OT_OK)
        ot_log(OT_LOG_ERR, "deployment %lld: dynamic group: %s", (long long)dep.id, gd.msg);
    *ret_id = dep.id;
    srv_artifact_release(&a);
    srv_deployment_release(&dep);
    return OT_OK;
}

void srv_api_deployment_create(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    struct srv_deployment dep = {0};
    struct ot_diag d = {0};
    int64_t id = 0;
    enum ot_err err = srv_deployment_create_json(app, body, srv_req_principal(req), &id, &d);
    json_decref(body);
    if (!err)
        err = srv_store_deployment_get(app->store, id, &dep, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char object[32];
    snprintf(object, sizeof(object), "deployment:%lld", (long long)id);
    srv_audit(app, req, "deployment.create", object,
              json_pack("{s:s, s:I, s:I}", "name", dep.name, "artifact_id",
                        (json_int_t)dep.artifact_id, "devices", (json_int_t)dep.ndevices));
    json_t *out = deployment_json(&dep);
    srv_deployment_release(&dep);
    srv_reply_json(req, 201, out);
}

void srv_api_deployment_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t before = 0, limit = 100;
    enum srv_deployment_status status = 0;
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "before", 0, INT64_MAX, &before, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, DEPLOYMENT_PAGE_MAX, &limit, &d);
    const char *s = srv_req_query(req, "status");
    if (!err && s) {
        for (size_t i = 1; i < OT_ARRAY_SIZE(deployment_status_names); i++)
            if (strcmp(s, deployment_status_names[i]) == 0)
                status = (enum srv_deployment_status)i;
        if (!status)
            err = ot_diag_set(&d, OT_ERR_FORMAT,
                              "query 'status' must be active, finished or cancelled");
    }
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct srv_deployment *list = NULL;
    size_t n = 0;
    err = srv_store_deployment_list(app->store, status, (int64_t)before, (size_t)limit, &list, &n,
                                    &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, deployment_json(&list[i]));
    int64_t next = n ? list[n - 1].id : (int64_t)before;
    srv_deployment_list_free(list, n);
    srv_reply_json(req, 200,
                   json_pack("{s:o, s:I}", "deployments", a, "next_before", (json_int_t)next));
}

static bool deployment_param(struct srv_app *app, struct srv_request *req,
                             struct srv_deployment *ret)
{
    int64_t id = srv_param_id(req, "id");
    struct ot_diag d = {0};
    if (!id) {
        srv_reply_error(req, OT_ERR_FORMAT, "deployment id must be a positive number");
        return false;
    }
    enum ot_err err = srv_store_deployment_get(app->store, id, ret, &d);
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no deployment %lld", (long long)id);
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

void srv_api_deployment_show(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_deployment dep = {0};
    if (!deployment_param(app, req, &dep))
        return;
    uint64_t counts[SRV_DD__MAX] = {0};
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_rollup(app->store, dep.id, counts, &d);
    if (err) {
        srv_deployment_release(&dep);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    json_t *out = deployment_json(&dep);
    json_object_set_new(out, "rollup", rollup_json(counts));
    json_t *rollout = srv_rollout_report(app, dep.id, dep.ndevices, &d);
    srv_deployment_release(&dep);
    if (!rollout && d.err) {
        json_decref(out);
        return srv_reply_error(req, d.err, "%s", d.msg);
    }
    if (rollout)
        json_object_set_new(out, "rollout", rollout);
    srv_reply_json(req, 200, out);
}

void srv_api_deployment_devices(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct srv_deployment dep = {0};
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, DEPLOYMENT_PAGE_MAX, &limit, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    if (!deployment_param(app, req, &dep))
        return;
    struct srv_dd *list = NULL;
    size_t n = 0;
    err = srv_store_deployment_devices(app->store, dep.id, (int64_t)after, (size_t)limit, &list,
                                       &n, &d);
    srv_deployment_release(&dep);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, dd_json(&list[i]));
    int64_t next = n ? list[n - 1].device_id : (int64_t)after;
    srv_dd_list_free(list, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "devices", a, "next_after", (json_int_t)next));
}

void srv_api_deployment_device(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t dep_id = srv_param_id(req, "id"), dev_id = srv_param_id(req, "device_id");
    if (!dep_id || !dev_id)
        return srv_reply_error(req, OT_ERR_FORMAT, "ids must be positive numbers");
    struct srv_dd dd = {0};
    struct srv_dd_event *events = NULL;
    size_t n = 0;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_dd_get(app->store, dep_id, dev_id, &dd, &d);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "device %lld is not in deployment %lld",
                               (long long)dev_id, (long long)dep_id);
    if (!err)
        err = srv_store_dd_events(app->store, dep_id, dev_id, 0, SRV_LIST_MAX, &events, &n, &d);
    if (err) {
        srv_dd_release(&dd);
        return srv_reply_error(req, err, "%s", d.msg);
    }
    json_t *out = dd_json(&dd);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:I, s:s, s:i, s:s, s:s?}", "at",
                                           (json_int_t)events[i].at, "status",
                                           dd_name(events[i].status), "progress",
                                           events[i].progress, "message",
                                           events[i].message ? events[i].message : "", "log",
                                           events[i].log));
    json_object_set_new(out, "events", a);
    srv_dd_event_list_free(events, n);
    srv_dd_release(&dd);
    srv_reply_json(req, 200, out);
}

/* Moves a rollout to state (an operator's decision, recorded with its reason); OT_ERR_NOENT when
 * the deployment has none. */
static enum ot_err rollout_set(struct srv_app *app, int64_t id, enum srv_rollout_state state,
                               const char *kind, const char *why)
{
    struct srv_rollout ro = {0};
    struct ot_diag d = {0};
    uint64_t c[SRV_DD__MAX] = {0};
    enum ot_err err = srv_store_rollout_get(app->store, id, &ro, &d);
    if (!err && state == SRV_ROLLOUT_RUNNING) /* a resume: count failures from now on */
        err = srv_store_rollout_counts(app->store, id, 0, ro.released, c, &d);
    if (!err && state == SRV_ROLLOUT_RUNNING) {
        ro.base_failed = (int64_t)(c[SRV_DD_FAILURE] + c[SRV_DD_ROLLED_BACK]);
        ro.base_finished = ro.base_failed + (int64_t)c[SRV_DD_SUCCESS];
        /* held by a phase below the success threshold (rollout.c's reason): the operator
         * accepts the phase as it is, and it goes on to the next one */
        if (ro.reason && strstr(ro.reason, "below the threshold") && !ro.phase_ready_at)
            ro.phase_ready_at = app->now();
    }
    if (!err && ro.state != SRV_ROLLOUT_ABORTED && ro.state != SRV_ROLLOUT_DONE) {
        ro.state = state;
        free(ro.reason);
        ro.reason = strdup(why);
        ro.updated_at = app->now();
        err = ro.reason ? srv_store_rollout_update(app->store, &ro, kind, why, &d) : OT_ERR_NOMEM;
    }
    if (!err)
        srv_rollouts_kick(app->rollouts, id, ro.released);
    if (err && err != OT_ERR_NOENT)
        ot_log(OT_LOG_ERR, "rollout of deployment %lld: %s", (long long)id, d.msg);
    srv_rollout_release(&ro);
    return err;
}

/* The active deployment's rollout for pause/resume/approve; replies and returns false if none. */
static bool active_rollout(struct srv_app *app, struct srv_request *req, struct srv_rollout *ro)
{
    struct srv_deployment dep = {0};
    if (!deployment_param(app, req, &dep))
        return false;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_rollout_get(app->store, dep.id, ro, &d);
    if (err == OT_ERR_NOENT)
        srv_reply_status(req, 409, "conflict", "deployment %lld has no rollout policy",
                         (long long)dep.id);
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    else if (dep.status != SRV_DEPLOYMENT_ACTIVE)
        srv_reply_status(req, 409, "conflict", "deployment %lld is not active", (long long)dep.id);
    bool ok = !err && dep.status == SRV_DEPLOYMENT_ACTIVE;
    srv_deployment_release(&dep);
    if (!ok)
        srv_rollout_release(ro);
    return ok;
}

static void reply_rollout(struct srv_app *app, struct srv_request *req, int64_t id,
                          const char *action)
{
    char object[32];
    snprintf(object, sizeof(object), "deployment:%lld", (long long)id);
    srv_audit(app, req, action, object, NULL);
    struct srv_deployment dep = {0};
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_get(app->store, id, &dep, &d);
    json_t *out = err ? NULL : srv_rollout_report(app, id, dep.ndevices, &d);
    srv_deployment_release(&dep);
    if (!out)
        return srv_reply_error(req, d.err ? d.err : OT_ERR_INTERNAL, "%s", d.msg);
    srv_reply_json(req, 200, out);
}

/* An operator pauses (from running, scheduled or waiting for approvals) or resumes (from
 * paused); the decision is recorded with the operator's name. */
static void pause_or_resume(struct srv_app *app, struct srv_request *req, bool pause)
{
    struct srv_rollout ro = {0};
    if (!active_rollout(app, req, &ro))
        return;
    int64_t id = ro.deployment_id;
    bool can = pause ? ro.state == SRV_ROLLOUT_RUNNING || ro.state == SRV_ROLLOUT_SCHEDULED ||
                           ro.state == SRV_ROLLOUT_WAITING_APPROVAL
                     : ro.state == SRV_ROLLOUT_PAUSED;
    const char *state = srv_rollout_state_name(ro.state);
    srv_rollout_release(&ro);
    if (!can)
        return srv_reply_status(req, 409, "conflict", "the rollout is %s%s", state,
                                pause ? "" : ", not paused");
    char why[SRV_ROLLOUT_REASON_MAX];
    snprintf(why, sizeof(why), "%s by %s", pause ? "paused" : "resumed", srv_req_principal(req));
    /* on resume the engine re-checks the thresholds: failures seen so far no longer count */
    rollout_set(app, id, pause ? SRV_ROLLOUT_PAUSED : SRV_ROLLOUT_RUNNING,
                pause ? "pause" : "resume", why);
    reply_rollout(app, req, id, pause ? "deployment.pause" : "deployment.resume");
}

void srv_api_deployment_pause(void *app, struct srv_request *req)
{
    pause_or_resume(app, req, true);
}

void srv_api_deployment_resume(void *app, struct srv_request *req)
{
    pause_or_resume(app, req, false);
}

/* {"phase": N} (1-based; default: the current phase). */
void srv_api_deployment_approve(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    json_t *body = NULL;
    uint64_t phase = 0;
    struct ot_diag d = {0};
    static const char *const keys[] = {"phase", NULL};
    if (srv_req_body(req) && srv_req_body(req)->len > 0) {
        if (!(body = srv_req_json(req)))
            return;
        enum ot_err err = ot_json_only_keys(body, keys, "approval", &d);
        if (!err)
            err = ot_json_get_u64(body, "phase", false, SRV_PHASES_MAX, "approval", &phase, &d);
        json_decref(body);
        if (err)
            return srv_reply_error(req, err, "%s", d.msg);
    }
    struct srv_rollout ro = {0};
    if (!active_rollout(app, req, &ro))
        return;
    int64_t id = ro.deployment_id;
    int64_t k = phase ? (int64_t)phase - 1 : ro.phase;
    bool past = k < ro.phase || (k == ro.phase && ro.phase_started_at);
    srv_rollout_release(&ro);
    if (past)
        return srv_reply_status(req, 409, "conflict", "phase %lld has started already",
                                (long long)k + 1);
    size_t count = 0;
    enum ot_err err = srv_store_rollout_approve(app->store, id, k, srv_req_principal(req),
                                                app->now(), &count, &d);
    if (err == OT_ERR_EXISTS)
        return srv_reply_status(req, 409, "conflict", "%s approved phase %lld already",
                                srv_req_principal(req), (long long)k + 1);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char msg[SRV_ROLLOUT_REASON_MAX];
    snprintf(msg, sizeof(msg), "phase %lld approved by %s (%zu approval(s))", (long long)k + 1,
             srv_req_principal(req), count);
    if (srv_store_rollout_event_add(app->store, id, app->now(), "approve", msg, &d) != OT_OK)
        ot_log(OT_LOG_ERR, "%s", d.msg);
    srv_rollouts_kick(app->rollouts, 0, 0);
    reply_rollout(app, req, id, "deployment.approve");
}

/* The engine's decisions, oldest first (?after=ID&limit=N). */
void srv_api_deployment_decisions(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, SRV_LIST_MAX, &limit, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    int64_t id = srv_param_id(req, "id");
    if (!id)
        return srv_reply_error(req, OT_ERR_FORMAT, "deployment id must be a positive number");
    struct srv_rollout_event *ev = NULL;
    size_t n = 0;
    err = srv_store_rollout_events(app->store, id, (int64_t)after, (size_t)limit, &ev, &n, &d);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "deployment %lld has no rollout", (long long)id);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:I, s:I, s:s, s:s}", "id", (json_int_t)ev[i].id,
                                           "at", (json_int_t)ev[i].at, "kind", ev[i].kind,
                                           "message", ev[i].message));
    int64_t next = n ? ev[n - 1].id : (int64_t)after;
    srv_rollout_event_list_free(ev, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "decisions", a, "next_after", (json_int_t)next));
}

/* Appends s as one CSV field (RFC 4180: quoted when it holds a comma, quote or line break). */
static enum ot_err csv_field(struct ot_buf *b, const char *s, bool last)
{
    enum ot_err err = OT_OK;
    if (strpbrk(s, ",\"\r\n")) {
        err = ot_buf_append_str(b, "\"");
        for (const char *p = s; !err && *p; p++)
            err = *p == '"' ? ot_buf_append_str(b, "\"\"") : ot_buf_append(b, p, 1);
        if (!err)
            err = ot_buf_append_str(b, "\"");
    } else {
        err = ot_buf_append_str(b, s);
    }
    return err ? err : ot_buf_append_str(b, last ? "\r\n" : ",");
}

#define EXPORT_MAX ((size_t)64 * 1024 * 1024) /* 100,000 rows with their messages */

/* Every device row of a deployment at once, as CSV (default) or JSON (?format=csv|json). */
void srv_api_deployment_export(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    const char *format = srv_req_query(req, "format");
    bool json = format && strcmp(format, "json") == 0;
    if (format && !json && strcmp(format, "csv") != 0)
        return srv_reply_error(req, OT_ERR_FORMAT, "query 'format' must be csv or json");
    struct srv_deployment dep = {0};
    if (!deployment_param(app, req, &dep))
        return;
    int64_t id = dep.id;
    srv_deployment_release(&dep);
    struct ot_buf b;
    ot_buf_init(&b, EXPORT_MAX);
    json_t *rows = json ? json_array() : NULL;
    struct ot_diag d = {0};
    enum ot_err err = json ? (rows ? OT_OK : OT_ERR_NOMEM)
                           : ot_buf_append_str(&b, "device_id,status,progress,release_order,"
                                                   "updated_at,message\r\n");
    int64_t after = 0;
    for (int page = 0; !err && page < 100000; page++) {
        struct srv_dd *list = NULL;
        size_t n = 0;
        err = srv_store_deployment_devices(app->store, id, after, SRV_LIST_MAX, &list, &n, &d);
        for (size_t i = 0; !err && i < n; i++) {
            if (json) {
                err = json_array_append_new(rows, dd_json(&list[i])) ? OT_ERR_NOMEM : OT_OK;
                continue;
            }
            char num[4][24];
            snprintf(num[0], sizeof(num[0]), "%lld", (long long)list[i].device_id);
            snprintf(num[1], sizeof(num[1]), "%d", list[i].progress);
            snprintf(num[2], sizeof(num[2]), "%lld", (long long)list[i].seq);
            snprintf(num[3], sizeof(num[3]), "%lld", (long long)list[i].updated_at);
            const char *fields[] = {num[0], dd_name(list[i].status), num[1],
                                    list[i].seq ? num[2] : "", num[3],
                                    list[i].message ? list[i].message : ""};
            for (size_t k = 0; !err && k < OT_ARRAY_SIZE(fields); k++)
                err = csv_field(&b, fields[k], k + 1 == OT_ARRAY_SIZE(fields));
        }
        if (n)
            after = list[n - 1].device_id;
        srv_dd_list_free(list, n);
        if (!n || n < SRV_LIST_MAX)
            break;
    }
    if (err) {
        ot_buf_release(&b);
        json_decref(rows);
        return srv_reply_error(req, err, "%s", d.msg[0] ? d.msg : "the export is too large");
    }
    if (json) {
        ot_buf_release(&b);
        return srv_reply_json(req, 200, json_pack("{s:I, s:o}", "deployment_id", (json_int_t)id,
                                                  "devices", rows));
    }
    srv_reply_text(req, 200, "text/csv; charset=utf-8", b.data, b.len);
    ot_buf_release(&b);
}

void srv_api_deployment_cancel(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    int64_t id = srv_param_id(req, "id");
    if (!id)
        return srv_reply_error(req, OT_ERR_FORMAT, "deployment id must be a positive number");
    struct ot_diag d = {0};
    enum ot_err err = srv_store_deployment_cancel(app->store, id, app->now(), &d);
    if (err == OT_ERR_NOENT)
        return srv_reply_error(req, err, "no deployment %lld", (long long)id);
    if (err == OT_ERR_EXISTS)
        return srv_reply_status(req, 409, "conflict", "deployment %lld is not active", (long long)id);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_fleet_bump(app->fleet);
    char why[SRV_ROLLOUT_REASON_MAX];
    snprintf(why, sizeof(why), "cancelled by %s", srv_req_principal(req));
    rollout_set(app, id, SRV_ROLLOUT_ABORTED, "cancel", why);
    char object[32];
    snprintf(object, sizeof(object), "deployment:%lld", (long long)id);
    srv_audit(app, req, "deployment.cancel", object, NULL);
    struct srv_deployment dep = {0};
    err = srv_store_deployment_get(app->store, id, &dep, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *out = deployment_json(&dep);
    srv_deployment_release(&dep);
    srv_reply_json(req, 200, out);
}
