"""The translation task end to end: a tiny LS x KD study through sweep and results."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sacrebleu
import tensorflow as tf
from conftest import StopAtEpoch
from sacremoses import MosesTokenizer

import lskd_tf
from lskd_tf import experiment, results, sweep, tasks
from lskd_tf.run_dir import RunDir
from lskd_tf.tasks.translation import data

TRAIN = lskd_tf.TrainConfig(epochs=2, batch_size=32, optimizer="adam", learning_rate=2e-3,
                            schedule="cosine", weight_decay=0.0, verbose=0)  # fmt: skip
DATA = experiment.DataSpec(
    name="embedded",
    options=(("train_size", 256), ("valid_size", 32), ("test_size", 32), ("beam_size", 2),
             ("bleu_sentences", 16)),
)  # fmt: skip


def study(**changes):
    spec = dict(
        task="translation", teacher_models=("transformer_tiny",), teacher_smoothings=(0.0, 0.1),
        student_models=("transformer_tiny",), temperatures=(2.0,), seeds=(0,),
        teacher_train=TRAIN, student_train=TRAIN, data=DATA,
    )  # fmt: skip
    return experiment.StudySpec(**{**spec, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    env = experiment.RunEnv(output_dir=str(root), study="mt", tensorboard_dir=str(root / "tb"))
    specs = experiment.plan_study(study())
    return env, specs, sweep.run_study(specs, env)


def test_a_translation_study_records_bleu_of_best_and_last(finished):
    env, specs, run_dirs = finished
    assert all(RunDir(d).is_finished() for d in run_dirs)
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    for spec in specs:
        recorded = RunDir(env.run_dir(spec)).read()
        assert recorded["headline"] == "bleu" and "bleu" in recorded["metrics"]
        assert recorded["last"]["bleu_signature"].startswith("nrefs:1|case:mixed")
        # BLEU is sacreBLEU's on the detokenized beam-search output of last.keras.
        model = task.load_model(RunDir(env.run_dir(spec)).checkpoint("last"), info)
        decoded = task.translate(model, DATA, info)
        assert len(decoded["hypotheses"]) == 16
        expected = sacrebleu.corpus_bleu(decoded["hypotheses"], [decoded["references"]]).score
        # named by its split (the test split by default), not val_bleu
        assert recorded["last"]["bleu_split"] == info.test_split == "test"
        assert "val_bleu" not in recorded["last"]
        assert recorded["last"]["test_bleu"] == pytest.approx(expected / 100, abs=1e-9)
        # and fairseq's tokenized BLEU of the same text, Moses-tokenized (raw text here)
        moses = MosesTokenizer(lang=info.target_language)
        hypotheses, references = (
            [moses.tokenize(t, return_str=True, aggressive_dash_splits=True) for t in texts]
            for texts in (decoded["hypotheses"], decoded["references"])
        )
        tokenized = sacrebleu.corpus_bleu(
            hypotheses, [references], tokenize="none", smooth_method="none"
        ).score
        assert recorded["last"]["test_bleu_tokenized"] == pytest.approx(tokenized / 100, abs=1e-9)
        assert "bleu_tokenized" in recorded["metrics"] and recorded["last"]["bleu_text"] == "raw"
        assert "|tok:none|smooth:none|" in recorded["last"]["bleu_tokenized_signature"]
        assert recorded["metric_labels"] == task.metric_labels


def test_the_tables_show_bleu_with_paired_differences(finished):
    env, _, run_dirs = finished
    runs = results.collect_runs(run_dirs)
    assert results.headline(runs) == "bleu"
    table = results.student_table(runs)
    assert list(table.index) == [("transformer_tiny", "2")]
    student = RunDir(env.study_dir / "student-transformer_tiny-T2-seed0-from-transformer_tiny-"
                     "ls0.1-seed0").read()  # fmt: skip
    cell = float(table.loc[("transformer_tiny", "2"), "last a=0.1"])
    assert cell == pytest.approx(100 * student["last"]["test_bleu"], abs=0.005)
    assert "Students by teacher label smoothing a (BLEU" in results.format_tables(runs)
    # a run recorded before test_bleu (test-split BLEU as val_bleu) still reads the same
    old = {**student, "last": {**student["last"], "val_bleu": student["last"]["test_bleu"]}}
    del old["last"]["test_bleu"]
    assert results.run_row(old)["last_bleu"] == pytest.approx(100 * student["last"]["test_bleu"])


def _bleu_run(seed: int, alpha: float, bleu: float, tokenized: float | None) -> dict:
    """A finished student's run.json; without ``tokenized``, one recorded before
    ``val_bleu_tokenized`` and ``metric_labels`` existed."""
    info = {
        "kind": "student", "task": "translation", "model": "transformer_tiny", "seed": seed,
        "status": "finished", "teacher_label_smoothing": alpha, "temperature": 1.0,
        "headline": "bleu", "metrics": ["top1", "bleu"],
        "last": {"val_top1": 0.5, "val_bleu": bleu / 100},
    }  # fmt: skip
    if tokenized is not None:
        info["metrics"].append("bleu_tokenized")
        info["last"]["val_bleu_tokenized"] = tokenized / 100
        info["metric_labels"] = tasks.get("translation").metric_labels
    return info


def test_tables_say_which_bleu_and_read_runs_older_than_tokenized_bleu(tmp_path):
    infos = [_bleu_run(seed, alpha, 20 + seed + 10 * alpha, 25 + seed + 20 * alpha)
             for seed in (0, 1) for alpha in (0.0, 0.1)]  # fmt: skip
    infos += [_bleu_run(2, alpha, 30.0, None) for alpha in (0.0, 0.1)]  # older runs
    for info in infos:
        run_dir = tmp_path / "runs" / f"s{info['seed']}-a{info['teacher_label_smoothing']}"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps(info))
    runs = results.collect_runs([tmp_path / "runs"])
    assert len(runs) == 6
    sacre = results.student_table(runs).loc[("transformer_tiny", "1")]  # headline: bleu
    old_too = [20.0, 21.0, 30.0]  # a=0: seeds 0, 1 and the older run's seed 2
    assert sacre["n"] == 3
    assert sacre["last a=0"] == f"{np.mean(old_too):.2f} ± {np.std(old_too, ddof=1):.2f}"
    fairseq = results.student_table(runs, "bleu_tokenized").loc[("transformer_tiny", "1")]
    assert fairseq["n"] == 2 and fairseq["last a=0.1"] == "27.50 ± 0.71"
    assert fairseq["last Δ(LS−noLS)"].startswith("+2.00 [")
    printed = results.format_tables(runs, "bleu_tokenized")
    assert "Students by teacher label smoothing a (tokenized BLEU (fairseq's: Moses" in printed
    assert "2 finished runs without tokenized BLEU" in printed
    assert "(BLEU (sacreBLEU 13a on detokenized text), mean" in results.format_tables(runs)
    written = results.write_tables(runs, tmp_path / "tables", "bleu_tokenized")
    csv = pd.read_csv(written["students.csv"])
    assert set(csv["metric"]) == {tasks.get("translation").metric_labels["bleu_tokenized"]}
    assert "Cells: tokenized BLEU (fairseq's" in written["students.md"].read_text()
    with pytest.raises(ValueError, match="no finished run recorded the metric 'bleu_tokenzed'; "
                       "choose one they recorded: bleu, bleu_tokenized, top1"):  # fmt: skip
        results.format_tables(runs, "bleu_tokenzed")


def test_a_bad_bleu_text_option_is_one_line_before_any_run():
    spec = experiment.DataSpec(name="embedded", options=(("bleu_text", "sgml"),))
    with pytest.raises(ValueError, match="unknown text format 'sgml' for BLEU; choose one of"):
        tasks.get("translation").check_dataset(spec)
    assert data.text_format("iwslt14") == "moses" and data.text_format("text") == "raw"
    assert data.text_format("text", "moses") == "moses"


def test_padding_never_counts_in_the_token_metrics(finished):
    env, specs, _ = finished
    recorded = RunDir(env.run_dir(specs[0])).read()
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    model = task.load_model(RunDir(env.run_dir(specs[0])).checkpoint("last"), info)
    correct = total = 0
    for x, y, mask in task.eval_dataset(DATA, batch_size=TRAIN.batch_size):
        predicted = model(x, training=False).numpy().argmax(-1)
        correct += ((predicted == y.numpy()) * mask.numpy()).sum()
        total += mask.numpy().sum()
    assert recorded["last"]["val_top1"] == pytest.approx(correct / total, abs=1e-6)


def test_final_metrics_decode_once_when_best_and_last_are_the_same_weights(
    finished, tmp_path, monkeypatch
):
    env, specs, _ = finished
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    teacher, student = (RunDir(env.run_dir(spec)) for spec in specs[:2])
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    decoded, loaded = [], []
    original, original_load = type(task).translate, type(task).load_model
    monkeypatch.setattr(
        type(task), "translate",
        lambda self, model, *a, **k: decoded.append(model) or original(self, model, *a, **k),
    )  # fmt: skip
    monkeypatch.setattr(
        type(task), "load_model",
        lambda self, path, *a: loaded.append(path) or original_load(self, path, *a),
    )  # fmt: skip
    # the same file twice (Checkpoints copies last to best): one load, one decoding
    for which in ("best", "last"):
        shutil.copy(student.checkpoint("last"), run.checkpoint(which))
    same = task.final_metrics(run, DATA, info)
    assert len(decoded) == len(loaded) == 1 and same["best"] == same["last"]
    assert same["last"]["test_bleu"] == student.read()["last"]["test_bleu"]
    # different weights: each file loaded and decoded, each its own BLEU
    shutil.copy(teacher.checkpoint("last"), run.checkpoint("best"))
    different = task.final_metrics(run, DATA, info)
    assert len(decoded) == len(loaded) == 3
    assert different["best"]["test_bleu"] == teacher.read()["last"]["test_bleu"]
    assert different["last"] == same["last"]


def test_a_killed_translation_student_resumes_exactly(finished, tmp_path):
    env, specs, _ = finished
    teacher, student = specs[0], specs[1]
    for name, callbacks in (("straight", ()), ("killed", (StopAtEpoch(1),))):
        run_env = experiment.RunEnv(
            output_dir=str(tmp_path / name), study="mt", tensorboard_dir=str(tmp_path / "tb"),
            callbacks=callbacks,
        )  # fmt: skip
        shutil.copytree(env.run_dir(teacher), run_env.run_dir(teacher))
        if callbacks:
            with pytest.raises(KeyboardInterrupt):
                experiment.run(student, run_env)
            run_env = experiment.RunEnv(output_dir=str(tmp_path / name), study="mt",
                                        tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
        experiment.run(student, run_env)
    weights = [
        lskd_tf.tasks.get("translation")
        .load_model(RunDir(tmp_path / name / "mt" / student.name).checkpoint("last"), None)
        .get_weights()
        for name in ("straight", "killed")
    ]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    straight = RunDir(tmp_path / "straight" / "mt" / student.name).read()
    killed = RunDir(tmp_path / "killed" / "mt" / student.name).read()
    assert straight["last"] == killed["last"]
    assert json.dumps(straight["identity"]) == json.dumps(killed["identity"])


def test_token_analyses_report_every_run(finished, tmp_path):
    env, specs, run_dirs = finished
    task = tasks.get("translation")
    report = task.analyze(run_dirs, tmp_path / "analysis", tensorboard_dir=tmp_path / "tb",
                          title="mt")  # fmt: skip
    text = report.read_text()
    for run_dir in run_dirs:
        assert run_dir.name in text
        assert (tmp_path / "analysis" / run_dir.name / "reliability.png").stat().st_size > 0
        # one tag per measure in every run's log, so TensorBoard overlays the runs
        tags = {value.tag for path in (tmp_path / "tb" / run_dir.name / "analysis").iterdir()
                for event in tf.compat.v1.train.summary_iterator(str(path))
                for value in event.summary.value}  # fmt: skip
        assert {"analysis/top1_accuracy", "analysis/reliability"} <= tags
    assert "semantic mass ratio" in text and "KL teacher-student" in text
    # token accuracy of the analysis = the run's teacher-forced val_top1 (same positions)
    from lskd_tf.tasks.translation import analysis

    info = task.dataset_info(DATA)
    model = task.load_model(RunDir(run_dirs[0]).checkpoint("last"), info)
    outputs = analysis.token_outputs(model, task.eval_dataset(DATA, batch_size=16), 10**6)
    measures = analysis.token_measures(outputs, token_families=info.token_families)
    recorded = RunDir(run_dirs[0]).read()["last"]["val_top1"]
    assert measures["top1_accuracy"] == pytest.approx(recorded, abs=1e-6)
    # each run's numbers also in its analysis.json, as the image analysis writes them
    saved = json.loads((tmp_path / "analysis" / run_dirs[0].name / "analysis.json").read_text())
    assert saved["top1_accuracy"] == pytest.approx(measures["top1_accuracy"], abs=1e-9)
    assert saved["semantic_mass_ratio"] == pytest.approx(measures["semantic_mass_ratio"])
    assert measures["positions"] == int(sum(m.numpy().sum() for *_, m in
                                            task.eval_dataset(DATA, batch_size=16)))  # fmt: skip


def test_token_semantic_mass_by_hand():
    from lskd_tf.tasks.translation import analysis

    assert analysis.token_groups([-1, 0, 0, -1, 1]).tolist() == [2, 0, 0, 3, 1]
    # 4 tokens, 0 and 1 near-synonyms. Position 1: reference 0, 0.3 of its 0.5 non-target
    # mass on its synonym, chance 1/3 -> ratio 1.8. Position 2: reference 2 has no family.
    probs = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    outputs = {"logits": np.log(probs), "labels": np.array([0, 2])}
    measures = analysis.token_measures(outputs, token_families=[0, 0, -1, -1])
    assert measures["semantic_mass_ratio"] == pytest.approx(1.8)
    assert measures["top1_accuracy"] == 1.0 and measures["positions"] == 2
    # classes present: 0 and 2, one position each -> no intra-class variance
    assert measures["one_minus_stability"] == pytest.approx(0.0)
    teacher = {"logits": np.log(probs[::-1]), "labels": np.array([0, 2])}
    measures = analysis.token_measures(outputs, teacher_outputs=teacher, temperature=1.0)
    assert measures["agreement"] == 0.0


def test_trained_models_decode_as_before_and_export_the_runs_translations(finished, tmp_path):
    """On a trained student: the cached in-graph search gives the previous decoder's
    translations (tests/beam_reference.py), and its export (the run's beam size and
    max_length) gives the run's BLEU translations, batched or one sentence at a time.
    This student (2 epochs on 256 pairs) mostly repeats a token until (or near) the
    limit, as issue #25's did: where the export used to stop elsewhere."""
    import beam_reference
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops for loading)

    from lskd_tf.tasks.translation import data, decoding

    env, specs, _ = finished
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    model = task.load_model(RunDir(env.run_dir(specs[1])).checkpoint("last"), info)
    options, _ = data.split_options(DATA.options)
    x, _, _ = next(iter(task.eval_dataset(DATA, batch_size=8)))
    source = x["source"].numpy()
    reference = beam_reference.Compiled(model)
    for beam_size in (1, 4):
        found = decoding.translate_ids(model, source, beam_size=beam_size,
                                       max_length=info.max_length)  # fmt: skip
        assert found == beam_reference.translate_ids(
            reference, source, beam_size=beam_size, max_length=info.max_length
        )
        assert max(map(len, found)) <= info.max_length - 1  # EOS included: max_length

    decoded = task.translate(model, DATA, info)  # the run's BLEU decoding (beam 2)
    task.export(model, tmp_path / "mt", info, DATA)
    translate = tf.saved_model.load(str(tmp_path / "mt")).signatures["translate"]
    sentences = data.sources("embedded", info.test_split, **options)[:16]

    def exported(batch):
        return [t.decode() for t in translate(sentences=tf.constant(batch))["translations"].numpy()]

    assert exported(sentences) == decoded["hypotheses"]
    assert [exported([s])[0] for s in sentences[:4]] == decoded["hypotheses"][:4]


