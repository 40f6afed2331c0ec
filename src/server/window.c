/* Maintenance windows (window.h): the cron fields as bit sets, time zones from TZif files
 * (RFC 8536) and POSIX TZ strings, and the search for the start nearest an instant.
 *
 * Local time is handled as "local seconds": the Unix seconds a wall-clock reading would have if
 * the zone were UTC. A zone maps an instant t to local seconds t + utoff(t); the reverse of a cron
 * minute M is every t with t + utoff(t) == M, of which the first is the start (none in a gap).
 * Every UT offset accepted is within OFF_MAX, so the instants of M lie within OFF_MAX of M: the
 * offsets in effect there are the only candidates to try. */
#include <strings.h>
#include <sys/stat.h>

#include "otter/file.h"
#include "otter/path.h"
#include "window.h"

#define DAY 86400ll
#define OFF_MAX (26 * 3600)       /* RFC 8536 §3.2: a UT offset SHOULD be within (-25 h, 26 h) */
#define FIXED_OFF_MAX (18 * 3600) /* "+HH:MM" */
#define TYPES_MAX 256             /* a transition's type is one byte */
#define TRANSITIONS_MAX 8192      /* real zones: < 400 */
#define FOOTER_MAX 256            /* real footers: < 64 bytes */
#define RULE_TIME_MAX (167 * 3600) /* RFC 8536 §3.3.1: a rule's time may be -167..167 hours */
#define T_LIMIT (1ll << 40)       /* instants beyond ±35,000 years are refused, never overflowed */
/* Candidate minutes a search may pass over before it decides, far more than it can need: one is
 * passed over only when its start lies on the wrong side of t (its local minute is then within
 * 2 * OFF_MAX of t's: at most 3120 minutes) or when it falls in a gap (an offset change, so at
 * most another 3120). Only a malformed zone could reach the bound, and then gets "closed". */
#define STEPS_MAX 10000
#define DEFAULT_ZONEINFO "/usr/share/zoneinfo"

/* ---- calendar -------------------------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a % b < 0) != (b < 0));
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *ret_y, int *ret_m, int *ret_d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *ret_d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *ret_m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *ret_y = yoe + era * 400 + (*ret_m <= 2);
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday(int64_t day)
{
    return (int)(day - floor_div(day + 4, 7) * 7 + 4);
}

static bool is_leap(int64_t y)
{
    return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int days_in_month(int64_t y, int m)
{
    static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return n[m - 1] + (m == 2 && is_leap(y));
}

static int64_t year_of(int64_t local)
{
    int64_t y;
    int m, d;
    civil_from_days(floor_div(local, DAY), &y, &m, &d);
    return y;
}

/* ---- POSIX TZ strings (RFC 8536 §3.3, POSIX XBD 8.3) ----------------------------------------- */

struct posix_date {
    char kind;     /* 'J': Julian day 1..365 without Feb 29; 'n': day 0..365; 'M': month.week.day */
    int n, m, w, d;
    int32_t time;  /* seconds after local midnight, -167..167 h */
};

struct posix_tz {
    int32_t std_off, dst_off; /* seconds east of UTC */
    bool has_dst;
    struct posix_date start, end; /* start in standard time, end in daylight time */
};

/* [+-]h[hh][:mm[:ss]] with hours <= hmax; POSIX writes offsets west-positive, the caller flips. */
static bool posix_hms(const char **p, int hmax, int32_t *ret)
{
    const char *s = *p;
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    int32_t v[3] = {0, 0, 0};
    for (int part = 0; part < 3; part++) {
        if (part > 0 && *s != ':')
            break;
        s += part > 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < (part == 0 ? 3 : 2); s++, digits++)
            v[part] = v[part] * 10 + (*s - '0');
        if (digits == 0 || (*s >= '0' && *s <= '9'))
            return false;
    }
    if (v[0] > hmax || v[1] > 59 || v[2] > 59)
        return false;
    *ret = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    *p = s;
    return true;
}

