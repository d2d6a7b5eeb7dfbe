"""Experiments as data: what to train (specs) and where (environment), flag-free.

A study is a grid of teacher runs (model × label smoothing) and student runs
(student model × temperature × seed) distilled from them. Every CLI mode of
`run.py` is one call here, so everything a flag can do, Python can do too::

    from lskd_tf import experiment as ex
    study = ex.StudySpec(teacher_models=("resnet56",), teacher_smoothings=(0.0, 0.1),
                         student_models=("resnet20",), temperatures=(1.0, 4.0), seeds=(0, 1))
    env = ex.RunEnv(output_dir="runs", study="cifar")
    for spec in ex.plan_study(study):
        ex.run(spec, env)

Run directories: ``<output_dir>/<study>/<run name>``; TensorBoard logs:
``<tensorboard_dir>/<study>/<run name>``. Run names say what varies:
``teacher-resnet56-ls0.1-seed0`` and ``student-resnet20-T4-seed1-from-resnet56-ls0.1-seed0``
(student seed 1, distilled from the teacher run with seed 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lskd_tf import data, models, pretrained, teacher_cache
from lskd_tf.export import export_student
from lskd_tf.losses import validate_smoothing, validate_temperature
from lskd_tf.teacher_cache import CacheSpec
from lskd_tf.training import (
    RunResult,
    TrainConfig,
    distill_student,
    epoch_seed,
    read_run_json,
    train_teacher,
)

MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
TEACHER_CHECKPOINTS = ("last", "best")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Which dataset, where it is, and its options (e.g. the embedded set's size)."""

    name: str = "embedded"
    data_dir: str | None = None
    download: bool = False
    cache: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.name not in data.available():
            raise ValueError(
                f"unknown dataset {self.name!r}; choose one of: {', '.join(data.available())}"
            )

    def info(self) -> data.DatasetInfo:
        return data.get_info(self.name, data_dir=self.data_dir, **dict(self.options))

    def dataset(self, split: str, *, batch_size: int, training: bool, seed: int = 0, **kw):
        return data.make_dataset(
            self.name, split, global_batch_size=batch_size, training=training, seed=seed,
            data_dir=self.data_dir, cache=self.cache, download=self.download,
            **dict(self.options), **kw,
        )  # fmt: skip

    def train_fn(self, batch_size: int, seed: int) -> Callable[..., tf.data.Dataset]:
        """``(epoch, input_context=None) -> dataset`` with a per-epoch seed.

        The per-epoch seed makes runs exactly resumable. Under multi-worker training
        `lskd_tf.distribute` passes each worker's ``input_context``, so every worker
        reads only its shard, batched per replica.
        """
        split = self.info().train_split

        def epoch_dataset(epoch: int, input_context=None) -> tf.data.Dataset:
            return self.dataset(
                split, batch_size=batch_size, training=True, seed=epoch_seed(seed, epoch),
                input_context=input_context,
            )  # fmt: skip

        return epoch_dataset

    def eval_dataset(self, batch_size: int) -> tf.data.Dataset:
        return self.dataset(self.info().eval_split, batch_size=batch_size, training=False)


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """One teacher run: a model trained with cross-entropy, optionally label-smoothed."""

    model: str
    label_smoothing: float = 0.0
    smoothing: str = "uniform"
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    pretrained: str | None = None
    """Initial weights (PyTorch .safetensors/.pth or .keras; `lskd_tf.pretrained`)."""

    def __post_init__(self):
        models.describe(self.model)  # unknown names: a clear error listing the choices
        validate_smoothing(self.label_smoothing, self.smoothing, name="label_smoothing")

    @property
    def name(self) -> str:
        convention = "" if self.smoothing == "uniform" else f"-{self.smoothing}"
        return f"teacher-{self.model}-ls{self.label_smoothing:g}{convention}-seed{self.seed}"

    @property
    def kind(self) -> str:
        return "teacher"

    def record(self) -> dict:
        """What run.json stores to describe this run (and what a rerun must match)."""
        record = {
            "kind": "teacher", "model": self.model, "dataset": self.data.name,
            "label_smoothing": self.label_smoothing, "smoothing": self.smoothing,
            "seed": self.seed,
        }  # fmt: skip
        return {**record, "pretrained": self.pretrained} if self.pretrained else record


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """One student run: distilled from a teacher run of the study or from a checkpoint."""

    model: str
    teacher: TeacherSpec | None = None
    teacher_checkpoint: str | None = None
    temperature: float = 4.0
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    label_smoothing: float = 0.0
    smoothing: str = "uniform"
    t2_scaling: bool = True
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    use_teacher: str = "last"
    teacher_cache: CacheSpec | None = None
    """Distill from the teacher's cached logits (`lskd_tf.teacher_cache`), built on
    first use beside the teacher's checkpoint; None runs the teacher every step."""
    pretrained: str | None = None
    """Initial weights (PyTorch .safetensors/.pth or .keras; `lskd_tf.pretrained`)."""

    def __post_init__(self):
        models.describe(self.model)
        validate_temperature(self.temperature)
        validate_smoothing(self.label_smoothing, self.smoothing, name="label_smoothing")
        if (self.teacher is None) == (self.teacher_checkpoint is None):
            raise ValueError("a student needs exactly one of: a teacher spec, a teacher_checkpoint")
        if self.use_teacher not in TEACHER_CHECKPOINTS:
            raise ValueError(
                f"use_teacher must be one of {', '.join(TEACHER_CHECKPOINTS)}, "
                f"got {self.use_teacher!r}"
            )
        if self.teacher_cache is not None:
            teacher_cache.check_dataset(self.teacher_cache, self.data.name, dict(self.data.options))

    @property
    def teacher_name(self) -> str:
        if self.teacher is not None:
            return self.teacher.name.removeprefix("teacher-")
        return Path(self.teacher_checkpoint).stem

    @property
    def name(self) -> str:
        extra = ""
        if (self.kd_weight, self.ce_weight) != (1.0, 0.0):
            extra += f"-kd{self.kd_weight:g}-ce{self.ce_weight:g}"
        if self.label_smoothing:
            extra += f"-ls{self.label_smoothing:g}"
        cache = self.teacher_cache
        if cache is not None and cache.mode == "sampled":
            extra += f"-views{cache.views}" + (f"s{cache.view_seed}" if cache.view_seed else "")
        if cache is not None and cache.topk:
            extra += f"-top{cache.topk}"
        return (
            f"student-{self.model}-T{self.temperature:g}{extra}-seed{self.seed}"
            f"-from-{self.teacher_name}"
        )

    @property
    def kind(self) -> str:
        return "student"

    def record(self) -> dict:
        record = {
            "kind": "student", "model": self.model, "dataset": self.data.name,
            "teacher_run": self.teacher.name if self.teacher else None,
            "teacher_model": self.teacher.model if self.teacher else None,
            "teacher_label_smoothing": self.teacher.label_smoothing if self.teacher else None,
            "teacher_smoothing": self.teacher.smoothing if self.teacher else None,
            "teacher_checkpoint": self.teacher_checkpoint,
            "temperature": self.temperature, "kd_weight": self.kd_weight,
            "ce_weight": self.ce_weight, "label_smoothing": self.label_smoothing,
            "smoothing": self.smoothing, "t2_scaling": self.t2_scaling, "seed": self.seed,
        }  # fmt: skip
        # An exact, full-logit cache is the same computation as online distillation, so
        # it does not make another run (a study may switch it on half way).
        if self.teacher_cache is not None and self.teacher_cache.changes_training:
            record["teacher_cache"] = dataclasses.asdict(self.teacher_cache)
        if self.pretrained:
            record["pretrained"] = self.pretrained
        return record


