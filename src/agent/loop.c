/* otter-agent's event loop (loop.h): one epoll set for the caller's fds, curl's sockets and a
 * signalfd; timers in a binary min-heap whose first deadline (and curl's) becomes epoll_wait's
 * timeout. Built for otter-sim too, which runs ~100,000 simulated devices on one loop: ~100k live
 * timers being cancelled and re-armed all the time, thousands of fds, hundreds of transfers. So
 * every operation is O(1) or O(log n), and nothing the loop keeps is searched linearly:
 *
 * - Timers: each lives in a slot of an arena (a free list reuses slots) and in the heap, ordered
 *   by (due_ms, seq), seq being the order of creation, so equal deadlines keep it. A heap entry
 *   holds its key, so that sifting compares without touching the slots; a slot knows its place in
 *   the heap, so cancelling is a removal at a known index. A timer's id is (generation, slot);
 *   the slot's generation grows each time the slot is freed, so an id that fired or was cancelled
 *   never names a later timer: cancelling it finds a newer generation and does nothing. A slot
 *   whose generation would wrap (2^32 timers later) is retired rather than reused.
 * - Watches: a table indexed by fd (the kernel hands out the lowest free numbers, so it stays
 *   dense), grown on demand. Each entry has a generation, bumped on every add.
 * - Transfers: a dense array; each easy handle carries its index (plus one) as CURLOPT_PRIVATE,
 *   which nothing else in otter uses, and the entry is checked to hold that very handle, so a
 *   handle the loop does not run is never mistaken for one it does.
 *
 * Re-entrancy: every callback may add or remove fds, timers and transfers, its own included.
 * Therefore epoll carries a watch's (generation, fd) (never a pointer) and each event is looked
 * up again before it is dispatched: an event for a watch that an earlier callback of the same
 * batch removed, or removed and added again, finds no watch or a newer generation and is dropped.
 * A timer's callback and userdata are copied out and its slot freed before it runs; a finished
 * transfer is taken off the multi handle and out of the array before its callback runs. */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>

#include "otter/log.h"

#include "loop.h"

/* epoll events taken per wait: with thousands of busy sockets, fewer and larger batches */
#define EVENTS_MAX 256
#define NO_DEADLINE UINT64_MAX
#define SLOT_NONE UINT32_MAX   /* no slot: the end of the free list */
#define SLOTS_MAX (SLOT_NONE - 1)
#define WATCHES_MIN 64         /* entries of the fd table when it is first made */

/* A timer as the heap orders it. */
struct heap_entry {
    uint64_t due_ms;
    uint64_t seq;              /* order of creation: breaks ties, and tells this round's timers */
    uint32_t slot;
};

/* A timer's slot: armed (in the heap) or free (on the free list). */
struct timer_slot {
    ag_timer_fn fn;
    void *userdata;
    uint32_t gen;              /* of the id the slot is (or will next be) handed out under; >= 1 */
    uint32_t pos;              /* armed: its index in the heap; free: the next free slot */
    bool armed;
};

enum watch_kind { WATCH_NONE, WATCH_CALLER, WATCH_CURL };

/* A watched fd, at its own index in the table: the caller's, or one of curl's sockets. */
struct watch {
    uint32_t gen;              /* bumped by every add; with the fd, epoll's data */
    enum watch_kind kind;
    ag_fd_fn fn;
    void *userdata;
};

struct transfer {
    CURL *easy;
    ag_transfer_fn fn;
    void *userdata;
    bool queued;                  /* waiting for a place (ag_loop_limit_transfers) */
    uint64_t seq;                 /* queued: its ticket in the queue */
};

/* A place in the queue of transfers waiting to start. Cancelled ones are left in it and skipped
 * (their easy handle no longer names a queued transfer with this ticket). */
struct ticket {
    CURL *easy;
    uint64_t seq;
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

