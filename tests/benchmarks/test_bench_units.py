"""Unit tests of the benchmark harness: grid parsing, goal logic, the FLARE comparator."""

import numpy as np
import pytest

import secagg_benchmarks.harness as harness
from secagg.errors import ParameterError
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg_benchmarks.cells import Workload, make_inputs, make_workload
from secagg_benchmarks.flare import DECRYPTOR, FlareCkksComparator
from secagg_benchmarks.goals import evaluate
from secagg_benchmarks.grid import PRESETS, VALUE_BOUND, dropped_count, parse_grid
from secagg_training.transport import InProcessTransport

# ------------------------------------------------------------------ grid


def test_presets_and_defaults():
    assert parse_grid(None, quick=True) is PRESETS["quick"]
    # no flag: the standard grid (minutes), never the hour-long full one
    assert parse_grid(None, quick=False) is PRESETS["standard"]
    assert parse_grid("standard", quick=True) is PRESETS["standard"]
    full = PRESETS["full"]
    assert full.dims == (100_000, 1_000_000, 10_000_000)
    assert full.clients == (10, 100, 1000)
    assert full.dropouts == (0.0, 0.1, 0.3)


def test_custom_spec_overrides_a_preset():
    g = parse_grid(
        "standard;schemes=plain,flare-ckks;dims=1e5;clients=10,20;dropouts=0", quick=False
    )
    assert g.schemes == ("plain", "flare-ckks")
    assert g.dims == (100_000,)
    assert g.clients == (10, 20)
    assert g.dropouts == (0.0,)
    assert g.cell_seconds == PRESETS["standard"].cell_seconds


@pytest.mark.parametrize(
    "spec",
    [
        "nosuch",
        "quick;schemes=bogus",
        "quick;dims=abc",
        "quick;dropouts=1.5",
        "quick;color=red",
        "quick;clients=0",
    ],
)
def test_bad_specs_are_named_errors(spec):
    with pytest.raises(ParameterError):
        parse_grid(spec, quick=True)


def test_cells_run_smallest_first():
    cells = PRESETS["full"].cells()
    work = [d * n for d, n, _ in cells]
    assert work == sorted(work)
    assert len(cells) == 27


def test_dropped_count_keeps_a_survivor():
    assert dropped_count(100, 0.1) == 10
    assert dropped_count(10, 0.3) == 3
    assert dropped_count(4, 0.2) == 1
    assert dropped_count(2, 0.9) == 1
    assert dropped_count(10, 0.0) == 0


# ------------------------------------------------------------------ workloads


def test_inputs_are_bounded_and_reproducible():
    a = make_inputs(1000, 3, seed=7)
    b = make_inputs(1000, 3, seed=7)
    c = make_inputs(1000, 3, seed=8)
    for p in a:
        assert np.array_equal(a[p], b[p])
        assert np.max(np.abs(a[p])) <= VALUE_BOUND
        assert not np.array_equal(a[p], c[p])
    assert not np.array_equal(a[client_id(0)], a[client_id(1)])


def test_workload_dropouts_are_a_deterministic_subset():
    inputs = make_inputs(10, 20, seed=1)
    w1 = make_workload(inputs, 10, 20, 0.3, seed=1)
    w2 = make_workload(inputs, 10, 20, 0.3, seed=1)
    assert isinstance(w1, Workload)
    assert w1.dropped == w2.dropped and len(w1.dropped) == 6
    assert set(w1.dropped) <= set(w1.cohort)
    assert len(w1.survivors) == 14


# ------------------------------------------------------------------ FLARE comparator


@pytest.fixture(scope="module")
def flare():
    return FlareCkksComparator()


def test_flare_comparator_sums_through_the_transport(flare):
    cohort = [client_id(i) for i in range(3)]
    rng = DeterministicRng.from_int(3)
    inputs = {p: rng.uniform(5000) * 2 - 1 for p in cohort}
    session = flare.open_round(0, cohort, 5000, rng=rng)
    report = InProcessTransport().run(session, inputs=inputs, dropouts={cohort[2]: 0})
    agg = session.coordinator.finalize()
    expected = inputs[cohort[0]] + inputs[cohort[1]]
    assert np.max(np.abs(agg.vector - expected)) < 1e-6
    assert agg.dropped == (cohort[2],)
    assert report.bytes_sent[cohort[0]] > 40 * 5000  # ~57 B/param: ciphertexts, not floats
    assert report.seconds[DECRYPTOR] > 0


def test_flare_server_cannot_decrypt(flare):
    """Threat: the server reading uploads. FLARE's server context carries no secret key."""
    assert not flare._server_ctx.is_private()
    assert flare._secret_ctx.is_private()


