"""A fresh PostgreSQL database per test on the server OTTER_TEST_PG_URL names (scripts/test.sh
starts a throwaway one). Without it the PostgreSQL variants are skipped, except in CI (CI=true),
where a run must never pass without them."""
import itertools
import os
import subprocess
import urllib.parse

import pytest

_counter = itertools.count()


def pg_url_or_skip():
    url = os.environ.get("OTTER_TEST_PG_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("OTTER_TEST_PG_URL is not set: CI must run the PostgreSQL tests")
        pytest.skip("no PostgreSQL server (OTTER_TEST_PG_URL)")
    return url


def with_db(url, name):
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}/{name}" + (f"?{u.query}" if u.query else "")


def psql(url, sql):
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def pg_database():
    """The URL of a new, empty database; dropped afterwards."""
    url = pg_url_or_skip()
    name = f"otter_srv_{os.getpid()}_{next(_counter)}"
    psql(url, f"CREATE DATABASE {name}")
    yield with_db(url, name)
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
