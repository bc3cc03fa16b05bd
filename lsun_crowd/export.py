"""Final labels out of the store: one record per (image, category), as JSONL or CSV, or one record
per image with every category (:mod:`lsun_crowd.multilabel`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lsun_crowd.config import GroupConfig
from lsun_crowd.ledger import CHUNK
from lsun_crowd.multilabel import (
    CONFLICT,
    LABEL_NAMES,
    NOT_YET_SAMPLED,
    UNLABELED,
    UNRESOLVED,
    ExportSummary,
    conflicted_items,
    export_multilabel,
)
from lsun_crowd.outputs import atomic_file
from lsun_crowd.schema import Category, Gold, Item, Label, LabelSource, Round, Vote
from lsun_crowd.store import Store

FIELDS = ("uri", "sha256", "category", "label", "source", "round", "confidence", "votes", "reason")

MULTILABEL = "multilabel"


def records(
    store: Store, groups: Sequence[GroupConfig] = (), summary: ExportSummary | None = None
) -> Iterator[dict[str, Any]]:
    """Every (image, category) record, categories by name and images by id, read in keyset chunks
    so that memory stays bounded whatever the pool's size. An image in conflict in a single-label
    group is held back: exported as unlabeled for the group's categories, with its reason, and
    counted in ``summary``. Every unlabeled record says why (:data:`CONFLICT`,
    :data:`UNRESOLVED`, :data:`NOT_YET_SAMPLED`)."""
    with store.session() as session:
        categories = session.execute(select(Category.id, Category.name).order_by(Category.name)).all()
    group_of = {name: group for group in groups for name in group.categories}
    for cat_id, category in categories:
        group = group_of.get(category)
        counting = group is not None and summary is not None and category == group.categories[0]
        after = -1
        while True:
            with store.session() as session:
                rows = session.execute(
                    select(
                        Item.id,
                        Item.uri,
                        Item.sha256,
                        Gold.answer,
                        Label.label,
                        Label.source,
                        Round.number,
                        Label.confidence,
                        Label.votes,
                    )
                    .outerjoin(Gold, (Gold.item_id == Item.id) & (Gold.category_id == cat_id))
                    .outerjoin(Label, (Label.item_id == Item.id) & (Label.category_id == cat_id))
                    .outerjoin(Round, Round.id == Label.round_id)
                    .where(Item.id > after)
                    .order_by(Item.id)
                    .limit(CHUNK)
                ).all()
            if not rows:
                break
            held: set[int] = set()
            if group is not None:
                with store.session() as session:
                    held = set(conflicted_items(session, group, after, through=rows[-1][0]))
                if counting and summary is not None:
                    summary.held_back[group.name] = summary.held_back.get(group.name, 0) + len(held)
            with store.session() as session:
                asked = voted_on(session, cat_id, after, through=rows[-1][0])
            after = rows[-1][0]
            for item_id, uri, sha256, gold, label, source, number, confidence, votes in rows:
                if item_id in held:
                    fields = _label_fields(None, None, None, None, None, 0) | {"reason": CONFLICT}
                else:
                    fields = _label_fields(gold, label, source, number, confidence, votes)
                    if fields["label"] == UNLABELED:
                        fields["reason"] = UNRESOLVED if item_id in asked else NOT_YET_SAMPLED
                yield {"uri": uri, "sha256": sha256, "category": category} | fields


def _label_fields(
    gold: int | None, label: int | None, source: str | None, number: int | None, confidence: float | None, votes: int
) -> dict[str, Any]:
    if gold is not None:
        return {
            "label": LABEL_NAMES[gold],
            "source": LabelSource.HUMAN.value,
            "round": 0,
            "confidence": 1.0,
            "votes": 0,
            "reason": None,
        }
    if label is not None:
        return {
            "label": LABEL_NAMES[label],
            # Gold and people both count as human in the export; the model is the model.
            "source": (LabelSource.MODEL if source == LabelSource.MODEL else LabelSource.HUMAN).value,
            "round": number,
            "confidence": round(float(confidence or 0.0), 6),
            "votes": votes,
            "reason": None,
        }
    return {"label": UNLABELED, "source": None, "round": None, "confidence": None, "votes": 0, "reason": None}


def voted_on(session: Session, category_id: int, after: int, through: int) -> set[int]:
    """Images with ids in ``(after, through]`` that people have voted on for the category (gold
    answers aside): one index range read of the votes."""
    return set(
        session.scalars(
            select(Vote.item_id)
            .where(
                Vote.item_id > after,
                Vote.item_id <= through,
                Vote.category_id == category_id,
                Vote.is_gold.is_(False),
            )
            .distinct()
        )
    )


def export(store: Store, out: Path, fmt: str = "jsonl", groups: Sequence[GroupConfig] = ()) -> int:
    """Write the labels; the number of records written."""
    return export_labels(store, out, fmt, groups).records


def export_labels(store: Store, out: Path, fmt: str = "jsonl", groups: Sequence[GroupConfig] = ()) -> ExportSummary:
    """Write the labels as ``fmt``: ``jsonl`` or ``csv`` (a record per image and category), or
    ``multilabel`` (a record per image, CSV where ``out`` ends in ``.csv``, JSONL otherwise).
    Images in conflict in a group are held back, and the summary counts them."""
    if fmt == MULTILABEL:
        return export_multilabel(store, out, groups)
    if fmt not in {"jsonl", "csv"}:
        raise ValueError(f"--format must be jsonl, csv or {MULTILABEL}, not {fmt!r}")
    summary = ExportSummary(held_back={group.name: 0 for group in groups})
    count = 0
    with atomic_file(out, newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for record in records(store, groups, summary):
            if writer is not None:
                writer.writerow(record)
            else:
                handle.write(json.dumps(record) + "\n")
            count += 1
    summary.records = count
    return summary
