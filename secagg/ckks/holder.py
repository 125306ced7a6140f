"""The key holder: key ceremony participant, then one smudged share per round.

Security: a holder keeps its Ed25519 identity, its ceremony X25519 key, its
secret key share sᵢ, the Shamir shares it received and the combined share ŝⱼ.
It releases ŝⱼ only as c1·ŝⱼ + eⱼ with fresh smudging eⱼ, at most once per
(session, round), and only for a request whose digest matches the round's
accepted submissions as vouched for by the clients' receipts.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.ckks import channels, transcript
from secagg.ckks import residues as rns
from secagg.ckks.context import CkksEngine
from secagg.ckks.messages import (
    CeremonyOpen,
    DecryptRequest,
    KeyConfirm,
    KeyShareCommit,
    KeyShareReveal,
    PartialDecryption,
    Relay,
    SeedCommit,
    SeedReveal,
    ShareDeal,
    SubmissionReceipt,
)
from secagg.ckks.seal_bridge import ShareDecryptor
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    IntegrityError,
    ParameterError,
    ShareReuseError,
    UnexpectedPhaseError,
)
from secagg.protocol import SERVER, PartyId, Role
from secagg.rand import Csprng
from secagg.wire import Message, decode


class HolderPhase(enum.Enum):
    IDLE = enum.auto()
    SEED_COMMITTED = enum.auto()
    SEED_REVEALED = enum.auto()
    DEALT = enum.auto()
    KEY_REVEALED = enum.auto()
    READY = enum.auto()


# stage numbers carried by Relay, one per holder phase that consumes a relay
RELAY_STAGE = {
    HolderPhase.SEED_COMMITTED: 1,
    HolderPhase.SEED_REVEALED: 2,
    HolderPhase.DEALT: 3,
    HolderPhase.KEY_REVEALED: 4,
}


@dataclasses.dataclass
class _RoundView:
    cohort: frozenset[PartyId]
    count: int
    min_clients: int
    receipts: dict[PartyId, bytes] = dataclasses.field(default_factory=dict)


class KeyHolder(Role):
    """One member of the decryption committee (persists across rounds)."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        HolderPhase.IDLE: (CeremonyOpen,),
        HolderPhase.SEED_COMMITTED: (Relay,),
        HolderPhase.SEED_REVEALED: (Relay,),
        HolderPhase.DEALT: (Relay,),
        HolderPhase.KEY_REVEALED: (Relay,),
        HolderPhase.READY: (SubmissionReceipt, DecryptRequest),
    }

    def __init__(
        self,
        party: PartyId,
        engine: CkksEngine,
        session: bytes,
        identity: Ed25519PrivateKey,
        roster: Mapping[PartyId, bytes],
        *,
        rng: Csprng,
    ) -> None:
        super().__init__(party, HolderPhase.IDLE)
        if party not in roster:
            raise ParameterError(f"holder must be in the roster; got {party}")
        self._engine = engine
        self._session = session
        self._identity = identity
        self._roster = dict(roster)
        self._holders = tuple(roster)  # roster order = Shamir points 1..n
        self._rng = rng
        self._channel = channels.ChannelKeys.generate(rng=rng.fork("ckks/channel"))
        self._contribution = rng.fork("ckks/seed").random_bytes(32)
        self._seed_commits: dict[PartyId, SeedCommit] = {}
        self._key_commits: dict[PartyId, bytes] = {}
        self._secret: np.ndarray | None = None
        self._public_share = b""
        self._seed = b""
        self._combined: np.ndarray | None = None
        self._decryptor: ShareDecryptor | None = None
        self.joint_key_digest = b""
        self._rounds: dict[tuple[bytes, int], _RoundView] = {}
        self._answered: set[tuple[bytes, int]] = set()

    @property
    def point(self) -> int:
        return self._holders.index(self.party) + 1

    def _msg(self, cls: type[Message], recipient: PartyId = SERVER, **fields: object) -> Message:
        return cls(session=self._session, round=0, sender=self.party, recipient=recipient, **fields)

    def _signed(self, cls: type[Message], recipient: PartyId = SERVER, **fields: object) -> Message:
        return channels.sign(self._msg(cls, recipient, signature=b"", **fields), self._identity)

    # -- dispatch -----------------------------------------------------------------

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if self.phase is HolderPhase.READY:
            return self._handle_round(msg)
        if msg.session != self._session:
            raise InconsistentViewError(f"{self.party} got a message from another ceremony")
        if isinstance(msg, CeremonyOpen):
            return self._open(msg)
        if not isinstance(msg, Relay) or msg.stage != RELAY_STAGE[self.phase]:  # type: ignore[index]
            raise UnexpectedPhaseError(f"{self.party} in {self.phase.name} got the wrong relay")
        frames = [self._decode_frame(f) for f in msg.frames]
        step = {
            HolderPhase.SEED_COMMITTED: self._on_seed_commits,
            HolderPhase.SEED_REVEALED: self._on_seed_reveals,
            HolderPhase.DEALT: self._on_key_commits_and_deals,
            HolderPhase.KEY_REVEALED: self._on_key_reveals,
        }[self.phase]  # type: ignore[index]
        return step(frames)

    def _decode_frame(self, frame: bytes) -> Message:
        msg = decode(frame, max_size=1 << 30)
        if msg.session != self._session or msg.sender not in self._roster:
            raise InconsistentViewError("relayed frame must come from this ceremony's roster")
        channels.verify(msg, self._roster)
        return msg

    def _one_each(self, frames: Sequence[Message], cls: type[Message]) -> dict[PartyId, Message]:
        got = {m.sender: m for m in frames if isinstance(m, cls)}
        if len(got) != len([m for m in frames if isinstance(m, cls)]) or set(got) != set(
            self._holders
        ):
            raise InconsistentViewError(
                f"{cls.__name__} must arrive once from each of the {len(self._holders)} holders"
            )
        return got

    # -- ceremony -----------------------------------------------------------------

    def _open(self, msg: CeremonyOpen) -> list[Message]:
        if msg.params_digest != self._engine.params_digest:
            raise InconsistentViewError("ceremony parameters must match this holder's")
        self.phase = HolderPhase.SEED_COMMITTED
        commitment = transcript.seed_commitment(self._session, self.party, self._contribution)
        return [self._signed(SeedCommit, commitment=commitment, kx_public=self._channel.public)]

    def _on_seed_commits(self, frames: Sequence[Message]) -> list[Message]:
        commits = self._one_each(frames, SeedCommit)
        self._seed_commits = {p: m for p, m in commits.items() if isinstance(m, SeedCommit)}
        self.phase = HolderPhase.SEED_REVEALED
        return [self._signed(SeedReveal, contribution=self._contribution)]

    def _on_seed_reveals(self, frames: Sequence[Message]) -> list[Message]:
        reveals = self._one_each(frames, SeedReveal)
        contributions = []
        for party in self._holders:
            reveal = reveals[party]
            assert_type = isinstance(reveal, SeedReveal)
            expected = self._seed_commits[party].commitment
            got = transcript.seed_commitment(self._session, party, reveal.contribution)  # type: ignore[attr-defined]
            if not assert_type or got != expected:
                raise IntegrityError("seed commitment")
            contributions.append(reveal.contribution)  # type: ignore[attr-defined]
        self._seed = transcript.crs_seed(self._session, contributions)
        return self._generate_and_deal()

    def _generate_and_deal(self) -> list[Message]:
        eng = self._engine
        a = eng.crs(self._seed)
        secret, b = eng.key_share(a, rng=self._rng.fork("ckks/keygen"))
        self._secret = secret
        self._public_share = rns.pack(b, eng.primes)
        out: list[Message] = [
            self._signed(
                KeyShareCommit,
                commitment=transcript.key_commitment(self._session, self.party, self._public_share),
            )
        ]
        points = [i + 1 for i in range(len(self._holders))]
        shares = eng.shamir_deal(secret, points, rng=self._rng.fork("ckks/shamir"))
        self._combined = shares[self.point - 1].copy()
        for party, share in zip(self._holders, shares, strict=True):
            if party == self.party:
                continue
            out.append(self._deal(party, share))
        self.phase = HolderPhase.DEALT
        return out

    def _deal(self, target: PartyId, share: np.ndarray) -> Message:
        peer = self._seed_commits[target].kx_public
        aead = self._channel.aead(peer, self._session, self.party, target)
        nonce = self._rng.fork(f"ckks/nonce/{target}").random_bytes(12)
        draft = self._msg(ShareDeal, target=target, nonce=nonce, ciphertext=b"", signature=b"")
        body = channels.seal_payload(
            aead, nonce, rns.pack(share, self._engine.data_primes), channels.deal_header(draft)
        )
        # routed through the server: the envelope goes to it, the AEAD header names the target
        envelope = dataclasses.replace(draft, ciphertext=body)  # type: ignore[call-arg]
        return channels.sign(envelope, self._identity)

    def _on_key_commits_and_deals(self, frames: Sequence[Message]) -> list[Message]:
        commits = self._one_each(
            [m for m in frames if isinstance(m, KeyShareCommit)], KeyShareCommit
        )
        self._key_commits = {p: m.commitment for p, m in commits.items()}  # type: ignore[attr-defined]
        deals = [m for m in frames if isinstance(m, ShareDeal)]
        senders = sorted(m.sender for m in deals)
        expected = sorted(p for p in self._holders if p != self.party)
        if senders != expected or any(m.target != self.party for m in deals):
            raise InconsistentViewError("share deals must come once from every other holder")
        eng = self._engine
        combined = self._combined
        if combined is None:
            raise UnexpectedPhaseError("own share must exist before combining")
        for deal in deals:
            share = self._open_deal(deal)
            combined = rns.add_mod(combined, share, eng.data_primes)
        self._combined = combined
        self.phase = HolderPhase.KEY_REVEALED
        return [self._signed(KeyShareReveal, residues=self._public_share)]

    def _open_deal(self, deal: ShareDeal) -> np.ndarray:
        peer = self._seed_commits[deal.sender].kx_public
        aead = self._channel.aead(peer, self._session, deal.sender, self.party)
        header = channels.deal_header(dataclasses.replace(deal, ciphertext=b"", signature=b""))
        payload = channels.open_payload(aead, deal.nonce, deal.ciphertext, header)
        eng = self._engine
        return rns.unpack_into(payload, eng.data_primes, eng.degree).reshape(eng.k, eng.degree)

    def _on_key_reveals(self, frames: Sequence[Message]) -> list[Message]:
        reveals = self._one_each(frames, KeyShareReveal)
        eng = self._engine
        shares = []
        for party in self._holders:
            data = reveals[party].residues  # type: ignore[attr-defined]
            if transcript.key_commitment(self._session, party, data) != self._key_commits[party]:
                raise IntegrityError("public-key share commitment")
            shares.append(eng.unpack_key(data))
        joint_b = eng.sum_key_shares(shares)
        self.joint_key_digest = eng.key_digest(self._seed, joint_b)
        if self._combined is None:
            raise UnexpectedPhaseError("combined share must exist")
        self._decryptor = eng.seal.share_decryptor(self._combined)
        self._secret = None  # sᵢ is no longer needed once ŝⱼ is combined
        self.phase = HolderPhase.READY
        return [self._signed(KeyConfirm, key_digest=self.joint_key_digest)]

    # -- rounds ------------------------------------------------------------------

    def begin_round(
        self,
        session: bytes,
        round_index: int,
        cohort: Sequence[PartyId],
        count: int,
        min_clients: int,
    ) -> None:
        """Learn a round's public facts (opened by the scheme before clients submit)."""
        if self.phase is not HolderPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must finish the key ceremony first")
        self._rounds[(session, round_index)] = _RoundView(frozenset(cohort), count, min_clients)

    def _handle_round(self, msg: Message) -> list[Message]:
        view = self._rounds.get((msg.session, msg.round))
        if view is None:
            raise InconsistentViewError(f"{self.party} got a message for a round it did not open")
        if isinstance(msg, SubmissionReceipt):
            if msg.sender not in view.cohort or msg.sender in view.receipts:
                raise InconsistentViewError(
                    f"receipt must come once from the cohort; got {msg.sender}"
                )
            view.receipts[msg.sender] = msg.digest
            return []
        if not isinstance(msg, DecryptRequest):
            return []
        return [self._respond(msg, view)]

    def _respond(self, req: DecryptRequest, view: _RoundView) -> Message:
        key = (req.session, req.round)
        if key in self._answered:
            raise ShareReuseError(f"{self.party} already released its share for round {req.round}")
        if req.sender != SERVER:
            raise InconsistentViewError(
                f"decryption requests must come from the server; got {req.sender}"
            )
        self._check_request(req, view)
        self._answered.add(key)  # before computing: a failure must not allow a retry
        eng = self._engine
        c1 = rns.unpack_into(req.c1_residues, eng.data_primes, req.count * eng.degree)
        c1 = c1.reshape(eng.k, req.count, eng.degree)
        if self._decryptor is None:
            raise UnexpectedPhaseError("key share must be ready")
        share = self._decryptor.partial(
            c1, eng.sigma, rng=self._rng.fork(f"ckks/smudge/{req.round}/{req.session.hex()}")
        )
        reply = PartialDecryption(
            session=req.session,
            round=req.round,
            sender=self.party,
            recipient=SERVER,
            digest=req.digest,
            residues=rns.pack(share, eng.data_primes),
            signature=b"",
        )
        return channels.sign(reply, self._identity)

    def _check_request(self, req: DecryptRequest, view: _RoundView) -> None:
        if req.count != view.count:
            raise DecodeError(f"aggregate must hold {view.count} ciphertexts; got {req.count}")
        accepted = set(req.accepted)
        if len(accepted) != len(req.accepted) or not accepted <= view.cohort:
            raise InconsistentViewError("accepted clients must be distinct members of the cohort")
        if len(accepted) < view.min_clients:
            raise InconsistentViewError(
                f"accepted clients must be at least {view.min_clients}; got {len(accepted)}"
            )
        for party, digest in zip(req.accepted, req.submission_digests, strict=True):
            if view.receipts.get(party) != digest:
                raise InconsistentViewError(f"submission of {party} must match its receipt")
        c1_digest = transcript.blob_digest("aggregate-c1", req.c1_residues)
        expected = transcript.request_digest(
            req.session, req.round, req.accepted, req.submission_digests, req.c0_digest, c1_digest
        )
        if expected != req.digest:
            raise IntegrityError("decryption request digest")

    def __repr__(self) -> str:
        return f"KeyHolder(party={self.party!r}, phase={self.phase.name})"
