/* Staged rollout policies (otterd's rollout.c): parsing with its defaults and every refusal,
 * the normalized JSON parsing back to the same policy, phase bounds for many fleet sizes, and the
 * release order (a permutation, the same for the same seed). The engine itself is tested end to
 * end (tests/e2e/test_rollout.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "otter/json.h"
#include "rollout.h"

static json_t *doc(const char *text)
{
    json_t *j = NULL;
    assert_int_equal(ot_json_parse((const uint8_t *)text, strlen(text), &j, NULL), OT_OK);
    return j;
}

static enum ot_err parse(const char *text, struct srv_policy *p, struct ot_diag *d)
{
    json_t *j = doc(text);
    enum ot_err err = srv_policy_parse(j, 42, p, d);
    json_decref(j);
    return err;
}

static void assert_policy_equal(const struct srv_policy *p, const struct srv_policy *q)
{
    assert_int_equal(p->nphases, q->nphases);
    for (size_t k = 0; k < p->nphases; k++) {
        assert_string_equal(p->phases[k].name, q->phases[k].name);
        assert_int_equal(p->phases[k].size, q->phases[k].size);
        assert_int_equal(p->phases[k].percent, q->phases[k].percent);
        assert_int_equal(p->phases[k].approvals, q->phases[k].approvals);
        assert_int_equal(p->phases[k].soak_s, q->phases[k].soak_s);
    }
    assert_int_equal(p->order_by_tags, q->order_by_tags);
    assert_int_equal(p->seed, q->seed);
    assert_int_equal(p->norder_tags, q->norder_tags);
    for (size_t i = 0; i < p->norder_tags; i++)
        assert_string_equal(p->order_tags[i], q->order_tags[i]);
    assert_int_equal(p->success_threshold, q->success_threshold);
    assert_int_equal(p->min_finished, q->min_finished);
    assert_int_equal(p->soak_s, q->soak_s);
    assert_int_equal(p->failure_threshold, q->failure_threshold);
    assert_int_equal(p->min_executed, q->min_executed);
    assert_int_equal(p->abort_on_failure, q->abort_on_failure);
    assert_int_equal(p->max_per_minute, q->max_per_minute);
    assert_true(p->ramp_factor == q->ramp_factor);
    assert_int_equal(p->max_in_progress, q->max_in_progress);
    assert_int_equal(p->start_at, q->start_at);
    assert_int_equal(p->end_at, q->end_at);
    assert_int_equal(p->cancel_at_end, q->cancel_at_end);
    assert_int_equal(p->device_timeout_s, q->device_timeout_s);
    assert_int_equal(p->type, q->type);
    assert_int_equal(p->retries, q->retries);
    assert_int_equal(p->has_window, q->has_window);
    assert_string_equal(p->window_cron, q->window_cron);
    assert_int_equal(p->window_s, q->window_s);
    assert_string_equal(p->window_tz, q->window_tz);
}

static void test_defaults(void **state)
{
    (void)state;
    struct srv_policy p;
    struct ot_diag d = {0};
    assert_int_equal(parse("{}", &p, &d), OT_OK);
    /* the stored form of the defaults parses back */
    json_t *j = srv_policy_json(&p);
    struct srv_policy q;
    assert_int_equal(srv_policy_parse(j, 1, &q, &d), OT_OK);
    json_decref(j);
    assert_policy_equal(&p, &q);
    assert_int_equal(p.nphases, 1);
    assert_true(p.phases[0].percent);
    assert_int_equal(p.phases[0].size, 100);
    assert_int_equal(p.seed, 42);
    assert_int_equal(p.success_threshold, 100);
    assert_int_equal(p.failure_threshold, 0);
    assert_int_equal(p.min_executed, 1);
    assert_false(p.abort_on_failure);
    assert_int_equal(p.max_per_minute, 0);
    assert_int_equal(p.start_at, 0);
    assert_int_equal(p.type, OT_WIRE_TYPE_FORCED);
    assert_int_equal(p.retries, 0);
    assert_false(p.has_window);
    assert_int_equal(srv_policy_bound(&p, 0, 1000), 1000);
    /* a window without a time zone is in UTC; download_only parses */
    assert_int_equal(parse("{\"type\":\"download_only\",\"maintenance_window\":"
                           "{\"cron\":\"0 2 * * *\",\"duration\":3600}}", &p, &d), OT_OK);
    assert_int_equal(p.type, OT_WIRE_TYPE_DOWNLOAD_ONLY);
    assert_string_equal(p.window_tz, "UTC");
    assert_int_equal(parse("{\"maintenance_window\":null}", &p, &d), OT_OK);
    assert_false(p.has_window);
}

