"""Information a model keeps about individual examples (Müller et al. 2019, Sec. 4).

Mutual information between the example index and a logit difference. Take N examples
of two classes a and b, L random augmentations of each, and f_{x,l} = z_a - z_b, the
logit difference of example x under augmentation l. Model f given x as a Gaussian with
mean mu_x = (1/L) sum_l f_{x,l} and one pooled variance
sigma^2 = (1/(N L)) sum_{x,l} (f_{x,l} - mu_x)^2. Then (Müller's estimator, averaged over
all N L samples)

    I = (1/(N L)) sum_{x,l} [ -(f_{x,l} - mu_x)^2 / (2 sigma^2)
                              - log( (1/N) sum_{x'} exp(-(f_{x,l} - mu_{x'})^2 / (2 sigma^2)) ) ]

in nats; I <= log N, and I = 0 when all examples share the same mean. A teacher trained
with label smoothing erases this information (its I drops), which Müller et al. give as
the reason LS teachers distill worse. Müller uses N = 600 (300 per class).

Equivalent smoothing of a teacher (Müller Sec. 4): the label smoothing a teacher's soft
targets amount to, at temperature T,

    gamma = E_x[ sum_k (1 - y_k) p^t_k(x; T) ] * K / (K - 1)

i.e. the mean non-target probability mass, rescaled so that a teacher that outputs the
uniform-convention smoothed target (1 - a) y + a / K has gamma = a exactly.
"""

from __future__ import annotations

import numpy as np

from lskd_tf.analysis._validation import as_matrix, check_labels, check_probs, softmax


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(a - peak), axis=axis))


def logit_difference_mutual_information(logit_differences) -> float:
    """Müller's estimate of I(example index; logit difference) in nats.

    Args:
        logit_differences: (N, L) array, f_{x,l} for N examples and L augmentations
            (L >= 2 so that the pooled variance is defined).

    Example:
        >>> f = np.array([[-1.0, 1.0], [-1.0, 1.0]])  # both examples alike: no information
        >>> logit_difference_mutual_information(f)
        0.0
    """
    f = as_matrix(logit_differences, "logit_differences")
    num_examples, num_augmentations = f.shape
    if num_augmentations < 2:
        raise ValueError(
            "`logit_differences` needs at least 2 augmentations per example (shape (N, L), "
            f"L >= 2); got L = {num_augmentations}."
        )
    means = f.mean(axis=1)
    variance = np.mean((f - means[:, None]) ** 2)
    if variance == 0.0:
        raise ValueError(
            "`logit_differences` do not vary under augmentation (pooled variance 0); the "
            "Gaussian estimate is undefined. Check that the augmentation is random."
        )
    samples = f.reshape(-1)  # sample s belongs to example s // L
    own_mean = np.repeat(means, num_augmentations)
    log_own = -((samples - own_mean) ** 2) / (2.0 * variance)
    # (N L, N) matrix of log-densities against every example's mean: O(N^2 L).
    log_all = -((samples[:, None] - means[None, :]) ** 2) / (2.0 * variance)
    log_marginal = _logsumexp(log_all, axis=1) - np.log(num_examples)
    return float(np.mean(log_own - log_marginal))


def mutual_information_from_logits(logits, class_a: int, class_b: int) -> float:
    """`logit_difference_mutual_information` of z_a - z_b from (N, L, K) augmented logits.

    `logits[x, l]` are the logits of example x under augmentation l, e.g. the output of
    `lskd_tf.analysis.collect.collect_augmented_logits`.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"`logits` must have shape (N, L, K); got {z.shape}.")
    num_classes = z.shape[2]
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        if not 0 <= int(c) < num_classes:
            raise ValueError(
                f"`{name}` = {c} out of range: valid class ids are 0..{num_classes - 1}."
            )
    if int(class_a) == int(class_b):
        raise ValueError("`class_a` and `class_b` must differ.")
    return logit_difference_mutual_information(z[:, :, int(class_a)] - z[:, :, int(class_b)])


def equivalent_smoothing(
    logits=None, labels=None, *, temperature: float = 1.0, probs=None
) -> float:
    """Müller's equivalent smoothing gamma of a teacher at temperature T.

    gamma = mean_x[ 1 - p_y(x; T) ] * K / (K - 1). Pass `logits` (softened by T here) or
    already computed `probs` (then `temperature` must be 1).

    Example:
        >>> a, k = 0.1, 4
        >>> target = (1 - a) * np.eye(k)[[0, 2]] + a / k  # uniform-convention LS targets
        >>> round(equivalent_smoothing(np.log(target), np.array([0, 2])), 12)
        0.1
    """
    if (logits is None) == (probs is None):
        raise ValueError("Pass exactly one of `logits` or `probs`.")
    if probs is not None:
        if temperature != 1.0:
            raise ValueError("`temperature` applies to `logits`; pass logits to soften by T.")
        p = check_probs(probs)
    else:
        p = softmax(logits, temperature)
    num_examples, num_classes = p.shape
    if num_classes < 2:
        raise ValueError("Equivalent smoothing needs at least two classes.")
    if labels is None:
        raise ValueError("`labels` are required for equivalent smoothing.")
    y = check_labels(labels, num_classes, num_examples)
    non_target = 1.0 - p[np.arange(num_examples), y]
    return float(non_target.mean() * num_classes / (num_classes - 1))
