"""Accuracy, and how closely a student follows its teacher on a split.

With teacher logits t, student logits s and p(T) = softmax(z / T):

    top_k_accuracy    = (1/N) sum_i [ y_i among the k largest logits of example i ]
    agreement         = (1/N) sum_i [ argmax_k t_ik == argmax_k s_ik ]       (Stanton 2021)
    KL(teacher||student) at T = (1/N) sum_i sum_k p^t_ik(T) (log p^t_ik(T) - log p^s_ik(T))

The KL is the distillation objective without Hinton's T^2 factor (which only rescales
gradients), so values at different T are comparable as divergences.
"""

from __future__ import annotations

import numpy as np

from lskd_tf.analysis._validation import as_matrix, check_labels, log_softmax


def top_k_accuracy(logits, labels, k: int = 1) -> float:
    """Fraction of examples whose true class is among the k largest scores.

    Ties are broken by class order (as `np.argsort`), so constant logits count class 0..k-1.
    `logits` may also be probabilities: only the ranking matters.

    Example:
        >>> top_k_accuracy(np.array([[3.0, 2, 1], [1, 3, 2]]), np.array([1, 2]), k=2)
        1.0
    """
    z = as_matrix(logits, "logits")
    y = check_labels(labels, z.shape[1], z.shape[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer; got {k!r}.")
    k = min(int(k), z.shape[1])
    top = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def _pair(teacher_logits, student_logits) -> tuple[np.ndarray, np.ndarray]:
    t = as_matrix(teacher_logits, "teacher_logits")
    s = as_matrix(student_logits, "student_logits", num_rows=t.shape[0])
    if s.shape[1] != t.shape[1]:
        raise ValueError(
            f"`student_logits` have {s.shape[1]} classes but `teacher_logits` have {t.shape[1]}."
        )
    return t, s


def teacher_student_agreement(teacher_logits, student_logits) -> float:
    """Fraction of examples on which teacher and student predict the same class."""
    t, s = _pair(teacher_logits, student_logits)
    return float(np.mean(t.argmax(axis=1) == s.argmax(axis=1)))


def teacher_student_kl(teacher_logits, student_logits, *, temperature: float = 1.0) -> float:
    """Mean KL(softmax(t/T) || softmax(s/T)) in nats, without the T^2 factor.

    Example:
        >>> teacher_student_kl(np.zeros((2, 3)), np.zeros((2, 3)))
        0.0
    """
    t, s = _pair(teacher_logits, student_logits)
    log_pt = log_softmax(t, temperature, "teacher_logits")
    log_ps = log_softmax(s, temperature, "student_logits")
    kl = np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1)
    return float(np.mean(kl))
