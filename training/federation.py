"""The federated round loop over any registered secure-sum scheme.

One round::

    select clients → broadcast the global model → local training →
    each client protects concat(w_i·clip(Δ_i), [w_i]) with the scheme's client role →
    InProcessTransport routes every message (real wire codec) → server finalizes the sum →
    FedAvg: global += sum[:-1] / sum[-1] → evaluate on the held-out test split

Clipping and the value bound: each client clips its model change to L2 norm
≤ ``update_clip``, so every coordinate satisfies |Δ_ij| ≤ ``update_clip``; after
weighting by ``w_i = n_i / n̄`` (≤ max w) and appending ``w_i`` itself, every
submitted coordinate is bounded by ``max(update_clip, 1) · max_i w_i`` — the
``value_bound`` handed to the scheme (fixed-point range, CKKS scale, …).

Randomness: cryptographic randomness (session ids, keys, masks) and DP noise come
from the ``rng`` argument — ``SystemRng()`` (the OS CSPRNG) unless a test passes a
``DeterministicRng``. Simulation randomness (data split, partition, model init, batch
order, who drops out and when) is derived from ``config.seed``, so a run without DP is
reproducible up to the scheme's error; it never touches anything secret.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secagg.errors import DecodeError, IntegrityError, ParameterError, ProtocolAbort
from secagg.protocol import Aggregate, PartyId, Scheme, client_id
from secagg.rand import Csprng, DeterministicRng, SystemRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg_privacy.dpsgd import validate_model
from secagg_privacy.errors import BudgetExceededError
from secagg_training.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    load_checkpoint,
    load_model,
    save_state,
)
from secagg_training.client import (
    ClientUpdate,
    LocalTrainer,
    run_client,
    train_local,
)
from secagg_training.client_dp import ClientLevelPlan, honest_floor
from secagg_training.config import FederationConfig
from secagg_training.data import FederatedData, load_digits_data, partition
from secagg_training.models import build_model
from secagg_training.privacy_plan import (
    PrivacyPlan,
)
from secagg_training.transport import InProcessTransport, TrafficReport
from secagg_training.updates import fedavg_from_sum, flatten, layout_of, load_flat, sample_weights

# Round records list every client's ε only for federations up to this size.
EPSILON_PER_ROUND_MAX_CLIENTS = 32
# A run whose final accuracy beats the initial model's by less than this has "not learned".
MIN_USEFUL_GAIN = 0.05


class UtilityWarning(UserWarning):
    """A setting that runs, but where the model is unlikely to be useful (e.g. q = 1 under DP)."""


# ---------------------------------------------------------------------------
# Differential privacy plugs in here, and only here (the work is in privacy_plan).


def declared_nominal_records(config: FederationConfig, data: FederatedData) -> int:
    """N for record-level DP: declared, or the public dataset's train size // clients.

    Never derived from the private records: N fixes q, σ and the step count, so a
    record-count-dependent N would let one added record change the run's output.

    Raises:
        ParameterError: record-level DP on user data without a declared N, or on
            features scaled with statistics pooled over the private records.
    """
    if not (config.dp and config.dp_unit == "record"):
        return 1  # unused without record-level DP
    if data.pooled_scaling:
        raise ParameterError(
            "standardize must be False under DP (a pooled mean/std of the private records "
            "is released outside DP; scale features with public constants); got True"
        )
    if config.nominal_records is not None:
        return config.nominal_records
    if data.public_train_records is None:
        raise ParameterError(
            "nominal_records must be declared for user data under DP (a public records-per-"
            "client count, e.g. --nominal-records 150); got None"
        )
    return max(1, data.public_train_records // config.clients)


def privacy_plan_for(
    config: FederationConfig,
    sizes: dict[PartyId, int],
    *,
    rng: Csprng,
    nominal_records: int,
) -> PrivacyPlan | ClientLevelPlan | None:
    """The run's DP plan (noise calibrated once, budgets in the ledger), or ``None`` without DP.

    Only the client names of ``sizes`` are used; ``nominal_records`` is the declared public
    records per client that fixes the record-level schedule (see training.privacy_plan).
    """
    if not config.dp:
        return None
    if config.dp_unit == "client":
        honest = honest_floor(
            scheme=config.scheme,
            cohort=config.clients_per_round or config.clients,
            threshold=config.threshold,
            committee=config.committee,
            min_honest=config.min_honest,
            colluders=config.colluders,
        )
        return ClientLevelPlan(
            list(sizes),
            rounds=config.rounds,
            target_epsilon=config.dp_epsilon,
            budget_epsilon=config.budget,
            delta=config.dp_delta,
            clip_norm=config.update_clip,
            noise_multiplier=config.noise_multiplier,
            honest=honest,
            rng=rng,
        )
    return PrivacyPlan(
        list(sizes),
        nominal_records=nominal_records,
        rounds=config.rounds,
        batch_size=config.batch_size,
        local_epochs=config.local_epochs,
        lr=config.lr,
        optimizer=config.optimizer,
        target_epsilon=config.dp_epsilon,
        budget_epsilon=config.budget,
        delta=config.dp_delta,
        max_grad_norm=config.max_grad_norm,
        noise_multiplier=config.noise_multiplier,
        rng=rng,
    )


def no_privacy_summary() -> dict[str, Any]:
    """The ``privacy`` block of result.json for a run without DP: honest about it."""
    return {
        "enabled": False,
        "accountant": None,
        "delta": None,
        "epsilon_per_client": {},
        "epsilon_max": None,
        "budget": None,
        "stopped": None,
        "note": "no differential privacy: the released aggregates and model carry no (ε, δ) bound",
    }


# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SetupRecord:
    """Cost of the scheme's one-off setup ceremony (CKKS: the committee's CRS; absent elsewhere)."""

    bytes_total: int
    seconds: float
    messages: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """What one round did and cost (the entries of result.json's ``rounds``).

    ``participants`` are the clients whose updates are in the released sum;
    ``dropped`` the clients the simulation made drop (``dropped_at``: their phase).
    A client that drops *after* its protected input reached the server can still be a
    participant (e.g. masking recovers its self-mask from shares).
    Seconds are summed over parties (the simulation runs them one after another);
    ``total`` is the round's wall-clock time. Byte counts are protocol traffic
    (secure-aggregation messages; the model broadcast is not counted) averaged over
    the clients that stayed to the end; ``None`` if every client dropped.
    """

    round: int
    accuracy: float
    loss: float
    participants: list[PartyId]
    dropped: list[PartyId]
    dropped_at: dict[PartyId, int]
    bytes_up_per_client: float | None
    bytes_down_per_client: float | None
    seconds: dict[str, float | None]  # "train" is None under record-level DP (see threat model)
    train_loss: float | None  # None under DP: a noise-free statistic of private data
    aborted: bool = False
    error: str | None = None
    error_bound: float | None = None
    refused_budget: list[PartyId] = dataclasses.field(default_factory=list)
    epsilon_max: float | None = None
    epsilon: dict[PartyId, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, repr=False)
class RoundOutcome:
    """A round's record plus the released aggregate (``None`` if the round aborted).

    The aggregate is what the server learns anyway; it is kept so tests can check it.
    """

    record: RoundRecord
    aggregate: Aggregate | None
    cohort: list[PartyId]


@dataclasses.dataclass(repr=False)
class FederationResult:
    """A finished run: per-round records, the final global model, and what to write out."""

    config: FederationConfig
    scheme: dict[str, Any]
    setup: SetupRecord | None
    initial_accuracy: float
    initial_loss: float
    rounds: list[RoundRecord]
    model: nn.Module
    privacy: dict[str, Any]
    dataset: str
    client_sizes: list[int]
    stopped: dict[str, Any] | None = None
    engine: str = "in-process"
    model_name: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy if self.rounds else self.initial_accuracy

    @property
    def produced_model(self) -> bool:
        """Whether any round released an aggregate (else ``model`` is the initial one)."""
        return any(not r.aborted for r in self.rounds)

    def save_model(self, path: Path | str) -> Path:
        """Write the global model's ``state_dict`` to ``path`` (``torch.save``; load it with
        ``model.load_state_dict(torch.load(path, weights_only=True))``)."""
        target = Path(path)
        torch.save(self.model.state_dict(), target)
        return target

    def to_dict(self) -> dict[str, Any]:
        """The result.json document (DESIGN §6 keys plus setup/initial metrics)."""
        return {
            "scheme": self.config.scheme,
            "engine": self.engine,
            "insecure": bool(self.scheme.get("insecure", False)),
            "scheme_parameters": self.scheme,
            # the model actually trained: a custom module is not the registry's default
            "config": {**self.config.to_dict(), "model": self.model_name or self.config.model},
            "model": {
                "name": self.model_name or self.config.model,
                "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
                "parameters": int(sum(p.numel() for p in self.model.parameters())),
            },
            "warnings": list(self.warnings),
            "dataset": self.dataset,
            # under DP a client's record count is private: it is never released
            "client_sizes": None if self.privacy.get("enabled") else self.client_sizes,
            "setup": self.setup.to_dict() if self.setup else None,
            "initial_accuracy": self.initial_accuracy,
            "initial_loss": self.initial_loss,
            "rounds": [r.to_dict() for r in self.rounds],
            "final_accuracy": self.final_accuracy,
            "stopped": self.stopped,
            "privacy": self.privacy,
        }

    def __repr__(self) -> str:
        return (
            f"FederationResult(scheme={self.config.scheme!r}, rounds={len(self.rounds)}, "
            f"final_accuracy={self.final_accuracy:.4f})"
        )


def evaluate(model: nn.Module, data: FederatedData) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on the held-out test split."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
        labels = torch.from_numpy(data.y_test)
        loss = float(nn.functional.cross_entropy(logits, labels))
        accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return accuracy, loss


def _check_model_fits(model: nn.Module, data: FederatedData) -> None:
    """Fail early and clearly if ``model`` cannot map the data's samples to class logits."""
    expected = (2, data.num_classes)
    try:
        with torch.no_grad():
            shape = tuple(model(torch.from_numpy(data.x_test[:2])).shape)
    except (RuntimeError, ValueError, TypeError):
        shape = None
    if shape != expected:
        raise ParameterError(
            f"model must map inputs of shape {data.input_shape} to {data.num_classes} logits; "
            f"got output shape {shape}"
        )


