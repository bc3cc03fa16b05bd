"""What a category's auto-labels are guaranteed to meet, from the tests its rounds recorded.

Every round's split tested its thresholds at a share of each side's error budget
(:mod:`lsun_crowd.guarantee`); a certified side's auto-labels reach the side's target, and together
all of them do with probability at least one minus the budget the rounds spent. Precision holds
for each round's auto-positives, so for their union; NPV likewise; each round's auto-negatives
discard at most its recall slack of the positives left in the pool, so all of them together at
most the slack the rounds used. All of it is relative to the crowd's consensus labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from lsun_crowd.schema import Category, GuaranteeSide, LabelCount, LabelSource, Round, RoundTest


@dataclass(frozen=True)
class Certificate:
    category: str
    auto_positive: int  # current labels the model gave, positive
    auto_negative: int
    precision: float | None  # the target every certified positive side met (None: none certified)
    npv: float | None
    recall_kept: float | None  # at least this share of the positives survived the auto-negatives
    budget_spent: float  # probability the statement fails, at most
    # Where a side has no auto-labels, the latest round's word on why: what certifying it would
    # need, or why no model split the pool (None: no round said).
    why: str | None = None

    @property
    def confidence(self) -> float:
        return 1 - self.budget_spent

    def describe(self) -> str:
        parts = []
        if self.auto_positive and self.precision is not None:
            parts.append(f"{self.auto_positive:,} auto-positive at precision >= {self.precision:g}")
        if self.auto_negative and self.npv is not None:
            recall = f", recall kept >= {self.recall_kept:.3f}" if self.recall_kept is not None else ""
            parts.append(f"{self.auto_negative:,} auto-negative at NPV >= {self.npv:g}{recall}")
        why = f" ({self.why})" if self.why and not (self.auto_positive and self.auto_negative) else ""
        if not parts:
            return f"{self.category}: no auto-labels, every label is people's{why}"
        return f"{self.category}: " + "; ".join(parts) + f", with probability >= {self.confidence:.3f}{why}"


def certificates(session: Session, categories: list[str]) -> list[Certificate]:
    """One certificate per category that exists, in the order given."""
    known = dict(session.execute(select(Category.name, Category.id).where(Category.name.in_(categories))).all())
    result = []
    for name in categories:
        if name in known:
            result.append(_certificate(session, name, known[name]))
    return result


def _certificate(session: Session, name: str, category_id: int) -> Certificate:
    auto = dict(
        session.execute(
            select(LabelCount.label, LabelCount.count).where(
                LabelCount.category_id == category_id, LabelCount.source == LabelSource.MODEL
            )
        ).all()
    )
    tests = session.execute(
        select(RoundTest.side, RoundTest.threshold, RoundTest.target, RoundTest.delta, RoundTest.recall_slack)
        .join(Round, Round.id == RoundTest.round_id)
        .where(Round.category_id == category_id)
    ).all()
    spent = sum(delta for _, _, _, delta, _ in tests)
    certified = [(side, target, slack) for side, threshold, target, _, slack in tests if threshold is not None]
    positive_targets = [target for side, target, _ in certified if side == GuaranteeSide.POSITIVE]
    negative = [(target, slack) for side, target, slack in certified if side == GuaranteeSide.NEGATIVE]
    slacks = [slack for _, slack in negative]
    return Certificate(
        name,
        int(auto.get(1, 0)),
        int(auto.get(0, 0)),
        min(positive_targets) if positive_targets else None,
        min(target for target, _ in negative) if negative else None,
        (1 - sum(slack or 0 for slack in slacks)) if negative and all(s is not None for s in slacks) else None,
        float(spent),
        latest_word(session, category_id),
    )


# What a round's notes say when the model labels less than the whole pool (lsun_crowd.autolabel,
# lsun_crowd.certify): the planner never leaves a side to people without saying so.
WHY_MARKERS = ("the model leaves to people: ", "no split: ", "certified ")
LOOK_BACK = 20  # rounds read, newest first


def latest_word(session: Session, category_id: int) -> str | None:
    """The newest round note (of the last :data:`LOOK_BACK`) that says why the model left labels
    to people, from its marker on, with the round's number."""
    rows = session.execute(
        select(Round.number, Round.notes)
        .where(Round.category_id == category_id, Round.notes.is_not(None))
        .order_by(Round.number.desc())
        .limit(LOOK_BACK)
    ).all()
    for number, notes in rows:
        for marker in WHY_MARKERS:
            if marker in (notes or ""):
                return f"round {number}: " + notes[notes.index(marker) :]
    return None