static bool posix_name(const char **p)
{
    const char *s = *p;
    size_t n = 0;
    if (*s == '<') {
        for (s++; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                   (*s >= '0' && *s <= '9') || *s == '+' || *s == '-';
             s++)
            n++;
        if (*s++ != '>')
            return false;
    } else {
        for (; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'); s++)
            n++;
    }
    *p = s;
    return n >= 3;
}

static bool posix_number(const char **p, int min, int max, int *ret)
{
    int v = 0, digits = 0;
    for (; **p >= '0' && **p <= '9' && digits < 3; (*p)++, digits++)
        v = v * 10 + (**p - '0');
    *ret = v;
    return digits > 0 && !(**p >= '0' && **p <= '9') && v >= min && v <= max;
}

static bool posix_date(const char **p, struct posix_date *r)
{
    *r = (struct posix_date){.time = 2 * 3600};
    bool ok;
    if (**p == 'J') {
        (*p)++;
        r->kind = 'J';
        ok = posix_number(p, 1, 365, &r->n);
    } else if (**p == 'M') {
        (*p)++;
        r->kind = 'M';
        ok = posix_number(p, 1, 12, &r->m) && *(*p)++ == '.' && posix_number(p, 1, 5, &r->w) &&
             *(*p)++ == '.' && posix_number(p, 0, 6, &r->d);
    } else {
        r->kind = 'n';
        ok = posix_number(p, 0, 365, &r->n);
    }
    if (ok && **p == '/') {
        (*p)++;
        ok = posix_hms(p, RULE_TIME_MAX / 3600, &r->time);
    }
    return ok;
}

static bool parse_posix(const char *s, struct posix_tz *ret)
{
    struct posix_tz tz = {0};
    int32_t v;
    if (!posix_name(&s) || !posix_hms(&s, 24, &v))
        return false;
    tz.std_off = -v;
    if (*s) {
        tz.has_dst = true;
        if (!posix_name(&s))
            return false;
        tz.dst_off = tz.std_off + 3600;
        if (*s && *s != ',') {
            if (!posix_hms(&s, 24, &v))
                return false;
            tz.dst_off = -v;
        }
        if (!*s) { /* no rule: the US one, as glibc assumes */
            tz.start = (struct posix_date){.kind = 'M', .m = 3, .w = 2, .d = 0, .time = 7200};
            tz.end = (struct posix_date){.kind = 'M', .m = 11, .w = 1, .d = 0, .time = 7200};
        } else if (*s++ != ',' || !posix_date(&s, &tz.start) || *s++ != ',' ||
                   !posix_date(&s, &tz.end)) {
            return false;
        }
    }
    if (*s)
        return false;
    *ret = tz;
    return true;
}

/* The instant a rule's date and time name in year y, read with offset off. */
static int64_t posix_when(const struct posix_date *r, int64_t y, int32_t off)
{
    int64_t day;
    if (r->kind == 'J') {
        day = days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    } else if (r->kind == 'n') {
        day = days_from_civil(y, 1, 1) + r->n;
    } else { /* the d-th weekday of week w (5: the last) of month m */
        int64_t first = days_from_civil(y, r->m, 1);
        int k = (r->d - weekday(first) + 7) % 7 + (r->w - 1) * 7;
        if (k >= days_in_month(y, r->m))
            k -= 7;
        day = first + k;
    }
    return day * DAY + r->time - off;
}

static int32_t posix_utoff(const struct posix_tz *tz, int64_t t)
{
    if (!tz->has_dst)
        return tz->std_off;
    int64_t y = year_of(t + tz->std_off);
    /* Daylight time runs from start to end of the same year, or (southern hemisphere, or a
     * negative DST like Ireland's) from start to end of the next one. */
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t s = posix_when(&tz->start, yy, tz->std_off);
        int64_t e = posix_when(&tz->end, yy, tz->dst_off);
        if (s >= e)
            e = posix_when(&tz->end, yy + 1, tz->dst_off);
        if (t >= s && t < e)
            return tz->dst_off;
    }
    return tz->std_off;
}

/* ---- zones ----------------------------------------------------------------------------------- */

struct zone {
    int64_t *times;     /* transitions, strictly ascending; owned */
    uint8_t *types_at;  /* the type in effect from times[i]; owned */
    size_t ntimes;
    int32_t utoff[TYPES_MAX]; /* type 0 also rules before the first transition (RFC 8536 §3.2) */
    size_t ntypes;
    bool has_posix;     /* the footer: rules after the last transition (or always without any) */
    struct posix_tz posix;
};

static void zone_release(struct zone *z)
{
    free(z->times);
    free(z->types_at);
    z->times = NULL;
    z->types_at = NULL;
}

