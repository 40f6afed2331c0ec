"""A simulated device for the agent tests: the real otter-agent binary with two file-backed A/B
slots, the simulated bootloader (otter-agent sim-boot) and its own state directory, talking to a
real otterd on 127.0.0.1. A "power cut" is SIGKILL of the agent; a "reboot" is a sim-boot
power-on followed by a fresh agent process. Every wait is bounded."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from otterd_util import BUILD, TIMEOUT

AGENT = BUILD / "src" / "agent" / "otter-agent"
EXIT_REBOOT = 75
OLD_IMAGE = b"old-rootfs-" * 4096


def sha(data):
    return hashlib.sha256(data).hexdigest()


class SimDevice:
    def __init__(self, tmp, server, trust, enroll_token, name="dev", device_type="gw-1",
                 extra_config="", health_command=""):
        self.dir = Path(tmp) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.state = self.dir / "state"
        self.slot = {"a": self.dir / "slot-a.img", "b": self.dir / "slot-b.img"}
        self.slot["a"].write_bytes(OLD_IMAGE)
        self.slot["b"].write_bytes(b"\0" * 1024)
        self.boot_env = self.dir / "boot.env"
        self.log = self.dir / "agent.log"
        self.config = self.dir / "agent.conf"
        keys = {
            "servers": f"http://127.0.0.1:{server.port}",
            "allow_http": "true",
            "device_type": device_type,
            "identity": f"name={name}",
            "enrollment_token": enroll_token,
            "trust": str(trust),
            "state_dir": str(self.state),
            "boot": "sim",
            "boot_env": str(self.boot_env),
            "slot_a": str(self.slot["a"]),
            "slot_b": str(self.slot["b"]),
            "root": str(self.dir / "root"),
            "reboot_command": "",
            "poll_interval": "1s",
            "retry_max": "2s",
            "health_command": health_command,
            "control_socket": str(self.dir / "control.sock"),
            "inventory_dir": str(self.dir / "inventory.d"),
            "modules_dir": str(self.dir / "modules"),
        }
        for line in extra_config.splitlines():  # "key = value" lines override
            if "=" in line:
                k, _, v = line.partition("=")
                keys[k.strip()] = v.strip()
        self.config.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
        (self.dir / "root").mkdir(exist_ok=True)
        self.power_on()

    # ---- the simulated hardware ----

    def power_on(self):
        r = subprocess.run([str(AGENT), "sim-boot", str(self.boot_env)], capture_output=True,
                           text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def boot_vars(self):
        env = {}
        if self.boot_env.exists():
            for line in self.boot_env.read_text().splitlines():
                if "=" in line:
                    k, _, v = line.partition("=")
                    env[k.strip()] = v.strip()
        return env

    def booted(self):
        return self.boot_vars().get("otter_booted")

    def slot_sha(self, slot, size):
        return sha(self.slot[slot].read_bytes()[:size])

    def phase(self):
        try:
            return json.loads((self.state / "state.json").read_text())["phase"]
        except FileNotFoundError:
            return "idle"

    # ---- the agent ----

    def start(self, env=None):
        full = dict(os.environ)
        full.update(env or {})
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(AGENT), "-c", str(self.config), "daemon"],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, env=full)
        return self.proc

    def wait(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout)
        finally:
            self.logf.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()

    def run_until(self, done, timeout=TIMEOUT, env=None):
        """Runs the agent until done() is true (then SIGTERM), it exits (e.g. 75: reboot), or
        the time is up (AssertionError). Returns the exit status (None if stopped by us)."""
        self.start(env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.logf.close()
                return rc
            if done():
                self.stop()
                return None
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"agent did not finish in {timeout}s; log:\n{self.log_text()}")

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def agent(self, *args, timeout=TIMEOUT):
        return subprocess.run([str(AGENT), "-c", str(self.config)] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout)
