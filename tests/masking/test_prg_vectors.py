"""Known-answer vectors (tests/vectors/masking_vectors.json) and PRG equivalences."""

import json
import pathlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.errors import ParameterError
from secagg.masking import prg
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.prg import apply_masks, expand
from secagg.masking.sharing import reconstruct_many, secrets_to_field, share_secrets
from secagg.rand import DeterministicRng

VECTORS = json.loads(
    (pathlib.Path(__file__).parents[1] / "vectors" / "masking_vectors.json").read_text()
)


def test_prg_known_answers():
    v = VECTORS["prg"]
    key_a, key_b = bytes.fromhex(v["key_a"]), bytes.fromhex(v["key_b"])
    rng = DeterministicRng.from_int(2026, label="masking/prg")
    assert (rng.random_bytes(32), rng.random_bytes(32)) == (key_a, key_b)
    assert expand(key_a, 16, np.uint32).tolist() == v["expand_a_uint32_16"]
    assert expand(key_a, 8, np.uint16).tolist() == v["expand_a_uint16_8"]
    assert [str(x) for x in expand(key_a, 4, np.uint64).tolist()] == v["expand_a_uint64_4"]
    target = np.array(v["target_uint32"], dtype=np.uint32)
    apply_masks(target, add=[key_a], subtract=[key_b])
    assert target.tolist() == v["target_plus_a_minus_b"]


def test_prg_is_aes256_ctr_from_counter_zero():
    # independent oracle: CTR block 0 is AES-256-ECB of the all-zero block
    key = bytes.fromhex(VECTORS["prg"]["key_a"])
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(bytes(16))
    assert expand(key, 4, np.uint32).tolist() == np.frombuffer(block, "<u4").tolist()


def test_shamir_known_answers():
    v = VECTORS["shamir"]
    secrets = secrets_to_field(bytes.fromhex(v["seed"]), bytes.fromhex(v["key"]))
    assert secrets.tolist() == v["secrets_field"]
    shares = share_secrets(
        secrets,
        threshold=v["threshold"],
        xs=v["xs"],
        rng=DeterministicRng.from_int(2026, label="masking/coeffs"),
    )
    assert shares.tolist() == v["shares"]
    got = reconstruct_many(np.array(v["shares"])[[0, 2, 4]], xs=[1, 3, 5])
    assert got.tolist() == v["secrets_field"]


def test_encoding_known_answers():
    v = VECTORS["encoding"]
    enc = FixedPointEncoding.largest(v["width"], value_bound=1.0, max_clients=100)
    assert enc.max_units == v["max_units"]
    got = enc.encode(
        np.array(v["values"]), rng=DeterministicRng.from_int(2026, label="masking/enc")
    )
    assert got.tolist() == v["encoded"]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("length", [0, 1, 7, 1000, 4099])
def test_blocked_masks_equal_reference_expansion(monkeypatch, dtype, length):
    monkeypatch.setattr(prg, "CHUNK_BYTES", 1024)  # force many chunk boundaries
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    target = np.arange(length, dtype=dtype)
    expected = target.copy()
    expected += expand(keys[0], length, dtype) + expand(keys[1], length, dtype)
    expected -= expand(keys[2], length, dtype) + expand(keys[3], length, dtype)
    apply_masks(target, add=keys[:2], subtract=keys[2:])
    np.testing.assert_array_equal(target, expected)


def test_masks_cancel_and_keys_are_full_width():
    key = bytes(range(32))
    target = np.arange(50, dtype=np.uint32)
    apply_masks(target, add=[key], subtract=[key])
    np.testing.assert_array_equal(target, np.arange(50, dtype=np.uint32))
    with pytest.raises(ParameterError):  # a 128-bit key is refused: masks use the full 256 bits
        expand(bytes(16), 4)
    with pytest.raises(ParameterError):
        apply_masks(np.zeros(4, np.float32), add=[key], subtract=[])
