#include <stdarg.h>

#include "otter/log.h"

static void default_sink(enum ot_log_level level, const char *msg, void *userdata)
{
    (void)userdata;
    /* "<N>" prefixes are understood by systemd-journald and most log collectors. */
    fprintf(stderr, "<%d>%s\n", (int)level, msg);
}

static ot_log_sink_fn log_sink = default_sink;
static void *log_userdata;
static enum ot_log_level log_level = OT_LOG_INFO;

void ot_log_set_sink(ot_log_sink_fn sink, void *userdata)
{
    log_sink = sink ? sink : default_sink;
    log_userdata = sink ? userdata : NULL;
}

void ot_log_set_level(enum ot_log_level level) { log_level = level; }

enum ot_log_level ot_log_get_level(void) { return log_level; }

void ot_log(enum ot_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_sink(level, msg, log_userdata);
}
