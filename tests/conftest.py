"""Shared test setup: one TensorFlow process, two logical CPU devices, one strategy.

TensorFlow can only be configured before it initializes, and a second
`MirroredStrategy` in one process fails (see the Keras/TF notes), so the
logical devices are created here, at import time, and the strategy is a
session-scoped fixture that every test reuses.

Hermetic: tests write only under temporary directories. lskd_tf's own cache
(``LSKD_TF_CACHE``: learned vocabularies) goes to a session directory, and the
session fails when the checkout's ``git status`` (tracked and untracked files outside
ignored build dirs) differs after the tests from before them, or when a process the
tests started is still running (Linux).
"""

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Before lskd_tf reads it: vocabularies learned by tests never land in ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="lskd_tf-test-cache-")
os.environ["LSKD_TF_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
ROOT = Path(__file__).resolve().parents[1]


BUILD_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}


def checkout_status() -> set[str] | None:
    """``git status --porcelain`` lines of the checkout, None outside a git checkout.

    Untracked and ignored files count (``runs/`` and ``tensorboard_logs/`` are ignored
    by git, yet a test writing there mixes its output with the user's studies); only
    build directories (`BUILD_DIRS`, ``*.egg-info``: bytecode, caches) are left out.
    Each line carries its file's size and mtime, so a rewritten file shows too.
    """
    command = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all",
               "--ignored=traditional"]  # fmt: skip
    try:
        found = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    lines = [
        line
        for line in found.stdout.splitlines()
        if not any(
            part in BUILD_DIRS or part.endswith(".egg-info") for part in Path(line[3:]).parts
        )
    ]
    return {f"{line} ({_stamp(ROOT / line[3:])})" for line in lines}


def _stamp(path: Path) -> str:
    """Size and mtime: a file rewritten by a test (e.g. an existing runs/ file) differs."""
    try:
        found = path.stat()
    except OSError:
        return "missing"
    return f"{found.st_size} B, mtime {found.st_mtime_ns}"


_STATUS_BEFORE = checkout_status()

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
LOGICAL_CPUS = [d.name for d in tf.config.list_logical_devices("CPU")]


@pytest.fixture(scope="session")
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over the two logical CPU devices, shared by all tests."""
    return tf.distribute.MirroredStrategy(LOGICAL_CPUS)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Keep dtype policies and seeds from leaking between tests."""
    import keras

    yield
    keras.mixed_precision.set_dtype_policy("float32")
    # free_memory=False: no gc.collect() per test. Late in the suite the heap is large
    # and a full collection cost ~1.5 s per test (measured: 0.3 s teardowns alone vs
    # 1.9 s in the full suite); Python's own generational gc still frees cycles.
    keras.backend.clear_session(free_memory=False)


def build_tiny_cnn(
    num_classes: int = 10,
    input_shape=(8, 8, 3),
    name: str = "tiny",
    seed: int = 0,
    synchronized: bool = False,
    dropout: float = 0.3,
):
    """A small conv net with BatchNorm and Dropout whose last Dense is "classifier"."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(synchronized=synchronized)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, name="classifier", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


class StopAtEpoch(keras.callbacks.Callback):
    """Simulates a kill (KeyboardInterrupt) at the start of a given epoch."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


@pytest.fixture(scope="session")
def tiny_cnn():
    """The `build_tiny_cnn` builder, for tests that need a quick model."""
    return build_tiny_cnn


def live_children() -> list[str]:
    """This process's children still running (zombies aside), as "pid command"; Linux only."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name_and_rest = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        command, _, rest = name_and_rest.rpartition(") ")
        fields = rest.split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == os.getpid():
            found.append(f"{stat.parent.name} {command.split(' (', 1)[-1]}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when the tests changed the checkout (files written outside tmp)
    or left processes running (every test stops what it starts)."""
    problems = []
    if _STATUS_BEFORE is not None:  # None: not a git checkout (e.g. an unpacked sdist)
        after = checkout_status()
        if after is not None and after != _STATUS_BEFORE:
            lines = [*sorted(after - _STATUS_BEFORE),
                     *(f"(gone) {x}" for x in _STATUS_BEFORE - after)]  # fmt: skip
            problems.append(
                f"the tests changed the checkout {ROOT} (write under tmp_path instead): "
                + "; ".join(lines[:10])
            )
    children = live_children()
    if children:
        problems.append(f"the tests left processes running: {'; '.join(children[:10])}")
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for problem in problems:
        if reporter is not None:
            reporter.write_line(f"FAILED hermetic check: {problem}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
