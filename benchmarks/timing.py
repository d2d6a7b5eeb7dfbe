"""Small helpers shared by the benchmark scripts: median wall time and a machine summary.

    from benchmarks.timing import machine_line, median_ms      # from the repo root
    from timing import machine_line, median_ms                 # from a script in benchmarks/

`median_ms(fn, *args)` calls `fn(*args)` a few times untimed (tracing, autotuning, caches),
then times `repeats` further calls and returns the median in milliseconds. Each call's
result is forced to the host (`.numpy()` on every tensor in the returned structure), so
asynchronous execution cannot hide work past the end of a timed call.

`interleaved_median_ms({"a": fa, "b": fb})` does the same for several zero-argument
functions, timing them in alternation (a, b, a, b, ...) so that a change in the load of a
shared machine affects all of them alike; use it when the point is their ratio.

`fit_step_ms({"a": model_a, "b": model_b}, dataset, steps=5)` times the steps of compiled
models inside `Model.fit` (its `train_function`) with a `StepTimer` callback: each fit's
first step (new iterator, pipeline fill) is left out, the fits alternate between models.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf


def force(result: Any) -> Any:
    """Fetches every tensor of a (nested) result to the host; returns the fetched values."""
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)


def median_ms(fn: Callable[..., Any], *args: Any, warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of `fn(*args)` over `repeats` timed calls after `warmup` calls."""
    for _ in range(warmup):
        force(fn(*args))
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        force(fn(*args))
        durations.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(durations)


def interleaved_median_ms(
    fns: dict[str, Callable[[], Any]], warmup: int = 3, repeats: int = 10
) -> dict[str, float]:
    """Median milliseconds of each zero-argument function, timed in alternating rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            force(fn())
    durations: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            force(fn())
            durations[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(d) for name, d in durations.items()}


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step of `fit`, except the first step of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.durations_ms: list[float] = []
        self._start = 0.0
        self._first = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first = True

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Keras's train_function returns once the step has run (it checks the optional
        # output on the host), so the interval covers the whole step.
        if not self._first:
            self.durations_ms.append(1000.0 * (time.perf_counter() - self._start))
        self._first = False


def fit_step_ms(
    models: dict[str, keras.Model],
    dataset: tf.data.Dataset,
    steps: int = 5,
    warmup: int = 1,
    repeats: int = 3,
) -> dict[str, float]:
    """Median ms per `fit` step of each compiled model, fits alternating between models.

    `dataset` must yield at least `steps` batches per fit (e.g. a `.repeat()`-ed one).
    The first `warmup` fits of each model (tracing) and the first step of every fit are
    not timed, so each median is over `repeats * (steps - 1)` steps.
    """
    for model in models.values():
        for _ in range(warmup):
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    timers = {name: StepTimer() for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timers[name]])
    return {name: statistics.median(timer.durations_ms) for name, timer in timers.items()}


def machine_line() -> str:
    """One line: CPU cores, Python/TF/Keras versions and the current load average."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"TF {tf.__version__}, Keras {keras.__version__}, load average {load}"
    )
