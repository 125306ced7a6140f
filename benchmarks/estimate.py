"""The feasibility rule: estimate a cell's time and memory before running it.

Priors come from ``Variant`` (numbers from shared/notes/performance.md); every
completed cell replaces them with the rates it measured, so by the time the
grid reaches 1M × 100 the estimate is made from this machine's own 100k cells.
"""

from __future__ import annotations

import dataclasses
import math

from secagg_benchmarks.grid import Variant


def degree(var: Variant, clients: int) -> float:
    """How many peers a client's work scales with (pairwise masks need one PRG each)."""
    if var.scheme != "masking":
        return 1.0
    if var.graph == "full":
        return float(max(1, clients - 1))
    return float(min(max(1, clients - 1), max(1.0, 2.0 * math.log2(max(2, clients)))))


@dataclasses.dataclass
class Rates:
    client_ns: float  # per parameter per peer-degree
    server_ns: float  # per parameter per client
    dropout_ns: float  # per parameter per (dropped, peer) pair
    upload_bpp: float


@dataclasses.dataclass(frozen=True)
class Estimate:
    seconds: float
    memory_bytes: float


class Estimator:
    """Per-variant cost rates, calibrated from the cells already measured."""

    def __init__(self) -> None:
        self._rates: dict[str, Rates] = {}

    def rates(self, var: Variant) -> Rates:
        if var.key not in self._rates:
            self._rates[var.key] = Rates(
                client_ns=var.client_ns_per_param,
                server_ns=var.server_ns_per_param_client,
                dropout_ns=0.6 if var.scheme == "masking" else 0.0,
                upload_bpp=var.upload_bytes_per_param,
            )
        return self._rates[var.key]

    def estimate(self, var: Variant, dim: int, clients: int, dropped: int) -> Estimate:
        r = self.rates(var)
        client = clients * dim * r.client_ns * degree(var, clients)
        server = clients * dim * r.server_ns
        repair = dropped * degree(var, clients) * dim * r.dropout_ns
        seconds = (client + server + repair) * 1e-9 * 1.3 + 0.05
        inputs = clients * dim * 8.0
        queued = clients * dim * max(r.upload_bpp, 8.0) * 1.5
        return Estimate(seconds, inputs + queued + dim * 64.0)

    def calibrate(self, var: Variant, dim: int, clients: int, dropped: int, cell: dict) -> None:
        """Adopt the rates a completed cell measured (the larger cell wins: less noise)."""
        r = self.rates(var)
        secs = cell["seconds"]
        survivors = max(1, clients - dropped)
        r.client_ns = max(1e-3, secs["client"]["mean"] * 1e9 / (dim * degree(var, clients)))
        base_server = secs["server"] * 1e9 / (dim * survivors)
        if dropped == 0:
            r.server_ns = base_server
        elif var.scheme == "masking":
            extra = secs["server"] * 1e9 - survivors * dim * r.server_ns
            pairs = dropped * degree(var, clients) * dim
            r.dropout_ns = max(r.dropout_ns * 0.1, extra / pairs)
        up = cell["bytes"]["up_per_param"]
        if up > 0:
            r.upload_bpp = up
