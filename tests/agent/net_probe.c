/* net_probe: drives otter-agent's event loop (src/agent/loop.c) and device API client
 * (src/agent/net.c) from the command line, for tests/server/test_agent_net.py, which runs it
 * against the real otterd. One JSON object per line on stdout for every step.
 *
 *   net_probe loop
 *       self-checks of the loop: timer order and cancellation, re-entrant timers and fds, no
 *       starvation by a 0 ms timer that re-arms itself, signals (SIGUSR1 through signalfd), stop
 *       codes. Exit status 0 when every check passed.
 *
 *   net_probe net [--server URL]... [--allow-http] [--enroll TOKEN] [--key FILE]
 *                 [--identity K=V]... [--device-type T] [--stall S] [--timeout S]
 *                 [--connect-timeout S] [--ca FILE] [--pin SHA256]
 *                 [--client-cert FILE --client-key FILE] [--proxy URL] [--no-proxy LIST]
 *                 STEP...
 *       --key FILE is created (a new Ed25519 identity key) when it does not exist. Steps:
 *         checkin
 *         burst,n=N                      N check-ins at once (they share one authentication)
 *         report,dep=ID,status=S[,progress=P][,message=M]
 *         inventory[,replace=1][,KEY=VALUE]...      (KEY= with nothing deletes KEY)
 *         download,url=U[,offset=N][,etag=E][,rate=BYTES_PER_S][,pause_at=B,pause_ms=MS]
 *                  [,cancel_at=B][,checkin_at=B][,free_at=B]
 *             the *_at actions run inside the data callback once B bytes arrived: pause (and
 *             resume after MS), cancel, start a check-in, or free the whole client (it is made
 *             again for the next step)
 *         stdin                          waits (on the loop) for a line on stdin
 *         sleep,ms=N
 *       Exit status 0 when every step ran (whatever the server answered: the test judges). */
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include "otter/encoding.h"
#include "otter/hash.h"
#include "otter/json.h"
#include "otter/key.h"
#include "otter/parse.h"

#include "loop.h"
#include "net.h"

#define STEP_TIMEOUT_MS 60000
#define ARGS_MAX 32

static int failures;

/* ---- output ---------------------------------------------------------------------------------- */

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (s) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(o);
}

static void check(const char *name, bool ok, const char *detail)
{
    if (!ok)
        failures++;
    emit(json_pack("{s:s, s:b, s:s}", "check", name, "ok", ok, "detail", detail ? detail : ""));
}

static json_t *result_json(const char *step, const struct ag_net_result *r)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "step", step, "err", ot_err_name(r->err), "msg",
                     r->err ? r->diag.msg : "", "http_status", (json_int_t)r->http_status,
                     "retry_after", (json_int_t)r->retry_after);
}

/* ---- loop self-checks ------------------------------------------------------------------------ */

struct lt {
    struct ag_loop *l;
    char order[64];
    size_t n;
    uint64_t ids[8];
    int count;
    int fd_events;
    int fds[2];
    int got_signal;
};

static void mark(struct lt *t, char c)
{
    if (t->n + 1 < sizeof(t->order))
        t->order[t->n++] = c;
    t->order[t->n] = '\0';
}

static struct lt *g_lt; /* timers carry a letter as userdata; the state is here */

static void on_letter(void *userdata)
{
    char c = (char)(intptr_t)userdata;
    mark(g_lt, c);
    if (c == 'z')
        ag_loop_stop(g_lt->l, 3);
}

static void check_timer_order(struct lt *t)
{
    t->n = 0;
    ag_loop_timer(t->l, 30, on_letter, (void *)(intptr_t)'d');
    ag_loop_timer(t->l, 10, on_letter, (void *)(intptr_t)'a');
    uint64_t gone = ag_loop_timer(t->l, 15, on_letter, (void *)(intptr_t)'x');
    ag_loop_timer(t->l, 20, on_letter, (void *)(intptr_t)'c');
    ag_loop_timer(t->l, 10, on_letter, (void *)(intptr_t)'b');
    ag_loop_timer(t->l, 40, on_letter, (void *)(intptr_t)'z');
    ag_loop_timer_cancel(t->l, gone);
    uint64_t t0 = ag_loop_now_ms();
    int code = ag_loop_run(t->l);
    uint64_t took = ag_loop_now_ms() - t0;
    check("timer_order", strcmp(t->order, "abcdz") == 0 && code == 3, t->order);
    check("timer_not_early", took >= 40, NULL);
}

