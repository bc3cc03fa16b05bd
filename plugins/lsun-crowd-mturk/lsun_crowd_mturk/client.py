"""The boto3 MTurk client, and every request made through one retry policy.

Throttling, service faults and connection errors are retried with exponential backoff and jitter,
within a bounded number of attempts and a bounded total time. Request and validation errors are
not retried: they say what is wrong with the request and become a :class:`MTurkError`.

A request MTurk cannot recognise as repeated (no request token) and that must not take effect
twice goes through :meth:`Api.call_at_most_once`: it is retried only after failures that show it
was not carried out (throttled, unavailable, never sent). After any other failure it may or may
not have taken effect, and the error says so (:attr:`MTurkError.uncertain`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ParamValidationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from lsun_crowd.crowd import CrowdError
from lsun_crowd.redact import redact
from lsun_crowd_mturk.settings import MTurkSettings

log = logging.getLogger(__name__)
# Refused for the request rate or while unavailable: nothing was done, and a retry is safe.
UNPROCESSED_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable"})
TRANSIENT_CODES = UNPROCESSED_CODES | {"ServiceFault"}
REFUSALS = frozenset({"RequestError", "ParamValidationError"})  # MTurk (or botocore) said no: nothing was done
UNSENT = frozenset({EndpointConnectionError.__name__, ConnectTimeoutError.__name__})  # never reached MTurk


class MTurkError(CrowdError):
    """MTurk refused a request. ``code`` is its error code, e.g. ``RequestError``."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"MTurk {operation}: {code}: {message}")  # redacted by CrowdError
        self.operation = operation
        self.code = code
        self.detail = redact(message)

    @property
    def uncertain(self) -> bool:
        """Whether the request may have taken effect all the same: a service fault, or a
        connection lost after it was sent (a refusal or a throttle says it did not)."""
        return self.code not in REFUSALS and self.code not in UNPROCESSED_CODES and self.code not in UNSENT


def make_client(settings: MTurkSettings) -> Any:
    """A boto3 ``mturk`` client for the settings' endpoint. botocore's own retries are off: the
    :class:`Api` policy is the only one, so attempts and waiting are bounded in one place."""
    session = boto3.Session(profile_name=settings.profile)
    return session.client(
        "mturk",
        region_name=settings.region,
        endpoint_url=settings.endpoint(),
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60),
    )


def _transient(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in TRANSIENT_CODES
    return isinstance(error, BotoConnectionError | HTTPClientError)


def _unprocessed(error: BaseException) -> bool:
    """A failure that shows the request was not carried out: throttled, or never sent."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in UNPROCESSED_CODES
    return isinstance(error, EndpointConnectionError | ConnectTimeoutError)


class Api:
    """``call("CreateHITType", **params)``: one MTurk request, retried where that is safe."""

    def __init__(self, client: Any, settings: MTurkSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.settings = settings
        self.sleep = sleep
        self._methods = {api: name for name, api in client.meta.method_to_api_mapping.items()}

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return self._call(operation, _transient, params)

    def call_at_most_once(self, operation: str, **params: Any) -> dict[str, Any]:
        """One request that must not take effect twice: retried only when it surely did not
        take effect; otherwise an :class:`MTurkError` whose ``uncertain`` says it may have."""
        return self._call(operation, _unprocessed, params)

    def _call(
        self, operation: str, retryable: Callable[[BaseException], bool], params: dict[str, Any]
    ) -> dict[str, Any]:
        method = getattr(self.client, self._methods[operation])
        retrying = Retrying(
            retry=retry_if_exception(retryable),
            wait=wait_random_exponential(multiplier=0.5, max=30),
            stop=stop_after_attempt(self.settings.max_attempts) | stop_after_delay(self.settings.max_retry_seconds),
            sleep=self.sleep,
            before_sleep=lambda state: log.warning(
                "MTurk %s failed (%s); attempt %d, retrying",
                operation,
                redact(str(state.outcome.exception())) if state.outcome else "?",
                state.attempt_number,
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response: dict[str, Any] = method(**params)
        except ClientError as error:
            details = error.response.get("Error", {})
            raise MTurkError(operation, details.get("Code", "Unknown"), details.get("Message", str(error))) from None
        except ParamValidationError as error:
            raise MTurkError(operation, "ParamValidationError", str(error)) from None
        except BotoCoreError as error:
            raise MTurkError(operation, type(error).__name__, str(error)) from None
        return response
