"""The client role of pairwise masking (SecAgg / SecAgg+).

Phases::

    READY --protect()--> ADVERTISED --KeyRoster--> SHARED --ShareBundle--> MASKED
          --ConsistencyRequest--> SIGNED --UnmaskRequest--> DONE

Any refusal in the unmask step moves the client to ABORTED for good: a server
that asked for too much is not given a second try.
"""

from __future__ import annotations

import enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import channels
from secagg.errors import (
    InconsistentViewError,
    InsufficientParticipantsError,
    IntegrityError,
    ProtocolAbort,
    ShareReuseError,
    UnexpectedPhaseError,
)
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
from secagg.masking.params import (
    ADVERT_PURPOSE,
    SURVIVORS_PURPOSE,
    VIEW_PURPOSE,
    Header,
    RoundParams,
)
from secagg.masking.prg import apply_masks
from secagg.masking.sharing import ELEMENTS, PRIME, SHARE_WORDS, secrets_to_field, share_secrets
from secagg.protocol import SERVER, ClientRole, PartyId, check_vector
from secagg.rand import Csprng
from secagg.wire import Message

PAIR_MASK = b"masking/pair-mask"
SELF_MASK = b"masking/self-mask"
SHARE_KEY = b"masking/share-encryption"


class ClientPhase(enum.Enum):
    READY = enum.auto()
    ADVERTISED = enum.auto()
    SHARED = enum.auto()
    MASKED = enum.auto()
    SIGNED = enum.auto()
    DONE = enum.auto()
    ABORTED = enum.auto()


def share_header(params: RoundParams, sender: PartyId, recipient: PartyId) -> bytes:
    """AEAD associated data of one share ciphertext: session, round, direction."""
    return channels.frame(b"share", params.session, params.context(sender, recipient))


def self_mask_key(params: RoundParams, owner: PartyId, seed: bytes) -> bytes:
    """The AES-256 key expanding ``owner``'s self mask this round.

    Security: derived from the secret seed; a secret.
    """
    return channels.derive_key(
        seed, purpose=SELF_MASK, salt=params.session, context=params.context(owner)
    )


def pair_mask_key(params: RoundParams, a: PartyId, b: PartyId, shared: bytes) -> bytes:
    """The AES-256 key expanding the mask between ``a`` and ``b`` this round (symmetric).

    Security: derived from an X25519 shared secret; a secret.
    """
    return channels.derive_key(
        shared, purpose=PAIR_MASK, salt=params.session, context=params.pair_context(a, b)
    )


