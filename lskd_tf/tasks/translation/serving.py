"""A translation SavedModel that takes sentences and returns their translations.

`export` writes a SavedModel with two signatures:

* ``translate``: a batch of source sentences (``tf.string``, shape ``(B,)``) to
  ``{"translations": tf.string (B,), "truncated": tf.bool (B,)}``. Everything runs
  inside the graph: the study's SentencePiece tokenization, EOS and truncation to the
  model's maximum length (exactly as the training data, `lskd_tf.tasks.translation.data`),
  beam search and detokenization. ``truncated`` says which sentences were longer than
  ``max_length - 1`` pieces and were cut, as training cut them. An empty sentence (no
  pieces) translates to ``""``. A server needs TensorFlow and tensorflow-text only
  (``import tensorflow_text`` registers the SentencePiece ops before
  ``tf.saved_model.load``).
* ``logits``: ``{"source", "target_in"}`` int32 ids to float32 logits ``(B, T, V)``,
  the model itself (teacher-forced), as `lskd_tf.tasks.Task.export` writes for images.

``model.keras`` and the vocabulary (``spm.model``) are written beside it.

Decoding is `decoding.search`, the code BLEU evaluation and sequence-level KD run
(fairseq's rules, key/value-cached, batched), with the same per-sentence length rule
(`decoding.length_limits`: ``max_length``, optionally fairseq's ``max_len_a/b``) and the
``beam_size`` / ``length_penalty`` given at export: `Translation.export` passes the run's
BLEU settings. A sentence's translation therefore equals the run's BLEU decoding of it,
whatever it is batched with (the tests check both).

Example:
    >>> export(model, info.vocabulary(), "exported/mt", max_length=info.max_length)
    >>> import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
    >>> loaded = tf.saved_model.load("exported/mt")
    >>> loaded.signatures["translate"](sentences=tf.constant(["der hund läuft", ""]))
    {'translations': <tf.Tensor: ... numpy=array([b'the dog runs', b''])>,
     'truncated': <tf.Tensor: ... numpy=array([False, False])>}
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from lskd_tf.tasks.translation import decoding
from lskd_tf.tasks.translation.models import EOS_ID, PAD_ID, Layers
from lskd_tf.tasks.translation.tokenizer import MODEL_FILE, Vocabulary

SIGNATURES = ("translate", "logits")


class Translator(tf.Module):
    """Strings in, strings out: tokenizer, model and beam search in one module.

    Args:
        model: a translation model (`models.get` or its ``.keras`` file).
        vocabulary: the study's `tokenizer.Vocabulary` (the model's token ids).
        max_length: the dataset's ``max_length`` (tokens per side incl. EOS/BOS):
            longer sources are truncated as the training data was, and translations
            have at most this many tokens (EOS included), as in BLEU evaluation.
        beam_size: hypotheses kept per sentence (1: greedy).
        length_penalty: fairseq's ``lenpen``.
        max_len_a, max_len_b: the optional per-sentence bound of
            `decoding.length_limits`.
    """

    def __init__(
        self,
        model: keras.Model,
        vocabulary: Vocabulary,
        max_length: int,
        *,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_len_a: float = 0.0,
        max_len_b: int | None = None,
    ):
        super().__init__(name="translator")
        if model.output_shape[-1] != vocabulary.size:
            raise ValueError(
                f"the model predicts {model.output_shape[-1]} tokens but the vocabulary "
                f"{vocabulary.path} has {vocabulary.size}: export it with the vocabulary it "
                "was trained with"
            )
        self._layers = Layers.of(model)
        decoding.check_beam(beam_size, length_penalty)
        decoding.check_length_rule(
            max_length, max_len_a, max_len_b, decoding.learned_positions(self._layers)
        )
        self.model = model
        self.tokenizer = vocabulary.tf_tokenizer()
        self.max_length = int(max_length)
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        self.max_len_a = float(max_len_a)
        self.max_len_b = None if max_len_b is None else int(max_len_b)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def translate(self, sentences):
        """``{"translations": tf.string (B,), "truncated": tf.bool (B,)}`` of sentences."""
        source, truncated = self.source_ids(sentences)
        ids, lengths = decoding.best_of(*self.search(source))
        # As `Vocabulary.decode` (the BLEU path): unknown-token ids are dropped.
        pieces = tf.ragged.boolean_mask(
            ids, tf.sequence_mask(lengths, tf.shape(ids)[1]) & (ids > EOS_ID)
        )
        return {"translations": self.tokenizer.detokenize(pieces), "truncated": truncated}

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

    def source_ids(self, sentences) -> tuple[tf.Tensor, tf.Tensor]:
        """``(int32 (B, S), bool (B,))``: pieces truncated to ``max_length - 1``, then
        EOS, padded with 0; and which sentences were truncated."""
        pieces = self.tokenizer(sentences)
        truncated = pieces.row_lengths() > self.max_length - 1
        pieces = pieces[:, : self.max_length - 1]
        eos = tf.fill([pieces.nrows(), 1], tf.constant(EOS_ID, pieces.dtype))
        source = tf.cast(tf.concat([pieces, eos], axis=1).to_tensor(PAD_ID), tf.int32)
        return source, truncated

    def search(self, source) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`decoding.search` of int32 (B, S) sources with the export's settings."""
        limits = decoding.length_limits(source, self.max_length, self.max_len_a, self.max_len_b)
        return decoding.search(
            self._layers, source, limits, beam_size=self.beam_size,
            length_penalty=self.length_penalty,
        )  # fmt: skip


def export(
    model: keras.Model,
    vocabulary: Vocabulary,
    export_dir: str | os.PathLike,
    *,
    max_length: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int | None = None,
) -> Path:
    """Write the ``translate`` / ``logits`` SavedModel, ``model.keras`` and ``spm.model``
    (arguments as `Translator`)."""
    translator = Translator(
        model, vocabulary, max_length, beam_size=beam_size, length_penalty=length_penalty,
        max_len_a=max_len_a, max_len_b=max_len_b,
    )  # fmt: skip
    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
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