RunSpec = TeacherSpec | StudentSpec


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A grid: teachers (model × smoothing) and their students (model × T × seed).

    Students are distilled from every teacher model, or only along ``pairs``.
    """

    teacher_models: Sequence[str] = ("resnet14",)
    teacher_smoothings: Sequence[float] = (0.0, 0.1)
    smoothing: str = "uniform"
    teacher_seed: int = 0
    student_models: Sequence[str] = ("resnet8",)
    temperatures: Sequence[float] = (1.0, 4.0)
    seeds: Sequence[int] = (0,)
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    student_label_smoothing: float = 0.0
    t2_scaling: bool = True
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

    def students_of(self, teacher_model: str) -> list[str]:
        if self.pairs:
            return [student for teacher, student in self.pairs if teacher == teacher_model]
        return list(self.student_models)

    @property
    def all_teacher_models(self) -> list[str]:
        if self.pairs:
            return list(dict.fromkeys(teacher for teacher, _ in self.pairs))
        return list(self.teacher_models)


def plan_study(study: StudySpec) -> list[RunSpec]:
    """Every run of a study, each teacher before the students that need it."""
    runs: list[RunSpec] = []
    for teacher_model in study.all_teacher_models:
        for alpha in study.teacher_smoothings:
            teacher = TeacherSpec(
                teacher_model, float(alpha), study.smoothing, study.teacher_seed,
                dataclasses.replace(study.teacher_train, seed=study.teacher_seed), study.data,
                pretrained.for_key(study.teacher_pretrained, f"{float(alpha):g}"),
            )  # fmt: skip
            runs.append(teacher)
            for student_model in study.students_of(teacher_model):
                for temperature in study.temperatures:
                    for seed in study.seeds:
                        runs.append(
                            StudentSpec(
                                student_model,
                                teacher,
                                None,
                                float(temperature),
                                study.kd_weight,
                                study.ce_weight,
                                study.student_label_smoothing,
                                study.smoothing,
                                study.t2_scaling,
                                int(seed),
                                dataclasses.replace(study.student_train, seed=int(seed)),
                                study.data,
                                study.use_teacher,
                                study.teacher_cache,
                                pretrained.for_key(study.pretrained, student_model),
                            )  # fmt: skip
                        )
    return runs


@dataclasses.dataclass(frozen=True)
class RunEnv:
    """Where runs go and how they execute (not what they are)."""

    output_dir: str = "runs"
    study: str = "quick"
    tensorboard_dir: str = "tensorboard_logs"
    strategy: tf.distribute.Strategy | None = None
    mixed_precision: str = "float32"
    profile_batches: tuple[int, int] | None = None
    callbacks: tuple = ()

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"unknown mixed_precision {self.mixed_precision!r}; "
                f"choose one of: {', '.join(MIXED_PRECISION)}"
            )

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.study

    def run_dir(self, spec: RunSpec) -> Path:
        return self.study_dir / spec.name

    def tensorboard_run_dir(self, spec: RunSpec) -> Path:
        return Path(self.tensorboard_dir) / self.study / spec.name


def hparams_of(spec: RunSpec) -> dict:
    """The run's hyperparameters for TensorBoard's HParams dashboard."""
    if isinstance(spec, TeacherSpec):
        return {
            "kind": "teacher", "student": "", "teacher": spec.model,
            "teacher_smoothing": spec.label_smoothing, "temperature": 0.0,
            "kd_weight": 0.0, "ce_weight": 1.0, "seed": spec.seed,
        }  # fmt: skip
    return {
        "kind": "student", "student": spec.model,
        "teacher": spec.teacher.model if spec.teacher else spec.teacher_name,
        "teacher_smoothing": spec.teacher.label_smoothing if spec.teacher else -1.0,
        "temperature": spec.temperature, "kd_weight": spec.kd_weight,
        "ce_weight": spec.ce_weight, "seed": spec.seed,
    }  # fmt: skip


HPARAM_METRICS = ("top1", "top5", "loss", "kd_loss", "ce_loss", "agreement")


def write_hparams_config(env: RunEnv, specs: Sequence[RunSpec]) -> None:
    """Declare the study's hyperparameters and metrics for TensorBoard's HParams dashboard.

    Written once at ``<tensorboard_dir>/<study>``; each run logs its own values
    (`hparams_of`) under its run directory, so one dashboard compares the sweep.
    """
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
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def _check_same_run(run_dir: Path, spec: RunSpec) -> None:
    """Refuse to resume a run directory that holds a different experiment."""
    previous = read_run_json(run_dir)
    if not previous:
        return
    recorded = previous.get("spec")
    if recorded and recorded != spec.record():
        raise ValueError(
            f"{run_dir} already holds a run with another configuration; "
            "choose another --study or --output_dir"
        )


def _build(spec: RunSpec, info: data.DatasetInfo, strategy, run_info: dict | None = None):
    keras.utils.set_random_seed(spec.seed)
    with strategy.scope():
        model = models.get(
            spec.model, info.num_classes, info.input_shape,
            weight_decay=spec.train.weight_decay,
            synchronized_bn=strategy.num_replicas_in_sync > 1,
        )  # fmt: skip
        if spec.pretrained:  # a resumed run then loads its own last state over these
            loaded = pretrained.initialize(model, spec.pretrained)
            if run_info is not None:
                run_info["pretrained_weights"] = loaded  # path, sha256, new head or not
    return model


def load_checkpoint(
    path: str | os.PathLike, *, num_classes: int | None = None, input_shape=None
) -> keras.Model:
    """Load a `.keras` model or a PyTorch weights file (`.safetensors`/`.pth`, its
    architecture guessed from the keys, `lskd_tf.pretrained`), with one-line errors for
    a missing file or wrong class count."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist; pass a .keras file from a run dir")
    if pretrained.is_torch_file(path):
        model = pretrained.build_from_file(path, input_shape=input_shape)
    else:
        model = keras.models.load_model(path)
    if num_classes is not None and model.output_shape[-1] != num_classes:
        raise ValueError(
            f"checkpoint {path} outputs {model.output_shape[-1]} classes but the dataset "
            f"has {num_classes}"
        )
    return model


