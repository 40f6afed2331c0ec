/* The agent's event loop (src/agent/loop.c) at the scale otter-sim runs it: hundreds of
 * thousands of timers fired, cancelled and re-armed, and the re-entrancy rules of its header
 * comment (stale timer ids, fd watches removed and added again inside one epoll batch, no
 * starvation of fds by a timer that re-arms itself at 0 ms). Real epoll, real pipes, real time.
 *
 * Firing order: every timer fires after the ones due earlier, and after the ones due at the same
 * millisecond but created earlier, across rounds too (a timer made in a round is due no earlier
 * than the timers that round fires). The test cannot see the loop's clock at ag_loop_timer, so it
 * notes the clock before and after each call: the deadline lies in [lo, hi]; an order is wrong
 * when it is wrong for every deadline in those bounds.
 *
 * Every run is bounded: a watchdog timer stops it, and every callback chain has a count limit. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/epoll.h>

#include <cmocka.h>

#include "loop.h"

#define MANY 200000
#define WATCHDOG_MS 30000
#define WATCHDOG_CODE 99
#define SPIN_MAX 100000 /* rounds a re-arming timer may run */

/* ---- fixture ------------------------------------------------------------------------------- */

struct tl;

/* One timer the test armed. */
struct rec {
    struct tl *t;
    uint64_t id;
    uint64_t lo, hi;   /* bounds of its deadline */
    uint64_t seq;      /* order of creation */
    int fired;
    bool cancelled;
    bool early;        /* fired before its earliest possible deadline */
};

struct tl {
    struct ag_loop *l;
    struct rec *recs;
    size_t nrecs, cap;
    size_t *log;       /* indices into recs, in firing order */
    size_t nlog;
    size_t pending;    /* armed, neither fired nor cancelled */
    uint64_t seq;
    uint64_t rng;
    void (*hook)(struct tl *t, struct rec *r); /* runs in each rec's callback */
    int spins, fd_events, rounds, rounds_at_swap, rounds_at_new, stale_calls;
    int fds[4];
};

static int setup(void **state)
{
    struct tl *t = calloc(1, sizeof(*t));
    struct ot_diag d = {0};
    assert_non_null(t);
    assert_int_equal(ag_loop_new(&t->l, &d), OT_OK);
    t->cap = 2 * MANY;
    t->recs = calloc(t->cap, sizeof(*t->recs));
    t->log = calloc(t->cap, sizeof(*t->log));
    assert_non_null(t->recs);
    assert_non_null(t->log);
    t->rng = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < OT_ARRAY_SIZE(t->fds); i++)
        t->fds[i] = -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tl *t = *state;
    ag_loop_free(t->l);
    for (size_t i = 0; i < OT_ARRAY_SIZE(t->fds); i++)
        if (t->fds[i] >= 0)
            close(t->fds[i]);
    free(t->recs);
    free(t->log);
    free(t);
    return 0;
}

/* xorshift64: the same sequence on every run. */
static uint64_t rnd(struct tl *t, uint64_t n)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng % n;
}

static void on_watchdog(void *userdata) { ag_loop_stop(userdata, WATCHDOG_CODE); }

/* Runs the loop until something stops it, WATCHDOG_MS at most. */
static int run(struct tl *t)
{
    uint64_t dog = ag_loop_timer(t->l, WATCHDOG_MS, on_watchdog, t->l);
    assert_int_not_equal(dog, 0);
    int code = ag_loop_run(t->l);
    ag_loop_timer_cancel(t->l, dog);
    return code;
}

/* ---- timers the test keeps track of -------------------------------------------------------- */

static void on_rec(void *userdata)
{
    struct rec *r = userdata;
    struct tl *t = r->t;
    r->fired++;
    r->early |= ag_loop_now_ms() < r->lo;
    if (t->nlog < t->cap)
        t->log[t->nlog++] = (size_t)(r - t->recs);
    t->pending--;
    if (t->hook)
        t->hook(t, r);
    if (t->pending == 0)
        ag_loop_stop(t->l, 0);
}

static struct rec *arm(struct tl *t, uint64_t ms)
{
    assert_true(t->nrecs < t->cap);
    struct rec *r = &t->recs[t->nrecs++];
    r->t = t;
    r->seq = ++t->seq;
    r->lo = ag_loop_now_ms() + ms;
    r->id = ag_loop_timer(t->l, ms, on_rec, r);
    r->hi = ag_loop_now_ms() + ms;
    assert_int_not_equal(r->id, 0);
    t->pending++;
    return r;
}

