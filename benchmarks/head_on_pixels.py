"""How good the default head is on raw pixels, beside a kernel method on the same labels.

The digits benchmark (`benchmarks/init_defaults.py`) gives the model nothing to label: its
certifications find the head's own errors among its surest labels. This measures the head
(`lsun_crowd.classifier.train_head`, init's defaults, trained 60 epochs) on the same kind of
images, the `pixels` backbone's 16 px vectors of distorted digit scans, against scikit-learn's
RBF support vector machine and 10 nearest neighbours, for one digit against the rest. Printed per
training size: ROC AUC on the held-out images, the share of positives among the surest 80% of
them (what auto-negatives would hold), and the share of negatives among the surest positives, as
many as 70% of the true positives (what auto-positives would hold).

    python benchmarks/head_on_pixels.py [--items 20000] [--digit 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).parent))
from init_defaults import draw_scans

from lsun_crowd.classifier import train_head
from lsun_crowd.config import ModelConfig


def pool(items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``items`` scans as the digits benchmark draws them, as 256-value vectors in [0, 1], and
    their digits."""
    drawn = list(draw_scans(items, np.random.default_rng(seed)))
    scans = np.stack([scan for _, scan in drawn]).reshape(items, -1).astype(np.float32) / 255
    return scans, np.array([digit for digit, _ in drawn])


def figures(truth: np.ndarray, scores: np.ndarray) -> str:
    order = np.argsort(scores)
    surest_negatives = order[: int(0.8 * len(order))]
    surest_positives = order[::-1][: int(0.7 * truth.sum())]
    return (
        f"AUC {roc_auc_score(truth, scores):.4f}  positives among the surest 80%: "
        f"{truth[surest_negatives].mean():.3%}  negatives among the surest positives: "
        f"{1 - truth[surest_positives].mean():.3%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--digit", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    features, digits = pool(args.items, args.seed)
    truth = (digits == args.digit).astype(np.int64)
    order = np.random.default_rng(args.seed + 1).permutation(args.items)
    for size in (400, 2_000):
        train, test = order[:size], order[size:]
        head = train_head(
            features[train], truth[train].astype(np.float64), np.ones(size), ModelConfig(), seed=0, epochs=60
        )
        svm = SVC(C=10, gamma="scale").fit(features[train], truth[train])
        knn = KNeighborsClassifier(10).fit(features[train], truth[train])
        for name, scores in (
            ("head (MLP, 256 hidden)", head.logits(features[test])),
            ("RBF SVM", svm.decision_function(features[test])),
            ("10 nearest neighbours", knn.predict_proba(features[test])[:, 1]),
        ):
            print(f"{size:>5} labels  {name:<22}  {figures(truth[test], scores)}")


if __name__ == "__main__":
    main()
