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