    struct heap_entry *heap;      /* a min-heap of the armed timers by (due_ms, seq) */
    size_t nheap, heap_cap;
    struct timer_slot *slots;
    size_t nslots, slots_cap;     /* slots made so far (armed, free or retired) */
    uint32_t free_slot;           /* head of the free list, SLOT_NONE when empty */
    uint64_t last_timer_seq;

    struct watch *watches;        /* indexed by fd; kind WATCH_NONE where nothing is watched */
    size_t nwatches;              /* the table's length (fds 0 .. nwatches - 1) */

    CURLM *multi;
    struct transfer *transfers;
    size_t ntransfers, transfers_cap;
    size_t max_active, nactive;   /* transfers on the multi handle: at most max_active (0: any) */
    struct ticket *queue;         /* a ring: the transfers waiting for a place, oldest first */
    size_t qhead, qlen, qcap;
    uint64_t last_ticket;
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

/* ---- the timer heap -------------------------------------------------------------------------- */

static bool heap_less(const struct heap_entry *a, const struct heap_entry *b)
{
    return a->due_ms != b->due_ms ? a->due_ms < b->due_ms : a->seq < b->seq;
}

/* Puts e at index i of the heap and tells its slot where it is. */
static void heap_put(struct ag_loop *l, size_t i, struct heap_entry e)
{
    l->heap[i] = e;
    l->slots[e.slot].pos = (uint32_t)i;
}

/* Places e, which belongs at index i or above, moving bigger parents down. */
static void sift_up(struct ag_loop *l, size_t i, struct heap_entry e)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &l->heap[parent]))
            break;
        heap_put(l, i, l->heap[parent]);
        i = parent;
    }
    heap_put(l, i, e);
}

/* Places e, which belongs at index i or below, moving smaller children up. */
static void sift_down(struct ag_loop *l, size_t i, struct heap_entry e)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= l->nheap)
            break;
        if (child + 1 < l->nheap && heap_less(&l->heap[child + 1], &l->heap[child]))
            child++;
        if (!heap_less(&l->heap[child], &e))
            break;
        heap_put(l, i, l->heap[child]);
        i = child;
    }
    heap_put(l, i, e);
}

/* Takes the entry at index i out: the last entry fills the hole and moves up or down. */
static void heap_remove_at(struct ag_loop *l, size_t i)
{
    struct heap_entry last = l->heap[--l->nheap];
    if (i == l->nheap)
        return;
    if (i > 0 && heap_less(&last, &l->heap[(i - 1) / 2]))
        sift_up(l, i, last);
    else
        sift_down(l, i, last);
}

/* ---- timers ---------------------------------------------------------------------------------- */

/* Generations start at 1, so no id is 0. */
static uint64_t timer_id(uint32_t gen, uint32_t slot) { return (uint64_t)gen << 32 | slot; }

/* Makes room for one more armed timer: a heap entry and a slot. */
static bool timer_reserve(struct ag_loop *l)
{
    if (!grow((void **)&l->heap, &l->heap_cap, l->nheap, sizeof(*l->heap)))
        return false;
    if (l->free_slot != SLOT_NONE)
        return true;
    return l->nslots < SLOTS_MAX &&
           grow((void **)&l->slots, &l->slots_cap, l->nslots, sizeof(*l->slots));
}

/* A free slot (timer_reserve made sure there is one). */
static uint32_t slot_take(struct ag_loop *l)
{
    uint32_t s = l->free_slot;
    if (s != SLOT_NONE) {
        l->free_slot = l->slots[s].pos;
        return s;
    }
    l->slots[l->nslots] = (struct timer_slot){.gen = 1};
    return (uint32_t)l->nslots++;
}

/* Frees the slot of a timer that fired or was cancelled (and is out of the heap). Its id goes
 * stale for good: the next timer in the slot has the next generation. */
