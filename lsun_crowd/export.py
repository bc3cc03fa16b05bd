"""Final labels out of the store: one record per (image, category), as JSONL or CSV, or one record
per image with every category (:mod:`lsun_crowd.multilabel`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lsun_crowd.config import GroupConfig
from lsun_crowd.ledger import CHUNK
from lsun_crowd.multilabel import ExportSummary, conflicted_items, export_multilabel
from lsun_crowd.outputs import atomic_file
from lsun_crowd.schema import Category, Gold, Item, Label, LabelSource, Round
from lsun_crowd.store import Store

FIELDS = ("uri", "sha256", "category", "label", "source", "round", "confidence", "votes")
LABEL_NAMES = {1: "positive", 0: "negative"}
MULTILABEL = "multilabel"


def records(
    store: Store, groups: Sequence[GroupConfig] = (), summary: ExportSummary | None = None
) -> Iterator[dict[str, Any]]:
    """Every (image, category) record, categories by name and images by id, read in keyset chunks
    so that memory stays bounded whatever the pool's size. The records of an image in conflict in
    a single-label group are held back for the group's categories, and counted in ``summary``."""
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
            after = rows[-1][0]
            for item_id, uri, sha256, gold, label, source, number, confidence, votes in rows:
                if item_id in held:
                    continue
                yield {"uri": uri, "sha256": sha256, "category": category} | _label_fields(
                    gold, label, source, number, confidence, votes
                )


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
        }
    if label is not None:
        return {
            "label": LABEL_NAMES[label],
            # Gold and people both count as human in the export; the model is the model.
            "source": (LabelSource.MODEL if source == LabelSource.MODEL else LabelSource.HUMAN).value,
            "round": number,
            "confidence": round(float(confidence or 0.0), 6),
            "votes": votes,
        }
    return {"label": "unlabeled", "source": None, "round": None, "confidence": None, "votes": 0}


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
