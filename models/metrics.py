"""Detection metrics (image-level for now; pixel-level AUPRO comes with the evaluation harness)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC of image scores; NaN when only one class is present."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores)))


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    y = np.concatenate([m.ravel() for m in masks]).astype(np.uint8)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, np.concatenate([m.ravel() for m in maps])))
