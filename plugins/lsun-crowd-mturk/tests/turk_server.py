"""An MTurk-compatible HTTP server on 127.0.0.1, for tests that drive the adapter over the wire.

It speaks the protocol boto3 speaks to MTurk: JSON 1.1, ``POST /`` with ``X-Amz-Target:
MTurkRequesterServiceV20170117.<Operation>``, timestamps as epoch seconds, errors as
``{"__type": code, "Message": ...}`` with MTurk's status (400 for a ``RequestError`` or
throttling, 500 for a ``ServiceFault``, 503 when unavailable). The state is a
:class:`fake_turk.FakeTurk`, the one the Stubber tests use, so its ledger, simulated workers and
faults (queued, or a seeded :class:`fake_turk.Chaos`) hold over HTTP too; a lost answer is an
operation that took effect and then a dropped connection or a 500.

Point a client at it through ``AWS_ENDPOINT_URL_MTURK`` (:func:`point_at`).
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.model import Shape
from fake_turk import LOST, FakeTurk, Refused, fault_status

TARGET_PREFIX = "MTurkRequesterServiceV20170117."
SERVICE_MODEL = boto3.client(
    "mturk", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
).meta.service_model
MESSAGES = {
    "ThrottlingException": "Rate exceeded",
    "ServiceUnavailable": "Service is unavailable, try again later.",
    "ServiceFault": "Amazon Mechanical Turk is temporarily unable to process your request. Try your call again.",
}


def from_wire(value: Any, shape: Shape) -> Any:
    """A request's JSON value as the fake's operations take it: timestamps as datetimes."""
    if shape.type_name == "structure" and isinstance(value, dict):
        return {name: from_wire(item, shape.members[name]) for name, item in value.items() if name in shape.members}
    if shape.type_name == "list" and isinstance(value, list):
        return [from_wire(item, shape.member) for item in value]
    if shape.type_name == "timestamp":
        return datetime.fromtimestamp(float(value), UTC)
    return value


def to_wire(value: Any, shape: Shape) -> Any:
    """An answer as MTurk sends it: only the members of the output shape, timestamps as epoch seconds."""
    if shape.type_name == "structure":
        return {name: to_wire(item, shape.members[name]) for name, item in value.items() if name in shape.members}
    if shape.type_name == "list":
        return [to_wire(item, shape.member) for item in value]
    if shape.type_name == "timestamp":
        return value.timestamp() if isinstance(value, datetime) else value
    if isinstance(value, Decimal):
        return str(value)
    return value


class TurkServer:
    """``with TurkServer() as server:`` a running server at ``server.url`` over ``server.turk``."""

    def __init__(self, turk: FakeTurk | None = None) -> None:
        self.turk = turk or FakeTurk()
        self.lock = threading.Lock()  # one request (or one simulated worker) at a time changes the state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self._serve, name="turk-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)  # stops within 50 ms of shutdown()

    def __enter__(self) -> TurkServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def work(self, *args: Any, **kwargs: Any) -> str | None:
        """A simulated worker takes a HIT (:meth:`fake_turk.FakeTurk.work`), between requests."""
        with self.lock:
            return self.turk.work(*args, **kwargs)

    def answer(self, target: str, body: bytes) -> tuple[int, dict[str, Any] | None]:
        """The status and JSON answer to one request; ``None`` for an answer lost on the way."""
        operation = target.removeprefix(TARGET_PREFIX)
        if not target.startswith(TARGET_PREFIX) or operation not in SERVICE_MODEL.operation_names:
            return 400, {"__type": "UnknownOperationException", "Message": f"unknown operation {target!r}"}
        model = SERVICE_MODEL.operation_model(operation)
        params = from_wire(json.loads(body or b"{}"), model.input_shape) if model.input_shape else {}
        with self.lock:
            self.turk.calls.append((operation, dict(params)))
            fault = self.turk.next_fault(operation)
            if fault == "connection":
                return 0, None  # refused before anything happened: the connection drops
            if fault is not None and fault not in LOST:
                return fault_status(fault), {"__type": fault, "Message": MESSAGES.get(fault, f"injected {fault}")}
            try:
                response = getattr(self.turk, operation)(params)
            except Refused as refusal:
                return 400, {"__type": refusal.code, "Message": str(refusal)}
        if fault == "lost":
            return 0, None
        if fault == "lost-500":
            return 500, {"__type": "ServiceFault", "Message": MESSAGES["ServiceFault"]}
        return 200, to_wire(response, model.output_shape) if model.output_shape else {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm holds the
                # body until the client's delayed ACK, 40 ms a request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = server.answer(self.headers.get("X-Amz-Target", ""), body)
                if answer is None:
                    self.close_connection = True  # the caller hears nothing back
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read the fake's calls, not an access log

        return Handler


def point_at(server: TurkServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 pointed at the server through ``AWS_ENDPOINT_URL_MTURK``, with dummy credentials and
    no shared AWS files, so nothing reaches past 127.0.0.1."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_MTURK", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALTURKSERVER0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-turk-server-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
