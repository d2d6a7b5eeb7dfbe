"""ShuffleNet V1/V2 of RepDistiller (`models/ShuffleNetv1.py`, `models/ShuffleNetv2.py`).

Both are the CIFAR variants: a 1x1 stem conv to 24 channels with stride 1 and no max
pool, three stages of stride 2, global average pooling (the reference's
`avg_pool2d(out, 4)` on the 4x4 map of a 32x32 input) and a Linear. The reference does not
initialize them explicitly, so convs and the Linear keep PyTorch's default
U(+-1/sqrt(fan_in)) init.
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu
from lskd_tf.models.layers import ChannelShuffle, ChannelSlice

# ShuffleV1: out_planes, num_blocks, groups (g = 3). ShuffleV2: net_size 1.
V1_OUT_PLANES, V1_BLOCKS, V1_GROUPS = (240, 480, 960), (4, 8, 4), 3
V2_OUT_CHANNELS, V2_BLOCKS = (116, 232, 464, 1024), (3, 7, 3)


def _stem(f: LayerFactory, inputs):
    x = f.conv(inputs, 24, 1, name="stem_conv")
    return relu(f.bn(x, name="stem_bn"), "stem_relu")


def v1_bottleneck(f: LayerFactory, x, out_planes: int, stride: int, groups: int, name: str):
    """ShuffleNet unit: gconv1x1-BN-ReLU-shuffle-dw3x3-BN-gconv1x1-BN; add or concat with
    the (3x3/2 average-pooled) input, then ReLU."""
    in_planes = x.shape[-1]
    mid = out_planes // 4
    g = 1 if in_planes == 24 else groups  # no grouping on the 24-channel stem output
    out = f.conv(x, mid, 1, groups=g, name=f"{name}_conv1")
    out = relu(f.bn(out, name=f"{name}_bn1"), f"{name}_relu1")
    if g > 1:
        out = ChannelShuffle(g, name=f"{name}_shuffle")(out)
    out = f.bn(f.conv(out, mid, 3, stride, groups=mid, name=f"{name}_conv2"), name=f"{name}_bn2")
    out = relu(out, f"{name}_relu2")
    out = f.conv(out, out_planes, 1, groups=groups, name=f"{name}_conv3")
    out = f.bn(out, name=f"{name}_bn3")
    if stride == 2:
        # AvgPool2d(3, stride=2, padding=1) counts the zero padding (count_include_pad).
        res = keras.layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad")(x)
        res = keras.layers.AveragePooling2D(3, 2, name=f"{name}_shortcut_pool")(res)
        out = keras.layers.Concatenate(name=f"{name}_concat")([out, res])
    else:
        out = keras.layers.Add(name=f"{name}_add")([out, x])
    return relu(out, f"{name}_out")


def shufflenet_v1(
    name: str, num_classes: int, input_shape: tuple[int, int, int], factory: LayerFactory
) -> keras.Model:
    """Builds RepDistiller's `ShuffleV1` (groups 3, out planes 240/480/960)."""
    inputs = model_input(input_shape)
    x = _stem(factory, inputs)
    for s, (out_planes, blocks) in enumerate(zip(V1_OUT_PLANES, V1_BLOCKS, strict=True)):
        for b in range(blocks):
            # The first (stride 2) unit concatenates its input: it produces the rest.
            produced = out_planes - x.shape[-1] if b == 0 else out_planes
            x = v1_bottleneck(
                factory, x, produced, 2 if b == 0 else 1, V1_GROUPS, f"stage{s}_block{b}"
            )
    logits = factory.classifier(global_pool(x), num_classes)
    return keras.Model(inputs, logits, name=name)


def v2_basic_block(f: LayerFactory, x, name: str):
    """Split channels in half; right half: 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU; concat
    [left, right]; shuffle with 2 groups."""
    channels = x.shape[-1]
    half = channels // 2
    left = ChannelSlice(0, half, name=f"{name}_split_left")(x)
    right = ChannelSlice(half, channels, name=f"{name}_split_right")(x)
    out = relu(
        f.bn(f.conv(right, half, 1, name=f"{name}_conv1"), name=f"{name}_bn1"), f"{name}_relu1"
    )
    out = f.bn(f.conv(out, half, 3, groups=half, name=f"{name}_conv2"), name=f"{name}_bn2")
    out = relu(
        f.bn(f.conv(out, half, 1, name=f"{name}_conv3"), name=f"{name}_bn3"), f"{name}_relu3"
    )
    out = keras.layers.Concatenate(name=f"{name}_concat")([left, out])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def v2_down_block(f: LayerFactory, x, out_channels: int, name: str):
    """Stride-2 unit: left dw3x3/2-BN-1x1-BN-ReLU, right 1x1-BN-ReLU-dw3x3/2-BN-1x1-BN-ReLU;
    concat and shuffle."""
    in_channels = x.shape[-1]
    mid = out_channels // 2
    left = f.bn(
        f.conv(x, in_channels, 3, 2, groups=in_channels, name=f"{name}_conv1"), name=f"{name}_bn1"
    )
    left = relu(
        f.bn(f.conv(left, mid, 1, name=f"{name}_conv2"), name=f"{name}_bn2"), f"{name}_relu2"
    )
    right = relu(f.bn(f.conv(x, mid, 1, name=f"{name}_conv3"), name=f"{name}_bn3"), f"{name}_relu3")
    right = f.bn(f.conv(right, mid, 3, 2, groups=mid, name=f"{name}_conv4"), name=f"{name}_bn4")
    right = relu(
        f.bn(f.conv(right, mid, 1, name=f"{name}_conv5"), name=f"{name}_bn5"), f"{name}_relu5"
    )
    out = keras.layers.Concatenate(name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def shufflenet_v2(
    name: str, num_classes: int, input_shape: tuple[int, int, int], factory: LayerFactory
) -> keras.Model:
    """Builds RepDistiller's `ShuffleV2` (net_size 1: 116/232/464, head 1024)."""
    inputs = model_input(input_shape)
    x = _stem(factory, inputs)
    for s, (out_channels, blocks) in enumerate(zip(V2_OUT_CHANNELS[:3], V2_BLOCKS, strict=True)):
        x = v2_down_block(factory, x, out_channels, f"stage{s}_down")
        for b in range(blocks):
            x = v2_basic_block(factory, x, f"stage{s}_block{b}")
    x = factory.conv(x, V2_OUT_CHANNELS[3], 1, name="head_conv")
    x = relu(factory.bn(x, name="head_bn"), "head_relu")
    logits = factory.classifier(global_pool(x), num_classes)
    return keras.Model(inputs, logits, name=name)
