"""A malicious masking server and what it could reconstruct (tests only).

The attacking server subclasses :class:`MaskingServer` and deviates only by choosing
what protocol messages to send: every view it shows, every digest it computes itself,
and every signature of a corrupt client it forges with that client's real identity key.
Messages travel through the real wire codec. :func:`exposure` then plays the attacker's
last step: with every share it collected and every secret of the corrupt clients, it
tries to strip the masks from the victims' inputs.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import channels
from secagg.errors import IntegrityError, SecAggError
from secagg.identity import PartyKeys, simulated_identities
from secagg.masking import (
    MaskingClient,
    MaskingServer,
    PairwiseMasking,
    RoundParams,
    ServerPhase,
)
from secagg.masking.client import pair_mask_key, self_mask_key
from secagg.masking.messages import (
    ConsistencyRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.masking.params import SURVIVORS_PURPOSE, VIEW_PURPOSE
from secagg.masking.prg import apply_masks
from secagg.masking.sharing import ELEMENTS, field_to_secret, reconstruct_batch
from secagg.protocol import SERVER, client_id
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode

DIM = 6


class HonestServer(MaskingServer):
    """The real server, built with the same keyword arguments as the attackers."""

    def __init__(self, params, *, corrupt=None):
        super().__init__(params)
        self.corrupt = dict(corrupt or {})
        self.responses: list[UnmaskResponse] = []


class IsolatingServer(MaskingServer):
    """Shows ``victims`` the masking set U2 − ``hidden``, everyone else the true U2, and
    proposes the survivor set ``survivors``; forges every corrupt client's signature on
    whatever pair each recipient signed; asks everyone who signed, whatever the count."""

    def __init__(self, params, *, victims=(), hidden=(), survivors=None, corrupt=None):
        super().__init__(params)
        self.victims = set(victims)
        self.hidden = set(hidden)
        self.chosen = set(survivors) if survivors is not None else None
        self.corrupt: dict[str, PartyKeys] = dict(corrupt or {})
        self.vectors: dict[str, np.ndarray] = {}
        self.responses: list[UnmaskResponse] = []
        self.pairs: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def view_of(self, party):
        u2 = set(self._shared)
        return self._ordered(u2 - self.hidden if party in self.victims else u2)

    def _close_share(self):
        out = super()._close_share()
        bundles = []
        for b in out:
            view = self.view_of(b.recipient)
            keep = [i for i, s in enumerate(b.senders) if s in view]
            bundles.append(
                dataclasses.replace(
                    b,
                    masking_set=view,
                    senders=tuple(b.senders[i] for i in keep),
                    ciphertexts=tuple(b.ciphertexts[i] for i in keep),
                )
            )
        return bundles

    def _on_masked_input(self, msg):
        self.vectors[msg.sender] = msg.vector.copy()
        super()._on_masked_input(msg)

    def _forge(self, party, purpose, payload):
        return channels.sign(self.corrupt[party].signing, purpose, payload)

    def _close_masked_input(self):
        p = self.params
        arrived = set(self._inputs)
        u3 = self._ordered(self.chosen & arrived if self.chosen is not None else arrived)
        self._survivors = u3
        out = []
        for u in u3:
            view = self.view_of(u)
            owners = tuple(v for v in p.neighbours(u) if v in set(u3) and v != u)
            sigs = tuple(
                self._forge(o, VIEW_PURPOSE, p.view_payload(o, view))
                if o in self.corrupt
                else self._views[o]
                for o in owners
            )
            self.pairs[u] = (view, u3)
            out.append(
                ConsistencyRequest(
                    **self._header(u), survivors=u3, view_signers=owners, view_signatures=sigs
                )
            )
        self.phase = ServerPhase.CONSISTENCY
        return out

    def _on_signature(self, msg):
        self._signatures[msg.sender] = msg.signature  # kept unverified: the server is hostile

    def _close_consistency(self):
        p = self.params
        out = []
        for v in self._ordered(self._signatures):
            view, u3 = self.pairs[v]
            signers, sigs = [], []
            for s in self._ordered(p.holders(v) & set(u3)):
                payload = p.survivor_payload(s, view, u3)
                if s in self.corrupt:
                    signers.append(s)
                    sigs.append(self._forge(s, SURVIVORS_PURPOSE, payload))
                elif s in self._signatures:
                    try:
                        channels.verify(
                            p.identities[s], self._signatures[s], SURVIVORS_PURPOSE, payload
                        )
                    except IntegrityError:
                        continue
                    signers.append(s)
                    sigs.append(self._signatures[s])
            out.append(
                UnmaskRequest(
                    **self._header(v),
                    survivors=u3,
                    dropped=tuple(x for x in view if x not in set(u3)),
                    signers=tuple(signers),
                    signatures=tuple(sigs),
                )
            )
        self._asked = self._ordered(self._signatures)
        self.phase = ServerPhase.UNMASK
        return out

    def _on_unmask_response(self, msg):
        self.responses.append(msg)

    def _close_unmask(self):
        self.phase = ServerPhase.DONE
        return []


@dataclasses.dataclass
class Attack:
    server: IsolatingServer
    clients: dict[str, MaskingClient]
    keys: dict[str, PartyKeys]
    inputs: dict[str, np.ndarray]
    refusals: dict[str, list[Exception]]


def attack_round(
    n,
    *,
    seed=0,
    server_cls=IsolatingServer,
    corrupt=(),
    dropouts=None,
    scheme_kwargs=None,
    client_kwargs=None,
    params_for=None,
    **server_kwargs,
):
    """Build a round party-locally (roster, round_parameters, client_role) and run it
    through the codec. Honest clients that refuse are recorded, not fatal: the rest of
    the round goes on, as it would over a network.

    ``client_kwargs``: the clients' own configuration (their local policy; default the
    server's ``scheme_kwargs``). ``params_for(party, message)``: the RoundParameters
    message the server broadcasts to ``party`` (default the true one). A client that
    refuses its parameters takes no part in the round.
    """
    scheme = PairwiseMasking(max_clients=n, **(scheme_kwargs or {}))
    cohort = [client_id(i) for i in range(n)]
    rng = DeterministicRng.from_int(seed, "attack")
    keys, roster = simulated_identities(cohort, rng=rng.fork("ids"))
    params = scheme.round_parameters(3, cohort, DIM, rng=rng.fork("params"), roster=roster)
    server = server_cls(params, corrupt={c: keys[c] for c in corrupt}, **server_kwargs)
    refusals: dict[str, list[Exception]] = collections.defaultdict(list)
    clients = {}
    for c in cohort:
        local = PairwiseMasking(
            max_clients=n, **(client_kwargs if client_kwargs is not None else scheme_kwargs or {})
        )
        message = params.to_message() if params_for is None else params_for(c, params.to_message())
        try:
            received = RoundParams.from_bytes(encode(message))
            clients[c] = local.client_role(c, received, keys[c], rng=rng.fork(c), roster=roster)
        except SecAggError as exc:
            refusals[c].append(exc)
    in_rng = DeterministicRng.from_int(seed, "inputs")
    inputs = {c: in_rng.uniform(DIM) * 2 - 1 for c in cohort}
    silent_from = dict(dropouts or {})
    silent_from.update({c: 0 for c in cohort if c not in clients})
    queue = collections.deque()
    for c in cohort:
        if silent_from.get(c, 9) > 0:
            queue.extend(clients[c].protect(inputs[c]))
    window = 0
    while True:
        while queue:
            msg = decode(encode(queue.popleft()))
            party = msg.recipient if msg.recipient != SERVER else msg.sender
            if silent_from.get(party, 9) <= window:
                continue
            if msg.recipient == SERVER:
                try:
                    queue.extend(server.handle(msg))
                except SecAggError as exc:
                    refusals[SERVER].append(exc)
                continue
            try:
                queue.extend(clients[msg.recipient].handle(msg))
            except SecAggError as exc:
                refusals[msg.recipient].append(exc)
        if server.done or window > 6:
            break
        window += 1
        try:
            queue.extend(server.advance())
        except SecAggError as exc:
            refusals[SERVER].append(exc)
            break
    return Attack(server, clients, keys, inputs, refusals)


def _collected(attack, kind):
    """Shares of each owner the attacker holds: revealed ones plus the corrupt clients'."""
    table = collections.defaultdict(dict)
    for r in attack.server.responses:
        owners, rows = (
            (r.seed_owners, r.seed_shares) if kind == "seed" else (r.key_owners, r.key_shares)
        )
        for owner, row in zip(owners, rows, strict=True):
            table[owner][r.sender] = np.asarray(row, np.int64)
    for c in attack.server.corrupt:
        for owner, row in attack.clients[c]._held.items():
            part = row[:ELEMENTS] if kind == "seed" else row[ELEMENTS:]
            table[owner].setdefault(c, np.asarray(part, np.int64))
    return table


