"""Per-class log offsets that recalibrate a modality's probabilities (core.scores.FusionRule.calibrate), fitted
on validation clips from sources training never saw.

Bias-only calibration (Guo et al. 2017's vector scaling without the scale; a label-shift correction in the
sense of Lipton et al. 2018): one offset per class, chosen to minimise the class-balanced cross-entropy of
softmax(log p + offset) on the validation clips. Thirteen numbers fitted on about 200 clips; a small L2 pull
towards zero keeps a class that the clips barely decide from drifting.
"""

from __future__ import annotations

import numpy as np
import torch

OFFSET_L2 = 0.01  # weight of the mean squared offset beside the cross-entropy
EPSILON = 1e-6  # floor of a probability before its log


def fit_class_offsets(probabilities: np.ndarray, targets: np.ndarray, l2: float = OFFSET_L2) -> tuple[float, ...]:
    """(n, classes) probabilities and their (n,) true classes -> per-class log offsets.

    Only the classes that occur among the targets are fitted, within a softmax over those classes alone: a class
    the clips never show (no field picture of a harmonica) says nothing about its offset, which stays 0. Offsets
    are shifted to mean 0 over the fitted classes, so the unfitted ones stay neutral among them."""
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets, np.int64)
    n_classes = probabilities.shape[1]
    if len(probabilities) != len(targets) or len(targets) == 0:
        raise ValueError(f"need as many targets as probability rows (and at least one), got {len(targets)}")
    seen = np.unique(targets)
    column = {c: i for i, c in enumerate(seen)}
    log_p = torch.from_numpy(np.log(np.clip(probabilities[:, seen], EPSILON, None)))
    labels = torch.tensor([column[t] for t in targets])
    counts = torch.bincount(labels, minlength=len(seen)).double()
    weights = len(labels) / (len(seen) * counts)  # class-balanced: macro-F1 weighs every class alike
    offsets = torch.zeros(len(seen), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([offsets], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(log_p + offsets, labels, weight=weights) + l2 * offsets.pow(2).mean()
        value.backward()
        return value

    optimiser.step(loss)
    fitted = offsets.detach().numpy()
    full = np.zeros(n_classes)
    full[seen] = fitted - fitted.mean()
    return tuple(round(float(x), 4) for x in full)
