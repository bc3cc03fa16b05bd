from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from lsun_crowd_mock import CrowdMix, SimulatedCrowd

from lsun_crowd.crowd import NO, YES, CrowdBackend, CrowdError, HitBatch, HitItem, HitSpec, HitState
from lsun_crowd.testing import CrowdBackendConformance, conformance_truth


class TestSimulatedCrowdConformance(CrowdBackendConformance):
    def make_backend(self, tmp_path: Path) -> SimulatedCrowd:
        self.state_file = tmp_path / "state.sqlite"
        return SimulatedCrowd(conformance_truth, CrowdMix(seed=3, expire_rate=0), self.state_file)

    def bonuses_paid(self, backend: CrowdBackend, worker_id: str) -> list[Decimal]:
        with closing(sqlite3.connect(self.state_file)) as db:  # the platform's own record, as a second reader
            rows = db.execute("SELECT amount FROM bonuses WHERE worker_id = ?", (worker_id,)).fetchall()
        return [Decimal(amount) for (amount,) in rows]

    def make_batch_for_everyone(self, backend: CrowdBackend, batch_id: str) -> HitBatch:
        # The platform draws each HIT's workers from its whole crowd; a HIT asking one assignment
        # per worker is offered to every worker it does not exclude (each HIT, so that one returned
        # HIT does not hide a worker).
        assert isinstance(backend, SimulatedCrowd)
        return replace(self.make_batch(batch_id), assignments_per_hit=backend.mix.workers)


def truth_even(uri: str, category: str) -> bool:
    return int(uri.rsplit("-", 1)[1]) % 2 == 0


def big_batch(batch_id: str = "b1", hits: int = 200, per_hit: int = 10, assignments: int = 5) -> HitBatch:
    specs = tuple(
        HitSpec(f"h{h}", tuple(HitItem(f"{h}-{i}", f"img-{h * per_hit + i}") for i in range(per_hit)))
        for h in range(hits)
    )
    return HitBatch(batch_id, "even", "Is it even?", specs, assignments, Decimal("0.01"))


def drain(crowd: SimulatedCrowd, hit_ids: list[str]) -> dict[str, list]:
    for _ in range(100):
        if all(s.state != HitState.OPEN for s in crowd.hit_status(hit_ids)):
            break
    return {hit_id: crowd.list_assignments(hit_id) for hit_id in hit_ids}


def test_same_seed_same_answers_regardless_of_polling(tmp_path: Path) -> None:
    first = SimulatedCrowd(truth_even, CrowdMix(seed=7), tmp_path / "a.sqlite")
    second = SimulatedCrowd(truth_even, CrowdMix(seed=7, tick_seconds=50), tmp_path / "b.sqlite")
    batch = big_batch(hits=30)
    ids_a = [h.hit_id for h in first.publish(batch)]
    ids_b = [h.hit_id for h in second.publish(batch)]
    assert ids_a == ids_b
    answers_a = {k: [(a.worker_id, dict(a.answers)) for a in v] for k, v in drain(first, ids_a).items()}
    answers_b = {k: [(a.worker_id, dict(a.answers)) for a in v] for k, v in drain(second, ids_b).items()}
    assert answers_a == answers_b
    other_seed = SimulatedCrowd(truth_even, CrowdMix(seed=8), tmp_path / "c.sqlite")
    ids_c = [h.hit_id for h in other_seed.publish(batch)]
    answers_c = {k: [(a.worker_id, dict(a.answers)) for a in v] for k, v in drain(other_seed, ids_c).items()}
    assert answers_c != answers_a


def test_worker_mix_is_realistic(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=1, ambiguous_fraction=0), tmp_path / "s.sqlite")
    hit_ids = [h.hit_id for h in crowd.publish(big_batch(hits=300))]
    by_worker: dict[str, list[bool]] = {}
    for assignments in drain(crowd, hit_ids).values():
        for assignment in assignments:
            for key, answer in assignment.answers.items():
                number = int(key.split("-")[0]) * 10 + int(key.split("-")[1])
                by_worker.setdefault(assignment.worker_id, []).append((answer == YES) == (number % 2 == 0))
    kinds = dict(zip((crowd.worker_id(i) for i in range(crowd.mix.workers)), crowd.kinds, strict=True))
    accuracy = {worker: float(np.mean(answers)) for worker, answers in by_worker.items() if len(answers) >= 100}
    honest = [acc for worker, acc in accuracy.items() if kinds[worker] == "honest"]
    assert 0.92 < np.mean(honest) < 0.99, np.mean(honest)
    assert max(honest) - min(honest) > 0.03  # per-worker accuracies differ
    assert all(0.35 < acc < 0.65 for w, acc in accuracy.items() if kinds[w] in {"random", "constant"})
    assert all(acc < 0.2 for w, acc in accuracy.items() if kinds[w] == "adversary")
    assert Counter(kinds.values())["honest"] == round(0.82 * 60)


