"""Privacy accounting: the tight accountant of record, an RDP cross-check, σ calibration.

System of record: Google's dp-accounting privacy-loss-distribution (PLD)
accountant under add/remove-one adjacency, pessimistic rounding, with a value
discretization of :data:`PLD_DISCRETIZATION` (one ε query stays around tens of
milliseconds; the result is an upper bound, at most a few hundredths looser
than a 1e-4 grid). RDP is a cross-check only (it over-reports by ~10–20%).
Opacus's GDP accountant is never used: it under-reports.

A client's accountant state is the composition of the DP events of every
round it trained in (:class:`AccountantState`). Events serialize to JSON in
dp-accounting's named-tuple layout (``class_name`` + fields), so anyone can
rebuild the ``DpEvent`` and recompute ε with any accountant.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.dp_event import DpEvent
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from secagg_privacy.checks import non_negative_int, positive
from secagg_privacy.errors import PrivacyParameterError

__all__ = [
    "ACCOUNTANT",
    "ADJACENCY",
    "PLD_DISCRETIZATION",
    "AccountantState",
    "DpEvent",
    "calibrate_noise_multiplier",
    "compose",
    "epsilon",
    "epsilon_of_event",
    "epsilon_rdp",
    "epsilon_rdp_of_event",
    "format_epsilon",
    "guarantee_label",
    "event_from_json",
    "event_to_history",
    "event_to_json",
    "gaussian_event",
    "library_versions",
    "sgd_event",
]


PLD_DISCRETIZATION = 3e-3
ACCOUNTANT = f"dp_accounting.pld (pessimistic, discretization {PLD_DISCRETIZATION:g})"
ADJACENCY = "add-or-remove-one"
_EPSILON_DECIMALS = 3
_CALIBRATION_RELATIVE_TOLERANCE = 1e-3
_SIGMA_CEILING = 1e4
_CACHE_SIZE = 4096


# ---------------------------------------------------------------- validation


def _check_delta(delta: object) -> float:
    d = positive("delta", delta, upper=1.0)
    if d >= 1.0:
        raise PrivacyParameterError(f"delta must be in (0, 1); got {delta!r}")
    return d


# ---------------------------------------------------------------- events


def sgd_event(*, noise_multiplier: float, sample_rate: float, steps: int) -> DpEvent:
    """The DP event of ``steps`` DP-SGD steps with Poisson rate q and multiplier σ."""
    sigma = positive("noise_multiplier", noise_multiplier)
    q = positive("sample_rate", sample_rate, upper=1.0)
    n = non_negative_int("steps", steps)
    if n == 0:
        return dp_event.NoOpDpEvent()
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), n
    )


def gaussian_event(*, noise_multiplier: float, count: int = 1) -> DpEvent:
    """``count`` unsampled Gaussian mechanisms of multiplier σ (e.g. known-cohort FL rounds)."""
    sigma = positive("noise_multiplier", noise_multiplier)
    n = non_negative_int("steps", count)
    if n == 0:
        return dp_event.NoOpDpEvent()
    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), n)


# A base mechanism is ("gaussian", σ, 1.0) or ("poisson_gaussian", σ, q).
_Base = tuple[str, float, float]


def _flatten(event: DpEvent, count: int, out: Counter[_Base]) -> None:
    """Add ``event`` × ``count`` to a multiset of base mechanisms (composition commutes)."""
    if isinstance(event, dp_event.NoOpDpEvent):
        return
    if isinstance(event, dp_event.SelfComposedDpEvent):
        _flatten(event.event, count * non_negative_int("steps", event.count), out)
    elif isinstance(event, dp_event.ComposedDpEvent):
        for inner in event.events:
            _flatten(inner, count, out)
    elif isinstance(event, dp_event.GaussianDpEvent):
        out[("gaussian", positive("noise_multiplier", event.noise_multiplier), 1.0)] += count
    elif isinstance(event, dp_event.PoissonSampledDpEvent) and isinstance(
        event.event, dp_event.GaussianDpEvent
    ):
        sigma = positive("noise_multiplier", event.event.noise_multiplier)
        q = positive("sampling_probability", event.sampling_probability, upper=1.0)
        out[("poisson_gaussian", sigma, q)] += count
    else:
        raise PrivacyParameterError(
            "event must be built from Gaussian / Poisson-sampled Gaussian / composed events; "
            f"got {type(event).__name__}"
        )


def _canonical(event: DpEvent) -> tuple[tuple[_Base, int], ...]:
    counts: Counter[_Base] = Counter()
    _flatten(event, 1, counts)
    return tuple(sorted((base, n) for base, n in counts.items() if n > 0))


def _rebuild(canonical: tuple[tuple[_Base, int], ...]) -> DpEvent:
    parts: list[DpEvent] = []
    for (kind, sigma, q), n in canonical:
        inner: DpEvent = dp_event.GaussianDpEvent(sigma)
        if kind == "poisson_gaussian":
            inner = dp_event.PoissonSampledDpEvent(q, inner)
        parts.append(dp_event.SelfComposedDpEvent(inner, n))
    if not parts:
        return dp_event.NoOpDpEvent()
    return parts[0] if len(parts) == 1 else dp_event.ComposedDpEvent(parts)


def compose(events: Iterable[DpEvent]) -> DpEvent:
    """The composition of ``events`` in canonical form (equal mechanisms merged)."""
    return _rebuild(_canonical(dp_event.ComposedDpEvent(list(events))))


def event_to_history(event: DpEvent) -> list[tuple[float, float, int]]:
    """``[(σ, q, steps), ...]`` — Opacus accountants' ``history`` layout, for cross-checks."""
    return [(sigma, q, n) for (_, sigma, q), n in _canonical(event)]


