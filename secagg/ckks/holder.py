"""The key holder: fixes the CRS at setup, then releases one share sum per round.

A holder never applies a secret to data someone else chose. Per round it
opens the share envelopes the accepted clients addressed to it, checks every
client's signature against the out-of-band roster, and returns the sum of the
shares: a Shamir share of K_S = Σ_{i∈S} kᵢ, which is a fresh secret of that
round only. It refuses a set below the floor of the signed parameters, a round
it already answered (with 2t ≥ n + c + 1 for the declared corrupt_holders c, a
server cannot collect t answers for two sets of one round), and
any request whose parameters, CRS or receipts do not verify.

Security: the holder's long-lived secrets are its identity keys
(:class:`~secagg.identity.PartyKeys`): the Ed25519 key signs its messages and
the X25519 key opens the envelopes. The shares it opens are secret until summed.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable

import numpy as np

from secagg import channels
from secagg.ckks import residues as rns
from secagg.ckks import transcript
from secagg.ckks.ceremony import STAGE_COMMITS, STAGE_REVEALS
from secagg.ckks.context import CkksEngine
from secagg.ckks.messages import (
    CeremonyOpen,
    CkksRoundParams,
    CrsEndorsement,
    Relay,
    SeedCommit,
    SeedReveal,
    ShareComplaint,
    ShareRequest,
    ShareSum,
)
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    IntegrityError,
    ParameterError,
    SecAggError,
    ShareReuseError,
    UnexpectedPhaseError,
)
from secagg.identity import PartyKeys, Roster
from secagg.protocol import SERVER, PartyId, Role
from secagg.rand import Csprng
from secagg.wire import Message, decode


class HolderPhase(enum.Enum):
    IDLE = enum.auto()
    COMMITTED = enum.auto()
    REVEALED = enum.auto()
    READY = enum.auto()


STATE_MAGIC = b"secagg/ckks/holder-spent/v1\x00"
Persist = Callable[[bytes], None]


class KeyHolder(Role):
    """One member of the committee (persists across the federation's rounds).

    Args:
        spent_state: what :meth:`spent_state` returned before a restart; the holder
            resumes READY for that federation and refuses every round it answered.
        persist: called with the new spent state BEFORE a share sum is released (write
            it durably, e.g. fsync'd file); if it raises, nothing is released. Without
            it the once-per-round rule lives only in memory (simulation).
    """

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        HolderPhase.IDLE: (CeremonyOpen,),
        HolderPhase.COMMITTED: (Relay,),
        HolderPhase.REVEALED: (Relay,),
        HolderPhase.READY: (ShareRequest,),
    }

    def __init__(
        self,
        engine: CkksEngine,
        roster: Roster,
        keys: PartyKeys,
        *,
        rng: Csprng,
        spent_state: bytes | None = None,
        persist: Persist | None = None,
    ) -> None:
        super().__init__(keys.party, HolderPhase.IDLE)
        self._committee = roster.of_kind("holder")
        if keys.party not in self._committee or roster[keys.party] != keys.public:
            raise ParameterError(f"holder keys must match its roster entry; got {keys.party}")
        if len(self._committee) != engine.params.committee:
            raise ParameterError(
                f"roster must list committee = {engine.params.committee} holders; "
                f"got {len(self._committee)}"
            )
        self._engine = engine
        self._roster = roster
        self._keys = keys
        self._contribution = rng.fork("ckks/seed-contribution").random_bytes(32)
        self._federation = b""
        self._commits: dict[PartyId, bytes] = {}
        self.crs_seed = b""
        self._answered: set[int] = set()
        self._persist = persist
        size = rns.packed_size(engine.data_primes, engine.degree) + channels.AEAD_TAG_BYTES
        self._envelope_bytes = size
        longest = max((len(p.encode()) for p in roster.of_kind("client")), default=0)
        n, m = engine.params.committee, engine.params.max_clients
        # The largest legitimate frame this holder receives (a ShareRequest at max_clients):
        # a node decodes with max_size=max_message_bytes so nothing bigger is even parsed.
        # Generous per-field framing overhead (64 B), exact payload sizes otherwise.
        self.max_params_bytes = 1024 + n * (64 + 64) + m * (longest + 64)
        per_receipt = longest + 4 * 64 + n * (32 + 64) + size
        self.max_message_bytes = self.max_params_bytes + 1024 + m * per_receipt
        if spent_state is not None:
            self._restore(spent_state)

    @property
    def point(self) -> int:
        """This holder's Shamir evaluation point (1-based committee position)."""
        return self._committee.index(self.party) + 1

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if isinstance(msg, ShareRequest):
            return [self._answer(msg)]
        if msg.session != (self._federation or msg.session) or msg.sender != SERVER:
            raise InconsistentViewError(f"{self.party} got a message from another ceremony")
        if isinstance(msg, CeremonyOpen):
            return [self._open(msg)]
        if not isinstance(msg, Relay):
            return []
        return [self._on_relay(msg)]

    def _signed(self, cls: type[Message], **fields: object) -> Message:
        msg = cls(
            session=self._federation,
            round=0,
            sender=self.party,
            recipient=SERVER,
            signature=b"",  # type: ignore[call-arg]
            **fields,
        )
        return transcript.sign_message(msg, self._keys.signing)

    # -- setup ---------------------------------------------------------------------

    def _open(self, msg: CeremonyOpen) -> Message:
        if msg.params_digest != self._engine.params_digest:
            raise InconsistentViewError("ceremony parameters must match this holder's")
        if msg.roster_digest != self._roster.digest:
            raise InconsistentViewError("ceremony roster must be this holder's roster")
        self._federation = msg.session
        self.phase = HolderPhase.COMMITTED
        commitment = transcript.seed_commitment(msg.session, self.party, self._contribution)
        return self._signed(SeedCommit, commitment=commitment)

    def _frames(self, relay: Relay, cls: type[Message]) -> dict[PartyId, Message]:
        got: dict[PartyId, Message] = {}
        for frame in relay.frames:
            m = decode(frame, max_size=1 << 16)
            if not isinstance(m, cls) or m.session != self._federation or m.sender in got:
                raise InconsistentViewError(f"relayed frames must be one {cls.__name__} each")
            if m.sender not in self._committee:
                raise InconsistentViewError("relayed frames must come from the committee")
            transcript.verify_message(m, self._roster[m.sender].signing)
            got[m.sender] = m
        if set(got) != set(self._committee):
            raise InconsistentViewError(
                f"{cls.__name__} must arrive from each of the {len(self._committee)} holders"
            )
        return got

    def _on_relay(self, relay: Relay) -> Message:
        if self.phase is HolderPhase.COMMITTED and relay.stage == STAGE_COMMITS:
            commits = self._frames(relay, SeedCommit)
            self._commits = {h: m.commitment for h, m in commits.items()}  # type: ignore[attr-defined]
            self.phase = HolderPhase.REVEALED
            return self._signed(SeedReveal, contribution=self._contribution)
        if self.phase is HolderPhase.REVEALED and relay.stage == STAGE_REVEALS:
            reveals = self._frames(relay, SeedReveal)
            contributions = []
            for h in self._committee:
                value = reveals[h].contribution  # type: ignore[attr-defined]
                if transcript.seed_commitment(self._federation, h, value) != self._commits[h]:
                    raise IntegrityError("seed commitment")
                contributions.append(value)
            self.crs_seed = transcript.crs_seed(self._federation, contributions)
            payload = transcript.crs_payload(
                self._federation, self._roster.digest, self.crs_seed, self._engine.params_digest
            )
            self.phase = HolderPhase.READY
            signature = channels.sign(self._keys.signing, transcript.CRS_PURPOSE, payload)
            return self._signed(CrsEndorsement, seed=self.crs_seed, endorsement=signature)
        raise UnexpectedPhaseError(f"{self.party} in {self.phase.name} got the wrong relay")

    # -- spent-round state -------------------------------------------------------------

    def spent_state(self) -> bytes:
        """This holder's federation, CRS seed and answered rounds, to persist (public data).

        Restoring it (``spent_state=`` at construction) makes a restarted holder refuse
        every round it already answered: it can never release two share sums per round.
        """
        if self.phase is not HolderPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must finish the setup first")
        rounds = b"".join(r.to_bytes(8, "little") for r in sorted(self._answered))
        body = channels.frame(
            self._engine.params_digest,
            self._roster.digest,
            self.party.encode(),
            self._federation,
            self.crs_seed,
            rounds,
        )
        return STATE_MAGIC + body + hashlib.sha256(STATE_MAGIC + body).digest()

    def _restore(self, state: bytes) -> None:
        body, check = state[len(STATE_MAGIC) : -32], state[-32:]
        if (
            len(state) < len(STATE_MAGIC) + 32
            or not state.startswith(STATE_MAGIC)
            or hashlib.sha256(STATE_MAGIC + body).digest() != check
        ):
            raise DecodeError("spent_state must be a KeyHolder.spent_state() blob")
        parts = _unframe(body, 6)
        params_digest, roster_digest, party, federation, seed, rounds = parts
        if (
            params_digest != self._engine.params_digest
            or roster_digest != self._roster.digest
            or party != self.party.encode()
        ):
            raise InconsistentViewError("spent_state must be this holder's, for this federation")
        if len(seed) != 32 or len(rounds) % 8:
            raise DecodeError("spent_state must be a KeyHolder.spent_state() blob")
        self._federation, self.crs_seed = federation, seed
        self._answered = {
            int.from_bytes(rounds[i : i + 8], "little") for i in range(0, len(rounds), 8)
        }
        self.phase = HolderPhase.READY

    # -- rounds --------------------------------------------------------------------

    def _answer(self, req: ShareRequest) -> Message:
        if req.sender != SERVER:
            raise InconsistentViewError(
                f"share requests must come from the server; got {req.sender}"
            )
        if req.round in self._answered:
            raise ShareReuseError(
                f"{self.party} already released its share sum for round {req.round}"
            )
        params = self._check_params(req)
        accepted = self._check_set(req, params)
        n = len(self._committee)
        if len(req.envelope_digests) != n * len(accepted):
            raise DecodeError(f"receipts must list {n} envelope digests each")
        size = self._envelope_bytes
        if any(len(e) != size for e in req.envelopes):
            raise DecodeError(f"share envelopes must be {size} bytes each")
        digest = transcript.request_digest(
            req.round_params, req.accepted, req.ct_digests, req.envelope_digests
        )
        total, accused = self._open_envelopes(req, accepted)
        if accused:  # nothing released: the server learns which clients to exclude
            return self._reply(ShareComplaint, req, request_digest=digest, accused=accused)
        self._answered.add(req.round)
        if self._persist is not None:
            try:
                self._persist(self.spent_state())  # durable BEFORE anything is released
            except BaseException:
                self._answered.discard(req.round)
                raise
        eng = self._engine
        return self._reply(
            ShareSum, req, request_digest=digest, residues=rns.pack(total, eng.data_primes)
        )

    def _reply(self, cls: type[Message], req: ShareRequest, **fields: object) -> Message:
        msg = cls(
            session=req.session,
            round=req.round,
            sender=self.party,
            recipient=SERVER,
            signature=b"",  # type: ignore[call-arg]
            **fields,
        )
        return transcript.sign_message(msg, self._keys.signing)

    def _check_params(self, req: ShareRequest) -> CkksRoundParams:
        if self.phase is not HolderPhase.READY or not self.crs_seed:
            raise UnexpectedPhaseError(f"{self.party} must finish the setup first")
        try:
            params = decode(req.round_params, max_size=self.max_params_bytes)
        except DecodeError:
            raise DecodeError("round_params must be an encoded CkksRoundParams") from None
        if not isinstance(params, CkksRoundParams):
            raise DecodeError("round_params must be an encoded CkksRoundParams")
        if params.session != req.session or params.round != req.round:
            raise InconsistentViewError("round parameters must belong to the request's round")
        if params.params_digest != self._engine.params_digest:
            raise InconsistentViewError("round parameters must be this federation's")
        if (
            params.roster_digest != self._roster.digest
            or params.federation != self._federation
            or params.crs_seed != self.crs_seed
        ):
            raise IntegrityError("CRS and roster of the round")
        return params

    def _check_set(self, req: ShareRequest, params: CkksRoundParams) -> tuple[PartyId, ...]:
        clients = set(self._roster.of_kind("client"))
        cohort = params.cohort
        if len(set(cohort)) != len(cohort) or not set(cohort) <= clients:
            raise InconsistentViewError("cohort must be distinct clients of the roster")
        self._engine.params.check_cohort(len(cohort))
        accepted = req.accepted
        if len(set(accepted)) != len(accepted) or not set(accepted) <= set(cohort):
            raise InconsistentViewError("accepted clients must be distinct members of the cohort")
        floor = self._engine.params.floor(len(cohort))
        if len(accepted) < floor:
            raise InconsistentViewError(
                f"accepted clients must be at least the floor {floor}; got {len(accepted)}"
            )
        return accepted

    def _open_envelopes(
        self, req: ShareRequest, accepted: tuple[PartyId, ...]
    ) -> tuple[np.ndarray, tuple[PartyId, ...]]:
        eng = self._engine
        n = len(self._committee)
        me = self.point - 1
        params_digest = transcript.round_params_digest(req.round_params)
        total = np.zeros((eng.k, eng.degree), dtype=np.uint64)
        accused: list[PartyId] = []
        for i, client in enumerate(accepted):
            digests = req.envelope_digests[i * n : (i + 1) * n]
            payload = transcript.receipt_payload(
                req.session,
                req.round,
                params_digest,
                req.ct_digests[i],
                req.ephemerals[i],
                digests,
            )
            channels.verify(
                self._roster[client].signing,
                req.signatures[i],
                transcript.RECEIPT_PURPOSE,
                payload,
            )
            envelope = req.envelopes[i]
            if transcript.blob_digest("envelope", envelope) != digests[me]:
                raise IntegrityError("share envelope digest")
            try:
                share = self._open_one(req, params_digest, client, req.ephemerals[i], envelope)
            except SecAggError:
                accused.append(client)
                continue
            rns.accumulate(total, share)
        rns.reduce_rows(total, eng.data_primes)
        return total, tuple(accused)

    def _open_one(
        self, req: ShareRequest, params_digest: bytes, client: PartyId, eph: bytes, env: bytes
    ) -> np.ndarray:
        eng = self._engine
        shared = channels.agree(self._keys.agreement, eph)
        key = envelope_key(shared, req.session, req.round, client, self.party, eph)
        header = transcript.envelope_header(
            req.session, req.round, params_digest, client, self.party
        )
        body = channels.unseal(key, env, header)
        return rns.unpack_into(body, eng.data_primes, eng.degree)

    def __repr__(self) -> str:
        return f"KeyHolder(party={self.party!r}, phase={self.phase.name})"


def _unframe(data: bytes, count: int) -> list[bytes]:
    """Inverse of :func:`secagg.channels.frame` for exactly ``count`` parts."""
    parts, offset = [], 0
    for _ in range(count):
        size = int.from_bytes(data[offset : offset + 8], "little")
        offset += 8
        if offset + size > len(data):
            raise DecodeError("spent_state must be a KeyHolder.spent_state() blob")
        parts.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise DecodeError("spent_state must be a KeyHolder.spent_state() blob")
    return parts


def envelope_key(
    shared: bytes, session: bytes, round_index: int, client: str, holder: str, eph: bytes
) -> bytes:
    """The single-use AEAD key of one share envelope (client → holder, one round).

    Security: derived from the X25519 secret of the client's per-round ephemeral
    key and the holder's static key; never reused across rounds, clients or holders.
    """
    context = channels.frame(
        round_index.to_bytes(8, "little"), client.encode(), holder.encode(), eph
    )
    return channels.derive_key(
        shared, purpose=transcript.ENVELOPE_PURPOSE, salt=session, context=context
    )
