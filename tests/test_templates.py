"""HIT templates: escaping of everything that comes from users, one template for every target,
the templates shipped in the wheel, a project's own overrides reaching MTurk, the web crowd and
``lsun-crowd preview``, broken overrides reported by file and line, and ``lsun-crowd preview``."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import jinja2
import jinja2.meta
import pytest
import typer
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.crowd import HitItem
from lsun_crowd.preview import sample_hit
from lsun_crowd.project import Project
from lsun_crowd.render import (
    Renderer,
    TemplateError,
    answers_from_fields,
    labels_from_fields,
    render_grid,
    render_multi_label,
)
from lsun_crowd.testing import REMOVE, update_project

from .conftest import make_digits_project

REPOSITORY = Path(__file__).resolve().parent.parent
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
    assert "one HIT of 10 images for digit-1" in result.output and "characters" in result.output
    assert "MTurk" not in result.output  # the simulated crowd has no size limit to report
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


def write_override(directory: Path, body: str, name: str = "binary_grid.html") -> Path:
    path = directory / "hit_templates" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


MARKER = "ACME-HOUSE-RULES"
EXTENDING = (
    '{% extends "default:binary_grid.html" %}\n'
    '{% block instructions %}{{ super() }}<p class="acme">' + MARKER + ": {{ question }}</p>{% endblock %}\n"
    "{% block tile %}<!-- tile {{ loop.index }} -->{{ super() }}{% endblock %}\n"
)


def test_an_override_extends_the_default_and_keeps_the_contract(tmp_path: Path) -> None:
    write_override(tmp_path, EXTENDING)
    items = [HitItem("7", "https://i.org/7.png"), HitItem("8", "https://i.org/8.png")]
    html = render_grid(HOSTILE, items, "/s", "be careful", renderer=Renderer(tmp_path))
    assert f'<p class="acme">{MARKER}: ' in html and "<!-- tile 2 -->" in html
    assert "<script>alert(1)</script>" not in html  # autoescaping holds in an override too
    markup = parse(html)
    fields = [attrs["name"] for tag, attrs in markup.tags if tag == "input" and attrs.get("type") == "hidden"]
    assert fields == ["assignmentId", "item-7", "item-8"] and "be careful" in html
    # Without the project, and for templates it does not override, the defaults are used.
    assert MARKER not in render_grid("q?", items, "/s")
    assert render_multi_label(items[0], ["a"], "/s", renderer=Renderer(tmp_path)) == render_multi_label(
        items[0], ["a"], "/s"
    )


def test_the_wheel_ships_the_default_templates(tmp_path: Path) -> None:
    # A copy of what the wheel is built from, so that the build leaves the working tree alone.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lsun_crowd", "hit_templates"):
        shutil.copytree(REPOSITORY / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*command, str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("lsun_crowd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"lsun_crowd/hit_templates/binary_grid.html", "lsun_crowd/hit_templates/multi_label.html"} <= names
    assert not any(name.startswith("hit_templates/") for name in names)  # inside the package only


def test_the_editable_install_finds_the_templates_where_the_design_puts_them() -> None:
    import lsun_crowd.hit_templates

    if Path(lsun_crowd.__file__).parent != REPOSITORY / "lsun_crowd":
        pytest.skip("lsun_crowd is not installed from this checkout in editable mode")
    assert Path(lsun_crowd.hit_templates.__file__).parent == REPOSITORY / "hit_templates"
    assert not (REPOSITORY / "lsun_crowd" / "hit_templates").exists()


def web_project(directory: Path) -> Path:
    """The digits project on the web crowd: its preview renders the project's own grid."""
    make_digits_project(directory, limit=100, digits=range(1))
    update_project(directory, {"crowd": {"adapter": "web", "settings": REMOVE}})
    return directory


