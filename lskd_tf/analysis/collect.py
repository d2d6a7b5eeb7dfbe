"""Run a Keras model over data and collect what the analysis measures need.

This is the only TensorFlow-dependent module of `lskd_tf.analysis` (TensorFlow and
Keras are imported inside the functions). Every lskd_tf model is a functional
`keras.Model` whose final `keras.layers.Dense` is named "classifier": its input is the
penultimate feature vector, its output the logits, its kernel and bias the class
templates; `lskd_tf.models.features_and_logits` / `templates` read them (imported here
lazily, so the NumPy measures never import TensorFlow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def features_and_logits(model):
    """A keras.Model mapping images to [penultimate features, logits] (`lskd_tf.models`)."""
    from lskd_tf.models import features_and_logits as model_features_and_logits

    return model_features_and_logits(model)


def templates(model) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's (kernel (D, K), bias (K,)) as NumPy (`lskd_tf.models.templates`)."""
    from lskd_tf.models import templates as model_templates

    return model_templates(model)


def _split_element(element) -> tuple[Any, Any, Any]:
    """(image, label[, index]) tuples or {"image", "label"[, "index"]} dicts."""
    if isinstance(element, dict):
        if "image" not in element or "label" not in element:
            raise ValueError(
                f"Dataset dict elements need keys 'image' and 'label'; got {sorted(element)}."
            )
        return element["image"], element["label"], element.get("index")
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return element[0], element[1], element[2] if len(element) == 3 else None
    raise ValueError(
        "`dataset` must yield (image, label) or (image, label, index) batches; got an element "
        f"of type {type(element).__name__}."
    )


def _label_ids(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels[:, 0].astype(np.int64)
    if labels.ndim == 2:  # one-hot or smoothed targets
        return labels.argmax(axis=1).astype(np.int64)
    return labels.astype(np.int64)


def collect_outputs(model, dataset, *, max_batches: int | None = None) -> dict[str, np.ndarray]:
    """Features, logits and labels of `model` on batched `dataset`, one pass, inference mode.

    Args:
        model: functional keras.Model with a final Dense named "classifier".
        dataset: a `tf.data.Dataset` (or any iterable) of batched (image, label) or
            (image, label, index) elements; labels may be ids (B,) / (B, 1) or one-hot (B, K).
        max_batches: stop after this many batches (None: the whole dataset).

    Returns:
        dict with `features` (N, D) float32, `logits` (N, K) float32, `labels` (N,) int64,
        `index` (N,) when the dataset yields it, and the templates `kernel` (D, K), `bias`
        (K,) so `lskd_tf.analysis.report.analyze` can draw projections.
    """
    import tensorflow as tf

    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"`max_batches` must be a positive integer or None; got {max_batches!r}.")
    extractor = features_and_logits(model)

    @tf.function(reduce_retracing=True)
    def run(images):
        return extractor(images, training=False)

    features, logits, labels, indices = [], [], [], []
    for batch_number, element in enumerate(dataset):
        if max_batches is not None and batch_number >= max_batches:
            break
        images, batch_labels, batch_index = _split_element(element)
        batch_features, batch_logits = run(images)
        features.append(np.asarray(batch_features, dtype=np.float32))
        logits.append(np.asarray(batch_logits, dtype=np.float32))
        labels.append(_label_ids(batch_labels))
        if batch_index is not None:
            indices.append(np.asarray(batch_index).reshape(-1))
    if not features:
        raise ValueError("`dataset` yielded no batches.")
    kernel, bias = templates(model)
    outputs = {
        "features": np.concatenate(features).reshape(sum(len(f) for f in features), -1),
        "logits": np.concatenate(logits),
        "labels": np.concatenate(labels),
        "kernel": kernel,
        "bias": bias,
    }
    if indices:
        outputs["index"] = np.concatenate(indices)
    return outputs


def collect_augmented_logits(
    model,
    images,
    labels,
    augment_fn: Callable,
    num_augmentations: int,
    *,
    batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """Logits of each image under `num_augmentations` random augmentations (Müller's MI).

    Args:
        model: functional keras.Model with a final Dense named "classifier".
        images: (N, ...) images, e.g. 300 examples of each of two classes.
        labels: (N,) their classes (returned unchanged, for bookkeeping).
        augment_fn: image batch -> image batch, random (e.g. the training augmentation).
        num_augmentations: L, augmentations per image (>= 2).
        batch_size: images per forward pass.

    Returns:
        dict with `logits` (N, L, K) float32 and `labels` (N,).
    """
    import tensorflow as tf

    if not isinstance(num_augmentations, int) or num_augmentations < 2:
        raise ValueError(f"`num_augmentations` must be an integer >= 2; got {num_augmentations!r}.")
    if not callable(augment_fn):
        raise ValueError("`augment_fn` must be a callable mapping an image batch to a batch.")
    images = tf.convert_to_tensor(images)
    num_images = int(images.shape[0])
    labels = _label_ids(np.asarray(labels))
    if labels.shape != (num_images,):
        raise ValueError(f"`labels` must have shape ({num_images},); got {labels.shape}.")
    extractor = features_and_logits(model)

    @tf.function(reduce_retracing=True)
    def run(batch):
        return extractor(batch, training=False)[1]

    rounds = []
    for _ in range(num_augmentations):
        batches = []
        for start in range(0, num_images, batch_size):
            augmented = augment_fn(images[start : start + batch_size])
            batches.append(np.asarray(run(augmented), dtype=np.float32))
        rounds.append(np.concatenate(batches))
    return {"logits": np.stack(rounds, axis=1), "labels": labels}
