"""`secagg run`: the run directory with the DESIGN §6 keys; bad input: one error line, exit 2."""

import json

import pytest
from typer.testing import CliRunner

from secagg.schemes import available_schemes
from secagg_training.cli import DEFAULT_SCHEME, app

runner = CliRunner()
FAST = ["--clients", "3", "--rounds", "2", "--seed", "1"]


def _run(*args):
    return runner.invoke(app, ["run", *args])


def test_run_writes_result_json_report_and_plots(tmp_path):
    out = tmp_path / "run"
    result = _run("--scheme", "plain", "--no-dp", *FAST, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "final accuracy:" in result.output
    assert "INSECURE" in result.output  # the plaintext reference says so
    doc = json.loads((out / "result.json").read_text())
    assert {"scheme", "config", "rounds", "final_accuracy", "privacy"} <= set(doc)
    assert doc["scheme"] == "plain" and doc["config"]["clients"] == 3
    assert len(doc["rounds"]) == 2
    for record in doc["rounds"]:
        assert {
            "round",
            "accuracy",
            "loss",
            "participants",
            "dropped",
            "bytes_up_per_client",
            "bytes_down_per_client",
            "seconds",
        } <= set(record)
        assert set(record["seconds"]) >= {"train", "protect", "aggregate", "decrypt", "total"}
        assert record["bytes_up_per_client"] > 0
    assert doc["final_accuracy"] == doc["rounds"][-1]["accuracy"]
    assert f"{doc['final_accuracy']:.4f}" in result.output
    privacy = doc["privacy"]
    assert {"accountant", "delta", "epsilon_per_client", "epsilon_max", "budget"} <= set(privacy)
    assert privacy["enabled"] is False
    report = (out / "report.md").read_text()
    assert "accuracy.png" in report and "INSECURE" in report
    for png in ("accuracy.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dropout_is_recorded(tmp_path):
    out = tmp_path / "run"
    result = _run(
        "--scheme",
        "plain",
        "--no-dp",
        "--clients",
        "6",
        "--rounds",
        "3",
        "--dropout",
        "0.3",
        "--seed",
        "1",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rounds = json.loads((out / "result.json").read_text())["rounds"]
    assert any(r["dropped"] for r in rounds)
    for r in rounds:
        assert not set(r["dropped"]) & set(r["participants"])  # plain: a dropout never sent
        assert len(r["dropped"]) + len(r["participants"]) == 6 or r["aborted"]


def test_config_file_with_flags_overriding(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'scheme = "plain"\nclients = 4\nrounds = 5\nno-dp = true\n'
        'local_epochs = 1\nbatch-size = 16\npartition = "dirichlet"\nalpha = 2.0\n'
    )
    out = tmp_path / "run"
    result = _run("--config", str(config), "--rounds", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "result.json").read_text())["config"]
    assert (cfg["clients"], cfg["rounds"], cfg["local_epochs"], cfg["batch_size"]) == (4, 1, 1, 16)
    assert cfg["partition"] == "dirichlet" and cfg["alpha"] == 2.0 and cfg["dp"] is False


def _error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def test_unknown_scheme_names_the_available_ones(tmp_path):
    line = _error_line(_run("--scheme", "paillier", "--no-dp", "--out", str(tmp_path / "x")))
    for name in available_schemes():
        assert name in line
    assert not (tmp_path / "x").exists()


def test_dp_settings_with_no_dp_fail_with_one_line(tmp_path):
    line = _error_line(_run("--no-dp", "--epsilon", "3", *FAST, "--out", str(tmp_path / "x")))
    assert "epsilon must not be set together with no-dp" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "toml, match",
    [
        ("frobnicate = 1\n", "config key must be one of"),
        ('clients = "ten"\n', "clients must be a positive integer"),
        ("clients = [\n", "config must be valid TOML"),
        ("dropout = 2.0\n", "dropout must be a probability"),
        ('no-dp = "yes"\n', "no-dp"),
        ("[section]\nclients = 3\n", "got 'section'"),
        ('scheme = ["plain"]\n', "single value"),
        ('scheme = "rot13"\n', "scheme must be one of"),
    ],
)
def test_bad_config_files(tmp_path, toml, match):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    line = _error_line(_run("--config", str(config), "--out", str(tmp_path / "x")))
    assert match in line


def test_missing_config_file(tmp_path):
    assert "existing file" in _error_line(_run("--config", str(tmp_path / "nope.toml")))


@pytest.mark.parametrize(
    "args, match",
    [
        (["--dropout", "1.5"], "dropout must be a probability"),
        (["--clients", "0"], "clients must be a positive integer"),
        (["--clients", "100000"], "at most the number of training samples"),
        (["--partition", "shards"], "partition must be one of"),
        (["--graph", "ring"], "graph must be one of"),
    ],
)
def test_bad_flag_values(tmp_path, args, match):
    assert match in _error_line(_run("--no-dp", *args, "--out", str(tmp_path / "x")))


def test_non_numeric_flag_is_a_usage_error():
    result = _run("--clients", "ten")
    assert result.exit_code == 2
    assert "--clients" in result.output


def test_refuses_to_overwrite_a_previous_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert "new or empty directory" in _error_line(_run("--no-dp", *FAST, "--out", str(out)))
    assert (out / "result.json").read_text() == "{}"


def test_default_scheme_is_registered():
    assert DEFAULT_SCHEME in available_schemes()
