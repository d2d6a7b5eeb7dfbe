"""The Keras callbacks that make a run recorded, checkpointed and resumable.

`lskd_tf.training.run_training` trains one epoch per `fit` call (each epoch is
reseeded first, `lskd_tf.seeding`) and gives every call these callbacks, in this order:

1. `EpochRow`: appends the epoch's row (metrics, learning rate, time) to the history;
2. `Checkpoints`: ``last.keras`` every epoch, ``best.keras`` when the monitored metric
   improves;
3. `ResumeState`: weights, optimizer and history (the epoch's commit point), restored
   before the first epoch, in the style of `keras.callbacks.BackupAndRestore`;
4. `RunRecorder`: ``history.csv``, ``run.json`` and the TensorBoard scalars.

A kill between two of them loses nothing: on restart the run resumes from the last
committed state and `RunRecorder` rewrites ``history.csv`` from it.

A run counted in updates (``TrainConfig.max_updates`` / ``validate_every_updates``)
calls `fit` once per *validation period* instead of once per epoch; the same callbacks
then write one row per period, and `EpochRow` and `ResumeState` are given the period's
end (`Position`): the row's ``epoch`` and ``updates``, and where a restart continues.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from lskd_tf.run_dir import FAILED, FINISHED, INTERRUPTED, RUNNING, RunDir

REPORTED = ("epoch", "updates", "loss", "val_loss", "val_agreement")
"""Keys of a history row kept in run.json's ``best``/``last`` besides the task's metrics."""


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run counted in updates stands: its next batch is batch ``batch`` (0-based)
    of epoch ``epoch`` (0-based), after ``updates`` training steps.

    An update is one training step (one global batch). With float32 it is one
    ``optimizer.iterations``; under mixed_float16 Keras's loss-scale optimizer skips the
    step of non-finite gradients without advancing ``iterations``, but it still counts
    here (fairseq does not count it).
    """

    epoch: int = 0
    batch: int = 0
    updates: int = 0

    def row_keys(self) -> dict:
        """The keys a history row made here starts with: the 1-based epoch its last
        update belongs to, and the updates done."""
        return {"epoch": self.epoch + (1 if self.batch else 0), "updates": self.updates}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class EpochRow(keras.callbacks.Callback):
    """Appends ``{"epoch": e, **logs, "learning_rate", "epoch_time_s"}`` to ``history``.

    With ``at`` (a run counted in updates: the end of the current period), the row
    starts with ``at().row_keys()`` (``epoch`` and ``updates``) instead, and
    ``epoch_time_s`` is the period's time.
    """

    def __init__(self, history: list[dict], at: Callable[[], Position] | None = None):
        super().__init__()
        self.history = history
        self.at = at
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        keys = self.at().row_keys() if self.at else {"epoch": epoch + 1}
        row = {**keys, **{k: float(v) for k, v in (logs or {}).items()}}
        rate = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        row["epoch_time_s"] = time.time() - self.started
        self.history.append(row)


class Checkpoints(keras.callbacks.Callback):
    """``last.keras`` after every epoch, ``best.keras`` when ``monitor`` improves.

    ``saved_model`` is what the checkpoints hold (the student, not the `Distiller`).
    """

    def __init__(self, run: RunDir, saved_model: keras.Model, history: list[dict], monitor: str):
        super().__init__()
        self.run = run
        self.saved_model = saved_model
        self.history = history
        self.monitor = monitor
        self.best = best_row(history, monitor)

    def on_epoch_end(self, epoch, logs=None):
        row = self.history[-1]
        self.run.save_checkpoint(self.saved_model, "last")
        if self.best is None or row.get(self.monitor, -1.0) > self.best.get(self.monitor, -1.0):
            self.best = row
            # The model just saved, byte for byte: a copy, not a second `model.save`.
            self.run.copy_checkpoint("last", "best")


