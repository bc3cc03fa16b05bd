"""Label-error repair: find the human labels that are likely wrong and send them back to people.

A *repair pass* over a category:

1. **Scores** every human label out of fold (:mod:`lsun_crowd.crossfit`): ``folds`` heads, each
   trained (by :func:`lsun_crowd.classifier.train_head`, on the embedding cache) on the other folds'
   human labels and on every gold answer, so no image is scored by a model that trained on it.
2. **Flags** the likely wrong ones by confident learning (:mod:`lsun_crowd.confident_learning`),
   ranked by self-confidence and capped at ``max_share`` of the category's human labels. A label
   a pass already sent to people is not flagged again.
3. **Sends** them to the crowd in a repair job (kind ``repair``, outside any round) of small HITs
   that carry gold as every HIT does; the job's HITs are kept from every worker who answered about
   their images before (:data:`lsun_crowd.publish.FRESH_WORKER_KINDS`), so the new votes are
   independent of the label they check.
4. **Settles** each suspect on the category's gold-anchored Dawid–Skene posterior with the new
   votes, with the out-of-fold model as one more annotator (``model_evidence``): its score,
   Platt-scaled on the category's human labels, adds its log-likelihood ratio to the crowd's
   log-odds, as the previous round's model does in :mod:`lsun_crowd.consensus` (the idea of
   CROWDLAB). Calibration images are decided by people alone. Confident at the people's bar
   (``quality.min_label_confidence``), the label is kept or changed; still uncertain, it gets
   ``follow_up_votes`` more, up to ``max_votes`` new votes, and then keeps its label. A change is
   a new label event (source ``human``, origin ``repair:<job id>``) that says why.

The runner runs a pass after every ``every_rounds``-th round of a category and once when the
category finishes (:func:`after_round`), so the next round's model trains on the corrected labels;
the category waits for its pass while the others go on. ``lsun-crowd repair`` runs one now
(:func:`run_repair`).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.aggregate import Posterior
from lsun_crowd.classifier import TrainingError, cross_fit_heads, probability
from lsun_crowd.confident_learning import binary_probabilities, find_label_issues
from lsun_crowd.consensus import MIN_CALIBRATION_LABELS, evidence_bound, fit_platt
from lsun_crowd.context import Context, JobRef, Stream, job_refs, model_seed, rng
from lsun_crowd.crossfit import stratified_folds
from lsun_crowd.ids import repair_batch, repair_origin, repair_pass_batches
from lsun_crowd.jobs import advance_job
from lsun_crowd.publish import add_fresh_job
from lsun_crowd.review import human_posterior
from lsun_crowd.schema import (
    AssignmentRow,
    Category,
    Gold,
    GroupJob,
    Hit,
    Item,
    ItemRole,
    Job,
    JobKind,
    JobState,
    Label,
    LabelSource,
    Repair,
    RepairPass,
    RepairPassState,
    RepairState,
    Round,
    RoundItem,
    Vote,
    Worker,
)

ITEMS_PER_HIT = 3  # small HITs: the fewer images a HIT shows, the fewer earlier voters it keeps away


class RepairStep(enum.StrEnum):
    MOVED = "moved"  # something happened
    WAITING = "waiting"  # a repair job is out with the crowd
    DONE = "done"  # nothing (more) to do now


@dataclass(frozen=True)
class ScoredLabels:
    """A category's human labels with their out-of-fold probability of positive."""

    items: NDArray[np.int64]
    labels: NDArray[np.int64]
    logits: NDArray[np.float64]

    @property
    def positive(self) -> NDArray[np.float64]:
        return probability(self.logits)


# -- scoring and flagging ---------------------------------------------------------------------------


