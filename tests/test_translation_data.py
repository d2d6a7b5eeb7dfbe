"""Translation data: the embedded corpus, the vocabulary, batches, text files and TFDS."""

import os

import numpy as np
import pytest
import tensorflow as tf

from lskd_tf.data.info import DataNotFoundError
from lskd_tf.tasks.translation import corpus, tokenizer
from lskd_tf.tasks.translation import data as mt

SMALL = {"train_size": 600, "valid_size": 40, "test_size": 30, "vocab_size": 300}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mt_cache")


@pytest.fixture(scope="module")
def info(cache_dir):
    return mt.get_info("embedded", data_dir=cache_dir, **SMALL)


# ---------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic_per_seed():
    a = corpus.generate("train", size=50, data_seed=3)
    b = corpus.generate("train", size=50, data_seed=3)
    c = corpus.generate("train", size=50, data_seed=4)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]
    assert corpus.generate("test", size=50, data_seed=3)[0] != a[0]  # splits differ


def _parse(lexicon, sentence_words):
    """Source words -> their roles, for the grammar checks."""
    kinds = {}
    for family, (kind, sources, _, hyper) in enumerate(lexicon.families):
        for k, word in enumerate(sources):
            kinds[word] = (kind, family, k)
        if hyper:
            kinds[hyper] = (kind, family, None)
    return [kinds.get(w, ("function", None, None)) for w in sentence_words]


def test_grammar_word_order_agreement_and_synonyms():
    lexicon = corpus.build_lexicon(0)
    sources, targets = corpus.generate("train", size=300, ambiguity=0.0)
    gender = lexicon.gender
    verb_suffix = ("zo", "ze", "zod", "zed")
    adj_suffix = ("o", "e", "od", "ed")
    adjectives = {
        s: f
        for f, (k, _, stems, _) in enumerate(lexicon.families)
        if k == "adjective"
        for s in stems
    }
    for src, tgt in zip(sources, targets):
        s_words, t_words = src.split(), tgt.split()
        assert len(s_words) == len(t_words)
        roles = _parse(lexicon, s_words)
        # SVO -> SOV: the source verb follows the subject; the target ends with the verb.
        verb_pos = [i for i, r in enumerate(roles) if r[0] == "verb"]
        assert len(verb_pos) == 1 and verb_pos[0] < len(s_words) - 1
        kind, family, member = roles[verb_pos[0]]
        stem = lexicon.families[family][2][member]
        assert t_words[-1].startswith(stem)  # the same synonym (no ambiguity here)
        # Subject: target starts with the subject noun; the verb agrees with it.
        subject = next(r for r in roles if r[0] == "noun")
        noun_stem = lexicon.families[subject[1]][2][subject[2]]
        plural = s_words[0] in (lexicon.source_determiners[0][1], lexicon.source_determiners[1][1])
        assert t_words[0] == noun_stem + ("ez" if plural else "")
        assert t_words[-1] == stem + verb_suffix[2 * plural + gender[noun_stem]]
        # Adjective-noun order swapped and agreement: adjectives right after the subject noun.
        for word in t_words[1:]:
            matches = [
                a for a in adjectives if word[: len(a)] == a and word[len(a) :] in adj_suffix
            ]
            if not matches:
                break
            assert word == matches[0] + adj_suffix[2 * plural + gender[noun_stem]]
        assert roles[0][0] == "function" and t_words[0] not in s_words  # det first vs noun first


def test_family_map_and_ambiguity():
    lexicon = corpus.build_lexicon(0)
    words = lexicon.target_word_families()
    for family, (kind, sources, stems, _) in enumerate(lexicon.families):
        assert len(sources) == len(stems) == (2 if kind == "adverb" else 3)
        for stem in stems:
            for form in corpus.target_forms(kind, stem):
                assert words[form] == family
    sources, targets = corpus.generate("test", size=400)
    oracle = corpus.oracle_translations("test", size=400)
    assert oracle != targets
    # Oracle differs only in sentences with an ambiguous word, and within families only.
    hypernyms = {f[3] for f in lexicon.families if f[3]}
    for src, ref, best in zip(sources, targets, oracle):
        if ref != best:
            assert hypernyms & set(src.split())
            for r, b in zip(ref.split(), best.split()):
                if r != b and r in words and b in words:
                    assert words[r] == words[b]
    assert (
        corpus.oracle_translations("test", size=50, ambiguity=0.0)
        == corpus.generate("test", size=50, ambiguity=0.0)[1]
    )


# ---------------------------------------------------------------------------- vocabulary


