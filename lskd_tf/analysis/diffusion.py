"""Systematic diffusion, made quantitative.

Chandrasegaran et al. (ICML 2022) show *systematic diffusion* only as pictures: with a
label-smoothed teacher, raising the distillation temperature from 1 to 3 makes the
student's penultimate clusters of semantically similar classes (e.g. toy and miniature
poodle) spread toward each other and overlap, while dissimilar classes (tench) stay apart.
No formula was published; lskd_tf defines two families of measures, both relative to a
superclass mapping `superclass[k]` (CIFAR-100 coarse labels; WordNet parents on ImageNet).
Write S(y) = {k : superclass[k] == superclass[y]} for the classes sharing y's superclass,
and K for the number of classes.

(a) Where the non-target probability mass goes (`semantic_mass`). For an example with
    true class y and probabilities p:

        same_i  = sum_{k in S(y), k != y} p_k           (mass on semantic siblings)
        other_i = sum_{k not in S(y)} p_k                (mass on unrelated classes)
        share_i = same_i / (same_i + other_i)            (share of the non-target mass)
        chance_i = (|S(y)| - 1) / (K - 1)                (share if non-target mass were uniform)

    `semantic_mass_ratio` = mean_i share_i / chance_i, over examples with non-target mass
    > 1e-12 and |S(y)| > 1. It is 1.0 when the model has no semantic preference and grows
    when the non-target mass concentrates on siblings: diffusion raises it. The means of
    same_i and other_i are reported too (label smoothing alone raises both).

(b) How far apart the classes are in feature space (`feature_separation`). For class c
    with n_c >= 2 examples x_i in R^D: centroid mu_c and isotropic within-class variance
    sigma_c^2 = (1 / (n_c D)) sum_i ||x_i - mu_c||^2 (mean per-dimension variance). For a
    pair (a, b) with d_ab = ||mu_a - mu_b||:

        separation_ab = d_ab / sqrt((sigma_a^2 + sigma_b^2) / 2)      (Fisher-style ratio)
        overlap_ab    = sqrt(2 sigma_a sigma_b / (sigma_a^2 + sigma_b^2))
                        * exp(-d_ab^2 / (4 (sigma_a^2 + sigma_b^2)))

    overlap_ab is the Bhattacharyya coefficient of the two classes modeled as 1-D Gaussians
    along the centroid-difference axis (1 = indistinguishable, 0 = disjoint). Means are
    taken over same-superclass pairs and over different-superclass pairs, and

        separation_ratio = mean same-superclass separation / mean different-superclass one.

    Diffusion = similar classes move together and spread out: same-superclass separation
    falls (overlap rises) while different-superclass pairs stay apart, so
    separation_ratio falls. Cost: O(N D) for the centroids and variances (streamed in
    chunks) plus O(K^2 D) for one Gram matrix of the centroids; never O(N^2).

(c) How far each example's logit stands above its closest sibling's (`sibling_margin`),
    in units of its class's spread: with logits z_i and m_i = z_{i,y} - max_{k in S(y),
    k != y} z_{i,k},

        dprime_c = mean_{i in c} m_i / std_{i in c} m_i,
        sibling_margin_dprime = mean over classes c with siblings and >= 2 examples.

    Diffusion pulls siblings' logits toward the target's, so it falls.

Which measures answer "did the siblings diffuse?" was checked on planted data
(`tests/test_diffusion_planted.py`): features of two sibling classes moved toward each
other by a known fraction while a third class stayed put, then two changes that are not
diffusion: every feature scaled alike (a sharper or softer model) and the unrelated class
moved away. Measured there (16-D Gaussians, 200 examples per class):

* `same_superclass_separation` falls and `same_superclass_overlap` rises monotonically
  with the planted amount (4.34 -> 1.81 and 0.10 -> 0.66 at 60 %) and neither moves
  under scaling or the unrelated shift. They are the headline feature measures.
* `sibling_margin_dprime` falls monotonically and is exactly invariant to both (its
  logits are the features times fixed templates, no bias): the headline logit measure.
* `separation_ratio` falls with diffusion but falls just as well when the unrelated class
  moves away (1.01 -> 0.64 with no diffusion at all), because its denominator is the
  other pairs' separation. Read it only beside `other_separation`.
* `semantic_mass_ratio` rises with diffusion but also with the logits' scale at a fixed
  geometry (1.26 -> 1.34 for 4x sharper logits at 40 % diffusion): it mixes diffusion
  with confidence, so compare it only between models of similar confidence (e.g. the
  same temperature and teacher accuracy).

The same `feature_separation` applies to any embedding: e.g. the 2-D points of a
`Projection` (what the papers plot) or logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lskd_tf.analysis._validation import (
    check_classes,
    check_labels,
    check_probs,
    check_superclass,
    group_sum,
)

# Rows are processed in chunks so float64 copies of ImageNet-sized feature matrices
# (50,000 x 2,048) never exist in full.
_CHUNK_ROWS = 8192
_CHUNK_VALUES = 1 << 22  # ~32 MB of float64 per (rows, K) copy in `sibling_margin`


def semantic_mass(probs, labels, superclass) -> dict[str, float]:
    """Measures (a): non-target probability mass on same-superclass vs other classes.

    Args:
        probs: (N, K) softmax probabilities (of a student or a teacher, at any temperature).
        labels: (N,) true classes.
        superclass: (K,) superclass id of each class.

    Returns:
        dict with `same_superclass_mass`, `other_mass` (means over all examples),
        `same_superclass_share` (mean share_i), `chance_share` (mean chance_i) and
        `semantic_mass_ratio` (mean share_i / chance_i), the last three over eligible
        examples (see the module docstring), and `num_eligible` examples.

    Example:
        >>> sc = np.array([0, 0, 1, 1])  # classes 0, 1 are siblings; 2, 3 too
        >>> p = np.array([[0.6, 0.2, 0.1, 0.1]])
        >>> m = semantic_mass(p, np.array([0]), sc)
        >>> round(m["same_superclass_share"], 6), round(m["semantic_mass_ratio"], 6)
        (0.5, 1.5)
    """
    p = check_probs(probs)
    num_examples, num_classes = p.shape
    if num_classes < 2:
        raise ValueError("`probs` needs at least two classes for non-target mass.")
    y = check_labels(labels, num_classes, num_examples)
    groups = check_superclass(superclass, num_classes)
    _, group_index = np.unique(groups, return_inverse=True)
    group_sizes = np.bincount(group_index)

    target = p[np.arange(num_examples), y]
    group_of_target = group_index[y]
    # Mass per superclass, then pick each example's own superclass: O(N K).
    mass_by_group = group_sum(p.T, group_index, group_sizes.size).T
    same = mass_by_group[np.arange(num_examples), group_of_target] - target
    same = np.maximum(same, 0.0)  # rounding can leave -1e-17
    non_target = np.maximum(p.sum(axis=1) - target, 0.0)
    other = np.maximum(non_target - same, 0.0)
    chance = (group_sizes[group_of_target] - 1) / (num_classes - 1)

    eligible = (non_target > 1e-12) & (chance > 0)
    if not np.any(eligible):
        raise ValueError(
            "No example has both non-target mass and a class sharing its superclass; "
            "`semantic_mass_ratio` is undefined (check `superclass`)."
        )
    share = same[eligible] / non_target[eligible]
    return {
        "same_superclass_mass": float(same.mean()),
        "other_mass": float(other.mean()),
        "same_superclass_share": float(share.mean()),
        "chance_share": float(chance[eligible].mean()),
        "semantic_mass_ratio": float(np.mean(share / chance[eligible])),
        "num_eligible": int(eligible.sum()),
    }


def class_statistics(features, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class centroids (K, D) and isotropic within-class variances (K,), in O(N D).

    Classes without examples get NaN; the variance uses 1 / (n_c D) (no Bessel correction).
    """
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"`features` must be a non-empty 2-D array (N, D); got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"`features` must hold real numbers; got dtype {x.dtype}.")
    y = check_labels(labels, num_classes, x.shape[0])
    dim = x.shape[1]
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    sums = np.zeros((num_classes, dim))
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start : start + _CHUNK_ROWS].astype(np.float64)
        if not np.all(np.isfinite(chunk)):
            raise ValueError("`features` contains NaN or infinite values.")
        sums += group_sum(chunk, y[start : start + _CHUNK_ROWS], num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = sums / counts[:, None]
    squared = np.zeros(num_classes)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start : start + _CHUNK_ROWS].astype(np.float64)
        rows = y[start : start + _CHUNK_ROWS]
        deviation = np.sum((chunk - centroids[rows]) ** 2, axis=1)
        squared += np.bincount(rows, weights=deviation, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        variances = squared / (counts * max(dim, 1))
    return centroids, variances


def feature_separation(
    features,
    labels,
    superclass,
    *,
    classes: Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """Measures (b): class separation in feature space, same-superclass vs other pairs.

    Args:
        features: (N, D) penultimate features (or any embedding).
        labels: (N,) true classes in [0, K), K = len(superclass).
        superclass: (K,) superclass id of each class.
        classes: restrict to these classes (default: all K; each needs >= 2 examples).

    Returns:
        dict with `same_superclass_separation`, `other_separation`, `separation_ratio`,
        `same_superclass_overlap`, `other_overlap`, `num_same_pairs`, `num_other_pairs`.

    Example:
        >>> x = np.array([[0., 1], [0, -1], [2, 1], [2, -1], [10, 1], [10, -1]])
        >>> m = feature_separation(x, np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1]))
        >>> m["same_superclass_separation"]  # centroids 2 apart, variance (1+0)/2 = 0.5
        2.8284271247461903
    """
    s = np.asarray(superclass)
    if s.ndim != 1:
        raise ValueError(f"`superclass` must have shape (K,); got {s.shape}.")
    num_classes = s.shape[0]
    groups = check_superclass(s, num_classes)
    centroids, variances = class_statistics(features, labels, num_classes)
    y = check_labels(labels, num_classes, np.asarray(features).shape[0])
    chosen = check_classes(classes, num_classes, y)
    counts = np.bincount(y, minlength=num_classes)
    small = chosen[counts[chosen] < 2]
    if small.size:
        raise ValueError(
            f"class {int(small[0])} has fewer than 2 examples; its within-class spread is "
            "undefined (pass `classes=` without it, or more data)."
        )

    mu = centroids[chosen]
    var = variances[chosen]
    squared_norms = np.sum(mu**2, axis=1)
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, one (K, K) Gram matrix.
    dist2 = np.maximum(squared_norms[:, None] + squared_norms[None, :] - 2.0 * mu @ mu.T, 0.0)
    var_sum = var[:, None] + var[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        separation = np.sqrt(dist2 / (var_sum / 2.0))
        overlap = np.sqrt(2.0 * np.sqrt(var[:, None] * var[None, :]) / var_sum) * np.exp(
            -dist2 / (4.0 * var_sum)
        )
    # Two classes with zero spread: identical centroids overlap fully, distinct ones not.
    degenerate = var_sum == 0
    separation[degenerate] = np.where(dist2[degenerate] > 0, np.inf, 0.0)
    overlap[degenerate] = np.where(dist2[degenerate] > 0, 0.0, 1.0)

    upper = np.triu(np.ones((chosen.size, chosen.size), dtype=bool), k=1)
    same_group = groups[chosen][:, None] == groups[chosen][None, :]
    same_pairs = upper & same_group
    other_pairs = upper & ~same_group
    if not np.any(same_pairs) or not np.any(other_pairs):
        raise ValueError(
            "`feature_separation` needs at least one pair of classes sharing a superclass and "
            "one pair that does not; check `superclass` and `classes`."
        )
    same_sep = float(separation[same_pairs].mean())
    other_sep = float(separation[other_pairs].mean())
    return {
        "same_superclass_separation": same_sep,
        "other_separation": other_sep,
        "separation_ratio": same_sep / other_sep if other_sep > 0 else float("nan"),
        "same_superclass_overlap": float(overlap[same_pairs].mean()),
        "other_overlap": float(overlap[other_pairs].mean()),
        "num_same_pairs": int(same_pairs.sum()),
        "num_other_pairs": int(other_pairs.sum()),
    }


def sibling_margin(logits, labels, superclass) -> dict[str, float]:
    """Measure (c): each example's logit margin over its closest sibling, standardized.

    Args:
        logits: (N, K) logits (not probabilities: the margin is scale-free only there).
        labels: (N,) true classes.
        superclass: (K,) superclass id of each class.

    Returns:
        dict with `sibling_margin` (mean m_i over examples whose class has siblings),
        `sibling_margin_dprime` (mean over classes of mean/std of their m_i; classes with
        fewer than 2 such examples or no spread are left out) and `num_margin_classes`.

    Example:
        >>> z = np.array([[3., 1, 0], [2, 1, 0], [1, 3, 0], [1, 2, 0]])
        >>> m = sibling_margin(z, np.array([0, 0, 1, 1]), np.array([0, 0, 1]))
        >>> m["sibling_margin"], m["sibling_margin_dprime"]  # margins 2, 1 and 2, 1
        (1.5, 3.0)
    """
    z = np.asarray(logits)
    if z.ndim != 2 or not np.issubdtype(z.dtype, np.number):
        raise ValueError(f"`logits` must be a real (N, K) array; got shape {z.shape}.")
    num_examples, num_classes = z.shape
    y = check_labels(labels, num_classes, num_examples)
    groups = check_superclass(superclass, num_classes)
    margins = np.full(num_examples, np.nan)
    # (rows, K) float64 copies: bound their size by values, not rows (a translation
    # vocabulary has K ~ 10^4, so 8192 rows would be 650 MB per copy).
    chunk_rows = max(1, _CHUNK_VALUES // num_classes)
    for start in range(0, num_examples, chunk_rows):
        rows = slice(start, start + chunk_rows)
        chunk, targets = z[rows].astype(np.float64), y[rows]
        if not np.all(np.isfinite(chunk)):
            raise ValueError("`logits` contains NaN or infinite values.")
        siblings = groups[None, :] == groups[targets][:, None]
        siblings[np.arange(targets.size), targets] = False
        closest = np.where(siblings, chunk, -np.inf).max(axis=1)
        target = chunk[np.arange(targets.size), targets]
        margins[rows] = np.where(np.isfinite(closest), target - closest, np.nan)
    eligible = np.isfinite(margins)
    if not np.any(eligible):
        raise ValueError(
            "No example's class shares its superclass with another class; the sibling "
            "margin is undefined (check `superclass`)."
        )
    m, c = margins[eligible], y[eligible]
    counts = np.bincount(c, minlength=num_classes)
    means = np.bincount(c, weights=m, minlength=num_classes) / np.maximum(counts, 1)
    spread = np.bincount(c, weights=(m - means[c]) ** 2, minlength=num_classes)
    stds = np.sqrt(spread / np.maximum(counts, 1))
    usable = (counts >= 2) & (stds > 0)
    return {
        "sibling_margin": float(m.mean()),
        "sibling_margin_dprime": float(np.mean(means[usable] / stds[usable]))
        if np.any(usable)
        else float("nan"),
        "num_margin_classes": int(usable.sum()),
    }


def sibling_confusion(logits, labels, superclass) -> dict[str, float]:
    """How often a model that finds the superclass still picks the wrong sibling.

    Among examples whose top-1 prediction lies in the true superclass S(y) (classes
    with siblings only), `sibling_confusion` is the share predicted as a sibling
    rather than y; `sibling_chance` is that share for a uniform pick inside S(y),
    mean of (|S(y)| - 1) / |S(y)|. A teacher with separable siblings is well below
    chance; one that only finds superclasses is near it.

    Example:
        >>> z = np.array([[3., 1, 0], [1, 3, 0], [3, 1, 0]])
        >>> sibling_confusion(z, np.array([0, 1, 1]), np.array([0, 0, 1]))["sibling_confusion"]
        0.3333333333333333
    """
    z = np.asarray(logits)
    if z.ndim != 2:
        raise ValueError(f"`logits` must be a (N, K) array; got shape {z.shape}.")
    y = check_labels(labels, z.shape[1], z.shape[0])
    groups = check_superclass(superclass, z.shape[1])
    _, group_index = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_index)[group_index]  # per class: its superclass's size
    predicted = np.argmax(z, axis=1)
    within = (groups[predicted] == groups[y]) & (sizes[y] > 1)
    if not np.any(within):
        raise ValueError(
            "No prediction falls in its true superclass; sibling confusion is undefined."
        )
    return {
        "sibling_confusion": float(np.mean(predicted[within] != y[within])),
        "sibling_chance": float(np.mean((sizes[y[within]] - 1) / sizes[y[within]])),
        "superclass_accuracy": float(np.mean(groups[predicted] == groups[y])),
    }


def diffusion_measures(
    probs,
    features,
    labels,
    superclass,
    *,
    classes: Sequence[int] | np.ndarray | None = None,
    logits=None,
) -> dict[str, float]:
    """(a) on `probs`, (b) on `features` and, given `logits`, (c), in one flat dict."""
    measures = semantic_mass(probs, labels, superclass)
    measures.update(feature_separation(features, labels, superclass, classes=classes))
    if logits is not None:
        measures.update(sibling_margin(logits, labels, superclass))
    return measures
