"""Contract tests over every registered name, parametrized from the registries themselves.

A new KD loss, dataset or model is tested here without editing this file. The last test
follows ARCHITECTURE.md's "to add X, touch Y" table from outside the package: it adds a
dataset, a model, a KD loss and a task, each in one place, and runs a study with them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import lskd_tf
from lskd_tf import data, experiment, losses, models, registry, sweep, tasks
from lskd_tf.data.info import DataNotFoundError, DatasetInfo
from lskd_tf.data.source import Source
from lskd_tf.run_dir import RunDir

# ------------------------------------------------------------------------ Registry itself


def test_registry_spelling_errors_and_lazy_built_ins(tmp_path, monkeypatch):
    reg = registry.Registry("widget", built_in={"late_one": "widgets_late"})
    reg.register("wide_resnet", 1)

    @reg.register("narrow")
    class Narrow:
        pass

    assert reg.get("Wide-ResNet") == 1 and reg.get("NARROW") is Narrow
    assert reg.resolve("wide-resnet") == "wide_resnet"
    assert reg.available() == ["late_one", "narrow", "wide_resnet"]  # listed, not imported
    with pytest.raises(ValueError) as error:
        reg.get("wide_resnt")
    assert str(error.value) == (
        "unknown widget 'wide_resnt'; did you mean 'wide_resnet'? "
        "available: late_one, narrow, wide_resnet"
    )
    (tmp_path / "widgets_late.py").write_text(
        "from test_registries import LATE\nLATE.register('late_one', 'loaded')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    global LATE
    LATE = reg
    assert reg.get("late-one") == "loaded"  # imported on first lookup

    # A package registry finds a new module of its package: no list to edit.
    (tmp_path / "gizmos").mkdir()
    (tmp_path / "gizmos" / "__init__.py").write_text("")
    (tmp_path / "gizmos" / "new_one.py").write_text(
        "from test_registries import LATE\nLATE.register('from_module', 7)\n"
    )
    LATE = registry.Registry("gizmo", package="gizmos")
    assert LATE.get("From-Module") == 7 and LATE.available() == ["from_module"]
    strict = registry.Registry("gadget", replace=False)
    strict.register("a", 1)
    with pytest.raises(ValueError, match="a gadget named 'a' is already registered"):
        strict.register("a", 2)


def test_every_registry_answers_in_the_same_format():
    lookups = [
        (lambda: losses.get_kd_loss("kll", temperature=1.0), "KD loss", "kl"),
        (lambda: data.get_source("embeded"), "dataset", "embedded"),
        (lambda: models.get("resnet21", 10), "model", "resnet20"),
        (lambda: tasks.get("translatoin"), "task", "translation"),
    ]
    with pytest.raises(ValueError, match="write kd_loss='kl', not 'KL'"):
        lskd_tf.DistillSpec(kd_loss="KL")  # a spec's name enters run names: exact spelling
    with pytest.raises(ValueError, match="write task='translation', not 'Translation'"):
        experiment.TeacherSpec(task="Translation", model="transformer_tiny")
    for lookup, kind, close in lookups:
        with pytest.raises(ValueError) as error:
            lookup()
        message = str(error.value)
        assert message.startswith(f"unknown {kind} '") and "\n" not in message
        hint, listed = message.split("? available: ")
        assert "; did you mean " in hint and f"'{close}'" in hint and close in listed


# ------------------------------------------------------------------------ KD losses
def _kd_loss(name, temperature, k=3):
    topk = k if losses.reads_topk(name) else 0
    return losses.get_kd_loss(name, temperature=temperature, topk=topk)


def _teacher(name, logits, k=3):
    """What the loss ``name`` reads of the teacher: the logits, or their top k."""
    if not losses.reads_topk(name):
        return logits
    ids = np.argsort(-logits, axis=-1)[..., :k]
    return losses.sparse_teacher(ids, np.take_along_axis(logits, ids, axis=-1))


@pytest.mark.parametrize("name", losses.kd_losses())
def test_kd_loss_contract(name):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 7)).astype("float32") * 3
    # Zero for identical logits (a top-k loss keeping every class is the full KL).
    full = _kd_loss(name, 4.0, k=7)
    assert float(full(_teacher(name, logits, k=7), logits)) == pytest.approx(0.0, abs=1e-5)
    loss = _kd_loss(name, 4.0)

    # Finite at float16 and T = 64, with logits far apart.
    student = rng.normal(size=logits.shape).astype("float32") * 30
    hot = _kd_loss(name, 64.0)
    value = hot(_teacher(name, (logits * 10).astype("float16")), student.astype("float16"))
    assert np.isfinite(float(value))

    # The masked mean ignores padding: garbage at a padded position changes nothing.
    mask = np.ones(logits.shape[:2], "float32")
    mask[:, -1] = 0.0
    garbage = student.copy()
    garbage[:, -1] = 1e4 * rng.normal(size=garbage[:, -1].shape)
    clean = float(loss(_teacher(name, logits), student, sample_weight=mask))
    dirty = float(loss(_teacher(name, logits), garbage, sample_weight=mask))
    assert dirty == pytest.approx(clean, rel=1e-5)
    unpadded = float(loss(_teacher(name, logits[:, :-1]), student[:, :-1]))
    assert clean == pytest.approx(unpadded, rel=1e-5)

    # Config round trip: the same loss (and value) from its config.
    again = type(loss).from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    assert float(again(_teacher(name, logits), student)) == pytest.approx(
        float(loss(_teacher(name, logits), student)), rel=1e-6
    )


# ------------------------------------------------------------------------ image datasets
TINY_OPTIONS = {"embedded": dict(train_per_class=1, test_per_class=1)}
"""Options that keep a dataset tiny here; a dataset not named uses its defaults."""


@pytest.mark.parametrize("name", data.available())
def test_dataset_contract(name):
    """Info matches the batches; the same seed gives the same batches. A TFDS set that is
    not prepared on this machine runs its real pipeline on `tfds.testing.mock_data`."""
    options = TINY_OPTIONS.get(name, {})
    info = data.get_info(name, **options)
    source = data.get_source(name)
    assert source.name == name and info.eval_split in source.splits

    def batches(seed):
        def take():
            dataset = data.make_dataset(name, info.train_split, global_batch_size=4,
                                        training=True, seed=seed, **options)  # fmt: skip
            return [tuple(t.numpy() for t in batch) for batch in dataset.take(2)]

        try:
            return take()
        except DataNotFoundError:  # a TFDS set not prepared here: its real loading code
            with tfds.testing.mock_data(num_examples=8):  # on TFDS's random examples
                try:
                    return take()
                except tf.errors.InvalidArgumentError as mock_failed:  # CUB: random bboxes
                    pytest.skip(f"{name}: tfds mock data is invalid ({str(mock_failed)[:60]})")

    first = batches(seed=3)
    for images, labels in first:
        assert images.shape[1:] == info.input_shape and images.dtype == np.float32
        assert labels.dtype == np.int32 and ((labels >= 0) & (labels < info.num_classes)).all()
    assert len(info.class_names) == info.num_classes
    for (a, la), (b, lb) in zip(first, batches(seed=3)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


# ------------------------------------------------------------------------ image models
WD = 1e-4


def _reference_classes(spec: models.ModelSpec) -> int:
    return 100 if spec.family == "cifar" else 1000


@pytest.mark.parametrize("name", models.available())
def test_model_contract(name):
    """Built at its smallest input with its reference's class count: the parameter count
    of the reference, float32 logits of one image, weight decay on every trainable
    variable under scope "all" (models/weight_decay.py)."""
    spec = models.describe(name)
    size = spec.min_input_size
    size += -size % spec.size_multiple
    classes = _reference_classes(spec)
    model = models.get(name, classes, input_shape=(size, size, 3), weight_decay=WD,
                       weight_decay_scope="all")  # fmt: skip
    if spec.reference_params is not None:
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == (
            spec.reference_params
        )
    logits = model(np.zeros((1, size, size, 3), "float32"), training=False)
    assert logits.shape == (1, classes) and logits.dtype == "float32"
    assert all(v.regularizer is not None for v in model.trainable_weights)
    with pytest.raises(ValueError, match="input"):
        models.get(name, classes, input_shape=(size - 1, size - 1, 3))


# ------------------------------------------------------------------------ tasks
TINY_STUDIES = {
    "image_classification": ("resnet8", "embedded", (("train_per_class", 1),
                                                     ("test_per_class", 1))),
}  # fmt: skip
"""A small model, dataset and options per task; a task not named uses its first of each."""
RUN_ELSEWHERE = {
    "translation": "tests/test_translation.py::finished runs a whole study (a one-update "
    "study here measured 28 s: tokenizer training and beam-search tracing)",
}
"""Tasks whose one-update study is not run here because another test runs a whole one."""


@pytest.mark.parametrize("name", tasks.available())
def test_task_contract(name, tmp_path):
    """Every task names its datasets and models, plans a study and runs it for one update."""
    task = tasks.get(name)
    assert task.name == name and task.datasets() and task.models()
    assert task.monitor and task.headline
    model, dataset, options = TINY_STUDIES.get(name, (task.models()[0], task.datasets()[0], ()))
    train = lskd_tf.TrainConfig(epochs=1, max_updates=1, batch_size=8, verbose=0,
                                weight_decay=0.0)  # fmt: skip
    spec = experiment.StudySpec(task=name, teacher_models=(model,), student_models=(model,),
                                temperatures=(2.0,), teacher_smoothings=(0.1,), seeds=(0,),
                                teacher_train=train, student_train=train,
                                data=experiment.DataSpec(name=dataset,
                                                         options=options))  # fmt: skip
    runs = experiment.plan_study(spec)
    assert [run.kind for run in runs] == ["teacher", "student"]
    if name in RUN_ELSEWHERE:
        return
    env = experiment.RunEnv(output_dir=str(tmp_path), study="contract",
                            tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    sweep.run_study(runs, env)
    for run in runs:
        history = RunDir(env.run_dir(run)).read_history()
        assert RunDir(env.run_dir(run)).is_finished() and len(history) == 1
        assert np.isfinite(history[0][f"val_{task.monitor}"])


# ------------------------------------------------------------------------ add one of each
# Each addition below is in one place, as ARCHITECTURE.md's table says.


class Stripes(Source):
    """A dataset: 8x8 images whose class is the row holding a bright stripe."""

    name = "stripes"
    splits = ("train", "test")
    option_defaults = {"per_class": 4}

    def info(self, data_dir, options):
        count = 4 * options["per_class"]
        return DatasetInfo(name=self.name, num_classes=4, class_names=list("abcd"),
                           superclass=None, superclass_names=None, input_shape=(8, 8, 3),
                           mean=(0.5,) * 3, std=(0.5,) * 3,
                           num_examples={"train": count, "test": count},
                           train_split="train", eval_split="test")  # fmt: skip

    def examples(self, split, data_dir, download, options):
        labels = np.tile(np.arange(4), options["per_class"]).astype("int64")
        images = np.zeros((len(labels), 8, 8, 3), "uint8")
        images[np.arange(len(labels)), 2 * labels] = 255
        return tf.data.Dataset.from_tensor_slices((images, labels))

    def train_image(self, image, seed, options):
        return tf.cast(image, tf.float32)

    def eval_image(self, image, options):
        return tf.cast(image, tf.float32)


def _tiny_net(name, num_classes, input_shape, factory, **options):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, factory.classifier(x, num_classes), name=name)


@losses.register_kd_loss("outside_l1")
class LogitL1(losses.MaskedMeanLoss):
    """Mean absolute logit gap; T and T^2 are ignored."""

    def __init__(self, temperature=1.0, t2_scaling=True, **kwargs):
        super().__init__(**kwargs)

    def call(self, teacher_logits, student_logits):
        gap = keras.ops.cast(student_logits, "float32") - keras.ops.cast(teacher_logits, "float32")
        return keras.ops.mean(keras.ops.abs(gap), axis=-1)


def test_add_one_of_each_from_outside(tmp_path):
    data.register(Stripes())
    models.register("outside_net", "cifar", 8, "tests/test_registries.py", None, _tiny_net)
    image_task = tasks.get("image_classification")

    class StripesOnly(type(image_task)):
        name = "stripes_images"

        def datasets(self):
            return ["stripes"]

    tasks.register(StripesOnly())
    assert {"stripes"} <= set(data.available()) and "outside_net" in image_task.models()
    assert "outside_l1" in losses.kd_losses() and "stripes_images" in tasks.available()

    train = lskd_tf.TrainConfig(epochs=1, batch_size=8, verbose=0, weight_decay=0.0)
    spec = experiment.StudySpec(
        task="stripes_images", data=experiment.DataSpec(name="stripes"),
        teacher_models=("outside_net",), student_models=("outside_net",),
        teacher_smoothings=(0.1,), temperatures=(2.0,), seeds=(0,),
        teacher_train=train, student_train=train,
        distill=lskd_tf.DistillSpec(kd_loss="outside_l1"),
    )  # fmt: skip
    env = experiment.RunEnv(output_dir=str(tmp_path), study="outside",
                            tensorboard_dir=str(tmp_path / "tb"))  # fmt: skip
    teacher, student = experiment.plan_study(spec)
    assert student.distill.kd_loss == "outside_l1" and "outside_l1" in student.name
    sweep.run_study([teacher, student], env)
    for run in (teacher, student):
        assert RunDir(env.run_dir(run)).is_finished()
    history = RunDir(env.run_dir(student)).read_history()
    assert np.isfinite(history[-1]["val_kd_loss"]) and history[-1]["val_kd_loss"] > 0
