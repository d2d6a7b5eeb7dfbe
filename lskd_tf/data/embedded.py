"""A procedurally generated, CIFAR-100-shaped dataset that needs no download.

`generate()` draws 32x32x3 uint8 images of 100 classes in 20 superclasses of 5, with
the element structure of TFDS `cifar100`: `image`, `label` (0..99) and `coarse_label`
(0..19, `label // 5`). It is a deterministic function of `data_seed`, the split and
the split's size, and takes about a second for the default 12,000 images.

How an image is drawn
---------------------
Every image is one coloured, striped "flower" shape on a textured background:

* A **superclass** (a visual family) fixes the shape's number of lobes
  (2..6: oval, trefoil, quatrefoil, pentafoil, hexafoil), the background texture
  (flat, gradient, grating, speckle), a family hue for the shape (20 hues in random
  order, 0.05 apart on the colour wheel) and a roughly complementary background hue.
* Each of the 5 **classes** of a family perturbs three of its traits by small steps:
  the hue (offsets -0.02..0.02, i.e. 0.01 apart), the depth of the lobes
  (amplitudes 0.12..0.36) and the orientation of the stripes painted on the shape
  (0, 36, ..., 144 degrees); each trait's five values are dealt to the five classes
  in an independent random order, so siblings differ in all three, but only a little.
* Each **example** varies at random: position (+-5 px), size (radius 7..11 px),
  rotation, hue (sd 0.01), saturation, brightness, stripe period and phase, stripe
  orientation (sd 12 degrees), the background's colour and texture parameters, an
  optional small distractor disc, and Gaussian pixel noise (sd 0.06).

Classes of one family therefore look alike (same shape, background and hue range) and
are told apart only by fine cues blurred by the per-example noise, while classes of
different families differ in coarse, easy cues: confusions concentrate within
superclasses, as the papers' "semantically similar classes" analyses need. Class
prototypes depend only on `data_seed`, so train and test share classes; the examples
of each split come from independent random streams.

Separable siblings (``siblings="separable"``)
-------------------------------------------
With the default (``"subtle"``) siblings overlap from the start: a trained network finds
the superclass (top-5 ~98 %) but not the class (top-1 ~40 %), so a teacher has no
well-separated sibling clusters that could diffuse into each other (Chandrasegaran's
mechanism). Two things hide the siblings' stripe orientation: per-example jitter of 12
degrees against 36-degree class steps, and the horizontal flip of the training
augmentation, which maps an angle t to 180 - t and so merges the classes at 36 and 144
degrees (and 72 and 108). ``"separable"`` keeps every superclass cue and every source
of per-example variation, and changes only the sibling cues:

* stripe angles 0, 22.5, 45, 67.5 and 90 degrees from the horizontal, with no family
  offset: a flip gives 180 - t, which no other class uses, so each class stays itself;
* angle jitter 4 degrees (a fifth of the class step) and stripes twice as contrasted
  (0.3..0.45);
* lobe depths 0.08..0.50 instead of 0.12..0.36.

The hue offsets, everything else per class, and every per-example draw are unchanged,
and the random streams are consumed identically, so the two variants show the same
scenes with different sibling cues.
"""

from __future__ import annotations

import functools

import numpy as np

IMAGE_SIZE = 32
NUM_SUPERCLASSES = 20
CLASSES_PER_SUPERCLASS = 5
NUM_CLASSES = NUM_SUPERCLASSES * CLASSES_PER_SUPERCLASS
SPLITS = ("train", "test")
DEFAULT_EXAMPLES_PER_CLASS = {"train": 100, "test": 20}

SHAPES = ("oval", "trefoil", "quatrefoil", "pentafoil", "hexafoil")
LOBES = (2, 3, 4, 5, 6)
BACKGROUNDS = ("flat", "gradient", "grating", "speckle")

