"""What a study's runs spend outside their epochs, and their first epoch's penalty.

    python benchmarks/run_fixed_cost.py                         # the image quick study
    python benchmarks/run_fixed_cost.py --flagfile=flags/quick_translation.flags
    python benchmarks/run_fixed_cost.py --seeds=0,1        # other arguments go to run.py

Runs a study's flagfile through ``run.py``'s own code path in this process, into a
fresh temporary output directory (nothing is reused), with timers around the steps a
run takes before, between and after its epochs. Prints, per kind of run (teacher,
student), the median over runs of:

* ``run``: the whole `lskd_tf.experiment.run` call (one run, as the sweep calls it);
* ``epochs``: the sum of the epochs' ``epoch_time_s`` (history.csv: the epoch's
  training and validation, as Keras reports them);
* ``outside``: run - epochs (data pipelines, models, teacher loading, compiling,
  checkpoints, final metrics such as BLEU, run records), and the timed steps inside it;
* ``first-epoch penalty``: the first epoch's time minus the second's (tracing the
  train and test functions, filling the input pipeline);

and the study's own time outside its runs (planning, the analysis, the tables). The
issue's "fixed cost" is outside + first-epoch penalty, per run.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as run_py  # noqa: E402  (run.py: parses the flags, starts TensorFlow)

# Steps timed inside a run: a task's methods (wrapped on the task `tasks.get` returns)...
_TASK_STEPS = {
    "train data": "train_fn",
    "eval data": "eval_dataset",
    "load model": "load_model",  # the teacher, and the checkpoints final metrics read
    "decode (in final metrics)": "translate",
    "teacher cache": "cached_train_fn",
    "final metrics": "final_metrics",
}
_COUNTED = {"decode (in final metrics)"}  # also printed as calls per run
# ... and (module, attribute path) of functions and callbacks.
_STEPS = {
    "identity check": ("lskd_tf.experiment.runner", "identity.check"),
    "build model": ("lskd_tf.experiment.runner", "_build"),
    "teacher hash": ("lskd_tf.experiment.runner", "weights_sha256"),
    "make optimizer": ("lskd_tf.training", "make_optimizer"),
    "steps per epoch": ("lskd_tf.training", "steps_in"),
    "resume restore": ("lskd_tf.callbacks", "ResumeState.restore"),
    "checkpoints": ("lskd_tf.callbacks", "Checkpoints.on_epoch_end"),
    "resume save": ("lskd_tf.callbacks", "ResumeState.on_epoch_end"),
    "record epoch": ("lskd_tf.callbacks", "RunRecorder.on_epoch_end"),
    "record finish": ("lskd_tf.callbacks", "RunRecorder.finish"),
}


class Timers:
    """Seconds spent in each wrapped step, per run (a run = one `experiment.run` call)."""

    def __init__(self):
        self.current: dict[str, float] | None = None
        self.runs: list[tuple[str, float, dict[str, float]]] = []  # (run dir, seconds, steps)
        self.step_calls: dict[str, list[float]] = {}  # "train"/"test" -> seconds per call

    def wrap(self, owner, attribute: str, step: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.current is not None:
                    self.current[step] += time.perf_counter() - start
                    if step in _COUNTED:
                        self.current[f"{step}: calls"] += 1

        setattr(owner, attribute, timed)

    def wrap_run(self, sweep) -> None:
        original = sweep.run  # `lskd_tf.experiment.run`, as the sweep calls it

        @functools.wraps(original)
        def timed_run(spec, env):
            self.current, self.step_calls = defaultdict(float), {}
            start = time.perf_counter()
            try:
                return original(spec, env)
            finally:
                seconds = time.perf_counter() - start
                for kind, calls in self.step_calls.items():
                    if len(calls) > 1:
                        beyond = calls[0] - statistics.median(calls[1:])
                        self.current[f"first {kind} call beyond the median"] = beyond
                self.runs.append((str(env.run_dir(spec)), seconds, dict(self.current)))
                self.current, self.step_calls = None, {}

        sweep.run = timed_run

    def wrap_step_functions(self, keras) -> None:
        """Time every call of a run's first train and first test function (one call =
        one batch; the functions `fit` makes).

        A function's first call traces it (and builds its graph); "first train call
        beyond the median" and "first test call beyond the median" are what that costs.
        """
        for kind in ("train", "test"):
            maker_name, attribute = f"make_{kind}_function", f"{kind}_function"
            original = getattr(keras.Model, maker_name)

            def make(model, force=False, _original=original, _attribute=attribute, _kind=kind):
                made = _original(model, force)
                function = getattr(model, _attribute)
                first_of_run = self.current is not None and _kind not in self.step_calls
                if function is not None and first_of_run:
                    self.step_calls[_kind] = calls = []
                    setattr(model, _attribute, _timed_calls(function, calls))
                return made

            setattr(keras.Model, maker_name, make)

    def wrap_tasks(self, tasks) -> None:
        original = tasks.get
        wrapped: set[int] = set()

        @functools.wraps(original)
        def get(*args, **kwargs):
            task = original(*args, **kwargs)
            if id(task) not in wrapped:
                wrapped.add(id(task))
                for step, method in _TASK_STEPS.items():
                    if hasattr(task, method):  # `translate`: translation only
                        self.wrap(task, method, step)
            return task

        tasks.get = get


def _timed_calls(function, calls: list[float]):
    """``function``, appending each call's seconds to ``calls``."""

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - start)

    return timed


