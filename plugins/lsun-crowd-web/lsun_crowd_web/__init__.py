"""The in-house browser crowd, registered through the ``lsun_crowd`` entry point like any vendor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import CrowdAdapter, RegisterCrowdAdapter, parse_crowd_settings
from lsun_crowd_web.adapter import WebCrowd
from lsun_crowd_web.state import WebState

if TYPE_CHECKING:
    import typer

__all__ = ["WebCrowd", "WebSettings", "WebState", "open_state", "parse_settings"]


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    state_file: str = "web-crowd.sqlite"  # the shared queue, relative to the project directory
    lease_seconds: float = Field(default=1800.0, gt=0)  # how long a handed-out HIT stays reserved
    examples: dict[str, dict[Literal["yes", "no"], list[str]]] = Field(default_factory=dict)  # category → URLs
    max_body_bytes: int = Field(default=64 * 1024, gt=0)  # a larger request body gets 413
    failed_token_limit: int = Field(default=10, ge=1)  # failed token attempts per address per window…
    failed_token_window_seconds: float = Field(default=300.0, gt=0)  # …before 429
    trusted_origins: list[str] = Field(default_factory=list)  # may post besides the server's own origin

    def examples_for(self) -> dict[str, list[tuple[str, bool]]]:
        return {
            category: [(url, True) for url in shown.get("yes", [])] + [(url, False) for url in shown.get("no", [])]
            for category, shown in self.examples.items()
        }


def parse_settings(settings: Mapping[str, Any]) -> WebSettings:
    return parse_crowd_settings(WebSettings, settings)


def open_state(settings: Mapping[str, Any], project_dir: Path) -> WebState:
    parsed = parse_settings(settings)
    return WebState(project_dir / parsed.state_file, parsed.lease_seconds)


def from_settings(settings: Mapping[str, Any], project_dir: Path) -> WebCrowd:
    return WebCrowd(open_state(settings, project_dir))


@hookimpl
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    register(CrowdAdapter("web", "in-house annotators in their browsers (lsun-crowd serve)", from_settings))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from lsun_crowd_web.cli import serve

    cli.command()(serve)
