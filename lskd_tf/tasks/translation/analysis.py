"""Token-level analyses of translation runs: the image measures, one target token at a time.

Each finished run's last checkpoint is run teacher-forced on the evaluation split. Every
real (non-padding) target position is one example; its class is the reference token. The
measures are the functions of `lskd_tf.analysis`, unchanged:

* ``top1_accuracy``: token accuracy;
* ``ece``: expected calibration error of the token distributions (15 bins), with a
  reliability diagram;
* ``one_minus_stability``: Shen et al.'s 1 - S (Eq. 2). The classes are the
  reference tokens that occur among the analyzed positions;
* ``semantic_mass_ratio`` / ``same_superclass_mass``: the probability mass a model puts
  on the reference token's near-synonyms (its family in the embedded corpus,
  ``TranslationInfo.token_families``) against chance (`lskd_tf.analysis.diffusion`).
  This is Chandrasegaran's "systematic diffusion" toward semantically similar tokens.
  Only datasets with token families have it (the embedded corpus); tokens outside
  every family are their own group and so never eligible. It also rises with sharper
  logits at a fixed geometry (`lskd_tf.analysis.diffusion`, tested on planted data), so
  ``sibling_margin_dprime`` (the reference token's logit margin over its closest
  near-synonym, in units of its spread; falls with diffusion, free of the logits'
  scale) is reported beside it;
* students also get ``agreement`` (argmax equal to the teacher's) and ``kl`` (teacher ‖
  student at the run's T), on the same positions.

Positions are capped at ``max_values / vocab_size`` (default 5e7 values, ~200 MB of
float32 probabilities), taken from the first sentences of the split. The report states
how many positions each run used. The embedded corpus's validation split fits whole.

Example:
    >>> report = analyze_runs(task, run_dirs, "runs/quick_translation/analysis")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from lskd_tf.run_dir import RunDir, spec_record

MAX_VALUES = 50_000_000
"""Largest number of (position x vocabulary) probabilities held at once."""


def token_outputs(model: keras.Model, dataset, max_positions: int) -> dict[str, np.ndarray]:
    """``{"logits": (N, V) float32, "labels": (N,) int}`` of the first ``max_positions``
    real target positions of ``dataset`` (batches ``(x, y, mask)``), teacher-forced."""
    logits, labels, count = [], [], 0
    for x, y, mask in dataset:
        keep = mask.numpy() > 0
        batch_logits = keras.ops.convert_to_numpy(model(x, training=False))
        logits.append(batch_logits[keep].astype(np.float32))
        labels.append(y.numpy()[keep])
        count += int(keep.sum())
        if count >= max_positions:
            break
    return {
        "logits": np.concatenate(logits)[:max_positions],
        "labels": np.concatenate(labels)[:max_positions].astype(np.int64),
    }


def token_groups(token_families: Sequence[int]) -> np.ndarray:
    """Families as superclass ids; a token outside every family (-1) is its own group."""
    families = np.asarray(token_families, np.int64)
    groups = families.copy()
    loners = np.nonzero(families < 0)[0]
    groups[loners] = families.max(initial=-1) + 1 + np.arange(loners.size)
    return groups


def token_measures(
    outputs: dict[str, np.ndarray],
    *,
    token_families: Sequence[int] | None = None,
    teacher_outputs: dict[str, np.ndarray] | None = None,
    temperature: float | None = None,
) -> dict:
    """Every measure of the module docstring on collected `token_outputs`."""
    from lskd_tf import analysis

    logits, labels = outputs["logits"], outputs["labels"]
    probs = analysis.softmax(logits)
    found = {
        "positions": int(labels.size),
        "top1_accuracy": float(np.mean(np.argmax(logits, axis=1) == labels)),
        "ece": analysis.expected_calibration_error(probs, labels),
        "one_minus_stability": analysis.stability(
            probs, labels, classes=np.unique(labels)
        ).one_minus_stability,
    }
    if token_families is not None:
        groups = token_groups(token_families)
        mass = analysis.semantic_mass(probs, labels, groups)
        margin = analysis.sibling_margin(logits, labels, groups)
        found.update(
            semantic_mass_ratio=mass["semantic_mass_ratio"],
            same_superclass_mass=mass["same_superclass_mass"],
            sibling_margin_dprime=margin["sibling_margin_dprime"],
        )
    if teacher_outputs is not None:
        teacher = teacher_outputs["logits"][: labels.size]
        found["agreement"] = analysis.teacher_student_agreement(teacher, logits)
        found["kl"] = analysis.teacher_student_kl(teacher, logits, temperature=temperature or 1.0)
    return found


def analyze_runs(
    task,
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tensorboard_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    max_values: int = MAX_VALUES,
    title: str = "lskd_tf translation analysis",
) -> Path:
    """Analyze finished translation runs; write ``out_dir/report.md`` (and TensorBoard).

    The report has the same layout as the image report (`lskd_tf.analysis.write_report`):
    the verdict on BLEU, one row of token measures per run, reliability diagrams.
    """
    from lskd_tf import analysis
    from lskd_tf.analysis.driver import finished_runs, write_study_report

    out_dir = Path(out_dir)
    entries, teachers = [], {}
    for run_dir, info, spec in finished_runs(run_dirs):
        run = RunDir(run_dir)
        dataset_info = task.dataset_info(spec)
        max_positions = max(1, int(max_values) // dataset_info.vocab_size)
        eval_ds = task.eval_dataset(spec, batch_size=batch_size)
        outputs = token_outputs(task.load_model(run.checkpoint("last"), dataset_info), eval_ds,
                                max_positions)  # fmt: skip
        teacher_outputs = None
        record = spec_record(info)  # the spec's keys (run.json stores them once)
        if record.get("kind") == "student" and info.get("teacher_checkpoint_used"):
            path = info["teacher_checkpoint_used"]
            if path not in teachers:
                teacher = task.load_model(path, dataset_info)
                teachers[path] = token_outputs(teacher, eval_ds, max_positions)
            teacher_outputs = teachers[path]
        metrics = token_measures(
            outputs, token_families=dataset_info.token_families,
            teacher_outputs=teacher_outputs, temperature=record.get("temperature"),
        )  # fmt: skip
        figure = analysis.plot_reliability_diagram(
            analysis.softmax(outputs["logits"]), outputs["labels"],
            out_dir / run_dir.name / "reliability.png", title=f"{run_dir.name} (tokens)",
        )  # fmt: skip
        metrics["figures"] = {"reliability": figure}
        analysis.write_metrics(metrics, out_dir / run_dir.name)
        if tensorboard_dir is not None:
            analysis.log_to_tensorboard(
                Path(tensorboard_dir) / run_dir.name / "analysis", analysis.ANALYSIS_GROUP, metrics,
                {"reliability": figure},
            )  # fmt: skip
        entries.append({"name": run_dir.name, "config": info, "metrics": metrics})
    report = write_study_report(entries, out_dir, tensorboard_dir=tensorboard_dir, title=title)
    positions = ", ".join(f"{e['name']}: {e['metrics']['positions']}" for e in entries)
    with open(report, "a") as handle:
        handle.write(
            "\nToken measures: every real target position of the evaluation split, teacher-"
            "forced (lskd_tf.tasks.translation.analysis); semantic mass = mass on the "
            f"reference token's near-synonym family. Positions analyzed: {positions}.\n"
        )
    return report