# Class-level steps within a family (see the module docstring).
_HUE_OFFSETS = np.linspace(-0.02, 0.02, CLASSES_PER_SUPERCLASS)
_LOBE_DEPTHS = np.linspace(0.12, 0.36, CLASSES_PER_SUPERCLASS)
_STRIPE_ANGLES = np.deg2rad(np.arange(CLASSES_PER_SUPERCLASS) * 180.0 / CLASSES_PER_SUPERCLASS)

SIBLINGS = ("subtle", "separable")
# The separable variant's sibling cues (see the module docstring).
_SEPARABLE_STRIPE_ANGLES = np.deg2rad(np.linspace(0.0, 90.0, CLASSES_PER_SUPERCLASS))
_SEPARABLE_LOBE_DEPTHS = np.linspace(0.08, 0.50, CLASSES_PER_SUPERCLASS)
_SEPARABLE_ANGLE_JITTER = np.deg2rad(4.0)
_SEPARABLE_STRIPE_CONTRAST = (0.3, 0.45)

# Example-level noise.
_HUE_JITTER = 0.01
_STRIPE_ANGLE_JITTER = np.deg2rad(12.0)
_PIXEL_NOISE = 0.06
_CHUNK = 2048  # images rendered at once (bounds memory at ~40 MB per array)


def superclass_names() -> list[str]:
    """The 20 family names, e.g. `"trefoil-grating"`; index = coarse label."""
    return [
        f"{SHAPES[s % len(SHAPES)]}-{BACKGROUNDS[s // len(SHAPES)]}"
        for s in range(NUM_SUPERCLASSES)
    ]


def class_names() -> list[str]:
    """The 100 class names, `"<family>-<k>"`; index = label."""
    return [f"{family}-{k}" for family in superclass_names() for k in range(CLASSES_PER_SUPERCLASS)]


def coarse_labels() -> np.ndarray:
    """Superclass of every class: `label // 5`, shape (100,)."""
    return np.arange(NUM_CLASSES, dtype=np.int64) // CLASSES_PER_SUPERCLASS


