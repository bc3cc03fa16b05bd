"""The annotators' app on a real uvicorn server, for the tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from lsun_crowd_web.server import create_app
from lsun_crowd_web.state import WebState


class LiveServer:
    """The annotators' app on a real uvicorn server, on a free local port, in a thread."""

    def __init__(
        self,
        state: WebState,
        examples: dict[str, list[tuple[str, bool]]] | None = None,
        *,
        log_config: dict[str, Any] | None = None,
        log_level: str = "warning",
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        options: dict[str, Any] = {"log_config": log_config} if log_config is not None else {}
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(state, examples), host="127.0.0.1", port=self.port, log_level=log_level, **options
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the web crowd server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