static int32_t zone_utoff(const struct zone *z, int64_t t)
{
    size_t n = z->ntimes;
    if (n == 0 || t < z->times[0])
        return n == 0 && z->has_posix ? posix_utoff(&z->posix, t) : z->utoff[0];
    if (t > z->times[n - 1] && z->has_posix)
        return posix_utoff(&z->posix, t);
    size_t lo = 0, hi = n - 1; /* the last transition <= t */
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (z->times[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return z->utoff[z->types_at[lo]];
}

/* The distinct offsets in effect at some instant of [a, b]. */
struct offsets {
    int32_t v[TYPES_MAX + 2];
    size_t n;
    int32_t min, max;
};

static void offsets_add(struct offsets *o, int32_t v)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i] == v)
            return;
    if (o->n == OT_ARRAY_SIZE(o->v)) /* more than the distinct offsets a zone can have */
        return;
    o->v[o->n++] = v;
    o->min = o->n == 1 ? v : OT_MIN(o->min, v);
    o->max = o->n == 1 ? v : OT_MAX(o->max, v);
}

static void zone_offsets(const struct zone *z, int64_t a, int64_t b, struct offsets *o)
{
    o->n = 0;
    offsets_add(o, zone_utoff(z, a));
    size_t lo = 0, hi = z->ntimes; /* the first transition > a */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->times[mid] <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < z->ntimes && z->times[i] <= b; i++)
        offsets_add(o, z->utoff[z->types_at[i]]);
    if (!z->has_posix || (z->ntimes > 0 && b <= z->times[z->ntimes - 1]))
        return;
    /* The footer's changes within [a, b] (callers' ranges span days, never years). */
    const struct posix_tz *tz = &z->posix;
    for (int64_t y = year_of(a) - 1; tz->has_dst && y <= year_of(b) + 1; y++) {
        int64_t when[2] = {posix_when(&tz->start, y, tz->std_off),
                           posix_when(&tz->end, y, tz->dst_off)};
        for (size_t k = 0; k < 2; k++)
            if (when[k] > a && when[k] <= b)
                offsets_add(o, posix_utoff(tz, when[k]));
    }
}

/* The first instant whose local time is `local`, false when none (a gap). o holds the offsets
 * in effect within OFF_MAX of it. */
static bool local_to_utc(const struct zone *z, int64_t local, const struct offsets *o,
                         int64_t *ret)
{
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < o->n; i++) {
        int64_t t = local - o->v[i];
        if (t < first && zone_utoff(z, t) == o->v[i])
            first = t;
    }
    if (first == INT64_MAX)
        return false;
    *ret = first;
    return true;
}

static enum ot_err zone_fixed(struct zone *z, int32_t off)
{
    *z = (struct zone){.ntypes = 1};
    z->utoff[0] = off;
    return OT_OK;
}

/* ---- TZif (RFC 8536) ------------------------------------------------------------------------- */

struct reader {
    const uint8_t *p;
    size_t left;
};

