"""Shamir sharing of a client's two round secrets over GF(2^31 − 1).

Each client shares, in one call, the 18 field elements that encode its
self-mask seed (32 bytes → 9 elements of 30 bits) and its mask private key
(another 9). Holder ``x`` (its cohort position + 1) gets the evaluations at
``x`` of 18 random polynomials of degree ``threshold − 1``.

:func:`share_secrets` draws exactly the same coefficients as
:func:`secagg.shamir.share` (so both agree share for share) but evaluates all
holders at once: Horner's rule over a (holders × secrets) array, one numpy
operation per coefficient instead of one per (holder, coefficient).
Reconstruction reuses :func:`secagg.shamir.reconstruct` (int64 fast path).

Security: any ``threshold − 1`` shares are uniform and independent of the
secrets. Shares are secrets; they travel only inside AEAD ciphertexts or in an
unmask response the client has checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secagg import shamir
from secagg.errors import IntegrityError, ParameterError
from secagg.rand import Csprng

PRIME = 2**31 - 1
SECRET_BYTES = 32
ELEMENTS = len(shamir.bytes_to_field(bytes(SECRET_BYTES), PRIME))  # 9 per 32-byte secret
SHARE_WORDS = 2 * ELEMENTS  # self-mask seed, then mask private key
SHARE_BYTES = 4 * SHARE_WORDS


def secrets_to_field(*secrets: bytes) -> np.ndarray:
    """Concatenated field elements of 32-byte secrets (int64)."""
    parts = []
    for secret in secrets:
        if len(secret) != SECRET_BYTES:
            raise ParameterError(f"secret must be {SECRET_BYTES} bytes")
        parts.append(shamir.bytes_to_field(secret, PRIME))
    return np.concatenate(parts).astype(np.int64)


def field_to_secret(elements: np.ndarray) -> bytes:
    """The 32-byte secret from its reconstructed field elements.

    Raises:
        IntegrityError: the elements do not encode a 32-byte secret (bad shares).
    """
    try:
        return shamir.field_to_bytes(elements, PRIME, SECRET_BYTES)
    except ParameterError:
        raise IntegrityError("reconstructed secret") from None


def share_secrets(
    secrets: np.ndarray, *, threshold: int, xs: Sequence[int], rng: Csprng
) -> np.ndarray:
    """Shares of every element of ``secrets`` for holders ``xs``: shape (len(xs), len(secrets)).

    Security: coefficients come from ``rng``; the output rows are secret shares.
    """
    points = np.array([int(x) for x in xs], dtype=np.int64)
    if len(set(points.tolist())) != points.size or np.any((points <= 0) | (points >= PRIME)):
        raise ParameterError(f"share points must be distinct and in [1, {PRIME - 1}]")
    if not 1 <= threshold <= points.size:
        raise ParameterError(
            f"threshold must be in [1, {points.size}] (the number of holders); got {threshold}"
        )
    values = np.asarray(secrets, dtype=np.int64)
    if values.ndim != 1 or np.any((values < 0) | (values >= PRIME)):
        raise ParameterError(f"secrets must be a 1-D array of field elements in [0, {PRIME})")
    coeffs = [
        rng.integers_below(PRIME, values.size).astype(np.int64) for _ in range(threshold - 1)
    ]  # same draws, same order as secagg.shamir.share
    column = points[:, None]
    acc = np.zeros((points.size, values.size), dtype=np.int64)
    for c in reversed(coeffs):  # both factors < 2^31: every product fits in int64
        acc = (acc + c) % PRIME * column % PRIME
    return (acc + values) % PRIME


def reconstruct_many(shares: np.ndarray, *, xs: Sequence[int]) -> np.ndarray:
    """Interpolate at zero: ``shares`` has one row per holder in ``xs`` (any trailing shape)."""
    return np.asarray(shamir.reconstruct(np.asarray(shares, np.int64), xs=xs, prime=PRIME))


def _inverse(values: np.ndarray) -> np.ndarray:
    """Elementwise inverse mod PRIME (Fermat: v^(p−2)); inputs are non-zero."""
    result = np.ones_like(values)
    base = values % PRIME
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % PRIME
        base = base * base % PRIME
        exponent >>= 1
    return result


def lagrange_weights(points: np.ndarray) -> np.ndarray:
    """λ[o, j] with f_o(0) = Σ_j λ[o, j] f_o(points[o, j]) for each row ``o`` of points."""
    xs = np.asarray(points, dtype=np.int64)
    if xs.ndim != 2 or np.any((xs <= 0) | (xs >= PRIME)):
        raise ParameterError(f"share points must be a 2-D array of values in [1, {PRIME - 1}]")
    if any(len(set(row)) != len(row) for row in xs.tolist()):
        raise ParameterError("share points must be distinct within each row")
    count = xs.shape[1]
    num = np.ones_like(xs)
    den = np.ones_like(xs)
    diagonal = np.eye(count, dtype=bool)
    for m in range(count):
        other = xs[:, m : m + 1]
        num = num * np.where(diagonal[m], 1, other) % PRIME
        den = den * np.where(diagonal[m], 1, (other - xs) % PRIME) % PRIME
    return num * _inverse(den) % PRIME


def reconstruct_batch(shares: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Secrets of many owners at once, each from its own holders.

    Args:
        shares: (owners, t, elements) share values.
        points: (owners, t) the holders' evaluation points.

    Returns:
        (owners, elements) int64 secrets.
    """
    rows = np.asarray(shares, dtype=np.int64)
    weights = lagrange_weights(points)
    if rows.ndim != 3 or rows.shape[:2] != weights.shape:
        raise ParameterError("shares must have shape (owners, t, elements) matching the points")
    if np.any((rows < 0) | (rows >= PRIME)):
        raise ParameterError(f"shares must be field elements in [0, {PRIME})")
    # each product < 2^62; reduce before summing over the t holders
    return (weights[:, :, None] * rows % PRIME).sum(axis=1) % PRIME
