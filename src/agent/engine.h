/* The update engine: the persistent state machine of state.h driven on the event loop (daemon)
 * or synchronously (standalone install/commit/rollback). Every phase's side effects are
 * idempotent and the phase is saved before they start (state.h). */
#ifndef OTTER_AGENT_ENGINE_H
#define OTTER_AGENT_ENGINE_H

#include <jansson.h>

#include "boot.h"
#include "config.h"
#include "net.h"
#include "otter/trust.h"
#include "state.h"

struct ag_engine;

/* Simulation hooks (otter-sim drives thousands of engines on one loop): every member may be
 * NULL, and a NULL member keeps the real behaviour. They run on the loop, inside the engine: none
 * may free the engine (schedule that on the loop instead). */
struct ag_engine_hooks {
    void *userdata;
    /* Before the work of a phase starts (AG_DOWNLOAD: each download attempt; AG_INSTALL: each
     * install attempt). Returns 0 to go on, > 0 to come back after that many milliseconds (the
     * hook is then asked again), < 0 to fail it with d's message: a download attempt fails like a
     * broken transfer (retried with backoff), an install fails the update. */
    long (*before)(void *userdata, enum ag_phase phase, struct ot_diag *d);
    /* A soft update is downloaded, verified and allowed by the server: may it be installed now?
     * Replaces consent_command (run with OTTER_DEPLOYMENT_ID, OTTER_ARTIFACT_NAME and
     * OTTER_ARTIFACT_VERSION). true: install now; false: postpone (the engine reports waiting,
     * "postponed by the device", and asks again at the next check-in). */
    bool (*consent)(void *userdata, int64_t deployment_id, const char *artifact_name,
                    const char *artifact_version);
    /* Replaces health_command. */
    enum ot_err (*health)(void *userdata, struct ot_diag *d);
    /* Replaces the reboot (reboot_command or exit 75): the engine stops working; the caller
     * frees it, powers the device off and on again. */
    void (*reboot)(void *userdata);
    /* A phase change was saved. */
    void (*phase)(void *userdata, enum ag_phase from, enum ag_phase to);
    /* A check-in's outcome (r->err set on failure). */
    void (*checked_in)(void *userdata, const struct ag_net_result *r);
    /* The final result of a deployment was delivered ("success", "failure", "rolled_back");
     * accepted is false when the server had a final state already (409: the deployment was
     * cancelled meanwhile, or an earlier copy of this report got through) or forgot it (404). */
    void (*reported)(void *userdata, int64_t deployment_id, const char *result, bool accepted);
};

struct ag_engine_env {
    const struct ag_config *cfg;
    struct ag_loop *loop;            /* NULL: standalone */
    struct ag_net *net;              /* NULL: standalone */
    struct ag_boot *boot;            /* NULL: boot = none */
    const struct ot_trust *trust;
    const struct ot_key *device_keys;
    size_t ndevice_keys;
    const struct ag_engine_hooks *hooks; /* NULL: none */
};

/* Exit status asking the caller to reboot (reboot_command is empty). */
#define AG_EXIT_REBOOT 75

enum ot_err ag_engine_new(const struct ag_engine_env *env, struct ag_engine **ret,
                          struct ot_diag *d) OT_MUST_CHECK;
void ag_engine_free(struct ag_engine *e);

/* Daemon: resumes the saved phase, then polls. */
void ag_engine_start(struct ag_engine *e);
void ag_engine_check_now(struct ag_engine *e);
void ag_engine_pause(struct ag_engine *e, bool paused);
/* {"phase":..., "deployment_id":..., "paused":..., ...} */
json_t *ag_engine_status(struct ag_engine *e);

/* Standalone: installs a local artifact file now (verify, install, activate). In place: health
 * check and commit follow at once. A/B: arms the bootloader and returns OT_OK with *ret_reboot
 * set: reboot, then `otter-agent commit`. */
enum ot_err ag_engine_install_file(struct ag_engine *e, const char *path, bool *ret_reboot,
                                   struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ag_engine_commit(struct ag_engine *e, struct ot_diag *d) OT_MUST_CHECK;
enum ot_err ag_engine_rollback(struct ag_engine *e, bool *ret_reboot, struct ot_diag *d)
    OT_MUST_CHECK;

/* Runs the phases that need no network and no reboot from the saved state (standalone commands
 * and the daemon's start). */
const struct ag_state *ag_engine_state(const struct ag_engine *e);

/* inventory.c: the device's attributes (device type, installed versions, os-release, kernel,
 * free space, attribute scripts). */
enum ot_err ag_inventory_collect(const struct ag_config *cfg, const struct ag_installed *in,
                                 struct ot_wire_inventory *ret, struct ot_diag *d) OT_MUST_CHECK;

#endif
