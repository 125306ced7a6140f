"""``PairwiseMasking``: the ``masking`` scheme (SecAgg with SecAgg+'s sparse graph)."""

from __future__ import annotations

from collections.abc import Sequence

from secagg.errors import (
    InsufficientParticipantsError,
    IntegrityError,
    ParameterError,
    ShareReuseError,
)
from secagg.identity import PartyKeys, Roster, simulated_identities
from secagg.masking.client import MaskingClient
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.graph import default_degree
from secagg.masking.params import (
    MIN_COHORT,
    SESSION_BYTES,
    RoundParams,
    default_threshold,
    validate_threshold,
)
from secagg.masking.server import MaskingServer
from secagg.masking.sharing import PRIME
from secagg.protocol import SERVER, ClientRole, PartyId, RoundSession, Scheme
from secagg.rand import Csprng
from secagg.schemes import AggregationConfig

GRAPHS = ("full", "sparse")
CLIENT_PHASES = 5  # advertise, share keys, masked input, consistency, unmask


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
        min_honest: client-level DP's floor h: no share leaves a client, and the server
            unmasks nothing, when fewer than h clients survive (``None`` = t).
        roster: the out-of-band public roster of client identities (deployment);
            ``None`` in simulation, where :meth:`open_round` makes fresh identities.
        min_cohort: the smallest cohort a round may have (≥ 2).

    The same arguments are the *client's* local policy: on a client's machine,
    :meth:`client_role` refuses round parameters (all chosen by the server) that ask for
    less than this configuration — a smaller threshold or cohort, a lower min_honest, a
    sparser graph, another encoding, or identities other than the client's own roster's.
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
        min_honest: int | None = None,
        roster: Roster | None = None,
        min_cohort: int = MIN_COHORT,
    ) -> None:
        if graph not in GRAPHS:
            raise ParameterError(f"graph must be one of {GRAPHS}; got {graph!r}")
        if max_clients < MIN_COHORT:
            raise ParameterError(
                f"max_clients must be ≥ {MIN_COHORT} (the sum of one client is its input); "
                f"got {max_clients}"
            )
        if not MIN_COHORT <= min_cohort <= max_clients:
            raise ParameterError(
                f"min_cohort must be in [{MIN_COHORT}, {max_clients}]; got {min_cohort}"
            )
        if threshold is not None and not 2 <= threshold <= max_clients:
            # t = 1: each client's own share rebuilds its self-mask seed
            raise ParameterError(f"threshold must be in [2, {max_clients}]; got {threshold}")
        if degree is not None and (degree < 2 or degree % 2):
            raise ParameterError(f"degree must be an even integer ≥ 2; got {degree}")
        if min_honest is not None and not 1 <= min_honest <= max_clients:
            raise ParameterError(f"min_honest must be in [1, {max_clients}]; got {min_honest}")
        if min_honest is not None and graph == "sparse":
            # a server can cut the sparse graph and learn each part's sum (≥ t′ clients, not h)
            raise ParameterError(
                "graph must be 'full' when min_honest is set (a sparse round can reveal sums "
                "of fewer than min_honest clients); got 'sparse'"
            )
        self.encoding = FixedPointEncoding.for_precision(
            value_bound=value_bound, max_clients=max_clients, precision=precision
        )
        self.max_clients = max_clients
        self.threshold = threshold
        self.graph = graph
        self.degree = degree
        self.min_honest = min_honest
        self.roster = roster
        self.min_cohort = min_cohort
        self._joined: set[tuple[bytes, PartyId]] = set()
        # fail at set-up, not in round 1, if t and k cannot agree for a full cohort
        validate_threshold(
            max_clients, self._threshold_for(max_clients), self._degree_for(max_clients)
        )

    @classmethod
    def from_config(cls, config: AggregationConfig) -> PairwiseMasking:
        return cls(
            max_clients=config.max_clients,
            value_bound=config.value_bound,
            precision=config.precision,
            threshold=config.threshold,
            graph=config.graph,
            # client-level DP's floor, once the shared config carries one
            min_honest=getattr(config, "min_honest", None),
        )

    def _threshold_for(self, n: int) -> int:
        return self.threshold if self.threshold is not None else default_threshold(n)

    def _degree_for(self, n: int) -> int:
        if self.graph == "full":
            return max(n - 1, 0)
        return min(self.degree or default_degree(n), max(n - 1, 0))

    def round_parameters(
        self,
        round_index: int,
        cohort: Sequence[PartyId],
        dim: int,
        *,
        rng: Csprng,
        roster: Roster | None = None,
    ) -> RoundParams:
        """The round's public parameters (the server broadcasts ``params.to_bytes()``).

        ``roster`` overrides the scheme's roster (the simulation helper passes its own).
        """
        members = tuple(cohort)
        roster = roster if roster is not None else self.roster
        if dim < 1:
            raise ParameterError(f"dim must be ≥ 1; got {dim}")
        if not 0 <= round_index < 2**63:
            raise ParameterError(f"round_index must be in [0, 2^63); got {round_index}")
        if len(set(members)) != len(members) or SERVER in members or not members:
            raise ParameterError("cohort must be a non-empty list of distinct client ids")
        if len(members) > self.max_clients:
            raise ParameterError(
                f"cohort size must be ≤ max_clients = {self.max_clients} (else the ring sum "
                f"could wrap); got {len(members)}"
            )
        if len(members) < self.min_cohort:
            raise InsufficientParticipantsError(
                f"cohort must have at least min_cohort = {self.min_cohort} clients; "
                f"got {len(members)}"
            )
        if roster is None or any(p not in roster for p in members):
            raise ParameterError("roster must list every cohort member's identity")
        threshold = self._threshold_for(len(members))
        if threshold > len(members):
            raise InsufficientParticipantsError(
                f"cohort must have at least threshold = {threshold} clients; got {len(members)}"
            )
        min_honest = max(threshold, self.min_honest or 0)
        if min_honest > len(members):
            raise InsufficientParticipantsError(
                f"cohort must have at least min_honest = {min_honest} clients; got {len(members)}"
            )
        degree = self._degree_for(len(members))
        local = validate_threshold(len(members), threshold, degree)
        return RoundParams(
            session=rng.random_bytes(SESSION_BYTES),
            round=round_index,
            cohort=members,
            threshold=threshold,
            local_threshold=local,
            degree=degree,
            min_honest=min_honest,
            encoding=self.encoding,
            dim=dim,
            identities=roster.signing_keys(members),
        )

    @staticmethod
    def server_role(params: RoundParams) -> MaskingServer:
        return MaskingServer(params)

    def client_role(
        self,
        party: PartyId,
        params: RoundParams,
        keys: PartyKeys,
        *,
        rng: Csprng,
        roster: Roster | None = None,
    ) -> MaskingClient:
        """One client's role, built from the server's parameters and the client's own keys,
        after checking those parameters against this scheme's configuration (the client's
        local policy) and its own roster (``roster`` overrides the scheme's, as in
        :meth:`round_parameters`).

        Raises:
            ParameterError: parameters weaker than the local policy, or not this client's.
            IntegrityError: identities other than the client's own roster's.
            ShareReuseError: a session this scheme object already built a role for.
        """
        if keys.party != party or not params.in_cohort(party):
            raise ParameterError(f"keys must belong to a cohort member; got {keys.party}")
        self.check_round(params, roster=roster if roster is not None else self.roster)
        if (params.session, party) in self._joined:
            raise ShareReuseError(f"{party} must join session {params.session.hex()} once")
        if keys.public.signing != params.identities[party]:
            raise ParameterError(f"keys of {party} must match the roster's identity key")
        self._joined.add((params.session, party))
        return MaskingClient(party, params, keys.signing, rng=rng)

    def check_round(self, params: RoundParams, *, roster: Roster | None) -> None:
        """What a client accepts of server-chosen round parameters.

        Security: everything in ``params`` comes from the server. A client takes part only
        if the round is at least as strong as its own configuration: cohort ≥ min_cohort,
        t ≥ its own threshold rule (> n/2, ≥ 2), min_honest ≥ its own h, the graph it was
        configured with (full, or sparse with at least its degree), its encoding, and
        every cohort member's identity exactly as its own roster file lists it.
        """
        n = len(params.cohort)
        if roster is None:
            raise ParameterError("roster must be the client's own roster file; got None")
        if n < self.min_cohort:
            raise ParameterError(f"cohort size must be ≥ min_cohort = {self.min_cohort}; got {n}")
        if params.threshold < self._threshold_for(n):
            raise ParameterError(
                f"threshold must be ≥ {self._threshold_for(n)} for a cohort of {n} "
                f"(this client's rule); got {params.threshold}"
            )
        if params.min_honest < (self.min_honest or 0):
            raise ParameterError(
                f"min_honest must be ≥ {self.min_honest} (this client's floor); "
                f"got {params.min_honest}"
            )
        if params.degree < self._degree_for(n):
            raise ParameterError(
                f"graph degree must be ≥ {self._degree_for(n)} ({self.graph} graph of {n}); "
                f"got {params.degree}"
            )
        if params.encoding != self.encoding:
            raise ParameterError(
                f"encoding must be this client's {self.encoding}; got {params.encoding}"
            )
        clients = set(roster.of_kind("client"))
        if not set(params.cohort) <= clients:
            raise ParameterError("cohort must be clients of this client's roster")
        if params.identities != roster.signing_keys(params.cohort):
            raise IntegrityError("cohort identities")

    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        """Simulation helper: fresh identities, then every role built party-locally."""
        keys, roster = simulated_identities(cohort, rng=rng.fork("identities"))
        params = self.round_parameters(round_index, cohort, dim, rng=rng, roster=roster)
        clients: dict[PartyId, ClientRole] = {
            p: self.client_role(
                p,
                RoundParams.from_bytes(params.to_bytes()),
                keys[p],
                rng=rng.fork(f"round/{p}"),
                roster=roster,
            )
            for p in params.cohort
        }
        return RoundSession(
            coordinator=self.server_role(params),
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
            "min_honest": self.min_honest if self.min_honest is not None else "threshold",
            "min_cohort": self.min_cohort,
            "prg": "AES-256-CTR keyed by HKDF-SHA256",
            "key_agreement": "X25519",
            "share_encryption": "AES-256-GCM",
            "signatures": "Ed25519",
            "shamir_prime": PRIME,
            "client_phases": CLIENT_PHASES,
            **self.encoding.describe(),
        }
