"""The core's public API for plugins, beyond the crowd interface.

A plugin imports only the declared public modules: :mod:`lsun_crowd.crowd` (the protocol and
its values), :mod:`lsun_crowd.plugins` and :mod:`lsun_crowd.hookspecs` (registration),
:mod:`lsun_crowd.render` (HIT templates), :mod:`lsun_crowd.fees` (MTurk's fee schedule),
:mod:`lsun_crowd.testing` (the conformance suite and project factory), :mod:`lsun_crowd.redact`
(scrubbing credentials out of texts and logs) and this module. Never the
command line, the schema or the round steps: ``tests/test_public_api.py`` checks every plugin.

What an adapter needs (configuration, answer files, worker records) is imported here at once;
what a command running a project needs loads on first use, so that an adapter does not pay for
the model stack.
"""

from __future__ import annotations

import importlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from lsun_crowd import ledger
from lsun_crowd.config import Config, ConfigError, load_config
from lsun_crowd.ingest import IngestError, read_answers
from lsun_crowd.ledger import PlatformWork, WorkerRecord
from lsun_crowd.redact import RedactingFilter, redact

if TYPE_CHECKING:
    from lsun_crowd.errors import reported_errors as reported_errors
    from lsun_crowd.preview import sample_hit as sample_hit
    from lsun_crowd.progress import Progress as Progress
    from lsun_crowd.progress import RichCascadeProgress as RichCascadeProgress
    from lsun_crowd.progress import progress_bars as progress_bars
    from lsun_crowd.project import Project as Project
    from lsun_crowd.quality import WorkerQuality as WorkerQuality
    from lsun_crowd.quality import assess as assess
    from lsun_crowd.runner import CategoryOutcome as CategoryOutcome
    from lsun_crowd.running import confirm_spend as confirm_spend
    from lsun_crowd.running import exit_code as exit_code
    from lsun_crowd.running import run_project as run_project
    from lsun_crowd.synthetic import synthetic_truth as synthetic_truth

_LAZY = {
    "CategoryOutcome": "lsun_crowd.runner",
    "Progress": "lsun_crowd.progress",
    "Project": "lsun_crowd.project",
    "RichCascadeProgress": "lsun_crowd.progress",
    "WorkerQuality": "lsun_crowd.quality",
    "assess": "lsun_crowd.quality",
    "confirm_spend": "lsun_crowd.running",
    "progress_bars": "lsun_crowd.progress",
    "reported_errors": "lsun_crowd.errors",
    "run_project": "lsun_crowd.running",
    "exit_code": "lsun_crowd.running",
    "sample_hit": "lsun_crowd.preview",
    "synthetic_truth": "lsun_crowd.synthetic",
}

__all__ = [
    "CategoryOutcome",
    "Config",
    "ConfigError",
    "IngestError",
    "PlatformWork",
    "Progress",
    "Project",
    "RedactingFilter",
    "RichCascadeProgress",
    "WorkerQuality",
    "WorkerRecord",
    "assess",
    "confirm_spend",
    "exit_code",
    "load_config",
    "platform_work",
    "progress_bars",
    "project_key",
    "read_answers",
    "redact",
    "reported_errors",
    "run_project",
    "sample_hit",
    "spent",
    "synthetic_truth",
    "worker_records",
]


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def spent(project: Project) -> Decimal:
    """Money the project has booked so far (rewards, fees, bonuses)."""
    with project.store.session() as session:
        return ledger.spent(session)


def worker_records(project: Project) -> list[WorkerRecord]:
    """Every worker the project has seen, with their assignments and gold record."""
    with project.store.session() as session:
        return ledger.worker_records(session)


def platform_work(project: Project) -> PlatformWork:
    """The HITs and jobs the project's store accounts for (:class:`~lsun_crowd.ledger.PlatformWork`)."""
    with project.store.session() as session:
        return ledger.platform_work(session)


def project_key(project: Project) -> str:
    """``name#id``: what the project's batch ids and annotations start with, unique to it."""
    return project.store.project_key(project.config.project.name)
