"""Step-by-step driver for masking rounds (tests only): windows, hold-backs, transcripts."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from secagg.masking import PairwiseMasking
from secagg.protocol import RoundSession, client_id
from secagg.rand import DeterministicRng
from secagg.wire import Message, decode, encode

N = 4
DIM = 6


def make_round(
    n: int = N, dim: int = DIM, seed: int = 0, **scheme_kwargs: object
) -> tuple[RoundSession, list[str]]:
    scheme = PairwiseMasking(max_clients=max(n, 2), **scheme_kwargs)  # type: ignore[arg-type]
    cohort = [client_id(i) for i in range(n)]
    return scheme.open_round(3, cohort, dim, rng=DeterministicRng.from_int(seed)), cohort


def inputs_for(cohort: list[str], dim: int = DIM, seed: int = 1) -> dict[str, np.ndarray]:
    rng = DeterministicRng.from_int(seed, "inputs")
    return {p: rng.uniform(dim) * 2 - 1 for p in cohort}


def wire(msg: Message) -> Message:
    """Through the real codec, as a transport would."""
    return decode(encode(msg))


@dataclasses.dataclass
class Driven:
    session: RoundSession
    cohort: list[str]
    held: list[Message]
    transcript: dict[type, list[Message]]


def drive(window: int, *, hold_from: str | None = None, hold_to: str | None = None) -> Driven:
    """Run windows 0..window; in the last one hold back messages from/to the named parties.

    Window 0 is every client's ``protect``; window k ≥ 1 starts with the k-th
    ``advance``. Returns the held-back messages undelivered.
    """
    rs, cohort = make_round()
    inputs = inputs_for(cohort)
    transcript: dict[type, list[Message]] = collections.defaultdict(list)
    held: list[Message] = []
    queue: collections.deque[Message] = collections.deque()
    for current in range(window + 1):
        if current == 0:
            for p in cohort:
                queue.extend(rs.clients[p].protect(inputs[p]))
        else:
            queue.extend(rs.coordinator.advance())
        while queue:
            msg = wire(queue.popleft())
            transcript[type(msg)].append(msg)
            if current == window and (msg.sender == hold_from or msg.recipient == hold_to):
                held.append(msg)
                continue
            queue.extend(rs.role(msg.recipient).handle(msg))
    return Driven(rs, cohort, held, transcript)


def full_transcript() -> Driven:
    """A complete round with no drop-outs (every message type recorded)."""
    return drive(5)