/* A fires first (0 ms), adds B and cancels C (also due); B runs in the next round. */
static void on_a(void *userdata)
{
    struct lt *t = userdata;
    mark(t, 'A');
    t->ids[1] = ag_loop_timer(t->l, 0, on_letter, (void *)(intptr_t)'B');
    ag_loop_timer_cancel(t->l, t->ids[2]);
    ag_loop_timer(t->l, 5, on_letter, (void *)(intptr_t)'z');
}

static void check_timer_reentrant(struct lt *t)
{
    t->n = 0;
    ag_loop_timer(t->l, 0, on_a, t);
    t->ids[2] = ag_loop_timer(t->l, 0, on_letter, (void *)(intptr_t)'C');
    ag_loop_run(t->l);
    check("timer_reentrant", strcmp(t->order, "ABz") == 0, t->order);
}

/* A 0 ms timer that re-arms itself must let fd events through: it makes the pipe readable in
 * its 10th round, and the fd's callback must come within a round or two. */
static void on_spin(void *userdata)
{
    struct lt *t = userdata;
    if (++t->count == 10 && write(t->fds[1], "x", 1) != 1)
        return;
    if (t->count < 100000)
        ag_loop_timer(t->l, 0, on_spin, t);
}

static void on_pipe_stop(void *userdata, int fd, uint32_t events)
{
    struct lt *t = userdata;
    char c;
    if (read(fd, &c, 1) == 1)
        t->fd_events++;
    ag_loop_stop(t->l, 0);
}

