"""PNG figures: penultimate-layer projections and reliability diagrams.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
`pyplot`: no global backend switch, no window, no figure left open in a long sweep.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lskd_tf.analysis.calibration import expected_calibration_error, reliability_bins
from lskd_tf.analysis.projection import Projection

# Class j of a projection triple: colour and marker differ, so the classes stay apart in
# greyscale too; by the `default_class_triple` convention classes 0 and 1 are the
# semantically similar pair and class 2 the dissimilar one.
_COLORS = ("tab:blue", "tab:orange", "tab:green")
_MARKERS = ("o", "s", "^")


def _save(figure: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end in .png; got {path!r}.")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)
    return path


def _class_label(class_id: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= class_id < len(class_names):
        return f"{class_names[class_id]} ({class_id})"
    return f"class {class_id}"


def plot_projection(
    projection: Projection,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Scatter train and validation points of the three classes side by side, as the
    papers do (Müller et al. Fig. 1; Chandrasegaran et al. Fig. 2), with class means.

    Each split gets its own panel; both panels share the same x and y limits so they can
    be compared, and those limits fit the data on both axes (the axes are *not* equally
    scaled: the PCA's second axis typically has several times less spread than the first,
    and an equal scaling would squash the plot into a thin strip). Classes differ by
    colour and marker (circle, square, triangle); class means over all examples are large
    black-edged markers; one legend with class names (and ids) sits under the panels.
    Returns `path`.

    Example:
        >>> from lskd_tf.analysis.projection import penultimate_projection
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat([0, 1, 2], 20)
        >>> p = penultimate_projection(rng.normal(size=(4, 3)), np.zeros(3), (0, 1, 2),
        ...                            rng.normal(size=(60, 4)) + labels[:, None], labels)
        >>> import tempfile; d = tempfile.mkdtemp()
        >>> plot_projection(p, d + "/p.png", class_names=["cat", "dog", "car"]).endswith("p.png")
        True
    """
    panels = [
        ("train", projection.train_points, projection.train_labels, projection.train_centroids)
    ]
    if projection.val_points is not None:
        panels.append(
            ("validation", projection.val_points, projection.val_labels, projection.val_centroids)
        )
    figure = Figure(figsize=(5.0 * len(panels), 5.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
    everything = np.concatenate(
        [points for _, points, _, _ in panels] + [c for *_, c in panels], axis=0
    )
    low, high = everything.min(axis=0), everything.max(axis=0)
    margin = 0.05 * np.maximum(high - low, 1e-9)
    axis_names = (
        ("PC 1", "PC 2") if projection.method == "pca" else ("plane axis 1", "plane axis 2")
    )
    handles = []
    for ax, (split, points, labels, centroids) in zip(axes, panels, strict=True):
        for j, class_id in enumerate(projection.classes):
            mine = points[labels == class_id]
            scatter = ax.scatter(
                mine[:, 0],
                mine[:, 1],
                s=14,
                alpha=0.55,
                marker=_MARKERS[j],
                color=_COLORS[j],
                linewidths=0,
                label=_class_label(class_id, class_names),
            )
            if split == "train":
                handles.append(scatter)
            ax.scatter(
                *centroids[j],
                s=220,
                marker=_MARKERS[j],
                color=_COLORS[j],
                edgecolor="black",
                linewidths=1.5,
                zorder=3,
            )
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
        ax.set_title(f"{split} ({len(points)} points)")
        ax.set_xlabel(axis_names[0])
        ax.grid(True, linewidth=0.4, alpha=0.4)
    axes[0].set_ylabel(axis_names[1])
    mean_handle = axes[0].scatter(
        [], [], s=120, marker="o", facecolor="white", edgecolor="black", label="class mean"
    )
    figure.legend(
        handles=[*handles, mean_handle],
        loc="outside lower center",
        ncol=len(handles) + 1,
        fontsize=9,
        markerscale=1.6,
        frameon=False,
    )
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_reliability_diagram(
    probs,
    labels,
    path: str | os.PathLike,
    *,
    num_bins: int = 15,
    title: str | None = None,
) -> str:
    """Bar chart of accuracy per confidence bin against the diagonal, ECE in the legend."""
    bins = reliability_bins(probs, labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    width = 1.0 / num_bins
    centers = bins.edges[:-1] + width / 2
    filled = bins.counts > 0
    figure = Figure(figsize=(4.2, 4.2))
    ax = figure.subplots()
    ax.bar(
        centers[filled],
        bins.accuracy[filled],
        width=width,
        edgecolor="black",
        color="tab:blue",
        label=f"accuracy (ECE = {ece:.4f})",
    )
    ax.bar(
        centers[filled],
        (bins.confidence - bins.accuracy)[filled],
        bottom=bins.accuracy[filled],
        width=width,
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return _save(figure, path)
