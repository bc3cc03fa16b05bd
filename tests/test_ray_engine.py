"""The Ray engine (``model.engine = "ray"``) decides exactly what the local engine decides: the same
logits for the same pool, the same vectors for the same images, the same labels for the same
cascade on the same seed. Ray runs on this machine, on two CPUs, started once for the module."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from PIL import Image
from sqlalchemy import select

from lsun_crowd.classifier import train_head
from lsun_crowd.config import ConfigError, ModelConfig
from lsun_crowd.embed import EmbeddingCache, PixelBackbone, embed_items
from lsun_crowd.engine import LocalEngine, engine_for
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import Item, Label
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project

from .conftest import make_digits_project

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed: pip install 'lsun-crowd[ray]'"
)
RAY = ModelConfig(engine="ray", ray_workers=2)


@pytest.fixture(scope="module")
def ray_on_two_cpus() -> Iterator[None]:
    import ray

    quiet = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0"}
    saved = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def ray_engine_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Ray engine's methods called during the test, in order."""
    from lsun_crowd.ray_engine import RayEngine

    calls: list[str] = []
    for name in ("score", "embed"):

        def spy(engine: RayEngine, *arguments: Any, _method: Any = getattr(RayEngine, name), _name: str = name) -> Any:
            calls.append(_name)
            return _method(engine, *arguments)

        monkeypatch.setattr(RayEngine, name, spy)
    return calls


def test_choosing_ray_without_ray_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ConfigError, match=r"pip install 'lsun-crowd\[ray\]'"):
        engine_for(ModelConfig(engine="ray"))
    assert isinstance(engine_for(ModelConfig()), LocalEngine)


def test_a_cuda_device_on_ray_workers_needs_their_gpus() -> None:
    with pytest.raises(ValueError, match="ray_gpus_per_worker"):
        ModelConfig(engine="ray", device="cuda")
    assert ModelConfig(engine="ray", device="cuda", ray_gpus_per_worker=0.5).ray_gpus_per_worker == 0.5


@needs_ray
def test_ray_scores_every_chunk_of_the_pool_as_the_head_does_in_process(tmp_path: Path, ray_on_two_cpus: None) -> None:
    generator = np.random.default_rng(5)
    cache = EmbeddingCache(tmp_path / "cache", 8)
    # Real digests: the cache indexes images by their first 8 bytes.
    shas = [hashlib.sha256(str(number).encode()).hexdigest() for number in range(4_000)]
    cache.append(shas, generator.normal(size=(len(shas), 8)).astype(np.float32))
    trained_on = cache.get(shas[:600])
    head = train_head(
        trained_on,
        (trained_on[:, 0] > 0).astype(np.float64),
        np.ones(600),
        ModelConfig(hidden_units=16, epochs=20, device="cpu"),
        seed=1,
    )
    # Uneven chunks, one of a single image.
    edges = [0, 700, 701, 2_000, 3_333, 4_000]
    chunks = [[(number, shas[number]) for number in range(start, end)] for start, end in itertools.pairwise(edges)]

    scored = list(engine_for(RAY).score(head, cache, iter(chunks)))

    assert [chunk for chunk, _ in scored] == chunks
    for chunk, logits in scored:
        expected = head.logits(cache.get([sha for _, sha in chunk]))
        assert logits.dtype == np.float64
        # The same head on the same images; a chunk of another size may round its last bits apart.
        np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-9)
    assert len(np.unique(np.concatenate([logits for _, logits in scored]))) > 3_900


