"""All measures for one model, Markdown reports for runs and sweeps, TensorBoard logging.

`analyze` turns the outputs of `collect_outputs` (features, logits, labels, templates) into
one flat dict of numbers plus figure paths, and writes `analysis.json` and PNGs to the run
directory. `write_report` lays several such results out as a Markdown report: a table of
numbers (rows = runs) and the figures side by side (teachers by label smoothing; students
by temperature x teacher label smoothing), the comparison both papers make.
`log_to_tensorboard` writes the same numbers and PNGs as TensorBoard summaries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lskd_tf.analysis._validation import check_labels, softmax
from lskd_tf.analysis.agreement import (
    teacher_student_agreement,
    teacher_student_kl,
    top_k_accuracy,
)
from lskd_tf.analysis.calibration import expected_calibration_error
from lskd_tf.analysis.diffusion import (
    feature_separation,
    semantic_mass,
    sibling_confusion,
    sibling_margin,
)
from lskd_tf.analysis.figures import plot_projection, plot_reliability_diagram
from lskd_tf.analysis.mutual_information import equivalent_smoothing, mutual_information_from_logits
from lskd_tf.analysis.projection import (
    check_class_triple,
    default_class_triple,
    penultimate_projection,
)
from lskd_tf.analysis.stability import stability

_REQUIRED_KEYS = ("features", "logits", "labels")


def _check_outputs(outputs: Any, name: str) -> dict[str, np.ndarray]:
    if not isinstance(outputs, dict) or any(k not in outputs for k in _REQUIRED_KEYS):
        raise ValueError(
            f"`{name}` must be a dict with keys {_REQUIRED_KEYS} (the result of `collect_outputs`)."
        )
    logits = np.asarray(outputs["logits"])
    if logits.ndim != 2:
        raise ValueError(f"`{name}['logits']` must have shape (N, K); got {logits.shape}.")
    features = np.asarray(outputs["features"])
    if features.ndim != 2 or features.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`{name}['features']` must have shape (N, D) with N = {logits.shape[0]}; got "
            f"{features.shape}."
        )
    labels = check_labels(outputs["labels"], logits.shape[1], logits.shape[0], f"{name}['labels']")
    return {**outputs, "features": features, "logits": logits, "labels": labels}


def _present_classes(labels: np.ndarray, minimum: int = 1) -> np.ndarray:
    counts = np.bincount(labels)
    return np.flatnonzero(counts >= minimum)


def analyze(
    *,
    teacher_outputs: dict | None = None,
    student_outputs: dict,
    superclass=None,
    class_names: Sequence[str] | None = None,
    train_outputs: dict | None = None,
    val_outputs: dict | None = None,
    classes: Sequence[int] | None = None,
    out_dir: str | os.PathLike,
    name: str,
    temperature: float | None = None,
    dataset: str | None = None,
    augmented_logits: dict | None = None,
    num_bins: int = 15,
    tensorboard_logdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every scalar measure of one model on one split, plus its figures.

    Args:
        teacher_outputs: the teacher's `collect_outputs` on the same examples (same order),
            when the analyzed model is a distilled student; None for a teacher.
        student_outputs: the analyzed model's `collect_outputs` on the evaluation split.
        superclass: (K,) superclass id per class; None skips the diffusion measures.
        class_names: names for figure legends.
        train_outputs: the analyzed model's outputs on (part of) the training split; the
            projection's PCA is fitted on them. None: fitted on the evaluation split.
        val_outputs: the analyzed model's outputs on the validation examples the projection
            shows with `train_outputs` (the driver: the first 50 of each projection
            class). None: `student_outputs`.
        classes: the three classes of the projection (default: `default_class_triple`).
        out_dir: directory for `analysis.json` and the PNGs.
        name: run name, used in file names and titles.
        temperature: distillation temperature T; the teacher's soft targets, KL and
            equivalent smoothing are also reported at T.
        dataset: tfds name, for the default projection classes ("imagenet2012").
        augmented_logits: optional `collect_augmented_logits` result for Müller's mutual
            information, computed between the first two projection classes.
        num_bins: ECE bins.
        tensorboard_logdir: if given, also log the numbers and figures there (tags
            ``analysis/<measure>``, `log_to_tensorboard`).

    Returns:
        A flat dict: `top1_accuracy`, `top5_accuracy`, `one_minus_stability`, `ece`,
        diffusion measures (`semantic_mass_ratio`, `same_superclass_mass`, `other_mass`,
        `sibling_margin`, `sibling_margin_dprime`, `separation_ratio`,
        `same_superclass_separation`, `other_separation`, overlaps),
        `teacher_*` versions at T, `agreement`, `kl` (and `kl_at_temperature`),
        `equivalent_smoothing` (teacher: at T, or 1), `mutual_information`, and `figures`
        (name -> PNG path), `classes`, `notes`.

    Classes with no examples (a subset of a split) are left out of stability and
    separation, and `notes` says so; on a full validation split every class is present.
    """
    if not name or any(sep in name for sep in ("/", "\\")):
        raise ValueError(f"`name` must be a non-empty file-name-safe string; got {name!r}.")
    student = _check_outputs(student_outputs, "student_outputs")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    num_examples, num_classes = student["logits"].shape
    metrics: dict[str, Any] = {
        "name": name,
        "num_examples": int(num_examples),
        "num_classes": int(num_classes),
        "temperature": temperature,
        "notes": [],
    }
    context = AnalysisContext(
        probs=softmax(student["logits"]), teacher=_check_teacher(teacher_outputs, student),
        superclass=superclass, class_names=class_names,
        train_outputs=_check_outputs(train_outputs, "train_outputs") if train_outputs else None,
        val_outputs=_check_outputs(val_outputs, "val_outputs") if val_outputs else None,
        triple=_class_triple(classes, num_classes, superclass, class_names, dataset),
        out_dir=out_dir, name=name, temperature=temperature, augmented_logits=augmented_logits,
        num_bins=num_bins, notes=metrics["notes"],
    )  # fmt: skip
    for measure in MEASURES:
        metrics.update(measure(student, context))
    figures = context.figures
    metrics["figures"] = figures
    write_metrics(metrics, out_dir)
    if tensorboard_logdir is not None:
        log_to_tensorboard(tensorboard_logdir, ANALYSIS_GROUP, metrics, figures)
    return metrics


