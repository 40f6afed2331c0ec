/* otter-agent's one event loop (one thread): epoll over file descriptors, timers, signals
 * (signalfd) and libcurl's multi interface, so downloads, check-ins, reports and the control
 * socket all progress together without threads.
 *
 * Callbacks run on the loop; they may add or remove anything (including themselves). */
#ifndef OTTER_AGENT_LOOP_H
#define OTTER_AGENT_LOOP_H

#include <curl/curl.h>
#include <stdint.h>

#include "otter/err.h"

struct ag_loop;

typedef void (*ag_timer_fn)(void *userdata);
typedef void (*ag_fd_fn)(void *userdata, int fd, uint32_t epoll_events);
typedef void (*ag_signal_fn)(void *userdata, int signo);
/* A finished transfer: result is curl's code (CURLE_OK when the HTTP exchange completed, whatever
 * the status), status the HTTP status (0 when none). */
typedef void (*ag_transfer_fn)(void *userdata, CURL *easy, CURLcode result, long status);

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
void ag_loop_fd_remove(struct ag_loop *l, int fd);
/* Blocks signo for the process and delivers it through the loop (SIGTERM, SIGINT, SIGHUP ...). */
enum ot_err ag_loop_signal(struct ag_loop *l, int signo, ag_signal_fn fn, void *userdata,
                           struct ot_diag *d) OT_MUST_CHECK;
/* Starts an easy handle on the loop's multi handle; fn runs once when it is done (then the
 * caller owns and cleans up the easy handle). The loop uses the handle's CURLOPT_PRIVATE. */
enum ot_err ag_loop_transfer(struct ag_loop *l, CURL *easy, ag_transfer_fn fn, void *userdata,
                             struct ot_diag *d) OT_MUST_CHECK;
/* Stops a transfer without calling its fn (the caller cleans up the easy handle). */
void ag_loop_transfer_cancel(struct ag_loop *l, CURL *easy);
/* Caps the transfers running at once (0: no cap, the default): more wait in the loop, in order,
 * and start as others end (their libcurl timeouts start then too). libcurl's connection cache
 * gets the same size. For otter-sim, where thousands of devices share one process: libcurl
 * 7.88 spends time linear in the transfers it holds (and in its cached connections) on every
 * transfer it removes. */
void ag_loop_limit_transfers(struct ag_loop *l, size_t max);
/* Pauses or resumes a transfer's receiving (curl_easy_pause), for download windows and pacing. */
void ag_loop_transfer_pause(struct ag_loop *l, CURL *easy, bool paused);

#endif
