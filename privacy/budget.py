"""Budget enforcement: dry-run every would-be spend before a round, then commit.

Two independent checks (defence in depth):

- Server side, :func:`select_within_budget` dry-runs each candidate's
  would-be event against the ledger and keeps only clients whose cumulative ε
  after this round stays within their budget. The round that would overspend
  is refused; the round before it (ending at or under the budget) is not.
- Client side, :class:`ClientBudgetGuard` holds the client's own accountant
  state and budget and refuses to train past it, whatever the server says.

When nobody may train, :func:`select_within_budget` raises
:class:`~secagg_privacy.errors.BudgetExceededError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from secagg_privacy.accounting import AccountantState, DpEvent, event_to_history
from secagg_privacy.checks import positive
from secagg_privacy.errors import (
    AccountingMismatchError,
    BudgetExceededError,
    PrivacyParameterError,
)
from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger

__all__ = [
    "ClientBudgetGuard",
    "Selection",
    "dry_run",
    "reconcile_guard",
    "select_within_budget",
]


@dataclass(frozen=True)
class Selection:
    """The outcome of a pre-round dry run.

    Attributes:
        allowed: clients that may train this round, in candidate order.
        refused: client → the cumulative ε it would have reached (over budget).
        projected: client → cumulative ε after this round, for every candidate.
    """

    allowed: tuple[str, ...]
    refused: dict[str, float] = field(default_factory=dict)
    projected: dict[str, float] = field(default_factory=dict)


def dry_run(ledger: PrivacyLedger, client: str, event: DpEvent, *, kind: str = KIND_DPSGD) -> float:
    """The cumulative ε ``client`` would reach if ``event`` were committed (nothing is written).

    Uses the client's budget δ (or, without a budget, the δ of its past entries).
    """
    budget = ledger.budget(client, scope=kind)
    past = ledger.entries(client=client, kind=kind)
    if budget is not None:
        delta = budget.delta
    elif past:
        delta = float(past[-1].body["delta"])
    else:
        raise PrivacyParameterError(
            f"budget for client {client!r} must be set before a dry run; got none"
        )
    return ledger.accountant_state(client, kind=kind).with_event(event).epsilon(delta=delta)


def select_within_budget(
    ledger: PrivacyLedger,
    candidates: Sequence[str],
    events: DpEvent | Mapping[str, DpEvent],
    *,
    kind: str = KIND_DPSGD,
) -> Selection:
    """Keep the candidates whose budget affords this round's event (server side).

    Args:
        ledger: the run's ledger; every candidate must have a budget entry.
        candidates: the clients the server would like to select.
        events: one event for all, or each client's would-be event.
        kind: which spend the budget governs.

    Raises:
        BudgetExceededError: no candidate can afford the round.
        PrivacyParameterError: a candidate has no budget (fail closed).
    """
    if not candidates:
        raise PrivacyParameterError("candidates must name at least one client; got none")
    allowed: list[str] = []
    refused: dict[str, float] = {}
    projected: dict[str, float] = {}
    for client in candidates:
        budget = ledger.budget(client, scope=kind)
        if budget is None:
            raise PrivacyParameterError(
                f"budget for client {client!r} must be set before selection; got none"
            )
        event = events[client] if isinstance(events, Mapping) else events
        eps = dry_run(ledger, client, event, kind=kind)
        projected[client] = eps
        if eps <= budget.epsilon:
            allowed.append(client)
        else:
            refused[client] = eps
    if not allowed:
        worst = ", ".join(
            f"{c}: ε would reach {refused[c]:.3f} > budget {_budget_eps(ledger, c, kind):.3f}"
            for c in candidates
        )
        raise BudgetExceededError(
            f"every selected client must stay within its privacy budget; got none left ({worst})"
        )
    return Selection(tuple(allowed), refused, projected)


def _budget_eps(ledger: PrivacyLedger, client: str, kind: str) -> float:
    budget = ledger.budget(client, scope=kind)
    return budget.epsilon if budget is not None else math.nan


class ClientBudgetGuard:
    """A client's own budget check, independent of the server's ledger.

    The client keeps its accountant state (its own record of every event it
    ran) and refuses an event that would push its ε past ``budget_epsilon``.
    """

    def __init__(
        self,
        *,
        client: str,
        budget_epsilon: float,
        delta: float,
        state: AccountantState | None = None,
    ) -> None:
        if not isinstance(client, str) or not client:
            raise PrivacyParameterError(f"client must be a non-empty string; got {client!r}")
        self.client = client
        self.budget_epsilon = positive("budget_epsilon", budget_epsilon)
        d = positive("delta", delta)
        if d >= 1.0:
            raise PrivacyParameterError(f"delta must be in (0, 1); got {delta!r}")
        self.delta = d
        self.state = state if state is not None else AccountantState()

    @property
    def epsilon_spent(self) -> float:
        return self.state.epsilon(delta=self.delta)

    def check(self, event: DpEvent) -> float:
        """The ε after ``event``; raises if it exceeds the budget (nothing recorded)."""
        eps = self.state.with_event(event).epsilon(delta=self.delta)
        if eps > self.budget_epsilon:
            raise BudgetExceededError(
                f"client {self.client!r} epsilon must stay within its budget "
                f"{self.budget_epsilon:.3f}; got {eps:.3f} if it trained this round"
            )
        return eps

    def record(self, event: DpEvent) -> float:
        """Add ``event`` to the client's state (after it ran); returns the new ε."""
        self.state = self.state.with_event(event)
        return self.epsilon_spent

    def set_budget(self, budget_epsilon: float) -> None:
        self.budget_epsilon = positive("budget_epsilon", budget_epsilon)

    def to_json(self) -> str:
        return json.dumps(
            {
                "client": self.client,
                "budget_epsilon": self.budget_epsilon,
                "delta": self.delta,
                "events": json.loads(self.state.to_json()),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ClientBudgetGuard:
        try:
            obj = json.loads(text)
            events = json.dumps(obj["events"])
            return cls(
                client=obj["client"],
                budget_epsilon=obj["budget_epsilon"],
                delta=obj["delta"],
                state=AccountantState.from_json(events),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyParameterError("guard state must be the JSON from to_json()") from exc

    def __repr__(self) -> str:
        return f"ClientBudgetGuard(client={self.client!r}, budget_epsilon={self.budget_epsilon})"


def reconcile_guard(
    guard: ClientBudgetGuard, ledger: PrivacyLedger, *, kind: str = KIND_DPSGD
) -> None:
    """Fail closed unless the mechanisms the client's guard saw run are exactly those charged.

    An accounting bug outside DP-SGD (e.g. local training run twice in a round,
    or a round charged that never ran) shows up here as a difference between the
    client's own accountant state and the ledger's, whichever side is larger.

    Raises:
        AccountingMismatchError: the two compositions differ.
    """
    ran = event_to_history(guard.state.composed)
    charged = event_to_history(ledger.accountant_state(guard.client, kind=kind).composed)
    if ran != charged:
        raise AccountingMismatchError(
            f"ledger charges for client {guard.client!r} must equal the DP mechanisms it ran; "
            f"got {_steps(charged)} steps charged and {_steps(ran)} run"
        )


def _steps(history: list[tuple[float, float, int]]) -> int:
    return sum(n for _, _, n in history)
