"""The otter CLI's continuous-deployment and rollout options against the real otterd on loopback:
push to a release channel, deployment templates (otter templates), deploy to a dynamic group
(--query, --cap, --no-continuous), the policy flags (--type, --retries, --window...) merged into
--policy, and what `deployments show` prints of them (ETA, install settings, waiting devices,
retries). Devices are scripted through the device API (fleet_util.Device), as otter-agent would
speak it."""
import json
import re
import time

import pytest

from fleet_util import Release, accepted_device
from test_cli_remote import EXIT_FAILURE, EXIT_USAGE, Cli, error_line, home, otter  # noqa: F401


@pytest.fixture
def srv(make_server, tmp_path):
    """otterd whose rollout engine looks every 100 ms (releases come quickly)."""
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 5s\npoll_jitter = 1s\nrollout_tick = 100ms\n")
    s = make_server(args=["--config", conf])
    assert s.token
    return s


@pytest.fixture
def cli(srv, home):  # noqa: F811 (home is the fixture)
    return Cli(srv, home)


@pytest.fixture
def release(srv, tmp_path):
    """A release key the server trusts; artifacts "app" for device type gw-1."""
    return Release(srv, tmp_path / "release")


def api(server, method, path, body=None):
    r = server.request(method, path, body, token=server.token)
    assert 200 <= r.status < 300, r
    return r.json() if r.body else None


def set_tags(server, device, *tags):
    api(server, "PUT", f"/api/v1/devices/{device.id}/tags", {"tags": list(tags)})


def rows(server, dep):
    return {r["device_id"]: r for r in
            api(server, "GET", f"/api/v1/deployments/{dep}/devices?limit=1000")["devices"]}


