"""CIFAR ResNets of RepDistiller (`models/resnet.py`, BasicBlock, depth = 6n + 2).

Stem 3x3 conv (stride 1) + BN + ReLU; three stages of n BasicBlocks with widths
`widths[1:]`, strides 1/2/2; a 1x1 conv + BN shortcut where the shape changes; global
average pooling (the reference's `AvgPool2d(8)` on the 8x8 map of a 32x32 input); Linear.
Convs: no bias, kaiming-normal fan_out. Linear: PyTorch default init.
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu

WIDTHS = (16, 16, 32, 64)
WIDTHS_X4 = (32, 64, 128, 256)


def basic_block(f: LayerFactory, x, planes: int, stride: int, name: str, zero_init: bool):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) then ReLU."""
    shortcut = x
    out = f.conv(x, planes, 3, stride, name=f"{name}_conv1")
    out = relu(f.bn(out, name=f"{name}_bn1"), f"{name}_relu1")
    out = f.conv(out, planes, 3, name=f"{name}_conv2")
    out = f.bn(out, name=f"{name}_bn2", zero_gamma=zero_init)
    if stride != 1 or x.shape[-1] != planes:
        shortcut = f.conv(x, planes, 1, stride, name=f"{name}_down_conv")
        shortcut = f.bn(shortcut, name=f"{name}_down_bn")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return relu(out, f"{name}_out")


def cifar_resnet(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    *,
    depth: int,
    widths: tuple[int, int, int, int],
    zero_init_residual: bool = False,
) -> keras.Model:
    """Builds RepDistiller's `ResNet(depth, widths, 'basicblock')`."""
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 for a CIFAR BasicBlock ResNet, got {depth}")
    blocks = (depth - 2) // 6
    inputs = model_input(input_shape)
    x = factory.conv(inputs, widths[0], 3, name="stem_conv")
    x = relu(factory.bn(x, name="stem_bn"), "stem_relu")
    for stage, planes in enumerate(widths[1:], start=1):
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            x = basic_block(
                factory, x, planes, stride, f"stage{stage}_block{b}", zero_init_residual
            )
    logits = factory.classifier(global_pool(x), num_classes)
    return keras.Model(inputs, logits, name=name)
