"""Domain-separated hashes that bind ceremony and round messages together."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import numpy as np

from secagg.rand import CommonRandomness


def _h(label: str, parts: Iterable[bytes]) -> bytes:
    h = hashlib.sha256(f"secagg/ckks/{label}\x00".encode())
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def params_digest(description: dict[str, object], primes: Sequence[int]) -> bytes:
    text = json.dumps({"params": description, "primes": list(primes)}, sort_keys=True, default=str)
    return _h("params", [text.encode()])


def seed_commitment(session: bytes, sender: str, contribution: bytes) -> bytes:
    return _h("seed-commit", [session, sender.encode(), contribution])


def crs_seed(session: bytes, contributions: Sequence[bytes]) -> bytes:
    """The CRS seed: a hash of every holder's revealed contribution, in roster order."""
    return _h("crs-seed", [session, *contributions])


def crs_polynomial(seed: bytes, primes: Sequence[int], degree: int) -> np.ndarray:
    """The common polynomial a (NTT form, key level), uniform below each prime."""
    crs = CommonRandomness(seed, "ckks/a")
    return np.stack([crs.integers_below(f"a/{j}", q, degree) for j, q in enumerate(primes)])


def key_commitment(session: bytes, sender: str, residues: bytes) -> bytes:
    return _h("pk-commit", [session, sender.encode(), residues])


def key_digest(params: bytes, seed: bytes, joint_b: bytes) -> bytes:
    return _h("joint-key", [params, seed, joint_b])


def submission_digest(session: bytes, round_index: int, sender: str, residues: bytes) -> bytes:
    return _h("submission", [session, round_index.to_bytes(8, "little"), sender.encode(), residues])


def blob_digest(label: str, data: bytes) -> bytes:
    return _h(label, [data])


def request_digest(
    session: bytes,
    round_index: int,
    accepted: Sequence[str],
    submission_digests: Sequence[bytes],
    c0_digest: bytes,
    c1_digest: bytes,
) -> bytes:
    """Binds a decryption request to the round and to exactly the accepted submissions."""
    parts = [session, round_index.to_bytes(8, "little")]
    for party, digest in zip(accepted, submission_digests, strict=True):
        parts += [party.encode(), digest]
    return _h("decrypt-request", [*parts, c0_digest, c1_digest])
