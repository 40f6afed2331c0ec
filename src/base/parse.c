#include <ctype.h>

#include "otter/parse.h"

/* Parses the leading decimal digits of s; *end points past them. */
static enum ot_err parse_digits(const char *s, uint64_t *ret, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return OT_ERR_FORMAT;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return OT_ERR_RANGE;
        v = v * 10 + digit;
    }
    *ret = v;
    *end = s;
    return OT_OK;
}

enum ot_err ot_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
    const char *end;
    uint64_t v;
    if (!s)
        return OT_ERR_FORMAT;
    enum ot_err err = parse_digits(s, &v, &end);
    if (err)
        return err;
    if (*end)
        return OT_ERR_FORMAT;
    if (v < min || v > max)
        return OT_ERR_RANGE;
    *ret = v;
    return OT_OK;
}

enum ot_err ot_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
    if (!s)
        return OT_ERR_FORMAT;
    bool neg = *s == '-';
    uint64_t mag;
    const char *end;
    enum ot_err err = parse_digits(s + neg, &mag, &end);
    if (err)
        return err;
    if (*end)
        return OT_ERR_FORMAT;
    int64_t v;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return OT_ERR_RANGE;
        v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return OT_ERR_RANGE;
        v = (int64_t)mag;
    }
    if (v < min || v > max)
        return OT_ERR_RANGE;
    *ret = v;
    return OT_OK;
}

static enum ot_err scale(uint64_t v, uint64_t mult, uint64_t max, uint64_t *ret)
{
    if (mult && v > UINT64_MAX / mult)
        return OT_ERR_RANGE;
    v *= mult;
    if (v > max)
        return OT_ERR_RANGE;
    *ret = v;
    return OT_OK;
}

enum ot_err ot_parse_size(const char *s, uint64_t max, uint64_t *ret)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},    {"B", 0},    {"K", 10},   {"KiB", 10}, {"k", 10},   {"M", 20},
        {"MiB", 20}, {"G", 30},  {"GiB", 30}, {"T", 40},   {"TiB", 40},
    };
    const char *end;
    uint64_t v;
    if (!s)
        return OT_ERR_FORMAT;
    enum ot_err err = parse_digits(s, &v, &end);
    if (err)
        return err;
    for (size_t i = 0; i < OT_ARRAY_SIZE(units); i++)
        if (strcmp(end, units[i].suffix) == 0)
            return scale(v, UINT64_C(1) << units[i].shift, max, ret);
    return OT_ERR_FORMAT;
}

enum ot_err ot_parse_duration_ms(const char *s, uint64_t max_ms, uint64_t *ret)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    const char *end;
    uint64_t v;
    if (!s)
        return OT_ERR_FORMAT;
    enum ot_err err = parse_digits(s, &v, &end);
    if (err)
        return err;
    for (size_t i = 0; i < OT_ARRAY_SIZE(units); i++)
        if (strcmp(end, units[i].suffix) == 0)
            return scale(v, units[i].ms, max_ms, ret);
    return OT_ERR_FORMAT;
}

enum ot_err ot_parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    if (!s)
        return OT_ERR_FORMAT;
    for (size_t i = 0; i < OT_ARRAY_SIZE(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *ret = true;
            return OT_OK;
        }
        if (strcmp(s, no[i]) == 0) {
            *ret = false;
            return OT_OK;
        }
    }
    return OT_ERR_FORMAT;
}
