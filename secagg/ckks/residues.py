"""RNS residue arithmetic in numpy: the compact wire format, lazy sums, Shamir sharing.

Batches of ciphertext polynomials are uint64 arrays in *prime-major* layout
``(k, count, N)``: one contiguous block per RNS prime, which is also the order on
the wire. Every data prime has ≤ 48 bits, so a residue travels in
``⌈bits/8⌉ = 6`` little-endian bytes and sums of up to 2^15 residues fit in a
uint64 without reduction.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from secagg.ckks.params import residue_width
from secagg.errors import DecodeError, ParameterError
from secagg.rand import Csprng

_U64 = np.dtype("<u8")
_BLOCK = 1 << 16  # residues per add_packed block: 512 KiB of uint64, cache-resident

if sys.byteorder != "little":  # pragma: no cover - the byte views below assume it
    raise ImportError("secagg.ckks requires a little-endian platform")


def packed_size(primes: Sequence[int], per_prime: int) -> int:
    """Bytes of ``per_prime`` residues for each of ``primes``."""
    return sum(residue_width(q) for q in primes) * per_prime


def pack(residues: np.ndarray, primes: Sequence[int]) -> bytes:
    """Residues ``(k, ...)`` (uint64, each row < its prime) → the compact wire bytes."""
    if residues.dtype != np.uint64 or residues.shape[0] != len(primes):
        raise ParameterError("residues must be uint64 with one row per prime")
    parts = []
    for row, q in zip(residues, primes, strict=True):
        width = residue_width(q)
        flat = np.ascontiguousarray(row).reshape(-1)
        parts.append(flat.view(np.uint8).reshape(-1, 8)[:, :width].tobytes())
    return b"".join(parts)


def unpack_into(
    data: bytes, primes: Sequence[int], per_prime: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Wire bytes → residues ``(k, per_prime)``; refuses a wrong size or any residue ≥ qⱼ.

    Reads each residue as one unaligned 8-byte word at stride ``width`` and masks
    it, so decoding is one pass over the data plus a max-reduction for validation.

    Raises:
        DecodeError: wrong length or a residue not below its prime.
    """
    expected = packed_size(primes, per_prime)
    if len(data) != expected:
        raise DecodeError(f"residue block must be {expected} bytes; got {len(data)}")
    if out is None:
        out = np.empty((len(primes), per_prime), dtype=np.uint64)
    offset = 0
    for j, q in enumerate(primes):
        width = residue_width(q)
        _unpack_row(data, offset, width, per_prime, out[j])
        if per_prime and int(out[j].max()) >= q:
            raise DecodeError(f"residues must be below their prime q_{j}; got one ≥ q_{j}")
        offset += width * per_prime
    return out


def _unpack_row(
    data: bytes | memoryview, offset: int, width: int, count: int, dst: np.ndarray
) -> None:
    """``count`` residues of ``width`` bytes at ``offset`` → ``dst``.

    One unaligned 8-byte little-endian word per residue at stride ``width``, masked
    to ``width`` bytes: a single strided pass. Words whose 8 bytes would run past
    the end of ``data`` (the last one or two of the block) are read singly.
    """
    if count == 0:
        return
    mask = np.uint64((1 << (8 * width)) - 1)
    fits = (len(data) - offset - 8) // width + 1  # residues whose whole word is inside data
    bulk = min(count, max(0, fits))
    if bulk:
        words = np.ndarray(shape=(bulk,), dtype=_U64, buffer=data, offset=offset, strides=(width,))
        np.bitwise_and(words, mask, out=dst[:bulk])
    for i in range(bulk, count):
        start = offset + width * i
        dst[i] = int.from_bytes(data[start : start + width], "little")


def add_packed(acc: np.ndarray, data: bytes | memoryview, primes: Sequence[int]) -> None:
    """acc ``(k, per_prime)`` += the residues in the wire bytes ``data``, each checked < qⱼ.

    Decodes, validates and adds in cache-sized blocks (one pass over the data, no
    model-sized temporary). No reduction: the caller reduces before 2^15 terms.
    On a bad residue the blocks already added are subtracted again (exact: uint64
    wraps mod 2^64), so a refused block leaves ``acc`` as it was.

    Raises:
        DecodeError: wrong length or a residue not below its prime.
    """
    per_prime = acc.shape[1]
    expected = packed_size(primes, per_prime)
    if acc.dtype != np.uint64 or acc.shape[0] != len(primes):
        raise ParameterError("acc must be uint64 with one row per prime")
    if len(data) != expected:
        raise DecodeError(f"residue block must be {expected} bytes; got {len(data)}")
    buf = np.empty(min(per_prime, _BLOCK), dtype=np.uint64)
    done: list[tuple[int, int, int]] = []  # (prime, start, stop) already added
    offset = 0
    for j, q in enumerate(primes):
        width = residue_width(q)
        for start in range(0, per_prime, _BLOCK):
            stop = min(start + _BLOCK, per_prime)
            part = buf[: stop - start]
            _unpack_row(data, offset + width * start, width, stop - start, part)
            if int(part.max()) >= q:
                _subtract_blocks(acc, data, primes, done, buf)
                raise DecodeError(f"residues must be below their prime q_{j}; got one ≥ q_{j}")
            np.add(acc[j, start:stop], part, out=acc[j, start:stop])
            done.append((j, start, stop))
        offset += width * per_prime


