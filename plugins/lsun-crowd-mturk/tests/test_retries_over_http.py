"""Retried requests over HTTP whose first answer was lost: a refusal that means "already done" is
resolved to what was done, anything else is reported, and a message goes out at most once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lsun_crowd_mturk import MTurkCrowd, MTurkError, MTurkSettings
from test_over_http import crowd_over_http
from turk_server import TurkServer

from lsun_crowd.crowd import CrowdError, HitBatch, HitItem, HitSpec

SETTINGS = MTurkSettings(image_root="/img", image_url_prefix="https://images.example.org")


def published(server: TurkServer) -> tuple[str, MTurkCrowd]:
    crowd = crowd_over_http(SETTINGS)
    spec = HitSpec("h0", (HitItem("1", "/img/1.png"), HitItem("2", "/img/2.png")))
    batch = HitBatch("proj#1:cat:r1", "cat", "Is it a cat?", (spec,), 2, Decimal("0.05"))
    (hit,) = crowd.publish(batch)
    return hit.hit_id, crowd


def test_a_lost_create_qualification_type_is_resolved_to_the_type_it_created(server: TurkServer) -> None:
    server.turk.faults = [("CreateQualificationType", "lost")]
    crowd = crowd_over_http(SETTINGS)
    type_id = crowd.qualifications.block_type()
    assert list(server.turk.qualification_types) == [type_id]  # made once, found on the refused retry
    assert server.turk.count("CreateQualificationType") == 2
    # A second process finds it by its name, without creating anything.
    assert crowd_over_http(SETTINGS).qualifications.block_type() == type_id
    assert server.turk.count("CreateQualificationType") == 2


def test_a_refused_create_qualification_type_that_is_not_a_duplicate_is_reported(server: TurkServer) -> None:
    crowd = crowd_over_http(SETTINGS)
    server.turk.faults = [("CreateQualificationType", "RequestError")]
    with pytest.raises(MTurkError) as refused:
        crowd.qualifications.block_type()
    assert str(refused.value) == "MTurk CreateQualificationType: RequestError: injected RequestError"
    assert not server.turk.qualification_types


def test_a_lost_delete_reports_the_hit_deleted(server: TurkServer) -> None:
    hit_id, crowd = published(server)
    crowd.expire([hit_id])
    server.turk.faults = [("DeleteHIT", "lost")]
    assert crowd.delete(hit_id) is True
    assert server.turk.hits[hit_id]["HITStatus"] == "Disposed" and server.turk.count("DeleteHIT") == 2
    assert crowd.delete(hit_id) is True  # deleting again: still gone


def test_a_hit_mturk_will_not_delete_yet_is_reported_not_deleted(server: TurkServer) -> None:
    hit_id, crowd = published(server)
    assert crowd.delete(hit_id) is False  # still open
    assert server.turk.hits[hit_id]["HITStatus"] == "Assignable"


def test_expiring_a_deleted_or_expired_hit_changes_nothing(server: TurkServer) -> None:
    hit_id, crowd = published(server)
    server.turk.faults = [("UpdateExpirationForHIT", "lost")]
    crowd.expire([hit_id])
    crowd.expire([hit_id])
    assert crowd.delete(hit_id) is True
    crowd.expire([hit_id])  # a deleted HIT is as expired as it gets
    assert server.turk.count("UpdateExpirationForHIT") == 4


def test_a_refused_expiry_of_a_hit_mturk_knows_is_reported_in_its_words(server: TurkServer) -> None:
    hit_id, crowd = published(server)
    server.turk.faults = [("UpdateExpirationForHIT", "RequestError")]
    with pytest.raises(MTurkError, match="^MTurk UpdateExpirationForHIT: RequestError: injected RequestError$"):
        crowd.expire([hit_id])


def test_a_notification_whose_answer_was_lost_is_not_sent_again(server: TurkServer) -> None:
    crowd = crowd_over_http(SETTINGS)
    workers = [f"W{number:03d}" for number in range(150)]
    server.turk.faults = [("NotifyWorkers", "lost")]
    with pytest.raises(CrowdError) as uncertain:
        crowd.notify(workers, "New HITs", "There is more work for you.")
    assert "may have been notified" in str(uncertain.value) and "W000" in str(uncertain.value)
    assert server.turk.notified == workers[:100]  # once; the second hundred not at all
    assert server.turk.count("NotifyWorkers") == 1


def test_a_throttled_notification_is_retried_and_sent_once(server: TurkServer) -> None:
    crowd = crowd_over_http(SETTINGS)
    server.turk.faults = [("NotifyWorkers", "ThrottlingException"), ("NotifyWorkers", "ServiceUnavailable")]
    crowd.notify(["W1", "W2"], "New HITs", "There is more work for you.")
    assert server.turk.notified == ["W1", "W2"] and server.turk.count("NotifyWorkers") == 3
