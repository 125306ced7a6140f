"""Wire messages of threshold CKKS (type ids 0x03xx).

Federation setup (once): the server opens the CRS ceremony; holders commit to
and reveal seed contributions (relayed by the server) and endorse the resulting
CRS seed with their identity keys. Each round: the server broadcasts
:class:`CkksRoundParams` (which carries the committee's endorsements); each
client sends ONE :class:`CkksSubmission` (its c0 residues, its share envelopes
to the holders and a signature); the server asks every holder for its share
sum over the accepted set (:class:`ShareRequest`); holders answer with
:class:`ShareSum` or, when a client's envelope to them is bad, a
:class:`ShareComplaint`. Shares of a client's key travel only inside AEAD
envelopes. Residue blocks use the compact format of :mod:`secagg.ckks.residues`;
their sizes and ranges are checked by the role that knows the parameters.
"""

from __future__ import annotations

import dataclasses

from secagg.channels import KEY_BYTES, SIGNATURE_BYTES
from secagg.errors import DecodeError
from secagg.wire import Message, register

DIGEST_BYTES = 32
BROADCAST = "*"
MAX_ROUND = 1 << 63


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise DecodeError(f"{name} must be {size} bytes; got {len(value)}")


def _check_all(name: str, values: tuple[bytes, ...], size: int) -> None:
    for value in values:
        _check_len(name, value, size)


def _check_round(value: int) -> None:
    """Round indices travel as unsigned 64-bit words in every signed payload."""
    if not 0 <= value < MAX_ROUND:
        raise DecodeError(f"round must be in [0, 2^63); got {value}")


def _check_signature(value: bytes) -> None:
    if len(value) not in (0, SIGNATURE_BYTES):
        raise DecodeError(f"signature must be {SIGNATURE_BYTES} bytes; got {len(value)}")


@register(0x0301, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class CeremonyOpen(Message):
    """Server → holder: fix the CRS seed of federation ``session`` for these parameters."""

    params_digest: bytes
    roster_digest: bytes

    def __post_init__(self) -> None:
        _check_len("params_digest", self.params_digest, DIGEST_BYTES)
        _check_len("roster_digest", self.roster_digest, DIGEST_BYTES)


@register(0x0302, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedCommit(Message):
    """Holder → all (relayed): H(its CRS seed contribution), signed."""

    commitment: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("commitment", self.commitment, DIGEST_BYTES)
        _check_signature(self.signature)


@register(0x0303, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedReveal(Message):
    """Holder → all (relayed): the contribution behind its commitment, signed."""

    contribution: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("contribution", self.contribution, KEY_BYTES)
        _check_signature(self.signature)


@register(0x0304, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class Relay(Message):
    """Server → holder: every holder's frame of one ceremony stage."""

    stage: int
    frames: tuple[bytes, ...]


@register(0x0305, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class CrsEndorsement(Message):
    """Holder → server: ``endorsement`` signs (federation, roster, CRS seed, parameters)."""

    seed: bytes
    endorsement: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_len("seed", self.seed, DIGEST_BYTES)
        _check_len("endorsement", self.endorsement, SIGNATURE_BYTES)
        _check_signature(self.signature)


@register(0x0306, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class CkksRoundParams(Message):
    """Server → everyone: what a party needs to take part in round ``round``.

    ``endorsements`` are the committee's signatures over the CRS seed, in the
    committee's roster order; a client verifies every one against its own
    out-of-band roster before it encrypts.
    """

    params_digest: bytes
    roster_digest: bytes
    federation: bytes
    crs_seed: bytes
    endorsements: tuple[bytes, ...]
    cohort: tuple[str, ...]
    dim: int

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_len("params_digest", self.params_digest, DIGEST_BYTES)
        _check_len("roster_digest", self.roster_digest, DIGEST_BYTES)
        _check_len("crs_seed", self.crs_seed, DIGEST_BYTES)
        _check_all("endorsement", self.endorsements, SIGNATURE_BYTES)
        if self.dim < 1:
            raise DecodeError(f"dim must be ≥ 1; got {self.dim}")


@register(0x0310, version=3)  # v3: ciphertext digest is BLAKE3
@dataclasses.dataclass(frozen=True, kw_only=True)
class CkksSubmission(Message):
    """Client → server, its only message: c0 residues, share envelopes, signature.

    ``envelopes[h]`` is AEAD(Shamir share of kᵢ for the h-th holder) under a key
    agreed between ``ephemeral`` and that holder's static X25519 key.
    """

    count: int
    residues: bytes
    ephemeral: bytes
    envelopes: tuple[bytes, ...]
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round)
        if self.count < 1:
            raise DecodeError(f"count must be ≥ 1; got {self.count}")
        _check_len("ephemeral", self.ephemeral, KEY_BYTES)
        _check_signature(self.signature)


@register(0x0312, version=3)  # v3: ct_digests are BLAKE3
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareRequest(Message):
    """Server → holder: the accepted set, every member's signed receipt, and its envelope.

    Receipt i is (ct_digests[i], ephemerals[i], envelope_digests[i·n:(i+1)·n],
    signatures[i]); ``envelopes[i]`` is member i's envelope for this holder.
    """

    round_params: bytes
    accepted: tuple[str, ...]
    ct_digests: tuple[bytes, ...]
    ephemerals: tuple[bytes, ...]
    envelope_digests: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    envelopes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_round(self.round)
        m = len(self.accepted)
        if not (
            len(self.ct_digests) == len(self.ephemerals) == len(self.signatures) == m
            and len(self.envelopes) == m
            and (m == 0 or len(self.envelope_digests) % m == 0)
        ):
            raise DecodeError("receipt fields must have one entry per accepted client")
        _check_all("ciphertext digest", self.ct_digests, DIGEST_BYTES)
        _check_all("ephemeral", self.ephemerals, KEY_BYTES)
        _check_all("envelope digest", self.envelope_digests, DIGEST_BYTES)
        _check_all("signature", self.signatures, SIGNATURE_BYTES)


@register(0x0313, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareSum(Message):
    """Holder → server: Σ_{i∈S} share_h(kᵢ) for the request ``request_digest``, signed."""

    request_digest: bytes
    residues: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_len("request_digest", self.request_digest, DIGEST_BYTES)
        _check_signature(self.signature)


@register(0x0314, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareComplaint(Message):
    """Holder → server: these members' envelopes to me do not open; nothing released, signed."""

    request_digest: bytes
    accused: tuple[str, ...]
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round)
        _check_len("request_digest", self.request_digest, DIGEST_BYTES)
        _check_signature(self.signature)
