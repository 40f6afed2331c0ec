"""The device API against the real otterd: authentication (pending, accepted, rejected,
decommissioned, preauthorized, enrollment tokens), check-in, download with Range/ETag, status
reports and their transitions, inventory, and isolation between devices."""
import base64
import hashlib
import json
import time

import pytest

from fleet_util import Device, Release, accepted_device, canonical, sign, AUTH_CONTEXT
from pg_util import pg_database  # noqa: F401 (fixture)



@pytest.fixture(params=["sqlite", "postgresql"])
def fast_server(request, make_server, tmp_path):
    """otterd with a short poll interval and last-seen batches every 100 ms, on each store."""
    conf = tmp_path / "otterd.conf"
    text = "poll_interval = 7s\npoll_jitter = 2s\nlast_seen_flush = 100ms\n"
    if request.param == "postgresql":
        text += f"database = {request.getfixturevalue('pg_database')}\n"
    conf.write_text(text)
    s = make_server(args=["--config", conf])
    assert s.token
    return s


@pytest.fixture
def release(fast_server, tmp_path):
    return Release(fast_server, tmp_path / "release")


def admin(server, method, path, body=None):
    return server.request(method, path, body, token=server.token)


# ---- authentication ---------------------------------------------------------------------------

def test_unknown_device_is_pending_until_accepted(fast_server):
    d = Device(fast_server)
    r = d.authenticate()
    assert r.status == 202, r
    assert r.json()["status"] == "pending" and r.json()["retry_after"] == 7
    dev = admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()
    assert dev["status"] == "pending" and dev["identity"] == d.identity
    assert dev["public_key"] == d.public_key_b64 and dev["device_type"] == "gw-1"
    assert d.authenticate().status == 202  # asking again changes nothing
    r = admin(fast_server, "POST", f"/api/v1/devices/{d.id}/accept")
    assert r.status == 200 and r.json()["status"] == "accepted", r
    r = d.authenticate()
    assert r.status == 200, r
    body = r.json()
    assert body["status"] == "accepted" and body["token"].startswith("otd_")
    assert body["expires_in"] == 3600 and body["device_id"] == d.id
    assert d.checkin().status == 200


def test_auth_needs_a_valid_signature(fast_server):
    d = Device(fast_server)
    body = d.auth_body()
    r = fast_server.request("POST", "/api/device/v1/auth", body)
    assert r.status == 401 and "X-Otter-Signature" in r.json()["error"]["message"]
    # signed by another key
    other = Device(fast_server)
    assert d.authenticate(signature=sign(other.sk, AUTH_CONTEXT, body)).status == 401
    # signed for another purpose (no domain separation would let this through)
    assert d.authenticate(signature=sign(d.sk, b"otter-manifest-v1", body)).status == 401
    # body changed after signing
    sig = sign(d.sk, AUTH_CONTEXT, body)
    assert d.authenticate(body=body.replace(b"gw-1", b"gw-2"), signature=sig).status == 401
    # garbage signature header
    r = fast_server.request("POST", "/api/device/v1/auth", body,
                            headers={"X-Otter-Signature": "!!!"})
    assert r.status == 401
    # nothing was registered by any of these
    assert admin(fast_server, "GET", "/api/v1/devices").json()["devices"] == []


def test_malformed_auth_requests_are_400(fast_server):
    d = Device(fast_server)
    for body in [b"{", b"[]", b'{"identity":{}}', canonical({"identity": {"a": "b"}}),
                 canonical({"identity": {"bad key": "x"}, "public_key": d.public_key_b64}),
                 canonical({"identity": {"a": "b"}, "public_key": "AAAA"})]:
        r = d.authenticate(body=body, signature=sign(d.sk, AUTH_CONTEXT, body))
        assert r.status == 400, (body, r)
    fast_server.assert_serving()


def test_rejected_device_loses_access_at_once(fast_server):
    d = accepted_device(fast_server)
    assert d.checkin().status == 200
    r = admin(fast_server, "POST", f"/api/v1/devices/{d.id}/reject")
    assert r.status == 200 and r.json()["status"] == "rejected"
    r = d.checkin()  # the token is still unexpired: the status decides
    assert r.status == 401, r
    r = d.authenticate()
    assert r.status == 403 and "rejected" in r.json()["error"]["message"]
    assert admin(fast_server, "POST", f"/api/v1/devices/{d.id}/accept").status == 200
    assert d.checkin().status == 200  # accepted again


