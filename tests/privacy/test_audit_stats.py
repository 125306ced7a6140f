"""The one-run audit statistics: known values, monotonicity, validity, the GDP conversion."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_testkit import ChaChaSource
from scipy import special
from scipy import stats as sps

from secagg_privacy.audit import stats
from secagg_privacy.errors import PrivacyError, PrivacyParameterError
from secagg_privacy.noise import standard_normal


def lb(m, r, v, delta=1e-5, beta=0.05):
    return stats.epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta, beta=beta)


# ----------------------------------------------------------------- known values


def test_all_correct_thousand_matches_the_published_ceiling():
    # privacy.md: m = r = 1000 all correct, β = 0.05, δ = 1e-5 → 5.78
    assert lb(1000, 1000, 1000) == pytest.approx(5.78, abs=0.005)


def test_pure_dp_closed_form_when_all_guesses_are_right():
    # δ = 0, v = r: p-value = q^r, so q* = β^(1/r) and ε* = logit(q*).
    for r in (10, 100, 1000):
        expected = float(special.logit(0.05 ** (1 / r)))
        assert lb(r, r, r, delta=0.0) == pytest.approx(expected, abs=1e-6)


def test_delta_term_only_lowers_the_bound():
    for m, r, v in [(1000, 1000, 1000), (1000, 200, 190), (500, 100, 90)]:
        assert lb(m, r, v, delta=1e-5) < lb(m, r, v, delta=0.0)


def test_p_value_matches_the_binomial_tail_without_delta():
    q = float(special.expit(1.3))
    got = stats.p_value(canaries=300, guesses=200, correct=150, epsilon=1.3, delta=0.0)
    assert got == pytest.approx(float(sps.binom.sf(149, 200, q)), rel=1e-12)


def test_p_value_delta_term_by_brute_force():
    # 2mδ · max_i (f(v−i) − f(v)) / i, computed term by term.
    m, r, v, eps, delta = 50, 40, 33, 0.7, 1e-3
    q = float(special.expit(eps))

    def f(x):
        return float(sps.binom.sf(x - 1, r, q))

    slope = max((f(v - i) - f(v)) / i for i in range(1, v + 1))
    expected = f(v) + 2 * m * delta * slope
    got = stats.p_value(canaries=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(expected, rel=1e-10)


def test_bound_is_zero_at_chance_accuracy():
    assert lb(1000, 1000, 500) == 0.0
    assert lb(1000, 100, 0) == 0.0


def test_reported_bound_is_itself_rejected():
    eps = lb(1000, 300, 280)
    assert eps > 0
    p = stats.p_value(canaries=1000, guesses=300, correct=280, epsilon=eps, delta=1e-5)
    assert p <= 0.05


# ----------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    r=st.integers(min_value=1, max_value=400),
    frac=st.floats(min_value=0.0, max_value=1.0),
    extra_m=st.integers(min_value=0, max_value=600),
)
def test_bound_is_monotone_in_correct_guesses(r, frac, extra_m):
    m = r + extra_m
    v = int(frac * (r - 1))
    assert lb(m, r, v) <= lb(m, r, v + 1) + 1e-9


@settings(max_examples=40, deadline=None)
@given(r=st.integers(min_value=1, max_value=1000), frac=st.floats(min_value=0.0, max_value=1.0))
def test_bound_never_exceeds_the_all_correct_ceiling(r, frac):
    v = int(frac * r)
    ceiling = lb(1000, r, r)
    assert lb(1000, r, v) <= ceiling + 1e-9
    assert ceiling <= lb(1000, 1000, 1000) + 1e-9 or r > 1000


def test_ceiling_grows_slowly_with_guesses_and_stays_below_eight():
    ceilings = [lb(m, m, m) for m in (100, 1000, 10_000)]
    assert ceilings == sorted(ceilings)
    assert ceilings[-1] < 8.0


# ----------------------------------------------------------------- validity oracle


def _randomized_response_audit(eps, m, label):
    """Canaries whose scores are one ε-DP randomized-response bit (plus tie noise)."""
    src = ChaChaSource(label)
    included = np.frombuffer(src.random_bytes(m), dtype=np.uint8) % 2 == 1
    u = (np.frombuffer(src.random_bytes(8 * m), dtype="<u8") >> np.uint64(11)) * 2.0**-53
    truthful = u < special.expit(eps)
    bit = np.where(truthful, included, ~included)
    scores = bit + 1e-3 * standard_normal(src, m)
    return stats.one_run_audit(scores, included, delta=1e-5)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_bound_is_valid_and_informative_on_an_exact_eps_dp_mechanism(eps):
    # Threat covered: an auditor that over-claims. Randomized response is exactly
    # ε-DP per canary, so a valid bound must not exceed ε (fails w.p. ≤ 5% per seed).
    bound = _randomized_response_audit(eps, 2000, f"rr-{eps}")
    assert bound.epsilon_lower <= eps
    assert bound.epsilon_lower > 0.3 * eps


def test_bonferroni_family_is_fixed_in_advance():
    counts = stats.guess_counts(1000)
    assert counts == (20, 50, 100, 200, 500, 1000)
    bound = _randomized_response_audit(1.0, 1000, "family")
    assert bound.guess_counts == counts and bound.guesses in counts


def test_correct_guesses_counts_top_in_and_bottom_out():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, False, True, False, True, False])
    assert stats.correct_guesses(scores, included, 2) == 2  # top: in ✓, bottom: out ✓
    assert stats.correct_guesses(scores, included, 4) == 2  # + 4.0 (out ✗), 1.0 (in ✗)


# ----------------------------------------------------------------- GDP conversion


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.5])
def test_gdp_epsilon_inverts_the_tradeoff_delta(mu):
    eps = stats.gdp_epsilon(mu, 1e-5)
    ref = sps.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * sps.norm.cdf(-eps / mu - mu / 2)
    assert ref == pytest.approx(1e-5, rel=1e-4)


def test_gdp_epsilon_known_value_and_monotone():
    # Dong, Roth & Su: 1-GDP at δ = 1e-5 ≈ 4.38 (cross-checked by the formula test above)
    assert stats.gdp_epsilon(1.0, 1e-5) == pytest.approx(4.377, abs=0.01)
    values = [stats.gdp_epsilon(mu, 1e-5) for mu in (0.0, 0.1, 0.5, 1.0, 2.0)]
    assert values[0] == 0.0 and values == sorted(values)


def test_gaussian_fit_recovers_the_separation():
    src = ChaChaSource("gauss-fit")
    m = 4000
    included = np.arange(m) % 2 == 0
    scores = standard_normal(src, m) + 1.0 * included
    fit = stats.gaussian_fit_estimate(scores, included, delta=1e-5)
    assert fit.mu == pytest.approx(1.0, abs=0.1)
    assert fit.epsilon_estimate == pytest.approx(stats.gdp_epsilon(fit.mu, 1e-5))


def test_gaussian_fit_is_zero_when_included_score_lower():
    included = np.array([True, True, False, False])
    fit = stats.gaussian_fit_estimate([0.0, 0.1, 1.0, 1.2], included, delta=1e-5)
    assert fit.mu == 0.0 and fit.epsilon_estimate == 0.0


# ----------------------------------------------------------------- verdict and errors


def test_verdict():
    assert stats.verdict(1.0, 2.0) == "consistent"
    assert stats.verdict(2.0, 2.0) == "consistent"
    assert stats.verdict(2.01, 2.0) == "VIOLATION"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(canaries=10, guesses=11, correct=5),
        dict(canaries=10, guesses=5, correct=6),
        dict(canaries=0, guesses=0, correct=0),
        dict(canaries=10, guesses=5, correct=-1),
        dict(canaries=10.0, guesses=5, correct=1),
        dict(canaries=10, guesses=5, correct=True),
    ],
)
def test_bad_counts_raise_a_named_error(kwargs):
    with pytest.raises(PrivacyParameterError):
        stats.epsilon_lower_bound(**kwargs, delta=1e-5)


@pytest.mark.parametrize("delta,beta", [(-1e-5, 0.05), (1.0, 0.05), (1e-5, 0.0), (1e-5, 1.0)])
def test_bad_probabilities_raise(delta, beta):
    with pytest.raises(PrivacyError):
        stats.epsilon_lower_bound(canaries=10, guesses=10, correct=10, delta=delta, beta=beta)


def test_bad_scores_raise():
    with pytest.raises(PrivacyParameterError):
        stats.one_run_audit([1.0, float("nan")], [True, False], delta=1e-5)
    with pytest.raises(PrivacyParameterError):
        stats.one_run_audit([1.0, 2.0], [True], delta=1e-5)
    with pytest.raises(PrivacyParameterError):
        stats.one_run_audit([1.0, 2.0], [2, 0], delta=1e-5)
    with pytest.raises(PrivacyParameterError):
        stats.gaussian_fit_estimate([1.0, 2.0, 3.0], [True, False, False], delta=1e-5)


def test_ceiling_is_what_perfectly_separated_scores_give():
    included = np.arange(1000) % 2 == 0  # exactly half in: every guess count can be all right
    perfect = stats.one_run_audit(included.astype(float), included, delta=1e-5)
    assert perfect.epsilon_lower == pytest.approx(stats.audit_ceiling(1000, delta=1e-5))
    # Bonferroni over 6 counts costs a little against the single-count 5.78
    assert 5.0 < stats.audit_ceiling(1000, delta=1e-5) < lb(1000, 1000, 1000)
