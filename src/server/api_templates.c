/* Deployment templates and release channels: continuous deployment (docs/rollouts.md,
 * "Continuous deployment").
 *
 *   POST   /api/v1/templates                 {"name","channel","target":{...},"policy":{...}}
 *   GET    /api/v1/templates[?channel=]      list
 *   GET    /api/v1/templates/{id}
 *   DELETE /api/v1/templates/{id}
 *   POST   /api/v1/templates/{id}/enable | disable
 *
 * An artifact uploaded with ?channel=beta creates one deployment per enabled template of "beta",
 * named "<template>: <artifact> <version>", with the template's target and policy. A policy with
 * "approvals" makes such a deployment wait in waiting_approval until enough operators approve. */
#include "app.h"
#include "groups.h"
#include "otter/json.h"
#include "otter/log.h"
#include "rollout.h"

#define TEMPLATE_PAGE_MAX 1000

static json_t *template_json(const struct srv_template *t)
{
    json_t *body = srv_json_text(t->body);
    json_t *o = json_pack("{s:I, s:s, s:s, s:O, s:O, s:b, s:I, s:s}", "id", (json_int_t)t->id,
                          "name", t->name, "channel", t->channel, "target",
                          json_object_get(body, "target"), "policy",
                          json_object_get(body, "policy") ? json_object_get(body, "policy")
                                                          : json_null(),
                          "enabled", t->enabled, "created_at", (json_int_t)t->created_at,
                          "created_by", t->created_by);
    json_decref(body);
    return o;
}

/* The deployment body a template makes for an artifact. */
static json_t *deployment_body(const struct srv_template *t, const struct srv_artifact *a)
{
    char name[SRV_DEPLOYMENT_NAME_MAX];
    snprintf(name, sizeof(name), "%s: %s %s", t->name, a->name, a->version);
    json_t *body = srv_json_text(t->body);
    json_t *out = json_pack("{s:s, s:I}", "name", name, "artifact_id", (json_int_t)a->id);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(body, "target"), k, v)
        json_object_set(out, k, v);
    if (json_object_get(body, "policy"))
        json_object_set(out, "policy", json_object_get(body, "policy"));
    json_decref(body);
    return out;
}

void srv_api_template_create(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    json_t *body = srv_req_json(req);
    if (!body)
        return;
    static const char *const keys[] = {"name", "channel", "target", "policy", "enabled", NULL};
    static const char *const target_keys[] = {"devices", "tag", "query", "cap", "continuous",
                                              NULL};
    const char *name = NULL, *channel = NULL;
    struct ot_diag d = {0};
    enum ot_err err = ot_json_only_keys(body, keys, "template", &d);
    if (!err)
        err = ot_json_get_str(body, "name", true, SRV_DEPLOYMENT_NAME_MAX - 1, "template", &name,
                              &d);
    if (!err && !name[0])
        err = ot_diag_set(&d, OT_ERR_FORMAT, "template: 'name' must not be empty");
    if (!err)
        err = ot_json_get_str(body, "channel", true, 63, "template", &channel, &d);
    if (!err && !srv_store_name_valid(channel))
        err = ot_diag_set(&d, OT_ERR_FORMAT,
                          "template: 'channel' must be 1..63 characters of [A-Za-z0-9._-]");
    const json_t *target = json_object_get(body, "target");
    if (!err && !json_is_object(target))
        err = ot_diag_set(&d, OT_ERR_FORMAT, "template: 'target' must be an object: "
                          "{\"tag\":...}, {\"query\":...} or {\"devices\":[...]}");
    if (!err)
        err = ot_json_only_keys(target, target_keys, "template: target", &d);
    const json_t *en = json_object_get(body, "enabled");
    if (!err && en && !json_is_boolean(en))
        err = ot_diag_set(&d, OT_ERR_FORMAT, "template: 'enabled' must be true or false");
    /* what it will create must be valid now: check it as a deployment would be, without one */
    const json_t *policy = json_object_get(body, "policy");
    if (!err && policy) {
        struct srv_policy p;
        if ((err = srv_policy_parse(policy, 0, &p, &d)))
            ot_diag_prefix(&d, err, "template");
    }
    struct srv_group_target gt = {0};
    if (!err && json_object_get(target, "query"))
        err = srv_group_target_parse(target, &gt, &d);
    srv_group_target_release(&gt);
    json_t *stored = err ? NULL : json_pack("{s:O, s:O*}", "target", target, "policy", policy);
    struct srv_template t = {
        .name = (char *)name,
        .channel = (char *)channel,
        .body = stored ? json_dumps(stored, JSON_COMPACT | JSON_SORT_KEYS) : NULL,
        .enabled = !en || json_is_true(en),
        .created_at = app->now(),
        .created_by = (char *)srv_req_principal(req),
    };
    json_decref(stored);
    if (!err && !t.body)
        err = ot_diag_set(&d, OT_ERR_NOMEM, "out of memory");
    if (!err)
        err = srv_store_template_create(app->store, &t, &d);
    json_t *out = err ? NULL : template_json(&t);
    free(t.body);
    json_decref(body);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    char object[32];
    snprintf(object, sizeof(object), "template:%lld", (long long)t.id);
    srv_audit(app, req, "template.create", object, json_deep_copy(out));
    srv_reply_json(req, 201, out);
}

