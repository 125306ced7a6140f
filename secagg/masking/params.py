"""Public parameters of one masking round, shared by every role of the round."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import TypedDict

from secagg.channels import KEY_BYTES, frame
from secagg.errors import DecodeError, InconsistentViewError, ParameterError
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.graph import MaskingGraph
from secagg.protocol import SERVER, PartyId
from secagg.wire import Message, decode, encode, register

# Signature purposes (secagg.channels prefixes its domain; the masking/ prefix keeps them
# apart from the CKKS purposes signed under the same identity keys).
ADVERT_PURPOSE = b"masking/advert"
VIEW_PURPOSE = b"masking/view"
SURVIVORS_PURPOSE = b"masking/survivors"
SESSION_BYTES = 16
MIN_COHORT = 2  # a "sum" of one client is that client's input


def default_threshold(n: int) -> int:
    """⌊n/2⌋ + 1 surviving clients: the default honest-but-curious server model.

    A strict majority is the least that keeps two disjoint survivor views from
    both reaching the threshold. Against an actively malicious server pass
    ``threshold=⌊2n/3⌋ + 1`` (Bonawitz et al.), at the price of more aborted
    rounds under dropouts (10 clients, 20% dropout: ~12% of rounds instead of ~3%).
    """
    return n // 2 + 1


def local_threshold(n: int, threshold: int, degree: int) -> int:
    """Shares needed to rebuild one client's secrets from its k + 1 holders (itself included).

    Full graph (k ≥ n − 1): the global threshold. Sparse: the global fraction t/n of
    the k + 1 holders, and always a strict majority of them.
    """
    if degree >= n - 1:
        return threshold
    holders = degree + 1
    return max(holders // 2 + 1, math.ceil(holders * threshold / n))


def validate_threshold(n: int, threshold: int, degree: int) -> int:
    """Check t against the cohort and the graph degree; return the local threshold.

    Raises:
        ParameterError: t ∉ (n/2, n], or the sparse degree is too small for t.
    """
    # t ≥ 2 always: with t = 1 one client's shares alone rebuild its secrets
    if not max(n // 2, 1) < threshold <= n:
        raise ParameterError(
            f"threshold must be in ({max(n // 2, 1)}, {n}] for a cohort of {n}; got {threshold}"
        )
    local = local_threshold(n, threshold, degree)
    if degree < n - 1 and local > degree:
        raise ParameterError(
            f"graph degree must be ≥ {local} for threshold {threshold} of {n} "
            f"(a dropped client must be recoverable from its neighbours); got {degree}"
        )
    return local


class Header(TypedDict):
    """The routing fields every message carries."""

    session: bytes
    round: int
    sender: str
    recipient: str


BROADCAST: PartyId = "*"


@register(0x020A)
@dataclasses.dataclass(frozen=True, kw_only=True)
class RoundParameters(Message):
    """Server → every client: the round's public parameters (what ``RoundParams`` holds)."""

    cohort: tuple[str, ...]
    threshold: int
    degree: int
    min_honest: int
    dim: int
    width: int
    value_bound: float
    max_clients: int
    max_units: int
    identities: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(set(self.cohort)) != len(self.cohort) or not self.cohort:
            raise DecodeError("cohort must list distinct parties")
        if len(self.identities) != len(self.cohort):
            raise DecodeError("identities must have one key per cohort member")
        if any(len(key) != KEY_BYTES for key in self.identities):
            raise DecodeError(f"identity keys must be {KEY_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class RoundParams:
    """Everything public about a round: who, how many must survive, the graph, the encoding.

    Attributes:
        session: the round's random public id (binds every message and derived key).
        round: the round index.
        cohort: client ids in a fixed order; a client's position + 1 is its Shamir point.
        threshold: t, surviving clients needed at every phase.
        local_threshold: t′, shares (and consistency signatures) needed in one
            client's holder set; t′ = t on the full graph.
        degree: neighbours per client (n − 1 for the full graph).
        min_honest: survivors below which no share is released (client-level DP's h;
            at least t).
        encoding: the fixed-point ring encoding.
        dim: vector length.
        identities: each client's Ed25519 identity public key (from the roster).
        graph: neighbourhoods by cohort position, bound once the round's adverts fix the
            graph seed (:meth:`bind_graph`); ``None`` before.
        graph_seed: the seed ``graph`` was drawn from (b"" before binding).
    """

    session: bytes
    round: int
    cohort: tuple[PartyId, ...]
    threshold: int
    local_threshold: int
    degree: int
    min_honest: int
    encoding: FixedPointEncoding
    dim: int
    identities: Mapping[PartyId, bytes]
    graph: MaskingGraph | None = None
    graph_seed: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_position", {p: i for i, p in enumerate(self.cohort)})
        object.__setattr__(self, "_neighbour_cache", {})
        object.__setattr__(self, "_holder_cache", {})
        object.__setattr__(self, "_set_digests", {})

    # -- serialization --------------------------------------------------------------------

    def to_message(self) -> RoundParameters:
        e = self.encoding
        return RoundParameters(
            session=self.session,
            round=self.round,
            sender=SERVER,
            recipient=BROADCAST,
            cohort=self.cohort,
            threshold=self.threshold,
            degree=self.degree,
            min_honest=self.min_honest,
            dim=self.dim,
            width=e.width,
            value_bound=e.value_bound,
            max_clients=e.max_clients,
            max_units=e.max_units,
            identities=tuple(self.identities[p] for p in self.cohort),
        )

    def to_bytes(self) -> bytes:
        """The wire frame the server broadcasts (graph-independent: bound later)."""
        return encode(self.to_message())

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the complete broadcast parameters (cohort, t, k, h, encoding, dim,
        identities, session, round). Every signature of the round covers it, so clients
        shown different parameters cannot accept each other's adverts or views."""
        return hashlib.sha256(frame(b"secagg/masking/v1/params", self.to_bytes())).digest()

    @classmethod
    def from_message(cls, msg: RoundParameters) -> RoundParams:
        """Validate received parameters exactly as the server's constructor does."""
        n = len(msg.cohort)
        if SERVER in msg.cohort:
            raise ParameterError("cohort must not contain the server")
        if n < MIN_COHORT:
            raise ParameterError(f"cohort size must be ≥ {MIN_COHORT}; got {n}")
        if len(msg.session) != SESSION_BYTES or not 0 <= msg.round < 2**63:
            raise ParameterError(
                f"session must be {SESSION_BYTES} bytes and round in [0, 2^63); "
                f"got {len(msg.session)} bytes, round {msg.round}"
            )
        if n > msg.max_clients:
            raise ParameterError(f"cohort size must be ≤ max_clients = {msg.max_clients}; got {n}")
        if msg.dim < 1:
            raise ParameterError(f"dim must be ≥ 1; got {msg.dim}")
        if msg.degree < n - 1 and (msg.degree < 2 or msg.degree % 2):
            raise ParameterError(f"graph degree must be an even integer ≥ 2; got {msg.degree}")
        local = validate_threshold(n, msg.threshold, min(msg.degree, n - 1))
        if not msg.threshold <= msg.min_honest <= n:
            raise ParameterError(
                f"min_honest must be in [{msg.threshold}, {n}]; got {msg.min_honest}"
            )
        if msg.degree < n - 1 and msg.min_honest > msg.threshold:
            # a sparse round can reveal the sums of graph parts smaller than min_honest
            raise ParameterError(
                f"graph must be full when min_honest ({msg.min_honest}) exceeds the threshold "
                f"({msg.threshold}); got degree {msg.degree} of {n - 1}"
            )
        encoding = FixedPointEncoding(msg.width, msg.value_bound, msg.max_clients, msg.max_units)
        return cls(
            session=msg.session,
            round=msg.round,
            cohort=msg.cohort,
            threshold=msg.threshold,
            local_threshold=local,
            degree=min(msg.degree, n - 1),
            min_honest=msg.min_honest,
            encoding=encoding,
            dim=msg.dim,
            identities=dict(zip(msg.cohort, msg.identities, strict=True)),
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> RoundParams:
        msg = decode(raw)
        if not isinstance(msg, RoundParameters):
            raise DecodeError(f"round parameters frame must be RoundParameters; got {msg!r}")
        return cls.from_message(msg)

    # -- the graph ------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.degree >= len(self.cohort) - 1

    def bind_graph(self, seed: bytes) -> RoundParams:
        """These parameters with the graph drawn from ``seed`` (the adverts' digest)."""
        n = len(self.cohort)
        if self.full:
            graph = MaskingGraph.complete(n)
        else:
            graph = MaskingGraph.harary(n, self.degree, seed=seed)
        return dataclasses.replace(self, graph=graph, graph_seed=seed)

    def graph_seed_for(self, adverts: Iterable[tuple[PartyId, bytes]]) -> bytes:
        """The graph seed: SHA-256 over the round and every (advertiser, advert digest),
        sorted by cohort position. The server picks neither the keys nor the signatures
        it hashes, so it cannot grind the graph by choosing a session id."""
        ordered = sorted(adverts, key=lambda item: self.position(item[0]))
        parts = [p.encode() + d for p, d in ordered]
        body = frame(
            b"secagg/masking/v1/graph-seed", self.session, self.digest, self.context(), *parts
        )
        return hashlib.sha256(body).digest()

    @staticmethod
    def advert_digest(payload: bytes, signature: bytes) -> bytes:
        """SHA-256 of one signed advert (its payload and signature)."""
        return hashlib.sha256(frame(b"secagg/masking/v1/advert", payload, signature)).digest()

    # -- parties --------------------------------------------------------------------------

    def position(self, party: PartyId) -> int:
        return self._position[party]  # type: ignore[attr-defined]

    def in_cohort(self, party: PartyId) -> bool:
        return party in self._position  # type: ignore[attr-defined]

    def header(self, sender: PartyId, recipient: PartyId) -> Header:
        return {
            "session": self.session,
            "round": self.round,
            "sender": sender,
            "recipient": recipient,
        }

    def point(self, party: PartyId) -> int:
        """The party's Shamir evaluation point."""
        return self.position(party) + 1

    def neighbours(self, party: PartyId) -> tuple[PartyId, ...]:
        if self.graph is None:
            raise InconsistentViewError("graph must be bound by the round's adverts before use")
        cache: dict[PartyId, tuple[PartyId, ...]] = self._neighbour_cache  # type: ignore[attr-defined]
        if party not in cache:
            cache[party] = tuple(
                self.cohort[j] for j in self.graph.neighbours[self.position(party)]
            )
        return cache[party]

    def holders(self, party: PartyId) -> frozenset[PartyId]:
        """Who holds shares of ``party``'s secrets: itself and its neighbours."""
        cache: dict[PartyId, frozenset[PartyId]] = self._holder_cache  # type: ignore[attr-defined]
        if party not in cache:
            cache[party] = frozenset((party, *self.neighbours(party)))
        return cache[party]

    def adds_pair_mask(self, party: PartyId, peer: PartyId) -> bool:
        """True if ``party`` adds (rather than subtracts) the mask it shares with ``peer``."""
        return self.position(party) < self.position(peer)

    def ordered(self, parties: Iterable[PartyId]) -> tuple[PartyId, ...]:
        return tuple(sorted(parties, key=self.position))

    # -- what gets hashed and signed --------------------------------------------------------

    def context(self, *parties: PartyId) -> bytes:
        """Public context for key derivation and signatures: round plus the named parties."""
        return frame(self.round.to_bytes(8, "little"), *(p.encode() for p in parties))

    def pair_context(self, a: PartyId, b: PartyId) -> bytes:
        """Symmetric context of an unordered pair (both ends derive the same key)."""
        first, second = sorted((a, b), key=self.position)
        return self.context(first, second)

    def seed_commitment(self, owner: PartyId, seed: bytes) -> bytes:
        """SHA-256 commitment to a self-mask seed (the seed has 256 bits of entropy)."""
        body = frame(b"secagg/masking/v1/seed-commitment", self.session, self.context(owner), seed)
        return hashlib.sha256(body).digest()

    def set_digest(self, label: bytes, parties: Iterable[PartyId]) -> bytes:
        """SHA-256 of a party set in cohort order (cached: one digest per set per round)."""
        digests: dict[tuple[bytes, tuple[PartyId, ...]], bytes] = self._set_digests  # type: ignore[attr-defined]
        key = (label, self.ordered(parties))
        if key not in digests:
            body = frame(b"secagg/masking/v1/" + label, *(p.encode() for p in key[1]))
            digests[key] = hashlib.sha256(body).digest()
        return digests[key]

    def view_payload(self, signer: PartyId, masking_set: Iterable[PartyId]) -> bytes:
        """What a client signs with its masked input: the parameters' digest, the graph seed
        and the global set U2 it masked with (its own masks are exactly U2 ∩ N(signer))."""
        return frame(
            self.session,
            self.digest,
            self.context(signer),
            self.graph_seed,
            self.set_digest(b"U2", masking_set),
        )

    def survivor_payload(
        self, signer: PartyId, masking_set: Iterable[PartyId], survivors: Iterable[PartyId]
    ) -> bytes:
        """What a client signs in the consistency check: the parameters' digest, the graph
        seed and the pair (U2, U3)."""
        return frame(
            self.session,
            self.digest,
            self.context(signer),
            self.graph_seed,
            self.set_digest(b"U2", masking_set),
            self.set_digest(b"U3", survivors),
        )

    def advert_payload(self, owner: PartyId, enc: bytes, mask: bytes, commitment: bytes) -> bytes:
        return frame(self.session, self.digest, self.context(owner), enc, mask, commitment)
