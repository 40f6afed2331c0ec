/* The device cache and the last-seen batches (fleet.h).
 *
 * 64 shards, each a mutex and an open-addressing table keyed by device id, so that the HTTP
 * threads rarely wait for each other. An entry holds the cached device plus its pending last-seen
 * time; the flusher thread swaps the pending times out shard by shard and writes them with one
 * srv_store_device_touch calls of TOUCH_CHUNK rows, so that requests that need the store wait
 * for one chunk at most, never for the whole batch. What was not written is put back and retried
 * on the next round. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <sodium.h>

#include "fleet.h"
#include "ticker.h"
#include "otter/encoding.h"
#include "otter/log.h"

#define SHARDS 64
#define GEN_POLL_MS 1000
#define TOUCH_CHUNK 2048   /* last-seen rows per store call: the store is free in between */
#define DEVICES_META "devices_generation"

struct entry {
    struct srv_fleet_dev dev;     /* dev.id == 0: empty slot */
    int64_t loaded_at;            /* Unix seconds */
    int64_t seen;                 /* pending last-seen time, 0 when none */
    bool cached;                  /* dev is loaded (a slot may hold only a pending seen time) */
};

struct shard {
    pthread_mutex_t lock;
    struct entry *slots;
    size_t cap, used; /* cap is a power of two; used counts non-empty slots */
};

struct srv_fleet {
    struct srv_store *store;
    unsigned flush_ms, ttl_s;
    struct shard shards[SHARDS];
    atomic_llong generation;
    int64_t store_generation;     /* flusher thread only */
    char *devices_generation;     /* flusher thread only: meta DEVICES_META as last read */
    struct srv_ticker ticker;     /* the flusher */
    struct timespec last_flush;   /* flusher thread only (monotonic) */
};

uint64_t srv_fleet_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static struct shard *shard_of(struct srv_fleet *f, int64_t id)
{
    return &f->shards[(uint64_t)id % SHARDS];
}

static size_t slot_hash(int64_t id) { return (size_t)(((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 17); }

/* The slot of id, or the empty slot where it would go. The table is never full (load <= 1/2). */
static struct entry *slot_find(struct shard *s, int64_t id)
{
    size_t mask = s->cap - 1;
    for (size_t i = slot_hash(id) & mask;; i = (i + 1) & mask)
        if (s->slots[i].dev.id == id || s->slots[i].dev.id == 0)
            return &s->slots[i];
}

static bool grow(struct shard *s)
{
    size_t cap = s->cap ? s->cap * 2 : 256;
    struct entry *old = s->slots;
    size_t old_cap = s->cap;
    struct entry *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return false;
    s->slots = slots;
    s->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].dev.id)
            *slot_find(s, old[i].dev.id) = old[i];
    free(old);
    return true;
}

/* The entry of id, created empty if needed; NULL when out of memory. Caller holds the lock. */
static struct entry *slot_get(struct shard *s, int64_t id)
{
    if ((s->used + 1) * 2 > s->cap && !grow(s))
        return NULL;
    struct entry *e = slot_find(s, id);
    if (e->dev.id == 0) {
        *e = (struct entry){.dev = {.id = id}};
        s->used++;
    }
    return e;
}

