"""A joint (source + target) SentencePiece vocabulary, learned once per corpus and reused.

`get_or_learn(directory, key, sentences)` returns a `Vocabulary`:

* If ``directory`` holds a vocabulary learned for the same ``key`` (a JSON-able dict
  describing the corpus and the vocabulary options), it is loaded -- never relearned,
  so every teacher and student of a study tokenizes with the very same model.
* If it holds one learned for a different key, that is a one-line `ValueError` saying
  which directory to delete (deleting it means every model trained with it must be
  retrained: their token ids change).
* Otherwise the vocabulary is learned on ``sentences()`` (the training split, both
  languages) and written as ``directory/spm.model`` + ``directory/vocabulary.json``
  (the key, the size and the fingerprint = SHA-256 of the model proto). The directory
  appears in one `os.rename`, so concurrent processes never see half of one; a process
  that loses the race uses the winner's.

Ids follow the translation contract: 0 = padding, 1 = unknown, 2 = BOS, 3 = EOS.

Why the ``sentencepiece`` trainer and not ``keras_hub.tokenizers.compute_sentence_piece_proto``:
keras_hub's trainer does not expose the special-token ids (it keeps SentencePiece's
defaults unk=0, bos=1, eos=2 and no padding id), so it cannot produce the contract's
ids. The learned proto is then served by ``keras_hub.tokenizers.SentencePieceTokenizer``
(a Keras layer on tensorflow-text ops) for tokenization inside ``tf.data`` and, later,
inside a SavedModel; `Vocabulary.encode`/`decode` use the ``sentencepiece`` package
for Python-side work (BLEU), with the same proto.

Example:
    >>> vocab = get_or_learn("/tmp/v", {"corpus": "toy"}, lambda: ["a b c", "c b a"] * 50,
    ...                      vocab_size=16)
    >>> vocab.decode(vocab.encode(["a b"])[0] + [EOS_ID, 7])
    'a b'
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_FILE = "spm.model"
META_FILE = "vocabulary.json"

logger = logging.getLogger(__name__)


def fingerprint(proto: bytes) -> str:
    """SHA-256 (hex) of a SentencePiece model proto: the vocabulary's identity."""
    return hashlib.sha256(proto).hexdigest()


def learn_proto(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    normalization: str = "nmt_nfkc",
    input_sentence_size: int = 2_000_000,
) -> bytes:
    """Learn a SentencePiece model with the contract's special ids; returns the proto.

    ``vocab_size`` is an upper bound (``hard_vocab_limit=False``): a small corpus gets
    as many pieces as it supports. Training is single-threaded over the sentences in
    their given order (``shuffle_input_sentence=False``), so the same sentences give the
    same proto.
    """
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe", "word", "char"):
        raise ValueError(f"model_type must be unigram, bpe, word or char, got {model_type!r}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=int(vocab_size),
        model_type=model_type,
        character_coverage=character_coverage,
        normalization_rule_name=normalization,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        hard_vocab_limit=False,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


class Vocabulary:
    """A learned SentencePiece vocabulary: its proto, where it lives, its fingerprint.

    Attributes:
        path: the ``spm.model`` file (None for an in-memory vocabulary).
        proto: the serialized model.
        fingerprint: SHA-256 of ``proto``.
        key: what it was learned on (see the module docstring).
    """

    def __init__(self, proto: bytes, *, path: Path | None = None, key: dict | None = None):
        import sentencepiece as spm

        self.proto = proto
        self.path = path
        self.key = key or {}
        self.fingerprint = fingerprint(proto)
        self._processor = spm.SentencePieceProcessor(model_proto=proto)
        if (self._processor.pad_id(), self._processor.unk_id()) != (PAD_ID, UNK_ID) or (
            self._processor.bos_id(),
            self._processor.eos_id(),
        ) != (BOS_ID, EOS_ID):
            where = path or "the given proto"
            raise ValueError(
                f"vocabulary {where} does not use ids pad=0 unk=1 bos=2 eos=3; delete it and "
                "let lskd_tf learn a new one"
            )

    @property
    def size(self) -> int:
        """Number of pieces, special ids included (the models' output size)."""
        return self._processor.get_piece_size()

    def id_to_piece(self, token_id: int) -> str:
        """The piece of an id (``"▁"`` marks a word start)."""
        return self._processor.id_to_piece(int(token_id))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS (Python side; same ids as `tokenizer`)."""
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one id sequence: stops at the first EOS, drops padding/BOS/unknown ids."""
        ids = [int(i) for i in ids]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID)]
        return self._processor.decode([i for i in ids if i > EOS_ID])

    def decode_batch(self, batch) -> list[str]:
        """`decode` of every row of a (B, T) array or list of sequences."""
        return [self.decode(row) for row in batch]

    def tf_tokenizer(self):
        """A new ``keras_hub.tokenizers.SentencePieceTokenizer`` of this proto (no BOS/EOS).

        A Keras layer of tensorflow-text ops: works inside ``tf.data.Dataset.map`` (a batch
        of strings gives a `tf.RaggedTensor` of int32 ids) and inside a SavedModel; called
        eagerly it returns Python lists. A new layer per call, because
        ``keras.backend.clear_session()`` frees the op resources of existing ones.
        """
        import keras_hub

        return keras_hub.tokenizers.SentencePieceTokenizer(proto=self.proto, dtype="int32")

    def __repr__(self) -> str:
        return (
            f"Vocabulary(size={self.size}, fingerprint={self.fingerprint[:12]}, path={self.path})"
        )


