"""Our own qualification types: the soft block, and a category's qualification test.

A type is found by its name (one per project and purpose) or created on first use, so a second
process or a resumed run finds the type the first one made; a creation refused because the name
is taken (an earlier attempt whose answer was lost, or another process) resolves to that type.
The test is MTurk's own auto-graded kind: a QuestionForm with one yes/no question per image and an
answer key worth a point per right answer. Its value is the number right, a whole number the HIT
type then requires at the test's ``needed`` (no percentage, whose rounding would move the pass
mark). Types made before that scored a percentage; they are still read and required correctly.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from lsun_crowd.crowd import NO, YES, HitItem, QualificationResult, QualificationTest
from lsun_crowd.render import FIELD_PREFIX
from lsun_crowd_mturk.client import Api, MTurkError

FORM_SCHEMA = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2017-11-06/QuestionForm.xsd"
KEY_SCHEMA = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/AnswerKey.xsd"
TEST_SECONDS = 1200
SUMMARY = re.compile(r"(\d+) images; (\d+) right to pass")
COUNTED = "scored by right answers"  # in the description of the tests whose value is the number right
DUPLICATE_NAME = "already created a QualificationType with this name"  # MTurk's refusal of a taken name


class QualificationTypes:
    def __init__(self, api: Api, project: str, image_url: Callable[[HitItem], str] = lambda item: item.uri) -> None:
        self.api = api
        self.project = project
        self.image_url = image_url
        self._ids: dict[str, str] = {}
        self._descriptions: dict[str, str] = {}  # type id → its description

    def block_type(self) -> str:
        return self._find_or_create(
            f"lsun-crowd {self.project}: blocked",
            Description=f"Workers whose answers on check images in {self.project} were too often wrong.",
            QualificationTypeStatus="Active",
        )

    def exclusion_type(self, workers: frozenset[str]) -> str:
        """The type that keeps exactly these workers off a HIT. Named by a digest of the set, so
        every HIT (of any batch, in any process) kept from the same workers shares one type."""
        digest = hashlib.sha256("\n".join(sorted(workers)).encode()).hexdigest()[:24]
        return self._find_or_create(
            f"lsun-crowd {self.project}: kept off {digest}",
            Description=(
                f"{len(workers)} worker(s) who answered about some images of {self.project} before, kept off the "
                "HITs that ask about them again."
            ),
            QualificationTypeStatus="Active",
        )

    def test_name(self, test_id: str) -> str:
        return f"lsun-crowd test {test_id}"

    def test_type(self, test: QualificationTest) -> str:
        return self._find_or_create(
            self.test_name(test.test_id),
            Description=f"{test.question} {len(test.items)} images; {test.needed} right to pass; {COUNTED}.",
            QualificationTypeStatus="Active",
            Test=self.test_form(test),
            AnswerKey=answer_key(test),
            TestDurationInSeconds=TEST_SECONDS,
        )

    def pass_value(self, test: QualificationTest) -> int:
        """The qualification value from which the test's type admits a worker: ``needed`` right
        answers. A type scored in percent by an earlier version gets the percentage of ``needed``
        rounded down: whatever MTurk's rounding, ``needed`` right answers score at least that and
        one fewer less (a point is worth 5 or more percent up to 20 images)."""
        type_id = self.test_type(test)
        if COUNTED in self._descriptions.get(type_id, COUNTED):
            return test.needed
        return 100 * test.needed // len(test.items)

    def results(self, test_id: str) -> list[QualificationResult]:
        found = self._find(self.test_name(test_id))
        if found is None:
            return []
        type_id, description = found
        summary = SUMMARY.search(description)
        if summary is None:
            raise MTurkError("GetQualificationType", "Unreadable", f"{test_id}: no test summary in {description!r}")
        total, needed = int(summary.group(1)), int(summary.group(2))
        counted = COUNTED in description
        results = []
        token = None
        while True:
            page = self.api.call(
                "ListWorkersWithQualificationType",
                QualificationTypeId=type_id,
                MaxResults=100,
                **({"NextToken": token} if token else {}),
            )
            for row in page.get("Qualifications", []):
                value = int(row.get("IntegerValue", 0))
                if counted:
                    correct, passed = value, value >= needed
                else:  # a percentage, admitted from pass_value() on
                    correct, passed = round(value * total / 100), value >= 100 * needed // total
                results.append(QualificationResult(str(row["WorkerId"]), correct, total, passed))
            token = page.get("NextToken")
            if not token:
                return sorted(results, key=lambda result: result.worker_id)

    def test_form(self, test: QualificationTest) -> str:
        form = ElementTree.Element("QuestionForm", xmlns=FORM_SCHEMA)
        overview = ElementTree.SubElement(form, "Overview")
        ElementTree.SubElement(overview, "Title").text = test.question
        ElementTree.SubElement(
            overview, "Text"
        ).text = (
            f"Answer yes or no for each image. {test.needed} of {len(test.items)} right qualifies you for our HITs."
        )
        for number, item in enumerate(test.items, 1):
            question = ElementTree.SubElement(form, "Question")
            ElementTree.SubElement(question, "QuestionIdentifier").text = FIELD_PREFIX + item.item_key
            ElementTree.SubElement(question, "IsRequired").text = "true"
            binary = ElementTree.SubElement(ElementTree.SubElement(question, "QuestionContent"), "Binary")
            mime = ElementTree.SubElement(binary, "MimeType")
            ElementTree.SubElement(mime, "Type").text = "image"
            suffix = PurePosixPath(self.image_url(item)).suffix.lower().lstrip(".")
            if suffix in ("png", "gif", "jpeg", "jpg"):
                ElementTree.SubElement(mime, "SubType").text = "jpeg" if suffix == "jpg" else suffix
            ElementTree.SubElement(binary, "DataURL").text = self.image_url(item)
            ElementTree.SubElement(binary, "AltText").text = f"image {number}"
            answer = ElementTree.SubElement(ElementTree.SubElement(question, "AnswerSpecification"), "SelectionAnswer")
            ElementTree.SubElement(answer, "StyleSuggestion").text = "radiobutton"
            selections = ElementTree.SubElement(answer, "Selections")
            for choice in (YES, NO):
                selection = ElementTree.SubElement(selections, "Selection")
                ElementTree.SubElement(selection, "SelectionIdentifier").text = choice
                ElementTree.SubElement(selection, "Text").text = choice
        return ElementTree.tostring(form, encoding="unicode")

    def _find(self, name: str) -> tuple[str, str] | None:
        token = None
        while True:
            page = self.api.call(
                "ListQualificationTypes",
                Query=name,
                MustBeRequestable=False,
                MustBeOwnedByCaller=True,
                MaxResults=100,
                **({"NextToken": token} if token else {}),
            )
            for row in page.get("QualificationTypes", []):
                if row.get("Name") == name:
                    return str(row["QualificationTypeId"]), str(row.get("Description", ""))
            token = page.get("NextToken")
            if not token:
                return None

    def _find_or_create(self, name: str, **properties: Any) -> str:
        if name not in self._ids:
            found = self._find(name) or self._create(name, properties)
            self._ids[name] = found[0]
            self._descriptions[found[0]] = found[1]
        return self._ids[name]

    def _create(self, name: str, properties: dict[str, Any]) -> tuple[str, str]:
        """Create the type; if MTurk says the name is taken, the type of that name is the one
        (made by an attempt whose answer was lost, or by another process). Other refusals are
        reported as MTurk put them."""
        try:
            response = self.api.call("CreateQualificationType", Name=name, **properties)
        except MTurkError as error:
            if DUPLICATE_NAME not in error.detail:
                raise
            found = self._find(name)
            if found is None:
                raise MTurkError(
                    "CreateQualificationType", error.code, f"{error.detail} (yet no type of that name is listed)"
                ) from error
            return found
        created = response["QualificationType"]
        return str(created["QualificationTypeId"]), str(created.get("Description", properties.get("Description", "")))


def answer_key(test: QualificationTest) -> str:
    """One point per right answer; without a QualificationValueMapping, MTurk's value is the sum."""
    key = ElementTree.Element("AnswerKey", xmlns=KEY_SCHEMA)
    for item in test.items:
        question = ElementTree.SubElement(key, "Question")
        ElementTree.SubElement(question, "QuestionIdentifier").text = FIELD_PREFIX + item.item_key
        option = ElementTree.SubElement(question, "AnswerOption")
        ElementTree.SubElement(option, "SelectionIdentifier").text = test.answers[item.item_key]
        ElementTree.SubElement(option, "AnswerScore").text = "1"
    return ElementTree.tostring(key, encoding="unicode")
