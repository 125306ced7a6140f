"""Models: explicit-generator initialization, registry errors, no BatchNorm."""

import numpy as np
import pytest
import torch
from torch import nn

from secagg.errors import ParameterError
from secagg_training.models import available_models, build_model
from secagg_training.updates import flatten


def test_initialization_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("mlp", 64, 10, seed=7)
    b = build_model("mlp", 64, 10, seed=7)
    c = build_model("mlp", 64, 10, seed=8)
    assert torch.equal(state, torch.get_rng_state()), (
        "model init must not draw from torch's global RNG"
    )
    np.testing.assert_array_equal(flatten(a), flatten(b))
    assert not np.array_equal(flatten(a), flatten(c))


def test_registry_builds_each_model_and_rejects_unknown_names():
    for name in available_models():
        model = build_model(name, 64, 10, seed=0)
        out = model(torch.zeros(5, 64))
        assert out.shape == (5, 10)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with pytest.raises(ParameterError, match="model must be one of"):
        build_model("resnet", 64, 10, seed=0)
