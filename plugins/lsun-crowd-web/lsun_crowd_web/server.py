"""The annotators' web app (Starlette): HITs from the shared queue, in the same template MTurk shows.

Every page lives under ``/a/{token}``; a token that names no annotator gets 401 and nothing
else. Images are served only as "image N of HIT H" (or of a qualification test): the file is
the one the queue stores for that HIT, so no request path ever becomes a file path, and only to
the annotator who holds the HIT's lease (or whose test it is); anyone else gets 404.

The app is wrapped, outermost first, in: security headers on every response
(:mod:`lsun_crowd_web.security_headers`), 429 for an address with too many failed token attempts
(:mod:`lsun_crowd_web.rate_limit`), and a cap on request bodies (:mod:`lsun_crowd_web.body_limit`).
A submission must be a same-origin form post carrying the page's form token
(:mod:`lsun_crowd_web.submissions`, :mod:`lsun_crowd_web.pages`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from lsun_crowd.crowd import CrowdError, HitItem, encode_choices
from lsun_crowd.render import Renderer, TemplateError, answers_from_fields, labels_from_fields
from lsun_crowd_web.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from lsun_crowd_web.pages import FORM_TOKEN_FIELD, stamp_page
from lsun_crowd_web.rate_limit import FailedAttempts, RateLimitFailures, client_address
from lsun_crowd_web.security_headers import SecurityHeaders, page_policy
from lsun_crowd_web.state import WebState, hit_form, test_form
from lsun_crowd_web.submissions import cross_origin, wrong_content_type

log = logging.getLogger(__name__)

INSTRUCTIONS = "Answer yes only if the image clearly shows it."
IDLE_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15"><title>Nothing to label</title>
<style>body {{ font-family: system-ui, sans-serif; }}</style></head>
<body><h1>Nothing to label right now</h1>
<p>{message}</p><p>This page looks again every 15 seconds.</p></body></html>"""


