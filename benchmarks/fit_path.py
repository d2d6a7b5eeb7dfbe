"""lskd_tf's real training path against its own bare step and a PyTorch reference loop.

    python benchmarks/fit_path.py [--runs student,distill] [--epochs 3] [--train_per_class 50]

For the student alone (resnet20) and for distillation (resnet56 -> resnet20), batch 64,
32x32 inputs, it measures in this one process, on the same data (the `embedded` train
split, `--train_per_class` images per class):

1. **bare step**: the same compiled model's ``train_step`` as a `tf.function`, on one
   batch that is already a tensor (median of repeated timings after tracing);
2. **lskd_tf fit path**: `lskd_tf.train_teacher` / `lskd_tf.distill_student` exactly as
   a real run calls them, on ``lskd_tf.data.make_dataset("embedded", "train", ...,
   training=True)`` (seeded shuffle + pad-crop-flip augmentation, one dataset per
   epoch), ``verbose=1`` (the progress bar of real runs), no validation; per-step time
   = median epoch time / steps, the first epoch (tracing) excluded;
3. **PyTorch reference**: RepDistiller-style CIFAR ResNets written below, SGD momentum
   0.9 with weight decay 5e-4, cross-entropy or T² KD loss, the plain
   ``for x, y in loader: loss.backward(); optimizer.step()`` loop over a `DataLoader`
   doing the same pad-crop-flip + normalization in the main process
   (``num_workers=0``: on 2 cores worker processes would only compete with the compute
   threads), ``torch.set_num_threads(os.cpu_count())``; timed like 2.

The PyTorch column needs ``pip install -e .[bench]`` (torch==2.13.0); without torch it
is skipped with a message. Targets: fit path / bare <= 1.05, fit path / PyTorch <= 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lskd_tf  # noqa: E402
import lskd_tf.data  # noqa: E402
from lskd_tf import models  # noqa: E402
from lskd_tf.seeding import epoch_seed  # noqa: E402

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:
    torch = None

BATCH = 64
NUM_CLASSES = 100
TEMPERATURE = 4.0
STUDENT, TEACHER = "resnet20", "resnet56"


# --------------------------------------------------------------------------- 1. bare step


def bare_ms(train_model: keras.Model, batch: tuple, steps: int = 10, repeats: int = 5) -> float:
    """Median ms per call of ``tf.function(train_model.train_step)`` on one batch."""
    step = tf.function(train_model.train_step)
    for _ in range(2):  # trace and warm up
        np.asarray(step(batch)["loss"])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            logs = step(batch)
        np.asarray(logs["loss"])
        times.append((time.perf_counter() - start) / steps)
    return 1000 * statistics.median(times)


def compiled_student() -> keras.Model:
    """The student compiled as `lskd_tf.train_teacher` compiles it."""
    model = models.get(STUDENT, NUM_CLASSES, weight_decay=5e-4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=lskd_tf.SmoothedCrossEntropy(0.0),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    return model


def compiled_distiller() -> keras.Model:
    """A Distiller compiled as `lskd_tf.distill_student` compiles it."""
    teacher = models.get(TEACHER, NUM_CLASSES, weight_decay=5e-4)
    student = models.get(STUDENT, NUM_CLASSES, weight_decay=5e-4)
    distiller = lskd_tf.Distiller(teacher, student, lskd_tf.DistillSpec(temperature=TEMPERATURE))
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return distiller


# --------------------------------------------------------------------------- 2. fit path


class StepTimer(keras.callbacks.Callback):
    """Per epoch: the first step, the median of the others, and the epoch's span."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.times = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        steps = np.diff(self.times) * 1000
        span = self.times[-1] - self.times[0]
        self.epochs.append({"first": steps[0], "steady": np.median(steps[1:]), "span": span})


def fit_path_ms(kind: str, train_fn: Callable, epochs: int, steps: int) -> tuple[float, dict]:
    """ms/step of a real `train_teacher` / `distill_student` run (first epoch excluded).

    Also returns where an epoch's time goes (medians over the same epochs): its first
    step (new iterator, input pipeline start), the median of the other steps, and the
    time outside the steps (reseeding, building the epoch's dataset, `fit`'s set-up
    and tear-down, which includes deleting the dataset iterator).
    """
    config = lskd_tf.TrainConfig(epochs=epochs, batch_size=BATCH, verbose=1)
    student = models.get(STUDENT, NUM_CLASSES, weight_decay=5e-4)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        if kind == "student":
            result = lskd_tf.train_teacher(
                student, train_fn, run_dir=run_dir, config=config, callbacks=[timer]
            )
        else:
            teacher = models.get(TEACHER, NUM_CLASSES, weight_decay=5e-4)
            result = lskd_tf.distill_student(
                teacher, student, train_fn, run_dir=run_dir, config=config,
                distill=lskd_tf.DistillSpec(temperature=TEMPERATURE), callbacks=[timer],
            )  # fmt: skip
    rows, timed = result.history[1:], timer.epochs[1:]
    breakdown = {
        "first step ms": statistics.median(t["first"] for t in timed),
        "other steps ms": statistics.median(t["steady"] for t in timed),
        "outside steps s": statistics.median(
            row["epoch_time_s"] - t["span"] for row, t in zip(rows, timed)
        ),
    }
    return 1000 * statistics.median(row["epoch_time_s"] / steps for row in rows), breakdown


