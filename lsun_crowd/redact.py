"""Scrub credentials out of text before it is raised, printed or logged.

Platforms quote requests back in their error texts (an endpoint that echoes the ``Authorization``
header, a proxy that repeats the body), and servers log request paths that carry an annotator's
token. :func:`redact` replaces anything that looks like a secret with :data:`REDACTED` and leaves
the rest of the text as it was, so the message still says what went wrong.
:class:`RedactingFilter` does the same to every log record that passes through a handler or
logger it is installed on.

The patterns lean towards hiding too much: a false positive costs a less helpful message, a
false negative leaks a key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "[REDACTED]"

# A secret's name, as a header, query parameter, JSON key or keyword: "password",
# "aws_secret_access_key", "X-Amz-Security-Token", "SecretAccessKey", "Signature"... A name may
# carry up to four prefixes ending in "_" or "-" ("x-amz-", "aws_"), bounded so that a long run
# of dashes costs no backtracking. Not inside a longer word: "UniqueRequestToken" (MTurk's
# idempotency key) and "tokens" are left alone.
_SECRET_NAME = r"""
    (?<![A-Za-z0-9])
    (?:[A-Za-z0-9]{1,30}[_-]){0,4}
    (?:aws)?
    (?:password|passwd|pwd|secret|token|credentials?|signature
      |api[_-]?key|access[_-]?key[_-]?secret|secret[_-]?(?:access[_-]?)?key
      |(?:session|security|access|refresh|id)[_-]?token)
    (?![A-Za-z0-9])
"""
# What a name is set to: a quoted string (Python may show bytes as b'...'), or a bare value up to
# the next separator of the usual formats (query strings, headers, JSON, key=value lists).
_QUOTED_VALUE = r"""b?"(?:[^"\\\n]|\\.)*"|b?'(?:[^'\\\n]|\\.)*'"""
_BARE_VALUE = r"""[^\s&,;"'<>(){}\[\]\\]+"""
_SIGV4_VALUE = r"AWS4-HMAC-SHA256\s+Credential=[^\s,]+,\s*SignedHeaders=[^\s,]+,\s*Signature=[0-9a-fA-F]+"


@dataclass(frozen=True)
class _Rule:
    """One kind of secret: where it is, and what the match becomes."""

    name: str
    pattern: re.Pattern[str]
    replace: Any  # a replacement string or a function of the match (re.sub's ``repl``)


def _keep_quotes(match: re.Match[str]) -> str:
    """The name and separator as they were; a quoted value keeps its quotes around REDACTED."""
    value = match["value"]
    quote = value.lstrip("b")[:1] if value.lstrip("b")[:1] in ("'", '"') else ""
    return f"{match['key']}{quote}{REDACTED}{quote}"


_RULES = (
    # An Authorization header (or its JSON/dict form): the whole value is secret. An AWS Signature
    # V4 value is matched to its end; any other scheme's value may hold spaces and commas (Digest),
    # so it runs to the end of the line (or a quote, or an escaped newline in a repr'd string).
    _Rule(
        "authorization header",
        re.compile(
            r"""(?P<key>(?<![A-Za-z0-9])(?:proxy-)?authorization["']?\s*[:=]\s*)"""
            rf"""(?P<value>{_QUOTED_VALUE}|{_SIGV4_VALUE}|[^\r\n"'\\]+)""",
            re.IGNORECASE,
        ),
        _keep_quotes,
    ),
    # name=value, name: value, "name": "value", name="value" for every secret-looking name.
    _Rule(
        "secret key-value pair",
        re.compile(
            rf"""(?P<key>{_SECRET_NAME}["']?\s*[:=]\s*)(?P<value>{_QUOTED_VALUE}|{_BARE_VALUE})""",
            re.IGNORECASE | re.VERBOSE,
        ),
        _keep_quotes,
    ),
    # An OAuth bearer token outside a header ("use Bearer eyJhbGciOi..."); at least 16 characters
    # so that prose ("Bearer tokens expire") stays.
    _Rule("bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}=*"), f"Bearer {REDACTED}"),
    # AWS access key ids wherever they stand: a four-letter kind (AKIA long-term, ASIA temporary,
    # AROA role...) and 16 upper-case letters or digits.
    _Rule(
        "AWS access key id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AROA|AIDA|AGPA|ANPA|ANVA|AIPA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
        REDACTED,
    ),
    # The password in a URL's user information: postgresql://user:password@host/db. One already
    # masked as SQLAlchemy prints it (user:***@) is left as it is.
    _Rule(
        "URL password",
        re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?!\*+@)[^/\s@]+@"),
        rf"\g<head>{REDACTED}@",
    ),
    # The web crowd's annotator links, /a/<token>/...: the token is the annotator's password.
    # Tokens are long (32 characters as issued), which keeps short path parts such as /a/b.png.
    _Rule(
        "annotator link token",
        re.compile(r"/a/[A-Za-z0-9_-]{16,}(?=[/?#\s\"'<>]|$)"),
        f"/a/{REDACTED}",
    ),
)


def redact(text: str) -> str:
    """``text`` with every credential-looking part replaced by :data:`REDACTED`."""
    for rule in _RULES:
        text = rule.pattern.sub(rule.replace, text)
    return text


def _redacted_args(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {key: redact(value) if isinstance(value, str) else value for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(redact(value) if isinstance(value, str) else value for value in args)
    return args


class RedactingFilter(logging.Filter):
    """Redacts each record's message, exception and stack text; drops nothing.

    Where the secret sits inside one argument (uvicorn's access log passes the request path as
    one), the arguments are redacted one by one, so that formatters that read ``record.args``
    (uvicorn's ``AccessFormatter``) still work; otherwise the message is replaced by its redacted
    rendering."""

    _exceptions = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        rendered = record.getMessage()
        cleaned = redact(rendered)
        if cleaned != rendered:
            args = _redacted_args(record.args)
            try:
                rerendered = str(record.msg) % args if args else str(record.msg)
            except (TypeError, ValueError, KeyError):
                rerendered = rendered  # not clean, so the message is replaced below
            if redact(rerendered) == rerendered:
                record.args = args
            else:
                record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exceptions.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_logging(*handlers: logging.Handler) -> None:
    """Install a :class:`RedactingFilter` on ``handlers`` (by default, the root logger's), once."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