static void check_no_starvation(struct lt *t)
{
    struct ot_diag d = {0};
    if (pipe2(t->fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        check("no_starvation", false, "pipe");
        return;
    }
    t->count = t->fd_events = 0;
    if (ag_loop_fd(t->l, t->fds[0], EPOLLIN, on_pipe_stop, t, &d)) {
        check("no_starvation", false, d.msg);
        return;
    }
    enum ot_err again = ag_loop_fd(t->l, t->fds[0], EPOLLIN, on_pipe_stop, t, &d);
    check("fd_watch_twice_refused", again == OT_ERR_EXISTS, d.msg);
    ag_loop_timer(t->l, 0, on_spin, t);
    ag_loop_run(t->l);
    char detail[64];
    snprintf(detail, sizeof(detail), "fd seen after timer round %d", t->count);
    check("no_starvation", t->fd_events == 1 && t->count >= 10 && t->count <= 12, detail);
    ag_loop_fd_remove(t->l, t->fds[0]);
    close(t->fds[0]);
    close(t->fds[1]);
    t->count = 100000; /* the spinning timer is still armed: its next round is its last */
}

/* The first fd's callback removes and closes its fd, then watches a new pipe (which may get the
 * same fd number) and writes to it: only the new watch may see events from then on. */
static void on_second(void *userdata, int fd, uint32_t events)
{
    struct lt *t = userdata;
    char c;
    if (read(fd, &c, 1) == 1 && c == '2')
        mark(t, '2');
    ag_loop_fd_remove(t->l, fd);
    ag_loop_stop(t->l, 0);
}

static void on_first(void *userdata, int fd, uint32_t events)
{
    struct lt *t = userdata;
    struct ot_diag d = {0};
    mark(t, '1');
    ag_loop_fd_remove(t->l, fd);
    close(t->fds[0]);
    close(t->fds[1]);
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return;
    t->fds[0] = p[0];
    t->fds[1] = p[1];
    if (ag_loop_fd(t->l, p[0], EPOLLIN, on_second, t, &d) || write(p[1], "2", 1) != 1)
        mark(t, '!');
}

static void check_fd_reentrant(struct lt *t)
{
    struct ot_diag d = {0};
    t->n = 0;
    if (pipe2(t->fds, O_CLOEXEC | O_NONBLOCK) < 0 || write(t->fds[1], "1", 1) != 1 ||
        ag_loop_fd(t->l, t->fds[0], EPOLLIN, on_first, t, &d)) {
        check("fd_reentrant", false, "setup");
        return;
    }
    ag_loop_run(t->l);
    check("fd_reentrant", strcmp(t->order, "12") == 0, t->order);
    close(t->fds[0]);
    close(t->fds[1]);
}

static void on_signal(void *userdata, int signo)
{
    struct lt *t = userdata;
    t->got_signal = signo;
    ag_loop_stop(t->l, 7);
}

static void check_signal(struct lt *t)
{
    struct ot_diag d = {0};
    if (ag_loop_signal(t->l, SIGUSR1, on_signal, t, &d)) {
        check("signal", false, d.msg);
        return;
    }
    raise(SIGUSR1); /* blocked: waits in the signalfd */
    ag_loop_timer(t->l, 5000, on_letter, (void *)(intptr_t)'z'); /* a bound, if it never comes */
    int code = ag_loop_run(t->l);
    check("signal", t->got_signal == SIGUSR1 && code == 7, NULL);
}

static int run_loop_checks(void)
{
    struct lt t = {0};
    struct ot_diag d = {0};
    g_lt = &t;
    if (ag_loop_new(&t.l, &d)) {
        check("loop_new", false, d.msg);
        return 1;
    }
    ag_loop_stop(t.l, 9);
    check("stop_before_run", ag_loop_run(t.l) == 9, NULL);
    check_timer_order(&t);
    check_timer_reentrant(&t);
    check_no_starvation(&t);
    check_fd_reentrant(&t);
    check_signal(&t);
    ag_loop_free(t.l);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    check("signal_unblocked_after_free", !sigismember(&now, SIGUSR1), NULL);
    return failures ? 1 : 0;
}

/* ---- the net probe --------------------------------------------------------------------------- */

struct probe {
    struct ag_loop *loop;
    struct ag_net *net;
    struct ag_net_config cfg;
    const char *servers[16];
    struct ot_wire_kv identity[16];
    struct ot_key key;
    const char *step;            /* the current step's name, for its result line */
    int pending;                 /* callbacks the current step still waits for */
    uint64_t watchdog;
};

/* Options of one step: "name,k=v,k=v". */
struct step_args {
    char *name;
    char *keys[ARGS_MAX], *values[ARGS_MAX];
    size_t n;
};

static const char *arg(const struct step_args *a, const char *key)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->keys[i], key) == 0)
            return a->values[i];
    return NULL;
}

static uint64_t arg_u64(const struct step_args *a, const char *key, uint64_t dflt)
{
    const char *v = arg(a, key);
    uint64_t x;
    if (!v)
        return dflt;
    if (ot_parse_u64(v, 0, UINT64_MAX, &x)) {
        fprintf(stderr, "net_probe: %s=%s: not a number\n", key, v);
        exit(2);
    }
    return x;
}

static void parse_step(char *s, struct step_args *a)
{
    memset(a, 0, sizeof(*a));
    char *save = NULL;
    a->name = strtok_r(s, ",", &save);
    for (char *kv; a->n < ARGS_MAX && (kv = strtok_r(NULL, ",", &save));) {
        char *eq = strchr(kv, '=');
        a->keys[a->n] = kv;
        a->values[a->n++] = eq ? (*eq = '\0', eq + 1) : (char *)"";
    }
}

static void step_done(struct probe *p)
{
    if (--p->pending == 0)
        ag_loop_stop(p->loop, 0);
}

static void on_watchdog(void *userdata)
{
    struct probe *p = userdata;
    p->watchdog = 0;
    emit(json_pack("{s:s}", "error", "step timed out"));
    ag_loop_stop(p->loop, 1);
}

