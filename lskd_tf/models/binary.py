"""ReActNet's binary ResNet-18 (repo liuzechun/ReActNet, `resnet/2_step2/birealnet.py`,
`birealnet18`), the backbone of Shen et al.'s binary-network experiment, and the real-weight
network of ReActNet's first training step (`resnet/1_step1/birealnet.py`).

ReActNet trains in two steps: step 1 (`reactnet_resnet18_step1`) has binary activations
but real-valued 3x3 convs (`nn.Conv2d`); step 2 (`reactnet_resnet18`) binarizes the
weights too and starts from step 1's weights (its `checkpoint_ba.pth.tar`, loaded with
the same key names). Both builders use the same layer names, so a step-1 checkpoint
initializes a step-2 model (`lskd_tf.pretrained.initialize` copies a `.keras` file's
weights by layer name).

Bi-Real structure: every 3x3 conv is its own residual block (4 stages x 4 blocks = 16
binary convs, 64/128/256/512 channels), each

    y = RPReLU(BN(BinaryConv(Sign(x + b0))) + shortcut(x)),  RPReLU(z) = PReLU(z + b1) + b2

with learnable shifts b0 (RSign), b1, b2, per-channel PReLU (init 0.25), sign activations
and alpha * sign(W) weights trained through straight-through estimators (see
`layers.sign_with_ste`, `layers.BinaryConv2D`). Downsampling shortcuts are real-valued:
AvgPool 2x2/2 - conv1x1 - BN. Real-valued first layer (conv7x7/2 - BN, max pool 3x3/2
padded with -inf like PyTorch, no ReLU) and last layer (global pooling - Linear).
"""

from __future__ import annotations

import math

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, torch_default_uniform
from lskd_tf.models.layers import BinaryActivation, BinaryConv2D, ConstantPadding2D, LearnableBias

STAGE_BLOCKS = (4, 4, 4, 4)


def binary_block(
    f: LayerFactory, x, planes: int, stride: int, name: str, binary_weights: bool = True
):
    inplanes = x.shape[-1]
    out = LearnableBias(name=f"{name}_move0")(x)
    out = BinaryActivation(name=f"{name}_sign")(out)
    if binary_weights:
        out = BinaryConv2D(planes, 3, stride, name=f"{name}_binary_conv")(out)
    else:  # step 1: conv3x3 = nn.Conv2d(bias=False), PyTorch's default init
        out = f.conv(out, planes, 3, stride, name=f"{name}_binary_conv")
    out = f.bn(out, name=f"{name}_bn")
    shortcut = x
    if stride != 1 or inplanes != planes:
        shortcut = keras.layers.AveragePooling2D(stride, stride, name=f"{name}_down_pool")(x)
        shortcut = f.conv(shortcut, planes, 1, name=f"{name}_down_conv")
        shortcut = f.bn(shortcut, name=f"{name}_down_bn")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    out = LearnableBias(name=f"{name}_move1")(out)
    out = keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25),
        shared_axes=[1, 2],
        name=f"{name}_prelu",
    )(out)
    return LearnableBias(name=f"{name}_move2")(out)


def reactnet_resnet18(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    factory: LayerFactory,
    binary_weights: bool = True,
) -> keras.Model:
    """Builds ReActNet's `birealnet18` (PyTorch default init for real convs and Linear);
    `binary_weights=False` is step 1's network (binary activations, real 3x3 convs)."""
    inputs = model_input(input_shape)
    x = factory.conv(
        inputs, 64, 7, 2, name="stem_conv", kernel_initializer=torch_default_uniform(3 * 7 * 7)
    )
    x = factory.bn(x, name="stem_bn")
    # No ReLU before this pool, so pad with -inf (PyTorch) rather than zeros.
    x = ConstantPadding2D(1, -math.inf, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for stage, (planes, blocks) in enumerate(
        zip((64, 128, 256, 512), STAGE_BLOCKS, strict=True), start=1
    ):
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            x = binary_block(factory, x, planes, stride, f"stage{stage}_block{b}", binary_weights)
    logits = factory.classifier(global_pool(x), num_classes)
    return keras.Model(inputs, logits, name=name)


def reactnet_resnet18_step1(
    name: str, num_classes: int, input_shape: tuple[int, int, int], factory: LayerFactory
) -> keras.Model:
    """ReActNet's step-1 `birealnet18` (`resnet/1_step1/birealnet.py`): real 3x3 convs."""
    return reactnet_resnet18(name, num_classes, input_shape, factory, binary_weights=False)
