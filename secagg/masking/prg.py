"""Mask expansion: AES-256-CTR keystreams added into a vector in ℤ_{2^w}.

A mask seed is a full 256-bit key (an HKDF output), used as an AES-256 key in CTR
mode from a zero counter block; keys are fresh per (session, round, pair or owner),
so a (key, counter) pair never repeats. Word ``i`` of the mask is bytes
``[i·w/8, (i+1)·w/8)`` of the keystream read little-endian.

Speed: the keystream is written with ``update_into`` into one preallocated,
cache-sized buffer and added straight into the target slice, so a mask costs
one AES pass plus an in-cache add, and no allocation per peer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from secagg.errors import ParameterError

CHUNK_BYTES = 1 << 18  # 256 KiB keystream per step: stays in L2 with the target slice
_ZERO_COUNTER = bytes(16)
_UNSIGNED = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def _keystream(key: bytes) -> CipherContext:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ParameterError("mask key must be 32 bytes")
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()


@functools.lru_cache(maxsize=4)
def _zero_block(nbytes: int) -> memoryview:
    """A read-only block of zeros: AES-CTR of zeros is the keystream itself."""
    block = np.zeros(nbytes, dtype=np.uint8)
    block.flags.writeable = False
    return memoryview(block.data)


def expand(key: bytes, length: int, dtype: np.dtype | type = np.uint32) -> np.ndarray:
    """The mask of ``length`` words for ``key`` (a new array; reference and tests).

    Security: the output is a secret mask.
    """
    word = np.dtype(dtype)
    if word not in _UNSIGNED or length < 0:
        raise ParameterError(f"mask dtype must be uint16/32/64 and length ≥ 0; got {word}")
    data = _keystream(key).update(bytes(length * word.itemsize))
    return np.frombuffer(data, dtype=word.newbyteorder("<")).astype(word)


def apply_masks(target: np.ndarray, *, add: Sequence[bytes], subtract: Sequence[bytes]) -> None:
    """In place: ``target += Σ PRG(k) for k in add − Σ PRG(k) for k in subtract`` (mod 2^w).

    The work is blocked by chunks so the keystream buffer and the target slice
    stay in cache; all masks for one chunk are applied before moving on.

    Security: keys and target are secrets; nothing is copied outside ``target``.
    """
    if target.dtype not in _UNSIGNED or target.ndim != 1 or not target.flags.c_contiguous:
        raise ParameterError("mask target must be a contiguous 1-D uint16/32/64 array")
    plus = [_keystream(k) for k in add]
    minus = [_keystream(k) for k in subtract]
    if not plus and not minus:
        return
    word = target.dtype.itemsize
    chunk = CHUNK_BYTES // word
    buffer = np.empty(chunk, dtype=target.dtype)
    raw = memoryview(buffer.view(np.uint8).data)
    zeros_view = _zero_block(chunk * word)
    for start in range(0, target.size, chunk):
        count = min(chunk, target.size - start)
        piece = target[start : start + count]
        stream = buffer[:count]
        nbytes = count * word
        zeros, out = zeros_view[:nbytes], raw[:nbytes]
        for enc in plus:
            enc.update_into(zeros, out)
            np.add(piece, stream, out=piece)
        for enc in minus:
            enc.update_into(zeros, out)
            np.subtract(piece, stream, out=piece)
