"""Seeds: one number per run, one per epoch, and every RNG an epoch uses set from it.

A run is exactly resumable because each epoch starts from ``epoch_seed(seed, epoch)``:
the data order and augmentation of epoch k (`lskd_tf.data` takes the seed) and every
random number generator of the step (`reseed`) depend on (seed, k) only, never on
what ran before in the process. A run counted in updates (`lskd_tf.training`,
``validate_every_updates``) can also start a period inside an epoch: the step's RNGs
then start from ``period_seed(seed, epoch, batch)``, the epoch's data still from
``epoch_seed(seed, epoch)``.
"""

from __future__ import annotations

import keras

from lskd_tf import _compat


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: distinct per epoch, identical across restarts.

    >>> epoch_seed(0, 3), epoch_seed(1, 0)
    (3, 1000003)
    """
    return (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)


def period_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of the step's RNGs for a training period that starts at ``batch`` of ``epoch``.

    At an epoch's first batch it is the epoch's own seed, so a run that only adds
    ``max_updates`` reseeds exactly as an epoch-counted run; inside an epoch it is a
    number of (seed, epoch, batch), identical across restarts.

    >>> period_seed(0, 3, 0), period_seed(0, 3, 5)
    (3, 3000014)
    """
    start = epoch_seed(seed, epoch)
    if not batch:
        return start
    return (start * 1_000_003 + int(batch)) % (2**31 - 1)


def set_global_seeds(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras, as `keras.utils.set_random_seed` does.

    Without flushing TensorFlow's kernel cache (see `lskd_tf._compat.set_global_seeds`).
    """
    _compat.set_global_seeds(seed)


def reseed(model: keras.Model, seed: int) -> None:
    """Reseed every RNG an epoch uses, from one number.

    Global seeds (Python, NumPy, TensorFlow) are not enough: Keras layers such as
    Dropout own a `SeedGenerator` whose state advances with every call and is not part
    of the saved weights. Resetting those states at each epoch start makes epoch k
    identical whether or not the run was restarted.
    """
    set_global_seeds(seed)
    for index, generator in enumerate(_compat.seed_generators(model)):
        dtype = generator.state.dtype
        generator.state.assign(keras.ops.convert_to_tensor([seed, index], dtype=dtype))
