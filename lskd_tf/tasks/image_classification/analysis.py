"""The image-classification task's analysis: from finished runs' checkpoints to the
report of every measure.

`analyze_runs` loads each run's last checkpoint (and a student's teacher), runs it over
the evaluation split, and hands the outputs to `lskd_tf.analysis.analyze`: class
triples, superclasses and Müller's mutual information under image augmentation. The
loop over finished runs and the report are shared with every task
(`lskd_tf.analysis.driver`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lskd_tf.analysis.driver import finished_runs, write_study_report
from lskd_tf.run_dir import RunDir, spec_record


def augment_normalized(images: tf.Tensor) -> tf.Tensor:
    """Random pad-and-crop (1/8 of the size) and horizontal flip, per image.

    The CIFAR training augmentation (pad 4, random 32x32 crop, flip) applied to
    already-normalized images, for Müller's mutual-information estimate; the
    padding is 0, i.e. the dataset's mean colour.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    pad = max(1, height // 8)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])

    def one(image):
        image = tf.image.random_crop(image, (height, width, image.shape[-1]))
        return tf.image.random_flip_left_right(image)

    return tf.map_fn(one, padded)


def _examples_of(dataset: tf.data.Dataset, classes: Sequence[int], per_class: int):
    """Up to ``per_class`` images of each class in ``classes``, from a batched dataset."""
    images, labels = [], []
    counts = dict.fromkeys(classes, 0)
    for batch in dataset:
        for image, label in zip(batch[0].numpy(), batch[1].numpy()):
            label = int(label)
            if label in counts and counts[label] < per_class:
                images.append(image)
                labels.append(label)
                counts[label] += 1
        if all(count >= per_class for count in counts.values()):
            break
    return np.stack(images), np.array(labels)


def _class_sample(task, spec, split: str, classes, per_class: int, batch_size: int):
    """The first ``per_class`` images of each of ``classes`` in ``split`` (eval transform),
    picked from the labels before decoding (`lskd_tf.data.pipeline.first_per_class`)."""
    return task.dataset(
        spec, split, batch_size=batch_size, training=False, classes=classes, per_class=per_class
    )


def analyze_runs(
    task,
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tensorboard_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    train_per_class: int = 150,
    val_per_class: int = 50,
    mi_examples_per_class: int = 300,
    mi_augmentations: int = 10,
    title: str = "lskd_tf analysis",
) -> Path:
    """Analyze finished image-classification runs and write one Markdown report.

    ``task`` is the `lskd_tf.tasks.image_classification` task that reads the runs' data.

    For each run: the model's last checkpoint on the evaluation split; the projection
    of the first ``train_per_class`` training and ``val_per_class`` validation images of
    each class of the triple (eval transform), as Chandrasegaran et al.'s script
    (sutd-visual-computing-group/LS-KD-compatibility,
    src/visualization/alpha-LS-KD_imagenet_centroids.py: 150 and 50, its PCA fitted on
    the training sample; on ImageNet the triple is theirs, 266/267/833, with the bias
    indexed by class id, fixing their bias-index bug: `lskd_tf.analysis.projection`); the teacher's
    outputs on the same examples for students, Müller's mutual information on up
    to ``mi_examples_per_class`` evaluation images of the two similar projection
    classes under ``mi_augmentations`` draws of `augment_normalized`; every measure of
    `lskd_tf.analysis.analyze`, figures in ``out_dir/<run>/``, the report in
    ``out_dir/report.md`` and everything in TensorBoard under ``tensorboard_dir``.
    """
    from lskd_tf import analysis

    out_dir = Path(out_dir)
    entries = []
    teacher_cache: dict[str, dict] = {}
    for run_dir, info, spec in finished_runs(run_dirs):
        run = RunDir(run_dir)
        dataset_info = task.dataset_info(spec)
        eval_ds = task.eval_dataset(spec, batch_size=batch_size)
        model = keras.models.load_model(run.checkpoint("last"))
        outputs = analysis.collect_outputs(model, eval_ds)
        classes = analysis.default_class_triple(
            dataset_info.superclass, dataset_info.class_names, dataset_info.name
        )
        train_sample, val_sample = (
            _class_sample(task, spec, split, classes, per_class, batch_size)
            for split, per_class in (
                (dataset_info.train_split, train_per_class),
                (dataset_info.eval_split, val_per_class),
            )
        )
        # Müller's MI between example index and the logit gap of the two similar classes.
        pair = _class_sample(
            task, spec, dataset_info.eval_split, classes[:2], mi_examples_per_class, batch_size
        )
        pair_images, pair_labels = _examples_of(pair, classes[:2], mi_examples_per_class)
        augmented = analysis.collect_augmented_logits(
            model, pair_images, pair_labels, augment_normalized, mi_augmentations
        )
        teacher_outputs = None
        record = spec_record(info)  # the spec's keys (run.json stores them once)
        if record.get("kind") == "student":
            teacher_path = info["teacher_checkpoint_used"]
            if teacher_path not in teacher_cache:
                teacher = keras.models.load_model(teacher_path)
                teacher_cache[teacher_path] = analysis.collect_outputs(teacher, eval_ds)
            teacher_outputs = teacher_cache[teacher_path]
        metrics = analysis.analyze(
            teacher_outputs=teacher_outputs,
            student_outputs=outputs,
            superclass=dataset_info.superclass,
            class_names=dataset_info.class_names,
            train_outputs=analysis.collect_outputs(model, train_sample),
            val_outputs=analysis.collect_outputs(model, val_sample),
            out_dir=out_dir / run_dir.name,
            name=run_dir.name,
            classes=classes,
            temperature=record.get("temperature"),
            dataset=dataset_info.name,
            augmented_logits=augmented,
            tensorboard_logdir=(
                Path(tensorboard_dir) / run_dir.name / "analysis" if tensorboard_dir else None
            ),
        )
        entries.append({"name": run_dir.name, "config": info, "metrics": metrics})
    return write_study_report(entries, out_dir, tensorboard_dir=tensorboard_dir, title=title)
