"""The closed registry of aggregation schemes and their shared configuration."""

from __future__ import annotations

import dataclasses
import importlib

from secagg.errors import ParameterError, UnknownSchemeError
from secagg.protocol import Scheme

# name -> "module:factory"; factories take an AggregationConfig. Imported lazily so
# that `plain` works even where a heavy dependency (tenseal) is broken.
_SCHEMES: dict[str, str] = {
    "plain": "secagg.plain:PlaintextSum.from_config",
    "ckks": "secagg.ckks:ThresholdCKKS.from_config",
    "masking": "secagg.masking:PairwiseMasking.from_config",
}


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
    """What every scheme needs to know before a federation starts (all public).

    Attributes:
        max_clients: the largest cohort a round may have.
        value_bound: every coordinate a client submits satisfies |x| ≤ value_bound.
        committee: key holders (CKKS) — ignored by schemes without a committee.
        threshold: parties needed to finish a round (key holders for CKKS, surviving
            clients for masking); ``None`` picks the scheme's default.
        graph: masking communication graph, ``"full"`` or ``"sparse"`` (SecAgg+).
        precision: the largest acceptable absolute error per coordinate of the sum.
        min_honest: the fewest contributors a released sum may have (whoever unmasks or
            decrypts refuses a smaller one); set by client-level DP to h + declared
            colluders so that every released sum holds at least h honest noise shares.
            ``None``: no floor beyond the scheme's own threshold.
        corrupt_holders: CKKS key holders that may collude with a malicious server; one
            opened set per round needs ``threshold ≥ ⌈(committee + c + 1)/2⌉`` (0 by default:
            the default 3-of-5 tolerates none against an equivocating server).
    """

    max_clients: int
    value_bound: float = 1.0
    committee: int = 5
    threshold: int | None = None
    graph: str = "full"
    precision: float = 1e-5
    min_honest: int | None = None
    corrupt_holders: int = 0

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise ParameterError(f"max_clients must be ≥ 1; got {self.max_clients}")
        if not self.value_bound > 0:
            raise ParameterError(f"value_bound must be > 0; got {self.value_bound}")
        if self.committee < 1:
            raise ParameterError(f"committee must be ≥ 1; got {self.committee}")
        if self.threshold is not None and self.threshold < 1:
            raise ParameterError(f"threshold must be ≥ 1; got {self.threshold}")
        if self.graph not in ("full", "sparse"):
            raise ParameterError(f"graph must be 'full' or 'sparse'; got {self.graph!r}")
        if isinstance(self.corrupt_holders, bool) or not isinstance(self.corrupt_holders, int):
            raise ParameterError(
                f"corrupt_holders must be an integer; got {self.corrupt_holders!r}"
            )
        if not 0 <= self.corrupt_holders < self.committee:
            raise ParameterError(
                f"corrupt_holders must be in [0, committee={self.committee}); "
                f"got {self.corrupt_holders}"
            )
        if not self.precision > 0:
            raise ParameterError(f"precision must be > 0; got {self.precision}")
        if self.min_honest is not None and (
            isinstance(self.min_honest, bool)
            or not isinstance(self.min_honest, int)
            or not 1 <= self.min_honest <= self.max_clients
        ):
            raise ParameterError(
                f"min_honest must be an integer in [1, max_clients={self.max_clients}]; "
                f"got {self.min_honest!r}"
            )


def available_schemes() -> tuple[str, ...]:
    return tuple(_SCHEMES)


def create_scheme(name: str, config: AggregationConfig) -> Scheme:
    """Build the named scheme; unknown names raise :class:`UnknownSchemeError`."""
    target = _SCHEMES.get(name)
    if target is None:
        raise UnknownSchemeError(
            f"scheme must be one of {', '.join(available_schemes())}; got {name!r}"
        )
    module_name, _, attr_path = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    scheme = obj(config)  # type: ignore[operator]
    if not isinstance(scheme, Scheme):
        raise ParameterError(f"factory for {name!r} must return a Scheme")
    return scheme
