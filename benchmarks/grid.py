"""What the benchmark measures: scheme variants, grid presets and the feasibility rule."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

from secagg.errors import ParameterError

VALUE_BOUND = 1.0
DEFAULT_PRECISION = 1e-5  # AggregationConfig's default: what `secagg run` ships with
CKKS_PRECISION = 1e-6  # the CKKS goal is stated at error ≤ 1e-6


@dataclasses.dataclass(frozen=True)
class Variant:
    """One column of the grid: a registered scheme (or the comparator) and its settings.

    Attributes:
        key: the name used in results (``masking-full``).
        scheme: the registry name (``masking``) or ``flare-ckks`` for the comparator.
        kind: ``reference`` (insecure plaintext), ``secure`` or ``comparator``.
        committee, threshold, graph, precision: AggregationConfig fields for this variant.
        dropouts: if set, the only dropout rates this variant is measured at.
        upload_bytes_per_param: prior for the memory estimate (replaced once measured).
        client_ns_per_param, server_ns_per_param_client: priors for the time estimate.
    """

    key: str
    scheme: str
    kind: str
    label: str
    committee: int = 5
    threshold: int | None = None
    graph: str = "full"
    precision: float = DEFAULT_PRECISION
    dropouts: tuple[float, ...] | None = None
    upload_bytes_per_param: float = 8.0
    client_ns_per_param: float = 1.0
    server_ns_per_param_client: float = 1.0


VARIANTS: tuple[Variant, ...] = (
    Variant("plain", "plain", "reference", "plaintext (insecure reference)"),
    Variant(
        "masking-full",
        "masking",
        "secure",
        "pairwise masking, full graph (SecAgg)",
        graph="full",
        upload_bytes_per_param=4.0,
        client_ns_per_param=0.8,
        server_ns_per_param_client=2.0,
    ),
    Variant(
        "masking-sparse",
        "masking",
        "secure",
        "pairwise masking, sparse graph (SecAgg+)",
        graph="sparse",
        upload_bytes_per_param=4.0,
        client_ns_per_param=0.8,
        server_ns_per_param_client=2.0,
    ),
    Variant(
        "ckks-3of5",
        "ckks",
        "secure",
        "threshold CKKS, 3-of-5 key holders",
        committee=5,
        threshold=3,
        precision=CKKS_PRECISION,
        upload_bytes_per_param=60.0,
        client_ns_per_param=900.0,
        server_ns_per_param_client=120.0,
    ),
    Variant(
        "flare-ckks",
        "flare-ckks",
        "comparator",
        "NVIDIA FLARE HE (single key, benchmark-only)",
        upload_bytes_per_param=60.0,
        client_ns_per_param=1000.0,
        server_ns_per_param_client=300.0,
        # Its cost only falls with dropout (fewer uploads to add); the goals compare at 0%.
        dropouts=(0.0,),
    ),
)
VARIANT_KEYS = tuple(v.key for v in VARIANTS)


def variant(key: str) -> Variant:
    for v in VARIANTS:
        if v.key == key:
            return v
    raise ParameterError(f"scheme must be one of {', '.join(VARIANT_KEYS)}; got {key!r}")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A benchmark plan: the micro grid, the end-to-end runs, and the per-cell budgets."""

    name: str
    schemes: tuple[str, ...]
    dims: tuple[int, ...]
    clients: tuple[int, ...]
    dropouts: tuple[float, ...]
    cell_seconds: float  # estimated-time budget per cell; larger cells are skipped
    memory_fraction: float = 0.5  # of available RAM a cell may be estimated to use
    floor_repeats: int = 3
    e2e: bool = True
    e2e_rounds: int = 3
    e2e_clients: int = 10
    # "dp" = DP-SGD on (what `secagg run` does by default), "no-dp"; the first is the goal's
    e2e_modes: tuple[str, ...] = ("dp", "no-dp")
    seed: int = 2026

    def cells(self) -> list[tuple[int, int, float]]:
        """(dim, clients, dropout) groups, smallest work first (priors get calibrated early)."""
        groups = itertools.product(self.dims, self.clients, self.dropouts)
        return sorted(groups, key=lambda g: (g[0] * g[1], g[0], g[2]))


