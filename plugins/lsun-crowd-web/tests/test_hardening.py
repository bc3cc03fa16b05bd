"""The web crowd's hardening, in process: security headers on every response, same-origin form
posts with a per-HIT form token, images only for the lease holder, a body cap enforced while the
body streams in, and rate limiting of failed token attempts."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
from lsun_crowd_web import WebCrowd, WebState
from lsun_crowd_web.body_limit import BodyLimit
from lsun_crowd_web.pages import stamp_page
from lsun_crowd_web.rate_limit import FailedAttempts
from lsun_crowd_web.server import create_app
from PIL import Image
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from lsun_crowd.crowd import HitBatch, HitItem, HitSpec, QualificationTest
from lsun_crowd.render import Renderer

SERVER = "http://testserver"  # TestClient's origin
SAME_ORIGIN = {"Origin": SERVER}
FIXED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publish(state: WebState, tmp_path: Path, hits: int = 1, test: QualificationTest | None = None) -> list[str]:
    """``hits`` HITs of two local images each, one vote each."""
    specs = []
    for h in range(hits):
        items = []
        for n in range(2):
            path = tmp_path / f"img{h}-{n}.png"
            Image.new("L", (8, 8), color=40 * n).save(path)
            items.append(HitItem(f"{h}{n}", str(path)))
        specs.append(HitSpec(f"h{h}", tuple(items)))
    batch = HitBatch("p:cat:r1", "cat", "Does the image show: cat?", tuple(specs), 1, Decimal(0), qualification=test)
    return [published.hit_id for published in WebCrowd(state).publish(batch)]


def taken(client: TestClient, token: str) -> tuple[str, str, str]:
    """The HIT the annotator with ``token`` is shown (and now leases), its form token, the page."""
    page = client.get(f"/a/{token}").text
    (hit_id,) = re.findall(r'action="/a/[^/]+/submit/([^"]+)"', page)
    return hit_id, form_token(page), page


def form_token(page: str) -> str:
    """The page's form token ("" if it has none, so that a test fails where the check is missing)."""
    tokens = re.findall(r'<input type="hidden" name="form_token" value="([^"]+)">', page)
    assert len(tokens) <= 1
    return tokens[0] if tokens else ""


def answers(hit_id: str, state: WebState) -> dict[str, str]:
    hit = state.hit(hit_id)
    assert hit is not None
    return {f"item-{item.item_key}": "yes" for item in hit.items}


@pytest.fixture
def client(state: WebState) -> TestClient:
    return TestClient(create_app(state), follow_redirects=False)


def test_every_response_carries_the_security_headers(state: WebState, tmp_path: Path) -> None:
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    app = create_app(state, max_body_bytes=1000, failed_attempts=FailedAttempts(limit=2, window=60))
    client = TestClient(app, follow_redirects=False)
    page = client.get(f"/a/{token}")
    fields = {"form_token": form_token(page.text), **answers(hit_id, state)}
    responses = {
        "page": page,
        "image": client.get(f"/a/{token}/image/{hit_id}/00"),
        "no such image": client.get(f"/a/{token}/image/{hit_id}/99"),
        "no such route": client.get("/nowhere"),
        "wrong method": client.get(f"/a/{token}/submit/{hit_id}"),
        "text/plain": client.post(f"/a/{token}/submit/{hit_id}", content=b"x", headers=SAME_ORIGIN),
        "cross-origin": client.post(f"/a/{token}/submit/{hit_id}", data=fields, headers={"Origin": "https://evil"}),
        "too large": client.post(f"/a/{token}/submit/{hit_id}", content=b"x" * 1001, headers=SAME_ORIGIN),
        "bad form token": client.post(f"/a/{token}/submit/{hit_id}", data={"form_token": "x"}, headers=SAME_ORIGIN),
        "redirect": client.post(f"/a/{token}/submit/{hit_id}", data=fields, headers=SAME_ORIGIN),
        "idle page": client.get(f"/a/{token}"),
        "unknown token": client.get("/a/nobody"),
    }
    responses["rate limited"] = client.get("/a/nobody")
    statuses = {name: response.status_code for name, response in responses.items()}
    assert statuses == {
        "page": 200,
        "image": 200,
        "no such image": 404,
        "no such route": 404,
        "wrong method": 405,
        "text/plain": 415,
        "cross-origin": 403,
        "too large": 413,
        "bad form token": 403,
        "redirect": 303,
        "idle page": 200,
        "unknown token": 401,
        "rate limited": 429,
    }
    for name, response in responses.items():
        for header, value in FIXED.items():
            assert response.headers.get(header) == value, (name, header)
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, name
        assert "form-action 'self'" in policy and "base-uri 'none'" in policy, name
        assert "unsafe" not in policy, name


