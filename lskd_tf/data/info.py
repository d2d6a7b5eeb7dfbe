"""`DatasetInfo`, normalization constants and the data errors.

Every pipeline in `lskd_tf.data` returns images normalized per channel as

    x_normalized = (x_uint8 / 255 - mean) / std

with `mean`/`std` in [0, 1] pixel units, stored on the `DatasetInfo` so that the
exported model's uint8 serving endpoint can apply the very same transform.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# RepDistiller / the papers' CIFAR-100 code (torchvision Normalize constants).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# torchvision's ImageNet constants, used by both papers for ImageNet and CUB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataNotFoundError(FileNotFoundError):
    """A dataset is not prepared under `data_dir`; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the analyses need to know about a dataset.

    Attributes:
        name: registry name (`"cifar100"`, `"embedded"`, ...) or a user-given name.
        num_classes: number of (fine) classes K.
        class_names: K human-readable names, index = label.
        superclass: int array of shape (K,), the coarse group of every class, or
            None when the dataset has no grouping (pass `superclass_mapping=`).
        superclass_names: names of the groups, index = superclass id, or None.
        input_shape: (H, W, C) of the images the pipelines yield.
        mean, std: per-channel normalization in [0, 1] pixel units.
        num_examples: examples per split, e.g. `{"train": 50000, "test": 10000}`.
        train_split, eval_split: the split names `load()` uses.

    Example:
        >>> info = lskd_tf.data.get_info("cifar100")
        >>> info.num_classes, info.superclass[:5]
        (100, array([ 4,  1, 14,  8,  0]))
    """

    name: str
    num_classes: int
    class_names: list[str]
    superclass: np.ndarray | None
    superclass_names: list[str] | None
    input_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_examples: dict[str, int]
    train_split: str
    eval_split: str

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but num_classes is "
                f"{self.num_classes}; give one name per class"
            )
        if self.superclass is not None:
            superclass = np.asarray(self.superclass, dtype=np.int64)
            if superclass.shape != (self.num_classes,):
                raise ValueError(
                    f"superclass must have shape ({self.num_classes},), got {superclass.shape}"
                )
            superclass.setflags(write=False)
            object.__setattr__(self, "superclass", superclass)

    @property
    def num_superclasses(self) -> int | None:
        """Number of coarse groups, or None without a grouping."""
        if self.superclass is None:
            return None
        if self.superclass_names is not None:
            return len(self.superclass_names)
        return int(self.superclass.max()) + 1

    def normalize(self, images):
        """uint8 (or float in [0, 255]) images -> float32 `(x / 255 - mean) / std`.

        Works on any tensor whose last axis is the channel axis; the images must
        already be at `input_shape` (no resizing here).
        """
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        mean = tf.constant(self.mean, tf.float32) * 255.0
        std = tf.constant(self.std, tf.float32) * 255.0
        return (images - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NumPy arrays become lists)."""
        out = dataclasses.asdict(self)
        out["superclass"] = None if self.superclass is None else self.superclass.tolist()
        out["input_shape"] = list(self.input_shape)
        out["mean"] = [float(m) for m in self.mean]
        out["std"] = [float(s) for s in self.std]
        out["num_examples"] = {k: int(v) for k, v in self.num_examples.items()}
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> DatasetInfo:
        """Inverse of `to_dict`."""
        config = dict(config)
        if config.get("superclass") is not None:
            config["superclass"] = np.asarray(config["superclass"], dtype=np.int64)
        config["input_shape"] = tuple(config["input_shape"])
        config["mean"] = tuple(config["mean"])
        config["std"] = tuple(config["std"])
        return cls(**config)

    def __eq__(self, other):
        if not isinstance(other, DatasetInfo):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None
