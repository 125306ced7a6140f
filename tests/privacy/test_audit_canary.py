"""The canary experiment: CSPRNG draws, the exact clipped-gradient probe, and the audit verdicts.

The two end-to-end tests train through the production DP-SGD path
(secagg_privacy.dpsgd.train_dp_sgd with SecureGaussian noise); the only difference
between them is the σ the experiment trains with.
"""

import numpy as np
import pytest
import torch
from privacy_testkit import ChaChaSource
from torch import nn
from torch.func import functional_call, grad, vmap

from secagg_privacy.audit import stats
from secagg_privacy.audit.canary import (
    CANARY_SCALE,
    CanaryConfig,
    _check_instrument,
    _probe,
    inclusion_bits,
    run_canary_experiment,
    uniform_labels,
)
from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError
from secagg_privacy.noise import SecureGaussian

# σ=4, q=0.3, 50 steps: theoretical ε ≈ 2.26 at δ=1e-5, cheap enough for CI (~1–3 s per run).
AUDIT = dict(noise_multiplier=4.0, sample_rate=0.3, steps=50, max_grad_norm=1.0, lr=0.5, delta=1e-5)


def digits(n=300):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:n] / 16.0).astype(np.float32), d.target[:n].astype(np.int64)


def run(label, **overrides):
    x, y = digits()
    config = CanaryConfig(**(AUDIT | overrides))
    result = run_canary_experiment(
        x,
        y,
        config=config,
        num_classes=10,
        rng=ChaChaSource(f"{label}/experiment"),
        noise=SecureGaussian(ChaChaSource(f"{label}/noise")),
    )
    bound = stats.one_run_audit(result.scores, result.included, delta=config.delta)
    fit = stats.gaussian_fit_estimate(result.scores, result.included, delta=config.delta)
    return result, bound, fit


# ----------------------------------------------------------------- end to end


@pytest.mark.slow
def test_honest_dp_sgd_is_consistent_with_a_positive_bound():
    result, bound, fit = run("honest")
    assert result.theoretical_epsilon == pytest.approx(2.26, abs=0.05)
    assert 0.0 < bound.epsilon_lower <= result.theoretical_epsilon
    assert stats.verdict(bound.epsilon_lower, result.theoretical_epsilon) == "consistent"
    # the estimate lands near the claim (it is not a bound; generous band)
    assert 0.5 * result.theoretical_epsilon < fit.epsilon_estimate < 2 * result.theoretical_epsilon


@pytest.mark.slow
def test_noise_five_times_smaller_than_recorded_is_flagged_violation():
    # Threat covered: an implementation bug that adds 5× less noise than the
    # ledger records. The accountant still claims ε ≈ 2.26; the audit must refute it.
    result, bound, fit = run("bug", actual_noise_multiplier=AUDIT["noise_multiplier"] / 5)
    assert stats.verdict(bound.epsilon_lower, result.theoretical_epsilon) == "VIOLATION"
    assert bound.epsilon_lower > result.theoretical_epsilon + 0.5
    assert fit.epsilon_estimate > 3 * result.theoretical_epsilon


# ----------------------------------------------------------------- the probe


def per_sample_clipped(model, x, y, clip):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.reshape(x.shape[0], -1) for g in grads.values()], dim=1)
    factor = torch.clamp(clip / (flat.norm(dim=1) + 1e-6), max=1.0)
    return grads, factor


@pytest.mark.parametrize("hidden", [None, 12])
def test_probe_matches_per_sample_gradients_of_the_canary_column(hidden):
    # Oracle: torch.func per-sample gradients + Opacus's clipping rule.
    d, m, k, clip = 5, 7, 3, 0.5
    gen = torch.Generator().manual_seed(3)
    layers = [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(d + m, hidden), nn.ReLU(), nn.Linear(hidden, k)]
    else:
        layers += [nn.Linear(d + m, k)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.zeros(m, d + m)
    x[torch.arange(m), d + torch.arange(m)] = CANARY_SCALE
    y = torch.arange(m) % k
    probe = _probe(model, _check_instrument(model, d + m), x, y, clip)

    grads, factor = per_sample_clipped(model, x, y, clip)
    first = grads["1.weight"]  # (m, h, d + m)
    column = first[torch.arange(m), :, d + torch.arange(m)].double()  # canary i's own column
    clipped = column * factor.double().unsqueeze(1)
    torch.testing.assert_close(probe.signal, clipped.norm(dim=1), rtol=1e-4, atol=1e-7)
    cosine = (probe.direction * column).sum(1) / column.norm(dim=1)
    torch.testing.assert_close(cosine, torch.ones(m, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_instrument_must_be_linear_only():
    with pytest.raises(PrivacyParameterError, match="nn.Linear"):
        _check_instrument(nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2)), 4)
    with pytest.raises(PrivacyParameterError, match="first layer"):
        _check_instrument(nn.Sequential(nn.Linear(3, 2)), 4)


# ----------------------------------------------------------------- draws and config


def test_inclusion_bits_and_labels_come_from_the_byte_source():
    src = ChaChaSource("draws")
    bits = inclusion_bits(src, 10_000)
    labels = uniform_labels(src, 10_000, 10)
    assert 4800 < bits.sum() < 5200
    assert labels.min() == 0 and labels.max() == 9
    assert np.all(np.abs(np.bincount(labels, minlength=10) - 1000) < 150)
    again = inclusion_bits(ChaChaSource("draws"), 10_000)
    np.testing.assert_array_equal(bits, again)  # same source, same bits: nothing else consulted


def test_experiment_refuses_a_seed_for_its_randomness():
    x, y = digits(20)
    with pytest.raises(InsecureConfigurationError):
        run_canary_experiment(x, y, config=CanaryConfig(**AUDIT), num_classes=10, rng=1234)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(noise_multiplier=0.0),
        dict(sample_rate=1.5),
        dict(steps=0),
        dict(canaries=1),
        dict(delta=0.0),
        dict(actual_noise_multiplier=float("nan")),
        dict(lr=-1.0),
    ],
)
def test_bad_config_raises_a_named_error(overrides):
    with pytest.raises(PrivacyParameterError):
        CanaryConfig(**(AUDIT | overrides))


def test_bad_base_data_raises():
    x, y = digits(20)
    with pytest.raises(PrivacyParameterError):
        run_canary_experiment(
            x, y[:10], config=CanaryConfig(**AUDIT), num_classes=10, rng=ChaChaSource("bad")
        )
    with pytest.raises(PrivacyParameterError):
        run_canary_experiment(
            x, y + 10, config=CanaryConfig(**AUDIT), num_classes=10, rng=ChaChaSource("bad")
        )


def test_result_repr_hides_the_inclusion_bits():
    x, y = digits(30)
    config = CanaryConfig(**(AUDIT | dict(steps=2, canaries=20)))
    result = run_canary_experiment(
        x,
        y,
        config=config,
        num_classes=10,
        rng=ChaChaSource("repr"),
        noise=SecureGaussian(ChaChaSource("repr-noise")),
    )
    assert "True" not in repr(result) and "included" not in repr(result)
    assert result.scores.shape == (20,) and result.included.dtype == bool


def test_instrument_must_be_deterministic():
    with pytest.raises(PrivacyParameterError, match="dropout"):
        _check_instrument(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2)), 4)
