"""``ThresholdCKKS``: the server sums ciphertexts it cannot decrypt; any t of n holders can.

Life cycle::

    scheme = ThresholdCKKS.from_config(AggregationConfig(max_clients=10))
    ceremony = scheme.setup(rng=rng)          # once per federation: run it on a transport
    round = scheme.open_round(0, cohort, dim, rng=rng)   # clients + persistent holders
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from secagg.ckks.aggregation import CkksAggregator, CkksClient
from secagg.ckks.ceremony import CeremonyServer, JointPublicKey
from secagg.ckks.channels import new_identity, public_bytes
from secagg.ckks.context import CkksEngine
from secagg.ckks.holder import KeyHolder
from secagg.ckks.params import PRESETS, SUM_N4096, CkksParameters, Preset, smallest_scale_bits
from secagg.ckks.seal_bridge import rns_primes
from secagg.errors import ParameterError, UnexpectedPhaseError
from secagg.protocol import SERVER, ClientRole, PartyId, RoundSession, Scheme, Session, holder_id
from secagg.rand import Csprng
from secagg.schemes import AggregationConfig


def default_threshold(committee: int) -> int:
    """⌈(n+1)/2⌉: a strict majority of the committee (3-of-5)."""
    return math.ceil((committee + 1) / 2)


class ThresholdCKKS(Scheme):
    """Threshold CKKS secure aggregation over a committee of n key holders (t-of-n)."""

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
        min_clients: int | None = None,
    ) -> None:
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ParameterError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
            preset = PRESETS[preset]
        t = default_threshold(committee) if threshold is None else threshold
        primes = rns_primes(preset)
        if scale_bits is None:
            scale_bits = smallest_scale_bits(
                preset,
                primes,
                committee=committee,
                threshold=t,
                max_clients=max_clients,
                value_bound=value_bound,
                precision=precision,
            )
        self.params = CkksParameters(
            preset=preset,
            primes=primes,
            committee=committee,
            threshold=t,
            max_clients=max_clients,
            value_bound=value_bound,
            precision=precision,
            scale_bits=scale_bits,
        )
        self.insecure = preset.insecure
        self.min_clients = min(2, max_clients) if min_clients is None else min_clients
        if not 1 <= self.min_clients <= max_clients:
            raise ParameterError(f"min_clients must be in [1, max_clients]; got {self.min_clients}")
        self.engine = CkksEngine(self.params)
        self.holders: dict[PartyId, KeyHolder] = {}
        self.roster: dict[PartyId, bytes] = {}
        self._ceremony: CeremonyServer | None = None
        self._encryptor: object | None = None

    @classmethod
    def from_config(cls, config: AggregationConfig) -> ThresholdCKKS:
        return cls(
            committee=config.committee,
            threshold=config.threshold,
            max_clients=config.max_clients,
            value_bound=config.value_bound,
            precision=config.precision,
        )

    def setup(self, *, rng: Csprng) -> Session:
        """The key ceremony: n holders, the server as relay. Run it on a transport.

        PKI assumption: the Ed25519 identity keys generated here stand for keys
        distributed out of band; every holder receives the whole public roster.
        """
        session = rng.random_bytes(16)
        committee = [holder_id(i) for i in range(self.params.committee)]
        identities = {h: new_identity(rng=rng.fork(f"ckks/identity/{h}")) for h in committee}
        self.roster = {h: public_bytes(k) for h, k in identities.items()}
        self.holders = {
            h: KeyHolder(
                h,
                self.engine,
                session,
                identities[h],
                self.roster,
                rng=rng.fork(f"ckks/holder/{h}"),
            )
            for h in committee
        }
        self._ceremony = CeremonyServer(self.engine, session, self.roster)
        self._encryptor = None
        return Session(coordinator=self._ceremony, participants=dict(self.holders))

    @property
    def joint_key(self) -> JointPublicKey:
        if self._ceremony is None or self._ceremony.joint_key is None:
            raise UnexpectedPhaseError("the key ceremony must complete before a round opens")
        return self._ceremony.joint_key

    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        key = self.joint_key
        self.engine.check_dim(dim)
        if len(set(cohort)) != len(cohort) or SERVER in cohort or set(cohort) & set(self.holders):
            raise ParameterError("cohort must be distinct client ids (not the server or a holder)")
        if len(cohort) > self.params.max_clients:
            raise ParameterError(
                f"cohort must have ≤ max_clients = {self.params.max_clients}; got {len(cohort)}"
            )
        if self._encryptor is None:
            self._encryptor = self.engine.seal.encryptor(key.b, key.a)
        session = rng.random_bytes(16)
        count = self.engine.ciphertext_count(dim)
        for holder in self.holders.values():
            holder.begin_round(session, round_index, cohort, count, self.min_clients)
        server = CkksAggregator(
            self.engine, session, round_index, cohort, dim, self.roster, self.min_clients
        )
        clients: dict[PartyId, ClientRole] = {
            p: CkksClient(
                p, self.engine, self._encryptor, session, round_index, dim, list(self.holders)
            )
            for p in cohort
        }
        participants = {**clients, **self.holders}
        return RoundSession(
            coordinator=server, participants=participants, clients=clients, phases=1
        )

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"scheme": self.name, "insecure": self.insecure}
        out.update(self.params.describe())
        out["min_clients"] = self.min_clients
        return out
