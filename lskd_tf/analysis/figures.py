"""PNG figures: penultimate-layer projections and reliability diagrams.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
`pyplot`: no global backend switch, no window, no figure left open in a long sweep.
"""

from __future__ import annotations

import os
import textwrap
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


MIN_BIN_COUNT = 10
"""Bins with fewer examples are greyed out in reliability diagrams: their accuracy is
noise (one example gives 0 or 1), and a full-height bar would look as strong as any."""

_ACCURACY, _GAP, _FEW = "tab:blue", "tab:red", "lightgrey"


def plot_reliability_diagram(
    probs,
    labels,
    path: str | os.PathLike,
    *,
    num_bins: int = 15,
    title: str | None = None,
    min_count: int = MIN_BIN_COUNT,
) -> str:
    """Accuracy per confidence bin against the diagonal, over a histogram of bin counts.

    Top panel: accuracy bars (blue); the gap between a bin's accuracy and its mean
    confidence as a red hatched outline (no translucent fill, so no blended colour the
    legend does not name); bins with fewer than ``min_count`` examples in grey, without
    a gap. Bottom panel: examples per bin (log scale), each bar labelled with its count.
    A long ``title`` (a run name) is wrapped at its hyphens instead of being clipped.
    Returns `path`.
    """
    return _save(reliability_figure(probs, labels, num_bins=num_bins, title=title,
                                    min_count=min_count), path)  # fmt: skip


def reliability_figure(
    probs,
    labels,
    *,
    num_bins: int = 15,
    title: str | None = None,
    min_count: int = MIN_BIN_COUNT,
) -> Figure:
    """The `plot_reliability_diagram` figure, not saved (tests read its artists)."""
    bins = reliability_bins(probs, labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    width = 1.0 / num_bins
    centers = bins.edges[:-1] + width / 2
    enough = bins.counts >= max(min_count, 1)
    few = (bins.counts > 0) & ~enough
    figure = Figure(figsize=(5.0, 6.4), layout="constrained")
    ax, counts_ax = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.2)}
    )  # fmt: skip
    ax.bar(centers[enough], bins.accuracy[enough], width=width, edgecolor="black",
           color=_ACCURACY, label="accuracy of the bin")  # fmt: skip
    low = np.minimum(bins.accuracy, bins.confidence)[enough]
    ax.bar(centers[enough], np.abs(bins.confidence - bins.accuracy)[enough], bottom=low,
           width=width, fill=False, hatch="///", edgecolor=_GAP, linewidth=1.0,
           label="gap to the bin's mean confidence")  # fmt: skip
    if few.any():
        ax.bar(centers[few], bins.accuracy[few], width=width, edgecolor="grey", color=_FEW,
               label=f"bin with < {min_count} examples (unreliable)")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8, title=f"ECE = {ece:.4f}", title_fontsize=8)
    filled = bins.counts > 0
    colors = np.where(enough, _ACCURACY, _FEW)[filled]
    bars = counts_ax.bar(centers[filled], bins.counts[filled], width=width, color=colors,
                         edgecolor="black", linewidth=0.5)  # fmt: skip
    counts_ax.bar_label(bars, labels=[str(c) for c in bins.counts[filled]], fontsize=7)
    counts_ax.set_yscale("log")
    counts_ax.set_ylim(0.8, max(2.0, float(bins.counts.max())) * 4)
    counts_ax.set_ylabel("examples")
    counts_ax.set_xlabel("confidence")
    if title:
        figure.suptitle(textwrap.fill(title, width=48), fontsize=10)
    return figure
