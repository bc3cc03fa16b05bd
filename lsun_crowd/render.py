"""HITs rendered from Jinja2 templates: the defaults shipped as ``lsun_crowd.hit_templates``, and a
project's own ``hit_templates/`` folder, whose templates override the defaults of the same name and
may extend them (``{% extends "default:binary_grid.html" %}``). Autoescaping and strict undefined
variables are always on. The HTML is self-contained (no external script, font or style), so it runs
inside MTurk's ``HTMLQuestion`` and on our own server alike; where the form posts is a variable,
never a second copy of the template. ``docs/templates.md`` is the contract a template keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2

from lsun_crowd.crowd import NO, YES, HitItem

FIELD_PREFIX = "item-"
"""Each image's answer is a form field named ``item-<item key>`` holding ``yes`` or ``no``."""
MULTI_LABEL_ITEM_FIELD = "item"
PROJECT_TEMPLATES = "hit_templates"  # the folder, inside a project directory, of its own templates
DEFAULT_PREFIX = "default"  # "default:<name>" always names the packaged template
GRID_TEMPLATE = "binary_grid.html"
MULTI_LABEL_TEMPLATE = "multi_label.html"
TEMPLATE_NAMES = (GRID_TEMPLATE, MULTI_LABEL_TEMPLATE)
# Python errors a template's own expressions can raise (a filter on the wrong type, say).
_EXPRESSION_ERRORS = (TypeError, ValueError, LookupError, AttributeError, ArithmeticError)


class TemplateError(ValueError):
    """A HIT cannot be rendered as asked: a broken template (the message names its file and line),
    or a page too large for the platform."""


def template_environment(project_dir: Path | None = None) -> jinja2.Environment:
    """The templates of a project: ``<project_dir>/hit_templates/<name>`` first, then the packaged
    default; ``default:<name>`` is always the packaged one, so an override can extend it."""
    default = jinja2.PackageLoader("lsun_crowd.hit_templates", "")
    loaders: list[jinja2.BaseLoader] = [jinja2.PrefixLoader({DEFAULT_PREFIX: default}, delimiter=":")]
    if project_dir is not None:
        loaders.append(jinja2.FileSystemLoader(project_dir / PROJECT_TEMPLATES))
    loaders.append(default)
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


class Renderer:
    """Renders HITs with one project's templates (the packaged defaults alone without a project)."""

    def __init__(self, project_dir: Path | None = None) -> None:
        self.project_dir = project_dir
        self.environment = template_environment(project_dir)

    @property
    def override_dir(self) -> Path | None:
        return self.project_dir / PROJECT_TEMPLATES if self.project_dir is not None else None

    def render(self, name: str, **context: Any) -> str:
        """Template ``name`` rendered with ``context``; a broken template raises
        :class:`TemplateError` naming its file and line instead of a traceback."""
        try:
            return self.environment.get_template(name).render(**context)
        except jinja2.TemplateSyntaxError as error:
            file = error.filename or error.name or name
            raise TemplateError(f"HIT template {file}, line {error.lineno}: {error.message}") from None
        except (jinja2.TemplateError, *_EXPRESSION_ERRORS) as error:
            frame = _template_frame(error.__traceback__)
            if frame is None and not isinstance(error, jinja2.TemplateError):
                raise  # not the template's fault
            place = f"{frame[0]}, line {frame[1]}" if frame else name
            raise TemplateError(f"HIT template {place}: {_describe(error)}") from None

    def grid(
        self,
        question: str,
        items: Sequence[HitItem],
        submit_url: str,
        instructions: str = "",
        assignment_id: str = "",
        examples: Sequence[tuple[str, bool]] = (),
    ) -> str:
        """The binary grid: one yes/no answer per image, by click or keyboard, under the instructions
        and any ``examples`` (image URL, does it show the category)."""
        return self.render(
            GRID_TEMPLATE,
            question=question,
            instructions=instructions,
            examples=examples,
            items=items,
            submit_url=submit_url,
            assignment_id=assignment_id,
            field_prefix=FIELD_PREFIX,
        )

    def multi_label(
        self,
        item: HitItem,
        categories: Sequence[str],
        submit_url: str,
        instructions: str = "",
        assignment_id: str = "",
    ) -> str:
        """One image; the worker ticks every category it shows, or "none of these"."""
        return self.render(
            MULTI_LABEL_TEMPLATE,
            item=item,
            categories=categories,
            submit_url=submit_url,
            instructions=instructions,
            assignment_id=assignment_id,
            item_field=MULTI_LABEL_ITEM_FIELD,
        )

    def check(self) -> None:
        """Render every template once with sample values, so that a broken override (a syntax
        error, a variable no template receives) is reported before anyone is shown a HIT."""
        sample = HitItem("1", "https://example.org/1.png")
        self.grid("Does the image show: sample?", [sample], "#", "instructions", "A1", [(sample.uri, True)])
        self.multi_label(sample, ["sample"], "#", "instructions", "A1")


