"""DP-SGD wired into federated training: ε within target, ledger = result.json, budget stops.

Oracles are independent of our accountant: Opacus's PRV accountant recomputes every
ε from the events the ledger stores, and decides which round the budget must stop.
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant
from torch import nn

from secagg.errors import ParameterError
from secagg.rand import DeterministicRng
from secagg_privacy.accounting import event_to_history
from secagg_privacy.errors import BudgetExceededError, InsecureConfigurationError
from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger
from secagg_training.client import train_local
from secagg_training.config import PRIVACY_SETTINGS
from secagg_training.federation import Federation, FederationConfig, UtilityWarning, run_federation

DELTA = 1e-5
# Small, fast DP runs: 3 clients of ~479 records, one local epoch of 8 steps at q≈0.134.
TINY = {
    "scheme": "plain",
    "clients": 3,
    "seed": 1,
    "dp": True,
    "delta": DELTA,
    "batch_size": 64,
    "local_epochs": 1,
    "lr": 1.0,
    "model": "mlp-small",
}


def _without_dp(settings):
    """The same run with DP off: privacy settings must then be left out (asking is an error)."""
    return {**{k: v for k, v in settings.items() if k not in PRIVACY_SETTINGS}, "dp": False}


def _rng(n=99):
    return DeterministicRng.from_int(n)


def prv_epsilon(history, delta=DELTA):
    """Opacus's PRV accountant: the independent oracle."""
    acc = PRVAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return acc.get_epsilon(delta)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """One 3-round DP run at ε=2 with its ledger on disk."""
    path = tmp_path_factory.mktemp("dp") / "ledger"
    config = FederationConfig(**TINY, rounds=3, epsilon=2.0)
    return run_federation(config, rng=_rng(), ledger_path=path), path


def test_every_client_stays_within_the_target_in_result_and_ledger(dp_run):
    result, path = dp_run
    p = result.privacy
    assert p["enabled"] is True and p["stopped"] is None and result.stopped is None
    assert p["unit"] == "record-level, per client" and p["sampling"] == "poisson"
    # the label a reader sees: unit, adjacency, ε rounded up, δ
    assert p["adjacency"] == "add-or-remove-one"
    assert p["guarantee"] == (
        f"(ε ≤ {math.ceil(p['epsilon_max'] * 1000) / 1000:.3f}, δ = 1e-05)-DP for one training "
        "record of one client under add-or-remove-one adjacency"
    )
    assert p["delta"] == DELTA and p["budget"] == 2.0 and p["target_epsilon"] == 2.0
    assert p["ledger"] == {"path": str(path), "temporary": False}
    eps = p["epsilon_per_client"]
    assert set(eps) == {"client/0", "client/1", "client/2"}
    assert all(0 < e <= 2.0 for e in eps.values())
    assert max(eps.values()) > 1.9  # calibrated to the target, not far below it
    assert p["epsilon_max"] == max(eps.values())
    # the RDP cross-check is looser, never tighter
    assert all(p["cross_check"]["epsilon_per_client"][c] >= eps[c] for c in eps)
    with PrivacyLedger.open(path, expected_head=tuple(p["ledger_head"])) as ledger:
        assert ledger.head() == tuple(p["ledger_head"])
        ledger.verify(recompute_epsilon=True)
        for client, summary in ledger.summary().items():
            assert summary.budget_epsilon == 2.0 and summary.delta == DELTA
            assert summary.epsilon_spent == eps[client] <= 2.0
            assert [r for r, _ in summary.rounds] == [1, 2, 3]  # same numbering as result.json
            for entry in ledger.entries(client=client, kind=KIND_DPSGD):
                assert entry.body["noise_multiplier"] == p["noise_multiplier"][client]
                assert entry.body["sample_rate"] == p["sample_rate"][client]
                assert entry.body["steps"] == p["steps"]["per_round"][client]
                assert entry.body["clip_norm"] == p["max_grad_norm"] == 1.0


