"""The Flower ``ServerApp``: our server role driven over Flower's ``Grid``.

One round (mirrors :class:`secagg_training.transport.InProcessTransport`'s loop)::

    broadcast: global model + the scheme's round parameters  (query.train, deadline =
        the training deadline) → each client trains, builds its role party-locally,
        protects its update and answers with our wire frames
    loop: frames for the server → the server role; frames for another party are queued
        and relayed to it (query.relay, one send_and_receive per batch, deadline = the
        phase deadline); when nothing is pending the phase deadline has passed:
        server.advance()
    until the server role is done → finalize → FedAvg → evaluate → checkpoint

Whoever does not answer within a deadline is a dropout from then on (our dropout
model); Flower's own messages (ids, metadata) are not counted in the byte figures,
which are our encoded frames exactly as the in-process transport counts them.

The run is configured by ``<run-dir>/flower-run.json`` (written by ``secagg run
--engine flower-local`` or by hand on the server machine); the Flower run config only
names the run directory (``run-dir``).

Security: the server handles public material only: round parameters, frames, metrics.
A relayed frame must name its real sender (the node that returned it); a frame
claiming another sender is refused and its node treated as dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from secagg.errors import (
    DecodeError,
    InsufficientParticipantsError,
    IntegrityError,
    ParameterError,
    ProtocolAbort,
    SecAggError,
)
from secagg.identity import PublicIdentity, Roster
from secagg.protocol import (
    SERVER,
    Aggregate,
    AggregationServer,
    Coordinator,
    PartyId,
    Scheme,
    client_id,
)
from secagg.rand import Csprng, DeterministicRng, SystemRng
from secagg.wire import DEFAULT_MAX_MESSAGE_BYTES, decode, encode
from secagg.wire import Message as WireMessage
from secagg_privacy.errors import BudgetExceededError
from secagg_training.config import FederationConfig
from secagg_training.federation import Federation, RoundOutcome, SetupRecord, evaluate
from secagg_training.flower.codec import field, hello_transcript, pack_frames, unpack_frames
from secagg_training.privacy_plan import PrivacyPlan
from secagg_training.transport import MAX_PHASES, PhaseStats, TrafficReport, role_kind
from secagg_training.updates import fedavg_from_sum, flatten, load_flat

RECORD = "secagg"
SPEC_FILE = "flower-run.json"
ERROR_FILE = "flower-error.txt"
EXCHANGE_POLL_SECONDS = 0.2

app = ServerApp()


@dataclasses.dataclass(frozen=True)
class FlowerSpec:
    """The server's run description (public), ``<run-dir>/flower-run.json``.

    ``insecure_seed`` (tests only) makes the server's randomness reproducible.
    """

    config: dict[str, Any]
    roster: str | None = "roster.json"
    train_timeout: float = 300.0
    phase_timeout: float = 60.0
    startup_timeout: float = 120.0
    insecure_seed: int | None = None

    def save(self, run_dir: Path) -> None:
        (run_dir / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, run_dir: Path) -> FlowerSpec:
        try:
            return cls(**json.loads((run_dir / SPEC_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            raise ParameterError(f"run-dir must hold a valid {SPEC_FILE}; got {run_dir}") from None


def _message(node: int, action: str, fields: dict[str, Any], *, ttl: float, group: str) -> Message:
    return Message(
        RecordDict({RECORD: ConfigRecord(fields)}),
        dst_node_id=node,
        message_type=f"query.{action}",
        ttl=ttl,
        group_id=group,
    )


def check_flower_config(config: FederationConfig) -> None:
    """What the flower engine does not do (refused before any process starts)."""
    if config.dropout:
        raise ParameterError(
            f"dropout must be 0 on the flower engine (its dropouts are real); got {config.dropout}"
        )
    if config.dp and config.dp_unit != "record":
        raise ParameterError(
            f"dp_unit must be 'record' on the flower engine; got {config.dp_unit!r}"
        )


def exchange(grid: Grid, messages: list[Message], *, timeout: float) -> list[Message]:
    """Grid.send_and_receive's contract (push, then pull replies until all are in or the
    deadline passes) with a 0.2 s poll instead of Flower's fixed 3 s: a protocol round
    is several exchanges, and the deadline, not the poll, is what should bound each."""
    if not (hasattr(grid, "push_messages") and hasattr(grid, "pull_messages")):
        return list(grid.send_and_receive(messages, timeout=timeout))
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        for reply in grid.pull_messages(waiting):
            replies.append(reply)
            waiting.discard(reply.metadata.reply_to_message_id)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(EXCHANGE_POLL_SECONDS)
    return replies


def _fields(reply: Message) -> ConfigRecord | None:
    if reply.has_error() or not reply.has_content():
        return None
    return reply.content.config_records.get(RECORD)


class FlowerFederation(Federation):
    """A :class:`Federation` whose clients are SuperNodes reached through a Flower ``Grid``."""

    engine = "flower"

    def __init__(
        self,
        config: FederationConfig,
        *,
        grid: Grid,
        nodes: dict[PartyId, int],
        spec: FlowerSpec,
        **kwargs: Any,
    ) -> None:
        check_flower_config(config)
        super().__init__(config, **kwargs)
        self.grid = grid
        self.nodes = dict(nodes)
        self.party_of = {node: party for party, node in nodes.items()}
        self.spec = spec
        if spec.roster and hasattr(self.scheme, "roster"):
            self.scheme.roster = Roster.load(Path(spec.roster))
        self.public = {
            "scheme": config.scheme,
            "aggregation": json.dumps(dataclasses.asdict(self.aggregation)),
        }

    def setup(self) -> SetupRecord | None:
        """The scheme's key ceremony among the key-holder SuperNodes (CKKS), if it has one."""
        if not hasattr(self.scheme, "ceremony_server"):
            return None
        ceremony: Coordinator = self.scheme.ceremony_server(rng=self.rng.fork("setup"))
        relay = _Relay(self, ceremony, 0, fresh=set(holder_parties(self.scheme)))
        relay.start()
        relay.run()
        if not ceremony.done:
            raise ProtocolAbort(f"the key ceremony must complete; {relay.error or 'it did not'}")
        report = relay.report
        return SetupRecord(
            bytes_total=int(sum(report.bytes_sent.values())),
            seconds=float(sum(report.seconds.values())),
            messages=report.messages,
        )

    # -- one round -------------------------------------------------------------

    def run_round(self, round_number: int) -> RoundOutcome:
        start = time.perf_counter()
        cohort = [self.clients[i] for i in self.select(round_number)]
        refused: list[PartyId] = []
        if self.privacy is not None:
            cohort, refused = self.privacy.admit(round_number, cohort)
        self._open_round(round_number, cohort)
        params = self.scheme.round_parameters(  # type: ignore[attr-defined]
            round_number, cohort, self.dim + 1, rng=self.rng.fork(f"round/{round_number}")
        )
        server: AggregationServer = self.scheme.server_role(params)  # type: ignore[attr-defined]
        relay = _Relay(self, server, round_number)
        blob = encode(params) if isinstance(params, WireMessage) else params.to_bytes()
        replies = relay.train(cohort, blob)
        trained = [p for p in cohort if replies.get(p, {}).get("status") == "trained"]
        said_no = [p for p in cohort if replies.get(p, {}).get("status") == "refused"]
        if isinstance(self.privacy, PrivacyPlan):  # conservative: whoever may have trained
            self.privacy.charge_remote(round_number, [p for p in cohort if p not in said_no])
        refused += said_no
        if not trained and said_no and len(said_no) == len(cohort):
            raise BudgetExceededError(
                f"round {round_number} must have a client within its budget; got none"
            )
        try:
            relay.start()
            relay.run()
        except SecAggError as exc:  # a peer made the server role abort: nothing is released
            relay.error, relay.aborted = str(exc), True
        aggregate: Aggregate | None = None
        error: str | None = relay.error
        try:
            aggregate = server.finalize() if server.done and not relay.aborted else None
        except InsufficientParticipantsError as exc:
            error = str(exc)
        if aggregate is not None and self.privacy is not None:
            error = self.privacy.accept(aggregate, round_number)
            aggregate = None if error else aggregate
        if aggregate is not None:
            load_flat(self.model, flatten(self.model) + fedavg_from_sum(aggregate.vector, self.dim))
        accuracy, loss = evaluate(self.model, self.data)
        # local training time and loss are statistics of private data: withheld under DP
        losses = [replies[p]["loss"] for p in trained if "loss" in replies[p]]
        train_seconds = (
            None
            if self.privacy is not None
            else float(sum(replies[p]["train-seconds"] for p in trained))
        )
        record = self._record(
            round_number,
            accuracy,
            loss,
            cohort,
            relay.dropped_at,
            aggregate,
            relay.report,
            error,
            train_seconds,
            float(np.mean(losses)) if losses and self.privacy is None else None,
        )
        record = dataclasses.replace(
            record,
            seconds=dict(record.seconds, total=time.perf_counter() - start),
            **self._privacy_fields(sorted(refused)),
        )
        return RoundOutcome(record=record, aggregate=aggregate, cohort=cohort)


