"""Input pipeline throughput (images/s) of the CIFAR and ImageNet paths on this machine.

* CIFAR path: the `embedded` dataset (in-memory uint8, exactly the CIFAR-100 recipe:
  pad 4 + random crop 32 + flip, normalize), 10,000 train / 2,000 test images; and the
  real `cifar100` code path on `tfds.testing.mock_data` (its Python generator makes the
  fake examples, so that figure is a lower bound).
* ImageNet path: `imagenet2012` through TFDS with `as_dataset` mocked to serve
  pre-encoded JPEGs of ImageNet's typical size (500x375, smooth random content,
  quality 90); the raw bytes are cached in memory so the figure measures decoding +
  augmentation: train = `extract_jpeg_shape` + `sample_distorted_bounding_box` +
  `decode_and_crop_jpeg` + resize 224 + flip; eval = full decode + resize 256 + center
  crop 224.

The first pass (cache fill, tracing) is excluded; images/s over the next passes.

Finally, is the CIFAR pipeline fast enough to feed training? The embedded train pipeline
at batch 64 (`make_dataset("embedded", "train", global_batch_size=64, training=True)`)
is compared with the images/s that two bare compiled training steps consume
(`train_on_batch` on in-memory tensors: no input pipeline): a resnet20 trained alone and
the `lskd_tf.Distiller` resnet56 -> resnet20. Headroom = pipeline / consumption; above 1
the pipeline is not the bottleneck. Both are measured alone, while in `fit` they share
the same cores, so a headroom near 1 would already slow training down.

    python benchmarks/input_pipeline.py [--jpegs 256] [--passes 3] [--step_repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from timing import interleaved_median_ms  # noqa: E402

import lskd_tf  # noqa: E402
import lskd_tf.data  # noqa: E402
from lskd_tf import models  # noqa: E402


def images_per_second(ds: tf.data.Dataset, passes: int) -> float:
    for _ in ds:  # warm-up: tracing, cache fill, autotune
        pass
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for batch in ds:
            count += int(batch[0].shape[0])
    return count / (time.perf_counter() - start)


def smooth_jpegs(num: int, height: int = 375, width: int = 500, seed: int = 0) -> list[bytes]:
    """JPEGs with photo-like smooth content (upsampled noise), not white noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        low = rng.uniform(0, 255, (1, height // 16, width // 16, 3)).astype(np.float32)
        image = tf.image.resize(low, [height, width], method="bicubic")[0]
        image = image + rng.normal(0, 8, (height, width, 3))
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        out.append(tf.io.encode_jpeg(image, quality=90).numpy())
    return out


def training_steps_images_per_second(batch: int, repeats: int) -> dict[str, float]:
    """Images/s consumed by bare compiled training steps on one in-memory batch."""
    alone = models.get("resnet20", 100, weight_decay=5e-4)
    alone.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=lskd_tf.SmoothedCrossEntropy(0.0),
    )
    distiller = lskd_tf.Distiller(
        models.get("resnet56", 100), models.get("resnet20", 100, weight_decay=5e-4)
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 100, batch).astype("int32"))
    ms = interleaved_median_ms(
        {
            "resnet20 training step": lambda: alone.train_on_batch(x, y),
            "Distiller resnet56->resnet20 step": lambda: distiller.train_on_batch(x, y),
        },
        warmup=2,
        repeats=repeats,
    )
    return {name: batch / (step_ms * 1e-3) for name, step_ms in ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", type=int, default=256)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--step_batch", type=int, default=64, help="batch of the comparison")
    parser.add_argument("--step_repeats", type=int, default=5, help="timed training steps")
    args = parser.parse_args()
    print(f"tf {tf.__version__}, {os.cpu_count()} CPU cores, batch {args.batch_size}")

    for training in (True, False):
        split = "train" if training else "test"
        ds = lskd_tf.data.make_dataset(
            "embedded", split, global_batch_size=args.batch_size, training=training
        )
        rate = images_per_second(ds, args.passes)
        print(f"CIFAR path (embedded, in memory) {split:5s}: {rate:9,.0f} images/s")

    with tfds.testing.mock_data(num_examples=2048):
        ds = lskd_tf.data.make_dataset(
            "cifar100", "train", global_batch_size=args.batch_size, training=True
        )
        rate = images_per_second(ds, 1)
        print(f"CIFAR path (cifar100 on mock_data) train: {rate:9,.0f} images/s (generator-bound)")

    jpegs = smooth_jpegs(args.jpegs)
    print(f"{len(jpegs)} mock JPEGs 500x375, mean {np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB")

    def as_dataset(self, *unused_args, **unused_kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {"image": jpegs, "label": np.arange(len(jpegs), dtype=np.int64) % 1000}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        for training, split in ((True, "train"), (False, "validation")):
            ds = lskd_tf.data.make_dataset(
                "imagenet2012", split, global_batch_size=64, training=training, cache=True
            )
            rate = images_per_second(ds, args.passes)
            print(f"ImageNet path (mock JPEGs) {split:10s}: {rate:9,.0f} images/s")

    ds = lskd_tf.data.make_dataset(
        "embedded", "train", global_batch_size=args.step_batch, training=True
    )
    supply = images_per_second(ds, args.passes)
    demand = training_steps_images_per_second(args.step_batch, args.step_repeats)
    print(f"\nPipeline vs training step, batch {args.step_batch}, each measured alone:")
    print(f"  CIFAR pipeline (embedded) train delivers {supply:9,.0f} images/s")
    for name, rate in demand.items():
        print(
            f"  {name:33s} consumes {rate:9,.0f} images/s  headroom "
            f"pipeline / step = {supply / rate:6.1f}x"
        )
    print("  headroom > 1: the pipeline is not the bottleneck (it shares the cores in fit)")


if __name__ == "__main__":
    main()
