"""Parameter validation and the residue wire format."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks import SUM_N4096, SUM_N8192, TEST_INSECURE_N512, ThresholdCKKS
from secagg.ckks import residues as rns
from secagg.ckks.params import LagrangeConstants, Preset, check_preset
from secagg.errors import DecodeError, ParameterError
from secagg.rand import DeterministicRng


@pytest.mark.parametrize(
    "preset",
    [
        Preset("BIG", 4096, (60, 49, 20), 40),  # 129 bits > 109 at N=4096
        Preset("FAKE_TEST", 512, (48, 45, 16), 40, insecure=True),  # insecure but not labelled
        Preset("SMALL_RING", 2048, (48, 45, 16), 40),  # 109 bits > 54 at N=2048
        Preset("WIDE", 8192, (50, 50, 60), 40),  # data primes wider than the 6-byte format
        Preset("WEAK_SMUDGE", 4096, (48, 45, 16), 20),
    ],
)
def test_insecure_or_unsupported_presets_refused(preset):
    with pytest.raises(ParameterError):
        check_preset(preset)


def test_real_presets_pass_the_128_bit_table():
    for preset in (SUM_N4096, SUM_N8192):
        check_preset(preset)


def test_overflowing_configuration_refused():
    with pytest.raises(ParameterError, match="largest representable sum"):
        ThresholdCKKS(max_clients=1000, value_bound=1e3, preset=TEST_INSECURE_N512)


def test_precision_worse_than_requested_refused():
    with pytest.raises(ParameterError, match="noise bound"):
        ThresholdCKKS(max_clients=10, preset=TEST_INSECURE_N512, precision=1e-6, scale_bits=60)


def test_describe_reports_the_budget():
    scheme = ThresholdCKKS(max_clients=10, precision=1e-6)
    info = scheme.describe()
    assert info["preset"] == "SUM_N4096" and info["insecure"] is False
    assert info["error_bound"] <= 1e-6 and info["noise_bound"] <= 5e-7
    assert info["max_sum"] >= 10 and info["bytes_per_param"] == 24.0
    assert info["smudging_sigma_log2"] >= 40


def test_integer_lagrange_weights_interpolate():
    lag = LagrangeConstants.compute(5, 3)
    for pts in [(1, 2, 3), (3, 4, 5), (1, 3, 5)]:
        w = lag.weights(pts)
        # Σ wⱼ·f(xⱼ) = D·f(0) for every polynomial of degree < t
        for coeffs in [(7, 0, 0), (1, 2, 3), (-4, 5, 11)]:
            f = [sum(c * x**i for i, c in enumerate(coeffs)) for x in pts]
            assert sum(wj * fj for wj, fj in zip(w, f, strict=True)) == lag.denominator * coeffs[0]


@settings(max_examples=30, deadline=None)
@given(
    bits=st.lists(st.sampled_from([16, 30, 45, 48, 60]), min_size=1, max_size=3),
    count=st.integers(0, 40),
    seed=st.integers(0, 2**16),
)
def test_residue_pack_round_trip(bits, count, seed):
    primes = [(1 << b) - 1 for b in bits]  # only the widths and bounds matter here
    rng = DeterministicRng.from_int(seed)
    arr = np.stack([rng.integers_below(q, count) for q in primes])
    data = rns.pack(arr, primes)
    assert len(data) == rns.packed_size(primes, count)
    np.testing.assert_array_equal(rns.unpack_into(data, primes, count), arr)
    if count:
        with pytest.raises(DecodeError):
            rns.unpack_into(data[:-1], primes, count)


def test_residue_at_or_above_prime_refused():
    q = (1 << 45) - 55
    data = rns.pack(np.array([[q - 1, 0]], dtype=np.uint64), [q])
    rns.unpack_into(data, [q], 2)
    bad = rns.pack(np.array([[q, 0]], dtype=np.uint64), [q])
    with pytest.raises(DecodeError):
        rns.unpack_into(bad, [q], 2)


def test_shamir_fast_path_matches_reference():
    from secagg.shamir import reconstruct

    q = 281474976694273
    rng = DeterministicRng.from_int(5)
    secret = rng.integers_below(q, 64)
    shares = rns.shamir_share(secret, threshold=3, xs=[1, 2, 3, 4, 5], prime=q, rng=rng)
    for pts in [(1, 2, 3), (2, 4, 5)]:
        rows = shares[[p - 1 for p in pts]].astype(object)
        np.testing.assert_array_equal(reconstruct(rows, xs=pts, prime=q).astype(np.uint64), secret)
