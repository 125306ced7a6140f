"""The round loop: a short run learns; dropouts are recorded and the sum holds survivors only."""

import dataclasses

import numpy as np
import pytest
from torch import nn

from secagg.errors import ParameterError, UnknownSchemeError
from secagg.rand import DeterministicRng
from secagg.schemes import available_schemes
from secagg_training.data import from_arrays
from secagg_training.federation import Federation, FederationConfig, run_federation
from secagg_training.updates import flatten


def _rng():
    return DeterministicRng.from_int(12345)


def test_short_plain_run_learns():
    seen = []
    result = run_federation(
        FederationConfig(scheme="plain", dp=False, clients=5, rounds=3, seed=2),
        on_round=seen.append,
        rng=_rng(),
    )
    assert [r.round for r in seen] == [1, 2, 3] and seen == result.rounds
    assert result.initial_accuracy < 0.3  # chance is 0.1
    assert result.final_accuracy >= 0.85
    assert result.rounds[-1].loss < result.initial_loss
    r = result.rounds[0]
    assert r.participants == [f"client/{i}" for i in range(5)] and r.dropped == []
    assert r.bytes_up_per_client > 4 * (64 * 128 + 128 + 128 * 10 + 10)  # a float64 vector
    assert set(r.seconds) == {"train", "protect", "aggregate", "decrypt", "total"}
    assert result.privacy["enabled"] is False and result.privacy["epsilon_max"] is None


def test_dropout_records_who_dropped_and_sums_survivors_only():
    """Oracle: the released sum equals a recomputed plaintext sum over exactly the survivors."""
    config = FederationConfig(
        scheme="plain",
        dp=False,
        clients=8,
        rounds=1,
        dropout=0.4,
        seed=5,
        partition="dirichlet",
        alpha=1.0,
    )
    fed = Federation(config, rng=_rng())
    before = flatten(fed.model)
    outcome = fed.run_round(1)
    record, aggregate = outcome.record, outcome.aggregate
    assert record.dropped, "seed 5 at p=0.4 drops someone in round 1"
    assert set(record.dropped) == set(record.dropped_at)
    assert all(phase == 0 for phase in record.dropped_at.values())  # plain has one phase
    survivors = [p for p in outcome.cohort if p not in record.dropped]
    assert record.participants == survivors
    assert aggregate is not None and aggregate.contributors == tuple(survivors)

    # recompute every client's update independently with a fresh federation (same seed)
    twin = Federation(config, rng=_rng())
    updates = twin.train_clients(1, list(range(config.clients)))
    expected_sum = sum(updates[p].submission() for p in survivors)
    np.testing.assert_allclose(aggregate.vector, expected_sum, rtol=0, atol=1e-12)
    everyone = sum(u.submission() for u in updates.values())
    assert not np.allclose(aggregate.vector, everyone)

    # weighted FedAvg over survivors: Σ nᵢΔᵢ / Σ nᵢ
    sizes = {f"client/{i}": int(n) for i, n in enumerate(fed.sizes)}
    assert len(set(sizes.values())) > 1, "dirichlet sizes differ, so weighting matters"
    mean = sum(sizes[p] * updates[p].delta for p in survivors) / sum(sizes[p] for p in survivors)
    np.testing.assert_allclose(flatten(fed.model), before + mean, atol=1e-6)


def test_aborted_round_keeps_the_previous_global_model():
    config = FederationConfig(scheme="plain", dp=False, clients=2, rounds=6, dropout=0.95, seed=0)
    result = run_federation(config, rng=_rng())
    aborted = [r for r in result.rounds if r.aborted]
    assert aborted, "p=0.95 with two clients aborts some round"
    for r in aborted:
        assert r.participants == [] and sorted(r.dropped) == ["client/0", "client/1"]
        assert "at least" in r.error
        if r.round == 1:
            assert (r.accuracy, r.loss) == (result.initial_accuracy, result.initial_loss)
        else:
            previous = result.rounds[r.round - 2]
            assert (r.accuracy, r.loss) == (previous.accuracy, previous.loss)


def test_bring_your_own_data_and_model():
    gen = np.random.Generator(np.random.PCG64(0))
    centers = gen.normal(scale=4.0, size=(3, 4))
    y = np.repeat(np.arange(3), 100)
    x = centers[y] + gen.normal(size=(300, 4))
    data = from_arrays(x, y, seed=0)
    model = nn.Sequential(nn.Linear(4, 3))
    original = flatten(model)
    result = run_federation(
        FederationConfig(scheme="plain", dp=False, clients=4, rounds=3, seed=0),
        data=data,
        model=model,
        rng=_rng(),
    )
    np.testing.assert_array_equal(flatten(model), original)  # the caller's module is not mutated
    assert result.final_accuracy > 0.9
    assert result.dataset == "custom" and sum(result.client_sizes) == data.x_train.shape[0]


def test_runs_are_reproducible_from_the_seed():
    config = FederationConfig(scheme="plain", dp=False, clients=3, rounds=2, seed=4, dropout=0.3)
    a = run_federation(config, rng=DeterministicRng.from_int(1))
    b = run_federation(config, rng=DeterministicRng.from_int(2))  # crypto randomness differs
    assert [r.dropped_at for r in a.rounds] == [r.dropped_at for r in b.rounds]
    np.testing.assert_array_equal(flatten(a.model), flatten(b.model))


def test_client_sampling_selects_a_subset():
    fed = Federation(
        FederationConfig(scheme="plain", dp=False, clients=6, clients_per_round=3, seed=1),
        rng=_rng(),
    )
    picks = [fed.select(r) for r in range(1, 6)]
    assert all(len(p) == 3 and len(set(p)) == 3 for p in picks)
    assert len({tuple(p) for p in picks}) > 1


