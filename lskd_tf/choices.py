"""The names a user chooses from (optimizers, schedules, smoothing conventions, ...).

Plain tuples, free of TensorFlow and Keras: `lskd_tf.flags` builds its enum flags from
them, so that `run.py` rejects a mistyped flag or value in well under a second, before
TensorFlow is imported (~5 s). The modules that implement each choice import their
tuple from here (one fact in one place).
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")
"""`lskd_tf.training.make_optimizer`."""
SCHEDULES = ("step", "cosine", "constant", "inverse_sqrt")
"""`lskd_tf.schedules.WarmupDecay`."""
SMOOTHING_CONVENTIONS = ("uniform", "others")
"""Label smoothing targets, `lskd_tf.losses`: uniform = (1-a) y + a/K; others = 1-a on
the true class, a/(K-1) elsewhere (Shen Eq. 1)."""
WEIGHT_DECAY_SCOPES = ("kernels", "all")
"""`lskd_tf.models.weight_decay`: conv/dense kernels only, or every parameter."""
MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
"""Keras dtype policies a run may use (`lskd_tf.experiment.RunEnv`)."""
