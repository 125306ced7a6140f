"""A newcomer's first hour (issue 13): safe defaults, weak settings refused, clear errors."""

import dataclasses
import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from secagg.errors import DecodeError, ParameterError
from secagg.plain import PlainClient
from secagg.rand import DeterministicRng
from secagg_training.cli import app, resolve_settings
from secagg_training.config import PRIVACY_SETTINGS, FederationConfig
from secagg_training.federation import Federation, UtilityWarning, run_federation
from secagg_training.models import available_models
from secagg_training.report import effective_threshold, epsilon_series, render_report
from secagg_training.updates import flatten

runner = CliRunner()
PLAIN = {"scheme": "plain", "dp": False}


def _rng():
    return DeterministicRng.from_int(13)


def _error_line(result, code=2):
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------ safe defaults


def test_the_python_api_defaults_are_the_cli_defaults():
    api = FederationConfig()
    cli, _ = resolve_settings({}, {})
    assert api == cli
    assert api.scheme == "ckks" and api.dp is True and api.dp_unit == "record"
    assert (api.epsilon, api.delta) == (8.0, 1e-5)
    assert (api.batch_size, api.local_epochs, api.lr) == (64, 1, 1.0)  # DP-SGD's own defaults
    off = FederationConfig(dp=False)
    assert (off.batch_size, off.local_epochs, off.lr) == (32, 3, 0.2)
    assert (off.epsilon, off.delta) == (None, None)


UNSET_PRIVACY = {
    "epsilon": 3.0,
    "delta": 1e-6,
    "budget": 2.0,
    "noise_multiplier": 1.1,
    "min_honest": 2,
    "max_grad_norm": 0.5,
    "dp_unit": "client",
    "nominal_records": 100,
}


@pytest.mark.parametrize("name", sorted(PRIVACY_SETTINGS))
def test_a_privacy_setting_without_dp_is_refused(name):
    """FederationConfig(epsilon=3.0, dp=False) used to train with no DP and no warning."""
    with pytest.raises(ParameterError, match=f"{name} must not be set when dp is off"):
        FederationConfig(**PLAIN, **{name: UNSET_PRIVACY[name]})
    assert set(UNSET_PRIVACY) == set(PRIVACY_SETTINGS)


CONSTRUCTION_CHECKS = [
    ({"scheme": "ckks", "threshold": 9}, "threshold must be at most committee"),
    ({"scheme": "ckks", "committee": 17}, "committee must be at most 16"),
    ({"scheme": "masking", "clients": 10, "threshold": 5}, r"threshold must be in \(5, 10\]"),
    ({"scheme": "masking", "clients": 10, "threshold": 11}, r"threshold must be in \(5, 10\]"),
    (
        {"scheme": "masking", "clients": 10, "clients_per_round": 6, "threshold": 7},
        r"threshold must be in \(5, 6\]",
    ),
    ({"scheme": "plain", "threshold": 3}, "threshold must not be set for scheme 'plain'"),
    ({"scheme": "ckks", "clients": 1}, "clients must be at least 2"),
    ({"scheme": "masking", "clients": 1}, "clients must be at least 2"),
    ({"scheme": "ckks", "clients_per_round": 1}, "clients_per_round must be at least 2"),
    ({"scheme": "masking", "clients_per_round": 1}, "clients_per_round must be at least 2"),
    ({"scheme": "plain", "dp_unit": "client"}, "must run over a secure scheme"),
    (
        {"scheme": "masking", "dp_unit": "client", "clients_per_round": 4, "min_honest": 5},
        "min_honest must be ≤ the clients per round",
    ),
]


@pytest.mark.parametrize(
    "change, match", CONSTRUCTION_CHECKS, ids=[m for _, m in CONSTRUCTION_CHECKS]
)
def test_everything_checkable_is_checked_at_construction(change, match):
    with pytest.raises(ParameterError, match=match):
        FederationConfig(**change)


def test_the_insecure_reference_still_accepts_a_single_client():
    assert FederationConfig(scheme="plain", clients=1, dp=False).clients == 1


# ------------------------------------------------------------------ bad input at the server


class _NaNClient(PlainClient):
    """A deviating client that submits NaN (the honest client refuses to)."""

    def protect(self, vector):
        msg = super().protect(np.zeros_like(vector))[0]
        return [dataclasses.replace(msg, vector=np.full_like(vector, np.nan))]


