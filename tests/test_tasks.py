"""The seams: a task and a KD loss defined here, outside lskd_tf, run through the same code.

Nothing in this file edits lskd_tf: a toy sequence-tagging task (tag each token with a
function of its neighbours; padding masked) trains teachers, distills students, resumes
and reports through `lskd_tf.sweep` and `lskd_tf.results`; a second KD loss is chosen
by name from a `StudySpec` and from a flag.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from conftest import StopAtEpoch

import lskd_tf
from lskd_tf import experiment, losses, results, sweep, tasks
from lskd_tf import flags as lf
from lskd_tf.run_dir import RunDir

VOCAB, TAGS, LENGTH = 12, 5, 6


class ToyTagging(tasks.Task):
    """Tag every token of a padded sequence; the tag is (token + next token) mod TAGS."""

    name = "toy_tagging"

    def datasets(self):
        return ["toy_sequences"]

    def dataset_info(self, data):
        class Info:
            num_classes = TAGS

            def to_dict(self):
                return {"num_classes": TAGS, "vocabulary": VOCAB}

        return Info()

    def _examples(self, split: str, count: int):
        rng = np.random.default_rng(0 if split == "train" else 1)
        tokens = rng.integers(1, VOCAB, (count, LENGTH)).astype("int32")
        lengths = rng.integers(2, LENGTH + 1, count)
        mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype("float32")
        tokens = tokens * mask.astype("int32")  # 0 = padding
        tags = (tokens + np.roll(tokens, -1, axis=1)) % TAGS
        return tokens, tags.astype("int32"), mask

    def train_fn(self, data, *, batch_size, seed):
        tokens, tags, mask = self._examples("train", 96)

        def epoch_dataset(epoch, input_context=None):
            return (
                tf.data.Dataset.from_tensor_slices((tokens, tags, mask))
                .shuffle(len(tokens), seed=lskd_tf.seeding.epoch_seed(seed, epoch))
                .batch(batch_size, drop_remainder=True)
            )

        return epoch_dataset

    def eval_dataset(self, data, *, batch_size):
        return tf.data.Dataset.from_tensor_slices(self._examples("test", 32)).batch(batch_size)

    def models(self):
        return ["toy_wide", "toy_narrow"]

    def build_model(self, name, info, *, train, synchronized_bn):
        width = 16 if name == "toy_wide" else 4
        inputs = keras.Input((LENGTH,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, width)(inputs)
        x = keras.layers.Conv1D(width, 2, padding="causal")(keras.ops.flip(x, axis=1))
        x = keras.ops.flip(x, axis=1)  # sees the token and the next one
        return keras.Model(inputs, keras.layers.Dense(TAGS)(keras.layers.ReLU()(x)), name=name)


tasks.register(ToyTagging())


@losses.register_kd_loss("toy_mse")
class LogitMSE(losses.MaskedMeanLoss):
    """Mean squared difference of the logits (Ba & Caruana 2014); T and T² are ignored."""

    def __init__(self, temperature=1.0, t2_scaling=True, **kwargs):
        super().__init__(**kwargs)

    def call(self, teacher_logits, student_logits):
        difference = keras.ops.cast(student_logits, "float32") - keras.ops.cast(
            teacher_logits, "float32"
        )
        return keras.ops.mean(difference**2, axis=-1)


def toy_study(**changes):
    train = lskd_tf.TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, schedule="cosine",
                                weight_decay=0.0, verbose=0)  # fmt: skip
    spec = dict(
        task="toy_tagging", teacher_models=("toy_wide",), teacher_smoothings=(0.0, 0.1),
        student_models=("toy_narrow",), temperatures=(1.0, 4.0), seeds=(0,),
        teacher_train=train, student_train=train,
        data=experiment.DataSpec(name="toy_sequences"),
    )  # fmt: skip
    return experiment.StudySpec(**{**spec, **changes})


def test_a_task_defined_outside_lskd_tf_trains_distills_resumes_and_reports(tmp_path):
    specs = experiment.plan_study(toy_study())
    env = experiment.RunEnv(output_dir=str(tmp_path), study="toy", tensorboard_dir=str(tmp_path))
    killed = experiment.RunEnv(**{**env.__dict__, "callbacks": (StopAtEpoch(1),)})
    with pytest.raises(KeyboardInterrupt):
        sweep.run_study(specs[:2], killed)  # the first teacher is killed after one epoch
    first = RunDir(env.run_dir(specs[0]))
    assert first.status() == "interrupted" and len(first.read_history()) == 1
    run_dirs = sweep.run_study(specs, env)  # resumes it, then trains everything else
    assert all(RunDir(d).is_finished() for d in run_dirs)

    # Resumed == uninterrupted, to the last bit.
    fresh = experiment.RunEnv(output_dir=str(tmp_path / "fresh"), study="toy",
                              tensorboard_dir=str(tmp_path / "fresh"))  # fmt: skip
    sweep.run_study(specs[:1], fresh)
    resumed = keras.models.load_model(first.checkpoint("last")).get_weights()
    straight = RunDir(fresh.run_dir(specs[0])).checkpoint("last")
    for a, b in zip(resumed, keras.models.load_model(straight).get_weights()):
        np.testing.assert_array_equal(a, b)

    # The task's padding mask reached the losses: token accuracy is over real tokens.
    student = next(s for s in specs if s.kind == "student")
    info = RunDir(env.run_dir(student)).read()
    assert info["spec"]["task"] == "toy_tagging" and info["monitor"] == "val_top1"
    model = keras.models.load_model(RunDir(env.run_dir(student)).checkpoint("last"))
    tokens, tags, mask = ToyTagging()._examples("test", 32)
    predicted = model.predict(tokens, verbose=0).argmax(-1)
    accuracy = ((predicted == tags) * mask).sum() / mask.sum()
    assert info["last"]["val_top1"] == pytest.approx(accuracy, abs=1e-6)

    table = results.student_table(results.collect_runs([env.study_dir]))
    assert list(table.index) == [("toy_narrow", "1"), ("toy_narrow", "4")]
    assert {"last a=0", "last a=0.1", "last Δ(LS−noLS)"} <= set(table.columns)
    cell = table.loc[("toy_narrow", "4"), "last a=0.1"]
    student_t4 = next(s for s in specs if s.kind == "student" and s.distill.temperature == 4.0
                      and s.teacher.label_smoothing == 0.1)  # fmt: skip
    recorded = RunDir(env.run_dir(student_t4)).read()["last"]["val_top1"]
    assert float(cell) == pytest.approx(100 * recorded, abs=0.005)


def test_a_registered_kd_loss_is_chosen_by_name_from_a_study_and_a_flag(tmp_path):
    study = toy_study(distill=lskd_tf.DistillSpec(kd_loss="toy_mse"), temperatures=(1.0,),
                      teacher_smoothings=(0.0,))  # fmt: skip
    teacher, student = experiment.plan_study(study)
    assert student.distill.kd_loss == "toy_mse" and student.name.endswith(
        "toy_mse-seed0-from-toy_wide-ls0-seed0"
    )
    env = experiment.RunEnv(output_dir=str(tmp_path), study="mse", tensorboard_dir=str(tmp_path))
    sweep.run_study([teacher, student], env)
    info = RunDir(env.run_dir(student)).read()
    assert info["kd_loss"] == "toy_mse" and info["spec"]["kd_loss"] == "toy_mse"
    # The reported kd_loss is the registered loss: the masked mean squared logit gap.
    teacher_model = keras.models.load_model(RunDir(env.run_dir(teacher)).checkpoint("last"))
    student_model = keras.models.load_model(RunDir(env.run_dir(student)).checkpoint("last"))
    tokens, _, mask = ToyTagging()._examples("test", 32)
    gap = student_model.predict(tokens, verbose=0) - teacher_model.predict(tokens, verbose=0)
    expected = ((gap**2).mean(-1) * mask).sum() / mask.sum()
    history = RunDir(env.run_dir(student)).read_history()
    assert history[-1]["val_kd_loss"] == pytest.approx(expected, rel=1e-4)

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", "--task=toy_tagging", "--dataset=toy_sequences",
                     "--teacher_models=toy_wide", "--student_models=toy_narrow",
                     "--kd_loss=toy_mse"])  # fmt: skip
        from_flags = lf.study_spec()
        assert from_flags.distill.kd_loss == "toy_mse" and from_flags.task == "toy_tagging"
        flagfile = lf.flagfile_for(experiment.plan_study(from_flags)[1], lf.run_env())
        assert "--kd_loss=toy_mse\n" in flagfile and "--task=toy_tagging\n" in flagfile
        with pytest.raises(flags.IllegalFlagValueError, match="unknown KD loss 'nope'"):
            flags.FLAGS(["run.py", "--kd_loss=nope"])


def test_unknown_task_names_fail_in_one_line():
    with pytest.raises(ValueError, match="unknown task 'speech';.* available: .*translation"):
        tasks.get("speech")
    with pytest.raises(ValueError, match="unknown model 'resnet20';.* available: .*toy_narrow"):
        experiment.plan_study(toy_study(teacher_models=("resnet20",)))


def test_import_lskd_tf_reaches_every_subpackage(tmp_path):
    import subprocess
    import sys

    checkpoint = tmp_path / "resnet8.keras"
    code = f"import lskd_tf, keras\nlskd_tf.models.get('resnet8', 10).save({str(checkpoint)!r})\n"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    code = (
        "import lskd_tf, keras\n"  # a fresh process: import lskd_tf alone registers the layers
        f"keras.models.load_model({str(checkpoint)!r})\n"
        "print(lskd_tf.models.get('resnet8', 10).count_params())\n"
        "print(lskd_tf.data.available()[0])\n"
        "print(lskd_tf.analysis.expected_calibration_error.__name__)\n"
        "print(lskd_tf.tasks.get().name)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["78714", "caltech_birds2011", "expected_calibration_error",
                   "image_classification"]  # fmt: skip


def test_run_records_are_generated_from_the_distill_spec():
    student = experiment.plan_study(toy_study())[1]
    record = student.record()
    for field, value in student.distill.to_dict().items():
        assert record[field] == value
    hparams = experiment.hparams_of(student)
    assert {k: hparams[k] for k in student.distill.to_dict()} == student.distill.to_dict()
    assert json.loads(json.dumps(record)) == record
