"""CIFAR-100 (TFDS `cifar100`) and the embedded stand-in, which share the CIFAR recipe.

Training: 4-pixel zero pad + random 32x32 crop + horizontal flip; eval: none.
Normalization: CIFAR-100 mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761)
(the papers' code); the embedded dataset uses its own train-split statistics.
"""

from __future__ import annotations

import tensorflow as tf

from lskd_tf.data import augment, embedded
from lskd_tf.data.info import CIFAR100_MEAN, CIFAR100_STD, DatasetInfo
from lskd_tf.data.source import TfdsSource, register

# The 100 fine and 20 coarse CIFAR-100 names in label order (as TFDS lists them),
# and the coarse label of every fine class (from the dataset's own annotations).
CIFAR100_CLASS_NAMES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl
boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain
plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
worm""".split()
CIFAR100_SUPERCLASS_NAMES = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split()
CIFAR100_COARSE = (
    4,
    1,
    14,
    8,
    0,
    6,
    7,
    7,
    18,
    3,
    3,
    14,
    9,
    18,
    7,
    11,
    3,
    9,
    7,
    11,
    6,
    11,
    5,
    10,
    7,
    6,
    13,
    15,
    3,
    15,
    0,
    11,
    1,
    10,
    12,
    14,
    16,
    9,
    11,
    5,
    5,
    19,
    8,
    8,
    15,
    13,
    14,
    17,
    18,
    10,
    16,
    4,
    17,
    4,
    2,
    0,
    17,
    4,
    18,
    17,
    10,
    3,
    2,
    12,
    12,
    16,
    12,
    1,
    9,
    19,
    2,
    10,
    0,
    1,
    16,
    12,
    9,
    13,
    15,
    13,
    16,
    19,
    2,
    4,
    6,
    19,
    5,
    5,
    8,
    19,
    18,
    1,
    2,
    15,
    6,
    0,
    17,
    8,
    14,
    13,
)


class Cifar100(TfdsSource):
    """TFDS `cifar100`: 50,000 train / 10,000 test 32x32 images, 100 classes in 20 groups."""

    name = "cifar100"
    splits = ("train", "test")
    shuffle_buffer = 50_000  # the whole training set, like a PyTorch DataLoader
    how_to_get = (
        "re-run with download=True (command line: --download), or run "
        "`tfds build cifar100 --data_dir={data_dir}` on a machine with internet access (~160 MB)"
    )

    def info(self, data_dir, options):
        return DatasetInfo(
            name=self.name,
            num_classes=100,
            class_names=list(CIFAR100_CLASS_NAMES),
            superclass=list(CIFAR100_COARSE),
            superclass_names=list(CIFAR100_SUPERCLASS_NAMES),
            input_shape=(32, 32, 3),
            mean=CIFAR100_MEAN,
            std=CIFAR100_STD,
            num_examples={"train": 50_000, "test": 10_000},
            train_split="train",
            eval_split="test",
        )

    def train_image(self, image, seed, options):
        return augment.pad_crop_flip(image, seed)

    def discrete_views(self, options):
        return augment.PadCropFlipViews(padding=4)

    def eval_image(self, image, options):
        return augment.identity(image)


class Embedded(Cifar100):
    """The procedurally generated stand-in for CIFAR-100 (`lskd_tf.data.embedded`)."""

    name = "embedded"
    #: siblings: "subtle" (the original set) or "separable" (see lskd_tf.data.embedded)
    option_defaults = {
        "train_per_class": 100,
        "test_per_class": 20,
        "data_seed": 0,
        "siblings": "subtle",
    }

    def _per_class(self, split, options):
        return options["train_per_class"] if split == "train" else options["test_per_class"]

    def info(self, data_dir, options):
        for key in ("train_per_class", "test_per_class"):
            if int(options[key]) != options[key] or options[key] < 1:
                raise ValueError(f"{key} must be a positive integer, got {options[key]!r}")
        mean, std = embedded.channel_stats(
            options["train_per_class"], options["data_seed"], options["siblings"]
        )
        return DatasetInfo(
            name=self.name,
            num_classes=embedded.NUM_CLASSES,
            class_names=embedded.class_names(),
            superclass=embedded.coarse_labels(),
            superclass_names=embedded.superclass_names(),
            input_shape=(32, 32, 3),
            mean=mean,
            std=std,
            num_examples={
                split: embedded.NUM_CLASSES * self._per_class(split, options)
                for split in self.splits
            },
            train_split="train",
            eval_split="test",
        )

    def fingerprint(self, data_dir, options):
        """None: generated from its options, which the identity holds already."""
        return None

    def check_prepared(self, data_dir, download):
        """Nothing to prepare: generated in memory (not read from TFDS like its base)."""

    def examples(self, split, data_dir, download, options):
        base = split.split("[")[0]
        if base != split:
            raise ValueError(f"split slicing is not supported for 'embedded'; use {base!r}")
        data = embedded.generate(
            split,
            examples_per_class=self._per_class(split, options),
            data_seed=options["data_seed"],
            siblings=options["siblings"],
        )
        return tf.data.Dataset.from_tensor_slices((data["image"], data["label"]))


register(Cifar100())
register(Embedded())
