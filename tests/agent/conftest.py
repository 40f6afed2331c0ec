"""Fixtures for the otter-agent tests: the real otterd (tests/server's fixtures) and simulated
devices running the real otter-agent binary with file-backed slots and the simulated bootloader."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "server"))

from fixtures import make_server, server  # noqa: E402,F401