def score_labels(ctx: Context, category_id: int, salt: int = 0) -> ScoredLabels | None:
    """Every human label of the category, scored out of fold; ``None`` when a class has fewer
    than ``repair.min_per_class`` labels (too few to train on without it)."""
    settings = ctx.config.repair
    with ctx.store.session() as session:
        rows = session.execute(
            select(Item.id, Item.sha256, Label.label, Label.confidence)
            .join(Label, Label.item_id == Item.id)
            .where(Label.category_id == category_id, Label.source == LabelSource.HUMAN, Item.problem.is_(None))
            .order_by(Item.id)
        ).all()
        gold = session.execute(
            select(Item.sha256, Gold.answer)
            .join(Gold, Gold.item_id == Item.id)
            .where(Gold.category_id == category_id, Item.problem.is_(None))
            .order_by(Item.id)
        ).all()
    labels = np.array([int(row.label) for row in rows], dtype=np.int64)
    if len(rows) == 0 or min(int((labels == 1).sum()), int((labels == 0).sum())) < settings.min_per_class:
        return None
    embeddings = ctx.embeddings()
    features = embeddings.get([row.sha256 for row in rows])
    weights = np.array([float(row.confidence) for row in rows], dtype=np.float64)
    gold_features = embeddings.get([sha for sha, _ in gold])
    gold_targets = np.array([float(answer) for _, answer in gold], dtype=np.float64)
    seed = ctx.config.project.seed
    folds = stratified_folds(labels, settings.folds, [seed, category_id, salt, Stream.REPAIR_FOLDS])
    # The fold heads train in step and stop on their pooled held-out loss (classifier.cross_fit_heads).
    logits, _ = cross_fit_heads(
        features,
        labels.astype(np.float64),
        weights,
        folds,
        (gold_features, gold_targets),
        ctx.config.model,
        model_seed(seed, category_id, salt * 7 + 5),
    )
    return ScoredLabels(np.array([int(row.id) for row in rows], dtype=np.int64), labels, logits)


def model_evidence(session: Session, category_id: int, scored: ScoredLabels) -> NDArray[np.float64]:
    """The out-of-fold model as one more annotator (as in :mod:`lsun_crowd.consensus`): its
    log-likelihood ratio for positive, Platt-scaled on the category's human labels, which its
    scores never trained on. NaN for calibration images, which people alone decide (and for every
    image when the labels are too few to calibrate on)."""
    platt = fit_platt(scored.logits, scored.labels, MIN_CALIBRATION_LABELS)
    if platt is None:
        return np.full(len(scored.items), np.nan)
    calibration = {
        int(item)
        for item in session.scalars(
            select(RoundItem.item_id)
            .join(Round, Round.id == RoundItem.round_id)
            .where(Round.category_id == category_id, RoundItem.role == ItemRole.CALIBRATION)
        )
    }
    evidence = platt.log_likelihood_ratio(scored.logits)
    held = np.array([int(item) in calibration for item in scored.items], dtype=bool)
    return np.where(held, np.nan, evidence)


def checked_before(session: Session, category_id: int) -> set[int]:
    """Images of the category a pass has sent to people (or could not): not flagged again."""
    return {
        int(item)
        for item in session.scalars(
            select(Repair.item_id).where(Repair.category_id == category_id, Repair.state != RepairState.FLAGGED)
        )
    }


# -- a pass -----------------------------------------------------------------------------------------


def start_pass(ctx: Context, category: str, category_id: int, round_id: int | None) -> int:
    """Score, flag and lay out the first repair job of a new pass; returns the pass's id. The pass
    and its suspects are stored in one transaction with the job, so a crash leaves all or none."""
    settings = ctx.config.repair
    with ctx.store.session() as session:
        passes = int(
            session.scalar(select(func.count(RepairPass.id)).where(RepairPass.category_id == category_id)) or 0
        )
    try:
        scored = score_labels(ctx, category_id, salt=passes)
        note = ""
    except TrainingError as error:
        scored, note = None, f"not scored: {error}"
    with ctx.store.session() as session:
        record = RepairPass(category_id=category_id, round_id=round_id, state=RepairPassState.DONE, scored=0, flagged=0)
        session.add(record)
        session.flush()
        if scored is None:
            record.notes = note or f"not scored: fewer than {settings.min_per_class} human labels of a class"
            ctx.progress.message(f"{category}: repair: {record.notes}")
            return int(record.id)
        issues = find_label_issues(binary_probabilities(scored.positive), scored.labels, settings.rule)
        evidence = model_evidence(session, category_id, scored) if settings.model_evidence else None
        done_before = checked_before(session, category_id)
        suspects = [int(index) for index in issues.ranked if int(scored.items[index]) not in done_before]
        cap = int(settings.max_share * len(scored.items))
        sent, held = suspects[:cap], suspects[cap:]
        chosen = set(sent)
        record.scored, record.flagged = len(scored.items), len(suspects)
        job = lay_out_job(ctx, session, category, category_id, record.id, 0, [int(scored.items[i]) for i in sent])
        session.add_all(
            Repair(
                pass_id=record.id,
                item_id=int(scored.items[index]),
                category_id=category_id,
                job_id=job.id if job is not None and index in chosen else None,
                score=float(scored.positive[index]),
                model_evidence=_finite_or_none(evidence[index]) if evidence is not None else None,
                given_label=int(scored.labels[index]),
                state=RepairState.SENT if index in chosen else RepairState.FLAGGED,
            )
            for index in sent + held
        )
        if job is not None:
            record.job_id, record.state = job.id, RepairPassState.OPEN
        record.notes = f"{len(suspects)} suspect(s) of {len(scored.items)}; {len(sent)} sent" + (
            f", {len(held)} over the cap of {cap}" if held else ""
        )
        pass_id = int(record.id)
    ctx.progress.message(f"{category}: repair: {record.notes}")
    return pass_id


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def lay_out_job(
    ctx: Context, session: Session, category: str, category_id: int, pass_id: int, stage: int, items: list[int]
) -> Job | None:
    """A repair job for ``items``: small HITs, each with the category's hidden gold; images whose
    earlier voters overlap share a HIT, so each HIT keeps as few workers away as it can. ``None``
    for no items."""
    if not items:
        return None
    settings = ctx.config.repair
    votes = settings.votes if stage == 0 else settings.follow_up_votes
    job = Job(
        category_id=category_id,
        round_id=None,
        kind=JobKind.REPAIR,
        sequence=stage,
        batch_id=repair_batch(ctx.project_key(), category, pass_id, stage),
        state=JobState.PENDING,
        assignments_per_hit=votes,
        notes=f"repair pass {pass_id}, stage {stage}: {len(items)} image(s)",
    )
    generator = rng(ctx.config.project.seed, category_id, pass_id, Stream.REPAIR_ORDER, stage)
    return add_fresh_job(ctx, session, category, category_id, job, items, ITEMS_PER_HIT, generator)


