"""End to end: one small federated training run per scheme on scikit-learn digits.

Each run goes through ``training.federation.run_federation`` with the same
seed, data split, model and local settings, so the only difference between
runs is the secure-sum scheme. The ratio reported is the median wall-clock round
time (local training + protection + aggregation + decryption + evaluation)
of the scheme divided by that of ``plain``. DP-SGD is off: its cost is the same
for every scheme, so leaving it out gives the stricter (larger) ratio.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from benchmarks.grid import Grid, variant
from secagg.rand import DeterministicRng

Tick = Callable[..., None]


def _config_kwargs(key: str, plan: Grid) -> dict[str, Any]:
    var = variant(key)
    kwargs: dict[str, Any] = {
        "scheme": var.scheme,
        "clients": plan.e2e_clients,
        "rounds": plan.e2e_rounds,
        "seed": plan.seed,
        "dp": False,
        "graph": var.graph,
    }
    if var.scheme == "ckks":
        kwargs.update(committee=var.committee, threshold=var.threshold)
    return kwargs


def _one_run(key: str, plan: Grid) -> dict[str, Any]:
    from training.federation import FederationConfig, run_federation

    config = FederationConfig(**_config_kwargs(key, plan))
    start = time.perf_counter()
    result = run_federation(config, rng=DeterministicRng.from_int(plan.seed, f"bench/e2e/{key}"))
    wall = time.perf_counter() - start
    rounds = result.rounds
    totals = sorted(r.seconds["total"] for r in rounds)
    ups = [r.bytes_up_per_client for r in rounds if r.bytes_up_per_client is not None]
    return {
        "status": "ok",
        "rounds": len(rounds),
        "aborted_rounds": sum(1 for r in rounds if r.aborted),
        "mean_round_seconds": sum(totals) / len(totals) if totals else 0.0,
        "median_round_seconds": totals[len(totals) // 2] if totals else 0.0,
        "seconds_by_step": {
            step: sum(r.seconds.get(step, 0.0) for r in rounds) / max(1, len(rounds))
            for step in ("train", "protect", "aggregate", "decrypt", "total")
        },
        "setup": result.setup.to_dict() if result.setup else None,
        "wall_seconds": wall,
        "initial_accuracy": result.initial_accuracy,
        "final_accuracy": result.final_accuracy,
        "bytes_up_per_client": sum(ups) / len(ups) if ups else None,
        "config": config.to_dict(),
    }


def _warm_up(plan: Grid) -> None:
    """One untimed plain round: torch's lazy initialisation must not be charged to a scheme."""
    from training.federation import FederationConfig, run_federation

    kwargs = dict(_config_kwargs("plain", plan), rounds=1)
    run_federation(FederationConfig(**kwargs), rng=DeterministicRng.from_int(plan.seed, "warm"))


def run_e2e(
    plan: Grid, keys: tuple[str, ...], availability: dict[str, dict[str, Any]], *, tick: Tick
) -> dict[str, Any]:
    """One federated run per available scheme; ratios against the ``plain`` run."""
    if not plan.e2e:
        return {"reason": "disabled in this grid", "runs": {}}
    try:
        import training.federation  # noqa: F401  (lands with issue 3; optional until then)
    except ImportError as exc:
        for _ in keys:
            tick("", 1)
        return {"reason": f"training.federation is not available ({exc})", "runs": {}}
    runs: dict[str, dict[str, Any]] = {}
    tick("end to end: warm-up (torch, data; untimed)")
    with contextlib.suppress(Exception):  # a failing warm-up shows up again in the real runs
        _warm_up(plan)
    for key in keys:
        info = availability.get(key, {})
        if variant(key).kind == "comparator":
            runs[key] = {
                "status": "not applicable",
                "reason": "benchmark-only comparator, not a registered scheme",
            }
        elif not info.get("available"):
            runs[key] = {"status": "not available", "reason": info.get("reason")}
        else:
            tick(f"end to end: {key} on digits")
            try:
                runs[key] = _one_run(key, plan)
            except Exception as exc:  # one broken scheme must not sink the benchmark
                runs[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        tick("", 1)
    plain = runs.get("plain", {})
    for run in runs.values():
        if run.get("status") == "ok" and plain.get("status") == "ok":
            # median: one round hit by a neighbour's CPU burst must not set the ratio
            run["round_ratio_vs_plain"] = (
                run["median_round_seconds"] / plain["median_round_seconds"]
            )
    return {
        "where": f"digits, {plan.e2e_clients} clients, {plan.e2e_rounds} rounds, no DP",
        "dataset": "scikit-learn digits",
        "clients": plan.e2e_clients,
        "rounds": plan.e2e_rounds,
        "dp": False,
        "runs": runs,
    }
