"""``PairwiseMasking``: the ``masking`` scheme (SecAgg with SecAgg+'s sparse graph)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.errors import InsufficientParticipantsError, ParameterError
from secagg.masking import crypto
from secagg.masking.client import MaskingClient
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.graph import MaskingGraph, default_degree
from secagg.masking.params import RoundParams, default_threshold, validate_threshold
from secagg.masking.server import MaskingServer
from secagg.masking.sharing import PRIME
from secagg.protocol import SERVER, ClientRole, PartyId, RoundSession, Scheme
from secagg.rand import Csprng
from secagg.schemes import AggregationConfig

GRAPHS = ("full", "sparse")
CLIENT_PHASES = 5  # advertise, share keys, masked input, consistency, unmask


class IdentityRegistry:
    """The PKI the protocol assumes: each client's long-term Ed25519 identity key.

    In a deployment each client keeps its own private key and an authority
    certifies the public keys; in simulation this registry enrols clients and
    hands each role only its own private key plus everyone's public keys.

    Security: holds private identity keys (simulation only); never prints them.
    """

    def __init__(self) -> None:
        self._keys: dict[PartyId, Ed25519PrivateKey] = {}

    def enroll(self, party: PartyId, *, rng: Csprng) -> bytes:
        """Create ``party``'s identity key if it has none; return its public key."""
        if party not in self._keys:
            self._keys[party] = crypto.new_identity_key(rng=rng)
        return crypto.public_bytes(self._keys[party])

    def private_key(self, party: PartyId) -> Ed25519PrivateKey:
        return self._keys[party]

    def public_roster(self, parties: Sequence[PartyId]) -> dict[PartyId, bytes]:
        return {p: crypto.public_bytes(self._keys[p]) for p in parties}

    def __repr__(self) -> str:
        return f"IdentityRegistry({len(self._keys)} enrolled)"


class PairwiseMasking(Scheme):
    """Pairwise-mask secure aggregation with dropout recovery (Bonawitz et al. 2017),
    optionally over a sparse k-regular graph (Bell et al. 2020).

    Args:
        max_clients: largest cohort; fixes the ring so the sum cannot wrap.
        value_bound: clients' coordinates are clipped to [-value_bound, value_bound].
        precision: largest acceptable error per coordinate of the sum (max_clients summed).
        threshold: surviving clients needed at every phase; ``None`` = ⌊n/2⌋ + 1 of each
            round's cohort n. Must exceed n/2.
        graph: ``"full"`` or ``"sparse"``.
        degree: neighbours per client for ``"sparse"`` (even); ``None`` = 2⌈log2 n⌉.
    """

    name = "masking"
    insecure = False

    def __init__(
        self,
        *,
        max_clients: int,
        value_bound: float = 1.0,
        precision: float = 1e-5,
        threshold: int | None = None,
        graph: str = "full",
        degree: int | None = None,
    ) -> None:
        if graph not in GRAPHS:
            raise ParameterError(f"graph must be one of {GRAPHS}; got {graph!r}")
        if threshold is not None and not 1 <= threshold <= max_clients:
            raise ParameterError(f"threshold must be in [1, {max_clients}]; got {threshold}")
        if degree is not None and (degree < 2 or degree % 2):
            raise ParameterError(f"degree must be an even integer ≥ 2; got {degree}")
        self.encoding = FixedPointEncoding.for_precision(
            value_bound=value_bound, max_clients=max_clients, precision=precision
        )
        self.max_clients = max_clients
        self.threshold = threshold
        self.graph = graph
        self.degree = degree
        self.identities = IdentityRegistry()
        # fail at set-up, not in round 1, if t and k cannot agree for a full cohort
        validate_threshold(
            max_clients, self._threshold_for(max_clients), self._graph_for(max_clients, bytes(16))
        )

    @classmethod
    def from_config(cls, config: AggregationConfig) -> PairwiseMasking:
        return cls(
            max_clients=config.max_clients,
            value_bound=config.value_bound,
            precision=config.precision,
            threshold=config.threshold,
            graph=config.graph,
        )

    def _threshold_for(self, n: int) -> int:
        return self.threshold if self.threshold is not None else default_threshold(n)

    def _graph_for(self, n: int, session: bytes) -> MaskingGraph:
        if self.graph == "full":
            return MaskingGraph.complete(n)
        return MaskingGraph.harary(n, self.degree or default_degree(n), seed=session)

    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        members = tuple(cohort)
        if dim < 1:
            raise ParameterError(f"dim must be ≥ 1; got {dim}")
        if len(set(members)) != len(members) or SERVER in members or not members:
            raise ParameterError("cohort must be a non-empty list of distinct client ids")
        if len(members) > self.max_clients:
            raise ParameterError(
                f"cohort size must be ≤ max_clients = {self.max_clients} (else the ring sum "
                f"could wrap); got {len(members)}"
            )
        threshold = self._threshold_for(len(members))
        if threshold > len(members):
            raise InsufficientParticipantsError(
                f"cohort must have at least threshold = {threshold} clients; got {len(members)}"
            )
        session = rng.random_bytes(16)
        graph = self._graph_for(len(members), session)
        local = validate_threshold(len(members), threshold, graph)
        for party in members:
            self.identities.enroll(party, rng=rng.fork(f"identity/{party}"))
        params = RoundParams(
            session=session,
            round=round_index,
            cohort=members,
            threshold=threshold,
            local_threshold=local,
            graph=graph,
            encoding=self.encoding,
            dim=dim,
            identities=self.identities.public_roster(members),
        )
        clients: dict[PartyId, ClientRole] = {
            p: MaskingClient(p, params, self.identities.private_key(p), rng=rng.fork(f"round/{p}"))
            for p in members
        }
        return RoundSession(
            coordinator=MaskingServer(params),
            participants=dict(clients),
            clients=clients,
            phases=CLIENT_PHASES,
        )

    def describe(self) -> dict[str, object]:
        n = self.max_clients
        return {
            "scheme": self.name,
            "insecure": self.insecure,
            "graph": self.graph,
            "degree": (
                "n-1"
                if self.graph == "full"
                else (self.degree if self.degree is not None else "2*ceil(log2 n)")
            ),
            "threshold": self.threshold if self.threshold is not None else "floor(n/2)+1",
            "threshold_at_max_clients": self._threshold_for(n),
            "prg": "AES-256-CTR keyed by HKDF-SHA256",
            "key_agreement": "X25519",
            "share_encryption": "AES-256-GCM",
            "signatures": "Ed25519",
            "shamir_prime": PRIME,
            "client_phases": CLIENT_PHASES,
            **self.encoding.describe(),
        }
