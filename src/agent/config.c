/* otter-agent's configuration table (config.h): key, type, range, default and help in one place;
 * `otter-agent --help` and docs/agent.md list the same table. */
#include "config.h"
#include "http.h"

#define CFG(f) offsetof(struct ag_config, f)
#define DAY_MS (86400ull * 1000)

const struct ot_cfg_key ag_config_keys[] = {
    {NULL, "servers", OT_CFG_STRLIST, CFG(servers), 0, 0, NULL,
     "server URLs, comma-separated, tried in order (https://...)"},
    {NULL, "ca_file", OT_CFG_STRING, CFG(ca_file), 1, 4095, NULL,
     "CA bundle for the server's certificate (default: the system's)"},
    {NULL, "pinned_key", OT_CFG_STRING, CFG(pinned_key), 1, 4095, NULL,
     "pin the server's public key: sha256//BASE64[;sha256//...] or a PEM/DER key file"},
    {NULL, "client_cert", OT_CFG_STRING, CFG(client_cert), 1, 4095, NULL,
     "client certificate (PEM), with client_key"},
    {NULL, "client_key", OT_CFG_STRING, CFG(client_key), 1, 4095, NULL, "client key (PEM)"},
    {NULL, "allow_http", OT_CFG_BOOL, CFG(allow_http), 0, 0, "false",
     "allow plain http:// servers (labs only)"},
    {NULL, "proxy", OT_CFG_STRING, CFG(proxy), 1, 1023, NULL,
     "HTTP proxy, http://[user:password@]host[:port], or none (default: https_proxy, "
     "http_proxy, all_proxy from the environment)"},
    {NULL, "no_proxy", OT_CFG_STRING, CFG(no_proxy), 0, 4095, NULL,
     "hosts, domains and networks reached without the proxy, comma-separated (default: "
     "no_proxy from the environment; loopback never uses one)"},
    {NULL, "identity_key", OT_CFG_STRING, CFG(identity_key), 1, 4095, NULL,
     "the device's Ed25519 identity key (default: STATE_DIR/identity.key, made on first start)"},
    {NULL, "identity", OT_CFG_STRLIST, CFG(identity), 0, 0, NULL,
     "identity attributes shown to operators: key=value, comma-separated"},
    {NULL, "device_type", OT_CFG_STRING, CFG(device_type), 1, 63, NULL,
     "the device type artifacts must list"},
    {NULL, "provides", OT_CFG_STRLIST, CFG(provides), 0, 0, NULL,
     "what the device provides, key=value, comma-separated, beside what committed artifacts "
     "provide (artifacts' depends need them)"},
    {NULL, "enrollment_token", OT_CFG_STRING, CFG(enrollment_token), 1, 127, NULL,
     "the fleet's enrollment token: accepted without an operator"},
    {NULL, "trust", OT_CFG_STRING, CFG(trust), 1, 4095, "/etc/otter/trust.json",
     "trust file: the release keys and how many must sign"},
    {NULL, "device_keys", OT_CFG_STRLIST, CFG(device_keys), 0, 0, NULL,
     "device-class secret keys for encrypted artifacts, comma-separated"},
    {NULL, "state_dir", OT_CFG_STRING, CFG(state_dir), 1, 4095, "/var/lib/otter-agent",
     "state, downloads and staging"},
    {NULL, "modules_dir", OT_CFG_STRING, CFG(modules_dir), 1, 4095, "/usr/lib/otter/modules",
     "update modules (one executable per payload type)"},
    {NULL, "boot", OT_CFG_STRING, CFG(boot), 1, 16, "none",
     "boot backend for A/B updates: none, sim, grub or uboot"},
    {NULL, "boot_env", OT_CFG_STRING, CFG(boot_env), 1, 4095, NULL,
     "the boot backend's environment (grubenv path, fw_env.config, sim file)"},
    {NULL, "boot_tries", OT_CFG_U64, CFG(boot_tries), 1, 9, "3",
     "boots of a new slot before the bootloader falls back"},
    {NULL, "slot_a", OT_CFG_STRING, CFG(slot_a), 1, 4095, NULL, "slot a: block device or file"},
    {NULL, "slot_b", OT_CFG_STRING, CFG(slot_b), 1, 4095, NULL, "slot b: block device or file"},
    {NULL, "root", OT_CFG_STRING, CFG(root), 0, 4095, "",
     "prefix of file, archive and raw path targets (default: none)"},
    {NULL, "streaming", OT_CFG_BOOL, CFG(streaming), 0, 0, "false",
     "install while downloading, without a local copy (restarts from the start if cut)"},
    {NULL, "max_rate", OT_CFG_SIZE, CFG(max_rate), 0, 1ull << 40, "0",
     "download bandwidth cap in bytes/s (0: none)"},
    {NULL, "download_block", OT_CFG_SIZE, CFG(download_block), 64 * 1024, 1ull << 30, "4M",
     "stored downloads are synced to disk every this many bytes: a power cut costs at most one "
     "block of the download"},
    {NULL, "download_window", OT_CFG_STRING, CFG(download_window), 0, 11, "",
     "download only between these local times, HH:MM-HH:MM (empty: any time)"},
    {NULL, "poll_interval", OT_CFG_DURATION, CFG(poll_interval_ms), 1000, 7 * DAY_MS, "5m",
     "check-in interval until the server says otherwise"},
    {NULL, "retry_max", OT_CFG_DURATION, CFG(retry_max_ms), 1000, DAY_MS, "10m",
     "longest wait between retries after errors (exponential backoff)"},
    {NULL, "health_command", OT_CFG_STRING, CFG(health_command), 0, 4095, "",
     "run after an update (after the reboot for A/B): exit 0 = healthy (empty: none)"},
    {NULL, "health_timeout", OT_CFG_DURATION, CFG(health_timeout_ms), 1000, DAY_MS, "2m",
     "the health command is killed and counts as failed after this"},
    {NULL, "reboot_command", OT_CFG_STRING, CFG(reboot_command), 0, 4095, "/sbin/reboot",
     "how to reboot into a new slot (empty: exit with status 75 and let the caller do it)"},
    {NULL, "consent_command", OT_CFG_STRING, CFG(consent_command), 0, 4095, "",
     "soft updates: program (absolute path, no shell) asked before installing: exit 0 = now, "
     "else postpone (empty: install at once)"},
    {NULL, "consent_timeout", OT_CFG_DURATION, CFG(consent_timeout_ms), 1000, DAY_MS, "60s",
     "the consent command is killed and counts as \"postpone\" after this"},
    {NULL, "control_socket", OT_CFG_STRING, CFG(control_socket), 1, 107,
     "/run/otter-agent.sock", "local control socket (otter-agent status, check-now, pause)"},
    {NULL, "inventory_dir", OT_CFG_STRING, CFG(inventory_dir), 1, 4095,
     "/etc/otter/inventory.d", "executables whose key=value output is sent as attributes"},
};
const size_t ag_config_nkeys = OT_ARRAY_SIZE(ag_config_keys);