def test_info_and_token_families(info):
    assert info.num_classes == info.vocab_size <= SMALL["vocab_size"]
    assert info.num_examples == {"train": 600, "valid": 40, "test": 30}
    assert (info.train_split, info.eval_split, info.test_split) == ("train", "valid", "test")
    assert mt.TranslationInfo.from_dict(info.to_dict()) == info
    vocab = info.vocabulary()
    assert [vocab.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    families = np.array(info.token_families)
    assert (families[:4] == -1).all() and (families >= 0).sum() > 20
    lexicon = corpus.build_lexicon(0)
    for word, family in lexicon.target_word_families().items():
        first = vocab.encode([word])[0][0]
        assert families[first] in (family, -1)


def test_vocabulary_learned_once_and_checked(cache_dir, info):
    path = info.tokenizer_path
    mtime = os.stat(path).st_mtime_ns
    mt._vocabulary_cached.cache_clear()
    again = mt.get_info("embedded", data_dir=cache_dir, **SMALL)
    assert os.stat(path).st_mtime_ns == mtime
    assert again.tokenizer_fingerprint == info.tokenizer_fingerprint
    assert again.tokenizer_fingerprint == tokenizer.fingerprint(open(path, "rb").read())
    # Other corpus options -> another directory; forcing the same one is an error.
    vocab_dir = os.path.dirname(path)
    with pytest.raises(ValueError, match=f"delete {vocab_dir}"):
        mt.get_info(
            "embedded", data_dir=cache_dir, vocab_dir=vocab_dir, **{**SMALL, "data_seed": 1}
        )


def test_tokenizer_round_trip(info):
    vocab = info.vocabulary()
    text = corpus.generate("valid", size=5)[1]
    ids = vocab.encode(text)
    tf_ids = vocab.tf_tokenizer()(tf.constant(text))
    assert tf_ids == ids  # eager keras_hub tokenizers return Python lists
    assert vocab.decode_batch([row + [tokenizer.EOS_ID, 9, 9] for row in ids]) == text


# ---------------------------------------------------------------------------- batches


def _collect(dataset):
    rows = []
    for x, y, w in dataset:
        source, target_in, y, w = (a.numpy() for a in (x["source"], x["target_in"], y, w))
        assert source.dtype == target_in.dtype == y.dtype == np.int32 and w.dtype == np.float32
        assert target_in.shape == y.shape == w.shape and source.shape[0] == y.shape[0]
        for s, ti, yy, ww in zip(source, target_in, y, w):
            n = int((yy != 0).sum())
            assert (ww == (yy != 0)).all() and ww[:n].all()
            assert yy[n - 1] == tokenizer.EOS_ID and ti[0] == tokenizer.BOS_ID
            assert (ti[1:n] == yy[: n - 1]).all() and (ti[n:] == 0).all()
            m = int((s != 0).sum())
            assert s[m - 1] == tokenizer.EOS_ID and (s[m:] == 0).all()
            rows.append((tuple(s[:m]), tuple(yy[:n])))
    return rows


def test_token_budget_batches_cover_every_example_once(cache_dir, info):
    fn = mt.train_fn("embedded", data_dir=cache_dir, max_tokens=600, seed=7, **SMALL)
    epoch0 = list(fn(0))
    for x, y, _ in epoch0:  # fairseq's rule: sentences x longest side
        assert x["source"].shape[0] * max(x["source"].shape[1], y.shape[1]) <= 600
    rows = _collect(epoch0)
    expected = _collect(
        mt.eval_dataset("embedded", "train", batch_size=64, data_dir=cache_dir, **SMALL)
    )
    assert sorted(rows) == sorted(expected) and len(rows) == 600
    again = _collect(
        mt.train_fn("embedded", data_dir=cache_dir, max_tokens=600, seed=7, **SMALL)(0)
    )
    assert again == rows  # resumable: same (seed, epoch), same batches
    epoch1 = _collect(fn(1))
    assert sorted(epoch1) == sorted(rows) and epoch1 != rows  # reshuffled


def test_sentence_batches_and_eval_order(cache_dir, info):
    fn = mt.train_fn("embedded", data_dir=cache_dir, batch_size=64, seed=0, **SMALL)
    sizes = [int(y.shape[0]) for _, y, _ in fn(0)]
    assert sizes == [64] * 9 + [24]
    vocab = info.vocabulary()
    decoded = []
    for x, y, _ in mt.eval_dataset("embedded", batch_size=16, data_dir=cache_dir, **SMALL):
        decoded += vocab.decode_batch(y.numpy())
        sources = vocab.decode_batch(x["source"].numpy())
    assert decoded == mt.references("embedded", "valid", data_dir=cache_dir, **SMALL)
    assert sources == mt.sources("embedded", data_dir=cache_dir, **SMALL)[-len(sources) :]
    with pytest.raises(ValueError, match="exactly one"):
        mt.train_fn("embedded", data_dir=cache_dir, seed=0, **SMALL)(0)


def test_input_context_shards_are_disjoint(cache_dir, info):
    fn = mt.train_fn("embedded", data_dir=cache_dir, max_tokens=1200, seed=1, **SMALL)
    whole = [int(y.shape[0]) for _, y, _ in fn(0)]
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        rows = _collect(fn(0, context))
        for x, y, _ in fn(0, context):
            assert x["source"].shape[0] * max(x["source"].shape[1], y.shape[1]) <= 600
        shards.append(rows)
    assert len(shards[0]) > 0 and len(shards[1]) > 0
    assert not set(shards[0]) & set(shards[1])
    assert len(shards[0]) + len(shards[1]) <= 600 and len(whole) > 0


def test_truncation_never_crashes(cache_dir, caplog):
    options = {**SMALL, "max_length": 8}
    with caplog.at_level("WARNING"):
        batches = list(
            mt.train_fn("embedded", data_dir=cache_dir, batch_size=100, seed=0, **options)(0)
        )
    assert all(x["source"].shape[1] <= 8 and y.shape[1] <= 8 for x, y, _ in batches)
    assert "truncated" in caplog.text and "max_length=8" in caplog.text


# ---------------------------------------------------------------------------- real data


def _write(directory, split, de, en):
    (directory / f"{split}.de").write_bytes(de)
    (directory / f"{split}.en").write_bytes(en)


def _toy_text(directory):
    de = "".join(f"das haus {i} ist klein\n" for i in range(60)).encode()
    en = "".join(f"the house {i} is small\n" for i in range(60)).encode()
    for split in ("train", "valid", "test"):
        _write(directory, split, de, en)


def test_text_files_load_and_errors(tmp_path):
    _toy_text(tmp_path)
    opts = {"vocab_size": 60}
    info = mt.get_info("iwslt14", data_dir=tmp_path, **opts)
    assert info.num_examples == {"train": 60, "valid": 60, "test": 60}
    assert (info.source_language, info.target_language) == ("de", "en")
    assert mt.references("iwslt14", "test", data_dir=tmp_path, **opts)[3] == "the house 3 is small"
    reversed_ = mt.sources(
        "text", "valid", data_dir=tmp_path, source_language="en", target_language="de", **opts
    )
    assert reversed_[0] == "the house 0 is small"

    _write(tmp_path, "valid", b"a\nb\nc\n", b"a\nb\n")
    with pytest.raises(ValueError, match=r"valid\.de has 3 lines, .*valid\.en has 2"):
        mt.references("iwslt14", "valid", data_dir=tmp_path, **opts)
    _write(tmp_path, "test", b"a\n\xff\xfe\nc\n\nd\n", b"a\nb\nc\nd\ne\n")
    with pytest.raises(ValueError, match=r"test\.de: 1 non-UTF-8 line\(s\) \(line 2\).*1 empty"):
        mt.references("iwslt14", "test", data_dir=tmp_path, **opts)
    kept = mt.references("iwslt14", "test", data_dir=tmp_path, bad_lines="skip", **opts)
    assert kept == ["a", "c", "e"]


def test_missing_text_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="prepare-iwslt14.sh") as error:
        mt.get_info("iwslt14", data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)
    _toy_text(tmp_path)
    (tmp_path / "train.de").write_text("das haus@@ chen\n" * 60)
    with pytest.raises(ValueError, match="BPE"):
        mt.get_info("iwslt14", data_dir=tmp_path)


def test_wmt14_from_tfds_mock(tmp_path):
    import tensorflow_datasets as tfds

    with pytest.raises(DataNotFoundError, match="tfds build wmt14_translate/de-en"):
        mt.get_info("wmt14_translate/de-en", data_dir=tmp_path)
    with tfds.testing.mock_data(num_examples=40):
        info = mt.get_info("wmt14_translate/de-en", data_dir=tmp_path, vocab_size=80, max_length=16)
        assert info.num_examples["train"] == 40 and info.eval_split == "validation"
        refs = mt.references(
            "wmt14_translate/de-en", "test", data_dir=tmp_path, vocab_size=80, max_length=16
        )
        batches = list(
            mt.eval_dataset(
                "wmt14_translate/de-en",
                "test",
                batch_size=16,
                data_dir=tmp_path,
                vocab_size=80,
                max_length=16,
            )
        )
    assert sum(int(y.shape[0]) for _, y, _ in batches) == len(refs) == 40
    assert all(y.shape[1] <= 16 for _, y, _ in batches)
    assert (tmp_path / "lskd_tf_vocab").is_dir()
