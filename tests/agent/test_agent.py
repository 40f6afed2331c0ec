"""otter-agent end to end: real otterd, real otter CLI artifacts, the real agent on a simulated
device (file-backed A/B slots, simulated bootloader). Updates that succeed, roll back on a failed
health check, fall back when the new slot does not boot, refuse an artifact the device does not
trust, install in place without a reboot, and the standalone install/commit."""
import json
import os
import time

import pytest

from agent_util import EXIT_REBOOT, OLD_IMAGE, SimDevice, sha
from fleet_util import Release, otter


def pack_ab(rel, version, image, device_types=("gw-1",), key=None):
    payload = rel.dir / f"rootfs-{version}.img"
    payload.write_bytes(image)
    out = rel.dir / f"ab-{version}.otter"
    args = ["pack", "-q", "-o", out, "--name", "os", "--version", version]
    for t in device_types:
        args += ["-T", t]
    args += ["-p", f"name=rootfs,file={payload},type=raw,target=slot",
             "-k", key or rel.dir / "release.key"]
    otter(*args)
    return out


def new_image(version, size=300000):
    return (f"new-rootfs-{version}-".encode() * (size // 16 + 1))[:size]


@pytest.fixture
def fleet(server, tmp_path):
    rel = Release(server, tmp_path / "rel")
    enroll = server.create_token(["devices:enroll"], name="fleet")["token"]
    return server, rel, enroll


def device(fleet, tmp_path, name="dev", **kw):
    server, rel, enroll = fleet
    return SimDevice(tmp_path, server, rel.dir / "trust.json", enroll, name=name, **kw)


def enrolled(dev):
    """Runs the agent until it has checked in once; returns its device id on the server."""
    server = dev.server
    found = {}

    def seen():
        r = server.request("GET", "/api/v1/devices", token=server.token).json()["devices"]
        mine = [d for d in r if d["identity"].get("name") == dev.dir.name and d["last_seen"]]
        if mine:
            found["id"] = mine[0]["id"]
        return bool(mine)

    assert dev.run_until(seen) is None, dev.log_text()
    return found["id"]


def row(server, dep, dev_id):
    return server.request("GET", f"/api/v1/deployments/{dep}/devices/{dev_id}",
                          token=server.token).json()


def final(server, dep, dev_id):
    return lambda: row(server, dep, dev_id)["status"] in ("success", "failure", "rolled_back")


def test_ab_update_success(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path)
    dev_id = enrolled(dev)
    image = new_image("2.0")
    art = rel.upload(pack_ab(rel, "2.0", image)).json()
    dep = rel.server.request("POST", "/api/v1/deployments",
                             {"name": "os 2.0", "artifact_id": art["id"], "devices": [dev_id]},
                             token=server.token).json()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert row(server, dep["id"], dev_id)["status"] == "rebooting"
    assert dev.boot_vars()["otter_try"] == "b"
    assert dev.slot_sha("b", len(image)) == sha(image)
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    r = row(server, dep["id"], dev_id)
    assert r["status"] == "success", (r, dev.log_text())
    assert [e["status"] for e in r["events"]][-1] == "success"
    assert dev.boot_vars()["otter_default"] == "b" and not dev.boot_vars().get("otter_try")
    assert dev.power_on() == "b"
    # the device reports its new version at the next check-in
    dev.run_until(lambda: server.request("GET", f"/api/v1/devices/{dev_id}", token=server.token)
                  .json()["installed"].get("rootfs", {}).get("version") == "2.0")
    assert dev.slot_sha("a", len(OLD_IMAGE)) == sha(OLD_IMAGE)


def test_failed_health_check_rolls_back(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path, health_command="exit 1")
    dev_id = enrolled(dev)
    art = rel.upload(pack_ab(rel, "3.0", new_image("3.0"))).json()
    dep = server.request("POST", "/api/v1/deployments",
                         {"name": "x", "artifact_id": art["id"], "devices": [dev_id]},
                         token=server.token).json()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT
    assert dev.power_on() == "b"
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()  # back to a
    assert dev.power_on() == "a"
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    r = row(server, dep["id"], dev_id)
    assert r["status"] == "rolled_back" and "health" in r["message"], r
    assert dev.boot_vars()["otter_default"] == "a"
    assert dev.slot_sha("a", len(OLD_IMAGE)) == sha(OLD_IMAGE)


def test_new_slot_that_never_boots_falls_back(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path)
    dev_id = enrolled(dev)
    art = rel.upload(pack_ab(rel, "4.0", new_image("4.0"))).json()
    dep = server.request("POST", "/api/v1/deployments",
                         {"name": "x", "artifact_id": art["id"], "devices": [dev_id]},
                         token=server.token).json()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT
    booted = [dev.power_on() for _ in range(4)]  # the new kernel dies before the agent runs
    assert booted == ["b", "b", "b", "a"], booted
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    r = row(server, dep["id"], dev_id)
    assert r["status"] == "rolled_back" and "did not boot" in r["message"], r
    assert dev.booted() == "a"


def test_artifact_the_device_does_not_trust_is_refused_before_download(fleet, tmp_path):
    server, rel, enroll = fleet
    otter("keygen", "-q", tmp_path / "other")
    otter("trust", "-q", "-o", tmp_path / "other-trust.json", "--threshold", "1",
          tmp_path / "other.pub")
    dev = SimDevice(tmp_path, server, tmp_path / "other-trust.json", enroll, name="strict")
    dev_id = enrolled(dev)
    art = rel.upload(pack_ab(rel, "5.0", new_image("5.0"))).json()
    dep = server.request("POST", "/api/v1/deployments",
                         {"name": "x", "artifact_id": art["id"], "devices": [dev_id]},
                         token=server.token).json()
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    r = row(server, dep["id"], dev_id)
    assert r["status"] == "failure" and "refused before download" in r["message"], r
    assert [e["status"] for e in r["events"]] == ["failure"]  # not even a download started
    assert dev.slot["b"].read_bytes() == b"\0" * 1024
    assert dev.booted() == "a"


def test_in_place_file_update_needs_no_reboot(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path)
    conf = dev.dir / "root" / "etc" / "app.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("old\n")
    dev_id = enrolled(dev)
    payload = rel.dir / "app.conf"
    payload.write_text("new\n")
    out = rel.dir / "conf.otter"
    otter("pack", "-q", "-o", out, "--name", "conf", "--version", "7", "-T", "gw-1",
          "-p", f"name=conf,file={payload},type=file,target=/etc/app.conf",
          "-k", rel.dir / "release.key")
    art = rel.upload(out).json()
    dep = server.request("POST", "/api/v1/deployments",
                         {"name": "x", "artifact_id": art["id"], "devices": [dev_id]},
                         token=server.token).json()
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    assert row(server, dep["id"], dev_id)["status"] == "success"
    assert conf.read_text() == "new\n"
    assert not list(conf.parent.glob("*.otter-old"))
    assert dev.booted() == "a"


def test_standalone_install_and_commit(fleet, tmp_path):
    _, rel, _ = fleet
    dev = device(fleet, tmp_path)
    image = new_image("8.0")
    art = pack_ab(rel, "8.0", image)
    r = dev.agent("install", art)
    assert r.returncode == EXIT_REBOOT, r.stderr
    assert "otter-agent commit" in r.stdout
    assert dev.agent("commit").returncode != 0  # not rebooted yet
    assert dev.power_on() == "b"
    r = dev.agent("commit")
    assert r.returncode == 0, r.stderr
    assert dev.boot_vars()["otter_default"] == "b"
    assert json.loads((dev.state / "installed.json").read_text())["payloads"]["rootfs"][
        "version"] == "8.0"
    # a tampered copy is refused with exit status 3 and changes nothing
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.otter"
    bad.write_bytes(bytes(data))
    r = dev.agent("install", bad)
    assert r.returncode in (1, 3), r
    assert dev.agent("status").returncode == 0
    assert json.loads(dev.agent("status").stdout)["phase"] == "idle"


def deploy(server, art_id, dev_id, name="x"):
    r = server.request("POST", "/api/v1/deployments",
                       {"name": name, "artifact_id": art_id, "devices": [dev_id]},
                       token=server.token)
    assert r.status == 201, r
    return r.json()["id"]


def test_streaming_mode_installs_without_a_local_copy(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path, extra_config="streaming = true\n")
    dev_id = enrolled(dev)
    image = new_image("s1", size=2_000_000)
    dep = deploy(server, rel.upload(pack_ab(rel, "s1", image)).json()["id"], dev_id)
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert not (dev.state / "download.part").exists()
    assert dev.slot_sha("b", len(image)) == sha(image)
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success"


def test_download_resumes_after_a_power_cut(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path, extra_config="max_rate = 2M\n")
    dev_id = enrolled(dev)
    image = os.urandom(3_000_000)  # incompressible: the download is ~3 MB, ~1.5 s at 2 MB/s
    dep = deploy(server, rel.upload(pack_ab(rel, "r1", image)).json()["id"], dev_id)
    part = dev.state / "download.part"
    dev.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 500_000):
        time.sleep(0.02)
    dev.kill()
    have = part.stat().st_size
    assert 0 < have < 3_000_000
    dev.power_on()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    # the second run fetched only the rest (the server logs each Range request's bytes)
    assert dev.slot_sha("b", len(image)) == sha(image)
    log = server.log()
    assert f"/api/device/v1/deployments/{dep}/artifact 206" in log, log[-3000:]
    dev.power_on()
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success"


def test_anti_rollback_refuses_a_lower_security_version(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path)
    conf = dev.dir / "root" / "etc"
    conf.mkdir(parents=True)
    dev_id = enrolled(dev)

    def conf_artifact(version, sv):
        p = rel.dir / f"c{version}.txt"
        p.write_text(version)
        out = rel.dir / f"c{version}.otter"
        otter("pack", "-q", "-o", out, "--name", "conf", "--version", version, "-T", "gw-1",
              "--security-version", str(sv),
              "-p", f"name=conf,file={p},type=file,target=/etc/c.txt", "-k", rel.dir / "release.key")
        return rel.upload(out).json()["id"]

    dep = deploy(server, conf_artifact("5", 5), dev_id)
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success"
    dep = deploy(server, conf_artifact("4", 4), dev_id)
    assert dev.run_until(final(server, dep, dev_id)) is None
    r = row(server, dep, dev_id)
    assert r["status"] == "failure" and "security" in r["message"], r
    assert (conf / "c.txt").read_text() == "5"


def test_encrypted_artifact_installs_with_the_device_class_key(fleet, tmp_path):
    server, rel, _ = fleet
    otter("keygen", "-q", "--type", "device", tmp_path / "class")
    dev = device(fleet, tmp_path, extra_config=f"device_keys = {tmp_path / 'class.key'}\n")
    (dev.dir / "root" / "etc").mkdir(parents=True)
    dev_id = enrolled(dev)
    p = rel.dir / "secret.txt"
    p.write_text("top secret\n")
    out = rel.dir / "secret.otter"
    otter("pack", "-q", "-o", out, "--name", "secret", "--version", "1", "-T", "gw-1",
          "-p", f"name=s,file={p},type=file,target=/etc/secret.txt", "-k", rel.dir / "release.key",
          "-e", tmp_path / "class.pub")
    dep = deploy(server, rel.upload(out).json()["id"], dev_id)
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success", dev.log_text()
    assert (dev.dir / "root" / "etc" / "secret.txt").read_text() == "top secret\n"
    # a device without the key refuses it and keeps what it has
    other = device(fleet, tmp_path, name="nokey")
    (other.dir / "root" / "etc").mkdir(parents=True)
    oid = enrolled(other)
    dep = deploy(server, dep_artifact(server, dep), oid)
    assert other.run_until(final(server, dep, oid)) is None
    assert row(server, dep, oid)["status"] == "failure"
    assert not (other.dir / "root" / "etc" / "secret.txt").exists()


def dep_artifact(server, dep):
    return server.request("GET", f"/api/v1/deployments/{dep}", token=server.token).json()[
        "artifact_id"]


def test_control_socket_status_pause_check_now(fleet, tmp_path):
    server, rel, _ = fleet
    dev = device(fleet, tmp_path, extra_config="poll_interval = 1h\n")
    dev_id = enrolled(dev)
    dev.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (dev.dir / "control.sock").exists():
            time.sleep(0.02)
        r = dev.agent("status")
        st = json.loads(r.stdout)
        assert r.returncode == 0 and st["phase"] == "idle" and st["paused"] is False, r
        assert dev.agent("pause").returncode == 0
        assert json.loads(dev.agent("status").stdout)["paused"] is True
        dep = deploy(server, rel.upload(pack_ab(rel, "c1", new_image("c1"))).json()["id"], dev_id)
        assert dev.agent("check-now").returncode == 0
        time.sleep(0.5)
        assert row(server, dep, dev_id)["status"] == "pending"  # paused: no check-in
        assert dev.agent("resume").returncode == 0
        assert dev.agent("check-now").returncode == 0
        assert dev.wait(timeout=30) == EXIT_REBOOT  # took the update without waiting an hour
    finally:
        if dev.proc.poll() is None:
            dev.kill()
    assert dev.agent("status").returncode == 0  # no daemon: read from the state file
    assert json.loads(dev.agent("status").stdout)["phase"] == "reboot_pending"


def test_depends_are_checked_against_what_the_device_provides(fleet, tmp_path):
    server, rel, _ = fleet
    p = rel.dir / "dep.txt"
    p.write_text("x")
    out = rel.dir / "dep.otter"
    otter("pack", "-q", "-o", out, "--name", "dep", "--version", "1", "-T", "gw-1",
          "--depends", "bootloader=2|3", "-p", f"name=d,file={p},type=file,target=/d.txt",
          "-k", rel.dir / "release.key")
    art = rel.upload(out).json()["id"]
    old = device(fleet, tmp_path, name="old", extra_config="provides = bootloader=1\n")
    new = device(fleet, tmp_path, name="new", extra_config="provides = bootloader=3\n")
    for dev, want in [(old, "failure"), (new, "success")]:
        dev_id = enrolled(dev)
        dep = deploy(server, art, dev_id)
        assert dev.run_until(final(server, dep, dev_id)) is None
        assert row(server, dep, dev_id)["status"] == want, (want, row(server, dep, dev_id))
    assert (new.dir / "root" / "d.txt").exists() and not (old.dir / "root" / "d.txt").exists()


def test_a_damaged_state_file_does_not_stop_the_agent(fleet, tmp_path):
    dev = device(fleet, tmp_path)
    dev.state.mkdir(parents=True, exist_ok=True)
    (dev.state / "state.json").write_text("{not json")
    enrolled(dev)
    assert (dev.state / "state.json.damaged").exists()
    assert dev.phase() == "idle"


def test_an_idle_agent_checks_in_at_the_poll_interval(make_server, tmp_path):
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 1s\npoll_jitter = 0s\n")
    server = make_server(args=["--config", conf])
    rel = Release(server, tmp_path / "rel")
    enroll = server.create_token(["devices:enroll"], name="fleet")["token"]
    dev = SimDevice(tmp_path, server, rel.dir / "trust.json", enroll)
    dev.start()
    time.sleep(3.5)
    dev.stop()
    checkins = server.log().count("POST /api/device/v1/checkin")
    assert 2 <= checkins <= 6, f"{checkins} check-ins in 3.5 s at a 1 s interval"
