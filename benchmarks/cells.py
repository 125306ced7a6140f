"""One micro-benchmark cell: one scheme summing one workload through the real transport.

A *workload* is (dim, clients, dropout): synthetic update vectors from a
DeterministicRng, bounded by the value bound, plus which clients drop. Every
scheme of a group sees the same workload, and the group's floors (numpy float32 /
float64 sums over the survivors) and the ``plain`` cell are measured in the same
process minutes apart, so ratios compare like with like.
"""

from __future__ import annotations

import dataclasses
import math
import re
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from secagg.protocol import PartyId, RoundSession, Scheme, client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg_benchmarks.grid import VALUE_BOUND, Variant, dropped_count
from secagg_training.transport import InProcessTransport, TrafficReport, role_kind

MEMORY_METHOD = (
    "peak resident set size (Linux VmHWM, reset per cell through /proc/self/clear_refs) "
    "minus the resident size when the cell started; it counts every page the process "
    "touched (numpy, TenSEAL's C++ heap, the message queue), at page granularity, "
    "and excludes the cell's input vectors, which exist before the cell starts"
)
MEMORY_METHOD_FALLBACK = (
    "resource.getrusage ru_maxrss growth during the cell: a process-lifetime high-water "
    "mark that cannot be reset, so a cell smaller than an earlier one reports 0"
)


# ---------------------------------------------------------------- workloads


@dataclasses.dataclass
class Workload:
    """The inputs of one group: vectors, who drops, and the float64 reference sum."""

    dim: int
    clients: int
    dropout: float
    cohort: list[PartyId]
    inputs: dict[PartyId, np.ndarray]
    dropped: tuple[PartyId, ...]

    @property
    def survivors(self) -> list[PartyId]:
        gone = set(self.dropped)
        return [p for p in self.cohort if p not in gone]


def make_inputs(dim: int, clients: int, *, seed: int) -> dict[PartyId, np.ndarray]:
    """Uniform vectors on [-VALUE_BOUND, VALUE_BOUND] (the worst case for fixed-point range)."""
    root = DeterministicRng.from_int(seed, "bench/inputs")
    inputs = {}
    for i in range(clients):
        rng = root.fork(f"{dim}/{i}")
        inputs[client_id(i)] = (rng.uniform(dim) * 2.0 - 1.0) * VALUE_BOUND
    return inputs


def make_workload(
    inputs: dict[PartyId, np.ndarray], dim: int, clients: int, dropout: float, *, seed: int
) -> Workload:
    cohort = [client_id(i) for i in range(clients)]
    k = dropped_count(clients, dropout)
    order = DeterministicRng.from_int(seed, f"bench/dropouts/{clients}").shuffle_indices(clients)
    dropped = tuple(cohort[int(i)] for i in sorted(order[:k]))
    return Workload(dim, clients, dropout, cohort, inputs, dropped)


def _median_seconds(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_floors(work: Workload, repeats: int) -> dict[str, float]:
    """The physical floor: a numpy in-place sum of the survivors' vectors (f64 and f32)."""
    vectors64 = [work.inputs[p] for p in work.survivors]
    vectors32 = [v.astype(np.float32) for v in vectors64]

    def summed(vectors: list[np.ndarray], dtype: type) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            total: np.ndarray = np.zeros(work.dim, dtype=dtype)
            for v in vectors:
                total += v
            return total

        return run

    return {
        "numpy_f64_sum": _median_seconds(summed(vectors64, np.float64), repeats),
        "numpy_f32_sum": _median_seconds(summed(vectors32, np.float32), repeats),
    }


# ---------------------------------------------------------------- memory


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            found = re.search(rf"{field}:\s+(\d+)", fh.read())
    except OSError:
        return None
    return int(found.group(1)) if found else None


class PeakMemory:
    """Peak resident memory of one cell (see MEMORY_METHOD for what it counts)."""

    def __init__(self) -> None:
        self.method = MEMORY_METHOD
        self._start = 0
        self._resettable = False

    def __enter__(self) -> PeakMemory:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
            self._resettable = _rss_kib("VmHWM") is not None
        except OSError:
            self._resettable = False
        if self._resettable:
            self._start = _rss_kib("VmRSS") or 0
        else:
            self.method = MEMORY_METHOD_FALLBACK
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def peak_bytes(self) -> int:
        if self._resettable:
            return max(0, ((_rss_kib("VmHWM") or 0) - self._start) * 1024)
        return max(0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start) * 1024)


def available_memory_bytes() -> int:
    kib = None
    try:
        with open("/proc/meminfo") as fh:
            found = re.search(r"MemAvailable:\s+(\d+)", fh.read())
            kib = int(found.group(1)) if found else None
    except OSError:
        pass
    return (kib or 4 * 1024 * 1024) * 1024


# ---------------------------------------------------------------- schemes


def build_scheme(var: Variant, clients: int) -> Scheme:
    """The variant's scheme object: from the registry, or the benchmark-only comparator."""
    if var.scheme == "flare-ckks":
        from secagg_benchmarks.flare import FlareCkksComparator

        return FlareCkksComparator()
    config = AggregationConfig(
        max_clients=clients,
        value_bound=VALUE_BOUND,
        committee=var.committee,
        threshold=var.threshold,
        graph=var.graph,
        precision=var.precision,
    )
    return create_scheme(var.scheme, config)


