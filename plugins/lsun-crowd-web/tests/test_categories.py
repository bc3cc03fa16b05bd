"""The web crowd serves the HITs of every category at once: one pass of the runner puts each
category's first batch in the queue, and an annotator working through it meets all of them."""

from __future__ import annotations

from pathlib import Path

from lsun_crowd_web import WebCrowd

from lsun_crowd.project import Project
from lsun_crowd.testing import REMOVE, digits_project


def test_one_pass_queues_every_category_and_an_annotator_gets_them_all(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    crowd_settings = {
        "adapter": "web",
        "votes_per_item": 1,
        "max_votes_per_item": 1,
        "min_votes_per_item": 1,
        "poll_seconds": 0,
    }
    digits_project(
        directory,
        limit=150,
        digits=range(3),
        sample_per_round=18,
        overrides={"crowd": {**crowd_settings, "settings": {"seed": REMOVE, "truth_file": REMOVE}}},
    )
    project = Project.open(directory)
    crowd = project.crowd()
    assert isinstance(crowd, WebCrowd)
    outcomes = project.cascade(crowd).run(once=True)
    assert [outcome.reason for outcome in outcomes] == ["running"] * 3
    queued = crowd.state.execute("SELECT category, COUNT(*) FROM hits GROUP BY category ORDER BY category")
    assert [tuple(row) for row in queued] == [("digit-0", 2), ("digit-1", 2), ("digit-2", 2)]
    crowd.state.add_annotator("ana")
    seen = []
    while (hit := crowd.state.next_hit("ana")) is not None:
        seen.append(hit.category)
        crowd.state.submit("ana", hit.hit_id, {item.item_key: "no" for item in hit.items})
    assert sorted(seen) == ["digit-0", "digit-0", "digit-1", "digit-1", "digit-2", "digit-2"]
    project.close()