def advance_pass(ctx: Context, pass_id: int, collect: bool = False) -> RepairStep:
    """Move the pass's current job on (money, publish, review; with ``collect`` also store what has
    arrived, where the runner's poll does not), and settle it once reviewed."""
    with ctx.store.session() as session:
        record = session.get(RepairPass, pass_id)
        if record is None or record.job_id is None or record.state == RepairPassState.DONE:
            return RepairStep.DONE
        ref = job_refs(session, Job.id == record.job_id)[0]
    moved = False
    if ref.state != JobState.STOPPED:
        moved = advance_job(ctx, ref, collect=collect)
    with ctx.store.session() as session:
        state = JobState(session.scalars(select(Job.state).where(Job.id == ref.id)).one())
        if state == JobState.STOPPED:
            # Given up for now; the job goes on if a raised budget revives it (jobs.recheck_stopped).
            session.execute(update(RepairPass).where(RepairPass.id == pass_id).values(state=RepairPassState.STOPPED))
            session.execute(
                update(Repair)
                .where(Repair.pass_id == pass_id, Repair.state == RepairState.SENT)
                .values(state=RepairState.STOPPED)
            )
            return RepairStep.DONE
        if record.state == RepairPassState.STOPPED:  # revived
            session.execute(update(RepairPass).where(RepairPass.id == pass_id).values(state=RepairPassState.OPEN))
            session.execute(
                update(Repair)
                .where(Repair.pass_id == pass_id, Repair.state == RepairState.STOPPED)
                .values(state=RepairState.SENT)
            )
    if state == JobState.REVIEWED:
        settle_repair_stage(ctx, pass_id, ref)
        return RepairStep.MOVED
    return RepairStep.MOVED if moved else RepairStep.WAITING


