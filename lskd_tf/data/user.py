"""User data: any `tf.data.Dataset` of (image, label), or a folder of class sub-folders.

As pipelines (`from_tf_dataset`, `from_image_folder`), or registered as datasets that
studies train on (`TfDataset`, `ImageFolder` with `lskd_tf.data.register`), whose runs
record what identifies the data (a folder's listing, a dataset's user-given fingerprint).

Augmentation recipes (`augment=`):
  * `"pad_crop"`: CIFAR recipe (4-px pad + random crop + flip); eval: none.
  * `"inception"`: random-resized crop (area 8%..100%) + flip; eval: resize
    to 256/224 of the size, center crop.
  * `"cub"`: the CUB recipe (crop scale (0.2, 1), flip, rotation, grayscale, jitter);
    eval as "inception".
  * `"none"`: resize to `image_size` for both.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lskd_tf.data import augment as aug
from lskd_tf.data import fingerprint, pipeline, semantic
from lskd_tf.data.info import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from lskd_tf.data.source import Source

logger = logging.getLogger(__name__)

AUGMENTATIONS = ("pad_crop", "inception", "cub", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _recipes(augment_name: str, size: tuple[int, int]):
    """(train_image(image, seed), eval_image(image)) for decoded uint8 images."""
    if augment_name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augment {augment_name!r}; choose one of: {', '.join(AUGMENTATIONS)}"
        )
    height, width = size

    def resize(image):
        return tf.image.resize(tf.cast(image, tf.float32), [height, width])

    def center(image):
        if height != width:
            return resize(image)
        return aug.resize_center_crop(tf.cast(image, tf.float32), size=height)

    if augment_name == "pad_crop":
        return (lambda image, seed: aug.pad_crop_flip(resize(image), seed)), resize
    if augment_name == "inception":
        return (
            lambda image, seed: tf.image.resize(
                aug.random_resized_crop_flip(image, seed, size=height), [height, width]
            ),
            center,
        )
    if augment_name == "cub":
        return (
            lambda image, seed: tf.image.resize(
                aug.cub_train(image, seed, size=height), [height, width]
            ),
            center,
        )
    return (lambda image, seed: resize(image)), resize


def _info(
    name,
    num_classes,
    class_names,
    superclass_mapping,
    image_size,
    channels,
    mean,
    std,
    num_examples,
) -> DatasetInfo:
    class_names = (
        list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    )
    superclass, superclass_names = None, None
    if superclass_mapping is not None:
        superclass, superclass_names = semantic.resolve_mapping(
            superclass_mapping, num_classes, class_names
        )
    return DatasetInfo(
        name=name,
        num_classes=int(num_classes),
        class_names=class_names,
        superclass=superclass,
        superclass_names=superclass_names,
        input_shape=(int(image_size[0]), int(image_size[1]), int(channels)),
        mean=tuple(mean),
        std=tuple(std),
        num_examples=num_examples,
        train_split="train",
        eval_split="eval",
    )


def _as_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
    spec = dataset.element_spec
    if isinstance(spec, dict):
        if not {"image", "label"} <= set(spec):
            raise ValueError(
                f"dataset dict elements need keys 'image' and 'label', got {sorted(spec)}"
            )
        return dataset.map(lambda ex: (ex["image"], ex["label"]))
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "dataset must yield (image, label) pairs or dicts with 'image' and 'label'; "
            f"got element_spec {spec}"
        )
    return dataset


def _image_shape(image_spec, image_size) -> tuple[tuple[int, int], int]:
    """``((H, W), channels)`` of a dataset's images: ``image_size`` or their static
    shape (a one-line ValueError when they have none), and 3 channels when unknown."""
    if image_size is None:
        if image_spec.shape.rank != 3 or None in image_spec.shape[:2]:
            raise ValueError(
                f"images have no static (H, W) (spec {image_spec.shape}); pass image_size=(H, W)"
            )
        image_size = image_spec.shape[:2]
    known = image_spec.shape.rank == 3 and image_spec.shape[-1]
    return tuple(int(x) for x in image_size), int(image_spec.shape[-1]) if known else 3


def _read_files(files, labels) -> tf.data.Dataset:
    """``(encoded image bytes, label int64)`` of image files and their labels."""
    raw = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, np.int64)))
    return raw.map(lambda f, y: (tf.io.read_file(f), y))


def from_tf_dataset(
    dataset: tf.data.Dataset,
    *,
    num_classes: int,
    global_batch_size: int,
    training: bool,
    image_size: tuple[int, int] | None = None,
    augment: str = "none",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    class_names: Sequence[str] | None = None,
    superclass_mapping=None,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    cache: bool = False,
    with_index: bool = False,
    shuffle_buffer: int = 10_000,
    name: str = "user",
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Wrap an unbatched dataset of `(image, label)` into a lskd_tf pipeline.

    Args:
        dataset: yields `(image, label)` or `{"image", "label"}`; images uint8 (or any
            numeric dtype in [0, 255]) of shape (H, W, C); labels integer in [0, K).
        num_classes: K.
        image_size: (H, W) to resize to; default: the dataset's static image shape.
        augment: one of `AUGMENTATIONS` (see the module docstring), used if training.
        mean, std: normalization in [0, 1] pixel units (default: ImageNet's).
        superclass_mapping: optional class -> group mapping (`semantic.resolve_mapping`).
        Other arguments as `lskd_tf.data.make_dataset`.

    Returns:
        `(pipeline, info)`; the pipeline yields `(image float32, label int32[, index])`.

    Example:
        >>> ds = tf.data.Dataset.from_tensor_slices((images_uint8, labels))
        >>> train, info = from_tf_dataset(ds, num_classes=10, global_batch_size=64,
        ...                               training=True, augment="pad_crop")
    """
    pairs = _as_pairs(dataset)
    image_size, channels = _image_shape(pairs.element_spec[0], image_size)
    cardinality = int(pairs.cardinality())
    size = cardinality if cardinality >= 0 else int(shuffle_buffer)
    info = _info(
        name,
        num_classes,
        class_names,
        superclass_mapping,
        image_size,
        channels,
        mean,
        std,
        {"train" if training else "eval": size},
    )
    train_image, eval_image = _recipes(augment, tuple(image_size))
    ds = pipeline.build(
        pairs,
        info=info,
        training=training,
        global_batch_size=global_batch_size,
        train_image=train_image,
        eval_image=eval_image,
        seed=seed,
        input_context=input_context,
        cache=cache,
        with_index=with_index,
        shuffle_buffer=shuffle_buffer,
    )
    return ds, info


