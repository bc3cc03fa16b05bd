"""Embedding throughput next to the bare decode throughput, on the CPU and on a GPU when present.

    python benchmarks/embed.py [--images 512] [--backbone resnet18] [--size 224] [--batch 64]
                               [--workers auto] [--device auto]

Images are random-noise 256×256 JPEGs written to a temporary folder (noise compresses badly, so
they decode slower than photographs of the same size). Weights are random ("none"): speed does
not depend on their values. Three figures per device:

- decode: the DataLoader alone (lsun_crowd.image_loader), reading, checking, decoding and
  preparing each image in its worker processes; the most embedding could reach.
- embedding: embed_items end to end (decode, the network, the cache's durable shard).
- scoring: a trained head over cached embeddings, what every round pays for the whole pool.

On CUDA the decode figure is torchvision.io.decode_jpeg on the GPU, in batches, with the workers
only reading files.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from lsun_crowd.classifier import train_head
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingCache, default_loader_workers, embed_items
from lsun_crowd.image_loader import ImageFile, decode_jpegs_on, image_batches
from lsun_crowd.plugins import Plugins


def write_images(folder: Path, count: int) -> list[ImageFile]:
    generator = np.random.default_rng(0)
    images = []
    for index in range(count):
        path = folder / f"{index}.jpg"
        Image.fromarray(generator.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path, quality=90)
        status = path.stat()
        images.append(
            ImageFile(hashlib.sha256(path.read_bytes()).hexdigest(), str(path), status.st_size, status.st_mtime_ns)
        )
    return images


def decode_rate(model: Any, images: list[ImageFile], batch: int, workers: int, device: torch.device) -> float:
    """Images a second through the loader alone (and the GPU's JPEG decoder on CUDA)."""
    on_gpu = device.type == "cuda"
    loader = image_batches(images, batch, workers, getattr(model, "prepare", None), raw_jpeg=on_gpu, pin_memory=on_gpu)
    start = time.perf_counter()
    done = 0
    for loaded in loader:
        if on_gpu and loaded.jpegs:
            decoded = decode_jpegs_on(device, loaded.jpeg_uris, loaded.jpegs)
            torch.stack([model.prepare_tensor(image) for image in decoded if not isinstance(image, str)])
            torch.cuda.synchronize()
        done += loaded.size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", default="auto", help="loader worker processes, or auto")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU, and CUDA too")
    args = parser.parse_args()
    devices: list[Literal["cpu", "cuda"]] = [args.device] if args.device != "auto" else ["cpu"]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append("cuda")
    print(f"{args.images} random 256×256 JPEGs, {args.backbone} at {args.size} px, batches of {args.batch}")
    print("| device | workers | decode (images/s) | embedding (images/s) | scoring (images/s) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        images = write_images(Path(folder), args.images)
        items = [(image.sha256, image.uri, image.size, image.mtime_ns) for image in images]
        for device in devices:
            config = ModelConfig(
                backbone=args.backbone, weights="none", image_size=args.size, batch_size=args.batch, device=device
            )
            model = Plugins().backbones.get(args.backbone).create(config)
            workers = default_loader_workers(args.images) if args.workers == "auto" else int(args.workers)
            decoding = decode_rate(model, images, args.batch, workers, torch.device(device))
            warm_up = EmbeddingCache(Path(folder) / f"warm-up-{device}", model.dim)
            embed_items(model, warm_up, items[: args.batch], args.batch, workers=0)
            cache = EmbeddingCache(Path(folder) / f"cache-{device}", model.dim)
            start = time.perf_counter()
            report = embed_items(model, cache, items, args.batch, workers=workers)
            embedding = report.computed / (time.perf_counter() - start)
            vectors = cache.get([image.sha256 for image in images])
            generator = np.random.default_rng(0)
            labels = (generator.random(len(vectors)) < 0.3).astype(np.float64)
            head = train_head(vectors, labels, np.ones(len(vectors)), ModelConfig(epochs=20, device=device), seed=0)
            pool = np.tile(vectors, (max(1, 200_000 // len(vectors)), 1)).astype(np.float32)
            start = time.perf_counter()
            head.logits(pool)
            scoring = len(pool) / (time.perf_counter() - start)
            name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
            print(f"| {name} | {workers} | {decoding:,.1f} | {embedding:,.1f} | {scoring:,.0f} |")


if __name__ == "__main__":
    main()
