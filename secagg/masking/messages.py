"""Wire messages of the pairwise-masking protocol (type ids 0x0201–0x0209).

Phases (client view): advertise keys → share keys → masked input →
consistency check → unmask. ``__post_init__`` checks shapes and sizes, so a
malformed frame fails in :func:`secagg.wire.decode` with ``DecodeError``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from secagg.channels import KEY_BYTES, SIGNATURE_BYTES
from secagg.errors import DecodeError
from secagg.masking.sharing import ELEMENTS, SHARE_BYTES
from secagg.wire import Message, register

AEAD_TAG_BYTES = 16
SHARE_CIPHERTEXT_BYTES = SHARE_BYTES + AEAD_TAG_BYTES
_WIRE_UINTS = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def _check_distinct(name: str, parties: tuple[str, ...]) -> None:
    if len(set(parties)) != len(parties):
        raise DecodeError(f"{name} must list distinct parties")


def _check_lengths(name: str, items: tuple[bytes, ...], size: int) -> None:
    if any(len(item) != size for item in items):
        raise DecodeError(f"{name} entries must be {size} bytes")


def _check_share_table(name: str, owners: tuple[str, ...], table: np.ndarray) -> None:
    if table.dtype != np.uint32 or table.ndim != 2 or table.shape != (len(owners), ELEMENTS):
        raise DecodeError(f"{name} must be a uint32 array of shape ({len(owners)}, {ELEMENTS})")


@register(0x0201)
@dataclasses.dataclass(frozen=True, kw_only=True)
class AdvertiseKeys(Message):
    """Client → server: two fresh X25519 public keys and a commitment to the self-mask seed,
    signed with the client's Ed25519 identity key."""

    encryption_key: bytes
    mask_key: bytes
    seed_commitment: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_lengths("advert keys", (self.encryption_key, self.mask_key), KEY_BYTES)
        _check_lengths("seed commitment", (self.seed_commitment,), KEY_BYTES)
        _check_lengths("advert signature", (self.signature,), SIGNATURE_BYTES)


@register(0x0202, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyRoster(Message):
    """Server → client: every advertiser and its advert's digest (the graph seed's input),
    and the signed adverts of the client's live neighbours."""

    advertisers: tuple[str, ...]
    advert_digests: tuple[bytes, ...]
    parties: tuple[str, ...]
    encryption_keys: tuple[bytes, ...]
    mask_keys: tuple[bytes, ...]
    seed_commitments: tuple[bytes, ...]
    signatures: tuple[bytes, ...]

    def __post_init__(self) -> None:
        n = len(self.parties)
        columns = (self.encryption_keys, self.mask_keys, self.seed_commitments, self.signatures)
        if any(len(c) != n for c in columns):
            raise DecodeError("roster columns must have one entry per party")
        _check_distinct("roster", self.parties)
        _check_distinct("advertisers", self.advertisers)
        if len(self.advert_digests) != len(self.advertisers):
            raise DecodeError("advert digests must have one entry per advertiser")
        _check_lengths("advert digests", self.advert_digests, KEY_BYTES)
        _check_lengths("roster keys", self.encryption_keys + self.mask_keys, KEY_BYTES)
        _check_lengths("roster commitments", self.seed_commitments, KEY_BYTES)
        _check_lengths("roster signatures", self.signatures, SIGNATURE_BYTES)


@register(0x0203)
@dataclasses.dataclass(frozen=True, kw_only=True)
class EncryptedShares(Message):
    """Client → server: one AEAD ciphertext of the client's shares per holder."""

    recipients: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.recipients) != len(self.ciphertexts):
            raise DecodeError("share ciphertexts must have one recipient each")
        _check_distinct("share recipients", self.recipients)
        _check_lengths("share ciphertexts", self.ciphertexts, SHARE_CIPHERTEXT_BYTES)


@register(0x0204, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareBundle(Message):
    """Server → client: U2 (every client whose shares were accepted: the global masking
    set) and the share ciphertexts addressed to this client, by their senders."""

    masking_set: tuple[str, ...]
    senders: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_distinct("masking set", self.masking_set)
        if len(self.senders) != len(self.ciphertexts):
            raise DecodeError("bundle ciphertexts must have one sender each")
        _check_distinct("bundle senders", self.senders)
        _check_lengths("bundle ciphertexts", self.ciphertexts, SHARE_CIPHERTEXT_BYTES)


@register(0x0205, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class MaskedInput(Message):
    """Client → server: the encoded update plus self-mask plus pairwise masks, in ℤ_{2^w},
    and the client's signature over the masking set U2 it used (its view)."""

    vector: np.ndarray
    view_signature: bytes

    def __post_init__(self) -> None:
        _check_lengths("view signature", (self.view_signature,), SIGNATURE_BYTES)
        if self.vector.ndim != 1 or self.vector.dtype not in _WIRE_UINTS:
            raise DecodeError("masked vector must be a 1-D uint16/uint32/uint64 array")


@register(0x0206, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsistencyRequest(Message):
    """Server → client: the survivor set U3 (clients whose masked input arrived), to be
    signed, with the view signatures of the surviving neighbours whose self-mask shares
    the client would reveal."""

    survivors: tuple[str, ...]
    view_signers: tuple[str, ...]
    view_signatures: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_distinct("survivors", self.survivors)
        _check_distinct("view signers", self.view_signers)
        if len(self.view_signers) != len(self.view_signatures):
            raise DecodeError("view signatures must have one signer each")
        _check_lengths("view signatures", self.view_signatures, SIGNATURE_BYTES)


@register(0x0207, version=2)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsistencySignature(Message):
    """Client → server: the client's signature over the pair (U2, U3) it was shown."""

    signature: bytes

    def __post_init__(self) -> None:
        _check_lengths("consistency signature", (self.signature,), SIGNATURE_BYTES)


@register(0x0208)
@dataclasses.dataclass(frozen=True, kw_only=True)
class UnmaskRequest(Message):
    """Server → client: survivors U3 (reveal self-mask shares), dropped U2 − U3 (reveal key
    shares), and the consistency signatures of the recipient's surviving holders."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signers: tuple[str, ...]
    signatures: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_distinct("survivors", self.survivors)
        _check_distinct("dropped", self.dropped)
        _check_distinct("signers", self.signers)
        if len(self.signers) != len(self.signatures):
            raise DecodeError("signatures must have one signer each")
        _check_lengths("consistency signatures", self.signatures, SIGNATURE_BYTES)


@register(0x0209)
@dataclasses.dataclass(frozen=True, kw_only=True)
class UnmaskResponse(Message):
    """Client → server: self-mask-seed shares of survivors, mask-key shares of dropped peers."""

    seed_owners: tuple[str, ...]
    seed_shares: np.ndarray
    key_owners: tuple[str, ...]
    key_shares: np.ndarray

    def __post_init__(self) -> None:
        _check_distinct("seed owners", self.seed_owners)
        _check_distinct("key owners", self.key_owners)
        if set(self.seed_owners) & set(self.key_owners):
            raise DecodeError("a response must not carry both shares of one owner")
        _check_share_table("seed shares", self.seed_owners, self.seed_shares)
        _check_share_table("key shares", self.key_owners, self.key_shares)


CLIENT_BOUND = (KeyRoster, ShareBundle, ConsistencyRequest, UnmaskRequest)
SERVER_BOUND = (AdvertiseKeys, EncryptedShares, MaskedInput, ConsistencySignature, UnmaskResponse)
ALL_MESSAGES = CLIENT_BOUND + SERVER_BOUND
