"""Fixtures for the otter CLI tests. The binary is $OTTER_BUILD_DIR/src/tool/otter (scripts/test.sh
sets OTTER_BUILD_DIR; default build/)."""
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
from helpers import Keys, ok, pack, pattern_bytes, write  # noqa: E402


def pytest_configure(config):
    if not helpers.OTTER.exists():
        raise pytest.UsageError(f"otter binary not found at {helpers.OTTER}: build first "
                                f"(or set OTTER_BUILD_DIR)")


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def trust(keys, tmp_path_factory):
    """Trust files: 2-of-3 (alice, bob, carol), 1-of-1 alice, 1-of-1 bob."""
    d = tmp_path_factory.mktemp("trust")
    return {
        "2of3": keys.trust(d / "2of3.json", 2, "alice", "bob", "carol"),
        "alice": keys.trust(d / "alice.json", 1, "alice"),
        "bob": keys.trust(d / "bob.json", 1, "bob"),
    }


class Release:
    """A small multi-file release in a directory: a random 'rootfs.img' larger than one I/O chunk
    (1 MiB) so reads cross chunk boundaries, a compressible 'app.tar' stored uncompressed and a tiny
    'boot.scr', with different types, targets and versions."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = {
            "rootfs.img": write(self.dir / "rootfs.img", os.urandom(1024 * 1024 + 123457)),
            "app.tar": write(self.dir / "app.tar", pattern_bytes(300000)),
            "boot.scr": write(self.dir / "boot.scr", b"setenv bootargs console=ttyS0\n"),
        }

    def payload_flags(self):
        f = self.files
        return ["--payload", f"name=rootfs.img,file={f['rootfs.img']},type=raw,target=rootfs,version=1.2.0",
                "--payload", f"name=app.tar,file={f['app.tar']},type=archive,target=/opt/app,version=4.1,"
                             "compression=none,arg.owner=app",
                "--payload", f"name=boot.scr,file={f['boot.scr']},type=script,version=7"]

    def flags(self):
        return ["--name", "demo-firmware", "--version", "1.2.0", "--device-type", "gw-2",
                "--device-type", "gw-3", "--security-version", "3", "--provides", "rootfs.version=1.2.0",
                "--depends", "bootloader.version=2023.01|2023.04"] + self.payload_flags()

    def pack(self, out, *extra, **kw):
        pack(out, *self.flags(), *extra, **kw)
        return Path(out)


@pytest.fixture
def release(tmp_path):
    return Release(tmp_path / "release")


@pytest.fixture
def signed(release, keys, tmp_path):
    """The release packed and signed by alice and bob (passes the 2-of-3 trust file)."""
    return release.pack(tmp_path / "demo.otter", "--key", keys.key("alice"), "--key", keys.key("bob"))


@pytest.fixture
def check_rejected(tmp_path):
    """Asserts an artifact is rejected by verify (exit 3, message matching pattern) and that unpack
    rejects it too without leaving DIR or a temporary directory behind."""

    def check(artifact, trust_file, pattern, *extra, code=helpers.EXIT_REJECTED):
        r = helpers.run("verify", "--trust", trust_file, *extra, artifact)
        line = helpers.assert_error(r, code, pattern)
        dest = tmp_path / f"unpacked-{artifact.name}"
        u = helpers.run("unpack", "--trust", trust_file, *extra, "-C", dest, artifact)
        helpers.assert_error(u, code, pattern)
        assert not dest.exists(), "unpack left its destination behind"
        assert helpers.temp_leftovers(tmp_path) == [], "unpack left a temporary directory"
        assert u.stdout == ""
        return line

    return check


def first_line_matching(text, pattern):
    for line in text.splitlines():
        if re.search(pattern, line):
            return line
    return None
