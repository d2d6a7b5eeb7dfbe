"""Paired seed statistics for the LS x KD question: differences, intervals, seeds needed.

Two runs that differ only by the teacher's label smoothing (or by the distillation
temperature) but share a seed start from the same initial weights and see the same
batches, so their accuracy *difference* varies much less than either accuracy: the
comparison is paired by seed. This module is pure NumPy/SciPy (no TensorFlow):

- `paired_difference(baseline, treatment)`: pair two ``{seed: value}`` mappings by seed,
  d_i = treatment_i - baseline_i, and give the mean, SD, a 95% interval for the mean
  difference and the seeds found on one side only (reported, never silently dropped).
- The interval rule (`ci_method`): a t-interval, mean(d) ± t_{1-a/2, n-1} * sd(d) / sqrt(n),
  for fewer than `BOOTSTRAP_MIN_PAIRS` (20) pairs; from 20 pairs on, a BCa bootstrap over
  seeds (10,000 resamples, fixed generator seed so tables are reproducible). Why: with a
  handful of seeds a bootstrap interval is too narrow (it resamples from only n values
  and ignores the t-distribution's heavier tails; with n = 3 there are just 10 distinct
  resamples), whereas the t-interval is exact for normal differences; with many seeds the
  bootstrap no longer needs the normality assumption. One pair: no interval.
- `seeds_needed(mean, sd)`: the paired-t sample size for 80% power at two-sided
  alpha = 0.05 (see its docstring for the formula).
- `best_versus_runner_up(cells)`: the best of several cells (e.g. (teacher alpha, T))
  against the runner-up, paired by seed: the data's recommendation and whether it is
  resolved at this many seeds.

Example:
    >>> d = paired_difference({0: 70.0, 1: 71.0, 2: 72.0}, {0: 71.0, 1: 73.0, 2: 75.0})
    >>> d.n, d.mean, round(d.sd, 6), d.method
    (3, 2.0, 1.0, 't')
    >>> round(d.low, 4), round(d.high, 4)  # 2 -/+ 4.302653 / sqrt(3)
    (-0.4841, 4.4841)
    >>> d.format()
    '+2.00 [-0.48, +4.48]'
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_MIN_PAIRS = 20
"""From this many paired seeds on, intervals are BCa bootstrap; below it, t-intervals."""
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
SIGNIFICANT = "*"
"""Appended to a difference whose interval excludes 0."""

CI_RULE = (
    f"CI: t-interval for < {BOOTSTRAP_MIN_PAIRS} paired seeds, BCa bootstrap over seeds "
    f"({BOOTSTRAP_RESAMPLES:,} resamples) from {BOOTSTRAP_MIN_PAIRS} on, none for 1; "
    f"{SIGNIFICANT} = the 95% CI excludes 0."
)
"""The interval rule in one sentence, printed under every table and verdict."""


def _as_seed_map(values, name: str) -> dict:
    """``{seed: value}`` from a Mapping or a pandas Series indexed by seed; NaNs dropped."""
    if hasattr(values, "index") and hasattr(values, "to_numpy"):  # pandas Series
        if not values.index.is_unique:
            duplicates = sorted(set(values.index[values.index.duplicated()]), key=str)
            raise ValueError(
                f"`{name}` has several values for seed(s) {duplicates}: runs of different "
                "configurations were pooled; group them apart before pairing."
            )
        values = dict(zip(values.index, values.to_numpy(), strict=True))
    if not isinstance(values, Mapping):
        raise ValueError(f"`{name}` must map seed -> value (a dict or a Series); got {values!r}.")
    out = {}
    for seed, value in values.items():
        if value is None:
            continue
        value = float(value)
        if math.isnan(value):
            continue
        out[seed] = value
    return out


def _sorted(items) -> list:
    """Natural order (seeds 0, 1, 10; cells (0.0, 1.0) < (0.1, 1.0)); by text if mixed."""
    items = list(items)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=str)


def t_interval(differences, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided t-interval for the mean: mean ± t_{(1+c)/2, n-1} * sd / sqrt(n).

    Example:
        >>> low, high = t_interval([1.0, 2.0, 3.0])
        >>> round(low, 6), round(high, 6)  # 2 -/+ 4.302653 * 1 / sqrt(3)
        (-0.484138, 4.484138)
    """
    d = _check_differences(differences, minimum=2)
    half = stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def bootstrap_interval(
    differences,
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean, resampling seeds (fixed generator seed).

    Equal differences (SD 0) give the zero-width interval [mean, mean].

    Example:
        >>> low, high = bootstrap_interval(np.arange(30.0))
        >>> bool(low < 14.5 < high), bool(high - low < 12)
        (True, True)
    """
    d = _check_differences(differences, minimum=2)
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    result = stats.bootstrap(
        (d,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="BCa",
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def _check_differences(differences, minimum: int) -> np.ndarray:
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size < minimum or not np.all(np.isfinite(d)):
        raise ValueError(
            f"need a 1-D array of at least {minimum} finite paired differences; "
            f"got {differences!r}."
        )
    return d


def ci_method(n_pairs: int) -> str:
    """Which interval the tables use for ``n_pairs`` paired seeds: "none", "t" or "bootstrap".

    Example:
        >>> ci_method(1), ci_method(5), ci_method(20)
        ('none', 't', 'bootstrap')
    """
    if n_pairs < 2:
        return "none"
    return "t" if n_pairs < BOOTSTRAP_MIN_PAIRS else "bootstrap"


@dataclass(frozen=True)
class PairedDifference:
    """treatment - baseline, paired by seed (see `paired_difference`)."""

    seeds: tuple  # the paired seeds, sorted
    differences: tuple[float, ...]  # treatment - baseline per paired seed
    mean: float  # NaN when no seed is paired
    sd: float  # sample SD (ddof = 1); NaN for fewer than 2 pairs
    low: float  # interval bounds; NaN when there is no interval
    high: float
    method: str  # "t", "bootstrap" or "none"
    only_baseline: tuple = ()  # seeds with a baseline run but no treatment run
    only_treatment: tuple = ()

    @property
    def n(self) -> int:
        """Number of paired seeds."""
        return len(self.seeds)

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or entirely below 0."""
        return self.method != "none" and (self.low > 0 or self.high < 0)

    @property
    def unpaired(self) -> tuple:
        return tuple(_sorted({*self.only_baseline, *self.only_treatment}))

    def format(self, digits: int = 2) -> str:
        """``+1.23 [+0.40, +2.06] *``: mean [CI], the marker when the CI excludes 0.

        Without a CI (one pair) only the mean; with no pair, an empty string.
        """
        if self.n == 0:
            return ""
        text = signed(self.mean, digits)
        if self.method == "none":
            return text
        text += f" [{signed(self.low, digits)}, {signed(self.high, digits)}]"
        return text + (f" {SIGNIFICANT}" if self.excludes_zero else "")

    def describe_method(self) -> str:
        """``t, 3 pairs`` / ``bootstrap, 25 pairs`` / ``no CI, 1 pair``."""
        label = {"none": "no CI", "t": "t", "bootstrap": "bootstrap"}[self.method]
        return f"{label}, {self.n} pair{'s' if self.n != 1 else ''}"


def signed(value: float, digits: int = 2) -> str:
    """``+1.23`` / ``-1.23``; a value that rounds to zero prints ``+0.00``, never ``-0.00``.

    A difference of -1e-9 (float noise between two equal accuracies) would otherwise
    print as ``-0.00``, a negative difference that is not there.
    """
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def paired_difference(
    baseline,
    treatment,
    *,
    confidence: float = CONFIDENCE,
    method: str = "auto",
) -> PairedDifference:
    """treatment - baseline paired by seed, with its interval (module docstring: the rule).

    Args:
        baseline, treatment: ``{seed: value}`` dicts or pandas Series indexed by seed
            (e.g. top-1 % of the students of the no-LS and the LS teacher). Missing values
            (None/NaN) are ignored; a seed repeated on one side is an error (it means two
            configurations were pooled).
        confidence: interval level (0.95).
        method: "auto" (the rule of `ci_method`), "t" or "bootstrap".

    Seeds present on one side only are returned in `only_baseline` / `only_treatment`;
    the order of the inputs does not matter.

    Example:
        >>> d = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {1: 2.5, 0: 2.0, 7: 0.0})
        >>> d.seeds, d.differences, d.only_baseline, d.only_treatment
        ((0, 1), (1.0, 0.5), (5,), (7,))
    """
    if method not in ("auto", "t", "bootstrap"):
        raise ValueError(f"`method` must be 'auto', 't' or 'bootstrap'; got {method!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), e.g. 0.95; got {confidence!r}.")
    a = _as_seed_map(baseline, "baseline")
    b = _as_seed_map(treatment, "treatment")
    seeds = tuple(_sorted(set(a) & set(b)))
    diffs = np.array([b[s] - a[s] for s in seeds], dtype=np.float64)
    only_a = tuple(_sorted(set(a) - set(b)))
    only_b = tuple(_sorted(set(b) - set(a)))
    n = len(seeds)
    chosen = ci_method(n) if method == "auto" or n < 2 else method
    mean = float(diffs.mean()) if n else math.nan
    sd = float(diffs.std(ddof=1)) if n >= 2 else math.nan
    low = high = math.nan
    if chosen == "t":
        low, high = t_interval(diffs, confidence)
    elif chosen == "bootstrap":
        low, high = bootstrap_interval(diffs, confidence)
    return PairedDifference(
        seeds=seeds,
        differences=tuple(float(x) for x in diffs),
        mean=mean,
        sd=sd,
        low=low,
        high=high,
        method=chosen,
        only_baseline=only_a,
        only_treatment=only_b,
    )


def paired_t_power(n: int, mean: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs for a true mean difference
    ``mean`` and SD ``sd`` of the differences.

    power = P(|T'| > t_{1-alpha/2, n-1}), T' ~ noncentral t(df = n - 1, nc = sqrt(n) |mean| / sd).

    Example:
        >>> round(paired_t_power(10, 1.0, 1.0), 4)  # G*Power: dz = 1, n = 10 -> 0.8031
        0.8031
    """
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs; got n = {n}.")
    if not sd > 0:
        raise ValueError(f"`sd` must be > 0 (the SD of the paired differences); got {sd!r}.")
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    noncentrality = math.sqrt(n) * abs(mean) / sd
    return float(
        stats.nct.sf(critical, n - 1, noncentrality)
        + stats.nct.cdf(-critical, n - 1, noncentrality)
    )


def seeds_needed(
    mean: float, sd: float, *, power: float = 0.8, alpha: float = 0.05, max_seeds: int = 100_000
) -> float:
    """Paired seeds needed so that a two-sided paired t-test at level ``alpha`` detects the
    observed mean difference with probability ``power`` (if the observed mean and SD were
    the truth).

    Formula: the smallest n >= 2 with
        P(|T'| > t_{1-alpha/2, n-1}) >= power,  T' ~ noncentral t(n - 1, sqrt(n) |mean| / sd),
    searched upward from the normal approximation
        n0 = ((z_{1-alpha/2} + z_{power}) * sd / |mean|)^2   (7.85 (sd/mean)^2 at 80%, 0.05).
    Returns ``math.inf`` for a zero mean difference (or above ``max_seeds``) and 2 when
    sd = 0 (any two seeds already agree exactly).

    Example:
        >>> seeds_needed(1.0, 1.0), seeds_needed(0.5, 1.0)  # G*Power: dz=1 -> 10, 0.5 -> 34
        (10, 34)
    """
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd < 0:
        raise ValueError(f"`mean` and `sd` must be finite with sd >= 0; got {mean!r}, {sd!r}.")
    if not (0 < power < 1 and 0 < alpha < 1):
        raise ValueError(f"`power` and `alpha` must be in (0, 1); got {power!r}, {alpha!r}.")
    if mean == 0:
        return math.inf
    if sd == 0:
        return 2
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    approx = (z * sd / abs(mean)) ** 2
    if approx > max_seeds:
        return math.inf
    n = max(2, math.floor(approx))
    while paired_t_power(n, mean, sd, alpha) < power:  # the t-test needs a few more
        n += 1
        if n > max_seeds:
            return math.inf
    while n > 2 and paired_t_power(n - 1, mean, sd, alpha) >= power:
        n -= 1
    return n


@dataclass(frozen=True)
class Comparison:
    """The best cell against the runner-up (see `best_versus_runner_up`)."""

    best: Hashable
    runner_up: Hashable | None
    means: dict  # cell -> mean over its seeds
    seeds: dict  # cell -> number of seeds
    difference: PairedDifference | None  # best - runner_up, paired by seed

    @property
    def resolved(self) -> bool:
        """True when the best cell beats the runner-up with a CI excluding 0."""
        return self.difference is not None and self.difference.excludes_zero

    def seeds_needed(self, power: float = 0.8, alpha: float = 0.05) -> float | None:
        """Paired seeds needed at the observed mean and SD; None without an SD (< 2 pairs)."""
        d = self.difference
        if d is None or d.n < 2:
            return None
        return seeds_needed(d.mean, d.sd, power=power, alpha=alpha)


def best_versus_runner_up(cells: Mapping) -> Comparison:
    """Rank cells by mean value; compare the best with the runner-up, paired by seed.

    Args:
        cells: ``{cell: {seed: value}}``, e.g. ``{(0.1, 1.0): {0: 71.2, 1: 70.9}, ...}``
            for (teacher alpha, T) cells of one student. Cells with no value are ignored.

    Ties in the mean go to the first cell in sorted order, so the answer is deterministic.

    Example:
        >>> c = best_versus_runner_up({"a": {0: 1.0, 1: 2.0}, "b": {0: 3.0, 1: 3.5}})
        >>> c.best, c.runner_up, c.difference.mean
        ('b', 'a', 1.75)
    """
    if not isinstance(cells, Mapping) or not cells:
        raise ValueError("`cells` must be a non-empty dict {cell: {seed: value}}.")
    maps = {cell: _as_seed_map(values, f"cells[{cell!r}]") for cell, values in cells.items()}
    maps = {cell: m for cell, m in maps.items() if m}
    if not maps:
        raise ValueError("every cell of `cells` is empty; there is nothing to compare.")
    means = {cell: float(np.mean(list(m.values()))) for cell, m in maps.items()}
    order = {cell: i for i, cell in enumerate(_sorted(maps))}
    ranked = sorted(maps, key=lambda cell: (-means[cell], order[cell]))
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    difference = None if runner_up is None else paired_difference(maps[runner_up], maps[best])
    return Comparison(
        best=best,
        runner_up=runner_up,
        means=means,
        seeds={cell: len(m) for cell, m in maps.items()},
        difference=difference,
    )
