"""Translation data: parallel corpora -> a joint subword vocabulary -> Keras batches.

Datasets (`available()`):

* ``embedded``: the synthetic corpus of `lskd_tf.tasks.translation.corpus` (no download).
  Options: ``train_size`` (20000), ``valid_size`` (500), ``test_size`` (1000),
  ``data_seed`` (0), ``vocab_scale`` (1.0), ``family_size`` (3), ``ambiguity`` (0.15).
  Its vocabulary lives in ``<data_dir or ~/.cache/lskd_tf>/translation/embedded-<hash of
  the options>/``.
* ``iwslt14``: plain text files ``<data_dir>/{train,valid,test}.{de,en}`` (one sentence a
  line; fairseq's prepare-iwslt14.sh output before BPE); default data_dir
  ``<TFDS data dir>/iwslt14.tokenized.de-en``; De->En unless told otherwise.
* ``text``: the same layout anywhere (``data_dir`` required; ``source_language`` and
  ``target_language`` name the file suffixes).
* ``wmt14_translate/de-en``, ``wmt14_translate/ru-en`` (TFDS; splits train / validation /
  test = newstest2014) and ``ted_multi_translate`` (TFDS; give the languages). Never
  downloaded unless ``download=True``.

Options every dataset takes: ``source_language``, ``target_language``, ``vocab_size``
(SentencePiece pieces; 512 for embedded, 10000 otherwise), ``subword_model`` ("unigram"),
``max_length`` (tokens per side incl. EOS/BOS; 64 for embedded, 256 otherwise),
``bad_lines`` ("error" or "skip") and ``vocab_dir`` (an explicit vocabulary directory,
e.g. to share one between studies). Text and TFDS vocabularies are stored beside the
data (``<data_dir>/vocab-...``).

Batches (the contract): ``(x, y, sample_weight)`` with ``x = {"source": int32 (B, S),
"target_in": int32 (B, T)}``; ``source`` = tokens + [EOS], ``target_in`` = [BOS] +
tokens, ``y`` = tokens + [EOS], ``sample_weight`` = float32 (B, T), 1 on real tokens
(EOS included), 0 on padding (id 0). Sentences longer than ``max_length`` are truncated
(EOS kept) when the split is first tokenized, with one logged count.

Example:
    >>> info = get_info("embedded")
    >>> epoch_0 = train_fn("embedded", max_tokens=2048, seed=0)(0)
    >>> x, y, w = next(iter(epoch_0))
    >>> x["source"].shape[0] == y.shape[0], info.num_classes == info.vocab_size
    (True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from lskd_tf.data import fingerprint as data_fingerprint
from lskd_tf.data.info import DataNotFoundError
from lskd_tf.registry import Registry
from lskd_tf.seeding import epoch_seed
from lskd_tf.tasks.translation import corpus, tokenizer
from lskd_tf.tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)

TFDS_DATASETS = ("wmt14_translate/de-en", "wmt14_translate/ru-en", "ted_multi_translate")
DATASETS: Registry[tuple[str | None, str | None]] = Registry("translation dataset")
"""The translation datasets by name, each with its default (source, target) languages
(None: set by the ``source_language`` / ``target_language`` options)."""
for _name, _pair in {
    "embedded": (corpus.SOURCE_LANGUAGE, corpus.TARGET_LANGUAGE),
    "iwslt14": ("de", "en"),
    "text": (None, None),
    "wmt14_translate/de-en": ("de", "en"),
    "wmt14_translate/ru-en": ("ru", "en"),
    "ted_multi_translate": (None, None),
}.items():
    DATASETS.register(_name, _pair)
_COMMON = {
    "source_language",
    "target_language",
    "vocab_size",
    "subword_model",
    "max_length",
    "bad_lines",
    "vocab_dir",
    "download",
}
_EMBEDDED = {
    "train_size",
    "valid_size",
    "test_size",
    "data_seed",
    "vocab_scale",
    "family_size",
    "ambiguity",
}
CACHE_ROOT = Path(os.environ.get("LSKD_TF_CACHE", Path.home() / ".cache" / "lskd_tf"))

IWSLT14_HOW_TO_GET = (
    "prepare it with fairseq's examples/translation/prepare-iwslt14.sh and pass "
    "data_dir=<its output>/iwslt14.tokenized.de-en/tmp (the tokenized, lowercased text before "
    "BPE: train/valid/test.de and .en); see README, 'Translation data'"
)


@dataclasses.dataclass(frozen=True)
class TranslationInfo:
    """What models, metrics and analyses need to know about a translation dataset.

    Attributes:
        name: dataset name (``"embedded"``, ``"iwslt14"``, ...).
        source_language, target_language: e.g. ``"de"``, ``"en"``.
        vocab_size: pieces of the joint vocabulary (ids 0 pad, 1 unk, 2 BOS, 3 EOS).
        num_classes: == vocab_size (the output size of a model; the Distiller's name).
        max_length: longest source / target sequence in tokens (incl. EOS / BOS).
        train_split, eval_split, test_split: split names.
        tokenizer_path: the SentencePiece ``spm.model`` file.
        tokenizer_fingerprint: SHA-256 of that model (what a run records and checks).
        num_examples: sentence pairs per split (after bad-line filtering).
        token_families: per token id, its semantic family id or -1 (embedded corpus:
            a piece that starts only target words of one family); None otherwise.
        family_names: names of the families (index = family id), or None.
        options: the dataset options it was made with.
    """

    name: str
    source_language: str
    target_language: str
    vocab_size: int
    num_classes: int
    max_length: int
    train_split: str
    eval_split: str
    test_split: str
    tokenizer_path: str
    tokenizer_fingerprint: str
    num_examples: dict[str, int]
    token_families: list[int] | None = None
    family_names: list[str] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.num_classes != self.vocab_size:
            raise ValueError(f"num_classes ({self.num_classes}) must equal vocab_size")
        if self.token_families is not None and len(self.token_families) != self.vocab_size:
            raise ValueError(f"token_families needs {self.vocab_size} entries")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (`from_dict` inverts it)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TranslationInfo:
        """Inverse of `to_dict`."""
        return cls(**config)

    def vocabulary(self) -> tokenizer.Vocabulary:
        """The dataset's `tokenizer.Vocabulary` (checked against ``tokenizer_fingerprint``)."""
        vocab = tokenizer.load(Path(self.tokenizer_path).parent)
        if vocab.fingerprint != self.tokenizer_fingerprint:
            raise ValueError(
                f"{self.tokenizer_path} changed since this info was made (fingerprint "
                f"{vocab.fingerprint[:12]} != {self.tokenizer_fingerprint[:12]}); models trained "
                "with the old vocabulary cannot be used with it"
            )
        return vocab


def available() -> list[str]:
    """The translation dataset names."""
    return DATASETS.available()


# ---------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class _Config:
    """A dataset name, its resolved options and where its files are (hashable for caching)."""

    name: str
    data_dir: str | None
    options: tuple

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def splits(self) -> tuple[str, str, str]:
        if self.name in ("embedded", "iwslt14", "text"):
            return ("train", "valid", "test")
        return ("train", "validation", "test")


def _allowed(name: str) -> set[str]:
    """The dataset options of ``name`` (not the `EVALUATION_OPTIONS`)."""
    return _COMMON | (_EMBEDDED if name == "embedded" else set())


def option_names(name: str) -> list[str]:
    """Every key a translation DataSpec of dataset ``name`` accepts in its options."""
    return sorted(_allowed(name) | set(EVALUATION_OPTIONS))


def _config(name: str, data_dir, options: dict[str, Any]) -> _Config:
    name = DATASETS.resolve(name)
    allowed = _allowed(name)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for translation dataset {name!r}; "
            f"known: {sorted(allowed)}"
        )
    embedded = name == "embedded"
    source_language, target_language = DATASETS.get(name)
    resolved = {
        "source_language": source_language,
        "target_language": target_language,
        "vocab_size": 512 if embedded else 10_000,
        "subword_model": "unigram",
        "max_length": 64 if embedded else 256,
        "bad_lines": "error",
        "vocab_dir": None,
        "download": False,
    }
    if embedded:
        resolved.update(
            train_size=corpus.DEFAULT_SIZES["train"],
            valid_size=corpus.DEFAULT_SIZES["valid"],
            test_size=corpus.DEFAULT_SIZES["test"],
            data_seed=0,
            vocab_scale=1.0,
            family_size=3,
            ambiguity=0.15,
        )
    resolved.update(options)
    if not resolved["source_language"] or not resolved["target_language"]:
        raise ValueError(f"dataset {name!r} needs source_language= and target_language= options")
    if resolved["bad_lines"] not in ("error", "skip"):
        raise ValueError(f"bad_lines must be 'error' or 'skip', got {resolved['bad_lines']!r}")
    if int(resolved["max_length"]) < 2:
        raise ValueError(f"max_length must be >= 2, got {resolved['max_length']}")
    if name == "text" and data_dir is None:
        raise ValueError("dataset 'text' needs data_dir= (the directory of train/valid/test files)")
    if resolved["vocab_dir"] is not None:
        resolved["vocab_dir"] = os.fspath(resolved["vocab_dir"])
    return _Config(
        name, None if data_dir is None else os.fspath(data_dir), tuple(sorted(resolved.items()))
    )


