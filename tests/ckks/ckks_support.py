import collections
import itertools

import numpy as np

from secagg.ckks import TEST_INSECURE_N512, ThresholdCKKS
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.wire import decode, encode
from training.transport import InProcessTransport


def drive(session, *, inputs=None, silent=(), tamper=None, record=None, silent_from=1):
    """A tiny transport with a hook: ``tamper(msg) -> msg`` rewrites a message in flight.

    ``silent`` parties stop answering from window ``silent_from`` on; ``record``
    collects every (recipient, frame) pair. Exceptions propagate to the test.
    """
    queue = collections.deque(session.coordinator.start())
    for party, vector in (inputs or {}).items():
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


def make_federation():
    """A 3-of-5 committee on the small insecure ring, ceremony already run."""
    scheme = ThresholdCKKS(max_clients=100, preset=TEST_INSECURE_N512, precision=1e-5)
    InProcessTransport().run(scheme.setup(rng=DeterministicRng.from_int(7, "ceremony")))
    return scheme


def ideal_secret(scheme):
    """Σ sᵢ recovered by interpolating every holder's combined share (test oracle only)."""
    eng = scheme.engine
    holders = list(scheme.holders.values())[: scheme.params.threshold]
    points = [h.point for h in holders]
    out = np.empty((eng.k, eng.degree), dtype=np.uint64)
    for j, q in enumerate(eng.data_primes):
        from secagg.shamir import reconstruct

        rows = np.stack([h._combined[j] for h in holders]).astype(object)
        out[j] = reconstruct(rows, xs=points, prime=q).astype(np.uint64)
    return out


def inputs_for(n, dim, seed, bound=1.0):
    rng = DeterministicRng.from_int(seed, "inputs")
    return {client_id(i): (rng.uniform(dim) * 2 - 1) * bound for i in range(n)}


def subsets(n, t):
    return list(itertools.combinations(range(1, n + 1), t))
