"""Private Keras/TensorFlow API: only in lskd_tf/_compat.py, and still the path taken."""

import re
from pathlib import Path

import keras
import numpy as np

from lskd_tf import _compat, seeding

PACKAGE = Path(__file__).resolve().parents[1] / "lskd_tf"
PRIVATE = re.compile(r"keras\.src|tensorflow\.python|\._symbolic_build|\._flatten_layers|"
                     r"_seed_generators|_num_workers|\._dropout\b")  # fmt: skip


def test_private_api_is_used_only_in_the_compat_module():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line.split("#")[0]) and not line.lstrip().startswith(('"', "`", "("))
    ]
    assert offenders == []


def test_seeding_takes_the_fast_private_path_and_matches_keras():
    assert _compat.set_global_seeds(7) is True  # the pinned Keras/TF still have it
    fast = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy()
    keras.utils.set_random_seed(7)
    public = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy()
    np.testing.assert_array_equal(fast, public)
    _compat.set_global_seeds(7)
    assert np.random.rand() == np.random.RandomState(7).rand()


def test_reseed_resets_every_seed_generator():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dropout(0.5)(keras.layers.Dropout(0.5)(inputs))
    model = keras.Model(inputs, outputs)
    generators = _compat.seed_generators(model)
    assert len(generators) == 2
    ones = np.ones((2, 4), "float32")
    seeding.reseed(model, 3)
    first = model(ones, training=True).numpy()
    model(ones, training=True)  # advances the generators' states
    seeding.reseed(model, 3)
    np.testing.assert_array_equal(model(ones, training=True).numpy(), first)


def test_attention_dropout_takes_the_private_path_and_keeps_other_dropouts():
    import keras_hub

    block = keras_hub.layers.TransformerDecoder(intermediate_dim=8, num_heads=2, dropout=0.4)
    block.build((None, 5, 8), (None, 3, 8))  # self- and cross-attention
    assert _compat.set_attention_dropout(block, 0.0) is True  # the pinned Keras has _dropout
    attentions = [layer for layer in _compat.flatten_layers(block, include_self=False)
                  if isinstance(layer, keras.layers.MultiHeadAttention)]  # fmt: skip
    assert [attention.dropout for attention in attentions] == [0.0, 0.0]
    inside = {id(layer) for attention in attentions for layer in _compat.flatten_layers(attention)}
    residual = {
        layer.name: layer.rate
        for layer in _compat.flatten_layers(block)
        if isinstance(layer, keras.layers.Dropout) and id(layer) not in inside
    }
    assert residual == {"self_attention_dropout": 0.4, "cross_attention_dropout": 0.4,
                        "feedforward_dropout": 0.4}  # fmt: skip
