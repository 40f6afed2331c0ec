"""Devices and releases for the otterd tests: a simulated device that speaks the device API the
way otter-agent does (Ed25519 identity key, signed auth request, bearer token), and a release
helper that makes signing keys and artifacts with the real `otter` CLI and registers the trust
file with the server. Signing goes through libsodium (ctypes), like the CLI tests."""
import base64
import ctypes
import ctypes.util
import json
import os
import subprocess
from pathlib import Path

from otterd_util import BUILD, TIMEOUT

OTTER = BUILD / "src" / "tool" / "otter"
AUTH_CONTEXT = b"otter-device-auth-v1"


def _sodium():
    lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    assert lib.sodium_init() >= 0
    return lib


SODIUM = _sodium()


def canonical(obj):
    return (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode()


def keypair():
    pk = ctypes.create_string_buffer(32)
    sk = ctypes.create_string_buffer(64)
    assert SODIUM.crypto_sign_keypair(pk, sk) == 0
    return pk.raw, sk.raw


def sign(sk, context, msg):
    data = context + b"\0" + msg
    sig = ctypes.create_string_buffer(64)
    assert SODIUM.crypto_sign_detached(sig, None, data, ctypes.c_ulonglong(len(data)), sk) == 0
    return sig.raw


def otter(*args, check=True):
    r = subprocess.run([str(OTTER)] + [str(a) for a in args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=120)
    if check:
        assert r.returncode == 0, f"otter {args} failed ({r.returncode}): {r.stderr}"
    return r


class Device:
    """One simulated device against a running otterd."""

    def __init__(self, server, name="dev", device_type="gw-1", identity=None):
        self.server = server
        self.pk, self.sk = keypair()
        self.identity = identity or {"mac": "02:00:00:%02x:%02x:%02x" % tuple(os.urandom(3)),
                                     "name": name}
        self.device_type = device_type
        self.token = None
        self.id = None
        self.installed = {}

    @property
    def public_key_b64(self):
        return base64.b64encode(self.pk).decode()

    def auth_body(self, enrollment_token=None):
        body = {"identity": self.identity, "public_key": self.public_key_b64,
                "device_type": self.device_type}
        if enrollment_token:
            body["enrollment_token"] = enrollment_token
        return canonical(body)

    def authenticate(self, enrollment_token=None, body=None, signature=None):
        body = body if body is not None else self.auth_body(enrollment_token)
        sig = signature if signature is not None else sign(self.sk, AUTH_CONTEXT, body)
        r = self.server.request("POST", "/api/device/v1/auth", body,
                                headers={"X-Otter-Signature": base64.b64encode(sig).decode(),
                                         "Content-Type": "application/json"})
        if r.status in (200, 202):
            self.id = r.json()["device_id"]
        if r.status == 200:
            self.token = r.json()["token"]
        return r

    def request(self, method, path, body=None, headers=None, token=None):
        return self.server.request(method, path, body, token=token or self.token, headers=headers)

    def checkin(self, installed=None, provides=None):
        body = {"device_type": self.device_type,
                "installed": self.installed if installed is None else installed,
                "provides": provides or {}}
        return self.request("POST", "/api/device/v1/checkin", canonical(body),
                            headers={"Content-Type": "application/json"})

    def report(self, deployment, status, progress=None, message=None, log=None):
        body = {"status": status}
        if progress is not None:
            body["progress"] = progress
        if message is not None:
            body["message"] = message
        if log is not None:
            body["log"] = log
        return self.request("POST", f"/api/device/v1/deployments/{deployment}/status",
                            canonical(body), headers={"Content-Type": "application/json"})

    def download(self, deployment, headers=None, method="GET"):
        return self.request(method, f"/api/device/v1/deployments/{deployment}/artifact",
                            headers=headers)


def accepted_device(server, **kw):
    """A device preauthorized by the admin, then authenticated (so: accepted, with a token)."""
    d = Device(server, **kw)
    r = server.request("POST", "/api/v1/devices",
                       {"identity": d.identity, "public_key": d.public_key_b64,
                        "device_type": d.device_type}, token=server.token)
    assert r.status == 201, r
    r = d.authenticate()
    assert r.status == 200, r
    return d


class Release:
    """A signing key trusted by the server, and artifacts signed with it."""

    def __init__(self, server, directory):
        self.server = server
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        otter("keygen", "-q", self.dir / "release")
        otter("trust", "-q", "-o", self.dir / "trust.json", "--threshold", "1",
              self.dir / "release.pub")
        r = server.request("PUT", "/api/v1/trust", (self.dir / "trust.json").read_bytes(),
                           token=server.token)
        assert r.status == 200, r

    def artifact(self, name="app", version="1.0", device_types=("gw-1",), size=4096, sign=True,
                 content=None):
        payload = self.dir / f"{name}-{version}.bin"
        payload.write_bytes(content if content is not None else os.urandom(size))
        out = self.dir / f"{name}-{version}.otter"
        args = ["pack", "-q", "-o", out, "--name", name, "--version", version]
        for t in device_types:
            args += ["-T", t]
        args += ["-p", f"name=rootfs,file={payload},type=raw,target=/dev/null"]
        if sign:
            args += ["-k", self.dir / "release.key"]
        otter(*args)
        return out

    def upload(self, path, token=None):
        return self.server.request("POST", "/api/v1/artifacts", Path(path).read_bytes(),
                                   token=token or self.server.token,
                                   headers={"Content-Type": "application/octet-stream"})

    def uploaded(self, **kw):
        r = self.upload(self.artifact(**kw))
        assert r.status == 201, r
        return r.json()

    def deploy(self, artifact_id, devices=None, tag=None, name="rollout"):
        body = {"name": name, "artifact_id": artifact_id}
        if tag is not None:
            body["tag"] = tag
        else:
            body["devices"] = [d.id for d in devices]
        r = self.server.request("POST", "/api/v1/deployments", body, token=self.server.token)
        assert r.status == 201, r
        return r.json()
