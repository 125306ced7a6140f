import sqlite3

import pytest

from secagg_privacy.accounting import ACCOUNTANT, event_from_json, sgd_event
from secagg_privacy.errors import LedgerDuplicateError, LedgerIntegrityError, PrivacyParameterError
from secagg_privacy.ledger import KIND_BUDGET, KIND_DPSGD, PrivacyLedger

DELTA = 1e-5
SIGMA, Q, STEPS, CLIP = 1.0, 0.05, 40, 1.0


def commit(book, client, rnd, *, sigma=SIGMA, q=Q, steps=STEPS):
    return book.record_round(
        client,
        rnd,
        event=sgd_event(noise_multiplier=sigma, sample_rate=q, steps=steps),
        delta=DELTA,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        clip_norm=CLIP,
    )


def filled(path, rounds=3, clients=("c0", "c1")):
    book = PrivacyLedger.open(path)
    for c in clients:
        book.set_budget(c, epsilon=10.0, delta=DELTA, round_index=0, reason="initial")
    for r in range(rounds):
        for c in clients:
            commit(book, c, r)
    return book


def tamper(path, sql, *args):
    """An attacker with file access: drops the append-only triggers, edits rows, and puts
    the triggers back (so only the hash chain can give it away)."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute(sql, args)
    conn.executescript(TRIGGERS)
    conn.commit()
    conn.close()


TRIGGERS = """
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only'); END;
"""


@pytest.mark.parametrize(
    "sql",
    ["DROP TRIGGER entries_no_update", "DROP TRIGGER entries_no_delete", "DELETE FROM meta"],
)
def test_a_missing_trigger_or_meta_row_is_tampering_and_never_recreated(tmp_path, sql):
    path = tmp_path / "ledger"
    filled(path).close()
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(LedgerIntegrityError, match="must have|schema must be"):
        PrivacyLedger.open(path)
    with pytest.raises(LedgerIntegrityError, match="must have|schema must be"):
        PrivacyLedger.open_readonly(path, expected_head=(0, "0" * 64))
    assert path.read_bytes() == before  # nothing repaired behind the auditor's back


def test_read_only_open_needs_the_exact_pinned_head_and_writes_nothing(tmp_path):
    path = tmp_path / "ledger"
    book = filled(path)
    head = book.head()
    book.close()
    path.chmod(0o444)  # a write-protected ledger can still be audited
    try:
        before = path.read_bytes()
        with PrivacyLedger.open_readonly(path, expected_head=head) as ro:
            assert ro.head() == head
        assert path.read_bytes() == before
        for bad in ((head[0] - 1, head[1]), (head[0] + 1, head[1]), (head[0], "f" * 64)):
            with pytest.raises(LedgerIntegrityError, match="pinned"):
                PrivacyLedger.open_readonly(path, expected_head=bad)
        for bad_count in (-1, True, 0.5):
            with pytest.raises(LedgerIntegrityError, match="non-negative integer"):
                PrivacyLedger.open_readonly(path, expected_head=(bad_count, head[1]))
    finally:
        path.chmod(0o644)


def test_entries_hold_everything_needed_to_recompute(tmp_path):
    book = filled(tmp_path / "ledger", rounds=1, clients=("c0",))
    entry = book.entries(client="c0", kind=KIND_DPSGD)[0]
    for key in (
        "unit",
        "adjacency",
        "sampling",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "clip_norm",
        "delta",
        "epsilon",
        "accountant",
        "versions",
        "threat_model",
        "event",
    ):
        assert key in entry.body
    assert entry.body["accountant"] == ACCOUNTANT and entry.body["sampling"] == "poisson"
    assert entry.body["adjacency"] == "add-or-remove-one"
    assert "dp-accounting" in entry.body["versions"]
    assert event_from_json(entry.body["event"]) == sgd_event(
        noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS
    )


def test_cumulative_epsilon_matches_carried_accountant(tmp_path):
    book = filled(tmp_path / "ledger", rounds=5, clients=("c0",))
    rounds = book.summary()["c0"].rounds
    assert [r for r, _ in rounds] == [0, 1, 2, 3, 4]
    assert rounds[-1][1] == pytest.approx(4.776, abs=0.02)  # the notes' 5-round value
    assert [e for _, e in rounds] == sorted(e for _, e in rounds)


def test_survives_reopen_without_loss_or_duplication(tmp_path):
    path = tmp_path / "ledger"
    book = filled(path)
    head = book.head()
    book.close()
    again = PrivacyLedger.open(path, expected_head=head)
    assert again.head() == head and len(again.entries()) == 2 + 6
    assert again.summary() == filled_summary(tmp_path)
    commit(again, "c0", 3)  # appending continues the chain
    again.close()
    assert PrivacyLedger.open(path).verify(recompute_epsilon=True) == 9


def filled_summary(tmp_path):
    return filled(tmp_path / "other").summary()


CRASHER = """
import os, sys
import secagg_privacy.ledger as L
from secagg_privacy.accounting import sgd_event
book = L.PrivacyLedger.open(sys.argv[1])
ev = sgd_event(noise_multiplier=1.0, sample_rate=0.05, steps=40)
kw = dict(event=ev, delta=1e-5, noise_multiplier=1.0, sample_rate=0.05, steps=40, clip_norm=1.0)
book.record_round("c0", 0, **kw)          # committed
real_hash = L._chain_hash
def die_mid_insert(*a):                   # power cut between INSERT and COMMIT
    h = real_hash(*a)
    book._conn.execute("INSERT INTO meta(key, value) VALUES ('half', 'written')")
    os._exit(3)
