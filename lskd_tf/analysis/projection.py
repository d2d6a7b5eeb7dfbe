"""Penultimate-layer projections onto the plane of three class templates (Müller et al. 2019).

Müller, Kornblith and Hinton (Sec. 2), followed by both LS x KD papers, look at how the
penultimate activations of three classes (two semantically similar, one dissimilar)
cluster:

1. The template of class k is the last layer's kernel column with its bias appended:
   t_k = [w_k; b_k] in R^{D+1}. A feature vector x gets a constant 1 appended:
   x~ = [x; 1], so that x~ . t_k = x . w_k + b_k is exactly the logit z_k.
2. QR of the (D+1, 3) matrix [t_a, t_b, t_c] gives Q with orthonormal columns spanning
   the templates; u = Q^T x~ (3 coordinates) keeps everything the three logits depend on.
3. `method="pca"` (default; Chandrasegaran et al.'s script): a 2-D PCA fitted on the
   *training* examples' u, reused unchanged for the validation examples.
   `method="plane"`: the exact 2-D affine plane through the three templates, with
   origin at their mean and an orthonormal basis from QR of [t_b - t_a, t_c - t_a].

Fix of a known bug: Chandrasegaran et al.'s public script builds the templates with the
bias indexed by 0, 1, 2 (the position in the triple) instead of by the class id. Here
template k always uses bias[k].

Centroids are the mean 2-D point of *all* examples given of each class; the scatter
points are subsampled (`max_train_per_class`, `max_val_per_class`) with a fixed seed.
The ICML 2022 script (sutd-visual-computing-group/LS-KD-compatibility,
src/visualization/alpha-LS-KD_imagenet_centroids.py) projects the first 150 training
and first 50 validation images of each class of its triple and takes the centroids of
those; `lskd_tf.tasks.image_classification.analysis` passes exactly such samples, so the
caps do not bite
and the centroids are the script's. One difference is kept: the script fits its PCA on
the 450 training points *and* the 3 centroids; here on the training points alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lskd_tf.analysis._validation import as_matrix, check_labels

_METHODS = ("pca", "plane")


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of examples of three classes (see the module docstring)."""

    classes: tuple[int, int, int]
    method: str
    basis: np.ndarray  # (D + 1, 3) orthonormal basis of the templates' span
    train_points: np.ndarray  # (n_train, 2)
    train_labels: np.ndarray  # (n_train,) class ids (values in `classes`)
    train_centroids: np.ndarray  # (3, 2), row j for classes[j]
    template_points: np.ndarray  # (3, 2) the templates themselves in the same 2-D frame
    val_points: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    val_centroids: np.ndarray | None = None


def check_class_triple(classes, num_classes: int, name: str = "classes") -> tuple[int, int, int]:
    """Three distinct class ids in [0, num_classes)."""
    if num_classes < 3:
        raise ValueError(
            f"A projection needs three classes, but the model has only {num_classes} classes."
        )
    c = np.asarray(classes)
    if c.shape != (3,) or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be exactly three integer class ids for a projection; got {classes!r}."
        )
    if np.unique(c).size != 3:
        raise ValueError(f"`{name}` must be three *distinct* classes; got {classes!r}.")
    if np.any((c < 0) | (c >= num_classes)):
        raise ValueError(f"`{name}` out of range: valid class ids are 0..{num_classes - 1}.")
    return tuple(int(v) for v in c)


def _check_templates(kernel, bias) -> tuple[np.ndarray, np.ndarray]:
    w = as_matrix(kernel, "kernel")
    b = np.asarray(bias, dtype=np.float64)
    if b.shape != (w.shape[1],):
        raise ValueError(
            f"`bias` must have shape ({w.shape[1]},) to match `kernel` (D, K) = {w.shape}; "
            f"got {b.shape}."
        )
    return w, b


def class_templates(kernel, bias, classes: Sequence[int]) -> np.ndarray:
    """(3, D + 1) templates t_k = [kernel[:, k]; bias[k]] for k in `classes`.

    `bias[k]` is indexed by the class id k (not by 0..2 as in the ICML 2022 script).
    """
    w, b = _check_templates(kernel, bias)
    triple = check_class_triple(classes, w.shape[1])
    idx = np.asarray(triple)
    return np.concatenate([w[:, idx].T, b[idx][:, None]], axis=1)


