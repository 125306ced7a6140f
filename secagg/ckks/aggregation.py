"""Round roles: clients encrypt under fresh keys and share them; the server sums and opens.

Client i, once per round: a fresh kᵢ uniform mod Q; c0ᵢⱼ = −aⱼ·kᵢ − eᵢⱼ + Encode_Δ(mᵢⱼ)
for the committee's public aⱼ; t-of-n Shamir shares of kᵢ (per prime), each in
an AEAD envelope to one holder; an Ed25519 signature over (session, round,
round parameters, ciphertext digest, envelope digests). One message, then it
may leave.

Server: verifies every submission on arrival and excludes (and records) a bad
one; sums the accepted c0s in numpy (lazily: residues < 2^48, so 2^15 terms fit
a uint64); at its deadline asks every holder for its share sum over the accepted
set S; validates each answer on arrival; at the next deadline interpolates K_S
from t consistent answers (more answers are cross-checked) and has SEAL decrypt
(Σc0, a) under K_S. It never holds a single client's key or plaintext: it learns
the sum, K_S and (implicitly) Σeᵢ.
"""

from __future__ import annotations

import enum
import itertools

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import channels
from secagg.ckks import residues as rns
from secagg.ckks import transcript
from secagg.ckks.ceremony import verify_endorsement
from secagg.ckks.context import CkksEngine
from secagg.ckks.holder import envelope_key
from secagg.ckks.messages import (
    BROADCAST,
    CkksRoundParams,
    CkksSubmission,
    ShareComplaint,
    ShareRequest,
    ShareSum,
)
from secagg.errors import (
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ParameterError,
    SecAggError,
    UnexpectedPhaseError,
)
from secagg.identity import PartyKeys, Roster
from secagg.protocol import (
    SERVER,
    Aggregate,
    AggregationServer,
    ClientRole,
    PartyId,
    check_round,
    check_vector,
)
from secagg.rand import Csprng
from secagg.wire import Message, encode

MAX_LAZY_TERMS = 1 << 15
MAX_SUBSETS = 256  # t-subsets tried when holder answers disagree


def check_round_params(engine: CkksEngine, roster: Roster, params: CkksRoundParams) -> None:
    """What a party checks before taking part: its own parameters, roster and the CRS.

    Raises:
        InconsistentViewError: other parameters, or a cohort outside the roster.
        IntegrityError: a missing or invalid holder endorsement of the CRS seed, or a
            roster other than this party's own (a substituted committee).
    """
    if not isinstance(params, CkksRoundParams) or params.sender != SERVER:
        raise InconsistentViewError("round parameters must be CkksRoundParams from the server")
    if params.params_digest != engine.params_digest:
        raise InconsistentViewError("round parameters must be this federation's")
    if params.roster_digest != roster.digest:
        raise IntegrityError("holder roster")
    committee = roster.of_kind("holder")
    if len(committee) != engine.params.committee or len(params.endorsements) != len(committee):
        raise IntegrityError("CRS certificate")
    payload = transcript.crs_payload(
        params.federation, roster.digest, params.crs_seed, engine.params_digest
    )
    for holder, signature in zip(committee, params.endorsements, strict=True):
        verify_endorsement(roster, holder, signature, payload)
    cohort = params.cohort
    clients = set(roster.of_kind("client"))
    if len(set(cohort)) != len(cohort) or not set(cohort) <= clients:
        raise InconsistentViewError("cohort must be distinct clients of the roster")
    engine.params.check_cohort(len(cohort))  # the server chose it: the signed floor bounds it


class ClientPhase(enum.Enum):
    READY = enum.auto()
    SENT = enum.auto()


class ServerPhase(enum.Enum):
    COLLECT = enum.auto()
    OPEN = enum.auto()
    DONE = enum.auto()


