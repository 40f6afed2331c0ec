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
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "http.h"
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

/* ---- HTTP transfers on the loop (src/agent/http.c) -------------------------------------------- */

#define XFERS 120
#define SRV_FDS 1024

/* A loopback HTTP/1.1 server on the same loop: every request (a head ending in an empty line) gets
 * "hello"; connections stay open until the client closes them. */
struct srv {
    struct ag_loop *l;
    int lfd;
    int port;
    char tail[SRV_FDS][4];   /* the last bytes seen on each connection */
    bool open[SRV_FDS];
    int accepted;
    int requests;
};

static void on_srv_conn(void *userdata, int fd, uint32_t events)
{
    struct srv *s = userdata;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        ag_loop_fd_remove(s->l, fd);
        close(fd);
        s->open[fd] = false;
        return;
    }
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    for (ssize_t i = 0; i < n; i++) {
        char *t = s->tail[fd];
        memmove(t, t + 1, 3);
        t[3] = buf[i];
        if (memcmp(t, "\r\n\r\n", 4) == 0) {
            s->requests++;
            assert_int_equal(write(fd, reply, sizeof(reply) - 1), (ssize_t)sizeof(reply) - 1);
        }
    }
}

static void on_srv_listen(void *userdata, int fd, uint32_t events)
{
    struct srv *s = userdata;
    struct ot_diag d = {0};
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    assert_true(c < SRV_FDS);
    memset(s->tail[c], 0, 4);
    s->open[c] = true;
    s->accepted++;
    assert_int_equal(ag_loop_fd(s->l, c, EPOLLIN, on_srv_conn, s, &d), OT_OK);
}

static void srv_start(struct srv *s, struct ag_loop *l)
{
    struct ot_diag d = {0};
    memset(s, 0, sizeof(*s));
    s->l = l;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 256), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(ag_loop_fd(l, s->lfd, EPOLLIN, on_srv_listen, s, &d), OT_OK);
}

static void srv_stop(struct srv *s)
{
    ag_loop_fd_remove(s->l, s->lfd);
    close(s->lfd);
    for (int fd = 0; fd < SRV_FDS; fd++)
        if (s->open[fd]) {
            ag_loop_fd_remove(s->l, fd);
            close(fd);
        }
}

struct xfer {
    struct tl *t;
    struct ag_http_xfer *x;
    int done;
    enum ot_err err;
    int status;
    char body[16];
    size_t body_len;
    bool cancelled;
    size_t order;      /* 1 + how many transfers had called back before this one */
};

static size_t xfers_done;

static enum ot_err on_body(void *userdata, const uint8_t *p, size_t n, struct ot_diag *d)
{
    struct xfer *x = userdata;
    if (x->body_len + n > sizeof(x->body))
        return ot_diag_set(d, OT_ERR_LIMIT, "too much");
    memcpy(x->body + x->body_len, p, n);
    x->body_len += n;
    return OT_OK;
}

static void on_xfer_done(void *userdata, const struct ag_http_result *r)
{
    struct xfer *x = userdata;
    x->done++;
    x->order = ++xfers_done;
    x->err = r->err;
    x->status = r->status;
    if (--x->t->pending == 0)
        ag_loop_stop(x->t->l, 0);
}

/* Starts x[i]: even ones to a loopback port nobody listens on (refused), odd ones to the server. */
static void start_xfer(struct ag_http *h, struct xfer *x, size_t i, int port)
{
    struct ot_diag d = {0};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", i % 2 ? port : 1);
    struct ag_http_request rq = {.method = "GET", .url = url, .connect_timeout_s = 5};
    x->x = ag_http_start(h, &rq, NULL, on_body, on_xfer_done, x, &d);
    assert_non_null(x->x);
}

/* Real transfers on loopback: half refused, half answered by a server on the same loop. A random
 * third is cancelled; the others each call back once, with their own outcome. Cancelling NULL
 * does nothing; transfers started and cancelled in bulk never call back. */
static void run_transfers(struct tl *t, size_t limit)
{
    struct ot_diag d = {0};
    struct xfer x[XFERS] = {0};
    struct srv *s = calloc(1, sizeof(*s));
    struct ag_http *h = NULL;
    assert_non_null(s);
    srv_start(s, t->l);
    assert_int_equal(ag_http_new(t->l, &h, &d), OT_OK);
    ag_http_cancel(NULL);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < XFERS; i++)
            start_xfer(h, &x[i], i, s->port);
        for (size_t i = 0; i < XFERS; i++) /* from the middle: others change places */
            ag_http_cancel(x[(i * 7 + (size_t)round) % XFERS].x);
    }
    ag_http_limit(h, limit);
    xfers_done = 0;
    for (size_t i = 0; i < XFERS; i++) {
        x[i] = (struct xfer){.t = t};
        start_xfer(h, &x[i], i, s->port);
        t->pending++;
    }
    for (size_t i = 0; i < XFERS; i++)
        if (rnd(t, 3) == 0) {
            ag_http_cancel(x[i].x);
            x[i].cancelled = true;
            t->pending--;
        }
    assert_int_equal(run(t), 0);
    int answered = 0;
    for (size_t i = 0; i < XFERS; i++) {
        assert_int_equal(x[i].done, x[i].cancelled ? 0 : 1);
        if (x[i].cancelled)
            continue;
        if (i % 2) {
            assert_int_equal(x[i].err, OT_OK);
            assert_int_equal(x[i].status, 200);
            assert_int_equal(x[i].body_len, 5);
            assert_memory_equal(x[i].body, "hello", 5);
            answered++;
        } else {
            assert_int_equal(x[i].err, OT_ERR_IO);
            assert_int_equal(x[i].status, 0);
        }
    }
    /* Kept-alive connections are reused: no more connections than requests, and with a cap of
     * one, a single connection serves them all. */
    assert_true(s->requests >= answered);
    assert_true(s->accepted <= s->requests);
    if (limit == 1)
        assert_int_equal(s->accepted, 1);
    /* One at a time: they start, and so end, in the order they were given (the cancelled ones,
     * queued or running, skipped). */
    for (size_t i = 0, last = 0; limit == 1 && i < XFERS; i++)
        if (!x[i].cancelled) {
            assert_true(x[i].order > last);
            last = x[i].order;
        }
    ag_http_free(h);
    srv_stop(s);
    free(s);
}

static void test_transfers(void **state) { run_transfers(*state, 0); }

/* With a cap, the rest wait and still each end exactly once. */
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
