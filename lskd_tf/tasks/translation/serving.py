"""A translation SavedModel that takes sentences and returns their translations.

`export` writes a SavedModel with two signatures:

* ``translate``: a batch of source sentences (``tf.string``, shape ``(B,)``) to their
  translations (``tf.string``, ``(B,)``). Everything runs inside the graph: the
  study's SentencePiece tokenization, EOS and truncation to the model's maximum length
  (exactly as the training data, `lskd_tf.tasks.translation.data`), greedy decoding and
  detokenization. A server needs TensorFlow and tensorflow-text only (``import
  tensorflow_text`` registers the SentencePiece ops before ``tf.saved_model.load``).
* ``logits``: ``{"source", "target_in"}`` int32 ids to float32 logits ``(B, T, V)``,
  the model itself (teacher-forced), as `lskd_tf.tasks.Task.export` writes for images.

``model.keras`` and the vocabulary (``spm.model``) are written beside it.

Decoding in the export is greedy (argmax until EOS, no padding/BOS, EOS forced at the
last step): the same as `decoding.greedy_ids`, which the tests compare it against.
Beam search (BLEU in run.json) stays in Python, where fairseq's finished-hypothesis
bookkeeping is simple to check; an in-graph beam search is not written yet.

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
    """Strings in, strings out: tokenizer, model and greedy decoding in one module.

    Args:
        model: a translation model (`models.get` or its ``.keras`` file).
        vocabulary: the study's `tokenizer.Vocabulary` (the model's token ids).
        max_length: the dataset's ``max_length`` (tokens per side incl. EOS/BOS):
            longer sources are truncated as the training data was.
    """

    def __init__(self, model: keras.Model, vocabulary: Vocabulary, max_length: int):
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
        layers = Layers.of(model)
        position = layers["decoder_embed_position"]
        self._max_positions = position.max_length if position.positions == "learned" else None
        self._layers = layers

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def translate(self, sentences):
        """``{"translations": tf.string (B,)}`` of source sentences ``(B,)``."""
        source = self.source_ids(sentences)
        ids = self.greedy_ids(source)
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

    def greedy_ids(self, source) -> tf.Tensor:
        """int32 (B, L): argmax tokens after BOS, EOS-terminated, PAD after a row's EOS."""
        layers = self._layers
        memory, source_mask = encode(layers, source, training=False)
        batch = tf.shape(source)[0]
        limit = 2 * tf.shape(source)[1] + 10  # as decoding._resolve_max_length
        if self._max_positions is not None:
            limit = tf.minimum(limit, self._max_positions)
        vocab = self.model.output_shape[-1]
        never = tf.one_hot([PAD_ID, BOS_ID], vocab, on_value=True, off_value=False)
        never = tf.reduce_any(never, axis=0)
        only_eos = tf.logical_not(tf.one_hot(EOS_ID, vocab, on_value=True, off_value=False))

        def step(t, prefix, done):
            logits = decode(layers, memory, source_mask, prefix, training=False)
            log_probs = tf.nn.log_softmax(tf.cast(logits[:, -1, :], tf.float32), axis=-1)
            banned = tf.logical_or(never, tf.logical_and(t == limit - 1, only_eos))
            log_probs = tf.where(banned[None, :], -float("inf"), log_probs)
            token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            token = tf.where(done, PAD_ID, token)
            done = tf.logical_or(done, token == EOS_ID)
            return t + 1, tf.concat([prefix, token[:, None]], axis=1), done

        _, prefix, _ = tf.while_loop(
            lambda t, prefix, done: tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(done))),
            step,
            (tf.constant(0), tf.fill([batch, 1], BOS_ID), tf.zeros([batch], tf.bool)),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None, None]),
                tf.TensorShape([None]),
            ),
        )
        return prefix[:, 1:]


def export(
    model: keras.Model, vocabulary: Vocabulary, export_dir: str | os.PathLike, *, max_length: int
) -> Path:
    """Write the ``translate`` / ``logits`` SavedModel, ``model.keras`` and ``spm.model``."""
    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    translator = Translator(model, vocabulary, max_length)
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
