"""A translation teacher's outputs, computed once and reused by all its students.

Word-level KD needs the teacher's logits at every target position of every training
pair. They do not depend on the student or the epoch (teacher-forced on the reference,
no augmentation), so `cached_logits` runs the teacher once over the training split and
stores, per real target position (EOS included, padding excluded):

* ``kd_topk = k`` (for ``kd_loss="topk_kl"``, the papers' fairseq fork's word-level KD,
  which reads only the teacher's top k; the fork keeps 4): exactly the k largest
  logits (``values``) and their token ids (``indices``), largest first, and nothing else,
  as the fork's ``fed_utils.py:output2topk`` stores them. That is 2k numbers per
  position instead of V (float16 logits and int16 ids at k = 4: 16 bytes per position,
  3.6 MB instead of 232 MB for the embedded corpus's 226,140 positions). Batches carry
  them as `lskd_tf.losses.sparse_teacher` tensors (B, L, k), never expanded to the
  vocabulary; the loss reads them as it reads the online teacher's top k, so it is the
  same computation as online top-k KD up to the storage precision;
* ``topk > 0`` (for ``kd_loss="kl"``): the k largest logits, their token ids and one
  logit for every other token that keeps their total softmax mass at T = 1
  (`lskd_tf.teacher_cache.compress_topk`, shared with the image cache); students then
  learn from that compressed distribution, so it is another run than online KD;
* otherwise every logit (positions x vocabulary values: the embedded corpus's
  226,140 positions x 512 tokens are 232 MB in float16; a 10,000-token vocabulary is
  20x that), the same computation as online KD up to float16 rounding.

The file (`stored`) is ``<teacher dir>/teacher_cache/<checkpoint stem>-tokens-<storage>-
<digest>.npz``, keyed by the teacher's weights' SHA-256, the dataset and its options,
``max_length`` and the storage; another key is refused. Each use recomputes the first
pairs with the teacher and compares (the kept values only, for top-k). The whole cache
is held in memory.

`cached_train_fn` gives the training batches of `data.train_fn` (same order, same
batches for a (seed, epoch)) whose ``x`` carries the teacher's logits
(`lskd_tf.distiller.with_teacher_logits`: dense (B, L, V), expanded from a ``topk``
cache; or sparse (B, L, k) ids and logits of a ``kd_topk`` cache), so the `Distiller`
skips the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lskd_tf.distiller import with_teacher_logits
from lskd_tf.losses import sparse_teacher
from lskd_tf.tasks.translation import data, stored
from lskd_tf.teacher_cache import CacheSpec, compress_topk, largest_logits

DIRECTORY = "teacher_cache"
BUILD_BATCH = 64
VERIFY_PAIRS = 4


def check(cache: CacheSpec, kd_topk: int = 0) -> None:
    """Raise a one-line ValueError for a cache translation cannot build."""
    if cache.mode != "exact":
        raise ValueError(
            "translation has no augmentation to sample views of: use teacher_cache='exact' "
            "(with cache_topk=K to keep the teacher's K largest logits per token)"
        )
    if kd_topk and cache.topk:
        raise ValueError(
            f"a cache for top-{kd_topk} KD stores exactly the teacher's {kd_topk} largest "
            "logits and ids: leave cache_topk at 0 (it adds a rest logit, for kd_loss='kl')"
        )


def key_of(teacher: keras.Model, spec, cache: CacheSpec, options: dict, kd_topk: int = 0) -> dict:
    """Everything the cached logits depend on (``kd_topk`` only when set, so the keys and
    files of caches built before it existed stay valid)."""
    storage = {"topk": cache.topk, "dtype": cache.dtype}
    if kd_topk:
        storage["kd_topk"] = int(kd_topk)
    return {**stored.data_key(teacher, spec, options), "storage": storage}


def stored_path(teacher_path: str | Path, cache: CacheSpec, key: dict) -> Path:
    kd_topk = key["storage"].get("kd_topk")
    label = f"tokens-{cache.dirname}" + (f"-kdtop{kd_topk}" if kd_topk else "")
    return stored.path_for(teacher_path, DIRECTORY, label, key)


def cached_logits(
    teacher: keras.Model, teacher_path: str | Path, cache: CacheSpec, spec, options: dict,
    kd_topk: int = 0,
) -> tuple[dict[str, np.ndarray], dict]:  # fmt: skip
    """``(arrays, description)``: the stored outputs (built now if missing), verified.

    The arrays have one row per real target position: ``logits`` (V), or ``values``,
    ``indices`` (k) and ``rest`` for ``cache.topk``, or only ``values`` and ``indices``
    (``kd_topk``); and ``lengths``, the positions of each training pair."""
    check(cache, kd_topk)
    key = key_of(teacher, spec, cache, options, kd_topk)
    path = stored_path(teacher_path, cache, key)
    if path.exists():
        arrays, source = stored.read(path, key, "teacher cache"), "read"
    else:
        arrays, source = _build(teacher, spec, cache, options, kd_topk), "built"
        stored.write(path, key, arrays)
    _verify(teacher, spec, cache, options, arrays, path, kd_topk)
    described = {"path": str(path), "source": source,
                 "positions": int(arrays["lengths"].sum()), **key}  # fmt: skip
    return arrays, described


def _batches(spec, options: dict, stop: int | None = None):
    batches = data.train_split_in_order(
        spec.name, batch_size=BUILD_BATCH, data_dir=spec.data_dir, **options
    )
    return batches if stop is None else batches.take(-(-stop // BUILD_BATCH))


def _positions(teacher, x, mask) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's float32 logits at the real positions of a batch, and row lengths."""
    logits = keras.ops.convert_to_numpy(teacher(x, training=False)).astype(np.float32)
    keep = mask.numpy() > 0
    return logits[keep], keep.sum(axis=1)


