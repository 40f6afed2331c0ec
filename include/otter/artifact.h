/* Artifacts: packing, reading (verify, inspect, unpack, install), adding signatures.
 *
 * Layout (a tar stream, docs/artifact-format.md):
 *     manifest.json    first: names, versions, compatibility, per payload sizes and SHA-256
 *     manifest.sig     one or more Ed25519 signatures over the exact bytes of manifest.json
 *     payload/<name>   each payload in manifest order: raw, zstd-compressed and/or encrypted
 *
 * Reading verifies the signature threshold once (before the manifest is parsed), then checks every
 * payload while it streams: decoding, the decoded bytes against sha256 (or, with check_stored, the
 * stored bytes against stored_sha256 and the decoded size exactly); in stored mode (no keys), the
 * stored bytes against stored_sha256. The consumer sees bytes as they arrive but must not make
 * them active before payload_end reports them verified. */
#ifndef OTTER_ARTIFACT_H
#define OTTER_ARTIFACT_H

#include "otter/codec.h"
#include "otter/manifest.h"
#include "otter/sig.h"

#define OT_ARTIFACT_MANIFEST_NAME "manifest.json"
#define OT_ARTIFACT_SIG_NAME "manifest.sig"
#define OT_ARTIFACT_PAYLOAD_PREFIX "payload/"
#define OT_ARTIFACT_IO_CHUNK (1024 * 1024)

typedef void (*ot_progress_fn)(void *userdata, uint64_t done, uint64_t total);

/* ---- writing ---- */

struct ot_pack_opts {
    int zstd_level;                  /* for payloads with OT_COMPRESSION_ZSTD; 0: 3 */
    const struct ot_key *signers;    /* signing secret keys; may be 0 (sign later with otter sign) */
    size_t nsigners;
    const struct ot_key *recipients; /* box keys; when nrecipients > 0 every payload is encrypted */
    size_t nrecipients;
    int64_t mtime;                   /* tar entry times (reproducible builds: SOURCE_DATE_EPOCH) */
    ot_progress_fn progress;         /* input bytes read so far / total input bytes */
    void *progress_userdata;
};

/* Packs an artifact. The caller fills m's metadata and, per payload, name, type, target, version,
 * compression and args; pack fills sizes, hashes, the encryption flag and the recipients.
 * inputs[i] is the file for m->payloads[i]. Each input is read exactly once; out_path is written
 * atomically (nothing is left behind on failure). */
enum ot_err ot_artifact_pack(struct ot_manifest *m, const char *const *inputs,
                             const struct ot_pack_opts *opts, const char *out_path,
                             struct ot_diag *d) OT_MUST_CHECK;

/* ---- reading ---- */

enum ot_read_mode {
    OT_READ_DECODE, /* decrypt, decompress, check the installed hash (check_stored: the stored
                     * hash and the decoded size); sinks get content */
    OT_READ_STORED, /* check stored hash only; sinks get the stored bytes (no keys needed) */
    OT_READ_AUTO,   /* DECODE, except that an encrypted artifact read without any device key is
                     * checked as STORED; ot_artifact_reader_decodes() says which, once the
                     * manifest callback ran. One pass, so the input need not be seekable. */
};

struct ot_reader_opts {
    const struct ot_trust *trust;     /* NULL: signatures are parsed and reported, not verified */
    const struct ot_key *device_keys; /* box secret keys tried for encrypted artifacts */
    size_t ndevice_keys;
    enum ot_read_mode mode;
    size_t decode_chunk;              /* decompressed bytes per step; 0: 1 MiB (see codec.h) */
    /* Decode, but check each payload against its signed stored hash instead of hashing the
     * decoded bytes; the decoded size is still enforced exactly. As strong: decoding is
     * deterministic, so the signed stored bytes have exactly one decoded form, and the stored form
     * is the smaller one to hash (a compressed image: about a third). Ignored in OT_READ_STORED. */
    bool check_stored;
};

