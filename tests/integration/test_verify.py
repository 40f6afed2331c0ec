"""Round trips, verify output, unpack semantics, device compatibility, memory."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import (EXIT_FAILURE, EXIT_REJECTED, OTTER, assert_error, entries, ok, pattern_bytes,
                     run, temp_leftovers, write)


def test_round_trip_multi_file(release, signed, trust, keys, tmp_path):
    r = ok("verify", "--trust", trust["2of3"], signed)
    out = r.stdout
    assert f"signature: alice {keys.key_id('alice')}: valid" in out
    assert f"signature: bob {keys.key_id('bob')}: valid" in out
    assert "2 of 2 required signatures valid" in out
    for name in release.files:
        assert f"payload {name}: verified" in out
    assert out.splitlines()[-1].startswith("OK: demo-firmware 1.2.0")

    dest = tmp_path / "unpacked"
    ok("unpack", "--trust", trust["2of3"], "-C", dest, signed)
    assert sorted(p.name for p in dest.iterdir()) == sorted(list(release.files) + ["manifest.json"])
    for name, src in release.files.items():
        assert (dest / name).read_bytes() == src.read_bytes(), name
    # manifest.json is the exact signed bytes.
    assert (dest / "manifest.json").read_bytes() == dict(entries(signed))["manifest.json"]
    assert temp_leftovers(tmp_path) == []


def test_round_trip_payload_larger_than_io_chunk(keys, trust, tmp_path):
    """Random (incompressible) and patterned payloads of several MiB cross the 1 MiB read chunks,
    the 64 KiB encryption chunks and the zstd blocks at odd offsets."""
    big = write(tmp_path / "big.img", os.urandom(3 * 1024 * 1024 + 4097))
    pat = write(tmp_path / "pat.img", pattern_bytes(5 * 1024 * 1024 + 3))
    for extra in ([], ["--encrypt-to", keys.pub("dev")]):
        art = tmp_path / "big.otter"
        ok("pack", "-q", "-o", art, "--name", "big", "--version", "1", "--device-type", "gw",
           "--payload", f"name=big.img,file={big},type=raw",
           "--payload", f"name=pat.img,file={pat},type=raw,compression=none",
           "--key", keys.key("alice"), *extra)
        dest = tmp_path / "out"
        ok("unpack", "-q", "--trust", trust["alice"], "--device-key", keys.key("dev"), "-C", dest, art)
        assert (dest / "big.img").read_bytes() == big.read_bytes()
        assert (dest / "pat.img").read_bytes() == pat.read_bytes()
        subprocess.run(["rm", "-rf", str(dest)], check=True)


def test_verify_json(signed, trust, keys):
    j = json.loads(ok("verify", "--json", "--trust", trust["2of3"], signed).stdout)
    assert j["ok"] is True and j["error"] is None
    assert j["valid"] == 2 and j["threshold"] == 2
    assert [s["status"] for s in j["signatures"]] == ["valid", "valid"]
    assert [p["name"] for p in j["payloads"]] == ["rootfs.img", "app.tar", "boot.scr"]
    assert j["encrypted"] is False and j["name"] == "demo-firmware"


def test_verify_json_on_failure(signed, trust):
    r = run("verify", "--json", "--trust", trust["2of3"], "--device-type", "gw-9", signed)
    j = json.loads(r.stdout)
    assert r.returncode == EXIT_REJECTED and j["ok"] is False
    assert j["error"]["code"] == "incompatible" and j["error"]["exit_status"] == 3
    assert j["compatible"] is False and j["valid"] == 2


def test_verify_quiet(signed, trust):
    r = ok("verify", "-q", "--trust", trust["2of3"], signed)
    assert r.stdout == "" and r.stderr == ""
    r = run("verify", "-q", "--trust", trust["2of3"], "--device-type", "nope", signed)
    assert r.returncode == EXIT_REJECTED and r.stdout == "" and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, pattern", [
    (["--device-type", "gw-9"], r"device types gw-2, gw-3; this device is gw-9"),
    (["--device-type", "gw-2", "--provides", "bootloader.version=2022.10"],
     r"depends on bootloader.version.*2022.10"),
    (["--device-type", "gw-2"], r"does not provide bootloader.version"),
    (["--device-type", "gw-3", "--provides", "bootloader.version=2023.04", "--min-security-version", "4"],
     r"security version 3 is lower than the device's minimum 4"),
])
def test_verify_incompatible_device(signed, trust, args, pattern):
    r = run("verify", "--trust", trust["2of3"], *args, signed)
    assert_error(r, EXIT_REJECTED, pattern)
    assert "payload" not in r.stdout  # stopped at the manifest


def test_verify_compatible_device(signed, trust):
    r = ok("verify", "--trust", trust["2of3"], "--device-type", "gw-3", "--provides",
           "bootloader.version=2023.01", "--min-security-version", "3", signed)
    assert "compatible with device type gw-3" in r.stdout


def test_unpack_into_empty_directory(signed, trust, tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    ok("unpack", "--trust", trust["2of3"], "-C", f"{dest}/", signed)
    assert (dest / "rootfs.img").exists()
    assert temp_leftovers(tmp_path) == []


def test_unpack_refuses_non_empty_directory(signed, trust, tmp_path):
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert_error(run("unpack", "--trust", trust["2of3"], "-C", dest, signed), EXIT_FAILURE,
                 r"exists and is not empty")
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert temp_leftovers(tmp_path) == []


def test_unpack_refuses_a_file_as_directory(signed, trust, tmp_path):
    f = write(tmp_path / "file", b"x")
    assert_error(run("unpack", "--trust", trust["2of3"], "-C", f, signed), EXIT_FAILURE,
                 r"not a directory")
    assert f.read_bytes() == b"x"


def test_unpack_missing_parent(signed, trust, tmp_path):
    assert_error(run("unpack", "--trust", trust["2of3"], "-C", tmp_path / "no" / "dir", signed),
                 EXIT_FAILURE, r"No such file")


def test_unpack_output(signed, trust, tmp_path):
    r = ok("unpack", "--trust", trust["2of3"], "-C", tmp_path / "d", signed)
    assert "unpacked demo-firmware 1.2.0" in r.stdout and "3 payloads" in r.stdout
    assert oct((tmp_path / "d").stat().st_mode & 0o777) != oct(0o700)


def test_unpack_payload_named_like_the_manifest(keys, trust, tmp_path):
    f = write(tmp_path / "in", b"hello")
    art = tmp_path / "m.otter"
    ok("pack", "-q", "-o", art, "--name", "n", "--version", "1", "--device-type", "d",
       "--payload", f"name=manifest.json,file={f},type=file", "--key", keys.key("alice"))
    ok("verify", "-q", "--trust", trust["alice"], art)
    dest = tmp_path / "d"
    assert_error(run("unpack", "--trust", trust["alice"], "-C", dest, art), EXIT_FAILURE,
                 r"'manifest.json' collides")
    assert not dest.exists() and temp_leftovers(tmp_path) == []


TIME = shutil.which("time", path="/usr/bin:/bin")


def peak_rss_kib(*args):
    """Peak RSS of one otter run, measured by GNU time: a child forked from this Python process
    would inherit the interpreter's high-water mark across exec."""
    with tempfile.NamedTemporaryFile("r") as f:
        r = subprocess.run([TIME, "-o", f.name, "-f", "%M", str(OTTER)] + [str(a) for a in args],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return int(f.read().split()[-1])


@pytest.mark.skipif(not TIME, reason="GNU time (Debian package 'time') is not installed")
def test_memory_stays_flat_for_large_payloads(keys, trust, tmp_path):
    """The CLI streams: what a command adds to the program's own start-up footprint (shared
    libraries, and under ASan its shadow memory) stays far below the payload size: 64 MiB of
    payload, at most 24 MiB over `otter --version`. (bench/pack.sh reports absolute figures.)"""
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        chunk = pattern_bytes(1024 * 1024)
        for i in range(64):
            f.write(os.urandom(4096) + chunk[4096:])
    art = tmp_path / "big.otter"
    limit = peak_rss_kib("--version") + 24 * 1024
    base = ["--name", "big", "--version", "1", "--device-type", "gw",
            "--payload", f"name=big.img,file={img},type=raw", "--key", keys.key("alice")]
    assert peak_rss_kib("pack", "-q", "-o", art, *base, "--encrypt-to", keys.pub("dev")) < limit
    assert peak_rss_kib("verify", "-q", "--trust", trust["alice"], "--device-key", keys.key("dev"), art) < limit
    assert peak_rss_kib("verify", "-q", "--trust", trust["alice"], art) < limit
    assert peak_rss_kib("unpack", "-q", "--trust", trust["alice"], "--device-key", keys.key("dev"),
                        "-C", tmp_path / "out", art) < limit
    assert peak_rss_kib("sign", "-q", "--key", keys.key("bob"), art) < limit
    assert peak_rss_kib("inspect", "-q", art) < limit


def test_unpack_interrupted_removes_temporary_directory(signed, trust, tmp_path):
    """SIGINT in the middle of a payload: the temporary directory goes, DIR never appears. The
    artifact comes through a FIFO so that the interruption lands at a known point."""
    import signal
    import time
    fifo = tmp_path / "art.fifo"
    os.mkfifo(fifo)
    dest = tmp_path / "out"
    p = subprocess.Popen([str(OTTER), "unpack", "--trust", str(trust["2of3"]), "-C", str(dest), str(fifo)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    data = signed.read_bytes()
    with open(fifo, "wb") as w:
        w.write(data[:len(data) // 2])
        w.flush()
        deadline = time.monotonic() + 20
        while not temp_leftovers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert temp_leftovers(tmp_path), "unpack did not create its temporary directory"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    assert p.returncode == EXIT_FAILURE
    assert "interrupted" in err
    assert not dest.exists() and temp_leftovers(tmp_path) == []


def test_output_write_error_is_a_failure(signed):
    with open("/dev/full", "w") as full:
        r = subprocess.run([str(OTTER), "inspect", str(signed)], stdout=full, stderr=subprocess.PIPE,
                           text=True)
    assert_error(r, EXIT_FAILURE, r"cannot write the output")


def piped(artifact, cmd):
    """Runs otter with the artifact fed through a pipe (not seekable) as /dev/stdin."""
    return subprocess.run(f"cat '{artifact}' | '{OTTER}' {cmd} /dev/stdin", shell=True,
                          capture_output=True, text=True, timeout=60)


def test_verify_and_unpack_from_a_pipe(signed, trust, tmp_path):
    """One pass over the input: an artifact streamed through a pipe verifies and unpacks."""
    r = piped(signed, f"verify --trust '{trust['2of3']}'")
    assert r.returncode == 0, r.stderr
    assert "OK: demo-firmware" in r.stdout
    dest = tmp_path / "out"
    r = piped(signed, f"unpack -q --trust '{trust['2of3']}' -C '{dest}'")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["app.tar", "boot.scr", "manifest.json",
                                                        "rootfs.img"]
