"""``ThresholdCKKS``: one-shot, key-additive threshold CKKS aggregation.

Life cycle::

    scheme = ThresholdCKKS.from_config(AggregationConfig(max_clients=10), roster=roster)
    # once per federation: the committee fixes the CRS (run it on a transport)
    ceremony = scheme.ceremony_server(rng=rng)                    # server side
    holder = scheme.holder_role(keys, rng=rng)                    # on each holder's machine
    # every round
    params = scheme.round_parameters(r, cohort, dim, rng=rng)     # server; broadcast it
    server = scheme.server_role(params)
    client = scheme.client_role(party, params, keys, rng=rng)     # on each client's machine

``setup``/``open_round`` are the in-process simulation built on exactly these
constructors (with simulated identities when no roster was given).
"""

from __future__ import annotations

from collections.abc import Sequence

from secagg.ckks.aggregation import CkksAggregator, CkksClient, broadcast_params
from secagg.ckks.ceremony import CeremonyServer, CrsCertificate
from secagg.ckks.context import CkksEngine
from secagg.ckks.holder import KeyHolder, Persist
from secagg.ckks.messages import CkksRoundParams
from secagg.ckks.params import PRESETS, SUM_N4096, CkksParameters, Preset, smallest_scale_bits
from secagg.ckks.seal_bridge import rns_primes
from secagg.errors import DecodeError, ParameterError, UnexpectedPhaseError
from secagg.identity import PartyKeys, Roster, simulated_identities
from secagg.protocol import ClientRole, PartyId, RoundSession, Scheme, Session, client_id, holder_id
from secagg.rand import Csprng
from secagg.schemes import AggregationConfig
from secagg.wire import decode, encode

DEFAULT_MIN_FRACTION = 0.5
DEFAULT_MIN_CLIENTS = 3


MAX_ROUND = (1 << 63) - 1


def default_threshold(committee: int, corrupt_holders: int = 0) -> int:
    """⌈(n + c + 1)/2⌉: the smallest t with which c corrupt holders cannot open two sets.

    3-of-5 for c = 0 (the smallest strict majority); 7-of-9 for c = 4.
    """
    return (committee + corrupt_holders + 2) // 2


