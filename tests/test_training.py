"""Training runs: files, resume after interruption, reproducibility, schedules, export."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import StopAtEpoch

import lskd_tf
from lskd_tf import TrainConfig
from lskd_tf.schedules import WarmupDecay

RNG = np.random.default_rng(1)
X = RNG.random((96, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 10, 96).astype("int32")
DATA = (X, Y)


def config(**overrides):
    base = dict(epochs=3, batch_size=32, learning_rate=0.1, milestones=(2,), verbose=0, seed=3)
    return TrainConfig(**{**base, **overrides})


def weights(model):
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_cnn):
    run_dir = tmp_path_factory.mktemp("teacher")
    teacher = tiny_cnn(name="teacher", seed=1)
    result = lskd_tf.train_teacher(
        teacher, DATA, DATA, run_dir=run_dir, config=config(), label_smoothing=0.1,
        run_info={"model": "tiny"},
    )  # fmt: skip
    return result


def test_teacher_run_writes_its_files(teacher_run):
    run_dir = teacher_run.run_dir
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["kind"] == "teacher"
    assert info["label_smoothing"] == 0.1 and info["model"] == "tiny"
    assert info["train"]["epochs"] == 3 and info["steps_per_epoch"] == 3
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert info["last"]["val_top1"] == pytest.approx(history["val_top1"].iloc[-1])
    best = history.loc[history["val_top1"].idxmax()]
    assert info["best"]["epoch"] == best["epoch"]
    # the step schedule: x0.1 from epoch 2 on
    np.testing.assert_allclose(history["learning_rate"], [0.1, 0.01, 0.01], rtol=1e-6)
    last = keras.models.load_model(run_dir / "last.keras")
    np.testing.assert_allclose(
        last.predict(X, verbose=0), teacher_run.model.predict(X, verbose=0), atol=1e-6
    )
    assert (run_dir / "best.keras").exists()
    events = list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    assert events


def test_epoch_scalars_have_one_epoch_prefix(teacher_run):
    """TensorBoard tags: ``epoch_loss`` like Keras's callback, ``epoch_time_s`` not doubled."""
    tags = set()
    for event_file in (teacher_run.run_dir / "tensorboard" / "train").glob("events.out.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_top1", "epoch_time_s", "epoch_learning_rate"} <= tags
    assert not any(tag.startswith("epoch_epoch") for tag in tags)


