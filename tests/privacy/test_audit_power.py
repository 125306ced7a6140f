"""The audit can fail at every ε: an injected 5× noise bug in the production DP-SGD noise
path is caught by the noise-scale check (exit status 2) at ε = 1, 4, 8 and 16, where the
one-run canary bound alone is blind above ε ≈ 5.3; the honest mechanism passes."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from secagg_privacy import accounting
from secagg_privacy.audit import stats
from secagg_privacy.dpsgd import _SecureNoiseDPOptimizer
from secagg_privacy.ledger import PrivacyLedger, pin_digest
from secagg_training.cli import app

DELTA = 1e-5
Q, STEPS, CLIP = 0.1, 10, 1.0


def make_run(run_dir, target_epsilon, model=None):
    """A one-client run directory whose σ is calibrated to ``target_epsilon``."""
    run_dir.mkdir(parents=True)
    sigma = accounting.calibrate_noise_multiplier(
        target_epsilon=target_epsilon, delta=DELTA, sample_rate=Q, steps=STEPS
    )
    event = accounting.sgd_event(noise_multiplier=sigma, sample_rate=Q, steps=STEPS)
    with PrivacyLedger.open(run_dir / "ledger") as book:
        book.set_budget("client/0", epsilon=target_epsilon, delta=DELTA, round_index=0)
        book.record_round(
            "client/0",
            1,
            event=event,
            delta=DELTA,
            noise_multiplier=sigma,
            sample_rate=Q,
            steps=STEPS,
            clip_norm=CLIP,
        )
        eps, head = book.epsilon_spent("client/0"), book.head()
    privacy = {
        "enabled": True,
        "delta": DELTA,
        "epsilon_per_client": {"client/0": eps},
        "epsilon_max": eps,
        "budget": target_epsilon,
        "ledger_head": list(head),
    }
    privacy["pin"] = pin_digest(privacy)
    result = {
        "scheme": "plain",
        "config": {"lr": 0.5} | ({"model": model} if model else {}),
        "rounds": [{"round": 1, "participants": ["client/0"]}],
        "privacy": privacy,
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def five_times_less_noise(monkeypatch):
    """The injected bug: the optimizer's noise step draws σC/5 while the ledger says σC."""
    honest = _SecureNoiseDPOptimizer.add_noise

    def buggy(self):
        claimed = self.noise_multiplier
        self.noise_multiplier = claimed / 5
        try:
            honest(self)
        finally:
            self.noise_multiplier = claimed

    monkeypatch.setattr(_SecureNoiseDPOptimizer, "add_noise", buggy)


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [1.0, 4.0, 8.0, 16.0])
def test_a_5x_noise_bug_fails_the_audit_at_every_epsilon(tmp_path, monkeypatch, epsilon):
    run_dir = make_run(tmp_path / "run", epsilon)
    runner = CliRunner()
    honest = runner.invoke(app, ["audit", str(run_dir), "--out", str(tmp_path / "a")])
    assert honest.exit_code == 0, honest.output
    assert "audit passed; noise scale: consistent" in honest.output
    five_times_less_noise(monkeypatch)
    buggy = runner.invoke(app, ["audit", str(run_dir), "--out", str(tmp_path / "b")])
    assert buggy.exit_code == 2, buggy.output
    assert "audit FAILED" in buggy.output and "passed" not in buggy.output
    doc = json.loads((tmp_path / "b" / "audit.json").read_text())
    noise = doc["canary"]["noise"]
    assert noise["verdict"] == stats.NOISE_TOO_LOW
    assert noise["ratio"] == pytest.approx(0.2, rel=0.02)  # the applied std, measured to ~1%


def _squares(std, *, m=400, k=50, seed=0):
    """Synthetic per-canary sums of k squared N(0, std²) draws (a test oracle, not DP noise)."""
    draws = np.random.default_rng(seed).normal(0.0, std, size=(m, k))
    return (draws**2).sum(axis=1), np.arange(m) % 2 == 0


def test_noise_scale_check_known_answers():
    squares, included = _squares(2.0)
    ok = stats.noise_scale_check(squares, included, samples_per_canary=50, claimed_std=2.0)
    assert ok.verdict == stats.NOISE_OK and ok.samples == 200 * 50
    assert ok.ratio_low < 1 < ok.ratio_high and ok.ratio == pytest.approx(1.0, abs=0.03)
    low = stats.noise_scale_check(squares, included, samples_per_canary=50, claimed_std=2.2)
    assert low.verdict == stats.NOISE_TOO_LOW  # 9% less noise than claimed is caught
    high = stats.noise_scale_check(squares, included, samples_per_canary=50, claimed_std=1.8)
    assert high.verdict == stats.NOISE_TOO_HIGH
    tiny, tiny_in = _squares(2.0, m=4, k=2)
    few = stats.noise_scale_check(tiny, tiny_in, samples_per_canary=2, claimed_std=2.0)
    assert few.verdict == stats.NOISE_UNDERPOWERED  # cannot see a 10% shortfall: never "ok"
    none = stats.noise_scale_check(squares[:1], included[:1], samples_per_canary=50, claimed_std=2)
    assert none.verdict == stats.NOISE_UNDERPOWERED and math.isnan(none.ratio)
