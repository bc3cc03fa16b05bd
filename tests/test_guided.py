"""Guided draws (lsun_crowd.guided): where a category is too rare for a round's uniform draw to find
it, half of the sample is the pool's likeliest positives, and the uniform rest stays a uniform
draw that the model's calibration alone counts on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from sqlalchemy import select, update

from lsun_crowd.autolabel import draw_weights, training_set
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.guided import rarer_class, uniform_besides
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import Item, ItemRole, Round, RoundItem
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project

RARE = SyntheticPool(items=4_000, categories=("rare",), dim=8, positive_rate=0.01, separation=5.0, seed=3)


@given(st.integers(1, 300), st.data())
def test_a_uniform_draw_besides_taken_positions_never_meets_them(pool: int, data: st.DataObject) -> None:
    taken = np.array(sorted(data.draw(st.sets(st.integers(0, pool - 1), max_size=pool - 1))), dtype=np.int64)
    size = data.draw(st.integers(0, pool - len(taken)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    drawn = uniform_besides(np.random.default_rng(seed), pool, taken, size)
    assert len(drawn) == size == len(set(drawn.tolist()))
    assert not set(drawn.tolist()) & set(taken.tolist())
    assert drawn.min(initial=0) >= 0 and drawn.max(initial=0) < pool


def test_every_free_position_can_be_drawn() -> None:
    # All of them at once: the draw is a bijection onto the free positions.
    taken = np.array([0, 3, 4, 9], dtype=np.int64)
    drawn = uniform_besides(np.random.default_rng(0), 10, taken, 6)
    assert drawn.tolist() == [1, 2, 5, 6, 7, 8]


@pytest.fixture(scope="module")
def rare(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("guided")
    write_project(
        root,
        {
            "project": {"name": "guided", "seed": 3, "categories": ["rare"]},
            "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
            "cascade": {"budget": 1000},
        },
    )
    project = Project.open(root)
    cache = EmbeddingCache(root / "cache" / "synthetic", RARE.dim)
    build(RARE, project.store, cache)
    crowd = SimulatedCrowd(RARE.truth(), CrowdMix(seed=3), root / "mock-crowd.sqlite")
    Cascade(project.config, project.store, crowd, lambda: cache).run(max_rounds=2)
    return project


def _positives(project: Project, number: int, role: ItemRole) -> tuple[int, int]:
    truth = RARE.truth()
    with project.store.session() as session:
        uris = session.scalars(
            select(Item.uri)
            .join(RoundItem, RoundItem.item_id == Item.id)
            .join(Round, Round.id == RoundItem.round_id)
            .where(Round.number == number, RoundItem.role == role)
        ).all()
    return sum(truth(uri, "rare") for uri in uris), len(uris)


def test_the_second_round_asks_people_about_the_likeliest_positives(rare: Project) -> None:
    first, drawn = _positives(rare, 1, ItemRole.TRAIN)
    assert drawn == 400 and first < 20  # a uniform draw at 1%: too few for a model to split on
    assert _positives(rare, 1, ItemRole.CANDIDATE) == (0, 0)  # round 1 has nothing to rank by
    found, candidates = _positives(rare, 2, ItemRole.CANDIDATE)
    uniform, rest = _positives(rare, 2, ItemRole.TRAIN)
    assert candidates == rest == 200
    # The pool holds about 36 positives after round 1; a uniform 200 would find about 2.
    assert found >= 20 and found >= 5 * max(uniform, 1)


def test_candidates_are_no_draw_for_the_calibration(rare: Project) -> None:
    with rare.store.session() as session:
        second = session.scalar(select(Round.id).where(Round.number == 2))
        candidates = set(
            session.scalars(
                select(Item.sha256)
                .join(RoundItem, RoundItem.item_id == Item.id)
                .where(RoundItem.round_id == second, RoundItem.role == ItemRole.CANDIDATE)
            )
        )
        training, _ = training_set(session, 1)
        rounds = [round_id for _, _, _, round_id in training]
        labeled = [sha in candidates for sha, _, _, _ in training]
        weights = draw_weights(session, 1, 2, rounds, np.zeros((len(rounds), RARE.dim), dtype=np.float32), "cpu")
        pools = dict(session.execute(select(Round.id, Round.pool_size)).all())
    assert sum(labeled) > 150  # people settled most candidates
    assert all(round_id is None for round_id, candidate in zip(rounds, labeled, strict=True) if candidate)
    weights_of = dict(zip(rounds, weights.tolist(), strict=True))
    assert all(weight == 0 for weight, candidate in zip(weights.tolist(), labeled, strict=True) if candidate)
    # A round-2 uniform draw: one in (pool without the candidates) / 200, plus round 1's chance.
    first = min(pools)
    chance = 400 / pools[first] + 200 / (pools[second] - 200)
    assert weights_of[second] == pytest.approx(1 / chance)


class _Undo(Exception):
    """Rolls a test's change to the shared project back."""


def test_guidance_ends_once_a_split_labels_anything(rare: Project) -> None:
    # A pool the splits left small holds few of the class because it is small: no candidates there.
    with pytest.raises(_Undo), rare.store.session() as session:
        guided = rarer_class(session, 1, 3, 400, 20)
        assert guided is not None and guided.rarer == 1 and guided.expected < 20
        session.execute(update(Round).where(Round.number == 1).values(low_threshold=-9.0))
        assert rarer_class(session, 1, 3, 400, 20) is None
        raise _Undo