def test_progress_in_a_log_file_is_one_plain_line_per_epoch(tmp_path, tiny_cnn, capsys):
    """stdout is not a terminal (capsys, like a log file or nohup): no ANSI codes, no \\r."""
    lskd_tf.train_teacher(
        tiny_cnn(name="teacher", seed=1), DATA, DATA, run_dir=tmp_path / "run",
        config=config(epochs=2, verbose=1), run_info={"name": "logged"},
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "\r" not in out and "\b" not in out
    lines = out.splitlines()
    assert [line.split(" - ")[0] for line in lines[:2]] == ["logged epoch 1/2", "logged epoch 2/2"]
    assert all(f" - {key}: " in lines[0] for key in ("loss", "top1", "val_top1"))
    assert lines[2].startswith("[finished] logged:") and len(lines) == 3
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert f"loss: {history['loss'][1]:.4f}" in lines[1]
    assert f"val_top1: {history['val_top1'][1]:.4f}" in lines[1]


def test_finished_run_is_not_trained_again(teacher_run, tiny_cnn):
    fresh = tiny_cnn(name="teacher", seed=9)
    again = lskd_tf.train_teacher(fresh, DATA, DATA, run_dir=teacher_run.run_dir, config=config())
    for a, b in zip(weights(again.model), weights(teacher_run.model)):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_numbers(tmp_path, teacher_run, tiny_cnn):
    """Reproducibility: a second run with the same seed gives bit-identical weights."""
    teacher = tiny_cnn(name="teacher", seed=1)
    again = lskd_tf.train_teacher(
        teacher, DATA, DATA, run_dir=tmp_path, config=config(), label_smoothing=0.1
    )
    for a, b in zip(weights(again.model), weights(teacher_run.model)):
        np.testing.assert_array_equal(a, b)


def test_interrupted_distillation_resumes_to_the_same_weights(tmp_path, teacher_run, tiny_cnn):
    teacher = teacher_run.model
    cfg = config(epochs=4, milestones=(3,))

    def distill(run_dir, callbacks=()):
        student = tiny_cnn(name="student", seed=2)
        return lskd_tf.distill_student(
            teacher, student, DATA, DATA, run_dir=run_dir, config=cfg,
            distill=lskd_tf.DistillSpec(temperature=4.0, ce_weight=0.1, kd_weight=0.9),
            callbacks=callbacks,
        )  # fmt: skip

    reference = distill(tmp_path / "uninterrupted")
    with pytest.raises(KeyboardInterrupt):
        distill(tmp_path / "resumed", callbacks=[StopAtEpoch(2)])
    info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_done"] == 2
    assert len(pd.read_csv(tmp_path / "resumed" / "history.csv")) == 2  # nothing lost
    with pytest.raises(KeyboardInterrupt):  # killed again before its first new epoch
        distill(tmp_path / "resumed", callbacks=[StopAtEpoch(2)])
    info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert info["epochs_done"] == 2 and info["last"]["epoch"] == 2  # still on record
    resumed = distill(tmp_path / "resumed")
    for a, b in zip(weights(resumed.model), weights(reference.model)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    history = pd.read_csv(tmp_path / "resumed" / "history.csv")
    reference_history = pd.read_csv(tmp_path / "uninterrupted" / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(history["val_top1"], reference_history["val_top1"])
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=1e-5)
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["status"] == "finished"


def test_warmup_and_decay_schedules():
    step = WarmupDecay(1.0, steps_per_epoch=10, epochs=30, milestones=(10, 20), warmup_epochs=1)
    got = [float(step(s)) for s in (0, 4, 9, 10, 99, 100, 199, 200)]
    np.testing.assert_allclose(got, [0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01], rtol=1e-6)
    cosine = WarmupDecay(2.0, steps_per_epoch=10, epochs=10, schedule="cosine")
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100)], [2, 1, 0], atol=1e-6)
    clone = WarmupDecay.from_config(step.get_config())
    assert float(clone(150)) == pytest.approx(0.1)


