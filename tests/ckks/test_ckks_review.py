"""Attacks from the hostile review of the key-additive design, through the real roles.

Each test is named after the threat. Attackers are the real roles driven off-script
(a server that keeps every upload and rewrites its requests, holders that ignore
their once-per-round rule, clients that deal bad shares) over the real wire codec.
"""

import dataclasses

import numpy as np
import pytest
from ckks_support import (
    cohort_of,
    drive,
    empty_request,
    exact_sum,
    inputs_for,
    keep_members,
    make_federation,
    open_round,
)

from secagg.ckks import TEST_INSECURE_N512, ThresholdCKKS, transcript
from secagg.ckks import residues as rns
from secagg.ckks.aggregation import broadcast_params
from secagg.ckks.messages import (
    CeremonyOpen,
    Relay,
    ShareSum,
)
from secagg.ckks.scheme import default_threshold
from secagg.ckks.seal_bridge import _work_ciphertext, ciphertext_view
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ParameterError,
    ShareReuseError,
)
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode
from secagg_training.transport import InProcessTransport

DIM = 300


def _wire(msg):
    return decode(encode(msg))


def _collect(scheme, n, seed, round_index=None):
    """Honest clients upload; the server keeps every upload and its share requests."""
    session = open_round(scheme, n, DIM, seed, round_index=round_index)
    inputs = inputs_for(session.clients, DIM, seed)
    uploads = {}
    for party, vector in inputs.items():
        (msg,) = session.clients[party].protect(vector)
        uploads[party] = _wire(msg)
        session.coordinator.handle(uploads[party])
    requests = {r.recipient: _wire(r) for r in session.coordinator.advance()}
    return session, inputs, uploads, requests


def _rows(scheme, answer):
    return rns.unpack_into(answer.residues, scheme.engine.data_primes, scheme.engine.degree)


def _open(scheme, answers):
    committee = scheme.roster.of_kind("holder")
    points = [committee.index(a.sender) + 1 for a in answers]
    rows = np.stack([_rows(scheme, a) for a in answers])
    return rns.interpolate(rows, points, scheme.engine.data_primes)


# -- 1. a malicious server with c corrupt holders opens two sets in one round -------------


def _two_sets_attack(scheme, corrupt):
    """Server asks for S1 = everyone and S2 = everyone but the victim in ONE round.

    Corrupt holders answer both sets; each honest holder is asked once, t − c of them
    for S1 and the rest for S2, then (to show the rule) once more for the other set.
    Returns the victim's recovered vector, or None with the honest refusals counted.
    """
    t = scheme.params.threshold
    session, inputs, uploads, requests = _collect(scheme, 8, seed=101)
    everyone = list(range(8))
    s1, s2 = everyone, everyone[1:]
    victim = requests["holder/0"].accepted[0]
    honest = [h for h in scheme.roster.of_kind("holder") if h not in corrupt]
    a1, a2 = [], []
    for h in corrupt:
        a1.append(_wire(scheme.holders[h].handle(keep_members(requests[h], s1))[0]))
        scheme.holders[h]._answered.clear()  # a corrupt holder ignores its own rule
        a2.append(_wire(scheme.holders[h].handle(keep_members(requests[h], s2))[0]))
    for i, h in enumerate(honest):
        first, second = (s1, s2) if i < t - len(corrupt) else (s2, s1)
        (a1 if first is s1 else a2).append(
            _wire(scheme.holders[h].handle(keep_members(requests[h], first))[0])
        )
        with pytest.raises(ShareReuseError):  # an honest holder never answers the other set
            scheme.holders[h].handle(keep_members(requests[h], second))
    if len(a1) < t or len(a2) < t:
        return None
    q = np.array(scheme.engine.data_primes, dtype=np.uint64)[:, None]
    k_victim = (_open(scheme, a1[:t]) + q - _open(scheme, a2[:t])) % q
    upload = uploads[victim]
    eng = scheme.engine
    c0 = rns.unpack_into(upload.residues, eng.data_primes, upload.count * eng.degree)
    c0 = c0.reshape(eng.k, upload.count, eng.degree)
    crs = eng.crs(session.coordinator.round_params.crs_seed, upload.count)
    got = eng.seal.decrypt_with(k_victim, c0, crs, eng.params.scale)[:DIM]
    return got, inputs[victim]


