"""Federation setup: the committee fixes the CRS seed; the server only relays.

Stages (one deadline each): open → seed commits → seed reveals → endorsements.
Every holder commits to a 32-byte contribution before any is revealed, so no
holder (and not the server, which contributes nothing) can choose the seed; the
seed is a hash of all contributions. Each holder then signs (federation id,
roster digest, seed, parameter digest): the :class:`CrsCertificate` that every
client verifies against its own roster before it encrypts. A silent holder
aborts the setup with :class:`InsufficientParticipantsError` (re-run it).
Nothing secret is exchanged: holders keep no long-lived secret but their
identity keys.
"""

from __future__ import annotations

import dataclasses
import enum

from secagg import channels
from secagg.ckks import transcript
from secagg.ckks.context import CkksEngine
from secagg.ckks.messages import CeremonyOpen, CrsEndorsement, Relay, SeedCommit, SeedReveal
from secagg.errors import (
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    UnexpectedPhaseError,
)
from secagg.identity import Roster
from secagg.protocol import SERVER, Coordinator, PartyId
from secagg.wire import Message, encode


class CeremonyPhase(enum.Enum):
    SEED_COMMIT = enum.auto()
    SEED_REVEAL = enum.auto()
    ENDORSE = enum.auto()
    DONE = enum.auto()


_NEXT = {
    CeremonyPhase.SEED_COMMIT: CeremonyPhase.SEED_REVEAL,
    CeremonyPhase.SEED_REVEAL: CeremonyPhase.ENDORSE,
    CeremonyPhase.ENDORSE: CeremonyPhase.DONE,
}
STAGE_COMMITS = 1
STAGE_REVEALS = 2


@dataclasses.dataclass(frozen=True)
class CrsCertificate:
    """The committee-fixed CRS seed and every holder's endorsement (committee order)."""

    federation: bytes
    seed: bytes
    endorsements: tuple[bytes, ...]


class CeremonyServer(Coordinator):
    """Relays the seed ceremony between holders; ends with the CRS certificate."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        CeremonyPhase.SEED_COMMIT: (SeedCommit,),
        CeremonyPhase.SEED_REVEAL: (SeedReveal,),
        CeremonyPhase.ENDORSE: (CrsEndorsement,),
        CeremonyPhase.DONE: (),
    }

    def __init__(self, engine: CkksEngine, federation: bytes, roster: Roster) -> None:
        super().__init__(SERVER, CeremonyPhase.SEED_COMMIT)
        self._engine = engine
        self._federation = federation
        self._roster = roster
        self._holders = roster.of_kind("holder")
        self._inbox: dict[PartyId, Message] = {}
        self._reveals: dict[PartyId, bytes] = {}
        self.certificate: CrsCertificate | None = None

    def start(self) -> list[Message]:
        return [
            CeremonyOpen(
                session=self._federation,
                round=0,
                sender=SERVER,
                recipient=h,
                params_digest=self._engine.params_digest,
                roster_digest=self._roster.digest,
            )
            for h in self._holders
        ]

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if msg.session != self._federation or msg.sender not in self._holders:
            raise InconsistentViewError(
                f"ceremony message must come from the committee; got {msg.sender}"
            )
        transcript.verify_message(msg, self._roster[msg.sender].signing)
        if msg.sender in self._inbox:
            raise InconsistentViewError(f"{msg.sender} must send one {type(msg).__name__}")
        self._inbox[msg.sender] = msg
        return []

    def advance(self) -> list[Message]:
        phase = self.phase
        if phase is CeremonyPhase.DONE:
            raise UnexpectedPhaseError("the ceremony is over")
        missing = [h for h in self._holders if h not in self._inbox]
        if missing:
            self.phase = CeremonyPhase.DONE
            raise InsufficientParticipantsError(
                f"every key holder must take part in the ceremony; missing {len(missing)}"
            )
        inbox, self._inbox = self._inbox, {}
        self.phase = _NEXT[phase]  # type: ignore[index]
        if phase is CeremonyPhase.ENDORSE:
            self._finish(inbox)
            return []
        if phase is CeremonyPhase.SEED_REVEAL:
            self._reveals = {
                h: m.contribution for h, m in inbox.items() if isinstance(m, SeedReveal)
            }
        stage = STAGE_COMMITS if phase is CeremonyPhase.SEED_COMMIT else STAGE_REVEALS
        frames = tuple(encode(inbox[h]) for h in self._holders)
        return [
            Relay(
                session=self._federation,
                round=0,
                sender=SERVER,
                recipient=h,
                stage=stage,
                frames=frames,
            )
            for h in self._holders
        ]

    def _finish(self, inbox: dict[PartyId, Message]) -> None:
        seed = transcript.crs_seed(self._federation, [self._reveals[h] for h in self._holders])
        payload = transcript.crs_payload(
            self._federation, self._roster.digest, seed, self._engine.params_digest
        )
        endorsements = []
        for h in self._holders:
            msg = inbox[h]
            if not isinstance(msg, CrsEndorsement) or msg.seed != seed:
                raise IntegrityError("CRS endorsement")
            verify_endorsement(self._roster, h, msg.endorsement, payload)
            endorsements.append(msg.endorsement)
        self.certificate = CrsCertificate(self._federation, seed, tuple(endorsements))

    @property
    def done(self) -> bool:
        return self.phase is CeremonyPhase.DONE


def verify_endorsement(roster: Roster, holder: PartyId, signature: bytes, payload: bytes) -> None:
    """Raises the opaque IntegrityError unless ``holder`` signed ``payload`` (roster key)."""
    channels.verify(roster[holder].signing, signature, transcript.CRS_PURPOSE, payload)
