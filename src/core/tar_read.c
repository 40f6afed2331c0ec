/* Push-driven strict tar reader (see include/otter/tar.h for what it accepts and why it is not
 * libarchive).
 *
 * The reader is a state machine over the byte stream. Header blocks and pax extended headers are
 * accumulated in bounded internal buffers because they may arrive split across feeds; entry data
 * is handed to the data callback straight from the caller's buffer.
 *
 * Layout of a 512-byte header block (POSIX.1-1988 ustar, GNU uses the same first 345 bytes):
 *     0 name[100]  100 mode[8]  108 uid[8]  116 gid[8]  124 size[12]  136 mtime[12]
 *   148 chksum[8]  156 typeflag  157 linkname[100]  257 magic[6]  263 version[2]
 *   265 uname[32]  297 gname[32]  329 devmajor[8]  337 devminor[8]  345 prefix[155]
 * In GNU headers ("ustar  \0") the bytes from 345 on hold atime/ctime/sparse data, not a prefix.
 *
 * Every failure is sticky: the state becomes RD_FAILED and later calls repeat the same error and
 * message, so a caller that ignores one error cannot resume parsing in the middle of an entry. */
#include <inttypes.h>

#include "otter/buf.h"
#include "otter/tar.h"

#define H_NAME 0
#define H_NAME_LEN 100
#define H_SIZE 124
#define H_SIZE_LEN 12
#define H_CHKSUM 148
#define H_CHKSUM_LEN 8
#define H_TYPE 156
#define H_MAGIC 257
#define H_MAGIC_LEN 8 /* magic and version together */
#define H_PREFIX 345
#define H_PREFIX_LEN 155

/* Room for an escaped name in a message: 4 bytes per input byte at worst, then cut. */
#define QUOTE_MAX 128

enum rd_state {
    RD_HEADER,  /* accumulating a header block */
    RD_PAX,     /* accumulating the records of a pax extended header */
    RD_DATA,    /* passing entry data to the callback */
    RD_PAD,     /* skipping the padding up to the next block boundary */
    RD_EOF2,    /* one zero block seen: the next block must be zero too */
    RD_TRAILER, /* end marker seen: only bounded zero padding may follow */
    RD_FAILED,
};

struct ot_tar_reader {
    struct ot_tar_callbacks cb;
    void *userdata;
    enum rd_state state;
    enum ot_err err;         /* the sticky error once state is RD_FAILED */
    struct ot_diag diag;     /* detail of that error; also handed to the callbacks */
    uint64_t offset;         /* bytes consumed */
    uint64_t block_offset;   /* offset of the header block being read */
    uint8_t block[OT_TAR_BLOCK];
    size_t block_len;
    uint64_t remaining;      /* bytes left in the current data, pax, padding or zero block */
    uint64_t pad;            /* padding that follows the current data or pax records */
    uint64_t entry_size;
    uint64_t trailer;        /* zero bytes seen after the end marker */
    bool at_end;
    /* Records of the last pax extended header, applied to the next entry only. */
    struct ot_buf pax;
    bool pax_pending;
    bool pax_has_path;
    bool pax_has_size;
    uint64_t pax_size;
    char pax_path[OT_TAR_NAME_MAX + 1];
    char name[OT_TAR_NAME_MAX + 1];
};

/* ---- small helpers ---------------------------------------------------------------------------- */

/* Renders untrusted bytes for a message: printable ASCII as is, everything else as \xNN, cut with
 * "..." so a hostile name can neither break a log line nor fill the diagnostic. */
static const char *quote(const void *p, size_t n, char out[QUOTE_MAX])
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 8 > QUOTE_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' && s[i] != '\'') {
            out[o++] = (char)s[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[s[i] >> 4];
            out[o++] = hex[s[i] & 15];
        }
    }
    out[o] = '\0';
    return out;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static uint64_t padding_of(uint64_t size)
{
    return (OT_TAR_BLOCK - size % OT_TAR_BLOCK) % OT_TAR_BLOCK;
}