def wait_until(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def work(device):
    """The deployment a check-in hands the device, or None."""
    r = device.checkin()
    assert r.status == 200, r
    return r.json().get("deployment")


def line(text, pattern):
    """The line of text matching pattern (a regex for the whole line)."""
    m = re.search(f"^{pattern}$", text, re.M)
    assert m, f"no line {pattern!r} in:\n{text}"
    return m


# ==== templates ====

def test_templates_create_list_show_enable_disable_delete(cli):
    t = cli.json("templates", "create", "--name", "beta-lab", "--channel", "beta", "--tag", "lab",
                 "--type", "soft", "--retries", "2")
    assert (t["name"], t["channel"], t["enabled"]) == ("beta-lab", "beta", True)
    assert t["target"] == {"tag": "lab"} and t["policy"] == {"type": "soft", "retries": 2}

    r = cli.ok("templates", "create", "--name", "ring1", "--channel", "stable", "--query",
               'attr.ring = "1"', "--cap", "10", "--disabled")
    m = re.fullmatch(r"template (\d+) \(ring1, channel stable\): created, disabled\n", r.stdout)
    assert m, r.stdout
    ring = int(m.group(1))
    shown = cli.json("templates", "show", ring)
    assert shown["target"] == {"query": 'attr.ring = "1"', "cap": 10}
    assert shown["enabled"] is False and shown["policy"] is None
    text = cli.ok("templates", "show", ring).stdout
    line(text, r'target: +query attr\.ring = "1" \(cap 10, continuous\)')
    line(text, r"enabled: +no")
    line(text, r"policy: +-")
    line(text, r"channel: +stable")
    text = cli.ok("templates", "show", t["id"]).stdout
    line(text, r'policy: +\{"retries":2,"type":"soft"\}')

    devs = cli.json("templates", "create", "--name", "two", "--channel", "beta", "--devices",
                    "7,8", "--device", "7")
    assert devs["target"] == {"devices": [7, 8]}

    table = cli.ok("templates", "list").stdout.splitlines()
    assert re.match(r"^ID +NAME +CHANNEL +ENABLED +TARGET +POLICY +CREATED$", table[0]), table
    assert len(table) == 4 and "tag lab" in table[1] and "devices 7,8" in table[3], table
    assert [x["id"] for x in cli.json("templates", "list")] == [t["id"], ring, devs["id"]]
    # By channel, disabled templates included (the server's ?channel= lists only enabled ones).
    assert [x["id"] for x in cli.json("templates", "list", "--channel", "stable")] == [ring]
    assert [x["id"] for x in cli.json("templates", "list", "--channel", "beta")] == \
        [t["id"], devs["id"]]
    assert cli.json("templates", "list", "--channel", "nothing") == []

    assert cli.ok("templates", "enable", ring).stdout == \
        f"template {ring} (ring1, channel stable): enabled\n"
    assert cli.json("templates", "disable", t["id"])["enabled"] is False
    assert api(cli.server, "GET", f"/api/v1/templates/{t['id']}")["enabled"] is False
    assert cli.ok("templates", "delete", devs["id"]).stdout == \
        f"template {devs['id']} (two, channel beta): deleted\n"
    gone = cli.json("templates", "delete", ring)
    assert gone["id"] == ring and gone["name"] == "ring1"
    assert [x["id"] for x in cli.json("templates", "list")] == [t["id"]]
    error_line(cli.run("templates", "show", ring), EXIT_FAILURE, r"server: .*\(HTTP 404\)")
    error_line(cli.run("templates", "delete", ring), EXIT_FAILURE, r"\(HTTP 404\)")
    error_line(cli.run("templates", "enable", ring), EXIT_FAILURE, r"\(HTTP 404\)")


def test_templates_refused_by_the_server(cli):
    cli.ok("templates", "create", "--name", "same", "--channel", "beta", "--tag", "a")
    error_line(cli.run("templates", "create", "--name", "same", "--channel", "beta", "--tag", "b"),
               EXIT_FAILURE, r"exists already.*\(HTTP 409\)")
    error_line(cli.run("templates", "create", "--name", "q", "--channel", "beta", "--query",
                       "attr.x ="), EXIT_FAILURE, r"column.*\(HTTP 400\)")
    error_line(cli.run("templates", "create", "--name", "r", "--channel", "beta", "--tag", "a",
                       "--retries", "99"), EXIT_FAILURE, r"retries.*\(HTTP 400\)")
    assert [x["name"] for x in cli.json("templates", "list")] == ["same"]


# ==== push --channel ====

def test_push_to_a_channel_deploys_through_its_templates(cli, srv, release):
    lab = [accepted_device(srv) for _ in range(2)]
    other = accepted_device(srv)
    for d in lab:
        set_tags(srv, d, "lab")
    t = cli.json("templates", "create", "--name", "lab-nightly", "--channel", "beta", "--tag",
                 "lab", "--policy", '{"phases":[{"size":1},{"size":"100%"}]}', "--type",
                 "download-only", "--retries", "1")
    bad = cli.json("templates", "create", "--name", "nobody", "--channel", "beta", "--tag",
                   "nobody")
    cli.ok("templates", "create", "--name", "off", "--channel", "beta", "--device", other.id,
           "--disabled")

    r = cli.ok("push", "--channel", "beta", release.artifact(version="2.0"))
    out = r.stdout.splitlines()
    assert re.fullmatch(r"pushed app 2\.0 as artifact \d+ \(sha256 [0-9a-f]{64}\) to channel beta",
                        out[0]), out
    m = re.fullmatch(rf"template {t['id']}: deployment (\d+) created", out[1])
    assert m and len(out) == 2, out  # the disabled template did nothing
    assert re.search(rf"^otter: push: warning: template {bad['id']} did not deploy it: .*tag",
                     r.stderr, re.M), r.stderr

    dep = api(srv, "GET", f"/api/v1/deployments/{m.group(1)}")
    assert dep["name"] == "lab-nightly: app 2.0" and dep["target"] == {"tag": "lab"}
    assert dep["device_count"] == 2 and set(rows(srv, dep["id"])) == {d.id for d in lab}
    policy = dep["rollout"]["policy"]
    assert policy["type"] == "download_only" and policy["retries"] == 1
    assert [p["size"] for p in policy["phases"]] == [1, "100%"]
    assert dep["created_by"].startswith(f"template:{t['id']}")

    # --json: the server's artifact, with its channel and what each template did.
    a = cli.json("push", "--channel", "beta", release.artifact(version="2.1"))
    assert a["channel"] == "beta" and a["version"] == "2.1"
    assert [x["template"] for x in a["deployments"]] == [t["id"], bad["id"]]
    assert isinstance(a["deployments"][0]["deployment_id"], int) and a["deployments"][1]["error"]
    # A channel without templates, and no channel at all.
    r = cli.ok("push", "--channel", "edge", release.artifact(version="2.2"))
    assert r.stdout.endswith("channel edge has no enabled deployment templates: nothing deployed\n")
    r = cli.ok("push", release.artifact(version="2.3"))
    assert "channel" not in r.stdout and r.stderr == ""
    assert cli.json("push", release.artifact(version="2.4")).get("deployments") is None
    # -q: the created deployments are not printed, a template's failure still is (a warning).
    r = cli.ok("push", "-q", "--channel", "beta", release.artifact(version="2.5"))
    assert r.stdout == "" and "did not deploy it" in r.stderr


def test_push_of_a_foreign_artifact_to_a_channel(cli, srv, tmp_path):
    f = tmp_path / "fw.swu"
    f.write_bytes(b"070701" + bytes(200))
    a = cli.json("push", "--format", "swu", "--name", "fw", "--version", "1.0", "-T", "board",
                 "--channel", "hawk", f)
    assert a["channel"] == "hawk" and a["deployments"] == []


# ==== deploy --query ====

def test_deploy_to_a_query_picks_the_matching_devices(cli, srv, release):
    devs = [accepted_device(srv, identity={"mac": f"02:00:00:00:06:0{i}"}) for i in range(4)]
    for i in (0, 1, 3):
        set_tags(srv, devs[i], "lab")
    art = cli.json("push", release.artifact(version="1.0"))
    q = 'tag("lab") and identity.mac != "02:00:00:00:06:03"'
    r = cli.ok("deploy", "--artifact", art["id"], "--query", q)
    m = re.fullmatch(r"deployment (\d+) created: app 1\.0 to 2 devices \(and those that match "
                     r"the query later\)\n", r.stdout)
    assert m, r.stdout
    dep = int(m.group(1))
    assert set(rows(srv, dep)) == {devs[0].id, devs[1].id}
    assert api(srv, "GET", f"/api/v1/deployments/{dep}")["target"] == \
        {"query": q, "continuous": True}
    line(cli.ok("deployments", "show", dep).stdout, rf"target: +query {re.escape(q)} \(continuous\)")

    # A device that comes to match later joins (continuous membership).
    cli.ok("devices", "tag", devs[2].id, "lab")
    assert set(rows(srv, dep)) == {devs[0].id, devs[1].id, devs[2].id}

    capped = cli.json("deploy", "--artifact", "app@1.0", "--query", 'tag("lab")', "--cap", "1",
                      "--no-continuous", "--name", "capped")
    assert capped["device_count"] == 1 and capped["name"] == "capped"
    assert capped["target"] == {"query": 'tag("lab")', "cap": 1, "continuous": False}
    r = cli.ok("deploy", "--artifact", art["id"], "--query", 'tag("lab")', "--no-continuous")
    assert re.fullmatch(r"deployment \d+ created: app 1\.0 to 4 devices\n", r.stdout), r.stdout
    table = cli.ok("deployments", "list").stdout
    assert 'query tag("lab") (cap 1, fixed)' in table, table

    # The server's verdicts on the query.
    error_line(cli.run("deploy", "--artifact", art["id"], "--query", 'tag("nobody")'),
               EXIT_FAILURE, r"no accepted device matches the query.*\(HTTP 400\)")
    error_line(cli.run("deploy", "--artifact", art["id"], "--query", "attr.x ="), EXIT_FAILURE,
               r"column.*\(HTTP 400\)")


# ==== the policy flags ====

def deploy_json(cli, art, devs, *args):
    ids = ",".join(str(d.id) for d in devs)
    return cli.json("deploy", "--artifact", art, "--devices", ids, *args)


def rollout_policy(srv, dep):
    return api(srv, "GET", f"/api/v1/deployments/{dep['id']}")["rollout"]["policy"]


def test_deploy_policy_flags_merge_into_the_policy(cli, srv, release):
    devs = [accepted_device(srv) for _ in range(2)]
    art = cli.json("push", release.artifact(version="1.0"))["id"]
    dep = deploy_json(cli, art, devs, "--type", "soft", "--retries", "2", "--window",
                      "0 2 * * *", "--window-duration", "3h", "--window-tz", "Europe/Berlin",
                      "--policy", '{"phases":[{"size":1},{"size":"100%"}]}')
    p = rollout_policy(srv, dep)
    assert p["type"] == "soft" and p["retries"] == 2
    assert p["maintenance_window"] == {"cron": "0 2 * * *", "duration": 10800,
                                       "timezone": "Europe/Berlin"}
    assert [x["size"] for x in p["phases"]] == [1, "100%"]
    text = cli.ok("deployments", "show", dep["id"]).stdout
    line(text, r"install: +type soft, retries 2, window 0 2 \* \* \* for 3h \(Europe/Berlin\)")

    # Without --policy the flags make one; a bare number of seconds; UTC by default.
    dep = deploy_json(cli, art, devs, "--type", "download-only", "--window", "30 1 * * 6",
                      "--window-duration", "5400")
    p = rollout_policy(srv, dep)
    assert p["type"] == "download_only" and p["retries"] == 0
    assert p["maintenance_window"] == {"cron": "30 1 * * 6", "duration": 5400, "timezone": "UTC"}
    line(cli.ok("deployments", "show", dep["id"]).stdout,
         r"install: +type download_only, window 30 1 \* \* 6 for 1h30m \(UTC\)")

    # The same value in both places is no conflict; a policy file works like the JSON text.
    pf = release.dir / "policy.json"
    pf.write_text(json.dumps({"retries": 3, "max_per_minute": 60}))
    dep = deploy_json(cli, art, devs, "--policy", pf, "--retries", "3", "--type", "forced")
    p = rollout_policy(srv, dep)
    assert (p["retries"], p["type"], p["max_per_minute"]) == (3, "forced", 60)
    line(cli.ok("deployments", "show", dep["id"]).stdout, r"install: +retries 3")

    # A default policy says nothing about installing; no policy, no rollout lines at all.
    dep = deploy_json(cli, art, devs, "--policy", '{"max_per_minute": 10}')
    assert "install:" not in cli.ok("deployments", "show", dep["id"]).stdout
    dep = deploy_json(cli, art, devs)
    text = cli.ok("deployments", "show", dep["id"]).stdout
    assert "rollout:" not in text and "install:" not in text

    # Conflicts are usage errors, and nothing is created.
    before = len(cli.json("deployments", "list"))
    ids = f"{devs[0].id},{devs[1].id}"
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--policy", '{"retries":1}',
                       "--retries", "2"), EXIT_USAGE,
               r"""--retries conflicts with --policy's "retries" \(1 there, 2 here\)""")
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--policy", pf, "--type", "soft",
                       "--retries", "4"), EXIT_USAGE, r"--retries conflicts")
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--policy",
                       '{"maintenance_window":{"cron":"0 3 * * *","duration":"1h"}}',
                       "--window", "0 2 * * *", "--window-duration", "1h"), EXIT_USAGE,
               r"--window conflicts with --policy's \"maintenance_window\"")
    assert len(cli.json("deployments", "list")) == before

    # What only the server can check comes back as its 400.
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--retries", "99"), EXIT_FAILURE,
               r"retries.*\(HTTP 400\)")
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--window", "61 2 * * *",
                       "--window-duration", "1h"), EXIT_FAILURE,
               r"maintenance_window.*\(HTTP 400\)")
    error_line(cli.run("deploy", "-a", art, "--devices", ids, "--window", "0 2 * * *",
                       "--window-duration", "1h", "--window-tz", "Mars/Olympus_Mons"),
               EXIT_FAILURE, r"maintenance_window.*\(HTTP 400\)")


