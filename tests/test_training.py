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


def test_best_checkpoint_is_a_byte_copy_of_last_when_the_epoch_improves(tmp_path, tiny_cnn):
    from lskd_tf.callbacks import Checkpoints
    from lskd_tf.run_dir import RunDir

    run, model, history = RunDir(tmp_path), tiny_cnn(), []
    checkpoints = Checkpoints(run, model, history, "val_top1")
    history.append({"epoch": 1, "val_top1": 0.5})
    checkpoints.on_epoch_end(0)
    best, last = (run.checkpoint(which).read_bytes() for which in ("best", "last"))
    assert best == last
    model.layers[-1].kernel.assign(model.layers[-1].kernel + 1.0)
    history.append({"epoch": 2, "val_top1": 0.4})  # worse: best stays epoch 1's
    checkpoints.on_epoch_end(1)
    assert run.checkpoint("best").read_bytes() == best != run.checkpoint("last").read_bytes()
    assert not list(tmp_path.glob(".tmp*"))


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


def python_train_steps(model) -> list:
    """Filled once per run of ``model.train_step`` as Python: once per trace of the step."""
    calls, step = [], model.train_step

    def counted(data):
        calls.append(1)
        return step(data)

    model.train_step = counted
    return calls


def test_same_seed_same_numbers(tmp_path, teacher_run, tiny_cnn):
    """Reproducibility: a second run with the same seed gives bit-identical weights.

    Its train step is traced once for its 3 epochs (the optimizer is built before the
    first trace, not inside it: a variable-creating trace is traced twice)."""
    teacher = tiny_cnn(name="teacher", seed=1)
    traces = python_train_steps(teacher)
    again = lskd_tf.train_teacher(
        teacher, DATA, DATA, run_dir=tmp_path, config=config(), label_smoothing=0.1
    )
    for a, b in zip(weights(again.model), weights(teacher_run.model)):
        np.testing.assert_array_equal(a, b)
    assert len(traces) == 1


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


def test_linear_schedule_is_reactnets_lambda_lr():
    """ReActNet (resnet/1_step1/train.py): LambdaLR(1 - step/epochs), stepped at the start
    of each epoch, read here from PyTorch's own scheduler."""
    torch = pytest.importorskip("torch")
    base, epochs, steps_per_epoch = 1e-3, 6, 4
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 - e / epochs)
    reference = []
    for _ in range(epochs):
        scheduler.step()  # ReActNet's train(): first thing of every epoch
        reference += [optimizer.param_groups[0]["lr"]] * steps_per_epoch
    linear = WarmupDecay(base, steps_per_epoch=steps_per_epoch, epochs=epochs, schedule="linear")
    got = [float(linear(s)) for s in range(epochs * steps_per_epoch)]
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-12)
    assert got[0] == pytest.approx(base * 5 / 6) and got[-1] == 0.0  # its quirks, kept


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
    later = ("max_updates", "validate_every_updates", "patience")
    assert not set(later) & set(config.identity())  # off (None): as every older run
    counted = TrainConfig(epochs=2, max_updates=9, validate_every_updates=3, patience=4)
    assert [counted.identity()[name] for name in later] == [9, 3, 4]


def test_preprocessing_enters_only_imagenet_and_cub_identities():
    """ImageNet/CUB preprocessing changed after runs existed (antialiased resize, the ICML
    2022 CUB augmentation): their identities list every resolved option, so an older run
    is refused as changed; embedded and CIFAR-100 identities are what they were."""
    from lskd_tf.experiment import DataSpec, RunEnv, TeacherSpec
    from lskd_tf.experiment.identity import differences, identity

    env = RunEnv()
    assert identity(TeacherSpec(model="resnet8"), env)["data"] == {
        "name": "embedded",
        "options": [],
    }
    cifar = TeacherSpec(model="resnet8", data=DataSpec(name="cifar100"))
    cifar_data = identity(cifar, env)["data"]
    assert cifar_data.pop("content")["tfds"] == "cifar100"  # the data's fingerprint (#25)
    assert cifar_data == {"name": "cifar100", "options": []}
    rotation = (("max_rotation_degrees", 15.0),)
    cub = TeacherSpec(model="resnet8", data=DataSpec(name="caltech_birds2011", options=rotation))
    found = identity(cub, env)
    recorded = found["data"]["preprocessing"]
    assert recorded["max_rotation_degrees"] == 15.0 and recorded["grayscale_probability"] == 0.2
    assert recorded["antialias"] is True and "shuffle_buffer" not in recorded
    older = {**found, "data": {"name": "caltech_birds2011", "options": [list(rotation[0])]}}
    assert "data.preprocessing.grayscale_probability: (unset) → 0.2" in differences(older, found)
    imagenet = TeacherSpec(model="resnet8", data=DataSpec(name="imagenet2012"))
    assert identity(imagenet, env)["data"]["preprocessing"] == {
        "antialias": True,
        "image_size": 224,
        "lighting": 0.0,
    }


