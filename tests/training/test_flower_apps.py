"""The Flower ServerApp/ClientApp logic without processes: Flower's Grid interface served
by the real ``ClientApp`` in this process, one ``Context.state`` per node kept between
messages and a fresh ``Context`` per message — what a SuperNode does (each message in a
new process). Parity with the in-process engine is then exact, and attacks are cheap.
"""

import dataclasses
import json

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from tiny_dp import tiny_dp

from secagg.errors import DecodeError, IntegrityError, ParameterError
from secagg.identity import PartyKeys
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode
from secagg_privacy.ledger import PrivacyLedger
from secagg_training.federation import Federation, FederationConfig
from secagg_training.flower.client_app import STATE
from secagg_training.flower.client_app import app as client_app
from secagg_training.flower.codec import NodeJournal, pack_frames, seal, unpack_frames, unseal
from secagg_training.flower.local import ensure_keys, party_keys_path, write_policy
from secagg_training.flower.policy import NodePolicy
from secagg_training.flower.server_app import FlowerFederation, FlowerSpec

SEED = 3
SCHEMES = ["plain", "masking", "ckks"]
CONFIG = tiny_dp(rounds=2, seed=2)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Flower stamps messages with the running task's ids; here there is no SuperLink."""
    for name, value in (("_run_id", 1), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class InProcessGrid:
    """Flower's Grid, delivering to the real ClientApp: state per node, Context per message."""

    def __init__(self, run_dir, parties):
        self.config = {
            node: {
                "party": party,
                "key-file": str(party_keys_path(run_dir, party)),
                "state-dir": str(run_dir / "nodes" / party.replace("/", "_")),
                "data": "digits",
                "roster": str(run_dir / "roster.json"),
                "policy": str(run_dir / "policy.json"),
                "insecure-seed": SEED,
            }
            for node, party in enumerate(parties, start=101)
        }
        self.states = {node: RecordDict() for node in self.config}
        self.dead = set()
        self.silent_after_train = set()  # answer the train request, then never again
        self.tamper = None  # (reply fields) -> None, to play a deviating client
        self.rewrite = None  # (party, request fields) -> None, to play a deviating server
        self.errors = []

    def get_node_ids(self):
        return list(self.config)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node in self.dead:
                continue
            if node in self.silent_after_train and message.metadata.message_type != "query.train":
                continue
            if self.rewrite is not None:
                self.rewrite(
                    self.config[node]["party"],
                    message.metadata.message_type,
                    message.content.config_records["secagg"],
                )
            context = Context(1, node, self.config[node], self.states[node], {})
            try:
                reply = client_app(message, context)
            except Exception as exc:  # what a SuperNode returns when the ClientApp raises
                reply = Message(Error(code=0, reason=str(exc)), reply_to=message)
                self.errors.append(str(exc))
            if self.tamper is not None:
                self.tamper(self.config[node]["party"], reply)
            replies.append(reply)
        return replies


def _hello(grid, tmp_path, config):
    from secagg_training.flower.server_app import _hello as hello

    spec = FlowerSpec(config=config.to_dict(), roster=str(tmp_path / "roster.json"))
    return hello(grid, grid.get_node_ids(), config, spec)


def _federation(tmp_path, scheme, grid=None, **overrides):
    config = FederationConfig(scheme=scheme, **dict(CONFIG, committee=3, **overrides))
    parties = [client_id(i) for i in range(config.clients)]
    if scheme == "ckks":  # the committee's key holders are SuperNodes too
        parties += [f"holder/{j}" for j in range(config.committee)]
    ensure_keys(tmp_path, parties)
    write_policy(tmp_path, config)
    grid = grid or InProcessGrid(tmp_path, parties)
    nodes = {grid.config[n]["party"]: n for n in grid.config}
    federation = FlowerFederation(
        config,
        grid=grid,
        nodes=nodes,
        spec=FlowerSpec(
            config=config.to_dict(), roster=str(tmp_path / "roster.json"), insecure_seed=SEED
        ),
        rng=DeterministicRng.from_int(SEED),
        ledger_path=tmp_path / "ledger",
    )
    return config, grid, federation


@pytest.mark.parametrize("scheme", SCHEMES)
def test_flower_apps_reproduce_the_in_process_engine_exactly(tmp_path, scheme):
    config, _, federation = _federation(tmp_path, scheme)
    ours = federation.run(run_dir=tmp_path)
    reference = Federation(config, rng=DeterministicRng.from_int(SEED)).run()
    assert ours.engine == "flower"
    for a, b in zip(ours.rounds, reference.rounds, strict=True):
        # under DP no client releases its training loss or time (as in process)
        assert a.train_loss is None and a.seconds["train"] is None
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-9)
        assert a.participants == b.participants
        assert a.bytes_up_per_client == b.bytes_up_per_client
        assert a.bytes_down_per_client == b.bytes_down_per_client