static const uint8_t *take(struct reader *r, uint64_t n)
{
    if (n > r->left)
        return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_header {
    char version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static enum ot_err bad_zone(struct ot_diag *d, const char *name, const char *what)
{
    return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone '%s': %s", name, what);
}

/* Reads a header; its counts are checked by tzif_check (only for the block that is used). */
static enum ot_err tzif_header(struct reader *r, struct tzif_header *h, const char *name,
                               struct ot_diag *d)
{
    const uint8_t *p = take(r, 44);
    if (!p || memcmp(p, "TZif", 4) != 0)
        return bad_zone(d, name, "not a TZif file");
    h->version = (char)p[4];
    if (h->version != 0 && (h->version < '2' || h->version > '4'))
        return bad_zone(d, name, "unknown TZif version");
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    return OT_OK;
}

static enum ot_err tzif_check(const struct tzif_header *h, const char *name, struct ot_diag *d)
{
    if (h->typecnt == 0 || h->typecnt > TYPES_MAX || h->charcnt == 0 ||
        (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
        (h->isstdcnt != 0 && h->isstdcnt != h->typecnt) || h->timecnt > TRANSITIONS_MAX)
        return bad_zone(d, name, "bad TZif counts");
    if (h->leapcnt != 0) /* transition times would count leap seconds ("right/" zones) */
        return bad_zone(d, name, "zones with leap seconds are not supported");
    return OT_OK;
}

/* The size of a data block with tsize-byte times. */
static uint64_t tzif_block_size(const struct tzif_header *h, size_t tsize)
{
    return (uint64_t)h->timecnt * (tsize + 1) + (uint64_t)h->typecnt * 6 + h->charcnt +
           (uint64_t)h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

/* One data block: transition times of tsize bytes, their types, the types; the rest is skipped. */
static enum ot_err tzif_block(struct reader *r, const struct tzif_header *h, size_t tsize,
                              struct zone *z, const char *name, struct ot_diag *d)
{
    const uint8_t *times = take(r, (uint64_t)h->timecnt * tsize);
    const uint8_t *idx = take(r, h->timecnt);
    const uint8_t *types = take(r, (uint64_t)h->typecnt * 6);
    if (!times || !idx || !types ||
        !take(r, (uint64_t)h->charcnt + (uint64_t)h->leapcnt * (tsize + 4) + h->isstdcnt +
                     h->isutcnt))
        return bad_zone(d, name, "TZif file is truncated");
    zone_release(z);
    *z = (struct zone){.ntimes = h->timecnt, .ntypes = h->typecnt};
    z->times = calloc(OT_MAX(h->timecnt, 1), sizeof(*z->times));
    z->types_at = calloc(OT_MAX(h->timecnt, 1), 1);
    if (!z->times || !z->types_at)
        return ot_diag_set(d, OT_ERR_NOMEM, "window: timezone '%s'", name);
    for (size_t i = 0; i < h->timecnt; i++) {
        z->times[i] = tsize == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
        z->types_at[i] = idx[i];
        if (idx[i] >= h->typecnt || (i > 0 && z->times[i] <= z->times[i - 1]))
            return bad_zone(d, name, "bad TZif transitions");
    }
    for (size_t i = 0; i < h->typecnt; i++) {
        int32_t off = (int32_t)be32(types + 6 * i);
        if (off < -OFF_MAX || off > OFF_MAX || types[6 * i + 4] > 1 ||
            types[6 * i + 5] >= h->charcnt)
            return bad_zone(d, name, "bad TZif local time type");
        z->utoff[i] = off;
    }
    return OT_OK;
}

/* "\n<POSIX TZ string>\n" at the very end of a version 2+ file; empty: no rule. */
static enum ot_err tzif_footer(struct reader *r, struct zone *z, const char *name,
                               struct ot_diag *d)
{
    const uint8_t *p = r->p;
    size_t n = r->left;
    if (n < 2 || n > FOOTER_MAX + 2 || p[0] != '\n' || p[n - 1] != '\n' ||
        memchr(p + 1, '\n', n - 2) || memchr(p + 1, '\0', n - 2))
        return bad_zone(d, name, "bad TZif footer");
    char s[FOOTER_MAX + 1];
    memcpy(s, p + 1, n - 2);
    s[n - 2] = '\0';
    if (s[0] && !parse_posix(s, &z->posix))
        return bad_zone(d, name, "bad TZ string in the TZif footer");
    z->has_posix = s[0] != '\0';
    return OT_OK;
}

static enum ot_err zone_from_tzif(const uint8_t *buf, size_t len, const char *name,
                                  struct zone *z, struct ot_diag *d)
{
    struct reader r = {buf, len};
    struct tzif_header h;
    enum ot_err err = tzif_header(&r, &h, name, d);
    if (err)
        return err;
    if (h.version == 0) { /* version 1: 32-bit data only, no footer */
        if ((err = tzif_check(&h, name, d)) != OT_OK)
            return err;
        return tzif_block(&r, &h, 4, z, name, d);
    }
    /* Version 2+: the 32-bit block is for old readers (empty in "slim" files); skip it. */
    char version = h.version;
    if (!take(&r, tzif_block_size(&h, 4)))
        return bad_zone(d, name, "TZif file is truncated");
    if ((err = tzif_header(&r, &h, name, d)) != OT_OK || (err = tzif_check(&h, name, d)) != OT_OK)
        return err;
    if (h.version != version)
        return bad_zone(d, name, "TZif headers disagree on the version");
    if ((err = tzif_block(&r, &h, 8, z, name, d)) != OT_OK)
        return err;
    return tzif_footer(&r, z, name, d);
}

/* ---- zone names ------------------------------------------------------------------------------ */

/* "Area/Location[/...]": components that ot_name_is_safe accepts, so never "..", "." or "/x". */
static bool zone_name_is_safe(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > SRV_WINDOW_TZ_NAME_MAX)
        return false;
    for (const char *c = name; c <= name + len;) {
        const char *slash = memchr(c, '/', (size_t)(name + len - c));
        size_t n = slash ? (size_t)(slash - c) : (size_t)(name + len - c);
        if (!ot_name_is_safe(c, n))
            return false;
        c += n + 1;
    }
    return true;
}

/* "+02:00", "-0530", "+02". */
static bool parse_fixed(const char *s, int32_t *ret)
{
    size_t n = strlen(s);
    bool colon = n == 6 && s[3] == ':';
    if ((s[0] != '+' && s[0] != '-') || (n != 3 && n != 5 && !colon))
        return false;
    int digit[4] = {0, 0, 0, 0};
    for (size_t i = 1, k = 0; i < n; i++) {
        if (colon && i == 3)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return false;
        digit[k++] = s[i] - '0';
    }
    int32_t h = digit[0] * 10 + digit[1], m = digit[2] * 10 + digit[3];
    if (m > 59 || h * 3600 + m * 60 > FIXED_OFF_MAX)
        return false;
    *ret = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return true;
}

/* Reads the zone's file, which must resolve (links followed) to a regular file inside dir. */
static enum ot_err read_zone_file(const char *dir, const char *name, struct ot_buf *out,
                                  struct ot_diag *d)
{
    _cleanup_free_ char *path = NULL;
    if (ot_path_join(dir, name, &path) != OT_OK)
        return ot_diag_set(d, OT_ERR_NOMEM, "window: timezone '%s'", name);
    _cleanup_free_ char *real_dir = realpath(dir, NULL);
    _cleanup_free_ char *real = real_dir ? realpath(path, NULL) : NULL;
    if (!real && (errno == ENOENT || errno == ENOTDIR))
        return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone '%s': no such zone in %s", name,
                           dir);
    if (!real)
        return ot_diag_errno(d, OT_ERR_IO, errno, "window: timezone '%s'", name);
    /* The name cannot climb (zone_name_is_safe); a link inside the directory still could. */
    size_t n = strlen(real_dir);
    if (strncmp(real, real_dir, n) != 0 || (n > 1 && real[n] != '/'))
        return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone '%s': leads outside %s", name,
                           dir);
    struct stat st;
    if (stat(real, &st) != 0)
        return ot_diag_errno(d, OT_ERR_IO, errno, "window: timezone '%s'", name);
    if (!S_ISREG(st.st_mode))
        return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone '%s': not a zone", name);
    enum ot_err err = ot_file_read(real, out, d);
    if (err)
        return ot_diag_prefix(d, err, "window: timezone '%s'", name);
    return OT_OK;
}

static enum ot_err zone_load(const char *name, struct zone *z, struct ot_diag *d)
{
    int32_t off;
    if (!name)
        return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone is missing");
    if (strcmp(name, "UTC") == 0)
        return zone_fixed(z, 0);
    if (name[0] == '+' || name[0] == '-') {
        if (!parse_fixed(name, &off))
            return ot_diag_set(d, OT_ERR_FORMAT,
                               "window: timezone: a fixed offset is \"+HH:MM\", \"+HHMM\" or "
                               "\"+HH\", at most 18 hours");
        return zone_fixed(z, off);
    }
    if (!zone_name_is_safe(name)) /* checked before any file is touched; not echoed */
        return ot_diag_set(d, OT_ERR_FORMAT,
                           "window: timezone: not a zone name (\"UTC\", \"Area/Location\" or "
                           "\"+HH:MM\")");
    const char *dir = getenv("TZDIR");
    if (!dir || !dir[0])
        dir = DEFAULT_ZONEINFO;
    struct ot_buf buf;
    ot_buf_init(&buf, SRV_WINDOW_TZIF_MAX);
    enum ot_err err = read_zone_file(dir, name, &buf, d);
    if (!err)
        err = zone_from_tzif(buf.data, buf.len, name, z, d);
    ot_buf_release(&buf);
    return err;
}

/* ---- cron ------------------------------------------------------------------------------------ */

struct field {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] is the value first + i */
    int first;
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};
static const struct field fields[5] = {
    {"minute", 0, 59, NULL, 0},
    {"hour", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0},
    {"month", 1, 12, month_names, 1},
    {"day-of-week", 0, 7, day_names, 0},
};

