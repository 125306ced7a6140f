"""The public configuration of a federated run, validated on construction."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from secagg.errors import ParameterError, UnknownSchemeError
from secagg.schemes import available_schemes
from training.client import OPTIMIZERS, LocalSettings
from training.data import PARTITIONS
from training.models import available_models
from training.privacy_plan import DEFAULT_DELTA, DEFAULT_EPSILON, DEFAULT_MAX_GRAD_NORM

GRAPHS = ("full", "sparse")
DP_UNITS = ("record", "client")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer; got {value!r}")


def _positive_float(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (np.isfinite(value) and value > 0)
    ):
        raise ParameterError(f"{name} must be a positive finite number; got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Everything that defines a federated run (all public; validated on construction).

    ``threshold=None`` lets the scheme choose its default; ``clients_per_round=None``
    selects every client each round. ``dp``/``epsilon``/``delta`` describe the
    DP-SGD request (record-level, per client, over the whole run): σ is calibrated
    so that ``rounds`` rounds cost at most ``epsilon`` (default 8) at ``delta``
    (default 1e-5), unless ``noise_multiplier`` fixes σ; ``budget`` is the ledger
    budget per client (default ``epsilon``); ``max_grad_norm`` the per-sample clip.
    ``dp_unit="client"`` switches to client-level distributed DP for the secure
    schemes (:mod:`training.client_dp`): updates clipped to ``update_clip``, noise
    shares calibrated for ``min_honest`` honest survivors (default half the clients).
    """

    scheme: str = "plain"
    clients: int = 10
    rounds: int = 10
    committee: int = 5
    threshold: int | None = None
    graph: str = "full"
    dropout: float = 0.0
    seed: int = 0
    local_epochs: int = 3
    batch_size: int = 32
    lr: float = 0.2
    optimizer: str = "sgd"
    partition: str = "iid"
    alpha: float = 0.5
    update_clip: float = 5.0
    model: str = "mlp"
    clients_per_round: int | None = None
    dp: bool = False
    epsilon: float | None = None
    delta: float | None = None
    budget: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    dp_unit: str = "record"
    min_honest: int | None = None
    colluders: int | None = None  # client-level DP: declared colluding clients (default t − 1)

    def __post_init__(self) -> None:
        if self.scheme not in available_schemes():
            raise UnknownSchemeError(
                f"scheme must be one of {', '.join(available_schemes())}; got {self.scheme!r}"
            )
        for name in ("clients", "rounds", "committee", "local_epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        if self.threshold is not None:
            _positive_int("threshold", self.threshold)
        if self.clients_per_round is not None:
            _positive_int("clients_per_round", self.clients_per_round)
            if self.clients_per_round > self.clients:
                raise ParameterError(
                    f"clients_per_round must be ≤ clients ({self.clients}); "
                    f"got {self.clients_per_round}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative integer; got {self.seed!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not (0.0 <= self.dropout < 1.0)
        ):
            raise ParameterError(f"dropout must be a probability in [0, 1); got {self.dropout!r}")
        for name in ("lr", "alpha", "update_clip"):
            _positive_float(name, getattr(self, name))
        _choice("graph", self.graph, GRAPHS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("partition", self.partition, PARTITIONS)
        _choice("model", self.model, available_models())
        if not isinstance(self.dp, bool):
            raise ParameterError(f"dp must be true or false; got {self.dp!r}")
        for name in ("epsilon", "budget", "noise_multiplier"):
            if getattr(self, name) is not None:
                _positive_float(name, getattr(self, name))
        _positive_float("max_grad_norm", self.max_grad_norm)
        _choice("dp_unit", self.dp_unit, DP_UNITS)
        if self.min_honest is not None:
            _positive_int("min_honest", self.min_honest)
            if self.min_honest > self.clients:
                raise ParameterError(
                    f"min_honest must be ≤ clients ({self.clients}); got {self.min_honest}"
                )
        if self.colluders is not None and (
            isinstance(self.colluders, bool)
            or not isinstance(self.colluders, int)
            or self.colluders < 0
        ):
            raise ParameterError(
                f"colluders must be a non-negative integer; got {self.colluders!r}"
            )
        if self.delta is not None and (
            isinstance(self.delta, bool)
            or not isinstance(self.delta, int | float)
            or not 0.0 < self.delta < 1.0
        ):
            raise ParameterError(f"delta must be in (0, 1); got {self.delta!r}")

    @property
    def local(self) -> LocalSettings:
        return LocalSettings(self.local_epochs, self.batch_size, self.lr, self.optimizer)

    @property
    def dp_epsilon(self) -> float:
        """The per-client ε target (the default when unset)."""
        return self.epsilon if self.epsilon is not None else DEFAULT_EPSILON

    @property
    def dp_delta(self) -> float:
        return self.delta if self.delta is not None else DEFAULT_DELTA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