def list_image_folder(path: str) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, class names) of `path/<class>/<image>`, classes sorted by name."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"image folder {os.fspath(path)!r} does not exist; expected one sub-folder per class"
        )
    class_names = sorted(e.name for e in os.scandir(path) if e.is_dir())
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        folder = os.path.join(path, class_name)
        for file in sorted(os.listdir(folder)):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, file))
                labels.append(label)
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in class sub-folders of "
            f"{os.fspath(path)!r}; expected {os.fspath(path)}/<class name>/<image>"
        )
    return files, labels, class_names


def find_unreadable(files: Sequence[str]) -> list[str]:
    """The files that TensorFlow cannot decode (one parallel pass over all of them)."""
    ds = tf.data.Dataset.from_tensor_slices(list(files)).enumerate()
    ds = ds.map(
        lambda i, f: (i, tf.shape(aug.decode_image(tf.io.read_file(f)))),
        num_parallel_calls=pipeline.AUTOTUNE,
    )
    readable = {int(i) for i, _ in ds.ignore_errors().as_numpy_iterator()}
    return [f for i, f in enumerate(files) if i not in readable]


def _split_eval(files, labels, fraction: float, split_seed: int):
    """Hold out `fraction` of each class (a seeded choice) as the eval split."""
    rng = np.random.default_rng(split_seed)
    labels_arr = np.asarray(labels)
    is_eval = np.zeros(len(files), bool)
    for label in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == label)
        count = int(round(fraction * len(members)))
        is_eval[rng.choice(members, size=count, replace=False)] = True
    pick = lambda mask: ([f for f, m in zip(files, mask) if m], labels_arr[mask].tolist())  # noqa: E731
    return pick(~is_eval), pick(is_eval)


def _without(files, labels, excluded):
    kept = [(f, label) for f, label in zip(files, labels) if f not in excluded]
    return [f for f, _ in kept], [label for _, label in kept]


def folder_splits(
    path: str,
    *,
    eval_path: str | None,
    eval_fraction: float,
    split_seed: int,
    check_images: bool,
) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]], list[str]]:
    """``((train files, labels), (eval files, labels), class names)`` of an image folder.

    The eval split is ``eval_path`` (same class folders) or a seeded per-class hold-out
    of ``eval_fraction``; with ``check_images`` unreadable files are logged and left out.
    """
    files, labels, class_names = list_image_folder(path)
    if eval_path is not None:
        eval_files, eval_labels, eval_classes = list_image_folder(eval_path)
        if eval_classes != class_names:
            raise ValueError(
                f"eval_path {eval_path!r} has class folders {eval_classes[:5]}... that differ "
                f"from {path!r}'s {class_names[:5]}...; use the same class sub-folders"
            )
    else:
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(
                f"eval_fraction must be in (0, 1) without eval_path, got {eval_fraction}"
            )
        (files, labels), (eval_files, eval_labels) = _split_eval(
            files, labels, eval_fraction, split_seed
        )
    if check_images:
        every_file = sorted(set(files) | set(eval_files))
        bad = find_unreadable(every_file)
        if bad:
            logger.warning(
                "skipping %d unreadable image(s) of %d in %s: %s",
                len(bad),
                len(every_file),
                path,
                ", ".join(bad[:10]),
            )
            files, labels = _without(files, labels, set(bad))
            eval_files, eval_labels = _without(eval_files, eval_labels, set(bad))
    return (files, labels), (eval_files, eval_labels), class_names


