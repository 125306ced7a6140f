"""Threshold decryption: oracle, every t-subset, t−1 shares, dropouts, precision."""

import numpy as np
import pytest
from ckks_support import drive, ideal_secret, inputs_for, subsets

from secagg.ckks import SUM_N4096, ThresholdCKKS
from secagg.ckks import residues as rns
from secagg.ckks.aggregation import fuse_shares
from secagg.ckks.messages import DecryptRequest, PartialDecryption
from secagg.ckks.params import LagrangeConstants
from secagg.errors import InsufficientParticipantsError, UnexpectedPhaseError
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg.wire import decode
from training.transport import InProcessTransport


def _encrypt(scheme, x):
    eng = scheme.engine
    key = scheme.joint_key
    padded = np.zeros(eng.ciphertext_count(x.size) * eng.degree)
    padded[: x.size] = x
    return eng.seal.encrypt(eng.seal.encryptor(key.b, key.a), padded, eng.params.scale)


def _shares(scheme, ct, seed):
    c1 = np.ascontiguousarray(ct[:, :, 1])
    out = {}
    for h in scheme.holders.values():
        rng = DeterministicRng.from_int(seed, h.party)
        out[h.point] = h._decryptor.partial(c1, scheme.engine.sigma, rng=rng)
    return out


def test_threshold_matches_ideal_key_oracle(federation):
    """Oracle: fusing t smudged shares equals decrypting with Σsᵢ, within the bound."""
    x = inputs_for(1, 1000, 1)[client_id(0)]
    ct = _encrypt(federation, x)
    ideal = federation.engine.seal.decrypt_with(
        ideal_secret(federation), ct, federation.params.scale
    )[:1000]
    shares = _shares(federation, ct, 1)
    c0 = np.ascontiguousarray(ct[:, :, 0])
    fused = fuse_shares(federation.engine, c0, {p: shares[p] for p in (1, 2, 3)})[:1000]
    assert np.max(np.abs(ideal - x)) < 1e-9  # no smudging on the oracle path
    assert np.max(np.abs(fused - ideal)) <= federation.params.noise_bound


def test_every_t_subset_of_3_of_5_decrypts(federation):
    x = inputs_for(1, 700, 2)[client_id(0)]
    ct = _encrypt(federation, x)
    shares = _shares(federation, ct, 2)
    c0 = np.ascontiguousarray(ct[:, :, 0])
    for subset in subsets(5, 3):
        fused = fuse_shares(federation.engine, c0, {p: shares[p] for p in subset})[:700]
        assert np.max(np.abs(fused - x)) <= federation.params.noise_bound, subset


def test_t_minus_one_shares_reveal_nothing_near_the_sum(federation):
    """Threat: a coalition of t−1 holders (or a combiner with t−1 shares) decrypting alone."""
    x = inputs_for(1, 512, 3)[client_id(0)]
    ct = _encrypt(federation, x)
    shares = _shares(federation, ct, 3)
    c0 = np.ascontiguousarray(ct[:, :, 0])
    eng = federation.engine
    for subset in subsets(5, 2):
        lag = LagrangeConstants.compute(5, 2)  # the best interpolation two shares allow
        terms = [(lag.denominator, c0.reshape(eng.k, -1))]
        terms += [
            (w, shares[p].reshape(eng.k, -1))
            for p, w in zip(subset, lag.weights(subset), strict=True)
        ]
        fused = rns.weighted_sum(terms, eng.data_primes).reshape(c0.shape)
        guess = eng.seal.decode(fused, federation.params.scale * lag.denominator)[:512]
        assert np.median(np.abs(guess - x)) > 1e3, subset


def test_round_with_two_holders_dropped_at_decryption(federation):
    cohort = [client_id(i) for i in range(6)]
    rs = federation.open_round(1, cohort, 1500, rng=DeterministicRng.from_int(4))
    inputs = inputs_for(6, 1500, 4)
    report = InProcessTransport().run(
        rs, inputs=inputs, dropouts={"holder/1": 1, "holder/4": 1, cohort[5]: 0}
    )
    agg = rs.coordinator.finalize()
    expected = sum(inputs[p] for p in cohort[:5])
    assert agg.dropped == (cohort[5],)
    assert agg.contributors == tuple(cohort[:5])
    assert np.max(np.abs(agg.vector - expected)) <= agg.error_bound
    assert report.bytes_sent["holder/1"] == 0 or "holder/1" in report.silenced


def test_fewer_than_t_holders_release_nothing(federation):
    cohort = [client_id(i) for i in range(3)]
    rs = federation.open_round(2, cohort, 300, rng=DeterministicRng.from_int(5))
    with pytest.raises(InsufficientParticipantsError):
        InProcessTransport().run(
            rs,
            inputs=inputs_for(3, 300, 5),
            dropouts={"holder/0": 1, "holder/2": 1, "holder/3": 1},
        )
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.finalize()


def test_clients_below_minimum_abort_before_any_decryption(federation):
    cohort = [client_id(i) for i in range(3)]
    rs = federation.open_round(3, cohort, 64, rng=DeterministicRng.from_int(6))
    record = []
    with pytest.raises(InsufficientParticipantsError):
        drive(rs, inputs={cohort[0]: np.zeros(64)}, record=record)
    sent = [type(decode(frame)) for _, frame in record]
    assert DecryptRequest not in sent and PartialDecryption not in sent


@pytest.mark.slow
def test_precision_bound_holds_for_100_clients(federation):
    cohort = [client_id(i) for i in range(100)]
    rs = federation.open_round(4, cohort, 1024, rng=DeterministicRng.from_int(8))
    inputs = inputs_for(100, 1024, 8)
    InProcessTransport().run(rs, inputs=inputs, dropouts={"holder/0": 1})
    agg = rs.coordinator.finalize()
    exact = np.sum(np.stack([inputs[p] for p in cohort]), axis=0)
    assert np.max(np.abs(agg.vector - exact)) <= agg.error_bound
    assert agg.error_bound <= federation.params.precision


@pytest.mark.slow
def test_real_preset_end_to_end_registry_and_dropouts():
    """128-bit preset (N=4096), built through the registry, two holders dropped."""
    scheme = create_scheme("ckks", AggregationConfig(max_clients=10, committee=5))
    assert isinstance(scheme, ThresholdCKKS)
    assert scheme.params.preset == SUM_N4096 and scheme.params.threshold == 3
    InProcessTransport().run(scheme.setup(rng=DeterministicRng.from_int(11)))
    cohort = [client_id(i) for i in range(3)]
    rs = scheme.open_round(0, cohort, 5000, rng=DeterministicRng.from_int(12))
    inputs = inputs_for(3, 5000, 12)
    report = InProcessTransport().run(rs, inputs=inputs, dropouts={"holder/0": 1, "holder/2": 1})
    agg = rs.coordinator.finalize()
    expected = sum(inputs.values())
    assert np.max(np.abs(agg.vector - expected)) <= agg.error_bound <= 1e-5
    upload = report.bytes_sent[cohort[0]] - 5 * 150  # minus the small receipts
    assert upload / 5000 < 2 * 24.1  # padding to one N=4096 ciphertext pair dominates here
