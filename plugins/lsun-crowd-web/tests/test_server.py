"""The annotators' server over real HTTP: tokens, images without traversal, leases under load."""

from __future__ import annotations

import http.client
import re
import threading
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer
from lsun_crowd_web import WebCrowd, WebState
from PIL import Image

from lsun_crowd.crowd import HitBatch, HitItem, HitSpec


def publish(state: WebState, tmp_path: Path, images: int = 3, assignments: int = 2) -> str:
    paths = []
    for n in range(images):
        path = tmp_path / f"img{n}.png"
        Image.new("L", (8, 8), color=n * 40).save(path)
        paths.append(path)
    spec = HitSpec("h0", tuple(HitItem(str(10 + n), str(path)) for n, path in enumerate(paths)))
    batch = HitBatch("p:cat:r1", "cat", "Does the image show: cat?", (spec,), assignments, Decimal("0"))
    (published,) = WebCrowd(state).publish(batch)
    return published.hit_id


def raw_get(server: LiveServer, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent exactly as written (no client-side normalising)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("GET", target, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read()


def test_no_valid_token_no_page_and_no_image(state: WebState, live: LiveServer, tmp_path: Path) -> None:
    hit_id = publish(state, tmp_path)
    state.add_annotator("ana")
    for target in ("/a/not-a-token", f"/a/not-a-token/image/{hit_id}/10", "/a/"):
        status, body = raw_get(live, target)
        assert status in (401, 404) and b"<img" not in body and b"PNG" not in body
    assert raw_get(live, "/a/not-a-token")[0] == 401
    assert raw_get(live, f"/a/not-a-token/image/{hit_id}/10")[0] == 401
    response = httpx.post(f"{live.url}/a/not-a-token/submit/{hit_id}", data={"item-10": "yes"})
    assert response.status_code == 401 and state.assignments(hit_id) == []


@pytest.mark.parametrize(
    "attack",
    [
        "../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%252e%252e%252fetc%252fpasswd",
        "..%5c..%5cetc%5cpasswd",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
    ],
)
def test_traversal_paths_get_404(state: WebState, live: LiveServer, tmp_path: Path, attack: str) -> None:
    hit_id = publish(state, tmp_path)
    token = state.add_annotator("ana")
    assert httpx.get(f"{live.url}/a/{token}").status_code == 200  # ana takes the HIT: its images are hers
    for target in (
        f"/a/{token}/image/{hit_id}/{attack}",
        f"/a/{token}/image/{attack}",
        f"/a/{token}/test-image/x/{attack}",
    ):
        status, body = raw_get(live, target)
        assert status == 404, target
        assert b"root:" not in body
    status, body = raw_get(live, f"/a/{token}/image/{hit_id}/10")
    assert status == 200 and body.startswith(b"\x89PNG")  # the HIT's own image is served


def test_an_annotator_labels_over_http_and_the_queue_records_it(
    state: WebState, live: LiveServer, tmp_path: Path
) -> None:
    hit_id = publish(state, tmp_path, images=3, assignments=1)
    token = state.add_annotator("ana")
    page = httpx.get(f"{live.url}/a/{token}").text
    assert f'action="/a/{token}/submit/{hit_id}"' in page
    assert re.findall(r'<img src="([^"]+)"', page) == [f"/a/{token}/image/{hit_id}/{key}" for key in (10, 11, 12)]
    (form_token,) = re.findall(r'name="form_token" value="([^"]+)"', page)
    origin = {"Origin": live.url}  # what a browser sends with the page's own form
    incomplete = httpx.post(
        f"{live.url}/a/{token}/submit/{hit_id}",
        data={"form_token": form_token, "item-10": "yes", "item-11": "no"},
        headers=origin,
    )
    assert incomplete.status_code == 409 and "1 unanswered" in incomplete.text
    answers = {"assignmentId": "", "form_token": form_token, "item-10": "yes", "item-11": "no", "item-12": "yes"}
    done = httpx.post(f"{live.url}/a/{token}/submit/{hit_id}", data=answers, headers=origin, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/a/{token}"
    ((_, worker, status, recorded, _, _),) = state.assignments(hit_id)
    assert (worker, status) == ("ana", "submitted")
    assert recorded == '{"10": "yes", "11": "no", "12": "yes"}'
    again = httpx.post(f"{live.url}/a/{token}/submit/{hit_id}", data=answers, headers=origin)
    assert again.status_code == 403 and len(state.assignments(hit_id)) == 1  # once only: the token is spent
    assert "Nothing to label right now" in httpx.get(f"{live.url}/a/{token}").text


def test_concurrent_annotators_never_exceed_the_redundancy_asked(state: WebState, tmp_path: Path) -> None:
    hit_id = publish(state, tmp_path, images=2, assignments=2)
    names = [f"annotator{n}" for n in range(8)]
    for name in names:
        state.add_annotator(name)
    got: dict[str, str | None] = {}
    barrier = threading.Barrier(len(names))

    def ask(name: str) -> None:
        barrier.wait()
        hit = state.next_hit(name)
        got[name] = hit.hit_id if hit else None

    threads = [threading.Thread(target=ask, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [name for name, hit in got.items() if hit == hit_id]
    assert len(holders) == 2  # two leases for two votes asked, whoever asked first
    for name in holders:
        state.submit(name, hit_id, {"10": "yes", "11": "no"})
    assert all(state.next_hit(name) is None for name in names)  # the HIT is full
    assert len(state.assignments(hit_id)) == 2
    assert state.next_hit(holders[0]) is None  # and nobody gets it twice


def test_an_expired_lease_frees_the_slot(tmp_path: Path) -> None:
    state = WebState(tmp_path / "q.sqlite", lease_seconds=0.01)
    hit_id = publish(state, tmp_path, images=1, assignments=1)
    state.add_annotator("ana")
    state.add_annotator("ben")
    assert state.next_hit("ana") is not None
    import time

    time.sleep(0.05)  # ana walked away
    hit = state.next_hit("ben")
    assert hit is not None and hit.hit_id == hit_id


def test_the_grid_shows_the_categorys_examples(state: WebState, tmp_path: Path) -> None:
    hit_id = publish(state, tmp_path, images=1, assignments=1)
    token = state.add_annotator("ana")
    examples = {"cat": [("https://i.org/cat.png", True), ("https://i.org/dog.png", False)]}
    with LiveServer(state, examples) as server:
        page = httpx.get(f"{server.url}/a/{token}").text
    assert re.findall(r'<img src="([^"]+)"', page) == [
        "https://i.org/cat.png",
        "https://i.org/dog.png",
        f"/a/{token}/image/{hit_id}/10",
    ]
