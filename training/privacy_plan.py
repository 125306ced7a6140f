"""Record-level DP-SGD for a federation: calibration, the ledger, selection and commit.

A :class:`PrivacyPlan` is created once per run (when ``config.dp``) and owns:

- **A schedule independent of every client's record count.** Every client
  trains with the same public Poisson rate ``q = min(1, B / N)`` for the same
  public ``local_epochs · ⌈N / B⌉`` steps per round, where ``B`` is the public
  ``batch_size`` (also the loss normaliser) and ``N`` the *declared* nominal
  records per client (a public parameter fixed before training; the simulation
  declares the even share of the public digits split). FedAvg weights are
  uniform. Nothing released (update, weight coordinate, ledger, result.json)
  is a function of a client's own count ``n_i``, so adding or removing one
  record changes only what DP-SGD's noise hides: the accountant's
  add-or-remove-one ε is the guarantee, not a zero-out number. (With
  ``q_i = B / n_i``, ``n_i``-dependent steps or size weights, ``n_i`` is
  released exactly and add/remove DP fails; the replace-one ε of the same σ is
  1.9–2.4× the printed one.) σ is calibrated once for the whole planned
  schedule (rounds × steps per round) to the target ε — or taken as given.
- **The ledger** (:class:`secagg_privacy.ledger.PrivacyLedger`), with every client's
  budget written as an entry before round 1.
- **Selection** (server side): before each round a dry run drops the clients
  whose cumulative ε would pass their budget; when nobody is left the round
  raises :class:`~secagg_privacy.errors.BudgetExceededError`.
- **The local trainer**: :func:`secagg_privacy.dpsgd.train_dp_sgd` with the client's own
  :class:`~secagg_privacy.budget.ClientBudgetGuard` (the client refuses to overspend
  whatever the server asks), noise and Poisson sampling from the federation's
  CSPRNG fork ``dp/<client>/<round>``.
- **Commit**: after training, one ledger entry per client that trained.

Security: DP noise and batch sampling never touch a torch or numpy generator;
in production the byte source is :class:`secagg.rand.SystemRng`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from secagg.errors import ParameterError
from secagg.protocol import Aggregate, PartyId
from secagg.rand import Csprng
from secagg_privacy.accounting import (
    ACCOUNTANT,
    ADJACENCY,
    calibrate_noise_multiplier,
    epsilon_rdp_of_event,
    guarantee_label,
    library_versions,
)
from secagg_privacy.budget import ClientBudgetGuard, reconcile_guard, select_within_budget
from secagg_privacy.dpsgd import DPSGDParams, train_dp_sgd
from secagg_privacy.ledger import (
    KIND_DPSGD,
    THREAT_MODEL_RECORD_LEVEL,
    UNIT_RECORD,
    PrivacyLedger,
    pin_digest,
)
from secagg_privacy.noise import SecureGaussian
from secagg_training.client import ClientUpdate, LocalStats, LocalTask

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON",
    "DEFAULT_MAX_GRAD_NORM",
    "DP_TRAINING_DEFAULTS",
    "UNIT",
    "ClientSchedule",
    "PrivacyPlan",
    "open_fresh_ledger",
]

DEFAULT_EPSILON = 8.0
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
UNIT = "record-level, per client"
# Local-training settings the CLI uses under DP unless told otherwise. DP-SGD's
# noise on the mean gradient is σ·C/B, so larger batches and fewer, larger
# steps buy accuracy at a fixed ε (see the README's Privacy section).
DP_TRAINING_DEFAULTS: dict[str, Any] = {"batch_size": 64, "local_epochs": 1, "lr": 1.0}


@dataclasses.dataclass(frozen=True)
class ClientSchedule:
    """One client's public DP-SGD schedule, fixed before round 1.

    Every field is public and the same whatever the client's record count.
    """

    client: PartyId
    sample_rate: float
    steps_per_round: int
    noise_multiplier: float
    params: DPSGDParams


def public_schedule(
    *, nominal_records: int, batch_size: int, local_epochs: int
) -> tuple[float, int]:
    """(q, steps per round) from public values only: q = min(1, B/N), steps = E·⌈N/B⌉."""
    if isinstance(nominal_records, bool) or not isinstance(nominal_records, int):
        raise ParameterError(f"nominal_records must be a positive integer; got {nominal_records!r}")
    if nominal_records < 1:
        raise ParameterError(f"nominal_records must be a positive integer; got {nominal_records!r}")
    q = 1.0 if batch_size >= nominal_records else batch_size / nominal_records
    return q, local_epochs * math.ceil(nominal_records / batch_size)


def plan_schedules(
    clients: Sequence[PartyId],
    *,
    nominal_records: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
    max_grad_norm: float,
    noise_multiplier: float | None,
) -> dict[PartyId, ClientSchedule]:
    """Every client's (identical, public) q, steps per round and σ, calibrated once."""
    q, steps = public_schedule(
        nominal_records=nominal_records, batch_size=batch_size, local_epochs=local_epochs
    )
    sigma = noise_multiplier
    if sigma is None:
        sigma = calibrate_noise_multiplier(
            target_epsilon=target_epsilon, delta=delta, sample_rate=q, steps=steps * rounds
        )
    params = DPSGDParams(sigma, max_grad_norm, q, steps, expected_batch_size=float(batch_size))
    return {c: ClientSchedule(c, q, steps, sigma, params) for c in clients}


