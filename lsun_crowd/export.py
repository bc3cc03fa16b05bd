"""Final labels out of the store: one record per (image, category), as JSONL or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lsun_crowd.schema import Category, Gold, Item, Label, Round
from lsun_crowd.store import Store

FIELDS = ("uri", "sha256", "category", "label", "source", "round", "confidence", "votes")
LABEL_NAMES = {1: "positive", 0: "negative"}


def records(store: Store) -> Iterator[dict[str, Any]]:
    with store.session() as session:
        categories = session.execute(select(Category.id, Category.name).order_by(Category.name)).all()
        items = session.execute(select(Item.id, Item.uri, Item.sha256).order_by(Item.id)).all()
        labels = {
            (item, cat): (label, source, number, confidence, votes)
            for item, cat, label, source, number, confidence, votes in session.execute(
                select(
                    Label.item_id,
                    Label.category_id,
                    Label.label,
                    Label.source,
                    Round.number,
                    Label.confidence,
                    Label.votes,
                ).outerjoin(Round, Round.id == Label.round_id)
            )
        }
        gold = {
            (item, cat): answer
            for item, cat, answer in session.execute(select(Gold.item_id, Gold.category_id, Gold.answer))
        }
    for cat_id, category in categories:
        for item_id, uri, sha256 in items:
            record: dict[str, Any] = {"uri": uri, "sha256": sha256, "category": category}
            if (item_id, cat_id) in gold:
                record |= {
                    "label": LABEL_NAMES[gold[(item_id, cat_id)]],
                    "source": "human",
                    "round": 0,
                    "confidence": 1.0,
                    "votes": 0,
                }
            elif (item_id, cat_id) in labels:
                label, source, number, confidence, votes = labels[(item_id, cat_id)]
                record |= {
                    "label": LABEL_NAMES[label],
                    "source": "model" if source == "model" else "human",
                    "round": number,
                    "confidence": round(confidence, 6),
                    "votes": votes,
                }
            else:
                record |= {"label": "unlabeled", "source": None, "round": None, "confidence": None, "votes": 0}
            yield record


def export(store: Store, out: Path, fmt: str = "jsonl") -> int:
    if fmt not in {"jsonl", "csv"}:
        raise ValueError(f"--format must be jsonl or csv, not {fmt!r}")
    count = 0
    temporary = out.with_name(out.name + ".partial")
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for record in records(store):
            if writer is not None:
                writer.writerow(record)
            else:
                handle.write(json.dumps(record) + "\n")
            count += 1
    temporary.replace(out)
    return count
