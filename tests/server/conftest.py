"""Fixtures for the otterd tests: the real server on loopback (127.0.0.1, port 0) in a temporary
data directory. The binary is $OTTER_BUILD_DIR/src/server/otterd (default build/)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import otterd_util  # noqa: E402
from otterd_util import Otterd  # noqa: E402


def pytest_configure(config):
    if not otterd_util.OTTERD.exists():
        raise pytest.UsageError(f"otterd not found at {otterd_util.OTTERD}: build first "
                                f"(or set OTTER_BUILD_DIR)")


@pytest.fixture
def make_server(tmp_path):
    """Starts servers on demand (same or other data directories); stops them all at the end,
    asserting that each exits 0 on SIGTERM."""
    started = []

    def make(data_dir=None, args=(), name=None, **start_kw):
        s = Otterd(tmp_path, data_dir=data_dir, args=args, name=name or f"otterd{len(started)}")
        started.append(s)
        return s.start(**start_kw)

    yield make
    errors = []
    for s in started:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def server(make_server):
    """A fresh otterd with its admin token (server.token)."""
    s = make_server()
    assert s.token, f"no admin token on first start: {s.stdout!r}"
    return s