def teacher_checkpoint_path(spec: StudentSpec, env: RunEnv) -> Path:
    if spec.teacher_checkpoint:
        return Path(spec.teacher_checkpoint)
    return env.run_dir(spec.teacher) / f"{spec.use_teacher}.keras"


def run(spec: RunSpec, env: RunEnv) -> RunResult:
    """Train one teacher or student run (resuming it if it was interrupted)."""
    keras.mixed_precision.set_dtype_policy(env.mixed_precision)
    strategy = env.strategy or tf.distribute.get_strategy()
    info = spec.data.info()
    run_dir = env.run_dir(spec)
    _check_same_run(run_dir, spec)
    options = dict(
        run_dir=run_dir,
        config=spec.train,
        tensorboard_dir=env.tensorboard_run_dir(spec),
        hparams=hparams_of(spec),
        profile_batches=env.profile_batches,
        callbacks=env.callbacks,
        run_info={
            "spec": spec.record(),
            **spec.record(),
            "data": dataclasses.asdict(spec.data),
            "dataset_info": info.to_dict(),
        },
    )
    train_fn = spec.data.train_fn(spec.train.batch_size, spec.seed)
    eval_ds = spec.data.eval_dataset(spec.train.batch_size)
    if isinstance(spec, TeacherSpec):
        model = _build(spec, info, strategy, options["run_info"])
        return train_teacher(
            model, train_fn, eval_ds, label_smoothing=spec.label_smoothing,
            smoothing=spec.smoothing, **options,
        )  # fmt: skip
    path = teacher_checkpoint_path(spec, env)
    with strategy.scope():
        teacher = load_checkpoint(path, num_classes=info.num_classes, input_shape=info.input_shape)
    student = _build(spec, info, strategy, options["run_info"])
    options["run_info"]["teacher_checkpoint_used"] = str(path)
    if pretrained.is_torch_file(path):
        options["run_info"]["teacher_checkpoint_sha256"] = pretrained.file_sha256(path)
    if spec.teacher_cache is not None:
        cache = teacher_cache.build(
            teacher, teacher_cache.cache_directory(path, spec.teacher_cache), spec.data.name,
            spec=spec.teacher_cache, data_dir=spec.data.data_dir,
            options=dict(spec.data.options), verbose=bool(spec.train.verbose),
        )  # fmt: skip
        train_fn = cache.train_fn(spec.train.batch_size, spec.seed, cache=spec.data.cache)
        options["run_info"]["teacher_cache"] = teacher_cache.describe(cache)
    return distill_student(
        teacher, student, train_fn, eval_ds, temperature=spec.temperature,
        kd_weight=spec.kd_weight, ce_weight=spec.ce_weight,
        label_smoothing=spec.label_smoothing, smoothing=spec.smoothing,
        t2_scaling=spec.t2_scaling, **options,
    )  # fmt: skip


