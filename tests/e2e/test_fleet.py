"""End to end: pack -> push -> deploy to a tag -> an otter-sim fleet (the agent's own engine per
simulated device, A/B slots and bootloader in files) and real otter-agent processes update
against a real otterd -> the management API shows every device's true final state, checked
device by device against what the devices themselves did (otter-sim's per-device results, the
slot files, the simulated bootloader's variables).

Scenarios: all succeed; some fail or roll back (reported as such); a deployment cancelled
midway; otterd killed and restarted mid-deployment; devices offline during the deployment come
back and finish; an artifact for another device type, or needing what the devices do not
provide, is never installed; a tampered artifact never installs."""
import os
import time

import pytest

from e2e_util import (FINAL, Env, drive_real_device, image, sha, sim_boot_vars, sim_slot,
                      start_enrolled)
from sim_util import wait_for


@pytest.fixture
def env(make_server, tmp_path):
    return Env(make_server, tmp_path)


# ---- scenarios ---------------------------------------------------------------------------------

def test_a_whole_fleet_updates_and_the_server_shows_every_device_success(env):
    n = 40
    fleet, ids = start_enrolled(env, n, "--until-done", "1", "--duration", "90s")
    real = [env.real_device(f"real-{i}") for i in range(2)]
    for dev in real:  # check in once, then tag
        dev.run_until(lambda: env.ids_by_name(dev.dir.name), timeout=20)
    real_ids = {dev.dir.name: env.ids_by_name(dev.dir.name)[dev.dir.name] for dev in real}
    env.tag(real_ids.values(), "fleet")

    new = image("2.0")
    art = env.push(env.pack("2.0", new))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    for dev in real:
        rid = real_ids[dev.dir.name]
        drive_real_device(dev, lambda: env.rows(dep).get(rid, {}).get("status") in FINAL)
    s = fleet.wait(90)
    assert s["exit"] == 0, fleet.log_text()

    rows = env.rows(dep)
    assert len(rows) == n + 2
    assert {r["status"] for r in rows.values()} == {"success"}, rows
    show = env.api("GET", f"/api/v1/deployments/{dep}")
    assert show["status"] == "finished", show
    assert show["rollup"]["success"] == n + 2, show
    # what the devices did matches what the server says, device by device
    results = fleet.results()
    for name, dev_id in ids.items():
        assert results[name] == [(dep, "success")], (name, results[name])
        assert sim_slot(fleet, name, "b", len(new)) == sha(new), name
        assert sim_boot_vars(fleet, name)["otter_default"] == "b", name
    for dev in real:
        assert dev.slot_sha("b", len(new)) == sha(new)
        assert dev.boot_vars()["otter_default"] == "b"
    assert s["results"] == {"success": n, "failure": 0, "rolled_back": 0, "refused": 0}
    assert s["checkins"]["failed"] == 0, fleet.log_text()


def test_failures_and_rollbacks_are_reported_as_such(env):
    n = 40
    expected = {"ok": "success", "sick": "rolled_back", "brick": "rolled_back",
                "broken": "failure"}
    fleet, ids = start_enrolled(
        env, n, "--until-done", "1", "--duration", "90s", "--seed", "7",
        # the "ok" devices also lose power mid-update and see failed downloads: still success
        "--profile", "ok:4:power_cut=0.5,download_fail=0.3,install_time=100ms-600ms",
        "--profile", "sick:1:health_fail=1", "--profile", "brick:1:boot_fail=1",
        "--profile", "broken:1:install_fail=1")
    new = image("3.0")
    art = env.push(env.pack("3.0", new))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    s = fleet.wait(90)
    assert s["exit"] == 0, fleet.log_text()

    rows = env.rows(dep)
    profiles = fleet.profiles()
    assert set(profiles.values()) == set(expected), profiles
    assert s["power_cuts"] > 0 and s["boot_failures"] > 0, s
    results = fleet.results()
    for name, dev_id in ids.items():
        want = expected[profiles[name]]
        row = rows[dev_id]
        assert row["status"] == want, (name, profiles[name], row)
        assert results[name] == [(dep, want)], (name, results[name])
        boot = sim_boot_vars(fleet, name)
        assert boot["otter_default"] == ("b" if want == "success" else "a"), (name, boot)
        assert not boot.get("otter_try"), (name, boot)
        if profiles[name] == "brick":
            assert "did not boot" in row["message"], row
        if profiles[name] == "sick":
            assert "health" in row["message"], row
    counts = {k: sum(1 for r in rows.values() if r["status"] == k) for k in FINAL}
    show = env.api("GET", f"/api/v1/deployments/{dep}")
    for k, v in counts.items():
        assert show["rollup"].get(k, 0) == v, show