def fresh_evidence(
    session: Session, posterior: Posterior | None, category_id: int, pass_id: int, items: list[int]
) -> dict[int, tuple[float, int]]:
    """Per suspect, the log-likelihood ratio for positive of the votes the pass's jobs brought, each
    weighed by its worker's confusion matrix in the category's Dawid–Skene fit (which the new votes
    and the gold hidden beside them are part of), and how many there are. Workers blocked on gold
    count for nothing."""
    if posterior is None:
        return {}
    workers = {worker: index for index, worker in enumerate(posterior.worker_accuracy)}
    jobs = select(Job.id).where(
        Job.category_id == category_id, Job.kind == JobKind.REPAIR, Job.batch_id.like(repair_pass_batches(pass_id))
    )
    rows = session.execute(
        select(Vote.item_id, Worker.platform_worker_id, Vote.answer)
        .join(Worker, Worker.id == Vote.worker_id)
        .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
        .join(Hit, Hit.id == AssignmentRow.hit_id)
        .where(Hit.job_id.in_(jobs), Vote.item_id.in_(items), Vote.is_gold.is_(False), Worker.blocked.is_(False))
    ).all()
    found: dict[int, tuple[float, int]] = {}
    for item, worker, answer in rows:
        index = workers.get(worker)
        if index is None:
            continue
        if posterior.confusion is not None:
            given_positive = posterior.confusion[index, 1, answer]
            given_negative = posterior.confusion[index, 0, answer]
        else:
            accuracy = posterior.worker_accuracy[worker]
            given_positive, given_negative = (accuracy, 1 - accuracy) if answer == 1 else (1 - accuracy, accuracy)
        ratio = float(np.log(np.clip(given_positive, 1e-6, 1.0)) - np.log(np.clip(given_negative, 1e-6, 1.0)))
        before = found.get(int(item), (0.0, 0))
        found[int(item)] = (before[0] + ratio, before[1] + 1)
    return found


class Verdict(enum.StrEnum):
    """What a repair stage decides of one suspect (the states it leaves in ``repairs``)."""

    AGAIN = "again"  # still uncertain, and more votes are allowed: the next stage asks them
    UNRESOLVED = RepairState.UNRESOLVED  # still uncertain at the cap of new votes
    KEPT = RepairState.KEPT  # the label stands
    CHANGED = RepairState.CHANGED  # the label flips


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    label: int | None  # the label decided (None while uncertain)
    certainty: float  # the posterior of the more likely label
    model: float  # the model's evidence as it counted, in nats (clipped to the bound)


def decide_suspect(
    prior: float,
    people: float,
    model_evidence: float | None,
    bound: float,
    current: int,
    min_confidence: float,
    more_allowed: bool,
) -> Decision:
    """One suspect's verdict: the category's prior log-odds, the new votes' evidence (``people``)
    and the model's, clipped to ``bound`` (one good worker's vote at most), against the label bar.
    Uncertain: asked again where ``more_allowed``, else unresolved; otherwise the label it holds
    (``current``) is kept or changed."""
    model = float(np.clip(model_evidence or 0.0, -bound, bound))
    positive = float(expit(prior + people + model))
    winner = int(positive > 0.5)
    certainty = positive if winner else 1 - positive
    if certainty < min_confidence:
        return Decision(Verdict.AGAIN if more_allowed else Verdict.UNRESOLVED, None, certainty, model)
    return Decision(Verdict.KEPT if winner == current else Verdict.CHANGED, winner, certainty, model)


def _human_prior(session: Session, category_id: int) -> float:
    """The category's prior log-odds of a positive, from people's labels (add-one smoothed)."""
    positives, total = session.execute(
        select(func.coalesce(func.sum(Label.label), 0), func.count(Label.id)).where(
            Label.category_id == category_id, Label.source == LabelSource.HUMAN
        )
    ).one()
    return float(np.log((int(positives) + 1) / (int(total) - int(positives) + 1)))


def _current_labels(session: Session, category_id: int, items: list[int]) -> dict[int, int]:
    return dict(
        session.execute(
            select(Label.item_id, Label.label).where(Label.category_id == category_id, Label.item_id.in_(items))
        ).all()
    )


def _change_label(session: Session, ref: JobRef, row: Repair, decided: Decision, asked: str, votes: int) -> None:
    """A suspect's label revised to the stage's verdict, with the reason in words."""
    label = int(decided.label or 0)
    model = f" and the model ({decided.model:+.1f} nats)" if row.model_evidence is not None else ""
    ledger.revise_labels(
        session,
        ref.category_id,
        [ledger.NewLabel(row.item_id, label, decided.certainty, votes)],
        source=LabelSource.HUMAN,
        origin=repair_origin(ref.id),
        job_id=ref.id,
        reason=(
            f"repair: out-of-fold score {row.score:.2f} disagreed with human label {row.given_label}; "
            f"{asked}; now {label} with posterior {decided.certainty:.3f}{model}"
        ),
    )


