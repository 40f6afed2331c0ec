/* The background ticker (ticker.h). */
#include <time.h>

#include "ticker.h"

static void *ticker_main(void *arg)
{
    struct srv_ticker *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        if (!t->kicked) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += t->period_ms / 1000;
            until.tv_nsec += (long)(t->period_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&t->cond, &t->lock, &until);
        }
        if (t->stopping)
            break;
        t->kicked = false;
        pthread_mutex_unlock(&t->lock);
        t->fn(t->arg);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

enum ot_err srv_ticker_start(struct srv_ticker *t, unsigned period_ms, void (*fn)(void *),
                             void *arg, const char *what, struct ot_diag *d)
{
    *t = (struct srv_ticker){.fn = fn, .arg = arg, .period_ms = period_ms ? period_ms : 1};
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->cond);
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot start the %s thread", what);
    }
    t->started = true;
    return OT_OK;
}

void srv_ticker_kick(struct srv_ticker *t)
{
    if (!t->started)
        return;
    pthread_mutex_lock(&t->lock);
    t->kicked = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

void srv_ticker_stop(struct srv_ticker *t)
{
    if (!t->started)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    t->started = false;
}