def test_flare_rejects_bad_input(flare):
    session = flare.open_round(0, [client_id(0)], 8, rng=DeterministicRng.from_int(0))
    with pytest.raises(ParameterError):
        session.clients[client_id(0)].protect(np.ones(9))
    with pytest.raises(ParameterError):
        flare.open_round(0, [client_id(0), client_id(0)], 8, rng=DeterministicRng.from_int(0))


# ------------------------------------------------------------------ goals


def _cell(scheme, dim=1_000_000, clients=100, dropout=0.0, **over):
    cell = {
        "scheme": scheme,
        "dim": dim,
        "clients": clients,
        "dropout": dropout,
        "status": "ok",
        "contributors": clients,
        "describe": {},
        "seconds": {
            "server": 1.0,
            "client": {"mean": 1.0, "max": 1.0},
            "holder": {"mean": 0.0, "max": 0.0},
        },
        "bytes": {"up_per_param": 4.0},
        "error": {"max_abs": 0.0},
        "ratios": {"server_vs_plain": 1.5},
    }
    for key, value in over.items():
        cell[key] = value
    return cell


AVAILABLE = {
    k: {"available": True}
    for k in ("masking-full", "masking-sparse", "ckks-3of5", "flare-ckks", "plain")
}


def _goal(goals, prefix):
    return next(g for g in goals if g["goal"].startswith(prefix))


def test_goal_met_and_not_met_at_goal_size():
    cells = [
        _cell("masking-full"),
        _cell("masking-full", dropout=0.1, ratios={"server_vs_plain": 6.0}),
        _cell(
            "ckks-3of5",
            bytes={"up_per_param": 6.2, "up_per_client": 6.2e6, "holder_down": 3e6},
            error={"max_abs": 5e-7},
            describe={"key_share_bytes_per_client": 123_000},
            ratios={"server_vs_plain": 12.0},
        ),
        _cell(
            "ckks-3of5",
            dim=10_000,
            bytes={"up_per_param": 9.0, "up_per_client": 9e4, "holder_down": 3e6},
            seconds={
                "server": 1.0,
                "client": {"mean": 1, "max": 1},
                "holder": {"mean": 0.2, "max": 0.2},
            },
        ),
    ]
    goals = evaluate(cells, {}, AVAILABLE)
    up = _goal(goals, "masking-full: upload")
    assert up["met"] is True and up["at_goal_size"]
    assert _goal(goals, "masking-full: server time ÷ plain server at 0%")["met"] is True
    slow = _goal(goals, "masking-full: server time ÷ plain server at 10%")
    assert slow["met"] is False and "over the target" in slow["note"]
    ckks_up = _goal(goals, "ckks-3of5: upload")
    assert ckks_up["met"] is True and "2.0% of the upload" in ckks_up["note"]
    server = _goal(goals, "ckks-3of5: server time")
    assert server["measured"] == pytest.approx(12.0) and server["met"] is False
    holder = _goal(goals, "ckks-3of5: key-holder work")
    assert holder["measured"] == pytest.approx(1.0) and holder["met"] is True


def test_ckks_upload_goal_needs_share_bytes_and_error():
    no_shares = _cell("ckks-3of5", bytes={"up_per_param": 6.0, "up_per_client": 6e6})
    goal = _goal(evaluate([no_shares], {}, AVAILABLE), "ckks-3of5: upload")
    assert goal["met"] is False and "not reported" in goal["note"]
    heavy = _cell(
        "ckks-3of5",
        bytes={"up_per_param": 6.0, "up_per_client": 1e6},
        describe={"key_share_bytes_per_client": 100_000},
    )
    assert _goal(evaluate([heavy], {}, AVAILABLE), "ckks-3of5: upload")["met"] is False
    noisy = _cell(
        "ckks-3of5",
        bytes={"up_per_param": 6.0, "up_per_client": 6e6},
        error={"max_abs": 1e-3},
        describe={"key_share_bytes_per_client": 1000},
    )
    assert _goal(evaluate([noisy], {}, AVAILABLE), "ckks-3of5: upload")["met"] is False


def test_ckks_holder_goal_needs_two_sizes():
    one = _cell("ckks-3of5", bytes={"up_per_param": 6.0, "holder_down": 10.0})
    goal = _goal(evaluate([one], {}, AVAILABLE), "ckks-3of5: key-holder")
    assert goal["met"] is None and "two model sizes" in goal["note"]


def test_goal_below_size_is_flagged_and_missing_is_none():
    small = _cell("masking-full", dim=4096, clients=10)
    goals = evaluate(
        [small],
        {},
        {
            "masking-full": {"available": True},
            "ckks-3of5": {"available": False, "reason": "not registered"},
        },
    )
    up = _goal(goals, "masking-full: upload")
    assert up["met"] is True and up["at_goal_size"] is False
    ckks = _goal(goals, "ckks-3of5: upload")
    assert ckks["met"] is None and "not registered" in ckks["note"]
    e2e = _goal(goals, "end to end on digits: masking-full")
    assert e2e["met"] is None


