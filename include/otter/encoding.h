/* Hex and base64 (standard alphabet, with padding) encodings used in manifests and key files. */
#ifndef OTTER_ENCODING_H
#define OTTER_ENCODING_H

#include "otter/err.h"

/* Writes 2*n lowercase hex digits and a NUL to out (size >= 2*n+1). */
void ot_hex_encode(const uint8_t *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1. */
int ot_hex_digit_value(char c);
/* Decodes exactly 2*n hex digits (either case) into out; OT_ERR_FORMAT otherwise. */
enum ot_err ot_hex_decode(const char *hex, uint8_t *out, size_t n) OT_MUST_CHECK;

/* Length of the base64 text for n bytes, including the NUL. */
size_t ot_base64_encoded_len(size_t n);
/* Writes base64 of in plus a NUL to out (size >= ot_base64_encoded_len(n)). */
void ot_base64_encode(const uint8_t *in, size_t n, char *out);
/* Decodes base64 text that must yield exactly n bytes; OT_ERR_FORMAT otherwise (bad characters,
 * wrong length, trailing garbage). */
enum ot_err ot_base64_decode_exact(const char *b64, uint8_t *out, size_t n) OT_MUST_CHECK;

/* Well-formed UTF-8 (what jansson accepts) without control characters: no C0, DEL or C1, except
 * the C0 characters listed in allowed (e.g. "\t\n"; may be NULL). For text from untrusted input
 * that ends up in terminals and logs. */
bool ot_utf8_printable(const char *s, size_t len, const char *allowed);
#endif