@contextlib.contextmanager
def _quiet_rdp() -> Iterator[None]:
    """dp-accounting's RDP logs (via absl) each Rényi order it drops as numerically
    unstable; the bound stays valid, so keep those lines out of the user's output."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def open_fresh_ledger(path: Path | None) -> tuple[PrivacyLedger, Path, bool]:
    """(ledger, its path, whether it is a temporary file); refuses a ledger already in use."""
    temporary = path is None
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="secagg-ledger-")) / "ledger"
    ledger = PrivacyLedger.open(Path(path))
    count = ledger.head()[0]
    if count:
        ledger.close()
        raise ParameterError(
            f"ledger_path must name a new ledger for this run; got one with {count} entries"
        )
    return ledger, Path(path), temporary


class PrivacyPlan:
    """A run's record-level DP: schedules, ledger, budget guards, selection and commit.

    Args:
        clients: every client of the federation.
        nominal_records: N, the declared public records per client that fixes q
            and the step count (never a client's own count).
        rounds, batch_size, local_epochs, lr, optimizer: the run's public settings.
        target_epsilon: calibration target per client over the whole run.
        budget_epsilon: the ledger budget per client (default: ``target_epsilon``).
        delta: δ of every guarantee.
        max_grad_norm: per-sample clipping bound C.
        noise_multiplier: a given σ instead of calibrating one.
        rng: the federation's CSPRNG; DP noise and sampling of client c in
            round r come from ``rng.fork(f"dp/{c}/{r}")``.

    Security: the plan holds public parameters and the accountant states only;
    the private records pass through :meth:`train` and are not kept.
    """

    uniform_weights = True  # size weights would release each client's record count
    value_bound: float | None = None  # DP-SGD noise stays inside the update clip

    def __init__(
        self,
        clients: Sequence[PartyId],
        *,
        nominal_records: int,
        rounds: int,
        batch_size: int,
        local_epochs: int,
        lr: float,
        optimizer: str,
        target_epsilon: float,
        budget_epsilon: float | None,
        delta: float,
        max_grad_norm: float,
        noise_multiplier: float | None,
        rng: Csprng,
    ) -> None:
        self.rounds = rounds
        self.lr = lr
        self.optimizer = optimizer
        self.target_epsilon = target_epsilon
        self.budget_epsilon = budget_epsilon if budget_epsilon is not None else target_epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.given_noise_multiplier = noise_multiplier
        self.batch_size = batch_size
        self.nominal_records = nominal_records
        self.rng = rng
        # calibrate before touching the disk: a bad request leaves no ledger behind
        self.schedules = plan_schedules(
            list(clients),
            nominal_records=nominal_records,
            batch_size=batch_size,
            local_epochs=local_epochs,
            rounds=rounds,
            target_epsilon=target_epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            noise_multiplier=noise_multiplier,
        )
        self.guards = {
            c: ClientBudgetGuard(client=c, budget_epsilon=self.budget_epsilon, delta=delta)
            for c in self.schedules
        }
        self.steps_run: dict[PartyId, int] = dict.fromkeys(self.schedules, 0)
        self._trained: set[tuple[PartyId, int]] = set()
        self.ledger: PrivacyLedger
        self.ledger_path: Path
        self.ledger_temporary = True
        self.head = (0, "")

    def start(self, ledger_path: Path | None) -> None:
        """Open the run's (new) ledger and write every client's budget as its first entries.

        Call once, after everything else about the run has been validated.
        """
        self.ledger, self.ledger_path, self.ledger_temporary = open_fresh_ledger(ledger_path)
        reason = (
            "initial budget (calibration target)"
            if self.budget_epsilon == self.target_epsilon and not self.given_noise_multiplier
            else f"initial budget (calibration target ε={self.target_epsilon:g})"
        )
        for client in self.schedules:
            self.ledger.set_budget(
                client, epsilon=self.budget_epsilon, delta=self.delta, round_index=0, reason=reason
            )
        self.head = self.ledger.head()

    def resume(self, ledger_path: Path) -> None:
        """Reopen this run's existing ledger (it must verify) and rebuild every guard from it.

        Used by ``secagg run --resume``: a client's spend so far is what the ledger says.
        """
        self.ledger = PrivacyLedger.open(Path(ledger_path))
        self.ledger_path, self.ledger_temporary = Path(ledger_path), False
        for client in self.schedules:
            if self.ledger.budget(client) is None:
                self.ledger.close()
                raise ParameterError(f"ledger must hold the budget of {client}; got none")
            self.guards[client].state = self.ledger.accountant_state(client)
            for entry in self.ledger.entries(client=client, kind=KIND_DPSGD):
                self.steps_run[client] += int(entry.body["steps"])
                self._trained.add((client, entry.round))
        self.head = self.ledger.head()

    def charged(self, client: PartyId, round_number: int) -> bool:
        """Whether the ledger already holds ``client``'s spend for ``round_number``."""
        return self.ledger.has_entry(client, round_number, KIND_DPSGD)

    # ------------------------------------------------------------- each round

    def admit(self, round_number: int, cohort: Sequence[PartyId]) -> tuple[list[PartyId], list]:
        """Dry run: (clients whose budget affords this round, clients refused).

        Raises:
            BudgetExceededError: nobody in ``cohort`` can afford the round.
        """
        events = {c: self.schedules[c].params.event for c in cohort}
        selection = select_within_budget(self.ledger, list(cohort), events)
        return list(selection.allowed), sorted(selection.refused)

    def train(self, task: LocalTask) -> LocalStats:
        """The DP-SGD :data:`~secagg_training.client.LocalTrainer` (the client side).

        Raises:
            BudgetExceededError: the client's own guard refuses to overspend.
        """
        schedule = self.schedules.get(task.client)
        if schedule is None:
            raise ParameterError(f"client must be one of the planned clients; got {task.client!r}")
        source = self.rng.fork(f"dp/{task.client}/{task.round_index}")
        guard = self.guards[task.client]
        before = len(guard.state.events)
        try:
            stats = train_dp_sgd(
                task.model,
                task.x,
                task.y,
                params=schedule.params,
                lr=task.settings.lr,
                noise=SecureGaussian(source.fork("noise")),
                sampler=source.fork("sampling"),
                optimizer=task.settings.optimizer,
                guard=guard,
            )
        finally:
            if len(guard.state.events) > before:  # the guard recorded: steps may have run
                self._trained.add((task.client, task.round_index))
        return LocalStats(loss=stats.mean_loss, steps=stats.steps)

    def privatize(self, update: ClientUpdate, round_number: int) -> ClientUpdate:
        """Nothing to add after training: DP-SGD already noised every step."""
        return update

    def accept(self, aggregate: Aggregate, round_number: int) -> str | None:
        """Record-level DP holds whoever contributes: every sum may be released."""
        return None

    def settle(self, round_number: int) -> None:
        """Nothing left to charge after aggregation: DP-SGD's spend is committed at training."""

    def trained_in(self, client: PartyId, round_number: int) -> bool:
        """Whether ``client`` ran DP-SGD in ``round_number`` (its own guard recorded it)."""
        return (client, round_number) in self._trained

    def commit(self, round_number: int, trained: Sequence[PartyId]) -> None:
        """Record the round's spend for every client that trained (conservative: even
        a client that later drops out of the protocol is charged)."""
        self._record(round_number, trained)
        for guard in self.guards.values():  # what each client ran must be what it was charged
            reconcile_guard(guard, self.ledger)

    def charge_remote(self, round_number: int, clients: Sequence[PartyId]) -> None:
        """Charge clients that may have trained where this plan's guards could not see it:
        on their own machines (the Flower engine), or in a round the server lost to a
        crash. Conservative; the guards here then mirror the ledger (each client's own
        guard, on its machine, is the one that refuses to overspend)."""
        self._record(round_number, clients)
        for client in clients:
            self.guards[client].state = self.ledger.accountant_state(client)

    def _record(self, round_number: int, trained: Sequence[PartyId]) -> None:
        for client in trained:
            s = self.schedules[client]
            self.ledger.record_round(
                client,
                round_number,
                event=s.params.event,
                delta=self.delta,
                noise_multiplier=s.noise_multiplier,
                sample_rate=s.sample_rate,
                steps=s.steps_per_round,
                clip_norm=self.max_grad_norm,
                extra={
                    "expected_batch_size": self.batch_size,
                    "lr": self.lr,
                    "nominal_records": self.nominal_records,  # the declared public N
                },
            )
            self.steps_run[client] += s.steps_per_round
        self.head = self.ledger.head()

    # ------------------------------------------------------------- reporting

    def epsilons(self) -> dict[PartyId, float]:
        """Each client's cumulative ε so far (the ledger's accountant of record)."""
        return {c: self.ledger.epsilon_spent(c) for c in self.schedules}

    def summary(self, *, stopped: dict[str, Any] | None) -> dict[str, Any]:
        """The ``privacy`` block of result.json."""
        eps = self.epsilons()
        with _quiet_rdp():
            rdp = {
                c: epsilon_rdp_of_event(self.ledger.accountant_state(c).composed, delta=self.delta)
                for c in self.schedules
            }
        sched = self.schedules.values()
        block = {
            "enabled": True,
            "unit": UNIT,
            "adjacency": ADJACENCY,
            "guarantee": guarantee_label(
                unit=UNIT_RECORD,
                adjacency=ADJACENCY,
                epsilon=max(eps.values(), default=0.0),
                delta=self.delta,
            ),
            "schedule": (
                f"public: q = min(1, B/N) and E·⌈N/B⌉ steps per round for every client, from "
                f"the declared N = {self.nominal_records} records per client; uniform FedAvg "
                "weights; no client's record count is released"
            ),
            "nominal_records": self.nominal_records,
            "sampling": "poisson",
            "accountant": ACCOUNTANT,
            "cross_check": {
                "accountant": "dp_accounting.rdp",
                "epsilon_per_client": rdp,
                "epsilon_max": max(rdp.values(), default=0.0),
            },
            "delta": self.delta,
            "epsilon_per_client": eps,
            "epsilon_max": max(eps.values(), default=0.0),
            "budget": self.budget_epsilon,
            "target_epsilon": None if self.given_noise_multiplier else self.target_epsilon,
            "calibration": (
                f"noise multiplier given ({self.given_noise_multiplier:g})"
                if self.given_noise_multiplier
                else "once per client for the whole planned schedule (rounds × steps per round)"
            ),
            "noise_multiplier": {s.client: s.noise_multiplier for s in sched},
            "sample_rate": {s.client: s.sample_rate for s in sched},
            "steps": {
                "per_round": {s.client: s.steps_per_round for s in sched},
                "planned": {s.client: s.steps_per_round * self.rounds for s in sched},
                "run": dict(self.steps_run),
            },
            "max_grad_norm": self.max_grad_norm,
            "expected_batch_size": self.batch_size,
            "noise": f"SecureGaussian over {type(self.rng).__name__} (CSPRNG)",
            "library_versions": library_versions(),
            "threat_model": THREAT_MODEL_RECORD_LEVEL,
            "stopped": stopped,
            "ledger": {"path": str(self.ledger_path), "temporary": self.ledger_temporary},
            "ledger_head": list(self.head),
        }
        block["pin"] = pin_digest(block)  # publish it: binds these numbers to the ledger
        return block

    def close(self) -> None:
        self.ledger.close()

    def __repr__(self) -> str:
        return (
            f"PrivacyPlan(clients={len(self.schedules)}, budget={self.budget_epsilon:g}, "
            f"delta={self.delta:g})"
        )
