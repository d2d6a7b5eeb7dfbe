"""RepDistiller's CIFAR MobileNetV2 (`models/mobilenetv2.py`, `mobile_half`: T=6, W=0.5).

Differs from torchvision's ImageNet MobileNetV2 (`mobilenet_v2` in this package): ReLU
(not ReLU6), every inverted residual has its 1x1 expansion conv (also for t = 1), the
stem has stride 2 but the second stage stride 1, widths are int(c * 0.5) while the last
conv keeps 1280 channels, and there is no dropout. The reference pools with
`AvgPool2d(input_size // 16, ceil_mode=True)`, i.e. global pooling of the 2x2 map of a
32x32 input; we use global average pooling (identical at 32x32).
Convs: N(0, sqrt(2 / (k*k*out))). Linear: N(0, 0.01), zero bias.
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu

# t (expansion; "T" is substituted), c (channels before width scaling), n (blocks), s
SETTING = (
    (1, 16, 1, 1),
    ("T", 24, 2, 1),
    ("T", 32, 3, 2),
    ("T", 64, 4, 2),
    ("T", 96, 3, 1),
    ("T", 160, 3, 2),
    ("T", 320, 1, 1),
)


def inverted_residual(f: LayerFactory, x, out: int, stride: int, expand: int, name: str):
    inp = x.shape[-1]
    hidden = inp * expand
    y = relu(
        f.bn(f.conv(x, hidden, 1, name=f"{name}_expand"), name=f"{name}_expand_bn"),
        f"{name}_expand_relu",
    )
    y = f.conv(y, hidden, 3, stride, groups=hidden, name=f"{name}_dw")
    y = relu(f.bn(y, name=f"{name}_dw_bn"), f"{name}_dw_relu")
    y = f.bn(f.conv(y, out, 1, name=f"{name}_project"), name=f"{name}_project_bn")
    if stride == 1 and inp == out:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def cifar_mobilenetv2(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    expansion: int = 6,
    width_mult: float = 0.5,
) -> keras.Model:
    """Builds RepDistiller's `mobilenetv2_T_w(T=expansion, W=width_mult)`."""
    inputs = model_input(input_shape)
    channels = int(32 * width_mult)
    x = factory.conv(inputs, channels, 3, 2, name="stem_conv")
    x = relu(factory.bn(x, name="stem_bn"), "stem_relu")
    for s, (t, c, n, stride) in enumerate(SETTING):
        t = expansion if t == "T" else t
        for b in range(n):
            x = inverted_residual(
                factory, x, int(c * width_mult), stride if b == 0 else 1, t, f"stage{s}_block{b}"
            )
    last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = relu(
        factory.bn(factory.conv(x, last_channel, 1, name="head_conv"), name="head_bn"), "head_relu"
    )
    logits = factory.classifier(
        global_pool(x),
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
    )
    return keras.Model(inputs, logits, name=name)
