"""torchvision's MobileNetV2 and EfficientNet-B0 (`torchvision/models/mobilenetv2.py`,
`torchvision/models/efficientnet.py`), written out layer by layer.

Why not `keras.applications`: its EfficientNetB0 has the same trainable parameter count
but embeds Rescaling/Normalization layers, pads strided convs asymmetrically ("same"),
uses BN eps 1e-3 / momentum 0.99 and ends in a softmax Dense; its MobileNetV2 also pads
asymmetrically and names its layers differently. These builders follow torchvision
exactly (symmetric padding, BN eps 1e-5 / momentum 0.1, torchvision's inits), expect
inputs already normalized by the data pipeline, and end in the float32 "classifier".
"""

from __future__ import annotations

import math

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input

# torchvision mobilenet_v2: t, c, n, s
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# torchvision efficientnet_b0: expand_ratio, kernel, stride, in, out, layers
EFFICIENTNET_B0_SETTING = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def _relu6(x, name: str):
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def _silu(x, name: str):
    return keras.layers.Activation("silu", name=name)(x)


def _conv_bn_act(f: LayerFactory, x, filters, k, stride=1, *, groups=1, act=None, name: str):
    """torchvision's `Conv2dNormActivation`: conv (no bias, pad (k-1)//2) - BN - act."""
    x = f.bn(f.conv(x, filters, k, stride, groups=groups, name=f"{name}_conv"), name=f"{name}_bn")
    return act(x, f"{name}_act") if act else x


def _head(f: LayerFactory, x, num_classes: int, dropout: float, kernel_init):
    features = global_pool(x)
    if dropout > 0:
        features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    return f.classifier(
        features, num_classes, kernel_initializer=kernel_init, bias_initializer="zeros"
    )


def mobilenet_v2(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    dropout: float = 0.2,
) -> keras.Model:
    """torchvision `mobilenet_v2()` (width 1.0): ReLU6, no expansion conv when t = 1,
    last conv 1280, Dropout(0.2) before the Linear (N(0, 0.01) kernel, zero bias)."""
    inputs = model_input(input_shape)
    x = _conv_bn_act(factory, inputs, 32, 3, 2, act=_relu6, name="stem")
    for s, (t, c, n, stride) in enumerate(MOBILENET_V2_SETTING):
        for b in range(n):
            block_in, name_ = x, f"stage{s}_block{b}"
            hidden = int(round(x.shape[-1] * t))
            if t != 1:
                x = _conv_bn_act(factory, x, hidden, 1, act=_relu6, name=f"{name_}_expand")
            x = _conv_bn_act(
                factory,
                x,
                hidden,
                3,
                stride if b == 0 else 1,
                groups=hidden,
                act=_relu6,
                name=f"{name_}_dw",
            )
            x = _conv_bn_act(factory, x, c, 1, name=f"{name_}_project")
            if b > 0 or (stride == 1 and block_in.shape[-1] == c):
                x = keras.layers.Add(name=f"{name_}_add")([block_in, x])
    x = _conv_bn_act(factory, x, 1280, 1, act=_relu6, name="head")
    logits = _head(factory, x, num_classes, dropout, keras.initializers.RandomNormal(stddev=0.01))
    return keras.Model(inputs, logits, name=name)


def _squeeze_excitation(f: LayerFactory, x, squeeze: int, name: str):
    """torchvision `SqueezeExcitation(activation=SiLU)`: x * sigmoid(fc2(silu(fc1(avg(x)))))
    with 1x1 convs that have biases."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = _silu(f.conv(s, squeeze, 1, use_bias=True, name=f"{name}_fc1"), f"{name}_fc1_act")
    s = f.conv(s, x.shape[-1], 1, use_bias=True, name=f"{name}_fc2")
    s = keras.layers.Activation("sigmoid", name=f"{name}_gate")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def efficientnet_b0(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    dropout: float = 0.2,
    stochastic_depth: float = 0.2,
) -> keras.Model:
    """torchvision `efficientnet_b0()`: MBConv blocks with SE (squeeze = in // 4), SiLU,
    stochastic depth p = stochastic_depth * block_index / 16 on residual blocks ("row"
    mode = Dropout with noise_shape (N, 1, 1, 1)), head conv 1280, Dropout(0.2), Linear
    with U(+-1/sqrt(num_classes)) kernel and zero bias."""
    inputs = model_input(input_shape)
    x = _conv_bn_act(factory, inputs, 32, 3, 2, act=_silu, name="stem")
    total_blocks = sum(cfg[-1] for cfg in EFFICIENTNET_B0_SETTING)
    block_id = 0
    for s, (t, k, stride, _, out, n) in enumerate(EFFICIENTNET_B0_SETTING):
        for b in range(n):
            block_in, name_ = x, f"stage{s}_block{b}"
            in_channels = x.shape[-1]
            expanded = in_channels * t
            if expanded != in_channels:
                x = _conv_bn_act(factory, x, expanded, 1, act=_silu, name=f"{name_}_expand")
            x = _conv_bn_act(
                factory,
                x,
                expanded,
                k,
                stride if b == 0 else 1,
                groups=expanded,
                act=_silu,
                name=f"{name_}_dw",
            )
            x = _squeeze_excitation(factory, x, max(1, in_channels // 4), f"{name_}_se")
            x = _conv_bn_act(factory, x, out, 1, name=f"{name_}_project")
            if (stride == 1 or b > 0) and in_channels == out:
                drop = stochastic_depth * block_id / total_blocks
                if drop > 0:
                    x = keras.layers.Dropout(
                        drop, noise_shape=(None, 1, 1, 1), name=f"{name_}_stochastic_depth"
                    )(x)
                x = keras.layers.Add(name=f"{name_}_add")([block_in, x])
            block_id += 1
    x = _conv_bn_act(factory, x, 4 * x.shape[-1], 1, act=_silu, name="head")
    init_range = 1.0 / math.sqrt(num_classes)
    logits = _head(
        factory, x, num_classes, dropout, keras.initializers.RandomUniform(-init_range, init_range)
    )
    return keras.Model(inputs, logits, name=name)
