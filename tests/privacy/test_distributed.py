import math

import numpy as np
import pytest
from privacy_testkit import ChaChaSource

from secagg_privacy.accounting import epsilon_of_event
from secagg_privacy.distributed import (
    COHORT_HIDDEN,
    COHORT_KNOWN,
    POPULATION,
    ClientLevelParams,
    calibrate_client_level,
    client_level_epsilon,
    clip_update,
    privatize_update,
    record_client_level_round,
    round_event,
)
from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError
from secagg_privacy.ledger import KIND_CLIENT_LEVEL, KIND_DPSGD, PrivacyLedger
from secagg_privacy.noise import SecureGaussian

DELTA = 1e-5
POP_DELTA = 10_000**-1.1


def test_clip_update():
    v = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_update(v, 1.0), [0.6, 0.8])
    np.testing.assert_allclose(clip_update(v, 10.0), v)
    with pytest.raises(PrivacyParameterError, match="finite"):
        clip_update(np.array([np.nan, 1.0]), 1.0)
    with pytest.raises(PrivacyParameterError, match="1-D"):
        clip_update(np.zeros((2, 2)), 1.0)


def test_honest_survivors_shares_sum_to_the_calibrated_noise():
    # h_min honest shares of N(0, z²S²/h_min) sum to N(0, z²S²).
    p = ClientLevelParams(noise_multiplier=1.5, clip_norm=2.0, min_honest=4, cohort_size=10)
    assert p.share_std == pytest.approx(1.5 * 2.0 / 2.0)
    g = SecureGaussian(ChaChaSource("shares"))
    zero = np.zeros(40_000)
    total = sum(privatize_update(zero, params=p, noise=g) for _ in range(p.min_honest))
    assert abs(total.std() - 3.0) < 0.05


def test_privatized_update_is_clipped_plus_noise():
    p = ClientLevelParams(noise_multiplier=1.0, clip_norm=1.0, min_honest=1, cohort_size=1)
    g = SecureGaussian(ChaChaSource("upd"))
    out = privatize_update(np.full(10_000, 5.0), params=p, noise=g)
    assert out.mean() == pytest.approx(0.01, abs=0.03)  # clipped to norm 1: each coordinate 0.01
    with pytest.raises(InsecureConfigurationError):
        privatize_update(np.zeros(3), params=p, noise=np.random.default_rng(0))


def test_known_cohort_numbers_from_the_notes():
    # notes: server picks the cohort → each participation is an unsampled Gaussian;
    # z=1: ε≈4.04 for one participation, ≈16.8 for ten (δ = 1/N^1.1 for N = 10,000).
    one = client_level_epsilon(noise_multiplier=1.0, rounds=1, delta=POP_DELTA)
    ten = client_level_epsilon(noise_multiplier=1.0, rounds=10, delta=POP_DELTA)
    assert one == pytest.approx(4.04, abs=0.03) and ten == pytest.approx(16.8, abs=0.1)


def test_hidden_cohort_amplifies():
    # notes: population 10,000, 100 per round, 1000 rounds, z=1 → ε≈1.64 (PLD).
    eps = client_level_epsilon(
        noise_multiplier=1.0,
        rounds=1000,
        delta=POP_DELTA,
        threat_model=COHORT_HIDDEN,
        sample_rate=0.01,
    )
    assert eps == pytest.approx(1.64, abs=0.03)
    # h = 0.5 of the noise honest, uncorrected: z·√h → notes' 3.99.
    weak = client_level_epsilon(
        noise_multiplier=math.sqrt(0.5),
        rounds=1000,
        delta=POP_DELTA,
        threat_model=COHORT_HIDDEN,
        sample_rate=0.01,
    )
    assert weak == pytest.approx(3.99, abs=0.05)


def test_calibration_for_known_cohort_never_overshoots():
    z = calibrate_client_level(target_epsilon=8.0, delta=DELTA, rounds=5)
    assert client_level_epsilon(noise_multiplier=z, rounds=5, delta=DELTA) <= 8.0
    assert client_level_epsilon(noise_multiplier=z * 0.998, rounds=5, delta=DELTA) > 8.0


def test_second_ledger_known_cohort(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger-client-level")
    p = ClientLevelParams(noise_multiplier=2.0, clip_norm=1.0, min_honest=3, cohort_size=5)
    for r in range(3):
        record_client_level_round(
            book, r, participants=["c0", "c1"] if r < 2 else ["c0"], params=p, delta=DELTA
        )
    s = book.summary(kind=KIND_CLIENT_LEVEL)
    assert s["c0"].entries == 3 and s["c1"].entries == 2
    assert s["c0"].epsilon_spent == pytest.approx(
        client_level_epsilon(noise_multiplier=2.0, rounds=3, delta=DELTA)
    )
    entry = book.entries(client="c0", kind=KIND_CLIENT_LEVEL)[0]
    assert (
        "server knows" in entry.body["threat_model"]
        and "at least 3 honest" in entry.body["threat_model"]
    )
    assert entry.body["extra"] == {"min_honest": 3, "cohort_size": 5}
    assert book.summary(kind=KIND_DPSGD) == {}
    assert book.verify(recompute_epsilon=True) == 5


def test_second_ledger_hidden_cohort_charges_the_population(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger-client-level")
    p = ClientLevelParams(
        noise_multiplier=1.0,
        clip_norm=1.0,
        min_honest=50,
        cohort_size=100,
        threat_model=COHORT_HIDDEN,
        sample_rate=0.01,
    )
    entries = record_client_level_round(book, 0, participants=["c0"], params=p, delta=DELTA)
    assert [e.client for e in entries] == [POPULATION]
    assert "Poisson" in entries[0].body["threat_model"]
    assert entries[0].epsilon == pytest.approx(epsilon_of_event(round_event(p), delta=DELTA))


@pytest.mark.parametrize(
    "kw",
    [
        {"min_honest": 6, "cohort_size": 5},
        {"min_honest": 0, "cohort_size": 5},
        {"threat_model": "nobody-knows"},
        {"threat_model": COHORT_HIDDEN},
        {"threat_model": COHORT_KNOWN, "sample_rate": 0.1},
        {"noise_multiplier": math.inf},
    ],
)
def test_bad_params(kw):
    base = dict(noise_multiplier=1.0, clip_norm=1.0, min_honest=2, cohort_size=5)
    base.update(kw)
    with pytest.raises(PrivacyParameterError):
        ClientLevelParams(**base)
