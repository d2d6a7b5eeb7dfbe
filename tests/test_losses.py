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


# --------------------------------------------------------------------- top-k word-level KD
# A NumPy transcription of the papers' fairseq fork (RayeRen/multilingual-kd-pytorch):
# fairseq/fed_utils.py:output2topk stores torch.topk(teacher_output, k) (logits and ids);
# fairseq/criterions/distill_label_smoothed_cross_entropy_loss.py computes, per token,
#   distill_loss = -(log_softmax(s / t).gather(-1, topk_idx) * softmax(topk / t)).sum(-1)
#   loss = sum_nonpad(alpha * distill_loss) * t * t
#          + sum_nonpad((1 - alpha) * ((1 - eps) * nll + eps / V * -sum_v log_softmax(s)))
# and fairseq divides the gradient by sample_size = the number of non-padding tokens.


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_output2topk(teacher, k):
    idx = np.argsort(-teacher, axis=-1, kind="stable")[..., :k]  # torch.topk: largest first
    return idx, np.take_along_axis(teacher, idx, -1)


def np_fork_kd(teacher, student, mask, T, k):
    """The fork's KD term, T^2 * sum over non-pad tokens / their number, and its gradient
    with respect to the student logits (d/ds of -sum_k p_k log_softmax(s/T)[idx_k] is
    (softmax(s/T) - p at idx) / T)."""
    idx, top = np_output2topk(teacher, k)
    p = np_softmax(top / T)
    per_token = -(np.take_along_axis(np_log_softmax(student / T), idx, -1) * p).sum(-1)
    value = (per_token * mask).sum() * T * T / mask.sum()
    p_dense = np.zeros_like(student)
    np.put_along_axis(p_dense, idx, p, -1)  # ids are distinct: no collisions
    grad = T * (np_softmax(student / T) - p_dense) * (mask / mask.sum())[..., None]
    entropy = -(p * np.log(p)).sum(-1)
    return value, grad, (entropy * mask).sum() * T * T / mask.sum()


@pytest.fixture(scope="module")
def tokens():
    """(teacher, student, mask): (3, 5, 11) logits and a padding mask with uneven rows."""
    rng = np.random.default_rng(7)
    teacher, student = rng.normal(0, 3, (2, 3, 5, 11))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.float64)
    return teacher, student, mask


