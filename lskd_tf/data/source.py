"""The `Source` interface every registered dataset implements, and the TFDS helper.

A source knows three things: its `DatasetInfo`, how to read the raw examples of a
split as a `tf.data.Dataset` of `(image, label)` (image = uint8 pixels or encoded
bytes), and how to turn one raw image into a float32 [0, 255] image at `input_shape`
for training (`train_image(image, seed)`) and for evaluation (`eval_image(image)`).
`lskd_tf.data.make_dataset` does the rest (index, shard, cache, shuffle, batch).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from lskd_tf.data import fingerprint
from lskd_tf.data.info import DataNotFoundError, DatasetInfo
from lskd_tf.registry import Registry


class Source:
    """Base class of a registered dataset. Subclasses set the class attributes."""

    name: str = ""
    splits: tuple[str, ...] = ()
    train_split: str = "train"
    eval_split: str = "test"
    #: options accepted through `**options`, with their defaults
    option_defaults: Mapping[str, Any] = {}
    #: default shuffle buffer (examples); capped by the split size
    shuffle_buffer: int = 10_000
    #: True when a run's identity lists every resolved option, defaults included
    #: (`preprocessing`): for sources whose default preprocessing changed after runs
    #: were recorded, so that those runs are refused as changed, not silently reused.
    records_preprocessing: bool = False

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with `options`; unknown keys are a clear ValueError."""
        valid = {**self.option_defaults, "shuffle_buffer": self.shuffle_buffer}
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for dataset {self.name!r}; "
                f"valid options: {', '.join(sorted(valid)) or 'none'}"
            )
        return {**valid, **options}

    def preprocessing(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved options that shape the examples, for a run's identity.

        Every option but ``shuffle_buffer`` (which only orders them) when
        `records_preprocessing`, else ``{}``: the sources whose preprocessing never changed
        (embedded, CIFAR-100) keep the identities their runs were recorded with, while
        ImageNet and CUB runs recorded before the antialiased resize and the ICML 2022 CUB
        augmentation lack this entry and are refused as changed
        (`lskd_tf.experiment.identity`).
        """
        if not self.records_preprocessing:
            return {}
        resolved = self.resolve_options(options)
        return {key: value for key, value in sorted(resolved.items()) if key != "shuffle_buffer"}

    def check_split(self, split: str) -> str:
        """Accept a split name or a TFDS slice of one (`"train[:10%]"`)."""
        base = re.split(r"[\[+]", split, maxsplit=1)[0]
        if base not in self.splits:
            raise ValueError(
                f"unknown split {split!r} for dataset {self.name!r}; "
                f"choose one of: {', '.join(self.splits)}"
            )
        return split

    def info(self, data_dir: str | None, options: dict[str, Any]) -> DatasetInfo:
        raise NotImplementedError

    def examples(
        self, split: str, data_dir: str | None, download: bool, options: dict[str, Any]
    ) -> tf.data.Dataset:
        raise NotImplementedError

    def train_image(self, image, seed, options: dict[str, Any]):
        raise NotImplementedError

    def eval_image(self, image, options: dict[str, Any]):
        raise NotImplementedError

    def fingerprint(self, data_dir: str | None, options: dict[str, Any]) -> dict | None:
        """What identifies the examples' content beyond the name and options, or None.

        Recorded in a run's identity (`lskd_tf.experiment.identity`), so a re-run on
        other data is refused instead of reusing the old run. A source that reads user
        files returns their fingerprint (`lskd_tf.data.fingerprint`); a generated one
        (fixed by its options) returns None.
        """
        return None

    def check_prepared(self, data_dir: str | None, download: bool) -> None:
        """Raise `DataNotFoundError` (saying how to get the data) when it is not there.

        Called before a study writes anything (`lskd_tf.sweep.run_study`), so missing
        data is one line, not a half-started study. Must not download nor read examples.
        The default (generated data, or a source that finds out when it reads) does nothing.
        """

    def discrete_views(self, options: dict[str, Any]):
        """The finite view set of `train_image`, if its augmentation is discrete, else None.

        A discrete recipe (e.g. `augment.PadCropFlipViews`) lets the teacher cache
        store every view exactly; continuous recipes get a fixed sample of views.
        """
        return None


class TfdsSource(Source):
    """A dataset read from TFDS: subclasses say how to decode it and how to get it."""

    #: keep JPEG bytes (decoded in the pipeline: crop-window decoding on ImageNet)
    skip_decoding: bool = False
    #: the steps to obtain the data, for the "missing data" message ({data_dir} is filled)
    how_to_get: str = ""

    def fingerprint(self, data_dir, options):
        """The TFDS builder's name, version and the splits a run reads."""
        return fingerprint.tfds(
            self.name, default_data_dir(data_dir), (self.train_split, self.eval_split)
        )

    def check_prepared(self, data_dir, download):
        """The TFDS set is prepared under ``data_dir`` (`is_prepared`, nothing read), unless
        ``download`` lets the first read prepare it."""
        if download:
            return
        import tensorflow_datasets as tfds

        root = default_data_dir(data_dir)
        if not tfds.builder(self.name, data_dir=root).is_prepared():
            raise DataNotFoundError(missing_message(self.name, root, self.how_to_get))

    def examples(self, split, data_dir, download, options):
        return load_tfds(
            self.name,
            split,
            data_dir=data_dir,
            download=download,
            skip_decoding=self.skip_decoding,
            how_to_get=self.how_to_get,
        )


def default_data_dir(data_dir: str | None) -> str:
    """The directory TFDS reads: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    if data_dir:
        return os.fspath(data_dir)
    import tensorflow_datasets as tfds

    return os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR


def missing_message(name: str, root: str, how_to_get: str) -> str:
    """The one line saying a TFDS set is missing under ``root`` and how to get it."""
    return f"dataset {name!r} not found in data_dir={root!r}: " + how_to_get.format(data_dir=root)


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir: str | None,
    download: bool,
    how_to_get: str,
    skip_decoding: bool,
) -> tf.data.Dataset:
    """Read a TFDS split in its stored order as a dataset of `(image, label)`.

    Never downloads unless `download=True`. Missing data raises `DataNotFoundError`
    with `how_to_get` (a sentence with the steps; `{data_dir}` is filled in).
    """
    import tensorflow_datasets as tfds

    root = default_data_dir(data_dir)
    message = missing_message(name, root, how_to_get)
    builder = tfds.builder(name, data_dir=root)
    try:
        if download:
            builder.download_and_prepare()
        decoders = {"image": tfds.decode.SkipDecoding()} if skip_decoding else None
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    except AssertionError:  # TFDS signals missing data / manual files this way
        raise DataNotFoundError(message) from None
    return ds.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=tf.data.AUTOTUNE)


SOURCES: Registry[Source] = Registry("dataset", package="lskd_tf.data")
"""The image datasets by name. Every public module of `lskd_tf.data` is imported on the
first lookup, so a new module that calls `register` at import is found (no list to edit)."""


def register(source: Source) -> Source:
    """Make ``source`` selectable by its `Source.name` (`lskd_tf.data.load`, ``--dataset``)."""
    return SOURCES.register(source.name, source)
