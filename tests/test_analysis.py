"""Tests of lskd_tf.analysis: every measure against a hand computation on small arrays."""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image as mpimg

from lskd_tf import analysis
from lskd_tf.analysis import (
    analyze,
    class_templates,
    collect_augmented_logits,
    collect_outputs,
    default_class_triple,
    equivalent_smoothing,
    expected_calibration_error,
    feature_separation,
    log_to_tensorboard,
    logit_difference_mutual_information,
    mutual_information_from_logits,
    penultimate_projection,
    plot_projection,
    plot_reliability_diagram,
    project_features,
    reliability_bins,
    semantic_mass,
    stability,
    teacher_student_agreement,
    teacher_student_kl,
    template_basis,
    top_k_accuracy,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- stability


STABILITY_PROBS = np.array(
    [
        [0.8, 0.1, 0.1],  # class 0, mean (0.7, 0.2, 0.1): deviations^2 0.02, 0.02
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],  # class 1, alone: variance 0
        [0.1, 0.1, 0.8],  # class 2, mean (0.2, 0.1, 0.7): 0.02, 0.02, 0.08
        [0.1, 0.1, 0.8],
        [0.4, 0.1, 0.5],
    ]
)
STABILITY_LABELS = np.array([0, 0, 1, 2, 2, 2])


def test_stability_matches_hand_computation():
    result = stability(STABILITY_PROBS, STABILITY_LABELS)
    np.testing.assert_allclose(result.class_variances, [0.02, 0.0, 0.04], atol=1e-12)
    assert result.stability == pytest.approx(1 - (0.02 + 0.0 + 0.04) / 3)
    assert result.one_minus_stability == pytest.approx(0.02)
    np.testing.assert_array_equal(result.classes, [0, 1, 2])


def test_stability_restricted_to_classes():
    result = stability(STABILITY_PROBS, STABILITY_LABELS, classes=[2, 0])
    np.testing.assert_allclose(result.class_variances, [0.04, 0.02], atol=1e-12)
    assert result.one_minus_stability == pytest.approx(0.03)


def test_stability_identical_probabilities_have_zero_variance():
    probs = np.repeat([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]], 4, axis=0)
    result = stability(probs, np.repeat([0, 2, 1], 4))
    np.testing.assert_array_equal(result.class_variances, 0.0)
    assert result.stability == 1.0


def test_stability_empty_class_is_an_error_unless_excluded():
    probs, labels = STABILITY_PROBS[:3], STABILITY_LABELS[:3]  # class 2 absent
    with pytest.raises(ValueError, match="class 2 has no examples"):
        stability(probs, labels)
    with pytest.raises(ValueError, match="class 2 has no examples"):
        stability(probs, labels, classes=[0, 2])
    assert stability(probs, labels, classes=[0, 1]).one_minus_stability == pytest.approx(0.01)


def test_stability_accepts_float16_probabilities():
    probs = STABILITY_PROBS.astype(np.float16)  # rows no longer sum exactly to 1
    result = stability(probs, STABILITY_LABELS)
    assert result.one_minus_stability == pytest.approx(0.02, abs=1e-3)


