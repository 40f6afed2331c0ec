/* The agent's persistent state (state.h). */
#include <signal.h>

#include "otter/encoding.h"
#include "otter/file.h"
#include "otter/json.h"
#include "otter/path.h"
#include "state.h"

#define STATE_FILE "state.json"
#define INSTALLED_FILE "installed.json"
#define STATE_MAX (4 * 1024 * 1024)

static const char *const phase_names[] = {
    [AG_IDLE] = "idle",
    [AG_DOWNLOAD] = "download",
    [AG_VERIFY] = "verify",
    [AG_INSTALL] = "install",
    [AG_REBOOT_PENDING] = "reboot_pending",
    [AG_VERIFY_AFTER_BOOT] = "verify_after_boot",
    [AG_COMMIT] = "commit",
    [AG_ROLLBACK] = "rollback",
    [AG_REPORT] = "report",
    [AG_WAITING] = "waiting",
};
_Static_assert(OT_ARRAY_SIZE(phase_names) == AG_PHASE__MAX, "a phase without a name");

const char *ag_phase_name(enum ag_phase p)
{
    return (size_t)p < OT_ARRAY_SIZE(phase_names) ? phase_names[p] : "?";
}

void ag_crash_point(const char *point)
{
    const char *want = getenv("OTTER_AGENT_CRASH_AT");
    if (want && strcmp(want, point) == 0) {
        fprintf(stderr, "otter-agent: crash point %s: SIGKILL\n", point);
        raise(SIGKILL);
    }
}

enum ot_err ag_state_set(char **field, const char *value)
{
    char *copy = value ? strdup(value) : NULL;
    if (value && !copy)
        return OT_ERR_NOMEM;
    free(*field);
    *field = copy;
    return OT_OK;
}

