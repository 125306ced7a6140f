"""End-to-end rounds through the in-process transport: masks cancel under any dropout pattern."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from masking_driver import inputs_for, make_round

from secagg.errors import InsufficientParticipantsError, ParameterError
from secagg.masking import MaskingGraph, PairwiseMasking
from secagg.masking.params import validate_threshold
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from training.transport import InProcessTransport

DIM = 5
NEVER = 5  # a drop phase ≥ 5 means the client stays to the end

drop_phase = st.one_of(st.just(NEVER), st.integers(0, 4))


def _run(rs, cohort, phases, seed):
    inputs = inputs_for(cohort, DIM, seed)
    dropouts = {p: k for p, k in zip(cohort, phases, strict=True) if k < NEVER}
    InProcessTransport().run(rs, inputs=inputs, dropouts=dropouts)
    return inputs, rs.coordinator.finalize()


def _check_sum(inputs, agg, cohort, phases):
    contributors = tuple(p for p, k in zip(cohort, phases, strict=True) if k >= 3)
    assert agg.contributors == contributors  # whoever sent a masked input is in the sum
    expected = np.sum([inputs[p] for p in contributors], axis=0)
    assert np.max(np.abs(agg.vector - expected)) <= agg.error_bound
    assert agg.error_bound < 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(1, 7), seed=st.integers(0, 1000))
def test_full_graph_masks_cancel_under_any_dropout_pattern(data, n, seed):
    phases = data.draw(st.lists(drop_phase, min_size=n, max_size=n))
    rs, cohort = make_round(n, DIM, seed)
    t = rs.coordinator.params.threshold
    finishers = sum(k == NEVER for k in phases)
    if finishers >= t:  # the full graph needs only t clients alive at the end
        inputs, agg = _run(rs, cohort, phases, seed)
        _check_sum(inputs, agg, cohort, phases)
    else:  # below the threshold at some phase: abort, nothing released
        with pytest.raises(InsufficientParticipantsError):
            _run(rs, cohort, phases, seed)
        with pytest.raises(Exception, match="has not produced"):
            rs.coordinator.finalize()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drops=st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 4)), max_size=3, unique_by=lambda d: d[0]
    ),
    seed=st.integers(0, 1000),
)
def test_sparse_graph_masks_cancel_or_round_aborts(drops, seed):
    n = 10
    phases = [NEVER] * n
    for index, phase in drops:
        phases[index] = phase
    rs, cohort = make_round(n, DIM, seed, graph="sparse", degree=4)
    assert rs.coordinator.params.graph.degree == 4
    assert rs.coordinator.params.local_threshold == 3  # of 5 holders (t = 6 of 10): two may drop
    if len(drops) <= 1:  # every neighbourhood keeps its local threshold: must succeed
        inputs, agg = _run(rs, cohort, phases, seed)
        _check_sum(inputs, agg, cohort, phases)
        return
    try:
        inputs, agg = _run(rs, cohort, phases, seed)
    except InsufficientParticipantsError:
        # SecAgg+ recovers only if every neighbourhood keeps its local threshold
        return
    _check_sum(inputs, agg, cohort, phases)


def test_sparse_round_without_dropouts_and_upload_size():
    n, dim = 12, 2000
    rs, cohort = make_round(n, dim, 4, graph="sparse")
    assert not rs.coordinator.params.graph.full
    inputs = inputs_for(cohort, dim, 4)
    report = InProcessTransport().run(rs, inputs=inputs)
    agg = rs.coordinator.finalize()
    assert np.max(np.abs(agg.vector - np.sum(list(inputs.values()), axis=0))) <= agg.error_bound
    masked_bytes = report.mean_bytes("client", sent=True)
    assert 4 * dim < masked_bytes < 4 * dim + 4000  # uint32 words plus small key traffic


def test_registry_and_describe():
    scheme = create_scheme("masking", AggregationConfig(max_clients=100, graph="sparse"))
    info = scheme.describe()
    assert info["scheme"] == "masking" and info["insecure"] is False
    assert info["bytes_per_param"] == 4 and info["ring_bits"] == 32
    assert info["error_bound_max_clients"] <= 1e-5
    assert (
        scheme.open_round(
            0, [client_id(i) for i in range(100)], 3, rng=DeterministicRng.from_int(0)
        ).phases
        == 5
    )


def test_graph_is_k_regular_symmetric_and_public():
    g = MaskingGraph.harary(50, 8, seed=b"s" * 16)
    assert all(len(nb) == 8 for nb in g.neighbours)
    assert all(i in g.neighbours[j] for i, nb in enumerate(g.neighbours) for j in nb)
    assert g == MaskingGraph.harary(50, 8, seed=b"s" * 16)  # same seed, same graph
    assert g != MaskingGraph.harary(50, 8, seed=b"t" * 16)
    assert MaskingGraph.harary(9, 8, seed=b"s" * 16).full


def test_threshold_validated_with_degree():
    with pytest.raises(ParameterError, match="threshold"):
        validate_threshold(10, 5, MaskingGraph.complete(10))  # t must exceed n/2
    with pytest.raises(ParameterError, match="degree"):
        validate_threshold(100, 95, MaskingGraph.harary(100, 4, seed=b"x" * 16))
    with pytest.raises(ParameterError):
        PairwiseMasking(max_clients=10, threshold=3)
    with pytest.raises(ParameterError):
        PairwiseMasking(max_clients=10, graph="sparse", degree=3)
    with pytest.raises(InsufficientParticipantsError):
        PairwiseMasking(max_clients=10, threshold=8).open_round(
            0, [client_id(i) for i in range(5)], 3, rng=DeterministicRng.from_int(0)
        )