void srv_api_template_list(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    uint64_t after = 0, limit = 100;
    struct ot_diag d = {0};
    enum ot_err err = srv_query_u64(req, "after", 0, INT64_MAX, &after, &d);
    if (!err)
        err = srv_query_u64(req, "limit", 1, TEMPLATE_PAGE_MAX, &limit, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    struct srv_template *list = NULL;
    size_t n = 0;
    err = srv_store_template_list(app->store, srv_req_query(req, "channel"), (int64_t)after,
                                  (size_t)limit, &list, &n, &d);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, template_json(&list[i]));
    int64_t next = n ? list[n - 1].id : (int64_t)after;
    srv_template_list_free(list, n);
    srv_reply_json(req, 200, json_pack("{s:o, s:I}", "templates", a, "next_after", (json_int_t)next));
}

static bool template_param(struct srv_app *app, struct srv_request *req, struct srv_template *ret)
{
    int64_t id = srv_param_id(req, "id");
    struct ot_diag d = {0};
    enum ot_err err = id ? srv_store_template_get(app->store, id, ret, &d) : OT_ERR_NOENT;
    if (err == OT_ERR_NOENT)
        srv_reply_error(req, err, "no template %lld", (long long)id);
    else if (err)
        srv_reply_error(req, err, "%s", d.msg);
    return !err;
}

void srv_api_template_show(void *app_, struct srv_request *req)
{
    struct srv_template t = {0};
    if (!template_param(app_, req, &t))
        return;
    json_t *out = template_json(&t);
    srv_template_release(&t);
    srv_reply_json(req, 200, out);
}

void srv_api_template_delete(void *app_, struct srv_request *req)
{
    struct srv_app *app = app_;
    struct srv_template t = {0};
    if (!template_param(app, req, &t))
        return;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_template_delete(app->store, t.id, &d);
    char object[32];
    snprintf(object, sizeof(object), "template:%lld", (long long)t.id);
    srv_template_release(&t);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_audit(app, req, "template.delete", object, NULL);
    srv_reply_empty(req, 204);
}

static void set_enabled(struct srv_app *app, struct srv_request *req, bool on)
{
    struct srv_template t = {0};
    if (!template_param(app, req, &t))
        return;
    struct ot_diag d = {0};
    enum ot_err err = srv_store_template_set_enabled(app->store, t.id, on, &d);
    t.enabled = on;
    json_t *out = err ? NULL : template_json(&t);
    char object[32];
    snprintf(object, sizeof(object), "template:%lld", (long long)t.id);
    srv_template_release(&t);
    if (err)
        return srv_reply_error(req, err, "%s", d.msg);
    srv_audit(app, req, on ? "template.enable" : "template.disable", object, NULL);
    srv_reply_json(req, 200, out);
}

void srv_api_template_enable(void *app, struct srv_request *req) { set_enabled(app, req, true); }
void srv_api_template_disable(void *app, struct srv_request *req) { set_enabled(app, req, false); }

json_t *srv_templates_fire(struct srv_app *app, const struct srv_artifact *a)
{
    json_t *out = json_array();
    int64_t after = 0;
    for (int page = 0; page < 100; page++) { /* 100,000 templates per channel at most */
        struct srv_template *list = NULL;
        size_t n = 0;
        struct ot_diag d = {0};
        if (srv_store_template_list(app->store, a->channel, after, SRV_LIST_MAX, &list, &n, &d)) {
            ot_log(OT_LOG_ERR, "templates of channel %s: %s", a->channel, d.msg);
            json_array_append_new(out, json_pack("{s:s}", "error", d.msg));
            break;
        }
        for (size_t i = 0; i < n; i++) {
            char principal[SRV_AUDIT_FIELD_MAX], object[32];
            snprintf(principal, sizeof(principal), "template:%lld (%s)", (long long)list[i].id,
                     list[i].name);
            json_t *body = deployment_body(&list[i], a);
            int64_t id = 0;
            struct ot_diag dd = {0};
            enum ot_err err = body ? srv_deployment_create_json(app, body, principal, &id, &dd)
                                   : ot_diag_set(&dd, OT_ERR_NOMEM, "out of memory");
            json_decref(body);
            json_t *r = err ? json_pack("{s:I, s:s}", "template", (json_int_t)list[i].id, "error",
                                        dd.msg)
                            : json_pack("{s:I, s:I}", "template", (json_int_t)list[i].id,
                                        "deployment_id", (json_int_t)id);
            snprintf(object, sizeof(object), err ? "artifact:%lld" : "deployment:%lld",
                     (long long)(err ? a->id : id));
            struct ot_diag ad = {0};
            char *detail = r ? json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
            if (srv_store_audit_add(app->store, principal,
                                    err ? "template.failed" : "deployment.create", object, detail,
                                    &ad) != OT_OK)
                ot_log(OT_LOG_ERR, "audit log write failed: %s", ad.msg);
            free(detail);
            if (err)
                ot_log(OT_LOG_WARNING, "template %lld could not deploy artifact %lld: %s",
                       (long long)list[i].id, (long long)a->id, dd.msg);
            else
                ot_log(OT_LOG_NOTICE, "template %lld deployed artifact %lld: deployment %lld",
                       (long long)list[i].id, (long long)a->id, (long long)id);
            json_array_append_new(out, r);
        }
        after = n ? list[n - 1].id : after;
        srv_template_list_free(list, n);
        if (n < SRV_LIST_MAX)
            break;
    }
    return out;
}
