"""The conformance suite every crowd adapter passes, shipped as a pytest plugin.

An adapter's tests run it in one line::

    class TestMyVendor(CrowdBackendConformance):
        def make_backend(self, tmp_path):
            return MyVendorBackend(...)

Override :meth:`CrowdBackendConformance.complete_work` where workers must be driven (a browser
crowd posts answers; a stubbed API queues responses). The default polls ``hit_status``, which is
all a platform with its own workforce needs. A crowd without money implements
:meth:`~CrowdBackendConformance.bonuses_paid`, and a platform that draws a few workers out of a
large crowd overrides :meth:`~CrowdBackendConformance.make_batch_for_everyone`.

The end of this module builds test projects from values (:func:`digits_project`,
:func:`write_project`), for the tests of lsun-crowd and of its plugins.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from lsun_crowd import toml_writer
from lsun_crowd.config import CONFIG_FILE, Config, load_config
from lsun_crowd.crowd import (
    NO,
    YES,
    AlreadyApproved,
    Assignment,
    AssignmentStatus,
    CrowdBackend,
    HitBatch,
    HitItem,
    HitSpec,
    HitState,
    QualificationTest,
    decode_choices,
    encode_choices,
)

if TYPE_CHECKING:
    import numpy as np

CONFORMANCE_CATEGORY = "conformance"


def conformance_uri(number: int) -> str:
    """The image URIs the suite publishes; truth for them is: even numbers are positive."""
    return f"/conformance/images/{number:04d}.png"


CONFORMANCE_GROUP = "conformance-group"
CONFORMANCE_LABELS = ("even", "odd", "multiple of three")
"""The categories of the suite's multi-label batch; an image may show two of them."""


def conformance_truth(uri: str, category: str) -> bool:
    """Whether a conformance image shows ``category``: one of :data:`CONFORMANCE_LABELS`, or for
    the binary batches' category, whether its number is even."""
    if category in CONFORMANCE_LABELS:
        return category in conformance_labels(uri)
    return int(Path(uri).stem) % 2 == 0


def conformance_labels(uri: str) -> frozenset[str]:
    """The categories a conformance image shows, by its number: even or odd, and a multiple of three."""
    number = int(Path(uri).stem)
    return frozenset({"even" if number % 2 == 0 else "odd"} | ({"multiple of three"} if number % 3 == 0 else set()))


