"""Wide ResNets of RepDistiller (`models/wrn.py`, depth = 6n + 4, pre-activation blocks).

Block (in != out): BN-ReLU on x, then conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, shortcut
1x1 conv (no BN) of the *activated* x. Block (in == out): x + conv(...(ReLU(BN(x)))).
Stem 3x3 conv to 16, widths 16k/32k/64k, final BN-ReLU, global average pooling, Linear.
Convs: no bias, N(0, sqrt(2 / (k*k*out))). Linear: default weight, zero bias.
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu


def wide_block(f: LayerFactory, x, out_planes: int, stride: int, dropout: float, name: str):
    equal_in_out = x.shape[-1] == out_planes
    activated = relu(f.bn(x, name=f"{name}_bn1"), f"{name}_relu1")
    out = f.conv(activated, out_planes, 3, stride, name=f"{name}_conv1")
    out = relu(f.bn(out, name=f"{name}_bn2"), f"{name}_relu2")
    if dropout > 0:
        out = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = f.conv(out, out_planes, 3, name=f"{name}_conv2")
    if equal_in_out:
        shortcut = x
    else:
        shortcut = f.conv(activated, out_planes, 1, stride, name=f"{name}_shortcut")
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def wide_resnet(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    *,
    depth: int,
    widen_factor: int,
    dropout: float = 0.0,
) -> keras.Model:
    """Builds RepDistiller's `WideResNet(depth, num_classes, widen_factor, dropRate)`."""
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 for a Wide ResNet, got {depth}")
    blocks = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    inputs = model_input(input_shape)
    x = factory.conv(inputs, 16, 3, name="stem_conv")
    for stage, planes in enumerate(widths, start=1):
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            x = wide_block(factory, x, planes, stride, dropout, f"stage{stage}_block{b}")
    x = relu(factory.bn(x, name="final_bn"), "final_relu")
    logits = factory.classifier(global_pool(x), num_classes, bias_initializer="zeros")
    return keras.Model(inputs, logits, name=name)