def test_a_deployment_cancelled_midway(env):
    n = 30
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    fleet.stop()  # all enrolled; now power the fleet on slowly, with slow installs
    art = env.push(env.pack("4.0", image("4.0")))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    fleet.start("--ramp", "8s", "--profile", "slow:1:install_time=500ms", "--duration", "14s")
    wait_for(lambda: any(r["status"] == "success" for r in env.rows(dep).values()), timeout=20,
             what="a first device to finish")
    env.api("POST", f"/api/v1/deployments/{dep}/cancel")
    s = fleet.wait(30)
    assert s["exit"] == 0, fleet.log_text()

    rows = env.rows(dep)
    statuses = [r["status"] for r in rows.values()]
    assert statuses.count("cancelled") > 0 and statuses.count("success") > 0, statuses
    assert set(statuses) <= {"cancelled", "success"}, statuses  # nothing left half-way
    results = fleet.results()
    for name, dev_id in ids.items():
        want = [] if rows[dev_id]["status"] == "cancelled" else [(dep, "success")]
        assert results[name] == want, (name, rows[dev_id], results[name])
    assert env.api("GET", f"/api/v1/deployments/{dep}")["status"] == "cancelled"


def test_devices_drop_a_deployment_cancelled_before_their_first_report_landed(env):
    n = 5
    # the devices lose the network as they take the work: their "downloading" reports are lost,
    # so the server still has them pending when the deployment is cancelled
    fleet, ids = start_enrolled(env, n, "--duration", "60s", "--set", "max_rate=20K",
                                "--profile", "away:1:offline=1,offline_time=3s")
    new = image("5.5", size=160 * 1024)
    art = env.push(env.pack("5.5", new))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    wait_for(lambda: fleet.log.exists() and fleet.log_text().count("network unreachable") >= n,
             timeout=20, what="every device offline with the work taken")
    assert {r["status"] for r in env.rows(dep).values()} == {"pending"}
    env.api("POST", f"/api/v1/deployments/{dep}/cancel")
    time.sleep(12)  # back online: their reports and downloads meet a closed deployment
    s = fleet.stop()
    assert {r["status"] for r in env.rows(dep).values()} == {"cancelled"}
    assert s["phases"]["idle"] == n, s
    assert all(r == [] for r in fleet.results().values()), fleet.results(refused_too=True)
    # each device either dropped it at its first refused report, or its download was refused
    # and its failure report too
    dropped = fleet.log_text().count("closed it before it started here")
    assert dropped + s["results"]["refused"] == n, (dropped, s["results"])
    for name in ids:
        assert sim_slot(fleet, name, "b", len(new)) != sha(new)
        assert sim_boot_vars(fleet, name)["otter_default"] == "a"


def test_otterd_killed_and_restarted_mid_deployment(env):
    n = 30
    fleet, ids = start_enrolled(env, n, "--until-done", "1", "--duration", "90s",
                                "--profile", "ok:1:install_time=1s-3s")
    art = env.push(env.pack("5.0", image("5.0")))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    wait_for(lambda: any(r["status"] in FINAL for r in env.rows(dep).values()), timeout=20,
             what="a first device to finish")
    env.server.kill()  # SIGKILL: no goodbye
    time.sleep(2)
    env.restart()
    s = fleet.wait(90)
    assert s["exit"] == 0, fleet.log_text()
    assert s["checkins"]["failed"] > 0, "the fleet never noticed the outage"
    rows = env.rows(dep)
    assert {r["status"] for r in rows.values()} == {"success"}, rows
    results = fleet.results(refused_too=True)  # a reply lost in the kill: refused, yet true
    assert all(results[name] == [(dep, "success")] for name in ids), results