/* Runs the loop until the step's callbacks are all in (or the watchdog fires). */
static int wait_step(struct probe *p)
{
    p->watchdog = ag_loop_timer(p->loop, STEP_TIMEOUT_MS, on_watchdog, p);
    int code = ag_loop_run(p->loop);
    ag_loop_timer_cancel(p->loop, p->watchdog);
    return code;
}

static enum ot_err make_net(struct probe *p)
{
    struct ot_diag d = {0};
    enum ot_err err = ag_net_new(p->loop, &p->cfg, &p->net, &d);
    if (err)
        emit(json_pack("{s:s, s:s, s:s}", "step", "new", "err", ot_err_name(err), "msg", d.msg));
    return err;
}

/* -- checkin -- */

static json_t *checkin_json(const struct ag_net_result *r, const struct ot_wire_checkin_resp *c)
{
    json_t *o = result_json("checkin", r);
    if (!c)
        return o;
    char hex[OT_SHA256_HEX_LEN];
    json_t *urls = json_array();
    for (size_t i = 0; i < c->ndownload; i++)
        json_array_append_new(urls, json_string(c->download[i]));
    json_object_set_new(o, "action", json_string(c->action == OT_WIRE_ACTION_NONE ? "none"
                                                                                 : "install"));
    json_object_set_new(o, "poll_interval", json_integer(c->poll_interval));
    json_object_set_new(o, "download", urls);
    if (c->action == OT_WIRE_ACTION_INSTALL) {
        ot_hex_encode(c->artifact_sha256, OT_SHA256_LEN, hex);
        json_object_set_new(o, "deployment_id", json_integer(c->deployment_id));
        json_object_set_new(o, "artifact_sha256", json_string(hex));
        json_object_set_new(o, "artifact_size", json_integer((json_int_t)c->artifact_size));
    }
    return o;
}

static void on_checkin(void *userdata, const struct ag_net_result *r,
                       const struct ot_wire_checkin_resp *c)
{
    struct probe *p = userdata;
    emit(checkin_json(r, c));
    step_done(p);
}

static void start_checkin(struct probe *p, ag_net_checkin_fn fn, void *userdata)
{
    struct ot_wire_checkin_req req = {0};
    snprintf(req.device_type, sizeof(req.device_type), "%s", p->cfg.device_type);
    ag_net_checkin(p->net, &req, fn, userdata);
}

static void step_checkin(struct probe *p, const struct step_args *a)
{
    p->pending = 1;
    start_checkin(p, on_checkin, p);
    wait_step(p);
}

/* -- burst -- */

struct burst {
    struct probe *p;
    int ok, failed;
    char last_error[OT_DIAG_MSG_MAX];
};

static void on_burst(void *userdata, const struct ag_net_result *r,
                     const struct ot_wire_checkin_resp *c)
{
    struct burst *b = userdata;
    if (r->err) {
        b->failed++;
        snprintf(b->last_error, sizeof(b->last_error), "%s", r->diag.msg);
    } else {
        b->ok++;
    }
    step_done(b->p);
}

static void step_burst(struct probe *p, const struct step_args *a)
{
    struct burst b = {.p = p};
    int n = (int)arg_u64(a, "n", 10);
    p->pending = n;
    for (int i = 0; i < n; i++)
        start_checkin(p, on_burst, &b);
    wait_step(p);
    emit(json_pack("{s:s, s:i, s:i, s:s}", "step", "burst", "ok", b.ok, "failed", b.failed,
                   "last_error", b.last_error));
}

/* -- report and inventory -- */

static void on_done(void *userdata, const struct ag_net_result *r)
{
    struct probe *p = userdata;
    emit(result_json(p->step, r));
    step_done(p);
}

static void step_report(struct probe *p, const struct step_args *a)
{
    struct ot_wire_status_report rep = {.progress = -1, .message = (char *)""};
    const char *status = arg(a, "status");
    if (!status || ot_wire_status_parse(status, &rep.status)) {
        fprintf(stderr, "net_probe: report needs status=<name>\n");
        exit(2);
    }
    if (arg(a, "progress"))
        rep.progress = (int)arg_u64(a, "progress", 0);
    if (arg(a, "message"))
        rep.message = (char *)arg(a, "message");
    p->pending = 1;
    ag_net_report(p->net, (int64_t)arg_u64(a, "dep", 0), &rep, on_done, p);
    wait_step(p);
}

