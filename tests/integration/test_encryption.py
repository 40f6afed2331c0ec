"""Encrypted artifacts: sealed to device-class keys, verified with or without a device key."""
import json

import pytest

from helpers import (EXIT_FAILURE, EXIT_REJECTED, assert_error, entries, manifest_of, members, ok, run,
                     temp_leftovers, write)


@pytest.fixture
def encrypted(release, keys, tmp_path):
    return release.pack(tmp_path / "enc.otter", "--key", keys.key("alice"), "--key", keys.key("bob"),
                        "--encrypt-to", keys.pub("dev"))


def test_encrypted_payloads_are_not_plaintext(encrypted, release):
    m = manifest_of(encrypted)
    assert all(p["encoding"]["encrypted"] for p in m["payloads"])
    stored = dict(entries(encrypted))
    assert release.files["app.tar"].read_bytes()[:4096] not in stored["payload/app.tar"]


def test_encrypted_verify_and_unpack_with_device_key(encrypted, release, keys, trust, tmp_path):
    r = ok("verify", "--trust", trust["2of3"], "--device-key", keys.key("dev"), encrypted)
    assert "not decrypted" not in r.stdout.lower()
    assert "payload rootfs.img: verified" in r.stdout
    j = json.loads(ok("verify", "--json", "--trust", trust["2of3"], "--device-key", keys.key("dev"),
                      encrypted).stdout)
    assert j["encrypted"] is True and j["decrypted"] is True
    dest = tmp_path / "out"
    ok("unpack", "--trust", trust["2of3"], "--device-key", keys.key("dev2"), "--device-key",
       keys.key("dev"), "-C", dest, encrypted)
    for name, src in release.files.items():
        assert (dest / name).read_bytes() == src.read_bytes()


def test_encrypted_verify_without_device_key_checks_stored_bytes(encrypted, trust):
    r = ok("verify", "--trust", trust["2of3"], encrypted)
    assert "NOT decrypted" in r.stdout
    assert "payload rootfs.img: stored bytes verified" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("OK:") and "not decrypted" in r.stdout.splitlines()[-1]
    j = json.loads(ok("verify", "--json", "--trust", trust["2of3"], encrypted).stdout)
    assert j["ok"] is True and j["encrypted"] is True and j["decrypted"] is False


def test_encrypted_stored_mode_still_catches_tampering(encrypted, trust, tmp_path):
    data = bytearray(encrypted.read_bytes())
    m = [x for x in members(encrypted) if x.name == "payload/boot.scr"][0]
    data[m.offset_data + 30] ^= 1
    bad = write(tmp_path / "bad.otter", bytes(data))
    assert_error(run("verify", "--trust", trust["2of3"], bad), EXIT_REJECTED, r"boot\.scr.*SHA-256")


def test_encrypted_wrong_device_key(encrypted, keys, trust, check_rejected):
    check_rejected(encrypted, trust["2of3"], r"encrypted for device keys .*none of the given device keys",
                   "--device-key", keys.key("dev2"))


def test_encrypted_unpack_without_device_key(encrypted, trust, tmp_path):
    dest = tmp_path / "out"
    r = run("unpack", "--trust", trust["2of3"], "-C", dest, encrypted)
    assert_error(r, EXIT_REJECTED, r"no device key was given")
    assert not dest.exists() and temp_leftovers(tmp_path) == []


def test_device_key_must_be_a_secret_device_key(encrypted, keys, trust):
    assert_error(run("verify", "--trust", trust["2of3"], "--device-key", keys.pub("dev"), encrypted),
                 EXIT_FAILURE, r"dev\.pub.*secret device key")
    assert_error(run("verify", "--trust", trust["2of3"], "--device-key", keys.key("alice"), encrypted),
                 EXIT_FAILURE, r"alice\.key.*secret device key")


def test_encrypted_to_two_device_classes(release, keys, trust, tmp_path):
    art = release.pack(tmp_path / "two.otter", "--key", keys.key("alice"), "--encrypt-to", keys.pub("dev"),
                       "--encrypt-to", keys.pub("dev2"))
    for dev in ("dev", "dev2"):
        ok("verify", "-q", "--trust", trust["alice"], "--device-key", keys.key(dev), art)


def test_sealed_key_swapped_between_recipients(release, keys, trust, tmp_path, check_rejected):
    """A recipient entry whose sealed key does not open with the named device key: the manifest
    would have to be re-signed, so it is signed here (by a trusted key) to reach the decrypt step."""
    from helpers import canonical, resign_raw
    art = release.pack(tmp_path / "two.otter", "--key", keys.key("alice"), "--encrypt-to", keys.pub("dev"),
                       "--encrypt-to", keys.pub("dev2"))
    m = manifest_of(art)
    r = m["encryption"]["recipients"]
    r[0]["sealed_key"], r[1]["sealed_key"] = r[1]["sealed_key"], r[0]["sealed_key"]
    bad = resign_raw(art, tmp_path / "swapped.otter", canonical(m), keys.key("alice"))
    check_rejected(bad, trust["alice"], r"does not open", "--device-key", keys.key("dev"))