class CrowdBackendConformance:
    """Subclass and implement :meth:`make_backend`; every ``test_*`` here then runs on your adapter."""

    hits_per_batch = 3
    items_per_hit = 4
    assignments_per_hit = 2
    max_polls = 200

    def make_backend(self, tmp_path: Path) -> CrowdBackend:
        raise NotImplementedError("return the adapter under test")

    def complete_work(self, backend: CrowdBackend, hit_ids: Sequence[str]) -> None:
        """Wait until no HIT is open any more."""
        for _ in range(self.max_polls):
            if all(status.state != HitState.OPEN for status in backend.hit_status(hit_ids)):
                return
        raise AssertionError(f"HITs still open after {self.max_polls} polls")

    def bonuses_paid(self, backend: CrowdBackend, worker_id: str) -> list[Decimal] | None:
        """The bonuses the platform has recorded for the worker, one amount per bonus, as the
        suite's only view of bonuses on a crowd without money (``balance()`` is ``None``);
        ``None`` where the platform does not say. Read the adapter's state or the fake's calls."""
        return None

    def bonus_charge(self, amount: Decimal) -> Decimal:
        """What paying one bonus of ``amount`` takes from the balance: the bonus, and the
        platform's fee on it where it charges one (MTurk's 20%: override with
        :func:`lsun_crowd.fees.bonus_fee`)."""
        return amount

    def make_batch_for_everyone(self, backend: CrowdBackend, batch_id: str) -> HitBatch:
        """A batch that any worker who worked before and is not excluded by the adapter takes part
        in, so that who is missing from it was kept out. The default batch does where
        :meth:`complete_work` lets the same few workers work in the same order each time; a
        platform that draws a few workers out of a large crowd asks for more assignments."""
        return self.make_batch(batch_id)

    def make_batch(self, batch_id: str = "conformance-batch-1") -> HitBatch:
        hits = tuple(
            HitSpec(
                f"h{h}",
                tuple(
                    HitItem(str(h * 100 + i), conformance_uri(h * self.items_per_hit + i))
                    for i in range(self.items_per_hit)
                ),
            )
            for h in range(self.hits_per_batch)
        )
        return HitBatch(
            batch_id, CONFORMANCE_CATEGORY, "Is this image positive?", hits, self.assignments_per_hit, Decimal("0.05")
        )

    def make_multi_label_batch(self, batch_id: str = "conformance-multi-label") -> HitBatch:
        """A multi-label batch: one image per HIT, asking all of :data:`CONFORMANCE_LABELS` at once."""
        hits = tuple(
            HitSpec(f"m{h}", (HitItem(str(700 + h), conformance_uri(60 + h)),)) for h in range(self.hits_per_batch)
        )
        return HitBatch(
            batch_id,
            CONFORMANCE_GROUP,
            "Which of these does the image show?",
            hits,
            self.assignments_per_hit,
            Decimal("0.05"),
            categories=CONFORMANCE_LABELS,
        )

    def make_qualification(self, test_id: str, inverted: bool = False) -> QualificationTest:
        """A test on the suite's own images; ``inverted`` keys every answer wrong, so that a worker
        who sees the images as they are fails it."""
        items = tuple(HitItem(f"q{i}", conformance_uri(50 + i)) for i in range(6))
        answers = {item.item_key: YES if conformance_truth(item.uri, "") != inverted else NO for item in items}
        return QualificationTest(test_id, "Is this image positive?", items, answers, pass_mark=5 / 6)

    @pytest.fixture
    def backend(self, tmp_path: Path) -> CrowdBackend:
        return self.make_backend(tmp_path)

    def _published_assignments(self, backend: CrowdBackend) -> tuple[HitBatch, list[str], list[Assignment]]:
        batch = self.make_batch()
        hit_ids = [hit.hit_id for hit in backend.publish(batch)]
        self.complete_work(backend, hit_ids)
        assignments = [a for hit_id in hit_ids for a in backend.list_assignments(hit_id)]
        assert assignments, "no assignment arrived: the suite needs at least one submitted assignment"
        return batch, hit_ids, assignments

    def test_backend_implements_the_protocol(self, backend: CrowdBackend) -> None:
        assert isinstance(backend, CrowdBackend)
        assert isinstance(backend.name, str) and backend.name

    def test_publish_returns_one_hit_per_spec(self, backend: CrowdBackend) -> None:
        batch = self.make_batch()
        published = backend.publish(batch)
        assert [hit.hit_key for hit in published] == [spec.hit_key for spec in batch.hits]
        assert len({hit.hit_id for hit in published}) == len(batch.hits)

    def test_publish_is_idempotent_by_batch_id(self, backend: CrowdBackend) -> None:
        batch = self.make_batch()
        first = backend.publish(batch)
        balance = backend.balance()
        again = backend.publish(batch)
        assert again == first
        assert backend.balance() == balance, "re-publishing must not charge again"
        other = backend.publish(self.make_batch("conformance-batch-2"))
        assert {hit.hit_id for hit in other}.isdisjoint(hit.hit_id for hit in first)

    def test_assignments_answer_every_item(self, backend: CrowdBackend) -> None:
        batch, hit_ids, assignments = self._published_assignments(backend)
        items_by_hit = {
            hit_id: {item.item_key for item in spec.items} for hit_id, spec in zip(hit_ids, batch.hits, strict=True)
        }
        for assignment in assignments:
            assert assignment.hit_id in items_by_hit
            assert set(assignment.answers) == items_by_hit[assignment.hit_id]
            assert set(assignment.answers.values()) <= {YES, NO}
            assert assignment.worker_id
            assert assignment.submitted_at >= assignment.accepted_at
        assert len({a.assignment_id for a in assignments}) == len(assignments)

    def test_multi_label_answers_name_the_categories_ticked(self, backend: CrowdBackend) -> None:
        batch = self.make_multi_label_batch()
        hit_ids = [hit.hit_id for hit in backend.publish(batch)]
        self.complete_work(backend, hit_ids)
        images = {hit_id: spec.items[0] for hit_id, spec in zip(hit_ids, batch.hits, strict=True)}
        assignments = [a for hit_id in hit_ids for a in backend.list_assignments(hit_id)]
        assert assignments, "no assignment arrived on the multi-label batch"
        exact = 0
        for assignment in assignments:
            image = images[assignment.hit_id]
            assert set(assignment.answers) == {image.item_key}, "a multi-label HIT is answered for its one image"
            # Every answer is encode_choices() of the categories ticked; anything else raises here.
            chosen = decode_choices(assignment.answers[image.item_key], batch.categories)
            assert assignment.answers[image.item_key] == encode_choices(chosen), "answers are written canonically"
            exact += chosen == conformance_labels(image.uri)
        # The images show one or two categories; careful workers name exactly those.
        assert exact >= len(assignments) / 2, f"only {exact} of {len(assignments)} answers named the image's categories"

    def test_hit_status_counts_submitted_work(self, backend: CrowdBackend) -> None:
        _, hit_ids, assignments = self._published_assignments(backend)
        for status in backend.hit_status(hit_ids):
            assert status.requested == self.assignments_per_hit
            assert status.submitted == sum(a.hit_id == status.hit_id for a in assignments)
            assert status.submitted <= status.requested

    def test_one_worker_submits_a_hit_once(self, backend: CrowdBackend) -> None:
        _, hit_ids, assignments = self._published_assignments(backend)
        for hit_id in hit_ids:
            workers = [a.worker_id for a in assignments if a.hit_id == hit_id]
            assert len(workers) == len(set(workers))

    def test_listing_is_stable(self, backend: CrowdBackend) -> None:
        _, hit_ids, assignments = self._published_assignments(backend)
        again = [a for hit_id in hit_ids for a in backend.list_assignments(hit_id)]
        assert [a.assignment_id for a in again] == [a.assignment_id for a in assignments]
        assert [dict(a.answers) for a in again] == [dict(a.answers) for a in assignments]

    def test_approve_and_reject_are_idempotent(self, backend: CrowdBackend) -> None:
        _, hit_ids, assignments = self._published_assignments(backend)
        approved = assignments[0]
        backend.approve(approved.assignment_id, "thanks")
        backend.approve(approved.assignment_id, "thanks")
        statuses = {a.assignment_id: a.status for hit_id in hit_ids for a in backend.list_assignments(hit_id)}
        assert statuses[approved.assignment_id] == AssignmentStatus.APPROVED
        if len(assignments) > 1:
            rejected = assignments[1]
            backend.reject(rejected.assignment_id, "too many wrong answers on check images")
            backend.reject(rejected.assignment_id, "too many wrong answers on check images")
            statuses = {a.assignment_id: a.status for hit_id in hit_ids for a in backend.list_assignments(hit_id)}
            assert statuses[rejected.assignment_id] == AssignmentStatus.REJECTED
        # Approved work cannot be rejected any more, and says so the same way on every platform.
        with pytest.raises(AlreadyApproved):
            backend.reject(approved.assignment_id, "changed our mind")

    def test_bonus_is_paid_once_per_token(self, backend: CrowdBackend) -> None:
        _, _, assignments = self._published_assignments(backend)
        target = assignments[0]
        balance = backend.balance()
        paid = self.bonuses_paid(backend, target.worker_id)
        assert balance is not None or paid is not None, (
            "a crowd without money (balance() is None) must implement bonuses_paid(), or nothing shows "
            "whether a bonus was paid once, twice or never"
        )
        for _ in range(2):
            backend.pay_bonus(target.worker_id, target.assignment_id, Decimal("0.25"), "careful work", "bonus-1")
        self._check_bonuses(backend, target.worker_id, balance, paid, [Decimal("0.25")])
        # Another token is another bonus, even of the same amount for the same work.
        backend.pay_bonus(target.worker_id, target.assignment_id, Decimal("0.25"), "careful work", "bonus-2")
        self._check_bonuses(backend, target.worker_id, balance, paid, [Decimal("0.25")] * 2)

    def _check_bonuses(
        self,
        backend: CrowdBackend,
        worker_id: str,
        balance_before: Decimal | None,
        paid_before: list[Decimal] | None,
        new: list[Decimal],
    ) -> None:
        balance = backend.balance()
        if balance_before is not None and balance is not None:
            charged = sum((self.bonus_charge(amount) for amount in new), Decimal(0))
            assert balance_before - balance == charged, "the balance shows a bonus paid more or less than once"
        if paid_before is not None:
            paid = self.bonuses_paid(backend, worker_id)
            assert paid is not None and sorted(paid) == sorted([*paid_before, *new]), (
                f"bonuses recorded for {worker_id}: {paid}, expected {sorted([*paid_before, *new])}"
            )

    def test_a_blocked_worker_gets_no_work_until_unblocked(self, backend: CrowdBackend) -> None:
        _, _, assignments = self._published_assignments(backend)
        worker = assignments[0].worker_id
        for _ in range(2):  # blocking twice is blocking once
            backend.block_worker(worker, "failed gold items")
        while_blocked = self._workers_on(backend, self.make_batch_for_everyone(backend, "conformance-blocked"))
        assert while_blocked, "nobody worked on the batch published after the block, so it shows nothing"
        assert worker not in while_blocked, f"blocked worker {worker} got new work"
        for _ in range(2):
            backend.unblock_worker(worker, "appeal accepted")
        after = self._workers_on(backend, self.make_batch_for_everyone(backend, "conformance-unblocked"))
        assert worker in after, f"worker {worker} got no work after being unblocked (others did: {sorted(after)})"

    def test_excluded_workers_never_work_on_their_hit(self, backend: CrowdBackend) -> None:
        _, _, assignments = self._published_assignments(backend)
        worker = assignments[0].worker_id
        batch = self.make_batch_for_everyone(backend, "conformance-excluded")
        first, *others = batch.hits
        batch = replace(batch, hits=(replace(first, excluded_workers=frozenset({worker})), *others))
        hit_ids = [hit.hit_id for hit in backend.publish(batch)]
        assert backend.publish(batch) == backend.publish(batch), "publishing with exclusions must stay idempotent"
        self.complete_work(backend, hit_ids)
        on_first = {a.worker_id for a in backend.list_assignments(hit_ids[0])}
        on_others = {a.worker_id for hit_id in hit_ids[1:] for a in backend.list_assignments(hit_id)}
        assert on_first, "nobody worked on the HIT with an exclusion, so it shows nothing"
        assert worker not in on_first, f"excluded worker {worker} worked on the HIT that excludes them"
        assert worker in on_others, (
            f"worker {worker}, excluded from one HIT only, got none of the batch's other HITs: an exclusion "
            f"keeps a worker off that HIT, it is no block (others did work: {sorted(on_others)})"
        )

    def _workers_on(self, backend: CrowdBackend, batch: HitBatch) -> set[str]:
        hit_ids = [hit.hit_id for hit in backend.publish(batch)]
        self.complete_work(backend, hit_ids)
        return {a.worker_id for hit_id in hit_ids for a in backend.list_assignments(hit_id)}

    def test_expire_closes_open_hits(self, backend: CrowdBackend) -> None:
        hit_ids = [hit.hit_id for hit in backend.publish(self.make_batch())]
        backend.expire(hit_ids)
        assert all(status.state != HitState.OPEN for status in backend.hit_status(hit_ids))
        submitted = [a for hit_id in hit_ids for a in backend.list_assignments(hit_id)]
        assert all(a.status == AssignmentStatus.SUBMITTED for a in submitted)

    def test_estimate_covers_rewards_and_balance_is_money(self, backend: CrowdBackend) -> None:
        batch = self.make_batch()
        estimate = backend.estimate_cost(batch)
        rewards = batch.reward_per_assignment * batch.assignments_per_hit * len(batch.hits)
        assert estimate.rewards == rewards
        assert estimate.fees >= 0 and estimate.total == estimate.rewards + estimate.fees
        balance = backend.balance()
        assert balance is None or isinstance(balance, Decimal)

    @pytest.mark.parametrize("inverted", [False, True], ids=["answer-key", "inverted-key"])
    def test_qualification_test_gates_work(self, backend: CrowdBackend, inverted: bool) -> None:
        test = self.make_qualification(f"conformance-test-{inverted}", inverted)
        batch = replace(self.make_batch(f"conformance-qualified-{inverted}"), qualification=test)
        hit_ids = [hit.hit_id for hit in backend.publish(batch)]
        self.complete_work(backend, hit_ids)
        results = {result.worker_id: result for result in backend.qualification_results(test.test_id)}
        for result in results.values():
            assert result.total == len(test.items)
            assert result.passed == (result.correct >= test.needed)
        workers = {a.worker_id for hit_id in hit_ids for a in backend.list_assignments(hit_id)}
        assert all(worker in results and results[worker].passed for worker in workers), (
            "work came from a worker who did not pass the qualification test"
        )
        assert backend.qualification_results("conformance-test-never-published") == []


