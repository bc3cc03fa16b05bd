"""What every step works with: the context, the round and the job a step works on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from lsun_crowd.config import Config
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.progress import Progress as Progress  # re-exported: steps import it from here
from lsun_crowd.retrying import RetryPolicy, with_retries
from lsun_crowd.schema import Category, Job, JobState, Round, RoundState
from lsun_crowd.stages import Stages
from lsun_crowd.store import Store

log = logging.getLogger("lsun_crowd")

# The round states, as the steps have always named them.
SAMPLED, PUBLISHING, PUBLISHED, COLLECTED, REVIEWED, LABELED, DONE, STOPPED = (
    RoundState.SAMPLED,
    RoundState.PUBLISHING,
    RoundState.PUBLISHED,
    RoundState.COLLECTED,
    RoundState.REVIEWED,
    RoundState.LABELED,
    RoundState.DONE,
    RoundState.STOPPED,
)

# While a round's crowd work runs, the round shows its current job's state.
ROUND_STATE_OF_JOB: dict[JobState, RoundState] = {
    JobState.PENDING: RoundState.SAMPLED,
    JobState.STOPPED: RoundState.STOPPED,
    JobState.PUBLISHING: RoundState.PUBLISHING,
    JobState.PUBLISHED: RoundState.PUBLISHED,
    JobState.COLLECTED: RoundState.COLLECTED,
    JobState.REVIEWED: RoundState.REVIEWED,
}


@dataclass
class Context:
    config: Config
    store: Store
    crowd: CrowdBackend
    progress: Progress
    embeddings: Callable[[], EmbeddingCache]  # built on first use: embedding the pool takes a while
    sleep: Callable[[float], None]
    stages: Stages = field(default_factory=Stages.off)  # wall time and memory per stage, when asked

    _key: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Every adapter's transient failures are retried under one policy (lsun_crowd.retrying).
        crowd = self.config.crowd
        policy = RetryPolicy(attempts=crowd.retry_attempts, seconds=crowd.retry_seconds)
        self.crowd = with_retries(self.crowd, policy, sleep=self.sleep)

    def project_key(self) -> str:
        """The project's name and identity (:meth:`lsun_crowd.store.Store.project_key`): what every
        new batch id and qualification test id starts with."""
        if self._key is None:
            self._key = self.store.project_key(self.config.project.name)
        return self._key


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


@dataclass(frozen=True)
class JobRef:
    """A job a step works on: its row as last read, with its category and round."""

    category: str
    category_id: int
    job: Job
    round_number: int | None  # None: a job outside any round

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def round_id(self) -> int | None:
        return self.job.round_id

    @property
    def batch_id(self) -> str:
        return self.job.batch_id

    @property
    def state(self) -> JobState:
        return JobState(self.job.state)

    def describe(self) -> str:
        where = f"round {self.round_number}" if self.round_number is not None else self.job.kind
        extra = f", follow-up {self.job.sequence}" if self.job.sequence else ""
        return f"{self.category}: {where}{extra}"


def set_state(session: Session, ref: RoundRef, state: RoundState, **values: object) -> RoundState:
    session.execute(update(Round).where(Round.id == ref.id).values(state=state, **values))
    return state


def job_refs(session: Session, *criteria: ColumnElement[bool]) -> list[JobRef]:
    """The jobs that meet ``criteria``, in the order they were made, with category and round."""
    rows = session.execute(
        select(Job, Category.name, Round.number)
        .join(Category, Category.id == Job.category_id)
        .outerjoin(Round, Round.id == Job.round_id)
        .where(*criteria)
        .order_by(Job.id)
    ).all()
    return [JobRef(name, job.category_id, job, number) for job, name, number in rows]


def set_job_state(session: Session, ref: JobRef, state: JobState, **values: object) -> JobState:
    """Move a job on, and its round with it (a round shows its current job's state)."""
    job_values = {key: value for key, value in values.items() if key != "round_notes"}
    session.execute(update(Job).where(Job.id == ref.id).values(state=state, **job_values))
    if ref.round_id is not None:
        round_values: dict[str, object] = {"state": ROUND_STATE_OF_JOB[state]}
        if "round_notes" in values:
            round_values["notes"] = values["round_notes"]
        session.execute(update(Round).where(Round.id == ref.round_id).values(**round_values))
    return state


class Stream(IntEnum):
    """Each random decision's own stream of the project's seed: one part of the seed sequence
    :func:`rng` (or a fold split) is built from, so that no two decisions share draws. The values
    are those the decisions always used: a project's draws do not change."""

    ROUND_SAMPLE = 1  # the images a round draws from the pool (rounds)
    HIT_ORDER = 2  # the order of a job's images among its HITs (publish.lay_out_job)
    QUALIFICATION = 3  # the gold questions of a category's qualification test (publish)
    AUDIT_STRATUM = 7  # an audit stratum's sample (audit.sample)
    AUDIT_ORDER = 11  # the order of an audit's images among its HITs, per wave (audit)
    REPAIR_FOLDS = 17  # the folds a repair pass cross-fits its scores on (repair)
    REPAIR_ORDER = 19  # the order of a repair stage's images among its HITs (repair)
    SPLIT_FOLDS = 23  # the folds a split's model is cross-fitted on (autolabel)
    CERTIFY_SAMPLE = 29  # a certification's sample of each side (certify)


def rng(seed: int, *parts: int) -> np.random.Generator:
    """A generator for one decision of one round, the same however often it is recreated: ``parts``
    name the round and the decision (one of them a :class:`Stream`)."""
    return np.random.default_rng([seed, *parts])


def model_seed(seed: int, category_id: int, number: int) -> int:
    """The seed of the heads a step trains (torch's generator takes one integer): the project's,
    the category's and the step's ``number`` (a round's; a repair's salt)."""
    return seed * 1_000_003 + category_id * 101 + number