def _secret(attack, table, owner):
    p = attack.server.params
    holders = sorted(table.get(owner, {}), key=p.position)[: p.local_threshold]
    if len(holders) < p.local_threshold:
        return None
    shares = np.array([[table[owner][h] for h in holders]])
    points = np.array([[p.point(h) for h in holders]])
    try:
        return field_to_secret(reconstruct_batch(shares, points)[0])
    except IntegrityError:
        return None


def exposure(attack, group):
    """The attacker's best estimate of Σ_{v ∈ group} x_v, or None if a mask it cannot
    remove is left on it."""
    server, p = attack.server, attack.server.params
    seeds, keys = _collected(attack, "seed"), _collected(attack, "key")
    total = np.zeros(p.dim, dtype=p.encoding.dtype)
    add, subtract = [], []
    for v in group:
        if v not in server.vectors:
            return None
        np.add(total, server.vectors[v], out=total)
        seed = _secret(attack, seeds, v)
        if seed is None or p.seed_commitment(v, seed) != server._adverts[v].seed_commitment:
            return None
        subtract.append(self_mask_key(p, v, seed))
        own_key = _secret(attack, keys, v)
        for q in attack.clients[v]._live:  # ground truth: whom v really masked with
            if q in group:
                continue  # cancels inside the group's sum
            if q in server.corrupt:
                private = attack.clients[q]._mask_key
                public = server._adverts[v].mask_key
            elif (secret := _secret(attack, keys, q)) is not None:
                private = X25519PrivateKey.from_private_bytes(secret)
                public = server._adverts[v].mask_key
            elif own_key is not None:
                private = X25519PrivateKey.from_private_bytes(own_key)
                public = server._adverts[q].mask_key
            else:
                return None
            mask = pair_mask_key(p, v, q, channels.agree(private, public))
            (subtract if p.adds_pair_mask(v, q) else add).append(mask)
    apply_masks(total, add=add, subtract=subtract)
    return p.encoding.decode(total)


def assert_not_exposed(attack, group):
    """The attacker's best effort is not the group's input sum (nothing to reconstruct,
    or a vector still masked)."""
    truth = np.sum([attack.inputs[v] for v in group], axis=0)
    estimate = exposure(attack, group)
    assert estimate is None or not np.allclose(estimate, truth, atol=1e-3)


def seed_shares_revealed(attack, owner):
    return sum(owner in r.seed_owners for r in attack.server.responses)
