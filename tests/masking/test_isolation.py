"""A malicious server isolating clients (issue 10): each attack is refused with a named
error, and what the server could reconstruct is not any honest input or partial sum.

Every attack is an :class:`~attack_kit.IsolatingServer` that only sends protocol messages
through the real codec; corrupt clients' signatures are forged with their real keys.
"""

import dataclasses

import numpy as np
import pytest
from attack_kit import (
    DIM,
    HonestServer,
    IsolatingServer,
    assert_not_exposed,
    attack_round,
    exposure,
    seed_shares_revealed,
)

from secagg.errors import (
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ParameterError,
    UnexpectedPhaseError,
)
from secagg.identity import simulated_identities
from secagg.masking import ClientPhase, PairwiseMasking, RoundParams
from secagg.masking.params import VIEW_PURPOSE
from secagg.protocol import client_id
from secagg.rand import DeterministicRng

VICTIM = client_id(0)


def _ids(indices):
    return {client_id(i) for i in indices}


def _refused(attack, party, error):
    return any(isinstance(e, error) for e in attack.refusals.get(party, []))


def test_exposure_oracle_finds_an_input_when_the_protocol_legitimately_reveals_it():
    # control for every test below: with c = t − 1 corrupt clients and the last honest
    # peer "dropped", the released sum minus the corrupt inputs IS the victim's input
    # (inherent to secure aggregation; DP protects it). The oracle must see that.
    corrupt = _ids([1, 2])
    attack = attack_round(4, corrupt=corrupt, survivors={VICTIM} | corrupt)
    estimate = exposure(attack, [VICTIM])
    assert estimate is not None
    np.testing.assert_allclose(estimate, attack.inputs[VICTIM], atol=1e-4)


@pytest.mark.parametrize("n", [5, 9])
def test_u2_split_at_the_default_threshold_is_refused(n):
    # threat: the victim's bundle holds only peers P (t − 1 of them), the others get full
    # bundles; U3 = victim + the others, P "dropped": its keys and the victim's seed would
    # strip every mask (the attack of issue 10, no corrupt client needed for odd n)
    t = n // 2 + 1
    peers = _ids(range(1, t))
    others = _ids(range(t, n))
    attack = attack_round(n, victims={VICTIM}, hidden=others, survivors={VICTIM} | others)
    for party in others:  # the victim masked with another U2: its view signature fails
        assert _refused(attack, party, IntegrityError)
    assert _refused(attack, VICTIM, InconsistentViewError)  # U3 ⊄ the U2 it was shown
    assert seed_shares_revealed(attack, VICTIM) == 0
    assert_not_exposed(attack, [VICTIM])
    assert peers.isdisjoint(attack.server.pairs)  # P never reached the consistency check


def test_u2_split_on_the_sparse_graph_is_refused():
    # threat: the same isolation inside one sparse neighbourhood (n = 30, default k, t′)
    n = 30
    probe = attack_round(n, scheme_kwargs={"graph": "sparse"})
    p = probe.server.params
    assert not p.full and p.local_threshold == 6
    neighbours = p.ordered(p.neighbours(VICTIM))
    peers = set(neighbours[: p.local_threshold - 1])
    hidden = set(neighbours[p.local_threshold - 1 :])
    cohort = set(p.cohort)
    attack = attack_round(
        n,
        scheme_kwargs={"graph": "sparse"},
        victims={VICTIM},
        hidden=hidden,
        survivors=cohort - peers,
    )
    assert attack.server.params.graph == p.graph  # same adverts, same graph
    for party in hidden:  # the victim's surviving holders refuse its view signature
        assert _refused(attack, party, IntegrityError)
    assert seed_shares_revealed(attack, VICTIM) == 0
    assert_not_exposed(attack, [VICTIM])


def test_two_thirds_threshold_with_three_corrupt_clients_is_refused():
    # threat: t = ⌊2n/3⌋+1 = 7 of n = 10 with c = 3 corrupt clients (< 2t − n = 4): the
    # old protocol fell to c ≥ 2t − n − 1 = 3
    corrupt = _ids([7, 8, 9])  # the victim is shown U2 = {0, 1, 2, 3} ∪ corrupt
    others = _ids([4, 5, 6])
    attack = attack_round(
        10,
        scheme_kwargs={"threshold": 7},
        corrupt=corrupt,
        victims={VICTIM},
        hidden=others,
        survivors={VICTIM} | others | corrupt,
    )
    for party in others:
        assert _refused(attack, party, IntegrityError)
    assert seed_shares_revealed(attack, VICTIM) == 0
    assert_not_exposed(attack, [VICTIM])


