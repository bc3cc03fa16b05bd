"""Batch ids, label origins and stop reasons are stored, and batch ids are the crowd platform's
idempotency keys: their formats may not change under a project that is running (a changed batch id
would publish a job's HITs again)."""

from __future__ import annotations

import sqlite3

import numpy as np

from lsun_crowd.context import Stream, model_seed, rng
from lsun_crowd.ids import (
    OriginKind,
    audit_batch,
    certify_origin,
    conflict_batch,
    conflict_origin,
    of_kind,
    repair_batch,
    repair_origin,
    repair_pass_batches,
    round_batch,
    round_origin,
)
from lsun_crowd.publish import Shortfall, shortfall_of


def test_batch_ids_keep_the_formats_projects_already_published_under() -> None:
    assert round_batch("p1", "kitchen", 3) == "p1:kitchen:r3"
    assert round_batch("p1", "kitchen", 3, follow_up=2) == "p1:kitchen:r3:f2"
    assert audit_batch("p1", "kitchen", 400, 7) == "p1:kitchen:audit:n400:s7"
    assert audit_batch("p1", "kitchen", 400, 7, wave=1) == "p1:kitchen:audit:n400:s7:f1"
    assert repair_batch("p1", "kitchen", 5, 0) == "p1:kitchen:repair:p5:s0"
    assert conflict_batch("p1", "rooms", 2) == "p1:conflicts:rooms:j2"


def test_label_origins_keep_their_formats_and_match_by_kind() -> None:
    origins = [
        round_origin(12, "human"),
        round_origin(12, "final"),
        certify_origin(14, "sample"),
        certify_origin("r14", "left"),
        certify_origin(14),
        conflict_origin(9),
        repair_origin(21),
    ]
    assert origins == [
        "round:12:human",
        "round:12:final",
        "certify:14:sample",
        "certify:r14:left",
        "certify:14",
        "conflict:9",
        "repair:21",
    ]
    # The patterns the readers match with, as SQL evaluates them.
    with sqlite3.connect(":memory:") as connection:
        for kind in OriginKind:
            found = [
                origin
                for origin in origins
                if connection.execute("SELECT ? LIKE ?", (origin, of_kind(kind))).fetchone()[0]
            ]
            assert found and all(origin.startswith(f"{kind}:") for origin in found)
        passes = [repair_batch("p1", "kitchen", 5, stage) for stage in range(3)] + [
            repair_batch("p1", "kitchen", 50, 0)
        ]
        matched = [
            batch
            for batch in passes
            if connection.execute("SELECT ? LIKE ?", (batch, repair_pass_batches(5))).fetchone()[0]
        ]
        assert matched == passes[:3]


def test_random_streams_draw_what_their_old_tags_drew() -> None:
    assert [int(stream) for stream in Stream] == [1, 2, 3, 7, 11, 17, 19, 23, 29]
    assert len(set(Stream)) == len(Stream)  # no two decisions share a stream
    drawn = rng(5, 3, 7, Stream.CERTIFY_SAMPLE, 1).random(4)
    assert np.array_equal(drawn, np.random.default_rng([5, 3, 7, 29, 1]).random(4))
    assert model_seed(5, 3, 7) == 5 * 1_000_003 + 3 * 101 + 7


def test_a_stopped_round_s_notes_name_its_shortfall() -> None:
    assert shortfall_of("budget: round 3 would cost 5.40, 1.20 of 100 left") == Shortfall.BUDGET
    assert shortfall_of("balance: round 3 would cost 5.40, the account holds 2.00") == Shortfall.BALANCE
    # Notes that name none (a round stopped before its notes said why) read as the budget.
    assert shortfall_of(None) == Shortfall.BUDGET
    assert shortfall_of("") == Shortfall.BUDGET
    assert shortfall_of("balanced: something else") == Shortfall.BUDGET
