"""One client's local step: train a private copy of the global model, report its update.

:func:`train_local` is the single "how to train locally" function. A federation
calls it through the :data:`LocalTrainer` signature, so a different local
algorithm (DP-SGD from :mod:`privacy`) is swapped in by passing another function
with the same signature — nothing else changes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from secagg.errors import ParameterError
from secagg.protocol import PartyId
from secagg_training.updates import clip_l2, model_delta, weighted_submission

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class LocalSettings:
    """Hyper-parameters of local training (public)."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.2
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ParameterError(f"local_epochs must be a positive integer; got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ParameterError(f"lr must be a positive finite number; got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}"
            )


@dataclasses.dataclass(frozen=True, repr=False)
class LocalTask:
    """Everything one local training step needs.

    ``model`` is the client's private copy of the global model and is trained in
    place; ``generator`` drives batch shuffling (simulation randomness).

    Security: ``x``/``y`` are the client's private records.
    """

    client: PartyId
    round_index: int
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    settings: LocalSettings
    generator: torch.Generator

    def __repr__(self) -> str:
        return f"LocalTask(client={self.client!r}, round={self.round_index}, samples={len(self.y)})"


@dataclasses.dataclass(frozen=True)
class LocalStats:
    """What a local trainer reports: mean training loss over its steps, and the step count."""

    loss: float
    steps: int


LocalTrainer = Callable[[LocalTask], LocalStats]


def make_optimizer(model: nn.Module, settings: LocalSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr)
    return torch.optim.SGD(model.parameters(), lr=settings.lr)


def train_local(task: LocalTask) -> LocalStats:
    """Plain (non-private) mini-batch training for ``settings.epochs`` epochs."""
    model, settings = task.model, task.settings
    optimizer = make_optimizer(model, settings)
    loss_fn = nn.CrossEntropyLoss()
    n = int(task.y.shape[0])
    total, steps = 0.0, 0
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=task.generator)
        for start in range(0, n, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(task.x[batch]), task.y[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * int(batch.numel())
            steps += 1
    return LocalStats(loss=total / (n * settings.epochs), steps=steps)


@dataclasses.dataclass(frozen=True)
class ClientMetrics:
    loss: float
    samples: int
    seconds: float


@dataclasses.dataclass(frozen=True, repr=False)
class ClientUpdate:
    """A client's clipped model change and its FedAvg weight.

    Security: ``delta`` is a plaintext update; it may only leave the client
    through a scheme's ``protect`` (see :meth:`submission`).
    """

    client: PartyId
    delta: np.ndarray
    weight: float
    metrics: ClientMetrics

    def submission(self) -> np.ndarray:
        """``concat(weight · delta, [weight])``: the vector this client feeds the secure sum."""
        return weighted_submission(self.delta, self.weight)

    def __repr__(self) -> str:
        dim = self.delta.shape[0]
        return f"ClientUpdate(client={self.client!r}, dim={dim}, metrics={self.metrics})"


def run_client(
    client: PartyId,
    global_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: LocalSettings,
    *,
    round_index: int,
    weight: float,
    update_clip: float,
    generator: torch.Generator,
    trainer: LocalTrainer = train_local,
) -> ClientUpdate:
    """Train a copy of ``global_model`` on ``(x, y)``; return the L2-clipped delta and weight."""
    if int(y.shape[0]) == 0:
        raise ParameterError(f"client {client} must hold at least one sample; got 0")
    start = time.perf_counter()
    local = copy.deepcopy(global_model)
    stats = trainer(LocalTask(client, round_index, local, x, y, settings, generator))
    delta = clip_l2(model_delta(local, global_model), update_clip)
    seconds = time.perf_counter() - start
    return ClientUpdate(
        client, delta, float(weight), ClientMetrics(stats.loss, int(y.shape[0]), seconds)
    )
