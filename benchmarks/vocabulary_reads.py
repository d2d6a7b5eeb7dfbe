"""What each read of vocabulary-sized logits costs in a translation KD step, before and
after `lskd_tf.fast_ops` and the loss changes of issue #24 item 2.

    python benchmarks/vocabulary_reads.py [--batch 32] [--length 32] [--vocab 10000]
        [--repeats 15] [--warmup 3]

One random (batch, length, vocab) float32 logits tensor (and a second one as the
teacher), a padding mask with ~3/4 real tokens; each variant is one compiled
`tf.function`, timed interleaved with its replacement (medians, `timing.py`):

    top k      ``tf.math.top_k(t, 4)``              vs `fast_ops.top_k` (blocked search)
    argmax     ``keras.ops.argmax(s, -1)``          vs `fast_ops.argmax`
    reported   `SmoothedCrossEntropy` forward       vs `ReportedCrossEntropy` (pure KD)
    topk_kl    autodiff of the fork's expression    vs `TopKDistillationKL` (gradient
               (forward + backward to the logits)      written out, `losses._topk_kl`)

Each pair is checked before timing: the same bits (top k, argmax, topk_kl's value) or
float32 rounding (reported CE, topk_kl's gradient). Prints ms per call and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved_median_ms, machine_line  # noqa: E402

from lskd_tf import fast_ops  # noqa: E402
from lskd_tf.losses import (  # noqa: E402
    ReportedCrossEntropy,
    SmoothedCrossEntropy,
    TopKDistillationKL,
    sparse_teacher,
)

TEMPERATURE, K = 2.0, 4


def autodiff_topk_kl(ids, top_logits, student, mask):
    """The fork's top-k KD as lskd_tf computed it before: one expression, autodiff."""
    log_p = tf.nn.log_softmax(top_logits / TEMPERATURE)
    scaled = student / TEMPERATURE
    at_ids = tf.gather(scaled, ids, batch_dims=len(ids.shape) - 1)
    per_token = tf.reduce_sum(tf.exp(log_p) * (log_p - at_ids), -1)
    per_token = (per_token + tf.reduce_logsumexp(scaled, -1)) * TEMPERATURE**2
    return tf.reduce_sum(per_token * mask) / tf.reduce_sum(mask)


def value_and_gradient(loss):
    def run(student):
        with tf.GradientTape() as tape:
            tape.watch(student)
            value = loss(student)
        return value, tape.gradient(value, student)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    rng = np.random.default_rng(0)
    shape = (args.batch, args.length, args.vocab)
    teacher = tf.constant(rng.normal(0, 3, shape).astype(np.float32))
    student = tf.constant(rng.normal(0, 3, shape).astype(np.float32))
    labels = tf.constant(rng.integers(0, args.vocab, shape[:2]).astype(np.int32))
    mask = tf.constant((rng.random(shape[:2]) < 0.75).astype(np.float32))
    top = tf.math.top_k(teacher, K)
    sparse = sparse_teacher(top.indices, top.values)
    trained_ce, reported_ce = SmoothedCrossEntropy(0.0), ReportedCrossEntropy(0.0)
    topk_kl = TopKDistillationKL(TEMPERATURE, K)
    for loss in (trained_ce, reported_ce, topk_kl):
        loss.hold_settings_in_variables()  # as every training run holds them

    pairs = {
        "top k (teacher, k = 4)": (
            tf.function(lambda: tf.math.top_k(teacher, K)),
            tf.function(lambda: fast_ops.top_k(teacher, K)),
        ),
        "argmax (student)": (
            tf.function(lambda: keras.ops.argmax(student, axis=-1)),
            tf.function(lambda: fast_ops.argmax(student)),
        ),
        "reported CE (pure KD)": (
            tf.function(lambda: trained_ce(labels, student, mask)),
            tf.function(lambda: reported_ce(labels, student, mask)),
        ),
        "topk_kl forward + backward": (
            tf.function(
                lambda: value_and_gradient(
                    lambda s: autodiff_topk_kl(top.indices, top.values, s, mask)
                )(student)
            ),
            tf.function(lambda: value_and_gradient(lambda s: topk_kl(sparse, s, mask))(student)),
        ),
    }
    for name, (before, after) in pairs.items():
        old, new = tf.nest.flatten(before()), tf.nest.flatten(after())
        for a, b in zip(old, new, strict=True):
            same_bits = name.startswith(("top k", "argmax")) or a.shape.rank == 0
            if same_bits and not name.startswith("reported"):
                np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
            else:
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-9)
    print(f"logits {shape}, {int(tf.reduce_sum(mask))} real tokens; before -> after (ratio)")
    for name, (before, after) in pairs.items():
        ms = interleaved_median_ms(
            {"before": before, "after": after}, warmup=args.warmup, repeats=args.repeats
        )
        print(f"  {name:28s} {ms['before']:7.2f} -> {ms['after']:6.2f} ms"
              f"  ({ms['after'] / ms['before']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