def _subtract_blocks(
    acc: np.ndarray,
    data: bytes | memoryview,
    primes: Sequence[int],
    blocks: list[tuple[int, int, int]],
    buf: np.ndarray,
) -> None:
    """Undo :func:`add_packed` for ``blocks`` (the refused upload never counts)."""
    per_prime = acc.shape[1]
    for j, start, stop in blocks:
        width = residue_width(primes[j])
        offset = sum(residue_width(q) for q in primes[:j]) * per_prime + width * start
        part = buf[: stop - start]
        _unpack_row(data, offset, width, stop - start, part)
        np.subtract(acc[j, start:stop], part, out=acc[j, start:stop])


def accumulate(acc: np.ndarray, part: np.ndarray) -> None:
    """acc += part without reduction (caller reduces before 2^15 terms)."""
    np.add(acc, part, out=acc)


def reduce_rows(acc: np.ndarray, primes: Sequence[int]) -> None:
    """acc[j] %= qⱼ in place."""
    for j, q in enumerate(primes):
        np.remainder(acc[j], np.uint64(q), out=acc[j])


def interpolate(
    shares: np.ndarray, xs: Sequence[int], primes: Sequence[int], *, at: int = 0
) -> np.ndarray:
    """The degree-(len(xs)−1) polynomial through ``shares`` ``(m, k, ...)``, evaluated at ``at``.

    Exact: Lagrange weights in Python integers, products by :func:`mul_mod` in uint64.
    """
    if len(set(xs)) != len(xs) or shares.shape[0] != len(xs) or at in xs:
        raise ParameterError("share points must be distinct, one row each, and differ from `at`")
    if any(q >= 1 << 48 for q in primes):
        raise ParameterError("primes must be < 2^48")
    out = np.empty(shares.shape[1:], dtype=np.uint64)
    for j, q in enumerate(primes):
        acc = np.zeros(shares.shape[2:], dtype=np.uint64)
        for i, xi in enumerate(xs):
            num, den = 1, 1
            for m, xm in enumerate(xs):
                if m != i:
                    num = num * (at - xm) % q
                    den = den * (xi - xm) % q
            weight = num * pow(den, -1, q) % q
            acc = (acc + mul_mod(shares[i, j] % np.uint64(q), weight, q)) % np.uint64(q)
        out[j] = acc
    return out


def mul_mod(values: np.ndarray, factor: int, q: int) -> np.ndarray:
    """values · factor mod q for values, factor < q < 2^48, in uint64 without overflow.

    Horner over the factor's three 16-bit limbs: every intermediate stays < 2^64
    (a 48-bit value times a 16-bit limb, or a reduced value shifted by 16 bits).
    """
    qq = np.uint64(q)
    a = np.asarray(values, dtype=np.uint64)
    r = np.zeros(a.shape, dtype=np.uint64)
    for shift in (32, 16, 0):
        limb = np.uint64((factor >> shift) & 0xFFFF)
        r = ((r << np.uint64(16)) % qq + (a * limb) % qq) % qq
    return r


def shamir_share(
    secret: np.ndarray, *, threshold: int, xs: Sequence[int], prime: int, rng: Csprng
) -> np.ndarray:
    """Shamir shares of every element of ``secret`` (< prime < 2^48) at small points.

    A uint64 fast path of :func:`secagg.shamir.share` for 48-bit primes and
    points below 2^16: Horner's rule keeps every product below 2^64.

    Security: the ``threshold − 1`` random coefficients come from ``rng``; any
    ``threshold − 1`` shares are uniform and independent of ``secret``.
    """
    if prime >= 1 << 48 or any(not 0 < x < 1 << 16 or x >= prime for x in xs):
        raise ParameterError("prime must be < 2^48 and points in [1, 2^16)")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs):
        raise ParameterError(f"threshold must be in [1, {len(xs)}] with distinct points")
    values = np.asarray(secret, dtype=np.uint64)
    if values.size and int(values.max()) >= prime:
        raise ParameterError("secret must be reduced below the prime")
    q = np.uint64(prime)
    coeffs = [
        rng.integers_below(prime, values.size).reshape(values.shape) for _ in range(threshold - 1)
    ]
    out = np.empty((len(xs), *values.shape), dtype=np.uint64)
    for row, x in enumerate(xs):
        acc = np.zeros(values.shape, dtype=np.uint64)
        for c in reversed(coeffs):
            acc = ((acc + c) % q) * np.uint64(x) % q
        out[row] = (acc + values) % q
    return out
