"""Amazon Mechanical Turk, registered through the ``lsun_crowd`` entry point like any vendor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsun_crowd.api import ConfigError, load_config
from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import CrowdAdapter, RegisterCrowdAdapter, parse_crowd_settings
from lsun_crowd.render import Renderer
from lsun_crowd_mturk.adapter import MTurkCrowd
from lsun_crowd_mturk.client import Api, MTurkError, make_client
from lsun_crowd_mturk.question import HTML_QUESTION_LIMIT, html_question
from lsun_crowd_mturk.settings import MTurkSettings

if TYPE_CHECKING:
    import typer

__all__ = [
    "HTML_QUESTION_LIMIT",
    "Api",
    "MTurkCrowd",
    "MTurkError",
    "MTurkSettings",
    "html_question",
    "make_client",
    "open_crowd",
]


def parse_settings(settings: Mapping[str, Any]) -> MTurkSettings:
    return parse_crowd_settings(MTurkSettings, settings)


def project_name(project_dir: Path) -> str:
    try:
        return load_config(project_dir).project.name
    except ConfigError:
        return project_dir.name


def open_crowd(
    settings: MTurkSettings, project: str, live_confirmed: bool = False, templates: Renderer | None = None
) -> MTurkCrowd:
    """The adapter on a real boto3 client, rendering with ``templates`` (the project's own
    ``hit_templates/`` over the defaults). In live mode it publishes only once the spend is
    confirmed: ``live_confirmed`` here, or later through :meth:`MTurkCrowd.confirm_spend`, which
    ``lsun-crowd run`` calls after showing the most it may spend and getting a yes."""
    crowd = MTurkCrowd(Api(make_client(settings), settings), settings, project, templates)
    if live_confirmed:
        crowd.confirm_spend()
    return crowd


def from_settings(settings: Mapping[str, Any], project_dir: Path) -> MTurkCrowd:
    return open_crowd(parse_settings(settings), project_name(project_dir), templates=Renderer(project_dir))


@hookimpl
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    register(CrowdAdapter("mturk", "Amazon Mechanical Turk through boto3 (sandbox unless --live)", from_settings))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from lsun_crowd_mturk.cli import mturk

    cli.add_typer(mturk, name="mturk")
