"""The otter CLI's server commands (push, deploy, devices, deployments) against the real otterd on
loopback: where the connection settings come from (flags, environment, config file), how errors
and exit statuses are reported, and each command's human and JSON output. Release channels,
templates, dynamic groups and the rollout options are in test_cli_templates.py.

Every run of otter gets a private HOME and no OTTER_* variables, so nothing from the machine's own
configuration leaks in."""
import base64
import ctypes
import ctypes.util
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import otterd_util
from otterd_util import TIMEOUT

OTTER = otterd_util.BUILD / "src" / "tool" / "otter"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
AUTH_CONTEXT = b"otter-device-auth-v1"


# ---- running otter ----

def otter(home, *args, env=None, timeout=60):
    """Runs otter with HOME=home and only the OTTER_* variables in env."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("OTTER_") and k not in ("XDG_CONFIG_HOME", "SOURCE_DATE_EPOCH")}
    e["HOME"] = str(home)
    e.update(env or {})
    return subprocess.run([str(OTTER)] + [str(a) for a in args], capture_output=True, text=True,
                          env=e, stdin=subprocess.DEVNULL, timeout=timeout)


def error_line(r, code, pattern):
    """Exit status, and the last stderr line is 'otter: ...' matching pattern (regex, any case)."""
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("otter: "), r.stderr
    assert re.search(pattern, lines[-1], re.I), f"{pattern!r} not in {lines[-1]!r}"
    return lines[-1]


class Cli:
    """otter against one server, connected through OTTER_SERVER and OTTER_TOKEN."""

    def __init__(self, server, home, token=None):
        self.server = server
        self.home = home
        self.url = f"http://127.0.0.1:{server.port}"
        self.token = token or server.token

    def run(self, *args, env=None):
        e = {"OTTER_SERVER": self.url, "OTTER_TOKEN": self.token}
        e.update(env or {})
        return otter(self.home, *args, env=e)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, f"otter {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr}"
        return r

    def json(self, *args):
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def cli(server, home):
    return Cli(server, home)


def free_port():
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- keys, trust, artifacts ----

class Keys:
    def __init__(self, directory, home):
        self.dir = Path(directory)
        self.dir.mkdir(exist_ok=True)
        for n in ("alice", "mallory"):
            r = otter(home, "keygen", "-q", self.dir / n)
            assert r.returncode == 0, r.stderr
        self.trust = self.dir / "trust.json"
        r = otter(home, "trust", "-q", "-o", self.trust, self.dir / "alice.pub")
        assert r.returncode == 0, r.stderr

    def key(self, name):
        return self.dir / f"{name}.key"


@pytest.fixture
def keys(tmp_path, home):
    return Keys(tmp_path / "keys", home)


@pytest.fixture
def trusted(server, keys):
    """The server trusts alice's release key."""
    r = server.request("PUT", "/api/v1/trust", body=keys.trust.read_bytes(), token=server.token,
                       headers={"Content-Type": "application/json"})
    assert r.status in (200, 204), r
    return server


def make_artifact(home, out, name="demo", version="1.0", key=None, content=None):
    payload = Path(str(out) + ".payload")
    payload.write_bytes(content if content is not None else os.urandom(200000))
    args = ["pack", "-q", "-o", out, "--name", name, "--version", version, "--device-type", "gw-2",
            "--payload", f"name=app.bin,file={payload},type=file,target=/opt/app.bin,compression=none"]
    if key:
        args += ["--key", key]
    r = otter(home, *args)
    assert r.returncode == 0, r.stderr
    return Path(out)


