/* Maintenance windows: a cron expression saying when a window opens, how long it stays open, and
 * the time zone the expression is read in. Pure: no threads, no global state, no log; the only
 * I/O is reading one TZif file when a window is parsed.
 *
 * Time zones never go through the process's TZ (otterd is multi-threaded: setenv, tzset and
 * localtime with another zone would race every other thread). The zone's TZif file (RFC 8536) is
 * parsed here: version 1 data, version 2+ 64-bit data when present, and the POSIX TZ footer of
 * version 2+ files ("CET-1CEST,M3.5.0,M10.5.0/3"), which decides every instant after the last
 * transition ("slim" files carry future daylight saving time only there).
 *
 * Local-time semantics: a cron minute is a wall-clock minute in the window's zone. A minute that
 * does not exist (skipped by a spring-forward gap) starts no window; a minute that happens twice
 * (fall back) starts one at its first occurrence only. The duration is elapsed time: a window
 * opened at 01:30 for 2 h across a fall back closes at 02:30 wall clock, the second time. */
#ifndef OTTERD_WINDOW_H
#define OTTERD_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "otter/err.h"

#define SRV_WINDOW_CRON_MAX 256                 /* bytes of a cron expression */
#define SRV_WINDOW_DURATION_MIN 60              /* seconds */
#define SRV_WINDOW_DURATION_MAX (31 * 86400ll)  /* seconds */
#define SRV_WINDOW_TZ_NAME_MAX 128              /* bytes of a zone name */
#define SRV_WINDOW_TZIF_MAX (256 * 1024)        /* bytes of a TZif file (real ones: < 4 KiB) */
#define SRV_WINDOW_NEXT_HORIZON (5 * 366 * 86400ll) /* srv_window_next looks this far ahead */

/* A parsed window: immutable after srv_window_parse, so any number of threads may call
 * srv_window_open and srv_window_next on it at once. Owned by whoever parsed it. */
struct srv_window;

/* Parses a window.
 *
 * cron: 5 fields "minute hour day-of-month month day-of-week", separated by blanks, read in the
 * window's time zone. Each field is a comma-separated list (1,5) of items: "*", a number, a range
 * (1-5), "*" or a range with a step ("1-30/5"; "5/15" means 5-max/15, as in cronie). Months
 * may be named jan..dec and days of the week sun..sat (any case, also in ranges: mon-fri); 0 and
 * 7 are Sunday. Standard (Vixie) cron day rule: when both day-of-month and day-of-week are
 * restricted, a day matches if either matches; a field counts as unrestricted when it starts
 * with '*' (so '*' with a step is unrestricted for this rule, as in Vixie cron and cronie).
 * Expressions that never match ("0 0 30 2 *") are accepted: srv_window_next says -1.
 * duration_s: SRV_WINDOW_DURATION_MIN..SRV_WINDOW_DURATION_MAX.
 * timezone: "UTC"; an IANA name ("Europe/Berlin"), read from the TZif file under
 * /usr/share/zoneinfo or $TZDIR when set; or a fixed offset from UTC "+02:00", "-0530", "+02"
 * (at most 18 hours). A name is made of components of [A-Za-z0-9._+-] not starting with '.' or
 * '-', so it cannot climb out of the zoneinfo directory, and the file it resolves to (symbolic
 * links followed) must still be inside it. Zones with leap seconds ("right/...") are refused.
 *
 * OT_ERR_FORMAT naming the bad field ("minute", "hour", "day-of-month", "month", "day-of-week",
 * "duration", "timezone") otherwise; OT_ERR_IO when the zone file exists but cannot be read,
 * OT_ERR_NOMEM. *ret (free with srv_window_free) is written only on success. */
enum ot_err srv_window_parse(const char *cron, int64_t duration_s, const char *timezone,
                             struct srv_window **ret, struct ot_diag *d) OT_MUST_CHECK;
/* Accepts NULL. */
void srv_window_free(struct srv_window *w);

/* Is t (Unix seconds) inside a window, i.e. is there a start s (a minute matching the cron
 * expression, in local time) with s <= t < s + duration? Cheap (no allocation, no I/O, about a
 * microsecond): it looks only at the latest start at or before t. */
bool srv_window_open(const struct srv_window *w, int64_t t);
/* The first start s > t (Unix seconds); -1 when none within SRV_WINDOW_NEXT_HORIZON
 * (e.g. "0 0 30 2 *"). */
int64_t srv_window_next(const struct srv_window *w, int64_t t);

/* ---- internals, for tests and fuzzing -------------------------------------------------------- */

/* Like srv_window_parse, with the zone given as the bytes of a TZif file (name only labels
 * errors). */
enum ot_err srv__window_parse_tzif(const char *cron, int64_t duration_s, const uint8_t *buf,
                                   size_t len, const char *name, struct srv_window **ret,
                                   struct ot_diag *d) OT_MUST_CHECK;
/* Like srv_window_parse, with the zone given as a POSIX TZ string ("EST5EDT,M3.2.0,M11.1.0"),
 * as in the footer of a TZif file; without a rule, daylight saving time follows the US rule
 * M3.2.0,M11.1.0 (as glibc does). */
enum ot_err srv__window_parse_posix(const char *cron, int64_t duration_s, const char *tz,
                                    struct srv_window **ret, struct ot_diag *d) OT_MUST_CHECK;
/* The zone's offset from UTC at t, in seconds (east positive). */
int32_t srv__window_utoff(const struct srv_window *w, int64_t t);

#endif
