"""The cascade: per category, rounds of sample → publish → collect → review → label → train → split.

Each step ends with one committed transaction that moves the round to its next state, and each
step can be repeated after a crash without effect on anything already stored: samples and HIT
layouts derive from the seed, HITs are published idempotently by batch id, votes are unique per
assignment and item, and platform calls (approve, block) are idempotent. So a run killed at any
point and started again ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lsun_crowd.aggregate import Votes, dawid_skene
from lsun_crowd.classifier import probability, train_head
from lsun_crowd.config import Config
from lsun_crowd.crowd import NO, YES, CrowdBackend, HitBatch, HitItem, HitSpec, HitState
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.quality import assess
from lsun_crowd.schema import (
    AssignmentRow,
    Gold,
    Hit,
    Item,
    Label,
    Round,
    RoundItem,
    Spend,
    Vote,
    Worker,
    utc_now,
)
from lsun_crowd.schema import HitItem as HitItemRow
from lsun_crowd.split import choose_thresholds
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

log = logging.getLogger(__name__)

# Round states, in order. "stopped" ends a category without finishing the round (budget).
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
ANSWER_VALUES = {YES: 1, NO: 0}
REJECTION_FEEDBACK = "Your answers on our check images were too often wrong, so this work was not accepted."


class Progress:
    """Where the cascade reports what it is doing; the CLI draws rich progress bars from it."""

    def message(self, text: str) -> None:
        log.info(text)

    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, task: str, amount: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        pass


@dataclass(frozen=True)
class CategoryOutcome:
    category: str
    rounds: int
    reason: str  # resolved | round limit | budget | balance


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


class Cascade:
    def __init__(
        self,
        project_dir: Path,
        config: Config,
        store: Store,
        crowd: CrowdBackend,
        embeddings: Callable[[], EmbeddingCache],
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.project_dir = project_dir
        self.config = config
        self.store = store
        self.crowd = crowd
        self._embeddings_factory = embeddings
        self._embeddings: EmbeddingCache | None = None
        self.progress = progress or Progress()
        self.sleep = sleep

    @property
    def embeddings(self) -> EmbeddingCache:
        if self._embeddings is None:
            self._embeddings = self._embeddings_factory()
        return self._embeddings

    # -- driving ------------------------------------------------------------------------------

    def run(self, categories: list[str] | None = None, max_rounds: int | None = None) -> list[CategoryOutcome]:
        names = categories or self.config.project.categories
        if not names:
            raise ValueError("no categories: list them in [project] categories of lsun-crowd.toml")
        return [self.run_category(name, max_rounds) for name in names]

    def run_category(self, category: str, max_rounds: int | None = None) -> CategoryOutcome:
        limit = max_rounds or self.config.cascade.max_rounds
        with self.store.session() as session:
            cat_id = category_id(session, category)
        while True:
            with self.store.session() as session:
                current = session.scalars(
                    select(Round).where(Round.category_id == cat_id).order_by(Round.number.desc()).limit(1)
                ).first()
            if current is not None and current.state == STOPPED:
                # Stopped for money last time: go on only if a raised budget or a top-up allows it.
                if self._check_money_and_stage(category, cat_id, current) == STOPPED:
                    return CategoryOutcome(category, current.number - 1, current.notes.split(":")[0])
                current.state = PUBLISHING
            if current is None or current.state == DONE:
                done = current.number if current else 0
                if self._pool_size(cat_id) == 0:
                    return CategoryOutcome(category, done, "resolved")
                if done >= limit:
                    return CategoryOutcome(category, done, "round limit")
                current = self._sample(category, cat_id, done + 1)
            self._advance(category, cat_id, current)

    def _advance(self, category: str, cat_id: int, round_: Round) -> None:
        steps = {
            SAMPLED: self._check_money_and_stage,
            PUBLISHING: self._publish,
            PUBLISHED: self._collect,
            COLLECTED: self._review,
            REVIEWED: self._label,
            LABELED: self._train_and_split,
        }
        state = round_.state
        while state in steps:
            state = steps[state](category, cat_id, round_)

    def _set_state(self, session: Session, round_: Round, state: str, **values: object) -> str:
        session.execute(update(Round).where(Round.id == round_.id).values(state=state, **values))
        return state

    # -- sample -------------------------------------------------------------------------------

    def _pool_ids(self, session: Session, cat_id: int) -> list[int]:
        """Images with no label for the category and not waiting in an unfinished round."""
        labeled = select(Label.item_id).where(Label.category_id == cat_id)
        gold = select(Gold.item_id).where(Gold.category_id == cat_id)
        waiting = (
            select(RoundItem.item_id)
            .join(Round, Round.id == RoundItem.round_id)
            .where(Round.category_id == cat_id, Round.state.notin_([DONE, STOPPED]))
        )
        query = select(Item.id).where(Item.id.notin_(labeled), Item.id.notin_(gold), Item.id.notin_(waiting))
        return list(session.scalars(query.order_by(Item.id)))

    def _pool_size(self, cat_id: int) -> int:
        with self.store.session() as session:
            return len(self._pool_ids(session, cat_id))

    def _sample(self, category: str, cat_id: int, number: int) -> Round:
        cascade = self.config.cascade
        with self.store.session() as session:
            pool = np.array(self._pool_ids(session, cat_id), dtype=np.int64)
            human_only = len(pool) <= cascade.finish_with_humans_below
            # Never more than half the pool: the other half is what the model is there to label.
            size = min(cascade.sample_per_round, len(pool) // 2)
            rng = _rng(self.config.project.seed, cat_id, number, 1)
            chosen = pool if human_only else rng.choice(pool, size=size, replace=False)
            chosen = np.sort(chosen)
            calibration = np.zeros(len(chosen), dtype=bool)
            if not human_only:
                count = round(len(chosen) * cascade.calibration_fraction)
                calibration[rng.choice(len(chosen), size=count, replace=False)] = True
            round_ = Round(category_id=cat_id, number=number, state=SAMPLED, human_only=bool(human_only))
            session.add(round_)
            session.flush()
            session.add_all(
                RoundItem(round_id=round_.id, item_id=int(item), role="calibration" if held else "train")
                for item, held in zip(chosen, calibration, strict=True)
            )
        kind = "the rest of the pool, all to humans" if human_only else f"{len(chosen)} of {len(pool)}"
        self.progress.message(f"{category}: round {number}: sampled {kind}")
        return round_

    # -- publish ------------------------------------------------------------------------------

    def _batch(self, category: str, cat_id: int, round_: Round) -> HitBatch:
        """The round's HITs, laid out the same way every time they are asked for."""
        crowd = self.config.crowd
        with self.store.session() as session:
            hits = session.scalars(select(Hit).where(Hit.round_id == round_.id).order_by(Hit.hit_key)).all()
            if not hits:
                self._lay_out_hits(session, category, cat_id, round_)
                hits = session.scalars(select(Hit).where(Hit.round_id == round_.id).order_by(Hit.hit_key)).all()
            rows = session.execute(
                select(HitItemRow.hit_id, HitItemRow.item_id, Item.uri)
                .join(Item, Item.id == HitItemRow.item_id)
                .where(HitItemRow.hit_id.in_([hit.id for hit in hits]))
                .order_by(HitItemRow.hit_id, HitItemRow.position)
            ).all()
        items_by_hit: dict[int, list[HitItem]] = {}
        for hit_id, item_id, uri in rows:
            items_by_hit.setdefault(hit_id, []).append(HitItem(str(item_id), uri))
        specs = tuple(HitSpec(hit.hit_key, tuple(items_by_hit[hit.id])) for hit in hits)
        return HitBatch(
            batch_id=self._batch_id(category, round_.number),
            category=category,
            question=f"Does the image show: {category}?",
            hits=specs,
            assignments_per_hit=crowd.votes_per_item,
            reward_per_assignment=crowd.reward_per_assignment,
            lifetime_seconds=crowd.hit_lifetime_seconds,
        )

    def _batch_id(self, category: str, number: int) -> str:
        return f"{self.config.project.name}:{category}:r{number}"

    def _lay_out_hits(self, session: Session, category: str, cat_id: int, round_: Round) -> None:
        crowd = self.config.crowd
        items = list(
            session.scalars(
                select(RoundItem.item_id).where(RoundItem.round_id == round_.id).order_by(RoundItem.item_id)
            )
        )
        gold = list(session.scalars(select(Gold.item_id).where(Gold.category_id == cat_id).order_by(Gold.item_id)))
        rng = _rng(self.config.project.seed, cat_id, round_.number, 2)
        rng.shuffle(items)
        gold_count = min(crowd.gold_per_hit, len(gold))
        per_hit = crowd.items_per_hit - gold_count
        batch_id = self._batch_id(category, round_.number)
        for number, start in enumerate(range(0, len(items), per_hit)):
            members = [(item, False) for item in items[start : start + per_hit]]
            if gold_count:
                members += [(int(g), True) for g in rng.choice(gold, size=gold_count, replace=False)]
            order = rng.permutation(len(members))
            hit = Hit(
                round_id=round_.id,
                batch_id=batch_id,
                hit_key=f"h{number:05d}",
                assignments_requested=crowd.votes_per_item,
            )
            session.add(hit)
            session.flush()
            session.add_all(
                HitItemRow(hit_id=hit.id, position=position, item_id=members[index][0], is_gold=members[index][1])
                for position, index in enumerate(order)
            )

    def spent(self) -> Decimal:
        with self.store.session() as session:
            return Decimal(session.scalar(select(func.coalesce(func.sum(Spend.amount), 0))) or 0)

    def _check_money_and_stage(self, category: str, cat_id: int, round_: Round) -> str:
        batch = self._batch(category, cat_id, round_)
        cost = self.crowd.estimate_cost(batch)
        spent = self.spent()
        budget = self.config.cascade.budget
        reason = None
        if spent + cost.total > budget:
            reason = f"budget: round {round_.number} would cost {cost.total}, {budget - spent} of {budget} left"
        else:
            balance = self.crowd.balance()
            if balance is not None and balance < cost.total:
                reason = f"balance: round {round_.number} would cost {cost.total}, the account holds {balance}"
        with self.store.session() as session:
            if reason is not None:
                self.progress.message(f"{category}: stopped, {reason}")
                round_.notes = reason
                return self._set_state(session, round_, STOPPED, notes=reason)
            # Past this commit the checks are done: a crash during publish resumes the publish itself.
            return self._set_state(session, round_, PUBLISHING)

    def _publish(self, category: str, cat_id: int, round_: Round) -> str:
        batch = self._batch(category, cat_id, round_)
        cost = self.crowd.estimate_cost(batch)
        published = self.crowd.publish(batch)
        platform_ids = {hit.hit_key: hit.hit_id for hit in published}
        with self.store.session() as session:
            for hit in session.scalars(select(Hit).where(Hit.round_id == round_.id)):
                hit.platform_hit_id = platform_ids[hit.hit_key]
                hit.state = HitState.OPEN
            insert_ignoring_duplicates(
                session,
                Spend,
                [
                    {"round_id": round_.id, "reference": batch.batch_id, "kind": "reward", "amount": cost.rewards},
                    {"round_id": round_.id, "reference": batch.batch_id, "kind": "fee", "amount": cost.fees},
                ],
            )
            state = self._set_state(session, round_, PUBLISHED)
        self.progress.message(f"{category}: round {round_.number}: published {len(published)} HITs ({cost.total} USD)")
        return state

    # -- collect ------------------------------------------------------------------------------

    def _collect(self, category: str, cat_id: int, round_: Round) -> str:
        crowd = self.config.crowd
        deadline = time.monotonic() + crowd.collect_timeout_seconds
        with self.store.session() as session:
            round_hits = session.scalars(select(Hit).where(Hit.round_id == round_.id)).all()
            hits = {hit.platform_hit_id: hit.id for hit in round_hits}
            total = sum(session.scalars(select(Hit.assignments_requested).where(Hit.round_id == round_.id)))
            have = session.scalar(select(func.count(AssignmentRow.id)).where(AssignmentRow.hit_id.in_(hits.values())))
        task = f"{category} r{round_.number}: assignments"
        self.progress.start(task, total)
        self.progress.advance(task, int(have or 0))
        while True:
            with self.store.session() as session:
                open_ids = [
                    pid
                    for pid in session.scalars(
                        select(Hit.platform_hit_id).where(Hit.round_id == round_.id, Hit.state == HitState.OPEN)
                    ).all()
                    if pid
                ]
            if not open_ids:
                break
            if time.monotonic() > deadline:
                self.crowd.expire(open_ids)
            for status in self.crowd.hit_status(open_ids):
                added = self._store_assignments(cat_id, hits[status.hit_id], status.hit_id)
                self.progress.advance(task, added)
                if status.state != HitState.OPEN or time.monotonic() > deadline:
                    final = HitState.EXPIRED if status.state == HitState.OPEN else status.state
                    with self.store.session() as session:
                        session.execute(update(Hit).where(Hit.id == hits[status.hit_id]).values(state=final))
            self.sleep(crowd.poll_seconds)
        self.progress.finish(task)
        with self.store.session() as session:
            return self._set_state(session, round_, COLLECTED)

    def _store_assignments(self, cat_id: int, hit_row_id: int, platform_hit_id: str) -> int:
        """Store a HIT's new assignments and their votes. Returns how many assignments were new."""
        assignments = self.crowd.list_assignments(platform_hit_id)
        with self.store.session() as session:
            known = set(
                session.scalars(select(AssignmentRow.platform_assignment_id).where(AssignmentRow.hit_id == hit_row_id))
            )
            fresh = [a for a in assignments if a.assignment_id not in known]
            if not fresh:
                return 0
            layout = dict(
                session.execute(
                    select(HitItemRow.item_id, HitItemRow.is_gold).where(HitItemRow.hit_id == hit_row_id)
                ).all()
            )
            insert_ignoring_duplicates(session, Worker, [{"platform_worker_id": a.worker_id} for a in fresh])
            worker_ids = dict(
                session.execute(
                    select(Worker.platform_worker_id, Worker.id).where(
                        Worker.platform_worker_id.in_({a.worker_id for a in fresh})
                    )
                ).all()
            )
            insert_ignoring_duplicates(
                session,
                AssignmentRow,
                [
                    {
                        "platform_assignment_id": a.assignment_id,
                        "hit_id": hit_row_id,
                        "worker_id": worker_ids[a.worker_id],
                        "status": a.status.value,
                        "accepted_at": a.accepted_at,
                        "submitted_at": a.submitted_at,
                    }
                    for a in fresh
                ],
            )
            row_ids = dict(
                session.execute(
                    select(AssignmentRow.platform_assignment_id, AssignmentRow.id).where(
                        AssignmentRow.platform_assignment_id.in_([a.assignment_id for a in fresh])
                    )
                ).all()
            )
            votes = []
            for assignment in fresh:
                for key, answer in assignment.answers.items():
                    item_id = int(key) if key.isdigit() else None
                    if item_id not in layout or answer not in ANSWER_VALUES:
                        log.warning(
                            "assignment %s: ignored answer %r for %r, not an image of this HIT or not yes/no",
                            assignment.assignment_id,
                            answer,
                            key,
                        )
                        continue
                    votes.append(
                        {
                            "assignment_id": row_ids[assignment.assignment_id],
                            "item_id": item_id,
                            "category_id": cat_id,
                            "worker_id": worker_ids[assignment.worker_id],
                            "answer": ANSWER_VALUES[answer],
                            "is_gold": layout[item_id],
                        }
                    )
            insert_ignoring_duplicates(session, Vote, votes)
        return len(fresh)

    # -- review -------------------------------------------------------------------------------

    def _review(self, category: str, cat_id: int, round_: Round) -> str:
        policy = self.config.quality
        round_assignments = (
            select(AssignmentRow.id).join(Hit, Hit.id == AssignmentRow.hit_id).where(Hit.round_id == round_.id)
        )
        with self.store.session() as session:
            # Score gold answers exactly once per assignment, in the same transaction as the flag.
            unscored = (
                select(Vote.worker_id, Vote.answer, Gold.answer)
                .join(Gold, (Gold.item_id == Vote.item_id) & (Gold.category_id == Vote.category_id))
                .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
                .where(Vote.is_gold, AssignmentRow.gold_scored.is_(False), AssignmentRow.id.in_(round_assignments))
            )
            tallies: dict[int, list[int]] = {}
            for worker_id, answer, truth in session.execute(unscored):
                tallies.setdefault(worker_id, [0, 0])[0 if answer == truth else 1] += 1
            for worker_id, (correct, wrong) in tallies.items():
                session.execute(
                    update(Worker)
                    .where(Worker.id == worker_id)
                    .values(gold_correct=Worker.gold_correct + correct, gold_wrong=Worker.gold_wrong + wrong)
                )
            session.execute(
                update(AssignmentRow).where(AssignmentRow.id.in_(round_assignments)).values(gold_scored=True)
            )
        with self.store.session() as session:
            workers = session.scalars(select(Worker).where(Worker.blocked.is_(False))).all()
            to_block = [w for w in workers if assess(w.gold_correct, w.gold_wrong, policy).blocked]
        for worker in to_block:
            quality = assess(worker.gold_correct, worker.gold_wrong, policy)
            self.crowd.block_worker(
                worker.platform_worker_id,
                (
                    f"gold accuracy {worker.gold_correct}/{worker.gold_correct + worker.gold_wrong}; "
                    f"P(accuracy < {policy.accuracy_bar}) = {quality.below_bar:.3f}"
                ),
            )
            with self.store.session() as session:
                session.execute(update(Worker).where(Worker.id == worker.id).values(blocked=True))
        if to_block:
            self.progress.message(f"{category}: blocked {len(to_block)} worker(s) on gold answers")
        with self.store.session() as session:
            pending = session.execute(
                select(AssignmentRow.id, AssignmentRow.platform_assignment_id, Worker.blocked)
                .join(Worker, Worker.id == AssignmentRow.worker_id)
                .where(AssignmentRow.id.in_(round_assignments), AssignmentRow.status == "submitted")
                .order_by(AssignmentRow.id)
            ).all()
        for row_id, platform_id, blocked in pending:
            if blocked:
                self.crowd.reject(platform_id, REJECTION_FEEDBACK)
            else:
                self.crowd.approve(platform_id, "Thank you!")
            with self.store.session() as session:
                session.execute(
                    update(AssignmentRow)
                    .where(AssignmentRow.id == row_id)
                    .values(status="rejected" if blocked else "approved")
                )
        with self.store.session() as session:
            return self._set_state(session, round_, REVIEWED)

    # -- label --------------------------------------------------------------------------------

    def _label(self, category: str, cat_id: int, round_: Round) -> str:
        """Aggregate every vote of the category (earlier rounds and gold too, which measure the
        workers) and label this round's images whose posterior is confident enough."""
        minimum = self.config.crowd.min_votes_per_item
        quality = self.config.quality
        with self.store.session() as session:
            rows = session.execute(
                select(Vote.item_id, Vote.worker_id, Vote.answer)
                .join(Worker, Worker.id == Vote.worker_id)
                .where(Vote.category_id == cat_id, Worker.blocked.is_(False))
                .order_by(Vote.id)
            ).all()
            gold = dict(session.execute(select(Gold.item_id, Gold.answer).where(Gold.category_id == cat_id)).all())
            in_round = set(session.scalars(select(RoundItem.item_id).where(RoundItem.round_id == round_.id)))
            labels: list[dict[str, Any]] = []
            if rows:
                votes = Votes.from_triples(rows, classes=(0, 1))
                known = {index: gold[item] for index, item in enumerate(votes.items) if item in gold}
                posterior = dawid_skene(votes, known, quality.prior_correct, quality.prior_wrong)
                winners, confidence = posterior.labels(), posterior.confidence()
                for index, item in enumerate(posterior.items):
                    count = int(posterior.vote_counts[index])
                    if item not in in_round or count < minimum or confidence[index] < quality.min_label_confidence:
                        continue  # not this round's, too few votes, or too uncertain: back to the pool
                    labels.append(
                        {
                            "item_id": item,
                            "category_id": cat_id,
                            "label": int(winners[index]),
                            "source": "human",
                            "round_id": round_.id,
                            "confidence": float(confidence[index]),
                            "votes": count,
                        }
                    )
            insert_ignoring_duplicates(session, Label, labels)
            state = self._set_state(session, round_, LABELED)
        self.progress.message(
            f"{category}: round {round_.number}: {len(labels)} images labeled by humans "
            f"({sum(label['label'] for label in labels)} positive)"
        )
        return state

    # -- train and split ----------------------------------------------------------------------

    def _train_and_split(self, category: str, cat_id: int, round_: Round) -> str:
        cascade = self.config.cascade
        if round_.human_only:
            with self.store.session() as session:
                return self._set_state(session, round_, DONE, finished_at=utc_now())
        with self.store.session() as session:
            calibration_role = (
                select(RoundItem.item_id)
                .join(Round, Round.id == RoundItem.round_id)
                .where(Round.category_id == cat_id, RoundItem.role == "calibration")
            )
            training: list[tuple[str, int, float]] = [
                (sha, label, confidence)
                for sha, label, confidence in session.execute(
                    select(Item.sha256, Label.label, Label.confidence)
                    .join(Label, Label.item_id == Item.id)
                    .where(Label.category_id == cat_id, Label.source == "human", Item.id.notin_(calibration_role))
                    .order_by(Item.id)
                )
            ]
            training += [
                (sha, answer, 1.0)
                for sha, answer in session.execute(
                    select(Item.sha256, Gold.answer)
                    .join(Gold, Gold.item_id == Item.id)
                    .where(Gold.category_id == cat_id)
                    .order_by(Item.id)
                )
            ]
            calibration = session.execute(
                select(RoundItem.round_id, RoundItem.item_id, Item.sha256, Label.label)
                .join(Round, Round.id == RoundItem.round_id)
                .join(Item, Item.id == RoundItem.item_id)
                .join(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == cat_id))
                .where(
                    Round.category_id == cat_id,
                    RoundItem.role == "calibration",
                    RoundItem.active,
                    Label.source == "human",
                )
                .order_by(RoundItem.item_id)
            ).all()
            pool = self._pool_ids(session, cat_id)
            pool_hashes = dict(session.execute(select(Item.id, Item.sha256).where(Item.id.in_(pool))).all())
        targets = np.array([label for _, label, _ in training], dtype=np.float64)
        if len(set(targets.tolist())) < 2 or not calibration:
            note = "no split: training needs both classes and calibration needs labels"
            self.progress.message(f"{category}: round {round_.number}: {note}")
            with self.store.session() as session:
                return self._set_state(session, round_, DONE, notes=note, finished_at=utc_now())
        head = train_head(
            self.embeddings.get([sha for sha, _, _ in training]),
            targets,
            np.array([confidence for _, _, confidence in training], dtype=np.float64),
            self.config.model,
            seed=self.config.project.seed * 1_000_003 + cat_id * 101 + round_.number,
        )
        calibration_scores = head.logits(self.embeddings.get([sha for _, _, sha, _ in calibration]))
        thresholds = choose_thresholds(
            calibration_scores,
            np.array([label for _, _, _, label in calibration]),
            cascade.target_precision,
            cascade.target_npv,
            cascade.confidence,
        )
        pool_scores = head.logits(self.embeddings.get([pool_hashes[item] for item in pool]))
        decisions = thresholds.decide(pool_scores)
        retired = thresholds.decide(calibration_scores) >= 0
        positive_probability = probability(pool_scores)
        labels = [
            {
                "item_id": item,
                "category_id": cat_id,
                "label": int(decision),
                "source": "model",
                "round_id": round_.id,
                "confidence": float(p if decision == 1 else 1 - p),
                "votes": 0,
            }
            for item, p, decision in zip(pool, positive_probability, decisions, strict=True)
            if decision >= 0
        ]
        with self.store.session() as session:
            insert_ignoring_duplicates(session, Label, labels)
            for (round_id, item_id, _, _), gone in zip(calibration, retired, strict=True):
                if gone:
                    session.execute(
                        update(RoundItem)
                        .where(RoundItem.round_id == round_id, RoundItem.item_id == item_id)
                        .values(active=False)
                    )
            state = self._set_state(
                session,
                round_,
                DONE,
                finished_at=utc_now(),
                high_threshold=_finite(thresholds.high),
                low_threshold=_finite(thresholds.low),
                notes=(
                    f"calibration {thresholds.calibration_size}, precision bound {thresholds.precision_bound:.3f}, "
                    f"NPV bound {thresholds.npv_bound:.3f}"
                ),
            )
        positives = int((decisions == 1).sum())
        negatives = int((decisions == 0).sum())
        self.progress.message(
            f"{category}: round {round_.number}: model labeled {positives} positive, {negatives} negative; "
            f"{len(pool) - positives - negatives} left (logit thresholds {thresholds.low:.2f}/{thresholds.high:.2f}, "
            f"calibration {thresholds.calibration_size})"
        )
        return state


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
