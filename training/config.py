"""The public configuration of a federated run, validated on construction."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from secagg.errors import ParameterError, UnknownSchemeError
from secagg.schemes import available_schemes
from secagg_training.client import OPTIMIZERS, LocalSettings
from secagg_training.data import PARTITIONS
from secagg_training.models import available_models
from secagg_training.privacy_plan import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    DEFAULT_MAX_GRAD_NORM,
    DP_TRAINING_DEFAULTS,
)

GRAPHS = ("full", "sparse")
DP_UNITS = ("record", "client")
# The scheme a run uses when none is given: threshold CKKS (DESIGN §6), in the Python
# API as on the command line — "plain" would make the default the INSECURE reference.
DEFAULT_SCHEME = "ckks"
# Local-training settings without record-level DP-SGD (DP_TRAINING_DEFAULTS apply under it).
PLAIN_TRAINING_DEFAULTS: dict[str, Any] = {"local_epochs": 3, "batch_size": 32, "lr": 0.2}
# Settings that only mean something under DP: asking for one with dp off is an error
# (the caller believes they have a guarantee they do not). Value = the "unset" value.
PRIVACY_SETTINGS: dict[str, Any] = {
    "epsilon": None,
    "delta": None,
    "budget": None,
    "noise_multiplier": None,
    "min_honest": None,
    "max_grad_norm": DEFAULT_MAX_GRAD_NORM,
    "dp_unit": "record",
    "nominal_records": None,
}
# Fewest clients a secure round may sum: a "sum" of one update is that update.
MIN_SECURE_COHORT = 2
# Largest CKKS committee (its Lagrange constants are enumerated exactly).
MAX_COMMITTEE = 16


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

    The defaults are ``secagg run``'s: threshold CKKS (3-of-5) and record-level
    DP-SGD at ε = 8, δ = 1e-5 per client. ``threshold=None`` lets the scheme choose
    its default; ``clients_per_round=None`` selects every client each round.
    ``dp``/``epsilon``/``delta`` describe the DP-SGD request (record-level, per
    client, over the whole run): σ is calibrated so that ``rounds`` rounds cost at
    most ``epsilon`` (default 8) at ``delta`` (default 1e-5), unless
    ``noise_multiplier`` fixes σ; ``budget`` is the ledger budget per client
    (default ``epsilon``); ``max_grad_norm`` the per-sample clip. Setting any of
    these with ``dp=False`` raises :class:`ParameterError`. ``dp_unit="client"``
    switches to client-level distributed DP for the secure schemes
    (:mod:`secagg_training.client_dp`): updates clipped to ``update_clip``, noise shares
    calibrated for ``min_honest`` honest survivors (default half the clients).
    ``local_epochs``/``batch_size``/``lr`` left ``None`` take DP-SGD's recommended
    values under record-level DP (:data:`DP_TRAINING_DEFAULTS`), else
    :data:`PLAIN_TRAINING_DEFAULTS`.
    """

    scheme: str = DEFAULT_SCHEME
    clients: int = 10
    rounds: int = 10
    committee: int = 5
    threshold: int | None = None
    corrupt_holders: int = 0
    graph: str = "full"
    dropout: float = 0.0
    seed: int = 0
    # None = "the default for this DP mode", resolved in __post_init__ (always set after it)
    local_epochs: int = None  # type: ignore[assignment]
    batch_size: int = None  # type: ignore[assignment]
    lr: float = None  # type: ignore[assignment]
    optimizer: str = "sgd"
    partition: str = "iid"
    alpha: float = 0.5
    update_clip: float = 5.0
    model: str = "mlp"
    clients_per_round: int | None = None
    dp: bool = True
    epsilon: float | None = None
    delta: float | None = None
    budget: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    dp_unit: str = "record"
    min_honest: int | None = None
    colluders: int | None = None  # client-level DP: declared colluding clients (default t − 1)
    # record-level DP: declared public records per client N (fixes q and the step count);
    # required for user data, default for the embedded digits: its public train size // clients
    nominal_records: int | None = None

    def __post_init__(self) -> None:
        if self.scheme not in available_schemes():
            raise UnknownSchemeError(
                f"scheme must be one of {', '.join(available_schemes())}; got {self.scheme!r}"
            )
        if not isinstance(self.dp, bool):
            raise ParameterError(f"dp must be true or false; got {self.dp!r}")
        self._resolve_training_defaults()
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
        if self.nominal_records is not None:
            _positive_int("nominal_records", self.nominal_records)
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
        if not self.dp:
            self._refuse_privacy_settings()
        self._check_cohort()

    def _resolve_training_defaults(self) -> None:
        if self.dp:  # recorded as numbers so result.json says what the run promised
            for name, value in (("epsilon", DEFAULT_EPSILON), ("delta", DEFAULT_DELTA)):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        record_dp = self.dp and self.dp_unit == "record"
        defaults = DP_TRAINING_DEFAULTS if record_dp else PLAIN_TRAINING_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: set once, here

    def _refuse_privacy_settings(self) -> None:
        for name, unset in PRIVACY_SETTINGS.items():
            if getattr(self, name) != unset:
                raise ParameterError(
                    f"{name} must not be set when dp is off; got {getattr(self, name)!r} "
                    "(pass dp=True to train with differential privacy)"
                )

    @property
    def cohort_size(self) -> int:
        """Clients selected each round (before dropouts and budget refusals)."""
        return self.clients_per_round if self.clients_per_round is not None else self.clients

    def _check_cohort(self) -> None:
        """What each scheme needs of the cohort, checked before any key or ledger exists."""
        secure = self.scheme != "plain"
        n = self.cohort_size
        if secure and self.clients < MIN_SECURE_COHORT:
            raise ParameterError(
                f"clients must be at least {MIN_SECURE_COHORT} for scheme {self.scheme!r} (the "
                f"sum of one client's update is that update); got {self.clients}"
            )
        if secure and n < MIN_SECURE_COHORT:
            raise ParameterError(
                f"clients_per_round must be at least {MIN_SECURE_COHORT} for scheme "
                f"{self.scheme!r} (the sum of one client's update is that update); got {n}"
            )
        if self.scheme == "ckks":
            if self.committee > MAX_COMMITTEE:
                raise ParameterError(
                    f"committee must be at most {MAX_COMMITTEE}; got {self.committee}"
                )
            if isinstance(self.corrupt_holders, bool) or not isinstance(
                self.corrupt_holders, int
            ) or not 0 <= self.corrupt_holders < self.committee:
                raise ParameterError(
                    f"corrupt_holders must be an integer in [0, committee={self.committee}); "
                    f"got {self.corrupt_holders!r}"
                )
            floor = (self.committee + self.corrupt_holders + 2) // 2
            if self.threshold is not None and self.threshold < floor:
                raise ParameterError(
                    f"threshold must be at least {floor} for {self.corrupt_holders} corrupt "
                    f"holders of {self.committee} (⌈(n + c + 1)/2⌉: else a server colluding "
                    f"with them opens two sets in one round); got {self.threshold}"
                )
            if self.threshold is not None and self.threshold > self.committee:
                raise ParameterError(
                    f"threshold must be at most committee ({self.committee}) key holders; "
                    f"got {self.threshold}"
                )
        elif self.corrupt_holders:
            raise ParameterError(
                f"corrupt_holders must be 0 for scheme {self.scheme!r} (it has no key holders); "
                f"got {self.corrupt_holders}"
            )
        if self.scheme == "masking" and self.threshold is not None:
            # every round's cohort of n must keep a strict majority: t in (n/2, n]
            low = max(self.clients, n) // 2
            if not low < self.threshold <= n:
                raise ParameterError(
                    f"threshold must be in ({low}, {n}] surviving clients for a cohort of {n} "
                    f"of {self.clients} clients; got {self.threshold}"
                )
        elif self.scheme == "plain" and self.threshold is not None:
            raise ParameterError(
                f"threshold must not be set for scheme 'plain' (it has none); got {self.threshold}"
            )
        if self.dp and self.dp_unit == "client":
            if not secure:
                raise ParameterError(
                    "dp_unit 'client' must run over a secure scheme (its noise shares protect "
                    f"only the sum); got scheme {self.scheme!r}"
                )
            if self.min_honest is not None and self.min_honest > n:
                raise ParameterError(
                    f"min_honest must be ≤ the clients per round ({n}); got {self.min_honest}"
                )

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