/* Length of a NUL-padded text field. The bytes after the terminator must be NUL as well: no tar
 * writer puts anything there, and a parser that reads further than another one would see a
 * different name (a classic differential-parsing trick). */
static bool field_text(const uint8_t *f, size_t size, size_t *ret_len)
{
    const uint8_t *nul = memchr(f, '\0', size);
    size_t len = nul ? (size_t)(nul - f) : size;
    if (!all_zero(f + len, size - len))
        return false;
    *ret_len = len;
    return true;
}

/* Octal number as tar writes it: optional leading spaces, at least one digit, then only NUL or
 * space terminators (or none when the digits fill the field). Bounded by INT64_MAX. */
static const char *parse_octal(const uint8_t *f, size_t size, uint64_t *ret)
{
    size_t i = 0;
    while (i < size && f[i] == ' ')
        i++;
    size_t start = i;
    uint64_t v = 0;
    for (; i < size && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v > (uint64_t)INT64_MAX >> 3)
            return "out of range";
        v = v << 3 | (uint64_t)(f[i] - '0');
    }
    if (i == start)
        return "not an octal number";
    for (; i < size; i++)
        if (f[i] != '\0' && f[i] != ' ')
            return "not an octal number";
    *ret = v;
    return NULL;
}

/* GNU base-256: the first byte's top bit marks it, its next bit is the sign (two's complement),
 * the remaining 6 bits and the following bytes are the big-endian value. */
static const char *parse_base256(const uint8_t *f, size_t size, uint64_t *ret)
{
    if (f[0] & 0x40)
        return "negative";
    uint64_t v = f[0] & 0x3f;
    for (size_t i = 1; i < size; i++) {
        if (v > (uint64_t)INT64_MAX >> 8)
            return "out of range";
        v = v << 8 | f[i];
    }
    *ret = v;
    return NULL;
}

/* A numeric header field; returns NULL or why it is invalid. */
static const char *parse_number(const uint8_t *f, size_t size, uint64_t *ret)
{
    return (f[0] & 0x80) ? parse_base256(f, size, ret) : parse_octal(f, size, ret);
}

/* Why name is not acceptable, or NULL. The rules keep every name inside the directory it is
 * extracted to, whatever the consumer does with it. */
static const char *name_problem(const char *name, size_t len)
{
    if (len == 0)
        return "empty name";
    if (len > OT_TAR_NAME_MAX)
        return "name longer than 255 bytes";
    if (memchr(name, '\0', len))
        return "NUL byte in name";
    if (name[0] == '/')
        return "absolute name";
    const char *p = name, *end = name + len;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t n = (size_t)((slash ? slash : end) - p);
        if (n == 0)
            return "empty path component";
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return "'.' or '..' component";
        p += n + 1;
    }
    return NULL;
}

static const char *type_name(uint8_t t)
{
    switch (t) {
    case '1': return "hard link";
    case '2': return "symlink";
    case '3': return "character device";
    case '4': return "block device";
    case '5': return "directory";
    case '6': return "FIFO";
    case '7': return "contiguous file";
    case 'g': return "pax global header";
    case 'A': return "Solaris ACL";
    case 'D': return "GNU dump directory";
    case 'E': return "Solaris extended attribute";
    case 'I': return "inode metadata";
    case 'K': return "GNU long link name";
    case 'L': return "GNU long name";
    case 'M': return "GNU multi-volume continuation";
    case 'N': return "GNU old long name";
    case 'S': return "GNU sparse file";
    case 'V': return "volume label";
    case 'X': return "Solaris extended header";
    default: return NULL;
    }
}

/* ---- callbacks -------------------------------------------------------------------------------- */

static enum ot_err call_entry(struct ot_tar_reader *r)
{
    if (!r->cb.entry)
        return OT_OK;
    return r->cb.entry(r->userdata, r->name, r->entry_size, &r->diag);
}

