"""otter-sim driven from the end-to-end tests: a fleet of simulated devices in one process (the
agent's own engine per device), started in the background, its JSON summary read at the end.
Every wait is bounded."""
import json
import socket
import subprocess
import time
from pathlib import Path

from otterd_util import BUILD, TIMEOUT

SIM = BUILD / "src" / "sim" / "otter-sim"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fleet:
    """One otter-sim process. `args` are extra command-line options (profiles, --until-done)."""

    def __init__(self, tmp, server, trust, enroll, n, args=(), name="fleet", device_type="sim-gw",
                 port=None):
        self.dir = Path(tmp) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "otter-sim.log"
        self.out = self.dir / "otter-sim.json"
        self.cmd = [str(SIM), "--server", f"http://127.0.0.1:{port or server.port}",
                    "--trust", str(trust), "--enroll-token", enroll, "--devices", str(n),
                    "--dir", str(self.dir / "devices"), "--prefix", name,
                    "--device-type", device_type, "--poll", "1s", "--boot-time", "200ms",
                    "--set", "retry_max=2s", "--quiet", "--json-devices", "-v"] + \
                   [str(a) for a in args]
        self.proc = None
        self.summary = None

    def start(self, *extra):
        assert self.proc is None or self.proc.poll() is not None
        self.summary = None
        with open(self.log, "ab") as log, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(self.cmd + [str(a) for a in extra],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=log)
        return self

    def wait(self, timeout=TIMEOUT):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise AssertionError(f"otter-sim did not finish in {timeout}s\n{self.log_text()}")
        text = self.out.read_text()
        assert text.strip(), f"otter-sim (exit {rc}) printed no summary\n{self.log_text()}"
        self.summary = json.loads(text)
        self.summary["exit"] = rc
        return self.summary

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            return self.wait()
        return self.summary

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def results(self, refused_too=False):
        """{device name: [(deployment, result), ...]} from the last summary: the final reports
        the server accepted (with refused_too, also those it refused because it had a final
        state already, e.g. a deployment cancelled as the device started)."""
        return {d["name"]: [(r["deployment"], r["result"]) for r in d["results"]
                            if r["accepted"] or refused_too]
                for d in self.summary["device_list"]}

    def profiles(self):
        return {d["name"]: d["profile"] for d in self.summary["device_list"]}


def pages(server, path, key):
    """Every item of a paged management API list."""
    items, after = [], 0
    for _ in range(10000):
        sep = "&" if "?" in path else "?"
        r = server.request("GET", f"{path}{sep}limit=500&after={after}", token=server.token)
        assert r.status == 200, r
        j = r.json()
        items += j[key]
        if not j[key] or not j.get("next_after"):
            return items
        after = j["next_after"]
    raise AssertionError("paging did not end")


def wait_for(cond, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
