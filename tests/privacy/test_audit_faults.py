"""Faults injected into the production client path must fail ``secagg audit`` (exit 2).

The audit drives its canary run through ``PrivacyPlan.train`` (the trainer the
federation runs) with the run's model, and checks the noise on every parameter
tensor, the sampling rate and per-example clipping directly. Each fault below
passed the previous audit (tests/privacy/test_audit_power.py's run layout).
"""

import json

import pytest
import torch
from test_audit_power import make_run
from typer.testing import CliRunner

import secagg_privacy.dpsgd as dpsgd
import secagg_training.privacy_plan as privacy_plan
from secagg_privacy.noise import SecureGaussian
from secagg_training.cli import app


def noise_fifth_in_plan(monkeypatch):
    """PrivacyPlan.train hands the optimizer a noise source drawing σC/5."""

    class Weak(SecureGaussian):
        def sample(self, shape, *, std, dtype=torch.float32):
            return super().sample(shape, std=std / 5, dtype=dtype)

    monkeypatch.setattr(privacy_plan, "SecureGaussian", Weak)


def noise_first_tensor_only(monkeypatch):
    def add_noise(self):
        std = self.noise_multiplier * self.max_grad_norm
        for i, p in enumerate(self.params):
            summed = p.summed_grad
            draw = self._secure_noise.sample(
                tuple(summed.shape), std=std if i == 0 else 0.0, dtype=summed.dtype
            )
            p.grad = (summed + draw).view_as(p)
            p.summed_grad = None

    monkeypatch.setattr(dpsgd._SecureNoiseDPOptimizer, "add_noise", add_noise)


def sample_rate_doubled(monkeypatch):
    honest = dpsgd.poisson_mask
    monkeypatch.setattr(
        dpsgd,
        "poisson_mask",
        lambda size, q, *, sampler: honest(size, min(1.0, 2 * q), sampler=sampler),
    )


def clipping_off(monkeypatch):
    def clip_and_accumulate(self):
        for p in self.params:
            g = p.grad_sample.sum(dim=0)
            p.summed_grad = g if p.summed_grad is None else p.summed_grad + g

    monkeypatch.setattr(dpsgd._SecureNoiseDPOptimizer, "clip_and_accumulate", clip_and_accumulate)


FAULTS = {
    "noise/5 in PrivacyPlan.train": (noise_fifth_in_plan, "noise-scale check"),
    "noise on the first tensor only": (noise_first_tensor_only, "noise on parameter"),
    "sampling rate ×2": (sample_rate_doubled, "sampling rate mismatch"),
    "clipping disabled": (clipping_off, "per-example clipping broken"),
}


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [1.0, 8.0])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_in_the_production_path_fails_the_audit(tmp_path, monkeypatch, epsilon, fault):
    run_dir = make_run(tmp_path / "run", epsilon)
    inject, named = FAULTS[fault]
    inject(monkeypatch)
    out = CliRunner().invoke(app, ["audit", str(run_dir), "--out", str(tmp_path / "a")])
    assert out.exit_code == 2, out.output
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["status"] == "FAILED"
    assert any(named in f for f in doc["findings"]), doc["findings"]
    assert doc["canary"]["trainer"] == "secagg_training.privacy_plan.PrivacyPlan.train"


@pytest.mark.slow
def test_the_honest_production_path_passes_with_the_runs_model(tmp_path):
    run_dir = make_run(tmp_path / "run", 8.0, model="mlp-small")
    out = CliRunner().invoke(app, ["audit", str(run_dir), "--out", str(tmp_path / "a")])
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert set(doc["canary"]["tensor_noise"]) == {
        "net.1.weight",
        "net.1.bias",
        "net.3.weight",
        "net.3.bias",
    }
    assert doc["canary"]["row_trials"] > 0 and doc["canary"]["clip_samples"] > 0
