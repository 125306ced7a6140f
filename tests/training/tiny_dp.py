"""The tiny DP-SGD federation the checkpoint and Flower tests share (3 clients, mlp-small)."""

from __future__ import annotations

from typing import Any

TINY_DP: dict[str, Any] = dict(
    clients=3,
    dp=True,
    epsilon=4.0,
    delta=1e-5,
    batch_size=64,
    local_epochs=1,
    lr=1.0,
    model="mlp-small",
)


def tiny_dp(**overrides: Any) -> dict[str, Any]:
    """``TINY_DP`` with ``overrides`` (a seed, a round count, a scheme)."""
    return {**TINY_DP, **overrides}