class ThresholdCKKS(Scheme):
    """Threshold CKKS secure aggregation over a committee of n key holders (t-of-n, t > n/2).

    Args:
        committee, threshold: n holders, t of whom open a round
            (default ⌈(n + corrupt_holders + 1)/2⌉).
        corrupt_holders: c, key holders that may collude with a malicious server
            (default 0: the default 3-of-5 committee assumes an honest-but-curious
            server or no holder on its side). Needs 2t ≥ n + c + 1.
        max_clients, value_bound, precision: the error/overflow budget (see params).
        preset, scale_bits: ring and primes; Δ defaults to the smallest meeting precision.
        min_fraction, min_clients: the floor on an opened set, max(min_clients,
            ⌈min_fraction·|cohort|⌉); defaults ½ and min(3, max_clients). min_clients
            (≥ 2) also bounds the cohort: every party refuses a smaller one.
        min_honest: client-level DP's h — the floor is raised to at least h, so the
            protocol itself refuses to open a sum of fewer than h contributors.
        roster: the out-of-band public roster (holders and clients). ``None``: the
            simulation helper :meth:`setup` creates simulated identities.
    """

    name = "ckks"
    insecure = False

    def __init__(
        self,
        *,
        committee: int = 5,
        threshold: int | None = None,
        max_clients: int,
        value_bound: float = 1.0,
        precision: float = 1e-5,
        preset: Preset | str = SUM_N4096,
        scale_bits: int | None = None,
        min_fraction: float = DEFAULT_MIN_FRACTION,
        min_clients: int | None = None,
        min_honest: int | None = None,
        corrupt_holders: int = 0,
        roster: Roster | None = None,
    ) -> None:
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ParameterError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
            preset = PRESETS[preset]
        if min_honest is not None and not 1 <= min_honest <= max_clients:
            raise ParameterError(f"min_honest must be in [1, max_clients]; got {min_honest}")
        floor = min(max_clients, DEFAULT_MIN_CLIENTS) if min_clients is None else min_clients
        floor = max(floor, min_honest or 1)
        if scale_bits is None:
            scale_bits = smallest_scale_bits(
                preset, max_clients=max_clients, value_bound=value_bound, precision=precision
            )
        self.params = CkksParameters(
            preset=preset,
            primes=rns_primes(preset),
            committee=committee,
            threshold=(
                default_threshold(committee, corrupt_holders) if threshold is None else threshold
            ),
            corrupt_holders=corrupt_holders,
            max_clients=max_clients,
            value_bound=value_bound,
            precision=precision,
            scale_bits=scale_bits,
            min_fraction=min_fraction,
            min_clients=floor,
        )
        self.insecure = preset.insecure
        self.engine = CkksEngine(self.params)
        self.roster = roster
        if roster is not None:
            self._check_roster(roster)
        self.certificate: CrsCertificate | None = None
        self._ceremony: CeremonyServer | None = None
        # simulation only: every party's keys and the persistent holder roles
        self._keys: dict[PartyId, PartyKeys] = {}
        self.holders: dict[PartyId, KeyHolder] = {}

    @classmethod
    def from_config(cls, config: AggregationConfig) -> ThresholdCKKS:
        return cls(
            committee=config.committee,
            threshold=config.threshold,
            max_clients=config.max_clients,
            value_bound=config.value_bound,
            precision=config.precision,
            min_honest=config.min_honest,
            corrupt_holders=config.corrupt_holders,
        )

    def _check_roster(self, roster: Roster) -> None:
        if len(roster.of_kind("holder")) != self.params.committee:
            raise ParameterError(
                f"roster must list committee = {self.params.committee} holders; "
                f"got {len(roster.of_kind('holder'))}"
            )

    def _require_roster(self) -> Roster:
        if self.roster is None:
            raise UnexpectedPhaseError("a roster must be given (or setup() run) first")
        return self.roster

    # -- per-party constructors -------------------------------------------------------

    def ceremony_server(self, *, rng: Csprng) -> CeremonyServer:
        """The server side of the CRS ceremony (public material only)."""
        self._ceremony = CeremonyServer(self.engine, rng.random_bytes(16), self._require_roster())
        self.certificate = None
        return self._ceremony

    def holder_role(
        self,
        keys: PartyKeys,
        *,
        rng: Csprng,
        spent_state: bytes | None = None,
        persist: Persist | None = None,
    ) -> KeyHolder:
        """A key holder from its own keys and the public parameters (lives for the federation).

        A deployed holder passes ``persist`` (a durable write of its spent-round state,
        called before every share release) and, after a restart, ``spent_state``.
        """
        return KeyHolder(
            self.engine,
            self._require_roster(),
            keys,
            rng=rng,
            spent_state=spent_state,
            persist=persist,
        )

    def round_parameters(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> CkksRoundParams:
        """The server's broadcast for one round (needs the CRS certificate of the setup)."""
        if not isinstance(round_index, int) or not 0 <= round_index <= MAX_ROUND:
            raise ParameterError(f"round_index must be in [0, 2^63); got {round_index!r}")
        roster = self._require_roster()
        cert = self._certificate()
        self.engine.check_dim(dim)
        cohort = tuple(cohort)
        clients = set(roster.of_kind("client"))
        if len(set(cohort)) != len(cohort) or not set(cohort) <= clients:
            raise ParameterError("cohort must be distinct client ids of the roster")
        if not self.params.min_clients <= len(cohort) <= self.params.max_clients:
            raise ParameterError(
                f"cohort must have between min_clients = {self.params.min_clients} and "
                f"max_clients = {self.params.max_clients} clients; got {len(cohort)}"
            )
        return broadcast_params(
            session=rng.random_bytes(16),
            round=round_index,
            params_digest=self.engine.params_digest,
            roster_digest=roster.digest,
            federation=cert.federation,
            crs_seed=cert.seed,
            endorsements=cert.endorsements,
            cohort=cohort,
            dim=dim,
        )

    def server_role(self, params: CkksRoundParams) -> CkksAggregator:
        return CkksAggregator(self.engine, self._require_roster(), params)

    def client_role(
        self, party: PartyId, params: CkksRoundParams, keys: PartyKeys, *, rng: Csprng
    ) -> CkksClient:
        """A client from its own keys; refuses parameters whose CRS the committee did not sign."""
        return CkksClient(party, self.engine, self._require_roster(), params, keys, rng=rng)

    def _certificate(self) -> CrsCertificate:
        if self.certificate is None and self._ceremony is not None:
            self.certificate = self._ceremony.certificate
        if self.certificate is None:
            raise UnexpectedPhaseError("the CRS ceremony must complete before a round opens")
        return self.certificate

    # -- in-process simulation --------------------------------------------------------

    def setup(self, *, rng: Csprng) -> Session:
        """The CRS ceremony among n holders, the server as relay. Run it on a transport.

        Without a roster, simulated identities are made for holder/0..n−1 and
        client/0..max_clients−1 (a deployment runs ``secagg keys`` per party instead).
        """
        if self.roster is None:
            parties = [holder_id(i) for i in range(self.params.committee)]
            parties += [client_id(i) for i in range(self.params.max_clients)]
            self._keys, self.roster = simulated_identities(parties, rng=rng.fork("identities"))
        roster = self._require_roster()
        self.holders = {
            h: self.holder_role(self._keys[h], rng=rng.fork(f"ckks/holder/{h}"))
            for h in roster.of_kind("holder")
            if h in self._keys
        }
        server = self.ceremony_server(rng=rng.fork("ckks/federation"))
        return Session(coordinator=server, participants=dict(self.holders))

    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        params = self.round_parameters(round_index, cohort, dim, rng=rng.fork("params"))
        server = self.server_role(_over_the_wire(params))
        missing = [p for p in params.cohort if p not in self._keys]
        if missing:
            raise ParameterError(f"simulated clients must have keys; got {len(missing)} without")
        clients: dict[PartyId, ClientRole] = {
            p: self.client_role(p, _over_the_wire(params), self._keys[p], rng=rng.fork(p))
            for p in params.cohort
        }
        participants = {**clients, **self.holders}
        return RoundSession(
            coordinator=server, participants=participants, clients=clients, phases=1
        )

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"scheme": self.name, "insecure": self.insecure}
        out.update(self.params.describe())
        return out


def _over_the_wire(params: CkksRoundParams) -> CkksRoundParams:
    """What a party receives: a decoded copy of the broadcast (no shared objects)."""
    received = decode(encode(params))
    if not isinstance(received, CkksRoundParams):
        raise DecodeError("round parameters must decode as CkksRoundParams")
    return received