static void cancel(struct tl *t, struct rec *r)
{
    ag_loop_timer_cancel(t->l, r->id);
    if (!r->fired && !r->cancelled) {
        r->cancelled = true;
        t->pending--;
    }
}

/* Every timer fired once unless cancelled, never early, and in (deadline, creation) order. */
static void check_fired(struct tl *t)
{
    size_t want = 0;
    for (size_t i = 0; i < t->nrecs; i++) {
        const struct rec *r = &t->recs[i];
        assert_int_equal(r->fired, r->cancelled ? 0 : 1);
        assert_false(r->early);
        want += !r->cancelled;
    }
    assert_int_equal(t->nlog, want);
    for (size_t k = 1; k < t->nlog; k++) {
        const struct rec *a = &t->recs[t->log[k - 1]], *b = &t->recs[t->log[k]];
        assert_false(b->hi < a->lo); /* b was due before a, whatever the exact deadlines */
        if (a->lo == a->hi && b->lo == b->hi && a->lo == b->lo)
            assert_true(a->seq < b->seq);
    }
}

/* ---- timer tests --------------------------------------------------------------------------- */

/* Deadlines over 16 ms: thousands of ties each, which must keep their order of creation. */
static void test_many_timers_in_order(void **state)
{
    struct tl *t = *state;
    for (size_t i = 0; i < MANY; i++)
        arm(t, rnd(t, 16));
    assert_int_equal(run(t), 0);
    check_fired(t);
    assert_int_equal(t->nlog, MANY);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Half of them cancelled at random, some twice; 0, fired and made-up ids change nothing. Then
 * the slots the fired and cancelled timers leave are reused, and cancelling every old id again
 * must not touch the new timers. */
static void test_cancel_random_half(void **state)
{
    struct tl *t = *state;
    size_t *order = calloc(MANY, sizeof(*order));
    assert_non_null(order);
    for (size_t i = 0; i < MANY; i++) {
        arm(t, rnd(t, 32));
        order[i] = i;
    }
    for (size_t i = MANY - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = rnd(t, i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (size_t i = 0; i < MANY / 2; i++)
        cancel(t, &t->recs[order[i]]);
    for (size_t i = 0; i < MANY / 2; i += 7)
        ag_loop_timer_cancel(t->l, t->recs[order[i]].id);
    ag_loop_timer_cancel(t->l, 0);
    ag_loop_timer_cancel(t->l, UINT64_MAX);
    ag_loop_timer_cancel(t->l, (uint64_t)1 << 32 | 0xfffffffeu);
    assert_int_equal(t->pending, MANY / 2);
    assert_int_equal(run(t), 0);
    check_fired(t);
    assert_int_equal(t->nlog, MANY / 2);

    for (size_t i = 0; i < MANY; i++) /* fired or cancelled: all stale now */
        ag_loop_timer_cancel(t->l, t->recs[i].id);
    size_t first_new = t->nrecs;
    for (size_t i = 0; i < MANY / 4; i++)
        arm(t, rnd(t, 8));
    for (size_t i = 0; i < first_new; i++)
        ag_loop_timer_cancel(t->l, t->recs[i].id);
    assert_int_equal(run(t), 0);
    check_fired(t);
    assert_int_equal(t->nlog, MANY / 2 + MANY / 4);

    uint64_t *ids = calloc(t->nrecs, sizeof(*ids)); /* no id was handed out twice */
    assert_non_null(ids);
    for (size_t i = 0; i < t->nrecs; i++)
        ids[i] = t->recs[i].id;
    qsort(ids, t->nrecs, sizeof(*ids), cmp_u64);
    for (size_t i = 1; i < t->nrecs; i++)
        assert_true(ids[i - 1] < ids[i]);
    free(ids);
    free(order);
}

/* Stale ids on reused slots, one of a cancelled timer and one of a fired one. */
static void test_stale_id_after_reuse(void **state)
{
    struct tl *t = *state;
    struct rec *a = arm(t, 0);
    cancel(t, a);
    struct rec *b = arm(t, 0);
    assert_true(b->id != a->id);
    ag_loop_timer_cancel(t->l, a->id);
    assert_int_equal(run(t), 0);
    assert_int_equal(b->fired, 1);

    /* Two slots are free now (b's and the watchdog's): c and d take both. */
    struct rec *c = arm(t, 0), *d = arm(t, 0);
    ag_loop_timer_cancel(t->l, a->id);
    ag_loop_timer_cancel(t->l, b->id); /* fired */
    assert_true(c->id != a->id && c->id != b->id && d->id != a->id && d->id != b->id);
    assert_int_equal(run(t), 0);
    assert_int_equal(c->fired, 1);
    assert_int_equal(d->fired, 1);
    check_fired(t);
}

/* The first timer of a round cancels every odd one of the 1000 due with it, and its own id (it
 * fired: a no-op); a later one cancels a timer due later. */
static void cancel_odd(struct tl *t, struct rec *r)
{
    if (r == &t->recs[0]) {
        for (size_t i = 1; i < t->nrecs && i <= 1000; i += 2)
            cancel(t, &t->recs[i]);
        ag_loop_timer_cancel(t->l, r->id);
    }
    if (r == &t->recs[500])
        cancel(t, &t->recs[1001]);
}

static void test_callback_cancels_same_round(void **state)
{
    struct tl *t = *state;
    for (size_t i = 0; i <= 1000; i++)
        arm(t, 0);
    arm(t, 5);                   /* recs[1001], cancelled by recs[500] */
    arm(t, 10);                  /* recs[1002] */
    t->hook = cancel_odd;
    assert_int_equal(run(t), 0);
    check_fired(t);
    assert_int_equal(t->nlog, 1 + 500 + 1);
    assert_int_equal(t->recs[1002].fired, 1);
    for (size_t k = 0; k + 1 < t->nlog; k++) /* the evens, in order */
        assert_int_equal(t->log[k], 2 * k);
}

/* Callbacks keep cancelling random pending timers and arming new ones at random: the heap is
 * changed from inside its own traversal. The order must hold throughout. */
static void churn(struct tl *t, struct rec *r)
{
    if (t->nrecs + 2 > t->cap || t->nrecs > MANY / 2)
        return;
    struct rec *victim = &t->recs[rnd(t, t->nrecs)];
    cancel(t, victim); /* maybe fired or cancelled already: then a no-op */
    arm(t, rnd(t, 4));
    if (rnd(t, 2))
        arm(t, rnd(t, 12));
}

static void test_timer_churn(void **state)
{
    struct tl *t = *state;
    for (size_t i = 0; i < 20000; i++)
        arm(t, rnd(t, 20));
    t->hook = churn;
    assert_int_equal(run(t), 0);
    assert_true(t->nrecs > MANY / 2);
    check_fired(t);
}

/* ---- fds ----------------------------------------------------------------------------------- */

/* A 0 ms timer that re-arms itself makes the pipe readable in its 10th round: the fd's callback
 * must come within a round or two. */
static void on_spin(void *userdata)
{
    struct tl *t = userdata;
    if (++t->spins == 10)
        assert_int_equal(write(t->fds[1], "x", 1), 1);
    if (t->spins < SPIN_MAX)
        ag_loop_timer(t->l, 0, on_spin, t);
}

static void on_pipe_stop(void *userdata, int fd, uint32_t events)
{
    struct tl *t = userdata;
    char c;
    if (read(fd, &c, 1) == 1)
        t->fd_events++;
    ag_loop_stop(t->l, 0);
}

static void test_rearming_timer_does_not_starve_fd(void **state)
{
    struct tl *t = *state;
    struct ot_diag d = {0};
    assert_int_equal(pipe2(t->fds, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(ag_loop_fd(t->l, t->fds[0], EPOLLIN, on_pipe_stop, t, &d), OT_OK);
    assert_int_equal(ag_loop_fd(t->l, t->fds[0], EPOLLIN, on_pipe_stop, t, &d), OT_ERR_EXISTS);
    assert_int_not_equal(ag_loop_timer(t->l, 0, on_spin, t), 0);
    assert_int_equal(run(t), 0);
    assert_int_equal(t->fd_events, 1);
    assert_in_range(t->spins, 10, 12);
}

/* Counts the loop's rounds: a 0 ms timer runs once per round. */
static void on_round(void *userdata)
{
    struct tl *t = userdata;
    if (++t->rounds < SPIN_MAX)
        ag_loop_timer(t->l, 0, on_round, t);
}

static void on_new(void *userdata, int fd, uint32_t events)
{
    struct tl *t = userdata;
    char c;
    if (read(fd, &c, 1) == 1 && c == 'n')
        t->rounds_at_new = t->rounds;
    ag_loop_fd_remove(t->l, fd);
    ag_loop_stop(t->l, 0);
}

/* Pipes A (fds 0, 1) and B (fds 2, 3) are both readable before the loop waits, so both events
 * come in one batch. Whichever callback runs first takes the other pipe's watch away and watches
 * the same fd number again with on_new; the other's event, still in the batch, must be dropped
 * (never reach the old callback, nor on_new in this round). With close_it, the other pipe is
 * closed and a new one made first, which gets the same fd numbers (the kernel takes the lowest
 * free ones). */
static void swap_other(struct tl *t, int fd, bool close_it)
{
    struct ot_diag d = {0};
    char c;
    if (read(fd, &c, 1) != 1 || t->rounds_at_swap >= 0) { /* the swapped watch's old event */
        t->stale_calls++;
        return;
    }
    t->rounds_at_swap = t->rounds;
    int *other = fd == t->fds[0] ? &t->fds[2] : &t->fds[0];
    int rfd = other[0], wfd = other[1];
    ag_loop_fd_remove(t->l, rfd);
    if (close_it) {
        close(rfd);
        close(wfd);
        other[0] = other[1] = -1;
        assert_int_equal(pipe2(other, O_CLOEXEC | O_NONBLOCK), 0);
        assert_int_equal(other[0], rfd); /* otherwise this test proves less than it should */
    } else {
        assert_int_equal(read(rfd, &c, 1), 1);
    }
    assert_int_equal(write(other[1], "n", 1), 1);
    assert_int_equal(ag_loop_fd(t->l, rfd, EPOLLIN, on_new, t, &d), OT_OK);
}

static void on_swap_keep(void *userdata, int fd, uint32_t events) { swap_other(userdata, fd, false); }
static void on_swap_close(void *userdata, int fd, uint32_t events) { swap_other(userdata, fd, true); }

static void fd_readd_in_batch(struct tl *t, ag_fd_fn fn)
{
    struct ot_diag d = {0};
    assert_int_equal(pipe2(&t->fds[0], O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(pipe2(&t->fds[2], O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(write(t->fds[1], "a", 1), 1);
    assert_int_equal(write(t->fds[3], "b", 1), 1);
    t->rounds_at_swap = t->rounds_at_new = -1;
    assert_int_equal(ag_loop_fd(t->l, t->fds[0], EPOLLIN, fn, t, &d), OT_OK);
    assert_int_equal(ag_loop_fd(t->l, t->fds[2], EPOLLIN, fn, t, &d), OT_OK);
    assert_int_not_equal(ag_loop_timer(t->l, 0, on_round, t), 0);
    assert_int_equal(run(t), 0);
    assert_int_equal(t->rounds_at_swap, 0); /* both events came before any round's timers */
    assert_int_equal(t->rounds_at_new, 1);  /* in the next batch, not from the stale event */
    assert_int_equal(t->stale_calls, 0);
}

static void test_fd_readd_same_fd_in_batch(void **state) { fd_readd_in_batch(*state, on_swap_keep); }

static void test_fd_reopen_same_number_in_batch(void **state)
{
    fd_readd_in_batch(*state, on_swap_close);
}

/* An fd far above the table's first size (it grows to reach it); removing what is not watched,
 * or a negative fd, does nothing. */
static void test_fd_high_number(void **state)
{
    struct tl *t = *state;
    struct ot_diag d = {0};
    assert_int_equal(pipe2(t->fds, O_CLOEXEC | O_NONBLOCK), 0);
    t->fds[2] = fcntl(t->fds[0], F_DUPFD_CLOEXEC, 700);
    assert_true(t->fds[2] >= 700);
    ag_loop_fd_remove(t->l, t->fds[2]);
    ag_loop_fd_remove(t->l, -1);
    ag_loop_fd_remove(t->l, 100000);
    assert_int_equal(ag_loop_fd(t->l, -1, EPOLLIN, on_pipe_stop, t, &d), OT_ERR_INVALID);
    assert_int_equal(ag_loop_fd(t->l, t->fds[2], EPOLLIN, on_pipe_stop, t, &d), OT_OK);
    assert_int_equal(write(t->fds[1], "x", 1), 1);
    assert_int_equal(run(t), 0);
    assert_int_equal(t->fd_events, 1);
    ag_loop_fd_remove(t->l, t->fds[2]);
    assert_int_equal(ag_loop_fd(t->l, t->fds[2], EPOLLIN, on_pipe_stop, t, &d), OT_OK);
}

/* ---- transfers ----------------------------------------------------------------------------- */

#define XFERS 120

struct xfer {
    struct tl *t;
    CURL *easy;
    int done;
    CURLcode rc;
    bool cancelled, wrong_handle;
    size_t order;      /* 1 + how many transfers had called back before this one */
};

static size_t xfers_done;

static size_t sink(char *p, size_t size, size_t n, void *userdata) { return size * n; }

static void on_transfer(void *userdata, CURL *easy, CURLcode result, long status)
{
    struct xfer *x = userdata;
    x->done++;
    x->order = ++xfers_done;
    x->rc = result;
    x->wrong_handle |= easy != x->easy;
    if (--x->t->pending == 0)
        ag_loop_stop(x->t->l, 0);
}

/* Cancelling NULL or a handle the loop does not run does nothing; one it runs is taken off the
 * multi handle (so it can be started again) and its callback never comes. */
static void cancel_unknown(struct tl *t, struct xfer *x)
{
    struct ot_diag d = {0};
    ag_loop_transfer_cancel(t->l, NULL);
    ag_loop_transfer_cancel(t->l, x[0].easy);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < XFERS; i++)
            assert_int_equal(ag_loop_transfer(t->l, x[i].easy, on_transfer, &x[i], &d), OT_OK);
        for (size_t i = 0; i < XFERS; i++) { /* from the middle: others change places */
            size_t k = (i * 7 + (size_t)round) % XFERS;
            ag_loop_transfer_cancel(t->l, x[k].easy);
            ag_loop_transfer_cancel(t->l, x[k].easy);
        }
    }
}

/* Real transfers without a network: file:// ones, which complete, and http:// ones to a loopback
 * port nobody listens on, refused (curl's sockets go through the loop's fd table). A random
 * third is cancelled; the others each call back once, with their own handle. */
static void run_transfers(struct tl *t, size_t limit)
{
    struct ot_diag d = {0};
    struct xfer x[XFERS] = {0};
    char path[] = "/tmp/otter-loop-XXXXXX", url[64];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    for (size_t i = 0; i < XFERS; i++) {
        x[i] = (struct xfer){.t = t, .easy = curl_easy_init(), .rc = CURLE_OK};
        assert_non_null(x[i].easy);
        if (i % 2)
            snprintf(url, sizeof(url), "file://%s", path);
        else
            snprintf(url, sizeof(url), "http://127.0.0.1:1/");
        curl_easy_setopt(x[i].easy, CURLOPT_URL, url);
        curl_easy_setopt(x[i].easy, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(x[i].easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(x[i].easy, CURLOPT_NOPROXY, "*"); /* whatever http_proxy says */
    }
    cancel_unknown(t, x);
    ag_loop_limit_transfers(t->l, limit);
    xfers_done = 0;
    for (size_t i = 0; i < XFERS; i++) {
        assert_int_equal(ag_loop_transfer(t->l, x[i].easy, on_transfer, &x[i], &d), OT_OK);
        t->pending++;
    }
    for (size_t i = 0; i < XFERS; i++)
        if (rnd(t, 3) == 0) {
            ag_loop_transfer_cancel(t->l, x[i].easy);
            x[i].cancelled = true;
            t->pending--;
        }
    assert_int_equal(run(t), 0);
    for (size_t i = 0; i < XFERS; i++) {
        assert_int_equal(x[i].done, x[i].cancelled ? 0 : 1);
        assert_false(x[i].wrong_handle);
        if (!x[i].cancelled)
            assert_int_equal(x[i].rc, i % 2 ? CURLE_OK : CURLE_COULDNT_CONNECT);
    }
    /* One at a time: they start, and so end, in the order they were given (the cancelled ones,
     * queued or running, skipped). */
    for (size_t i = 0, last = 0; limit == 1 && i < XFERS; i++)
        if (!x[i].cancelled) {
            assert_true(x[i].order > last);
            last = x[i].order;
        }
    for (size_t i = 0; i < XFERS; i++)
        curl_easy_cleanup(x[i].easy);
    unlink(path);
}

static void test_transfers(void **state) { run_transfers(*state, 0); }

/* With a cap, the rest wait in the loop and still each end exactly once. */
static void test_transfers_limited(void **state)
{
    run_transfers(*state, 1);
    run_transfers(*state, 7);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_many_timers_in_order),
        T(test_cancel_random_half),
        T(test_stale_id_after_reuse),
        T(test_callback_cancels_same_round),
        T(test_timer_churn),
        T(test_rearming_timer_does_not_starve_fd),
        T(test_fd_readd_same_fd_in_batch),
        T(test_fd_reopen_same_number_in_batch),
        T(test_fd_high_number),
        T(test_transfers),
        T(test_transfers_limited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