static enum ot_err call_data(struct ot_tar_reader *r, const uint8_t *p, size_t n)
{
    if (!r->cb.data)
        return OT_OK;
    return r->cb.data(r->userdata, p, n, &r->diag);
}

/* All data delivered: tell the callback, then skip the padding. */
static enum ot_err end_data(struct ot_tar_reader *r)
{
    r->state = r->pad ? RD_PAD : RD_HEADER;
    r->remaining = r->pad;
    if (!r->cb.entry_end)
        return OT_OK;
    return r->cb.entry_end(r->userdata, &r->diag);
}

/* ---- pax extended headers --------------------------------------------------------------------- */

static enum ot_err pax_error(struct ot_tar_reader *r, uint64_t at, const char *why)
{
    return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                       "tar: pax extended header at offset %" PRIu64 ": %s (record at byte %" PRIu64
                       ")",
                       r->block_offset, why, at);
}

static enum ot_err pax_apply_path(struct ot_tar_reader *r, const char *v, size_t n, uint64_t at)
{
    if (r->pax_has_path)
        return pax_error(r, at, "duplicate 'path' record");
    if (n > OT_TAR_NAME_MAX)
        return pax_error(r, at, "'path' longer than 255 bytes");
    if (memchr(v, '\0', n))
        return pax_error(r, at, "NUL byte in 'path'");
    memcpy(r->pax_path, v, n);
    r->pax_path[n] = '\0';
    r->pax_has_path = true;
    return OT_OK;
}

/* pax sizes are plain decimal (POSIX: no sign, no spaces). */
static enum ot_err pax_apply_size(struct ot_tar_reader *r, const char *v, size_t n, uint64_t at)
{
    if (r->pax_has_size)
        return pax_error(r, at, "duplicate 'size' record");
    if (n == 0)
        return pax_error(r, at, "empty 'size'");
    uint64_t size = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return pax_error(r, at, "'size' is not a decimal number");
        if (size > ((uint64_t)INT64_MAX - (uint64_t)(v[i] - '0')) / 10)
            return pax_error(r, at, "'size' out of range");
        size = size * 10 + (uint64_t)(v[i] - '0');
    }
    r->pax_size = size;
    r->pax_has_size = true;
    return OT_OK;
}

static bool key_is(const char *key, size_t klen, const char *want)
{
    return klen == strlen(want) && memcmp(key, want, klen) == 0;
}

/* Only path and size change how the entry is read. Sparse files keep a map inside the data that
 * we would hand on as content, so they are refused; every other key (mtime, atime, ctime, uid,
 * SCHILY.*, LIBARCHIVE.*, ...) is metadata Otter does not use. */
static enum ot_err pax_apply(struct ot_tar_reader *r, const char *key, size_t klen, const char *v,
                             size_t vlen, uint64_t at)
{
    if (key_is(key, klen, "path"))
        return pax_apply_path(r, v, vlen, at);
    if (key_is(key, klen, "size"))
        return pax_apply_size(r, v, vlen, at);
    if (klen >= 11 && memcmp(key, "GNU.sparse.", 11) == 0)
        return pax_error(r, at, "sparse files are not supported");
    return OT_OK;
}

/* One record "<len> <key>=<value>\n" at rec, where len counts the whole record in decimal. The
 * length must match exactly: a record that claims more or less than it holds is an error. */
static enum ot_err pax_record(struct ot_tar_reader *r, const char *rec, size_t avail, uint64_t at,
                              size_t *ret_len)
{
    size_t len = 0, i = 0;
    for (; i < avail && rec[i] >= '0' && rec[i] <= '9'; i++) {
        if (i == 0 && rec[i] == '0')
            return pax_error(r, at, "record length has a leading zero");
        len = len * 10 + (size_t)(rec[i] - '0');
        if (len > avail)
            return pax_error(r, at, "record length runs past the header");
    }
    if (i == 0)
        return pax_error(r, at, "record does not start with a decimal length");
    if (i >= avail || rec[i] != ' ')
        return pax_error(r, at, "no space after the record length");
    if (len < i + 4 || rec[len - 1] != '\n')
        return pax_error(r, at, "record length does not match the record");
    const char *key = rec + i + 1;
    size_t kvlen = len - i - 2; /* without "<len> " and "\n" */
    const char *eq = memchr(key, '=', kvlen);
    if (!eq)
        return pax_error(r, at, "record without '='");
    if (eq == key)
        return pax_error(r, at, "record with an empty key");
    *ret_len = len;
    return pax_apply(r, key, (size_t)(eq - key), eq + 1, kvlen - (size_t)(eq - key) - 1, at);
}

