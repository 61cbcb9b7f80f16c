"""Evaluation metrics of the seeds: Hit@1, Hit@3, macro F1 (seed 000/001), and for multi-label
targets F1-macro at a 0.5 threshold and mAP (seed 003). Pure numpy; fractions in 0..1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# matplotlib is imported where a figure is drawn: slow to import, and only figures need it.


def hit_at_k(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of rows whose target index is among the k highest scores. scores (n, classes), targets (n,)."""
    if len(targets) == 0:
        return float("nan")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


def confusion_matrix(predicted: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    return matrix


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix; 0 for a class never true nor predicted."""
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    denominator = predicted + actual
    return np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)


def classification_report(scores: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict:
    """The per-modality block of the eval JSON (docs/dataset.md): n, hit1, hit3, f1_macro, per_class_f1, confusion.

    Macro F1 averages over the classes present in the targets (a class absent from the test set
    would otherwise count as 0 and drag the mean for no reason).
    """
    n_classes = len(classes)
    predicted = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)
    confusion = confusion_matrix(predicted, targets, n_classes)
    f1 = f1_per_class(confusion)
    present = confusion.sum(axis=1) > 0
    return {
        "n": int(len(targets)),
        "hit1": hit_at_k(scores, targets, 1),
        "hit3": hit_at_k(scores, targets, min(3, n_classes)),
        "f1_macro": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class_f1": {name: float(f1[i]) for i, name in enumerate(classes) if present[i]},
        "confusion": confusion.tolist(),
    }


def multilabel_report(probabilities: np.ndarray, multi_hot: np.ndarray, threshold: float = 0.5) -> dict:
    """Seed 003's metrics: F1-macro at a threshold and mean average precision, over classes with positives."""
    predicted = probabilities >= threshold
    truth = multi_hot > 0.5
    f1s, aps = [], []
    # Seed 003's per-instrument score (OpenMIC's): the mean of the F1 of the positive and of the
    # negative decisions of that instrument; None for a class without positives.
    pos_neg: list[float | None] = []
    for c in range(truth.shape[1]):
        if not truth[:, c].any():
            pos_neg.append(None)
            continue
        f1s.append(_binary_f1(predicted[:, c], truth[:, c]))
        pos_neg.append(float((f1s[-1] + _binary_f1(~predicted[:, c], ~truth[:, c])) / 2))
        aps.append(average_precision(probabilities[:, c], truth[:, c]))
    scored = [f for f in pos_neg if f is not None]
    return {
        "f1_macro_at_0.5": float(np.mean(f1s)) if f1s else float("nan"),
        "map": float(np.mean(aps)) if aps else float("nan"),
        "f1_pos_neg": float(np.mean(scored)) if scored else float("nan"),
        "per_class_f1_pos_neg": pos_neg,
    }


def _binary_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """F1 of one binary decision (boolean arrays); 0 when there is nothing to find and nothing found."""
    denominator = predicted.sum() + truth.sum()
    return float(2 * np.sum(predicted & truth) / denominator) if denominator else 0.0


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean of precision at each positive (no interpolation)."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision_at * hits) / hits.sum())


def plot_confusions(confusions: dict[str, np.ndarray], classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrices side by side (the seed paper's Figure 2) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(confusions), figsize=(5.2 * len(confusions), 5.0), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], confusions.items()):
        matrix = np.asarray(matrix, dtype=np.float64)
        rows = matrix.sum(axis=1, keepdims=True)
        normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        int(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
