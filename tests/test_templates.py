"""HIT templates: escaping of everything that comes from users, MTurk's size limit, one template
for both targets, and ``lsun-crowd preview``."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.crowd import HitItem
from lsun_crowd.render import (
    HTML_QUESTION_LIMIT,
    TemplateError,
    answers_from_fields,
    html_question,
    labels_from_fields,
    render_grid,
    render_multi_label,
)

from .conftest import make_digits_project

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class Markup(HTMLParser):
    """Every tag and attribute the browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def parse(html: str) -> Markup:
    markup = Markup()
    markup.feed(html)
    return markup


def test_hostile_names_urls_and_instructions_inject_no_markup() -> None:
    items = [HitItem(f"k{HOSTILE}", f"/pool/{HOSTILE}.png"), HitItem("2", "https://x.org/a.png?b=1&c=2")]
    html = render_grid(f"Does the image show: {HOSTILE}?", items, f"/submit/{HOSTILE}", instructions=HOSTILE)
    markup = parse(html)
    assert [tag for tag, _ in markup.tags].count("script") == 1  # ours, and no other
    assert "alert" not in "".join(markup.scripts)
    images = [attrs for tag, attrs in markup.tags if tag == "img"]
    assert [attrs["src"] for attrs in images] == [f"/pool/{HOSTILE}.png", "https://x.org/a.png?b=1&c=2"]
    assert all("onerror" not in attrs for attrs in images)  # the hostile text stayed inside the attribute
    (form,) = [attrs for tag, attrs in markup.tags if tag == "form"]
    assert form["action"] == f"/submit/{HOSTILE}"
    fields = [attrs["name"] for tag, attrs in markup.tags if tag == "input" and attrs.get("type") == "hidden"]
    assert fields == ["assignmentId", f"item-k{HOSTILE}", "item-2"]
    assert "<script>alert(1)</script>" not in html


def test_one_template_posts_to_mturk_or_to_our_server() -> None:
    items = [HitItem("1", "https://i.org/1.png")]
    mturk = render_grid("q?", items, "https://www.mturk.com/mturk/externalSubmit")
    local = render_grid("q?", items, "/a/token/submit/HIT1")
    assert mturk.replace("https://www.mturk.com/mturk/externalSubmit", "/a/token/submit/HIT1") == local
    assert 'name="assignmentId"' in mturk and "ASSIGNMENT_ID_NOT_AVAILABLE" in mturk  # MTurk's preview mode


def test_gold_items_look_exactly_like_the_others() -> None:
    html = render_grid("q?", [HitItem("101", "https://i.org/a.png"), HitItem("202", "https://i.org/gold.png")], "/s")
    tiles = re.findall(r'<div class="tile"[^>]*>\s*<img[^>]*>\s*<div class="mark"></div>', html)
    assert len(tiles) == 2
    # Only the key, the URL and the position differ; nothing marks the gold image.
    first = re.sub(r"image \d+", "image N", tiles[0].replace("101", "X").replace("a.png", "Y"))
    second = re.sub(r"image \d+", "image N", tiles[1].replace("202", "X").replace("gold.png", "Y"))
    assert first == second


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


def test_submitted_fields_become_answers() -> None:
    assert answers_from_fields({"assignmentId": "A1", "item-7": "YES", "item-8": " no "}) == {"7": "yes", "8": "no"}


def test_preview_writes_one_hit_of_a_category(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, limit=100, digits=range(2))
    out = tmp_path / "preview.html"
    result = CliRunner().invoke(
        app, ["preview", "--project", str(directory), "--category", "digit-1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "one HIT of 10 images for digit-1" in result.output and "of MTurk's 65,535 characters" in result.output
    images = [attrs["src"] for tag, attrs in parse(out.read_text()).tags if tag == "img"]
    assert len(images) == 10 and all(src and src.startswith("file:///") for src in images)
    assert Path(images[0].removeprefix("file://")).is_file()  # opens locally
    bad = CliRunner().invoke(app, ["preview", "--project", str(directory), "--category", "kitchen"])
    assert bad.exit_code == 2 and "'kitchen' is not one of ['digit-0', 'digit-1']" in bad.output
    assert (directory / CONFIG_FILE).is_file()


def test_examples_show_under_the_instructions_escaped() -> None:
    html = render_grid(
        "q?", [HitItem("1", "https://i.org/1.png")], "/s", examples=[("https://i.org/yes.png", True), (HOSTILE, False)]
    )
    figures = [attrs.get("class") for tag, attrs in parse(html).tags if tag == "figure"]
    assert figures == ["yes", "no"]
    sources = [attrs["src"] for tag, attrs in parse(html).tags if tag == "img"]
    assert sources == ["https://i.org/yes.png", HOSTILE, "https://i.org/1.png"]
    assert [tag for tag, _ in parse(html).tags].count("script") == 1


def test_the_multi_label_template_ticks_several_categories_or_none() -> None:
    categories = ["kitchen", "bedroom", HOSTILE]
    html = render_multi_label(HitItem("42", "https://i.org/42.png"), categories, "/s", instructions=HOSTILE)
    markup = parse(html)
    boxes = [attrs["name"] for tag, attrs in markup.tags if tag == "input" and attrs.get("type") == "checkbox"]
    assert boxes == ["label-0", "label-1", "label-2", "none"]
    assert [tag for tag, _ in markup.tags].count("script") == 1 and "<script>alert" not in html
    assert labels_from_fields({"item": "42", "label-0": "yes", "label-2": "yes"}, categories) == (
        "42",
        {"kitchen", HOSTILE},
    )
    assert labels_from_fields({"item": "42", "none": "yes"}, categories) == ("42", set())
    with pytest.raises(ValueError, match="nothing was ticked"):
        labels_from_fields({"item": "42"}, categories)
    with pytest.raises(ValueError, match="both ticked"):
        labels_from_fields({"item": "42", "none": "yes", "label-1": "yes"}, categories)
    with pytest.raises(ValueError, match="'label-7': no such category"):
        labels_from_fields({"item": "42", "label-7": "yes"}, categories)
