"""Learning-rate schedules of the papers' recipes: linear warmup, then step or cosine decay."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

SCHEDULES = ("step", "cosine", "constant")


@keras.saving.register_keras_serializable(package="lskd_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``base_lr``, then step, cosine or constant decay, per step.

    Epoch boundaries are converted to steps with ``steps_per_epoch`` so the
    schedule matches recipes written in epochs (RepDistiller: x0.1 at epochs
    150/180/210 of 240; ImageNet: x0.1 every 30 epochs; Chandrasegaran's
    students: 5 warmup epochs, x0.1 at 80 and 160).

    Args:
        base_lr: the learning rate after warmup.
        steps_per_epoch: optimizer steps in one epoch.
        epochs: total epochs (the cosine schedule reaches 0 at the end).
        schedule: ``"step"``, ``"cosine"`` or ``"constant"``.
        milestones: epochs at which the step schedule multiplies by ``decay_rate``.
        decay_rate: factor of each step.
        warmup_epochs: epochs of linear warmup from ``base_lr / (warmup steps)``.

    Example:

    >>> lr = WarmupDecay(0.05, steps_per_epoch=782, epochs=240, milestones=(150, 180, 210))
    >>> float(lr(782 * 150))  # 0.005
    """

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        schedule: str = "step",
        milestones: Sequence[int] = (),
        decay_rate: float = 0.1,
        warmup_epochs: float = 0,
    ):
        if schedule not in SCHEDULES:
            choices = ", ".join(SCHEDULES)
            raise ValueError(f"unknown schedule {schedule!r}; choose one of: {choices}")
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.schedule = schedule
        self.milestones = tuple(int(m) for m in milestones)
        self.decay_rate = float(decay_rate)
        self.warmup_epochs = float(warmup_epochs)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if self.schedule == "step":
            passed = sum(
                ops.cast(step >= m * self.steps_per_epoch, "float32") for m in self.milestones
            )
            decayed = self.base_lr * ops.power(self.decay_rate, passed)
        elif self.schedule == "cosine":
            total = max(self.epochs * self.steps_per_epoch - warmup_steps, 1.0)
            progress = ops.clip((step - warmup_steps) / total, 0.0, 1.0)
            decayed = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        else:
            decayed = ops.convert_to_tensor(self.base_lr, "float32")
        if warmup_steps > 0:
            warm = self.base_lr * (step + 1.0) / warmup_steps
            return ops.where(step < warmup_steps, warm, decayed)
        return decayed

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "milestones": list(self.milestones),
            "decay_rate": self.decay_rate,
            "warmup_epochs": self.warmup_epochs,
        }
