"""Our wire frames inside Flower messages, and a node's sealed role journal.

Frames: a Flower message carries a list of encoded :mod:`secagg.wire` frames as one
``bytes`` value (``u32`` length before each frame), so Flower never parses protocol
data and byte counts are those of our codec.

Journal: a SuperNode runs every message in a fresh ``ClientApp`` process (flwr 1.42,
``--isolation subprocess``), so a role object cannot live from one phase to the next.
What survives is ``Context.state``, which the SuperNode keeps for the run. A node keeps
there only a *sealed journal*: the round parameters, the seed of its role's randomness,
its protected input and every frame the role has accepted so far. The next phase
rebuilds the role with the party-local constructor and replays the journal (sans-IO
roles are deterministic given their inputs and randomness), then handles the new
frames. Sealing is ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the
party's own X25519 secret key file, bound to the party and the Flower run.

Security: the journal holds secrets (the update vector, the role's seed): it is never
stored or logged unsealed. A role's randomness is a ChaCha20 stream under a fresh
256-bit seed from the OS CSPRNG; it is as unpredictable as ``SystemRng`` while the
seed stays sealed on the party's machine.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterable, Mapping
from typing import TypeVar

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import DecodeError, IntegrityError
from secagg.identity import PartyKeys
from secagg.wire import DEFAULT_MAX_MESSAGE_BYTES, Message, decode, encode, register

T = TypeVar("T")
_LEN = struct.Struct("<I")
_NONCE = 12
JOURNAL_INFO = b"secagg/flower/node-journal/v1"


def pack_frames(frames: Iterable[bytes]) -> bytes:
    """Length-prefixed concatenation of encoded frames."""
    out = bytearray()
    for frame in frames:
        out += _LEN.pack(len(frame)) + frame
    return bytes(out)


def unpack_frames(blob: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[bytes]:
    """Split :func:`pack_frames` output; every length is checked before it is used."""
    frames, at = [], 0
    while at < len(blob):
        if at + _LEN.size > len(blob):
            raise DecodeError("frame list must not end inside a length prefix")
        (n,) = _LEN.unpack_from(blob, at)
        at += _LEN.size
        if n > max_size or at + n > len(blob):
            raise DecodeError(f"frame length must fit in the message; got {n}")
        frames.append(blob[at : at + n])
        at += n
    return frames


def encode_all(messages: Iterable[Message]) -> list[bytes]:
    return [encode(m) for m in messages]


def decode_all(frames: Iterable[bytes]) -> list[Message]:
    return [decode(f) for f in frames]


@register(0x0F01)
@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeJournal(Message):
    """A party's role state for one session, as the inputs that rebuild it (sealed at rest).

    ``params`` is the round parameters frame, ``seed`` the role's randomness,
    ``vector`` the protected input (empty for parties without one), ``inbound`` the
    frames the role accepted, in order.
    """

    params: bytes
    seed: bytes
    vector: np.ndarray
    inbound: tuple[bytes, ...]


def _journal_key(keys: PartyKeys, run: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=JOURNAL_INFO + b"|" + keys.party.encode() + b"|" + run.encode(),
    )
    return hkdf.derive(keys.agreement.private_bytes_raw())


def seal(journal: NodeJournal, keys: PartyKeys, run: str) -> bytes:
    """AEAD-encrypt a journal for this party and run (nonce ‖ ciphertext)."""
    nonce = os.urandom(_NONCE)
    aad = keys.party.encode() + b"|" + run.encode()
    return nonce + ChaCha20Poly1305(_journal_key(keys, run)).encrypt(nonce, encode(journal), aad)


def unseal(blob: bytes, keys: PartyKeys, run: str) -> NodeJournal:
    """Open a sealed journal; any tampering raises :class:`IntegrityError` (opaque)."""
    aad = keys.party.encode() + b"|" + run.encode()
    try:
        plain = ChaCha20Poly1305(_journal_key(keys, run)).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError):
        raise IntegrityError("sealed node state") from None
    journal = decode(plain)
    if not isinstance(journal, NodeJournal):
        raise DecodeError(f"sealed node state must be a NodeJournal; got {type(journal).__name__}")
    return journal


def hello_transcript(party: str, challenge: bytes) -> bytes:
    """What a node signs to prove it holds its roster signing key (domain-separated)."""
    return b"secagg/flower/hello/v1|" + party.encode() + b"|" + challenge


def field(record: Mapping[str, object], key: str, kind: type[T]) -> T:
    """A typed value from a Flower record; a missing or mistyped field is a DecodeError."""
    value = record.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(
            f"message field {key} must be {kind.__name__}; got {type(value).__name__}"
        )
    return value
