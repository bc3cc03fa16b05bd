"""How ``lsun-crowd serve`` has uvicorn log: uvicorn's own configuration, with every handler and
logger passing records through :class:`lsun_crowd.redact.RedactingFilter`.

Every page lives under ``/a/{token}``, and the token is the annotator's password: uvicorn's access
log writes request paths as they came, and its error log can quote them, so both are redacted
before anything reaches a terminal or a log file.
"""

from __future__ import annotations

import copy
from typing import Any

from uvicorn.config import LOGGING_CONFIG

REDACT = "redact_credentials"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def server_log_config() -> dict[str, Any]:
    """uvicorn's default ``logging.config.dictConfig`` configuration, redacting.

    The filter sits on the handlers (which see every record, propagated ones included) and on
    uvicorn's loggers (so that a handler someone adds to one of them later is covered too)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})[REDACT] = {"()": "lsun_crowd.redact.RedactingFilter"}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), REDACT]
    for name in UVICORN_LOGGERS:
        logger = config["loggers"].setdefault(name, {})
        logger["filters"] = [*logger.get("filters", []), REDACT]
    return config
