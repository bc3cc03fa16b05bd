"""Label-error repair on the demo: how many of the wrong human labels it flags, how many remain, and
the votes it costs. The simulated crowd's truth is the true digits, so every figure is checked.

python benchmarks/repair.py [--seeds 0 1 2] [--baseline] [--keep DIR]

With ``--baseline`` each seed runs a second time with ``[repair] enabled = false``, to compare the
wrong human labels, votes and money of the whole run with and without repair.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from sklearn.datasets import load_digits
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.demo import run_project, shows_digit
from lsun_crowd.ids import OriginKind, of_kind
from lsun_crowd.project import Project
from lsun_crowd.schema import (
    AssignmentRow,
    Category,
    GroupJob,
    Hit,
    Item,
    Job,
    JobKind,
    Label,
    LabelEvent,
    LabelSource,
    Repair,
    RepairState,
    Vote,
)

WITHOUT_REPAIR = "[repair]\nenabled = false\n"


@dataclass(frozen=True)
class RepairScore:
    """What repair did to the human labels of a project whose truth is known."""

    human_labels: int  # images × categories first labeled by people
    wrong_before: int  # of them, wrong as people first gave them
    flagged_wrong: int  # of those, flagged by a pass
    sent_wrong: int  # of those, sent back to people
    flagged: int
    sent: int
    changed_right: int  # labels repair changed to the truth
    changed_wrong: int  # labels repair changed away from the truth
    wrong_after: int  # wrong after repair's changes (other revisions, such as conflicts, aside)
    wrong_final: int  # wrong in the current labels, every revision counted
    votes: int  # on the suspects, gold aside
    gold_votes: int
    assignments: int
    spent: Decimal

    @property
    def flagged_share(self) -> float:
        return self.flagged_wrong / max(self.wrong_before, 1)


def score_against_truth(session: Session, truth: Callable[[str, str], bool]) -> RepairScore:
    """Compare the human labels before and after repair with ``truth(uri, category)``."""
    names = dict(session.execute(select(Category.id, Category.name)).all())
    uris = dict(session.execute(select(Item.id, Item.uri)).all())
    first: dict[tuple[int, int], int] = {}
    for item, category_id, label in session.execute(
        select(LabelEvent.item_id, LabelEvent.category_id, LabelEvent.label)
        .where(LabelEvent.source == LabelSource.HUMAN, LabelEvent.origin.like(of_kind(OriginKind.ROUND)))
        .order_by(LabelEvent.id)
    ):
        first.setdefault((int(item), int(category_id)), int(label))
    repaired: dict[tuple[int, int], int] = {
        (int(item), int(category_id)): int(label)
        for item, category_id, label in session.execute(
            select(LabelEvent.item_id, LabelEvent.category_id, LabelEvent.label)
            .where(LabelEvent.origin.like(of_kind(OriginKind.REPAIR)))
            .order_by(LabelEvent.id)
        )
    }
    current = {
        (int(item), int(category_id)): int(label)
        for item, category_id, label in session.execute(select(Label.item_id, Label.category_id, Label.label))
    }
    rows = session.execute(select(Repair.item_id, Repair.category_id, Repair.state)).all()
    flagged = {(int(item), int(category_id)) for item, category_id, _ in rows}
    sent = {(int(item), int(category_id)) for item, category_id, state in rows if state != RepairState.FLAGGED}

    def right(pair: tuple[int, int]) -> int:
        return int(truth(uris[pair[0]], names[pair[1]]))

    wrong = {pair for pair, label in first.items() if label != right(pair)}
    after = {pair: repaired.get(pair, label) for pair, label in first.items()}
    changed = [pair for pair in repaired if pair in first and repaired[pair] != first[pair]]
    jobs = select(Job.id).where(Job.kind == JobKind.REPAIR, Job.id.notin_(select(GroupJob.job_id)))
    on_repair_hits = (
        select(Vote.is_gold, func.count(Vote.id))
        .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
        .join(Hit, Hit.id == AssignmentRow.hit_id)
        .where(Hit.job_id.in_(jobs))
        .group_by(Vote.is_gold)
    )
    votes = {bool(is_gold): int(count) for is_gold, count in session.execute(on_repair_hits)}
    assignments = session.scalar(
        select(func.count(AssignmentRow.id)).join(Hit, Hit.id == AssignmentRow.hit_id).where(Hit.job_id.in_(jobs))
    )
    spent = ledger.spending(session, jobs).total
    return RepairScore(
        human_labels=len(first),
        wrong_before=len(wrong),
        flagged_wrong=len(wrong & flagged),
        sent_wrong=len(wrong & sent),
        flagged=len(flagged),
        sent=len(sent),
        changed_right=sum(repaired[pair] == right(pair) for pair in changed),
        changed_wrong=sum(repaired[pair] != right(pair) for pair in changed),
        wrong_after=sum(label != right(pair) for pair, label in after.items()),
        wrong_final=sum(current.get(pair, label) != right(pair) for pair, label in first.items()),
        votes=votes.get(False, 0),
        gold_votes=votes.get(True, 0),
        assignments=int(assignments or 0),
        spent=Decimal(spent or 0),
    )


def measure(
    seed: int, extra: str, console: Console, keep: Path | None = None
) -> tuple[RepairScore, int, Decimal, float]:
    """One demo run: its repair score, all its votes (gold aside), its spend and its seconds. With
    ``keep``, the project stays in ``keep/seed-N``."""
    with tempfile.TemporaryDirectory() as scratch:
        out = keep / f"seed-{seed}" if keep is not None else Path(scratch)
        start = time.perf_counter()
        run = run_project(out, seed, console, extra=extra)
        seconds = time.perf_counter() - start
        targets = load_digits().target
        project = Project.open(out)
        with project.store.session() as session:
            score = score_against_truth(session, lambda uri, category: shows_digit(targets, uri, category))
        project.close()
    return score, run.humans.votes, run.spent, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline", action="store_true", help="also run each seed with repair off")
    parser.add_argument("--keep", type=Path, help="keep the projects (with repair) in this folder")
    args = parser.parse_args()
    quiet = Console(quiet=True)
    print("the demo with label-error repair (its defaults); wrong = against the true digits")
    print(
        f"{'seed':>4} {'human':>6} {'wrong':>5} {'flagged':>7} {'of wrong':>8} {'sent':>5} {'fixed/broke':>9} "
        f"{'wrong after':>11} {'final':>5} {'votes':>6} {'gold':>5} {'USD':>5} {'run votes':>9} {'run USD':>7} "
        f"{'seconds':>7}"
    )
    totals = [0, 0, 0, 0, 0]
    for seed in args.seeds:
        score, run_votes, spent, seconds = measure(seed, "", quiet, args.keep)
        totals = [
            totals[0] + score.wrong_before,
            totals[1] + score.flagged_wrong,
            totals[2] + score.wrong_after,
            totals[3] + score.votes,
            totals[4] + score.wrong_final,
        ]
        print(
            f"{seed:>4} {score.human_labels:>6} {score.wrong_before:>5} {score.flagged:>7} "
            f"{score.flagged_wrong:>3}/{score.wrong_before:<4} {score.sent:>5} "
            f"{score.changed_right:>4}/{score.changed_wrong:<4} {score.wrong_after:>11} {score.wrong_final:>5} "
            f"{score.votes:>6} {score.gold_votes:>5} {score.spent:>5.2f} {run_votes:>9} {spent:>7.2f} {seconds:>7.1f}"
        )
    wrong, caught, after, votes, final = totals
    print(
        f"all: flagged {caught} of {wrong} wrong human labels ({caught / max(wrong, 1):.0%}); "
        f"wrong after repair {after} ({after / max(wrong, 1):.0%} of before; {final} with every revision); "
        f"{votes} votes on the suspects"
    )
    if not args.baseline:
        return
    print("\nthe same seeds with repair off ([repair] enabled = false):")
    print(f"{'seed':>4} {'human':>6} {'wrong':>5} {'run votes':>9} {'run USD':>7} {'seconds':>7}")
    for seed in args.seeds:
        score, run_votes, spent, seconds = measure(seed, WITHOUT_REPAIR, quiet)
        print(f"{seed:>4} {score.human_labels:>6} {score.wrong_final:>5} {run_votes:>9} {spent:>7.2f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
