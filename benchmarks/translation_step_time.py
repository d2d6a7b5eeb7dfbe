"""Step time of lskd_tf's Distiller on translation batches against the student's own
training step plus the teacher's forward pass, and tokens per second.

    python benchmarks/translation_step_time.py [--teacher transformer_2x2_256]
        [--student transformer_1x1_128] [--batch 32] [--length 32] [--vocab 10000]
        [--kd_loss kl] [--kd_topk 4] [--repeats 10] [--warmup 3]

Everything runs in this one process on one synthetic batch of random token ids (already
tensors; no input pipeline): ``{"source", "target_in"}``, ``y`` and a padding mask as
``sample_weight``; sentence lengths are uniform in [length / 2, length], the rest is
padding. It times, interleaved (each repetition times every variant once; medians):

    a. the student's own training step (`tf.function`: Adam, `SmoothedCrossEntropy(0)`
       with the padding mask as sample weight),
    b. the teacher's forward pass, ``teacher(x, training=False)``,
    c. `lskd_tf.Distiller` (pure KD at T=2 with ``--kd_loss``: ``kl`` over the full
       vocabulary, or ``topk_kl`` on the teacher's ``--kd_topk`` largest logits),
       compiled: its ``train_function``, what `fit` runs once per step,
    d. the same fed cached teacher outputs (``with_teacher_logits``): no teacher forward;
       for ``kl`` the dense (B, L, V) logits, for ``topk_kl`` the sparse top-k cache
       (`lskd_tf.losses.sparse_teacher`: k ids and k logits per token, what the
       translation teacher cache stores for it),
    e. c without its top1/top5 metrics (``metrics=[]``; top-5 over the vocabulary at
       every token is not free),
    f. the student compiled alone (same loss and top1/top5 metrics): its
       ``train_function``, the step `fit` would run without distillation.

and prints c / (a + b) (the Distiller's overhead over running the two models; the issue's
target is <= 1.02), c / (f + b), e / (a + b), d / a (cached distillation against the
student alone; the top-k goal is <= 1.10), real target tokens per second of each, and
the bytes per batch of the cached teacher outputs d reads. The machine is shared, so the
numbers are indicative; the ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved_median_ms, machine_line  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf.distiller import with_teacher_logits  # noqa: E402
from lskd_tf.losses import sparse_teacher  # noqa: E402
from lskd_tf.tasks.translation import models  # noqa: E402
from lskd_tf.tasks.translation.models import BOS_ID, EOS_ID, NUM_SPECIAL  # noqa: E402


def token_batch(batch: int, length: int, vocab: int, seed: int = 0) -> tuple:
    """``(x, y, sample_weight)`` of random sentences padded to ``length`` tokens."""
    rng = np.random.default_rng(seed)

    def sentences() -> tuple[np.ndarray, np.ndarray]:
        lengths = rng.integers(max(1, length // 2), length, batch)  # tokens before EOS/BOS
        ids = rng.integers(NUM_SPECIAL, vocab, (batch, length - 1))
        ids[np.arange(length - 1)[None, :] >= lengths[:, None]] = 0
        return ids, lengths

    source_ids, source_lengths = sentences()
    target_ids, target_lengths = sentences()
    source = np.zeros((batch, length), np.int32)
    source[:, :-1] = source_ids
    source[np.arange(batch), source_lengths] = EOS_ID
    target_in = np.zeros((batch, length), np.int32)
    target_in[:, 0] = BOS_ID
    target_in[:, 1:] = target_ids
    y = np.zeros((batch, length), np.int32)
    y[:, :-1] = target_ids
    y[np.arange(batch), target_lengths] = EOS_ID
    weight = (y != 0).astype(np.float32)
    x = {"source": tf.constant(source), "target_in": tf.constant(target_in)}
    return x, tf.constant(y), tf.constant(weight)


def student_step(student: keras.Model, x, y, weight) -> Callable:
    """a: the student alone, one bare `tf.function` step."""
    optimizer = keras.optimizers.Adam(5e-4)
    loss_fn = lskd_tf.SmoothedCrossEntropy(0.0)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, student(x, training=True), weight)
        gradients = tape.gradient(loss, student.trainable_variables)
        optimizer.apply(gradients, student.trainable_variables)
        return loss

    return step


def train_function(model: keras.Model, batch: tuple) -> Callable:
    """What `fit` calls once per step, on an iterator repeating ``batch``."""
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    return lambda: model.train_function(iterator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="transformer_2x2_256")
    parser.add_argument("--student", default="transformer_1x1_128")
    parser.add_argument("--batch", type=int, default=32, help="sentences per batch")
    parser.add_argument("--length", type=int, default=32, help="padded tokens per side")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--kd_loss", default="kl", choices=["kl", "topk_kl"])
    parser.add_argument("--kd_topk", type=int, default=4, help="k of --kd_loss=topk_kl")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    print(machine_line())
    keras.utils.set_random_seed(0)
    teacher = models.get(args.teacher, args.vocab, args.length)
    x, y, weight = token_batch(args.batch, args.length, args.vocab)
    tokens = float(tf.reduce_sum(weight))
    topk = args.kd_topk if args.kd_loss == "topk_kl" else 0
    spec = lskd_tf.DistillSpec(temperature=2.0, kd_loss=args.kd_loss, kd_topk=topk)
    teacher_logits = teacher(x, training=False)
    if topk:  # the sparse cache: k ids and logits per token, never V logits
        top = tf.math.top_k(teacher_logits, topk)
        cached = sparse_teacher(top.indices, top.values)
    else:
        cached = teacher_logits
    cached_bytes = sum(t.numpy().nbytes for t in tf.nest.flatten(cached))

    def distiller(metrics=None) -> lskd_tf.Distiller:
        student = models.get(args.student, args.vocab, args.length)
        model = lskd_tf.Distiller(teacher, student, spec, metrics=metrics)
        model.compile(optimizer=keras.optimizers.Adam(5e-4))
        return model

    def compiled_student() -> keras.Model:
        student = models.get(args.student, args.vocab, args.length)
        student.compile(
            optimizer=keras.optimizers.Adam(5e-4),
            loss=lskd_tf.SmoothedCrossEntropy(0.0),
            metrics=lskd_tf.distiller.default_metrics(),
        )
        return student

    print(
        f"{args.teacher} ({teacher.count_params():,} params) -> {args.student}, batch "
        f"{args.batch} x {args.length} tokens ({int(tokens)} real target tokens), vocab "
        f"{args.vocab}, kd_loss {args.kd_loss}" + (f" (k = {topk})" if topk else "")
    )
    ms = interleaved_median_ms(
        {
            "a. student step alone": student_step(
                models.get(args.student, args.vocab, args.length), x, y, weight
            ),
            "b. teacher forward alone": tf.function(lambda: teacher(x, training=False)),
            "c. lskd_tf Distiller": train_function(distiller(), (x, y, weight)),
            "d. Distiller, cached logits": train_function(
                distiller(), (with_teacher_logits(x, cached), y, weight)
            ),
            "e. Distiller, no top1/top5": train_function(distiller([]), (x, y, weight)),
            "f. student fit step alone": train_function(compiled_student(), (x, y, weight)),
        },
        warmup=args.warmup,
        repeats=args.repeats,
    )
    for name, value in ms.items():
        print(f"  {name:30s} {value:8.1f} ms/step  {1000 * tokens / value:10,.0f} tokens/s")
    a, b, c, d, e, f = ms.values()
    print(f"  online distillation overhead  c / (a + b) {c / (a + b):6.3f}  (target <= 1.02)")
    print(f"  same, vs a fit step           c / (f + b) {c / (f + b):6.3f}")
    print(f"  without top1/top5 metrics     e / (a + b) {e / (a + b):6.3f}")
    print(f"  cached distillation           d / a       {d / a:6.3f}")
    print(f"  teacher forward share         b / c       {b / c:6.3f}")
    dense_bytes = teacher_logits.numpy().nbytes
    print(
        f"  cached teacher outputs        {cached_bytes:,} bytes per batch "
        f"({cached_bytes / dense_bytes:.4f} of the dense {dense_bytes:,})"
    )


if __name__ == "__main__":
    main()
