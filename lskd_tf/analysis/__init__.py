"""Measurements behind the label smoothing x knowledge distillation debate.

Pure NumPy functions over `probs` (N, K), `logits` (N, K), `labels` (N,), `features`
(N, D) and `superclass` (K,) arrays, independent of training code; each module documents
its formulas and sources:

- `stability`: Shen et al. 2021, Eq. 2 (intra-class variance of probabilities).
- `calibration`: expected calibration error, reliability bins (Guo 2017; Müller 2019).
- `projection`: penultimate-layer projections on the plane of three class templates
  (Müller 2019; Chandrasegaran 2022, with its bias-indexing bug fixed).
- `diffusion`: quantitative systematic diffusion (semantic mass ratio, feature
  separation of same- vs different-superclass class pairs); lskd_tf's own definitions.
- `mutual_information`: Müller's example-index / logit-difference mutual information and
  a teacher's equivalent smoothing.
- `agreement`: top-k accuracy, teacher-student agreement and KL.
- `figures`: PNGs (matplotlib Agg); `report`: `analyze`, `write_report`,
  `log_to_tensorboard`; `collect`: running a Keras model over a dataset (the only module
  that imports TensorFlow, and only when its functions are called).
"""

from lskd_tf.analysis._validation import log_softmax, softmax
from lskd_tf.analysis.agreement import (
    teacher_student_agreement,
    teacher_student_kl,
    top_k_accuracy,
)
from lskd_tf.analysis.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    reliability_bins,
)
from lskd_tf.analysis.collect import (
    collect_augmented_logits,
    collect_outputs,
    features_and_logits,
    templates,
)
from lskd_tf.analysis.diffusion import (
    class_statistics,
    diffusion_measures,
    feature_separation,
    semantic_mass,
    sibling_confusion,
    sibling_margin,
)
from lskd_tf.analysis.figures import plot_projection, plot_reliability_diagram
from lskd_tf.analysis.mutual_information import (
    equivalent_smoothing,
    logit_difference_mutual_information,
    mutual_information_from_logits,
)
from lskd_tf.analysis.projection import (
    Projection,
    class_templates,
    default_class_triple,
    penultimate_projection,
    project_features,
    template_basis,
)
from lskd_tf.analysis.report import (
    ANALYSIS_FILE,
    ANALYSIS_GROUP,
    MEASURES,
    AnalysisContext,
    analyze,
    log_to_tensorboard,
    write_metrics,
    write_report,
)
from lskd_tf.analysis.stability import StabilityResult, stability

__all__ = [
    "ANALYSIS_FILE",
    "ANALYSIS_GROUP",
    "Projection",
    "ReliabilityBins",
    "StabilityResult",
    "AnalysisContext",
    "MEASURES",
    "analyze",
    "class_statistics",
    "class_templates",
    "collect_augmented_logits",
    "collect_outputs",
    "default_class_triple",
    "diffusion_measures",
    "equivalent_smoothing",
    "expected_calibration_error",
    "feature_separation",
    "features_and_logits",
    "log_softmax",
    "log_to_tensorboard",
    "logit_difference_mutual_information",
    "mutual_information_from_logits",
    "penultimate_projection",
    "plot_projection",
    "plot_reliability_diagram",
    "project_features",
    "reliability_bins",
    "semantic_mass",
    "sibling_confusion",
    "sibling_margin",
    "softmax",
    "stability",
    "teacher_student_agreement",
    "teacher_student_kl",
    "template_basis",
    "templates",
    "top_k_accuracy",
    "write_metrics",
    "write_report",
]
