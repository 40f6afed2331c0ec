"""Running the real otterd for the tests: start it on 127.0.0.1 with port 0 in a temporary data
directory, read the admin token and the port from its standard output, talk HTTP to it (Python's
http.client, or raw bytes on a socket for what a well-behaved client would never send), and stop
it with SIGTERM. Every wait is bounded."""
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("OTTER_BUILD_DIR", REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
OTTERD = BUILD / "src" / "server" / "otterd"

TIMEOUT = 20  # seconds: the longest any single wait may take (ASan builds are slow)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

TOKEN_BLOCK = re.compile(r"^otterd: first start: admin API token \(shown only once, store it now\):\n"
                         r"  (otr_[A-Za-z0-9_-]{43})\n", re.M)
LISTENING = re.compile(r"^otterd: listening on (https?)://(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)$", re.M)


def run(*args, timeout=TIMEOUT):
    """Runs otterd to completion (for --routes, --help, start-up failures)."""
    return subprocess.run([str(OTTERD)] + [str(a) for a in args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def error_line(r, code):
    """Asserts the exit status and that stderr ends with one 'otterd: ...' line; returns it."""
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines, "no error message on stderr"
    assert lines[-1].startswith("otterd: "), lines[-1]
    return lines[-1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error_code(self):
        return self.json()["error"]["code"]

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


def read_response(sock, head=False):
    """Reads one HTTP/1.1 response with a Content-Length body from a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response: {data[:200]!r}")
        data += chunk
    head_bytes, rest = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Response(status, headers, rest[:length])


class Otterd:
    """One otterd process. Its stderr (the log) goes to a file, so a chatty server never blocks on
    a full pipe; its stdout is read until the 'listening on' line."""

    def __init__(self, tmp_path, data_dir=None, args=(), name="otterd"):
        self.tmp = Path(tmp_path)
        self.data_dir = Path(data_dir) if data_dir else self.tmp / "data"
        self.args = list(args)
        self.log_path = self.tmp / f"{name}.log"
        self.proc = None
        self.stdout = ""
        self.token = None
        self.scheme = self.host = None
        self.port = None

    # ---- life cycle ----

    def start(self, data_flag=True, listen_flag=True):
        cmd = [str(OTTERD)]
        if data_flag:
            cmd += ["--data", str(self.data_dir)]
        if listen_flag:
            cmd += ["--listen", "127.0.0.1:0"]
        cmd += [str(a) for a in self.args]
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log_file, bufsize=0)
        self._read_until_listening()
        m = TOKEN_BLOCK.search(self.stdout)
        self.token = m.group(1) if m else None
        return self

    def _read_until_listening(self):
        deadline = time.monotonic() + TIMEOUT
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        raw = b""
        try:
            while not LISTENING.search(raw.decode("utf-8", "replace")):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    self.proc.wait(TIMEOUT)
                    raise AssertionError(f"otterd did not start in {TIMEOUT}s: {raw!r}\n{self.log()}")
                if not sel.select(timeout=left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    rc = self.proc.wait(TIMEOUT)
                    raise AssertionError(f"otterd exited ({rc}) before listening: {raw!r}\n{self.log()}")
                raw += chunk
        finally:
            sel.close()
        self.stdout = raw.decode()
        m = LISTENING.search(self.stdout)
        self.scheme, self.host, self.port = m.group(1), m.group(2), int(m.group(3))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=TIMEOUT):
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.log_file.close()
        rest = self.proc.stdout.read()
        self.proc.stdout.close()
        self.stdout += rest.decode() if rest else ""
        return rc

    def stop(self, timeout=TIMEOUT):
        """SIGTERM, then asserts a clean exit (0) within the timeout."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            rc = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise AssertionError(f"otterd did not stop within {timeout}s of SIGTERM\n{self.log()}")
        assert rc == 0, f"otterd exited {rc} after SIGTERM\n{self.log()}"

    def kill(self):
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            self.wait()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- talking to it ----

    def connection(self, timeout=TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, token=None, headers=None, conn=None):
        """One request; a new connection unless conn is given. Returns a Response."""
        own = conn is None
        c = conn or self.connection()
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            if own:
                c.close()

    def socket(self, timeout=TIMEOUT):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, data, head=False):
        """Sends raw bytes on a new connection and reads one response."""
        with self.socket() as s:
            s.sendall(data)
            return read_response(s, head=head)

    def raw_get(self, target, extra=b""):
        return self.raw(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")

    def assert_serving(self):
        r = self.request("GET", "/api/v1/health")
        assert r.status == 200, r
        return r

    def create_token(self, scopes, name="t"):
        r = self.request("POST", "/api/v1/tokens", {"name": name, "scopes": scopes}, token=self.token)
        assert r.status == 201, r
        return r.json()


def routes():
    r = run("--routes")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def has_route(method, path):
    return any(r["method"] == method and r["path"] == path for r in routes())
