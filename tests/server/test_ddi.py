"""hawkBit DDI against the real otterd: the API level (registration, target/gateway tokens, the
proxy's X-Controller-Id, poll ETag, deploymentBase, feedback mapping, 410, configData, artifact
Range/ETag/.MD5SUM), and the real client: Debian's swupdate (suricatta) installing a signed .swu,
confirming it after a simulated restart, reporting a corrupt payload, and refused with a wrong
token. docs/hawkbit.md describes the mapping."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleet_util import accepted_device

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


def register(server, cid="dev01", device_type="board"):
    r = admin(server, "POST", "/api/v1/devices/ddi", {"controller_id": cid, "device_type": device_type})
    assert r.status in (200, 201), r
    body = r.json()
    assert body["target_token"].startswith("ddi_") and body["controller_id"] == cid
    return body


def ddi_req(server, method, path, token=None, cid="dev01", body=None, headers=None, scheme="TargetToken"):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"{scheme} {token}"
    return server.request(method, f"/DEFAULT/controller/v1/{cid}{path}", body, headers=h)


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
    dev01 = [d for d in devices if d["identity"] == {"controller_id": "dev01"}][0]
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
    d = [d for d in devices if d["identity"] == {"controller_id": "gw-dev-7"}]
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
    # several ranges: the whole file (RFC 9110 allows it; the clients only resume with one range)
    r = ddi.request("GET", path, headers={**auth, "Range": "bytes=0-9,20-29"})
    assert r.status in (200, 206)
    if r.status == 200:
        assert r.body == data
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
