/* Maintenance windows (otterd's window.c): cron parsing and every refusal, open/next in UTC and
 * fixed offsets, real zones across their 2026 DST changes (expected instants hard-coded, checked
 * with `TZ=Europe/Berlin date -d ...` / `TZ=America/New_York date -d ...` when written), POSIX TZ
 * rules against the real zone files, a crafted "slim" TZif whose future lies in its footer only,
 * hostile TZif bytes and zone names, an independent minute-by-minute oracle, and the cost of
 * srv_window_open. Uses the system's zoneinfo (tzdata, installed by scripts/bootstrap.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "window.h"

#define H 3600
#define DAYS 86400

/* Unix seconds of a UTC date (timegm: UTC only, the process's TZ is not involved). */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static struct srv_window *win(const char *cron, int64_t dur, const char *tz)
{
    struct srv_window *w = NULL;
    struct ot_diag d = {0};
    enum ot_err err = srv_window_parse(cron, dur, tz, &w, &d);
    if (err)
        fail_msg("'%s' %lld '%s': %s", cron, (long long)dur, tz, d.msg);
    return w;
}

static struct srv_window *posix(const char *cron, int64_t dur, const char *tz)
{
    struct srv_window *w = NULL;
    struct ot_diag d = {0};
    enum ot_err err = srv__window_parse_posix(cron, dur, tz, &w, &d);
    if (err)
        fail_msg("'%s' '%s': %s", cron, tz, d.msg);
    return w;
}

/* The starts after `from`, in order. */
static void assert_next(const struct srv_window *w, int64_t from, const int64_t *want, size_t n)
{
    int64_t t = from;
    for (size_t i = 0; i < n; i++) {
        int64_t s = srv_window_next(w, t);
        if (s != want[i])
            fail_msg("start %zu after %lld: %lld, want %lld", i, (long long)from, (long long)s,
                     (long long)want[i]);
        t = s;
    }
}

static void test_cron_forms(void **state)
{
    (void)state;
    int64_t t0 = utc(2026, 2, 1, 0, 0); /* a Sunday */
    static const struct {
        const char *cron;
        int64_t first[4]; /* minutes after t0 */
    } cases[] = {
        {"*/15 * * * *", {15, 30, 45, 60}},
        {"5/20 * * * *", {5, 25, 45, 65}},             /* 5-59/20 */
        {"1-30/10 0 * * *", {1, 11, 21, 1441}},
        {"0,7,59 3 * * *", {180, 187, 239, 1620}},
        {"0 12 * * mon-fri", {2160, 3600, 5040, 6480}}, /* Mon 2nd .. Thu 5th */
        {"0 12 * * MON-Wed,fri", {2160, 3600, 5040, 7920}},
        {"0 0 * * 7", {10080, 20160, 30240, 40320}},    /* 7 is Sunday */
        {"0 0 * * 5-7", {7200, 8640, 10080, 17280}},    /* Fri, Sat, Sun */
        {"  0\t0   2 * *  ", {1440, 1440 + 40320, 1440 + 40320 + 44640, 0}},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        struct srv_window *w = win(cases[i].cron, 60, "UTC");
        int64_t want[4];
        size_t n = 0;
        for (; n < 4 && cases[i].first[n]; n++)
            want[n] = t0 + cases[i].first[n] * 60;
        assert_next(w, t0, want, n);
        srv_window_free(w);
    }
    struct srv_window *w = win("0 0 1 jan,JUL *", 60, "UTC");
    int64_t months[] = {utc(2026, 7, 1, 0, 0), utc(2027, 1, 1, 0, 0), utc(2027, 7, 1, 0, 0)};
    assert_next(w, t0, months, 3);
    srv_window_free(w);
    /* leap days: four years apart at most, inside the 5-year horizon */
    w = win("0 0 29 2 *", 60, "UTC");
    int64_t leap[] = {utc(2028, 2, 29, 0, 0), utc(2032, 2, 29, 0, 0)};
    assert_next(w, t0, leap, 2);
    srv_window_free(w);
    srv_window_free(NULL);
}

