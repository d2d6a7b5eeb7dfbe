"""Translation Transformers, beam search and BLEU (lskd_tf.tasks.translation)."""

import collections
import itertools
import math

import beam_reference
import keras
import numpy as np
import pytest
import sacrebleu
import tensorflow as tf

import lskd_tf
from lskd_tf import _compat
from lskd_tf.tasks.translation import bleu, decoding, models
from lskd_tf.tasks.translation.models import BOS_ID, EOS_ID

VOCAB = 40
NON_DEFAULT = dict(
    normalize_first=True, share_embeddings=False, tie_output=False, positions="learned"
)


def tiny(vocab=VOCAB, max_length=16, seed=0, **overrides) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return models.get("transformer_tiny", vocab, max_length, **overrides)


def logits(model, source, target_in) -> np.ndarray:
    x = {"source": np.asarray(source, np.int32), "target_in": np.asarray(target_in, np.int32)}
    return keras.ops.convert_to_numpy(model(x, training=False))


def expected_non_embedding(spec, d=None) -> int:
    """Parameters of fairseq's layers (biases on every projection, 2 LN params per dim)."""
    d, f = spec.d_model, spec.ffn_dim
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    encoder = attention + ffn + 2 * 2 * d
    decoder = 2 * attention + ffn + 3 * 2 * d
    final = 2 * 2 * d if spec.normalize_first else 0
    return spec.encoder_layers * encoder + spec.decoder_layers * decoder + final


# ----------------------------------------------------------------------------- registry


