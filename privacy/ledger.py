"""The privacy ledger: an append-only, hash-chained record of every privacy spend.

One SQLite file (``RUN_DIR/ledger``). Each entry is one fact — a client's
DP-SGD round, a client-level (distributed DP) round, or a budget being set or
changed — stored as canonical JSON together with the SHA-256 chain hash over
the previous entry's hash and this entry. Every entry carries what a reader
needs to recompute ε without trusting us: the DP event (dp-accounting JSON),
δ, unit and adjacency, sampling scheme, σ, q, steps, clip norm, accountant and
library versions, and the threat model the ε holds under.

Durability: each append is one ``BEGIN IMMEDIATE`` transaction with
``synchronous=FULL``: after a crash an entry is either fully there or absent;
``UNIQUE(client, round, kind)`` refuses a replayed duplicate.

Integrity: triggers refuse UPDATE/DELETE through SQLite; an edit made by other
means (or a reordering, or a deleted middle entry) breaks the chain and is
reported by :meth:`PrivacyLedger.verify`, which :meth:`PrivacyLedger.open`
runs. Deleting the newest entries leaves a valid shorter chain: pin
:meth:`PrivacyLedger.head` outside the ledger (e.g. in ``result.json``) and
pass it back as ``expected_head`` to detect that too.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secagg_privacy.accounting import (
    ACCOUNTANT,
    ADJACENCY,
    AccountantState,
    DpEvent,
    event_from_json,
    event_to_history,
    event_to_json,
    library_versions,
)
from secagg_privacy.errors import (
    LedgerDuplicateError,
    LedgerIntegrityError,
    PrivacyParameterError,
)

__all__ = [
    "KIND_BUDGET",
    "KIND_CLIENT_LEVEL",
    "KIND_DPSGD",
    "Budget",
    "ClientBudget",
    "LedgerEntry",
    "PrivacyLedger",
    "THREAT_MODEL_RECORD_LEVEL",
    "pin_digest",
]

KIND_DPSGD = "dp-sgd"
KIND_CLIENT_LEVEL = "client-level"
_BUDGET_PREFIX = "budget:"
KIND_BUDGET = _BUDGET_PREFIX + KIND_DPSGD
_SPEND_KINDS = (KIND_DPSGD, KIND_CLIENT_LEVEL)

THREAT_MODEL_RECORD_LEVEL = (
    "record-level DP of each client's local dataset against anyone who sees the client's "
    "noisy model updates (the server, key holders, other clients); every DP-SGD step of "
    "every round is composed, so all intermediate checkpoints are covered"
)
UNIT_RECORD = "one training record of one client"
SAMPLING_POISSON = "poisson"

_SCHEMA_VERSION = "1"
_HASH_DOMAIN = b"secagg/privacy-ledger/v1\x00"
_PIN_DOMAIN = b"secagg/privacy-pin/v1\x00"
_TRIGGERS = ("entries_no_update", "entries_no_delete")
_GENESIS = "0" * 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (client, round, kind)
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only'); END;
"""


def _canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _chain_hash(prev_hash: str, seq: int, body: str) -> str:
    h = hashlib.sha256(_HASH_DOMAIN)
    h.update(prev_hash.encode("ascii"))
    h.update(seq.to_bytes(8, "big"))
    h.update(body.encode("utf-8"))
    return h.hexdigest()


def _check_client(client: object) -> str:
    if not isinstance(client, str) or not client or len(client) > 200:
        raise PrivacyParameterError(
            f"client must be a non-empty string ≤ 200 chars; got {client!r}"
        )
    return client


def _check_round(round_index: object) -> int:
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
        raise PrivacyParameterError(f"round must be a non-negative integer; got {round_index!r}")
    return round_index


