"""The server role of pairwise masking: routes, checks thresholds, unmasks only the sum.

Phases (one per deadline window)::

    ADVERTISE -> SHARE -> MASKED_INPUT -> CONSISTENCY -> UNMASK -> DONE
                                   (any -> ABORTED when fewer than t remain)

Survivor sets: U1 advertised, U2 ⊆ U1 shared keys, U3 ⊆ U2 sent a masked input
(the contributors), U4 ⊆ U3 signed the pair (U2, U3), U5 ⊆ U4 answered the unmask
request. Clients in U2 \\ U3 are the dropped ones whose pairwise masks must be removed.
U2 is announced to every client with its share bundle and signed twice by each client
(with its masked input, then with U3), so honest clients can refuse unequal views.

An invalid message raises a named error and leaves the server's state unchanged; a
share value outside the field (which can only come from a faulty or hostile peer) aborts
the round at once, so the server is never left waiting in a phase it cannot finish.
"""

from __future__ import annotations

import enum
from collections import defaultdict

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import channels
from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    UnexpectedPhaseError,
)
from secagg.masking.client import pair_mask_key, self_mask_key
from secagg.masking.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.masking.params import ADVERT_PURPOSE, SURVIVORS_PURPOSE, Header, RoundParams
from secagg.masking.prg import apply_masks
from secagg.masking.sharing import PRIME, field_to_secret, reconstruct_batch
from secagg.protocol import SERVER, Aggregate, AggregationServer, PartyId
from secagg.wire import Message


class ServerPhase(enum.Enum):
    ADVERTISE = enum.auto()
    SHARE = enum.auto()
    MASKED_INPUT = enum.auto()
    CONSISTENCY = enum.auto()
    UNMASK = enum.auto()
    DONE = enum.auto()
    ABORTED = enum.auto()