struct srv_window {
    uint64_t minutes; /* bit m: minute m matches */
    uint64_t hours;
    uint64_t mdays;   /* bits 1..31 */
    uint64_t months;  /* bits 1..12 */
    uint64_t wdays;   /* bits 0..6, 0 = Sunday */
    bool mday_star, wday_star; /* the field starts with '*': the other one alone decides */
    int64_t duration_s;
    struct zone zone;
};

static enum ot_err bad_field(struct ot_diag *d, const struct field *f, const char *s, size_t len,
                             const char *what)
{
    return ot_diag_set(d, OT_ERR_FORMAT, "window: %s '%.*s': %s", f->name, (int)OT_MIN(len, 40),
                       s, what);
}

/* A number or (where the field has them) a name. */
static bool field_value(const struct field *f, const char **p, const char *end, int *ret)
{
    const char *s = *p;
    if (s < end && *s >= '0' && *s <= '9') {
        int v = 0, digits = 0;
        for (; s < end && *s >= '0' && *s <= '9'; s++)
            if (++digits <= 3)
                v = v * 10 + (*s - '0');
        if (digits > 3 || v < f->min || v > f->max)
            return false;
        *ret = v;
        *p = s;
        return true;
    }
    for (size_t i = 0; f->names && f->names[i]; i++) {
        if (end - s >= 3 && strncasecmp(s, f->names[i], 3) == 0 &&
            (end - s == 3 || !((s[3] | 0x20) >= 'a' && (s[3] | 0x20) <= 'z'))) {
            *ret = f->first + (int)i;
            *p = s + 3;
            return true;
        }
    }
    return false;
}