def evaluate_checkpoint(
    path: str | os.PathLike, data_spec: DataSpec, *, batch_size: int = 256
) -> dict[str, float]:
    """Top-1 / top-5 accuracy and cross-entropy of a `.keras` checkpoint on the eval split."""
    info = data_spec.info()
    model = load_checkpoint(path, num_classes=info.num_classes)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    return model.evaluate(data_spec.eval_dataset(batch_size), verbose=0, return_dict=True)


def export_checkpoint(
    path: str | os.PathLike, export_dir: str | os.PathLike, data_spec: DataSpec
) -> Path:
    """Export a `.keras` student as a SavedModel with the dataset's normalization inside."""
    info = data_spec.info()
    model = load_checkpoint(path, num_classes=info.num_classes)
    return export_student(model, export_dir, mean=info.mean, std=info.std)


def spec_to_json(spec: RunSpec) -> str:
    """A JSON description of a spec (its record plus training settings)."""
    return json.dumps(
        {**spec.record(), "train": spec.train.to_dict(), "data": dataclasses.asdict(spec.data)},
        indent=2,
        default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
    )


def data_spec_of_run(run_dir: str | os.PathLike) -> DataSpec:
    """The DataSpec a run was trained with (from its run.json)."""
    recorded = dict(read_run_json(run_dir)["data"])
    recorded["options"] = tuple(tuple(item) for item in recorded.get("options", ()))
    return DataSpec(**recorded)


