"""Datasets and partitions: every training sample held by exactly one non-empty client."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ParameterError
from secagg_training.data import (
    from_arrays,
    from_torch_dataset,
    load_digits_data,
    partition,
    partition_dirichlet,
    partition_iid,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(seed=0)


def _assert_exact_cover(parts, n):
    assert all(p.size > 0 for p in parts), "no client may be empty"
    joined = np.concatenate(parts)
    assert joined.size == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def test_digits_split_and_standardization(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert abs(digits.x_test.shape[0] - 0.2 * 1797) <= 1
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    # the public pixel range 0..16 scaled by 1/16: no statistic of the records is used
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    assert np.all(digits.x_train * 16 == np.round(digits.x_train * 16))
    assert "x_train" not in repr(digits) and "0." not in repr(digits)


def test_digits_split_is_seeded(digits):
    again = load_digits_data(seed=0)
    other = load_digits_data(seed=1)
    np.testing.assert_array_equal(digits.y_test, again.y_test)
    assert not np.array_equal(digits.y_test, other.y_test)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(60, 300), st.integers(0, 2**32 - 1))
def test_iid_partition_covers_exactly_once_with_balanced_sizes(k, n, seed):
    parts = partition_iid(n, k, seed=seed)
    _assert_exact_cover(parts, n)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.floats(0.01, 100.0),
    st.integers(0, 2**32 - 1),
    st.integers(2, 10),
    st.integers(40, 400),
)
def test_dirichlet_partition_covers_exactly_once(k, alpha, seed, classes, n):
    labels = np.arange(n) % classes
    parts = partition_dirichlet(labels, k, alpha, seed=seed)
    assert len(parts) == k
    _assert_exact_cover(parts, n)


def test_dirichlet_is_seeded_and_skews_labels(digits):
    y = digits.y_train
    a = partition(y, 10, "dirichlet", alpha=0.1, seed=3)
    b = partition(y, 10, "dirichlet", alpha=0.1, seed=3)
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)

    def mean_classes(parts):
        return np.mean([np.unique(y[p]).size for p in parts])

    iid = partition(y, 10, "iid", seed=3)
    assert mean_classes(a) < mean_classes(iid) - 3  # α=0.1: most clients see few classes


def test_extreme_dirichlet_still_leaves_no_client_empty():
    labels = np.zeros(12, dtype=np.int64)  # one class, tiny α: the draw puts it all on one client
    parts = partition_dirichlet(labels, 12, 0.001, seed=0)
    _assert_exact_cover(parts, 12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: partition_iid(5, 6, seed=0), "at most the number of training samples"),
        (lambda: partition_iid(5, 0, seed=0), "clients must be a positive integer"),
        (lambda: partition_dirichlet(np.zeros(5, int), 6, 0.5, seed=0), "at most"),
        (lambda: partition_dirichlet(np.zeros(5, int), 2, 0.0, seed=0), "alpha must be"),
        (lambda: partition(np.zeros(5, int), 2, "shards", seed=0), "partition must be one of"),
        (lambda: partition_iid(5, 2, seed=-1), "seed must be"),
    ],
)
def test_impossible_partitions_fail_clearly(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_bring_your_own_arrays():
    x = np.arange(200, dtype=np.float64).reshape(100, 2)
    y = np.arange(100) % 3
    data = from_arrays(x, y, test_fraction=0.25, seed=1)
    assert data.x_train.shape == (75, 2) and data.x_test.shape == (25, 2)
    assert data.num_classes == 3
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    given_split = from_arrays(x, y, x_test=x[:5], y_test=y[:5], standardize=False)
    assert given_split.x_train.shape == (100, 2)
    np.testing.assert_array_equal(given_split.x_test, x[:5].astype(np.float32))


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros(10), np.zeros(10, int), "x must be"),
        (np.zeros((10, 2)), np.zeros(9, int), "y must be"),
        (np.zeros((10, 2)), np.zeros(10), "y must be"),
        (np.full((10, 2), np.nan), np.zeros(10, int), "finite"),
        (np.zeros((10, 2)), -np.ones(10, int), "labels must be in"),
    ],
)
def test_bad_arrays_are_refused(x, y, match):
    with pytest.raises(ParameterError, match=match):
        from_arrays(x, y)


def test_bring_your_own_torch_dataset():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=gen)
    y = torch.arange(50) % 2
    data = from_torch_dataset(torch.utils.data.TensorDataset(x, y), test_fraction=0.2, seed=0)
    assert data.x_train.shape == (40, 3) and data.num_classes == 2
    rows = {tuple(np.round(r, 5)) for r in x.numpy()}
    assert all(tuple(np.round(r, 5)) in rows for r in data.x_train)
    with pytest.raises(ParameterError, match="pairs"):
        from_torch_dataset([(1.0, 2, 3)])
