"""Every category of an image at once: single-label groups, their conflicts, and the multi-label
export.

A project may declare groups of mutually exclusive categories (``[[project.groups]]``). An image
positive for two categories of a group, or, where the group is exhaustive, negative for every one
of them once all are labeled, is a *conflict*: it is held back from the export and goes back to
people (:mod:`lsun_crowd.conflicts`).

The export streams the pool in keyset pages of :data:`PAGE` images; each page reads its labels and
gold answers as two index range scans over ``(item_id, category_id)``, so memory holds one page
whatever the pool's size.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, union_all
from sqlalchemy.orm import Session

from lsun_crowd.config import GroupConfig
from lsun_crowd.outputs import atomic_file
from lsun_crowd.schema import Category, Gold, Item, Label, LabelSource, Round, Vote
from lsun_crowd.store import Store

PAGE = 2_000  # images per page of the export
LABEL_NAMES = {1: "positive", 0: "negative"}
UNLABELED = "unlabeled"
# Why an exported record is unlabeled (its ``reason``; labeled records have none).
CONFLICT = "conflict"  # labeled, but in conflict in a single-label group: `lsun-crowd conflicts` asks people
UNRESOLVED = "unresolved"  # people were asked and could not settle it (it stays in the pool)
NOT_YET_SAMPLED = "not yet sampled"  # in the pool, never asked
POSITIVE_SEPARATOR = ";"  # between category names in the CSV's ``positive`` column


@dataclass(frozen=True)
class CategoryLabel:
    """An image's final label for one category, as exported (gold answers count as human)."""

    label: int | None  # None: unlabeled
    source: str | None = None
    confidence: float | None = None
    round: int | None = None
    votes: int = 0
    reason: str | None = None  # why it is unlabeled: see lsun_crowd.export's CONFLICT and the others

    def as_record(self) -> dict[str, Any]:
        return {
            "label": LABEL_NAMES[self.label] if self.label is not None else UNLABELED,
            "source": self.source,
            "confidence": self.confidence,
            "round": self.round,
            "votes": self.votes,
            "reason": self.reason,
        }


def conflict(group: GroupConfig, labels: Mapping[str, int | None]) -> str | None:
    """What is wrong with an image's labels for ``group`` (category → 1, 0 or ``None``), or
    ``None`` when they are consistent: positive for two or more, or (an exhaustive group) negative
    for every category once all are labeled."""
    positive = [name for name in group.categories if labels.get(name) == 1]
    if len(positive) >= 2:
        return f"positive for {', '.join(positive)}"
    if group.exhaustive and not positive and all(labels.get(name) == 0 for name in group.categories):
        return f"negative for all {len(group.categories)} categories"
    return None


@dataclass
class ExportSummary:
    records: int = 0  # lines (or rows) written
    held_back: dict[str, int] = field(default_factory=dict)  # group → conflicted images exported unlabeled

    @property
    def held_back_total(self) -> int:
        return sum(self.held_back.values())

    def describe(self) -> str:
        if not self.held_back_total:
            return ""
        parts = ", ".join(f"{count} in {group}" for group, count in self.held_back.items() if count)
        return (
            f"{self.held_back_total} conflicted image(s) ({parts}) exported as unlabeled in their group, reason "
            f'"{CONFLICT}": `lsun-crowd conflicts` asks people'
        )


@dataclass(frozen=True)
class ImageLabels:
    item_id: int
    uri: str
    sha256: str
    labels: dict[str, CategoryLabel]  # every category, by name

    def positive(self) -> list[str]:
        return [name for name, label in self.labels.items() if label.label == 1]

    def conflicts(self, groups: Sequence[GroupConfig]) -> list[tuple[str, str]]:
        """(group, what is wrong) for each group the image conflicts in."""
        found = []
        for group in groups:
            problem = conflict(group, {name: self.labels[name].label for name in group.categories})
            if problem is not None:
                found.append((group.name, problem))
        return found


def category_names(session: Session) -> list[tuple[int, str]]:
    return [(int(cat_id), str(name)) for cat_id, name in session.execute(select(Category.id, Category.name))]