def create_app(
    state: WebState,
    examples: Mapping[str, Sequence[tuple[str, bool]]] | None = None,
    templates: Renderer | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    failed_attempts: FailedAttempts | None = None,
    trusted_origins: Collection[str] = (),
) -> ASGIApp:
    """The app over ``state``; ``examples`` maps a category to example images (URL, shows it);
    ``templates`` are the project's (its own ``hit_templates/`` over the defaults);
    ``max_body_bytes`` caps a request's body; ``failed_attempts`` counts failed token attempts per
    address; ``trusted_origins`` may post besides the server's own origin."""
    examples = examples or {}
    templates = templates or Renderer()
    attempts = failed_attempts or FailedAttempts()

    def who(request: Request) -> str | None:
        worker = state.annotator(request.path_params["token"])
        if worker is None:
            attempts.record(client_address(request.scope))
        return worker

    def unauthorized() -> Response:
        return PlainTextResponse("unknown or missing annotator token", status_code=401)

    def hit_page(request: Request, render: Callable[[], str], form_token: str | None, uris: Sequence[str]) -> Response:
        policy = page_policy(request)
        for uri in uris:  # remote images (and redirects to them) must be allowed by the CSP
            policy.allow_images_from(uri)
        try:
            return HTMLResponse(stamp_page(render(), policy.nonce, form_token))
        except TemplateError as error:  # a broken project template: say which, show no traceback
            log.error("%s", error)
            return PlainTextResponse(f"this HIT cannot be shown: {error}", status_code=500)

    async def form_fields(request: Request, worker: str, form: str) -> dict[str, str] | Response:
        """The posted fields, or the response refusing the post: not a form (415), not from our
        page (403), or without the form's live token (403, counted as a failed attempt)."""
        refused = wrong_content_type(request) or cross_origin(request, trusted_origins)
        if refused is not None:
            return refused
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        if not state.valid_form_token(worker, form, fields.get(FORM_TOKEN_FIELD, "")):
            attempts.record(client_address(request.scope))
            return PlainTextResponse(
                "this form is not the one we showed you (or it was already sent): reload the page", status_code=403
            )
        return fields

    async def page(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        token = request.path_params["token"]
        test = state.pending_test(worker)
        if test is not None:
            items = [
                HitItem(item.item_key, f"/a/{token}/test-image/{test.test_id}/{item.item_key}") for item in test.items
            ]
            instructions = f"A short test before your first HIT: {test.needed} of {len(items)} right lets you in."
            return hit_page(
                request,
                lambda: templates.grid(test.question, items, f"/a/{token}/qualify/{test.test_id}", instructions),
                state.form_token(worker, test_form(test.test_id)),
                [item.uri for item in test.items],
            )
        hit = state.next_hit(worker)
        form_token = None if hit is None else state.form_token(worker, hit_form(hit.hit_id))
        if hit is None or form_token is None:
            policy = page_policy(request)
            idle = IDLE_PAGE.format(message=html.escape(f"Thank you, {worker}."))
            return HTMLResponse(stamp_page(idle, policy.nonce))
        items = [HitItem(item.item_key, f"/a/{token}/image/{hit.hit_id}/{item.item_key}") for item in hit.items]
        submit_url = f"/a/{token}/submit/{hit.hit_id}"
        remote = [item.uri for item in hit.items]
        if hit.categories:
            return hit_page(
                request,
                lambda: templates.multi_label(items[0], hit.categories, submit_url, INSTRUCTIONS),
                form_token,
                remote,
            )
        shown = examples.get(hit.category, ())
        return hit_page(
            request,
            lambda: templates.grid(hit.question, items, submit_url, INSTRUCTIONS, examples=shown),
            form_token,
            remote + [url for url, _ in shown],
        )

    async def submit(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        fields = await form_fields(request, worker, hit_form(request.path_params["hit_id"]))
        if isinstance(fields, Response):
            return fields
        try:
            hit = state.hit(request.path_params["hit_id"])
            if hit is not None and hit.categories:
                item, ticked = labels_from_fields(fields, hit.categories)
                answers = {item: encode_choices(ticked)}
            else:
                answers = answers_from_fields(fields)
            state.submit(worker, request.path_params["hit_id"], answers)
        except (CrowdError, ValueError) as error:
            return PlainTextResponse(f"not recorded: {error}", status_code=409)
        return RedirectResponse(f"/a/{request.path_params['token']}", status_code=303)

    async def qualify(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        test = state.pending_test(worker)
        fields = await form_fields(request, worker, test_form(request.path_params["test_id"]))
        if isinstance(fields, Response):
            return fields
        if test is None or test.test_id != request.path_params["test_id"]:
            return PlainTextResponse("no such test waiting for you", status_code=409)
        try:
            state.grade(worker, test, answers_from_fields(fields))
        except ValueError as error:
            return PlainTextResponse(f"not recorded: {error}", status_code=409)
        return RedirectResponse(f"/a/{request.path_params['token']}", status_code=303)

    def image_file(uri: str) -> Response:
        if uri.startswith(("https://", "http://")):
            return RedirectResponse(uri, status_code=302)
        path = Path(uri)
        if not path.is_absolute() or not path.is_file():
            return PlainTextResponse("no such image", status_code=404)
        return FileResponse(path)

    async def image(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        hit_id = request.path_params["hit_id"]
        hit = state.hit(hit_id) if state.holds_lease(worker, hit_id) else None  # 404, never "not yours"
        uris = {item.item_key: item.uri for item in hit.items} if hit else {}
        uri = uris.get(request.path_params["item_key"])
        return image_file(uri) if uri else PlainTextResponse("no such image", status_code=404)

    async def test_image(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        test = state.pending_test(worker)
        uris = {item.item_key: item.uri for item in test.items} if test else {}
        if test is None or test.test_id != request.path_params["test_id"]:
            uris = {}
        uri = uris.get(request.path_params["item_key"])
        return image_file(uri) if uri else PlainTextResponse("no such image", status_code=404)

    app = Starlette(
        routes=[
            Route("/a/{token}", page),
            Route("/a/{token}/submit/{hit_id}", submit, methods=["POST"]),
            Route("/a/{token}/qualify/{test_id}", qualify, methods=["POST"]),
            Route("/a/{token}/image/{hit_id}/{item_key}", image),
            Route("/a/{token}/test-image/{test_id}/{item_key}", test_image),
        ]
    )
    return SecurityHeaders(RateLimitFailures(BodyLimit(app, max_body_bytes), attempts))