def test_decommissioned_device_is_out_for_good(fast_server):
    d = accepted_device(fast_server)
    assert admin(fast_server, "POST", f"/api/v1/devices/{d.id}/decommission").status == 200
    assert d.checkin().status == 401
    assert d.authenticate().status == 403
    r = admin(fast_server, "POST", f"/api/v1/devices/{d.id}/accept")
    assert r.status == 409, r


def test_preauthorized_identity_must_match(fast_server):
    d = Device(fast_server)
    r = admin(fast_server, "POST", "/api/v1/devices",
              {"identity": {"mac": "aa"}, "public_key": d.public_key_b64})
    assert r.status == 201 and r.json()["status"] == "preauthorized"
    r = d.authenticate()
    assert r.status == 403 and "identity" in r.json()["error"]["message"], r
    d.identity = {"mac": "aa"}
    assert d.authenticate().status == 200
    r = admin(fast_server, "POST", "/api/v1/devices",
              {"identity": {"mac": "bb"}, "public_key": d.public_key_b64})
    assert r.status == 409, r


def test_enrollment_token_accepts_new_devices(fast_server):
    enroll = fast_server.create_token(["devices:enroll"], name="factory")["token"]
    d = Device(fast_server)
    r = d.authenticate(enrollment_token=enroll)
    assert r.status == 200, r
    assert admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()["status"] == "accepted"
    # a pending device is accepted when it comes back with the token
    p = Device(fast_server)
    assert p.authenticate().status == 202
    assert p.authenticate(enrollment_token=enroll).status == 200
    # a token without the scope, and a revoked one, are refused
    other = fast_server.create_token(["devices:read"], name="reader")["token"]
    assert Device(fast_server).authenticate(enrollment_token=other).status == 403
    tid = [t for t in admin(fast_server, "GET", "/api/v1/tokens").json()["tokens"]
           if t["name"] == "factory"][0]["id"]
    assert admin(fast_server, "DELETE", f"/api/v1/tokens/{tid}").status == 204
    assert Device(fast_server).authenticate(enrollment_token=enroll).status == 403


def test_device_routes_refuse_other_credentials(fast_server):
    d = accepted_device(fast_server)
    for token in [None, fast_server.token, "otd_" + "A" * 66, d.token[:-2] + "AA"]:
        r = d.request("POST", "/api/device/v1/checkin", b"{}", token=token) if token else \
            fast_server.request("POST", "/api/device/v1/checkin", b"{}")
        assert r.status == 401, (token, r)
    # and a device token is no API token
    assert fast_server.request("GET", "/api/v1/devices", token=d.token).status == 401


# ---- check-in ---------------------------------------------------------------------------------

def test_checkin_without_work(fast_server):
    d = accepted_device(fast_server)
    sha = hashlib.sha256(b"x").hexdigest()
    r = d.checkin(installed={"rootfs": {"version": "1.0", "sha256": sha}})
    assert r.status == 200, r
    assert r.json() == {"action": "none", "poll_interval": 7, "poll_jitter": 2}
    dev = admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()
    assert dev["installed"] == {"rootfs": {"version": "1.0", "sha256": sha}}
    assert dev["last_seen"] >= int(time.time()) - 5


def test_malformed_checkins_are_400_and_server_keeps_serving(fast_server):
    d = accepted_device(fast_server)
    for body in [b"", b"{", b"[]", b'{"device_type":5}', b'{"installed":{}}',
                 canonical({"device_type": "gw-1", "installed": {"../x": {"version": "1"}}}),
                 canonical({"device_type": "gw-1", "installed": {"a": {"version": "1",
                                                                        "sha256": "zz"}}})]:
        r = d.request("POST", "/api/device/v1/checkin", body)
        assert r.status == 400, (body, r)
    r = d.request("POST", "/api/device/v1/checkin", b"{" + b" " * 300000 + b"}")
    assert r.status == 413
    assert d.checkin().status == 200


# ---- a deployment from the device's side ------------------------------------------------------