def tamper(src, out):
    """The artifact with one payload byte flipped (manifest and signature untouched)."""
    with tarfile.open(src, "r:") as t:
        items = [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
    name, data = items[2]
    items[2] = (name, bytes([data[0] ^ 1]) + data[1:])
    with tarfile.open(out, "w:", format=tarfile.USTAR_FORMAT) as t:
        for n, d in items:
            info = tarfile.TarInfo(n)
            info.size = len(d)
            t.addfile(info, io.BytesIO(d))
    return Path(out)


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- devices ----

def sodium():
    lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    assert lib.sodium_init() >= 0
    return lib


def keypair():
    lib = sodium()
    pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(64)
    assert lib.crypto_sign_keypair(pk, sk) == 0
    return pk.raw, sk.raw


def preauthorize(server, mac, device_type="gw-2", tags=None, conn=None, key=None):
    """A preauthorized device straight through the API (no CLI): its id."""
    pk, _ = key or keypair()
    body = {"identity": {"mac": mac}, "public_key": base64.b64encode(pk).decode(),
            "device_type": device_type}
    if tags:
        body["tags"] = tags
    r = server.request("POST", "/api/v1/devices", body, token=server.token, conn=conn)
    assert r.status == 201, r
    return r.json()["id"]


def authenticate(server, mac, key, device_type="gw-2"):
    """A device authenticating itself as the agent does (POST /api/device/v1/auth, the canonical
    JSON body signed with its identity key). Returns the Response."""
    pk, sk = key
    body = (json.dumps({"device_type": device_type, "identity": {"mac": mac},
                        "public_key": base64.b64encode(pk).decode()},
                       sort_keys=True, separators=(",", ":")) + "\n").encode()
    msg = AUTH_CONTEXT + b"\0" + body
    sig = ctypes.create_string_buffer(64)
    assert sodium().crypto_sign_detached(sig, None, msg, ctypes.c_ulonglong(len(msg)), sk) == 0
    return server.request("POST", "/api/device/v1/auth", body,
                          headers={"Content-Type": "application/json",
                                   "X-Otter-Signature": base64.b64encode(sig.raw).decode()})


def pending_device(server, mac):
    """A device the server has never heard of authenticates: it waits, pending. Its id."""
    r = authenticate(server, mac, keypair())
    assert r.status == 202, r
    return r.json()["device_id"]


def accepted_device(server, mac, tags=None):
    """A preauthorized device that then authenticates: accepted. Its id."""
    key = keypair()
    dev = preauthorize(server, mac, tags=tags, key=key)
    r = authenticate(server, mac, key)
    assert r.status == 200 and r.json()["device_id"] == dev, r
    return dev


def api(server, method, path, body=None):
    r = server.request(method, path, body, token=server.token)
    assert 200 <= r.status < 300, r
    return r.json() if r.body else None


# ==== connection settings ====

def test_help_of_every_server_command(home):
    for cmd in ("push", "deploy", "devices", "deployments", "templates"):
        r = otter(home, cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"Usage: otter {cmd}"), r
        assert "--token-file" in r.stdout and "OTTER_SERVER" in r.stdout
        assert otter(home, "help", cmd).stdout == r.stdout
    r = otter(home, "--help")
    for cmd in ("push", "deploy", "devices", "deployments", "templates"):
        assert f"  {cmd} " in r.stdout
    assert "otterd" in r.stdout


def test_missing_server_is_a_usage_error(home):
    line = error_line(otter(home, "devices", "list", env={"OTTER_TOKEN": "otr_x"}), EXIT_USAGE,
                      r"no server given")
    assert "--server" in line and "OTTER_SERVER" in line and "client.conf" in line


def test_missing_token_is_a_usage_error(home):
    line = error_line(otter(home, "devices", "list", "--server", "http://127.0.0.1:1"),
                      EXIT_USAGE, r"no API token given")
    assert "--token-file" in line and "OTTER_TOKEN" in line and "client.conf" in line


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8080", "http://", "http://h/a?b",
                                 "http://h/ x"])
def test_bad_server_url_is_a_usage_error(home, url):
    error_line(otter(home, "devices", "list", "--server", url, "--token", "otr_x"), EXIT_USAGE,
               r"server URL")


def test_token_and_token_file_together_is_a_usage_error(home, tmp_path):
    (tmp_path / "t").write_text("otr_x\n")
    error_line(otter(home, "devices", "list", "--server", "http://127.0.0.1:1", "--token", "otr_x",
                     "--token-file", tmp_path / "t"), EXIT_USAGE, r"not both")


