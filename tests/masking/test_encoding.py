"""Fixed-point encoding: exact lift, error bound, width choice, overflow refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ParameterError
from secagg.masking import FixedPointEncoding, PairwiseMasking
from secagg.protocol import client_id
from secagg.rand import DeterministicRng


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 50),
    bound=st.sampled_from([0.01, 1.0, 37.5]),
    width=st.sampled_from([16, 32, 64]),
    seed=st.integers(0, 2**16),
)
def test_sum_of_encodings_decodes_within_bound(n, bound, width, seed):
    enc = FixedPointEncoding.largest(width, value_bound=bound, max_clients=n)
    rng = DeterministicRng.from_int(seed)
    vectors = [(rng.uniform(64) * 2 - 1) * bound for _ in range(n)]
    vectors[0][:2] = [bound, -bound]  # the extremes must not wrap
    total = np.zeros(64, dtype=enc.dtype)
    for v in vectors:
        total += enc.encode(v, rng=rng)
    error = np.max(np.abs(enc.decode(total) - np.sum(vectors, axis=0)))
    assert error <= enc.error_bound(n)


def test_clipping_bounds_inputs_outside_value_bound():
    enc = FixedPointEncoding.largest(32, value_bound=1.0, max_clients=3)
    total = sum(
        enc.encode(np.array([5.0, -9.0]), rng=DeterministicRng.from_int(0)) for _ in range(3)
    )
    np.testing.assert_allclose(enc.decode(total), [3.0, -3.0], atol=enc.error_bound(3))


def test_stochastic_rounding_is_unbiased():
    enc = FixedPointEncoding(width=16, value_bound=1.0, max_clients=1, max_units=4)
    x = np.full(20000, 0.3 / enc.scale)  # 0.3 of one unit: rounds up 30% of the time
    units = enc.encode(x, rng=DeterministicRng.from_int(5)).view(np.int16)
    assert set(np.unique(units)) <= {0, 1}
    assert abs(units.mean() - 0.3) < 0.02


def test_width_is_the_narrowest_meeting_precision():
    assert (
        FixedPointEncoding.for_precision(value_bound=1, max_clients=10, precision=1e-1).width == 16
    )
    enc = FixedPointEncoding.for_precision(value_bound=1, max_clients=100, precision=1e-5)
    assert (enc.width, enc.bytes_per_value) == (32, 4)
    assert enc.error_bound(100) < 5e-6
    assert (
        FixedPointEncoding.for_precision(value_bound=1, max_clients=1000, precision=1e-7).width
        == 64
    )


def test_overflow_configuration_refused():
    # threat: a ring too small for the cohort silently wraps the sum
    with pytest.raises(ParameterError, match="cannot wrap"):
        FixedPointEncoding(width=16, value_bound=1.0, max_clients=10, max_units=3277)
    with pytest.raises(ParameterError, match="precision"):
        FixedPointEncoding.for_precision(value_bound=1.0, max_clients=100, precision=1e-15)
    with pytest.raises(ParameterError):
        FixedPointEncoding.largest(16, value_bound=1.0, max_clients=2**15)


def test_cohort_larger_than_max_clients_refused():
    scheme = PairwiseMasking(max_clients=3)
    with pytest.raises(ParameterError, match="max_clients"):
        scheme.open_round(0, [client_id(i) for i in range(4)], 4, rng=DeterministicRng.from_int(0))