def test_e2e_goal_uses_the_ratio():
    e2e = {
        "where": "digits",
        "runs": {
            "plain": {"status": "ok", "final_accuracy": 0.9, "round_ratio_vs_plain": 1.0},
            "masking-full": {"status": "ok", "final_accuracy": 0.9, "round_ratio_vs_plain": 1.2},
            "ckks-3of5": {"status": "ok", "final_accuracy": 0.9, "round_ratio_vs_plain": 2.5},
        },
    }
    goals = evaluate([], e2e, AVAILABLE)
    assert _goal(goals, "end to end on digits: masking-full")["met"] is True
    assert _goal(goals, "end to end on digits: ckks-3of5")["met"] is False


# ------------------------------------------------------------------ harness paths


def test_unregistered_scheme_is_listed_not_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "available_schemes", lambda: ("plain",))
    results = harness.run_benchmark(
        quick=True,
        out_dir=tmp_path,
        progress=False,
        grid="quick;schemes=plain,masking-full;clients=4;dropouts=0;e2e=0",
    )
    info = results["schemes"]["masking-full"]
    assert info["available"] is False and "not registered" in info["reason"]
    masking = [c for c in results["cells"] if c["scheme"] == "masking-full"]
    assert len(masking) == 1 and masking[0]["status"] == "not available"
    assert results["e2e"]["runs"] == {}


def test_over_budget_cells_are_skipped_with_a_reason(tmp_path):
    results = harness.run_benchmark(
        quick=True,
        out_dir=tmp_path,
        progress=False,
        grid="quick;schemes=plain,flare-ckks;clients=4;dropouts=0;cell_seconds=0;e2e=0",
    )
    assert {c["status"] for c in results["cells"]} == {"skipped"}
    assert all("budget" in c["reason"] for c in results["cells"])
    assert all(g["met"] is None for g in results["goals"])
    assert (tmp_path / "results.md").is_file()


def test_plan_estimate_lists_skips_with_reasons():
    plan = harness.estimate_plan("full")
    assert plan["cells_run"] > 0 and plan["estimated_seconds"] > 0
    skipped = {(s["scheme"], s["dim"], s["clients"]) for s in plan["cells_skipped"]}
    assert ("plain", 10_000_000, 1000) in skipped  # 80 GB of inputs alone
    assert all(s["reason"] for s in plan["cells_skipped"])


def test_cli_plan_runs(capsys):
    from secagg_benchmarks.__main__ import main

    assert main(["--plan", "--quick"]) == 0
    assert "cells to run" in capsys.readouterr().out


def test_goal_status_says_below_goal_size_as_results_md_does():
    from secagg_benchmarks.report import _goal_rows, goal_status

    goal = {
        "goal": "g",
        "target": "t",
        "measured": 2.0,
        "met": False,
        "at_goal_size": False,
        "where": None,
        "note": None,
    }
    assert goal_status(goal) == "NOT MET (below goal size)"
    assert "(below goal size)" in _goal_rows([goal])[-1]
    assert goal_status({**goal, "met": True, "at_goal_size": True}) == "met"
    assert goal_status({**goal, "met": None}) == "not measured"


def test_bench_plan_lists_every_cell_of_the_default_standard_grid():
    from typer.testing import CliRunner

    from secagg_benchmarks.harness import estimate_plan
    from secagg_training.cli import app

    result = CliRunner().invoke(app, ["bench", "--plan"])
    assert result.exit_code == 0, result.output
    estimate = estimate_plan(None)
    assert estimate["grid"] == "standard"
    lines = result.output.splitlines()
    assert lines[0].startswith("grid standard:")
    runs = [line for line in lines if line.strip().startswith("run ")]
    skips = [line for line in lines if line.strip().startswith("skip ")]
    assert len(runs) == estimate["cells_run"] == len(estimate["cells_planned"]) > 0
    assert len(skips) == len(estimate["cells_skipped"])


def test_e2e_step_means_keep_withheld_training_time_withheld():
    """Under DP result records withhold ``seconds.train`` (it grows with a client's record
    count): the end-to-end summary reports it as missing instead of crashing or inventing 0."""
    from types import SimpleNamespace

    from secagg_benchmarks.e2e import _mean_seconds

    dp = [SimpleNamespace(seconds={"train": None, "total": 2.0}) for _ in range(3)]
    plain = [
        SimpleNamespace(seconds={"train": 1.0, "total": 2.0}),
        SimpleNamespace(seconds={"train": 3.0, "total": 4.0}),
    ]
    assert _mean_seconds(dp, "train") is None
    assert _mean_seconds(dp, "total") == 2.0
    assert _mean_seconds(plain, "train") == 2.0
