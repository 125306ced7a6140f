"""Misbehaving peers and a curious server: each test names the threat it covers."""

import copy
import dataclasses

import numpy as np
import pytest
from masking_driver import drive, make_round, wire

from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ShareReuseError,
    UnexpectedPhaseError,
)
from secagg.masking import ClientPhase
from secagg.masking.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.wire import decode, encode


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def _unchecked(msg, **fields):
    """A copy with fields set behind __post_init__'s back (what a hostile encoder could send)."""
    bad = copy.copy(msg)
    for name, value in fields.items():
        object.__setattr__(bad, name, value)
    return bad


# -- replay and duplicates ------------------------------------------------------------


def test_replay_from_another_session_refused():
    # threat: the server (or network) replays a message from another round
    d = drive(0, hold_from="client/3")
    [advert] = d.held
    other, _ = make_round(seed=99)
    with pytest.raises(InconsistentViewError, match="replay"):
        other.coordinator.handle(advert)
    d2 = drive(1, hold_to="client/0")
    [roster] = d2.held
    stale = dataclasses.replace(roster, round=roster.round + 1)
    with pytest.raises(InconsistentViewError, match="replay"):
        d2.session.clients["client/0"].handle(stale)


def test_duplicate_messages_refused_and_ignored():
    # threat: a client submits twice to weigh its update double
    d = drive(2, hold_from="client/3")
    server = d.session.coordinator
    [masked] = d.held
    server.handle(masked)
    before = server._sum.copy()
    with pytest.raises(InconsistentViewError, match="duplicate"):
        server.handle(masked)
    np.testing.assert_array_equal(server._sum, before)
    d0 = drive(0, hold_from="client/3")
    [advert] = d0.held
    d0.session.coordinator.handle(advert)
    with pytest.raises(InconsistentViewError, match="duplicate"):
        d0.session.coordinator.handle(advert)


def test_sender_outside_cohort_or_phase_set_refused():
    # threat: an outsider, or a client that already dropped, injects a masked input
    d = drive(2, hold_from="client/3")
    [masked] = d.held
    with pytest.raises(InconsistentViewError, match="cohort"):
        d.session.coordinator.handle(dataclasses.replace(masked, sender="client/99"))
    d_late = drive(2, hold_from="client/3")
    # client/3 never shared keys in this variant: its masked input must not count
    d_noshare = drive(1, hold_from="client/3")
    d_noshare.session.coordinator.advance()
    with pytest.raises(InconsistentViewError, match="admitted"):
        d_noshare.session.coordinator.handle(d_late.held[0])


# -- forged signatures and tampered ciphertexts -----------------------------------------


def test_forged_advert_signature_refused_by_server_and_client():
    # threat: a man in the middle (or the server) substitutes its own mask keys
    d = drive(0, hold_from="client/3")
    [advert] = d.held
    forged = dataclasses.replace(advert, mask_key=_flip(advert.mask_key))
    with pytest.raises(IntegrityError):
        d.session.coordinator.handle(wire(forged))
    d1 = drive(1, hold_to="client/0")
    [roster] = d1.held
    keys = list(roster.mask_keys)
    keys[0] = _flip(keys[0])
    with pytest.raises(IntegrityError):
        d1.session.clients["client/0"].handle(
            wire(dataclasses.replace(roster, mask_keys=tuple(keys)))
        )
    assert d1.session.clients["client/0"].phase is ClientPhase.ADVERTISED


def test_advert_signed_by_another_identity_refused():
    # threat: client/1 impersonates client/3 (PKI binds keys to identities)
    d = drive(0, hold_from="client/3")
    [advert] = d.held
    genuine_other = d.transcript[AdvertiseKeys][1]
    assert genuine_other.sender == "client/1"
    spoof = dataclasses.replace(genuine_other, sender="client/3")
    with pytest.raises(IntegrityError):
        d.session.coordinator.handle(wire(spoof))


def test_tampered_share_ciphertext_refused():
    # threat: the routing server alters a share in transit
    d = drive(2, hold_to="client/0")
    [bundle] = d.held
    assert isinstance(bundle, ShareBundle)
    cts = list(bundle.ciphertexts)
    cts[0] = _flip(cts[0])
    with pytest.raises(IntegrityError):
        d.session.clients["client/0"].handle(
            wire(dataclasses.replace(bundle, ciphertexts=tuple(cts)))
        )
    swapped = dataclasses.replace(bundle, senders=tuple(reversed(bundle.senders)))
    with pytest.raises(IntegrityError):  # a ciphertext re-labelled as another sender's
        d.session.clients["client/0"].handle(wire(swapped))


def test_forged_consistency_signature_refused():
    # threat: the server fakes agreement on a survivor set
    d = drive(3, hold_from="client/3")
    [sig] = d.held
    with pytest.raises(IntegrityError):
        d.session.coordinator.handle(wire(dataclasses.replace(sig, signature=_flip(sig.signature))))
    d4 = drive(4, hold_to="client/0")
    [request] = d4.held
    sigs = list(request.signatures)
    sigs[1] = _flip(sigs[1])
    with pytest.raises(IntegrityError):
        d4.session.clients["client/0"].handle(
            wire(dataclasses.replace(request, signatures=tuple(sigs)))
        )


# -- the both-shares rule and thresholds ------------------------------------------------


def test_client_refuses_to_reveal_both_shares_of_one_peer():
    # threat: a curious server lists a survivor as dropped to unmask its input
    d = drive(4, hold_to="client/0")
    [request] = d.held
    client = d.session.clients["client/0"]
    greedy = dataclasses.replace(request, dropped=("client/2",))
    with pytest.raises(InconsistentViewError, match="disjoint"):
        client.handle(wire(greedy))
    assert client.phase is ClientPhase.ABORTED  # no second try
    with pytest.raises(UnexpectedPhaseError):
        client.handle(request)