def test_unreachable_server_fails_fast_and_says_where(home):
    port = free_port()
    start = time.monotonic()
    r = otter(home, "devices", "list", "--server", f"http://127.0.0.1:{port}", "--token",
              "otr_secret_never_shown")
    line = error_line(r, EXIT_FAILURE, rf"127\.0\.0\.1:{port}")
    assert re.search(r"connect", line, re.I), line
    assert time.monotonic() - start < 10
    assert "otr_secret_never_shown" not in r.stderr + r.stdout


def test_missing_token_file(home, tmp_path):
    error_line(otter(home, "devices", "list", "--server", "http://127.0.0.1:1", "--token-file",
                     tmp_path / "none"), EXIT_FAILURE, r"none")


def test_empty_token_file(home, tmp_path):
    (tmp_path / "t").write_text("\n")
    error_line(otter(home, "devices", "list", "--server", "http://127.0.0.1:1", "--token-file",
                     tmp_path / "t"), EXIT_FAILURE, r"no token")


def test_config_file_errors_name_the_line(home, tmp_path):
    cfg = tmp_path / "client.conf"
    cfg.write_text("server = http://127.0.0.1:1\nbogus = 1\n")
    error_line(otter(home, "devices", "list", "--config", cfg), EXIT_FAILURE,
               r"client\.conf:2: .*bogus")


def test_named_config_file_must_exist(home, tmp_path):
    error_line(otter(home, "devices", "list", env={"OTTER_CONFIG": str(tmp_path / "nope.conf")}),
               EXIT_FAILURE, r"nope\.conf")


def test_config_precedence_flag_over_env_over_file(server, home, tmp_path):
    good, bad = f"http://127.0.0.1:{server.port}", f"http://127.0.0.1:{free_port()}"
    tok = tmp_path / "token"
    tok.write_text(server.token + "\n")
    cfg = home / ".config" / "otter" / "client.conf"
    cfg.parent.mkdir(parents=True)

    def run(*args, env=None):
        return otter(home, "devices", "list", *args, env=env)

    # The file alone (the default path), with a token_file relative to it.
    (cfg.parent / "tok").write_text(server.token + "\n")
    cfg.write_text(f"server = {good}\ntoken_file = tok\n")
    cfg.chmod(0o600)
    assert run().returncode == 0, run().stderr
    # The environment beats the file ...
    cfg.write_text(f"server = {bad}\ntoken = otr_wrong\n")
    cfg.chmod(0o600)
    r = run(env={"OTTER_SERVER": good, "OTTER_TOKEN": server.token})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    error_line(run(env={"OTTER_TOKEN": server.token}), EXIT_FAILURE, r"connect")
    error_line(run(env={"OTTER_SERVER": good}), EXIT_FAILURE, r"HTTP 401")
    # ... and flags beat the environment.
    r = run("--server", good, "--token-file", tok, env={"OTTER_SERVER": bad, "OTTER_TOKEN": "otr_wrong"})
    assert r.returncode == 0, r.stderr
    r = run("--server", good, "--token", server.token, env={"OTTER_SERVER": bad})
    assert r.returncode == 0, r.stderr
    # XDG_CONFIG_HOME moves the default file; --config and OTTER_CONFIG name one.
    other = tmp_path / "xdg" / "otter" / "client.conf"
    other.parent.mkdir(parents=True)
    other.write_text(f"server = {good}\ntoken = {server.token}\n")
    other.chmod(0o600)
    assert run(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).returncode == 0
    assert run("--config", other).returncode == 0
    assert run(env={"OTTER_CONFIG": str(other)}).returncode == 0


