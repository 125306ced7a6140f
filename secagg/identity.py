"""Long-lived party identities: key files and the public roster (the PKI assumption).

Every party (client, key holder) owns one :class:`PartyKeys`: an Ed25519 key that
signs what the party originates and a static X25519 key that peers encrypt to
(key holders receive clients' key shares under it). The *public* halves of every
party form the :class:`Roster`, a JSON file distributed out of band before the
federation starts — the PKI assumption every scheme states: a party trusts the
roster it was given, not keys the server relays.

Security: :class:`PartyKeys` holds private keys. Its repr prints only the party
id and public fingerprints; :meth:`PartyKeys.save` writes a 0600 file that never
exists with wider permissions, even briefly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from secagg.errors import DecodeError, ParameterError
from secagg.rand import Csprng

KEY_FILE_FORMAT = "secagg-party-keys/v1"
ROSTER_FORMAT = "secagg-roster/v1"
KEY_BYTES = 32
KINDS = ("client", "holder")


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_party(party: str) -> str:
    kind, _, rest = party.partition("/")
    if kind not in KINDS or not rest or len(party) > 128 or not party.isprintable():
        raise ParameterError(f"party must look like client/<name> or holder/<name>; got {party!r}")
    return party


@dataclasses.dataclass(frozen=True)
class PublicIdentity:
    """A party's public keys: Ed25519 ``signing`` and X25519 ``agreement`` (32 bytes each)."""

    party: str
    signing: bytes
    agreement: bytes

    def __post_init__(self) -> None:
        _check_party(self.party)
        for name in ("signing", "agreement"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_BYTES:
                raise ParameterError(f"{name} key must be {KEY_BYTES} bytes")

    @property
    def fingerprint(self) -> str:
        """SHA-256 over both public keys, hex, first 16 bytes: what a human compares."""
        return hashlib.sha256(self.signing + self.agreement).hexdigest()[:32]

    def to_json(self) -> dict[str, str]:
        return {
            "party": self.party,
            "signing": self.signing.hex(),
            "agreement": self.agreement.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> PublicIdentity:
        if not isinstance(data, dict) or set(data) != {"party", "signing", "agreement"}:
            raise DecodeError("roster entry must have exactly party, signing, agreement")
        try:
            return cls(
                str(data["party"]),
                bytes.fromhex(str(data["signing"])),
                bytes.fromhex(str(data["agreement"])),
            )
        except ValueError as exc:
            raise DecodeError(f"roster entry must hold hex keys; got {exc}") from None


class PartyKeys:
    """One party's private keys.

    Security: both keys are long-lived secrets. Never logged or printed; the file
    written by :meth:`save` is 0600.
    """

    def __init__(self, party: str, signing: Ed25519PrivateKey, agreement: X25519PrivateKey) -> None:
        self.party = _check_party(party)
        self.signing = signing
        self.agreement = agreement

    @classmethod
    def generate(cls, party: str, *, rng: Csprng) -> PartyKeys:
        return cls(
            party,
            Ed25519PrivateKey.from_private_bytes(rng.random_bytes(KEY_BYTES)),
            X25519PrivateKey.from_private_bytes(rng.random_bytes(KEY_BYTES)),
        )

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(self.party, _raw_public(self.signing), _raw_public(self.agreement))

    def save(self, path: str | Path) -> Path:
        """Write the key file with mode 0600; refuses to overwrite an existing file."""
        path = Path(path)
        body = json.dumps(
            {
                "format": KEY_FILE_FORMAT,
                "party": self.party,
                "signing": self.signing.private_bytes_raw().hex(),
                "agreement": self.agreement.private_bytes_raw().hex(),
            }
        ).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ParameterError(f"key file must not exist already; got {path}") from None
        except OSError as exc:
            raise ParameterError(
                f"key file must be writable; got {path} ({exc.strerror})"
            ) from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PartyKeys:
        """Read a key file; refuses one that group or others may read."""
        path = Path(path)
        try:
            mode = path.stat().st_mode & 0o777
            raw = path.read_bytes()
        except OSError as exc:
            raise ParameterError(
                f"key file must be readable; got {path} ({exc.strerror})"
            ) from None
        if mode & 0o077:
            raise ParameterError(f"key file permissions must be 0600; got {mode:04o} on {path}")
        try:
            data = json.loads(raw)
            if data.get("format") != KEY_FILE_FORMAT:
                raise ValueError("format")
            return cls(
                str(data["party"]),
                Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["signing"])),
                X25519PrivateKey.from_private_bytes(bytes.fromhex(data["agreement"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DecodeError(f"key file must be a {KEY_FILE_FORMAT} file; got {path}") from None

    def __repr__(self) -> str:
        return f"PartyKeys(party={self.party!r}, fingerprint={self.public.fingerprint})"


class Roster(Mapping[str, PublicIdentity]):
    """The public keys of every party of a federation, keyed by party id (immutable)."""

    def __init__(self, identities: Iterable[PublicIdentity]) -> None:
        entries: dict[str, PublicIdentity] = {}
        for identity in identities:
            if identity.party in entries:
                raise ParameterError(f"roster parties must be distinct; got {identity.party} twice")
            entries[identity.party] = identity
        self._entries = dict(sorted(entries.items()))

    def __getitem__(self, party: str) -> PublicIdentity:
        return self._entries[party]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def of_kind(self, kind: str) -> tuple[str, ...]:
        """Party ids of one kind (``"client"`` or ``"holder"``), sorted."""
        return tuple(p for p in self._entries if p.split("/", 1)[0] == kind)

    def signing_keys(self, parties: Iterable[str] | None = None) -> dict[str, bytes]:
        chosen = self._entries if parties is None else {p: self[p] for p in parties}
        return {p: chosen[p].signing for p in chosen}

    @property
    def digest(self) -> bytes:
        """SHA-256 over the canonical JSON: binds protocol transcripts to this roster."""
        return hashlib.sha256(self.to_bytes()).digest()

    def to_bytes(self) -> bytes:
        body = {"format": ROSTER_FORMAT, "parties": [e.to_json() for e in self._entries.values()]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Roster:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError("roster must be JSON") from None
        if not isinstance(data, dict) or data.get("format") != ROSTER_FORMAT:
            raise DecodeError(f"roster format must be {ROSTER_FORMAT}")
        parties = data.get("parties")
        if not isinstance(parties, list):
            raise DecodeError("roster must list its parties")
        return cls(PublicIdentity.from_json(p) for p in parties)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        try:
            path.write_bytes(self.to_bytes())
        except OSError as exc:
            raise ParameterError(
                f"roster file must be writable; got {path} ({exc.strerror})"
            ) from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Roster:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ParameterError(
                f"roster file must be readable; got {path} ({exc.strerror})"
            ) from None
        return cls.from_bytes(raw)

    def __repr__(self) -> str:
        return f"Roster({len(self)} parties, digest={self.digest.hex()[:16]})"


def simulated_identities(
    parties: Iterable[str], *, rng: Csprng
) -> tuple[dict[str, PartyKeys], Roster]:
    """Keys for every party of an in-process simulation, and their roster.

    Each party's keys come from its own fork of ``rng``; a deployment instead runs
    ``secagg keys`` once per party on that party's machine.
    """
    keys = {p: PartyKeys.generate(p, rng=rng.fork(f"identity/{p}")) for p in parties}
    return keys, Roster(k.public for k in keys.values())
