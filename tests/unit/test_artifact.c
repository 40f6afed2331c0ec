/* Artifacts end to end at the library level: pack, read, add signatures, and the properties that
 * matter most: nothing truncated or tampered is ever accepted, and content is handed over as
 * verified only when it matches the signed manifest. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "otter/artifact.h"
#include "otter/file.h"
#include "otter/tar.h"

#define NPAY 3

struct fixture {
    char dir[64];
    char inputs[NPAY][128];
    char out[128];
    struct ot_key signers[3];
    struct ot_key box, other_box;
    struct ot_trust trust_2of3, trust_1of1;
};

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (i % 100 < 60) ? (uint8_t)'a' + (uint8_t)(i / 100 % 26) : (uint8_t)x;
    }
}

static void write_file(const char *path, size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    fill(p, n, seed);
    assert_int_equal(ot_file_write_atomic(path, p, n, 0644, NULL), OT_OK);
    free(p);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/otter-artifact-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    static const size_t sizes[NPAY] = {300000, 11, 0};
    for (int i = 0; i < NPAY; i++) {
        snprintf(f->inputs[i], sizeof(f->inputs[i]), "%s/in%d", f->dir, i);
        write_file(f->inputs[i], sizes[i], (uint32_t)i + 1);
    }
    snprintf(f->out, sizeof(f->out), "%s/a.otter", f->dir);
    static const char *names[] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ot_key_generate(OT_KEY_SIGN_SECRET, names[i], &f->signers[i]), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "gw", &f->box), OT_OK);
    assert_int_equal(ot_key_generate(OT_KEY_BOX_SECRET, "other", &f->other_box), OT_OK);
    assert_int_equal(ot_trust_init(&f->trust_2of3, 2, f->signers, 3, NULL), OT_OK);
    assert_int_equal(ot_trust_init(&f->trust_1of1, 1, f->signers, 1, NULL), OT_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void make_manifest(struct ot_manifest *m)
{
    *m = (struct ot_manifest){0};
    assert_int_equal(ot_manifest_set_str(&m->name, "demo"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&m->version, "1.0.0"), OT_OK);
    assert_int_equal(ot_manifest_add_device_type(m, "gw-2"), OT_OK);
    m->security_version = 4;
    static const struct {
        const char *name, *type, *target, *version;
        enum ot_compression c;
    } pl[NPAY] = {
        {"rootfs.img", "raw", "rootfs", "1.0.0", OT_COMPRESSION_ZSTD},
        {"app.conf", "file", "/etc/app.conf", "7", OT_COMPRESSION_NONE},
        {"empty.bin", "file", "/var/empty.bin", "0.1", OT_COMPRESSION_ZSTD},
    };
    for (int i = 0; i < NPAY; i++) {
        struct ot_payload *p;
        assert_int_equal(ot_manifest_add_payload(m, &p), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->name, pl[i].name), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->type, pl[i].type), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->target, pl[i].target), OT_OK);
        assert_int_equal(ot_manifest_set_str(&p->version, pl[i].version), OT_OK);
        p->compression = pl[i].c;
    }
}

static enum ot_err pack(struct fixture *f, size_t nsigners, bool encrypt, struct ot_diag *d)
{
    struct ot_manifest m;
    make_manifest(&m);
    const char *inputs[NPAY] = {f->inputs[0], f->inputs[1], f->inputs[2]};
    struct ot_pack_opts o = {.signers = f->signers, .nsigners = nsigners, .mtime = 1700000000};
    if (encrypt) {
        o.recipients = &f->box;
        o.nrecipients = 1;
    }
    enum ot_err err = ot_artifact_pack(&m, inputs, &o, f->out, d);
    ot_manifest_release(&m);
    return err;
}

static void load(const char *path, struct ot_buf *b)
{
    ot_buf_init(b, 64 << 20);
    assert_int_equal(ot_file_read(path, b, NULL), OT_OK);
}

/* What a read delivered: the content of each payload, and which were reported verified. */
struct result {
    struct ot_buf content[NPAY];
    struct ot_sink *sinks[NPAY];
    bool verified[NPAY];
    bool manifest_seen;
};

