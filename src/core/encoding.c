#include <sodium.h>

#include "otter/encoding.h"

void ot_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int ot_hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

enum ot_err ot_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!hex[2 * i] || !hex[2 * i + 1])
            return OT_ERR_FORMAT;
        int hi = ot_hex_digit_value(hex[2 * i]), lo = ot_hex_digit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return OT_ERR_FORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * n] == '\0' ? OT_OK : OT_ERR_FORMAT;
}

size_t ot_base64_encoded_len(size_t n)
{
    return sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
}

void ot_base64_encode(const uint8_t *in, size_t n, char *out)
{
    sodium_bin2base64(out, ot_base64_encoded_len(n), in, n, sodium_base64_VARIANT_ORIGINAL);
}

enum ot_err ot_base64_decode_exact(const char *b64, uint8_t *out, size_t n)
{
    size_t len = strlen(b64), got = 0;
    const char *end = NULL;
    /* Decode into a scratch buffer one byte larger than wanted, so "too long" is detectable. */
    uint8_t tmp[1024];
    if (n >= sizeof(tmp) || len > ot_base64_encoded_len(n))
        return OT_ERR_FORMAT;
    if (sodium_base642bin(tmp, n + 1, b64, len, NULL, &got, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + len || got != n) {
        sodium_memzero(tmp, sizeof(tmp));
        return OT_ERR_FORMAT;
    }
    memcpy(out, tmp, n);
    sodium_memzero(tmp, sizeof(tmp));
    return OT_OK;
}

/* Length of the well-formed UTF-8 sequence at s (no overlongs, surrogates or values above
 * U+10FFFF: the same rules jansson applies when it decodes), 0 if there is none or it encodes a
 * C1 control character (U+0080..U+009F: as unwelcome in a log line as C0 ones). */
static size_t utf8_seq_len(const unsigned char *s, size_t left)
{
    size_t n;
    uint32_t cp, min;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1fu, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, cp = s[0] & 0x0fu, min = 0x800;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07u, min = 0x10000;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return cp >= 0x80 && cp <= 0x9f ? 0 : n;
}

bool ot_utf8_printable(const char *s, size_t len, const char *allowed)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            if (p[i] == 0 || !allowed || !strchr(allowed, p[i]))
                return false;
            i++;
            continue;
        }
        size_t n = utf8_seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}
