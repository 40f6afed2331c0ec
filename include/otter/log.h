/* Logging hooks. base and core only ever log at debug level; programs install a sink and decide
 * where messages go (stderr with syslog priority prefixes, journald, a test buffer). */
#ifndef OTTER_LOG_H
#define OTTER_LOG_H

#include "otter/macro.h"

/* syslog(3) priorities, so a sink can hand them on unchanged. */
enum ot_log_level {
    OT_LOG_ERR = 3,
    OT_LOG_WARNING = 4,
    OT_LOG_NOTICE = 5,
    OT_LOG_INFO = 6,
    OT_LOG_DEBUG = 7,
};

typedef void (*ot_log_sink_fn)(enum ot_log_level level, const char *msg, void *userdata);

/* Installs a sink (NULL restores the default: "<N>message" lines on stderr). */
void ot_log_set_sink(ot_log_sink_fn sink, void *userdata);
/* Messages above this level are dropped before formatting. Default: OT_LOG_INFO. */
void ot_log_set_level(enum ot_log_level level);
enum ot_log_level ot_log_get_level(void);
void ot_log(enum ot_log_level level, const char *fmt, ...) OT_PRINTF(2, 3);

#define ot_debug(...) ot_log(OT_LOG_DEBUG, __VA_ARGS__)

#endif
