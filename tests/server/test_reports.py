"""Reports: a deployment's rows exported at once (CSV, JSON), and which version of each payload
the fleet runs."""
import csv
import io

from fleet_util import Release, accepted_device

SHA = "5e" * 32


def test_export_has_every_row_as_csv_and_json(server, tmp_path):
    rel = Release(server, tmp_path / "rel")
    devs = [accepted_device(server, name=f"d{i}") for i in range(3)]
    for d in devs:
        assert d.checkin().status == 200
    art = rel.uploaded(version="1.0")
    dep = rel.deploy(art["id"], devices=devs)["id"]
    assert devs[0].report(dep, "failure", message='disk, "full", really').status == 204
    assert devs[1].report(dep, "downloading", progress=40).status == 204
    r = server.request("GET", f"/api/v1/deployments/{dep}/export", token=server.token)
    assert r.status == 200 and r.headers["content-type"].startswith("text/csv"), r
    rows = list(csv.DictReader(io.StringIO(r.body.decode())))
    assert [int(x["device_id"]) for x in rows] == sorted(d.id for d in devs)
    by_id = {int(x["device_id"]): x for x in rows}
    assert by_id[devs[0].id]["status"] == "failure"
    assert by_id[devs[0].id]["message"] == 'disk, "full", really'  # quoted, round trip
    assert by_id[devs[1].id]["progress"] == "40"
    assert by_id[devs[2].id]["status"] == "pending" and by_id[devs[2].id]["release_order"] == ""
    j = server.request("GET", f"/api/v1/deployments/{dep}/export?format=json",
                       token=server.token).json()
    assert j["deployment_id"] == dep and len(j["devices"]) == 3
    assert server.request("GET", f"/api/v1/deployments/{dep}/export?format=xml",
                          token=server.token).status == 400
    assert server.request("GET", "/api/v1/deployments/999/export",
                          token=server.token).status == 404


def test_export_pages_through_more_than_a_page(server, tmp_path):
    rel = Release(server, tmp_path / "rel")
    devs = [accepted_device(server, name=f"d{i}") for i in range(1005)]
    art = rel.uploaded(version="1.0")
    dep = rel.deploy(art["id"], devices=devs)["id"]
    r = server.request("GET", f"/api/v1/deployments/{dep}/export", token=server.token)
    rows = list(csv.DictReader(io.StringIO(r.body.decode())))
    assert len(rows) == 1005 and len({x["device_id"] for x in rows}) == 1005


def test_versions_report_counts_each_payload_version(server):
    devs = [accepted_device(server, name=f"d{i}") for i in range(5)]
    for i, d in enumerate(devs):
        installed = {"rootfs": {"version": "4.2" if i < 3 else "4.1", "sha256": SHA}}
        if i == 0:
            installed["app"] = {"version": "7", "sha256": SHA}
        assert d.checkin(installed=installed).status == 200
    server.request("PUT", f"/api/v1/devices/{devs[4].id}/tags", {"tags": ["lab"]},
                   token=server.token)
    r = server.request("GET", "/api/v1/reports/versions", token=server.token).json()
    assert r == {"devices": 5, "payloads": {"rootfs": {"4.2": 3, "4.1": 2}, "app": {"7": 1}}}
    r = server.request("GET", "/api/v1/reports/versions?tag=lab", token=server.token).json()
    assert r == {"devices": 1, "payloads": {"rootfs": {"4.1": 1}}}


def test_the_cli_exports_csv(server, tmp_path):
    from test_cli_remote import Cli  # the CLI harness of the remote tests
    rel = Release(server, tmp_path / "rel")
    devs = [accepted_device(server, name=f"d{i}") for i in range(2)]
    dep = rel.deploy(rel.uploaded(version="1.0")["id"], devices=devs)["id"]
    (tmp_path / "home").mkdir()
    cli = Cli(server, tmp_path / "home")
    r = cli.run("deployments", "export", str(dep))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert sorted(int(x["device_id"]) for x in rows) == sorted(d.id for d in devs)
    r = cli.run("deployments", "export", "999")
    assert r.returncode != 0 and "no deployment 999" in r.stderr
