"""Cached vs online distillation vs the student alone, through lskd_tf's real training path.

    python benchmarks/teacher_cache.py --teacher resnet56 --student resnet20 --batch 64

In one process, on the embedded dataset with the CIFAR recipe (pad-crop-flip):
1. builds an exact teacher cache (every one of the 162 views of every training image)
   and reports its throughput against the teacher's plain forward pass;
2. trains the student three ways with `lskd_tf.train_teacher` / `lskd_tf.distill_student`
   (the `fit` path studies use, real tf.data pipeline): alone (cross-entropy), distilled
   online (teacher forward every step), distilled from the cache;
3. prints the median ms per step (first step of every epoch and the whole first epoch
   excluded: tracing, pipeline start), the ratios, and after how many student epochs per
   teacher the cache pays for itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import StepTimer, machine_line, median_ms  # noqa: E402

import lskd_tf  # noqa: E402
from lskd_tf import data, models, teacher_cache  # noqa: E402
from lskd_tf.seeding import epoch_seed  # noqa: E402


class EpochStepTimer(StepTimer):
    """`StepTimer` that leaves out every step of the first epoch (tracing)."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._epochs_seen = getattr(self, "_epochs_seen", 0) + 1

    def on_train_batch_end(self, batch, logs=None):
        if self._epochs_seen > 1:
            super().on_train_batch_end(batch, logs)
        else:
            self._first = False


def median_step_ms(train) -> float:
    timer = EpochStepTimer()
    train([timer])
    return statistics.median(timer.durations_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train_per_class", type=int, default=4, help="embedded set size")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each training run")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()

    options = {"train_per_class": args.train_per_class, "test_per_class": 1}
    info = data.get_info("embedded", **options)
    workdir = Path(tempfile.mkdtemp(prefix="lskd_cache_bench_"))
    keras.utils.set_random_seed(0)
    teacher = models.get(args.teacher, info.num_classes)

    # 1. Build the exact cache; compare with the teacher's bare forward throughput.
    spec = teacher_cache.CacheSpec("exact", dtype=args.dtype)
    started = time.perf_counter()
    cache = teacher_cache.build(
        teacher, workdir / "cache", "embedded", spec=spec, options=options, verbose=False
    )
    build_s = time.perf_counter() - started
    views = cache.num_examples * cache.num_views
    forward = tf.function(lambda x: teacher(x, training=False))
    batch = tf.random.normal([256, *info.input_shape])
    forward_ms = median_ms(forward, batch, repeats=5)

    # 2. Train the student alone, online-distilled and cache-distilled, same data and seeds.
    config = lskd_tf.TrainConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=0.05,
                                 schedule="cosine", verbose=0, seed=0)  # fmt: skip

    def online(epoch: int) -> tf.data.Dataset:
        return data.make_dataset("embedded", "train", global_batch_size=args.batch,
                                 training=True, seed=epoch_seed(0, epoch), **options)  # fmt: skip

    def student() -> keras.Model:
        return models.get(args.student, info.num_classes, weight_decay=5e-4)

    def run(kind: str, callbacks) -> None:
        run_dir = workdir / kind
        if kind == "alone":
            lskd_tf.train_teacher(student(), online, run_dir=run_dir, config=config,
                                  callbacks=callbacks)  # fmt: skip
            return
        train_fn = online if kind == "online" else cache.train_fn(args.batch, seed=0)
        lskd_tf.distill_student(teacher, student(), train_fn, run_dir=run_dir, config=config,
                                distill=lskd_tf.DistillSpec(temperature=4.0),
                                callbacks=callbacks)  # fmt: skip

    kinds = ("alone", "online", "cached")
    ms = {kind: median_step_ms(lambda callbacks, k=kind: run(k, callbacks)) for kind in kinds}

    steps_per_epoch = cache.num_examples // args.batch
    saved_per_epoch_s = (ms["online"] - ms["cached"]) / 1000 * steps_per_epoch
    print(machine_line())
    print(f"{args.teacher} -> {args.student}, batch {args.batch}, embedded "
          f"{cache.num_examples} training images, {args.epochs} epochs per run")  # fmt: skip
    print(f"cache build: {cache.num_views} views x {cache.num_examples} images = {views} "
          f"teacher outputs in {build_s:.1f} s ({views / build_s:.0f} views/s; the bare "
          f"teacher forward runs {256 / forward_ms * 1000:.0f} images/s at batch 256); "
          f"{teacher_cache.describe(cache)['megabytes']} MB {args.dtype}")  # fmt: skip
    print(f"{'student alone':28s} {ms['alone']:8.1f} ms/step")
    print(f"{'online distillation':28s} {ms['online']:8.1f} ms/step")
    print(f"{'cached distillation':28s} {ms['cached']:8.1f} ms/step")
    print(f"online / alone:  {ms['online'] / ms['alone']:.2f}")
    print(f"cached / alone:  {ms['cached'] / ms['alone']:.2f}   (target <= 1.10)")
    print(f"cached / online: {ms['cached'] / ms['online']:.2f}")
    if saved_per_epoch_s > 0:
        print(f"the cache pays for itself after {build_s / saved_per_epoch_s:.0f} student "
              f"epochs per teacher (exact cache: {cache.num_views} teacher passes)")  # fmt: skip


if __name__ == "__main__":
    main()