def _refuse_running_statistics(model: nn.Module) -> None:
    """Refuse layers whose buffers train (BatchNorm running statistics).

    Only parameters go through the secure sum, so a running mean/variance would
    never be aggregated: the global model would evaluate with its initial statistics.
    """
    layers = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        }
    )
    if layers:
        raise ParameterError(
            f"model must have no layer with running statistics (they are not aggregated); "
            f"got {', '.join(layers)} — use GroupNorm/LayerNorm or track_running_stats=False"
        )


def _seed_from(rng: Csprng) -> int:
    return int(rng.uint64(1)[0] >> np.uint64(1))  # torch seeds are signed 64-bit


class Federation:
    """A federation in progress: the global model, the clients' data, the scheme.

    Use :func:`run_federation` for a whole run; this class exposes the steps
    (:meth:`setup`, :meth:`run_round`) for tests and custom loops. Under DP,
    :meth:`run_round` raises :class:`~secagg_privacy.errors.BudgetExceededError` when no
    selected client can afford the round; call :meth:`close` when done (``run``
    closes the ledger itself).
    """

    engine = "in-process"

    def __init__(
        self,
        config: FederationConfig,
        *,
        data: FederatedData | None = None,
        model: nn.Module | None = None,
        rng: Csprng | None = None,
        trainer: LocalTrainer | None = None,
        ledger_path: Path | None = None,
        sizes: list[int] | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.data = data if data is not None else load_digits_data(seed=config.seed)
        self.parts = partition(
            self.data.y_train,
            config.clients,
            config.partition,
            alpha=config.alpha,
            seed=config.seed,
        )
        # a deployment learns each client's record count from the client itself
        counts = sizes if sizes is not None else [p.size for p in self.parts]
        self.sizes = np.asarray(counts, dtype=np.int64)
        if self.sizes.shape != (config.clients,) or np.any(self.sizes < 1):
            raise ParameterError(
                f"sizes must be {config.clients} positive record counts; got {list(counts)}"
            )
        self.clients = [client_id(i) for i in range(config.clients)]
        if model is None:
            model = build_model(
                config.model, self.data.in_features, self.data.num_classes, seed=config.seed
            )
            self.model_name = config.model
        elif not isinstance(model, nn.Module):
            raise ParameterError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        else:
            self.model_name = f"custom:{type(model).__qualname__}"
        self.model = copy.deepcopy(model)  # the caller's module is never mutated
        self.dim = layout_of(self.model).size
        if self.dim < 1:
            raise ParameterError("model must have at least one floating-point parameter")
        _check_model_fits(self.model, self.data)
        if config.dp and trainer is not None:
            raise ParameterError(
                "trainer must not be given when dp is on: the DP plan owns local training; "
                "got a custom trainer"
            )
        if config.dp and config.dp_unit == "record":
            validate_model(self.model)  # fail closed before any ledger is written
        _refuse_running_statistics(self.model)
        self.rng = rng if rng is not None else SystemRng()
        # calibrates the noise; touches no file until start() below
        self.privacy = privacy_plan_for(
            config,
            {c: int(n) for c, n in zip(self.clients, self.sizes, strict=True)},
            rng=self.rng,
            nominal_records=declared_nominal_records(config, self.data),
        )
        uniform = self.privacy is not None and self.privacy.uniform_weights
        self.weights = np.ones(len(self.sizes)) if uniform else sample_weights(self.sizes)
        bound = max(config.update_clip, 1.0) * float(self.weights.max())
        if self.privacy is not None and self.privacy.value_bound is not None:
            bound = max(bound, self.privacy.value_bound)
        self.aggregation = AggregationConfig(
            max_clients=config.clients,
            value_bound=bound,
            committee=config.committee,
            threshold=config.threshold,
            corrupt_holders=config.corrupt_holders,
            graph=config.graph,
            # client-level DP: whoever unmasks/decrypts refuses a sum below h + colluders
            min_honest=self.privacy.honest.floor
            if isinstance(self.privacy, ClientLevelPlan)
            else None,
        )
        self.scheme: Scheme = create_scheme(config.scheme, self.aggregation)
        if self.privacy is not None:
            self.trainer: LocalTrainer = self.privacy.train
            if resume:
                if not isinstance(self.privacy, PrivacyPlan) or ledger_path is None:
                    raise ParameterError(
                        "resume must be of a run with record-level DP or none; "
                        f"got dp_unit {config.dp_unit!r}"
                    )
                self.privacy.resume(ledger_path)
            else:
                self.privacy.start(ledger_path)
        else:
            self.trainer = trainer if trainer is not None else train_local
        # run() points this at the checkpoint writer; standalone run_round() has none
        self._open_round: Callable[[int, list[PartyId]], None] = lambda r, c: None
        self.simulation = DeterministicRng.from_int(config.seed).fork("training/simulation")
        self.transport = InProcessTransport()
        self._x = [torch.from_numpy(self.data.x_train[p]) for p in self.parts]
        self._y = [torch.from_numpy(self.data.y_train[p]) for p in self.parts]
        self.warnings: list[str] = self._utility_warnings()
        for message in self.warnings:
            warnings.warn(message, UtilityWarning, stacklevel=2)

    def _utility_warnings(self) -> list[str]:
        """Settings that waste the privacy budget or weaken its assumption (one line each)."""
        if self.config.dp and self.config.dp_unit == "client" and self.config.colluders == 0:
            return [
                "colluders=0 assumes no client colludes with the server, weaker than the threat "
                "model's t − 1: the client-level ε holds only if that is true"
            ]
        if not (self.config.dp and self.config.dp_unit == "record"):
            return []
        # Public values only: a per-client record count here would be released outside DP.
        b, n = self.config.batch_size, declared_nominal_records(self.config, self.data)
        if n > b:
            return []
        return [
            f"the declared nominal_records N={n} is at most batch_size={b}, so DP-SGD samples "
            "every record every step (q = 1, no privacy amplification by sampling) and "
            "accuracy suffers; use fewer clients or a smaller batch_size"
        ]

    def run(
        self,
        *,
        on_round: Callable[[RoundRecord], None] | None = None,
        run_dir: Path | None = None,
    ) -> FederationResult:
        """Key ceremony (if any), then ``config.rounds`` rounds; see :func:`run_federation`.

        Under DP the loop stops early when no client can afford another round;
        ``stopped`` records that round and why. With ``run_dir`` the model and a
        checkpoint are written after every round (:mod:`secagg_training.checkpoint`), and a
        checkpoint already there is resumed from its last completed round.
        """
        try:
            setup = self.setup()
            state = self._begin(run_dir)
            rounds = [RoundRecord(**r) for r in state.rounds]
            stopped = state.stopped
            first = state.completed_round + 1
            self._checkpoint(run_dir, state, rounds, open_round=state.open_round)
            if state.open_round is not None:
                rounds.append(self._interrupted(state.open_round))
                first = rounds[-1].round + 1
                self._checkpoint(run_dir, state, rounds)
            for round_number in range(first, self.config.rounds + 1):
                if stopped is not None:
                    break
                self._open_round = lambda r, c: self._checkpoint(
                    run_dir, state, rounds, open_round={"round": r, "cohort": c}
                )
                try:
                    record = self.run_round(round_number).record
                except BudgetExceededError as exc:
                    stopped = {"round": round_number, "reason": str(exc)}
                    state.stopped = stopped
                    break
                rounds.append(record)
                self._checkpoint(run_dir, state, rounds)
                if on_round is not None:
                    on_round(record)
            state.finished = True
            self._checkpoint(run_dir, state, rounds)
            privacy = (
                self.privacy.summary(stopped=stopped)
                if self.privacy is not None
                else no_privacy_summary()
            )
        finally:
            self.close()
        return FederationResult(
            config=self.config,
            scheme=self.scheme.describe(),
            setup=setup,
            initial_accuracy=state.initial_accuracy,
            initial_loss=state.initial_loss,
            rounds=rounds,
            model=self.model,
            privacy=privacy,
            dataset=self.data.name,
            client_sizes=[int(s) for s in self.sizes],
            stopped=stopped,
            engine=self.engine,
            model_name=self.model_name,
            warnings=[*self.warnings, *self._outcome_warnings(state.initial_accuracy, rounds)],
        )

    # -- checkpoint and resume ---------------------------------------------

    def _begin(self, run_dir: Path | None) -> Checkpoint:
        """A fresh run's round-0 state, or the state a checkpoint in ``run_dir`` left."""
        if run_dir is not None and (run_dir / CHECKPOINT_FILE).exists():
            state = load_checkpoint(run_dir)
            if state.config != self.config.to_dict() or state.engine != self.engine:
                raise ParameterError(
                    "resume must use the checkpoint's configuration and engine; got another"
                )
            load_model(self.model, run_dir, state)
            return state
        accuracy, loss = evaluate(self.model, self.data)
        return Checkpoint(self.config.to_dict(), self.engine, accuracy, loss, [], "")

    def _checkpoint(
        self,
        run_dir: Path | None,
        state: Checkpoint,
        rounds: list[RoundRecord],
        *,
        open_round: dict[str, Any] | None = None,
    ) -> None:
        """Model first, then the checkpoint naming it: a crash leaves a consistent pair."""
        if run_dir is None:
            return
        state.rounds = [r.to_dict() for r in rounds]
        state.open_round = open_round
        save_state(self.model, state, run_dir)

    def _interrupted(self, open_round: dict[str, Any]) -> RoundRecord:
        """The record of a round the server started but never finished (it crashed).

        Security: the ledger may already charge this round for some clients; whoever of
        the round's selection is not yet charged is charged now (conservatively: they may
        have trained), and the round is never run again, so nothing is charged twice.
        """
        round_number = int(open_round["round"])
        cohort = [str(p) for p in open_round["cohort"]]
        if isinstance(self.privacy, PrivacyPlan):  # resume refuses any other plan
            missing = [p for p in cohort if not self.privacy.charged(p, round_number)]
            self.privacy.charge_remote(round_number, missing)
        accuracy, loss = evaluate(self.model, self.data)
        return RoundRecord(
            round=round_number,
            accuracy=accuracy,
            loss=loss,
            participants=[],
            dropped=[],
            dropped_at={},
            bytes_up_per_client=None,
            bytes_down_per_client=None,
            seconds={"train": 0.0, "protect": 0.0, "aggregate": 0.0, "decrypt": 0.0, "total": 0.0},
            train_loss=None,
            aborted=True,
            error="the server stopped during this round; its aggregate was lost and its "
            "clients are charged (conservatively); resumed with the next round",
            **self._privacy_fields([]),
        )

    def _outcome_warnings(self, initial_accuracy: float, rounds: list[RoundRecord]) -> list[str]:
        """After the run: no model released, or a model no better than the initial one."""
        released = [r for r in rounds if not r.aborted]
        found: list[str] = []
        if not released:
            found.append(
                f"no round produced a model ({len(rounds)} of {self.config.rounds} rounds ran, "
                "all aborted or refused): the result holds the initial model"
            )
        elif released[-1].accuracy < initial_accuracy + MIN_USEFUL_GAIN:
            found.append(
                f"test accuracy {released[-1].accuracy:.3f} is no better than the initial "
                f"model's {initial_accuracy:.3f}: the settings leave too little signal"
            )
        for message in found:
            warnings.warn(message, UtilityWarning, stacklevel=3)
        return found

    def close(self) -> None:
        """Close the privacy ledger (if any)."""
        if self.privacy is not None:
            self.privacy.close()

    # -- steps -------------------------------------------------------------

    def setup(self) -> SetupRecord | None:
        """Run the scheme's setup ceremony (if any) through the transport, once."""
        session = self.scheme.setup(rng=self.rng.fork("setup"))
        if session is None:
            return None
        report = self.transport.run(session)
        return SetupRecord(
            bytes_total=int(sum(report.bytes_sent.values())),
            seconds=float(sum(report.seconds.values())),
            messages=report.messages,
        )

    def select(self, round_number: int) -> list[int]:
        """Client indices taking part in a round: all, or a seeded sample."""
        k = self.config.clients_per_round
        if k is None or k == self.config.clients:
            return list(range(self.config.clients))
        keys = self.simulation.fork(f"select/{round_number}").uint64(self.config.clients)
        return sorted(int(i) for i in np.argsort(keys, kind="stable")[:k])

    def plan_dropouts(
        self, round_number: int, cohort: list[PartyId], phases: int
    ) -> dict[PartyId, int]:
        """Each client drops with probability ``dropout``, at a uniform phase in [0, phases)."""
        if self.config.dropout == 0.0 or not cohort:
            return {}
        draws = self.simulation.fork(f"dropout/{round_number}")
        coins = draws.uniform(len(cohort))
        when = draws.integers_below(max(phases, 1), len(cohort))
        return {
            p: int(k)
            for p, c, k in zip(cohort, coins, when, strict=True)
            if c < self.config.dropout
        }

    def train_clients(self, round_number: int, indices: list[int]) -> dict[PartyId, ClientUpdate]:
        """Local training of the given clients; a client whose own budget guard refuses
        the round (DP) is left out of the result."""
        updates: dict[PartyId, ClientUpdate] = {}
        for i in indices:
            party = self.clients[i]
            generator = torch.Generator().manual_seed(
                _seed_from(self.simulation.fork(f"local/{round_number}/{party}"))
            )
            try:
                updates[party] = run_client(
                    party,
                    self.model,
                    self._x[i],
                    self._y[i],
                    self.config.local,
                    round_index=round_number,
                    weight=float(self.weights[i]),
                    update_clip=self.config.update_clip,
                    generator=generator,
                    trainer=self.trainer,
                )
                if self.privacy is not None:
                    updates[party] = self.privacy.privatize(updates[party], round_number)
            except BudgetExceededError:
                updates.pop(party, None)
                continue
        return updates

    def run_round(self, round_number: int) -> RoundOutcome:
        """One full round; an aborted round (too few survivors) keeps the global model.

        Raises:
            BudgetExceededError: under DP, no selected client can afford this round.
        """
        start = time.perf_counter()
        cohort = [self.clients[i] for i in self.select(round_number)]
        refused: list[PartyId] = []
        if self.privacy is not None:
            cohort, refused = self.privacy.admit(round_number, cohort)
        self._open_round(round_number, cohort)  # before any client trains (checkpoint.py)
        try:
            updates = self.train_clients(round_number, [self.clients.index(p) for p in cohort])
        finally:
            if self.privacy is not None:  # conservative: charge whoever trained
                self.privacy.commit(round_number, self._trained(round_number, cohort))
        trained = [p for p in cohort if p in updates]
        refused += [p for p in cohort if p not in updates]  # the client's own guard said no
        cohort = trained
        if not cohort:
            raise BudgetExceededError(
                f"round {round_number} must have a client within its budget; got none"
            )
        # local training time grows with each client's record count: not released under DP
        train_seconds = (
            None
            if self.privacy is not None
            else sum(u.metrics.seconds for u in updates.values())
        )
        train_loss = (
            None
            if self.privacy is not None
            else float(np.mean([u.metrics.loss for u in updates.values()]))
        )
        session = self.scheme.open_round(
            round_number, cohort, self.dim + 1, rng=self.rng.fork(f"round/{round_number}")
        )
        plan = self.plan_dropouts(round_number, cohort, session.phases)
        inputs = {p: updates[p].submission() for p in cohort}
        report = TrafficReport()  # filled in even if the round aborts
        aggregate: Aggregate | None = None
        error: str | None = None
        try:
            self.transport.run(session, inputs=inputs, dropouts=plan, report=report)
            aggregate = session.coordinator.finalize()
        except (ProtocolAbort, IntegrityError, DecodeError) as exc:
            # a peer's fault (too few survivors, a refused or malformed update, a lying
            # peer): this round releases nothing and the global model stays as it was
            error = str(exc)
        finally:
            if aggregate is not None and self.privacy is not None:
                error = self.privacy.accept(aggregate, round_number)
                aggregate = None if error else aggregate  # a sum below h is never used
            if self.privacy is not None:
                self.privacy.settle(round_number)
        if aggregate is not None:
            new = flatten(self.model) + fedavg_from_sum(aggregate.vector, self.dim)
            load_flat(self.model, new)
        accuracy, loss = evaluate(self.model, self.data)
        record = self._record(
            round_number,
            accuracy,
            loss,
            cohort,
            plan,
            aggregate,
            report,
            error,
            train_seconds,
            train_loss,
        )
        seconds = dict(record.seconds, total=time.perf_counter() - start)
        record = dataclasses.replace(
            record, seconds=seconds, **self._privacy_fields(sorted(refused))
        )
        return RoundOutcome(record=record, aggregate=aggregate, cohort=cohort)

    def _trained(self, round_number: int, cohort: list[PartyId]) -> list[PartyId]:
        """Clients whose own budget guard recorded this round (they ran DP-SGD steps)."""
        if self.privacy is None:
            return []
        return [p for p in cohort if self.privacy.trained_in(p, round_number)]

    def _privacy_fields(self, refused: list[PartyId]) -> dict[str, Any]:
        if self.privacy is None:
            return {}
        eps = self.privacy.epsilons()
        return {
            "refused_budget": refused,
            "epsilon_max": max(eps.values(), default=0.0),
            "epsilon": eps if len(eps) <= EPSILON_PER_ROUND_MAX_CLIENTS else None,
        }

    def _record(
        self,
        round_number: int,
        accuracy: float,
        loss: float,
        cohort: list[PartyId],
        plan: dict[PartyId, int],
        aggregate: Aggregate | None,
        report: TrafficReport,
        error: str | None,
        train_seconds: float | None,
        train_loss: float | None,
    ) -> RoundRecord:
        participants = list(aggregate.contributors) if aggregate is not None else []
        by_kind = report.seconds_by_kind()
        # per-client traffic of a client that stayed to the end of the protocol
        stayed = [p for p in cohort if p not in plan]
        up = down = None
        if stayed:
            up = float(np.mean([report.bytes_sent.get(p, 0) for p in stayed]))
            down = float(np.mean([report.bytes_received.get(p, 0) for p in stayed]))
        return RoundRecord(
            round=round_number,
            accuracy=accuracy,
            loss=loss,
            participants=participants,
            dropped=sorted(plan),
            dropped_at=dict(sorted(plan.items())),
            bytes_up_per_client=up,
            bytes_down_per_client=down,
            seconds={
                "train": train_seconds,
                "protect": by_kind.get("client", 0.0),
                "aggregate": by_kind.get("server", 0.0),
                "decrypt": by_kind.get("holder", 0.0),
                "total": 0.0,
            },
            train_loss=train_loss,
            aborted=aggregate is None,
            error=error,
            error_bound=aggregate.error_bound if aggregate is not None else None,
        )


def run_federation(
    config: FederationConfig,
    *,
    data: FederatedData | None = None,
    model: nn.Module | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    rng: Csprng | None = None,
    ledger_path: Path | None = None,
    run_dir: Path | None = None,
) -> FederationResult:
    """Run ``config.rounds`` rounds of secure FedAvg and return what happened.

    Args:
        config: the run's public configuration.
        data: defaults to scikit-learn digits split with ``config.seed``.
        model: initial global model (copied); defaults to the registered ``config.model``.
        on_round: called with each round's record as soon as the round ends.
        rng: cryptographic randomness (and DP noise); ``SystemRng()`` unless a test
            needs determinism.
        ledger_path: the privacy ledger's file under DP (must be new); ``None``
            writes a temporary one, reported in ``result.privacy["ledger"]``.
        run_dir: where to checkpoint after every round (``model.pt``, checkpoint.json).
    """
    federation = Federation(config, data=data, model=model, rng=rng, ledger_path=ledger_path)
    return federation.run(on_round=on_round, run_dir=run_dir)
