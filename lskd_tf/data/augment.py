"""Per-example preprocessing: the papers' training augmentations and eval transforms.

Training functions take `(image, seed)` where `seed` is a stateless-RNG seed of shape
(2,) int64, drawn per example from a seeded `tf.data.Dataset.random` stream that is
re-randomized every epoch; every random op here is a `stateless_*` op, so augmentation
differs between epochs yet a run is reproducible from its seed, even with parallel
`map`. All functions return float32 images in [0, 255] at the target size;
normalization happens afterwards (`DatasetInfo.normalize`).
"""

from __future__ import annotations

import math

import tensorflow as tf

EVAL_RESIZE_RATIO = 256 / 224  # resize the short side to 256, center crop 224


def _split(seed, n: int):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


# ----------------------------------------------------------------------------- CIFAR


def pad_crop_flip(image, seed, *, padding: int = 4):
    """CIFAR recipe: zero-pad `padding` px, random crop back to size, horizontal flip.

    Same as torchvision `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`.
    """
    crop_seed, flip_seed = _split(seed, 2)
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.cast(image, tf.float32)


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