class _Relay:
    """One round's message loop over the Grid (the Flower twin of InProcessTransport.run)."""

    def __init__(
        self,
        fed: FlowerFederation,
        server: Coordinator,
        round_number: int,
        *,
        fresh: set[PartyId] | None = None,
    ) -> None:
        self.fed = fed
        self.fresh = set(fresh or ())  # parties whose role starts anew with this session
        self.server = server
        self.round = round_number
        self.report = TrafficReport()
        self.report.windows.append(PhaseStats(server.phase.name))
        self.phase = 0
        self.dropped_at: dict[PartyId, int] = {}
        self.pending: dict[PartyId, list[bytes]] = collections.defaultdict(list)
        self.error: str | None = None
        self.aborted = False
        self.protected: dict[PartyId, bytes] = {}

    def alive(self, party: PartyId) -> bool:
        return party not in self.dropped_at

    def drop(self, party: PartyId) -> None:
        self.dropped_at.setdefault(party, self.phase)

    def _send(
        self, batch: dict[PartyId, dict[str, Any]], action: str, timeout: float
    ) -> dict[PartyId, ConfigRecord]:
        """One send_and_receive; a party without a (good) reply by ``timeout`` drops out."""
        messages = [
            _message(self.fed.nodes[p], action, f, ttl=timeout, group=str(self.round))
            for p, f in batch.items()
        ]
        answered: dict[PartyId, ConfigRecord] = {}
        for reply in exchange(self.fed.grid, messages, timeout=timeout):
            party = self.fed.party_of.get(reply.metadata.src_node_id)
            fields = _fields(reply)
            if party in batch and fields is not None:
                answered[party] = fields
        for party in batch:
            if party not in answered:
                self.drop(party)
        return answered

    def train(self, cohort: list[PartyId], params: bytes) -> dict[PartyId, dict[str, Any]]:
        """The round's first phase: every client trains and protects; nothing is routed yet
        (the ledger charges first). A malformed reply makes its client a dropout."""
        fed = self.fed
        model = flatten(fed.model).astype("<f8").tobytes()
        public = {
            **fed.public,
            "config": json.dumps(fed.config.to_dict()),
            "classes": int(fed.data.num_classes),
            # record-level DP's public N (fixes q and the steps; never a client's own count)
            "nominal-records": int(getattr(fed.privacy, "nominal_records", 0)),
            "round": self.round,
            "model": model,
            "params": params,
        }
        # no weight: each client computes its own from its policy (a server-chosen one
        # could weight the others to zero and isolate one client in the sum)
        batch = {p: dict(public) for p in cohort if p in fed.nodes}
        for p in cohort:
            if p not in batch:
                self.drop(p)
        answered = self._send(batch, "train", fed.spec.train_timeout)
        out: dict[PartyId, dict[str, Any]] = {}
        for party, fields in answered.items():
            try:
                status = field(fields, "status", str)
                if status == "trained":
                    out[party] = {"status": status}
                    if fed.privacy is None:  # diagnostics a client releases only without DP
                        out[party]["loss"] = field(fields, "loss", float)
                        out[party]["train-seconds"] = field(fields, "train-seconds", float)
                    self.report.seconds[party] += field(fields, "seconds", float)
                    self.protected[party] = field(fields, "frames", bytes)
                    continue
                out[party] = {"status": "refused" if status == "refused" else "invalid"}
            except DecodeError:
                out[party] = {"status": "invalid"}
            self.drop(party)
        return out

    def start(self) -> None:
        """Open the server role and hand it the protected inputs of the first phase."""
        self._route(self._timed(SERVER, self.server.start), SERVER)
        for party, blob in self.protected.items():
            self._accept(party, blob)

    def run(self) -> None:
        """Relay until the server role is done; advance() whenever nothing is pending."""
        while True:
            while self.pending:
                batch = {
                    p: {
                        **self.fed.public,
                        "frames": pack_frames(frames),
                        "reset": p in self.fresh,
                    }
                    for p, frames in self.pending.items()
                    if self.alive(p) and p in self.fed.nodes
                }
                for p in self.pending:
                    if p not in self.fed.nodes:
                        self.drop(p)
                self.fresh -= set(batch)
                self.pending.clear()
                for party, fields in self._send(
                    batch, "relay", self.fed.spec.phase_timeout
                ).items():
                    self.report.seconds[party] += field(fields, "seconds", float)
                    if field(fields, "refused", str):
                        self.error = f"{party} refused a frame: {field(fields, 'refused', str)}"
                    self._accept(party, field(fields, "frames", bytes))
            if self.server.done:
                break
            self.phase += 1
            if self.phase > MAX_PHASES:
                raise ProtocolAbort(f"session must finish within {MAX_PHASES} phases")
            window = PhaseStats("")
            self.report.windows.append(window)
            try:
                out = self._timed(SERVER, self.server.advance)
            except InsufficientParticipantsError as exc:
                self.error, self.aborted = str(exc), True
                break
            window.name = self.server.phase.name
            self._route(out, SERVER)
        self.report.phases = self.phase

    def _accept(self, party: PartyId, blob: bytes) -> None:
        """Frames a party returned: each must be its own, then they are routed."""
        try:
            messages = [decode(f, max_size=DEFAULT_MAX_MESSAGE_BYTES) for f in unpack_frames(blob)]
        except DecodeError:
            self.drop(party)
            return
        if any(m.sender != party for m in messages):
            self.drop(party)  # a frame claiming another sender: refuse the node
            return
        self._route(messages, party)

    def _route(self, messages: Iterable[Any], sender: PartyId) -> None:
        queue = collections.deque((m, sender) for m in messages)
        while queue:
            msg, source = queue.popleft()
            if not (self.alive(source) and self.alive(msg.recipient)):
                continue
            frame = encode(msg)
            self.report.bytes_sent[source] += len(frame)
            self.report.bytes_received[msg.recipient] += len(frame)
            self.report.windows[-1].bytes_sent[role_kind(source)] += len(frame)
            self.report.messages += 1
            if msg.recipient != SERVER:
                self.pending[msg.recipient].append(frame)
                continue
            try:
                out = self._timed(SERVER, lambda m=decode(frame): self.server.handle(m))
            except SecAggError:
                if source == SERVER:
                    raise  # not one client's doing: the round aborts, as in process
                # one client's duplicate or malformed frame: that client drops out (as a
                # spoofer does); the refused frame left the server role as it was
                self.drop(source)
                continue
            queue.extend((m, SERVER) for m in out)

    def _timed(self, party: PartyId, step: Any) -> list[Any]:
        begin = time.perf_counter()
        out = list(step())
        elapsed = time.perf_counter() - begin
        self.report.seconds[party] += elapsed
        self.report.windows[-1].seconds[role_kind(party)] += elapsed
        return out


