"""Domain-separated hashes, signed payloads and the CRS expansion of threshold CKKS."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence

import blake3
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import channels
from secagg.wire import Message, encode

MESSAGE_PURPOSE = b"ckks/message"
CRS_PURPOSE = b"ckks/crs"
RECEIPT_PURPOSE = b"ckks/receipt"
ENVELOPE_PURPOSE = b"ckks/share-envelope"


def _h(label: str, parts: Iterable[bytes]) -> bytes:
    h = hashlib.sha256(f"secagg/ckks/{label}\x00".encode())
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def params_digest(description: dict[str, object], primes: Sequence[int]) -> bytes:
    text = json.dumps({"params": description, "primes": list(primes)}, sort_keys=True, default=str)
    return _h("params", [text.encode()])


def seed_commitment(federation: bytes, sender: str, contribution: bytes) -> bytes:
    return _h("seed-commit", [federation, sender.encode(), contribution])


def crs_seed(federation: bytes, contributions: Sequence[bytes]) -> bytes:
    """The CRS seed: a hash of every holder's revealed contribution, in roster order."""
    return _h("crs-seed", [federation, *contributions])


def crs_payload(federation: bytes, roster_digest: bytes, seed: bytes, params: bytes) -> bytes:
    """What every holder signs at setup and every client checks before encrypting."""
    return channels.frame(federation, roster_digest, seed, params)


def crs_polynomials(
    seed: bytes, primes: Sequence[int], degree: int, first: int, count: int
) -> np.ndarray:
    """The public polynomials aⱼ (NTT form), j ∈ [first, first+count), as ``(k, count, N)``.

    SHAKE-256 of (domain, prime index, ciphertext index, seed), read as 64-bit
    words masked to the prime's bit length, rejection-sampled below qⱼ: uniform,
    and nobody (the server included) can choose them once the seed is fixed.
    """
    out = np.empty((len(primes), count, degree), dtype=np.uint64)
    for p, q in enumerate(primes):
        mask = np.uint64((1 << q.bit_length()) - 1)
        accept = q / float(1 << q.bit_length())
        for i in range(count):
            prefix = f"secagg/ckks/crs/v1\x00{p}\x00{first + i}\x00".encode() + seed
            xof = hashlib.shake_256(prefix)
            words = int(degree / accept * 1.05) + 64
            while True:
                raw = np.frombuffer(xof.digest(8 * words), dtype="<u8") & mask
                good = raw[raw < np.uint64(q)]
                if good.size >= degree:
                    out[p, i] = good[:degree]
                    break
                words *= 2  # a longer SHAKE output extends the shorter one: still deterministic
    return out


def blob_digest(label: str, data: bytes) -> bytes:
    return _h(label, [data])


CIPHERTEXT_CONTEXT = "secagg/ckks/ciphertext v1"


def ciphertext_digest(residues: bytes | memoryview) -> bytes:
    """The 32-byte digest of a submission's c0 residue block, which its sender signs.

    BLAKE3 (SIMD, ~5× SHA-256 on megabyte inputs) because the server hashes every
    upload on arrival and this dominated its per-client cost. Domain-separated by
    BLAKE3's key-derivation mode with a context string used for nothing else, and
    length-prefixed like every other transcript hash.
    """
    h = blake3.blake3(derive_key_context=CIPHERTEXT_CONTEXT)
    h.update(len(residues).to_bytes(8, "little"))
    h.update(residues)
    return h.digest()


def round_params_digest(frame: bytes) -> bytes:
    return _h("round-params", [frame])


def receipt_payload(
    session: bytes,
    round_index: int,
    params_digest: bytes,
    ct_digest: bytes,
    ephemeral: bytes,
    envelope_digests: Sequence[bytes],
) -> bytes:
    """What a client signs: its round, its ciphertext and exactly its share envelopes."""
    return channels.frame(
        session, _u64(round_index), params_digest, ct_digest, ephemeral, *envelope_digests
    )


def envelope_header(
    session: bytes, round_index: int, params_digest: bytes, client: str, holder: str
) -> bytes:
    """The AEAD associated data of one share envelope (client → holder, this round)."""
    return channels.frame(
        b"ckks/envelope/v1",
        session,
        _u64(round_index),
        params_digest,
        client.encode(),
        holder.encode(),
    )


def request_digest(
    round_params: bytes,
    accepted: Sequence[str],
    ct_digests: Sequence[bytes],
    envelope_digests: Sequence[bytes],
) -> bytes:
    """Binds a holder's answer to one round and exactly one accepted set."""
    parts = [round_params_digest(round_params)]
    for party, digest in zip(accepted, ct_digests, strict=True):
        parts += [party.encode(), digest]
    return _h("share-request", [*parts, *envelope_digests])


def _unsigned(msg: Message) -> bytes:
    return encode(dataclasses.replace(msg, signature=b""))  # type: ignore[call-arg]


def sign_message(msg: Message, identity: Ed25519PrivateKey) -> Message:
    """``msg`` with ``signature`` = Ed25519 over its frame encoded with an empty signature."""
    signature = channels.sign(identity, MESSAGE_PURPOSE, _unsigned(msg))
    return dataclasses.replace(msg, signature=signature)  # type: ignore[call-arg]


def verify_message(msg: Message, signing_public: bytes) -> None:
    """Raises the opaque IntegrityError unless ``msg`` carries its sender's signature."""
    signature = getattr(msg, "signature", b"")
    channels.verify(signing_public, signature, MESSAGE_PURPOSE, _unsigned(msg))