# ---------------------------------------------------------------- JSON

_EVENT_CLASSES: dict[str, type[DpEvent]] = {
    cls.__name__: cls
    for cls in (
        dp_event.NoOpDpEvent,
        dp_event.GaussianDpEvent,
        dp_event.PoissonSampledDpEvent,
        dp_event.SelfComposedDpEvent,
        dp_event.ComposedDpEvent,
    )
}
_EVENT_MODULE = dp_event.__name__


def _to_jsonable(event: DpEvent) -> dict[str, Any]:
    name = type(event).__name__
    if name not in _EVENT_CLASSES:
        raise PrivacyParameterError(f"event must be a supported DpEvent; got {name}")
    out: dict[str, Any] = {"module_name": _EVENT_MODULE, "class_name": name}
    if isinstance(event, dp_event.GaussianDpEvent):
        out["noise_multiplier"] = float(event.noise_multiplier)
    elif isinstance(event, dp_event.PoissonSampledDpEvent):
        out["sampling_probability"] = float(event.sampling_probability)
        out["event"] = _to_jsonable(event.event)
    elif isinstance(event, dp_event.SelfComposedDpEvent):
        out["event"] = _to_jsonable(event.event)
        out["count"] = int(event.count)
    elif isinstance(event, dp_event.ComposedDpEvent):
        out["events"] = [_to_jsonable(e) for e in event.events]
    return out


def event_to_json(event: DpEvent) -> str:
    """Canonical JSON of ``event`` in dp-accounting's named-tuple layout."""
    return json.dumps(_to_jsonable(event), sort_keys=True, separators=(",", ":"))


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyParameterError(f"event field {key} must be a number; got {value!r}")
    return float(value)


def _from_jsonable(obj: object, depth: int = 0) -> DpEvent:
    if depth > 16 or not isinstance(obj, dict):
        raise PrivacyParameterError("event must be a JSON object nested at most 16 deep")
    name = obj.get("class_name")
    if obj.get("module_name") != _EVENT_MODULE or name not in _EVENT_CLASSES:
        raise PrivacyParameterError(
            f"event class must be one of {sorted(_EVENT_CLASSES)}; got {name!r}"
        )
    if name == "NoOpDpEvent":
        return dp_event.NoOpDpEvent()
    if name == "GaussianDpEvent":
        return dp_event.GaussianDpEvent(_number(obj, "noise_multiplier"))
    if name == "PoissonSampledDpEvent":
        return dp_event.PoissonSampledDpEvent(
            _number(obj, "sampling_probability"), _from_jsonable(obj.get("event"), depth + 1)
        )
    if name == "SelfComposedDpEvent":
        count = obj.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PrivacyParameterError(f"event count must be a non-negative int; got {count!r}")
        return dp_event.SelfComposedDpEvent(_from_jsonable(obj.get("event"), depth + 1), count)
    events = obj.get("events")
    if not isinstance(events, list):
        raise PrivacyParameterError("composed event must list its events")
    return dp_event.ComposedDpEvent([_from_jsonable(e, depth + 1) for e in events])


def event_from_json(text: str) -> DpEvent:
    """Rebuild a ``DpEvent`` from :func:`event_to_json` output (closed set of classes)."""
    try:
        obj = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise PrivacyParameterError("event must be valid JSON; got unparsable text") from exc
    event = _from_jsonable(obj)
    _canonical(event)  # validates every parameter range
    return event


