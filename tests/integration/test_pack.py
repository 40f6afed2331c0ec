"""otter pack (spec files and flags), inspect, and the container as standard tools see it."""
import json
import os
import subprocess
import tarfile

import pytest

from helpers import (EXIT_FAILURE, EXIT_USAGE, assert_error, entries, manifest_of, members, ok, pack,
                     pattern_bytes, run, temp_leftovers, write)

SPEC = """\
# demo release
name = demo-firmware
version = 1.2.0
device_types = gw-2, gw-3
security_version = 3

[provides]
rootfs.version = 1.2.0

[depends]
bootloader.version = 2023.01|2023.04

[payload "rootfs.img"]
# relative to the spec file's directory
file = images/rootfs.img
type = raw
target = rootfs
version = 1.2.0
compression = zstd

[payload "app.tar"]
file = app.tar
type = archive
target = /opt/app
version = 4.1
compression = none
arg.owner = app
arg.mode = 0644
"""


@pytest.fixture
def spec_dir(tmp_path):
    d = tmp_path / "spec"
    (d / "images").mkdir(parents=True)
    write(d / "images" / "rootfs.img", os.urandom(1500000))
    write(d / "app.tar", pattern_bytes(200000))
    write(d / "demo.spec", SPEC.encode())
    return d


def spec_with(spec_dir, text):
    return write(spec_dir / "bad.spec", text.encode())


def test_pack_from_spec_file(spec_dir, keys, trust, tmp_path):
    out = tmp_path / "out" / "demo.otter"
    out.parent.mkdir()
    # Run from elsewhere: payload files are relative to the spec's directory, not the cwd.
    r = ok("pack", "-o", out, spec_dir / "demo.spec", "--key", keys.key("alice"), cwd=tmp_path)
    assert "demo-firmware 1.2.0" in r.stdout and keys.key_id("alice") in r.stdout
    m = manifest_of(out)
    assert m["name"] == "demo-firmware" and m["version"] == "1.2.0"
    assert m["device_types"] == ["gw-2", "gw-3"] and m["security_version"] == 3
    assert m["provides"] == {"rootfs.version": "1.2.0"}
    assert m["depends"] == {"bootloader.version": ["2023.01", "2023.04"]}
    p = {x["name"]: x for x in m["payloads"]}
    assert [x["name"] for x in m["payloads"]] == ["rootfs.img", "app.tar"]
    assert p["rootfs.img"]["encoding"]["compression"] == "zstd" and p["rootfs.img"]["size"] == 1500000
    assert p["app.tar"]["args"] == {"owner": "app", "mode": "0644"}
    assert p["app.tar"]["type"] == "archive" and p["app.tar"]["target"] == "/opt/app"
    ok("unpack", "--trust", trust["alice"], "-C", tmp_path / "x", out)
    assert (tmp_path / "x" / "rootfs.img").read_bytes() == (spec_dir / "images" / "rootfs.img").read_bytes()


def test_pack_from_flags_only(release, keys, trust, tmp_path):
    out = release.pack(tmp_path / "f.otter", "--key", keys.key("alice"))
    m = manifest_of(out)
    assert m["name"] == "demo-firmware" and m["device_types"] == ["gw-2", "gw-3"]
    assert [p["name"] for p in m["payloads"]] == ["rootfs.img", "app.tar", "boot.scr"]
    boot = m["payloads"][2]
    assert boot["version"] == "7" and boot.get("target", "") == "" and boot["encoding"]["compression"] == "zstd"


def test_flags_add_to_and_override_spec(spec_dir, keys, tmp_path):
    other = write(tmp_path / "other.img", b"other content")
    out = tmp_path / "o.otter"
    pack(out, spec_dir / "demo.spec", "--version", "2.0.0", "--provides", "rootfs.version=2.0.0",
         "--provides", "app.version=4.1", "--device-type", "gw-4", "--device-type", "gw-2",
         "--security-version", "4", "--depends", "bootloader.version=2024.01",
         "--payload", f"name=app.tar,file={other},type=file,target=/etc/x",
         "--payload", f"name=extra.bin,file={other},type=raw,compression=none",
         "--key", keys.key("alice"))
    m = manifest_of(out)
    assert m["version"] == "2.0.0" and m["security_version"] == 4
    assert m["device_types"] == ["gw-2", "gw-3", "gw-4"]
    assert m["provides"] == {"rootfs.version": "2.0.0", "app.version": "4.1"}
    assert m["depends"] == {"bootloader.version": ["2024.01"]}
    p = {x["name"]: x for x in m["payloads"]}
    assert list(p) == ["rootfs.img", "app.tar", "extra.bin"]
    # The flag replaced the spec's payload of the same name entirely (no spec args left over).
    assert p["app.tar"]["type"] == "file" and p["app.tar"]["size"] == len(b"other content")
    assert "args" not in p["app.tar"] or p["app.tar"]["args"] == {}
    # A payload version defaults to the artifact version.
    assert p["extra.bin"]["version"] == "2.0.0"


