"""Distiller: frozen teacher, loss values, one SGD step by hand, strategies, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lskd_tf import Distiller, DistillSpec
from lskd_tf.distiller import with_teacher_logits
from lskd_tf.losses import DistillationKL, SmoothedCrossEntropy

RNG = np.random.default_rng(0)
X = RNG.random((64, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 10, 64).astype("int32")


def snapshot(model):
    return [w.numpy().copy() for w in model.weights]  # incl. BN moving statistics


def test_teacher_is_frozen_and_student_learns(tiny_cnn):
    teacher, student = tiny_cnn(name="teacher", seed=1), tiny_cnn(name="student", seed=2)
    before_teacher, before_student = snapshot(teacher), snapshot(student)
    distiller = Distiller(teacher, student, DistillSpec(temperature=4.0, ce_weight=0.5))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    distiller.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    for before, after in zip(before_teacher, snapshot(teacher)):
        np.testing.assert_array_equal(before, after)  # bit-identical, BN stats included
    changed = [not np.array_equal(b, a) for b, a in zip(before_student, snapshot(student))]
    assert all(changed)  # kernels, BN gamma/beta and the student's BN moving statistics


def test_reported_loss_terms_match_hand_computation(tiny_cnn):
    teacher, student = tiny_cnn(name="teacher", seed=1), tiny_cnn(name="student", seed=2)
    spec = DistillSpec(temperature=3.0, kd_weight=0.7, ce_weight=0.3, label_smoothing=0.2,
                       smoothing="others")  # fmt: skip
    distiller = Distiller(teacher, student, spec)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(X, Y, batch_size=64, verbose=0, return_dict=True)
    t, s = teacher.predict(X, verbose=0), student.predict(X, verbose=0)
    ce = float(SmoothedCrossEntropy(0.2, "others")(Y, s))
    kd = float(DistillationKL(3.0)(t, s))
    np.testing.assert_allclose(logs["ce_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.3 * ce + 0.7 * kd, rtol=1e-5)
    np.testing.assert_allclose(logs["top1"], np.mean(s.argmax(1) == Y), atol=1e-7)
    top5 = np.mean([y in np.argsort(-row)[:5] for row, y in zip(s, Y)])
    np.testing.assert_allclose(logs["top5"], top5, atol=1e-7)
    np.testing.assert_allclose(logs["agreement"], np.mean(s.argmax(1) == t.argmax(1)), atol=1e-7)


def test_one_sgd_step_equals_hand_gradient(tiny_cnn):
    """Weights after one plain SGD step are w - lr * d(loss)/dw of the documented loss."""
    teacher, student = tiny_cnn(name="teacher", seed=1), tiny_cnn(name="student", seed=2)
    student = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(10, name="classifier")])  # fmt: skip
    w0 = [v.numpy().copy() for v in student.trainable_variables]
    x, y = X[:16], Y[:16]
    t_logits = teacher(x, training=False).numpy()
    with tf.GradientTape() as tape:
        s_logits = student(x, training=True)
        p_t = tf.nn.softmax(t_logits / 2.0)
        kl = tf.reduce_sum(
            p_t * (tf.nn.log_softmax(t_logits / 2.0) - tf.nn.log_softmax(s_logits / 2.0)), -1
        )
        ce = tf.reduce_sum(-tf.one_hot(y, 10) * tf.nn.log_softmax(s_logits), -1)
        loss = 0.5 * tf.reduce_mean(ce) + 0.5 * 4.0 * tf.reduce_mean(kl)
    grads = tape.gradient(loss, student.trainable_variables)
    distiller = Distiller(
        teacher, student, DistillSpec(temperature=2.0, kd_weight=0.5, ce_weight=0.5)
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for w, g, v in zip(w0, grads, student.trainable_variables):
        np.testing.assert_allclose(v.numpy(), w - 0.5 * g.numpy(), atol=1e-6)


def test_cached_teacher_logits_replace_the_teacher(tiny_cnn):
    teacher = tiny_cnn(name="teacher", seed=1)
    cached = teacher.predict(X, verbose=0)

    def train(data):
        student = tiny_cnn(name="student", seed=2)
        distiller = Distiller(teacher, student, DistillSpec(temperature=4.0))
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        distiller.fit(data.batch(16), epochs=1, verbose=0, shuffle=False)
        return snapshot(student)

    plain = train(tf.data.Dataset.from_tensor_slices((X, Y)))
    with_cache = train(tf.data.Dataset.from_tensor_slices((with_teacher_logits(X, cached), Y)))
    zeros = with_teacher_logits(X, np.zeros_like(cached))
    with_zeros = train(tf.data.Dataset.from_tensor_slices((zeros, Y)))
    for a, b in zip(plain, with_cache):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(plain, with_zeros))


def test_two_replicas_match_one_device(mirrored_strategy, tiny_cnn):
    """2 logical CPUs under MirroredStrategy == 1 device on the same global batch."""
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)

    def train(strategy):
        with strategy.scope():
            # No dropout: its masks are drawn per replica, so they cannot match.
            teacher = tiny_cnn(name="teacher", seed=1, synchronized=True, dropout=0.0)
            student = tiny_cnn(name="student", seed=2, synchronized=True, dropout=0.0)
            distiller = Distiller(teacher, student, DistillSpec(temperature=4.0, ce_weight=0.5))
            distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        logs = distiller.fit(data, epochs=3, verbose=0, shuffle=False).history
        return snapshot(student), logs

    one, logs_one = train(tf.distribute.get_strategy())
    two, logs_two = train(mirrored_strategy)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(logs_one["loss"], logs_two["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs_one["kd_loss"], logs_two["kd_loss"], rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training(policy, tiny_cnn):
    keras.mixed_precision.set_dtype_policy(policy)
    teacher, student = tiny_cnn(name="teacher", seed=1), tiny_cnn(name="student", seed=2)
    before_teacher = snapshot(teacher)
    distiller = Distiller(teacher, student, DistillSpec(temperature=64.0))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    if policy == "mixed_float16":
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    logs = distiller.fit(X, Y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and logs["loss"][0] > 0
    assert student.layers[1].compute_dtype == policy.split("_")[1]
    for before, after in zip(before_teacher, snapshot(teacher)):
        np.testing.assert_array_equal(before, after)


def test_bad_arguments(tiny_cnn):
    teacher = tiny_cnn(name="teacher")
    with pytest.raises(ValueError, match="teacher outputs 10 classes but student outputs 5"):
        Distiller(teacher, tiny_cnn(num_classes=5))
    unbuilt = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="the teacher model is not built"):
        Distiller(unbuilt, tiny_cnn())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Distiller(teacher, tiny_cnn(), DistillSpec(temperature=0))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        Distiller(teacher, tiny_cnn(), DistillSpec(label_smoothing=1.0))
    with pytest.raises(ValueError, match="unknown smoothing convention"):
        Distiller(teacher, tiny_cnn(), DistillSpec(smoothing="shen"))
    with pytest.raises(ValueError, match="both 0"):
        Distiller(teacher, tiny_cnn(), DistillSpec(kd_weight=0, ce_weight=0))


def test_sequence_logits_with_padding_mask_match_numpy():
    """(B, L, V) logits, (B, L) token labels and a padding mask as sample_weight:
    every term is the mean over non-padding tokens (NumPy hand computation)."""
    rng = np.random.default_rng(3)
    batch, length, vocab, temperature, alpha = 3, 5, 7, 2.0, 0.1

    def tagger(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((length,), dtype="int32")
        spread = keras.initializers.RandomNormal(stddev=2.0)  # logits far from uniform
        embedded = keras.layers.Embedding(vocab, 8, embeddings_initializer=spread)(inputs)
        return keras.Model(inputs, keras.layers.Dense(vocab)(embedded))

    teacher, student = tagger(1), tagger(2)
    x = rng.integers(0, vocab, (batch, length)).astype("int32")
    y = rng.integers(0, vocab, (batch, length)).astype("int32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], "float32")
    spec = DistillSpec(temperature=temperature, kd_weight=0.6, ce_weight=0.4,
                       label_smoothing=alpha, smoothing="uniform")  # fmt: skip
    distiller = Distiller(teacher, student, spec)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, sample_weight=mask, batch_size=batch, verbose=0,
                              return_dict=True)  # fmt: skip

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    targets = (1 - alpha) * np.eye(vocab)[y] + alpha / vocab
    ce_tokens = -(targets * log_softmax(s)).sum(-1)
    log_pt, log_ps = log_softmax(t / temperature), log_softmax(s / temperature)
    kd_tokens = temperature**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
    ce = (ce_tokens * mask).sum() / mask.sum()
    kd = (kd_tokens * mask).sum() / mask.sum()
    np.testing.assert_allclose(logs["ce_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.4 * ce + 0.6 * kd, rtol=1e-5)
    accuracy = ((s.argmax(-1) == y) * mask).sum() / mask.sum()
    np.testing.assert_allclose(logs["top1"], accuracy, atol=1e-6)
    agreement = ((s.argmax(-1) == t.argmax(-1)) * mask).sum() / mask.sum()
    np.testing.assert_allclose(logs["agreement"], agreement, atol=1e-6)
    # Padding never counts: changing the logits' inputs at padded positions changes nothing.
    x_padded = x.copy()
    x_padded[mask == 0] = (x_padded[mask == 0] + 1) % vocab
    again = distiller.evaluate(x_padded, y, sample_weight=mask, batch_size=batch, verbose=0,
                               return_dict=True)  # fmt: skip
    np.testing.assert_allclose(again["loss"], logs["loss"], rtol=1e-6)


def test_student_weight_decay_is_part_of_the_loss(tiny_cnn):
    """The student's regularization losses (L2 weight decay) are added; the teacher's are not."""
    teacher, student = tiny_cnn(name="teacher", seed=1), tiny_cnn(name="student", seed=2)
    for model in (teacher, student):
        model.get_layer("classifier").kernel.regularizer = keras.regularizers.L2(0.5)
    distiller = Distiller(teacher, student, DistillSpec(temperature=2.0))
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(X, Y, batch_size=64, verbose=0, return_dict=True)
    decay = 0.5 * np.sum(student.get_layer("classifier").kernel.numpy() ** 2)
    np.testing.assert_allclose(logs["loss"] - logs["kd_loss"], decay, rtol=1e-4)


def test_topk_kd_student_gradient_is_the_forks_criterion():
    """DistillSpec(kd_loss="topk_kl", kd_topk=4, 0.9 KD + 0.1 LS-CE, eps 0.1 uniform) on
    padded token logits: the loss's gradient with respect to the student's logits is the
    fork's (RayeRen/multilingual-kd-pytorch, fairseq/criterions/
    distill_label_smoothed_cross_entropy_loss.py, divided by the non-padding tokens as
    fairseq does), with an online teacher and with its cached top 4 (sparse) alike."""
    from lskd_tf.losses import sparse_teacher

    rng = np.random.default_rng(5)
    batch, length, vocab, T, k, eps, alpha = 3, 5, 9, 3.0, 4, 0.1, 0.9

    def tagger(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((length,), dtype="int32")
        spread = keras.initializers.RandomNormal(stddev=2.0)
        embedded = keras.layers.Embedding(vocab, 8, embeddings_initializer=spread)(inputs)
        return keras.Model(inputs, keras.layers.Dense(vocab)(embedded))

    teacher = tagger(1)
    x = rng.integers(0, vocab, (batch, length)).astype("int32")
    y = rng.integers(0, vocab, (batch, length)).astype("int32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], "float32")
    spec = DistillSpec(temperature=T, kd_weight=alpha, ce_weight=1 - alpha, label_smoothing=eps,
                       kd_loss="topk_kl", kd_topk=k)  # fmt: skip
    distiller = Distiller(teacher, tagger(2), spec)
    student = rng.normal(0, 2, (batch, length, vocab)).astype("float32")
    t = teacher.predict(x, verbose=0)
    top_logits, top_ids = tf.math.top_k(t, k)

    def loss_and_grad(batch_x):
        logits = tf.constant(student)
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = distiller.compute_loss(batch_x, y, logits, sample_weight=mask)
        return float(loss), tape.gradient(loss, logits).numpy()

    online = loss_and_grad(x)
    cached = loss_and_grad(with_teacher_logits(x, sparse_teacher(top_ids, top_logits)))

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    s = student.astype(np.float64)
    idx = np.argsort(-t, axis=-1, kind="stable")[..., :k]  # output2topk
    p = np.exp(log_softmax(np.take_along_axis(t, idx, -1).astype(np.float64) / T))
    distill = -(np.take_along_axis(log_softmax(s / T), idx, -1) * p).sum(-1)
    nll = -np.take_along_axis(log_softmax(s), y[..., None], -1)[..., 0]
    smooth = -log_softmax(s).sum(-1)
    per_token = alpha * distill * T * T + (1 - alpha) * ((1 - eps) * nll + eps / vocab * smooth)
    fork = (per_token * mask).sum() / mask.sum()
    p_dense = np.zeros_like(s)
    np.put_along_axis(p_dense, idx, p, -1)
    targets = (1 - eps) * np.eye(vocab)[y] + eps / vocab
    grad = alpha * T * (np.exp(log_softmax(s / T)) - p_dense) + (1 - alpha) * (
        np.exp(log_softmax(s)) - targets
    )
    grad *= (mask / mask.sum())[..., None]
    entropy = (-(p * np.log(p)).sum(-1) * mask).sum() / mask.sum()
    for loss, gradient in (online, cached):
        np.testing.assert_allclose(gradient, grad, rtol=1e-4, atol=1e-7)
        # the reported KD value is the fork's minus the top-k teacher's entropy (constant)
        np.testing.assert_allclose(loss, fork - alpha * T * T * entropy, rtol=1e-5)
    assert cached[0] == pytest.approx(online[0], rel=1e-6)
    np.testing.assert_allclose(cached[1], online[1], rtol=1e-6, atol=1e-9)


def test_kd_topk_is_out_of_old_runs_identity_and_checked():
    assert "kd_topk" not in DistillSpec().to_dict()
    assert DistillSpec(kd_loss="topk_kl", kd_topk=4).to_dict()["kd_topk"] == 4
    with pytest.raises(ValueError, match="set kd_topk >= 1"):
        DistillSpec(kd_loss="topk_kl")
    with pytest.raises(ValueError, match="set kd_topk=0 for kd_loss='kl'"):
        DistillSpec(kd_topk=4)
    with pytest.raises(ValueError, match="must be < the 10 classes"):
        teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(10)])
        Distiller(teacher, teacher, DistillSpec(kd_loss="topk_kl", kd_topk=10))


def _vocabulary_models(seed: int, classes: int = 3_000):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(classes)])


def test_online_topk_kd_equals_the_sparse_cache_at_a_vocabulary_size():
    """At a vocabulary size the online teacher's top k (`fast_ops.top_k`) and the cached
    sparse top k train the same student bit for bit, loss terms and agreement included;
    pure KD reports the cross-entropy through `ReportedCrossEntropy`, to float32
    rounding the trained cross-entropy's value."""
    from lskd_tf.losses import ReportedCrossEntropy, sparse_teacher

    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3_000, 32).astype("int32")
    teacher = _vocabulary_models(1)
    top = tf.math.top_k(teacher(x), 4)
    spec = DistillSpec(temperature=2.0, kd_loss="topk_kl", kd_topk=4)

    def train(inputs):
        student = _vocabulary_models(2)
        distiller = Distiller(teacher, student, spec)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        logs = distiller.fit(inputs, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return distiller, snapshot(student), logs.history

    online, online_weights, online_logs = train(x)
    _, cached_weights, cached_logs = train(
        with_teacher_logits(x, sparse_teacher(top.indices, top.values))
    )
    for a, b in zip(online_weights, cached_weights):
        np.testing.assert_array_equal(a, b)
    assert online_logs == cached_logs and online_logs["agreement"][-1] > 0

    assert type(online.ce_loss_fn) is ReportedCrossEntropy  # pure KD: reported only
    logs = online.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    trained_ce = float(SmoothedCrossEntropy(0.0)(y, online.student(x)))
    assert logs["ce_loss"] == pytest.approx(trained_ce, rel=1e-6)
    mixed = Distiller(teacher, _vocabulary_models(2), DistillSpec(ce_weight=0.1))
    assert type(mixed.ce_loss_fn) is SmoothedCrossEntropy  # trained on: differentiated
