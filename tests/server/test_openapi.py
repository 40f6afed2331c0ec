"""docs/api/openapi.yaml documents exactly the routes otterd serves, with the same auth."""
import json
import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("OTTER_BUILD_DIR", REPO / "build"))
OTTERD = (BUILD if BUILD.is_absolute() else REPO / BUILD) / "src" / "server" / "otterd"


def routes():
    r = subprocess.run([str(OTTERD), "--routes"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_route_is_documented_and_nothing_else():
    spec = yaml.safe_load((REPO / "docs" / "api" / "openapi.yaml").read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {(r["method"], r["path"]) for r in routes()}
    assert served - documented == set(), "routes missing from docs/api/openapi.yaml"
    assert documented - served == set(), "docs/api/openapi.yaml documents routes otterd lacks"


def test_public_routes_are_marked_public():
    spec = yaml.safe_load((REPO / "docs" / "api" / "openapi.yaml").read_text())
    for r in routes():
        op = spec["paths"][r["path"]][r["method"].lower()]
        public = op.get("security") == []
        assert public == (r["auth"] == "none"), f"{r['method']} {r['path']}: auth differs from the docs"
        if not public:
            assert "401" in op["responses"] and "403" in op["responses"], r["path"]
