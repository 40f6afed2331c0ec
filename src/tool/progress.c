/* A progress line on stderr for long operations: "verify  42%  215.0/512.0 MiB  180.3 MiB/s".
 * Only on a terminal (a log file or a pipe gets nothing), at most about 10 redraws a second, and
 * erased when done so the terminal is left as it was. */
#include <time.h>

#include "tool.h"

#define REDRAW_NS (100ULL * 1000 * 1000)
#define MIB (1024.0 * 1024.0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void tool_progress_init(struct tool_progress *p, const struct tool_ctx *ctx, const char *label)
{
    *p = (struct tool_progress){
        .enabled = !ctx->quiet && isatty(STDERR_FILENO),
        .label = label,
        .start_ns = now_ns(),
    };
}

static void draw(struct tool_progress *p, uint64_t done, uint64_t total, uint64_t now)
{
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / MIB / secs : 0;
    /* \r to the start of the line, \033[K erases what a longer previous line left. */
    if (total > 0)
        fprintf(stderr, "\r%s %3u%%  %.1f/%.1f MiB  %.1f MiB/s\033[K", p->label,
                (unsigned)(done >= total ? 100 : done * 100 / total), (double)done / MIB,
                (double)total / MIB, rate);
    else
        fprintf(stderr, "\r%s  %.1f MiB  %.1f MiB/s\033[K", p->label, (double)done / MIB, rate);
    fflush(stderr);
    p->drawn = true;
}

void tool_progress_cb(void *userdata, uint64_t done, uint64_t total)
{
    struct tool_progress *p = userdata;
    if (!p || !p->enabled)
        return;
    uint64_t now = now_ns();
    /* Nothing for the first tenth of a second either: quick operations never flash a line. */
    if (now - (p->drawn ? p->last_ns : p->start_ns) < REDRAW_NS)
        return;
    p->last_ns = now;
    draw(p, done, total, now);
}

void tool_progress_clear(struct tool_progress *p)
{
    if (!p || !p->drawn)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = false;
}