def test_a_broken_template_500_carries_the_headers_too(state: WebState, tmp_path: Path) -> None:
    publish(state, tmp_path)
    token = state.add_annotator("ana")
    (tmp_path / "hit_templates").mkdir()
    (tmp_path / "hit_templates" / "binary_grid.html").write_text("{{ items[5].missing }}\n")
    response = TestClient(create_app(state, templates=Renderer(tmp_path))).get(f"/a/{token}")
    assert response.status_code == 500
    assert {header: response.headers.get(header) for header in FIXED} == FIXED


def test_scripts_and_styles_run_only_with_the_responses_nonce(
    client: TestClient, state: WebState, tmp_path: Path
) -> None:
    publish(state, tmp_path)
    token = state.add_annotator("ana")
    nonces = []
    for _ in range(2):
        page = client.get(f"/a/{token}")
        (nonce,) = re.findall(r"script-src 'nonce-([A-Za-z0-9_-]{20,})'", page.headers["content-security-policy"])
        assert f"style-src 'nonce-{nonce}'" in page.headers["content-security-policy"]
        tags = re.findall(r"<(script|style)([^>]*)>", page.text)
        assert len(tags) == 2 and all(attributes == f' nonce="{nonce}"' for _, attributes in tags)
        nonces.append(nonce)
    assert nonces[0] != nonces[1]  # one per response


def test_stamping_touches_only_the_templates_own_tags() -> None:
    page = (
        '<HTML><style>p{}</style>\n<form method="POST" action="/s">\n<p>&lt;script&gt;</p></form>'
        '<form method="get"></form>\r\n<script type="module">var s = "<script>"; var t = "<style>";</script>'
    )
    stamped = stamp_page(page, "N0NCE", "T0KEN")
    assert stamped == (
        '<HTML><style nonce="N0NCE">p{}</style>\n<form method="POST" action="/s">'
        '<input type="hidden" name="form_token" value="T0KEN">\n<p>&lt;script&gt;</p></form>'
        '<form method="get"></form>\r\n'
        '<script nonce="N0NCE" type="module">var s = "<script>"; var t = "<style>";</script>'
    )
    assert stamp_page(page, "N0NCE").count("form_token") == 0


def test_remote_images_are_allowed_by_origin_and_nothing_else(state: WebState, tmp_path: Path) -> None:
    spec = HitSpec("h0", (HitItem("1", "https://Images.example.org:8443/a/1.png"), HitItem("2", "/local.png")))
    WebCrowd(state).publish(HitBatch("p:cat:r1", "cat", "cat?", (spec,), 1, Decimal(0)))
    token = state.add_annotator("ana")
    examples = {"cat": [("http://ex.org/yes.png", True), ("https://bad.org;script-src *;/x.png", False)]}
    policy = TestClient(create_app(state, examples)).get(f"/a/{token}").headers["content-security-policy"]
    (images,) = re.findall(r"img-src ([^;]*)", policy)
    assert images == "'self' data: http://ex.org https://images.example.org:8443"
    assert policy.count("script-src") == 1


