"""PyTorch checkpoints in and out of lskd_tf models, against the reference definitions.

The PyTorch models below reproduce RepDistiller's `models/resnet.py` (CIFAR ResNet) and
torchvision's `models/resnet.py` and `models/mobilenetv2.py` with the same module names,
so their `state_dict()` keys are those of the real checkpoints (torchvision cannot be
installed beside torch 2.13 here, and nothing may be downloaded in tests). Weights are
random, BatchNorm statistics too (so the running-statistics import is exercised).

PyTorch is a test dependency (setup.cfg `test` extra): these tests import it at the top
and fail, rather than skip, where it is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from safetensors.torch import save_file as torch_save_safetensors
from torch import nn
from torch.nn import functional as F

import lskd_tf
from lskd_tf import models, pretrained

torch.manual_seed(0)


# ----------------------------------------------------------------------------- references


class CifarBasicBlock(nn.Module):
    """RepDistiller models/resnet.py BasicBlock (its `is_last` only returns preact too)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class CifarResNet(nn.Module):
    """RepDistiller models/resnet.py ResNet(depth, num_filters, 'basicblock')."""

    def __init__(self, depth, num_filters, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [CifarBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [CifarBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class TvBasicBlock(nn.Module):
    """torchvision models/resnet.py BasicBlock."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TvBottleneck(nn.Module):
    """torchvision models/resnet.py Bottleneck (v1.5: stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TvResNet(nn.Module):
    """torchvision models/resnet.py ResNet (resnet18: BasicBlock [2,2,2,2];
    resnet50: Bottleneck [3,4,6,3])."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvBNAct(nn.Sequential):
    """torchvision ops.misc Conv2dNormActivation (conv .0, BN .1, activation .2)."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class TvInvertedResidual(nn.Module):
    """torchvision models/mobilenetv2.py InvertedResidual."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNAct(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TvMobileNetV2(nn.Module):
    """torchvision models/mobilenetv2.py MobileNetV2 (width 1.0: every width is already a
    multiple of 8, so `_make_divisible` changes nothing)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        features = [ConvBNAct(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in models.imagenet_mobile.MOBILENET_V2_SETTING:
            for i in range(n):
                features.append(TvInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvBNAct(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- helpers


def _randomize_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return net


def _logits(net: nn.Module, model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(PyTorch eval logits, Keras inference logits) for NHWC images `x`."""
    with torch.no_grad():
        theirs = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    return theirs, ours


def _images(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def _assert_close_logits(theirs, ours, label: str, rel: float = 1e-5) -> float:
    """Max |difference| relative to the logit scale; prints the measured number."""
    diff = float(np.max(np.abs(theirs - ours)))
    scale = float(np.max(np.abs(theirs)))
    print(f"{label}: max |logit diff| = {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= rel * max(1.0, scale), (label, diff, scale)
    return diff


# ----------------------------------------------------------------------------- logits


@pytest.mark.parametrize(
    "name, depth, widths",
    [("resnet8", 8, (16, 16, 32, 64)), ("resnet20", 20, (16, 16, 32, 64)),
     ("resnet8x4", 8, (32, 64, 128, 256))],
)  # fmt: skip
def test_repdistiller_cifar_resnet_logits_match(tmp_path, name, depth, widths):
    net = _randomize_bn(CifarResNet(depth, widths, num_classes=100))
    # RepDistiller saves {"epoch": ..., "model": state_dict(), ...}: read through torch.
    path = tmp_path / f"{name}_best.pth"
    torch.save({"epoch": 240, "model": net.state_dict(), "accuracy": 0.5}, path)
    model = models.get(name, 100)
    info = pretrained.load_pretrained(model, path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        pretrained.guess_architecture({k: tuple(v.shape) for k, v in net.state_dict().items()})
        == name
    )
    _assert_close_logits(*_logits(net, model, _images(4, 32)), name)


def test_torchvision_resnet18_logits_match(tmp_path):
    net = _randomize_bn(TvResNet(TvBasicBlock, [2, 2, 2, 2]))
    path = tmp_path / "resnet18.safetensors"
    torch_save_safetensors(net.state_dict(), str(path))
    model = models.get("resnet18", 1000, (64, 64, 3))
    pretrained.load_pretrained(model, path)
    _assert_close_logits(*_logits(net, model, _images(2, 64)), "resnet18")


def test_torchvision_resnet50_from_a_ddp_checkpoint(tmp_path):
    """Chandrasegaran's ImageNet teachers are {"arch", "state_dict" with "module." keys}."""
    net = _randomize_bn(TvResNet(TvBottleneck, [3, 4, 6, 3]))
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / "teacher=resnet50-0.0-best.pth.tar"
    torch.save({"arch": "resnet50", "state_dict": state, "best_acc1": 76.1}, path)
    model = pretrained.build_from_file(path, input_shape=(64, 64, 3))
    assert model.name == "resnet50" and model.output_shape[-1] == 1000
    _assert_close_logits(*_logits(net, model, _images(2, 64)), "resnet50")


def test_torchvision_mobilenet_v2_logits_match(tmp_path):
    """Depthwise kernels and the classifier.1 name of torchvision's MobileNetV2."""
    net = _randomize_bn(TvMobileNetV2(num_classes=1000))
    path = tmp_path / "mobilenet_v2.safetensors"
    torch_save_safetensors(net.state_dict(), str(path))
    model = pretrained.build_from_file(path, input_shape=(64, 64, 3))
    assert model.name == "mobilenet_v2"
    _assert_close_logits(*_logits(net, model, _images(2, 64)), "mobilenet_v2")


# ----------------------------------------------------------------------------- training step


@pytest.mark.parametrize("scope", ["all", "kernels"])
def test_training_step_matches_pytorch(scope):
    """Two SGD steps (momentum 0.9, weight decay, BN in train mode) from the same weights.

    ``weight_decay_scope="all"`` is PyTorch's plain ``SGD(model.parameters(), wd)``, the
    papers' optimizer; ``"kernels"`` matches a PyTorch run whose parameter groups decay
    only conv and linear weights.

    Seeded here, independent of test order: with other seeds a pre-ReLU activation
    within float round-off of 0 sometimes lands on the other side of 0 in one of the
    two frameworks; that one element's gradient then differs (~1e-4 after two steps
    at lr 0.1, seen for 2 of 6 torch seeds), which is round-off meeting a kink, not a
    different computation: every gradient of these seeds agreed to ~1e-7.
    """
    torch.manual_seed(0)
    lr, momentum, wd = 0.1, 0.9, 5e-4
    net = _randomize_bn(CifarResNet(8, (16, 16, 32, 64), num_classes=10)).train()
    model = models.get("resnet8", 10, weight_decay=wd, weight_decay_scope=scope)
    pretrained.import_state_dict(model, net.state_dict())

    if scope == "all":
        torch_opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    else:
        named = list(net.named_parameters())
        decay = [p for n, p in named if n.endswith("weight") and p.dim() > 1]
        rest = [p for n, p in named if not (n.endswith("weight") and p.dim() > 1)]
        torch_opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
            lr=lr, momentum=momentum,
        )  # fmt: skip
    keras_opt = keras.optimizers.SGD(lr, momentum=momentum)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        torch_opt.zero_grad()
        F.cross_entropy(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())),
                        torch.from_numpy(y)).backward()  # fmt: skip
        torch_opt.step()
        with tf.GradientTape() as tape:
            loss = ce(y, model(x, training=True)) + keras.ops.sum(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        keras_opt.apply(grads, model.trainable_variables)

    ours = pretrained.export_state_dict(model)
    theirs = {k: v.numpy() for k, v in net.state_dict().items()}
    assert set(ours) == set(theirs)
    worst = max(
        (float(np.max(np.abs(ours[k] - theirs[k]))), k)
        for k in theirs if not k.endswith("num_batches_tracked")
    )  # fmt: skip
    print(f"training step ({scope}): max |weight diff| after 2 steps = {worst[0]:.3g} ({worst[1]})")
    assert worst[0] < 1e-5, worst


# ----------------------------------------------------------------------------- export


# One architecture of every covered family (plus the ImageNet ones the papers use).
ROUND_TRIP = ("resnet8x4", "wrn_16_2", "vgg8", "mobilenetv2", "shufflev1", "shufflev2",
              "efficientnet_b0")  # fmt: skip


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_export_import_round_trip_is_exact(tmp_path, name):
    source = models.get(name, 10)
    for v in source.weights:  # every weight distinct and non-default
        v.assign(np.random.default_rng(len(v.path)).standard_normal(v.shape).astype(np.float32))
    path = pretrained.save_state_dict(source, tmp_path / f"{name}.safetensors")
    state = pretrained.read_state_dict(path)
    assert pretrained.guess_architecture({k: v.shape for k, v in state.items()}) == name
    target = models.get(name, 10)
    pretrained.load_pretrained(target, path)
    for a, b in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_export_loads_into_the_pytorch_reference(tmp_path):
    """strict=True load into RepDistiller's definition; logits equal lskd_tf's."""
    from safetensors.torch import load_file

    model = models.get("resnet20", 100)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(np.random.default_rng(0).uniform(0.5, 1.5, v.shape).astype(np.float32))
    path = pretrained.save_state_dict(model, tmp_path / "resnet20.safetensors")
    net = CifarResNet(20, (16, 16, 32, 64), num_classes=100)
    net.load_state_dict(load_file(str(path)), strict=True)
    _assert_close_logits(*_logits(net, model, _images(4, 32)), "resnet20 export")


# ----------------------------------------------------------------------------- errors


def _one_line_error(fn, *match) -> str:
    with pytest.raises(ValueError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message, message
    for text in match:
        assert text in message, message
    return message


def test_mismatched_files_give_one_line_errors(tmp_path):
    net = CifarResNet(8, (16, 16, 32, 64), num_classes=100)
    path = tmp_path / "resnet8.safetensors"
    torch_save_safetensors(net.state_dict(), str(path))

    wrong_arch = models.get("resnet20", 100)
    _one_line_error(lambda: pretrained.load_pretrained(wrong_arch, path),
                    "missing key 'layer1.1.conv1.weight'", "looks like resnet8")  # fmt: skip
    wider = models.get("resnet8x4", 100)
    _one_line_error(lambda: pretrained.load_pretrained(wider, path),
                    "'conv1.weight' has shape (16, 3, 3, 3)", "(32, 3, 3, 3)")  # fmt: skip

    cub = models.get("resnet8", 200)  # a new head: 200 classes from 100-class weights
    _one_line_error(lambda: pretrained.load_pretrained(cub, path),
                    "'fc.weight' has shape (100, 64)", "skip_classifier=True")  # fmt: skip
    head_before = cub.get_layer("classifier").kernel.numpy().copy()
    info = pretrained.load_pretrained(cub, path, skip_classifier=True)
    assert info["skip_classifier"] and info["keys"] == len(pretrained.torch_parameters(cub)) - 2
    np.testing.assert_array_equal(cub.get_layer("classifier").kernel.numpy(), head_before)
    np.testing.assert_array_equal(
        cub.get_layer("stem_conv").kernel.numpy(),
        net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
    )

    extra = dict(net.state_dict(), **{"projector.weight": torch.zeros(3)})
    torch_save_safetensors(extra, str(tmp_path / "extra.safetensors"))
    fresh = models.get("resnet8", 100)
    _one_line_error(lambda: pretrained.load_pretrained(fresh, tmp_path / "extra.safetensors"),
                    "unexpected key 'projector.weight'")  # fmt: skip
    _one_line_error(lambda: pretrained.read_state_dict(tmp_path / "nope.pth"), "does not exist")
    (tmp_path / "weights.h5").write_bytes(b"x")
    _one_line_error(lambda: pretrained.read_state_dict(tmp_path / "weights.h5"), ".safetensors")
    torch.save(net, tmp_path / "whole_model.pth")  # a pickled module, not a state dict
    _one_line_error(lambda: pretrained.read_state_dict(tmp_path / "whole_model.pth"))
    binary = models.get("reactnet_resnet18", 10)
    _one_line_error(lambda: pretrained.export_state_dict(binary), "no PyTorch name map")


def test_initialize_keeps_a_new_head_only_for_another_class_count(tmp_path):
    """Study runs: ImageNet-sized (here 100-class) weights into a 200-class (CUB) model."""
    source = models.get("resnet8", 100)
    keras_path = tmp_path / "last.keras"
    source.save(keras_path)  # an lskd_tf run's checkpoint initializes fine-tuning too
    same = models.get("resnet8", 100)
    info = pretrained.initialize(same, keras_path)
    assert not info["skip_classifier"] and len(info["sha256"]) == 64
    for a, b in zip(source.weights, same.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    cub = models.get("resnet8", 200)
    assert pretrained.initialize(cub, keras_path)["skip_classifier"]
    np.testing.assert_array_equal(
        cub.get_layer("stem_bn").moving_variance.numpy(),
        source.get_layer("stem_bn").moving_variance.numpy(),
    )
    from lskd_tf.experiment.planning import weights_for

    entries = (("", "all.safetensors"), ("resnet18", "r18.safetensors"))
    assert weights_for(entries, "resnet18") == "r18.safetensors"
    assert weights_for(entries, "mobilenet_v2") == "all.safetensors"
    assert weights_for((), "resnet18") is None


def test_each_student_can_start_from_its_own_earlier_run():
    """ReActNet's step 2: every student from the step-1 run of its teacher and seed."""
    from lskd_tf.experiment import DataSpec, StudySpec
    from lskd_tf.experiment.planning import plan_study

    step1 = "runs/s/student-reactnet_resnet18_step1-T1-seed{seed}-from-{teacher}/last.keras"
    study = StudySpec(
        data=DataSpec(name="embedded"), teacher_models=("resnet8",),
        teacher_smoothings=(0.0, 0.1), student_models=("reactnet_resnet18",),
        temperatures=(1.0,), seeds=(0, 1), pretrained=(("reactnet_resnet18", step1),),
    )  # fmt: skip
    students = [run for run in plan_study(study) if run.kind == "student"]
    assert [s.pretrained for s in students] == [
        step1.format(seed=seed, teacher=f"resnet8-ls{alpha}-seed0")
        for alpha in ("0", "0.1") for seed in (0, 1)
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown placeholder.*use \{seed\}, \{teacher\}"):
        plan_study(dataclasses.replace(study, pretrained=(("", "w-{student_seed}.keras"),)))


def test_study_runs_record_the_weights_they_start_from(tmp_path):
    """experiment.run: a PyTorch teacher file and pretrained student weights, SHA-256s."""
    import json

    from lskd_tf import experiment
    from lskd_tf.training import TrainConfig

    teacher_file = tmp_path / "teacher_resnet20.safetensors"  # a 100-class CIFAR teacher
    torch_save_safetensors(
        _randomize_bn(CifarResNet(20, (16, 16, 32, 64), num_classes=100)).state_dict(),
        str(teacher_file),
    )
    student_file = tmp_path / "student_resnet8_10cls.pth"  # other class count: new head
    torch.save(CifarResNet(8, (16, 16, 32, 64), num_classes=10).state_dict(), student_file)
    spec = experiment.StudentSpec(
        model="resnet8", teacher_checkpoint=str(teacher_file),
        distill=lskd_tf.DistillSpec(temperature=1.0),
        train=TrainConfig(epochs=1, batch_size=50, verbose=0),
        data=experiment.DataSpec(name="embedded", options=(("train_per_class", 1),
                                                           ("test_per_class", 1))),
        pretrained=str(student_file),
    )  # fmt: skip
    env = experiment.RunEnv(output_dir=str(tmp_path / "runs"), study="pt",
                            tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    experiment.run(spec, env)
    recorded = json.loads((env.run_dir(spec) / "run.json").read_text())
    assert recorded["spec"]["pretrained"] == str(student_file)
    assert (
        recorded["pretrained_weights"]["sha256"]
        == hashlib.sha256(student_file.read_bytes()).hexdigest()
    )
    assert recorded["pretrained_weights"]["skip_classifier"] is True
    assert (
        recorded["identity"]["teacher"]["checkpoint_sha256"]
        == hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    )
    assert (
        recorded["identity"]["pretrained_sha256"]
        == hashlib.sha256(student_file.read_bytes()).hexdigest()
    )
