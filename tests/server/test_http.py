"""otterd's HTTP layer, over real HTTP on loopback: routing, the JSON error shape, HEAD, body
limits, hostile paths and headers, keep-alive and the request log."""
import json
import threading
import time

import pytest

from otterd_util import read_response, routes


def assert_json_error(r, status, code):
    assert r.status == status, r
    assert r.headers["content-type"] == "application/json", r
    assert r.body.endswith(b"\n"), r
    err = r.json()["error"]
    assert err["code"] == code, r
    assert isinstance(err["message"], str) and err["message"], r
    return err


def test_health_is_public_json(server):
    r = server.request("GET", "/api/v1/health")
    assert r.status == 200, r
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.body.endswith(b"\n")
    assert r.json()["status"] == "ok"


def test_unknown_route_is_404_json(server):
    for path in ["/nope", "/api/v1/nope", "/api/v1/health/extra", "/api/v1/health/", "/",
                 "/api/v1/tokens/1/more"]:
        assert_json_error(server.request("GET", path), 404, "not_found")


def test_wrong_method_is_405_with_allow(server):
    r = server.request("DELETE", "/api/v1/health")
    assert_json_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    r = server.request("PUT", "/api/v1/tokens", b"{}")
    assert_json_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = server.request("BREW", "/api/v1/health")
    assert_json_error(r, 405, "method_not_allowed")


def test_head_answers_like_get_without_body(server):
    get = server.request("GET", "/api/v1/health")
    with server.socket() as s:
        s.sendall(b"HEAD /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        head = read_response(s, head=True)
        assert head.status == 200
        assert head.body == b""
        assert int(head.headers["content-length"]) == len(get.body)
        # Nothing else arrives: the next response on the connection starts cleanly.
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s).status == 200


def token_route_limit():
    """max_body of POST /api/v1/tokens, from the route table itself."""
    return next(r["max_body"] for r in routes()
                if r["method"] == "POST" and r["path"] == "/api/v1/tokens")


def test_oversized_body_by_content_length_is_413_unread(server):
    # Headers only: the server must answer without waiting for 100 MB that never come.
    with server.socket() as s:
        s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                  server.token.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        started = time.monotonic()
        r = read_response(s)
        assert time.monotonic() - started < 5
    assert_json_error(r, 413, "too_large")
    # A client that asks first (curl does for large bodies) gets 413 instead of "100 Continue".
    with server.socket() as s:
        s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                  server.token.encode() + b"\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % (token_route_limit() + 1))
        r = read_response(s)
    assert_json_error(r, 413, "too_large")
    server.assert_serving()


def test_oversized_chunked_body_is_413_and_server_keeps_serving(server):
    # No Content-Length: the limit is found while streaming.
    chunk = b"x" * 8192
    chunks = token_route_limit() // len(chunk) + 2
    with server.socket() as s:
        s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                  server.token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(chunks):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
        r = read_response(s)
    assert_json_error(r, 413, "too_large")
    server.assert_serving()


def test_chunked_body_within_limit_is_accepted(server):
    body = json.dumps({"name": "chunked", "scopes": ["audit:read"]}).encode()
    with server.socket() as s:
        s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                  server.token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):
            part = body[i:i + 7]
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        s.sendall(b"0\r\n\r\n")
        r = read_response(s)
    assert r.status == 201, r
    assert r.json()["name"] == "chunked"


def test_malformed_json_is_400(server):
    for body in [b"{bad", b"", b"[]", b'{"name":"a","name":"b","scopes":[]}', b'{"name":"x"} trailing',
                 b'"just a string"', b"\xff\xfe"]:
        err = assert_json_error(server.request("POST", "/api/v1/tokens", body, token=server.token),
                                400, "format")
        assert "request body" in err["message"] or "token" in err["message"], err
    server.assert_serving()