struct ot_reader_callbacks {
    /* The manifest was parsed and, with a trust set, its signatures met the threshold. raw is the
     * exact manifest.json. Return an error to stop (e.g. an incompatible device). May be NULL. */
    enum ot_err (*manifest)(void *userdata, const struct ot_manifest *m, const uint8_t *raw,
                            size_t rawlen, const struct ot_sigset *sigs,
                            const struct ot_sig_report *report, struct ot_diag *d);
    /* Payload index starts: set *ret_sink to receive its bytes (decoded or stored per the mode), or
     * leave NULL to verify and discard them. The reader finishes the sink but does not free it.
     * May be NULL. */
    enum ot_err (*payload_begin)(void *userdata, const struct ot_payload *p, size_t index,
                                 struct ot_sink **ret_sink, struct ot_diag *d);
    /* Payload index is complete and matches its size and hashes: only now may it be used. */
    enum ot_err (*payload_end)(void *userdata, const struct ot_payload *p, size_t index,
                               struct ot_diag *d);
};

struct ot_artifact_reader;

enum ot_err ot_artifact_reader_new(const struct ot_reader_opts *opts,
                                   const struct ot_reader_callbacks *cb, void *userdata,
                                   struct ot_artifact_reader **ret) OT_MUST_CHECK;
enum ot_err ot_artifact_reader_feed(struct ot_artifact_reader *r, const uint8_t *p, size_t n,
                                    struct ot_diag *d) OT_MUST_CHECK;
/* End of input: OT_OK only if every payload was read and verified and the archive ended cleanly. */
enum ot_err ot_artifact_reader_finish(struct ot_artifact_reader *r, struct ot_diag *d)
    OT_MUST_CHECK;
/* Reads fd to the end in OT_ARTIFACT_IO_CHUNK pieces, then finish. total (for progress) may be 0. */
enum ot_err ot_artifact_reader_feed_fd(struct ot_artifact_reader *r, int fd, uint64_t total,
                                       ot_progress_fn progress, void *userdata, struct ot_diag *d)
    OT_MUST_CHECK;
/* The manifest once read (NULL before), and the signature report (filled once manifest.sig was
 * checked, also when the check failed, so a tool can say who signed). With a trust set, the
 * manifest is parsed only after its signatures met the threshold: unauthenticated bytes never
 * reach the JSON parser. */
const struct ot_manifest *ot_artifact_reader_manifest(const struct ot_artifact_reader *r);
const struct ot_sig_report *ot_artifact_reader_sig_report(const struct ot_artifact_reader *r);
const struct ot_sigset *ot_artifact_reader_sigset(const struct ot_artifact_reader *r);
/* True when payloads are decoded (always in OT_READ_DECODE; in OT_READ_AUTO decided at the manifest). */
bool ot_artifact_reader_decodes(const struct ot_artifact_reader *r);
uint64_t ot_artifact_reader_offset(const struct ot_artifact_reader *r);
void ot_artifact_reader_free(struct ot_artifact_reader *r);
OT_DEFINE_CLEANUP(struct ot_artifact_reader, ot_artifact_reader_free)

/* ---- signing ---- */

/* Writes a copy of the artifact on in_fd to out_path (atomically) with one more signature by sk.
 * Every payload's stored bytes are checked against the manifest while copying, so a signer never
 * signs a manifest whose payloads were swapped. OT_ERR_EXISTS when sk already signed. out_path may
 * be the input's own path. mtime: tar entry times of the new file (the reader does not keep the
 * old ones; pass SOURCE_DATE_EPOCH for reproducible files). */
enum ot_err ot_artifact_add_signature(int in_fd, uint64_t in_size, const struct ot_key *sk,
                                      int64_t mtime, const char *out_path, ot_progress_fn progress,
                                      void *userdata, struct ot_diag *d) OT_MUST_CHECK;

#endif