def test_inverse_sqrt_schedule_is_fairseqs_one_step_ahead():
    # fairseq inverse_sqrt, warmup W, peak lr: step s uses lr*s/W while warming up and
    # lr*sqrt(W/s) after; ours uses s + 1 (no zero-rate first step).
    lr, warmup = 5e-4, 4000
    schedule = WarmupDecay(lr, steps_per_epoch=700, epochs=50, schedule="inverse_sqrt",
                           warmup_steps=warmup)  # fmt: skip
    steps = [0, 1999, 3999, 4000, 15999, 99999]
    fairseq = [lr * (s + 1) / warmup if s + 1 < warmup else lr * (warmup / (s + 1)) ** 0.5
               for s in steps]  # fmt: skip
    np.testing.assert_allclose([float(schedule(s)) for s in steps], fairseq, rtol=1e-6)
    # the same warmup given in epochs (steps_per_epoch=800: 5 epochs) gives the same rates
    in_epochs = WarmupDecay(lr, steps_per_epoch=800, epochs=50, schedule="inverse_sqrt",
                            warmup_epochs=5)  # fmt: skip
    np.testing.assert_allclose([float(in_epochs(s)) for s in steps], fairseq, rtol=1e-6)
    assert WarmupDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_an_older_runs_identity_survives_a_setting_added_later():
    config = TrainConfig(epochs=2)
    assert "warmup_steps" not in config.identity() and "verbose" not in config.identity()
    assert config.to_dict()["warmup_steps"] == 0  # still recorded in run.json
    assert (
        TrainConfig(epochs=2, schedule="inverse_sqrt", warmup_steps=10).identity()["warmup_steps"]
        == 10
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(epochs=0), "epochs must be >= 1"),
        (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; choose one of: sgd, adam"),
        (dict(schedule="poly"), "unknown schedule 'poly'"),
        (dict(schedule="inverse_sqrt"), "inverse_sqrt schedule decays from the end of its"),
        (dict(warmup_epochs=1, warmup_steps=100), "give the warmup once"),
        (dict(warmup_steps=-1), "warmup_steps must be >= 0"),
        (dict(learning_rate=0), "learning_rate must be > 0"),
        (dict(weight_decay_scope="bn"), "unknown weight_decay_scope 'bn'; choose one of: kernels"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_weight_decay_scope_is_recorded_in_run_json(teacher_run):
    recorded = json.loads((teacher_run.run_dir / "run.json").read_text())["train"]
    assert recorded["weight_decay_scope"] == "kernels"  # the default
    assert TrainConfig(**{**recorded, "weight_decay_scope": "all"}).weight_decay_scope == "all"


@pytest.mark.parametrize("scope", ["kernels", "all"])
def test_adamw_decoupled_decay_follows_the_scope(scope, tiny_cnn):
    """AdamW decays in the optimizer: with zero gradients only the decoupled decay
    w <- w * (1 - lr * wd) acts, on kernels only or on every parameter; and runs with
    AdamW get no L2 regularizers (the decay would otherwise be applied twice)."""
    from types import SimpleNamespace

    from lskd_tf import tasks

    task = tasks.get("image_classification")

    train = config(optimizer="adamw", weight_decay=0.01, weight_decay_scope=scope)
    optimizer = lskd_tf.training.make_optimizer(train, steps_per_epoch=10)
    model = tiny_cnn()
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    for v, w in zip(variables, before, strict=True):
        decayed = scope == "all" or v.name == "kernel"
        np.testing.assert_allclose(v.numpy(), w * (1 - 0.1 * 0.01) if decayed else w, rtol=1e-6)
    info = SimpleNamespace(num_classes=10, input_shape=(16, 16, 3))
    adamw = task.build_model("resnet8", info, train=train, synchronized_bn=False)
    assert adamw.losses == []
    sgd = config(weight_decay_scope=scope)
    built = task.build_model("resnet8", info, train=sgd, synchronized_bn=False)
    expected = [v for v in built.trainable_weights if scope == "all" or v.name == "kernel"]
    assert len(built.losses) == len(expected) > 0


def test_bad_run_arguments(tmp_path, teacher_run, tiny_cnn):
    with pytest.raises(ValueError, match="label_smoothing must be in \\[0, 1\\)"):
        lskd_tf.train_teacher(tiny_cnn(), DATA, run_dir=tmp_path, label_smoothing=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        lskd_tf.distill_student(
            teacher_run.model,
            tiny_cnn(),
            DATA,
            run_dir=tmp_path,
            distill=lskd_tf.DistillSpec(temperature=-1),
        )
    assert not (tmp_path / "run.json").exists()


def test_export_round_trip(tmp_path, teacher_run):
    model = teacher_run.model
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = lskd_tf.export_student(model, tmp_path / "export", mean=mean, std=std)
    served = tf.saved_model.load(str(path))
    np.testing.assert_allclose(served.serve(X).numpy(), model.predict(X, verbose=0), atol=1e-5)
    signature = served.signatures["serving_default"]
    out = list(signature(tf.constant(X)).values())[0]
    np.testing.assert_allclose(out.numpy(), model.predict(X, verbose=0), atol=1e-5)
    images = RNG.integers(0, 256, (5, 8, 8, 3)).astype("uint8")
    normalized = (images / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        served.serve_uint8(tf.constant(images)).numpy(),
        model.predict(normalized.astype("float32"), verbose=0),
        atol=1e-5,
    )
    reloaded = keras.models.load_model(path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), model.predict(X, verbose=0))
