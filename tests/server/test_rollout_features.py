"""Rollout features at the API level, with scripted devices against the real otterd (SQLite and
PostgreSQL): retries per device, the waiting state, action types and maintenance windows in the
check-in answer (with otterd's test clock), dynamic groups with continuous membership, ETA, and
continuous deployment through release channels and templates."""
import time

import pytest

from fleet_util import Release, accepted_device
from pg_util import pg_database  # noqa: F401 (fixture)

# 2026-11-23 (a Monday) 01:00:00 UTC
MONDAY_1AM = 1795395600


@pytest.fixture
def clock(tmp_path, monkeypatch):
    path = tmp_path / "clock"
    path.write_text("0\n")
    monkeypatch.setenv("OTTERD_TEST_CLOCK_FILE", str(path))

    def set_time(unix):
        path.write_text(f"{int(unix - time.time())}\n")
        time.sleep(0.35)  # read again by otterd (every 50 ms) and a rollout tick passes

    return set_time


@pytest.fixture(params=["sqlite", "postgresql"])
def srv(request, make_server, tmp_path, clock):
    conf = tmp_path / "otterd.conf"
    text = "poll_interval = 5s\npoll_jitter = 1s\nrollout_tick = 100ms\n"
    if request.param == "postgresql":
        text += f"database = {request.getfixturevalue('pg_database')}\n"
    conf.write_text(text)
    s = make_server(args=["--config", conf])
    assert s.token
    return s


@pytest.fixture
def release(srv, tmp_path):
    return Release(srv, tmp_path / "release")


def api(server, method, path, body=None, status=None):
    r = server.request(method, path, body, token=server.token)
    if status is not None:
        assert r.status == status, r
    return r


def deploy(server, artifact_id, status=201, **target):
    body = {"name": "rollout", "artifact_id": artifact_id, **target}
    return api(server, "POST", "/api/v1/deployments", body, status=status)


def rows(server, dep):
    r = api(server, "GET", f"/api/v1/deployments/{dep}/devices?limit=1000", status=200)
    return {row["device_id"]: row for row in r.json()["devices"]}


def work(device):
    r = device.checkin()
    if r.status == 401:  # the test clock moved past the token's lifetime
        assert device.authenticate().status == 200
        r = device.checkin()
    assert r.status == 200, r
    return r.json().get("deployment")


def wait_until(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---- retries and the waiting state -------------------------------------------------------------

def test_a_failed_device_is_offered_the_deployment_again_up_to_retries(srv, release):
    d = accepted_device(srv)
    art = release.uploaded()
    dep = deploy(srv, art["id"], devices=[d.id], policy={"retries": 2}).json()["id"]
    for attempt in (1, 2):
        assert wait_until(lambda: work(d), "the release")["id"] == dep
        assert d.report(dep, "downloading", progress=50).status == 204
        assert d.report(dep, "failure", message=f"disk error {attempt}").status == 204
        row = rows(srv, dep)[d.id]
        assert row["status"] == "pending" and row["retries"] == attempt, row
        assert row["message"].startswith(f"retry {attempt} of 2 after failure: disk error"), row
        assert api(srv, "GET", f"/api/v1/deployments/{dep}").json()["status"] == "active"
    assert work(d)["id"] == dep
    assert d.report(dep, "rolled_back", message="health").status == 204
    row = rows(srv, dep)[d.id]
    assert row["status"] == "rolled_back" and row["retries"] == 2, row
    assert api(srv, "GET", f"/api/v1/deployments/{dep}").json()["status"] == "finished"
    # the timeline keeps every failure
    tl = api(srv, "GET", f"/api/v1/deployments/{dep}/devices/{d.id}").json()
    statuses = [e["status"] for e in tl["events"]]
    assert statuses.count("failure") == 2 and statuses[-1] == "rolled_back", statuses
    # a final state still never changes
    assert d.report(dep, "success").status == 409
    assert work(d) is None


def test_without_retries_a_failure_is_final(srv, release):
    d = accepted_device(srv)
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id]).json()["id"]
    assert work(d)["id"] == dep
    assert d.report(dep, "failure").status == 204
    assert rows(srv, dep)[d.id]["status"] == "failure"
    assert work(d) is None