class ResumeState(keras.callbacks.Callback):
    """Saves the training state after every epoch; `restore` loads it before training.

    Args:
        source: the run directory to resume from (every worker reads it).
        target: where this process writes (the same on the chief; a temporary
            directory on other workers, `lskd_tf.distribute.write_dir`).
        train_model: the compiled model `fit` trains (the model, or a `Distiller`).
        saved_model: the model whose weights are the state (the teacher, or the
            student: a `Distiller`'s frozen teacher is not copied into every epoch).
        at: a run counted in updates: the end of the current period (`Position`),
            saved with the state so that a restart continues there, mid-epoch or not.
    """

    def __init__(
        self,
        source: RunDir,
        target: RunDir,
        train_model: keras.Model,
        saved_model: keras.Model,
        at: Callable[[], Position] | None = None,
    ):
        super().__init__()
        self.source = source
        self.target = target
        self.train_model = train_model
        self.saved_model = saved_model
        self.at = at
        self.history: list[dict] = []
        self.position: Position | None = None

    def restore(self) -> list[dict]:
        """Load the last committed period's weights and optimizer; its history, or [].

        ``self.position`` becomes the saved `Position` (None when the state has none:
        no state, or one written by an epoch-counted run).
        """
        state = self.source.read_resume_state()
        if state is None:
            return self.history
        optimizer = self.train_model.optimizer
        self.source.load_resume_state(state, self.saved_model, optimizer, self.train_model)
        self.history[:] = state["history"]
        if state.get("position") is not None:
            self.position = Position(**state["position"])
        return self.history

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.train_model.optimizer
        position = self.at().to_dict() if self.at else None
        self.target.save_resume_state(self.saved_model, optimizer, self.history, position)


