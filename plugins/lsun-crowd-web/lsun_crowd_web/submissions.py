"""What a form post must be before its fields are read: the page's own encoding, sent from a page
of this server. Each check returns the response that refuses the post, or ``None`` to let it in.

A browser sends ``Origin`` with every form post (``Referer`` stands in where an old one does not),
so a post with neither, or from another origin (``null`` included), did not come from the page we
served; the per-HIT form token (:mod:`lsun_crowd_web.pages`) then refuses a forged or replayed one.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"  # what the templates' forms post
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}  # a browser's Origin leaves them out


def wrong_content_type(request: Request) -> Response | None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == FORM_CONTENT_TYPE:
        return None
    return PlainTextResponse(
        f"a submission must be {FORM_CONTENT_TYPE}, not {content_type or 'untyped'}", status_code=415
    )


def own_origin(request: Request) -> str:
    """The origin the browser saw this server at: the request's scheme and ``Host``."""
    scheme = request.url.scheme
    host = request.headers.get("host", "").lower()
    return f"{scheme}://{host.removesuffix(_DEFAULT_PORTS.get(scheme, ''))}"


def sender_origin(request: Request) -> str | None:
    """``Origin`` as sent, else the origin of ``Referer``, else ``None``."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.strip().lower()
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.scheme and referer.netloc:
        return f"{referer.scheme}://{referer.netloc}".lower()
    return None


def cross_origin(request: Request, trusted: Collection[str] = ()) -> Response | None:
    """403 unless the post comes from this server's origin or one of ``trusted`` (for a proxy that
    changes the scheme or host, say ``https://label.example.org``)."""
    sender = sender_origin(request)
    allowed = {own_origin(request), *(origin.rstrip("/").lower() for origin in trusted)}
    if sender is not None and sender in allowed:
        return None
    said = "no Origin or Referer" if sender is None else f"origin {sender}"
    return PlainTextResponse(f"cross-origin submission refused ({said})", status_code=403)