void ag_state_release(struct ag_state *s)
{
    free(s->url);
    free(s->manifest);
    free(s->message);
    *s = (struct ag_state){0};
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static enum ot_err read_json(const char *dir, const char *name, json_t **ret, struct ot_diag *d)
{
    _cleanup_free_ char *path = path_in(dir, name);
    if (!path)
        return ot_diag_set(d, OT_ERR_NOMEM, "out of memory");
    struct ot_buf b;
    ot_buf_init(&b, STATE_MAX);
    enum ot_err err = ot_file_read(path, &b, d);
    if (!err) {
        err = ot_json_parse(b.data, b.len, ret, d);
        if (!err && !json_is_object(*ret)) {
            json_decref(*ret);
            err = ot_diag_set(d, OT_ERR_FORMAT, "%s: not a JSON object", path);
        } else if (err) {
            err = ot_diag_prefix(d, OT_ERR_FORMAT, "%s is damaged", path);
        }
    }
    ot_buf_release(&b);
    return err;
}

static enum ot_err write_json(const char *dir, const char *name, json_t *v, struct ot_diag *d)
{
    _cleanup_free_ char *path = path_in(dir, name);
    struct ot_buf b;
    ot_buf_init(&b, STATE_MAX);
    enum ot_err err = !v || !path ? ot_diag_set(d, OT_ERR_NOMEM, "out of memory")
                                  : ot_json_dump(v, &b);
    if (!err)
        err = ot_file_write_atomic(path, b.data, b.len, 0600, d);
    ot_buf_release(&b);
    json_decref(v);
    return err;
}

static const char *str_or(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

enum ot_err ag_state_load(const char *dir, struct ag_state *ret, struct ot_diag *d)
{
    json_t *o = NULL;
    *ret = (struct ag_state){.phase = AG_IDLE};
    enum ot_err err = read_json(dir, STATE_FILE, &o, d);
    if (err == OT_ERR_NOENT) {
        ot_diag_clear(d);
        return OT_OK;
    }
    if (err)
        return err;
    const char *phase = str_or(o, "phase", "");
    bool found = false;
    for (size_t i = 0; i < OT_ARRAY_SIZE(phase_names); i++)
        if (strcmp(phase, phase_names[i]) == 0) {
            ret->phase = (enum ag_phase)i;
            found = true;
        }
    if (!found) {
        json_decref(o);
        return ot_diag_set(d, OT_ERR_FORMAT, "%s/%s: unknown phase '%.32s'", dir, STATE_FILE,
                           phase);
    }
    ret->deployment_id = json_integer_value(json_object_get(o, "deployment_id"));
    snprintf(ret->artifact_sha256, sizeof(ret->artifact_sha256), "%s",
             str_or(o, "artifact_sha256", ""));
    ret->artifact_size = (uint64_t)json_integer_value(json_object_get(o, "artifact_size"));
    snprintf(ret->target_slot, sizeof(ret->target_slot), "%s", str_or(o, "target_slot", ""));
    snprintf(ret->previous_slot, sizeof(ret->previous_slot), "%s",
             str_or(o, "previous_slot", ""));
    snprintf(ret->result, sizeof(ret->result), "%s", str_or(o, "result", ""));
    ret->needs_reboot = json_is_true(json_object_get(o, "needs_reboot"));
    ret->boot_armed = json_is_true(json_object_get(o, "boot_armed"));
    ret->activated = json_is_true(json_object_get(o, "activated"));
    ret->attempts = (unsigned)json_integer_value(json_object_get(o, "attempts"));
    json_int_t downloaded = json_integer_value(json_object_get(o, "downloaded"));
    ret->downloaded = downloaded > 0 ? (uint64_t)downloaded : 0;
    const char *type = str_or(o, "type", "forced");
    for (int t = 0; t < OT_WIRE_TYPE__MAX; t++)
        if (strcmp(type, ot_wire_deploy_type_name((enum ot_wire_deploy_type)t)) == 0)
            ret->type = (enum ot_wire_deploy_type)t;
    ret->install_held = json_is_true(json_object_get(o, "install_held"));
    ret->slot_only = json_is_true(json_object_get(o, "slot_only"));
    ret->staged = json_is_true(json_object_get(o, "staged"));
    ret->approved = json_is_true(json_object_get(o, "approved"));
    snprintf(ret->wait_reason, sizeof(ret->wait_reason), "%s", str_or(o, "wait_reason", ""));
    snprintf(ret->wait_reported, sizeof(ret->wait_reported), "%s",
             str_or(o, "wait_reported", ""));
    err = ag_state_set(&ret->url, json_string_value(json_object_get(o, "url")));
    if (!err)
        err = ag_state_set(&ret->manifest, json_string_value(json_object_get(o, "manifest")));
    if (!err)
        err = ag_state_set(&ret->message, json_string_value(json_object_get(o, "message")));
    json_decref(o);
    if (err) {
        ag_state_release(ret);
        return ot_diag_set(d, err, "out of memory");
    }
    return OT_OK;
}

enum ot_err ag_state_save(const char *dir, const struct ag_state *s, struct ot_diag *d)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:s?, s:s?, s:b, s:s, s:s, s:b, s:b, s:s, s:s?, "
                          "s:I}",
                          "phase", ag_phase_name(s->phase), "deployment_id",
                          (json_int_t)s->deployment_id, "artifact_sha256", s->artifact_sha256,
                          "artifact_size", (json_int_t)s->artifact_size, "url", s->url,
                          "manifest", s->manifest, "needs_reboot", s->needs_reboot,
                          "target_slot", s->target_slot, "previous_slot", s->previous_slot,
                          "boot_armed", s->boot_armed, "activated", s->activated, "result",
                          s->result, "message", s->message, "attempts", (json_int_t)s->attempts);
    /* Written by this version on: a file without them (an older agent's) loads as a forced,
     * not held deployment that never waited, and a download with nothing synced (it starts
     * over). */
    const char *type = ot_wire_deploy_type_name(s->type);
    json_t *more = json_pack("{s:s, s:b, s:b, s:b, s:b, s:s, s:s, s:I}", "type",
                             type ? type : "forced", "install_held", s->install_held,
                             "slot_only", s->slot_only, "staged", s->staged, "approved",
                             s->approved, "wait_reason", s->wait_reason, "wait_reported",
                             s->wait_reported, "downloaded", (json_int_t)s->downloaded);
    if (o && (!more || json_object_update(o, more) < 0)) {
        json_decref(o);
        o = NULL;
    }
    json_decref(more);
    enum ot_err err = write_json(dir, STATE_FILE, o, d);
    if (!err) {
        char point[48];
        snprintf(point, sizeof(point), "save:%s", ag_phase_name(s->phase));
        ag_crash_point(point);
    }
    return err;
}

void ag_installed_release(struct ag_installed *in)
{
    for (size_t i = 0; i < in->n; i++) {
        free(in->payloads[i].name);
        free(in->payloads[i].version);
    }
    free(in->payloads);
    for (size_t i = 0; i < in->nprovides; i++) {
        free(in->provides[i].key);
        free(in->provides[i].value);
    }
    free(in->provides);
    *in = (struct ag_installed){0};
}

