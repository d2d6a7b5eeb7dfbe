"""`RunDir`: the one place that knows what a run directory holds and what its files mean.

::

    <run>/
      run.json            what the run is (spec, config), its status, best and last metrics
      history.csv         one row per finished epoch (or validation period, when counted in updates)
      best.keras          the model at its best monitored validation metric
      last.keras          the model after the last finished epoch
      flags.txt           the flagfile that re-runs exactly this run (`run.py`)
      resume/             training state (weights + optimizer + history), for restarts
      tensorboard/        TensorBoard logs unless the run is given another directory

Training, the sweep, the experiment runner, the results tables and `run.py` all reach
these files through `RunDir`; nothing else spells a file name or a status string.
Every write is atomic (`lskd_tf.atomic`), so a killed run never leaves a half-written
file, and the resume state is written last: its ``state.json`` is the commit point of
an epoch.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from lskd_tf import atomic

RUN_JSON = "run.json"
HISTORY_CSV = "history.csv"
FLAGS_TXT = "flags.txt"
RESUME_DIR = "resume"
RESUME_STATE = "state.json"
CHECKPOINTS = ("last", "best")

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED)


class RunDir:
    """A run's directory and its files.

    Example:

    >>> run = RunDir("runs/quick/teacher-resnet14-ls0-seed0")
    >>> run.is_finished(), run.checkpoint("best"), run.read().get("best")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ paths

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def history_csv(self) -> Path:
        return self.path / HISTORY_CSV

    @property
    def flags_txt(self) -> Path:
        return self.path / FLAGS_TXT

    @property
    def resume_dir(self) -> Path:
        return self.path / RESUME_DIR

    @property
    def default_tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def checkpoint(self, which: str = "last") -> Path:
        """The ``last`` or ``best`` `.keras` checkpoint's path."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        return self.path / f"{which}.keras"

    # ------------------------------------------------------------------ run.json

    def exists(self) -> bool:
        return self.run_json.exists()

    def read(self) -> dict | None:
        """The run's record (run.json), or None when there is none yet."""
        if not self.run_json.exists():
            return None
        try:
            info = json.loads(self.run_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            info = error
        if not isinstance(info, dict):
            reason = f"not valid JSON: {info}" if isinstance(info, Exception) else "not a record"
            raise ValueError(
                f"{self.run_json} is {reason}; delete the run directory {self.path} to retrain "
                "that run (or restore the file)"
            )
        return info

    def read_spec(self):
        """The `TeacherSpec` / `StudentSpec` this run was made from (its run.json; a
        study's student takes its teacher's spec from the teacher run beside it):
        `lskd_tf.experiment.specs.spec_from_record`. A ValueError when there is no run."""
        from lskd_tf.experiment.specs import spec_from_record

        info = self.read()
        if info is None:
            raise ValueError(f"{self.path} holds no run (no {RUN_JSON}): nothing to read")
        teacher_run = spec_record(info).get("teacher_run")
        teacher = RunDir(self.path.parent / teacher_run).read() if teacher_run else None
        return spec_from_record(info, teacher)

    def write(self, info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.run_json, info)

    def status(self) -> str | None:
        info = self.read()
        return info.get("status") if info else None

    def is_finished(self) -> bool:
        return self.status() == FINISHED

    def write_flags(self, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.flags_txt, text)

    # ------------------------------------------------------------------ history

    def write_history(self, rows: list[dict]) -> None:
        """history.csv: one row per epoch, columns in first-seen order."""
        columns = list(dict.fromkeys(key for row in rows for key in row))

        def write(path: Path) -> None:
            with open(path, "w", newline="") as file:
                writer = csv.DictWriter(file, columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)

        atomic.replace_with(self.history_csv, write)

    def read_history(self) -> list[dict]:
        """history.csv's rows ([] before the first epoch), checked: an ``epoch`` column
        counting 1, 2, ... and a number or nothing in every cell (NaN and inf are
        numbers: a diverged epoch is recorded, not hidden). Anything else is a one-line ValueError
        saying how to recover, like a damaged run.json."""
        if not self.history_csv.exists():
            return []
        try:
            with open(self.history_csv, newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                rows = [{key: _number(value) for key, value in row.items()} for row in reader]
                columns = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error) as error:
            self._damaged_history(f"not CSV text ({type(error).__name__})")
        if "epoch" not in columns or not rows:  # written after an epoch: never without one
            self._damaged_history("no epoch column" if rows else "no epoch rows")
        for number, row in enumerate(rows, start=1):
            if row.get("epoch") != number:
                self._damaged_history(f"row {number} has epoch {row.get('epoch')!r}, not {number}")
            text = [k for k, v in row.items() if v != "" and not isinstance(v, (int, float))]
            if text:
                self._damaged_history(f"row {number} has no number in column {text[0]!r}")
        return rows

    def _damaged_history(self, reason: str):
        raise ValueError(
            f"{self.history_csv} is damaged ({reason}); delete the run directory {self.path} "
            "to retrain that run (or restore the file)"
        )

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, model, which: str = "last") -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return atomic.save_model(model, self.checkpoint(which))

    def copy_checkpoint(self, source: str, which: str) -> Path:
        """``which`` becomes a byte copy of the ``source`` checkpoint (the same model
        saved at the same moment: ``best`` when the last epoch is the best one)."""
        return atomic.copy_file(self.checkpoint(source), self.checkpoint(which))

    # ------------------------------------------------------------------ resume state

    def save_resume_state(
        self, model, optimizer, history: list[dict], position: dict | None = None
    ) -> None:
        """The finished epoch's training state, then the JSON that points to it.

        The state is the trained model's weights (BatchNorm statistics included), the
        optimizer's variables (iterations, momenta, loss scale) and the history. A
        student's frozen teacher is not saved again: it is read from its checkpoint. The
        JSON is the commit point: a kill before it is written leaves the previous epoch's
        complete state in place. ``position`` (a run counted in updates,
        `lskd_tf.callbacks.Position`): where the next period starts, kept in the JSON.
        """
        import keras

        self.resume_dir.mkdir(parents=True, exist_ok=True)
        stem = f"epoch{len(history):04d}"
        weights = self.resume_dir / f"{stem}.weights.h5"
        slots = self.resume_dir / f"{stem}.optimizer.npz"
        atomic.save_weights(model, weights)
        values = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
        atomic.replace_with(slots, lambda path: np.savez(path, *values))
        state = {"epoch": len(history), "weights": weights.name, "optimizer": slots.name,
                 "history": history}  # fmt: skip
        if position is not None:
            state["position"] = position
        atomic.write_json(self.resume_dir / RESUME_STATE, state, indent=1)
        for old in self.resume_dir.glob("epoch*"):
            if old not in (weights, slots):
                old.unlink()

    def read_resume_state(self) -> dict | None:
        path = self.resume_dir / RESUME_STATE
        return json.loads(path.read_text()) if path.exists() else None

    def load_resume_state(self, state: dict, model, optimizer, train_model) -> None:
        """Put a saved state back into ``model`` and ``optimizer`` (built on ``train_model``)."""
        if not optimizer.built:
            optimizer.build(train_model.trainable_variables)
        if "optimizer" not in state:  # written by lskd_tf < 0.2: the whole training model
            train_model.load_weights(self.resume_dir / state["weights"])
            return
        model.load_weights(self.resume_dir / state["weights"])
        with np.load(self.resume_dir / state["optimizer"]) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise ValueError(
                f"the resume state in {self.resume_dir} has {len(values)} optimizer variables "
                f"but this optimizer has {len(optimizer.variables)} (another optimizer or "
                "model); delete the run directory to retrain"
            )
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)


def _number(text: str):
    """A CSV cell as the int or float it was written from (text otherwise)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def spec_record(info: dict) -> dict:
    """The spec part of a run.json dict (``TeacherSpec.record()`` / ``StudentSpec.record()``):
    ``info["spec"]``, stored once; a run recorded before that held the same keys at the
    top level of run.json, so for it the whole dict (its other keys are not spec keys)."""
    spec = info.get("spec")
    return dict(spec) if isinstance(spec, dict) else dict(info)


def as_run_dir(path: str | os.PathLike | RunDir) -> RunDir:
    return path if isinstance(path, RunDir) else RunDir(path)