def augment_normalized(images: tf.Tensor) -> tf.Tensor:
    """Random pad-and-crop (1/8 of the size) and horizontal flip, per image.

    The CIFAR training augmentation (pad 4, random 32x32 crop, flip) applied to
    already-normalized images, for Müller's mutual-information estimate; the
    padding is 0, i.e. the dataset's mean colour.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    pad = max(1, height // 8)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])

    def one(image):
        image = tf.image.random_crop(image, (height, width, image.shape[-1]))
        return tf.image.random_flip_left_right(image)

    return tf.map_fn(one, padded)


def _examples_of(dataset: tf.data.Dataset, classes: Sequence[int], per_class: int):
    """Up to ``per_class`` images of each class in ``classes``, from a batched dataset."""
    images, labels = [], []
    counts = dict.fromkeys(classes, 0)
    for batch in dataset:
        for image, label in zip(batch[0].numpy(), batch[1].numpy()):
            label = int(label)
            if label in counts and counts[label] < per_class:
                images.append(image)
                labels.append(label)
                counts[label] += 1
        if all(count >= per_class for count in counts.values()):
            break
    return np.stack(images), np.array(labels)


def analyze_runs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tensorboard_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    train_batches: int = 4,
    mi_examples_per_class: int = 300,
    mi_augmentations: int = 10,
    title: str = "lskd_tf analysis",
) -> Path:
    """Analyze finished runs (teachers and students) and write one Markdown report.

    For each run: the model's last checkpoint on the evaluation split (and
    ``train_batches`` training batches for the projection's PCA), the teacher's
    outputs on the same examples for students, Müller's mutual information on up
    to ``mi_examples_per_class`` evaluation images of the two similar projection
    classes under ``mi_augmentations`` draws of `augment_normalized`; every measure of
    `lskd_tf.analysis.analyze`, figures in ``out_dir/<run>/``, the report in
    ``out_dir/report.md`` and everything in TensorBoard under ``tensorboard_dir``.
    """
    from lskd_tf import analysis

    out_dir = Path(out_dir)
    entries = []
    teacher_cache: dict[str, dict] = {}
    for run_dir in map(Path, run_dirs):
        info = read_run_json(run_dir)
        if not info or info.get("status") != "finished":
            continue
        spec = data_spec_of_run(run_dir)
        dataset_info = spec.info()
        eval_ds = spec.eval_dataset(batch_size)
        train_ds = spec.dataset(
            dataset_info.train_split, batch_size=batch_size, training=False
        ).take(train_batches)
        model = keras.models.load_model(run_dir / "last.keras")
        outputs = analysis.collect_outputs(model, eval_ds)
        classes = analysis.default_class_triple(
            dataset_info.superclass, dataset_info.class_names, dataset_info.name
        )
        # Müller's MI between example index and the logit gap of the two similar classes.
        pair_images, pair_labels = _examples_of(eval_ds, classes[:2], mi_examples_per_class)
        augmented = analysis.collect_augmented_logits(
            model, pair_images, pair_labels, augment_normalized, mi_augmentations
        )
        teacher_outputs = None
        if info.get("kind") == "student":
            teacher_path = info["teacher_checkpoint_used"]
            if teacher_path not in teacher_cache:
                teacher = keras.models.load_model(teacher_path)
                teacher_cache[teacher_path] = analysis.collect_outputs(teacher, eval_ds)
            teacher_outputs = teacher_cache[teacher_path]
        metrics = analysis.analyze(
            teacher_outputs=teacher_outputs,
            student_outputs=outputs,
            superclass=dataset_info.superclass,
            class_names=dataset_info.class_names,
            train_outputs=analysis.collect_outputs(model, train_ds),
            out_dir=out_dir / run_dir.name,
            name=run_dir.name,
            classes=classes,
            temperature=info.get("temperature"),
            dataset=dataset_info.name,
            augmented_logits=augmented,
            tensorboard_logdir=(
                Path(tensorboard_dir) / run_dir.name / "analysis" if tensorboard_dir else None
            ),
        )
        entries.append({"name": run_dir.name, "config": info, "metrics": metrics})
    if not entries:
        raise ValueError("no finished runs to analyze; pass run or study directories")
    report = out_dir / "report.md"
    analysis.write_report(
        entries, report, title=title,
        tensorboard_logdir=Path(tensorboard_dir) / "analysis" if tensorboard_dir else None,
    )  # fmt: skip
    return report