def _class_prototypes(data_seed: int, siblings: str = "subtle") -> dict[str, np.ndarray]:
    """Per-class traits, each an array of shape (100,); depends on data_seed only."""
    separable = siblings == "separable"
    rng = np.random.default_rng([data_seed, 0])
    family = np.arange(NUM_SUPERCLASSES)
    family_hue = (rng.permutation(NUM_SUPERCLASSES) + rng.uniform(-0.15, 0.15, 20)) / 20
    background_hue = family_hue + 0.5 + rng.uniform(-0.1, 0.1, NUM_SUPERCLASSES)
    stripe_base = rng.uniform(0, np.pi, NUM_SUPERCLASSES)

    def deal(values):  # each family deals the 5 values to its 5 classes in random order
        return np.concatenate([values[rng.permutation(len(values))] for _ in family])

    repeat = functools.partial(np.repeat, repeats=CLASSES_PER_SUPERCLASS)
    hue = (repeat(family_hue) + deal(_HUE_OFFSETS)) % 1.0
    lobe_depth = deal(_SEPARABLE_LOBE_DEPTHS if separable else _LOBE_DEPTHS)
    angles = deal(_SEPARABLE_STRIPE_ANGLES if separable else _STRIPE_ANGLES)
    return {
        "lobes": repeat(np.array(LOBES)[family % len(LOBES)]),
        "background": repeat(family // len(LOBES)),
        "hue": hue,
        "background_hue": repeat(background_hue) % 1.0,
        "lobe_depth": lobe_depth,
        "stripe_angle": angles if separable else repeat(stripe_base) + angles,
    }


def _hsv_to_rgb(h, s, v):
    """Vectorized HSV -> RGB; inputs broadcast, output has a trailing axis of 3."""
    h, s, v = (np.asarray(a, np.float32)[..., None] for a in (h, s, v))
    n = np.array([5.0, 3.0, 1.0], np.float32)
    k = (n + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _example_params(
    rng: np.random.Generator, labels: np.ndarray, proto, siblings: str = "subtle"
) -> dict:
    """Draw every random quantity of every example up front (chunking-invariant)."""
    n = len(labels)
    u = functools.partial(rng.uniform, size=n)
    separable = siblings == "separable"
    angle_jitter = _SEPARABLE_ANGLE_JITTER if separable else _STRIPE_ANGLE_JITTER
    return {
        "cx": u(16 - 5, 16 + 5),
        "cy": u(16 - 5, 16 + 5),
        "radius": u(7.0, 11.0),
        "rotation": u(0, 2 * np.pi),
        "hue": proto["hue"][labels] + rng.normal(0, _HUE_JITTER, n),
        "sat": u(0.55, 0.9),
        "val": u(0.6, 0.95),
        "stripe_angle": proto["stripe_angle"][labels] + rng.normal(0, angle_jitter, n),
        "stripe_period": u(3.5, 5.5),
        "stripe_phase": u(0, 2 * np.pi),
        "stripe_contrast": u(*(_SEPARABLE_STRIPE_CONTRAST if separable else (0.15, 0.3))),
        "bg_hue": proto["background_hue"][labels] + rng.normal(0, 0.03, n),
        "bg_sat": u(0.2, 0.5),
        "bg_val": u(0.25, 0.55),
        "bg_angle": u(0, 2 * np.pi),
        "bg_period": u(6.0, 10.0),
        "bg_amplitude": u(0.1, 0.25),
        "speckle": rng.normal(0, 1, (n, 8, 8)).astype(np.float32),
        "distractor": rng.uniform(size=n) < 0.5,
        "dx": u(2, 30),
        "dy": u(2, 30),
        "dradius": u(2.0, 4.0),
        "drgb": rng.uniform(0.1, 0.9, (n, 3)),
        "noise_seed": rng.integers(0, 2**63 - 1, n),  # only a chunk's first is used
    }


def _render(p: dict, lobes: np.ndarray, lobe_depth: np.ndarray, background: np.ndarray):
    """Render images for one chunk of example parameters -> float32 (n, 32, 32, 3) in [0, 1]."""
    n = len(lobes)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    y, x = np.meshgrid(grid, grid, indexing="ij")  # (32, 32)

    def col(name):  # a parameter as (n, 1, 1) for broadcasting over pixels
        return np.asarray(p[name], np.float32)[:, None, None]

    # Background: colour times a texture that depends on the family's kind.
    bx = np.cos(col("bg_angle")) * x + np.sin(col("bg_angle")) * y
    gradient = (bx - 16.0) / 32.0
    grating = 0.5 * np.sin(2 * np.pi * bx / col("bg_period"))
    speckle = np.kron(p["speckle"], np.ones((4, 4), np.float32)) * 0.35
    kind = background[:, None, None]
    texture = np.select([kind == 1, kind == 2, kind == 3], [gradient, grating, speckle], 0.0)
    shade = 1.0 + col("bg_amplitude") * 2.0 * texture
    image = _hsv_to_rgb(p["bg_hue"] % 1.0, p["bg_sat"], p["bg_val"])[:, None, None, :]
    image = image * shade[..., None]

    # Optional distractor disc (behind the object).
    dist = np.hypot(x - col("dx"), y - col("dy"))
    d_mask = np.clip(col("dradius") - dist + 0.5, 0, 1) * np.asarray(p["distractor"])[:, None, None]
    drgb = np.asarray(p["drgb"], np.float32)[:, None, None, :]
    image = image * (1 - d_mask[..., None]) + drgb * d_mask[..., None]

    # The object: a rotated "flower" r(t) = R (1 + a cos(k t)) / (1 + a), soft edge.
    dx, dy = x - col("cx"), y - col("cy")
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) - col("rotation")
    a, k = lobe_depth[:, None, None], lobes[:, None, None]
    boundary = col("radius") * (1 + a * np.cos(k * theta)) / (1 + a)
    mask = np.clip(boundary - r + 0.5, 0.0, 1.0)[..., None]
    sx = np.cos(col("stripe_angle")) * x + np.sin(col("stripe_angle")) * y
    stripes = np.sin(2 * np.pi * sx / col("stripe_period") + col("stripe_phase"))
    value = col("val") * (1 + col("stripe_contrast") * stripes)
    foreground = _hsv_to_rgb(col("hue") % 1.0, col("sat"), np.clip(value, 0, 1))
    image = image * (1 - mask) + foreground * mask

    # Pixel noise: one stream per chunk (chunk boundaries are fixed, so still deterministic).
    noise_rng = np.random.default_rng(int(p["noise_seed"][0]))
    noise = noise_rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32) * _PIXEL_NOISE
    return np.clip(image + noise, 0.0, 1.0).reshape(n, IMAGE_SIZE, IMAGE_SIZE, 3)


