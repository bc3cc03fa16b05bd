"""Endpoints and modes, the retry policy, answers, money and worker messages."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from fake_turk import FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkError, MTurkSettings, from_settings, make_client
from lsun_crowd_mturk.adapter import CLOSURE, request_token
from lsun_crowd_mturk.answers import MalformedAnswer, answers_xml, item_answers
from lsun_crowd_mturk.question import HTML_QUESTION_LIMIT, html_question
from lsun_crowd_mturk.settings import LIVE_ENDPOINT, SANDBOX_ENDPOINT

from lsun_crowd.crowd import (
    AlreadyApproved,
    ConfirmsSpend,
    CrowdError,
    HitBatch,
    HitItem,
    HitSpec,
    PreviewsHits,
    QualificationTest,
)
from lsun_crowd.fees import assignment_fee
from lsun_crowd.render import TemplateError, render_grid

URLS = MTurkSettings(image_root="/img", image_url_prefix="https://images.example.org")


def crowd_with(turk: FakeTurk, settings: MTurkSettings = URLS) -> tuple[MTurkCrowd, list[float]]:
    waits: list[float] = []
    return MTurkCrowd(Api(turk.client, settings, sleep=waits.append), settings, "proj"), waits


def batch(batch_id: str = "proj:cat:r1", hits: int = 2, items: int = 3, assignments: int = 3) -> HitBatch:
    specs = tuple(
        HitSpec(f"h{h}", tuple(HitItem(str(h * 10 + i), f"/img/{h * 10 + i}.png") for i in range(items)))
        for h in range(hits)
    )
    return HitBatch(batch_id, "cat", "Does the image show: cat?", specs, assignments, Decimal("0.05"))


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ENDPOINT_URL_MTURK", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_sandbox_is_the_default_and_an_override_always_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MTurkSettings().endpoint() == SANDBOX_ENDPOINT
    assert MTurkSettings(live=True).endpoint() == LIVE_ENDPOINT
    assert MTurkSettings().preview_url("T1") == "https://workersandbox.mturk.com/mturk/preview?groupId=T1"
    assert MTurkSettings(live=True).preview_url("T1") == "https://worker.mturk.com/mturk/preview?groupId=T1"
    assert MTurkSettings(live=True).submit_url() == "https://www.mturk.com/mturk/externalSubmit"
    monkeypatch.setenv("AWS_ENDPOINT_URL_MTURK", "http://127.0.0.1:9324")
    assert MTurkSettings(live=True).endpoint() == "http://127.0.0.1:9324"
    assert MTurkSettings(endpoint_url="http://localhost:1").endpoint() == "http://localhost:1"
    client = make_client(MTurkSettings())
    assert client.meta.endpoint_url == "http://127.0.0.1:9324"
    assert client.meta.config.retries["total_max_attempts"] == 1  # the one retry policy is ours


def test_live_needs_a_confirmation_and_settings_are_checked(tmp_path: Path) -> None:
    assert from_settings({"live": True}, tmp_path).spend_confirmed is False  # built, but it publishes nothing
    sandbox, _ = crowd_with(FakeTurk())
    turk = FakeTurk()
    live, _ = crowd_with(turk, URLS.model_copy(update={"live": True}))
    assert isinstance(sandbox, ConfirmsSpend) and sandbox.spend_confirmation() is None
    # Live MTurk names its closure (AWS's notice) before it asks for money; a server of your own does not.
    assert live.spend_confirmation() == f"live Mechanical Turk ({CLOSURE}): real money"
    assert "30 September 2026" in CLOSURE
    with pytest.raises(CrowdError, match="live Mechanical Turk spends real money: nothing is published until"):
        live.publish(batch())
    with pytest.raises(CrowdError, match="until the spend is confirmed"):
        live.pay_bonus("W1", "A1", Decimal("0.10"), "thanks", "token-1")
    assert turk.count("CreateHITWithHITType") == 0 and turk.count("SendBonus") == 0
    live.confirm_spend()
    assert len(live.publish(batch())) == 2 and turk.count("CreateHITWithHITType") == 2
    local, _ = crowd_with(FakeTurk(), URLS.model_copy(update={"live": True, "endpoint_url": "http://localhost:9"}))
    assert local.spend_confirmation() == "live Mechanical Turk at http://localhost:9: real money"
    with pytest.raises(CrowdError, match=r"crowd.settings.block: Input should be 'soft' or 'hard'"):
        from_settings({"block": "sometimes"}, tmp_path)
    assert from_settings({}, tmp_path).settings.endpoint() == SANDBOX_ENDPOINT


def test_throttling_faults_and_lost_connections_are_retried_with_backoff() -> None:
    turk = FakeTurk(balance=Decimal("12.34"))
    turk.faults = [
        ("GetAccountBalance", "ThrottlingException"),
        ("GetAccountBalance", "ServiceFault"),
        ("GetAccountBalance", "connection"),
    ]
    crowd, waits = crowd_with(turk)
    assert crowd.balance() == Decimal("12.34")
    assert turk.count("GetAccountBalance") == 4
    assert len(waits) == 3 and all(0 <= wait <= 30 for wait in waits)


def test_retries_are_bounded() -> None:
    turk = FakeTurk()
    turk.faults = [("GetAccountBalance", "ThrottlingException")] * 10
    crowd, waits = crowd_with(turk, MTurkSettings(max_attempts=3))
    with pytest.raises(MTurkError, match="GetAccountBalance: ThrottlingException"):
        crowd.balance()
    assert turk.count("GetAccountBalance") == 3 and len(waits) == 2


def test_request_and_validation_errors_are_not_retried() -> None:
    turk = FakeTurk()
    crowd, waits = crowd_with(turk)
    with pytest.raises(MTurkError, match="GetHIT: RequestError: Hit NOSUCHHIT does not exist"):
        crowd.hit_status(["NOSUCHHIT"])
    assert turk.count("GetHIT") == 1 and waits == []
    with pytest.raises(MTurkError, match=r"(?s)ParamValidationError.*HITId"):
        crowd.api.call("GetHIT")  # refused by the service model before anything is sent
    assert turk.count("GetHIT") == 1 and waits == []


def test_fees_follow_mturk_and_the_estimate_adds_them() -> None:
    assert assignment_fee(Decimal("0.05"), 3) == Decimal("0.01")
    assert assignment_fee(Decimal("0.02"), 3) == Decimal("0.01")  # MTurk's minimum fee
    assert assignment_fee(Decimal("0.50"), 9) == Decimal("0.10")
    assert assignment_fee(Decimal("0.50"), 10) == Decimal("0.20")  # 20% more from 10 assignments
    estimate = crowd_with(FakeTurk())[0].estimate_cost(batch(hits=4, assignments=10))
    assert (estimate.rewards, estimate.fees) == (Decimal("2.00"), Decimal("0.80"))


def test_published_hits_carry_their_batch_and_a_stable_token() -> None:
    turk = FakeTurk()
    crowd, _ = crowd_with(turk)
    first = crowd.publish(batch())
    assert turk.count("ListHITs") == 0  # a first publish reads nothing of the account
    # Published again (a resumed run): MTurk refuses both tokens, and one search finds the HITs.
    assert crowd.publish(batch()) == first and len(turk.hits) == 2
    assert turk.count("CreateHITWithHITType") == 4 and turk.count("ListHITs") == 1
    created = [params for name, params in turk.calls if name == "CreateHITWithHITType"][:2]
    assert [p["RequesterAnnotation"] for p in created] == ["proj:cat:r1|h0", "proj:cat:r1|h1"]
    assert [p["UniqueRequestToken"] for p in created] == [request_token("proj:cat:r1", h) for h in ("h0", "h1")]
    assert all(len(p["UniqueRequestToken"]) <= 64 and p["MaxAssignments"] == 3 for p in created)
    assert "https://images.example.org/10.png" in created[1]["Question"]


def test_local_images_without_a_url_prefix_are_refused_clearly() -> None:
    crowd, _ = crowd_with(FakeTurk(), MTurkSettings())
    with pytest.raises(CrowdError, match=r"image 0: /img/0.png is not an http\(s\) URL.*image_url_prefix"):
        crowd.publish(batch())


def test_a_hit_over_mturks_size_limit_is_refused_before_publishing() -> None:
    assert len(html_question("x" * 1000)) < HTML_QUESTION_LIMIT
    with pytest.raises(TemplateError, match="over MTurk's limit of 65,535.*items_per_hit"):
        html_question("x" * HTML_QUESTION_LIMIT)
    assert "]]]]><![CDATA[>" in html_question("a]]>b")  # content cannot end the CDATA section early
    many = batch(hits=1, items=400)
    shown = crowd_with(FakeTurk())[0].preview(many)  # a preview reports the size instead of refusing
    assert shown.size is not None and shown.size > HTML_QUESTION_LIMIT == shown.limit
    assert "over MTurk's limit" in shown.note
    with pytest.raises(TemplateError, match="over MTurk's limit"):
        crowd_with(FakeTurk())[0].publish(many)


def test_the_default_grid_stays_under_mturks_limit_with_long_urls() -> None:
    # The default grid (10 images) with image URLs far longer than any CDN's (300 characters).
    items = [
        HitItem(str(1_000_000 + n), "https://images.example.org/" + "d" * 260 + f"/{n:06d}.jpg") for n in range(10)
    ]
    question = html_question(render_grid("Does the image show: living room?", items, "https://x.org/s", "x" * 500))
    assert len(question) < 12_000 < HTML_QUESTION_LIMIT
    many = [HitItem(str(n), "https://images.example.org/" + "d" * 260 + f"/{n}.jpg") for n in range(200)]
    with pytest.raises(TemplateError, match="over MTurk's limit of 65,535.*items_per_hit"):
        html_question(render_grid("q?", many, "/s"))  # too big a grid is refused, never truncated


def test_the_preview_is_the_question_mturk_gets() -> None:
    turk = FakeTurk()
    crowd, _ = crowd_with(turk, URLS.model_copy(update={"frame_height": 640}))
    assert isinstance(crowd, PreviewsHits)
    shown = crowd.preview(batch(hits=1))
    crowd.publish(batch(hits=1))
    (question,) = [params["Question"] for name, params in turk.calls if name == "CreateHITWithHITType"]
    assert shown.size == len(question) and shown.limit == HTML_QUESTION_LIMIT and shown.html in question
    assert "<FrameHeight>640</FrameHeight>" in question and shown.note == "MTurk's HTMLQuestion, sandbox"


def test_answers_are_read_back_and_malformed_ones_are_rejected_and_listed_without_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    xml = answers_xml({"assignmentId": "A", "item-12": "yes", "item-13": "NO"})
    assert item_answers(xml) == {"12": "yes", "13": "no"}
    assert item_answers(xml, expected=["12", "13"]) == {"12": "yes", "13": "no"}
    with pytest.raises(MalformedAnswer, match=r"^image 3 of 3 was not answered$"):
        item_answers(xml, expected=["12", "13", "14"])
    with pytest.raises(MalformedAnswer, match="'item-12': answer 'maybe'"):
        item_answers(answers_xml({"item-12": "maybe"}))
    with pytest.raises(MalformedAnswer, match="not XML"):
        item_answers("<QuestionFormAnswers><Answer>")

    turk = FakeTurk()
    crowd, _ = crowd_with(turk)
    (hit,) = crowd.publish(batch(hits=1))
    good = turk.work(hit.hit_id, "A1GOOD")
    bad = turk.work(hit.hit_id, "A2BAD", raw=answers_xml({"item-0": "perhaps"}))
    with caplog.at_level(logging.WARNING):
        listed = crowd.list_assignments(hit.hit_id)
    assert [a.assignment_id for a in listed] == sorted([good, bad])  # the store accounts for both
    by_id = {a.assignment_id: a for a in listed}
    assert by_id[good].answers == {"0": "yes", "1": "yes", "2": "yes"}
    assert by_id[bad].answers == {} and by_id[bad].status == "rejected"  # no vote from it
    assert f"assignment {bad}" in caplog.text and "'perhaps'" in caplog.text
    assert turk.assignments[bad]["AssignmentStatus"] == "Rejected"


def test_reviews_blocks_and_messages_are_idempotent_and_batched() -> None:
    turk = FakeTurk()
    crowd, _ = crowd_with(turk, MTurkSettings(block="hard", image_root="/img", image_url_prefix="https://i.org"))
    (hit,) = crowd.publish(batch(hits=1))
    assignment = turk.work(hit.hit_id, "A1")
    assert assignment is not None
    crowd.approve(assignment, "thanks")
    crowd.approve(assignment, "thanks")  # MTurk refuses; the adapter sees it approved already
    with pytest.raises(AlreadyApproved, match="approved already.*status of: Submitted"):
        crowd.reject(assignment, "too late")
    crowd.block_worker("A1", "gold")
    crowd.block_worker("A1", "gold")
    assert turk.hard_blocks == {"A1"} and turk.count("CreateWorkerBlock") == 2
    crowd.unblock_worker("A1", "appeal")
    assert turk.hard_blocks == set()
    workers = [f"W{n:04d}" for n in range(250)]
    crowd.notify(workers, "New HITs", "More images to label this week.")
    assert turk.count("NotifyWorkers") == 3 and turk.notified == workers
    with pytest.raises(CrowdError, match="bonus_limit"):
        crowd.pay_bonus("A1", assignment, Decimal("50"), "generous", "big-bonus")


def test_hits_expire_extend_and_delete_when_mturk_allows() -> None:
    turk = FakeTurk()
    crowd, _ = crowd_with(turk)
    (hit,) = crowd.publish(batch(hits=1))
    assert crowd.delete(hit.hit_id) is False  # still assignable
    crowd.extend(hit.hit_id, 3600)
    assert turk.hits[hit.hit_id]["Expiration"] > turk.now
    crowd.expire([hit.hit_id])
    assert crowd.hit_status([hit.hit_id])[0].state == "expired"
    assert crowd.delete(hit.hit_id) is True
    assert turk.hits[hit.hit_id]["HITStatus"] == "Disposed"


def test_the_qualification_test_is_mturks_own_auto_graded_kind() -> None:
    turk = FakeTurk()
    crowd, _ = crowd_with(turk)
    items = tuple(HitItem(str(n), f"/img/{n}.png") for n in range(5))
    test = QualificationTest(
        "proj:cat:qualification",
        "Does the image show: cat?",
        items,
        {str(n): "yes" if n % 2 == 0 else "no" for n in range(5)},
        pass_mark=0.8,
    )
    (hit,) = crowd.publish(replace(batch(hits=1), qualification=test))
    requirement = turk.hit_types[turk.hits[hit.hit_id]["HITTypeId"]]["QualificationRequirements"][-1]
    # The value is the number of right answers (no percentage): 4 of 5 at 0.8.
    assert requirement["Comparator"] == "GreaterThanOrEqualTo" and requirement["IntegerValues"] == [4]
    kind = turk.qualification_types[requirement["QualificationTypeId"]]
    assert (
        kind["Name"] == "lsun-crowd test proj:cat:qualification" and "https://images.example.org/4.png" in kind["Test"]
    )

    def truthful(worker: str, url: str) -> str:
        return "yes" if int(url.rsplit("/", 1)[1].split(".")[0]) % 2 == 0 else "no"

    assert turk.work(hit.hit_id, "A1KNOWS", truthful) is not None
    assert turk.work(hit.hit_id, "A2GUESSES", lambda worker, url: "yes") is None  # 3 of 5 right
    results = {r.worker_id: r for r in crowd.qualification_results(test.test_id)}
    assert (results["A1KNOWS"].correct, results["A1KNOWS"].passed) == (5, True)
    assert (results["A2GUESSES"].correct, results["A2GUESSES"].total, results["A2GUESSES"].passed) == (3, 5, False)
    # A second batch with the same test reuses the qualification type.
    crowd.publish(replace(batch("proj:cat:r2", hits=1), qualification=test))
    assert turk.count("CreateQualificationType") == 2  # the block type and the test, once each
