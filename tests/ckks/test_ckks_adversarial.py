"""Attacks on threshold CKKS, each played through the real roles and the real wire codec.

Every test is named after the threat it covers. Attacking servers are subclasses of
the real server role that recompute everything they control; malicious clients are
subclasses (or tamper hooks) that re-sign what they change with their own key.
"""

import dataclasses
import itertools

import numpy as np
import pytest
from ckks_support import (
    drive,
    exact_sum,
    inputs_for,
    keep_members,
    make_federation,
    open_round,
    resign,
)

from secagg.ckks import residues as rns
from secagg.ckks import transcript
from secagg.ckks.aggregation import CkksAggregator, CkksClient, check_round_params
from secagg.ckks.messages import CkksSubmission, ShareComplaint, ShareRequest, ShareSum
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ShareReuseError,
    UnexpectedPhaseError,
)
from secagg.identity import simulated_identities
from secagg.rand import Csprng, DeterministicRng
from secagg.wire import decode, encode

DIM = 300


def _run(scheme, n=8, seed=1, *, server_cls=None, tamper=None, silent=(), record=None):
    session = open_round(scheme, n, DIM, seed, server_cls=server_cls)
    inputs = inputs_for(session.clients, DIM, seed)
    drive(session, inputs=inputs, tamper=tamper, silent=silent, record=record)
    return session, inputs


def _submission_tamper(session, party, change):
    """A malicious ``party``: rewrites its own submission and signs it again."""

    def tamper(msg):
        if isinstance(msg, CkksSubmission) and msg.sender == party:
            return resign(session.clients[party], change(msg))
        return msg

    return tamper


# -- malicious clients ------------------------------------------------------------------