def test_config_file_with_a_token_readable_by_others_warns(server, home, tmp_path):
    cfg = tmp_path / "c.conf"
    cfg.write_text(f"server = http://127.0.0.1:{server.port}\ntoken = {server.token}\n")
    cfg.chmod(0o644)
    r = otter(home, "devices", "list", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "readable by other users" in r.stderr
    assert server.token not in r.stderr


def test_wrong_token_is_the_servers_401(cli):
    r = cli.run("devices", "list", env={"OTTER_TOKEN": "otr_" + "A" * 43})
    line = error_line(r, EXIT_FAILURE, r"server: .*invalid API token.*\(HTTP 401\)")
    assert "otr_AAAA" not in r.stderr + r.stdout, line


def test_missing_scope_is_the_servers_403(server, home):
    ro = server.create_token(["devices:read"], name="ro")["token"]
    dev = preauthorize(server, "02:00:00:00:00:09")
    c = Cli(server, home, token=ro)
    c.ok("devices", "show", dev)
    error_line(c.run("devices", "decommission", dev), EXIT_FAILURE,
               r"lacks the scope 'devices:write'.*HTTP 403")


def test_https_needs_the_servers_ca(make_server, home, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    cfg = tmp_path / "otterd.conf"
    cfg.write_text(f"tls_cert = {cert}\ntls_key = {key}\n")
    s = make_server(args=["--config", cfg])
    env = {"OTTER_SERVER": f"https://127.0.0.1:{s.port}", "OTTER_TOKEN": s.token}
    # Verification is always on: a certificate nobody vouches for is refused ...
    error_line(otter(home, "devices", "list", env=env), EXIT_FAILURE, r"certificate")
    # ... unless its CA is given, by flag, environment or config file.
    r = otter(home, "devices", "list", "--ca-file", cert, env=env)
    assert r.returncode == 0, r.stderr
    assert otter(home, "devices", "list", env={**env, "OTTER_CA_FILE": str(cert)}).returncode == 0
    c = tmp_path / "client.conf"
    c.write_text("ca_file = cert.pem\n")
    assert otter(home, "devices", "list", "--config", c, env=env).returncode == 0
    # Plain http to the TLS port fails cleanly.
    env["OTTER_SERVER"] = f"http://127.0.0.1:{s.port}"
    assert otter(home, "devices", "list", env=env).returncode == EXIT_FAILURE


# ==== push ====

def test_push(trusted, cli, keys, tmp_path):
    art = make_artifact(cli.home, tmp_path / "demo.otter", key=keys.key("alice"))
    r = cli.ok("push", art)
    m = re.fullmatch(r"pushed demo 1\.0 as artifact (\d+) \(sha256 ([0-9a-f]{64})\)\n", r.stdout)
    assert m, r.stdout
    assert m.group(2) == sha256_file(art)
    a = api(trusted, "GET", f"/api/v1/artifacts/{m.group(1)}")
    assert (a["name"], a["version"], a["size"]) == ("demo", "1.0", art.stat().st_size)
    assert a["device_types"] == ["gw-2"]
    # What the server stored is byte for byte what was pushed.
    dl = trusted.request("GET", f"/api/v1/artifacts/{m.group(1)}/download", token=trusted.token)
    assert dl.status == 200 and hashlib.sha256(dl.body).hexdigest() == m.group(2)


def test_push_json_and_quiet(trusted, cli, keys, tmp_path):
    art = make_artifact(cli.home, tmp_path / "j.otter", version="2.0", key=keys.key("alice"))
    a = cli.json("push", art)
    assert a["name"] == "demo" and a["version"] == "2.0" and a["sha256"] == sha256_file(art)
    assert isinstance(a["id"], int)
    art3 = make_artifact(cli.home, tmp_path / "q.otter", version="3.0", key=keys.key("alice"))
    r = cli.ok("push", "-q", art3)
    assert r.stdout == "" and r.stderr == ""


def test_push_of_a_large_artifact_streams(trusted, cli, keys, tmp_path):
    """Bigger than curl's buffers and than one read: the body streams with a known length."""
    art = make_artifact(cli.home, tmp_path / "big.otter", version="big", key=keys.key("alice"),
                        content=os.urandom(24 * 1024 * 1024 + 17))
    r = cli.ok("push", art)
    assert sha256_file(art) in r.stdout


def test_push_rejected_artifacts_exit_3(trusted, cli, keys, tmp_path):
    unsigned = make_artifact(cli.home, tmp_path / "u.otter", version="u")
    untrusted = make_artifact(cli.home, tmp_path / "m.otter", version="m", key=keys.key("mallory"))
    good = make_artifact(cli.home, tmp_path / "g.otter", version="g", key=keys.key("alice"))
    tampered = tamper(good, tmp_path / "t.otter")
    for art in (unsigned, untrusted, tampered):
        error_line(cli.run("push", art), EXIT_REJECTED,
                   r"^otter: push: artifact rejected: server: .*\(HTTP 422\)$")
    # None of them was stored.
    assert api(trusted, "GET", "/api/v1/artifacts")["artifacts"] == []


def test_push_twice_is_refused_clearly(trusted, cli, keys, tmp_path):
    art = make_artifact(cli.home, tmp_path / "d.otter", key=keys.key("alice"))
    cli.ok("push", art)
    error_line(cli.run("push", art), EXIT_FAILURE, r"already on the server: server: .*\(HTTP 409\)")


def test_push_refused_up_front_gets_the_servers_answer(trusted, cli, keys, tmp_path):
    """Authentication fails before the body is sent: the 401 comes back as such, not as a broken
    connection halfway through 24 MiB."""
    art = make_artifact(cli.home, tmp_path / "big.otter", key=keys.key("alice"),
                        content=os.urandom(24 * 1024 * 1024))
    r = cli.run("push", art, env={"OTTER_TOKEN": "otr_" + "B" * 43})
    error_line(r, EXIT_FAILURE, r"server: invalid API token \(HTTP 401\)")
    ro = trusted.create_token(["artifacts:read"], name="ro")["token"]
    error_line(cli.run("push", art, env={"OTTER_TOKEN": ro}), EXIT_FAILURE,
               r"lacks the scope 'artifacts:write' \(HTTP 403\)")


def test_push_over_the_servers_size_limit(make_server, home, keys, tmp_path):
    cfg = tmp_path / "otterd.conf"
    cfg.write_text("max_artifact_size = 1M\n")
    s = make_server(args=["--config", cfg])
    r = s.request("PUT", "/api/v1/trust", body=keys.trust.read_bytes(), token=s.token)
    assert r.status in (200, 204), r
    art = make_artifact(home, tmp_path / "big.otter", key=keys.key("alice"),
                        content=os.urandom(2 * 1024 * 1024))
    error_line(Cli(s, home).run("push", art), EXIT_FAILURE, r"server: .*\(HTTP 413\)")


def test_push_usage(home, tmp_path):
    error_line(otter(home, "push"), EXIT_USAGE, r"missing ARTIFACT")
    error_line(otter(home, "push", "a", "b"), EXIT_USAGE, r"too many arguments")
    error_line(otter(home, "push", "--bogus", "a"), EXIT_USAGE, r"unknown option '--bogus'")


def test_push_of_a_missing_file(cli, tmp_path):
    error_line(cli.run("push", tmp_path / "none.otter"), EXIT_FAILURE, r"none\.otter")


# ==== devices ====

def test_devices_preauthorize_list_show(server, cli, tmp_path):
    kdir = tmp_path / "dev"
    kdir.mkdir()
    assert otter(cli.home, "keygen", "-q", kdir / "d1").returncode == 0
    pub = json.loads((kdir / "d1.pub").read_text())["public_key"]
    r = cli.ok("devices", "preauthorize", "--identity", "mac=02:00:00:00:00:01",
               "--identity", "serial=SN1", "--public-key", kdir / "d1.pub", "--type", "gw-2",
               "--tag", "lab")
    m = re.fullmatch(r"device (\d+): preauthorized \((.*)\)\n", r.stdout)
    assert m, r.stdout
    dev = int(m.group(1))
    assert "mac=02:00:00:00:00:01" in m.group(2) and "serial=SN1" in m.group(2)
    # A secret key file works too (with a warning): only the public key is sent.
    assert otter(cli.home, "keygen", "-q", kdir / "d2").returncode == 0
    d2 = cli.json("devices", "preauthorize", "--identity", "mac=02:00:00:00:00:02",
                  "--public-key", kdir / "d2.key")
    assert d2["public_key"] == json.loads((kdir / "d2.pub").read_text())["public_key"]
    assert d2["status"] == "preauthorized"

    shown = cli.json("devices", "show", dev)
    assert shown["public_key"] == pub and shown["identity"] == {"mac": "02:00:00:00:00:01",
                                                                "serial": "SN1"}
    assert shown["device_type"] == "gw-2" and shown["tags"] == ["lab"]
    text = cli.ok("devices", "show", dev).stdout
    assert re.search(r"^status: +preauthorized$", text, re.M), text
    assert re.search(r"^tags: +lab$", text, re.M), text
    assert re.search(r"^last seen: +never$", text, re.M), text

    table = cli.ok("devices", "list").stdout.splitlines()
    assert re.match(r"^ID +STATUS +TYPE +IDENTITY +TAGS +INSTALLED +LAST SEEN$", table[0]), table
    assert len(table) == 3
    # Columns are aligned: every row's STATUS starts where the header's does.
    col = table[0].index("STATUS")
    assert all(row[col:].startswith("preauthorized") for row in table[1:]), table
    ids = [d["id"] for d in cli.json("devices", "list")]
    assert ids == sorted(ids) and set(ids) == {dev, d2["id"]}


def test_devices_list_filters_and_limit(server, cli):
    a = preauthorize(server, "02:00:00:00:01:01", device_type="gw-2", tags=["lab"])
    b = preauthorize(server, "02:00:00:00:01:02", device_type="gw-3", tags=["lab", "eu"])
    c = preauthorize(server, "02:00:00:00:01:03", device_type="gw-3")
    ids = lambda *args: [d["id"] for d in cli.json("devices", "list", *args)]  # noqa: E731
    assert ids() == [a, b, c]
    assert ids("--tag", "lab") == [a, b]
    assert ids("--type", "gw-3") == [b, c]
    assert ids("--type", "gw-3", "--tag", "eu") == [b]
    assert ids("--status", "preauthorized", "--limit", "2") == [a, b]
    assert ids("--status", "accepted") == []
    assert cli.ok("devices", "list", "--status", "accepted").stdout.splitlines()[0].startswith("ID")
    error_line(cli.run("devices", "list", "--status", "happy"), EXIT_USAGE, r"--status must be")
    error_line(cli.run("devices", "list", "--limit", "0"), EXIT_USAGE, r"--limit")


def test_devices_list_follows_every_page(server, cli):
    conn = server.connection()
    try:
        made = [preauthorize(server, f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", conn=conn)
                for i in range(450)]
    finally:
        conn.close()
    got = [d["id"] for d in cli.json("devices", "list")]
    assert got == made
    assert [d["id"] for d in cli.json("devices", "list", "--limit", "201")] == made[:201]
    assert len(cli.ok("devices", "list").stdout.splitlines()) == 451


def test_devices_accept_reject_decommission(server, cli):
    dev = pending_device(server, "02:00:00:00:02:01")
    assert cli.json("devices", "show", dev)["status"] == "pending"
    assert cli.ok("devices", "reject", dev).stdout == f"device {dev}: rejected\n"
    assert cli.ok("devices", "accept", dev).stdout == f"device {dev}: accepted\n"
    assert api(server, "GET", f"/api/v1/devices/{dev}")["status"] == "accepted"
    assert cli.json("devices", "decommission", dev)["status"] == "decommissioned"
    # Decommissioned is for good: the server's refusal comes through.
    error_line(cli.run("devices", "accept", dev), EXIT_FAILURE, r"server: .*\(HTTP 4\d\d\)")


def test_devices_tag(server, cli):
    dev = preauthorize(server, "02:00:00:00:03:01")
    assert cli.ok("devices", "tag", dev, "lab", "eu").stdout == f"device {dev}: tags eu,lab\n"
    assert api(server, "GET", f"/api/v1/devices/{dev}")["tags"] == ["eu", "lab"]
    assert cli.json("devices", "tag", dev, "canary")["tags"] == ["canary"]
    assert cli.ok("devices", "tag", dev).stdout == f"device {dev}: no tags\n"
    assert api(server, "GET", f"/api/v1/devices/{dev}")["tags"] == []
    error_line(cli.run("devices", "tag", dev, "bad tag!"), EXIT_FAILURE, r"\(HTTP 4\d\d\)")


def test_devices_errors(server, cli, tmp_path):
    error_line(cli.run("devices", "show", "999999"), EXIT_FAILURE, r"server: .*\(HTTP 404\)")
    error_line(cli.run("devices", "show", "abc"), EXIT_USAGE, r"ID must be a positive number")
    error_line(cli.run("devices", "show"), EXIT_USAGE, r"'devices show' needs ID")
    error_line(cli.run("devices", "show", "1", "2"), EXIT_USAGE, r"too many arguments")
    error_line(cli.run("devices", "frob"), EXIT_USAGE, r"unknown subcommand 'frob'")
    error_line(cli.run("devices"), EXIT_USAGE, r"missing a subcommand")
    error_line(cli.run("devices", "show", "1", "--status", "pending"), EXIT_USAGE,
               r"'devices show' does not take --status")
    error_line(cli.run("devices", "preauthorize", "--identity", "mac=1"), EXIT_USAGE,
               r"--public-key")
    assert otter(cli.home, "keygen", "-q", "--type", "device", tmp_path / "x").returncode == 0
    error_line(cli.run("devices", "preauthorize", "--identity", "mac=1", "--public-key",
                       tmp_path / "x.pub"), EXIT_FAILURE, r"Ed25519")
    assert otter(cli.home, "keygen", "-q", tmp_path / "e").returncode == 0
    error_line(cli.run("devices", "preauthorize", "--identity", "mac", "--public-key",
                       tmp_path / "e.pub"), EXIT_USAGE, r"KEY=VALUE")
    error_line(cli.run("devices", "preauthorize", "--identity", "a=1", "--identity", "a=2",
                       "--public-key", tmp_path / "e.pub"), EXIT_USAGE, r"given twice")


# ==== deploy and deployments ====

@pytest.fixture
def fleet(trusted, cli, keys, tmp_path):
    """Two versions of an artifact pushed, and three accepted devices, the first two tagged lab."""
    arts = {}
    for v in ("1.0", "1.1"):
        art = make_artifact(cli.home, tmp_path / f"demo-{v}.otter", version=v,
                            key=keys.key("alice"))
        arts[v] = cli.json("push", art)["id"]
    devs = [accepted_device(trusted, f"02:00:00:00:04:0{i}", tags=["lab"] if i < 2 else None)
            for i in range(3)]
    return arts, devs


def test_deploy_by_id_to_devices(cli, fleet):
    arts, devs = fleet
    r = cli.ok("deploy", "--artifact", arts["1.0"], "--device", devs[0], "--device", devs[1])
    m = re.fullmatch(r"deployment (\d+) created: demo 1\.0 to 2 devices\n", r.stdout)
    assert m, r.stdout
    dep = api(cli.server, "GET", f"/api/v1/deployments/{m.group(1)}")
    assert dep["artifact_id"] == arts["1.0"] and sorted(dep["target"]["devices"]) == devs[:2]
    assert dep["name"] == "demo 1.0" and dep["status"] == "active"


def test_deploy_by_name_and_version_to_a_device_list(cli, fleet):
    arts, devs = fleet
    dep = cli.json("deploy", "--artifact", "demo@1.1", "--devices", f"{devs[0]},{devs[2]}",
                   "--name", "canary")
    assert dep["artifact_id"] == arts["1.1"] and dep["name"] == "canary"
    assert dep["device_count"] == 2


def test_deploy_to_a_tag(cli, fleet):
    arts, devs = fleet
    r = cli.ok("deploy", "--artifact", "demo@1.0", "--tag", "lab")
    assert re.fullmatch(r"deployment \d+ created: demo 1\.0 to 2 devices\n", r.stdout), r.stdout
    dep = cli.json("deploy", "--artifact", "demo@1.1", "--tag", "lab", "--name", "lab 1.1")
    assert dep["target"] == {"tag": "lab"} and dep["device_count"] == 2
    assert dep["artifact_id"] == arts["1.1"]


def test_deploy_errors(cli, fleet):
    arts, devs = fleet
    error_line(cli.run("deploy", "--artifact", "demo@9.9", "--device", devs[0]), EXIT_FAILURE,
               r"no artifact demo version 9\.9")
    error_line(cli.run("deploy", "--artifact", "999999", "--device", devs[0]), EXIT_FAILURE,
               r"HTTP 404")
    error_line(cli.run("deploy", "--artifact", "demo", "--device", devs[0]), EXIT_USAGE,
               r"NAME@VERSION")
    error_line(cli.run("deploy", "--artifact", "1"), EXIT_USAGE, r"missing targets")
    error_line(cli.run("deploy", "--artifact", "1", "--device", "1", "--tag", "lab"), EXIT_USAGE,
               r"not both")
    error_line(cli.run("deploy", "--device", "1"), EXIT_USAGE, r"missing --artifact")
    error_line(cli.run("deploy", "--artifact", "1", "--devices", "1,,2"), EXIT_USAGE, r"--devices")
    error_line(cli.run("deploy", "--artifact", "1", "--device", "x"), EXIT_USAGE, r"device ID")


def test_deployments_list_show_cancel(cli, fleet):
    arts, devs = fleet
    first = cli.json("deploy", "--artifact", arts["1.0"], "--devices", f"{devs[0]},{devs[1]}")
    second = cli.json("deploy", "--artifact", arts["1.1"], "--device", devs[2], "--name", "two")

    listed = cli.json("deployments", "list")
    assert [d["id"] for d in listed] == [second["id"], first["id"]]  # newest first
    assert [d["id"] for d in cli.json("deployments", "list", "--limit", "1")] == [second["id"]]
    table = cli.ok("deployments", "list").stdout.splitlines()
    assert re.match(r"^ID +STATUS +NAME +ARTIFACT +TARGET +DEVICES +CREATED$", table[0]), table
    assert len(table) == 3 and "demo 1.1" in table[1] and "two" in table[1]

    shown = cli.json("deployments", "show", first["id"])
    assert shown["rollup"]["pending"] == 2
    assert sorted(r["device_id"] for r in shown["devices"]) == devs[:2]
    text = cli.ok("deployments", "show", first["id"]).stdout
    assert re.search(r"^states: +pending 2$", text, re.M), text
    assert re.search(r"^artifact: +demo 1\.0 \(artifact \d+\)$", text, re.M), text
    assert re.search(r"^DEVICE +STATUS +PROGRESS +UPDATED +MESSAGE$", text, re.M), text
    for d in devs[:2]:
        assert re.search(rf"^{d} +pending ", text, re.M), text
    row = cli.json("deployments", "show", first["id"], "--device", devs[0])
    assert row["device_id"] == devs[0] and row["status"] == "pending"
    assert "events:" in cli.ok("deployments", "show", first["id"], "--device", devs[0]).stdout

    assert cli.ok("deployments", "cancel", first["id"]).stdout == f"deployment {first['id']}: cancelled\n"
    assert [d["id"] for d in cli.json("deployments", "list", "--status", "cancelled")] == [first["id"]]
    assert [d["id"] for d in cli.json("deployments", "list", "--status", "active")] == [second["id"]]
    assert cli.json("deployments", "show", first["id"])["rollup"]["cancelled"] == 2
    error_line(cli.run("deployments", "cancel", first["id"]), EXIT_FAILURE, r"\(HTTP 409\)")
    error_line(cli.run("deployments", "show", "999999"), EXIT_FAILURE, r"\(HTTP 404\)")


def test_deployments_usage(cli):
    error_line(cli.run("deployments"), EXIT_USAGE, r"missing a subcommand")
    error_line(cli.run("deployments", "show"), EXIT_USAGE, r"needs ID")
    error_line(cli.run("deployments", "list", "--status", "done"), EXIT_USAGE, r"--status must be")
    error_line(cli.run("deployments", "cancel", "1", "--status", "active"), EXIT_USAGE,
               r"--status and --limit are for 'deployments list'")
    error_line(cli.run("deployments", "list", "--device", "1"), EXIT_USAGE, r"--device and --watch are for")
