"""What Flower's deployment runtime costs per round: flower-local vs in-process, side by side.

The same federation (same seed, scheme, clients) runs twice: in one process
(:class:`secagg_training.federation.Federation`) and on a local Flower deployment (SuperLink
+ one SuperNode per party, :func:`secagg_training.flower.local.run_flower_local`). The round
wall time of each, their ratio and the protocol bytes per client are reported; with
``secagg bench --flower`` the SecAgg+ comparison of :mod:`secagg_benchmarks.flower_secaggplus`
is written beside it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from secagg_benchmarks.flower_secaggplus import compare
from secagg_training.federation import Federation, FederationConfig


def flower_overhead(
    scheme: str = "plain", *, clients: int = 3, rounds: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Mean round wall time in process and on flower-local, and their ratio."""
    from secagg_training.flower.local import run_flower_local

    config = FederationConfig(
        scheme=scheme, clients=clients, rounds=rounds, seed=seed, model="mlp-small", dp=False
    )
    start = time.perf_counter()
    local = Federation(config).run()
    local_total = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="secagg-bench-flower-") as tmp:
        start = time.perf_counter()
        flower = run_flower_local(config, Path(tmp), log=lambda line: None, timeout=1800)
        flower_total = time.perf_counter() - start
    ours = float(np.mean([r.seconds["total"] for r in local.rounds]))
    theirs = float(np.mean([r["seconds"]["total"] for r in flower["rounds"]]))
    return {
        "scheme": scheme,
        "clients": clients,
        "rounds": rounds,
        "in_process_round_seconds": ours,
        "flower_local_round_seconds": theirs,
        "round_overhead_ratio": theirs / ours if ours > 0 else None,
        "in_process_run_seconds": local_total,
        "flower_local_run_seconds": flower_total,
        "bytes_up_per_client": {
            "in-process": local.rounds[-1].bytes_up_per_client,
            "flower-local": flower["rounds"][-1]["bytes_up_per_client"],
        },
        "final_accuracy": {
            "in-process": local.final_accuracy,
            "flower-local": flower["final_accuracy"],
        },
    }


def run_flower_bench(out_dir: Path) -> dict[str, Any]:
    """Both Flower measurements; writes flower.json and flower.md into ``out_dir``."""
    results = {"secaggplus": compare(), "overhead": flower_overhead()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "flower.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "flower.md").write_text(render(results))
    return results


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Flower comparisons",
        "",
        "## Flower's SecAgg+ vs our schemes (one round, same vectors, in process)",
        "",
        "| scheme | clients | dim | total s | server s | client s | up B/client | "
        "down B/client | max error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["secaggplus"]:
        lines.append(
            f"| {r['scheme']} | {r['clients']} | {r['dim']} | {r['seconds_total']:.3f} | "
            f"{r['seconds_server']:.3f} | {r['seconds_client_mean']:.3f} | "
            f"{r['bytes_up_per_client']:.0f} | {r['bytes_down_per_client']:.0f} | "
            f"{r['max_abs_error']:.1e} |"
        )
    o = results["overhead"]
    lines += [
        "",
        "## Round overhead of flower-local vs in-process",
        "",
        f"{o['scheme']}, {o['clients']} clients, {o['rounds']} rounds: "
        f"{o['in_process_round_seconds']:.2f} s per round in process, "
        f"{o['flower_local_round_seconds']:.2f} s on flower-local "
        f"(× {o['round_overhead_ratio']:.0f}); whole run {o['in_process_run_seconds']:.1f} s vs "
        f"{o['flower_local_run_seconds']:.1f} s (process start-up included). A SuperNode polls "
        "every 3 s and runs each message in a fresh process, so Flower's fixed cost per "
        "phase dominates small models.",
        "",
    ]
    return "\n".join(lines)
