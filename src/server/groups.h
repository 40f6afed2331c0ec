/* Dynamic groups (docs/rollouts.md, "Dynamic groups"; the filter language is query.h): a
 * deployment whose target is a query takes every accepted device that matches it when it is
 * created and, while it is not cancelled, every device that comes to match it later (continuous
 * membership), up to an optional cap.
 *
 * How late joiners are found without scanning the fleet: whatever can change what a query sees of
 * a device (a check-in that reports a new type or new versions, an inventory update, tags set by
 * an operator, a device accepted) calls srv_groups_device_changed, which matches that one device
 * against the continuous deployments held here in memory, parsed once. A fleet without continuous
 * deployments pays one mutex lock and an empty loop per change, nothing per plain check-in. */
#ifndef OTTERD_GROUPS_H
#define OTTERD_GROUPS_H

#include <jansson.h>

#include "app.h"
#include "query.h"

struct srv_groups;

/* Loads the continuous deployments that are not cancelled (active or finished: a finished one
 * becomes active again when a device joins). */
enum ot_err srv_groups_start(struct srv_app *app, struct srv_groups **ret, struct ot_diag *d)
    OT_MUST_CHECK;
void srv_groups_stop(struct srv_groups *g);

/* A deployment target {"query": "...", "cap": N, "continuous": true}: its parsed parts. cap 0:
 * none. OT_ERR_FORMAT naming the field otherwise. */
struct srv_group_target {
    struct srv_query *query;          /* owned */
    uint64_t cap;
    bool continuous;
};
enum ot_err srv_group_target_parse(const json_t *target, struct srv_group_target *ret,
                                   struct ot_diag *d) OT_MUST_CHECK;
void srv_group_target_release(struct srv_group_target *t);

/* The ids of the accepted devices matching q, ascending, at most cap (0: any); one pass over the
 * registry in pages. *ret malloc'd (NULL when none). */
enum ot_err srv_group_members(struct srv_app *app, const struct srv_query *q, uint64_t cap,
                              int64_t **ret, size_t *ret_n, struct ot_diag *d) OT_MUST_CHECK;

/* A continuous deployment was created (target as stored): start matching devices against it. */
enum ot_err srv_groups_add(struct srv_groups *g, int64_t deployment_id, const char *target,
                           const char *device_types, uint64_t ndevices, struct ot_diag *d)
    OT_MUST_CHECK;
/* Something a query may read changed for this device: add it to every continuous deployment it
 * now matches (skipped when the artifact is not for its type). Errors are logged. */
void srv_groups_device_changed(struct srv_groups *g, int64_t device_id);

#endif