DEFAULT_RENDERER = Renderer()


def _describe(error: Exception) -> str:
    if isinstance(error, jinja2.TemplateNotFound):
        return (
            f"no template named {error.name!r} (the packaged ones are "
            f"{', '.join(f'{DEFAULT_PREFIX}:{name}' for name in TEMPLATE_NAMES)})"
        )
    if isinstance(error, jinja2.TemplateError):
        return str(error.message)
    return f"{type(error).__name__}: {error}"


def _template_frame(traceback: TracebackType | None) -> tuple[str, int] | None:
    """The innermost template file and line of a rendering error (Jinja rewrites the traceback so
    that template frames carry the template's file name and line)."""
    found = None
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            found = (filename, traceback.tb_lineno)
        traceback = traceback.tb_next
    return found


def render_grid(
    question: str,
    items: Sequence[HitItem],
    submit_url: str,
    instructions: str = "",
    assignment_id: str = "",
    examples: Sequence[tuple[str, bool]] = (),
    renderer: Renderer | None = None,
) -> str:
    """:meth:`Renderer.grid` with ``renderer`` (a project's templates), else the packaged defaults."""
    return (renderer or DEFAULT_RENDERER).grid(question, items, submit_url, instructions, assignment_id, examples)


def render_multi_label(
    item: HitItem,
    categories: Sequence[str],
    submit_url: str,
    instructions: str = "",
    assignment_id: str = "",
    renderer: Renderer | None = None,
) -> str:
    """:meth:`Renderer.multi_label` with ``renderer``, else the packaged defaults."""
    return (renderer or DEFAULT_RENDERER).multi_label(item, categories, submit_url, instructions, assignment_id)


def labels_from_fields(fields: Mapping[str, str], categories: Sequence[str] | None = None) -> tuple[str, set[str]]:
    """The item key and the categories ticked on a submitted multi-label form. Each ticked
    ``label-<n>`` posts the category's name, so a form read without ``categories`` (as MTurk hands
    it back) still says what was ticked; with ``categories``, ``yes`` names the ``n``-th one too.
    Nothing ticked (not even "none"), a tick beside "none" and a category not asked are errors
    naming the problem."""
    item = fields.get(MULTI_LABEL_ITEM_FIELD, "")
    if not item:
        raise ValueError(f"field {MULTI_LABEL_ITEM_FIELD!r}: missing")
    ticked = set()
    for name, value in fields.items():
        if not name.startswith("label-") or not value:
            continue
        index = name.removeprefix("label-")
        if categories is None:
            ticked.add(value)
            continue
        if not index.isdigit() or int(index) >= len(categories):
            raise ValueError(f"field {name!r}: no such category")
        if value not in (YES, categories[int(index)]):
            raise ValueError(f"field {name!r}: {value!r} is not {categories[int(index)]!r}")
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
