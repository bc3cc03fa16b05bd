"""An MTurk endpoint that quotes the signed request back in its error texts: the credentials it
quotes appear nowhere, neither in the error raised, nor on stdout or stderr, nor in the logs."""

from __future__ import annotations

import logging

import pytest
import typer
from botocore.stub import Stubber
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkError, MTurkSettings, make_client

from lsun_crowd.api import reported_errors
from lsun_crowd.redact import REDACTED

KEY_ID = "AKIAMARKERKEY00ID789"  # AKIA + 16: the shape of a real access key id
SECRET = "marker-secret/Zq8r+Xw2Lk5Jm1Nb0Vc7Hy3Gt6Fd4S"
SESSION_TOKEN = "marker-session-FwoGZXIvYXdzEJr//////////wEaDOk"
MARKERS = (KEY_ID, "MARKERKEY00ID789", SECRET, "marker-secret", SESSION_TOKEN, "marker-session")


def echoed(reason: str) -> str:
    """What a misbehaving endpoint (or a proxy in front of it) answers: the request, headers and all."""
    return (
        f"{reason}. The request was:\nPOST / HTTP/1.1\nHost: mturk-requester-sandbox.us-east-1.amazonaws.com\n"
        f"X-Amz-Date: 20260101T000000Z\nX-Amz-Security-Token: {SESSION_TOKEN}\n"
        f"Authorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/us-east-1/mturk-requester/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7\n"
        f'{{"aws_secret_access_key": "{SECRET}"}}'
    )


def test_an_endpoint_echoing_the_signed_request_leaks_no_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    for variable in ("AWS_ENDPOINT_URL_MTURK", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    settings = MTurkSettings()
    client = make_client(settings)  # signs with the marker credentials from the environment
    assert client._request_signer._credentials.get_frozen_credentials().access_key == KEY_ID
    waits: list[float] = []
    crowd = MTurkCrowd(Api(client, settings, sleep=waits.append), settings, "proj")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_account_balance", "ThrottlingException", echoed("Rate exceeded"), 400)
        stubber.add_client_error("get_account_balance", "InvalidSignatureException", echoed("Bad signature"), 403)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(MTurkError) as raised:
            crowd.balance()
        with pytest.raises(typer.Exit) as stopped, reported_errors():  # how every command reports it
            raise raised.value
        stubber.assert_no_pending_responses()
    error = raised.value
    assert len(waits) == 1 and stopped.value.exit_code == 2  # retried once, then refused
    assert error.code == "InvalidSignatureException"
    assert str(error).startswith("MTurk GetAccountBalance: InvalidSignatureException: Bad signature.")
    assert f"Authorization: {REDACTED}" in str(error) and f"X-Amz-Security-Token: {REDACTED}" in error.detail
    assert f'"aws_secret_access_key": "{REDACTED}"' in str(error)
    warnings = [record.getMessage() for record in caplog.records if "retrying" in record.getMessage()]
    assert len(warnings) == 1 and f"Authorization: {REDACTED}" in warnings[0]
    printed = capsys.readouterr()
    assert "error: MTurk GetAccountBalance: InvalidSignatureException" in printed.err
    seen = {
        "exception": f"{error}\n{error!r}\n{error.detail}\n{error.args}",
        "stdout": printed.out,
        "stderr": printed.err,
        "log": caplog.text,
    }
    leaks = [(where, marker) for where, text in seen.items() for marker in MARKERS if marker in text]
    assert not leaks
