"""Per-example preprocessing: the papers' training augmentations and eval transforms.

Training functions take `(image, seed)` where `seed` is a stateless-RNG seed of shape
(2,) int64, drawn per example from a seeded `tf.data.Dataset.random` stream that is
re-randomized every epoch; every random op here is a `stateless_*` op, so augmentation
differs between epochs yet a run is reproducible from its seed, even with parallel
`map`. All functions return float32 images in [0, 255] at the target size;
normalization happens afterwards (`DatasetInfo.normalize`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import tensorflow as tf

EVAL_RESIZE_RATIO = 256 / 224  # resize the short side to 256, center crop 224


def _split(seed, n: int):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


# ----------------------------------------------------------------------------- CIFAR


def pad_crop_flip(image, seed, *, padding: int = 4):
    """CIFAR recipe: zero-pad `padding` px, random crop back to size, horizontal flip.

    Same as torchvision `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`, and
    bit-identical to `tf.image.stateless_random_crop` + `stateless_random_flip_left_right`
    with the same seeds. Written as "draw the view, then render it" so that the teacher
    cache (`lskd_tf.teacher_cache`) can enumerate all views and know which one was drawn.
    """
    views = PadCropFlipViews(padding)
    return views.render(image, views.draw(seed))


@dataclasses.dataclass(frozen=True)
class PadCropFlipViews:
    """The finite set of views of the CIFAR recipe: (2p+1)² crop offsets × 2 flips.

    With ``padding=4`` that is 81 × 2 = 162 views per image. A view is an int32 index
    ``(dy * (2p+1) + dx) * 2 + flip``. `draw(seed)` is the view `pad_crop_flip` picks
    for a seed (same random numbers as the TF ops it replaces); `render(image, view)`
    produces it. The exact teacher cache stores the teacher's logits for every view.

    Example:
        >>> views = PadCropFlipViews(padding=4)
        >>> views.count
        162
        >>> image = views.render(tf.zeros([32, 32, 3], tf.uint8), views.draw([1, 2]))
    """

    padding: int = 4

    @property
    def count(self) -> int:
        return (2 * self.padding + 1) ** 2 * 2

    def draw(self, seed):
        """The view index a stateless seed selects (int32 scalar)."""
        crop_seed, flip_seed = _split(seed, 2)
        side = 2 * self.padding + 1
        # tf.image.stateless_random_crop: uniform int32 per axis, modulo (limit = side, side, 1).
        offset = tf.random.stateless_uniform([3], crop_seed, maxval=tf.int32.max, dtype=tf.int32)
        dy, dx = offset[0] % side, offset[1] % side
        # tf.image.stateless_random_flip_left_right: flip when uniform [0, 1) < 0.5.
        flip = tf.cast(tf.random.stateless_uniform([], flip_seed, 0, 1.0) < 0.5, tf.int32)
        return (dy * side + dx) * 2 + flip

    def render(self, image, view):
        """View `view` of an (H, W, C) image, as float32."""
        view = tf.convert_to_tensor(view, tf.int32)
        side = 2 * self.padding + 1
        offset, flip = view // 2, view % 2
        dy, dx = offset // side, offset % side
        shape = tf.shape(image)
        padding = self.padding
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        crop = tf.slice(padded, tf.stack([dy, dx, 0]), shape)
        crop = tf.cond(flip > 0, lambda: tf.reverse(crop, [1]), lambda: crop)
        return tf.cast(crop, tf.float32)

    def render_all(self, image):
        """All `count` views of an (H, W, C) image at once, (count, H, W, C) float32.

        ``render_all(image)[v] == render(image, v)``; one patch extraction instead of
        `count` crops (the teacher cache renders every view of every image).
        """
        height, width, channels = image.shape
        if None in (height, width, channels):  # unknown size: one view at a time
            return tf.map_fn(
                lambda view: self.render(image, view),
                tf.range(self.count),
                fn_output_signature=tf.float32,
            )
        padding = self.padding
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        crops = tf.image.extract_patches(
            padded[None],
            sizes=[1, height, width, 1],
            strides=[1, 1, 1, 1],
            rates=[1, 1, 1, 1],
            padding="VALID",
        )  # (1, side, side, H * W * C), offsets in (dy, dx) order
        crops = tf.reshape(crops, [-1, height, width, channels])
        views = tf.stack([crops, tf.reverse(crops, [2])], axis=1)  # (side², 2, H, W, C)
        return tf.cast(tf.reshape(views, [-1, height, width, channels]), tf.float32)

    def describe(self) -> dict:
        return {"recipe": "pad_crop_flip", "padding": self.padding, "views": self.count}


def identity(image):
    """Eval transform for datasets already at their input size."""
    return tf.cast(image, tf.float32)


# -------------------------------------------------------------------------- ImageNet
#
# torchvision's transforms run on PIL images: `Resize`, `CenterCrop` and the resize inside
# `RandomResizedCrop` call PIL's `Image.resize(size, BILINEAR)`, a bilinear (triangle)
# filter widened by the downscale factor, i.e. *antialiased*. `tf.image.resize(...,
# antialias=True)` is the same filter (`scale_and_translate`), in float instead of PIL's
# 8-bit fixed point; without antialias a 2x downscale reads only 2 of every 4 pixels.
# PIL decodes JPEGs with libjpeg's accurate integer DCT (JDCT_ISLOW); TensorFlow's
# default is INTEGER_FAST. Measured on three real photographs (matplotlib's
# grace_hopper.jpg, two board photographs from the Rust Embedded Book), PIL 13.0:
#   decode:           INTEGER_FAST up to 18 levels off PIL (mean 1.0-1.8);
#                     INTEGER_ACCURATE identical (0 levels)
#   Resize(256):      antialias=False up to 68 levels off (mean 2.0-3.9);
#                     antialias=True at most 1 level (mean 0.28, 0.13-0.16 after rounding)
# tests/test_data.py checks the eval transform against PIL on grace_hopper.jpg.

JPEG_DCT_METHOD = "INTEGER_ACCURATE"  # libjpeg JDCT_ISLOW, as PIL (and so torchvision)


def _distorted_box(shape, seed, area_range, aspect_ratio_range=(3 / 4, 4 / 3)):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    return offset_y, offset_x, height, width


def jpeg_random_resized_crop_flip(
    jpeg_bytes, seed, *, size: int = 224, area_range=(0.08, 1.0), antialias: bool = True
):
    """ImageNet training: Inception-style random-resized crop decoded straight from JPEG.

    Samples the crop window from the JPEG header (`extract_jpeg_shape` +
    `stateless_sample_distorted_bounding_box`, aspect ratio 3/4..4/3, area 8%..100%),
    decodes only that window (`decode_and_crop_jpeg`, accurate DCT), resizes to `size`
    (bilinear, antialiased like PIL unless `antialias=False`) and flips: the
    tensorflow/models ResNet recipe, equivalent to torchvision's `RandomResizedCrop(224)`
    + `RandomHorizontalFlip()`. (libjpeg's cropped decode can differ from decoding the
    whole image by a few levels near the window: harmless for a random crop.)
    """
    box_seed, flip_seed = _split(seed, 2)
    shape = tf.image.extract_jpeg_shape(jpeg_bytes)
    offset_y, offset_x, height, width = _distorted_box(shape, box_seed, area_range)
    window = tf.stack([offset_y, offset_x, height, width])
    image = tf.image.decode_and_crop_jpeg(
        jpeg_bytes, window, channels=3, dct_method=JPEG_DCT_METHOD
    )
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def torchvision_resize_shape(height, width, short_side: int):
    """(new_height, new_width) of torchvision's `Resize(short_side)`, as int32 tensors.

    The short side becomes `short_side`, the long one ``int(short_side * long / short)``
    (truncated, not rounded: pytorch/vision torchvision/transforms/functional.py,
    `_compute_resized_output_size`; integer floor division gives the same integers).
    """
    height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    new_long = short_side * long // short
    new_hw = tf.where(
        height <= width, tf.stack([short_side, new_long]), tf.stack([new_long, short_side])
    )
    return tf.cast(new_hw, tf.int32)


def center_crop_offset(length, size: int):
    """torchvision `CenterCrop`'s offset ``int(round((length - size) / 2))``.

    pytorch/vision torchvision/transforms/functional.py `center_crop` (and v2's
    `_center_crop_compute_crop_anchor`); Python's `round` goes half to even: 16.5 -> 16,
    17.5 -> 18. (Releases of 2020 rounded half up, ``int((length - size + 1) * 0.5)``.)
    """
    margin = length - size
    half = margin // 2
    return half + (margin % 2) * (half % 2)


def resize_center_crop(
    image, *, size: int = 224, resize_ratio: float = EVAL_RESIZE_RATIO, antialias: bool = True
):
    """ImageNet eval, torchvision's `Resize(256)` + `CenterCrop(224)` on a PIL image.

    The shorter side becomes ``round(size * resize_ratio)`` (256), the longer one is
    scaled and truncated as torchvision does; bilinear with antialiasing (PIL's filter;
    `antialias=False`: plain bilinear, as `tf.image.resize` defaults to); center crop
    `size` with torchvision's offset rounding; values rounded to integers in [0, 255]
    like PIL's 8-bit output. On a real photograph this is within 1 level of
    torchvision's transform on the same decoded pixels (module comment above).

    With antialias only the crop's pixels are computed: `ScaleAndTranslate` with the
    scale `tf.image.resize` uses and the crop offset as translation gives bit-identical
    values to resizing the whole image and cropping, for about half the work.
    """
    shape = tf.shape(image)
    new_hw = torchvision_resize_shape(shape[0], shape[1], round(size * resize_ratio))
    new_hw = tf.maximum(new_hw, size)
    top = center_crop_offset(new_hw[0], size)
    left = center_crop_offset(new_hw[1], size)
    if antialias:
        scale = tf.cast(new_hw, tf.float32) / tf.cast(shape[:2], tf.float32)
        image = tf.raw_ops.ScaleAndTranslate(
            images=tf.cast(image, tf.float32)[None],
            size=tf.constant([size, size], tf.int32),
            scale=scale,
            translation=-tf.cast(tf.stack([top, left]), tf.float32),
            kernel_type="triangle",
            antialias=True,
        )[0]
    else:
        image = tf.image.resize(image, new_hw, method="bilinear")
        image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def decode_image(image_bytes):
    """Decode JPEG/PNG/BMP/GIF bytes to uint8 (H, W, 3); JPEGs with PIL's accurate DCT."""
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method=JPEG_DCT_METHOD),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def jpeg_resize_center_crop(image_bytes, *, size: int = 224, antialias: bool = True):
    """ImageNet/CUB eval from encoded bytes: decode, resize 256, center crop 224."""
    return resize_center_crop(decode_image(image_bytes), size=size, antialias=antialias)


