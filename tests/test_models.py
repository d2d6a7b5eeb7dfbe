"""Tests of lskd_tf.models: reference parameter counts, endpoints, training, saving.

Expected CIFAR parameter counts are re-derived here by plain arithmetic from the PyTorch
reference definitions (RepDistiller models/*.py, ReActNet birealnet.py): conv
k*k*(cin/groups)*cout (+cout bias), BatchNorm 2*c (gamma, beta), Linear d*K + K. The
arithmetic reproduces the four counts stated in the issue, which validates it.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from lskd_tf import models
from lskd_tf.models.common import LayerFactory
from lskd_tf.models.layers import (
    BinaryConv2D,
    ChannelShuffle,
    ChannelSlice,
    FusedBatchNormalization,
    sign_with_ste,
)

CIFAR_NAMES = (
    "resnet8 resnet14 resnet20 resnet32 resnet44 resnet56 resnet110 resnet8x4 resnet32x4 "
    "wrn_16_1 wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11 vgg13 vgg16 vgg19 mobilenetv2 "
    "shufflev1 shufflev2"
).split()
IMAGENET_NAMES = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet_b0"]


# ---------------------------------------------------------------- reference arithmetic
def _conv(cin, cout, k, groups=1, bias=False):
    return k * k * (cin // groups) * cout + (cout if bias else 0)


def _bn(c):
    return 2 * c


def _linear(d, k):
    return d * k + k


def _ref_cifar_resnet(depth, widths, k=100):
    n = (depth - 2) // 6
    total, inp = _conv(3, widths[0], 3) + _bn(widths[0]), widths[0]
    for stage, planes in enumerate(widths[1:]):
        for b in range(n):
            total += 2 * (_conv(planes, planes, 3) + _bn(planes)) - _conv(planes, planes, 3)
            total += _conv(inp, planes, 3)
            if b == 0 and (stage > 0 or inp != planes):
                total += _conv(inp, planes, 1) + _bn(planes)
            inp = planes
    return total + _linear(widths[-1], k)


def _ref_wrn(depth, w, k=100):
    n, ch = (depth - 4) // 6, [16, 16 * w, 32 * w, 64 * w]
    total = _conv(3, 16, 3)
    for s in range(3):
        for b in range(n):
            cin, cout = (ch[s] if b == 0 else ch[s + 1]), ch[s + 1]
            total += _bn(cin) + _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3)
            total += _conv(cin, cout, 1) if cin != cout else 0
    return total + _bn(ch[3]) + _linear(ch[3], k)


_VGG_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _ref_vgg(cfg, k=100):
    total, cin = 0, 3
    for v in (v for block in cfg for v in block):
        total, cin = total + _conv(cin, v, 3, bias=True) + _bn(v), v
    return total + _linear(512, k)


def _ref_mobile_half(k=100, t_=6, w=0.5):
    setting = [
        [1, 16, 1],
        [t_, 24, 2],
        [t_, 32, 3],
        [t_, 64, 4],
        [t_, 96, 3],
        [t_, 160, 3],
        [t_, 320, 1],
    ]
    inp = int(32 * w)
    total = _conv(3, inp, 3) + _bn(inp)
    for t, c, n in setting:
        for _ in range(n):
            hid, out = inp * t, int(c * w)
            total += _conv(inp, hid, 1) + _bn(hid) + _conv(hid, hid, 3, hid) + _bn(hid)
            total += _conv(hid, out, 1) + _bn(out)
            inp = out
    return total + _conv(inp, 1280, 1) + _bn(1280) + _linear(1280, k)


def _ref_shufflev1(k=100):
    total, inp = _conv(3, 24, 1) + _bn(24), 24
    for op, nb in ((240, 4), (480, 8), (960, 4)):
        for i in range(nb):
            out = op - (inp if i == 0 else 0)
            mid, g = out // 4, (1 if inp == 24 else 3)
            total += _conv(inp, mid, 1, g) + _bn(mid) + _conv(mid, mid, 3, mid) + _bn(mid)
            total += _conv(mid, out, 1, 3) + _bn(out)
            inp = op
    return total + _linear(960, k)


def _ref_shufflev2(k=100):
    total, inp = _conv(3, 24, 1) + _bn(24), 24
    for oc, nb in ((116, 3), (232, 7), (464, 3)):
        m = oc // 2
        total += _conv(inp, inp, 3, inp) + _bn(inp) + 2 * (_conv(inp, m, 1) + _bn(m))
        total += _conv(m, m, 3, m) + _bn(m) + _conv(m, m, 1) + _bn(m)
        total += nb * (2 * (_conv(m, m, 1) + _bn(m)) + _conv(m, m, 3, m) + _bn(m))
        inp = oc
    return total + _conv(464, 1024, 1) + _bn(1024) + _linear(1024, k)


def _ref_birealnet18(k=1000):
    total, inp = _conv(3, 64, 7) + _bn(64), 64
    for s, planes in enumerate((64, 128, 256, 512)):
        for b in range(4):
            total += inp + _conv(inp, planes, 3) + _bn(planes) + 3 * planes  # shifts, PReLU
            if b == 0 and s > 0:
                total += _conv(inp, planes, 1) + _bn(planes)
            inp = planes
    return total + _linear(512, k)


def _reference_count(name: str) -> int:
    if name.startswith("resnet"):
        depth = int(name[len("resnet") :].removesuffix("x4"))
        widths = [32, 64, 128, 256] if name.endswith("x4") else [16, 16, 32, 64]
        return _ref_cifar_resnet(depth, widths)
    if name.startswith("wrn"):
        _, depth, width = name.split("_")
        return _ref_wrn(int(depth), int(width))
    if name.startswith("vgg"):
        return _ref_vgg(_VGG_CFG[name])
    return {
        "mobilenetv2": _ref_mobile_half,
        "shufflev1": _ref_shufflev1,
        "shufflev2": _ref_shufflev2,
    }[name]()


def _images(n, size, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


# ---------------------------------------------------------------- registry
def test_available_is_sorted_and_complete():
    expected = CIFAR_NAMES + IMAGENET_NAMES + ["reactnet_resnet18", "reactnet_resnet18_step1"]
    assert models.available() == sorted(models.available())
    assert set(expected) <= set(models.available())


def test_reference_arithmetic_reproduces_issue_numbers():
    assert _ref_cifar_resnet(20, [16, 16, 32, 64]) == 278_324
    assert _ref_cifar_resnet(56, [16, 16, 32, 64]) == 861_620
    assert _ref_cifar_resnet(8, [32, 64, 128, 256]) == 1_233_540
    assert _ref_cifar_resnet(32, [32, 64, 128, 256]) == 7_433_860


IMAGENET_REFERENCE_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "reactnet_resnet18": _ref_birealnet18(),
    "reactnet_resnet18_step1": _ref_birealnet18(),  # nn.Conv2d has BinaryConv's shape
}


def test_registered_reference_counts_equal_the_references():
    """The registry's counts are the references' (re-derived here for CIFAR, published
    for ImageNet); tests/test_registries.py::test_model_contract builds every model once
    and checks its trainable count against these registered numbers."""
    for name in CIFAR_NAMES:
        assert models.describe(name).reference_params == _reference_count(name), name
    for name, expected in IMAGENET_REFERENCE_COUNTS.items():
        assert models.describe(name).reference_params == expected, name


def test_built_model_is_named_and_has_the_reference_output():
    model = models.get("resnet8", 100)
    assert model.name == "resnet8" and model.output_shape == (None, 100)


def test_describe_fields_and_defaults():
    spec = models.describe("resnet20")
    assert (spec.name, spec.family, spec.default_input_shape) == ("resnet20", "cifar", (32, 32, 3))
    assert spec.reference == "RepDistiller models/resnet.py resnet20"
    assert models.describe("ResNet50").default_input_shape == (224, 224, 3)
    assert models.describe("reactnet_resnet18").family == "binary"
    assert models.get("WRN-16-1", 10).name == "wrn_16_1"  # case and "-" tolerant


# ---------------------------------------------------------------- bad input
def test_unknown_name_lists_available():
    with pytest.raises(
        ValueError,
        match=r"unknown model 'resnet21'; did you mean .*'resnet20'.*available: .*wrn_40_2",
    ):
        models.get("resnet21", 10)


def test_too_small_input_raises_clear_error():
    with pytest.raises(ValueError, match=r"input_shape \(8, 8, 3\) is too small for resnet50"):
        models.get("resnet50", 10, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="too small for vgg8: needs at least 8x8"):
        models.get("vgg8", 10, input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="multiples of 32"):
        models.get("reactnet_resnet18", 10, input_shape=(48, 48, 3))
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        models.get("resnet8", 10, input_shape=(32, 32))


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown option.*dropuot.*accepted: dropout"):
        models.get("wrn_16_1", 10, dropuot=0.3)
    with pytest.raises(ValueError, match="zero_init_residual is not defined for vgg8"):
        models.get("vgg8", 10, zero_init_residual=True)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        models.get("resnet8", 0)


# ---------------------------------------------------------------- endpoints
@pytest.mark.parametrize(
    "name, size, dim",
    [
        ("resnet8x4", 32, 256),
        ("wrn_16_2", 32, 128),
        ("vgg8", 32, 512),
        ("mobilenetv2", 32, 1280),
        ("shufflev2", 32, 1024),
        ("resnet50", 32, 2048),
        ("mobilenet_v2", 32, 1280),
        ("efficientnet_b0", 32, 1280),
        ("reactnet_resnet18", 32, 512),
    ],
)
def test_features_and_logits_endpoint(name, size, dim):
    model = models.get(name, 7, input_shape=(size, size, 3))
    x = _images(2, size)
    features, logits = models.features_and_logits(model)(x, training=False)
    kernel, bias = models.templates(model)
    assert features.shape == (2, dim) and logits.shape == (2, 7)
    assert kernel.shape == (dim, 7) and bias.shape == (7,)
    np.testing.assert_allclose(logits, np.asarray(features) @ kernel + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, model(x, training=False), rtol=1e-5, atol=1e-5)


def test_classifier_layer_contract():
    model = models.get("resnet8", 10)
    clf = model.get_layer("classifier")
    assert isinstance(clf, keras.layers.Dense) and clf.dtype_policy.name == "float32"
    assert clf.output is model.outputs[0]


# ---------------------------------------------------------------- training
def _sgd_step(model, x, y):
    before = [w.numpy() for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.05)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
        loss = loss + sum(model.losses)
    grads = tape.gradient(loss, model.trainable_weights)
    optimizer.apply(grads, model.trainable_weights)
    changed = [
        w.path
        for w, b in zip(model.trainable_weights, before, strict=True)
        if np.any(w.numpy() != b)
    ]
    return float(loss), changed


@pytest.mark.parametrize(
    "name, size",
    [
        ("resnet8", 16),
        ("wrn_16_1", 16),
        ("vgg8", 16),
        ("mobilenetv2", 16),
        ("shufflev1", 16),
        ("shufflev2", 16),
        ("resnet18", 32),
        ("efficientnet_b0", 32),
        ("reactnet_resnet18", 32),
    ],
)
def test_one_sgd_step_updates_every_weight(name, size):
    model = models.get(name, 5, input_shape=(size, size, 3), weight_decay=5e-4)
    loss, changed = _sgd_step(model, _images(4, size), np.array([0, 1, 2, 3]))
    assert np.isfinite(loss)
    assert len(changed) == len(model.trainable_weights)  # incl. binary kernels (STE)


def test_zero_init_residual_zeroes_last_bn_of_each_block():
    model = models.get("resnet8", 10, zero_init_residual=True)
    gammas = {
        layer.name: layer.gamma.numpy()
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    zero = {n for n, g in gammas.items() if not g.any()}
    assert zero == {"stage1_block0_bn2", "stage2_block0_bn2", "stage3_block0_bn2"}
    assert all(np.all(g == 1) for n, g in gammas.items() if n not in zero)


# ---------------------------------------------------------------- options
def test_weight_decay_one_l2_per_kernel_and_none_on_bn():
    wd = 5e-4
    model = models.get("shufflev2", 10, weight_decay=wd)
    kernel_layers = [
        layer
        for layer in model.layers
        if isinstance(
            layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense
        )
    ]
    kernels = [layer.kernel.numpy() for layer in kernel_layers]
    assert len(model.losses) == len(kernels) == 1 + 3 * 5 + 13 * 3 + 1 + 1
    expected = sum(wd / 2 * np.sum(np.square(k)) for k in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(
        layer.gamma_regularizer is None and layer.beta_regularizer is None for layer in bns
    )
    assert models.get("resnet8", 10).losses == []


def test_binary_net_regularizes_binary_and_real_kernels():
    model = models.get("reactnet_resnet18", 10, input_shape=(32, 32, 3), weight_decay=1e-4)
    # 1 stem + 16 binary 3x3 + 3 downsampling 1x1 + classifier
    assert len(model.losses) == 1 + 16 + 3 + 1


def test_batchnorm_matches_pytorch_defaults_and_sync_option():
    bns = [
        layer
        for layer in models.get("resnet8", 10, synchronized_bn=True).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(b.synchronized and b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fused_batchnorm_matches_keras_batchnorm(jit_compile):
    """Same outputs and gradients as Keras's BN; moving variance unbiased, like PyTorch."""
    x = tf.constant(_images(4, 6) * 3.0 + 1.0)  # n = 4 * 6 * 6 per channel
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 3))
        layer.beta.assign(np.linspace(-1.0, 1.0, 3))

    @tf.function(jit_compile=jit_compile)
    def forward_backward(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
        return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))

    for training in (False, True):  # inference first: the moving variances then differ
        for got, want in zip(forward_backward(fused, training), forward_backward(plain, training)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    n = 4 * 6 * 6
    expected = 0.9 + 0.1 * np.var(x.numpy(), axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(fused.moving_variance, expected, rtol=1e-5)
    bns = _bns(models.get("resnet8", 10))
    assert bns and all(isinstance(layer, FusedBatchNormalization) for layer in bns)


def _bns(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_synchronized_bn_trains_under_mirrored_strategy(mirrored_strategy):
    with mirrored_strategy.scope():
        model = models.get("resnet8", 4, input_shape=(8, 8, 3), synchronized_bn=True)
        model.compile(
            keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
    history = model.fit(_images(4, 8), np.array([0, 1, 2, 3]), batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mixed_precision_keeps_float32_logits():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    model = models.get("resnet8", 10, input_shape=(16, 16, 3))
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert model.get_layer("classifier").compute_dtype == "float32"
    features, logits = models.features_and_logits(model)(_images(2, 16))
    assert logits.dtype == "float32" and features.dtype == "float16"
    loss, _ = _sgd_step(model, _images(2, 16), np.array([0, 1]))
    assert np.isfinite(loss)


def test_mixed_precision_binary_net_builds_and_runs():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    model = models.get("reactnet_resnet18", 10, input_shape=(32, 32, 3))
    assert model(_images(2, 32)).dtype == "float32"


# ---------------------------------------------------------------- serialization
@pytest.mark.parametrize(
    "name, size", [("resnet8", 16), ("shufflev2", 16), ("reactnet_resnet18", 32)]
)
def test_keras_file_round_trip(name, size, tmp_path):
    model = models.get(name, 6, input_shape=(size, size, 3), weight_decay=5e-4)
    _sgd_step(model, _images(4, size), np.array([0, 1, 2, 3]))  # move BN stats and weights
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = _images(3, size, seed=1)
    f0, logits0 = models.features_and_logits(model)(x, training=False)
    f1, logits1 = models.features_and_logits(reloaded)(x, training=False)
    np.testing.assert_array_equal(logits0, logits1)
    np.testing.assert_array_equal(f0, f1)
    np.testing.assert_array_equal(logits1, reloaded(x, training=False))
    assert len(reloaded.losses) == len(model.losses)


# ---------------------------------------------------------------- layers, by hand
def test_channel_shuffle_matches_pytorch_order():
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
    # NCHW view(N, 2, 3) -> permute -> channels [0, 3, 1, 4, 2, 5]
    np.testing.assert_array_equal(ChannelShuffle(2)(x)[0, 0, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(ChannelShuffle(3)(x)[0, 0, 0], [0, 2, 4, 1, 3, 5])
    np.testing.assert_array_equal(ChannelSlice(2, 5)(x)[0, 0, 0], [2, 3, 4])


def test_strided_conv_pads_symmetrically_like_pytorch():
    inputs = keras.Input((4, 4, 1))
    outputs = LayerFactory().conv(
        inputs, 1, 3, 2, name="c", kernel_initializer=keras.initializers.Ones()
    )
    y = keras.Model(inputs, outputs)(np.ones((1, 4, 4, 1), "float32"))[0, :, :, 0]
    # padding 1 on every side: the top-left window sees 2x2 ones, the next one 2x3, ...
    np.testing.assert_array_equal(y, [[4, 6], [6, 9]])


def test_sign_ste_value_and_gradient():
    x = tf.constant([-1.5, -0.5, 0.25, 0.75, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = sign_with_ste(x)
    np.testing.assert_array_equal(y, [-1, -1, 1, 1, 1])
    # d/dx of the piecewise quadratic: 2 - 2|x| inside (-1, 1), 0 outside
    np.testing.assert_allclose(tape.gradient(y, x), [0.0, 1.0, 1.5, 0.5, 0.0])


def test_binary_conv_uses_scaled_sign_weights_and_clip_ste():
    layer = BinaryConv2D(2, kernel_size=1)
    x = tf.constant(np.arange(1, 4, dtype="float32").reshape(1, 1, 1, 3))
    layer.build(x.shape)
    w = np.array([[0.5, -2.0], [-0.1, 0.9], [0.3, 0.5]], "float32").reshape(1, 1, 3, 2)
    layer.kernel.assign(w)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y)
    alpha = np.array([0.3, 3.4 / 3])  # mean |w| per output channel
    signs = np.array([[1, -1], [-1, 1], [1, 1]])
    np.testing.assert_allclose(y[0, 0, 0], np.array([1, 2, 3]) @ (signs * alpha), rtol=1e-6)
    # gradient flows through clip(w, -1, 1): zero where |w| > 1, else the input value
    grad = tape.gradient(loss, layer.kernel).numpy().reshape(3, 2)
    np.testing.assert_allclose(grad, [[1, 0], [2, 2], [3, 3]])


# ---------------------------------------------------------------- weight decay scope
# PyTorch's SGD(weight_decay=wd, momentum=m): g = dL/dw + wd * w; buf = g on the first
# step, then buf = m * buf + g; w -= lr * buf. `_torch_sgd` applies it in NumPy to the
# gradients of the *data* loss of an unregularized copy, an update computed without
# any Keras regularizer or optimizer.
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4


def _torch_sgd(weights, data_grads, buffers, decayed):
    """One PyTorch SGD step (coupled decay, momentum) on NumPy arrays, in place."""
    for i, (w, g) in enumerate(zip(weights, data_grads, strict=True)):
        g = g + WD * w if decayed[i] else g
        buffers[i] = g if buffers[i] is None else MOMENTUM * buffers[i] + g
        weights[i] = w - LR * buffers[i]


def _assign(model, trainable, non_trainable):
    for variables, values in ((model.trainable_weights, trainable),
                              (model.non_trainable_weights, non_trainable)):  # fmt: skip
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def _data_grads(model, weights, loss_fn):
    """d(data loss)/dw at `weights`, from a copy of `model` with no regularizers."""
    plain = keras.models.clone_model(model)
    models.apply_weight_decay(plain, 0.0)  # clone_model copies the regularizers
    _assign(plain, weights, [w.numpy() for w in model.non_trainable_weights])
    assert not plain.losses
    with tf.GradientTape() as tape:
        loss = loss_fn(plain)
    return [g.numpy() for g in tape.gradient(loss, plain.trainable_weights)]


def _tiny_model(scope):
    """Conv with bias, BatchNorm (gamma, beta), Dense with bias: one of each kind."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True, bias_initializer="random_normal")(inputs)
    x = FusedBatchNormalization(
        beta_initializer="random_normal", gamma_initializer="random_uniform"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(5, bias_initializer="random_normal", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    models.apply_weight_decay(model, WD, scope)
    return model


@pytest.mark.parametrize("scope", ["kernels", "all"])
def test_weight_decay_sgd_momentum_steps_equal_pytorch_by_hand(scope):
    model = _tiny_model(scope)
    names = [v.name for v in model.trainable_weights]
    assert names == ["kernel", "bias", "gamma", "beta", "kernel", "bias"]
    decayed = [scope == "all" or n == "kernel" for n in names]
    assert len(model.losses) == sum(decayed)
    x, y = _images(8, 6), np.arange(8) % 5
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(LR, momentum=MOMENTUM), ce)
    other = [scope == "kernels" or n == "kernel" for n in names]  # the other scope
    weights, buffers = [w.numpy() for w in model.trainable_weights], [None] * 6
    other_weights, other_buffers = list(weights), [None] * 6
    for _ in range(2):  # the second step uses the momentum buffer
        grads = _data_grads(model, weights, lambda m: ce(y, m(x, training=True)))
        _torch_sgd(weights, grads, buffers, decayed)
        grads = _data_grads(model, other_weights, lambda m: ce(y, m(x, training=True)))
        _torch_sgd(other_weights, grads, other_buffers, other)
        model.train_on_batch(x, y)
        for name, expected, got in zip(names, weights, model.trainable_weights, strict=True):
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-7, err_msg=name)
    # The tolerance resolves the scope: decaying gamma/beta/bias or not moves them by
    # ~lr * wd * w * (1 + (1 + m)) = 5e-5 * |w| over two steps, 10x the tolerance.
    for i in (1, 2, 3, 5):
        assert np.abs(weights[i] - other_weights[i]).max() > 2e-6, names[i]


def _distill_three_steps(scope, teacher, student_init):
    """Student weights after 3 Distiller steps (0.1 CE + 0.9 KD, T = 4, SGD 0.05/0.9)."""
    from lskd_tf import Distiller, DistillSpec

    student = models.get("resnet8", 10, input_shape=(16, 16, 3))
    student.set_weights(student_init)
    models.apply_weight_decay(student, WD, scope)
    distiller = Distiller(
        teacher, student, DistillSpec(temperature=4.0, kd_weight=0.9, ce_weight=0.1)
    )
    distiller.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM))
    for x, y in _DISTILL_BATCHES:
        distiller.train_on_batch(x, y)
    return student


_DISTILL_BATCHES = [(_images(8, 16, seed=10 + i), np.arange(8) * (i + 1) % 10) for i in range(3)]


def _reference_three_steps(teacher, student):
    """The papers' update (decay on every parameter), by hand from data-loss gradients."""
    temperature = 4.0
    weights = [w.numpy() for w in student.trainable_weights]
    buffers = [None] * len(weights)
    non_trainable = [w.numpy() for w in student.non_trainable_weights]
    for x, y in _DISTILL_BATCHES:
        t = teacher(x, training=False)

        def loss(m, x=x, y=y, t=t):
            s = m(x, training=True)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, s))
            p_t = tf.nn.softmax(t / temperature)
            log_ratio = tf.nn.log_softmax(t / temperature) - tf.nn.log_softmax(s / temperature)
            kd = temperature**2 * tf.reduce_mean(tf.reduce_sum(p_t * log_ratio, -1))
            return 0.1 * ce + 0.9 * kd

        plain = keras.models.clone_model(student)
        models.apply_weight_decay(plain, 0.0)
        _assign(plain, weights, non_trainable)
        with tf.GradientTape() as tape:
            value = loss(plain)
        grads = [g.numpy() for g in tape.gradient(value, plain.trainable_weights)]
        non_trainable = [w.numpy() for w in plain.non_trainable_weights]  # BN statistics
        _torch_sgd(weights, grads, buffers, [True] * len(weights))
    return weights


def test_weight_decay_all_matches_papers_sgd_over_three_distillation_steps():
    """resnet14 -> resnet8, 3 Distiller steps: "all" is the papers' update within 1e-5,
    "kernels" is not (it skips BN gamma/beta and biases: ~1e-4 apart)."""
    keras.utils.set_random_seed(0)
    teacher = models.get("resnet14", 10, input_shape=(16, 16, 3))
    teacher(_images(32, 16, seed=99), training=True)  # non-trivial BN statistics
    keras.utils.set_random_seed(1)
    init = models.get("resnet8", 10, input_shape=(16, 16, 3))
    init_weights = init.get_weights()
    reference = _reference_three_steps(teacher, init)
    diffs = {}
    for scope in ("all", "kernels"):
        student = _distill_three_steps(scope, teacher, init_weights)
        got = [w.numpy() for w in student.trainable_weights]
        per_var = [np.abs(g - r).max() for g, r in zip(got, reference, strict=True)]
        worst = int(np.argmax(per_var))
        diffs[scope] = (per_var[worst], student.trainable_weights[worst].path)
    print(f"max |w - reference| after 3 steps: {diffs}")
    assert diffs["all"][0] < 1e-5
    assert 3e-5 < diffs["kernels"][0] < 1e-3  # the scope alone accounts for it
    assert diffs["kernels"][1].endswith(("gamma", "beta", "bias"))


def test_weight_decay_scope_covers_every_trainable_variable():
    """Every custom layer's parameters: BinaryConv2D, LearnableBias, PReLU, BN, Dense,
    DepthwiseConv2D; under "kernels" only the variables named kernel."""
    for name, size in (("reactnet_resnet18", 32), ("shufflev2", 16), ("mobilenetv2", 16)):
        for scope in ("kernels", "all"):
            model = models.get(name, 6, input_shape=(size, size, 3), weight_decay=WD,
                               weight_decay_scope=scope)  # fmt: skip
            trainable = model.trainable_weights
            expected = [v for v in trainable if scope == "all" or v.name == "kernel"]
            assert [v.path for v in trainable if v.regularizer] == [v.path for v in expected]
            value = sum(WD / 2 * np.sum(np.square(v.numpy())) for v in expected)
            np.testing.assert_allclose(float(sum(model.losses)), value, rtol=1e-5)
    kinds = {type(v.regularizer).__name__ for v in model.trainable_weights}
    assert kinds == {"L2"} and models.get("resnet8", 10, weight_decay_scope="all").losses == []


def test_weight_decay_all_survives_keras_round_trip_and_policies(tmp_path, mirrored_strategy):
    model = models.get("reactnet_resnet18", 6, input_shape=(32, 32, 3), weight_decay=WD,
                       weight_decay_scope="all")  # fmt: skip
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    n = len(model.trainable_weights)
    assert len(model.losses) == len(reloaded.losses) == n
    np.testing.assert_allclose(float(sum(reloaded.losses)), float(sum(model.losses)), rtol=1e-6)
    with mirrored_strategy.scope():
        mirrored = models.get("resnet8", 10, weight_decay=WD, weight_decay_scope="all")
    assert len(mirrored.losses) == len(mirrored.trainable_weights)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    mixed = models.get("resnet8", 10, weight_decay=WD, weight_decay_scope="all")
    assert len(mixed.losses) == len(mixed.trainable_weights)
    assert {str(loss.dtype) for loss in mixed.losses} == {"<dtype: 'float32'>"}


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_weight_decay_all_under_mirrored_strategy_and_mixed_precision(
    policy, mirrored_strategy, tiny_cnn
):
    """One Distiller step on 2 replicas: with plain SGD, decaying every parameter moves
    each one by exactly lr * wd * w more than no decay (once, not once per replica)."""
    from lskd_tf import Distiller, DistillSpec

    keras.mixed_precision.set_dtype_policy(policy)
    data = tf.data.Dataset.from_tensor_slices((_images(16, 8), np.arange(16) % 10)).batch(16)
    wd = 0.05

    def one_step(weight_decay):
        with mirrored_strategy.scope():
            teacher = tiny_cnn(name="teacher", seed=1, synchronized=True, dropout=0.0)
            student = tiny_cnn(name="student", seed=2, synchronized=True, dropout=0.0)
            models.apply_weight_decay(student, weight_decay, "all")
            distiller = Distiller(
                teacher, student, DistillSpec(temperature=4.0, kd_weight=0.9, ce_weight=0.1)
            )
            distiller.compile(optimizer=keras.optimizers.SGD(LR))
        before = [v.numpy() for v in student.trainable_weights]
        distiller.fit(data, epochs=1, verbose=0)
        return before, [v.numpy() for v in student.trainable_weights], student

    w0, plain, _ = one_step(0.0)
    _, decayed, student = one_step(wd)
    names = [v.path for v in student.trainable_weights]
    assert [n.rsplit("/", 1)[1] for n in names] == ["kernel", "gamma", "beta", "kernel", "bias"]
    for name, start, a, b in zip(names, w0, plain, decayed, strict=True):
        np.testing.assert_allclose(a - b, LR * wd * start, rtol=0, atol=2e-6, err_msg=name)


def test_weight_decay_scope_bad_input():
    with pytest.raises(ValueError, match="weight_decay_scope 'bn'; choose one of: kernels, all"):
        models.get("resnet8", 10, weight_decay=WD, weight_decay_scope="bn")
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="build the model"):
        models.apply_weight_decay(unbuilt, WD, "all")


def test_reactnet_step2_starts_from_step1_weights(tmp_path):
    """ReActNet's two steps (resnet/1_step1, resnet/2_step2): real 3x3 convs first, then
    the binary network initialized from that checkpoint by layer name."""
    from lskd_tf import pretrained
    from lskd_tf.models.layers import BinaryConv2D

    step1 = models.get("reactnet_resnet18_step1", 6, input_shape=(32, 32, 3))
    convs = [layer for layer in step1.layers if layer.name.endswith("_binary_conv")]
    assert len(convs) == 16 and all(type(c) is keras.layers.Conv2D for c in convs)
    _sgd_step(step1, _images(4, 32), np.array([0, 1, 2, 3]))  # move weights and BN stats
    path = tmp_path / "step1.keras"
    step1.save(path)
    step2 = models.get("reactnet_resnet18", 6, input_shape=(32, 32, 3))
    assert isinstance(step2.get_layer("stage1_block0_binary_conv"), BinaryConv2D)
    record = pretrained.initialize(step2, path)
    assert record["keys"] == len(step2.weights) and len(record["sha256"]) == 64
    for a, b in zip(step1.weights, step2.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="needs \\(7, 7, 3, 64\\)") as err:
        pretrained.initialize(models.get("reactnet_resnet18", 6, input_shape=(32, 32, 3)),
                              _saved(models.get("resnet8", 6), tmp_path / "r8.keras"))  # fmt: skip
    assert "\n" not in str(err.value)


def _saved(model, path):
    model.save(path)
    return path