def test_sequence_level_students_learn_the_teachers_translations(finished, tmp_path):
    import dataclasses

    from lskd_tf.tasks.translation import decoding, sequence_kd

    env, specs, _ = finished
    teacher = specs[0]
    word_level = specs[1]
    assert "sequence_level" not in word_level.distill.to_dict()  # old runs keep identity
    spec = dataclasses.replace(
        word_level,
        distill=lskd_tf.DistillSpec(temperature=2.0, ce_weight=1.0, kd_weight=0.0,
                                    sequence_level=True),
    )  # fmt: skip
    assert spec.name.endswith("-seqkd-seed0-from-transformer_tiny-ls0-seed0")
    run_env = experiment.RunEnv(output_dir=str(tmp_path), study="mt",
                                tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    shutil.copytree(env.run_dir(teacher), run_env.run_dir(teacher))
    experiment.run(spec, run_env)
    recorded = RunDir(run_env.run_dir(spec)).read()
    assert recorded["status"] == "finished" and recorded["sequence_level"] is True
    described = recorded["sequence_level_targets"]
    assert described["source"] == "decoded" and described["pairs"] == 256

    # The stored targets are the teacher's beam outputs (beam 2, DATA's setting) of the
    # training sources, and the student's training batches carry exactly them.
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    teacher_path = RunDir(run_env.run_dir(teacher)).checkpoint("last")
    model = task.load_model(teacher_path, info)
    ids, again = sequence_kd.teacher_translations(model, teacher_path, DATA)
    assert again["source"] == "read" and again["path"] == described["path"]
    options, _ = data.split_options(DATA.options)
    x, _, _ = next(iter(data.eval_dataset("embedded", "train", batch_size=8, **options)))
    assert ids[:8] == decoding.translate_ids(model, x["source"].numpy(), beam_size=2,
                                             max_length=info.max_length)  # fmt: skip
    train_fn, _ = task.sequence_level_train_fn(model, teacher_path, DATA, batch_size=32,
                                               seed=0, verbose=False)  # fmt: skip
    seen = []
    for _, y, w in train_fn(0):
        for row, mask in zip(y.numpy(), w.numpy()):
            seen.append(tuple(row[: int(mask.sum()) - 1]))  # drop EOS and padding
    assert sorted(seen) == sorted(tuple(r[: info.max_length - 1]) for r in ids)
    # translations stored under another setting's name are refused, never reused
    beam3 = dataclasses.replace(DATA, options=tuple(
        (k, 3 if k == "beam_size" else v) for k, v in DATA.options))  # fmt: skip
    key3 = sequence_kd.key_of(model, beam3, beam_size=3, length_penalty=1.0)
    shutil.copy(described["path"], sequence_kd.stored_path(teacher_path, key3))
    with pytest.raises(ValueError, match="another teacher or setting"):
        sequence_kd.teacher_translations(model, teacher_path, beam3)


def test_cached_teacher_logits_are_the_teachers(finished, tmp_path):
    from lskd_tf.teacher_cache import CacheSpec, compress_topk, expand_topk

    env, specs, _ = finished
    teacher_spec = specs[0]
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    copied = tmp_path / "teacher"
    shutil.copytree(env.run_dir(teacher_spec), copied)
    path = RunDir(copied).checkpoint("last")
    teacher = task.load_model(path, info)
    with pytest.raises(ValueError, match="use teacher_cache='exact'"):
        task.check_teacher_cache(CacheSpec(mode="sampled"), DATA)

    # Full logits: every batch carries the teacher's own logits at its positions.
    full_fn, described = task.cached_train_fn(teacher, path, CacheSpec(dtype="float32"), DATA,
                                              batch_size=32, seed=3, verbose=False)  # fmt: skip
    assert described["source"] == "built" and Path(described["path"]).is_file()
    online = task.train_fn(DATA, batch_size=32, seed=3)(1)
    for (x, y, w), (cx, cy, _) in zip(online, full_fn(1)):
        np.testing.assert_array_equal(y, cy)  # the same batches, in the same order
        mask = w.numpy() > 0
        expected = teacher(x, training=False).numpy()[mask]
        np.testing.assert_allclose(cx["teacher_logits"].numpy()[mask], expected, atol=1e-5)

    # Top-4 in float16: exactly expand_topk of the compressed teacher logits.
    cache = CacheSpec(topk=4)
    topk_fn, described = task.cached_train_fn(teacher, path, cache, DATA, batch_size=32,
                                              seed=3, verbose=False)  # fmt: skip
    x, y, w = next(iter(task.train_fn(DATA, batch_size=32, seed=3)(0)))
    cx, _, _ = next(iter(topk_fn(0)))
    mask = w.numpy() > 0
    values, indices, rest = compress_topk(teacher(x, training=False).numpy()[mask], 4)
    expected = expand_topk(values.astype(np.float16), indices, rest.astype(np.float16),
                           info.vocab_size)  # fmt: skip
    np.testing.assert_array_equal(cx["teacher_logits"].numpy()[mask], expected)
    again = task.cached_train_fn(teacher, path, cache, DATA, batch_size=32, seed=3,
                                 verbose=False)[1]  # fmt: skip
    assert again["source"] == "read" and again["path"] == described["path"]

    # A student distils from the cache: recorded, and another run than online KD.
    import dataclasses

    student = dataclasses.replace(specs[1], teacher_cache=cache)
    assert student.name.endswith("-top4-seed0-from-transformer_tiny-ls0-seed0")
    run_env = experiment.RunEnv(output_dir=str(tmp_path / "runs"), study="mt",
                                tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    shutil.copytree(env.run_dir(teacher_spec), run_env.run_dir(teacher_spec))
    experiment.run(student, run_env)
    recorded = RunDir(run_env.run_dir(student)).read()
    assert recorded["status"] == "finished"
    assert recorded["teacher_cache"]["storage"] == {"topk": 4, "dtype": "float16"}
    # beside this study's copy of the teacher, so built for it
    assert recorded["teacher_cache"]["source"] == "built"


def test_topk_kd_cache_stores_k_ids_and_logits_and_is_read_sparse(finished, tmp_path, monkeypatch):
    """kd_loss="topk_kl": the cache holds exactly the teacher's top 4 ids and logits per
    real token (no rest logit, no vocabulary-sized array), the student's batches carry
    them as sparse (B, L, 4) tensors, and the loss and gradient equal online top-k KD's
    on the same batch."""
    import dataclasses

    import tensorflow as tf

    from lskd_tf.tasks.translation import data
    from lskd_tf.teacher_cache import CacheSpec

    env, specs, _ = finished
    task = tasks.get("translation")
    info = task.dataset_info(DATA)
    copied = tmp_path / "teacher"
    shutil.copytree(env.run_dir(specs[0]), copied)
    path = RunDir(copied).checkpoint("last")
    teacher = task.load_model(path, info)
    cache = CacheSpec(dtype="float32")
    with pytest.raises(ValueError, match="leave cache_topk at 0"):
        task.cached_train_fn(teacher, path, CacheSpec(topk=4), DATA, batch_size=32, seed=3,
                             verbose=False, kd_topk=4)  # fmt: skip
    train_fn, described = task.cached_train_fn(teacher, path, cache, DATA, batch_size=32,
                                               seed=3, verbose=False, kd_topk=4)  # fmt: skip
    assert described["storage"] == {"topk": 0, "dtype": "float32", "kd_topk": 4}
    assert "kdtop4" in Path(described["path"]).name

    # On disk: k ids + k logits per real target position, nothing vocabulary-sized.
    with np.load(described["path"]) as stored:
        arrays = {name: stored[name] for name in stored.files if name != "key"}
    assert set(arrays) == {"values", "indices", "lengths"}
    positions = int(arrays["lengths"].sum())
    assert arrays["values"].shape == arrays["indices"].shape == (positions, 4)
    assert arrays["indices"].dtype == np.int16 and arrays["values"].dtype == np.float32
    options, _ = data.split_options(DATA.options)
    x, _, mask = next(iter(data.train_split_in_order("embedded", batch_size=8, **options)))
    real = mask.numpy() > 0
    logits = teacher(x, training=False).numpy()[real]
    expected_ids = np.argsort(-logits, axis=-1, kind="stable")[:, :4]
    first = len(logits)
    np.testing.assert_array_equal(arrays["indices"][:first], expected_ids)
    # The cache ran the teacher on batches of another shape: on some CPUs (this AMD EPYC)
    # the matmuls then round differently in the last bits (here up to 4 ulp).
    expected_values = np.take_along_axis(logits, expected_ids, -1)
    np.testing.assert_allclose(arrays["values"][:first], expected_values, rtol=2e-6, atol=0)

    # The student's batches: the same batches as online, with sparse (B, L, 4) teachers.
    online_x, y, w = next(iter(task.train_fn(DATA, batch_size=32, seed=3)(0)))
    cached_x, cached_y, _ = next(iter(train_fn(0)))
    np.testing.assert_array_equal(y, cached_y)
    sparse = cached_x["teacher_logits"]
    assert set(sparse) == {"topk_ids", "topk_logits"}
    assert sparse["topk_ids"].dtype == tf.int32 and sparse["topk_logits"].dtype == tf.float32
    assert tuple(sparse["topk_ids"].shape) == (*y.shape, 4)
    online_logits = teacher(online_x, training=False).numpy()
    real = w.numpy() > 0
    top_values, top_ids = tf.math.top_k(online_logits, 4)
    np.testing.assert_array_equal(sparse["topk_ids"].numpy()[real], top_ids.numpy()[real])
    np.testing.assert_allclose(sparse["topk_logits"].numpy()[real], top_values.numpy()[real],
                               atol=1e-5)  # fmt: skip

    # Online and cached top-k KD: the same loss and gradient on this batch.
    spec = lskd_tf.DistillSpec(temperature=64.0, kd_loss="topk_kl", kd_topk=4, kd_weight=0.9,
                               ce_weight=0.1, label_smoothing=0.1)  # fmt: skip
    student = task.build_model("transformer_tiny", info, train=None, synchronized_bn=False)
    distiller = lskd_tf.Distiller(teacher, student, spec)
    student_logits = student(online_x, training=False)

    def loss_and_grad(batch_x):
        with tf.GradientTape() as tape:
            tape.watch(student_logits)
            loss = distiller.compute_loss(batch_x, y, student_logits, sample_weight=w)
        return float(loss), tape.gradient(loss, student_logits).numpy()

    online, cached = loss_and_grad(online_x), loss_and_grad(cached_x)
    assert np.isfinite(online[0]) and cached[0] == pytest.approx(online[0], rel=1e-5)
    np.testing.assert_allclose(cached[1], online[1], rtol=1e-4, atol=1e-9)

    # A student run: the cache is the online computation, so not in its identity; the
    # runner asks the task for a top-4 cache (stopped there: the run itself is what the
    # test above does for the rest-logit cache).
    student_spec = dataclasses.replace(specs[1], distill=spec, teacher_cache=CacheSpec())
    assert "-topk_kl4-" in student_spec.name and "teacher_cache" not in student_spec.record()
    assert student_spec.record()["kd_topk"] == 4
    with pytest.raises(ValueError, match="leave cache_topk at 0"):
        dataclasses.replace(student_spec, teacher_cache=CacheSpec(topk=4))
    asked = {}

    class Asked(Exception):
        pass

    def cached_train_fn(*args, **kwargs):
        asked.update(kwargs)
        raise Asked

    monkeypatch.setattr(task, "cached_train_fn", cached_train_fn)
    run_env = experiment.RunEnv(output_dir=str(tmp_path / "runs"), study="mt",
                                tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    shutil.copytree(env.run_dir(specs[0]), run_env.run_dir(specs[0]))
    with pytest.raises(Asked):
        experiment.run(student_spec, run_env)
    assert asked["kd_topk"] == 4


def test_the_readmes_translation_example_builds_the_papers_study():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in readme.split("```python")[1:] if 'task="translation"' in b)
    code = block.split("```")[0].split("run_dirs = sweep.run_study(")[0]
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the README's own example
    runs = experiment.plan_study(scope["study"])
    assert len(runs) == 2 + 2 * 3  # two teachers, one student each at T = 1 x 3 seeds
    assert runs[0].train.schedule == "inverse_sqrt" and runs[0].train.warmup_steps == 4000
    assert dict(runs[0].data.options)["subword_model"] == "bpe"
