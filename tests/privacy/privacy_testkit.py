"""Shared test helpers for tests/privacy (deterministic byte sources, tiny data)."""

from __future__ import annotations

import hashlib

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class ChaChaSource:
    """A deterministic CSPRNG byte source (ChaCha20 keystream) for reproducible tests."""

    def __init__(self, label: str) -> None:
        key = hashlib.sha256(f"tests/privacy/{label}".encode()).digest()
        self._stream = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
        self.bytes_drawn = 0

    def random_bytes(self, n: int) -> bytes:
        self.bytes_drawn += n
        return self._stream.update(b"\x00" * n)


def blobs(n: int, *, label: str = "blobs") -> tuple[torch.Tensor, torch.Tensor]:
    """Two well-separated Gaussian classes in 8-D, drawn from a deterministic source."""
    from secagg_privacy.noise import standard_normal

    src = ChaChaSource(label)
    x = torch.from_numpy(standard_normal(src, n * 8).reshape(n, 8)).float()
    y = torch.arange(n) % 2
    x[:, 0] += torch.where(y == 1, 3.0, -3.0)
    return x, y
