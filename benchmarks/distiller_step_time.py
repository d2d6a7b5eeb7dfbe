"""Step time of a Distiller (teacher forward + student step) vs the student trained alone.

    python benchmarks/distiller_step_time.py --teacher resnet56 --student resnet20 --batch 64

Both measured in this one process on the same data, after warm-up steps (tracing), as
the median of several timed repetitions; prints milliseconds per step and the ratio.
The teacher's extra cost is one inference-mode forward pass per batch, so the ratio
should be about 1 + (teacher forward) / (student forward + backward).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import models  # noqa: E402


def time_steps(model: keras.Model, dataset: tf.data.Dataset, steps: int, repeats: int) -> float:
    """Median seconds per step of `fit` over `steps` batches, after one warm-up epoch."""
    model.fit(dataset.take(3), epochs=1, verbose=0, shuffle=False)  # trace and warm up
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.fit(dataset.take(steps), epochs=1, verbose=0, shuffle=False)
        durations.append((time.perf_counter() - started) / steps)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch * 4, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 100, args.batch * 4).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch).repeat()

    student_alone = models.get(args.student, 100, weight_decay=5e-4)
    student_alone.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=lskd_tf.SmoothedCrossEntropy(0.0),
    )
    alone = time_steps(student_alone, dataset, args.steps, args.repeats)

    teacher = models.get(args.teacher, 100)
    student = models.get(args.student, 100, weight_decay=5e-4)
    distiller = lskd_tf.Distiller(teacher, student, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distilled = time_steps(distiller, dataset, args.steps, args.repeats)

    print(f"batch {args.batch}, 32x32 inputs, {os.cpu_count()} CPU cores")
    print(f"{args.student} alone:                      {1000 * alone:8.1f} ms/step")
    print(f"Distiller {args.teacher} -> {args.student}: {1000 * distilled:8.1f} ms/step")
    print(f"ratio distiller / student alone:        {distilled / alone:8.2f}")


if __name__ == "__main__":
    main()