class RunRecorder(keras.callbacks.Callback):
    """Keeps ``run.json``, ``history.csv`` and the TensorBoard scalars up to date.

    Args:
        run: where to write (`RunDir`).
        info: the run's record; updated in place with status, best and last.
        history: the shared list of epoch rows.
        monitor: the history key that picks the best epoch (e.g. ``val_top1``).
        metrics: the task's metric names, kept in ``best``/``last`` (train and val).
        tensorboard_dir: where the ``train``/``validation`` scalars go.
        hparams: the run's hyperparameters for TensorBoard's HParams dashboard.
    """

    def __init__(
        self,
        run: RunDir,
        info: dict,
        history: list[dict],
        *,
        monitor: str,
        metrics: tuple[str, ...],
        tensorboard_dir: Path,
        hparams: dict | None = None,
    ):
        super().__init__()
        self.run = run
        self.info = info
        self.history = history
        self.monitor = monitor
        self.kept = (*REPORTED, *metrics, *(f"val_{m}" for m in metrics))
        self.writers = {
            split: tf.summary.create_file_writer(str(Path(tensorboard_dir) / split))
            for split in ("train", "validation")
        }
        info["status"] = RUNNING
        if history:  # resuming: keep what the finished epochs measured
            self._update_metrics()
            run.write_history(history)  # a kill may have come before the last rewrite
        run.write(info)
        if hparams and not history:
            from tensorboard.plugins.hparams import api as hp

            with self.writers["validation"].as_default():
                hp.hparams(hparams, trial_id=info["name"])

    def pick(self, row: dict | None) -> dict:
        return {key: row[key] for key in self.kept if row and key in row}

    def _update_metrics(self) -> None:
        self.info.update(
            best=self.pick(best_row(self.history, self.monitor)),
            last=self.pick(self.history[-1]),
            epochs_done=len(self.history),
        )

    def on_epoch_end(self, epoch, logs=None):
        row = self.history[-1]
        for split, prefix in (("train", ""), ("validation", "val_")):
            with self.writers[split].as_default():
                for key, value in row.items():
                    if key == "epoch" or key.startswith("val_") != bool(prefix):
                        continue
                    tf.summary.scalar(
                        epoch_tag(key.removeprefix(prefix)), value, step=row.get("updates", epoch)
                    )
            self.writers[split].flush()
        self.run.write_history(self.history)
        self._update_metrics()
        self.run.write(self.info)

    def fail(self, error: BaseException) -> None:
        """Record why the run stopped (``interrupted`` for Ctrl-C / a kill, else ``failed``)."""
        self.info["status"] = INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED
        self.info["error"] = f"{type(error).__name__}: {error}"
        self.run.write(self.info)

    def finish(self, final: dict | None = None) -> None:
        """Mark the run finished; ``final`` adds metrics measured on its checkpoints.

        ``final`` is ``{"best": {...}, "last": {...}}`` (e.g. BLEU of ``best.keras`` and
        ``last.keras``, `lskd_tf.tasks.Task.final_metrics`); its names join ``metrics``.
        """
        self._update_metrics()
        for which, values in (final or {}).items():
            self.info[which].update(values)
            for name in values:
                metric = re.sub(r"^(val|test)_", "", name)  # test_bleu: the metric "bleu"
                if metric not in self.info["metrics"] and isinstance(values[name], float):
                    self.info["metrics"].append(metric)
        self.info.update(
            status=FINISHED,
            wall_time_s=sum(row.get("epoch_time_s", 0.0) for row in self.history),
        )
        self.run.write(self.info)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class ProgressBar(keras.callbacks.Callback):
    """Progress of a run's epochs, labelled ``<run> epoch e/E`` of the whole run.

    ``describe`` (a run counted in updates) labels each period instead, e.g.
    ``<run> updates 2000-4000 of 300000``; its bar is as long as `fit`'s steps.

    On a terminal: Keras's live bar with ETA. Anywhere else (a log file, a pipe, CI,
    ``nohup``) one plain line per finished epoch, without ANSI colour codes or carriage
    returns: Keras's `Progbar` redraws itself on every POSIX system, which made a
    quick-study log 224 KB of escape sequences.

    Args:
        epochs: the run's epochs.
        steps_per_epoch: steps of one epoch (the bar's length).
        name: the run's name.
        describe: labels a period of a run counted in updates (None: epochs).
        interactive: live bar (True) or one line per epoch (False); default: whether
            standard output is a terminal.
    """

    SHOWN = ("loss", "top1", "agreement", "val_top1")

    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        name: str,
        describe: Callable[[], str] | None = None,
        interactive: bool | None = None,
    ):
        super().__init__()
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.name = name
        self.describe = describe
        self.interactive = is_terminal() if interactive is None else interactive
        self.bar = None
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        if self.describe:
            self.steps = self.params.get("steps") or self.steps
        if not self.interactive:
            return
        print(f"{self.name} {self.label(epoch)}", flush=True)
        # Keras's logs are already running means: show them as they are.
        self.bar = keras.utils.Progbar(self.steps, stateful_metrics=self.SHOWN)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            shown = [(k, v) for k, v in (logs or {}).items() if k in self.SHOWN]
            self.bar.update(batch + 1, values=shown, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        shown = [(k, v) for k, v in (logs or {}).items() if k in self.SHOWN]
        if self.bar is not None:
            self.bar.update(self.steps, values=shown, finalize=True)
            return
        values = "".join(f" - {k}: {float(v):.4f}" for k, v in shown)
        print(
            f"{self.name} {self.label(epoch)} - {time.time() - self.started:.0f} s{values}",
            flush=True,
        )

    def label(self, epoch: int) -> str:
        """``epoch e/E``, or the period's own label in a run counted in updates."""
        return self.describe() if self.describe else f"epoch {epoch + 1}/{self.epochs}"


def is_terminal() -> bool:
    """Whether standard output shows live progress: a terminal or a Jupyter notebook
    (whose output redraws carriage returns), not a file or pipe."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def epoch_tag(key: str) -> str:
    """The TensorBoard tag of a history key: Keras's ``epoch_<name>`` (``epoch_time_s`` as is).

    Keras's TensorBoard callback names epoch scalars ``epoch_loss``, ``epoch_top1``; a
    key that already starts with ``epoch_`` keeps its name instead of ``epoch_epoch_...``.
    """
    return key if key.startswith("epoch_") else f"epoch_{key}"


def best_row(history: list[dict], monitor: str) -> dict | None:
    """The first epoch with the highest ``monitor`` (None for an empty history)."""
    return max(history, key=lambda row: row.get(monitor, -1.0)) if history else None


def validations_without_improvement(history: list[dict], monitor: str) -> int:
    """How many rows came after the best one (`best_row`): the validations in a row
    that did not improve ``monitor`` (higher is better, as for ``best.keras``).

    Derived from the history, which the resume state holds, so a resumed run
    continues the count where it stopped (``TrainConfig.patience``).
    """
    best = best_row(history, monitor)
    return 0 if best is None else len(history) - 1 - history.index(best)
