"""A malicious server choosing the round parameters (issue 10's follow-up): on Flower the
server broadcasts ``RoundParams`` to each client, so every field of it is the server's
choice. Each test forges parameters through the real codec and shows the client refuses
them against its OWN configuration and roster file (a named error), or that the round
they start exposes no honest input.
"""

import dataclasses

import pytest
from attack_kit import IsolatingServer, assert_not_exposed, attack_round, seed_shares_revealed

from secagg import channels
from secagg.errors import (
    IntegrityError,
    ParameterError,
    SecAggError,
    ShareReuseError,
)
from secagg.identity import simulated_identities
from secagg.masking import ClientPhase, PairwiseMasking, RoundParams
from secagg.masking.messages import KeyRoster
from secagg.masking.params import ADVERT_PURPOSE, RoundParameters
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode

VICTIM = client_id(0)
R = dataclasses.replace


def _federation(n=6, pool=10):
    keys, roster = simulated_identities(
        [client_id(i) for i in range(pool)], rng=DeterministicRng.from_int(7)
    )
    cohort = [client_id(i) for i in range(n)]
    return keys, roster, cohort


def _true_params(n=6, **server_kwargs):
    keys, roster, cohort = _federation(n)
    scheme = PairwiseMasking(max_clients=6, **server_kwargs)
    params = scheme.round_parameters(4, cohort, 3, rng=DeterministicRng.from_int(1), roster=roster)
    return keys, roster, params.to_message()


def _join(forged: RoundParameters, keys, roster, **client_kwargs):
    """The victim's side: decode the broadcast, build its role under its own policy."""
    received = decode(encode(forged))
    assert isinstance(received, RoundParameters)
    local = PairwiseMasking(max_clients=6, **client_kwargs)
    return local.client_role(
        VICTIM,
        RoundParams.from_message(received),
        keys[VICTIM],
        rng=DeterministicRng.from_int(2),
        roster=roster,
    )


def _shrink(m, size, **fields):
    return R(m, cohort=m.cohort[:size], identities=m.identities[:size], **fields)


