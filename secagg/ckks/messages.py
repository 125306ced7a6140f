"""Wire messages of threshold CKKS (type ids 0x03xx).

Holder-originated ceremony messages carry an Ed25519 ``signature`` over the
message's own frame encoded with an empty signature (see
:mod:`secagg.ckks.channels`). Shamir shares travel only inside ``ShareDeal``
as AEAD ciphertext. Residue blocks use the compact format of
:mod:`secagg.ckks.residues`; their sizes and ranges are checked by the role
that knows the parameters, before use.
"""

from __future__ import annotations

import dataclasses

from secagg.errors import DecodeError
from secagg.wire import Message, register

DIGEST_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
FORMAT_VERSION = 1


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise DecodeError(f"{name} must be {size} bytes; got {len(value)}")


def _check_signature(value: bytes) -> None:
    if len(value) not in (0, SIGNATURE_BYTES):
        raise DecodeError(f"signature must be {SIGNATURE_BYTES} bytes; got {len(value)}")


@register(0x0301)
@dataclasses.dataclass(frozen=True, kw_only=True)
class CeremonyOpen(Message):
    """Server → holder: start the key ceremony for these public parameters."""

    params_digest: bytes

    def __post_init__(self) -> None:
        _check_len("params_digest", self.params_digest, DIGEST_BYTES)


@register(0x0302)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedCommit(Message):
    """Holder → all: H(CRS seed contribution) and its X25519 channel key, signed."""

    commitment: bytes
    kx_public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("commitment", self.commitment, DIGEST_BYTES)
        _check_len("kx_public", self.kx_public, KEY_BYTES)
        _check_signature(self.signature)


@register(0x0303)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedReveal(Message):
    """Holder → all: the CRS seed contribution behind its commitment, signed."""

    contribution: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("contribution", self.contribution, KEY_BYTES)
        _check_signature(self.signature)


@register(0x0304)
@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyShareCommit(Message):
    """Holder → all: H(bᵢ), the commitment to its public-key share, signed."""

    commitment: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("commitment", self.commitment, DIGEST_BYTES)
        _check_signature(self.signature)


@register(0x0305)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareDeal(Message):
    """Holder i → holder ``target`` via the server: AEAD(Shamir shares Pᵢ(xⱼ)), signed."""

    target: str
    nonce: bytes
    ciphertext: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("nonce", self.nonce, 12)
        _check_signature(self.signature)


@register(0x0306)
@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyShareReveal(Message):
    """Holder → all: bᵢ = −a·sᵢ − eᵢ (compact residues, key level), signed."""

    residues: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_signature(self.signature)


@register(0x0307)
@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyConfirm(Message):
    """Holder → server: signature over the joint public key and the ceremony transcript."""

    key_digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("key_digest", self.key_digest, DIGEST_BYTES)
        _check_signature(self.signature)


@register(0x0308)
@dataclasses.dataclass(frozen=True, kw_only=True)
class Relay(Message):
    """Server → holder: the frames other holders addressed to it (or to everyone)."""

    stage: int
    frames: tuple[bytes, ...]


@register(0x0310)
@dataclasses.dataclass(frozen=True, kw_only=True)
class CkksSubmission(Message):
    """Client → server: its encrypted update (compact residues, prime-major)."""

    version: int
    params_digest: bytes
    count: int
    residues: bytes

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise DecodeError(f"version must be {FORMAT_VERSION}; got {self.version}")
        _check_len("params_digest", self.params_digest, DIGEST_BYTES)
        if self.count < 1:
            raise DecodeError(f"count must be ≥ 1; got {self.count}")


@register(0x0311)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SubmissionReceipt(Message):
    """Client → holder: the digest of the submission it sent to the server."""

    digest: bytes

    def __post_init__(self) -> None:
        _check_len("digest", self.digest, DIGEST_BYTES)


@register(0x0312)
@dataclasses.dataclass(frozen=True, kw_only=True)
class DecryptRequest(Message):
    """Server → holder: decrypt this round's aggregate (c1 only), bound to the submissions."""

    accepted: tuple[str, ...]
    submission_digests: tuple[bytes, ...]
    c0_digest: bytes
    count: int
    c1_residues: bytes
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.accepted) != len(self.submission_digests):
            raise DecodeError("accepted and submission_digests must have equal length")
        for d in self.submission_digests:
            _check_len("submission digest", d, DIGEST_BYTES)
        _check_len("c0_digest", self.c0_digest, DIGEST_BYTES)
        _check_len("digest", self.digest, DIGEST_BYTES)
        if self.count < 1:
            raise DecodeError(f"count must be ≥ 1; got {self.count}")


@register(0x0313)
@dataclasses.dataclass(frozen=True, kw_only=True)
class PartialDecryption(Message):
    """Holder → server: one smudged share c1·ŝⱼ + eⱼ for the request ``digest``, signed."""

    digest: bytes
    residues: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("digest", self.digest, DIGEST_BYTES)
        _check_signature(self.signature)