static void test_cron_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *cron;
        int64_t dur;
        const char *tz, *word;
    } bad[] = {
        {"", 3600, "UTC", "minute"},
        {"* * * *", 3600, "UTC", "day-of-week"},
        {"* * * * * *", 3600, "UTC", "more than 5"},
        {"60 * * * *", 3600, "UTC", "minute"},
        {"-1 * * * *", 3600, "UTC", "minute"},
        {"a * * * *", 3600, "UTC", "minute"},
        {"1,,2 * * * *", 3600, "UTC", "minute"},
        {"1, * * * *", 3600, "UTC", "minute"},
        {"5-1 * * * *", 3600, "UTC", "minute"},
        {"*/0 * * * *", 3600, "UTC", "minute"},
        {"*/ * * * *", 3600, "UTC", "minute"},
        {"*/60 * * * *", 3600, "UTC", "minute"},
        {"1-2-3 * * * *", 3600, "UTC", "minute"},
        {"0001 * * * *", 3600, "UTC", "minute"},
        {"** * * * *", 3600, "UTC", "minute"},
        {"0 24 * * *", 3600, "UTC", "hour"},
        {"0 1-24 * * *", 3600, "UTC", "hour"},
        {"0 0 0 * *", 3600, "UTC", "day-of-month"},
        {"0 0 32 * *", 3600, "UTC", "day-of-month"},
        {"0 0 1-x * *", 3600, "UTC", "day-of-month"},
        {"0 0 * 0 *", 3600, "UTC", "month"},
        {"0 0 * 13 *", 3600, "UTC", "month"},
        {"0 0 * foo *", 3600, "UTC", "month"},
        {"0 0 * mon *", 3600, "UTC", "month"},
        {"0 0 * january *", 3600, "UTC", "month"},
        {"0 0 * * 8", 3600, "UTC", "day-of-week"},
        {"0 0 * * jan", 3600, "UTC", "day-of-week"},
        {"0 0 * * mon-", 3600, "UTC", "day-of-week"},
        {"0 0 * * fri-mon", 3600, "UTC", "day-of-week"},
        {"@daily", 3600, "UTC", "minute"},
        {"0 0 * * *\n", 3600, "UTC", "printable"},
        {"0 0 * * *", 59, "UTC", "duration"},
        {"0 0 * * *", 31 * DAYS + 1, "UTC", "duration"},
        {"0 0 * * *", -60, "UTC", "duration"},
        {NULL, 3600, "UTC", "cron"},
        {"0 0 * * *", 3600, NULL, "timezone"},
        {"0 0 * * *", 3600, "", "not a zone name"},
        {"0 0 * * *", 3600, "utc", "no such zone"},
        {"0 0 * * *", 3600, "Nowhere/City", "no such zone"},
        {"0 0 * * *", 3600, "../../etc/passwd", "not a zone name"},
        {"0 0 * * *", 3600, "/etc/passwd", "not a zone name"},
        {"0 0 * * *", 3600, "Europe/../../../etc/passwd", "not a zone name"},
        {"0 0 * * *", 3600, "Europe//Berlin", "not a zone name"},
        {"0 0 * * *", 3600, "Europe/Berlin/", "not a zone name"},
        {"0 0 * * *", 3600, "Europe", "not a zone"},       /* a directory */
        {"0 0 * * *", 3600, "zone.tab", "not a TZif"},     /* not a TZif file */
        {"0 0 * * *", 3600, "right/UTC", "leap seconds"},    /* leap seconds */
        {"0 0 * * *", 3600, "Europe/Berlin ", "not a zone name"},
        {"0 0 * * *", 3600, ".hidden", "not a zone name"},
        {"0 0 * * *", 3600, "-Europe", "timezone"},
        {"0 0 * * *", 3600, "+25:00", "timezone"},
        {"0 0 * * *", 3600, "+18:01", "timezone"},
        {"0 0 * * *", 3600, "+02:60", "timezone"},
        {"0 0 * * *", 3600, "+2", "timezone"},
        {"0 0 * * *", 3600, "+2:00", "timezone"},
        {"0 0 * * *", 3600, "+02:0", "timezone"},
        {"0 0 * * *", 3600, "02:00", "timezone"},
        {"0 0 * * *", 3600, "+0a:00", "timezone"},
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct srv_window *w = (struct srv_window *)&w; /* never written on failure */
        struct ot_diag d = {0};
        enum ot_err err = srv_window_parse(bad[i].cron, bad[i].dur, bad[i].tz, &w, &d);
        if (err != OT_ERR_FORMAT || !strstr(d.msg, bad[i].word))
            fail_msg("'%s' %lld '%s': %s (%s), want a refusal naming '%s'",
                     bad[i].cron ? bad[i].cron : "(null)", (long long)bad[i].dur,
                     bad[i].tz ? bad[i].tz : "(null)", ot_err_name(err), d.msg, bad[i].word);
        assert_ptr_equal(w, (struct srv_window *)&w);
    }
    /* the limits themselves are fine */
    srv_window_free(win("59 23 31 12 6", 60, "UTC"));
    srv_window_free(win("0 0 * * *", 31 * DAYS, "+18:00"));
}

static void test_utc(void **state)
{
    (void)state;
    struct srv_window *w = win("0 2 * * *", H, "UTC");
    int64_t s = utc(2026, 6, 10, 2, 0);
    assert_false(srv_window_open(w, s - 1));
    assert_true(srv_window_open(w, s));
    assert_true(srv_window_open(w, s + H - 1));
    assert_false(srv_window_open(w, s + H));
    assert_int_equal(srv_window_next(w, s - H), s);
    assert_int_equal(srv_window_next(w, s - 1), s);
    assert_int_equal(srv_window_next(w, s), s + DAYS); /* strictly after */
    assert_int_equal(srv_window_next(w, s + 30 * 60), s + DAYS);
    srv_window_free(w);
    /* overlapping windows: every 15 minutes for an hour is always open */
    w = win("*/15 * * * *", H, "UTC");
    for (int64_t t = s; t < s + DAYS; t += 397)
        assert_true(srv_window_open(w, t));
    srv_window_free(w);
    /* a long window: open from Monday 00:00 for 31 days, i.e. from every Monday on */
    w = win("0 0 * * mon", 3 * DAYS, "UTC");
    int64_t mon = utc(2026, 2, 2, 0, 0);
    assert_true(srv_window_open(w, mon + 3 * DAYS - 1));
    assert_false(srv_window_open(w, mon + 3 * DAYS));
    assert_false(srv_window_open(w, mon - 1));
    srv_window_free(w);
    w = win("0 0 1 * *", 31 * DAYS, "UTC");
    for (int64_t t = utc(2026, 1, 1, 0, 0); t < utc(2027, 1, 1, 0, 0); t += 7 * H + 13)
        assert_true(srv_window_open(w, t));
    srv_window_free(w);
    w = win("0 0 1 * *", 30 * DAYS, "UTC"); /* a day short in 31-day months */
    assert_true(srv_window_open(w, utc(2026, 1, 30, 23, 59)));
    assert_false(srv_window_open(w, utc(2026, 1, 31, 0, 0)));
    assert_true(srv_window_open(w, utc(2026, 2, 28, 23, 59)));
    assert_int_equal(srv_window_next(w, utc(2026, 1, 31, 0, 0)), utc(2026, 2, 1, 0, 0));
    srv_window_free(w);
}