def test_two_thirds_threshold_conflicting_pairs_need_more_corrupt_clients():
    # threat: the both-shares attack with c = 3 corrupt signers on two pairs: honest
    # A-side signs U3 ∋ victim (reveals its seed), honest B-side signs U3 ∌ victim
    # (reveals its key). Each pair needs t = 7 signatures: 4 + 3 and 3 + 3 — B falls short.
    corrupt = _ids([7, 8, 9])
    side_b = _ids([4, 5, 6])

    class TwoPairs(IsolatingServer):
        def _close_masked_input(self):
            out = super()._close_masked_input()
            u3_b = self._ordered(set(self._inputs) - {VICTIM})
            for i, msg in enumerate(out):
                if msg.recipient in side_b:
                    owners = tuple(
                        v for v in self.params.neighbours(msg.recipient) if v in set(u3_b)
                    )
                    out[i] = type(msg)(
                        **self._header(msg.recipient),
                        survivors=u3_b,
                        view_signers=owners,
                        view_signatures=tuple(
                            self._forge(o, VIEW_PURPOSE, self.params.view_payload(o, self._shared))
                            if o in self.corrupt
                            else self._views[o]
                            for o in owners
                        ),
                    )
                    self.pairs[msg.recipient] = (self._shared, u3_b)
            return [m for m in out if m.recipient != VICTIM] + [
                m for m in out if m.recipient == VICTIM
            ]

    attack = attack_round(10, server_cls=TwoPairs, scheme_kwargs={"threshold": 7}, corrupt=corrupt)
    for party in side_b:
        assert _refused(attack, party, InsufficientParticipantsError)
    key_revealed = sum(VICTIM in r.key_owners for r in attack.server.responses)
    assert key_revealed == 0
    assert_not_exposed(attack, [VICTIM])


def test_chosen_subset_sum_is_refused():
    # threat: with no corrupt client, two clients G mask only among G ∪ P; P "drops";
    # the server would learn x_a + x_b, a sum of 2t − n = 2 < t clients of its choice
    group = _ids([0, 1])
    peers = _ids([2, 3, 4, 5])
    others = _ids([6, 7, 8, 9])
    attack = attack_round(10, victims=group, hidden=others, survivors=group | others)
    for party in others:
        assert _refused(attack, party, IntegrityError)
    assert all(seed_shares_revealed(attack, v) == 0 for v in group)
    assert_not_exposed(attack, sorted(group))
    assert peers.isdisjoint(attack.server.pairs)


def test_truncated_share_bundle_aborts_instead_of_a_garbage_sum():
    # threat: the server drops one sender from a client's bundle but keeps U2 whole
    class Truncating(IsolatingServer):
        def _close_share(self):
            out = super()._close_share()
            return [
                type(b)(
                    **self._header(b.recipient),
                    masking_set=b.masking_set,
                    senders=b.senders[1:],
                    ciphertexts=b.ciphertexts[1:],
                )
                if b.recipient == VICTIM
                else b
                for b in out
            ]

    attack = attack_round(5, server_cls=Truncating)
    assert _refused(attack, VICTIM, InconsistentViewError)
    assert attack.clients[VICTIM].phase is ClientPhase.SHARED  # sent no masked input
    assert_not_exposed(attack, [VICTIM])


def test_min_honest_floor_refused_by_clients_and_by_the_server():
    # threat: under client-level DP a sum of fewer than h survivors has too little noise
    kwargs = {"min_honest": 5}
    attack = attack_round(6, scheme_kwargs=kwargs, survivors=_ids(range(4)))
    for party in _ids(range(4)):
        assert _refused(attack, party, InsufficientParticipantsError)
    assert attack.server.responses == []
    honest = attack_round(
        6,
        scheme_kwargs=kwargs,
        server_cls=HonestServer,
        dropouts={client_id(4): 2, client_id(5): 2},
    )
    [error] = honest.refusals["server"]
    assert isinstance(error, InsufficientParticipantsError) and "min_honest" in str(error)
    assert honest.server.done and not any(honest.refusals.get(c) for c in honest.clients)


