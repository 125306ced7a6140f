"""Statistics of the one-run privacy audit and the Gaussian-fit ε estimate.

The lower bound is the one-run audit of Steinke, Nasr & Jagielski, "Privacy
Auditing with One (1) Training Run" (NeurIPS 2023): ``m`` canaries are each
included independently with probability 1/2; after one training run the
auditor guesses "in" for the ``k_in`` highest-scoring canaries and "out" for the
``k_out`` lowest (``r = k_in + k_out`` guesses, both counts fixed before the
scores are seen). If training is (ε, δ)-DP with respect to each canary, the
number ``W`` of correct guesses satisfies, for every ``v``,

    P[W ≥ v] ≤ f(v) + 2·m·δ · max_{1≤i≤v} (f(v−i) − f(v)) / i,
    f(x) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ x].

Every ε whose p-value is at most β is rejected; the largest rejected ε is a
valid (1 − β) lower bound on the true ε. Several guess counts may be tried: each
is then tested at β / (number of counts) (Bonferroni), so the maximum over them
stays a valid lower bound.

The Gaussian-fit estimate fits one Gaussian to the scores of included canaries
and one to the excluded ones, reads the separation μ = (mean_in − mean_out) /
pooled std as a μ-GDP parameter, and converts it to ε at δ. It is a point
estimate with no confidence guarantee — it can exceed the true ε — and is
reported beside the bound, never as one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

from secagg_privacy.errors import PrivacyParameterError

DEFAULT_BETA = 0.05
#: Guess counts as fractions of ``m`` (split evenly between "in" and "out"),
#: fixed before any score is seen; Bonferroni-corrected over the list.
DEFAULT_GUESS_FRACTIONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_EPS_SEARCH_CAP = 64.0  # e^64 / (1 + e^64) == 1.0 in float64: nothing larger is testable
CONSISTENT = "consistent"
VIOLATION = "VIOLATION"


@dataclasses.dataclass(frozen=True)
class OneRunBound:
    """The (1 − β) one-run lower bound and the guess count that achieved it."""

    epsilon_lower: float
    canaries: int
    guesses: int
    correct: int
    beta: float
    delta: float
    guess_counts: tuple[int, ...]  # every count tried (Bonferroni family)


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """A μ-GDP reading of the score separation; an estimate, not a bound."""

    mu: float
    epsilon_estimate: float
    mean_in: float
    mean_out: float
    std_pooled: float
    delta: float


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PrivacyParameterError(f"{name} must be an integer; got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and at most {high}"
        raise PrivacyParameterError(f"{name} must be at least {low}{upper}; got {value}")
    return int(value)


def _check_prob(name: str, value: float, *, open_low: bool, open_high: bool) -> float:
    v = float(value)
    low_ok = v > 0 if open_low else v >= 0
    high_ok = v < 1 if open_high else v <= 1
    if not (math.isfinite(v) and low_ok and high_ok):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise PrivacyParameterError(f"{name} must be in {lo}0, 1{hi}; got {value}")
    return v


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P-value of ``correct`` right guesses out of ``guesses`` under (ε, δ)-DP.

    The probability bound of the module docstring; small values reject the
    hypothesis that training was (``epsilon``, ``delta``)-DP.
    """
    m = _check_int("canaries", canaries, 1)
    r = _check_int("guesses", guesses, 0, m)
    v = _check_int("correct", correct, 0, r)
    d = _check_prob("delta", delta, open_low=False, open_high=True)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise PrivacyParameterError(f"epsilon must be finite and non-negative; got {epsilon}")
    if v == 0:
        return 1.0
    q = float(special.expit(epsilon))  # accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))  # f(v) = P[X ≥ v]
    below = stats.binom.pmf(np.arange(v), r, q)  # P[X = j], j < v
    window = np.cumsum(below[::-1])  # i-th entry: P[v − i ≤ X < v] = f(v−i) − f(v)
    slope = float(np.max(window / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * d * slope)


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, beta: float = DEFAULT_BETA
) -> float:
    """Largest ε rejected at level ``beta``: a (1 − β) lower bound on the true ε.

    Returns 0.0 when not even ε = 0 is rejected.
    """
    b = _check_prob("beta", beta, open_low=True, open_high=True)

    def excess(eps: float) -> float:
        return (
            p_value(canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta)
            - b
        )

    if excess(0.0) > 0:
        return 0.0
    high = 1.0
    while excess(high) <= 0:
        if high >= _EPS_SEARCH_CAP:
            return _EPS_SEARCH_CAP
        high = min(2 * high, _EPS_SEARCH_CAP)
    # Round down so the reported value is itself rejected (conservative by ≤ 1e-9).
    return max(0.0, float(optimize.brentq(excess, 0.0, high, xtol=1e-10)) - 1e-9)