static void test_midnight(void **state)
{
    (void)state;
    struct srv_window *w = win("30 23 * * *", 2 * H, "UTC");
    int64_t s = utc(2026, 4, 10, 23, 30);
    assert_true(srv_window_open(w, s));
    assert_true(srv_window_open(w, utc(2026, 4, 11, 0, 30)));
    assert_true(srv_window_open(w, utc(2026, 4, 11, 1, 29) + 59));
    assert_false(srv_window_open(w, utc(2026, 4, 11, 1, 30)));
    assert_false(srv_window_open(w, utc(2026, 4, 11, 23, 29)));
    assert_int_equal(srv_window_next(w, utc(2026, 4, 11, 0, 0)), utc(2026, 4, 11, 23, 30));
    srv_window_free(w);
    /* started on Friday 2026-04-10, the window is still open on Saturday after midnight; there
     * is none on Saturday night */
    w = win("30 23 * * fri", 2 * H, "UTC");
    assert_true(srv_window_open(w, utc(2026, 4, 11, 0, 30)));
    assert_false(srv_window_open(w, utc(2026, 4, 12, 0, 30)));
    assert_false(srv_window_open(w, utc(2026, 4, 10, 0, 30)));
    srv_window_free(w);
    /* and in a zone: 23:30 in Berlin (CEST) is 21:30 UTC, open until 23:30 UTC */
    w = win("30 23 * * *", 2 * H, "Europe/Berlin");
    assert_true(srv_window_open(w, utc(2026, 4, 10, 21, 30)));
    assert_true(srv_window_open(w, utc(2026, 4, 10, 23, 29)));
    assert_false(srv_window_open(w, utc(2026, 4, 10, 23, 30)));
    assert_false(srv_window_open(w, utc(2026, 4, 10, 21, 29)));
    srv_window_free(w);
}

static void test_fixed_offsets(void **state)
{
    (void)state;
    struct srv_window *w = win("0 2 * * *", H, "+02:00");
    assert_int_equal(srv_window_next(w, utc(2026, 6, 9, 12, 0)), utc(2026, 6, 10, 0, 0));
    assert_true(srv_window_open(w, utc(2026, 6, 10, 0, 59)));
    assert_false(srv_window_open(w, utc(2026, 6, 10, 2, 0)));
    assert_int_equal(srv__window_utoff(w, 0), 2 * H);
    srv_window_free(w);
    w = win("0 2 * * *", H, "-0530");
    assert_int_equal(srv_window_next(w, utc(2026, 6, 9, 12, 0)), utc(2026, 6, 10, 7, 30));
    assert_int_equal(srv__window_utoff(w, 0), -(5 * H + 30 * 60));
    srv_window_free(w);
    /* a day earlier in the west: Monday 01:00 at -05:00 is Monday 06:00 UTC, at +14:00 it is
     * Sunday 11:00 UTC */
    w = win("0 1 * * mon", H, "+14");
    assert_int_equal(srv_window_next(w, utc(2026, 2, 1, 0, 0)), utc(2026, 2, 1, 11, 0));
    srv_window_free(w);
    w = win("0 1 * * mon", H, "-05");
    assert_int_equal(srv_window_next(w, utc(2026, 2, 1, 0, 0)), utc(2026, 2, 2, 6, 0));
    srv_window_free(w);
}

/* 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC). */
static void test_berlin_spring(void **state)
{
    (void)state;
    struct srv_window *w = win("30 2 * * *", H, "Europe/Berlin");
    assert_int_equal(srv__window_utoff(w, 1774745999), H);
    assert_int_equal(srv__window_utoff(w, 1774746000), 2 * H);
    /* 02:30 does not exist on the 29th: from the 28th's start straight to the 30th's */
    int64_t starts[] = {1774661400 /* 03-28 02:30 CET */, 1774830600 /* 03-30 02:30 CEST */};
    assert_next(w, 1774661400 - 1, starts, 2);
    for (int64_t t = 1774661400 + H; t < 1774830600; t += 60)
        assert_false(srv_window_open(w, t));
    assert_true(srv_window_open(w, 1774830600));
    srv_window_free(w);
    /* 01:00 CET (00:00 UTC) for 2 h: two real hours, ending 04:00 CEST */
    w = win("0 1 * * *", 2 * H, "Europe/Berlin");
    assert_int_equal(srv_window_next(w, 1774742400 - 1), 1774742400);
    assert_true(srv_window_open(w, 1774742400 + 2 * H - 1));
    assert_false(srv_window_open(w, 1774742400 + 2 * H));
    srv_window_free(w);
    /* 03:00 exists (01:00 UTC), as does every minute of 02:00..02:59 on other days */
    w = win("0 3 * * *", 60, "Europe/Berlin");
    assert_int_equal(srv_window_next(w, 1774742400), 1774746000);
    srv_window_free(w);
    w = win("*/10 2 * * *", 60, "Europe/Berlin");
    int64_t tens[] = {1774659600, 1774660200, 1774660800, 1774661400, 1774662000, 1774662600,
                      1774659600 + DAYS + DAYS - H}; /* the 30th, 02:00 CEST */
    assert_next(w, 1774659600 - 1, tens, 7);
    srv_window_free(w);
}

