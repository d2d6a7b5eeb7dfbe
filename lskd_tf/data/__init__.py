"""Datasets for lskd_tf: one entry point returning ready `tf.data` pipelines + `DatasetInfo`.

    train, eval_ds, info = lskd_tf.data.load("embedded", global_batch_size=128)

Registered datasets (`available()`):
  * `embedded`: procedurally generated CIFAR-100 stand-in, no download
    (`lskd_tf.data.embedded`); options `train_per_class`, `test_per_class`, `data_seed`.
  * `cifar100`: TFDS cifar100, coarse labels as superclasses.
  * `imagenet2012`: TFDS imagenet2012 (manual download), WordNet groups as superclasses.
  * `caltech_birds2011`: TFDS CUB-200-2011.
User data: `from_tf_dataset`, `from_image_folder` (pipelines), or `ImageFolder`,
`TfDataset` registered with `register` (datasets that studies train on).

Every pipeline yields `(image float32 (B, H, W, C) normalized, label int32 (B,))`, or
`(image, label, index int64 (B,))` with `with_index=True`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from lskd_tf.data import embedded, pipeline, semantic
from lskd_tf.data.info import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataNotFoundError,
    DatasetInfo,
)
from lskd_tf.data.source import SOURCES, Source, register
from lskd_tf.data.user import ImageFolder, TfDataset, from_image_folder, from_tf_dataset
from lskd_tf.seeding import epoch_seed

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataNotFoundError",
    "DatasetInfo",
    "ImageFolder",
    "TfDataset",
    "available",
    "embedded",
    "from_image_folder",
    "from_tf_dataset",
    "get_info",
    "get_source",
    "load",
    "make_dataset",
    "register",
    "train_fn",
]


def available() -> list[str]:
    """Names accepted by `get_info` / `make_dataset` / `load`, sorted."""
    return SOURCES.available()


def get_source(name: str) -> Source:
    """The registered `Source` of a dataset: its raw examples and per-image transforms."""
    return SOURCES.get(name)


def get_info(
    name: str, *, data_dir: str | None = None, superclass_mapping=None, **options
) -> DatasetInfo:
    """The `DatasetInfo` of a registered dataset (no data is read).

    Args:
        name: one of `available()`.
        data_dir: TFDS data directory (unused for `embedded`).
        superclass_mapping: replaces the dataset's own class -> group mapping (or adds
            one, e.g. for CUB): K group ids/names, a `{class: group}` dict, or a JSON
            file path (see `lskd_tf.data.semantic.resolve_mapping`).
        **options: dataset options, e.g. `train_per_class=50` for `embedded`.
    """
    source = get_source(name)
    info = source.info(data_dir, source.resolve_options(options))
    if superclass_mapping is not None:
        ids, names = semantic.resolve_mapping(
            superclass_mapping, info.num_classes, info.class_names
        )
        info = DatasetInfo(**{**info.__dict__, "superclass": ids, "superclass_names": names})
    return info


def make_dataset(
    name: str,
    split: str,
    *,
    global_batch_size: int,
    training: bool,
    seed: int = 0,
    data_dir: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
    cache: bool = False,
    download: bool = False,
    with_index: bool = False,
    choose_view=None,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    **options,
) -> tf.data.Dataset:
    """One split of a registered dataset as a batched, prefetched pipeline.

    `training=True`: seeded shuffle reshuffled every epoch, augmentation (varies per
    epoch, reproducible from `seed`), `drop_remainder=True`. `training=False`: stored
    order, eval transform, last partial batch kept. With `input_context` the examples
    are sharded per input pipeline and batched with the per-replica batch size.
    `download=True` lets TFDS download/prepare missing data; otherwise missing data
    raises `DataNotFoundError` saying how to get it. `cache=True` caches the raw
    examples in memory (CIFAR-sized data). `choose_view` is the teacher cache's hook
    (`lskd_tf.teacher_cache`). ``classes`` with ``per_class`` keeps only the first
    ``per_class`` examples of each of those classes, in stored order, selected before
    decoding (`pipeline.first_per_class`; the projection figure's sample). See
    `lskd_tf.data.pipeline` for the order.
    """
    source = get_source(name)
    opts = source.resolve_options(options)
    split = source.check_split(split)
    info = source.info(data_dir, opts)
    if (classes is None) != (per_class is None):
        raise ValueError("pass both classes and per_class (a class sample), or neither")
    examples = source.examples(split, data_dir, download, opts)
    if classes is not None:
        if int(per_class) < 1 or any(not 0 <= int(c) < info.num_classes for c in classes):
            raise ValueError(
                f"a class sample needs per_class >= 1 and class ids in 0..{info.num_classes - 1}; "
                f"got classes={list(classes)}, per_class={per_class}"
            )
        examples = pipeline.first_per_class(examples, classes, per_class)
    return pipeline.build(
        examples,
        info=info,
        training=training,
        global_batch_size=global_batch_size,
        train_image=lambda image, s: source.train_image(image, s, opts),
        eval_image=lambda image: source.eval_image(image, opts),
        seed=seed,
        input_context=input_context,
        cache=cache,
        with_index=with_index,
        shuffle_buffer=opts["shuffle_buffer"],
        choose_view=choose_view,
    )


def train_fn(
    name: str, split: str, *, global_batch_size: int, seed: int, **kwargs
) -> Callable[..., tf.data.Dataset]:
    """The training data of every epoch of a run: ``(epoch, input_context=None) -> dataset``.

    Epoch ``e`` is ``make_dataset(name, split, training=True, seed=epoch_seed(seed, e),
    ...)``: reshuffled and re-augmented every epoch, yet the same for the same (seed,
    epoch), so runs resume exactly. Under multi-worker training `lskd_tf.distribute`
    passes each worker's ``input_context`` (its shard, batched per replica). Online
    training and the teacher cache both use this one factory. ``kwargs`` go to
    `make_dataset` (``data_dir``, ``cache``, ``download``, ``choose_view``, options).
    """

    def epoch_dataset(epoch: int, input_context=None) -> tf.data.Dataset:
        return make_dataset(
            name, split, global_batch_size=global_batch_size, training=True,
            seed=epoch_seed(seed, epoch), input_context=input_context, **kwargs,
        )  # fmt: skip

    return epoch_dataset


def load(
    name: str,
    *,
    global_batch_size: int,
    eval_batch_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
    superclass_mapping=None,
    **options,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """The entry point: `(train, eval, info)` for a registered dataset.

    `train` = `make_dataset(name, info.train_split, training=True, ...)`, `eval` =
    `make_dataset(name, info.eval_split, training=False, ...)` batched with
    `eval_batch_size` (default: `global_batch_size`). Remaining keyword arguments
    (`cache`, `download`, `with_index`, dataset options) go to both.

    Example:
        >>> train, eval_ds, info = load("embedded", global_batch_size=64, train_per_class=50)
        >>> images, labels = next(iter(train))   # (64, 32, 32, 3) float32, (64,) int32
    """
    info = get_info(
        name,
        data_dir=data_dir,
        superclass_mapping=superclass_mapping,
        **{k: v for k, v in options.items() if k not in ("cache", "download", "with_index")},
    )
    common = dict(seed=seed, data_dir=data_dir, input_context=input_context, **options)
    train = make_dataset(
        name, info.train_split, global_batch_size=global_batch_size, training=True, **common
    )
    eval_ds = make_dataset(
        name,
        info.eval_split,
        global_batch_size=eval_batch_size or global_batch_size,
        training=False,
        **common,
    )
    return train, eval_ds, info
