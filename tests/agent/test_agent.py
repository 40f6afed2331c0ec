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


def old_conf(dev):
    """The device's /etc/app.conf (under its root), holding "old"."""
    conf = dev.dir / "root" / "etc" / "app.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("old\n")
    return conf


def deploy_conf(fleet, dev_id, text, version):
    """Packs, uploads and deploys a file update of /etc/app.conf to one device."""
    server, rel, _ = fleet
    payload = rel.dir / "app.conf"
    payload.write_text(text)
    out = rel.dir / "conf.otter"
    otter("pack", "-q", "-o", out, "--name", "conf", "--version", version, "-T", "gw-1",
          "-p", f"name=conf,file={payload},type=file,target=/etc/app.conf",
          "-k", rel.dir / "release.key")
    art = rel.upload(out).json()
    return server.request("POST", "/api/v1/deployments",
                          {"name": "x", "artifact_id": art["id"], "devices": [dev_id]},
                          token=server.token).json()


def test_in_place_file_update_needs_no_reboot(fleet, tmp_path):
    server = fleet[0]
    dev = device(fleet, tmp_path)
    conf = old_conf(dev)
    dev_id = enrolled(dev)
    dep = deploy_conf(fleet, dev_id, "new\n", "7")
    assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
    assert row(server, dep["id"], dev_id)["status"] == "success"
    assert conf.read_text() == "new\n"
    assert not list(conf.parent.glob("*.otter-old"))
    assert dev.booted() == "a"


def test_updates_through_an_http_proxy(fleet, tmp_path):
    """A device that reaches otterd only through an HTTP proxy: its server is otter.test, a name
    only the (fake) proxy resolves. With the `proxy` key it enrols, checks in, downloads and
    installs an update through the proxy, with the credentials from the proxy URL; then, with
    the key gone from its configuration, the http_proxy environment variable takes it there."""
    from proxy_util import FakeProxy
    server = fleet[0]
    p = FakeProxy(auth=("otter", "s3cret"))
    try:
        dev = device(fleet, tmp_path, extra_config=(
            f"servers = http://otter.test:{server.port}\n"
            f"proxy = http://otter:s3cret@127.0.0.1:{p.port}"))
        conf = old_conf(dev)
        dev_id = enrolled(dev)
        dep = deploy_conf(fleet, dev_id, "through the proxy\n", "8")
        assert dev.run_until(final(server, dep["id"], dev_id)) is None, dev.log_text()
        assert row(server, dep["id"], dev_id)["status"] == "success", dev.log_text()
        assert conf.read_text() == "through the proxy\n"
        lines = [line for line, _ in p.forwards]
        base = f"http://otter.test:{server.port}/api/device/v1"
        assert f"POST {base}/checkin HTTP/1.1" in lines, lines
        assert any(f"{base}/deployments/{dep['id']}" in line for line in lines), lines
        assert any(line.startswith("GET ") for line in lines), lines  # the download
        assert {a for _, a in p.forwards} == {"Basic b3R0ZXI6czNjcmV0"}  # otter:s3cret

        dev.config.write_text("".join(line + "\n" for line in dev.config.read_text().splitlines()
                                      if not line.startswith("proxy =")))
        before = len(p.forwards)
        env = {"http_proxy": f"http://otter:s3cret@127.0.0.1:{p.port}"}
        dev.run_until(lambda: len(p.forwards) > before + 1, env=env)
        assert any(line.endswith("/checkin HTTP/1.1") for line, _ in p.forwards[before:])
    finally:
        p.close()


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


def cut_download(fleet, tmp_path, block=256 * 1024):
    """A device downloading a 3 MB A/B update (incompressible, ~1.5 s at 2 MB/s) with
    download_block = `block`, SIGKILLed (a power cut) after 600 kB, more than two blocks. Returns
    the device, its id, the deployment, the image, and the state file's synced byte count."""
    server = fleet[0]
    rel = fleet[1]
    dev = device(fleet, tmp_path, extra_config=f"max_rate = 2M\ndownload_block = {block}\n")
    dev_id = enrolled(dev)
    image = os.urandom(3_000_000)
    dep = deploy(server, rel.upload(pack_ab(rel, "r1", image)).json()["id"], dev_id)
    part = dev.state / "download.part"
    dev.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 600_000):
        time.sleep(0.02)
    dev.kill()
    have = part.stat().st_size
    assert 0 < have < 3_000_000
    synced = json.loads((dev.state / "state.json").read_text())["downloaded"]
    # Whole blocks are synced and recorded, nothing past what was written. The kill may land
    # after the write that crossed a boundary and before its sync: the record is then one block
    # behind, never more (the sync of a boundary ends before the next bytes are written).
    assert synced % block == 0 and 0 < synced <= have < synced + 2 * block, (synced, have)
    return dev, dev_id, dep, image, synced