def test_a_node_keeps_only_a_sealed_journal_in_flower_state(tmp_path):
    _, grid, federation = _federation(tmp_path, "plain")
    federation.run_round(1)
    for node, state in grid.states.items():
        record = state.config_records[STATE]
        party = grid.config[node]["party"]
        keys = PartyKeys.load(grid.config[node]["key-file"])
        journal = unseal(record["journal"], keys, "1")
        assert journal.vector.size == federation.dim + 1
        # the update is in the journal, but never readable in Flower's state record
        assert journal.vector.tobytes()[:64] not in record["journal"]
        with pytest.raises(IntegrityError):
            unseal(record["journal"], keys, "2")  # bound to the Flower run
        other = PartyKeys.load(grid.config[node + 1 if node < 103 else 101]["key-file"])
        with pytest.raises(IntegrityError):
            unseal(record["journal"], other, "1")  # and to this party's own key
        assert set(json.loads(record["public"])) == {"scheme", "aggregation"}
        assert keys.party == party


def test_tampered_journal_is_refused_opaquely(tmp_path):
    ensure_keys(tmp_path, ["client/0"])
    keys = PartyKeys.load(party_keys_path(tmp_path, "client/0"))
    journal = NodeJournal(
        session=b"",
        round=1,
        sender="client/0",
        recipient="client/0",
        params=b"p",
        seed=bytes(32),
        vector=np.ones(3),
        inbound=(),
    )
    blob = bytearray(seal(journal, keys, "7"))
    assert unseal(bytes(blob), keys, "7").vector.tolist() == [1.0, 1.0, 1.0]
    blob[-1] ^= 1
    with pytest.raises(IntegrityError, match="^sealed node state failed verification$"):
        unseal(bytes(blob), keys, "7")


def test_frame_lists_are_length_checked():
    frames = [b"abc", b"", b"\x00" * 5]
    assert unpack_frames(pack_frames(frames)) == frames
    with pytest.raises(DecodeError):
        unpack_frames(pack_frames(frames)[:-1])
    with pytest.raises(DecodeError):
        unpack_frames(b"\xff\xff\xff\x7f" + b"x")


def test_a_client_spoofing_another_sender_is_dropped_and_cannot_inject(tmp_path):
    """Threat: a malicious client returns a frame that claims to come from another client
    (to submit twice, or to replace that client's input). The server relays only frames
    whose sender is the node that returned them; the spoofer drops out of the round."""
    config = FederationConfig(scheme="plain", **CONFIG)
    parties = [client_id(i) for i in range(config.clients)]
    ensure_keys(tmp_path, parties)
    grid = InProcessGrid(tmp_path, parties)

    def spoof(party, reply):
        if party != "client/1" or "frames" not in reply.content.config_records["secagg"]:
            return
        fields = reply.content.config_records["secagg"]
        forged = [
            encode(dataclasses.replace(decode(f), sender="client/0"))
            for f in unpack_frames(fields["frames"])
        ]
        fields["frames"] = pack_frames(forged)

    grid.tamper = spoof
    _, _, federation = _federation(tmp_path, "plain", grid)
    record = federation.run_round(1).record
    assert record.participants == ["client/0", "client/2"]
    assert record.dropped == ["client/1"]
    assert not record.aborted


