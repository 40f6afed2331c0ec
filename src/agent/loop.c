/* otter-agent's event loop (loop.h): one epoll set for the caller's fds, curl's sockets and a
 * signalfd; timers in a sorted array whose first deadline (and curl's) becomes epoll_wait's
 * timeout. Tens of timers and fds at most, so arrays and linear searches beat anything cleverer.
 *
 * Re-entrancy: every callback may add or remove fds, timers and transfers, its own included.
 * Therefore epoll carries a watch's id (never a pointer) and each event is looked up again before
 * it is dispatched; a timer is copied out of the array before it runs; a finished transfer is
 * taken off the multi handle and out of the list before its callback runs. */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>

#include "otter/log.h"

#include "loop.h"

#define EVENTS_MAX 32          /* epoll events taken per wait */
#define NO_DEADLINE UINT64_MAX

struct timer {
    uint64_t id;
    uint64_t due_ms;
    ag_timer_fn fn;
    void *userdata;
};

/* A watched fd: the caller's, or one of curl's sockets (curl set). */
struct watch {
    uint64_t id;
    int fd;
    bool curl;
    uint32_t events;
    ag_fd_fn fn;
    void *userdata;
};

struct transfer {
    CURL *easy;
    ag_transfer_fn fn;
    void *userdata;
};

struct sig_handler {
    ag_signal_fn fn;
    void *userdata;
};

struct ag_loop {
    int epfd;
    int sigfd;                    /* -1 until the first ag_loop_signal */
    sigset_t sigmask;             /* the signals sigfd delivers */
    sigset_t blocked_by_us;       /* of those, the ones not blocked before: unblocked on free */
    struct sig_handler sig[NSIG];

    struct timer *timers;         /* sorted by (due_ms, id) */
    size_t ntimers, timers_cap;
    uint64_t last_timer_id;

    struct watch *watches;
    size_t nwatches, watches_cap;
    uint64_t last_watch_id;

    CURLM *multi;
    struct transfer *transfers;
    size_t ntransfers, transfers_cap;
    uint64_t curl_due_ms;         /* curl's timeout (CURLMOPT_TIMERFUNCTION), NO_DEADLINE if none */

    bool stopping;
    int stop_code;
};

/* ---- helpers --------------------------------------------------------------------------------- */