PRESETS: Mapping[str, Grid] = {
    # The smoke test: every scheme, tiny vectors; < 2 min on 2 cores with CKKS included.
    "quick": Grid(
        name="quick",
        schemes=VARIANT_KEYS,
        dims=(4096,),
        clients=(4, 10),
        dropouts=(0.0, 0.1, 0.3),
        cell_seconds=20.0,
        floor_repeats=1,
        e2e=True,
        e2e_rounds=1,
        e2e_clients=4,
        e2e_modes=("no-dp",),
    ),
    # What fits in ~20 minutes on 2 cores: the goal cells (1M × 100) and their neighbours.
    "standard": Grid(
        name="standard",
        schemes=VARIANT_KEYS,
        dims=(100_000, 1_000_000),
        clients=(10, 100),
        dropouts=(0.0, 0.1, 0.3),
        cell_seconds=300.0,
        e2e_rounds=5,
    ),
    # The whole issue-6 grid; cells over budget are skipped with their estimate.
    "full": Grid(
        name="full",
        schemes=VARIANT_KEYS,
        dims=(100_000, 1_000_000, 10_000_000),
        clients=(10, 100, 1000),
        dropouts=(0.0, 0.1, 0.3),
        cell_seconds=600.0,
        e2e_rounds=5,
    ),
}


def _numbers(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(float(x)) if kind is int else kind(x) for x in text.split(",") if x)
    except ValueError:
        raise ParameterError(f"grid values must be numbers; got {text!r}") from None


# The grid `secagg bench` runs with no flag: minutes, not the full grid's hour.
DEFAULT_PRESET = "standard"


def parse_grid(spec: str | None, *, quick: bool) -> Grid:
    """A preset name (``quick``, ``standard``, ``full``) or ``preset;key=v1,v2;...``.

    Keys: ``schemes``, ``dims``, ``clients``, ``dropouts``, ``cell_seconds``,
    ``e2e`` (0/1), ``e2e_rounds``, ``e2e_clients``, ``seed``. Example:
    ``standard;schemes=plain,masking-full;dims=1e6;clients=100``.
    """
    if not spec:
        return PRESETS["quick" if quick else DEFAULT_PRESET]
    parts = [p.strip() for p in spec.split(";") if p.strip()]
    base_name = (
        parts[0] if parts and "=" not in parts[0] else ("quick" if quick else DEFAULT_PRESET)
    )
    if base_name not in PRESETS:
        raise ParameterError(f"grid preset must be one of {', '.join(PRESETS)}; got {base_name!r}")
    grid = PRESETS[base_name]
    changes: dict[str, object] = {}
    for part in parts:
        if "=" not in part:
            continue
        key, _, value = (s.strip() for s in part.partition("="))
        if key == "schemes":
            names = tuple(x for x in value.split(",") if x)
            for name in names:
                variant(name)
            changes[key] = names
        elif key in ("dims", "clients"):
            changes[key] = _numbers(value, int)
        elif key == "dropouts":
            drops = _numbers(value, float)
            if any(not 0 <= d < 1 for d in drops):
                raise ParameterError(f"dropouts must be in [0, 1); got {value!r}")
            changes[key] = drops
        elif key == "cell_seconds":
            changes[key] = float(value)
        elif key == "e2e":
            changes[key] = value not in ("0", "false", "no")
        elif key == "e2e_modes":
            modes = tuple(x for x in value.split(",") if x)
            if not modes or any(m not in ("dp", "no-dp") for m in modes):
                raise ParameterError(f"e2e_modes must be dp and/or no-dp; got {value!r}")
            changes[key] = modes
        elif key in ("e2e_rounds", "e2e_clients", "seed", "floor_repeats"):
            changes[key] = int(value)
        else:
            raise ParameterError(f"grid key must be a known setting; got {key!r}")
    if changes:
        grid = dataclasses.replace(grid, name=f"{base_name}+custom", **changes)  # type: ignore[arg-type]
    if any(d < 1 for d in grid.dims) or any(n < 1 for n in grid.clients):
        raise ParameterError("dims and clients must be ≥ 1")
    return grid


def dropped_count(clients: int, dropout: float) -> int:
    """How many clients drop: round(dropout·n), keeping at least one survivor."""
    return min(clients - 1, int(math.floor(dropout * clients + 0.5)))
