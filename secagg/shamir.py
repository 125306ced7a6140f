"""Shamir t-of-n secret sharing over a prime field, vectorized in numpy.

Many secrets are shared at once (an array), each with its own random
polynomial of degree ``threshold - 1``; party ``x`` receives the evaluations at
``x`` (x ≠ 0). Primes below 2^31 run in int64 (products fit in 63 bits); larger
primes (e.g. 60-bit CKKS RNS primes) run on Python integers in object arrays,
which is slower but exact.

Security: any ``threshold - 1`` shares are uniformly distributed and independent
of the secrets; the coefficients are drawn from the caller's CSPRNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secagg.errors import ParameterError
from secagg.rand import Csprng

_FAST_LIMIT = 1 << 31


def _work_dtype(prime: int) -> type | np.dtype:
    return np.dtype(np.int64) if prime < _FAST_LIMIT else object


def _check_points(xs: Sequence[int], prime: int) -> list[int]:
    points = [int(x) for x in xs]
    if len(set(points)) != len(points):
        raise ParameterError("share points must be distinct")
    if any(not 0 < x < prime for x in points):
        raise ParameterError(f"share points must be in [1, {prime - 1}]")
    return points


def _check_secrets(secrets: np.ndarray, prime: int) -> np.ndarray:
    values = np.asarray(secrets).astype(_work_dtype(prime))
    if values.size and (np.any(values < 0) or np.any(values >= prime)):
        raise ParameterError(f"secrets must be field elements in [0, {prime})")
    return values


def share(
    secrets: np.ndarray, *, threshold: int, xs: Sequence[int], prime: int, rng: Csprng
) -> np.ndarray:
    """Share every element of ``secrets``; returns shape ``(len(xs), *secrets.shape)``."""
    points = _check_points(xs, prime)
    if not 1 <= threshold <= len(points):
        raise ParameterError(
            f"threshold must be in [1, {len(points)}] (the number of parties); got {threshold}"
        )
    values = _check_secrets(secrets, prime)
    dtype = _work_dtype(prime)
    coeffs = [
        _draw(rng, prime, values.shape, dtype) for _ in range(threshold - 1)
    ]  # a_1 … a_{t-1}; a_0 is the secret
    out = np.empty((len(points), *values.shape), dtype=dtype)
    for row, x in enumerate(points):
        acc = np.zeros(values.shape, dtype=dtype)
        for c in reversed(coeffs):  # Horner: ((a_{t-1} x + a_{t-2}) x + …) x + a_0
            acc = (acc + c) % prime * x % prime
        out[row] = (acc + values) % prime
    return out


def _draw(rng: Csprng, prime: int, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if prime <= 2**64:
        flat = rng.integers_below(prime, count)
        return (
            flat.astype(dtype).reshape(shape)
            if dtype is not object
            else np.array([int(v) for v in flat], dtype=object).reshape(shape)
        )
    return np.array([rng.below(prime) for _ in range(count)], dtype=object).reshape(shape)


def lagrange_at_zero(xs: Sequence[int], prime: int) -> list[int]:
    """Weights λⱼ with f(0) = Σ λⱼ f(xⱼ) mod prime for any polynomial of degree < len(xs)."""
    points = _check_points(xs, prime)
    weights = []
    for j, xj in enumerate(points):
        num, den = 1, 1
        for m, xm in enumerate(points):
            if m != j:
                num = num * xm % prime
                den = den * (xm - xj) % prime
        weights.append(num * pow(den, -1, prime) % prime)
    return weights


def reconstruct(shares: np.ndarray, *, xs: Sequence[int], prime: int) -> np.ndarray:
    """Interpolate at zero from ``len(xs)`` rows of shares (the caller enforces ≥ threshold)."""
    rows = np.asarray(shares)
    if rows.shape[0] != len(xs):
        raise ParameterError(f"share rows must equal the number of points {len(xs)}")
    weights = lagrange_at_zero(xs, prime)
    values = _check_secrets(rows, prime)
    acc = np.zeros(values.shape[1:], dtype=values.dtype)
    for w, row in zip(weights, values, strict=True):
        if values.dtype == object:
            acc = (acc + row * w) % prime
        else:  # int64: split the weight so products stay below 2^62
            w_hi, w_lo = divmod(w, 1 << 16)
            term = (row * w_hi % prime) * (1 << 16) % prime + row * w_lo % prime
            acc = (acc + term) % prime
    return acc


def bytes_to_field(secret: bytes, prime: int) -> np.ndarray:
    """Split bytes into field elements of ``prime.bit_length() - 1`` bits each (int64/object)."""
    bits = prime.bit_length() - 1
    value = int.from_bytes(secret, "little")
    count = -(-len(secret) * 8 // bits)
    mask = (1 << bits) - 1
    chunks = [(value >> (bits * i)) & mask for i in range(count)]
    return np.array(chunks, dtype=_work_dtype(prime))


def field_to_bytes(elements: np.ndarray, prime: int, length: int) -> bytes:
    """Inverse of :func:`bytes_to_field` for a secret of ``length`` bytes."""
    bits = prime.bit_length() - 1
    value = 0
    for i, chunk in enumerate(np.asarray(elements).tolist()):
        if not 0 <= int(chunk) < (1 << bits):
            raise ParameterError("field elements must come from bytes_to_field")
        value |= int(chunk) << (bits * i)
    if value >= 1 << (8 * length):
        raise ParameterError(f"reconstructed value must fit in {length} bytes")
    return value.to_bytes(length, "little")
