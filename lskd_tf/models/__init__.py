"""Model zoo: the networks of the label smoothing x KD papers, as functional Keras models.

Example:
    >>> from lskd_tf import models
    >>> model = models.get("resnet56", num_classes=100, weight_decay=5e-4)
    >>> feats_logits = models.features_and_logits(model)   # images -> [features, logits]
    >>> kernel, bias = models.templates(model)              # (64, 100), (100,)

Every model ends in a float32 `keras.layers.Dense` named "classifier" whose input is the
penultimate feature vector, and outputs logits (no softmax). With `weight_decay=wd`, every
parameter in `weight_decay_scope` carries `L2(wd / 2)`: conv/dense kernels ("kernels", the
default) or every trainable parameter ("all", the papers' PyTorch SGD). The training loop
must add `sum(model.losses)` to the loss (the gradient is then `wd * w`, PyTorch SGD's
coupled weight decay); see `lskd_tf.models.weight_decay`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import keras
import numpy as np

from lskd_tf.models import (
    binary,
    cifar_mobilenetv2,
    cifar_resnet,
    imagenet_mobile,
    imagenet_resnet,
    shufflenet,
    vgg,
    wrn,
)
from lskd_tf.models.common import CLASSIFIER_NAME, LayerFactory
from lskd_tf.models.layers import (
    BinaryActivation,
    BinaryConv2D,
    ChannelShuffle,
    ChannelSlice,
    ConstantPadding2D,
    LearnableBias,
)
from lskd_tf.models.weight_decay import (
    WEIGHT_DECAY_SCOPES,
    apply_weight_decay,
    validate_weight_decay_scope,
)
from lskd_tf.registry import Registry

__all__ = [
    "WEIGHT_DECAY_SCOPES",
    "apply_weight_decay",
    "validate_weight_decay_scope",
    "ModelSpec",
    "available",
    "describe",
    "features_and_logits",
    "get",
    "MODELS",
    "register",
    "templates",
    "BinaryActivation",
    "BinaryConv2D",
    "ChannelShuffle",
    "ChannelSlice",
    "ConstantPadding2D",
    "LearnableBias",
]

CIFAR_INPUT = (32, 32, 3)
IMAGENET_INPUT = (224, 224, 3)
REPDISTILLER = "RepDistiller models/"
TORCHVISION = "torchvision models/"


@dataclass(frozen=True)
class ModelSpec:
    """What a registered architecture is and which reference it reproduces.

    Attributes:
        name: registry name, e.g. "resnet56".
        family: "cifar", "imagenet" or "binary".
        default_input_shape: (H, W, C) used when `get(..., input_shape=None)`.
        min_input_size: smallest H and W the architecture accepts (its total stride).
        reference: file and constructor reproduced, e.g.
            "RepDistiller models/resnet.py resnet20".
        reference_params: the reference's trainable parameter count for the family's
            default class count (100 for CIFAR, 1000 for ImageNet and binary).
        size_multiple: H and W must be multiples of this (1 = any size >= min_input_size).
    """

    name: str
    family: str
    default_input_shape: tuple[int, int, int]
    min_input_size: int
    reference: str
    reference_params: int | None
    size_multiple: int = 1


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    build: Callable[..., keras.Model]  # (name, num_classes, input_shape, factory, **options)
    conv_init: str = "kaiming_fan_out"
    zero_init_residual: bool = False  # whether the architecture supports the option


MODELS: Registry[_Entry] = Registry("model", package="lskd_tf.models")
"""The image models by name. Every public module of `lskd_tf.models` is imported on the
first lookup, so a new builder module that calls `register` at import is found."""


def register(
    name: str,
    family: str,
    min_input_size: int,
    reference: str,
    reference_params: int | None,
    build: Callable[..., keras.Model],
    *,
    conv_init: str = "kaiming_fan_out",
    zero_init_residual: bool = False,
    size_multiple: int = 1,
) -> None:
    """Make the architecture ``build`` selectable as ``name`` (`get`, ``--*_models``).

    ``build(name, num_classes, input_shape, factory, **options)`` returns the model;
    ``family`` ("cifar" or "imagenet") sets the default input; ``min_input_size`` the
    smallest side it accepts; ``reference`` / ``reference_params`` the definition it
    transcribes and that definition's trainable parameter count (None: not checked).
    """
    MODELS.register(
        name,
        _Entry(
            ModelSpec(
                name,
                family,
                CIFAR_INPUT if family == "cifar" else IMAGENET_INPUT,
                min_input_size,
                reference,
                reference_params,
                size_multiple,
            ),
            build,
            conv_init,
            zero_init_residual,
        ),
    )


# Parameter counts: trainable parameters of the PyTorch reference (weights, biases, BN
# gamma/beta; not BN running statistics), derived from the reference definitions; the
# four given in the issue (resnet20/56/8x4/32x4) and torchvision's published numbers
# agree. tests/test_models.py re-derives every CIFAR count from the definitions.
_CIFAR_RESNETS = {
    "resnet8": (8, cifar_resnet.WIDTHS, 83_892),
    "resnet14": (14, cifar_resnet.WIDTHS, 181_108),
    "resnet20": (20, cifar_resnet.WIDTHS, 278_324),
    "resnet32": (32, cifar_resnet.WIDTHS, 472_756),
    "resnet44": (44, cifar_resnet.WIDTHS, 667_188),
    "resnet56": (56, cifar_resnet.WIDTHS, 861_620),
    "resnet110": (110, cifar_resnet.WIDTHS, 1_736_564),
    "resnet8x4": (8, cifar_resnet.WIDTHS_X4, 1_233_540),
    "resnet32x4": (32, cifar_resnet.WIDTHS_X4, 7_433_860),
}
for _name, (_depth, _widths, _params) in _CIFAR_RESNETS.items():
    register(
        _name,
        "cifar",
        4,
        f"{REPDISTILLER}resnet.py {_name}",
        _params,
        partial(cifar_resnet.cifar_resnet, depth=_depth, widths=_widths),
        zero_init_residual=True,
    )

_WRNS = {
    "wrn_16_1": (16, 1, 180_916),
    "wrn_16_2": (16, 2, 703_284),
    "wrn_40_1": (40, 1, 569_780),
    "wrn_40_2": (40, 2, 2_255_156),
}
for _name, (_depth, _widen, _params) in _WRNS.items():
    register(
        _name,
        "cifar",
        4,
        f"{REPDISTILLER}wrn.py {_name}",
        _params,
        partial(wrn.wide_resnet, depth=_depth, widen_factor=_widen),
    )

_VGGS = {
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
}
for _name, _params in _VGGS.items():
    register(_name, "cifar", 8, f"{REPDISTILLER}vgg.py {_name}_bn", _params, vgg.vgg)

register(
    "mobilenetv2",
    "cifar",
    16,
    f"{REPDISTILLER}mobilenetv2.py mobile_half (T=6, W=0.5)",
    812_836,
    cifar_mobilenetv2.cifar_mobilenetv2,
)
register(
    "shufflev1",
    "cifar",
    8,
    f"{REPDISTILLER}ShuffleNetv1.py ShuffleV1",
    949_258,
    shufflenet.shufflenet_v1,
    conv_init="torch_default",
)
register(
    "shufflev2",
    "cifar",
    8,
    f"{REPDISTILLER}ShuffleNetv2.py ShuffleV2",
    1_355_528,
    shufflenet.shufflenet_v2,
    conv_init="torch_default",
)

for _name, _params in (
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
):
    register(
        _name,
        "imagenet",
        32,
        f"{TORCHVISION}resnet.py {_name}",
        _params,
        imagenet_resnet.imagenet_resnet,
        zero_init_residual=True,
    )
register(
    "mobilenet_v2",
    "imagenet",
    32,
    f"{TORCHVISION}mobilenetv2.py mobilenet_v2",
    3_504_872,
    imagenet_mobile.mobilenet_v2,
)
register(
    "efficientnet_b0",
    "imagenet",
    32,
    f"{TORCHVISION}efficientnet.py efficientnet_b0",
    5_288_548,
    imagenet_mobile.efficientnet_b0,
)
register(
    "reactnet_resnet18",
    "binary",
    32,
    "ReActNet resnet/2_step2/birealnet.py birealnet18",
    11_704_424,
    binary.reactnet_resnet18,
    conv_init="torch_default",
    size_multiple=32,
)
register(
    "reactnet_resnet18_step1",
    "binary",
    32,
    "ReActNet resnet/1_step1/birealnet.py birealnet18 (real 3x3 convs)",
    11_704_424,
    binary.reactnet_resnet18_step1,
    conv_init="torch_default",
    size_multiple=32,
)


def available() -> list[str]:
    """Sorted names accepted by `get`."""
    return MODELS.available()


def describe(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered architecture (same name rules as `get`)."""
    return MODELS.get(name).spec