def test_malicious_client_malformed_ciphertext_excluded_and_named(federation):
    session = open_round(federation, 8, DIM, 2)
    inputs = inputs_for(session.clients, DIM, 2)
    bad = "client/3"
    drive(
        session,
        inputs=inputs,
        tamper=_submission_tamper(
            session, bad, lambda m: dataclasses.replace(m, residues=m.residues[:-6])
        ),
    )
    agg = session.coordinator.finalize()
    assert "DecodeError" in session.coordinator.rejected[bad]
    assert bad not in agg.contributors and bad in agg.dropped
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_malicious_client_out_of_range_residues_excluded(federation):
    session = open_round(federation, 8, DIM, 3)
    inputs = inputs_for(session.clients, DIM, 3)
    q = federation.engine.data_primes[0]

    def to_q(m):
        arr = np.full((1, len(m.residues) // 6), q, dtype=np.uint64)  # every residue = q_0
        return dataclasses.replace(m, residues=rns.pack(arr, [q]))

    drive(session, inputs=inputs, tamper=_submission_tamper(session, "client/1", to_q))
    agg = session.coordinator.finalize()
    assert "below their prime" in session.coordinator.rejected["client/1"]
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_malicious_client_last_residue_out_of_range_never_reaches_the_sum(federation, monkeypatch):
    """The server sums blocks as it validates them: a bad residue in the last block
    (every earlier block already added) must leave the others' sum exactly as it was."""
    monkeypatch.setattr(rns, "_BLOCK", 64)  # many blocks even at this small size
    session = open_round(federation, 8, DIM, 5)
    inputs = inputs_for(session.clients, DIM, 5)
    q = federation.engine.data_primes[0]

    def last_to_q(m):
        arr = rns.unpack_into(m.residues, [q], len(m.residues) // 6)
        arr[0, -1] = q
        return dataclasses.replace(m, residues=rns.pack(arr, [q]))

    drive(session, inputs=inputs, tamper=_submission_tamper(session, "client/4", last_to_q))
    agg = session.coordinator.finalize()
    assert "DecodeError" in session.coordinator.rejected["client/4"]
    assert "client/4" not in agg.contributors and len(agg.contributors) == 7
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_malicious_client_forged_signature_excluded(federation):
    session = open_round(federation, 8, DIM, 4)
    inputs = inputs_for(session.clients, DIM, 4)

    def forge(msg):  # client/2's upload signed by nobody valid (e.g. another's key)
        if isinstance(msg, CkksSubmission) and msg.sender == "client/2":
            return dataclasses.replace(msg, signature=bytes(64))
        return msg

    drive(session, inputs=inputs, tamper=forge)
    agg = session.coordinator.finalize()
    assert "IntegrityError" in session.coordinator.rejected["client/2"]
    assert "client/2" not in agg.contributors


class _InconsistentDealer(CkksClient):
    """A malicious client whose shares to ``bad_points`` holders are off its polynomial."""

    bad_points: tuple[int, ...] = ()

    def _shares(self, rows):
        shares = super()._shares(rows)
        for point in self.bad_points:
            shares[point - 1] = (shares[point - 1] + np.uint64(1)) % np.uint64(
                self._engine.data_primes[0]
            )
        return shares


def _with_dealer(scheme, session, party, bad_points):
    honest = session.clients[party]
    dealer = _InconsistentDealer.__new__(_InconsistentDealer)
    dealer.__dict__.update(honest.__dict__)
    dealer.bad_points = bad_points
    session.clients[party] = dealer
    session.participants[party] = dealer


def test_malicious_client_inconsistent_share_caught_and_outvoted(federation):
    session = open_round(federation, 8, DIM, 5)
    _with_dealer(federation, session, "client/0", (2,))
    inputs = inputs_for(session.clients, DIM, 5)
    drive(session, inputs=inputs)
    agg = session.coordinator.finalize()
    # four of five answers agree on one key: the off-polynomial answer is caught, not used
    assert "holder/1" in session.coordinator.faulty_holders
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_malicious_client_inconsistent_shares_refused_when_no_majority(federation):
    session = open_round(federation, 8, DIM, 6)
    _with_dealer(federation, session, "client/0", (1, 2))
    inputs = inputs_for(session.clients, DIM, 6)
    with pytest.raises(InconsistentViewError, match="agree on one key"):
        drive(session, inputs=inputs)
    with pytest.raises(UnexpectedPhaseError):
        session.coordinator.finalize()  # nothing was released


def test_malicious_client_bad_envelope_named_by_holder_round_completes(federation):
    session = open_round(federation, 8, DIM, 7)
    inputs = inputs_for(session.clients, DIM, 7)

    def garble(m):  # its envelope to holder/4 does not open; correctly signed by the client
        envs = list(m.envelopes)
        envs[4] = bytes(len(envs[4]))
        return dataclasses.replace(m, envelopes=tuple(envs))

    drive(session, inputs=inputs, tamper=_submission_tamper(session, "client/5", garble))
    server = session.coordinator
    assert server.accused == {"client/5": {"holder/4"}}  # the server learns which client
    agg = server.finalize()  # four holders answered: the round still opens
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_malicious_client_ciphertext_cannot_reach_any_key(federation):
    """The old attack (a constant L added to c1 made the release carry L·s) has no target.

    Holders never see a ciphertext: their answers depend only on the envelopes, so a
    client that adds L = 2^40 to its c0 spoils the sum and changes nothing else.
    """
    answers = {}
    outcomes = {}
    for label, shift in (("honest", 0), ("attack", 1 << 40)):
        session = open_round(federation, 6, DIM, 8, round_index=1000 + shift % 7)
        inputs = inputs_for(session.clients, DIM, 8)
        q = federation.engine.data_primes[0]

        def add_l(m, shift=shift, q=q):
            c0 = rns.unpack_into(m.residues, [q], len(m.residues) // 6)
            c0 = (c0 + np.uint64(shift)) % np.uint64(q)
            return dataclasses.replace(m, residues=rns.pack(c0, [q]))

        record = []
        drive(
            session,
            inputs=inputs,
            tamper=_submission_tamper(session, "client/0", add_l),
            record=record,
        )
        answers[label] = sorted(
            decode(f).residues
            for r, f in record
            if r == "server" and isinstance(decode(f), ShareSum)
        )
        outcomes[label] = (session.coordinator.finalize(), inputs)
    assert answers["honest"] == answers["attack"]  # identical share sums: no key touched c0
    agg, inputs = outcomes["attack"]
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() > 1.0  # only spoiled


# -- malicious server ---------------------------------------------------------------------


def _server_rewriting(rewrite):
    """An attacking server: the real role, its share requests rewritten by ``rewrite``.

    It recomputes every digest it controls (its own request digest and accepted
    set), as a real malicious server would; only holders' own checks stand in its way.
    """

    class Attacker(CkksAggregator):
        kept = {}

        def _accept(self, msg):
            self.kept[msg.sender] = msg.residues  # a server sees every upload
            super()._accept(msg)

        def _request_shares(self):
            out = [rewrite(self, r) for r in super()._request_shares()]
            req = out[0]
            self._accepted = req.accepted
            self._request_digest = transcript.request_digest(
                req.round_params, req.accepted, req.ct_digests, req.envelope_digests
            )
            return out

    return Attacker


def test_server_forging_a_receipt_refused(federation):
    def forge(server, req):
        digests = (bytes(32),) + req.ct_digests[1:]  # claims another ciphertext for client 0
        return dataclasses.replace(req, ct_digests=digests)

    with pytest.raises(IntegrityError):
        _run(federation, seed=10, server_cls=_server_rewriting(forge))


def test_server_reordering_receipts_refused(federation):
    def swap(server, req):
        sig = list(req.signatures)
        sig[0], sig[1] = sig[1], sig[0]
        return dataclasses.replace(req, signatures=tuple(sig))

    with pytest.raises(IntegrityError):
        _run(federation, seed=11, server_cls=_server_rewriting(swap))


def test_server_dropping_receipts_below_floor_refused(federation):
    drop = _server_rewriting(lambda server, req: keep_members(req, range(3)))  # 3 of 8 < ⌈8/2⌉
    with pytest.raises(InconsistentViewError, match="floor"):
        _run(federation, seed=12, server_cls=drop)


def test_server_dropping_a_receipt_above_floor_never_opens_the_victim(federation):
    """Dropping the victim's receipt opens K_{S−v}: the victim's c0 stays under k_v."""
    attacker = _server_rewriting(lambda server, req: keep_members(req, range(1, 8)))
    session, inputs = _run(federation, seed=13, server_cls=attacker)
    server = session.coordinator
    eng = federation.engine
    agg = server.finalize()  # Σ of all 8 c0s under the key of 7: garbage, not a sum
    assert agg.contributors == tuple(f"client/{i}" for i in range(1, 8))
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() > 1.0
    assert np.abs(agg.vector - exact_sum(inputs, inputs)).max() > 1.0
    committee = federation.roster.of_kind("holder")
    holders = list(server._answers)[:3]
    key = rns.interpolate(
        np.stack([server._answers[h] for h in holders]),
        [committee.index(h) + 1 for h in holders],
        eng.data_primes,
    )
    count = eng.ciphertext_count(DIM)
    victim = rns.unpack_into(server.kept["client/0"], eng.data_primes, count * eng.degree)
    alone = eng.seal.decrypt_with(
        key,
        victim.reshape(eng.k, count, eng.degree),
        eng.crs(server.round_params.crs_seed, count),
        eng.params.scale,
    )[:DIM]
    assert np.abs(alone - inputs["client/0"]).max() > 1.0


def test_server_asking_twice_refused(federation):
    session = open_round(federation, 8, DIM, 14)
    inputs = inputs_for(session.clients, DIM, 14)
    record = []
    drive(session, inputs=inputs, record=record)
    request = next(
        decode(f) for r, f in record if r == "holder/0" and isinstance(decode(f), ShareRequest)
    )
    holder = federation.holders["holder/0"]
    with pytest.raises(ShareReuseError):
        holder.handle(request)
    smaller = dataclasses.replace(
        request,
        accepted=request.accepted[:-1],
        ct_digests=request.ct_digests[:-1],
        ephemerals=request.ephemerals[:-1],
        envelope_digests=request.envelope_digests[:-5],
        signatures=request.signatures[:-1],
        envelopes=request.envelopes[:-1],
    )
    with pytest.raises(ShareReuseError):  # another set in the same round: also refused
        holder.handle(smaller)
    with pytest.raises(ShareReuseError):  # the same round index under a fresh session id
        holder.handle(dataclasses.replace(request, session=b"\x01" * 16))


def test_server_asking_below_floor_isolating_a_victim_refused(federation):
    """Server + one colluding client ask to open {victim, colluder}: below the floor."""
    isolate = _server_rewriting(lambda server, req: keep_members(req, [0, 1]))
    with pytest.raises(InconsistentViewError, match="floor"):
        _run(federation, seed=15, server_cls=isolate)


def test_server_shrinking_the_cohort_to_lower_the_floor_refused(federation):
    """The floor is a fraction of the cohort every client signed, not of what the server says."""

    def shrink(server, req):
        params = decode(req.round_params)
        fake = dataclasses.replace(params, cohort=params.cohort[:4])  # floor max(3, 2) = 3
        return dataclasses.replace(keep_members(req, [0, 1, 2]), round_params=encode(fake))

    with pytest.raises(IntegrityError):  # the clients' receipts name the real parameters
        _run(federation, seed=16, server_cls=_server_rewriting(shrink))


def test_min_honest_floor_refuses_small_sums():
    """Client-level DP: the protocol itself refuses a sum of fewer than h contributors."""
    scheme = make_federation(max_clients=8, min_honest=6, seed=3)
    assert scheme.params.floor(8) == 6
    session = open_round(scheme, 8, DIM, 17)
    inputs = inputs_for(session.clients, DIM, 17)
    silent = ("client/0", "client/1", "client/2")  # 5 of 8 left: above ½·8, below h = 6
    with pytest.raises(InsufficientParticipantsError, match="floor 6"):
        drive(session, inputs=inputs, silent=silent, silent_from=0)
    # a server that skips its own check is refused by the holders, before any release
    ask_anyway = _server_rewriting(lambda server, req: keep_members(req, range(5)))
    session = open_round(scheme, 8, DIM, 18, server_cls=ask_anyway)
    with pytest.raises(InconsistentViewError, match="floor 6"):
        drive(session, inputs=inputs_for(session.clients, DIM, 18))


def test_server_substituting_the_crs_refused_by_clients_and_holders(federation):
    session = open_round(federation, 6, DIM, 19)
    params = session.coordinator.round_params
    forged = dataclasses.replace(params, crs_seed=bytes(32))  # a seed the server chose
    keys = federation._keys["client/0"]
    with pytest.raises(IntegrityError):
        federation.client_role("client/0", forged, keys, rng=DeterministicRng.from_int(1))

    def swap_crs(server, req):
        own = dataclasses.replace(server.round_params, crs_seed=bytes(32))
        return dataclasses.replace(req, round_params=encode(own))

    with pytest.raises(IntegrityError):
        _run(federation, seed=20, server_cls=_server_rewriting(swap_crs))


def test_server_substituting_the_holder_roster_refused_by_clients(federation):
    """A server that runs its own committee (its own keys) cannot make clients encrypt to it."""
    session = open_round(federation, 6, DIM, 21)
    params = session.coordinator.round_params
    fake_keys, fake_roster = simulated_identities(
        list(federation.roster.of_kind("holder")) + list(federation.roster.of_kind("client")),
        rng=DeterministicRng.from_int(99),
    )
    from secagg import channels

    payload = transcript.crs_payload(
        params.federation, fake_roster.digest, params.crs_seed, params.params_digest
    )
    fake_endorsements = tuple(
        channels.sign(fake_keys[h].signing, transcript.CRS_PURPOSE, payload)
        for h in fake_roster.of_kind("holder")
    )
    keys = federation._keys["client/0"]
    for forged in (
        dataclasses.replace(
            params, roster_digest=fake_roster.digest, endorsements=fake_endorsements
        ),
        dataclasses.replace(params, endorsements=fake_endorsements),  # keeps the real digest
    ):
        with pytest.raises(IntegrityError):
            check_round_params(federation.engine, federation.roster, forged)
        with pytest.raises(IntegrityError):
            federation.client_role("client/0", forged, keys, rng=DeterministicRng.from_int(1))


def test_server_empty_or_zero_request_refused_without_spending_the_round(federation):
    session = open_round(federation, 8, DIM, 22)
    inputs = inputs_for(session.clients, DIM, 22)
    captured = {}

    def hold_back(msg):  # the server's real request is kept aside; junk goes first
        if isinstance(msg, ShareRequest) and msg.recipient == "holder/2":
            captured["req"] = msg
            return None
        return msg

    drive(session, inputs=inputs, tamper=hold_back)
    real = captured["req"]
    holder = federation.holders["holder/2"]
    empty = dataclasses.replace(
        real,
        accepted=(),
        ct_digests=(),
        ephemerals=(),
        envelope_digests=(),
        signatures=(),
        envelopes=(),
    )
    with pytest.raises(InconsistentViewError, match="floor"):
        holder.handle(decode(encode(empty)))
    zero = dataclasses.replace(
        real,
        ct_digests=tuple(bytes(32) for _ in real.ct_digests),
        ephemerals=tuple(bytes(32) for _ in real.ephemerals),
        signatures=tuple(bytes(64) for _ in real.signatures),
        envelopes=tuple(bytes(len(e)) for e in real.envelopes),
    )
    with pytest.raises(IntegrityError):
        holder.handle(decode(encode(zero)))
    with pytest.raises(DecodeError):
        holder.handle(dataclasses.replace(real, round_params=b"\x00" * 40))
    # nothing was spent: the genuine request is still answered
    (answer,) = holder.handle(decode(encode(real)))
    assert isinstance(answer, ShareSum)


def test_server_replaying_another_rounds_params_refused(federation):
    s1 = open_round(federation, 6, DIM, 23)
    s2 = open_round(federation, 6, DIM, 24)
    other = encode(s1.coordinator.round_params)

    def replay(server, req):
        return dataclasses.replace(req, round_params=other)

    session = open_round(federation, 6, DIM, 25, server_cls=_server_rewriting(replay))
    with pytest.raises(InconsistentViewError):
        drive(session, inputs=inputs_for(session.clients, DIM, 25))
    del s2


# -- t − 1 holders ------------------------------------------------------------------------


class _Scripted(Csprng):
    """A test double: ``integers_below`` returns scripted coefficients (enumerates all)."""

    def __init__(self, values):
        self._values = list(values)

    def random_bytes(self, n):
        raise AssertionError("unused")

    def fork(self, label):
        return self

    def integers_below(self, bound, size):
        out, self._values = self._values[:size], self._values[size:]
        return np.asarray(out, dtype=np.uint64)


def test_t_minus_one_holders_learn_nothing_shares_are_uniform():
    """Exhaustive over every coefficient choice: any t−1 = 2 shares of any secret are uniform."""
    q, t = 13, 3
    for points in itertools.combinations([1, 2, 3, 4, 5], t - 1):
        for secret in (0, 1, 7):
            seen = []
            for c1, c2 in itertools.product(range(q), repeat=2):
                shares = rns.shamir_share(
                    np.array([secret], dtype=np.uint64),
                    threshold=t,
                    xs=[1, 2, 3, 4, 5],
                    prime=q,
                    rng=_Scripted([c1, c2]),
                )
                seen.append(tuple(int(shares[p - 1, 0]) for p in points))
            assert sorted(seen) == sorted(itertools.product(range(q), repeat=2))


def test_t_minus_one_holder_answers_do_not_open_the_key(federation):
    session = open_round(federation, 8, DIM, 26)
    drive(session, inputs=inputs_for(session.clients, DIM, 26))
    server = session.coordinator
    eng = federation.engine
    committee = federation.roster.of_kind("holder")
    rows = np.stack([server._answers[h] for h in committee])
    key = rns.interpolate(rows[:3], [1, 2, 3], eng.data_primes)
    guess = rns.interpolate(rows[:2], [1, 2], eng.data_primes)  # the best t−1 can do
    assert not np.array_equal(key, guess)


def test_holder_phase_rules(federation):
    holder = federation.holders["holder/0"]
    session = open_round(federation, 4, DIM, 27)
    with pytest.raises(UnexpectedPhaseError):
        holder.handle(session.coordinator.round_params)
    complaint = ShareComplaint(
        session=b"x" * 16,
        round=1,
        sender="server",
        recipient="holder/0",
        request_digest=bytes(32),
        accused=(),
        signature=b"",
    )
    with pytest.raises(UnexpectedPhaseError):
        holder.handle(complaint)


def test_replayed_or_forged_upload_in_a_clients_name_neither_counts_nor_blocks_it(federation):
    """A frame from another round (or with a bad signature) under client/0's name is
    excluded; client/0's own valid upload still counts."""
    old = open_round(federation, 6, DIM, 28)
    record = []
    drive(old, inputs=inputs_for(old.clients, DIM, 28), record=record)
    replay = next(
        decode(f) for r, f in record if r == "server" and isinstance(decode(f), CkksSubmission)
    )
    session = open_round(federation, 6, DIM, 29)
    inputs = inputs_for(session.clients, DIM, 29)
    server = session.coordinator
    server.handle(replay)  # the network delivers the stale frame first
    assert "InconsistentViewError" in server.rejected[replay.sender]
    drive(session, inputs=inputs)
    agg = server.finalize()
    assert replay.sender in agg.contributors and replay.sender not in server.rejected
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound
