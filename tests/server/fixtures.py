"""The otterd fixtures, shared by the server tests and the agent tests (tests/agent)."""
import pytest

from otterd_util import Otterd


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
