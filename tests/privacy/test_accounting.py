import json
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant

from secagg_privacy.accounting import (
    AccountantState,
    calibrate_noise_multiplier,
    compose,
    epsilon,
    epsilon_of_event,
    epsilon_rdp,
    event_from_json,
    event_to_history,
    event_to_json,
    gaussian_event,
    sgd_event,
)
from secagg_privacy.errors import PrivacyParameterError

DELTA = 1e-5


def prv_epsilon(history, delta=DELTA):
    """Opacus's PRV accountant: the independent oracle."""
    acc = PRVAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return acc.get_epsilon(delta)


@pytest.mark.parametrize(
    ("sigma", "q", "steps"),
    [
        (0.8, 0.01, 1000),
        (1.0, 0.01, 1000),
        (1.0, 0.05, 200),
        (1.5, 0.01, 3000),
        (1.2, 0.23, 150),
        (2.0, 0.5, 100),
        (0.7, 0.1, 40),
        (4.0, 1.0, 10),
    ],
)
def test_pld_agrees_with_opacus_prv(sigma, q, steps):
    ours = epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    assert abs(ours - prv_epsilon([(sigma, q, steps)])) < 0.05


def test_known_value_from_the_notes_table():
    # notes/privacy.md: σ=1, q=0.01, 1000 steps, δ=1e-5 → PLD(1e-4) 1.828, PRV 1.838.
    eps = epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA)
    assert 1.828 <= eps < 1.86  # pessimistic: never below the fine-grid value


def test_rdp_cross_check_is_looser_but_close():
    pld = epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA)
    rdp = epsilon_rdp(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA)
    assert pld < rdp < 1.3 * pld


def test_carried_state_composes_across_rounds_fresh_engine_bug():
    # Regression for the classic federated bug (notes): 600 records, batch 30
    # (q=0.05), 2 local epochs (40 steps) per round × 5 rounds, σ=1, δ=1e-5.
    # A fresh accountant per round reports the one-round ε every time (≈2.48);
    # the carried state must report the composed ε (≈4.78 after 5 rounds).
    per_round = sgd_event(noise_multiplier=1.0, sample_rate=30 / 600, steps=40)
    state = AccountantState()
    history = []
    for _ in range(5):
        state = AccountantState.from_json(state.with_event(per_round).to_json())  # persisted
        history.append(state.epsilon(delta=DELTA))
    fresh = AccountantState().with_event(per_round).epsilon(delta=DELTA)
    assert history == sorted(history) and history[0] == pytest.approx(fresh)
    assert history[-1] == pytest.approx(4.776, abs=0.02)
    assert history[-1] > 1.9 * fresh  # the fresh-engine number under-reports by ~48%
    assert history[-1] == pytest.approx(prv_epsilon([(1.0, 0.05, 200)]), abs=0.05)


def test_composition_canonical_form_matches_one_long_schedule():
    rounds = [sgd_event(noise_multiplier=1.1, sample_rate=0.1, steps=25) for _ in range(4)]
    assert epsilon_of_event(compose(rounds), delta=DELTA) == epsilon(
        noise_multiplier=1.1, sample_rate=0.1, steps=100, delta=DELTA
    )


def test_mixed_events_agree_with_prv():
    events = [
        sgd_event(noise_multiplier=1.0, sample_rate=0.05, steps=100),
        sgd_event(noise_multiplier=2.0, sample_rate=0.2, steps=50),
    ]
    ours = epsilon_of_event(compose(events), delta=DELTA)
    assert abs(ours - prv_epsilon(event_to_history(compose(events)))) < 0.05


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from([0.5, 1.0, 3.0, 8.0]),
    q=st.sampled_from([0.01, 0.05, 0.2]),
    steps=st.sampled_from([10, 100, 400]),
)
def test_calibration_never_overshoots_and_is_tight(target, q, steps):
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps
    )
    assert epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA) <= target
    # 0.2% less noise would already overshoot: σ is (nearly) the smallest feasible.
    assert epsilon(noise_multiplier=sigma * 0.998, sample_rate=q, steps=steps, delta=DELTA) > target


def test_calibration_for_whole_schedule_beats_per_round_target():
    # Per-round calibration to ε=2 overshoots the training-level target (notes: 3.93).
    sigma = calibrate_noise_multiplier(target_epsilon=2.0, delta=DELTA, sample_rate=0.05, steps=200)
    assert epsilon(noise_multiplier=sigma, sample_rate=0.05, steps=200, delta=DELTA) <= 2.0
    per_round = calibrate_noise_multiplier(
        target_epsilon=2.0, delta=DELTA, sample_rate=0.05, steps=40
    )
    assert epsilon(noise_multiplier=per_round, sample_rate=0.05, steps=200, delta=DELTA) > 3.5


def test_event_json_round_trip_recomputes_exactly():
    ev = compose(
        [
            sgd_event(noise_multiplier=0.9, sample_rate=0.07, steps=30),
            gaussian_event(noise_multiplier=3.0, count=2),
        ]
    )
    text = event_to_json(ev)
    assert json.loads(text)["class_name"] == "ComposedDpEvent"
    again = event_from_json(text)
    assert epsilon_of_event(again, delta=DELTA) == epsilon_of_event(ev, delta=DELTA)
    assert event_to_json(again) == text


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"module_name":"os","class_name":"system"}',
        '{"module_name":"dp_accounting.dp_event","class_name":"LaplaceDpEvent","noise_multiplier":1}',
        '{"module_name":"dp_accounting.dp_event","class_name":"GaussianDpEvent","noise_multiplier":-1}',
        '{"module_name":"dp_accounting.dp_event","class_name":"GaussianDpEvent","noise_multiplier":true}',
        '{"module_name":"dp_accounting.dp_event","class_name":"SelfComposedDpEvent","count":-2,'
        '"event":{"module_name":"dp_accounting.dp_event","class_name":"NoOpDpEvent"}}',
    ],
)
def test_malformed_or_foreign_events_are_refused(text):
    # Threat: a tampered ledger smuggling an unsupported class or a nonsense σ.
    with pytest.raises(PrivacyParameterError):
        event_from_json(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0, "sample_rate": 0.1, "steps": 1, "delta": DELTA},
        {"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1, "delta": DELTA},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -1, "delta": DELTA},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "delta": 1.0},
        {"noise_multiplier": float("nan"), "sample_rate": 0.1, "steps": 1, "delta": DELTA},
    ],
)
def test_bad_parameters_are_named_errors(kwargs):
    with pytest.raises(PrivacyParameterError, match="must be"):
        epsilon(**kwargs)


def test_zero_steps_spend_nothing():
    assert epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=DELTA) == 0.0


def test_printed_epsilon_is_rounded_up_never_to_nearest():
    from secagg_privacy.accounting import format_epsilon, guarantee_label

    assert format_epsilon(2.99939) == "3.000"  # to nearest would print 2.999 < ε
    assert format_epsilon(2.9990001) == "3.000"
    assert format_epsilon(2.0) == "2.000"
    assert format_epsilon(7.9981, 2) == "8.00"
    assert guarantee_label(
        unit="one training record of one client",
        adjacency="add-or-remove-one",
        epsilon=2.99939,
        delta=1e-5,
    ) == (
        "(ε ≤ 3.000, δ = 1e-05)-DP for one training record of one client under "
        "add-or-remove-one adjacency"
    )