static enum ot_err on_manifest(void *ud, const struct ot_manifest *m, const uint8_t *raw,
                               size_t rawlen, const struct ot_sigset *sigs,
                               const struct ot_sig_report *report, struct ot_diag *d)
{
    struct result *r = ud;
    (void)raw;
    (void)rawlen;
    (void)sigs;
    (void)report;
    (void)d;
    r->manifest_seen = m->npayloads == NPAY;
    return OT_OK;
}

static enum ot_err on_begin(void *ud, const struct ot_payload *p, size_t i, struct ot_sink **s,
                            struct ot_diag *d)
{
    struct result *r = ud;
    (void)p;
    (void)d;
    if (i >= NPAY)
        return OT_ERR_INTERNAL;
    if (ot_sink_buf_new(&r->content[i], &r->sinks[i]) != OT_OK)
        return OT_ERR_NOMEM;
    *s = r->sinks[i];
    return OT_OK;
}

static enum ot_err on_end(void *ud, const struct ot_payload *p, size_t i, struct ot_diag *d)
{
    struct result *r = ud;
    (void)p;
    (void)d;
    r->verified[i] = true;
    return OT_OK;
}

static const struct ot_reader_callbacks callbacks = {on_manifest, on_begin, on_end};

static void result_init(struct result *r)
{
    *r = (struct result){0};
    for (int i = 0; i < NPAY; i++)
        ot_buf_init(&r->content[i], 1 << 20);
}

static void result_release(struct result *r)
{
    for (int i = 0; i < NPAY; i++) {
        ot_buf_release(&r->content[i]);
        ot_sink_free(r->sinks[i]);
    }
}

/* Feeds buf to a reader in pieces of at most piece bytes. */
static enum ot_err read_buf(const uint8_t *p, size_t n, size_t piece,
                            const struct ot_reader_opts *o, struct result *res, struct ot_diag *d)
{
    struct ot_artifact_reader *r;
    assert_int_equal(ot_artifact_reader_new(o, &callbacks, res, &r), OT_OK);
    enum ot_err err = OT_OK;
    for (size_t off = 0; !err && off < n; off += piece)
        err = ot_artifact_reader_feed(r, p + off, OT_MIN(piece, n - off), d);
    if (!err)
        err = ot_artifact_reader_finish(r, d);
    ot_artifact_reader_free(r);
    return err;
}

static void assert_content_matches_inputs(struct fixture *f, struct result *res)
{
    for (int i = 0; i < NPAY; i++) {
        struct ot_buf want;
        load(f->inputs[i], &want);
        assert_true(res->verified[i]);
        assert_int_equal(res->content[i].len, want.len);
        if (want.len)
            assert_memory_equal(res->content[i].data, want.data, want.len);
        ot_buf_release(&want);
    }
}

static void test_round_trip_any_split(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 2, false, NULL), OT_OK);
    struct ot_buf a;
    load(f->out, &a);
    struct ot_reader_opts o = {.trust = &f->trust_2of3};
    static const size_t pieces[] = {1, 7, 512, 4096, 65537, 1 << 20};
    for (size_t k = 0; k < OT_ARRAY_SIZE(pieces); k++) {
        struct result res;
        result_init(&res);
        struct ot_diag d = {0};
        assert_int_equal(read_buf(a.data, a.len, pieces[k], &o, &res, &d), OT_OK);
        assert_true(res.manifest_seen);
        assert_content_matches_inputs(f, &res);
        result_release(&res);
    }
    ot_buf_release(&a);
}

