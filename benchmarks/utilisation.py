"""How much of this CPU's float32 matmul peak the lskd_tf training steps achieve.

    python benchmarks/utilisation.py [--batch 64] [--sizes 1024,2048,3072] [--repeats 10]

1. Peak: `tf.linalg.matmul` of two n x n float32 matrices (2 n^3 FLOPs), median time over
   `repeats` calls after warm-up, for a few sizes n; the best GFLOP/s is the peak.
2. Model FLOPs: the forward pass of resnet20 and resnet56 (batch `batch`, 32x32) counted
   twice, by TensorFlow's profiler on the traced graph
   (`tf.compat.v1.profiler.profile(graph, options=ProfileOptionBuilder.float_operation())`,
   which also counts BatchNorm, ReLU and the residual adds) and analytically as the sum
   over Conv2D and Dense layers of 2 * K * K * Cin * Cout * Hout * Wout * batch.
3. Achieved FLOP/s of three workloads, bare compiled steps on in-memory tensors
   (`train_on_batch` / `predict_on_batch`), timed in alternation:

   * resnet20 training step: 3 x forward FLOPs (convention: backward = 2 x forward, for
     the gradients with respect to activations and to weights);
   * resnet56 inference forward: 1 x forward;
   * Distiller resnet56 -> resnet20 step: resnet56 forward + 3 x resnet20 forward.

Utilisation = achieved / peak. Small 3x3 convolutions on 8x8 to 32x32 maps with 16 to 64
channels are far from a large matmul's arithmetic intensity, so expect well under 100%.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved_median_ms, machine_line, median_ms  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import models  # noqa: E402


def matmul_peak_gflops(sizes: list[int], repeats: int) -> dict[int, float]:
    """GFLOP/s of an n x n float32 matmul for each n (2 n^3 FLOPs per product)."""
    rates = {}
    for n in sizes:
        a = tf.random.normal([n, n])
        b = tf.random.normal([n, n])
        # Returning one element forces the whole product without copying it to NumPy.
        product = tf.function(lambda a, b: tf.linalg.matmul(a, b)[0, 0])
        ms = median_ms(product, a, b, warmup=3, repeats=repeats)
        rates[n] = 2 * n**3 / (ms * 1e-3) / 1e9
    return rates


def profiler_forward_flops(model: keras.Model, batch: int) -> int:
    """Float operations of an inference forward pass, counted by TF's graph profiler."""
    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(
        tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32)
    ).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    tf.get_logger().setLevel(logging.ERROR)  # the profiler's v1 deprecation warnings
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def analytic_forward_flops(model: keras.Model, batch: int) -> int:
    """2 * multiply-adds of every Conv2D and Dense layer (the rest is comparatively tiny)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, hout, wout, _ = layer.output.shape
            flops += 2 * kh * kw * (cin // layer.groups) * cout * hout * wout * batch
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1] * batch
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", default="1024,2048,3072", help="matmul sizes n")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls (median)")
    args = parser.parse_args()
    print(machine_line())

    rates = matmul_peak_gflops([int(n) for n in args.sizes.split(",")], args.repeats)
    best = max(rates, key=rates.get)
    peak = rates[best]
    sizes = ", ".join(f"n={n}: {r:.0f}" for n, r in rates.items())
    print(f"float32 matmul GFLOP/s: {sizes}; peak = {peak:.0f} GFLOP/s (n={best})")

    resnet20 = models.get("resnet20", 100, weight_decay=5e-4)
    resnet20.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=lskd_tf.SmoothedCrossEntropy(0.0),
    )
    resnet56 = models.get("resnet56", 100)
    resnet56.compile()
    distiller = lskd_tf.Distiller(
        models.get("resnet56", 100), models.get("resnet20", 100, weight_decay=5e-4)
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))

    forward = {}
    for name, model in (("resnet20", resnet20), ("resnet56", resnet56)):
        profiled = profiler_forward_flops(model, args.batch)
        analytic = analytic_forward_flops(model, args.batch)
        forward[name] = profiled
        print(
            f"{name} forward, batch {args.batch}: profiler {profiled / 1e9:.3f} GFLOP, "
            f"analytic conv+dense {analytic / 1e9:.3f} GFLOP (profiler / analytic "
            f"{profiled / analytic:.3f}; {profiled / args.batch / 1e6:.1f} MFLOP/image)"
        )

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 100, args.batch).astype("int32"))
    workloads = {
        "resnet20 training step": (
            3 * forward["resnet20"],
            lambda: resnet20.train_on_batch(x, y),
        ),
        "resnet56 inference forward": (forward["resnet56"], lambda: resnet56.predict_on_batch(x)),
        "Distiller resnet56->resnet20 step": (
            forward["resnet56"] + 3 * forward["resnet20"],
            lambda: distiller.train_on_batch(x, y),
        ),
    }
    ms = interleaved_median_ms(
        {name: fn for name, (_, fn) in workloads.items()}, warmup=3, repeats=args.repeats
    )

    print(f"FLOPs from the profiler; training = 3 x forward. Batch {args.batch}.")
    print(f"{'workload':36s} {'GFLOP/step':>10s} {'ms/step':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for name, (flops, _) in workloads.items():
        achieved = flops / (ms[name] * 1e-3) / 1e9
        print(
            f"{name:36s} {flops / 1e9:10.2f} {ms[name]:8.1f} {achieved:8.1f} "
            f"{100 * achieved / peak:7.1f}%"
        )


if __name__ == "__main__":
    main()
