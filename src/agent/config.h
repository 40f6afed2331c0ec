/* otter-agent's configuration: one table of keys (config.c), a file with key = value lines
 * (/etc/otter/agent.conf; --config names another). Everything is validated before any I/O. */
#ifndef OTTER_AGENT_CONFIG_H
#define OTTER_AGENT_CONFIG_H

#include "otter/config.h"

struct ag_config {
    struct ot_strlist servers;     /* base URLs, tried in order */
    char *ca_file, *pinned_key, *client_cert, *client_key;
    bool allow_http;
    char *proxy;                   /* NULL: from the environment; "none"; or the proxy's URL */
    char *no_proxy;                /* NULL: from the environment */
    char *identity_key;            /* Ed25519 secret key file; created on first start */
    struct ot_strlist identity;    /* "key=value" identity attributes */
    char *device_type;
    struct ot_strlist provides;    /* "key=value": what artifacts' depends are checked against */
    char *enrollment_token;
    char *trust;                   /* trust file: release keys and threshold */
    struct ot_strlist device_keys; /* X25519 secret key files for encrypted artifacts */
    char *state_dir;
    char *modules_dir;
    char *boot;                    /* none, sim, grub, uboot */
    char *boot_env;                /* backend's environment file / fw_env.config */
    uint64_t boot_tries;
    char *slot_a, *slot_b;         /* raw payloads: the A/B slots (device or file) */
    char *root;                    /* prefix for file/archive targets (tests, chroot images) */
    bool streaming;                /* install while downloading (no local copy) */
    uint64_t max_rate;             /* download bytes/s, 0 unlimited */
    uint64_t download_block;       /* stored downloads are made durable every this many bytes */
    char *download_window;         /* "HH:MM-HH:MM" local time, "" always */
    uint64_t poll_interval_ms;     /* until the server says */
    uint64_t retry_max_ms;         /* backoff cap */
    char *health_command;
    uint64_t health_timeout_ms;
    char *reboot_command;          /* "" : exit with status 75 and let the caller reboot */
    char *consent_command;         /* soft updates: absolute path run without a shell, exit 0 =
                                      install now ("": soft updates install like forced ones) */
    uint64_t consent_timeout_ms;
    char *control_socket;
    char *inventory_dir;           /* executables printing key=value lines */
};

extern const struct ot_cfg_key ag_config_keys[];
extern const size_t ag_config_nkeys;

/* Defaults, then the file (path may be NULL), then checks across keys (OT_ERR_CONFIG). */
enum ot_err ag_config_load(const char *path, struct ag_config *cfg, struct ot_diag *d)
    OT_MUST_CHECK;
enum ot_err ag_config_check(const struct ag_config *cfg, struct ot_diag *d) OT_MUST_CHECK;
void ag_config_release(struct ag_config *cfg);

#endif