def test_full_update_cycle(fast_server, release):
    d = accepted_device(fast_server)
    art = release.uploaded(version="2.0")
    dep = release.deploy(art["id"], devices=[d])
    r = d.checkin()
    assert r.status == 200
    work = r.json()
    assert work["action"] == "install" and work["deployment"]["id"] == dep["id"]
    a = work["deployment"]["artifact"]
    assert a["name"] == "app" and a["version"] == "2.0" and a["sha256"] == art["sha256"]
    assert json.loads(a["manifest"])["version"] == "2.0"
    assert json.loads(a["signatures"])["signatures"]
    url = work["deployment"]["download"][0]
    r = d.request("GET", url)
    assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == art["sha256"]
    assert r.headers["etag"] == f'"{art["sha256"]}"' and r.headers["accept-ranges"] == "bytes"
    for status, progress in [("downloading", 50), ("downloading", 100), ("installing", None),
                             ("rebooting", None), ("verifying", None)]:
        r = d.report(dep["id"], status, progress=progress)
        assert r.status == 204, r
    r = d.report(dep["id"], "success", message="booted 2.0", log="line 1\nline 2\n")
    assert r.status == 204
    assert d.report(dep["id"], "success").status == 204  # a retried final report is fine
    r = d.report(dep["id"], "failure")
    assert r.status == 409 and "success" in r.json()["error"]["message"], r
    assert d.report(dep["id"], "downloading").status == 409
    assert d.checkin().json()["action"] == "none"
    show = admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}").json()
    assert show["status"] == "finished" and show["rollup"]["success"] == 1
    row = admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}/devices/{d.id}").json()
    assert row["status"] == "success" and row["message"] == "booted 2.0"
    assert [e["status"] for e in row["events"]] == ["downloading", "downloading", "installing",
                                                    "rebooting", "verifying", "success"]
    assert row["events"][-1]["log"] == "line 1\nline 2\n"
    # the artifact is not the device's any more
    assert d.download(dep["id"]).status == 404


