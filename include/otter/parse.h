/* Strict number parsing: the whole string must be consumed, no sign where unsigned, no spaces,
 * overflow is an error (never atoi). */
#ifndef OTTER_PARSE_H
#define OTTER_PARSE_H

#include "otter/err.h"

/* Decimal unsigned integer in [min, max]. OT_ERR_FORMAT if not a number, OT_ERR_RANGE if outside. */
enum ot_err ot_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) OT_MUST_CHECK;
enum ot_err ot_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret) OT_MUST_CHECK;
/* A size with an optional binary suffix: "512", "64K", "64KiB", "10M", "1G", "2T" (K = 1024). */
enum ot_err ot_parse_size(const char *s, uint64_t max, uint64_t *ret) OT_MUST_CHECK;
/* A duration with a unit: "250ms", "30s", "5m", "2h", "1d"; a bare number means seconds. */
enum ot_err ot_parse_duration_ms(const char *s, uint64_t max_ms, uint64_t *ret) OT_MUST_CHECK;
/* "true/false", "yes/no", "on/off", "1/0". */
enum ot_err ot_parse_bool(const char *s, bool *ret) OT_MUST_CHECK;

#endif
