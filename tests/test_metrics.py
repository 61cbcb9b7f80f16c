"""Metrics against values computed by hand."""

import numpy as np
import pytest

from streamrec.train.metrics import (
    average_precision,
    classification_report,
    confusion_matrix,
    f1_per_class,
    hit_at_k,
    multilabel_report,
)

CLASSES = ("a", "b", "c", "d")


def test_hit_at_k_by_hand() -> None:
    scores = np.array(
        [
            [0.7, 0.2, 0.1, 0.0],  # true 0: top-1 hit
            [0.5, 0.3, 0.15, 0.05],  # true 1: second -> top-3 hit only
            [0.1, 0.2, 0.3, 0.4],  # true 0: last of 4 -> miss at 3
            [0.0, 0.3, 0.6, 0.1],
        ]
    )  # true 3: third -> top-3 hit
    targets = np.array([0, 1, 0, 3])
    assert hit_at_k(scores, targets, 1) == 0.25
    assert hit_at_k(scores, targets, 3) == 0.75


def test_confusion_and_f1_by_hand() -> None:
    # true:      a a a b b c
    # predicted: a a b b c c
    targets = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    confusion = confusion_matrix(predicted, targets, 4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    # a: P=2/2, R=2/3 -> F1=0.8; b: P=1/2, R=1/2 -> 0.5; c: P=1/2, R=1 -> 2/3; d: never -> 0
    np.testing.assert_allclose(f1_per_class(confusion), [0.8, 0.5, 2 / 3, 0.0])


def test_report_macro_f1_over_present_classes() -> None:
    targets = np.array([0, 0, 0, 1, 1, 2])
    scores = np.eye(4)[[0, 0, 1, 1, 2, 2]]
    report = classification_report(scores, targets, CLASSES)
    assert report["n"] == 6
    assert report["hit1"] == pytest.approx(4 / 6)
    assert report["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)  # class d absent from the targets
    assert set(report["per_class_f1"]) == {"a", "b", "c"}
    assert report["confusion"][0] == [2, 1, 0, 0]


def test_average_precision_and_multilabel_by_hand() -> None:
    # ranking: pos, neg, pos -> precision at positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    probabilities = np.array([[0.9, 0.6], [0.2, 0.4], [0.7, 0.1]])
    truth = np.array([[1, 1], [0, 1], [1, 0]])
    report = multilabel_report(probabilities, truth)
    # class 0: predicted {0,2}, true {0,2} -> F1 1; class 1: predicted {0}, true {0,1} -> F1 2/3
    assert report["f1_macro_at_0.5"] == pytest.approx((1 + 2 / 3) / 2)
    assert report["map"] == pytest.approx((1.0 + 1.0) / 2)
