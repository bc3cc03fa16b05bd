"""Files and folders a command writes for the user: whole or not at all, named when they cannot be.

Every command that writes a file (``export``, ``aggregate``, ``preview``, ``report``'s page) writes
through :func:`atomic_file`: missing parent folders are made, the content goes to a temporary file
beside the target that is moved into place only once whole, and any failure removes it and raises
:class:`OutputError`, one line naming the user's own path. Commands that fill a folder (``report``,
``demo``, ``simulate``) check it with :func:`output_folder` first.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal, TextIO, cast, overload


class OutputError(ValueError):
    """A file or folder the user named cannot be written; the message names it."""


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def _parent(out: Path) -> None:
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; name a file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{out}: cannot make its folder {out.parent}: a file has that name") from None
    except OSError as error:
        raise OutputError(f"{out}: cannot make its folder {out.parent}: {_reason(error)}") from None


@overload
@contextmanager
def atomic_file(out: Path, mode: Literal["w"] = "w", newline: str | None = None) -> Iterator[TextIO]: ...


@overload
@contextmanager
def atomic_file(out: Path, mode: Literal["wb"], newline: str | None = None) -> Iterator[IO[bytes]]: ...


@contextmanager
def atomic_file(out: Path, mode: str = "w", newline: str | None = None) -> Iterator[TextIO] | Iterator[IO[bytes]]:
    """A handle whose content becomes ``out`` when the block ends without error; nothing of it is
    left behind otherwise (no partial file), and an :class:`OSError` becomes :class:`OutputError`."""
    _parent(out)
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        handle = temporary.open(mode, encoding=None if "b" in mode else "utf-8", newline=newline)
    except OSError as error:
        raise OutputError(f"{out}: cannot write here: {_reason(error)}") from None
    try:
        with handle:
            yield cast(TextIO, handle) if "b" not in mode else handle
        os.replace(temporary, out)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot write: {_reason(error)}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(out: Path, text: str) -> None:
    """``out`` holding ``text`` (UTF-8), written whole or not at all."""
    with atomic_file(out) as handle:
        handle.write(text)


def output_folder(out: Path) -> Path:
    """``out`` as a folder to write into: made (with its parents) if missing; :class:`OutputError`
    where it is a file or cannot be made or written."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; name a folder to write into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out}: cannot make this folder: {_reason(error)}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write into this folder: permission denied")
    return out
