"""torchvision ResNets (`torchvision/models/resnet.py`): resnet18, resnet34, resnet50 (v1.5).

Stem conv7x7/2 (pad 3) - BN - ReLU - maxpool3x3/2 (pad 1); four stages (64/128/256/512
planes, strides 1/2/2/2) of BasicBlocks (18, 34) or Bottlenecks (50, expansion 4, stride
on the 3x3 conv = "v1.5"); 1x1 conv + BN downsampling shortcuts; no conv biases; global
average pooling; Linear. Convs kaiming-normal fan_out, Linear PyTorch default.
`zero_init_residual=True` zeroes the gamma of the last BN of every block (torchvision's
option of the same name; Goyal et al. 2017).
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
BOTTLENECK = {"resnet18": False, "resnet34": False, "resnet50": True}


def _shortcut(f: LayerFactory, x, out_channels: int, stride: int, name: str):
    if stride == 1 and x.shape[-1] == out_channels:
        return x
    y = f.conv(x, out_channels, 1, stride, name=f"{name}_down_conv")
    return f.bn(y, name=f"{name}_down_bn")


def basic_block(f: LayerFactory, x, planes: int, stride: int, name: str, zero_init: bool):
    out = relu(
        f.bn(f.conv(x, planes, 3, stride, name=f"{name}_conv1"), name=f"{name}_bn1"),
        f"{name}_relu1",
    )
    out = f.bn(
        f.conv(out, planes, 3, name=f"{name}_conv2"), name=f"{name}_bn2", zero_gamma=zero_init
    )
    out = keras.layers.Add(name=f"{name}_add")([out, _shortcut(f, x, planes, stride, name)])
    return relu(out, f"{name}_out")


def bottleneck(f: LayerFactory, x, planes: int, stride: int, name: str, zero_init: bool):
    out = relu(
        f.bn(f.conv(x, planes, 1, name=f"{name}_conv1"), name=f"{name}_bn1"), f"{name}_relu1"
    )
    out = relu(
        f.bn(f.conv(out, planes, 3, stride, name=f"{name}_conv2"), name=f"{name}_bn2"),
        f"{name}_relu2",
    )
    out = f.bn(
        f.conv(out, planes * 4, 1, name=f"{name}_conv3"), name=f"{name}_bn3", zero_gamma=zero_init
    )
    out = keras.layers.Add(name=f"{name}_add")([out, _shortcut(f, x, planes * 4, stride, name)])
    return relu(out, f"{name}_out")


def torchvision_stem(f: LayerFactory, inputs):
    """conv7x7/2 - BN - ReLU - maxpool3x3/2 with PyTorch's symmetric padding (zero padding
    before the max pool is exact here because its input is post-ReLU, >= 0)."""
    x = f.conv(inputs, 64, 7, 2, name="stem_conv")
    x = relu(f.bn(x, name="stem_bn"), "stem_relu")
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)


def imagenet_resnet(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    zero_init_residual: bool = False,
) -> keras.Model:
    """Builds torchvision's `resnet18`/`resnet34`/`resnet50`."""
    block = bottleneck if BOTTLENECK[name] else basic_block
    inputs = model_input(input_shape)
    x = torchvision_stem(factory, inputs)
    for stage, (planes, blocks) in enumerate(
        zip((64, 128, 256, 512), LAYERS[name], strict=True), start=1
    ):
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            x = block(factory, x, planes, stride, f"stage{stage}_block{b}", zero_init_residual)
    logits = factory.classifier(global_pool(x), num_classes)
    return keras.Model(inputs, logits, name=name)
