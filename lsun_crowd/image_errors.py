"""Why an image file could not be read, in words a person understands."""

from __future__ import annotations

import re

from PIL import Image, UnidentifiedImageError


def image_problem(error: BaseException) -> str:
    """Why an image could not be read, in words a person understands: Pillow's own messages name
    a ``BytesIO`` object at a memory address ("cannot identify image file <_io.BytesIO object at
    0x7f...>") or say "Truncated File Read"."""
    text = str(error)
    if isinstance(error, UnidentifiedImageError):
        return "not an image: no format Pillow reads (JPEG, PNG, WebP, BMP) recognises it"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "too many pixels: past Pillow's decompression-bomb limit"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied"
    lowered = text.lower()
    if isinstance(error, (OSError, SyntaxError)) and ("truncated" in lowered or "broken data" in lowered):
        return "the file is cut short (truncated): it ends before the image does"
    if isinstance(error, SyntaxError):  # Pillow's parsers raise it for a broken header
        return f"a damaged image file ({text})"
    text = _ADDRESS.sub(">", text)
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+>")
