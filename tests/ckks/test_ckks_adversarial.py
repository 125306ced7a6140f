"""Adversarial scripts against threshold CKKS; each test names the threat it covers."""

import dataclasses

import numpy as np
import pytest
from ckks_support import drive, inputs_for

from secagg.ckks import TEST_INSECURE_N512, ThresholdCKKS
from secagg.ckks import residues as rns
from secagg.ckks.aggregation import CkksAggregator
from secagg.ckks.ceremony import CeremonyServer
from secagg.ckks.channels import ChannelKeys, sign
from secagg.ckks.holder import KeyHolder
from secagg.ckks.messages import (
    CkksSubmission,
    DecryptRequest,
    KeyShareReveal,
    PartialDecryption,
    SeedReveal,
    ShareDeal,
)
from secagg.ckks.seal_bridge import ShareDecryptor
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ShareReuseError,
    UnexpectedPhaseError,
)
from secagg.protocol import client_id
from secagg.rand import Csprng, DeterministicRng
from secagg.wire import decode, encode


def _fresh(seed=21):
    scheme = ThresholdCKKS(max_clients=10, preset=TEST_INSECURE_N512)
    return scheme, scheme.setup(rng=DeterministicRng.from_int(seed))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


SECRET_TYPES = (KeyHolder, ChannelKeys, ShareDecryptor, Csprng)