def settle_repair_stage(ctx: Context, pass_id: int, ref: JobRef) -> None:
    """Decide each suspect of the reviewed job on the new votes and the model: changed, kept, or
    (uncertain) sent again while the cap of new votes allows; in one transaction with the next
    stage's job, so a replay decides nothing twice.

    The suspect's earlier votes are what the repair checks, and they do not count again: on an
    image people find hard, their answers agree with each other more than Dawid–Skene's item-blind
    model assumes, so counting them again would let the same confusion outvote the check (as on
    the demo, where most wrong human labels are images the simulation makes ambiguous). The fit of
    the whole category, new votes included, still weighs each new vote by its worker's record."""
    settings = ctx.config.repair
    quality = ctx.config.quality
    stage = ref.job.sequence
    asked = settings.votes + stage * settings.follow_up_votes
    with ctx.store.session() as session:
        record = session.get(RepairPass, pass_id)
        if record is None or record.job_id != ref.id or record.state == RepairPassState.DONE:
            return
        rows = session.scalars(
            select(Repair).where(Repair.pass_id == pass_id, Repair.job_id == ref.id, Repair.state == RepairState.SENT)
        ).all()
        posterior = human_posterior(session, ref.category_id, quality)
        fresh = fresh_evidence(session, posterior, ref.category_id, pass_id, [row.item_id for row in rows])
        prior = _human_prior(session, ref.category_id)
        all_votes = dict(zip(posterior.items, posterior.vote_counts.tolist(), strict=True)) if posterior else {}
        current = _current_labels(session, ref.category_id, [row.item_id for row in rows])
        # The model is one annotator among the workers: worth one good worker's vote at most.
        bound = evidence_bound(posterior) if posterior is not None else 0.0
        again: list[int] = []
        verdicts: Counter[Verdict] = Counter()
        more_allowed = asked + settings.follow_up_votes <= settings.max_votes
        for row in rows:
            people, votes = fresh.get(row.item_id, (0.0, 0))
            current_label = current.get(row.item_id, row.given_label)
            decided = decide_suspect(
                prior, people, row.model_evidence, bound, current_label, quality.min_label_confidence, more_allowed
            )
            verdicts[decided.verdict] += 1
            if decided.verdict == Verdict.AGAIN:
                again.append(row.item_id)
                continue
            row.state, row.new_label = RepairState(decided.verdict.value), decided.label
            if decided.verdict == Verdict.CHANGED:
                total_votes = int(all_votes.get(row.item_id, votes))
                _change_label(session, ref, row, decided, f"{votes} new vote(s) of {asked} asked", total_votes)
        job = lay_out_job(ctx, session, ref.category, ref.category_id, pass_id, stage + 1, again)
        if job is not None:
            session.execute(
                update(Repair).where(Repair.pass_id == pass_id, Repair.item_id.in_(again)).values(job_id=job.id)
            )
            record.job_id = job.id
        else:
            record.state = RepairPassState.DONE
    more = f"; {len(again)} still uncertain get {settings.follow_up_votes} more vote(s)" if again else ""
    changed, kept, unresolved = (verdicts[verdict] for verdict in (Verdict.CHANGED, Verdict.KEPT, Verdict.UNRESOLVED))
    ctx.progress.message(
        f"{ref.category}: repair stage {stage}: {changed} changed, {kept} kept, {unresolved} left uncertain{more}"
    )


# -- in the cascade and from the command line -------------------------------------------------------


def open_passes(session: Session, category_id: int) -> list[int]:
    """The category's passes with a job still to move on: open ones, and stopped ones whose job a
    raised budget has revived."""
    return [
        int(pass_id)
        for pass_id in session.scalars(
            select(RepairPass.id)
            .join(Job, Job.id == RepairPass.job_id)
            .where(
                RepairPass.category_id == category_id,
                (RepairPass.state == RepairPassState.OPEN)
                | ((RepairPass.state == RepairPassState.STOPPED) & (Job.state != JobState.STOPPED)),
            )
            .order_by(RepairPass.id)
        )
    ]


def after_round(ctx: Context, category: str, category_id: int, latest: Round, finishing: bool) -> RepairStep:
    """The runner's step for a category whose latest round is done: move its open repair pass on,
    or start one if a pass is due after this round (every ``every_rounds``-th round, and when the
    category is ``finishing``). The category waits while this says ``WAITING`` or ``MOVED``."""
    settings = ctx.config.repair
    with ctx.store.session() as session:
        waiting = open_passes(session, category_id)
        already = session.scalar(
            select(func.count(RepairPass.id)).where(
                RepairPass.category_id == category_id, RepairPass.round_id == latest.id
            )
        )
    if waiting:
        steps = [advance_pass(ctx, pass_id) for pass_id in waiting]
        if RepairStep.MOVED in steps:
            return RepairStep.MOVED
        return RepairStep.WAITING if RepairStep.WAITING in steps else RepairStep.DONE
    due = finishing or (settings.every_rounds > 0 and latest.number % settings.every_rounds == 0)
    if not settings.enabled or already or not due:
        return RepairStep.DONE
    start_pass(ctx, category, category_id, latest.id)
    return RepairStep.MOVED


