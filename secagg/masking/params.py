"""Public parameters of one masking round, shared by every role of the round."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from typing import TypedDict

from secagg.errors import ParameterError
from secagg.masking.crypto import frame
from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.graph import MaskingGraph
from secagg.protocol import PartyId


def default_threshold(n: int) -> int:
    """⌊n/2⌋ + 1 surviving clients: the default honest-but-curious server model.

    A strict majority is the least that keeps two disjoint survivor views from
    both reaching the threshold. Against an actively malicious server pass
    ``threshold=⌊2n/3⌋ + 1`` (Bonawitz et al.), at the price of more aborted
    rounds under dropouts (10 clients, 20% dropout: ~12% of rounds instead of ~3%).
    """
    return n // 2 + 1


def local_threshold(n: int, threshold: int, graph: MaskingGraph) -> int:
    """Shares needed to rebuild one client's secrets from its k + 1 holders (itself included).

    Full graph: the global threshold. Sparse: the global fraction t/n of the
    k + 1 holders, and always a strict majority of them.
    """
    if graph.full:
        return threshold
    holders = graph.degree + 1
    return max(holders // 2 + 1, math.ceil(holders * threshold / n))


def validate_threshold(n: int, threshold: int, graph: MaskingGraph) -> int:
    """Check t against the cohort and the graph degree; return the local threshold.

    Raises:
        ParameterError: t ∉ (n/2, n], or the sparse degree is too small for t.
    """
    if not n // 2 < threshold <= n:
        raise ParameterError(
            f"threshold must be in ({n // 2}, {n}] for a cohort of {n}; got {threshold}"
        )
    local = local_threshold(n, threshold, graph)
    if not graph.full and local > graph.degree:
        raise ParameterError(
            f"graph degree must be ≥ {local} for threshold {threshold} of {n} "
            f"(a dropped client must be recoverable from its neighbours); got {graph.degree}"
        )
    return local


class Header(TypedDict):
    """The routing fields every message carries."""

    session: bytes
    round: int
    sender: str
    recipient: str


@dataclasses.dataclass(frozen=True)
class RoundParams:
    """Everything public about a round: who, how many must survive, the graph, the encoding.

    Attributes:
        session: the round's random public id (binds every message and derived key).
        round: the round index.
        cohort: client ids in a fixed order; a client's position + 1 is its Shamir point.
        threshold: t, surviving clients needed at every phase.
        local_threshold: shares needed to rebuild one client's secrets.
        graph: neighbourhoods by cohort position.
        encoding: the fixed-point ring encoding.
        dim: vector length.
        identities: each client's Ed25519 identity public key (the PKI roster).
    """

    session: bytes
    round: int
    cohort: tuple[PartyId, ...]
    threshold: int
    local_threshold: int
    graph: MaskingGraph
    encoding: FixedPointEncoding
    dim: int
    identities: Mapping[PartyId, bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_position", {p: i for i, p in enumerate(self.cohort)})
        object.__setattr__(self, "_neighbour_cache", {})
        object.__setattr__(self, "_holder_cache", {})
        object.__setattr__(self, "_survivor_digests", {})

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

    def survivor_payload(self, signer: PartyId, survivors: tuple[PartyId, ...]) -> bytes:
        """What a client signs in the consistency check: the round, itself, the survivor set."""
        digests: dict[tuple[PartyId, ...], bytes] = self._survivor_digests  # type: ignore[attr-defined]
        ordered = tuple(sorted(survivors, key=self.position))
        if ordered not in digests:  # one digest per set, not one n-long frame per signature
            body = frame(b"secagg/masking/v1/survivors", *(p.encode() for p in ordered))
            digests[ordered] = hashlib.sha256(body).digest()
        return frame(self.session, self.context(signer), digests[ordered])

    def advert_payload(self, owner: PartyId, enc: bytes, mask: bytes, commitment: bytes) -> bytes:
        return frame(self.session, self.context(owner), enc, mask, commitment)