static void slot_release(struct ag_loop *l, uint32_t s)
{
    struct timer_slot *t = &l->slots[s];
    t->armed = false;
    t->fn = NULL;
    t->userdata = NULL;
    if (t->gen == UINT32_MAX) /* retired: reusing it would give out an old id again */
        return;
    t->gen++;
    t->pos = l->free_slot;
    l->free_slot = s;
}

uint64_t ag_loop_timer(struct ag_loop *l, uint64_t ms, ag_timer_fn fn, void *userdata)
{
    if (!timer_reserve(l))
        return 0;
    uint32_t s = slot_take(l);
    struct timer_slot *t = &l->slots[s];
    t->fn = fn;
    t->userdata = userdata;
    t->armed = true;
    struct heap_entry e = {.due_ms = add_sat(ag_loop_now_ms(), ms), .seq = ++l->last_timer_seq,
                           .slot = s};
    sift_up(l, l->nheap++, e);
    return timer_id(t->gen, s);
}

/* Cancelling 0, or an id that fired, was cancelled or was never given out, does nothing. */
void ag_loop_timer_cancel(struct ag_loop *l, uint64_t id)
{
    uint64_t s = id & UINT32_MAX;
    if (s >= l->nslots || !l->slots[s].armed || l->slots[s].gen != (uint32_t)(id >> 32))
        return;
    heap_remove_at(l, l->slots[s].pos);
    slot_release(l, (uint32_t)s);
}

/* Runs the timers due now. One added by a callback of this round (even with 0 ms) waits for the
 * next round, after the next epoll_wait: a timer that re-arms itself cannot starve the fds. Since
 * it is due no earlier than now and was created last, it sorts after every timer that is due, and
 * ends the round. */
static void run_timers(struct ag_loop *l)
{
    uint64_t now = ag_loop_now_ms(), last = l->last_timer_seq;
    while (l->nheap > 0 && !l->stopping) {
        struct heap_entry top = l->heap[0];
        if (top.due_ms > now || top.seq > last)
            break;
        struct timer_slot t = l->slots[top.slot];
        heap_remove_at(l, 0);
        slot_release(l, top.slot);
        t.fn(t.userdata);
    }
}

/* ---- fds ------------------------------------------------------------------------------------- */

/* epoll's data for a watch: the fd, and the generation that tells a re-added watch apart. */
static uint64_t watch_key(uint32_t gen, int fd) { return (uint64_t)gen << 32 | (uint32_t)fd; }

/* fd's watch of that kind, or NULL. */
static struct watch *watch_find(struct ag_loop *l, int fd, enum watch_kind kind)
{
    if (fd < 0 || (size_t)fd >= l->nwatches || l->watches[fd].kind != kind)
        return NULL;
    return &l->watches[fd];
}

/* Makes the table reach fd. New entries are zeroed: nothing watched, generation 0. */
static bool watch_table_reach(struct ag_loop *l, int fd)
{
    size_t need = (size_t)fd + 1;
    if (need <= l->nwatches)
        return true;
    size_t n = OT_MAX(OT_MAX(need, l->nwatches * 2), (size_t)WATCHES_MIN);
    struct watch *p = reallocarray(l->watches, n, sizeof(*p));
    if (!p)
        return false;
    memset(p + l->nwatches, 0, (n - l->nwatches) * sizeof(*p));
    l->watches = p;
    l->nwatches = n;
    return true;
}

/* Watches fd. An entry still holding a watch (of the other kind: the callers check theirs) whose
 * fd was closed without it being removed is replaced: epoll forgot that one with the fd, which
 * is why the EPOLL_CTL_ADD succeeds. */
static enum ot_err watch_add(struct ag_loop *l, int fd, uint32_t events, enum watch_kind kind,
                             ag_fd_fn fn, void *userdata, struct ot_diag *d)
{
    if (!watch_table_reach(l, fd))
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    uint32_t gen = l->watches[fd].gen + 1;
    struct epoll_event ev = {.events = events, .data.u64 = watch_key(gen, fd)};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot watch fd %d", fd);
    l->watches[fd] = (struct watch){.gen = gen, .kind = kind, .fn = fn, .userdata = userdata};
    return OT_OK;
}

