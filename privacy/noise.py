"""Cryptographically secure Gaussian noise for DP.

Opacus's ``secure_mode`` needs ``torchcsprng``, which has no build for
Python 3.11 / torch 2, so this module provides the noise path instead: uniform
bits come from a CSPRNG (``os.urandom`` by default), Box–Muller turns them into
standard normals in float64, and each output is the sum of four independent
Gaussians of standard deviation σ/2 — the same defence against floating-point
attacks (Mironov 2012; Holohan & Braghin 2021, §5.1) that Opacus's secure mode
uses. No torch or numpy generator is involved anywhere in the path.
"""

from __future__ import annotations

import math
import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError

__all__ = ["ByteSource", "OsByteSource", "SecureGaussian"]

_U64 = np.dtype("<u8")
_GAUSSIANS_PER_SAMPLE = 4  # Opacus secure_mode: n=2 → 2n summed draws of std σ/2


@runtime_checkable
class ByteSource(Protocol):
    """Anything that yields uniformly random bytes (e.g. ``secagg.rand.Csprng``)."""

    def random_bytes(self, n: int) -> bytes: ...


class OsByteSource:
    """The operating system's CSPRNG: the production byte source."""

    def random_bytes(self, n: int) -> bytes:
        if not isinstance(n, int) or n < 0:
            raise PrivacyParameterError(f"n must be a non-negative integer; got {n!r}")
        return os.urandom(n)

    def __repr__(self) -> str:
        return "OsByteSource()"


def check_byte_source(name: str, source: object) -> ByteSource:
    """Refuse seeds, torch/numpy generators and anything that is not a byte source.

    Security: an integer or a seeded library generator makes DP noise
    reproducible by whoever knows the seed, which voids the guarantee.
    """
    if isinstance(source, bool | int | float | str | bytes | bytearray):
        raise InsecureConfigurationError(
            f"{name} must be a CSPRNG byte source, not a seed; got a {type(source).__name__}"
        )
    if isinstance(source, torch.Generator | np.random.Generator | np.random.RandomState):  # noqa: TID251
        raise InsecureConfigurationError(
            f"{name} must be a CSPRNG byte source, not a library PRNG; got {type(source).__name__}"
        )
    if not isinstance(source, ByteSource):
        raise InsecureConfigurationError(
            f"{name} must have random_bytes(n) -> bytes; got {type(source).__name__}"
        )
    return source


def _uniform_open_closed(source: ByteSource, size: int) -> np.ndarray:
    """``size`` floats uniform on (0, 1] with 53 random bits each."""
    words = np.frombuffer(source.random_bytes(8 * size), dtype=_U64)
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def standard_normal(source: ByteSource, size: int) -> np.ndarray:
    """``size`` standard normal float64 values by Box–Muller on CSPRNG bits."""
    half = (size + 1) // 2
    radius = np.sqrt(-2.0 * np.log(_uniform_open_closed(source, half)))
    angle = (2.0 * math.pi) * _uniform_open_closed(source, half)
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]


class SecureGaussian:
    """Gaussian noise from a CSPRNG (default: ``os.urandom``); sum-of-4-Gaussians defence.

    Args:
        source: a byte source. Leave it ``None`` in production; tests may pass a
            deterministic CSPRNG object explicitly. Integers, seeds and library
            generators are refused.
        seed: never accepted; present so that ``SecureGaussian(seed=...)`` fails
            with a clear message rather than a ``TypeError``.

    Security: the returned noise is the DP mechanism's secret randomness; it is
    never logged, and this object's repr does not reveal the source's state.
    """

    def __init__(self, source: ByteSource | None = None, *, seed: object = None) -> None:
        if seed is not None:
            raise InsecureConfigurationError(
                "seed must not be given: DP noise is never seeded; got a seed"
            )
        self._source: ByteSource = (
            OsByteSource() if source is None else check_byte_source("source", source)
        )

    def sample_array(self, shape: tuple[int, ...], *, std: float) -> np.ndarray:
        """Noise of the given shape as float64 numpy (for numpy-in/numpy-out callers)."""
        size = _check_shape(shape)
        std = _check_std(std)
        if std == 0.0 or size == 0:
            return np.zeros(shape, dtype=np.float64)
        draws = standard_normal(self._source, _GAUSSIANS_PER_SAMPLE * size)
        summed = draws.reshape(_GAUSSIANS_PER_SAMPLE, size).sum(axis=0)
        return (summed * (std / 2.0)).reshape(shape)

    def sample(
        self, shape: tuple[int, ...], *, std: float, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Noise N(0, std²) of the given shape as a CPU tensor of ``dtype``."""
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise PrivacyParameterError(f"dtype must be a floating torch dtype; got {dtype!r}")
        return torch.from_numpy(self.sample_array(shape, std=std)).to(dtype)

    def __repr__(self) -> str:
        return f"SecureGaussian(source={type(self._source).__name__})"


def _check_shape(shape: tuple[int, ...]) -> int:
    if not isinstance(shape, tuple | torch.Size) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise PrivacyParameterError(f"shape must be a tuple of non-negative ints; got {shape!r}")
    return math.prod(shape)


def _check_std(std: float) -> float:
    if isinstance(std, bool) or not isinstance(std, int | float) or not math.isfinite(std):
        raise PrivacyParameterError(f"std must be a finite non-negative number; got {std!r}")
    if std < 0:
        raise PrivacyParameterError(f"std must be a finite non-negative number; got {std!r}")
    return float(std)