# -- test projects built from values ------------------------------------------------------------
#
# A test states the settings it needs as values laid over the demo's, instead of editing the
# demo's TOML text, where a pattern that no longer matches silently changes nothing: every file
# written here is loaded back, and the configuration models forbid unknown keys.


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Final = _Remove()
"""An override that deletes its key, e.g. ``{"crowd": {"settings": {"truth_file": REMOVE}}}``."""


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: tables merge key by key, any other value replaces
    the old one, and :data:`REMOVE` deletes the key. Neither argument is changed."""
    merged = {name: _copy_tables(value) for name, value in base.items()}
    for name, value in (overrides or {}).items():
        if value is REMOVE:
            merged.pop(name, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = merge_config(merged[name], value)
        else:
            merged[name] = merge_config({}, value) if isinstance(value, Mapping) else value
    return merged


def _copy_tables(value: Any) -> Any:
    return {name: _copy_tables(item) for name, item in value.items()} if isinstance(value, Mapping) else value


def write_project(directory: Path, config: Mapping[str, Any] | Config) -> Config:
    """Write ``directory/lsun-crowd.toml`` from values (or a :class:`Config`) and load it back, so
    that an unknown key or a bad value fails here with :class:`ConfigError` naming the field."""
    values = config.model_dump(mode="python") if isinstance(config, Config) else config
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(toml_writer.dumps(values), encoding="utf-8")
    return load_config(directory)


def update_project(directory: Path, overrides: Mapping[str, Any]) -> Config:
    """Lay ``overrides`` over the project's configuration file and write it back, checked."""
    current = tomllib.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    return write_project(directory, merge_config(current, overrides))