def test_a_dead_node_is_a_dropout_and_still_charged(tmp_path):
    config = FederationConfig(scheme="plain", **CONFIG)
    grid = InProcessGrid(tmp_path, [client_id(i) for i in range(config.clients)])
    grid.dead.add(103)  # client/2 never answers
    _, _, federation = _federation(tmp_path, "plain", grid)
    record = federation.run_round(1).record
    assert record.dropped == ["client/2"] and record.dropped_at == {"client/2": 0}
    assert record.participants == ["client/0", "client/1"]
    assert federation.privacy.charged("client/2", 1)  # it may have trained: conservative
    federation.close()


def test_a_server_replaying_a_round_to_fresh_node_state_gets_no_second_submission(tmp_path):
    """Threat: Flower keeps a node's state per run, so a server can start a new run (fresh
    state) and replay a finished round's parameters to obtain a second protected input
    (or, in masking, a second set of reveals) for the same session. Each node records every
    session it served on its own disk and refuses to serve one again."""
    no_dp = {k: v for k, v in CONFIG.items() if k not in ("epsilon", "delta")}
    config = FederationConfig(scheme="plain", **dict(no_dp, dp=False))
    parties = [client_id(i) for i in range(config.clients)]
    ensure_keys(tmp_path, parties)
    grid = InProcessGrid(tmp_path, parties)
    _, _, federation = _federation(tmp_path, "plain", grid, dp=False, epsilon=None, delta=None)
    sent = []
    original = federation.scheme.round_parameters

    def replaying(*args, **kwargs):
        sent.append(sent[0] if sent else original(*args, **kwargs))
        return sent[-1]

    federation.scheme.round_parameters = replaying
    assert federation.run_round(1).record.participants == parties
    grid.states = {node: RecordDict() for node in grid.states}  # a new Flower run
    replay = federation.run_round(1).record
    assert replay.aborted and replay.participants == []
    assert len(grid.errors) == 3 and all("session must be new" in e for e in grid.errors)


def test_a_node_must_prove_its_roster_identity_to_take_a_seat(tmp_path):
    """Threat: a rogue SuperNode announces client/1's public keys (they are public) to take
    its seat. Without client/1's signing key it cannot sign the server's challenge: it is
    ignored, and the run refuses to start without the real client/1."""
    config = FederationConfig(scheme="plain", **CONFIG)
    parties = [client_id(i) for i in range(config.clients)]
    ensure_keys(tmp_path, parties)
    write_policy(tmp_path, config)
    grid = InProcessGrid(tmp_path, parties)
    nodes, records = _hello(grid, tmp_path, config)
    assert nodes == {p: 101 + i for i, p in enumerate(parties)}
    assert all(records[p] == 0 for p in parties)  # under DP a client keeps its count

    def forge(party, reply):
        if party == "client/1":
            fields = reply.content.config_records["secagg"]
            fields["proof"] = bytes(64)  # copies the public keys, cannot sign

    grid.tamper = forge
    with pytest.raises(ParameterError, match=r"none for \['client/1'\]"):
        _hello(grid, tmp_path, config)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_node_lost_after_its_protected_input_is_a_dropout_the_round_survives(tmp_path, scheme):
    """A SuperNode that dies after submitting (it answers the training request, then
    nothing): the round completes with the survivors, the lost client's input included
    where the scheme can recover it, and the released sum matches the in-process run."""
    config, grid, federation = _federation(tmp_path, scheme)
    grid.silent_after_train.add(103)  # client/2
    federation.setup()  # the key ceremony, for schemes with one
    record = federation.run_round(1).record
    assert not record.aborted, record.error
    assert {"client/0", "client/1"} <= set(record.participants)
    federation.close()


