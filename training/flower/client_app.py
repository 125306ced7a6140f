"""The Flower ``ClientApp``: a party on its own SuperNode (a hospital, or a key holder).

The SuperNode's node config tells the app who it is::

    party="client/3"  key-file="/etc/secagg/client_3.key"  state-dir="/var/lib/secagg"
    data="digits"     (or a path to an .npz file with arrays x and y)
    budget=8.0        (optional: this client's own ε budget; default the federation's)

Message types (``query.<action>``), all content in one ConfigRecord ``"secagg"``:

- ``hello``: reply with the party id, its public keys and its record count;
- ``train``: the global model and the round parameters → local training (DP-SGD
  with the client's own budget guard and ledger under ``state-dir``), then the
  party-local client role protects the update; reply with its frames;
- ``relay``: frames from the server or other parties → the rebuilt role handles
  them (see :mod:`.codec` for why it is rebuilt); reply with the frames it sends.

Security: the update and the role's secrets exist only in this process and, sealed,
in ``Context.state``; replies carry protocol frames only. The client's budget guard
refuses a round that would overspend whatever the server asks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from privacy.budget import ClientBudgetGuard
from privacy.errors import BudgetExceededError
from privacy.ledger import PrivacyLedger
from secagg.errors import (
    DecodeError,
    IntegrityError,
    ParameterError,
    SecAggError,
    ShareReuseError,
)
from secagg.identity import PartyKeys, Roster
from secagg.protocol import ClientRole, Role, Scheme
from secagg.rand import Csprng, DeterministicRng, SystemRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg.wire import MAGIC, decode, encode
from training.client import run_client, train_local
from training.config import FederationConfig
from training.data import load_digits_data, partition
from training.federation import _seed_from, privacy_plan_for
from training.flower.codec import (
    NodeJournal,
    field,
    hello_transcript,
    pack_frames,
    seal,
    unpack_frames,
    unseal,
)
from training.models import build_model
from training.privacy_plan import PrivacyPlan
from training.updates import load_flat

RECORD = "secagg"
STATE = "secagg-sealed"

app = ClientApp()


# -- node identity and data ---------------------------------------------------


def _node(context: Context) -> tuple[str, PartyKeys]:
    party = str(context.node_config.get("party", ""))
    keys = PartyKeys.load(str(context.node_config.get("key-file", "")))
    if keys.party != party:
        raise ParameterError(f"key-file must hold the keys of {party}; got those of {keys.party}")
    return party, keys


def _state_dir(context: Context) -> Path:
    path = Path(str(context.node_config.get("state-dir", "")) or ".")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _insecure_seed(context: Context) -> int | None:
    """Tests only: reproducible DP noise and role randomness (INSECURE, named so)."""
    value = context.node_config.get("insecure-seed")
    return None if value is None else int(value)


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


def _content(msg: Message) -> ConfigRecord:
    return msg.content.config_records[RECORD]


def _reply(msg: Message, fields: dict[str, Any]) -> Message:
    return Message(RecordDict({RECORD: ConfigRecord(fields)}), reply_to=msg)


# -- handlers -------------------------------------------------------------------


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Who this node is: its party id, its public keys, proof it holds the signing key
    (a signature over the server's fresh challenge) and, for a client, its record count."""
    party, keys = _node(context)
    body = _content(msg)
    config = FederationConfig(**json.loads(field(body, "config", str)))
    records = 0
    if party.startswith("client/"):
        _, y = load_local_data(context, party, config)
        records = int(y.shape[0])
    public = keys.public
    proof = keys.signing.sign(hello_transcript(party, field(body, "challenge", bytes)))
    return _reply(
        msg,
        {
            "party": party,
            "signing": public.signing,
            "agreement": public.agreement,
            "proof": proof,
            "records": records,
        },
    )