static enum ot_err pax_parse(struct ot_tar_reader *r)
{
    const char *p = (const char *)r->pax.data;
    size_t len = r->pax.len, pos = 0;
    while (pos < len) {
        size_t n = 0;
        enum ot_err e = pax_record(r, p + pos, len - pos, pos, &n);
        if (e)
            return e;
        pos += n;
    }
    ot_buf_reset(&r->pax);
    r->pax_pending = true;
    return OT_OK;
}

/* ---- header blocks ---------------------------------------------------------------------------- */

/* The checksum is the sum of the header bytes with the checksum field taken as spaces. Historic
 * tars summed signed chars; GNU tar accepts both, and so do we. */
static bool checksum_ok(const uint8_t *h)
{
    uint64_t stored;
    if (h[H_CHKSUM] & 0x80 || parse_octal(h + H_CHKSUM, H_CHKSUM_LEN, &stored))
        return false;
    int64_t usum = 0, ssum = 0;
    for (size_t i = 0; i < OT_TAR_BLOCK; i++) {
        uint8_t b = (i >= H_CHKSUM && i < H_CHKSUM + H_CHKSUM_LEN) ? ' ' : h[i];
        usum += b;
        ssum += (int8_t)b;
    }
    return (int64_t)stored == usum || (int64_t)stored == ssum;
}

static bool is_gnu(const uint8_t *h)
{
    return memcmp(h + H_MAGIC, "ustar  \0", H_MAGIC_LEN) == 0;
}

static bool magic_ok(const uint8_t *h)
{
    return is_gnu(h) || memcmp(h + H_MAGIC, "ustar\0" "00", H_MAGIC_LEN) == 0;
}

/* The name stored in the header itself: ustar splits long names into prefix "/" name. */
static const char *header_name(const uint8_t *h, char *out, size_t *ret_len)
{
    size_t nlen, plen = 0;
    if (!field_text(h + H_NAME, H_NAME_LEN, &nlen))
        return "bytes after the NUL terminator of the name field";
    if (!is_gnu(h) && !field_text(h + H_PREFIX, H_PREFIX_LEN, &plen))
        return "bytes after the NUL terminator of the prefix field";
    size_t o = 0;
    if (plen) {
        memcpy(out, h + H_PREFIX, plen);
        out[plen] = '/';
        o = plen + 1;
    }
    memcpy(out + o, h + H_NAME, nlen);
    out[o + nlen] = '\0';
    *ret_len = o + nlen;
    return NULL;
}

/* For messages about a header that is refused before its name is validated. */
static const char *describe_name(const struct ot_tar_reader *r, char q[QUOTE_MAX])
{
    if (r->pax_pending && r->pax_has_path)
        return quote(r->pax_path, strlen(r->pax_path), q);
    size_t nlen;
    const uint8_t *h = r->block;
    const uint8_t *nul = memchr(h + H_NAME, '\0', H_NAME_LEN);
    nlen = nul ? (size_t)(nul - h - H_NAME) : H_NAME_LEN;
    return quote(h + H_NAME, nlen, q);
}

static enum ot_err entry_error(struct ot_tar_reader *r, enum ot_err e, const char *why)
{
    char q[QUOTE_MAX];
    return ot_diag_set(&r->diag, e, "tar: entry '%s' (header at offset %" PRIu64 "): %s",
                       describe_name(r, q), r->block_offset, why);
}

