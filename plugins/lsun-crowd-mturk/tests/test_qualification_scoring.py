"""Qualification tests over HTTP: the platform admits a worker to the HITs exactly when
``qualification_results()`` says they passed, at every test size from 3 to 20 images."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lsun_crowd_mturk import MTurkCrowd, MTurkSettings
from lsun_crowd_mturk.qualifications import answer_key
from test_over_http import crowd_over_http
from turk_server import TurkServer

from lsun_crowd.crowd import NO, YES, HitBatch, HitItem, HitSpec, QualificationTest

SETTINGS = MTurkSettings(min_approval_rate=None, min_approved_hits=None, locales=[])
MARKS = (0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9, 1.0)


def image(number: int) -> str:
    return f"https://images.example.org/test/{number}.png"


def truth(number: int) -> str:
    return YES if number % 2 == 0 else NO


def qualification(size: int, mark: float) -> QualificationTest:
    items = tuple(HitItem(f"q{number}", image(number)) for number in range(size))
    answers = {f"q{number}": truth(number) for number in range(size)}
    return QualificationTest(f"t{size}-{mark:.3f}", "Is the number even?", items, answers, mark)


def right_on_first(worker: str, url: str) -> str:
    """Worker ``Wk`` answers the first k images of the test right and the rest wrong."""
    right = int(worker[1:])
    number = int(url.rsplit("/", 1)[1].split(".")[0])
    wrong = NO if truth(number) == YES else YES
    return truth(number) if number < right else wrong


def admitted_and_passed(
    server: TurkServer, crowd: MTurkCrowd, test: QualificationTest
) -> tuple[set[str], set[str], dict[str, int]]:
    """Publish a HIT that requires ``test``, let every worker Wk (k = 0 … size) try it, and read back
    who the platform let in, who ``qualification_results()`` says passed, and their right answers."""
    size = len(test.items)
    spec = HitSpec("h", (HitItem("x", "https://images.example.org/hit/0.png"),))
    batch = HitBatch(f"b-{test.test_id}", "even", "Even?", (spec,), size + 1, Decimal("0.01"), qualification=test)
    (hit,) = crowd.publish(batch)
    workers = [f"W{right}" for right in range(size + 1)]
    admitted = {worker for worker in workers if server.work(hit.hit_id, worker, right_on_first) is not None}
    results = crowd.qualification_results(test.test_id)
    assert sorted(result.worker_id for result in results) == sorted(workers)
    assert all(result.total == size for result in results)
    return (
        admitted,
        {result.worker_id for result in results if result.passed},
        {r.worker_id: r.correct for r in results},
    )


@pytest.mark.parametrize("size", range(3, 21))
def test_the_platform_admits_exactly_the_workers_reported_as_passed(server: TurkServer, size: int) -> None:
    crowd = crowd_over_http(SETTINGS)
    for mark in MARKS:
        test = qualification(size, mark)
        admitted, passed, correct = admitted_and_passed(server, crowd, test)
        assert admitted == passed, f"{size} images at {mark}: admitted {sorted(admitted)}, passed {sorted(passed)}"
        assert passed == {f"W{right}" for right in range(test.needed, size + 1)}, (size, mark)
        assert correct == {f"W{right}": right for right in range(size + 1)}, (size, mark)


def test_a_test_scored_in_percent_by_an_earlier_version_still_agrees(server: TurkServer) -> None:
    """Types made before scores counted right answers map them to a percentage; with 6 images at
    0.8, 5 right scores 83 there, and 83 must be enough."""
    crowd = crowd_over_http(SETTINGS)
    for size, mark in ((6, 0.8), (7, 0.7), (9, 2 / 3), (12, 0.75), (3, 1.0)):
        test = qualification(size, mark)
        mapping = f"<PercentageMapping><MaximumSummedScore>{size}</MaximumSummedScore></PercentageMapping>"
        in_percent = answer_key(test).replace(
            "</AnswerKey>", f"<QualificationValueMapping>{mapping}</QualificationValueMapping></AnswerKey>"
        )
        server.turk.CreateQualificationType(
            {
                "Name": f"lsun-crowd test {test.test_id}",
                "Description": f"{test.question} {size} images; {test.needed} right to pass.",
                "QualificationTypeStatus": "Active",
                "Test": crowd.qualifications.test_form(test),
                "AnswerKey": in_percent,
                "TestDurationInSeconds": 1200,
            }
        )
        admitted, passed, _ = admitted_and_passed(server, crowd, test)
        assert admitted == passed == {f"W{right}" for right in range(test.needed, size + 1)}, (size, mark)