def _check_input_shape(spec: ModelSpec, input_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive integers, "
            f"got {input_shape!r}"
        )
    h, w, _ = shape
    if min(h, w) < spec.min_input_size:
        raise ValueError(
            f"input_shape {shape} is too small for {spec.name}: needs at least "
            f"{spec.min_input_size}x{spec.min_input_size} (its total stride); "
            f"use larger images or a CIFAR-family model."
        )
    if h % spec.size_multiple or w % spec.size_multiple:
        raise ValueError(
            f"input_shape {shape} does not fit {spec.name}: height and width must be "
            f"multiples of {spec.size_multiple} (its average-pooling shortcuts need even "
            f"maps at every stage); resize or crop the images."
        )
    return shape


def _check_options(entry: _Entry, options: dict) -> None:
    accepted = [
        p
        for p in inspect.signature(entry.build).parameters
        if p not in ("name", "num_classes", "input_shape", "factory", "zero_init_residual")
        and p not in getattr(entry.build, "keywords", {})
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        choices = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for {entry.spec.name}; "
            f"model-specific options accepted: {choices}."
        )


def get(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    *,
    synchronized_bn: bool = False,
    weight_decay: float = 0.0,
    weight_decay_scope: str = "kernels",
    zero_init_residual: bool = False,
    **options,
) -> keras.Model:
    """Builds a registered architecture as a functional Keras model outputting logits.

    Args:
        name: one of `available()`; case-insensitive, "-" may replace "_" (so "ResNet56"
            and "WRN-40-2" work). Note "mobilenetv2" is RepDistiller's half-width CIFAR
            net, "mobilenet_v2" torchvision's ImageNet net.
        num_classes: size of the float32 "classifier" Dense.
        input_shape: (H, W, C); default (32, 32, 3) for the CIFAR family, (224, 224, 3)
            otherwise. Must be at least `describe(name).min_input_size` in H and W.
        synchronized_bn: BatchNormalization(synchronized=True) (cross-replica statistics).
        weight_decay: attaches L2(weight_decay / 2) to the parameters in
            `weight_decay_scope`; add `sum(model.losses)` to the training loss.
        weight_decay_scope: "kernels" (conv/dense kernels only; no decay on BN gamma/beta,
            biases, PReLU or `LearnableBias`) or "all" (every trainable parameter, as the
            papers' `SGD(model.parameters(), weight_decay=wd)`).
        zero_init_residual: zero gamma of the last BN in every residual block (resnet*).
        **options: architecture-specific: `dropout` (wrn_*, mobilenet_v2,
            efficientnet_b0), `stochastic_depth` (efficientnet_b0).

    Returns:
        A built functional `keras.Model` named `name`. Under a mixed-precision policy the
        layers follow the policy and the classifier (hence the logits) stays float32.

    Raises:
        ValueError: unknown name, option or weight_decay_scope, bad num_classes, input
            too small.
    """
    entry = MODELS.get(name)
    spec = entry.spec
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or (num_classes < 1)
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = _check_input_shape(
        spec, spec.default_input_shape if input_shape is None else input_shape
    )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    validate_weight_decay_scope(weight_decay_scope)
    if zero_init_residual and not entry.zero_init_residual:
        supported = ", ".join(n for n, e in MODELS.items() if e.zero_init_residual)
        raise ValueError(
            f"zero_init_residual is not defined for {spec.name} (its blocks do not end in a "
            f"BN on the residual branch); supported: {supported}."
        )
    _check_options(entry, options)
    factory = LayerFactory(synchronized_bn=bool(synchronized_bn), conv_init=entry.conv_init)
    kwargs = dict(options)
    if entry.zero_init_residual:
        kwargs["zero_init_residual"] = bool(zero_init_residual)
    model = entry.build(spec.name, int(num_classes), shape, factory, **kwargs)
    apply_weight_decay(model, float(weight_decay), weight_decay_scope)
    return model


