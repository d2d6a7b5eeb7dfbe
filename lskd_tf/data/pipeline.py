"""The shared tail of every pipeline: index, shard, cache, shuffle, augment, batch.

Order (why):
1. `enumerate` first, so `with_index` gives the example's position in the split
   (stable, independent of sharding and shuffling) at no cost.
2. `shard(num_input_pipelines, input_pipeline_id)` per worker (tf.distribute).
3. `cache()` of the raw examples (before random ops, so augmentation still varies).
4. training: `shuffle(seed, reshuffle_each_iteration=True)`, then zip with a seeded
   `Dataset.random(rerandomize_each_iteration=True)` stream giving each example a
   stateless-RNG seed: order and augmentation change every epoch, the run repeats
   exactly for the same `seed`.
5. parallel `map` (deterministic order) to float32 normalized images.
6. `batch` (global batch size, or the per-replica size with an InputContext;
   drop_remainder for training), `prefetch(AUTOTUNE)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from lskd_tf.data.info import DatasetInfo

AUTOTUNE = tf.data.AUTOTUNE


def batch_size_for(global_batch_size: int, input_context: tf.distribute.InputContext | None):
    """Global batch size, or the per-replica share when an InputContext is given."""
    if int(global_batch_size) != global_batch_size or global_batch_size < 1:
        raise ValueError(f"global_batch_size must be a positive integer, got {global_batch_size!r}")
    if input_context is None:
        return int(global_batch_size)
    try:
        return input_context.get_per_replica_batch_size(int(global_batch_size))
    except ValueError:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the "
            f"{input_context.num_replicas_in_sync} replicas; choose a multiple of it"
        ) from None


def first_per_class(
    examples: tf.data.Dataset, classes: Sequence[int], per_class: int
) -> tf.data.Dataset:
    """The first `per_class` raw `(image, label)` examples of each of `classes`, in order.

    Filters on the label before any decoding and stops once every class is full, so a
    projection's sample of ImageNet's training split reads records, not images (the
    ICML 2022 script takes the first 150 training and 50 validation images of each class
    of its triple: `lskd_tf.tasks.image_classification.analysis`). A class with fewer
    examples gives all of them.
    """
    wanted = tf.constant(list(classes), tf.int64)
    limit = tf.constant(int(per_class), tf.int64)

    def count(seen, example):
        hit = tf.equal(wanted, tf.cast(example[1], tf.int64))  # which class of the triple
        keep = tf.reduce_any(hit & (seen < limit))
        return seen + tf.cast(hit & keep, tf.int64), (example, keep)

    ds = examples.filter(
        lambda image, label: tf.reduce_any(tf.equal(wanted, tf.cast(label, tf.int64)))
    )

    def kept(example, keep):
        return keep

    def example_only(example, keep):
        return example

    # Named functions, not two lambdas on one line: AutoGraph cannot tell such lambdas
    # apart and prints a warning per call.
    ds = ds.scan(tf.zeros([len(classes)], tf.int64), count)
    ds = ds.filter(kept).map(example_only)
    return ds.take(len(classes) * int(per_class))


def build(
    examples: tf.data.Dataset,
    *,
    info: DatasetInfo,
    training: bool,
    global_batch_size: int,
    train_image: Callable,
    eval_image: Callable,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    cache: bool = False,
    with_index: bool = False,
    shuffle_buffer: int = 10_000,
    ignore_errors: bool = False,
    choose_view: Callable | None = None,
) -> tf.data.Dataset:
    """Turn a dataset of raw `(image, label)` into batches of `(image, label[, index])`.

    `train_image(image, seed) / eval_image(image)` return float32 [0, 255] images at
    `info.input_shape`; they are then normalized with `info.normalize`. With
    `ignore_errors`, examples whose preprocessing fails (corrupt files) are dropped
    with a logged warning instead of stopping the epoch.

    `choose_view(seed, index) -> (augmentation_seed, view)` (training only) lets the
    teacher cache decide which stored view each example shows: the image is then
    `train_image(image, augmentation_seed)` and batches are `(image, label, index, view)`.
    """
    if choose_view is not None and not training:
        raise ValueError("choose_view applies to training pipelines only")
    batch_size = batch_size_for(global_batch_size, input_context)
    # (index, (image, label)), left as it is until the parallel map: a map here would run
    # sequentially over every example (shuffle fill: ~0.2 s per epoch on CIFAR).
    ds = examples.enumerate()
    pipeline_seed = seed
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        pipeline_seed = seed * 1_000_003 + input_context.input_pipeline_id
    if cache:
        ds = ds.cache()
    height, width, channels = info.input_shape

    def finish(image, label, index, view=None):
        image = tf.ensure_shape(image, [height, width, channels])
        image = info.normalize(image)
        label = tf.cast(label, tf.int32)
        if view is not None:
            return image, label, index, view
        return (image, label, index) if with_index else (image, label)

    def train_example(image, label, index, seed):
        if choose_view is None:
            return finish(train_image(image, seed), label, index)
        seed, view = choose_view(seed, index)
        return finish(train_image(image, seed), label, index, view)

    if training:
        buffer = max(1, min(int(shuffle_buffer), max(info.num_examples.values())))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=pipeline_seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2))
        ds = ds.map(
            lambda ex, aug_seed: train_example(ex[1][0], ex[1][1], ex[0], aug_seed),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        ds = ds.map(
            lambda index, ex: finish(eval_image(ex[0]), ex[1], index),
            num_parallel_calls=AUTOTUNE,
        )
    if ignore_errors:
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