static void test_manifest_records_hashes(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 1, false, NULL), OT_OK);
    struct ot_buf a;
    load(f->out, &a);
    /* The manifest is the first tar entry: its data starts at offset 512. */
    struct ot_artifact_reader *r;
    struct ot_reader_opts o = {.trust = &f->trust_1of1};
    assert_int_equal(ot_artifact_reader_new(&o, NULL, NULL, &r), OT_OK);
    assert_int_equal(ot_artifact_reader_feed(r, a.data, a.len, NULL), OT_OK);
    assert_int_equal(ot_artifact_reader_finish(r, NULL), OT_OK);
    const struct ot_manifest *m = ot_artifact_reader_manifest(r);
    assert_non_null(m);
    assert_int_equal(m->npayloads, NPAY);
    for (int i = 0; i < NPAY; i++) {
        struct ot_buf in;
        load(f->inputs[i], &in);
        uint8_t h[OT_SHA256_LEN];
        assert_int_equal(ot_sha256_buf(in.data, in.len, h), OT_OK);
        assert_memory_equal(m->payloads[i].sha256, h, OT_SHA256_LEN);
        assert_int_equal(m->payloads[i].size, in.len);
        ot_buf_release(&in);
    }
    /* Uncompressed and unencrypted: stored == installed. Compressed: the rootfs shrank. */
    assert_int_equal(m->payloads[1].stored_size, m->payloads[1].size);
    assert_true(m->payloads[0].stored_size < m->payloads[0].size);
    assert_int_equal(m->security_version, 4);
    assert_string_equal(m->payloads[1].target, "/etc/app.conf");
    const struct ot_sig_report *rep = ot_artifact_reader_sig_report(r);
    assert_non_null(rep);
    assert_int_equal(rep->valid, 1);
    ot_artifact_reader_free(r);
    ot_buf_release(&a);
}

static void test_threshold_and_add_signature(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 1, false, NULL), OT_OK);
    struct ot_reader_opts o = {.trust = &f->trust_2of3};
    struct ot_buf a;
    load(f->out, &a);
    struct result res;
    result_init(&res);
    struct ot_diag d = {0};
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_ERR_SIGNATURE);
    for (int i = 0; i < NPAY; i++)
        assert_false(res.verified[i]); /* nothing is handed over below the threshold */
    assert_int_equal(res.content[0].len, 0);
    result_release(&res);
    ot_buf_release(&a);

    /* bob adds his signature: now 2 of 3. */
    int fd = open(f->out, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ot_artifact_add_signature(fd, 0, &f->signers[1], 0, f->out, NULL, NULL, &d), OT_OK);
    close(fd);
    load(f->out, &a);
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_OK);
    assert_content_matches_inputs(f, &res);
    result_release(&res);
    ot_buf_release(&a);

    /* bob cannot sign twice, and the artifact is left as it was. */
    struct ot_buf before;
    load(f->out, &before);
    fd = open(f->out, O_RDONLY | O_CLOEXEC);
    assert_int_equal(ot_artifact_add_signature(fd, 0, &f->signers[1], 0, f->out, NULL, NULL, &d),
                     OT_ERR_EXISTS);
    close(fd);
    load(f->out, &a);
    assert_int_equal(a.len, before.len);
    assert_memory_equal(a.data, before.data, a.len);
    ot_buf_release(&a);
    ot_buf_release(&before);
}

static void test_unsigned_then_signed(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 0, false, NULL), OT_OK);
    struct ot_reader_opts o = {.trust = &f->trust_1of1};
    struct ot_buf a;
    load(f->out, &a);
    struct result res;
    result_init(&res);
    struct ot_diag d = {0};
    enum ot_err err = read_buf(a.data, a.len, 1 << 20, &o, &res, &d);
    assert_true(err == OT_ERR_SIGNATURE || err == OT_ERR_UNTRUSTED);
    result_release(&res);
    ot_buf_release(&a);
    int fd = open(f->out, O_RDONLY | O_CLOEXEC);
    assert_int_equal(ot_artifact_add_signature(fd, 0, &f->signers[0], 0, f->out, NULL, NULL, &d), OT_OK);
    close(fd);
    load(f->out, &a);
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_OK);
    result_release(&res);
    ot_buf_release(&a);
}

