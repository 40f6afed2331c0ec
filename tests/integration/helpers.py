"""Helpers for the otter CLI integration tests: running the real binary, building artifacts, and
rewriting their tar container (Python's tarfile, raw headers) to produce hostile inputs."""
import base64
import ctypes
import ctypes.util
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("OTTER_BUILD_DIR", REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
OTTER = BUILD / "src" / "tool" / "otter"

SIG_CONTEXT = b"otter-manifest-v1"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3


def run(*args, env=None, cwd=None, stdin=None):
    """Runs otter with args (str or Path) and returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    full_env.pop("SOURCE_DATE_EPOCH", None)
    if env:
        full_env.update(env)
    return subprocess.run([str(OTTER)] + [str(a) for a in args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                          timeout=120)


def ok(*args, **kw):
    """Runs otter and asserts success."""
    r = run(*args, **kw)
    assert r.returncode == 0, f"otter {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}"
    return r


def assert_error(r, code, pattern):
    """Exit status, one 'otter: <cmd>: ...' line on stderr matching pattern (a regex, ignoring case)."""
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines, "no error message on stderr"
    assert lines[-1].startswith("otter: "), lines[-1]
    assert re.search(pattern, lines[-1], re.I), f"{pattern!r} not in {lines[-1]!r}"
    return lines[-1]


# ---- keys and trust ----

class Keys:
    """Signing keys alice, bob, carol, mallory (untrusted) and device keys dev, dev2 in a directory."""

    SIGNERS = ("alice", "bob", "carol", "mallory")
    DEVICES = ("dev", "dev2")

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for n in self.SIGNERS:
            ok("keygen", "-q", self.dir / n)
        for n in self.DEVICES:
            ok("keygen", "-q", "--type", "device", self.dir / n)

    def key(self, name):
        return self.dir / f"{name}.key"

    def pub(self, name):
        return self.dir / f"{name}.pub"

    def key_id(self, name):
        return json.loads(self.pub(name).read_text())["key_id"]

    def trust(self, path, threshold, *names):
        ok("trust", "-q", "-o", path, "--threshold", threshold, *[self.pub(n) for n in names])
        return Path(path)


def sodium():
    lib = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    assert lib.sodium_init() >= 0
    return lib


def sign_bytes(keyfile, manifest):
    """Ed25519 signature over SIG_CONTEXT || 0 || manifest with the secret key in keyfile, computed
    here with libsodium (ctypes) so that tests can sign manifests `otter sign` refuses to touch."""
    k = json.loads(Path(keyfile).read_text())
    sk = base64.b64decode(k["secret_key"])
    msg = SIG_CONTEXT + b"\0" + manifest
    sig = ctypes.create_string_buffer(64)
    lib = sodium()
    rc = lib.crypto_sign_detached(sig, None, msg, ctypes.c_ulonglong(len(msg)), sk)
    assert rc == 0
    return k["key_id"], sig.raw


def sig_file(*signatures):
    """manifest.sig for (key_id, signature bytes) pairs."""
    return canonical({"otter_signatures": 1, "signatures": [
        {"key_id": kid, "signature": base64.b64encode(s).decode()} for kid, s in signatures]})


def canonical(obj):
    return (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode()


# ---- payloads and artifacts ----

def pattern_bytes(n, seed=b"otter"):
    """Deterministic, compressible but not trivial content."""
    block = b"".join(seed + i.to_bytes(4, "big") for i in range(256))
    return (block * (n // len(block) + 1))[:n]


def write(path, data):
    path = Path(path)
    path.write_bytes(data)
    return path


def pack(out, *args, **kw):
    return ok("pack", "-q", "-o", out, *args, **kw)


# ---- the tar container ----

def entries(path):
    """[(name, bytes)] of an artifact, in archive order."""
    with tarfile.open(path, "r:") as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def members(path):
    with tarfile.open(path, "r:") as t:
        return t.getmembers()


def write_tar(path, items, fmt=tarfile.USTAR_FORMAT):
    """Writes [(name, bytes)] or [(TarInfo, bytes)] in the given order."""
    with tarfile.open(path, "w:", format=fmt) as t:
        for name, data in items:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return Path(path)


def ustar_header(name: bytes, size: int) -> bytes:
    """A raw ustar header block with any name bytes (tarfile would refuse or rewrite some)."""
    h = bytearray(512)
    h[0:len(name)] = name[:100]
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def raw_tar(items):
    """A tar stream from [(name bytes, data)] with raw headers, then the end marker."""
    out = bytearray()
    for name, data in items:
        out += ustar_header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    return bytes(out + b"\0" * 1024)


def manifest_of(path):
    return json.loads(dict(entries(path))["manifest.json"])


def replace_manifest(path, out, edit, keep_sig=True):
    """Rewrites an artifact with edit(manifest dict) applied (canonical JSON), keeping the old
    manifest.sig (whose signatures no longer match) unless keep_sig is False."""
    items = entries(path)
    m = json.loads(items[0][1])
    edit(m)
    items[0] = ("manifest.json", canonical(m))
    if not keep_sig:
        items = [items[0]] + items[2:]
    return write_tar(out, items)


def resign_raw(path, out, manifest_bytes, *keyfiles):
    """An artifact with manifest_bytes signed (here, not by otter) by keyfiles, payloads kept."""
    items = entries(path)
    sigs = [sign_bytes(k, manifest_bytes) for k in keyfiles]
    items = [("manifest.json", manifest_bytes), ("manifest.sig", sig_file(*sigs))] + items[2:]
    return write_tar(out, items)


def temp_leftovers(directory):
    """Hidden temporary files or directories otter may have left in directory."""
    return [p.name for p in Path(directory).iterdir() if ".tmp-" in p.name]
