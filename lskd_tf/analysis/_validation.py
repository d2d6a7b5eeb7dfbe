"""Input checks shared by the analysis measures.

Every public measure takes plain arrays (NumPy, or anything `np.asarray` accepts, such as
eager tensors) and turns bad input into a one-line `ValueError` that names the argument,
instead of a NumPy broadcasting error far from the cause.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Rows of `probs` must sum to one within this tolerance. Loose enough for float16
# softmax outputs (a float16 row of 1000 probabilities is typically off by ~1e-4).
PROB_SUM_ATOL = 1e-3


def as_matrix(x, name: str, *, num_rows: int | None = None) -> np.ndarray:
    """`x` as a finite float64 (N, K) matrix with at least one row."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (N, K); got shape {x.shape}.")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 rows); pass at least one example.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must hold real numbers; got dtype {x.dtype}.")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if num_rows is not None and x.shape[0] != num_rows:
        raise ValueError(f"`{name}` has {x.shape[0]} rows but the other inputs have {num_rows}.")
    return x


def check_probs(probs, name: str = "probs", *, atol: float = PROB_SUM_ATOL) -> np.ndarray:
    """`probs` as (N, K) float64; every row non-negative and summing to one (within atol)."""
    p = as_matrix(probs, name)
    if np.any(p < 0.0):
        raise ValueError(f"`{name}` has negative entries; pass softmax probabilities, not logits.")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > atol:
        raise ValueError(
            f"`{name}` rows must sum to 1 (tolerance {atol}); row {worst} sums to "
            f"{sums[worst]:.6g}. Pass softmax probabilities (e.g. `softmax(logits)`)."
        )
    return p


def check_labels(labels, num_classes: int, num_rows: int, name: str = "labels") -> np.ndarray:
    """`labels` as an int64 (N,) vector of class ids in [0, num_classes)."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of integer class ids (N,); got shape {y.shape}."
        )
    if y.shape[0] != num_rows:
        raise ValueError(f"`{name}` has {y.shape[0]} entries but the other inputs have {num_rows}.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"`{name}` must be integer class ids; got non-integer values.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"`{name}` must be integer class ids; got dtype {y.dtype}.")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"`{name}` out of range: found {int(y[bad][0])}, valid class ids are "
            f"0..{num_classes - 1}."
        )
    return y


def check_superclass(superclass, num_classes: int, name: str = "superclass") -> np.ndarray:
    """`superclass` as an int64 (K,) vector mapping each fine class to its superclass id."""
    if superclass is None:
        raise ValueError(
            f"`{name}` is required: pass an int array (K,) mapping each class to its "
            "superclass (e.g. DatasetInfo.superclass; CIFAR-100 coarse labels)."
        )
    s = np.asarray(superclass)
    if s.ndim != 1 or s.shape[0] != num_classes:
        raise ValueError(f"`{name}` must have shape ({num_classes},); got {s.shape}.")
    if not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer superclass ids; got dtype {s.dtype}.")
    return s.astype(np.int64)


def check_classes(
    classes: Sequence[int] | np.ndarray | None,
    num_classes: int,
    labels: np.ndarray,
    *,
    name: str = "classes",
) -> np.ndarray:
    """The classes to average over: all K by default; each must have examples in `labels`.

    Raises a ValueError naming the first empty class, so that a silent average over fewer
    classes than the caller believes never happens.
    """
    if classes is None:
        chosen = np.arange(num_classes)
    else:
        chosen = np.asarray(classes)
        if chosen.ndim != 1 or chosen.size == 0:
            raise ValueError(f"`{name}` must be a non-empty 1-D list of class ids.")
        if not np.issubdtype(chosen.dtype, np.integer):
            raise ValueError(f"`{name}` must hold integer class ids; got dtype {chosen.dtype}.")
        chosen = chosen.astype(np.int64)
        if np.any((chosen < 0) | (chosen >= num_classes)):
            raise ValueError(f"`{name}` out of range: valid class ids are 0..{num_classes - 1}.")
        if np.unique(chosen).size != chosen.size:
            raise ValueError(f"`{name}` contains duplicate class ids.")
    counts = np.bincount(labels, minlength=num_classes)
    empty = chosen[counts[chosen] == 0]
    if empty.size:
        hint = (
            "pass `classes=` (e.g. np.unique(labels)) to restrict the measure to present classes"
            if classes is None
            else "remove it from `classes`"
        )
        raise ValueError(
            f"class {int(empty[0])} has no examples in `labels` ({empty.size} empty class(es)); "
            f"{hint}."
        )
    return chosen


def softmax(logits, temperature: float = 1.0, name: str = "logits") -> np.ndarray:
    """Row-wise softmax(logits / temperature) in float64, computed stably."""
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0; got {temperature}.")
    z = as_matrix(logits, name) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits, temperature: float = 1.0, name: str = "logits") -> np.ndarray:
    """Row-wise log softmax(logits / temperature) in float64."""
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0; got {temperature}.")
    z = as_matrix(logits, name) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def group_sum(values: np.ndarray, index: np.ndarray, num_groups: int) -> np.ndarray:
    """sum of the rows of `values` (N, D) per group index (N,) -> (num_groups, D).

    Sort + `np.add.reduceat`: O(N D), much faster than `np.add.at`.
    """
    out = np.zeros((num_groups, values.shape[1]))
    if index.size == 0:
        return out
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    out[sorted_index[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out