static void test_full_policy_and_round_trip(void **state)
{
    (void)state;
    struct srv_policy p, q;
    struct ot_diag d = {0};
    assert_int_equal(
        parse("{\"phases\":[{\"name\":\"canary\",\"size\":5,\"soak\":\"10m\"},"
              "{\"size\":\"10%\",\"approvals\":2},{\"name\":\"rest\",\"size\":\"100%\"}],"
              "\"order\":\"tags\",\"order_tags\":[\"lab\",\"eu\"],\"seed\":7,"
              "\"success_threshold\":95,\"min_finished\":3,\"soak\":90,\"failure_threshold\":20,"
              "\"min_executed\":4,\"on_failure\":\"abort\",\"max_per_minute\":10,"
              "\"ramp_factor\":1.5,\"max_in_progress\":50,\"start_at\":\"2026-11-23T02:00:00Z\","
              "\"end_at\":1795500000,\"on_end\":\"cancel\",\"approvals\":1,"
              "\"device_timeout\":\"2h\",\"type\":\"soft\",\"retries\":3,"
              "\"maintenance_window\":{\"cron\":\"30 1 * * sat,sun\",\"duration\":\"4h\","
              "\"timezone\":\"Europe/Berlin\"}}",
              &p, &d),
        OT_OK);
    assert_int_equal(p.nphases, 3);
    assert_string_equal(p.phases[0].name, "canary");
    assert_int_equal(p.phases[0].soak_s, 600);
    assert_int_equal(p.phases[0].approvals, 1); /* the policy's approvals gate phase 1 */
    assert_string_equal(p.phases[1].name, "wave-1");
    assert_int_equal(p.phases[1].approvals, 2);
    assert_int_equal(p.phases[1].soak_s, -1);
    assert_true(p.order_by_tags);
    assert_int_equal(p.norder_tags, 2);
    assert_int_equal(p.start_at, 1795399200);
    assert_int_equal(p.device_timeout_s, 7200);
    assert_true(p.abort_on_failure && p.cancel_at_end);
    assert_int_equal(p.type, OT_WIRE_TYPE_SOFT);
    assert_int_equal(p.retries, 3);
    assert_true(p.has_window);
    assert_string_equal(p.window_cron, "30 1 * * sat,sun");
    assert_int_equal(p.window_s, 4 * 3600);
    assert_string_equal(p.window_tz, "Europe/Berlin");
    /* what is stored parses back to the same policy */
    json_t *j = srv_policy_json(&p);
    assert_non_null(j);
    assert_int_equal(srv_policy_parse(j, 1, &q, &d), OT_OK);
    json_decref(j);
    assert_policy_equal(&p, &q);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *doc, *words;
    } bad[] = {
        {"[]", "must be an object"},
        {"{\"phases\":[]}", "phases"},
        {"{\"phases\":{}}", "phases"},
        {"{\"phases\":[{}]}", "size"},
        {"{\"phases\":[{\"size\":0}]}", "size"},
        {"{\"phases\":[{\"size\":\"0%\"}]}", "size"},
        {"{\"phases\":[{\"size\":\"101%\"}]}", "size"},
        {"{\"phases\":[{\"size\":\"ten\"}]}", "size"},
        {"{\"phases\":[{\"size\":1,\"color\":\"red\"}]}", "color"},
        {"{\"phases\":[{\"size\":1,\"name\":\"\"}]}", "name"},
        {"{\"surprise\":true}", "surprise"},
        {"{\"order\":\"alphabetical\"}", "order"},
        {"{\"order\":\"tags\"}", "order_tags"},
        {"{\"success_threshold\":101}", "success_threshold"},
        {"{\"failure_threshold\":-1}", "failure_threshold"},
        {"{\"on_failure\":\"explode\"}", "on_failure"},
        {"{\"ramp_factor\":2}", "max_per_minute"},
        {"{\"max_per_minute\":5,\"ramp_factor\":0.5}", "ramp_factor"},
        {"{\"start_at\":\"tomorrow\"}", "start_at"},
        {"{\"start_at\":\"2026-11-23T02:00:00+02:00\"}", "start_at"},
        {"{\"start_at\":100,\"end_at\":50}", "end_at"},
        {"{\"soak\":\"forever\"}", "soak"},
        {"{\"device_timeout\":-5}", "device_timeout"},
        {"{\"approvals\":17}", "approvals"},
        {"{\"type\":\"later\"}", "type"},
        {"{\"type\":1}", "type"},
        {"{\"retries\":11}", "retries"},
        {"{\"maintenance_window\":\"0 2 * * *\"}", "maintenance_window"},
        {"{\"maintenance_window\":{\"duration\":60}}", "cron"},
        {"{\"maintenance_window\":{\"cron\":\"0 2 * * *\"}}", "duration"},
        {"{\"maintenance_window\":{\"cron\":\"0 2 * *\",\"duration\":60}}", "cron"},
        {"{\"maintenance_window\":{\"cron\":\"0 2 * * *\",\"duration\":30}}", "duration"},
        {"{\"maintenance_window\":{\"cron\":\"0 2 * * *\",\"duration\":60,"
         "\"timezone\":\"Mars/Olympus\"}}", "Mars"},
        {"{\"maintenance_window\":{\"cron\":\"0 2 * * *\",\"duration\":60,\"x\":1}}", "x"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct srv_policy p;
        struct ot_diag d = {0};
        assert_int_equal(parse(bad[i].doc, &p, &d), OT_ERR_FORMAT);
        if (!strstr(d.msg, bad[i].words))
            fail_msg("%s: '%s' does not name %s", bad[i].doc, d.msg, bad[i].words);
    }
}