def test_out_of_field_unmask_share_aborts_on_arrival():
    # a faulty peer's share ≥ the Shamir prime: a named abort, never a stuck phase
    from masking_driver import drive, wire

    d = drive(4, hold_from="client/3")
    [response] = d.held
    shares = response.seed_shares.copy()
    shares[0, 0] = 2**31 - 1
    bad = type(response)(
        **{k: getattr(response, k) for k in ("session", "round", "sender", "recipient")},
        seed_owners=response.seed_owners,
        seed_shares=shares,
        key_owners=response.key_owners,
        key_shares=response.key_shares,
    )
    server = d.session.coordinator
    with pytest.raises(InconsistentViewError, match="field elements"):
        server.handle(wire(bad))
    assert server.done
    with pytest.raises(UnexpectedPhaseError):
        server.finalize()


def test_party_local_roles_round_trip_their_parameters():
    # the public parameters travel as one frame; every client is built from it alone
    attack = attack_round(4, server_cls=HonestServer)
    assert attack.server.done and not attack.refusals
    agg = attack.server.finalize()
    total = np.sum(list(attack.inputs.values()), axis=0)
    assert np.max(np.abs(agg.vector - total)) <= agg.error_bound
    assert agg.vector.shape == (DIM,)


def test_min_honest_requires_the_full_graph():
    # the sparse graph's parts can be unmasked separately: a sum of t′ < h clients
    with pytest.raises(ParameterError, match="full"):
        PairwiseMasking(max_clients=30, graph="sparse", min_honest=10)
    with pytest.raises(ParameterError, match="min_honest"):
        PairwiseMasking(max_clients=30, min_honest=31)
    params = PairwiseMasking(max_clients=8, min_honest=6).round_parameters(
        0,
        [client_id(i) for i in range(8)],
        3,
        rng=DeterministicRng.from_int(0),
        roster=simulated_identities(
            [client_id(i) for i in range(8)], rng=DeterministicRng.from_int(1)
        )[1],
    )
    assert RoundParams.from_bytes(params.to_bytes()).min_honest == 6


def test_server_cannot_grind_the_sparse_graph_by_editing_advert_digests():
    # threat: the server replaces one advert digest to steer the graph seed
    target = client_id(3)

    class Grinding(HonestServer):
        def _close_advertise(self):
            out = super()._close_advertise()
            edited = []
            for roster in out:
                digests = list(roster.advert_digests)
                digests[roster.advertisers.index(target)] = bytes(32)
                edited.append(dataclasses.replace(roster, advert_digests=tuple(digests)))
            return edited

    attack = attack_round(12, server_cls=Grinding, scheme_kwargs={"graph": "sparse", "degree": 6})
    assert _refused(attack, target, InconsistentViewError)  # its own advert is not listed
    p = attack.server.params
    for party in p.neighbours(target):  # they see its real advert, not the listed digest
        assert _refused(attack, party, InconsistentViewError)
    assert attack.server.responses == []


@pytest.mark.parametrize("n", [6, 7, 8])
def test_u2_split_with_tolerated_corruption_and_unmask_dropouts_is_refused(n):
    # threat: the U2 split at the default t for n = 6, 7, 8 with κ − 1 corrupt clients
    # (κ = 2t − n: one for even n, none for odd n), the victim shown U2 minus the hidden
    # half, and an honest peer of the victim's view dropping during unmasking
    t = n // 2 + 1
    corrupt = _ids(range(1, 2 * t - n))
    visible = _ids(range(len(corrupt) + 1, t))
    hidden = _ids(range(t, n))
    peer = client_id(len(corrupt) + 1)
    attack = attack_round(
        n,
        corrupt=corrupt,
        victims={VICTIM},
        hidden=hidden,
        survivors={VICTIM} | hidden | corrupt,
        dropouts={peer: 4},
    )
    assert peer in visible
    for party in hidden:
        assert _refused(attack, party, IntegrityError)
    assert seed_shares_revealed(attack, VICTIM) == 0
    assert_not_exposed(attack, [VICTIM])
    for honest in (hidden | visible) - {peer}:  # nor a chosen pair sum with the victim
        assert_not_exposed(attack, sorted({VICTIM, honest}))
