/* JSON helpers over jansson: strict parsing of untrusted documents and canonical output.
 * Every document Otter signs or exchanges is parsed here, with the same rules: a size limit,
 * no duplicate keys, no NUL in strings, a nesting limit, unknown keys rejected where asked. */
#ifndef OTTER_JSON_H
#define OTTER_JSON_H

#include <jansson.h>

#include "otter/buf.h"

#define OT_JSON_MAX_DEPTH 16

/* Parses a complete JSON value from buf (no trailing garbage); rejects duplicate object keys, NUL
 * bytes in strings, nesting deeper than OT_JSON_MAX_DEPTH. Errors carry line:column. */
enum ot_err ot_json_parse(const uint8_t *buf, size_t len, json_t **ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Compact, sorted keys, trailing newline: the same value always gives the same bytes. */
enum ot_err ot_json_dump(const json_t *v, struct ot_buf *out) OT_MUST_CHECK;
/* Like ot_json_dump but indented for humans. */
enum ot_err ot_json_dump_pretty(const json_t *v, struct ot_buf *out) OT_MUST_CHECK;

/* Fails with OT_ERR_FORMAT "<what>: unknown field 'x'" if obj has a key not in allowed (NULL-ended). */
enum ot_err ot_json_only_keys(const json_t *obj, const char *const *allowed, const char *what,
                              struct ot_diag *d) OT_MUST_CHECK;
/* Typed getters. A missing key: OT_ERR_FORMAT "<what>: missing field 'k'" when required, otherwise
 * OT_OK with *ret untouched. A wrong type or a value out of bounds: OT_ERR_FORMAT naming the field.
 * Strings: UTF-8 without control characters, at most max_len bytes; *ret points into obj. */
enum ot_err ot_json_get_str(const json_t *obj, const char *key, bool required, size_t max_len,
                            const char *what, const char **ret, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_json_get_u64(const json_t *obj, const char *key, bool required, uint64_t max,
                            const char *what, uint64_t *ret, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_json_get_bool(const json_t *obj, const char *key, bool required, const char *what,
                             bool *ret, struct ot_diag *d) OT_MUST_CHECK;
/* Fixed-length binary fields: exactly n bytes as lowercase/uppercase hex, or as base64. */
enum ot_err ot_json_get_hex(const json_t *obj, const char *key, bool required, size_t n,
                            const char *what, uint8_t *ret, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ot_json_get_b64(const json_t *obj, const char *key, bool required, size_t n,
                            const char *what, uint8_t *ret, struct ot_diag *d) OT_MUST_CHECK;
/* Sets obj[key] to a new string/integer/hex/base64 value (jansson reference handling inside). */
enum ot_err ot_json_set_str(json_t *obj, const char *key, const char *value) OT_MUST_CHECK;
enum ot_err ot_json_set_u64(json_t *obj, const char *key, uint64_t value) OT_MUST_CHECK;
enum ot_err ot_json_set_hex(json_t *obj, const char *key, const uint8_t *p, size_t n) OT_MUST_CHECK;
enum ot_err ot_json_set_b64(json_t *obj, const char *key, const uint8_t *p, size_t n) OT_MUST_CHECK;

#endif
