"""``CkksEngine``: the validated public parameters plus the SEAL objects built from them.

Holds no secret, only public material (parameters, SEAL context, the public CRS
polynomials once expanded).
"""

from __future__ import annotations

import numpy as np

from secagg.ckks import transcript
from secagg.ckks.params import CkksParameters
from secagg.ckks.seal_bridge import SealContext
from secagg.errors import ParameterError


class CkksEngine:
    """Public parameters and the arithmetic every role needs (no secrets inside)."""

    def __init__(self, params: CkksParameters) -> None:
        self.params = params
        self.primes = params.primes
        self.data_primes = params.data_primes
        self.degree = params.poly_degree
        self.k = len(self.data_primes)
        self.seal = SealContext(params.preset, params.primes)
        self.params_digest = transcript.params_digest(params.describe(), params.primes)
        self._crs_seed = b""
        self._crs = np.empty((self.k, 0, self.degree), dtype=np.uint64)

    def __repr__(self) -> str:
        return f"CkksEngine(preset={self.params.preset.name})"

    def ciphertext_count(self, dim: int) -> int:
        """Ciphertexts for ``dim`` reals (N reals each with complex packing)."""
        return -(-dim // self.degree)

    def crs(self, seed: bytes, count: int) -> np.ndarray:
        """The first ``count`` public polynomials aⱼ for ``seed`` (expanded once, then cached)."""
        if seed != self._crs_seed:
            self._crs_seed = seed
            self._crs = np.empty((self.k, 0, self.degree), dtype=np.uint64)
        have = self._crs.shape[1]
        if count > have:
            more = transcript.crs_polynomials(
                seed, self.data_primes, self.degree, have, count - have
            )
            self._crs = np.concatenate([self._crs, more], axis=1)
        return self._crs[:, :count]

    def check_dim(self, dim: int) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ParameterError(f"dim must be a positive integer; got {dim!r}")
