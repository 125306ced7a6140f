"""Checkpoint and resume of the in-process engine after a crash of the server process.

The crash is played by an exception at the two points that matter: right after a
round's checkpoint (nothing open), and after the ledger charged a round but before
its checkpoint was written (the window issue 12's fuzzing found unrecoverable).
"""

import json

import pytest
import torch
from tiny_dp import tiny_dp

from secagg.errors import ParameterError
from secagg.rand import DeterministicRng
from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger
from secagg_training.checkpoint import load_checkpoint
from secagg_training.federation import Federation, FederationConfig, run_federation

CONFIG = FederationConfig(**tiny_dp(scheme="plain", rounds=3, seed=4))


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even ``except Exception``."""


class CrashAfterCharge(Federation):
    """Dies in round 3 after its clients trained and were charged, before any checkpoint."""

    def train_clients(self, round_number, indices):
        updates = super().train_clients(round_number, indices)
        if round_number == 3:
            raise Crash  # run_round's finally commits the charge first, as a real crash would
        return updates


def _charges(path):
    with PrivacyLedger.open(path) as ledger:
        ledger.verify(recompute_epsilon=True)
        return sorted((e.client, e.round) for e in ledger.entries(kind=KIND_DPSGD))


def _every_round_once(rounds):
    return sorted((f"client/{i}", r) for i in range(3) for r in rounds)


def test_resume_after_a_completed_round_equals_the_uninterrupted_run(tmp_path):
    straight = run_federation(CONFIG, rng=DeterministicRng.from_int(7), ledger_path=tmp_path / "l0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def crash_after_round_2(record):
        if record.round == 2:
            raise Crash

    with pytest.raises(Crash):
        Federation(CONFIG, rng=DeterministicRng.from_int(7), ledger_path=run_dir / "ledger").run(
            on_round=crash_after_round_2, run_dir=run_dir
        )
    assert load_checkpoint(run_dir).completed_round == 2
    resumed = Federation(
        CONFIG, rng=DeterministicRng.from_int(7), ledger_path=run_dir / "ledger", resume=True
    ).run(run_dir=run_dir)
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    assert resumed.final_accuracy == pytest.approx(straight.final_accuracy, abs=1e-6)
    assert _charges(run_dir / "ledger") == _every_round_once([1, 2, 3])
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(saved[name], tensor)


def test_resume_in_the_window_ledger_ahead_of_checkpoint_charges_once_and_runs_no_round_twice(
    tmp_path,
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(Crash):
        CrashAfterCharge(CONFIG, ledger_path=run_dir / "ledger").run(run_dir=run_dir)
    state = load_checkpoint(run_dir)
    assert state.completed_round == 2 and state.open_round["round"] == 3
    assert _charges(run_dir / "ledger") == _every_round_once([1, 2, 3])  # charged, not saved

    result = Federation(CONFIG, ledger_path=run_dir / "ledger", resume=True).run(run_dir=run_dir)
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert result.rounds[2].aborted and "stopped during this round" in result.rounds[2].error
    assert _charges(run_dir / "ledger") == _every_round_once([1, 2, 3])  # nothing twice
    assert result.privacy["steps"]["run"] == {
        c: 3 * s for c, s in result.privacy["steps"]["per_round"].items()
    }
    assert load_checkpoint(run_dir).finished


def test_resume_refuses_another_configuration(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = FederationConfig(scheme="plain", clients=3, rounds=1, model="mlp-small", dp=False)
    run_federation(config, run_dir=run_dir)
    other = FederationConfig(scheme="plain", clients=3, rounds=2, model="mlp-small", dp=False)
    with pytest.raises(ParameterError, match="checkpoint's configuration"):
        Federation(other, resume=True).run(run_dir=run_dir)
    assert json.loads((run_dir / "checkpoint.json").read_text())["finished"]


def test_cli_resume_continues_a_crashed_run_and_refuses_new_settings(tmp_path):
    from typer.testing import CliRunner

    from secagg_training.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["run", "--scheme", "plain", "--no-dp", "--clients", "3", "--rounds", "2", "--seed", "1"]
    args += ["--model", "mlp-small", "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (out / "model.pt").exists() and load_checkpoint(out).finished
    # play a crash before round 2's checkpoint and result.json (CLI plumbing only; the
    # model file is round 2's, which the tests above do properly)
    state = load_checkpoint(out)
    state.rounds, state.finished = state.rounds[:1], False
    (out / "checkpoint.json").write_text(state.to_json())
    (out / "result.json").unlink()
    resumed = runner.invoke(app, ["run", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads((out / "result.json").read_text())
    assert [r["round"] for r in doc["rounds"]] == [1, 2] and doc["engine"] == "in-process"
    refused = runner.invoke(app, ["run", "--resume", str(out), "--rounds", "5"])
    assert refused.exit_code == 2 and "resume must not be combined" in refused.output
