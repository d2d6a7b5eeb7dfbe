"""The losses against NumPy hand computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lskd_tf.losses import DistillationKL, SmoothedCrossEntropy, smooth_targets

K = 7


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_smoothed_ce(labels, logits, alpha, convention):
    onehot = np.eye(K)[labels]
    if convention == "uniform":
        target = (1 - alpha) * onehot + alpha / K
    else:
        target = np.where(onehot == 1, 1 - alpha, alpha / (K - 1))
    return float(np.mean(-(target * np_log_softmax(logits)).sum(-1)))


def np_kd(teacher, student, T, t2):
    p = np.exp(np_log_softmax(teacher / T))
    kl = (p * (np_log_softmax(teacher / T) - np_log_softmax(student / T))).sum(-1)
    return float(np.mean(kl) * (T * T if t2 else 1.0))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, K, 16), rng.normal(0, 3, (16, K)), rng.normal(0, 3, (16, K))


@pytest.mark.parametrize("convention", ["uniform", "others"])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
def test_smoothed_ce_matches_numpy(batch, alpha, convention):
    labels, logits, _ = batch
    expected = np_smoothed_ce(labels, logits, alpha, convention)
    loss = SmoothedCrossEntropy(alpha, convention)
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)
    # one-hot targets give the same loss as integer labels
    onehot = np.eye(K)[labels]
    np.testing.assert_allclose(float(loss(onehot, logits)), expected, rtol=1e-5)
    # (batch, 1) integer labels too
    np.testing.assert_allclose(float(loss(labels[:, None], logits)), expected, rtol=1e-5)


def test_smoothing_conventions_differ_as_documented():
    onehot = np.eye(4)[[0]]
    np.testing.assert_allclose(
        smooth_targets(onehot, 0.1, "uniform"), [[0.925, 0.025, 0.025, 0.025]], atol=1e-6
    )
    np.testing.assert_allclose(
        smooth_targets(onehot, 0.1, "others"), [[0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]], atol=1e-6
    )


def test_soft_targets_are_smoothed():
    soft = np.array([[0.5, 0.5, 0.0, 0.0]])
    logits = np.array([[1.0, 0.0, -1.0, 2.0]])
    target = 0.8 * soft + 0.2 / 4
    expected = -(target * np_log_softmax(logits)).sum()
    loss = SmoothedCrossEntropy(0.2)
    np.testing.assert_allclose(float(loss(soft, logits)), expected, rtol=1e-5)


@pytest.mark.parametrize("t2", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 64.0])
def test_kd_matches_numpy(batch, temperature, t2):
    _, teacher, student = batch
    expected = np_kd(teacher, student, temperature, t2)
    got = float(DistillationKL(temperature, t2)(teacher, student))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_losses_are_finite_and_accurate_for_half_precision_inputs(batch, dtype):
    labels, teacher, student = batch
    teacher16 = tf.constant(teacher * 10, dtype)  # large logits overflow exp() in float16
    student16 = tf.constant(student * 10, dtype)
    t32 = tf.cast(teacher16, "float32").numpy().astype(np.float64)
    s32 = tf.cast(student16, "float32").numpy().astype(np.float64)
    for T in (1.0, 64.0):
        got = DistillationKL(T)(teacher16, student16)
        assert got.dtype == "float32" and np.isfinite(float(got))
        np.testing.assert_allclose(float(got), np_kd(t32, s32, T, True), rtol=1e-3)
    ce = SmoothedCrossEntropy(0.1)(labels, student16)
    np.testing.assert_allclose(float(ce), np_smoothed_ce(labels, s32, 0.1, "uniform"), rtol=1e-4)


def test_kd_is_zero_for_identical_logits(batch):
    _, teacher, _ = batch
    assert abs(float(DistillationKL(4.0)(teacher, teacher))) < 1e-6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SmoothedCrossEntropy(alpha=1.0), "alpha must be in \\[0, 1\\)"),
        (lambda: SmoothedCrossEntropy(alpha=-0.1), "alpha must be in \\[0, 1\\)"),
        (lambda: SmoothedCrossEntropy(0.1, "szegedy"), "unknown smoothing convention"),
        (lambda: DistillationKL(temperature=0.0), "temperature must be > 0"),
        (lambda: DistillationKL(temperature=-2), "temperature must be > 0"),
        (lambda: DistillationKL(temperature=1e-30), "within \\[0.01, 100\\]"),
        (lambda: DistillationKL(temperature=1e30), "within \\[0.01, 100\\]"),
        (lambda: DistillationKL(temperature=float("nan")), "within \\[0.01, 100\\]"),
    ],
)
def test_bad_arguments_raise_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_losses_round_trip_through_config():
    for loss in (SmoothedCrossEntropy(0.1, "others"), DistillationKL(8.0, t2_scaling=False)):
        clone = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()


def test_loss_is_divided_by_replicas_under_mirrored_strategy(mirrored_strategy, batch):
    """Keras Loss objects scale by 1/num_replicas so summed gradients are right."""
    labels, teacher, student = batch
    loss = DistillationKL(4.0)
    expected = np_kd(teacher[:8], student[:8], 4.0, True) / 2
    per_replica = mirrored_strategy.run(
        lambda: loss(tf.constant(teacher[:8]), tf.constant(student[:8]))
    )
    values = mirrored_strategy.experimental_local_results(per_replica)
    np.testing.assert_allclose([float(v) for v in values], [expected, expected], rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.01, 1.0, 64.0, 100.0])
def test_kd_loss_is_meaningful_across_the_temperature_range(batch, temperature):
    """`TEMPERATURE_RANGE`'s bounds, checked: at both ends the float32 loss is nonzero
    and within 2% of a float64 NumPy transcription (the range's docstring measured 1% at
    T = 100 for unit-scale logits; at 1e-30 it was exactly 0, at 1000 off by 24%)."""
    from lskd_tf.losses import TEMPERATURE_RANGE

    assert TEMPERATURE_RANGE == (0.01, 100.0)
    _, teacher, student = batch
    got = float(DistillationKL(temperature)(teacher, student))
    expected = np_kd(teacher.astype(np.float64), student.astype(np.float64), temperature, True)
    assert got > 0 and got == pytest.approx(expected, rel=2e-2)
