"""Authenticated, private holder-to-holder channels: Ed25519 identities, X25519 + AEAD.

PKI assumption: every key holder's Ed25519 public identity key is distributed
out of band before the ceremony (``setup`` hands each holder the roster). The
server relays frames but cannot forge or read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import IntegrityError, ParameterError
from secagg.protocol import PartyId
from secagg.rand import Csprng
from secagg.wire import Message, encode

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


def new_identity(*, rng: Csprng) -> Ed25519PrivateKey:
    """A fresh Ed25519 identity key from ``rng``.

    Security: the private key signs every message the holder originates.
    """
    return Ed25519PrivateKey.from_private_bytes(rng.random_bytes(32))


def public_bytes(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, _RAW_PUB)


def _unsigned_frame(msg: Message) -> bytes:
    return encode(dataclasses.replace(msg, signature=b""))  # type: ignore[call-arg]


def sign(msg: Message, identity: Ed25519PrivateKey) -> Message:
    """``msg`` with ``signature`` = Ed25519 over its frame encoded with an empty signature."""
    return dataclasses.replace(msg, signature=identity.sign(_unsigned_frame(msg)))  # type: ignore[call-arg]


def verify(msg: Message, roster: Mapping[PartyId, bytes]) -> None:
    """Check ``msg.signature`` against the sender's roster key.

    Raises:
        IntegrityError: unknown sender, missing or wrong signature (opaque).
    """
    key = roster.get(msg.sender)
    signature = getattr(msg, "signature", b"")
    if key is None or not signature:
        raise IntegrityError("message signature")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, _unsigned_frame(msg))
    except (InvalidSignature, ValueError):
        raise IntegrityError("message signature") from None


@dataclasses.dataclass(frozen=True)
class ChannelKeys:
    """One holder's X25519 key for this ceremony and the derived pairwise AEAD keys.

    Security: holds private key material; lives only inside a key holder.
    """

    private: X25519PrivateKey

    @classmethod
    def generate(cls, *, rng: Csprng) -> ChannelKeys:
        return cls(X25519PrivateKey.from_private_bytes(rng.random_bytes(32)))

    @property
    def public(self) -> bytes:
        return public_bytes(self.private)

    def aead(
        self, peer_public: bytes, session: bytes, sender: PartyId, recipient: PartyId
    ) -> ChaCha20Poly1305:
        """The directional key sender → recipient (HKDF-SHA256 of the X25519 secret)."""
        if len(peer_public) != 32:
            raise ParameterError("peer_public must be 32 bytes")
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise IntegrityError("key agreement") from None
        info = f"secagg/ckks/deal/{sender}->{recipient}".encode()
        key = HKDF(hashes.SHA256(), 32, salt=session, info=info).derive(shared)
        return ChaCha20Poly1305(key)

    def __repr__(self) -> str:
        return "ChannelKeys(<secret>)"


def seal_payload(aead: ChaCha20Poly1305, nonce: bytes, payload: bytes, header: bytes) -> bytes:
    return aead.encrypt(nonce, payload, header)


def open_payload(aead: ChaCha20Poly1305, nonce: bytes, ciphertext: bytes, header: bytes) -> bytes:
    """Decrypt and authenticate; any failure is an opaque :class:`IntegrityError`."""
    try:
        return aead.decrypt(nonce, ciphertext, header)
    except (InvalidTag, ValueError):
        raise IntegrityError("share deal") from None


def deal_header(msg: Message) -> bytes:
    """The associated data binding a deal to its session, round, sender and target."""
    target = getattr(msg, "target", msg.recipient)
    return (
        f"secagg/ckks/deal/v1\x00{msg.TYPE_ID}\x00{msg.round}\x00{msg.sender}\x00{target}\x00"
    ).encode() + msg.session
