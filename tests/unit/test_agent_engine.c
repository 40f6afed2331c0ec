/* The agent engine's hold point, download cache and state file, without a server: an engine with
 * no loop and no network runs its phases synchronously from ag_engine_start (schedule() is a no-op
 * without a loop), so a state file written here is taken through the same code the daemon runs,
 * and what it leaves on disk is checked. Real files in a temp dir; the consent command is a real
 * /bin/sh script. What needs a server (check-ins while waiting, the reports) is covered by
 * tests/agent/test_agent.py against the real otterd. */
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "engine.h"
#include "otter/encoding.h"
#include "otter/file.h"
#include "otter/hash.h"
#include "otter/log.h"
#include "otter/manifest.h"
#include "otter/trust.h"

#define PATHF(buf, ...) snprintf((buf), sizeof(buf), __VA_ARGS__)
#define PHASES_MAX 32

struct fixture {
    char dir[64];
    char state[96], slot_a[96], slot_b[96], consent_env[128];
    struct ag_config cfg;
    struct ot_trust trust;
    struct ag_engine_hooks hooks;
    enum ag_phase seen[PHASES_MAX];    /* every phase saved, in order */
    size_t nseen;
    int consent_answer;                /* -1: no hook */
    unsigned consent_asked;
};

static void hook_phase(void *userdata, enum ag_phase from, enum ag_phase to)
{
    (void)from;
    struct fixture *f = userdata;
    if (f->nseen < PHASES_MAX)
        f->seen[f->nseen++] = to;
}

static bool hook_consent(void *userdata, int64_t dep, const char *name, const char *version)
{
    struct fixture *f = userdata;
    assert_int_equal(dep, 12);
    assert_string_equal(name, "os");
    assert_string_equal(version, "2.0");
    f->consent_asked++;
    return f->consent_answer == 1;
}