class CkksClient(ClientRole):
    """Encrypts its update under a fresh key and shares the key with the committee.

    Security: holds its identity keys and, inside :meth:`protect` only, the fresh
    secret kᵢ; kᵢ leaves only as Shamir shares inside AEAD envelopes.
    """

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ClientPhase.READY: (),
        ClientPhase.SENT: (),
    }

    def __init__(
        self,
        party: PartyId,
        engine: CkksEngine,
        roster: Roster,
        params: CkksRoundParams,
        keys: PartyKeys,
        *,
        rng: Csprng,
    ) -> None:
        super().__init__(party, ClientPhase.READY)
        if keys.party != party or roster.get(party) != keys.public:
            raise ParameterError(f"client keys must match its roster entry; got {party}")
        check_round_params(engine, roster, params)
        if party not in params.cohort:
            raise InconsistentViewError(f"{party} must be in the round's cohort")
        self._engine = engine
        self._roster = roster
        self._params = params
        self._params_digest = transcript.round_params_digest(encode(params))
        self._keys = keys
        self._rng = rng

    def protect(self, vector: np.ndarray) -> list[Message]:
        """Encrypt ``vector`` and share this round's key: the client's one message.

        Security: the fresh key kᵢ is dropped when this returns.
        """
        if self.phase is not ClientPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must protect once per round")
        eng, p = self._engine, self._params
        values = check_vector(vector, p.dim, bound=eng.params.value_bound)
        count = eng.ciphertext_count(p.dim)
        padded = np.zeros(count * eng.degree, dtype=np.float64)
        padded[: p.dim] = values
        secret_key, rows = eng.seal.fresh_secret(rng=self._rng)
        c0 = eng.seal.encrypt_c0(secret_key, padded, eng.params.scale, eng.crs(p.crs_seed, count))
        residues = rns.pack(c0, eng.data_primes)
        ephemeral = channels.new_agreement_key(rng=self._rng.fork("ckks/ephemeral"))
        eph_public = channels.public_bytes(ephemeral)
        envelopes = self._envelopes(rows, ephemeral, eph_public)
        del secret_key, rows
        ct_digest = transcript.ciphertext_digest(residues)
        payload = transcript.receipt_payload(
            p.session,
            p.round,
            self._params_digest,
            ct_digest,
            eph_public,
            [transcript.blob_digest("envelope", e) for e in envelopes],
        )
        self.phase = ClientPhase.SENT
        return [
            CkksSubmission(
                session=p.session,
                round=p.round,
                sender=self.party,
                recipient=SERVER,
                count=count,
                residues=residues,
                ephemeral=eph_public,
                envelopes=envelopes,
                signature=channels.sign(self._keys.signing, transcript.RECEIPT_PURPOSE, payload),
            )
        ]

    def _shares(self, rows: np.ndarray) -> np.ndarray:
        """t-of-n Shamir shares ``(n, k, N)`` of kᵢ's NTT rows, one sharing per prime."""
        eng = self._engine
        n = eng.params.committee
        shares = np.empty((n, eng.k, eng.degree), dtype=np.uint64)
        for j, q in enumerate(eng.data_primes):
            shares[:, j] = rns.shamir_share(
                rows[j],
                threshold=eng.params.threshold,
                xs=list(range(1, n + 1)),
                prime=q,
                rng=self._rng.fork(f"ckks/shamir/{j}"),
            )
        return shares

    def _envelopes(
        self, rows: np.ndarray, ephemeral: X25519PrivateKey, eph_public: bytes
    ) -> tuple[bytes, ...]:
        eng, p = self._engine, self._params
        committee = self._roster.of_kind("holder")
        out = []
        for holder, share in zip(committee, self._shares(rows), strict=True):
            shared = channels.agree(ephemeral, self._roster[holder].agreement)
            key = envelope_key(shared, p.session, p.round, self.party, holder, eph_public)
            header = transcript.envelope_header(
                p.session, p.round, self._params_digest, self.party, holder
            )
            out.append(channels.seal(key, rns.pack(share, eng.data_primes), header))
        return tuple(out)

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)  # clients accept nothing after submitting: always raises
        return []