def test_registry_and_one_line_errors():
    assert set(models.available()) >= {
        "transformer_1x1_128",
        "transformer_2x2_128",
        "transformer_2x2_256",
        "transformer_iwslt_de_en",
        "transformer_quick",
        "transformer_quick_student",
        "transformer_tiny",
    }
    spec = models.describe("Transformer-2x2-256")
    sizes = ("encoder_layers", "decoder_layers", "d_model", "ffn_dim", "num_heads", "dropout")
    assert [getattr(spec, f) for f in sizes] == [2, 2, 256, 1024, 4, 0.3]
    iwslt = models.describe("transformer_iwslt_de_en")
    assert [getattr(iwslt, f) for f in sizes] == [6, 6, 512, 1024, 4, 0.3]
    cases = [
        (lambda: models.describe("transformer_big"), "available: transformer_1x1_128"),
        (lambda: models.get("transformer_tiny", 3, 16), "vocab_size must be an integer >= 5"),
        (lambda: models.get("transformer_tiny", 40, 1), "max_length must be an integer >= 2"),
        (lambda: models.get("transformer_tiny", 40, 16, depth=3), "unknown option(s) depth"),
        (lambda: models.get("transformer_tiny", 40, 16, num_heads=3), "must divide d_model"),
        (lambda: models.get("transformer_tiny", 40, 16, positions="rope"), "unknown positions"),
        (lambda: models.get("transformer_tiny", 40, 16, dropout=1.0), "dropout must be in"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", models.available())
def test_every_model_builds_with_documented_sizes(name):
    spec = models.describe(name)
    model = models.get(name, VOCAB, 16)
    layers = models.Layers.of(model)
    encoders, decoders = layers.stack("encoder"), layers.stack("decoder")
    assert (len(encoders), len(decoders)) == (spec.encoder_layers, spec.decoder_layers)
    for block in encoders + decoders:
        assert (block.intermediate_dim, block.num_heads) == (spec.ffn_dim, spec.num_heads)
        assert block.normalize_first is spec.normalize_first and block.dropout == spec.dropout
    assert layers.embedding("source").output_dim == spec.d_model
    out = model({"source": np.ones((2, 7), np.int32), "target_in": np.ones((2, 5), np.int32)})
    assert tuple(out.shape) == (2, 5, VOCAB) and out.dtype == tf.float32
    counts = models.count_params(model)
    assert counts["non_embedding"] == expected_non_embedding(spec)
    assert counts["embeddings"] == VOCAB * spec.d_model  # one shared, tied matrix


def test_iwslt_matches_fairseq_parameter_count():
    """fairseq transformer_iwslt_de_en --share-decoder-input-output-embed on IWSLT'14
    de-en (dictionaries 8,848 de / 6,632 en) has 39,469,056 parameters: 31,543,296 in
    the layers plus the two embedding tables. Ours: the same layers, and with separate
    embeddings at the same vocabulary the same embedding count."""
    keras.utils.set_random_seed(0)
    model = models.get("transformer_iwslt_de_en", 8848, 64, share_embeddings=False)
    counts = models.count_params(model)
    assert counts["non_embedding"] == 31_543_296
    assert counts["embeddings"] == 2 * 8848 * 512
    fairseq_total = 31_543_296 + 8848 * 512 + 6632 * 512
    assert fairseq_total == 39_469_056


def test_options_change_the_architecture():
    base = tiny()
    other = tiny(**NON_DEFAULT)
    spec = models.describe("transformer_tiny")
    counts = models.count_params(other)
    # Separate source/target embeddings, an untied output projection, learned positions
    # (16 rows per side) and two final LayerNorms.
    assert counts["embeddings"] == 3 * VOCAB * 64
    pre_norm = expected_non_embedding(
        models.TranslationModelSpec(**{**spec.to_dict(), **NON_DEFAULT})
    )
    assert counts["non_embedding"] == pre_norm + 2 * 16 * 64
    assert models.count_params(base)["total"] == VOCAB * 64 + expected_non_embedding(spec)
    assert all(b.normalize_first for b in models.Layers.of(other).stack("decoder"))


def attention_and_other_dropouts(model) -> tuple[list, list[float]]:
    """(the attention layers' probability-dropout rates, the other Dropout layers' rates)."""
    layers = _compat.flatten_layers(model, include_self=False)
    attentions = [layer for layer in layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    inside = {
        id(layer)
        for attention in attentions
        for layer in _compat.flatten_layers(attention, include_self=False)
        if isinstance(layer, keras.layers.Dropout)
    }
    attention_rates = [
        ([d.rate for d in _compat.flatten_layers(a) if isinstance(d, keras.layers.Dropout)],
         a.dropout)
        for a in attentions
    ]  # fmt: skip
    others = [d.rate for d in layers if isinstance(d, keras.layers.Dropout) and id(d) not in inside]
    return attention_rates, others


def test_fairseq_dropout_spares_attention_probabilities_keras_hub_drops_them():
    """fairseq's transformer_iwslt_de_en family (RayeRen/multilingual-kd-pytorch
    fairseq/models/transformer.py): dropout after the embeddings and on each residual
    branch, attention and ReLU dropout 0; keras_hub's blocks drop attention too."""
    for name in models.available():
        fairseq_family = name in ("transformer_iwslt_de_en", "transformer_2x2_256",
                                  "transformer_2x2_128", "transformer_1x1_128")  # fmt: skip
        assert models.describe(name).attention_dropout == (0.0 if fairseq_family else None)
    fairseq, keras_hub = tiny(attention_dropout=0.0), tiny()  # dropout 0.3 both
    attention, others = attention_and_other_dropouts(fairseq)
    # 1 encoder self-attention, decoder self- and cross-attention: probabilities kept
    assert attention == [([0.0], 0.0)] * 3
    # 2 embeddings + encoder (attention, FFN) + decoder (self, cross, FFN) residuals;
    # none inside the feed-forward block (fairseq's relu_dropout 0)
    assert others == [0.3] * 7
    assert attention_and_other_dropouts(keras_hub) == ([([0.3], 0.3)] * 3, [0.3] * 7)
    assert isinstance(models.Layers.of(fairseq)["decoder_layer_0"],
                      models.FairseqTransformerDecoder)  # fmt: skip
    # In training mode the attention sub-layer of the fairseq block computes exactly what
    # it does without dropout; keras_hub's drops probabilities; both blocks drop residuals.
    x = np.random.default_rng(0).normal(size=(2, 6, 64)).astype("float32")
    for model, attention_dropped in ((fairseq, False), (keras_hub, True)):
        block = models.Layers.of(model)["encoder_layer_0"]
        mha = next(layer for layer in _compat.flatten_layers(block)
                   if isinstance(layer, keras.layers.MultiHeadAttention))  # fmt: skip
        trained, inferred = (mha(x, x, training=t).numpy() for t in (True, False))
        assert np.abs(trained - inferred).max() > 1e-3 if attention_dropped else (
            np.abs(trained - inferred).max() < 1e-5)  # fmt: skip
        residual = [keras.ops.convert_to_numpy(block(x, training=t)) for t in (True, False)]
        assert np.abs(residual[0] - residual[1]).max() > 1e-3
    with pytest.raises(ValueError, match="attention_dropout must be in"):
        tiny(attention_dropout=1.0)


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize("options", [{}, NON_DEFAULT], ids=["post_norm", "pre_norm_separate"])
def test_padding_does_not_change_real_logits(options):
    model = tiny(**options)
    source = [[5, 6, 7, 8, 3]]
    target_in = [[BOS_ID, 9, 10, 11]]
    reference = logits(model, source, target_in)
    # Padded source (encoder self-attention and cross-attention) and padded target.
    padded = logits(model, [[5, 6, 7, 8, 3, 0, 0, 0]], [[BOS_ID, 9, 10, 11, 0, 0]])
    np.testing.assert_allclose(padded[:, :4], reference, atol=1e-5)
    # In a batch, the shorter row's padding does not leak either.
    batch = logits(
        model,
        [[5, 6, 7, 8, 3, 0, 0], [12, 13, 14, 15, 16, 17, 3]],
        [[BOS_ID, 9, 10, 11, 0], [BOS_ID, 20, 21, 22, 23]],
    )
    np.testing.assert_allclose(batch[:1, :4], reference, atol=1e-5)
    # The test is sensitive: real tokens in place of the padding do change the logits.
    unpadded = logits(model, [[5, 6, 7, 8, 3, 4, 4, 4]], target_in)
    assert np.abs(unpadded - reference).max() > 1e-3


def test_decoder_is_causal():
    model = tiny()
    rng = np.random.default_rng(0)
    source = rng.integers(4, VOCAB, (2, 6))
    target_in = np.concatenate([np.full((2, 1), BOS_ID), rng.integers(4, VOCAB, (2, 7))], axis=1)
    reference = logits(model, source, target_in)
    for t in range(7):
        changed = target_in.copy()
        changed[:, t + 1 :] = rng.integers(4, VOCAB, changed[:, t + 1 :].shape)
        out = logits(model, source, changed)
        np.testing.assert_allclose(out[:, : t + 1], reference[:, : t + 1], atol=1e-5)
        assert np.abs(out[:, t + 1 :] - reference[:, t + 1 :]).max() > 1e-3


# ----------------------------------------------------------------------------- saving


@pytest.mark.parametrize(
    "options",
    [{}, NON_DEFAULT, {"attention_dropout": 0.0}],
    ids=["default", "non_default", "fairseq_dropout"],
)
def test_save_load_round_trip(tmp_path, options):
    model = tiny(**options)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    source, target_in = [[5, 6, 7, 3, 0]], [[BOS_ID, 8, 9]]
    np.testing.assert_array_equal(
        logits(loaded, source, target_in), logits(model, source, target_in)
    )
    assert models.count_params(loaded) == models.count_params(model)
    # Tied weights stay tied after loading (one matrix, not copies).
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    assert decoding.translate_ids(loaded, source, beam_size=2, max_length=6) == (
        decoding.translate_ids(model, source, beam_size=2, max_length=6)
    )
    assert attention_and_other_dropouts(loaded) == attention_and_other_dropouts(model)


# ----------------------------------------------------------------------------- decoding


def exhaustive(model, source, tokens, max_length, length_penalty):
    """Every hypothesis (tokens then EOS, at most max_length tokens incl. EOS), scored."""
    found = []
    for length in range(max_length):
        for sequence in itertools.product(tokens, repeat=length):
            target_in = [[BOS_ID, *sequence]]
            log_probs = tf.nn.log_softmax(logits(model, [source], target_in)[0]).numpy()
            targets = [*sequence, EOS_ID]
            total = float(sum(log_probs[i, t] for i, t in enumerate(targets)))
            found.append((total / (length + 1) ** length_penalty, list(sequence)))
    return sorted(found, key=lambda pair: -pair[0])


@pytest.fixture(scope="module")
def five_token_model():
    """V=5: only ids 1 (unk) and 4 besides EOS can be generated (0/2 are never)."""
    keras.utils.set_random_seed(3)
    return models.get("transformer_tiny", 5, 8, dropout=0.0)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_equals_exhaustive_search(five_token_model, length_penalty):
    sources = [[4, 1, 4, 3], [1, 1, 3, 0], [4, 3, 0, 0]]
    max_length = 4  # 1 + 2 + 4 + 8 = 15 hypotheses; beam 16 keeps every prefix
    found = decoding.beam_search(
        five_token_model, sources, beam_size=16, max_length=max_length,
        length_penalty=length_penalty,
    )  # fmt: skip
    for source, hypotheses in zip(sources, found):
        truth = exhaustive(five_token_model, source, (1, 4), max_length, length_penalty)
        assert len(hypotheses) == len(truth) == 15
        assert hypotheses[0][1] == truth[0][1]
        assert [ids for _, ids in hypotheses] == [ids for _, ids in truth]
        np.testing.assert_allclose([s for s, _ in hypotheses], [s for s, _ in truth], atol=1e-4)
    best = decoding.translate_ids(
        five_token_model, sources, beam_size=16, max_length=max_length,
        length_penalty=length_penalty,
    )  # fmt: skip
    assert best == [h[0][1] for h in found]


def test_length_penalty_changes_the_choice(five_token_model):
    source = [4, 1, 4, 3]
    short = decoding.translate_ids(five_token_model, [source], beam_size=16, max_length=4,
                                   length_penalty=0.0)[0]  # fmt: skip
    long = decoding.translate_ids(five_token_model, [source], beam_size=16, max_length=4,
                                  length_penalty=4.0)[0]  # fmt: skip
    # Raw log-probability sums favour the shortest hypotheses, a large penalty the longest.
    assert short == exhaustive(five_token_model, source, (1, 4), 4, 0.0)[0][1]
    assert long == exhaustive(five_token_model, source, (1, 4), 4, 4.0)[0][1]
    assert len(short) < len(long) == 3


def test_beam_one_is_the_argmax_of_the_full_model_and_outputs_are_clean():
    """Beam 1 (cached, in the graph) = argmax over full-model calls on the whole prefix."""
    model = tiny(vocab=30, max_length=32, seed=5)
    rng = np.random.default_rng(1)
    sources = rng.integers(4, 30, (6, 9)).astype(np.int32)
    sources[:, -1] = EOS_ID
    sources[2, 5:] = 0
    sources[4, 3:] = 0
    beam_one = decoding.translate_ids(model, sources, beam_size=1, max_length=12)
    assert beam_one == beam_reference.greedy_ids(model, sources, max_length=12)
    for ids in decoding.translate_ids(model, sources, beam_size=4, max_length=12):
        assert len(ids) <= 11 and not set(ids) & {0, BOS_ID, EOS_ID}
    cases = [
        (dict(beam_size=0, max_length=12), "beam_size must be >= 1"),
        (dict(max_length=0), "max_length must be >= 1"),
        (dict(max_length=12, max_len_a=-1.0, max_len_b=2), "max_len_a must be a finite"),
        (dict(max_length=12, max_len_b=2.5), "max_len_b must be an integer"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            decoding.translate_ids(model, sources, **options)
    with pytest.raises(ValueError, match="2-D"):
        decoding.translate_ids(model, sources[0], max_length=12)
    learned = tiny(positions="learned")  # 16 learned positions
    with pytest.raises(ValueError, match="exceeds the model's 16 learned positions"):
        decoding.translate_ids(learned, sources, max_length=17)


def test_cached_search_equals_the_previous_decoder():
    """The one in-graph, key/value-cached beam search gives the previous per-sentence,
    uncached decoder's hypotheses and scores (tests/beam_reference.py), on a model whose
    beams differ from greedy and finish early, for sentences of different lengths."""
    model = tiny(vocab=30, max_length=32, seed=5, **NON_DEFAULT)
    rng = np.random.default_rng(1)
    sources = rng.integers(4, 30, (6, 9)).astype(np.int32)
    sources[:, -1] = EOS_ID
    sources[2, 5:] = 0
    sources[4, 3:] = 0
    reference = beam_reference.Compiled(model)
    greedy = decoding.translate_ids(model, sources, beam_size=1, max_length=12)
    for beam_size, length_penalty in ((2, 1.0), (4, 1.0), (4, 0.5)):
        options = dict(beam_size=beam_size, max_length=12, length_penalty=length_penalty)
        found = decoding.beam_search(model, sources, **options)
        expected = beam_reference.beam_search(reference, sources, **options)
        assert [[ids for _, ids in h] for h in found] == [[ids for _, ids in h] for h in expected]
        for ours, theirs in zip(found, expected):
            np.testing.assert_allclose([s for s, _ in ours], [s for s, _ in theirs], atol=1e-6)
        best = [h[0][1] for h in found]
        assert best != greedy  # the beam matters here
        assert min(map(len, best)) < 11  # some sentences finish before the limit
        assert decoding.translate_ids(model, sources, **options) == best


def test_models_of_one_architecture_share_one_trace_and_keep_their_own_outputs():
    """The search is traced once per architecture and fed each model's weights: models
    decoded alternately each give their own (reference decoder's) hypotheses."""
    first, second = tiny(vocab=30, max_length=32, seed=7), tiny(vocab=30, max_length=32, seed=8)
    assert decoding._compiled(first) is decoding._compiled(second)
    rng = np.random.default_rng(3)
    sources = rng.integers(4, 30, (4, 7)).astype(np.int32)
    sources[:, -1] = EOS_ID
    options = dict(beam_size=3, max_length=10)
    expected = {
        id(model): [h[0][1] for h in beam_reference.beam_search(
            beam_reference.Compiled(model), sources, **options)]
        for model in (first, second)
    }  # fmt: skip
    assert expected[id(first)] != expected[id(second)]
    for model in (first, second, first):
        assert decoding.translate_ids(model, sources, **options) == expected[id(model)]


def test_length_rule_is_per_sentence_and_empty_sources_translate_to_nothing():
    """An untrained model repeats a token until it is stopped: each sentence stops at its
    own limit min(max_length, floor(a * n) + b), alone or batched with any other."""
    model = tiny(vocab=30, max_length=32, seed=5)
    sources = np.zeros((4, 8), np.int32)
    for row, n in enumerate((2, 5, 8, 1)):  # tokens incl. EOS
        sources[row, : n - 1] = 7 + row
        sources[row, n - 1] = EOS_ID
    limits = decoding.length_limits(sources, 12, 1.5, 2).numpy()
    assert limits.tolist() == [5, 9, 12, 0]  # floor(1.5 n) + 2, capped at 12; EOS alone: 0
    assert decoding.length_limits(sources, 12).numpy().tolist() == [12, 12, 12, 0]
    options = dict(beam_size=3, max_length=12, max_len_a=1.5, max_len_b=2)
    batched = decoding.translate_ids(model, sources, **options)
    assert [len(ids) for ids in batched] == [4, 8, 11, 0]  # runaways: limit - 1 (+ EOS)
    for row, ids in enumerate(batched):
        assert decoding.translate_ids(model, sources[row : row + 1], **options) == [ids]
    assert decoding.translate_ids(model, sources[[3, 0]], **options) == [[], batched[0]]
    assert decoding.beam_search(model, [[EOS_ID, 0], [0, 0]], max_length=12) == [[], []]


# ----------------------------------------------------------------------------- BLEU


def test_bleu_equals_sacrebleu():
    hypotheses = ["the cat sat on the mat .", "a dog barks loudly", "hello world"]
    references = ["the cat sat on a mat .", "the dog barks loudly", "hello , world !"]
    score, signature = bleu.corpus_bleu(hypotheses, references)
    assert score == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9)
    assert 0 < score < 100
    version = sacrebleu.__version__
    assert signature == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{version}"
    assert bleu.corpus_bleu(references, references)[0] == pytest.approx(100.0)
    assert bleu.corpus_bleu(["a b c d e"], ["v w x y z"])[0] == 0.0
    lowered, lc_signature = bleu.corpus_bleu(
        ["The Cat sat on The Mat"], ["the cat sat on the mat"], lowercase=True
    )
    assert lowered == pytest.approx(100.0) and "case:lc" in lc_signature
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu.corpus_bleu(["a", "b"], ["a"])


def fairseq_bleu(hypotheses: list[str], references: list[str]) -> float:
    """A transcription of the papers' scorer: RayeRen/multilingual-kd-pytorch
    fairseq/trainer.py ``test_bleu`` (whitespace tokens of the BPE-removed text) and
    fairseq/bleu.py ``Scorer`` (clipped n-gram matches 1-4 summed over the corpus,
    precision 0 -> BLEU 0, brevity min(1, exp(1 - reflen / predlen)), no smoothing)."""
    match, count, reflen, predlen = [0] * 4, [0] * 4, 0, 0
    for hypothesis, reference in zip(hypotheses, references):
        hyp, ref = hypothesis.split(), reference.split()
        reflen, predlen = reflen + len(ref), predlen + len(hyp)
        for n in range(1, 5):
            grams = collections.Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            ref_grams = collections.Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
            match[n - 1] += sum(min(c, ref_grams[g]) for g, c in grams.items())
            count[n - 1] += max(len(hyp) - n + 1, 0)
    precision = [m / c if c > 0 else 0 for m, c in zip(match, count)]
    psum = sum(math.log(p) if p > 0 else float("-inf") for p in precision)
    return min(1, math.exp(1 - reflen / predlen)) * math.exp(psum / 4) * 100


# IWSLT'14 as prepare-iwslt14.sh leaves it: Moses-tokenized (escapes), lowercased.
MOSES_REFERENCES = [
    "it &apos;s a &quot; well @-@ known &quot; cat , isn &apos;t it ?",
    "we &apos;re here &amp; there , and the cats are over there .",
]
MOSES_HYPOTHESES = [
    "it &apos;s a well @-@ known cat , is it ?",
    "we are here &amp; there , and cats are there .",
]


def test_bleu_of_moses_text_is_detokenized_and_tokenized_bleu_is_fairseqs():
    scores = bleu.score(MOSES_HYPOTHESES, MOSES_REFERENCES, text_format="moses", language="en")
    # val_bleu: sacreBLEU 13a on the detokenized text, escapes undone (written out by hand)
    references = ['it\'s a "well-known" cat, isn\'t it?', "we're here & there, and the cats "
                  "are over there."]  # fmt: skip
    hypotheses = ["it's a well-known cat, is it?", "we are here & there, and cats are there."]
    assert bleu.detokenized(MOSES_REFERENCES, "moses", "en") == references
    assert bleu.detokenized(MOSES_HYPOTHESES, "moses", "en") == hypotheses
    assert scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9
    )
    assert scores["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    # 13a on the escaped text splits &apos; into "& apos ;", three tokens that always match
    escaped = sacrebleu.corpus_bleu(MOSES_HYPOTHESES, [MOSES_REFERENCES]).score
    assert escaped > scores["bleu"] + 1
    # val_bleu_tokenized: the tokenized text as is, sacreBLEU without tokenizer or smoothing
    tokenized = sacrebleu.corpus_bleu(
        MOSES_HYPOTHESES, [MOSES_REFERENCES], tokenize="none", smooth_method="none"
    ).score
    assert scores["bleu_tokenized"] == pytest.approx(tokenized, abs=1e-9)
    assert scores["bleu_tokenized"] == pytest.approx(
        fairseq_bleu(MOSES_HYPOTHESES, MOSES_REFERENCES), abs=1e-9
    )
    assert 0 < scores["bleu_tokenized"] < 100
    assert scores["tokenized_signature"].startswith(
        "nrefs:1|case:mixed|eff:no|tok:none|smooth:none"
    )
    # no smoothing, as fairseq: a missing 4-gram match gives 0 (sacreBLEU's default would not)
    assert bleu.tokenized_bleu(["a b c d e"], ["a b c x e"])[0] == fairseq_bleu(
        ["a b c d e"], ["a b c x e"]) == 0.0  # fmt: skip


def test_bleu_of_raw_text_moses_tokenizes_it_for_tokenized_bleu():
    references = ["It's a well-known cat, isn't it?", "Cats & dogs [sic] are here."]
    hypotheses = ["It's a well-known dog, isn't it?", "Cats & dogs are here."]
    scores = bleu.score(hypotheses, references, text_format="raw", language="en")
    assert scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9
    )
    # as fairseq's prepare-wmt14en2de.sh (tokenizer.perl -a), written out by hand
    tokenized = ["It &apos;s a well @-@ known cat , isn &apos;t it ?",
                 "Cats &amp; dogs &#91; sic &#93; are here ."]  # fmt: skip
    assert bleu.moses_tokenized(references, "raw", "en") == tokenized
    expected = sacrebleu.corpus_bleu(
        bleu.moses_tokenized(hypotheses, "raw", "en"), [tokenized], tokenize="none",
        smooth_method="none",
    ).score  # fmt: skip
    assert scores["bleu_tokenized"] == pytest.approx(expected, abs=1e-9) and expected > 0
    with pytest.raises(ValueError, match="unknown text format 'sgml' for BLEU; choose one of"):
        bleu.score(hypotheses, references, text_format="sgml", language="en")


# ----------------------------------------------------------------------------- precision, KD


def test_mixed_bfloat16_logits_stay_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    for options in ({}, {"tie_output": False}):
        model = tiny(**options)
        out = model({"source": np.ones((2, 5), np.int32), "target_in": np.ones((2, 4), np.int32)})
        assert out.dtype == tf.float32 and np.isfinite(out.numpy()).all()
        layers = models.Layers.of(model)
        assert layers.stack("decoder")[0].compute_dtype == "bfloat16"
    assert len(decoding.translate_ids(model, [[5, 6, 3]], beam_size=2, max_length=5)) == 1


def test_distiller_trains_on_token_batches_with_padding_mask():
    teacher, student = tiny(seed=1), tiny(seed=2, d_model=32, ffn_dim=64)
    distiller = lskd_tf.Distiller(teacher, student, lskd_tf.DistillSpec(temperature=2.0))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = {
        "source": np.array([[5, 6, 3, 0], [7, 8, 9, 3]], np.int32),
        "target_in": np.array([[BOS_ID, 10, 0], [BOS_ID, 11, 12]], np.int32),
    }
    y = np.array([[10, EOS_ID, 0], [11, 12, EOS_ID]], np.int32)
    weight = (y != 0).astype(np.float32)
    before = [w.numpy().copy() for w in teacher.weights]
    logs = distiller.train_on_batch(x, y, sample_weight=weight, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, teacher.weights))


SENTENCES = ["the small dog runs home", "a cat sleeps on the warm mat", "dogs and cats",
             "the old man reads a long book in the garden every day"]  # fmt: skip


@pytest.mark.parametrize(
    "options, beam_size, length_penalty",
    [({}, 1, 1.0), (NON_DEFAULT, 1, 1.0), ({}, 3, 1.0), (NON_DEFAULT, 4, 0.5)],
    ids=["greedy", "greedy_non_default", "beam3", "beam4_lp0.5_non_default"],
)
def test_exported_translate_maps_strings_to_the_python_decoders_translations(
    tmp_path, options, beam_size, length_penalty
):
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops for loading)

    from lskd_tf.tasks.translation import serving, tokenizer

    vocab = tokenizer.get_or_learn(
        tmp_path / "vocab", {"corpus": "export test"}, lambda: SENTENCES * 30, vocab_size=48
    )
    model = tiny(vocab=vocab.size, max_length=32, **options)
    max_length = 6  # the last sentence is truncated, as the training data would be
    serving.export(model, vocab, tmp_path / "mt", max_length=max_length, beam_size=beam_size,
                   length_penalty=length_penalty)  # fmt: skip
    loaded = tf.saved_model.load(str(tmp_path / "mt"))
    sentences = [*SENTENCES, ""]
    out = loaded.signatures["translate"](sentences=tf.constant(sentences))
    got = [text.decode() for text in out["translations"].numpy()]
    # The Python path: the same pieces, truncated before EOS, decoded, detokenized.
    pieces = vocab.encode(sentences)
    rows = [ids[: max_length - 1] + [EOS_ID] for ids in pieces]
    source = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, row in enumerate(rows):
        source[i, : len(row)] = row
    expected = vocab.decode_batch(decoding.translate_ids(
        model, source, beam_size=beam_size, max_length=max_length,
        length_penalty=length_penalty))  # fmt: skip
    assert got == expected and any(got)
    assert got[-1] == ""  # an empty sentence translates to nothing
    truncated = out["truncated"].numpy().tolist()
    assert truncated == [len(ids) > max_length - 1 for ids in pieces]
    assert truncated[3] and not truncated[-1]
    source = source[:-1]
    # The logits signature is the model itself; model.keras and spm.model sit beside it.
    target_in = np.full((len(source), 3), BOS_ID, np.int32)
    exported = loaded.signatures["logits"](source=tf.constant(source),
                                           target_in=tf.constant(target_in))["logits"]  # fmt: skip
    np.testing.assert_allclose(exported.numpy(), logits(model, source, target_in), atol=1e-5)
    reloaded = keras.models.load_model(tmp_path / "mt" / "model.keras")
    expected_logits = logits(model, source, target_in)
    np.testing.assert_array_equal(logits(reloaded, source, target_in), expected_logits)
    assert (tmp_path / "mt" / "spm.model").read_bytes() == vocab.proto


def test_exported_translations_do_not_depend_on_the_batch(tmp_path):
    """Issue #25: an untrained model's outputs run away. Through the export, every
    sentence stops at its own limit (here floor(0.5 n) + 3 tokens, EOS included), alone
    or in any batch, and equals the Python (BLEU) path's translation."""
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops for loading)

    from lskd_tf.tasks.translation import serving, tokenizer

    vocab = tokenizer.get_or_learn(
        tmp_path / "vocab", {"corpus": "export test"}, lambda: SENTENCES * 30, vocab_size=48
    )
    model = tiny(vocab=vocab.size, max_length=32, seed=5)
    rule = dict(beam_size=2, max_length=24, max_len_a=0.5, max_len_b=3)
    serving.export(model, vocab, tmp_path / "mt", **rule)
    translate = tf.saved_model.load(str(tmp_path / "mt")).signatures["translate"]

    def exported(sentences: list[str]) -> list[str]:
        found = translate(sentences=tf.constant(sentences))["translations"].numpy()
        return [text.decode() for text in found]

    sentences = [*SENTENCES, "", "dogs"]
    pieces = [ids[:23] + [EOS_ID] for ids in vocab.encode(sentences)]
    ids = []
    for row in pieces:  # the BLEU path, one sentence at a time
        ids += decoding.translate_ids(model, np.asarray([row], np.int32), **rule)
    limits = [len(row) // 2 + 3 if len(row) > 1 else 0 for row in pieces]
    runaways = sum(len(found) == limit - 1 for found, limit in zip(ids, limits) if limit)
    assert runaways >= 3 and all(len(f) <= max(limit - 1, 0) for f, limit in zip(ids, limits))
    expected = vocab.decode_batch(ids)
    assert exported(sentences) == expected
    assert exported(sentences[::-1]) == expected[::-1]
    assert [exported([s])[0] for s in sentences] == expected
    assert exported(sentences[3:] + sentences[:1]) == expected[3:] + expected[:1]


def test_export_refuses_a_vocabulary_of_another_size(tmp_path):
    from lskd_tf.tasks.translation import serving, tokenizer

    vocab = tokenizer.get_or_learn(
        tmp_path / "vocab", {"corpus": "export test"}, lambda: SENTENCES * 30, vocab_size=48
    )
    with pytest.raises(ValueError, match="predicts 40 tokens but the vocabulary"):
        serving.export(tiny(), vocab, tmp_path / "mt", max_length=8)


def _uneven_token_batches():
    """Two global batches of 4 sentences: the first two rows (replica 0 under two
    replicas) hold 1-2 real target tokens, the last two hold 6-7, so a per-replica mean
    would weigh tokens unequally."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        lengths = [1, 2, 6, 7]
        y = np.zeros((4, 8), np.int32)
        for row, n in enumerate(lengths):
            y[row, : n - 1] = rng.integers(4, VOCAB, n - 1)
            y[row, n - 1] = EOS_ID
        target_in = np.concatenate([np.full((4, 1), BOS_ID), y[:, :-1]], axis=1) * (y != 0)
        target_in[:, 0] = BOS_ID
        source = rng.integers(4, VOCAB, (4, 6)).astype(np.int32)
        source[:, -1] = EOS_ID
        batches.append(({"source": source, "target_in": target_in.astype(np.int32)}, y,
                        (y != 0).astype(np.float32)))  # fmt: skip
    x = {k: np.concatenate([b[0][k] for b in batches]) for k in ("source", "target_in")}
    y = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4)


def test_token_masked_training_on_two_replicas_equals_one_device(mirrored_strategy):
    """Teacher (label-smoothed CE) and student (CE + KD) steps on token batches whose
    replicas hold different numbers of real tokens: 2 logical CPUs == 1 device."""
    data = _uneven_token_batches()

    def train(strategy):
        with strategy.scope():
            teacher = tiny(seed=1, dropout=0.0)
            teacher.compile(optimizer=keras.optimizers.SGD(0.5),
                            loss=lskd_tf.SmoothedCrossEntropy(0.1))  # fmt: skip
            teacher.fit(data, epochs=2, verbose=0, shuffle=False)
            student = tiny(seed=2, dropout=0.0, d_model=32, ffn_dim=64)
            spec = lskd_tf.DistillSpec(temperature=2.0, ce_weight=0.5, label_smoothing=0.1)
            distiller = lskd_tf.Distiller(teacher, student, spec)
            distiller.compile(optimizer=keras.optimizers.SGD(0.5))
            logs = distiller.fit(data, epochs=2, verbose=0, shuffle=False).history
        return [w.numpy() for w in teacher.weights + student.weights], logs

    one, logs_one = train(tf.distribute.get_strategy())
    two, logs_two = train(mirrored_strategy)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    assert largest < 1e-5, largest
    for key in ("ce_loss", "kd_loss"):
        np.testing.assert_allclose(logs_one[key], logs_two[key], rtol=1e-5)


def test_sparse_topk_kd_on_two_replicas_equals_one_device(mirrored_strategy):
    """kd_loss="topk_kl" from a cached sparse top-4 teacher (`sparse_teacher` in x), on
    token batches whose replicas hold different numbers of real tokens: the student's
    weights after two epochs on 2 logical CPUs equal one device's (global masked mean)."""
    from lskd_tf.distiller import with_teacher_logits
    from lskd_tf.losses import sparse_teacher

    teacher = tiny(seed=1, dropout=0.0)
    x, y, w = next(iter(_uneven_token_batches().unbatch().batch(8)))  # both global batches
    top_logits, top_ids = tf.math.top_k(teacher(x, training=False), 4)
    cached_x = with_teacher_logits(x, sparse_teacher(top_ids, top_logits))
    data = tf.data.Dataset.from_tensor_slices((cached_x, y, w)).batch(4)
    spec = lskd_tf.DistillSpec(temperature=2.0, kd_loss="topk_kl", kd_topk=4, kd_weight=0.9,
                               ce_weight=0.1, label_smoothing=0.1)  # fmt: skip

    def train(strategy):
        with strategy.scope():
            distiller = lskd_tf.Distiller(tiny(seed=1, dropout=0.0),
                                          tiny(seed=2, dropout=0.0, d_model=32, ffn_dim=64),
                                          spec)  # fmt: skip
            distiller.compile(optimizer=keras.optimizers.SGD(0.5))
            logs = distiller.fit(data, epochs=2, verbose=0, shuffle=False).history
        return [w.numpy() for w in distiller.student.weights], logs

    one, logs_one = train(tf.distribute.get_strategy())
    two, logs_two = train(mirrored_strategy)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    assert largest < 1e-5, largest
    assert logs_one["kd_loss"][0] > 0
    np.testing.assert_allclose(logs_one["kd_loss"], logs_two["kd_loss"], rtol=1e-5)