FORGERIES = {
    # threat: a cohort of one: the "sum" is the victim's input
    "cohort_of_one": (lambda m, k: _shrink(m, 1, threshold=1, min_honest=1, degree=0), {}),
    # threat: a cohort below the client's configured minimum (the other two may be corrupt)
    "cohort_below_min_cohort": (
        lambda m, k: _shrink(m, 3, threshold=2, min_honest=2, degree=2),
        {"min_cohort": 4},
    ),
    # threat: t ≤ n/2 lets two disjoint views both reach the threshold
    "threshold_half": (lambda m, k: R(m, threshold=3, min_honest=3), {}),
    # threat: t = 1: each client's own share rebuilds its secrets
    "threshold_one": (lambda m, k: _shrink(m, 2, threshold=1, min_honest=1, degree=1), {}),
    # threat: a threshold below the client's configured one (here ⌊2n/3⌋ + 1 = 5)
    "threshold_below_configured": (lambda m, k: R(m, threshold=4, min_honest=4), {"threshold": 5}),
    # threat: min_honest lowered below the client's own DP floor h
    "min_honest_lowered": (lambda m, k: R(m, min_honest=4), {"min_honest": 6}),
    # threat: a sparse graph for a client configured for the full graph (cut-set sums)
    "sparse_for_full_client": (lambda m, k: R(m, degree=2), {}),
    # threat: a sparser graph than the client's configured degree (isolating neighbourhood)
    "degree_below_configured": (
        lambda m, k: R(m, degree=2),
        {"graph": "sparse", "degree": 4},
    ),
    # threat: a sparse round with min_honest > t (its graph parts' sums are below h)
    "sparse_with_min_honest": (
        lambda m, k: R(m, min_honest=5),
        {"graph": "sparse", "degree": 2},
    ),
    # threat: another encoding (a ring that wraps, a wider clip)
    "other_encoding": (lambda m, k: R(m, value_bound=8.0), {}),
    # threat: a Sybil — the server substitutes a cohort member's identity with its own key
    "substituted_identity": (
        lambda m, k: R(
            m, identities=(m.identities[0], k[client_id(9)].public.signing) + m.identities[2:]
        ),  # fmt: skip
        {},
    ),
    # threat: a member that is not in the client's roster at all
    "member_outside_roster": (lambda m, k: R(m, cohort=(*m.cohort[:5], "client/sybil")), {}),
    # threat: a negative round (crashed key derivation) or a short session id
    "negative_round": (lambda m, k: R(m, round=-1), {}),
    "short_session": (lambda m, k: R(m, session=b"\x00"), {}),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_round_parameters_are_refused_by_the_clients_own_policy(name):
    forge, client_kwargs = FORGERIES[name]
    keys, roster, message = _true_params(**client_kwargs)  # the server's honest broadcast
    assert _join(message, keys, roster, **client_kwargs).phase is ClientPhase.READY  # control
    forged = forge(message, keys)
    with pytest.raises((ParameterError, IntegrityError)):
        _join(forged, keys, roster, **client_kwargs)


def test_identities_are_checked_against_the_clients_roster_file_not_the_params():
    # threat: every other member's key replaced by one the server holds (Sybils)
    keys, roster, message = _true_params()
    sybils = simulated_identities(list(message.cohort), rng=DeterministicRng.from_int(99))[0]
    forged = R(
        message,
        identities=(message.identities[0],)
        + tuple(sybils[p].public.signing for p in message.cohort[1:]),
    )
    with pytest.raises(IntegrityError):
        _join(forged, keys, roster)
    with pytest.raises(ParameterError, match="roster"):
        PairwiseMasking(max_clients=6).client_role(
            VICTIM,
            RoundParams.from_message(message),
            keys[VICTIM],
            rng=DeterministicRng.from_int(2),
        )


def test_stronger_parameters_than_the_policy_are_accepted():
    # the policy is a floor: a higher t, h or degree only makes the round safer
    keys, roster, message = _true_params(n=6, threshold=5, min_honest=6)
    role = _join(message, keys, roster, threshold=4, min_honest=5, min_cohort=6)
    assert role.params.threshold == 5 and role.params.min_honest == 6


def test_a_session_is_joined_once():
    # threat: the server replays one round's parameters to run a client twice in a session
    keys, roster, message = _true_params()
    local = PairwiseMasking(max_clients=6)
    received = RoundParams.from_bytes(encode(message))
    local.client_role(
        VICTIM, received, keys[VICTIM], rng=DeterministicRng.from_int(2), roster=roster
    )
    with pytest.raises(ShareReuseError):
        local.client_role(
            VICTIM, received, keys[VICTIM], rng=DeterministicRng.from_int(3), roster=roster
        )


def test_scheme_refuses_threshold_one_and_single_client_sums():
    with pytest.raises(ParameterError, match="threshold"):
        PairwiseMasking(max_clients=5, threshold=1)
    with pytest.raises(ParameterError, match="max_clients"):
        PairwiseMasking(max_clients=1)
    with pytest.raises(ParameterError, match="min_cohort"):
        PairwiseMasking(max_clients=5, min_cohort=1)
    keys, roster, cohort = _federation(1)
    with pytest.raises(SecAggError):
        PairwiseMasking(max_clients=5).round_parameters(
            0, cohort, 3, rng=DeterministicRng.from_int(0), roster=roster
        )


def test_params_digest_covers_every_field():
    keys, roster, message = _true_params()
    base = RoundParams.from_message(message).digest
    changes = [
        R(message, threshold=5, min_honest=5),
        R(message, min_honest=5),
        R(message, dim=4),
        R(message, round=5),
        R(
            message,
            cohort=(*message.cohort[1:], message.cohort[0]),
            identities=(*message.identities[1:], message.identities[0]),
        ),  # fmt: skip
        R(message, value_bound=2.0),
    ]
    digests = {RoundParams.from_message(m).digest for m in changes}
    assert base not in digests and len(digests) == len(changes)


class SplitParamsServer(IsolatingServer):
    """Gives the victim parameters of its own (cohort = the victim, one corrupt client and
    one honest client, t = 2: within the victim's policy), everyone else the true ones,
    all under the same session; forges the corrupt client's advert under the victim's
    parameters and relays everything else unverified."""

    def __init__(self, params, *, victim_params, **kwargs):
        super().__init__(params, **kwargs)
        self.victim_params = victim_params

    def _on_advert(self, msg):
        self._adverts[msg.sender] = msg  # hostile: relays without checking

    def _close_advertise(self):
        out = [r for r in super()._close_advertise() if r.recipient != VICTIM]
        vp = self.victim_params
        peers = vp.cohort[1:]
        ads = [self._adverts[q] for q in peers]
        signatures = tuple(
            channels.sign(
                self.corrupt[q].signing,
                ADVERT_PURPOSE,
                vp.advert_payload(q, a.encryption_key, a.mask_key, a.seed_commitment),
            )
            if q in self.corrupt
            else a.signature
            for q, a in zip(peers, ads, strict=True)
        )
        out.append(
            KeyRoster(
                **self._header(VICTIM),
                advertisers=(),
                advert_digests=(),
                parties=peers,
                encryption_keys=tuple(a.encryption_key for a in ads),
                mask_keys=tuple(a.mask_key for a in ads),
                seed_commitments=tuple(a.seed_commitment for a in ads),
                signatures=signatures,
            )
        )
        return out


def test_different_params_to_different_clients_cannot_both_complete():
    # threat: same session and round, but the victim's cohort is {victim, corrupt, honest}
    # with t = 2 while the others run the true cohort of 5 with t = 3; without a digest of
    # the full parameters in every signature the honest peer's advert verified for both
    corrupt = client_id(1)
    victim_view = {}

    def params_for(party, message):
        if party != VICTIM:
            return message
        forged = _shrink(message, 3, threshold=2, min_honest=2, degree=2)
        forged = R(forged, cohort=(VICTIM, corrupt, client_id(2)))
        victim_view["params"] = RoundParams.from_message(forged)
        return forged

    attack = attack_round(
        5,
        server_cls=SplitParamsServer,
        corrupt={corrupt},
        params_for=params_for,
        victim_params=_Lazy(victim_view),
    )
    assert VICTIM in attack.clients  # the forged params pass the victim's policy …
    refusals = attack.refusals[VICTIM]
    assert any(isinstance(e, IntegrityError) for e in refusals)  # … not the honest advert
    assert attack.clients[VICTIM].phase is ClientPhase.ADVERTISED  # no share left it
    for party in map(client_id, (2, 3, 4)):  # and the victim's advert fails for the others
        assert any(isinstance(e, IntegrityError) for e in attack.refusals[party])
    assert seed_shares_revealed(attack, VICTIM) == 0
    assert_not_exposed(attack, [VICTIM])


class _Lazy:
    """The victim's params, filled in when the server broadcasts them."""

    def __init__(self, box):
        self._box = box

    def __getattr__(self, name):
        return getattr(self._box["params"], name)


def test_adverts_replayed_from_another_round_are_refused():
    # threat: the server relays a peer's signed advert from an earlier round (whose mask
    # key it may have reconstructed there) into this round's key roster
    keys, roster, cohort = _federation(3)
    scheme = PairwiseMasking(max_clients=3)

    def round_params(index, seed):
        params = scheme.round_parameters(
            index, cohort, 3, rng=DeterministicRng.from_int(seed), roster=roster
        )
        return RoundParams.from_bytes(params.to_bytes())

    old, new = round_params(1, 1), round_params(2, 2)
    vector = DeterministicRng.from_int(5).uniform(3)

    def advert(params, party, seed):
        role = PairwiseMasking(max_clients=3).client_role(
            party, params, keys[party], rng=DeterministicRng.from_int(seed), roster=roster
        )
        [msg] = role.protect(vector)
        return role, msg

    victim, _ = advert(new, VICTIM, 10)
    stale = advert(old, client_id(1), 11)[1]  # valid signature, old session and digest
    fresh = advert(new, client_id(2), 12)[1]
    ads = (stale, fresh)
    key_roster = KeyRoster(
        **new.header("server", VICTIM),
        advertisers=(),
        advert_digests=(),
        parties=(client_id(1), client_id(2)),
        encryption_keys=tuple(a.encryption_key for a in ads),
        mask_keys=tuple(a.mask_key for a in ads),
        seed_commitments=tuple(a.seed_commitment for a in ads),
        signatures=tuple(a.signature for a in ads),
    )
    with pytest.raises(IntegrityError):
        victim.handle(decode(encode(key_roster)))
    assert victim.phase is ClientPhase.ADVERTISED