def test_only_same_origin_form_posts_are_accepted(client: TestClient, state: WebState, tmp_path: Path) -> None:
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    fields = {"form_token": form_token(client.get(f"/a/{token}").text), **answers(hit_id, state)}
    url = f"/a/{token}/submit/{hit_id}"
    body = "&".join(f"{name}={value}" for name, value in fields.items()).encode()
    refused = {
        "text/plain": client.post(url, content=body, headers={**SAME_ORIGIN, "Content-Type": "text/plain"}),
        "multipart": client.post(url, files={"f": b"x"}, data=fields, headers=SAME_ORIGIN),
        "json": client.post(url, json=fields, headers=SAME_ORIGIN),
        "other origin": client.post(url, data=fields, headers={"Origin": "https://evil.example"}),
        "other port": client.post(url, data=fields, headers={"Origin": "http://testserver:8080"}),
        "null origin": client.post(url, data=fields, headers={"Origin": "null"}),
        "other referer": client.post(url, data=fields, headers={"Referer": "https://evil.example/a/x"}),
        "neither": client.post(url, data=fields),
    }
    assert {name: response.status_code for name, response in refused.items()} == {
        "text/plain": 415,
        "multipart": 415,
        "json": 415,
        "other origin": 403,
        "other port": 403,
        "null origin": 403,
        "other referer": 403,
        "neither": 403,
    }
    assert state.assignments(hit_id) == []
    accepted = client.post(url, data=fields, headers={"Referer": f"{SERVER}/a/{token}"})  # no Origin: Referer
    assert accepted.status_code == 303 and len(state.assignments(hit_id)) == 1


def test_a_trusted_origin_may_post(state: WebState, tmp_path: Path) -> None:
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    client = TestClient(create_app(state, trusted_origins=["https://label.example.org/"]), follow_redirects=False)
    fields = {"form_token": form_token(client.get(f"/a/{token}").text), **answers(hit_id, state)}
    response = client.post(f"/a/{token}/submit/{hit_id}", data=fields, headers={"Origin": "https://label.example.org"})
    assert response.status_code == 303 and len(state.assignments(hit_id)) == 1


def test_a_forged_or_replayed_form_is_refused(client: TestClient, state: WebState, tmp_path: Path) -> None:
    publish(state, tmp_path, hits=2)
    ana, ben = state.add_annotator("ana"), state.add_annotator("ben")
    first, ana_token, _ = taken(client, ana)  # ana holds one HIT, ben the other
    second, ben_token, _ = taken(client, ben)
    assert ana_token != ben_token and len(ana_token) >= 40
    url = f"/a/{ana}/submit/{first}"
    forged = {
        "no token": {},
        "empty": {"form_token": ""},
        "guessed": {"form_token": "A" * len(ana_token)},
        "one character off": {"form_token": ana_token[:-1] + ("A" if ana_token[-1] != "A" else "B")},
        "ben's token": {"form_token": ben_token},
    }
    for name, token_field in forged.items():
        response = client.post(url, data={**token_field, **answers(first, state)}, headers=SAME_ORIGIN)
        assert response.status_code == 403, name
    # ana's token is for her lease on the first HIT only: not for ben's HIT, not as ben.
    assert (
        client.post(f"/a/{ana}/submit/{second}", data={"form_token": ana_token}, headers=SAME_ORIGIN).status_code == 403
    )
    assert (
        client.post(f"/a/{ben}/submit/{first}", data={"form_token": ana_token}, headers=SAME_ORIGIN).status_code == 403
    )
    assert state.assignments(first) == [] and state.assignments(second) == []
    fields = {"form_token": ana_token, **answers(first, state)}
    assert client.post(url, data=fields, headers=SAME_ORIGIN).status_code == 303
    replayed = client.post(url, data=fields, headers=SAME_ORIGIN)
    assert replayed.status_code == 403 and len(state.assignments(first)) == 1


def test_a_new_lease_gets_a_new_token(tmp_path: Path) -> None:
    state = WebState(tmp_path / "q.sqlite", lease_seconds=0.05)
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    client = TestClient(create_app(state), follow_redirects=False)
    stale = form_token(client.get(f"/a/{token}").text)
    time.sleep(0.1)  # the lease runs out; ana takes the HIT again
    fresh = form_token(client.get(f"/a/{token}").text)
    assert fresh != stale
    url = f"/a/{token}/submit/{hit_id}"
    assert (
        client.post(url, data={"form_token": stale, **answers(hit_id, state)}, headers=SAME_ORIGIN).status_code == 403
    )