def test_a_server_substituting_an_identity_key_in_round_parameters_is_refused(tmp_path):
    """Threat: the server broadcasts masking round parameters naming its own key as
    client/0's identity, to impersonate client/0 to its peers. Each client checks the
    parameters against its own roster copy (the PKI assumption) and refuses the round."""
    _, grid, federation = _federation(tmp_path, "masking")
    original = federation.scheme.round_parameters
    impostor = PartyKeys.generate("client/0", rng=DeterministicRng.from_int(666)).public

    def substituting(*args, **kwargs):
        params = original(*args, **kwargs)
        keys = dict(params.identities, **{"client/0": impostor.signing})
        return dataclasses.replace(params, identities=keys)

    federation.scheme.round_parameters = substituting
    record = federation.run_round(1).record
    assert record.aborted and record.participants == []
    assert len(grid.errors) == 3
    assert all(e == "round parameters' identity keys failed verification" for e in grid.errors)
    federation.close()


NO_DP = dict(dp=False, epsilon=None, delta=None)


def _own_ledger_entries(tmp_path, party):
    path = tmp_path / "nodes" / party.replace("/", "_") / f"{party.replace('/', '_')}.ledger"
    if not path.exists():
        return []
    with PrivacyLedger.open(path) as ledger:
        return list(ledger.entries())


def _rewriting_config(change):
    def rewrite(party, kind, fields):
        if kind == "query.train":
            fields["config"] = json.dumps(dict(json.loads(fields["config"]), **change))

    return rewrite


@pytest.mark.parametrize(
    "change",
    [
        dict(dp=False, epsilon=None, delta=None),  # DP off
        dict(epsilon=400.0),  # a weaker guarantee
        dict(rounds=50),  # more rounds at the same ε per round
        dict(noise_multiplier=0.01),  # almost no noise
        dict(max_grad_norm=100.0),  # a larger sensitivity
    ],
    ids=["dp-off", "epsilon", "rounds", "noise", "clip"],
)
def test_a_server_weakening_the_dp_policy_is_refused_by_every_node(tmp_path, change):
    """Threat: the server rewrites the train message's config to turn DP off or weaken it
    (ε, rounds, σ, clip) and so receive an update trained without the agreed guarantee.
    Each node checks the config against its own policy file and refuses: nobody trains,
    the round releases nothing and no client's own ledger records a charge."""
    _, grid, federation = _federation(tmp_path, "plain")
    grid.rewrite = _rewriting_config(change)
    record = federation.run_round(1).record
    assert record.aborted and record.participants == []
    assert len(grid.errors) == 3
    assert all("must be this node's policy value" in e for e in grid.errors)
    assert all(_own_ledger_entries(tmp_path, client_id(i)) == [] for i in range(3))
    federation.close()


def test_a_server_changing_nominal_records_is_refused(tmp_path):
    _, grid, federation = _federation(tmp_path, "plain")

    def rewrite(party, kind, fields):
        if kind == "query.train":
            fields["nominal-records"] = 100000  # q → 0: a much smaller charged ε

    grid.rewrite = rewrite
    record = federation.run_round(1).record
    assert record.aborted and len(grid.errors) == 3
    assert all("nominal_records must be" in e for e in grid.errors)
    federation.close()


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (dict(threshold=1), "threshold"),
        (dict(max_clients=2), "max_clients"),
        (dict(graph="sparse"), "graph"),
        (dict(min_honest=1), "min_honest"),
        (dict(corrupt_holders=1), "corrupt_holders"),
    ],
)
def test_a_server_changing_the_aggregation_settings_is_refused(tmp_path, change, name):
    """Threat: the server lowers the masking threshold (or the cohort size, or the graph)
    to unmask a sum of fewer clients than agreed. The aggregation settings come from the
    server's message but must equal the node's own policy."""
    _, grid, federation = _federation(tmp_path, "masking", **NO_DP)

    def rewrite(party, kind, fields):
        if kind == "query.train":
            aggregation = dict(json.loads(fields["aggregation"]), **change)
            fields["aggregation"] = json.dumps(aggregation)

    grid.rewrite = rewrite
    record = federation.run_round(1).record
    assert record.aborted and record.participants == []
    assert len(grid.errors) == 3 and all(f"{name} must be" in e for e in grid.errors)