def test_server_with_corrupt_holders_beyond_the_bound_opens_a_victim():
    """Documents the bound: 3-of-5 with ONE holder on the server's side (c = 1 ≥ 2t − n).

    3-of-5 declares corrupt_holders = 0; this is the attack that declaration excludes.
    """
    scheme = make_federation(max_clients=8)
    assert scheme.describe()["corrupt_holders"] == 0
    got, victim = _two_sets_attack(scheme, ["holder/0"])
    assert np.abs(got - victim).max() <= scheme.params.error_bound  # one client decrypted


@pytest.mark.parametrize(
    ("committee", "threshold", "corrupt"),
    [(5, 3, 0), (5, 4, 1), (9, 7, 4)],
)
def test_server_with_corrupt_holders_within_the_bound_cannot_open_two_sets(
    committee, threshold, corrupt
):
    scheme = make_federation(
        max_clients=8, committee=committee, threshold=threshold, corrupt_holders=corrupt
    )
    assert corrupt <= 2 * threshold - committee - 1
    assert _two_sets_attack(scheme, scheme.roster.of_kind("holder")[:corrupt]) is None


@pytest.mark.parametrize(("committee", "threshold", "corrupt"), [(5, 3, 1), (9, 6, 4), (5, 5, 5)])
def test_declaring_more_corrupt_holders_than_the_threshold_tolerates_refused(
    committee, threshold, corrupt
):
    with pytest.raises(ParameterError, match="corrupt_holders"):
        ThresholdCKKS(
            max_clients=8,
            committee=committee,
            threshold=threshold,
            corrupt_holders=corrupt,
            preset=TEST_INSECURE_N512,
        )


def test_default_threshold_follows_the_declared_corrupt_holders():
    assert default_threshold(5) == 3
    assert default_threshold(9, 4) == 7
    scheme = ThresholdCKKS(max_clients=8, committee=9, corrupt_holders=4, preset=TEST_INSECURE_N512)
    assert (scheme.params.threshold, scheme.describe()["corrupt_holders"]) == (7, 4)


# -- 2. the floor is absolute and part of the endorsed parameters -------------------------


@pytest.mark.parametrize("kwargs", [{"max_clients": 1}, {"max_clients": 6, "min_clients": 1}])
def test_secure_sum_of_a_single_client_refused_at_construction(kwargs):
    with pytest.raises(ParameterError):
        ThresholdCKKS(preset=TEST_INSECURE_N512, **kwargs)


def _small_cohort_params(scheme, size, round_index):
    """A server that bypasses round_parameters and broadcasts a tiny cohort it chose."""
    cert = scheme._certificate()
    return broadcast_params(
        session=b"\x07" * 16,
        round=round_index,
        params_digest=scheme.engine.params_digest,
        roster_digest=scheme.roster.digest,
        federation=cert.federation,
        crs_seed=cert.seed,
        endorsements=cert.endorsements,
        cohort=tuple(cohort_of(size)),
        dim=DIM,
    )


def test_server_choosing_a_cohort_below_min_clients_refused_by_clients_and_holders():
    """a2: cohort {victim, 2 colluders} of 12 available; min_clients = 4 forbids it."""
    scheme = make_federation(max_clients=12, min_clients=4)
    with pytest.raises(ParameterError, match="min_clients"):
        scheme.round_parameters(900, cohort_of(3), DIM, rng=DeterministicRng.from_int(1))
    params = _small_cohort_params(scheme, 3, 900)
    with pytest.raises(InconsistentViewError, match="min_clients"):
        scheme.client_role(
            "client/0", _wire(params), scheme._keys["client/0"], rng=DeterministicRng.from_int(2)
        )
    with pytest.raises(InconsistentViewError, match="min_clients"):
        scheme.server_role(_wire(params))
    request = empty_request(params, 900, "holder/0")
    with pytest.raises(InconsistentViewError, match="min_clients"):
        scheme.holders["holder/0"].handle(_wire(request))
    # the round was not spent: the holder still answers a legitimate round 900
    _, _, _, requests = _collect(scheme, 6, seed=5, round_index=900)
    assert isinstance(scheme.holders["holder/0"].handle(requests["holder/0"])[0], ShareSum)


