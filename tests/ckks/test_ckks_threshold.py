"""Correctness of the one-shot key-additive scheme: oracle, subsets, dropouts, cost shape."""

import itertools

import numpy as np
import pytest
from ckks_support import drive, exact_sum, inputs_for, make_federation, open_round

from secagg.ckks import SUM_N4096, ThresholdCKKS
from secagg.ckks import residues as rns
from secagg.ckks.messages import CkksSubmission, ShareRequest, ShareSum
from secagg.errors import InsufficientParticipantsError, UnexpectedPhaseError
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg.wire import decode
from secagg_training.transport import InProcessTransport

DIM = 700  # two ciphertexts at N = 512, the second partly padded


def _opened_keys(federation, server):
    committee = federation.roster.of_kind("holder")
    answers = {committee.index(h) + 1: a for h, a in server._answers.items()}
    keys = []
    for subset in itertools.combinations(sorted(answers), federation.params.threshold):
        rows = np.stack([answers[x] for x in subset])
        keys.append(rns.interpolate(rows, list(subset), federation.engine.data_primes))
    return keys


def test_oracle_seal_decrypts_the_sum_under_the_interpolated_key(federation):
    session = open_round(federation, 10, DIM, 1)
    inputs = inputs_for(session.clients, DIM, 1)
    record = []
    drive(session, inputs=inputs, record=record)
    uploads = [f for r, f in record if isinstance(decode(f), CkksSubmission)]
    server = session.coordinator
    agg = server.finalize()
    expected = exact_sum(inputs, agg.contributors)
    assert len(agg.contributors) == 10
    assert np.abs(agg.vector - expected).max() <= agg.error_bound
    # every t-subset of the five answers opens the same K_S
    keys = _opened_keys(federation, server)
    assert len(keys) == 10 and all(np.array_equal(keys[0], k) for k in keys)
    # independent oracle: sum the recorded uploads here and have SEAL decrypt under K_S
    eng = federation.engine
    count = eng.ciphertext_count(DIM)
    total = np.zeros((eng.k, count * eng.degree), dtype=np.uint64)
    for frame in uploads:
        msg = decode(frame)
        total = (total + rns.unpack_into(msg.residues, eng.data_primes, count * eng.degree)) % (
            np.uint64(eng.data_primes[0])
        )
    crs = eng.crs(server.round_params.crs_seed, count)
    values = eng.seal.decrypt_with(
        keys[0], total.reshape(eng.k, count, eng.degree), crs, eng.params.scale
    )[:DIM]
    assert np.abs(values - expected).max() <= agg.error_bound


def test_oracle_against_the_clients_own_keys(federation):
    """K_S interpolated from the holders equals Σ kᵢ of the contributors (captured keys)."""
    session = open_round(federation, 6, DIM, 2)
    captured = {}
    seal = federation.engine.seal
    original = seal.fresh_secret

    def spy(*, rng):
        sk, rows = original(rng=rng)
        captured[len(captured)] = rows.copy()
        return sk, rows

    seal.fresh_secret = spy
    try:
        inputs = inputs_for(session.clients, DIM, 2)
        drive(session, inputs=inputs)
    finally:
        del seal.fresh_secret
    q = federation.engine.data_primes[0]
    ideal = np.zeros_like(captured[0])
    for rows in captured.values():
        ideal = (ideal + rows) % np.uint64(q)
    keys = _opened_keys(federation, session.coordinator)
    assert np.array_equal(keys[0], ideal)


def test_holder_dropouts_up_to_n_minus_t_complete(federation):
    session = open_round(federation, 8, DIM, 3)
    inputs = inputs_for(session.clients, DIM, 3)
    drive(session, inputs=inputs, silent=("holder/0", "holder/3"))
    agg = session.coordinator.finalize()
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_fewer_than_t_holders_release_nothing(federation):
    session = open_round(federation, 8, DIM, 4)
    with pytest.raises(InsufficientParticipantsError, match="at least t = 3"):
        drive(
            session,
            inputs=inputs_for(session.clients, DIM, 4),
            silent=("holder/0", "holder/1", "holder/2"),
        )
    with pytest.raises(UnexpectedPhaseError):
        session.coordinator.finalize()


def test_client_dropouts_at_any_point_complete_the_round(federation):
    session = open_round(federation, 10, DIM, 5)
    inputs = inputs_for(session.clients, DIM, 5)
    # two never start; two leave right after their one message (they are not needed again)
    report = InProcessTransport().run(
        session,
        inputs=inputs,
        dropouts={"client/0": 0, "client/1": 0, "client/2": 1, "client/3": 1},
    )
    agg = session.coordinator.finalize()
    assert set(agg.dropped) == {"client/0", "client/1"}
    assert {"client/2", "client/3"} <= set(agg.contributors)
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound
    assert report.phases == 2


def test_clients_below_the_floor_abort_before_any_request(federation):
    session = open_round(federation, 8, DIM, 6)
    record = []
    with pytest.raises(InsufficientParticipantsError, match="floor 4"):
        drive(
            session,
            inputs=inputs_for(session.clients, DIM, 6),
            silent=tuple(f"client/{i}" for i in range(5)),
            silent_from=0,
            record=record,
        )
    assert not any(isinstance(decode(f), ShareRequest) for _, f in record)


def test_holder_work_is_independent_of_model_size():
    scheme = make_federation(max_clients=6, seed=11)
    sizes = {}
    for dim in (50, 20_000):
        session = open_round(scheme, 6, dim, 7)
        record = []
        drive(session, inputs=inputs_for(session.clients, dim, 7), record=record)
        sizes[dim] = sorted(
            (type(decode(f)).__name__, len(f))
            for r, f in record
            if r.startswith("holder/") or isinstance(decode(f), ShareSum)
        )
    assert sizes[50] == sizes[20_000]  # what a holder receives and sends does not grow


def test_real_preset_error_within_bound_at_max_clients():
    """SUM_N4096 (128-bit) at its max_clients: the measured error is within the reported bound."""
    scheme = ThresholdCKKS(max_clients=60, precision=1e-6, preset=SUM_N4096)
    InProcessTransport().run(scheme.setup(rng=DeterministicRng.from_int(5)))
    assert scheme.params.error_bound <= 1e-6
    session = open_round(scheme, 60, 4096, 8)
    inputs = inputs_for(session.clients, 4096, 8)
    InProcessTransport().run(session, inputs=inputs)
    agg = session.coordinator.finalize()
    err = np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max()
    assert err <= agg.error_bound <= 1e-6


def test_registry_builds_the_scheme_with_the_dp_floor():
    scheme = create_scheme("ckks", AggregationConfig(max_clients=10, min_honest=7))
    assert scheme.params.floor(10) == 7 and scheme.params.floor(4) == 7
    assert scheme.describe()["design"].startswith("one-shot key-additive")