def test_waiting_is_reported_counted_and_not_final(srv, release):
    d = accepted_device(srv)
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id]).json()["id"]
    assert work(d)["id"] == dep
    assert d.report(dep, "waiting", message="waiting for the maintenance window").status == 204
    show = api(srv, "GET", f"/api/v1/deployments/{dep}").json()
    assert show["rollup"]["waiting"] == 1 and show["status"] == "active", show
    assert work(d)["id"] == dep  # still its work
    assert d.report(dep, "installing").status == 204
    assert d.report(dep, "success").status == 204
    assert rows(srv, dep)[d.id]["status"] == "success"


def test_cancel_ends_waiting_devices(srv, release):
    d = accepted_device(srv)
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id]).json()["id"]
    assert work(d)["id"] == dep
    assert d.report(dep, "waiting").status == 204
    api(srv, "POST", f"/api/v1/deployments/{dep}/cancel", status=200)
    assert rows(srv, dep)[d.id]["status"] == "cancelled"
    assert work(d) is None


# ---- action types and maintenance windows ------------------------------------------------------

def test_type_is_sent_with_the_work(srv, release):
    art = release.uploaded()
    for typ in ("soft", "download_only", "forced"):
        d = accepted_device(srv)
        dep = deploy(srv, art["id"], devices=[d.id], policy={"type": typ}).json()["id"]
        w = wait_until(lambda: work(d), f"the {typ} deployment")
        assert w["id"] == dep
        if typ == "forced":
            assert "type" not in w
        else:
            assert w["type"] == typ
        assert "install_allowed" not in w
        d.report(dep, "success")


def test_maintenance_window_holds_installs_outside_it(srv, release, clock):
    clock(MONDAY_1AM)
    d = accepted_device(srv)
    window = {"cron": "0 3 * * 1-5", "duration": "1h", "timezone": "UTC"}
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id],
                 policy={"maintenance_window": window}).json()
    assert dep["id"]
    w = wait_until(lambda: work(d), "the work")
    assert w["install_allowed"] is False  # 01:00: closed
    stored = api(srv, "GET", f"/api/v1/deployments/{dep['id']}").json()["rollout"]["policy"]
    assert stored["maintenance_window"] == {"cron": "0 3 * * 1-5", "duration": 3600,
                                            "timezone": "UTC"}
    clock(MONDAY_1AM + 2 * 3600 + 30)  # 03:00:30: open
    wait_until(lambda: "install_allowed" not in work(d), "the window to open")
    clock(MONDAY_1AM + 3 * 3600 + 1)  # 04:00:01: closed again
    wait_until(lambda: work(d).get("install_allowed") is False, "the window to close")
    clock(MONDAY_1AM + 5 * 86400 + 2 * 3600 + 60)  # Saturday 03:01: not a weekday
    time.sleep(0.3)
    assert work(d)["install_allowed"] is False


def test_maintenance_window_in_a_time_zone(srv, release, clock):
    # 03:00 in Berlin is 02:00 UTC in November (CET, +01:00)
    clock(MONDAY_1AM + 3600 + 60)  # 02:01 UTC
    d = accepted_device(srv)
    window = {"cron": "0 3 * * *", "duration": "30m", "timezone": "Europe/Berlin"}
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id],
                 policy={"maintenance_window": window}).json()["id"]
    w = wait_until(lambda: work(d), "the work")
    assert w["id"] == dep and "install_allowed" not in w


@pytest.mark.parametrize("window, word", [
    ({"cron": "0 3 * *", "duration": "1h"}, "cron"),
    ({"cron": "61 3 * * *", "duration": "1h"}, "minute"),
    ({"cron": "0 3 * * *"}, "duration"),
    ({"cron": "0 3 * * *", "duration": "1h", "timezone": "Nowhere/City"}, "Nowhere"),
    ({"cron": "0 3 * * *", "duration": "1h", "timezone": "../../etc/passwd"}, "timezone"),
    ({"cron": "0 3 * * *", "duration": "1h", "extra": 1}, "extra"),
    ("0 3 * * *", "maintenance_window"),
])
def test_bad_windows_are_refused_with_the_field_named(srv, release, window, word):
    d = accepted_device(srv)
    r = deploy(srv, release.uploaded()["id"], status=400, devices=[d.id],
               policy={"maintenance_window": window})
    assert word in r.json()["error"]["message"], r


