/* otter-agent's one event loop (one thread): epoll over file descriptors, timers and signals
 * (signalfd), so downloads, check-ins, reports (http.h's sockets) and the control socket all
 * progress together without threads.
 *
 * Callbacks run on the loop; they may add or remove anything (including themselves). */
#ifndef OTTER_AGENT_LOOP_H
#define OTTER_AGENT_LOOP_H

#include <stdint.h>

#include "otter/err.h"

struct ag_loop;

typedef void (*ag_timer_fn)(void *userdata);
typedef void (*ag_fd_fn)(void *userdata, int fd, uint32_t epoll_events);
typedef void (*ag_signal_fn)(void *userdata, int signo);

enum ot_err ag_loop_new(struct ag_loop **ret, struct ot_diag *d) OT_MUST_CHECK;
void ag_loop_free(struct ag_loop *l);
/* Runs until ag_loop_stop; returns its code. */
int ag_loop_run(struct ag_loop *l);
void ag_loop_stop(struct ag_loop *l, int code);
/* Monotonic milliseconds. */
uint64_t ag_loop_now_ms(void);

/* One-shot timer after ms; returns an id > 0 (0 on out of memory). */
uint64_t ag_loop_timer(struct ag_loop *l, uint64_t ms, ag_timer_fn fn, void *userdata);
void ag_loop_timer_cancel(struct ag_loop *l, uint64_t id);
/* Watches fd for epoll events (EPOLLIN ...); one watch per fd. */
enum ot_err ag_loop_fd(struct ag_loop *l, int fd, uint32_t events, ag_fd_fn fn, void *userdata,
                       struct ot_diag *d) OT_MUST_CHECK;
/* Changes the events of a watched fd (OT_ERR_NOENT: not watched). */
enum ot_err ag_loop_fd_modify(struct ag_loop *l, int fd, uint32_t events);
void ag_loop_fd_remove(struct ag_loop *l, int fd);
/* Blocks signo for the process and delivers it through the loop (SIGTERM, SIGINT, SIGHUP ...). */
enum ot_err ag_loop_signal(struct ag_loop *l, int signo, ag_signal_fn fn, void *userdata,
                           struct ot_diag *d) OT_MUST_CHECK;

#endif
