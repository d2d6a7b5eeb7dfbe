"""The names a user chooses from (optimizers, schedules, smoothing conventions, ...).

Plain tuples, free of TensorFlow and Keras: `lskd_tf.flags` builds its enum flags from
them, so that `run.py` rejects a mistyped flag or value in well under a second, before
TensorFlow is imported (~5 s). The modules that implement each choice import their
tuple from here (one fact in one place).
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")
"""`lskd_tf.training.make_optimizer`."""
SCHEDULES = ("step", "cosine", "constant", "inverse_sqrt", "linear")
"""`lskd_tf.schedules.WarmupDecay`."""
SMOOTHING_CONVENTIONS = ("uniform", "others")
"""Label smoothing targets, `lskd_tf.losses`: uniform = (1-a) y + a/K; others = 1-a on
the true class, a/(K-1) elsewhere (Shen Eq. 1)."""
WEIGHT_DECAY_SCOPES = ("kernels", "all")
"""`lskd_tf.models.weight_decay`: conv/dense kernels only, or every parameter."""
MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
"""Keras dtype policies a run may use (`lskd_tf.experiment.RunEnv`)."""
TEMPERATURE_RANGE = (0.01, 100.0)
"""The temperatures T a KD loss accepts, bounds included: where its float32 value means
something. Measured (float32 vs float64 NumPy transcription of `DistillationKL`, 256 x 100
logits ~ N(0, 1), student = teacher + N(0, 0.3)): relative error 1e-7 for T <= 1, 3e-4 at
T = 64 (the papers' largest), 1% at T = 100, 24% at T = 1000 (the softened distributions
differ from uniform by less than float32 resolves). Small T is accurate but vanishes:
T² · KL shrinks like T (1e-3 at T = 0.01 against 0.04 at T = 1) and T² underflows to 0
below ~1e-19, so at T = 1e-30 the student trained on weight decay alone."""


def validate_temperature(temperature: float) -> None:
    """Raise a one-line ValueError unless the temperature is in `TEMPERATURE_RANGE`."""
    low, high = TEMPERATURE_RANGE
    if not low <= float(temperature) <= high:  # NaN fails too
        raise ValueError(
            f"temperature must be > 0 and within [{low:g}, {high:g}] (outside it the "
            f"float32 KD loss vanishes or is rounding noise), got {temperature}"
        )