def test_the_qualification_form_needs_its_token(client: TestClient, state: WebState, tmp_path: Path) -> None:
    path = tmp_path / "q.png"
    Image.new("L", (8, 8)).save(path)
    test = QualificationTest("qt1", "Does the image show: cat?", (HitItem("q1", str(path)),), {"q1": "yes"}, 1.0)
    publish(state, tmp_path, test=test)
    token = state.add_annotator("ana")
    page = client.get(f"/a/{token}")
    assert f'action="/a/{token}/qualify/qt1"' in page.text
    url = f"/a/{token}/qualify/qt1"
    assert client.post(url, data={"form_token": "forged", "item-q1": "yes"}, headers=SAME_ORIGIN).status_code == 403
    assert client.post(url, data={"item-q1": "yes"}, headers={"Origin": "https://evil"}).status_code == 403
    assert state.execute("SELECT COUNT(*) FROM qualifications") == [(0,)]
    fields = {"form_token": form_token(page.text), "item-q1": "yes"}
    assert client.post(url, data=fields, headers=SAME_ORIGIN).status_code == 303
    assert state.execute("SELECT worker, passed FROM qualifications") == [("ana", 1)]
    assert client.post(url, data=fields, headers=SAME_ORIGIN).status_code == 403  # replayed


def test_images_are_served_only_to_the_lease_holder(client: TestClient, state: WebState, tmp_path: Path) -> None:
    publish(state, tmp_path, hits=2)
    ana, ben, cho = (state.add_annotator(name) for name in ("ana", "ben", "cho"))
    first, ana_form, page = taken(client, ana)  # ana leases one HIT, ben the other; cho holds nothing
    second, _, _ = taken(client, ben)
    first_key, second_key = (state.hit(hit_id).items[0].item_key for hit_id in (first, second))  # type: ignore[union-attr]
    assert f"/a/{ana}/image/{first}/{first_key}" in page
    mine = client.get(f"/a/{ana}/image/{first}/{first_key}")
    assert mine.status_code == 200 and mine.content.startswith(b"\x89PNG")
    missing = client.get(f"/a/{ana}/image/{first}/99")
    for who in (ben, cho):
        other = client.get(f"/a/{who}/image/{first}/{first_key}")
        assert (other.status_code, other.text) == (404, missing.text)  # exactly as if there were no such image
    assert client.get(f"/a/{ana}/image/{second}/{second_key}").status_code == 404
    fields = {"form_token": ana_form, **answers(first, state)}
    assert client.post(f"/a/{ana}/submit/{first}", data=fields, headers=SAME_ORIGIN).status_code == 303
    assert client.get(f"/a/{ana}/image/{first}/{first_key}").status_code == 404  # the lease ended with the submission


def test_a_large_body_is_refused_from_its_content_length(state: WebState, tmp_path: Path) -> None:
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    default = TestClient(create_app(state)).post(f"/a/{token}/submit/{hit_id}", content=b"a" * (64 * 1024 + 1))
    assert default.status_code == 413
    small = TestClient(create_app(state, max_body_bytes=100))
    assert small.post(f"/a/{token}/submit/{hit_id}", content=b"a" * 101).status_code == 413
    fits = small.post(f"/a/{token}/submit/{hit_id}", content=b"a" * 100, headers={"Content-Type": "text/plain"})
    assert fits.status_code == 415  # within the cap: on to the app, which refuses the type


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    await PlainTextResponse(str(len(message["body"])))(scope, receive, send)


def run_body_limit(
    limit: int, chunks: int, chunk_size: int, content_length: int | None = None
) -> tuple[int, int, bytes]:
    """A request to BodyLimit(echo_length) whose body streams in ``chunks`` chunks: the status, the
    chunks the client had to send, and the response body."""
    sent = 0
    replies: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": b"x" * chunk_size, "more_body": sent < chunks}

    async def send(message: Message) -> None:
        replies.append(message)

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    asyncio.run(BodyLimit(echo_length, limit)(scope, receive, send))
    return int(replies[0]["status"]), sent, b"".join(m.get("body", b"") for m in replies[1:])


