"""Two projects of one name on one MTurk account, over real HTTP with injected throttling, faults
and lost responses, each run killed for real (SIGKILL) at its worst moments and resumed: the
server's ledger ends equal to the stores' spend to the cent, and neither project adopts a HIT of
the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from fake_turk import Chaos, FakeTurk
from test_recovery_over_http import mturk_settings
from test_round import HONEST, Workers, make_project
from turk_server import TurkServer, point_at

from lsun_crowd.api import spent
from lsun_crowd.crashpoints import ENVIRONMENT
from lsun_crowd.project import Project
from lsun_crowd.schema import Hit

# The points where a crash costs most on a paid platform: HITs created but not recorded,
# assignments read but not stored, work approved but not recorded.
KILLS = ("created:round:1", "listed:2", "approving:3")


class Crowd(threading.Thread):
    """Honest workers who take every open HIT, a few times a second, until told to stop."""

    def __init__(self, server: TurkServer, targets: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.server, self.workers, self.done = server, Workers(server.turk, targets), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for hit_id in sorted(self.server.turk.hits):
                for worker in HONEST:
                    self.server.work(hit_id, worker, self.workers.answer)


def run(directory: Path, kill: str | None) -> int:
    environment = dict(os.environ)
    environment.pop(ENVIRONMENT, None)
    if kill is not None:
        environment[ENVIRONMENT] = kill
    command = [sys.executable, "-m", "lsun_crowd.cli", "run", "--project", str(directory), "--rounds", "1"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, -signal.SIGKILL), result.stdout + result.stderr
    return result.returncode


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TurkServer]:
    chaos = Chaos(seed=5, rate=0.08)  # every operation, lost answers included
    with TurkServer(FakeTurk(chaos=chaos)) as running:
        point_at(running, monkeypatch)  # the environment the runs inherit
        yield running


def test_killed_runs_under_faults_keep_the_ledger_equal_to_the_stores(tmp_path: Path, server: TurkServer) -> None:
    projects = [tmp_path / "first" / "digits", tmp_path / "second" / "digits"]  # one name, twice
    for directory in projects:
        targets = make_project(directory, collect_timeout=60.0)
        mturk_settings(directory)
    crowd = Crowd(server, targets)
    crowd.start()
    try:
        kills = 0
        for kill in KILLS:  # the two projects take turns, each killed at the same point
            for directory in projects:
                kills += run(directory, kill) == -signal.SIGKILL
        for directory in projects:
            assert run(directory, None) == 0
    finally:
        crowd.done.set()
        crowd.join()
    assert kills == 6
    assert server.turk.chaos is not None and len(server.turk.chaos.drawn) > 10  # faults were injected

    hits: list[set[str]] = []
    total = Decimal(0)
    for directory in projects:
        project = Project.open(directory)
        key = project.store.project_key("digits-demo")
        with project.store.session() as session:
            rows = session.query(Hit.platform_hit_id, Hit.batch_id).all()
        hits.append({str(hit_id) for hit_id, _ in rows})
        assert all(batch.startswith(f"{key}:") for _, batch in rows)
        for hit_id in hits[-1]:  # every HIT the store holds is one this project created on MTurk
            assert server.turk.hits[hit_id]["RequesterAnnotation"].startswith(f"{key}:")
        total += spent(project)
        project.close()
    assert not hits[0] & hits[1] and len(hits[0]) == len(hits[1]) == 7
    assert len(server.turk.hits) == 14  # nothing published twice, whatever was killed or lost
    assert server.turk.ledger.spent() == total == Decimal("1.26")  # to the cent
