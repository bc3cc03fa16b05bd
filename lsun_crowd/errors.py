"""How a command reports an expected failure: one line on stderr naming the file, row or field,
and exit status 2, never a traceback. Plugins' commands use it too (through :mod:`lsun_crowd.api`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from lsun_crowd.config import ConfigError
from lsun_crowd.crowd import CrowdError, SpendNotConfirmed
from lsun_crowd.embed import EmbeddingError
from lsun_crowd.ingest import IngestError
from lsun_crowd.lock import LockHeld
from lsun_crowd.plugins import PluginError
from lsun_crowd.redact import redact
from lsun_crowd.store import StoreError

EXPECTED_ERRORS = (
    ConfigError,
    CrowdError,
    EmbeddingError,
    IngestError,
    LockHeld,
    PluginError,
    SpendNotConfirmed,
    StoreError,
    FileNotFoundError,
    ValueError,
)

errors = Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def reported_errors() -> Iterator[None]:
    try:
        yield
    except EXPECTED_ERRORS as error:
        errors.print("[bold red]error:[/] ", end="")
        errors.print(redact(str(error)), markup=False)  # a crowd's text is scrubbed already; others too
        raise typer.Exit(2) from None