uint64_t ag_loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Makes room for one more element in a growable array. */
static bool grow(void **array, size_t *cap, size_t used, size_t elem)
{
    if (used < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = reallocarray(*array, ncap, elem);
    if (!p)
        return false;
    *array = p;
    *cap = ncap;
    return true;
}

static uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* curl_global_init is not thread-safe in every libcurl build: once per process. */
static CURLcode global_rc = CURLE_FAILED_INIT;
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- timers ---------------------------------------------------------------------------------- */

uint64_t ag_loop_timer(struct ag_loop *l, uint64_t ms, ag_timer_fn fn, void *userdata)
{
    if (!grow((void **)&l->timers, &l->timers_cap, l->ntimers, sizeof(*l->timers)))
        return 0;
    uint64_t due = add_sat(ag_loop_now_ms(), ms);
    /* Equal deadlines keep their order of creation (ids only grow): after every equal one. */
    size_t i = l->ntimers;
    while (i > 0 && l->timers[i - 1].due_ms > due)
        i--;
    memmove(&l->timers[i + 1], &l->timers[i], (l->ntimers - i) * sizeof(*l->timers));
    l->timers[i] = (struct timer){.id = ++l->last_timer_id, .due_ms = due, .fn = fn,
                                  .userdata = userdata};
    l->ntimers++;
    return l->timers[i].id;
}

static void timer_remove_at(struct ag_loop *l, size_t i)
{
    memmove(&l->timers[i], &l->timers[i + 1], (l->ntimers - i - 1) * sizeof(*l->timers));
    l->ntimers--;
}

void ag_loop_timer_cancel(struct ag_loop *l, uint64_t id)
{
    for (size_t i = 0; id && i < l->ntimers; i++)
        if (l->timers[i].id == id) {
            timer_remove_at(l, i);
            return;
        }
}

/* Runs the timers due now. One added by a callback of this round (even with 0 ms) waits for the
 * next round, after the next epoll_wait: a timer that re-arms itself cannot starve the fds. Since
 * it is due no earlier than now, it sorts after every timer that is due, and ends the round. */
static void run_timers(struct ag_loop *l)
{
    uint64_t now = ag_loop_now_ms(), last = l->last_timer_id;
    while (l->ntimers > 0 && !l->stopping) {
        struct timer t = l->timers[0];
        if (t.due_ms > now || t.id > last)
            break;
        timer_remove_at(l, 0);
        t.fn(t.userdata);
    }
}

/* ---- fds ------------------------------------------------------------------------------------- */

static struct watch *watch_by_id(struct ag_loop *l, uint64_t id)
{
    for (size_t i = 0; i < l->nwatches; i++)
        if (l->watches[i].id == id)
            return &l->watches[i];
    return NULL;
}

static struct watch *watch_by_fd(struct ag_loop *l, int fd, bool curl)
{
    for (size_t i = 0; i < l->nwatches; i++)
        if (l->watches[i].fd == fd && l->watches[i].curl == curl)
            return &l->watches[i];
    return NULL;
}

static enum ot_err watch_add(struct ag_loop *l, int fd, uint32_t events, bool curl, ag_fd_fn fn,
                             void *userdata, struct ot_diag *d)
{
    if (!grow((void **)&l->watches, &l->watches_cap, l->nwatches, sizeof(*l->watches)))
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    uint64_t id = ++l->last_watch_id;
    struct epoll_event ev = {.events = events, .data.u64 = id};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot watch fd %d", fd);
    l->watches[l->nwatches++] = (struct watch){.id = id, .fd = fd, .curl = curl, .events = events,
                                               .fn = fn, .userdata = userdata};
    return OT_OK;
}

static void watch_remove(struct ag_loop *l, struct watch *w)
{
    /* The fd may be closed already (then epoll dropped it by itself): nothing to report. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    *w = l->watches[--l->nwatches];
}

enum ot_err ag_loop_fd(struct ag_loop *l, int fd, uint32_t events, ag_fd_fn fn, void *userdata,
                       struct ot_diag *d)
{
    if (fd < 0 || !fn)
        return ot_diag_set(d, OT_ERR_INVALID, "bad fd watch");
    if (watch_by_fd(l, fd, false))
        return ot_diag_set(d, OT_ERR_EXISTS, "fd %d is watched already", fd);
    return watch_add(l, fd, events, false, fn, userdata, d);
}

void ag_loop_fd_remove(struct ag_loop *l, int fd)
{
    struct watch *w = watch_by_fd(l, fd, false);
    if (w)
        watch_remove(l, w);
}

/* ---- signals --------------------------------------------------------------------------------- */

/* Reads every queued signal. A handler that stops the loop ends the reading: the rest stays
 * queued (the fd stays readable) for the next run. */
static void on_signalfd(void *userdata, int fd, uint32_t events)
{
    struct ag_loop *l = userdata;
    struct signalfd_siginfo si;
    while (!l->stopping && read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int signo = (int)si.ssi_signo;
        if (signo > 0 && signo < NSIG && l->sig[signo].fn)
            l->sig[signo].fn(l->sig[signo].userdata, signo);
    }
}

enum ot_err ag_loop_signal(struct ag_loop *l, int signo, ag_signal_fn fn, void *userdata,
                           struct ot_diag *d)
{
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return ot_diag_set(d, OT_ERR_INVALID, "signal %d cannot be handled", signo);
    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, signo);
    if (sigprocmask(SIG_BLOCK, &one, &old) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot block signal %d", signo);
    if (!sigismember(&old, signo))
        sigaddset(&l->blocked_by_us, signo);
    sigaddset(&l->sigmask, signo);
    /* With an existing fd, signalfd only changes its mask. */
    int fd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "signalfd");
    if (l->sigfd < 0) {
        enum ot_err err = watch_add(l, fd, EPOLLIN, false, on_signalfd, l, d);
        if (err) {
            close(fd);
            return err;
        }
        l->sigfd = fd;
    }
    l->sig[signo] = (struct sig_handler){fn, userdata};
    return OT_OK;
}

/* ---- curl ------------------------------------------------------------------------------------ */

static size_t transfer_index(struct ag_loop *l, CURL *easy)
{
    for (size_t i = 0; i < l->ntransfers; i++)
        if (l->transfers[i].easy == easy)
            return i;
    return SIZE_MAX;
}

/* Takes the transfer out of the list and off the multi handle. */
static void transfer_remove_at(struct ag_loop *l, size_t i)
{
    CURL *easy = l->transfers[i].easy;
    l->transfers[i] = l->transfers[--l->ntransfers];
    CURLMcode mc = curl_multi_remove_handle(l->multi, easy);
    if (mc != CURLM_OK) /* only from inside a curl callback: a bug of the caller */
        ot_log(OT_LOG_ERR, "event loop: cannot remove a transfer: %s", curl_multi_strerror(mc));
}

/* Hands every finished transfer to its callback. The message is copied before the callback
 * runs: the callback may add and remove transfers, which changes curl's queue. */
static void finish_transfers(struct ag_loop *l)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        size_t i = transfer_index(l, easy);
        if (i == SIZE_MAX)
            continue;
        struct transfer t = l->transfers[i];
        transfer_remove_at(l, i);
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        t.fn(t.userdata, easy, rc, status);
    }
}

