"""Stability of a model's predictions within each class (Shen et al., ICLR 2021, Eq. 2).

For K classes, class c with n_c examples whose softmax probability vectors are p_{i,c}:

    var_c = (1/n_c) * sum_i || p_{i,c} - mean_c(p) ||_2^2
    S     = 1 - (1/K) * sum_c var_c

Shen's Table 1 reports 1 - S, the aggregated intra-class variance: label smoothing makes
a teacher's predictions within a class more alike, so 1 - S drops (ImageNet ResNet-50:
0.3217 without LS, 0.3106 with LS).

Which classes count in K. The paper evaluates on the full validation set, where every
class is present, and averages over all K. `stability` does the same by default and
raises a ValueError naming the class when a class has no examples, rather than averaging
over fewer classes than K silently. For a subset of the data, pass `classes=` to average
over those classes only (K is then len(classes)); each listed class must have examples.
The variance always uses the full K-dimensional probability vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lskd_tf.analysis._validation import check_classes, check_labels, check_probs, group_sum


class StabilityResult(NamedTuple):
    """`stability` S and the per-class intra-class variances (aligned with `classes`)."""

    stability: float
    class_variances: np.ndarray
    classes: np.ndarray

    @property
    def one_minus_stability(self) -> float:
        """1 - S, the number Shen et al. report (the mean intra-class variance)."""
        return 1.0 - self.stability


def stability(
    probs, labels, *, classes: Sequence[int] | np.ndarray | None = None
) -> StabilityResult:
    """Shen et al.'s stability metric S (Eq. 2) on softmax probabilities.

    Args:
        probs: (N, K) softmax probabilities; rows sum to 1.
        labels: (N,) integer ground-truth classes in [0, K).
        classes: classes to average over; default all K, each of which must have examples.

    Returns:
        `StabilityResult(stability, class_variances, classes)`, where
        `class_variances[j]` is var_c for c = classes[j].

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
        >>> r = stability(probs, np.array([0, 0, 1]))
        >>> r.class_variances  # class 0: 2 * 0.1**2 / 2 = 0.02; class 1: one example
        array([0.02, 0.  ])
        >>> round(r.stability, 6)  # 1 - (0.02 + 0) / 2
        0.99
    """
    p = check_probs(probs)
    num_examples, num_classes = p.shape
    y = check_labels(labels, num_classes, num_examples)
    chosen = check_classes(classes, num_classes, y)

    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    # Class means via one sorted segment sum: O(N K), no per-class Python loop.
    sums = group_sum(p, y, num_classes)
    means = sums / np.maximum(counts, 1.0)[:, None]
    # Two-pass (subtract the mean, then square) instead of E||p||^2 - ||E p||^2: the
    # latter cancels catastrophically when the variance is tiny, as for LS teachers.
    squared_dev = np.sum((p - means[y]) ** 2, axis=1)
    variances = np.bincount(y, weights=squared_dev, minlength=num_classes) / np.maximum(counts, 1.0)
    class_variances = variances[chosen]
    return StabilityResult(
        stability=float(1.0 - class_variances.mean()),
        class_variances=class_variances,
        classes=chosen,
    )
