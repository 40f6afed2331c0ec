/* otter-agent's event loop (loop.h): one epoll set for the caller's fds (the HTTP client's
 * sockets among them) and a signalfd; timers in a binary min-heap whose first deadline becomes
 * epoll_wait's timeout. Built for otter-sim too, which runs ~100,000 simulated devices on one
 * loop: ~100k live timers being cancelled and re-armed all the time, thousands of fds, hundreds
 * of transfers. So every operation is O(1) or O(log n), and nothing the loop keeps is searched
 * linearly:
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
 *
 * Re-entrancy: every callback may add or remove fds and timers, its own included.
 * Therefore epoll carries a watch's (generation, fd) (never a pointer) and each event is looked
 * up again before it is dispatched: an event for a watch that an earlier callback of the same
 * batch removed, or removed and added again, finds no watch or a newer generation and is dropped.
 * A timer's callback and userdata are copied out and its slot freed before it runs. */
#include <limits.h>
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

/* A watched fd, at its own index in the table. */
struct watch {
    uint32_t gen;              /* bumped by every add; with the fd, epoll's data */
    ag_fd_fn fn;               /* NULL: the fd is not watched */
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

    struct heap_entry *heap;      /* a min-heap of the armed timers by (due_ms, seq) */
    size_t nheap, heap_cap;
    struct timer_slot *slots;
    size_t nslots, slots_cap;     /* slots made so far (armed, free or retired) */
    uint32_t free_slot;           /* head of the free list, SLOT_NONE when empty */
    uint64_t last_timer_seq;

    struct watch *watches;        /* indexed by fd; fn NULL where nothing is watched */
    size_t nwatches;              /* the table's length (fds 0 .. nwatches - 1) */

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

/* fd's watch, or NULL. */
static struct watch *watch_find(struct ag_loop *l, int fd)
{
    if (fd < 0 || (size_t)fd >= l->nwatches || !l->watches[fd].fn)
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

/* Watches fd (ag_loop_fd refuses one watched already). An entry still holding a watch whose fd
 * was closed without it being removed is replaced: epoll forgot that one with the fd, which is
 * why the EPOLL_CTL_ADD succeeds. */
static enum ot_err watch_add(struct ag_loop *l, int fd, uint32_t events, ag_fd_fn fn,
                             void *userdata, struct ot_diag *d)
{
    if (!watch_table_reach(l, fd))
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    uint32_t gen = l->watches[fd].gen + 1;
    struct epoll_event ev = {.events = events, .data.u64 = watch_key(gen, fd)};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot watch fd %d", fd);
    l->watches[fd] = (struct watch){.gen = gen, .fn = fn, .userdata = userdata};
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
    if (watch_find(l, fd))
        return ot_diag_set(d, OT_ERR_EXISTS, "fd %d is watched already", fd);
    return watch_add(l, fd, events, fn, userdata, d);
}

enum ot_err ag_loop_fd_modify(struct ag_loop *l, int fd, uint32_t events)
{
    struct watch *w = watch_find(l, fd);
    if (!w)
        return OT_ERR_NOENT;
    struct epoll_event ev = {.events = events, .data.u64 = watch_key(w->gen, fd)};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? OT_ERR_IO : OT_OK;
}

void ag_loop_fd_remove(struct ag_loop *l, int fd)
{
    if (watch_find(l, fd))
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
        enum ot_err err = watch_add(l, fd, EPOLLIN, on_signalfd, l, d);
        if (err) {
            close(fd);
            return err;
        }
        l->sigfd = fd;
    }
    l->sig[signo] = (struct sig_handler){fn, userdata};
    return OT_OK;
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* Runs the event's watch, unless an earlier callback of this batch removed it (maybe adding
 * another watch on the same fd number, which has a newer generation). */
static void dispatch(struct ag_loop *l, uint64_t key, uint32_t events)
{
    int fd = (int)(uint32_t)key;
    uint32_t gen = (uint32_t)(key >> 32);
    if (!watch_find(l, fd) || l->watches[fd].gen != gen)
        return;
    struct watch copy = l->watches[fd]; /* the table may move while the callback runs */
    copy.fn(copy.userdata, fd, events);
}

/* epoll_wait's timeout: until the first timer; -1 when there is none. */
static int wait_timeout(struct ag_loop *l)
{
    uint64_t due = l->nheap > 0 ? l->heap[0].due_ms : NO_DEADLINE;
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
    struct ag_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    l->sigfd = -1;
    l->free_slot = SLOT_NONE;
    sigemptyset(&l->sigmask);
    sigemptyset(&l->blocked_by_us);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        enum ot_err err = ot_diag_errno(d, OT_ERR_IO, errno, "epoll_create1");
        free(l);
        return err;
    }
    *ret = l;
    return OT_OK;
}

/* Signals this loop blocked are unblocked again. Not from inside one of the loop's callbacks. */
void ag_loop_free(struct ag_loop *l)
{
    if (!l)
        return;
    if (l->sigfd >= 0) {
        close(l->sigfd);
        sigprocmask(SIG_UNBLOCK, &l->blocked_by_us, NULL);
    }
    close(l->epfd);
    free(l->heap);
    free(l->slots);
    free(l->watches);
    free(l);
}
