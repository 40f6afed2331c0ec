"""otter-agent's device API client through an HTTP proxy (src/agent/http.c, src/agent/net.c),
driven through tests/agent/net_probe against the raw-socket fake server of test_agent_http.py
and a fake proxy.

The fake proxy is proxy_util.FakeProxy: tunnels for CONNECT, absolute-form requests forwarded,
Basic credentials demanded or tunnels refused on request, and names resolved by the proxy only
("otter.test" -> 127.0.0.1), so that a server named otter.test can only be reached through it."""
import base64
import socket
import time

import pytest

from proxy_util import FakeProxy
from test_agent_http import (AUTH_PATH, CHECKIN_PATH, certs, checkin_handler,  # noqa: F401
                             key, make_cert, payload, raw, reply, server_ctx, sha)
from test_agent_net import one, probe


@pytest.fixture
def proxy():
    made = []

    def make(**kw):
        p = FakeProxy(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def named(server):
    """The server's URL with the name only the proxy knows."""
    return server.url.replace("127.0.0.1", "otter.test")


def net(server_url, key, *extra_and_steps):
    return probe("net", "--server", server_url, "--key", key, "--identity", "probe=1",
                 "--connect-timeout", "5", "--timeout", "10", *extra_and_steps, timeout=60)


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- https through a tunnel -------------------------------------------------------------------

def test_https_through_a_tunnel(raw, proxy, key, certs):
    """A TLS server whose certificate names only otter.test, reached as https://otter.test:PORT
    through the proxy: one CONNECT to otter.test:PORT, TLS verified end to end against that name
    (the proxy sees only the tunnel), and the auth, check-in and a 300 kB download all travel on
    that one tunnel (the connection is kept alive through it)."""
    data = payload(300_000)

    def handler(conn, req):
        if req.path == "/dl/f":
            conn.send(reply(200, data))
            return True
        return checkin_handler(conn, req)

    k, c = make_cert(certs, "srv", "DNS:otter.test")
    s = raw(handler, tls=server_ctx(k, c))
    p = proxy()
    res = net(named(s), key, "--ca", c, "--proxy", p.url, "checkin", "download,url=/dl/f")
    assert one(res, "checkin")["err"] == "ok", res
    assert one(res, "download")["err"] == "ok", res
    assert one(res, "download_data")["sha256"] == sha(data)
    assert p.connects == [(f"otter.test:{s.port}", None)], p.connects
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH, "/dl/f"]
    assert len({r.conn_no for r in s.requests}) == 1
    assert all(r.header("Proxy-Authorization") is None for r in s.requests)  # not for the server


