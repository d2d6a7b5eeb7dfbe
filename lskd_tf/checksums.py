"""SHA-256 of a file and of a model's weights: how lskd_tf tells two teachers apart."""

from __future__ import annotations

import hashlib
import os

import numpy as np


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (e.g. a teacher checkpoint named by path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model) -> str:
    """SHA-256 of all of a model's weights (BatchNorm statistics included)."""
    import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()