/* Removes a slot keeping the probe chains intact (backward-shift deletion). */
static void slot_remove(struct shard *s, struct entry *e)
{
    size_t mask = s->cap - 1, i = (size_t)(e - s->slots);
    s->slots[i].dev.id = 0;
    s->used--;
    for (size_t j = (i + 1) & mask; s->slots[j].dev.id; j = (j + 1) & mask) {
        size_t home = slot_hash(s->slots[j].dev.id) & mask;
        /* move j back to i if its home is not in the cyclic range (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            s->slots[i] = s->slots[j];
            s->slots[j].dev.id = 0;
            i = j;
        }
    }
}

/* ---- loading --------------------------------------------------------------------------------- */

static enum ot_err load(struct srv_fleet *f, int64_t id, struct srv_fleet_dev *ret,
                        struct ot_diag *d)
{
    struct srv_device dev = {0};
    enum ot_err err = srv_store_device_get(f->store, id, &dev, d);
    if (err)
        return err;
    *ret = (struct srv_fleet_dev){.id = id, .status = dev.status, .action_gen = -1};
    snprintf(ret->device_type, sizeof(ret->device_type), "%s", dev.device_type);
    uint64_t h = srv_fleet_hash(SRV_FLEET_HASH_INIT, dev.device_type, strlen(dev.device_type) + 1);
    ret->reported_hash = srv_fleet_hash(h, dev.installed, strlen(dev.installed));
    srv_device_release(&dev);
    return OT_OK;
}

enum ot_err srv_fleet_get(struct srv_fleet *f, int64_t id, int64_t now, struct srv_fleet_dev *ret,
                          struct ot_diag *d)
{
    struct shard *s = shard_of(f, id);
    pthread_mutex_lock(&s->lock);
    struct entry *e = s->cap ? slot_find(s, id) : NULL;
    if (e && e->dev.id == id && e->cached && (!f->ttl_s || now - e->loaded_at < (int64_t)f->ttl_s)) {
        *ret = e->dev;
        pthread_mutex_unlock(&s->lock);
        return OT_OK;
    }
    pthread_mutex_unlock(&s->lock);
    /* Loaded without the lock: two threads may load the same device; the last one wins, and
     * both copies are equally fresh. */
    struct srv_fleet_dev fresh;
    enum ot_err err = load(f, id, &fresh, d);
    if (err)
        return err;
    pthread_mutex_lock(&s->lock);
    e = slot_get(s, id);
    if (e) {
        e->dev = fresh;
        e->cached = true;
        e->loaded_at = now;
    }
    pthread_mutex_unlock(&s->lock);
    *ret = fresh;
    return OT_OK;
}

void srv_fleet_put(struct srv_fleet *f, const struct srv_fleet_dev *dev)
{
    struct shard *s = shard_of(f, dev->id);
    pthread_mutex_lock(&s->lock);
    struct entry *e = s->cap ? slot_find(s, dev->id) : NULL;
    if (e && e->dev.id == dev->id && e->cached && e->dev.status == dev->status)
        e->dev = *dev;
    pthread_mutex_unlock(&s->lock);
}

void srv_fleet_invalidate(struct srv_fleet *f, int64_t id)
{
    struct shard *s = shard_of(f, id);
    pthread_mutex_lock(&s->lock);
    struct entry *e = s->cap ? slot_find(s, id) : NULL;
    if (e && e->dev.id == id) {
        if (e->seen)
            e->cached = false; /* keep the pending last-seen time */
        else
            slot_remove(s, e);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Drops every cached device (pending last-seen times stay). */
static void forget_all(struct srv_fleet *f)
{
    for (size_t i = 0; i < SHARDS; i++) {
        struct shard *s = &f->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t k = 0; k < s->cap; k++) {
            struct entry *e = &s->slots[k];
            if (!e->dev.id)
                continue;
            if (e->seen)
                e->cached = false;
            else
                slot_remove(s, &s->slots[k--]);
        }
        pthread_mutex_unlock(&s->lock);
    }
}

enum ot_err srv_fleet_changed(struct srv_fleet *f, int64_t id, struct ot_diag *d)
{
    uint8_t r[16];
    char hex[33];
    srv_fleet_invalidate(f, id);
    randombytes_buf(r, sizeof(r));
    ot_hex_encode(r, sizeof(r), hex);
    return srv_store_meta_set(f->store, DEVICES_META, hex, d);
}

void srv_fleet_seen(struct srv_fleet *f, int64_t id, int64_t at)
{
    struct shard *s = shard_of(f, id);
    pthread_mutex_lock(&s->lock);
    struct entry *e = slot_get(s, id);
    if (e && at > e->seen)
        e->seen = at;
    pthread_mutex_unlock(&s->lock);
}

int64_t srv_fleet_generation(const struct srv_fleet *f) { return atomic_load(&f->generation); }

void srv_fleet_bump(struct srv_fleet *f) { atomic_fetch_add(&f->generation, 1); }

/* ---- the flusher ----------------------------------------------------------------------------- */

struct batch {
    int64_t *ids, *at;
    size_t n, cap;
};

static bool batch_add(struct batch *b, int64_t id, int64_t at)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        int64_t *ids = realloc(b->ids, cap * sizeof(*ids));
        if (!ids)
            return false;
        b->ids = ids;
        int64_t *ats = realloc(b->at, cap * sizeof(*ats));
        if (!ats)
            return false;
        b->at = ats;
        b->cap = cap;
    }
    b->ids[b->n] = id;
    b->at[b->n++] = at;
    return true;
}

enum ot_err srv_fleet_flush(struct srv_fleet *f, struct ot_diag *d)
{
    struct batch b = {0};
    bool complete = true;
    for (size_t i = 0; i < SHARDS; i++) {
        struct shard *s = &f->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t k = 0; k < s->cap; k++) {
            struct entry *e = &s->slots[k];
            if (!e->dev.id || !e->seen)
                continue;
            if (!batch_add(&b, e->dev.id, e->seen)) {
                complete = false;
                break;
            }
            e->seen = 0;
        }
        /* entries that only carried a last-seen time go now */
        for (size_t k = 0; k < s->cap; k++)
            if (s->slots[k].dev.id && !s->slots[k].cached && !s->slots[k].seen)
                slot_remove(s, &s->slots[k--]);
        pthread_mutex_unlock(&s->lock);
    }
    enum ot_err err = OT_OK;
    size_t done = 0;
    while (!err && done < b.n) {
        size_t n = OT_MIN(b.n - done, (size_t)TOUCH_CHUNK);
        err = srv_store_device_touch(f->store, b.ids + done, b.at + done, n, d);
        if (!err)
            done += n;
    }
    for (size_t i = done; i < b.n; i++) /* not written: put them back for the next round */
        srv_fleet_seen(f, b.ids[i], b.at[i]);
    free(b.ids);
    free(b.at);
    if (!err && !complete)
        err = ot_diag_set(d, OT_ERR_NOMEM, "out of memory for the last-seen batch");
    return err;
}