def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_cap() -> None:
    # 1 GiB announced by nobody, in 1 KiB chunks: refused after the 65th chunk, the rest never read.
    assert run_body_limit(64 * 1024, chunks=1 << 20, chunk_size=1024)[:2] == (413, 65)
    assert run_body_limit(64 * 1024, chunks=64, chunk_size=1024) == (200, 64, b"65536")  # exactly the cap
    # A Content-Length over the cap is refused before a single chunk is read.
    assert run_body_limit(64 * 1024, chunks=100, chunk_size=1024, content_length=100 * 1024)[:2] == (413, 0)
    assert run_body_limit(64, chunks=1, chunk_size=1, content_length=-1)[:2] == (400, 0)


def test_failed_token_attempts_are_rate_limited_per_address(state: WebState, tmp_path: Path) -> None:
    (hit_id,) = publish(state, tmp_path)
    token = state.add_annotator("ana")
    clock = Clock()
    app = create_app(state, failed_attempts=FailedAttempts(limit=5, window=60, clock=clock))
    guesser = TestClient(app, client=("203.0.113.9", 4000), follow_redirects=False)
    annotator = TestClient(app, client=("198.51.100.7", 4000), follow_redirects=False)
    for _ in range(50):  # successes never count
        assert annotator.get(f"/a/{token}").status_code == 200
    statuses = []
    for n in range(5):
        clock.now += 1
        statuses.append(guesser.get(f"/a/guess{n}").status_code)
    assert statuses == [401] * 5
    held = guesser.get(f"/a/{token}")  # even the right token: guessing on would otherwise pay off
    assert held.status_code == 429 and held.headers["retry-after"] == "56"  # the first failure ages out at 1061
    assert annotator.get(f"/a/{token}").status_code == 200  # another address is not held back
    clock.now = 1000 + 1 + 60
    assert guesser.get(f"/a/{token}").status_code == 200
    assert guesser.get("/a/guess5").status_code == 401
    assert guesser.get(f"/a/{token}").status_code == 429  # five failures in the last minute again
    # A forged form token is a failed attempt too.
    page = annotator.get(f"/a/{token}").text
    assert form_token(page)
    for _ in range(5):
        forged = annotator.post(f"/a/{token}/submit/{hit_id}", data={"form_token": "x"}, headers=SAME_ORIGIN)
        assert forged.status_code == 403
    assert annotator.get(f"/a/{token}").status_code == 429


def test_the_window_slides() -> None:
    clock = Clock()
    attempts = FailedAttempts(limit=3, window=10, clock=clock)
    for offset in (0, 4, 8):
        clock.now = 1000 + offset
        attempts.record("a")
    assert attempts.retry_after("a") == pytest.approx(2)  # the failure at 1000 ages out at 1010
    clock.now = 1010
    assert attempts.retry_after("a") is None
    attempts.record("a")
    assert attempts.retry_after("a") == pytest.approx(4)  # now 1004 must age out
    assert attempts.retry_after("b") is None


def test_only_addresses_that_failed_are_kept_and_only_while_their_failures_are_recent() -> None:
    """Every request asks the limiter about its address: that alone must not make the limiter
    remember the address, or a server seen by many addresses grows without bound."""
    clock = Clock()
    clock.now = 1000
    attempts = FailedAttempts(limit=3, window=10, clock=clock)
    for number in range(5_000):
        assert attempts.retry_after(f"10.0.{number // 256}.{number % 256}") is None
    assert attempts.tracked() == 0
    attempts.record("a")
    attempts.record("b")
    assert attempts.tracked() == 2
    clock.now = 1011  # both failures aged out: the next question about each forgets it
    assert attempts.retry_after("a") is None and attempts.retry_after("b") is None
    assert attempts.tracked() == 0
