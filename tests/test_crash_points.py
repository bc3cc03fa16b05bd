"""The crash harness's reduced form: one project killed for real (SIGKILL) at ten points spread
over every stage, resumed after each, ends exactly as a run never interrupted, and the simulated
platform's own ledger agrees with the store (``benchmarks/crash.py`` runs many seeded chains)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lsun_crowd import crashpoints
from lsun_crowd.crash_harness import check, make_project, platform_ledger, run_chain, snapshot

SHAPE = {"limit": 160, "digits": 2, "sample": 60, "rounds": 2}
COMMANDS = ("ingest", "gold", "run", "audit")
AUDIT_SAMPLE = 20
# Ten points, in the order a run meets them, with pass counts small enough that a resumed run
# still reaches each: ingest, embedding, publish, collect, review, follow-ups, training, the
# split's label writes, and the audit's publish and review.
KILLS = {
    "ingest": ["ingest:2"],
    "run": [
        "embed:1",
        "created:round:1",
        "listed:3",
        "approving:4",
        "created:follow_up:1",
        "train:1",
        "store writes:1",
    ],
    "audit": ["created:audit:1", "approving:2"],
}


def test_a_run_killed_at_every_stage_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    make_project(reference, **SHAPE)
    make_project(killed, **SHAPE)
    with ThreadPoolExecutor(1) as straight:  # the reference runs beside the killed chain
        done = straight.submit(run_chain, reference, 0, {}, COMMANDS, AUDIT_SAMPLE)
        chain = run_chain(killed, 0, KILLS, COMMANDS, AUDIT_SAMPLE)
        done.result()
    assert chain.not_reached == []
    assert len(chain.kills) == 10
    assert check(killed, reference) == []
    expected = snapshot(reference)
    assert len(expected["votes"]) > 300 and len(expected["hits"]) > 15 and len(expected["items"]) == 160
    assert {row[2] for row in expected["rounds"]} == {"done"} and len(expected["labels"]) > 150
    assert expected["audit_results"]
    assert platform_ledger(reference)["debited"] > 0


def test_a_crash_point_kills_only_on_the_pass_it_names(tmp_path: Path) -> None:
    script = (
        "from lsun_crowd import crashpoints\n"
        "for number in range(1, 6):\n"
        "    print(number, flush=True)\n"
        "    crashpoints.reached('here')\n"
        "    crashpoints.reached('elsewhere')\n"
    )
    environment = dict(os.environ, **{crashpoints.ENVIRONMENT: "here:3"})
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL and result.stdout.split() == ["1", "2", "3"]
    counts = tmp_path / "counts"
    environment = dict(os.environ, **{crashpoints.COUNTS: str(counts)})
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode == 0 and counts.read_text() == "elsewhere 5\nhere 5\n"


@pytest.mark.parametrize("value", ["here", "here:0", ":3", "here:x"])
def test_a_malformed_crash_point_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="expected POINT:N"):
        crashpoints._target(value)


def test_a_run_killed_between_storing_a_poll_and_counting_it_resumes(tmp_path: Path) -> None:
    """The eighth poll closes a job's last HITs; killed before it is counted, the resumed run
    reviews that job first, on the platform's clock of the poll that stored its work (the clock of
    the last poll counted found those assignments not yet submitted, and the run stopped)."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shape = dict(SHAPE, rounds=1)
    make_project(reference, **shape)
    make_project(killed, **shape)
    with ThreadPoolExecutor(1) as straight:
        done = straight.submit(run_chain, reference, 0, {}, ("ingest", "gold", "run"), AUDIT_SAMPLE)
        chain = run_chain(killed, 0, {"run": ["polled:8"]}, ("ingest", "gold", "run"), AUDIT_SAMPLE)
        done.result()
    assert chain.kills == ["run polled:8"]
    assert check(killed, reference) == []
