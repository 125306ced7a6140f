"""Client-level (distributed) DP for the secure-aggregation schemes.

DP-FedAvg with the noise split across clients: each client clips its whole
model update to L2 norm S and adds its *share* of the Gaussian noise,
N(0, z²S²/h_min), before protecting it. The server only ever sees the sum.
If at least ``h_min`` honest clients survive the round, their shares sum to
noise of variance at least z²S², so the sum is a Gaussian mechanism of
multiplier z for adding/removing one client's whole update. Colluding or
dropped clients' shares are not counted, which is why calibration uses the
minimum guaranteed number of honest survivors, not the cohort size.

Accounting goes to a second ledger kind (:data:`secagg_privacy.ledger.KIND_CLIENT_LEVEL`)
with its own threat model:

- ``cohort-known`` (the default; the server picks or observes the cohort):
  each participation is an unsampled Gaussian of multiplier z for that client.
- ``cohort-hidden``: clients self-select with Poisson rate q by a process the
  adversary cannot observe; every round is a Poisson-sampled Gaussian for
  every member of the population (recorded under :data:`POPULATION`).

Deferred: integer-domain noise (discrete Gaussian / Skellam) for the masking
ring. The noise here is real-valued and is added before fixed-point encoding;
the rounding is per-client post-processing that this accounting does not
model exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secagg_privacy.accounting import (
    DpEvent,
    epsilon_of_event,
    gaussian_event,
    sgd_event,
)
from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError
from secagg_privacy.ledger import KIND_CLIENT_LEVEL, LedgerEntry, PrivacyLedger
from secagg_privacy.noise import SecureGaussian

__all__ = [
    "ADJACENCY_CLIENT",
    "UNIT_CLIENT",
    "COHORT_HIDDEN",
    "COHORT_KNOWN",
    "POPULATION",
    "ClientLevelParams",
    "calibrate_client_level",
    "clip_update",
    "client_level_epsilon",
    "privatize_update",
    "record_client_level_round",
    "round_event",
]

COHORT_KNOWN = "cohort-known"
COHORT_HIDDEN = "cohort-hidden"
_THREAT_MODELS = (COHORT_KNOWN, COHORT_HIDDEN)
POPULATION = "*population*"
UNIT_CLIENT = (
    "one participating client's whole clipped model update per round (all its records; "
    "not whether it took part)"
)
# The accounted sensitivity is S: one update replaced by zeros. Participation is public
# (the server picks the cohort; the weight coordinate is the contributor count).
ADJACENCY_CLIENT = "zero-out (the update replaced by zeros)"
_CALIBRATION_RELATIVE_TOLERANCE = 1e-3


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PrivacyParameterError(f"{name} must be a finite positive number; got {value!r}")
    if value <= 0:
        raise PrivacyParameterError(f"{name} must be a finite positive number; got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrivacyParameterError(f"{name} must be a positive integer; got {value!r}")
    return value


@dataclass(frozen=True)
class ClientLevelParams:
    """Public parameters of one round of distributed client-level DP.

    Attributes:
        noise_multiplier: z, the multiplier of the *total honest* noise.
        clip_norm: S, the L2 bound on each client's whole update.
        min_honest: h_min, guaranteed honest clients surviving to the sum.
        cohort_size: clients selected this round (≥ h_min).
        threat_model: ``"cohort-known"`` or ``"cohort-hidden"``.
        sample_rate: Poisson rate of the hidden cohort (``cohort-hidden`` only).
    """

    noise_multiplier: float
    clip_norm: float
    min_honest: int
    cohort_size: int
    threat_model: str = COHORT_KNOWN
    sample_rate: float | None = None

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("clip_norm", self.clip_norm)
        h = _positive_int("min_honest", self.min_honest)
        n = _positive_int("cohort_size", self.cohort_size)
        if h > n:
            raise PrivacyParameterError(f"min_honest must be at most cohort_size {n}; got {h}")
        if self.threat_model not in _THREAT_MODELS:
            raise PrivacyParameterError(
                f"threat_model must be one of {_THREAT_MODELS}; got {self.threat_model!r}"
            )
        if self.threat_model == COHORT_HIDDEN:
            q = _positive("sample_rate", self.sample_rate)
            if q > 1.0:
                raise PrivacyParameterError(f"sample_rate must be in (0, 1]; got {q}")
        elif self.sample_rate is not None:
            raise PrivacyParameterError(
                "sample_rate must be None when the cohort is known to the adversary; "
                f"got {self.sample_rate!r}"
            )

    @property
    def share_std(self) -> float:
        """Each client's noise standard deviation: z·S/√h_min."""
        return self.noise_multiplier * self.clip_norm / math.sqrt(self.min_honest)

    def describe_threat_model(self) -> str:
        who = (
            "the server knows which clients are in each cohort; each participation is an "
            "unsampled Gaussian mechanism"
            if self.threat_model == COHORT_KNOWN
            else "clients self-select with Poisson rate q unobserved by the adversary; "
            "every round counts for every client as a Poisson-sampled Gaussian"
        )
        return (
            f"client-level DP of each client's whole update; {who}; the sum's noise is "
            f"N(0, z²S²) only if at least {self.min_honest} honest clients of the "
            f"{self.cohort_size} selected survive to the sum (colluders and dropouts add no "
            "protection); the server sees only the securely aggregated sum"
        )


