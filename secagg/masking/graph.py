"""The communication graph: who masks with whom and who holds whose shares.

``full``: every pair of clients (SecAgg, Bonawitz et al. 2017).
``sparse``: a Harary graph H(k, n) under a uniformly random relabelling of the
clients (SecAgg+, Bell et al. 2020): place the clients on a ring in a random
order drawn from public randomness and connect each to its k/2 nearest ring
neighbours on each side. Every client then has exactly k neighbours, and per-
client work is O(k·m) instead of O(n·m). When k ≥ n − 1 the graph is full.

The permutation comes from :class:`~secagg.rand.CommonRandomness` on the round's
graph seed, a hash over the clients' signed key adverts
(:meth:`~secagg.masking.params.RoundParams.graph_seed_for`), so every party computes the
same graph from the roster it receives, and the server cannot pick it by choosing a session id.
"""

from __future__ import annotations

import dataclasses
import math

from secagg.errors import ParameterError
from secagg.rand import CommonRandomness


def default_degree(n: int) -> int:
    """k = 2⌈log2 n⌉ (even, ≥ 2): O(log n), the SecAgg+ regime."""
    return max(2, 2 * math.ceil(math.log2(max(n, 2))))


@dataclasses.dataclass(frozen=True)
class MaskingGraph:
    """Neighbourhoods by cohort position (public).

    Attributes:
        size: number of clients n.
        degree: neighbours per client (n − 1 for the full graph).
        neighbours: for each position, the sorted positions of its neighbours.
    """

    size: int
    degree: int
    neighbours: tuple[tuple[int, ...], ...]

    @property
    def full(self) -> bool:
        return self.degree >= self.size - 1

    @classmethod
    def complete(cls, n: int) -> MaskingGraph:
        if n < 1:
            raise ParameterError(f"cohort size must be ≥ 1; got {n}")
        return cls(n, n - 1, tuple(tuple(j for j in range(n) if j != i) for i in range(n)))

    @classmethod
    def harary(cls, n: int, degree: int, *, seed: bytes) -> MaskingGraph:
        """A k-regular Harary graph on a random relabelling drawn from ``seed`` (public)."""
        if degree < 2 or degree % 2:
            raise ParameterError(f"graph degree must be an even integer ≥ 2; got {degree}")
        if degree >= n - 1:
            return cls.complete(n)
        order = CommonRandomness(seed, "masking/graph").stream("ring-order").shuffle_indices(n)
        ring_position = {int(client): slot for slot, client in enumerate(order)}
        half = degree // 2
        neighbours = []
        for client in range(n):
            slot = ring_position[client]
            near = {int(order[(slot + d) % n]) for d in range(-half, half + 1) if d}
            neighbours.append(tuple(sorted(near)))
        return cls(n, degree, tuple(neighbours))
