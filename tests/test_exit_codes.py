"""``lsun-crowd run`` exits 0 when every category is resolved or at its round limit, and
:data:`~lsun_crowd.running.EXIT_STOPPED_FOR_MONEY` (3) when any stopped for money, saying why once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lsun_crowd.running import EXIT_STOPPED_FOR_MONEY
from lsun_crowd.testing import digits_project


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lsun_crowd.cli", "run", "--project", str(directory)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_stopped_by_its_budget_exits_3_and_says_so_once(tmp_path: Path) -> None:
    digits_project(tmp_path, limit=200, digits=range(2), sample_per_round=60, overrides={"cascade": {"budget": "0.50"}})
    result = run(tmp_path)
    assert result.returncode == EXIT_STOPPED_FOR_MONEY == 3, result.stderr
    output = result.stdout + result.stderr
    for digit in (0, 1):
        lines = [line for line in output.splitlines() if line.startswith(f"digit-{digit}:") and "budget" in line]
        assert len(lines) == 1, output
        assert lines[0].startswith(f"digit-{digit}: stopped after 0 round(s), budget: round 1 would cost ")
    again = run(tmp_path)  # resumed, still out of money: the same code, nothing spent
    assert again.returncode == 3


def test_a_run_at_its_round_limit_exits_0(tmp_path: Path) -> None:
    digits_project(tmp_path, limit=150, digits=range(1), sample_per_round=60, overrides={"cascade": {"max_rounds": 1}})
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "digit-0: round limit after 1 round(s)" in result.stdout