EVALUATION_OPTIONS = {
    "max_tokens": None,
    "beam_size": 4,
    "length_penalty": 1.0,
    "bleu_split": None,
    "bleu_sentences": None,
    "bleu_text": None,
}
"""Options of a translation DataSpec that are not the dataset's own (batching, decoding
and BLEU settings), and their defaults."""

MOSES_TOKENIZED = ("iwslt14",)
"""Datasets whose files are Moses tokenizer.perl output (fairseq's prepare-iwslt14.sh)."""


def text_format(name: str, chosen: str | None = None) -> str:
    """How dataset ``name`` stores its text for BLEU (`bleu.TEXT_FORMATS`): ``chosen`` (the
    ``bleu_text`` option) if given, else ``"moses"`` for `MOSES_TOKENIZED` datasets and
    ``"raw"`` for the others (pass ``bleu_text="moses"`` for a ``text`` dataset made by
    a Moses preparation script)."""
    return chosen or ("moses" if name in MOSES_TOKENIZED else "raw")


def split_options(options) -> tuple[dict, dict]:
    """``(dataset options, evaluation options)`` of a DataSpec's options."""
    options = dict(options)
    evaluation = {key: options.pop(key, default) for key, default in EVALUATION_OPTIONS.items()}
    return options, evaluation