def iter_images(store: Store, page: int = PAGE) -> Iterator[ImageLabels]:
    """Every image with its label in every category (categories by name), in id order."""
    with store.session() as session:
        categories = sorted(category_names(session), key=lambda pair: pair[1])
    names = {cat_id: name for cat_id, name in categories}
    after = -1
    while True:
        with store.session() as session:
            items = session.execute(
                select(Item.id, Item.uri, Item.sha256).where(Item.id > after).order_by(Item.id).limit(page)
            ).all()
            if not items:
                return
            first, last = int(items[0][0]), int(items[-1][0])
            in_range = and_(Label.item_id >= first, Label.item_id <= last)
            labels = session.execute(
                select(
                    Label.item_id,
                    Label.category_id,
                    Label.label,
                    Label.source,
                    Label.confidence,
                    Round.number,
                    Label.votes,
                )
                .outerjoin(Round, Round.id == Label.round_id)
                .where(in_range)
            ).all()
            gold = session.execute(
                select(Gold.item_id, Gold.category_id, Gold.answer).where(Gold.item_id >= first, Gold.item_id <= last)
            ).all()
            asked = set(
                session.execute(
                    select(Vote.item_id, Vote.category_id)
                    .where(Vote.item_id >= first, Vote.item_id <= last, Vote.is_gold.is_(False))
                    .distinct()
                ).all()
            )
        found: dict[int, dict[str, CategoryLabel]] = {}
        for item, cat_id, label, source, confidence, number, votes in labels:
            # Gold and people both count as human in the export; the model is the model.
            shown = LabelSource.MODEL if source == LabelSource.MODEL else LabelSource.HUMAN
            found.setdefault(int(item), {})[names[cat_id]] = CategoryLabel(
                int(label), shown.value, round(float(confidence), 6), number, int(votes)
            )
        for item, cat_id, answer in gold:  # a known answer wins over any label
            found.setdefault(int(item), {})[names[cat_id]] = CategoryLabel(
                int(answer), LabelSource.HUMAN.value, 1.0, 0, 0
            )
        for item_id, uri, sha256 in items:
            known = found.get(int(item_id), {})
            labels_by_name = {
                name: known.get(name)
                or CategoryLabel(None, reason=UNRESOLVED if (item_id, cat_id) in asked else NOT_YET_SAMPLED)
                for cat_id, name in categories
            }
            yield ImageLabels(int(item_id), str(uri), str(sha256), labels_by_name)
        after = last


def export_multilabel(store: Store, out: Path, groups: Sequence[GroupConfig] = (), page: int = PAGE) -> ExportSummary:
    """One record per image: every category's label, source and confidence, and the positive
    categories. CSV where ``out`` ends in ``.csv`` (one column per category, then its source and
    confidence), JSONL otherwise. An image in conflict in a group is held back: unlabeled in the
    group's categories, with the reason, and counted."""
    summary = ExportSummary(held_back={group.name: 0 for group in groups})
    as_csv = out.suffix.lower() == ".csv"
    with atomic_file(out, newline="") as handle:
        write = _csv_writer(store, handle) if as_csv else _jsonl_writer(handle)
        for image in iter_images(store, page):
            for group, _ in image.conflicts(groups):  # held back: unlabeled, saying why, in the group
                summary.held_back[group] += 1
                held = next(config for config in groups if config.name == group)
                for name in held.categories:
                    image.labels[name] = CategoryLabel(None, reason=CONFLICT)
            write(image)
            summary.records += 1
    return summary


def _jsonl_writer(handle: TextIO) -> Any:
    def write(image: ImageLabels) -> None:
        record = {
            "uri": image.uri,
            "sha256": image.sha256,
            "positive": image.positive(),
            "labels": {name: label.as_record() for name, label in image.labels.items()},
        }
        handle.write(json.dumps(record) + "\n")

    return write


