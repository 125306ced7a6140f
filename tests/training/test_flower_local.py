"""The Flower engine end to end: real SuperLink / SuperNode processes on 127.0.0.1.

Two federations, each as few rounds as the claim needs (every Flower round trip
costs seconds: a SuperNode polls every 3 s and runs each message in a fresh process):

- a clean 3-round DP run must match the in-process engine with the same seeds
  (accuracy within 1 point, protocol bytes per client within 5 %), with every
  client's own ledger charging each of its rounds once;
- a 4-round run in which one SuperNode is SIGKILLed while round 2 is open (a
  dropout that round survives) and the server is SIGKILLed while round 3 is open
  (its clients may already be charged), then resumed: the ledger verifies and
  charges every (client, round) exactly once, and round 4 runs.

Every process is started in its own process group and stopped in ``finally``.
"""

import contextlib
import json
import threading
import time

import pytest
from tiny_dp import tiny_dp

from secagg.rand import DeterministicRng
from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger
from secagg_training.checkpoint import load_checkpoint
from secagg_training.federation import Federation, FederationConfig
from secagg_training.flower.local import LocalDeployment, prepare, run_flower_local

pytestmark = pytest.mark.slow

SEED = 11
CONFIG = tiny_dp(seed=5)


def _charges(path):
    with PrivacyLedger.open(path) as ledger:
        ledger.verify(recompute_epsilon=True)
        return sorted((e.client, e.round) for e in ledger.entries(kind=KIND_DPSGD))


# each secure scheme once, 3 rounds (ckks with a 3-holder committee: 3 more SuperNodes);
# plain has exact parity through the apps (test_flower_apps.py) and the kill test below
SCHEMES = ["masking", "ckks"]


@pytest.fixture(scope="module", params=SCHEMES)
def flower_run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"flower-{request.param}")
    config = FederationConfig(scheme=request.param, **CONFIG, rounds=3, committee=3)
    lines = []
    result = run_flower_local(
        config, run_dir, insecure_seed=SEED, log=lines.append, timeout=600, train_timeout=120
    )
    return config, run_dir, result, lines


def test_flower_local_matches_the_in_process_engine(flower_run):
    config, run_dir, result, lines = flower_run
    reference = Federation(config, rng=DeterministicRng.from_int(SEED)).run()
    assert result["engine"] == "flower"
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert abs(result["final_accuracy"] - reference.final_accuracy) <= 0.01
    for ours, theirs in zip(result["rounds"], reference.rounds, strict=True):
        assert ours["participants"] == theirs.participants
        assert ours["bytes_up_per_client"] == pytest.approx(theirs.bytes_up_per_client, rel=0.05)
        assert ours["bytes_down_per_client"] == pytest.approx(
            theirs.bytes_down_per_client, rel=0.05, abs=1.0
        )
    assert any("round 3" in line for line in lines)  # the ServerApp's progress reached us
    assert (run_dir / "model.pt").exists() and load_checkpoint(run_dir).finished


def test_flower_clients_keep_their_own_ledger_and_the_server_charges_once(flower_run):
    config, run_dir, result, _ = flower_run
    every = sorted((f"client/{i}", r) for i in range(3) for r in (1, 2, 3))
    assert _charges(run_dir / "ledger") == every
    for i in range(3):
        own = run_dir / "flower" / "nodes" / f"client_{i}" / f"client_{i}.ledger"
        assert _charges(own) == [(f"client/{i}", r) for r in (1, 2, 3)]
    assert result["privacy"]["epsilon_max"] <= config.epsilon


def test_key_files_are_private_and_no_process_outlives_the_run(flower_run):
    _, run_dir, _, _ = flower_run
    for key in (run_dir / "keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600
    roster = json.loads((run_dir / "roster.json").read_text())
    clients = [p["party"] for p in roster["parties"] if p["party"].startswith("client/")]
    assert clients == [f"client/{i}" for i in range(3)]
    for log in (run_dir / "flower" / "logs").iterdir():  # no secret reaches a log
        text = log.read_text(errors="replace")
        for key in (run_dir / "keys").iterdir():
            assert json.loads(key.read_text())["signing"] not in text


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(0.2)
    return False


def _open_round(run_dir):
    state = load_checkpoint(run_dir)
    return state.open_round["round"] if state.open_round else None


def test_killed_supernode_is_a_dropout_and_a_killed_server_resumes_charging_each_round_once(
    tmp_path,
):
    run_dir = tmp_path
    config = FederationConfig(scheme="plain", **CONFIG, rounds=4)
    parties = prepare(config, run_dir, resume=False, train_timeout=40, phase_timeout=30)
    with LocalDeployment(run_dir, parties) as deployment:
        runner = threading.Thread(target=deployment.submit, kwargs={"timeout": 600, "log": print})
        runner.start()
        try:
            assert _wait_for(lambda: _open_round(run_dir) == 2, 300)
            deployment.track()
            deployment.kill("client/2")  # mid-round: round 2's training request is out
            assert _wait_for(lambda: _open_round(run_dir) == 3, 300)
            deployment.track()
            deployment.kill("superlink")  # with the ServerApp process it started
        finally:
            deployment.stop()
            runner.join(timeout=30)
    assert deployment.tracked and not deployment.alive()  # Flower's own children included
    state = load_checkpoint(run_dir)
    assert state.completed_round == 2 and not state.finished
    round2 = state.rounds[1]
    assert not round2["aborted"] and round2["dropped"] == ["client/2"]
    assert round2["participants"] == ["client/0", "client/1"]

    result = run_flower_local(config, run_dir, resume=True, log=print, timeout=600)
    assert result["engine"] == "flower"
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]
    assert result["rounds"][2]["aborted"]  # interrupted: its aggregate was lost, never re-run
    assert not result["rounds"][3]["aborted"] and len(result["rounds"][3]["participants"]) == 3
    every = sorted((f"client/{i}", r) for i in range(3) for r in (1, 2, 3, 4))
    assert _charges(run_dir / "ledger") == every