# ==== deployments show: ETA, waiting devices, retries ====

def test_deployments_show_eta_waiting_and_retries(cli, srv, release):
    devs = [accepted_device(srv) for _ in range(4)]
    art = cli.json("push", release.artifact(version="1.0"))["id"]
    dep = deploy_json(cli, art, devs, "--retries", "1", "--type", "soft", "--policy",
                      '{"phases":[{"size":3},{"size":"100%"}]}')["id"]
    text = cli.ok("deployments", "show", dep).stdout
    line(text, r"rollout: +\w+, phase 1 of 2 \(canary\), \d of 4 devices released, eta -")
    line(text, r"install: +type soft, retries 1")
    line(text, r"  1 canary: +\w+: devices 1\.\.3, success -; .*\d not released, eta -")
    line(text, r"DEVICE +STATUS +PROGRESS +RETRIES +UPDATED +MESSAGE")

    # The canary phase: one device succeeds, one has downloaded and waits, one fails once and
    # is offered the deployment again.
    wait_until(lambda: api(srv, "GET", f"/api/v1/deployments/{dep}")["rollout"]["released"] == 3,
               "the canary phase's release")
    by_id = {d.id: d for d in devs}
    order = sorted(rows(srv, dep).values(), key=lambda r: r["release_order"])
    ok, waits, fails, later = (by_id[r["device_id"]] for r in order)
    for d in (ok, waits, fails):
        assert work(d)["id"] == dep
    assert ok.report(dep, "success").status == 204
    assert waits.report(dep, "downloading", progress=100).status == 204
    assert waits.report(dep, "waiting", message="waiting for the user").status == 204
    assert fails.report(dep, "failure", message="disk full").status == 204

    text = cli.ok("deployments", "show", dep).stdout
    line(text, r"states: +pending 2, waiting 1, success 1")
    m = line(text, r"rollout: +running, phase 1 of 2 \(canary\), 3 of 4 devices released, "
                   r"eta ((?:\d+[dhms]){1,2})")
    line(text, r"  1 canary: +running: devices 1\.\.3, success 100%; pending 1, waiting 1, "
               r"success 1, 0 not released, eta (?:\d+[dhms]){1,2}")
    line(text, r"  2 wave-1: +waiting: devices 4\.\.4, success -; 1 not released")
    line(text, rf"{fails.id} +pending +- +1 +\S+ \S+ +retry 1 of 1 after failure: disk full")
    line(text, rf"{waits.id} +waiting +\S+ +0 +\S+ \S+ +waiting for the user")
    line(text, rf"{later.id} +pending +- +0 .*")
    one = cli.ok("deployments", "show", dep, "--device", fails.id).stdout
    line(one, r"retries: +1")
    js = cli.json("deployments", "show", dep)
    assert js["rollup"]["waiting"] == 1 and isinstance(js["rollout"]["eta_s"], int)
    assert [p["counts"]["unreleased"] for p in js["rollout"]["phases"]] == [0, 1]
    assert {r["device_id"]: r["retries"] for r in js["devices"]}[fails.id] == 1
    assert m.group(1)