static void test_encrypted(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 2, true, NULL), OT_OK);
    struct ot_buf a;
    load(f->out, &a);
    /* The plaintext does not appear in the artifact. */
    struct ot_buf in;
    load(f->inputs[1], &in);
    assert_null(memmem(a.data, a.len, in.data, in.len));
    ot_buf_release(&in);

    struct result res;
    struct ot_diag d = {0};
    struct ot_reader_opts o = {.trust = &f->trust_2of3, .device_keys = &f->box, .ndevice_keys = 1};
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 333, &o, &res, &d), OT_OK);
    assert_content_matches_inputs(f, &res);
    result_release(&res);

    o.device_keys = &f->other_box;
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_ERR_NOKEY);
    assert_int_equal(res.content[0].len, 0);
    result_release(&res);

    o.device_keys = NULL;
    o.ndevice_keys = 0;
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_ERR_NOKEY);
    result_release(&res);

    /* Stored mode needs no key and still checks every stored byte. */
    o.mode = OT_READ_STORED;
    result_init(&res);
    assert_int_equal(read_buf(a.data, a.len, 1 << 20, &o, &res, &d), OT_OK);
    for (int i = 0; i < NPAY; i++)
        assert_true(res.verified[i]);
    result_release(&res);
    ot_buf_release(&a);
}

/* Every strict prefix of an artifact is refused, and nothing of the cut payload is verified. */
static void every_truncation_refused(struct fixture *f, bool check_stored)
{
    assert_int_equal(pack(f, 2, true, NULL), OT_OK);
    struct ot_buf a;
    load(f->out, &a);
    struct ot_reader_opts o = {.trust = &f->trust_2of3, .device_keys = &f->box, .ndevice_keys = 1,
                               .check_stored = check_stored};
    /* The stream ends with the end-of-archive marker (two zero blocks) and then zero padding to
     * the tar record size, which carries no information: a cut anywhere before the end of the
     * marker must fail. The marker follows the last non-zero byte's block. */
    size_t last = a.len;
    while (last > 0 && a.data[last - 1] == 0)
        last--;
    size_t end = (last + 511) / 512 * 512 + 1024;
    size_t trials = 0;
    for (size_t cut = 0; cut < end; cut += (cut < 4096 || cut + 2048 > end ? 1 : 127)) {
        struct result res;
        result_init(&res);
        struct ot_diag d = {0};
        enum ot_err err = read_buf(a.data, cut, 1 << 20, &o, &res, &d);
        if (err == OT_OK)
            fail_msg("a prefix of %zu of %zu bytes was accepted", cut, a.len);
        result_release(&res);
        trials++;
    }
    /* ...and the complete marker is enough. */
    struct result res;
    result_init(&res);
    assert_int_equal(read_buf(a.data, end, 1 << 20, &o, &res, NULL), OT_OK);
    result_release(&res);
    assert_true(trials > 4000);
    ot_buf_release(&a);
}

static void test_every_truncation_refused(void **state)
{
    every_truncation_refused(*state, false);
}

static void test_every_truncation_refused_check_stored(void **state)
{
    every_truncation_refused(*state, true);
}

/* Any single flipped byte is either refused, or harmless: what is delivered as verified is exactly
 * the original content (flips in tar padding or in unused header fields change nothing). */
