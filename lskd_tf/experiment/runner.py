"""Running one planned run, and the single-checkpoint modes (evaluate, export)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lskd_tf import distribute, reuse, tasks
from lskd_tf.checksums import weights_sha256
from lskd_tf.experiment import identity
from lskd_tf.experiment.planning import hparams_of
from lskd_tf.experiment.specs import DataSpec, RunEnv, RunSpec, StudentSpec, TeacherSpec
from lskd_tf.run_dir import RunDir, spec_record
from lskd_tf.training import RunResult, distill_student, train_teacher


def _build(task: tasks.Task, spec: RunSpec, info, strategy, run_info: dict) -> keras.Model:
    keras.utils.set_random_seed(spec.seed)
    with strategy.scope():
        model = task.build_model(
            spec.model, info, train=spec.train,
            synchronized_bn=strategy.num_replicas_in_sync > 1,
        )  # fmt: skip
        if spec.pretrained:  # a resumed run then loads its own last state over these
            run_info["pretrained_weights"] = task.initialize(model, spec.pretrained)
    return model


def reuse_key(spec: RunSpec, env: RunEnv, strategy: tf.distribute.Strategy) -> str:
    """What shapes a run's train step, for `lskd_tf.reuse`: the spec without what the
    compiled model takes from the run instead (label smoothing and temperature, held in
    variables; the weights of the student and of a study teacher, copied in), the dtype
    policy and the strategy. `lskd_tf.reuse.CompiledModels.adopt` checks the models'
    structure besides."""
    if isinstance(spec, TeacherSpec):
        shape = dataclasses.replace(spec, label_smoothing=0.0, seed=0, pretrained=None)
    else:
        teacher = spec.teacher and dataclasses.replace(
            spec.teacher, label_smoothing=0.0, seed=0, pretrained=None
        )
        distill = dataclasses.replace(spec.distill, temperature=1.0, label_smoothing=0.0)
        shape = dataclasses.replace(
            spec, teacher=teacher, distill=distill, use_teacher="last", seed=0, pretrained=None
        )
    return f"{shape!r} {env.mixed_precision} {type(strategy).__name__}@{id(strategy)}"


def teacher_checkpoint_path(spec: StudentSpec, env: RunEnv) -> Path:
    if spec.teacher_checkpoint:
        return Path(spec.teacher_checkpoint)
    return RunDir(env.run_dir(spec.teacher)).checkpoint(spec.use_teacher)


def run(spec: RunSpec, env: RunEnv) -> RunResult:
    """Train one teacher or student run (resuming it if it was interrupted)."""
    keras.mixed_precision.set_dtype_policy(env.mixed_precision)
    strategy = env.strategy or tf.distribute.get_strategy()
    task = tasks.get(spec.task)
    info = task.dataset_info(spec.data)
    run_dir = RunDir(env.run_dir(spec))
    found = identity.check(spec, env, on_conflict=env.on_conflict)
    metrics = task.metrics()
    options = dict(
        run_dir=run_dir,
        config=spec.train,
        tensorboard_dir=env.tensorboard_run_dir(spec),
        hparams=hparams_of(spec),
        profile_batches=env.profile_batches,
        callbacks=env.callbacks,
        final_metrics=lambda run: task.final_metrics(run, spec.data, info),
        metrics=metrics,
        monitor=task.monitor,
        reuse=(reuse.DEFAULT, reuse_key(spec, env, strategy)) if env.reuse_compiled else None,
        run_info=identity.with_identity(
            {
                "spec": spec.record(),  # once: readers use RunDir.read_spec / spec_record
                "data": dataclasses.asdict(spec.data),
                "dataset_info": info.to_dict(),
                "headline": task.headline,
                "metric_labels": dict(task.metric_labels),
            },
            found,
        ),
    )
    batch_size = spec.train.batch_size
    train_fn = task.train_fn(spec.data, batch_size=batch_size, seed=spec.seed)
    eval_ds = task.eval_dataset(spec.data, batch_size=batch_size)
    if isinstance(spec, TeacherSpec):
        model = _build(task, spec, info, strategy, options["run_info"])
        return train_teacher(
            model, train_fn, eval_ds, label_smoothing=spec.label_smoothing,
            smoothing=spec.smoothing, loss=task.teacher_loss(spec.label_smoothing, spec.smoothing),
            **options,
        )  # fmt: skip
    path = teacher_checkpoint_path(spec, env)
    with strategy.scope():
        teacher = task.load_model(path, info)
    student = _build(task, spec, info, strategy, options["run_info"])
    teacher_hash = weights_sha256(teacher)
    # Every worker of a multi-worker job must distill from the very same teacher.
    distribute.check_same_on_all_workers(
        strategy, int(teacher_hash[:12], 16), f"the teacher's weights (read from {path})"
    )
    options["run_info"].update(
        teacher_checkpoint_used=str(path), teacher_weights_sha256=teacher_hash
    )
    if spec.teacher_cache is not None:
        train_fn, described = task.cached_train_fn(
            teacher, path, spec.teacher_cache, spec.data, batch_size=batch_size,
            seed=spec.seed, verbose=bool(spec.train.verbose), kd_topk=spec.distill.kd_topk,
        )  # fmt: skip
        options["run_info"]["teacher_cache"] = described
    if spec.distill.sequence_level:
        train_fn, described = task.sequence_level_train_fn(
            teacher, path, spec.data, batch_size=batch_size, seed=spec.seed,
            verbose=bool(spec.train.verbose),
        )  # fmt: skip
        options["run_info"]["sequence_level_targets"] = described
    return distill_student(teacher, student, train_fn, eval_ds, distill=spec.distill, **options)


def load_checkpoint(
    path: str | os.PathLike, data: DataSpec, *, task: str = tasks.DEFAULT_TASK
) -> keras.Model:
    """Load a saved model for ``data``, with one-line errors (missing file, wrong classes)."""
    found = tasks.get(task)
    return found.load_model(Path(path), found.dataset_info(data))


def evaluate_checkpoint(
    path: str | os.PathLike,
    data: DataSpec,
    *,
    batch_size: int = 256,
    task: str = tasks.DEFAULT_TASK,
) -> dict[str, float]:
    """The task's metrics and cross-entropy of a `.keras` checkpoint on the eval split."""
    found = tasks.get(task)
    model = load_checkpoint(path, data, task=task)
    model.compile(loss=found.teacher_loss(0.0, "uniform"), metrics=found.metrics())
    return model.evaluate(
        found.eval_dataset(data, batch_size=batch_size), verbose=0, return_dict=True
    )


