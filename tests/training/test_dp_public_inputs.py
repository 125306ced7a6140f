"""Under record-level DP nothing that fixes the mechanism or is released outside it may
depend on the private records: N is declared (or public), scaling is a public constant,
warnings name no client's record count, and local training time is not reported."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from secagg.errors import ParameterError
from secagg.rand import DeterministicRng
from secagg_training.data import from_arrays, load_digits_data
from secagg_training.federation import Federation, FederationConfig, UtilityWarning, run_federation

FAST = {"scheme": "plain", "clients": 3, "seed": 1, "rounds": 1, "model": "logreg"}


def blobs(n, *, seed=0):
    gen = np.random.Generator(np.random.PCG64(seed))
    y = np.arange(n) % 3
    return gen.normal(size=(n, 4)) + y[:, None], y


def plan_of(config, data):
    fed = Federation(config, data=data, rng=DeterministicRng.from_int(5))
    try:
        return fed.privacy
    finally:
        fed.close()


def test_user_data_under_dp_must_declare_nominal_records():
    x, y = blobs(120)
    data = from_arrays(x, y, standardize=False)
    with pytest.raises(ParameterError, match="nominal_records must be declared"):
        Federation(FederationConfig(**FAST), data=data)


def test_adding_one_record_changes_no_public_schedule():
    """The neighbouring dataset (one record more) gives the same N, q, σ and steps."""
    x, y = blobs(120)
    config = FederationConfig(**FAST, nominal_records=40, batch_size=16)
    plans = [
        plan_of(config, from_arrays(xs, ys, x_test=x[:9], y_test=y[:9], standardize=False))
        for xs, ys in ((x, y), (np.vstack([x, x[:1] + 5]), np.append(y, 1)))
    ]
    a, b = (p.schedules["client/0"] for p in plans)
    assert plans[0].nominal_records == plans[1].nominal_records == 40
    assert (a.sample_rate, a.steps_per_round, a.noise_multiplier) == (
        b.sample_rate,
        b.steps_per_round,
        b.noise_multiplier,
    )


def test_digits_default_n_is_the_public_train_size_not_the_partition():
    for partition in ("iid", "dirichlet"):
        plan = plan_of(FederationConfig(**FAST, partition=partition), None)
        assert plan.nominal_records == (1797 - 359) // 3


def test_pooled_standardization_is_refused_under_dp():
    x, y = blobs(120)
    with pytest.raises(ParameterError, match="standardize must be False under DP"):
        Federation(FederationConfig(**FAST, nominal_records=40), data=from_arrays(x, y))


def test_adding_one_record_changes_no_other_records_features():
    """Digits are scaled by the public 1/16; a record's features depend on it alone."""
    raw = load_digits()
    data = load_digits_data(seed=0)
    rows = {r.tobytes() for r in (raw.data / 16.0).astype(np.float32)}
    assert all(r.tobytes() in rows for r in data.x_train)
    x, y = blobs(60)
    base = from_arrays(x, y, x_test=x[:5], y_test=y[:5], standardize=False)
    more = from_arrays(
        np.vstack([x, x[:1] * 100]),
        np.append(y, 0),
        x_test=x[:5],
        y_test=y[:5],
        standardize=False,
    )
    np.testing.assert_array_equal(more.x_train[:60], base.x_train)


def test_utility_warning_names_no_client_record_count():
    x, y = blobs(90)
    data = from_arrays(x, y, x_test=x[:9], y_test=y[:9], standardize=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Federation(FederationConfig(**FAST, nominal_records=30, batch_size=64), data=data).close()
    messages = [str(w.message) for w in caught if issubclass(w.category, UtilityWarning)]
    assert messages == [
        "the declared nominal_records N=30 is at most batch_size=64, so DP-SGD samples every "
        "record every step (q = 1, no privacy amplification by sampling) and accuracy "
        "suffers; use fewer clients or a smaller batch_size"
    ]


def test_local_training_time_is_not_reported_under_dp():
    result = run_federation(FederationConfig(**FAST), rng=DeterministicRng.from_int(3))
    assert all(r.seconds["train"] is None for r in result.rounds)
    plain = run_federation(
        FederationConfig(**FAST | {"dp": False}), rng=DeterministicRng.from_int(3)
    )
    assert all(r.seconds["train"] >= 0 for r in plain.rounds)
