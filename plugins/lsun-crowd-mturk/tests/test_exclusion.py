"""Workers kept off single HITs (audits, repairs) through a qualification they must not have."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fake_turk import FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings
from test_client import URLS, batch

from lsun_crowd.crowd import HitBatch


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ENDPOINT_URL_MTURK", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)


def crowd(turk: FakeTurk, settings: MTurkSettings = URLS) -> MTurkCrowd:
    return MTurkCrowd(Api(turk.client, settings, sleep=lambda _: None), settings, "proj")


def with_exclusions(source: HitBatch, *excluded: frozenset[str]) -> HitBatch:
    hits = tuple(replace(spec, excluded_workers=kept) for spec, kept in zip(source.hits, excluded, strict=True))
    return replace(source, hits=hits)


def test_an_excluded_worker_cannot_take_the_hit_and_still_takes_others() -> None:
    turk = FakeTurk()
    kept = frozenset({"A1SEEN", "A2SEEN"})
    audit = with_exclusions(batch("proj:cat:audit", hits=3), kept, kept, frozenset())
    published = crowd(turk).publish(audit)
    kept_off = [t for t, kind in turk.qualification_types.items() if ": kept off " in kind["Name"]]
    assert len(kept_off) == 1, "one qualification type for one set of workers, however many HITs it guards"
    assert {worker for (type_id, worker) in turk.worker_scores if type_id == kept_off[0]} == kept
    first, second, third = (turk.hits[hit.hit_id] for hit in published)
    assert first["HITTypeId"] == second["HITTypeId"] != third["HITTypeId"]
    guard = {
        "QualificationTypeId": kept_off[0],
        "Comparator": "DoesNotExist",
        "ActionsGuarded": "DiscoverPreviewAndAccept",
    }
    assert guard in first["QualificationRequirements"] and guard not in third["QualificationRequirements"]
    for worker in kept:
        assert turk.work(first["HITId"], worker) is None and turk.work(second["HITId"], worker) is None
        assert turk.work(third["HITId"], worker) is not None
    assert turk.work(first["HITId"], "A3FRESH") is not None


def test_exclusions_are_granted_before_the_hit_exists_and_replay_creates_nothing() -> None:
    turk = FakeTurk()
    kept = frozenset({"A1SEEN"})
    audit = with_exclusions(batch("proj:cat:audit", hits=2), kept, frozenset())
    crowd(turk).publish(audit)
    operations = [operation for operation, _ in turk.calls]
    assert operations.index("AssociateQualificationWithWorker") < operations.index("CreateHITWithHITType")
    created = (turk.count("CreateQualificationType"), len(turk.hits))
    crowd(turk).publish(audit)  # a resumed process: another adapter, the same batch
    assert (turk.count("CreateQualificationType"), len(turk.hits)) == created
    # Another batch kept from the same worker finds the type by its name.
    crowd(turk).publish(with_exclusions(batch("proj:cat:repair", hits=1), kept))
    assert turk.count("CreateQualificationType") == created[0]
