/* A background thread that runs a function every period, or at once when kicked, until it is
 * stopped: otterd's last-seen flusher (fleet.c) and rollout engine (rollout.c). */
#ifndef OTTERD_TICKER_H
#define OTTERD_TICKER_H

#include <pthread.h>
#include <stdbool.h>

#include "otter/err.h"

struct srv_ticker {
    void (*fn)(void *arg);
    void *arg;
    unsigned period_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started, stopping, kicked;
};

/* Starts the thread: fn(arg) after every period_ms (>= 1), and after each kick. what names it in
 * the error. */
enum ot_err srv_ticker_start(struct srv_ticker *t, unsigned period_ms, void (*fn)(void *),
                             void *arg, const char *what, struct ot_diag *d) OT_MUST_CHECK;
/* Runs fn now (after the run in progress, if any) rather than at the end of the period. */
void srv_ticker_kick(struct srv_ticker *t);
/* Stops the thread, waiting for a run in progress. Harmless on a ticker that never started. */
void srv_ticker_stop(struct srv_ticker *t);

#endif