/* Keeps the generation: the fd's next watch gets a new one. */
static void watch_remove(struct ag_loop *l, int fd)
{
    /* The fd may be closed already (then epoll dropped it by itself): nothing to report. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    struct watch *w = &l->watches[fd];
    *w = (struct watch){.gen = w->gen};
}

enum ot_err ag_loop_fd(struct ag_loop *l, int fd, uint32_t events, ag_fd_fn fn, void *userdata,
                       struct ot_diag *d)
{
    if (fd < 0 || !fn)
        return ot_diag_set(d, OT_ERR_INVALID, "bad fd watch");
    if (watch_find(l, fd, WATCH_CALLER))
        return ot_diag_set(d, OT_ERR_EXISTS, "fd %d is watched already", fd);
    return watch_add(l, fd, events, WATCH_CALLER, fn, userdata, d);
}

void ag_loop_fd_remove(struct ag_loop *l, int fd)
{
    if (watch_find(l, fd, WATCH_CALLER))
        watch_remove(l, fd);
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
        enum ot_err err = watch_add(l, fd, EPOLLIN, WATCH_CALLER, on_signalfd, l, d);
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

/* Records the transfer's index in its easy handle (plus one: NULL is none). */
static void transfer_tag(CURL *easy, size_t i)
{
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)(uintptr_t)(i + 1));
}

/* easy's index in the array, or SIZE_MAX when the loop does not run it. */
static size_t transfer_index(struct ag_loop *l, CURL *easy)
{
    char *tag = NULL;
    if (!easy || curl_easy_getinfo(easy, CURLINFO_PRIVATE, &tag) != CURLE_OK || !tag)
        return SIZE_MAX;
    size_t i = (size_t)(uintptr_t)tag - 1;
    return i < l->ntransfers && l->transfers[i].easy == easy ? i : SIZE_MAX;
}

/* Takes the transfer out of the array (the last one fills its place) and off the multi handle. */
static void transfer_remove_at(struct ag_loop *l, size_t i)
{
    CURL *easy = l->transfers[i].easy;
    bool queued = l->transfers[i].queued;
    l->transfers[i] = l->transfers[--l->ntransfers];
    if (i < l->ntransfers)
        transfer_tag(l->transfers[i].easy, i);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)NULL);
    if (queued)
        return;
    l->nactive--;
    CURLMcode mc = curl_multi_remove_handle(l->multi, easy);
    if (mc != CURLM_OK) /* only from inside a curl callback: a bug of the caller */
        ot_log(OT_LOG_ERR, "event loop: cannot remove a transfer: %s", curl_multi_strerror(mc));
}

static bool has_place(const struct ag_loop *l)
{
    return l->max_active == 0 || l->nactive < l->max_active;
}

