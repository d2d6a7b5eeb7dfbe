"""`lskd_tf.fast_ops`: the same ids and values as ``tf.math.top_k`` / ``keras.ops.argmax``,
on the inputs where a shortcut could go wrong (ties, signed zeros, infinities, padding
of the last block, half precision, dynamic shapes, XLA); and the ``top1`` metric built on
it against Keras's own."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lskd_tf import fast_ops
from lskd_tf.distiller import Top1Accuracy, default_metrics


def _bits(values) -> np.ndarray:
    values = np.asarray(values)
    return values.view(np.uint16 if values.itemsize == 2 else np.uint32)


def _logits(rng, shape, kind):
    if kind == "normal":
        return rng.normal(0, 3, shape).astype(np.float32)
    if kind == "ties":  # 5 distinct values: every top k is decided by ids
        return rng.integers(-2, 3, shape).astype(np.float32)
    x = rng.normal(0, 3, shape).astype(np.float32)  # infinities and signed zeros
    x[..., ::7] = -np.inf
    x[..., 3::11] = np.inf
    x[..., 5::13] = -0.0
    x[0, 0, :] = 0.0
    x[0, 0, ::2] = -0.0
    return x


@pytest.mark.parametrize("num_classes", [1024, 10_000, 10_007, 3_001])
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
def test_top_k_is_tf_top_k_bit_for_bit(num_classes, kind):
    rng = np.random.default_rng(num_classes)
    x = _logits(rng, (2, 9, num_classes), kind)
    for k in (1, 4, 16):
        want_values, want_ids = tf.math.top_k(x, k)
        values, ids = fast_ops.top_k(x, k)
        assert ids.dtype == tf.int32 and values.shape == (2, 9, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(_bits(values), _bits(want_values))


def test_top_k_breaks_ties_across_blocks_by_the_lower_id():
    """The kept blocks ranked by their maxima (5 before 2) hold a tie for the k-th place:
    tf.math.top_k takes the lower id (block 2's), so must the blocked search."""
    x = np.full((1, 10_000), -10.0, np.float32)
    x[0, [510, 530]] = [9.0, 7.0]  # block 5
    x[0, [220, 240]] = [8.0, 7.0]  # block 2
    values, ids = fast_ops.top_k(x, 3)
    np.testing.assert_array_equal(ids, [[510, 220, 240]])
    np.testing.assert_array_equal(ids, tf.math.top_k(x, 3).indices)
    np.testing.assert_array_equal(values, [[9.0, 8.0, 7.0]])


def test_top_k_reads_blocks_only_from_vocabulary_sizes():
    """The blocked path is what these tests exercise: a divisor near the square root,
    else the padded square root; image-sized class counts use tf.math.top_k itself."""
    assert fast_ops.block_size(10_000) == 100
    assert fast_ops.block_size(1024) == 32
    assert fast_ops.block_size(10_007) == 101  # a prime: the last block is padded
    assert fast_ops.block_size(3_001) == 55  # a prime
    graph = (
        tf.function(lambda x: fast_ops.top_k(x, 4))
        .get_concrete_function(tf.TensorSpec([None, 10_000]))
        .graph
    )
    ops_used = {op.type for op in graph.get_operations()}
    assert "Max" in ops_used and "GatherV2" in ops_used
    small = (
        tf.function(lambda x: fast_ops.top_k(x, 4))
        .get_concrete_function(tf.TensorSpec([None, 100]))
        .graph
    )
    assert "Max" not in {op.type for op in small.get_operations()}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_top_k_in_half_precision(dtype):
    x = tf.cast(np.random.default_rng(0).normal(0, 3, (3, 4, 5000)), dtype)  # many ties
    want_values, want_ids = tf.math.top_k(x, 4)
    values, ids = fast_ops.top_k(x, 4)
    np.testing.assert_array_equal(ids, want_ids)
    assert values.dtype == dtype
    np.testing.assert_array_equal(
        tf.cast(values, "float32").numpy(), tf.cast(want_values, "float32").numpy()
    )


def test_top_k_with_dynamic_shapes_and_under_xla():
    x = _logits(np.random.default_rng(1), (3, 7, 10_000), "ties")
    want_values, want_ids = tf.math.top_k(x, 4)
    dynamic = tf.function(
        lambda t: fast_ops.top_k(t, 4), input_signature=[tf.TensorSpec([None, None, 10_000])]
    )
    for fn in (dynamic, tf.function(lambda t: fast_ops.top_k(t, 4), jit_compile=True)):
        values, ids = fn(tf.constant(x))
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(values, want_values)


def test_argmax_is_keras_argmax_signed_zeros_nans_and_infinities_included():
    rows = np.array(
        [
            [-0.0, 0.0, -1.0],  # Keras ranks -0.0 below +0.0; tf.argmax takes the first
            [0.0, -0.0, -2.0],
            [1.0, 3.0, 3.0],
            [np.nan, 1.0, 2.0],
            [1.0, np.nan, 2.0],
            [-np.inf, -np.inf, -np.inf],
            [-np.inf, np.inf, np.inf],
            [-5.0, -1.0, -3.0],
        ],
        np.float32,
    )
    want = keras.ops.argmax(rows, axis=-1).numpy()
    assert tf.argmax(rows[:1], -1).numpy()[0] != want[0]  # the case the fallback exists for
    np.testing.assert_array_equal(fast_ops.argmax(rows), want)
    assert fast_ops.argmax(rows).dtype == tf.int32
    for kind in ("normal", "ties", "special"):
        x = _logits(np.random.default_rng(2), (3, 6, 2000), kind)
        np.testing.assert_array_equal(fast_ops.argmax(x), keras.ops.argmax(x, axis=-1))
    half = tf.constant(_logits(np.random.default_rng(3), (4, 500), "ties"), "float16")
    np.testing.assert_array_equal(fast_ops.argmax(half), keras.ops.argmax(half, axis=-1))
    ints = tf.constant([[1, 5, 5], [7, 0, 7]])
    np.testing.assert_array_equal(fast_ops.argmax(ints), [1, 0])


def test_top1_metric_equals_keras_sparse_categorical_accuracy():
    """Per example and per token with a padding mask, labels (N,) and (N, 1), ties."""
    rng = np.random.default_rng(4)
    logits = rng.integers(-2, 3, (4, 6, 1000)).astype(np.float32)
    labels = np.argmax(logits, -1)
    labels[:2] = rng.integers(0, 1000, (2, 6))  # wrong (mostly) in 2 of 4 rows
    mask = (rng.random((4, 6)) < 0.7).astype(np.float32)
    cases = [
        (labels, logits, mask),
        (labels[:, 1], logits[:, 1], None),
        (labels[:, 1:2], logits[:, 1], mask[:, 1]),  # (N, 1) labels
    ]
    for y, z, w in cases:
        ours, theirs = Top1Accuracy(), keras.metrics.SparseCategoricalAccuracy()
        ours.update_state(y, z, sample_weight=w)
        theirs.update_state(y, z, sample_weight=w)
        assert 0.0 < float(ours.result()) < 1.0
        assert float(ours.result()) == float(theirs.result())
    assert default_metrics()[0].name == "top1"
    clone = keras.metrics.deserialize(keras.metrics.serialize(Top1Accuracy(name="acc")))
    assert type(clone) is Top1Accuracy and clone.name == "acc"