def template_basis(kernel, bias, classes: Sequence[int]) -> np.ndarray:
    """(D + 1, 3) orthonormal basis of the span of the three templates, by QR.

    Example:
        >>> kernel = np.eye(4)[:, :3] * 2.0  # D = 4, K = 3
        >>> q = template_basis(kernel, np.zeros(3), [0, 1, 2])
        >>> np.allclose(q.T @ q, np.eye(3))
        True
    """
    templates = class_templates(kernel, bias, classes)
    q, r = np.linalg.qr(templates.T)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * max(diag.max(), 1e-300):
        raise ValueError(
            f"The templates of classes {tuple(classes)} are linearly dependent; no 3-D basis "
            "exists (choose other classes)."
        )
    # QR signs are arbitrary; fix them so figures do not flip between runs.
    return q * np.sign(np.diag(r))[None, :]


def append_one(features) -> np.ndarray:
    """[x; 1] for each row x: (N, D) -> (N, D + 1)."""
    x = as_matrix(features, "features")
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


def project_features(features, basis: np.ndarray) -> np.ndarray:
    """Coordinates Q^T [x; 1] of each feature row in an orthonormal basis (D + 1, r)."""
    x1 = append_one(features)
    if basis.ndim != 2 or basis.shape[0] != x1.shape[1]:
        raise ValueError(
            f"`features` have D = {x1.shape[1] - 1} but `basis` expects "
            f"D + 1 = {basis.shape[0]} rows."
        )
    return x1 @ basis


def _subsample(indices: np.ndarray, labels: np.ndarray, limit: int | None, rng) -> np.ndarray:
    if limit is None:
        return indices
    keep = []
    for c in np.unique(labels[indices]):
        of_class = indices[labels[indices] == c]
        if of_class.size > limit:
            of_class = np.sort(rng.choice(of_class, size=limit, replace=False))
        keep.append(of_class)
    return np.sort(np.concatenate(keep))


def _select(features, labels, classes, num_classes: int, dim: int, name: str):
    x = as_matrix(features, f"{name}_features")
    if x.shape[1] != dim:
        raise ValueError(f"`{name}_features` have D = {x.shape[1]} but `kernel` has D = {dim}.")
    y = check_labels(labels, num_classes, x.shape[0], name=f"{name}_labels")
    members = np.flatnonzero(np.isin(y, classes))
    for c in classes:
        if not np.any(y[members] == c):
            raise ValueError(
                f"class {c} has no examples in `{name}_labels`; a projection needs examples "
                "of all three classes."
            )
    return x, y, members


