"""Planning a study: its runs in order, and their hyperparameters for TensorBoard."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from lskd_tf.experiment.specs import RunEnv, RunSpec, StudentSpec, StudySpec, TeacherSpec


def weights_for(entries: Sequence[tuple[str, str]], key: str) -> str | None:
    """The file of ``key`` in (key, file) pairs; key "" is everyone's default.

    Studies name initial weights per student model ("resnet18" -> file) or per teacher
    label smoothing ("0.1" -> file); a single file applies to all (key "").

    >>> weights_for((("", "all.pt"), ("resnet18", "r18.pt")), "resnet18")
    'r18.pt'
    """
    chosen = None
    for entry_key, path in entries:
        if entry_key == key:
            return path
        if entry_key == "" and chosen is None:
            chosen = path
    return chosen


def per_run_path(path: str | None, **fields) -> str | None:
    """A weights path with the run's fields filled in.

    ``{seed}`` (the student's seed) and ``{teacher}`` (its teacher as student run names
    end: ``StudentSpec.teacher_name``) let every student start from its own earlier
    run: ReActNet's step 2 from the step-1 student of the same teacher and seed
    (`flags/imagenet/shen_binary_resnet18_step2.flags`).

    >>> per_run_path("runs/s/student-a-T1-seed{seed}-from-{teacher}/last.keras",
    ...              seed=2, teacher="r50-ls0-seed0")
    'runs/s/student-a-T1-seed2-from-r50-ls0-seed0/last.keras'
    """
    if path is None or "{" not in path:
        return path
    try:
        return path.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"weights path {path!r} has an unknown placeholder ({err}); "
            f"use {{{'}, {'.join(sorted(fields))}}}"
        ) from None


def plan_study(study: StudySpec) -> list[RunSpec]:
    """Every run of a study, each teacher before the students that need it.

    Teacher seeds are the outer loop (after the model): a study stopped part-way has whole
    teacher seeds done, both smoothings of each, so its LS − no-LS pairs are complete.
    """
    runs: list[RunSpec] = []
    for teacher_model in study.all_teacher_models:
        for teacher_seed in study.teacher_seeds:
            for alpha in study.teacher_smoothings:
                runs += _teacher_and_students(study, teacher_model, int(teacher_seed), alpha)
    return runs


def _teacher_and_students(
    study: StudySpec, teacher_model: str, teacher_seed: int, alpha: float
) -> list[RunSpec]:
    teacher = TeacherSpec(
        task=study.task, model=teacher_model, label_smoothing=float(alpha),
        smoothing=study.smoothing, seed=teacher_seed,
        train=dataclasses.replace(study.teacher_train, seed=teacher_seed),
        data=study.data,
        pretrained=weights_for(study.teacher_pretrained, f"{float(alpha):g}"),
    )  # fmt: skip
    runs: list[RunSpec] = [teacher]
    for student_model in study.students_of(teacher_model):
        for temperature in study.temperatures:
            for seed in study.seeds:
                student = StudentSpec(
                    task=study.task,
                    model=student_model,
                    teacher=teacher,
                    distill=dataclasses.replace(study.distill, temperature=float(temperature)),
                    seed=int(seed),
                    train=dataclasses.replace(study.student_train, seed=int(seed)),
                    data=study.data,
                    use_teacher=study.use_teacher,
                    teacher_cache=study.teacher_cache,
                )
                weights = per_run_path(
                    weights_for(study.pretrained, student_model),
                    seed=student.seed, teacher=student.teacher_name,
                )  # fmt: skip
                runs.append(dataclasses.replace(student, pretrained=weights))
    return runs


def hparams_of(spec: RunSpec) -> dict:
    """The run's hyperparameters for TensorBoard's HParams dashboard.

    Students list every `DistillSpec` field; teachers, which have none, leave them out.
    """
    common = {"kind": spec.kind, "task": spec.task, "seed": spec.seed}
    if isinstance(spec, TeacherSpec):
        return {**common, "student": "", "teacher": spec.model,
                "teacher_smoothing": spec.label_smoothing}  # fmt: skip
    return {
        **common, "student": spec.model,
        "teacher": spec.teacher.model if spec.teacher else spec.teacher_name,
        "teacher_smoothing": spec.teacher.label_smoothing if spec.teacher else -1.0,
        **dataclasses.asdict(spec.distill),  # every field, so the dashboard's columns align
    }  # fmt: skip


HPARAM_METRICS = ("top1", "top5", "loss", "kd_loss", "ce_loss", "agreement")


def write_hparams_config(env: RunEnv, specs: Sequence[RunSpec]) -> None:
    """Declare the study's hyperparameters and metrics for TensorBoard's HParams dashboard.

    Written once at ``<tensorboard_dir>/<study>``; each run logs its own values
    (`hparams_of`) under its run directory, so one dashboard compares the sweep.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values: dict[str, set] = {}
    for spec in specs:
        for key, value in hparams_of(spec).items():
            values.setdefault(key, set()).add(value)
    hparams = [hp.HParam(key, hp.Discrete(sorted(found, key=str))) for key, found in values.items()]
    metrics = [
        hp.Metric(f"epoch_{name}", group=group, display_name=f"{name} ({group})")
        for name in HPARAM_METRICS
        for group in ("validation", "train")
    ]
    logdir = Path(env.tensorboard_dir) / env.study
    logdir.mkdir(parents=True, exist_ok=True)  # a clear OSError when it cannot be
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)