def clip_update(update: np.ndarray, clip_norm: float) -> np.ndarray:
    """``update`` scaled down to L2 norm ≤ ``clip_norm`` (float64; non-finite refused)."""
    s = _positive("clip_norm", clip_norm)
    if not isinstance(update, np.ndarray) or update.ndim != 1:
        raise PrivacyParameterError("update must be a 1-D numpy array")
    if not np.issubdtype(update.dtype, np.floating) and not np.issubdtype(update.dtype, np.integer):
        raise PrivacyParameterError(f"update must be numeric; got dtype {update.dtype}")
    vec = update.astype(np.float64)
    if not np.all(np.isfinite(vec)):
        raise PrivacyParameterError("update must be finite; got NaN or infinity")
    norm = float(np.linalg.norm(vec))
    return vec * (s / norm) if norm > s else vec


def privatize_update(
    update: np.ndarray, *, params: ClientLevelParams, noise: SecureGaussian
) -> np.ndarray:
    """Clip ``update`` to S and add this client's noise share N(0, z²S²/h_min).

    Security: the result is what the client feeds into secure aggregation; the
    clean update and the noise draw never leave this function separately.
    """
    if not isinstance(noise, SecureGaussian):
        raise InsecureConfigurationError(
            f"noise must be a SecureGaussian; got {type(noise).__name__}"
        )
    clipped = clip_update(update, params.clip_norm)
    return clipped + noise.sample_array(clipped.shape, std=params.share_std)


def round_event(params: ClientLevelParams) -> DpEvent:
    """One round's client-level event under ``params.threat_model``."""
    if params.threat_model == COHORT_HIDDEN:
        return sgd_event(
            noise_multiplier=params.noise_multiplier,
            sample_rate=float(params.sample_rate or 0.0),
            steps=1,
        )
    return gaussian_event(noise_multiplier=params.noise_multiplier)


def client_level_epsilon(
    *,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    threat_model: str = COHORT_KNOWN,
    sample_rate: float | None = None,
) -> float:
    """ε after ``rounds`` participations (known cohort) or rounds (hidden cohort)."""
    n = _positive_int("rounds", rounds)
    if threat_model == COHORT_HIDDEN:
        event = sgd_event(
            noise_multiplier=noise_multiplier,
            sample_rate=_positive("sample_rate", sample_rate),
            steps=n,
        )
    elif threat_model == COHORT_KNOWN:
        event = gaussian_event(noise_multiplier=noise_multiplier, count=n)
    else:
        raise PrivacyParameterError(
            f"threat_model must be one of {_THREAT_MODELS}; got {threat_model!r}"
        )
    return epsilon_of_event(event, delta=delta)


def calibrate_client_level(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    threat_model: str = COHORT_KNOWN,
    sample_rate: float | None = None,
) -> float:
    """The smallest z (to 0.1%) keeping ``rounds`` rounds within ``target_epsilon``."""
    target = _positive("target_epsilon", target_epsilon)

    def eps_at(z: float) -> float:
        return client_level_epsilon(
            noise_multiplier=z,
            rounds=rounds,
            delta=delta,
            threat_model=threat_model,
            sample_rate=sample_rate,
        )

    lo, hi = 0.0, 1.0
    while eps_at(hi) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise PrivacyParameterError(
                f"target_epsilon must be reachable with z <= 1e4; got {target_epsilon!r}"
            )
    while hi - lo > _CALIBRATION_RELATIVE_TOLERANCE * hi:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if eps_at(mid) > target else (lo, mid)
    return hi


def record_client_level_round(
    ledger: PrivacyLedger,
    round_index: int,
    *,
    participants: Sequence[str],
    params: ClientLevelParams,
    delta: float,
    extra: dict[str, object] | None = None,
) -> list[LedgerEntry]:
    """Commit one round's client-level spend to the (second) ledger.

    Known cohort: one entry per participant. Hidden cohort: one entry for
    :data:`POPULATION` (every client is charged the same sampled event).
    """
    event = round_event(params)
    hidden = params.threat_model == COHORT_HIDDEN
    subjects = [POPULATION] if hidden else list(participants)
    if not subjects:
        raise PrivacyParameterError("participants must name at least one client; got none")
    extra = {
        "min_honest": params.min_honest,
        "cohort_size": params.cohort_size,
        **(extra or {}),
    }
    return [
        ledger.record_round(
            subject,
            round_index,
            kind=KIND_CLIENT_LEVEL,
            event=event,
            delta=delta,
            noise_multiplier=params.noise_multiplier,
            sample_rate=float(params.sample_rate) if hidden and params.sample_rate else 1.0,
            steps=1,
            clip_norm=params.clip_norm,
            unit=UNIT_CLIENT,
            adjacency=ADJACENCY_CLIENT,
            sampling="poisson (hidden cohort)" if hidden else "none (cohort known)",
            threat_model=params.describe_threat_model(),
            extra=extra,
        )
        for subject in subjects
    ]