# -- the ServerApp ------------------------------------------------------------------


def holder_parties(scheme: Scheme) -> tuple[PartyId, ...]:
    """The key holders a scheme's roster names (none for schemes without a committee)."""
    roster = getattr(scheme, "roster", None)
    return roster.of_kind("holder") if isinstance(roster, Roster) else ()


def _wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= expected or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def _hello(
    grid: Grid, nodes: list[int], config: FederationConfig, spec: FlowerSpec
) -> tuple[dict[PartyId, int], dict[PartyId, int]]:
    """Ask every node who it is; keep those that prove a roster identity.

    Security: a node must sign the server's fresh challenge with the signing key the
    out-of-band roster lists for the party it claims; public keys alone (which anyone
    can copy) do not take a party's seat. Nodes that fail are ignored (logged).
    """
    roster = Roster.load(Path(spec.roster)) if spec.roster else None
    config_json = json.dumps(config.to_dict())
    challenges = {n: os.urandom(32) for n in nodes}
    messages = [
        _message(
            n,
            "hello",
            {"config": config_json, "challenge": challenges[n]},
            ttl=spec.startup_timeout,
            group="0",
        )
        for n in nodes
    ]
    parties: dict[PartyId, int] = {}
    records: dict[PartyId, int] = {}
    for reply in exchange(grid, messages, timeout=spec.startup_timeout):
        fields = _fields(reply)
        node = reply.metadata.src_node_id
        if fields is None or node not in challenges:
            continue
        try:
            party = field(fields, "party", str)
            identity = PublicIdentity(
                party, field(fields, "signing", bytes), field(fields, "agreement", bytes)
            )
            if roster is not None:
                if roster.get(party) != identity:
                    raise IntegrityError("node identity")
                Ed25519PublicKey.from_public_bytes(identity.signing).verify(
                    field(fields, "proof", bytes), hello_transcript(party, challenges[node])
                )
            count = field(fields, "records", int)
        except (SecAggError, InvalidSignature) as exc:
            print(f"secagg: ignoring SuperNode {node}: {type(exc).__name__}", flush=True)
            continue
        if party in parties:
            raise ParameterError(f"parties must be distinct; got {party} on two nodes")
        parties[party] = node
        records[party] = count
    expected = [client_id(i) for i in range(config.clients)]
    expected += list(roster.of_kind("holder")) if roster else []  # key holders are nodes too
    missing = [p for p in expected if p not in parties]
    if missing:
        raise ParameterError(f"every client must have a SuperNode; got none for {missing}")
    return parties, records