def test_reveal_ledger_is_one_kind_per_peer():
    d = drive(4, hold_to="client/0")
    client = d.session.clients["client/0"]
    client._record_reveal("client/2", "seed")
    with pytest.raises(ShareReuseError):
        client._record_reveal("client/2", "seed")
    with pytest.raises(InconsistentViewError):
        client._record_reveal("client/2", "key")


def test_client_refuses_a_survivor_set_it_did_not_sign():
    # threat: the server shows different survivor sets to different clients
    d = drive(4, hold_to="client/0")
    [request] = d.held
    shrunk = dataclasses.replace(
        request, survivors=request.survivors[:-1], dropped=request.survivors[-1:]
    )
    with pytest.raises(InconsistentViewError, match="signed"):
        d.session.clients["client/0"].handle(wire(shrunk))


def test_client_refuses_below_threshold():
    # threat: the server isolates a client to reconstruct secrets from few shares
    d = drive(3, hold_to="client/0")
    [request] = d.held
    assert isinstance(request, ConsistencyRequest)
    few = dataclasses.replace(request, survivors=("client/0", "client/1"))
    with pytest.raises(InsufficientParticipantsError):
        d.session.clients["client/0"].handle(wire(few))
    d4 = drive(4, hold_to="client/0")
    [unmask] = d4.held
    unsigned = dataclasses.replace(
        unmask, signers=unmask.signers[:2], signatures=unmask.signatures[:2]
    )
    with pytest.raises(InsufficientParticipantsError):
        d4.session.clients["client/0"].handle(wire(unsigned))


def test_server_aborts_before_unmask_when_too_few_signers():
    d = drive(3, hold_from="client/3")
    server = d.session.coordinator
    server._signatures.pop("client/2")  # only 2 of 4 signed; t = 3
    with pytest.raises(InsufficientParticipantsError):
        server.advance()
    assert server.done


def test_server_refuses_shares_the_sender_does_not_hold():
    # threat: a client injects shares of a peer to steer a reconstruction
    d = drive(4, hold_from="client/3")
    [response] = d.held
    assert isinstance(response, UnmaskResponse)
    bogus = _unchecked(response, seed_owners=("client/1", "client/2", "client/3", "client/99"))
    bogus = _unchecked(bogus, seed_shares=np.zeros((4, 9), np.uint32))
    with pytest.raises((InconsistentViewError, DecodeError)):
        d.session.coordinator.handle(wire(bogus))


# -- malformed wire data -----------------------------------------------------------------


def test_malformed_messages_refused_on_decode():
    d = drive(2, hold_from="client/3")
    [masked] = d.held
    frame = encode(masked)
    with pytest.raises(DecodeError):
        decode(frame[:-3])
    with pytest.raises(DecodeError):
        decode(encode(_unchecked(masked, vector=masked.vector.astype(np.float32))))
    with pytest.raises(DecodeError):  # wrong length for this round
        d.session.coordinator.handle(wire(dataclasses.replace(masked, vector=masked.vector[:-1])))
    advert = d.transcript[AdvertiseKeys][0]
    with pytest.raises(DecodeError):
        decode(encode(_unchecked(advert, mask_key=advert.mask_key[:31])))
    roster = d.transcript[KeyRoster][0]
    with pytest.raises(DecodeError):
        decode(encode(_unchecked(roster, signatures=roster.signatures[:-1])))
    request = drive(4, hold_to="client/0").held[0]
    assert isinstance(request, UnmaskRequest)
    with pytest.raises(DecodeError):
        decode(encode(_unchecked(request, survivors=request.survivors + request.survivors[:1])))
    assert isinstance(masked, MaskedInput)


def test_corrupted_seed_share_aborts_instead_of_poisoning_the_sum():
    # threat: a malicious client returns a wrong share so the sum is silently corrupted
    d = drive(4, hold_from="client/0")
    [response] = d.held
    assert isinstance(response, UnmaskResponse) and response.seed_owners
    shares = response.seed_shares.copy()
    shares[0, 0] = (int(shares[0, 0]) + 1) % (2**31 - 1)
    d.session.coordinator.handle(wire(dataclasses.replace(response, seed_shares=shares)))
    with pytest.raises(IntegrityError):
        d.session.coordinator.advance()
    assert d.session.coordinator.done
    with pytest.raises(UnexpectedPhaseError):
        d.session.coordinator.finalize()


def test_reprs_carry_no_secrets():
    d = drive(2, hold_to="client/0")
    client = d.session.clients["client/0"]
    text = repr(client) + repr(d.session.coordinator) + repr(d.held[0])
    assert "client/0" in text
    assert client._seed.hex() not in text and "vector" not in text.lower()


def test_unknown_parties_in_server_lists_refused_with_named_errors():
    # threat: a server names outsiders to confuse a client's bookkeeping
    d = drive(4, hold_to="client/0")
    [request] = d.held
    outsider = dataclasses.replace(request, survivors=request.survivors + ("client/99",))
    with pytest.raises(InconsistentViewError):
        d.session.clients["client/0"].handle(wire(outsider))
    d3 = drive(3, hold_to="client/0")
    [consistency] = d3.held
    with pytest.raises(InconsistentViewError):
        d3.session.clients["client/0"].handle(
            wire(dataclasses.replace(consistency, survivors=consistency.survivors + ("mallory",)))
        )
    d1 = drive(1, hold_to="client/0")
    [roster] = d1.held
    renamed = dataclasses.replace(roster, parties=("mallory",) + roster.parties[1:])
    with pytest.raises(InconsistentViewError):
        d1.session.clients["client/0"].handle(wire(renamed))