def random_resized_crop_flip(
    image,
    seed,
    *,
    size: int = 224,
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
    antialias: bool = True,
    flip: bool = True,
):
    """Random-resized crop (+ horizontal flip) on a decoded image (any format).

    torchvision's `RandomResizedCrop(size, scale=area_range, ratio=aspect_ratio_range)`
    (+ `RandomHorizontalFlip()` when `flip`); the window comes from
    `stateless_sample_distorted_bounding_box` (aspect ratio uniform, not log-uniform as
    in torchvision), the resize is bilinear, antialiased like PIL unless told otherwise.
    """
    box_seed, flip_seed = _split(seed, 2)
    offset_y, offset_x, height, width = _distorted_box(
        tf.shape(image), box_seed, area_range, aspect_ratio_range
    )
    image = tf.image.crop_to_bounding_box(image, offset_y, offset_x, height, width)
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    if not flip:
        return image
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


# ImageNet's RGB principal components (AlexNet; for pixels in [0, 1]) as ReActNet's and
# MetaPruning's utils.py `imagenet_pca` give them: eigenvalues, eigenvectors as columns.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def pca_lighting(image, seed, *, alphastd: float):
    """ReActNet's `Lighting(alphastd)` (liuzechun/ReActNet `resnet/*/train.py`, class in
    its utils.py, from MetaPruning): AlexNet's PCA colour noise, one draw per image.

    alpha ~ N(0, alphastd) per principal component; see `apply_pca_lighting`.
    """
    alpha = tf.random.stateless_normal([3], seed, dtype=tf.float64) * alphastd
    return apply_pca_lighting(image, alpha)