@pytest.mark.parametrize("policy, word", [
    ({"type": "later"}, "type"), ({"retries": 11}, "retries"), ({"retries": -1}, "retries")])
def test_bad_types_and_retries_are_refused(srv, release, policy, word):
    d = accepted_device(srv)
    r = deploy(srv, release.uploaded()["id"], status=400, devices=[d.id], policy=policy)
    assert word in r.json()["error"]["message"], r


# ---- dynamic groups ----------------------------------------------------------------------------

def inventory(d, **attrs):
    r = d.request("PATCH", "/api/device/v1/inventory", {"attributes": attrs, "replace": False})
    assert r.status == 204, r


def test_a_query_targets_matching_devices_and_late_joiners_follow(srv, release):
    eu = [accepted_device(srv) for _ in range(3)]
    us = accepted_device(srv)
    for d in eu:
        inventory(d, region="eu")
        d.installed = {"rootfs": {"version": "4.1.0"}}
        work(d)
    inventory(us, region="us")
    art = release.uploaded()
    q = 'attr.region = "eu" and version("rootfs") < "4.2"'
    dep = deploy(srv, art["id"], query=q).json()
    assert dep["device_count"] == 3 and dep["target"]["query"] == q, dep
    assert dep["target"]["continuous"] is True
    assert set(rows(srv, dep["id"])) == {d.id for d in eu}
    # the US device moves to the EU and reports an old version: it joins
    inventory(us, region="eu")
    assert set(rows(srv, dep["id"])) == {d.id for d in eu}  # no rootfs version yet
    us.installed = {"rootfs": {"version": "4.1.9"}}
    w = work(us)
    assert w and w["id"] == dep["id"], w
    assert len(rows(srv, dep["id"])) == 4
    assert api(srv, "GET", f"/api/v1/deployments/{dep['id']}").json()["device_count"] == 4
    # a device that stops matching keeps its row
    inventory(eu[0], region="apac")
    assert eu[0].id in rows(srv, dep["id"])


def test_a_continuous_deployment_reopens_when_a_device_joins_and_cap_holds(srv, release):
    first = accepted_device(srv)
    api(srv, "PUT", f"/api/v1/devices/{first.id}/tags", {"tags": ["lab"]}, status=200)
    dep = deploy(srv, release.uploaded()["id"], query='tag("lab")', cap=2).json()["id"]
    assert work(first)["id"] == dep
    first.report(dep, "success")
    assert api(srv, "GET", f"/api/v1/deployments/{dep}").json()["status"] == "finished"
    late, later = accepted_device(srv), accepted_device(srv)
    api(srv, "PUT", f"/api/v1/devices/{late.id}/tags", {"tags": ["lab"]}, status=200)
    show = api(srv, "GET", f"/api/v1/deployments/{dep}").json()
    assert show["status"] == "active" and show["device_count"] == 2, show
    assert work(late)["id"] == dep
    api(srv, "PUT", f"/api/v1/devices/{later.id}/tags", {"tags": ["lab"]}, status=200)
    assert later.id not in rows(srv, dep)  # the cap
    assert work(later) is None


def test_continuous_membership_survives_a_restart(srv, release, make_server):
    a = accepted_device(srv)
    inventory(a, site="berlin")
    dep = deploy(srv, release.uploaded()["id"], query='attr.site = "berlin"').json()["id"]
    srv.stop()
    again = make_server(data_dir=srv.data_dir, args=srv.args, name="restarted")
    again.token = srv.token
    b = accepted_device(again)
    inventory(b, site="berlin")
    assert set(rows(again, dep)) == {a.id, b.id}


def test_a_non_continuous_query_is_fixed_at_creation(srv, release):
    a = accepted_device(srv)
    api(srv, "PUT", f"/api/v1/devices/{a.id}/tags", {"tags": ["lab"]}, status=200)
    dep = deploy(srv, release.uploaded()["id"], query='tag("lab")', continuous=False).json()
    b = accepted_device(srv)
    api(srv, "PUT", f"/api/v1/devices/{b.id}/tags", {"tags": ["lab"]}, status=200)
    assert set(rows(srv, dep["id"])) == {a.id}


