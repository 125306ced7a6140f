import math

import numpy as np
import opacus.optimizers.optimizer as opacus_optimizer
import pytest
import torch
from privacy_testkit import ChaChaSource, blobs

from secagg_privacy.budget import ClientBudgetGuard
from secagg_privacy.dpsgd import DPSGDParams, poisson_mask, poisson_sample_rate, train_dp_sgd
from secagg_privacy.errors import (
    BudgetExceededError,
    InsecureConfigurationError,
    PrivacyParameterError,
)
from secagg_privacy.noise import SecureGaussian


def mlp(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def params(**kw):
    base = dict(
        noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=0.1, steps=60, expected_batch_size=20
    )
    base.update(kw)
    return DPSGDParams(**base)


def run(model, x, y, p, label="run", **kw):
    return train_dp_sgd(
        model,
        x,
        y,
        params=p,
        lr=0.5,
        noise=SecureGaussian(ChaChaSource(label + "/noise")),
        sampler=ChaChaSource(label + "/sampler"),
        **kw,
    )


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_tiny_model_trains_under_dp():
    x, y = blobs(200)
    model = mlp()
    before = accuracy(model, x, y)
    stats = run(model, x, y, params())
    assert stats.steps == 60 and stats.sample_rate == 0.1 and math.isfinite(stats.mean_loss)
    assert accuracy(model, x, y) > max(0.9, before)


def test_empty_batches_are_stepped_and_counted():
    # Empty Poisson batches must still run the mechanism (noise-only update):
    # skipping them would make the number of releases data-dependent.
    x, y = blobs(10)
    q, steps = 0.02, 40
    expected_empty = sum(
        not poisson_mask(10, q, sampler=s).any()
        for s in [ChaChaSource("empties/sampler")]
        for _ in range(steps)
    )
    model = mlp()
    trajectory = [flat(model)]

    stats = run(model, x, y, params(sample_rate=q, steps=steps), label="empties")
    trajectory.append(flat(model))
    assert stats.empty_batches == expected_empty and expected_empty > 20
    assert math.isfinite(stats.mean_loss)
    assert not torch.equal(trajectory[0], trajectory[1])  # noise-only steps still move the model


def test_single_empty_step_is_pure_noise_of_the_right_scale():
    x, y = blobs(4)
    model = mlp()
    before = flat(model)
    # q tiny: with this sampler's first 4 words the batch is empty.
    assert not poisson_mask(4, 1e-9, sampler=ChaChaSource("pure/sampler")).any()
    stats = run(model, x, y, params(sample_rate=1e-9, steps=1, noise_multiplier=2.0), label="pure")
    assert stats.empty_batches == 1
    delta = (flat(model) - before) / -0.5  # lr = 0.5: Δθ = -lr · noise / B
    # std of the gradient noise is σ·C / B = 2.0 · 1.0 / 20 = 0.1
    assert 0.07 < float(delta.std()) < 0.13


def test_opacus_generator_and_library_rngs_are_never_used(monkeypatch):
    # Threat: DP noise coming from Opacus's torch generator (seedable, not a CSPRNG).
    model = mlp()
    x, y = blobs(50)

    def boom(*_a, **_k):
        raise AssertionError("library RNG used for DP noise or sampling")

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", boom)
    for name in ("normal", "randn", "rand", "randint", "bernoulli", "randperm"):
        monkeypatch.setattr(torch, name, boom)
    for name in ("normal", "standard_normal", "random", "rand", "default_rng", "binomial"):
        monkeypatch.setattr(np.random, name, boom)
    torch_state = torch.get_rng_state().clone()
    stats = run(model, x, y, params(steps=5), label="nognr")
    assert stats.steps == 5
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_same_sources_reproduce_exactly_and_noise_source_matters():
    x, y = blobs(60)
    a, b, c = mlp(), mlp(), mlp()
    run(a, x, y, params(steps=5), label="rep")
    run(b, x, y, params(steps=5), label="rep")
    train_dp_sgd(
        c,
        x,
        y,
        params=params(steps=5),
        lr=0.5,
        noise=SecureGaussian(ChaChaSource("other/noise")),
        sampler=ChaChaSource("rep/sampler"),
    )
    assert torch.equal(flat(a), flat(b)) and not torch.equal(flat(a), flat(c))


def test_poisson_mask_rate_and_threshold():
    mask = poisson_mask(200_000, 0.3, sampler=ChaChaSource("mask"))
    assert abs(mask.mean() - 0.3) < 0.006  # ~6σ
    assert poisson_mask(5, 1.0, sampler=ChaChaSource("all")).all()


def test_poisson_sample_rate_is_checked():
    assert poisson_sample_rate(expected_batch_size=30, dataset_size=600) == 0.05
    with pytest.raises(PrivacyParameterError, match="expected_batch_size"):
        poisson_sample_rate(expected_batch_size=700, dataset_size=600)
    with pytest.raises(PrivacyParameterError, match="dataset_size"):
        poisson_sample_rate(expected_batch_size=3, dataset_size=0)


def test_normalizer_is_public_not_dataset_size():
    # Threat: "mean" reduction divides by q·N and leaks the private record count.
    # Same public B, same noise, empty batches: the update must not depend on N.
    x_small, y_small = blobs(5)
    x_big, y_big = blobs(50)
    small, big = mlp(), mlp()
    p = params(sample_rate=1e-12, steps=1, noise_multiplier=1.0)
    run(small, x_small, y_small, p, label="norm")
    train_dp_sgd(
        big,
        x_big,
        y_big,
        params=p,
        lr=0.5,
        noise=SecureGaussian(ChaChaSource("norm/noise")),
        sampler=ChaChaSource("norm/s2"),
    )
    assert torch.allclose(flat(small), flat(big))


def test_missing_public_normalizer_fails_closed():
    x, y = blobs(10)
    with pytest.raises(PrivacyParameterError, match="expected_batch_size"):
        run(mlp(), x, y, params(expected_batch_size=None))


def test_batchnorm_is_refused():
    # BatchNorm mixes records within a batch: per-sample sensitivity is void.
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )
    x, y = blobs(10)
    with pytest.raises(InsecureConfigurationError, match="BatchNorm1d"):
        run(model, x, y, params())