def test_a_poisoned_update_aborts_the_round_and_keeps_the_model():
    fed = Federation(FederationConfig(**PLAIN, clients=3, rounds=1, seed=1), rng=_rng())
    open_round = fed.scheme.open_round

    def with_attacker(*args, **kwargs):
        session = open_round(*args, **kwargs)
        victim = sorted(session.clients)[1]
        honest = session.clients[victim]
        evil = _NaNClient(honest.party, honest._session, honest._round, honest._dim)
        session.clients[victim] = session.participants[victim] = evil
        return session

    fed.scheme.open_round = with_attacker  # type: ignore[method-assign]
    before = flatten(fed.model)
    record = fed.run_round(1).record
    assert record.aborted and "must be finite" in (record.error or "")
    np.testing.assert_array_equal(flatten(fed.model), before)
    with pytest.raises(DecodeError):  # the scheme itself, without the federation
        session = with_attacker(2, fed.clients, fed.dim + 1, rng=_rng())
        from secagg_training.transport import InProcessTransport

        InProcessTransport().run(session, inputs={p: np.ones(fed.dim + 1) for p in fed.clients})


# ------------------------------------------------------------------ models


def test_batchnorm_running_statistics_are_refused_without_dp():
    """Only parameters are aggregated: BatchNorm's running stats would silently stay initial."""
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    with pytest.raises(ParameterError, match="running statistics.*BatchNorm1d"):
        Federation(FederationConfig(**PLAIN, clients=2, rounds=1), model=bn)
    stateless = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10, affine=False))
    stateless[2].track_running_stats = False
    stateless[2].running_mean = stateless[2].running_var = None
    Federation(FederationConfig(**PLAIN, clients=2, rounds=1), model=stateless)