@pytest.mark.parametrize("text, line, pattern", [
    ("name = x\nversion = 1\ncolour = blue\n", 3, r"unknown key 'colour'"),
    ("name = x\nname = y\n", 2, r"duplicate key 'name'"),
    ("name = x\n[payload \"a\"]\nfile = nope.img\n", 3, r"nope\.img.*No such file"),
    ("name = x\n[payload \"a\"]\nfile = app.tar\ncompression = lz4\n", 4, r"compression must be"),
    ("name = x\n[payload \"a\"]\nfile = app.tar\ntype = raw\nflavour = x\n", 5, r"unknown payload key"),
    ("[payload \"a\"]\n[payload \"a\"]\n", 2, r"duplicate \[payload \"a\"\]"),
    ("[payload \"../evil\"]\n", 1, r"not a safe file name"),
    ("[payload]\n", 1, r"needs a name"),
    ("[surprise]\n", 1, r"unknown section \[surprise\]"),
    ("[provides]\na = 1\na = 2\n", 3, r"duplicate key 'a'"),
    ("name = x\n[payload \"a\"\n", 2, r"section"),
    ("security_version = lots\n", 1, r"security_version"),
    ("name = x\nthis line has no equals\n", 2, r""),
])
def test_spec_errors_name_file_and_line(spec_dir, tmp_path, text, line, pattern):
    spec = spec_with(spec_dir, text)
    out = tmp_path / "o.otter"
    r = run("pack", "-o", out, spec)
    msg = assert_error(r, EXIT_FAILURE, pattern)
    assert f"{spec}:{line}:" in msg
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_spec_payload_without_type(spec_dir, tmp_path):
    spec = spec_with(spec_dir, "name = x\nversion = 1\ndevice_types = a\n[payload \"a\"]\nfile = app.tar\n")
    msg = assert_error(run("pack", "-o", tmp_path / "o.otter", spec), EXIT_FAILURE,
                       r"\[payload \"a\"\]: missing 'type'")
    assert "bad.spec" in msg


def test_spec_invalid_field_caught_before_packing(spec_dir, tmp_path):
    spec = spec_with(spec_dir, "name = x\nversion = has space\ndevice_types = a\n"
                               "[payload \"a\"]\nfile = app.tar\ntype = raw\n")
    assert_error(run("pack", "-o", tmp_path / "o.otter", spec), EXIT_FAILURE, r"bad\.spec: manifest: field 'version'")
    assert not (tmp_path / "o.otter").exists()


@pytest.mark.parametrize("payload, pattern", [
    ("file=a.img,type=raw", r"--payload.*missing name"),
    ("name=a,type=raw", r"--payload a.*missing 'file'"),
    ("name=a,file=nope.img,type=raw", r"--payload a: .*nope\.img"),
    ("name=a,file={f},type=raw,colour=red", r"--payload a: unknown payload key 'colour'"),
    ("name=a,file={f},type=raw,junk", r"--payload a: 'junk' is not KEY=VALUE"),
    ("name=a/b,file={f},type=raw", r"not a safe file name"),
    ("name=a,file={f},type=raw,compression=gzip", r"compression must be"),
])
def test_payload_flag_errors_are_usage_errors(tmp_path, payload, pattern):
    f = write(tmp_path / "in.bin", b"x")
    out = tmp_path / "o.otter"
    r = run("pack", "-o", out, "--name", "n", "--version", "1", "--device-type", "d",
            "--payload", payload.format(f=f))
    assert_error(r, EXIT_USAGE, pattern)
    assert not out.exists()


def test_flag_value_errors(tmp_path):
    f = write(tmp_path / "in.bin", b"x")
    base = ["pack", "-o", tmp_path / "o.otter", "--name", "n", "--version", "1", "--device-type", "d",
            "--payload", f"name=a,file={f},type=raw"]
    assert_error(run(*base, "--security-version", "x"), EXIT_USAGE, r"--security-version")
    assert_error(run(*base, "--provides", "novalue"), EXIT_USAGE, r"--provides wants KEY=VALUE")
    assert_error(run(*base, "--depends", "=1"), EXIT_USAGE, r"--depends wants KEY=VALUE")
    assert_error(run(*base, "--device-type", "bad type"), EXIT_USAGE, r"device_types")
    assert_error(run(*base[:-2]), EXIT_USAGE, r"no payloads")
    assert not (tmp_path / "o.otter").exists()


def test_pack_refuses_wrong_key_types(release, keys, tmp_path):
    out = tmp_path / "o.otter"
    r = run("pack", "-o", out, *release.flags(), "--key", keys.pub("alice"))
    assert_error(r, EXIT_FAILURE, r"alice\.pub.*secret signing key")
    r = run("pack", "-o", out, *release.flags(), "--key", keys.key("alice"), "--encrypt-to", keys.pub("bob"))
    assert_error(r, EXIT_FAILURE, r"bob\.pub.*device key")
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_pack_same_key_twice_refused(release, keys, tmp_path):
    out = tmp_path / "o.otter"
    r = run("pack", "-o", out, *release.flags(), "--key", keys.key("alice"), "--key", keys.key("alice"))
    assert_error(r, EXIT_FAILURE, r"already signed")
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_pack_unsigned_then_sign(release, keys, trust, tmp_path):
    """Packing without --key leaves signing to 'otter sign' (the multi-person workflow)."""
    out = release.pack(tmp_path / "u.otter")
    r = run("verify", "--trust", trust["alice"], out)
    assert_error(r, 3, r"signature")
    ok("sign", "--key", keys.key("alice"), out)
    ok("verify", "--trust", trust["alice"], out)


