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

_COLORS = ("tab:blue", "tab:orange", "tab:green")


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
    """Scatter train (and validation) points of the three classes, with centroids.

    One panel per split, sharing axes limits so the two can be compared; centroids are
    drawn as large crosses. Returns `path`.
    """
    panels = [
        ("train", projection.train_points, projection.train_labels, projection.train_centroids)
    ]
    if projection.val_points is not None:
        panels.append(
            ("validation", projection.val_points, projection.val_labels, projection.val_centroids)
        )
    figure = Figure(figsize=(4.2 * len(panels), 4.2))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    everything = np.concatenate([points for _, points, _, _ in panels], axis=0)
    low, high = everything.min(axis=0), everything.max(axis=0)
    margin = 0.05 * np.maximum(high - low, 1e-9)
    for ax, (split, points, labels, centroids) in zip(axes, panels, strict=True):
        for j, class_id in enumerate(projection.classes):
            mine = points[labels == class_id]
            ax.scatter(
                mine[:, 0],
                mine[:, 1],
                s=8,
                alpha=0.6,
                color=_COLORS[j],
                label=_class_label(class_id, class_names),
            )
            ax.scatter(*centroids[j], s=160, marker="X", color=_COLORS[j], edgecolor="black")
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
        ax.set_title(split)
        ax.set_aspect("equal", adjustable="box")
    axes[0].legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
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
