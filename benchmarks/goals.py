"""The issue-6 goals, each evaluated against the cells that were actually measured.

A goal is stated at a reference size (1M parameters, 100 clients). If that cell
is not in the grid (e.g. ``--quick``), the goal is evaluated on the largest cell
that was measured and flagged ``at_goal_size: false``; if nothing usable was
measured, ``met`` is ``None`` and ``note`` says why.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

GOAL_DIM = 1_000_000
GOAL_CLIENTS = 100

Cell = dict[str, Any]


def _ok(cells: list[Cell], scheme: str, dropout: float) -> list[Cell]:
    return [
        c
        for c in cells
        if c["scheme"] == scheme and c["status"] == "ok" and abs(c["dropout"] - dropout) < 1e-9
    ]


def _pick(cells: list[Cell], scheme: str, dropout: float) -> Cell | None:
    """The goal cell, else the largest measured cell for this scheme and dropout."""
    found = _ok(cells, scheme, dropout)
    for c in found:
        if c["dim"] == GOAL_DIM and c["clients"] == GOAL_CLIENTS:
            return c
    return max(found, key=lambda c: (c["dim"] * c["clients"], c["clients"]), default=None)


def _pair(cells: list[Cell], a: str, b: str, dropout: float) -> tuple[Cell, Cell] | None:
    """Cells of two schemes at the same size: the goal size if both have it, else the largest."""
    left = {(c["dim"], c["clients"]): c for c in _ok(cells, a, dropout)}
    right = {(c["dim"], c["clients"]): c for c in _ok(cells, b, dropout)}
    common = set(left) & set(right)
    if not common:
        return None
    key = (
        (GOAL_DIM, GOAL_CLIENTS)
        if (GOAL_DIM, GOAL_CLIENTS) in common
        else max(common, key=lambda k: (k[0] * k[1], k[1]))
    )
    return left[key], right[key]


def _where(cell: Cell) -> str:
    return f"{cell['dim']:,} params × {cell['clients']} clients, {cell['dropout']:.0%} dropout"


def _goal(
    goal: str,
    target: str,
    cell: Cell | None,
    measure: Callable[[Cell], tuple[float, bool, str]],
    missing: str,
) -> dict[str, Any]:
    if cell is None:
        return {
            "goal": goal,
            "target": target,
            "measured": None,
            "met": None,
            "note": missing,
            "at_goal_size": False,
            "where": None,
        }
    value, met, note = measure(cell)
    at_size = cell["dim"] == GOAL_DIM and cell["clients"] == GOAL_CLIENTS
    if not at_size:
        note = (note + "; " if note else "") + "measured below the goal size"
    return {
        "goal": goal,
        "target": target,
        "measured": value,
        "met": met,
        "note": note,
        "at_goal_size": at_size,
        "where": _where(cell),
    }


def _sigma_bits(describe: dict[str, Any]) -> float | None:
    """σ of the smudging noise, in bits, from whatever the CKKS scheme's describe() calls it."""
    for key, value in describe.items():
        lowered = key.lower()
        if ("sigma" in lowered or "smudg" in lowered) and isinstance(value, int | float):
            if "bits" in lowered or "log2" in lowered:
                return float(value)
            if value > 0:
                return math.log2(value)
    return None


def _missing(scheme: str, availability: dict[str, dict[str, Any]]) -> str:
    info = availability.get(scheme)
    if info is None:
        return f"not measured: {scheme} is not in this grid"
    if not info.get("available"):
        return f"not measured: {scheme} not available ({info.get('reason')})"
    return f"not measured: no successful {scheme} cell in this grid"