static void step_inventory(struct probe *p, const struct step_args *a)
{
    struct ot_wire_kv attrs[ARGS_MAX];
    struct ot_wire_inventory inv = {.attrs = attrs};
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->keys[i], "replace") == 0) {
            inv.replace = strcmp(a->values[i], "1") == 0;
            continue;
        }
        attrs[inv.nattrs].key = a->keys[i];
        attrs[inv.nattrs++].value = a->values[i][0] ? a->values[i] : NULL;
    }
    p->pending = 1;
    ag_net_inventory(p->net, &inv, on_done, p);
    wait_step(p);
}

/* -- download -- */

struct dl {
    struct probe *p;
    struct ag_download *h;
    struct ot_sha256 sha;
    uint64_t first, next, bytes;
    bool contiguous, started;
    uint64_t pause_at, pause_ms, cancel_at, checkin_at, free_at;
    bool paused, resumed, cancelled, freed, checkin_started;
    uint64_t paused_since, paused_for_ms, bytes_while_paused;
    bool done_after_cancel;
};

static void on_resume(void *userdata)
{
    struct dl *x = userdata;
    x->paused = false;
    x->resumed = true;
    x->paused_for_ms = ag_loop_now_ms() - x->paused_since;
    ag_net_download_pause(x->h, false);
}

static void on_cancel_settled(void *userdata)
{
    step_done(((struct dl *)userdata)->p);
}

static void on_dl_checkin(void *userdata, const struct ag_net_result *r,
                          const struct ot_wire_checkin_resp *c)
{
    struct dl *x = userdata;
    json_t *o = checkin_json(r, c);
    json_object_set_new(o, "step", json_string("checkin_during_download"));
    emit(o);
    step_done(x->p);
}

/* The actions a test asks for, from inside the data callback (what loop.h and net.h promise). */
static void dl_actions(struct dl *x)
{
    if (x->pause_at && !x->paused && !x->resumed && x->bytes >= x->pause_at) {
        x->paused = true;
        x->paused_since = ag_loop_now_ms();
        ag_net_download_pause(x->h, true);
        ag_loop_timer(x->p->loop, x->pause_ms, on_resume, x);
    }
    if (x->checkin_at && !x->checkin_started && x->bytes >= x->checkin_at) {
        x->checkin_started = true;
        x->p->pending++;
        start_checkin(x->p, on_dl_checkin, x);
    }
    if (x->cancel_at && !x->cancelled && x->bytes >= x->cancel_at) {
        x->cancelled = true;
        ag_net_download_cancel(x->h);
        /* done must not come: wait a little to see that it does not */
        ag_loop_timer(x->p->loop, 500, on_cancel_settled, x);
    }
    if (x->free_at && !x->freed && x->bytes >= x->free_at) {
        x->freed = true;
        ag_net_free(x->p->net);
        x->p->net = NULL;
        x->p->pending = 1; /* every callback is gone with the client */
        ag_loop_timer(x->p->loop, 300, on_cancel_settled, x);
    }
}

static enum ot_err on_data(void *userdata, uint64_t offset, const uint8_t *buf, size_t n,
                           struct ot_diag *d)
{
    struct dl *x = userdata;
    if (!x->started) {
        x->started = true;
        x->first = x->next = offset;
    }
    if (offset != x->next)
        x->contiguous = false;
    if (x->paused)
        x->bytes_while_paused += n;
    ot_sha256_update(&x->sha, buf, n);
    x->next = offset + n;
    x->bytes += n;
    dl_actions(x);
    return OT_OK;
}

static void on_dl_done(void *userdata, const struct ag_net_result *r)
{
    struct dl *x = userdata;
    if (x->cancelled || x->freed) {
        x->done_after_cancel = true;
        return;
    }
    x->p->step = "download";
    on_done(x->p, r);
}

