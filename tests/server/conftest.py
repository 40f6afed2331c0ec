"""Fixtures for the otterd tests: the real server on loopback (127.0.0.1, port 0) in a temporary
data directory. The binary is $OTTER_BUILD_DIR/src/server/otterd (default build/)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import otterd_util  # noqa: E402
from fixtures import make_server, server  # noqa: E402,F401 (fixtures for every test here)


def pytest_configure(config):
    if not otterd_util.OTTERD.exists():
        raise pytest.UsageError(f"otterd not found at {otterd_util.OTTERD}: build first "
                                f"(or set OTTER_BUILD_DIR)")

