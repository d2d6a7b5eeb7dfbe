"""Runs of one process sharing a compiled train model (`lskd_tf.reuse`): the same bits."""

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import lskd_tf
from lskd_tf import experiment, reuse, sweep
from lskd_tf.losses import DistillationKL, SmoothedCrossEntropy, TopKDistillationKL
from lskd_tf.run_dir import RunDir

TRAIN = lskd_tf.TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, milestones=(1,),
                               verbose=0)  # fmt: skip
DATA = experiment.DataSpec(name="embedded", options=(("train_per_class", 4), ("test_per_class", 2)))


# ------------------------------------------------------------------- held loss settings


def _traced(loss):
    """A traced step: the loss and its gradient with respect to the logits."""

    @tf.function
    def step(y_true, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(y_true, logits)
        return value, tape.gradient(value, logits)

    return lambda y_true, logits: [t.numpy() for t in step(y_true, logits)]


UNIFORM, OTHERS = dict(convention="uniform"), dict(convention="others")
CASES = [
    (SmoothedCrossEntropy, dict(alpha=0.1, **UNIFORM), dict(alpha=0.0, **UNIFORM)),
    (SmoothedCrossEntropy, dict(alpha=0.0, **OTHERS), dict(alpha=0.3, **OTHERS)),
    (DistillationKL, dict(temperature=4.0), dict(temperature=1.0)),
    (DistillationKL, dict(temperature=1.0), dict(temperature=3.0)),
    (TopKDistillationKL, dict(temperature=2.0, topk=3), dict(temperature=64.0, topk=3)),
]  # fmt: skip


@pytest.mark.parametrize("cls, first, second", CASES)
def test_a_traced_loss_given_other_settings_computes_as_if_built_with_them(cls, first, second):
    """A step traced with a loss's settings held in variables, after the loss is given
    another run's settings, computes what a step traced for those settings computes:
    value and gradient bit for bit (alpha = 0 included). The value is also the bits of
    the loss with its settings as graph constants; the gradient only within float32
    rounding (Grappler folds constants into it: `lskd_tf.reuse`)."""
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(6, 5, 11)) * 3, tf.float32)
    if cls is SmoothedCrossEntropy:
        y_true = tf.constant(rng.integers(0, 11, size=(6, 5)), tf.int32)
    else:
        y_true = tf.constant(rng.normal(size=(6, 5, 11)) * 3, tf.float32)
    held = cls(**first)
    held.hold_settings_in_variables()
    step = _traced(held)
    for settings in (first, second):
        expected_loss = cls(**settings)
        held.assign_settings_from(expected_loss)
        assert held.get_config() == {**expected_loss.get_config(), "name": held.name}
        value, gradient = step(y_true, logits)
        constant_value, constant_gradient = _traced(expected_loss)(y_true, logits)
        expected_loss.hold_settings_in_variables()
        expected_value, expected_gradient = _traced(expected_loss)(y_true, logits)
        np.testing.assert_array_equal(value, expected_value)
        np.testing.assert_array_equal(gradient, expected_gradient)
        np.testing.assert_array_equal(value, constant_value)
        np.testing.assert_allclose(gradient, constant_gradient, rtol=1e-5, atol=1e-7)
    assert held.settings_free_config() == cls(**second).settings_free_config()


# ------------------------------------------------------------------- whole runs


def _specs():
    study = experiment.StudySpec(
        task="image_classification", teacher_models=("resnet8",), teacher_smoothings=(0.0, 0.1),
        student_models=("resnet8",), temperatures=(4.0, 1.0), seeds=(0,),
        teacher_train=TRAIN, student_train=TRAIN, data=DATA,
    )  # fmt: skip
    return experiment.plan_study(study)


def _outcome(env, spec):
    run = RunDir(env.run_dir(spec))
    history = pd.read_csv(run.path / "history.csv").drop(columns=["epoch_time_s"])
    model = keras.models.load_model(run.checkpoint("last"))
    return history, [w.numpy() for w in model.weights]


def test_runs_on_one_compiled_model_give_a_fresh_runs_numbers(tmp_path, monkeypatch):
    """A study whose later teacher (other LS) and students (other T, other teacher) train
    the first ones' compiled models gives, run by run, the history and weights of runs
    that each compiled and traced anew; only the first teacher and student trace."""
    specs = _specs()
    assert [s.kind for s in specs].count("student") == 4
    cache = reuse.CompiledModels()
    monkeypatch.setattr(reuse, "DEFAULT", cache)
    traces = []
    original = keras.Model.make_train_function

    def counted(model, force=False):
        if model.train_function is None:
            traces.append(type(model).__name__)
        return original(model, force)

    monkeypatch.setattr(keras.Model, "make_train_function", counted)
    shared = experiment.RunEnv(output_dir=str(tmp_path / "shared"), tensorboard_dir=str(tmp_path))
    results = sweep.run_study(specs, shared)
    assert len(results) == 6
    assert (cache.misses, cache.hits) == (2, 4)
    assert traces == ["Functional", "Distiller"]

    fresh = dataclasses.replace(shared, output_dir=str(tmp_path / "fresh"), reuse_compiled=False)
    sweep.run_study(specs, fresh)
    assert (cache.misses, cache.hits) == (2, 4)  # untouched
    assert len(traces) == 8
    for spec in specs:
        (history, weights), (expected_history, expected) = (
            _outcome(env, spec) for env in (shared, fresh)
        )
        pd.testing.assert_frame_equal(history, expected_history, check_exact=True)
        for got, want in zip(weights, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_model_of_another_structure_is_not_reused():
    """Same key, other weights' shapes or another loss: a miss that replaces the entry,
    never a wrong model."""
    cache = reuse.CompiledModels()

    def compiled(width):
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(width)]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SmoothedCrossEntropy(0.1))
        model.optimizer.build(model.trainable_variables)
        return model

    first, second, third = compiled(10), compiled(10), compiled(12)
    assert cache.adopt("k", first, first) == (first, first)
    assert cache.adopt("k", second, second) == (first, first)  # a hit: second's state in first
    assert cache.adopt("k", third, third) == (third, third)
    assert (cache.misses, cache.hits, len(cache)) == (2, 1, 1)
    fourth = compiled(12)
    fourth.loss = SmoothedCrossEntropy(0.1, "others")  # another convention: not held
    assert cache.adopt("k", fourth, fourth) == (fourth, fourth)
    assert (cache.misses, cache.hits) == (3, 1)


def test_a_hit_starts_from_the_new_runs_state(tiny_cnn):
    """Weights, optimizer slots and iterations, and the loss's smoothing are the new run's."""
    cache = reuse.CompiledModels(capacity=1)

    def compiled(seed, alpha):
        model = tiny_cnn(name=f"m{seed}", seed=seed)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=SmoothedCrossEntropy(alpha)
        )
        model.optimizer.build(model.trainable_variables)
        return model

    first = compiled(0, 0.0)
    cache.adopt("k", first, first)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    first.fit(x, np.arange(4) % 10, epochs=1, verbose=0)  # slots and iterations move
    second = compiled(1, 0.2)
    model, _ = cache.adopt("k", second, second)
    assert model is first and model.loss.alpha == 0.2
    assert float(model.loss.constant("keep").numpy()) == np.float32(0.8)
    for got, want in zip(model.weights, second.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0
    moved = [v.numpy() for v in first.optimizer.variables]
    for got, want in zip(model.optimizer.variables, second.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())  # zero slots, the lr
    assert any(np.any(v) for v in moved)