def drop_phase(var: Variant, session: RoundSession) -> int:
    """The phase window from which dropped clients fall silent.

    Masking: the window in which clients send their masked input (the server
    phase named ``MASKED_INPUT``), i.e. after the key exchange and share
    distribution — the case where the server must rebuild the dropped clients'
    pairwise masks, its most expensive dropout. Others: the last client phase
    (for one-shot schemes: they never upload).
    """
    if var.scheme == "masking":
        order = [phase.name for phase in type(session.coordinator.phase)]
        if "MASKED_INPUT" in order:
            return min(order.index("MASKED_INPUT"), max(0, session.phases - 1))
    return max(0, session.phases - 1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


def _phase_table(report: TrafficReport, alive_clients: list[int], holders: int) -> list[dict]:
    """Per deadline window (named by the coordinator's phase during it): seconds per
    party of each kind and bytes sent by kind."""
    rows = []
    for index, window in enumerate(report.windows):
        clients = max(1, alive_clients[min(index, len(alive_clients) - 1)])
        secs = window.seconds
        rows.append(
            {
                "window": index,
                "name": window.name,
                "seconds": {
                    "client_per_client": secs.get("client", 0.0) / clients,
                    "server": secs.get("server", 0.0),
                    "holder_per_holder": secs.get("holder", 0.0) / max(1, holders),
                },
                "bytes_sent": {k: int(v) for k, v in window.bytes_sent.items()},
            }
        )
    return rows


def _per_kind(table: dict[PartyId, float], kind: str, parties: list[PartyId]) -> list[float]:
    return [float(table.get(p, 0.0)) for p in parties if role_kind(p) == kind]


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "max": 0.0}
    return {"mean": float(np.mean(values)), "max": float(np.max(values))}


def run_setup(scheme: Scheme, *, seed: int) -> dict[str, Any] | None:
    """The per-federation key ceremony, if the scheme has one, through the transport."""
    session = scheme.setup(rng=DeterministicRng.from_int(seed, "bench/setup"))
    if session is None:
        return None
    start = time.perf_counter()
    report = InProcessTransport().run(session)
    wall = time.perf_counter() - start
    holders = [p for p in session.participants if role_kind(p) == "holder"]
    return {
        "wall_seconds": wall,
        "seconds_by_kind": _jsonable(report.seconds_by_kind()),
        "seconds_per_holder": _stats(_per_kind(report.seconds, "holder", holders)),
        "bytes_sent_per_holder": report.mean_bytes("holder", sent=True),
        "bytes_received_per_holder": report.mean_bytes("holder", sent=False),
        "messages": report.messages,
    }


def run_cell(var: Variant, work: Workload, *, seed: int) -> dict[str, Any]:
    """Set up ``var``'s scheme, run one round on ``work``, and measure it."""
    scheme = build_scheme(var, work.clients)
    setup = run_setup(scheme, seed=seed)
    rng = DeterministicRng.from_int(seed, f"bench/round/{var.key}")
    session = scheme.open_round(0, work.cohort, work.dim, rng=rng)
    phase = drop_phase(var, session)
    dropouts = {p: phase for p in work.dropped}
    with PeakMemory() as memory:
        start = time.perf_counter()
        report = InProcessTransport().run(session, inputs=work.inputs, dropouts=dropouts)
        wall = time.perf_counter() - start
        aggregate = session.coordinator.finalize()
    reference = np.zeros(work.dim, dtype=np.float64)
    for party in aggregate.contributors:
        reference += work.inputs[party]
    error = float(np.max(np.abs(aggregate.vector - reference)))
    survivors = work.survivors
    holders = sorted(p for p in session.participants if role_kind(p) == "holder")
    alive = [len(work.cohort) if k < phase else len(survivors) for k in range(report.phases + 1)]
    phases = _phase_table(report, alive, len(holders))
    up = _per_kind(report.bytes_sent, "client", survivors)  # type: ignore[arg-type]
    down = _per_kind(report.bytes_received, "client", survivors)  # type: ignore[arg-type]
    client_secs = _per_kind(report.seconds, "client", survivors)
    holder_secs = _per_kind(report.seconds, "holder", holders)
    server_secs = float(report.seconds.get(session.coordinator.party, 0.0))
    critical = sum(
        p["seconds"]["client_per_client"]
        + p["seconds"]["server"]
        + p["seconds"]["holder_per_holder"]
        for p in phases
    )
    return {
        "status": "ok",
        "precision": var.precision,
        "describe": _jsonable(scheme.describe()),
        "drop_phase": phase,
        "contributors": len(aggregate.contributors),
        "dropped": len(aggregate.dropped),
        "expected_dropped": len(work.dropped),
        "seconds": {
            "client": _stats(client_secs),
            "server": server_secs,
            "holder": _stats(holder_secs),
            "critical_path": critical,
            "transport_wall": wall,
        },
        "phases": phases,
        "setup": setup,
        "bytes": {
            "up_per_client": float(np.mean(up)) if up else 0.0,
            "down_per_client": float(np.mean(down)) if down else 0.0,
            "up_per_param": (float(np.mean(up)) / work.dim) if up else 0.0,
            "down_per_param": (float(np.mean(down)) / work.dim) if down else 0.0,
            "holder_up": report.mean_bytes("holder", sent=True),
            "holder_down": report.mean_bytes("holder", sent=False),
            "messages": report.messages,
        },
        "error": {"max_abs": error, "scheme_bound": float(aggregate.error_bound)},
        "memory": {"peak_bytes": memory.peak_bytes(), "method": memory.method},
    }
