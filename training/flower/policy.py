"""A node's own federation policy: what it agreed to out of band, never what the server says.

A SuperNode's node config names a JSON policy file (``policy=/etc/secagg/policy.json``)::

    {"dp": true, "epsilon": 4.0, "delta": 1e-05, "noise_multiplier": null,
     "max_grad_norm": 1.0, "rounds": 10, "nominal_records": 143, "dp_unit": "record",
     "scheme": "masking", "clients": 10, "committee": 5, "threshold": null,
     "graph": "full", "client_budget": 8.0}

Without DP the file says ``"dp": false`` explicitly and gives ``"weight_unit"``: the
record count of FedAvg weight 1 (the federation's mean record count), so that the
client computes its own weight ``records / weight_unit``.

Security: the server's ``train`` message repeats the federation config and the
aggregation settings; a node refuses (:class:`PolicyMismatchError`) any that differ from
its policy, so a server cannot turn DP off, raise ε, the budget or the round count, nor
shrink the threshold, cohort size or committee. The client's weight is computed here
(1 under DP), never received: a server cannot isolate one client by weighting the
others to zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context

from secagg.errors import IntegrityError, ParameterError
from secagg.schemes import AggregationConfig
from secagg_training.config import FederationConfig

# FederationConfig fields a node pins (DP, then aggregation); the rest (lr, model, seed…)
# change the model, not what a client releases or who can unmask it
DP_FIELDS = (
    "dp", "epsilon", "delta", "noise_multiplier", "max_grad_norm", "rounds",
    "nominal_records", "dp_unit",
)  # fmt: skip
AGGREGATION_FIELDS = ("scheme", "clients", "committee", "threshold", "graph")


class PolicyMismatchError(IntegrityError):
    """The server asked for something the node's own policy does not allow."""


@dataclass(frozen=True)
class NodePolicy:
    values: dict[str, Any]  # DP_FIELDS + AGGREGATION_FIELDS, as agreed
    budget: float | None  # this client's own ε budget (required under DP)
    weight_unit: float | None  # records per FedAvg weight 1 (required without DP)

    @property
    def dp(self) -> bool:
        return bool(self.values["dp"])

    @classmethod
    def from_dict(cls, document: dict[str, Any], *, budget: Any = None) -> NodePolicy:
        missing = [k for k in DP_FIELDS + AGGREGATION_FIELDS if k not in document]
        if missing:
            raise ParameterError(f"policy must set {', '.join(missing)}; got no value")
        if not isinstance(document["dp"], bool):
            raise ParameterError(f"policy dp must be true or false; got {document['dp']!r}")
        own = budget if budget is not None else document.get("client_budget")
        unit = document.get("weight_unit")
        if document["dp"] and not _positive(own):
            raise ParameterError(f"policy client_budget must be a positive ε under DP; got {own}")
        if not document["dp"] and not _positive(unit):
            raise ParameterError(f"policy weight_unit must be positive without DP; got {unit}")
        values = {k: document[k] for k in DP_FIELDS + AGGREGATION_FIELDS}
        if document["dp"]:
            return cls(values, float(own), None)  # type: ignore[arg-type]  # _positive
        return cls(values, None, float(unit))  # type: ignore[arg-type]

    @classmethod
    def load(cls, context: Context) -> NodePolicy:
        """The policy file named by the node config (required: no policy, no training)."""
        path = context.node_config.get("policy")
        if path is None:
            raise ParameterError("node config must name a policy file (policy=...); got none")
        try:
            document = json.loads(Path(str(path)).read_text())
        except (OSError, ValueError):
            raise ParameterError(f"policy must be a readable JSON file; got {path}") from None
        if not isinstance(document, dict):
            raise ParameterError(f"policy must be a JSON object; got {path}")
        return cls.from_dict(document, budget=context.node_config.get("budget"))

    def check_config(self, config: FederationConfig, nominal_records: int) -> None:
        """The server's federation config agrees with this policy on every pinned field."""
        offered = config.to_dict()
        for name in DP_FIELDS + AGGREGATION_FIELDS:
            if name == "nominal_records":
                continue
            _same(name, offered[name], self.values[name])
        if self.dp:
            _same("nominal_records", nominal_records, self.values["nominal_records"])

    def check_aggregation(self, scheme: str, aggregation: AggregationConfig) -> None:
        """The server's aggregation settings agree with this policy."""
        _same("scheme", scheme, self.values["scheme"])
        _same("max_clients", aggregation.max_clients, self.values["clients"])
        _same("committee", aggregation.committee, self.values["committee"])
        _same("threshold", aggregation.threshold, self.values["threshold"])
        _same(
            "corrupt_holders", aggregation.corrupt_holders, self.values.get("corrupt_holders", 0)
        )
        _same("graph", aggregation.graph, self.values["graph"])
        # record-level DP (the only DP on Flower) sets no release floor
        _same("min_honest", aggregation.min_honest, None)

    def weight(self, records: int, aggregation: AggregationConfig, update_clip: float) -> float:
        """This client's own FedAvg weight: 1 under DP, else records / weight_unit, which
        must fit the declared value bound (the cap the in-process engine derives)."""
        if self.dp:
            return 1.0
        if self.weight_unit is None:  # unreachable: from_dict requires it without DP
            raise ParameterError("policy weight_unit must be positive without DP; got none")
        weight = float(records) / self.weight_unit
        cap = aggregation.value_bound / max(update_clip, 1.0)
        if not 0 < weight <= cap * (1 + 1e-12):
            raise PolicyMismatchError(
                f"weight must be in (0, {cap:g}] (the declared value bound); got {weight:g}"
            )
        return weight


def policy_document(
    config: FederationConfig, *, nominal_records: int, weight_unit: float | None
) -> dict[str, Any]:
    """The policy a node agreeing to ``config`` holds (what ``flower-local`` writes)."""
    document = {k: config.to_dict()[k] for k in DP_FIELDS + AGGREGATION_FIELDS}
    document["corrupt_holders"] = config.corrupt_holders
    if config.dp:
        document["nominal_records"] = nominal_records
        document["client_budget"] = config.budget if config.budget is not None else config.epsilon
    else:
        document["weight_unit"] = weight_unit
    return document


def _positive(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _same(name: str, offered: Any, agreed: Any) -> None:
    if offered != agreed:
        raise PolicyMismatchError(
            f"{name} must be this node's policy value {agreed!r}; got {offered!r} from the server"
        )