L._chain_hash = die_mid_insert
book.record_round("c0", 1, **kw)
"""


def test_crash_mid_append_neither_loses_nor_half_writes(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "ledger"
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, str(path)], capture_output=True, timeout=120
    )
    assert done.returncode == 3, done.stderr.decode()[-400:]
    book = PrivacyLedger.open(path)
    assert [(e.client, e.round) for e in book.entries()] == [("c0", 0)]
    assert book.verify(recompute_epsilon=True) == 1
    commit(book, "c0", 1)  # the lost round can be committed once, and only once
    with pytest.raises(LedgerDuplicateError):
        commit(book, "c0", 1)


def test_duplicate_round_is_refused_even_after_reopen(tmp_path):
    path = tmp_path / "ledger"
    book = filled(path, rounds=2)
    with pytest.raises(LedgerDuplicateError, match="repeat"):
        commit(book, "c0", 1)
    book.close()
    book = PrivacyLedger.open(path)
    with pytest.raises(LedgerDuplicateError):
        commit(book, "c1", 0)
    assert len(book.entries()) == 6


def test_sqlite_refuses_update_and_delete(tmp_path):
    path = tmp_path / "ledger"
    filled(path).close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE entries SET round = 9 WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE seq = 3")
    conn.close()


def test_edited_epsilon_is_detected(tmp_path):
    # Threat: someone lowers a client's recorded ε in the file.
    path = tmp_path / "ledger"
    filled(path).close()
    tamper(
        path,
        "UPDATE entries SET body = replace(body, '\"epsilon\":', '\"epsilon\":0.0') WHERE seq = 4",
    )
    with pytest.raises(LedgerIntegrityError, match="entry 4"):
        PrivacyLedger.open(path)


def test_edited_column_is_detected(tmp_path):
    path = tmp_path / "ledger"
    filled(path).close()
    tamper(path, "UPDATE entries SET client = 'c9' WHERE seq = 2")
    with pytest.raises(LedgerIntegrityError):
        PrivacyLedger.open(path)


def test_rehashed_edit_breaks_the_chain(tmp_path):
    # The attacker also recomputes the edited row's hash: the next row's link breaks.
    import secagg_privacy.ledger as L

    path = tmp_path / "ledger"
    filled(path).close()
    conn = sqlite3.connect(path)
    body, prev = conn.execute("SELECT body, prev_hash FROM entries WHERE seq = 3").fetchone()
    forged = body.replace('"steps":40', '"steps":4')
    conn.close()
    tamper(
        path,
        "UPDATE entries SET body = ?, hash = ? WHERE seq = 3",
        forged,
        L._chain_hash(prev, 3, forged),
    )
    with pytest.raises(LedgerIntegrityError, match="entry 4"):
        PrivacyLedger.open(path)


def test_deleted_middle_entry_is_detected(tmp_path):
    path = tmp_path / "ledger"
    filled(path).close()
    tamper(path, "DELETE FROM entries WHERE seq = 3")
    with pytest.raises(LedgerIntegrityError, match="chain"):
        PrivacyLedger.open(path)


def test_truncated_tail_is_detected_with_a_pinned_head(tmp_path):
    path = tmp_path / "ledger"
    book = filled(path)
    head = book.head()
    book.close()
    tamper(path, "DELETE FROM entries WHERE seq >= 6")
    PrivacyLedger.open(path).close()  # a shorter chain is self-consistent ...
    with pytest.raises(LedgerIntegrityError, match="pinned head"):
        PrivacyLedger.open(path, expected_head=head)  # ... but not with the pinned head


def test_garbage_file_is_an_integrity_error(tmp_path):
    path = tmp_path / "ledger"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerIntegrityError):
        PrivacyLedger.open(path)


def test_budget_changes_are_entries(tmp_path):
    book = filled(tmp_path / "ledger", rounds=1)
    book.set_budget("c0", epsilon=4.0, delta=DELTA, round_index=1, reason="operator lowered")
    assert book.budget("c0").epsilon == 4.0
    assert [e.round for e in book.entries(client="c0", kind=KIND_BUDGET)] == [0, 1]
    s = book.summary()["c0"]
    assert s.budget_epsilon == 4.0 and s.delta == DELTA and s.entries == 1
    with pytest.raises(PrivacyParameterError, match="delta"):
        book.set_budget("c0", epsilon=4.0, delta=1e-6, round_index=2)


def test_summary_for_unbudgeted_client(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    commit(book, "solo", 0)
    s = book.summary()["solo"]
    assert s.budget_epsilon is None and s.entries == 1 and s.epsilon_spent == s.rounds[0][1]


def test_inconsistent_entry_is_refused(tmp_path):
    book = PrivacyLedger.open(tmp_path / "ledger")
    with pytest.raises(PrivacyParameterError, match="event must match"):
        book.record_round(
            "c0",
            0,
            event=sgd_event(noise_multiplier=1.0, sample_rate=Q, steps=STEPS),
            delta=DELTA,
            noise_multiplier=2.0,
            sample_rate=Q,
            steps=STEPS,
            clip_norm=CLIP,
        )
    commit(book, "c0", 0)
    with pytest.raises(PrivacyParameterError, match="delta"):
        book.record_round(
            "c0",
            1,
            event=sgd_event(noise_multiplier=1.0, sample_rate=Q, steps=STEPS),
            delta=1e-6,
            noise_multiplier=1.0,
            sample_rate=Q,
            steps=STEPS,
            clip_norm=CLIP,
        )
    with pytest.raises(PrivacyParameterError, match="round"):
        commit(book, "c0", -1)


def test_repr_reveals_no_contents(tmp_path):
    book = filled(tmp_path / "ledger", rounds=1)
    assert "epsilon" not in repr(book) and "c0" not in repr(book)