static void set(struct fixture *f, const char *key, const char *value)
{
    struct ot_diag d = {0};
    assert_int_equal(ot_cfg_set(ag_config_keys, ag_config_nkeys, NULL, key, value, &f->cfg, &d),
                     OT_OK);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    PATHF(f->dir, "/tmp/otter-engine-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    PATHF(f->state, "%s/state", f->dir);
    PATHF(f->slot_a, "%s/slot-a.img", f->dir);
    PATHF(f->slot_b, "%s/slot-b.img", f->dir);
    PATHF(f->consent_env, "%s/consent.env", f->dir);
    assert_int_equal(mkdir(f->state, 0700), 0);
    struct ot_diag d = {0};
    assert_int_equal(ag_config_load(NULL, &f->cfg, &d), OT_OK);
    set(f, "device_type", "gw-1");
    set(f, "state_dir", f->state);
    set(f, "slot_a", f->slot_a);
    set(f, "slot_b", f->slot_b);
    f->consent_answer = -1;
    ot_log_set_level(OT_LOG_ERR);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    PATHF(cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    ag_config_release(&f->cfg);
    free(f);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
    struct ot_diag d = {0};
    assert_int_equal(ot_file_write_atomic(path, data, len, 0600, &d), OT_OK);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void sha_hex(const void *data, size_t len, char hex[65])
{
    uint8_t sum[OT_SHA256_LEN];
    assert_int_equal(ot_sha256_buf(data, len, sum), OT_OK);
    ot_hex_encode(sum, sizeof(sum), hex);
}

/* A manifest (canonical text, malloc'd) with one raw payload for the A/B slot holding image. */
static char *slot_manifest(const uint8_t *image, size_t len)
{
    struct ot_manifest m = {.format = OT_MANIFEST_FORMAT};
    struct ot_payload *p = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ot_manifest_set_str(&m.name, "os"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&m.version, "2.0"), OT_OK);
    assert_int_equal(ot_manifest_add_device_type(&m, "gw-1"), OT_OK);
    assert_int_equal(ot_manifest_add_payload(&m, &p), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->name, "rootfs"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->type, "raw"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->target, "slot"), OT_OK);
    assert_int_equal(ot_manifest_set_str(&p->version, "2.0"), OT_OK);
    p->size = p->stored_size = len;
    assert_int_equal(ot_sha256_buf(image, len, p->sha256), OT_OK);
    memcpy(p->stored_sha256, p->sha256, sizeof(p->sha256));
    struct ot_buf b;
    ot_buf_init(&b, OT_MANIFEST_MAX + 1);
    enum ot_err err = ot_manifest_format(&m, &b, &d);
    if (err)
        fail_msg("manifest: %s", d.msg);
    char *text = strdup(ot_buf_str(&b));
    ot_buf_release(&b);
    ot_manifest_release(&m);
    return text;
}

/* Saves a server deployment (id 12) in phase, for artifact (its SHA-256 and size). */
static void save_state(struct fixture *f, enum ag_phase phase, enum ot_wire_deploy_type type,
                       bool held, const void *artifact, size_t len, const char *manifest)
{
    struct ag_state st = {.phase = phase, .deployment_id = 12, .type = type,
                          .install_held = held, .artifact_size = len};
    sha_hex(artifact, len, st.artifact_sha256);
    assert_int_equal(ag_state_set(&st.url, "/api/device/v1/deployments/12/artifact"), OT_OK);
    assert_int_equal(ag_state_set(&st.manifest, manifest), OT_OK);
    struct ot_diag d = {0};
    assert_int_equal(ag_state_save(f->state, &st, &d), OT_OK);
    ag_state_release(&st);
}

/* A fresh engine from the state on disk (the start after a power cut), run as far as it goes
 * without a server; returns the state it saved last. */
static struct ag_state run_engine(struct fixture *f)
{
    f->hooks = (struct ag_engine_hooks){.userdata = f, .phase = hook_phase};
    if (f->consent_answer >= 0)
        f->hooks.consent = hook_consent;
    struct ag_engine_env env = {.cfg = &f->cfg, .trust = &f->trust, .hooks = &f->hooks};
    struct ag_engine *e = NULL;
    struct ot_diag d = {0};
    assert_int_equal(ag_engine_new(&env, &e, &d), OT_OK);
    ag_engine_start(e);
    ag_engine_free(e);
    struct ag_state st;
    assert_int_equal(ag_state_load(f->state, &st, &d), OT_OK);
    return st;
}

static bool saw(const struct fixture *f, enum ag_phase p)
{
    for (size_t i = 0; i < f->nseen; i++)
        if (f->seen[i] == p)
            return true;
    return false;
}

static void path_in(const struct fixture *f, char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", f->state, name);
}

static void cache_path(const struct fixture *f, char *out, size_t len, const void *art, size_t n)
{
    char hex[65];
    sha_hex(art, n, hex);
    snprintf(out, len, "%s/cache/%s.otter", f->state, hex);
}

/* Writes n bytes as the download-only cache's copy of those bytes (STATE_DIR/cache/SHA.otter, the
 * directory made if need be); its path in cached. */
static void put_in_cache(const struct fixture *f, const void *data, size_t n, char *cached,
                         size_t len)
{
    char dir[160];
    PATHF(dir, "%s/cache", f->state);
    assert_true(mkdir(dir, 0700) == 0 || errno == EEXIST);
    cache_path(f, cached, len, data, n);
    write_file(cached, data, n);
}

static const char ARTIFACT[] = "pretend this is an artifact file, whole and verified";

/* ---- the state file ------------------------------------------------------------------------- */

static void test_state_round_trip(void **state)
{
    struct fixture *f = *state;
    struct ag_state st = {.phase = AG_WAITING, .deployment_id = 7, .type = OT_WIRE_TYPE_SOFT,
                          .install_held = true, .slot_only = true, .staged = true,
                          .approved = true};
    snprintf(st.wait_reason, sizeof(st.wait_reason), "%s", AG_WAIT_POSTPONED);
    snprintf(st.wait_reported, sizeof(st.wait_reported), "%s", AG_WAIT_HELD);
    struct ot_diag d = {0};
    assert_int_equal(ag_state_save(f->state, &st, &d), OT_OK);
    struct ag_state back;
    assert_int_equal(ag_state_load(f->state, &back, &d), OT_OK);
    assert_int_equal(back.phase, AG_WAITING);
    assert_int_equal(back.type, OT_WIRE_TYPE_SOFT);
    assert_true(back.install_held && back.slot_only && back.staged && back.approved);
    assert_string_equal(back.wait_reason, AG_WAIT_POSTPONED);
    assert_string_equal(back.wait_reported, AG_WAIT_HELD);
    assert_string_equal(ag_phase_name(AG_WAITING), "waiting");
    ag_state_release(&back);
}

/* A state file an older agent wrote (no type, no hold) is a forced deployment that never waited. */
static void test_state_from_an_older_agent(void **state)
{
    struct fixture *f = *state;
    char path[160];
    path_in(f, path, sizeof(path), "state.json");
    const char *old = "{\"phase\":\"download\",\"deployment_id\":3,\"artifact_sha256\":\"\","
                      "\"artifact_size\":1,\"needs_reboot\":false,\"target_slot\":\"\","
                      "\"previous_slot\":\"\",\"boot_armed\":false,\"activated\":false,"
                      "\"result\":\"\",\"attempts\":0}";
    write_file(path, old, strlen(old));
    struct ag_state st;
    struct ot_diag d = {0};
    assert_int_equal(ag_state_load(f->state, &st, &d), OT_OK);
    assert_int_equal(st.phase, AG_DOWNLOAD);
    assert_int_equal(st.type, OT_WIRE_TYPE_FORCED);
    assert_false(st.install_held || st.staged || st.approved || st.wait_reason[0]);
    ag_state_release(&st);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void test_consent_config(void **state)
{
    struct fixture *f = *state;
    struct ot_diag d = {0};
    assert_string_equal(f->cfg.consent_command, "");
    assert_int_equal(f->cfg.consent_timeout_ms, 60000);
    set(f, "consent_command", "ask-user");
    assert_int_equal(ag_config_check(&f->cfg, &d), OT_ERR_CONFIG);
    assert_non_null(strstr(d.msg, "absolute path"));
    set(f, "consent_command", "/usr/bin/ask-user");
    ot_diag_clear(&d);
    assert_int_equal(ag_config_check(&f->cfg, &d), OT_OK);
}

/* ---- the hold point ------------------------------------------------------------------------- */

/* Held by the server: verified, then waiting with the download kept; a restart stays there. */
static void test_held_waits_with_the_download_kept(void **state)
{
    struct fixture *f = *state;
    char part[160];
    path_in(f, part, sizeof(part), "download.part");
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_FORCED, true, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    assert_int_equal(st.phase, AG_WAITING);
    assert_string_equal(st.wait_reason, AG_WAIT_HELD);
    assert_string_equal(st.message, AG_WAIT_HELD_MESSAGE);
    assert_string_equal(st.wait_reported, ""); /* no server: not told yet */
    assert_false(saw(f, AG_INSTALL));
    assert_true(exists(part));
    ag_state_release(&st);
    /* power cut: waiting again, nothing downloaded or installed */
    f->nseen = 0;
    st = run_engine(f);
    assert_int_equal(st.phase, AG_WAITING);
    assert_int_equal(f->nseen, 0);
    assert_true(exists(part));
    ag_state_release(&st);
}

/* A damaged download is caught before the hold point: it never waits on a bad file. */
static void test_held_but_damaged_is_downloaded_again(void **state)
{
    struct fixture *f = *state;
    char part[160];
    path_in(f, part, sizeof(part), "download.part");
    write_file(part, "something else", 14);
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_FORCED, true, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    /* back to download, which without a server fails the update */
    assert_true(saw(f, AG_DOWNLOAD));
    assert_false(saw(f, AG_WAITING));
    assert_int_equal(st.phase, AG_IDLE);
    ag_state_release(&st);
}

/* Soft: the device is asked after the verification; no = postponed, yes = install. */
static void test_soft_asks_the_consent_hook(void **state)
{
    struct fixture *f = *state;
    char part[160];
    path_in(f, part, sizeof(part), "download.part");
    _cleanup_free_ char *manifest = slot_manifest((const uint8_t *)"img", 3);
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), manifest);
    f->consent_answer = 0;
    struct ag_state st = run_engine(f);
    assert_int_equal(f->consent_asked, 1);
    assert_int_equal(st.phase, AG_WAITING);
    assert_string_equal(st.wait_reason, AG_WAIT_POSTPONED);
    assert_string_equal(st.message, AG_WAIT_POSTPONED_MESSAGE);
    ag_state_release(&st);
    /* the next time it says yes (here: from VERIFY again; the daemon asks at a check-in) */
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), manifest);
    f->consent_answer = 1;
    f->nseen = 0;
    st = run_engine(f);
    assert_int_equal(f->consent_asked, 2);
    assert_true(saw(f, AG_INSTALL)); /* (the pretend artifact then fails to install) */
    assert_false(saw(f, AG_WAITING));
    ag_state_release(&st);
}

