"""Embedded translation corpus: generation and tokenization throughput (sentences/s).

Generates the default train split (20,000 pairs) with a fresh seed, learns a vocabulary
into a temporary directory, tokenizes the split in ``tf.data`` and builds one epoch of
token-budget batches; prints sentences per second for each stage. Later: learnability
(BLEU of a small Transformer). Runs in well under a minute on 2 CPU cores::

    python benchmarks/translation_corpus.py [--size 20000] [--seed 123]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()

    from lskd_tf.tasks.translation import corpus
    from lskd_tf.tasks.translation import data as mt

    def rate(label: str, count: int, seconds: float) -> None:
        print(f"{label:<36} {count:>8} in {seconds:6.2f} s  {count / seconds:>10,.0f} sentences/s")

    start = time.perf_counter()
    corpus.generate("train", size=args.size, data_seed=args.seed)
    rate("generate (pairs)", args.size, time.perf_counter() - start)

    options = {"train_size": args.size, "data_seed": args.seed}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        info = mt.get_info("embedded", data_dir=cache, **options)
        rate("learn vocabulary (all splits read)", 2 * args.size, time.perf_counter() - start)
        config = mt._config("embedded", cache, options)
        start = time.perf_counter()
        tokenized = mt._tokenized(config, "train")
        rate("tokenize in tf.data (both sides)", 2 * args.size, time.perf_counter() - start)
        fn = mt.train_fn("embedded", data_dir=cache, max_tokens=4096, seed=0, **options)
        start = time.perf_counter()
        batches = tokens = 0
        for _, _, w in fn(0):
            batches += 1
            tokens += int(w.numpy().sum())
        rate("one epoch of 4096-token batches", args.size, time.perf_counter() - start)
        print(
            f"vocabulary {info.vocab_size} pieces; {batches} batches; "
            f"{tokenized.source_lengths.mean():.1f} source / "
            f"{tokenized.target_lengths.mean() + 1:.1f} target tokens per sentence; "
            f"{tokens / batches:.0f} target tokens per batch"
        )


if __name__ == "__main__":
    main()
