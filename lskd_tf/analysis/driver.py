"""The steps every task's analysis shares: `finished_runs` (each finished run with its
spec's data, with progress lines) and `write_study_report` (the report of the entries).

The image-classification task's analysis is `lskd_tf.tasks.image_classification.analysis`
(`analyze_runs` and `augment_normalized` are still importable from here by their old
names), the translation task's `lskd_tf.tasks.translation.analysis`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lskd_tf.progress import Progress
from lskd_tf.run_dir import RunDir


def finished_runs(run_dirs: Sequence[str | os.PathLike]):
    """``(run_dir, run.json contents, DataSpec)`` of each finished run, in order.

    Prints ``analysis k/N: <run> (elapsed ..., ETA ...)`` before handing out each run
    (`lskd_tf.progress`): analysing a study's checkpoints takes minutes.
    """
    from lskd_tf.experiment.specs import DataSpec

    found = []
    for run_dir in map(Path, run_dirs):
        run = RunDir(run_dir)
        info = run.read()
        if info and run.is_finished():
            found.append((run_dir, info, DataSpec.from_record(info["data"])))
    progress = Progress("analysis", len(found))
    for run_dir, info, spec in found:
        progress.start(run_dir.name)
        yield run_dir, info, spec
        progress.finish()


def write_study_report(
    entries: list[dict],
    out_dir: Path,
    *,
    tensorboard_dir: str | os.PathLike | None,
    title: str,
) -> Path:
    """``out_dir/report.md`` of the analyzed runs (`lskd_tf.analysis.write_report`),
    also logged to TensorBoard under ``tensorboard_dir/analysis``."""
    from lskd_tf import analysis

    if not entries:
        raise ValueError("no finished runs to analyze; pass run or study directories")
    report = Path(out_dir) / "report.md"
    analysis.write_report(
        entries, report, title=title,
        tensorboard_logdir=Path(tensorboard_dir) / "analysis" if tensorboard_dir else None,
    )  # fmt: skip
    return report


def __getattr__(name: str):
    """The image analysis by its old names (it moved to the image-classification task)."""
    if name in ("analyze_runs", "augment_normalized"):
        from lskd_tf.tasks.image_classification import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