def _walk(obj, seen):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from _walk(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for v in vars(obj).values():
            yield from _walk(v, seen)


def test_server_never_holds_secret_material(federation):
    """Threat: a curious server. Its objects and every frame it receives carry no secret."""
    scheme, ceremony = _fresh(22)
    received = []
    drive(ceremony, record=received)
    holders = scheme.holders.values()
    shares = [rns.pack(h._combined, scheme.engine.data_primes) for h in holders]
    cohort = [client_id(i) for i in range(3)]
    rs = scheme.open_round(0, cohort, 200, rng=DeterministicRng.from_int(23))
    drive(rs, inputs=inputs_for(3, 200, 23), record=received)
    for server in (ceremony.coordinator, rs.coordinator):
        for obj in _walk(server, set()):
            assert not isinstance(obj, SECRET_TYPES), type(obj)
            assert "SecretKey" not in type(obj).__name__ and "Private" not in type(obj).__name__
    to_server = [frame for recipient, frame in received if recipient == "server"]
    assert to_server
    for frame in to_server:
        for share in shares:
            assert share[:48] not in frame  # no key share in the clear, not even a prefix
        msg = decode(frame)
        if isinstance(msg, ShareDeal):
            assert len(msg.ciphertext) == len(shares[0]) + 16  # AEAD: ciphertext + tag only
    assert isinstance(rs.coordinator, CkksAggregator)
    assert isinstance(ceremony.coordinator, CeremonyServer)


def test_share_reuse_refused(federation):
    """Threat: a combiner asking twice for the same round to average the smudging away."""
    cohort = [client_id(i) for i in range(2)]
    rs = federation.open_round(10, cohort, 100, rng=DeterministicRng.from_int(24))
    requests = []

    def keep(msg):
        if isinstance(msg, DecryptRequest):
            requests.append(msg)
        return msg

    drive(rs, inputs=inputs_for(2, 100, 24), tamper=keep)
    holder = federation.holders[requests[0].recipient]
    with pytest.raises(ShareReuseError):
        holder.handle(requests[0])


def test_request_for_other_ciphertext_refused(federation):
    """Threat: a server asking holders to decrypt something other than the accepted aggregate."""
    cohort = [client_id(i) for i in range(2)]
    rs = federation.open_round(11, cohort, 100, rng=DeterministicRng.from_int(25))

    def swap_c1(msg):
        if isinstance(msg, DecryptRequest):
            data = msg.c1_residues
            return dataclasses.replace(msg, c1_residues=data[6:] + data[:6])
        return msg

    with pytest.raises(IntegrityError):
        drive(rs, inputs=inputs_for(2, 100, 25), tamper=swap_c1)


def test_single_client_request_refused(federation):
    """Threat: a server dropping all but one submission to decrypt that client alone."""
    cohort = [client_id(i) for i in range(2)]
    rs = federation.open_round(12, cohort, 100, rng=DeterministicRng.from_int(26))

    def only_first(msg):
        if isinstance(msg, DecryptRequest):
            return dataclasses.replace(
                msg, accepted=msg.accepted[:1], submission_digests=msg.submission_digests[:1]
            )
        return msg

    with pytest.raises(InconsistentViewError):
        drive(rs, inputs=inputs_for(2, 100, 26), tamper=only_first)


def test_tampered_and_truncated_submissions_refused(federation):
    """Threat: malformed client uploads must not reach the running sum."""
    cohort = [client_id(i) for i in range(2)]
    rs = federation.open_round(13, cohort, 100, rng=DeterministicRng.from_int(27))
    sub = rs.clients[cohort[0]].protect(np.zeros(100))[0]
    assert isinstance(sub, CkksSubmission)
    server = rs.coordinator
    with pytest.raises(DecodeError):
        server.handle(dataclasses.replace(sub, residues=sub.residues[:-1]))
    too_big = b"\xff" * 6 + sub.residues[6:]  # first residue ≥ q₀
    with pytest.raises(DecodeError):
        server.handle(dataclasses.replace(sub, residues=too_big))
    with pytest.raises(DecodeError):
        server.handle(dataclasses.replace(sub, count=sub.count + 1))
    frame = encode(sub)
    with pytest.raises(DecodeError):
        decode(frame[:-3])
    with pytest.raises(DecodeError):
        decode(frame.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00", b"\x02" + b"\x00" * 7, 1))
    server.handle(sub)  # the untouched submission is still accepted afterwards


def test_tampered_partial_decryption_refused(federation):
    """Threat: a share altered in transit (or forged by a non-holder) is caught by its signature."""
    cohort = [client_id(i) for i in range(2)]
    rs = federation.open_round(14, cohort, 100, rng=DeterministicRng.from_int(28))

    def corrupt(msg):
        if isinstance(msg, PartialDecryption) and msg.sender == "holder/1":
            return dataclasses.replace(msg, residues=_flip(msg.residues, 10))
        return msg

    with pytest.raises(IntegrityError):
        drive(rs, inputs=inputs_for(2, 100, 28), tamper=corrupt)

    rs = federation.open_round(15, cohort, 100, rng=DeterministicRng.from_int(29))

    def truncate(msg):
        if isinstance(msg, PartialDecryption):
            return dataclasses.replace(msg, signature=msg.signature[:-1])
        return msg

    with pytest.raises(DecodeError):
        drive(rs, inputs=inputs_for(2, 100, 29), tamper=truncate)


def test_tampered_ceremony_commitment_refused():
    """Threat: a relay (or holder) changing a seed contribution after the commitments."""
    _, ceremony = _fresh(30)
    stolen = {}

    def bias(msg):
        if isinstance(msg, SeedReveal) and msg.sender == "holder/2":
            stolen["msg"] = msg
            return dataclasses.replace(msg, contribution=_flip(msg.contribution, 0))
        return msg

    with pytest.raises(IntegrityError):  # the server's signature check fires first
        drive(ceremony, tamper=bias)
    assert "msg" in stolen


def test_rogue_public_key_share_caught_by_commitment():
    """Threat: the rogue-key attack — the last holder publishes bᵢ chosen after seeing the others.

    holder/4 signs a substituted key share with its own (valid) identity, so only
    the commitment from before the reveals can catch it.
    """
    scheme, ceremony = _fresh(31)
    rogue = scheme.holders["holder/4"]

    def substitute(msg):
        if isinstance(msg, KeyShareReveal) and msg.sender == "holder/4":
            forged = dataclasses.replace(msg, residues=_flip(msg.residues, 3), signature=b"")
            return sign(forged, rogue._identity)
        return msg

    with pytest.raises(IntegrityError):
        drive(ceremony, tamper=substitute)


def test_tampered_share_deal_refused():
    """Threat: a relay altering an encrypted Shamir deal (AEAD and signature both bind it)."""
    scheme, ceremony = _fresh(32)
    rogue = scheme.holders["holder/0"]

    def corrupt(msg):
        if isinstance(msg, ShareDeal) and msg.sender == "holder/0":
            forged = dataclasses.replace(msg, ciphertext=_flip(msg.ciphertext, 5), signature=b"")
            return sign(forged, rogue._identity)  # even a validly signed forgery fails the AEAD
        return msg

    with pytest.raises(IntegrityError):
        drive(ceremony, tamper=corrupt)


def test_silent_holder_aborts_ceremony():
    _, ceremony = _fresh(33)
    with pytest.raises(InsufficientParticipantsError):
        drive(ceremony, silent=("holder/3",), silent_from=0)


def test_phase_rules(federation):
    scheme, ceremony = _fresh(34)
    with pytest.raises(UnexpectedPhaseError):  # no round before the ceremony
        scheme.open_round(0, [client_id(0)], 10, rng=DeterministicRng.from_int(1))
    holder = scheme.holders["holder/0"]
    opening = ceremony.coordinator.start()[0]
    holder.handle(opening)
    with pytest.raises(UnexpectedPhaseError):
        holder.handle(opening)
    cohort = [client_id(0), client_id(1)]
    rs = federation.open_round(16, cohort, 10, rng=DeterministicRng.from_int(2))
    client = rs.clients[cohort[0]]
    client.protect(np.zeros(10))
    with pytest.raises(UnexpectedPhaseError):
        client.protect(np.zeros(10))
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.finalize()
