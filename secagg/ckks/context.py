"""``CkksEngine``: the validated public parameters plus the SEAL objects built from them.

Holds no secret: every role of one federation shares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from secagg.ckks import residues as rns
from secagg.ckks import transcript
from secagg.ckks.params import CkksParameters
from secagg.ckks.seal_bridge import SealContext
from secagg.errors import ParameterError
from secagg.rand import Csprng


class CkksEngine:
    """Public parameters and the arithmetic every role needs (no secrets inside)."""

    def __init__(self, params: CkksParameters) -> None:
        self.params = params
        self.primes = params.primes
        self.data_primes = params.data_primes
        self.degree = params.poly_degree
        self.k = len(self.data_primes)
        self.sigma = 2.0**params.preset.smudging_bits
        self.seal = SealContext(params.preset, params.primes)
        self.params_digest = transcript.params_digest(params.describe(), params.primes)

    def __repr__(self) -> str:
        return f"CkksEngine(preset={self.params.preset.name})"

    @cached_property
    def weights_cache(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        return {}

    def ciphertext_count(self, dim: int) -> int:
        """Ciphertexts for ``dim`` reals (N reals each with complex packing)."""
        return -(-dim // self.degree)

    def crs(self, seed: bytes) -> np.ndarray:
        return transcript.crs_polynomial(seed, self.primes, self.degree)

    def key_share(self, a: np.ndarray, *, rng: Csprng) -> tuple[np.ndarray, np.ndarray]:
        """(sᵢ, bᵢ = −a·sᵢ − eᵢ) at the key level, NTT form.

        Security: sᵢ is secret. SEAL's public key is (−(aᵢsᵢ + eᵢ), aᵢ) with its
        own random aᵢ, so bᵢ = pk0ᵢ + (aᵢ − a)·sᵢ reuses SEAL's error sampler.
        """
        secret, pk0, own_a = self.seal.generate_key_share(rng)
        rows = []
        for j, q in enumerate(self.primes):
            diff = (own_a[j] + np.uint64(q) - a[j]) % np.uint64(q)
            rows.append((pk0[j] + rns.mulmod_exact(diff, secret[j], q)) % np.uint64(q))
        return secret, np.stack(rows)

    def shamir_deal(self, secret: np.ndarray, points: Sequence[int], *, rng: Csprng) -> np.ndarray:
        """Shares ``(n, k, N)`` of the data-level rows of ``secret``, one polynomial per prime.

        Security: the returned array contains every holder's share; the caller
        keeps its own row and sends each other row only under AEAD.
        """
        out = np.empty((len(points), self.k, self.degree), dtype=np.uint64)
        for j, q in enumerate(self.data_primes):
            out[:, j] = rns.shamir_share(
                secret[j],
                threshold=self.params.threshold,
                xs=points,
                prime=q,
                rng=rng.fork(f"p{j}"),
            )
        return out

    def unpack_key(self, data: bytes) -> np.ndarray:
        return rns.unpack_into(data, self.primes, self.degree)

    def sum_key_shares(self, shares: Sequence[np.ndarray]) -> np.ndarray:
        total = np.zeros((len(self.primes), self.degree), dtype=np.uint64)
        for share in shares:
            total = rns.add_mod(total, share, self.primes)
        return total

    def key_digest(self, seed: bytes, joint_b: np.ndarray) -> bytes:
        return transcript.key_digest(self.params_digest, seed, rns.pack(joint_b, self.primes))

    def weights(self, points: tuple[int, ...]) -> tuple[int, ...]:
        cache = self.weights_cache
        if points not in cache:
            cache[points] = self.params.lagrange.weights(points)
        return cache[points]

    def check_dim(self, dim: int) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ParameterError(f"dim must be a positive integer; got {dim!r}")
