"""ImageNet-1K (TFDS `imagenet2012`, manual download) and CUB-200-2011 (`caltech_birds2011`).

Both read JPEG bytes (`tfds.decode.SkipDecoding`) and decode in the pipeline's map
with PIL's accurate DCT: ImageNet training decodes only the sampled crop window
(`decode_and_crop_jpeg`). Eval for both: torchvision's `Resize(256)` +
`CenterCrop(224)`, antialiased like PIL (`augment.resize_center_crop`). Normalization:
the torchvision ImageNet constants, as in both papers.

Option ``antialias`` (default True) antialiases every resize (the eval resize and the
training crop's), as torchvision does on PIL images; False gives `tf.image.resize`'s
plain bilinear. Runs record all these options in their identity (`Source.preprocessing`):
the preprocessing changed after ImageNet/CUB runs were recorded.
"""

from __future__ import annotations

import tensorflow as tf

from lskd_tf.data import augment, semantic
from lskd_tf.data.info import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from lskd_tf.data.source import TfdsSource, register


class Imagenet2012(TfdsSource):
    """ILSVRC 2012: 1,281,167 train / 50,000 validation images, 1000 classes.

    The superclass of each class comes from `imagenet_groups.json` (its highest
    WordNet ancestor covering at most 30 ImageNet classes, see
    `tools/make_imagenet_groups.py`).
    """

    name = "imagenet2012"
    splits = ("train", "validation")
    eval_split = "validation"
    #: lighting: ReActNet's PCA lighting noise std (`Lighting(0.1)` in its binary
    #: student's recipe), applied after the crop; 0 (off) in the papers' ResNet recipes.
    option_defaults = {"image_size": 224, "antialias": True, "lighting": 0.0}
    skip_decoding = True
    records_preprocessing = True
    how_to_get = (
        "ImageNet cannot be downloaded automatically. Register at "
        "https://image-net.org, download ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar, place them in {data_dir}/downloads/manual/, then run "
        "`tfds build imagenet2012 --data_dir={data_dir}` (or re-run with "
        "download=True / --download, which prepares from those tar files)"
    )

    def info(self, data_dir, options):
        groups = semantic.imagenet_groups()
        size = int(options["image_size"])
        return DatasetInfo(
            name=self.name,
            num_classes=1000,
            class_names=groups["class_names"],
            superclass=groups["group"],
            superclass_names=groups["group_names"],
            input_shape=(size, size, 3),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            num_examples={"train": 1_281_167, "validation": 50_000},
            train_split="train",
            eval_split="validation",
        )

    def train_image(self, image, seed, options):
        image = augment.jpeg_random_resized_crop_flip(
            image, seed, size=options["image_size"], antialias=bool(options["antialias"])
        )
        if options["lighting"]:
            lighting_seed = tf.random.experimental.stateless_fold_in(seed, 1)
            image = augment.pca_lighting(image, lighting_seed, alphastd=options["lighting"])
        return image

    def eval_image(self, image, options):
        return augment.jpeg_resize_center_crop(
            image, size=options["image_size"], antialias=bool(options["antialias"])
        )


class CaltechBirds2011(Imagenet2012):
    """CUB-200-2011: 5,994 train / 5,794 test images of 200 bird species, no superclasses.

    Training: `augment.CubAugmentation`, Chandrasegaran et al.'s CUB augmentation
    (sutd-visual-computing-group/LS-KD-compatibility,
    src/image_classification/cub/train_{teacher,student}.py); each of its fields is a
    dataset option (``max_rotation_degrees=15``, ``brightness=0.4``, ...), defaults the code's.
    """

    name = "caltech_birds2011"
    splits = ("train", "test")
    eval_split = "test"
    how_to_get = (
        "re-run with download=True (command line: --download), or run "
        "`tfds build caltech_birds2011 --data_dir={data_dir}` on a machine with "
        "internet access (~1.2 GB)"
    )
    option_defaults = {"image_size": 224, **augment.CUB_AUGMENTATION_DEFAULTS}

    def info(self, data_dir, options):
        self.augmentation(options)  # bad augmentation options: a ValueError now, not in tf.data
        size = int(options["image_size"])
        return DatasetInfo(
            name=self.name,
            num_classes=200,
            class_names=[f"species_{i + 1:03d}" for i in range(200)],
            superclass=None,
            superclass_names=None,
            input_shape=(size, size, 3),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            num_examples={"train": 5_994, "test": 5_794},
            train_split="train",
            eval_split="test",
        )

    def train_image(self, image, seed, options):
        return self.augmentation(options)(
            augment.decode_image(image), seed, size=options["image_size"]
        )

    def augmentation(self, options) -> augment.CubAugmentation:
        """The training augmentation the (resolved) options ask for."""
        return augment.CubAugmentation(
            **{name: options[name] for name in augment.CUB_AUGMENTATION_DEFAULTS}
        )


register(Imagenet2012())
register(CaltechBirds2011())
