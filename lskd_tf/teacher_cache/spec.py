"""`CacheSpec`: what a teacher-output cache stores (no TensorFlow import: specs use it)."""

from __future__ import annotations

import dataclasses

MODES = ("exact", "sampled")
DTYPES = ("float16", "float32")


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """What to cache and how to store it.

    Args:
        mode: ``"exact"`` (every view of a discrete augmentation) or ``"sampled"``
            (``views`` fixed views per image, any augmentation).
        views: views per image in ``"sampled"`` mode.
        topk: keep only the k largest logits per view (0: keep all).
        dtype: storage precision, ``"float16"`` (half the disk) or ``"float32"``.
        view_seed: the seed the sampled views are drawn from.
    """

    mode: str = "exact"
    views: int = 10
    topk: int = 0
    dtype: str = "float16"
    view_seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown teacher cache mode {self.mode!r}; choose one of: "
                             f"{', '.join(MODES)}")  # fmt: skip
        if self.views < 1:
            raise ValueError(f"cache views must be >= 1, got {self.views}")
        if self.topk < 0:
            raise ValueError(f"cache topk must be >= 0 (0 keeps all logits), got {self.topk}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown cache dtype {self.dtype!r}; choose one of: "
                             f"{', '.join(DTYPES)}")  # fmt: skip

    @property
    def changes_training(self) -> bool:
        """Whether students see other teacher outputs than online distillation would.

        An exact cache replays the online views (float16 storage rounds logits by
        < 0.1%); sampled views and top-k compression change what students learn from.
        """
        return self.mode == "sampled" or self.topk > 0

    @property
    def dirname(self) -> str:
        """A readable directory name, e.g. ``exact-float16`` or ``sampled10-top5-float16``."""
        name = "exact" if self.mode == "exact" else f"sampled{self.views}-seed{self.view_seed}"
        if self.topk:
            name += f"-top{self.topk}"
        return f"{name}-{self.dtype}"
