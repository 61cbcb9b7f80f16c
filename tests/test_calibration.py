"""Per-class offsets fitted on validation scores (train/calibration.py): they undo a class's systematic
under- or over-calling, and leave alone the classes the clips do not show."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.core.scores import FusionRule
from streamrec.train.calibration import fit_class_offsets


def scores(n_per_class: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores that favour the true class, and the targets."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(n_classes), n_per_class)
    logits = rng.normal(0, 1, (len(targets), n_classes))
    logits[np.arange(len(targets)), targets] += 2.0
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), targets


def test_offsets_undo_a_class_that_is_under_called() -> None:
    p, targets = scores(60, 4, seed=0)
    shifted = p * np.exp([-3.0, 0.0, 0.0, 1.0])  # class 0 heard as the others, class 3 everywhere
    shifted /= shifted.sum(axis=1, keepdims=True)
    offsets = fit_class_offsets(shifted, targets)
    assert offsets[0] > 2.0 > offsets[1]  # the under-called class is pushed back up
    assert offsets[3] < offsets[1]
    assert abs(sum(offsets)) < 1e-3
    rule = FusionRule("product", audio_offsets=offsets)
    recalled = (rule.calibrate("audio", shifted.astype(np.float32)).argmax(axis=1) == targets)[targets == 0].mean()
    assert recalled > 0.7 > (shifted.argmax(axis=1) == targets)[targets == 0].mean()


def test_a_class_the_clips_never_show_keeps_a_neutral_offset() -> None:
    p, targets = scores(40, 3, seed=1)
    p4 = np.concatenate([p * 0.9, np.full((len(p), 1), 0.1)], axis=1)  # a 4th class, never a target
    offsets = fit_class_offsets(p4, targets)
    assert offsets[3] == 0.0
    assert abs(sum(offsets[:3])) < 1e-3


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="as many targets"):
        fit_class_offsets(np.full((3, 2), 0.5), np.array([0, 1]))
