"""Parameter validation and the residue wire format."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks import SUM_N4096, SUM_N8192, TEST_INSECURE_N512, ThresholdCKKS
from secagg.ckks import residues as rns
from secagg.ckks.params import SEAL_128_BIT_LIMITS, Preset, check_preset
from secagg.errors import DecodeError, ParameterError
from secagg.rand import DeterministicRng


@pytest.mark.parametrize(
    "preset",
    [
        Preset("BIG", 4096, (60, 49, 20)),  # 129 bits > 109 at N=4096
        Preset("FAKE_TEST", 512, (48,), insecure=True),  # insecure but not labelled
        Preset("SMALL_RING", 2048, (48, 45, 16)),  # 109 bits > 54 at N=2048
        Preset("WIDE", 8192, (50, 50, 60)),  # data primes wider than the 6-byte format
    ],
)
def test_insecure_or_unsupported_presets_refused(preset):
    with pytest.raises(ParameterError):
        check_preset(preset)


def test_real_presets_pass_the_128_bit_table_with_margin():
    for preset in (SUM_N4096, SUM_N8192):
        check_preset(preset)
        assert preset.total_bits <= 0.7 * SEAL_128_BIT_LIMITS[preset.poly_degree]


def test_overflowing_configuration_refused():
    with pytest.raises(ParameterError, match="largest representable sum"):
        ThresholdCKKS(max_clients=1000, value_bound=1e3, preset=TEST_INSECURE_N512)


def test_precision_worse_than_requested_refused():
    with pytest.raises(ParameterError, match="noise bound"):
        ThresholdCKKS(max_clients=10, preset=TEST_INSECURE_N512, precision=1e-6, scale_bits=20)


@pytest.mark.parametrize("t", [1, 2])
def test_threshold_must_be_a_strict_majority(t):
    with pytest.raises(ParameterError, match="n/2 < t"):
        ThresholdCKKS(max_clients=10, committee=4, threshold=t, preset=TEST_INSECURE_N512)


def test_describe_reports_the_budget_and_the_upload_size():
    scheme = ThresholdCKKS(max_clients=1000, precision=1e-6)
    info = scheme.describe()
    assert info["preset"] == "SUM_N4096" and info["insecure"] is False
    assert info["error_bound"] <= 1e-6
    assert info["max_sum"] >= 1000 and info["bytes_per_param"] == 6.0
    assert "smudging_sigma_log2" not in info


def test_floor_is_a_fraction_of_the_cohort_never_two():
    scheme = ThresholdCKKS(max_clients=100, preset=TEST_INSECURE_N512)
    assert scheme.params.floor(100) == 50 and scheme.params.floor(10) == 5
    assert scheme.params.floor(2) == 3  # an absolute minimum above 2


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


def test_crs_expansion_is_deterministic_in_range_and_prefix_stable():
    from secagg.ckks import transcript

    q = 281474976694273
    a = transcript.crs_polynomials(b"s" * 32, [q], 512, 0, 3)
    b = transcript.crs_polynomials(b"s" * 32, [q], 512, 1, 2)
    assert int(a.max()) < q and np.array_equal(a[:, 1:], b)
    assert not np.array_equal(a, transcript.crs_polynomials(b"t" * 32, [q], 512, 0, 3))


def test_interpolation_any_t_subset_and_off_point():
    q = 281474976694273
    rng = DeterministicRng.from_int(9)
    secret = rng.integers_below(q, 32)
    shares = rns.shamir_share(secret, threshold=3, xs=[1, 2, 3, 4, 5], prime=q, rng=rng)
    rows = shares[:, None, :]
    for pts in [(1, 2, 3), (2, 4, 5), (1, 3, 5)]:
        idx = [p - 1 for p in pts]
        np.testing.assert_array_equal(rns.interpolate(rows[idx], list(pts), [q])[0], secret)
        other = next(x for x in (1, 2, 3, 4, 5) if x not in pts)
        np.testing.assert_array_equal(
            rns.interpolate(rows[idx], list(pts), [q], at=other)[0], shares[other - 1]
        )


def _reference_unpack(data, primes, count):
    """Byte-by-byte decoding of the wire format: the oracle for the strided fast path."""
    out, pos = np.empty((len(primes), count), dtype=np.uint64), 0
    for j, q in enumerate(primes):
        width = rns.residue_width(q)
        for i in range(count):
            out[j, i] = int.from_bytes(data[pos : pos + width], "little")
            pos += width
    return out


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    bits=st.lists(st.sampled_from([16, 30, 45, 48]), min_size=1, max_size=3),
    count=st.integers(1, 40),
    block=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_add_packed_equals_reference_unpack_and_sum(bits, count, block, seed):
    """Strided 8-byte reads across block, row and buffer ends (the tail) decode exactly."""
    primes = [(1 << b) - 1 for b in bits]
    rng = DeterministicRng.from_int(seed)
    arr = np.stack([rng.integers_below(q, count) for q in primes])
    arr[:, -1] = [q - 1 for q in primes]  # the tail holds the largest valid residue
    start = np.stack([rng.integers_below(1 << 62, count) for _ in primes])
    data = rns.pack(arr, primes)
    np.testing.assert_array_equal(_reference_unpack(data, primes, count), arr)
    acc = start.copy()
    saved, rns._BLOCK = rns._BLOCK, block
    try:
        rns.add_packed(acc, memoryview(data), primes)  # the receiver's frame slice
    finally:
        rns._BLOCK = saved
    np.testing.assert_array_equal(acc, start + arr)


@pytest.mark.parametrize("where", [(0, 0), (0, 9), (1, 0), (1, 9)])
def test_add_packed_refuses_a_residue_at_its_prime_and_leaves_the_sum(where):
    primes = [(1 << 48) - 59, (1 << 45) - 55]
    rng = DeterministicRng.from_int(9)
    arr = np.stack([rng.integers_below(q, 10) for q in primes])
    arr[where] = primes[where[0]]  # exactly q_j: one past the largest residue
    start = np.stack([rng.integers_below(1 << 62, 10) for _ in primes])
    acc = start.copy()
    saved, rns._BLOCK = rns._BLOCK, 3  # earlier blocks were added before the bad one
    try:
        with pytest.raises(DecodeError, match=f"below their prime q_{where[0]}"):
            rns.add_packed(acc, rns.pack(arr, primes), primes)
    finally:
        rns._BLOCK = saved
    np.testing.assert_array_equal(acc, start)  # the refused upload never counts


def test_add_packed_refuses_a_wrong_length():
    q = (1 << 48) - 59
    acc = np.zeros((1, 4), dtype=np.uint64)
    data = rns.pack(np.ones((1, 4), dtype=np.uint64), [q])
    for bad in (data[:-1], data + b"\x00"):
        with pytest.raises(DecodeError, match="residue block must be 24 bytes"):
            rns.add_packed(acc, bad, [q])
    assert not acc.any()


def test_ciphertext_digest_is_domain_separated_blake3_of_exact_bytes():
    import blake3

    from secagg.ckks import transcript

    data = bytes(range(256)) * 3
    framed = len(data).to_bytes(8, "little") + data
    expected = blake3.blake3(framed, derive_key_context=transcript.CIPHERTEXT_CONTEXT).digest()
    assert transcript.ciphertext_digest(data) == expected
    assert transcript.ciphertext_digest(memoryview(data)) == expected
    assert expected != blake3.blake3(data).digest()  # not a bare hash another protocol may use
    assert expected != transcript.blob_digest("ciphertext", data)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert transcript.ciphertext_digest(bytes(flipped)) != expected
    assert transcript.ciphertext_digest(data + b"\x00") != expected


def test_submission_frames_signed_over_the_sha256_digest_are_refused():
    """v2 uploads signed a SHA-256 ciphertext digest: a v2 frame must not decode as v3."""
    import struct

    from secagg.ckks.messages import CkksSubmission, ShareRequest
    from secagg.wire import decode, encode

    msg = CkksSubmission(
        session=b"s",
        round=0,
        sender="client/0",
        recipient="server",
        count=1,
        residues=b"",
        ephemeral=bytes(32),
        envelopes=(),
        signature=b"",
    )
    frame = encode(msg)
    assert CkksSubmission.VERSION == ShareRequest.VERSION == 3
    assert decode(frame) == msg
    old = frame[:6] + struct.pack("<H", 2) + frame[8:]
    with pytest.raises(DecodeError, match="version 2"):
        decode(old)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), bits=st.sampled_from([17, 30, 47, 48]))
def test_mul_mod_matches_python_integers(seed, bits):
    rng = DeterministicRng.from_int(seed)
    q = (1 << bits) - 1
    values = np.concatenate([rng.integers_below(q, 30), np.array([0, q - 1], dtype=np.uint64)])
    for factor in (0, 1, q - 1, int(rng.integers_below(q, 1)[0])):
        expected = [int(v) * factor % q for v in values]
        assert rns.mul_mod(values, factor, q).tolist() == expected