static void test_every_byte_flip_refused_or_harmless(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(pack(f, 2, false, NULL), OT_OK);
    struct ot_buf a;
    load(f->out, &a);
    struct ot_reader_opts o = {.trust = &f->trust_2of3};
    size_t refused = 0, harmless = 0;
    /* Every byte of the headers, manifest and signatures; a sample of the payload bytes. */
    for (size_t i = 0; i < a.len; i += (i < 4096 ? 1 : 211)) {
        a.data[i] ^= 0x20;
        struct result res;
        result_init(&res);
        struct ot_diag d = {0};
        enum ot_err err = read_buf(a.data, a.len, 1 << 20, &o, &res, &d);
        if (err == OT_OK) {
            assert_content_matches_inputs(f, &res);
            harmless++;
        } else {
            refused++;
        }
        result_release(&res);
        a.data[i] ^= 0x20;
    }
    assert_true(refused > 1000);
    print_message("# byte flips: %zu refused, %zu harmless\n", refused, harmless);
    ot_buf_release(&a);
}

/* check_stored decodes the same content, plain and encrypted, in any split of the input. */
static void test_check_stored_round_trip(void **state)
{
    struct fixture *f = *state;
    for (int encrypt = 0; encrypt < 2; encrypt++) {
        assert_int_equal(pack(f, 2, encrypt, NULL), OT_OK);
        struct ot_buf a;
        load(f->out, &a);
        struct ot_reader_opts o = {.trust = &f->trust_2of3, .check_stored = true};
        if (encrypt) {
            o.device_keys = &f->box;
            o.ndevice_keys = 1;
        }
        static const size_t pieces[] = {1, 333, 65537, 1 << 20};
        for (size_t k = 0; k < OT_ARRAY_SIZE(pieces); k++) {
            struct result res;
            result_init(&res);
            struct ot_diag d = {0};
            assert_int_equal(read_buf(a.data, a.len, pieces[k], &o, &res, &d), OT_OK);
            assert_content_matches_inputs(f, &res);
            result_release(&res);
        }
        ot_buf_release(&a);
    }
}

/* Where the stored bytes of each payload entry are: [start, end) per payload, in order. */
static size_t payload_spans(const struct ot_buf *a, size_t start[NPAY], size_t end[NPAY])
{
    size_t off = 0, n = 0;
    for (int e = 0; e < 2 + NPAY && off + 512 <= a->len; e++) {
        uint64_t sz = strtoull((const char *)a->data + off + 124, NULL, 8);
        if (e >= 2) {
            start[n] = off + 512;
            end[n] = off + 512 + (size_t)sz;
            n++;
        }
        off += 512 + (sz + 511) / 512 * 512;
    }
    return n;
}

/* With check_stored, a flipped byte anywhere in a payload's stored bytes is refused, never
 * harmless: the stored hash covers every one of them (and the zstd and secretstream framing that
 * decoding alone might not notice). Plain and encrypted; every byte of the small payloads and of
 * the first and last 512 bytes of the big one (frame headers, the last chunk), every 61st in
 * between. */
static void test_check_stored_every_payload_flip_refused(void **state)
{
    struct fixture *f = *state;
    for (int encrypt = 0; encrypt < 2; encrypt++) {
        assert_int_equal(pack(f, 2, encrypt, NULL), OT_OK);
        struct ot_buf a;
        load(f->out, &a);
        size_t start[NPAY], end[NPAY];
        assert_int_equal(payload_spans(&a, start, end), NPAY);
        struct ot_reader_opts o = {.trust = &f->trust_2of3, .device_keys = &f->box,
                                   .ndevice_keys = (size_t)encrypt, .check_stored = true};
        size_t trials = 0;
        for (int p = 0; p < NPAY; p++) {
            for (size_t i = start[p]; i < end[p];
                 i += (i - start[p] < 512 || end[p] - i <= 512) ? 1 : 61) {
                uint8_t bit = (uint8_t)(1u << (i % 8));
                a.data[i] ^= bit;
                struct result res;
                result_init(&res);
                struct ot_diag d = {0};
                enum ot_err err = read_buf(a.data, a.len, 1 << 20, &o, &res, &d);
                if (err == OT_OK || res.verified[p])
                    fail_msg("flip of bit %u at %zu (payload %d) was accepted", bit, i, p);
                result_release(&res);
                a.data[i] ^= bit;
                trials++;
            }
        }
        assert_true(trials > 2000);
        print_message("# check_stored payload flips (%s): %zu refused\n",
                      encrypt ? "encrypted" : "plain", trials);
        ot_buf_release(&a);
    }
}