@pytest.mark.parametrize("target", [
    b"/api/v1/../v1/health",
    b"/api/v1/./health",
    b"/api/v1/health/..",
    b"/api//v1/health",
    b"//api/v1/health",
    b"/api/v1/%2e%2e/v1/health",
    b"/api/v1/%2E%2e/v1/health",
    b"/api/v1/.%2e/v1/health",
    b"/api/v1/%2e/health",
    b"/api/v1/health%00",
    b"/api/v1/health%zz",
    b"/api/v1/health%4",
    b"/api/v1/tokens/%2e%2e",
    b"/api/v1/tokens/1%2F2",
    b"/api/v1/tokens/%0a",
    b"/api/v1/he\"alth",
    b"/api/v1/health\\..\\x",
    b"/" + b"a" * 3000,
])
def test_path_tricks_are_400(server, target):
    r = server.raw(b"DELETE " + target + b" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                   server.token.encode() + b"\r\n\r\n")
    assert_json_error(r, 400, "bad_request")


def test_path_parameters_are_percent_decoded(server):
    t = server.create_token(["audit:read"], name="decode-me")
    encoded = "".join(f"%{b:02X}" for b in str(t["id"]).encode())
    r = server.request("DELETE", f"/api/v1/tokens/{encoded}", token=server.token)
    assert r.status == 204, r
    listed = server.request("GET", "/api/v1/tokens", token=server.token).json()["tokens"]
    assert [x["revoked"] for x in listed if x["id"] == t["id"]] == [True]


def test_path_longer_than_the_header_limit_is_414(server):
    r = server.raw_get(b"/" + b"a" * 20000)
    assert r.status == 414
    server.assert_serving()


def test_header_flood_is_rejected_and_server_keeps_serving(server):
    # One 64 KiB header, then many small ones: both exceed header_limit (16K): 431 from
    # libmicrohttpd itself (not JSON: the request never reaches otterd's code).
    r = server.raw_get(b"/api/v1/health", b"X-Flood: " + b"a" * 65536 + b"\r\n")
    assert r.status == 431
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(1000))
    assert server.raw_get(b"/api/v1/health", many).status == 431
    server.assert_serving()


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = server.connection()
    try:
        r = server.request("GET", "/api/v1/health", conn=conn)
        sock = conn.sock
        assert sock is not None
        replies = [r]
        replies.append(server.request("GET", "/nope", conn=conn))
        replies.append(server.request("DELETE", "/api/v1/health", conn=conn))
        replies.append(server.request("GET", "/api/v1/tokens", conn=conn))  # 401
        replies.append(server.request("HEAD", "/api/v1/health", conn=conn))
        replies.append(server.request("POST", "/api/v1/tokens", {"name": "ka", "scopes": ["audit:read"]},
                                      token=server.token, conn=conn))
        replies.append(server.request("GET", "/api/v1/tokens", token=server.token, conn=conn))
        assert [x.status for x in replies] == [200, 404, 405, 401, 200, 201, 200]
        for x in replies:
            assert x.headers.get("connection", "").lower() != "close", x
        assert conn.sock is sock, "the connection was not kept alive"
    finally:
        conn.close()


def test_early_error_with_a_body_closes_without_reading_it(server):
    # 401 before the body: otterd refuses to read it, so the connection cannot be reused.
    with server.socket() as s:
        s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n")
        r = read_response(s)
    assert_json_error(r, 401, "unauthorized")
    assert r.headers.get("connection", "").lower() == "close"


def test_request_log_has_one_line_per_request_and_no_query_or_token(server):
    server.request("GET", "/api/v1/health?token=SECRET-IN-QUERY")
    server.request("GET", "/api/v1/tokens", token=server.token)
    server.request("GET", "/api/v1/tokens", token="otr_" + "B" * 43)
    server.raw_get(b"/api/v1/\x1b[31mred")
    server.stop()
    log = server.log()
    assert "SECRET-IN-QUERY" not in log
    assert server.token not in log
    assert "otr_BBBB" not in log
    assert "\x1b" not in log
    lines = [l for l in log.splitlines() if " /api/v1/" in l]
    assert any(l.startswith("<6>127.0.0.1 GET /api/v1/health 200 ") for l in lines), log
    assert any(l.startswith("<6>127.0.0.1 GET /api/v1/tokens 200 ") and "token:1 (admin)" in l
               for l in lines), log
    assert any(l.startswith("<6>127.0.0.1 GET /api/v1/tokens 401 ") for l in lines), log
    assert any("\\x1b" in l and " 400 " in l for l in lines), log
    for l in lines:
        assert l.rstrip().split()[5].endswith("ms"), l


def test_concurrent_clients_on_keep_alive_connections(server):
    # The pool's threads serve many connections at once; each connection keeps its order.
    errors = []

    def client(n):
        conn = server.connection()
        try:
            for i in range(40):
                if i % 4 == 0:
                    r = server.request("POST", "/api/v1/tokens",
                                       {"name": f"c{n}-{i}", "scopes": ["audit:read"]},
                                       token=server.token, conn=conn)
                    ok = r.status == 201 and r.json()["name"] == f"c{n}-{i}"
                elif i % 4 == 1:
                    r = server.request("GET", "/api/v1/audit?limit=5", token=server.token, conn=conn)
                    ok = r.status == 200
                elif i % 4 == 2:
                    r = server.request("GET", "/nope", conn=conn)
                    ok = r.status == 404
                else:
                    r = server.request("GET", "/api/v1/health", conn=conn)
                    ok = r.status == 200
                if not ok:
                    errors.append(r)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == []
    names = {t["name"] for t in server.request("GET", "/api/v1/tokens", token=server.token).json()["tokens"]}
    assert {f"c{n}-{i}" for n in range(8) for i in range(0, 40, 4)} <= names
