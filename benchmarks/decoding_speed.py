"""Translation decoding speed: the cached in-graph beam search against the previous one.

    python benchmarks/decoding_speed.py [--model transformer_2x2_256] [--vocab 10000]
        [--sentences 32] [--source_length 32] [--max_length 64] [--beam 4]
        [--repeats 3] [--warmup 1]

One untrained model (its outputs run away, as an undertrained student's do, so every
sentence decodes all ``max_length`` steps: the worst case, and "length 64" exactly),
random source sentences of ``source_length`` tokens already in memory. Timed, interleaved
(medians):

    a. `decoding.translate_ids` at ``--beam`` (the library: one ``tf.function``, key/value
       cache, batched over sentences and beams),
    b. the previous decoder at ``--beam`` (``tests/beam_reference.py``: the whole decoder
       over the whole prefix at every step, NumPy bookkeeping per sentence on the host),
    c. a. with beam 1 (greedy),
    d. a. on twice as many sentences (time linear in sentences: d / a = 2),

and prints b / a (issue #24's goal: >= 5 at beam 4, length 64), a / c and d / a. Both
decoders are checked to give the same translations first. Tracing is excluded (warm-up
calls). The machine is shared: read the ratios, which are measured in one process.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # beam_reference

import keras  # noqa: E402
import numpy as np  # noqa: E402
from beam_reference import Compiled  # noqa: E402
from beam_reference import translate_ids as previous_translate_ids  # noqa: E402
from timing import interleaved_median_ms, machine_line  # noqa: E402

from lskd_tf.tasks.translation import decoding, models  # noqa: E402
from lskd_tf.tasks.translation.models import EOS_ID, NUM_SPECIAL  # noqa: E402


def sources(count: int, length: int, vocab: int, seed: int = 0) -> np.ndarray:
    """int32 (count, length): random ids, EOS last, no padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL, vocab, (count, length)).astype(np.int32)
    ids[:, -1] = EOS_ID
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="transformer_2x2_256")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--source_length", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = models.get(args.model, args.vocab, max(args.max_length, args.source_length))
    source = sources(args.sentences, args.source_length, args.vocab)
    double = sources(2 * args.sentences, args.source_length, args.vocab, seed=1)
    previous = Compiled(model)
    options = dict(max_length=args.max_length)

    new = decoding.translate_ids(model, source, beam_size=args.beam, **options)
    old = previous_translate_ids(previous, source, beam_size=args.beam, **options)
    if new != old:
        raise SystemExit("the two decoders disagree: fix that before timing them")
    steps = max(map(len, new)) + 1
    print(machine_line())
    print(
        f"{args.model}, vocab {args.vocab}, {args.sentences} sentences of "
        f"{args.source_length} tokens, max_length {args.max_length} ({steps} steps decoded), "
        f"beam {args.beam}"
    )
    timings = interleaved_median_ms(
        {
            "a. cached, in-graph": lambda: decoding.translate_ids(
                model, source, beam_size=args.beam, **options
            ),
            "b. previous": lambda: previous_translate_ids(
                previous, source, beam_size=args.beam, **options
            ),
            "c. cached, beam 1": lambda: decoding.translate_ids(
                model, source, beam_size=1, **options
            ),
            "d. cached, 2x sentences": lambda: decoding.translate_ids(
                model, double, beam_size=args.beam, **options
            ),
        },
        warmup=args.warmup,
        repeats=args.repeats,
    )
    for name, ms in timings.items():
        print(f"{name:26s} {ms:10.1f} ms")
    a, b, c, d = timings.values()
    print(f"speed-up b / a (previous / cached):      {b / a:.2f}")
    print(f"beam {args.beam} vs greedy a / c:              {a / c:.2f}")
    print(f"2x sentences d / a (linear: 2.00):       {d / a:.2f}")


if __name__ == "__main__":
    main()