# --------------------------------------------------------------------------- 3. PyTorch


if torch is not None:

    class BasicBlock(nn.Module):
        """RepDistiller's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU."""

        def __init__(self, inplanes: int, planes: int, stride: int = 1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            residual = x if self.downsample is None else self.downsample(x)
            return F.relu(out + residual)

    class CifarResNet(nn.Module):
        """RepDistiller's `ResNet(depth, [16, 16, 32, 64])`: resnet20 / resnet56."""

        def __init__(self, depth: int, widths=(16, 16, 32, 64), num_classes: int = NUM_CLASSES):
            super().__init__()
            blocks = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            layers, inplanes = [], widths[0]
            for stage, planes in enumerate(widths[1:]):
                for b in range(blocks):
                    stride = 2 if stage > 0 and b == 0 else 1
                    layers.append(BasicBlock(inplanes, planes, stride))
                    inplanes = planes
            self.layers = nn.Sequential(*layers)
            self.avgpool = nn.AvgPool2d(8)
            self.fc = nn.Linear(widths[3], num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class PadCropFlip(torch.utils.data.Dataset):
        """CIFAR train transform: zero-pad 4, random 32x32 crop, horizontal flip, normalize."""

        def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std):
            padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
            self.images = torch.from_numpy(padded).permute(0, 3, 1, 2).contiguous()
            self.labels = torch.from_numpy(labels.astype(np.int64))
            self.mean = torch.tensor(mean).view(3, 1, 1) * 255
            self.std = torch.tensor(std).view(3, 1, 1) * 255

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            dy, dx = np.random.randint(0, 9, 2)
            image = self.images[i, :, dy : dy + 32, dx : dx + 32].float()
            if np.random.rand() < 0.5:
                image = image.flip(2)
            return (image - self.mean) / self.std, self.labels[i]

    def torch_ms(kind: str, loader, epochs: int) -> float:
        """ms/step of the PyTorch loop (first epoch excluded)."""
        torch.manual_seed(0)
        student = CifarResNet(20).train()
        teacher = CifarResNet(56).eval() if kind == "distill" else None
        optimizer = torch.optim.SGD(student.parameters(), 0.05, momentum=0.9, weight_decay=5e-4)
        epoch_times = []
        for _ in range(epochs):
            start = time.perf_counter()
            for x, y in loader:
                logits = student(x)
                if teacher is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(x)
                    loss = F.kl_div(
                        F.log_softmax(logits / TEMPERATURE, 1),
                        F.softmax(teacher_logits / TEMPERATURE, 1),
                        reduction="batchmean",
                    ) * (TEMPERATURE**2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            epoch_times.append((time.perf_counter() - start) / len(loader))
        return 1000 * statistics.median(epoch_times[1:])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="student,distill")
    parser.add_argument("--epochs", type=int, default=3, help="per timed run; >= 2")
    parser.add_argument("--train_per_class", type=int, default=50)
    args = parser.parse_args()
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"torch {torch.__version__ if torch else 'not installed'}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if torch is None:
        print("PyTorch is not installed (pip install -e .[bench]): skipping its column.")
    else:
        torch.set_num_threads(os.cpu_count())

    def train_fn(epoch: int, input_context=None) -> tf.data.Dataset:
        return lskd_tf.data.make_dataset(
            "embedded", "train", global_batch_size=BATCH, training=True,
            seed=epoch_seed(0, epoch), input_context=input_context,
            train_per_class=args.train_per_class,
        )  # fmt: skip

    first = train_fn(0)
    steps = int(first.cardinality())
    batch = next(iter(first))
    if torch is not None:
        raw = lskd_tf.data.embedded.generate("train", examples_per_class=args.train_per_class)
        info = lskd_tf.data.get_info("embedded", train_per_class=args.train_per_class)
        dataset = PadCropFlip(raw["image"], raw["label"], info.mean, info.std)
        loader = torch.utils.data.DataLoader(dataset, BATCH, shuffle=True, drop_last=True)

    rows = []
    for kind in args.runs.split(","):
        model = compiled_student() if kind == "student" else compiled_distiller()
        bare = bare_ms(model, batch)
        fit, breakdown = fit_path_ms(kind, train_fn, args.epochs, steps)
        reference = torch_ms(kind, loader, args.epochs) if torch is not None else float("nan")
        rows.append((kind, bare, fit, reference, breakdown))

    print(f"\nms/step, batch {BATCH}, {steps} steps/epoch, median of epochs 2..{args.epochs}")
    print(f"{'':10s} {'bare step':>10s} {'fit path':>10s} {'PyTorch':>10s} {'fit/bare':>9s} "
          f"{'fit/torch':>9s}")  # fmt: skip
    for kind, bare, fit, reference, _ in rows:
        print(
            f"{kind:10s} {bare:10.1f} {fit:10.1f} {reference:10.1f} {fit / bare:9.3f} "
            f"{fit / reference:9.3f}"
        )
    print("\nfit path, per epoch:")
    for kind, *_, breakdown in rows:
        print(f"{kind:10s} " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))


if __name__ == "__main__":
    main()
