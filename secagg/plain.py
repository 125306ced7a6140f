"""``PlaintextSum``: the INSECURE reference scheme.

The server sees every client's vector in the clear. It exists as a drop-in
baseline for benchmarks and tests: it speaks the same roles, phases and
message machinery as the secure schemes, so any difference in cost or result
is the price of the protection. Never use it for real data.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    ParameterError,
    UnexpectedPhaseError,
)
from secagg.identity import PartyKeys, simulated_identities
from secagg.protocol import (
    SERVER,
    Aggregate,
    AggregationServer,
    ClientRole,
    PartyId,
    RoundSession,
    Scheme,
    check_round,
    check_vector,
)
from secagg.rand import Csprng
from secagg.schemes import AggregationConfig
from secagg.wire import Message, register


@register(0x0101)
@dataclasses.dataclass(frozen=True, kw_only=True)
class PlainUpdate(Message):
    """A client's update, in the clear (float64)."""

    vector: np.ndarray

    def __post_init__(self) -> None:
        if self.vector.ndim != 1 or self.vector.dtype != np.float64:
            raise DecodeError("PlainUpdate.vector must be a 1-D float64 array")


BROADCAST: PartyId = "*"  # recipient of a public broadcast (round parameters)


@register(0x0102)
@dataclasses.dataclass(frozen=True, kw_only=True)
class PlainRoundParams(Message):
    """Everything public a party needs for one plaintext round (the server broadcasts it)."""

    cohort: tuple[str, ...]
    dim: int
    min_clients: int

    def __post_init__(self) -> None:
        if self.dim < 1 or self.min_clients < 1:
            raise DecodeError("PlainRoundParams must have dim ≥ 1 and min_clients ≥ 1")
        if len(set(self.cohort)) != len(self.cohort) or SERVER in self.cohort:
            raise DecodeError("PlainRoundParams.cohort must be distinct client ids")


class ClientPhase(enum.Enum):
    READY = enum.auto()
    SENT = enum.auto()


class ServerPhase(enum.Enum):
    COLLECT = enum.auto()
    DONE = enum.auto()


class PlainClient(ClientRole):
    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ClientPhase.READY: (),
        ClientPhase.SENT: (),
    }

    def __init__(self, party: PartyId, session: bytes, round_index: int, dim: int) -> None:
        super().__init__(party, ClientPhase.READY)
        self._session = session
        self._round = round_index
        self._dim = dim

    def protect(self, vector: np.ndarray) -> list[Message]:
        if self.phase is not ClientPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must protect once per round")
        values = check_vector(vector, self._dim)
        self.phase = ClientPhase.SENT
        return [
            PlainUpdate(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=SERVER,
                vector=values.copy(),
            )
        ]

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)  # the reference client accepts nothing: always raises
        return []