static void curl_action(struct ag_loop *l, curl_socket_t s, int mask)
{
    int running;
    CURLMcode mc = curl_multi_socket_action(l->multi, s, mask, &running);
    if (mc != CURLM_OK)
        ot_debug("event loop: curl_multi_socket_action: %s", curl_multi_strerror(mc));
    finish_transfers(l);
}

static void curl_timeout(struct ag_loop *l)
{
    if (l->curl_due_ms > ag_loop_now_ms())
        return;
    l->curl_due_ms = NO_DEADLINE; /* curl sets a new one from inside the action if it wants */
    curl_action(l, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which of its sockets to watch for what. */
static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct ag_loop *l = userp;
    struct watch *w = watch_by_fd(l, s, true);
    if (what == CURL_POLL_REMOVE) {
        if (w)
            watch_remove(l, w);
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (!w)
        return watch_add(l, s, events, true, NULL, NULL, NULL) ? -1 : 0;
    struct epoll_event ev = {.events = events, .data.u64 = w->id};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev) < 0)
        return -1;
    w->events = events;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT). It must
 * not be called from here (curl's rule): the loop does it once this round is over. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct ag_loop *l = userp;
    l->curl_due_ms = timeout_ms < 0 ? NO_DEADLINE : add_sat(ag_loop_now_ms(), (uint64_t)timeout_ms);
    return 0;
}

enum ot_err ag_loop_transfer(struct ag_loop *l, CURL *easy, ag_transfer_fn fn, void *userdata,
                             struct ot_diag *d)
{
    if (!easy || !fn)
        return ot_diag_set(d, OT_ERR_INVALID, "bad transfer");
    if (!grow((void **)&l->transfers, &l->transfers_cap, l->ntransfers, sizeof(*l->transfers)))
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    CURLMcode mc = curl_multi_add_handle(l->multi, easy);
    if (mc != CURLM_OK)
        return ot_diag_set(d, mc == CURLM_OUT_OF_MEMORY ? OT_ERR_NOMEM : OT_ERR_INTERNAL,
                           "cannot start a transfer: %s", curl_multi_strerror(mc));
    l->transfers[l->ntransfers++] = (struct transfer){easy, fn, userdata};
    return OT_OK;
}

void ag_loop_transfer_cancel(struct ag_loop *l, CURL *easy)
{
    size_t i = transfer_index(l, easy);
    if (i != SIZE_MAX)
        transfer_remove_at(l, i);
}

void ag_loop_transfer_pause(struct ag_loop *l, CURL *easy, bool paused)
{
    /* Unpausing makes curl ask for an immediate timeout (curl_timer_cb), which gets it going. */
    CURLcode rc = curl_easy_pause(easy, paused ? CURLPAUSE_RECV : CURLPAUSE_CONT);
    if (rc != CURLE_OK)
        ot_debug("event loop: curl_easy_pause: %s", curl_easy_strerror(rc));
}

/* ---- the loop -------------------------------------------------------------------------------- */