def test_non_secure_noise_or_seeded_sampler_is_refused():
    x, y = blobs(10)
    with pytest.raises(InsecureConfigurationError):
        train_dp_sgd(
            mlp(), x, y, params=params(), lr=0.1, noise=torch.Generator(), sampler=ChaChaSource("s")
        )
    with pytest.raises(InsecureConfigurationError):
        train_dp_sgd(mlp(), x, y, params=params(), lr=0.1, noise=SecureGaussian(), sampler=7)


@pytest.mark.parametrize(
    "kw",
    [
        {"noise_multiplier": 0.0},
        {"max_grad_norm": -1.0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.2},
        {"steps": -3},
        {"steps": 2.5},
        {"expected_batch_size": 0},
    ],
)
def test_bad_params_are_named_errors(kw):
    with pytest.raises(PrivacyParameterError, match="must be"):
        params(**kw)


def test_bad_data_is_a_named_error():
    x, y = blobs(10)
    with pytest.raises(PrivacyParameterError, match="labels"):
        run(mlp(), x, y[:5], params())
    with pytest.raises(PrivacyParameterError, match="features"):
        run(mlp(), x.long(), y, params())


def test_client_guard_refuses_before_training_and_records_after():
    x, y = blobs(40)
    p = params(steps=10)
    guard = ClientBudgetGuard(client="c0", budget_epsilon=1e6, delta=1e-5)
    run(mlp(), x, y, p, guard=guard)
    assert len(guard.state.events) == 1 and guard.epsilon_spent > 0
    tight = ClientBudgetGuard(client="c1", budget_epsilon=0.01, delta=1e-5)
    model = mlp()
    before = flat(model)
    with pytest.raises(BudgetExceededError, match="c1"):
        run(model, x, y, p, guard=tight)
    assert torch.equal(flat(model), before) and tight.state.events == ()


def test_model_is_left_plain_after_training():
    x, y = blobs(20)
    model = mlp()
    run(model, x, y, params(steps=3))
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad") and p.grad is None
    assert not model[0]._forward_hooks and not model[0]._backward_hooks


def test_per_sample_clipping_bounds_one_records_influence():
    # Threat: an outlier record whose unclipped gradient dominates the update.
    x, y = blobs(1)
    x = x * 1e4
    model = mlp()
    before = flat(model)
    p = params(
        noise_multiplier=1e-9, sample_rate=1.0, steps=1, max_grad_norm=0.5, expected_batch_size=10
    )
    run(model, x, y, p, label="clip")
    moved = float((flat(model) - before).norm())
    assert 0 < moved <= 0.5 * 0.5 / 10 * (1 + 1e-4)  # lr · C / B
