"""`Distiller`: a `keras.Model` that trains a student from a frozen teacher.

    loss = ce_weight * H(smooth(y), softmax(s)) + kd_weight * KD(t, s)
           + the student's regularization losses (L2 weight decay)

KD is the loss named by `DistillSpec.kd_loss` (default ``"kl"``:
T² KL(softmax(t/T) ‖ softmax(s/T)); ``"topk_kl"``: the same on the teacher's
``kd_topk`` largest logits, as the papers' fairseq fork computes it; `lskd_tf.losses`). The defaults
(``kd_weight=1, ce_weight=0``) are the pure KD both papers use.

The `Distiller` changes only what Keras lets a model change: `compute_loss` and
`compute_metrics` (as `keras.distillation.Distiller` does); Keras's own
`train_step`/`test_step` run it, so `fit`, `evaluate`, `predict`, `tf.distribute`,
mixed-precision loss scaling and XLA behave as for any Keras model.

Batches are Keras's ``(x, y)`` or ``(x, y, sample_weight)``:

* ``x``: the student's (and teacher's) inputs, or ``with_teacher_logits(inputs,
  logits)`` to distill from precomputed teacher logits (the teacher is then not run);
  for a top-k KD loss the logits may be `lskd_tf.losses.sparse_teacher(ids, logits)`,
  the teacher's k largest per position, never expanded to the vocabulary;
* ``y``: class ids ``(batch,)``, or token ids ``(batch, length)`` for sequences;
* ``sample_weight``: optional, e.g. a padding mask ``(batch, length)``: every loss and
  metric is then the mean over the weighted positions (padding never counts).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

from lskd_tf import fast_ops
from lskd_tf.distribute import global_weight_sum
from lskd_tf.losses import (
    REDUCTION,
    ReportedCrossEntropy,
    SmoothedCrossEntropy,
    get_kd_loss,
    is_sparse_teacher,
    sparse_teacher,
    teacher_top1,
    teacher_topk,
    validate_kd_loss,
    validate_smoothing,
    validate_temperature,
)
from lskd_tf.settings import ADDED_LATER, without_later_defaults

INPUTS = "inputs"
TEACHER_LOGITS = "teacher_logits"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillSpec:
    """Everything that defines the distillation objective, passed whole to the `Distiller`.

    Args:
        temperature: T > 0 of the KD term.
        kd_weight: weight of the KD term (>= 0).
        ce_weight: weight of the cross-entropy on the labels (>= 0; 0: pure KD).
        label_smoothing: smoothing of the student's own label term, in [0, 1).
        smoothing: ``"uniform"`` or ``"others"`` (see `lskd_tf.losses.smooth_targets`).
        t2_scaling: multiply the KD term by T² (Hinton 2015).
        kd_loss: the KD loss's registered name (`lskd_tf.losses.kd_losses()`).
        sequence_level: train on the teacher's own outputs instead of the labels
            (sequence-level KD, Kim & Rush 2016: for translation, the teacher's beam
            search translations of the training sources). The label term (``ce_weight``)
            then fits them and the KD term (``kd_weight``) is word-level KD on them; the
            task builds the data (`lskd_tf.tasks.Task.sequence_level_train_fn`).
        kd_topk: the k of a KD loss that reads the teacher's k largest logits per position
            (``kd_loss="topk_kl"``; the papers' fairseq fork keeps 4); 0 for the others.
            A teacher cache then stores exactly those k ids and logits.

    Run records, TensorBoard hparams and flagfiles list these fields by iterating
    over them (`dataclasses.fields`), so a new field is one edit here. A field marked
    `lskd_tf.settings.ADDED_LATER` is left out of `to_dict` at its default, so runs
    recorded before it existed keep their identity.

    Example:

    >>> DistillSpec(temperature=4.0, kd_weight=0.9, ce_weight=0.1)   # RepDistiller's KD
    """

    temperature: float = 4.0
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    label_smoothing: float = 0.0
    smoothing: str = "uniform"
    t2_scaling: bool = True
    kd_loss: str = "kl"
    sequence_level: bool = dataclasses.field(default=False, metadata=ADDED_LATER)
    kd_topk: int = dataclasses.field(default=0, metadata=ADDED_LATER)

    def __post_init__(self):
        validate_temperature(self.temperature)
        for name in ("kd_weight", "ce_weight"):
            weight = getattr(self, name)
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{name} must be >= 0 and finite, got {weight}")
        if self.kd_weight == 0 and self.ce_weight == 0:
            raise ValueError("kd_weight and ce_weight are both 0: nothing to train on")
        validate_smoothing(self.label_smoothing, self.smoothing, name="label_smoothing")
        validate_kd_loss(self.kd_loss, topk=self.kd_topk)

    def to_dict(self) -> dict:
        return without_later_defaults(self, dataclasses.asdict(self))


def with_teacher_logits(inputs, teacher_logits) -> dict:
    """The ``x`` of a batch that carries precomputed teacher logits: dense (..., V), or
    `lskd_tf.losses.sparse_teacher` (the top k) for a top-k KD loss."""
    return {INPUTS: inputs, TEACHER_LOGITS: teacher_logits}


def split_teacher_logits(x):
    """``(inputs, teacher_logits or None)`` of a batch's ``x``."""
    if isinstance(x, dict) and TEACHER_LOGITS in x:
        return x[INPUTS], x[TEACHER_LOGITS]
    return x, None


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_for_replicas(value):
    """``value / num_replicas``: what Keras Loss objects do, for a hand-summed loss."""
    replicas = _num_replicas()
    return value if replicas == 1 else ops.multiply(value, ops.cast(1.0 / replicas, value.dtype))


def unscale_for_replicas(value):
    """Undo `scale_for_replicas` for reporting (as Keras's `train_step` does for ``loss``)."""
    replicas = _num_replicas()
    return value if replicas == 1 else ops.multiply(value, ops.cast(replicas, value.dtype))


def num_classes_of(model: keras.Model, role: str) -> int:
    """Number of logits a built model outputs (the last axis); a one-line error if unknown."""
    if not model.built:
        raise ValueError(
            f"the {role} model is not built; build it first (call it on a batch, or use "
            "lskd_tf.models.get, which returns built models)"
        )
    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"cannot read the number of classes of the {role} model ({error}); "
            "pass a functional or Sequential model, or call it on a batch first"
        ) from None