/* Held comes first: the device is not asked while the server holds the install. */
static void test_soft_and_held_does_not_ask(void **state)
{
    struct fixture *f = *state;
    char part[160];
    path_in(f, part, sizeof(part), "download.part");
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, true, ARTIFACT, sizeof(ARTIFACT), "{}");
    f->consent_answer = 1;
    struct ag_state st = run_engine(f);
    assert_int_equal(f->consent_asked, 0);
    assert_string_equal(st.wait_reason, AG_WAIT_HELD);
    ag_state_release(&st);
}

/* Soft without a consent command or hook installs like forced. */
static void test_soft_without_anyone_to_ask_installs(void **state)
{
    struct fixture *f = *state;
    char part[160];
    path_in(f, part, sizeof(part), "download.part");
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    assert_true(saw(f, AG_INSTALL));
    assert_false(saw(f, AG_WAITING));
    ag_state_release(&st);
}

/* consent_command: no shell, the deployment in the environment, exit status = the answer. */
static void test_consent_command(void **state)
{
    struct fixture *f = *state;
    char part[160], script[160], body[512];
    path_in(f, part, sizeof(part), "download.part");
    PATHF(script, "%s/consent.sh", f->dir);
    PATHF(body,
          "#!/bin/sh\n"
          "env | grep -E '^OTTER_(DEPLOYMENT_ID|ARTIFACT_NAME|ARTIFACT_VERSION)=' | sort > '%s'\n"
          "echo \"user said no\"\nexit 3\n",
          f->consent_env);
    write_file(script, body, strlen(body));
    assert_int_equal(chmod(script, 0755), 0);
    set(f, "consent_command", script);
    _cleanup_free_ char *manifest = slot_manifest((const uint8_t *)"img", 3);
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), manifest);
    setenv("OTTER_DEPLOYMENT_ID", "999", 1); /* the agent's own value must not leak through */
    struct ag_state st = run_engine(f);
    unsetenv("OTTER_DEPLOYMENT_ID");
    assert_int_equal(st.phase, AG_WAITING);
    assert_string_equal(st.wait_reason, AG_WAIT_POSTPONED);
    ag_state_release(&st);
    struct ot_buf b;
    struct ot_diag d = {0};
    ot_buf_init(&b, 4096);
    assert_int_equal(ot_file_read(f->consent_env, &b, &d), OT_OK);
    assert_string_equal(ot_buf_str(&b), "OTTER_ARTIFACT_NAME=os\nOTTER_ARTIFACT_VERSION=2.0\n"
                                        "OTTER_DEPLOYMENT_ID=12\n");
    ot_buf_release(&b);
    /* exit 0: install now */
    PATHF(body, "#!/bin/sh\nexit 0\n");
    write_file(script, body, strlen(body));
    assert_int_equal(chmod(script, 0755), 0);
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), manifest);
    f->nseen = 0;
    st = run_engine(f);
    assert_true(saw(f, AG_INSTALL));
    ag_state_release(&st);
}

