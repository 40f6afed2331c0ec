"""Wire-level HTTP behaviour of otter-agent's device API client (src/agent/net.c), driven through
tests/agent/net_probe against a RAW-SOCKET fake server in this file: what the agent must keep
whichever HTTP/1.1 implementation is underneath (libcurl at first, src/agent/http.c since; two
cases here, conflicting Content-Length headers and the rate cap of a body that arrives at once,
failed with libcurl 7.88 and pass with the agent's own client).

The fake (RawServer) accepts on 127.0.0.1 (port 0) in a thread; each connection gets its own
thread, which reads requests (head + Content-Length body) and hands them to the test's handler,
which writes whatever bytes it likes: chunked bodies, garbage, partial bodies, 1-byte writes,
closes at chosen moments. Every loop is bounded in count and time, every socket has a timeout,
and the `raw` fixture stops the threads. Auth requests get a 200 with a token (AUTH_OK) unless
the server is made with raw_auth=True. Nothing here leaves 127.0.0.1.

The errors asserted are the agent's (ot_err_name): "io" for a transport failure, "format" for a
reply that is HTTP but not a valid check-in reply, "ok"."""
import base64
import hashlib
import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from test_agent_net import AUTH_OK, PROBE, one, probe, steps

AUTH_PATH = "/api/device/v1/auth"
CHECKIN_PATH = "/api/device/v1/checkin"

@pytest.fixture(autouse=True)
def _probe_built():
    if not PROBE.exists():
        pytest.fail(f"{PROBE} not found: tests/meson.build must build tests/agent/net_probe.c")


# ---- the raw fake server ------------------------------------------------------------------------

HEAD_MAX = 64 * 1024       # bytes of a request head the fake reads
BODY_MAX = 1024 * 1024     # bytes of a request body
CONNS_MAX = 32             # connections one fake accepts
REQUESTS_MAX = 64          # requests one connection serves
LIFETIME_S = 60            # no thread of a fake lives longer
IDLE_S = 20                # a kept-alive connection waits this long for the next request
SEND_TIMEOUT_S = 15        # one sendall (the client may be paused or rate-capped)


class Request:
    def __init__(self, conn_no, method, path, version, headers, body):
        self.conn_no = conn_no
        self.method, self.path, self.version = method, path, version
        self.headers = headers  # [(name, value)] as sent
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<{self.method} {self.path} on conn {self.conn_no}>"


class Conn:
    """One accepted connection, as the handler sees it."""

    def __init__(self, server, sock, no):
        self.server, self.sock, self.no = server, sock, no
        self.buf = b""
        self.closed = False

    # -- writing --

    def send(self, data):
        self.sock.sendall(data)

    def trickle(self, data, step=1, pause=0.0002):
        """Writes data `step` bytes at a time (TCP_NODELAY: one segment each), pausing between."""
        for i in range(0, len(data), step):
            if self.server.stopping.is_set():
                raise ConnectionAbortedError("fake server stopping")
            self.sock.sendall(data[i:i + step])
            if pause:
                time.sleep(pause)

    def hold(self, seconds):
        """Writes nothing for up to `seconds` (less when the fake stops or the peer closes)."""
        deadline = time.monotonic() + seconds
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            if self._readable(0.1):
                try:
                    if not self._recv():
                        return  # the client went away
                except OSError:
                    return

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    # -- reading --

    def _readable(self, timeout):
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def _recv(self):
        data = self.sock.recv(65536)
        self.buf += data
        return data

    def _fill(self, want, deadline):
        """Reads until want(buf) or EOF/deadline/stop; True when want(buf) holds."""
        while not want(self.buf):
            if self.server.stopping.is_set() or time.monotonic() > deadline:
                return False
            if not self._readable(0.1):
                continue
            try:
                if not self._recv():
                    return False
            except (OSError, ssl.SSLError):
                return False
        return True

    def read_request(self, idle=IDLE_S):
        deadline = time.monotonic() + idle
        if not self._fill(lambda b: b"\r\n\r\n" in b or len(b) > HEAD_MAX, deadline):
            return None
        if b"\r\n\r\n" not in self.buf:
            raise ValueError("request head too long")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        req = Request(self.no, method, path, version, headers, b"")
        if (req.header("Transfer-Encoding") or "").lower() == "chunked":
            raise ValueError("chunked request bodies are not expected from the agent")
        if (req.header("Expect") or "").lower() == "100-continue":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        n = int(req.header("Content-Length") or 0)
        if n > BODY_MAX:
            raise ValueError("request body too long")
        if not self._fill(lambda b: len(b) >= n, time.monotonic() + 10):
            return None
        req.body, self.buf = self.buf[:n], self.buf[n:]
        return req


