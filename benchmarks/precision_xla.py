"""Step time under float32, mixed_bfloat16, mixed_float16 and XLA (`jit_compile=True`).

    python benchmarks/precision_xla.py [--batch 64] [--steps 4] [--repeats 3]

Two workloads, batch 64 of 32x32 images held in memory:

* resnet20 trained alone (cross-entropy, SGD with momentum, L2 weight decay), and
* `lskd_tf.Distiller` resnet56 -> resnet20 (teacher forward + student step).

Each runs in four configurations: the `float32` policy, the `mixed_bfloat16` and
`mixed_float16` policies (set with `keras.mixed_precision.set_dtype_policy` before the
models are built; under mixed_float16 `compile` wraps the optimizer in a
`LossScaleOptimizer`, and Keras's own `train_step`, which runs the Distiller, scales its
loss), and float32 compiled with `jit_compile=True` (XLA); the others use
`jit_compile=False`. Each configuration gets a
warm-up `fit` of one step (tracing, XLA compilation) and a probe `fit` of one step; one
slower than `--max_ms` is reported from the probe alone (float16 convolutions on a CPU can
be two orders of magnitude slower than float32). The remaining configurations' fits then
alternate and a callback times every step but the first of each fit; median ms per step
and the ratio to float32 are printed. A configuration that fails prints its one-line
error instead.

The speed of bfloat16 and float16 on a CPU depends on its instruction set (oneDNN uses
AVX512_BF16 / AMX for bfloat16 and AVX512_FP16 for float16, else slow fallbacks), so the
script first prints which of those CPU flags this machine has.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import fit_step_ms, machine_line  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import models  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")
CONFIGS = {  # name: (dtype policy, jit_compile)
    "float32": ("float32", False),
    "mixed_bfloat16": ("mixed_bfloat16", False),
    "mixed_float16": ("mixed_float16", False),
    "float32 + XLA": ("float32", True),
}


def cpu_flags() -> str:
    """Which of `CPU_FLAGS` /proc/cpuinfo lists (Linux), e.g. "avx512f yes, amx_bf16 no"."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)


def build(workload: str, policy: str, jit_compile: bool) -> keras.Model:
    """The workload's model, built and compiled under `policy`."""
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        student = models.get("resnet20", 100, weight_decay=5e-4)
        if workload == "resnet20 alone":
            student.compile(
                optimizer=optimizer,
                loss=lskd_tf.SmoothedCrossEntropy(0.0),
                jit_compile=jit_compile,
            )
            return student
        teacher = models.get("resnet56", 100)
        distiller = lskd_tf.Distiller(teacher, student, lskd_tf.DistillSpec(temperature=4.0))
        distiller.compile(optimizer=optimizer, jit_compile=jit_compile)
        return distiller
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def one_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:120] if lines else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="steps per fit (1st untimed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="subset of: %(default)s")
    parser.add_argument(
        "--max_ms", type=float, default=3000, help="time no further a config slower than this"
    )
    args = parser.parse_args()
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown --configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    tf.get_logger().setLevel(logging.ERROR)  # every model retraces its own train_function
    print(machine_line())
    print(f"CPU flags: {cpu_flags()}")

    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch * 4, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 100, args.batch * 4).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(args.batch, drop_remainder=True).repeat().prefetch(2)

    for workload in ("resnet20 alone", "Distiller resnet56->resnet20"):
        ready, probed, errors = {}, {}, {}
        for config in args.configs.split(","):
            policy, jit_compile = CONFIGS[config]
            try:
                model = build(workload, policy, jit_compile)
                # Warm-up: tracing and XLA compilation; also where most failures show.
                model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
                start = time.perf_counter()
                model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
                probed[config] = 1000 * (time.perf_counter() - start)
                if probed[config] <= args.max_ms:
                    ready[config] = model
            except Exception as error:  # one cell failing must not stop the others
                errors[config] = one_line(error)
        ms = fit_step_ms(ready, dataset, steps=args.steps, warmup=0, repeats=args.repeats)

        print(f"\n{workload}, batch {args.batch}: median ms/step, ratio to float32")
        for config in args.configs.split(","):
            if config in errors:
                print(f"  {config:16s} failed: {errors[config]}")
                continue
            note = ""
            if config not in ms:  # too slow: report the single probe step
                ms[config] = probed[config]
                note = f"  (one step only: over --max_ms {args.max_ms:.0f})"
            ratio = f"x{ms[config] / ms['float32']:.2f}" if "float32" in ms else ""
            print(f"  {config:16s} {ms[config]:8.1f} ms  {ratio:>7s}{note}")
    print("\nx < 1 is faster than float32. Compare within one run only.")


if __name__ == "__main__":
    main()
