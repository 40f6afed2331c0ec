"""docs/api/openapi.yaml documents exactly the routes otterd serves, with the same auth."""
import json
import os
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("OTTER_BUILD_DIR", REPO / "build"))
OTTERD = (BUILD if BUILD.is_absolute() else REPO / BUILD) / "src" / "server" / "otterd"

# How each kind of route authentication of `otterd --routes` appears in the OpenAPI file: the
# operation's effective `security` (its own, or the file's default).
SECURITY = {
    "none": [],
    "token": [{"bearer": []}],
    "device": [{"deviceToken": []}],
    "ddi": [{"ddi": []}],
}


def routes():
    r = subprocess.run([str(OTTERD), "--routes"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def spec():
    return yaml.safe_load((REPO / "docs" / "api" / "openapi.yaml").read_text())


def test_every_route_is_documented_and_nothing_else():
    documented = {(m.upper(), p) for p, ops in spec()["paths"].items() for m in ops}
    served = {(r["method"], r["path"]) for r in routes()}
    assert served - documented == set(), "routes missing from docs/api/openapi.yaml"
    assert documented - served == set(), "docs/api/openapi.yaml documents routes otterd lacks"


def test_public_routes_are_marked_public():
    s = spec()
    for r in routes():
        op = s["paths"][r["path"]][r["method"].lower()]
        public = op.get("security") == []
        assert public == (r["auth"] == "none"), f"{r['method']} {r['path']}: auth differs from the docs"
        if not public:
            assert "401" in op["responses"], r["path"]


def test_auth_kind_and_scope_match_the_route_table():
    s = spec()
    assert set(s["components"]["securitySchemes"]) == {"bearer", "deviceToken", "ddi"}
    for r in routes():
        where = f"{r['method']} {r['path']}"
        op = s["paths"][r["path"]][r["method"].lower()]
        assert r["auth"] in SECURITY, f"{where}: unknown auth kind {r['auth']!r}"
        assert op.get("security", s["security"]) == SECURITY[r["auth"]], \
            f"{where}: security differs from auth {r['auth']!r}"
        # "Scope `x`." in the description names the route's scope, and only token routes have one.
        scopes = re.findall(r"Scope `([^`]+)`", op.get("description", ""))
        if r["auth"] == "token":
            assert scopes == [r["scope"]], f"{where}: the description must say Scope `{r['scope']}`"
            assert "403" in op["responses"], f"{where}: a token route answers 403 (scope)"
        else:
            assert scopes == [], f"{where}: a route without an API token has no scope"