/* One item of a list: "*", "v", "a-b", each with an optional "/step". */
static bool field_item(const struct field *f, const char *s, const char *end, uint64_t *bits)
{
    int lo = f->min, hi = f->max, step = 1;
    if (s < end && *s == '*') {
        s++;
    } else {
        if (!field_value(f, &s, end, &lo))
            return false;
        if (s < end && *s == '-') {
            s++;
            if (!field_value(f, &s, end, &hi))
                return false;
        } else {
            hi = s < end && *s == '/' ? f->max : lo; /* "5/15": 5-max/15 (cronie) */
        }
    }
    if (s < end && *s == '/') {
        s++;
        int digits = 0;
        for (step = 0; s < end && *s >= '0' && *s <= '9'; s++)
            if (++digits <= 3)
                step = step * 10 + (*s - '0');
        if (digits == 0 || digits > 3 || step < 1 || step > f->max)
            return false;
    }
    if (s != end || lo > hi)
        return false;
    for (int v = lo; v <= hi; v += step)
        *bits |= 1ull << v;
    return true;
}

static enum ot_err parse_field(const struct field *f, const char *s, size_t len, uint64_t *bits,
                               struct ot_diag *d)
{
    *bits = 0;
    const char *end = s + len;
    for (const char *item = s; item <= end;) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        const char *item_end = comma ? comma : end;
        if (!field_item(f, item, item_end, bits)) {
            char what[96];
            snprintf(what, sizeof(what),
                     "expected *, a value %d..%d%s, a range a-b, a list a,b, a step /n",
                     f->min, f->max, f->names ? " or a name" : "");
            return bad_field(d, f, s, len, what);
        }
        item = item_end + 1;
    }
    if (f->max == 7 && (*bits & 1ull << 7)) /* day-of-week 7 is Sunday */
        *bits = (*bits & ~(1ull << 7)) | 1;
    return OT_OK;
}

static enum ot_err parse_cron(const char *cron, struct srv_window *w, struct ot_diag *d)
{
    if (!cron || strlen(cron) > SRV_WINDOW_CRON_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT, "window: cron must be at most %d bytes",
                           SRV_WINDOW_CRON_MAX);
    for (const char *c = cron; *c; c++)
        if ((*c < 0x20 || *c > 0x7e) && *c != '\t')
            return ot_diag_set(d, OT_ERR_FORMAT, "window: cron must be printable ASCII");
    uint64_t *bits[5] = {&w->minutes, &w->hours, &w->mdays, &w->months, &w->wdays};
    const char *c = cron;
    size_t k = 0;
    for (; *c && k <= 5; k++) {
        c += strspn(c, " \t");
        size_t len = strcspn(c, " \t");
        if (len == 0)
            break;
        if (k == 5)
            return ot_diag_set(d, OT_ERR_FORMAT, "window: cron has more than 5 fields (minute "
                                                 "hour day-of-month month day-of-week)");
        enum ot_err err = parse_field(&fields[k], c, len, bits[k], d);
        if (err)
            return err;
        if (k == 2)
            w->mday_star = c[0] == '*';
        if (k == 4)
            w->wday_star = c[0] == '*';
        c += len;
    }
    if (k < 5)
        return ot_diag_set(d, OT_ERR_FORMAT, "window: cron has %zu fields, not 5 (minute hour "
                                             "day-of-month month day-of-week); %s is missing",
                           k, fields[k].name);
    return OT_OK;
}