/* 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:xx happens twice. */
static void test_berlin_fall(void **state)
{
    (void)state;
    struct srv_window *w = win("30 2 * * *", 600, "Europe/Berlin");
    assert_int_equal(srv__window_utoff(w, 1792890000 - 1), 2 * H);
    assert_int_equal(srv__window_utoff(w, 1792890000), H);
    int64_t starts[] = {1792801800 /* 10-24 02:30 CEST */, 1792888200 /* 10-25 02:30 CEST */,
                        1792978200 /* 10-26 02:30 CET */};
    assert_next(w, 1792801800 - 1, starts, 3);
    assert_true(srv_window_open(w, 1792888200 + 300));
    assert_false(srv_window_open(w, 1792888200 + 600));
    /* the second 02:30 (CET) starts nothing */
    assert_false(srv_window_open(w, 1792891800));
    assert_false(srv_window_open(w, 1792891800 + 300));
    srv_window_free(w);
    /* 01:00 CEST (23:00 UTC the day before) for 3 h ends at 02:00 UTC, 03:00 CET */
    w = win("0 1 * * *", 3 * H, "Europe/Berlin");
    assert_int_equal(srv_window_next(w, 1792800000), 1792882800);
    assert_true(srv_window_open(w, 1792882800 + 3 * H - 1));
    assert_false(srv_window_open(w, 1792882800 + 3 * H));
    srv_window_free(w);
    /* 02:00 for 30 min: open during the first 02:00..02:29 only */
    w = win("0 2 * * *", 1800, "Europe/Berlin");
    assert_true(srv_window_open(w, 1792886400));
    assert_false(srv_window_open(w, 1792886400 + 1800));
    assert_false(srv_window_open(w, 1792890000)); /* 02:00 CET */
    assert_int_equal(srv_window_next(w, 1792886400), 1792886400 + DAYS + H);
    srv_window_free(w);
}

/* After 2037 the fat zone files end; the footer "CET-1CEST,M3.5.0,M10.5.0/3" decides. */
static void test_berlin_far_future(void **state)
{
    (void)state;
    struct srv_window *w = win("30 2 * * *", 600, "Europe/Berlin");
    assert_int_equal(srv__window_utoff(w, 2224749600), 2 * H); /* 2040-07-01 12:00 CEST */
    assert_int_equal(srv__window_utoff(w, 2209028400), H);     /* 2040-01-01 12:00 CET */
    /* 2040-03-25: no 02:30; 2040-10-28: the first 02:30 only */
    assert_int_equal(srv_window_next(w, 2216165400), 2216334600);
    assert_int_equal(srv_window_next(w, 2234997000 - 1), 2234997000);
    assert_int_equal(srv_window_next(w, 2234997000), 2234997000 + DAYS + H);
    srv_window_free(w);
}

/* 2026 in New York: 2026-03-08 02:00 EST jumps to 03:00 EDT; 2026-11-01 02:00 EDT falls back to
 * 01:00 EST. */
static void test_new_york(void **state)
{
    (void)state;
    struct srv_window *w = win("0 2 * * *", 1800, "America/New_York");
    int64_t spring[] = {1772866800 /* 03-07 02:00 EST */, 1773036000 /* 03-09 02:00 EDT */};
    assert_next(w, 1772866800 - 1, spring, 2);
    assert_false(srv_window_open(w, 1772953200)); /* 03-08 03:00 EDT */
    /* 11-01 02:00 happens once, in EST */
    assert_int_equal(srv_window_next(w, 1793511000), 1793516400);
    srv_window_free(w);
    w = win("30 1 * * *", 1800, "America/New_York");
    assert_int_equal(srv_window_next(w, 1793511000 - 1), 1793511000); /* 01:30 EDT */
    assert_true(srv_window_open(w, 1793511000 + 1799));
    assert_false(srv_window_open(w, 1793514600)); /* 01:30 EST: the second one */
    assert_int_equal(srv_window_next(w, 1793511000), 1793514600 + DAYS);
    srv_window_free(w);
}

/* A POSIX rule must say what the zone file says, hour by hour, over years the fat files cover. */
static void assert_rule_matches_zone(const char *rule, const char *zone, int y0, int y1)
{
    struct srv_window *p = posix("0 0 * * *", 60, rule), *z = win("0 0 * * *", 60, zone);
    int64_t changes = 0;
    for (int64_t t = utc(y0, 1, 1, 0, 0); t < utc(y1, 1, 1, 0, 0); t += 1800) {
        int32_t a = srv__window_utoff(p, t), b = srv__window_utoff(z, t);
        if (a != b)
            fail_msg("%s vs %s at %lld: %d, want %d", rule, zone, (long long)t, a, b);
        changes += a != srv__window_utoff(p, t - 1800);
    }
    assert_int_equal(changes, 2 * (y1 - y0)); /* DST really changed twice a year */
    srv_window_free(p);
    srv_window_free(z);
}