def apply_pca_lighting(image, alpha):
    """Add ``eigvec @ (alpha * eigval)`` to every pixel the way the reference does.

    The reference adds it to the *uint8* crop (a PIL image, before `ToTensor`), clips
    to [0, 255] and casts back to uint8, which truncates. Its eigenvalues are those of
    [0, 1] pixels, so at alphastd 0.1 the increment is ~0.02 grey levels: what remains
    visible is the truncation, which lowers a channel by one level whenever its
    increment is negative. Reproduced quirk included: the float crop is first rounded
    to uint8 values, as PIL's resize returns, and the sum is taken in float64, as NumPy
    does.
    """
    eigval = tf.constant(IMAGENET_PCA_EIGVAL, tf.float64)
    eigvec = tf.constant(IMAGENET_PCA_EIGVEC, tf.float64)
    increment = tf.linalg.matvec(eigvec, tf.cast(alpha, tf.float64) * eigval)
    pixels = tf.round(tf.clip_by_value(tf.cast(image, tf.float64), 0.0, 255.0))
    lit = tf.floor(tf.clip_by_value(pixels + increment, 0.0, 255.0))
    return tf.cast(lit, tf.float32)


# ------------------------------------------------------------------------------- CUB


def rotate(image, angle, fill_value: float = 0.0):
    """Rotate (H, W, C) float images by `angle` radians about the center (bilinear)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    cx, cy = (width - 1) / 2, (height - 1) / 2
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return rotated[0]


GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, PIL's convert("L")


def to_grayscale(image):
    """PIL's ``convert("L")`` replicated to 3 channels (torchvision `RandomGrayscale`)."""
    gray = tf.tensordot(image, tf.constant(GRAY_WEIGHTS, image.dtype), axes=[[-1], [0]])
    return tf.repeat(gray[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CubAugmentation:
    """CUB-200 training augmentation of Chandrasegaran et al.'s public code.

    Reference: sutd-visual-computing-group/LS-KD-compatibility,
    src/image_classification/cub/train_teacher.py and train_student.py (the same
    transform in both)::

        RandomResizedCrop(224, scale=(0.20, 1.0), ratio=(0.80, 1.25)),
        RandomHorizontalFlip(),
        RandomRotation(45, interpolation=BILINEAR),
        RandomGrayscale(0.2),
        ColorJitter(brightness=0.20, contrast=0.20, saturation=0, hue=0),

    Each field is one of those parameters; the defaults are the code's. Order as there:
    crop, flip, rotation, grayscale, then the jitter (grayscale *before* jitter). How
    each step follows torchvision on PIL images:

    - crop: `random_resized_crop_flip` (window from `sample_distorted_bounding_box`:
      aspect ratio uniform instead of log-uniform; bilinear resize with antialias);
    - rotation: angle U(-max, max) degrees about the image center, bilinear, corners
      filled with 0 (`RandomRotation`'s expand=False, fill=0);
    - grayscale: PIL's luma weights `GRAY_WEIGHTS`, copied to 3 channels;
    - jitter: `ColorJitter` draws a factor U(max(0, 1 - x), 1 + x) for each nonzero
      brightness/contrast/saturation x and a hue shift U(-hue, hue), and applies them in
      a random order (torchvision's ``randperm``); brightness scales the pixels,
      contrast blends with the mean gray level, saturation with the grayscale image,
      hue rotates the HSV hue; each result is clipped to [0, 255] as PIL does (8-bit).
      Zero-strength ops are skipped, as torchvision skips them.
    """

    area_range: tuple[float, float] = (0.2, 1.0)
    aspect_ratio_range: tuple[float, float] = (0.8, 1.25)
    flip: bool = True
    max_rotation_degrees: float = 45.0
    grayscale_probability: float = 0.2
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.0
    hue: float = 0.0
    antialias: bool = True

    def __post_init__(self):
        for name in ("area_range", "aspect_ratio_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0.0 < value[0] <= value[1]:
                raise ValueError(
                    f"CUB augmentation {name} must be (low, high) with 0 < low <= high, "
                    f"got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, value)
        if self.area_range[1] > 1.0:
            raise ValueError(
                f"CUB augmentation area_range must lie in (0, 1], got {self.area_range!r}"
            )
        checks = {
            "max_rotation_degrees": 0.0 <= self.max_rotation_degrees <= 180.0,
            "grayscale_probability": 0.0 <= self.grayscale_probability <= 1.0,
            "brightness": self.brightness >= 0.0,
            "contrast": self.contrast >= 0.0,
            "saturation": self.saturation >= 0.0,
            "hue": 0.0 <= self.hue <= 0.5,
        }
        limits = {"max_rotation_degrees": "in [0, 180]", "grayscale_probability": "in [0, 1]",
                  "hue": "in [0, 0.5]"}  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"CUB augmentation {name} must be {limits.get(name, '>= 0')}, "
                    f"got {getattr(self, name)!r}"
                )

    def __call__(self, image, seed, *, size: int = 224):
        """Augment one decoded (H, W, 3) image: float32 [0, 255] at (size, size, 3)."""
        crop_seed, rot_seed, gray_seed, jitter_seed = _split(seed, 4)
        image = random_resized_crop_flip(
            image, crop_seed, size=size, area_range=self.area_range,
            aspect_ratio_range=self.aspect_ratio_range, antialias=self.antialias,
            flip=self.flip,
        )  # fmt: skip
        if self.max_rotation_degrees > 0:
            max_angle = math.radians(self.max_rotation_degrees)
            image = rotate(image, tf.random.stateless_uniform([], rot_seed, -max_angle, max_angle))
        if self.grayscale_probability > 0:
            use_gray = tf.random.stateless_uniform([], gray_seed) < self.grayscale_probability
            image = tf.where(use_gray, to_grayscale(image), image)
        return self._jitter(image, jitter_seed)

    def _jitter(self, image, seed):
        ops = []
        for name, blend in (
            ("brightness", lambda x: tf.zeros_like(x)),
            ("contrast", lambda x: tf.reduce_mean(to_grayscale(x))),
            ("saturation", to_grayscale),
        ):
            strength = getattr(self, name)
            if strength > 0:
                ops.append((max(0.0, 1.0 - strength), 1.0 + strength, blend))
        if self.hue > 0:
            ops.append((-self.hue, self.hue, None))
        if not ops:
            return image
        order_seed, *factor_seeds = _split(seed, len(ops) + 1)
        branches = []
        for (low, high, blend), factor_seed in zip(ops, factor_seeds):
            factor = tf.random.stateless_uniform([], factor_seed, low, high)
            branches.append(functools.partial(_adjust, factor=factor, blend=blend))
        order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))
        for position in range(len(ops)):
            image = tf.switch_case(order[position], [functools.partial(b, image) for b in branches])
        return image

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def _adjust(image, *, factor, blend):
    """One ColorJitter op on a [0, 255] image: blend towards `blend(image)`, or a hue shift."""
    if blend is None:
        return tf.image.adjust_hue(image / 255.0, factor) * 255.0
    degenerate = blend(image)
    return tf.clip_by_value(factor * image + (1.0 - factor) * degenerate, 0.0, 255.0)


CUB_AUGMENTATION_DEFAULTS = CubAugmentation().describe()
"""`CubAugmentation`'s fields and defaults (the caltech_birds2011 dataset options)."""


def cub_train(image, seed, *, size: int = 224, **settings):
    """CUB-200 training: `CubAugmentation(**settings)` (the ICML 2022 code's recipe)."""
    return CubAugmentation(**settings)(image, seed, size=size)
