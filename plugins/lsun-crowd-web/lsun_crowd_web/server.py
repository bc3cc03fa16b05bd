"""The annotators' web app (Starlette): HITs from the shared queue, in the same template MTurk shows.

Every page lives under ``/a/{token}``; a token that names no annotator gets 401 and nothing
else. Images are served only as "image N of HIT H" (or of a qualification test): the file is
the one the queue stores for that HIT, so no request path ever becomes a file path.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from lsun_crowd.crowd import CrowdError, HitItem, encode_choices
from lsun_crowd.render import Renderer, TemplateError, answers_from_fields, labels_from_fields
from lsun_crowd_web.state import WebState

log = logging.getLogger(__name__)

INSTRUCTIONS = "Answer yes only if the image clearly shows it."
IDLE_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15"><title>Nothing to label</title></head>
<body style="font-family: system-ui, sans-serif"><h1>Nothing to label right now</h1>
<p>{message}</p><p>This page looks again every 15 seconds.</p></body></html>"""


def create_app(
    state: WebState,
    examples: Mapping[str, Sequence[tuple[str, bool]]] | None = None,
    templates: Renderer | None = None,
) -> Starlette:
    """The app over ``state``; ``examples`` maps a category to example images (URL, shows it);
    ``templates`` are the project's (its own ``hit_templates/`` over the defaults)."""
    examples = examples or {}
    templates = templates or Renderer()

    def who(request: Request) -> str | None:
        return state.annotator(request.path_params["token"])

    def unauthorized() -> Response:
        return PlainTextResponse("unknown or missing annotator token", status_code=401)

    def hit_page(render: Callable[[], str]) -> Response:
        try:
            return HTMLResponse(render())
        except TemplateError as error:  # a broken project template: say which, show no traceback
            log.error("%s", error)
            return PlainTextResponse(f"this HIT cannot be shown: {error}", status_code=500)

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
                lambda: templates.grid(test.question, items, f"/a/{token}/qualify/{test.test_id}", instructions)
            )
        hit = state.next_hit(worker)
        if hit is None:
            return HTMLResponse(IDLE_PAGE.format(message=html.escape(f"Thank you, {worker}.")))
        items = [HitItem(item.item_key, f"/a/{token}/image/{hit.hit_id}/{item.item_key}") for item in hit.items]
        submit_url = f"/a/{token}/submit/{hit.hit_id}"
        if hit.categories:
            return hit_page(lambda: templates.multi_label(items[0], hit.categories, submit_url, INSTRUCTIONS))
        shown = examples.get(hit.category, ())
        return hit_page(lambda: templates.grid(hit.question, items, submit_url, INSTRUCTIONS, examples=shown))

    async def submit(request: Request) -> Response:
        worker = who(request)
        if worker is None:
            return unauthorized()
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
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
        if test is None or test.test_id != request.path_params["test_id"]:
            return PlainTextResponse("no such test waiting for you", status_code=409)
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
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
        if who(request) is None:
            return unauthorized()
        hit = state.hit(request.path_params["hit_id"])
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

    return Starlette(
        routes=[
            Route("/a/{token}", page),
            Route("/a/{token}/submit/{hit_id}", submit, methods=["POST"]),
            Route("/a/{token}/qualify/{test_id}", qualify, methods=["POST"]),
            Route("/a/{token}/image/{hit_id}/{item_key}", image),
            Route("/a/{token}/test-image/{test_id}/{item_key}", test_image),
        ]
    )