def test_devices_offline_during_the_deployment_come_back_and_finish(env):
    n = 20
    fleet, ids = start_enrolled(env, n, "--until-done", "1", "--duration", "90s",
                                "--profile", "away:1:offline=1,offline_time=4s")
    art = env.push(env.pack("6.0", image("6.0")))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    s = fleet.wait(90)
    assert s["exit"] == 0, fleet.log_text()
    assert s["offline_spells"] == n, s
    rows = env.rows(dep)
    assert {r["status"] for r in rows.values()} == {"success"}, rows
    # a real agent that is down for a while during the deployment finishes too
    dev = env.real_device("late")
    dev.run_until(lambda: env.ids_by_name("late"), timeout=20)
    dev_id = env.ids_by_name("late")["late"]
    art2 = env.push(env.pack("6.1", image("6.1")))
    dep2 = env.deploy(art2["id"], devices=[dev_id])["id"]
    time.sleep(3)  # powered off while the deployment waits
    assert env.rows(dep2)[dev_id]["status"] == "pending"
    drive_real_device(dev, lambda: env.rows(dep2)[dev_id]["status"] in FINAL)
    assert env.rows(dep2)[dev_id]["status"] == "success"


def test_artifacts_for_other_devices_are_never_installed(env):
    n = 10
    fleet, ids = start_enrolled(env, n, "--duration", "60s")
    # another device type: the server knows the fleet's type and skips every device
    other = env.push(env.pack("7.0", image("7.0"), device_types=("other-board",)))
    dep = env.deploy(other["id"], tag="fleet")["id"]
    rows = env.rows(dep)
    assert {r["status"] for r in rows.values()} == {"skipped"}, rows
    # the right type, but it needs what these devices do not provide: the devices refuse it
    # before downloading anything
    needy = image("7.1")
    art = env.push(env.pack("7.1", needy, depends=("board-rev=2",)))
    dep2 = env.deploy(art["id"], tag="fleet")["id"]
    wait_for(lambda: all(r["status"] in FINAL for r in env.rows(dep2).values()), timeout=30,
             what="every device to answer")
    s = fleet.stop()
    for name, dev_id in ids.items():
        row = env.rows(dep2)[dev_id]
        assert row["status"] == "failure" and "refused before download" in row["message"], row
        assert fleet.results()[name] == [(dep2, "failure")]
        assert sim_slot(fleet, name, "b", len(needy)) != sha(needy)
        assert sim_boot_vars(fleet, name)["otter_default"] == "a"
    assert s["reboots"] == 0, s


def test_a_tampered_artifact_never_installs(env):
    n = 10
    fleet, ids = start_enrolled(env, n, "--until-done", "1", "--duration", "90s")
    new = image("8.0", size=200 * 1024)
    art = env.push(env.pack("8.0", new))
    # the stored file is altered after the upload (a compromised or rotting store)
    blob = env.data / "blobs" / art["sha256"]
    with open(blob, "r+b") as f:
        f.seek(os.path.getsize(blob) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    dep = env.deploy(art["id"], tag="fleet")["id"]
    s = fleet.wait(90)
    assert s["exit"] == 0, fleet.log_text()
    rows = env.rows(dep)
    for name, dev_id in ids.items():
        row = rows[dev_id]
        assert row["status"] == "failure" and "SHA-256" in row["message"], row
        assert sim_slot(fleet, name, "b", len(new)) != sha(new)
        assert sim_boot_vars(fleet, name)["otter_default"] == "a"
    assert s["reboots"] == 0, s