@pytest.mark.parametrize(
    "probs, labels, message",
    [
        (STABILITY_PROBS * 1.1, STABILITY_LABELS, "rows must sum to 1"),
        (STABILITY_PROBS - 0.2, STABILITY_LABELS, "negative entries"),
        (STABILITY_PROBS, STABILITY_LABELS + 1, "`labels` out of range: found 3"),
        (STABILITY_PROBS, STABILITY_LABELS[:4], "`labels` has 4 entries"),
        (STABILITY_PROBS, STABILITY_LABELS + 0.5, "non-integer"),
        (STABILITY_PROBS[0], STABILITY_LABELS, "`probs` must be a 2-D array"),
        (np.zeros((0, 3)), np.zeros(0, int), "`probs` is empty"),
    ],
)
def test_bad_probabilities_and_labels_are_named(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        stability(probs, labels)


# --------------------------------------------------------------------------- calibration


def test_ece_perfectly_calibrated_case_is_zero():
    # Confidence 0.75 with 3 of 4 right, confidence 0.6 with 3 of 5 right.
    probs = np.array([[0.75, 0.25]] * 4 + [[0.4, 0.6]] * 5)
    labels = np.array([0, 0, 0, 1] + [1, 1, 1, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_hand_computation():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # 15 bins: {0.9, 0.9} acc 0.5; {0.6} acc 1; {0.7} acc 1.
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.6) + 1 / 4 * abs(1 - 0.7)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    # One bin: |overall accuracy - mean confidence|.
    assert expected_calibration_error(probs, labels, num_bins=1) == pytest.approx(
        abs(0.75 - (0.9 + 0.9 + 0.6 + 0.7) / 4)
    )


def test_reliability_bins_put_edge_confidences_in_the_lower_bin():
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    bins = reliability_bins(probs, np.array([0, 1, 0]), num_bins=2)
    np.testing.assert_array_equal(bins.counts, [1, 2])  # 0.5 in (0, 0.5]; 0.75, 1 in (0.5, 1]
    np.testing.assert_allclose(bins.accuracy, [1.0, 0.5])
    np.testing.assert_allclose(bins.confidence, [0.5, 0.875])
    with pytest.raises(ValueError, match="`num_bins` must be a positive integer"):
        expected_calibration_error(probs, np.array([0, 1, 0]), num_bins=0)


# ---------------------------------------------------------------------------- projection


def _random_templates(rng, dim=6, num_classes=5):
    return rng.normal(size=(dim, num_classes)), rng.normal(size=num_classes)


def test_projection_basis_is_orthonormal_and_spans_the_templates():
    rng = np.random.default_rng(0)
    kernel, bias = _random_templates(rng)
    basis = template_basis(kernel, bias, [4, 1, 2])
    assert basis.shape == (7, 3)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    templates = class_templates(kernel, bias, [4, 1, 2])
    np.testing.assert_allclose(basis @ (basis.T @ templates.T), templates.T, atol=1e-12)


def test_templates_index_the_bias_by_class_id():
    # The ICML 2022 script used bias[0..2] for any triple; template k must use bias[k].
    kernel = np.arange(12.0).reshape(3, 4)
    bias = np.array([10.0, 11.0, 12.0, 13.0])
    templates = class_templates(kernel, bias, [3, 0, 2])
    np.testing.assert_array_equal(templates[:, -1], [13.0, 10.0, 12.0])
    np.testing.assert_array_equal(templates[0, :-1], kernel[:, 3])


def test_projection_coordinates_preserve_the_three_logits():
    rng = np.random.default_rng(1)
    kernel, bias = _random_templates(rng)
    features = rng.normal(size=(20, 6))
    basis = template_basis(kernel, bias, [0, 3, 2])
    coords = project_features(features, basis)
    templates = class_templates(kernel, bias, [0, 3, 2])
    logits = features @ kernel + bias
    np.testing.assert_allclose(coords @ (basis.T @ templates.T), logits[:, [0, 3, 2]], atol=1e-10)


def test_pca_projection_is_fitted_on_train_and_reused_for_validation():
    rng = np.random.default_rng(2)
    kernel, bias = _random_templates(rng)
    labels = np.repeat([0, 1, 2, 3], 10)
    features = rng.normal(size=(40, 6)) + labels[:, None]
    projection = penultimate_projection(
        kernel,
        bias,
        (0, 1, 3),
        features,
        labels,
        features[::-1],
        labels[::-1],
        max_train_per_class=None,
        max_val_per_class=None,
    )
    assert projection.train_points.shape == (30, 2)  # class 2 is not in the triple
    # The same examples as validation land on the same points: one shared map.
    np.testing.assert_allclose(
        np.sort(projection.val_points, axis=0), np.sort(projection.train_points, axis=0)
    )
    np.testing.assert_allclose(projection.val_centroids, projection.train_centroids)
    # PCA centres the training points.
    np.testing.assert_allclose(projection.train_points.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(
        projection.train_centroids[2], projection.train_points[projection.train_labels == 3].mean(0)
    )


def test_plane_projection_keeps_template_distances_and_subsamples():
    rng = np.random.default_rng(3)
    kernel, bias = _random_templates(rng)
    labels = np.repeat([0, 1, 2], 30)
    features = rng.normal(size=(90, 6))
    projection = penultimate_projection(
        kernel, bias, (0, 1, 2), features, labels, method="plane", max_train_per_class=7
    )
    templates = class_templates(kernel, bias, (0, 1, 2))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert np.linalg.norm(
            projection.template_points[a] - projection.template_points[b]
        ) == pytest.approx(np.linalg.norm(templates[a] - templates[b]))
    np.testing.assert_array_equal(np.bincount(projection.train_labels), [7, 7, 7])
    assert projection.val_points is None


def test_projection_bad_inputs_are_named():
    rng = np.random.default_rng(4)
    kernel, bias = _random_templates(rng, num_classes=2)
    with pytest.raises(ValueError, match="needs three classes, but the model has only 2"):
        template_basis(kernel, bias, [0, 1, 1])
    kernel, bias = _random_templates(rng)
    with pytest.raises(ValueError, match="three \\*distinct\\* classes"):
        template_basis(kernel, bias, [0, 1, 1])
    with pytest.raises(ValueError, match="exactly three integer class ids"):
        template_basis(kernel, bias, [0, 1])
    with pytest.raises(ValueError, match="`bias` must have shape"):
        template_basis(kernel, bias[:3], [0, 1, 2])
    with pytest.raises(ValueError, match="class 2 has no examples in `train_labels`"):
        penultimate_projection(kernel, bias, (0, 1, 2), np.zeros((2, 6)), np.array([0, 1]))
    with pytest.raises(ValueError, match="`train_features` have D = 5"):
        penultimate_projection(kernel, bias, (0, 1, 2), np.zeros((3, 5)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="`method` must be one of"):
        penultimate_projection(kernel, bias, (0, 1, 2), np.zeros((3, 6)), [0, 1, 2], method="x")


def test_default_class_triple():
    assert default_class_triple(np.zeros(1000, int), dataset="imagenet2012") == (266, 267, 833)
    # Two classes of the first superclass with two members, then the first class outside.
    assert default_class_triple(np.array([1, 0, 0, 1, 2])) == (1, 2, 0)
    assert default_class_triple(np.array([0, 1, 2, 2])) == (2, 3, 0)
    assert default_class_triple(None, ["a", "b", "c", "d"]) == (0, 1, 2)
    with pytest.raises(ValueError, match="no superclass with two classes"):
        default_class_triple(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="only 2"):
        default_class_triple(np.array([0, 0]))


# ----------------------------------------------------------------------------- diffusion


SUPERCLASS = np.array([0, 0, 0, 1, 1, 2])  # K = 6


def test_semantic_mass_matches_hand_computation():
    probs = np.array(
        [
            [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],  # y=0: same 0.2, other 0.2
            [0.1, 0.5, 0.0, 0.3, 0.1, 0.0],  # y=1: same 0.1, other 0.4
            [0.0, 0.0, 0.0, 0.2, 0.0, 0.8],  # y=5: alone in its superclass: not eligible
        ]
    )
    labels = np.array([0, 1, 5])
    m = semantic_mass(probs, labels, SUPERCLASS)
    chance = 2 / 5  # two siblings among five non-target classes
    assert m["same_superclass_mass"] == pytest.approx((0.2 + 0.1 + 0.0) / 3)
    assert m["other_mass"] == pytest.approx((0.2 + 0.4 + 0.2) / 3)
    assert m["same_superclass_share"] == pytest.approx((0.5 + 0.2) / 2)
    assert m["chance_share"] == pytest.approx(chance)
    assert m["semantic_mass_ratio"] == pytest.approx((0.5 / chance + 0.2 / chance) / 2)
    assert m["num_eligible"] == 2


def test_semantic_mass_of_uniform_non_target_mass_is_one():
    probs = np.full((6, 6), 0.1) + 0.4 * np.eye(6)
    m = semantic_mass(probs, np.arange(6), SUPERCLASS)
    assert m["semantic_mass_ratio"] == pytest.approx(1.0)


def test_feature_separation_matches_hand_computation():
    # Classes 0, 1 (superclass 0) centred at x=0 and x=2; class 2 (superclass 1) at x=10.
    features = np.array([[0.0, 1], [0, -1], [2, 1], [2, -1], [10, 2], [10, -2]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = feature_separation(features, labels, np.array([0, 0, 1]))
    var = np.array([1.0, 1.0, 4.0]) / 2  # mean squared distance / D

    def sep(d, a, b):
        return d / math.sqrt((var[a] + var[b]) / 2)

    def over(d, a, b):
        bhattacharyya_scale = math.sqrt(2 * math.sqrt(var[a] * var[b]) / (var[a] + var[b]))
        return bhattacharyya_scale * math.exp(-(d**2) / (4 * (var[a] + var[b])))

    assert m["same_superclass_separation"] == pytest.approx(sep(2, 0, 1))
    assert m["other_separation"] == pytest.approx((sep(10, 0, 2) + sep(8, 1, 2)) / 2)
    assert m["separation_ratio"] == pytest.approx(
        m["same_superclass_separation"] / m["other_separation"]
    )
    assert m["same_superclass_overlap"] == pytest.approx(over(2, 0, 1))
    assert m["other_overlap"] == pytest.approx((over(10, 0, 2) + over(8, 1, 2)) / 2)
    assert (m["num_same_pairs"], m["num_other_pairs"]) == (1, 2)


def test_feature_separation_bad_inputs():
    features = np.zeros((4, 2))
    with pytest.raises(ValueError, match="class 1 has fewer than 2 examples"):
        feature_separation(features, np.array([0, 0, 1, 2]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="class 2 has no examples"):
        feature_separation(features, np.array([0, 0, 1, 1]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="needs at least one pair of classes sharing"):
        feature_separation(features, np.array([0, 0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="`superclass` is required"):
        semantic_mass(np.eye(2), [0, 1], None)


def _diffused_clusters(knob: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six classes in two superclasses; `knob` pulls siblings together and spreads them.

    Superclass centres sit 20 apart on axis 0; each class is offset from its superclass
    centre along its own axis (1..3) by 6 * (1 - knob); the within-class std is
    1 + knob / 4. The probabilities are the clusters' Gaussian posterior mixed with 5 %
    uniform mass (a smoothed model's floor), so with well separated classes the non-target
    mass is spread evenly: semantic mass ratio 1.
    """
    superclass = np.array([0, 0, 0, 1, 1, 1])
    means = np.zeros((6, 4))
    means[:, 0] = 20.0 * superclass
    for k in range(6):
        means[k, 1 + k % 3] = 6.0 * (1.0 - knob)
    std = 1.0 + knob / 4
    labels = np.repeat(np.arange(6), 200)
    features = means[labels] + std * rng.normal(size=(labels.size, 4))
    logits = -np.sum((features[:, None, :] - means[None]) ** 2, axis=2) / (2 * std**2)
    return features, labels, 0.95 * analysis.softmax(logits) + 0.05 / 6


def test_diffusion_measures_move_as_the_paper_describes():
    superclass = np.array([0, 0, 0, 1, 1, 1])
    results = []
    for knob in (0.0, 0.3, 0.6):
        features, labels, probs = _diffused_clusters(knob, np.random.default_rng(5))
        results.append(analysis.diffusion_measures(probs, features, labels, superclass))
    same = [r["same_superclass_separation"] for r in results]
    other = [r["other_separation"] for r in results]
    ratio = [r["separation_ratio"] for r in results]
    overlap = [r["same_superclass_overlap"] for r in results]
    mass_ratio = [r["semantic_mass_ratio"] for r in results]
    same_mass = [r["same_superclass_mass"] for r in results]
    # Siblings come together and overlap; the ratio to unrelated pairs falls...
    assert same[0] > same[1] > same[2]
    assert ratio[0] > ratio[1] > ratio[2]
    assert overlap[0] < overlap[1] < overlap[2]
    # ...non-target probability moves to siblings, from no preference (ratio 1)...
    assert mass_ratio[0] == pytest.approx(1.0, abs=0.01)
    assert mass_ratio[0] < mass_ratio[1] < mass_ratio[2]
    assert mass_ratio[2] > 1.5
    assert same_mass[0] < same_mass[1] < same_mass[2]
    # ...while unrelated classes stay apart: same mass on them, much smaller relative
    # change of their separation, no overlap.
    for r in results:
        assert r["other_mass"] == pytest.approx(0.05 * 3 / 6, abs=1e-4)
        assert r["other_overlap"] < 1e-6
    assert abs(other[2] - other[0]) / other[0] < 0.5 * abs(same[2] - same[0]) / same[0]


# --------------------------------------------------------------------- mutual information


def _mi_by_loops(f: np.ndarray) -> float:
    n, num_aug = f.shape
    mu = f.mean(axis=1)
    var = sum((f[x, j] - mu[x]) ** 2 for x in range(n) for j in range(num_aug)) / (n * num_aug)
    total = 0.0
    for x in range(n):
        for j in range(num_aug):
            own = -((f[x, j] - mu[x]) ** 2) / (2 * var)
            marginal = sum(math.exp(-((f[x, j] - mu[y]) ** 2) / (2 * var)) for y in range(n)) / n
            total += own - math.log(marginal)
    return total / (n * num_aug)


def test_mutual_information_matches_hand_computation_and_limits():
    f = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 1.0], [3.0, 2.0, 4.0]])
    assert logit_difference_mutual_information(f) == pytest.approx(_mi_by_loops(f))
    # All examples alike: no information about the index.
    assert logit_difference_mutual_information([[0.0, 2.0], [2.0, 0.0]]) == 0.0
    # Far apart: the index is recoverable, I -> log N.
    far = np.array([[0.0, 1.0], [100.0, 101.0], [200.0, 201.0]])
    assert logit_difference_mutual_information(far) == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="at least 2 augmentations"):
        logit_difference_mutual_information(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="pooled variance 0"):
        logit_difference_mutual_information(np.ones((3, 2)))


def test_mutual_information_from_logits_uses_the_class_difference():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4, 3, 5))
    expected = _mi_by_loops(logits[:, :, 2] - logits[:, :, 4])
    assert mutual_information_from_logits(logits, 2, 4) == pytest.approx(expected)
    with pytest.raises(ValueError, match="`class_b` = 5 out of range"):
        mutual_information_from_logits(logits, 2, 5)


def test_equivalent_smoothing():
    alpha, k = 0.1, 5
    targets = (1 - alpha) * np.eye(k)[[0, 3, 4]] + alpha / k
    assert equivalent_smoothing(np.log(targets), [0, 3, 4]) == pytest.approx(alpha)
    assert equivalent_smoothing(probs=targets, labels=[0, 3, 4]) == pytest.approx(alpha)
    # Hand computation at T = 2: logits (2, 0) -> softmax(1, 0) = (e, 1) / (e + 1).
    gamma = equivalent_smoothing(np.array([[2.0, 0.0]]), [0], temperature=2.0)
    assert gamma == pytest.approx(1 / (math.e + 1) * 2 / 1)
    with pytest.raises(ValueError, match="exactly one of `logits` or `probs`"):
        equivalent_smoothing(labels=[0])


# ----------------------------------------------------------------------------- agreement


def test_agreement_kl_and_accuracy_by_hand():
    teacher = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]))
    student = np.log(np.array([[0.25, 0.75], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]]))
    # argmax ties break to class 0: teacher (0, 0, 1, 1), student (1, 0, 0, 1).
    assert teacher_student_agreement(teacher, student) == pytest.approx(0.5)
    kl_rows = [
        0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),
        0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4),
        0.2 * math.log(0.2 / 0.7) + 0.8 * math.log(0.8 / 0.3),
        0.3 * math.log(0.3 / 0.1) + 0.7 * math.log(0.7 / 0.9),
    ]
    assert teacher_student_kl(teacher, student) == pytest.approx(np.mean(kl_rows))
    # At T the logits are divided by T first.
    assert teacher_student_kl(2 * teacher, 2 * student, temperature=2.0) == pytest.approx(
        np.mean(kl_rows)
    )
    assert top_k_accuracy(student, [1, 0, 1, 1]) == pytest.approx(0.75)
    assert top_k_accuracy(student, [1, 1, 1, 1], k=2) == 1.0
    with pytest.raises(ValueError, match="`student_logits` has 3 rows"):
        teacher_student_kl(teacher, student[:3])


# ------------------------------------------------------------------------------- figures


def _assert_png(path, min_size=100):
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= min_size and pixels.shape[1] >= min_size
    assert pixels.std() > 0  # something was drawn


def test_figures_are_valid_png_files(tmp_path):
    rng = np.random.default_rng(7)
    kernel, bias = _random_templates(rng)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 6)) + labels[:, None]
    projection = penultimate_projection(kernel, bias, (0, 1, 2), features, labels, features, labels)
    path = plot_projection(
        projection, tmp_path / "sub" / "proj.png", class_names=["a", "b", "c", "d", "e"], title="t"
    )
    _assert_png(path)
    probs = analysis.softmax(rng.normal(size=(50, 4)))
    _assert_png(plot_reliability_diagram(probs, rng.integers(0, 4, 50), tmp_path / "rel.png"))
    with pytest.raises(ValueError, match="must end in .png"):
        plot_reliability_diagram(probs, rng.integers(0, 4, 50), tmp_path / "rel.jpg")


def test_reliability_diagram_explains_every_colour_and_shows_counts():
    from matplotlib.colors import to_hex

    from lskd_tf.analysis.figures import reliability_figure

    # 30 examples at confidence 0.95 (27 right) and one at 0.55 (right): a one-example
    # bin at accuracy 1.0 must not look like a full-strength bar.
    confident = np.tile([0.95, 0.05], (30, 1))
    probs = np.vstack([confident, [[0.55, 0.45]]])
    labels = np.array([0] * 27 + [1] * 3 + [0])
    name = "student-resnet8-T4-seed0-from-resnet8-ls0.1-seed0"  # 49 characters
    figure = reliability_figure(probs, labels, num_bins=10, title=name, min_count=10)
    top, counts = figure.axes
    title = figure._suptitle.get_text().splitlines()
    assert len(title) == 2 and max(map(len, title)) <= 48 and "".join(title) == name
    bars = [p for p in top.patches if p.get_height() > 0]
    filled = {to_hex(p.get_facecolor()) for p in bars if p.get_fill()}
    legend = top.get_legend()
    explained = {to_hex(h.get_facecolor()) for h in legend.legend_handles if hasattr(h, "get_fill")}
    assert filled == {to_hex("tab:blue"), to_hex("lightgrey")} and filled <= explained
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("< 10 examples" in t for t in texts) and any("gap" in t for t in texts)
    assert (
        legend.get_title().get_text()
        == f"ECE = {expected_calibration_error(probs, labels, 10):.4f}"
    )
    grey = [p for p in bars if p.get_fill() and to_hex(p.get_facecolor()) == to_hex("lightgrey")]
    assert [(round(p.get_x() + p.get_width() / 2, 2), p.get_height()) for p in grey] == [
        (0.55, 1.0)
    ]
    gap = [p for p in bars if not p.get_fill()]  # only for the bin with enough examples
    assert len(gap) == 1 and gap[0].get_y() == pytest.approx(0.9)
    assert gap[0].get_height() == pytest.approx(0.05)
    assert [p.get_height() for p in counts.patches] == [1, 30]
    assert [t.get_text() for t in counts.texts] == ["1", "30"]


def test_projection_figure_uses_both_axes(tmp_path):
    """Clusters spread 20x more along PC 1 than PC 2 still fill the panels' height (an
    equal axis scaling drew them as a thin strip in the middle of an empty image)."""
    rng = np.random.default_rng(0)
    kernel, bias = _random_templates(rng)
    labels = np.repeat([0, 1, 2], 50)
    projection = penultimate_projection(kernel, bias, (0, 1, 2), rng.normal(size=(150, 6)), labels)
    stretched = projection.train_points * np.array([20.0, 1.0])
    projection = dataclasses.replace(projection, train_points=stretched)
    path = plot_projection(projection, tmp_path / "p.png", class_names=["a", "b", "c"])
    rgb = mpimg.imread(path)[..., :3]
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.25  # class colours, not grey/black/white
    rows = np.flatnonzero(coloured.any(axis=1))
    legend_free = rows[rows < 0.85 * rgb.shape[0]]  # the legend sits at the bottom
    assert legend_free.max() - legend_free.min() > 0.6 * rgb.shape[0]


# ---------------------------------------------------------------- collection (TensorFlow)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu", name="penultimate")(x)
    outputs = keras.layers.Dense(5, name="classifier")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    # Weights are created at build time and survive the per-test clear_session.
    return model


def _images(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4, 4, 3)).astype(np.float32), rng.integers(0, 5, n)


def test_collect_outputs_features_times_templates_are_the_logits(tiny_model):
    images, labels = _images()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels, np.arange(10))).batch(4)
    out = collect_outputs(tiny_model, dataset)
    assert out["features"].shape == (10, 6) and out["logits"].shape == (10, 5)
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_array_equal(out["index"], np.arange(10))
    np.testing.assert_allclose(
        out["features"] @ out["kernel"] + out["bias"], out["logits"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        out["logits"], tiny_model.predict(images, verbose=0), rtol=1e-5, atol=1e-5
    )
    two = tf.data.Dataset.from_tensor_slices((images, labels[:, None])).batch(4)
    first = collect_outputs(tiny_model, two, max_batches=1)
    assert first["logits"].shape == (4, 5) and "index" not in first
    np.testing.assert_array_equal(first["labels"], labels[:4])


def test_collect_rejects_models_without_classifier():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    with pytest.raises(ValueError, match="no layer named 'classifier'"):
        collect_outputs(model, [(np.zeros((1, 3)), np.zeros(1))])


def test_collect_augmented_logits(tiny_model):
    images, labels = _images(6)
    identity = collect_augmented_logits(tiny_model, images, labels, lambda x: x, 3, batch_size=4)
    assert identity["logits"].shape == (6, 3, 5)
    np.testing.assert_allclose(identity["logits"][:, 0], identity["logits"][:, 2], atol=1e-6)
    noisy = collect_augmented_logits(
        tiny_model, images, labels, lambda x: x + tf.random.normal(tf.shape(x)), 4
    )
    assert mutual_information_from_logits(noisy["logits"], 0, 1) >= -1e-9
    with pytest.raises(ValueError, match="`num_augmentations` must be an integer >= 2"):
        collect_augmented_logits(tiny_model, images, labels, lambda x: x, 1)


# ------------------------------------------------------------------- analyze and reports


def _fake_outputs(seed, num_classes=6, n=120, dim=5):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    kernel = rng.normal(size=(dim, num_classes)).astype(np.float32)
    bias = rng.normal(size=num_classes).astype(np.float32)
    features = (rng.normal(size=(n, dim)) + 2 * kernel.T[labels]).astype(np.float32)
    return {
        "features": features,
        "logits": features @ kernel + bias,
        "labels": labels,
        "kernel": kernel,
        "bias": bias,
    }


def test_analyze_report_and_tensorboard(tmp_path):
    superclass = np.array([0, 0, 0, 1, 1, 2])
    names = [f"c{i}" for i in range(6)]
    entries = []
    teachers = {}
    for seed, smoothing in enumerate((0.0, 0.1)):
        outputs = _fake_outputs(seed)
        teachers[smoothing] = outputs
        metrics = analyze(
            student_outputs=outputs,
            train_outputs=_fake_outputs(seed + 10),
            superclass=superclass,
            class_names=names,
            out_dir=tmp_path / f"t{seed}",
            name=f"teacher_ls{smoothing}",
        )
        entries.append(
            {
                "name": f"teacher_ls{smoothing}",
                "metrics": metrics,
                "config": {"label_smoothing": smoothing, "model": "tiny"},
            }
        )
    for temperature in (1.0, 3.0):
        for smoothing, teacher in teachers.items():
            name = f"student_ls{smoothing}_T{temperature:g}"
            metrics = analyze(
                teacher_outputs=teacher,
                student_outputs=_fake_outputs(7),
                superclass=superclass,
                class_names=names,
                out_dir=tmp_path / name,
                name=name,
                temperature=temperature,
            )
            entries.append(
                {
                    "name": name,
                    "metrics": metrics,
                    "config": {"teacher_label_smoothing": smoothing, "temperature": temperature},
                }
            )

    teacher_metrics = entries[0]["metrics"]
    outputs = teachers[0.0]
    assert teacher_metrics["top1_accuracy"] == top_k_accuracy(outputs["logits"], outputs["labels"])
    probs = analysis.softmax(outputs["logits"])
    assert teacher_metrics["one_minus_stability"] == pytest.approx(
        stability(probs, outputs["labels"]).one_minus_stability
    )
    assert teacher_metrics["ece"] == pytest.approx(
        expected_calibration_error(probs, outputs["labels"])
    )
    assert teacher_metrics["semantic_mass_ratio"] == pytest.approx(
        semantic_mass(probs, outputs["labels"], superclass)["semantic_mass_ratio"]
    )
    assert teacher_metrics["classes"] == [0, 1, 3]
    assert "agreement" not in teacher_metrics and "equivalent_smoothing" in teacher_metrics
    student_metrics = entries[-1]["metrics"]
    assert student_metrics["agreement"] == teacher_student_agreement(
        teachers[0.1]["logits"], _fake_outputs(7)["logits"]
    )
    assert student_metrics["teacher_equivalent_smoothing"] == pytest.approx(
        equivalent_smoothing(teachers[0.1]["logits"], teachers[0.1]["labels"], temperature=3.0)
    )

    saved = json.loads((tmp_path / "t0" / "analysis.json").read_text())
    assert saved["ece"] == pytest.approx(teacher_metrics["ece"])
    for figure in ("projection", "reliability"):
        _assert_png(teacher_metrics["figures"][figure])

    report_path = tmp_path / "study" / "report.md"
    text = write_report(entries, report_path, tensorboard_logdir=tmp_path / "tb_report")
    assert report_path.read_text() == text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| run"))
    for column in (
        "LS",
        "teacher LS",
        "T",
        "top-1 %",
        "1 - S",
        "ECE",
        "semantic mass ratio",
        "separation ratio",
        "agreement %",
    ):
        assert f"| {column} |" in header
    for entry in entries:
        row = next(line for line in lines if line.startswith(f"| {entry['name']} |"))
        assert f"| {100 * entry['metrics']['top1_accuracy']:.2f} |" in row
        assert f"| {entry['metrics']['ece']:.4f} |" in row
    links = [part.split("](")[1].split(")")[0] for part in text.split("![")[1:]]
    assert len(links) == 2 * len(entries)  # projection + reliability per run
    for link in links:
        assert (report_path.parent / link).is_file()
    # Teachers side by side: one row with LS = 0 and LS = 0.1 columns.
    assert "| LS = 0 | LS = 0.1 |" in text
    student_row = next(line for line in lines if line.startswith("| 3 |"))
    assert "student_ls0.0_T3" in student_row and "student_ls0.1_T3" in student_row

    logdir = tmp_path / "tb"
    log_to_tensorboard(logdir, "analysis", teacher_metrics, teacher_metrics["figures"], step=2)
    tags = {}
    for event_file in logdir.iterdir():
        for event in tf.compat.v1.train.summary_iterator(os.fspath(event_file)):
            for value in event.summary.value:
                tags[value.tag] = (value.metadata.plugin_data.plugin_name, event.step)
    assert tags["analysis/projection"] == ("images", 2)
    assert tags["analysis/reliability"] == ("images", 2)
    assert tags["analysis/ece"] == ("scalars", 2)
    assert "analysis/notes" not in tags
    assert any((tmp_path / "tb_report").iterdir())


def test_report_bad_entries():
    with pytest.raises(ValueError, match="non-empty list"):
        write_report([], "x.md")
    with pytest.raises(ValueError, match="entries\\[0\\]"):
        write_report([{"name": "a"}], "x.md")
    with pytest.raises(ValueError, match="`student_outputs` must be a dict"):
        analyze(student_outputs={"logits": np.zeros((2, 3))}, out_dir="unused", name="a")


@pytest.mark.parametrize(
    "module",
    ["stability", "calibration", "projection", "diffusion", "mutual_information", "agreement"],
)
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(
        importlib.import_module(f"lskd_tf.analysis.{module}"), extraglobs={"np": np}
    )
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------- projection sample (ICML 2022 script)

# sutd-visual-computing-group/LS-KD-compatibility,
# src/visualization/alpha-LS-KD_imagenet_centroids.py: CLASSES_idx = [266, 267, 833],
# the first 150 training and 50 validation images of each.
IMAGENET_TRIPLE = (266, 267, 833)


def _mock_imagenet(labels_of_split):
    """A 1000-class mock ImageNet (`tfds.testing.mock_data`) whose splits hold JPEGs of
    the given labels, each image filled with its position so the test can tell them apart."""
    import tensorflow_datasets as tfds

    def as_dataset(self, split, *args, **kwargs):
        labels = labels_of_split[str(split).split("[")[0]]
        images = [
            tf.io.encode_jpeg(np.full((40, 48, 3), 3 * i, np.uint8), quality=100).numpy()
            for i in range(len(labels))
        ]
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": np.asarray(labels, np.int64)}
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _first_per_class(labels, classes, per_class):
    """Positions of the first `per_class` examples of each of `classes`, in order."""
    seen = dict.fromkeys(classes, 0)
    kept = []
    for position, label in enumerate(labels):
        if label in seen and seen[label] < per_class:
            seen[label] += 1
            kept.append(position)
    return kept


def test_imagenet_projection_triple_is_the_icml22_scripts():
    from lskd_tf import data

    info = data.get_info("imagenet2012")
    assert default_class_triple(info.superclass, info.class_names, "imagenet2012") == (
        266,
        267,
        833,
    )
    names = [info.class_names[c] for c in IMAGENET_TRIPLE]
    assert names == ["miniature_poodle", "standard_poodle", "submarine"]


def test_class_sample_takes_the_first_per_class_before_decoding():
    from lskd_tf import data

    rng = np.random.default_rng(0)
    labels = rng.choice([0, 5, 266, 267, 833, 999], size=40).tolist()
    with _mock_imagenet({"train": labels, "validation": labels}):
        sample = data.make_dataset(
            "imagenet2012", "train", global_batch_size=4, training=False,
            classes=IMAGENET_TRIPLE, per_class=3, image_size=32,
        )  # fmt: skip
        images, got = (np.concatenate(part) for part in zip(*sample.as_numpy_iterator()))
        full = data.make_dataset(
            "imagenet2012", "train", global_batch_size=40, training=False, image_size=32
        )
        all_images = next(iter(full))[0].numpy()
        with pytest.raises(ValueError, match="class ids in 0..999"):
            data.make_dataset("imagenet2012", "train", global_batch_size=4, training=False,
                              classes=(1, 2, 1000), per_class=1)  # fmt: skip
    kept = _first_per_class(labels, IMAGENET_TRIPLE, 3)
    assert got.tolist() == [labels[i] for i in kept]
    np.testing.assert_array_equal(images, all_images[kept])


def test_analysis_projects_the_first_150_and_50_of_the_triple(tmp_path, monkeypatch):
    """The driver on a 1000-class mock ImageNet: the projection is fitted on the first
    `train_per_class` training and shown on the first `val_per_class` validation images of
    266/267/833 (scaled down from 150/50), wherever they are in the splits."""
    import keras

    from lskd_tf import analysis, tasks
    from lskd_tf.analysis import driver as old_name
    from lskd_tf.tasks.image_classification import analysis as driver

    assert old_name.analyze_runs is driver.analyze_runs  # the old name still works
    from lskd_tf.run_dir import RunDir

    rng = np.random.default_rng(1)
    train = rng.choice([3, 266, 267, 833, 700], size=60).tolist()
    val = rng.choice([266, 267, 833, 1, 2], size=30).tolist()
    run = RunDir(tmp_path / "teacher-tiny")
    run.path.mkdir()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(1000, name="classifier")(x)).save(run.checkpoint("last"))
    run.write({"status": "finished", "kind": "teacher", "data": {"name": "imagenet2012",
               "options": [["image_size", 32]]}})  # fmt: skip
    seen = {}
    real_analyze = analysis.analyze

    def spy(**kwargs):
        seen.update(kwargs)
        return real_analyze(**kwargs)

    monkeypatch.setattr(analysis, "analyze", spy)
    with _mock_imagenet({"train": train, "validation": val}):
        driver.analyze_runs(tasks.get("image_classification"), [run.path], tmp_path / "out",
                            batch_size=8, train_per_class=4, val_per_class=2,
                            mi_examples_per_class=3, mi_augmentations=2)  # fmt: skip
    assert seen["classes"] == IMAGENET_TRIPLE
    assert seen["train_outputs"]["labels"].tolist() == [
        train[i] for i in _first_per_class(train, IMAGENET_TRIPLE, 4)
    ]
    assert seen["val_outputs"]["labels"].tolist() == [
        val[i] for i in _first_per_class(val, IMAGENET_TRIPLE, 2)
    ]
    assert len(seen["student_outputs"]["labels"]) == 30  # the other measures: the whole split
    metrics = json.loads((tmp_path / "out" / "teacher-tiny" / "analysis.json").read_text())
    assert metrics["classes"] == list(IMAGENET_TRIPLE)


def test_an_analysis_is_one_function_and_one_measures_entry(tmp_path, monkeypatch):
    """A measure appended to MEASURES gets the model's outputs and the context (the
    teacher's, T) and its numbers land in analyze's result and analysis.json."""
    from lskd_tf.analysis import report

    def teacher_margin(outputs, context):
        gap = context.teacher["logits"].max(-1) - outputs["logits"].max(-1)
        return {"mean_teacher_margin": float(gap.mean()), "at_t": context.soft_temperature}

    monkeypatch.setattr(report, "MEASURES", [*report.MEASURES, teacher_margin])
    student, teacher = _fake_outputs(1, num_classes=3, n=12), _fake_outputs(2, num_classes=3, n=12)
    metrics = analyze(student_outputs=student, teacher_outputs=teacher, temperature=2.0,
                      out_dir=tmp_path, name="s")  # fmt: skip
    expected = float((teacher["logits"].max(-1) - student["logits"].max(-1)).mean())
    assert metrics["mean_teacher_margin"] == pytest.approx(expected)
    assert metrics["at_t"] == 2.0 and metrics["classes"] == [0, 1, 2]
    written = json.loads((tmp_path / "analysis.json").read_text())
    assert written["mean_teacher_margin"] == pytest.approx(expected)
    assert [m.__name__ for m in analysis.MEASURES][:2] == [
        "accuracy_measures",
        "diffusion_measures",
    ]