class MaskingClient(ClientRole):
    """One client of one masking round.

    Security: holds the round's secrets (identity key, two X25519 private keys,
    the self-mask seed, the encoded update, the shares it received) and releases
    each share at most once, only after checking the server's view.
    """

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        ClientPhase.READY: (),
        ClientPhase.ADVERTISED: (KeyRoster,),
        ClientPhase.SHARED: (ShareBundle,),
        ClientPhase.MASKED: (ConsistencyRequest,),
        ClientPhase.SIGNED: (UnmaskRequest,),
        ClientPhase.DONE: (),
        ClientPhase.ABORTED: (),
    }

    def __init__(
        self, party: PartyId, params: RoundParams, identity: Ed25519PrivateKey, *, rng: Csprng
    ) -> None:
        super().__init__(party, ClientPhase.READY)
        self.params = params
        self._identity = identity
        self._rng = rng
        self._encoded: np.ndarray | None = None
        self._encryption_key = channels.new_agreement_key(rng=rng)
        self._mask_key = channels.new_agreement_key(rng=rng)
        self._seed = rng.random_bytes(channels.KEY_BYTES)
        self._peers: tuple[PartyId, ...] = ()
        self._pair_keys: dict[PartyId, bytes] = {}
        self._receive_keys: dict[PartyId, bytes] = {}
        self._held: dict[PartyId, np.ndarray] = {}  # owner -> 18 share words (incl. our own)
        self._live: tuple[PartyId, ...] = ()
        self._advert_digests: dict[PartyId, bytes] = {}
        self._advertisers: frozenset[PartyId] = frozenset()
        self._own_digest = b""
        self._masking_set: frozenset[PartyId] = frozenset()
        self._signed: frozenset[PartyId] | None = None
        self._revealed: dict[PartyId, str] = {}

    def __repr__(self) -> str:
        return f"MaskingClient(party={self.party!r}, phase={self.phase.name})"

    # -- window 0: advertise ------------------------------------------------------------

    def protect(self, vector: np.ndarray) -> list[Message]:
        if self.phase is not ClientPhase.READY:
            raise UnexpectedPhaseError(f"{self.party} must protect once per round")
        values = check_vector(vector, self.params.dim)
        self._encoded = self.params.encoding.encode(values, rng=self._rng)
        enc_pub = channels.public_bytes(self._encryption_key)
        mask_pub = channels.public_bytes(self._mask_key)
        commitment = self.params.seed_commitment(self.party, self._seed)
        payload = self.params.advert_payload(self.party, enc_pub, mask_pub, commitment)
        signature = channels.sign(self._identity, ADVERT_PURPOSE, payload)
        self._own_digest = self.params.advert_digest(payload, signature)
        self.phase = ClientPhase.ADVERTISED
        return [
            AdvertiseKeys(
                **self._header(),
                encryption_key=enc_pub,
                mask_key=mask_pub,
                seed_commitment=commitment,
                signature=signature,
            )
        ]

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        self._check_origin(msg)
        if isinstance(msg, KeyRoster):
            return self._share_keys(msg)
        if isinstance(msg, ShareBundle):
            return self._masked_input(msg)
        if isinstance(msg, ConsistencyRequest):
            return self._sign_survivors(msg)
        if isinstance(msg, UnmaskRequest):
            return self._unmask(msg)
        raise UnexpectedPhaseError(f"{self.party} cannot handle {type(msg).__name__}")

    def _header(self) -> Header:
        return self.params.header(self.party, SERVER)

    def _check_origin(self, msg: Message) -> None:
        if msg.session != self.params.session or msg.round != self.params.round:
            raise InconsistentViewError(
                f"message session and round must be this round's ({self.params.round}); "
                f"got round {msg.round} (a replay)"
            )
        if msg.sender != SERVER:
            raise InconsistentViewError(f"sender must be {SERVER}; got {msg.sender}")

    # -- window 1: share keys -----------------------------------------------------------

    def _bind_graph(self, roster: KeyRoster) -> RoundParams:
        """Check the advertiser list and return the parameters with the round's graph.

        Sparse graph: the seed is recomputed here from the advert digests; the client's
        own entry must be its own advert, and every neighbour's full advert must match
        its digest (checked by the caller), so the server cannot substitute a digest it
        ground. Full graph: the graph is complete whatever the seed, the roster already
        holds every other advert, and the digests are left out.
        """
        p = self.params
        if p.full:
            if roster.advertisers:
                raise InconsistentViewError("advertisers must be empty on the full graph")
            advertisers = {self.party, *roster.parties}
            seed = p.graph_seed_for(())
        else:
            if not all(p.in_cohort(a) for a in roster.advertisers):
                raise InconsistentViewError("advertisers must be members of the round's cohort")
            digests = dict(zip(roster.advertisers, roster.advert_digests, strict=True))
            if digests.get(self.party) != self._own_digest:
                raise InconsistentViewError(f"advertisers must list {self.party}'s own advert")
            self._advert_digests = digests
            advertisers = set(digests)
            seed = p.graph_seed_for(digests.items())
        if len(advertisers) < p.threshold:
            raise InsufficientParticipantsError(
                f"advertisers must be at least {p.threshold}; got {len(advertisers)}"
            )
        self._advertisers = frozenset(advertisers)
        return p.bind_graph(seed)

    def _share_keys(self, roster: KeyRoster) -> list[Message]:
        p = self._bind_graph(roster)
        neighbours = set(p.neighbours(self.party)) & self._advertisers
        if not set(roster.parties) <= neighbours:
            raise InconsistentViewError(
                "roster parties must be this client's graph neighbours among the advertisers"
            )
        if len(roster.parties) + 1 < p.local_threshold:
            raise InsufficientParticipantsError(
                f"live holders must be at least {p.local_threshold}; got {len(roster.parties) + 1}"
            )
        keys = [*roster.encryption_keys, *roster.mask_keys]
        own = {channels.public_bytes(self._encryption_key), channels.public_bytes(self._mask_key)}
        if len(set(keys) | own) != len(keys) + 2:
            raise InconsistentViewError("advertised keys must all be distinct")
        pair_keys, send_keys, receive_keys = {}, {}, {}
        for i, peer in enumerate(roster.parties):
            payload = p.advert_payload(
                peer, roster.encryption_keys[i], roster.mask_keys[i], roster.seed_commitments[i]
            )
            channels.verify(p.identities[peer], roster.signatures[i], ADVERT_PURPOSE, payload)
            digest = self._advert_digests.get(peer)
            if digest is not None and p.advert_digest(payload, roster.signatures[i]) != digest:
                raise InconsistentViewError(f"advert digest of {peer} must match its advert")
            channel = channels.agree(self._encryption_key, roster.encryption_keys[i])
            send_keys[peer] = self._share_key(channel, self.party, peer)
            receive_keys[peer] = self._share_key(channel, peer, self.party)
            shared = channels.agree(self._mask_key, roster.mask_keys[i])
            pair_keys[peer] = pair_mask_key(p, self.party, peer, shared)
        peers = p.ordered(roster.parties)
        holders = p.ordered((self.party, *peers))  # Shamir points in order
        secrets = secrets_to_field(self._seed, channels.private_bytes(self._mask_key))
        rows = share_secrets(
            secrets,
            threshold=p.local_threshold,
            xs=[p.point(h) for h in holders],
            rng=self._rng.fork("shares"),
        ).astype(np.uint32)
        ciphertexts = []
        for holder, row in zip(holders, rows, strict=True):
            if holder == self.party:
                self._held[self.party] = row
                continue
            header = share_header(p, self.party, holder)
            ciphertexts.append(
                channels.seal(send_keys[holder], row.astype("<u4").tobytes(), header)
            )
        self.params = p
        self._peers, self._pair_keys, self._receive_keys = peers, pair_keys, receive_keys
        self.phase = ClientPhase.SHARED
        return [EncryptedShares(**self._header(), recipients=peers, ciphertexts=tuple(ciphertexts))]

    def _share_key(self, channel: bytes, sender: PartyId, recipient: PartyId) -> bytes:
        return channels.derive_key(
            channel,
            purpose=SHARE_KEY,
            salt=self.params.session,
            context=self.params.context(sender, recipient),
        )

    # -- window 2: masked input ---------------------------------------------------------

    def _check_masking_set(self, bundle: ShareBundle) -> frozenset[PartyId]:
        """U2 as the server announced it; this client's masks are exactly U2 ∩ N(self).

        Security: the bundle must hold a share from every neighbour in U2, and from no
        one else: a server that drops a sender (a truncated bundle) or narrows U2 for this
        client alone is caught here or, at the latest, by the view signatures.
        """
        p = self.params
        masking_set = frozenset(bundle.masking_set)
        if self.party not in masking_set or not masking_set <= self._advertisers:
            raise InconsistentViewError(
                f"masking set must contain {self.party} and only advertisers"
            )
        if len(masking_set) < p.threshold:
            raise InsufficientParticipantsError(
                f"masking set must be at least {p.threshold}; got {len(masking_set)}"
            )
        expected = (masking_set & set(p.neighbours(self.party))) - {self.party}
        if set(bundle.senders) != expected or not expected <= set(self._peers):
            raise InconsistentViewError(
                "share senders must be exactly this client's neighbours in the masking set; "
                f"got {len(bundle.senders)} of {len(expected)}"
            )
        if len(expected) + 1 < p.local_threshold:
            raise InsufficientParticipantsError(
                f"live holders must be at least {p.local_threshold}; got {len(expected) + 1}"
            )
        return masking_set

    def _masked_input(self, bundle: ShareBundle) -> list[Message]:
        p = self.params
        masking_set = self._check_masking_set(bundle)
        received = {}
        for sender, ciphertext in zip(bundle.senders, bundle.ciphertexts, strict=True):
            plain = channels.unseal(
                self._receive_keys[sender], ciphertext, share_header(p, sender, self.party)
            )
            row = np.frombuffer(plain, dtype="<u4").astype(np.uint32)
            if row.size != SHARE_WORDS or np.any(row >= PRIME):
                raise IntegrityError("share plaintext")
            received[sender] = row
        if self._encoded is None:  # unreachable by the phase table; keeps the invariant explicit
            raise ShareReuseError(f"{self.party} has already sent its masked input")
        live = p.ordered(bundle.senders)
        masked = self._encoded
        self._encoded = None
        add = [self_mask_key(p, self.party, self._seed)]
        subtract: list[bytes] = []
        for peer in live:
            (add if p.adds_pair_mask(self.party, peer) else subtract).append(self._pair_keys[peer])
        apply_masks(masked, add=add, subtract=subtract)
        self._held.update(received)
        self._live = live
        self._masking_set = masking_set
        self._pair_keys.clear()
        self._receive_keys.clear()
        self.phase = ClientPhase.MASKED
        view = channels.sign(self._identity, VIEW_PURPOSE, p.view_payload(self.party, masking_set))
        return [MaskedInput(**self._header(), vector=masked, view_signature=view)]

    # -- window 3: consistency check ----------------------------------------------------

    def _check_floor(self, survivors: frozenset[PartyId]) -> None:
        p = self.params
        floor = max(p.threshold, p.min_honest)
        if len(survivors) < floor:
            raise InsufficientParticipantsError(
                f"survivors must be at least {floor} (threshold {p.threshold}, "
                f"min_honest {p.min_honest}); got {len(survivors)}"
            )

    def _sign_survivors(self, request: ConsistencyRequest) -> list[Message]:
        p = self.params
        survivors = frozenset(request.survivors)
        if not survivors <= self._masking_set:
            raise InconsistentViewError("survivors must be members of the masking set U2")
        if self.party not in survivors:
            raise InconsistentViewError(
                f"survivors must include {self.party}, whose input was sent"
            )
        self._check_floor(survivors)
        # before signing: every survivor whose self-mask share this client would reveal
        # must have masked with the very same U2 (else its input could be isolated)
        owners = set(self._live) & survivors
        if set(request.view_signers) != owners:
            raise InconsistentViewError(
                "view signers must be exactly the surviving neighbours; "
                f"got {len(request.view_signers)} of {len(owners)}"
            )
        for owner, signature in zip(request.view_signers, request.view_signatures, strict=True):
            channels.verify(
                p.identities[owner],
                signature,
                VIEW_PURPOSE,
                p.view_payload(owner, self._masking_set),
            )
        payload = p.survivor_payload(self.party, self._masking_set, survivors)
        self._signed = survivors
        self.phase = ClientPhase.SIGNED
        return [
            ConsistencySignature(
                **self._header(),
                signature=channels.sign(self._identity, SURVIVORS_PURPOSE, payload),
            )
        ]

    # -- window 4: unmask ---------------------------------------------------------------

    def _unmask(self, request: UnmaskRequest) -> list[Message]:
        try:
            seed_owners, key_owners = self._check_unmask_view(request)
        except ProtocolAbort:
            self.phase = ClientPhase.ABORTED
            raise
        for owner in seed_owners:
            self._record_reveal(owner, "seed")
        for owner in key_owners:
            self._record_reveal(owner, "key")
        seeds = np.array([self._held[o][:ELEMENTS] for o in seed_owners], np.uint32)
        keys = np.array([self._held[o][ELEMENTS:] for o in key_owners], np.uint32)
        self._held.clear()
        self.phase = ClientPhase.DONE
        return [
            UnmaskResponse(
                **self._header(),
                seed_owners=seed_owners,
                seed_shares=seeds.reshape(len(seed_owners), ELEMENTS),
                key_owners=key_owners,
                key_shares=keys.reshape(len(key_owners), ELEMENTS),
            )
        ]

    def _check_unmask_view(
        self, request: UnmaskRequest
    ) -> tuple[tuple[PartyId, ...], tuple[PartyId, ...]]:
        """Verify the server's view; return whose seed shares and whose key shares to reveal.

        Security: shares leave only if at least t′ of this client's holders (t of the
        cohort on the full graph) signed the very pair (U2, U3) this client signed. Honest
        clients sign one pair each, so two conflicting pairs need ≥ 2t′ − (k + 1) corrupt
        signers among one holder set (threat_model.md, "Agreed views").
        """
        p = self.params
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise InconsistentViewError(
                "survivors and dropped must be disjoint (never reveal both shares of a client); "
                f"got {len(survivors & dropped)} in both"
            )
        if self._signed is None or survivors != set(self._signed):
            raise InconsistentViewError("survivors must equal the set this client signed")
        self._check_floor(self._signed)
        if self.party in dropped:
            raise InconsistentViewError(f"dropped must not include {self.party}")
        if dropped != set(self._masking_set) - survivors:
            raise InconsistentViewError("dropped must be exactly the masking set minus survivors")
        holders = p.holders(self.party)
        signers = set(request.signers)
        if not signers <= survivors or not signers <= holders:
            raise InconsistentViewError("signers must be surviving holders of this client")
        if len(signers) < p.local_threshold:
            raise InsufficientParticipantsError(
                f"surviving holders that signed must be at least {p.local_threshold}; "
                f"got {len(signers)}"
            )
        for signer, signature in zip(request.signers, request.signatures, strict=True):
            payload = p.survivor_payload(signer, self._masking_set, self._signed)
            channels.verify(p.identities[signer], signature, SURVIVORS_PURPOSE, payload)
        owners = (self.party, *self._live)
        seed_owners = tuple(o for o in owners if o in survivors)
        key_owners = tuple(o for o in owners if o in dropped)
        return seed_owners, key_owners

    def _record_reveal(self, owner: PartyId, kind: str) -> None:
        """The both-shares rule: one kind of share per owner per round, ever."""
        previous = self._revealed.get(owner)
        if previous is not None and previous != kind:
            self.phase = ClientPhase.ABORTED
            raise InconsistentViewError(
                f"a client must reveal only one kind of share of {owner}; got a request for both"
            )
        if previous == kind:
            raise ShareReuseError(f"the {kind} share of {owner} must be revealed once")
        self._revealed[owner] = kind
