"""The adapter over real HTTP: a boto3 client pointed through ``AWS_ENDPOINT_URL_MTURK`` at the
local MTurk-compatible server (turk_server), with its ledger, simulated workers and faults."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fake_turk import BEFORE, LOST, Chaos, FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkError, MTurkSettings, make_client
from test_conformance import SETTINGS, WORKERS, answer, choose
from test_round import Workers, cascade, make_project, settings_for
from turk_server import TurkServer, point_at

from lsun_crowd.api import spent
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.fees import assignment_fee, bonus_fee
from lsun_crowd.project import Project
from lsun_crowd.testing import CrowdBackendConformance


def crowd_over_http(settings: MTurkSettings, project: str = "proj") -> MTurkCrowd:
    """The adapter as ``open_crowd`` builds it (a real client from the settings and the
    environment), with the retry policy's waits skipped."""
    return MTurkCrowd(Api(make_client(settings), settings, sleep=lambda _: None), settings, project)


def test_requests_travel_over_http_to_the_endpoint_in_the_environment(server: TurkServer) -> None:
    server.turk.faults = [("GetAccountBalance", "ThrottlingException"), ("GetAccountBalance", "ServiceUnavailable")]
    crowd = crowd_over_http(MTurkSettings())
    assert crowd.settings.endpoint() == server.url
    assert crowd.balance() == Decimal("10000.00")  # after a throttle and a 503, retried
    assert server.turk.count("GetAccountBalance") == 3
    # A refusal comes back with MTurk's code and words.
    with pytest.raises(MTurkError) as refused:
        crowd.api.call("GetHIT", HITId="NOSUCHHIT0000000000000000000000")
    assert refused.value.code == "RequestError" and "does not exist" in refused.value.detail


def test_timestamps_cross_the_wire_as_epoch_seconds(server: TurkServer) -> None:
    crowd = crowd_over_http(MTurkSettings())
    server.turk.CreateHITType({"Title": "t", "Description": "d", "Reward": "0.05"} | _type_defaults())
    hit_type = next(iter(server.turk.hit_types))
    created = crowd.api.call(
        "CreateHITWithHITType", HITTypeId=hit_type, MaxAssignments=2, LifetimeInSeconds=600, Question=_question()
    )["HIT"]
    assert created["Expiration"] == server.turk.now + timedelta(seconds=600)  # parsed back to the same instant
    crowd.extend(created["HITId"], 3600)
    expiry = server.turk.hits[created["HITId"]]["Expiration"]
    assert expiry.tzinfo is not None and expiry > server.turk.now + timedelta(seconds=3500)


def test_the_ledger_charges_rewards_fees_and_bonuses_as_mturk_does(server: TurkServer) -> None:
    crowd = crowd_over_http(MTurkSettings())
    server.turk.CreateHITType({"Title": "t", "Description": "d", "Reward": "0.07"} | _type_defaults())
    hit_type = next(iter(server.turk.hit_types))
    for assignments in (3, 10):  # 20% fee, then 40% from ten assignments on
        crowd.api.call(
            "CreateHITWithHITType",
            HITTypeId=hit_type,
            MaxAssignments=assignments,
            LifetimeInSeconds=600,
            Question=_question(),
        )
    ledger = server.turk.ledger
    assert ledger.spent("reward") == Decimal("0.07") * 13
    assert ledger.spent("fee") == Decimal("0.01") * 3 + Decimal("0.03") * 10
    assert assignment_fee(Decimal("0.07"), 10) == Decimal("0.03")
    crowd.api.call(
        "SendBonus", WorkerId="W1", BonusAmount="0.33", AssignmentId="A1", Reason="r", UniqueRequestToken="t1"
    )
    assert ledger.spent("bonus", "bonus-fee") == Decimal("0.33") + bonus_fee(Decimal("0.33")) == Decimal("0.40")
    assert (
        crowd.balance() == Decimal("10000.00") - ledger.spent() == Decimal("9998.36")
    )  # 0.91 rewards, 0.33 fees, 0.40 bonus


def test_a_lost_answer_took_effect_and_is_retried(server: TurkServer) -> None:
    crowd = crowd_over_http(MTurkSettings())
    crowd.confirm_spend()
    server.turk.faults = [("SendBonus", "lost")]
    crowd.pay_bonus("W1", "A1", Decimal("0.50"), "good", "once")
    assert server.turk.count("SendBonus") == 2  # dropped once: the retry met the used token
    server.turk.faults = [("SendBonus", "lost-500")]
    crowd.pay_bonus("W1", "A1", Decimal("0.50"), "good", "twice")
    assert server.turk.count("SendBonus") == 4  # a 500 after the bonus went out: the same
    assert server.turk.ledger.spent("bonus") == Decimal("1.00")


class TestMTurkConformanceOverHttp(CrowdBackendConformance):
    """The conformance suite, every request over HTTP to the local server."""

    @pytest.fixture(autouse=True)
    def _server(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        with TurkServer() as self.server:
            point_at(self.server, monkeypatch)
            yield

    def make_backend(self, tmp_path: Path) -> CrowdBackend:
        return crowd_over_http(SETTINGS, "conformance")

    def complete_work(self, backend: CrowdBackend, hit_ids: Sequence[str]) -> None:
        for hit_id in hit_ids:
            for worker in WORKERS:
                self.server.work(hit_id, worker, answer, choose=choose)
        with self.server.lock:
            self.server.turk.now += timedelta(days=30)  # what nobody took runs out
        super().complete_work(backend, hit_ids)

    def bonus_charge(self, amount: Decimal) -> Decimal:
        return amount + bonus_fee(amount)


def test_a_round_over_http_under_faults_ends_with_the_ledger_equal_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "project"
    targets = make_project(directory, collect_timeout=30.0)  # every HIT is taken: no wait
    # One request in five fails: throttled, unavailable, a fault, a dropped connection, or an
    # answer lost after the operation took effect, whatever the operation.
    chaos = Chaos(seed=2, rate=0.2)
    with TurkServer(FakeTurk(chaos=chaos)) as server:
        point_at(server, monkeypatch)
        server.turk.faults = [("CreateQualificationType", "lost")]  # made, and the answer lost
        crowd = crowd_over_http(settings_for(directory), "digits-demo")
        project = Project.open(directory)
        outcome = cascade(project, crowd, Workers(server.turk, targets, starve=0)).run(max_rounds=1)[0]
        assert outcome.rounds == 1
        kinds = {kind for _, kind in chaos.drawn}
        assert kinds == set(BEFORE + LOST) and len(chaos.drawn) >= 8, chaos.drawn
        assert len(server.turk.hits) == 7  # no HIT twice, whatever was lost
        assert len(server.turk.qualification_types) == 1  # the block type, once
        assert server.turk.ledger.spent() == spent(project) == Decimal("0.63"), server.turk.ledger
        assert server.turk.ledger.spent("reward") == Decimal("0.42")  # 21 assignments at 0.02
        statuses = {a["AssignmentStatus"] for a in server.turk.assignments.values()}
        assert statuses == {"Approved", "Rejected"}  # every submission reviewed
        project.close()


def _type_defaults() -> dict[str, object]:
    return {"AutoApprovalDelayInSeconds": 60, "AssignmentDurationInSeconds": 600, "QualificationRequirements": []}


def _question() -> str:
    return (
        '<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/'
        'HTMLQuestion.xsd"><HTMLContent><![CDATA[<p>hi</p>]]></HTMLContent><FrameHeight>0</FrameHeight>'
        "</HTMLQuestion>"
    )