def _check_scores(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray):
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(included)
    if s.ndim != 1 or s.size == 0:
        raise PrivacyParameterError(f"scores must be a non-empty 1-D array; got shape {s.shape}")
    if b.shape != s.shape:
        raise PrivacyParameterError(
            f"included must have the shape of scores {s.shape}; got {b.shape}"
        )
    if b.dtype != np.bool_:
        if not np.isin(b, (0, 1)).all():
            raise PrivacyParameterError("included must hold booleans or 0/1")
        b = b.astype(bool)
    if not np.isfinite(s).all():
        raise PrivacyParameterError("scores must be finite; got NaN or infinity")
    return s, b


def guess_counts(
    canaries: int, fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS
) -> tuple[int, ...]:
    """The even guess counts ``r`` (half "in", half "out") derived from ``fractions`` of m."""
    m = _check_int("canaries", canaries, 2)
    counts: list[int] = []
    for f in fractions:
        if not (0 < float(f) <= 1):
            raise PrivacyParameterError(f"guess fractions must be in (0, 1]; got {f}")
        r = max(2, 2 * int(round(float(f) * m / 2)))
        r = min(r, m - (m % 2))
        if r not in counts:
            counts.append(r)
    return tuple(counts)


def correct_guesses(scores: np.ndarray, included: np.ndarray, guesses: int) -> int:
    """Right guesses when the top ``guesses/2`` are called "in" and the bottom "out".

    Ties are broken by canary index, which is independent of inclusion.
    """
    k = guesses // 2
    if k == 0:
        return 0
    order = np.argsort(-scores, kind="stable")
    top, bottom = order[:k], order[order.size - k :]
    return int(included[top].sum() + (~included[bottom]).sum())


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    beta: float = DEFAULT_BETA,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
) -> OneRunBound:
    """The best (1 − β) lower bound over the pre-set guess counts, Bonferroni-corrected."""
    s, b = _check_scores(scores, included)
    _check_prob("beta", beta, open_low=True, open_high=True)
    counts = guess_counts(s.size, fractions)
    level = beta / len(counts)
    best = OneRunBound(0.0, s.size, 0, 0, beta, delta, counts)
    for r in counts:
        v = correct_guesses(s, b, r)
        eps = epsilon_lower_bound(canaries=s.size, guesses=r, correct=v, delta=delta, beta=level)
        if eps > best.epsilon_lower or best.guesses == 0:
            best = OneRunBound(eps, s.size, r, v, beta, delta, counts)
    return best


def audit_ceiling(
    canaries: int,
    *,
    delta: float,
    beta: float = DEFAULT_BETA,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
) -> float:
    """The largest bound :func:`one_run_audit` can return for ``canaries`` (all guesses right)."""
    counts = guess_counts(canaries, fractions)
    level = beta / len(counts)
    return max(
        epsilon_lower_bound(canaries=canaries, guesses=r, correct=r, delta=delta, beta=level)
        for r in counts
    )