def test_late_joiners_of_a_finished_rollout_are_released(srv, release):
    a = accepted_device(srv)
    inventory(a, ring="1")
    dep = deploy(srv, release.uploaded()["id"], query='attr.ring = "1"',
                 policy={"phases": [{"size": 1}, {"size": "100%"}]}).json()["id"]
    w = wait_until(lambda: work(a), "the first device to be released")
    a.report(w["id"], "success")
    wait_until(lambda: api(srv, "GET", f"/api/v1/deployments/{dep}").json()["status"]
               == "finished", "the deployment to finish")
    b = accepted_device(srv)
    inventory(b, ring="1")
    w = wait_until(lambda: work(b), "the late joiner to be released")
    assert w["id"] == dep
    b.report(dep, "success")
    ro = api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]
    assert ro["released"] == 2 and ro["devices"] == 2, ro


def test_late_joiners_of_a_rollout_done_releasing_are_released(srv, release):
    a, b = accepted_device(srv), accepted_device(srv)
    for d in (a, b):
        inventory(d, ring="2")
    dep = deploy(srv, release.uploaded()["id"], query='attr.ring = "2"',
                 policy={"phases": [{"size": 1}, {"size": "100%"}], "seed": 3}).json()["id"]
    first = wait_until(lambda: [d for d in (a, b) if work(d)], "the canary")[0]
    first.report(dep, "success")
    wait_until(lambda: api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]["state"]
               == "done", "every device to be released")
    c = accepted_device(srv)
    inventory(c, ring="2")
    w = wait_until(lambda: work(c), "the late joiner to be released")
    assert w["id"] == dep
    msgs = [x["message"] for x in
            api(srv, "GET", f"/api/v1/deployments/{dep}/decisions").json()["decisions"]]
    assert any("joined the group later" in m for m in msgs), msgs


@pytest.mark.parametrize("body, status, word", [
    ({"query": 'attr.region = '}, 400, "column"),
    ({"query": 'tag("nobody-has-this")'}, 400, "no accepted device matches"),
    ({"query": 'tag("x")', "tag": "x"}, 400, "one of"),
    ({"tag": "x", "cap": 3}, 400, "go with a 'query'"),
    ({"query": 'tag("x")', "cap": -1}, 400, "cap"),
])
def test_bad_queries_are_refused(srv, release, body, status, word):
    accepted_device(srv)
    r = deploy(srv, release.uploaded()["id"], status=status, **body)
    assert word in r.json()["error"]["message"], r


# ---- ETA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("phases, state", [
    ([{"size": 3}, {"size": "100%"}], "running"),  # the canary waits for its devices
    ([{"size": "100%"}], "done"),  # every device released: the rollout is done, its devices not
])
def test_eta_appears_once_devices_finish(srv, release, phases, state):
    devs = [accepted_device(srv) for _ in range(4)]
    dep = deploy(srv, release.uploaded()["id"], devices=[d.id for d in devs],
                 policy={"phases": phases}).json()["id"]
    ro = api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]
    assert ro["eta_s"] is None
    released = 4 if state == "done" else 3
    wait_until(lambda: (lambda ro: ro["state"] == state and ro["released"] == released)(
        api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]), f"the rollout {state}")
    ready = [d for d in devs if work(d)]
    assert len(ready) == released, ready
    ready[0].report(dep, "success")
    ro = api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]
    assert ro["state"] == state, ro
    assert isinstance(ro["eta_s"], int) and ro["eta_s"] >= 0, ro
    assert ro["phases"][0]["eta_s"] == ro["eta_s"] or state == "running"
    assert isinstance(ro["phases"][0]["eta_s"], int)
    assert ro["phases"][0]["counts"]["unreleased"] == 0
    for d in ready[1:]:  # nothing left in the phase: nothing to estimate
        d.report(dep, "success")
    ro = api(srv, "GET", f"/api/v1/deployments/{dep}").json()["rollout"]
    assert ro["phases"][0]["eta_s"] is None, ro


# ---- continuous deployment ---------------------------------------------------------------------

def upload(release, channel=None, **kw):
    path = release.artifact(**kw)
    q = f"?channel={channel}" if channel is not None else ""
    return release.server.request("POST", "/api/v1/artifacts" + q, path.read_bytes(),
                                  token=release.server.token,
                                  headers={"Content-Type": "application/octet-stream"})


