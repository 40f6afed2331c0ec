"""otterd on PostgreSQL, two instances sharing one database (the scale-out setup): device tokens
from one are accepted by the other, and a device's status change or a new deployment made
through one instance reaches the other within about a second."""
import time

import pytest

from fleet_util import Release, accepted_device
from pg_util import pg_database  # noqa: F401 (fixture)


def until(what, check, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def pair(make_server, tmp_path, pg_database):  # noqa: F811
    conf = tmp_path / "pg.conf"
    conf.write_text(f"database = {pg_database}\npoll_interval = 7s\npoll_jitter = 1s\n"
                    "last_seen_flush = 200ms\n")
    a = make_server(data_dir=tmp_path / "a", args=["--config", conf], name="a")
    b = make_server(data_dir=tmp_path / "b", args=["--config", conf], name="b")
    assert a.token and not b.token, "the admin token is created once per store"
    b.token = a.token
    return a, b


def test_two_instances_share_devices_and_deployments(pair, tmp_path):
    a, b = pair
    d = accepted_device(a)
    d.server = b  # the token came from a
    assert d.checkin().status == 200
    assert a.request("POST", f"/api/v1/devices/{d.id}/reject", token=a.token).status == 200
    until("b refuses the rejected device", lambda: d.checkin().status == 401)
    assert a.request("POST", f"/api/v1/devices/{d.id}/accept", token=a.token).status == 200
    until("b serves the accepted device again", lambda: d.checkin().status == 200)
    rel = Release(a, tmp_path / "rel")
    dep = rel.deploy(rel.uploaded()["id"], devices=[d])
    until("b offers the new deployment",
          lambda: d.checkin().json().get("deployment", {}).get("id") == dep["id"])
    assert d.report(dep["id"], "success").status == 204  # through b
    show = a.request("GET", f"/api/v1/deployments/{dep['id']}", token=a.token).json()
    assert show["status"] == "finished"
    # last-seen times written by b's batches are visible through a
    until("a sees b's last-seen time",
          lambda: a.request("GET", f"/api/v1/devices/{d.id}", token=a.token).json()["last_seen"] > 0)


def test_a_continuous_deployment_made_on_one_instance_takes_devices_through_the_other(
        pair, tmp_path):
    a, b = pair
    first = accepted_device(a)
    r = first.request("PATCH", "/api/device/v1/inventory",
                      {"attributes": {"site": "lyon"}, "replace": False})
    assert r.status == 204, r
    rel = Release(a, tmp_path / "rel")
    art = rel.uploaded()
    r = a.request("POST", "/api/v1/deployments",
                  {"name": "lyon", "artifact_id": art["id"], "query": 'attr.site = "lyon"',
                   "cap": 2}, token=a.token)
    assert r.status == 201, r
    dep = r.json()["id"]
    time.sleep(1.2)  # b's generation poll (every second) has seen the new deployment
    late = accepted_device(b)
    late.server = b

    def joined():
        r = late.request("PATCH", "/api/device/v1/inventory",
                         {"attributes": {"site": "lyon"}, "replace": False})
        assert r.status == 204, r
        rows = a.request("GET", f"/api/v1/deployments/{dep}/devices", token=a.token).json()
        return late.id in {x["device_id"] for x in rows["devices"]}
    until("a device changed through b joins a's continuous deployment", joined)
    # the cap counts what both instances added
    third = accepted_device(b)
    r = third.request("PATCH", "/api/device/v1/inventory",
                      {"attributes": {"site": "lyon"}, "replace": False})
    assert r.status == 204
    rows = a.request("GET", f"/api/v1/deployments/{dep}/devices", token=a.token).json()
    assert {x["device_id"] for x in rows["devices"]} == {first.id, late.id}