static enum ot_err refuse_type(struct ot_tar_reader *r, uint8_t t)
{
    char why[64];
    const char *tn = type_name(t);
    if (tn)
        snprintf(why, sizeof(why), "unsupported type '%s'", tn);
    else if (t >= 0x20 && t < 0x7f)
        snprintf(why, sizeof(why), "unknown type '%c'", t);
    else
        snprintf(why, sizeof(why), "unknown type 0x%02x", t);
    return entry_error(r, OT_ERR_FORMAT, why);
}

/* Name of a regular entry: the pax path if one was given, else the header's. */
static enum ot_err entry_name(struct ot_tar_reader *r)
{
    char buf[H_PREFIX_LEN + 1 + H_NAME_LEN + 1];
    const char *name = r->pax_path;
    size_t len = strlen(r->pax_path);
    if (!r->pax_has_path) {
        const char *why = header_name(r->block, buf, &len);
        if (why)
            return entry_error(r, OT_ERR_FORMAT, why);
        name = buf;
    }
    const char *why = name_problem(name, len);
    if (why) {
        char q[QUOTE_MAX];
        return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                           "tar: entry '%s' (header at offset %" PRIu64 "): invalid name: %s",
                           quote(name, len, q), r->block_offset, why);
    }
    memcpy(r->name, name, len + 1);
    return OT_OK;
}

static enum ot_err header_size(struct ot_tar_reader *r, uint64_t *ret)
{
    if (r->pax_has_size) {
        *ret = r->pax_size;
        return OT_OK;
    }
    const char *why = parse_number(r->block + H_SIZE, H_SIZE_LEN, ret);
    if (!why)
        return OT_OK;
    char msg[64];
    snprintf(msg, sizeof(msg), "invalid size field (%s)", why);
    return entry_error(r, OT_ERR_FORMAT, msg);
}

static void pax_forget(struct ot_tar_reader *r)
{
    r->pax_pending = r->pax_has_path = r->pax_has_size = false;
    r->pax_path[0] = '\0';
    r->pax_size = 0;
}

static enum ot_err begin_entry(struct ot_tar_reader *r)
{
    uint64_t size;
    enum ot_err e = entry_name(r);
    if (!e)
        e = header_size(r, &size);
    if (e)
        return e;
    pax_forget(r);
    r->entry_size = r->remaining = size;
    r->pad = padding_of(size);
    r->state = RD_DATA;
    e = call_entry(r);
    if (!e && size == 0)
        e = end_data(r);
    return e;
}

static enum ot_err begin_pax(struct ot_tar_reader *r)
{
    if (r->pax_pending)
        return entry_error(r, OT_ERR_FORMAT, "pax extended header follows another one");
    uint64_t size;
    const char *why = parse_number(r->block + H_SIZE, H_SIZE_LEN, &size);
    if (why) {
        char msg[80];
        snprintf(msg, sizeof(msg), "invalid size field of pax extended header (%s)", why);
        return entry_error(r, OT_ERR_FORMAT, msg);
    }
    if (size > OT_TAR_PAX_MAX)
        return ot_diag_set(&r->diag, OT_ERR_LIMIT,
                           "tar: pax extended header at offset %" PRIu64
                           " is %" PRIu64 " bytes, more than the limit of %d",
                           r->block_offset, size, OT_TAR_PAX_MAX);
    r->remaining = size;
    r->pad = padding_of(size);
    if (size == 0) /* no records: valid, and there is no data block to wait for */
        return pax_parse(r);
    if (ot_buf_reserve(&r->pax, (size_t)size))
        return ot_diag_set(&r->diag, OT_ERR_NOMEM, "tar: out of memory");
    r->state = RD_PAX;
    return OT_OK;
}