def _nominal():
    """N: the declared public records per client (even share of the public digits split)."""
    data = Federation(FederationConfig(**_without_dp(TINY))).data
    return len(data.y_train) // TINY["clients"]


def test_schedule_is_public_and_sigma_calibrated_once(dp_run):
    """q = B/N and E·⌈N/B⌉ steps from the declared N, identical for every client whatever
    its own record count; the record counts appear nowhere in result.json."""
    result, _ = dp_run
    p = result.privacy
    n = _nominal()
    assert p["nominal_records"] == n
    assert len(set(result.client_sizes)) > 1  # the clients really hold different counts
    for i in range(len(result.client_sizes)):
        client = f"client/{i}"
        assert p["sample_rate"][client] == pytest.approx(64 / n)
        assert p["steps"]["per_round"][client] == math.ceil(n / 64)
        assert p["steps"]["planned"][client] == 3 * math.ceil(n / 64) == p["steps"]["run"][client]
        # one σ for the whole schedule: ε of all planned steps is the target, not ε per round
        history = [(p["noise_multiplier"][client], p["sample_rate"][client], 3 * math.ceil(n / 64))]
        assert prv_epsilon(history) == pytest.approx(2.0, rel=0.02)
    doc = result.to_dict()
    assert doc["client_sizes"] is None
    assert all(r["train_loss"] is None for r in doc["rounds"])  # noise-free statistic: gone


def test_adding_one_record_changes_nothing_but_what_the_noise_hides(tmp_path):
    """Add/remove adjacency: with one extra record at client 0, every released quantity other
    than the noisy update itself — ledger entries, weights, privacy block — is identical."""
    config = FederationConfig(**TINY, rounds=1, epsilon=2.0)
    feds = [Federation(config, rng=_rng(), ledger_path=tmp_path / f"l{i}") for i in (0, 1)]
    feds[1]._x[0] = torch.cat([feds[1]._x[0], feds[1]._x[0][:1]])
    feds[1]._y[0] = torch.cat([feds[1]._y[0], feds[1]._y[0][:1]])
    updates = [fed.train_clients(1, [0, 1, 2]) for fed in feds]
    for fed in feds:
        fed.privacy.commit(1, list(fed.clients))
    assert [u["client/0"].weight for u in updates] == [1.0, 1.0]
    assert [u["client/0"].submission()[-1] for u in updates] == [1.0, 1.0]
    bodies = [[e.body for e in fed.privacy.ledger.entries()] for fed in feds]
    assert bodies[0] == bodies[1]
    blocks = [fed.privacy.summary(stopped=None) for fed in feds]
    for block in blocks:
        del block["ledger"], block["pin"]  # the file path differs (the pin covers it)
    assert blocks[0] == blocks[1]
    for fed in feds:
        fed.close()


