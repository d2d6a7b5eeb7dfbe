"""Corpus BLEU of detokenized text with sacreBLEU, and the signature that makes it
reproducible.

Scores are sacreBLEU's defaults (13a tokenization, mixed case, exponential smoothing,
one reference per sentence), the numbers papers report as "sacreBLEU"; the signature
string records exactly that (e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|
version:2.6.0``) and is stored with every score.

Example:
    >>> corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    (100.00000000000004, 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0')
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU


def corpus_bleu(
    hypotheses: list[str], references: list[str], *, lowercase: bool = False, tokenize: str = "13a"
) -> tuple[float, str]:
    """``(BLEU in [0, 100], sacreBLEU signature)`` of detokenized hypotheses vs references.

    Args:
        hypotheses: one detokenized output sentence per source.
        references: the reference sentence of each source (same order and count).
        lowercase: case-insensitive BLEU (sacreBLEU ``-lc``; the signature says
            ``case:lc``), e.g. for a lowercased IWSLT preparation.
        tokenize: sacreBLEU's tokenizer (default ``13a``, WMT's).

    Raises:
        ValueError: different counts, no sentences, or non-string entries.
    """
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; pass one "
            "hypothesis per reference"
        )
    if not hypotheses:
        raise ValueError("no sentences to score; pass at least one hypothesis and reference")
    if not all(isinstance(s, str) for s in hypotheses + references):
        raise ValueError("hypotheses and references must be detokenized strings")
    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    score = metric.corpus_score(hypotheses, [references])
    return float(score.score), str(metric.get_signature())