def evaluate(
    cells: list[Cell], e2e: dict[str, Any], availability: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    for key in ("masking-full", "masking-sparse"):
        goals.append(
            _goal(
                f"{key}: upload per parameter",
                "≤ 4 B/param",
                _pick(cells, key, 0.0),
                _masking_upload,
                _missing(key, availability),
            )
        )
        for dropout, limit in ((0.0, 2.0), (0.1, 5.0)):
            goals.append(
                _goal(
                    f"{key}: server time ÷ plain server at {dropout:.0%} dropout",
                    f"≤ {limit:g}×",
                    _pick(cells, key, dropout),
                    functools.partial(_ratio_goal, name="server_vs_plain", limit=limit),
                    _missing(key, availability),
                )
            )
    goals.append(
        _goal(
            "ckks-3of5: upload per parameter at error ≤ 1e-6 with σ ≥ 2^40",
            "≤ 25 B/param",
            _pick(cells, "ckks-3of5", 0.0),
            _ckks_upload,
            _missing("ckks-3of5", availability),
        )
    )
    pair = _pair(cells, "ckks-3of5", "flare-ckks", 0.0)
    goals.append(
        _goal(
            "ckks-3of5: server per client, speed-up over the FLARE comparator",
            "≥ 4.5×",
            pair[0] if pair else None,
            functools.partial(_on_pair, _speedup, pair),
            _pair_missing(availability),
        )
    )
    goals.append(
        _goal(
            "ckks-3of5: partial decryption per key holder ÷ FLARE comparator's decryption",
            "≤ 1×",
            pair[0] if pair else None,
            functools.partial(_on_pair, _decrypt_ratio, pair),
            _pair_missing(availability),
        )
    )
    for key, limit in (("masking-full", 1.3), ("masking-sparse", 1.3), ("ckks-3of5", 2.0)):
        goals.append(_e2e_goal(key, limit, e2e, availability))
    return goals


def _masking_upload(cell: Cell) -> tuple[float, bool, str]:
    bpp = cell["bytes"]["up_per_param"]
    if bpp <= 4.0:
        return bpp, True, ""
    note = (
        f"{(bpp / 4.0 - 1) * 100:.2g}% over the target: the masked vector itself is 4 B/param "
        "(uint32); key adverts, encrypted shares, signatures and frame headers add the rest"
        if cell["describe"].get("bytes_per_param") == 4
        else f"{bpp / 4.0:.2f}× over the target (ring words of "
        f"{cell['describe'].get('bytes_per_param', '?')} B)"
    )
    return bpp, False, note


Measure = Callable[[tuple[Cell, Cell] | None], tuple[float, bool, str]]


def _on_pair(
    measure: Measure, pair: tuple[Cell, Cell] | None, cell: Cell
) -> tuple[float, bool, str]:
    return measure(pair)


def _ratio_goal(cell: Cell, name: str, limit: float) -> tuple[float, bool, str]:
    ratio = cell["ratios"].get(name)
    if ratio is None:
        return math.nan, False, "no plain baseline in the same group"
    return ratio, ratio <= limit, "" if ratio <= limit else f"{ratio / limit:.1f}× over the target"


def _ckks_upload(cell: Cell) -> tuple[float, bool, str]:
    bpp = cell["bytes"]["up_per_param"]
    error = cell["error"]["max_abs"]
    sigma = _sigma_bits(cell.get("describe", {}))
    met = bpp <= 25.0 and error <= 1e-6 and sigma is not None and sigma >= 40.0
    sigma_text = f"σ = 2^{sigma:.1f}" if sigma is not None else "σ not reported by describe()"
    note = f"error {error:.2e}, {sigma_text}"
    if bpp > 25.0:
        note += f"; {bpp / 25.0:.2f}× over the byte target"
    return bpp, met, note


def _pair_missing(availability: dict[str, dict[str, Any]]) -> str:
    for key in ("ckks-3of5", "flare-ckks"):
        info = availability.get(key)
        if info is None or not info.get("available"):
            return _missing(key, availability)
    return "not measured: no cell where both ckks-3of5 and flare-ckks succeeded"


def _speedup(pair: tuple[Cell, Cell] | None) -> tuple[float, bool, str]:
    if pair is None:
        return math.nan, False, ""
    ckks, flare = pair
    ours = ckks["seconds"]["server"] / max(1, ckks["contributors"])
    theirs = flare["seconds"]["server"] / max(1, flare["contributors"])
    speedup = theirs / ours if ours > 0 else math.inf
    note = f"{ours * 1e3:.2f} ms vs {theirs * 1e3:.2f} ms per client upload"
    if speedup < 4.5:
        note += f"; {4.5 / speedup:.2f}× short of the target"
    return speedup, speedup >= 4.5, note


def _decrypt_ratio(pair: tuple[Cell, Cell] | None) -> tuple[float, bool, str]:
    if pair is None:
        return math.nan, False, ""
    ckks, flare = pair
    ours = ckks["seconds"]["holder"]["mean"]
    theirs = flare["seconds"]["holder"]["mean"]
    ratio = ours / theirs if theirs > 0 else math.inf
    note = f"{ours * 1e3:.1f} ms per holder vs {theirs * 1e3:.1f} ms FLARE decryption"
    if ratio > 1:
        note += f"; {ratio:.2f}× over the target"
    return ratio, ratio <= 1.0, note


def _e2e_goal(
    key: str, limit: float, e2e: dict[str, Any], availability: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    goal = f"end to end on digits: {key} round time ÷ plain round"
    target = f"≤ {limit:g}×"
    run = (e2e.get("runs") or {}).get(key) if e2e else None
    if not run or run.get("status") != "ok" or run.get("round_ratio_vs_plain") is None:
        reason = (
            (run or {}).get("reason") or (e2e or {}).get("reason") or _missing(key, availability)
        )
        return {
            "goal": goal,
            "target": target,
            "measured": None,
            "met": None,
            "note": f"not measured: {reason}",
            "at_goal_size": False,
            "where": None,
        }
    ratio = run["round_ratio_vs_plain"]
    plain_accuracy = e2e["runs"]["plain"]["final_accuracy"]
    note = f"final accuracy {run['final_accuracy']:.3f} (plain {plain_accuracy:.3f})"
    for other in e2e.get("other_modes") or []:
        other_run = (other.get("runs") or {}).get(key) or {}
        if other_run.get("round_ratio_vs_plain") is not None:
            note += f"; {other['mode']}: {other_run['round_ratio_vs_plain']:.2f}×"
    if ratio > limit:
        note += f"; {ratio / limit:.2f}× over the target"
    return {
        "goal": goal,
        "target": target,
        "measured": ratio,
        "met": ratio <= limit,
        "note": note,
        "at_goal_size": True,
        "where": e2e.get("where"),
    }