static void test_pack_failures_leave_nothing(void **state)
{
    struct fixture *f = *state;
    unlink(f->out);
    struct ot_manifest m;
    make_manifest(&m);
    const char *inputs[NPAY] = {f->inputs[0], "/nonexistent/file", f->inputs[2]};
    struct ot_pack_opts o = {.signers = f->signers, .nsigners = 1};
    struct ot_diag d = {0};
    assert_int_equal(ot_artifact_pack(&m, inputs, &o, f->out, &d), OT_ERR_NOENT);
    assert_non_null(strstr(d.msg, "/nonexistent/file"));
    ot_manifest_release(&m);

    make_manifest(&m);
    assert_int_equal(ot_manifest_set_str(&m.payloads[1].name, "../evil"), OT_OK);
    inputs[1] = f->inputs[1];
    assert_int_equal(ot_artifact_pack(&m, inputs, &o, f->out, &d), OT_ERR_INVALID);
    ot_manifest_release(&m);
    assert_int_equal(access(f->out, F_OK), -1);
    /* No temp files either: only the inputs are in the directory. */
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq %d", f->dir, NPAY);
    assert_int_equal(system(cmd), 0);
}

/* Rewrites the artifact's manifest through edit() and re-signs it with alice and bob, keeping the
 * stored payload bytes: a validly signed artifact whose manifest lies about its payloads. */