/* ---- the window ------------------------------------------------------------------------------ */

void srv_window_free(struct srv_window *w)
{
    if (!w)
        return;
    zone_release(&w->zone);
    free(w);
}

OT_DEFINE_CLEANUP(struct srv_window, srv_window_free)

static enum ot_err window_new(const char *cron, int64_t duration_s, struct srv_window **ret,
                              struct ot_diag *d)
{
    _cleanup_(srv_window_freep) struct srv_window *w = calloc(1, sizeof(*w));
    if (!w)
        return ot_diag_set(d, OT_ERR_NOMEM, "window");
    enum ot_err err = parse_cron(cron, w, d);
    if (err)
        return err;
    if (duration_s < SRV_WINDOW_DURATION_MIN || duration_s > SRV_WINDOW_DURATION_MAX)
        return ot_diag_set(d, OT_ERR_FORMAT, "window: duration must be %d s to %lld s (31 days)",
                           SRV_WINDOW_DURATION_MIN, SRV_WINDOW_DURATION_MAX);
    w->duration_s = duration_s;
    *ret = TAKE_PTR(w);
    return OT_OK;
}

enum ot_err srv_window_parse(const char *cron, int64_t duration_s, const char *timezone,
                             struct srv_window **ret, struct ot_diag *d)
{
    _cleanup_(srv_window_freep) struct srv_window *w = NULL;
    enum ot_err err = window_new(cron, duration_s, &w, d);
    if (!err)
        err = zone_load(timezone, &w->zone, d);
    if (!err)
        *ret = TAKE_PTR(w);
    return err;
}

enum ot_err srv__window_parse_tzif(const char *cron, int64_t duration_s, const uint8_t *buf,
                                   size_t len, const char *name, struct srv_window **ret,
                                   struct ot_diag *d)
{
    _cleanup_(srv_window_freep) struct srv_window *w = NULL;
    enum ot_err err = window_new(cron, duration_s, &w, d);
    if (!err)
        err = zone_from_tzif(buf, len, name ? name : "(buffer)", &w->zone, d);
    if (!err)
        *ret = TAKE_PTR(w);
    return err;
}

enum ot_err srv__window_parse_posix(const char *cron, int64_t duration_s, const char *tz,
                                    struct srv_window **ret, struct ot_diag *d)
{
    _cleanup_(srv_window_freep) struct srv_window *w = NULL;
    enum ot_err err = window_new(cron, duration_s, &w, d);
    if (err)
        return err;
    if (!tz || strlen(tz) > FOOTER_MAX || !parse_posix(tz, &w->zone.posix))
        return ot_diag_set(d, OT_ERR_FORMAT, "window: timezone: not a POSIX TZ string");
    w->zone.has_posix = true;
    w->zone.ntypes = 1;
    w->zone.utoff[0] = w->zone.posix.std_off;
    *ret = TAKE_PTR(w);
    return OT_OK;
}

int32_t srv__window_utoff(const struct srv_window *w, int64_t t)
{
    return zone_utoff(&w->zone, t);
}

/* ---- matching -------------------------------------------------------------------------------- */

static bool day_matches(const struct srv_window *w, int64_t day)
{
    int64_t y;
    int m, md;
    civil_from_days(day, &y, &m, &md);
    if (!(w->months >> m & 1))
        return false;
    bool by_mday = w->mdays >> md & 1, by_wday = w->wdays >> weekday(day) & 1;
    return w->mday_star || w->wday_star ? by_mday && by_wday : by_mday || by_wday;
}

/* The highest bit <= v of mask, -1 when none. */
static int highest_le(uint64_t mask, int v)
{
    if (v < 0)
        return -1;
    uint64_t m = v >= 63 ? mask : mask & ((2ull << v) - 1);
    return m ? 63 - __builtin_clzll(m) : -1;
}

/* The lowest bit >= v of mask, -1 when none. */
static int lowest_ge(uint64_t mask, int v)
{
    if (v > 63)
        return -1;
    uint64_t m = mask & (~0ull << v);
    return m ? __builtin_ctzll(m) : -1;
}

