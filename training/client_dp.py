"""Client-level (distributed) DP for the secure schemes: ``dp_unit = "client"``.

DP-FedAvg with the noise split across clients (:mod:`secagg_privacy.distributed`):
each client trains without DP-SGD, clips its whole model change to L2 norm
``S = update_clip`` and adds its share of Gaussian noise, N(0, z²S²/h), before
the scheme protects it. If at least ``h`` honest clients survive to the sum,
their shares add up to noise of standard deviation ≥ z·S on the released sum,
which is then a Gaussian mechanism of multiplier z for adding or removing one
client's entire data.

Choices, and why:

- **h = min_honest** is the minimum number of *honest* noise shares in every
  released sum: the scheme's guaranteed survivors F minus the declared number
  of colluding clients c (default: the threat model's t − 1), printed. The
  scheme is built with the contributor floor F = h + c
  (``AggregationConfig.min_honest``: whoever unmasks/decrypts refuses a smaller
  sum), a cohort smaller than F is refused before training, and a sum with
  fewer than F contributors is never applied. Should a scheme release one
  anyway, the round is charged at its real noise (z·√((m − c)/h) for m
  contributors) and the guard/ledger reconciliation stops the run.
- **The unit** is one participating client's whole clipped update in one round
  under zero-out adjacency (the update replaced by zeros). Whether a client
  took part is *not* protected: the server selects the cohort and the weight
  coordinate releases the contributor count. The replace-one ε (sensitivity
  2S) is reported beside it.
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

from secagg.errors import ParameterError
from secagg.protocol import Aggregate, PartyId
from secagg.rand import Csprng
from secagg_privacy.accounting import (
    ACCOUNTANT,
    compose,
    epsilon_of_event,
    event_to_history,
    gaussian_event,
    guarantee_label,
    library_versions,
)
from secagg_privacy.budget import ClientBudgetGuard, reconcile_guard, select_within_budget
from secagg_privacy.distributed import (
    ADJACENCY_CLIENT,
    COHORT_KNOWN,
    UNIT_CLIENT,
    ClientLevelParams,
    calibrate_client_level,
    privatize_update,
    record_client_level_round,
    round_event,
)
from secagg_privacy.errors import BudgetExceededError
from secagg_privacy.ledger import KIND_CLIENT_LEVEL, PrivacyLedger, pin_digest
from secagg_privacy.noise import SecureGaussian
from secagg_training.client import ClientUpdate, LocalStats, LocalTask, train_local
from secagg_training.privacy_plan import open_fresh_ledger

__all__ = [
    "CLAMP_SIGMAS",
    "ClientLevelPlan",
    "HonestFloor",
    "honest_floor",
]

CLAMP_SIGMAS = 10.0
_NO_HONEST_SIGMA = 1e-2  # what a sum without one honest share is charged at: ε in the thousands

# The headline unit: a client's whole contribution to the run, not one round's update.
UNIT_CLIENT_RUN = (
    "one participating client's clipped model updates over all its rounds (all its records; "
    "not whether it took part)"
)
ADJACENCY_REPLACE_ONE = "replace-one (one update swapped for another: sensitivity 2S)"


@dataclasses.dataclass(frozen=True)
class HonestFloor:
    """h (honest shares in every released sum), c (declared colluders), F = h + c.

    ``survivors`` is what the scheme guarantees reaches a released sum and
    ``derivation`` says, in one line, where h came from (printed and stored).
    """

    min_honest: int
    colluders: int
    survivors: int
    derivation: str

    @property
    def floor(self) -> int:
        """The fewest contributors a released sum may have: F = h + c."""
        return self.min_honest + self.colluders


def honest_floor(
    *,
    scheme: str,
    cohort: int,
    threshold: int | None,
    committee: int,
    min_honest: int | None,
    colluders: int | None,
) -> HonestFloor:
    """Derive h from the scheme's guaranteed survivors minus the declared colluders.

    masking: survivors = its survivor threshold t (default ⌊k/2⌋ + 1 of a cohort of
    k); colluders default to t − 1 (the threat model: a coalition of up to t − 1
    clients with the server). ckks: survivors = a strict majority of the cohort,
    enforced by the key holders as the contributor floor; colluders default to
    t − 1 for the committee threshold t. A given ``min_honest`` is h itself.

    Raises:
        ParameterError: h < 1, or F = h + c larger than the cohort (fail closed).
    """
    majority = cohort // 2 + 1
    if scheme == "masking":
        t = threshold if threshold is not None else majority
        survivors, default_c, why = t, t - 1, f"masking survivor threshold t={t}"
    else:
        t = threshold if threshold is not None else math.ceil((committee + 1) / 2)
        survivors, default_c = majority, t - 1
        why = f"strict majority of the {cohort}-client cohort (key-holder threshold t={t})"
    c = default_c if colluders is None else colluders
    if isinstance(c, bool) or not isinstance(c, int) or c < 0:
        raise ParameterError(f"colluders must be a non-negative integer; got {c!r}")
    h = survivors - c if min_honest is None else min_honest
    if h < 1:
        raise ParameterError(
            f"min_honest must be at least 1 (guaranteed survivors {survivors} minus "
            f"{c} colluders); got {h}"
        )
    if h + c > cohort:
        raise ParameterError(
            f"min_honest + colluders must be at most the cohort size {cohort}; got {h} + {c}"
        )
    source = "given" if min_honest is not None else f"{survivors} guaranteed survivors ({why})"
    derivation = f"h = {h} ({source}; {c} declared colluders; contributor floor {h + c})"
    return HonestFloor(h, c, survivors, derivation)


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
        honest: h, c and the contributor floor F (see :func:`honest_floor`).
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
        honest: HonestFloor,
        rng: Csprng,
    ) -> None:
        self.clients = list(clients)
        self.rounds = rounds
        self.delta = delta
        self.clip_norm = clip_norm
        self.target_epsilon = target_epsilon
        self.budget_epsilon = budget_epsilon if budget_epsilon is not None else target_epsilon
        self.given_noise_multiplier = noise_multiplier
        self.honest = honest
        self.min_honest = honest.min_honest
        if honest.floor > len(self.clients):
            raise ParameterError(
                f"min_honest + colluders must be at most the number of clients "
                f"({len(self.clients)}); got {honest.floor}"
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
        self._pending: dict[int, list[PartyId]] = {}
        self._released_below_floor: dict[int, tuple[list[PartyId], float]] = {}
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

    def _round_params(
        self, cohort_size: int, noise_multiplier: float | None = None
    ) -> ClientLevelParams:
        return ClientLevelParams(
            noise_multiplier=noise_multiplier or self.noise_multiplier,
            clip_norm=self.clip_norm,
            min_honest=self.min_honest,  # never lowered to fit a small cohort
            cohort_size=cohort_size,
        )

    def admit(self, round_number: int, cohort: Sequence[PartyId]) -> tuple[list[PartyId], list]:
        """Dry run of this round's client-level event (clients over budget are refused).

        Raises:
            BudgetExceededError: fewer clients than the contributor floor F = h + c can
                afford the round (a smaller cohort could never be released), or none.
        """
        if len(cohort) < self.honest.floor:
            raise BudgetExceededError(
                f"round {round_number} cohort must have at least min_honest + colluders = "
                f"{self.honest.floor} clients; got {len(cohort)}"
            )
        event = round_event(self._round_params(len(cohort)))
        selection = select_within_budget(self.ledger, list(cohort), event, kind=KIND_CLIENT_LEVEL)
        if len(selection.allowed) < self.honest.floor:
            raise BudgetExceededError(
                f"round {round_number} must have at least min_honest + colluders = "
                f"{self.honest.floor} clients within budget; got {len(selection.allowed)}"
            )
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
        """Why the round's sum must be discarded (too few contributors), or ``None``.

        A sum below the floor should never exist (the scheme refuses it). If one was
        released anyway, it is never applied, and its contributors' charge for the
        round is raised to the noise it really carried: at least m − c honest shares
        of std z·S/√h, i.e. multiplier z·√((m − c)/h).
        """
        need = self.honest.floor
        m = len(aggregate.contributors)
        if m >= need:
            return None
        self.discarded.append(round_number)
        honest = m - self.honest.colluders
        real = (
            self.noise_multiplier * math.sqrt(honest / self.min_honest)
            if honest > 0
            else _NO_HONEST_SIGMA
        )
        self._released_below_floor[round_number] = (list(aggregate.contributors), real)
        return (
            f"contributors must be at least min_honest + colluders = {need} for the "
            f"client-level DP noise; got {m} (sum discarded, charged at z={real:.4g})"
        )

    def trained_in(self, client: PartyId, round_number: int) -> bool:
        return (client, round_number) in self._trained

    def commit(self, round_number: int, trained: Sequence[PartyId]) -> None:
        """Note who added its noise share; the charge is written by :meth:`settle`.

        A round left unsettled by an exception is charged (at z) before the next one
        and on :meth:`close`: a share that was drawn is never left uncharged.
        """
        for earlier in sorted(self._pending):
            self.settle(earlier)
        self._pending[round_number] = list(trained)

    def settle(self, round_number: int) -> None:
        """Charge every client that added its noise share (even if it dropped out later),
        at z — or at the real noise of a sum released below the floor — then reconcile
        every client's guard with the ledger (fail closed on any difference)."""
        trained = self._pending.pop(round_number, [])
        below = self._released_below_floor.pop(round_number, None)
        if trained:
            params = self._params[round_number]
            real = dataclasses.replace(params, noise_multiplier=below[1]) if below else params
            short = set(below[0]) if below else set()
            for group, group_params in (
                ([p for p in trained if p not in short], params),
                ([p for p in trained if p in short], real),
            ):
                if group:
                    record_client_level_round(
                        self.ledger,
                        round_number,
                        participants=group,
                        params=group_params,
                        delta=self.delta,
                        extra=self._honest_record(),
                    )
        self.head = self.ledger.head()
        for guard in self.guards.values():
            reconcile_guard(guard, self.ledger, kind=KIND_CLIENT_LEVEL)

    def _honest_record(self) -> dict[str, Any]:
        h = self.honest
        return {
            "min_honest": h.min_honest,
            "colluders": h.colluders,
            "contributor_floor": h.floor,
            "min_honest_derivation": h.derivation,
        }

    def epsilons(self) -> dict[PartyId, float]:
        return {c: self.ledger.epsilon_spent(c, kind=KIND_CLIENT_LEVEL) for c in self.clients}

    def summary(self, *, stopped: dict[str, Any] | None) -> dict[str, Any]:
        eps = self.epsilons()
        replace_one = {c: self._replace_one_epsilon(c) for c in self.clients}
        params = self._round_params(self.honest.floor)
        block = {
            "enabled": True,
            "unit": "client-level, " + UNIT_CLIENT,
            "kind": KIND_CLIENT_LEVEL,
            "adjacency": ADJACENCY_CLIENT,
            # headline: replace-one (DESIGN §4), the zero-out ε of the ledger labelled beside
            "guarantee": guarantee_label(
                unit=UNIT_CLIENT_RUN,
                adjacency=ADJACENCY_REPLACE_ONE,
                epsilon=max(replace_one.values(), default=0.0),
                delta=self.delta,
            ),
            "guarantee_zero_out": guarantee_label(
                unit=UNIT_CLIENT_RUN,
                adjacency=ADJACENCY_CLIENT + ", weaker than replace-one",
                epsilon=max(eps.values(), default=0.0),
                delta=self.delta,
            ),
            "replace_one": {
                "adjacency": ADJACENCY_REPLACE_ONE,
                "epsilon_per_client": replace_one,
                "epsilon_max": max(replace_one.values(), default=0.0),
            },
            "participation": "public (the server selects the cohort; not protected)",
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
            "colluders": self.honest.colluders,
            "contributor_floor": self.honest.floor,
            "min_honest_derivation": self.honest.derivation,
            "noise_share_std": params.share_std,
            "discarded_rounds": list(self.discarded),
            "threat_model": params.describe_threat_model(),
            "fedavg_weights": "uniform (sample-size weights would raise sensitivity)",
            "library_versions": library_versions(),
            "stopped": stopped,
            "ledger": {"path": str(self.ledger_path), "temporary": self.ledger_temporary},
            "ledger_head": list(self.head),
        }
        block["pin"] = pin_digest(block)  # publish it: binds these numbers to the ledger
        return block

    def _replace_one_epsilon(self, client: PartyId) -> float:
        """ε of the same rounds under replace-one adjacency: every Gaussian at z/2."""
        history = event_to_history(
            self.ledger.accountant_state(client, kind=KIND_CLIENT_LEVEL).composed
        )
        events = [gaussian_event(noise_multiplier=z / 2, count=n) for z, _, n in history]
        return epsilon_of_event(compose(events), delta=self.delta) if events else 0.0

    def close(self) -> None:
        try:
            for earlier in sorted(self._pending):
                self.settle(earlier)
        finally:
            self.ledger.close()

    def __repr__(self) -> str:
        return (
            f"ClientLevelPlan(clients={len(self.clients)}, z={self.noise_multiplier:.3f}, "
            f"min_honest={self.min_honest})"
        )