def test_local_training_run_twice_in_a_round_fails_closed(tmp_path, monkeypatch):
    """Injected accounting bug outside train_dp_sgd: each client trains twice per round but
    the round is charged once. The guard/ledger reconciliation stops the run at round 1."""
    import secagg_training.federation as federation
    from secagg_privacy.errors import AccountingMismatchError

    original = federation.run_client

    def twice(*args, **kwargs):
        original(*args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(federation, "run_client", twice)
    config = FederationConfig(**TINY, rounds=2, epsilon=4.0)
    with pytest.raises(AccountingMismatchError, match="charged and .* run"):
        run_federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")


def test_every_epsilon_recomputes_from_the_ledger_events_with_opacus_prv(dp_run):
    result, path = dp_run
    with PrivacyLedger.open(path) as ledger:
        for client, reported in result.privacy["epsilon_per_client"].items():
            history = event_to_history(ledger.accountant_state(client).composed)
            assert prv_epsilon(history) == pytest.approx(reported, rel=0.01)


def test_round_records_show_epsilon_growing_to_the_final_value(dp_run):
    result, _ = dp_run
    maxima = [r.epsilon_max for r in result.rounds]
    assert maxima == sorted(maxima) and maxima[0] > 0
    assert maxima[-1] == result.privacy["epsilon_max"]
    assert result.rounds[-1].epsilon == result.privacy["epsilon_per_client"]
    assert all(r.refused_budget == [] for r in result.rounds)
    assert result.final_accuracy > result.initial_accuracy + 0.2  # it still learns under DP


def _expected_rounds(fed, sigma, budget):
    """Per client: how many rounds fit the budget, by Opacus PRV (not our accountant)."""
    out = {}
    for client in fed.clients:
        q, steps = 64 / _nominal(), math.ceil(_nominal() / 64)
        k = 0
        while prv_epsilon([(sigma, q, (k + 1) * steps)]) <= budget:
            k += 1
        out[client] = k
    return out


def _midway_budget(sigma, rounds):
    """A budget halfway between the PRV ε of ``rounds`` and ``rounds + 1`` rounds of client 0,
    so that no two sound accountants can disagree about where it stops."""
    q, steps = 64 / _nominal(), math.ceil(_nominal() / 64)
    low = prv_epsilon([(sigma, q, rounds * steps)])
    return (low + prv_epsilon([(sigma, q, (rounds + 1) * steps)])) / 2


def test_budget_stops_participation_at_exactly_the_right_round(tmp_path):
    sigma = 1.0
    budget = _midway_budget(sigma, 2)
    config = FederationConfig(**TINY, rounds=6, noise_multiplier=sigma, budget=budget)
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    expected = _expected_rounds(fed, sigma, budget)
    last = max(expected.values())
    assert 1 <= last < config.rounds, expected

    # API users: rounds up to `last` run, the next raises BudgetExceededError
    for r in range(1, last + 1):
        record = fed.run_round(r).record
        assert sorted(record.participants) == sorted(c for c, k in expected.items() if k >= r)
        assert record.refused_budget == sorted(c for c, k in expected.items() if k < r)
        assert record.epsilon_max <= budget
    with pytest.raises(BudgetExceededError, match="privacy budget"):
        fed.run_round(last + 1)
    fed.close()

    # run(): the loop stops there and says so in result.json and the ledger
    result = run_federation(config, rng=_rng(), ledger_path=tmp_path / "run-ledger")
    assert [r.round for r in result.rounds] == list(range(1, last + 1))
    assert result.stopped is not None and result.stopped["round"] == last + 1
    assert result.privacy["stopped"] == result.stopped
    assert "budget" in result.stopped["reason"]
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["stopped"]["round"] == last + 1 == doc["privacy"]["stopped"]["round"]
    with PrivacyLedger.open(tmp_path / "run-ledger") as ledger:
        for client, k in expected.items():
            rounds = [e.round for e in ledger.entries(client=client, kind=KIND_DPSGD)]
            assert rounds == list(range(1, k + 1))
            one_more = (sigma, 64 / _nominal(), math.ceil(_nominal() / 64))
            history = event_to_history(ledger.accountant_state(client).composed)
            assert ledger.epsilon_spent(client) <= budget < prv_epsilon([*history, one_more])
            assert ledger.budget(client).epsilon == budget


def test_client_guard_refuses_even_if_the_server_selects_it(tmp_path):
    """Defence in depth: a server that skips its dry run still cannot make a client overspend."""
    budget = _midway_budget(1.0, 2)
    config = FederationConfig(**TINY, rounds=4, noise_multiplier=1.0, budget=budget)
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    fed.privacy.admit = lambda r, cohort: (list(cohort), [])  # a careless server
    fed.run_round(1)
    fed.run_round(2)
    with pytest.raises(BudgetExceededError, match="budget"):
        fed.run_round(3)  # every client's own guard refuses before any step
    fed.close()
    for guard in fed.privacy.guards.values():
        assert len(guard.state.events) == 2 and guard.epsilon_spent <= budget
    assert all(e <= budget for e in fed.privacy.epsilons().values())


def test_a_client_that_trained_then_dropped_is_still_charged(tmp_path):
    config = FederationConfig(**{**TINY, "clients": 4}, rounds=2, epsilon=3.0, dropout=0.5)
    result = run_federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    assert any(r.dropped for r in result.rounds)
    with PrivacyLedger.open(tmp_path / "ledger") as ledger:
        for r in result.rounds:
            for client in [*r.participants, *r.dropped]:
                assert ledger.has_entry(client, r.round, KIND_DPSGD)


def test_dp_noise_comes_from_the_given_csprng_only(tmp_path):
    """Same CSPRNG seed → same model; different seed → different; torch's global RNG untouched."""
    config = FederationConfig(**TINY, rounds=1, epsilon=2.0)
    torch_state = torch.get_rng_state()
    models = [
        run_federation(config, rng=_rng(seed), ledger_path=tmp_path / f"l{i}").model
        for i, seed in enumerate((5, 5, 6))
    ]
    assert torch.equal(torch.get_rng_state(), torch_state)
    flat = [np.concatenate([p.detach().numpy().ravel() for p in m.parameters()]) for m in models]
    np.testing.assert_array_equal(flat[0], flat[1])
    assert not np.allclose(flat[0], flat[2])


def test_without_a_path_the_ledger_is_temporary_and_reported():
    result = run_federation(FederationConfig(**TINY, rounds=1, epsilon=2.0), rng=_rng())
    ledger = result.privacy["ledger"]
    assert ledger["temporary"] is True and ledger["path"].endswith("ledger")
    with PrivacyLedger.open(ledger["path"]) as book:
        assert book.head() == tuple(result.privacy["ledger_head"])


def test_refusals_before_any_ledger_is_written(tmp_path):
    with pytest.raises(ParameterError, match="trainer must not be given"):
        Federation(FederationConfig(**TINY, rounds=1), trainer=train_local)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    with pytest.raises(InsecureConfigurationError, match="BatchNorm"):
        Federation(FederationConfig(**TINY, rounds=1), model=bn, ledger_path=tmp_path / "l")
    assert not (tmp_path / "l").exists()
    for bad in ({"max_grad_norm": 0.0}, {"budget": -1.0}, {"noise_multiplier": float("nan")}):
        with pytest.raises(ParameterError):
            FederationConfig(**TINY, rounds=1, **bad)


def test_a_used_ledger_is_not_reused(tmp_path):
    path = tmp_path / "ledger"
    run_federation(FederationConfig(**TINY, rounds=1, epsilon=2.0), rng=_rng(), ledger_path=path)
    with pytest.raises(ParameterError, match="new ledger"):
        Federation(FederationConfig(**TINY, rounds=1, epsilon=2.0), ledger_path=path)


# ---------------------------------------------------------------- client-level (distributed) DP

CLIENT_LEVEL = {
    "scheme": "masking",
    "clients": 4,
    "seed": 1,
    "dp": True,
    "dp_unit": "client",
    "delta": DELTA,
    "model": "logreg",
    "update_clip": 1.0,
    "local_epochs": 1,
}


def test_zero_declared_colluders_warns(tmp_path):
    config = FederationConfig(**CLIENT_LEVEL, rounds=1, colluders=0)
    with pytest.warns(UtilityWarning, match="colluders=0 assumes no client colludes"):
        Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger").close()


def test_client_level_run_is_accounted_in_its_own_ledger_kind(tmp_path):
    from secagg_privacy.ledger import KIND_CLIENT_LEVEL

    config = FederationConfig(**CLIENT_LEVEL, rounds=2, epsilon=4.0)
    result = run_federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    p = result.privacy
    # masking, 4 clients: survivor threshold t = 3, declared colluders t − 1 = 2 → h = 1
    assert p["kind"] == "client-level" and p["min_honest"] == 1 and p["clip_norm"] == 1.0
    assert p["colluders"] == 2 and p["contributor_floor"] == 3
    assert p["min_honest_derivation"].startswith("h = 1 (3 guaranteed survivors")
    assert "cohort" in p["threat_model"] and "honest" in p["threat_model"]
    # the label: the unit is a participant's update, zero-out adjacency, participation public
    assert p["adjacency"] == "zero-out (the update replaced by zeros)"
    assert "not whether it took part" in p["unit"] and "public" in p["participation"]
    # headline: replace-one over all rounds; the ledger's zero-out ε labelled beside it
    assert p["guarantee"].endswith(
        "under replace-one (one update swapped for another: sensitivity 2S) adjacency"
    )
    assert "over all its rounds" in p["guarantee"]
    up = math.ceil(p["replace_one"]["epsilon_max"] * 1000) / 1000
    assert f"ε ≤ {up:.3f}, δ = 1e-05" in p["guarantee"]
    assert (
        f"ε ≤ {math.ceil(p['epsilon_max'] * 1000) / 1000:.3f}, δ = 1e-05" in p["guarantee_zero_out"]
    )
    assert "zero-out (the update replaced by zeros), weaker" in p["guarantee_zero_out"]
    # replace-one (sensitivity 2S) beside it: two Gaussians at z/2, by Opacus PRV
    replace = p["replace_one"]["epsilon_per_client"]
    assert all(replace[c] > 1.5 * e for c, e in p["epsilon_per_client"].items())
    z = p["noise_multiplier"]
    assert replace["client/0"] == pytest.approx(prv_epsilon([(z / 2, 1.0, 2)]), rel=0.01)
    assert all(0 < e <= 4.0 for e in p["epsilon_per_client"].values())
    with PrivacyLedger.open(tmp_path / "ledger", expected_head=tuple(p["ledger_head"])) as book:
        assert book.entries(kind=KIND_DPSGD) == []
        for client, eps in p["epsilon_per_client"].items():
            entries = book.entries(client=client, kind=KIND_CLIENT_LEVEL)
            assert [e.round for e in entries] == [1, 2]
            assert all(e.body["extra"]["min_honest"] == 1 for e in entries)  # h in every entry
            assert all(e.body["extra"]["contributor_floor"] == 3 for e in entries)
            assert book.budget(client, scope=KIND_CLIENT_LEVEL).epsilon == 4.0
            # independent oracle: two unsampled Gaussians of multiplier z, by Opacus PRV
            history = event_to_history(
                book.accountant_state(client, kind=KIND_CLIENT_LEVEL).composed
            )
            assert history == [(p["noise_multiplier"], 1.0, 2)]
            assert prv_epsilon(history) == pytest.approx(eps, rel=0.01)


def test_client_level_noise_share_has_the_calibrated_std(tmp_path):
    """Each client adds N(0, z²S²/h): measured over the ~650 coordinates of a logreg update."""
    config = FederationConfig(**CLIENT_LEVEL, rounds=1, epsilon=4.0, min_honest=3, colluders=1)
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    allowed, refused = fed.privacy.admit(1, fed.clients)
    assert allowed == fed.clients and refused == []
    clean = Federation(
        FederationConfig(**_without_dp(CLIENT_LEVEL), rounds=1), rng=_rng()
    ).train_clients(1, [0])["client/0"]
    noisy = fed.train_clients(1, [0])["client/0"]
    fed.close()
    expected = fed.privacy.noise_multiplier * 1.0 / math.sqrt(3)
    residual = noisy.delta - clean.delta  # local training is seeded identically in both
    assert np.std(residual) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(residual)) < 4 * expected / math.sqrt(residual.size)
    assert noisy.weight == 1.0  # uniform FedAvg weights under client-level DP


