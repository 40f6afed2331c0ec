/* One device's parts assembled from its configuration: the identity key, the trust set, the
 * device keys and the boot backend, and from them the network and engine settings. Both
 * otter-agent's main() (one device) and otter-sim (one per simulated device, on a shared loop)
 * build devices with these, so the simulator runs exactly the agent's code. */
#ifndef OTTER_AGENT_DEVICE_H
#define OTTER_AGENT_DEVICE_H

#include "engine.h"

struct ag_device {
    struct ag_config cfg;            /* loaded by the caller; owned (released) by the device */
    struct ot_key identity;
    const struct ot_trust *trust;    /* own_trust, or the caller's shared one */
    struct ot_trust *own_trust;
    struct ot_key *device_keys;
    size_t ndevice_keys;
    struct ag_boot *boot;            /* NULL with boot = none */
    struct ot_wire_kv *ident;        /* identity attributes (key_id when none is configured) */
    size_t nident;
};

/* Checks dev->cfg (device_type, and servers when need_server), creates the state directory,
 * loads the trust file (unless shared_trust is given: then it must outlive dev), the device keys,
 * and opens the boot backend. */
enum ot_err ag_device_open(struct ag_device *dev, bool need_server,
                           const struct ot_trust *shared_trust, struct ot_diag *d) OT_MUST_CHECK;
/* Loads the identity key (creating it on first start) and the identity attributes: what talking
 * to a server needs. */
enum ot_err ag_device_identity(struct ag_device *dev, struct ot_diag *d) OT_MUST_CHECK;
/* Network settings pointing into dev (valid while dev is). */
struct ag_net_config ag_device_net_config(const struct ag_device *dev);
struct ag_engine_env ag_device_engine_env(struct ag_device *dev, struct ag_loop *loop,
                                          struct ag_net *net);
void ag_device_release(struct ag_device *dev);

#endif
