"""otter-agent's event loop (src/agent/loop.c) and device API client (src/agent/net.c), driven by
tests/agent/net_probe against the real otterd: enrollment, check-in, reports, inventory, pending
and rejected devices, re-authentication after a 401, failover between servers, downloads with
ranges, pause/resume and cancellation, re-entrant callbacks.

Where otterd cannot misbehave on purpose (a 5xx, an oversized reply, a wrong Content-Range, a
server that ignores Range), a small fake server in this file (Python's http.server on loopback)
stands in: each such test says so."""
import base64
import hashlib
import http.client
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from fleet_util import Release
from otterd_util import BUILD, TIMEOUT

PROBE = BUILD / "tests" / "net_probe"


@pytest.fixture(autouse=True)
def _probe_built():
    if not PROBE.exists():
        pytest.fail(f"{PROBE} not found: tests/meson.build must build tests/agent/net_probe.c")


# ---- running the probe --------------------------------------------------------------------------

def lines_of(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def probe(*args, timeout=90):
    r = subprocess.run([str(PROBE)] + [str(a) for a in args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    assert r.returncode == 0, f"net_probe {args} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return lines_of(r.stdout)


def net_args(servers, enroll=None, key=None, extra=()):
    args = ["net", "--allow-http", "--identity", "probe=1"]
    for s in servers:
        args += ["--server", s]
    if enroll:
        args += ["--enroll", enroll]
    if key:
        args += ["--key", key]
    return args + list(extra)


def steps(results, name):
    return [r for r in results if r.get("step") == name]


def one(results, name):
    found = steps(results, name)
    assert len(found) == 1, f"{name}: {results}"
    return found[0]


class Session:
    """A probe that waits on stdin between steps ('stdin' steps), so the test can act meanwhile."""

    def __init__(self, args):
        self.proc = subprocess.Popen([str(PROBE)] + [str(a) for a in args], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.results = []

    def until_waiting(self):
        """Reads result lines until the probe waits for stdin; returns the lines read."""
        got = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"net_probe ended early: {self.results + got}"
            r = json.loads(line)
            if r.get("step") == "waiting_for_stdin":
                self.results += got
                return got
            got.append(r)

    def go_on(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self):
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        assert self.proc.wait(TIMEOUT) == 0
        rest = lines_of(out)
        self.results += rest
        return rest


def url_of(server):
    return f"http://127.0.0.1:{server.port}"


def dead_url():
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- otterd fixtures ---------------------------------------------------------------------------

@pytest.fixture
def fast_server(make_server, tmp_path):
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 7s\npoll_jitter = 2s\nlast_seen_flush = 100ms\n")
    s = make_server(args=["--config", conf])
    assert s.token
    return s


def admin(server, method, path, body=None):
    return server.request(method, path, body, token=server.token)


def enroll_token(server):
    return server.create_token(["devices:enroll"], name="factory")["token"]


def device_by_key(server, public_key):
    for d in admin(server, "GET", "/api/v1/devices").json()["devices"]:
        if d["public_key"] == public_key:
            return d
    raise AssertionError(f"no device with key {public_key}")


class Dev:
    def __init__(self, id_):
        self.id = id_


def enrolled(server, tmp_path, name="dev"):
    """A probe key enrolled with an enrollment token; returns (key path, device id, token)."""
    key = tmp_path / f"{name}.key"
    token = enroll_token(server)
    res = probe(*net_args([url_of(server)], enroll=token, key=key), "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    return key, device_by_key(server, one(res, "key")["public_key"])["id"], token


@pytest.fixture
def deployed(fast_server, tmp_path):
    """An enrolled probe device with a deployment of a 600 KiB artifact."""
    key, dev_id, token = enrolled(fast_server, tmp_path)
    rel = Release(fast_server, tmp_path / "release")
    path = rel.artifact(size=600 * 1024)
    r = rel.upload(path)
    assert r.status == 201, r
    art = r.json()
    dep = rel.deploy(art["id"], devices=[Dev(dev_id)])
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == art["sha256"]
    return {"server": fast_server, "key": key, "token": token, "dep": dep["id"], "art": art,
            "data": data, "url": f"/api/device/v1/deployments/{dep['id']}/artifact"}


def dl_probe(d, *step_list, extra=()):
    return probe(*net_args([url_of(d["server"])], key=d["key"], extra=extra), *step_list)


# ---- the loop -------------------------------------------------------------------------------------

def test_loop_self_checks():
    r = subprocess.run([str(PROBE), "loop"], capture_output=True, text=True, timeout=TIMEOUT)
    checks = lines_of(r.stdout)
    assert checks and all(c["ok"] for c in checks), checks
    assert r.returncode == 0
    names = {c["check"] for c in checks}
    assert {"timer_order", "timer_reentrant", "no_starvation", "fd_reentrant", "signal",
            "stop_before_run"} <= names


# ---- authentication and the JSON requests ---------------------------------------------------------

def test_enroll_checkin_report_inventory(fast_server, tmp_path):
    key = tmp_path / "dev.key"
    res = probe(*net_args([url_of(fast_server)], enroll=enroll_token(fast_server), key=key),
                "checkin", "report,dep=999,status=downloading,progress=5",
                "inventory,os=Debian 12,free_kb=1234", "inventory,free_kb=", "burst,n=8")
    c = one(res, "checkin")
    assert c["err"] == "ok" and c["http_status"] == 200 and c["action"] == "none"
    assert c["poll_interval"] == 7
    rep = one(res, "report")
    assert rep["err"] == "noent" and rep["http_status"] == 404
    assert rep["msg"].startswith(f"server {url_of(fast_server)}: HTTP 404: "), rep
    inv = steps(res, "inventory")
    assert [i["err"] for i in inv] == ["ok", "ok"] and inv[0]["http_status"] == 204
    burst = one(res, "burst")
    assert burst["ok"] == 8 and burst["failed"] == 0, burst
    dev = device_by_key(fast_server, one(res, "key")["public_key"])
    assert dev["status"] == "accepted" and dev["identity"] == {"probe": "1"}
    assert admin(fast_server, "GET", f"/api/v1/devices/{dev['id']}").json()["attributes"] == \
        {"os": "Debian 12"}


def test_pending_device_gets_perm_with_retry_after(fast_server, tmp_path):
    key = tmp_path / "dev.key"
    res = probe(*net_args([url_of(fast_server)], key=key), "checkin", "burst,n=3")
    c = one(res, "checkin")
    assert c["err"] == "perm" and c["http_status"] == 202 and c["retry_after"] == 7, c
    assert "pending" in c["msg"]
    assert one(res, "burst")["failed"] == 3
    dev = device_by_key(fast_server, one(res, "key")["public_key"])
    assert admin(fast_server, "POST", f"/api/v1/devices/{dev['id']}/accept").status == 200
    res = probe(*net_args([url_of(fast_server)], key=key), "checkin")
    assert one(res, "checkin")["err"] == "ok"


def test_rejected_device_after_401_and_accepted_again(fast_server, tmp_path):
    """A 401 makes the client authenticate again once: a rejected device then gets the auth's
    403, and once accepted again the next request authenticates and succeeds."""
    key, dev_id, token = enrolled(fast_server, tmp_path)
    s = Session(net_args([url_of(fast_server)], key=key) + ["checkin", "stdin", "checkin",
                                                              "stdin", "checkin"])
    assert one(s.until_waiting(), "checkin")["err"] == "ok"
    assert admin(fast_server, "POST", f"/api/v1/devices/{dev_id}/reject").status == 200
    s.go_on()
    c = one(s.until_waiting(), "checkin")
    assert c["err"] == "perm" and c["http_status"] == 403 and "rejected" in c["msg"], c
    assert c["retry_after"] == 0
    assert admin(fast_server, "POST", f"/api/v1/devices/{dev_id}/accept").status == 200
    s.go_on()
    assert one(s.finish(), "checkin")["err"] == "ok"


def test_plain_http_is_refused_unless_allowed(fast_server):
    res = probe("net", "--server", url_of(fast_server), "checkin")
    new = one(res, "new")
    assert new["err"] == "config" and "plain http is refused" in new["msg"]
    assert not steps(res, "checkin")


# ---- failover -----------------------------------------------------------------------------------

def test_failover_from_a_dead_server(fast_server, tmp_path):
    dead = dead_url()
    res = probe(*net_args([dead, url_of(fast_server)], enroll=enroll_token(fast_server),
                          key=tmp_path / "k"), "checkin", "report,dep=5,status=installing",
                "checkin")
    assert [c["err"] for c in steps(res, "checkin")] == ["ok", "ok"]
    assert one(res, "report")["err"] == "noent"


def test_every_server_dead(tmp_path):
    d1, d2 = dead_url(), dead_url()
    res = probe(*net_args([d1, d2], key=tmp_path / "k", extra=["--connect-timeout", "2"]),
                "checkin")
    c = one(res, "checkin")
    assert c["err"] == "io" and c["http_status"] == 0
    assert c["msg"].startswith(f"server {d1}: ") and f"; server {d2}: " in c["msg"], c


def test_401_on_another_server_reauthenticates_there(make_server, tmp_path):
    """Server A goes away mid-run; the request fails over to B, whose store does not know A's
    token (401): the client authenticates with B (where the device is preauthorized) and the
    request succeeds."""
    a = make_server(name="a", data_dir=tmp_path / "a")
    b = make_server(name="b", data_dir=tmp_path / "b")
    key = tmp_path / "dev.key"
    s = Session(net_args([url_of(a), url_of(b)], enroll=enroll_token(a), key=key) +
                ["checkin", "stdin", "checkin", "inventory,where=b"])
    first = s.until_waiting()
    assert one(first, "checkin")["err"] == "ok"
    pub = one(first, "key")["public_key"]
    r = admin(b, "POST", "/api/v1/devices", {"identity": {"probe": "1"}, "public_key": pub,
                                              "device_type": "gw-1"})
    assert r.status == 201, r
    a.stop()
    s.go_on()
    rest = s.finish()
    assert one(rest, "checkin")["err"] == "ok", rest
    assert one(rest, "inventory")["err"] == "ok", rest
    dev = device_by_key(b, pub)
    assert dev["status"] == "accepted"
    assert admin(b, "GET", f"/api/v1/devices/{dev['id']}").json()["attributes"] == {"where": "b"}


# ---- fake servers (otterd cannot misbehave on purpose) ---------------------------------------------

AUTH_OK = json.dumps({"device_id": 1, "expires_in": 3600, "status": "accepted",
                      "token": "otd_fake"}).encode() + b"\n"


class Fake:
    """A loopback HTTP/1.1 server: answer(method, path, headers) -> (status, headers, body).
    Auth requests get an accepted token unless answer handles them."""

    def __init__(self, answer):
        self.seen = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                fake.seen.append((method, self.path, dict(self.headers)))
                got = answer(method, self.path, self.headers)
                if got is None and self.path.endswith("/auth"):
                    got = (200, {}, AUTH_OK)
                status, headers, body = got or (500, {}, b"")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.handle_one("GET")

            def do_POST(self):
                self.handle_one("POST")

            def do_PATCH(self):
                self.handle_one("PATCH")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    made = []

    def make(answer):
        f = Fake(answer)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def error_body(msg):
    return json.dumps({"error": {"code": "unavailable", "message": msg}}).encode()


def test_5xx_moves_to_the_next_server(fast_server, fake, tmp_path):
    """Fake server: every request gets 503 with an error body."""
    f = fake(lambda m, p, h: (503, {"Content-Type": "application/json"},
                              error_body("registry down\x1b[31m")))
    res = probe(*net_args([f.url, url_of(fast_server)], enroll=enroll_token(fast_server),
                          key=tmp_path / "k"), "checkin")
    assert one(res, "checkin")["err"] == "ok"
    res = probe(*net_args([f.url], key=tmp_path / "k2"), "checkin")
    c = one(res, "checkin")
    assert c["err"] == "io" and c["http_status"] == 503
    # the server's message, with its control characters defused
    assert c["msg"] == f"server {f.url}: HTTP 503: registry down?[31m", c


def test_replies_are_bounded(fake, tmp_path):
    """Fake server: a 2xx check-in reply over OT_WIRE_CHECKIN_RESP_MAX and a 2xx report reply
    over OT_WIRE_BODY_MAX; also a check-in reply that is not valid."""
    def answer(m, p, h):
        if p.endswith("/checkin"):
            return 200, {}, b"{" + b" " * (3 * 1024 * 1024) + b"}"
        if p.endswith("/status"):
            return 200, {}, b"x" * (300 * 1024)
        if p.endswith("/inventory"):
            return 204, {}, b""
        return None

    f = fake(answer)
    res = probe(*net_args([f.url], key=tmp_path / "k"), "checkin",
                "report,dep=1,status=success", "inventory,a=b")
    assert one(res, "checkin")["err"] == "limit"
    assert one(res, "report")["err"] == "limit"
    assert one(res, "inventory")["err"] == "ok"
    auth = [s for s in f.seen if s[1] == "/api/device/v1/auth"]
    assert len(auth) == 1  # one token for all three
    sig = base64.b64decode(auth[0][2]["X-Otter-Signature"])
    assert len(sig) == 64
    inv = [s for s in f.seen if s[1] == "/api/device/v1/inventory"][0]
    assert inv[0] == "PATCH" and inv[2]["Authorization"] == "Bearer otd_fake"


def test_bad_checkin_reply_is_format(fake, tmp_path):
    """Fake server: a check-in reply that is JSON but not a check-in response."""
    f = fake(lambda m, p, h: (200, {}, b'{"action":"dance"}\n') if p.endswith("/checkin")
             else None)
    c = one(probe(*net_args([f.url], key=tmp_path / "k"), "checkin"), "checkin")
    assert c["err"] == "format" and "bad check-in reply" in c["msg"], c


def test_empty_replies(fake, tmp_path):
    """Fake server: empty 200 replies to the check-in, and to the auth of a second client."""
    f = fake(lambda m, p, h: (200, {}, b"") if p.endswith("/checkin") else None)
    c = one(probe(*net_args([f.url], key=tmp_path / "k"), "checkin"), "checkin")
    assert c["err"] == "format", c
    g = fake(lambda m, p, h: (200, {}, b""))
    c = one(probe(*net_args([g.url], key=tmp_path / "k"), "checkin"), "checkin")
    assert c["err"] == "format" and "bad auth reply" in c["msg"], c


def test_401_reauthenticates_only_once(fake, tmp_path):
    """Fake server: every check-in gets 401 although every auth succeeds."""
    f = fake(lambda m, p, h: (401, {}, error_body("token?")) if p.endswith("/checkin") else None)
    c = one(probe(*net_args([f.url], key=tmp_path / "k"), "checkin"), "checkin")
    assert c["err"] == "perm" and c["http_status"] == 401 and "HTTP 401: token?" in c["msg"], c
    paths = [p for _, p, _ in f.seen]
    assert paths == ["/api/device/v1/auth", "/api/device/v1/checkin"] * 2, paths


def test_download_range_answers_are_checked(fake, tmp_path):
    """Fake server: a 206 whose Content-Range starts elsewhere, a 206 without Content-Range, and a
    200 (whole file) to a range request without If-Range."""
    body = b"y" * 1000

    def answer(m, p, h):
        if p == "/wrong":
            return 206, {"Content-Range": "bytes 0-999/5000"}, body
        if p == "/none":
            return 206, {}, body
        if p == "/whole":
            return 200, {}, body
        return None

    f = fake(answer)
    res = probe(*net_args([f.url], key=tmp_path / "k"), "download,url=/wrong,offset=10",
                "download,url=/none,offset=10", "download,url=/whole,offset=10")
    dl = steps(res, "download")
    data = steps(res, "download_data")
    assert [d["err"] for d in dl] == ["format", "format", "invalid"], dl
    assert "Content-Range" in dl[0]["msg"] and "whole file" in dl[2]["msg"]
    assert all(d["bytes"] == 0 for d in data)  # nothing reached the data callback


# ---- downloads from otterd ----------------------------------------------------------------------

def test_checkin_offers_the_deployment(deployed):
    c = one(dl_probe(deployed, "checkin"), "checkin")
    assert c["action"] == "install" and c["deployment_id"] == deployed["dep"]
    assert c["artifact_sha256"] == deployed["art"]["sha256"] and c["download"] == [deployed["url"]]
    assert c["artifact_size"] == len(deployed["data"])


def test_download_whole_and_ranges(deployed):
    data, url, sha = deployed["data"], deployed["url"], deployed["art"]["sha256"]
    size = len(data)
    abs_url = url_of(deployed["server"]) + url
    res = dl_probe(deployed, f"download,url={url}",
                   f"download,url={url},offset=1000,etag={sha}",
                   f"download,url={url},offset=4096",
                   f"download,url={url},offset=1000,etag=\"{'0' * 64}\"",
                   f"download,url={url},offset={size}",
                   f"download,url={abs_url},offset=7")
    dl, got = steps(res, "download"), steps(res, "download_data")
    assert [d["err"] for d in dl] == ["ok", "ok", "ok", "invalid", "range", "ok"], dl
    assert [d["http_status"] for d in dl] == [200, 206, 206, 200, 416, 206]
    for g, start in [(got[0], 0), (got[1], 1000), (got[2], 4096), (got[5], 7)]:
        assert g["contiguous"] and g["first_offset"] == start
        assert g["sha256"] == hashlib.sha256(data[start:]).hexdigest()
    assert got[3]["bytes"] == 0 and "changed" in dl[3]["msg"]
    assert got[4]["bytes"] == 0


def test_download_fails_over_before_data(deployed):
    dead = dead_url()
    res = probe(*net_args([dead, url_of(deployed["server"])], key=deployed["key"]),
                f"download,url={deployed['url']},offset=5")
    assert one(res, "download")["err"] == "ok"
    assert one(res, "download_data")["sha256"] == hashlib.sha256(deployed["data"][5:]).hexdigest()


def test_token_stays_with_the_servers(deployed):
    """An absolute URL elsewhere (here: the same otterd under another host name) gets no token."""
    other = f"http://localhost:{deployed['server'].port}{deployed['url']}"
    d = one(dl_probe(deployed, f"download,url={other}"), "download")
    assert d["err"] == "perm" and d["http_status"] == 401, d


def test_download_pause_and_resume(deployed):
    """Paused for 2 s with a 1 s stall timeout: a paused transfer does not stall out."""
    data, url = deployed["data"], deployed["url"]
    res = dl_probe(deployed, f"download,url={url},rate=400000,pause_at=100000,pause_ms=2000",
                   extra=["--stall", "1"])
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "ok", d
    assert g["resumed"] and g["paused_ms"] >= 2000 and g["contiguous"]
    assert g["sha256"] == hashlib.sha256(data).hexdigest()
    assert g["bytes_while_paused"] <= 64 * 1024, g


def test_download_cancel_from_the_data_callback(deployed):
    url = deployed["url"]
    res = dl_probe(deployed, f"download,url={url},rate=200000,cancel_at=50000", "checkin",
                   f"download,url={url},offset=500000")
    g = steps(res, "download_data")
    assert g[0]["cancelled"] and not g[0]["done_after_cancel"] and g[0]["bytes"] < 200000
    assert len(steps(res, "download")) == 1  # only the second one's result
    assert one(res, "checkin")["err"] == "ok"
    assert g[1]["sha256"] == hashlib.sha256(deployed["data"][500000:]).hexdigest()


def test_requests_from_inside_the_data_callback(deployed):
    """A check-in started and the whole client freed from inside the data callback."""
    url, data = deployed["url"], deployed["data"]
    res = dl_probe(deployed, f"download,url={url},rate=400000,checkin_at=100000",
                   f"download,url={url},rate=200000,free_at=30000", "checkin")
    assert one(res, "checkin_during_download")["action"] == "install"
    dl = steps(res, "download")
    g = steps(res, "download_data")
    assert len(dl) == 1 and dl[0]["err"] == "ok"
    assert g[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert g[1]["freed"] and not g[1]["done_after_cancel"]
    assert one(res, "checkin")["err"] == "ok"  # a new client after the freed one


def test_report_statuses(deployed):
    dep = deployed["dep"]
    res = dl_probe(deployed, f"report,dep={dep},status=downloading,progress=50",
                   f"report,dep={dep},status=success,message=booted",
                   f"report,dep={dep},status=success", f"report,dep={dep},status=failure",
                   f"download,url={deployed['url']}")
    rep = steps(res, "report")
    assert [(r["err"], r["http_status"]) for r in rep] == \
        [("ok", 204), ("ok", 204), ("ok", 204), ("exists", 409)], rep
    assert "success" in rep[3]["msg"]
    assert one(res, "download")["err"] == "noent"


# ---- TLS ----------------------------------------------------------------------------------------

@pytest.fixture
def tls_server(make_server, tmp_path):
    """otterd over HTTPS with a self-signed certificate for 127.0.0.1 (as in test_server.py), an
    enrollment token, and the certificate's public key pin (curl's sha256// form)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=TIMEOUT)
    conf = tmp_path / "otterd.conf"
    conf.write_text(f"tls_cert = {cert}\ntls_key = {key}\n")
    s = make_server(args=["--config", conf])
    assert s.scheme == "https"
    ctx = ssl.create_default_context(cafile=str(cert))
    c = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=TIMEOUT)
    c.request("POST", "/api/v1/tokens", json.dumps({"name": "f", "scopes": ["devices:enroll"]}),
              {"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 201
    token = json.loads(r.read())["token"]
    c.close()
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=TIMEOUT).stdout
    pin = "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()
    return {"url": f"https://127.0.0.1:{s.port}", "ca": cert, "token": token, "pin": pin}


def tls_probe(t, tmp_path, *extra_and_steps):
    return probe("net", "--server", t["url"], "--enroll", t["token"], "--key", tmp_path / "k",
                 *extra_and_steps)


def test_https_with_ca_file_and_pin(tls_server, tmp_path):
    t = tls_server
    res = tls_probe(t, tmp_path, "--ca", t["ca"], "checkin", "download,url=http://127.0.0.1:1/x")
    assert one(res, "checkin")["err"] == "ok"
    d, g = one(res, "download"), one(res, "download_data")
    assert d["err"] == "perm" and "plain http" in d["msg"] and not g["started"], d
    res = tls_probe(t, tmp_path, "--ca", t["ca"], "--pin", t["pin"], "checkin")
    assert one(res, "checkin")["err"] == "ok"
    wrong = "sha256//" + base64.b64encode(b"\0" * 32).decode()
    c = one(tls_probe(t, tmp_path, "--ca", t["ca"], "--pin", wrong, "checkin"), "checkin")
    assert c["err"] == "io" and c["msg"].startswith(f"server {t['url']}: "), c
    # without the CA file the system's bundle does not know this certificate
    c = one(tls_probe(t, tmp_path, "checkin"), "checkin")
    assert c["err"] == "io" and "certificate" in c["msg"].lower(), c
