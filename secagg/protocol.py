"""The uniform sans-IO face every aggregation scheme speaks.

A *session* is one protocol run (a key ceremony, or one aggregation round). It
has a coordinator (the server) and participants (clients, key holders). Roles
never do I/O: they take a :class:`~secagg.wire.Message` and return the
messages they want sent. A transport (``secagg_training.transport``) routes them, and
tells the coordinator when a phase's deadline has passed (:meth:`advance`):
whoever has not spoken by then is treated as dropped. Dropouts are therefore
a normal input, not an exception.

Scheme life cycle::

    scheme.setup(rng=...)                 -> Session | None   (key ceremony, once)
    scheme.open_round(index, cohort, dim) -> RoundSession     (once per round)
    client.protect(vector)                -> [Message]        (a client's entry point)
    role.handle(message)                  -> [Message]        (everyone, every phase)
    server.advance()                      -> [Message]        (phase deadline passed)
    server.finalize()                     -> Aggregate        (once the server is done)
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from secagg.errors import InconsistentViewError, ParameterError, UnexpectedPhaseError
from secagg.rand import Csprng
from secagg.wire import Message

PartyId = str
SERVER: PartyId = "server"


def client_id(index: int) -> PartyId:
    return f"client/{index}"


def holder_id(index: int) -> PartyId:
    return f"holder/{index}"


class Role(ABC):
    """A protocol participant with an explicit phase.

    Subclasses declare ``TRANSITIONS``: for each phase, the message types it
    accepts. :meth:`expect` enforces it, so an out-of-phase message raises
    :class:`UnexpectedPhaseError` before any state changes.
    """

    TRANSITIONS: Mapping[enum.Enum, tuple[type[Message], ...]] = {}

    def __init__(self, party: PartyId, phase: enum.Enum) -> None:
        self.party = party
        self.phase = phase

    def expect(self, msg: Message) -> None:
        accepted = self.TRANSITIONS.get(self.phase, ())
        if not isinstance(msg, accepted):
            raise UnexpectedPhaseError(
                f"{self.party} in phase {self.phase.name} must not receive "
                f"{type(msg).__name__}; got one from {msg.sender}"
            )
        if msg.recipient != self.party:
            raise UnexpectedPhaseError(
                f"message recipient must be {self.party}; got {msg.recipient}"
            )

    @abstractmethod
    def handle(self, msg: Message) -> list[Message]:
        """Consume one inbound message; return the outbound messages it causes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(party={self.party!r}, phase={self.phase.name})"


class Coordinator(Role):
    """The server side of a session: it owns the phase deadlines."""

    @abstractmethod
    def start(self) -> list[Message]:
        """Messages that open the session (may be empty)."""

    @abstractmethod
    def advance(self) -> list[Message]:
        """The current phase's deadline passed: close it with whoever answered."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True once the session has nothing left to do."""


class ClientRole(Role):
    """A data owner: enters a round by protecting its update vector."""

    @abstractmethod
    def protect(self, vector: np.ndarray) -> list[Message]:
        """Begin this round with ``vector`` (float, 1-D, the round's dimension)."""


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """What a round releases: the sum of the contributors' vectors, and nothing else.

    ``error_bound`` is the scheme's worst-case absolute error per coordinate
    against the exact float64 sum (0 for the plaintext reference).
    """

    vector: np.ndarray
    contributors: tuple[PartyId, ...]
    dropped: tuple[PartyId, ...]
    error_bound: float


class AggregationServer(Coordinator):
    """The coordinator of an aggregation round."""

    @abstractmethod
    def finalize(self) -> Aggregate:
        """The round's released aggregate; raises if the round aborted or is not done."""


@dataclasses.dataclass
class Session:
    """One protocol run: a coordinator plus participants, keyed by party id."""

    coordinator: Coordinator
    participants: dict[PartyId, Role]

    def role(self, party: PartyId) -> Role:
        if party == self.coordinator.party:
            return self.coordinator
        try:
            return self.participants[party]
        except KeyError:
            raise ParameterError(
                f"recipient must be a party of this session; got {party}"
            ) from None


@dataclasses.dataclass
class RoundSession(Session):
    """An aggregation round: the coordinator is the server, plus the round's clients."""

    coordinator: AggregationServer
    clients: dict[PartyId, ClientRole]
    phases: int  # how many client-facing phases a client can drop in (for dropout simulation)


class Scheme(ABC):
    """A secure-sum scheme: set up once, then open one session per round.

    ``insecure`` is True only for the plaintext reference.
    """

    name: str = ""
    insecure: bool = False

    def setup(self, *, rng: Csprng) -> Session | None:
        """The per-federation key ceremony, if the scheme has one."""
        return None

    @abstractmethod
    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        """Roles for one round over ``cohort`` summing ``dim``-dimensional vectors."""

    def describe(self) -> dict[str, object]:
        """Public parameters worth recording in a run's result (no secrets)."""
        return {"scheme": self.name, "insecure": self.insecure}


def check_round(msg: Message, session: bytes, round_index: int) -> None:
    """Refuse a message bound to another session or round (a replay or a mix-up)."""
    if msg.session != session or msg.round != round_index:
        raise InconsistentViewError(f"message from {msg.sender} belongs to another round")


def check_vector(vector: np.ndarray, dim: int, *, bound: float | None = None) -> np.ndarray:
    """Validate an update vector: 1-D, ``dim`` long, finite, optionally |x| ≤ bound."""
    if not isinstance(vector, np.ndarray) or vector.ndim != 1:
        raise ParameterError("vector must be a 1-D numpy array")
    if vector.shape[0] != dim:
        raise ParameterError(f"vector length must be {dim}; got {vector.shape[0]}")
    if not np.issubdtype(vector.dtype, np.floating) and not np.issubdtype(vector.dtype, np.integer):
        raise ParameterError(f"vector dtype must be numeric; got {vector.dtype}")
    out = vector.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        raise ParameterError("vector must be finite (no NaN or inf)")
    if bound is not None and out.size and float(np.max(np.abs(out))) > bound:
        raise ParameterError(f"vector entries must satisfy |x| ≤ {bound}")
    return out