def test_result_json_document_has_the_design_keys():
    result = run_federation(
        FederationConfig(scheme="plain", dp=False, clients=2, rounds=1, seed=0), rng=_rng()
    )
    doc = result.to_dict()
    assert {"scheme", "config", "rounds", "final_accuracy", "privacy"} <= set(doc)
    assert {"accountant", "delta", "epsilon_per_client", "epsilon_max", "budget"} <= set(
        doc["privacy"]
    )
    assert doc["insecure"] is True and doc["config"]["scheme"] == "plain"


BAD_CONFIGS = [
    ({"clients": 0}, "clients must be a positive integer"),
    ({"clients": "ten"}, "clients must be a positive integer"),
    ({"rounds": 1.5}, "rounds must be a positive integer"),
    ({"dropout": 1.0}, "dropout must be a probability"),
    ({"dropout": -0.1}, "dropout must be a probability"),
    ({"lr": 0}, "lr must be"),
    ({"alpha": float("inf")}, "alpha must be"),
    ({"graph": "ring"}, "graph must be one of full, sparse"),
    ({"partition": "shards"}, "partition must be one of iid, dirichlet"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"model": "resnet"}, "model must be one of"),
    ({"seed": -1}, "seed must be"),
    ({"threshold": 0}, "threshold must be"),
    ({"epsilon": -1.0}, "epsilon must be"),
    ({"delta": 1.0}, "delta must be in"),
    ({"clients_per_round": 11}, "clients_per_round must be"),
    ({"update_clip": 0.0}, "update_clip must be"),
]


@pytest.mark.parametrize("change, match", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_configs_fail_clearly(change, match):
    with pytest.raises(ParameterError, match=match):
        FederationConfig(**change)


def test_unknown_scheme_names_the_available_ones():
    with pytest.raises(UnknownSchemeError) as info:
        FederationConfig(scheme="paillier")
    for name in available_schemes():
        assert name in str(info.value)


def test_a_mismatched_model_is_refused():
    with pytest.raises(ParameterError, match="torch.nn.Module"):
        Federation(FederationConfig(), model="mlp")  # type: ignore[arg-type]
    empty = nn.Sequential(nn.ReLU())
    with pytest.raises(ParameterError, match="at least one"):
        Federation(FederationConfig(), model=empty)
    with pytest.raises(ParameterError, match="must map inputs of shape"):
        Federation(FederationConfig(), model=nn.Linear(63, 10))  # digits have 64 features
    with pytest.raises(ParameterError, match="10 logits"):
        Federation(FederationConfig(), model=nn.Linear(64, 3))


def test_config_is_frozen():
    config = FederationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.clients = 3  # type: ignore[misc]


@pytest.mark.parametrize("scheme", available_schemes())
def test_every_registered_scheme_releases_the_participants_sum(scheme):
    """Oracle across schemes: the released sum = plaintext sum of the participants' submissions
    (within the scheme's declared error bound), under dropouts at random phases."""
    config = FederationConfig(scheme=scheme, dp=False, clients=6, rounds=1, dropout=0.2, seed=3)
    fed = Federation(config, rng=_rng())
    fed.setup()
    outcome = fed.run_round(1)
    record, aggregate = outcome.record, outcome.aggregate
    if aggregate is None:
        assert record.aborted and record.error
        return
    assert set(record.participants) <= set(outcome.cohort)
    assert not set(record.participants) & {p for p, k in record.dropped_at.items() if k == 0}
    updates = Federation(config, rng=_rng()).train_clients(1, list(range(config.clients)))
    expected = sum(updates[p].submission() for p in record.participants)
    np.testing.assert_allclose(
        aggregate.vector, expected, rtol=0, atol=aggregate.error_bound + 1e-9
    )


@pytest.mark.parametrize("fault", ["share", "vector"])
def test_a_faulty_masking_client_aborts_its_round_not_the_run(fault):
    """A client whose unmask share is outside the Shamir field (a uint32 the wire allows),
    or whose masked vector has the wrong length: the server refuses it on arrival, the
    round aborts with the model kept and ε charged, and the next round runs (issue 10)."""
    from secagg.masking import MaskingClient, PairwiseMasking

    class FaultyClient(MaskingClient):
        def _unmask(self, request):
            [response] = super()._unmask(request)
            shares = response.seed_shares.copy()
            shares[:, 0] = 2**32 - 1
            return [dataclasses.replace(response, seed_shares=shares)]

        def _masked_input(self, bundle):
            [masked] = super()._masked_input(bundle)
            if fault == "vector":
                return [dataclasses.replace(masked, vector=masked.vector[:-1])]
            return [masked]

    class OneFaultyClient(PairwiseMasking):
        def client_role(self, party, params, keys, *, rng, roster=None):
            role = super().client_role(party, params, keys, rng=rng, roster=roster)
            if party == "client/0" and params.round == 1:
                role.__class__ = FaultyClient
            return role

    config = FederationConfig(
        scheme="masking", clients=4, rounds=2, seed=1, dp=True, delta=1e-5,
        batch_size=64, local_epochs=1, lr=1.0, model="mlp-small",
    )  # fmt: skip
    fed = Federation(config, rng=_rng())
    fed.scheme = OneFaultyClient(max_clients=4, value_bound=fed.scheme.encoding.value_bound)
    before = flatten(fed.model)
    first = fed.run_round(1).record
    assert first.aborted and ("field elements" in first.error or "masked vector" in first.error)
    np.testing.assert_array_equal(flatten(fed.model), before)
    charged = dict(first.epsilon)
    assert charged and all(eps > 0 for eps in charged.values())
    second = fed.run_round(2).record
    assert not second.aborted and len(second.participants) == 4
    assert all(second.epsilon[p] > charged[p] for p in charged)