static void test_posix_rules(void **state)
{
    (void)state;
    assert_rule_matches_zone("EST5EDT,M3.2.0,M11.1.0", "America/New_York", 2008, 2036);
    assert_rule_matches_zone("EST5EDT", "America/New_York", 2008, 2036); /* the default rule */
    assert_rule_matches_zone("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin", 1997, 2036);
    assert_rule_matches_zone("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney", 2009, 2036);
    assert_rule_matches_zone("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "America/Nuuk", 2024, 2036);
    assert_rule_matches_zone("IST-1GMT0,M10.5.0,M3.5.0/1", "Europe/Dublin", 1997, 2036);
    /* a footer-only New York: the spring gap and the fall-back of 2026 */
    struct srv_window *w = posix("0 2 * * *", 1800, "EST5EDT,M3.2.0,M11.1.0");
    int64_t spring[] = {1772866800, 1773036000};
    assert_next(w, 1772866800 - 1, spring, 2);
    assert_int_equal(srv_window_next(w, 1793511000), 1793516400);
    srv_window_free(w);
    /* all-year DST (RFC 8536 §3.3.1) and Julian days */
    w = posix("0 0 * * *", 60, "EST5EDT,0/0,J365/25");
    for (int64_t t = utc(2026, 1, 1, 0, 0); t < utc(2029, 1, 1, 0, 0); t += 7 * H)
        assert_int_equal(srv__window_utoff(w, t), -4 * H);
    srv_window_free(w);
    w = posix("0 0 * * *", 60, "XXX3YYY,J60/0,300");
    assert_int_equal(srv__window_utoff(w, utc(2028, 2, 29, 12, 0)), -3 * H); /* J60: Mar 1 */
    assert_int_equal(srv__window_utoff(w, utc(2028, 3, 1, 12, 0)), -2 * H);
    assert_int_equal(srv__window_utoff(w, utc(2028, 10, 27, 3, 59)), -2 * H); /* day 300 */
    assert_int_equal(srv__window_utoff(w, utc(2028, 10, 27, 4, 0)), -3 * H);  /* 02:00 -02 */
    srv_window_free(w);
    w = posix("0 0 * * *", 60, "<+0330>-3:30");
    assert_int_equal(srv__window_utoff(w, 0), 3 * H + 1800);
    srv_window_free(w);
    static const char *const bad[] = {
        "", "EST", "ES5", "5EST", "EST5EDT,M3.2.0", "EST5EDT,M13.2.0,M11.1.0",
        "EST5EDT,M3.6.0,M11.1.0", "EST5EDT,M3.2.7,M11.1.0", "EST5EDT,J0,J365", "EST5EDT,366,0",
        "EST25", "EST5EDT,M3.2.0/168,M11.1.0", "EST5:60", "<EST5", "EST5EDT,M3.2.0,M11.1.0,",
        "EST5EDT4x", "EST 5",
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct srv_window *x = NULL;
        struct ot_diag d = {0};
        if (srv__window_parse_posix("0 0 * * *", 60, bad[i], &x, &d) != OT_ERR_FORMAT)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(d.msg, "timezone"));
    }
}

/* ---- crafted TZif files ---------------------------------------------------------------------- */

struct bytes {
    uint8_t b[512];
    size_t n;
};