@pytest.mark.parametrize(
    "policy",
    [
        {"min_clients": 2},
        {"min_fraction": 0.1},
        {"min_honest": 6},
        {"threshold": 4},
        {"threshold": 4, "corrupt_holders": 1},
    ],
)
def test_server_with_its_own_policy_refused_by_clients_and_holders(federation, policy):
    """A client never trusts server-chosen policy: its own parameters decide."""
    server_side = ThresholdCKKS(
        max_clients=12, preset=TEST_INSECURE_N512, roster=federation.roster, **policy
    )
    assert server_side.engine.params_digest != federation.engine.params_digest
    server_side.certificate = federation._certificate()  # the committee's real signatures
    params = server_side.round_parameters(901, cohort_of(6), DIM, rng=DeterministicRng.from_int(3))
    with pytest.raises(InconsistentViewError, match="federation's"):
        federation.client_role(
            "client/0",
            _wire(params),
            federation._keys["client/0"],
            rng=DeterministicRng.from_int(4),
        )
    request = empty_request(params, 901, "holder/1")
    with pytest.raises(InconsistentViewError, match="federation's"):
        federation.holders["holder/1"].handle(_wire(request))


def test_parameter_digest_covers_the_floor_and_the_corrupt_holder_bound():
    base = {"max_clients": 12, "preset": TEST_INSECURE_N512, "committee": 5, "threshold": 4}
    digests = {
        ThresholdCKKS(**base, **extra).engine.params_digest
        for extra in (
            {},
            {"min_clients": 4},
            {"min_fraction": 0.75},
            {"min_honest": 5},
            {"corrupt_holders": 1},
        )
    }
    assert len(digests) == 5


# -- 3. K_S must not leak an honest client's key ------------------------------------------