def from_image_folder(
    path: str,
    *,
    image_size: tuple[int, int] | int,
    global_batch_size: int,
    eval_batch_size: int | None = None,
    eval_path: str | None = None,
    eval_fraction: float = 0.1,
    split_seed: int = 0,
    augment: str = "inception",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    superclass_mapping=None,
    check_images: bool = True,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    cache: bool = False,
    with_index: bool = False,
    shuffle_buffer: int = 10_000,
    name: str | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """Train and eval pipelines over `path/<class name>/<image file>`.

    Class ids follow the sorted sub-folder names. The eval split is `eval_path` (same
    layout, same class folders) or, without it, a seeded per-class hold-out of
    `eval_fraction` of `path`. JPEG/PNG/BMP/GIF are read with `augment.decode_image`.

    Corrupt files: with `check_images=True` (default) every file is decoded once up
    front; unreadable ones are counted, logged in one warning and left out (so
    `info.num_examples` is exact). Either way the pipelines end with
    `Dataset.ignore_errors(log_warning=True)`, so a file that fails later is skipped
    with a warning instead of stopping the epoch.

    Returns:
        `(train, eval, info)` like `lskd_tf.data.load`.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    (files, labels), (eval_files, eval_labels), class_names = folder_splits(
        path, eval_path=eval_path, eval_fraction=eval_fraction, split_seed=split_seed,
        check_images=check_images,
    )  # fmt: skip
    info = _info(
        name or os.path.basename(os.path.normpath(path)),
        len(class_names),
        class_names,
        superclass_mapping,
        image_size,
        3,
        mean,
        std,
        {"train": len(files), "eval": len(eval_files)},
    )
    train_image, eval_image = _recipes(augment, tuple(image_size))

    def make(file_list, label_list, training, batch):
        return pipeline.build(
            _read_files(file_list, label_list),
            info=info,
            training=training,
            global_batch_size=batch,
            train_image=lambda data, s: train_image(aug.decode_image(data), s),
            eval_image=lambda data: eval_image(aug.decode_image(data)),
            seed=seed,
            input_context=input_context,
            cache=cache,
            with_index=with_index,
            shuffle_buffer=shuffle_buffer,
            ignore_errors=True,
        )

    train = make(files, labels, True, global_batch_size)
    eval_ds = make(eval_files, eval_labels, False, eval_batch_size or global_batch_size)
    return train, eval_ds, info


class ImageFolder(Source):
    """A folder of class sub-folders registered as a dataset, so that studies train on it.

        lskd_tf.data.register(ImageFolder("pets", "/data/pets", image_size=64))
        experiment.TeacherSpec(model="resnet8", data=experiment.DataSpec(name="pets"))

    Splits ``train`` and ``eval`` as `from_image_folder` makes them (its arguments).
    A run's identity (`lskd_tf.experiment.identity`) records the settings that shape
    the examples (`preprocessing`) and the folders' content (`fingerprint`: sorted
    relative paths, sizes and modification times, `lskd_tf.data.fingerprint.image_folder`),
    not where the folder is: a file added, changed or removed is refused on the next
    re-run. ``content_hashes=True`` records every file's SHA-256 (with its path and size,
    not its mtime) instead: one read of the whole folder per start, for copies whose
    modification times are not kept. The listing and the readability check are done
    once per process.
    """

    splits = ("train", "eval")
    train_split = "train"
    eval_split = "eval"

    def __init__(
        self,
        name: str,
        path: str | os.PathLike,
        *,
        image_size: tuple[int, int] | int,
        eval_path: str | os.PathLike | None = None,
        eval_fraction: float = 0.1,
        split_seed: int = 0,
        augment: str = "inception",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        superclass_mapping=None,
        check_images: bool = True,
        content_hashes: bool = False,
        shuffle_buffer: int = 10_000,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        _recipes(augment, tuple(image_size))  # an unknown recipe fails at registration
        self.name, self.path = name, os.fspath(path)
        self.eval_path = None if eval_path is None else os.fspath(eval_path)
        self.image_size, self.augment = tuple(int(x) for x in image_size), augment
        self.eval_fraction, self.split_seed = float(eval_fraction), int(split_seed)
        self.mean, self.std = tuple(mean), tuple(std)
        self.superclass_mapping, self.check_images = superclass_mapping, bool(check_images)
        self.content_hashes, self.shuffle_buffer = bool(content_hashes), int(shuffle_buffer)
        self._train_image, self._eval_image = _recipes(augment, self.image_size)

    @functools.cached_property
    def _splits(self):
        return folder_splits(
            self.path, eval_path=self.eval_path, eval_fraction=self.eval_fraction,
            split_seed=self.split_seed, check_images=self.check_images,
        )  # fmt: skip

    def info(self, data_dir, options):
        (files, _), (eval_files, _), class_names = self._splits
        return _info(
            self.name, len(class_names), class_names, self.superclass_mapping, self.image_size,
            3, self.mean, self.std, {"train": len(files), "eval": len(eval_files)},
        )  # fmt: skip

    def preprocessing(self, options):
        """Every setting that shapes the examples (the folder's path is not one)."""
        split = {"eval_path": True} if self.eval_path is not None else {
            "eval_fraction": self.eval_fraction, "split_seed": self.split_seed}  # fmt: skip
        return {
            "image_size": list(self.image_size), "augment": self.augment, **split,
            "mean": list(self.mean), "std": list(self.std), "check_images": self.check_images,
        }  # fmt: skip

    def fingerprint(self, data_dir, options):
        """The training folder's listing (and the eval folder's, when it is another)."""
        found = {"train": fingerprint.image_folder(self.path, content=self.content_hashes)}
        if self.eval_path is not None:
            found["eval"] = fingerprint.image_folder(self.eval_path, content=self.content_hashes)
        return found

    def examples(self, split, data_dir, download, options):
        train, evaluation, _ = self._splits
        files, labels = train if split.startswith(self.train_split) else evaluation
        return _read_files(files, labels)

    def train_image(self, image, seed, options):
        return self._train_image(aug.decode_image(image), seed)

    def eval_image(self, image, options):
        return self._eval_image(aug.decode_image(image))


class TfDataset(Source):
    """User `tf.data` datasets of ``(image, label)`` registered as a dataset for studies.

        lskd_tf.data.register(TfDataset("mine", train_ds, eval_ds, num_classes=10,
                                        fingerprint="mine-v2"))

    A dataset has no files to fingerprint, and hashing its elements would read it all on
    every start, so its identity is what the user says it is: ``fingerprint``, a
    non-empty string naming its content (a version, or a hash of the arrays it was
    built from), recorded in every run's identity with the settings that shape the
    examples. Change it when the data change: a re-run is then refused instead of
    reusing runs trained on the old data. The same string on other data is not
    detected (the user's word is taken).
    """

    splits = ("train", "eval")
    train_split = "train"
    eval_split = "eval"

    def __init__(
        self,
        name: str,
        train: tf.data.Dataset,
        eval: tf.data.Dataset,
        *,
        num_classes: int,
        fingerprint: str,
        image_size: tuple[int, int] | None = None,
        augment: str = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        class_names: Sequence[str] | None = None,
        superclass_mapping=None,
        shuffle_buffer: int = 10_000,
    ):
        if not isinstance(fingerprint, str) or not fingerprint.strip():
            raise ValueError(
                f"TfDataset {name!r} needs fingerprint=: a non-empty string naming its "
                "content (a version, or a hash of the arrays it was built from); runs record "
                "it, so that a re-run on other data is refused instead of reusing old runs"
            )
        self.name, self.content = name, fingerprint
        self._pairs = {"train": _as_pairs(train), "eval": _as_pairs(eval)}
        self.image_size, self.channels = _image_shape(
            self._pairs["train"].element_spec[0], image_size
        )
        self.augment = augment
        self.mean, self.std, self.num_classes = tuple(mean), tuple(std), int(num_classes)
        self.class_names, self.superclass_mapping = class_names, superclass_mapping
        self.shuffle_buffer = int(shuffle_buffer)
        self._train_image, self._eval_image = _recipes(augment, self.image_size)

    def info(self, data_dir, options):
        sizes = {split: int(pairs.cardinality()) for split, pairs in self._pairs.items()}
        sizes = {split: size if size >= 0 else None for split, size in sizes.items()}
        return _info(
            self.name, self.num_classes, self.class_names, self.superclass_mapping,
            self.image_size, self.channels, self.mean, self.std, sizes,
        )  # fmt: skip

    def preprocessing(self, options):
        """Every setting that shapes the examples."""
        return {"image_size": list(self.image_size), "augment": self.augment,
                "mean": list(self.mean), "std": list(self.std)}  # fmt: skip

    def fingerprint(self, data_dir, options):
        """The user's ``fingerprint`` string (see the class docstring)."""
        return {"user": self.content}

    def examples(self, split, data_dir, download, options):
        return self._pairs["train" if split.startswith(self.train_split) else "eval"]

    def train_image(self, image, seed, options):
        return self._train_image(image, seed)

    def eval_image(self, image, options):
        return self._eval_image(image)
