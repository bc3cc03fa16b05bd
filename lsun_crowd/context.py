"""What every step of a round works with, and the round states the steps move through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lsun_crowd.config import Config
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.progress import Progress as Progress  # re-exported: steps import it from here
from lsun_crowd.schema import Gold, Item, Label, Round, RoundItem
from lsun_crowd.store import Store

log = logging.getLogger("lsun_crowd")

# Round states, in order. A round "stopped" for money resumes at the money check.
SAMPLED, PUBLISHING, PUBLISHED, COLLECTED, REVIEWED, LABELED, DONE = (
    "sampled",
    "publishing",
    "published",
    "collected",
    "reviewed",
    "labeled",
    "done",
)
STOPPED = "stopped"


@dataclass
class Context:
    config: Config
    store: Store
    crowd: CrowdBackend
    progress: Progress
    embeddings: Callable[[], EmbeddingCache]  # built on first use: embedding the pool takes a while
    sleep: Callable[[float], None]


@dataclass(frozen=True)
class RoundRef:
    """The round a step works on, with its category."""

    category: str
    category_id: int
    round: Round

    @property
    def id(self) -> int:
        return self.round.id

    @property
    def number(self) -> int:
        return self.round.number

    def describe(self) -> str:
        return f"{self.category}: round {self.number}"


def set_state(session: Session, ref: RoundRef, state: str, **values: object) -> str:
    session.execute(update(Round).where(Round.id == ref.id).values(state=state, **values))
    return state


def rng(seed: int, *parts: int) -> np.random.Generator:
    """A generator for one decision of one round, the same however often it is recreated."""
    return np.random.default_rng([seed, *parts])


def pool_ids(session: Session, category_id: int) -> list[int]:
    """Images with no label for the category and not waiting in an unfinished round."""
    labeled = select(Label.item_id).where(Label.category_id == category_id)
    gold = select(Gold.item_id).where(Gold.category_id == category_id)
    waiting = (
        select(RoundItem.item_id)
        .join(Round, Round.id == RoundItem.round_id)
        .where(Round.category_id == category_id, Round.state.notin_([DONE, STOPPED]))
    )
    query = select(Item.id).where(
        Item.problem.is_(None), Item.id.notin_(labeled), Item.id.notin_(gold), Item.id.notin_(waiting)
    )
    return list(session.scalars(query.order_by(Item.id)))
