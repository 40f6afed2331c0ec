"""Signatures: k-of-n multi-person control, otter sign, untrusted and missing signatures."""
import json

from helpers import (EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, assert_error, entries, ok, run,
                     temp_leftovers, write, write_tar)


def test_2of3_one_signature_is_rejected(release, keys, trust, tmp_path, check_rejected):
    art = release.pack(tmp_path / "one.otter", "--key", keys.key("alice"))
    r = run("verify", "--trust", trust["2of3"], art)
    assert r.returncode == EXIT_REJECTED
    # Who signed is reported even though verification failed.
    assert f"signature: alice {keys.key_id('alice')}: valid" in r.stdout
    assert "1 of 2 required signatures valid" in r.stdout
    assert "payload" not in r.stdout  # no payload byte was looked at
    check_rejected(art, trust["2of3"], r"1 of 2 required signatures")


def test_2of3_second_signer_passes(release, keys, trust, tmp_path):
    art = release.pack(tmp_path / "two.otter", "--key", keys.key("alice"))
    r = ok("sign", "--key", keys.key("carol"), art)
    assert keys.key_id("carol") in r.stdout
    v = ok("verify", "--trust", trust["2of3"], art)
    assert "2 of 2 required signatures valid" in v.stdout
    assert f"signature: carol {keys.key_id('carol')}: valid" in v.stdout
    # The third signer is welcome too.
    ok("sign", "-q", "--key", keys.key("bob"), art)
    v = ok("verify", "--trust", trust["2of3"], art)
    assert "3 of 2 required signatures valid" in v.stdout
    assert temp_leftovers(tmp_path) == []


def test_sign_to_another_file(release, keys, trust, tmp_path):
    art = release.pack(tmp_path / "a.otter", "--key", keys.key("alice"))
    before = art.read_bytes()
    out = tmp_path / "b.otter"
    ok("sign", "--key", keys.key("bob"), "-o", out, art)
    assert art.read_bytes() == before
    ok("verify", "--trust", trust["2of3"], out)
    assert_error(run("verify", "--trust", trust["2of3"], art), EXIT_REJECTED, r"1 of 2")


def test_signing_twice_with_the_same_key_is_refused(release, keys, tmp_path):
    art = release.pack(tmp_path / "a.otter", "--key", keys.key("alice"))
    before = art.read_bytes()
    r = run("sign", "--key", keys.key("alice"), art)
    assert_error(r, EXIT_FAILURE, rf"already signed by key {keys.key_id('alice')}")
    assert r.stdout == ""
    assert art.read_bytes() == before
    assert temp_leftovers(tmp_path) == []


def test_untrusted_signature_does_not_count(release, keys, trust, tmp_path, check_rejected):
    art = release.pack(tmp_path / "m.otter", "--key", keys.key("alice"), "--key", keys.key("mallory"))
    r = run("verify", "--trust", trust["2of3"], art)
    assert f"{keys.key_id('mallory')}: unknown key" in r.stdout
    assert "1 of 2 required signatures valid" in r.stdout
    check_rejected(art, trust["2of3"], r"1 of 2 required signatures.*unknown key")


def test_untrusted_only_signature(release, keys, trust, tmp_path, check_rejected):
    art = release.pack(tmp_path / "m.otter", "--key", keys.key("mallory"))
    r = run("verify", "--trust", trust["2of3"], art)
    assert f"signature: {keys.key_id('mallory')}: unknown key" in r.stdout
    check_rejected(art, trust["2of3"], r"0 of 2 required signatures")
    assert_error(r, EXIT_REJECTED, r"unknown key")


def test_too_few_signatures_threshold_2_with_json(release, keys, trust, tmp_path):
    art = release.pack(tmp_path / "one.otter", "--key", keys.key("bob"))
    r = run("verify", "--json", "--trust", trust["2of3"], art)
    assert r.returncode == EXIT_REJECTED
    j = json.loads(r.stdout)
    assert j["ok"] is False and j["error"]["code"] == "signature"
    assert j["valid"] == 1 and j["threshold"] == 2
    assert j["signatures"] == [{"key_id": keys.key_id("bob"), "name": "bob", "status": "valid"}]


def test_no_signature_at_all_empty_list(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    items[1] = ("manifest.sig", b'{"otter_signatures":1,"signatures":[]}\n')
    art = write_tar(tmp_path / "nosig.otter", items)
    check_rejected(art, trust["2of3"], r"no signatures")


def test_no_signature_entry(signed, trust, tmp_path, check_rejected):
    items = entries(signed)
    art = write_tar(tmp_path / "nosig.otter", [items[0]] + items[2:])
    check_rejected(art, trust["2of3"], r"entry 2 must be 'manifest.sig', found 'payload/rootfs.img'")


def test_signature_by_wrong_key_type(release, keys, tmp_path):
    art = release.pack(tmp_path / "a.otter", "--key", keys.key("alice"))
    before = art.read_bytes()
    assert_error(run("sign", "--key", keys.key("dev"), art), EXIT_FAILURE, r"dev\.key.*secret signing key")
    assert_error(run("sign", "--key", keys.pub("bob"), art), EXIT_FAILURE, r"bob\.pub.*secret signing key")
    assert art.read_bytes() == before


def test_sign_refuses_tampered_payload(signed, keys, tmp_path):
    """otter sign checks every payload against the manifest before adding a signature."""
    data = bytearray(signed.read_bytes())
    from helpers import members
    app = [m for m in members(signed) if m.name == "payload/app.tar"][0]
    data[app.offset_data + 1000] ^= 0x20
    art = write(tmp_path / "t.otter", bytes(data))
    before = art.read_bytes()
    r = run("sign", "--key", keys.key("carol"), art)
    assert_error(r, EXIT_REJECTED, r"app\.tar.*SHA-256")
    assert art.read_bytes() == before
    assert temp_leftovers(tmp_path) == []


def test_sign_refuses_truncated_artifact(signed, keys, tmp_path):
    from helpers import members
    last = members(signed)[-1]
    art = write(tmp_path / "t.otter", signed.read_bytes()[:last.offset_data + 3])
    before = art.read_bytes()
    assert_error(run("sign", "--key", keys.key("carol"), art), EXIT_REJECTED, r"truncated|ends")
    assert art.read_bytes() == before
    assert temp_leftovers(tmp_path) == []


def test_sign_quiet(release, keys, tmp_path):
    art = release.pack(tmp_path / "a.otter", "--key", keys.key("alice"))
    r = run("sign", "-q", "--key", keys.key("bob"), art)
    assert r.returncode == EXIT_OK and r.stdout == "" and r.stderr == ""