def test_a_channel_upload_deploys_through_its_templates(srv, release):
    beta = [accepted_device(srv) for _ in range(2)]
    for d in beta:
        api(srv, "PUT", f"/api/v1/devices/{d.id}/tags", {"tags": ["beta"]}, status=200)
    t = api(srv, "POST", "/api/v1/templates",
            {"name": "beta-fleet", "channel": "beta", "target": {"tag": "beta"},
             "policy": {"approvals": 1}}, status=201).json()
    assert t["enabled"] is True and t["target"] == {"tag": "beta"}
    off = api(srv, "POST", "/api/v1/templates",
              {"name": "off", "channel": "beta", "target": {"tag": "beta"}, "enabled": False},
              status=201).json()
    other = api(srv, "POST", "/api/v1/templates",
                {"name": "stable", "channel": "stable", "target": {"query": 'tag("beta")'}},
                status=201).json()
    r = upload(release, channel="beta", version="2.0")
    assert r.status == 201, r
    art = r.json()
    assert art["channel"] == "beta"
    assert len(art["deployments"]) == 1 and art["deployments"][0]["template"] == t["id"], art
    dep = api(srv, "GET", f"/api/v1/deployments/{art['deployments'][0]['deployment_id']}").json()
    assert dep["name"] == "beta-fleet: app 2.0" and dep["target"] == {"tag": "beta"}
    assert dep["created_by"] == f"template:{t['id']} (beta-fleet)"
    assert dep["device_count"] == 2
    assert dep["rollout"]["state"] == "waiting_approval", dep["rollout"]
    assert all(work(d) is None for d in beta)  # waits for a person
    api(srv, "POST", f"/api/v1/deployments/{dep['id']}/approve", {}, status=200)
    wait_until(lambda: work(beta[0]), "the approved deployment")
    # no channel, no deployment; the audit log has the template's deployment
    r = upload(release, version="2.1")
    assert r.status == 201 and "deployments" not in r.json()
    audit = api(srv, "GET", "/api/v1/audit?limit=1000").json()["entries"]
    assert any(e["actor"].startswith(f"template:{t['id']}") and
               e["action"] == "deployment.create" for e in audit)
    # disable, enable, list by channel, delete
    api(srv, "POST", f"/api/v1/templates/{t['id']}/disable", status=200)
    listed = api(srv, "GET", "/api/v1/templates?channel=beta").json()["templates"]
    assert listed == []
    api(srv, "POST", f"/api/v1/templates/{off['id']}/enable", status=200)
    assert [x["id"] for x in api(srv, "GET", "/api/v1/templates?channel=beta").json()["templates"]] \
        == [off["id"]]
    assert len(api(srv, "GET", "/api/v1/templates").json()["templates"]) == 3
    api(srv, "DELETE", f"/api/v1/templates/{other['id']}", status=204)
    api(srv, "GET", f"/api/v1/templates/{other['id']}", status=404)


def test_a_template_that_cannot_deploy_reports_why(srv, release):
    api(srv, "POST", "/api/v1/templates",
        {"name": "nobody", "channel": "edge", "target": {"tag": "nobody"}}, status=201)
    r = upload(release, channel="edge", version="3.0")
    assert r.status == 201, r
    (res,) = r.json()["deployments"]
    assert "no accepted device has the tag" in res["error"], res


@pytest.mark.parametrize("body, word", [
    ({"name": "x", "channel": "be ta", "target": {"tag": "a"}}, "channel"),
    ({"name": "x", "channel": "beta"}, "target"),
    ({"name": "x", "channel": "beta", "target": {"tag": "a", "colour": 1}}, "colour"),
    ({"name": "x", "channel": "beta", "target": {"query": "attr.x ="}}, "column"),
    ({"name": "x", "channel": "beta", "target": {"tag": "a"}, "policy": {"type": "x"}}, "type"),
    ({"name": "", "channel": "beta", "target": {"tag": "a"}}, "name"),
])
def test_bad_templates_are_refused(srv, body, word):
    r = api(srv, "POST", "/api/v1/templates", body, status=400)
    assert word in r.json()["error"]["message"], r


def test_template_names_are_unique_and_bad_channels_refused_on_upload(srv, release):
    body = {"name": "same", "channel": "beta", "target": {"tag": "a"}}
    api(srv, "POST", "/api/v1/templates", body, status=201)
    api(srv, "POST", "/api/v1/templates", body, status=409)
    r = upload(release, channel="no/slash")
    assert r.status == 400 and "channel" in r.json()["error"]["message"], r
