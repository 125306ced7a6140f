"""The one X25519 + HKDF + AEAD + Ed25519 layer every scheme uses.

Thin wrappers over ``cryptography`` that turn every verification failure into
our opaque :class:`~secagg.errors.IntegrityError` and every derived key into a
domain-separated HKDF-SHA256 output. Pairwise masking (client-to-client share
envelopes, signed adverts) and threshold CKKS (client-to-key-holder share
envelopes, signed receipts, the committee's CRS certificate) call the same
functions with their own ``purpose`` strings.

AEAD: AES-256-GCM under a key used for exactly one message (the nonce is fixed);
callers derive a fresh key per (session, round, sender, recipient, purpose).

Security: every function here handles secrets (private keys, shared secrets,
seeds, share plaintexts). None of them logs, and errors never carry key material.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from secagg.errors import IntegrityError
from secagg.rand import Csprng

DOMAIN = b"secagg/v1/"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
AEAD_TAG_BYTES = 16
_AEAD_NONCE = bytes(12)  # every AEAD key encrypts exactly one message


def frame(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part is length-prefixed (8 bytes, little endian)."""
    return b"".join(len(p).to_bytes(8, "little") + p for p in parts)


def new_agreement_key(*, rng: Csprng) -> X25519PrivateKey:
    """A fresh X25519 key pair drawn from ``rng``.

    Security: the private key is as secret as ``rng``'s state.
    """
    return X25519PrivateKey.from_private_bytes(rng.random_bytes(KEY_BYTES))


def new_identity_key(*, rng: Csprng) -> Ed25519PrivateKey:
    """A fresh Ed25519 identity key drawn from ``rng``."""
    return Ed25519PrivateKey.from_private_bytes(rng.random_bytes(KEY_BYTES))


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    """Raw private key bytes (for Shamir sharing only).

    Security: the result is a secret key.
    """
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret with a peer's public key.

    Raises:
        IntegrityError: the peer key is malformed or of low order (all-zero secret).

    Security: the result is a shared secret; feed it to :func:`derive_key` only.
    """
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise IntegrityError("key agreement") from None
    if shared == bytes(KEY_BYTES):
        raise IntegrityError("key agreement")
    return shared


def derive_key(secret: bytes, *, purpose: bytes, salt: bytes, context: bytes) -> bytes:
    """A full 256-bit key from ``secret`` (HKDF-SHA256), bound to a purpose and context.

    Security: ``secret`` and the output are secrets. Distinct (purpose, salt, context)
    triples give independent keys.
    """
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=DOMAIN + purpose + context
    )
    return hkdf.derive(secret)


def seal(key: bytes, plaintext: bytes, header: bytes) -> bytes:
    """AES-256-GCM encryption under a single-use key, ``header`` as associated data.

    Security: ``key`` must never encrypt a second message (the nonce is fixed).
    """
    return AESGCM(key).encrypt(_AEAD_NONCE, plaintext, header)


def unseal(key: bytes, ciphertext: bytes, header: bytes) -> bytes:
    """Inverse of :func:`seal`; any tampering raises the opaque :class:`IntegrityError`."""
    try:
        return AESGCM(key).decrypt(_AEAD_NONCE, ciphertext, header)
    except (InvalidTag, ValueError):
        raise IntegrityError("share ciphertext") from None


def sign(identity: Ed25519PrivateKey, purpose: bytes, payload: bytes) -> bytes:
    """Ed25519 signature over a domain-separated payload."""
    return identity.sign(DOMAIN + purpose + b"\x00" + payload)


def verify(identity_public: bytes, signature: bytes, purpose: bytes, payload: bytes) -> None:
    """Check an Ed25519 signature; raises the opaque :class:`IntegrityError` if it fails."""
    try:
        Ed25519PublicKey.from_public_bytes(identity_public).verify(
            signature, DOMAIN + purpose + b"\x00" + payload
        )
    except (InvalidSignature, ValueError):
        raise IntegrityError("signature") from None