@dataclass(frozen=True, kw_only=True)
class RepairSummary:
    category: str
    passes: int = 0
    scored: int = 0  # in the latest pass
    flagged: int = 0  # every pass
    sent: int = 0
    changed: int = 0
    kept: int = 0
    unresolved: int = 0
    pending: int = 0  # sent, votes not in yet (or stopped for money)
    votes: int = 0  # new votes on the suspects (gold aside)
    spent: Decimal = Decimal(0)

    def describe(self) -> str:
        return (
            f"{self.category}: {self.passes} repair pass(es), {self.scored} human labels scored in the latest; "
            f"{self.flagged} flagged, {self.sent} sent to people: {self.changed} changed, {self.kept} kept, "
            f"{self.unresolved} left uncertain, {self.pending} pending; {self.votes} new votes ({self.spent:.2f} USD)"
        )


def repair_jobs(category_id: int) -> Select[int]:
    """The category's label-error repair jobs (conflict jobs are of kind ``repair`` too, and are
    told apart by their :class:`~lsun_crowd.schema.GroupJob` row)."""
    return select(Job.id).where(
        Job.category_id == category_id, Job.kind == JobKind.REPAIR, Job.id.notin_(select(GroupJob.job_id))
    )


def summary(session: Session, category: str) -> RepairSummary:
    category_id = session.scalar(select(Category.id).where(Category.name == category))
    if category_id is None:
        return RepairSummary(category=category)
    passes = session.execute(
        select(RepairPass.scored, RepairPass.flagged)
        .where(RepairPass.category_id == category_id)
        .order_by(RepairPass.id)
    ).all()
    states = dict(
        session.execute(
            select(Repair.state, func.count(Repair.id)).where(Repair.category_id == category_id).group_by(Repair.state)
        ).all()
    )
    jobs = repair_jobs(category_id)
    votes = session.scalar(
        select(func.count(Vote.id))
        .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
        .join(Hit, Hit.id == AssignmentRow.hit_id)
        .where(Hit.job_id.in_(jobs), Vote.is_gold.is_(False))
    )
    spent = ledger.spending(session, jobs).total
    sent = sum(int(count) for state, count in states.items() if state != RepairState.FLAGGED)
    return RepairSummary(
        category=category,
        passes=len(passes),
        scored=int(passes[-1].scored) if passes else 0,
        flagged=sum(int(row.flagged) for row in passes),
        sent=sent,
        changed=int(states.get(RepairState.CHANGED, 0)),
        kept=int(states.get(RepairState.KEPT, 0)),
        unresolved=int(states.get(RepairState.UNRESOLVED, 0)),
        pending=int(states.get(RepairState.SENT, 0)) + int(states.get(RepairState.STOPPED, 0)),
        votes=int(votes or 0),
        spent=Decimal(spent or 0),
    )


def run_repair(
    ctx: Context,
    categories: Sequence[str],
    once: bool = False,
    on_pass: Callable[[], None] | None = None,
) -> list[RepairSummary]:
    """``lsun-crowd repair``: a pass over each category now (or the one still open), stepped until
    every pass is settled or stopped for money (one step with ``once``), sleeping ``poll_seconds``
    between steps that moved nothing."""
    with ctx.store.session() as session:
        ids = {}
        for name in categories:
            found = session.scalar(select(Category.id).where(Category.name == name))
            if found is None:
                raise ValueError(f"no category {name!r} in this project (run it first)")
            ids[name] = int(found)
        started = {name: open_passes(session, ids[name]) for name in categories}
    for name in categories:
        if not started[name]:
            started[name] = [start_pass(ctx, name, ids[name], None)]
    while True:
        steps = [advance_pass(ctx, pass_id, collect=True) for name in categories for pass_id in started[name]]
        if on_pass is not None:
            on_pass()
        if once or all(step == RepairStep.DONE for step in steps):
            break
        if RepairStep.MOVED not in steps:
            ctx.sleep(ctx.config.crowd.poll_seconds)
    with ctx.store.session() as session:
        return [summary(session, name) for name in categories]
