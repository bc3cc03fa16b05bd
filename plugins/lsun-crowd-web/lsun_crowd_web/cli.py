"""``lsun-crowd serve --project DIR [--host 127.0.0.1] [--port N] [--add-annotator NAME]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lsun_crowd.api import Project, reported_errors
from lsun_crowd.render import Renderer

console = Console(soft_wrap=True)


def serve(
    project: Annotated[Path, typer.Option("--project", "-p", help="project directory")] = Path("."),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
    add_annotator: Annotated[str | None, typer.Option(help="create NAME's personal link and exit")] = None,
) -> None:
    """Serve the web crowd's HITs to annotators, or add an annotator's personal link."""
    from lsun_crowd_web import open_state, parse_settings
    from lsun_crowd_web.rate_limit import FailedAttempts
    from lsun_crowd_web.server import create_app
    from lsun_crowd_web.server_logging import server_log_config

    with reported_errors():
        opened = Project.open(project)
        state = open_state(opened.config.crowd.settings, opened.directory)
        if add_annotator:
            token = state.add_annotator(add_annotator)
            console.print(f"{add_annotator}: http://{host}:{port}/a/{token}")
            console.print("Keep this link private: it is the annotator's password.")
            return
        import uvicorn

        templates = Renderer(opened.directory)
        templates.check()  # a broken hit_templates/ override stops here, naming the file
        console.print(f"serving {opened.directory.name}'s HITs on http://{host}:{port}/a/<token>")
        settings = parse_settings(opened.config.crowd.settings)
        app = create_app(
            state,
            settings.examples_for(),
            templates,
            max_body_bytes=settings.max_body_bytes,
            failed_attempts=FailedAttempts(settings.failed_token_limit, settings.failed_token_window_seconds),
            trusted_origins=settings.trusted_origins,
        )
        uvicorn.run(app, host=host, port=port, log_level="warning", log_config=server_log_config())