class PlainServer(AggregationServer):
    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ServerPhase.COLLECT: (PlainUpdate,),
        ServerPhase.DONE: (),
    }

    def __init__(
        self,
        session: bytes,
        round_index: int,
        cohort: Sequence[PartyId],
        dim: int,
        min_clients: int,
    ) -> None:
        super().__init__(SERVER, ServerPhase.COLLECT)
        self._session = session
        self._round = round_index
        self._cohort = tuple(cohort)
        self._dim = dim
        self._min_clients = min_clients
        self._received: dict[PartyId, np.ndarray] = {}
        self._result: Aggregate | None = None

    def start(self) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if not isinstance(msg, PlainUpdate):  # narrowed by expect(); keeps mypy honest
            return []
        check_round(msg, self._session, self._round)
        if msg.sender not in self._cohort:
            raise InconsistentViewError(f"sender must be in the round's cohort; got {msg.sender}")
        if msg.sender in self._received:
            raise InconsistentViewError(f"{msg.sender} must submit once; got a duplicate")
        if msg.vector.shape != (self._dim,):
            raise DecodeError(f"update length must be {self._dim}; got {msg.vector.shape[0]}")
        self._check_values(msg.sender, msg.vector)
        self._received[msg.sender] = msg.vector
        return []

    def _check_values(self, sender: PartyId, vector: np.ndarray) -> None:
        """Refuse what the honest client refuses, and any entry whose sum could overflow:
        one NaN/inf/1e308 entry would otherwise be the released sum."""
        if not np.all(np.isfinite(vector)):
            raise DecodeError(f"update of {sender} must be finite; got NaN or inf")
        # the sum of the whole cohort at this magnitude stays finite in float64
        limit = float(np.finfo(np.float64).max) / (2 * max(len(self._cohort), 1))
        peak = float(np.max(np.abs(vector))) if vector.size else 0.0
        if peak > limit:
            raise DecodeError(f"update of {sender} must satisfy |x| ≤ {limit:.3g}; got {peak:.3g}")

    def advance(self) -> list[Message]:
        if self.phase is not ServerPhase.COLLECT:
            raise UnexpectedPhaseError(f"server in phase {self.phase.name} has no deadline")
        self.phase = ServerPhase.DONE
        if len(self._received) < self._min_clients:
            raise InsufficientParticipantsError(
                f"contributors must be at least {self._min_clients}; got {len(self._received)}"
            )
        contributors = tuple(p for p in self._cohort if p in self._received)
        total = np.zeros(self._dim, dtype=np.float64)
        for party in contributors:
            total += self._received[party]
        dropped = tuple(p for p in self._cohort if p not in self._received)
        self._result = Aggregate(total, contributors, dropped, 0.0)
        return []

    @property
    def done(self) -> bool:
        return self.phase is ServerPhase.DONE

    def finalize(self) -> Aggregate:
        if self._result is None:
            raise UnexpectedPhaseError("the round has not produced an aggregate")
        return self._result


class PlaintextSum(Scheme):
    """INSECURE reference: the server sums plaintext updates. Baseline only."""

    name = "plain"
    insecure = True

    def __init__(self, *, min_clients: int = 1) -> None:
        if min_clients < 1:
            raise ParameterError(f"min_clients must be ≥ 1; got {min_clients}")
        self.min_clients = min_clients

    @classmethod
    def from_config(cls, config: AggregationConfig) -> PlaintextSum:
        return cls(min_clients=1)

    def round_parameters(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> PlainRoundParams:
        """The round's public parameters: a fresh session id, the cohort and the dimension."""
        if dim < 1:
            raise ParameterError(f"dim must be ≥ 1; got {dim}")
        if len(set(cohort)) != len(cohort) or SERVER in cohort:
            raise ParameterError("cohort must be distinct client ids")
        return PlainRoundParams(
            session=rng.random_bytes(16),
            round=round_index,
            sender=SERVER,
            recipient=BROADCAST,
            cohort=tuple(cohort),
            dim=dim,
            min_clients=self.min_clients,
        )

    @staticmethod
    def server_role(params: PlainRoundParams) -> PlainServer:
        """The server of one round, from public parameters only."""
        return PlainServer(
            params.session, params.round, params.cohort, params.dim, params.min_clients
        )

    @staticmethod
    def client_role(
        party: PartyId, params: PlainRoundParams, keys: PartyKeys, *, rng: Csprng
    ) -> PlainClient:
        """One client's role, built on its own machine (the reference uses no key)."""
        if party not in params.cohort:
            raise ParameterError(f"party must be in the round's cohort; got {party}")
        if keys.party != party:
            raise ParameterError(f"keys must belong to {party}; got keys of {keys.party}")
        return PlainClient(party, params.session, params.round, params.dim)

    def open_round(
        self,
        round_index: int,
        cohort: Sequence[PartyId],
        dim: int,
        *,
        rng: Csprng,
        keys: dict[PartyId, PartyKeys] | None = None,
    ) -> RoundSession:
        """In-process simulation: every party built by its own party-local constructor."""
        params = self.round_parameters(round_index, cohort, dim, rng=rng)
        if keys is None:
            keys, _ = simulated_identities(cohort, rng=rng.fork("identities"))
        clients: dict[PartyId, ClientRole] = {
            p: self.client_role(p, params, keys[p], rng=rng.fork(f"client/{p}")) for p in cohort
        }
        return RoundSession(
            coordinator=self.server_role(params),
            participants=dict(clients),
            clients=clients,
            phases=1,
        )
