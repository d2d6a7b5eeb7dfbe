"""Sweep results as pandas tables in the papers' form.

`collect_runs` reads any set of run directories (their ``run.json``) into one
flat DataFrame, one row per run. `student_table` pivots the students into the
papers' layout: rows student × T, columns teacher label smoothing, cells
mean ± std over seeds of top-1 (percent), for the last and the best epoch,
plus the LS − no-LS difference. Published numbers differ on last vs best
epoch (RepDistiller reports the last, mdistiller the best), so both are given.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lskd_tf import atomic
from lskd_tf.run_dir import FINISHED, RUN_JSON, RunDir

DEFAULT_METRICS = ("top1", "top5")
"""The metrics of runs recorded before run.json listed its task's metrics."""


def _run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories under the given paths (a run dir, a study dir, or a glob)."""
    found: list[Path] = []
    for path in paths:
        matches = glob.glob(str(path)) or [str(path)]
        for match in matches:
            match = Path(match)
            if RunDir(match).exists():
                found.append(match)
            else:
                found.extend(sorted(p.parent for p in match.glob(f"*/{RUN_JSON}")))
    return sorted(set(found))


def collect_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run found under ``paths``, with its spec and best/last metrics.

    The metrics are those the run's task reported (run.json ``metrics``), in percent
    like the papers' tables.
    """
    rows = []
    for run_dir in _run_dirs(paths):
        info = RunDir(run_dir).read()
        row = {"run": info.get("name", run_dir.name), "run_dir": str(run_dir)}
        row["status"] = info.get("status")
        for key in (
            "kind", "task", "model", "dataset", "label_smoothing", "smoothing", "seed",
            "teacher_model", "teacher_label_smoothing", "teacher_run", "teacher_checkpoint",
            "temperature", "kd_weight", "ce_weight", "kd_loss", "wall_time_s", "epochs_done",
        ):  # fmt: skip
            row[key] = info.get(key)
        monitor = info.get("monitor", "val_top1")
        prefix = "val_" if monitor.startswith("val_") else ""
        for which in ("best", "last"):
            metrics = info.get(which, {})
            row[f"{which}_epoch"] = metrics.get("epoch")
            for metric in info.get("metrics", DEFAULT_METRICS):
                value = metrics.get(prefix + metric)
                row[f"{which}_{metric}"] = None if value is None else 100.0 * value
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def student_table(runs: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Students: rows (student, T), columns teacher smoothing; last and best epoch.

    Columns are ``last a=<alpha>`` / ``best a=<alpha>`` as "mean ± std" strings
    (over seeds), ``n`` the number of seeds, and ``last Δ(LS−noLS)`` /
    ``best Δ(LS−noLS)`` = mean with the largest smoothing minus mean without.
    """
    students = runs[(runs["kind"] == "student") & (runs["status"] == FINISHED)]
    if students.empty:
        return pd.DataFrame()
    students = students.assign(
        teacher_label_smoothing=students["teacher_label_smoothing"].fillna(-1)
    )
    keys = ["model", "temperature"]
    table = {}
    for (model, temperature), group in students.groupby(keys, sort=True):
        row = {}
        for which in ("last", "best"):
            means = {}
            for alpha, by_alpha in group.groupby("teacher_label_smoothing", sort=True):
                row[f"{which} a={alpha:g}"] = _mean_std(by_alpha[f"{which}_{metric}"])
                means[alpha] = by_alpha[f"{which}_{metric}"].mean()
            if 0.0 in means and len(means) > 1:
                row[f"{which} Δ(LS−noLS)"] = f"{means[max(means)] - means[0.0]:+.2f}"
        row["n"] = int(group.groupby("teacher_label_smoothing").size().min())
        table[(model, f"{temperature:g}")] = row
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["student", "T"])
    return frame


def teacher_table(runs: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Teachers: rows model, columns label smoothing, last and best epoch."""
    teachers = runs[(runs["kind"] == "teacher") & (runs["status"] == FINISHED)]
    if teachers.empty:
        return pd.DataFrame()
    table = {}
    for model, group in teachers.groupby("model", sort=True):
        row = {}
        for which in ("last", "best"):
            for alpha, by_alpha in group.groupby("label_smoothing", sort=True):
                row[f"{which} a={alpha:g}"] = _mean_std(by_alpha[f"{which}_{metric}"])
        table[model] = row
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "teacher"
    return frame


def write_tables(runs: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write runs.csv and the teacher/student tables as CSV, Markdown and LaTeX."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"runs": out_dir / "runs.csv"}
    atomic.write_text(written["runs"], runs.to_csv(index=False))
    for name, table in (("teachers", teacher_table(runs)), ("students", student_table(runs))):
        if table.empty:
            continue
        for suffix, text in (
            ("csv", table.to_csv()),
            ("md", table.reset_index().to_markdown(index=False)),
            ("tex", table.to_latex()),
        ):
            path = out_dir / f"{name}.{suffix}"
            atomic.write_text(path, text)
            written[f"{name}.{suffix}"] = path
    return written


def format_tables(runs: pd.DataFrame) -> str:
    """The tables as printable Markdown (top-1 %, last and best epoch)."""
    parts = []
    teachers, students = teacher_table(runs), student_table(runs)
    if not teachers.empty:
        parts.append(
            "Teachers (top-1 %, mean ± std over seeds)\n\n"
            + teachers.reset_index().to_markdown(index=False)
        )
    if not students.empty:
        parts.append(
            "Students by teacher label smoothing a (top-1 %, mean ± std over seeds)\n\n"
            + students.reset_index().to_markdown(index=False)
        )
    return "\n\n".join(parts) if parts else "no finished runs found"
