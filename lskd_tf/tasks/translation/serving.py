"""A translation SavedModel that takes sentences and returns their translations.

`export` writes a SavedModel with two signatures:

* ``translate``: a batch of source sentences (``tf.string``, shape ``(B,)``) to their
  translations (``tf.string``, ``(B,)``). Everything runs inside the graph: the
  study's SentencePiece tokenization, EOS and truncation to the model's maximum length
  (exactly as the training data, `lskd_tf.tasks.translation.data`), beam search and
  detokenization. A server needs TensorFlow and tensorflow-text only (``import
  tensorflow_text`` registers the SentencePiece ops before ``tf.saved_model.load``).
* ``logits``: ``{"source", "target_in"}`` int32 ids to float32 logits ``(B, T, V)``,
  the model itself (teacher-forced), as `lskd_tf.tasks.Task.export` writes for images.

``model.keras`` and the vocabulary (``spm.model``) are written beside it.

Decoding is the beam search of `decoding.beam_search` (fairseq's rules: 2k candidates
a step, an EOS among the first k finishes a hypothesis, scores normalized by
length ** length_penalty, float64 scores, ties to the lower index), written with
TensorFlow ops so it runs in the graph; ``beam_size`` and ``length_penalty`` are fixed
at export (by default the run's BLEU settings). ``beam_size=1`` is greedy decoding, as
in Python (`decoding.greedy_ids` equals ``translate_ids(..., beam_size=1)``). The tests
compare the export against the Python decoders.

Example:
    >>> export(model, info.vocabulary(), "exported/mt", max_length=info.max_length)
    >>> import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
    >>> loaded = tf.saved_model.load("exported/mt")
    >>> loaded.signatures["translate"](sentences=tf.constant(["der hund läuft"]))
    {'translations': <tf.Tensor: shape=(1,), dtype=string, numpy=array([b'the dog runs'])>}
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from lskd_tf.tasks.translation.models import BOS_ID, EOS_ID, PAD_ID, Layers, decode, encode
from lskd_tf.tasks.translation.tokenizer import MODEL_FILE, Vocabulary

SIGNATURES = ("translate", "logits")


class Translator(tf.Module):
    """Strings in, strings out: tokenizer, model and beam search in one module.

    Args:
        model: a translation model (`models.get` or its ``.keras`` file).
        vocabulary: the study's `tokenizer.Vocabulary` (the model's token ids).
        max_length: the dataset's ``max_length`` (tokens per side incl. EOS/BOS):
            longer sources are truncated as the training data was.
        beam_size: hypotheses kept per sentence (1: greedy).
        length_penalty: fairseq's ``lenpen``.
    """

    def __init__(
        self,
        model: keras.Model,
        vocabulary: Vocabulary,
        max_length: int,
        *,
        beam_size: int = 4,
        length_penalty: float = 1.0,
    ):
        super().__init__(name="translator")
        if model.output_shape[-1] != vocabulary.size:
            raise ValueError(
                f"the model predicts {model.output_shape[-1]} tokens but the vocabulary "
                f"{vocabulary.path} has {vocabulary.size}: export it with the vocabulary it "
                "was trained with"
            )
        self.model = model
        self.tokenizer = vocabulary.tf_tokenizer()
        self.max_length = int(max_length)
        if int(beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        layers = Layers.of(model)
        position = layers["decoder_embed_position"]
        self._max_positions = position.max_length if position.positions == "learned" else None
        self._layers = layers

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def translate(self, sentences):
        """``{"translations": tf.string (B,)}`` of source sentences ``(B,)``."""
        source = self.source_ids(sentences)
        ids = self.beam_ids(source)
        keep = tf.logical_and(ids > EOS_ID, tf.cumsum(tf.cast(ids == EOS_ID, tf.int32), 1) == 0)
        pieces = tf.ragged.boolean_mask(ids, keep)
        return {"translations": self.tokenizer.detokenize(pieces)}

    @tf.function(
        input_signature=[
            {
                "source": tf.TensorSpec([None, None], tf.int32, name="source"),
                "target_in": tf.TensorSpec([None, None], tf.int32, name="target_in"),
            }
        ]
    )
    def logits(self, inputs):
        """``{"logits": float32 (B, T, V)}``: the model, teacher-forced on ``target_in``."""
        return {"logits": tf.cast(self.model(inputs, training=False), tf.float32)}

    def source_ids(self, sentences) -> tf.Tensor:
        """int32 (B, S): pieces, truncated to ``max_length - 1``, then EOS, padded with 0."""
        pieces = self.tokenizer(sentences)[:, : self.max_length - 1]
        eos = tf.fill([pieces.nrows(), 1], tf.constant(EOS_ID, pieces.dtype))
        return tf.cast(tf.concat([pieces, eos], axis=1).to_tensor(PAD_ID), tf.int32)

    def _limit(self, source):
        limit = 2 * tf.shape(source)[1] + 10  # as decoding._resolve_max_length
        if self._max_positions is not None:
            limit = tf.minimum(limit, self._max_positions)
        return limit

    def beam_ids(self, source) -> tf.Tensor:
        """int32 (B, L): each sentence's best finished hypothesis (no BOS/EOS), PAD after.

        `decoding.beam_search` step for step, batched: see the module docstring."""
        layers, k = self._layers, self.beam_size
        vocab = int(self.model.output_shape[-1])
        width = min(2 * k, k * vocab)
        batch = tf.shape(source)[0]
        limit = self._limit(source)
        memory, source_mask = encode(layers, source, training=False)
        memory = tf.repeat(memory, k, axis=0)  # row b * k + j: beam j of sentence b
        source_mask = tf.repeat(source_mask, k, axis=0)
        never = tf.reduce_any(tf.one_hot([PAD_ID, BOS_ID], vocab, on_value=True,
                                         off_value=False), axis=0)  # fmt: skip
        only_eos = tf.logical_not(tf.one_hot(EOS_ID, vocab, on_value=True, off_value=False))
        rank = tf.range(width)[None, :]
        penalty = tf.constant(self.length_penalty, tf.float64)
        minus_inf = tf.constant(-float("inf"), tf.float64)

        def step(t, tokens, scores, fin_scores, fin_tokens, fin_count, active):
            prefix = tf.concat(
                [tf.fill([batch * k, 1], BOS_ID), tf.reshape(tokens[:, :, :t], [batch * k, t])],
                axis=1,
            )
            logits = decode(layers, memory, source_mask, prefix, training=False)
            log_probs = tf.nn.log_softmax(tf.cast(logits[:, -1, :], tf.float32), axis=-1)
            log_probs = tf.cast(log_probs, tf.float64)
            banned = tf.logical_or(never, tf.logical_and(t == limit - 1, only_eos))
            log_probs = tf.where(banned[None, :], minus_inf, log_probs)
            candidates = tf.reshape(scores[:, :, None] + tf.reshape(log_probs, [batch, k, vocab]),
                                    [batch, k * vocab])  # fmt: skip
            values, flat = tf.math.top_k(candidates, width)  # ties: the lower index first
            beam, token = flat // vocab, flat % vocab
            is_eos = tf.equal(token, EOS_ID)
            # An EOS among the first k finishes its hypothesis while the sentence has
            # fewer than k finished ones, in rank order.
            eligible = is_eos & (rank < k) & tf.math.is_finite(values) & active[:, None]
            slot = fin_count[:, None] + tf.cumsum(tf.cast(eligible, tf.int32), axis=1) - 1
            accept = eligible & (slot < k)
            where = tf.where(accept)
            into = tf.stack([where[:, 0], tf.cast(tf.gather_nd(slot, where), tf.int64)], -1)
            normalized = values / tf.pow(tf.cast(t + 1, tf.float64), penalty)
            hypotheses = tf.gather(tokens, beam, batch_dims=1)  # (B, width, L)
            fin_scores = tf.tensor_scatter_nd_update(
                fin_scores, into, tf.gather_nd(normalized, where)
            )
            fin_tokens = tf.tensor_scatter_nd_update(
                fin_tokens, into, tf.gather_nd(hypotheses, where)
            )
            fin_count = fin_count + tf.reduce_sum(tf.cast(accept, tf.int32), axis=1)
            # The first k other extensions stay live, in rank order.
            order = tf.argsort(tf.where(is_eos, width + rank, rank), axis=1, stable=True)[:, :k]
            kept_beam = tf.gather(beam, order, batch_dims=1)
            kept_token = tf.gather(token, order, batch_dims=1)
            kept_score = tf.gather(values, order, batch_dims=1)
            grown = tf.gather(tokens, kept_beam, batch_dims=1)
            column = tf.one_hot(t, tf.shape(tokens)[2], dtype=tf.int32)
            grown = grown + kept_token[:, :, None] * column[None, None, :]
            tokens = tf.where(active[:, None, None], grown, tokens)
            scores = tf.where(active[:, None], kept_score, scores)
            active = active & (fin_count < k)
            return t + 1, tokens, scores, fin_scores, fin_tokens, fin_count, active

        state = (
            tf.constant(0),
            tf.zeros([batch, k, limit], tf.int32),
            tf.tile(tf.concat([[0.0], tf.fill([k - 1], minus_inf)], 0)[None, :], [batch, 1]),
            tf.fill([batch, k], minus_inf),
            tf.zeros([batch, k, limit], tf.int32),
            tf.zeros([batch], tf.int32),
            tf.ones([batch], tf.bool),
        )
        _, _, _, fin_scores, fin_tokens, _, _ = tf.while_loop(
            lambda t, *rest: tf.logical_and(t < limit, tf.reduce_any(rest[-1])), step, state
        )
        best = tf.math.top_k(fin_scores, 1).indices[:, 0]  # ties: the first finished
        return tf.gather(fin_tokens, best, batch_dims=1)


def export(
    model: keras.Model,
    vocabulary: Vocabulary,
    export_dir: str | os.PathLike,
    *,
    max_length: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
) -> Path:
    """Write the ``translate`` / ``logits`` SavedModel, ``model.keras`` and ``spm.model``."""
    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    translator = Translator(
        model, vocabulary, max_length, beam_size=beam_size, length_penalty=length_penalty
    )
    tf.saved_model.save(
        translator,
        str(export_dir),
        signatures={
            "translate": translator.translate,
            "logits": translator.logits,
            "serving_default": translator.translate,
        },
    )
    model.save(export_dir / "model.keras")
    if vocabulary.path is not None:
        shutil.copyfile(vocabulary.path, export_dir / MODEL_FILE)
    else:
        (export_dir / MODEL_FILE).write_bytes(vocabulary.proto)
    return export_dir