static void resign_with_manifest_edit(struct fixture *f, void (*edit)(struct ot_manifest *))
{
    struct ot_buf a;
    load(f->out, &a);
    struct ot_artifact_reader *r;
    struct ot_reader_opts o = {.mode = OT_READ_STORED};
    assert_int_equal(ot_artifact_reader_new(&o, NULL, NULL, &r), OT_OK);
    assert_int_equal(ot_artifact_reader_feed(r, a.data, a.len, NULL), OT_OK);
    assert_int_equal(ot_artifact_reader_finish(r, NULL), OT_OK);
    const struct ot_manifest *orig = ot_artifact_reader_manifest(r);
    struct ot_buf mb;
    ot_buf_init(&mb, OT_MANIFEST_MAX);
    assert_int_equal(ot_manifest_format(orig, &mb, NULL), OT_OK);
    struct ot_manifest m;
    assert_int_equal(ot_manifest_parse(mb.data, mb.len, &m, NULL), OT_OK);
    edit(&m);
    ot_buf_reset(&mb);
    assert_int_equal(ot_manifest_format(&m, &mb, NULL), OT_OK);
    struct ot_sigset sigs = {0};
    assert_int_equal(ot_sigset_add(&sigs, &f->signers[0], mb.data, mb.len, NULL), OT_OK);
    assert_int_equal(ot_sigset_add(&sigs, &f->signers[1], mb.data, mb.len, NULL), OT_OK);
    struct ot_buf sb;
    ot_buf_init(&sb, OT_SIG_FILE_MAX);
    assert_int_equal(ot_sigset_format(&sigs, &sb), OT_OK);

    /* Copy the stored payload bytes from the original tar: they follow the two small entries. */
    int fd = open(f->out, O_WRONLY | O_TRUNC | O_CLOEXEC);
    struct ot_tar_writer *w;
    assert_int_equal(ot_tar_writer_new(fd, 0, &w, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "manifest.json", mb.len, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, mb.data, mb.len, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_begin_entry(w, "manifest.sig", sb.len, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_write(w, sb.data, sb.len, NULL), OT_OK);
    assert_int_equal(ot_tar_writer_end_entry(w, NULL), OT_OK);
    size_t off = 0;
    for (int e = 0; e < 2; e++) { /* skip header + padded data of the two small entries */
        uint64_t sz = strtoull((const char *)a.data + off + 124, NULL, 8);
        off += 512 + (sz + 511) / 512 * 512;
    }
    for (size_t i = 0; i < orig->npayloads; i++) {
        char name[128];
        snprintf(name, sizeof(name), "payload/%s", orig->payloads[i].name);
        uint64_t sz = orig->payloads[i].stored_size;
        assert_int_equal(ot_tar_writer_begin_entry(w, name, sz, NULL), OT_OK);
        assert_int_equal(ot_tar_writer_write(w, a.data + off + 512, sz, NULL), OT_OK);
        assert_int_equal(ot_tar_writer_end_entry(w, NULL), OT_OK);
        off += 512 + (sz + 511) / 512 * 512;
    }
    assert_int_equal(ot_tar_writer_close(w, NULL), OT_OK);
    ot_tar_writer_free(w);
    close(fd);
    ot_manifest_release(&m);
    ot_buf_release(&mb);
    ot_buf_release(&sb);
    ot_artifact_reader_free(r);
    ot_buf_release(&a);
}

static void shrink_rootfs(struct ot_manifest *m) { m->payloads[0].size = 1000; }
static void grow_rootfs(struct ot_manifest *m) { m->payloads[0].size += 1; }
static void change_rootfs_hash(struct ot_manifest *m) { m->payloads[0].sha256[5] ^= 1; }
static void change_rootfs_stored_hash(struct ot_manifest *m)
{
    m->payloads[0].stored_sha256[5] ^= 1;
}

static void expect_signed_lie_refused(struct fixture *f, void (*edit)(struct ot_manifest *),
                                      bool check_stored, enum ot_err want, const char *msg)
{
    assert_int_equal(pack(f, 2, false, NULL), OT_OK);
    resign_with_manifest_edit(f, edit);
    struct ot_buf a;
    load(f->out, &a);
    struct ot_reader_opts o = {.trust = &f->trust_2of3, .check_stored = check_stored};
    struct result res;
    result_init(&res);
    struct ot_diag d = {0};
    assert_int_equal(read_buf(a.data, a.len, 4096, &o, &res, &d), want);
    if (!strstr(d.msg, msg))
        fail_msg("'%s' does not say '%s'", d.msg, msg);
    assert_false(res.verified[0]);
    assert_true(res.content[0].len <= 1000 || edit != shrink_rootfs);
    result_release(&res);
    ot_buf_release(&a);
}

static void test_decompression_bomb_stops_at_declared_size(void **state)
{
    expect_signed_lie_refused(*state, shrink_rootfs, false, OT_ERR_SIZE, "declared size");
    expect_signed_lie_refused(*state, shrink_rootfs, true, OT_ERR_SIZE, "declared size");
}

static void test_signed_wrong_hash_refused(void **state)
{
    expect_signed_lie_refused(*state, change_rootfs_hash, false, OT_ERR_HASH, "rootfs.img");
    expect_signed_lie_refused(*state, change_rootfs_stored_hash, true, OT_ERR_HASH,
                              "payload 'rootfs.img': stored content has SHA-256");
}

/* check_stored does not hash the decoded bytes, but still holds them to the declared size: a
 * signed size one byte more than the stored bytes decode to is refused at the end. */
static void test_check_stored_decoded_size_exact(void **state)
{
    expect_signed_lie_refused(*state, grow_rootfs, false, OT_ERR_SIZE,
                              "decoded size is 300000 bytes, the manifest declares 300001");
    expect_signed_lie_refused(*state, grow_rootfs, true, OT_ERR_SIZE,
                              "decoded size is 300000 bytes, the manifest declares 300001");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_any_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_records_hashes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threshold_and_add_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsigned_then_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encrypted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_truncation_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_truncation_refused_check_stored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_byte_flip_refused_or_harmless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_stored_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_stored_every_payload_flip_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pack_failures_leave_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decompression_bomb_stops_at_declared_size, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_signed_wrong_hash_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_stored_decoded_size_exact, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
