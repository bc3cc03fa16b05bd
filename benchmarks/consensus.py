"""What the model-aware consensus does to each label pass of the demo cascade: on the training
images the previous round's model has a say on, the posterior with and without the model against
the true digits (log loss, images confident enough to label, and the wrong ones among them).

python benchmarks/consensus.py [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from sqlalchemy import select

import lsun_crowd.demo as demo
import lsun_crowd.review as review
from lsun_crowd.aggregate import Posterior
from lsun_crowd.context import Context, RoundRef
from lsun_crowd.schema import Item


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth: dict[str, np.ndarray] = {}
    sums = {"images": 0, "loss_crowd": 0.0, "loss_model": 0.0, "sure_crowd": 0, "sure_model": 0}
    wrong = {"crowd": 0, "model": 0}
    original = review._with_previous_model
    bar = 0.997

    def measured(ctx: Context, ref: RoundRef, posterior: Posterior) -> Posterior:
        combined = original(ctx, ref, posterior)
        rows = np.flatnonzero(combined.probabilities[:, 1] != posterior.probabilities[:, 1])
        if len(rows) == 0:
            return combined
        with ctx.store.session() as session:
            uris = dict(session.execute(select(Item.id, Item.uri)).all())
        digit = int(ref.category.rsplit("-", 1)[1])
        shows = np.array([truth["targets"][int(Path(uris[posterior.items[i]]).stem)] == digit for i in rows])
        sums["images"] += len(rows)
        for name, result in (("crowd", posterior), ("model", combined)):
            p = result.probabilities[rows, 1]
            right = np.where(shows, p, 1 - p)
            sure = np.maximum(p, 1 - p) >= bar
            sums[f"loss_{name}"] += float(-np.log(np.clip(right, 1e-12, 1)).sum())
            sums[f"sure_{name}"] += int(sure.sum())
            wrong[name] += int((sure & (right < 0.5)).sum())
        return combined

    review._with_previous_model = measured
    write_pool = demo.write_pool

    def keep_targets(*arguments, **keywords):  # type: ignore[no-untyped-def]
        truth["targets"] = write_pool(*arguments, **keywords)
        return truth["targets"]

    demo.write_pool = keep_targets
    with tempfile.TemporaryDirectory() as out:
        demo.run_demo(Path(out), seed=args.seed, console=Console(quiet=True), compare=False)
    images = max(sums["images"], 1)
    print(f"seed {args.seed}: {sums['images']} (image, pass) pairs where the model had a say")
    print(f"{'posterior':<12} {'log loss':>8} {'confident':>9} {'wrong':>5}")
    for name in ("crowd", "model"):
        label = "votes alone" if name == "crowd" else "with model"
        print(f"{label:<12} {sums[f'loss_{name}'] / images:>8.4f} {sums[f'sure_{name}']:>9} {wrong[name]:>5}")


if __name__ == "__main__":
    main()
