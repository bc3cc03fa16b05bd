"""Credentials are scrubbed out of platform error texts, printed errors and log records, and
ordinary text (ids, hashes, paths) is left exactly as it was."""

from __future__ import annotations

import logging

import pytest
import typer

from lsun_crowd.crowd import CrowdError, TransientCrowdError
from lsun_crowd.errors import reported_errors
from lsun_crowd.redact import REDACTED, RedactingFilter, redact, redact_logging

KEY_ID = "AKIAMARKER0123456789"
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
SIGV4 = (
    f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/us-east-1/mturk-requester/aws4_request, "
    f"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={SIGNATURE}"
)
BOTOCORE_MESSAGE = (
    "An error occurred (InvalidSignatureException) when calling the CreateHITWithHITType operation: "
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    f"Secret Access Key and signing method. Authorization: {SIGV4}"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BOTOCORE_MESSAGE,
            "An error occurred (InvalidSignatureException) when calling the CreateHITWithHITType operation: "
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            f"Secret Access Key and signing method. Authorization: {REDACTED}",
            id="botocore ClientError quoting a SigV4 Authorization header",
        ),
        pytest.param(
            "echoed request:\nPOST / HTTP/1.1\nHost: mturk-requester.us-east-1.amazonaws.com\n"
            "X-Amz-Date: 20260101T000000Z\nX-Amz-Security-Token: FwoGZXIvYXdzEJr//////////wEaDOkq+Zm3=\n"
            f"Authorization: {SIGV4}\n\n{{}}",
            "echoed request:\nPOST / HTTP/1.1\nHost: mturk-requester.us-east-1.amazonaws.com\n"
            f"X-Amz-Date: 20260101T000000Z\nX-Amz-Security-Token: {REDACTED}\n"
            f"Authorization: {REDACTED}\n\n{{}}",
            id="echoed request with a session token",
        ),
        pytest.param(
            "could not connect to postgresql+psycopg://crowd:s3cr%40t@db.example.org:5432/lsun (timeout)",
            f"could not connect to postgresql+psycopg://crowd:{REDACTED}@db.example.org:5432/lsun (timeout)",
            id="PostgreSQL URL with a password",
        ),
        pytest.param(
            '{"Credentials": {"AccessKeyId": "ASIAMARKER0123456789", '
            '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SessionToken": "IQoJb3JpZ2lu\\"x"}}',
            f'{{"Credentials": {{"AccessKeyId": "{REDACTED}", '
            f'"SecretAccessKey": "{REDACTED}", "SessionToken": "{REDACTED}"}}}}',
            id="JSON body with SecretAccessKey",
        ),
        pytest.param(
            "aws_access_key_id=AKIAMARKER0123456789 aws_secret_access_key = wJalr/K7+MDENG password=hunter2&"
            "user=ana, secret: 'x y', api_key=\"k-1\", token=abc;",
            f"aws_access_key_id={REDACTED} aws_secret_access_key = {REDACTED} password={REDACTED}&"
            f"user=ana, secret: '{REDACTED}', api_key=\"{REDACTED}\", token={REDACTED};",
            id="key=value pairs",
        ),
        pytest.param(
            "https://b.s3.amazonaws.com/i.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAMARKER0123456789"
            "%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=9f86d081&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/i.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={REDACTED}&X-Amz-Signature={REDACTED}&X-Amz-Expires=60",
            id="presigned URL",
        ),
        pytest.param(
            "{'Authorization': b'Bearer abc', 'X-Amz-Target': 'MTurkRequesterServiceV20170117.GetHIT'}",
            f"{{'Authorization': '{REDACTED}', 'X-Amz-Target': 'MTurkRequesterServiceV20170117.GetHIT'}}",
            id="repr of a headers dict",
        ),
        pytest.param(
            "retry with Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.c2lnbmF0dXJl now",
            f"retry with Bearer {REDACTED} now",
            id="bearer token",
        ),
        pytest.param(
            'INFO 127.0.0.1:5123 - "POST /a/Zk3l9_Qx-AbCdEfGhIjKlMnOpQrStUv/submit/HIT7 HTTP/1.1" 303\n'
            "link: http://127.0.0.1:8765/a/Zk3l9_Qx-AbCdEfGhIjKlMnOpQrStUv",
            f'INFO 127.0.0.1:5123 - "POST /a/{REDACTED}/submit/HIT7 HTTP/1.1" 303\n'
            f"link: http://127.0.0.1:8765/a/{REDACTED}",
            id="annotator links",
        ),
    ],
)
def test_credentials_are_replaced_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # redacting twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "HIT 3XYZ0123456789ABCDEFGHIJKLMN has 3 assignments: 3ABCDEFGHIJKLMNOPQRSTUVWXYZ01 approved",
        "HITTypeId 3HYQ7SX3MTYEXAMPLEKEYABCDEFGHI, AssignmentId 3XYZKLMNOPQRSTUV0123456789ABCD",
        "image sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 already stored",
        "/data/lsun/a/bedroom/0001.webp and /srv/a/b.png and C:\\images\\a\\cat.jpg",
        "AWS.MechanicalTurk.HitAlreadyExists: There is already a HIT with the same UniqueRequestToken",
        "The request signature we calculated does not match. Check your AWS Secret Access Key.",
        "unknown or missing annotator token; 12 tokens issued; Bearer tokens expire",
        "https://images.example.org/cats/0001.png?size=large",
        "cannot reach postgresql+psycopg://lsun:***@db.example.org:5432/lsun: connection refused",
        "worker A1B2C3D4E5F6G7 answered yes; spend $12.34; password reset needed",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_crowd_error_is_redacted_before_anyone_sees_it(capsys: pytest.CaptureFixture[str]) -> None:
    error = TransientCrowdError(BOTOCORE_MESSAGE, retry_after=2.0)
    assert KEY_ID not in str(error) and SIGNATURE not in repr(error)
    assert str(error).endswith(f"Authorization: {REDACTED}") and error.retry_after == 2.0
    assert str(CrowdError("HIT 3XYZ gone")) == "HIT 3XYZ gone"
    with pytest.raises(typer.Exit) as stopped, reported_errors():
        raise ValueError(f"settings: database_url postgresql://crowd:hunter2@db/lsun and {KEY_ID}")
    assert stopped.value.exit_code == 2
    printed = capsys.readouterr().err
    assert printed == f"error: settings: database_url postgresql://crowd:{REDACTED}@db/lsun and {REDACTED}\n"


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    redact_logging(handler)
    redact_logging(handler)  # installed once
    assert sum(isinstance(found, RedactingFilter) for found in handler.filters) == 1
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("MTurk %s failed (%s)", "GetHIT", f"Authorization: {SIGV4}")
        logger.warning("password=%s for %s", "hunter2", "ana")  # the secret's name is in the template
        try:
            raise RuntimeError(f"db postgresql://u:hunter2@h/d key {KEY_ID}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert records[0] == f"MTurk GetHIT failed (Authorization: {REDACTED})"
    assert records[1] == f"password={REDACTED} for ana"
    assert records[2].startswith("failed\nTraceback")
    assert records[2].endswith(f"RuntimeError: db postgresql://u:{REDACTED}@h/d key {REDACTED}")
    assert "hunter2" not in "".join(records) and KEY_ID not in "".join(records)


def test_arguments_are_redacted_one_by_one_where_that_suffices() -> None:
    # uvicorn's access formatter unpacks record.args, so they must stay a tuple of five.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/a/Zk3l9_Qx-AbCdEfGhIjKlMnOpQrStUv", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.args == ("127.0.0.1:5000", "GET", f"/a/{REDACTED}", "1.1", 200)
    assert record.getMessage() == f'127.0.0.1:5000 - "GET /a/{REDACTED} HTTP/1.1" 200'
