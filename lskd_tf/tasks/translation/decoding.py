"""Greedy and beam-search decoding of a translation Transformer (`models.get`).

`translate_ids` (the best hypothesis per source) is what BLEU evaluation and
sequence-level KD call; `beam_search` returns every finished hypothesis and its score;
`greedy_ids` is the argmax decoder.

Beam search follows fairseq's ``SequenceGenerator``:

* a hypothesis's score is the sum of its tokens' log-probabilities (EOS included),
  normalized at the end by ``length ** length_penalty`` where length counts the EOS
  (fairseq ``--lenpen``, default 1: the mean log-probability per token);
* each step takes the ``2 * beam_size`` best extensions of the live hypotheses; an EOS
  among the first ``beam_size`` of them finishes that hypothesis, the first
  ``beam_size`` other extensions stay live; a source is done once it has
  ``beam_size`` finished hypotheses; at the last allowed step only EOS may follow;
* padding and BOS are never generated; the best finished hypothesis (normalized score)
  is returned, without BOS/EOS.

With ``beam_size=1`` this is greedy decoding (`greedy_ids`; the tests check both agree),
and with a beam wide enough to keep every prefix it is exact search (the tests compare
it against enumerating every sequence of a tiny vocabulary).

Cost: the encoder runs once per batch; each step re-runs the full decoder on the growing
prefix of every live hypothesis (no key/value cache), in one ``tf.function`` traced once
per model (shapes are relaxed after the first traces), so a step costs O(prefix length).
Incremental key/value caching (keras_hub's ``TransformerDecoder`` supports it) is a
later optimization. Sources that are done drop out of later steps. The per-step beam
bookkeeping runs in NumPy on the host.

Example:
    >>> from lskd_tf.tasks.translation import decoding, models
    >>> model = models.get("transformer_tiny", vocab_size=100, max_length=32)
    >>> decoding.translate_ids(model, [[5, 6, 3, 0]], beam_size=4, max_length=32)
    [[17, 17, 9, ...]]
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from lskd_tf.tasks.translation.models import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Layers,
    decode,
    encode,
)

_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Compiled:
    """The compiled encoder and next-token step of one model."""

    def __init__(self, model: keras.Model):
        layers = Layers.of(model)
        position = layers["decoder_embed_position"]
        self.max_positions = position.max_length if position.positions == "learned" else None

        @tf.function(reduce_retracing=True)
        def encoder(source):
            return encode(layers, source, training=False)

        @tf.function(reduce_retracing=True)
        def next_log_probs(memory, source_mask, prefix):
            logits = decode(layers, memory, source_mask, prefix, training=False)
            return tf.nn.log_softmax(tf.cast(logits[:, -1, :], tf.float32), axis=-1)

        self.encoder = encoder
        self.next_log_probs = next_log_probs


def _compiled(model: keras.Model) -> _Compiled:
    try:
        found = _FUNCTIONS.get(model)
        if found is None:
            found = _FUNCTIONS[model] = _Compiled(model)
        return found
    except TypeError:  # not weak-referenceable: compile without caching
        return _Compiled(model)


def _check_source(source_ids) -> np.ndarray:
    source = np.asarray(source_ids)
    if source.ndim != 2 or source.shape[0] == 0 or source.shape[1] == 0:
        raise ValueError(
            f"source_ids must be a non-empty 2-D (batch, length) array of token ids, "
            f"got shape {source.shape}"
        )
    if not np.issubdtype(source.dtype, np.integer):
        raise ValueError(f"source_ids must be integer token ids, got dtype {source.dtype}")
    # Drop columns that are padding in every row (sentence batches are padded to a max).
    used = np.nonzero((source != PAD_ID).any(axis=0))[0]
    width = int(used[-1]) + 1 if used.size else 1
    return source[:, :width].astype(np.int32)


def _resolve_max_length(compiled: _Compiled, source: np.ndarray, max_length) -> int:
    if max_length is None:
        max_length = 2 * source.shape[1] + 10
        if compiled.max_positions is not None:
            max_length = min(max_length, compiled.max_positions)
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if compiled.max_positions is not None and max_length > compiled.max_positions:
        raise ValueError(
            f"max_length {max_length} exceeds the model's {compiled.max_positions} learned "
            "positions; lower max_length"
        )
    return int(max_length)


def _check_beam(beam_size, length_penalty) -> None:
    if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)):
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be finite, got {length_penalty}")


def _mask_log_probs(log_probs: np.ndarray, step: int, max_length: int) -> np.ndarray:
    """Never padding or BOS; only EOS at the last allowed step."""
    log_probs[:, PAD_ID] = -np.inf
    log_probs[:, BOS_ID] = -np.inf
    if step == max_length - 1:
        eos = log_probs[:, EOS_ID].copy()
        log_probs[:] = -np.inf
        log_probs[:, EOS_ID] = eos
    return log_probs


def beam_search(
    model: keras.Model,
    source_ids,
    *,
    beam_size: int = 4,
    max_length: int | None = None,
    length_penalty: float = 1.0,
) -> list[list[tuple[float, list[int]]]]:
    """Every finished hypothesis per source, best first: ``[(score, ids), ...]``.

    Args:
        model: a model built by `models.get` (or loaded from its ``.keras`` file).
        source_ids: int (B, S) source ids, padded with 0 (as in the data's batches).
        beam_size: live hypotheses per source (1: greedy).
        max_length: most output tokens per hypothesis, EOS included (default
            ``2 * S + 10``, capped by learned positions).
        length_penalty: fairseq's ``lenpen``: scores are ``sum log p / length ** lp``.

    Returns:
        For each source, up to ``beam_size`` ``(normalized score, ids)`` pairs sorted by
        score (ids without BOS/EOS/padding).
    """
    _check_beam(beam_size, length_penalty)
    compiled = _compiled(model)
    source = _check_source(source_ids)
    max_length = _resolve_max_length(compiled, source, max_length)
    n, k = source.shape[0], int(beam_size)
    memory, source_mask = compiled.encoder(tf.constant(source))
    # Row b * k + j is beam j of source b.
    memory = tf.repeat(memory, k, axis=0)
    source_mask = tf.repeat(source_mask, k, axis=0)
    tokens = np.zeros((n, k, 0), dtype=np.int32)
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0  # step 0 extends one hypothesis, not k copies
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    active = np.arange(n)
    for step in range(max_length):
        rows = (active[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        prefix = np.concatenate(
            [np.full((len(rows), 1), BOS_ID, np.int32), tokens[active].reshape(len(rows), -1)],
            axis=1,
        )
        log_probs = compiled.next_log_probs(
            tf.gather(memory, rows), tf.gather(source_mask, rows), tf.constant(prefix)
        ).numpy()
        log_probs = _mask_log_probs(log_probs.astype(np.float64), step, max_length)
        vocab = log_probs.shape[-1]
        candidates = (
            scores[active][:, :, None] + log_probs.reshape(len(active), k, vocab)
        ).reshape(len(active), k * vocab)
        width = min(2 * k, k * vocab)
        # Best first; stable, so ties go to the lower (beam, token) index.
        order = np.argsort(-candidates, axis=1, kind="stable")[:, :width]
        new_tokens = np.zeros((len(active), k, step + 1), dtype=np.int32)
        new_scores = np.full((len(active), k), -np.inf)
        still_active = np.ones(len(active), dtype=bool)
        for a, sentence in enumerate(active):
            kept = 0
            for rank, flat in enumerate(order[a]):
                beam, token = divmod(int(flat), vocab)
                score = candidates[a, flat]
                if token == EOS_ID:
                    if rank < k and np.isfinite(score) and len(finished[sentence]) < k:
                        length = step + 1  # tokens incl. EOS
                        hypothesis = tokens[sentence, beam].tolist()
                        finished[sentence].append((score / length**length_penalty, hypothesis))
                elif kept < k:
                    new_tokens[a, kept, :step] = tokens[sentence, beam]
                    new_tokens[a, kept, step] = token
                    new_scores[a, kept] = score
                    kept += 1
            if len(finished[sentence]) >= k:
                still_active[a] = False
        grown = np.zeros((n, k, step + 1), dtype=np.int32)
        grown[active] = new_tokens
        tokens = grown
        scores[active] = new_scores
        active = active[still_active]
        if not len(active):
            break
    return [sorted(found, key=lambda pair: -pair[0]) for found in finished]


def translate_ids(
    model: keras.Model,
    source_ids,
    *,
    beam_size: int = 4,
    max_length: int | None = None,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """The best hypothesis per source as a list of ids (no BOS, EOS or padding).

    Beam search as fairseq (see the module docstring); arguments as `beam_search`.

    Example:
        >>> translate_ids(model, x["source"].numpy(), beam_size=4, max_length=64)
    """
    return [
        found[0][1] if found else []
        for found in beam_search(
            model,
            source_ids,
            beam_size=beam_size,
            max_length=max_length,
            length_penalty=length_penalty,
        )
    ]


def greedy_ids(model: keras.Model, source_ids, *, max_length: int | None = None) -> list[list[int]]:
    """Argmax decoding until EOS (or ``max_length`` tokens incl. EOS); ids without BOS/EOS.

    Same masking as `beam_search` (no padding/BOS; EOS forced at the last step), so it
    equals ``translate_ids(..., beam_size=1)``.
    """
    compiled = _compiled(model)
    source = _check_source(source_ids)
    max_length = _resolve_max_length(compiled, source, max_length)
    memory, source_mask = compiled.encoder(tf.constant(source))
    n = source.shape[0]
    prefix = np.full((n, 1), BOS_ID, np.int32)
    done = np.zeros(n, dtype=bool)
    outputs: list[list[int]] = [[] for _ in range(n)]
    for step in range(max_length):
        rows = np.nonzero(~done)[0]
        log_probs = compiled.next_log_probs(
            tf.gather(memory, rows), tf.gather(source_mask, rows), tf.constant(prefix[rows])
        ).numpy()
        log_probs = _mask_log_probs(log_probs.astype(np.float64), step, max_length)
        chosen = np.argmax(log_probs, axis=-1)
        column = np.full((n, 1), PAD_ID, np.int32)
        column[rows, 0] = chosen
        prefix = np.concatenate([prefix, column], axis=1)
        for row, token in zip(rows, chosen):
            if token == EOS_ID:
                done[row] = True
            else:
                outputs[row].append(int(token))
        if done.all():
            break
    return outputs