class RawServer:
    """handler(conn, req) -> True to keep the connection for the next request, else it is
    closed. tls: an ssl.SSLContext (server side) to serve https."""

    def __init__(self, handler, tls=None, raw_auth=False):
        self.handler, self.tls, self.raw_auth = handler, tls, raw_auth
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []        # every Request read, in order
        self.errors = []          # exceptions in connection threads (peer resets are normal here)
        self.tls_errors = []      # failed handshakes
        self.peer_subjects = []   # TLS: the client certificate's subject, per handshake (or None)
        self.threads = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def _accept_loop(self):
        deadline = time.monotonic() + LIFETIME_S
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                if self.accepted >= CONNS_MAX:
                    sock.close()
                    continue
                self.accepted += 1
                no = self.accepted
            t = threading.Thread(target=self._serve, args=(sock, no), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, sock, no):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT_S)
        conn = Conn(self, sock, no)
        try:
            if self.tls:
                try:
                    conn.sock = self.tls.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError) as e:
                    with self.lock:
                        self.tls_errors.append(e)
                    return
                cert = conn.sock.getpeercert()
                with self.lock:
                    self.peer_subjects.append(cert.get("subject") if cert else None)
            for _ in range(REQUESTS_MAX):
                req = conn.read_request()
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                if req.path.endswith(AUTH_PATH) and not self.raw_auth:
                    conn.send(reply(200, AUTH_OK, [("Content-Type", "application/json")]))
                    continue
                if not self.handler(conn, req) or conn.closed:
                    return
        except Exception as e:  # noqa: BLE001 (recorded; the probe's result is what tests judge)
            with self.lock:
                self.errors.append(e)
        finally:
            conn.close()
            sock.close()  # the plain socket too, when a TLS wrap took it over or failed

    def paths(self):
        with self.lock:
            return [r.path for r in self.requests]

    def conns_of(self, path):
        with self.lock:
            return [r.conn_no for r in self.requests if r.path == path]

    def close(self):
        self.stopping.set()
        self.acceptor.join(5)
        self.lsock.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def raw():
    made = []

    def make(handler, **kw):
        s = RawServer(handler, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# ---- replies ------------------------------------------------------------------------------------

def head(status=200, headers=(), reason=None, version="HTTP/1.1"):
    reason = reason if reason is not None else {200: "OK", 206: "Partial Content",
                                                 100: "Continue"}.get(status, "X")
    lines = [f"{version} {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reply(status=200, body=b"", headers=(), **kw):
    """A complete reply with Content-Length."""
    return head(status, list(headers) + [("Content-Length", len(body))], **kw) + body


def chunked(body, sizes, ext=";x=y", trailer=("X-Trailer", "t")):
    """body in chunks of the given sizes (cycled), each with a chunk extension, then a trailer."""
    out, i, k = [], 0, 0
    while i < len(body):
        n = min(sizes[k % len(sizes)], len(body) - i)
        size = f"{n:x}" if k % 2 else f"{n:X}"  # both cases of hex digits
        out.append(f"{size}{ext}\r\n".encode() + body[i:i + n] + b"\r\n")
        i, k = i + n, k + 1
    out.append(b"0" + ext.encode() + b"\r\n")
    if trailer:
        out.append(f"{trailer[0]}: {trailer[1]}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


def checkin_body(poll=7):
    """A valid check-in reply (src/core/wire.c ot_wire_checkin_resp_decode); poll_interval tells
    the tests which reply the client decoded."""
    return json.dumps({"action": "none", "poll_interval": poll, "poll_jitter": 0}).encode() + b"\n"


def payload(n, seed=b"otter"):
    """n bytes that differ everywhere (a shifted or repeated piece shows in the sha256)."""
    out = [hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range((n + 31) // 32)]
    return b"".join(out)[:n]


def wait_until(cond, seconds=5):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sha(data):
    return hashlib.sha256(data).hexdigest()


def run(server, *step_list, extra=(), key=None, timeout=60):
    """Runs the probe against `server` (plain http); returns (results, seconds)."""
    args = ["net", "--allow-http", "--identity", "probe=1", "--server", server.url,
            "--key", key] + list(extra) + list(step_list)
    t0 = time.monotonic()
    res = probe(*args, timeout=timeout)
    return res, time.monotonic() - t0


@pytest.fixture
def key(tmp_path):
    return tmp_path / "dev.key"


# ---- framing ------------------------------------------------------------------------------------

def test_chunked_replies(raw, key):
    """Transfer-Encoding: chunked (sizes in both hex cases, a chunk extension ";x=y" on every chunk
    and a trailer header) is decoded for a check-in reply and a download: exact bytes. A check-in
    after them on the same connection still works, so the chunked framing (trailer included) was
    consumed exactly."""
    data = payload(70000)

    def handler(conn, req):
        te = [("Transfer-Encoding", "chunked"), ("Trailer", "X-Trailer")]
        if req.path == CHECKIN_PATH:
            poll = 11 if len(conn.server.conns_of(CHECKIN_PATH)) == 1 else 12
            conn.send(head(200, te) + chunked(checkin_body(poll), [1, 5, 3, 64]))
        elif req.path == "/dl/chunked":
            conn.send(head(200, te) + chunked(data, [1, 4096, 333, 0x1A2B, 65536]))
        else:
            conn.send(reply(404))
        return True

    s = raw(handler)
    res, _ = run(s, "checkin", "download,url=/dl/chunked", "checkin", key=key)
    c = steps(res, "checkin")
    assert [x["err"] for x in c] == ["ok", "ok"], res
    assert [x["poll_interval"] for x in c] == [11, 12]
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok" and d["http_status"] == 200, d
    assert g["bytes"] == len(data) and g["contiguous"] and g["first_offset"] == 0
    assert g["sha256"] == sha(data)
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH, "/dl/chunked", CHECKIN_PATH]
    assert s.accepted == 1, "the chunked replies left the connection unusable"


def test_download_ended_by_close(raw, key):
    """A download body without Content-Length, "Connection: close", ended by the server closing
    the connection: ok, exact bytes. A check-in afterwards opens a new connection."""
    data = payload(123457)

    def handler(conn, req):
        if req.path == "/dl/eof":
            conn.send(head(200, [("Connection", "close")]) + data)
            return False
        conn.send(reply(200, checkin_body(9)))
        return True

    s = raw(handler)
    res, _ = run(s, "download,url=/dl/eof", "checkin", key=key)
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok" and d["http_status"] == 200, d
    assert g["bytes"] == len(data) and g["contiguous"] and g["sha256"] == sha(data)
    c = one(res, "checkin")
    assert c["err"] == "ok" and c["poll_interval"] == 9, c
    assert s.conns_of(CHECKIN_PATH) == [2] and s.accepted == 2


def test_keep_alive_one_connection(raw, key):
    """Three check-ins (and the auth before them) in one probe run share ONE TCP connection."""
    n = {"i": 0}

    def handler(conn, req):
        n["i"] += 1
        conn.send(reply(200, checkin_body(20 + n["i"]), [("Content-Type", "application/json")]))
        return True

    s = raw(handler)
    res, _ = run(s, "checkin", "checkin", "sleep,ms=100", "checkin", key=key)
    c = steps(res, "checkin")
    assert [x["err"] for x in c] == ["ok"] * 3, res
    assert [x["poll_interval"] for x in c] == [21, 22, 23]
    assert s.paths() == [AUTH_PATH] + [CHECKIN_PATH] * 3
    assert s.accepted == 1, f"{s.accepted} connections for 4 requests"
    assert {r.conn_no for r in s.requests} == {1}


def test_server_closes_kept_alive_connection(raw, key):
    """The server answers one request per connection (no "Connection: close": it just closes
    afterwards). The next check-in, after a pause, still succeeds on a fresh connection."""
    def handler(conn, req):
        conn.send(reply(200, checkin_body(5)))
        time.sleep(0.05)
        return False  # close silently

    s = raw(handler)
    res, _ = run(s, "checkin", "sleep,ms=300", "checkin", "sleep,ms=300", "checkin", key=key)
    assert [x["err"] for x in steps(res, "checkin")] == ["ok"] * 3, res
    assert s.paths() == [AUTH_PATH] + [CHECKIN_PATH] * 3
    conns = s.conns_of(CHECKIN_PATH)
    assert len(set(conns)) == 3, conns  # really one per request


def test_stale_connection_is_retried(raw, key):
    """The keep-alive race: the server reads the next request on a kept-alive connection and
    closes it without a byte of answer (as a server whose idle timeout fired just then). The
    client must send the request again on a fresh connection: the check-in succeeds."""
    def handler(conn, req):
        if conn.no == 1 and req.path == CHECKIN_PATH and \
                len(conn.server.conns_of(CHECKIN_PATH)) == 2:
            return False  # the second check-in on the first connection: dropped unanswered
        conn.send(reply(200, checkin_body(6)))
        return True

    s = raw(handler)
    res, _ = run(s, "checkin", "sleep,ms=200", "checkin", key=key)
    assert [x["err"] for x in steps(res, "checkin")] == ["ok", "ok"], res
    assert s.conns_of(CHECKIN_PATH) == [1, 1, 2]  # sent, dropped, sent again elsewhere


def test_close_mid_body_then_resume(raw, key):
    """Content-Length 100000 but the connection closes after 40000 bytes: the download fails with
    "io" after delivering exactly those 40000 bytes, contiguous from 0. A second download from
    offset 40000 (the fake answers 206 with the right Content-Range) completes the file."""
    data = payload(100000)

    def handler(conn, req):
        rng = req.header("Range")
        if rng is None:
            conn.send(head(200, [("Content-Length", len(data))]) + data[:40000])
            time.sleep(0.05)
            return False
        assert rng == "bytes=40000-", rng
        conn.send(reply(206, data[40000:], [("Content-Range", f"bytes 40000-99999/{len(data)}")]))
        return True

    s = raw(handler)
    res, _ = run(s, "download,url=/dl/f", "download,url=/dl/f,offset=40000", key=key)
    d, g = steps(res, "download"), steps(res, "download_data")
    assert [x["err"] for x in d] == ["io", "ok"], d
    assert d[1]["http_status"] == 206
    assert g[0]["bytes"] == 40000 and g[0]["contiguous"] and g[0]["first_offset"] == 0
    assert g[0]["sha256"] == sha(data[:40000])
    assert g[1]["bytes"] == 60000 and g[1]["contiguous"] and g[1]["first_offset"] == 40000
    assert g[1]["sha256"] == sha(data[40000:])
    assert sha(data[:40000] + data[40000:]) == sha(data)  # the two parts are the whole file
    assert [r.header("Range") for r in s.requests if r.path == "/dl/f"] == [None, "bytes=40000-"]


# ---- malformed and hostile replies ----------------------------------------------------------------

MALFORMED = {
    # not a status line at all
    "garbage_status": b"HELLO\r\n\r\n",
    # a chunk size that is not hex
    "bad_chunk_size": head(200, [("Transfer-Encoding", "chunked")]) + b"5\r\n{\"act\r\nzz\r\n",
    # a chunk longer than its size says
    "chunk_overrun": head(200, [("Transfer-Encoding", "chunked")]) + b"2\r\n{\"action\"\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_checkin_reply(raw, key, case):
    """A check-in answered with garbage instead of a status line, a malformed chunk size, or a
    chunk that overruns its size: an error (libcurl: "io"), never ok, quickly (the fake keeps the
    connection open afterwards, so only the client's own judgement ends the request), no crash
    (the probe exits 0), and the client can check in again afterwards."""
    def handler(conn, req):
        if req.path == CHECKIN_PATH and len(conn.server.conns_of(CHECKIN_PATH)) == 1:
            conn.send(MALFORMED[case])
            conn.hold(15)
            return False
        conn.send(reply(200, checkin_body(3)))
        return True

    s = raw(handler)
    res, took = run(s, "checkin", "checkin", extra=["--timeout", "20"], key=key)
    c = steps(res, "checkin")
    assert c[0]["err"] != "ok" and c[0]["msg"], c
    assert c[0]["err"] == "io", c  # what libcurl gives; "format" would do as well
    assert c[1]["err"] == "ok" and c[1]["poll_interval"] == 3, c
    assert took < 10, f"{took:.1f}s: the client waited for more instead of rejecting the reply"


def test_malformed_chunk_in_download(raw, key):
    """A chunked download whose third chunk size is not hex: "io" after exactly the bytes of the
    good chunks, contiguous."""
    data = payload(3000)

    def handler(conn, req):
        conn.send(head(200, [("Transfer-Encoding", "chunked")]) +
                  b"3e8\r\n" + data[:1000] + b"\r\n" + b"3e8\r\n" + data[1000:2000] + b"\r\n" +
                  b"-3e8\r\n" + data[2000:] + b"\r\n0\r\n\r\n")
        conn.hold(15)
        return False

    s = raw(handler)
    res, took = run(s, "download,url=/dl/bad", extra=["--stall", "20"], key=key)
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "io" and d["msg"], d
    assert g["bytes"] == 2000 and g["contiguous"] and g["sha256"] == sha(data[:2000]), g
    assert took < 10


@pytest.mark.parametrize("shape", ["many_headers", "one_long_header"])
def test_oversized_reply_head(raw, key, shape):
    """A check-in reply whose head exceeds 300 KiB (thousands of headers, or one huge line): not
    ok, and in bounded time (the client stops reading instead of buffering without end)."""
    if shape == "many_headers":
        pad = [(f"X-Pad-{i:05d}", "a" * 90) for i in range(3500)]  # ~360 KiB
    else:
        pad = [("X-Pad", "a" * (310 * 1024))]
    big = head(200, pad + [("Content-Length", len(checkin_body()))]) + checkin_body()
    assert len(big) > 300 * 1024

    def handler(conn, req):
        conn.send(big)
        conn.hold(15)
        return False

    s = raw(handler)
    res, took = run(s, "checkin", extra=["--timeout", "30"], key=key)
    c = one(res, "checkin")
    assert c["err"] != "ok" and c["msg"], c
    assert took < 15, f"{took:.1f}s"
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH]


def test_duplicate_content_length(raw, key):
    """Two different Content-Length headers in one reply (RFC 9112 §6.3: unrecoverable framing
    error; request smuggling territory): not ok. The body is built so that either length alone
    gives a valid check-in reply: only rejecting the reply makes the test pass."""
    body = checkin_body(4)
    assert body.endswith(b"\n")

    def handler(conn, req):
        if req.path == CHECKIN_PATH:
            # body then 4 spaces: Content-Length len(body) or len(body)+4 both decode
            conn.send(head(200, [("Content-Length", len(body)), ("Content-Length", len(body) + 4)])
                      + body + b"    ")
            conn.hold(3)
            return False
        return True

    s = raw(handler)
    res, _ = run(s, "checkin", extra=["--timeout", "10"], key=key)
    c = one(res, "checkin")
    assert c["err"] != "ok", c


def test_100_continue_before_reply(raw, key):
    """An interim "HTTP/1.1 100 Continue" (unasked for) before the real 200 reply to a check-in
    is skipped: ok, and the real reply's body is the one decoded."""
    def handler(conn, req):
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.05)
        conn.send(reply(200, checkin_body(8)))
        return True

    s = raw(handler)
    res, _ = run(s, "checkin", "checkin", key=key)
    c = steps(res, "checkin")
    assert [x["err"] for x in c] == ["ok", "ok"], c
    assert [x["poll_interval"] for x in c] == [8, 8]
    assert s.accepted == 1


def test_http_1_0_reply(raw, key):
    """HTTP/1.0 replies to check-ins (no keep-alive: the server closes after each): one with
    Content-Length, one ended by the close. Both ok; each check-in had its own connection."""
    def handler(conn, req):
        body = checkin_body(13)
        if len(conn.server.conns_of(CHECKIN_PATH)) == 1:
            conn.send(reply(200, body, version="HTTP/1.0"))
        else:
            conn.send(head(200, version="HTTP/1.0") + body)
        return False

    s = raw(handler)
    res, _ = run(s, "checkin", "checkin", key=key)
    c = steps(res, "checkin")
    assert [x["err"] for x in c] == ["ok", "ok"], c
    assert [x["poll_interval"] for x in c] == [13, 13]
    conns = s.conns_of(CHECKIN_PATH)
    assert len(conns) == 2 and conns[0] != conns[1]


def test_one_byte_writes(raw, key):
    """Every byte of every reply (auth included: status line, headers, body) written on its own,
    with tiny pauses: the auth, a check-in and a download all come through, exact bytes."""
    data = payload(2500)

    def handler(conn, req):
        if req.path == AUTH_PATH:
            conn.trickle(reply(200, AUTH_OK, [("Content-Type", "application/json")]))
        elif req.path == CHECKIN_PATH:
            conn.trickle(reply(200, checkin_body(17)))
        else:
            conn.trickle(reply(200, data, [("ETag", '"abc"')]))
        return True

    s = raw(handler, raw_auth=True)
    res, _ = run(s, "checkin", "download,url=/dl/slow", key=key)
    c = one(res, "checkin")
    assert c["err"] == "ok" and c["poll_interval"] == 17, c
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok", d
    assert g["bytes"] == len(data) and g["contiguous"] and g["sha256"] == sha(data)
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH, "/dl/slow"]
    assert s.accepted == 1


# ---- timeouts and pacing --------------------------------------------------------------------------

@pytest.mark.parametrize("sent", [0, 1000])
def test_stall_timeout(raw, key, sent):
    """A download's head (and `sent` body bytes of the 100000 it announces), then nothing while
    the connection stays open: with --stall 2 the download fails with "io" after exactly those
    bytes, in more than 1.5 s and less than 15 s. (libcurl judges the speed over a moving window
    of about 5 s, so after 1000 bytes it gives up after about 8 s rather than 2.)"""
    data = payload(sent)

    def handler(conn, req):
        conn.send(head(200, [("Content-Length", 100000)]) + data)
        conn.hold(20)
        return False

    s = raw(handler)
    res, took = run(s, "download,url=/dl/stall", extra=["--stall", "2"], key=key)
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "io" and d["msg"], d
    assert g["bytes"] == sent and g["sha256"] == sha(data), g
    assert 1.5 < took < 15, f"{took:.1f}s"
    assert s.paths() == [AUTH_PATH, "/dl/stall"]


def test_request_timeout(raw, key):
    """A check-in that is never answered (the connection stays open): with --timeout 2 it fails
    with "io", in more than 1.5 s and less than 15 s."""
    def handler(conn, req):
        conn.hold(20)
        return False

    s = raw(handler)
    res, took = run(s, "checkin", extra=["--timeout", "2"], key=key)
    c = one(res, "checkin")
    assert c["err"] == "io" and c["http_status"] == 0 and c["msg"], c
    assert 1.5 < took < 15, f"{took:.1f}s"
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH]


@pytest.mark.parametrize("size,rate", [(300000, 100000), (6000000, 2000000)])
def test_rate_cap(raw, key, size, rate):
    """A download capped at `rate` bytes/s takes at least 1.5 s (3 s at the cap; a few ms without
    it) and delivers the exact bytes: 300,000 bytes, which the socket buffers hold at once (libcurl
    7.88 read them in ~10 ms), and 6,000,000, which they do not."""
    data = payload(size)

    def handler(conn, req):
        conn.send(reply(200, data))
        return True

    s = raw(handler)
    res, took = run(s, f"download,url=/dl/rate,rate={rate}", key=key)
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok", d
    assert g["bytes"] == len(data) and g["contiguous"] and g["sha256"] == sha(data)
    assert took >= 1.5, f"{took:.2f}s: the rate cap did not hold"


def test_pause_and_resume(raw, key):
    """A 400,000-byte download paused for 500 ms after 100,000 bytes and then resumed: ok, exact
    bytes, contiguous, one request (the pause did not restart the transfer)."""
    data = payload(400000)

    def handler(conn, req):
        conn.send(reply(200, data))
        return True

    s = raw(handler)
    res, _ = run(s, "download,url=/dl/p,pause_at=100000,pause_ms=500", key=key)
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok", d
    assert g["resumed"] and g["paused_ms"] >= 500, g
    assert g["bytes"] == len(data) and g["contiguous"] and g["sha256"] == sha(data)
    assert g["bytes_while_paused"] <= 64 * 1024, g
    assert s.paths() == [AUTH_PATH, "/dl/p"]


# ---- TLS ------------------------------------------------------------------------------------------

def openssl(*args):
    subprocess.run(["openssl"] + [str(a) for a in args], check=True, capture_output=True,
                   timeout=30)


def make_cert(dir_, name, san, cn=None):
    """A self-signed P-256 certificate (it is its own CA) with the given subjectAltName."""
    k, c = dir_ / f"{name}.key", dir_ / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", k, "-out", c, "-days", "2", "-subj", f"/CN={cn or name}",
            "-addext", f"subjectAltName={san}")
    return k, c


