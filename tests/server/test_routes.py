"""Walks every route of `otterd --routes` that needs a token: without one, with garbage, and with
a real token that lacks the route's scope. New routes are covered as soon as they are declared."""
import pytest

from otterd_util import has_route, routes

TOKEN_ROUTES = [r for r in routes() if r["auth"] == "token"]
GARBAGE = ["otr_" + "A" * 43, "otr_", "not-a-token", "otr_" + "A" * 500]


def concrete(path):
    """'/api/v1/tokens/{id}' -> '/api/v1/tokens/1'."""
    return "/".join("1" if seg.startswith("{") and seg.endswith("}") else seg
                    for seg in path.split("/"))


def send(server, route, headers):
    body = b"{}" if route["method"] in ("POST", "PUT", "PATCH") else None
    return server.request(route["method"], concrete(route["path"]), body, headers=headers)


def assert_denied(r, status, route):
    assert r.status == status, f"{route['method']} {route['path']}: {r}"
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer"), r


def test_the_table_has_token_routes():
    assert TOKEN_ROUTES, "no route needs a token: the walk below would prove nothing"
    for r in TOKEN_ROUTES:
        assert r.get("scope"), f"{r['method']} {r['path']} needs a token but names no scope"


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: f"{r['method']} {r['path']}")
def test_token_route_refuses_missing_and_garbage_tokens(server, route):
    assert_denied(send(server, route, {}), 401, route)
    for garbage in GARBAGE:
        assert_denied(send(server, route, {"Authorization": f"Bearer {garbage}"}), 401, route)
    assert_denied(send(server, route, {"Authorization": server.token}), 401, route)  # no scheme
    assert_denied(send(server, route, {"Authorization": f"Basic {server.token}"}), 401, route)
    server.assert_serving()


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: f"{r['method']} {r['path']}")
def test_token_route_refuses_a_token_without_its_scope(server, route):
    if not has_route("POST", "/api/v1/tokens"):
        pytest.skip("POST /api/v1/tokens does not exist yet: no way to make a limited token")
    # audit:read, unless the route needs exactly that; then tokens.
    scope = "tokens" if route["scope"] == "audit:read" else "audit:read"
    limited = server.create_token([scope], name="limited")
    assert limited["token"].startswith("otr_")
    assert_denied(send(server, route, {"Authorization": f"Bearer {limited['token']}"}), 403, route)


def test_revoked_token_is_refused(server):
    if not has_route("POST", "/api/v1/tokens"):
        pytest.skip("POST /api/v1/tokens does not exist yet")
    t = server.create_token(["audit:read"], name="short-lived")
    assert server.request("GET", "/api/v1/audit", token=t["token"]).status == 200
    assert server.request("DELETE", f"/api/v1/tokens/{t['id']}", token=server.token).status == 204
    r = server.request("GET", "/api/v1/audit", token=t["token"])
    assert r.status == 401, r


DEVICE_ROUTES = [r for r in routes() if r["auth"] == "device"]


def test_the_table_has_device_routes():
    assert DEVICE_ROUTES, "no route needs a device token: the walk below would prove nothing"


@pytest.mark.parametrize("route", DEVICE_ROUTES, ids=lambda r: f"{r['method']} {r['path']}")
def test_device_route_refuses_everything_but_a_device_token(server, route):
    garbage = ["otd_" + "A" * 66, "otd_", "otd_" + "A" * 500, server.token]
    assert send(server, route, {}).status == 401
    for g in garbage:
        r = send(server, route, {"Authorization": f"Bearer {g}"})
        assert r.status == 401, (g, r)
        assert r.json()["error"]["code"] == "unauthorized"
    server.assert_serving()


DDI_ROUTES = [r for r in routes() if r["auth"] == "ddi"]


def test_the_table_has_ddi_routes():
    assert DDI_ROUTES, "no hawkBit DDI route: the walk below would prove nothing"


def ddi_concrete(path, tenant="DEFAULT"):
    return concrete(path.replace("{tenant}", tenant))


@pytest.mark.parametrize("route", DDI_ROUTES, ids=lambda r: f"{r['method']} {r['path']}")
def test_ddi_route_refuses_everything_but_its_credentials(server, route):
    """401 with an EMPTY body (hawkBit's clients expect it); another tenant is 404."""
    body = b"{}" if route["method"] in ("POST", "PUT") else None
    garbage = [f"TargetToken ddi_{'A' * 43}", "TargetToken ", f"Bearer {server.token}",
               f"GatewayToken {'x' * 20}", "GatewayToken ", f"TargetToken {'A' * 500}"]
    path = ddi_concrete(route["path"])
    r = server.request(route["method"], path, body)
    assert r.status == 401 and r.body == b"", r
    for g in garbage:
        r = server.request(route["method"], path, body, headers={"Authorization": g})
        assert r.status == 401 and r.body == b"", (g, r)
    r = server.request(route["method"], ddi_concrete(route["path"], "other"), body)
    assert r.status == 404, r
    server.assert_serving()