async def fetch(app: Any, path: str) -> httpx.Response:
    """A GET answered by the ASGI app itself, in this process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://annotators") as client:
        return await client.get(path)


def test_one_override_reaches_mturk_the_web_crowd_and_preview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsun_crowd_mturk import from_settings as mturk_from_settings
    from lsun_crowd_mturk.question import html_question
    from lsun_crowd_web import WebCrowd, open_state
    from lsun_crowd_web.cli import serve

    directory = web_project(tmp_path / "p")
    write_override(directory, EXTENDING)
    # lsun-crowd preview
    out = tmp_path / "preview.html"
    result = CliRunner().invoke(app, ["preview", "--project", str(directory), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert MARKER in out.read_text() and "<!-- tile 10 -->" in out.read_text()
    project = Project.open(directory)
    batch = sample_hit(project)
    # Mechanical Turk: the adapter the project would open, and the HTMLQuestion it would publish.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    images = {"image_root": str(directory / "images"), "image_url_prefix": "https://images.example.org"}
    mturk = mturk_from_settings(images, directory)
    question = html_question(mturk.render(batch, batch.hits[0].items))
    assert f"{MARKER}: Does the image show: digit-0?" in question and "https://images.example.org/" in question
    assert MARKER in mturk.preview(batch).html
    # The web crowd: the app `lsun-crowd serve` would run, serving the HIT to an annotator.
    state = open_state(project.config.crowd.settings, directory)
    WebCrowd(state).publish(batch)
    token = state.add_annotator("ana")
    project.close()
    served: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(app))
    serve(project=directory)
    page = asyncio.run(fetch(served[0], f"/a/{token}"))
    assert page.status_code == 200 and MARKER in page.text and f"/a/{token}/image/" in page.text


def test_a_broken_override_names_its_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsun_crowd_web import WebCrowd, open_state
    from lsun_crowd_web.cli import serve
    from lsun_crowd_web.server import create_app

    directory = web_project(tmp_path / "p")
    serve_app = typer.Typer()
    serve_app.command()(serve)
    monkeypatch.setattr("uvicorn.run", lambda app, **options: None)
    cases = {
        "{% extends 'default:binary_grid.html' %}\n{% block help %}\n{{ oops( }}\n{% endblock %}\n": "line 3: ",
        "{% extends 'default:binary_grid.html' %}\n{% block help %}\n\n{{ logo_url }}{% endblock %}\n": (
            "line 4: 'logo_url' is undefined"
        ),
        "{% extends 'default:no_such.html' %}\n": "line 1: no template named 'default:no_such.html'",
    }
    for body, problem in cases.items():
        path = write_override(directory, body)
        for runner_app, args in ((app, ["preview", "--project", str(directory)]), (serve_app, ["-p", str(directory)])):
            result = CliRunner().invoke(runner_app, args)
            assert result.exit_code == 2, result.output
            assert f"HIT template {path}, {problem}" in " ".join(result.output.split())
            assert "Traceback" not in result.output
        with pytest.raises(TemplateError, match=re.escape(f"HIT template {path}, {problem}")):
            Renderer(directory).grid("q?", [HitItem("1", "https://i.org/1.png")], "/s")
    # A page that breaks only for some HITs (more than one image) still names the file, with a 500.
    path = write_override(directory, "{% if items | length > 1 %}{{ items[5].missing }}{% endif %}ok\n")
    Renderer(directory).check()
    project = Project.open(directory)
    state = open_state(project.config.crowd.settings, directory)
    WebCrowd(state).publish(sample_hit(project))
    project.close()
    token = state.add_annotator("ana")
    page = asyncio.run(fetch(create_app(state, templates=Renderer(directory)), f"/a/{token}"))
    assert page.status_code == 500 and f"HIT template {path}, line 1: " in page.text


def test_the_template_contract_is_documented() -> None:
    """Every variable a template receives, every block it offers and every field it posts is in
    docs/templates.md."""
    documented = (REPOSITORY / "docs" / "templates.md").read_text()
    environment = Renderer().environment
    for name in ("binary_grid.html", "multi_label.html"):
        source = (REPOSITORY / "hit_templates" / name).read_text()
        variables = jinja2.meta.find_undeclared_variables(environment.parse(source))
        blocks = set(re.findall(r"{%\s*block\s+(\w+)", source))
        assert variables and blocks
        for word in variables | blocks:
            assert f"`{word}`" in documented, f"{name}: {word} is not in docs/templates.md"
    for field in ("assignmentId", "item-<item_key>", "label-<n>", "none", "item"):
        assert f"`{field}`" in documented