def test_download_resumes_after_a_power_cut(fleet, tmp_path):
    server = fleet[0]
    dev, dev_id, dep, image, synced = cut_download(fleet, tmp_path)
    dev.power_on()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    # the second run fetched only the rest (the server logs each Range request's bytes)
    assert dev.slot_sha("b", len(image)) == sha(image)
    log = server.log()
    assert f"/api/device/v1/deployments/{dep}/artifact 206" in log, log[-3000:]
    assert log.count(f"/api/device/v1/deployments/{dep}/artifact 200") == 1, log[-3000:]
    dev.power_on()
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success"


def test_a_power_cut_that_damaged_the_download_costs_one_block(fleet, tmp_path):
    """What a real power cut can leave: the end of download.part that the file system had not
    written is garbage (here: every byte after the last synced block, and more of it than was
    downloaded). The agent resumes from the last synced block, so the update completes with
    one ranged request for the rest, instead of failing the whole-file hash and downloading
    everything again."""
    server = fleet[0]
    dev, dev_id, dep, image, synced = cut_download(fleet, tmp_path)
    part = dev.state / "download.part"
    with open(part, "r+b") as f:
        f.seek(synced)
        f.write(os.urandom(part.stat().st_size - synced + 100_000))
    dev.power_on()
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert dev.slot_sha("b", len(image)) == sha(image)
    log = server.log()
    assert log.count(f"/api/device/v1/deployments/{dep}/artifact 200") == 1, log[-3000:]
    assert log.count(f"/api/device/v1/deployments/{dep}/artifact 206") == 1, log[-3000:]
    assert f"resuming from byte {synced}," in dev.log_text(), dev.log_text()
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


def test_what_committed_artifacts_provide_is_what_the_device_provides(fleet, tmp_path):
    """An artifact's `provides` become the device's when it is committed, kept in installed.json
    across restarts, beside the configured ones, and the newest value of a key wins: app 1
    (provides app.api=1 and bootloader=3) installs; app 2 (depends on app.api=1, provides
    app.api=2) installs after it; app 3 (depends on app.api=1 again) is refused, as is one that
    needs the configured bootloader=2, which app 1 replaced."""
    server, rel, _ = fleet

    def pack(version, provides=(), depends=()):
        p = rel.dir / f"app-{version}.txt"
        p.write_text(version)
        out = rel.dir / f"app-{version}.otter"
        args = ["pack", "-q", "-o", out, "--name", "app", "--version", version, "-T", "gw-1"]
        for kv in provides:
            args += ["--provides", kv]
        for kv in depends:
            args += ["--depends", kv]
        otter(*args, "-p", f"name=app,file={p},type=file,target=/app.txt",
              "-k", rel.dir / "release.key")
        return rel.upload(out).json()["id"]

    dev = device(fleet, tmp_path, extra_config="provides = board=rev2, bootloader=2\n")
    dev_id = enrolled(dev)
    steps = [(pack("1", provides=["app.api=1", "bootloader=3"], depends=["board=rev2"]),
              "success"),
             (pack("2", provides=["app.api=2"], depends=["app.api=1"]), "success"),
             (pack("3", depends=["app.api=1"]), "failure"),
             (pack("4", depends=["bootloader=2"]), "failure")]
    for art, want in steps:
        dep = deploy(server, art, dev_id)
        assert dev.run_until(final(server, dep, dev_id)) is None, dev.log_text()
        r = row(server, dep, dev_id)
        assert r["status"] == want, (want, r, dev.log_text())
        if want == "failure":
            assert r["message"].startswith("refused before download: depends on"), r
    assert (dev.dir / "root" / "app.txt").read_text() == "2"
    installed = json.loads((dev.state / "installed.json").read_text())
    assert installed["provides"] == {"app.api": "2", "bootloader": "3"}, installed


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


