"""Shared building blocks: PyTorch-faithful convs, BatchNorm, initializers and the head.

Every architecture in this package is built through one `LayerFactory`, so the options
that matter for the training recipes are applied in exactly one place:

- weight decay is not a factory option: `lskd_tf.models.get` attaches it to the built
  model with `weight_decay.apply_weight_decay` (one walk over the variables, for every
  architecture and scope);
- BatchNorm with PyTorch's defaults (momentum 0.1 == Keras momentum 0.9, eps 1e-5,
  moving variance from the unbiased batch variance), on TensorFlow's fused kernel
  (`layers.FusedBatchNormalization`), optionally `synchronized=True` for multi-replica
  training;
- convolutions padded like PyTorch (`padding=k // 2` on both sides). Keras `"same"` pads
  asymmetrically for strided convs on even inputs, which shifts every sampling grid.
- a float32 `Dense` named `"classifier"` whose input is the penultimate feature vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from lskd_tf.models.layers import FusedBatchNormalization

CLASSIFIER_NAME = "classifier"

# PyTorch BatchNorm2d defaults: running = (1 - 0.1) * running + 0.1 * batch, eps = 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def kaiming_normal_fan_out(kernel_size: int, out_channels: int) -> keras.initializers.Initializer:
    """PyTorch `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.

    std = sqrt(2 / fan_out), fan_out = k * k * out_channels (PyTorch counts the output
    channels also for depthwise convs, unlike Keras' fan computation for
    `DepthwiseConv2D`, hence the explicit std).
    """
    fan_out = kernel_size * kernel_size * out_channels
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan_out))


def torch_default_uniform(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (`kaiming_uniform_(a=sqrt(5))` for weights reduces to this bound; biases use it too.)
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def conv_initializer(
    scheme: str, kernel_size: int, in_channels: int, out_channels: int, groups: int = 1
) -> keras.initializers.Initializer:
    """Kernel initializer for a conv, following the reference's scheme.

    Args:
        scheme: "kaiming_fan_out" (torchvision ResNets, RepDistiller ResNet/WRN/VGG/
            MobileNetV2) or "torch_default" (modules the reference leaves at PyTorch's
            default, e.g. the ShuffleNets).
    """
    if scheme == "kaiming_fan_out":
        return kaiming_normal_fan_out(kernel_size, out_channels)
    if scheme == "torch_default":
        return torch_default_uniform(kernel_size * kernel_size * (in_channels // groups))
    raise ValueError(f"unknown conv init scheme {scheme!r}")


@dataclass(frozen=True)
class LayerFactory:
    """Creates the layers of one model with the model-wide options applied.

    Example:
        >>> f = LayerFactory()
        >>> x = f.conv(inputs, 16, 3, name="stem_conv")
        >>> x = f.bn(x, name="stem_bn")
    """

    synchronized_bn: bool = False
    conv_init: str = "kaiming_fan_out"

    def conv(
        self,
        x,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        *,
        groups: int = 1,
        use_bias: bool = False,
        name: str,
        kernel_initializer: keras.initializers.Initializer | None = None,
    ):
        """`nn.Conv2d(cin, filters, k, stride, padding=k // 2, groups, bias)` in NHWC."""
        in_channels = x.shape[-1]
        if kernel_initializer is None:
            kernel_initializer = conv_initializer(
                self.conv_init, kernel_size, in_channels, filters, groups
            )
        x, padding = _torch_padding(x, kernel_size, strides, name)
        depthwise = groups == in_channels and groups == filters and groups > 1
        common = dict(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            bias_initializer="zeros",
            name=name,
        )
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(
                depthwise_initializer=kernel_initializer,
                **common,
            )
        else:
            layer = keras.layers.Conv2D(
                filters,
                groups=groups,
                kernel_initializer=kernel_initializer,
                **common,
            )
        return layer(x)

    def bn(self, x, *, name: str, zero_gamma: bool = False):
        """`nn.BatchNorm2d` (gamma 1, beta 0; gamma 0 for zero-init residual branches)."""
        return FusedBatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            synchronized=self.synchronized_bn,
            gamma_initializer="zeros" if zero_gamma else "ones",
            name=name,
        )(x)

    def classifier(
        self,
        features,
        num_classes: int,
        *,
        kernel_initializer: keras.initializers.Initializer | None = None,
        bias_initializer: keras.initializers.Initializer | str | None = None,
    ):
        """The float32 `Dense(num_classes)` named "classifier" (logits, no activation).

        Defaults to PyTorch's `nn.Linear` init, U(+-1/sqrt(D)) for kernel and bias.
        """
        dim = features.shape[-1]
        return keras.layers.Dense(
            num_classes,
            kernel_initializer=kernel_initializer or torch_default_uniform(dim),
            bias_initializer=bias_initializer or torch_default_uniform(dim),
            dtype="float32",
            name=CLASSIFIER_NAME,
        )(features)


def _torch_padding(x, kernel_size: int, strides: int, name: str):
    """Pad like PyTorch (k // 2 on every side); returns (tensor, Keras padding mode)."""
    pad = kernel_size // 2
    if pad == 0:
        return x, "valid"
    if strides == 1 and kernel_size % 2 == 1:
        return x, "same"  # symmetric for stride 1 and odd kernels: identical to PyTorch
    return keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x), "valid"


def relu(x, name: str):
    return keras.layers.ReLU(name=name)(x)


def global_pool(x, name: str = "avg_pool"):
    """Global average pooling + flatten: the penultimate feature vector."""
    return keras.layers.GlobalAveragePooling2D(name=name)(x)


def model_input(input_shape: tuple[int, int, int]):
    return keras.Input(shape=input_shape, name="images")