def check_options(name: str, *, data_dir=None, max_tokens: int | None = None, **options) -> dict:
    """The dataset's options with their defaults, checked without reading any data
    (unknown options, languages, ``max_length``, a token budget below one sentence pair):
    a one-line ValueError before any run starts."""
    resolved = dict(_config(name, data_dir, options).opts)
    if max_tokens is not None:
        _check_batching(max_tokens, None, int(resolved["max_length"]), replicas=1)
    return resolved


def train_split_in_order(
    name: str, *, batch_size: int, data_dir: str | os.PathLike | None = None, **options: Any
) -> tf.data.Dataset:
    """The training split as `eval_dataset` batches in stored order (what a teacher's
    stored outputs, aligned with `train_fn`'s examples, are computed on)."""
    config = _config(name, data_dir, options)
    return eval_dataset(name, config.splits[0], batch_size=batch_size, data_dir=data_dir, **options)


def _text_dir(config: _Config) -> Path:
    if config.data_dir is not None:
        return Path(config.data_dir)
    from lskd_tf.data.source import default_data_dir

    return Path(default_data_dir(None)) / "iwslt14.tokenized.de-en"


def _tfds_root(config: _Config) -> str:
    from lskd_tf.data.source import default_data_dir

    return default_data_dir(config.data_dir)


def _read_lines(path: Path) -> tuple[list[str | None], list[int]]:
    """Lines of a file (None for a line that is not UTF-8) and the bad line numbers (1-based)."""
    raw = path.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines, bad = [], []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(None)
            bad.append(number)
    return lines, bad


def _clean(sources, targets, where: tuple[str, str], policy: str, *, undecodable=((), ())):
    """Drop (policy "skip", with one warning) or reject (policy "error") empty/non-UTF-8 pairs."""
    if len(sources) != len(targets):
        raise ValueError(
            f"parallel files differ in length: {where[0]} has {len(sources)} lines, {where[1]} "
            f"has {len(targets)}; they must align line by line"
        )
    problems = []
    for side, lines, bad_utf8 in ((0, sources, undecodable[0]), (1, targets, undecodable[1])):
        empty = [i + 1 for i, line in enumerate(lines) if line is not None and not line.strip()]
        for what, numbers in (("non-UTF-8", bad_utf8), ("empty", empty)):
            if numbers:
                shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
                problems.append(f"{where[side]}: {len(numbers)} {what} line(s) (line {shown})")
    if not problems:
        return list(sources), list(targets)
    if policy == "error":
        raise ValueError(
            "bad lines in parallel data: " + "; ".join(problems) + " -- fix the files (e.g. "
            "iconv -f latin1 -t utf-8) or drop those pairs with --bad_lines=skip (Python: "
            "the DataSpec option bad_lines='skip')"
        )
    keep = [
        i
        for i, (s, t) in enumerate(zip(sources, targets))
        if s is not None and t is not None and s.strip() and t.strip()
    ]
    logger.warning("dropped %d sentence pairs: %s", len(sources) - len(keep), "; ".join(problems))
    return [sources[i] for i in keep], [targets[i] for i in keep]