static enum ot_err process_header(struct ot_tar_reader *r)
{
    const uint8_t *h = r->block;
    if (all_zero(h, OT_TAR_BLOCK)) {
        if (r->pax_pending)
            return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                               "tar: pax extended header not followed by an entry (offset %" PRIu64
                               ")",
                               r->block_offset);
        r->state = RD_EOF2;
        r->remaining = OT_TAR_BLOCK;
        return OT_OK;
    }
    if (!checksum_ok(h))
        return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                           "tar: header at offset %" PRIu64 ": checksum mismatch (not a tar "
                           "archive, or damaged)",
                           r->block_offset);
    if (!magic_ok(h))
        return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                           "tar: header at offset %" PRIu64 ": neither ustar nor GNU format",
                           r->block_offset);
    switch (h[H_TYPE]) {
    case '0':
    case '\0':
        return begin_entry(r);
    case 'x':
        return begin_pax(r);
    default:
        return refuse_type(r, h[H_TYPE]);
    }
}

/* ---- states ----------------------------------------------------------------------------------- */

static enum ot_err step_header(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    if (r->block_len == 0)
        r->block_offset = r->offset;
    size_t k = OT_MIN(n, OT_TAR_BLOCK - r->block_len);
    memcpy(r->block + r->block_len, p, k);
    r->block_len += k;
    *used = k;
    if (r->block_len < OT_TAR_BLOCK)
        return OT_OK;
    r->block_len = 0;
    return process_header(r);
}

static enum ot_err step_pax(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    size_t k = (size_t)OT_MIN((uint64_t)n, r->remaining);
    if (ot_buf_append(&r->pax, p, k))
        return ot_diag_set(&r->diag, OT_ERR_INTERNAL, "tar: pax buffer overflow");
    r->remaining -= k;
    *used = k;
    if (r->remaining)
        return OT_OK;
    r->state = r->pad ? RD_PAD : RD_HEADER;
    r->remaining = r->pad;
    return pax_parse(r);
}

/* Zero-copy: the callback sees the caller's bytes. */
static enum ot_err step_data(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    size_t k = (size_t)OT_MIN((uint64_t)n, r->remaining);
    r->remaining -= k;
    *used = k;
    enum ot_err e = call_data(r, p, k);
    if (!e && r->remaining == 0)
        e = end_data(r);
    return e;
}

/* Padding content is not checked: POSIX does not require it to be zero. */
static enum ot_err step_pad(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    size_t k = (size_t)OT_MIN((uint64_t)n, r->remaining);
    r->remaining -= k;
    *used = k;
    if (r->remaining == 0)
        r->state = RD_HEADER;
    return OT_OK;
}

static enum ot_err step_eof2(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    size_t k = (size_t)OT_MIN((uint64_t)n, r->remaining);
    for (size_t i = 0; i < k; i++) {
        if (p[i]) {
            *used = i;
            return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                               "tar: lone zero block at offset %" PRIu64
                               " followed by data (damaged archive)",
                               r->block_offset);
        }
    }
    r->remaining -= k;
    *used = k;
    if (r->remaining == 0) {
        r->state = RD_TRAILER;
        r->at_end = true;
    }
    return OT_OK;
}

/* After the end marker tar writers pad to their record size (10240 bytes by default) with zeros.
 * Anything else there would be bytes no tar tool shows, so it is refused. */
static enum ot_err step_trailer(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] || r->trailer == OT_TAR_TRAILER_MAX) {
            *used = i;
            if (p[i])
                return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                                   "tar: data after end of archive at offset %" PRIu64,
                                   r->offset + i);
            return ot_diag_set(&r->diag, OT_ERR_FORMAT,
                               "tar: more than %d bytes of padding after end of archive",
                               OT_TAR_TRAILER_MAX);
        }
        r->trailer++;
    }
    *used = n;
    return OT_OK;
}

static enum ot_err step(struct ot_tar_reader *r, const uint8_t *p, size_t n, size_t *used)
{
    switch (r->state) {
    case RD_HEADER: return step_header(r, p, n, used);
    case RD_PAX: return step_pax(r, p, n, used);
    case RD_DATA: return step_data(r, p, n, used);
    case RD_PAD: return step_pad(r, p, n, used);
    case RD_EOF2: return step_eof2(r, p, n, used);
    case RD_TRAILER: return step_trailer(r, p, n, used);
    case RD_FAILED: break;
    }
    return ot_diag_set(&r->diag, OT_ERR_INTERNAL, "tar: reader in an invalid state");
}

