"""Exact argmax and top-k over the last (class) axis, fast at vocabulary sizes.

A translation step reads vocabulary-sized logits (32 × 32 tokens × 10,000 ids = 10 M
floats) several times outside the two models: the teacher's top k for ``topk_kl``, the
teacher's and the student's top-1 for ``agreement`` and the ``top1`` metric. On
TensorFlow's CPU kernels two of those reads cost more than the model work they serve
(`benchmarks/vocabulary_reads.py`; timings in RESULTS.md, "The KD step's reads of the
vocabulary"):

* ``keras.ops.argmax`` on floats first rewrites every ``-0.0`` to ``-tiny`` (a
  ``where`` over the whole tensor: Keras's fix for jax-ml/jax#24280, so that ``-0.0``
  ranks below ``+0.0``), several times the cost of ``tf.argmax`` itself. `argmax` takes
  ``tf.argmax`` and falls back to ``keras.ops.argmax`` only when some row's largest value
  compares equal to 0 or is not finite, the only rows where the two can differ: the
  same int32 ids as ``keras.ops.argmax`` for every input.
* ``tf.math.top_k`` selects over every entry of each row, which on TensorFlow's CPU
  kernel costs several reads of the row at a small k. `top_k` first takes
  the maximum of each block of ~√V logits, keeps the k blocks with the largest maxima,
  and takes the top k of those k blocks only. Exact, ties included: an entry of the true
  top k lies in one of those blocks (were its block not kept, the k kept blocks' maxima
  would be k entries ranked above it), the kept blocks are read in index order, and
  ``tf.math.top_k`` breaks ties by the lower index in both stages, as it does on the
  whole row. Same values (bit for bit) and ids as ``tf.math.top_k(x, k)``.

Both take ordinary tensors and run inside any `tf.function`, strategy replica or XLA
cluster. Below `BLOCKED_TOP_K_MIN_CLASSES` classes (image tasks) `top_k` is
``tf.math.top_k`` itself.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

BLOCKED_TOP_K_MIN_CLASSES = 1024
"""From this many classes on, `top_k` reads blocks; image class counts (10–1,000) take
``tf.math.top_k`` as is."""


def argmax(logits) -> tf.Tensor:
    """int32 index of the largest entry along the last axis: ``keras.ops.argmax(x, -1)``.

    Example:

    >>> argmax(tf.constant([[1.0, 3.0, 3.0], [-0.0, 0.0, -1.0]])).numpy()
    array([1, 1], dtype=int32)
    """
    logits = tf.convert_to_tensor(logits)
    ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if not logits.dtype.is_floating:
        return ids
    best = tf.gather(logits, ids, batch_dims=len(logits.shape) - 1)
    plain = tf.reduce_all(tf.math.is_finite(best) & tf.not_equal(best, 0))
    return tf.cond(plain, lambda: ids, lambda: keras.ops.argmax(logits, axis=-1))


def block_size(num_classes: int) -> int:
    """Classes per block of `top_k`: a divisor of ``num_classes`` near its square root
    (no padding copy), else the square root rounded up (the last block padded)."""
    root = math.isqrt(num_classes)
    for distance in range(root // 2):
        for size in (root - distance, root + distance + 1):
            if num_classes % size == 0:
                return size
    return math.ceil(math.sqrt(num_classes))


def top_k(logits, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``(values, int32 ids)`` of the k largest entries along the last axis, largest first,
    ties by the lower id: what ``tf.math.top_k(logits, k)`` returns, bit for bit.

    The last axis must have a static size; other axes may be dynamic.

    Example:

    >>> values, ids = top_k(tf.random.normal((2, 5, 10_000)), 4)   # (2, 5, 4) each
    """
    logits = tf.convert_to_tensor(logits)
    num_classes = logits.shape[-1]
    if num_classes is None or num_classes < BLOCKED_TOP_K_MIN_CLASSES:
        values, ids = tf.math.top_k(logits, k)
        return values, ids
    size = block_size(num_classes)
    blocks = -(-num_classes // size)
    if k >= blocks:
        values, ids = tf.math.top_k(logits, k)
        return values, ids
    outer = tf.shape(logits)[:-1]
    rows = tf.reshape(logits, [-1, num_classes])
    if blocks * size != num_classes:  # pad the last block with -inf: never ranked first
        lowest = tf.constant(-math.inf, logits.dtype)
        rows = tf.pad(rows, [[0, 0], [0, blocks * size - num_classes]], constant_values=lowest)
    rows = tf.reshape(rows, [-1, blocks, size])
    _, kept = tf.math.top_k(tf.reduce_max(rows, axis=-1), k)
    kept = tf.sort(kept, axis=-1)  # index order, so that ties still go to the lower id
    candidates = tf.reshape(tf.gather(rows, kept, batch_dims=1), [-1, k * size])
    values, position = tf.math.top_k(candidates, k)
    ids = tf.gather(kept, position // size, batch_dims=1) * size + position % size
    shape = tf.concat([outer, [k]], axis=0)
    return tf.reshape(values, shape), tf.reshape(ids, shape)
