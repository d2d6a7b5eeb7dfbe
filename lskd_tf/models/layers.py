"""Custom Keras layers used by the model zoo (all serializable, all XLA-compilable).

Only what standard Keras layers cannot express exactly is here: ShuffleNet's channel
shuffle/split, max pooling with PyTorch's -inf padding, and the binary-network pieces of
ReActNet (sign with a straight-through estimator, binary conv, learnable shift); plus
`FusedBatchNormalization`, Keras's BatchNorm on TensorFlow's fused kernel (speed).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

_PACKAGE = "lskd_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle for NHWC tensors.

    Channel index c = i * (C / g) + j (group i, position j) moves to j * g + i, exactly
    PyTorch's `x.view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W)`.

    Example:
        >>> ChannelShuffle(2)(ops.reshape(ops.arange(4.0), (1, 1, 1, 4)))  # [0, 2, 1, 3]
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        shape = ops.shape(x)
        channels = x.shape[-1]
        grouped = ops.reshape(
            x, (shape[0], shape[1], shape[2], self.groups, channels // self.groups)
        )
        grouped = ops.transpose(grouped, (0, 1, 2, 4, 3))
        return ops.reshape(grouped, (shape[0], shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelSlice(keras.layers.Layer):
    """`x[..., start:stop]`: ShuffleNetV2's channel split (`x[:, :c]`, `x[:, c:]` in NCHW)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantPadding2D(keras.layers.Layer):
    """Pads H and W by `padding` on both sides with `value` (e.g. -inf before max pooling,
    which is what PyTorch's `MaxPool2d(padding=p)` does)."""

    def __init__(self, padding: int, value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)
        self.value = float(value)

    def call(self, x):
        p = self.padding
        return ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=self.value)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = 2 * self.padding
        return (n, None if h is None else h + grow, None if w is None else w + grow, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def sign_with_ste(x):
    """sign(x) forward; backward the derivative of Bi-Real/ReActNet's piecewise quadratic

        F(x) = -1 (x < -1),  x^2 + 2x (-1 <= x < 0),  -x^2 + 2x (0 <= x < 1),  1 (x >= 1)

    i.e. dF/dx = 2 - 2|x| on (-1, 1), 0 outside. Implemented as
    `stop_gradient(sign(x) - F(x)) + F(x)`, whose value is exactly sign(x).
    """
    approx = ops.where(
        x < -1.0,
        -1.0,
        ops.where(x < 0.0, x * x + 2.0 * x, ops.where(x < 1.0, -x * x + 2.0 * x, 1.0)),
    )
    approx = ops.cast(approx, x.dtype)
    return ops.stop_gradient(ops.sign(x) - approx) + approx


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryActivation(keras.layers.Layer):
    """Sign activation with the ReActNet/Bi-Real straight-through estimator (see
    `sign_with_ste`). Same value in training and inference."""

    def call(self, x):
        return sign_with_ste(x)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnableBias(keras.layers.Layer):
    """Per-channel learnable shift `x + b` (ReActNet's RSign/RPReLU shifts), b init 0.

    `bias_regularizer` is serialized, so weight decay on the shift (scope "all" of
    `lskd_tf.models.weight_decay`) survives a `.keras` round trip.
    """

    def __init__(self, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(input_shape[-1],), initializer="zeros", name="bias", trainable=True,
            regularizer=self.bias_regularizer,
        )  # fmt: skip

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryConv2D(keras.layers.Layer):
    """ReActNet's `HardBinaryConv`: conv with weights alpha * sign(W), no bias.

    alpha_o = mean(|W_o|) per output channel (no gradient through alpha). Backward
    uses the straight-through estimator of clip(W, -1, 1):

        W_b = stop_gradient(alpha * sign(W) - clip(W, -1, 1)) + clip(W, -1, 1)

    (The reference scales the output by alpha at inference instead of the weights; the
    conv is linear, so the values are identical.) Padding is `kernel_size // 2` on both
    sides, as in PyTorch. Kernel init U(0, 0.001) as in the reference.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        kernel_initializer="binary_default",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        if kernel_initializer == "binary_default":
            kernel_initializer = keras.initializers.RandomUniform(0.0, 1e-3)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
            trainable=True,
        )

    def call(self, x):
        w = self.kernel
        alpha = ops.stop_gradient(ops.mean(ops.abs(w), axis=(0, 1, 2), keepdims=True))
        clipped = ops.clip(w, -1.0, 1.0)
        w_binary = ops.stop_gradient(alpha * ops.sign(w) - clipped) + clipped
        p = self.kernel_size // 2
        if p:
            x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        return ops.conv(x, ops.cast(w_binary, x.dtype), strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        p, k, s = self.kernel_size // 2, self.kernel_size, self.strides

        def out(size):
            return None if size is None else (size + 2 * p - k) // s + 1

        return (n, out(h), out(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with TensorFlow's fused kernel.

    Keras 3 normalizes with separate moments and normalize ops, about ten per layer
    forward and twenty backward, each a pass over the activations; TensorFlow's
    `FusedBatchNormV3` does each direction in one kernel. On a 2-core CPU that cut
    a ResNet-20 train step (batch 64) from 146 to 105 ms and a ResNet-56 forward
    pass from 96 to 72 ms. Same weights and config, same outputs up to float
    rounding; one difference, PyTorch's: the moving variance is updated with the
    *unbiased* batch variance, ``var * n / (n - 1)`` (n = batch x height x width).
    4-D channels-last inputs on the TensorFlow backend use the fused kernel; any
    other case (masks, ``synchronized``, ``renorm``, no ``center``/``scale``) runs
    Keras's own code.

    Example:
        >>> bn = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
        >>> y = bn(ops.ones((2, 4, 4, 8)), training=True)
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and not self.synchronized
            and not self.renorm
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # float32 statistics, as Keras does
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, data_format="NHWC", is_training=True,
            )  # fmt: skip
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1 - self.momentum)
            )
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )  # fmt: skip
        return tf.cast(y, self.compute_dtype)
