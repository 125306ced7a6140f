"""Human outputs of a benchmark run: results.md and the PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PLOTS = ("bytes_per_param.png", "server_time_vs_clients.png", "round_overhead.png")


def _num(value: Any, fmt: str = "{:.3g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.3g}"


def _size(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % (div // 10 or 1) == 0:
            return f"{n / div:g}{unit}"
    return str(n)


def goal_status(goal: dict[str, Any], *, not_met: str = "NOT MET") -> str:
    """The words "met" / "NOT MET" / "not measured", marked "(below goal size)" when measured on a
    smaller cell than the goal names — the same words in results.md and on the console."""
    met = {True: "met", False: not_met, None: "not measured"}[goal["met"]]
    if goal["met"] is not None and not goal["at_goal_size"]:
        met += " (below goal size)"
    return met


def _goal_rows(goals: list[dict[str, Any]]) -> list[str]:
    rows = ["| goal | target | measured | met | where | note |", "|---|---|---|---|---|---|"]
    for g in goals:
        met = goal_status(g, not_met="**not met**")
        rows.append(
            f"| {g['goal']} | {g['target']} | {_num(g['measured'], '{:.4g}')} | {met} | "
            f"{g['where'] or '–'} | {g['note'] or ''} |"
        )
    return rows


def _cell_rows(cells: list[dict[str, Any]]) -> list[str]:
    head = (
        "| scheme | params | clients | drop | status | client ms | server ms | holder ms | "
        "server ÷ plain | server ÷ f64 floor | critical path ÷ plain | up B/param | "
        "down B/param | max error | peak MB |"
    )
    rows = [head, "|" + "---|" * 15]
    for c in cells:
        base = f"| {c['scheme']} | {_size(c['dim'])} | {c['clients']} | {c['dropout']:.0%} |"
        if c["status"] != "ok":
            rows.append(base + f" {c['status']}: {c.get('reason', '')} |" + " |" * 10)
            continue
        s, b, r = c["seconds"], c["bytes"], c["ratios"]
        rows.append(
            base + f" ok | {_ms(s['client']['mean'])} | {_ms(s['server'])} | "
            f"{_ms(s['holder']['mean']) if s['holder']['max'] else '–'} | "
            f"{_num(r.get('server_vs_plain'))} | {_num(r.get('server_vs_floor_f64'))} | "
            f"{_num(r.get('critical_path_vs_plain'))} | {b['up_per_param']:.2f} | "
            f"{b['down_per_param']:.2f} | {c['error']['max_abs']:.1e} | "
            f"{c['memory']['peak_bytes'] / 1e6:.0f} |"
        )
    return rows


def _floor_rows(floors: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| params | clients | drop | numpy f64 sum ms | numpy f32 sum ms |",
        "|---|---|---|---|---|",
    ]
    for f in floors:
        rows.append(
            f"| {_size(f['dim'])} | {f['clients']} | {f['dropout']:.0%} | "
            f"{_ms(f['numpy_f64_sum'])} | {_ms(f['numpy_f32_sum'])} |"
        )
    return rows


def _phase_rows(cells: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| scheme | params | clients | drop | phase window | client s/client | server s | "
        "holder s/holder | bytes sent (by kind) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c["status"] != "ok":
            continue
        for p in c["phases"]:
            sent = ", ".join(f"{k} {v:,}" for k, v in sorted(p["bytes_sent"].items())) or "–"
            rows.append(
                f"| {c['scheme']} | {_size(c['dim'])} | {c['clients']} | {c['dropout']:.0%} | "
                f"{p['name']} | {p['seconds']['client_per_client']:.4g} | "
                f"{p['seconds']['server']:.4g} | {p['seconds']['holder_per_holder']:.4g} | {sent} |"
            )
    return rows


def _e2e_rows(e2e: dict[str, Any]) -> list[str]:
    rows = _e2e_block(e2e)
    for other in e2e.get("other_modes") or []:
        rows += ["", *_e2e_block(other)]
    return rows


def _e2e_block(e2e: dict[str, Any]) -> list[str]:
    if not e2e.get("runs"):
        return [f"Not run: {e2e.get('reason', 'disabled')}."]
    intro = [
        f"**{e2e.get('where')}.** Round time is wall-clock (local training, protection, "
        "aggregation, decryption, evaluation; parties simulated one after another); the ratio "
        "uses the median round. Step seconds are per round, summed over parties.",
        "",
    ]
    rows = [
        "| scheme | status | rounds | median round s | round ÷ plain | train s | protect s | "
        "aggregate s | decrypt s | final accuracy | up B/client/round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = intro + rows
    for key, run in e2e["runs"].items():
        if run.get("status") != "ok":
            rows.append(f"| {key} | {run.get('status')}: {run.get('reason', '')} |" + " |" * 9)
            continue
        steps = run["seconds_by_step"]
        rows.append(
            f"| {key} | ok | {run['rounds']} | {run['median_round_seconds']:.3g} | "
            f"{_num(run.get('round_ratio_vs_plain'))} | {_num(steps['train'])} | "
            f"{_num(steps['protect'])} | {_num(steps['aggregate'])} | {_num(steps['decrypt'])} | "
            f"{run['final_accuracy']:.3f} | "
            f"{_num(run.get('bytes_up_per_client'), '{:,.0f}')} |"
        )
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    lines = [
        "# secagg bench — what does the encryption cost?",
        "",
        f"Grid `{results['grid']['name']}`, run {results['started']} in "
        f"{results['duration_seconds']:.0f} s on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gb']:.0f} GB), Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
        + ".",
        "",
        "Ratios are measured side by side in this run on the same vectors: "
        "`server ÷ plain` divides a scheme's server seconds by the `plain` scheme's "
        "server seconds through the same transport; `÷ f64 floor` divides by a bare numpy "
        "float64 in-place sum of the same survivors' vectors. Timings are single runs with "
        "±30% run-to-run noise on this kind of VM; compare ratios, not absolute times.",
        "",
        "## Goals",
        "",
        *_goal_rows(results["goals"]),
        "",
        "## Schemes",
        "",
        "| key | scheme | kind | available | note |",
        "|---|---|---|---|---|",
    ]
    for key, info in results["schemes"].items():
        lines.append(
            f"| {key} | {info['label']} | {info['kind']} | "
            f"{'yes' if info['available'] else 'not available'} | {info.get('reason') or ''} |"
        )
    lines += [
        "",
        "## Micro grid (one round through the in-process transport)",
        "",
        "Seconds are CPU time inside each party's protocol code (wire encoding/decoding is "
        "the transport's and is not charged). `client ms` is the mean over surviving clients; "
        "`holder ms` the mean over key holders; `critical path` sums, per phase window, the "
        "per-client, server and per-holder seconds (parties of a kind run in parallel in a "
        "deployment). Bytes are the real encoded frames, per surviving client. Error is the "
        "max absolute error against the float64 sum of the contributors' vectors. "
        f"Peak memory: {results['memory_method']}.",
        "",
        *_cell_rows(results["cells"]),
        "",
        "### Floors (numpy sums of the same survivors' vectors)",
        "",
        *_floor_rows(results["floors"]),
        "",
        "## End to end (federated training on digits)",
        "",
        *_e2e_rows(results["e2e"]),
        "",
        "## Plots",
        "",
        *[f"![{name}]({name})" for name in PLOTS],
        "",
        "## Per phase window",
        "",
        *_phase_rows(results["cells"]),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------- plots


def write_plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in results["cells"] if c["status"] == "ok"]
    written = []
    for name, draw in (
        (PLOTS[0], _plot_bytes),
        (PLOTS[1], _plot_server_vs_clients),
        (PLOTS[2], _plot_overhead),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        draw(ax, ok, results)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(name)
    return written


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _plot_bytes(ax: Any, cells: list[dict[str, Any]], results: dict[str, Any]) -> None:
    per_scheme: dict[str, float] = {}
    for c in sorted(cells, key=lambda c: c["dim"] * c["clients"]):
        if c["dropout"] == 0:
            per_scheme[c["scheme"]] = c["bytes"]["up_per_param"]  # largest cell wins
    if not per_scheme:
        _empty(ax, "no completed cells")
        return
    keys = list(per_scheme)
    bars = ax.bar(keys, [per_scheme[k] for k in keys], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f")
    ax.axhline(4, color="tab:green", ls="--", lw=1, label="masking goal 4 B")
    ax.axhline(25, color="tab:red", ls="--", lw=1, label="CKKS goal 25 B")
    ax.set_ylabel("upload bytes per parameter")
    ax.set_title("Upload per parameter (largest measured cell, 0% dropout)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=15)


def _plot_server_vs_clients(ax: Any, cells: list[dict[str, Any]], results: dict[str, Any]) -> None:
    zero = [c for c in cells if c["dropout"] == 0]
    if not zero:
        _empty(ax, "no completed cells")
        return
    counts: dict[int, set[int]] = {}
    for c in zero:
        counts.setdefault(c["dim"], set()).add(c["clients"])
    dim = max(counts, key=lambda d: (len(counts[d]), d))
    for scheme in dict.fromkeys(c["scheme"] for c in zero):
        pts = sorted(
            (c["clients"], c["seconds"]["server"])
            for c in zero
            if c["scheme"] == scheme and c["dim"] == dim
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=scheme)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients")
    ax.set_ylabel("server seconds per round")
    ax.set_title(f"Server time against clients ({dim:,} params, 0% dropout)")
    ax.legend(fontsize=8)


def _plot_overhead(ax: Any, cells: list[dict[str, Any]], results: dict[str, Any]) -> None:
    best: dict[str, dict[str, Any]] = {}
    for c in sorted(cells, key=lambda c: c["dim"] * c["clients"]):
        if c["dropout"] == 0 and c["ratios"].get("critical_path_vs_plain") is not None:
            best[c["scheme"]] = c
    runs = (results.get("e2e") or {}).get("runs") or {}
    e2e = {
        k: r["round_ratio_vs_plain"]
        for k, r in runs.items()
        if r.get("status") == "ok" and r.get("round_ratio_vs_plain") is not None
    }
    keys = list(dict.fromkeys([*best, *e2e]))
    if not keys:
        _empty(ax, "no completed cells")
        return
    xs = range(len(keys))
    micro = [best[k]["ratios"]["critical_path_vs_plain"] if k in best else 0 for k in keys]
    ax.bar([x - 0.2 for x in xs], micro, width=0.4, label="micro round (critical path)")
    ax.bar(
        [x + 0.2 for x in xs],
        [e2e.get(k, 0) for k in keys],
        width=0.4,
        label="end-to-end round (digits)",
    )
    ax.set_xticks(list(xs), keys, rotation=15)
    ax.set_yscale("log")
    ax.axhline(1, color="black", lw=0.8)
    ax.set_ylabel("round time ÷ plain")
    ax.set_title("Round overhead by scheme (largest measured cell, 0% dropout)")
    ax.legend(fontsize=8)