def _csv_writer(store: Store, handle: TextIO) -> Any:
    with store.session() as session:
        names = sorted(name for _, name in category_names(session))
    header = ["uri", "sha256", "positive", *names]
    header += [f"{name}:{part}" for name in names for part in ("source", "confidence")]
    writer = csv.writer(handle)
    writer.writerow(header)

    def write(image: ImageLabels) -> None:
        records = [image.labels[name].as_record() for name in names]
        row = [image.uri, image.sha256, POSITIVE_SEPARATOR.join(image.positive())]
        row += [record["label"] for record in records]
        for record in records:
            row += [record["source"] or "", "" if record["confidence"] is None else record["confidence"]]
        writer.writerow(row)

    return write


# -- counts for status and for the conflict jobs ----------------------------------------------------


def _answers(category_ids: Sequence[int] | None = None, after: int = -1, through: int | None = None) -> Select[Any]:
    """Every (image, category, 1/0) the store knows: current labels and gold answers together,
    for images after ``after`` and up to ``through`` (the bounds go inside each branch, so each is an
    index range scan)."""
    labels = select(Label.item_id.label("item_id"), Label.label.label("label")).where(Label.item_id > after)
    gold = select(Gold.item_id.label("item_id"), Gold.answer.label("label")).where(Gold.item_id > after)
    if through is not None:
        labels = labels.where(Label.item_id <= through)
        gold = gold.where(Gold.item_id <= through)
    if category_ids is not None:
        labels = labels.where(Label.category_id.in_(category_ids))
        gold = gold.where(Gold.category_id.in_(category_ids))
    answers = union_all(labels, gold).subquery("answers")
    return select(answers.c.item_id, answers.c.label)


def positive_in_several(session: Session) -> int:
    """Images positive in two or more categories: one query, grouped over ``(item_id, …)`` indexes."""
    answers = _answers().subquery()
    several = (
        select(answers.c.item_id)
        .where(answers.c.label == 1)
        .group_by(answers.c.item_id)
        .having(func.count() >= 2)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(several)) or 0)


def conflict_filter(size: int, exhaustive: bool, label: Any) -> ColumnElement[bool]:
    several = func.sum(label) >= 2
    if not exhaustive:
        return several
    return or_(several, and_(func.count() == size, func.sum(label) == 0))


def conflicted_items(
    session: Session, group: GroupConfig, after: int = -1, limit: int | None = None, through: int | None = None
) -> list[int]:
    """Ids of the images in conflict in ``group``, in id order (after ``after`` and up to
    ``through``, ``limit`` at a time)."""
    ids = [cat_id for cat_id, name in category_names(session) if name in set(group.categories)]
    if len(ids) < len(group.categories):
        return []  # a category not started has no labels, so no conflict yet
    answers = _answers(ids, after, through).subquery()
    query = (
        select(answers.c.item_id)
        .group_by(answers.c.item_id)
        .having(conflict_filter(len(ids), group.exhaustive, answers.c.label))
        .order_by(answers.c.item_id)
    )
    return [int(item) for item in session.scalars(query if limit is None else query.limit(limit))]


def conflict_count(session: Session, group: GroupConfig) -> int:
    ids = [cat_id for cat_id, name in category_names(session) if name in set(group.categories)]
    if len(ids) < len(group.categories):
        return 0
    answers = _answers(ids).subquery()
    found = (
        select(answers.c.item_id)
        .group_by(answers.c.item_id)
        .having(conflict_filter(len(ids), group.exhaustive, answers.c.label))
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(found)) or 0)


@dataclass(frozen=True)
class MultiLabelStatus:
    positive_in_several: int | None  # None: not counted (it reads every label of every category)
    conflicts: dict[str, int]  # group → images in conflict now


def multilabel_status(store: Store, groups: Sequence[GroupConfig], overlaps: bool = True) -> MultiLabelStatus:
    with store.session() as session:
        return MultiLabelStatus(
            positive_in_several(session) if overlaps else None,
            {group.name: conflict_count(session, group) for group in groups},
        )


__all__ = [
    "CategoryLabel",
    "ExportSummary",
    "ImageLabels",
    "MultiLabelStatus",
    "conflict",
    "conflict_count",
    "conflicted_items",
    "export_multilabel",
    "iter_images",
    "multilabel_status",
    "positive_in_several",
]
