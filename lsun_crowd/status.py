"""Where each category stands: rounds, resolved and unlabeled images, votes, money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select

from lsun_crowd import ledger
from lsun_crowd.schema import Category, Gold, Item, LabelCount, LabelSource, Round, Vote
from lsun_crowd.store import Store


@dataclass(frozen=True)
class CategoryStatus:
    category: str
    rounds: int
    state: str
    positive: int
    negative: int
    unlabeled: int
    human_labeled: int
    votes: int
    spent: Decimal
    votes_saved: int = 0  # against fixed redundancy at the cap, over the labeled rounds


def category_status(store: Store, categories: list[str]) -> list[CategoryStatus]:
    with store.session() as session:
        known = dict(session.execute(select(Category.name, Category.id)).all())
        pool = int(session.scalar(select(func.count(Item.id))) or 0)
        money = ledger.spending(session)
        result = []
        for name in sorted(set(categories) | set(known)):
            cat_id = known.get(name)
            if cat_id is None:
                result.append(CategoryStatus(name, 0, "not started", 0, 0, pool, 0, 0, Decimal(0), 0))
                continue
            latest = session.execute(
                select(Round.number, Round.state)
                .where(Round.category_id == cat_id)
                .order_by(Round.number.desc())
                .limit(1)
            ).first()
            # The counts the ledger keeps beside every label write: a few rows, whatever the pool.
            counts: dict[int, int] = {}
            human = 0
            for label, source, count in session.execute(
                select(LabelCount.label, LabelCount.source, LabelCount.count).where(LabelCount.category_id == cat_id)
            ):
                counts[label] = counts.get(label, 0) + count
                human += count if source == LabelSource.HUMAN else 0
            gold = dict(
                session.execute(
                    select(Gold.answer, func.count()).where(Gold.category_id == cat_id).group_by(Gold.answer)
                ).all()
            )
            votes = session.scalar(select(func.count(Vote.id)).where(Vote.category_id == cat_id))
            spent = money.category(cat_id)  # every job of the category: rounds, audits, repairs
            asked, fixed = session.execute(
                select(
                    func.coalesce(func.sum(Round.votes_requested), 0), func.coalesce(func.sum(Round.votes_fixed), 0)
                ).where(Round.category_id == cat_id)
            ).one()
            positive = counts.get(1, 0) + gold.get(1, 0)
            negative = counts.get(0, 0) + gold.get(0, 0)
            result.append(
                CategoryStatus(
                    name,
                    latest[0] if latest else 0,
                    latest[1] if latest else "not started",
                    positive,
                    negative,
                    pool - positive - negative,
                    int(human or 0) + sum(gold.values()),
                    int(votes or 0),
                    Decimal(spent or 0),
                    int(fixed or 0) - int(asked or 0),
                )
            )
    return result


def without_gold(store: Store, categories: list[str]) -> list[str]:
    """The categories with no gold answer: their HITs carry no check images."""
    with store.session() as session:
        having = set(
            session.scalars(select(Category.name).join(Gold, Gold.category_id == Category.id).group_by(Category.name))
        )
    return [name for name in categories if name not in having]


def gold_warning(categories: list[str]) -> str:
    """What ``run`` and ``status`` say, once, of categories without gold."""
    return (
        f"no gold answers for {', '.join(categories)}: their HITs carry no check images, so careless "
        "workers are never measured, blocked or rejected, and the report has no worker plot. Add a few "
        "dozen known answers of each class with `lsun-crowd ingest --gold gold.csv IMAGES` (columns "
        "uri,category,label)"
    )