def penultimate_projection(
    kernel,
    bias,
    classes: Sequence[int],
    train_features,
    train_labels,
    val_features=None,
    val_labels=None,
    *,
    method: str = "pca",
    max_train_per_class: int | None = 150,
    max_val_per_class: int | None = 50,
    seed: int = 0,
) -> Projection:
    """Project penultimate features of three classes to 2-D (module docstring has the math).

    Args:
        kernel: (D, K) weights of the final Dense layer; bias: (K,) its bias.
        classes: three distinct class ids, e.g. `default_class_triple(...)`.
        train_features, train_labels: (N, D) features and (N,) labels; the PCA is fitted on
            the projected examples of the three classes here.
        val_features, val_labels: optional validation split, projected with the same map.
        method: "pca" (Chandrasegaran et al.) or "plane" (the affine plane of the templates).
        max_train_per_class, max_val_per_class: points kept per class for plotting (None:
            all); centroids always use all examples.
        seed: seed of the subsampling.
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    w, b = _check_templates(kernel, bias)
    triple = check_class_triple(classes, w.shape[1])
    templates = class_templates(w, b, triple)
    basis = template_basis(w, b, triple)
    if (val_features is None) != (val_labels is None):
        raise ValueError("Pass both `val_features` and `val_labels`, or neither.")

    x_train, y_train, train_members = _select(
        train_features, train_labels, triple, w.shape[1], w.shape[0], "train"
    )

    if method == "pca":
        train_3d = project_features(x_train[train_members], basis)
        origin = train_3d.mean(axis=0)
        _, _, vt = np.linalg.svd(train_3d - origin, full_matrices=False)
        components = vt[:2].T  # (3, 2)
        # Sign convention: the largest-magnitude loading of each component is positive.
        flip = np.sign(components[np.argmax(np.abs(components), axis=0), [0, 1]])
        components = components * flip

        def to_2d(rows: np.ndarray) -> np.ndarray:
            return (append_one(rows) @ basis - origin) @ components

        template_points = (templates @ basis - origin) @ components
    else:
        plane_origin = templates.mean(axis=0)
        q, r = np.linalg.qr(np.stack([templates[1] - templates[0], templates[2] - templates[0]], 1))
        plane = q * np.sign(np.diag(r))[None, :]

        def to_2d(rows: np.ndarray) -> np.ndarray:
            return (append_one(rows) - plane_origin) @ plane

        template_points = (templates - plane_origin) @ plane

    rng = np.random.default_rng(seed)

    def split(x, y, members, limit):
        points_all = to_2d(x[members])
        labels_all = y[members]
        centroids = np.stack([points_all[labels_all == c].mean(axis=0) for c in triple])
        keep = _subsample(np.arange(members.size), labels_all, limit, rng)
        return points_all[keep], labels_all[keep], centroids

    train_points, train_kept, train_centroids = split(
        x_train, y_train, train_members, max_train_per_class
    )
    val_points = val_kept = val_centroids = None
    if val_features is not None:
        x_val, y_val, val_members = _select(
            val_features, val_labels, triple, w.shape[1], w.shape[0], "val"
        )
        val_points, val_kept, val_centroids = split(x_val, y_val, val_members, max_val_per_class)
    return Projection(
        classes=triple,
        method=method,
        basis=basis,
        train_points=train_points,
        train_labels=train_kept,
        train_centroids=train_centroids,
        template_points=template_points,
        val_points=val_points,
        val_labels=val_kept,
        val_centroids=val_centroids,
    )


def default_class_triple(
    superclass=None, class_names: Sequence[str] | None = None, dataset: str | None = None
) -> tuple[int, int, int]:
    """Two semantically similar classes and one dissimilar class for a projection plot.

    - dataset "imagenet2012": miniature poodle (266), standard poodle (267), submarine
      (833), the triple of Chandrasegaran et al.'s script
      (sutd-visual-computing-group/LS-KD-compatibility,
      src/visualization/alpha-LS-KD_imagenet_centroids.py, ``CLASSES_idx``).
    - otherwise, with a superclass mapping: the first two classes (lowest ids) of the
      lowest-numbered superclass that has at least two classes, and the lowest-id class
      outside that superclass. On CIFAR-100 (coarse labels) this is beaver (4) and
      dolphin (30), both "aquatic mammals", plus apple (0). (The papers' CIFAR-100 triple
      beaver, dolphin, otter is three aquatic mammals: no dissimilar class.)
    - without a mapping: classes 0, 1, 2.

    Args:
        superclass: (K,) superclass id of each class, or None.
        class_names: optional; only checked for length against `superclass`.
        dataset: tfds dataset name, e.g. "imagenet2012".
    """
    if dataset is not None and dataset.split(":")[0] == "imagenet2012":
        return (266, 267, 833)
    if superclass is None:
        num_classes = len(class_names) if class_names is not None else 3
        if num_classes < 3:
            raise ValueError(
                f"A projection needs three classes; `class_names` lists only {num_classes}."
            )
        return (0, 1, 2)
    s = np.asarray(superclass)
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError("`superclass` must be a 1-D integer array (K,).")
    if s.size < 3:
        raise ValueError(f"A projection needs three classes; `superclass` lists only {s.size}.")
    if class_names is not None and len(class_names) != s.size:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but `superclass` has {s.size} entries."
        )
    for group in np.unique(s):
        members = np.flatnonzero(s == group)
        others = np.flatnonzero(s != group)
        if members.size >= 2 and others.size >= 1:
            return (int(members[0]), int(members[1]), int(others[0]))
    raise ValueError(
        "`superclass` has no superclass with two classes plus a class outside it; pass the "
        "three classes explicitly."
    )
