"""Training-step throughput of lskd_tf.models on this machine (images/s, one run).

Usage: python benchmarks/models_step_time.py [--models resnet20,shufflev2] [--batch 64]
       [--steps 10] [--jit] [--mixed]

Prints, per model, images/s of a compiled SGD step (forward, backward, update) after one
warm-up step, and the ratio to the first model listed. Numbers depend on the machine and
its load; compare models within one run only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lskd_tf import models  # noqa: E402


def images_per_second(name: str, batch: int, steps: int, jit: bool) -> float:
    spec = models.describe(name)
    size = spec.default_input_shape if spec.family == "cifar" else (64, 64, 3)
    model = models.get(name, 100, input_shape=size, weight_decay=5e-4)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, *size)).astype("float32"))
    y = tf.constant(np.arange(batch) % 100)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + sum(model.losses)
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
        return loss

    step().numpy()  # trace/compile
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet8x4,wrn_16_2,shufflev2,mobilenetv2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--mixed", action="store_true", help="mixed_float16 policy")
    args = parser.parse_args()
    if args.mixed:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    names = args.models.split(",")
    rates = {}
    for name in names:
        rates[name] = images_per_second(name, args.batch, args.steps, args.jit)
        print(f"{name:20s} {rates[name]:9.1f} images/s  x{rates[name] / rates[names[0]]:.2f}")


if __name__ == "__main__":
    main()
