"""Learning-rate schedules of the papers' recipes: linear warmup, then a decay.

Image recipes decay by steps, a cosine, or linearly per epoch (ReActNet, the binary
student of Shen et al.); the translation recipe the papers point to
(fairseq's ``--lr-scheduler inverse_sqrt --warmup-updates 4000``) decays as the inverse
square root of the step after a warmup given in optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from lskd_tf.choices import SCHEDULES


@keras.saving.register_keras_serializable(package="lskd_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``base_lr``, then step, cosine, constant, inverse-sqrt or linear decay.

    Epoch boundaries are converted to steps with ``steps_per_epoch`` so the
    schedule matches recipes written in epochs (RepDistiller: x0.1 at epochs
    150/180/210 of 240; ImageNet: x0.1 every 30 epochs; Chandrasegaran's
    students: 5 warmup epochs, x0.1 at 80 and 160).

    Args:
        base_lr: the learning rate after warmup.
        steps_per_epoch: optimizer steps in one epoch.
        epochs: total epochs (the cosine schedule reaches 0 at the end).
        schedule: ``"step"``, ``"cosine"``, ``"constant"``, ``"inverse_sqrt"``
            (``base_lr * sqrt(W / (step + 1))`` after the W warmup steps: fairseq's
            ``inverse_sqrt``, which needs a warmup) or ``"linear"`` (see below).
        milestones: epochs at which the step schedule multiplies by ``decay_rate``.
        decay_rate: factor of each step.
        warmup_epochs: epochs of linear warmup from ``base_lr / (warmup steps)``.
        warmup_steps: the warmup in optimizer steps instead (fairseq's
            ``--warmup-updates``); at most one of the two is non-zero.
        total_steps: the steps the cosine decays over (it reaches 0 there); default
            ``epochs * steps_per_epoch``. `lskd_tf.training` passes the smaller of that
            and ``TrainConfig.max_updates`` when a run is limited in updates.

    Step ``s`` (0-based) of a warmup of W steps uses ``base_lr * (s + 1) / W``, so the
    last warmup step reaches ``base_lr`` and no step has a zero rate; fairseq's step
    ``s`` uses ``base_lr * s / W`` (from ``--warmup-init-lr`` 0), one step behind, and
    its inverse-sqrt decay ``base_lr * sqrt(W / s)`` likewise.

    ``"linear"`` is ReActNet's decay to 0 (repo liuzechun/ReActNet,
    `resnet/1_step1/train.py` and `resnet/2_step2/train.py`:
    ``LambdaLR(optimizer, lambda step: 1.0 - step / epochs)``, whose ``scheduler.step()``
    runs at the *start* of every epoch): epoch ``e`` (0-based) trains at the constant rate
    ``base_lr * (1 - (e + 1) / epochs)``, so the first epoch is already one step down
    and the last epoch trains at 0. This is the reference's schedule to the step, quirks
    included.

    Example:

    >>> lr = WarmupDecay(0.05, steps_per_epoch=782, epochs=240, milestones=(150, 180, 210))
    >>> float(lr(782 * 150))  # 0.005
    >>> mt = WarmupDecay(5e-4, steps_per_epoch=1000, epochs=50, schedule="inverse_sqrt",
    ...                  warmup_steps=4000)
    >>> round(float(mt(3999)), 7), round(float(mt(15999)), 7)  # peak, then 4x the steps: half
    (0.0005, 0.00025)
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
        warmup_steps: int = 0,
        total_steps: int | None = None,
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
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        check_warmup(schedule, self.warmup_epochs, self.warmup_steps)

    def total_warmup_steps(self) -> float:
        """The warmup in optimizer steps, however it was given."""
        return float(self.warmup_steps or self.warmup_epochs * self.steps_per_epoch)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup_steps = self.total_warmup_steps()
        if self.schedule == "step":
            passed = sum(
                ops.cast(step >= m * self.steps_per_epoch, "float32") for m in self.milestones
            )
            decayed = self.base_lr * ops.power(self.decay_rate, passed)
        elif self.schedule == "cosine":
            steps = self.total_steps or self.epochs * self.steps_per_epoch
            total = max(steps - warmup_steps, 1.0)
            progress = ops.clip((step - warmup_steps) / total, 0.0, 1.0)
            decayed = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        elif self.schedule == "linear":
            epoch = ops.floor(step / self.steps_per_epoch)
            decayed = self.base_lr * ops.maximum(1.0 - (epoch + 1.0) / self.epochs, 0.0)
        elif self.schedule == "inverse_sqrt":
            decayed = self.base_lr * ops.sqrt(warmup_steps / (step + 1.0))
        else:
            decayed = ops.convert_to_tensor(self.base_lr, "float32")
        if warmup_steps > 0:
            warm = self.base_lr * (step + 1.0) / warmup_steps
            return ops.where(step < warmup_steps, warm, decayed)
        return decayed

    def get_config(self) -> dict:
        config = {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "milestones": list(self.milestones),
            "decay_rate": self.decay_rate,
            "warmup_epochs": self.warmup_epochs,
            "warmup_steps": self.warmup_steps,
        }
        if self.total_steps is not None:  # older checkpoints' configs stay as they were
            config["total_steps"] = self.total_steps
        return config


def check_warmup(schedule: str, warmup_epochs: float, warmup_steps: int) -> None:
    """Raise a one-line ValueError for a warmup the schedule cannot use."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_epochs > 0 and warmup_steps > 0:
        raise ValueError(
            f"give the warmup once: warmup_epochs={warmup_epochs:g} and "
            f"warmup_steps={warmup_steps} are both set; set one of them to 0"
        )
    if schedule == "inverse_sqrt" and not (warmup_epochs > 0 or warmup_steps > 0):
        raise ValueError(
            "the inverse_sqrt schedule decays from the end of its warmup: set warmup_steps "
            "(fairseq's --warmup-updates, e.g. 4000) or warmup_epochs"
        )