def test_adam_moments_default_to_keras_and_leave_old_identities_alone():
    # Keras's own Adam/AdamW defaults are the fields' defaults: nothing existing changes.
    import inspect

    default = TrainConfig(epochs=2)
    for optimizer in (keras.optimizers.Adam, keras.optimizers.AdamW):
        keras_defaults = inspect.signature(optimizer.__init__).parameters
        assert (default.adam_beta1, default.adam_beta2, default.adam_epsilon) == tuple(
            keras_defaults[name].default for name in ("beta_1", "beta_2", "epsilon")
        )
    assert not {"adam_beta1", "adam_beta2", "adam_epsilon"} & set(default.identity())
    fairseq = TrainConfig(epochs=2, optimizer="adam", adam_beta2=0.98, adam_epsilon=1e-8)
    assert (fairseq.identity()["adam_beta2"], fairseq.identity()["adam_epsilon"]) == (0.98, 1e-8)
    assert "adam_beta1" not in fairseq.identity()  # still at its default


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_from_a_config_steps_as_fairseqs_adam(optimizer):
    """Weights after 3 steps = a NumPy transcription of fairseq's Adam.step
    (facebookresearch/fairseq fairseq/optim/adam.py: denom = sqrt(v) + eps, step size
    lr * sqrt(1 - beta2^t) / (1 - beta1^t)) with the fork's betas (0.9, 0.98), eps 1e-8."""
    train = config(optimizer=optimizer, schedule="constant", learning_rate=0.01,
                   weight_decay=0.0, adam_beta2=0.98, adam_epsilon=1e-8)  # fmt: skip
    adam = lskd_tf.training.make_optimizer(train, steps_per_epoch=10)
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.98, 1e-8)
    start = np.array([0.5, -1.0, 2.0], np.float32)
    grads = [
        np.array(g, np.float32) for g in ([1.0, 1e-6, -3.0], [0.5, 0.0, 2.0], [-2.0, 1e-5, 1.0])
    ]
    variable = keras.Variable(start)
    for g in grads:
        adam.apply([tf.constant(g)], [variable])
    w, m, v = start.astype(np.float64), np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + (1 - 0.9) * g
        v = 0.98 * v + (1 - 0.98) * g * g
        w = w - 0.01 * np.sqrt(1 - 0.98**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6, atol=1e-7)


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
        (dict(max_updates=0), "max_updates must be an integer >= 1, or None"),
        (dict(validate_every_updates=-2), "validate_every_updates must be an integer >= 1"),
        (dict(patience=1.5), "patience must be an integer >= 1"),
        (dict(adam_beta2=1.0), r"adam_beta2 must be finite and in \[0, 1\), got 1.0"),
        (dict(adam_epsilon=0.0), "adam_epsilon must be finite and > 0"),
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


# ------------------------------------------------------------ training length in updates
# 96 examples at batch 16: 6 updates per epoch.


def dense_model(seed=0):
    """A few-parameter model without BatchNorm (its inference output moves only with lr)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(10, dtype="float32")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_max_updates_stops_mid_epoch_after_exactly_n_updates(tmp_path, tiny_cnn, capsys):
    """8 updates of 6-update epochs: a row after epoch 1 and one 2 updates into epoch 2;
    the first row is the epoch-counted run's, bit for bit (same reseeding)."""

    def train(run_dir, **overrides):
        return lskd_tf.train_teacher(
            tiny_cnn(name="t", seed=1), DATA, DATA, run_dir=run_dir, label_smoothing=0.1,
            config=config(**{"batch_size": 16, "epochs": 5, **overrides}),
        )  # fmt: skip

    capped = train(tmp_path / "capped", max_updates=8, verbose=1)
    assert "capped updates 6-8 of 8 (epoch 2)" in capsys.readouterr().out  # the progress bar
    history = pd.read_csv(tmp_path / "capped" / "history.csv")
    assert list(history["epoch"]) == [1, 2] and list(history["updates"]) == [6, 8]
    assert int(capped.model.optimizer.iterations) == 8
    info = json.loads((tmp_path / "capped" / "run.json").read_text())
    assert info["status"] == "finished" and info["stopped_by"] == "max_updates: 8"
    assert info["last"]["updates"] == 8
    epochs = train(tmp_path / "epochs", epochs=1)
    reference = pd.read_csv(tmp_path / "epochs" / "history.csv")
    assert "updates" not in reference  # an epoch-counted run's files are as before
    for key in ("loss", "top1", "val_loss", "val_top1", "learning_rate"):
        assert history[key].iloc[0] == reference[key].iloc[0], key
    assert int(epochs.model.optimizer.iterations) == 6