static void put(struct bytes *o, const void *p, size_t n)
{
    assert_true(o->n + n <= sizeof(o->b));
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put32(struct bytes *o, uint32_t v)
{
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    put(o, b, 4);
}

static void put64(struct bytes *o, int64_t v)
{
    put32(o, (uint32_t)((uint64_t)v >> 32));
    put32(o, (uint32_t)v);
}

static void header(struct bytes *o, char version, uint32_t timecnt, uint32_t typecnt,
                   uint32_t charcnt, uint32_t leapcnt)
{
    put(o, "TZif", 4);
    put(o, &version, 1);
    put(o, (uint8_t[15]){0}, 15);
    put32(o, 0); /* isutcnt */
    put32(o, 0); /* isstdcnt */
    put32(o, leapcnt);
    put32(o, timecnt);
    put32(o, typecnt);
    put32(o, charcnt);
}

/* A "slim" New York as zic -b slim writes it: an empty version 1 block, one transition (LMT to
 * EST in 1883), and everything after in the footer. */
static void slim_new_york(struct bytes *o, const char *footer)
{
    o->n = 0;
    header(o, '2', 0, 1, 1, 0);
    put(o, (uint8_t[]){0, 0, 0, 0, 0, 0, 0}, 7); /* one type, one char */
    header(o, '2', 1, 2, 8, 0);
    put64(o, -2717650800);
    put(o, (uint8_t[]){1}, 1);
    put32(o, (uint32_t)-17762); /* LMT */
    put(o, (uint8_t[]){0, 0}, 2);
    put32(o, (uint32_t)-18000); /* EST */
    put(o, (uint8_t[]){0, 4}, 2);
    put(o, "LMT\0EST\0", 8);
    put(o, "\n", 1);
    put(o, footer, strlen(footer));
    put(o, "\n", 1);
}

static enum ot_err parse_tzif(const struct bytes *o, size_t len, struct srv_window **w,
                              struct ot_diag *d)
{
    return srv__window_parse_tzif("0 2 * * *", 1800, o->b, len, "test", w, d);
}

static char tzdir[] = "/tmp/otter-test-window-XXXXXX", tzdir_sub[64], tzdir_file[80],
            tzdir_link[80];

static void test_slim_tzif(void **state)
{
    (void)state;
    struct bytes o;
    slim_new_york(&o, "EST5EDT,M3.2.0,M11.1.0");
    struct srv_window *w = NULL;
    struct ot_diag d = {0};
    assert_int_equal(parse_tzif(&o, o.n, &w, &d), OT_OK);
    assert_int_equal(srv__window_utoff(w, -2717650801), -17762);
    int64_t spring[] = {1772866800, 1773036000};
    assert_next(w, 1772866800 - 1, spring, 2);
    assert_int_equal(srv_window_next(w, 1793511000), 1793516400);
    assert_int_equal(srv__window_utoff(w, utc(2026, 7, 1, 0, 0)), -4 * H);
    srv_window_free(w);
    /* an empty footer: EST from 1883 on, for ever */
    slim_new_york(&o, "");
    assert_int_equal(parse_tzif(&o, o.n, &w, &d), OT_OK);
    assert_int_equal(srv__window_utoff(w, utc(2026, 7, 1, 0, 0)), -5 * H);
    srv_window_free(w);
    slim_new_york(&o, "EST5EDT,M3.2.0,M11.1.0");

    /* The same file through $TZDIR, plus a link that leads out of it. */
    assert_non_null(mkdtemp(tzdir));
    snprintf(tzdir_sub, sizeof(tzdir_sub), "%s/Test", tzdir);
    snprintf(tzdir_file, sizeof(tzdir_file), "%s/Slim", tzdir_sub);
    snprintf(tzdir_link, sizeof(tzdir_link), "%s/Escape", tzdir_sub);
    assert_int_equal(mkdir(tzdir_sub, 0700), 0);
    FILE *f = fopen(tzdir_file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(o.b, 1, o.n, f), o.n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(symlink("/usr/share/zoneinfo/UTC", tzdir_link), 0);
    setenv("TZDIR", tzdir, 1); /* single-threaded test: fine here, never in otterd */
    w = win("0 2 * * *", 1800, "Test/Slim");
    assert_int_equal(srv_window_next(w, 1793511000), 1793516400);
    srv_window_free(w);
    d = (struct ot_diag){0};
    assert_int_equal(srv_window_parse("0 2 * * *", 1800, "Test/Escape", &w, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "outside"));
    assert_int_equal(srv_window_parse("0 2 * * *", 1800, "Europe/Berlin", &w, &d),
                     OT_ERR_FORMAT); /* not in this TZDIR */
}

/* Runs even when the test fails half-way, so the other tests see the real zoneinfo. */
static int slim_teardown(void **state)
{
    (void)state;
    unsetenv("TZDIR");
    unlink(tzdir_link);
    unlink(tzdir_file);
    rmdir(tzdir_sub);
    rmdir(tzdir);
    return 0;
}

static void test_hostile_tzif(void **state)
{
    (void)state;
    struct bytes o;
    struct srv_window *w = NULL;
    struct ot_diag d = {0};
    slim_new_york(&o, "EST5EDT,M3.2.0,M11.1.0");
    /* every truncation is refused, never read past */
    for (size_t len = 0; len < o.n; len++)
        assert_int_equal(parse_tzif(&o, len, &w, &d), OT_ERR_FORMAT);
    /* and so is every single-byte corruption that makes it malformed; none crashes */
    for (size_t i = 0; i < o.n; i++) {
        struct bytes c = o;
        c.b[i] ^= 0xff;
        if (parse_tzif(&c, c.n, &w, &d) == OT_OK)
            srv_window_free(w);
    }
    static const struct {
        size_t at;
        uint8_t v;
        const char *words;
    } bad[] = {
        {0, 'X', "not a TZif"},
        {4, '1', "version"},
        {51 + 4, '3', "disagree"},
        {51 + 31, 1, "leap"},          /* leapcnt */
        {51 + 39, 0, "counts"},        /* typecnt 0 */
        {95 + 8, 2, "transitions"},    /* type index 2 of 2 */
        {95 + 9, 0x7f, "local time"},  /* LMT offset way beyond 26 h */
        {95 + 20, 8, "local time"},    /* designation index 8 of 8 */
        {95 + 29, 'x', "footer"},      /* the newline before the footer */
        {95 + 33, '!', "footer"},      /* "EST!EDT,..." */
    };
    for (size_t i = 0; i < OT_ARRAY_SIZE(bad); i++) {
        struct bytes c = o;
        c.b[bad[i].at] = bad[i].v;
        d = (struct ot_diag){0};
        enum ot_err err = parse_tzif(&c, c.n, &w, &d);
        if (err == OT_OK)
            srv_window_free(w);
        if (err != OT_ERR_FORMAT || !strstr(d.msg, bad[i].words))
            fail_msg("case %zu: %s (%s), want '%s'", i, ot_err_name(err), d.msg, bad[i].words);
    }
    /* transitions out of order (version 1 file: two transitions, equal times) */
    o.n = 0;
    header(&o, 0, 2, 1, 4, 0);
    put32(&o, 100);
    put32(&o, 100);
    put(&o, (uint8_t[]){0, 0}, 2);
    put32(&o, 3600);
    put(&o, (uint8_t[]){0, 0}, 2);
    put(&o, "CET\0", 4);
    assert_int_equal(parse_tzif(&o, o.n, &w, &d), OT_ERR_FORMAT);
    assert_non_null(strstr(d.msg, "transitions"));
    /* ... and in order, a good version 1 file */
    o.b[44 + 7] = 101;
    assert_int_equal(parse_tzif(&o, o.n, &w, &d), OT_OK);
    assert_int_equal(srv__window_utoff(w, 1000), 3600);
    srv_window_free(w);
    /* trailing bytes after a footer */
    slim_new_york(&o, "EST5EDT,M3.2.0,M11.1.0");
    put(&o, "x", 1);
    assert_int_equal(parse_tzif(&o, o.n, &w, &d), OT_ERR_FORMAT);
}

/* The standard cron day rule: both days restricted, either matches; a '*' field defers. */
static void test_dom_dow(void **state)
{
    (void)state;
    int64_t feb1 = utc(2026, 2, 1, 0, 0); /* Sunday; Fridays: 6, 13, 20, 27; 13th: Friday */
    struct srv_window *w = win("0 0 13 * fri", 60, "UTC");
    int64_t either[] = {utc(2026, 2, 6, 0, 0), utc(2026, 2, 13, 0, 0), utc(2026, 2, 20, 0, 0),
                        utc(2026, 2, 27, 0, 0), utc(2026, 3, 6, 0, 0), utc(2026, 3, 13, 0, 0),
                        utc(2026, 3, 20, 0, 0), utc(2026, 3, 27, 0, 0), utc(2026, 4, 3, 0, 0),
                        utc(2026, 4, 10, 0, 0), utc(2026, 4, 13, 0, 0) /* a Monday */};
    assert_next(w, feb1, either, OT_ARRAY_SIZE(either));
    srv_window_free(w);
    w = win("0 0 13 * *", 60, "UTC");
    int64_t dom[] = {utc(2026, 2, 13, 0, 0), utc(2026, 3, 13, 0, 0)};
    assert_next(w, feb1, dom, 2);
    srv_window_free(w);
    w = win("0 0 * * fri", 60, "UTC");
    int64_t dow[] = {utc(2026, 2, 6, 0, 0), utc(2026, 2, 13, 0, 0)};
    assert_next(w, feb1, dow, 2);
    srv_window_free(w);
    /* "*" with a step defers as in Vixie cron: odd days that are Fridays */
    w = win("0 0 */2 * fri", 60, "UTC");
    int64_t both[] = {utc(2026, 2, 13, 0, 0), utc(2026, 2, 27, 0, 0), utc(2026, 3, 13, 0, 0)};
    assert_next(w, feb1, both, 3);
    srv_window_free(w);
}

static void test_never(void **state)
{
    (void)state;
    static const char *const never[] = {"0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"};
    for (size_t i = 0; i < OT_ARRAY_SIZE(never); i++) {
        struct srv_window *w = win(never[i], 31 * DAYS, "Europe/Berlin");
        for (int64_t t = utc(2026, 1, 1, 0, 0); t < utc(2027, 1, 1, 0, 0); t += 5 * DAYS + 77)
            assert_false(srv_window_open(w, t));
        assert_int_equal(srv_window_next(w, utc(2026, 1, 1, 0, 0)), -1);
        srv_window_free(w);
    }
    /* the horizon: Feb 1 on a Monday ('*' defers, so day-of-month AND day-of-week) happens in
     * 2027 and then in 2038, 11 years on */
    struct srv_window *rare = win("0 0 */29 feb mon", 60, "UTC");
    int64_t s2027 = utc(2027, 2, 1, 0, 0), s2038 = utc(2038, 2, 1, 0, 0);
    assert_int_equal(srv_window_next(rare, utc(2026, 1, 1, 0, 0)), s2027);
    assert_int_equal(srv_window_next(rare, s2027), -1);
    assert_int_equal(srv_window_next(rare, s2038 - SRV_WINDOW_NEXT_HORIZON), s2038);
    assert_int_equal(srv_window_next(rare, s2038 - SRV_WINDOW_NEXT_HORIZON - 1), -1);
    srv_window_free(rare);
    /* out of range instants: no window, no next, no overflow */
    struct srv_window *w = win("* * * * *", 60, "UTC");
    assert_false(srv_window_open(w, INT64_MAX));
    assert_false(srv_window_open(w, INT64_MIN));
    assert_int_equal(srv_window_next(w, INT64_MAX), -1);
    assert_int_equal(srv_window_next(w, INT64_MIN), -1);
    assert_false(srv_window_open(NULL, 0));
    assert_int_equal(srv_window_next(NULL, 0), -1);
    srv_window_free(w);
}

/* ---- an independent oracle ------------------------------------------------------------------- */

static bool every_20_from_1_to_3(int64_t local)
{
    struct tm tm;
    time_t l = (time_t)local;
    gmtime_r(&l, &tm);
    return tm.tm_min % 20 == 0 && tm.tm_hour >= 1 && tm.tm_hour <= 3;
}

static bool half_past_2_weekdays(int64_t local)
{
    struct tm tm;
    time_t l = (time_t)local;
    gmtime_r(&l, &tm);
    return tm.tm_min == 30 && tm.tm_hour == 2 && tm.tm_wday >= 1 && tm.tm_wday <= 5;
}

static bool every_minute(int64_t local)
{
    (void)local;
    return true;
}

/* Is UTC minute u a start? Its local minute matches, and it is that minute's first occurrence
 * (zones here shift by whole hours, so an earlier one would be 1 or 2 hours before). */
static bool oracle_start(const struct srv_window *w, bool (*match)(int64_t), int64_t u)
{
    int32_t off = srv__window_utoff(w, u);
    if (!match(u + off))
        return false;
    for (int k = 1; k <= 2; k++)
        if (srv__window_utoff(w, u - k * H) == off + k * H)
            return false;
    return true;
}

/* Minute by minute over four days around a DST change, open and next agree with the oracle. */
static void check_oracle(const char *cron, bool (*match)(int64_t), int64_t dur, const char *zone,
                         int64_t change)
{
    struct srv_window *w = win(cron, dur, zone);
    enum { MINUTES = 4 * 24 * 60 };
    int64_t from = change - 2 * DAYS - dur;
    static bool start[MINUTES + 31 * 24 * 60 + 1];
    size_t n = (size_t)(4 * DAYS + dur) / 60;
    assert_true(n < OT_ARRAY_SIZE(start));
    for (size_t i = 0; i < n; i++)
        start[i] = oracle_start(w, match, from + (int64_t)i * 60);
    size_t last = SIZE_MAX; /* the latest start so far */
    for (size_t i = 0; i < n; i++) {
        int64_t u = from + (int64_t)i * 60;
        if (start[i])
            last = i;
        if (u < change - 2 * DAYS)
            continue;
        for (int64_t sec = 0; sec < 60; sec += 59) {
            bool want = last != SIZE_MAX && u + sec < from + (int64_t)last * 60 + dur;
            if (srv_window_open(w, u + sec) != want)
                fail_msg("%s in %s at %lld: open is %d", cron, zone, (long long)(u + sec), !want);
        }
        /* the next start after u - 1 is u itself when u is one */
        int64_t next = srv_window_next(w, u - 1);
        if (start[i] != (next == u))
            fail_msg("%s in %s: next after %lld is %lld", cron, zone, (long long)(u - 1),
                     (long long)next);
    }
    srv_window_free(w);
}

static void test_oracle(void **state)
{
    (void)state;
    static const char *const zones[] = {"Europe/Berlin", "America/New_York"};
    static const int64_t changes[][2] = {{1774746000, 1792890000}, {1772953200, 1793516400}};
    for (size_t z = 0; z < 2; z++) {
        for (size_t c = 0; c < 2; c++) {
            check_oracle("*/20 1-3 * * *", every_20_from_1_to_3, 3600, zones[z], changes[z][c]);
            check_oracle("*/20 1-3 * * *", every_20_from_1_to_3, 60, zones[z], changes[z][c]);
            check_oracle("30 2 * * mon-fri", half_past_2_weekdays, 25 * H, zones[z],
                         changes[z][c]);
            check_oracle("* * * * *", every_minute, 60, zones[z], changes[z][c]);
        }
    }
}

/* srv_window_open runs once a second per deployment: it must stay far below 100 µs. */
static void test_open_cost(void **state)
{
    (void)state;
    static const struct {
        const char *cron;
        int64_t dur;
        const char *zone;
    } cases[] = {
        {"0 2 * * *", 2 * H, "Europe/Berlin"},
        {"* * * * *", 60, "Europe/Berlin"},
        {"0 0 30 2 *", 31 * DAYS, "America/New_York"}, /* never: the longest look back */
        {"0 0 1 1 *", 31 * DAYS, "Australia/Sydney"},
        {"*/5 1-4 * * sat,sun", 4 * H, "UTC"},
        {"30 2 * * *", 600, "Europe/Berlin"}, /* in 2040: the footer decides */
    };
    double worst = 0;
    for (size_t i = 0; i < OT_ARRAY_SIZE(cases); i++) {
        struct srv_window *w = win(cases[i].cron, cases[i].dur, cases[i].zone);
        int64_t t0 = i == 5 ? 2216165400 : utc(2026, 3, 20, 0, 0);
        enum { N = 20000 };
        struct timespec a, b;
        size_t open = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int64_t k = 0; k < N; k++)
            open += srv_window_open(w, t0 + k * 181); /* about 42 days */
        clock_gettime(CLOCK_MONOTONIC, &b);
        double us = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) /
                    N / 1000;
        print_message("# srv_window_open('%s', %s): %.3f us (%zu of %d open)\n", cases[i].cron,
                      cases[i].zone, us, open, N);
        worst = us > worst ? us : worst;
        srv_window_free(w);
    }
    assert_true(worst < 100);
}

int main(void)
{
    unsetenv("TZDIR"); /* the system's zoneinfo, whatever the caller's environment says */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cron_forms),
        cmocka_unit_test(test_cron_refusals),
        cmocka_unit_test(test_utc),
        cmocka_unit_test(test_midnight),
        cmocka_unit_test(test_fixed_offsets),
        cmocka_unit_test(test_berlin_spring),
        cmocka_unit_test(test_berlin_fall),
        cmocka_unit_test(test_berlin_far_future),
        cmocka_unit_test(test_new_york),
        cmocka_unit_test(test_posix_rules),
        cmocka_unit_test_teardown(test_slim_tzif, slim_teardown),
        cmocka_unit_test(test_hostile_tzif),
        cmocka_unit_test(test_dom_dow),
        cmocka_unit_test(test_never),
        cmocka_unit_test(test_oracle),
        cmocka_unit_test(test_open_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
