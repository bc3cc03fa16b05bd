"""Security headers on every response of the annotators' app, as one ASGI middleware around the
whole app (Starlette's own error pages included), so that no route, error or redirect can miss them.

The policy follows Django's defaults and goes further where an annotator's page allows it:
scripts and styles run only with this response's nonce (the page stamps it on the template's own
``<script>`` and ``<style>`` tags, see :mod:`lsun_crowd_web.pages`), images come only from this
server, ``data:`` URLs and the remote hosts the page itself names, forms post only here, and no
other site may frame the page, open it as a popup it controls, or embed its images. The referrer
policy is Django's ``same-origin``: the annotator's token is in every path, so it never leaves this
server, while the browser still sends a real ``Origin`` on the page's own form posts (under
``no-referrer`` a browser sends ``Origin: null`` and the origin check could not tell them apart).
Nothing is cached: every page and image belongs to one annotator.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY_KEY = "lsun_crowd_web.page_policy"  # where the request's PagePolicy lives in the ASGI scope
FIXED_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# A host, an IPv4 address or a bracketed IPv6 address, and an optional port: nothing that could
# end a CSP directive (";", ",", a space or a quote) gets into the header.
_SAFE_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass
class PagePolicy:
    """The Content-Security-Policy of one response: its nonce, and the remote image origins the
    page shows (a HIT's images and examples may live on another host)."""

    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    image_origins: set[str] = field(default_factory=set)

    def allow_images_from(self, uri: str) -> None:
        """Let the page show ``uri`` if it is a plain http(s) URL on another host; anything else
        (a local path, ``data:``, a URL with odd characters in its host) adds nothing."""
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https") and _SAFE_HOST.fullmatch(parts.netloc):
            self.image_origins.add(f"{parts.scheme}://{parts.netloc.lower()}")

    def header(self) -> str:
        images = " ".join(["'self'", "data:", *sorted(self.image_origins)])
        return "; ".join(
            [
                "default-src 'none'",
                f"script-src 'nonce-{self.nonce}'",
                f"style-src 'nonce-{self.nonce}'",
                f"img-src {images}",
                "form-action 'self'",
                "frame-ancestors 'none'",
                "base-uri 'none'",
            ]
        )


def page_policy(request: Request) -> PagePolicy:
    """The policy :class:`SecurityHeaders` made for this request (a fresh one outside it, so a
    handler never fails for want of it; its header is then simply not sent)."""
    policy = request.scope.get(POLICY_KEY)
    return policy if isinstance(policy, PagePolicy) else PagePolicy()


class SecurityHeaders:
    """Sets the fixed headers and this request's Content-Security-Policy on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = PagePolicy()
        scope[POLICY_KEY] = policy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in FIXED_HEADERS.items():
                    headers[name] = value
                headers["Content-Security-Policy"] = policy.header()
            await send(message)

        await self.app(scope, receive, send_with_headers)
