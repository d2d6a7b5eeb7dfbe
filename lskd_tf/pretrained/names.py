"""PyTorch parameter names of the model zoo's layers, and guessing an architecture.

Every lskd_tf layer name is systematic (`stage2_block0_conv1`, `stem_bn`, ...), so one
small translation per reference family maps a Keras layer to the PyTorch module prefix
of the reference's `state_dict()`: torchvision's `resnet.py`, `mobilenetv2.py` and
`efficientnet.py`, and RepDistiller's `resnet.py`, `wrn.py`, `vgg.py`,
`mobilenetv2.py`, `ShuffleNetv1.py` and `ShuffleNetv2.py`. The parameter suffixes
(`weight`, `bias`, `running_mean`, ...) follow from the layer type (see `lskd_tf.pretrained`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from lskd_tf.models import imagenet_mobile

# ---------------------------------------------------------------- per-family translations


def _resnet(name: str) -> str | None:
    """torchvision ImageNet ResNets and RepDistiller's CIFAR ResNets share these names."""
    fixed = {"stem_conv": "conv1", "stem_bn": "bn1", "classifier": "fc"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(conv\d|bn\d|down_conv|down_bn)", name)
    if not m:
        return None
    stage, block, part = m.groups()
    part = {"down_conv": "downsample.0", "down_bn": "downsample.1"}.get(part, part)
    return f"layer{stage}.{block}.{part}"


def _wrn(name: str) -> str | None:
    fixed = {"stem_conv": "conv1", "final_bn": "bn1", "classifier": "fc"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(bn1|conv1|bn2|conv2|shortcut)", name)
    if not m:
        return None
    stage, block, part = m.groups()
    return f"block{stage}.layer.{block}.{'convShortcut' if part == 'shortcut' else part}"


def _vgg(name: str) -> str | None:
    if name == "classifier":
        return "classifier"
    m = re.fullmatch(r"block(\d+)_(conv|bn)(\d+)", name)
    if not m:
        return None
    block, kind, i = m.groups()
    return f"block{block}.{3 * int(i) + (kind == 'bn')}"


def _cifar_mobilenetv2(name: str) -> str | None:
    fixed = {
        "stem_conv": "conv1.0", "stem_bn": "conv1.1", "head_conv": "conv2.0",
        "head_bn": "conv2.1", "classifier": "classifier.0",
    }  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(expand|expand_bn|dw|dw_bn|project|project_bn)", name)
    if not m:
        return None
    stage, block, part = m.groups()
    index = {"expand": 0, "expand_bn": 1, "dw": 3, "dw_bn": 4, "project": 6, "project_bn": 7}
    return f"blocks.{stage}.{block}.conv.{index[part]}"


def _shufflenet(name: str) -> str | None:
    fixed = {
        "stem_conv": "conv1", "stem_bn": "bn1", "head_conv": "conv2", "head_bn": "bn2",
        "classifier": "linear",
    }  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_(down|block(\d+))_((?:conv|bn)\d)", name)
    if not m:
        return None
    stage, what, block, part = m.groups()
    # ShuffleV2's stride-2 DownBlock is element 0 of each layer, its BasicBlocks follow;
    # ShuffleV1 has no "down" layers and its blocks start at 0.
    index = 0 if what == "down" else int(block)
    return f"layer{int(stage) + 1}.{index}.{part}"


def _shufflenet_v2(name: str) -> str | None:
    m = re.fullmatch(r"stage(\d+)_block(\d+)_((?:conv|bn)\d)", name)
    if m:  # BasicBlocks come after the DownBlock: layerN.(b + 1)
        stage, block, part = m.groups()
        return f"layer{int(stage) + 1}.{int(block) + 1}.{part}"
    return _shufflenet(name)


def _conv_norm_act(prefix: str, part: str) -> str:
    """torchvision `Conv2dNormActivation` is a Sequential: conv at .0, BN at .1."""
    return f"{prefix}.{0 if part == 'conv' else 1}"


def _torchvision_mobilenet_v2(name: str) -> str | None:
    settings = imagenet_mobile.MOBILENET_V2_SETTING
    fixed = {
        "stem_conv": "features.0.0", "stem_bn": "features.0.1",
        "head_conv": f"features.{1 + sum(n for _, _, n, _ in settings)}.0",
        "head_bn": f"features.{1 + sum(n for _, _, n, _ in settings)}.1",
        "classifier": "classifier.1",
    }  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(expand|dw|project)_(conv|bn)", name)
    if not m:
        return None
    stage, block, part, kind = int(m[1]), int(m[2]), m[3], m[4]
    index = 1 + sum(n for _, _, n, _ in settings[:stage]) + block
    first = 1 if settings[stage][0] != 1 else 0  # position of the depthwise conv
    prefix = f"features.{index}.conv"
    if part == "expand":
        return _conv_norm_act(f"{prefix}.0", kind)
    if part == "dw":
        return _conv_norm_act(f"{prefix}.{first}", kind)
    return f"{prefix}.{first + 1 + (kind == 'bn')}"  # project: a bare conv, then the BN


def _torchvision_efficientnet_b0(name: str) -> str | None:
    settings = imagenet_mobile.EFFICIENTNET_B0_SETTING
    fixed = {
        "stem_conv": "features.0.0", "stem_bn": "features.0.1",
        "head_conv": f"features.{len(settings) + 1}.0",
        "head_bn": f"features.{len(settings) + 1}.1", "classifier": "classifier.1",
    }  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(expand_conv|expand_bn|dw_conv|dw_bn|se_fc1|"
                     r"se_fc2|project_conv|project_bn)", name)  # fmt: skip
    if not m:
        return None
    stage, block, part = int(m[1]), int(m[2]), m[3]
    first = 1 if settings[stage][0] != 1 else 0  # position of the depthwise conv
    prefix = f"features.{stage + 1}.{block}.block"
    where, _, kind = part.partition("_")
    if where == "expand":
        return _conv_norm_act(f"{prefix}.0", kind)
    if where == "dw":
        return _conv_norm_act(f"{prefix}.{first}", kind)
    if where == "se":
        return f"{prefix}.{first + 1}.{kind}"
    return _conv_norm_act(f"{prefix}.{first + 2}", kind)


_CIFAR_RESNETS = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
)  # fmt: skip
TRANSLATIONS: Mapping[str, Callable[[str], str | None]] = {
    **dict.fromkeys(_CIFAR_RESNETS, _resnet),
    **dict.fromkeys(("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"), _wrn),
    **dict.fromkeys(("vgg8", "vgg11", "vgg13", "vgg16", "vgg19"), _vgg),
    "mobilenetv2": _cifar_mobilenetv2,
    "shufflev1": _shufflenet,
    "shufflev2": _shufflenet_v2,
    "resnet18": _resnet,
    "resnet34": _resnet,
    "resnet50": _resnet,
    "mobilenet_v2": _torchvision_mobilenet_v2,
    "efficientnet_b0": _torchvision_efficientnet_b0,
}
"""lskd_tf model name -> (Keras layer name -> PyTorch module prefix, or None)."""


def covered() -> list[str]:
    """The architectures whose PyTorch checkpoints can be imported and exported."""
    return sorted(TRANSLATIONS)


# ---------------------------------------------------------------- guessing the architecture


def _count(keys, pattern: str) -> int:
    """How many distinct first groups of `pattern` occur among `keys`."""
    return len({m[1] for k in keys if (m := re.match(pattern, k))})


def guess_architecture(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The lskd_tf model name a state dict (key -> shape) was made by, or None.

    Reads only key names and a few shapes: torchvision ResNets have a `layer4`,
    RepDistiller's CIFAR ResNets stop at `layer3` (depth 6n + 2 from the blocks per
    layer, "x4" from the stem width), WRNs have `block1.layer`, VGGs `block0.0`, etc.
    """
    keys = list(shapes)
    has = set(keys).__contains__
    if has("features.1.conv.0.0.weight") or has("features.1.conv.1.weight"):
        return "mobilenet_v2"
    if has("features.1.0.block.0.0.weight"):
        return "efficientnet_b0"
    if has("blocks.0.0.conv.0.weight"):
        return "mobilenetv2"
    if has("block1.layer.0.bn1.weight"):
        blocks = _count(keys, r"block1\.layer\.(\d+)\.")
        widen = shapes["block1.layer.0.conv1.weight"][0] // 16
        name = f"wrn_{6 * blocks + 4}_{widen}"
        return name if name in TRANSLATIONS else None
    if has("block0.0.weight"):
        convs = sum(_count(keys, rf"block{b}\.(\d+)\.weight$") for b in range(5)) // 2
        name = f"vgg{convs + 3}"
        return name if name in TRANSLATIONS else None
    if has("layer1.0.conv5.weight"):
        return "shufflev2"
    if has("linear.weight") and has("layer1.0.conv3.weight"):
        return "shufflev1"
    if has("layer4.0.conv1.weight"):
        if has("layer4.0.conv3.weight"):
            return "resnet50"
        return {2: "resnet18", 3: "resnet34"}.get(_count(keys, r"layer4\.(\d+)\."))
    if has("layer3.0.conv1.weight") and has("conv1.weight"):
        blocks = _count(keys, r"layer1\.(\d+)\.")
        suffix = "x4" if shapes["conv1.weight"][0] == 32 else ""
        name = f"resnet{6 * blocks + 2}{suffix}"
        return name if name in TRANSLATIONS else None
    return None