def gdp_delta(mu: float, epsilon: float) -> float:
    """δ(ε) of μ-GDP: Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Dong, Roth & Su 2019)."""
    if mu <= 0:
        return 0.0
    first = special.ndtr(-epsilon / mu + mu / 2)
    second = math.exp(epsilon + float(special.log_ndtr(-epsilon / mu - mu / 2)))
    return float(max(0.0, first - second))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest ε with μ-GDP ⇒ (ε, δ)-DP."""
    d = _check_prob("delta", delta, open_low=True, open_high=True)
    if not (math.isfinite(mu) and mu >= 0):
        raise PrivacyParameterError(f"mu must be finite and non-negative; got {mu}")
    if gdp_delta(mu, 0.0) <= d:
        return 0.0
    high = max(1.0, mu * mu)
    while gdp_delta(mu, high) > d:
        high *= 2
    return float(optimize.brentq(lambda e: gdp_delta(mu, e) - d, 0.0, high, xtol=1e-10))


def gaussian_fit_estimate(
    scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *, delta: float
) -> GaussianFit:
    """Fit N(mean, var) to included and excluded scores; μ → ε at ``delta``.

    An estimate, not a bound: sampling error and non-Gaussian scores can push
    it either way.
    """
    s, b = _check_scores(scores, included)
    if b.sum() < 2 or (~b).sum() < 2:
        raise PrivacyParameterError(
            f"included must hold at least 2 canaries of each kind; got {int(b.sum())} in, "
            f"{int((~b).sum())} out"
        )
    mean_in, mean_out = float(s[b].mean()), float(s[~b].mean())
    pooled = math.sqrt((float(s[b].var(ddof=1)) + float(s[~b].var(ddof=1))) / 2)
    mu = max(0.0, (mean_in - mean_out) / pooled) if pooled > 0 else 0.0
    if pooled == 0 and mean_in > mean_out:
        mu = math.inf
    eps = math.inf if math.isinf(mu) else gdp_epsilon(mu, delta)
    return GaussianFit(mu, eps, mean_in, mean_out, pooled, delta)


def verdict(lower_bound: float, theoretical_epsilon: float) -> str:
    """``"VIOLATION"`` when the empirical lower bound exceeds the claimed ε."""
    return VIOLATION if lower_bound > theoretical_epsilon else CONSISTENT


# ----------------------------------------------------------------- noise scale

#: Relative deviation of the applied noise std from the claimed one that fails the
#: audit once the confidence interval excludes it ("to ~1%").
NOISE_TOLERANCE = 0.01
#: Two-sided confidence level of the noise-scale interval: an honest run fails with
#: probability ≤ 1e-6 per audit.
NOISE_ALPHA = 1e-6
#: The check must be able to see a 10% shortfall, else it is reported as underpowered.
NOISE_MAX_HALF_WIDTH = 0.10
NOISE_OK = "consistent"
NOISE_TOO_LOW = "VIOLATION: less noise than claimed"
NOISE_TOO_HIGH = "MISMATCH: more noise than claimed"
NOISE_UNDERPOWERED = "UNDERPOWERED"


@dataclasses.dataclass(frozen=True)
class NoiseScaleCheck:
    """The noise standard deviation actually applied, estimated from pure-noise coordinates.

    Independent of ε: it compares the applied std with the claimed σ·C directly,
    so a noise bug of any size beyond the interval is caught at every ε.
    """

    claimed_std: float
    estimated_std: float
    ratio: float  # estimated / claimed
    ratio_low: float  # (1 − NOISE_ALPHA) interval of the ratio
    ratio_high: float
    samples: int
    tolerance: float
    verdict: str


def noise_scale_check(
    squares: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    samples_per_canary: int,
    claimed_std: float,
    tolerance: float = NOISE_TOLERANCE,
    alpha: float = NOISE_ALPHA,
) -> NoiseScaleCheck:
    """Estimate the applied noise std from the excluded canaries' columns (χ² interval).

    ``squares[i]`` is the sum of ``samples_per_canary`` squared zero-mean Gaussian
    draws when canary ``i`` is excluded, so Σ squares / σ² ~ χ²_N over the excluded
    canaries. The verdict fails when the interval lies wholly below (VIOLATION) or
    above (MISMATCH) the claim by more than ``tolerance``, and says UNDERPOWERED when
    the interval is too wide to see a 10% shortfall.
    """
    sq = np.asarray(squares, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if sq.shape != inc.shape or sq.ndim != 1:
        raise PrivacyParameterError("squares and included must be 1-D of the same length")
    k = _check_int("samples_per_canary", samples_per_canary, 1)
    if not (math.isfinite(claimed_std) and claimed_std > 0):
        raise PrivacyParameterError(f"claimed_std must be positive and finite; got {claimed_std}")
    n = int((~inc).sum()) * k
    if n == 0:
        return NoiseScaleCheck(
            claimed_std, math.nan, math.nan, 0.0, math.inf, 0, tolerance, NOISE_UNDERPOWERED
        )
    variance = float(sq[~inc].sum()) / n
    estimated = math.sqrt(variance)
    ratio = estimated / claimed_std
    # σ_true² ∈ [N s² / χ²_{1−α/2}, N s² / χ²_{α/2}]
    low = ratio * math.sqrt(n / float(stats.chi2.ppf(1 - alpha / 2, n)))
    high = ratio * math.sqrt(n / float(stats.chi2.ppf(alpha / 2, n)))
    if high < 1 - tolerance:
        verdict = NOISE_TOO_LOW
    elif low > 1 + tolerance:
        verdict = NOISE_TOO_HIGH
    elif (high - low) / 2 > NOISE_MAX_HALF_WIDTH:
        verdict = NOISE_UNDERPOWERED
    else:
        verdict = NOISE_OK
    return NoiseScaleCheck(claimed_std, estimated, ratio, low, high, n, tolerance, verdict)