@app.query("train")
def train(msg: Message, context: Context) -> Message:
    party, keys = _node(context)
    body = _content(msg)
    config = FederationConfig(**json.loads(field(body, "config", str)))
    round_number = field(body, "round", int)
    x, y = load_local_data(context, party, config)
    classes = field(body, "classes", int)
    model = build_model(config.model, int(x.shape[1]), classes, seed=config.seed)
    load_flat(model, np.frombuffer(field(body, "model", bytes), dtype="<f8").copy())
    seed = _insecure_seed(context)
    base: Csprng = DeterministicRng.from_int(seed) if seed is not None else SystemRng()
    scheme = _scheme(context, body)
    params = _params(scheme, field(body, "params", bytes))
    _check_identities(context, params)
    if params.round != round_number:
        raise ParameterError(f"round parameters must be for round {round_number}; got another")
    journal = _new_journal(
        party, base if seed is not None else None, round_number, field(body, "params", bytes)
    )
    # before training: a replayed round costs the client neither budget nor a second reveal
    _claim_session(context, party, params.session, journal.session)
    try:
        trainer, plan = _trainer(context, party, config, int(y.shape[0]), round_number, base)
    except BudgetExceededError as exc:
        return _reply(msg, {"status": "refused", "reason": str(exc)})
    generator = torch.Generator().manual_seed(
        _seed_from(
            DeterministicRng.from_int(config.seed)
            .fork("training/simulation")
            .fork(f"local/{round_number}/{party}")
        )
    )
    try:
        update = run_client(
            party,
            model,
            x,
            y,
            config.local,
            round_index=round_number,
            weight=field(body, "weight", float),
            update_clip=config.update_clip,
            generator=generator,
            trainer=trainer,
        )
    except BudgetExceededError as exc:
        return _reply(msg, {"status": "refused", "reason": str(exc)})
    finally:
        if plan is not None:
            _commit_own_ledger(context, party, plan, round_number)
    journal = dataclasses.replace(journal, vector=update.submission())
    start = time.perf_counter()
    role = _rebuild(scheme, journal, party, keys)
    outbound = role.protect(journal.vector) if isinstance(role, ClientRole) else []
    frames = [encode(m) for m in outbound]
    seconds = time.perf_counter() - start
    _store(context, journal, keys, body)
    return _reply(
        msg,
        {
            "status": "trained",
            "loss": float(update.metrics.loss),
            "train-seconds": float(update.metrics.seconds),
            "samples": int(update.metrics.samples),
            "frames": pack_frames(frames),
            "seconds": seconds,
        },
    )


@app.query("relay")
def relay(msg: Message, context: Context) -> Message:
    party, keys = _node(context)
    body = _content(msg)
    sealed = context.state.config_records.get(STATE)
    public: Any = body
    if party.startswith("holder/") and (sealed is None or body.get("reset")):
        # a key holder's role lives for the federation: it starts with the key ceremony
        seed = _insecure_seed(context)
        base = DeterministicRng.from_int(seed) if seed is not None else None
        journal = _new_journal(party, base, 0, b"")
    elif sealed is None:
        raise ParameterError(f"{party} must have joined the round before relayed frames")
    else:
        journal = unseal(field(sealed, "journal", bytes), keys, str(context.run_id))
        public = json.loads(field(sealed, "public", str))
    start = time.perf_counter()
    scheme = _scheme(context, public)
    role = _rebuild(scheme, journal, party, keys)
    if isinstance(role, ClientRole):
        role.protect(journal.vector)  # replay the entry point: its frames went out already
    for frame in journal.inbound:  # replay: their outputs were sent in an earlier phase
        role.handle(decode(frame))
    out: list[bytes] = []
    accepted = list(journal.inbound)
    refused: list[str] = []
    for frame in unpack_frames(field(body, "frames", bytes)):
        try:
            message = decode(frame)
            _claim_session(context, party, message.session, journal.session)
            out += [encode(m) for m in role.handle(message)]
        except SecAggError as exc:  # refused: the role's state is as before this frame
            refused.append(str(exc))
            break
        accepted.append(frame)
    seconds = time.perf_counter() - start
    journal = NodeJournal(
        session=journal.session,
        round=journal.round,
        sender=party,
        recipient=party,
        params=journal.params,
        seed=journal.seed,
        vector=journal.vector,
        inbound=tuple(accepted),
    )
    _store(context, journal, keys, public)
    return _reply(
        msg,
        {"frames": pack_frames(out), "seconds": seconds, "refused": "; ".join(refused)},
    )


# -- the role, rebuilt party-locally ---------------------------------------------


def _scheme(context: Context, public: Any) -> Scheme:
    """The federation's scheme from its public description, with this node's own roster."""
    aggregation = AggregationConfig(**json.loads(field(public, "aggregation", str)))
    scheme = create_scheme(field(public, "scheme", str), aggregation)
    roster = context.node_config.get("roster")
    if roster is not None and hasattr(scheme, "roster"):
        scheme.roster = Roster.load(str(roster))  # trusted out of band, never the server's
    return scheme


def _params(scheme: Scheme, blob: bytes) -> Any:
    """Round parameters as broadcast: the scheme's own ``from_bytes`` form, or a wire message."""
    constructor = type(scheme).round_parameters  # type: ignore[attr-defined]
    kind = typing.get_type_hints(constructor).get("return")
    if kind is not None and hasattr(kind, "from_bytes"):
        return kind.from_bytes(blob)
    if blob[: len(MAGIC)] != MAGIC:
        raise DecodeError(f"round parameters of {scheme.name} must be a wire message")
    return decode(blob)


