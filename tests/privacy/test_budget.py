import pytest

from secagg_privacy.accounting import epsilon, sgd_event
from secagg_privacy.budget import ClientBudgetGuard, dry_run, select_within_budget
from secagg_privacy.errors import BudgetExceededError, PrivacyParameterError
from secagg_privacy.ledger import PrivacyLedger

DELTA = 1e-5
SIGMA, Q, STEPS = 1.0, 0.05, 40
EVENT = sgd_event(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS)


def eps_after(rounds):
    return epsilon(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS * rounds, delta=DELTA)


def commit(book, client, rnd):
    book.record_round(
        client,
        rnd,
        event=EVENT,
        delta=DELTA,
        noise_multiplier=SIGMA,
        sample_rate=Q,
        steps=STEPS,
        clip_norm=1.0,
    )


def run_rounds(book, clients, max_rounds):
    """The server loop: dry run, select, commit; returns who trained in each round."""
    history = []
    for r in range(max_rounds):
        try:
            chosen = select_within_budget(book, clients, EVENT)
        except BudgetExceededError:
            break
        for c in chosen.allowed:
            commit(book, c, r)
        history.append(chosen.allowed)
    return history


@pytest.mark.parametrize("affordable", [1, 3])
def test_exactly_the_overspending_round_is_refused(tmp_path, affordable):
    # Budget sits strictly between ε after `affordable` rounds and after one more.
    budget = (eps_after(affordable) + eps_after(affordable + 1)) / 2
    book = PrivacyLedger.open(tmp_path / "ledger")
    book.set_budget("c0", epsilon=budget, delta=DELTA, round_index=0)
    assert run_rounds(book, ["c0"], 10) == [("c0",)] * affordable
    assert book.epsilon_spent("c0") <= budget


def test_budget_equal_to_the_round_end_is_allowed(tmp_path):
    # "Not the one before": ending a round exactly at the budget is within it.
    book = PrivacyLedger.open(tmp_path / "ledger")
    book.set_budget("c0", epsilon=eps_after(2), delta=DELTA, round_index=0)
    assert run_rounds(book, ["c0"], 10) == [("c0",), ("c0",)]


def test_clients_drop_out_individually_then_run_stops(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    book.set_budget("rich", epsilon=(eps_after(3) + eps_after(4)) / 2, delta=DELTA, round_index=0)
    book.set_budget("poor", epsilon=(eps_after(1) + eps_after(2)) / 2, delta=DELTA, round_index=0)
    history = run_rounds(book, ["rich", "poor"], 10)
    assert history == [("rich", "poor"), ("rich",), ("rich",)]
    with pytest.raises(BudgetExceededError, match="none left") as info:
        select_within_budget(book, ["rich", "poor"], EVENT)
    assert "rich" in str(info.value) and "poor" in str(info.value)


def test_selection_reports_projection_and_refusals(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    book.set_budget("a", epsilon=100.0, delta=DELTA, round_index=0)
    book.set_budget("b", epsilon=0.5, delta=DELTA, round_index=0)
    sel = select_within_budget(book, ["a", "b"], {"a": EVENT, "b": EVENT})
    assert sel.allowed == ("a",) and set(sel.refused) == {"b"}
    assert sel.projected["a"] == pytest.approx(eps_after(1)) == dry_run(book, "a", EVENT)
    assert book.entries(kind="dp-sgd") == []  # a dry run writes nothing


def test_budget_change_takes_effect_and_is_recorded(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    book.set_budget("c0", epsilon=100.0, delta=DELTA, round_index=0)
    commit(book, "c0", 0)
    book.set_budget("c0", epsilon=eps_after(1) + 1e-9, delta=DELTA, round_index=1, reason="tighten")
    with pytest.raises(BudgetExceededError):
        select_within_budget(book, ["c0"], EVENT)
    assert len(book.entries(client="c0")) == 3


def test_missing_budget_fails_closed(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    with pytest.raises(PrivacyParameterError, match="budget"):
        select_within_budget(book, ["ghost"], EVENT)
    with pytest.raises(PrivacyParameterError):
        select_within_budget(book, [], EVENT)


def test_client_guard_matches_server_and_persists():
    # Defence in depth: a server that ignores budgets still meets the client's refusal.
    budget = (eps_after(2) + eps_after(3)) / 2
    guard = ClientBudgetGuard(client="c0", budget_epsilon=budget, delta=DELTA)
    for _ in range(2):
        guard.check(EVENT)
        guard.record(EVENT)
        guard = ClientBudgetGuard.from_json(guard.to_json())
    with pytest.raises(BudgetExceededError, match="c0"):
        guard.check(EVENT)
    assert guard.epsilon_spent == pytest.approx(eps_after(2))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), "3"])
def test_guard_rejects_bad_budget(bad):
    with pytest.raises(PrivacyParameterError):
        ClientBudgetGuard(client="c", budget_epsilon=bad, delta=DELTA)


def test_guard_rejects_garbage_state():
    with pytest.raises(PrivacyParameterError):
        ClientBudgetGuard.from_json('{"client": "c"}')


def test_reconcile_guard_fails_closed_on_any_difference(tmp_path):
    from secagg_privacy.budget import reconcile_guard
    from secagg_privacy.errors import AccountingMismatchError

    with PrivacyLedger.open(tmp_path / "l") as ledger:
        ledger.set_budget("a", epsilon=10.0, delta=1e-5, round_index=0)
        guard = ClientBudgetGuard(client="a", budget_epsilon=10.0, delta=1e-5)
        event = sgd_event(noise_multiplier=1.0, sample_rate=0.1, steps=5)
        reconcile_guard(guard, ledger)  # nothing ran, nothing charged
        guard.record(event)
        with pytest.raises(AccountingMismatchError, match="0 steps charged and 5 run"):
            reconcile_guard(guard, ledger)
        ledger.record_round(
            "a",
            1,
            event=event,
            delta=1e-5,
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=5,
            clip_norm=1.0,
        )
        reconcile_guard(guard, ledger)
        ledger.record_round(
            "a",
            2,
            event=event,
            delta=1e-5,
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=5,
            clip_norm=1.0,
        )  # charged but never run: also a difference
        with pytest.raises(AccountingMismatchError, match="10 steps charged and 5 run"):
            reconcile_guard(guard, ledger)
