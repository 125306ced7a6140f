"""Flat parameter vectors: exact round trips, strict shape/length/dtype checks, FedAvg weighting."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secagg.errors import ParameterError
from secagg_training.updates import (
    check_flat,
    clip_l2,
    fedavg_from_sum,
    flatten,
    layout_of,
    load_flat,
    model_delta,
    sample_weights,
    unflatten,
    weighted_submission,
)

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def tensor_dicts(draw):
    count = draw(st.integers(1, 4))
    out = {}
    for i in range(count):
        shape = draw(shapes)
        dtype = draw(st.sampled_from(DTYPES))
        seed = draw(st.integers(0, 2**31 - 1))
        gen = torch.Generator().manual_seed(seed)
        out[f"p{i}"] = (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
    return out


@settings(max_examples=60, deadline=None)
@given(tensor_dicts())
def test_flatten_unflatten_round_trip_is_exact(tensors):
    layout = layout_of(tensors)
    vector = flatten(tensors)
    assert vector.dtype == np.float64 and vector.shape == (layout.size,)
    back = unflatten(vector, layout)
    assert list(back) == list(tensors)
    for name, original in tensors.items():
        assert back[name].dtype == original.dtype
        assert back[name].shape == original.shape
        assert torch.equal(back[name], original)


@settings(max_examples=40, deadline=None)
@given(tensor_dicts(), st.integers(-3, 3).filter(lambda d: d != 0))
def test_wrong_length_is_refused(tensors, change):
    layout = layout_of(tensors)
    if layout.size + change < 0:
        return
    with pytest.raises(ParameterError, match="length must be"):
        unflatten(np.zeros(layout.size + change), layout)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3)),
        np.array([1.0, np.nan]),
        np.array([np.inf, 0.0]),
        np.array(["a", "b"]),
        [1.0, 2.0],
    ],
    ids=["2d", "nan", "inf", "strings", "list"],
)
def test_malformed_vectors_are_refused(bad):
    with pytest.raises(ParameterError):
        check_flat(bad, 2 if not isinstance(bad, np.ndarray) or bad.ndim == 1 else 6)


def _mlp(seed, hidden=8):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def test_load_flat_and_delta():
    a, b = _mlp(1), _mlp(2)
    delta = model_delta(a, b)
    np.testing.assert_array_equal(delta, flatten(a) - flatten(b))
    load_flat(b, flatten(b) + delta)
    np.testing.assert_allclose(flatten(b), flatten(a), atol=1e-6)  # float32 storage


def test_layout_mismatch_is_refused():
    with pytest.raises(ParameterError, match="same parameter layout"):
        model_delta(_mlp(1, hidden=8), _mlp(1, hidden=9))
    with pytest.raises(ParameterError, match="length must be"):
        load_flat(_mlp(1), np.zeros(3))


def test_integer_parameters_are_refused():
    with pytest.raises(ParameterError, match="floating"):
        layout_of({"counts": torch.zeros(3, dtype=torch.int64)})


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20),
    st.floats(0.01, 100.0),
)
def test_clip_never_exceeds_the_bound_and_keeps_direction(values, bound):
    vector = np.asarray(values)
    clipped = clip_l2(vector, bound)
    norm = np.linalg.norm(vector)
    assert np.linalg.norm(clipped) <= bound * (1 + 1e-12)
    if norm <= bound:
        np.testing.assert_array_equal(clipped, vector)
    else:
        np.testing.assert_allclose(clipped * norm / bound, vector, rtol=1e-9, atol=1e-9)


def test_clip_rejects_bad_bounds():
    for bound in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ParameterError):
            clip_l2(np.ones(3), bound)


def test_sample_weights_have_mean_one_and_ratio_of_counts():
    w = sample_weights([10, 30, 20])
    np.testing.assert_allclose(w, [0.5, 1.5, 1.0])
    with pytest.raises(ParameterError):
        sample_weights([3, 0])
    with pytest.raises(ParameterError):
        sample_weights([])
    with pytest.raises(ParameterError):
        sample_weights([1.5, 2.0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_weighted_submissions_sum_to_the_fedavg_mean(counts, seed):
    """Oracle: sum of concat(w·Δ, [w]) divided by its last coordinate = Σ nᵢΔᵢ / Σ nᵢ."""
    gen = np.random.Generator(np.random.PCG64(seed))
    deltas = gen.normal(size=(len(counts), 5))
    weights = sample_weights(counts)
    total = sum(weighted_submission(d, w) for d, w in zip(deltas, weights, strict=True))
    expected = (np.asarray(counts)[:, None] * deltas).sum(0) / sum(counts)
    np.testing.assert_allclose(fedavg_from_sum(total, 5), expected, rtol=1e-10, atol=1e-12)


def test_fedavg_from_sum_refuses_zero_weight_and_wrong_length():
    with pytest.raises(ParameterError, match="weight must be > 0"):
        fedavg_from_sum(np.zeros(4), 3)
    with pytest.raises(ParameterError, match="length must be 4"):
        fedavg_from_sum(np.ones(3), 3)
    with pytest.raises(ParameterError):
        weighted_submission(np.ones(3), 0.0)