static void step_download(struct probe *p, const struct step_args *a)
{
    struct dl x = {.p = p, .contiguous = true};
    if (ot_sha256_init(&x.sha))
        exit(1);
    x.pause_at = arg_u64(a, "pause_at", 0);
    x.pause_ms = arg_u64(a, "pause_ms", 1000);
    x.cancel_at = arg_u64(a, "cancel_at", 0);
    x.checkin_at = arg_u64(a, "checkin_at", 0);
    x.free_at = arg_u64(a, "free_at", 0);
    const char *url = arg(a, "url");
    p->pending = 1;
    x.h = ag_net_download(p->net, url ? url : "", arg_u64(a, "offset", 0), arg(a, "etag"),
                          arg_u64(a, "rate", 0), on_data, on_dl_done, &x);
    bool started = x.h != NULL;
    wait_step(p);
    uint8_t digest[OT_SHA256_LEN];
    char hex[OT_SHA256_HEX_LEN];
    ot_sha256_final(&x.sha, digest);
    ot_hex_encode(digest, sizeof(digest), hex);
    emit(json_pack("{s:s, s:b, s:I, s:I, s:s, s:b, s:b, s:b, s:b, s:I, s:I, s:b}",
                   "step", "download_data", "started", started, "bytes", (json_int_t)x.bytes,
                   "first_offset", (json_int_t)x.first, "sha256", hex, "contiguous",
                   x.contiguous, "resumed", x.resumed, "cancelled", x.cancelled, "freed", x.freed,
                   "paused_ms", (json_int_t)x.paused_for_ms, "bytes_while_paused",
                   (json_int_t)x.bytes_while_paused, "done_after_cancel", x.done_after_cancel));
    ot_sha256_release(&x.sha);
    if (x.freed && make_net(p))
        exit(1);
}

/* -- stdin and sleep -- */

static void on_stdin(void *userdata, int fd, uint32_t events)
{
    struct probe *p = userdata;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 || memchr(buf, '\n', (size_t)n)) {
        ag_loop_fd_remove(p->loop, fd);
        step_done(p);
    }
}

static void step_stdin(struct probe *p)
{
    struct ot_diag d = {0};
    emit(json_pack("{s:s}", "step", "waiting_for_stdin"));
    if (ag_loop_fd(p->loop, STDIN_FILENO, EPOLLIN, on_stdin, p, &d)) {
        fprintf(stderr, "net_probe: %s\n", d.msg);
        exit(1);
    }
    p->pending = 1;
    wait_step(p);
}

static void on_sleep(void *userdata) { step_done(userdata); }

static void step_sleep(struct probe *p, const struct step_args *a)
{
    p->pending = 1;
    ag_loop_timer(p->loop, arg_u64(a, "ms", 100), on_sleep, p);
    wait_step(p);
}

static void run_step(struct probe *p, char *text)
{
    struct step_args a;
    parse_step(text, &a);
    p->step = a.name;
    if (!a.name)
        return;
    if (strcmp(a.name, "checkin") == 0)
        step_checkin(p, &a);
    else if (strcmp(a.name, "burst") == 0)
        step_burst(p, &a);
    else if (strcmp(a.name, "report") == 0)
        step_report(p, &a);
    else if (strcmp(a.name, "inventory") == 0)
        step_inventory(p, &a);
    else if (strcmp(a.name, "download") == 0)
        step_download(p, &a);
    else if (strcmp(a.name, "stdin") == 0)
        step_stdin(p);
    else if (strcmp(a.name, "sleep") == 0)
        step_sleep(p, &a);
    else {
        fprintf(stderr, "net_probe: unknown step '%s'\n", a.name);
        exit(2);
    }
}

/* -- options -- */

static void load_key(struct probe *p, const char *path)
{
    struct ot_diag d = {0};
    struct stat st;
    if (path && stat(path, &st) == 0) {
        if (ot_key_load(path, &p->key, &d)) {
            fprintf(stderr, "net_probe: %s\n", d.msg);
            exit(1);
        }
    } else if (ot_key_generate(OT_KEY_SIGN_SECRET, "net_probe", &p->key) ||
               (path && ot_key_save(path, &p->key, false, false, &d))) {
        fprintf(stderr, "net_probe: cannot make a key: %s\n", d.msg);
        exit(1);
    }
    char b64[64];
    ot_base64_encode(p->key.pk, sizeof(p->key.pk), b64);
    emit(json_pack("{s:s, s:s}", "step", "key", "public_key", b64));
}