def serve(grid: Grid, run_dir: Path) -> None:
    """The federation of ``run_dir``'s spec over ``grid``; writes the run directory."""
    from secagg_training.checkpoint import CHECKPOINT_FILE
    from secagg_training.report import write_run_dir

    spec = FlowerSpec.load(run_dir)
    config = FederationConfig(**spec.config)
    roster_size = len(Roster.load(Path(spec.roster))) if spec.roster else config.clients
    nodes = _wait_for_nodes(grid, roster_size, spec.startup_timeout)
    parties, records = _hello(grid, nodes, config, spec)
    rng: Csprng = (
        DeterministicRng.from_int(spec.insecure_seed)
        if spec.insecure_seed is not None
        else SystemRng()
    )
    federation = FlowerFederation(
        config,
        grid=grid,
        nodes=parties,
        spec=spec,
        rng=rng,
        # under DP clients do not release their record counts (uniform weights); the
        # placeholder only satisfies the simulation's bookkeeping
        sizes=[records[client_id(i)] or 1 for i in range(config.clients)],
        ledger_path=run_dir / "ledger",
        resume=(run_dir / CHECKPOINT_FILE).exists(),
    )

    def progress(record: Any) -> None:
        status = "aborted" if record.aborted else f"acc {record.accuracy:.3f}"
        print(f"secagg: round {record.round} {status}", flush=True)

    result = federation.run(on_round=progress, run_dir=run_dir)
    write_run_dir(result, run_dir)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_dir = Path(str(context.run_config["run-dir"]))
    try:
        serve(grid, run_dir)
    except BaseException as exc:
        (run_dir / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n")
        raise
