/* Staged rollouts (docs/rollouts.md): a deployment created with a policy releases its devices in
 * phases (a canary, then waves), each by count or percentage of the devices, in a seeded random
 * order or by tag. A phase advances when its success rate reaches a threshold over enough
 * finished devices, after an optional soak time; the rollout pauses or aborts when the failure
 * rate passes a threshold. Releases are paced (devices per minute with an exponential ramp, a cap
 * on devices in progress), bounded by a start and an end time, and phases can wait for approvals
 * by distinct operators. Devices that do not finish within a timeout count as failed.
 *
 * How it stays cheap at scale: every row of the deployment has its place in the release order
 * (seq); the rollout only moves one number, `released`. A device's check-in compares its row's seq
 * (cached with its next action) with that number, held in memory here: releasing devices writes
 * one row, not one per device, and adds no database work per check-in. The engine thread looks at
 * each active rollout once per tick (counts over the current phase's rows through an index) and
 * records every decision with its reason (srv_store_rollout_event_add). */
#ifndef OTTERD_ROLLOUT_H
#define OTTERD_ROLLOUT_H

#include <jansson.h>

#include "app.h"
#include "otter/wire.h"
#include "window.h"

#define SRV_PHASES_MAX 32
#define SRV_PHASE_NAME_MAX 64
#define SRV_ORDER_TAGS_MAX 16
#define SRV_RETRIES_MAX 10

struct srv_phase {
    char name[SRV_PHASE_NAME_MAX];
    uint64_t size;              /* devices, or percent when percent */
    bool percent;
    uint32_t approvals;         /* distinct approvers needed before it starts */
    int64_t soak_s;             /* -1: the policy's */
};

struct srv_policy {
    struct srv_phase phases[SRV_PHASES_MAX];
    size_t nphases;
    bool order_by_tags;         /* else seeded random */
    uint64_t seed;
    char order_tags[SRV_ORDER_TAGS_MAX][SRV_TAG_MAX];
    size_t norder_tags;
    uint32_t success_threshold; /* percent of a phase's finished devices that must succeed */
    uint64_t min_finished;      /* finished devices a phase needs before it is judged; 0: all */
    int64_t soak_s;
    uint32_t failure_threshold; /* percent failed of finished (0: off) */
    uint64_t min_executed;      /* finished devices before the failure rate counts */
    bool abort_on_failure;      /* else pause */
    uint64_t max_per_minute;    /* devices released per minute (0: no limit) */
    double ramp_factor;         /* the rate is multiplied by this every minute (>= 1) */
    uint64_t max_in_progress;   /* released devices not final yet (0: no limit) */
    int64_t start_at, end_at;   /* Unix seconds, 0: none */
    bool cancel_at_end;         /* else stop releasing */
    uint64_t device_timeout_s;  /* a released device not final after this fails (0: never) */
    enum ot_wire_deploy_type type; /* forced, soft (the device may postpone), download only */
    uint32_t retries;           /* a device that fails is offered the deployment again this often */
    bool has_window;            /* installs only inside the maintenance window: */
    char window_cron[SRV_WINDOW_CRON_MAX]; /* its starts (5-field cron, in window_tz) */
    int64_t window_s;           /* its length */
    char window_tz[SRV_WINDOW_TZ_NAME_MAX];
};

/* Parses and checks a policy (the "policy" object of POST /api/v1/deployments); OT_ERR_FORMAT
 * with the offending key in the message. seed_default is used when the policy has none. */
enum ot_err srv_policy_parse(const json_t *j, uint64_t seed_default, struct srv_policy *ret,
                             struct ot_diag *d) OT_MUST_CHECK;
/* The policy with every default spelled out: what is stored and shown. */
json_t *srv_policy_json(const struct srv_policy *p);
/* The last seq of phase k for n devices (phases cover 1..n; the last one takes the rest). */
int64_t srv_policy_bound(const struct srv_policy *p, size_t k, int64_t n);
/* The release order: seqs[i] for device ids[i], a permutation of 1..n (seeded shuffle, or by the
 * first of order_tags each device has, shuffled within). */
enum ot_err srv_policy_order(const struct srv_policy *p, struct srv_app *app, const int64_t *ids,
                             size_t n, int64_t *seqs, struct ot_diag *d) OT_MUST_CHECK;

const char *srv_rollout_state_name(enum srv_rollout_state s);

struct srv_rollouts;

/* Loads the active rollouts; with engine, starts the thread deciding every tick_ms (otherwise
 * only refreshes what check-ins need, for an instance that leaves decisions to another one). */
enum ot_err srv_rollouts_start(struct srv_app *app, unsigned tick_ms, bool engine,
                               struct srv_rollouts **ret, struct ot_diag *d) OT_MUST_CHECK;
void srv_rollouts_stop(struct srv_rollouts *r);
/* Check-in: may the row at seq of this deployment start? seq 0 (no rollout): yes. */
bool srv_rollouts_released(struct srv_rollouts *r, int64_t deployment_id, int64_t seq);
/* What the devices of a deployment are told with their work: the policy's type (FORCED without a
 * rollout) and whether the install is held now (the policy's maintenance window was closed at the
 * engine's last look; never held without a window). Cheap: memory only, callable per check-in. */
void srv_rollouts_action(struct srv_rollouts *r, int64_t deployment_id,
                         enum ot_wire_deploy_type *ret_type, bool *ret_held);
/* Whether the deployment's policy has a maintenance window. */
bool srv_rollouts_has_window(struct srv_rollouts *r, int64_t deployment_id);
/* The policy's retries per device (0 without a rollout): pass to srv_store_dd_report_retry. */
uint32_t srv_rollouts_retries(struct srv_rollouts *r, int64_t deployment_id);
/* Something changed (a rollout created, paused, resumed, approved): decide now, not at the next
 * tick, and take the new released count. */
void srv_rollouts_kick(struct srv_rollouts *r, int64_t deployment_id, int64_t released);

/* The rollout as shown by GET /api/v1/deployments/{id}: state, phase, released, per-phase counts
 * and approvals, the policy. NULL when the deployment has no rollout (d says why on error). */
json_t *srv_rollout_report(struct srv_app *app, int64_t deployment_id, size_t ndevices,
                           struct ot_diag *d);

#endif