def _stamp(config: _Config, split: str) -> tuple | None:
    """(mtime, size) of a text split's files, so that in-process caches see edited files."""
    if config.name not in ("iwslt14", "text"):
        return None
    o = config.opts
    paths = [_text_dir(config) / f"{split}.{o[k]}" for k in ("source_language", "target_language")]
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in paths)


def _raw_split(config: _Config, split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sources, targets) of one split, untokenized, in their stored order."""
    return _raw_split_cached(config, split, _stamp(config, split))


@functools.lru_cache(maxsize=32)
def _raw_split_cached(
    config: _Config, split: str, stamp
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    o = config.opts
    if split not in config.splits:
        raise ValueError(
            f"unknown split {split!r} of {config.name!r}; choose one of {config.splits}"
        )
    if config.name == "embedded":
        sources, targets = corpus.generate(
            split,
            size=o[f"{split}_size"],
            data_seed=o["data_seed"],
            vocab_scale=o["vocab_scale"],
            family_size=o["family_size"],
            ambiguity=o["ambiguity"],
        )
    elif config.name in ("iwslt14", "text"):
        sources, targets = _read_text_split(config, split)
    else:
        sources, targets = _read_tfds_split(config, split)
    return tuple(sources), tuple(targets)


def _text_paths(config: _Config, split: str) -> list[Path]:
    """A text split's (source, target) files; `DataNotFoundError` when one is missing."""
    o = config.opts
    directory = _text_dir(config)
    paths = [directory / f"{split}.{o[lang]}" for lang in ("source_language", "target_language")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        how = (
            IWSLT14_HOW_TO_GET
            if config.name == "iwslt14"
            else ("put one sentence per line in <data_dir>/{train,valid,test}.<language>")
        )
        raise DataNotFoundError(
            f"dataset {config.name!r}: no {' or '.join(missing)} in data_dir={str(directory)!r}; "
            + how
        )
    return paths


def _read_text_split(config: _Config, split: str):
    o = config.opts
    paths = _text_paths(config, split)
    empty = [str(p) for p in paths if p.stat().st_size == 0]
    if empty:
        raise ValueError(
            f"dataset {config.name!r}: {' and '.join(empty)} is empty; put one sentence per "
            f"line in <data_dir>/{split}.<language> (the {split} split needs sentence pairs)"
        )
    (src, bad_src), (tgt, bad_tgt) = (_read_lines(p) for p in paths)
    if split == "train" and any("@@ " in line for line in src[:1000] if line):
        raise ValueError(
            f"{paths[0]} is already BPE-segmented ('@@ ' joins); lskd_tf learns its own "
            "subwords: point data_dir at the text before BPE (prepare-iwslt14.sh's tmp/ directory)"
        )
    return _clean(src, tgt, tuple(map(str, paths)), o["bad_lines"], undecodable=(bad_src, bad_tgt))


def _read_tfds_split(config: _Config, split: str):
    import tensorflow_datasets as tfds

    o = config.opts
    root = _tfds_root(config)
    how = (
        f"run `tfds build {config.name} --data_dir={root}` on a machine with internet "
        "access, or pass download=True"
    )
    try:
        builder = tfds.builder(config.name, data_dir=root)
        if o["download"]:
            builder.download_and_prepare()
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError):
        raise DataNotFoundError(
            f"dataset {config.name!r} not found in data_dir={root!r}: {how}"
        ) from None
    src_lang, tgt_lang = o["source_language"], o["target_language"]
    sources, targets = [], []
    for example in tfds.as_numpy(ds):
        if config.name == "ted_multi_translate":
            t = example["translations"]
            langs = [x.decode() for x in t["language"]]
            if src_lang not in langs or tgt_lang not in langs:
                continue
            pair = (
                t["translation"][langs.index(src_lang)],
                t["translation"][langs.index(tgt_lang)],
            )
        else:
            pair = (example[src_lang], example[tgt_lang])
        decoded = [x.decode("utf-8", errors="replace") for x in pair]
        sources.append(decoded[0])
        targets.append(decoded[1])
    where = (f"{config.name}:{split}:{src_lang}", f"{config.name}:{split}:{tgt_lang}")
    return _clean(sources, targets, where, o["bad_lines"])


# ---------------------------------------------------------------------------- vocabulary