def _value_and_grad(loss, teacher, student, mask):
    student = tf.constant(student, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(student)
        value = loss(teacher, student, sample_weight=tf.constant(mask, tf.float32))
    return float(value), tape.gradient(value, student).numpy()


def test_the_np_fork_gradient_is_the_derivative_of_its_loss(tokens):
    """The transcription's analytic gradient against central differences (float64)."""
    teacher, student, mask = tokens
    _, grad, _ = np_fork_kd(teacher, student, mask, 2.0, 4)
    for where in [(0, 0, 3), (1, 2, 0), (2, 0, 10)]:
        step = np.zeros_like(student)
        step[where] = 1e-6
        plus = np_fork_kd(teacher, student + step, mask, 2.0, 4)[0]
        minus = np_fork_kd(teacher, student - step, mask, 2.0, 4)[0]
        np.testing.assert_allclose((plus - minus) / 2e-6, grad[where], rtol=1e-5, atol=1e-9)
    assert not grad[1, 3:].any() and not grad[2, 1:].any()  # padding gets no gradient


@pytest.mark.parametrize("temperature", [0.6, 1.0, 3.0, 64.0])
@pytest.mark.parametrize("k", [1, 4])
def test_topk_kd_matches_the_forks_criterion(tokens, temperature, k):
    """Value = the fork's minus the top-k teacher's entropy (a constant); gradient = the
    fork's; the mean is over non-padding tokens; a dense teacher and its sparse top k
    give the same value and gradient."""
    from lskd_tf.losses import get_kd_loss, sparse_teacher

    teacher, student, mask = tokens
    fork, fork_grad, entropy = np_fork_kd(teacher, student, mask, temperature, k)
    loss = get_kd_loss("topk_kl", temperature=temperature, t2_scaling=True, topk=k)
    value, grad = _value_and_grad(loss, tf.constant(teacher, tf.float32), student, mask)
    np.testing.assert_allclose(value, fork - entropy, rtol=1e-5, atol=1e-5 * temperature**2)
    np.testing.assert_allclose(grad, fork_grad, rtol=1e-4, atol=1e-7)
    assert value >= 0
    idx, top = np_output2topk(teacher, k)
    sparse = sparse_teacher(tf.constant(idx, tf.int32), tf.constant(top, tf.float32))
    sparse_value, sparse_grad = _value_and_grad(loss, sparse, student, mask)
    assert sparse_value == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(sparse_grad, grad, rtol=1e-6, atol=1e-9)
    # padding never counts: other logits at padded positions change nothing
    changed = np.where(mask[..., None] > 0, student, 100.0)
    assert _value_and_grad(loss, sparse, changed, mask)[0] == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_topk_kd_at_a_vocabulary_size_is_the_forks_value_and_gradient(temperature):
    """10,000 ids: the dense teacher's top k come from `fast_ops.top_k`'s blocked search
    and the gradient is written out (`_topk_kl`); both against the fork in float64, the
    gradient also against autodiff of the same expression (float32 rounding apart)."""
    from lskd_tf.losses import TopKDistillationKL

    rng = np.random.default_rng(11)
    teacher, student = rng.normal(0, 3, (2, 2, 6, 10_000))
    mask = (rng.random((2, 6)) < 0.7).astype(np.float64)
    fork, fork_grad, entropy = np_fork_kd(teacher, student, mask, temperature, 4)
    loss = TopKDistillationKL(temperature=temperature, topk=4)
    value, grad = _value_and_grad(loss, tf.constant(teacher, tf.float32), student, mask)
    np.testing.assert_allclose(value, fork - entropy, rtol=1e-5)
    np.testing.assert_allclose(grad, fork_grad, rtol=1e-4, atol=1e-9)

    s = tf.constant(student, tf.float32)
    top = tf.math.top_k(tf.constant(teacher, tf.float32), 4)
    log_p = tf.nn.log_softmax(top.values / temperature)
    with tf.GradientTape() as tape:  # the expression _topk_kl computes, autodiff's gradient
        tape.watch(s)
        scaled = s / temperature
        per_token = tf.reduce_sum(
            tf.exp(log_p) * (log_p - tf.gather(scaled, top.indices, batch_dims=2)), -1
        ) + tf.reduce_logsumexp(scaled, -1)
        autodiff = tf.reduce_sum(per_token * temperature**2 * mask) / mask.sum()
    assert float(autodiff) == value  # the same forward ops: the same bits
    np.testing.assert_allclose(grad, tape.gradient(autodiff, s), rtol=1e-5, atol=1e-10)


def test_reported_cross_entropy_is_the_smoothed_cross_entropy_without_gradient():
    """The pure-KD Distiller's reported CE (logsumexp and sums, no one-hot) equals the
    trained one to float32 rounding, for both conventions, held settings or not, labels
    (B, L) with a padding mask or (N, 1); soft targets take the trained formula; no
    gradient reaches the logits."""
    from lskd_tf.losses import ReportedCrossEntropy

    rng = np.random.default_rng(12)
    logits = rng.normal(0, 3, (3, 5, 10_000)).astype(np.float32)
    labels = rng.integers(0, 10_000, (3, 5))
    mask = (rng.random((3, 5)) < 0.7).astype(np.float32)
    for convention in ("uniform", "others"):
        for alpha in (0.0, 0.1, 0.4):
            trained = SmoothedCrossEntropy(alpha, convention)
            want = float(trained(labels, logits, mask))
            for held in (False, True):
                reported = ReportedCrossEntropy(alpha, convention)
                if held:
                    reported.hold_settings_in_variables()
                assert float(reported(labels, logits, mask)) == pytest.approx(want, rel=1e-6)
            assert float(ReportedCrossEntropy(alpha, convention)(
                labels[:, :1], logits[:, 0])) == pytest.approx(
                float(trained(labels[:, :1], logits[:, 0])), rel=1e-6)  # fmt: skip
    soft = tf.nn.softmax(rng.normal(size=(4, 7)).astype(np.float32))
    z = rng.normal(size=(4, 7)).astype(np.float32)
    assert float(ReportedCrossEntropy(0.1)(soft, z)) == float(SmoothedCrossEntropy(0.1)(soft, z))
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = ReportedCrossEntropy(0.1)(labels, variable, mask)
    assert tape.gradient(value, variable) is None
    clone = keras.losses.deserialize(keras.losses.serialize(ReportedCrossEntropy(0.2, "others")))
    assert type(clone) is ReportedCrossEntropy
    assert (clone.alpha, clone.convention) == (0.2, "others")


def test_topk_kd_ignores_every_id_outside_the_teachers_top_k(tokens):
    """Only the student's log-probabilities at the teacher's k ids (and its normaliser)
    count: the teacher's other logits do not, unlike full-vocabulary KL."""
    from lskd_tf.losses import TopKDistillationKL

    teacher, student, mask = tokens
    idx, _ = np_output2topk(teacher, 4)
    lowered = teacher.copy()
    outside = np.ones_like(teacher, bool)
    np.put_along_axis(outside, idx, False, -1)
    lowered[outside] -= 5.0  # still below the top 4
    loss = TopKDistillationKL(temperature=64.0, topk=4)
    assert float(loss(lowered, student, mask)) == pytest.approx(
        float(loss(teacher, student, mask)), rel=1e-6
    )
    assert float(DistillationKL(64.0)(lowered, student, mask)) != pytest.approx(
        float(DistillationKL(64.0)(teacher, student, mask)), rel=1e-3
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_topk_kd_is_finite_for_half_precision_logits_at_t64(tokens, dtype):
    from lskd_tf.losses import TopKDistillationKL

    teacher, student, mask = tokens
    teacher16, student16 = tf.constant(teacher * 10, dtype), tf.constant(student * 10, dtype)
    t32 = tf.cast(teacher16, "float32").numpy().astype(np.float64)
    s32 = tf.cast(student16, "float32").numpy().astype(np.float64)
    got = TopKDistillationKL(temperature=64.0, topk=4)(teacher16, student16, mask)
    fork, _, entropy = np_fork_kd(t32, s32, mask, 64.0, 4)
    assert got.dtype == "float32" and np.isfinite(float(got))
    np.testing.assert_allclose(float(got), fork - entropy, rtol=1e-3, atol=1e-2)


def test_topk_kd_arguments_and_config():
    from lskd_tf.losses import TopKDistillationKL, get_kd_loss, reads_topk, sparse_teacher

    assert reads_topk("topk_kl") and not reads_topk("kl")
    with pytest.raises(ValueError, match="set kd_topk >= 1"):
        get_kd_loss("topk_kl", temperature=1.0)
    with pytest.raises(ValueError, match="set kd_topk=0 for kd_loss='kl'"):
        get_kd_loss("kl", temperature=1.0, topk=4)
    with pytest.raises(ValueError, match="topk must be an integer >= 1"):
        TopKDistillationKL(topk=0)
    with pytest.raises(ValueError, match="build the teacher cache with kd_topk=4"):
        TopKDistillationKL(topk=4)(sparse_teacher(np.zeros((2, 3), "int32"),
                                                  np.zeros((2, 3))), np.zeros((2, 7)))  # fmt: skip
    loss = get_kd_loss("topk_kl", temperature=64.0, t2_scaling=False, topk=4)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is TopKDistillationKL and clone.get_config() == loss.get_config()
    assert (clone.topk, clone.temperature, clone.t2_scaling) == (4, 64.0, False)


def test_topk_kd_is_the_global_masked_mean_on_two_replicas(mirrored_strategy, tokens):
    """Replicas holding 5 and 1 real tokens: their values sum to the one-device mean
    (each replica's masked mean times its share of the global weight, / 2)."""
    from lskd_tf.losses import get_kd_loss

    teacher, student, mask = tokens
    rows = [np.array([0, 1]), np.array([2, 2])]  # replica 1 repeats the 1-token row
    masks = [mask[[0, 1]], mask[[2, 2]] * np.array([[1.0], [0.0]])]  # ... once
    loss = get_kd_loss("topk_kl", temperature=2.0, topk=4)
    whole_t = np.concatenate([teacher[r] for r in rows])
    whole_s = np.concatenate([student[r] for r in rows])
    expected = np_fork_kd(whole_t, whole_s, np.concatenate(masks), 2.0, 4)
    stacked = [tf.constant(np.stack([a[r] for r in rows]), tf.float32) for a in (teacher, student)]
    stacked_mask = tf.constant(np.stack(masks), tf.float32)

    def replica_value():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return loss(stacked[0][replica], stacked[1][replica], stacked_mask[replica])

    values = mirrored_strategy.experimental_local_results(mirrored_strategy.run(replica_value))
    assert sum(float(v) for v in values) == pytest.approx(expected[0] - expected[2], rel=1e-5)
    assert float(values[0]) != pytest.approx(float(values[1]), rel=1e-2)


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
