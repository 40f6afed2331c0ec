"""kill -9 in the middle of a burst of management writes: after a restart every acknowledged write
is there and usable, and the server carries on (issue #3: no acknowledged write is lost)."""
import threading
import time

from otterd_util import TIMEOUT

WRITERS = 4
BURST_SECONDS = 0.8


def writer(server, acked, errors, stop):
    """Creates tokens on one keep-alive connection until the server dies or stop is set."""
    conn = server.connection()
    n = 0
    deadline = time.monotonic() + TIMEOUT
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            r = server.request("POST", "/api/v1/tokens",
                               {"name": f"burst-{threading.get_ident() % 10000}-{n}",
                                "scopes": ["audit:read"]},
                               token=server.token, conn=conn)
        except OSError:
            return  # the server was killed: this request was never acknowledged
        if r.status != 201:
            errors.append(r)
            return
        acked.append(r.json())
        n += 1


def test_kill_9_during_a_write_burst_loses_no_acknowledged_write(make_server):
    server = make_server()
    admin = server.token
    acked, errors, stop = [], [], threading.Event()
    threads = [threading.Thread(target=writer, args=(server, acked, errors, stop))
               for _ in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(BURST_SECONDS)
    server.kill()  # SIGKILL, mid-burst
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert len(acked) > 20, "the burst was too short to mean anything"

    again = make_server(data_dir=server.data_dir, name="restarted")
    assert again.token is None, "a restart must not print a new admin token"
    r = again.request("GET", "/api/v1/tokens", token=admin)
    assert r.status == 200, r
    stored = {t["id"]: t for t in r.json()["tokens"]}
    missing = [a["id"] for a in acked if a["id"] not in stored]
    assert missing == [], f"acknowledged tokens lost by kill -9: {missing}"
    # Each acknowledged token still works (its hash was stored with it) ...
    for a in acked:
        assert again.request("GET", "/api/v1/audit?limit=1", token=a["token"]).status == 200, a
    # ... and its creation is in the audit log, which was written before the reply.
    created, after = set(), 0
    for _ in range(len(acked) // 1000 + 2):  # page through, bounded
        page = again.request("GET", f"/api/v1/audit?limit=1000&after={after}", token=admin).json()
        created |= {e["object"] for e in page["entries"] if e["action"] == "token.create"}
        if not page["entries"]:
            break
        after = page["next_after"]
    assert {f"token:{a['id']}" for a in acked} <= created
    again.assert_serving()


# ---- uploads and device reports (fleet_util) ---------------------------------------------------

def test_kill_9_during_an_upload_keeps_acknowledged_artifacts_only(make_server, tmp_path):
    import hashlib
    from fleet_util import Release

    server = make_server()
    rel = Release(server, tmp_path / "rel")
    done = [rel.uploaded(name=f"ok{i}", size=200000) for i in range(3)]
    # One more upload in flight: a valid artifact's first half, then the rest trickles.
    big = rel.artifact(name="big", size=8 * 1024 * 1024)
    data = big.read_bytes()
    conn = server.socket()
    conn.sendall(b"POST /api/v1/artifacts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                 server.token.encode() + b"\r\nContent-Length: " + str(len(data)).encode() +
                 b"\r\n\r\n" + data[: len(data) // 2])
    time.sleep(0.3)
    server.kill()
    conn.close()

    again = make_server(data_dir=server.data_dir, name="restarted")
    listing = again.request("GET", "/api/v1/artifacts", token=server.token).json()["artifacts"]
    assert sorted(a["id"] for a in listing) == sorted(a["id"] for a in done)
    blobs = sorted(p.name for p in (server.data_dir / "blobs").iterdir())
    assert blobs == sorted(a["sha256"] for a in done), "a half upload left a file behind"
    for a in done:
        r = again.request("GET", f"/api/v1/artifacts/{a['id']}/download", token=server.token)
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == a["sha256"]
    # the interrupted one can be uploaded now, whole
    r = again.request("POST", "/api/v1/artifacts", data, token=server.token)
    assert r.status == 201, r


def reporter(server, device, deployment, acked, errors, stop):
    """Sends progress reports for one device until the server dies; records acknowledged ones."""
    from fleet_util import canonical
    conn = server.connection()
    n = 0
    deadline = time.monotonic() + TIMEOUT
    while not stop.is_set() and time.monotonic() < deadline and n < 100000:
        body = canonical({"status": "downloading", "progress": n % 101, "message": f"m{n}"})
        try:
            r = server.request("POST", f"/api/device/v1/deployments/{deployment}/status", body,
                               token=device.token, conn=conn)
        except OSError:
            return
        if r.status != 204:
            errors.append(r)
            return
        acked.append((device.id, f"m{n}"))
        n += 1


def test_kill_9_during_a_burst_of_status_reports(make_server, tmp_path):
    from fleet_util import Release, accepted_device

    server = make_server()
    rel = Release(server, tmp_path / "rel")
    devices = [accepted_device(server, name=f"d{i}") for i in range(WRITERS)]
    dep = rel.deploy(rel.uploaded()["id"], devices=devices)
    acked, errors, stop = [], [], threading.Event()
    threads = [threading.Thread(target=reporter, args=(server, d, dep["id"], acked, errors, stop))
               for d in devices]
    for t in threads:
        t.start()
    time.sleep(BURST_SECONDS)
    server.kill()
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert len(acked) > 20, "the burst was too short to mean anything"

    again = make_server(data_dir=server.data_dir, name="restarted")
    for d in devices:
        r = again.request("GET", f"/api/v1/deployments/{dep['id']}/devices/{d.id}",
                          token=server.token)
        assert r.status == 200, r
        # the timeline keeps the first 1000 events; every acknowledged one among them is there
        seen = {e["message"] for e in r.json()["events"]}
        mine = [m for (i, m) in acked if i == d.id]
        expected = [m for m in mine if int(m[1:]) < 1000]
        assert set(expected) <= seen, f"device {d.id}: lost {sorted(set(expected) - seen)[:5]}"
    # devices carry on with the tokens they had: same key, same server state
    for d in devices:
        d.server = again
        assert d.checkin().status == 200
        assert d.report(dep["id"], "success").status == 204
    show = again.request("GET", f"/api/v1/deployments/{dep['id']}", token=server.token).json()
    assert show["status"] == "finished" and show["rollup"]["success"] == WRITERS
