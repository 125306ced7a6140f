"""Smoke test of `secagg bench --quick`: outputs exist and are well formed (never timings)."""

import json
import math

import pytest

from secagg_benchmarks.goals import GOAL_CLIENTS, GOAL_DIM
from secagg_benchmarks.grid import PRESETS, VARIANT_KEYS, dropped_count
from secagg_benchmarks.harness import SCHEMA, run_benchmark
from secagg_benchmarks.report import PLOTS

STATUSES = {"ok", "skipped", "failed", "not available"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(text):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_benchmark(quick=True, out_dir=out, progress=False)
    return out, results


def test_files_written(quick):
    out, _ = quick
    for name in ("results.json", "results.md", *PLOTS):
        assert (out / name).is_file(), name
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_json_is_strict_and_matches_return_value(quick):
    out, results = quick
    on_disk = _strict_json((out / "results.json").read_text())
    assert on_disk == results
    assert on_disk["schema"] == SCHEMA
    for key in (
        "grid",
        "started",
        "duration_seconds",
        "machine",
        "memory_method",
        "schemes",
        "cells",
        "floors",
        "e2e",
        "goals",
    ):
        assert key in on_disk


def test_every_scheme_listed_never_silently_dropped(quick):
    _, results = quick
    assert set(results["schemes"]) == set(VARIANT_KEYS)
    for key, info in results["schemes"].items():
        assert isinstance(info["available"], bool)
        if not info["available"]:
            assert info["reason"], key
    grid = PRESETS["quick"]
    expected = {
        (s, d, n, p)
        for s in VARIANT_KEYS
        for d in grid.dims
        for n in grid.clients
        for p in grid.dropouts
    }
    seen = [(c["scheme"], c["dim"], c["clients"], c["dropout"]) for c in results["cells"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == expected
    for c in results["cells"]:
        assert c["status"] in STATUSES
        if c["status"] == "not available":
            assert not results["schemes"][c["scheme"]]["available"]
        if c["status"] != "ok":
            assert c["reason"]


def _check_ok_cell(c):
    s, b = c["seconds"], c["bytes"]
    assert s["server"] >= 0 and s["critical_path"] >= 0 and s["transport_wall"] > 0
    assert s["client"]["max"] >= s["client"]["mean"] >= 0
    assert b["up_per_client"] > 0
    assert b["up_per_param"] == pytest.approx(b["up_per_client"] / c["dim"])
    assert c["contributors"] + c["dropped"] == c["clients"]
    assert c["dropped"] == dropped_count(c["clients"], c["dropout"])
    assert c["error"]["max_abs"] >= 0 and math.isfinite(c["error"]["max_abs"])
    assert c["memory"]["peak_bytes"] >= 0
    assert c["phases"] and all({"name", "seconds", "bytes_sent"} <= set(p) for p in c["phases"])
    for name in ("server_vs_floor_f64", "server_vs_plain", "critical_path_vs_plain"):
        assert c["ratios"][name] is None or c["ratios"][name] >= 0


def test_ok_cells_are_complete(quick):
    _, results = quick
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    assert ok, "at least the plain reference must run"
    for c in ok:
        _check_ok_cell(c)


def test_plain_reference_is_exact_and_its_own_baseline(quick):
    _, results = quick
    plain = [c for c in results["cells"] if c["scheme"] == "plain"]
    assert plain and all(c["status"] == "ok" for c in plain)
    for c in plain:
        assert c["error"]["max_abs"] < 1e-9  # float64 sums in a different order only
        assert c["ratios"]["server_vs_plain"] == pytest.approx(1.0)
        assert c["bytes"]["up_per_param"] >= 8.0  # float64 on the wire plus framing


def test_secure_schemes_are_accurate(quick):
    _, results = quick
    for c in results["cells"]:
        if c["status"] == "ok":
            assert c["error"]["max_abs"] <= max(1e-4, 10 * c["error"]["scheme_bound"]), c["scheme"]


def test_floors_cover_every_group(quick):
    _, results = quick
    grid = PRESETS["quick"]
    assert len(results["floors"]) == len(grid.dims) * len(grid.clients) * len(grid.dropouts)
    for f in results["floors"]:
        assert f["numpy_f64_sum"] > 0 and f["numpy_f32_sum"] > 0


def test_goals_table_is_complete(quick):
    out, results = quick
    goals = results["goals"]
    assert len(goals) == 12
    for g in goals:
        assert g["met"] in (True, False, None)
        if g["met"] is None:
            assert g["note"].startswith("not measured")
        else:
            assert isinstance(g["measured"], float)
            if g["goal"].startswith("end to end"):
                assert g["where"].startswith("digits")
                continue
            assert g["at_goal_size"] == (
                f"{GOAL_DIM:,} params × {GOAL_CLIENTS} clients" in g["where"]
            )
    md = (out / "results.md").read_text()
    assert "## Goals" in md
    for g in goals:
        assert g["goal"] in md
    for key in VARIANT_KEYS:
        assert key in md


def test_e2e_section_is_well_formed(quick):
    _, results = quick
    e2e = results["e2e"]
    if not e2e.get("runs"):
        assert e2e["reason"]
        return
    assert set(e2e["runs"]) == set(VARIANT_KEYS)
    assert e2e["runs"]["flare-ckks"]["status"] == "not applicable"
    plain = e2e["runs"]["plain"]
    assert plain["status"] == "ok"
    assert plain["round_ratio_vs_plain"] == pytest.approx(1.0)
    assert 0.0 <= plain["final_accuracy"] <= 1.0
    for run in e2e["runs"].values():
        if run["status"] == "ok":
            assert run["rounds"] == PRESETS["quick"].e2e_rounds