@pytest.mark.parametrize(
    "overrides, ends",
    [
        (dict(validate_every_updates=4), [(0, 4, 4), (1, 2, 8), (2, 0, 12)]),
        (dict(validate_every_updates=4, max_updates=9), [(0, 4, 4), (1, 2, 8), (1, 3, 9)]),
        (dict(max_updates=8), [(1, 0, 6), (1, 2, 8)]),
    ],
)
def test_validation_periods_read_each_epoch_once_in_order(overrides, ends):
    """The periods' batches, put end to end, are the epochs' batches (each shuffled by
    its own seed), however the periods cut them."""
    train = config(batch_size=16, epochs=2, **overrides)
    ids = np.arange(96, dtype="float32")
    epoch_fn = lskd_tf.training.as_epoch_fn((ids, Y), train)
    periods = lskd_tf.training.UpdatePeriods(train, epoch_fn, steps_per_epoch=6)
    seen, reached = [], []
    while (period := periods.next(len(reached))) is not None:
        batches = [x.numpy() for x, _ in period.data(period.index)]
        assert len(batches) == period.steps == period.end.updates - period.start.updates
        seen += batches
        reached.append((period.end.epoch, period.end.batch, period.end.updates))
    assert reached == ends
    epochs = []
    for epoch in (0, 1):  # as an epoch-counted run builds them: after reseeding the epoch
        lskd_tf.seeding.set_global_seeds(lskd_tf.seeding.epoch_seed(train.seed, epoch))
        epochs.append(np.concatenate([x.numpy() for x, _ in epoch_fn(epoch)]))
    assert not np.array_equal(epochs[0], epochs[1])  # two different shuffles
    np.testing.assert_array_equal(np.concatenate(seen), np.concatenate(epochs)[: ends[-1][2] * 16])


