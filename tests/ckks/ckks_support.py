"""Shared drivers for the threshold-CKKS tests: real roles, real wire codec, attacker hooks."""

import collections
import dataclasses
import itertools

import numpy as np

from secagg import channels
from secagg.ckks import TEST_INSECURE_N512, ThresholdCKKS, transcript
from secagg.ckks.messages import CkksSubmission, ShareRequest
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode
from secagg_training.transport import InProcessTransport


def drive(session, *, inputs=None, silent=(), tamper=None, record=None, silent_from=1):
    """A tiny transport with a hook: ``tamper(msg) -> msg`` rewrites a message in flight.

    ``silent`` parties stop answering from window ``silent_from`` on; ``record``
    collects every (recipient, frame) pair. Exceptions propagate to the test.
    """
    queue = collections.deque(session.coordinator.start())
    for party, vector in (inputs or {}).items():
        if party in silent and silent_from == 0:
            continue
        queue.extend(session.clients[party].protect(vector))
    window = 0
    while True:
        while queue:
            msg = queue.popleft()
            if tamper is not None:
                msg = tamper(msg)
                if msg is None:
                    continue
            if window >= silent_from and (msg.recipient in silent or msg.sender in silent):
                continue
            frame = encode(msg)
            if record is not None:
                record.append((msg.recipient, frame))
            queue.extend(session.role(msg.recipient).handle(decode(frame)))
        if session.coordinator.done:
            return
        window += 1
        queue.extend(session.coordinator.advance())


def make_federation(max_clients=12, *, seed=7, **kwargs):
    """A 3-of-5 committee on the small insecure ring, CRS ceremony already run."""
    scheme = ThresholdCKKS(max_clients=max_clients, preset=TEST_INSECURE_N512, **kwargs)
    InProcessTransport().run(scheme.setup(rng=DeterministicRng.from_int(seed, "ceremony")))
    return scheme


def cohort_of(n):
    return [client_id(i) for i in range(n)]


def inputs_for(cohort, dim, seed, bound=1.0):
    rng = DeterministicRng.from_int(seed, "inputs")
    return {p: (rng.uniform(dim) * 2 - 1) * bound for p in cohort}


_ROUNDS = itertools.count(1)


def open_round(scheme, n, dim, seed, *, server_cls=None, round_index=None):
    """A round over client/0..n−1; ``server_cls`` swaps in an attacking server subclass.

    Holders answer once per round index for the whole federation, so every call
    takes a fresh index unless one is given.
    """
    round_index = next(_ROUNDS) if round_index is None else round_index
    session = scheme.open_round(
        round_index, cohort_of(n), dim, rng=DeterministicRng.from_int(seed, "round")
    )
    if server_cls is not None:
        params = session.coordinator.round_params
        session.coordinator = server_cls(scheme.engine, scheme.roster, params)
    return session


def resign(client, msg: CkksSubmission) -> CkksSubmission:
    """What a malicious client does after changing its submission: sign it again itself."""
    payload = transcript.receipt_payload(
        msg.session,
        msg.round,
        client._params_digest,
        transcript.ciphertext_digest(msg.residues),
        msg.ephemeral,
        [transcript.blob_digest("envelope", e) for e in msg.envelopes],
    )
    signature = channels.sign(client._keys.signing, transcript.RECEIPT_PURPOSE, payload)
    return dataclasses.replace(msg, signature=signature)


def exact_sum(inputs, parties):
    return np.sum([inputs[p] for p in parties], axis=0)


def keep_members(req, idx):
    """The request restricted to the accepted members at positions ``idx`` (an attacking
    server's edit; holders recompute every digest it covers)."""
    n = len(req.envelope_digests) // max(1, len(req.accepted))
    return dataclasses.replace(
        req,
        accepted=tuple(req.accepted[i] for i in idx),
        ct_digests=tuple(req.ct_digests[i] for i in idx),
        ephemerals=tuple(req.ephemerals[i] for i in idx),
        envelope_digests=tuple(d for i in idx for d in req.envelope_digests[i * n : (i + 1) * n]),
        signatures=tuple(req.signatures[i] for i in idx),
        envelopes=tuple(req.envelopes[i] for i in idx),
    )


def empty_request(params, round_index, holder):
    """A share request with no accepted member, carrying ``params`` (whatever they say)."""
    return ShareRequest(
        session=params.session,
        round=round_index,
        sender="server",
        recipient=holder,
        round_params=encode(params),
        accepted=(),
        ct_digests=(),
        ephemerals=(),
        envelope_digests=(),
        signatures=(),
        envelopes=(),
    )