class MaskingServer(AggregationServer):
    """The coordinator of one masking round.

    Security: sees adverts, ciphertexts it cannot open, masked vectors, and —
    after the consistency check — t or more shares of survivors' self-mask seeds
    and of dropped clients' mask keys: enough to remove the masks from the sum,
    never to unmask one client.
    """

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ServerPhase.ADVERTISE: (AdvertiseKeys,),
        ServerPhase.SHARE: (EncryptedShares,),
        ServerPhase.MASKED_INPUT: (MaskedInput,),
        ServerPhase.CONSISTENCY: (ConsistencySignature,),
        ServerPhase.UNMASK: (UnmaskResponse,),
        ServerPhase.DONE: (),
        ServerPhase.ABORTED: (),
    }

    def __init__(self, params: RoundParams) -> None:
        super().__init__(SERVER, ServerPhase.ADVERTISE)
        self.params = params
        self._adverts: dict[PartyId, AdvertiseKeys] = {}
        self._rosters: dict[PartyId, tuple[PartyId, ...]] = {}
        self._shares: dict[PartyId, EncryptedShares] = {}
        self._shared: tuple[PartyId, ...] = ()
        self._sum = np.zeros(params.dim, dtype=params.encoding.dtype)
        self._inputs: list[PartyId] = []
        self._views: dict[PartyId, bytes] = {}
        self._survivors: tuple[PartyId, ...] = ()
        self._signatures: dict[PartyId, bytes] = {}
        self._asked: tuple[PartyId, ...] = ()
        self._seed_shares: dict[PartyId, dict[PartyId, np.ndarray]] = defaultdict(dict)
        self._key_shares: dict[PartyId, dict[PartyId, np.ndarray]] = defaultdict(dict)
        self._responders: set[PartyId] = set()
        self._result: Aggregate | None = None

    def start(self) -> list[Message]:
        return []

    @property
    def done(self) -> bool:
        return self.phase in (ServerPhase.DONE, ServerPhase.ABORTED)

    def finalize(self) -> Aggregate:
        if self._result is None:
            raise UnexpectedPhaseError("the round has not produced an aggregate")
        return self._result

    # -- inbound --------------------------------------------------------------------------

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        self._check_origin(msg)
        if isinstance(msg, AdvertiseKeys):
            self._on_advert(msg)
        elif isinstance(msg, EncryptedShares):
            self._on_shares(msg)
        elif isinstance(msg, MaskedInput):
            self._on_masked_input(msg)
        elif isinstance(msg, ConsistencySignature):
            self._on_signature(msg)
        elif isinstance(msg, UnmaskResponse):
            self._on_unmask_response(msg)
        return []

    def _check_origin(self, msg: Message) -> None:
        p = self.params
        if msg.session != p.session or msg.round != p.round:
            raise InconsistentViewError(
                f"message session and round must be this round's ({p.round}); "
                f"got round {msg.round} (a replay)"
            )
        if not p.in_cohort(msg.sender):
            raise InconsistentViewError(f"sender must be in the round's cohort; got {msg.sender}")

    @staticmethod
    def _once(seen: object, sender: PartyId, what: str) -> None:
        if sender in seen:  # type: ignore[operator]
            raise InconsistentViewError(f"{sender} must send one {what} per round; got a duplicate")

    @staticmethod
    def _member(group: object, sender: PartyId, what: str) -> None:
        if sender not in group:  # type: ignore[operator]
            raise InconsistentViewError(
                f"{what} sender must be a client admitted to this phase; got {sender}"
            )

    def _on_advert(self, msg: AdvertiseKeys) -> None:
        self._once(self._adverts, msg.sender, "key advert")
        payload = self.params.advert_payload(
            msg.sender, msg.encryption_key, msg.mask_key, msg.seed_commitment
        )
        channels.verify(self.params.identities[msg.sender], msg.signature, ADVERT_PURPOSE, payload)
        self._adverts[msg.sender] = msg

    def _on_shares(self, msg: EncryptedShares) -> None:
        self._member(self._rosters, msg.sender, "share")
        self._once(self._shares, msg.sender, "share message")
        if set(msg.recipients) != set(self._rosters[msg.sender]):
            raise InconsistentViewError(
                f"share recipients must be exactly {msg.sender}'s roster; "
                f"got {len(msg.recipients)} recipients"
            )
        self._shares[msg.sender] = msg

    def _on_masked_input(self, msg: MaskedInput) -> None:
        self._member(self._shared, msg.sender, "masked input")
        self._once(self._inputs, msg.sender, "masked input")
        if msg.vector.dtype != self._sum.dtype or msg.vector.shape != self._sum.shape:
            raise DecodeError(
                f"masked vector must be {self._sum.dtype}[{self.params.dim}]; "
                f"got {msg.vector.dtype}[{msg.vector.shape[0]}]"
            )
        np.add(self._sum, msg.vector, out=self._sum)  # the ring sum: wraps mod 2^w by design
        # relayed, not verified here: the neighbours that rely on it verify it before they
        # sign, so the server's time stays that of the sum (a bad one aborts the round)
        self._views[msg.sender] = msg.view_signature
        self._inputs.append(msg.sender)

    def _on_signature(self, msg: ConsistencySignature) -> None:
        self._member(self._survivors, msg.sender, "consistency signature")
        self._once(self._signatures, msg.sender, "consistency signature")
        payload = self.params.survivor_payload(msg.sender, self._shared, self._survivors)
        channels.verify(
            self.params.identities[msg.sender], msg.signature, SURVIVORS_PURPOSE, payload
        )
        self._signatures[msg.sender] = msg.signature

    def _on_unmask_response(self, msg: UnmaskResponse) -> None:
        p = self.params
        self._member(self._asked, msg.sender, "unmask response")
        self._once(self._responders, msg.sender, "unmask response")
        for table in (msg.seed_shares, msg.key_shares):
            if table.size and int(table.max()) >= PRIME:
                self.phase = ServerPhase.ABORTED  # nothing was released from this round
                raise InconsistentViewError(
                    f"unmask shares must be field elements below {PRIME}; "
                    f"got a larger value from {msg.sender}"
                )
        shared, survivors = set(self._shared), set(self._survivors)
        for owners, expected in (
            (msg.seed_owners, survivors),
            (msg.key_owners, shared - survivors),
        ):
            for owner in owners:
                if owner not in expected or msg.sender not in p.holders(owner):
                    raise InconsistentViewError(
                        f"{msg.sender} must only return shares it holds of the requested "
                        f"clients; got one of {owner}"
                    )
        for owner, row in zip(msg.seed_owners, msg.seed_shares, strict=True):
            self._seed_shares[owner][msg.sender] = row
        for owner, row in zip(msg.key_owners, msg.key_shares, strict=True):
            self._key_shares[owner][msg.sender] = row
        self._responders.add(msg.sender)

    # -- deadlines ------------------------------------------------------------------------

    def advance(self) -> list[Message]:
        steps = {
            ServerPhase.ADVERTISE: self._close_advertise,
            ServerPhase.SHARE: self._close_share,
            ServerPhase.MASKED_INPUT: self._close_masked_input,
            ServerPhase.CONSISTENCY: self._close_consistency,
            ServerPhase.UNMASK: self._close_unmask,
        }
        step = steps.get(self.phase)  # type: ignore[call-overload]
        if step is None:
            raise UnexpectedPhaseError(f"server in phase {self.phase.name} has no deadline")
        try:
            return step()
        except (InsufficientParticipantsError, IntegrityError):
            self.phase = ServerPhase.ABORTED  # the round releases nothing, ever
            raise

    def _require(self, live: object, what: str) -> None:
        count = len(live)  # type: ignore[arg-type]
        if count < self.params.threshold:
            raise InsufficientParticipantsError(
                f"{what} must be at least {self.params.threshold}; got {count}"
            )

    def _viable(self, live: set[PartyId]) -> set[PartyId]:
        """Drop clients whose live holders fall below the local threshold, until stable.

        Such a client would abort on its own; pruning it here keeps everyone's view equal.
        """
        p = self.params
        while True:
            weak = {u for u in live if len(p.holders(u) & live) < p.local_threshold}
            if not weak:
                return live
            live = live - weak

    def _header(self, recipient: PartyId) -> Header:
        return self.params.header(SERVER, recipient)

    def _ordered(self, parties: object) -> tuple[PartyId, ...]:
        return tuple(sorted(parties, key=self.params.position))  # type: ignore[call-overload]

    def _close_advertise(self) -> list[Message]:
        self._require(self._adverts, "clients with key adverts")
        # the sparse graph's seed hashes every accepted advert; the full graph needs none
        advertisers = () if self.params.full else self._ordered(self._adverts)
        digests = {}
        for v in advertisers:
            ad = self._adverts[v]
            payload = self.params.advert_payload(
                v, ad.encryption_key, ad.mask_key, ad.seed_commitment
            )
            digests[v] = self.params.advert_digest(payload, ad.signature)
        self.params = p = self.params.bind_graph(self.params.graph_seed_for(digests.items()))
        live = self._viable(set(self._adverts))
        self._require(live, "clients with key adverts")
        out: list[Message] = []
        for u in self._ordered(live):
            peers = tuple(v for v in p.neighbours(u) if v in live)
            self._rosters[u] = peers
            ads = [self._adverts[v] for v in peers]
            out.append(
                KeyRoster(
                    **self._header(u),
                    advertisers=advertisers,
                    advert_digests=tuple(digests[v] for v in advertisers),
                    parties=peers,
                    encryption_keys=tuple(a.encryption_key for a in ads),
                    mask_keys=tuple(a.mask_key for a in ads),
                    seed_commitments=tuple(a.seed_commitment for a in ads),
                    signatures=tuple(a.signature for a in ads),
                )
            )
        self.phase = ServerPhase.SHARE
        return out

    def _close_share(self) -> list[Message]:
        live = self._viable(set(self._shares))
        self._require(live, "clients that shared keys")
        self._shared = self._ordered(live)
        inbox: dict[PartyId, list[tuple[PartyId, bytes]]] = defaultdict(list)
        for u in self._shared:
            sent = self._shares[u]
            for recipient, ciphertext in zip(sent.recipients, sent.ciphertexts, strict=True):
                if recipient in live:
                    inbox[recipient].append((u, ciphertext))
        out: list[Message] = []
        for v in self._shared:
            items = inbox[v]
            out.append(
                ShareBundle(
                    **self._header(v),
                    masking_set=self._shared,
                    senders=tuple(u for u, _ in items),
                    ciphertexts=tuple(c for _, c in items),
                )
            )
        self.phase = ServerPhase.MASKED_INPUT
        return out

    def _require_floor(self, survivors: object) -> None:
        """Client-level DP's floor: never unmask a sum of fewer than min_honest survivors."""
        p = self.params
        floor = max(p.threshold, p.min_honest)
        if len(survivors) < floor:  # type: ignore[arg-type]
            raise InsufficientParticipantsError(
                f"survivors must be at least {floor} (threshold {p.threshold}, "
                f"min_honest {p.min_honest}); got {len(survivors)}"  # type: ignore[arg-type]
            )

    def _close_masked_input(self) -> list[Message]:
        p = self.params
        self._require_floor(self._inputs)
        self._survivors = self._ordered(self._inputs)
        alive = set(self._survivors)
        out: list[Message] = []
        for u in self._survivors:
            owners = tuple(v for v in p.neighbours(u) if v in alive)
            out.append(
                ConsistencyRequest(
                    **self._header(u),
                    survivors=self._survivors,
                    view_signers=owners,
                    view_signatures=tuple(self._views[v] for v in owners),
                )
            )
        self.phase = ServerPhase.CONSISTENCY
        return out

    def _close_consistency(self) -> list[Message]:
        p = self.params
        signers = self._ordered(self._signatures)
        self._require(signers, "clients that signed the survivor set")
        signer_set = set(signers)
        # a signer answers only if t′ of its own holders signed the same pair
        asked = {v for v in signers if len(p.holders(v) & signer_set) >= p.local_threshold}
        for owner in self._shared:  # stop before anything is released if unmasking must fail
            if len(p.holders(owner) & asked) < p.local_threshold:
                raise InsufficientParticipantsError(
                    f"signing holders of {owner} must be at least {p.local_threshold}"
                )
        dropped = tuple(u for u in self._shared if u not in set(self._survivors))
        self._asked = self._ordered(asked)
        self.phase = ServerPhase.UNMASK
        out: list[Message] = []
        for v in self._asked:
            mine = tuple(s for s in signers if s in p.holders(v))
            out.append(
                UnmaskRequest(
                    **self._header(v),
                    survivors=self._survivors,
                    dropped=dropped,
                    signers=mine,
                    signatures=tuple(self._signatures[s] for s in mine),
                )
            )
        return out

    def _close_unmask(self) -> list[Message]:
        p = self.params
        self._require(self._responders, "clients that answered the unmask request")
        self._require_floor(self._survivors)
        survivors = self._survivors
        dropped = tuple(u for u in self._shared if u not in set(survivors))
        seeds = self._reconstruct(self._seed_shares, survivors, "self-mask seed")
        subtract = []
        for owner in survivors:
            if p.seed_commitment(owner, seeds[owner]) != self._adverts[owner].seed_commitment:
                raise IntegrityError("reconstructed self-mask seed")
            subtract.append(self_mask_key(p, owner, seeds[owner]))
        add: list[bytes] = []
        alive = set(survivors)
        for owner, secret in self._reconstruct(self._key_shares, dropped, "mask key").items():
            key = X25519PrivateKey.from_private_bytes(secret)
            if channels.public_bytes(key) != self._adverts[owner].mask_key:
                raise IntegrityError("reconstructed mask key")
            for peer in p.neighbours(owner):
                if peer in alive:
                    shared = channels.agree(key, self._adverts[peer].mask_key)
                    mask = pair_mask_key(p, peer, owner, shared)
                    # the survivor added (+) or subtracted (−) this mask; undo it
                    (subtract if p.adds_pair_mask(peer, owner) else add).append(mask)
        total = self._sum
        apply_masks(total, add=add, subtract=subtract)
        contributors = survivors
        vector = p.encoding.decode(total)
        self._result = Aggregate(
            vector=vector,
            contributors=contributors,
            dropped=tuple(c for c in p.cohort if c not in set(contributors)),
            error_bound=p.encoding.error_bound(len(contributors)),
        )
        self.phase = ServerPhase.DONE
        return []

    def _reconstruct(
        self,
        table: dict[PartyId, dict[PartyId, np.ndarray]],
        owners: tuple[PartyId, ...],
        what: str,
    ) -> dict[PartyId, bytes]:
        """Rebuild one 32-byte secret per owner, all owners in one vectorized interpolation."""
        p = self.params
        if not owners:
            return {}
        chosen = []
        for owner in owners:
            holders = self._ordered(table.get(owner, {}))
            if len(holders) < p.local_threshold:
                raise InsufficientParticipantsError(
                    f"shares of the {what} of {owner} must be at least {p.local_threshold}; "
                    f"got {len(holders)}"
                )
            chosen.append(holders[: p.local_threshold])
        shares = np.array(
            [[table[o][h] for h in hs] for o, hs in zip(owners, chosen, strict=True)], np.int64
        )
        points = np.array([[p.point(h) for h in hs] for hs in chosen], np.int64)
        values = reconstruct_batch(shares, points)
        return {o: field_to_secret(v) for o, v in zip(owners, values, strict=True)}
