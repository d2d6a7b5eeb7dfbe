"""The previous decoder, kept as the tests' (and the speed benchmark's) reference.

`beam_search` is lskd_tf's beam search as it was before incremental decoding (commit
07050c1, ``lskd_tf/tasks/translation/decoding.py``): fairseq's rules with NumPy
bookkeeping per sentence on the host, and the whole decoder re-run over the whole prefix
of every live hypothesis at each step (no key/value cache). Sentences that are done drop
out of later steps. Every sentence may produce ``max_length`` tokens (EOS included).

`greedy_ids` is the plainest argmax loop: the full model called on the whole prefix.

Neither is library code: the library has one beam search, `decoding.search`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lskd_tf.tasks.translation.models import BOS_ID, EOS_ID, PAD_ID, Layers, decode, encode


class Compiled:
    """The compiled encoder and uncached next-token step of one model."""

    def __init__(self, model):
        layers = Layers.of(model)

        @tf.function(reduce_retracing=True)
        def encoder(source):
            return encode(layers, source, training=False)

        @tf.function(reduce_retracing=True)
        def next_log_probs(memory, source_mask, prefix):
            logits = decode(layers, memory, source_mask, prefix, training=False)
            return tf.nn.log_softmax(tf.cast(logits[:, -1, :], tf.float32), axis=-1)

        self.encoder = encoder
        self.next_log_probs = next_log_probs


def _mask_log_probs(log_probs: np.ndarray, step: int, max_length: int) -> np.ndarray:
    log_probs[:, PAD_ID] = -np.inf
    log_probs[:, BOS_ID] = -np.inf
    if step == max_length - 1:
        eos = log_probs[:, EOS_ID].copy()
        log_probs[:] = -np.inf
        log_probs[:, EOS_ID] = eos
    return log_probs


def beam_search(compiled: Compiled, source, *, beam_size, max_length, length_penalty=1.0):
    """Every finished hypothesis per source, best first: ``[(score, ids), ...]``."""
    source = np.asarray(source, np.int32)
    n, k = source.shape[0], int(beam_size)
    memory, source_mask = compiled.encoder(tf.constant(source))
    memory = tf.repeat(memory, k, axis=0)
    source_mask = tf.repeat(source_mask, k, axis=0)
    tokens = np.zeros((n, k, 0), dtype=np.int32)
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0
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
                        hypothesis = tokens[sentence, beam].tolist()
                        finished[sentence].append((score / (step + 1) ** length_penalty,
                                                   hypothesis))  # fmt: skip
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


def translate_ids(compiled: Compiled, source, **options) -> list[list[int]]:
    """The best hypothesis per source (no BOS/EOS)."""
    return [found[0][1] if found else [] for found in beam_search(compiled, source, **options)]


def greedy_ids(model, source, *, max_length) -> list[list[int]]:
    """Argmax of the full model over the whole prefix, until EOS or ``max_length`` tokens
    (EOS forced at the last step; padding and BOS never chosen)."""
    outputs = []
    for row in np.asarray(source, np.int32):
        prefix = [BOS_ID]
        for step in range(max_length):
            x = {"source": row[None, :], "target_in": np.asarray([prefix], np.int32)}
            logits = model(x, training=False).numpy()[0, -1].astype(np.float64)
            logits[[PAD_ID, BOS_ID]] = -np.inf
            token = EOS_ID if step == max_length - 1 else int(np.argmax(logits))
            if token == EOS_ID:
                break
            prefix.append(token)
        outputs.append(prefix[1:])
    return outputs
