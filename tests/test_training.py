"""Training runs: files, resume after interruption, reproducibility, schedules, export."""

import json
import os

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
    logits = model.predict(X, verbose=0)
    np.testing.assert_allclose(served.serve(X)["logits"].numpy(), logits, atol=1e-5)
    signature = served.signatures["serving_default"]
    out = signature(tf.constant(X))
    assert set(out) == {"logits", "probabilities", "top5"}
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"].numpy(), exp / exp.sum(-1, keepdims=True),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(out["top5"].numpy(), np.argsort(-logits, axis=-1)[:, :5])
    images = RNG.integers(0, 256, (5, 8, 8, 3)).astype("uint8")
    normalized = (images / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        served.serve_uint8(tf.constant(images))["logits"].numpy(),
        model.predict(normalized.astype("float32"), verbose=0),
        atol=1e-5,
    )
    meta = served.metadata()
    assert [n.decode() for n in meta["class_names"].numpy()] == [str(i) for i in range(10)]
    np.testing.assert_allclose(meta["mean"].numpy(), mean)
    np.testing.assert_allclose(meta["std"].numpy(), std)
    assert list(meta["input_shape"].numpy()) == [8, 8, 3]
    assert (path / "assets.extra" / "labels.txt").read_text().splitlines() == [
        str(i) for i in range(10)
    ]  # fmt: skip
    assert json.loads((path / "assets.extra" / "preprocessing.json").read_text())["std"] == [
        pytest.approx(s) for s in std
    ]  # fmt: skip
    reloaded = keras.models.load_model(path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), model.predict(X, verbose=0))


def _zoo_layers_model() -> keras.Model:
    """A small model with every lskd_tf layer `plain_keras` exchanges."""
    from lskd_tf.models.layers import ChannelShuffle, ChannelSlice, FusedBatchNormalization

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = ChannelShuffle(2)(x)
    x = keras.layers.Concatenate()([ChannelSlice(0, 3)(x), ChannelSlice(5, 8)(x)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, name="classifier")(x), name="zoo")
    bn = model.layers[2]
    bn.moving_mean.assign(RNG.normal(size=8).astype("float32"))
    bn.moving_variance.assign(RNG.uniform(0.5, 2.0, 8).astype("float32"))
    return model


def test_plain_keras_has_only_keras_layers_and_the_same_outputs():
    from lskd_tf.export import custom_layers, plain_keras

    model = _zoo_layers_model()
    plain = plain_keras(model)
    assert custom_layers(model) == ["ChannelShuffle", "ChannelSlice", "FusedBatchNormalization"]
    assert custom_layers(plain) == []
    x = RNG.normal(size=(4, 6, 6, 3)).astype("float32")
    # The NumPy transcription of the channel moves, on the BatchNorm's output.
    features = keras.Model(model.inputs, model.layers[2].output)(x).numpy()
    shuffled = features.reshape(4, 6, 6, 2, 4).transpose(0, 1, 2, 4, 3).reshape(4, 6, 6, 8)
    pooled = np.concatenate([shuffled[..., 0:3], shuffled[..., 5:8]], axis=-1).mean(axis=(1, 2))
    dense = model.get_layer("classifier")
    expected = pooled @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(plain(x, training=False).numpy(), expected, atol=1e-5)


def test_export_loads_without_lskd_tf(tmp_path):
    """model.keras loads with plain Keras and the README's TF-only client runs, in a
    fresh interpreter that never imports lskd_tf."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    model = _zoo_layers_model()
    names = [f"class {i}" for i in range(7)]
    path = lskd_tf.export_student(model, tmp_path / "export", mean=(0.5, 0.4, 0.3),
                                  std=(0.2, 0.25, 0.3), class_names=names)  # fmt: skip
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"<!-- client-snippet -->\n```python\n(.*?)```", readme, re.S).group(1)
    images = RNG.integers(0, 256, (3, 6, 6, 3)).astype("uint8")
    np.save(tmp_path / "images.npy", images)
    script = "\n".join([
        "import json, sys",
        "import numpy as np",
        f"export_dir = {str(path)!r}",
        f"images_uint8 = np.load({str(tmp_path / 'images.npy')!r})",
        snippet,
        "import keras",
        "reloaded = keras.models.load_model(export_dir + '/model.keras')",
        "normalized = (images_uint8 / 255.0 - np.array(meta['mean'])) / np.array(meta['std'])",
        "assert not [m for m in sys.modules if m.startswith('lskd_tf')]",
        "print(json.dumps({'predicted': predicted, 'confidence': confidence.tolist(),",
        "                  'keras': reloaded.predict(normalized.astype('float32'), verbose=0)",
        "                  .tolist()}))",
    ])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    normalized = (images / 255.0 - np.array((0.5, 0.4, 0.3))) / np.array((0.2, 0.25, 0.3))
    logits = model.predict(normalized.astype("float32"), verbose=0)
    np.testing.assert_allclose(result["keras"], logits, atol=1e-5)
    assert result["predicted"] == [names[i] for i in logits.argmax(-1)]
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(result["confidence"], (exp / exp.sum(-1, keepdims=True)).max(-1),
                               atol=1e-6)  # fmt: skip


def test_divergence_message_names_an_extreme_temperature(tmp_path):
    from lskd_tf.run_dir import RunDir
    from lskd_tf.training import NonFiniteLossError, _check_finite

    row, run = {"epoch": 3, "loss": float("nan")}, RunDir(tmp_path)
    cases = [(100.0, "T = 100 is extreme"), (0.01, "T = 0.01 is extreme"),
             (4.0, "lower the learning rate"), (None, "lower the learning rate")]  # fmt: skip
    for temperature, says in cases:
        with pytest.raises(NonFiniteLossError, match=says) as error:
            _check_finite(row, run, temperature)
        assert ("extreme" in str(error.value)) == (temperature in (100.0, 0.01))
