"""The key-ceremony coordinator: a relay that ends up knowing only the joint public key.

Stages (one deadline each): open → seed commits → seed reveals → public-key
share commits + Shamir deals → public-key share reveals → confirmations.
Every holder must take part in every stage; a silent holder aborts the
ceremony with :class:`InsufficientParticipantsError` (re-run it with a new
committee). The server sees signed commitments, revealed CRS contributions,
public-key shares and AEAD ciphertexts of the Shamir shares — nothing secret.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import numpy as np

from secagg.ckks import channels, transcript
from secagg.ckks.context import CkksEngine
from secagg.ckks.messages import (
    CeremonyOpen,
    KeyConfirm,
    KeyShareCommit,
    KeyShareReveal,
    Relay,
    SeedCommit,
    SeedReveal,
    ShareDeal,
)
from secagg.errors import (
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    UnexpectedPhaseError,
)
from secagg.protocol import SERVER, Coordinator, PartyId
from secagg.wire import Message, encode


class CeremonyPhase(enum.Enum):
    SEED_COMMIT = enum.auto()
    SEED_REVEAL = enum.auto()
    KEY_COMMIT = enum.auto()
    KEY_REVEAL = enum.auto()
    CONFIRM = enum.auto()
    DONE = enum.auto()


_NEXT = {
    CeremonyPhase.SEED_COMMIT: CeremonyPhase.SEED_REVEAL,
    CeremonyPhase.SEED_REVEAL: CeremonyPhase.KEY_COMMIT,
    CeremonyPhase.KEY_COMMIT: CeremonyPhase.KEY_REVEAL,
    CeremonyPhase.KEY_REVEAL: CeremonyPhase.CONFIRM,
    CeremonyPhase.CONFIRM: CeremonyPhase.DONE,
}
_STAGE = {
    CeremonyPhase.SEED_COMMIT: 1,
    CeremonyPhase.SEED_REVEAL: 2,
    CeremonyPhase.KEY_COMMIT: 3,
    CeremonyPhase.KEY_REVEAL: 4,
}


@dataclasses.dataclass(frozen=True)
class JointPublicKey:
    """The federation's public key (b = Σbᵢ, a) at the key level, and its digest."""

    b: np.ndarray
    a: np.ndarray
    digest: bytes


class CeremonyServer(Coordinator):
    """Relays the ceremony between holders; learns the joint public key at the end."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        CeremonyPhase.SEED_COMMIT: (SeedCommit,),
        CeremonyPhase.SEED_REVEAL: (SeedReveal,),
        CeremonyPhase.KEY_COMMIT: (KeyShareCommit, ShareDeal),
        CeremonyPhase.KEY_REVEAL: (KeyShareReveal,),
        CeremonyPhase.CONFIRM: (KeyConfirm,),
        CeremonyPhase.DONE: (),
    }

    def __init__(self, engine: CkksEngine, session: bytes, roster: Mapping[PartyId, bytes]) -> None:
        super().__init__(SERVER, CeremonyPhase.SEED_COMMIT)
        self._engine = engine
        self._session = session
        self._roster = dict(roster)
        self._holders = tuple(roster)
        self._inbox: list[Message] = []
        self._reveals: dict[PartyId, bytes] = {}
        self._key_reveals: dict[PartyId, bytes] = {}
        self.joint_key: JointPublicKey | None = None

    def start(self) -> list[Message]:
        return [
            CeremonyOpen(
                session=self._session,
                round=0,
                sender=SERVER,
                recipient=h,
                params_digest=self._engine.params_digest,
            )
            for h in self._holders
        ]

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if msg.session != self._session or msg.sender not in self._roster:
            raise InconsistentViewError(
                f"ceremony message must come from the roster; got {msg.sender}"
            )
        channels.verify(msg, self._roster)  # cheap, and keeps forgeries out of the relay
        if isinstance(msg, ShareDeal) and (
            msg.target not in self._roster or msg.target == msg.sender
        ):
            raise InconsistentViewError(
                f"share deal target must be another holder; got {msg.target}"
            )
        if any(
            type(m) is type(msg) and m.sender == msg.sender and _same_slot(m, msg)
            for m in self._inbox
        ):
            raise InconsistentViewError(
                f"{msg.sender} must send one {type(msg).__name__} per stage"
            )
        self._inbox.append(msg)
        return []

    def advance(self) -> list[Message]:
        phase = self.phase
        if phase is CeremonyPhase.DONE:
            raise UnexpectedPhaseError("the ceremony is over")
        self._require_everyone()
        inbox, self._inbox = self._inbox, []
        self.phase = _NEXT[phase]  # type: ignore[index]
        if phase is CeremonyPhase.CONFIRM:
            self._finish(inbox)
            return []
        if phase is CeremonyPhase.SEED_REVEAL:
            self._reveals = {m.sender: m.contribution for m in inbox if isinstance(m, SeedReveal)}
        if phase is CeremonyPhase.KEY_REVEAL:
            self._key_reveals = {
                m.sender: m.residues for m in inbox if isinstance(m, KeyShareReveal)
            }
        broadcast = [encode(m) for m in inbox if not isinstance(m, ShareDeal)]
        out: list[Message] = []
        for holder in self._holders:
            private = [encode(m) for m in inbox if isinstance(m, ShareDeal) and m.target == holder]
            out.append(
                Relay(
                    session=self._session,
                    round=0,
                    sender=SERVER,
                    recipient=holder,
                    stage=_STAGE[phase],  # type: ignore[index]
                    frames=tuple(broadcast + private),
                )
            )
        return out

    def _require_everyone(self) -> None:
        senders = {m.sender for m in self._inbox}
        missing = [h for h in self._holders if h not in senders]
        if missing:
            self.phase = CeremonyPhase.DONE
            raise InsufficientParticipantsError(
                f"every key holder must take part in the ceremony; missing {len(missing)}"
            )
        if self.phase is CeremonyPhase.KEY_COMMIT:
            deals = [m for m in self._inbox if isinstance(m, ShareDeal)]
            n = len(self._holders)
            if len(deals) != n * (n - 1):
                self.phase = CeremonyPhase.DONE
                raise InsufficientParticipantsError(
                    f"share deals must number n(n−1) = {n * (n - 1)}; got {len(deals)}"
                )

    def _finish(self, confirms: list[Message]) -> None:
        eng = self._engine
        seed = transcript.crs_seed(self._session, [self._reveals[h] for h in self._holders])
        joint_b = eng.sum_key_shares([eng.unpack_key(self._key_reveals[h]) for h in self._holders])
        digest = eng.key_digest(seed, joint_b)
        if any(not isinstance(m, KeyConfirm) or m.key_digest != digest for m in confirms):
            raise IntegrityError("joint key confirmation")
        self.joint_key = JointPublicKey(joint_b, eng.crs(seed), digest)

    @property
    def done(self) -> bool:
        return self.phase is CeremonyPhase.DONE


def _same_slot(a: Message, b: Message) -> bool:
    """Same type, same sender: a duplicate, unless they are deals to different targets."""
    if isinstance(a, ShareDeal) and isinstance(b, ShareDeal):
        return a.target == b.target
    return True
