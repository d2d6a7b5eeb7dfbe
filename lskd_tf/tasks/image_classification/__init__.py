"""Image classification: the papers' CIFAR-100, ImageNet and CUB-200 experiments, as a
package like the translation task: the task (`task.ImageClassification`, registered on
import) and its analysis (`analysis.analyze_runs`)."""

from lskd_tf.tasks.image_classification.task import ImageClassification

__all__ = ["ImageClassification"]
