"""HITs rendered from ``hit_templates/``: Jinja2 with autoescaping on, self-contained HTML (no
external script, font or style) that runs inside MTurk's ``HTMLQuestion`` and on our own server
alike. Where the form posts is a variable, never a second copy of the template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jinja2

from lsun_crowd.crowd import NO, YES, HitItem

FIELD_PREFIX = "item-"
MULTI_LABEL_ITEM_FIELD = "item"
"""Each image's answer is a form field named ``item-<item key>`` holding ``yes`` or ``no``."""
HTML_QUESTION_LIMIT = 65_535  # characters MTurk accepts in a HIT's Question parameter
HTML_QUESTION_SCHEMA = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lsun_crowd", "hit_templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class TemplateError(ValueError):
    """A HIT cannot be rendered as asked (too large for the platform, for one)."""


def render_grid(
    question: str,
    items: Sequence[HitItem],
    submit_url: str,
    instructions: str = "",
    assignment_id: str = "",
    examples: Sequence[tuple[str, bool]] = (),
) -> str:
    """The binary grid: one yes/no answer per image, by click or keyboard, under the instructions
    and any ``examples`` (image URL, does it show the category)."""
    return _templates.get_template("binary_grid.html").render(
        question=question,
        instructions=instructions,
        examples=examples,
        items=items,
        submit_url=submit_url,
        assignment_id=assignment_id,
        field_prefix=FIELD_PREFIX,
    )


def render_multi_label(
    item: HitItem,
    categories: Sequence[str],
    submit_url: str,
    instructions: str = "",
    assignment_id: str = "",
) -> str:
    """One image; the worker ticks every category it shows, or "none of these"."""
    return _templates.get_template("multi_label.html").render(
        item=item,
        categories=categories,
        submit_url=submit_url,
        instructions=instructions,
        assignment_id=assignment_id,
        item_field=MULTI_LABEL_ITEM_FIELD,
    )


def labels_from_fields(fields: Mapping[str, str], categories: Sequence[str]) -> tuple[str, set[str]]:
    """The item key and the categories ticked on a submitted multi-label form. Nothing ticked (not
    even "none") and a tick beside "none" are errors naming the problem."""
    item = fields.get(MULTI_LABEL_ITEM_FIELD, "")
    if not item:
        raise ValueError(f"field {MULTI_LABEL_ITEM_FIELD!r}: missing")
    ticked = set()
    for name, value in fields.items():
        if name.startswith("label-") and value == YES:
            index = name.removeprefix("label-")
            if not index.isdigit() or int(index) >= len(categories):
                raise ValueError(f"field {name!r}: no such category")
            ticked.add(categories[int(index)])
    none = fields.get("none") == YES
    if none and ticked:
        raise ValueError("'none of these' and a category were both ticked")
    if not none and not ticked:
        raise ValueError("nothing was ticked, not even 'none of these'")
    return item, ticked


def answers_from_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Item key → answer from submitted form fields; other fields (``assignmentId``) are ignored.
    A value other than yes or no is an error naming the field."""
    answers = {}
    for name, value in fields.items():
        if not name.startswith(FIELD_PREFIX):
            continue
        answer = value.strip().lower()
        if answer not in (YES, NO):
            raise ValueError(f"field {name!r}: answer {value!r} is neither {YES!r} nor {NO!r}")
        answers[name[len(FIELD_PREFIX) :]] = answer
    return answers


def html_question(html: str, frame_height: int = 0) -> str:
    """``html`` wrapped in MTurk's HTMLQuestion XML; refuses a question over MTurk's limit."""
    content = html.replace("]]>", "]]]]><![CDATA[>")  # a CDATA section cannot hold its own end
    xml = (
        f'<HTMLQuestion xmlns="{HTML_QUESTION_SCHEMA}"><HTMLContent><![CDATA[{content}]]></HTMLContent>'
        f"<FrameHeight>{int(frame_height)}</FrameHeight></HTMLQuestion>"
    )
    if len(xml) > HTML_QUESTION_LIMIT:
        raise TemplateError(
            f"the rendered HIT is {len(xml):,} characters, over MTurk's limit of {HTML_QUESTION_LIMIT:,}: "
            "put fewer images in a HIT ([crowd] items_per_hit) or use shorter image URLs"
        )
    return xml
