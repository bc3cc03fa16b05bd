from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # live_server, beside the tests

from live_server import LiveServer
from lsun_crowd_web.state import WebState


@pytest.fixture
def state(tmp_path: Path) -> WebState:
    return WebState(tmp_path / "web-crowd.sqlite")


@pytest.fixture
def live(state: WebState) -> Iterator[LiveServer]:
    with LiveServer(state) as server:
        yield server
