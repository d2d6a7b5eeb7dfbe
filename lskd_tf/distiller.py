"""`Distiller`: a `keras.Model` that trains a student from a frozen teacher.

    loss = ce_weight * H(smooth(y), softmax(s)) + kd_weight * T² KL(softmax(t/T) ‖ softmax(s/T))
           + the student's regularization losses (L2 weight decay)

The defaults (``kd_weight=1, ce_weight=0``) are the pure KD both papers use.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

from lskd_tf.losses import DistillationKL, SmoothedCrossEntropy


def num_classes_of(model: keras.Model, role: str) -> int:
    """Number of logits a built model outputs; a one-line error if it is not built."""
    if not model.built:
        raise ValueError(
            f"the {role} model is not built; build it first (call it on a batch, or use "
            "lskd_tf.models.get, which returns built models)"
        )
    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"cannot read the number of classes of the {role} model ({error}); "
            "pass a functional or Sequential model, or call it on a batch first"
        ) from None


def unpack_distillation_batch(data):
    """Split a batch into (images, labels, cached teacher logits or None).

    Accepted forms: ``(x, y)``, ``(x, y, teacher_logits)``, or a dict with keys
    ``image``, ``label`` and optionally ``teacher_logits``.
    """
    if isinstance(data, dict):
        return data["image"], data.get("label"), data.get("teacher_logits")
    if isinstance(data, (tuple, list)):
        if len(data) == 2:
            return data[0], data[1], None
        if len(data) == 3:
            return data[0], data[1], data[2]
    raise ValueError(
        "a distillation batch must be (images, labels) or (images, labels, teacher_logits)"
    )


@keras.saving.register_keras_serializable(package="lskd_tf")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student.

    Args:
        teacher: a built Keras model that outputs logits. It is frozen here
            (``trainable = False`` before `compile`), always called with
            ``training=False`` outside the gradient tape, and never updated:
            neither its weights nor its BatchNorm statistics change.
        student: a built Keras model that outputs logits, same number of classes.
        temperature: T > 0 of the KD term.
        kd_weight: weight of the KD term.
        ce_weight: weight of the cross-entropy on the labels (0: pure KD).
        label_smoothing: smoothing of the student's own label term, in [0, 1).
        smoothing: ``"uniform"`` or ``"others"`` (see `lskd_tf.losses`).
        t2_scaling: multiply the KD term by T².

    Batches are ``(images, labels)``, or ``(images, labels, teacher_logits)`` to
    skip running the teacher (precomputed logits). Metrics reported each epoch:
    ``loss``, ``ce_loss``, ``kd_loss``, ``top1``, ``top5`` (student accuracy) and
    ``agreement`` (teacher–student top-1 agreement).

    Example:

    ```python
    distiller = lskd_tf.Distiller(teacher, student, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.fit(train_ds, validation_data=eval_ds, epochs=240)
    student.export("student", format="tf_saved_model")
    ```
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        temperature: float = 4.0,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        label_smoothing: float = 0.0,
        smoothing: str = "uniform",
        t2_scaling: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, weight in (("kd_weight", kd_weight), ("ce_weight", ce_weight)):
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        if kd_weight == 0 and ce_weight == 0:
            raise ValueError("kd_weight and ce_weight are both 0: nothing to train on")
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
        self.temperature = float(temperature)
        self.kd_weight = float(kd_weight)
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.smoothing = smoothing
        self.t2_scaling = bool(t2_scaling)
        self.ce_loss_fn = SmoothedCrossEntropy(label_smoothing, smoothing)
        self.kd_loss_fn = DistillationKL(temperature, t2_scaling)

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.kd_tracker = keras.metrics.Mean(name="kd_loss")
        self.top1_metric = keras.metrics.SparseCategoricalAccuracy(name="top1")
        self.top5_metric = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        # Both sub-models are built, so the Distiller is too (save_weights needs it).
        self.built = True

    @property
    def metrics(self) -> list:
        # Replaces the compiled metrics: everything reported is listed here so
        # Keras resets it at the start of each epoch.
        return [
            self.loss_tracker,
            self.ce_tracker,
            self.kd_tracker,
            self.top1_metric,
            self.top5_metric,
            self.agreement_tracker,
        ]

    def call(self, inputs, training: bool = False):
        return self.student(inputs, training=training)

    def teacher_logits(self, images):
        """The frozen teacher's logits, in inference mode, with no gradient."""
        return ops.stop_gradient(self.teacher(images, training=False))

    def _loss_terms(self, labels, teacher_logits, student_logits):
        """The per-replica-scaled total loss and the unscaled terms for reporting."""
        # The label term is reported even in pure KD (weight 0): it shows how well
        # the student fits the labels it never trains on.
        ce = self.ce_loss_fn(labels, student_logits) if labels is not None else ops.zeros(())
        kd = self.kd_loss_fn(teacher_logits, student_logits)
        total = self.ce_weight * ce + self.kd_weight * kd
        if self.student.losses:
            total = total + scale_loss_for_distribution(ops.sum(self.student.losses))
        return total, ce, kd

    def _update_metrics(self, labels, teacher_logits, student_logits, total, ce, kd):
        batch = ops.shape(student_logits)[0]
        # Loss objects are divided by the number of replicas (see lskd_tf.losses);
        # undo that for the reported means, as Keras's own train_step does.
        self.loss_tracker.update_state(unscale_loss_for_distribution(total), sample_weight=batch)
        self.ce_tracker.update_state(unscale_loss_for_distribution(ce), sample_weight=batch)
        self.kd_tracker.update_state(unscale_loss_for_distribution(kd), sample_weight=batch)
        if labels is not None:
            self.top1_metric.update_state(labels, student_logits)
            self.top5_metric.update_state(labels, student_logits)
        agree = ops.cast(
            ops.equal(ops.argmax(teacher_logits, -1), ops.argmax(student_logits, -1)), "float32"
        )
        self.agreement_tracker.update_state(agree)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels, teacher_logits = unpack_distillation_batch(data)
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(images)  # outside the tape: not recorded
        with tf.GradientTape() as tape:
            student_logits = self.student(images, training=True)
            total, ce, kd = self._loss_terms(labels, teacher_logits, student_logits)
            scaled = self.optimizer.scale_loss(total)  # loss scaling under mixed_float16
        trainable = self.student.trainable_variables
        gradients = tape.gradient(scaled, trainable)
        self.optimizer.apply(gradients, trainable)
        return self._update_metrics(labels, teacher_logits, student_logits, total, ce, kd)

    def test_step(self, data):
        images, labels, teacher_logits = unpack_distillation_batch(data)
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(images)
        student_logits = self.student(images, training=False)
        total, ce, kd = self._loss_terms(labels, teacher_logits, student_logits)
        return self._update_metrics(labels, teacher_logits, student_logits, total, ce, kd)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(images, dict):
            images = images["image"]
        return self.student(images, training=False)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher=keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            temperature=self.temperature,
            kd_weight=self.kd_weight,
            ce_weight=self.ce_weight,
            label_smoothing=self.label_smoothing,
            smoothing=self.smoothing,
            t2_scaling=self.t2_scaling,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> Distiller:
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        return cls(**config)
