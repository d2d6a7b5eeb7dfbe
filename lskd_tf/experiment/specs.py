"""What to train, as data: `DataSpec`, `TeacherSpec`, `StudentSpec`, `StudySpec`, `RunEnv`.

Specs are frozen dataclasses built with keywords. A spec's ``record()`` is what
``run.json`` stores to describe the run (and what a re-run must match); it is generated
from the dataclass fields (`DistillSpec` whole), not listed by hand. Run names say what
varies: ``teacher-resnet56-ls0.1-seed0`` and
``student-resnet20-T4-seed1-from-resnet56-ls0.1-seed0``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lskd_tf import tasks
from lskd_tf.choices import MIXED_PRECISION
from lskd_tf.distiller import DistillSpec
from lskd_tf.losses import validate_smoothing
from lskd_tf.run_dir import CHECKPOINTS, spec_record
from lskd_tf.teacher_cache.spec import CacheSpec
from lskd_tf.training import TrainConfig

TEACHER_CHECKPOINTS = CHECKPOINTS


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Which dataset, where it is, and its options (e.g. the embedded set's size).

    The task of the run that uses it checks the name (`lskd_tf.tasks.Task.check_dataset`).
    """

    name: str = "embedded"
    data_dir: str | None = None
    download: bool = False
    cache: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_record(cls, recorded: dict) -> DataSpec:
        """The DataSpec a run recorded in its run.json (``data``)."""
        recorded = dict(recorded)
        recorded["options"] = tuple(tuple(item) for item in recorded.get("options", ()))
        return cls(**recorded)


def _check_task(task: str, model: str, data: DataSpec, seed: int) -> tasks.Task:
    if not 0 <= int(seed) < 2**31:
        raise ValueError(f"seed must be in [0, 2^31), got {seed}")
    found = tasks.get(task)
    if found.name != task:  # lookups forgive case and "-"; a spec's task is a run's identity
        raise ValueError(
            f"write task={found.name!r}, not {task!r}: the name is part of a run's identity"
        )
    found.check_model(model)  # unknown names: a clear error listing the choices
    found.check_dataset(data)
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class TeacherSpec:
    """One teacher run: a model trained with cross-entropy, optionally label-smoothed."""

    task: str = tasks.DEFAULT_TASK
    model: str
    label_smoothing: float = 0.0
    smoothing: str = "uniform"
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    pretrained: str | None = None
    """Initial weights (a weights file the task reads: `Task.initialize`)."""

    def __post_init__(self):
        _check_task(self.task, self.model, self.data, self.seed)
        validate_smoothing(self.label_smoothing, self.smoothing, name="label_smoothing")

    kind = "teacher"

    @property
    def name(self) -> str:
        convention = "" if self.smoothing == "uniform" else f"-{self.smoothing}"
        return f"teacher-{self.model}-ls{self.label_smoothing:g}{convention}-seed{self.seed}"

    def record(self) -> dict:
        """What run.json stores to describe this run (and what a rerun must match)."""
        record = {
            "kind": "teacher", "task": self.task, "model": self.model,
            "dataset": self.data.name, "label_smoothing": self.label_smoothing,
            "smoothing": self.smoothing, "seed": self.seed,
        }  # fmt: skip
        return {**record, "pretrained": self.pretrained} if self.pretrained else record


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudentSpec:
    """One student run: distilled from a teacher run of the study or from a checkpoint."""

    task: str = tasks.DEFAULT_TASK
    model: str
    teacher: TeacherSpec | None = None
    teacher_checkpoint: str | None = None
    distill: DistillSpec = dataclasses.field(default_factory=DistillSpec)
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    use_teacher: str = "last"
    teacher_cache: CacheSpec | None = None
    """Distill from the teacher's cached logits (`lskd_tf.teacher_cache`), built on
    first use beside the teacher's checkpoint; None runs the teacher every step."""
    pretrained: str | None = None
    """Initial weights of the student (`Task.initialize`), e.g. ImageNet weights to fine-tune."""

    def __post_init__(self):
        task = _check_task(self.task, self.model, self.data, self.seed)
        if (self.teacher is None) == (self.teacher_checkpoint is None):
            raise ValueError("a student needs exactly one of: a teacher spec, a teacher_checkpoint")
        if self.use_teacher not in TEACHER_CHECKPOINTS:
            raise ValueError(
                f"use_teacher must be one of {', '.join(TEACHER_CHECKPOINTS)}, "
                f"got {self.use_teacher!r}"
            )
        if self.teacher_cache is not None:
            task.check_teacher_cache(self.teacher_cache, self.data)
            if self.distill.kd_topk and self.teacher_cache.topk:
                raise ValueError(
                    f"kd_loss={self.distill.kd_loss!r} reads the teacher's top "
                    f"{self.distill.kd_topk} logits, which its cache then stores exactly: "
                    "leave cache_topk at 0 (it adds a rest logit, for kd_loss='kl')"
                )
        if self.distill.sequence_level:
            task.check_sequence_level(self.data)
            if self.teacher_cache is not None:
                raise ValueError(
                    "sequence-level KD trains on the teacher's outputs, not on cached "
                    "logits of the data: leave the teacher cache off"
                )

    kind = "student"

    @property
    def teacher_name(self) -> str:
        if self.teacher is not None:
            return self.teacher.name.removeprefix("teacher-")
        return Path(self.teacher_checkpoint).stem

    @property
    def name(self) -> str:
        distill, extra = self.distill, ""
        if (distill.kd_weight, distill.ce_weight) != (1.0, 0.0):
            extra += f"-kd{distill.kd_weight:g}-ce{distill.ce_weight:g}"
        if distill.label_smoothing:
            extra += f"-ls{distill.label_smoothing:g}"
        if distill.kd_loss != DistillSpec.kd_loss:
            extra += f"-{distill.kd_loss}{distill.kd_topk or ''}"  # e.g. -topk_kl4
        if distill.sequence_level:
            extra += "-seqkd"
        cache = self.teacher_cache
        if cache is not None and cache.mode == "sampled":
            extra += f"-views{cache.views}" + (f"s{cache.view_seed}" if cache.view_seed else "")
        if cache is not None and cache.topk:
            extra += f"-top{cache.topk}"
        return (
            f"student-{self.model}-T{distill.temperature:g}{extra}-seed{self.seed}"
            f"-from-{self.teacher_name}"
        )

    def record(self) -> dict:
        teacher = self.teacher
        record = {
            "kind": "student", "task": self.task, "model": self.model,
            "dataset": self.data.name,
            "teacher_run": teacher.name if teacher else None,
            "teacher_model": teacher.model if teacher else None,
            "teacher_label_smoothing": teacher.label_smoothing if teacher else None,
            "teacher_smoothing": teacher.smoothing if teacher else None,
            "teacher_checkpoint": self.teacher_checkpoint,
            **self.distill.to_dict(), "seed": self.seed,
        }  # fmt: skip
        # An exact, full-logit cache is the same computation as online distillation, so
        # it does not make another run (a study may switch it on half way).
        if self.teacher_cache is not None and self.teacher_cache.changes_training:
            record["teacher_cache"] = dataclasses.asdict(self.teacher_cache)
        if self.pretrained:
            record["pretrained"] = self.pretrained
        return record


