"""Where a run's time and memory go: wall time and peak memory of every stage, round by round.

The steps wrap their work in ``with ctx.stages.timed("train", round_number):``. A run that does not
ask for figures (every run but ``lsun-crowd simulate`` and the benchmarks) gets :class:`Stages`
switched off, which costs two clock reads a stage. Switched on, a thread samples the process's
resident memory every few milliseconds while a stage runs, so each stage reports the most memory
the process held during it, not the process's peak so far.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lsun_crowd import crashpoints

STAGES = ("sample", "publish", "collect", "review", "aggregate", "train", "score", "split", "store writes")
SAMPLE_SECONDS = 0.005
_PAGE = resource.getpagesize()
_STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    """The process's resident memory now (Linux); its peak so far elsewhere."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return peak_bytes()


def peak_bytes() -> int:
    """The most memory the process has held since it started."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class StageFigure:
    seconds: float = 0.0
    peak_bytes: int = 0
    calls: int = 0


class Stages:
    """Stage figures per round number; round 0 holds work done before any round."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.figures: dict[tuple[int, str], StageFigure] = {}
        self.round = 0
        self._peak = 0
        self._lock = threading.Lock()
        self._active = 0
        self._sampler: threading.Thread | None = None

    @classmethod
    def off(cls) -> Stages:
        return cls(enabled=False)

    @contextmanager
    def timed(self, stage: str, round_number: int | None = None) -> Iterator[None]:
        """Time one stage of one round (of the latest round named so far when ``None``)."""
        if round_number is not None:
            self.round = max(self.round, round_number)
        key = (round_number if round_number is not None else self.round, stage)
        crashpoints.reached(stage)
        if not self.enabled:
            yield
            return
        self._start_sampling()
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            peak = self._stop_sampling()
            figure = self.figures.setdefault(key, StageFigure())
            figure.seconds += elapsed
            figure.peak_bytes = max(figure.peak_bytes, peak)
            figure.calls += 1

    def of_round(self, number: int) -> dict[str, StageFigure]:
        return {stage: figure for (round_number, stage), figure in self.figures.items() if round_number == number}

    def totals(self) -> dict[str, StageFigure]:
        result: dict[str, StageFigure] = {}
        for (_, stage), figure in self.figures.items():
            total = result.setdefault(stage, StageFigure())
            total.seconds += figure.seconds
            total.peak_bytes = max(total.peak_bytes, figure.peak_bytes)
            total.calls += figure.calls
        return result

    # -- memory sampling, while at least one stage runs (stages may nest) -------------------------

    def _start_sampling(self) -> None:
        with self._lock:
            self._active += 1
            if self._active > 1:
                return
            self._peak = resident_bytes()
            self._sampler = threading.Thread(target=self._sample, name="lsun-crowd-stage-memory", daemon=True)
            self._sampler.start()

    def _stop_sampling(self) -> int:
        with self._lock:
            self._peak = max(self._peak, resident_bytes())
            peak = self._peak
            self._active -= 1
            sampler = self._sampler if self._active == 0 else None
        if sampler is not None:
            sampler.join()
        return peak

    def _sample(self) -> None:
        while True:
            with self._lock:
                if self._active == 0:
                    return
                self._peak = max(self._peak, resident_bytes())
            time.sleep(SAMPLE_SECONDS)
