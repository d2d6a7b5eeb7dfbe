"""Data-parallel scaling: 1 vs 2 replicas of `tf.distribute.MirroredStrategy` on the CPU.

    python benchmarks/scaling.py [--batch 64] [--steps 5] [--repeats 5]

The CPU is split into two *logical* devices before TensorFlow initializes, then the same
work runs under `MirroredStrategy(["/cpu:0"])` and `MirroredStrategy(["/cpu:0", "/cpu:1"])`
with the same global batch (each of the 2 replicas gets half of it):

* a resnet20 trained alone (`compile` + `fit`, cross-entropy, SGD with momentum), and
* `lskd_tf.Distiller` resnet56 -> resnet20 (teacher forward + student step).

The models are built and compiled under each strategy's scope. After one warm-up `fit`
each (tracing), `fit(dataset, steps_per_epoch=steps)` runs `repeats` times per
configuration, the four configurations in alternation, and a callback times every step
of the compiled `train_function` except the first of each fit (a new distributed
iterator and a pipeline to fill: a fixed cost per `fit` call, large under
MirroredStrategy). Time per step = median over those steps. Speed-up = t(1 device) /
t(2 devices); scaling efficiency = speed-up / 2.

Two logical CPU devices are a functional test of the distributed code path, not extra
hardware: both replicas run on the same physical cores (and the same thread pools), so a
speed-up near 1x (or below, from the all-reduce and the smaller per-replica convolutions)
is what to expect here. On GPUs each replica has a device of its own.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import fit_step_ms, machine_line  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import models  # noqa: E402


def split_cpu_in_two() -> None:
    """Two logical CPU devices; must run before TensorFlow initializes its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def make_dataset(batch: int) -> tf.data.Dataset:
    """Global batches of random 32x32 images and CIFAR-100 labels, repeated forever."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch * 4, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 100, batch * 4).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return dataset.batch(batch, drop_remainder=True).repeat().prefetch(2)


def build_models(strategy: tf.distribute.Strategy) -> dict[str, keras.Model]:
    """The student trained alone and the Distiller, built and compiled under `strategy`."""
    with strategy.scope():
        alone = models.get("resnet20", 100, weight_decay=5e-4)
        alone.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=lskd_tf.SmoothedCrossEntropy(0.0),
        )
        teacher = models.get("resnet56", 100)
        student = models.get("resnet20", 100, weight_decay=5e-4)
        distiller = lskd_tf.Distiller(teacher, student, lskd_tf.DistillSpec(temperature=4.0))
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return {"resnet20 alone": alone, "Distiller resnet56->resnet20": distiller}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--steps", type=int, default=6, help="steps per fit (1st untimed)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per configuration")
    args = parser.parse_args()
    split_cpu_in_two()

    strategies = {
        1: tf.distribute.MirroredStrategy(["/cpu:0"]),
        2: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    dataset = make_dataset(args.batch)
    built = {}
    for devices, strategy in strategies.items():
        for name, model in build_models(strategy).items():
            built[f"{name} on {devices}"] = model
    ms = fit_step_ms(built, dataset, steps=args.steps, repeats=args.repeats)

    print(machine_line())
    print(
        f"global batch {args.batch} ({args.batch // 2} per replica on 2 devices), 32x32 "
        f"inputs; median over {args.repeats} fits x {args.steps - 1} steps, warm-up excluded"
    )
    print(
        f"{'ms/step':30s} {'1 device':>9s} {'2 devices':>10s} {'speed-up':>9s} {'efficiency':>11s}"
    )
    for name in ("resnet20 alone", "Distiller resnet56->resnet20"):
        one, two = ms[f"{name} on 1"], ms[f"{name} on 2"]
        speedup = one / two
        print(f"{name:30s} {one:9.1f} {two:10.1f} {speedup:8.2f}x {100 * speedup / 2:10.0f}%")
    print(
        "Both logical devices share this machine's "
        f"{os.cpu_count()} physical cores and thread pools, so ~1x (not 2x) is expected "
        "here; on GPUs each replica has its own device and the speed-up approaches 2x."
    )


if __name__ == "__main__":
    main()
