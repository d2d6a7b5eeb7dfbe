"""Training runs: a teacher (optionally with label smoothing) or a distilled student.

Every run owns a directory::

    run_dir/
      run.json            config, status, best and last metrics (rewritten each epoch)
      history.csv         one row per finished epoch
      best.keras          the model at its best validation top-1
      last.keras          the model after the last finished epoch
      resume/             training state (weights + optimizer + epoch), for restarts
    tensorboard_dir/      train/ and validation/ scalars (default: run_dir/tensorboard)

Runs are resumable and reproducible. Each epoch starts by reseeding every RNG
from ``(seed, epoch)`` and by asking for that epoch's dataset, so a run killed
after epoch k and restarted continues at epoch k + 1 with the same weights,
optimizer state, data order and augmentation as an uninterrupted run. Pass the
training data as a function ``epoch -> tf.data.Dataset`` (what `lskd_tf.data`
offers) or as NumPy arrays to get that guarantee; a fixed `tf.data.Dataset` is
accepted too, but its shuffle order after a restart is whatever it produces.

Every file is written atomically (write a temporary file, then rename), so a
run that fails or is killed never leaves a half-written checkpoint and never
loses what earlier epochs wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras.src.backend.common import global_state
from keras.src.random import seed_generator
from keras.src.utils import rng_utils
from tensorflow.python.eager import context as tf_context

from lskd_tf import distribute
from lskd_tf.distiller import Distiller
from lskd_tf.losses import SmoothedCrossEntropy, validate_smoothing, validate_temperature
from lskd_tf.models.weight_decay import adamw_exclusion_pattern, validate_weight_decay_scope
from lskd_tf.schedules import SCHEDULES, WarmupDecay

OPTIMIZERS = ("sgd", "adam", "adamw")
TrainData = tf.data.Dataset | Callable[[int], tf.data.Dataset] | tuple[np.ndarray, np.ndarray]
EvalData = tf.data.Dataset | tuple[np.ndarray, np.ndarray] | None


@dataclasses.dataclass
class TrainConfig:
    """How to optimize: epochs, batch, optimizer, schedule, seed.

    The defaults are RepDistiller's CIFAR-100 recipe (240 epochs, batch 64,
    SGD momentum 0.9, lr 0.05 x0.1 at 150/180/210, weight decay 5e-4).
    ``weight_decay`` is applied by the model as L2 on the parameters in
    ``weight_decay_scope`` (`lskd_tf.models.get(..., weight_decay=...,
    weight_decay_scope=...)`), like PyTorch's SGD; it is recorded here so a run's
    config is complete. ``weight_decay_scope``: "kernels" (conv/dense kernels, the
    default, as `models.get`) or "all" (every parameter: the papers' recipes, set by
    the flagfiles under flags/). For "adamw" both are AdamW's decoupled decay instead.
    """

    epochs: int = 240
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    weight_decay_scope: str = "kernels"
    schedule: str = "step"
    milestones: tuple[int, ...] = (150, 180, 210)
    decay_rate: float = 0.1
    warmup_epochs: float = 0.0
    seed: int = 0
    steps_per_epoch: int | None = None
    jit_compile: bool = False
    verbose: int = dataclasses.field(default=1, compare=False)  # display only

    def __post_init__(self):
        self.milestones = tuple(int(m) for m in self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise a one-line ValueError for any invalid field."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        validate_weight_decay_scope(self.weight_decay_scope)
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")

    def to_dict(self) -> dict:
        config = dataclasses.asdict(self)
        config["milestones"] = list(self.milestones)
        return config


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of a config with its warmup/decay schedule."""
    schedule = WarmupDecay(
        config.learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
        schedule=config.schedule,
        milestones=config.milestones,
        decay_rate=config.decay_rate,
        warmup_epochs=config.warmup_epochs,
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    adamw = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    adamw.exclude_from_weight_decay(var_names=adamw_exclusion_pattern(config.weight_decay_scope))
    return adamw


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    model: keras.Model
    history: list[dict]
    best: dict
    last: dict


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, text: str) -> None:
    """Write text so readers see the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def read_run_json(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else None


def _versions() -> dict:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


# --------------------------------------------------------------------------- data


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: distinct per epoch, identical across restarts."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)


def as_epoch_fn(train_data: TrainData, config: TrainConfig) -> Callable[[int], tf.data.Dataset]:
    """Normalize training data into a function ``epoch -> batched dataset``."""
    if isinstance(train_data, tf.data.Dataset):
        return lambda epoch: train_data
    if callable(train_data):
        return train_data
    if isinstance(train_data, (tuple, list)) and len(train_data) in (2, 3):
        arrays = tuple(np.asarray(a) for a in train_data)

        def numpy_epoch(epoch: int) -> tf.data.Dataset:
            return (
                tf.data.Dataset.from_tensor_slices(arrays)
                .shuffle(len(arrays[0]), seed=epoch_seed(config.seed, epoch))
                .batch(config.batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE)
            )

        return numpy_epoch
    raise ValueError(
        "train_data must be a tf.data.Dataset, a function epoch -> tf.data.Dataset, "
        "or a tuple of NumPy arrays (images, labels[, teacher_logits])"
    )


def as_eval_dataset(eval_data: EvalData, batch_size: int) -> tf.data.Dataset | None:
    if eval_data is None or isinstance(eval_data, tf.data.Dataset):
        return eval_data
    if isinstance(eval_data, (tuple, list)):
        return tf.data.Dataset.from_tensor_slices(tuple(np.asarray(a) for a in eval_data)).batch(
            batch_size
        )
    raise ValueError("eval_data must be a tf.data.Dataset, a tuple of NumPy arrays, or None")


def steps_in(dataset: tf.data.Dataset, config: TrainConfig) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    steps = int(dataset.cardinality())
    if steps <= 0:
        raise ValueError(
            "cannot tell how many batches one epoch has (infinite or unknown dataset); "
            "set TrainConfig.steps_per_epoch"
        )
    return steps


def set_global_seeds(seed: int) -> None:
    """`keras.utils.set_random_seed(seed)` without flushing TensorFlow's kernel cache.

    `tf.random.set_seed` also clears the eager kernel cache, which makes every
    traced function re-instantiate at its next call: ~0.8 s per epoch for a
    ResNet-20 train step on a 2-core CPU, 6% of a 78-step epoch
    (`benchmarks/fit_path.py`). The flush only matters to *stateful* random
    kernels (``tf.random.uniform`` inside a step); Keras 3 layers draw from
    `SeedGenerator` states instead (stateless ops), which `reseed` resets, and no
    lskd_tf model or `Distiller` step contains a stateful random op. So the
    global seed is set exactly as `tf.random.set_seed` sets it (seeds of the
    epoch's tf.data ops included), minus the flush; should TensorFlow's eager
    context change, this falls back to `keras.utils.set_random_seed`.
    """
    context = tf_context.context()
    if not (hasattr(context, "_seed") and hasattr(context, "_rng")):
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    context._seed = seed  # what tf.random.set_seed does, minus TFE_ContextClearCaches
    context._rng = random.Random(seed)


def reseed(model: keras.Model, seed: int) -> None:
    """Reseed every RNG an epoch uses, from one number.

    Global seeds (Python, NumPy, TensorFlow) are not enough: Keras layers such
    as Dropout own a `SeedGenerator` whose state advances with every call and
    is not part of the saved weights. Resetting those states at each epoch
    start makes epoch k identical whether or not the run was restarted.
    """
    set_global_seeds(seed)
    index = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            dtype = generator.state.dtype
            generator.state.assign(keras.ops.convert_to_tensor([seed, index], dtype=dtype))
            index += 1


# --------------------------------------------------------------------------- progress


class ProgressBar(keras.callbacks.Callback):
    """A per-epoch progress bar with ETA, labelled ``Epoch e/E`` of the whole run."""

    SHOWN = ("loss", "top1", "agreement", "val_top1")

    def __init__(self, epochs: int, steps_per_epoch: int, name: str):
        super().__init__()
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.name = name
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"{self.name} epoch {epoch + 1}/{self.epochs}", flush=True)
        # Keras's logs are already running means: show them as they are.
        self.bar = keras.utils.Progbar(self.steps, stateful_metrics=self.SHOWN)

    def on_train_batch_end(self, batch, logs=None):
        shown = [(k, v) for k, v in (logs or {}).items() if k in self.SHOWN]
        self.bar.update(batch + 1, values=shown, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        shown = [(k, v) for k, v in (logs or {}).items() if k in self.SHOWN]
        self.bar.update(self.steps, values=shown, finalize=True)


# --------------------------------------------------------------------------- the loop


def _summaries(history_row: dict) -> tuple[dict, dict]:
    train, validation = {}, {}
    for key, value in history_row.items():
        if key == "epoch":
            continue
        if key.startswith("val_"):
            validation[key[4:]] = value
        else:
            train[key] = value
    return train, validation


def _pick(row: dict | None) -> dict:
    if not row:
        return {}
    keys = ("epoch", "val_top1", "val_top5", "top1", "top5", "val_loss", "loss", "val_agreement")
    return {k: row[k] for k in keys if k in row}


def run_training(
    train_model: keras.Model,
    saved_model: keras.Model,
    train_data: TrainData,
    eval_data: EvalData,
    *,
    run_dir: str | os.PathLike,
    config: TrainConfig,
    run_info: dict,
    tensorboard_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    hparams: dict | None = None,
    profile_batches: tuple[int, int] | None = None,
    compile_fn: Callable[[keras.optimizers.Optimizer], None],
) -> RunResult:
    """The epoch loop shared by teachers and students (see the module docstring).

    ``train_model`` is what `fit` runs (the model itself, or a `Distiller`);
    ``saved_model`` is what the checkpoints hold (the teacher or the student).
    ``compile_fn(optimizer)`` compiles ``train_model``.

    Distributed runs (`lskd_tf.distribute`): every worker runs this loop; only
    the chief writes to ``run_dir`` and ``tensorboard_dir``, the other workers
    write the same files to a temporary directory that is deleted at the end.
    Every worker reads ``run_dir`` to resume.
    """
    run_dir = Path(run_dir)
    strategy = train_model.distribute_strategy
    previous = read_run_json(run_dir)
    if previous and previous.get("status") == "finished":
        return _finished_result(run_dir, previous)

    out_dir = distribute.write_dir(run_dir, strategy)  # run_dir on the chief only
    if out_dir != run_dir or not tensorboard_dir:
        tensorboard_dir = out_dir / "tensorboard"
    tensorboard_dir = Path(tensorboard_dir)
    epoch_fn = as_epoch_fn(train_data, config)
    eval_ds = as_eval_dataset(eval_data, config.batch_size)
    steps_per_epoch = steps_in(epoch_fn(0), config)

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        compile_fn(make_optimizer(config, steps_per_epoch))
        state = _load_resume_state(run_dir, train_model)
    history: list[dict] = state["history"] if state else []
    start_epoch = len(history)
    distribute.check_same_on_all_workers(strategy, start_epoch, "the epoch to start from")
    monitor = "val_top1" if eval_ds is not None else "top1"
    best_row = max(history, key=lambda r: r.get(monitor, -1.0)) if history else None

    info = {
        "name": run_info.get("name", run_dir.name),
        **run_info,
        "status": "running",
        "train": config.to_dict(),
        "steps_per_epoch": steps_per_epoch,
        "monitor": monitor,
        "tensorboard_dir": str(tensorboard_dir),
        "strategy": type(strategy).__name__,
        "num_replicas": strategy.num_replicas_in_sync,
        "versions": _versions(),
    }
    if history:  # resuming: keep what the finished epochs measured in run.json
        info.update(best=_pick(best_row), last=_pick(history[-1]), epochs_done=len(history))
    write_atomic(out_dir / "run.json", json.dumps(info, indent=2))
    writers = {
        "train": tf.summary.create_file_writer(str(tensorboard_dir / "train")),
        "validation": tf.summary.create_file_writer(str(tensorboard_dir / "validation")),
    }
    if hparams and start_epoch == 0:
        from tensorboard.plugins.hparams import api as hp

        with writers["validation"].as_default():
            hp.hparams(hparams, trial_id=info["name"])

    fit_callbacks = list(callbacks)
    if config.verbose:
        fit_callbacks.append(ProgressBar(config.epochs, steps_per_epoch, info["name"]))
    try:
        for epoch in range(start_epoch, config.epochs):
            epoch_started = time.time()
            reseed(train_model, epoch_seed(config.seed, epoch))
            epoch_callbacks = list(fit_callbacks)
            if profile_batches and epoch == start_epoch:
                epoch_callbacks.append(
                    keras.callbacks.TensorBoard(
                        str(tensorboard_dir / "profile"), profile_batch=profile_batches
                    )
                )
            # Keras fit, or the multi-worker loop around the same train_step.
            logs = distribute.run_epoch(
                train_model,
                epoch_fn,
                epoch,
                validation_data=eval_ds,
                steps_per_epoch=config.steps_per_epoch,
                callbacks=epoch_callbacks,
            )
            row = {"epoch": epoch + 1, **{k: float(v[-1]) for k, v in logs.items()}}
            row["learning_rate"] = float(
                keras.ops.convert_to_numpy(train_model.optimizer.learning_rate)
            )
            row["epoch_time_s"] = time.time() - epoch_started
            history.append(row)
            _write_epoch(writers, row, epoch)
            save_model_atomic(saved_model, out_dir / "last.keras")
            if best_row is None or row.get(monitor, -1.0) > best_row.get(monitor, -1.0):
                best_row = row
                save_model_atomic(saved_model, out_dir / "best.keras")
            _save_resume_state(out_dir, train_model, history)
            write_atomic(out_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
            info.update(best=_pick(best_row), last=_pick(row), epochs_done=epoch + 1)
            write_atomic(out_dir / "run.json", json.dumps(info, indent=2))
    except BaseException as error:
        info.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
        info["error"] = f"{type(error).__name__}: {error}"
        write_atomic(out_dir / "run.json", json.dumps(info, indent=2))
        distribute.discard_write_dir(out_dir, run_dir)  # a non-chief's temporary dir
        distribute.raise_if_peer_failure(strategy, error, run_dir)  # says a worker died
        raise
    finally:
        for writer in writers.values():
            writer.close()

    info.update(
        status="finished",
        best=_pick(best_row),
        last=_pick(history[-1]),
        wall_time_s=sum(row.get("epoch_time_s", 0.0) for row in history),
    )
    write_atomic(out_dir / "run.json", json.dumps(info, indent=2))
    distribute.discard_write_dir(out_dir, run_dir)
    print(summary_line(info), flush=True)  # one line per finished run, even with verbose=0
    return RunResult(run_dir, saved_model, history, info["best"], info["last"])


def summary_line(info: dict) -> str:
    """One line per finished run: name, last and best top-1, wall time."""
    last, best = info.get("last", {}), info.get("best", {})
    key = info.get("monitor", "val_top1")
    nan = float("nan")
    return (
        f"[{info.get('status', '?')}] {info.get('name')}: {key} last {last.get(key, nan):.4f}"
        f", best {best.get(key, nan):.4f} @ epoch {best.get('epoch', '?')}"
        f" ({info.get('wall_time_s', 0.0):.0f} s)"
    )


def _write_epoch(writers: dict, row: dict, epoch: int) -> None:
    train, validation = _summaries(row)
    for split, values in (("train", train), ("validation", validation)):
        with writers[split].as_default():
            for key, value in values.items():
                tf.summary.scalar(f"epoch_{key}", value, step=epoch)
        writers[split].flush()


def _save_resume_state(run_dir: Path, train_model: keras.Model, history: list[dict]) -> None:
    """Weights + optimizer state of the finished epoch, then the JSON that points to them.

    The JSON is the commit point: a kill before it is written leaves the
    previous epoch's complete state in place.
    """
    resume = run_dir / "resume"
    resume.mkdir(exist_ok=True)
    epoch = len(history)
    weights = resume / f"epoch{epoch:04d}.weights.h5"
    tmp = resume / f".tmp{os.getpid()}.weights.h5"
    train_model.save_weights(tmp)
    os.replace(tmp, weights)
    write_atomic(
        resume / "state.json",
        json.dumps({"epoch": epoch, "weights": weights.name, "history": history}, indent=1),
    )
    for old in resume.glob("epoch*.weights.h5"):
        if old != weights:
            old.unlink()


def _load_resume_state(run_dir: Path, train_model: keras.Model) -> dict | None:
    path = run_dir / "resume" / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if not train_model.optimizer.built:
        train_model.optimizer.build(train_model.trainable_variables)
    train_model.load_weights(run_dir / "resume" / state["weights"])
    return state


def _finished_result(run_dir: Path, info: dict) -> RunResult:
    model = keras.models.load_model(run_dir / "last.keras")
    history = pd.read_csv(run_dir / "history.csv").to_dict("records")
    return RunResult(run_dir, model, history, info.get("best", {}), info.get("last", {}))


# --------------------------------------------------------------------------- public API


def train_teacher(
    model: keras.Model,
    train_data: TrainData,
    eval_data: EvalData = None,
    *,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    label_smoothing: float = 0.0,
    smoothing: str = "uniform",
    run_info: dict | None = None,
    **run_options: Any,
) -> RunResult:
    """Train a teacher (or any model alone) with optionally smoothed cross-entropy.

    Args:
        model: a built Keras model outputting logits (e.g. `lskd_tf.models.get`),
            created under the strategy's scope when distributed.
        train_data: ``epoch -> tf.data.Dataset`` of (images, labels) batches,
            a `tf.data.Dataset`, or NumPy arrays ``(images, labels)``.
        eval_data: a batched `tf.data.Dataset` or NumPy arrays, evaluated each epoch.
        run_dir: the run's directory (created; an existing run resumes, a finished
            run is returned as it is without training).
        config: optimization settings (`TrainConfig`).
        label_smoothing, smoothing: the teacher's LS strength and convention.
        run_info: extra fields recorded in ``run.json`` (e.g. model and dataset names).
        **run_options: ``tensorboard_dir``, ``callbacks``, ``hparams``, ``profile_batches``.

    Example:

    ```python
    teacher = lskd_tf.models.get("resnet56", num_classes=100, weight_decay=5e-4)
    result = lskd_tf.train_teacher(teacher, (x_train, y_train), (x_test, y_test),
                                   run_dir="runs/t_ls0.1", label_smoothing=0.1,
                                   config=lskd_tf.TrainConfig(epochs=240))
    ```
    """
    config = config or TrainConfig()
    validate_smoothing(label_smoothing, smoothing, name="label_smoothing")

    def compile_teacher(optimizer):
        model.compile(
            optimizer=optimizer,
            loss=SmoothedCrossEntropy(label_smoothing, smoothing),
            metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
            ],
            jit_compile=config.jit_compile,
        )

    info = {
        "kind": "teacher",
        "label_smoothing": float(label_smoothing),
        "smoothing": smoothing,
        **(run_info or {}),
    }
    return run_training(
        model, model, train_data, eval_data, run_dir=run_dir, config=config,
        run_info=info, compile_fn=compile_teacher, **run_options,
    )  # fmt: skip


def distill_student(
    teacher: keras.Model,
    student: keras.Model,
    train_data: TrainData,
    eval_data: EvalData = None,
    *,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    temperature: float = 4.0,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    label_smoothing: float = 0.0,
    smoothing: str = "uniform",
    t2_scaling: bool = True,
    run_info: dict | None = None,
    **run_options: Any,
) -> RunResult:
    """Distill ``student`` from a frozen ``teacher`` with a `Distiller`.

    Arguments are those of `train_teacher` and `Distiller`; the checkpoints hold
    the student. Batches may carry cached teacher logits as a third element.

    Example:

    ```python
    result = lskd_tf.distill_student(teacher, student, train_fn, eval_ds,
                                     run_dir="runs/s_T4", temperature=4.0)
    ```
    """
    config = config or TrainConfig()
    validate_temperature(temperature)
    validate_smoothing(label_smoothing, smoothing, name="label_smoothing")
    with student.distribute_strategy.scope():
        distiller = Distiller(
            teacher, student, temperature=temperature, kd_weight=kd_weight,
            ce_weight=ce_weight, label_smoothing=label_smoothing, smoothing=smoothing,
            t2_scaling=t2_scaling,
        )  # fmt: skip

    def compile_distiller(optimizer):
        distiller.compile(optimizer=optimizer, jit_compile=config.jit_compile)

    info = {
        "kind": "student",
        "temperature": float(temperature),
        "kd_weight": float(kd_weight),
        "ce_weight": float(ce_weight),
        "label_smoothing": float(label_smoothing),
        "smoothing": smoothing,
        "t2_scaling": bool(t2_scaling),
        **(run_info or {}),
    }
    return run_training(
        distiller, student, train_data, eval_data, run_dir=run_dir, config=config,
        run_info=info, compile_fn=compile_distiller, **run_options,
    )  # fmt: skip
