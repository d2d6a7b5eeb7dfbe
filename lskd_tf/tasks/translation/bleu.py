"""Corpus BLEU two ways, each with the sacreBLEU signature that makes it reproducible.

* **BLEU** (`corpus_bleu`, run.json ``test_bleu``): sacreBLEU's defaults (13a tokenization,
  mixed case, exponential smoothing, one reference per sentence) on *detokenized* text,
  the modern standard (Post 2018). Text stored Moses-tokenized is first detokenized and
  its escapes (``&apos;`` -> ``'``, ``&quot;``, ``&amp;``, ``&#124;`` ...) undone: 13a
  would otherwise split ``&apos;`` into three tokens that always match.
* **Tokenized BLEU** (`tokenized_bleu`, run.json ``test_bleu_tokenized``): the number the
  papers report. Their fairseq fork (RayeRen/multilingual-kd-pytorch, fairseq/trainer.py
  ``test_bleu`` and fairseq/bleu.py ``Scorer``) removes BPE, splits the Moses-tokenized
  text on whitespace and scores those tokens: clipped n-gram precisions 1-4, brevity
  penalty min(1, exp(1 - r/c)), no smoothing. That is sacreBLEU with ``tokenize="none"``
  and ``smooth_method="none"`` on the tokenized text (tested equal to a transcription of
  the scorer).

Where the tokenized text comes from depends on how the dataset stores its text
(`TEXT_FORMATS`): ``"moses"`` text (IWSLT'14 from prepare-iwslt14.sh: Moses-tokenized,
escaped, lowercased) is scored as is and detokenized for BLEU; ``"raw"`` text (TFDS
WMT, the embedded corpus) is scored as is for BLEU and Moses-tokenized for tokenized
BLEU the way fairseq's examples/translation/prepare-wmt14en2de.sh prepares WMT
(``tokenizer.perl -a``: escapes, aggressive hyphen splitting). Moses here is sacremoses,
the Python port of the Moses scripts.

Example:
    >>> corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    (100.00000000000004, 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0')
    >>> detokenized(["it &apos;s a well @-@ known cat ."], "moses", "en")
    ["it's a well-known cat."]
"""

from __future__ import annotations

import functools

from sacrebleu.metrics import BLEU

TEXT_FORMATS = ("raw", "moses")
"""How a dataset stores its sentences: ``raw`` (untokenized) or ``moses`` (the output of
Moses' tokenizer.perl, with its XML escapes)."""


@functools.cache
def _moses(language: str):
    from sacremoses import MosesDetokenizer, MosesTokenizer

    return MosesTokenizer(lang=language), MosesDetokenizer(lang=language)


def check_text_format(text_format: str) -> None:
    """A one-line ValueError unless ``text_format`` is one of `TEXT_FORMATS`."""
    if text_format not in TEXT_FORMATS:
        raise ValueError(
            f"unknown text format {text_format!r} for BLEU; choose one of: "
            f"{', '.join(TEXT_FORMATS)} (moses: the files are tokenizer.perl output)"
        )


def detokenized(sentences: list[str], text_format: str, language: str) -> list[str]:
    """``sentences`` as plain text: Moses-detokenized (escapes undone) if ``"moses"``."""
    check_text_format(text_format)
    if text_format == "raw":
        return list(sentences)
    detokenizer = _moses(language)[1]
    return [detokenizer.detokenize(sentence.split()) for sentence in sentences]


def moses_tokenized(sentences: list[str], text_format: str, language: str) -> list[str]:
    """``sentences`` as Moses-tokenized text (``tokenizer.perl -a``) if ``"raw"``; as is
    if they already are (``"moses"``)."""
    check_text_format(text_format)
    if text_format == "moses":
        return list(sentences)
    tokenizer = _moses(language)[0]
    return [
        tokenizer.tokenize(sentence, return_str=True, escape=True, aggressive_dash_splits=True)
        for sentence in sentences
    ]


def _check(hypotheses: list, references: list) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; pass one "
            "hypothesis per reference"
        )
    if not hypotheses:
        raise ValueError("no sentences to score; pass at least one hypothesis and reference")
    if not all(isinstance(s, str) for s in hypotheses + references):
        raise ValueError("hypotheses and references must be strings")


def corpus_bleu(
    hypotheses: list[str],
    references: list[str],
    *,
    lowercase: bool = False,
    tokenize: str = "13a",
    smooth_method: str = "exp",
) -> tuple[float, str]:
    """``(BLEU in [0, 100], sacreBLEU signature)`` of hypotheses vs references.

    Args:
        hypotheses: one detokenized output sentence per source.
        references: the reference sentence of each source (same order and count).
        lowercase: case-insensitive BLEU (sacreBLEU ``-lc``; the signature says
            ``case:lc``).
        tokenize: sacreBLEU's tokenizer (default ``13a``, WMT's; ``none`` splits on
            whitespace only).
        smooth_method: sacreBLEU's smoothing (default ``exp``; ``none`` as fairseq).

    Raises:
        ValueError: different counts, no sentences, or non-string entries.
    """
    hypotheses, references = list(hypotheses), list(references)
    _check(hypotheses, references)
    metric = BLEU(lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method)
    score = metric.corpus_score(hypotheses, [references])
    return float(score.score), str(metric.get_signature())


def tokenized_bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """fairseq's BLEU of Moses-tokenized text: ``(score, signature)`` (see the module)."""
    return corpus_bleu(hypotheses, references, tokenize="none", smooth_method="none")


def score(hypotheses: list[str], references: list[str], *, text_format: str, language: str) -> dict:
    """Both BLEUs of translations stored like the dataset's text (``text_format``).

    Returns:
        ``{"bleu", "signature"}`` (sacreBLEU 13a on detokenized text) and
        ``{"bleu_tokenized", "tokenized_signature"}`` (fairseq's tokenized BLEU).
    """
    hypotheses, references = list(hypotheses), list(references)
    _check(hypotheses, references)
    bleu, signature = corpus_bleu(
        detokenized(hypotheses, text_format, language),
        detokenized(references, text_format, language),
    )
    tokenized, tokenized_signature = tokenized_bleu(
        moses_tokenized(hypotheses, text_format, language),
        moses_tokenized(references, text_format, language),
    )
    return {
        "bleu": bleu,
        "signature": signature,
        "bleu_tokenized": tokenized,
        "tokenized_signature": tokenized_signature,
    }
