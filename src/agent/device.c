/* A device's parts from its configuration (device.h). */
#include <sys/stat.h>

#include "device.h"
#include "otter/log.h"

void ag_device_release(struct ag_device *a)
{
    ag_boot_close(a->boot);
    ot_key_wipe(&a->identity);
    for (size_t i = 0; i < a->ndevice_keys; i++)
        ot_key_wipe(&a->device_keys[i]);
    free(a->device_keys);
    free(a->own_trust);
    for (size_t i = 0; i < a->nident; i++) {
        free(a->ident[i].key);
        free(a->ident[i].value);
    }
    free(a->ident);
    ag_config_release(&a->cfg);
    *a = (struct ag_device){0};
}

static enum ot_err load_identity(struct ag_device *a, struct ot_diag *d)
{
    char *path = a->cfg.identity_key;
    char *made = NULL;
    if (!path && asprintf(&made, "%s/identity.key", a->cfg.state_dir) < 0)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    if (!path)
        path = made;
    enum ot_err err = ot_key_load(path, &a->identity, d);
    if (err == OT_ERR_NOENT || (err == OT_ERR_IO && access(path, F_OK) != 0)) {
        ot_diag_clear(d);
        err = ot_key_generate(OT_KEY_SIGN_SECRET, "device", &a->identity);
        if (!err)
            err = ot_key_save(path, &a->identity, false, false, d);
        if (!err)
            ot_log(OT_LOG_NOTICE, "created the device identity key %s (key id %s)", path,
                   a->identity.id);
    }
    if (!err && (a->identity.type != OT_KEY_SIGN_SECRET))
        err = ot_diag_set(d, OT_ERR_CONFIG, "%s: the identity key must be an Ed25519 secret key",
                          path);
    free(made);
    return err;
}

enum ot_err ag_device_open(struct ag_device *a, bool need_server,
                           const struct ot_trust *shared_trust, struct ot_diag *d)
{
    if (!a->cfg.device_type)
        return ot_diag_set(d, OT_ERR_CONFIG, "device_type is not set");
    if (need_server && a->cfg.servers.n == 0)
        return ot_diag_set(d, OT_ERR_CONFIG, "servers is not set");
    if (mkdir(a->cfg.state_dir, 0700) < 0 && errno != EEXIST)
        return ot_diag_errno(d, OT_ERR_IO, errno, "cannot create %s", a->cfg.state_dir);
    enum ot_err err;
    if (shared_trust) {
        a->trust = shared_trust;
    } else {
        a->own_trust = calloc(1, sizeof(*a->own_trust));
        if (!a->own_trust)
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
        err = ot_trust_load(a->cfg.trust, a->own_trust, d);
        if (err)
            return ot_diag_prefix(d, err, "trust file");
        a->trust = a->own_trust;
    }
    if (a->cfg.device_keys.n) {
        a->device_keys = calloc(a->cfg.device_keys.n, sizeof(*a->device_keys));
        if (!a->device_keys)
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < a->cfg.device_keys.n; i++, a->ndevice_keys++)
        if ((err = ot_key_load(a->cfg.device_keys.v[i], &a->device_keys[i], d)) != OT_OK)
            return err;
    if (strcmp(a->cfg.boot, "none") != 0) {
        struct ag_boot_config bc = {.kind = a->cfg.boot,
                                    .env_path = a->cfg.boot_env,
                                    .max_tries = (unsigned)a->cfg.boot_tries};
        if ((err = ag_boot_open(&bc, &a->boot, d)) != OT_OK)
            return err;
    }
    return OT_OK;
}

enum ot_err ag_device_identity(struct ag_device *a, struct ot_diag *d)
{
    enum ot_err err = load_identity(a, d);
    if (err)
        return err;
    a->ident = calloc(a->cfg.identity.n + 1, sizeof(*a->ident));
    if (!a->ident)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < a->cfg.identity.n; i++) {
        const char *kv = a->cfg.identity.v[i];
        const char *eq = strchr(kv, '=');
        a->ident[i].key = strndup(kv, (size_t)(eq - kv));
        a->ident[i].value = strdup(eq + 1);
        a->nident++;
        if (!a->ident[i].key || !a->ident[i].value)
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    if (a->nident == 0) { /* the key id is the identity when nothing else is configured */
        a->ident[0].key = strdup("key_id");
        a->ident[0].value = strdup(a->identity.id);
        a->nident = 1;
        if (!a->ident[0].key || !a->ident[0].value)
            return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    }
    return OT_OK;
}

/* The first of these environment variables that is set and not empty. */
static const char *env_first(const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(names[i]);
        if (v && v[0])
            return v;
    }
    return NULL;
}

struct ag_net_config ag_device_net_config(const struct ag_device *a)
{
    /* as curl reads them: HTTP_PROXY in capitals is not one of them (a CGI program's environment
     * gets it from a request's "Proxy:" header) */
    static const char *const https_env[] = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                            "ALL_PROXY"};
    static const char *const http_env[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
    static const char *const no_env[] = {"no_proxy", "NO_PROXY"};
    const char *proxy = a->cfg.proxy, *https_proxy = proxy, *http_proxy = proxy;
    if (!proxy) {
        https_proxy = env_first(https_env, OT_ARRAY_SIZE(https_env));
        http_proxy = env_first(http_env, OT_ARRAY_SIZE(http_env));
    } else if (strcmp(proxy, "none") == 0) {
        https_proxy = http_proxy = NULL;
    }
    return (struct ag_net_config){.https_proxy = https_proxy,
                                  .http_proxy = http_proxy,
                                  .no_proxy = a->cfg.no_proxy
                                                  ? a->cfg.no_proxy
                                                  : env_first(no_env, OT_ARRAY_SIZE(no_env)),
                                  .servers = (const char *const *)a->cfg.servers.v,
                                  .nservers = a->cfg.servers.n,
                                  .ca_file = a->cfg.ca_file,
                                  .pinned_key = a->cfg.pinned_key,
                                  .client_cert = a->cfg.client_cert,
                                  .client_key = a->cfg.client_key,
                                  .allow_http = a->cfg.allow_http,
                                  .identity_key = &a->identity,
                                  .identity = a->ident,
                                  .nidentity = a->nident,
                                  .device_type = a->cfg.device_type,
                                  .enrollment_token = a->cfg.enrollment_token};
}

struct ag_engine_env ag_device_engine_env(struct ag_device *a, struct ag_loop *loop,
                                          struct ag_net *net)
{
    return (struct ag_engine_env){.cfg = &a->cfg,
                                  .loop = loop,
                                  .net = net,
                                  .boot = a->boot,
                                  .trust = a->trust,
                                  .device_keys = a->device_keys,
                                  .ndevice_keys = a->ndevice_keys};
}
