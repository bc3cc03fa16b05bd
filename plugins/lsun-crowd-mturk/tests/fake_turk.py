"""A stateful Mechanical Turk behind botocore's Stubber, for tests that never touch the network.

Every request goes through a real boto3 ``mturk`` client, which validates its parameters against
the MTurk service model; this fake computes the answer from its state and queues it on the
Stubber, which validates the answer against the model's output shape before the client returns
it. Errors come back as the ``ClientError`` a real endpoint would cause. Simulated workers take
HITs (and qualification tests) with :meth:`FakeTurk.work`.

The same state machine answers over real HTTP in ``turk_server.TurkServer``: the operation
methods take a request's parameters and return its answer, whichever transport carried them.
Money moves through :class:`Ledger` as MTurk charges it, and faults (queued, or drawn from a
seeded :class:`Chaos`) are chosen by :meth:`FakeTurk.next_fault` for both transports.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import random
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, ParamValidationError
from botocore.stub import Stubber
from botocore.validate import ParamValidator
from lsun_crowd_mturk.answers import answers_xml
from lsun_crowd_mturk.settings import SANDBOX_ENDPOINT

from lsun_crowd.crowd import NO, YES
from lsun_crowd.fees import CENT, assignment_fee, bonus_fee
from lsun_crowd.render import FIELD_PREFIX

ITEM = re.compile(r'data-field="([^"]*)">\s*<img src="([^"]*)"')
Answerer = Callable[[str, str], str]  # (worker id, image URL) → yes | no
Chooser = Callable[[str, str, str], bool]  # (worker id, image URL, category) → ticked
# The multi-label form: its hidden item field, its image and its checkboxes (which post category names).
MULTI_ITEM = re.compile(r'<input type="hidden" name="item" value="([^"]*)">')
MULTI_IMAGE = re.compile(r'<img src="([^"]*)" alt="the image to label">')
MULTI_BOX = re.compile(r'<input type="checkbox" name="(label-\d+)" value="([^"]*)">')


# Faults a request can meet. Before the operation takes effect: throttling and unavailability
# (HTTP 400 and 503, as MTurk sends them), a service fault (500), a refused connection. After it
# took effect, the answer is lost: the connection drops, or a 500 comes back instead.
BEFORE = ("ThrottlingException", "ServiceUnavailable", "ServiceFault", "connection")
LOST = ("lost", "lost-500")


class Refused(Exception):
    def __init__(self, message: str, code: str = "RequestError") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Entry:
    kind: str  # reward | fee | bonus | bonus-fee
    reference: str  # HIT id, or the bonus's request token
    amount: Decimal


@dataclass
class Ledger:
    """The account's money: what it held, and every debit MTurk made from it."""

    opening: Decimal
    entries: list[Entry] = field(default_factory=list)

    @property
    def balance(self) -> Decimal:
        return self.opening - self.spent()

    def spent(self, *kinds: str) -> Decimal:
        return sum((e.amount for e in self.entries if not kinds or e.kind in kinds), Decimal("0.00"))

    def debit(self, reference: str, **amounts: Decimal) -> None:
        """All of ``amounts`` (kind → amount) or, when the balance cannot pay them, nothing."""
        if sum(amounts.values()) > self.balance:
            raise Refused("Your account does not have enough funds.")
        self.entries += [Entry(kind.replace("_", "-"), reference, amount) for kind, amount in amounts.items()]


@dataclass
class Chaos:
    """Faults drawn at random, reproducibly: each request to one of ``operations`` (every one when
    empty) fails with probability ``rate``, with one of ``kinds``; lost answers only where the
    operation is in ``lose`` (every one of ``operations`` when ``lose`` is None)."""

    seed: int
    rate: float
    operations: frozenset[str] = frozenset()
    kinds: tuple[str, ...] = BEFORE + LOST
    lose: frozenset[str] | None = None
    drawn: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def draw(self, operation: str) -> str | None:
        if self.operations and operation not in self.operations:
            return None
        if self.random.random() >= self.rate:
            return None
        kinds = self.kinds
        if self.lose is not None and operation not in self.lose:
            kinds = tuple(kind for kind in kinds if kind not in LOST)
        if not kinds:
            return None
        kind = self.random.choice(kinds)
        self.drawn.append((operation, kind))
        return kind