RunSpec = TeacherSpec | StudentSpec


def _settings(cls, values: dict | None):
    """A `TrainConfig` / `DistillSpec` / `CacheSpec` from its recorded dict: a field the
    record lacks (added later, `lskd_tf.settings.ADDED_LATER`) takes its default, which is
    what the run did; a key that is no field any more is ignored."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in (values or {}).items() if key in names})


def spec_from_record(info: dict, teacher_info: dict | None = None) -> RunSpec:
    """The `TeacherSpec` / `StudentSpec` a run was made from, read from its run.json dict
    (`lskd_tf.run_dir.RunDir.read_spec`), old formats included (`run_dir.spec_record`).

    A student distilled from a study's teacher gets that teacher's spec from
    ``teacher_info`` (the teacher run's run.json). Without it (the teacher's directory is
    gone) the teacher is rebuilt from what the student recorded of it (model, smoothing,
    seed: the student's name is the same) with the student's training recipe and data,
    since a student's run.json does not record its teacher's recipe. The teacher cache
    is read back only when it changed training (an exact cache is the online computation,
    `StudentSpec.record`), and ``use_teacher`` from the checkpoint the run used.
    """
    record = spec_record(info)
    if "model" not in record:
        raise ValueError(
            f"run {info.get('name', '?')} records no spec (no model): it was trained by "
            "train_teacher / distill_student directly, not from a TeacherSpec / StudentSpec"
        )
    data = DataSpec.from_record(info.get("data") or {"name": record.get("dataset", "embedded")})
    train = _settings(TrainConfig, info.get("train"))
    common = dict(task=record.get("task", tasks.DEFAULT_TASK), model=record["model"],
                  seed=int(record.get("seed", 0)), train=train, data=data,
                  pretrained=record.get("pretrained"))  # fmt: skip
    if record.get("kind", "teacher") == "teacher":
        return TeacherSpec(
            label_smoothing=record.get("label_smoothing", 0.0),
            smoothing=record.get("smoothing", "uniform"), **common,
        )  # fmt: skip
    teacher = None
    if record.get("teacher_run"):
        if teacher_info is not None:
            teacher = spec_from_record(teacher_info)
        else:
            seed = str(record["teacher_run"]).rsplit("-seed", 1)[-1]
            teacher = TeacherSpec(
                task=common["task"], model=record["teacher_model"],
                label_smoothing=record["teacher_label_smoothing"],
                smoothing=record.get("teacher_smoothing") or "uniform",
                seed=int(seed) if seed.isdigit() else 0, train=train, data=data,
            )  # fmt: skip
    used = Path(info.get("teacher_checkpoint_used") or "last").stem
    recorded = (info.get("identity") or {}).get("use_teacher")
    use_teacher = recorded or (used if used in TEACHER_CHECKPOINTS else "last")
    cache = record.get("teacher_cache")
    return StudentSpec(
        teacher=teacher, teacher_checkpoint=None if teacher else record["teacher_checkpoint"],
        distill=_settings(DistillSpec, record), use_teacher=use_teacher,
        teacher_cache=None if cache is None else _settings(CacheSpec, cache), **common,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudySpec:
    """A grid: teachers (model × smoothing × teacher seed) and their students (model × T × seed).

    ``distill`` is the students' objective; its temperature is replaced by each of
    ``temperatures``. Students are distilled from every teacher model, or only along
    ``pairs``.
    """

    task: str = tasks.DEFAULT_TASK
    teacher_models: Sequence[str] = ("resnet14",)
    teacher_smoothings: Sequence[float] = (0.0, 0.1)
    smoothing: str = "uniform"
    teacher_seeds: Sequence[int] = (0,)
    """One teacher per model x smoothing x seed; each has its own students."""
    student_models: Sequence[str] = ("resnet8",)
    temperatures: Sequence[float] = (1.0, 4.0)
    seeds: Sequence[int] = (0,)
    distill: DistillSpec = dataclasses.field(default_factory=DistillSpec)
    use_teacher: str = "last"
    teacher_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    pairs: Sequence[tuple[str, str]] = ()
    """(teacher, student) model pairs; when given, they replace the cross product
    teacher_models x student_models (the papers distill chosen pairs)."""
    teacher_cache: CacheSpec | None = None
    """Cache each teacher's logits once for all its students (`lskd_tf.teacher_cache`)."""
    pretrained: Sequence[tuple[str, str]] = ()
    """(student model, weights file) initial weights; model "" = every student."""
    teacher_pretrained: Sequence[tuple[str, str]] = ()
    """(teacher label smoothing as f"{a:g}", weights file); "" = every teacher."""

    def __post_init__(self):
        check_pretrained_keys(self)

    def students_of(self, teacher_model: str) -> list[str]:
        if self.pairs:
            return [student for teacher, student in self.pairs if teacher == teacher_model]
        return list(self.student_models)

    @property
    def all_teacher_models(self) -> list[str]:
        if self.pairs:
            return list(dict.fromkeys(teacher for teacher, _ in self.pairs))
        return list(self.teacher_models)


def check_pretrained_keys(study: StudySpec) -> None:
    """Raise a one-line ValueError when an initial-weights entry names no run of the study
    (``teacher_pretrained`` for a smoothing no teacher has, ``pretrained`` for a model no
    student is): such an entry would silently initialize nothing."""
    alphas = {f"{float(alpha):g}" for alpha in study.teacher_smoothings}
    for key, path in study.teacher_pretrained:
        if key and key not in alphas:
            raise ValueError(
                f"teacher weights {key}={path}: no teacher has label smoothing {key} (the "
                f"study's are {', '.join(sorted(alphas))}); use one of those, or FILE alone "
                "for every teacher"
            )
    students = {s for t in study.all_teacher_models for s in study.students_of(t)}
    for key, path in study.pretrained:
        if key and key not in students:
            raise ValueError(
                f"student weights {key}={path}: no student is a {key} (the study's are "
                f"{', '.join(sorted(students))}); use one of those, or FILE alone for every "
                "student"
            )


@dataclasses.dataclass(frozen=True)
class RunEnv:
    """Where runs go and how they execute (not what they are)."""

    output_dir: str = "runs"
    study: str = "quick"
    tensorboard_dir: str = "tensorboard_logs"
    strategy: Any = None
    mixed_precision: str = "float32"
    profile_batches: tuple[int, int] | None = None
    callbacks: tuple = ()
    on_conflict: str = "error"
    """What to do with a run directory holding a run with other settings: ``"error"``
    (stop and say what differs) or ``"overwrite"`` (move it aside, train again); see
    `lskd_tf.experiment.identity`."""
    reuse_compiled: bool = True
    """Train runs that differ only in label smoothing, temperature or the teacher's
    weights on one compiled model of the process, traced once (`lskd_tf.reuse`: the same
    numbers, seconds less per run); False compiles and traces every run anew."""

    def __post_init__(self):
        if self.on_conflict not in ("error", "overwrite"):
            raise ValueError(f"on_conflict must be error or overwrite, got {self.on_conflict!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"unknown mixed_precision {self.mixed_precision!r}; "
                f"choose one of: {', '.join(MIXED_PRECISION)}"
            )

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.study

    def run_dir(self, spec: RunSpec) -> Path:
        """The run's directory (`lskd_tf.run_dir.RunDir` knows its files)."""
        return self.study_dir / spec.name

    def tensorboard_run_dir(self, spec: RunSpec) -> Path:
        return Path(self.tensorboard_dir) / self.study / spec.name