ANALYSIS_FILE = "analysis.json"
"""One run's numbers in its analysis directory, for tools that read them (e.g.
tools/findings_diffusion.py); every task's analysis writes it."""


def write_metrics(metrics: dict, out_dir: str | os.PathLike) -> Path:
    """Write one run's ``metrics`` to ``out_dir/analysis.json`` (NaN as null, NumPy as
    plain numbers) and return its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = Path(out_dir) / ANALYSIS_FILE
    with open(path, "w") as handle:
        json.dump(_jsonable(metrics), handle, indent=2, sort_keys=True)
    return path


@dataclasses.dataclass
class AnalysisContext:
    """What a measure of `analyze` may read besides the analysed model's outputs; a
    measure adds its figures (name -> PNG path) and notes here."""

    probs: np.ndarray
    """softmax of the analysed model's logits (T = 1)."""
    teacher: dict | None
    superclass: Any
    class_names: Sequence[str] | None
    train_outputs: dict | None
    val_outputs: dict | None
    triple: tuple[int, int, int] | None
    """The projection's three classes (None with fewer than three classes)."""
    out_dir: str
    name: str
    temperature: float | None
    augmented_logits: dict | None
    num_bins: int
    notes: list[str]
    figures: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def soft_temperature(self) -> float:
        """The temperature of the teacher's soft targets: T, or 1 without one."""
        return 1.0 if self.temperature is None else float(self.temperature)


def _check_teacher(teacher_outputs, student: dict) -> dict | None:
    if teacher_outputs is None:
        return None
    teacher = _check_outputs(teacher_outputs, "teacher_outputs")
    if teacher["logits"].shape != student["logits"].shape or not np.array_equal(
        teacher["labels"], student["labels"]
    ):
        raise ValueError(
            "`teacher_outputs` must cover the same examples in the same order as "
            "`student_outputs` (same labels and logits shape)."
        )
    return teacher