/* The latest matching minute of a matching day at or before h:m, in seconds of the day. */
static int prev_in_day(const struct srv_window *w, int h, int m)
{
    int mm = w->hours >> h & 1 ? highest_le(w->minutes, m) : -1;
    if (mm >= 0)
        return h * 3600 + mm * 60;
    int hh = highest_le(w->hours, h - 1);
    return hh < 0 ? -1 : hh * 3600 + highest_le(w->minutes, 59) * 60;
}

static int next_in_day(const struct srv_window *w, int h, int m)
{
    int mm = w->hours >> h & 1 ? lowest_ge(w->minutes, m) : -1;
    if (mm >= 0)
        return h * 3600 + mm * 60;
    int hh = lowest_ge(w->hours, h + 1);
    return hh < 0 || hh > 23 ? -1 : hh * 3600 + lowest_ge(w->minutes, 0) * 60;
}

/* The latest matching local minute in [lo, local] (local on a minute). */
static bool prev_match(const struct srv_window *w, int64_t local, int64_t lo, int64_t *ret)
{
    int64_t day = floor_div(local, DAY), last = floor_div(lo, DAY);
    int sec = (int)(local - day * DAY);
    for (int h = sec / 3600, m = sec % 3600 / 60; day >= last; day--, h = 23, m = 59) {
        int s = day_matches(w, day) ? prev_in_day(w, h, m) : -1;
        if (s >= 0) {
            *ret = day * DAY + s;
            return *ret >= lo;
        }
    }
    return false;
}

/* The first matching local minute in [local, hi]. */
static bool next_match(const struct srv_window *w, int64_t local, int64_t hi, int64_t *ret)
{
    int64_t day = floor_div(local, DAY), last = floor_div(hi, DAY);
    int sec = (int)(local - day * DAY);
    for (int h = sec / 3600, m = sec % 3600 / 60; day <= last; day++, h = 0, m = 0) {
        int s = day_matches(w, day) ? next_in_day(w, h, m) : -1;
        if (s >= 0) {
            *ret = day * DAY + s;
            return *ret <= hi;
        }
    }
    return false;
}

static int64_t floor_minute(int64_t t)
{
    return floor_div(t, 60) * 60;
}

/* Starts grow with their local minutes (a minute's first occurrence comes after every earlier
 * minute's), so walking the matching minutes down from an upper bound, the first one whose start
 * is at or before t gives the latest start: the window is open iff that one still runs. */
bool srv_window_open(const struct srv_window *w, int64_t t)
{
    if (!w || t < -T_LIMIT || t > T_LIMIT)
        return false;
    const struct zone *z = &w->zone;
    int64_t dur = w->duration_s;
    struct offsets recent, all;
    zone_offsets(z, t - dur, t, &recent); /* a start in (t - dur, t] is at most t + max local */
    zone_offsets(z, t - dur - 2 * OFF_MAX, t + 2 * OFF_MAX, &all);
    int64_t local = floor_minute(t + recent.max);
    int64_t lo = t - dur - OFF_MAX; /* a minute before this starts at or before t - dur */
    for (int steps = 0; steps < STEPS_MAX; steps++) {
        int64_t m, s;
        if (!prev_match(w, local, lo, &m))
            return false;
        if (local_to_utc(z, m, &all, &s) && s <= t)
            return t - s < dur;
        local = m - 60;
    }
    return false;
}

int64_t srv_window_next(const struct srv_window *w, int64_t t)
{
    if (!w || t < -T_LIMIT || t > T_LIMIT)
        return -1;
    const struct zone *z = &w->zone;
    struct offsets soon, near;
    /* A start within 3 days has its local minute above t + soon.min; a later one above
     * t + 3 days - OFF_MAX, more still. */
    zone_offsets(z, t, t + 3 * DAY, &soon);
    int64_t local = floor_minute(t + soon.min);
    int64_t hi = t + SRV_WINDOW_NEXT_HORIZON + OFF_MAX;
    for (int steps = 0; steps < STEPS_MAX; steps++) {
        int64_t m, s;
        if (!next_match(w, local, hi, &m))
            return -1;
        zone_offsets(z, m - OFF_MAX, m + OFF_MAX, &near);
        if (local_to_utc(z, m, &near, &s) && s > t)
            return s - t <= SRV_WINDOW_NEXT_HORIZON ? s : -1;
        local = m + 60;
    }
    return -1;
}
