"""lskd_tf: label smoothing x knowledge distillation studies in Keras 3 / TensorFlow.

`import lskd_tf` registers every Keras class lskd_tf saves in `.keras` files (custom
layers, losses, the learning-rate schedule, the `Distiller`), so that
`keras.models.load_model("last.keras")` works after it; that imports TensorFlow.
The other top-level names and subpackages (`lskd_tf.models`, `lskd_tf.data`,
`lskd_tf.analysis`, ...) are imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SmoothedCrossEntropy": "lskd_tf.losses",
    "DistillationKL": "lskd_tf.losses",
    "TopKDistillationKL": "lskd_tf.losses",
    "Distiller": "lskd_tf.distiller",
    "DistillSpec": "lskd_tf.distiller",
    "register_kd_loss": "lskd_tf.losses",
    "TrainConfig": "lskd_tf.training",
    "train_teacher": "lskd_tf.training",
    "distill_student": "lskd_tf.training",
    "export_student": "lskd_tf.export",
    "CacheSpec": "lskd_tf.teacher_cache",
    "RunDir": "lskd_tf.run_dir",
}

__all__ = sorted(_LAZY) + ["__version__"]


_SUBMODULES = (
    "analysis", "data", "distribute", "experiment", "export", "losses", "models", "results",
    "run_dir", "seeding", "sweep", "tasks", "teacher_cache", "training",
)  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:  # `import lskd_tf` then `lskd_tf.models.get(...)`
        return importlib.import_module(f"lskd_tf.{name}")
    raise AttributeError(f"module 'lskd_tf' has no attribute {name!r}")


def _register_keras_objects() -> None:
    """Import the modules whose classes `.keras` checkpoints name (they register them)."""
    for module in ("lskd_tf.models", "lskd_tf.losses", "lskd_tf.schedules", "lskd_tf.distiller"):
        importlib.import_module(module)


_register_keras_objects()
