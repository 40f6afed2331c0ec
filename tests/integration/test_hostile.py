"""Hostile artifacts. Each is rejected by verify and unpack with exit status 3 and a message that
says what is wrong, and unpack leaves neither its destination nor a temporary directory behind."""
import json
import tarfile

import pytest

from helpers import (EXIT_REJECTED, assert_error, canonical, entries, manifest_of, members, ok, pack,
                     raw_tar, replace_manifest, resign_raw, run, temp_leftovers, write, write_tar)


def offsets(art):
    """Where things are in the artifact: data offsets of each entry and the end marker."""
    ms = members(art)
    last = ms[-1]
    end = last.offset_data + ((last.size + 511) // 512) * 512
    return {m.name: m for m in ms}, end


@pytest.mark.parametrize("where, pattern", [
    ("empty", r"ends before its manifest"),
    ("inside manifest header", r"ends before its manifest"),
    ("inside manifest", r"ends before its manifest"),
    ("inside signatures", r"ends before its signatures"),
    ("inside first payload", r"ends after 0 of 3 payloads \(inside a payload\)"),
    ("inside big payload past 1 MiB", r"ends after 0 of 3 payloads \(inside a payload\)"),
    ("inside last payload", r"ends after 2 of 3 payloads"),
    ("before the end marker", r"truncated"),
    ("inside the end marker", r"truncated"),
])
def test_truncated(signed, trust, tmp_path, check_rejected, where, pattern):
    m, end = offsets(signed)
    cut = {
        "empty": 0,
        "inside manifest header": 100,
        "inside manifest": m["manifest.json"].offset_data + 10,
        "inside signatures": m["manifest.sig"].offset_data + 20,
        "inside first payload": m["payload/rootfs.img"].offset_data + 1,
        "inside big payload past 1 MiB": m["payload/rootfs.img"].offset_data + 1024 * 1024 + 77,
        "inside last payload": m["payload/boot.scr"].offset_data + 5,
        "before the end marker": end,
        "inside the end marker": end + 512,
    }[where]
    art = write(tmp_path / "cut.otter", signed.read_bytes()[:cut])
    check_rejected(art, trust["2of3"], pattern)


def flip(art, out, offset, mask=0x01):
    data = bytearray(art.read_bytes())
    data[offset] ^= mask
    return write(out, bytes(data))


def test_flipped_byte_in_uncompressed_payload(signed, trust, tmp_path, check_rejected):
    m, _ = offsets(signed)
    art = flip(signed, tmp_path / "f.otter", m["payload/app.tar"].offset_data + 123456)
    check_rejected(art, trust["2of3"], r"payload 'app\.tar'.*SHA-256 .*not the one in the signed manifest")


def test_flipped_byte_in_compressed_payload(signed, trust, tmp_path, check_rejected):
    m, _ = offsets(signed)
    art = flip(signed, tmp_path / "f.otter", m["payload/rootfs.img"].offset_data + 700000)
    check_rejected(art, trust["2of3"], r"payload 'rootfs\.img'")


def test_flipped_byte_in_manifest_value(signed, trust, tmp_path, check_rejected):
    """A change that keeps the manifest valid JSON: the signatures no longer match."""
    m, _ = offsets(signed)
    text = dict(entries(signed))["manifest.json"]
    pos = text.index(b'"security_version":3') + len(b'"security_version":')
    art = flip(signed, tmp_path / "f.otter", m["manifest.json"].offset_data + pos, 0x03)  # '3' -> '0'
    r = run("verify", "--trust", trust["2of3"], art)
    assert "INVALID" in r.stdout
    check_rejected(art, trust["2of3"], r"0 of 2 required signatures \(invalid")


def test_flipped_byte_in_manifest_structure(signed, trust, tmp_path, check_rejected):
    m, _ = offsets(signed)
    art = flip(signed, tmp_path / "f.otter", m["manifest.json"].offset_data, 0x20)  # '{' -> '['
    # Signatures are checked over the raw bytes before the JSON is parsed: the parser never sees
    # unauthenticated input when a trust file is given.
    check_rejected(art, trust["2of3"], r"0 of 2 required signatures")


def test_flipped_byte_in_signature(signed, trust, keys, tmp_path, check_rejected):
    m, _ = offsets(signed)
    text = dict(entries(signed))["manifest.sig"]
    pos = text.index(b'"signature":"') + len(b'"signature":"') + 10
    # Another base64 letter in the middle of the signature: still 64 bytes, different ones.
    data = bytearray(signed.read_bytes())
    at = m["manifest.sig"].offset_data + pos
    data[at] = ord("B") if data[at] == ord("A") else ord("A")
    art = write(tmp_path / "f.otter", bytes(data))
    r = run("verify", "--trust", trust["2of3"], art)
    assert f"alice {keys.key_id('alice')}: INVALID" in r.stdout
    assert f"bob {keys.key_id('bob')}: valid" in r.stdout
    check_rejected(art, trust["2of3"], r"1 of 2 required signatures")


def test_manifest_not_first(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "order.otter", [items[1], items[0]] + items[2:])
    check_rejected(art, trust["2of3"], r"entry 1 must be 'manifest.json', found 'manifest.sig'")


def test_payloads_out_of_order(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "order.otter", items[:2] + [items[3], items[2], items[4]])
    check_rejected(art, trust["2of3"], r"expected entry 'payload/rootfs\.img', found 'payload/app\.tar'")


def test_unknown_extra_entry_at_the_end(signed, trust, tmp_path, check_rejected):
    art = write_tar(tmp_path / "extra.otter", entries(signed) + [("payload/evil.sh", b"rm -rf /\n")])
    check_rejected(art, trust["2of3"], r"unexpected entry 'payload/evil\.sh' after the last payload")


def test_unknown_extra_entry_before_payloads(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "extra.otter", items[:2] + [("README", b"hi")] + items[2:])
    check_rejected(art, trust["2of3"], r"found 'README'")


def test_duplicate_payload_entry(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "dup.otter", items[:3] + [items[2]] + items[3:])
    check_rejected(art, trust["2of3"], r"duplicate entry 'payload/rootfs\.img'")


def test_duplicate_manifest_entry(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "dup.otter", [items[0], items[0]] + items[1:])
    check_rejected(art, trust["2of3"], r"entry 2 must be 'manifest.sig', found 'manifest.json'")


@pytest.mark.parametrize("change", ["larger", "smaller"])
def test_stored_payload_size_differs_from_manifest(signed, trust, tmp_path, check_rejected, change):
    items = entries(signed)
    name, data = items[3]
    assert name == "payload/app.tar"
    items[3] = (name, data + b"\0" * 10 if change == "larger" else data[:-10])
    art = write_tar(tmp_path / f"{change}.otter", items)
    check_rejected(art, trust["2of3"], rf"payload 'app\.tar': archive entry has {len(items[3][1])} bytes, "
                                       rf"the manifest declares {len(data)}")


def test_decompression_bomb_stops_at_declared_size(keys, tmp_path, check_rejected):
    """A tiny zstd payload that expands far beyond the size its (validly signed) manifest declares:
    the decoder must stop at the declared size."""
    bomb = write(tmp_path / "zeros.img", b"\0" * (8 * 1024 * 1024))
    art = tmp_path / "bomb.otter"
    pack(art, "--name", "bomb", "--version", "1", "--device-type", "gw",
         "--payload", f"name=zeros.img,file={bomb},type=raw", "--key", keys.key("alice"))
    stored = manifest_of(art)["payloads"][0]["stored"]["size"]
    assert stored < 4096
    # Declare 1000 bytes; the stored bytes (and their hash) are untouched, so otter sign accepts it
    # and bob's signature is valid: only the decoder stands between the device and 8 MiB of zeros.
    evil = replace_manifest(art, tmp_path / "evil.otter", lambda m: m["payloads"][0].update(size=1000))
    ok("sign", "-q", "--key", keys.key("bob"), evil)
    trust_bob = keys.trust(tmp_path / "bob.json", 1, "bob")
    check_rejected(evil, trust_bob, r"exceeds the declared size of 1000 bytes")


def test_decoded_payload_smaller_than_declared(keys, tmp_path, check_rejected):
    f = write(tmp_path / "small.img", b"abc" * 1000)
    art = tmp_path / "s.otter"
    pack(art, "--name", "s", "--version", "1", "--device-type", "gw",
         "--payload", f"name=small.img,file={f},type=raw", "--key", keys.key("alice"))
    evil = replace_manifest(art, tmp_path / "evil.otter", lambda m: m["payloads"][0].update(size=5000))
    ok("sign", "-q", "--key", keys.key("bob"), evil)
    trust_bob = keys.trust(tmp_path / "bob.json", 1, "bob")
    check_rejected(evil, trust_bob, r"small\.img.*decoded size is 3000 bytes, the manifest declares 5000")


@pytest.mark.parametrize("name, pattern", [
    (b"payload/../../etc/passwd", r"\.\."),
    (b"../manifest.json", r"\.\."),
    (b"/etc/passwd", r"absolute|/etc/passwd"),
    (b"payload//rootfs.img", r"empty|payload//"),
    (b"./manifest.json", r"'\.'|\./"),
])
def test_unsafe_entry_names(signed, trust, tmp_path, check_rejected, name, pattern):
    items = entries(signed)
    raw = [(n.encode(), d) for n, d in items[:2]] + [(name, b"owned\n")] + [(n.encode(), d) for n, d in items[2:]]
    art = write(tmp_path / "names.otter", raw_tar(raw))
    check_rejected(art, trust["2of3"], pattern)


def test_unsafe_first_entry_name(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    raw = [(b"../" + items[0][0].encode(), items[0][1])] + [(n.encode(), d) for n, d in items[1:]]
    art = write(tmp_path / "names.otter", raw_tar(raw))
    check_rejected(art, trust["2of3"], r"\.\.")


def test_nul_in_ustar_name(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    raw = [(n.encode(), d) for n, d in items]
    raw[2] = (b"payload/rootfs\0.img", raw[2][1])
    art = write(tmp_path / "nul.otter", raw_tar(raw))
    check_rejected(art, trust["2of3"], r"NUL|payload/rootfs")


def test_nul_in_pax_path(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    info = tarfile.TarInfo("payload/rootfs.img")
    info.pax_headers = {"path": "payload/root\0fs.img"}
    items[2] = (info, items[2][1])
    art = write_tar(tmp_path / "nul.otter", items, fmt=tarfile.PAX_FORMAT)
    check_rejected(art, trust["2of3"], r"NUL|path")


def test_symlink_entry(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    info = tarfile.TarInfo("payload/rootfs.img")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/shadow"
    art = write_tar(tmp_path / "link.otter", items[:2] + [(info, b"")] + items[3:])
    check_rejected(art, trust["2of3"], r"regular|type|link")


def test_garbage_after_end_marker(signed, trust, tmp_path, check_rejected):
    art = write(tmp_path / "tail.otter", signed.read_bytes() + b"trailing garbage" + b"\0" * 1000)
    check_rejected(art, trust["2of3"], r"data after end of archive")


# ---- manifests with wrong types or missing fields ----

MANIFEST_EDITS = {
    "security_version as string": (lambda m: m.update(security_version="3"), r"security_version"),
    "size negative": (lambda m: m["payloads"][0].update(size=-1), r"size"),
    "missing name": (lambda m: m.pop("name"), r"missing field 'name'"),
    "missing payload sha256": (lambda m: m["payloads"][1].pop("sha256"), r"sha256"),
    "device_types not a list": (lambda m: m.update(device_types="gw-2"), r"device_types"),
    "unknown field": (lambda m: m.update(colour="blue"), r"unknown field 'colour'"),
    "unsafe payload name": (lambda m: m["payloads"][0].update(name="../../rootfs.img"), r"name"),
    "format 2": (lambda m: m.update(format=2), r"format"),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_bad_manifest_not_resigned(signed, trust, tmp_path, check_rejected, case):
    """Not re-signed: rejected (by the strict parser or by the signature check)."""
    edit, _ = MANIFEST_EDITS[case]
    art = replace_manifest(signed, tmp_path / "bad.otter", edit)
    r = run("verify", "--trust", trust["2of3"], art)
    assert r.returncode == EXIT_REJECTED
    check_rejected(art, trust["2of3"], r"manifest|signature")


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_bad_manifest_resigned(signed, keys, trust, tmp_path, check_rejected, case):
    """Validly signed by trusted keys, still refused: the manifest parser is strict."""
    edit, pattern = MANIFEST_EDITS[case]
    m = json.loads(dict(entries(signed))["manifest.json"])
    edit(m)
    art = resign_raw(signed, tmp_path / "bad.otter", canonical(m), keys.key("alice"), keys.key("bob"))
    line = check_rejected(art, trust["2of3"], pattern)
    assert "manifest" in line


def test_sign_refuses_malformed_manifest(signed, keys, tmp_path):
    art = replace_manifest(signed, tmp_path / "bad.otter", MANIFEST_EDITS["missing name"][0])
    before = art.read_bytes()
    assert_error(run("sign", "--key", keys.key("carol"), art), EXIT_REJECTED, r"missing field 'name'")
    assert art.read_bytes() == before and temp_leftovers(tmp_path) == []


def test_manifest_resigned_with_different_payload_hash(signed, keys, trust, tmp_path, check_rejected):
    """A validly signed manifest whose installed hash does not match the content."""
    m = json.loads(dict(entries(signed))["manifest.json"])
    m["payloads"][2]["sha256"] = "00" * 32
    art = resign_raw(signed, tmp_path / "h.otter", canonical(m), keys.key("alice"), keys.key("bob"))
    check_rejected(art, trust["2of3"], r"boot\.scr.*decoded content has SHA-256")


def test_oversized_manifest_entry(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    items[0] = ("manifest.json", b" " * (1024 * 1024 + 1))
    art = write_tar(tmp_path / "huge.otter", items)
    check_rejected(art, trust["2of3"], r"limit")


def test_not_a_tar_at_all(trust, tmp_path, check_rejected):
    art = write(tmp_path / "junk.otter", b"\x28\xb5\x2f\xfd" + b"junk" * 2000)
    check_rejected(art, trust["2of3"], r"tar")


def test_rejections_print_signers_but_no_payloads(signed, trust, tmp_path):
    m, _ = offsets(signed)
    art = flip(signed, tmp_path / "f.otter", m["payload/app.tar"].offset_data + 5)
    r = run("verify", "--trust", trust["2of3"], art)
    assert "2 of 2 required signatures valid" in r.stdout
    assert "OK" not in r.stdout
    assert_error(r, EXIT_REJECTED, r"^otter: verify: artifact rejected: ")