enum ot_err ag_installed_provide(struct ag_installed *in, const char *key, const char *value)
{
    struct ot_kv *p = NULL;
    for (size_t i = 0; i < in->nprovides; i++)
        if (strcmp(in->provides[i].key, key) == 0)
            p = &in->provides[i];
    if (!p) {
        struct ot_kv *grown = realloc(in->provides, (in->nprovides + 1) * sizeof(*grown));
        if (!grown)
            return OT_ERR_NOMEM;
        in->provides = grown;
        p = &in->provides[in->nprovides];
        *p = (struct ot_kv){.key = strdup(key)};
        if (!p->key)
            return OT_ERR_NOMEM;
        in->nprovides++;
    }
    char *v = strdup(value);
    if (!v)
        return OT_ERR_NOMEM;
    free(p->value);
    p->value = v;
    return OT_OK;
}

enum ot_err ag_installed_put(struct ag_installed *in, const char *name, const char *version,
                             const uint8_t sha256[32])
{
    struct ot_wire_installed *p = NULL;
    for (size_t i = 0; i < in->n; i++)
        if (strcmp(in->payloads[i].name, name) == 0)
            p = &in->payloads[i];
    if (!p) {
        struct ot_wire_installed *grown = realloc(in->payloads, (in->n + 1) * sizeof(*grown));
        if (!grown)
            return OT_ERR_NOMEM;
        in->payloads = grown;
        p = &in->payloads[in->n];
        *p = (struct ot_wire_installed){.name = strdup(name)};
        if (!p->name)
            return OT_ERR_NOMEM;
        in->n++;
    }
    char *v = strdup(version);
    if (!v)
        return OT_ERR_NOMEM;
    free(p->version);
    p->version = v;
    p->has_sha256 = true;
    memcpy(p->sha256, sha256, 32);
    return OT_OK;
}

enum ot_err ag_installed_load(const char *dir, struct ag_installed *ret, struct ot_diag *d)
{
    json_t *o = NULL;
    *ret = (struct ag_installed){0};
    enum ot_err err = read_json(dir, INSTALLED_FILE, &o, d);
    if (err == OT_ERR_NOENT) {
        ot_diag_clear(d);
        return OT_OK;
    }
    if (err)
        return err;
    ret->min_security_version =
        (uint64_t)json_integer_value(json_object_get(o, "min_security_version"));
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(o, "payloads"), name, v) {
        uint8_t sha[32];
        const char *version = str_or(v, "version", "");
        if (!version[0] || ot_hex_decode(str_or(v, "sha256", ""), sha, sizeof(sha)) != OT_OK) {
            err = ot_diag_set(d, OT_ERR_FORMAT, "%s/%s: payload '%.64s' is damaged", dir,
                              INSTALLED_FILE, name);
            break;
        }
        if ((err = ag_installed_put(ret, name, version, sha)) != OT_OK) {
            err = ot_diag_set(d, err, "out of memory");
            break;
        }
    }
    json_object_foreach(json_object_get(o, "provides"), name, v) {
        if (err)
            break;
        if (!json_is_string(v)) {
            err = ot_diag_set(d, OT_ERR_FORMAT, "%s/%s: provides '%.64s' is damaged", dir,
                              INSTALLED_FILE, name);
            break;
        }
        if ((err = ag_installed_provide(ret, name, json_string_value(v))) != OT_OK)
            err = ot_diag_set(d, err, "out of memory");
    }
    json_decref(o);
    if (err)
        ag_installed_release(ret);
    return err;
}

enum ot_err ag_installed_save(const char *dir, const struct ag_installed *in, struct ot_diag *d)
{
    json_t *payloads = json_object();
    for (size_t i = 0; payloads && i < in->n; i++) {
        char hex[65];
        ot_hex_encode(in->payloads[i].sha256, 32, hex);
        json_object_set_new(payloads, in->payloads[i].name,
                            json_pack("{s:s, s:s}", "version", in->payloads[i].version, "sha256",
                                      hex));
    }
    json_t *provides = json_object();
    for (size_t i = 0; provides && i < in->nprovides; i++)
        json_object_set_new(provides, in->provides[i].key, json_string(in->provides[i].value));
    json_t *o = json_pack("{s:o, s:I, s:o}", "payloads", payloads, "min_security_version",
                          (json_int_t)in->min_security_version, "provides", provides);
    return write_json(dir, INSTALLED_FILE, o, d);
}
