"""lskd_tf: label smoothing x knowledge distillation studies in Keras 3 / TensorFlow.

The top-level names are imported lazily so that `import lskd_tf.analysis`
(NumPy only) does not pay for importing TensorFlow.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SmoothedCrossEntropy": "lskd_tf.losses",
    "DistillationKL": "lskd_tf.losses",
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
