"""`secagg run` with DP (the default), `secagg audit` of its run dir, `secagg bench` options."""

import json
import math

import pytest
from typer.testing import CliRunner

from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger
from secagg_training.cli import DP_BY_DEFAULT, app
from secagg_training.privacy_plan import DP_TRAINING_DEFAULTS

runner = CliRunner()
TINY = ["--scheme", "plain", "--clients", "3", "--seed", "1", "--model", "mlp-small"]


def _invoke(*args):
    return runner.invoke(app, list(args))


def _error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def dp_run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = _invoke("run", *TINY, "--rounds", "2", "--epsilon", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out, result.output


def test_dp_is_on_by_default_with_its_training_defaults(dp_run_dir):
    out, output = dp_run_dir
    assert DP_BY_DEFAULT is True
    doc = json.loads((out / "result.json").read_text())
    cfg, privacy = doc["config"], doc["privacy"]
    assert cfg["dp"] is True and cfg["epsilon"] == 4.0 and cfg["delta"] == 1e-5
    for key, value in DP_TRAINING_DEFAULTS.items():
        assert cfg[key] == value
    assert privacy["enabled"] is True and privacy["budget"] == 4.0
    assert privacy["ledger"] == {"path": str(out / "ledger"), "temporary": False}
    assert all(0 < e <= 4.0 for e in privacy["epsilon_per_client"].values())
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert all(r["epsilon_max"] > 0 and r["refused_budget"] == [] for r in doc["rounds"])
    with PrivacyLedger.open(out / "ledger", expected_head=tuple(privacy["ledger_head"])) as book:
        for r in doc["rounds"]:
            assert all(book.has_entry(c, r["round"], KIND_DPSGD) for c in r["participants"])
    # the summary shows each client's ε and the guarantee in one line
    assert "privacy per client" in output and "ε (PLD)" in output
    # the printed label: unit, adjacency, ε rounded up, δ (rich may wrap the line)
    eps_up = math.ceil(privacy["epsilon_max"] * 1000) / 1000
    assert (
        f"privacy: DP-SGD, (ε ≤ {eps_up:.3f}, δ = 1e-05)-DP for one training record of one "
        "client under add-or-remove-one adjacency (budget ε=4;"
    ) in " ".join(output.split())
    assert "records" not in output  # no client's record count is printed under DP
    assert (out / "epsilon.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Privacy" in (out / "report.md").read_text()


def test_audit_of_a_dp_run_prints_the_budget_table_and_a_consistent_verdict(dp_run_dir):
    out, _ = dp_run_dir
    result = _invoke("audit", str(out))
    assert result.exit_code == 0, result.output
    assert "Privacy budget per client" in result.output
    assert "consistent" in result.output and "VIOLATION" not in result.output
    audit = json.loads((out / "audit.json").read_text())
    assert audit["passed"] is True and audit["findings"] == []
    assert audit["canary"]["verdict"] == "consistent"
    assert 0 < audit["canary"]["lower_bound"] <= audit["canary"]["theoretical_epsilon"]
    assert {c["client"] for c in audit["clients"]} == {"client/0", "client/1", "client/2"}


def test_audit_flags_a_result_that_disagrees_with_its_ledger(dp_run_dir, tmp_path):
    out, _ = dp_run_dir
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "ledger").write_bytes((out / "ledger").read_bytes())
    doc = json.loads((out / "result.json").read_text())
    doc["privacy"]["epsilon_per_client"]["client/0"] /= 2  # under-reported ε
    (copy / "result.json").write_text(json.dumps(doc))
    result = _invoke("audit", str(copy), "--no-canary")
    assert result.exit_code == 2, result.output
    assert "FAILED" in result.output


def test_audit_errors_are_one_line(tmp_path):
    assert "run directory must exist" in _error_line(_invoke("audit", str(tmp_path / "none")))
    out = tmp_path / "plain"
    ran = _invoke("run", *TINY, "--rounds", "1", "--no-dp", "--out", str(out))
    assert ran.exit_code == 0, ran.output
    assert "ledger must exist" in _error_line(_invoke("audit", str(out)))


def test_budget_exhaustion_stops_the_run_with_one_line_and_keeps_the_run_dir(tmp_path):
    out = tmp_path / "run"
    result = _invoke(
        "run", *TINY, "--rounds", "4", "--noise-multiplier", "1", "--budget", "4",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stopped = [line for line in result.output.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "before round 2" in stopped[0]
    doc = json.loads((out / "result.json").read_text())
    assert doc["stopped"]["round"] == 2 and doc["privacy"]["stopped"]["round"] == 2
    assert [r["round"] for r in doc["rounds"]] == [1]
    assert doc["privacy"]["budget"] == 4.0 and doc["privacy"]["target_epsilon"] is None


def test_dp_settings_from_a_config_file(tmp_path):
    config = tmp_path / "dp.toml"
    config.write_text(
        'scheme = "plain"\nclients = 3\nrounds = 1\nmodel = "mlp-small"\n'
        "epsilon = 3.0\ndelta = 1e-6\nmax-grad-norm = 0.5\nbatch_size = 32\n"
    )
    out = tmp_path / "run"
    result = _invoke("run", "--config", str(config), "--out", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "result.json").read_text())
    assert doc["config"]["batch_size"] == 32  # given, so the DP default does not apply
    assert doc["privacy"]["delta"] == 1e-6 and doc["privacy"]["max_grad_norm"] == 0.5
    assert doc["privacy"]["expected_batch_size"] == 32


@pytest.mark.parametrize(
    "args, match",
    [
        (["--epsilon", "0"], "epsilon must be a positive finite number"),
        (["--delta", "1.5"], "delta must be in (0, 1)"),
        (["--max-grad-norm", "-1"], "max_grad_norm must be a positive finite number"),
        (["--no-dp", "--budget", "3"], "budget must not be set together with no-dp"),
    ],
)
def test_bad_dp_flags(tmp_path, args, match):
    line = _error_line(_invoke("run", *TINY, *args, "--out", str(tmp_path / "x")))
    assert match in line
    assert not (tmp_path / "x").exists()


def test_bench_command_exists_and_rejects_bad_options():
    helped = _invoke("bench", "--help")
    assert helped.exit_code == 0
    for option in ("--quick", "--out", "--grid"):
        assert option in helped.output
    assert "grid" in _error_line(_invoke("bench", "--grid", "nonsense", "--plan"))
    assert _invoke("bench", "--frobnicate").exit_code == 2


def test_client_level_dp_from_the_cli(tmp_path):
    out = tmp_path / "run"
    args = ["--clients", "4", "--rounds", "1", "--seed", "1", "--model", "logreg"]
    result = _invoke("run", "--scheme", "masking", "--dp-unit", "client", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "client-level DP per client" in result.output
    doc = json.loads((out / "result.json").read_text())
    assert doc["privacy"]["kind"] == "client-level" and doc["config"]["dp_unit"] == "client"
    assert doc["config"]["batch_size"] == 32  # the DP-SGD training defaults do not apply
    assert all(0 < e <= 8.0 for e in doc["privacy"]["epsilon_per_client"].values())
    # the printed label: replace-one headline over all rounds, ε rounded up, δ, h's
    # derivation, and the (weaker) zero-out ε labelled beside it (DESIGN §4)
    p = doc["privacy"]
    flat = " ".join(result.output.split())
    replace_up = math.ceil(p["replace_one"]["epsilon_max"] * 1000) / 1000
    assert (
        f"(ε ≤ {replace_up:.3f}, δ = 1e-05)-DP for one participating client's clipped model "
        "updates over all its rounds (all its records; not whether it took part) under "
        "replace-one"
    ) in flat
    assert "h = 1 (3 guaranteed survivors (masking survivor threshold t=3); 2 declared " in flat
    eps_up = math.ceil(p["epsilon_max"] * 1000) / 1000
    assert f"zero-out (weaker adjacency): ε ≤ {eps_up:.3f}" in flat
    report = " ".join((out / "report.md").read_text().split())
    assert p["guarantee"] in report and p["min_honest_derivation"] in report
    small = _invoke(
        "run",
        "--scheme",
        "masking",
        "--dp-unit",
        "client",
        *args,
        "--clients-per-round",
        "3",
        "--min-honest",
        "3",
    )
    assert "min_honest + colluders must be at most the cohort size 3" in _error_line(small)
    plain = _invoke("run", "--scheme", "plain", "--dp-unit", "client", *args)
    assert "secure scheme" in _error_line(plain)