def server_ctx(key_file, cert_file, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
    return ctx


def checkin_handler(conn, req):
    conn.send(reply(200, checkin_body(30)))
    return True


def tls_run(server, key, *extra_and_steps):
    t0 = time.monotonic()
    res = probe("net", "--server", server.url, "--key", key, "--identity", "probe=1",
                "--connect-timeout", "5", "--timeout", "10", *extra_and_steps, timeout=60)
    return res, time.monotonic() - t0


@pytest.fixture
def certs(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make test certificates")
    d = tmp_path / "certs"
    d.mkdir()
    return d


def test_tls_hostname_is_checked(raw, key, certs):
    """A certificate the CA file trusts but whose only name is DNS:otter.test, for a server at
    https://127.0.0.1: "io", with a message, and no request reaches the server. The same setup
    with a certificate for IP:127.0.0.1 checks in fine."""
    k, c = make_cert(certs, "wrong", "DNS:otter.test", cn="otter.test")
    s = raw(checkin_handler, tls=server_ctx(k, c))
    res, _ = tls_run(s, key, "--ca", c, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and ch["http_status"] == 0, ch
    why = ch["msg"].removeprefix(f"server {s.url}: ")
    assert why and any(w in why.lower() for w in ("certificate", "host", "name", "match")), ch
    assert s.paths() == []

    k2, c2 = make_cert(certs, "right", "IP:127.0.0.1", cn="otter.test")
    s2 = raw(checkin_handler, tls=server_ctx(k2, c2))
    res, _ = tls_run(s2, key, "--ca", c2, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "ok" and ch["poll_interval"] == 30, ch
    assert s2.paths() == [AUTH_PATH, CHECKIN_PATH]


def pin_of(pub_pem):
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pub_pem), "-outform", "DER"],
                         check=True, capture_output=True, timeout=30).stdout
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_tls_pinned_key_file_and_list(raw, key, certs):
    """The pinned key in curl's CURLOPT_PINNEDPUBLICKEY forms: a PEM public key FILE (the
    server's: ok; another key's: "io", nothing reaches the server), and a "sha256//A;sha256//B"
    list whose second entry is the server's (ok) or where neither is (io)."""
    k, c = make_cert(certs, "srv", "IP:127.0.0.1")
    other_k, _ = make_cert(certs, "other", "IP:127.0.0.1")
    pub, other_pub = certs / "srv.pub.pem", certs / "other.pub.pem"
    openssl("pkey", "-in", k, "-pubout", "-out", pub)
    openssl("pkey", "-in", other_k, "-pubout", "-out", other_pub)
    good, bad = pin_of(pub), pin_of(other_pub)
    assert good != bad

    s = raw(checkin_handler, tls=server_ctx(k, c))
    res, _ = tls_run(s, key, "--ca", c, "--pin", pub, "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    n = len(s.paths())
    assert n == 2

    res, _ = tls_run(s, key, "--ca", c, "--pin", other_pub, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and ch["msg"], ch
    assert len(s.paths()) == n  # refused before any request was sent

    res, _ = tls_run(s, key, "--ca", c, "--pin", f"{bad};{good}", "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    assert len(s.paths()) == n + 2

    res, _ = tls_run(s, key, "--ca", c, "--pin", f"{bad};{bad}", "checkin")
    assert one(res, "checkin")["err"] == "io", res
    assert len(s.paths()) == n + 2


def test_tls_client_certificate(raw, key, certs):
    """A server that requires a client certificate signed by a test CA: without one (or with a
    self-signed one the server does not trust) the check-in fails; with one it is ok and the
    server saw the client certificate's subject."""
    sk, sc = make_cert(certs, "srv", "IP:127.0.0.1")
    ca_k, ca_c = make_cert(certs, "ca", "DNS:otter-test-ca", cn="Otter Test CA")
    ck, csr, cc = certs / "client.key", certs / "client.csr", certs / "client.pem"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ck, "-out", csr, "-subj", "/CN=otter-device-42")
    openssl("x509", "-req", "-in", csr, "-CA", ca_c, "-CAkey", ca_k, "-CAcreateserial",
            "-out", cc, "-days", "2")
    rogue_k, rogue_c = make_cert(certs, "rogue", "DNS:rogue", cn="otter-device-42")

    s = raw(checkin_handler, tls=server_ctx(sk, sc, client_ca=ca_c))
    res, _ = tls_run(s, key, "--ca", sc, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] != "ok" and ch["msg"], ch
    assert s.paths() == []

    res, _ = tls_run(s, key, "--ca", sc, "--client-cert", rogue_c, "--client-key", rogue_k,
                     "checkin")
    ch = one(res, "checkin")
    assert ch["err"] != "ok", ch
    assert s.paths() == []
    # the fake's side of the failed handshakes (its thread may record it after the probe is gone)
    assert wait_until(lambda: len(s.tls_errors) >= 2), s.tls_errors

    res, _ = tls_run(s, key, "--ca", sc, "--client-cert", cc, "--client-key", ck, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "ok" and ch["poll_interval"] == 30, ch
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH]
    assert ((("commonName", "otter-device-42"),),) in s.peer_subjects, s.peer_subjects