def _compress(logits: np.ndarray, cache: CacheSpec, kd_topk: int) -> dict[str, np.ndarray]:
    index_dtype = np.int16 if logits.shape[-1] < 2**15 else np.int32
    if kd_topk:
        values, indices = largest_logits(logits, kd_topk)
        return {"values": values.astype(cache.dtype), "indices": indices.astype(index_dtype)}
    if not cache.topk:
        return {"logits": logits.astype(cache.dtype)}
    values, indices, rest = compress_topk(logits, cache.topk)
    return {"values": values.astype(cache.dtype), "indices": indices.astype(index_dtype),
            "rest": rest.astype(cache.dtype)}  # fmt: skip


def _build(teacher, spec, cache: CacheSpec, options: dict, kd_topk: int) -> dict[str, np.ndarray]:
    parts: list[dict] = []
    lengths = []
    for x, _, mask in _batches(spec, options):
        logits, rows = _positions(teacher, x, mask)
        parts.append(_compress(logits, cache, kd_topk))
        lengths.append(rows)
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    arrays["lengths"] = np.concatenate(lengths).astype(np.int64)
    return arrays


def _verify(teacher, spec, cache, options, arrays, path: Path, kd_topk: int) -> None:
    """Recompute the first pairs with the teacher; their stored outputs must agree."""
    x, _, mask = next(iter(_batches(spec, options, stop=VERIFY_PAIRS)))
    logits, rows = _positions(teacher, x, mask)
    fresh = _compress(logits, cache, kd_topk)
    count = len(logits)
    for name, value in fresh.items():
        stored = arrays[name][:count]
        close = (
            np.array_equal(stored, value)
            if name == "indices"
            else np.allclose(stored.astype(np.float32), value.astype(np.float32), atol=2e-2)
        )
        if stored.shape != value.shape or not close:
            raise ValueError(
                f"the teacher cache {path} does not match the teacher's outputs ({name} "
                "differ): delete the file to build it again"
            )
    if not np.array_equal(arrays["lengths"][: len(rows)], rows):
        raise ValueError(f"the teacher cache {path} has other sentences than the data: delete it")


def expand(arrays: tuple, vocab_size: int) -> tf.Tensor:
    """Dense float32 teacher logits (B, L, V) from a batch's padded cache arrays.

    Exactly `lskd_tf.teacher_cache.expand_topk` (the kept values scattered over the
    rest logit); padding positions come out as zeros (their weight is 0)."""
    if len(arrays) == 1:
        return tf.cast(arrays[0], tf.float32)
    values, indices, rest = arrays
    shape = tf.shape(indices)
    dense = tf.broadcast_to(tf.cast(rest, tf.float32)[..., None],
                            tf.concat([shape[:2], [vocab_size]], 0))  # fmt: skip
    b, position, _ = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), tf.range(shape[2]),
                                 indexing="ij")  # fmt: skip
    # Padding rows hold k zeros at index 0: the same update k times, a zero row.
    where = tf.stack([b, position, tf.cast(indices, tf.int32)], axis=-1)
    return tf.tensor_scatter_nd_update(dense, where, tf.cast(values, tf.float32))


def cached_train_fn(
    teacher: keras.Model, teacher_path: str | Path, cache: CacheSpec, spec, *, options: dict,
    vocab_size: int, kd_topk: int = 0, **batching,
) -> tuple[Callable, dict]:  # fmt: skip
    """``(train_fn, description)``: `data.train_fn`'s batches with cached teacher logits.

    With ``kd_topk`` (a top-k KD student), ``x``'s teacher is
    ``sparse_teacher(ids (B, L, k) int32, logits (B, L, k) float32)``; otherwise dense
    float32 logits (B, L, V). Padding positions hold zeros (their weight is 0)."""
    arrays, described = cached_logits(teacher, teacher_path, cache, spec, options, kd_topk)
    if kd_topk:
        names: tuple[str, ...] = ("values", "indices")
    else:
        names = ("logits",) if not cache.topk else ("values", "indices", "rest")
    base = data.train_fn(
        spec.name, data_dir=spec.data_dir,
        position_arrays=[arrays[name] for name in names],
        position_lengths=arrays["lengths"], **batching, **options,
    )  # fmt: skip

    def make_epoch(epoch: int, input_context=None) -> tf.data.Dataset:
        def attach(x, y, weight, *stored):
            if kd_topk:
                values, indices = stored
                teacher_outputs = sparse_teacher(tf.cast(indices, tf.int32),
                                                 tf.cast(values, tf.float32))  # fmt: skip
            else:
                teacher_outputs = expand(stored, vocab_size)
            return with_teacher_logits(x, teacher_outputs), y, weight

        return base(epoch, input_context).map(attach, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=True)  # fmt: skip

    return make_epoch, described