# ---------------------------------------------------------------- ε


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pld_epsilon(canonical: tuple[tuple[_Base, int], ...], delta: float) -> float:
    if not canonical:
        return 0.0
    accountant = pld_privacy_accountant.PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    accountant.compose(_rebuild(canonical))
    return max(0.0, float(accountant.get_epsilon(delta)))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _rdp_epsilon(canonical: tuple[tuple[_Base, int], ...], delta: float) -> float:
    if not canonical:
        return 0.0
    accountant = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    accountant.compose(_rebuild(canonical))
    return max(0.0, float(accountant.get_epsilon(delta)))


def epsilon_of_event(event: DpEvent, *, delta: float) -> float:
    """ε at δ of ``event`` with the accountant of record (PLD); cached."""
    return _pld_epsilon(_canonical(event), _check_delta(delta))


def epsilon_rdp_of_event(event: DpEvent, *, delta: float) -> float:
    """ε at δ of ``event`` by RDP (cross-check only; looser than PLD)."""
    return _rdp_epsilon(_canonical(event), _check_delta(delta))


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Poisson-sampled Gaussian steps (PLD, the system of record)."""
    event = sgd_event(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return epsilon_of_event(event, delta=delta)


def epsilon_rdp(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """RDP ε for the same schedule (cross-check)."""
    event = sgd_event(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return epsilon_rdp_of_event(event, delta=delta)


def calibrate_noise_multiplier(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The smallest σ (to 0.1%) whose whole planned schedule stays within ``target_epsilon``.

    Calibrate once for every step the client will run over all rounds, never per
    round. The returned σ satisfies ``epsilon(σ, q, steps, δ) <= target_epsilon``
    by construction (bisection keeps the upper end feasible).
    """
    target = positive("target_epsilon", target_epsilon)
    _check_delta(delta)
    n = non_negative_int("steps", steps)
    if n == 0:
        raise PrivacyParameterError("steps must be at least 1 to calibrate; got 0")

    def eps_at(sigma: float) -> float:
        return epsilon(noise_multiplier=sigma, sample_rate=sample_rate, steps=n, delta=delta)

    lo, hi = 0.0, 1.0
    while eps_at(hi) > target:
        lo, hi = hi, hi * 2.0
        if hi > _SIGMA_CEILING:
            raise PrivacyParameterError(
                f"target_epsilon must be reachable with noise_multiplier <= {_SIGMA_CEILING:g}; "
                f"got {target_epsilon!r}"
            )
    while hi - lo > _CALIBRATION_RELATIVE_TOLERANCE * hi:
        mid = (lo + hi) / 2.0
        if eps_at(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class AccountantState:
    """One client's composed privacy history: the events of every round it trained in.

    Immutable: :meth:`with_event` returns the would-be state (a dry run) without
    touching this one.
    """

    events: tuple[DpEvent, ...] = ()

    def with_event(self, event: DpEvent) -> AccountantState:
        _canonical(event)
        return AccountantState((*self.events, event))

    @property
    def composed(self) -> DpEvent:
        return compose(self.events)

    def epsilon(self, *, delta: float) -> float:
        return epsilon_of_event(self.composed, delta=delta)

    def to_json(self) -> str:
        return json.dumps(
            [json.loads(event_to_json(e)) for e in self.events], separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str) -> AccountantState:
        try:
            items = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PrivacyParameterError("accountant state must be valid JSON") from exc
        if not isinstance(items, list):
            raise PrivacyParameterError("accountant state must be a JSON list of events")
        return cls(tuple(event_from_json(json.dumps(item)) for item in items))


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numerics the recorded ε depends on."""
    out: dict[str, str] = {}
    for dist in ("dp-accounting", "opacus", "torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def format_epsilon(value: float, decimals: int = _EPSILON_DECIMALS) -> str:
    """ε rounded *up* to ``decimals`` places: a printed bound must never be below the true one."""
    if not math.isfinite(value):
        return str(value)
    scale = 10**decimals
    return f"{math.ceil(value * scale) / scale:.{decimals}f}"


def guarantee_label(*, unit: str, adjacency: str, epsilon: float, delta: float) -> str:
    """The one-line guarantee a reader needs: unit, adjacency, ε (rounded up) and δ."""
    eps = format_epsilon(epsilon)
    return f"(ε ≤ {eps}, δ = {delta:g})-DP for {unit} under {adjacency} adjacency"
