"""Training runs: a teacher (optionally with label smoothing) or a distilled student.

Every run owns a directory (`lskd_tf.run_dir.RunDir`: run.json, history.csv,
best.keras, last.keras, resume/). Runs are resumable and reproducible: each epoch
starts by reseeding every RNG from ``(seed, epoch)`` (`lskd_tf.seeding`) and by asking
for that epoch's dataset, so a run killed after epoch k and restarted continues at
epoch k + 1 with the same weights, optimizer state, data order and augmentation as an
uninterrupted run. Pass the training data as a function ``epoch -> tf.data.Dataset``
(what `lskd_tf.data` and the tasks offer) or as NumPy arrays to get that guarantee; a
fixed `tf.data.Dataset` is accepted too, but its shuffle order after a restart is
whatever it produces.

What is written after each epoch, and in which order, is the business of the
callbacks in `lskd_tf.callbacks`; every file is written atomically.

Runs counted in updates (``TrainConfig.max_updates`` / ``validate_every_updates``)
keep that guarantee mid-epoch. The unit of history rows, checkpoints, ``best``/``last``,
the resume state and ``patience`` is then a *validation period*: the next
``validate_every_updates`` updates (without it: the rest of the current epoch), cut at
``max_updates`` and at the end of the last epoch. A period may start inside an epoch
and run into the next one. Its data are epoch e's dataset, rebuilt and skipped to the
period's first batch (`tf.data.Dataset.skip`), then the following epochs' from their
start; each epoch's dataset is built right after seeding the global RNGs with
``epoch_seed(seed, e)``, so every period of epoch e reads the very same epoch (each
example once). At a period's start every RNG of the step is reseeded from
``period_seed(seed, epoch, batch)`` (`lskd_tf.seeding`): a restart at a committed
period boundary replays exactly what the uninterrupted run did. The resume state
keeps the period's end (`lskd_tf.callbacks.Position`). Skipping replays the input
pipeline of the skipped batches (its map functions run; the model does not). A user
callback that stops `fit` inside a period (``stop_training``) ends that period early,
as it ends an epoch early: the next period still starts at the planned position.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lskd_tf import distribute
from lskd_tf.callbacks import (
    Checkpoints,
    EpochRow,
    Position,
    ProgressBar,
    ResumeState,
    RunRecorder,
    validations_without_improvement,
)
from lskd_tf.choices import OPTIMIZERS
from lskd_tf.distiller import Distiller, DistillSpec, default_metrics
from lskd_tf.losses import SmoothedCrossEntropy, validate_smoothing
from lskd_tf.models.weight_decay import adamw_exclusion_pattern, validate_weight_decay_scope
from lskd_tf.reuse import CompiledModels, copy_weights, hold_loss_settings
from lskd_tf.run_dir import RunDir, as_run_dir
from lskd_tf.schedules import SCHEDULES, WarmupDecay, check_warmup
from lskd_tf.seeding import epoch_seed, period_seed, reseed, set_global_seeds
from lskd_tf.settings import ADDED_LATER, without_later_defaults

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
    The warmup is given in epochs (``warmup_epochs``, image recipes) or in optimizer
    steps (``warmup_steps``, fairseq's ``--warmup-updates``; with ``schedule=
    "inverse_sqrt"`` the papers' translation recipe), never both (`WarmupDecay`).

    Training length in updates (fairseq's ``--max-update``, ``--save-interval-updates``
    and the fork's ``--early-stop``; see `run_training`). An update is one training
    step (one global batch). All three default to None: training as before, one
    validation per epoch for ``epochs`` epochs.

    - ``max_updates``: stop after this many updates, mid-epoch if need be. ``epochs``
      stays a limit too: training ends at whichever comes first (the fork has no epoch
      limit: give a large ``epochs``). The ``cosine`` schedule then decays to 0 over
      ``min(epochs * steps_per_epoch, max_updates)`` updates (``steps_per_epoch``:
      epoch 0's); ``step`` milestones stay in epochs, ``inverse_sqrt`` and
      ``constant`` do not depend on the length.
    - ``validate_every_updates``: validate every this many updates instead of after
      every epoch. Each validation is a history row (with ``epoch`` and ``updates``),
      updates ``last.keras`` (and ``best.keras``), and commits the resume state: a
      killed run resumes at the last validation, mid-epoch if it was there.
    - ``patience``: stop after this many validations in a row without improvement of
      the monitored metric (higher is better, strictly, as for ``best.keras``).

    ``adam_beta1``, ``adam_beta2``, ``adam_epsilon``: the moment decay rates and epsilon
    of "adam" and "adamw" (unused by "sgd"). Their defaults are Keras's own (0.9, 0.999,
    1e-7), so every run recorded before these fields existed keeps its identity; the
    papers' translation recipe sets fairseq's (0.9, 0.98) and 1e-8
    (flags/common/translation.flags).
    """

    epochs: int = 240
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    adam_beta1: float = dataclasses.field(default=0.9, metadata=ADDED_LATER)
    adam_beta2: float = dataclasses.field(default=0.999, metadata=ADDED_LATER)
    adam_epsilon: float = dataclasses.field(default=1e-7, metadata=ADDED_LATER)
    weight_decay: float = 5e-4
    weight_decay_scope: str = "kernels"
    schedule: str = "step"
    milestones: tuple[int, ...] = (150, 180, 210)
    decay_rate: float = 0.1
    warmup_epochs: float = 0.0
    warmup_steps: int = dataclasses.field(default=0, metadata=ADDED_LATER)
    seed: int = 0
    steps_per_epoch: int | None = None
    max_updates: int | None = dataclasses.field(default=None, metadata=ADDED_LATER)
    validate_every_updates: int | None = dataclasses.field(default=None, metadata=ADDED_LATER)
    patience: int | None = dataclasses.field(default=None, metadata=ADDED_LATER)
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
        for name, low, high in (
            ("learning_rate", 0.0, None), ("weight_decay", 0.0, None), ("momentum", 0.0, 1.0),
            ("decay_rate", 0.0, None), ("warmup_epochs", 0.0, None),
            ("adam_beta1", 0.0, 1.0), ("adam_beta2", 0.0, 1.0),
        ):  # fmt: skip
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < low or (high is not None and value >= high):
                bounds = f"in [{low:g}, {high:g})" if high is not None else f">= {low:g}"
                raise ValueError(f"{name} must be finite and {bounds}, got {value}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(float(self.adam_epsilon)) and self.adam_epsilon > 0):
            raise ValueError(f"adam_epsilon must be finite and > 0, got {self.adam_epsilon}")
        check_warmup(self.schedule, float(self.warmup_epochs), int(self.warmup_steps))
        if any(m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be >= 0, got {list(self.milestones)}")
        validate_weight_decay_scope(self.weight_decay_scope)
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        for name in ("max_updates", "validate_every_updates", "patience"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, or None (off); got {value!r}")

    @property
    def counts_updates(self) -> bool:
        """Whether training is measured in updates (`run_training`'s validation periods)."""
        return self.max_updates is not None or self.validate_every_updates is not None

    def to_dict(self) -> dict:
        config = dataclasses.asdict(self)
        config["milestones"] = list(self.milestones)
        return config

    def identity(self) -> dict:
        """The fields that change a run's result (`lskd_tf.experiment.identity`).

        Leaves out the display-only ``verbose``, and fields marked ``added_later`` while
        they hold their default: a run trained before such a setting existed behaved as
        its default, so it keeps its identity (and is reused) instead of being refused.
        """
        config = self.to_dict()
        for field in dataclasses.fields(self):
            if not field.compare:
                del config[field.name]
        return without_later_defaults(self, config)


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
        warmup_steps=config.warmup_steps,
        total_steps=(
            min(config.epochs * steps_per_epoch, config.max_updates)
            if config.max_updates is not None
            else None
        ),
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov)
    moments = dict(beta_1=config.adam_beta1, beta_2=config.adam_beta2, epsilon=config.adam_epsilon)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(schedule, **moments)
    adamw = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, **moments)
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


def _versions() -> dict:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


# --------------------------------------------------------------------------- data


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
        "or a tuple of NumPy arrays (inputs, labels[, sample_weights])"
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
    return distribute.batches_per_epoch(dataset)


# --------------------------------------------------------------------------- periods


@dataclasses.dataclass(frozen=True)
class Period:
    """One `fit` call of the loop: an epoch, or a validation period (module docstring).

    ``index`` is the epoch `fit` and the callbacks see (the row's index for periods);
    ``seed`` reseeds every RNG of the step first; ``data`` is the ``epoch_fn`` to train
    on (called with ``index``); ``steps`` is `fit`'s ``steps_per_epoch``; ``end`` is
    where a period leaves the run (None for epochs).
    """

    index: int
    seed: int
    data: Callable
    steps: int | None
    end: Position | None = None
    start: Position | None = None


def epoch_periods(config: TrainConfig, epoch_fn: Callable, first: int) -> Iterator[Period]:
    """An epoch-counted run: epochs ``first`` .. ``config.epochs - 1``, as always."""
    for epoch in range(first, config.epochs):
        yield Period(epoch, epoch_seed(config.seed, epoch), epoch_fn, config.steps_per_epoch)


class UpdatePeriods:
    """The validation periods of a run counted in updates (see the module docstring).

    ``position`` is where the next period starts; `next` plans it from there and
    moves ``position`` to its end. ``current`` is the period being trained, whose end
    `EpochRow` and `ResumeState` record.
    """

    def __init__(self, config: TrainConfig, epoch_fn: Callable, steps_per_epoch: int):
        self.config = config
        self.epoch_fn = epoch_fn
        self.epoch_steps = {0: steps_per_epoch}
        self.position = Position()
        self.current: Period | None = None

    def steps_of(self, epoch: int) -> int:
        """Batches of epoch ``epoch``: ``steps_per_epoch``, or its dataset's cardinality."""
        if epoch not in self.epoch_steps:
            self.epoch_steps[epoch] = steps_in(self.epoch_fn(epoch), self.config)
        return self.epoch_steps[epoch]

    def resume_at(self, saved: Position | None, history: list[dict]) -> None:
        """Continue from a saved position; a state without one (an epoch-counted run's)
        has one row per whole epoch."""
        if saved is None:
            done = len(history)
            saved = Position(done, 0, sum(self.steps_of(e) for e in range(done)))
        self.position = saved

    def end_of_current(self) -> Position:
        return self.current.end

    def describe_current(self) -> str:
        start, end = self.current.start, self.current.end
        limit = f" of {self.config.max_updates}" if self.config.max_updates else ""
        return f"updates {start.updates}-{end.updates}{limit} (epoch {end.row_keys()['epoch']})"

    def reached_max_updates(self) -> bool:
        limit = self.config.max_updates
        return limit is not None and self.position.updates >= limit

    def next(self, index: int) -> Period | None:
        """Plan the period that starts at ``position`` (None: training is over)."""
        config, start = self.config, self.position
        if start.epoch >= config.epochs or self.reached_max_updates():
            return None
        length = config.validate_every_updates or self.steps_of(start.epoch) - start.batch
        if config.max_updates is not None:
            length = min(length, config.max_updates - start.updates)
        pieces, epoch, batch, left = [], start.epoch, start.batch, length
        while left > 0 and epoch < config.epochs:
            count = min(left, self.steps_of(epoch) - batch)
            pieces.append((epoch, batch, count))
            batch, left = batch + count, left - count
            if batch == self.steps_of(epoch):
                epoch, batch = epoch + 1, 0
        end = Position(epoch, batch, start.updates + length - left)
        seed = period_seed(config.seed, start.epoch, start.batch)
        self.current = Period(index, seed, self._data(pieces), length - left, end, start)
        self.position = end
        return self.current

    def _data(self, pieces: list[tuple[int, int, int]]) -> Callable:
        """An ``epoch_fn`` (same signature) that reads ``(epoch, first batch, count)`` pieces."""
        epoch_fn, seed = self.epoch_fn, self.config.seed
        per_worker = distribute.takes_input_context(epoch_fn)

        def period_data(index: int, input_context: tf.distribute.InputContext | None = None):
            parts = []
            for epoch, first, count in pieces:
                set_global_seeds(epoch_seed(seed, epoch))  # the same epoch in every period
                per_step = 1  # batches of the dataset per global step
                if per_worker and input_context is not None:
                    dataset = epoch_fn(epoch, input_context=input_context)
                    pipelines = input_context.num_input_pipelines
                    per_step = max(1, input_context.num_replicas_in_sync // pipelines)
                else:
                    dataset = epoch_fn(epoch)
                if first:
                    dataset = dataset.skip(first * per_step)
                parts.append(dataset.take(count * per_step))
            return functools.reduce(tf.data.Dataset.concatenate, parts)

        if per_worker:
            return period_data
        return lambda index: period_data(index)


# --------------------------------------------------------------------------- the loop


def run_training(
    train_model: keras.Model,
    saved_model: keras.Model,
    train_data: TrainData,
    eval_data: EvalData,
    *,
    run_dir: str | os.PathLike | RunDir,
    config: TrainConfig,
    run_info: dict,
    compile_fn: Callable[[keras.optimizers.Optimizer], None],
    monitor: str = "top1",
    metric_names: Sequence[str] = ("top1", "top5"),
    tensorboard_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    hparams: dict | None = None,
    profile_batches: tuple[int, int] | None = None,
    final_metrics: Callable[[RunDir], dict] | None = None,
    reuse: tuple[CompiledModels, str] | None = None,
) -> RunResult:
    """The epoch loop shared by teachers and students (see the module docstring).

    ``train_model`` is what `fit` runs (the model itself, or a `Distiller`);
    ``saved_model`` is what the checkpoints hold (the teacher or the student);
    ``compile_fn(optimizer)`` compiles ``train_model``. ``monitor`` (a metric name,
    read on the validation data when there is some) picks ``best.keras``;
    ``metric_names`` are kept in run.json's ``best`` and ``last``. ``final_metrics(out)``,
    when given, measures the finished run's checkpoints (e.g. BLEU by decoding) before
    the run is marked finished, so a kill never leaves a finished run without them.

    ``reuse=(cache, key)`` trains the compiled model that ``cache``
    (`lskd_tf.reuse.CompiledModels`) holds for ``key`` (and runs of the same
    steps per epoch), given this run's starting state, instead of tracing a new train
    function: the same bits, seconds less per run (`lskd_tf.reuse`). The key must name
    everything that shapes the train step except the losses' held settings and the
    weights; ``RunResult.model`` is ``saved_model`` either way, holding the trained
    weights. Ignored for multi-worker runs.

    Distributed runs (`lskd_tf.distribute`): every worker runs this loop; only the
    chief writes to ``run_dir`` and ``tensorboard_dir``, the other workers write the
    same files to a temporary directory that is deleted at the end. Every worker reads
    ``run_dir`` to resume.
    """
    run = as_run_dir(run_dir)
    previous = run.read()
    if previous and run.is_finished():
        return _finished_result(run, previous)
    strategy = train_model.distribute_strategy
    out = RunDir(distribute.write_dir(run.path, strategy))  # run_dir on the chief only
    if out.path != run.path or not tensorboard_dir:
        tensorboard_dir = out.default_tensorboard_dir
    epoch_fn = as_epoch_fn(train_data, config)
    eval_ds = as_eval_dataset(eval_data, config.batch_size)
    steps_per_epoch = steps_in(epoch_fn(0), config)

    keras.utils.set_random_seed(config.seed)
    periods = UpdatePeriods(config, epoch_fn, steps_per_epoch) if config.counts_updates else None
    at = periods.end_of_current if periods else None
    callers_model = saved_model
    with strategy.scope():
        compile_fn(make_optimizer(config, steps_per_epoch))
        _build_optimizer(train_model)
        hold_loss_settings(train_model)  # the same bits reused or not (lskd_tf.reuse)
        if reuse is not None and not distribute.is_multi_worker(strategy):
            cache, key = reuse
            train_model, saved_model = cache.adopt(
                f"{key} steps_per_epoch={steps_per_epoch}", train_model, saved_model
            )
        resume = ResumeState(run, out, train_model, saved_model, at=at)
        history = resume.restore()
    distribute.check_same_on_all_workers(strategy, len(history), "the epoch to start from")
    if periods:
        periods.resume_at(resume.position, history)
        plan = iter(lambda: periods.next(len(history)), None)
    elif resume.position is not None:
        raise ValueError(
            f"the resume state in {run.path} was written by a run counted in updates "
            "(max_updates / validate_every_updates); resume it with the same TrainConfig"
        )
    else:
        plan = epoch_periods(config, epoch_fn, len(history))
    monitor_key = f"val_{monitor}" if eval_ds is not None else monitor
    info = {
        "name": run_info.get("name", run.name),
        **run_info,
        "train": config.to_dict(),
        "steps_per_epoch": steps_per_epoch,
        "monitor": monitor_key,
        "metrics": list(metric_names),
        "tensorboard_dir": str(tensorboard_dir),
        "strategy": type(strategy).__name__,
        "num_replicas": strategy.num_replicas_in_sync,
        "versions": _versions(),
    }
    recorder = RunRecorder(
        out, info, history, monitor=monitor_key, metrics=tuple(metric_names),
        tensorboard_dir=Path(tensorboard_dir), hparams=hparams,
    )  # fmt: skip
    epoch_callbacks = list(callbacks)
    if config.verbose:
        describe = periods.describe_current if periods else None
        epoch_callbacks.append(
            ProgressBar(config.epochs, steps_per_epoch, info["name"], describe=describe)
        )
    epoch_callbacks += [
        EpochRow(history, at=at),
        Checkpoints(out, saved_model, history, monitor_key),
        resume,
        recorder,
    ]
    first = True
    try:
        for period in plan:
            if _patience_exhausted(config, history, monitor_key):
                break
            reseed(train_model, period.seed)
            profiler = []
            if profile_batches and first:
                profiler = [
                    keras.callbacks.TensorBoard(
                        str(Path(tensorboard_dir) / "profile"), profile_batch=profile_batches
                    )
                ]
            first = False
            # Keras fit, or the multi-worker loop around the same train_step.
            distribute.run_epoch(
                train_model, period.data, period.index, validation_data=eval_ds,
                steps_per_epoch=period.steps, callbacks=profiler + epoch_callbacks,
            )  # fmt: skip
            _check_finite(history[-1], run, info.get("temperature"))
    except BaseException as error:
        recorder.fail(error)
        distribute.discard_write_dir(out.path, run.path)  # a non-chief's temporary dir
        distribute.raise_if_peer_failure(strategy, error, run.path)  # says a worker died
        raise
    finally:
        recorder.close()
    if _patience_exhausted(config, history, monitor_key):
        info["stopped_by"] = (
            f"patience: {config.patience} validations without a better {monitor_key}"
        )
    elif periods and periods.reached_max_updates():
        info["stopped_by"] = f"max_updates: {config.max_updates}"
    recorder.finish(final_metrics(out) if final_metrics else None)
    # Multi-worker: nobody moves on (e.g. to load this teacher) before the chief wrote it.
    distribute.barrier(strategy, f"the end of {info['name']}")
    distribute.discard_write_dir(out.path, run.path)
    print(summary_line(info), flush=True)  # one line per finished run, even with verbose=0
    if saved_model is not callers_model:  # a reused compiled model trained in its place
        copy_weights(callers_model, saved_model)
    return RunResult(run.path, callers_model, history, info["best"], info["last"])


def _build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's slot variables now, so the train function is traced once.

    Without a strategy scope, Keras builds the optimizer inside the first trace of the
    train function (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`:
    "defer building to when the train/test/predict function gets traced"); a
    `tf.function` that creates variables is traced a second time without them, which
    doubled the first epoch's tracing (benchmarks/RESULTS.md, "Per-run fixed cost").
    Building first is what a resumed run already did (`RunDir.load_resume_state`); the
    slots start at the same zeros, so the weights are the same bits.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _patience_exhausted(config: TrainConfig, history: list[dict], monitor: str) -> bool:
    """Whether the last ``config.patience`` validations did not improve ``monitor``."""
    return (
        config.patience is not None
        and validations_without_improvement(history, monitor) >= config.patience
    )


class NonFiniteLossError(ValueError):
    """Training diverged: the loss of an epoch is NaN or infinite."""


EXTREME_TEMPERATURES = (0.1, 16.0)
"""A student's T outside this range is named first when its training diverges: the
papers distill at 1 <= T <= 64, and T² · KL at large T multiplies gradients by T²."""


def _check_finite(row: dict, run: RunDir, temperature: float | None = None) -> None:
    loss = row.get("loss")
    if loss is not None and not math.isfinite(loss):
        advice = "lower the learning rate or check the data"
        low, high = EXTREME_TEMPERATURES
        if temperature is not None and not low <= temperature <= high:
            advice = (
                f"the temperature T = {temperature:g} is extreme (the KD term is scaled by "
                f"T² = {temperature**2:g}): try a T in [{low:g}, {high:g}], or {advice}"
            )
        raise NonFiniteLossError(
            f"the loss of epoch {row['epoch']} is {loss} (training diverged); the run in "
            f"{run.path} is marked failed: {advice}"
        )


def summary_line(info: dict) -> str:
    """One line per finished run: name, last and best monitored metric, wall time."""
    last, best = info.get("last", {}), info.get("best", {})
    key = info.get("monitor", "val_top1")
    nan = float("nan")
    at = f"epoch {best.get('epoch', '?')}"
    if "updates" in best:  # a run counted in updates
        at += f", update {best['updates']}"
    return (
        f"[{info.get('status', '?')}] {info.get('name')}: {key} last {last.get(key, nan):.4f}"
        f", best {best.get(key, nan):.4f} @ {at} ({info.get('wall_time_s', 0.0):.0f} s)"
    )


def _finished_result(run: RunDir, info: dict) -> RunResult:
    model = keras.models.load_model(run.checkpoint("last"))
    return RunResult(
        run.path, model, run.read_history(), info.get("best", {}), info.get("last", {})
    )


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
    loss: keras.losses.Loss | None = None,
    metrics: Sequence[keras.metrics.Metric] | None = None,
    monitor: str = "top1",
    run_info: dict | None = None,
    **run_options: Any,
) -> RunResult:
    """Train a teacher (or any model alone) with optionally smoothed cross-entropy.

    Args:
        model: a built Keras model outputting logits (e.g. `lskd_tf.models.get`),
            created under the strategy's scope when distributed.
        train_data: ``epoch -> tf.data.Dataset`` of (inputs, labels[, sample_weight])
            batches, a `tf.data.Dataset`, or NumPy arrays ``(inputs, labels)``.
        eval_data: a batched `tf.data.Dataset` or NumPy arrays, evaluated each epoch.
        run_dir: the run's directory (created; an existing run resumes, a finished
            run is returned as it is without training).
        config: optimization settings (`TrainConfig`).
        label_smoothing, smoothing: the teacher's LS strength and convention.
        loss: the loss to train on instead (a task's own); default
            ``SmoothedCrossEntropy(label_smoothing, smoothing)``.
        metrics, monitor: reported metrics (default top-1/top-5) and the one whose
            validation value picks ``best.keras``.
        run_info: extra fields recorded in ``run.json`` (e.g. model and dataset names).
        **run_options: ``tensorboard_dir``, ``callbacks``, ``hparams``, ``profile_batches``,
            ``final_metrics``, ``reuse`` (`run_training`).

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
    loss = loss if loss is not None else SmoothedCrossEntropy(label_smoothing, smoothing)
    metrics = list(default_metrics() if metrics is None else metrics)

    def compile_teacher(optimizer):
        # weighted_metrics: Keras applies sample weights (e.g. padding masks) only to
        # these; without weights they are the plain metrics.
        model.compile(
            optimizer=optimizer, loss=loss, weighted_metrics=metrics,
            jit_compile=config.jit_compile,
        )  # fmt: skip

    info = {
        "kind": "teacher",
        "label_smoothing": float(label_smoothing),
        "smoothing": smoothing,
        **(run_info or {}),
    }
    return run_training(
        model, model, train_data, eval_data, run_dir=run_dir, config=config,
        run_info=info, compile_fn=compile_teacher, monitor=monitor,
        metric_names=[m.name for m in metrics], **run_options,
    )  # fmt: skip


def distill_student(
    teacher: keras.Model,
    student: keras.Model,
    train_data: TrainData,
    eval_data: EvalData = None,
    *,
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    distill: DistillSpec | None = None,
    metrics: Sequence[keras.metrics.Metric] | None = None,
    monitor: str = "top1",
    run_info: dict | None = None,
    **run_options: Any,
) -> RunResult:
    """Distill ``student`` from a frozen ``teacher`` with a `Distiller`.

    Arguments are those of `train_teacher`, with ``distill`` (`DistillSpec`, default
    ``DistillSpec()``: pure KD at T = 4) for the objective; the checkpoints hold the
    student. Batches may carry cached teacher logits in ``x``
    (`lskd_tf.distiller.with_teacher_logits`).

    Example:

    ```python
    result = lskd_tf.distill_student(teacher, student, train_fn, eval_ds,
                                     run_dir="runs/s_T4",
                                     distill=lskd_tf.DistillSpec(temperature=4.0))
    ```
    """
    config = config or TrainConfig()
    distill = distill or DistillSpec()
    with student.distribute_strategy.scope():
        distiller = Distiller(teacher, student, distill, metrics=metrics)

    def compile_distiller(optimizer):
        distiller.compile(optimizer=optimizer, jit_compile=config.jit_compile)

    info = {"kind": "student", **distill.to_dict(), **(run_info or {})}
    return run_training(
        distiller, student, train_data, eval_data, run_dir=run_dir, config=config,
        run_info=info, compile_fn=compile_distiller, monitor=monitor,
        metric_names=[m.name for m in distiller.reported_metrics], **run_options,
    )  # fmt: skip
