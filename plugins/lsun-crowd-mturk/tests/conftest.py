from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_turk and turk_server, beside the tests

from turk_server import TurkServer, point_at  # found through the path set above


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TurkServer]:
    """The local MTurk-compatible server, with boto3 pointed at it through the environment."""
    with TurkServer() as running:
        point_at(running, monkeypatch)
        yield running
