"""MTurk's ``HTMLQuestion``: the XML that carries a rendered HIT, and MTurk's limit on its size."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

from lsun_crowd.render import FIELD_PREFIX, MULTI_LABEL_ITEM_FIELD, TemplateError

HTML_QUESTION_LIMIT = 65_535  # characters MTurk accepts in a HIT's Question parameter
HTML_QUESTION_SCHEMA = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"


def question_xml(html: str, frame_height: int = 0) -> str:
    """``html`` wrapped in MTurk's HTMLQuestion XML, whatever its size."""
    content = html.replace("]]>", "]]]]><![CDATA[>")  # a CDATA section cannot hold its own end
    return (
        f'<HTMLQuestion xmlns="{HTML_QUESTION_SCHEMA}"><HTMLContent><![CDATA[{content}]]></HTMLContent>'
        f"<FrameHeight>{int(frame_height)}</FrameHeight></HTMLQuestion>"
    )


def too_large(size: int) -> str:
    return (
        f"the rendered HIT is {size:,} characters, over MTurk's limit of {HTML_QUESTION_LIMIT:,}: "
        "put fewer images in a HIT ([crowd] items_per_hit) or use shorter image URLs"
    )


def html_question(html: str, frame_height: int = 0) -> str:
    """``html`` wrapped in MTurk's HTMLQuestion XML; refuses a question over MTurk's limit."""
    xml = question_xml(html, frame_height)
    if len(xml) > HTML_QUESTION_LIMIT:
        raise TemplateError(too_large(len(xml)))
    return xml


class _Fields(HTMLParser):
    """The item keys a rendered HIT asks about, in the order it shows them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.keys: dict[str, None] = {}  # ordered, without repeats (radio buttons share a name)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("input", "select", "textarea"):
            return
        found = dict(attrs)
        name, value = found.get("name") or "", found.get("value") or ""
        if name.startswith(FIELD_PREFIX):
            self.keys[name[len(FIELD_PREFIX) :]] = None
        elif name == MULTI_LABEL_ITEM_FIELD and value:
            self.keys[value] = None


def question_items(question: str) -> tuple[str, ...]:
    """The item keys of a HIT, read from its ``Question`` (an HTMLQuestion as :func:`question_xml`
    writes it): each ``item-<key>`` field of the grid, or the multi-label form's ``item``."""
    try:
        root = ElementTree.fromstring(question)
    except ElementTree.ParseError:
        return ()
    html = "".join(child.text or "" for child in root if child.tag.rsplit("}", 1)[-1] == "HTMLContent")
    fields = _Fields()
    fields.feed(html)
    fields.close()
    return tuple(fields.keys)