static unsigned num_opt(const char *v)
{
    uint64_t x;
    if (!v || ot_parse_u64(v, 1, 3600, &x)) {
        fprintf(stderr, "net_probe: bad number '%s'\n", v ? v : "");
        exit(2);
    }
    return (unsigned)x;
}

/* Returns the index of the first step. */
static int parse_options(struct probe *p, int argc, char **argv)
{
    struct ag_net_config *c = &p->cfg;
    const char *key = NULL;
    c->device_type = "gw-1";
    c->servers = p->servers;
    c->identity = p->identity;
    int i = 2;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool flag = strcmp(o, "--allow-http") == 0;
        if (!flag && !v) {
            fprintf(stderr, "net_probe: %s needs a value\n", o);
            exit(2);
        }
        if (flag)
            c->allow_http = true;
        else if (strcmp(o, "--server") == 0 && c->nservers < OT_ARRAY_SIZE(p->servers))
            p->servers[c->nservers++] = v;
        else if (strcmp(o, "--enroll") == 0)
            c->enrollment_token = v;
        else if (strcmp(o, "--key") == 0)
            key = v;
        else if (strcmp(o, "--device-type") == 0)
            c->device_type = v;
        else if (strcmp(o, "--ca") == 0)
            c->ca_file = v;
        else if (strcmp(o, "--pin") == 0)
            c->pinned_key = v;
        else if (strcmp(o, "--client-cert") == 0)
            c->client_cert = v;
        else if (strcmp(o, "--client-key") == 0)
            c->client_key = v;
        else if (strcmp(o, "--stall") == 0)
            c->stall_timeout_s = num_opt(v);
        else if (strcmp(o, "--timeout") == 0)
            c->request_timeout_s = num_opt(v);
        else if (strcmp(o, "--proxy") == 0)
            c->https_proxy = c->http_proxy = v;
        else if (strcmp(o, "--no-proxy") == 0)
            c->no_proxy = v;
        else if (strcmp(o, "--connect-timeout") == 0)
            c->connect_timeout_s = num_opt(v);
        else if (strcmp(o, "--identity") == 0 && strchr(v, '=') &&
                 c->nidentity < OT_ARRAY_SIZE(p->identity)) {
            char *eq = strchr(v, '=');
            *eq = '\0';
            p->identity[c->nidentity].key = (char *)v;
            p->identity[c->nidentity++].value = eq + 1;
        } else {
            fprintf(stderr, "net_probe: unknown option %s\n", o);
            exit(2);
        }
        if (!flag)
            i++;
    }
    if (c->nidentity == 0) {
        p->identity[0] = (struct ot_wire_kv){.key = (char *)"probe", .value = (char *)"1"};
        c->nidentity = 1;
    }
    load_key(p, key);
    c->identity_key = &p->key;
    return i;
}

static int run_net(int argc, char **argv)
{
    struct probe p = {0};
    struct ot_diag d = {0};
    int first = parse_options(&p, argc, argv);
    if (ag_loop_new(&p.loop, &d)) {
        fprintf(stderr, "net_probe: %s\n", d.msg);
        return 1;
    }
    if (make_net(&p) == OT_OK)
        for (int i = first; i < argc; i++)
            run_step(&p, argv[i]);
    ag_net_free(p.net);
    ag_loop_free(p.loop);
    ot_key_wipe(&p.key);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "loop") == 0)
        return run_loop_checks();
    if (argc >= 2 && strcmp(argv[1], "net") == 0) {
        signal(SIGPIPE, SIG_IGN); /* as otter-agent: a write to a closed TLS socket is an error */
        return run_net(argc, argv);
    }
    fprintf(stderr, "usage: net_probe loop | net_probe net [options] STEP...\n");
    return 2;
}
