/* The agent's persistent state (docs/agent.md has the diagram): one small JSON file in the state
 * directory, replaced atomically (temp file, fsync, rename, fsync dir) *before* each side effect
 * of the phase it names, so that a power cut at any instant restarts in a phase whose side
 * effects can simply be done again.
 *
 *   idle -> download -> verify -> install -> reboot_pending -> verify_after_boot -> commit -> report
 *                         |  ^          |                              |  (in place: no reboot)
 *                         v  |          +-> (failure) report           +-> rollback -> report
 *                        waiting  (held by the server, or a soft update postponed; nothing live
 *                         |        changed yet)     download only: verify -> report (success)
 *                         +-> idle (the deployment went away)
 *
 * Beside it, installed.json: what is installed per payload (name, version, sha256) and the
 * minimum security version, updated atomically at commit. */
#ifndef OTTER_AGENT_STATE_H
#define OTTER_AGENT_STATE_H

#include "otter/err.h"
#include "otter/manifest.h"
#include "otter/wire.h"

enum ag_phase {
    AG_IDLE,
    AG_DOWNLOAD,
    AG_VERIFY,
    AG_INSTALL,
    AG_REBOOT_PENDING,
    AG_VERIFY_AFTER_BOOT,
    AG_COMMIT,
    AG_ROLLBACK,
    AG_REPORT,
    AG_WAITING,                    /* downloaded and verified, the install waits for the server
                                      (install held) or the device (soft update postponed) */
    AG_PHASE__MAX
};

/* Why a deployment waits in AG_WAITING (ag_state.wait_reason), and what the server is told. */
#define AG_WAIT_HELD "held"
#define AG_WAIT_HELD_MESSAGE "waiting for the maintenance window"
#define AG_WAIT_POSTPONED "postponed"
#define AG_WAIT_POSTPONED_MESSAGE "postponed by the device"

struct ag_state {
    enum ag_phase phase;
    int64_t deployment_id;         /* 0: standalone install (nothing to report) */
    char artifact_sha256[65];      /* of the whole artifact file, hex */
    uint64_t artifact_size;
    char *url;                     /* download URL; or the local file of a standalone install */
    char *manifest;                /* exact manifest.json text (from the check-in) */
    bool needs_reboot;             /* some payload goes to the A/B slot */
    char target_slot[2];           /* A/B: the slot being updated ("" without A/B) */
    char previous_slot[2];         /* A/B: the slot that ran before */
    bool boot_armed;               /* reboot_pending: the bootloader trial is set */
    bool activated;                /* install: handlers' activate ran (rollback must undo it) */
    char result[16];               /* report: success, failure or rolled_back */
    char *message;                 /* report: what happened */
    unsigned attempts;             /* times install started (a crash loop ends in failure) */
    uint64_t downloaded;           /* stored mode: bytes of download.part known to be on disk
                                      (synced); what lies beyond may be what a power cut lost */
    /* How the server wants the deployment treated (the check-in's "type" and "install_allowed",
     * the latest answer about it): */
    enum ot_wire_deploy_type type;
    bool install_held;
    bool slot_only;                /* one payload, a raw image for the A/B slot: may be streamed
                                      even when the install may have to wait (docs/agent.md) */
    bool staged;                   /* streamed: the payload is in the slot and verified, nothing
                                      activated; the install re-checks it and activates */
    bool approved;                 /* left waiting: the hold was lifted and the device consented,
                                      so the install goes ahead without asking again */
    char wait_reason[16];          /* waiting: AG_WAIT_HELD or AG_WAIT_POSTPONED */
    char wait_reported[16];        /* the reason the server was told about ("": none yet) */
};

const char *ag_phase_name(enum ag_phase p);
/* Loads STATE_DIR/state.json; a missing file is a fresh idle state. A damaged one is
 * OT_ERR_FORMAT: the caller keeps the device as it is and reports. */
enum ot_err ag_state_load(const char *dir, struct ag_state *ret, struct ot_diag *d) OT_MUST_CHECK;
/* Writes it atomically (and durably) as state.json. */
enum ot_err ag_state_save(const char *dir, const struct ag_state *s, struct ot_diag *d)
    OT_MUST_CHECK;
void ag_state_release(struct ag_state *s);
/* Sets a string field (copies value; NULL clears). */
enum ot_err ag_state_set(char **field, const char *value) OT_MUST_CHECK;

/* installed.json */
struct ag_installed {
    struct ot_wire_installed *payloads;
    size_t n;
    uint64_t min_security_version;
    struct ot_kv *provides;        /* what committed artifacts provide (their manifests' provides,
                                      the newest value of each key) */
    size_t nprovides;
};
enum ot_err ag_installed_load(const char *dir, struct ag_installed *ret, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err ag_installed_save(const char *dir, const struct ag_installed *in, struct ot_diag *d)
    OT_MUST_CHECK;
/* Sets (adds or replaces) one payload's entry. */
enum ot_err ag_installed_put(struct ag_installed *in, const char *name, const char *version,
                             const uint8_t sha256[32]) OT_MUST_CHECK;
/* Sets (adds or replaces) what the device provides for key. */
enum ot_err ag_installed_provide(struct ag_installed *in, const char *key, const char *value)
    OT_MUST_CHECK;
void ag_installed_release(struct ag_installed *in);

/* Test hook for the power-cut torture test: when the environment variable OTTER_AGENT_CRASH_AT
 * equals point ("save:install", "after:boot_try" ...), the process kills itself with SIGKILL
 * there. Compiled in always; costs a getenv per point. */
void ag_crash_point(const char *point);

#endif
