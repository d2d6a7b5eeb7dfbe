"""Step time of lskd_tf's Distiller against the student alone, the teacher alone and two
other Keras distillers, for resnet56 -> resnet20 and resnet32x4 -> resnet8x4.

    python benchmarks/step_time.py [--pairs resnet56:resnet20,resnet32x4:resnet8x4]
        [--batch 64] [--steps 5] [--repeats 5]

Everything runs in this one process on one synthetic batch (32x32x3 float32, 100
classes) that is already a tensor: no `fit`, no input pipeline. Per pair it times

    a. the student's own training step (`tf.function`: SGD momentum 0.9,
       `lskd_tf.SmoothedCrossEntropy(0)` + the student's L2 losses),
    b. the teacher's forward pass, ``teacher(x, training=False)`` (`tf.function`),
    c. `lskd_tf.Distiller`, compiled: its ``train_function``, the function `fit` runs,
    d. the same, fed ``(with_teacher_logits(x, teacher_logits), y)``: cached logits,
       no teacher forward,
    e. `keras.distillation.Distiller` (Keras >= 3.12) configured for the same loss:
       `LogitsDistillation(T, keras.losses.KLDivergence())` (softmax at T, times T²),
       ``student_loss_weight=0``,
    f. the Distiller class of the keras.io example "Knowledge Distillation" (Keras 3
       version, https://keras.io/examples/vision/knowledge_distillation/), reproduced
       as published, with its teacher frozen (``trainable = False`` before `compile`).

c-f run through the compiled ``model.train_function`` on an iterator that repeats the
batch, exactly what `fit` calls once per step. The timings are interleaved (each
repetition times every variant once) and the median over repetitions is reported,
after warm-up calls that trace the functions. Before timing, the script checks on one
batch that e and f compute lskd_tf's KD term, and says what they leave out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import models  # noqa: E402
from lskd_tf.distiller import with_teacher_logits  # noqa: E402

NUM_CLASSES = 100
TEMPERATURE = 4.0
SPEC = lskd_tf.DistillSpec(temperature=TEMPERATURE)  # pure KD


# --------------------------------------------------------------------------- keras.io example


class KerasIoDistiller(keras.Model):
    """The keras.io "Knowledge Distillation" example's class (Keras 3 version), as published.

    Note what the design implies: the teacher runs inside `compute_loss`, i.e. inside
    the `GradientTape` of Keras's `train_step`; `call` has no ``training`` argument,
    so the student is called in inference mode (BatchNorm uses its moving statistics
    and never updates them); `compute_loss` returns no regularization losses.
    """

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher = teacher
        self.student = student

    def compile(
        self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3
    ):
        super().compile(optimizer=optimizer, metrics=metrics)
        self.student_loss_fn = student_loss_fn
        self.distillation_loss_fn = distillation_loss_fn
        self.alpha = alpha
        self.temperature = temperature

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        distillation_loss = self.distillation_loss_fn(
            ops.softmax(teacher_pred / self.temperature, axis=1),
            ops.softmax(y_pred / self.temperature, axis=1),
        ) * (self.temperature**2)
        return self.alpha * student_loss + (1 - self.alpha) * distillation_loss

    def call(self, x):
        return self.student(x)


class KerasIoDistillerTrainingFixed(KerasIoDistiller):
    """The same class with the student called in training mode (BatchNorm batch statistics)."""

    def call(self, x, training=None):
        return self.student(x, training=training)


# --------------------------------------------------------------------------- the variants


def sgd() -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(0.05, momentum=0.9)


def top1() -> keras.metrics.Metric:
    return keras.metrics.SparseCategoricalAccuracy(name="top1")


def student_step(student: keras.Model, x, y) -> Callable:
    """a: the student alone, one bare `tf.function` step."""
    optimizer = sgd()
    loss_fn = lskd_tf.SmoothedCrossEntropy(0.0)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, student(x, training=True)) + ops.sum(student.losses)
        gradients = tape.gradient(loss, student.trainable_variables)
        optimizer.apply(gradients, student.trainable_variables)
        return loss

    return step


def teacher_forward(teacher: keras.Model, x) -> Callable:
    """b: the teacher's inference-mode forward pass."""
    return tf.function(lambda: teacher(x, training=False))


