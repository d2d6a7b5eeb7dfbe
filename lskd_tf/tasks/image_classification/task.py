"""Image classification: the papers' CIFAR-100, ImageNet and CUB-200 experiments.

Data come from `lskd_tf.data` (batches ``(images, labels)``), models from
`lskd_tf.models` (logits over K classes, a "classifier" Dense layer), teachers' outputs
can be cached (`lskd_tf.teacher_cache`: every view of CIFAR's pad-crop-flip, or
sampled views), students are exported as SavedModels taking normalized or uint8 images
(`lskd_tf.export`), and the analyses are `lskd_tf.analysis` (stability, calibration,
systematic diffusion, penultimate-layer projections, mutual information).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras

from lskd_tf import data as datasets
from lskd_tf import models, tasks


class ImageClassification(tasks.Task):
    """Classify images into K classes; reports top-1 and top-5 accuracy."""

    name = "image_classification"
    monitor = "top1"

    # ------------------------------------------------------------------ data

    def datasets(self) -> list[str]:
        return datasets.available()

    def data_options(self, name: str) -> list[str]:
        """The source's options (`lskd_tf.data.source.Source.resolve_options`), plus
        ``superclass_mapping`` (read by `lskd_tf.data.get_info`)."""
        self._check_dataset_name(name)
        return sorted({*datasets.get_source(name).resolve_options({}), "superclass_mapping"})

    def after_study_hint(self, data) -> str | None:
        """After the quick study on embedded images: how to run the real one."""
        if data.name != "embedded":
            return None
        return (
            "the real study:    python run.py --flagfile=flags/cifar100/study.flags "
            "(CIFAR-100; add --download the first time)"
        )

    def dataset_info(self, data) -> datasets.DatasetInfo:
        return datasets.get_info(data.name, data_dir=data.data_dir, **dict(data.options))

    def check_data_prepared(self, data) -> None:
        """A TFDS set must be prepared under ``data_dir`` unless ``download`` is set
        (`lskd_tf.data.source.Source.check_prepared`)."""
        datasets.get_source(data.name).check_prepared(data.data_dir, data.download)

    def data_identity(self, data) -> dict:
        """The dataset, its options, and for ImageNet and CUB every resolved option
        (`lskd_tf.data.source.Source.preprocessing`: their preprocessing changed after
        runs were recorded; embedded and CIFAR-100 identities are unchanged)."""
        found = super().data_identity(data)
        preprocessing = datasets.get_source(data.name).preprocessing(dict(data.options))
        return {**found, "preprocessing": preprocessing} if preprocessing else found

    def data_fingerprint(self, data) -> dict | None:
        """The source's fingerprint (`lskd_tf.data.source.Source.fingerprint`)."""
        source = datasets.get_source(data.name)
        options = {k: v for k, v in data.options if k != "superclass_mapping"}  # get_info's
        return source.fingerprint(data.data_dir, source.resolve_options(options))

    def dataset(
        self, data, split: str, *, batch_size: int, training: bool, seed: int = 0,
        classes=None, per_class: int | None = None,
    ):  # fmt: skip
        """One split of ``data`` as a batched pipeline (`lskd_tf.data.make_dataset`;
        ``classes`` and ``per_class``: only the first ``per_class`` of each class)."""
        return datasets.make_dataset(
            data.name, split, global_batch_size=batch_size, training=training, seed=seed,
            data_dir=data.data_dir, cache=data.cache, download=data.download,
            classes=classes, per_class=per_class, **dict(data.options),
        )  # fmt: skip

    def train_fn(self, data, *, batch_size: int, seed: int) -> Callable:
        return datasets.train_fn(
            data.name, self.dataset_info(data).train_split, global_batch_size=batch_size,
            seed=seed, data_dir=data.data_dir, cache=data.cache, download=data.download,
            **dict(data.options),
        )  # fmt: skip

    def check_batch_size(self, data, batch_size: int) -> None:
        """Training drops the last incomplete batch: a batch larger than the training split
        would leave no batch at all."""
        info = self.dataset_info(data)
        examples = info.num_examples.get(info.train_split)
        if examples is not None and batch_size > examples:
            raise ValueError(
                f"batch size {batch_size} is larger than the dataset: {data.name}'s "
                f"{info.train_split} split has {examples} examples (incomplete batches are "
                "dropped in training); lower --batch_size / --teacher_batch_size or use more data"
            )

    def eval_dataset(self, data, *, batch_size: int):
        split = self.dataset_info(data).eval_split
        return self.dataset(data, split, batch_size=batch_size, training=False)

    # ------------------------------------------------------------------ models

    def models(self) -> list[str]:
        return models.available()

    def build_model(self, name: str, info, *, train, synchronized_bn: bool) -> keras.Model:
        return models.get(
            name, info.num_classes, info.input_shape,
            # AdamW decays in the optimizer (decoupled), not through L2 regularizers.
            weight_decay=0.0 if train.optimizer == "adamw" else train.weight_decay,
            weight_decay_scope=train.weight_decay_scope, synchronized_bn=synchronized_bn,
        )  # fmt: skip

    def load_model(self, path: str | os.PathLike, info) -> keras.Model:
        """A `.keras` checkpoint, or PyTorch weights of a torchvision/RepDistiller model
        (`.safetensors`/`.pth`, the architecture read from the keys: `lskd_tf.pretrained`)."""
        from lskd_tf import pretrained

        if pretrained.is_torch_file(path):
            if not Path(path).is_file():
                raise ValueError(f"checkpoint {path} does not exist")
            model = pretrained.build_from_file(path, input_shape=info.input_shape)
        else:
            model = super().load_model(path, info)
        if info is None:
            return model
        if model.output_shape[-1] != info.num_classes:
            raise ValueError(
                f"checkpoint {path} outputs {model.output_shape[-1]} classes but the dataset "
                f"has {info.num_classes}"
            )
        return model

    def check_model_file(self, path: str | os.PathLike, *, what: str = "checkpoint") -> None:
        """A `.keras` archive, or PyTorch weights `lskd_tf.pretrained` can read."""
        from lskd_tf import pretrained

        if pretrained.is_torch_file(path):
            pretrained.check_weights_file(path)
        else:
            super().check_model_file(path, what=what)

    def initialize(self, model: keras.Model, path: str | os.PathLike) -> dict:
        """PyTorch (torchvision/RepDistiller) or `.keras` weights; a new classifier exactly
        when the class counts differ (ImageNet -> CUB fine-tuning, as both papers do)."""
        from lskd_tf import pretrained

        if not Path(path).is_file():
            raise ValueError(f"pretrained weights {path} do not exist")
        return pretrained.initialize(model, path)

    # ------------------------------------------------------------------ teacher cache

    def check_teacher_cache(self, cache, data) -> None:
        from lskd_tf import teacher_cache

        teacher_cache.check_dataset(cache, data.name, dict(data.options))
        classes = self.dataset_info(data).num_classes
        if cache.topk >= classes:
            raise ValueError(
                f"cache topk must be < the {classes} classes of {data.name}, got {cache.topk} "
                "(0 keeps all logits)"
            )

    def cached_train_fn(
        self, teacher: keras.Model, teacher_path: Path, cache, data, *, batch_size: int,
        seed: int, verbose: bool, kd_topk: int = 0,
    ) -> tuple[Callable, dict]:  # fmt: skip
        """The image cache passes dense logits whatever ``kd_topk``: a top-k KD loss takes
        their top k itself (exactly the teacher's, the cache keeping all logits)."""
        from lskd_tf import teacher_cache

        built = teacher_cache.build(
            teacher, teacher_cache.cache_directory(teacher_path, cache), data.name,
            spec=cache, data_dir=data.data_dir, options=dict(data.options), verbose=verbose,
        )  # fmt: skip
        train_fn = built.train_fn(batch_size, seed, cache=data.cache)
        return train_fn, teacher_cache.describe(built)

    # ------------------------------------------------------------------ after training

    def export(self, model: keras.Model, export_dir: str | os.PathLike, info, data=None) -> Path:
        from lskd_tf.export import export_student

        return export_student(
            model, export_dir, mean=info.mean, std=info.std, class_names=info.class_names
        )

    def analyze(
        self, run_dirs: list[Path], out_dir: Path, *, tensorboard_dir: Path | None, title: str
    ) -> Path | None:
        from lskd_tf.tasks.image_classification.analysis import analyze_runs

        return analyze_runs(self, run_dirs, out_dir, tensorboard_dir=tensorboard_dir, title=title)


tasks.register(ImageClassification())