def test_ambiguous_images_split_good_workers(tmp_path: Path) -> None:
    mix = CrowdMix(
        seed=2,
        honest=1,
        random_spammers=0,
        constant_spammers=0,
        adversaries=0,
        ambiguous_fraction=0.2,
        abandon_rate=0,
        return_rate=0,
        expire_rate=0,
    )
    crowd = SimulatedCrowd(truth_even, mix, tmp_path / "s.sqlite")
    hit_ids = [h.hit_id for h in crowd.publish(big_batch(hits=100, assignments=9))]
    votes: dict[str, list[str]] = {}
    for assignments in drain(crowd, hit_ids).values():
        for assignment in assignments:
            for key, answer in assignment.answers.items():
                votes.setdefault(key, []).append(answer)
    disagreement = {key: min(v.count(YES), v.count(NO)) / len(v) for key, v in votes.items()}
    contested = sum(share >= 2 / 9 for share in disagreement.values()) / len(disagreement)
    assert 0.12 < contested < 0.35, contested


def test_abandoned_returned_and_expired_work(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=4, expire_rate=0.1), tmp_path / "s.sqlite")
    hit_ids = [h.hit_id for h in crowd.publish(big_batch(hits=200, assignments=3))]
    assignments = drain(crowd, hit_ids)
    statuses = crowd.hit_status(hit_ids)
    expired = [s for s in statuses if s.state == HitState.EXPIRED]
    assert 8 <= len(expired) <= 35
    assert all(len(assignments[s.hit_id]) < 3 for s in expired)
    abandoned, returned = crowd._db.execute("SELECT SUM(abandoned), SUM(returned) FROM hits").fetchone()
    assert abandoned > 0 and returned > 0


def test_latency_makes_work_arrive_over_several_polls(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=5, expire_rate=0), tmp_path / "s.sqlite")
    hit_ids = [h.hit_id for h in crowd.publish(big_batch(hits=50, assignments=3))]
    seen = []
    for _ in range(30):
        seen.append(sum(s.submitted for s in crowd.hit_status(hit_ids)))
    assert seen[0] < 150 and seen[-1] == 150
    assert len(set(seen)) > 2


def test_state_survives_a_new_instance(tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite"
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=6), state)
    published = crowd.publish(big_batch(hits=5))
    crowd.block_worker("SIMW00001", "spam")
    crowd.close()
    again = SimulatedCrowd(truth_even, CrowdMix(seed=6), state)
    assert again.publish(big_batch(hits=5)) == published
    assert again.is_blocked("SIMW00001")


def test_blocked_workers_get_no_new_hits(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=6, workers=10, expire_rate=0), tmp_path / "s.sqlite")
    for index in range(5):
        crowd.block_worker(crowd.worker_id(index), "spam")
    hit_ids = [h.hit_id for h in crowd.publish(big_batch(hits=20, assignments=3))]
    workers = {a.worker_id for v in drain(crowd, hit_ids).values() for a in v}
    assert workers and workers.isdisjoint(crowd.worker_id(i) for i in range(5))


def test_insufficient_balance_publishes_nothing(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(seed=1, balance=Decimal("0.5")), tmp_path / "s.sqlite")
    with pytest.raises(CrowdError, match="insufficient funds"):
        crowd.publish(big_batch(hits=10))
    assert crowd._db.execute("SELECT COUNT(*) FROM hits").fetchone()[0] == 0
    assert crowd.balance() == Decimal("0.5")


def test_fees_follow_mturk(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(truth_even, CrowdMix(), tmp_path / "s.sqlite")
    small = crowd.estimate_cost(big_batch(hits=2, assignments=3))
    assert small.rewards == Decimal("0.06") and small.fees == Decimal("0.06")  # the $0.01 minimum fee
    batch = HitBatch("b", "c", "q", big_batch(hits=2).hits, 10, Decimal("1.00"))
    assert crowd.estimate_cost(batch).fees == Decimal("8.00")  # 20% + 20% for 10+ assignments


def test_settings_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(CrowdError, match="crowd.settings.truth_file"):
        SimulatedCrowd.from_settings({}, tmp_path)
    with pytest.raises(CrowdError, match="crowd.settings.workers"):
        SimulatedCrowd.from_settings({"workers": 1, "truth_file": "x.csv"}, tmp_path)
    (tmp_path / "truth.csv").write_text("uri,category,label\na.png,cat,maybe\n")
    with pytest.raises(CrowdError, match=r"truth.csv:2: label 'maybe' is not one of 1/0/yes/no"):
        SimulatedCrowd.from_settings({"truth_file": "truth.csv"}, tmp_path)


def test_relative_project_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "truth.csv").write_text("uri,category,label\na.png,cat,1\n")
    monkeypatch.chdir(tmp_path)
    crowd = SimulatedCrowd.from_settings({"truth_file": "truth.csv"}, Path("p"))
    crowd.block_worker("SIMW00000", "test")
    assert (tmp_path / "p" / "mock-crowd.sqlite").is_file()
