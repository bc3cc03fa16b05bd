"""A rendered HIT page made ready for this server: the response's CSP nonce on each of the
template's own ``<script>`` and ``<style>`` tags, and the HIT's form token as a hidden field in
each form that posts.

The templates are shared with MTurk and a project may override them, so they know nothing of
either; the page is stamped after rendering instead. Only tags the template itself wrote are
stamped: every value rendered into it is autoescaped, so it cannot open a tag of its own, and the
HTML parser does not mistake ``<script`` inside a script's text for a tag.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

FORM_TOKEN_FIELD = "form_token"
_NONCE_TAGS = ("script", "style")


class _Stamps(HTMLParser):
    """Collects (offset, text) insertions into the page it is fed."""

    def __init__(self, source: str, nonce: str, form_token: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.line_starts = [0, *(newline.end() for newline in re.finditer("\n", source))]  # as the parser counts
        self.nonce_attribute = f' nonce="{html.escape(nonce)}"'
        self.token_field = (
            None
            if form_token is None
            else f'<input type="hidden" name="{FORM_TOKEN_FIELD}" value="{html.escape(form_token)}">'
        )
        self.insertions: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line, column = self.getpos()
        start = self.line_starts[line - 1] + column
        if tag in _NONCE_TAGS:  # first, so that it wins over any nonce the template wrote itself
            self.insertions.append((start + 1 + len(tag), self.nonce_attribute))
        elif tag == "form" and self.token_field is not None and (dict(attrs).get("method") or "").lower() == "post":
            self.insertions.append((start + len(self.get_starttag_text() or ""), self.token_field))


def stamp_page(page: str, nonce: str, form_token: str | None = None) -> str:
    """``page`` with ``nonce`` on its script and style tags and ``form_token`` in its post forms."""
    stamps = _Stamps(page, nonce, form_token)
    stamps.feed(page)
    stamps.close()
    pieces, last = [], 0
    for offset, text in sorted(stamps.insertions):
        pieces += [page[last:offset], text]
        last = offset
    pieces.append(page[last:])
    return "".join(pieces)