def _resolve(module_name: str, path: str):
    import importlib

    owner = importlib.import_module(module_name)
    *parents, attribute = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    return owner, attribute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flagfile", default=str(ROOT / "flags/quick.flags"))
    args, run_flags = parser.parse_known_args()  # the rest: --flag=value for run.py
    from timing import machine_line  # imports TensorFlow: after run.py is loaded

    with tempfile.TemporaryDirectory() as out:
        run_py.parse_flags(
            ["run.py", f"--flagfile={args.flagfile}", f"--output_dir={out}/runs",
             f"--tensorboard_dir={out}/tb", *run_flags]
        )  # fmt: skip
        import keras

        from lskd_tf import sweep, tasks
        from lskd_tf.run_dir import RunDir

        timers = Timers()
        timers.wrap_run(sweep)
        timers.wrap_tasks(tasks)
        timers.wrap_step_functions(keras)
        for step, (module_name, path) in _STEPS.items():
            timers.wrap(*_resolve(module_name, path), step)
        started = time.perf_counter()
        status = run_py.main(["run.py"])
        study_seconds = time.perf_counter() - started
        if status:
            raise SystemExit(f"the study failed (status {status})")
        by_kind: dict[str, list[dict[str, float]]] = defaultdict(list)
        for run_dir, seconds, steps in timers.runs:
            epochs = [row["epoch_time_s"] for row in RunDir(run_dir).read_history()]
            row = {"run": seconds, "epochs": sum(epochs)}
            row["outside"] = seconds - row["epochs"]
            row["first-epoch penalty"] = epochs[0] - epochs[1] if len(epochs) > 1 else 0.0
            row["fixed cost"] = row["outside"] + row["first-epoch penalty"]
            by_kind[RunDir(run_dir).read()["kind"]].append({**row, **steps})
        in_runs = sum(seconds for _, seconds, _ in timers.runs)

    print(machine_line())
    print(f"flagfile: {args.flagfile} {' '.join(run_flags)}")
    print(f"study: {study_seconds:.1f} s, of which runs {in_runs:.1f} s and the rest "
          f"(planning, analysis, tables) {study_seconds - in_runs:.1f} s")  # fmt: skip
    for kind, rows in by_kind.items():
        print(f"\n{kind}: {len(rows)} runs, median seconds per run")
        keys = ["run", "epochs", "outside", "first-epoch penalty", "fixed cost"]
        keys += sorted({k for row in rows for k in row} - set(keys))
        for key in keys:
            values = [row.get(key, 0.0) for row in rows]
            print(f"  {key:<22} {statistics.median(values):8.2f}")


if __name__ == "__main__":
    main()