def _check_number(name: str, value: object, *, lo: float, hi: float, open_lo: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PrivacyParameterError(f"{name} must be a finite number; got {value!r}")
    v = float(value)
    if v > hi or v < lo or (open_lo and v == lo):
        bracket = "(" if open_lo else "["
        raise PrivacyParameterError(f"{name} must be in {bracket}{lo:g}, {hi:g}]; got {value!r}")
    return v


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise PrivacyParameterError(f"steps must be a non-negative integer; got {steps!r}")
    return steps


@dataclass(frozen=True)
class LedgerEntry:
    """One verified ledger row. ``body`` is the full recorded fact."""

    seq: int
    client: str
    round: int
    kind: str
    body: dict[str, Any]
    hash: str

    @property
    def event(self) -> DpEvent | None:
        text = self.body.get("event")
        return event_from_json(text) if isinstance(text, str) else None

    @property
    def epsilon(self) -> float | None:
        value = self.body.get("epsilon")
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Budget:
    """A client's current budget (the latest budget entry for its scope)."""

    client: str
    epsilon: float
    delta: float
    round: int
    reason: str


@dataclass(frozen=True)
class ClientBudget:
    """Per-client summary: budget, spend, and the cumulative ε after each round.

    ``entries`` counts the client's spend entries of the summarized kind.
    """

    client: str
    budget_epsilon: float | None
    epsilon_spent: float
    delta: float
    rounds: list[tuple[int, float]]
    entries: int


class PrivacyLedger:
    """SQLite-backed, append-only, hash-chained privacy ledger.

    Use :meth:`open` (verifies the whole chain) rather than the constructor.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self._entries: list[LedgerEntry] = []

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, path: Path, *, expected_head: tuple[int, str] | None = None) -> PrivacyLedger:
        """Open or create the ledger at ``path`` and verify it.

        An existing ledger is never repaired: a missing meta row, table or trigger is
        reported as tampering, not silently re-created.

        Raises:
            LedgerIntegrityError: the structure or chain does not verify, or
                ``expected_head`` (count, hash) is not a prefix-consistent head.
        """
        path = Path(path)
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")
            if fresh:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,)
                )
        except sqlite3.DatabaseError as exc:
            raise LedgerIntegrityError(
                f"ledger must be a readable SQLite file; got {path.name}"
            ) from exc
        return cls._verified(conn, path, expected_head, exact=False)

    @classmethod
    def open_readonly(cls, path: Path, *, expected_head: tuple[int, str]) -> PrivacyLedger:
        """Open an existing ledger read-only (SQLite ``mode=ro``) for an audit.

        The ledger must hold *exactly* the pinned ``expected_head`` (count, hash):
        an appended entry is as much a finding as a truncated one.

        Raises:
            LedgerIntegrityError: unreadable, structurally tampered, chain broken,
                or not exactly the pinned head.
        """
        path = Path(path)
        try:
            uri = path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise LedgerIntegrityError(
                f"ledger must be a readable SQLite file; got {path.name}"
            ) from exc
        return cls._verified(conn, path, expected_head, exact=True)

    @classmethod
    def _verified(
        cls,
        conn: sqlite3.Connection,
        path: Path,
        expected_head: tuple[int, str] | None,
        *,
        exact: bool,
    ) -> PrivacyLedger:
        ledger = cls(conn, path)
        try:
            ledger._check_structure()
            ledger.verify(expected_head=expected_head, exact=exact)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerIntegrityError(
                f"ledger must be a readable SQLite file; got {path.name}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return ledger

    def _check_structure(self) -> None:
        """The schema row and both append-only triggers must exist (never re-created)."""
        names = {
            row[0]
            for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')"
            )
        }
        missing = [n for n in ("meta", "entries", *_TRIGGERS) if n not in names]
        if missing:
            raise LedgerIntegrityError(
                f"ledger must have its tables and append-only triggers; got {missing} missing"
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrivacyLedger({self._path.name!s}, entries={len(self._entries)})"

    # ---------------------------------------------------------------- integrity

    def verify(
        self,
        *,
        recompute_epsilon: bool = False,
        expected_head: tuple[int, str] | None = None,
        exact: bool = False,
    ) -> int:
        """Re-read every row and check the hash chain; returns the number of entries.

        With ``recompute_epsilon`` each spend entry's ε is recomputed from the
        stored events of that client (and kind) up to it, and must match. With
        ``exact`` the ledger must end at ``expected_head`` (no appended entries).
        """
        try:
            schema = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            rows = self._conn.execute(
                "SELECT seq, client, round, kind, body, prev_hash, hash FROM entries ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerIntegrityError(
                "ledger tables must be readable; got a damaged file"
            ) from exc
        if schema is None or schema[0] != _SCHEMA_VERSION:
            raise LedgerIntegrityError(f"ledger schema must be {_SCHEMA_VERSION}; got {schema!r}")
        entries = [self._verify_row(i, row, prev) for i, row, prev in _with_prev(rows)]
        if expected_head is not None:
            count, digest = expected_head
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise LedgerIntegrityError(
                    f"pinned entry count must be a non-negative integer; got {count!r}"
                )
            if exact and count != len(entries):
                raise LedgerIntegrityError(
                    f"ledger must hold exactly the pinned {count} entries; got {len(entries)}"
                )
            pinned = entries[count - 1].hash if 0 < count <= len(entries) else _GENESIS
            if count > len(entries) or pinned != digest:
                raise LedgerIntegrityError(
                    f"ledger must extend the pinned head at entry {count}; "
                    f"got {len(entries)} entries with a different chain"
                )
        if recompute_epsilon:
            _recheck_epsilons(entries)
        self._entries = entries
        return len(entries)

    @staticmethod
    def _verify_row(index: int, row: tuple[Any, ...], prev_hash: str) -> LedgerEntry:
        seq, client, round_index, kind, body, stored_prev, stored_hash = row
        if seq != index or stored_prev != prev_hash:
            raise LedgerIntegrityError(
                f"ledger entry must continue the chain; got a break at entry {index}"
            )
        if _chain_hash(prev_hash, seq, body) != stored_hash:
            raise LedgerIntegrityError(
                f"ledger entry must match its hash; got an edit at entry {index}"
            )
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise LedgerIntegrityError(
                f"ledger entry must be JSON; got garbage at entry {index}"
            ) from exc
        if (
            not isinstance(parsed, dict)
            or parsed.get("client") != client
            or parsed.get("round") != round_index
            or parsed.get("kind") != kind
        ):
            raise LedgerIntegrityError(
                f"ledger columns must match the hashed body; got a mismatch at entry {index}"
            )
        return LedgerEntry(seq, client, round_index, kind, parsed, stored_hash)

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the newest): pin it outside to detect truncation."""
        if not self._entries:
            return (0, _GENESIS)
        return (len(self._entries), self._entries[-1].hash)

    # ---------------------------------------------------------------- appends

    def _append(
        self, client: str, round_index: int, kind: str, fields: dict[str, Any]
    ) -> LedgerEntry:
        body_obj = {**fields, "client": client, "round": round_index, "kind": kind}
        body = _canonical_json(body_obj)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (0, _GENESIS) if last is None else (last[0] + 1, last[1])
            if seq != len(self._entries) or (
                last is not None and last[1] != self._entries[-1].hash
            ):
                raise LedgerIntegrityError("ledger must not change behind this handle; reopen it")
            digest = _chain_hash(prev, seq, body)
            conn.execute(
                "INSERT INTO entries(seq, client, round, kind, body, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, client, round_index, kind, body, prev, digest),
            )
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise LedgerDuplicateError(
                "(client, round, kind) must be new; "
                f"got a repeat of ({client!r}, {round_index}, {kind!r})"
            ) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        entry = LedgerEntry(seq, client, round_index, kind, body_obj, digest)
        self._entries.append(entry)
        return entry

    def has_entry(self, client: str, round_index: int, kind: str = KIND_DPSGD) -> bool:
        return any(
            e.client == client and e.round == round_index and e.kind == kind for e in self._entries
        )

    def set_budget(
        self,
        client: str,
        *,
        epsilon: float,
        delta: float,
        round_index: int,
        scope: str = KIND_DPSGD,
        reason: str = "",
    ) -> LedgerEntry:
        """Record a client's budget (initial or changed) for ``scope``; effective from now on."""
        _check_client(client)
        _check_round(round_index)
        if scope not in _SPEND_KINDS:
            raise PrivacyParameterError(f"scope must be one of {_SPEND_KINDS}; got {scope!r}")
        eps = _check_number("budget epsilon", epsilon, lo=0.0, hi=math.inf)
        d = _check_number("delta", delta, lo=0.0, hi=1.0)
        spent = self.entries(client=client, kind=scope)
        if spent and spent[-1].body.get("delta") != d:
            raise PrivacyParameterError(
                f"delta must stay {spent[-1].body.get('delta')} for a client with recorded spend; "
                f"got {d}"
            )
        if not isinstance(reason, str) or len(reason) > 500:
            raise PrivacyParameterError("reason must be a string of at most 500 characters")
        fields = {"budget_epsilon": eps, "delta": d, "scope": scope, "reason": reason}
        return self._append(client, round_index, _BUDGET_PREFIX + scope, fields)

    def record_round(
        self,
        client: str,
        round_index: int,
        *,
        event: DpEvent,
        delta: float,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        clip_norm: float,
        kind: str = KIND_DPSGD,
        unit: str = UNIT_RECORD,
        adjacency: str = ADJACENCY,
        sampling: str = SAMPLING_POISSON,
        threat_model: str = THREAT_MODEL_RECORD_LEVEL,
        extra: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Commit one round's spend for ``client``; stores the cumulative ε after it.

        The cumulative ε is computed by the accountant of record from every
        stored event of this client and kind plus ``event``.

        Raises:
            LedgerDuplicateError: this (client, round, kind) is already recorded.
        """
        _check_client(client)
        _check_round(round_index)
        if kind not in _SPEND_KINDS:
            raise PrivacyParameterError(f"kind must be one of {_SPEND_KINDS}; got {kind!r}")
        d = _check_number("delta", delta, lo=0.0, hi=1.0)
        self._check_delta_consistent(client, kind, d)
        if self.has_entry(client, round_index, kind):
            raise LedgerDuplicateError(
                "(client, round, kind) must be new; "
                f"got a repeat of ({client!r}, {round_index}, {kind!r})"
            )
        _check_event_matches(event, noise_multiplier, sample_rate, steps)
        state = self.accountant_state(client, kind=kind).with_event(event)
        fields: dict[str, Any] = {
            "unit": unit,
            "adjacency": adjacency,
            "sampling": sampling,
            "noise_multiplier": _check_number(
                "noise_multiplier", noise_multiplier, lo=0.0, hi=math.inf
            ),
            "sample_rate": _check_number("sample_rate", sample_rate, lo=0.0, hi=1.0),
            "steps": _check_steps(steps),
            "clip_norm": _check_number("clip_norm", clip_norm, lo=0.0, hi=math.inf),
            "delta": d,
            "epsilon": state.epsilon(delta=d),
            "accountant": ACCOUNTANT,
            "versions": library_versions(),
            "threat_model": threat_model,
            "event": event_to_json(event),
            "extra": extra or {},
        }
        return self._append(client, round_index, kind, fields)

    def _check_delta_consistent(self, client: str, kind: str, delta: float) -> None:
        budget = self.budget(client, scope=kind)
        spent = self.entries(client=client, kind=kind)
        expected = (
            budget.delta if budget is not None else (spent[-1].body["delta"] if spent else None)
        )
        if expected is not None and expected != delta:
            raise PrivacyParameterError(
                f"delta must be {expected} for client {client!r}; got {delta}"
            )

    # ---------------------------------------------------------------- queries

    def entries(self, *, client: str | None = None, kind: str | None = None) -> list[LedgerEntry]:
        return [
            e
            for e in self._entries
            if (client is None or e.client == client) and (kind is None or e.kind == kind)
        ]

    def clients(self, *, kind: str = KIND_DPSGD) -> list[str]:
        seen: dict[str, None] = {}
        for e in self._entries:
            if e.kind in (kind, _BUDGET_PREFIX + kind):
                seen.setdefault(e.client, None)
        return list(seen)

    def budget(self, client: str, *, scope: str = KIND_DPSGD) -> Budget | None:
        found = self.entries(client=client, kind=_BUDGET_PREFIX + scope)
        if not found:
            return None
        b = found[-1].body
        return Budget(
            client, float(b["budget_epsilon"]), float(b["delta"]), found[-1].round, b["reason"]
        )

    def budget_history(self, client: str, *, scope: str = KIND_DPSGD) -> list[Budget]:
        """Every budget entry of ``client`` for ``scope``, oldest first."""
        return [
            Budget(
                client,
                float(e.body["budget_epsilon"]),
                float(e.body["delta"]),
                e.round,
                e.body["reason"],
            )
            for e in self.entries(client=client, kind=_BUDGET_PREFIX + scope)
        ]

    def accountant_state(self, client: str, *, kind: str = KIND_DPSGD) -> AccountantState:
        """The client's carried accountant state: every stored event of ``kind``."""
        events = [e.event for e in self.entries(client=client, kind=kind)]
        return AccountantState(tuple(ev for ev in events if ev is not None))

    def epsilon_spent(self, client: str, *, kind: str = KIND_DPSGD) -> float:
        spent = self.entries(client=client, kind=kind)
        return float(spent[-1].body["epsilon"]) if spent else 0.0

    def summary(self, *, kind: str = KIND_DPSGD) -> dict[str, ClientBudget]:
        """Per client: budget, ε spent (recorded, accountant of record), δ, ε after each round."""
        out: dict[str, ClientBudget] = {}
        for client in self.clients(kind=kind):
            spent = self.entries(client=client, kind=kind)
            budget = self.budget(client, scope=kind)
            delta = (
                budget.delta if budget else (float(spent[-1].body["delta"]) if spent else math.nan)
            )
            out[client] = ClientBudget(
                client=client,
                budget_epsilon=budget.epsilon if budget else None,
                epsilon_spent=self.epsilon_spent(client, kind=kind),
                delta=delta,
                rounds=[(e.round, float(e.body["epsilon"])) for e in spent],
                entries=len(spent),
            )
        return out


def _with_prev(rows: list[tuple[Any, ...]]) -> list[tuple[int, tuple[Any, ...], str]]:
    out = []
    prev = _GENESIS
    for i, row in enumerate(rows):
        out.append((i, row, prev))
        prev = row[6]
    return out


def _recheck_epsilons(entries: list[LedgerEntry]) -> None:
    states: dict[tuple[str, str], AccountantState] = {}
    for e in entries:
        if e.kind not in _SPEND_KINDS:
            continue
        event = e.event
        if event is None:
            raise LedgerIntegrityError(
                f"spend entry must hold its event; got none at entry {e.seq}"
            )
        key = (e.client, e.kind)
        state = states.get(key, AccountantState()).with_event(event)
        states[key] = state
        recomputed = state.epsilon(delta=float(e.body["delta"]))
        if not math.isclose(recomputed, float(e.body["epsilon"]), rel_tol=1e-9, abs_tol=1e-12):
            raise LedgerIntegrityError(
                "recorded epsilon must recompute from the stored events; "
                f"got a mismatch at entry {e.seq}"
            )


def _check_event_matches(event: DpEvent, sigma: float, q: float, steps: int) -> None:
    """The summary columns (σ, q, steps) must describe exactly the stored event."""
    history = event_to_history(event)
    expected = [(float(sigma), float(q), steps)] if steps else []
    if history != expected:
        raise PrivacyParameterError(
            f"event must match noise_multiplier={sigma}, sample_rate={q}, steps={steps}; "
            f"got {history}"
        )


def pin_digest(privacy_block: dict[str, Any]) -> str:
    """SHA-256 binding result.json's privacy block (which holds the ledger head) into one
    value to publish: editing any reported number, or the ledger, changes it.

    The block's own ``"pin"`` key is left out; the block is normalised through JSON so the
    digest of the written file and of the in-memory dict agree.
    """
    body = {k: v for k, v in privacy_block.items() if k != "pin"}
    try:
        text = _canonical_json(json.loads(json.dumps(body, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise PrivacyParameterError("privacy block must be finite JSON to be pinned") from exc
    return hashlib.sha256(_PIN_DOMAIN + text.encode("utf-8")).hexdigest()
