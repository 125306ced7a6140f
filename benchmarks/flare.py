"""BENCHMARK-ONLY comparator: NVIDIA FLARE's homomorphic-encryption aggregation.

This reproduces, for measurement only, how NVIDIA FLARE aggregates under CKKS
(its ``HEBuilder`` provisioning defaults): one TenSEAL context with a *single
secret key shared by every client*, symmetric encryption, ``N = 8192``,
coefficient moduli ``[60, 40, 40]``, scale ``2^40``. Each client encrypts its
whole update as one ``ckks_vector`` and uploads the serialized ciphertext; the
server, which holds the context without the secret key, deserializes each upload
and adds it to a running sum; a key owner (any client — they all hold the key)
decrypts the sum.

It is NOT one of the engine's schemes (it is absent from
``secagg.schemes.available_schemes()``) and must never protect real data here:
every client can decrypt every other client's upload, which is exactly the
weakness threshold CKKS removes. It speaks the sans-IO role face so that the
same in-process transport measures its seconds and bytes like everyone else's.

Security: the shared secret context lives in this process only, for the
duration of a benchmark cell; it is never logged or written anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    ParameterError,
    UnexpectedPhaseError,
)
from secagg.protocol import (
    SERVER,
    Aggregate,
    AggregationServer,
    ClientRole,
    PartyId,
    Role,
    RoundSession,
    Scheme,
    check_round,
    check_vector,
    holder_id,
)
from secagg.rand import Csprng
from secagg.wire import Message, register

NAME = "flare-ckks"
POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40)
SCALE_BITS = 40
# Benchmark-only message type ids, outside every engine range (0x01xx–0x03xx).
_TYPE_UPLOAD = 0x7F01
_TYPE_AGGREGATE = 0x7F02
_TYPE_RESULT = 0x7F03
DECRYPTOR = holder_id(0)


@register(_TYPE_UPLOAD)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FlareUpload(Message):
    """A client's serialized TenSEAL ``CKKSVector`` (benchmark comparator only)."""

    ciphertext: bytes


@register(_TYPE_AGGREGATE)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FlareAggregate(Message):
    """The server's encrypted sum, sent to a key owner for decryption."""

    ciphertext: bytes


@register(_TYPE_RESULT)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FlareResult(Message):
    """The decrypted sum (float64), returned so the benchmark can check its error."""

    vector: np.ndarray

    def __post_init__(self) -> None:
        if self.vector.ndim != 1 or self.vector.dtype != np.float64:
            raise DecodeError("FlareResult.vector must be a 1-D float64 array")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence TenSEAL's C++ ``std::cout`` warning about multi-ciphertext vectors."""
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        libc.fflush(None)
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _tenseal() -> Any:
    import tenseal  # lazy: the comparator is optional; a broken tenseal only disables it

    return tenseal


class _Phase(enum.Enum):
    READY = enum.auto()
    COLLECT = enum.auto()
    DECRYPT = enum.auto()
    DONE = enum.auto()


class FlareClient(ClientRole):
    """Encrypts its update under the shared key (every client holds it)."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        _Phase.READY: (),
        _Phase.DONE: (),
    }

    def __init__(self, party: PartyId, session: bytes, round_index: int, dim: int, ctx: Any):
        super().__init__(party, _Phase.READY)
        self._session, self._round, self._dim, self._ctx = session, round_index, dim, ctx

    def protect(self, vector: np.ndarray) -> list[Message]:
        if self.phase is not _Phase.READY:
            raise UnexpectedPhaseError(f"{self.party} must protect once per round")
        values = check_vector(vector, self._dim)
        with _quiet_stdout():
            encrypted = _tenseal().ckks_vector(self._ctx, values.tolist())
        self.phase = _Phase.DONE
        return [
            FlareUpload(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=SERVER,
                ciphertext=encrypted.serialize(),
            )
        ]

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        return []


class FlareDecryptor(Role):
    """A key owner that decrypts the aggregate (in FLARE: every client does)."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        _Phase.DECRYPT: (FlareAggregate,),
        _Phase.DONE: (),
    }

    def __init__(self, session: bytes, round_index: int, dim: int, ctx: Any) -> None:
        super().__init__(DECRYPTOR, _Phase.DECRYPT)
        self._session, self._round, self._dim, self._ctx = session, round_index, dim, ctx

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        if not isinstance(msg, FlareAggregate):
            return []
        total = _tenseal().ckks_vector_from(self._ctx, msg.ciphertext)
        values = np.asarray(total.decrypt(), dtype=np.float64)[: self._dim]
        self.phase = _Phase.DONE
        return [
            FlareResult(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=SERVER,
                vector=values,
            )
        ]