# ---- deployment types, maintenance windows, retries (docs/agent.md, DEPLOYMENT TYPES AND WAITING)


class Clock:
    """otterd's clock offset in seconds (OTTERD_TEST_CLOCK_FILE, read by otterd every 50 ms)."""

    def __init__(self, path):
        self.path = path
        self.set(0)

    def set(self, offset):
        self.offset = offset
        self.path.write_text(f"{offset}\n")
        time.sleep(0.3)  # otterd reads it again, and a rollout tick passes

    def advance(self, seconds):
        self.set(self.offset + seconds)


WINDOW = {"cron": "0 3 * * *", "duration": "1h", "timezone": "UTC"}


def outside_window(clock):
    """otterd's clock at the next 01:00 UTC: two hours before the window opens."""
    now = time.time()
    target = now // 86400 * 86400 + 3600
    if target <= now:
        target += 86400
    clock.set(int(target - now))


def open_window(clock):
    clock.advance(2 * 3600 + 60)


@pytest.fixture
def clock(tmp_path, monkeypatch):
    c = Clock(tmp_path / "clock")
    monkeypatch.setenv("OTTERD_TEST_CLOCK_FILE", str(c.path))
    return c


@pytest.fixture
def policy_fleet(make_server, tmp_path, clock):
    """otterd answering check-ins every second, with a fast rollout engine and a test clock."""
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 1s\npoll_jitter = 0s\nrollout_tick = 200ms\n")
    server = make_server(args=["--config", conf])
    rel = Release(server, tmp_path / "rel")
    enroll = server.create_token(["devices:enroll"], name="fleet")["token"]
    return server, rel, enroll


def deploy_policy(server, art_id, dev_id, policy, name="x"):
    r = server.request("POST", "/api/v1/deployments",
                       {"name": name, "artifact_id": art_id, "devices": [dev_id],
                        "policy": policy}, token=server.token)
    assert r.status == 201, r
    return r.json()["id"]


def downloads(server, dep):
    """Artifact requests of deployment dep in otterd's log."""
    return server.log().count(f"GET /api/device/v1/deployments/{dep}/artifact ")


def state(dev):
    try:
        return json.loads((dev.state / "state.json").read_text())
    except FileNotFoundError:
        return {"phase": "idle"}