static void test_bounds(void **state)
{
    (void)state;
    struct srv_policy p;
    struct ot_diag d = {0};
    assert_int_equal(parse("{\"phases\":[{\"size\":5},{\"size\":\"10%\"},{\"size\":\"50%\"},"
                           "{\"size\":1}]}",
                           &p, &d),
                     OT_OK);
    /* 100 devices: 5, +10, +50, the rest */
    assert_int_equal(srv_policy_bound(&p, 0, 100), 5);
    assert_int_equal(srv_policy_bound(&p, 1, 100), 15);
    assert_int_equal(srv_policy_bound(&p, 2, 100), 65);
    assert_int_equal(srv_policy_bound(&p, 3, 100), 100);
    /* a percentage rounds up and every phase has a device while there are any */
    assert_int_equal(srv_policy_bound(&p, 1, 7), 6);
    for (int64_t n = 0; n <= 300; n++) {
        int64_t last = 0;
        for (size_t k = 0; k < p.nphases; k++) {
            int64_t b = srv_policy_bound(&p, k, n);
            assert_true(b >= last && b <= n);
            last = b;
        }
        assert_int_equal(last, n);
    }
}

static void test_order_is_a_seeded_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    static int64_t ids[N], a[N], b[N], c[N];
    for (size_t i = 0; i < N; i++)
        ids[i] = (int64_t)(i * 7 + 3);
    struct srv_policy p;
    struct ot_diag d = {0};
    assert_int_equal(parse("{\"seed\":5}", &p, &d), OT_OK);
    assert_int_equal(srv_policy_order(&p, NULL, ids, N, a, &d), OT_OK);
    assert_int_equal(srv_policy_order(&p, NULL, ids, N, b, &d), OT_OK);
    assert_memory_equal(a, b, sizeof(a));
    static bool seen[N + 1];
    size_t in_place = 0;
    for (size_t i = 0; i < N; i++) {
        assert_true(a[i] >= 1 && a[i] <= N && !seen[a[i]]);
        seen[a[i]] = true;
        in_place += a[i] == (int64_t)i + 1;
    }
    assert_true(in_place < 20); /* shuffled, not the id order */
    assert_int_equal(parse("{\"seed\":6}", &p, &d), OT_OK);
    assert_int_equal(srv_policy_order(&p, NULL, ids, N, c, &d), OT_OK);
    assert_memory_not_equal(a, c, sizeof(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_policy_and_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_order_is_a_seeded_permutation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