/* ---- errors ----------------------------------------------------------------------------------- */

static enum ot_err repeat_error(const struct ot_tar_reader *r, struct ot_diag *d)
{
    if (d)
        *d = r->diag;
    return r->err;
}

/* Makes e sticky. A callback may return an error without a message: give it one. */
static enum ot_err fail(struct ot_tar_reader *r, enum ot_err e, struct ot_diag *d)
{
    r->state = RD_FAILED;
    r->err = e;
    r->diag.err = e;
    if (!r->diag.msg[0])
        snprintf(r->diag.msg, sizeof(r->diag.msg), "tar: stopped at offset %" PRIu64 ": %s",
                 r->offset, ot_strerror(e));
    return repeat_error(r, d);
}

static const char *truncated_where(const struct ot_tar_reader *r)
{
    switch (r->state) {
    case RD_HEADER: return r->block_len ? "in a header block" : "before the end-of-archive marker";
    case RD_PAX: return "in a pax extended header";
    case RD_PAD: return "in the padding to a block boundary";
    case RD_EOF2: return "in the end-of-archive marker";
    default: return "";
    }
}

static enum ot_err truncated(struct ot_tar_reader *r)
{
    char q[QUOTE_MAX];
    if (r->state == RD_DATA)
        return ot_diag_set(&r->diag, OT_ERR_TRUNCATED,
                           "tar: archive truncated in entry '%s' at offset %" PRIu64
                           " (%" PRIu64 " of %" PRIu64 " bytes)",
                           quote(r->name, strlen(r->name), q), r->offset,
                           r->entry_size - r->remaining, r->entry_size);
    return ot_diag_set(&r->diag, OT_ERR_TRUNCATED, "tar: archive truncated %s at offset %" PRIu64,
                       truncated_where(r), r->offset);
}

/* ---- public API ------------------------------------------------------------------------------- */

enum ot_err ot_tar_reader_new(const struct ot_tar_callbacks *cb, void *userdata,
                              struct ot_tar_reader **ret)
{
    if (!cb || !ret)
        return OT_ERR_INVALID;
    struct ot_tar_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return OT_ERR_NOMEM;
    r->cb = *cb;
    r->userdata = userdata;
    r->state = RD_HEADER;
    ot_buf_init(&r->pax, OT_TAR_PAX_MAX);
    *ret = r;
    return OT_OK;
}

enum ot_err ot_tar_reader_feed(struct ot_tar_reader *r, const uint8_t *p, size_t n,
                               struct ot_diag *d)
{
    if (!r || (!p && n))
        return ot_diag_set(d, OT_ERR_INVALID, "tar: invalid arguments to feed");
    if (r->state == RD_FAILED)
        return repeat_error(r, d);
    while (n > 0) {
        size_t used = 0;
        enum ot_err e = step(r, p, n, &used);
        r->offset += used;
        p += used;
        n -= used;
        if (e)
            return fail(r, e, d);
    }
    return OT_OK;
}

enum ot_err ot_tar_reader_finish(struct ot_tar_reader *r, struct ot_diag *d)
{
    if (!r)
        return ot_diag_set(d, OT_ERR_INVALID, "tar: invalid arguments to finish");
    if (r->state == RD_FAILED)
        return repeat_error(r, d);
    if (r->state == RD_TRAILER)
        return OT_OK;
    return fail(r, truncated(r), d);
}

bool ot_tar_reader_at_end(const struct ot_tar_reader *r)
{
    return r && r->at_end;
}

uint64_t ot_tar_reader_offset(const struct ot_tar_reader *r)
{
    return r ? r->offset : 0;
}

void ot_tar_reader_free(struct ot_tar_reader *r)
{
    if (!r)
        return;
    ot_buf_release(&r->pax);
    free(r);
}