@functools.lru_cache(maxsize=8)
def _generate_cached(split: str, examples_per_class: int, data_seed: int, siblings: str):
    proto = _class_prototypes(data_seed, siblings)
    rng = np.random.default_rng([data_seed, 1 + SPLITS.index(split)])
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), examples_per_class)
    labels = labels[rng.permutation(len(labels))]  # mixed order, like CIFAR's files
    params = _example_params(rng, labels, proto, siblings)
    images = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for start in range(0, len(labels), _CHUNK):
        sl = slice(start, start + _CHUNK)
        chunk = {k: v[sl] for k, v in params.items()}
        rendered = _render(
            chunk,
            proto["lobes"][labels[sl]],
            proto["lobe_depth"][labels[sl]],
            proto["background"][labels[sl]],
        )
        images[sl] = np.round(rendered * 255.0).astype(np.uint8)
    result = {"image": images, "label": labels, "coarse_label": coarse_labels()[labels]}
    for array in result.values():
        array.setflags(write=False)  # cached: callers must not mutate it
    return result


def generate(
    split: str = "train",
    *,
    examples_per_class: int | None = None,
    data_seed: int = 0,
    siblings: str = "subtle",
) -> dict[str, np.ndarray]:
    """Generate one split of the embedded dataset.

    Args:
        split: `"train"` or `"test"` (like cifar100).
        examples_per_class: images per class; the split has `100 * examples_per_class`
            images, balanced. Default 100 for train, 20 for test.
        data_seed: fixes the classes (shared by both splits) and the examples.
        siblings: `"subtle"` (the original set) or `"separable"` (sibling classes a
            network can tell apart; see the module docstring).

    Returns:
        `{"image": uint8 (N, 32, 32, 3), "label": int64 (N,), "coarse_label": int64 (N,)}`,
        read-only NumPy arrays (cached per process; copy before editing).

    Example:
        >>> data = generate("test", examples_per_class=2)
        >>> data["image"].shape, bool((data["coarse_label"] == data["label"] // 5).all())
        ((200, 32, 32, 3), True)
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for 'embedded'; choose one of: train, test")
    if examples_per_class is None:
        examples_per_class = DEFAULT_EXAMPLES_PER_CLASS[split]
    if int(examples_per_class) != examples_per_class or examples_per_class < 1:
        raise ValueError(
            f"examples_per_class must be a positive integer, got {examples_per_class!r}"
        )
    if siblings not in SIBLINGS:
        raise ValueError(f"siblings must be one of {', '.join(SIBLINGS)}, got {siblings!r}")
    return _generate_cached(split, int(examples_per_class), int(data_seed), siblings)


@functools.lru_cache(maxsize=8)
def channel_stats(
    examples_per_class: int, data_seed: int, siblings: str = "subtle"
) -> tuple[tuple, tuple]:
    """Per-channel (mean, std) of the train split in [0, 1] units (the normalization)."""
    images = generate(
        "train", examples_per_class=examples_per_class, data_seed=data_seed, siblings=siblings
    )
    pixels = images["image"].reshape(-1, 3).astype(np.float64) / 255.0
    mean = tuple(round(float(m), 4) for m in pixels.mean(axis=0))
    std = tuple(round(float(s), 4) for s in pixels.std(axis=0))
    return mean, std