def test_tar_lists_artifact_manifest_first(signed):
    r = subprocess.run(["tar", "tvf", str(signed)], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in r.stdout.splitlines()]
    assert names == ["manifest.json", "manifest.sig", "payload/rootfs.img", "payload/app.tar",
                     "payload/boot.scr"]


def test_source_date_epoch_makes_packs_reproducible(release, keys, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    a = release.pack(tmp_path / "a.otter", "--key", keys.key("alice"), env=env)
    b = release.pack(tmp_path / "b.otter", "--key", keys.key("alice"), env=env)
    assert a.read_bytes() == b.read_bytes()
    assert {m.mtime for m in members(a)} == {1700000000}


def test_bad_source_date_epoch(release, tmp_path):
    r = run("pack", "-o", tmp_path / "o.otter", *release.flags(), env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert_error(r, EXIT_USAGE, r"SOURCE_DATE_EPOCH")


def test_zstd_level(release, keys, tmp_path):
    fast = release.pack(tmp_path / "fast.otter", "--level", "1", "--key", keys.key("alice"))
    best = release.pack(tmp_path / "best.otter", "--level", "19", "--key", keys.key("alice"))
    size = lambda a: sum(p["stored"]["size"] for p in manifest_of(a)["payloads"])  # noqa: E731
    assert size(best) <= size(fast)


def test_pack_output_replaced_atomically_on_failure(release, keys, tmp_path):
    out = release.pack(tmp_path / "o.otter", "--key", keys.key("alice"))
    before = out.read_bytes()
    r = run("pack", "-o", out, *release.flags(), "--payload",
            f"name=dir,file={tmp_path},type=raw", "--key", keys.key("alice"))
    assert_error(r, EXIT_USAGE, r"not a regular file")
    assert out.read_bytes() == before and temp_leftovers(tmp_path) == []


# ---- inspect ----

def test_inspect_text(signed, keys):
    r = ok("inspect", signed)
    out = r.stdout
    for needle in ["demo-firmware", "1.2.0", "gw-2, gw-3", "security version: 3", "rootfs.version = 1.2.0",
                   "bootloader.version = 2023.01 | 2023.04", "payload rootfs.img", "type:           raw",
                   "target:         /opt/app", "compression:    none", "stored size:", "sha256:",
                   "owner = app", "encrypted:        no", keys.key_id("alice"), keys.key_id("bob")]:
        assert needle in out, needle
    assert "NOT verified" in out


def test_inspect_json_is_valid(signed, keys):
    j = json.loads(ok("inspect", "--json", signed).stdout)
    assert j["verified"] is False
    assert j["manifest"] == json.loads(dict(entries(signed))["manifest.json"])
    assert [s["key_id"] for s in j["signatures"]] == [keys.key_id("alice"), keys.key_id("bob")]


def test_inspect_encrypted_needs_no_key(release, keys, tmp_path):
    a = release.pack(tmp_path / "e.otter", "--key", keys.key("alice"), "--encrypt-to", keys.pub("dev"))
    r = ok("inspect", a)
    assert f"encrypted to:     device key {keys.key_id('dev')}" in r.stdout
    j = json.loads(ok("inspect", "--json", a).stdout)
    assert j["manifest"]["encryption"]["recipients"][0]["key_id"] == keys.key_id("dev")


def test_inspect_stops_after_the_manifest(signed, trust, tmp_path):
    """inspect reads only the manifest and signatures: a damaged payload does not matter to it
    (it verifies nothing), while verify rejects the artifact."""
    data = bytearray(signed.read_bytes())
    data[-2048] ^= 0xFF  # inside the last payload or its padding
    members_ = members(signed)
    last = members_[-1]
    data[last.offset_data + 5] ^= 0x01
    bad = write(tmp_path / "bad.otter", bytes(data))
    ok("inspect", bad)
    assert run("verify", "--trust", trust["2of3"], bad).returncode == 3


def test_inspect_malformed_is_rejected(tmp_path):
    bad = write(tmp_path / "junk.otter", b"this is not a tar file" * 100)
    assert_error(run("inspect", bad), 3, r"artifact rejected: .*tar")
    empty = write(tmp_path / "empty.otter", b"")
    assert_error(run("inspect", empty), 3, r"truncated|ends before")


def test_inspect_quiet(signed):
    r = ok("inspect", "-q", signed)
    assert r.stdout == "" and r.stderr == ""


def test_tarfile_sees_regular_files(signed):
    with tarfile.open(signed) as t:
        assert all(m.isreg() and m.uid == 0 and m.mode == 0o644 for m in t.getmembers())