def test_deployments_show_without_retries_has_no_retries_column(cli, srv, release):
    d = accepted_device(srv)
    art = cli.json("push", release.artifact(version="1.0"))["id"]
    dep = deploy_json(cli, art, [d])["id"]
    text = cli.ok("deployments", "show", dep).stdout
    line(text, r"DEVICE +STATUS +PROGRESS +UPDATED +MESSAGE")


# ==== usage errors (found before any connection: no server needed) ====

@pytest.mark.parametrize("args, pattern", [
    (["deploy", "-a", "1", "--device", "1", "--query", "x"], r"--device and --query: .*not both"),
    (["deploy", "-a", "1", "--tag", "a", "--query", "x"], r"--tag and --query: .*not both"),
    (["deploy", "-a", "1", "--devices", "1,2", "--tag", "a"], r"not both"),
    (["deploy", "-a", "1"], r"missing targets: .*--query"),
    (["deploy", "-a", "1", "--tag", "a", "--cap", "2"], r"--cap and --no-continuous go with --query"),
    (["deploy", "-a", "1", "--tag", "a", "--no-continuous"], r"go with --query"),
    (["deploy", "-a", "1", "--query", "x", "--cap", "0"], r"--cap wants a positive number"),
    (["deploy", "-a", "1", "--query", ""], r"--query must not be empty"),
    (["deploy", "-a", "1", "--tag", "a", "--type", "sometimes"], r"--type must be forced, soft"),
    (["deploy", "-a", "1", "--tag", "a", "--retries", "many"], r"--retries wants a number"),
    (["deploy", "-a", "1", "--tag", "a", "--window", "0 2 * * *"], r"needs --window-duration"),
    (["deploy", "-a", "1", "--tag", "a", "--window-duration", "3h"], r"go with --window"),
    (["deploy", "-a", "1", "--tag", "a", "--window-tz", "UTC"], r"go with --window"),
    (["deploy", "-a", "1", "--tag", "a", "--window", "0 2 * * *", "--window-duration", "soon"],
     r"--window-duration wants a duration"),
    (["deploy", "-a", "1", "--tag", "a", "--type", "soft", "--type", "forced"],
     r"--type given twice"),
    (["deploy", "-a", "1", "--tag", "a", "--policy", '{"type":"forced"}', "--type", "soft"],
     r"""--type conflicts with --policy's "type" \("forced" there, "soft" here\)"""),
    (["deploy", "-a", "1", "--tag", "a", "--policy", '{"type":'], r"--policy: not a JSON object"),
    (["push", "--channel", "be ta", "a.otter"], r"--channel must be 1\.\.63 characters"),
    (["push", "--channel", "", "a.otter"], r"--channel must be"),
    (["push", "--channel", "a/b", "a.otter"], r"--channel must be"),
    (["push", "--channel", "x" * 64, "a.otter"], r"--channel must be"),
    (["templates"], r"missing a subcommand"),
    (["templates", "frob"], r"unknown subcommand 'frob'"),
    (["templates", "create", "--name", "n", "--tag", "a"], r"needs --name and --channel"),
    (["templates", "create", "--name", "n", "--channel", "be ta", "--tag", "a"],
     r"--channel must be"),
    (["templates", "create", "--name", "n", "--channel", "c"], r"missing targets"),
    (["templates", "create", "--name", "n", "--channel", "c", "--tag", "a", "--device", "1"],
     r"not both"),
    (["templates", "create", "--name", "", "--channel", "c", "--tag", "a"], r"--name must be"),
    (["templates", "create", "--name", "n", "--channel", "c", "--tag", "a", "--retries", "1",
      "--policy", '{"retries":2}'], r"--retries conflicts"),
    (["templates", "list", "--tag", "a"], r"'templates list' does not take --tag"),
    (["templates", "list", "-t", "a"], r"'templates list' does not take -t"),
    (["templates", "enable", "1", "--disabled"], r"'templates enable' does not take --disabled"),
    (["templates", "show"], r"'templates show' needs ID"),
    (["templates", "show", "x"], r"ID must be a positive number"),
    (["templates", "delete", "1", "2"], r"too many arguments"),
    (["templates", "list", "1"], r"too many arguments"),
])
def test_usage_errors(home, args, pattern):  # noqa: F811 (home is the fixture)
    r = otter(home, *args, env={"OTTER_SERVER": "http://127.0.0.1:1", "OTTER_TOKEN": "otr_x"})
    error_line(r, EXIT_USAGE, pattern)


def test_help(home):  # noqa: F811
    r = otter(home, "templates", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: otter templates create"), r
    assert "--token-file" in r.stdout and "--window-duration" in r.stdout
    assert otter(home, "help", "templates").stdout == r.stdout
    for cmd, flag in (("deploy", "--query"), ("deploy", "--retries"), ("push", "--channel")):
        assert flag in otter(home, cmd, "--help").stdout
    assert "  templates " in otter(home, "--help").stdout
