"""The run directory: result.json, report.md and its PNG plots."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # the Agg canvas; no pyplot, no GUI backend

from secagg.errors import ParameterError
from secagg_privacy.accounting import format_epsilon
from secagg_training.federation import FederationResult

RUNS_DIR = Path("runs")


def default_run_dir(scheme: str, *, base: Path = RUNS_DIR) -> Path:
    """``runs/<UTC timestamp>-<scheme>``, with a numeric suffix if that name is taken."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = base / f"{stamp}-{scheme}"
    n = 2
    while candidate.exists():
        candidate = base / f"{stamp}-{scheme}-{n}"
        n += 1
    return candidate


def prepare_run_dir(path: Path) -> Path:
    """Create ``path``; refuse a non-empty directory so no earlier run is overwritten,
    and a place where it cannot be created or written (one ParameterError, no traceback)."""
    try:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ParameterError(f"out must be a new or empty directory; got {str(path)!r}")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(
            f"out must be a directory that can be created; got {str(path)!r} "
            f"({exc.strerror or type(exc).__name__})"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ParameterError(f"out must be a writable directory; got {str(path)!r}")
    return path


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged metric is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_result_json(result: FederationResult, run_dir: Path) -> Path:
    path = run_dir / "result.json"
    path.write_text(json.dumps(_finite(result.to_dict()), indent=2, allow_nan=False) + "\n")
    return path


def _plot(path: Path, rounds: list[int], values: list[float], ylabel: str, title: str) -> None:
    fig = Figure(figsize=(5.5, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(rounds, values, marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(result: FederationResult, run_dir: Path) -> list[Path]:
    """accuracy.png and loss.png over rounds (round 0 = the initial global model);
    epsilon.png (cumulative ε per client) under DP."""
    rounds = [0] + [r.round for r in result.rounds]
    accuracy = [result.initial_accuracy] + [r.accuracy for r in result.rounds]
    loss = [result.initial_loss] + [r.loss for r in result.rounds]
    scheme = result.config.scheme
    paths = [run_dir / "accuracy.png", run_dir / "loss.png"]
    _plot(paths[0], rounds, accuracy, "test accuracy", f"Test accuracy per round ({scheme})")
    _plot(paths[1], rounds, loss, "test cross-entropy", f"Test loss per round ({scheme})")
    if result.privacy.get("enabled") and result.rounds:
        paths.append(run_dir / "epsilon.png")
        _plot_epsilon(paths[-1], result)
    return paths


def epsilon_series(result: FederationResult) -> dict[str, list[float]]:
    """Label → cumulative ε per round (from 0); clients with identical curves share one line
    (labelled by how many), so ten equal-sized clients give one line, not ten."""
    groups: dict[tuple[float, ...], list[str]] = {}
    for client in result.privacy["epsilon_per_client"]:
        ys = (0.0, *((r.epsilon or {}).get(client, 0.0) for r in result.rounds))
        groups.setdefault(ys, []).append(client)
    total = len(result.privacy["epsilon_per_client"])
    out: dict[str, list[float]] = {}
    for ys, clients in groups.items():
        if len(clients) == 1:
            label = clients[0]
        elif len(clients) == total:
            label = f"all {total} clients"
        else:
            label = f"{clients[0]} and {len(clients) - 1} more"
        out[label] = list(ys)
    return out


def _plot_epsilon(path: Path, result: FederationResult) -> None:
    """Each client's cumulative ε after each round (or the max when clients are many)."""
    fig = Figure(figsize=(5.5, 3.5), dpi=100)
    ax = fig.add_subplot()
    rounds = [0] + [r.round for r in result.rounds]
    per_client = all(r.epsilon is not None for r in result.rounds)
    if per_client:
        series = epsilon_series(result)
        for label, ys in series.items():
            ax.plot(rounds, ys, marker="o", markersize=3, linewidth=1, label=label)
        if 1 < len(series) <= 10:
            ax.legend(fontsize=7, ncol=2)
    else:
        ys = [0.0] + [r.epsilon_max or 0.0 for r in result.rounds]
        ax.plot(rounds, ys, marker="o", label="max over clients")
    ax.axhline(float(result.privacy["budget"]), color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("round")
    ax.set_ylabel(f"cumulative ε (δ={result.privacy['delta']:g})")
    ax.set_title(f"{result.privacy['unit'].split(',')[0]} ε spent per client (dashed: budget)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _render_client_level(p: dict) -> list[str]:
    lines = [
        "## Privacy",
        "",
        f"Client-level distributed DP ({p['unit']}): every client clips its whole update to "
        f"S={p['clip_norm']:g} and adds a noise share of std {p['noise_share_std']:.4g}, so "
        f"the sum carries noise of multiplier z={p['noise_multiplier']:.4g} when at least "
        f"{p['min_honest']} honest clients reach it. Threat model: {p['threat_model']}. "
        f"Accountant: {p['accountant']}. Guarantee: **{p['guarantee']}**; beside it, under "
        f"zero-out adjacency (weaker; the ledger's budget ε={p['budget']:g} is in these "
        f"terms): ε ≤ {format_epsilon(p['epsilon_max'])}. "
        f"{p['min_honest_derivation']}.",
        "",
    ]
    if p.get("stopped"):
        lines += [f"**Stopped before round {p['stopped']['round']}:** {p['stopped']['reason']}", ""]
    lines += ["![epsilon](epsilon.png)", "", "| client | ε (PLD) | budget |", "|---|---|---|"]
    lines += [
        f"| {c} | {format_epsilon(e, 4)} | {p['budget']:g} |"
        for c, e in p["epsilon_per_client"].items()
    ]
    return [*lines, ""]


def render_privacy(result: FederationResult) -> list[str]:
    """The report's privacy section: the guarantee in one paragraph and the per-client table."""
    p = result.privacy
    if not p.get("enabled"):
        return ["## Privacy", "", f"Differential privacy: off. {p.get('note', '')}", ""]
    if p.get("kind") == "client-level":
        return _render_client_level(p)
    lines = [
        "## Privacy",
        "",
        f"Record-level DP-SGD per client ({p['unit']}), {p['adjacency']} adjacency, "
        f"{p['sampling']} sampling, expected batch size {p['expected_batch_size']}, "
        f"clip norm {p['max_grad_norm']:g}; σ calibrated {p['calibration']}. "
        f"Accountant of record: {p['accountant']}; RDP cross-check. "
        f"Largest ε: **{format_epsilon(p['epsilon_max'])}** at δ={p['delta']:g} "
        f"(budget ε={p['budget']:g}). Guarantee: {p['guarantee']}.",
        "",
    ]
    if p.get("stopped"):
        lines += [
            f"**Stopped before round {p['stopped']['round']}:** {p['stopped']['reason']}",
            "",
        ]
    lines += [
        "![epsilon](epsilon.png)",
        "",
        "| client | q | σ | steps | ε (PLD) | ε (RDP) | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    rdp = p["cross_check"]["epsilon_per_client"]
    for client, eps in p["epsilon_per_client"].items():
        lines.append(
            f"| {client} | {p['sample_rate'][client]:.4f} | {p['noise_multiplier'][client]:.4f} "
            f"| {p['steps']['run'][client]} | {format_epsilon(eps, 4)} "
            f"| {format_epsilon(rdp[client], 4)} | {p['budget']:g} |"
        )
    lines += ["", "Audit it with `secagg audit RUN_DIR`.", ""]
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def effective_threshold(result: FederationResult) -> str:
    """What ``threshold`` meant in this run (``None`` in the config = the scheme's default)."""
    cfg, described = result.config, result.scheme
    if cfg.scheme == "plain":
        return "none (plaintext reference)"
    if cfg.scheme == "ckks":
        t = cfg.threshold if cfg.threshold is not None else described.get("threshold")
        return f"{t} of {cfg.committee} key holders"
    if cfg.threshold is not None:
        return f"{cfg.threshold} surviving clients"
    at_max = described.get("threshold_at_max_clients")
    return f"⌊n/2⌋+1 surviving clients of a cohort of n ({at_max} of {cfg.clients})"


def render_report(result: FederationResult) -> str:
    cfg = result.config
    lines = [f"# secagg run — scheme `{cfg.scheme}`", ""]
    if result.scheme.get("insecure"):
        lines += [
            "> **INSECURE reference scheme:** the server sees every client's update in the "
            "clear. Use it as a baseline only.",
            "",
        ]
    lines += [
        f"Final test accuracy: **{result.final_accuracy:.4f}** "
        f"(initial {result.initial_accuracy:.4f}) on `{result.dataset}` "
        f"over {cfg.clients} clients ({cfg.partition} partition), "
        f"{len(result.rounds)} of {cfg.rounds} planned rounds.",
        "",
    ]
    if result.setup is not None:
        lines += [
            f"CRS ceremony: {result.setup.bytes_total} bytes, {result.setup.seconds:.3f} s, "
            f"{result.setup.messages} messages.",
            "",
        ]
    lines += ["![accuracy](accuracy.png)", "", "![loss](loss.png)", ""]
    lines += [
        "| round | accuracy | loss | participants | dropped | up B/client | down B/client "
        "| train s | protect s | aggregate s | decrypt s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rounds:
        s = r.seconds
        status = " (aborted)" if r.aborted else ""
        lines.append(
            f"| {r.round}{status} | {r.accuracy:.4f} | {r.loss:.4f} | {len(r.participants)} "
            f"| {len(r.dropped)} | {_fmt(r.bytes_up_per_client, '.0f')} "
            f"| {_fmt(r.bytes_down_per_client, '.0f')} | {_fmt(s['train'], '.3f')} "
            f"| {s['protect']:.3f} "
            f"| {s['aggregate']:.3f} | {s['decrypt']:.3f} | {s['total']:.3f} |"
        )
    lines += [""] + render_privacy(result)
    lines += ["## Configuration", "", "| key | value |", "|---|---|"]
    settings = {**cfg.to_dict(), "threshold": effective_threshold(result)}
    settings["model"] = result.model_name or cfg.model
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    lines.append("")
    return "\n".join(lines)


def write_run_dir(result: FederationResult, run_dir: Path) -> list[Path]:
    """Write result.json, report.md and the plots into an existing ``run_dir``."""
    written = [write_result_json(result, run_dir)]
    written += write_plots(result, run_dir)
    report = run_dir / "report.md"
    report.write_text(render_report(result))
    written.append(report)
    return written