def test_download_ranges_and_validators(fast_server, release):
    d = accepted_device(fast_server)
    art = release.uploaded(size=100000)
    dep = release.deploy(art["id"], devices=[d])
    full = d.download(dep["id"]).body
    size = len(full)
    assert size == art["size"]
    etag = f'"{art["sha256"]}"'
    r = d.download(dep["id"], headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == full[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{size}"
    r = d.download(dep["id"], headers={"Range": f"bytes={size - 10}-"})
    assert r.status == 206 and r.body == full[-10:]
    r = d.download(dep["id"], headers={"Range": "bytes=-5"})
    assert r.status == 206 and r.body == full[-5:]
    r = d.download(dep["id"], headers={"Range": f"bytes={size}-"})
    assert r.status == 416 and r.headers["content-range"] == f"bytes */{size}"
    r = d.download(dep["id"], headers={"Range": "bytes=0-1,5-6"})  # several ranges: whole file
    assert r.status == 200 and r.body == full
    r = d.download(dep["id"], headers={"Range": "bytes=10-19", "If-Range": etag})
    assert r.status == 206 and r.body == full[10:20]
    r = d.download(dep["id"], headers={"Range": "bytes=10-19", "If-Range": '"other"'})
    assert r.status == 200 and r.body == full
    r = d.download(dep["id"], headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b""
    r = d.download(dep["id"], method="HEAD")
    assert r.status == 200 and r.headers["content-length"] == str(size)


def test_devices_cannot_see_each_others_work(fast_server, release):
    a, b = accepted_device(fast_server, name="a"), accepted_device(fast_server, name="b")
    art = release.uploaded()
    dep = release.deploy(art["id"], devices=[a])
    assert b.checkin().json()["action"] == "none"
    assert b.download(dep["id"]).status == 404
    assert b.report(dep["id"], "failure").status == 404
    assert b.download(999).status == 404
    assert a.download(dep["id"]).status == 200
    row = admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}/devices/{a.id}").json()
    assert row["status"] == "pending"


def test_wrong_device_type_is_skipped(fast_server, release):
    d = accepted_device(fast_server, device_type="gw-9")
    new = Device(fast_server, device_type="")  # type unknown when deployed
    r = admin(fast_server, "POST", "/api/v1/devices",
              {"identity": new.identity, "public_key": new.public_key_b64})
    assert r.status == 201
    assert new.authenticate().status == 200
    art = release.uploaded(device_types=("gw-1",))
    dep = release.deploy(art["id"], devices=[d, new])
    rows = {x["device_id"]: x for x in
            admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}/devices").json()["devices"]}
    assert rows[d.id]["status"] == "skipped"
    assert rows[new.id]["status"] == "pending"
    new.device_type = "gw-7"
    assert new.checkin().json()["action"] == "none"
    row = admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}/devices/{new.id}").json()
    assert row["status"] == "skipped" and "gw-7" in row["message"]
    assert admin(fast_server, "GET", f"/api/v1/deployments/{dep['id']}").json()["status"] == \
        "finished"


def test_cancel_stops_devices_that_did_not_start(fast_server, release):
    started, waiting = accepted_device(fast_server), accepted_device(fast_server)
    art = release.uploaded()
    dep = release.deploy(art["id"], devices=[started, waiting])
    assert started.checkin().json()["action"] == "install"
    assert started.report(dep["id"], "downloading", progress=10).status == 204
    r = admin(fast_server, "POST", f"/api/v1/deployments/{dep['id']}/cancel")
    assert r.status == 200 and r.json()["status"] == "cancelled"
    assert admin(fast_server, "POST", f"/api/v1/deployments/{dep['id']}/cancel").status == 409
    assert waiting.checkin().json()["action"] == "none"
    assert waiting.report(dep["id"], "downloading").status == 409
    assert started.report(dep["id"], "failure", message="aborted").status == 204


def test_deployments_queue_per_device(fast_server, release):
    d = accepted_device(fast_server)
    first = release.deploy(release.uploaded(version="1")["id"], devices=[d], name="one")
    second = release.deploy(release.uploaded(version="2")["id"], devices=[d], name="two")
    assert d.checkin().json()["deployment"]["id"] == first["id"]
    assert d.report(first["id"], "success").status == 204
    assert d.checkin().json()["deployment"]["id"] == second["id"]


def test_deploy_to_a_tag(fast_server, release):
    lab = [accepted_device(fast_server) for _ in range(3)]
    other = accepted_device(fast_server)
    for x in lab:
        r = admin(fast_server, "PUT", f"/api/v1/devices/{x.id}/tags", {"tags": ["lab", "eu"]})
        assert r.status == 200 and r.json()["tags"] == ["eu", "lab"]
    dep = release.deploy(release.uploaded()["id"], tag="lab")
    assert dep["device_count"] == 3 and dep["target"] == {"tag": "lab"}
    assert all(x.checkin().json()["action"] == "install" for x in lab)
    assert other.checkin().json()["action"] == "none"
    r = admin(fast_server, "POST", "/api/v1/deployments",
              {"name": "x", "artifact_id": dep["artifact_id"], "tag": "nobody"})
    assert r.status == 400


# ---- inventory --------------------------------------------------------------------------------

def test_inventory_merges_and_replaces(fast_server):
    d = accepted_device(fast_server)

    def inv(body):
        body.setdefault("replace", False)
        return d.request("PATCH", "/api/device/v1/inventory", canonical(body))

    assert inv({"attributes": {"os": "Debian 12", "kernel": "6.1"}}).status == 204
    assert inv({"attributes": {"kernel": "6.6", "free": "100"}}).status == 204
    assert inv({"attributes": {"free": None}}).status == 204
    attrs = admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()["attributes"]
    assert attrs == {"os": "Debian 12", "kernel": "6.6"}
    assert inv({"attributes": {"only": "this"}, "replace": True}).status == 204
    assert admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()["attributes"] == \
        {"only": "this"}
    too_many = {f"k{i}": "v" for i in range(129)}
    assert inv({"attributes": too_many}).status in (400, 413)
    assert inv({"attributes": {"bad key": "v"}}).status == 400
    assert inv({"attributes": {"k": 5}}).status == 400
    assert admin(fast_server, "GET", f"/api/v1/devices/{d.id}").json()["attributes"] == \
        {"only": "this"}