def test_a_node_without_a_policy_or_dp_opt_out_does_not_train(tmp_path):
    """No policy file, no training; "no DP" must be said explicitly; DP needs a budget."""
    _, grid, federation = _federation(tmp_path, "plain")
    for node in grid.config.values():
        del node["policy"]
    record = federation.run_round(1).record
    assert record.aborted and all("must name a policy file" in e for e in grid.errors)
    document = json.loads((tmp_path / "policy.json").read_text())
    with pytest.raises(ParameterError, match="policy must set dp"):
        NodePolicy.from_dict({k: v for k, v in document.items() if k != "dp"})
    with pytest.raises(ParameterError, match="client_budget must be a positive"):
        NodePolicy.from_dict({k: v for k, v in document.items() if k != "client_budget"})
    with pytest.raises(ParameterError, match="weight_unit must be positive"):
        NodePolicy.from_dict(dict(document, dp=False))


def test_a_server_weighting_one_client_cannot_isolate_it(tmp_path):
    """Threat (no DP, masking): the server gives client/0 FedAvg weight 1 and the others
    1e-9, so that the secure sum is client/0's update. The server sends no weight; a
    weight it adds is ignored: each client weighs itself records / the policy's unit."""
    _, grid, federation = _federation(tmp_path, "masking", **NO_DP)

    def rewrite(party, kind, fields):
        if kind == "query.train":
            fields["weight"] = 1.0 if party == "client/0" else 1e-9

    grid.rewrite = rewrite
    outcome = federation.run_round(1)
    assert not outcome.record.aborted, outcome.record.error
    # the last coordinate sums the weights: records / mean record count, i.e. 3 in all
    assert outcome.aggregate.vector[-1] == pytest.approx(float(np.sum(federation.weights)))
    assert outcome.aggregate.vector[-1] == pytest.approx(3.0)


@pytest.mark.parametrize("dp", [True, False], ids=["dp", "no-dp"])
def test_a_server_rerunning_a_round_with_another_cohort_is_refused(tmp_path, dp):
    """Threat: the server runs round 1 with {0, 1, 2}, then round 1 again (fresh session,
    same model) with {1, 2}: the difference of the two sums is client/0's update. Each
    client keeps on disk the highest round it released and refuses any round ≤ it."""
    _, grid, federation = _federation(tmp_path, "masking", **({} if dp else NO_DP))
    first = federation.run_round(1)
    assert first.record.participants == [client_id(i) for i in range(3)]
    federation.select = lambda r: [1, 2]
    federation.rng = DeterministicRng.from_int(999)  # a fresh session id
    federation._open_round = lambda *a, **k: None  # a deviating server skips its bookkeeping
    if dp:  # and its own privacy ledger
        federation.privacy.admit = lambda r, cohort: (cohort, [])
        federation.privacy.charge_remote = lambda *a, **k: None
    grid.states = {node: RecordDict() for node in grid.states}  # even in a new Flower run
    second = federation.run_round(1).record
    assert second.aborted and second.participants == []
    assert len(grid.errors) == 2 and all("round must be after 1" in e for e in grid.errors)
    released = tmp_path / "nodes" / "client_1" / "client_1.released"
    assert released.read_text() == "1" and released.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "nodes" / "client_1").stat().st_mode & 0o777 == 0o700
    sessions = tmp_path / "nodes" / "client_1" / "client_1.sessions"
    assert sessions.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("scheme", ["plain", "masking"])
def test_one_clients_duplicate_frame_drops_that_client_not_the_round(tmp_path, scheme):
    """Threat: a malicious client sends its protected input twice (or a frame the server
    role refuses) so that the round aborts after every client was charged. The error is
    attributable to that sender: it drops out, the round completes with the others."""
    _, grid, federation = _federation(tmp_path, scheme)

    def duplicate(party, reply):
        fields = reply.content.config_records["secagg"] if reply.has_content() else {}
        if party == "client/1" and "status" in fields and "frames" in fields:
            frames = unpack_frames(fields["frames"])
            fields["frames"] = pack_frames(frames + frames)

    grid.tamper = duplicate
    record = federation.run_round(1).record
    assert not record.aborted, record.error
    assert "client/1" in record.dropped
    assert {"client/0", "client/2"} <= set(record.participants)
    federation.close()
