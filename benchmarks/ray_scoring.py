"""Scoring a pool through the local engine and through the Ray engine on this machine.

    python benchmarks/ray_scoring.py [--images 1000000] [--dim 16] [--workers 2]

Random embeddings go to a temporary cache; a head (the default 256 hidden units) is trained on
2,000 of them, then both engines score the whole pool in the store's chunks of
``ledger.CHUNK`` images. Ray's start is timed apart from its scoring, and the logits of the two
engines are compared bit for bit. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from lsun_crowd.classifier import train_head
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.engine import LocalEngine
from lsun_crowd.ledger import CHUNK
from lsun_crowd.ray_engine import RayEngine, connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = ModelConfig(engine="ray", device="cpu", epochs=5, ray_workers=args.workers)
    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(Path(folder), args.dim)
        shas = [hashlib.sha256(str(number).encode()).hexdigest() for number in range(args.images)]
        for start in range(0, args.images, 100_000):
            batch = shas[start : start + 100_000]
            cache.append(batch, generator.normal(size=(len(batch), args.dim)).astype(np.float32))
        sample = cache.get(shas[:2_000])
        head = train_head(sample, (sample[:, 0] > 0).astype(np.float64), np.ones(2_000), config, seed=0)
        chunks = [
            [(number, shas[number]) for number in range(start, min(start + CHUNK, args.images))]
            for start in range(0, args.images, CHUNK)
        ]

        began = time.perf_counter()
        local = [logits for _, logits in LocalEngine().score(head, cache, chunks)]
        local_seconds = time.perf_counter() - began

        began = time.perf_counter()
        connect(config)
        start_seconds = time.perf_counter() - began
        began = time.perf_counter()
        on_ray = [logits for _, logits in RayEngine(config).score(head, cache, chunks)]
        ray_seconds = time.perf_counter() - began
        ray.shutdown()

    same = all(np.array_equal(a, b) for a, b in zip(local, on_ray, strict=True))
    print(f"{args.images:,} images × {args.dim} dimensions, chunks of {CHUNK:,}")
    print(f"local engine: {local_seconds:.1f} s ({args.images / local_seconds:,.0f} images/s)")
    print(
        f"Ray engine, {args.workers} workers: {ray_seconds:.1f} s ({args.images / ray_seconds:,.0f} images/s)"
        f" after {start_seconds:.1f} s starting Ray"
    )
    print(f"logits identical: {same}")


if __name__ == "__main__":
    main()