def keras_distiller(teacher: keras.Model, student: keras.Model) -> keras.Model:
    """e: `keras.distillation.Distiller` with softmax-at-T KL times T², no label term."""
    distiller = keras.distillation.Distiller(
        teacher,
        student,
        # A KLDivergence *instance*: the string "kl_divergence" would skip the softmax and T².
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.0,
    )
    distiller.compile(
        optimizer=sgd(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[top1()],
    )
    return distiller


def keras_io_distiller(teacher: keras.Model, student: keras.Model, cls=KerasIoDistiller):
    """f: the keras.io example's class, configured for pure KD (alpha = 0) at T."""
    teacher.trainable = False  # the example forgets this; without it the teacher trains too
    distiller = cls(student=student, teacher=teacher)
    distiller.compile(
        optimizer=sgd(),
        metrics=[top1()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.0,
        temperature=TEMPERATURE,
    )
    return distiller


def train_function(model: keras.Model, batch: tuple) -> Callable:
    """What `fit` calls once per step, on an iterator repeating ``batch``."""
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    return lambda: model.train_function(iterator)


# --------------------------------------------------------------------------- checks


def batchnorms(model: keras.Model) -> list:
    return [la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]


def calibrate_batchnorm(model: keras.Model, x) -> None:
    """Set every BatchNorm's moving statistics to those of batch ``x``, as training would.

    Freshly initialized networks have moving mean 0 / variance 1, so their
    inference-mode logits are huge; with calibrated statistics they look like a
    trained model's, which is what the loss check below needs.
    """
    layers = batchnorms(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def check_losses(ours: lskd_tf.Distiller, others: dict[str, keras.Model], x, y) -> None:
    """Print how the other distillers' losses relate to lskd_tf's on one batch, same weights."""
    teacher_logits = ours.teacher(x, training=False)
    student_logits = ours.student(x, training=False)
    # The loss Keras's train_step minimizes (KD + L2 here: ce_weight is 0), and its KD term.
    total = ours.compute_loss(
        with_teacher_logits(x, teacher_logits), y, student_logits, training=False
    )
    kd = ours.kd_loss_fn(teacher_logits, student_logits)
    ours.reset_metrics()  # compute_loss also updated ce_loss / kd_loss / agreement
    l2 = float(ops.sum(ours.student.losses))
    print(f"  loss on one batch: lskd_tf {float(total):.6f} = KD {float(kd):.6f} + L2 {l2:.6f}")
    for label, distiller in others.items():
        distiller.student.set_weights(ours.student.get_weights())
        value = float(distiller._compute_loss(x, y, distiller.student(x, training=False)))
        gap = abs(value - float(kd))
        verdict = "equals" if gap < 1e-4 else "DIFFERS FROM"
        print(f"  {label:34s} {value:.6f}: {verdict} lskd_tf's KD term (|diff| {gap:.1e})")
    print(
        "  None of them can add the L2 term: each overrides compute_loss without the student's\n"
        "  regularization losses, so its kernel_regularizer weight decay is silently dropped\n"
        "  (timed as is: the closest configuration)."
    )


def moving_means(model: keras.Model) -> np.ndarray:
    return np.concatenate([layer.moving_mean.numpy() for layer in batchnorms(model)])


# --------------------------------------------------------------------------- timing


def sync(outputs) -> None:
    """Wait for a step's results (TF may return before the values are read)."""
    first = tf.nest.flatten(outputs)[0]
    np.asarray(first)


def interleaved_ms(steps_fns: dict[str, Callable], steps: int, repeats: int) -> dict[str, float]:
    """Median ms/step of each function; each repetition times every function once."""
    for fn in steps_fns.values():
        for _ in range(2):  # trace and warm up
            sync(fn())
    samples: dict[str, list[float]] = {name: [] for name in steps_fns}
    for _ in range(repeats):
        for name, fn in steps_fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                outputs = fn()
            sync(outputs)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: 1000 * statistics.median(times) for name, times in samples.items()}


def run_pair(teacher_name: str, student_name: str, batch: int, steps: int, repeats: int):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, NUM_CLASSES, batch).astype("int32"))

    def new_student() -> keras.Model:
        return models.get(student_name, NUM_CLASSES, weight_decay=5e-4)

    teacher = models.get(teacher_name, NUM_CLASSES, weight_decay=5e-4)
    calibrate_batchnorm(teacher, x)
    teacher_logits = teacher(x, training=False)
    ours = lskd_tf.Distiller(teacher, new_student(), SPEC)
    ours.compile(optimizer=sgd())
    calibrate_batchnorm(ours.student, x)
    cached = lskd_tf.Distiller(teacher, new_student(), SPEC)
    cached.compile(optimizer=sgd())
    others = {
        "e. keras.distillation.Distiller": keras_distiller(teacher, new_student()),
        "f. keras.io example Distiller": keras_io_distiller(teacher, new_student()),
        "f'. same, call() passes training": keras_io_distiller(
            teacher, new_student(), KerasIoDistillerTrainingFixed
        ),
    }

    print(f"\n{teacher_name} -> {student_name}, batch {batch}")
    check_losses(ours, others, x, y)
    distillers = {"c. lskd_tf Distiller": ours, **others}
    before = {name: moving_means(d.student) for name, d in distillers.items()}
    ms = interleaved_ms(
        {
            "a. student step alone": student_step(new_student(), x, y),
            "b. teacher forward alone": teacher_forward(teacher, x),
            "c. lskd_tf Distiller": train_function(ours, (x, y)),
            "d. lskd_tf Distiller, cached logits": train_function(
                cached, (with_teacher_logits(x, teacher_logits), y)
            ),
            **{name: train_function(d, (x, y)) for name, d in others.items()},
        },
        steps,
        repeats,
    )
    for name, value in ms.items():
        print(f"  {name:36s} {value:8.1f} ms/step")
    frozen = [
        name[:2]
        for name, d in distillers.items()
        if np.allclose(before[name], moving_means(d.student))
    ]
    if frozen:
        print(f"  student BatchNorm statistics never updated (inference-mode student): {frozen}")
    a, b, c, d, e, f, f_fixed = ms.values()
    print(f"  online distillation overhead    c / (a + b) {c / (a + b):6.2f}")
    print(f"  cached distillation (<= 1.1)    d / a       {d / a:6.2f}")
    print(f"  lskd_tf vs keras.distillation   c / e       {c / e:6.2f}")
    print(f"  lskd_tf vs keras.io example     c / f       {c / f:6.2f}")
    print(f"  lskd_tf vs keras.io, fixed call c / f'      {c / f_fixed:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="resnet56:resnet20,resnet32x4:resnet8x4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # one train_function per model: retracing is expected
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for pair in args.pairs.split(","):
        teacher_name, student_name = pair.split(":")
        run_pair(teacher_name, student_name, args.batch, args.steps, args.repeats)


if __name__ == "__main__":
    main()