def test_the_tunnel_does_not_weaken_tls(raw, proxy, key, certs):
    """Through the tunnel the server's name is still checked: a certificate for another name
    fails the check-in, and no request reaches the server."""
    k, c = make_cert(certs, "other", "DNS:elsewhere.test")
    s = raw(checkin_handler, tls=server_ctx(k, c))
    p = proxy()
    res = net(named(s), key, "--ca", c, "--proxy", p.url, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and "otter.test" in ch["msg"], ch
    assert s.paths() == [] and len(p.connects) == 1


# ---- credentials -------------------------------------------------------------------------------

def test_proxy_credentials(raw, proxy, key, certs):
    """A proxy that demands Basic credentials: given in the URL (escaped: a blank, '@' and ':'
    in them) they are sent with CONNECT, decoded; without them the check-in fails saying the
    proxy wants them; with wrong ones, saying it refused them. The server never sees them."""
    k, c = make_cert(certs, "srv", "DNS:otter.test")
    s = raw(checkin_handler, tls=server_ctx(k, c))
    p = proxy(auth=("dev ice", "p@ss:w"))
    with_creds = f"http://dev%20ice:p%40ss%3Aw@127.0.0.1:{p.port}"
    res = net(named(s), key, "--ca", c, "--proxy", with_creds, "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    sent = p.connects[0][1]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"dev ice:p@ss:w", sent

    res = net(named(s), key, "--ca", c, "--proxy", p.url, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and "407" in ch["msg"] and "give them" in ch["msg"], ch

    wrong = f"http://dev%20ice:nope@127.0.0.1:{p.port}"
    res = net(named(s), key, "--ca", c, "--proxy", wrong, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and "407" in ch["msg"] and "refused" in ch["msg"], ch
    assert all(r.header("Proxy-Authorization") is None for r in s.requests)
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH]


# ---- plain http ----------------------------------------------------------------------------------

def test_plain_http_asks_the_proxy_for_the_absolute_url(raw, proxy, key):
    """allow_http and a proxy: the proxy gets "POST http://otter.test:PORT/api/device/v1/auth
    HTTP/1.1" (absolute form, RFC 9112 §3.2.2) with the credentials, forwards it, and the
    check-in works; the server sees origin-form requests without them."""
    s = raw(checkin_handler)
    p = proxy(auth=("u", "pw"))
    res = net(named(s), key, "--allow-http", "--proxy", f"http://u:pw@127.0.0.1:{p.port}",
              "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    base = f"http://otter.test:{s.port}"
    assert [line for line, _ in p.forwards] == [f"POST {base}{AUTH_PATH} HTTP/1.1",
                                                f"POST {base}{CHECKIN_PATH} HTTP/1.1"], p.forwards
    assert all(a == "Basic " + base64.b64encode(b"u:pw").decode() for _, a in p.forwards)
    assert s.paths() == [AUTH_PATH, CHECKIN_PATH]
    assert all(r.header("Proxy-Authorization") is None for r in s.requests)


# ---- failures and bypasses ------------------------------------------------------------------------

def test_a_refused_tunnel_and_a_dead_proxy(raw, proxy, key, certs):
    """A proxy that answers CONNECT with 403: "io", the message names the proxy, the server and
    the status; a proxy nobody listens on: "io", naming the proxy. Both fail at once (not at a
    timeout), and nothing reaches the server."""
    k, c = make_cert(certs, "srv", "DNS:otter.test")
    s = raw(checkin_handler, tls=server_ctx(k, c))
    p = proxy(refuse="HTTP/1.1 403 Forbidden by policy")
    t0 = time.monotonic()
    res = net(named(s), key, "--ca", c, "--proxy", p.url, "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io", ch
    assert f"refused a tunnel to otter.test port {s.port}: HTTP 403 Forbidden by policy" in \
        ch["msg"], ch
    port = dead_port()
    res = net(named(s), key, "--ca", c, "--proxy", f"http://127.0.0.1:{port}", "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and f"proxy 127.0.0.1 port {port}" in ch["msg"], ch
    assert time.monotonic() - t0 < 5
    assert s.paths() == []


def test_a_proxy_that_never_answers(raw, proxy, key, certs):
    """A proxy that takes CONNECT and says nothing: the check-in fails after the connect timeout
    (2 s here), saying which proxy did not open the tunnel."""
    k, c = make_cert(certs, "srv", "DNS:otter.test")
    s = raw(checkin_handler, tls=server_ctx(k, c))
    p = proxy(silent=True)
    t0 = time.monotonic()
    res = probe("net", "--server", named(s), "--key", key, "--identity", "probe=1",
                "--connect-timeout", "2", "--timeout", "30", "--ca", c, "--proxy", p.url,
                "checkin", timeout=60)
    took = time.monotonic() - t0
    ch = one(res, "checkin")
    assert ch["err"] == "io", ch
    assert f"proxy 127.0.0.1 port {p.port} did not open a tunnel to otter.test port {s.port} " \
        "within 2 s" in ch["msg"], ch
    assert 1.5 < took < 10, took
    assert len(p.connects) >= 1 and s.paths() == []


def test_loopback_and_no_proxy(raw, key):
    """A server at 127.0.0.1 is reached straight, even with a proxy that does not exist; a
    no_proxy list that does not cover the server leaves it to the proxy (which is dead here:
    the error names it)."""
    s = raw(checkin_handler)
    dead = f"http://127.0.0.1:{dead_port()}"
    res = net(s.url, key, "--allow-http", "--proxy", dead, "checkin")
    assert one(res, "checkin")["err"] == "ok", res
    res = net(named(s), key, "--allow-http", "--proxy", dead, "--no-proxy",
              "example.com,10.0.0.0/8", "checkin")
    ch = one(res, "checkin")
    assert ch["err"] == "io" and "proxy 127.0.0.1" in ch["msg"], ch


@pytest.mark.parametrize("bad, why", [
    ("socks5://127.0.0.1:1080", "only http:// proxies"),
    ("http://127.0.0.1:3128/some/path", "without a path"),
])
def test_a_bad_proxy_is_a_configuration_error(raw, key, bad, why):
    s = raw(checkin_handler)
    res = net(s.url, key, "--allow-http", "--proxy", bad, "checkin")
    new = one(res, "new")
    assert new["err"] == "config" and why in new["msg"] and "https_proxy" in new["msg"], new
    assert s.paths() == []