def _describe(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def load(directory: str | os.PathLike, key: dict | None = None) -> Vocabulary:
    """The vocabulary stored in ``directory``; with ``key``, checked to be learned for it."""
    directory = Path(directory)
    model_path, meta_path = directory / MODEL_FILE, directory / META_FILE
    if not (model_path.is_file() and meta_path.is_file()):
        raise FileNotFoundError(f"no vocabulary in {directory} ({MODEL_FILE} + {META_FILE})")
    proto = model_path.read_bytes()
    meta = json.loads(meta_path.read_text())
    if fingerprint(proto) != meta.get("fingerprint"):
        raise ValueError(
            f"vocabulary {model_path} does not match the fingerprint in {meta_path} (a partial "
            f"copy or an edit); delete {directory} to learn it again (and retrain its models)"
        )
    if key is not None and meta.get("key") != json.loads(_describe(key)):
        raise ValueError(
            f"the vocabulary in {directory} was learned for {_describe(meta.get('key'))}, not for "
            f"{_describe(key)}; delete {directory} to learn a new one (models trained with the old "
            "one must then be retrained) or use another data_dir/vocab_dir"
        )
    return Vocabulary(proto, path=model_path, key=meta.get("key"))


def get_or_learn(
    directory: str | os.PathLike,
    key: dict[str, Any],
    sentences: Callable[[], Iterable[str]],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    normalization: str = "nmt_nfkc",
) -> Vocabulary:
    """The vocabulary of ``key`` in ``directory``: loaded if stored, else learned once.

    Args:
        directory: where the vocabulary lives (created on first use).
        key: JSON-able description of the corpus (and of these options); a stored
            vocabulary of a different key is an error, never silently replaced.
        sentences: called only when learning; the training sentences of both languages.
        vocab_size, model_type, normalization: SentencePiece options (see `learn_proto`).
    """
    directory = Path(directory)
    key = {
        **key,
        "vocab_size": int(vocab_size),
        "model_type": model_type,
        "normalization": normalization,
    }
    if (directory / META_FILE).is_file():
        return load(directory, key)
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(
            f"{directory} exists but holds no complete vocabulary ({META_FILE} missing); "
            "delete it to learn one there"
        )
    proto = learn_proto(
        sentences(), vocab_size=vocab_size, model_type=model_type, normalization=normalization
    )
    meta = {"key": key, "fingerprint": fingerprint(proto), "size": None}
    vocabulary = Vocabulary(proto, path=directory / MODEL_FILE, key=key)
    meta["size"] = vocabulary.size
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        (staging / MODEL_FILE).write_bytes(proto)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if directory.exists():  # an empty directory (made by hand): rename needs it gone
            directory.rmdir()
        os.rename(staging, directory)
        logger.info("learned vocabulary %s (%d pieces) for %s", directory, meta["size"], key)
    except OSError:  # another process stored one first: use it
        if not (directory / META_FILE).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(directory, key)
