"""Reading a worker's submission: MTurk's QuestionFormAnswers XML, back to per-image answers."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence

from lsun_crowd.crowd import encode_choices
from lsun_crowd.render import MULTI_LABEL_ITEM_FIELD, answers_from_fields, labels_from_fields

ANSWERS_SCHEMA = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"


class MalformedAnswer(ValueError):
    """A submission that cannot be read as one yes/no answer per image of the HIT."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def form_fields(xml: str) -> dict[str, str]:
    """Every answered field of a QuestionFormAnswers document, by its question identifier."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise MalformedAnswer(f"not XML: {error}") from None
    if _local(root.tag) != "QuestionFormAnswers":
        raise MalformedAnswer(f"expected QuestionFormAnswers, found {_local(root.tag)}")
    fields = {}
    for answer in root:
        parts = {_local(child.tag): (child.text or "") for child in answer}
        if "QuestionIdentifier" not in parts:
            raise MalformedAnswer("an Answer without a QuestionIdentifier")
        value = parts.get("FreeText", parts.get("SelectionIdentifier", ""))
        fields[parts["QuestionIdentifier"]] = value
    return fields


def item_answers(xml: str, expected: Sequence[str] | None = None) -> dict[str, str]:
    """Item key → ``yes``/``no``, or for the multi-label form (it posts an ``item`` field) item key
    → the categories ticked (:func:`~lsun_crowd.crowd.encode_choices`). With ``expected`` item
    keys (the HIT's, in the order it shows them), every one must be answered, and nothing else; a
    blank answer is no answer, and the error names the images by their place in the HIT."""
    try:
        fields = form_fields(xml)
        if expected is not None:
            fields = {name: value for name, value in fields.items() if value.strip()}
        if MULTI_LABEL_ITEM_FIELD in fields:
            item, ticked = labels_from_fields(fields)
            answers = {item: encode_choices(ticked)}
        else:
            answers = answers_from_fields(fields)
    except ValueError as error:
        raise MalformedAnswer(str(error)) from None
    if expected is not None:
        problems = []
        missing = [place for place, key in enumerate(expected, 1) if key not in answers]
        if missing:
            images = "image" if len(missing) == 1 else "images"
            were = "was" if len(missing) == 1 else "were"
            places = ", ".join(str(place) for place in missing)
            problems.append(f"{images} {places} of {len(expected)} {were} not answered")
        extra = sorted(answers.keys() - set(expected))
        if extra:
            problems.append(f"answers for images not in this HIT: {', '.join(extra)}")
        if problems:
            raise MalformedAnswer("; ".join(problems))
    if not answers:
        raise MalformedAnswer("no image was answered")
    return answers


def answers_xml(fields: dict[str, str]) -> str:
    """A QuestionFormAnswers document for ``fields``, as MTurk returns one (used by the tests and
    by ``lsun-crowd mturk preview``'s sample)."""
    root = ElementTree.Element("QuestionFormAnswers", xmlns=ANSWERS_SCHEMA)
    for name, value in fields.items():
        answer = ElementTree.SubElement(root, "Answer")
        ElementTree.SubElement(answer, "QuestionIdentifier").text = name
        ElementTree.SubElement(answer, "FreeText").text = value
    return '<?xml version="1.0" encoding="ASCII"?>' + ElementTree.tostring(root, encoding="unicode")
