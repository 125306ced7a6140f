import numpy as np
import pytest
import torch
from privacy_testkit import ChaChaSource

from secagg_privacy.errors import InsecureConfigurationError, PrivacyParameterError
from secagg_privacy.noise import OsByteSource, SecureGaussian


def test_statistics_match_requested_std():
    x = SecureGaussian(ChaChaSource("stats")).sample((200_000,), std=2.5, dtype=torch.float64)
    assert abs(float(x.mean())) < 0.03  # 6σ of the sample mean: 2.5/√2e5 ≈ 0.0056
    assert abs(float(x.std()) - 2.5) < 0.03
    # tails look Gaussian: P(|X| > 2σ) ≈ 0.0455
    assert abs(float((x.abs() > 5.0).double().mean()) - 0.0455) < 0.003


def test_default_source_is_the_os_csprng_and_gives_sane_noise():
    g = SecureGaussian()
    assert "OsByteSource" in repr(g)
    x = g.sample((50_000,), std=1.0)
    assert x.dtype == torch.float32 and x.shape == (50_000,)
    assert abs(float(x.std()) - 1.0) < 0.03


def test_sum_of_four_gaussians_defence_consumes_four_draws_per_value():
    # Threat: floating-point attacks on a single textbook Gaussian draw
    # (Mironov 2012). Each output must combine 4 independent draws: 4 normals
    # = 2 Box–Muller pairs = 4 uniforms × 8 bytes.
    src = ChaChaSource("count")
    SecureGaussian(src).sample((1000,), std=1.0)
    assert src.bytes_drawn == 1000 * 4 * 8


def test_deterministic_source_reproduces_and_labels_differ():
    a = SecureGaussian(ChaChaSource("same")).sample((16,), std=1.0)
    b = SecureGaussian(ChaChaSource("same")).sample((16,), std=1.0)
    c = SecureGaussian(ChaChaSource("other")).sample((16,), std=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "bad",
    [0, 1234, b"\x00" * 32, "seed", 1.5, torch.Generator(), np.random.default_rng(0), object()],
)
def test_refuses_seeds_and_library_generators(bad):
    # Threat: a seeded or non-cryptographic generator makes "noise" recomputable.
    with pytest.raises(InsecureConfigurationError):
        SecureGaussian(bad)


def test_refuses_seed_keyword():
    with pytest.raises(InsecureConfigurationError, match="seed"):
        SecureGaussian(seed=42)


def test_touches_no_torch_or_numpy_generator(monkeypatch):
    # Threat: noise silently drawn from torch's/numpy's global (seedable) RNG.
    torch_state = torch.get_rng_state().clone()
    np_state = np.random.get_state()[1].copy()

    def boom(*_a, **_k):
        raise AssertionError("a library RNG was used for DP noise")

    for name in ("normal", "randn", "rand", "randint", "bernoulli", "multinomial", "randperm"):
        monkeypatch.setattr(torch, name, boom)
    monkeypatch.setattr(torch.Tensor, "normal_", boom)
    for name in ("normal", "standard_normal", "random", "rand", "randn", "default_rng"):
        monkeypatch.setattr(np.random, name, boom)
    SecureGaussian().sample((64, 3), std=1.0)
    SecureGaussian(ChaChaSource("patched")).sample_array((10,), std=0.5)
    monkeypatch.undo()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_zero_std_and_empty_shape():
    g = SecureGaussian(ChaChaSource("zero"))
    assert torch.count_nonzero(g.sample((5,), std=0.0)) == 0
    assert g.sample((0, 3), std=1.0).shape == (0, 3)


@pytest.mark.parametrize("std", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_std_is_a_parameter_error(std):
    with pytest.raises(PrivacyParameterError, match="std must be"):
        SecureGaussian(ChaChaSource("std")).sample((3,), std=std)


def test_bad_shape_and_dtype():
    g = SecureGaussian(ChaChaSource("shape"))
    with pytest.raises(PrivacyParameterError, match="shape"):
        g.sample((-1,), std=1.0)
    with pytest.raises(PrivacyParameterError, match="dtype"):
        g.sample((2,), std=1.0, dtype=torch.int64)


def test_os_source_validates_count():
    assert len(OsByteSource().random_bytes(7)) == 7
    with pytest.raises(PrivacyParameterError):
        OsByteSource().random_bytes(-1)
