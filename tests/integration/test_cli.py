"""Command line: help, version, usage errors, exit statuses, keygen, trust."""
import json
import stat

import pytest

from helpers import (EXIT_FAILURE, EXIT_OK, EXIT_USAGE, assert_error, ok, run)

COMMANDS = ["keygen", "trust", "pack", "sign", "verify", "inspect", "unpack"]


def test_main_help_lists_every_command():
    r = ok("--help")
    for c in COMMANDS:
        assert f"  {c} " in r.stdout
    assert "Exit status" in r.stdout
    assert r.stderr == ""


def test_version():
    r = ok("--version")
    assert r.stdout.startswith("otter ")
    assert r.stdout.strip() != "otter unknown"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help(cmd):
    r = ok(cmd, "--help")
    assert r.stdout.startswith(f"Usage: otter {cmd}")
    assert r.stderr == ""
    assert ok("help", cmd).stdout == r.stdout


def test_no_command_is_a_usage_error():
    r = run()
    assert r.returncode == EXIT_USAGE
    assert "Usage: otter" in r.stderr
    assert r.stdout == ""


def test_unknown_command():
    assert_error(run("frobnicate"), EXIT_USAGE, r"^otter: unknown command 'frobnicate'")


@pytest.mark.parametrize("args, pattern", [
    (["verify", "--bogus", "x"], r"otter: verify: unknown option '--bogus'"),
    (["verify", "x.otter"], r"otter: verify: missing --trust"),
    (["verify", "--trust"], r"otter: verify: option '--trust' needs an argument"),
    (["verify", "--trust", "t.json"], r"missing ARTIFACT"),
    (["verify", "--trust", "t.json", "--provides", "a=b", "x"], r"need --device-type"),
    (["verify", "--trust", "t.json", "--device-type", "gw", "--provides", "novalue", "x"],
     r"KEY=VALUE"),
    (["verify", "--trust", "t.json", "--device-type", "gw", "--min-security-version", "-1", "x"],
     r"min-security-version"),
    (["keygen"], r"otter: keygen: missing BASENAME"),
    (["keygen", "--type", "rsa", "k"], r"--type must be 'signing' or 'device'"),
    (["keygen", "a", "b"], r"too many arguments"),
    (["keygen", "keys/"], r"must name a file"),
    (["trust", "k.pub"], r"missing -o"),
    (["trust", "-o", "t.json"], r"missing KEY.pub"),
    (["trust", "-o", "t.json", "--threshold", "3", "a.pub", "b.pub"], r"more than the 2 keys"),
    (["trust", "-o", "t.json", "--threshold", "0", "a.pub"], r"--threshold"),
    (["pack", "spec"], r"missing -o"),
    (["pack", "-o", "x.otter", "a.spec", "b.spec"], r"at most one SPEC"),
    (["pack", "-o", "x.otter", "--level", "20"], r"--level must be 1..19"),
    (["pack", "-o", "x.otter", "--name", "n"], r"missing the artifact version"),
    (["sign", "x.otter"], r"missing --key"),
    (["sign", "--key", "k.key"], r"missing ARTIFACT"),
    (["inspect"], r"missing ARTIFACT"),
    (["unpack", "--trust", "t.json", "x.otter"], r"missing -C DIR"),
    (["unpack", "-C", "d", "x.otter"], r"missing --trust"),
    (["-x"], r"unknown option '-x'"),
])
def test_usage_errors_exit_2(args, pattern, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert_error(r, EXIT_USAGE, pattern)
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == [], "a usage error must not create files"


def test_missing_artifact_exit_1(trust, tmp_path):
    r = run("verify", "--trust", trust["alice"], tmp_path / "nope.otter")
    assert_error(r, EXIT_FAILURE, r"otter: verify: .*nope\.otter: No such file")
    assert r.stdout == ""


def test_missing_trust_file_exit_1(signed, tmp_path):
    r = run("verify", "--trust", tmp_path / "missing.json", signed)
    assert_error(r, EXIT_FAILURE, r"missing\.json")


def test_missing_key_file_exit_1(signed, tmp_path):
    before = signed.read_bytes()
    r = run("sign", "--key", tmp_path / "nokey.key", signed)
    assert_error(r, EXIT_FAILURE, r"nokey\.key")
    assert signed.read_bytes() == before


def test_directory_as_artifact_exit_1(trust, tmp_path):
    assert_error(run("inspect", tmp_path), EXIT_FAILURE, r"Is a directory")


def test_malformed_trust_file_is_a_failure_not_a_rejection(signed, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"otter_trust":1,"threshold":1,"keys":[]}')
    assert_error(run("verify", "--trust", bad, signed), EXIT_FAILURE, r"trust file")


# ---- keygen ----

def test_keygen_signing_key_files(tmp_path):
    r = ok("keygen", "--name", "Release Key 1", tmp_path / "rel")
    key, pub = tmp_path / "rel.key", tmp_path / "rel.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    k, p = json.loads(key.read_text()), json.loads(pub.read_text())
    assert k["type"] == "ed25519-secret" and p["type"] == "ed25519-public"
    assert k["key_id"] == p["key_id"] and p["name"] == "Release Key 1"
    assert "secret_key" not in p
    assert p["key_id"] in r.stdout
    # Never print key material.
    assert k["secret_key"] not in r.stdout + r.stderr
    assert k["public_key"] not in r.stdout


def test_keygen_device_key(tmp_path):
    ok("keygen", "--type", "device", tmp_path / "gw")
    assert json.loads((tmp_path / "gw.key").read_text())["type"] == "x25519-secret"
    assert json.loads((tmp_path / "gw.pub").read_text())["type"] == "x25519-public"


def test_keygen_default_name_is_basename(tmp_path):
    ok("keygen", "-q", tmp_path / "carol")
    assert json.loads((tmp_path / "carol.pub").read_text())["name"] == "carol"


def test_keygen_refuses_to_overwrite(tmp_path):
    ok("keygen", "-q", tmp_path / "k")
    before = (tmp_path / "k.key").read_bytes()
    assert_error(run("keygen", tmp_path / "k"), EXIT_FAILURE, r"already exists.*--force")
    assert (tmp_path / "k.key").read_bytes() == before
    ok("keygen", "-q", "--force", tmp_path / "k")
    assert (tmp_path / "k.key").read_bytes() != before


def test_keygen_refuses_when_only_pub_exists(tmp_path):
    (tmp_path / "k.pub").write_text("x")
    assert_error(run("keygen", tmp_path / "k"), EXIT_FAILURE, r"k\.pub already exists")
    assert not (tmp_path / "k.key").exists()


def test_keygen_bad_name_is_usage_error(tmp_path):
    assert_error(run("keygen", "--name", "x" * 200, tmp_path / "k"), EXIT_USAGE, r"not a valid key name")
    assert list(tmp_path.iterdir()) == []


def test_keygen_quiet(tmp_path):
    r = ok("keygen", "-q", tmp_path / "k")
    assert r.stdout == "" and r.stderr == ""


# ---- trust ----

def test_trust_file(keys, tmp_path):
    r = ok("trust", "-o", tmp_path / "t.json", "--threshold", "2", keys.pub("alice"), keys.pub("bob"),
           keys.pub("carol"))
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["threshold"] == 2
    assert [k["key_id"] for k in t["keys"]] == [keys.key_id(n) for n in ("alice", "bob", "carol")]
    assert "2 of 3" in r.stdout


def test_trust_default_threshold_is_1(keys, tmp_path):
    ok("trust", "-q", "-o", tmp_path / "t.json", keys.pub("alice"))
    assert json.loads((tmp_path / "t.json").read_text())["threshold"] == 1


def test_trust_rejects_device_key(keys, tmp_path):
    r = run("trust", "-o", tmp_path / "t.json", keys.pub("dev"))
    assert_error(r, EXIT_FAILURE, r"dev\.pub.*public signing key")
    assert not (tmp_path / "t.json").exists()


def test_trust_rejects_duplicate_key(keys, tmp_path):
    r = run("trust", "-o", tmp_path / "t.json", keys.pub("alice"), keys.pub("alice"))
    assert_error(r, EXIT_FAILURE, r"same")
    assert not (tmp_path / "t.json").exists()


def test_trust_from_secret_key_warns(keys, tmp_path):
    r = ok("trust", "-o", tmp_path / "t.json", keys.key("alice"))
    assert "warning" in r.stderr and "public half" in r.stderr
    t = (tmp_path / "t.json").read_text()
    assert "secret" not in t
    assert json.loads(t)["keys"][0]["key_id"] == keys.key_id("alice")


def test_errors_print_nothing_on_stdout(tmp_path):
    r = run("inspect", tmp_path / "missing")
    assert r.returncode == EXIT_FAILURE and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1


def test_no_progress_when_stderr_is_not_a_terminal(signed, trust):
    for args in (["verify", "--trust", trust["2of3"]], ["inspect"]):
        r = run(*args, signed)
        assert r.returncode == EXIT_OK
        assert r.stderr == ""