static void poll_generation(struct srv_fleet *f)
{
    int64_t g = 0;
    struct ot_diag d = {0};
    if (srv_store_deployments_generation(f->store, &g, &d) != OT_OK) {
        ot_log(OT_LOG_WARNING, "fleet: cannot read the deployments generation: %s", d.msg);
        return;
    }
    if (g != f->store_generation) {
        f->store_generation = g;
        srv_fleet_bump(f);
    }
    /* a device's status changed (maybe through another otterd instance): forget them all */
    char *dg = NULL;
    enum ot_err err = srv_store_meta_get(f->store, DEVICES_META, &dg, &d);
    if (err && err != OT_ERR_NOENT) {
        ot_log(OT_LOG_WARNING, "fleet: cannot read the devices generation: %s", d.msg);
        return;
    }
    if ((dg == NULL) != (f->devices_generation == NULL) ||
        (dg && strcmp(dg, f->devices_generation) != 0)) {
        free(f->devices_generation);
        f->devices_generation = dg;
        forget_all(f);
        srv_fleet_bump(f);
    } else {
        free(dg);
    }
}

/* The flusher thread's round, every min(flush_ms, GEN_POLL_MS): the generations, and the
 * last-seen batch once flush_ms have passed. */
static void flusher(void *arg)
{
    struct srv_fleet *f = arg;
    struct timespec now;
    poll_generation(f);
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - f->last_flush.tv_sec) * 1000 +
              (now.tv_nsec - f->last_flush.tv_nsec) / 1000000;
    if (ms >= (long)f->flush_ms) {
        struct ot_diag d = {0};
        if (srv_fleet_flush(f, &d) != OT_OK)
            ot_log(OT_LOG_ERR, "fleet: last-seen batch not written (retried): %s", d.msg);
        f->last_flush = now;
    }
}

enum ot_err srv_fleet_new(struct srv_store *store, unsigned flush_ms, unsigned ttl_s,
                          struct srv_fleet **ret, struct ot_diag *d)
{
    struct srv_fleet *f = calloc(1, sizeof(*f));
    if (!f)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    f->store = store;
    f->flush_ms = flush_ms ? flush_ms : 1;
    f->ttl_s = ttl_s;
    for (size_t i = 0; i < SHARDS; i++)
        pthread_mutex_init(&f->shards[i].lock, NULL);
    enum ot_err err = srv_store_deployments_generation(store, &f->store_generation, d);
    if (!err) {
        err = srv_store_meta_get(store, DEVICES_META, &f->devices_generation, d);
        if (err == OT_ERR_NOENT)
            err = OT_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &f->last_flush);
    if (!err)
        err = srv_ticker_start(&f->ticker, OT_MIN(f->flush_ms, (unsigned)GEN_POLL_MS), flusher, f,
                               "last-seen", d);
    if (err) {
        srv_fleet_free(f);
        return err;
    }
    *ret = f;
    return OT_OK;
}

void srv_fleet_free(struct srv_fleet *f)
{
    if (!f)
        return;
    if (f->ticker.started) {
        srv_ticker_stop(&f->ticker);
        struct ot_diag d = {0};
        if (srv_fleet_flush(f, &d) != OT_OK)
            ot_log(OT_LOG_ERR, "fleet: the last last-seen batch was lost: %s", d.msg);
    }
    for (size_t i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&f->shards[i].lock);
        free(f->shards[i].slots);
    }
    free(f->devices_generation);
    free(f);
}
