"""Cryptographically secure randomness, passed explicitly to everything that samples.

Every sampling function in :mod:`secagg` takes a keyword-only ``rng: Csprng``.
``SystemRng`` (the OS CSPRNG) is the production source. ``DeterministicRng`` is a
ChaCha20 keystream under a caller-supplied 256-bit seed: a CSPRNG, but whoever
knows the seed knows every output, so it is for tests and reproducible
simulations only. ``CommonRandomness`` is the public randomness every party
derives from one agreed seed (SHAKE-256 with domain separation).

``numpy.random``, ``random`` and torch generators are banned here (ruff banned-api).
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg.errors import ParameterError

_U64 = np.dtype("<u8")
SEED_BYTES = 32


def _check_count(name: str, n: int) -> int:
    if not isinstance(n, int | np.integer) or n < 0:
        raise ParameterError(f"{name} must be a non-negative integer; got {n!r}")
    return int(n)


def _uniform_u64_below(draw_u64: Callable[[int], np.ndarray], bound: int, size: int) -> np.ndarray:
    """Unbiased integers in [0, bound) by rejection sampling of 64-bit words."""
    if not 1 <= bound <= 2**64:
        raise ParameterError(f"bound must be in [1, 2^64]; got {bound}")
    if bound == 2**64:
        return draw_u64(size)
    limit = np.uint64(2**64 - (2**64 % bound)) if 2**64 % bound else None
    out = np.empty(size, dtype=np.uint64)
    filled = 0
    while filled < size:
        need = size - filled
        words = draw_u64(need + need // 16 + 8)
        if limit is not None:
            words = words[words < limit]
        take = min(need, words.size)
        out[filled : filled + take] = words[:take] % np.uint64(bound)
        filled += take
    return out


class Csprng(ABC):
    """A cryptographically secure random source.

    Security: implementations must be indistinguishable from uniform to any
    efficient adversary who does not hold their key/seed.
    """

    @abstractmethod
    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""

    @abstractmethod
    def fork(self, label: str) -> Csprng:
        """An independent stream for a named sub-task (a party, a round, a purpose)."""

    def uint64(self, size: int) -> np.ndarray:
        size = _check_count("size", size)
        return np.frombuffer(self.random_bytes(8 * size), dtype=_U64).astype(np.uint64)

    def integers_below(self, bound: int, size: int) -> np.ndarray:
        """``size`` unbiased integers in ``[0, bound)`` as uint64 (``bound`` ≤ 2^64)."""
        return _uniform_u64_below(self.uint64, int(bound), _check_count("size", size))

    def below(self, bound: int) -> int:
        """One unbiased Python integer in ``[0, bound)``; any positive bound."""
        if bound < 1:
            raise ParameterError(f"bound must be positive; got {bound}")
        nbytes = (bound.bit_length() + 7) // 8 + 8  # 64 extra bits: rejection is rare
        space = 256**nbytes
        limit = space - space % bound
        while True:
            x = int.from_bytes(self.random_bytes(nbytes), "little")
            if x < limit:
                return x % bound

    def uniform(self, size: int) -> np.ndarray:
        """``size`` floats uniform on [0, 1) with 53 random bits each."""
        return (self.uint64(size) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def standard_normal(self, size: int) -> np.ndarray:
        """``size`` standard Gaussian floats (Box–Muller on 53-bit uniforms)."""
        size = _check_count("size", size)
        half = (size + 1) // 2
        u1 = 1.0 - self.uniform(half)  # (0, 1]: log never sees zero
        u2 = self.uniform(half)
        radius = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([radius * np.cos(2 * math.pi * u2), radius * np.sin(2 * math.pi * u2)])
        return z[:size]

    def shuffle_indices(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)`` (Fisher–Yates)."""
        perm = np.arange(_check_count("n", n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        return perm

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<secret state>)"


class SystemRng(Csprng):
    """The operating system's CSPRNG (``os.urandom``): the production source."""

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(_check_count("n", n))

    def fork(self, label: str) -> Csprng:
        return SystemRng()


class DeterministicRng(Csprng):
    """ChaCha20 keystream under a 256-bit seed: reproducible from that seed.

    Security: exactly as secret as its seed — anyone holding the seed recomputes every
    output. With a guessable seed (``from_int``, a config ``seed``) it is for tests and
    simulations only, never for keys, masks or DP noise. Under a fresh secret 256-bit seed
    drawn from the OS it is a CSPRNG: a Flower node keeps such a seed sealed so that it can
    rebuild its role between the phases of a round (``training/flower/client_app.py``).
    """

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ParameterError(f"seed must be {SEED_BYTES} bytes; got {type(seed).__name__}")
        self._seed = seed
        cipher = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None)
        self._stream = cipher.encryptor()

    @classmethod
    def from_int(cls, seed: int, label: str = "") -> DeterministicRng:
        """A stream from a small integer seed (simulation convenience)."""
        digest = hashlib.sha256(f"secagg/DeterministicRng/{label}/{seed}".encode()).digest()
        return cls(digest)

    def random_bytes(self, n: int) -> bytes:
        return self._stream.update(b"\x00" * _check_count("n", n))

    def fork(self, label: str) -> Csprng:
        child = hashlib.sha256(b"secagg/fork\x00" + self._seed + label.encode()).digest()
        return DeterministicRng(child)


class CommonRandomness:
    """Public randomness every party expands identically from one agreed seed.

    Outputs are public; use it for the CKKS common polynomial or a public
    communication graph, never for anything secret.
    """

    def __init__(self, seed: bytes, domain: str) -> None:
        if not isinstance(seed, bytes) or len(seed) < 16:
            raise ParameterError("seed must be at least 16 bytes")
        self.seed = seed
        self.domain = domain

    def _xof(self, label: str, nbytes: int) -> bytes:
        prefix = f"secagg/crs/{self.domain}/{label}\x00".encode()
        return hashlib.shake_256(prefix + self.seed).digest(nbytes)

    def stream(self, label: str) -> Csprng:
        """A deterministic stream for ``label`` (still public)."""
        return DeterministicRng(self._xof(label, SEED_BYTES))

    def integers_below(self, label: str, bound: int, size: int) -> np.ndarray:
        return self.stream(label).integers_below(bound, size)

    def __repr__(self) -> str:
        return f"CommonRandomness(domain={self.domain!r})"