/* A consent command that hangs is killed after consent_timeout and counts as "not now". */
static void test_consent_command_timeout(void **state)
{
    struct fixture *f = *state;
    char part[160], script[160];
    path_in(f, part, sizeof(part), "download.part");
    PATHF(script, "%s/slow.sh", f->dir);
    write_file(script, "#!/bin/sh\nsleep 30\n", 19);
    assert_int_equal(chmod(script, 0755), 0);
    set(f, "consent_command", script);
    set(f, "consent_timeout", "1s");
    _cleanup_free_ char *manifest = slot_manifest((const uint8_t *)"img", 3);
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_SOFT, false, ARTIFACT, sizeof(ARTIFACT), manifest);
    struct ag_state st = run_engine(f);
    assert_int_equal(st.phase, AG_WAITING);
    assert_string_equal(st.wait_reason, AG_WAIT_POSTPONED);
    ag_state_release(&st);
}

/* ---- download only and the cache ------------------------------------------------------------ */

static void test_download_only_keeps_the_file(void **state)
{
    struct fixture *f = *state;
    char part[160], cached[256], older[256];
    cache_path(f, cached, sizeof(cached), ARTIFACT, sizeof(ARTIFACT));
    put_in_cache(f, "older", 5, older, sizeof(older));
    path_in(f, part, sizeof(part), "download.part");
    write_file(part, ARTIFACT, sizeof(ARTIFACT));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_DOWNLOAD_ONLY, false, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    assert_true(saw(f, AG_REPORT));
    assert_false(saw(f, AG_INSTALL) || saw(f, AG_WAITING));
    assert_int_equal(st.phase, AG_IDLE);
    assert_false(exists(part));
    assert_true(exists(cached));
    assert_false(exists(older)); /* at most one */
    ag_state_release(&st);
}

