"""Round roles: clients encrypt under the joint key; the server sums and fuses shares.

The server sums the raw RNS residues of the accepted ciphertexts in numpy
(lazily: residues < 2^48, so up to 2^15 terms fit a uint64 before reduction),
never building a SEAL object per client. At its deadline it asks every holder
to decrypt the aggregate's c1, bound by a digest to the accepted submissions;
at the next deadline it fuses any t shares with integer Lagrange weights and
decodes. It never holds a secret key, a key share or a client's plaintext.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import numpy as np

from secagg.ckks import channels, transcript
from secagg.ckks import residues as rns
from secagg.ckks.context import CkksEngine
from secagg.ckks.messages import (
    FORMAT_VERSION,
    CkksSubmission,
    DecryptRequest,
    PartialDecryption,
    SubmissionReceipt,
)
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    UnexpectedPhaseError,
)
from secagg.protocol import (
    SERVER,
    Aggregate,
    AggregationServer,
    ClientRole,
    PartyId,
    check_round,
    check_vector,
)
from secagg.wire import Message

MAX_LAZY_TERMS = 1 << 15


class ClientPhase(enum.Enum):
    READY = enum.auto()
    SENT = enum.auto()


class ServerPhase(enum.Enum):
    COLLECT = enum.auto()
    DECRYPT = enum.auto()
    DONE = enum.auto()


class CkksClient(ClientRole):
    """Encrypts its update with the joint public key; holds no secret key."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ClientPhase.READY: (),
        ClientPhase.SENT: (),
    }

    def __init__(
        self,
        party: PartyId,
        engine: CkksEngine,
        encryptor: object,
        session: bytes,
        round_index: int,
        dim: int,
        holders: Sequence[PartyId],
    ) -> None:
        super().__init__(party, ClientPhase.READY)
        self._engine = engine
        self._encryptor = encryptor
        self._session = session
        self._round = round_index
        self._dim = dim
        self._holders = tuple(holders)

    def protect(self, vector: np.ndarray) -> list[Message]:
        """Encrypt ``vector``; send it to the server and a receipt of its digest to each holder.

        Security: the plaintext update is only ever encrypted under the joint key.
        """
        if self.phase is not ClientPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must protect once per round")
        eng = self._engine
        values = check_vector(vector, self._dim, bound=eng.params.value_bound)
        count = eng.ciphertext_count(self._dim)
        padded = np.zeros(count * eng.degree, dtype=np.float64)
        padded[: self._dim] = values
        cts = eng.seal.encrypt(self._encryptor, padded, eng.params.scale)
        payload = rns.pack(cts, eng.data_primes)
        digest = transcript.submission_digest(self._session, self._round, self.party, payload)
        self.phase = ClientPhase.SENT
        out: list[Message] = [
            CkksSubmission(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=SERVER,
                version=FORMAT_VERSION,
                params_digest=eng.params_digest,
                count=count,
                residues=payload,
            )
        ]
        out += [
            SubmissionReceipt(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=h,
                digest=digest,
            )
            for h in self._holders
        ]
        return out

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)  # clients accept nothing after submitting: always raises
        return []


