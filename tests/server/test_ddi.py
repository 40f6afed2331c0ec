"""hawkBit DDI against the real otterd: the API level (registration, target/gateway tokens, the
proxy's X-Controller-Id, poll ETag, deploymentBase, feedback mapping, 410, configData, artifact
Range/ETag/.MD5SUM), and the real client: Debian's swupdate (suricatta) installing a signed .swu,
confirming it after a simulated restart, reporting a corrupt payload, and refused with a wrong
token. docs/hawkbit.md describes the mapping. Also: multi-range downloads (multipart/byteranges), several
tenants with their own authentication switches, and action types, maintenance windows and retries
from a deployment's rollout policy (with otterd's test clock)."""
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from fleet_util import accepted_device
from otterd_util import EXIT_USAGE, error_line, run

SWUPDATE = shutil.which("swupdate")
GATEWAY = "gw-secret-0123456789"
TIMEOUT = 60


@pytest.fixture
def ddi(make_server, tmp_path):
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 5s\npoll_jitter = 1s\nlast_seen_flush = 100ms\n"
                    f"ddi_gateway_token = {GATEWAY}\nddi_trust_controller_header = true\n")
    s = make_server(args=["--config", conf])
    assert s.token
    return s


def admin(server, method, path, body=None, headers=None):
    return server.request(method, path, body, token=server.token, headers=headers)


def register(server, cid="dev01", device_type="board", tenant=None):
    body = {"controller_id": cid, "device_type": device_type}
    if tenant is not None:
        body["tenant"] = tenant
    r = admin(server, "POST", "/api/v1/devices/ddi", body)
    assert r.status in (200, 201), r
    body = r.json()
    assert body["target_token"].startswith("ddi_") and body["controller_id"] == cid
    return body


def ddi_req(server, method, path, token=None, cid="dev01", body=None, headers=None, scheme="TargetToken",
            tenant="DEFAULT"):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"{scheme} {token}"
    return server.request(method, f"/{tenant}/controller/v1/{cid}{path}", body, headers=h)


