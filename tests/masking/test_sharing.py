"""Shamir over GF(2^31 − 1): any t reconstruct, t − 1 reveal nothing usable, oracles."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import shamir
from secagg.errors import IntegrityError, ParameterError
from secagg.masking.sharing import (
    PRIME,
    field_to_secret,
    lagrange_weights,
    reconstruct_batch,
    reconstruct_many,
    secrets_to_field,
    share_secrets,
)
from secagg.rand import DeterministicRng


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), data=st.data(), seed=st.integers(0, 2**20))
def test_any_t_subset_reconstructs(n, data, seed):
    t = data.draw(st.integers(1, n))
    rng = DeterministicRng.from_int(seed)
    secret_bytes = rng.random_bytes(32), rng.random_bytes(32)
    secrets = secrets_to_field(*secret_bytes)
    xs = list(range(1, n + 1))
    rows = share_secrets(secrets, threshold=t, xs=xs, rng=rng)
    subset = sorted(data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=t, unique=True)))
    picked = rows[[x - 1 for x in subset]]
    got = reconstruct_many(picked, xs=subset)
    assert field_to_secret(got[:9]) == secret_bytes[0]
    assert field_to_secret(got[9:]) == secret_bytes[1]
    batch = reconstruct_batch(picked[None], np.array([subset]))
    np.testing.assert_array_equal(batch[0], secrets)


def test_t_minus_one_shares_give_nothing_usable():
    # threat: t − 1 colluding holders pool their shares
    rng = DeterministicRng.from_int(3)
    secrets = secrets_to_field(rng.random_bytes(32), rng.random_bytes(32))
    rows = share_secrets(secrets, threshold=4, xs=[1, 2, 3, 4, 5], rng=rng)
    for subset in itertools.combinations(range(5), 3):
        guess = reconstruct_many(rows[list(subset)], xs=[i + 1 for i in subset])
        assert not np.array_equal(guess, secrets)
    # one share's distribution does not depend on the secret: compare two extreme secrets
    a = np.concatenate(
        [
            share_secrets(np.zeros(64, np.int64), threshold=2, xs=[7, 8], rng=rng)[0]
            for _ in range(40)
        ]
    )
    b = np.concatenate(
        [
            share_secrets(np.full(64, PRIME - 1), threshold=2, xs=[7, 8], rng=rng)[0]
            for _ in range(40)
        ]
    )
    for sample in (a, b):  # uniform on [0, p): mean p/2, each quarter ~25%
        assert abs(sample.mean() / PRIME - 0.5) < 0.03
        quarters = np.bincount((sample * 4 // PRIME).astype(int), minlength=4) / sample.size
        assert np.all(np.abs(quarters - 0.25) < 0.04)


def test_vectorized_share_matches_core_shamir():
    secrets = secrets_to_field(bytes(range(32)), bytes(range(32, 64)))
    ours = share_secrets(secrets, threshold=3, xs=[2, 5, 9, 11], rng=DeterministicRng.from_int(9))
    core = shamir.share(
        secrets, threshold=3, xs=[2, 5, 9, 11], prime=PRIME, rng=DeterministicRng.from_int(9)
    )
    np.testing.assert_array_equal(ours, core)


def test_lagrange_weights_match_core():
    points = np.array([[1, 2, 3], [4, 9, 100], [7, 2, 5]])
    for row, weights in zip(points, lagrange_weights(points), strict=True):
        assert weights.tolist() == shamir.lagrange_at_zero(row.tolist(), PRIME)


def test_invalid_inputs_refused():
    with pytest.raises(ParameterError):
        share_secrets(
            np.zeros(2, np.int64), threshold=3, xs=[1, 2], rng=DeterministicRng.from_int(0)
        )
    with pytest.raises(ParameterError):
        share_secrets(
            np.zeros(2, np.int64), threshold=1, xs=[1, 1], rng=DeterministicRng.from_int(0)
        )
    with pytest.raises(ParameterError):
        lagrange_weights(np.array([[1, 1]]))
    with pytest.raises(IntegrityError):  # threat: bad shares rebuild a non-secret
        field_to_secret(np.full(9, PRIME - 1))
