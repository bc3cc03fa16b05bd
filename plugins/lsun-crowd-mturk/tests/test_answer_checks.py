"""Submissions over HTTP are read against the HIT's own images: one that leaves an image
unanswered, or answers one the HIT never showed, is rejected with feedback saying which, and
never reaches the store's votes."""

from __future__ import annotations

from decimal import Decimal

from fake_turk import field_of
from lsun_crowd_mturk import MTurkSettings
from lsun_crowd_mturk.answers import answers_xml
from test_over_http import crowd_over_http
from turk_server import TurkServer

from lsun_crowd.crowd import NO, YES, HitBatch, HitItem, HitSpec

SETTINGS = MTurkSettings(image_root="/img", image_url_prefix="https://images.example.org")


def test_a_submission_missing_an_image_or_carrying_a_foreign_one_is_rejected_with_reasons(server: TurkServer) -> None:
    crowd = crowd_over_http(SETTINGS)
    items = tuple(HitItem(f"k{number}", f"/img/{number}.png") for number in range(4))
    batch = HitBatch("proj#1:cat:r1", "cat", "Is it a cat?", (HitSpec("h0", items),), 4, Decimal("0.05"))
    (hit,) = crowd.publish(batch)
    every = {field_of(item.item_key): YES for item in items}
    complete = server.work(hit.hit_id, "WCOMPLETE", raw=answers_xml(every))
    missing = server.work(hit.hit_id, "WMISSING", raw=answers_xml({**every, field_of("k2"): ""}))
    short = {name: value for name, value in every.items() if name != field_of("k1")}
    skipped = server.work(hit.hit_id, "WSKIPPED", raw=answers_xml(short))
    foreign = server.work(hit.hit_id, "WFOREIGN", raw=answers_xml({**every, field_of("k99"): NO}))

    found = {assignment.assignment_id: assignment for assignment in crowd.list_assignments(hit.hit_id)}
    assert sorted(found) == sorted([complete, missing, skipped, foreign])  # as many as MTurk counts
    assert found[complete].answers == {item.item_key: YES for item in items}
    assert all(found[bad].answers == {} and found[bad].status == "rejected" for bad in (missing, skipped, foreign))
    rows = server.turk.assignments
    assert rows[complete]["AssignmentStatus"] == "Submitted"  # the core reviews it, on its merits
    for bad in (missing, skipped, foreign):
        assert rows[bad]["AssignmentStatus"] == "Rejected"
    assert "Image 3 of 4 was not answered" in rows[missing]["RequesterFeedback"]
    assert "Image 2 of 4 was not answered" in rows[skipped]["RequesterFeedback"]
    assert "not in this HIT: k99" in rows[foreign]["RequesterFeedback"]
    # Listing again changes nothing: rejected work stays rejected and out of the votes.
    again = crowd.list_assignments(hit.hit_id)
    assert [a.assignment_id for a in again if a.answers] == [complete] and len(again) == 4
    assert server.turk.count("RejectAssignment") == 3


def test_a_multi_label_submission_for_another_image_is_rejected(server: TurkServer) -> None:
    crowd = crowd_over_http(SETTINGS)
    spec = HitSpec("m0", (HitItem("k7", "/img/7.png"),))
    batch = HitBatch("proj#1:grp:r1", "grp", "Which?", (spec,), 2, Decimal("0.05"), categories=("a", "b"))
    (hit,) = crowd.publish(batch)
    right = server.work(hit.hit_id, "WRIGHT", raw=answers_xml({"item": "k7", "label-0": "a"}))
    wrong = server.work(hit.hit_id, "WWRONG", raw=answers_xml({"item": "k8", "label-0": "a"}))
    listed = crowd.list_assignments(hit.hit_id)
    assert [a.assignment_id for a in listed if a.answers] == [right] and len(listed) == 2
    assert server.turk.assignments[wrong]["AssignmentStatus"] == "Rejected"
    assert "not in this HIT: k8" in server.turk.assignments[wrong]["RequesterFeedback"]
