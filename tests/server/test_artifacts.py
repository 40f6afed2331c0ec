"""Artifact uploads against the real otterd: streamed to the blob store, verified against the
server's release keys before they are kept; list, show, download, delete."""
import hashlib
import os
import tarfile

import pytest

from fleet_util import Release, accepted_device, otter


@pytest.fixture
def release(server, tmp_path):
    return Release(server, tmp_path / "release")


def blobs(server):
    d = server.data_dir / "blobs"
    return sorted(p.name for p in d.iterdir())


def admin(server, method, path, body=None):
    return server.request(method, path, body, token=server.token)


def test_upload_without_release_keys_is_refused(server, tmp_path):
    r = server.request("POST", "/api/v1/artifacts", b"x" * 100, token=server.token)
    assert r.status == 422 and "PUT /api/v1/trust" in r.json()["error"]["message"], r
    r = server.request("POST", "/api/v1/artifacts", b"", token=server.token)
    assert r.status == 422


def test_upload_list_show_download(server, release):
    path = release.artifact(name="fw", version="3.1", device_types=("gw-1", "gw-2"), size=300000)
    r = release.upload(path)
    assert r.status == 201, r
    a = r.json()
    data = path.read_bytes()
    assert a["sha256"] == hashlib.sha256(data).hexdigest() and a["size"] == len(data)
    assert a["name"] == "fw" and a["version"] == "3.1" and a["device_types"] == ["gw-1", "gw-2"]
    assert a["uploaded_by"].startswith("token:")
    assert blobs(server) == [a["sha256"]]
    listing = admin(server, "GET", "/api/v1/artifacts").json()
    assert [x["id"] for x in listing["artifacts"]] == [a["id"]]
    show = admin(server, "GET", f"/api/v1/artifacts/{a['id']}").json()
    assert show["manifest"]["name"] == "fw" and show["manifest"]["payloads"][0]["name"] == "rootfs"
    r = admin(server, "GET", f"/api/v1/artifacts/{a['id']}/download")
    assert r.status == 200 and r.body == data
    r = server.request("GET", f"/api/v1/artifacts/{a['id']}/download", token=server.token,
                       headers={"Range": "bytes=0-511"})
    assert r.status == 206 and r.body == data[:512]
    audit = admin(server, "GET", "/api/v1/audit").json()["entries"]
    assert any(e["action"] == "artifact.upload" for e in audit)


def test_duplicate_upload_is_409(server, release):
    path = release.artifact()
    assert release.upload(path).status == 201
    r = release.upload(path)
    assert r.status == 409 and "uploaded before" in r.json()["error"]["message"]
    other = release.artifact(version="1.0")  # same name and version, other bytes
    r = release.upload(other)
    assert r.status == 409, r
    assert len(blobs(server)) == 1  # the refused one left nothing


def test_unsigned_untrusted_tampered_truncated_are_refused(server, release, tmp_path):
    cases = {}
    cases["unsigned"] = release.artifact(name="u", sign=False)
    otter("keygen", "-q", tmp_path / "mallory")
    evil = release.artifact(name="e", sign=False)
    otter("sign", "-q", "-k", tmp_path / "mallory.key", evil)
    cases["untrusted"] = evil
    good_path = release.artifact(name="t", size=50000)
    good = good_path.read_bytes()
    with tarfile.open(good_path, "r:") as t:
        payload = [m for m in t.getmembers() if m.name.startswith("payload/")][0]
    tampered = bytearray(good)
    tampered[payload.offset_data + 100] ^= 0x01  # inside the payload
    (tmp_path / "tampered.otter").write_bytes(bytes(tampered))
    cases["tampered"] = tmp_path / "tampered.otter"
    (tmp_path / "truncated.otter").write_bytes(good[: len(good) // 2])
    cases["truncated"] = tmp_path / "truncated.otter"
    (tmp_path / "garbage.otter").write_bytes(os.urandom(20000))
    cases["garbage"] = tmp_path / "garbage.otter"
    for what, path in cases.items():
        r = release.upload(path)
        assert r.status in (400, 422), (what, r)
        assert r.json()["error"]["message"].startswith("artifact refused"), (what, r)
        if what in ("unsigned", "untrusted", "tampered"):
            assert r.status == 422, (what, r)
    assert blobs(server) == []
    assert admin(server, "GET", "/api/v1/artifacts").json()["artifacts"] == []
    server.assert_serving()


def test_max_artifact_size(make_server, tmp_path):
    conf = tmp_path / "small.conf"
    conf.write_text("max_artifact_size = 64K\n")
    s = make_server(args=["--config", conf])
    rel = Release(s, tmp_path / "rel")
    r = rel.upload(rel.artifact(size=200000, content=os.urandom(200000)))
    assert r.status == 413, r
    assert rel.upload(rel.artifact(name="small", size=1000)).status == 201


def test_delete_only_when_unused(server, release):
    d = accepted_device(server)
    a = release.uploaded()
    dep = release.deploy(a["id"], devices=[d])
    r = admin(server, "DELETE", f"/api/v1/artifacts/{a['id']}")
    assert r.status == 409 and str(dep["id"]) in r.json()["error"]["message"], r
    assert admin(server, "POST", f"/api/v1/deployments/{dep['id']}/cancel").status == 200
    assert admin(server, "DELETE", f"/api/v1/artifacts/{a['id']}").status == 204
    assert blobs(server) == []
    assert admin(server, "GET", f"/api/v1/artifacts/{a['id']}").status == 404
    kept = admin(server, "GET", f"/api/v1/deployments/{dep['id']}").json()
    assert kept["artifact_id"] == 0 and kept["artifact_name"] == "app"


def test_trust_must_be_a_valid_trust_file(server, release):
    for body in [b"{", b"{}", b'{"otter_trust":1,"threshold":2,"keys":[]}']:
        assert admin(server, "PUT", "/api/v1/trust", body).status == 400
    r = admin(server, "GET", "/api/v1/trust")
    assert r.status == 200 and r.json()["threshold"] == 1
