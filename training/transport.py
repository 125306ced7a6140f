"""In-process transport: routes a session's messages through the real wire codec.

Every message is encoded to bytes and decoded again before delivery, so roles
never share Python objects and byte counts are those of the real wire format.
The transport also plays the clock: when no message is in flight, the current
phase's deadline has passed and the coordinator is told to :meth:`advance`.

Dropout simulation: ``dropouts[party] = k`` makes ``party`` fall silent from
phase ``k`` on (``0`` = it never starts). Messages it sent before are still
delivered; messages addressed to it afterwards are discarded.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping

import numpy as np

from secagg.errors import ParameterError, ProtocolAbort
from secagg.protocol import PartyId, RoundSession, Session
from secagg.wire import DEFAULT_MAX_MESSAGE_BYTES, Message, decode, encode

MAX_PHASES = 64


def role_kind(party: PartyId) -> str:
    """``"server"``, ``"client"`` or ``"holder"`` from a party id."""
    return party.split("/", 1)[0]


@dataclasses.dataclass
class PhaseStats:
    """One deadline window, named after the coordinator's phase while it was open."""

    name: str
    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(float)
    )
    bytes_sent: dict[str, int] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(int)
    )


@dataclasses.dataclass
class TrafficReport:
    """What one session cost: bytes on the wire and CPU seconds, per party."""

    bytes_sent: dict[PartyId, int] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(int)
    )
    bytes_received: dict[PartyId, int] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(int)
    )
    seconds: dict[PartyId, float] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(float)
    )
    windows: list[PhaseStats] = dataclasses.field(default_factory=list)
    messages: int = 0
    phases: int = 0
    silenced: tuple[PartyId, ...] = ()

    def seconds_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for party, secs in self.seconds.items():
            out[role_kind(party)] += secs
        return dict(out)

    def mean_bytes(self, kind: str, *, sent: bool) -> float:
        table = self.bytes_sent if sent else self.bytes_received
        values = [v for p, v in table.items() if role_kind(p) == kind]
        return float(np.mean(values)) if values else 0.0


class InProcessTransport:
    """Runs sessions in one process; the reference transport for simulation and tests."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes

    def run(
        self,
        session: Session,
        *,
        inputs: Mapping[PartyId, np.ndarray] | None = None,
        dropouts: Mapping[PartyId, int] | None = None,
        report: TrafficReport | None = None,
    ) -> TrafficReport:
        """Drive ``session`` until its coordinator is done.

        Args:
            session: the roles of one protocol run.
            inputs: each client's vector (round sessions only).
            dropouts: party → the phase from which it is silent.
            report: an empty report to fill in (and return); pass one to keep the
                cost of a session that aborts with an exception.
        """
        inputs = inputs or {}
        silence_at = dict(dropouts or {})
        if inputs and not isinstance(session, RoundSession):
            raise ParameterError("inputs must only be given to a round session")
        report = report if report is not None else TrafficReport()
        phase = 0

        def alive(party: PartyId) -> bool:
            return silence_at.get(party, MAX_PHASES + 1) > phase

        queue: collections.deque[Message] = collections.deque()
        coordinator = session.coordinator
        report.windows.append(PhaseStats(coordinator.phase.name))
        queue.extend(self._timed(report, coordinator.party, coordinator.start))
        if isinstance(session, RoundSession):
            for party, vector in inputs.items():
                client = session.clients.get(party)
                if client is None:
                    raise ParameterError(f"inputs must be for the round's clients; got {party}")
                if alive(party):
                    queue.extend(
                        self._timed(report, party, lambda c=client, v=vector: c.protect(v))
                    )
        while True:
            while queue:
                self._deliver(session, queue.popleft(), queue, report, alive)
            if coordinator.done:
                break
            phase += 1
            if phase > MAX_PHASES:
                raise ProtocolAbort(f"session must finish within {MAX_PHASES} phases")
            window = PhaseStats("")
            report.windows.append(window)
            queue.extend(self._timed(report, coordinator.party, coordinator.advance))
            window.name = coordinator.phase.name  # the phase this window's traffic belongs to
        report.phases = phase
        report.silenced = tuple(sorted(p for p in silence_at if not alive(p)))
        return report

    def _deliver(
        self,
        session: Session,
        msg: Message,
        queue: collections.deque[Message],
        report: TrafficReport,
        alive: object,
    ) -> None:
        if not (callable(alive) and alive(msg.sender) and alive(msg.recipient)):
            return
        frame = encode(msg)
        report.bytes_sent[msg.sender] += len(frame)
        report.bytes_received[msg.recipient] += len(frame)
        report.windows[-1].bytes_sent[role_kind(msg.sender)] += len(frame)
        report.messages += 1
        role = session.role(msg.recipient)
        # a role may declare a tighter frame limit (e.g. a CKKS key holder's request size)
        limit = getattr(role, "max_message_bytes", self.max_message_bytes)
        limit = min(self.max_message_bytes, limit)
        received = decode(frame, max_size=limit)
        queue.extend(self._timed(report, msg.recipient, lambda: role.handle(received)))

    @staticmethod
    def _timed(report: TrafficReport, party: PartyId, step: object) -> list[Message]:
        start = time.perf_counter()
        out = step()  # type: ignore[operator]
        elapsed = time.perf_counter() - start
        report.seconds[party] += elapsed
        report.windows[-1].seconds[role_kind(party)] += elapsed
        return list(out)