static int curl_mask(uint32_t events)
{
    int mask = 0;
    if (events & (EPOLLIN | EPOLLHUP)) /* a hang-up is read as the end of the stream */
        mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (events & EPOLLERR)
        mask |= CURL_CSELECT_ERR;
    return mask;
}

static void dispatch(struct ag_loop *l, uint64_t id, uint32_t events)
{
    struct watch *w = watch_by_id(l, id);
    if (!w) /* removed by an earlier callback of this batch */
        return;
    if (w->curl) {
        curl_action(l, w->fd, curl_mask(events));
        return;
    }
    struct watch copy = *w; /* the array may move while the callback runs */
    copy.fn(copy.userdata, copy.fd, events);
}

/* epoll_wait's timeout: until the first timer or curl's deadline; -1 when there is none. */
static int wait_timeout(struct ag_loop *l)
{
    uint64_t due = l->curl_due_ms;
    if (l->ntimers > 0 && l->timers[0].due_ms < due)
        due = l->timers[0].due_ms;
    if (due == NO_DEADLINE)
        return -1;
    uint64_t now = ag_loop_now_ms();
    return due <= now ? 0 : (int)OT_MIN(due - now, (uint64_t)INT_MAX);
}

/* Returns the code given to ag_loop_stop, or -1 if epoll_wait itself fails (a bug: EBADF,
 * EINVAL), which is logged. */
int ag_loop_run(struct ag_loop *l)
{
    struct epoll_event ev[EVENTS_MAX];
    while (!l->stopping) {
        int n = epoll_wait(l->epfd, ev, EVENTS_MAX, wait_timeout(l));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ot_log(OT_LOG_ERR, "event loop: epoll_wait: %s", strerror(errno));
            l->stop_code = -1;
            break;
        }
        for (int i = 0; i < n && !l->stopping; i++)
            dispatch(l, ev[i].data.u64, ev[i].events);
        if (!l->stopping)
            curl_timeout(l);
        run_timers(l);
    }
    /* A later ag_loop_run starts afresh; a stop before the run made it return at once. */
    l->stopping = false;
    int code = l->stop_code;
    l->stop_code = 0;
    return code;
}

void ag_loop_stop(struct ag_loop *l, int code)
{
    l->stopping = true;
    l->stop_code = code;
}

enum ot_err ag_loop_new(struct ag_loop **ret, struct ot_diag *d)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    if (global_rc != CURLE_OK)
        return ot_diag_set(d, OT_ERR_INTERNAL, "libcurl initialisation failed: %s",
                           curl_easy_strerror(global_rc));
    struct ag_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    l->sigfd = -1;
    l->curl_due_ms = NO_DEADLINE;
    sigemptyset(&l->sigmask);
    sigemptyset(&l->blocked_by_us);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        enum ot_err err = ot_diag_errno(d, OT_ERR_IO, errno, "epoll_create1");
        free(l);
        return err;
    }
    l->multi = curl_multi_init();
    if (!l->multi) {
        ag_loop_free(l);
        return ot_diag_set(d, OT_ERR_NOMEM, "cannot create a libcurl multi handle");
    }
    if (curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) != CURLM_OK ||
        curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l) != CURLM_OK ||
        curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) != CURLM_OK ||
        curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l) != CURLM_OK) {
        ag_loop_free(l);
        return ot_diag_set(d, OT_ERR_INTERNAL, "libcurl refused the multi socket options");
    }
    *ret = l;
    return OT_OK;
}

/* Transfers still running are taken off the multi handle; their easy handles stay the callers'.
 * Signals this loop blocked are unblocked again. Not from inside one of the loop's callbacks. */
void ag_loop_free(struct ag_loop *l)
{
    if (!l)
        return;
    while (l->ntransfers > 0)
        transfer_remove_at(l, l->ntransfers - 1);
    if (l->multi)
        curl_multi_cleanup(l->multi);
    if (l->sigfd >= 0) {
        close(l->sigfd);
        sigprocmask(SIG_UNBLOCK, &l->blocked_by_us, NULL);
    }
    close(l->epfd);
    free(l->timers);
    free(l->watches);
    free(l->transfers);
    free(l);
}
