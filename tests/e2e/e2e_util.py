"""What the end-to-end tests share: an otterd on a fixed port (so it can be killed and started
again), its release key and enrollment token, otter-sim fleets and real agents pointed at it, and
helpers to read the management API."""
import hashlib
import time
from pathlib import Path

from agent_util import EXIT_REBOOT, SimDevice
from fleet_util import Release, otter
from sim_util import Fleet, free_port, pages, wait_for

FINAL = ("success", "failure", "rolled_back")
DEVICE_TYPE = "sim-gw"


class Env:
    def __init__(self, make_server, tmp_path, config=""):
        self.tmp = Path(tmp_path)
        self.make_server = make_server
        self.port = free_port()
        cfg = self.tmp / "otterd.conf"
        cfg.write_text("poll_interval = 1s\npoll_jitter = 0s\n" + config)
        self.data = self.tmp / "otterd-data"
        self.args = ["--config", cfg, "--listen", f"127.0.0.1:{self.port}"]
        self.server = make_server(data_dir=self.data, args=self.args, listen_flag=False)
        self.token = self.server.token
        self.rel = Release(self.server, self.tmp / "rel")
        self.trust = self.rel.dir / "trust.json"
        self.enroll = self.server.create_token(["devices:enroll"], name="fleet")["token"]

    def restart(self):
        """otterd on the same data directory and port (after a kill)."""
        self.server = self.make_server(data_dir=self.data, args=self.args, listen_flag=False,
                                       name="otterd-restarted")
        self.server.token = self.token
        self.rel.server = self.server
        return self.server

    def api(self, method, path, body=None):
        r = self.server.request(method, path, body, token=self.token)
        assert r.status < 300, (method, path, r)
        return r.json() if r.body else None

    def fleet(self, n, *args, name="fleet"):
        return Fleet(self.tmp, self.server, self.trust, self.enroll, n, args=args, name=name,
                     device_type=DEVICE_TYPE, port=self.port)

    def real_device(self, name):
        return SimDevice(self.tmp, self.server, self.trust, self.enroll, name=name,
                         device_type=DEVICE_TYPE)

    # ---- the fleet on the server ----

    def devices(self):
        return pages(self.server, "/api/v1/devices", "devices")

    def ids_by_name(self, prefix):
        """{identity name/serial: device id} of accepted devices whose name starts with prefix."""
        out = {}
        for d in self.devices():
            name = d["identity"].get("serial") or d["identity"].get("name") or ""
            if name.startswith(prefix) and d["status"] == "accepted":
                out[name] = d["id"]
        return out

    def enrolled(self, prefix, n):
        return wait_for(lambda: (lambda m: m if len(m) >= n else None)(self.ids_by_name(prefix)),
                        what=f"{n} devices named {prefix}* to enroll")

    def tag(self, ids, tag):
        for i in ids:
            self.api("PUT", f"/api/v1/devices/{i}/tags", {"tags": [tag]})

    def pack(self, version, image, device_types=(DEVICE_TYPE,), depends=()):
        payload = self.rel.dir / f"rootfs-{version}.img"
        payload.write_bytes(image)
        out = self.rel.dir / f"os-{version}.otter"
        args = ["pack", "-q", "-o", out, "--name", "os", "--version", version]
        for t in device_types:
            args += ["-T", t]
        for dep in depends:
            args += ["--depends", dep]
        args += ["-p", f"name=rootfs,file={payload},type=raw,target=slot", "-k",
                 self.rel.dir / "release.key"]
        otter(*args)
        return out

    def push(self, path):
        r = self.rel.upload(path)
        assert r.status == 201, r
        return r.json()

    def deploy(self, artifact_id, tag=None, devices=None):
        body = {"name": "e2e", "artifact_id": artifact_id}
        if tag:
            body["tag"] = tag
        else:
            body["devices"] = devices
        return self.api("POST", "/api/v1/deployments", body)

    def rows(self, dep):
        return {r["device_id"]: r for r in
                pages(self.server, f"/api/v1/deployments/{dep}/devices", "devices")}


def image(version, size=48 * 1024):
    return (f"rootfs-{version}-".encode() * (size // 10 + 1))[:size]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def sim_slot(fleet, name, slot, size):
    p = fleet.dir / "devices" / name / f"slot-{slot}"
    return sha(p.read_bytes()[:size]) if p.exists() else None


def sim_boot_vars(fleet, name):
    text = (fleet.dir / "devices" / name / "boot.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def drive_real_device(dev, done, timeout=60):
    """Runs a real otter-agent through the reboots it asks for until done() (bounded)."""
    deadline = time.monotonic() + timeout
    for _ in range(10):
        rc = dev.run_until(done, timeout=max(1, deadline - time.monotonic()))
        if rc is None:
            return
        assert rc == EXIT_REBOOT, (rc, dev.log_text())
        dev.power_on()
    raise AssertionError(f"{dev.dir.name}: no end after 10 reboots\n{dev.log_text()}")




def start_enrolled(env, n, *args, name="fleet", tag="fleet"):
    """An otter-sim fleet of n devices, running (and polling) in the background, every device
    accepted (enrollment token) and tagged."""
    f = env.fleet(n, *args, name=name).start()
    ids = env.enrolled(name + "-", n)
    env.tag(ids.values(), tag)
    return f, ids
