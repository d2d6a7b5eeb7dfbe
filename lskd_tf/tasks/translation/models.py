"""Transformer encoder-decoders for translation, registered by name.

Every model is a functional `keras.Model` (it saves to and loads from ``.keras`` and
exports as a SavedModel) with the translation contract's interface:

* inputs ``{"source": int32 (B, S), "target_in": int32 (B, T)}``; ids 0 = padding,
  1 = unknown, 2 = BOS, 3 = EOS; ``target_in`` = [BOS] + target;
* output: logits float32 (B, T, V), also under a mixed-precision policy (the output
  projection computes in float32).

Padding is handled inside attention: the encoder's self-attention and the decoder's
cross-attention ignore padded source positions, the decoder's self-attention is causal
and ignores padded target positions. Loss masks are *not* the model's business: they are
the batch's ``sample_weight`` (`lskd_tf.Distiller`).

The layers are keras_hub's ``TransformerEncoder`` / ``TransformerDecoder``
(``normalize_first`` for pre-norm) with Keras's ``ReversibleEmbedding`` (tied output
projection) and keras_hub's ``SinePositionEncoding`` / ``PositionEmbedding``. As in
fairseq: token embeddings are scaled by sqrt(d_model) and drawn from N(0, d_model^-0.5),
dropout follows the embeddings and every sub-layer, pre-norm stacks end in a final
LayerNorm, the output projection has no bias.

Dropout, two placements (``TranslationModelSpec.attention_dropout``):

* fairseq's (a number: the fairseq-derived models register 0): ``dropout`` after the
  embeddings and on every residual branch (attention outputs, feed-forward output),
  ``attention_dropout`` on the attention probabilities, nothing after the feed-forward
  activation -- fairseq's ``transformer_iwslt_de_en`` family (dropout 0.3, attention and
  ReLU dropout 0: RayeRen/multilingual-kd-pytorch fairseq/models/transformer.py,
  ``base_architecture``, ``TransformerEncoderLayer``, ``TransformerDecoderLayer``;
  runs/train.sh ``--dropout 0.3``). The blocks are `FairseqTransformerEncoder` /
  `FairseqTransformerDecoder`, keras_hub's with the attention rate set apart.
* keras_hub's (None: transformer_tiny and the quick-study models): keras_hub's blocks
  as they are, which drop the attention probabilities at ``dropout`` too.

Known difference from fairseq: keras_hub's sinusoids are interleaved (sin, cos, sin,
...) rather than concatenated (no effect on what a model can learn).

The forward pass is written once (`encode`, `decode`); `get` runs it on symbolic
inputs to build the model and `lskd_tf.tasks.translation.decoding` runs the same
functions on a built model's layers (found by name) to encode a source once and decode
step by step (`decode_step`: one token per step with the decoder blocks' key/value
cache, the same layers and weights as `decode`).

Example:
    >>> from lskd_tf.tasks.translation import models
    >>> model = models.get("transformer_tiny", vocab_size=100, max_length=32)
    >>> logits = model({"source": source_ids, "target_in": target_in})  # (B, T, 100)
    >>> models.describe("transformer_2x2_256").decoder_layers
    2
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
import keras_hub
from keras import ops

from lskd_tf import _compat
from lskd_tf.registry import Registry

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
NUM_SPECIAL = 4
SOURCE, TARGET_IN = "source", "target_in"
POSITIONS = ("sinusoidal", "learned")
LAYER_NORM_EPSILON = 1e-5  # PyTorch's (fairseq's) LayerNorm epsilon


@dataclasses.dataclass(frozen=True, kw_only=True)
class TranslationModelSpec:
    """A registered Transformer configuration; every field but ``name``/``reference``
    can be overridden in `get`.

    Attributes:
        name: registry name.
        encoder_layers / decoder_layers: number of Transformer blocks.
        d_model: embedding and hidden size.
        ffn_dim: inner size of each feed-forward block.
        num_heads: attention heads (must divide ``d_model``).
        dropout: rate after the embeddings and on every residual branch (fairseq
            IWSLT: 0.3).
        attention_dropout: rate on the attention probabilities, fairseq's placement
            (fairseq's default 0); None: keras_hub's placement, ``dropout`` there too.
        normalize_first: pre-norm (True) or post-norm (False, fairseq's default).
        share_embeddings: one embedding matrix for source and target (joint vocabulary;
            fairseq ``--share-all-embeddings``).
        tie_output: the output projection is the target embedding's transpose (fairseq
            ``--share-decoder-input-output-embed``).
        positions: ``"sinusoidal"`` (fixed) or ``"learned"`` (``max_length`` rows).
        activation: feed-forward activation.
        reference: what the configuration reproduces.
    """

    name: str
    encoder_layers: int
    decoder_layers: int
    d_model: int
    ffn_dim: int
    num_heads: int
    dropout: float = 0.3
    attention_dropout: float | None = None
    normalize_first: bool = False
    share_embeddings: bool = True
    tie_output: bool = True
    positions: str = "sinusoidal"
    activation: str = "relu"
    reference: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OVERRIDABLE = tuple(
    f.name for f in dataclasses.fields(TranslationModelSpec) if f.name not in ("name", "reference")
)
MULTILINGUAL_KD = "RayeRen/multilingual-kd-pytorch (fairseq fork) default transformer"
MODELS: Registry[TranslationModelSpec] = Registry("translation model")
"""The translation models by name; `register` adds one."""


def register(spec: TranslationModelSpec) -> TranslationModelSpec:
    """Make ``spec`` selectable by its name (`get`, ``--teacher_models``)."""
    return MODELS.register(spec.name, spec)


register(TranslationModelSpec(
    name="transformer_iwslt_de_en", encoder_layers=6, decoder_layers=6, d_model=512,
    ffn_dim=1024, num_heads=4, attention_dropout=0.0,
    reference="fairseq transformer.py transformer_iwslt_de_en (6+6, 512, FFN 1024, 4 heads)",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_2x2_256", encoder_layers=2, decoder_layers=2, d_model=256,
    ffn_dim=1024, num_heads=4, attention_dropout=0.0,
    reference=f"{MULTILINGUAL_KD} (2+2, 256, FFN 1024, 4 heads)",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_2x2_128", encoder_layers=2, decoder_layers=2, d_model=128,
    ffn_dim=512, num_heads=4, attention_dropout=0.0,
    reference="student: transformer_2x2_256 at half width",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_1x1_128", encoder_layers=1, decoder_layers=1, d_model=128,
    ffn_dim=512, num_heads=4, attention_dropout=0.0,
    reference="student: 1+1 layers, half width",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_tiny", encoder_layers=1, decoder_layers=1, d_model=64,
    ffn_dim=128, num_heads=2, reference="tests and quick studies",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_quick", encoder_layers=1, decoder_layers=1, d_model=64,
    ffn_dim=128, num_heads=2, dropout=0.1, normalize_first=True,
    reference="quick study teacher: transformer_tiny pre-norm, dropout 0.1 (measured: 86% "
    "token accuracy, greedy BLEU 60 on the embedded corpus after 6 epochs)",
))  # fmt: skip
register(TranslationModelSpec(
    name="transformer_quick_student", encoder_layers=1, decoder_layers=1, d_model=32,
    ffn_dim=64, num_heads=2, dropout=0.1, normalize_first=True,
    reference="quick study student: transformer_quick at half width",
))  # fmt: skip


def available() -> list[str]:
    """Sorted names accepted by `get` and `describe`."""
    return MODELS.available()


def describe(name: str) -> TranslationModelSpec:
    """The `TranslationModelSpec` registered as ``name`` (case-insensitive, "-" = "_")."""
    return MODELS.get(name)


def _check(spec: TranslationModelSpec, vocab_size, max_length) -> None:
    def positive_int(value) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1

    if not positive_int(vocab_size) or vocab_size < NUM_SPECIAL + 1:
        raise ValueError(
            f"vocab_size must be an integer >= {NUM_SPECIAL + 1} (ids 0-3 are pad/unk/BOS/EOS), "
            f"got {vocab_size!r}"
        )
    if not positive_int(max_length) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    for field in ("encoder_layers", "decoder_layers", "d_model", "ffn_dim", "num_heads"):
        if not positive_int(getattr(spec, field)):
            raise ValueError(f"{field} must be a positive integer, got {getattr(spec, field)!r}")
    if spec.d_model % spec.num_heads:
        raise ValueError(
            f"num_heads ({spec.num_heads}) must divide d_model ({spec.d_model}); change one of them"
        )
    if spec.positions == "sinusoidal" and spec.d_model % 2:
        raise ValueError(f"sinusoidal positions need an even d_model, got {spec.d_model}")
    if not 0.0 <= float(spec.dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {spec.dropout!r}")
    if spec.attention_dropout is not None and not 0.0 <= float(spec.attention_dropout) < 1.0:
        raise ValueError(
            f"attention_dropout must be in [0, 1) or None (keras_hub's: = dropout), got "
            f"{spec.attention_dropout!r}"
        )
    if spec.positions not in POSITIONS:
        raise ValueError(
            f"unknown positions {spec.positions!r}; choose one of: {', '.join(POSITIONS)}"
        )


# ----------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="lskd_tf.translation")
class PaddingMask(keras.layers.Layer):
    """``ids != 0`` as a boolean (B, L) mask (True on real tokens)."""

    def call(self, ids):
        return ops.not_equal(ids, PAD_ID)

    def compute_output_spec(self, ids):
        return keras.KerasTensor(ids.shape, dtype="bool")


@keras.saving.register_keras_serializable(package="lskd_tf.translation")
class ScaleAndPosition(keras.layers.Layer):
    """``embeddings * sqrt(d_model) + positions`` (fairseq's embedding scale).

    Args:
        d_model: the embedding size.
        positions: ``"sinusoidal"`` (keras_hub ``SinePositionEncoding``) or
            ``"learned"`` (keras_hub ``PositionEmbedding`` with ``max_length`` rows).
        max_length: the longest sequence a learned table covers.
    """

    def __init__(self, d_model: int, positions: str, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.d_model = int(d_model)
        self.positions = positions
        self.max_length = int(max_length)
        self.scale = math.sqrt(self.d_model)
        if positions == "learned":
            self.position_layer = keras_hub.layers.PositionEmbedding(
                sequence_length=self.max_length,
                initializer=keras.initializers.RandomNormal(stddev=self.d_model**-0.5),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self.position_layer = keras_hub.layers.SinePositionEncoding(
                dtype=self.dtype_policy, name="position_encoding"
            )

    def build(self, input_shape):
        self.position_layer.build(input_shape)
        self.built = True

    def call(self, embeddings, start_index=0):
        """``start_index``: the position of the first row (cached decoding feeds one
        token at a time)."""
        embeddings = embeddings * ops.cast(self.scale, embeddings.dtype)
        positions = self.position_layer(embeddings, start_index=start_index)
        return embeddings + ops.cast(positions, embeddings.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, positions=self.positions, max_length=self.max_length)
        return config


class _AttentionDropoutApart:
    """Mixin for a keras_hub Transformer block: ``dropout`` stays on the residual
    branches, ``attention_dropout`` is the rate on the attention probabilities."""

    def __init__(self, *, attention_dropout: float = 0.0, **kwargs):
        # Set first: keras_hub's __init__ builds the block when its config has the shapes.
        self.attention_dropout = float(attention_dropout)
        super().__init__(**kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(attention_dropout=self.attention_dropout)
        return config


@keras.saving.register_keras_serializable(package="lskd_tf.translation")
class FairseqTransformerEncoder(_AttentionDropoutApart, keras_hub.layers.TransformerEncoder):
    """keras_hub's ``TransformerEncoder`` with fairseq's dropout placement.

    fairseq's ``TransformerEncoderLayer`` (RayeRen/multilingual-kd-pytorch
    fairseq/models/transformer.py) drops ``args.dropout`` of the self-attention output
    and of the feed-forward output before each residual add, ``args.attention_dropout``
    of the attention probabilities and ``args.relu_dropout`` after the ReLU (both 0 in
    ``base_architecture``). keras_hub's block has the two residual dropouts and no
    activation dropout, but drops its ``dropout`` of the attention probabilities too;
    here they take ``attention_dropout`` instead.

    Args:
        attention_dropout: rate on the attention probabilities (fairseq's default 0).
        **kwargs: keras_hub ``TransformerEncoder`` arguments (``dropout``: the residual
            rate).
    """

    def build(self, inputs_shape):  # Keras matches build's argument names to call's
        super().build(inputs_shape)
        _compat.set_attention_dropout(self, self.attention_dropout)


@keras.saving.register_keras_serializable(package="lskd_tf.translation")
class FairseqTransformerDecoder(_AttentionDropoutApart, keras_hub.layers.TransformerDecoder):
    """keras_hub's ``TransformerDecoder`` with fairseq's dropout placement: ``dropout`` on
    the self-attention, cross-attention and feed-forward outputs before their residual
    adds, ``attention_dropout`` on both attentions' probabilities (fairseq's
    ``TransformerDecoderLayer``; see `FairseqTransformerEncoder`)."""

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        super().build(decoder_sequence_shape, encoder_sequence_shape)
        _compat.set_attention_dropout(self, self.attention_dropout)


# ----------------------------------------------------------------------------- forward pass
# Layer names: the decoding module finds the layers of a built (or loaded) model by them.

SOURCE_MASK, TARGET_MASK = "source_mask", "target_mask"
SOURCE_EMBEDDING, TARGET_EMBEDDING, SHARED_EMBEDDING = (
    "source_embedding",
    "target_embedding",
    "shared_embedding",
)
OUTPUT_PROJECTION, LOGITS = "output_projection", "logits"


class Layers:
    """The named layers of a Transformer, gathered from a model or created for one."""

    def __init__(self, by_name: dict[str, keras.layers.Layer]):
        self.by_name = by_name

    @classmethod
    def of(cls, model: keras.Model) -> Layers:
        """The layers of a model built by `get` (also after `keras.models.load_model`)."""
        names = {layer.name: layer for layer in model.layers}
        if LOGITS not in names or "encoder_embed_position" not in names:
            raise ValueError(
                f"model {model.name!r} is not a translation Transformer built by "
                "lskd_tf.tasks.translation.models.get"
            )
        return cls(names)

    def __getitem__(self, name: str) -> keras.layers.Layer:
        return self.by_name[name]

    def get(self, name: str):
        return self.by_name.get(name)

    def stack(self, prefix: str) -> list[keras.layers.Layer]:
        count = sum(1 for name in self.by_name if name.startswith(prefix + "_layer_"))
        return [self.by_name[f"{prefix}_layer_{i}"] for i in range(count)]

    def embedding(self, side: str) -> keras.layers.Layer:
        return self.get(SHARED_EMBEDDING) or self[f"{side}_embedding"]


def encode(layers: Layers, source, training=None):
    """``(memory (B, S, d), source_mask bool (B, S))`` of source ids (B, S)."""
    source_mask = layers[SOURCE_MASK](source)
    x = layers.embedding("source")(source)
    x = layers["encoder_embed_position"](x)
    x = layers["encoder_embed_dropout"](x, training=training)
    for block in layers.stack("encoder"):
        x = block(x, padding_mask=source_mask, training=training)
    final_norm = layers.get("encoder_final_norm")
    if final_norm is not None:
        x = final_norm(x)
    return x, source_mask


def _embed_target(layers: Layers, target_in, start_index=0, training=None):
    x = layers.embedding("target")(target_in)
    x = layers["decoder_embed_position"](x, start_index=start_index)
    return layers["decoder_embed_dropout"](x, training=training)


def _project(layers: Layers, x):
    """Final norm (pre-norm) and output projection: float32 logits."""
    final_norm = layers.get("decoder_final_norm")
    if final_norm is not None:
        x = final_norm(x)
    projection = layers.get(OUTPUT_PROJECTION)
    if projection is None:  # tied: the target embedding, reversed, in float32
        x = layers.embedding("target")(x, reverse=True)
    else:
        x = projection(x)
    return layers[LOGITS](x)


def decode(layers: Layers, memory, source_mask, target_in, training=None):
    """Logits float32 (B, T, V) of ``target_in`` (B, T) given the encoder's output."""
    target_mask = layers[TARGET_MASK](target_in)
    x = _embed_target(layers, target_in, training=training)
    for block in layers.stack("decoder"):
        x = block(
            x,
            memory,
            decoder_padding_mask=target_mask,
            encoder_padding_mask=source_mask,
            use_causal_mask=True,
            training=training,
        )
    return _project(layers, x)


def empty_cache(layers: Layers, rows, length) -> list:
    """The key/value cache of `decode_step` for ``rows`` sequences of up to ``length``
    tokens: per decoder block, a zero self-attention cache (rows, 2, length, heads,
    d_model / heads) in the block's compute dtype, and ``None`` for the cross-attention
    cache, which the first `decode_step` fills from the encoder's output."""
    d_model = layers.embedding("target").output_dim
    caches = []
    for block in layers.stack("decoder"):
        shape = [rows, 2, length, block.num_heads, d_model // block.num_heads]
        caches.append((ops.zeros(shape, dtype=block.compute_dtype), None))
    return caches


def decode_step(layers: Layers, memory, source_mask, tokens, index, cache: list):
    """``(logits float32 (B, V), cache)`` of the next token after position ``index``.

    Incremental decoding with keras_hub's ``TransformerDecoder`` key/value cache: the
    same layers and weights as `decode` (nothing is created, so checkpoints load
    unchanged); ``tokens`` (B,) are the ids at position ``index`` (BOS at 0), ``cache``
    comes from `empty_cache` (or the previous step). Position ``index`` attends to the
    cached positions ``0..index`` only (the causal mask), so the logits equal
    ``decode(...)[:, index]`` of the whole prefix, at the cost of one position per step.
    Decoded prefixes hold no padding (decoding never generates it), so no target mask.
    """
    x = _embed_target(layers, tokens[:, None], start_index=index, training=False)
    updated = []
    for block, (self_cache, cross_cache) in zip(layers.stack("decoder"), cache):
        fill_cross = cross_cache is None
        if fill_cross:  # first step: project the encoder's output once
            shape = ops.shape(self_cache)
            cross_cache = ops.zeros(
                (shape[0], 2, ops.shape(memory)[1], shape[3], shape[4]), dtype=self_cache.dtype
            )
        x, self_cache, cross_cache = block(
            x,
            memory,
            encoder_padding_mask=source_mask,
            self_attention_cache=self_cache,
            self_attention_cache_update_index=index,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=0 if fill_cross else None,
            use_causal_mask=True,
            training=False,
        )
        updated.append((self_cache, cross_cache))
    return _project(layers, x)[:, 0, :], updated


def _create_layers(spec: TranslationModelSpec, vocab_size: int, max_length: int) -> Layers:
    d = spec.d_model
    by_name: dict[str, keras.layers.Layer] = {
        SOURCE_MASK: PaddingMask(name=SOURCE_MASK),
        TARGET_MASK: PaddingMask(name=TARGET_MASK),
    }

    def embedding(name: str) -> keras.layers.Layer:
        return keras.layers.ReversibleEmbedding(
            vocab_size,
            d,
            tie_weights=True,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d**-0.5),
            reverse_dtype="float32",
            name=name,
        )

    if spec.share_embeddings:
        by_name[SHARED_EMBEDDING] = embedding(SHARED_EMBEDDING)
    else:
        by_name[SOURCE_EMBEDDING] = embedding(SOURCE_EMBEDDING)
        by_name[TARGET_EMBEDDING] = embedding(TARGET_EMBEDDING)
    if not spec.tie_output:
        by_name[OUTPUT_PROJECTION] = keras.layers.Dense(
            vocab_size, use_bias=False, dtype="float32", name=OUTPUT_PROJECTION
        )
    # Identity in float32: the model's output dtype whatever the policy.
    by_name[LOGITS] = keras.layers.Activation("linear", dtype="float32", name=LOGITS)
    block_options = dict(
        intermediate_dim=spec.ffn_dim,
        num_heads=spec.num_heads,
        dropout=spec.dropout,
        activation=spec.activation,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        normalize_first=spec.normalize_first,
    )
    blocks = (keras_hub.layers.TransformerEncoder, keras_hub.layers.TransformerDecoder)
    if spec.attention_dropout is not None:  # fairseq's placement (the module docstring)
        blocks = (FairseqTransformerEncoder, FairseqTransformerDecoder)
        block_options["attention_dropout"] = spec.attention_dropout
    for side, count, block in (
        ("encoder", spec.encoder_layers, blocks[0]),
        ("decoder", spec.decoder_layers, blocks[1]),
    ):
        by_name[f"{side}_embed_position"] = ScaleAndPosition(
            d, spec.positions, max_length, name=f"{side}_embed_position"
        )
        by_name[f"{side}_embed_dropout"] = keras.layers.Dropout(
            spec.dropout, name=f"{side}_embed_dropout"
        )
        for i in range(count):
            by_name[f"{side}_layer_{i}"] = block(**block_options, name=f"{side}_layer_{i}")
        if spec.normalize_first:
            by_name[f"{side}_final_norm"] = keras.layers.LayerNormalization(
                epsilon=LAYER_NORM_EPSILON, name=f"{side}_final_norm"
            )
    return Layers(by_name)


def get(name: str, vocab_size: int, max_length: int, **overrides) -> keras.Model:
    """A new, built Transformer ``name`` over a vocabulary of ``vocab_size`` ids.

    Args:
        name: one of `available()` (case-insensitive; "-" may replace "_").
        vocab_size: size of the (joint) vocabulary incl. ids 0-3 (pad, unk, BOS, EOS);
            also the number of logits.
        max_length: the longest source / target sequence in tokens (learned positions
            have this many rows; sinusoidal ones accept any length).
        **overrides: any `TranslationModelSpec` field but name/reference, e.g.
            ``dropout=0.1``, ``normalize_first=True``, ``share_embeddings=False``,
            ``tie_output=False``, ``positions="learned"``, ``decoder_layers=3``.

    Returns:
        A functional `keras.Model` named ``name``: ``{"source", "target_in"}`` int32 ->
        logits float32 (B, T, vocab_size).

    Raises:
        ValueError: unknown name or override, vocab_size < 5, bad sizes.

    Example:
        >>> model = get("transformer_2x2_256", vocab_size=10_000, max_length=256,
        ...             normalize_first=True)
    """
    spec = describe(name)
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {spec.name}; accepted: "
            f"{', '.join(OVERRIDABLE)}"
        )
    spec = dataclasses.replace(spec, **overrides)
    _check(spec, vocab_size, max_length)
    layers = _create_layers(spec, int(vocab_size), int(max_length))
    source = keras.Input(shape=(None,), dtype="int32", name=SOURCE)
    target_in = keras.Input(shape=(None,), dtype="int32", name=TARGET_IN)
    memory, source_mask = encode(layers, source)
    logits = decode(layers, memory, source_mask, target_in)
    return keras.Model({SOURCE: source, TARGET_IN: target_in}, logits, name=spec.name)


def count_params(model: keras.Model) -> dict[str, int]:
    """``{"total", "embeddings", "non_embedding"}`` trainable parameter counts.

    ``embeddings`` counts token embedding matrices and an untied output projection
    (the vocabulary-dependent part), so models are comparable across vocabularies.
    """
    total = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    layers = Layers.of(model)
    vocabulary = 0
    for name in (SHARED_EMBEDDING, SOURCE_EMBEDDING, TARGET_EMBEDDING, OUTPUT_PROJECTION):
        layer = layers.get(name)
        if layer is not None:
            vocabulary += sum(int(math.prod(w.shape)) for w in layer.trainable_weights)
    return {"total": total, "embeddings": vocabulary, "non_embedding": total - vocabulary}