def wait_running(dev, cond, what, timeout=30):
    """Polls cond() while the agent started with dev.start() runs (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert dev.proc.poll() is None, f"the agent exited ({dev.proc.returncode})\n" \
                                         f"{dev.log_text()}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{dev.log_text()}")


def full_log(dev):
    return dev.log.read_text(errors="replace")


def events(server, dep, dev_id):
    return [(e["status"], e["message"]) for e in row(server, dep, dev_id)["events"]]


def conf_artifact(rel, version):
    p = rel.dir / f"app-{version}.conf"
    p.write_text(f"{version}\n")
    out = rel.dir / f"app-{version}.otter"
    otter("pack", "-q", "-o", out, "--name", "app", "--version", version, "-T", "gw-1",
          "-p", f"name=conf,file={p},type=file,target=/etc/app.conf",
          "-k", rel.dir / "release.key")
    return out


def test_held_install_waits_for_the_maintenance_window(policy_fleet, tmp_path, clock):
    server, rel, _ = policy_fleet
    outside_window(clock)
    dev = device(policy_fleet, tmp_path)
    dev_id = enrolled(dev)
    image = new_image("w1")
    dep = deploy_policy(server, rel.upload(pack_ab(rel, "w1", image)).json()["id"], dev_id,
                        {"maintenance_window": WINDOW})
    dev.start()
    try:
        # downloaded and verified, then waiting, the server told once
        wait_running(dev, lambda: state(dev).get("wait_reported") == "held", "the waiting report")
        r = row(server, dep, dev_id)
        assert r["status"] == "waiting", r
        assert r["message"] == "waiting for the maintenance window", r
        st = json.loads(dev.agent("status").stdout)
        assert st["phase"] == "waiting" and st["waiting"] == "held", st
        assert st["message"] == "waiting for the maintenance window", st
        assert (dev.state / "download.part").stat().st_size > 0
        # nothing on the device changed
        assert dev.slot["b"].read_bytes() == b"\0" * 1024
        assert not dev.boot_vars().get("otter_try")
    finally:
        dev.kill()  # a power cut while waiting
    assert downloads(server, dep) == 1
    assert dev.power_on() == "a"
    # the next start resumes waiting: it checks in, does not download again, does not report again
    checkins = server.log().count("POST /api/device/v1/checkin ")
    dev.start()
    try:
        wait_running(dev, lambda: server.log().count("POST /api/device/v1/checkin ") >= checkins + 3,
                     "three check-ins")
        st = json.loads(dev.agent("status").stdout)
        assert st["phase"] == "waiting" and st["waiting"] == "held", st
    finally:
        dev.stop()
    assert "starting in phase waiting" in full_log(dev)
    assert downloads(server, dep) == 1
    # no daemon: the state file says the same
    st = json.loads(dev.agent("status").stdout)
    assert st["phase"] == "waiting" and st["waiting"] == "held" and st["daemon"] is False, st
    # the window opens: the agent installs what it has, reboots, commits
    open_window(clock)
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep, dev_id)) is None, dev.log_text()
    assert row(server, dep, dev_id)["status"] == "success", dev.log_text()
    assert [s for s, _ in events(server, dep, dev_id)].count("waiting") == 1
    assert downloads(server, dep) == 1
    assert dev.slot_sha("b", len(image)) == sha(image)
    assert not (dev.state / "download.part").exists()


def test_streamed_slot_image_waits_in_the_slot(policy_fleet, tmp_path, clock):
    server, rel, _ = policy_fleet
    outside_window(clock)
    dev = device(policy_fleet, tmp_path, extra_config="streaming = true\n")
    dev_id = enrolled(dev)
    image = new_image("w2", size=1_000_000)
    dep = deploy_policy(server, rel.upload(pack_ab(rel, "w2", image)).json()["id"], dev_id,
                        {"maintenance_window": WINDOW})
    dev.start()
    try:
        wait_running(dev, lambda: state(dev).get("wait_reported") == "held", "the waiting report")
    finally:
        dev.kill()
    # written into the inactive slot and verified, nothing activated, no local copy
    assert state(dev)["staged"] is True
    assert dev.slot_sha("b", len(image)) == sha(image)
    assert not dev.boot_vars().get("otter_try")
    assert not (dev.state / "download.part").exists()
    dev.power_on()
    open_window(clock)
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert downloads(server, dep) == 1  # the slot was checked, not streamed again
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success"


def test_waiting_device_drops_a_cancelled_deployment(policy_fleet, tmp_path, clock):
    server, rel, _ = policy_fleet
    outside_window(clock)
    dev = device(policy_fleet, tmp_path)
    dev_id = enrolled(dev)
    dep = deploy_policy(server, rel.upload(pack_ab(rel, "w3", new_image("w3"))).json()["id"],
                        dev_id, {"maintenance_window": WINDOW})
    dev.start()
    try:
        wait_running(dev, lambda: state(dev).get("wait_reported") == "held", "the waiting report")
        r = server.request("POST", f"/api/v1/deployments/{dep}/cancel", token=server.token)
        assert r.status < 300, r
        wait_running(dev, lambda: state(dev)["phase"] == "idle", "the agent to drop it")
    finally:
        dev.stop()
    assert "does not offer it any more" in full_log(dev)
    assert not (dev.state / "download.part").exists()
    assert dev.slot["b"].read_bytes() == b"\0" * 1024 and dev.booted() == "a"


def test_soft_update_waits_for_the_devices_consent(policy_fleet, tmp_path):
    server, rel, _ = policy_fleet
    asked = tmp_path / "asked"
    script = tmp_path / "consent.sh"
    script.write_text("#!/bin/sh\n"
                      f'echo "$OTTER_DEPLOYMENT_ID $OTTER_ARTIFACT_NAME $OTTER_ARTIFACT_VERSION" '
                      f'>> {asked}\n'
                      f'[ "$(wc -l < {asked})" -ge 2 ] || {{ echo "the user said later"; exit 1; }}\n')
    script.chmod(0o755)
    dev = device(policy_fleet, tmp_path, extra_config=f"consent_command = {script}\n")
    conf = dev.dir / "root" / "etc" / "app.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("old\n")
    dev_id = enrolled(dev)
    dep = deploy_policy(server, rel.upload(conf_artifact(rel, "7")).json()["id"], dev_id,
                        {"type": "soft"})
    assert dev.run_until(final(server, dep, dev_id)) is None, dev.log_text()
    assert row(server, dep, dev_id)["status"] == "success", dev.log_text()
    ev = events(server, dep, dev_id)
    assert ("waiting", "postponed by the device") in ev, ev
    assert [s for s, _ in ev].index("waiting") < [s for s, _ in ev].index("installing"), ev
    # asked twice (no, then yes at the next check-in), with the deployment in its environment
    assert asked.read_text().splitlines() == [f"{dep} app 7"] * 2
    assert "the consent command: the user said later" in full_log(dev)
    assert conf.read_text() == "7\n"


def download_only_then(fleet, tmp_path, version):
    """A download-only deployment of an A/B artifact; returns (device, id, artifact, its file,
    the cached file)."""
    server, rel, _ = fleet
    dev = device(fleet, tmp_path)
    dev_id = enrolled(dev)
    art = pack_ab(rel, version, new_image(version))
    art_id = rel.upload(art).json()["id"]
    dep = deploy_policy(server, art_id, dev_id, {"type": "download_only"})
    assert dev.run_until(final(server, dep, dev_id)) is None, dev.log_text()
    r = row(server, dep, dev_id)
    assert r["status"] == "success" and r["message"] == "downloaded (download only)", r
    cached = dev.state / "cache" / f"{sha(art.read_bytes())}.otter"
    assert cached.read_bytes() == art.read_bytes()
    assert not (dev.state / "download.part").exists()
    # nothing installed
    assert dev.slot["b"].read_bytes() == b"\0" * 1024 and dev.booted() == "a"
    assert not dev.boot_vars().get("otter_try")
    return dev, dev_id, art_id, art, cached


def test_download_only_then_install_from_the_cache(policy_fleet, tmp_path):
    server = policy_fleet[0]
    dev, dev_id, art_id, art, cached = download_only_then(policy_fleet, tmp_path, "d1")
    dep = deploy(server, art_id, dev_id)  # forced: installs the cached file
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert downloads(server, dep) == 0, server.log()[-3000:]
    assert "using the cached artifact" in full_log(dev)
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success", dev.log_text()
    assert not cached.exists()  # installed: the copy is dropped


def test_a_damaged_cache_is_downloaded_again(policy_fleet, tmp_path):
    server = policy_fleet[0]
    dev, dev_id, art_id, art, cached = download_only_then(policy_fleet, tmp_path, "d2")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 1
    cached.write_bytes(bytes(data))
    dep = deploy(server, art_id, dev_id)
    assert dev.run_until(lambda: False, timeout=30) == EXIT_REBOOT, dev.log_text()
    assert "does not match its SHA-256" in full_log(dev)
    assert downloads(server, dep) == 1
    assert not cached.exists()
    assert dev.power_on() == "b"
    assert dev.run_until(final(server, dep, dev_id)) is None
    assert row(server, dep, dev_id)["status"] == "success", dev.log_text()


def test_a_retry_after_a_failure_is_installed_again(policy_fleet, tmp_path):
    server, rel, _ = policy_fleet
    marker = tmp_path / "failed-once"
    dev = device(policy_fleet, tmp_path,
                 health_command=f"test -e {marker} || {{ touch {marker}; exit 1; }}")
    conf = dev.dir / "root" / "etc" / "app.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("old\n")
    dev_id = enrolled(dev)
    dep = deploy_policy(server, rel.upload(conf_artifact(rel, "8")).json()["id"], dev_id,
                        {"retries": 1})
    assert dev.run_until(final(server, dep, dev_id), timeout=60) is None, dev.log_text()
    assert row(server, dep, dev_id)["status"] == "success", (row(server, dep, dev_id),
                                                             dev.log_text())
    statuses = [s for s, _ in events(server, dep, dev_id)]
    assert "rolled_back" in statuses and statuses[-1] == "success", statuses
    assert full_log(dev).count(f"deployment {dep}: app 8") == 2  # taken twice
    assert downloads(server, dep) == 2
    assert conf.read_text() == "8\n"
