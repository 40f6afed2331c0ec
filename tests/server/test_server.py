"""otterd as a program: first start and the admin token, flags and the configuration file, exit
statuses, signals, HTTPS."""
import http.client
import json
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

from otterd_util import (EXIT_FAILURE, EXIT_USAGE, OTTERD, TIMEOUT, Otterd, error_line,
                         read_response, run)


def write(path, text):
    path.write_text(text)
    return path


def busy_port():
    """A listening socket on 127.0.0.1 and its port (the caller closes it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


# ---- first start ----

def test_first_start_prints_the_admin_token_once(make_server, tmp_path):
    first = make_server()
    assert first.token, first.stdout
    assert first.stdout.startswith(
        "otterd: first start: admin API token (shown only once, store it now):\n"
        f"  {first.token}\notterd: listening on http://127.0.0.1:{first.port}\n"), first.stdout
    assert first.request("GET", "/api/v1/tokens", token=first.token).status == 200
    first.stop()
    assert first.token not in first.log(), "the admin token was logged"

    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "blobs").is_dir()

    second = make_server(data_dir=data)
    assert second.token is None
    assert "admin API token" not in second.stdout
    assert second.stdout == f"otterd: listening on http://127.0.0.1:{second.port}\n"
    assert second.request("GET", "/api/v1/tokens", token=first.token).status == 200


def test_data_dir_parents_must_exist(tmp_path):
    r = run("--data", tmp_path / "missing" / "data", "--listen", "127.0.0.1:0")
    line = error_line(r, EXIT_FAILURE)
    assert "missing/data" in line and "No such file" in line, line


# ---- command line ----

def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: otterd"), r
    for key in ["listen", "data_dir", "database", "threads", "connection_limit",
                "connection_timeout", "header_limit", "tls_cert", "tls_key", "log_level"]:
        assert f"\n  {key} " in r.stdout, key
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("otterd "), r


@pytest.mark.parametrize("args, pattern", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--listen"], "needs an argument"),
    (["extra"], "unexpected argument 'extra'"),
    (["--listen", "nowhere"], "listen address 'nowhere'"),
    (["--listen", "127.0.0.1:99999"], "port must be 0..65535"),
    (["--listen", "::1:80"], "IPv6 in brackets"),
    (["--listen", "example.com:80"], "numeric IPv4"),
])
def test_usage_errors_exit_2_before_any_io(tmp_path, args, pattern):
    data = tmp_path / "data"
    r = run("--data", data, *args)
    assert pattern in error_line(r, EXIT_USAGE)
    assert not data.exists(), "otterd touched the disk before validating its configuration"


def test_routes_prints_the_route_table_as_json(tmp_path):
    r = run("--routes")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert isinstance(table, list) and table
    for route in table:
        assert route["method"] in {"GET", "POST", "PUT", "DELETE", "PATCH"}, route
        assert route["path"].startswith("/"), route
        assert route["auth"] in {"none", "token", "device", "ddi"}, route
        assert isinstance(route["summary"], str), route
    assert {"method": "GET", "path": "/api/v1/health", "auth": "none"}.items() <= \
        next(x for x in table if x["path"] == "/api/v1/health").items()


# ---- configuration file ----

def test_config_file_is_used_and_flags_override_it(make_server, tmp_path):
    sock, port = busy_port()
    with sock:
        data = tmp_path / "from-config"
        cfg = write(tmp_path / "otterd.conf",
                    "# otterd test configuration\n"
                    f"listen = 127.0.0.1:{port}   \n"  # taken: the --listen flag must win
                    f"data_dir = \"{data}\"\n"
                    "threads = 2\n"
                    "connection_limit = 64\n"
                    "connection_timeout = 2s\n"
                    "header_limit = 8K\n"
                    "log_level = debug\n")
        s = make_server(args=["--config", cfg], data_flag=False)
    assert (data / "otter.db").exists() and (data / "blobs").is_dir()
    s.assert_serving()
    # header_limit = 8K: a 10 KiB header is refused (the default 16K would take it).
    assert s.raw_get(b"/api/v1/health", b"X-Big: " + b"a" * 10240 + b"\r\n").status == 431
    # connection_timeout = 2s: an idle connection is closed by the server.
    with s.socket() as c:
        c.settimeout(TIMEOUT)
        started = time.monotonic()
        assert c.recv(1) == b""
        assert 1 <= time.monotonic() - started < 10


def test_database_key_sets_the_store(make_server, tmp_path):
    db = tmp_path / "elsewhere.db"
    cfg = write(tmp_path / "otterd.conf", f"database = sqlite:{db}\n")
    s = make_server(args=["--config", cfg])
    s.assert_serving()
    assert db.exists()
    assert not (tmp_path / "data" / "otter.db").exists()


@pytest.mark.parametrize("text, line, pattern", [
    ("listen = 127.0.0.1:0\nbogus = 1\n", 2, "unknown key 'bogus'"),
    ("header_limit = 1K\n", 1, "header_limit"),
    ("threads = many\n", 1, "not a number"),
    ("connection_timeout = 0s\n", 1, "connection_timeout"),
    ("listen = 127.0.0.1:0\nlisten = 127.0.0.1:1\n", 2, "duplicate key 'listen'"),
    ("[http]\nlisten = 127.0.0.1:0\n", 1, "unknown section"),
    ("just words\n", 1, ""),
])
def test_bad_config_exits_2_with_file_and_line(tmp_path, text, line, pattern):
    cfg = write(tmp_path / "bad.conf", text)
    data = tmp_path / "data"
    r = run("--config", cfg, "--data", data)
    msg = error_line(r, EXIT_USAGE)
    assert msg.startswith(f"otterd: {cfg}:{line}: "), msg
    assert pattern in msg, msg
    assert not data.exists()


@pytest.mark.parametrize("text, pattern", [
    ("listen = somewhere:80\n", "listen address 'somewhere:80'"),
    ("log_level = loud\n", "log_level 'loud'"),
    ("tls_cert = /x.pem\n", "tls_cert and tls_key must be set together"),
])
def test_bad_config_values_exit_2_before_any_io(tmp_path, text, pattern):
    cfg = write(tmp_path / "bad.conf", text)
    data = tmp_path / "data"
    assert pattern in error_line(run("--config", cfg, "--data", data), EXIT_USAGE)
    assert not data.exists()


def test_missing_config_file_exits_2(tmp_path):
    line = error_line(run("--config", tmp_path / "nope.conf"), EXIT_USAGE)
    assert "nope.conf" in line


# ---- run-time failures ----

def test_port_in_use_exits_1_without_creating_a_token(make_server, tmp_path):
    sock, port = busy_port()
    with sock:
        r = run("--data", tmp_path / "data", "--listen", f"127.0.0.1:{port}")
    line = error_line(r, EXIT_FAILURE)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line, line
    assert "otr_" not in r.stdout
    # The token is made (and shown) by the first start that really serves.
    s = make_server(data_dir=tmp_path / "data")
    assert s.token, s.stdout


def test_unopenable_store_exits_1(tmp_path):
    cfg = write(tmp_path / "otterd.conf", "database = postgresql://nowhere/otter\n")
    line = error_line(run("--config", cfg, "--data", tmp_path / "data", "--listen", "127.0.0.1:0"),
                      EXIT_FAILURE)
    assert "cannot open the store" in line, line


# ---- signals ----

def assert_new_connection_gets_no_answer(s):
    """A new connection is closed unanswered (or refused): a load balancer tries another instance."""
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as n:
            n.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert n.recv(1024) == b""
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        pass


def test_sigterm_lets_a_request_in_flight_finish(make_server):
    s = make_server()
    with s.socket() as c:
        c.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n")  # headers not finished
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert_new_connection_gets_no_answer(s)  # while draining
        assert s.proc.poll() is None, "otterd exited with a request in flight"
        c.sendall(b"\r\n")
        r = read_response(c)
    assert r.status == 200, r
    assert r.headers.get("connection", "").lower() == "close"
    started = time.monotonic()
    assert s.wait() == 0, s.log()
    assert time.monotonic() - started < 5
    assert "SIGTERM: stopping" in s.log()


def test_sigterm_with_idle_keep_alive_connections_is_prompt(make_server):
    s = make_server()
    conns = [s.connection() for _ in range(5)]
    for c in conns:
        assert s.request("GET", "/api/v1/health", conn=c).status == 200
    started = time.monotonic()
    s.signal(signal.SIGINT)
    assert s.wait() == 0, s.log()
    assert time.monotonic() - started < 3
    for c in conns:
        c.close()


def test_sighup_is_ignored(make_server):
    s = make_server()
    s.signal(signal.SIGHUP)
    time.sleep(0.2)
    s.assert_serving()
    assert "SIGHUP ignored" in s.log()


# ---- HTTPS ----

@pytest.fixture
def tls_files(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    return cert, key


def test_https(make_server, tmp_path, tls_files):
    cert, key = tls_files
    cfg = write(tmp_path / "otterd.conf", f"tls_cert = {cert}\ntls_key = {key}\n")
    s = make_server(args=["--config", cfg])
    assert s.scheme == "https", s.stdout
    ctx = ssl.create_default_context(cafile=str(cert))
    c = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=TIMEOUT)
    try:
        for _ in range(3):  # keep-alive over TLS too
            c.request("GET", "/api/v1/health")
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    finally:
        c.close()
    # Plain HTTP on the TLS port gets nothing useful.
    with s.socket() as raw:
        raw.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert not raw.recv(4096).startswith(b"HTTP/1.1 200")


def test_unreadable_tls_key_exits_1(tmp_path, tls_files):
    cert, _ = tls_files
    cfg = write(tmp_path / "otterd.conf", f"tls_cert = {cert}\ntls_key = {tmp_path / 'none.pem'}\n")
    line = error_line(run("--config", cfg, "--data", tmp_path / "data", "--listen", "127.0.0.1:0"),
                      EXIT_FAILURE)
    assert "cannot read the TLS key" in line and "none.pem" in line, line


def test_ipv6_dual_stack_listen(make_server, tmp_path):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s = Otterd(tmp_path, args=["--listen", "[::]:0"], name="v6")
    s.start(listen_flag=False)
    try:
        assert s.host == "[::]"
        for family, host in [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]:
            with socket.create_connection((host, s.port), timeout=TIMEOUT) as c:
                assert c.family == family
                c.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(c).status == 200
    finally:
        s.stop()
    log = s.log()
    assert "<6>::1 GET /api/v1/health 200 " in log, log
    assert "<6>127.0.0.1 GET /api/v1/health 200 " in log, log  # not ::ffff:127.0.0.1


def test_clients_that_vanish_mid_request_do_not_delay_shutdown(make_server):
    s = make_server()
    for partial in [b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n",
                    b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                    s.token.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"na",
                    b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                    s.token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"name\""]:
        with s.socket() as c:
            c.sendall(partial)
            time.sleep(0.1)
    s.assert_serving()
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait() == 0, s.log()
    assert time.monotonic() - started < 3, "a vanished client was still counted as in flight"
    assert "client went away" in s.log()


def test_a_token_that_cannot_be_printed_is_a_failure(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        r = subprocess.run([str(OTTERD), "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    r.stdout = ""
    line = error_line(r, EXIT_FAILURE)
    assert "cannot print the new admin token" in line, line