def test_client_level_dp_refuses_the_plaintext_scheme():
    with pytest.raises(ParameterError, match="secure scheme"):
        Federation(FederationConfig(**{**CLIENT_LEVEL, "scheme": "plain"}, rounds=1))


def test_h_is_never_lowered_to_fit_a_small_cohort():
    """Fail closed: a cohort smaller than h + colluders is refused, not silently accepted."""
    with pytest.raises(ParameterError, match="min_honest \\+ colluders must be at most"):
        Federation(FederationConfig(**CLIENT_LEVEL, rounds=1, clients_per_round=3, min_honest=3))
    with pytest.raises(ParameterError, match="min_honest must be at least 1"):
        Federation(FederationConfig(**CLIENT_LEVEL, rounds=1, colluders=3))


def test_the_scheme_is_built_with_the_contributor_floor(tmp_path):
    config = FederationConfig(**CLIENT_LEVEL, rounds=1, min_honest=2, colluders=1)
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    fed.close()
    assert fed.aggregation.min_honest == 3 and fed.privacy.min_honest == 2
    assert Federation(FederationConfig(**TINY, rounds=1)).aggregation.min_honest is None


def test_a_sum_released_below_the_floor_is_not_used_and_is_charged_at_its_real_noise(tmp_path):
    """Threat: a scheme (or its unmasker) ignores the floor and releases a sum of 5 when 6
    honest shares were required. The sum is never applied; its contributors are charged at
    z·√(5/6), and the guard/ledger difference stops the run (fail closed)."""
    import dataclasses

    from secagg.schemes import create_scheme
    from secagg_privacy.errors import AccountingMismatchError
    from secagg_privacy.ledger import KIND_CLIENT_LEVEL

    config = FederationConfig(
        **{**CLIENT_LEVEL, "clients": 6, "seed": 3},
        rounds=1,
        epsilon=4.0,
        min_honest=6,
        colluders=0,
        dropout=0.15,
    )
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")
    # the deviating party: a scheme built without the floor
    fed.scheme = create_scheme("masking", dataclasses.replace(fed.aggregation, min_honest=None))
    before = [p.detach().clone() for p in fed.model.parameters()]
    with pytest.raises(AccountingMismatchError, match="must equal the DP mechanisms it ran"):
        fed.run_round(1)
    assert all(torch.equal(a, b) for a, b in zip(before, fed.model.parameters(), strict=True))
    assert fed.privacy.discarded == [1]
    z = fed.privacy.noise_multiplier
    with PrivacyLedger.open(tmp_path / "ledger") as book:
        sigmas = {
            e.client: e.body["noise_multiplier"] for e in book.entries(kind=KIND_CLIENT_LEVEL)
        }
    fed.close()
    assert set(sigmas) == {f"client/{i}" for i in range(6)}  # the dropout had added its share
    assert sigmas["client/4"] == z  # dropped at phase 0: not in the sum
    real = {c: s for c, s in sigmas.items() if c != "client/4"}
    assert all(s == pytest.approx(z * math.sqrt(5 / 6)) for s in real.values())


def test_a_client_level_round_that_crashes_after_the_noise_is_still_charged(tmp_path):
    from secagg_privacy.ledger import KIND_CLIENT_LEVEL

    config = FederationConfig(**CLIENT_LEVEL, rounds=2, epsilon=4.0)
    fed = Federation(config, rng=_rng(), ledger_path=tmp_path / "ledger")

    def broken(*args, **kwargs):
        raise RuntimeError("network down")

    fed.scheme.open_round = broken
    with pytest.raises(RuntimeError, match="network down"):
        fed.run_round(1)
    fed.close()  # settles the pending round before closing the ledger
    with PrivacyLedger.open(tmp_path / "ledger") as book:
        charged = {e.client for e in book.entries(kind=KIND_CLIENT_LEVEL) if e.round == 1}
    assert charged == set(fed.clients)
