"""Rate limiting of failed token attempts (an unknown annotator token, a forged form token), per
client address over a sliding window. An address with ``limit`` failures in the last ``window``
seconds gets 429 with ``Retry-After`` on every request until enough of them age out, so guessing
tokens is slow; requests that succeed are never counted."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_FAILURE_LIMIT = 10
DEFAULT_WINDOW_SECONDS = 300.0
MAX_TRACKED_ADDRESSES = 100_000  # beyond this, addresses with no recent failure are forgotten first


class FailedAttempts:
    """Failure times per client address, each kept for ``window`` seconds."""

    def __init__(
        self,
        limit: int = DEFAULT_FAILURE_LIMIT,
        window: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or not window > 0:
            raise ValueError(f"a failure limit needs limit >= 1 and window > 0, not {limit} and {window}")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the app may run handlers in threads

    def record(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            if address not in self._failures and len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._forget_old(now)
            self._recent(address, now).append(now)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` if it is not held back."""
        with self._lock:
            if address not in self._failures:  # asked of every request: never track an address for it
                return None
            now = self.clock()
            recent = self._recent(address, now)
            if not recent:
                del self._failures[address]
                return None
            if len(recent) < self.limit:
                return None
            # Below the limit again once the oldest (len - limit + 1) failures have aged out.
            return recent[len(recent) - self.limit] + self.window - now

    def tracked(self) -> int:
        """Addresses with failures kept: what the limiter holds in memory."""
        with self._lock:
            return len(self._failures)

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def _forget_old(self, now: float) -> None:
        for address in list(self._failures):
            if not self._recent(address, now):
                del self._failures[address]
        while len(self._failures) >= MAX_TRACKED_ADDRESSES:  # all recent: drop the oldest tracked
            del self._failures[next(iter(self._failures))]


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitFailures:
    """Answers 429 (with ``Retry-After`` in whole seconds) to an address held back by ``attempts``."""

    def __init__(self, app: ASGIApp, attempts: FailedAttempts) -> None:
        self.app = app
        self.attempts = attempts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            wait = self.attempts.retry_after(client_address(scope))
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                response = PlainTextResponse(
                    f"too many failed attempts from this address: try again in {seconds} s",
                    status_code=429,
                    headers={"Retry-After": str(seconds)},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