@needs_ray
def test_ray_embeds_images_into_the_cache_as_the_local_engine_does(tmp_path: Path, ray_on_two_cpus: None) -> None:
    generator = np.random.default_rng(6)
    items = []
    for number in range(12):
        path = tmp_path / "images" / f"{number}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(generator.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)).save(path)
        items.append((hashlib.sha256(path.read_bytes()).hexdigest(), str(path)))
    (tmp_path / "images" / "3.png").write_bytes(b"not a png")  # changed since "ingest": reported, skipped
    items.append((items[0][0], items[0][1]))  # listed twice, embedded once
    config = ModelConfig(backbone="pixels", image_size=8, engine="ray", ray_workers=1)
    model = PixelBackbone(config)
    local = EmbeddingCache(tmp_path / "local", model.dim)
    on_ray = EmbeddingCache(tmp_path / "ray", model.dim)
    advanced: list[int] = []

    local_report = embed_items(model, local, items, batch_size=5)
    ray_report = engine_for(config).embed(model, on_ray, items, batch_size=5, progress=advanced.append)

    assert (local_report.computed, sorted(local_report.failed)) == (11, [items[3][0]])
    assert (ray_report.computed, sorted(ray_report.failed)) == (11, [items[3][0]])
    assert "SHA-256 differs" in ray_report.failed[items[3][0]] and sum(advanced) == 12
    embedded = [sha for sha, _ in items[:12] if sha != items[3][0]]
    assert np.array_equal(on_ray.get(embedded), local.get(embedded))
    assert on_ray.get(embedded).shape == (11, 64)
    # Everything cached: nothing left for Ray to do.
    assert engine_for(config).embed(model, on_ray, items, batch_size=5).computed == 0


@needs_ray
def test_a_project_on_ray_embeds_its_pool_there(
    tmp_path: Path, ray_on_two_cpus: None, ray_engine_calls: list[str]
) -> None:
    make_digits_project(tmp_path / "project", limit=200, overrides={"model": {"engine": "ray", "ray_workers": 1}})
    project = Project.open(tmp_path / "project")
    with project.store.session() as session:
        items = [(sha, uri) for sha, uri in session.execute(select(Item.sha256, Item.uri).order_by(Item.id))]
    model = PixelBackbone(project.config.model)
    reference = EmbeddingCache(tmp_path / "reference", model.dim)
    embed_items(model, reference, items, batch_size=16)

    cache = project.embedding_cache()

    shas = [sha for sha, _ in items]
    assert ray_engine_calls == ["embed"] and len(shas) >= 200 and len(cache) == len(shas)
    assert np.array_equal(cache.get(shas), reference.get(shas))
    project.close()


def _labels_after_one_round(directory: Path, engine: str) -> list[tuple[str, int, str, float]]:
    pool = SyntheticPool(items=3_000, categories=("thing",), dim=8, positive_rate=0.3, separation=3.0, seed=4)
    settings: dict[str, Any] = {
        "project": {"name": "ray", "seed": 4, "categories": ["thing"]},
        "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
        "model": {"hidden_units": 16, "epochs": 50, "engine": engine, "device": "cpu"},
        "cascade": {
            "sample_per_round": 600,
            "calibration_fraction": 0.5,
            "confidence": 0.5,
            "target_precision": 0.9,
            "target_npv": 0.95,
            "target_recall": 0,
        },
        "repair": {"enabled": False},
    }
    write_project(directory, settings)
    project = Project.open(directory)
    cache = EmbeddingCache(directory / "cache" / "synthetic", pool.dim)
    build(pool, project.store, cache)
    crowd = SimulatedCrowd(pool.truth(), CrowdMix(seed=4), directory / "mock-crowd.sqlite")
    Cascade(project.config, project.store, crowd, lambda: cache).run(max_rounds=1)
    with project.store.session() as session:
        rows = session.execute(
            select(Item.sha256, Label.label, Label.source, Label.confidence)
            .join(Item, Item.id == Label.item_id)
            .order_by(Item.sha256)
        ).all()
    project.close()
    return [(sha, int(label), str(source), float(confidence)) for sha, label, source, confidence in rows]


@needs_ray
def test_a_round_on_ray_labels_the_pool_exactly_as_a_round_in_process(
    tmp_path: Path, ray_on_two_cpus: None, ray_engine_calls: list[str]
) -> None:
    local = _labels_after_one_round(tmp_path / "local", "local")
    assert ray_engine_calls == []
    on_ray = _labels_after_one_round(tmp_path / "ray", "ray")
    assert ray_engine_calls == ["score", "score"]  # one pass into the histogram of scores, one to label

    by_source = {source: sum(1 for row in local if row[2] == source) for source in ("human", "model")}
    assert by_source["model"] > 1_000 and by_source["human"] > 100, by_source
    # The same labels; a confidence may differ in its last bits (a chunk's logits round apart).
    assert [row[:3] for row in on_ray] == [row[:3] for row in local]
    np.testing.assert_allclose([row[3] for row in on_ray], [row[3] for row in local], rtol=1e-7)