/* Starts queued transfers while there are places. One libcurl refuses ends with its callback. */
static void start_queued(struct ag_loop *l)
{
    while (l->qlen > 0 && has_place(l)) {
        struct ticket t = l->queue[l->qhead];
        l->qhead = (l->qhead + 1) % l->qcap;
        l->qlen--;
        size_t i = transfer_index(l, t.easy);
        if (i == SIZE_MAX || !l->transfers[i].queued || l->transfers[i].seq != t.seq)
            continue; /* cancelled while it waited */
        CURLMcode mc = curl_multi_add_handle(l->multi, t.easy);
        if (mc == CURLM_OK) {
            l->transfers[i].queued = false;
            l->nactive++;
            continue;
        }
        struct transfer tr = l->transfers[i];
        transfer_remove_at(l, i);
        ot_log(OT_LOG_ERR, "event loop: cannot start a transfer: %s", curl_multi_strerror(mc));
        tr.fn(tr.userdata, tr.easy, CURLE_OUT_OF_MEMORY, 0);
    }
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
    start_queued(l);
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
    struct watch *w = watch_find(l, s, WATCH_CURL);
    if (what == CURL_POLL_REMOVE) {
        if (w)
            watch_remove(l, s);
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (!w)
        return watch_add(l, s, events, WATCH_CURL, NULL, NULL, NULL) ? -1 : 0;
    struct epoll_event ev = {.events = events, .data.u64 = watch_key(w->gen, s)};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev) < 0 ? -1 : 0;
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
    if (!has_place(l)) {
        if (l->qlen == l->qcap) { /* grow the ring, oldest first at 0 */
            size_t ncap = l->qcap ? l->qcap * 2 : 64;
            struct ticket *q = calloc(ncap, sizeof(*q));
            if (!q)
                return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
            for (size_t k = 0; k < l->qlen; k++)
                q[k] = l->queue[(l->qhead + k) % l->qcap];
            free(l->queue);
            l->queue = q;
            l->qcap = ncap;
            l->qhead = 0;
        }
        uint64_t seq = ++l->last_ticket;
        l->queue[(l->qhead + l->qlen++) % l->qcap] = (struct ticket){easy, seq};
        transfer_tag(easy, l->ntransfers);
        l->transfers[l->ntransfers++] =
            (struct transfer){.easy = easy, .fn = fn, .userdata = userdata, .queued = true,
                              .seq = seq};
        return OT_OK;
    }
    CURLMcode mc = curl_multi_add_handle(l->multi, easy);
    if (mc != CURLM_OK)
        return ot_diag_set(d, mc == CURLM_OUT_OF_MEMORY ? OT_ERR_NOMEM : OT_ERR_INTERNAL,
                           "cannot start a transfer: %s", curl_multi_strerror(mc));
    l->nactive++;
    transfer_tag(easy, l->ntransfers);
    l->transfers[l->ntransfers++] = (struct transfer){.easy = easy, .fn = fn, .userdata = userdata};
    return OT_OK;
}

void ag_loop_transfer_cancel(struct ag_loop *l, CURL *easy)
{
    size_t i = transfer_index(l, easy);
    if (i != SIZE_MAX) {
        transfer_remove_at(l, i);
        start_queued(l);
    }
}

void ag_loop_limit_transfers(struct ag_loop *l, size_t max)
{
    l->max_active = max;
    if (max && curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)OT_MIN(max, (size_t)LONG_MAX)) !=
                   CURLM_OK)
        ot_log(OT_LOG_WARNING, "event loop: libcurl refused the connection cache size");
    start_queued(l);
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

/* Runs the event's watch, unless an earlier callback of this batch removed it (maybe adding
 * another watch on the same fd number, which has a newer generation). */
static void dispatch(struct ag_loop *l, uint64_t key, uint32_t events)
{
    int fd = (int)(uint32_t)key;
    uint32_t gen = (uint32_t)(key >> 32);
    if ((size_t)fd >= l->nwatches || l->watches[fd].kind == WATCH_NONE ||
        l->watches[fd].gen != gen)
        return;
    if (l->watches[fd].kind == WATCH_CURL) {
        curl_action(l, fd, curl_mask(events));
        return;
    }
    struct watch copy = l->watches[fd]; /* the table may move while the callback runs */
    copy.fn(copy.userdata, fd, events);
}

/* epoll_wait's timeout: until the first timer or curl's deadline; -1 when there is none. */
static int wait_timeout(struct ag_loop *l)
{
    uint64_t due = l->curl_due_ms;
    if (l->nheap > 0 && l->heap[0].due_ms < due)
        due = l->heap[0].due_ms;
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
    l->free_slot = SLOT_NONE;
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
    free(l->heap);
    free(l->slots);
    free(l->watches);
    free(l->transfers);
    free(l->queue);
    free(l);
}