def _class_triple(classes, num_classes: int, superclass, class_names, dataset):
    if num_classes < 3:
        return None
    if classes is not None:
        return check_class_triple(classes, num_classes)
    return default_class_triple(superclass, class_names, dataset)


def accuracy_measures(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """Top-1 / top-5 accuracy, 1 - stability (Chandrasegaran et al.) and ECE."""
    logits, labels = outputs["logits"], outputs["labels"]
    num_classes = logits.shape[1]
    present = _present_classes(labels)
    if present.size < num_classes:
        context.notes.append(
            f"{num_classes - present.size} of {num_classes} classes have no examples; "
            "stability and separation average over the present classes only."
        )
    return {
        "top1_accuracy": top_k_accuracy(logits, labels, 1),
        "top5_accuracy": top_k_accuracy(logits, labels, 5),
        "one_minus_stability": stability(
            context.probs, labels, classes=present
        ).one_minus_stability,
        "ece": expected_calibration_error(context.probs, labels, context.num_bins),
    }


def diffusion_measures(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """Semantic mass, sibling margin and confusion, feature separation (needs superclasses)."""
    if context.superclass is None:
        context.notes.append("no superclass mapping: diffusion measures skipped.")
        return {}
    return _diffusion(
        outputs["logits"], context.probs, outputs["features"], outputs["labels"],
        context.superclass, prefix="",
    )  # fmt: skip


def teacher_measures(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """A student: agreement with and KL to its teacher, the teacher's accuracy, equivalent
    smoothing and diffusion at T. A teacher: its own equivalent smoothing at T."""
    logits, labels, temperature = outputs["logits"], outputs["labels"], context.soft_temperature
    teacher = context.teacher
    if teacher is None:
        return {
            "equivalent_smoothing": equivalent_smoothing(logits, labels, temperature=temperature)
        }
    found = {
        "agreement": teacher_student_agreement(teacher["logits"], logits),
        "kl": teacher_student_kl(teacher["logits"], logits),
    }
    if context.temperature is not None:
        found["kl_at_temperature"] = teacher_student_kl(
            teacher["logits"], logits, temperature=temperature
        )
    found["teacher_top1_accuracy"] = top_k_accuracy(teacher["logits"], labels, 1)
    found["teacher_equivalent_smoothing"] = equivalent_smoothing(
        teacher["logits"], labels, temperature=temperature
    )
    if context.superclass is not None:
        teacher_probs = softmax(teacher["logits"], temperature)
        found.update(_diffusion(teacher["logits"], teacher_probs, teacher["features"], labels,
                                context.superclass, "teacher_"))  # fmt: skip
    return found


def reliability_figure(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """The reliability diagram (a figure, no number)."""
    context.figures["reliability"] = plot_reliability_diagram(
        context.probs, outputs["labels"],
        os.path.join(context.out_dir, f"{context.name}_reliability.png"),
        num_bins=context.num_bins, title=f"{context.name}: reliability",
    )  # fmt: skip
    return {}


def projection_measures(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """Müller et al.'s penultimate-layer projection of three classes (figure) and, with
    superclasses, the separation ratio in the plotted plane."""
    triple = context.triple
    if triple is None:
        return {}
    found: dict[str, Any] = {"classes": list(triple)}
    if "kernel" not in outputs or "bias" not in outputs:
        context.notes.append(
            "no classifier templates (`kernel`, `bias`) in outputs: projection skipped."
        )
        return found
    train = context.train_outputs
    fit = train or outputs
    shown = context.val_outputs or outputs
    projection = penultimate_projection(
        outputs["kernel"], outputs["bias"], triple, fit["features"], fit["labels"],
        shown["features"] if train else None, shown["labels"] if train else None,
    )  # fmt: skip
    context.figures["projection"] = plot_projection(
        projection, os.path.join(context.out_dir, f"{context.name}_projection.png"),
        class_names=context.class_names, title=context.name,
    )  # fmt: skip
    if context.superclass is not None:
        # Diffusion in the plotted plane: what the papers' pictures show, as numbers.
        points = projection.val_points if train else projection.train_points
        point_labels = projection.val_labels if train else projection.train_labels
        sep = feature_separation(points, point_labels, context.superclass, classes=list(triple))
        found["projection_separation_ratio"] = sep["separation_ratio"]
    return found


def mutual_information_measure(outputs: dict, context: AnalysisContext) -> dict[str, Any]:
    """Müller et al.'s mutual information between example and the logit gap of the first
    two projection classes, over augmented copies (when `augmented_logits` is given)."""
    if context.augmented_logits is None:
        return {}
    if context.triple is None:
        raise ValueError("Mutual information needs at least two classes; the model has one.")
    first, second = context.triple[0], context.triple[1]
    return {
        "mutual_information": mutual_information_from_logits(
            context.augmented_logits["logits"], first, second
        ),
        "mutual_information_classes": [first, second],
    }


Measure = Callable[[dict, AnalysisContext], dict]
MEASURES: list[Measure] = [
    accuracy_measures,
    diffusion_measures,
    teacher_measures,
    reliability_figure,
    projection_measures,
    mutual_information_measure,
]
"""What `analyze` measures, in order: each ``(outputs, context) -> dict`` of numbers for
analysis.json (figures and notes go to the context). Adding an analysis is one function
and one entry here."""


def _diffusion(logits, probs, features, labels, superclass, prefix: str) -> dict[str, float]:
    measures = semantic_mass(probs, labels, superclass)
    measures.update(sibling_margin(logits, labels, superclass))
    try:
        measures.update(sibling_confusion(logits, labels, superclass))
    except ValueError as error:  # no prediction inside its superclass (an untrained model)
        measures["sibling_confusion_error"] = str(error)
    present = _present_classes(labels, minimum=2)
    try:
        measures.update(feature_separation(features, labels, superclass, classes=present))
    except ValueError as error:  # e.g. a subset with no same-superclass pair present
        measures["feature_separation_error"] = str(error)
    return {f"{prefix}{key}": value for key, value in measures.items()}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


# Report table: (metric key, column header, format). Accuracies are shown in % as in the
# papers; a column appears only if at least one entry has the value.
_COLUMNS = (
    ("top1_accuracy", "top-1 %", "pct"),
    ("top5_accuracy", "top-5 %", "pct"),
    ("one_minus_stability", "1 - S", "num"),
    ("ece", "ECE", "num"),
    ("semantic_mass_ratio", "semantic mass ratio", "num"),
    ("same_superclass_mass", "same-superclass mass", "num"),
    ("sibling_confusion", "sibling confusion", "num"),
    ("same_superclass_separation", "sibling separation", "num"),
    ("sibling_margin_dprime", "sibling margin d'", "num"),
    ("separation_ratio", "separation ratio", "num"),
    ("agreement", "agreement %", "pct"),
    ("kl", "KL teacher-student", "num"),
    ("equivalent_smoothing", "equiv. smoothing", "num"),
    ("teacher_equivalent_smoothing", "teacher equiv. smoothing at T", "num"),
    ("mutual_information", "MI (nats)", "num"),
)
_CONFIG_COLUMNS = (
    ("model", "model"),
    ("label_smoothing", "LS"),
    ("teacher_label_smoothing", "teacher LS"),
    ("temperature", "T"),
)


def format_value(value: Any, kind: str = "num") -> str:
    """How a number appears in the report: accuracies in % (2 decimals), settings as
    written (`kind="config"`), other numbers with 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if not math.isfinite(float(value)):
        return str(float(value))
    if kind == "pct":
        return f"{100.0 * float(value):.2f}"
    if kind == "config":  # hyperparameters as written: 0.1, 3, 64
        return f"{float(value):g}"
    return f"{float(value):.4f}"


def _check_entries(entries) -> list[dict]:
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError("`entries` must be a non-empty list of dicts with keys name, metrics.")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry or "metrics" not in entry:
            raise ValueError(f"`entries[{i}]` must be a dict with keys 'name' and 'metrics'.")
    return list(entries)


def _image(entry: dict, figure: str, report_dir: str) -> str:
    path = entry["metrics"].get("figures", {}).get(figure)
    if not path:
        return ""
    link = os.path.relpath(os.path.abspath(path), report_dir).replace(os.sep, "/")
    return f"![{entry['name']} {figure}]({link})"


def _value_key(value) -> tuple:
    return (value is None, value if value is not None else 0)


def _grid(rows: dict, columns: list, cell, row_title: str, column_title: str) -> list[str]:
    header = [row_title] + [
        f"{column_title} = {format_value(c, 'config') if c is not None else '-'}" for c in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_value in sorted(rows, key=_value_key):
        cells = [format_value(row_value, "config") if row_value is not None else "-"]
        for column_value in columns:
            cells.append(" ".join(cell(e) for e in rows[row_value].get(column_value, [])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict_section(entries: list[dict], which: str = "last") -> str:
    """The verdict of `lskd_tf.results.verdict` for the students among report entries.

    Each entry's `config` is its run.json contents; an entry whose config records no
    accuracy (``last``/``best``) uses the analysis' `top1_accuracy` (measured on the same
    last checkpoint) as its last-epoch accuracy. Entries without ``status`` count as
    finished (only finished runs are analyzed).

    Example:
        >>> entries = [{"name": f"s{a}", "metrics": {"top1_accuracy": 0.5 + a},
        ...             "config": {"kind": "student", "model": "m", "seed": 0,
        ...                        "teacher_label_smoothing": a, "temperature": 1.0}}
        ...            for a in (0.0, 0.1)]
        >>> print(verdict_section(entries).splitlines()[0][:71])
        - **m**: best cell teacher LS a=0.1, T=1 (60.00 % top-1, 1 seed), ahead
    """
    import pandas as pd

    from lskd_tf import results

    rows = []
    for entry in _check_entries(entries):
        config = dict(entry.get("config") or {})
        config.setdefault("name", entry["name"])
        config.setdefault("status", "finished")
        if config.get("kind") is None:
            config["kind"] = "student" if _is_student(entry) else "teacher"
        row = results.run_row(config)
        top1 = entry["metrics"].get("top1_accuracy")
        if row.get("last_top1") is None and top1 is not None:
            row["last_top1"] = 100.0 * float(top1)
        rows.append(row)
    return results.verdict(pd.DataFrame(rows), which=which)


def _is_student(entry: dict) -> bool:
    config = entry.get("config") or {}
    return (
        config.get("kind") == "student"
        or config.get("temperature") is not None
        or config.get("teacher_label_smoothing") is not None
        or entry["metrics"].get("agreement") is not None
    )


def write_report(
    entries: list[dict],
    path: str | os.PathLike,
    *,
    title: str = "lskd_tf analysis",
    tensorboard_logdir: str | os.PathLike | None = None,
) -> str:
    """Write a Markdown report of one run or a sweep; return its text.

    Args:
        entries: dicts with `name`, `config` (optional keys `model`, `label_smoothing`
            for teachers, `teacher_label_smoothing` and `temperature` for students) and
            `metrics` (an `analyze` result).
        path: the Markdown file to write (e.g. `<study_dir>/report.md`); image links are
            relative to it.
        title: the report's heading.
        tensorboard_logdir: if given, the Markdown is also logged there as a text summary.

    Layout: first a verdict (`verdict_section`: per student, the (teacher LS, T) cell the
    data recommends against the runner-up, paired by seed with a 95% CI, or "not resolved"
    with the seeds needed); then one table of numbers with a row per run; then projections
    and reliability diagrams, teachers side by side by label smoothing (0 vs 0.1), students
    in a grid of temperature (rows) x teacher label smoothing (columns).
    """
    entries = _check_entries(entries)
    path = os.fspath(path)
    report_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(report_dir, exist_ok=True)

    config_columns = [
        (key, header)
        for key, header in _CONFIG_COLUMNS
        if any((e.get("config") or {}).get(key) is not None for e in entries)
    ]
    metric_columns = [
        column
        for column in _COLUMNS
        if any(e["metrics"].get(column[0]) is not None for e in entries)
    ]
    header = ["run"] + [h for _, h in config_columns] + [h for _, h, _ in metric_columns]
    lines = [
        f"# {title}",
        "",
        "## Verdict",
        "",
        verdict_section(entries),
        "",
        "## Numbers",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for entry in entries:
        config = entry.get("config") or {}
        cells = [str(entry["name"])]
        cells += [format_value(config.get(key), "config") for key, _ in config_columns]
        cells += [format_value(entry["metrics"].get(key), kind) for key, _, kind in metric_columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracies and agreement in %; see `lskd_tf.analysis` for every formula."]

    teachers, students = [], []
    for entry in entries:
        (students if _is_student(entry) else teachers).append(entry)

    for figure, heading in (
        ("projection", "Penultimate-layer projections"),
        ("reliability", "Reliability diagrams"),
    ):
        if not any(e["metrics"].get("figures", {}).get(figure) for e in entries):
            continue
        lines += ["", f"## {heading}"]

        def cell(entry, figure=figure):
            return _image(entry, figure, report_dir)

        if teachers:
            by_smoothing: dict = {}
            for entry in teachers:
                by_smoothing.setdefault(
                    (entry.get("config") or {}).get("label_smoothing"), []
                ).append(entry)
            columns = sorted(by_smoothing, key=_value_key)
            lines += ["", "### Teachers", ""]
            lines += _grid({"teachers": by_smoothing}, columns, cell, "", "LS")
        if students:
            grid: dict = {}
            for entry in students:
                config = entry.get("config") or {}
                grid.setdefault(config.get("temperature"), {}).setdefault(
                    config.get("teacher_label_smoothing"), []
                ).append(entry)
            columns = sorted({c for row in grid.values() for c in row}, key=_value_key)
            lines += ["", "### Students", ""]
            lines += _grid(grid, columns, cell, "T", "teacher LS")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as handle:
        handle.write(text)
    if tensorboard_logdir is not None:
        import tensorflow as tf

        writer = tf.summary.create_file_writer(os.fspath(tensorboard_logdir))
        with writer.as_default():
            tf.summary.text("report", text, step=0)
        writer.close()
    return text


def _scalars(metrics: dict, prefix: str = ""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
            if math.isfinite(float(value)):
                yield f"{prefix}{key}", float(value)


ANALYSIS_GROUP = "analysis"
"""TensorBoard tag group of the analysis measures: ``analysis/ece`` in every run's log."""


def log_to_tensorboard(
    logdir: str | os.PathLike,
    group: str,
    metrics: dict,
    image_paths: dict[str, str],
    step: int = 0,
) -> None:
    """Write the numeric entries of `metrics` as scalars and the PNGs as image summaries.

    Tags are `<group>/<metric>` and `<group>/<figure>`; lskd_tf passes `ANALYSIS_GROUP`
    and one ``logdir`` per run (``<tensorboard_dir>/<study>/<run>/analysis``), so one
    measure has one tag in every run and TensorBoard overlays the runs on one chart (a
    run name in the tag would give each run a chart of its own). Non-numeric entries
    (notes, class lists, figure paths) and non-finite numbers are skipped.
    """
    import tensorflow as tf

    for figure, image_path in image_paths.items():
        if not os.path.isfile(image_path):
            raise ValueError(f"`image_paths[{figure!r}]` = {image_path!r} is not a file.")
    writer = tf.summary.create_file_writer(os.fspath(logdir))
    with writer.as_default():
        for tag, value in _scalars({k: v for k, v in metrics.items() if k != "figures"}):
            tf.summary.scalar(f"{group}/{tag}", value, step=step)
        for figure, image_path in image_paths.items():
            image = tf.image.decode_png(tf.io.read_file(image_path), channels=4)
            tf.summary.image(f"{group}/{figure}", image[None], step=step)
    writer.flush()
    writer.close()