class CkksAggregator(AggregationServer):
    """Sums ciphertexts, requests shares, fuses any t of them (the combiner)."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ServerPhase.COLLECT: (CkksSubmission,),
        ServerPhase.DECRYPT: (PartialDecryption,),
        ServerPhase.DONE: (),
    }

    def __init__(
        self,
        engine: CkksEngine,
        session: bytes,
        round_index: int,
        cohort: Sequence[PartyId],
        dim: int,
        roster: Mapping[PartyId, bytes],
        min_clients: int,
    ) -> None:
        super().__init__(SERVER, ServerPhase.COLLECT)
        self._engine = engine
        self._session = session
        self._round = round_index
        self._cohort = tuple(cohort)
        self._dim = dim
        self._roster = dict(roster)  # public identity keys only
        self._holders = tuple(roster)
        self._min_clients = min_clients
        self._count = engine.ciphertext_count(dim)
        per_prime = self._count * 2 * engine.degree
        self._acc = np.zeros((engine.k, per_prime), dtype=np.uint64)
        self._scratch = np.empty_like(self._acc)
        self._lazy_terms = 0
        self._digests: dict[PartyId, bytes] = {}
        self._c0: np.ndarray | None = None
        self._request_digest = b""
        self._shares: dict[PartyId, bytes] = {}
        self._result: Aggregate | None = None

    def start(self) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        check_round(msg, self._session, self._round)
        if isinstance(msg, CkksSubmission):
            self._accept(msg)
        elif isinstance(msg, PartialDecryption):
            self._collect_share(msg)
        return []

    def _accept(self, msg: CkksSubmission) -> None:
        eng = self._engine
        if msg.sender not in self._cohort:
            raise InconsistentViewError(f"sender must be in the round's cohort; got {msg.sender}")
        if msg.sender in self._digests:
            raise InconsistentViewError(f"{msg.sender} must submit once; got a duplicate")
        if msg.params_digest != eng.params_digest:
            raise DecodeError("submission must use this federation's parameters")
        if msg.count != self._count:
            raise DecodeError(f"submission must hold {self._count} ciphertexts; got {msg.count}")
        # decode (validates every residue < qⱼ) before touching the running sum
        part = rns.unpack_into(msg.residues, eng.data_primes, self._acc.shape[1], self._scratch)
        if self._lazy_terms == MAX_LAZY_TERMS - 1:
            rns.reduce_rows(self._acc, eng.data_primes)
            self._lazy_terms = 0
        rns.accumulate(self._acc, part)
        self._lazy_terms += 1
        self._digests[msg.sender] = transcript.submission_digest(
            self._session, self._round, msg.sender, msg.residues
        )

    def advance(self) -> list[Message]:
        if self.phase is ServerPhase.COLLECT:
            return self._request_decryption()
        if self.phase is ServerPhase.DECRYPT:
            self._fuse()
            return []
        raise UnexpectedPhaseError(f"server in phase {self.phase.name} has no deadline")

    def _request_decryption(self) -> list[Message]:
        eng = self._engine
        self.phase = ServerPhase.DECRYPT
        accepted = tuple(p for p in self._cohort if p in self._digests)
        if len(accepted) < self._min_clients:
            self.phase = ServerPhase.DONE
            raise InsufficientParticipantsError(
                f"contributors must be at least {self._min_clients}; got {len(accepted)}"
            )
        rns.reduce_rows(self._acc, eng.data_primes)
        total = self._acc.reshape(eng.k, self._count, 2, eng.degree)
        self._c0 = np.ascontiguousarray(total[:, :, 0])
        c1_bytes = rns.pack(np.ascontiguousarray(total[:, :, 1]), eng.data_primes)
        self._acc = self._scratch = np.empty((0, 0), dtype=np.uint64)  # release the buffers
        c0_digest = transcript.blob_digest("aggregate-c0", rns.pack(self._c0, eng.data_primes))
        digests = tuple(self._digests[p] for p in accepted)
        self._request_digest = transcript.request_digest(
            self._session,
            self._round,
            accepted,
            digests,
            c0_digest,
            transcript.blob_digest("aggregate-c1", c1_bytes),
        )
        self._accepted = accepted
        return [
            DecryptRequest(
                session=self._session,
                round=self._round,
                sender=SERVER,
                recipient=h,
                accepted=accepted,
                submission_digests=digests,
                c0_digest=c0_digest,
                count=self._count,
                c1_residues=c1_bytes,
                digest=self._request_digest,
            )
            for h in self._holders
        ]

    def _collect_share(self, msg: PartialDecryption) -> None:
        if msg.sender not in self._roster:
            raise InconsistentViewError(f"shares must come from key holders; got {msg.sender}")
        if msg.sender in self._shares:
            raise InconsistentViewError(f"{msg.sender} must send one share; got a duplicate")
        if msg.digest != self._request_digest:
            raise InconsistentViewError(f"share of {msg.sender} answers another request")
        channels.verify(msg, self._roster)
        self._shares[msg.sender] = msg.residues

    def _fuse(self) -> None:
        eng = self._engine
        self.phase = ServerPhase.DONE
        t = eng.params.threshold
        responders = [h for h in self._holders if h in self._shares]
        if len(responders) < t or self._c0 is None:
            raise InsufficientParticipantsError(
                f"decryption shares must number at least t = {t}; got {len(responders)}"
            )
        chosen = responders[:t]
        per_prime = self._count * eng.degree
        shares = {
            self._holders.index(h) + 1: rns.unpack_into(
                self._shares[h], eng.data_primes, per_prime
            ).reshape(eng.k, self._count, eng.degree)
            for h in chosen
        }
        values = fuse_shares(eng, self._c0, shares)[: self._dim]
        step = eng.params.precision
        released = np.round(values / step) * step
        self._result = Aggregate(
            vector=released,
            contributors=self._accepted,
            dropped=tuple(p for p in self._cohort if p not in self._digests),
            error_bound=eng.params.error_bound,
        )

    @property
    def done(self) -> bool:
        return self.phase is ServerPhase.DONE

    def finalize(self) -> Aggregate:
        if self._result is None:
            raise UnexpectedPhaseError("the round has not produced an aggregate")
        return self._result


def fuse_shares(engine: CkksEngine, c0: np.ndarray, shares: Mapping[int, np.ndarray]) -> np.ndarray:
    """Decode D·c0 + Σⱼ (D·λⱼ)·dⱼ at scale D·Δ from shares keyed by Shamir point.

    ``c0`` and every share are prime-major ``(k, count, N)``; the result is the
    decoded reals (count·N), before rounding to the release precision.
    """
    points = tuple(shares)
    weights = engine.weights(points)
    k, count, n = c0.shape
    terms = [(engine.params.lagrange.denominator, c0.reshape(k, count * n))]
    terms += [(w, shares[p].reshape(k, count * n)) for p, w in zip(points, weights, strict=True)]
    fused = rns.weighted_sum(terms, engine.data_primes).reshape(k, count, n)
    return engine.seal.decode(fused, engine.params.scale * engine.params.lagrange.denominator)