def _check_identities(context: Context, params: Any) -> None:
    """Identity keys the server put into round parameters must be the node's own roster's.

    Security: a server substituting a peer's identity key could otherwise impersonate
    that peer to this client (the PKI assumption: trust the roster, not the server).
    """
    identities = getattr(params, "identities", None)
    path = context.node_config.get("roster")
    if identities is None or path is None:
        return
    roster = Roster.load(str(path))
    for party, key in dict(identities).items():
        if party not in roster or roster[party].signing != key:
            raise IntegrityError("round parameters' identity keys")


def _rebuild(scheme: Scheme, journal: NodeJournal, party: str, keys: PartyKeys) -> Role:
    """The party's role, built party-locally: from the broadcast parameters (a client) or
    the public federation parameters (a key holder), its own keys and its sealed seed."""
    rng = DeterministicRng(journal.seed)
    if party.startswith("holder/"):
        holder: Role = scheme.holder_role(keys, rng=rng)  # type: ignore[attr-defined]
        return holder
    params = _params(scheme, journal.params)
    role: Role = scheme.client_role(party, params, keys, rng=rng)  # type: ignore[attr-defined]
    return role


def _new_journal(
    party: str, insecure: Csprng | None, round_number: int, params: bytes
) -> NodeJournal:
    """A fresh journal: a new generation id (``session``) and a new secret role seed."""
    source: Csprng = (
        insecure.fork(f"role/{party}/{round_number}") if insecure is not None else SystemRng()
    )
    return NodeJournal(
        session=SystemRng().random_bytes(16),  # always fresh, even in tests: see _claim_session
        round=round_number,
        sender=party,
        recipient=party,
        params=params,
        seed=source.random_bytes(32),
        vector=np.zeros(0),
        inbound=(),
    )


def _claim_session(context: Context, party: str, session: bytes, generation: bytes) -> None:
    """A protocol session is served by one journal only, ever (a file on this machine).

    Security: Flower keeps ``Context.state`` per run, so a server that starts a new run
    (or resets a holder) could otherwise replay a finished round to a fresh role and
    obtain a second reveal for the same session (e.g. both shares of a dropped peer).
    """
    path = _state_dir(context) / f"{party.replace('/', '_')}.sessions"
    claims = dict(
        line.split() for line in path.read_text().splitlines() if line.strip()
    ) if path.exists() else {}
    owner = claims.get(session.hex())
    if owner is None:
        with open(path, "a") as handle:
            handle.write(f"{session.hex()} {generation.hex()}\n")
            handle.flush()
            os.fsync(handle.fileno())
    elif owner != generation.hex():
        raise ShareReuseError(f"session must be new to {party}; got one it already served")


def _store(context: Context, journal: NodeJournal, keys: PartyKeys, public: Any) -> None:
    """Seal the journal into ``Context.state`` (with the public scheme description)."""
    context.state.config_records[STATE] = ConfigRecord(
        {
            "journal": seal(journal, keys, str(context.run_id)),
            "public": json.dumps(
                {
                    "scheme": field(public, "scheme", str),
                    "aggregation": field(public, "aggregation", str),
                }
            ),
        }
    )


# -- the client's own privacy accounting ------------------------------------------


def _own_paths(context: Context, party: str) -> tuple[Path, Path]:
    stem = party.replace("/", "_")
    root = _state_dir(context)
    return root / f"{stem}.ledger", root / f"{stem}.guard.json"


def _trainer(
    context: Context,
    party: str,
    config: FederationConfig,
    records: int,
    round_number: int,
    rng: Csprng,
) -> tuple[Any, PrivacyPlan | None]:
    """DP-SGD under this client's own guard (restored from its state dir), or plain SGD."""
    if not config.dp:
        return train_local, None
    if config.dp_unit != "record":
        raise ParameterError(f"flower engine dp_unit must be 'record'; got {config.dp_unit!r}")
    plan = privacy_plan_for(config, {party: records}, rng=rng)
    if not isinstance(plan, PrivacyPlan):
        raise ParameterError("flower engine supports record-level DP only")
    ledger_path, guard_path = _own_paths(context, party)
    budget = context.node_config.get("budget")
    if guard_path.exists():
        plan.guards[party] = ClientBudgetGuard.from_json(guard_path.read_text())
    if budget is not None:
        plan.guards[party].set_budget(float(budget))
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


def _commit_own_ledger(context: Context, party: str, plan: PrivacyPlan, round_number: int) -> None:
    """Record what this client ran in its own ledger and guard file (before replying)."""
    try:
        if plan.trained_in(party, round_number):
            plan.commit(round_number, [party])
        _, guard_path = _own_paths(context, party)
        tmp = guard_path.with_name(guard_path.name + ".tmp")
        tmp.write_text(plan.guards[party].to_json())
        os.replace(tmp, guard_path)
    finally:
        plan.close()