def test_a_custom_model_is_recorded_as_itself_and_can_be_saved(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = run_federation(
        FederationConfig(**PLAIN, clients=2, rounds=1, seed=0), model=model, rng=_rng()
    )
    doc = result.to_dict()
    assert doc["config"]["model"] == "custom:Sequential" != "mlp"
    assert doc["model"]["class"] == "torch.nn.modules.container.Sequential"
    assert doc["model"]["parameters"] == 650
    path = result.save_model(tmp_path / "model.pt")
    loaded = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    loaded.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(flatten(loaded), flatten(result.model))
    assert "custom:Sequential" in render_report(result)


def test_model_help_lists_the_choices():
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert all(name in result.output for name in available_models())


# ------------------------------------------------------------------ weak settings, utility


def test_q_equal_one_warns(tmp_path):
    """30 clients of ~48 digits records each < batch 64: every step samples every record."""
    config = FederationConfig(scheme="plain", clients=30, rounds=1, seed=0)
    with pytest.warns(UtilityWarning, match="nominal_records N=47 is at most batch_size=64"):
        fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    fed.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at the defaults
        Federation(FederationConfig(scheme="plain", rounds=1), rng=_rng()).close()


def test_clients_1_and_one_client_per_round_are_refused_by_the_cli(tmp_path):
    line = _error_line(runner.invoke(app, ["run", "--clients", "1", "--out", str(tmp_path / "a")]))
    assert "clients must be at least 2" in line
    line = _error_line(
        runner.invoke(
            app, ["run", "--scheme", "ckks", "--clients-per-round", "1", "--out", str(tmp_path)]
        )
    )
    assert "clients_per_round must be at least 2" in line


def test_no_model_produced_exits_nonzero(tmp_path):
    args = ["--scheme", "plain", "--no-dp", "--clients", "2", "--rounds", "3", "--seed", "0"]
    result = runner.invoke(app, ["run", *args, "--dropout", "0.95", "--out", str(tmp_path / "r")])
    assert "no round produced a model" in _error_line(result, code=1)
    doc = json.loads((tmp_path / "r" / "result.json").read_text())
    assert all(r["aborted"] for r in doc["rounds"])


def test_the_cli_prints_a_warning_line_when_sampling_gives_q_1(tmp_path):
    args = ["--scheme", "plain", "--clients", "30", "--rounds", "1", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    warned = "warning: the declared nominal_records N=47"
    assert [line for line in result.output.splitlines() if line.startswith(warned)]


# ------------------------------------------------------------------ watching long jobs


def test_redirected_output_gets_one_line_per_round_before_the_summary(tmp_path):
    args = ["--scheme", "plain", "--no-dp", "--clients", "3", "--rounds", "3", "--seed", "1"]
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rounds = [i for i, line in enumerate(lines) if line.startswith("round ") and "/3: " in line]
    assert [lines[i].split(":")[0] for i in rounds] == ["round 1/3", "round 2/3", "round 3/3"]
    table = next(i for i, line in enumerate(lines) if "secagg run — plain" in line)
    assert max(rounds) < table


# ------------------------------------------------------------------ unwritable output


def test_out_under_proc_is_one_error_line():
    line = _error_line(runner.invoke(app, ["run", "--out", "/proc/nope"]))
    assert "out must be a directory that can be created" in line


def test_out_under_a_read_only_parent_is_one_error_line(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):  # root ignores chmod: play the kernel's answer
        if self.parent == tmp_path / "ro":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    line = _error_line(runner.invoke(app, ["run", "--out", str(tmp_path / "ro" / "run")]))
    assert "out must be a directory that can be created" in line and "Permission denied" in line


@pytest.mark.parametrize("where", ["ledger", "result"])
def test_a_run_directory_turning_read_only_mid_run_is_one_error_line(tmp_path, monkeypatch, where):
    if where == "ledger":

        def fail(*args, **kwargs):
            raise sqlite3.OperationalError("attempt to write a readonly database")

        monkeypatch.setattr("secagg_privacy.ledger.PrivacyLedger.record_round", fail)
    else:

        def fail(*args, **kwargs):
            raise PermissionError(13, "Permission denied", "result.json")

        monkeypatch.setattr("secagg_training.report.write_result_json", fail)
    args = ["--scheme", "plain", "--clients", "3", "--rounds", "1", "--seed", "1"]
    line = _error_line(runner.invoke(app, ["run", *args, "--out", str(tmp_path / "r")]))
    assert "out must stay a writable directory during the run" in line


# ------------------------------------------------------------------ smaller items


def test_version():
    from importlib import metadata

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"secagg {metadata.version('secagg')}"


def test_license_file_matches_pyproject():
    root = Path(__file__).resolve().parents[2]
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = { text = "Apache-2.0" }' in (root / "pyproject.toml").read_text()


def test_report_shows_the_effective_threshold_and_epsilon_lines_are_grouped(tmp_path):
    config = FederationConfig(scheme="masking", clients=4, rounds=1, seed=0)
    result = run_federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    assert effective_threshold(result).startswith("⌊n/2⌋+1 surviving clients")
    assert "| threshold | None |" not in render_report(result)
    assert "| threshold | ⌊n/2⌋+1" in render_report(result)
    ckks = dataclasses.replace(result, config=FederationConfig(clients=4, rounds=1))
    ckks.scheme = {"threshold": 3}
    assert effective_threshold(ckks) == "3 of 5 key holders"


def test_identical_epsilon_curves_share_one_line():
    """Ten equal-sized clients used to draw a 10-entry legend for ten identical lines."""
    from types import SimpleNamespace

    same = {f"client/{i}": 1.0 for i in range(10)}
    rounds = [SimpleNamespace(epsilon=same), SimpleNamespace(epsilon={**same, "client/3": 2.5})]
    result = SimpleNamespace(privacy={"epsilon_per_client": same}, rounds=rounds[:1])
    assert epsilon_series(result) == {"all 10 clients": [0.0, 1.0]}
    result.rounds = rounds
    assert epsilon_series(result) == {
        "client/0 and 8 more": [0.0, 1.0, 1.0],
        "client/3": [0.0, 1.0, 2.5],
    }


def test_without_dp_a_secure_run_repeats_up_to_the_schemes_error():
    """README: same seed, different keys/masks (rng) → the same model within the declared error."""
    config = FederationConfig(scheme="masking", dp=False, clients=3, rounds=2, seed=3)
    a, b = (run_federation(config, rng=DeterministicRng.from_int(n)) for n in (1, 2))
    bound = max(r.error_bound or 0.0 for r in (*a.rounds, *b.rounds))
    assert 0 < bound < 1e-4
    np.testing.assert_allclose(flatten(a.model), flatten(b.model), rtol=0, atol=1e-3)
    assert not np.array_equal(flatten(a.model), flatten(b.model))  # keys and masks did differ
