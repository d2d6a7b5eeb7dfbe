"""Experiments as data: what to train (specs), in which order (planning), and running it.

A study is a grid of teacher runs (model × label smoothing) and student runs (student
model × temperature × seed) distilled from them. Every CLI mode of `run.py` is one
call here, so everything a flag can do, Python can do too::

    from lskd_tf import experiment as ex
    study = ex.StudySpec(teacher_models=("resnet56",), teacher_smoothings=(0.0, 0.1),
                         student_models=("resnet20",), temperatures=(1.0, 4.0), seeds=(0, 1),
                         distill=lskd_tf.DistillSpec(kd_weight=1.0, ce_weight=0.0))
    env = ex.RunEnv(output_dir="runs", study="cifar")
    for spec in ex.plan_study(study):
        ex.run(spec, env)

* `lskd_tf.experiment.specs`: `DataSpec`, `TeacherSpec`, `StudentSpec`, `StudySpec`, `RunEnv`;
* `lskd_tf.experiment.planning`: `plan_study`, TensorBoard hparams;
* `lskd_tf.experiment.runner`: `run`, `evaluate_checkpoint`, `export_checkpoint`,
  `analyze_runs` (which hands finished runs to their task's analyses).

Run directories: ``<output_dir>/<study>/<run name>``; TensorBoard logs:
``<tensorboard_dir>/<study>/<run name>``.
"""

from lskd_tf.experiment.planning import (
    HPARAM_METRICS,
    hparams_of,
    plan_study,
    write_hparams_config,
)
from lskd_tf.experiment.runner import (
    analyze_runs,
    data_spec_of_run,
    evaluate_checkpoint,
    export_checkpoint,
    load_checkpoint,
    run,
    spec_to_json,
    teacher_checkpoint_path,
)
from lskd_tf.experiment.specs import (
    MIXED_PRECISION,
    TEACHER_CHECKPOINTS,
    DataSpec,
    RunEnv,
    RunSpec,
    StudentSpec,
    StudySpec,
    TeacherSpec,
)

__all__ = [
    "HPARAM_METRICS",
    "MIXED_PRECISION",
    "TEACHER_CHECKPOINTS",
    "DataSpec",
    "RunEnv",
    "RunSpec",
    "StudentSpec",
    "StudySpec",
    "TeacherSpec",
    "analyze_runs",
    "data_spec_of_run",
    "evaluate_checkpoint",
    "export_checkpoint",
    "hparams_of",
    "load_checkpoint",
    "plan_study",
    "run",
    "spec_to_json",
    "teacher_checkpoint_path",
    "write_hparams_config",
]