class CkksAggregator(AggregationServer):
    """Sums c0s, collects the holders' share sums, opens K_S and decrypts the sum."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ServerPhase.COLLECT: (CkksSubmission,),
        ServerPhase.OPEN: (ShareSum, ShareComplaint),
        ServerPhase.DONE: (),
    }

    def __init__(self, engine: CkksEngine, roster: Roster, params: CkksRoundParams) -> None:
        super().__init__(SERVER, ServerPhase.COLLECT)
        check_round_params(engine, roster, params)
        self._engine = engine
        self._roster = roster
        self._params = params
        self._frame = encode(params)
        self._params_digest = transcript.round_params_digest(self._frame)
        self._committee = roster.of_kind("holder")
        self._cohort = params.cohort
        self._count = engine.ciphertext_count(params.dim)
        self._acc = np.zeros((engine.k, self._count * engine.degree), dtype=np.uint64)
        self._lazy_terms = 0
        self._receipts: dict[PartyId, CkksSubmission] = {}
        self._ct_digests: dict[PartyId, bytes] = {}
        self._env_digests: dict[PartyId, tuple[bytes, ...]] = {}
        self._accepted: tuple[PartyId, ...] = ()
        self._request_digest = b""
        self._answers: dict[PartyId, np.ndarray] = {}
        self.rejected: dict[PartyId, str] = {}  # client → why its submission was excluded
        self.accused: dict[PartyId, set[PartyId]] = {}  # client → holders it gave bad envelopes
        self.faulty_holders: dict[PartyId, str] = {}
        self._result: Aggregate | None = None

    @property
    def round_params(self) -> CkksRoundParams:
        return self._params

    def start(self) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if isinstance(msg, CkksSubmission):
            self._accept(msg)
        elif isinstance(msg, ShareSum | ShareComplaint):
            self._collect(msg)
        return []

    # -- collection ----------------------------------------------------------------

    def _accept(self, msg: CkksSubmission) -> None:
        """Verify on arrival; a bad submission is excluded and recorded, never fatal.

        A rejection does not block the sender: anyone can send a bad frame under an
        honest client's name, so only a valid, signed submission counts (once).
        """
        if msg.sender in self._receipts:
            return  # the first valid submission stands; a repeat is never summed
        if self._lazy_terms == MAX_LAZY_TERMS - 1:
            rns.reduce_rows(self._acc, self._engine.data_primes)
            self._lazy_terms = 0
        try:
            check_round(msg, self._params.session, self._params.round)
            digests = self._verify(msg)
            rns.add_packed(self._acc, msg.residues, self._engine.data_primes)
        except SecAggError as exc:
            self.rejected[msg.sender] = f"{type(exc).__name__}: {exc}"
            return
        self.rejected.pop(msg.sender, None)
        self._lazy_terms += 1
        self._receipts[msg.sender] = msg
        self._ct_digests[msg.sender], self._env_digests[msg.sender] = digests

    def _verify(self, msg: CkksSubmission) -> tuple[bytes, tuple[bytes, ...]]:
        """Shape and signature over the digest of exactly these residue bytes.

        The residues are range-checked as they are summed (:func:`rns.add_packed`),
        which leaves the sum untouched when it refuses them.
        """
        eng = self._engine
        if msg.sender not in self._cohort:
            raise InconsistentViewError(f"sender must be in the round's cohort; got {msg.sender}")
        if msg.count != self._count:
            raise InconsistentViewError(f"submission must hold {self._count} ciphertexts")
        n = len(self._committee)
        size = rns.packed_size(eng.data_primes, eng.degree) + channels.AEAD_TAG_BYTES
        if len(msg.envelopes) != n or any(len(e) != size for e in msg.envelopes):
            raise InconsistentViewError(f"submission must carry {n} envelopes of {size} bytes")
        ct_digest = transcript.ciphertext_digest(msg.residues)
        env_digests = tuple(transcript.blob_digest("envelope", e) for e in msg.envelopes)
        payload = transcript.receipt_payload(
            msg.session, msg.round, self._params_digest, ct_digest, msg.ephemeral, env_digests
        )
        channels.verify(
            self._roster[msg.sender].signing, msg.signature, transcript.RECEIPT_PURPOSE, payload
        )
        return ct_digest, env_digests

    def advance(self) -> list[Message]:
        if self.phase is ServerPhase.COLLECT:
            return self._request_shares()
        if self.phase is ServerPhase.OPEN:
            self._open()
            return []
        raise UnexpectedPhaseError(f"server in phase {self.phase.name} has no deadline")

    def _request_shares(self) -> list[Message]:
        self.phase = ServerPhase.OPEN
        accepted = tuple(p for p in self._cohort if p in self._receipts)
        floor = self._engine.params.floor(len(self._cohort))
        if len(accepted) < floor:
            self.phase = ServerPhase.DONE
            raise InsufficientParticipantsError(
                f"contributors must be at least the floor {floor}; got {len(accepted)}"
            )
        self._accepted = accepted
        receipts = [self._receipts[p] for p in accepted]
        ct_digests = tuple(self._ct_digests[p] for p in accepted)
        env_digests = tuple(d for p in accepted for d in self._env_digests[p])
        self._request_digest = transcript.request_digest(
            self._frame, accepted, ct_digests, env_digests
        )
        out: list[Message] = []
        for h_index, holder in enumerate(self._committee):
            out.append(
                ShareRequest(
                    session=self._params.session,
                    round=self._params.round,
                    sender=SERVER,
                    recipient=holder,
                    round_params=self._frame,
                    accepted=accepted,
                    ct_digests=ct_digests,
                    ephemerals=tuple(m.ephemeral for m in receipts),
                    envelope_digests=env_digests,
                    signatures=tuple(m.signature for m in receipts),
                    envelopes=tuple(m.envelopes[h_index] for m in receipts),
                )
            )
        self._receipts = {}  # the envelopes are forwarded; the c0s are already summed
        return out

    def _collect(self, msg: ShareSum | ShareComplaint) -> None:
        """Validate a holder's answer on arrival; only a signed fault is recorded.

        Anyone can send a frame in a holder's name: senders outside the committee
        and unsigned/forged or replayed answers are ignored, never blamed on the holder.
        """
        holder = msg.sender
        if holder not in self._committee:
            return
        try:
            transcript.verify_message(msg, self._roster[holder].signing)
        except SecAggError:
            return
        if (
            msg.session != self._params.session
            or msg.round != self._params.round
            or msg.request_digest != self._request_digest
        ):
            return  # a signed answer to another request: a replay, not this holder's fault
        if holder in self._answers:
            return
        if isinstance(msg, ShareComplaint):
            for client in msg.accused:
                if client in self._accepted:
                    self.accused.setdefault(client, set()).add(holder)
            return
        eng = self._engine
        try:
            self._answers[holder] = rns.unpack_into(msg.residues, eng.data_primes, eng.degree)
        except SecAggError as exc:
            self.faulty_holders[holder] = f"{type(exc).__name__}: {exc}"

    # -- opening -------------------------------------------------------------------

    def _open(self) -> None:
        eng = self._engine
        self.phase = ServerPhase.DONE
        t = eng.params.threshold
        if len(self._answers) < t:
            blame = f"; clients with bad envelopes: {sorted(self.accused)}" if self.accused else ""
            raise InsufficientParticipantsError(
                f"valid share sums must number at least t = {t}; got {len(self._answers)}{blame}"
            )
        key = self._interpolate()
        rns.reduce_rows(self._acc, eng.data_primes)
        c0 = self._acc.reshape(eng.k, self._count, eng.degree)
        crs = eng.crs(self._params.crs_seed, self._count)
        values = eng.seal.decrypt_with(key, c0, crs, eng.params.scale)[: self._params.dim]
        self._acc = np.empty((0, 0), dtype=np.uint64)
        self._result = Aggregate(
            vector=values,
            contributors=self._accepted,
            dropped=tuple(p for p in self._cohort if p not in self._accepted),
            error_bound=eng.params.error_bound,
        )

    def _interpolate(self) -> np.ndarray:
        """K_S from t answers; with more, the answers must agree (a bad share is caught)."""
        holders = [h for h in self._committee if h in self._answers]
        points = [self._committee.index(h) + 1 for h in holders]
        rows = np.stack([self._answers[h] for h in holders])
        return open_key(
            rows,
            points,
            self._engine.params.threshold,
            self._engine.data_primes,
            faulty=self.faulty_holders,
            holders=holders,
        )

    @property
    def done(self) -> bool:
        return self.phase is ServerPhase.DONE

    def finalize(self) -> Aggregate:
        if self._result is None:
            raise UnexpectedPhaseError("the round has not produced an aggregate")
        return self._result


def open_key(
    rows: np.ndarray,
    points: list[int],
    threshold: int,
    primes: tuple[int, ...],
    *,
    faulty: dict[PartyId, str] | None = None,
    holders: list[PartyId] | None = None,
) -> np.ndarray:
    """Interpolate f(0) from share rows at ``points``; cross-check any extra rows.

    With exactly t rows nothing can be checked. With more, the polynomial agreeing
    with the most rows is used if at least t+1 agree; holders off it are recorded
    in ``faulty`` as "dealer or holder" (a client that dealt one holder a bad share
    makes an honest holder look faulty). Otherwise the shares are inconsistent (a
    client dealt shares not on one polynomial, or several holders lied) and nothing
    is opened.

    Raises:
        InconsistentViewError: no polynomial of degree < t agrees with t+1 answers.
    """
    m = len(points)
    if m == threshold:
        return rns.interpolate(rows, points, primes)
    best: tuple[int, tuple[int, ...], list[int]] | None = None
    for subset in itertools.islice(itertools.combinations(range(m), threshold), MAX_SUBSETS):
        xs = [points[i] for i in subset]
        sub = rows[list(subset)]
        agree = list(subset)
        for i in range(m):
            if i not in subset and np.array_equal(
                rns.interpolate(sub, xs, primes, at=points[i]), rows[i]
            ):
                agree.append(i)
        if best is None or len(agree) > best[0]:
            best = (len(agree), subset, agree)
        if len(agree) == m:
            break
    if best is None or best[0] < threshold + 1:
        raise InconsistentViewError(
            f"holder answers must agree on one key (≥ t+1 = {threshold + 1}); they do not"
        )
    _, subset, agree = best
    if faulty is not None and holders is not None:
        for i in range(m):
            if i not in agree:
                # the holder lied, or a client dealt it a bad share: the server cannot tell
                faulty[holders[i]] = "dealer or holder: share sum off the others' polynomial"
    return rns.interpolate(rows[list(subset)], [points[i] for i in subset], primes)


def broadcast_params(**fields: object) -> CkksRoundParams:
    """A :class:`CkksRoundParams` addressed to everyone (the server's broadcast)."""
    return CkksRoundParams(sender=SERVER, recipient=BROADCAST, **fields)  # type: ignore[arg-type]