def _coefficients(engine, rows):
    """Centred coefficient form of NTT rows (SEAL's own inverse NTT), prime 0."""
    work = _work_ciphertext(engine.seal, 1.0)
    view = ciphertext_view(work)
    view[0] = rows
    view[1] = 1
    engine.seal.evaluator.transform_from_ntt_inplace(work)
    q = engine.data_primes[0]
    c = ciphertext_view(work)[0, 0].astype(np.int64)
    return np.where(c > q // 2, c - q, c)


def test_opened_key_sum_reveals_no_coefficient_of_an_honest_key(federation):
    """a3: with two honest keys in S, K_S minus the colluders' keys must look uniform.

    Ternary keys put every coefficient of the sum in [−2, 2] and pin k₀ wherever
    |K| = 2; uniform keys make the sum uniform mod q (chi-square over 16 bins,
    p ≈ 1e-7 cut-off at 4096 samples).
    """
    eng = federation.engine
    q = eng.data_primes[0]
    qs = np.array(eng.data_primes, dtype=np.uint64)[:, None]
    samples = []
    for trial in range(8):
        k0 = eng.seal.fresh_secret(rng=DeterministicRng.from_int(trial, "k0"))[1]
        k1 = eng.seal.fresh_secret(rng=DeterministicRng.from_int(trial, "k1"))[1]
        samples.append(_coefficients(eng, (k0 + k1) % qs))
    coeffs = np.concatenate(samples)
    assert np.mean(np.abs(coeffs) <= 2) < 0.01
    counts = np.bincount(((coeffs % q) * 16 // q).astype(np.int64), minlength=16)
    expected = coeffs.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 60


# -- 4. blame: dealer or holder; forged answers blame nobody --------------------------------


def test_client_perturbing_one_share_is_blamed_as_dealer_or_holder(federation):
    from test_ckks_adversarial import _with_dealer

    session = open_round(federation, 8, DIM, 31)
    _with_dealer(federation, session, "client/1", (5,))
    inputs = inputs_for(session.clients, DIM, 31)
    drive(session, inputs=inputs)
    agg = session.coordinator.finalize()
    assert session.coordinator.faulty_holders["holder/4"].startswith("dealer or holder")
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


def test_forged_replayed_or_foreign_share_sums_blame_no_holder(federation):
    """a4.8: frames in a holder's name that it did not sign are dropped, not recorded."""
    session, inputs, _, requests = _collect(federation, 6, seed=32)
    server = session.coordinator
    answers = {h: _wire(federation.holders[h].handle(r)[0]) for h, r in requests.items()}
    real = answers["holder/2"]
    server.handle(_wire(dataclasses.replace(real, signature=b"\x00" * 64)))
    server.handle(_wire(dataclasses.replace(real, signature=b"")))
    for i in range(3):
        server.handle(_wire(dataclasses.replace(real, sender=f"holder/spam{i}")))
    for answer in answers.values():
        server.handle(answer)
    server.handle(real)  # a replay of a valid answer
    assert server.faulty_holders == {}
    server.advance()
    agg = server.finalize()
    assert np.abs(agg.vector - exact_sum(inputs, agg.contributors)).max() <= agg.error_bound


# -- 5. round indices out of range -----------------------------------------------------------


@pytest.mark.parametrize("round_index", [-1, 1 << 63, (1 << 64) + 5])
def test_round_index_out_of_range_refused_with_named_errors(federation, round_index):
    with pytest.raises(ParameterError, match="round_index"):
        federation.round_parameters(
            round_index, cohort_of(4), DIM, rng=DeterministicRng.from_int(1)
        )
    params = _small_cohort_params(federation, 4, 0)
    with pytest.raises(DecodeError, match="round"):
        dataclasses.replace(params, round=round_index)
    _, _, _, requests = _collect(federation, 4, seed=33)
    for msg in (requests["holder/0"],):
        with pytest.raises(DecodeError, match="round"):
            dataclasses.replace(msg, round=round_index)


# -- 6. a restarted holder cannot answer twice --------------------------------------------


def test_restarted_holder_restores_its_spent_rounds(federation):
    store = {}

    def persist(state):
        # written before release: restoring it already refuses the round being answered
        restored = federation.holder_role(
            federation._keys["holder/3"], rng=DeterministicRng.from_int(1), spent_state=state
        )
        with pytest.raises(ShareReuseError):
            restored.handle(pending)
        store["state"] = state

    session, _, _, requests = _collect(federation, 6, seed=34, round_index=700)
    pending = requests["holder/3"]
    holder = federation.holders["holder/3"]
    holder._persist = persist  # as if built with holder_role(..., persist=persist)
    try:
        assert isinstance(holder.handle(pending)[0], ShareSum)
    finally:
        holder._persist = None
    restarted = federation.holder_role(
        federation._keys["holder/3"], rng=DeterministicRng.from_int(2), spent_state=store["state"]
    )
    with pytest.raises(ShareReuseError):
        restarted.handle(pending)
    _, _, _, later = _collect(federation, 6, seed=35, round_index=701)
    assert isinstance(restarted.handle(later["holder/3"])[0], ShareSum)


def test_holder_whose_persist_fails_releases_nothing(federation):
    _, _, _, requests = _collect(federation, 6, seed=36, round_index=702)

    def broken(state):
        raise OSError("disk full")

    holder = federation.holder_role(
        federation._keys["holder/4"],
        rng=DeterministicRng.from_int(3),
        spent_state=federation.holders["holder/4"].spent_state(),
        persist=broken,
    )
    with pytest.raises(OSError):
        holder.handle(requests["holder/4"])
    holder._persist = None
    assert isinstance(holder.handle(requests["holder/4"])[0], ShareSum)  # not marked spent


def test_corrupt_or_foreign_spent_state_refused(federation):
    state = federation.holders["holder/0"].spent_state()
    keys = federation._keys
    with pytest.raises(DecodeError):
        federation.holder_role(
            keys["holder/0"], rng=DeterministicRng.from_int(1), spent_state=state[:-1] + b"\x00"
        )
    with pytest.raises(InconsistentViewError):
        federation.holder_role(
            keys["holder/1"], rng=DeterministicRng.from_int(1), spent_state=state
        )


# -- 7. request sizes ----------------------------------------------------------------------


def test_holder_size_limits_fit_honest_requests_and_refuse_padded_envelopes(federation):
    _, _, _, requests = _collect(federation, 12, seed=37, round_index=703)
    holder = federation.holders["holder/0"]
    real = requests["holder/0"]
    assert len(encode(real)) <= holder.max_message_bytes < 2 * len(encode(real))
    assert len(real.round_params) <= holder.max_params_bytes
    padded = dataclasses.replace(real, envelopes=(real.envelopes[0] + b"\x00", *real.envelopes[1:]))
    with pytest.raises(DecodeError, match="envelopes"):
        holder.handle(_wire(padded))
    huge = dataclasses.replace(
        real, round_params=real.round_params + bytes(holder.max_params_bytes)
    )
    with pytest.raises(DecodeError):
        holder.handle(_wire(huge))
    assert isinstance(holder.handle(real)[0], ShareSum)  # neither spent the round


def test_server_inflating_a_request_refused_before_the_holder_parses_it(federation):
    """The transport decodes a holder's frames with the holder's own size limit."""
    from test_ckks_adversarial import _server_rewriting

    def inflate(server, req):  # every receipt twice: twice the legitimate size
        return dataclasses.replace(
            req,
            accepted=req.accepted * 2,
            ct_digests=req.ct_digests * 2,
            ephemerals=req.ephemerals * 2,
            envelope_digests=req.envelope_digests * 2,
            signatures=req.signatures * 2,
            envelopes=req.envelopes * 2,
        )

    session = open_round(federation, 12, DIM, 38, server_cls=_server_rewriting(inflate))
    inputs = inputs_for(session.clients, DIM, 38)
    with pytest.raises(DecodeError, match="frame must be at most"):
        InProcessTransport().run(session, inputs=inputs)


# -- 8. the CRS ceremony ---------------------------------------------------------------------


def _ceremony(tamper=None, silent=(), **kwargs):
    scheme = ThresholdCKKS(max_clients=6, preset=TEST_INSECURE_N512, **kwargs)
    session = scheme.setup(rng=DeterministicRng.from_int(3, "ceremony"))
    drive(session, tamper=tamper, silent=silent, silent_from=0)
    return scheme


def test_ceremony_reveal_differing_from_commitment_refused():
    """A corrupt holder (signing with its own key) reveals another contribution."""
    box = {}

    def lie(msg):
        if isinstance(msg, Relay) and msg.stage == 2:
            frames = list(msg.frames)
            reveal = decode(frames[0])
            changed = dataclasses.replace(reveal, contribution=b"\x11" * 32)
            frames[0] = encode(
                transcript.sign_message(changed, box["scheme"]._keys[reveal.sender].signing)
            )
            return dataclasses.replace(msg, frames=tuple(frames))
        return msg

    scheme = ThresholdCKKS(max_clients=6, preset=TEST_INSECURE_N512)
    box["scheme"] = scheme
    session = scheme.setup(rng=DeterministicRng.from_int(3, "ceremony"))
    with pytest.raises(IntegrityError):
        drive(session, tamper=lie)


def test_ceremony_silent_holder_aborts():
    with pytest.raises(InsufficientParticipantsError):
        _ceremony(silent=("holder/4",))


def test_ceremony_server_cannot_choose_the_crs():
    """The server's own reveal frame in a holder's place is refused (unsigned by it)."""

    def substitute(msg):
        if isinstance(msg, Relay) and msg.stage == 2:
            frames = list(msg.frames)
            reveal = decode(frames[1])
            frames[1] = encode(dataclasses.replace(reveal, contribution=b"\x22" * 32))
            return dataclasses.replace(msg, frames=tuple(frames))
        return msg

    with pytest.raises(IntegrityError):
        _ceremony(tamper=substitute)


def test_ceremony_roster_or_policy_substitution_refused_by_holders():
    for change in (
        {"roster_digest": b"\x33" * 32},
        {
            "params_digest": ThresholdCKKS(
                max_clients=6, min_clients=2, preset=TEST_INSECURE_N512
            ).engine.params_digest
        },
    ):

        def swap(msg, change=change):
            return dataclasses.replace(msg, **change) if isinstance(msg, CeremonyOpen) else msg

        with pytest.raises(InconsistentViewError):
            _ceremony(tamper=swap)