class FlareServer(AggregationServer):
    """Deserializes each upload with the key-less context and adds it to a running sum."""

    TRANSITIONS: dict[enum.Enum, tuple[type[Message], ...]] = {
        _Phase.COLLECT: (FlareUpload,),
        _Phase.DECRYPT: (FlareResult,),
        _Phase.DONE: (),
    }

    def __init__(
        self, session: bytes, round_index: int, cohort: Sequence[PartyId], ctx: Any
    ) -> None:
        super().__init__(SERVER, _Phase.COLLECT)
        self._session, self._round, self._cohort, self._ctx = session, round_index, cohort, ctx
        self._sum: Any = None
        self._senders: list[PartyId] = []
        self._result: Aggregate | None = None

    def start(self) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        self.expect(msg)
        check_round(msg, self._session, self._round)
        if isinstance(msg, FlareUpload):
            self._add(msg)
        elif isinstance(msg, FlareResult):
            self._finish(msg.vector)
        return []

    def _add(self, msg: FlareUpload) -> None:
        if msg.sender not in self._cohort or msg.sender in self._senders:
            raise InconsistentViewError(f"sender must be a new cohort member; got {msg.sender}")
        upload = _tenseal().ckks_vector_from(self._ctx, msg.ciphertext)
        if self._sum is None:
            self._sum = upload
        else:
            self._sum.add_(upload)
        self._senders.append(msg.sender)

    def advance(self) -> list[Message]:
        if self.phase is not _Phase.COLLECT:
            raise UnexpectedPhaseError(f"server in phase {self.phase.name} has no deadline")
        if self._sum is None:
            raise InsufficientParticipantsError("contributors must be at least 1; got 0")
        self.phase = _Phase.DECRYPT
        return [
            FlareAggregate(
                session=self._session,
                round=self._round,
                sender=self.party,
                recipient=DECRYPTOR,
                ciphertext=self._sum.serialize(),
            )
        ]

    def _finish(self, vector: np.ndarray) -> None:
        contributors = tuple(p for p in self._cohort if p in self._senders)
        dropped = tuple(p for p in self._cohort if p not in self._senders)
        # Heuristic bound (not a proof): fresh-encryption + encoding noise per upload at Δ=2^40.
        bound = len(contributors) * 2.0**-20
        self._result = Aggregate(vector, contributors, dropped, bound)
        self.phase = _Phase.DONE

    @property
    def done(self) -> bool:
        return self.phase is _Phase.DONE

    def finalize(self) -> Aggregate:
        if self._result is None:
            raise UnexpectedPhaseError("the round has not produced an aggregate")
        return self._result


class FlareCkksComparator(Scheme):
    """BENCHMARK-ONLY: FLARE-style single-key CKKS aggregation (see module docstring).

    Security: every client holds the one secret key; the server does not. Any
    client (or anyone who compromises one) can decrypt every upload.
    """

    name = NAME
    insecure = False

    def __init__(self) -> None:
        ts = _tenseal()
        # Provisioning (FLARE's HEBuilder): done once, out of band, not part of a round.
        self._secret_ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=POLY_MODULUS_DEGREE,
            coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
        self._secret_ctx.global_scale = 2.0**SCALE_BITS
        server_blob = self._secret_ctx.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        self._server_ctx = ts.context_from(server_blob)

    def open_round(
        self, round_index: int, cohort: Sequence[PartyId], dim: int, *, rng: Csprng
    ) -> RoundSession:
        if dim < 1:
            raise ParameterError(f"dim must be ≥ 1; got {dim}")
        if len(set(cohort)) != len(cohort) or SERVER in cohort or DECRYPTOR in cohort:
            raise ParameterError("cohort must be distinct client ids")
        session = rng.random_bytes(16)
        server = FlareServer(session, round_index, tuple(cohort), self._server_ctx)
        clients: dict[PartyId, ClientRole] = {
            p: FlareClient(p, session, round_index, dim, self._secret_ctx) for p in cohort
        }
        participants: dict[PartyId, Role] = dict(clients)
        participants[DECRYPTOR] = FlareDecryptor(session, round_index, dim, self._secret_ctx)
        return RoundSession(
            coordinator=server, participants=participants, clients=clients, phases=1
        )

    def describe(self) -> dict[str, object]:
        return {
            "scheme": NAME,
            "insecure": False,
            "benchmark_only": True,
            "keys": "single secret key shared by every client (FLARE HEBuilder)",
            "encryption": "symmetric",
            "poly_modulus_degree": POLY_MODULUS_DEGREE,
            "coeff_mod_bit_sizes": list(COEFF_MOD_BIT_SIZES),
            "scale_bits": SCALE_BITS,
        }