def _vocab_dir_and_key(config: _Config) -> tuple[Path, dict[str, Any]]:
    o = config.opts
    pair = f"{o['source_language']}-{o['target_language']}"
    suffix = f"{o['subword_model']}{o['vocab_size']}"
    if config.name == "embedded":
        fields = sorted(_EMBEDDED - {"valid_size", "test_size"})
        key = {"dataset": "embedded", **{k: o[k] for k in fields}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        root = Path(config.data_dir) if config.data_dir else CACHE_ROOT
        directory = root / "translation" / f"embedded-{suffix}-{digest}"
    elif config.name in ("iwslt14", "text"):
        # The training files' joint SHA-256 (source bytes, then target bytes), the same
        # cached pass that the run's identity records (`fingerprint`).
        train_sha256 = data_fingerprint.files_sha256(_text_paths(config, "train")).joint
        key = {"dataset": config.name, "languages": pair, "train_sha256": train_sha256}
        directory = _text_dir(config) / f"vocab-{pair}-{suffix}"
    else:
        key = {"dataset": config.name, "languages": pair}
        directory = (
            Path(_tfds_root(config))
            / "lskd_tf_vocab"
            / (f"{config.name.replace('/', '-')}-{pair}-{suffix}")
        )
    if o["vocab_dir"] is not None:
        directory = Path(o["vocab_dir"])
    return directory, key


def _vocabulary(config: _Config) -> tokenizer.Vocabulary:
    return _vocabulary_cached(config, _stamp(config, "train"))


@functools.lru_cache(maxsize=16)
def _vocabulary_cached(config: _Config, stamp) -> tokenizer.Vocabulary:
    o = config.opts
    _raw_split(config, "train")  # missing data: DataNotFoundError before anything is written
    directory, key = _vocab_dir_and_key(config)

    def sentences():
        sources, targets = _raw_split(config, "train")
        return [*sources, *targets]

    return tokenizer.get_or_learn(
        directory, key, sentences, vocab_size=o["vocab_size"], model_type=o["subword_model"]
    )


def vocabulary(name: str, *, data_dir=None, **options: Any) -> tokenizer.Vocabulary:
    """The dataset's joint vocabulary, learned on its training split on first use."""
    return _vocabulary(_config(name, data_dir, options))


def fingerprint(name: str, *, data_dir=None, **options: Any) -> dict[str, Any]:
    """What identifies a dataset's sentences and vocabulary (a run's identity records it).

    * ``files`` (``iwslt14``, ``text``): per split, per language, the SHA-256 of the
      file's bytes (`lskd_tf.data.fingerprint.files_sha256`: streamed, cached beside
      the data by size and mtime, so an unchanged corpus is not read again);
    * ``tfds``, ``version``, ``splits`` (TFDS sets): the builder and what it reads;
    * ``vocabulary_sha256`` (every dataset): the learned SentencePiece model's SHA-256,
      so a vocabulary learned again on other data makes other runs.

    The embedded corpus is generated from its options (already in the identity), so
    only its vocabulary is recorded.
    """
    config = _config(name, data_dir, options)
    vocabulary_sha256 = _vocabulary(config).fingerprint  # missing data: its one-line error
    found: dict[str, Any] = {}
    if config.name in ("iwslt14", "text"):
        o = config.opts
        languages = (o["source_language"], o["target_language"])
        for split in config.splits:
            digests = data_fingerprint.files_sha256(_text_paths(config, split))
            found.setdefault("files", {})[split] = dict(zip(languages, digests.files))
    elif config.name != "embedded":
        found.update(data_fingerprint.tfds(config.name, _tfds_root(config), config.splits))
    return {**found, "vocabulary_sha256": vocabulary_sha256}


# ---------------------------------------------------------------------------- tokenized splits


@dataclasses.dataclass(frozen=True)
class _Tokenized:
    """A tokenized split as ragged NumPy: source (with EOS) and target (no BOS/EOS) ids."""

    source_values: np.ndarray
    source_lengths: np.ndarray
    target_values: np.ndarray
    target_lengths: np.ndarray  # without BOS/EOS: the model sees length + 1

    def __len__(self) -> int:
        return len(self.source_lengths)

    def ragged(self) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
        return (
            tf.RaggedTensor.from_row_lengths(self.source_values, self.source_lengths),
            tf.RaggedTensor.from_row_lengths(self.target_values, self.target_lengths),
        )


def _with_targets(data: _Tokenized, target_ids, max_length: int) -> _Tokenized:
    if len(target_ids) != len(data):
        raise ValueError(
            f"target_ids has {len(target_ids)} rows but the training split has {len(data)} "
            "pairs: give one target per training pair, in stored order"
        )
    rows = [np.asarray(ids, np.int32)[: max_length - 1] for ids in target_ids]
    lengths = np.array([len(row) for row in rows], np.int64)
    values = np.concatenate(rows) if rows else np.zeros([0], np.int32)
    if np.isin(values, [PAD_ID, BOS_ID, EOS_ID]).any():
        raise ValueError("target_ids must be tokens without padding, BOS or EOS (ids 0, 2, 3)")
    return _Tokenized(data.source_values, data.source_lengths, values, lengths)


def _tokenize(vocab: tokenizer.Vocabulary, texts) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` with the vocabulary's tf tokenizer, inside a tf.data map."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string)).batch(4096)
    ds = ds.map(vocab.tf_tokenizer(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    values, lengths = [np.zeros([0], np.int32)], [np.zeros([0], np.int64)]
    for ids in ds:
        values.append(ids.flat_values.numpy().astype(np.int32))
        lengths.append(ids.row_lengths().numpy())
    return np.concatenate(values), np.concatenate(lengths)


def _truncate(values, lengths, keep: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first ``keep`` ids of every row; returns the count of truncated rows."""
    over = lengths > keep
    if not over.any():
        return values, lengths, 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    new_lengths = np.minimum(lengths, keep)
    index = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, new_lengths)])
    return values[index], new_lengths, int(over.sum())


def _tokenized(config: _Config, split: str) -> _Tokenized:
    return _tokenized_cached(config, split, _stamp(config, split), _stamp(config, "train"))


@functools.lru_cache(maxsize=16)
def _tokenized_cached(config: _Config, split: str, stamp, train_stamp) -> _Tokenized:
    vocab = _vocabulary(config)
    max_length = int(config.opts["max_length"])
    sources, targets = _raw_split(config, split)
    src_values, src_lengths = _tokenize(vocab, sources)
    tgt_values, tgt_lengths = _tokenize(vocab, targets)
    src_values, src_lengths, cut_src = _truncate(src_values, src_lengths, max_length - 1)
    tgt_values, tgt_lengths, cut_tgt = _truncate(tgt_values, tgt_lengths, max_length - 1)
    if cut_src or cut_tgt:
        logger.warning(
            "%s/%s: truncated %d source and %d target sentences to max_length=%d tokens",
            config.name,
            split,
            cut_src,
            cut_tgt,
            max_length,
        )
    # Append EOS to every source row.
    starts = np.concatenate([[0], np.cumsum(src_lengths)])
    src_with_eos = np.insert(src_values, starts[1:], EOS_ID).astype(np.int32)
    return _Tokenized(src_with_eos, src_lengths + 1, tgt_values.astype(np.int32), tgt_lengths)


# ---------------------------------------------------------------------------- info


def _token_families(vocab: tokenizer.Vocabulary, config: _Config) -> tuple[list[int], list[str]]:
    """Family of every token id: the family of all target words it starts, else -1."""
    o = config.opts
    lexicon = corpus.build_lexicon(o["data_seed"], o["vocab_scale"], o["family_size"])
    words = lexicon.target_word_families()
    votes: dict[int, set] = {}
    for word, ids in zip(words, vocab.encode(list(words))):
        votes.setdefault(ids[0], set()).add(words[word])
    families = [-1] * vocab.size
    for token, fams in votes.items():
        if len(fams) == 1 and token > EOS_ID:
            families[token] = next(iter(fams))
    return families, lexicon.family_names()


def get_info(
    name: str, *, data_dir: str | os.PathLike | None = None, **options: Any
) -> TranslationInfo:
    """Describe a dataset; learns (once) and stores its vocabulary on first use.

    >>> get_info("embedded", train_size=2000).num_examples
    {'train': 2000, 'valid': 500, 'test': 1000}
    """
    config = _config(name, data_dir, options)
    vocab = _vocabulary(config)
    o = config.opts
    train, valid, test = config.splits
    num_examples = {split: len(_raw_split(config, split)[0]) for split in config.splits}
    families = names = None
    if name == "embedded":
        families, names = _token_families(vocab, config)
    return TranslationInfo(
        name=name,
        source_language=o["source_language"],
        target_language=o["target_language"],
        vocab_size=vocab.size,
        num_classes=vocab.size,
        max_length=int(o["max_length"]),
        train_split=train,
        eval_split=valid,
        test_split=test,
        tokenizer_path=str(vocab.path),
        tokenizer_fingerprint=vocab.fingerprint,
        num_examples=num_examples,
        token_families=families,
        family_names=names,
        options=dict(options),
    )


# ---------------------------------------------------------------------------- batches


def _to_batch(source_rt: tf.RaggedTensor, target_rt: tf.RaggedTensor, extra_rts=()):
    """Index vector -> the contract's (x, y, sample_weight), padded to the batch's longest,
    followed by each of ``extra_rts`` (ragged by target position) gathered and padded."""

    def make(indices):
        source = tf.gather(source_rt, indices).to_tensor(PAD_ID)
        target = tf.gather(target_rt, indices)
        rows = tf.shape(indices)[0]
        bos = tf.fill([rows, 1], tf.constant(BOS_ID, tf.int32))
        eos = tf.fill([rows, 1], tf.constant(EOS_ID, tf.int32))
        target_in = tf.concat([bos, target], axis=1).to_tensor(PAD_ID)
        y = tf.concat([target, eos], axis=1).to_tensor(PAD_ID)
        weight = tf.cast(tf.not_equal(y, PAD_ID), tf.float32)
        extras = tuple(tf.gather(rt, indices).to_tensor() for rt in extra_rts)
        return ({"source": source, "target_in": target_in}, y, weight, *extras)

    return make


def _pack(order: np.ndarray, src_len: np.ndarray, tgt_len: np.ndarray, max_tokens: int):
    """Greedy token-budget batches over ``order``: rows * max(max S, max T) <= max_tokens.

    fairseq's ``--max-tokens`` rule (a sentence pair counts ``max(source, target)``
    tokens, padded to the batch's longest), so its recipes' budgets carry over as is.
    """
    batches, current, longest = [], [], 0
    for i in order.tolist():
        size = max(int(src_len[i]), int(tgt_len[i]))
        if current and (len(current) + 1) * max(longest, size) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return [np.asarray(b, np.int64) for b in batches]


def plan_epoch(
    source_lengths: np.ndarray,
    target_lengths: np.ndarray,
    *,
    seed: int,
    epoch: int,
    max_tokens: int | None = None,
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """The batches (arrays of example indices) of one epoch: a function of (seed, epoch).

    Lengths are the padded lengths the model sees (source incl. EOS, target + 1).
    ``max_tokens``: examples sorted by (source, target) length with random tie-breaks,
    packed greedily under the budget, batches in random order (fairseq's habit).
    ``batch_size``: a random permutation cut into batches of that many sentences (the
    last one may be smaller). Every example appears exactly once.

    >>> plan_epoch(np.array([3, 5, 4]), np.array([3, 5, 4]), seed=0, epoch=0, batch_size=2)
    [array([2, 0]), array([1])]
    """
    rng = np.random.default_rng(epoch_seed(seed, epoch))
    order = rng.permutation(len(source_lengths))
    if batch_size is not None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = order[np.lexsort((target_lengths[order], source_lengths[order]))]
    batches = _pack(order, source_lengths, target_lengths, max_tokens)
    return [batches[i] for i in rng.permutation(len(batches))]


def _check_batching(max_tokens, batch_size, max_length: int, replicas: int):
    if (max_tokens is None) == (batch_size is None):
        raise ValueError("pass exactly one of max_tokens (tokens per batch) or batch_size")
    if batch_size is not None:
        if int(batch_size) != batch_size or batch_size < 1 or batch_size % replicas:
            raise ValueError(
                f"batch_size must be a positive multiple of the {replicas} replica(s), got "
                f"{batch_size!r}"
            )
        return None, int(batch_size) // replicas
    per_replica = int(max_tokens) // replicas
    if per_replica < max_length:
        raise ValueError(
            f"max_tokens={max_tokens} leaves {per_replica} tokens per replica, less than one "
            f"sentence pair of max_length={max_length}; raise max_tokens or lower max_length"
        )
    return per_replica, None


def train_fn(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    seed: int,
    target_ids: list | None = None,
    position_arrays: list[np.ndarray] | None = None,
    position_lengths: np.ndarray | None = None,
    **options: Any,
) -> Callable[..., tf.data.Dataset]:
    """``(epoch, input_context=None) -> tf.data.Dataset`` of training batches.

    ``target_ids`` replaces the training split's targets: one list of ids per training
    pair in stored order, without BOS/EOS (e.g. a teacher's beam-search translations for
    sequence-level KD); longer ones are truncated to ``max_length - 1`` like the data.

    ``position_arrays``: arrays whose rows are the training split's target positions
    (``position_lengths[i]`` = pair i's target length + 1 for EOS, stored order; e.g. a
    teacher's cached logits); each batch then is ``(x, y, sample_weight, *arrays)`` with
    every array gathered and padded to ``y``'s positions.

    Epoch e's batches are a function of (seed, e) only (`plan_epoch`): reshuffled every
    epoch, identical after a restart. Exactly one of ``max_tokens`` (sentences x the
    longer side of the batch's longest pair <= max_tokens, fairseq's rule; per replica:
    max_tokens / replicas) or
    ``batch_size`` (sentences; per replica: batch_size / replicas).

    With ``input_context`` (tf.distribute): the epoch's per-replica batches are grouped
    num_replicas_in_sync at a time (one global step) and input pipeline p yields its
    replicas' batches of every group, so all pipelines yield the same number of batches;
    the last incomplete group (< num_replicas_in_sync batches) is dropped and logged.
    Without it, every training example appears exactly once per epoch.

    >>> epoch = train_fn("embedded", batch_size=32, seed=0)
    >>> x, y, w = next(iter(epoch(0)))
    >>> int(x["target_in"][0, 0]), x["source"].shape[0]
    (2, 32)
    """
    config = _config(name, data_dir, options)
    max_length = int(config.opts["max_length"])
    data = _tokenized(config, config.splits[0])
    if target_ids is not None:
        data = _with_targets(data, target_ids, max_length)
    source_rt, target_rt = data.ragged()
    src_len, tgt_len = data.source_lengths, data.target_lengths + 1
    extra_rts = []
    if position_arrays:
        if position_lengths is None or not np.array_equal(position_lengths, tgt_len):
            raise ValueError(
                "position_arrays do not line up with the training split's target positions "
                "(another tokenization, max_length or corpus): rebuild them"
            )
        extra_rts = [tf.RaggedTensor.from_row_lengths(a, tgt_len) for a in position_arrays]

    def make_epoch(epoch: int, input_context: tf.distribute.InputContext | None = None):
        replicas = 1 if input_context is None else input_context.num_replicas_in_sync
        tokens, sentences = _check_batching(max_tokens, batch_size, max_length, replicas)
        batches = plan_epoch(
            src_len, tgt_len, seed=seed, epoch=int(epoch), max_tokens=tokens, batch_size=sentences
        )
        if input_context is not None:
            pipelines = input_context.num_input_pipelines
            per_pipeline = replicas // pipelines
            groups = len(batches) // replicas
            if len(batches) % replicas:
                logger.info(
                    "epoch %d: dropped the last %d of %d batches (not a whole global "
                    "step of %d replicas)",
                    epoch,
                    len(batches) % replicas,
                    len(batches),
                    replicas,
                )
            first = input_context.input_pipeline_id * per_pipeline
            batches = [
                batches[g * replicas + first + r]
                for g in range(groups)
                for r in range(per_pipeline)
            ]
        if not batches:
            raise ValueError(f"epoch {epoch} of {name!r} has no batches; use smaller batches")
        indices = tf.RaggedTensor.from_row_lengths(
            np.concatenate(batches), np.array([len(b) for b in batches], np.int64)
        )
        ds = tf.data.Dataset.from_tensor_slices(indices)
        ds = ds.map(
            _to_batch(source_rt, target_rt, extra_rts),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    return make_epoch


def eval_dataset(
    name: str,
    split: str | None = None,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    **options: Any,
) -> tf.data.Dataset:
    """A split (default: the eval split) as batches of ``batch_size`` sentences, stored order.

    Row i of the concatenated batches is `references(name, split)[i]`'s pair; the last
    batch may be smaller.
    """
    config = _config(name, data_dir, options)
    split = split or config.splits[1]
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    data = _tokenized(config, split)
    source_rt, target_rt = data.ragged()
    ds = tf.data.Dataset.range(len(data)).batch(int(batch_size))
    ds = ds.map(
        _to_batch(source_rt, target_rt), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def references(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    **options: Any,
) -> list[str]:
    """The untokenized target sentences of a split, in `eval_dataset`'s order (for BLEU)."""
    config = _config(name, data_dir, options)
    return list(_raw_split(config, split or config.splits[1])[1])


def sources(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    **options: Any,
) -> list[str]:
    """The untokenized source sentences of a split, in `eval_dataset`'s order."""
    config = _config(name, data_dir, options)
    return list(_raw_split(config, split or config.splits[1])[0])