def upload_swu(server, data, name="fw", version="1.0", types=("board",)):
    q = "&".join([f"format=swu&name={name}&version={version}"] + [f"device_type={t}" for t in types])
    r = admin(server, "POST", f"/api/v1/artifacts?{q}", data,
              headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, r
    return r.json()


def deploy(server, artifact_id, device_ids):
    r = admin(server, "POST", "/api/v1/deployments",
              {"name": "ddi", "artifact_id": artifact_id, "devices": device_ids})
    assert r.status == 201, r
    return r.json()


def row(server, dep_id, dev_id):
    r = admin(server, "GET", f"/api/v1/deployments/{dep_id}/devices/{dev_id}")
    assert r.status == 200, r
    return r.json()


def feedback(server, token, action, execution, finished="none", details=(), cid="dev01"):
    body = {"id": str(action), "time": "20260101T000000",
            "status": {"execution": execution, "result": {"finished": finished},
                       "details": list(details)}}
    return ddi_req(server, "POST", f"/deploymentBase/{action}/feedback", token, cid, body)


# ---- API level --------------------------------------------------------------------------------

def test_poll_sleep_links_and_etag(ddi):
    t = register(ddi)["target_token"]
    r = ddi_req(ddi, "GET", "", t)
    assert r.status == 200, r
    body = r.json()
    assert body["config"]["polling"]["sleep"] == "00:00:05"
    assert body["_links"]["configData"]["href"] == \
        f"http://127.0.0.1:{ddi.port}/DEFAULT/controller/v1/dev01/configData"
    assert "deploymentBase" not in body["_links"]
    etag = r.headers["etag"]
    r2 = ddi_req(ddi, "GET", "", t, headers={"If-None-Match": etag})
    assert r2.status == 304 and r2.body == b"", r2
    # another tenant does not exist
    assert ddi.request("GET", "/OTHER/controller/v1/dev01",
                       headers={"Authorization": f"TargetToken {t}"}).status == 404


def test_wrong_or_missing_credentials_get_an_empty_401(ddi):
    t = register(ddi)["target_token"]
    register(ddi, "dev02")
    cases = [{}, {"Authorization": "TargetToken ddi_" + "A" * 43},
             {"Authorization": f"targettoken {t}"},  # the scheme is case-sensitive
             {"Authorization": f"Bearer {t}"}, {"Authorization": f"Bearer {ddi.token}"},
             {"Authorization": "GatewayToken wrong"}]
    for h in cases:
        r = ddi_req(ddi, "GET", "", headers=h)
        assert r.status == 401 and r.body == b"", (h, r)
    # a device's token is not another controller's
    r = ddi_req(ddi, "GET", "", t, cid="dev02")
    assert r.status == 401 and r.body == b""
    # a rejected device is refused at once
    dev = ddi_req(ddi, "GET", "", t)
    assert dev.status == 200
    devices = admin(ddi, "GET", "/api/v1/devices").json()["devices"]
    dev01 = [d for d in devices if d["identity"] == {"controller_id": "dev01", "tenant": "DEFAULT"}][0]
    assert admin(ddi, "POST", f"/api/v1/devices/{dev01['id']}/reject").status == 200
    assert ddi_req(ddi, "GET", "", t).status == 401
    ddi.assert_serving()


def test_new_token_replaces_the_old_one(ddi):
    old = register(ddi)["target_token"]
    new = register(ddi)["target_token"]
    assert ddi_req(ddi, "GET", "", old).status == 401
    assert ddi_req(ddi, "GET", "", new).status == 200


def test_gateway_token_registers_an_unknown_controller(ddi):
    r = ddi_req(ddi, "GET", "", GATEWAY, cid="gw-dev-7", scheme="GatewayToken")
    assert r.status == 200, r
    devices = admin(ddi, "GET", "/api/v1/devices").json()["devices"]
    d = [d for d in devices if d["identity"] == {"controller_id": "gw-dev-7", "tenant": "DEFAULT"}]
    assert len(d) == 1 and d[0]["status"] == "accepted"
    assert ddi_req(ddi, "GET", "", GATEWAY, cid="gw-dev-7", scheme="GatewayToken").status == 200
    assert len(admin(ddi, "GET", "/api/v1/devices").json()["devices"]) == len(devices)
    assert ddi_req(ddi, "GET", "", "nope", cid="gw-dev-8", scheme="GatewayToken").status == 401


def test_controller_header_of_a_tls_proxy(ddi):
    register(ddi, "dev05")
    assert ddi_req(ddi, "GET", "", cid="dev05", headers={"X-Controller-Id": "dev05"}).status == 200
    assert ddi_req(ddi, "GET", "", cid="dev05", headers={"X-Controller-Id": "dev06"}).status == 401
    # unknown controllers are not registered by the header
    assert ddi_req(ddi, "GET", "", cid="dev06", headers={"X-Controller-Id": "dev06"}).status == 401


def test_controller_header_is_off_by_default(server):
    register(server, "dev05")
    assert ddi_req(server, "GET", "", cid="dev05", headers={"X-Controller-Id": "dev05"}).status == 401


def test_config_data_becomes_attributes(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    r = ddi_req(ddi, "PUT", "/configData", t,
                body={"id": "", "time": "x", "status": {"result": {"finished": "success"},
                                                         "execution": "closed"},
                      "data": {"hw": "rev2", "serial": "42"}})
    assert r.status == 200, r
    dev = admin(ddi, "GET", f"/api/v1/devices/{reg['id']}").json()
    assert dev["attributes"] == {"hw": "rev2", "serial": "42"}
    assert "configData" not in ddi_req(ddi, "GET", "", t).json().get("_links", {})
    assert ddi_req(ddi, "PUT", "/configData", t, body={"mode": "remove", "data": {"hw": ""}}).status == 200
    assert admin(ddi, "GET", f"/api/v1/devices/{reg['id']}").json()["attributes"] == {"serial": "42"}
    assert ddi_req(ddi, "PUT", "/configData", t,
                   body={"mode": "replace", "data": {"a": "b"}}).status == 200
    assert admin(ddi, "GET", f"/api/v1/devices/{reg['id']}").json()["attributes"] == {"a": "b"}
    for bad in [{"data": {"k": "v" * 129}}, {"data": {"k": 1}}, {"mode": "x", "data": {}},
                {"data": {"k": "a\nb"}}]:
        assert ddi_req(ddi, "PUT", "/configData", t, body=bad).status == 400, bad


def test_config_data_makes_a_device_join_a_dynamic_group(ddi):
    first, late = register(ddi, "gw-a"), register(ddi, "gw-b")
    cfg = {"id": "", "time": "x", "status": {"result": {"finished": "success"},
                                             "execution": "closed"}, "data": {"line": "7"}}
    assert ddi_req(ddi, "PUT", "/configData", first["target_token"], "gw-a", cfg).status == 200
    art = upload_swu(ddi, b"swu" * 100)
    r = admin(ddi, "POST", "/api/v1/deployments",
              {"name": "line 7", "artifact_id": art["id"], "query": 'attr.line = "7"'})
    assert r.status == 201 and r.json()["device_count"] == 1, r
    dep = r.json()["id"]
    assert ddi_req(ddi, "PUT", "/configData", late["target_token"], "gw-b", cfg).status == 200
    assert row(ddi, dep, late["id"])["status"] == "pending"
    links = ddi_req(ddi, "GET", "", late["target_token"], "gw-b").json()["_links"]
    assert f"/deploymentBase/{dep}" in links["deploymentBase"]["href"], links


def test_action_download_feedback_and_410(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    data = os.urandom(10000)
    art = upload_swu(ddi, data)
    assert art["name"] == "fw" and art["sha256"] == hashlib.sha256(data).hexdigest()
    dep = deploy(ddi, art["id"], [reg["id"]])
    links = ddi_req(ddi, "GET", "", t).json()["_links"]
    href = links["deploymentBase"]["href"]
    assert href.startswith(f"http://127.0.0.1:{ddi.port}/DEFAULT/controller/v1/dev01/deploymentBase/{dep['id']}")
    base = ddi_req(ddi, "GET", f"/deploymentBase/{dep['id']}", t).json()
    assert base["id"] == str(dep["id"])
    assert base["deployment"]["download"] == "forced" and base["deployment"]["update"] == "forced"
    [chunk] = base["deployment"]["chunks"]
    assert chunk["part"] == "os" and chunk["version"] == "1.0" and chunk["name"] == "fw"
    [a] = chunk["artifacts"]
    assert a["filename"] == "fw-1.0.swu" and a["size"] == len(data)
    assert a["hashes"] == {"sha1": hashlib.sha1(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
                           "sha256": hashlib.sha256(data).hexdigest()}
    url = a["_links"]["download-http"]["href"]
    assert url == a["_links"]["download"]["href"]
    path = url.split(f"127.0.0.1:{ddi.port}", 1)[1]
    auth = {"Authorization": f"TargetToken {t}"}
    r = ddi.request("GET", path, headers=auth)
    assert r.status == 200 and r.body == data
    assert r.headers["etag"] == f'"{hashlib.sha1(data).hexdigest()}"'
    assert r.headers["accept-ranges"] == "bytes"
    r = ddi.request("HEAD", path, headers=auth)
    assert r.status == 200 and r.headers["content-length"] == str(len(data))
    r = ddi.request("GET", path, headers={**auth, "Range": "bytes=100-"})
    assert r.status == 206 and r.body == data[100:]
    assert r.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    # several ranges: multipart/byteranges (test_multi_range_downloads has the rules)
    r = ddi.request("GET", path, headers={**auth, "Range": "bytes=0-9,20-29"})
    assert r.status == 206 and byteranges(r, data) == [(0, 9), (20, 29)]
    r = ddi.request("GET", path, headers={**auth, "Range": f"bytes={len(data)}-"})
    assert r.status == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = ddi.request("GET", a["_links"]["md5sum-http"]["href"].split(str(ddi.port), 1)[1], headers=auth)
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.body == f"{hashlib.md5(data).hexdigest()}  fw-1.0.swu\n".encode()
    # another module, another file name, or no credentials: nothing
    assert ddi.request("GET", path.replace("fw-1.0.swu", "x.swu"), headers=auth).status == 404
    assert ddi.request("GET", path.replace(f"/softwaremodules/{art['id']}/",
                                           f"/softwaremodules/{art['id'] + 1}/"), headers=auth).status == 404
    assert ddi.request("GET", path).status == 401

    assert feedback(ddi, t, dep["id"], "proceeding", details=["Installing"]).status == 200
    assert row(ddi, dep["id"], reg["id"])["status"] == "downloading"
    assert feedback(ddi, t, dep["id"], "proceeding", details=["All Chunks Installed."]).status == 200
    assert row(ddi, dep["id"], reg["id"])["status"] == "rebooting"
    # the action stays offered while the device restarts
    assert "deploymentBase" in ddi_req(ddi, "GET", "", t).json()["_links"]
    assert feedback(ddi, t, dep["id"], "closed", "success", ["Update succeeded"]).status == 200
    got = row(ddi, dep["id"], reg["id"])
    assert got["status"] == "success" and "Update succeeded" in got["message"]
    r = feedback(ddi, t, dep["id"], "closed", "success")
    assert r.status == 410, r
    assert ddi_req(ddi, "GET", f"/deploymentBase/{dep['id']}", t).status == 404
    assert "deploymentBase" not in ddi_req(ddi, "GET", "", t).json().get("_links", {})
    inst = ddi_req(ddi, "GET", f"/installedBase/{dep['id']}", t)
    assert inst.status == 200 and inst.json()["id"] == str(dep["id"])
    assert ddi.request("GET", path, headers=auth).status == 404  # not the device's any more
    show = admin(ddi, "GET", f"/api/v1/deployments/{dep['id']}").json()
    assert show["status"] == "finished"


def test_feedback_errors_and_other_devices(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    other = register(ddi, "dev02")
    art = upload_swu(ddi, os.urandom(3000))
    dep = deploy(ddi, art["id"], [reg["id"]])
    fb = f"/deploymentBase/{dep['id']}/feedback"
    for bad in [b"{", b'{"status":{"execution":"closed","result":{"finished":"success"}}',
                b"[]", b'{"status":{"execution":"exploded","result":{"finished":"none"}}}',
                b'{"status":{"execution":"closed","result":{"finished":"maybe"}}}',
                b'{"status":"closed"}', b'{"status":{"execution":"closed","details":"x"}}',
                b'\xff\xfe']:
        r = ddi_req(ddi, "POST", fb, t, body=bad, headers={"Content-Type": "application/json"})
        assert r.status == 400, (bad, r)
        ddi.assert_serving()
    # another device's action, and actions that do not exist
    assert feedback(ddi, other["target_token"], dep["id"], "proceeding", cid="dev02").status == 404
    assert ddi_req(ddi, "GET", f"/deploymentBase/{dep['id']}", other["target_token"], cid="dev02").status == 404
    assert ddi_req(ddi, "GET", "/deploymentBase/999", t).status == 404
    assert ddi_req(ddi, "GET", "/installedBase/abc", t).status == 404
    assert row(ddi, dep["id"], reg["id"])["status"] == "pending"
    # SWUpdate's "Skipped Update." is not an install
    assert feedback(ddi, t, dep["id"], "closed", "success", ["Skipped Update."]).status == 200
    got = row(ddi, dep["id"], reg["id"])
    assert got["status"] == "failure" and got["message"] == "the device skipped the update"


def test_failure_feedback(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    dep = deploy(ddi, upload_swu(ddi, os.urandom(100))["id"], [reg["id"]])
    assert feedback(ddi, t, dep["id"], "closed", "failure", ["hash mismatch"]).status == 200
    got = row(ddi, dep["id"], reg["id"])
    assert got["status"] == "failure" and "hash mismatch" in got["message"]


def test_foreign_upload_checks_its_query(ddi):
    for q in ["format=zip&name=a&version=1&device_type=b", "format=swu&version=1&device_type=b",
              "format=swu&name=a&version=1", "format=swu&name=a/b&version=1&device_type=b"]:
        r = admin(ddi, "POST", f"/api/v1/artifacts?{q}", b"x" * 10)
        assert r.status == 400, (q, r)
    art = upload_swu(ddi, b"abc", types=("a", "b"))
    assert art["device_types"] == ["a", "b"]
    show = admin(ddi, "GET", f"/api/v1/artifacts/{art['id']}").json()
    assert show["manifest"]["foreign"] == "swu" and show["manifest"]["sha1"] == hashlib.sha1(b"abc").hexdigest()
    ddi.assert_serving()


def test_agents_never_get_foreign_artifacts(ddi):
    d = accepted_device(ddi, device_type="board")
    art = upload_swu(ddi, os.urandom(500))
    dep = deploy(ddi, art["id"], [d.id])
    assert d.checkin().json()["action"] == "none"
    got = row(ddi, dep["id"], d.id)
    assert got["status"] == "skipped" and got["message"] == "not an otter artifact"


def test_other_device_types_are_skipped(ddi):
    reg = register(ddi, device_type="board")
    t = reg["target_token"]
    dep = deploy(ddi, upload_swu(ddi, os.urandom(100), types=("other",))["id"], [reg["id"]])
    assert "deploymentBase" not in ddi_req(ddi, "GET", "", t).json().get("_links", {})
    assert row(ddi, dep["id"], reg["id"])["status"] == "skipped"


# ---- multi-range downloads --------------------------------------------------------------------

BOUNDARY = re.compile(r"multipart/byteranges; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})")


def byteranges(r, data):
    """Parses a 206 multipart/byteranges body (RFC 9110 §14.6, RFC 2046 §5.1.1) strictly and checks
    every part's bytes against data; returns the parts' (first, last) in the order sent."""
    assert r.status == 206 and "content-range" not in r.headers, r
    m = BOUNDARY.fullmatch(r.headers["content-type"])
    assert m, r.headers
    assert int(r.headers["content-length"]) == len(r.body)
    delim = b"--" + m.group(1).encode()
    first, close = delim + b"\r\n", b"\r\n" + delim + b"--\r\n"
    assert r.body.startswith(first) and r.body.endswith(close), r.body[:100]
    got = []
    for raw in r.body[len(first):-len(close)].split(b"\r\n" + delim + b"\r\n"):
        head, body = raw.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        assert headers.keys() == {"Content-Type", "Content-Range"}, headers
        assert headers["Content-Type"] == "application/octet-stream"
        a, b, size = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers["Content-Range"]).groups())
        assert size == len(data) and body == data[a:b + 1], (a, b)
        got.append((a, b))
    return got


@pytest.fixture
def download(ddi):
    """A device with a 10000-byte .swu deployed to it: (data, get(range, **headers))."""
    reg = register(ddi)
    data = os.urandom(10000)
    art = upload_swu(ddi, data)
    deploy(ddi, art["id"], [reg["id"]])
    path = f"/DEFAULT/controller/v1/dev01/softwaremodules/{art['id']}/artifacts/fw-1.0.swu"
    auth = {"Authorization": f"TargetToken {reg['target_token']}"}

    def get(rng=None, method="GET", **headers):
        h = {**auth, **headers}
        if rng is not None:
            h["Range"] = rng
        return ddi.request(method, path, headers=h)
    return data, get


def test_multi_range_downloads(ddi, download):
    data, get = download
    n = len(data)
    assert byteranges(get("bytes=0-9,20-29"), data) == [(0, 9), (20, 29)]
    # in the order asked, blanks and empty list elements allowed, suffix and open ranges
    assert byteranges(get("bytes=9000-9099, 0-0,,-5"), data) == [(9000, 9099), (0, 0), (n - 5, n - 1)]
    assert byteranges(get("bytes=9990-,100-199"), data) == [(9990, n - 1), (100, 199)]
    # overlapping or touching ranges are coalesced, in the place of the first of them
    assert byteranges(get("bytes=500-599,0-9,5-19,550-700,20-29"), data) == [(500, 700), (0, 29)]
    # a range past the end is dropped: one left is a plain 206
    r = get(f"bytes=0-9,{n}-,{n + 5}-{n + 9}")
    assert r.status == 206 and r.body == data[:10] and r.headers["content-range"] == f"bytes 0-9/{n}"
    assert not r.headers["content-type"].startswith("multipart/")
    r = get("bytes=0-9,10-19")  # touching: one range
    assert r.status == 206 and r.body == data[:20] and r.headers["content-range"] == f"bytes 0-19/{n}"
    # none satisfiable: 416
    r = get(f"bytes={n}-,{n + 100}-{n + 200}")
    assert r.status == 416 and r.headers["content-range"] == f"bytes */{n}"
    # 16 range-specs are served, 17 get the whole file; a syntax error anywhere: the whole file
    sixteen = ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(16))
    assert byteranges(get("bytes=" + sixteen), data) == [(i * 100, i * 100 + 9) for i in range(16)]
    for whole in ["bytes=" + sixteen + ",5000-5009", "bytes=0-9,x-3", "bytes=0-9,20-10", "items=0-9,20-29"]:
        r = get(whole)
        assert r.status == 200 and r.body == data and "content-range" not in r.headers, whole
    # HEAD: the same head, no body
    g, h = get("bytes=0-9,20-29"), get("bytes=0-9,20-29", method="HEAD")
    assert h.status == 206 and h.body == b"" and h.headers["content-type"].startswith("multipart/byteranges")
    assert h.headers["content-length"] == g.headers["content-length"]
    # If-Range: the ranges only while the ETag matches; If-None-Match still wins
    etag = f'"{hashlib.sha1(data).hexdigest()}"'
    assert byteranges(get("bytes=0-9,20-29", **{"If-Range": etag}), data) == [(0, 9), (20, 29)]
    r = get("bytes=0-9,20-29", **{"If-Range": '"0000"'})
    assert r.status == 200 and r.body == data
    r = get("bytes=0-9,20-29", **{"If-None-Match": etag})
    assert r.status == 304 and r.body == b""
    # each reply has its own boundary
    assert get("bytes=0-1,3-4").headers["content-type"] != get("bytes=0-1,3-4").headers["content-type"]
    ddi.assert_serving()


def test_multi_range_of_a_large_file_streams_every_byte(ddi):
    reg = register(ddi)
    data = os.urandom(3 * 1024 * 1024 + 17)
    art = upload_swu(ddi, data)
    deploy(ddi, art["id"], [reg["id"]])
    path = f"/DEFAULT/controller/v1/dev01/softwaremodules/{art['id']}/artifacts/fw-1.0.swu"
    r = ddi.request("GET", path, headers={"Authorization": f"TargetToken {reg['target_token']}",
                                          "Range": "bytes=-1000000,5-1500000,2000000-2000000"})
    n = len(data)
    assert byteranges(r, data) == [(n - 1000000, n - 1), (5, 1500000), (2000000, 2000000)]


# ---- tenants ----------------------------------------------------------------------------------

ACME_GW = "acme-gateway-secret-42"


@pytest.fixture
def tenants(make_server, tmp_path):
    """DEFAULT: target tokens only (the plain keys' defaults); acme: also a gateway token; Beta:
    no target tokens, the proxy's X-Controller-Id instead."""
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 5s\npoll_jitter = 1s\n"
                    "ddi_tenant = DEFAULT, acme, Beta\n"
                    f"ddi_gateway_token.acme = \"{ACME_GW}\"\n"
                    "ddi_target_token.Beta = false\n"
                    "ddi_trust_controller_header.Beta = yes\n")
    s = make_server(args=["--config", conf])
    assert s.token
    return s


def refused(r):
    return r.status == 401 and r.body == b""


def test_tenants_have_their_own_switches(tenants):
    s = tenants
    dev = register(s, "dev01")
    assert dev["tenant"] == "DEFAULT"
    a1 = register(s, "a1", tenant="ACME")  # tenants are compared case-insensitively
    assert a1["tenant"] == "acme"
    b1 = register(s, "b1", tenant="beta")
    assert b1["tenant"] == "Beta"
    # target tokens: on in DEFAULT and acme (plain key), off in Beta
    assert ddi_req(s, "GET", "", dev["target_token"]).status == 200
    assert ddi_req(s, "GET", "", a1["target_token"], cid="a1", tenant="acme").status == 200
    assert ddi_req(s, "GET", "", a1["target_token"], cid="a1", tenant="ACME").status == 200
    assert refused(ddi_req(s, "GET", "", b1["target_token"], cid="b1", tenant="Beta"))
    # the gateway token: acme only, and only for acme's controllers
    r = ddi_req(s, "GET", "", ACME_GW, cid="a2", tenant="acme", scheme="GatewayToken")
    assert r.status == 200, r
    assert f"/acme/controller/v1/a2/configData" in r.json()["_links"]["configData"]["href"]
    devices = admin(s, "GET", "/api/v1/devices").json()["devices"]
    assert [d["identity"] for d in devices if d["identity"]["controller_id"] == "a2"] == \
        [{"controller_id": "a2", "tenant": "acme"}]
    assert refused(ddi_req(s, "GET", "", ACME_GW, cid="a3", scheme="GatewayToken"))
    assert refused(ddi_req(s, "GET", "", ACME_GW, cid="a3", tenant="Beta", scheme="GatewayToken"))
    assert refused(ddi_req(s, "GET", "", ACME_GW, cid="dev01", tenant="acme", scheme="GatewayToken"))
    assert refused(ddi_req(s, "GET", "", ACME_GW, cid="b1", tenant="acme", scheme="GatewayToken"))
    assert len(admin(s, "GET", "/api/v1/devices").json()["devices"]) == len(devices)  # none registered
    # the proxy's header: Beta only, and only for Beta's controllers
    assert ddi_req(s, "GET", "", cid="b1", tenant="Beta", headers={"X-Controller-Id": "b1"}).status == 200
    assert refused(ddi_req(s, "GET", "", cid="dev01", tenant="Beta", headers={"X-Controller-Id": "dev01"}))
    assert refused(ddi_req(s, "GET", "", cid="dev01", headers={"X-Controller-Id": "dev01"}))
    assert refused(ddi_req(s, "GET", "", cid="a1", tenant="acme", headers={"X-Controller-Id": "a1"}))
    # unknown tenants: 404 (with or without credentials)
    for t in ["nope", "acme2", "DEFAULT-"]:
        assert ddi_req(s, "GET", "", dev["target_token"], tenant=t).status == 404, t
    s.assert_serving()


def test_a_controller_is_nobody_in_another_tenant(tenants):
    s = tenants
    dev = register(s, "dev01")
    a1 = register(s, "a1", tenant="acme")
    art = upload_swu(s, os.urandom(500))
    dep = deploy(s, art["id"], [dev["id"]])
    path = f"/softwaremodules/{art['id']}/artifacts/fw-1.0.swu"
    # every route, with the right token in the wrong tenant: 401, empty body
    for method, sub, body in [("GET", "", None), ("GET", f"/deploymentBase/{dep['id']}", None),
                              ("POST", f"/deploymentBase/{dep['id']}/feedback",
                               {"status": {"execution": "proceeding"}}),
                              ("PUT", "/configData", {"data": {"k": "v"}}), ("GET", path, None),
                              ("GET", f"/installedBase/{dep['id']}", None),
                              ("GET", f"/cancelAction/{dep['id']}", None)]:
        assert refused(ddi_req(s, method, sub, dev["target_token"], body=body, tenant="acme")), sub
        assert refused(ddi_req(s, method, sub, a1["target_token"], cid="dev01", body=body)), sub
    assert row(s, dep["id"], dev["id"])["status"] == "pending"
    assert admin(s, "GET", f"/api/v1/devices/{dev['id']}").json()["attributes"] == {}
    assert ddi_req(s, "GET", path, dev["target_token"]).status == 200
    # a controller id lives in one tenant: registering it in another is a conflict
    r = admin(s, "POST", "/api/v1/devices/ddi", {"controller_id": "a1", "tenant": "DEFAULT"})
    assert r.status == 409 and "acme" in r.json()["error"]["message"], r
    r = admin(s, "POST", "/api/v1/devices/ddi", {"controller_id": "a1"})  # the first tenant
    assert r.status == 409, r
    again = register(s, "a1", tenant="Acme")  # the same tenant: a new token
    assert ddi_req(s, "GET", "", again["target_token"], cid="a1", tenant="acme").status == 200
    assert refused(ddi_req(s, "GET", "", a1["target_token"], cid="a1", tenant="acme"))
    for bad in [{"controller_id": "x", "tenant": "nope"}, {"controller_id": "x", "tenant": 7},
                {"controller_id": "x", "tenant": "t" * 65}]:
        r = admin(s, "POST", "/api/v1/devices/ddi", bad)
        assert r.status == 400, (bad, r)


def test_a_device_registered_before_tenants_belongs_to_the_first(make_server, tmp_path):
    conf = tmp_path / "otterd.conf"
    conf.write_text("ddi_tenant = DEFAULT, other\n")
    s = make_server(args=["--config", conf])
    dev = register(s, "old01")
    s.stop()
    # what a store written before tenants existed holds: no tenant for the controller
    db = sqlite3.connect(s.data_dir / "otter.db")
    with db:
        assert db.execute("DELETE FROM meta WHERE key = 'ddi.tenant.old01'").rowcount == 1
    db.close()
    s2 = make_server(data_dir=s.data_dir, args=["--config", conf])
    assert ddi_req(s2, "GET", "", dev["target_token"], cid="old01").status == 200
    assert refused(ddi_req(s2, "GET", "", dev["target_token"], cid="old01", tenant="other"))
    s2.stop()
    conf.write_text("ddi_tenant = other, DEFAULT\n")  # the first tenant is where it belongs
    s3 = make_server(data_dir=s.data_dir, args=["--config", conf])
    assert ddi_req(s3, "GET", "", dev["target_token"], cid="old01", tenant="other").status == 200
    assert refused(ddi_req(s3, "GET", "", dev["target_token"], cid="old01"))


def test_plain_keys_are_every_tenants_default(make_server, tmp_path):
    conf = tmp_path / "otterd.conf"
    conf.write_text("ddi_target_token.two = on\nddi_tenant = one, two\nddi_target_token = off\n"
                    "ddi_gateway_token = gw-everywhere\nddi_gateway_token.two = \"\"\n")
    s = make_server(args=["--config", conf])
    one, two = register(s, "c1", tenant="one"), register(s, "c2", tenant="two")
    assert refused(ddi_req(s, "GET", "", one["target_token"], cid="c1", tenant="one"))
    assert ddi_req(s, "GET", "", two["target_token"], cid="c2", tenant="two").status == 200
    assert ddi_req(s, "GET", "", "gw-everywhere", cid="c1", tenant="one", scheme="GatewayToken").status == 200
    # an empty per-tenant gateway token switches the plain one off for that tenant
    assert refused(ddi_req(s, "GET", "", "gw-everywhere", cid="c2", tenant="two", scheme="GatewayToken"))
    assert ddi_req(s, "GET", "", "", cid="c1", tenant="DEFAULT").status == 404


@pytest.mark.parametrize("text, word", [
    ("ddi_tenant = a, b\nddi_target_token.c = false\n", "conf:2: unknown key 'ddi_target_token.c'"),
    ("ddi_target_token.acme = true\nddi_tenant = x\n", "1: unknown key 'ddi_target_token.acme'"),
    ("ddi_tenant = a\nddi_target_token.A = false\n", "2: unknown key 'ddi_target_token.A'"),
    ("ddi_tenant = a\nddi_trust_controller_header.a = maybe\n", "2: key 'ddi_trust_controller_header.a'"),
    ("ddi_tenant = a\nddi_gateway_token.a = x\nddi_gateway_token.a = y\n", "3: duplicate key"),
    ("ddi_tenant = a, A\n", "listed twice"),
    ("ddi_tenant = a/b\n", "[A-Za-z0-9_-]"),
    ("ddi_tenant = a,,b\n", "empty item"),
    ("ddi_tenant = " + ",".join(f"t{i}" for i in range(17)) + "\n", "1..16 items"),
])
def test_tenant_configuration_errors(tmp_path, text, word):
    conf = tmp_path / "otterd.conf"
    conf.write_text(text)
    line = error_line(run("--config", conf, "--data", tmp_path / "d"), EXIT_USAGE)
    assert word in line, line
    assert not (tmp_path / "d").exists()


# ---- action types, maintenance windows, retries (the deployment's rollout policy) ----------------

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


@pytest.fixture
def policy_srv(make_server, tmp_path, clock):
    conf = tmp_path / "otterd.conf"
    conf.write_text("poll_interval = 5s\npoll_jitter = 1s\nrollout_tick = 100ms\n")
    s = make_server(args=["--config", conf])
    assert s.token
    return s


def deploy_policy(server, artifact_id, device_ids, policy):
    r = admin(server, "POST", "/api/v1/deployments",
              {"name": "ddi", "artifact_id": artifact_id, "devices": device_ids, "policy": policy})
    assert r.status == 201, r
    return r.json()


def wait_until(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def offered(server, token, cid="dev01"):
    """The deploymentBase the poll offers now, or None."""
    link = ddi_req(server, "GET", "", token, cid=cid).json().get("_links", {}).get("deploymentBase")
    if not link:
        return None
    path = link["href"].split(f"127.0.0.1:{server.port}", 1)[1]
    r = server.request("GET", path, headers={"Authorization": f"TargetToken {token}"})
    assert r.status == 200, r
    return r.json()


def handling(base):
    return {k: v for k, v in base["deployment"].items() if k != "chunks"}


@pytest.mark.parametrize("policy, want", [
    ({}, {"download": "forced", "update": "forced"}),
    ({"type": "forced"}, {"download": "forced", "update": "forced"}),
    ({"type": "soft"}, {"download": "attempt", "update": "attempt"}),
    ({"type": "download_only"}, {"download": "forced", "update": "skip"}),
])
def test_action_types(policy_srv, policy, want):
    s = policy_srv
    reg = register(s)
    art = upload_swu(s, os.urandom(300))
    dep = deploy_policy(s, art["id"], [reg["id"]], policy) if policy else deploy(s, art["id"], [reg["id"]])
    base = wait_until(lambda: offered(s, reg["target_token"]), "the action")
    assert base["id"] == str(dep["id"]) and handling(base) == want
    inst_ok = feedback(s, reg["target_token"], dep["id"], "downloaded", "success")
    assert inst_ok.status == 200
    got = row(s, dep["id"], reg["id"])
    if policy.get("type") == "download_only":  # "downloaded" closes a download-only action
        assert got["status"] == "success" and got["message"] == "downloaded (download only)", got
        assert handling(ddi_req(s, "GET", f"/installedBase/{dep['id']}", reg["target_token"]).json()) == want
    else:
        assert got["status"] == "installing", got
        assert feedback(s, reg["target_token"], dep["id"], "closed", "success").status == 200
        assert row(s, dep["id"], reg["id"])["status"] == "success"


def test_swupdate_skipping_a_download_only_action_is_no_success(policy_srv):
    s = policy_srv
    reg = register(s)
    dep = deploy_policy(s, upload_swu(s, os.urandom(300))["id"], [reg["id"]], {"type": "download_only"})
    wait_until(lambda: offered(s, reg["target_token"]), "the action")
    assert feedback(s, reg["target_token"], dep["id"], "closed", "success", ["Skipped Update."]).status == 200
    got = row(s, dep["id"], reg["id"])
    assert got["status"] == "failure" and got["message"] == "the device skipped the update (it cannot download only)"


def test_maintenance_window(policy_srv, clock):
    s = policy_srv
    clock(MONDAY_1AM)
    reg = register(s)
    t = reg["target_token"]
    window = {"cron": "0 3 * * *", "duration": "1h", "timezone": "UTC"}
    dep = deploy_policy(s, upload_swu(s, os.urandom(300))["id"], [reg["id"]],
                        {"maintenance_window": window})
    # 01:00: closed - download only for now
    base = wait_until(lambda: offered(s, t), "the action")
    assert handling(base) == {"download": "forced", "update": "skip", "maintenanceWindow": "unavailable"}
    closed_href = ddi_req(s, "GET", "", t).json()["_links"]["deploymentBase"]["href"]
    # SWUpdate answers update "skip" with closed/success "Skipped Update.": it waits, no failure
    assert feedback(s, t, dep["id"], "closed", "success", ["Skipped Update."]).status == 200
    got = row(s, dep["id"], reg["id"])
    assert got["status"] == "waiting" and "maintenance window is closed" in got["message"], got
    # a client that downloads meanwhile (rauc-hawkbit-updater) waits as well
    assert feedback(s, t, dep["id"], "downloaded", "success").status == 200
    assert row(s, dep["id"], reg["id"])["status"] == "waiting"
    # 03:00:30: open - the action says so, and the poll's link changes with it
    clock(MONDAY_1AM + 2 * 3600 + 30)
    base = wait_until(lambda: (lambda b: b if handling(b)["update"] == "forced" else None)(offered(s, t)),
                      "the window to open")
    assert handling(base) == {"download": "forced", "update": "forced", "maintenanceWindow": "available"}
    assert ddi_req(s, "GET", "", t).json()["_links"]["deploymentBase"]["href"] != closed_href
    assert feedback(s, t, dep["id"], "proceeding", details=["Installing"]).status == 200
    assert row(s, dep["id"], reg["id"])["status"] == "downloading"
    assert feedback(s, t, dep["id"], "closed", "success", ["Update succeeded"]).status == 200
    assert row(s, dep["id"], reg["id"])["status"] == "success"
    # a finished action's installedBase shows no closed window any more
    inst = ddi_req(s, "GET", f"/installedBase/{dep['id']}", t).json()
    assert handling(inst)["update"] == "forced"


def test_no_window_no_maintenance_window_field(policy_srv):
    s = policy_srv
    reg = register(s)
    deploy_policy(s, upload_swu(s, os.urandom(300))["id"], [reg["id"]], {"type": "soft"})
    base = wait_until(lambda: offered(s, reg["target_token"]), "the action")
    assert "maintenanceWindow" not in base["deployment"]


def test_failure_feedback_is_retried_as_the_policy_says(policy_srv):
    s = policy_srv
    reg = register(s)
    t = reg["target_token"]
    dep = deploy_policy(s, upload_swu(s, os.urandom(300))["id"], [reg["id"]], {"retries": 2})
    for attempt in (1, 2):
        base = wait_until(lambda: offered(s, t), "the action")
        assert base["id"] == str(dep["id"])
        assert feedback(s, t, dep["id"], "proceeding", details=["Installing"]).status == 200
        assert feedback(s, t, dep["id"], "closed", "failure", [f"hash mismatch {attempt}"]).status == 200
        got = row(s, dep["id"], reg["id"])
        assert got["status"] == "pending" and got["retries"] == attempt, got
        assert got["message"].startswith(f"retry {attempt} of 2 after failure: hash mismatch {attempt}"), got
    assert offered(s, t)["id"] == str(dep["id"])
    assert feedback(s, t, dep["id"], "closed", "failure", ["hash mismatch 3"]).status == 200
    got = row(s, dep["id"], reg["id"])
    assert got["status"] == "failure" and got["retries"] == 2, got
    assert feedback(s, t, dep["id"], "closed", "failure").status == 410
    assert offered(s, t) is None
    assert admin(s, "GET", f"/api/v1/deployments/{dep['id']}").json()["status"] == "finished"


# ---- the real client: Debian's swupdate (suricatta) -------------------------------------------

needs_swupdate = pytest.mark.skipif(not SWUPDATE or not shutil.which("cpio") or not shutil.which("openssl"),
                                    reason="swupdate, cpio and openssl are needed (scripts/bootstrap.sh)")


class Swu:
    """A signing certificate (self-signed: CA and signer at once) and signed .swu images that
    write one plain file (the recipe of the DDI spec notes)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = self.dir / "key.pem", self.dir / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=otter-test"],
                       check=True, capture_output=True, timeout=TIMEOUT)

    def image(self, name, target, content, corrupt=False):
        work = self.dir / name
        work.mkdir()
        (work / "payload.bin").write_bytes(content)
        desc = f"""software =
{{
    version = "1.0";
    hardware-compatibility = [ "1.0" ];
    files: (
        {{
            filename = "payload.bin";
            path = "{target}";
            sha256 = "{hashlib.sha256(content).hexdigest()}";
            properties = {{ create-destination = "true"; atomic-install = "true"; }};
        }}
    );
}}
"""
        (work / "sw-description").write_text(desc)
        subprocess.run(["openssl", "cms", "-sign", "-in", "sw-description", "-out",
                        "sw-description.sig", "-signer", self.cert, "-inkey", self.key,
                        "-outform", "DER", "-nosmimecap", "-binary"],
                       cwd=work, check=True, capture_output=True, timeout=TIMEOUT)
        if corrupt:  # the signed hash no longer matches the payload
            (work / "payload.bin").write_bytes(bytes(b ^ 0xff for b in content))
        files = "sw-description\nsw-description.sig\npayload.bin\n"
        r = subprocess.run(["cpio", "-o", "-H", "crc", "--quiet"], cwd=work, input=files.encode(),
                           capture_output=True, check=True, timeout=TIMEOUT)
        return r.stdout


class Suricatta:
    """swupdate in suricatta mode against otterd; TMPDIR private so its sockets do not collide
    with parallel tests. Killed (its whole process group) at the end."""

    def __init__(self, tmp, server, swu, cid, token, confirm=None):
        self.tmp = Path(tmp) / f"swupdate-{cid}-{time.monotonic_ns()}"
        self.tmp.mkdir(parents=True)
        cfg = self.tmp / "swupdate.cfg"
        cfg.write_text('globals: { verbose = true; loglevel = 6; };\n'
                       f'suricatta: {{ tenant = "DEFAULT"; id = "{cid}"; '
                       f'url = "http://127.0.0.1:{server.port}"; targettoken = "{token}"; }};\n'
                       'identify: ( { name = "board"; value = "rev-a"; } );\n')
        args = "-p 5" + (f" -c {confirm}" if confirm else "")
        self.log_path = self.tmp / "swupdate.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([SWUPDATE, "-f", cfg, "-H", "board:1.0", "-k", swu.cert,
                                      "-u", args], stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(self.tmp)},
                                     start_new_session=True)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        self.log_file.close()


@pytest.fixture
def suricatta(tmp_path):
    started = []

    def start(*a, **kw):
        s = Suricatta(tmp_path, *a, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def wait_for(what, fn, timeout=TIMEOUT, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


@needs_swupdate
def test_swupdate_installs_and_confirms_after_restart(ddi, suricatta, tmp_path):
    swu = Swu(tmp_path / "swu")
    reg = register(ddi)
    target = tmp_path / "installed" / "payload.txt"
    content = b"new firmware " + os.urandom(2000)
    art = upload_swu(ddi, swu.image("good", target, content))
    dep = deploy(ddi, art["id"], [reg["id"]])
    s = suricatta(ddi, swu, "dev01", reg["target_token"])
    wait_for("the file", lambda: target.exists() and target.read_bytes() == content, log=s.log)
    wait_for("rebooting", lambda: row(ddi, dep["id"], reg["id"])["status"] == "rebooting", log=s.log)
    # configData arrived as attributes (SWUpdate sends its identify data at start-up)
    dev = admin(ddi, "GET", f"/api/v1/devices/{reg['id']}").json()
    assert dev["attributes"].get("board") == "rev-a", dev
    s.stop()
    assert row(ddi, dep["id"], reg["id"])["status"] == "rebooting"  # open until confirmed
    # the device "restarted" into the new software: -c 2 reports success
    s2 = suricatta(ddi, swu, "dev01", reg["target_token"], confirm=2)
    wait_for("success", lambda: row(ddi, dep["id"], reg["id"])["status"] == "success", log=s2.log)
    assert admin(ddi, "GET", f"/api/v1/deployments/{dep['id']}").json()["status"] == "finished"


@needs_swupdate
def test_swupdate_reports_a_corrupt_payload(ddi, suricatta, tmp_path):
    swu = Swu(tmp_path / "swu")
    reg = register(ddi)
    target = tmp_path / "installed" / "payload.txt"
    art = upload_swu(ddi, swu.image("bad", target, b"x" * 3000, corrupt=True))
    dep = deploy(ddi, art["id"], [reg["id"]])
    s = suricatta(ddi, swu, "dev01", reg["target_token"])
    wait_for("failure", lambda: row(ddi, dep["id"], reg["id"])["status"] == "failure", log=s.log)
    assert not target.exists()
    ddi.assert_serving()


@needs_swupdate
def test_swupdate_with_a_wrong_token_gets_nothing(ddi, suricatta, tmp_path):
    swu = Swu(tmp_path / "swu")
    reg = register(ddi)
    target = tmp_path / "installed" / "payload.txt"
    dep = deploy(ddi, upload_swu(ddi, swu.image("good", target, b"y" * 100))["id"], [reg["id"]])
    s = suricatta(ddi, swu, "dev01", "ddi_" + "B" * 43)
    wait_for("a refused poll", lambda: re.search(r" 401 ", ddi.log()), log=s.log)
    time.sleep(2)
    assert not target.exists()
    assert row(ddi, dep["id"], reg["id"])["status"] == "pending"
    assert admin(ddi, "GET", f"/api/v1/devices/{reg['id']}").json()["attributes"] == {}


def cancel_feedback(server, token, action, execution, finished="none"):
    body = {"id": str(action), "time": "x",
            "status": {"execution": execution, "result": {"finished": finished}, "details": []}}
    return ddi_req(server, "POST", f"/cancelAction/{action}/feedback", token, body=body)


def test_cancel_of_an_action_under_way(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    dep = deploy(ddi, upload_swu(ddi, os.urandom(100))["id"], [reg["id"]])
    assert "deploymentBase" in ddi_req(ddi, "GET", "", t).json()["_links"]
    assert ddi_req(ddi, "GET", f"/cancelAction/{dep['id']}", t).status == 404  # nothing to cancel
    assert feedback(ddi, t, dep["id"], "proceeding").status == 200
    assert admin(ddi, "POST", f"/api/v1/deployments/{dep['id']}/cancel").status == 200
    # a later deployment waits: the device is under way with the cancelled one
    dep2 = deploy(ddi, upload_swu(ddi, os.urandom(100), name="fw2")["id"], [reg["id"]])
    links = ddi_req(ddi, "GET", "", t).json()["_links"]
    assert "deploymentBase" not in links
    href = links["cancelAction"]["href"]
    assert href.endswith(f"/DEFAULT/controller/v1/dev01/cancelAction/{dep['id']}") and "?" not in href
    r = ddi_req(ddi, "GET", f"/cancelAction/{dep['id']}", t)
    assert r.status == 200 and r.json() == {"id": str(dep["id"]), "cancelAction": {"stopId": str(dep["id"])}}
    # refused: the action goes on
    assert cancel_feedback(ddi, t, dep["id"], "rejected").status == 200
    got = row(ddi, dep["id"], reg["id"])
    assert got["status"] == "downloading" and got["message"] == "the device refused the cancel"
    links = ddi_req(ddi, "GET", "", t).json()["_links"]
    assert "cancelAction" not in links and f"/deploymentBase/{dep['id']}" in links["deploymentBase"]["href"]
    assert feedback(ddi, t, dep["id"], "closed", "success").status == 200
    assert row(ddi, dep["id"], reg["id"])["status"] == "success"
    # then the next deployment; this time the device stops
    links = ddi_req(ddi, "GET", "", t).json()["_links"]
    assert f"/deploymentBase/{dep2['id']}" in links["deploymentBase"]["href"]
    assert feedback(ddi, t, dep2["id"], "download").status == 200
    assert admin(ddi, "POST", f"/api/v1/deployments/{dep2['id']}/cancel").status == 200
    assert "cancelAction" in ddi_req(ddi, "GET", "", t).json()["_links"]
    assert cancel_feedback(ddi, t, dep2["id"], "closed", "success").status == 200
    got = row(ddi, dep2["id"], reg["id"])
    assert got["status"] == "failure" and got["message"] == "cancelled on the device"
    assert ddi_req(ddi, "GET", "", t).json().get("_links", {}).keys() <= {"configData"}
    assert cancel_feedback(ddi, t, dep2["id"], "closed", "success").status == 404


def test_cancel_before_the_device_started(ddi):
    reg = register(ddi)
    t = reg["target_token"]
    dep = deploy(ddi, upload_swu(ddi, os.urandom(100))["id"], [reg["id"]])
    assert "deploymentBase" in ddi_req(ddi, "GET", "", t).json()["_links"]
    assert admin(ddi, "POST", f"/api/v1/deployments/{dep['id']}/cancel").status == 200
    assert ddi_req(ddi, "GET", "", t).json().get("_links", {}).keys() <= {"configData"}
    assert row(ddi, dep["id"], reg["id"])["status"] == "cancelled"
    assert feedback(ddi, t, dep["id"], "proceeding").status == 410


@needs_swupdate
def test_swupdate_acknowledges_a_cancel(ddi, suricatta, tmp_path):
    swu = Swu(tmp_path / "swu")
    reg = register(ddi)
    target = tmp_path / "installed" / "payload.txt"
    art = upload_swu(ddi, swu.image("good", target, b"z" * 500))
    dep = deploy(ddi, art["id"], [reg["id"]])
    s = suricatta(ddi, swu, "dev01", reg["target_token"])
    # installed, waiting for the restart: under way, so the cancel goes to the device
    wait_for("rebooting", lambda: row(ddi, dep["id"], reg["id"])["status"] == "rebooting", log=s.log)
    assert admin(ddi, "POST", f"/api/v1/deployments/{dep['id']}/cancel").status == 200
    got = wait_for("the cancel's answer", lambda: (lambda r: r if r["status"] != "rebooting" else None)(
        row(ddi, dep["id"], reg["id"])), log=s.log)
    assert got["status"] == "failure" and got["message"] == "cancelled on the device", got


class CuttingProxy:
    """A TCP proxy in front of otterd that cuts the first artifact download (GET .../artifacts/)
    after `cut` bytes of the response, to make the client resume (Range: bytes=N-)."""

    def __init__(self, port, cut):
        import socket
        import threading
        self.target, self.cut, self.cuts = port, cut, 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            state = {"cut": False}
            threading.Thread(target=self.up, args=(c, u, state), daemon=True).start()
            threading.Thread(target=self.down, args=(u, c, state), daemon=True).start()

    def up(self, c, u, state):
        try:
            while data := c.recv(65536):
                if re.match(rb"GET [^ ]*/artifacts/[^ ]*\.swu ", data):
                    with self.lock:
                        if self.cuts == 0:
                            self.cuts = 1
                            state["cut"] = True
                u.sendall(data)
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def down(self, u, c, state):
        sent = 0
        try:
            while data := u.recv(65536):
                if state["cut"]:
                    data = data[:max(0, self.cut - sent)]
                    c.sendall(data)
                    sent += len(data)
                    if sent >= self.cut:
                        break
                    continue
                c.sendall(data)
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.shutdown(2)
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        self.sock.close()


@needs_swupdate
def test_swupdate_resumes_an_interrupted_download(ddi, suricatta, tmp_path):
    swu = Swu(tmp_path / "swu")
    reg = register(ddi)
    target = tmp_path / "installed" / "payload.txt"
    content = os.urandom(3 * 1024 * 1024)
    art = upload_swu(ddi, swu.image("big", target, content))
    dep = deploy(ddi, art["id"], [reg["id"]])
    proxy = CuttingProxy(ddi.port, cut=512 * 1024)

    class Via:  # the client talks to the proxy; hrefs follow its Host header
        port = proxy.port
    try:
        s = suricatta(Via, swu, "dev01", reg["target_token"])
        wait_for("the file", lambda: target.exists() and target.read_bytes() == content,
                 timeout=90, log=lambda: s.log() + ddi.log())
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert re.search(r"GET /DEFAULT/controller/v1/dev01/softwaremodules/\d+/artifacts/fw-1\.0\.swu 206 ",
                     ddi.log()), ddi.log()
    wait_for("rebooting", lambda: row(ddi, dep["id"], reg["id"])["status"] == "rebooting", log=s.log)


def test_otter_push_uploads_a_foreign_artifact(ddi, tmp_path):
    from fleet_util import otter
    swu = tmp_path / "fw.swu"
    swu.write_bytes(b"070701" + os.urandom(2000))
    conn = ["--server", f"http://127.0.0.1:{ddi.port}", "--token", ddi.token]
    r = otter("push", *conn, "--json", "--format", "swu", "--name", "fw", "--version", "2.1",
              "-T", "board", "-T", "board2", swu)
    import json as _json
    art = _json.loads(r.stdout)
    assert art["name"] == "fw" and art["version"] == "2.1"
    assert art["device_types"] == ["board", "board2"]
    show = admin(ddi, "GET", f"/api/v1/artifacts/{art['id']}").json()
    assert show["manifest"]["sha1"] == hashlib.sha1(swu.read_bytes()).hexdigest()
    bad = otter("push", *conn, "--format", "swu", "--name", "fw", swu, check=False)
    assert bad.returncode == 2 and "--version" in bad.stderr
    bad = otter("push", *conn, "--name", "fw", swu, check=False)
    assert bad.returncode == 2