enum ot_err ag_config_check(const struct ag_config *cfg, struct ot_diag *d)
{
    static const char *const boots[] = {"none", "sim", "grub", "uboot"};
    bool known = false;
    for (size_t i = 0; i < OT_ARRAY_SIZE(boots); i++)
        known |= strcmp(cfg->boot, boots[i]) == 0;
    if (!known)
        return ot_diag_set(d, OT_ERR_CONFIG, "boot '%s': use none, sim, grub or uboot", cfg->boot);
    if (strcmp(cfg->boot, "none") != 0 && (!cfg->slot_a || !cfg->slot_b))
        return ot_diag_set(d, OT_ERR_CONFIG, "boot = %s needs slot_a and slot_b", cfg->boot);
    if (strcmp(cfg->boot, "sim") == 0 && !cfg->boot_env)
        return ot_diag_set(d, OT_ERR_CONFIG, "boot = sim needs boot_env (the simulated "
                                             "bootloader's file)");
    if (!cfg->client_cert != !cfg->client_key)
        return ot_diag_set(d, OT_ERR_CONFIG, "client_cert and client_key go together");
    struct ot_diag why = {0};
    if (cfg->proxy && strcmp(cfg->proxy, "none") != 0 &&
        ag_http_proxy_check(cfg->proxy, &why) != OT_OK)
        return ot_diag_set(d, OT_ERR_CONFIG, "proxy: %s", why.msg);
    for (size_t i = 0; i < cfg->provides.n; i++)
        if (!strchr(cfg->provides.v[i], '=') || cfg->provides.v[i][0] == '=')
            return ot_diag_set(d, OT_ERR_CONFIG, "provides '%s': expected key=value",
                               cfg->provides.v[i]);
    for (size_t i = 0; i < cfg->identity.n; i++)
        if (!strchr(cfg->identity.v[i], '=') || cfg->identity.v[i][0] == '=')
            return ot_diag_set(d, OT_ERR_CONFIG, "identity '%s': expected key=value",
                               cfg->identity.v[i]);
    if (cfg->consent_command[0] && cfg->consent_command[0] != '/')
        return ot_diag_set(d, OT_ERR_CONFIG, "consent_command '%s': must be an absolute path "
                           "(it is run without a shell)", cfg->consent_command);
    const char *w = cfg->download_window;
    unsigned h1, m1, h2, m2;
    char extra;
    if (w[0] && (sscanf(w, "%2u:%2u-%2u:%2u%c", &h1, &m1, &h2, &m2, &extra) != 4 || h1 > 23 ||
                 h2 > 23 || m1 > 59 || m2 > 59 || (h1 == h2 && m1 == m2)))
        return ot_diag_set(d, OT_ERR_CONFIG, "download_window '%s': expected HH:MM-HH:MM", w);
    return OT_OK;
}

enum ot_err ag_config_load(const char *path, struct ag_config *cfg, struct ot_diag *d)
{
    enum ot_err err = path ? ot_cfg_load(path, ag_config_keys, ag_config_nkeys, cfg, d)
                           : ot_cfg_defaults(ag_config_keys, ag_config_nkeys, NULL, cfg, d);
    return err;
}

void ag_config_release(struct ag_config *cfg)
{
    ot_cfg_release(ag_config_keys, ag_config_nkeys, cfg);
}
