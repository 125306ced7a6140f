"""A client's local step on its SuperNode: its data, DP-SGD under its own guard, its ledger.

Imported by :mod:`.client_app` only when a message needs training (``train``,
``hello``): it pulls in torch and Opacus, which relay phases do without.

Security: the records never leave this process; the update leaves only through the
scheme's ``protect``. The client's budget guard and ledger live in its own state
directory, so its refusal does not depend on what the server says it has spent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context

from secagg.errors import ParameterError
from secagg.rand import Csprng, DeterministicRng
from secagg.schemes import AggregationConfig
from secagg_privacy.budget import ClientBudgetGuard
from secagg_privacy.errors import BudgetExceededError
from secagg_privacy.ledger import PrivacyLedger
from secagg_training.client import ClientUpdate, run_client, train_local
from secagg_training.config import FederationConfig
from secagg_training.data import load_digits_data, partition
from secagg_training.federation import _seed_from, privacy_plan_for
from secagg_training.flower.codec import field
from secagg_training.flower.policy import NodePolicy
from secagg_training.models import build_model
from secagg_training.privacy_plan import PrivacyPlan
from secagg_training.updates import load_flat


def load_local_data(
    context: Context, party: str, config: FederationConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """This party's training records: the digits demo split, or its own .npz file."""
    source = str(context.node_config.get("data", "digits"))
    if source == "digits":
        data = load_digits_data(seed=config.seed)
        parts = partition(
            data.y_train, config.clients, config.partition, alpha=config.alpha, seed=config.seed
        )
        index = int(party.split("/", 1)[1])
        if not 0 <= index < config.clients:
            raise ParameterError(f"party must be client/0..{config.clients - 1}; got {party}")
        rows = parts[index]
        return torch.from_numpy(data.x_train[rows]), torch.from_numpy(data.y_train[rows])
    with np.load(source, allow_pickle=False) as arrays:
        return (
            torch.from_numpy(np.asarray(arrays["x"], dtype=np.float32)),
            torch.from_numpy(np.asarray(arrays["y"], dtype=np.int64)),
        )


def record_count(context: Context, party: str, config_json: str, policy: NodePolicy) -> int:
    """How many training records this client holds, released only when its own policy
    has no DP (it sets the FedAvg weight); under DP the count stays here (0)."""
    config = FederationConfig(**json.loads(config_json))
    if policy.dp:
        return 0
    _, y = load_local_data(context, party, config)
    return int(y.shape[0])


def local_update(
    context: Context,
    party: str,
    body: ConfigRecord,
    state: Path,
    policy: NodePolicy,
    aggregation: AggregationConfig,
    *,
    rng: Csprng,
) -> ClientUpdate | str:
    """Train the broadcast model on this client's data; the update, or why it refused.

    Raises:
        PolicyMismatchError: the server's config differs from the node's own policy.
    """
    config = FederationConfig(**json.loads(field(body, "config", str)))
    policy.check_config(config, field(body, "nominal-records", int))
    round_number = field(body, "round", int)
    x, y = load_local_data(context, party, config)
    # this client's own weight: a server-chosen one could isolate it in the sum
    weight = policy.weight(int(y.shape[0]), aggregation, config.update_clip)
    classes = field(body, "classes", int)
    model = build_model(config.model, int(x.shape[1]), classes, seed=config.seed)
    load_flat(model, np.frombuffer(field(body, "model", bytes), dtype="<f8").copy())
    try:
        trainer, plan = _trainer(party, config, policy, body, round_number, state, rng)
    except BudgetExceededError as exc:
        return str(exc)
    generator = torch.Generator().manual_seed(
        _seed_from(
            DeterministicRng.from_int(config.seed)
            .fork("training/simulation")
            .fork(f"local/{round_number}/{party}")
        )
    )
    try:
        return run_client(
            party,
            model,
            x,
            y,
            config.local,
            round_index=round_number,
            weight=weight,
            update_clip=config.update_clip,
            generator=generator,
            trainer=trainer,
        )
    except BudgetExceededError as exc:
        return str(exc)
    finally:
        if plan is not None:
            _commit_own_ledger(party, plan, round_number, state)


# -- the client's own privacy accounting ------------------------------------------


def _own_paths(state: Path, party: str) -> tuple[Path, Path]:
    stem = party.replace("/", "_")
    return state / f"{stem}.ledger", state / f"{stem}.guard.json"


def _trainer(
    party: str,
    config: FederationConfig,
    policy: NodePolicy,
    body: ConfigRecord,
    round_number: int,
    state: Path,
    rng: Csprng,
) -> tuple[Any, PrivacyPlan | None]:
    """DP-SGD under this client's own guard (restored from its state dir), or plain SGD."""
    if not config.dp:
        return train_local, None
    if config.dp_unit != "record":
        raise ParameterError(f"flower engine dp_unit must be 'record'; got {config.dp_unit!r}")
    plan = privacy_plan_for(
        config, {party: 0}, rng=rng, nominal_records=field(body, "nominal-records", int)
    )
    if not isinstance(plan, PrivacyPlan):
        raise ParameterError("flower engine supports record-level DP only")
    ledger_path, guard_path = _own_paths(state, party)
    if guard_path.exists():
        plan.guards[party] = ClientBudgetGuard.from_json(guard_path.read_text())
    if policy.budget is None:  # unreachable: NodePolicy requires one under DP
        raise ParameterError("policy client_budget must be a positive ε under DP; got none")
    plan.guards[party].set_budget(policy.budget)
    plan.ledger = PrivacyLedger.open(ledger_path)
    if plan.ledger.budget(party) is None:
        plan.ledger.set_budget(
            party,
            epsilon=plan.guards[party].budget_epsilon,
            delta=plan.delta,
            round_index=0,
            reason="the client's own budget",
        )
    if plan.charged(party, round_number):
        plan.ledger.close()
        raise BudgetExceededError(
            f"round must be new to {party}; got round {round_number} again (already trained)"
        )
    return plan.train, plan


def _commit_own_ledger(party: str, plan: PrivacyPlan, round_number: int, state: Path) -> None:
    """Record what this client ran in its own ledger and guard file (before replying)."""
    try:
        if plan.trained_in(party, round_number):
            plan.commit(round_number, [party])
        _, guard_path = _own_paths(state, party)
        tmp = guard_path.with_name(guard_path.name + ".tmp")
        tmp.write_text(plan.guards[party].to_json())
        os.replace(tmp, guard_path)
    finally:
        plan.close()
