"""A pool larger than SQLite's parameter limit (250,000 bound variables here) goes through a round,
its split, ``status`` and ``export``: nothing binds a list that grows with the pool."""

from __future__ import annotations

import json
from pathlib import Path

from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from sqlalchemy import func, select

from lsun_crowd import ledger
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.export import export
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import Label, LabelCount, LabelEvent, Round, RoundKind
from lsun_crowd.status import category_status
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project

ITEMS = 300_000


def test_a_300k_pool_goes_through_a_round_status_and_export(tmp_path: Path) -> None:
    pool = SyntheticPool(items=ITEMS, categories=("thing",), dim=8, positive_rate=0.2, separation=4.0, seed=3)
    write_project(
        tmp_path,
        {
            "project": {"name": "big", "seed": 3, "categories": ["thing"]},
            "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
            # No repair pass at the round limit.
            "cascade": {"sample_per_round": 2500, "target_npv": 0.99, "budget": 100},
            "repair": {"enabled": False},
        },
    )
    project = Project.open(tmp_path)
    cache = EmbeddingCache(tmp_path / "cache" / "synthetic", pool.dim)
    build(pool, project.store, cache)
    crowd = SimulatedCrowd(pool.truth(), CrowdMix(seed=3, ambiguous_fraction=0.002), tmp_path / "mock-crowd.sqlite")
    outcomes = Cascade(project.config, project.store, crowd, lambda: cache).run(max_rounds=1)
    assert [(outcome.reason, outcome.rounds) for outcome in outcomes] == [("round limit", 1)]

    with project.store.session() as session:
        round_ = session.scalars(select(Round).where(Round.kind == RoundKind.SPLIT)).one()
        assert round_.state == "done" and round_.high_threshold is not None
        by_source = dict(session.execute(select(Label.source, func.count()).group_by(Label.source)).all())
        certification = session.scalars(select(Round).where(Round.kind == RoundKind.CERTIFY)).one()
        events = dict(
            session.execute(
                select(LabelEvent.source, func.count()).where(LabelEvent.label >= 0).group_by(LabelEvent.source)
            ).all()
        )
        withdrawn = session.scalar(select(func.count()).where(LabelEvent.label == ledger.WITHDRAWN))
    # One split labels a good part of the pool, and its certification keeps most of it.
    assert by_source["model"] > 100_000
    assert certification.state == "done" and "certified" in certification.notes
    # Every label given has its event; the model's that certification took back have one more each.
    assert events["human"] == by_source["human"]
    assert events["model"] - withdrawn == by_source["model"]
    with project.store.session() as session:
        counts = dict(
            session.execute(select(LabelCount.source, func.sum(LabelCount.count)).group_by(LabelCount.source)).all()
        )
    assert {source: int(count) for source, count in counts.items() if count} == by_source

    (status,) = category_status(project.store, ["thing"])
    assert status.positive + status.negative + status.unlabeled == ITEMS
    assert status.positive + status.negative == sum(by_source.values()) + 20  # gold counts as labeled

    out = tmp_path / "export.jsonl"
    assert export(project.store, out) == ITEMS
    truth = pool.truth()
    right = wrong = 0
    with out.open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["source"] == "model" and record["label"] == "positive":
                if truth(record["uri"], "thing"):
                    right += 1
                else:
                    wrong += 1
    precision = right / max(right + wrong, 1)
    assert precision >= 0.95, precision
    # The model's positives are nearly all of the positives (people's: their rounds and the sample
    # certification checked).
    assert 0.95 * status.positive <= right + wrong < status.positive
    project.close()
