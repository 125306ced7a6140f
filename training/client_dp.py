"""Client-level (distributed) DP for the secure schemes: ``dp_unit = "client"``.

DP-FedAvg with the noise split across clients (:mod:`privacy.distributed`):
each client trains without DP-SGD, clips its whole model change to L2 norm
``S = update_clip`` and adds its share of Gaussian noise, N(0, z²S²/h), before
the scheme protects it. If at least ``h`` honest clients survive to the sum,
their shares add up to noise of standard deviation ≥ z·S on the released sum,
which is then a Gaussian mechanism of multiplier z for adding or removing one
client's entire data.

Choices, and why:

- **h = min_honest** is the minimum number of *honest* clients guaranteed to
  reach the sum (a threat-model parameter: survivors minus colluders). A round
  whose sum holds fewer contributors than h is discarded (the global model is
  kept), and still charged — the aggregate existed.
- **Uniform FedAvg weights.** Sample-size weights would scale a client's
  contribution (sensitivity w_max·S) and reveal its size; the appended weight
  coordinate becomes the contributor count, which the server knows anyway.
- **Known cohort** (the server selects the cohort): each participation is an
  unsampled Gaussian of multiplier z, accounted under the ledger's
  ``client-level`` kind with that threat model written into every entry.
- **Value bound.** A noisy coordinate is clamped to ``S + 10·z·S`` (the scheme's
  range); at ten standard deviations of the largest possible share that happens
  with probability < 10⁻²² per coordinate — a documented, negligible deviation
  from the Gaussian mechanism.

Security: noise shares come only from the federation's CSPRNG fork
``dp/<client>/<round>``; the clean update never leaves :meth:`privatize`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privacy.accounting import ACCOUNTANT, ADJACENCY, library_versions
from privacy.budget import ClientBudgetGuard, select_within_budget
from privacy.distributed import (
    COHORT_KNOWN,
    UNIT_CLIENT,
    ClientLevelParams,
    calibrate_client_level,
    privatize_update,
    record_client_level_round,
    round_event,
)
from privacy.ledger import KIND_CLIENT_LEVEL, PrivacyLedger
from privacy.noise import SecureGaussian
from secagg.errors import ParameterError
from secagg.protocol import Aggregate, PartyId
from secagg.rand import Csprng
from training.client import ClientUpdate, LocalStats, LocalTask, train_local
from training.privacy_plan import open_fresh_ledger

__all__ = ["CLAMP_SIGMAS", "ClientLevelPlan", "default_min_honest"]

CLAMP_SIGMAS = 10.0


def default_min_honest(clients: int) -> int:
    """Half the federation, rounded up: the default honest-survivor assumption."""
    return max(1, math.ceil(clients / 2))


class ClientLevelPlan:
    """A run's client-level DP: z calibrated once, budgets and spends in the ledger.

    Args:
        clients: every client of the federation.
        rounds: planned rounds (each client may take part in all of them).
        target_epsilon: calibration target per client over ``rounds`` participations.
        budget_epsilon: the ledger budget per client (default ``target_epsilon``).
        delta: δ of the guarantee.
        clip_norm: S, the L2 bound on each client's whole update.
        noise_multiplier: a given z instead of calibrating one.
        min_honest: h, honest clients guaranteed to reach every released sum.
        rng: the federation's CSPRNG (noise shares).
    """

    uniform_weights = True

    def __init__(
        self,
        clients: Sequence[PartyId],
        *,
        rounds: int,
        target_epsilon: float,
        budget_epsilon: float | None,
        delta: float,
        clip_norm: float,
        noise_multiplier: float | None,
        min_honest: int | None,
        rng: Csprng,
    ) -> None:
        self.clients = list(clients)
        self.rounds = rounds
        self.delta = delta
        self.clip_norm = clip_norm
        self.target_epsilon = target_epsilon
        self.budget_epsilon = budget_epsilon if budget_epsilon is not None else target_epsilon
        self.given_noise_multiplier = noise_multiplier
        self.min_honest = (
            min_honest if min_honest is not None else default_min_honest(len(self.clients))
        )
        if self.min_honest > len(self.clients):
            raise ParameterError(
                f"min_honest must be at most the number of clients ({len(self.clients)}); "
                f"got {self.min_honest}"
            )
        self.noise_multiplier = (
            noise_multiplier
            if noise_multiplier is not None
            else calibrate_client_level(
                target_epsilon=target_epsilon, delta=delta, rounds=rounds, threat_model=COHORT_KNOWN
            )
        )
        self.rng = rng
        self.guards = {
            c: ClientBudgetGuard(client=c, budget_epsilon=self.budget_epsilon, delta=delta)
            for c in self.clients
        }
        self._params: dict[int, ClientLevelParams] = {}
        self._trained: set[tuple[PartyId, int]] = set()
        self.discarded: list[int] = []
        self.ledger: PrivacyLedger
        self.ledger_path: Path
        self.ledger_temporary = True
        self.head = (0, "")

    def start(self, ledger_path: Path | None) -> None:
        """Open the run's (new) ledger and write every client's client-level budget."""
        self.ledger, self.ledger_path, self.ledger_temporary = open_fresh_ledger(ledger_path)
        for client in self.clients:
            self.ledger.set_budget(
                client,
                epsilon=self.budget_epsilon,
                delta=self.delta,
                round_index=0,
                scope=KIND_CLIENT_LEVEL,
                reason="initial client-level budget",
            )
        self.head = self.ledger.head()

    @property
    def value_bound(self) -> float:
        """|coordinate| bound of a noisy update: S plus ten of the largest possible share σ."""
        return self.clip_norm + CLAMP_SIGMAS * self.noise_multiplier * self.clip_norm

    def _round_params(self, cohort_size: int) -> ClientLevelParams:
        return ClientLevelParams(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            min_honest=min(self.min_honest, cohort_size),
            cohort_size=cohort_size,
        )

    def admit(self, round_number: int, cohort: Sequence[PartyId]) -> tuple[list[PartyId], list]:
        """Dry run of this round's client-level event; raises BudgetExceededError if none fit."""
        event = round_event(self._round_params(len(cohort)))
        selection = select_within_budget(self.ledger, list(cohort), event, kind=KIND_CLIENT_LEVEL)
        self._params[round_number] = self._round_params(len(selection.allowed))
        return list(selection.allowed), sorted(selection.refused)

    def train(self, task: LocalTask) -> LocalStats:
        """Local training is ordinary SGD: the privacy comes from :meth:`privatize`."""
        return train_local(task)

    def privatize(self, update: ClientUpdate, round_number: int) -> ClientUpdate:
        """Clip the whole update to S and add this client's noise share (client side).

        Raises:
            BudgetExceededError: the client's own guard refuses the round.
        """
        params = self._params[round_number]
        guard = self.guards[update.client]
        event = round_event(params)
        guard.check(event)
        source = self.rng.fork(f"dp/{update.client}/{round_number}")
        noisy = privatize_update(update.delta, params=params, noise=SecureGaussian(source))
        guard.record(event)
        self._trained.add((update.client, round_number))
        bound = self.value_bound
        return dataclasses.replace(update, delta=np.clip(noisy, -bound, bound), weight=1.0)

    def accept(self, aggregate: Aggregate, round_number: int) -> str | None:
        """Why the round's sum must be discarded (too few contributors), or ``None``."""
        need = self._params[round_number].min_honest
        if len(aggregate.contributors) >= need:
            return None
        self.discarded.append(round_number)
        return (
            f"contributors must be at least min_honest={need} for the client-level DP noise; "
            f"got {len(aggregate.contributors)} (sum discarded)"
        )

    def trained_in(self, client: PartyId, round_number: int) -> bool:
        return (client, round_number) in self._trained

    def commit(self, round_number: int, trained: Sequence[PartyId]) -> None:
        """Charge every client that added its noise share (even if it dropped out later)."""
        if trained:
            record_client_level_round(
                self.ledger,
                round_number,
                participants=list(trained),
                params=self._params[round_number],
                delta=self.delta,
            )
        self.head = self.ledger.head()

    def epsilons(self) -> dict[PartyId, float]:
        return {c: self.ledger.epsilon_spent(c, kind=KIND_CLIENT_LEVEL) for c in self.clients}

    def summary(self, *, stopped: dict[str, Any] | None) -> dict[str, Any]:
        eps = self.epsilons()
        params = self._round_params(len(self.clients))
        return {
            "enabled": True,
            "unit": "client-level, " + UNIT_CLIENT,
            "kind": KIND_CLIENT_LEVEL,
            "adjacency": ADJACENCY,
            "sampling": "none (the server selects the cohort)",
            "accountant": ACCOUNTANT,
            "delta": self.delta,
            "epsilon_per_client": eps,
            "epsilon_max": max(eps.values(), default=0.0),
            "budget": self.budget_epsilon,
            "target_epsilon": None if self.given_noise_multiplier else self.target_epsilon,
            "calibration": (
                f"noise multiplier given ({self.given_noise_multiplier:g})"
                if self.given_noise_multiplier
                else "once for every planned round (each participation an unsampled Gaussian)"
            ),
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "min_honest": self.min_honest,
            "noise_share_std": params.share_std,
            "discarded_rounds": list(self.discarded),
            "threat_model": params.describe_threat_model(),
            "fedavg_weights": "uniform (sample-size weights would raise sensitivity)",
            "library_versions": library_versions(),
            "stopped": stopped,
            "ledger": {"path": str(self.ledger_path), "temporary": self.ledger_temporary},
            "ledger_head": list(self.head),
        }

    def close(self) -> None:
        self.ledger.close()

    def __repr__(self) -> str:
        return (
            f"ClientLevelPlan(clients={len(self.clients)}, z={self.noise_multiplier:.3f}, "
            f"min_honest={self.min_honest})"
        )
