"""VGG with BatchNorm of RepDistiller (`models/vgg.py`, `vgg*_bn`; the FC layers removed).

Five blocks of [conv3x3 (with bias) - BN - ReLU]; 2x2 max pools after blocks 0-2; the
pool after block 3 only when the input height is 64 (the reference's `if h == 64`, so a
32x32 input keeps a 4x4 map into block 4); global average pooling; Linear(512).
Convs: N(0, sqrt(2 / (k*k*out))), zero bias. Linear: N(0, 0.01), zero bias.
"""

from __future__ import annotations

import keras

from lskd_tf.models.common import LayerFactory, global_pool, model_input, relu

CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def vgg(
    name: str, num_classes: int, input_shape: tuple[int, int, int], factory: LayerFactory
) -> keras.Model:
    """Builds RepDistiller's `VGG(cfg[...], batch_norm=True)`."""
    inputs = model_input(input_shape)
    x = inputs
    for b, block in enumerate(CONFIGS[name]):
        for i, width in enumerate(block):
            x = factory.conv(x, width, 3, use_bias=True, name=f"block{b}_conv{i}")
            x = relu(factory.bn(x, name=f"block{b}_bn{i}"), f"block{b}_relu{i}")
        if b < 3 or (b == 3 and input_shape[0] == 64):
            x = keras.layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
    logits = factory.classifier(
        global_pool(x),
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
    )
    return keras.Model(inputs, logits, name=name)