class FakeTurk:
    def __init__(self, balance: Decimal = Decimal("10000.00"), chaos: Chaos | None = None) -> None:
        self.ledger = Ledger(balance)
        self.chaos = chaos
        self.now = datetime.now(UTC).replace(microsecond=0)  # the adapter compares expiries with its clock
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.faults: list[tuple[str, str]] = []  # (operation, error code, "connection" or a LOST kind) to fail next
        self.lose_response_of: set[str] = set()  # operations that succeed but whose answer is lost once
        self.hit_types: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, dict[str, Any]] = {}
        self.items: dict[str, list[tuple[str, str]]] = {}  # HIT id → (field, image URL)
        self.multi_label: dict[str, tuple[str, str, list[tuple[str, str]]]] = {}  # HIT id → item, URL, boxes
        self.tokens: dict[str, str] = {}
        self.assignments: dict[str, dict[str, Any]] = {}
        self.qualification_types: dict[str, dict[str, Any]] = {}
        self.worker_scores: dict[tuple[str, str], int] = {}  # (type id, worker) → integer value
        self.hard_blocks: set[str] = set()
        self.bonuses: dict[str, Decimal] = {}
        self.notified: list[str] = []
        self._ids = itertools.count(1)

    @property
    def balance(self) -> Decimal:
        return self.ledger.balance

    @cached_property
    def client(self) -> Any:
        """A boto3 client whose every request this fake answers through botocore's Stubber."""
        client = boto3.client(
            "mturk",
            region_name="us-east-1",
            endpoint_url=SANDBOX_ENDPOINT,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        # Ahead of the Stubber's own check (registered first, same pattern), so that the answer
        # is queued by the time it looks.
        client.meta.events.register_first("before-parameter-build.*.*", self._respond)
        self.stubber = Stubber(client)
        self.stubber.activate()
        self._methods = {api: name for name, api in client.meta.method_to_api_mapping.items()}
        return client

    def count(self, operation: str) -> int:
        return sum(name == operation for name, _ in self.calls)

    def next_fault(self, operation: str) -> str | None:
        """The fault this request of ``operation`` meets, if any: a queued one first, then a lost
        answer asked for by ``lose_response_of``, then one drawn by the chaos."""
        for index, (name, code) in enumerate(self.faults):
            if name == operation:
                del self.faults[index]
                return code
        if operation in self.lose_response_of:
            self.lose_response_of.discard(operation)
            return "lost"
        return self.chaos.draw(operation) if self.chaos else None

    # -- the Stubber hook ---------------------------------------------------------------------

    def _respond(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        operation, method = model.name, self._methods[model.name]
        report = ParamValidator().validate(params, model.input_shape)
        if report.has_errors():
            # What the client raises a step later; raised here, where the Stubber would first
            # complain of an unexpected call.
            raise ParamValidationError(report=report.generate_report())
        self.calls.append((operation, dict(params)))
        fault = self.next_fault(operation)
        if fault == "connection":
            raise EndpointConnectionError(endpoint_url=SANDBOX_ENDPOINT)
        if fault is not None and fault not in LOST:
            status = fault_status(fault)
            self.stubber.add_client_error(method, fault, f"injected {fault}", status, expected_params=params)
            return
        try:
            response = getattr(self, operation)(params)
        except Refused as refusal:
            self.stubber.add_client_error(method, refusal.code, str(refusal), 400, expected_params=params)
            return
        if fault == "lost":
            raise EndpointConnectionError(endpoint_url=SANDBOX_ENDPOINT)  # done, but the caller never hears
        if fault == "lost-500":
            self.stubber.add_client_error(method, "ServiceFault", "injected lost answer", 500, expected_params=params)
            return
        self.stubber.add_response(method, response, expected_params=params)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}".ljust(30, "X")

    # -- account and HIT types ----------------------------------------------------------------

    def GetAccountBalance(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"AvailableBalance": str(self.balance.quantize(CENT))}

    def CreateHITType(self, params: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:30].upper()
        self.hit_types[digest] = params
        return {"HITTypeId": digest}

    # -- HITs ---------------------------------------------------------------------------------

    def CreateHITWithHITType(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("UniqueRequestToken")
        if token in self.tokens:
            raise Refused(
                "AWS.MechanicalTurk.HitAlreadyExists: There is already a HIT which exists with the same "
                f"UniqueRequestToken: {token}"
            )
        question = ElementTree.fromstring(params["Question"])  # must be well-formed XML
        content = next(child.text or "" for child in question if child.tag.endswith("HTMLContent"))
        hit_type = self.hit_types[params["HITTypeId"]]
        # MTurk takes every assignment's reward and fee from the balance when the HIT is created.
        reward, assignments = Decimal(hit_type["Reward"]), int(params["MaxAssignments"])
        hit_id = self._new_id("HIT")
        self.ledger.debit(hit_id, reward=reward * assignments, fee=assignment_fee(reward, assignments) * assignments)
        self.hits[hit_id] = {
            "HITId": hit_id,
            "HITTypeId": params["HITTypeId"],
            "HITGroupId": params["HITTypeId"],
            "CreationTime": self.now,
            "Title": hit_type["Title"],
            "Description": hit_type["Description"],
            "Question": params["Question"],
            "HITStatus": "Assignable",
            "MaxAssignments": params["MaxAssignments"],
            "Reward": hit_type["Reward"],
            "AutoApprovalDelayInSeconds": hit_type["AutoApprovalDelayInSeconds"],
            "Expiration": self.now + timedelta(seconds=params["LifetimeInSeconds"]),
            "AssignmentDurationInSeconds": hit_type["AssignmentDurationInSeconds"],
            "RequesterAnnotation": params.get("RequesterAnnotation", ""),
            "QualificationRequirements": hit_type.get("QualificationRequirements", []),
            "HITReviewStatus": "NotReviewed",
            "NumberOfAssignmentsPending": 0,
            "NumberOfAssignmentsAvailable": params["MaxAssignments"],
            "NumberOfAssignmentsCompleted": 0,
        }
        self.items[hit_id] = [(html.unescape(f), html.unescape(u)) for f, u in ITEM.findall(content)]
        key = MULTI_ITEM.search(content)
        if key is not None:
            image = MULTI_IMAGE.search(content)
            boxes = [(field, html.unescape(category)) for field, category in MULTI_BOX.findall(content)]
            self.multi_label[hit_id] = (
                html.unescape(key.group(1)),
                html.unescape(image.group(1) if image else ""),
                boxes,
            )
        if token:
            self.tokens[token] = hit_id
        return {"HIT": self.hits[hit_id]}

    def _hit(self, hit_id: str) -> dict[str, Any]:
        if hit_id not in self.hits or self.hits[hit_id]["HITStatus"] == "Disposed":  # deleted: gone from the API
            raise Refused(f"Hit {hit_id} does not exist. (1700000000000)")
        hit = self.hits[hit_id]
        if hit["Expiration"] <= self.now and hit["HITStatus"] == "Assignable":
            hit["HITStatus"] = "Reviewable"
        return hit

    def GetHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"HIT": self._hit(params["HITId"])}

    def ListHITs(self, params: dict[str, Any]) -> dict[str, Any]:
        listed = [self._hit(hit_id) for hit_id, hit in self.hits.items() if hit["HITStatus"] != "Disposed"]
        return self._page(listed, params, "HITs")

    def UpdateExpirationForHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        self._hit(params["HITId"])["Expiration"] = max(params["ExpireAt"], datetime(2015, 1, 1, tzinfo=UTC))
        return {}

    def DeleteHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        hit = self._hit(params["HITId"])
        unreviewed = [
            a for a in self.assignments.values() if a["HITId"] == hit["HITId"] and a["AssignmentStatus"] == "Submitted"
        ]
        if hit["HITStatus"] == "Assignable" or unreviewed:
            raise Refused("This HIT is currently in the state 'Assignable' or has unreviewed work.")
        hit["HITStatus"] = "Disposed"
        # What was held for assignments nobody submitted goes back to the balance.
        done = sum(a["HITId"] == hit["HITId"] for a in self.assignments.values())
        unused = int(hit["MaxAssignments"]) - done
        if unused > 0:
            reward = Decimal(self.hit_types[hit["HITTypeId"]]["Reward"])
            held = (reward + assignment_fee(reward, int(hit["MaxAssignments"]))) * unused
            self.ledger.entries.append(Entry("refund", hit["HITId"], -held))
        return {}

    # -- assignments --------------------------------------------------------------------------

    def work(
        self,
        hit_id: str,
        worker: str,
        answer: Answerer | None = None,
        raw: str | None = None,
        choose: Chooser | None = None,
    ) -> str | None:
        """``worker`` takes and submits an assignment of the HIT, if MTurk would let them; on a
        multi-label HIT they tick each category ``choose`` says the image shows (none without it)."""
        if hit_id not in self.hits or self.hits[hit_id]["HITStatus"] == "Disposed":
            return None
        hit = self._hit(hit_id)
        if hit["HITStatus"] != "Assignable" or hit["NumberOfAssignmentsAvailable"] == 0:
            return None
        if any(a["WorkerId"] == worker for a in self.assignments.values() if a["HITId"] == hit_id):
            return None
        if worker in self.hard_blocks or not self._qualified(worker, hit, answer):
            return None
        fields = {field: answer(worker, url) if answer else YES for field, url in self.items[hit_id]}
        if hit_id in self.multi_label:
            key, url, boxes = self.multi_label[hit_id]
            ticked = {field: category for field, category in boxes if choose and choose(worker, url, category)}
            fields = {"item": key, **ticked} if ticked else {"item": key, "none": YES}
        assignment_id = self._new_id("ASG")
        self.assignments[assignment_id] = {
            "AssignmentId": assignment_id,
            "WorkerId": worker,
            "HITId": hit_id,
            "AssignmentStatus": "Submitted",
            "AutoApprovalTime": self.now + timedelta(days=3),
            "AcceptTime": self.now,
            "SubmitTime": self.now + timedelta(seconds=40),
            "Answer": raw if raw is not None else answers_xml(fields),
        }
        hit["NumberOfAssignmentsAvailable"] -= 1
        if hit["NumberOfAssignmentsAvailable"] == 0:
            hit["HITStatus"] = "Reviewable"
        return assignment_id

    def _qualified(self, worker: str, hit: dict[str, Any], answer: Answerer | None) -> bool:
        for requirement in hit["QualificationRequirements"]:
            type_id = requirement["QualificationTypeId"]
            if type_id not in self.qualification_types:
                continue  # MTurk's system qualifications: every simulated worker has them
            score = self.worker_scores.get((type_id, worker))
            if requirement["Comparator"] == "DoesNotExist":
                if score is not None:
                    return False
                continue
            if score is None and "AnswerKey" in self.qualification_types[type_id]:
                score = self._take_test(worker, type_id, answer)
            if score is None or score < requirement["IntegerValues"][0]:
                return False
        return True

    def _take_test(self, worker: str, type_id: str, answer: Answerer | None) -> int:
        kind = self.qualification_types[type_id]
        namespace = {"f": kind["Test"].split('xmlns="', 1)[1].split('"', 1)[0]}
        form = ElementTree.fromstring(kind["Test"])
        given = {
            question.findtext("f:QuestionIdentifier", namespaces=namespace): (
                answer(worker, question.findtext(".//f:DataURL", namespaces=namespace) or "") if answer else YES
            )
            for question in form.findall("f:Question", namespace)
        }
        key_namespace = {"k": kind["AnswerKey"].split('xmlns="', 1)[1].split('"', 1)[0]}
        key = ElementTree.fromstring(kind["AnswerKey"])
        right = sum(
            given.get(q.findtext("k:QuestionIdentifier", namespaces=key_namespace))
            == q.findtext("k:AnswerOption/k:SelectionIdentifier", namespaces=key_namespace)
            for q in key.findall("k:Question", key_namespace)
        )
        # Without a QualificationValueMapping the value is the summed score; a PercentageMapping
        # makes it the percentage of MaximumSummedScore, rounded to the nearest whole number.
        maximum = key.findtext(".//k:PercentageMapping/k:MaximumSummedScore", namespaces=key_namespace)
        score = right if maximum is None else int(Decimal(100 * right) / int(maximum) + Decimal("0.5"))
        self.worker_scores[(type_id, worker)] = score
        return score

    def ListAssignmentsForHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        self._hit(params["HITId"])
        statuses = params.get("AssignmentStatuses", ["Submitted", "Approved", "Rejected"])
        rows = [
            a for a in self.assignments.values() if a["HITId"] == params["HITId"] and a["AssignmentStatus"] in statuses
        ]
        return self._page(rows, params, "Assignments")

    def GetAssignment(self, params: dict[str, Any]) -> dict[str, Any]:
        assignment = self.assignments.get(params["AssignmentId"])
        if assignment is None:
            raise Refused(f"Assignment {params['AssignmentId']} does not exist.")
        return {"Assignment": assignment, "HIT": self._hit(assignment["HITId"])}

    def _review(self, params: dict[str, Any], status: str) -> dict[str, Any]:
        assignment = self.GetAssignment(params)["Assignment"]
        if assignment["AssignmentStatus"] != "Submitted":
            raise Refused(
                "This operation can be called with a status of: Submitted "
                f"(assignment is {assignment['AssignmentStatus']})"
            )
        assignment["AssignmentStatus"] = status
        assignment["RequesterFeedback"] = params.get("RequesterFeedback", "")
        return {}

    def ApproveAssignment(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._review(params, "Approved")

    def RejectAssignment(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._review(params, "Rejected")

    def SendBonus(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params["UniqueRequestToken"]
        if token in self.bonuses:
            raise Refused(f'The idempotency token "{token}" has already been processed.')
        amount = Decimal(params["BonusAmount"])
        self.ledger.debit(token, bonus=amount, bonus_fee=bonus_fee(amount))
        self.bonuses[token] = amount
        return {}

    # -- workers and qualifications -----------------------------------------------------------

    def CreateWorkerBlock(self, params: dict[str, Any]) -> dict[str, Any]:
        self.hard_blocks.add(params["WorkerId"])
        return {}

    def DeleteWorkerBlock(self, params: dict[str, Any]) -> dict[str, Any]:
        self.hard_blocks.discard(params["WorkerId"])
        return {}

    def NotifyWorkers(self, params: dict[str, Any]) -> dict[str, Any]:
        if len(params["WorkerIds"]) > 100:
            raise Refused("WorkerIds: at most 100 workers per request")
        self.notified += params["WorkerIds"]
        return {"NotifyWorkersFailureStatuses": []}

    def CreateQualificationType(self, params: dict[str, Any]) -> dict[str, Any]:
        if any(kind["Name"] == params["Name"] for kind in self.qualification_types.values()):
            raise Refused(f"You have already created a QualificationType with this name: {params['Name']}")
        type_id = self._new_id("QT")
        self.qualification_types[type_id] = dict(params, QualificationTypeId=type_id, CreationTime=self.now)
        return {"QualificationType": self._public_type(type_id)}

    def _public_type(self, type_id: str) -> dict[str, Any]:
        kind = self.qualification_types[type_id]
        fields = ("QualificationTypeId", "CreationTime", "Name", "Description", "QualificationTypeStatus", "Test")
        return {field: kind[field] for field in fields if field in kind}

    def ListQualificationTypes(self, params: dict[str, Any]) -> dict[str, Any]:
        query = params.get("Query", "")
        rows = [self._public_type(t) for t, kind in self.qualification_types.items() if query in kind["Name"]]
        return self._page(rows, params, "QualificationTypes")

    def AssociateQualificationWithWorker(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["QualificationTypeId"] not in self.qualification_types:
            raise Refused(f"QualificationType {params['QualificationTypeId']} does not exist.")
        self.worker_scores[(params["QualificationTypeId"], params["WorkerId"])] = params.get("IntegerValue", 1)
        return {}

    def DisassociateQualificationFromWorker(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.worker_scores.pop((params["QualificationTypeId"], params["WorkerId"]), None) is None:
            raise Refused(f"Worker {params['WorkerId']} does not have this qualification.")
        return {}

    def ListWorkersWithQualificationType(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "QualificationTypeId": type_id,
                "WorkerId": worker,
                "GrantTime": self.now,
                "IntegerValue": value,
                "Status": "Granted",
            }
            for (type_id, worker), value in sorted(self.worker_scores.items())
            if type_id == params["QualificationTypeId"]
        ]
        return self._page(rows, params, "Qualifications")

    # -- paging -------------------------------------------------------------------------------

    @staticmethod
    def _page(rows: list[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults", 10))
        page: dict[str, Any] = {key: rows[start : start + size], "NumResults": len(rows[start : start + size])}
        if start + size < len(rows):
            page["NextToken"] = str(start + size)
        return page


def fault_status(code: str) -> int:
    """The HTTP status MTurk answers an error with."""
    return {"ServiceFault": 500, "ServiceUnavailable": 503}.get(code, 400)


def truthful(truth: Callable[[str], bool]) -> Answerer:
    """A worker who always answers what ``truth`` says of the image URL."""
    return lambda worker, url: YES if truth(url) else NO


def field_of(item_key: str) -> str:
    return FIELD_PREFIX + item_key
