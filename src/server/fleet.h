/* The device cache: what the device API needs to know about a device on every request (is it
 * accepted, what did it report as installed, what is its next action) kept in memory, so that a
 * check-in costs no database access in the steady state, and no database write ever: last-seen
 * times are collected here and written in one batch every flush interval.
 *
 * Consistency: whoever changes a device's status calls srv_fleet_changed, which drops it here
 * (a rejected or decommissioned device is refused by its very next request) and writes a new
 * random "devices generation" into the store; the flusher thread polls it every second, so every
 * other otterd instance sharing a PostgreSQL store drops its cached devices within a second too.
 * Entries also expire after ttl seconds (0: never), a safety net only. The next action is cached
 * against the deployments generation: this process bumps it when it creates or cancels a
 * deployment, and the flusher polls the store's generation the same way. */
#ifndef OTTERD_FLEET_H
#define OTTERD_FLEET_H

#include "store.h"

struct srv_fleet;

struct srv_fleet_dev {
    int64_t id;
    enum srv_device_status status;
    char device_type[SRV_DEVICE_TYPE_MAX];
    uint64_t reported_hash;   /* of the device type and installed set last stored */
    int64_t action_gen;       /* generation the action below was computed at; -1: unknown */
    int64_t action_deployment; /* the device's next deployment, 0 for none */
    int64_t action_seq;       /* its row's place in a staged rollout (0: none, rollout.h) */
};

/* Starts the flusher thread (last-seen batches every flush_ms, generation poll every second).
 * ttl_s: how long an entry may be used at most; 0 = until invalidated. */
enum ot_err srv_fleet_new(struct srv_store *store, unsigned flush_ms, unsigned ttl_s,
                          struct srv_fleet **ret, struct ot_diag *d) OT_MUST_CHECK;
/* Stops the thread and writes the last batch. */
void srv_fleet_free(struct srv_fleet *f);

/* A copy of the device's entry, loaded from the store on a miss (OT_ERR_NOENT: no such device). */
enum ot_err srv_fleet_get(struct srv_fleet *f, int64_t id, int64_t now, struct srv_fleet_dev *ret,
                          struct ot_diag *d) OT_MUST_CHECK;
/* Writes back what a handler learned (reported_hash, device_type, action) if the entry is still
 * there. */
void srv_fleet_put(struct srv_fleet *f, const struct srv_fleet_dev *dev);
/* Forgets a device here (its reported state or next action changed). */
void srv_fleet_invalidate(struct srv_fleet *f, int64_t id);
/* A device's status changed: forget it here, and tell the other instances (see above). */
enum ot_err srv_fleet_changed(struct srv_fleet *f, int64_t id, struct ot_diag *d) OT_MUST_CHECK;
/* Notes that the device was seen at `at`; written with the next batch. */
void srv_fleet_seen(struct srv_fleet *f, int64_t id, int64_t at);
/* Writes the pending last-seen times now (tests, shutdown). */
enum ot_err srv_fleet_flush(struct srv_fleet *f, struct ot_diag *d) OT_MUST_CHECK;

int64_t srv_fleet_generation(const struct srv_fleet *f);
/* Every cached next action is stale (a deployment was created or cancelled). */
void srv_fleet_bump(struct srv_fleet *f);

/* 64-bit FNV-1a, for reported_hash. */
uint64_t srv_fleet_hash(uint64_t h, const void *p, size_t n);
#define SRV_FLEET_HASH_INIT 0xcbf29ce484222325ull

#endif
