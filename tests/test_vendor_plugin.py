"""A vendor's plugin, installed out of tree, is found through its entry point and runs a round."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.plugins import Plugins, get_plugin_manager
from lsun_crowd.project import Project
from lsun_crowd.schema import Label, Round, Vote
from lsun_crowd.testing import CONFORMANCE_LABELS, CrowdBackendConformance, conformance_truth, conformance_uri

from .conftest import make_digits_project

VENDOR_SOURCE = Path(__file__).parent / "vendor"


@pytest.fixture
def acme_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What `pip install lsun-crowd-acme` leaves behind: the module and its .dist-info."""
    site = tmp_path / "site-packages"
    dist_info = site / "lsun_crowd_acme-2.3.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lsun-crowd-acme\nVersion: 2.3.0\n")
    (dist_info / "entry_points.txt").write_text("[lsun_crowd]\nacme = lsun_crowd_acme\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(VENDOR_SOURCE))
    yield
    sys.modules.pop("lsun_crowd_acme", None)


def test_vendor_plugin_is_discovered_with_its_version(acme_installed: None) -> None:
    plugins = Plugins(get_plugin_manager())
    assert "acme" in plugins.crowd_adapters.names()
    info = next(info for info in plugins.describe() if info.name == "acme")
    assert (info.distribution, info.version, info.hooks) == ("lsun-crowd-acme", "2.3.0", ("register_crowd_adapters",))
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0
    assert "lsun-crowd-acme" in result.output and "2.3.0" in result.output


def test_a_round_runs_through_the_vendor(acme_installed: None, tmp_path: Path) -> None:
    directory = tmp_path / "project"
    targets = make_digits_project(
        directory,
        limit=300,
        digits=range(1),
        sample=100,
        overrides={"crowd": {"adapter": "acme", "settings": {"reference": "truth.csv"}}},
    )
    project = Project.open(directory)
    outcome = project.cascade(project.crowd()).run(max_rounds=1)[0]
    assert outcome.rounds == 1
    with project.store.session() as session:
        assert set(session.scalars(select(Round.state))) == {"done"}
        first = session.scalar(select(Round.id).where(Round.number == 1))
        votes = session.scalar(select(func.count(Vote.id)))
        # The round's own human labels (a certification after it may add people's labels of its own).
        human = session.execute(
            select(Label.item_id, Label.label).where(Label.source == "human", Label.round_id == first)
        ).all()
        pool_votes = session.scalar(select(func.count(Vote.id)).where(Vote.is_gold.is_(False)))
    assert votes and pool_votes is not None and pool_votes >= 2 * 100  # two votes per image, at least
    uris = {item_id: uri for item_id, uri in _uris(project)}
    # ACME's staff never err, so every human label is the true digit.
    assert len(human) == 100
    assert all(label == int(targets[int(Path(uris[item]).stem)] == 0) for item, label in human)


def _uris(project: Project) -> list[tuple[int, str]]:
    from lsun_crowd.schema import Item

    with project.store.session() as session:
        return [(row[0], row[1]) for row in session.execute(select(Item.id, Item.uri))]


class TestAcmeConformance(CrowdBackendConformance):
    def make_backend(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        sys.path.insert(0, str(VENDOR_SOURCE))
        try:
            from lsun_crowd_acme import AcmeCrowd
        finally:
            sys.path.remove(str(VENDOR_SOURCE))
        answers = {
            (conformance_uri(n), category): conformance_truth(conformance_uri(n), category)
            for n in range(100)
            for category in ("conformance", *CONFORMANCE_LABELS)
        }
        return AcmeCrowd(answers)

    def bonuses_paid(self, backend, worker_id):  # type: ignore[no-untyped-def]
        return [amount for worker, amount in backend.bonuses.values() if worker == worker_id]