def edit_init_config(directory: Path, changes: Mapping[str, str]) -> None:
    """Change lines of the file ``lsun-crowd init`` wrote, as a user would in an editor (its
    comments kept): each ``old`` text, which must be there, becomes ``new`` once."""
    path = directory / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    for old, new in changes.items():
        if old not in text:
            raise ValueError(f"{path}: lsun-crowd init no longer writes {old!r}")
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")


def digits_config(
    seed: int = 0,
    digits: range = range(10),
    *,
    sample_per_round: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The values :func:`lsun_crowd.demo.demo_config` writes (a test keeps the two equal), with
    ``overrides`` merged in by :func:`merge_config`."""
    categories = [f"digit-{digit}" for digit in digits]
    # With all ten digits, every image is exactly one of them: an exclusive, exhaustive group.
    groups = (
        [{"name": "digits", "categories": categories, "exhaustive": True}] if list(digits) == list(range(10)) else []
    )
    demo = {
        "project": {
            "name": "digits-demo",
            "seed": seed,
            "categories": categories,
            **({"groups": groups} if groups else {}),
        },
        "crowd": {
            "adapter": "mock",
            "items_per_hit": 10,
            "gold_per_hit": 1,
            "reward_per_assignment": Decimal("0.02"),
            "poll_seconds": 0,
            "settings": {"seed": seed, "truth_file": "truth.csv"},
        },
        "model": {"backbone": "pixels", "image_size": 8},
        "cascade": {
            **({"sample_per_round": sample_per_round} if sample_per_round is not None else {}),
            "finish_with_humans_below": 60,
            "budget": 500,
        },
    }
    return merge_config(demo, overrides)


def digits_project(
    directory: Path,
    *,
    limit: int | None = 600,
    digits: range = range(2),
    seed: int = 0,
    sample_per_round: int = 150,
    overrides: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """A project of the demo's digit images with the simulated crowd, ingested with its gold and
    ready to run; returns each image's true digit. ``overrides`` are laid over the demo's settings."""
    # Imported here: this module is loaded by every pytest run, and these pull in the model stack.
    from lsun_crowd.demo import write_pool
    from lsun_crowd.ingest import ingest, ingest_gold
    from lsun_crowd.project import Project

    directory.mkdir(parents=True, exist_ok=True)
    targets = write_pool(directory, seed, limit, digits)
    write_project(directory, digits_config(seed, digits, sample_per_round=sample_per_round, overrides=overrides))
    project = Project.open(directory)
    try:
        ingest(project.store, [directory / "images"], directory / "downloads")
        ingest_gold(project.store, directory / "gold.csv")
    finally:
        project.close()
    return targets
