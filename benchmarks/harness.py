"""``secagg bench``: the side-by-side overhead benchmark (issue 6).

Entry point: :func:`run_benchmark`. It walks the micro grid (scheme × update
size × clients × dropout) through the real in-process transport, runs one small
federated training per scheme on digits, evaluates the goals, and writes
``results.json`` (machine), ``results.md`` (human) and PNG plots into ``out_dir``.

A scheme is benchmarked iff it is registered (``secagg.schemes``) and builds;
otherwise every one of its cells is recorded as "not available" with the reason.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from secagg.schemes import available_schemes
from secagg_benchmarks import e2e as e2e_mod
from secagg_benchmarks import goals as goals_mod
from secagg_benchmarks import report
from secagg_benchmarks.cells import (
    MEMORY_METHOD,
    available_memory_bytes,
    build_scheme,
    make_inputs,
    make_workload,
    measure_floors,
    run_cell,
)
from secagg_benchmarks.estimate import Estimator
from secagg_benchmarks.grid import (
    CKKS_PRECISION,
    DEFAULT_PRECISION,
    VALUE_BOUND,
    Grid,
    Variant,
    dropped_count,
    parse_grid,
    variant,
)

SCHEMA = "secagg-bench/1"
LIBRARIES = ("numpy", "cryptography", "tenseal", "torch", "opacus", "matplotlib", "secagg")


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, Python and library versions (for the results header)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            found = re.search(r"model name\s*:\s*(.+)", fh.read())
            cpu = found.group(1).strip() if found else cpu

    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "memory_gb": available_memory_bytes() / 2**30,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "libraries": versions,
    }


def scheme_availability(keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Which variants can run here, and why not for the others (never silently dropped)."""
    registered = set(available_schemes())
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        var = variant(key)
        info: dict[str, Any] = {"label": var.label, "kind": var.kind, "scheme": var.scheme}
        if var.scheme != "flare-ckks" and var.scheme not in registered:
            info.update(available=False, reason=f"scheme {var.scheme!r} is not registered yet")
        else:
            try:
                info.update(available=True, reason=None, describe=build_scheme(var, 10).describe())
            except Exception as exc:  # a broken optional dependency disables one scheme only
                info.update(available=False, reason=f"{type(exc).__name__}: {exc}")
        out[key] = info
    return out


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        bar.task_id = bar.add_task("secagg bench", total=total)  # type: ignore[attr-defined]
        yield bar


def _tick(bar: Any, text: str, advance: int = 0) -> None:
    if bar is not None:
        bar.update(bar.task_id, description=text, advance=advance)


def _ratios(cell: dict[str, Any], plain: dict[str, Any] | None, floors: dict[str, float]) -> dict:
    """Every time of ``cell`` over the same-group floor and ``plain`` cell."""
    s = cell["seconds"]
    base = plain["seconds"] if plain is not None and plain.get("status") == "ok" else None

    def over(ours: float, theirs: float | None) -> float | None:
        return ours / theirs if theirs else None

    return {
        "server_vs_floor_f64": over(s["server"], floors["numpy_f64_sum"]),
        "server_vs_floor_f32": over(s["server"], floors["numpy_f32_sum"]),
        "server_vs_plain": over(s["server"], base["server"] if base else None),
        "client_vs_plain": over(s["client"]["mean"], base["client"]["mean"] if base else None),
        "critical_path_vs_plain": over(s["critical_path"], base["critical_path"] if base else None),
        "transport_wall_vs_plain": over(
            s["transport_wall"], base["transport_wall"] if base else None
        ),
    }


def _grid_variants(plan: Grid) -> list[Variant]:
    """The plan's variants, ``plain`` first: it is every group's baseline, so always run."""
    keys = ["plain", *[k for k in plan.schemes if k != "plain"]]
    return [variant(k) for k in keys]


