"""Model parameters ↔ one flat float64 vector, clipping, and FedAvg weighting.

A secure-sum scheme sums 1-D float vectors. These helpers turn a model (or its
change against the global model) into such a vector and back, checking shape,
dtype and length on the way so a mismatched model never silently loads garbage.

Weighted FedAvg through a secure sum: client ``i`` submits
``concat(w_i · clip(Δ_i), [w_i])`` with ``w_i = n_i / n̄`` (``n̄`` the public mean
client size). The released sum's last coordinate is ``Σ w_i`` over the round's
contributors, so ``sum[:-1] / sum[-1]`` is the sample-weighted mean update of
exactly the clients that contributed — whoever dropped out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from secagg.errors import ParameterError


@dataclasses.dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of a model's parameters, in ``named_parameters()`` order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        return int(sum(self.sizes))


def layout_of(model: nn.Module | Mapping[str, torch.Tensor]) -> Layout:
    """The parameter layout of a module, or of a name → tensor mapping."""
    items = list(model.named_parameters()) if isinstance(model, nn.Module) else list(model.items())
    for name, tensor in items:
        if not torch.is_floating_point(tensor):
            raise ParameterError(
                f"parameter {name} must be a real floating tensor; got {tensor.dtype}"
            )
    return Layout(
        names=tuple(n for n, _ in items),
        shapes=tuple(tuple(int(d) for d in t.shape) for _, t in items),
        dtypes=tuple(t.dtype for _, t in items),
    )


def flatten(model: nn.Module | Mapping[str, torch.Tensor]) -> np.ndarray:
    """All parameters as one float64 vector (exact for every float dtype up to 64 bits)."""
    layout_of(model)  # dtype check
    tensors = model.parameters() if isinstance(model, nn.Module) else model.values()
    parts = [t.detach().to("cpu", torch.float64).reshape(-1).numpy() for t in tensors]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def check_flat(
    vector: np.ndarray, length: int | None = None, *, name: str = "vector"
) -> np.ndarray:
    """``vector`` as float64 if 1-D, real, finite (and ``length`` long); else ParameterError."""
    if not isinstance(vector, np.ndarray):
        raise ParameterError(f"{name} must be a numpy array; got {type(vector).__name__}")
    if vector.ndim != 1:
        raise ParameterError(f"{name} must be 1-D; got shape {vector.shape}")
    if not (np.issubdtype(vector.dtype, np.floating) or np.issubdtype(vector.dtype, np.integer)):
        raise ParameterError(f"{name} dtype must be real numeric; got {vector.dtype}")
    if length is not None and vector.shape[0] != length:
        raise ParameterError(f"{name} length must be {length}; got {vector.shape[0]}")
    out = vector.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        raise ParameterError(f"{name} must be finite (no NaN or inf)")
    return out


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    """Split ``vector`` back into tensors of ``layout``'s names, shapes and dtypes."""
    values = check_flat(vector, layout.size)
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, dtype, size in zip(
        layout.names, layout.shapes, layout.dtypes, layout.sizes, strict=True
    ):
        chunk = values[offset : offset + size].reshape(shape)
        out[name] = torch.from_numpy(chunk.copy()).to(dtype)
        offset += size
    return out


def load_flat(model: nn.Module, vector: np.ndarray) -> nn.Module:
    """Overwrite ``model``'s parameters in place with ``vector``; returns ``model``."""
    tensors = unflatten(vector, layout_of(model))
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(tensors[name])
    return model


def check_same_layout(a: nn.Module, b: nn.Module) -> Layout:
    layout = layout_of(a)
    other = layout_of(b)
    if layout != other:
        raise ParameterError(
            f"models must have the same parameter layout; got {layout.size} vs {other.size} "
            f"values in {len(layout.names)} vs {len(other.names)} tensors"
        )
    return layout


def model_delta(local: nn.Module, global_model: nn.Module) -> np.ndarray:
    """``flatten(local) - flatten(global_model)``, after checking both share a layout."""
    check_same_layout(local, global_model)
    return flatten(local) - flatten(global_model)


def clip_l2(vector: np.ndarray, bound: float) -> np.ndarray:
    """Scale ``vector`` down (never up) so that its L2 norm is at most ``bound``."""
    if not (np.isfinite(bound) and bound > 0):
        raise ParameterError(f"bound must be a positive finite number; got {bound}")
    values = check_flat(vector)
    norm = float(np.linalg.norm(values))
    return values * (bound / norm) if norm > bound else values.copy()


def sample_weights(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """FedAvg weights ``n_i / mean(n)``: mean 1, so the values a client submits stay O(1)."""
    counts = np.asarray(sizes)
    if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer):
        raise ParameterError("sizes must be a non-empty 1-D sequence of integers")
    if counts.min() < 1:
        raise ParameterError(f"sizes must all be ≥ 1; got minimum {int(counts.min())}")
    return counts.astype(np.float64) / float(counts.mean())


def weighted_submission(delta: np.ndarray, weight: float) -> np.ndarray:
    """``concat(weight · delta, [weight])``: what one client feeds the secure sum."""
    if not (np.isfinite(weight) and weight > 0):
        raise ParameterError(f"weight must be a positive finite number; got {weight}")
    values = check_flat(delta, name="delta")
    return np.concatenate([weight * values, [float(weight)]])


def fedavg_from_sum(total: np.ndarray, dim: int) -> np.ndarray:
    """The weighted mean update ``total[:-1] / total[-1]`` from a sum of weighted submissions."""
    values = check_flat(total, dim + 1, name="aggregate")
    weight = float(values[-1])
    if not weight > 0:
        raise ParameterError(f"aggregate weight must be > 0; got {weight}")
    return values[:-1] / weight
