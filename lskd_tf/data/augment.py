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


def jpeg_random_resized_crop_flip(jpeg_bytes, seed, *, size: int = 224, area_range=(0.08, 1.0)):
    """ImageNet training: Inception-style random-resized crop decoded straight from JPEG.

    Samples the crop window from the JPEG header (`extract_jpeg_shape` +
    `stateless_sample_distorted_bounding_box`, aspect ratio 3/4..4/3, area 8%..100%),
    decodes only that window (`decode_and_crop_jpeg`), resizes to `size` (bilinear)
    and flips: the tensorflow/models ResNet recipe, equivalent to torchvision's
    `RandomResizedCrop(224)` + `RandomHorizontalFlip()`.
    """
    box_seed, flip_seed = _split(seed, 2)
    shape = tf.image.extract_jpeg_shape(jpeg_bytes)
    offset_y, offset_x, height, width = _distorted_box(shape, box_seed, area_range)
    window = tf.stack([offset_y, offset_x, height, width])
    image = tf.image.decode_and_crop_jpeg(jpeg_bytes, window, channels=3)
    image = tf.image.resize(image, [size, size], method="bilinear")
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def resize_center_crop(image, *, size: int = 224, resize_ratio: float = EVAL_RESIZE_RATIO):
    """ImageNet eval: resize the shorter side to `size * resize_ratio` (256), center crop."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = round(size * resize_ratio) / tf.minimum(height, width)
    new_hw = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    new_hw = tf.maximum(new_hw, size)
    image = tf.image.resize(image, new_hw, method="bilinear")
    top = (new_hw[0] - size) // 2
    left = (new_hw[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def decode_image(image_bytes):
    """Decode JPEG/PNG/BMP/GIF bytes to uint8 (H, W, 3)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def jpeg_resize_center_crop(image_bytes, *, size: int = 224):
    """ImageNet/CUB eval from encoded bytes: decode, resize 256, center crop 224."""
    return resize_center_crop(decode_image(image_bytes), size=size)


def random_resized_crop_flip(image, seed, *, size: int = 224, area_range=(0.08, 1.0)):
    """Random-resized crop + flip on a decoded image (any format)."""
    box_seed, flip_seed = _split(seed, 2)
    offset_y, offset_x, height, width = _distorted_box(tf.shape(image), box_seed, area_range)
    image = tf.image.crop_to_bounding_box(image, offset_y, offset_x, height, width)
    image = tf.image.resize(image, [size, size], method="bilinear")
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


def cub_train(
    image,
    seed,
    *,
    size: int = 224,
    area_range=(0.2, 1.0),
    max_rotation_degrees: float = 15.0,
    grayscale_probability: float = 0.1,
    jitter: float = 0.4,
):
    """CUB-200 training (ICML 2022 code's recipe, torchvision names in brackets).

    Random-resized crop with scale (0.2, 1) [RandomResizedCrop(224, scale=(0.2, 1))],
    horizontal flip, rotation by U(-15, 15) degrees [RandomRotation(15)], grayscale
    with probability 0.1 [RandomGrayscale], colour jitter of brightness, contrast and
    saturation by factors in [1 - 0.4, 1 + 0.4] [ColorJitter(0.4, 0.4, 0.4)].
    """
    crop_seed, rot_seed, gray_seed, b_seed, c_seed, s_seed = _split(seed, 6)
    image = random_resized_crop_flip(image, crop_seed, size=size, area_range=area_range)
    max_angle = math.radians(max_rotation_degrees)
    angle = tf.random.stateless_uniform([], rot_seed, -max_angle, max_angle)
    image = rotate(image, angle)
    image = image / 255.0
    lo, hi = 1.0 - jitter, 1.0 + jitter
    brightness = tf.random.stateless_uniform([], b_seed, lo, hi)
    image = image * brightness
    image = tf.image.stateless_random_contrast(image, lo, hi, seed=c_seed)
    image = tf.image.stateless_random_saturation(tf.clip_by_value(image, 0, 1), lo, hi, s_seed)
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    use_gray = tf.random.stateless_uniform([], gray_seed) < grayscale_probability
    image = tf.where(use_gray, gray, image)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0