def _classifier(model: keras.Model) -> keras.layers.Dense:
    """The final Dense named "classifier" that outputs logits, or a clear error."""
    try:
        layer = model.get_layer(CLASSIFIER_NAME)
    except ValueError as err:
        raise ValueError(
            f"model {model.name!r} has no layer named {CLASSIFIER_NAME!r}; build it with "
            "lskd_tf.models.get(), or name your final Dense layer 'classifier'"
        ) from err
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"layer {CLASSIFIER_NAME!r} of {model.name!r} is a {type(layer).__name__}, "
            "not a Dense layer"
        )
    if layer.activation not in (keras.activations.linear, None):
        raise ValueError(
            f"layer {CLASSIFIER_NAME!r} has activation {layer.activation.__name__!r}; it must "
            "output logits (activation=None)"
        )
    return layer


def features_and_logits(model: keras.Model) -> keras.Model:
    """A model mapping images to `[features, logits]` in one forward pass.

    `features` is the classifier's input (the penultimate vector after global pooling;
    in compute dtype, i.e. float16 under mixed_float16), `logits` the model's output.
    Shares the layers (and weights) of `model`; works on models reloaded from `.keras`.
    """
    features = _classifier(model).input
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [features, model.outputs[0]], name=f"{model.name}_features")


def templates(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's kernel (D, K) and bias (K,) as NumPy arrays: logits = f @ W + b.

    Row k of `W.T` with `b[k]` appended is Müller et al.'s "template" of class k.
    """
    layer = _classifier(model)
    kernel = np.asarray(layer.kernel.numpy())
    bias = np.zeros(kernel.shape[1], kernel.dtype) if layer.bias is None else layer.bias.numpy()
    return kernel, np.asarray(bias)
