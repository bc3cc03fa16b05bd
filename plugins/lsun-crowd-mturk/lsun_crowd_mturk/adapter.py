"""Mechanical Turk behind the :class:`~lsun_crowd.crowd.CrowdBackend` interface.

Publishing is idempotent without reading the account. Batch ids start with the project's name and
random identity (``name#id``, kept in its store), so two projects never share a HIT whatever their
names. Each ``CreateHITWithHITType`` carries a ``UniqueRequestToken`` derived from the batch id and
HIT key, so a request retried after a lost response, or a publish resumed after a crash, cannot
post the same HIT twice: MTurk answers ``HitAlreadyExists``. Only then are the account's HITs
searched, by the ``RequesterAnnotation`` each HIT carries (batch id and key), stopping as soon as
every such HIT is found. A token MTurk remembers (for 24 hours) for a HIT that was since deleted
(``lsun-crowd mturk cleanup --delete``) is not an error: the HIT is created again under a fresh
token, as nothing of it exists any more to pay for.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from lsun_crowd.crowd import (
    AlreadyApproved,
    Assignment,
    AssignmentStatus,
    CostEstimate,
    CrowdError,
    HitBatch,
    HitItem,
    HitPreview,
    HitSpec,
    HitState,
    HitStatus,
    PublishedHit,
    QualificationResult,
    QualificationTest,
)
from lsun_crowd.fees import CENT, batch_cost
from lsun_crowd.render import Renderer
from lsun_crowd_mturk.answers import MalformedAnswer, item_answers
from lsun_crowd_mturk.client import Api, MTurkError
from lsun_crowd_mturk.qualifications import QualificationTypes
from lsun_crowd_mturk.question import HTML_QUESTION_LIMIT, html_question, question_items, question_xml, too_large
from lsun_crowd_mturk.settings import LIVE_ENDPOINT, MTurkSettings

log = logging.getLogger(__name__)

APPROVAL_RATE = "000000000000000000L0"  # MTurk's system qualification: percent of work approved
APPROVED_HITS = "00000000000000000040"
LOCALE = "00000000000000000071"
PAST = datetime(2015, 1, 1, tzinfo=UTC)  # an expiry in the past expires a HIT at once
STATUSES = {"Submitted": AssignmentStatus.SUBMITTED, "Approved": AssignmentStatus.APPROVED}
STATUSES["Rejected"] = AssignmentStatus.REJECTED
MALFORMED_FEEDBACK = "Your submission did not answer every image with yes or no, so it could not be used."
# followed by what was wrong, e.g. "Image 3 of 10 was not answered."


def annotation(batch_id: str, hit_key: str) -> str:
    return f"{batch_id}|{hit_key}"


def request_token(batch_id: str, hit_key: str, generation: int = 0) -> str:
    """At most 64 characters, the same for the same HIT of the same batch, forever; a later
    ``generation`` is a fresh token for a HIT created again after its first was deleted."""
    text = annotation(batch_id, hit_key) + (f"|g{generation}" if generation else "")
    return "lsc-" + hashlib.sha256(text.encode()).hexdigest()[:56]


RECREATIONS = 3  # fresh tokens tried for one HIT deleted after its token was used


def already_done(error: MTurkError) -> bool:
    """MTurk's answer to a request token it has seen: ``AWS.MechanicalTurk.HitAlreadyExists`` for a
    HIT, or "The idempotency token ... has already been processed"."""
    text = f"{error.code} {error.detail}"
    return "HitAlreadyExists" in text or "has already been processed" in text


# AWS's notice, atop every page of the MTurk API reference
# (https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMturkAPI/Welcome.html).
CLOSURE = "AWS closed Mechanical Turk on 30 September 2026; a live request may fail"


class MTurkCrowd:
    name = "mturk"

    def __init__(self, api: Api, settings: MTurkSettings, project: str, templates: Renderer | None = None) -> None:
        self.api = api
        self.settings = settings
        self.project = project
        self.templates = templates or Renderer()  # the project's hit_templates/ over the defaults
        self.qualifications = QualificationTypes(api, project, self.image_url)
        self.spend_confirmed = False
        self._excluded: set[frozenset[str]] = set()  # exclusion sets granted to their workers already
        self._items: dict[str, tuple[str, ...]] = {}  # HIT id → the item keys it shows

    # -- publishing ---------------------------------------------------------------------------

    def image_url(self, item: HitItem) -> str:
        uri = item.uri
        root, prefix = self.settings.image_root, self.settings.image_url_prefix
        if root and prefix and uri.startswith(root):
            uri = prefix.rstrip("/") + "/" + uri[len(root) :].lstrip("/")
        if not uri.startswith(("https://", "http://")):
            raise CrowdError(
                f"image {item.item_key}: {item.uri} is not an http(s) URL, and MTurk workers cannot see local "
                "files: ingest URLs, or set crowd.settings.image_root and image_url_prefix"
            )
        return uri

    def render(self, batch: HitBatch, items: Sequence[HitItem]) -> str:
        """The HTML a worker sees for one HIT of ``batch``, as MTurk will show it."""
        shown = [HitItem(item.item_key, self.image_url(item)) for item in items]
        if batch.multi_label:
            if len(shown) != 1:
                raise CrowdError(f"{batch.batch_id}: a multi-label HIT shows one image, not {len(shown)}")
            return self.templates.multi_label(
                shown[0], batch.categories, self.settings.submit_url(), self.settings.instructions
            )
        return self.templates.grid(
            batch.question,
            shown,
            self.settings.submit_url(),
            self.settings.instructions,
            examples=self.settings.examples_for(batch.category),
        )

    def preview(self, batch: HitBatch) -> HitPreview:
        """The first HIT of ``batch`` as MTurk will show it, and its HTMLQuestion's size against
        MTurk's limit (:class:`~lsun_crowd.crowd.PreviewsHits`); asks MTurk nothing."""
        html = self.render(batch, batch.hits[0].items)
        size = len(question_xml(html, self.settings.frame_height))
        mode = "live" if self.settings.live else "sandbox"
        note = too_large(size) if size > HTML_QUESTION_LIMIT else f"MTurk's HTMLQuestion, {mode}"
        return HitPreview(html, size, HTML_QUESTION_LIMIT, note)

    def spend_confirmation(self) -> str | None:
        """:class:`~lsun_crowd.crowd.ConfirmsSpend`: live mode spends real money, the sandbox none."""
        if not self.settings.live:
            return None
        endpoint = self.settings.endpoint()
        where = "" if endpoint == LIVE_ENDPOINT else f" at {endpoint}"  # an override wins over the mode
        closed = "" if where else f" ({CLOSURE})"  # a compatible server of your own is another matter
        return f"live Mechanical Turk{where}{closed}: real money"

    def confirm_spend(self) -> None:
        self.spend_confirmed = True

    def _check_spend_confirmed(self) -> None:
        if self.settings.live and not self.spend_confirmed:
            raise CrowdError(
                "live Mechanical Turk spends real money: nothing is published until the spend is confirmed "
                "(`lsun-crowd run --project DIR` shows the most it may spend and asks; --yes in scripts)"
            )

    def requirements(
        self, test: QualificationTest | None, excluded: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        settings = self.settings
        found: list[dict[str, Any]] = []
        if settings.min_approval_rate is not None:
            found.append(_at_least(APPROVAL_RATE, settings.min_approval_rate))
        if settings.min_approved_hits is not None:
            found.append(_at_least(APPROVED_HITS, settings.min_approved_hits))
        if settings.locales:
            found.append(
                {
                    "QualificationTypeId": LOCALE,
                    "Comparator": "In",
                    "LocaleValues": [{"Country": country} for country in settings.locales],
                    "ActionsGuarded": "DiscoverPreviewAndAccept",
                }
            )
        found.append(
            {
                "QualificationTypeId": self.qualifications.block_type(),
                "Comparator": "DoesNotExist",
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            }
        )
        if test is not None:
            found.append(_at_least(self.qualifications.test_type(test), self.qualifications.pass_value(test)))
        if excluded:
            found.append(
                {
                    "QualificationTypeId": self.qualifications.exclusion_type(excluded),
                    "Comparator": "DoesNotExist",
                    "ActionsGuarded": "DiscoverPreviewAndAccept",
                }
            )
        return found

    def exclude(self, workers: frozenset[str]) -> None:
        """Grant the set's exclusion type to each of its workers; granting again changes nothing.
        Done before the HIT it guards is created, so that no excluded worker can ever take it."""
        if not workers or workers in self._excluded:
            return
        type_id = self.qualifications.exclusion_type(workers)
        for worker in sorted(workers):
            self.api.call(
                "AssociateQualificationWithWorker",
                QualificationTypeId=type_id,
                WorkerId=worker,
                IntegerValue=1,
                SendNotification=False,
            )
        self._excluded.add(workers)

    def hit_type(self, batch: HitBatch, excluded: frozenset[str] = frozenset()) -> str:
        """``CreateHITType`` returns the same id for the same properties, so this is idempotent.
        HITs kept from different workers differ in their requirements, so each set of excluded
        workers has a HIT type of its own."""
        settings = self.settings
        response = self.api.call(
            "CreateHITType",
            AutoApprovalDelayInSeconds=settings.auto_approval_delay_seconds,
            AssignmentDurationInSeconds=batch.assignment_duration_seconds,
            Reward=str(batch.reward_per_assignment.quantize(CENT)),
            Title=settings.title.format(category=batch.category),
            Keywords=settings.keywords,
            Description=settings.description,
            QualificationRequirements=self.requirements(batch.qualification, excluded),
        )
        return str(response["HITTypeId"])

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        self._check_spend_confirmed()
        questions = {
            spec.hit_key: html_question(self.render(batch, spec.items), self.settings.frame_height)
            for spec in batch.hits
        }
        hit_types: dict[frozenset[str], str] = {}
        created: dict[str, str] = {}
        unresolved: list[HitSpec] = []  # MTurk knows the token: created earlier, or since deleted
        for spec in batch.hits:
            hit_id = self._create(batch, spec, questions[spec.hit_key], hit_types, generation=0)
            if hit_id is None:
                unresolved.append(spec)
            else:
                created[spec.hit_key] = hit_id
        if unresolved:
            found = self.batch_hits(batch.batch_id, {spec.hit_key for spec in unresolved})
            for spec in unresolved:
                created[spec.hit_key] = found.get(spec.hit_key) or self._recreate(
                    batch, spec, questions[spec.hit_key], hit_types
                )
        return [PublishedHit(spec.hit_key, created[spec.hit_key]) for spec in batch.hits]

    def _create(
        self, batch: HitBatch, spec: HitSpec, question: str, hit_types: dict[frozenset[str], str], generation: int
    ) -> str | None:
        """Create one HIT under its token of ``generation``; ``None`` if MTurk has seen the token."""
        if spec.excluded_workers not in hit_types:
            self.exclude(spec.excluded_workers)
            hit_types[spec.excluded_workers] = hit_type_id = self.hit_type(batch, spec.excluded_workers)
            log.info(
                "%s: HIT type %s, preview at %s", batch.batch_id, hit_type_id, self.settings.preview_url(hit_type_id)
            )
        try:
            response = self.api.call(
                "CreateHITWithHITType",
                HITTypeId=hit_types[spec.excluded_workers],
                MaxAssignments=batch.assignments_per_hit,
                LifetimeInSeconds=batch.lifetime_seconds,
                Question=question,
                RequesterAnnotation=annotation(batch.batch_id, spec.hit_key),
                UniqueRequestToken=request_token(batch.batch_id, spec.hit_key, generation),
            )
        except MTurkError as error:
            if not already_done(error):
                raise
            return None
        return str(response["HIT"]["HITId"])

    def _recreate(self, batch: HitBatch, spec: HitSpec, question: str, hit_types: dict[frozenset[str], str]) -> str:
        """A HIT whose token MTurk remembers but which no longer exists (deleted): create it again
        under a fresh token; a fresh token also seen (a crash after recreating) is searched for."""
        for generation in range(1, RECREATIONS + 1):
            hit_id = self._create(batch, spec, question, hit_types, generation)
            if hit_id is not None:
                log.warning(
                    "%s: HIT %s was deleted after it was created; created it again", batch.batch_id, spec.hit_key
                )
                return hit_id
            found = self.batch_hits(batch.batch_id, {spec.hit_key})
            if spec.hit_key in found:
                return found[spec.hit_key]
        raise CrowdError(
            f"MTurk CreateHITWithHITType: HIT {spec.hit_key} of {batch.batch_id} was created {RECREATIONS + 1} "
            "times and is listed under none of them; look for it with `lsun-crowd mturk cleanup`"
        )

    def project_hits(self, project_key: str) -> Iterator[dict[str, Any]]:
        """Every HIT of the account whose annotation says the project ``name#id`` created it."""
        for hit in self._paged("ListHITs", "HITs"):
            if str(hit.get("RequesterAnnotation", "")).startswith(f"{project_key}:"):
                yield hit

    def batch_hits(self, batch_id: str, wanted: set[str]) -> dict[str, str]:
        """Hit key → HIT id for the batch's HITs among ``wanted`` that exist. The account is read
        page by page only until every wanted HIT is found: after a crash between creating HITs and
        recording them, which is the only time the store does not know a HIT's id."""
        prefix = annotation(batch_id, "")
        found: dict[str, str] = {}
        for hit in self._paged("ListHITs", "HITs"):
            note = str(hit.get("RequesterAnnotation", ""))
            if note.startswith(prefix) and note[len(prefix) :] in wanted:
                found[note[len(prefix) :]] = str(hit["HITId"])
                if len(found) == len(wanted):
                    break
        return found

    def _paged(self, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            response = self.api.call(operation, MaxResults=100, **params, **({"NextToken": token} if token else {}))
            yield from response.get(key, [])
            token = response.get("NextToken")
            if not token:
                return

    # -- collecting ---------------------------------------------------------------------------

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        now = datetime.now(UTC)
        statuses = []
        for hit_id in hit_ids:
            hit = self.api.call("GetHIT", HITId=hit_id)["HIT"]
            self._remember_items(hit_id, hit)  # what the answer check needs, without asking again
            requested = int(hit["MaxAssignments"])
            available = int(hit.get("NumberOfAssignmentsAvailable", 0))
            pending = int(hit.get("NumberOfAssignmentsPending", 0))
            submitted = requested - available - pending
            if submitted >= requested:
                state = HitState.COMPLETE
            elif pending == 0 and (hit["Expiration"] <= now or hit["HITStatus"] in ("Reviewable", "Disposed")):
                state = HitState.EXPIRED
            else:
                state = HitState.OPEN
            statuses.append(HitStatus(hit_id, state, submitted, requested))
        return statuses

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        """The HIT's submissions, each read against the HIT's own images: one that leaves an image
        unanswered or answers one the HIT did not show is rejected (if not yet reviewed) with
        feedback that says what is wrong, and listed with no answers, so that the store accounts
        for every submission MTurk counts and none of its answers becomes a vote."""
        found = []
        statuses = list(STATUSES)
        expected = None
        for row in self._paged("ListAssignmentsForHIT", "Assignments", HITId=hit_id, AssignmentStatuses=statuses):
            if expected is None:
                expected = self._hit_items(hit_id)
            try:
                answers = item_answers(row["Answer"], expected)
            except MalformedAnswer as reason:
                log.warning("assignment %s of HIT %s left out: %s", row["AssignmentId"], hit_id, reason)
                status = STATUSES[row["AssignmentStatus"]]
                if status == AssignmentStatus.SUBMITTED:
                    self.reject(
                        row["AssignmentId"], f"{MALFORMED_FEEDBACK} {str(reason)[:1].upper()}{str(reason)[1:]}."[:1024]
                    )
                    status = AssignmentStatus.REJECTED
                answers = {}
                found.append(
                    Assignment(
                        str(row["AssignmentId"]),
                        hit_id,
                        str(row["WorkerId"]),
                        status,
                        answers,
                        row["AcceptTime"].timestamp(),
                        row["SubmitTime"].timestamp(),
                    )
                )
                continue
            found.append(
                Assignment(
                    str(row["AssignmentId"]),
                    hit_id,
                    str(row["WorkerId"]),
                    STATUSES[row["AssignmentStatus"]],
                    answers,
                    row["AcceptTime"].timestamp(),
                    row["SubmitTime"].timestamp(),
                )
            )
        return sorted(found, key=lambda assignment: assignment.assignment_id)

    def _hit_items(self, hit_id: str) -> tuple[str, ...]:
        """The item keys the HIT shows, from its question (which never changes: kept per HIT)."""
        if hit_id not in self._items:
            self._remember_items(hit_id, self.api.call("GetHIT", HITId=hit_id)["HIT"])
        if not self._items[hit_id]:
            raise CrowdError(f"HIT {hit_id}: its question names no image field (item-<key>, or item)")
        return self._items[hit_id]

    def _remember_items(self, hit_id: str, hit: dict[str, Any]) -> None:
        if hit_id not in self._items:
            self._items[hit_id] = question_items(str(hit.get("Question", "")))

    # -- reviewing and paying -----------------------------------------------------------------

    def _review(self, operation: str, assignment_id: str, wanted: str, **params: Any) -> None:
        """Approve or reject; a second call finds the assignment already so and does nothing."""
        try:
            self.api.call(operation, AssignmentId=assignment_id, **params)
        except MTurkError as error:
            status = self.api.call("GetAssignment", AssignmentId=assignment_id)["Assignment"]["AssignmentStatus"]
            if status == "Approved" and wanted == "Rejected":
                raise AlreadyApproved(f"assignment {assignment_id} was approved already: {error.detail}") from error
            if status != wanted:
                raise

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self._review(
            "ApproveAssignment", assignment_id, "Approved", **({"RequesterFeedback": feedback} if feedback else {})
        )

    def reject(self, assignment_id: str, feedback: str) -> None:
        self._review("RejectAssignment", assignment_id, "Rejected", RequesterFeedback=feedback)

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        self._check_spend_confirmed()
        if amount <= 0 or amount > self.settings.bonus_limit:
            raise CrowdError(
                f"a bonus of {amount} is outside (0, {self.settings.bonus_limit}] (crowd.settings.bonus_limit)"
            )
        try:
            self.api.call(
                "SendBonus",
                WorkerId=worker_id,
                BonusAmount=str(amount.quantize(CENT)),
                AssignmentId=assignment_id,
                Reason=reason,
                UniqueRequestToken=request_token("bonus", token),
            )
        except MTurkError as error:
            if not already_done(error):  # the token was used: the bonus went out on an earlier call
                raise

    def block_worker(self, worker_id: str, reason: str) -> None:
        if self.settings.block == "hard":
            self.api.call("CreateWorkerBlock", WorkerId=worker_id, Reason=reason)
        else:
            self.api.call(
                "AssociateQualificationWithWorker",
                QualificationTypeId=self.qualifications.block_type(),
                WorkerId=worker_id,
                IntegerValue=1,
                SendNotification=False,
            )

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        try:
            if self.settings.block == "hard":
                self.api.call("DeleteWorkerBlock", WorkerId=worker_id, Reason=reason)
            else:
                self.api.call(
                    "DisassociateQualificationFromWorker",
                    WorkerId=worker_id,
                    QualificationTypeId=self.qualifications.block_type(),
                    Reason=reason,
                )
        except MTurkError as error:
            if error.code != "RequestError":  # not blocked (any more): nothing to undo
                raise

    def notify(self, worker_ids: Sequence[str], subject: str, message: str) -> None:
        """Message workers, 100 at a time (MTurk's limit per request), each at most once.

        ``NotifyWorkers`` carries no request token and MTurk keeps no record a requester can read,
        so a request whose answer was lost cannot be checked: it is sent again only when the
        failure shows it was not carried out (throttled, never sent). After any other failure the
        workers may have had the message; they are named in the error and nobody gets it twice."""
        for start in range(0, len(worker_ids), 100):
            chunk = list(worker_ids[start : start + 100])
            try:
                response = self.api.call_at_most_once(
                    "NotifyWorkers", Subject=subject, MessageText=message, WorkerIds=chunk
                )
            except MTurkError as error:
                if not error.uncertain:
                    raise
                unsent = len(worker_ids) - start - len(chunk)
                raise CrowdError(
                    f"{error}: {len(chunk)} worker(s) may have been notified or not ({', '.join(chunk)}), and the "
                    f"message is not sent again so that none of them gets it twice; {unsent} more were not sent it"
                ) from error
            for failure in response.get("NotifyWorkersFailureStatuses", []):
                log.warning(
                    "could not notify %s: %s", failure.get("WorkerId"), failure.get("NotifyWorkersFailureMessage")
                )

    # -- HIT lifetime -------------------------------------------------------------------------

    def expire(self, hit_ids: Sequence[str]) -> None:
        """Expire each HIT now; one MTurk no longer knows (deleted) is as expired as it gets."""
        for hit_id in hit_ids:
            try:
                self.api.call("UpdateExpirationForHIT", HITId=hit_id, ExpireAt=PAST)
            except MTurkError as error:
                if error.code != "RequestError" or not self._gone(hit_id):
                    raise
                log.info("HIT %s is deleted: nothing to expire", hit_id)

    def extend(self, hit_id: str, seconds: int) -> None:
        self.api.call("UpdateExpirationForHIT", HITId=hit_id, ExpireAt=datetime.now(UTC) + timedelta(seconds=seconds))

    def delete(self, hit_id: str) -> bool:
        """Delete a HIT when MTurk allows it (expired, every assignment reviewed); False when it
        does not. A refusal of a HIT MTurk no longer knows means it is deleted already (by a
        request whose answer was lost, or another process)."""
        try:
            self.api.call("DeleteHIT", HITId=hit_id)
        except MTurkError as error:
            if error.code == "RequestError":
                return self._gone(hit_id)
            raise
        return True

    def _gone(self, hit_id: str) -> bool:
        """Whether MTurk no longer knows the HIT: ``GetHIT`` refuses a deleted one."""
        try:
            self.api.call("GetHIT", HITId=hit_id)
        except MTurkError as error:
            if error.code == "RequestError":
                return True
            raise
        return False

    # -- money and qualification --------------------------------------------------------------

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        return batch_cost(batch, "mturk")

    def balance(self) -> Decimal | None:
        response = self.api.call("GetAccountBalance")
        return Decimal(str(response["AvailableBalance"]))

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        return self.qualifications.results(test_id)


def _at_least(type_id: str, value: int) -> dict[str, Any]:
    return {
        "QualificationTypeId": type_id,
        "Comparator": "GreaterThanOrEqualTo",
        "IntegerValues": [int(value)],
        "ActionsGuarded": "DiscoverPreviewAndAccept",
    }
