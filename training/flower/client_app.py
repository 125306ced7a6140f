"""The Flower ``ClientApp``: a party on its own SuperNode (a hospital, or a key holder).

The SuperNode's node config tells the app who it is::

    party="client/3"  key-file="/etc/secagg/client_3.key"  state-dir="/var/lib/secagg"
    data="digits"     (or a path to an .npz file with arrays x and y)
    policy="/etc/secagg/policy.json"  (required: the federation policy this node agreed
                      to out of band, see :mod:`.policy`; DP, ε, δ, rounds, scheme…)
    budget=8.0        (optional: this client's own ε budget, else the policy's
                      ``client_budget``; one of them is required under DP)

Message types (``query.<action>``), all content in one ConfigRecord ``"secagg"``:

- ``hello``: reply with the party id, its public keys and its record count;
- ``train``: the global model and the round parameters → local training (DP-SGD
  with the client's own budget guard and ledger under ``state-dir``), then the
  party-local client role protects the update; reply with its frames;
- ``relay``: frames from the server or other parties → the rebuilt role handles
  them (see :mod:`.codec` for why it is rebuilt); reply with the frames it sends.

Security: the update and the role's secrets exist only in this process and, sealed,
in ``Context.state``; replies carry protocol frames only. The client's budget guard
refuses a round that would overspend whatever the server asks. Its DP settings,
aggregation settings and FedAvg weight come from its own policy (a server's differing
``train`` config is refused), and it releases each round at most once (a durable
record of the highest round released, in its state directory).
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
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

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
from secagg.wire import DEFAULT_MAX_MESSAGE_BYTES, MAGIC, decode, encode
from secagg_training.flower.codec import (
    NodeJournal,
    field,
    hello_transcript,
    pack_frames,
    seal,
    unpack_frames,
    unseal,
)
from secagg_training.flower.policy import NodePolicy, PolicyMismatchError

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


def state_dir(context: Context) -> Path:
    path = Path(str(context.node_config.get("state-dir", "")) or ".")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # ledger, guard, session claims
    os.chmod(path, 0o700)  # also when it existed (or the umask widened it)
    return path


def _insecure_seed(context: Context) -> int | None:
    """Tests only: reproducible DP noise and role randomness (INSECURE, named so)."""
    value = context.node_config.get("insecure-seed")
    return None if value is None else int(value)


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
    records = 0
    if party.startswith("client/"):
        from secagg_training.flower.client_train import record_count

        records = record_count(context, party, field(body, "config", str), NodePolicy.load(context))
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
    """Train locally, then protect the update with this client's party-local role."""
    from secagg_training.flower import client_train  # torch, opacus: only where training happens

    party, keys = _node(context)
    body = _content(msg)
    round_number = field(body, "round", int)
    seed = _insecure_seed(context)
    base: Csprng = DeterministicRng.from_int(seed) if seed is not None else SystemRng()
    policy = NodePolicy.load(context)
    if not 1 <= round_number <= int(policy.values["rounds"]):
        raise PolicyMismatchError(
            f"round must be in 1..{policy.values['rounds']} (the policy); got {round_number}"
        )
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
    released = _released_path(context, party)
    last = int(released.read_text()) if released.exists() else 0
    if round_number <= last:  # whatever the DP setting: a second cohort would expose it
        raise ShareReuseError(
            f"round must be after {last} (the last {party} released); got {round_number}"
        )
    outcome = client_train.local_update(
        context,
        party,
        body,
        state_dir(context),
        policy,
        AggregationConfig(**json.loads(field(body, "aggregation", str))),
        rng=base,
    )
    if isinstance(outcome, str):
        return _reply(msg, {"status": "refused", "reason": outcome})
    journal = dataclasses.replace(journal, vector=outcome.submission())
    start = time.perf_counter()
    role = _rebuild(scheme, journal, party, keys)
    outbound = role.protect(journal.vector) if isinstance(role, ClientRole) else []
    frames = [encode(m) for m in outbound]
    seconds = time.perf_counter() - start
    _write_durably(released, str(round_number))  # before anything of this round leaves
    _store(context, journal, keys, body)
    fields: dict[str, Any] = {"status": "trained", "frames": pack_frames(frames)}
    fields["seconds"] = seconds
    if not policy.dp:
        # diagnostics of private data: released only without DP (as in process)
        fields["loss"] = float(outcome.metrics.loss)
        fields["train-seconds"] = float(outcome.metrics.seconds)
    return _reply(msg, fields)


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
    # a role may declare a tighter frame limit (a CKKS key holder's request size):
    # nothing bigger is even parsed, as in the in-process transport
    limit = DEFAULT_MAX_MESSAGE_BYTES
    limit = min(limit, getattr(role, "max_message_bytes", limit))
    for frame in unpack_frames(field(body, "frames", bytes), max_size=limit):
        try:
            message = decode(frame, max_size=limit)
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
    """The federation's scheme from its public description, checked against this node's
    policy, with this node's own roster."""
    aggregation = AggregationConfig(**json.loads(field(public, "aggregation", str)))
    NodePolicy.load(context).check_aggregation(field(public, "scheme", str), aggregation)
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
    path = state_dir(context) / f"{party.replace('/', '_')}.sessions"
    claims = (
        dict(line.split() for line in path.read_text().splitlines() if line.strip())
        if path.exists()
        else {}
    )
    owner = claims.get(session.hex())
    if owner is None:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
            handle.write(f"{session.hex()} {generation.hex()}\n")
            handle.flush()
            os.fsync(handle.fileno())
    elif owner != generation.hex():
        raise ShareReuseError(f"session must be new to {party}; got one it already served")


def _released_path(context: Context, party: str) -> Path:
    return state_dir(context) / f"{party.replace('/', '_')}.released"


def _write_durably(path: Path, text: str) -> None:
    """Replace ``path`` atomically and durably (0600): it survives a crash once written."""
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