def top1_matches(y_true, y_pred):
    """1.0 where the largest logit is at the label, else 0.0 (labels (...) or (..., 1)).

    ``keras.metrics.sparse_categorical_accuracy`` with `fast_ops.argmax` (the same ids;
    Keras's own argmax adds passes over vocabulary-sized logits) and the labels compared
    as integers (Keras casts them to the logits' dtype, which float16 cannot hold exactly
    above 2,048 classes).
    """
    labels, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    if len(labels.shape) == len(y_pred.shape) and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, -1)
    return ops.cast(ops.equal(ops.cast(labels, "int32"), fast_ops.argmax(y_pred)), "float32")


@keras.saving.register_keras_serializable(package="lskd_tf")
class Top1Accuracy(keras.metrics.MeanMetricWrapper):
    """Top-1 accuracy of logits against integer labels (`top1_matches`, averaged).

    Example:

    >>> metric = Top1Accuracy()
    >>> metric.update_state([2, 0], [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    >>> float(metric.result())
    1.0
    """

    def __init__(self, name: str = "top1", dtype=None):
        super().__init__(fn=top1_matches, name=name, dtype=dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


def default_metrics() -> list[keras.metrics.Metric]:
    """Top-1 and top-5 accuracy of the student's logits (per example or per token)."""
    return [
        Top1Accuracy(),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
    ]


@keras.saving.register_keras_serializable(package="lskd_tf")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student.

    Args:
        teacher: a built Keras model that outputs logits. It is frozen here
            (``trainable = False`` before `compile`), always called with
            ``training=False``, its output is a constant of the step
            (``stop_gradient``), and it is never updated: neither its weights nor
            its BatchNorm statistics change.
        student: a built Keras model that outputs logits over the same classes.
        distill: the objective (`DistillSpec`); default ``DistillSpec()``.
        metrics: Keras metrics of ``(labels, student_logits, sample_weight)``
            (default: ``top1``, ``top5``). Always reported besides: ``loss``,
            ``ce_loss`` (even in pure KD: how well the student fits the labels it
            never trains on), ``kd_loss`` and ``agreement`` (teacher–student top-1).

    Example:

    ```python
    distiller = lskd_tf.Distiller(teacher, student, lskd_tf.DistillSpec(temperature=4.0))
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.fit(train_ds, validation_data=eval_ds, epochs=240)
    student.export("student", format="tf_saved_model")
    ```
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        distill: DistillSpec | None = None,
        *,
        metrics: list[keras.metrics.Metric] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.distill = distill if distill is not None else DistillSpec()
        if not isinstance(self.distill, DistillSpec):
            raise ValueError(f"distill must be a DistillSpec, got {type(self.distill).__name__}")
        teacher_classes = num_classes_of(teacher, "teacher")
        student_classes = num_classes_of(student, "student")
        if teacher_classes != student_classes:
            raise ValueError(
                f"teacher outputs {teacher_classes} classes but student outputs "
                f"{student_classes}; they must match"
            )
        self.teacher = teacher
        self.student = student
        # Frozen *before* compile: Keras captures trainable state at compile time.
        self.teacher.trainable = False
        self.num_classes = student_classes
        # Pure KD reports the cross-entropy without training on it: the same value from
        # fewer reads of the logits (ReportedCrossEntropy), and no gradient to skip.
        cross_entropy = SmoothedCrossEntropy if self.distill.ce_weight else ReportedCrossEntropy
        self.ce_loss_fn = cross_entropy(
            self.distill.label_smoothing, self.distill.smoothing, reduction=REDUCTION
        )
        if self.distill.kd_topk >= student_classes:
            raise ValueError(
                f"kd_topk={self.distill.kd_topk} must be < the {student_classes} classes "
                "the models output"
            )
        self.kd_loss_fn = get_kd_loss(
            self.distill.kd_loss,
            temperature=self.distill.temperature,
            t2_scaling=self.distill.t2_scaling,
            topk=self.distill.kd_topk,
        )
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.kd_tracker = keras.metrics.Mean(name="kd_loss")
        self.reported_metrics = list(default_metrics() if metrics is None else metrics)
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        # Both sub-models are built, so the Distiller is too (save_weights needs it).
        self.built = True

    def call(self, inputs, training: bool = False):
        inputs, _ = split_teacher_logits(inputs)
        return self.student(inputs, training=training)

    def teacher_logits(self, inputs):
        """The frozen teacher's logits, in inference mode, as a constant of the step."""
        return ops.stop_gradient(self.teacher(inputs, training=False))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss of a step; also updates ``ce_loss``, ``kd_loss`` and ``agreement``.

        Those three are measured here because they need the teacher's logits, which
        exist only in this call (each replica of a `tf.distribute` strategy runs its
        own, so nothing may be kept on ``self`` for `compute_metrics`).
        """
        inputs, teacher_logits = split_teacher_logits(x)
        if y_pred is None:
            y_pred = self.student(inputs, training=training)
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(inputs)
        if self.distill.kd_topk and not is_sparse_teacher(teacher_logits):
            # Dense logits read once (the teacher's top k, as a top-k cache holds them):
            # the KD loss and agreement then read k entries per position, not V.
            teacher_logits = sparse_teacher(*teacher_topk(teacher_logits, self.distill.kd_topk))
        ce = ops.zeros(()) if y is None else self.ce_loss_fn(y, y_pred, sample_weight)
        kd = self.kd_loss_fn(teacher_logits, y_pred, sample_weight)
        # A term of weight 0 is reported, not differentiated: adding 0 * term changes no
        # value but would back-propagate through it (over the whole vocabulary for
        # translation). Leaving it out gives the same bits (x + 0.0 == x).
        terms = [(w, term) for w, term in ((self.distill.ce_weight, ce),
                                           (self.distill.kd_weight, kd)) if w != 0]  # fmt: skip
        total = terms[0][0] * terms[0][1]
        for weight, term in terms[1:]:
            total = total + weight * term
        if self.student.losses:  # L2 weight decay, summed once per replica
            total = total + scale_for_replicas(ops.sum(self.student.losses))
        # Each step's mean counts with its number of examples (weighted positions, e.g.
        # tokens, when there are sample weights), so the epoch's value is the mean over
        # all of them. Loss objects are divided by the number of replicas (see
        # lskd_tf.losses); undo that for reporting, as Keras's train_step does for "loss".
        # With weights, each replica's value is its share of the global mean, so every
        # replica counts the global number of positions / N.
        if sample_weight is None:
            count = ops.shape(y_pred)[0]
        else:
            count = global_weight_sum(sample_weight) / _num_replicas()
        self.ce_tracker.update_state(unscale_for_replicas(ce), sample_weight=count)
        self.kd_tracker.update_state(unscale_for_replicas(kd), sample_weight=count)
        agree = ops.cast(
            ops.equal(teacher_top1(teacher_logits), fast_ops.argmax(y_pred)),
            "float32",
        )
        self.agreement_tracker.update_state(agree, sample_weight=sample_weight)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if y is not None:
            for metric in self.reported_metrics:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher=keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            distill=self.distill.to_dict(),
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> Distiller:
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["distill"] = DistillSpec(**config["distill"])
        return cls(**config)