def _run_micro(
    plan: Grid, availability: dict[str, dict[str, Any]], bar: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cells: list[dict[str, Any]] = []
    floors_out: list[dict[str, Any]] = []
    estimator = Estimator()
    memory_limit = available_memory_bytes() * plan.memory_fraction
    inputs_key: tuple[int, int] | None = None
    inputs: dict[str, Any] = {}
    for dim, clients, dropout in plan.cells():
        dropped = dropped_count(clients, dropout)
        group = {"dim": dim, "clients": clients, "dropout": dropout}
        baseline = estimator.estimate(variant("plain"), dim, clients, dropped)
        variants = _grid_variants(plan)
        if baseline.memory_bytes > memory_limit:
            reason = (
                f"inputs need ~{baseline.memory_bytes / 2**30:.1f} GiB > "
                f"{memory_limit / 2**30:.1f} GiB budget"
            )
            for var in variants:
                cells.append({**group, "scheme": var.key, "status": "skipped", "reason": reason})
                _tick(bar, "", advance=1)
            continue
        if inputs_key != (dim, clients):
            inputs = {}
            gc.collect()
            _tick(bar, f"inputs {dim:,} × {clients}")
            inputs = make_inputs(dim, clients, seed=plan.seed)
            inputs_key = (dim, clients)
        work = make_workload(inputs, dim, clients, dropout, seed=plan.seed)
        floors = measure_floors(work, plan.floor_repeats)
        floors_out.append({**group, **floors})
        plain_cell: dict[str, Any] | None = None
        for var in variants:
            cell = _one_cell(var, work, plan, availability, estimator, memory_limit, bar)
            if cell["status"] == "ok":
                cell["ratios"] = _ratios(cell, plain_cell, floors)
            if var.key == "plain":
                plain_cell = cell
                if cell["status"] == "ok":
                    cell["ratios"] = _ratios(cell, cell, floors)
            cells.append({**group, "scheme": var.key, **cell})
            _tick(bar, "", advance=1)
    return cells, floors_out


def _refusal(
    var: Variant,
    dim: int,
    clients: int,
    dropout: float,
    plan: Grid,
    estimator: Estimator,
    memory_limit: float,
) -> str | None:
    """Why a cell is skipped (over its time or memory budget), or ``None`` to run it."""
    if var.dropouts is not None and dropout not in var.dropouts:
        rates = ", ".join(f"{d:.0%}" for d in var.dropouts)
        return f"{var.key} is measured at {rates} dropout only"
    guess = estimator.estimate(var, dim, clients, dropped_count(clients, dropout))
    if guess.seconds > plan.cell_seconds:
        return f"estimated {guess.seconds:.0f} s > {plan.cell_seconds:.0f} s cell budget"
    if guess.memory_bytes > memory_limit:
        return (
            f"estimated {guess.memory_bytes / 2**30:.1f} GiB > "
            f"{memory_limit / 2**30:.1f} GiB memory budget"
        )
    return None


def estimate_plan(grid: str | None = None, *, quick: bool = False) -> dict[str, Any]:
    """A dry run: which cells would run, and the expected duration from the priors.

    The priors (``Variant``) are this machine kind's rates; the real run
    re-calibrates them as it goes, so its skip decisions can differ slightly.
    """
    plan = parse_grid(grid, quick=quick)
    estimator = Estimator()
    memory_limit = available_memory_bytes() * plan.memory_fraction
    keys = tuple(dict.fromkeys(["plain", *plan.schemes]))
    total, runs, skips = 0.0, 0, []
    planned: list[dict[str, Any]] = []
    for dim, clients, dropout in plan.cells():
        total += clients * dim * 40e-9  # inputs (ChaCha20 keystream → floats) and floors
        for key in keys:
            var = variant(key)
            why = _refusal(var, dim, clients, dropout, plan, estimator, memory_limit)
            if why is None:
                runs += 1
                seconds = estimator.estimate(
                    var, dim, clients, dropped_count(clients, dropout)
                ).seconds
                total += seconds
                planned.append(
                    {
                        "scheme": key,
                        "dim": dim,
                        "clients": clients,
                        "dropout": dropout,
                        "estimated_seconds": seconds,
                    }
                )
            else:
                skips.append(
                    {
                        "scheme": key,
                        "dim": dim,
                        "clients": clients,
                        "dropout": dropout,
                        "reason": why,
                    }
                )
    if plan.e2e:
        total += 20.0 * len(keys) * plan.e2e_rounds / 3
    return {
        "grid": plan.name,
        "cells_run": runs,
        "cells_planned": planned,
        "cells_skipped": skips,
        "estimated_seconds": total,
    }


def plan_lines(estimate: dict[str, Any]) -> list[str]:
    """:func:`estimate_plan` as text: a summary, then every cell to run and every skip."""
    lines = [
        f"grid {estimate['grid']}: {estimate['cells_run']} cells to run, "
        f"~{estimate['estimated_seconds'] / 60:.0f} min estimated"
    ]
    for cell in estimate["cells_planned"]:
        lines.append(
            f"  run  {cell['scheme']} {cell['dim']:,}×{cell['clients']} {cell['dropout']:.0%}: "
            f"~{cell['estimated_seconds']:.1f} s"
        )
    for skip in estimate["cells_skipped"]:
        lines.append(
            f"  skip {skip['scheme']} {skip['dim']:,}×{skip['clients']} "
            f"{skip['dropout']:.0%}: {skip['reason']}"
        )
    return lines


def _one_cell(
    var: Variant,
    work: Any,
    plan: Grid,
    availability: dict[str, dict[str, Any]],
    estimator: Estimator,
    memory_limit: float,
    bar: Any,
) -> dict[str, Any]:
    info = availability.get(var.key) or scheme_availability((var.key,))[var.key]
    availability.setdefault(var.key, info)
    if not info["available"]:
        return {"status": "not available", "reason": info["reason"]}
    refusal = _refusal(var, work.dim, work.clients, work.dropout, plan, estimator, memory_limit)
    if refusal is not None:
        return {"status": "skipped", "reason": refusal}
    dropped = len(work.dropped)
    guess = estimator.estimate(var, work.dim, work.clients, dropped)
    _tick(bar, f"{var.key} {work.dim:,}×{work.clients} drop {work.dropout:.0%}")
    gc.collect()
    try:
        cell = run_cell(var, work, seed=plan.seed)
    except MemoryError:
        return {"status": "failed", "reason": "MemoryError"}
    except Exception as exc:  # one broken scheme must not sink the whole benchmark
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    cell["estimated_seconds"] = guess.seconds
    estimator.calibrate(var, work.dim, work.clients, dropped, cell)
    return cell


def run_benchmark(
    *, quick: bool, out_dir: Path, progress: bool = True, grid: str | None = None
) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md and the PNG plots.

    Args:
        quick: the smoke-test preset (< 2 minutes on 2 cores) unless ``grid`` names one.
        out_dir: where the outputs go (created if missing).
        progress: show a rich progress bar.
        grid: a preset (``quick``, ``standard``, ``full``) or a custom spec, see
            :func:`secagg_benchmarks.grid.parse_grid`.

    Returns:
        The JSON-able results (the content of results.json).
    """
    plan = parse_grid(grid, quick=quick)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    machine = machine_info()  # load average at the start; the end's is added below
    keys = tuple(dict.fromkeys(["plain", *plan.schemes]))
    availability = scheme_availability(keys)
    total = len(plan.cells()) * len(keys) + (len(keys) if plan.e2e else 0)
    with _progress(progress, total) as bar:
        cells, floors = _run_micro(plan, availability, bar)
        e2e = e2e_mod.run_e2e(plan, keys, availability, tick=lambda t, a=0: _tick(bar, t, a))
        _tick(bar, "writing results")
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "grid": {
            "name": plan.name,
            "schemes": list(keys),
            "dims": list(plan.dims),
            "clients": list(plan.clients),
            "dropouts": list(plan.dropouts),
            "cell_seconds": plan.cell_seconds,
            "seed": plan.seed,
            "value_bound": VALUE_BOUND,
            "precision": {"default": DEFAULT_PRECISION, "ckks": CKKS_PRECISION},
        },
        "started": started.isoformat(timespec="seconds"),
        "duration_seconds": 0.0,
        "machine": machine,
        "memory_method": MEMORY_METHOD if not cells else _memory_method(cells),
        "schemes": {k: {kk: vv for kk, vv in v.items()} for k, v in availability.items()},
        "cells": cells,
        "floors": floors,
        "e2e": e2e,
        "goals": goals_mod.evaluate(cells, e2e, availability),
    }
    results["duration_seconds"] = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_end"] = list(os.getloadavg())
    results = _finite(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    report.write_markdown(results, out_dir / "results.md")
    report.write_plots(results, out_dir)
    return results


def _memory_method(cells: list[dict[str, Any]]) -> str:
    for c in cells:
        if c.get("status") == "ok":
            return str(c["memory"]["method"])
    return MEMORY_METHOD


def _finite(value: Any) -> Any:
    """Plain JSON types only; non-finite floats become ``None`` (strict JSON has no NaN)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return str(value)
