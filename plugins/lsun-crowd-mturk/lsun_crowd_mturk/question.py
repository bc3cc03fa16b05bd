"""MTurk's ``HTMLQuestion``: the XML that carries a rendered HIT, and MTurk's limit on its size."""

from __future__ import annotations

from lsun_crowd.render import TemplateError

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