/* A power cut after the file went into the cache, before the report was saved: VERIFY finds no
 * download, DOWNLOAD takes it from the cache, and it ends the same way. */
static void test_download_only_power_cut_after_keeping(void **state)
{
    struct fixture *f = *state;
    char dir[160], cached[256];
    put_in_cache(f, ARTIFACT, sizeof(ARTIFACT), cached, sizeof(cached));
    save_state(f, AG_VERIFY, OT_WIRE_TYPE_DOWNLOAD_ONLY, false, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    assert_true(saw(f, AG_DOWNLOAD) && saw(f, AG_VERIFY) && saw(f, AG_REPORT));
    assert_int_equal(st.phase, AG_IDLE);
    assert_true(exists(cached));
    path_in(f, dir, sizeof(dir), "download.part");
    assert_false(exists(dir));
    ag_state_release(&st);
}

/* A later deployment of the cached artifact installs from the cache: no server needed to get it. */
static void test_cached_artifact_is_used(void **state)
{
    struct fixture *f = *state;
    char cached[256];
    put_in_cache(f, ARTIFACT, sizeof(ARTIFACT), cached, sizeof(cached));
    save_state(f, AG_DOWNLOAD, OT_WIRE_TYPE_FORCED, false, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    /* download -> verify -> install (the pretend artifact then fails, nothing was fetched) */
    assert_true(f->nseen >= 2 && f->seen[0] == AG_VERIFY && f->seen[1] == AG_INSTALL);
    assert_true(exists(cached)); /* not installed: kept */
    ag_state_release(&st);
}

/* A damaged cache is deleted and never used: the download happens as usual. */
static void test_damaged_cache_is_dropped(void **state)
{
    struct fixture *f = *state;
    char dir[160], cached[256];
    PATHF(dir, "%s/cache", f->state);
    assert_int_equal(mkdir(dir, 0700), 0);
    cache_path(f, cached, sizeof(cached), ARTIFACT, sizeof(ARTIFACT));
    char bad[sizeof(ARTIFACT)];
    memcpy(bad, ARTIFACT, sizeof(bad));
    bad[3] ^= 1;
    write_file(cached, bad, sizeof(bad));
    save_state(f, AG_DOWNLOAD, OT_WIRE_TYPE_FORCED, false, ARTIFACT, sizeof(ARTIFACT), "{}");
    struct ag_state st = run_engine(f);
    /* verify -> download (from the server: none here, so the update fails) */
    assert_true(f->nseen >= 2 && f->seen[0] == AG_VERIFY && f->seen[1] == AG_DOWNLOAD);
    assert_false(saw(f, AG_INSTALL));
    assert_false(exists(cached));
    ag_state_release(&st);
}

/* ---- streamed and held ---------------------------------------------------------------------- */

static void save_staged(struct fixture *f, const char *manifest)
{
    struct ag_state st = {.phase = AG_INSTALL, .deployment_id = 12, .staged = true,
                          .slot_only = true, .approved = true, .artifact_size = 1};
    snprintf(st.target_slot, sizeof(st.target_slot), "b");
    snprintf(st.previous_slot, sizeof(st.previous_slot), "a");
    assert_int_equal(ag_state_set(&st.manifest, manifest), OT_OK);
    struct ot_diag d = {0};
    assert_int_equal(ag_state_save(f->state, &st, &d), OT_OK);
    ag_state_release(&st);
}

/* The image streamed into the slot before the wait is checked, then activated and committed
 * (here without a reboot: needs_reboot is left false so that no boot backend is needed). */
static void test_staged_image_is_checked_then_installed(void **state)
{
    struct fixture *f = *state;
    static const uint8_t image[] = "the new root file system";
    write_file(f->slot_b, image, sizeof(image));
    _cleanup_free_ char *manifest = slot_manifest(image, sizeof(image));
    save_staged(f, manifest);
    struct ag_state st = run_engine(f);
    assert_true(saw(f, AG_VERIFY_AFTER_BOOT) && saw(f, AG_COMMIT));
    assert_int_equal(st.phase, AG_IDLE);
    ag_state_release(&st);
    struct ag_installed in;
    struct ot_diag d = {0};
    assert_int_equal(ag_installed_load(f->state, &in, &d), OT_OK);
    assert_int_equal(in.n, 1);
    assert_string_equal(in.payloads[0].version, "2.0");
    ag_installed_release(&in);
}

/* Someone wrote the slot while the update waited: never activated, streamed again. */
static void test_staged_image_changed_is_downloaded_again(void **state)
{
    struct fixture *f = *state;
    static const uint8_t image[] = "the new root file system";
    write_file(f->slot_b, "overwritten meanwhile", 21);
    _cleanup_free_ char *manifest = slot_manifest(image, sizeof(image));
    save_staged(f, manifest);
    struct ag_state st = run_engine(f);
    assert_true(f->nseen >= 1 && f->seen[0] == AG_DOWNLOAD);
    assert_false(saw(f, AG_COMMIT) || saw(f, AG_VERIFY_AFTER_BOOT));
    struct ag_installed in;
    struct ot_diag d = {0};
    assert_int_equal(ag_installed_load(f->state, &in, &d), OT_OK);
    assert_int_equal(in.n, 0);
    ag_installed_release(&in);
    ag_state_release(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_from_an_older_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consent_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_waits_with_the_download_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_but_damaged_is_downloaded_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_soft_asks_the_consent_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soft_and_held_does_not_ask, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soft_without_anyone_to_ask_installs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_consent_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consent_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_only_keeps_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_download_only_power_cut_after_keeping, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cached_artifact_is_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_cache_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_staged_image_is_checked_then_installed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_staged_image_changed_is_downloaded_again, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
