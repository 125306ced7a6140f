"""End to end: one small federated training run per scheme on scikit-learn digits.

Every scheme gets its own ``secagg_training.federation.Federation`` (the step API
behind ``run_federation``) with the same seed, data split, model and local
settings, so the only difference between runs is the secure-sum scheme. Rounds
are *interleaved* — round 1 of every scheme, then round 2 of every scheme, … —
so a burst of load from a neighbouring process hits all schemes alike, and torch
runs single-threaded for the duration (OpenMP spin-waits make multi-threaded
training times erratic on an oversubscribed 2-core VM). The ratio reported is
the median wall-clock round time (local training + protection + aggregation +
decryption + evaluation) of the scheme divided by that of ``plain``. Each grid
lists its modes: ``dp`` (DP-SGD on, what ``secagg run`` does by default; the
goal's mode) and ``no-dp`` (training is cheaper, so the ratio is stricter).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from typing import Any

from secagg.rand import DeterministicRng
from secagg_benchmarks.grid import Grid, variant

Tick = Callable[..., None]


def _config_kwargs(key: str, plan: Grid, dp: bool = False) -> dict[str, Any]:
    var = variant(key)
    kwargs: dict[str, Any] = {
        "scheme": var.scheme,
        "clients": plan.e2e_clients,
        "rounds": plan.e2e_rounds,
        "seed": plan.seed,
        "dp": dp,
        "graph": var.graph,
    }
    if var.scheme == "ckks":
        kwargs.update(committee=var.committee, threshold=var.threshold)
    return kwargs


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mean_seconds(records: list[Any], step: str) -> float | None:
    """Mean seconds of one step per round; ``None`` where the run withholds it (under DP the
    training time is not released: it grows with a client's record count)."""
    values = [r.seconds.get(step) for r in records]
    if any(v is None for v in values):
        return None
    return sum(values) / max(1, len(values))


def _summary(fed: Any, setup: Any, records: list[Any], initial: float) -> dict[str, Any]:
    totals = [r.seconds["total"] for r in records]
    ups = [r.bytes_up_per_client for r in records if r.bytes_up_per_client is not None]
    return {
        "status": "ok",
        "rounds": len(records),
        "aborted_rounds": sum(1 for r in records if r.aborted),
        "mean_round_seconds": sum(totals) / len(totals) if totals else 0.0,
        "median_round_seconds": statistics.median(totals) if totals else 0.0,
        "round_seconds": totals,
        "seconds_by_step": {
            step: _mean_seconds(records, step)
            for step in ("train", "protect", "aggregate", "decrypt", "total")
        },
        "setup": setup.to_dict() if setup else None,
        "initial_accuracy": initial,
        "final_accuracy": records[-1].accuracy if records else initial,
        "bytes_up_per_client": sum(ups) / len(ups) if ups else None,
        "config": fed.config.to_dict(),
        "scheme_parameters": fed.scheme.describe(),
    }


def _interleaved(keys: list[str], plan: Grid, tick: Tick, dp: bool) -> dict[str, dict[str, Any]]:
    """Set up one federation per scheme, then run their rounds in lock-step."""
    from secagg_training.federation import Federation, FederationConfig, evaluate

    runs: dict[str, dict[str, Any]] = {}
    feds: dict[str, Any] = {}
    state: dict[str, tuple[Any, float, list[Any]]] = {}
    try:
        for key in keys:
            try:
                fed = Federation(
                    FederationConfig(**_config_kwargs(key, plan, dp)),
                    rng=DeterministicRng.from_int(plan.seed, f"bench/e2e/{key}"),
                )
                feds[key] = fed
                setup = fed.setup()
                state[key] = (setup, evaluate(fed.model, fed.data)[0], [])
            except Exception as exc:  # one broken scheme must not sink the benchmark
                runs[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        for round_number in range(1, plan.e2e_rounds + 1):
            for key in [k for k in keys if k in state and k not in runs]:
                tick(f"end to end ({'DP' if dp else 'no DP'}): round {round_number} {key}")
                try:
                    state[key][2].append(feds[key].run_round(round_number).record)
                except Exception as exc:
                    runs[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        for key, (setup, initial, records) in state.items():
            runs.setdefault(key, _summary(feds[key], setup, records, initial))
    finally:
        for fed in feds.values():
            with contextlib.suppress(Exception):
                fed.close()
    return runs


def _warm_up(plan: Grid) -> None:
    """One untimed plain round: torch's lazy initialisation must not be charged to a scheme."""
    from secagg_training.federation import FederationConfig, run_federation

    kwargs = dict(_config_kwargs("plain", plan), rounds=1)
    run_federation(FederationConfig(**kwargs), rng=DeterministicRng.from_int(plan.seed, "warm"))


def run_e2e(
    plan: Grid, keys: tuple[str, ...], availability: dict[str, dict[str, Any]], *, tick: Tick
) -> dict[str, Any]:
    """One federated run per available scheme; ratios against the ``plain`` run."""
    if not plan.e2e:
        return {"reason": "disabled in this grid", "runs": {}}
    try:
        import secagg_training.federation  # noqa: F401  (lands with issue 3; optional until then)
    except ImportError as exc:
        for _ in keys:
            tick("", 1)
        return {"reason": f"secagg_training.federation is not available ({exc})", "runs": {}}
    runs: dict[str, dict[str, Any]] = {}
    runnable: list[str] = []
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
            runnable.append(key)
    modes = []
    with _single_threaded_torch():
        tick("end to end: warm-up (torch, data; untimed)")
        with contextlib.suppress(Exception):  # a failing warm-up shows up again in the real runs
            _warm_up(plan)
        for mode in plan.e2e_modes:
            dp = mode == "dp"
            block = dict(runs)
            block.update(_interleaved(runnable, plan, tick, dp))
            modes.append(_block(mode, plan, {k: block[k] for k in keys}))
    for _ in keys:
        tick("", 1)
    primary = dict(modes[0])
    primary["other_modes"] = modes[1:]
    return primary


def _block(mode: str, plan: Grid, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    plain = runs.get("plain", {})
    for run in runs.values():
        if run.get("status") == "ok" and plain.get("status") == "ok":
            # median: one round hit by a neighbour's CPU burst must not set the ratio
            run["round_ratio_vs_plain"] = (
                run["median_round_seconds"] / plain["median_round_seconds"]
            )
    dp_text = "DP-SGD on (the `secagg run` default)" if mode == "dp" else "no DP"
    return {
        "mode": mode,
        "where": f"digits, {plan.e2e_clients} clients, {plan.e2e_rounds} rounds, {dp_text}",
        "method": "rounds interleaved across schemes; torch single-threaded; median round",
        "dataset": "scikit-learn digits",
        "clients": plan.e2e_clients,
        "rounds": plan.e2e_rounds,
        "dp": mode == "dp",
        "runs": runs,
    }