def test_periods_keep_an_epoch_function_s_input_context_parameter():
    """A function ``fn(epoch, input_context=None)`` (translation, per-worker shards) keeps
    its signature, so `lskd_tf.distribute` still hands each worker its context."""
    train = config(batch_size=16, epochs=2, validate_every_updates=4)
    plain = lskd_tf.training.as_epoch_fn((np.arange(96, dtype="float32"), Y), train)

    def with_context(epoch, input_context=None):
        assert input_context is None  # one process: global batches
        return plain(epoch)

    for epoch_fn, takes in ((plain, False), (with_context, True)):
        periods = lskd_tf.training.UpdatePeriods(train, epoch_fn, steps_per_epoch=6)
        periods.next(0)
        period = periods.next(1)  # batches 4-5 of epoch 1, 0-1 of epoch 2
        assert lskd_tf.distribute.takes_input_context(period.data) is takes
        got = np.concatenate([x.numpy() for x, _ in period.data(period.index)])
        lskd_tf.seeding.set_global_seeds(lskd_tf.seeding.epoch_seed(train.seed, 0))
        first = np.concatenate([x.numpy() for x, _ in plain(0)])
        np.testing.assert_array_equal(got[:32], first[64:])


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, tiny_cnn):
    """Validation every 4 updates of 6-update epochs: periods [0, 4) in epoch 1, [4, 8)
    across epochs 1-2, [8, 12) in epoch 2. Killed after the first (its resume state is 4
    batches into epoch 1), the run resumes mid-epoch and ends bit-identical to an
    uninterrupted one (Dropout's RNG included)."""
    cfg = config(batch_size=16, epochs=2, validate_every_updates=4)

    def train(run_dir, callbacks=()):
        return lskd_tf.train_teacher(
            tiny_cnn(name="t", seed=1), DATA, DATA, run_dir=run_dir, label_smoothing=0.1,
            config=cfg, callbacks=callbacks,
        )  # fmt: skip

    reference = train(tmp_path / "uninterrupted")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", callbacks=[StopAtEpoch(1)])
    state = json.loads((tmp_path / "resumed" / "resume" / "state.json").read_text())
    assert state["position"] == {"epoch": 0, "batch": 4, "updates": 4}
    resumed = train(tmp_path / "resumed")
    for a, b in zip(weights(resumed.model), weights(reference.model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.model.optimizer.iterations) == 12
    history = pd.read_csv(tmp_path / "resumed" / "history.csv")
    expected = pd.read_csv(tmp_path / "uninterrupted" / "history.csv")
    assert list(history["updates"]) == [4, 8, 12] and list(history["epoch"]) == [1, 2, 2]
    pd.testing.assert_frame_equal(
        history.drop(columns="epoch_time_s"), expected.drop(columns="epoch_time_s")
    )


def test_validation_periods_under_mirrored_strategy(tmp_path, tiny_cnn, mirrored_strategy):
    """Two replicas: periods across an epoch boundary, cut by max_updates, train exactly
    that many global batches (the pieces of a period are one distributed dataset)."""
    with mirrored_strategy.scope():
        model = tiny_cnn(name="t", seed=1, synchronized=True)
        result = lskd_tf.train_teacher(
            model, DATA, DATA, run_dir=tmp_path,
            config=config(batch_size=16, epochs=5, validate_every_updates=4, max_updates=10),
        )  # fmt: skip
    assert int(keras.ops.convert_to_numpy(result.model.optimizer.iterations)) == 10
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["updates"]) == [4, 8, 10] and list(history["epoch"]) == [1, 2, 2]


def test_patience_stops_after_that_many_validations_without_improvement(tmp_path):
    """lr 1e-10 on a Dense model: val_top1 never changes, so only the first validation is
    an improvement (strictly better). Patience 2 stops at the 3rd validation (6 updates,
    epochs and max_updates far away); killed after 2 validations, the resumed run
    remembers one validation without improvement and stops after one more, not two."""
    cfg = config(
        batch_size=32, epochs=50, learning_rate=1e-10, validate_every_updates=2,
        max_updates=1000, patience=2,
    )  # fmt: skip

    def train(run_dir, callbacks=()):
        return lskd_tf.train_teacher(
            dense_model(), DATA, DATA, run_dir=run_dir, config=cfg, callbacks=callbacks
        )

    result = train(tmp_path / "once")
    history = pd.read_csv(tmp_path / "once" / "history.csv")
    assert list(history["updates"]) == [2, 4, 6]
    assert history["val_top1"].nunique() == 1  # the hand-checkable premise
    assert int(result.model.optimizer.iterations) == 6
    info = json.loads((tmp_path / "once" / "run.json").read_text())
    assert info["stopped_by"].startswith("patience: 2 validations")
    assert info["best"]["updates"] == 2
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", callbacks=[StopAtEpoch(2)])
    resumed = train(tmp_path / "resumed")
    assert list(pd.read_csv(tmp_path / "resumed" / "history.csv")["updates"]) == [2, 4, 6]
    assert int(resumed.model.optimizer.iterations) == 6


def rates(train, steps, steps_per_epoch=10):
    """The learning rates `make_optimizer` gives at optimizer steps ``steps``."""
    optimizer = lskd_tf.training.make_optimizer(train, steps_per_epoch=steps_per_epoch)
    values = []
    for step in steps:
        optimizer.iterations.assign(step)
        values.append(float(optimizer.learning_rate))
    return values


def test_cosine_decays_over_max_updates_when_they_come_first():
    capped = config(schedule="cosine", milestones=(), epochs=10, max_updates=20)
    np.testing.assert_allclose(rates(capped, (0, 10, 20, 50)), [0.1, 0.05, 0, 0], atol=1e-7)
    # epochs come first (10 x 10 updates): the cosine spans them, as without max_updates
    longer = config(schedule="cosine", milestones=(), epochs=10, max_updates=1000)
    plain = config(schedule="cosine", milestones=(), epochs=10)
    assert rates(longer, (0, 50, 100)) == rates(plain, (0, 50, 100))
    np.testing.assert_allclose(rates(plain, (50,)), [0.05], rtol=1e-6)


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
