"""Embedding and scoring throughput: decode + backbone per image, and head scoring per image.

    python benchmarks/embedding.py [--images 512] [--backbone resnet18] [--size 224] [--device auto]

Images are random-noise JPEGs at 256×256 written to a temporary folder, so the figure includes
JPEG decoding. Weights are random ("none"): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lsun_crowd.classifier import train_head
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingCache, embed_items
from lsun_crowd.plugins import Plugins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    config = ModelConfig(
        backbone=args.backbone, weights="none", image_size=args.size, batch_size=args.batch, device=args.device
    )
    model = Plugins().backbones.get(args.backbone).create(config)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        items = []
        for index in range(args.images):
            path = Path(folder) / f"{index}.jpg"
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path, quality=90)
            items.append((hashlib.sha256(path.read_bytes()).hexdigest(), str(path)))
        cache = EmbeddingCache(Path(folder) / "cache", model.dim)
        embed_items(model, cache, items[: args.batch], args.batch)  # warm-up
        start = time.perf_counter()
        embed_items(model, cache, items[args.batch :], args.batch)
        seconds = time.perf_counter() - start
        embedded = args.images - args.batch
        vectors = cache.get([sha for sha, _ in items])
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"backbone {args.backbone} at {args.size}px on {device}, {torch.get_num_threads()} threads")
    print(f"embedding: {embedded / seconds:,.1f} images/s (decode + forward + cache write, {embedded} images)")
    pool = np.tile(vectors, (max(1, 200_000 // len(vectors)), 1)).astype(np.float32)
    labels = (rng.random(len(vectors)) < 0.3).astype(np.float64)
    head = train_head(vectors, labels, np.ones(len(vectors)), ModelConfig(epochs=50, device=args.device), seed=0)
    start = time.perf_counter()
    head.logits(pool)
    seconds = time.perf_counter() - start
    print(f"scoring: {len(pool) / seconds:,.0f} images/s from cached embeddings ({len(pool):,} images)")


if __name__ == "__main__":
    main()
