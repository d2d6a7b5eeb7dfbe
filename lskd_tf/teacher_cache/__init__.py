"""Teacher-output cache: the teacher's logits computed once, reused by every student.

A temperature sweep runs the same frozen teacher over the same images for every student,
temperature and seed: that forward pass is pure repetition. The cache computes it once,
stores it next to the teacher's checkpoint, and feeds `Distiller` batches of
``({inputs: images, teacher_logits: logits}, labels)`` so the teacher is never run while distilling.

Two kinds of cache (`CacheSpec.mode`):

* ``"exact"``, for discrete augmentation (CIFAR's 4-pixel pad-crop × flip: 162 views of
  each image, `lskd_tf.data.augment.PadCropFlipViews`). Logits are stored for every view.
  While distilling, each example shows the view its seed draws, the very view online
  distillation would show for the same seed, and reads that view's logits: cached and
  online distillation run the same computation (up to the storage precision).
* ``"sampled"``, for any augmentation (ImageNet's random-resized crops, CUB's rotations
  and colour jitter), as FKD does: a fixed set of ``views`` views per image, each pinned by
  a stateless-RNG seed. Every random op of `lskd_tf.data.augment` is stateless, so the
  seed fully determines the crop box, flip, rotation and jitter: replaying the seed
  replays the view exactly. The seed of view k of image i is
  ``stateless_fold_in([view_seed, 0], i * views + k)``, recomputed, not stored. Each
  epoch an example shows one of its views, drawn from the epoch's seed.

On disk (one directory per teacher checkpoint, dataset and augmentation):

    manifest.json    the cache's key: teacher weights' SHA-256, dataset, split, options,
                     augmentation, storage; checked on every open
    progress.json    how many images are done: building is incremental, so an
                     interrupted build resumes where it stopped
    labels.npy       [N] int32, checked against the data's labels while distilling
    logits.npy       [N, V, C] float16 or float32 (``topk=0``), or, with ``topk=k``,
    topk_values.npy, topk_indices.npy, rest_logit.npy   [N, V, k], [N, V, k], [N, V]

Top-k compression keeps the k largest logits of each view and gives every other class
one logit, ``logsumexp(rest) - log(C - k)``: at T = 1 the top-k probabilities and the
rest's total mass are exact; at other temperatures the rest is flattened, which is an
approximation (off by default).

A cache that does not match (another teacher, dataset, augmentation or storage) is
rejected by `StaleCacheError` with what differs; on open a few stored views are also
recomputed with the teacher and compared, which catches a retrained teacher, a corrupt
file or a changed augmentation. The cache is read through NumPy memory maps, so it may
be larger than RAM.

Example:

```python
cache = lskd_tf.teacher_cache.build(teacher, "runs/t/teacher_cache/exact", "cifar100")
train_fn = cache.train_fn(batch_size=64, seed=0)   # epoch -> ({inputs, teacher_logits}, y)
lskd_tf.distill_student(teacher, student, train_fn, eval_ds, run_dir="runs/s")
```
"""

from lskd_tf.teacher_cache.cache import (
    StaleCacheError,
    TeacherCache,
    build,
    cache_directory,
    check_dataset,
    compress_topk,
    describe,
    expand_topk,
    largest_logits,
    weights_sha256,
)
from lskd_tf.teacher_cache.spec import DTYPES, MODES, CacheSpec

__all__ = [
    "DTYPES",
    "MODES",
    "CacheSpec",
    "StaleCacheError",
    "TeacherCache",
    "build",
    "cache_directory",
    "check_dataset",
    "compress_topk",
    "describe",
    "expand_topk",
    "largest_logits",
    "weights_sha256",
]
