"""Fixtures for the end-to-end tests: the real otterd (tests/server's fixtures), otter-sim fleets
and real otter-agent processes on simulated devices (tests/agent's SimDevice)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "server"))
sys.path.insert(0, str(HERE.parent / "agent"))

from fixtures import make_server, server  # noqa: E402,F401
