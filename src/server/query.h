/* Dynamic device groups: a small filter language over devices (user guide: docs/query-language.md).
 *
 * A filter is parsed once (srv_query_parse) and then evaluated against any number of devices
 * (srv_query_match). The module is pure: no I/O, no locks, no store; evaluation neither allocates
 * nor fails, so it can run per device of a large fleet.
 *
 * Grammar (words are case-insensitive; keys, strings and payload names are not):
 *
 *     expr       := or
 *     or         := and ("or" and)*
 *     and        := unary ("and" unary)*
 *     unary      := "not" unary | "(" expr ")" | "tag" "(" string ")"
 *                 | "exists" "(" operand ")" | comparison
 *     comparison := operand op value
 *                 | operand "in" "(" value ("," value)* ")"
 *                 | operand "not" "in" "(" value ("," value)* ")"
 *     operand    := "device_type" | "status" | "id"
 *                 | "attr" "." key | "attr" "[" string "]"
 *                 | "identity" "." key | "identity" "[" string "]"
 *                 | "version" "(" string ")"              (the installed version of that payload)
 *     op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"
 *     value      := string | number
 *     key        := [A-Za-z0-9_.:-]{1,64}                  (written right after the dot)
 *     string     := '"' (any byte but '"' and '\', or '\"', or '\\')* '"'
 *     number     := "-"? [0-9]+ ("." [0-9]+)?
 *
 * So "not" binds tighter than "and", which binds tighter than "or". Blanks (space, tab, CR, LF)
 * separate tokens. A bracketed key is 1..64 bytes; a payload name and a tag 1..255.
 *
 * Meaning:
 *  - device_type, status, attr.<key>, identity.<key>: "=", "!=" and "in" compare the text
 *    bytewise; "<", "<=", ">", ">=" compare numerically when both sides are numbers (the number
 *    rule above: "10" > "9", "1.50" = "1.5" for ordering), bytewise otherwise ("b" > "a").
 *  - id: numeric for every operator but "~"; its values must be numbers.
 *  - version("p"): every operator but "~" uses srv_version_cmp ("4.10" > "4.9", "4.2" = "4.02").
 *  - "~" matches a glob against the text: "*" any run of characters, "?" one character (UTF-8),
 *    "\" makes the next character literal (written "\\" inside a string); it must match the whole
 *    text.
 *  - A device lacking the operand (an attribute or identity key not there or not a string, number
 *    or boolean; a payload not installed or without a version; device_type "" = unknown) makes
 *    every comparison on it false, "!=" and "not in" included: `not (attr.x = "1")` holds for a
 *    device without x, `attr.x != "1"` does not. exists(operand) tests presence.
 *  - tag("t") holds when the device has the tag t.
 *
 * Errors: OT_ERR_FORMAT with "at column N: ..." for a syntax error (N counts bytes from 1; a
 * newline is one byte); OT_ERR_LIMIT with the same prefix past SRV_QUERY_TEXT_MAX bytes of text,
 * SRV_QUERY_NODES_MAX nodes (every and/or chain, not, comparison, exists(), tag() and every value
 * of an in list is one) or SRV_QUERY_DEPTH_MAX levels of nested parentheses and "not". Messages
 * name what was expected and never repeat the input's strings.
 *
 * Example: device_type = "gw-2" and attr.region in ("eu", "us") and version("rootfs") < "4.2" */
#ifndef OTTERD_QUERY_H
#define OTTERD_QUERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otter/err.h"

#define SRV_QUERY_TEXT_MAX 4096   /* bytes of filter text */
#define SRV_QUERY_NODES_MAX 256
#define SRV_QUERY_DEPTH_MAX 32    /* nested parentheses and "not" */
#define SRV_QUERY_KEY_MAX 64      /* bytes of an attr / identity key */
#define SRV_QUERY_NAME_MAX 255    /* bytes of a version() payload name */

/* A parsed filter: one allocation, immutable after parse, so one query may be matched from
 * several threads at once. */
struct srv_query;

/* Parses a filter; OT_ERR_FORMAT with "at column N: ..." in the message for a syntax error,
 * OT_ERR_LIMIT past SRV_QUERY_TEXT_MAX (4096 bytes) / 256 nodes / depth 32. *ret is written only
 * on success and is the caller's (srv_query_free). */
enum ot_err srv_query_parse(const char *text, struct srv_query **ret, struct ot_diag *d)
    OT_MUST_CHECK;
/* Accepts NULL. */
void srv_query_free(struct srv_query *q);

/* What a query sees of a device (the caller fills it from struct srv_device of src/server/store.h;
 * attributes/installed/identity are the parsed JSON objects of its text members). Every pointer
 * may be NULL: that member is then missing. The query keeps none of them. */
struct srv_query_device {
    int64_t id;
    const char *device_type;          /* "" unknown */
    const char *status;               /* "accepted", "pending", ... */
    const json_t *attributes;         /* {"region":"eu",...}: string values */
    const json_t *installed;          /* {"rootfs":{"version":"4.1.0","sha256":"..."}} */
    const json_t *identity;           /* {"mac":"..."} */
    const char *const *tags; size_t ntags;
};

bool srv_query_match(const struct srv_query *q, const struct srv_query_device *dev);

/* Version order used by version(): like dpkg's (runs of digits compare numerically, letters
 * before non-letters, '~' before anything, even the end): <0, 0, >0. The whole string is one
 * upstream version: no epoch or revision split. Bytes compare unsigned, no locale. */
int srv_version_cmp(const char *a, const char *b);

#endif
