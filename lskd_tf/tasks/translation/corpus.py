"""The embedded parallel corpus: a synthetic two-language grammar that needs no download.

`generate(split, ...)` returns ``(sources, targets)``, two lists of sentences (plain
strings, words separated by single spaces) in a made-up source language ``src`` and a
made-up target language ``tgt``. Everything is a deterministic function of
``data_seed``, the split and the options: the lexicon (words, genders, families) comes
from the stream ``default_rng([data_seed, 0])``, each split's sentences from
``default_rng([data_seed, 1 + index of the split in ("train", "valid", "test")])``. The
default 20,000 / 500 / 1,000 pairs take about a second (cached per process).

The lexicon
-----------
Words are random syllable strings; the two languages use disjoint letters (source:
consonants ``ptkmnlsr``, vowels ``aiu``; target: ``bdgfvzhjc`` and ``eoy``), so no word
is shared between them. With ``vocab_scale=1`` there are:

* 20 **noun families**, 12 **adjective families** and 12 **verb families** of
  ``family_size=3`` near-synonyms each, plus 6 **adverb families** of 2. Every member is
  a (source word, target stem) pair: source synonym k always means target synonym k.
  Each target noun has a grammatical gender (m/f, random per noun, so synonyms of one
  family may differ in gender).
* Each noun, adjective and verb family also has one extra **ambiguous source word** (a
  "hypernym") that translates to a member of its family chosen uniformly at random.
* Function words: 4 source determiners (definite/indefinite x singular/plural), 8 target
  determiners (definiteness x gender x number), 2 source prepositions -> 2 target
  postpositions.
* Target inflection (suffixes glued to the stem): nouns ``-ez`` in the plural;
  adjectives agree with their noun in gender and number (``-o -e -od -ed``); verbs agree
  with the subject in gender and number (``-zo -ze -zod -zed``).

A sentence
----------
A meaning is sampled: subject and object noun phrases (each: a noun, definite with
p=0.5, plural with p=0.3, zero/one/two adjectives with p=0.5/0.35/0.15), a verb, an
optional prepositional phrase (p=0.35) and an optional adverb (p=0.3). Each noun,
adjective and verb slot is rendered with the family's ambiguous source word with
probability ``ambiguity`` (default 0.15), otherwise with a specific synonym; the target
side always uses a specific synonym (the source's, or a random one for an ambiguous word).

* source (SVO, determiner-adjectives-noun):
  ``DET ADJ* NOUN VERB DET ADJ* NOUN [PREP DET ADJ* NOUN] [ADV]``
* target (SOV, noun-adjectives-determiner, adjectives in mirrored order, the
  prepositional phrase before the object with a postposition, the adverb before the verb):
  ``NOUN ADJ* DET [NOUN ADJ* DET POSTP] NOUN ADJ* DET [ADV] VERB``

so a model has to reorder (verb to the end, adjectives after the noun), carry number
from the source determiner to the target noun, adjectives and verb, carry gender from
the *target* noun it chose to the adjectives, determiner and verb, and pick synonyms.
Source sentences have 5-17 words (mean ~8); a target sentence has as many words as its
source.

Why it is learnable but not trivial
-----------------------------------
Everything but the ambiguous words is a deterministic function of the source, so a
model can learn it; an ambiguous word has ``family_size`` equally likely translations
(whose genders then drive agreement), so even a perfect model loses BLEU exactly there,
and its errors fall *within* a semantic family -- the "semantically similar tokens" the
diffusion analysis looks for. `oracle_translations` gives the best deterministic
translation (ambiguous words resolved to the first family member); its BLEU against
the references is the corpus's ceiling (~83 sacreBLEU on the default test split; 100 with
``ambiguity=0``).

Example:
    >>> sources, targets = generate("valid", size=2)
    >>> len(sources), sources[0].count(" ") >= 3
    (2, True)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

SPLITS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 20_000, "valid": 500, "test": 1_000}
SOURCE_LANGUAGE = "src"
TARGET_LANGUAGE = "tgt"

_SOURCE_LETTERS = ("ptkmnlsr", "aiu")
_TARGET_LETTERS = ("bdgfvzhjc", "eoy")
_NOUN_PLURAL = "ez"
_ADJECTIVE_SUFFIX = ("o", "e", "od", "ed")  # index = 2 * plural + gender
_VERB_SUFFIX = ("zo", "ze", "zod", "zed")
_BASE_FAMILIES = {"noun": 20, "adjective": 12, "verb": 12, "adverb": 6}
KINDS = tuple(_BASE_FAMILIES)


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """The words of both languages (a function of ``data_seed``, ``vocab_scale``, ``family_size``).

    Attributes:
        families: ``[(kind, [source synonyms], [target stems], hypernym or None), ...]``,
            index = family id; kind is ``"noun"``, ``"adjective"``, ``"verb"`` or ``"adverb"``.
        gender: target noun stem -> 0 (m) or 1 (f).
        source_determiners: ``[definite][plural]`` -> source word.
        target_determiners: ``[definite][gender][plural]`` -> target word.
        prepositions, postpositions: source word i translates to target word i.
    """

    families: list
    gender: dict
    source_determiners: tuple
    target_determiners: tuple
    prepositions: tuple
    postpositions: tuple

    def target_word_families(self) -> dict[str, int]:
        """Every target word form (all inflections) -> its family id.

        >>> lexicon = build_lexicon(0)
        >>> kind, _, stems, _ = lexicon.families[0]
        >>> lexicon.target_word_families()[stems[0] + "ez"]
        0
        """
        out = {}
        for family, (kind, _, stems, _) in enumerate(self.families):
            for stem in stems:
                for form in target_forms(kind, stem):
                    out[form] = family
        return out

    def family_names(self) -> list[str]:
        """A readable name per family: ``"<kind>:<first target stem>"``."""
        return [f"{kind}:{stems[0]}" for kind, _, stems, _ in self.families]


def target_forms(kind: str, stem: str) -> list[str]:
    """All inflected target forms of a stem of the given kind."""
    if kind == "noun":
        return [stem, stem + _NOUN_PLURAL]
    if kind == "adjective":
        return [stem + s for s in _ADJECTIVE_SUFFIX]
    if kind == "verb":
        return [stem + s for s in _VERB_SUFFIX]
    return [stem]


def _word_maker(rng: np.random.Generator, letters: tuple[str, str], used: set):
    consonants, vowels = letters

    def make(syllables: tuple[int, ...] = (2, 3)) -> str:
        while True:
            n = int(rng.choice(syllables))
            word = "".join(
                rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(n)
            )
            if rng.uniform() < 0.3:
                word += rng.choice(list(consonants))
            if word not in used:
                used.add(word)
                return word

    return make


@functools.lru_cache(maxsize=16)
def build_lexicon(data_seed: int = 0, vocab_scale: float = 1.0, family_size: int = 3) -> Lexicon:
    """The lexicon of ``data_seed`` (see the module docstring)."""
    if vocab_scale <= 0 or family_size < 2:
        raise ValueError(
            f"vocab_scale must be > 0 and family_size >= 2, got {vocab_scale}, {family_size}"
        )
    rng = np.random.default_rng([int(data_seed), 0])
    used_source: set = set()
    used_target: set = set()
    source_word = _word_maker(rng, _SOURCE_LETTERS, used_source)
    target_word = _word_maker(rng, _TARGET_LETTERS, used_target)
    # Short function words first, so that content words never collide with them.
    source_determiners = tuple(tuple(source_word((1,)) for _ in range(2)) for _ in range(2))
    target_determiners = tuple(
        tuple(tuple(target_word((1,)) for _ in range(2)) for _ in range(2)) for _ in range(2)
    )
    prepositions = tuple(source_word((1,)) for _ in range(2))
    postpositions = tuple(target_word((1,)) for _ in range(2))
    # Reserve every inflected form so that e.g. stem+"ez" never equals another stem.
    families, gender = [], {}
    for kind, base in _BASE_FAMILIES.items():
        size = 2 if kind == "adverb" else family_size
        for _ in range(max(1, round(base * vocab_scale))):
            sources = [source_word() for _ in range(size)]
            stems = []
            while len(stems) < size:
                stem = target_word()
                forms = target_forms(kind, stem)
                if any(f in used_target and f != stem for f in forms):
                    continue
                used_target.update(forms)
                stems.append(stem)
            hypernym = None if kind == "adverb" else source_word()
            families.append((kind, sources, stems, hypernym))
            if kind == "noun":
                gender.update({stem: int(rng.integers(2)) for stem in stems})
    return Lexicon(
        families, gender, source_determiners, target_determiners, prepositions, postpositions
    )


def _family_ids(lexicon: Lexicon, kind: str) -> np.ndarray:
    return np.array([i for i, f in enumerate(lexicon.families) if f[0] == kind])


def _sample_pairs(
    lexicon: Lexicon, rng: np.random.Generator, size: int, ambiguity: float, oracle: bool
) -> tuple[list[str], list[str]]:
    """Sample ``size`` sentence pairs. Every random draw happens whatever its use, so
    ``oracle=True`` sees exactly the same meanings and only resolves ambiguity differently."""
    families = lexicon.families
    ids = {kind: _family_ids(lexicon, kind).tolist() for kind in KINDS}

    def content(kind):
        """(source word, target stem) of one noun/adjective/verb/adverb slot."""
        family = int(ids[kind][rng.integers(len(ids[kind]))])
        _, sources, stems, hypernym = families[family]
        member = int(rng.integers(len(sources)))
        ambiguous = hypernym is not None and rng.uniform() < ambiguity
        resolved = int(rng.integers(len(stems)))  # the reference's choice for an ambiguous word
        if not ambiguous:
            return sources[member], stems[member]
        return hypernym, stems[0 if oracle else resolved]

    def noun_phrase():
        definite = int(rng.uniform() < 0.5)
        plural = int(rng.uniform() < 0.3)
        u = rng.uniform()
        n_adjectives = 0 if u < 0.5 else 1 if u < 0.85 else 2  # p = 0.5 / 0.35 / 0.15
        adjectives = [content("adjective") for _ in range(n_adjectives)]
        noun_source, noun_stem = content("noun")
        g = lexicon.gender[noun_stem]
        source = [lexicon.source_determiners[definite][plural], *(a[0] for a in adjectives)]
        source.append(noun_source)
        target = [noun_stem + (_NOUN_PLURAL if plural else "")]
        target += [a[1] + _ADJECTIVE_SUFFIX[2 * plural + g] for a in reversed(adjectives)]
        target.append(lexicon.target_determiners[definite][g][plural])
        return source, target, g, plural

    sources, targets = [], []
    for _ in range(size):
        subj_s, subj_t, subj_gender, subj_plural = noun_phrase()
        verb_s, verb_t = content("verb")
        obj_s, obj_t, _, _ = noun_phrase()
        has_pp = rng.uniform() < 0.35
        prep = int(rng.integers(2))
        pp_s, pp_t, _, _ = noun_phrase()
        has_adverb = rng.uniform() < 0.3
        adv_s, adv_t = content("adverb")
        source = subj_s + [verb_s] + obj_s
        target = list(subj_t)
        if has_pp:
            source += [lexicon.prepositions[prep], *pp_s]
            target += [*pp_t, lexicon.postpositions[prep]]
        target += obj_t
        if has_adverb:
            source.append(adv_s)
            target.append(adv_t)
        target.append(verb_t + _VERB_SUFFIX[2 * subj_plural + subj_gender])
        sources.append(" ".join(source))
        targets.append(" ".join(target))
    return sources, targets


def _check(split: str, size: int | None, ambiguity: float) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for 'embedded'; choose one of: {SPLITS}")
    if not 0.0 <= ambiguity <= 1.0:
        raise ValueError(f"ambiguity must be in [0, 1], got {ambiguity}")
    size = DEFAULT_SIZES[split] if size is None else size
    if int(size) != size or size < 1:
        raise ValueError(f"{split}_size must be a positive integer, got {size!r}")
    return int(size)


@functools.lru_cache(maxsize=16)
def _generate(split, size, data_seed, vocab_scale, family_size, ambiguity, oracle):
    lexicon = build_lexicon(data_seed, vocab_scale, family_size)
    rng = np.random.default_rng([int(data_seed), 1 + SPLITS.index(split)])
    sources, targets = _sample_pairs(lexicon, rng, size, ambiguity, oracle)
    return tuple(sources), tuple(targets)


def generate(
    split: str = "train",
    *,
    size: int | None = None,
    data_seed: int = 0,
    vocab_scale: float = 1.0,
    family_size: int = 3,
    ambiguity: float = 0.15,
) -> tuple[list[str], list[str]]:
    """One split of the embedded corpus as ``(source sentences, target sentences)``.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        size: sentence pairs; default 20,000 / 500 / 1,000.
        data_seed: fixes the lexicon (shared by all splits) and the sentences.
        vocab_scale: multiplies the number of families (1.0: 50 families, ~170 source
            words, ~130 target stems).
        family_size: synonyms per noun/adjective/verb family.
        ambiguity: probability that a noun/adjective/verb is written with its family's
            ambiguous source word (the corpus's irreducible error).

    Example:
        >>> src, tgt = generate("test", size=3, data_seed=1)
        >>> src == generate("test", size=3, data_seed=1)[0]
        True
    """
    size = _check(split, size, ambiguity)
    sources, targets = _generate(
        split, size, int(data_seed), float(vocab_scale), int(family_size), float(ambiguity), False
    )
    return list(sources), list(targets)


def oracle_translations(
    split: str = "test",
    *,
    size: int | None = None,
    data_seed: int = 0,
    vocab_scale: float = 1.0,
    family_size: int = 3,
    ambiguity: float = 0.15,
) -> list[str]:
    """The best deterministic translation of each source of `generate` (same arguments).

    Identical to the reference except where the source word is ambiguous: there it takes
    the family's first member (and agrees with it). BLEU(oracle, references) is the
    corpus's ceiling for any model.
    """
    size = _check(split, size, ambiguity)
    _, targets = _generate(
        split, size, int(data_seed), float(vocab_scale), int(family_size), float(ambiguity), True
    )
    return list(targets)
