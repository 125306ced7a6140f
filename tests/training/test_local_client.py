"""The client's local step: learns, clips, is reproducible, never touches the global model."""

import numpy as np
import pytest
import torch

from secagg.errors import ParameterError
from secagg_training.client import LocalSettings, LocalTask, run_client, train_local
from secagg_training.data import load_digits_data
from secagg_training.models import build_model
from secagg_training.updates import flatten


@pytest.fixture(scope="module")
def shard():
    data = load_digits_data(seed=0)
    return torch.from_numpy(data.x_train[:150]), torch.from_numpy(data.y_train[:150])


def _update(shard, clip=5.0, seed=1, optimizer="sgd"):
    x, y = shard
    model = build_model("mlp", 64, 10, seed=0)
    before = flatten(model)
    update = run_client(
        "client/0",
        model,
        x,
        y,
        LocalSettings(optimizer=optimizer, lr=0.2 if optimizer == "sgd" else 0.01),
        round_index=1,
        weight=1.5,
        update_clip=clip,
        generator=torch.Generator().manual_seed(seed),
    )
    np.testing.assert_array_equal(flatten(model), before)  # the global model is untouched
    return update


def test_local_training_lowers_the_loss(shard):
    x, y = shard
    model = build_model("mlp", 64, 10, seed=0)
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        before = float(loss_fn(model(x), y))
    stats = train_local(
        LocalTask(
            # digits in [0, 1] (public 1/16 scaling) need a larger step than standardized ones
            "client/0",
            1,
            model,
            x,
            y,
            LocalSettings(epochs=5, lr=0.5),
            torch.Generator().manual_seed(0),
        )
    )
    assert stats.steps == 5 * 5
    with torch.no_grad():
        assert float(loss_fn(model(x), y)) < 0.5 * before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_update_is_reproducible_and_weighted(shard, optimizer):
    a, b = _update(shard, optimizer=optimizer), _update(shard, optimizer=optimizer)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.weight == 1.5 and a.metrics.samples == 150 and a.metrics.seconds > 0
    sub = a.submission()
    np.testing.assert_allclose(sub[:-1], 1.5 * a.delta)
    assert sub[-1] == 1.5
    assert "array" not in repr(a) and len(repr(a)) < 200  # a plaintext update never in a repr


def test_update_is_clipped(shard):
    free = _update(shard, clip=1e6)
    clipped = _update(shard, clip=0.1)
    assert np.linalg.norm(free.delta) > 0.1
    assert np.linalg.norm(clipped.delta) == pytest.approx(0.1)
    np.testing.assert_allclose(clipped.delta / 0.1, free.delta / np.linalg.norm(free.delta))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "local_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam"),
    ],
)
def test_bad_local_settings(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        LocalSettings(**kwargs)