def export_checkpoint(
    path: str | os.PathLike,
    export_dir: str | os.PathLike,
    data: DataSpec,
    *,
    task: str = tasks.DEFAULT_TASK,
) -> Path:
    """Export a `.keras` student for serving, the task's way (`lskd_tf.tasks.Task.export`).

    The export directory and the checkpoint are checked before any work (a file where
    the directory should be, an unwritable parent, a damaged checkpoint: one line).
    """
    from lskd_tf.export import check_export_dir

    check_export_dir(export_dir)
    found = tasks.get(task)
    found.check_model_file(path)
    info = found.dataset_info(data)
    return found.export(found.load_model(Path(path), info), export_dir, info, data)


def spec_to_json(spec: RunSpec) -> str:
    """A JSON description of a spec (its record plus training settings)."""
    return json.dumps(
        {**spec.record(), "train": spec.train.to_dict(), "data": dataclasses.asdict(spec.data)},
        indent=2,
        default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
    )


def data_spec_of_run(run_dir: str | os.PathLike) -> DataSpec:
    """The DataSpec a run was trained with (from its run.json)."""
    return DataSpec.from_record(RunDir(run_dir).read()["data"])


def analyze_runs(
    run_dirs, out_dir: str | os.PathLike, *, tensorboard_dir=None, title: str = "lskd_tf analysis"
) -> Path | None:
    """The analysis report of finished runs, written by their task (`Task.analyze`).

    Runs of several tasks are analysed task by task; a task without analyses is skipped
    (None when no task of these runs has any).
    """
    by_task: dict[str, list[Path]] = {}
    for run_dir in map(Path, run_dirs):
        info = RunDir(run_dir).read()
        if info and RunDir(run_dir).is_finished():
            task = spec_record(info).get("task", tasks.DEFAULT_TASK)
            by_task.setdefault(task, []).append(run_dir)
    if not by_task:
        raise ValueError("no finished runs to analyze; pass run or study directories")
    reports = []
    for task, found in by_task.items():
        report = tasks.get(task).analyze(
            found, Path(out_dir), tensorboard_dir=tensorboard_dir, title=title
        )
        if report is not None:
            reports.append(report)
    return reports[0] if reports else None
