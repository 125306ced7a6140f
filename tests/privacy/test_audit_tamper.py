"""The auditor against a tamperer with file access who rewrites the ledger consistently
(rechains every hash, re-makes the pin) and edits result.json: each lie is a finding."""

import json
import sqlite3

from test_audit_report import make_run
from typer.testing import CliRunner

from privacy import accounting
from privacy.audit.report import audit_run
from privacy.ledger import _canonical_json, _chain_hash, pin_digest
from training.cli import app


def rewrite_ledger(run_dir, edit):
    """Drop the triggers, rewrite every row through ``edit(body)``, rechain, restore triggers,
    and re-make result.json's head and pin: what an attacker holding the files can do."""
    db = sqlite3.connect(run_dir / "ledger")
    triggers = [sql for (sql,) in db.execute("select sql from sqlite_master where type='trigger'")]
    for (name,) in db.execute("select name from sqlite_master where type='trigger'").fetchall():
        db.execute(f"drop trigger {name}")
    rows = db.execute("select client, round, kind, body from entries order by seq").fetchall()
    db.execute("delete from entries")
    prev = "0" * 64
    for seq, (client, rnd, kind, body) in enumerate(rows):
        body = _canonical_json(edit(json.loads(body)))
        digest = _chain_hash(prev, seq, body)
        db.execute(
            "insert into entries values (?,?,?,?,?,?,?)",
            (seq, client, rnd, kind, body, prev, digest),
        )
        prev = digest
    for sql in triggers:
        db.execute(sql)
    db.commit()
    db.close()
    result = json.loads((run_dir / "result.json").read_text())
    result["privacy"]["ledger_head"] = [len(rows), prev]
    result["privacy"]["pin"] = pin_digest(result["privacy"])
    (run_dir / "result.json").write_text(json.dumps(result))


def test_events_rewritten_with_a_larger_sigma_and_consistent_epsilon_fail(tmp_path):
    run_dir = make_run(tmp_path)
    history: dict = {}
    eps: dict = {}

    def larger_sigma(body):
        if body.get("event") is None or not body.get("steps"):
            return body
        event = accounting.sgd_event(
            noise_multiplier=2 * body["noise_multiplier"],
            sample_rate=body["sample_rate"],
            steps=body["steps"],
        )
        body["event"] = accounting.event_to_json(event)
        history.setdefault(body["client"], []).append(event)
        body["epsilon"] = accounting.epsilon_of_event(
            accounting.compose(history[body["client"]]), delta=body["delta"]
        )
        eps[body["client"]] = body["epsilon"]
        return body

    rewrite_ledger(run_dir, larger_sigma)
    result = json.loads((run_dir / "result.json").read_text())
    result["privacy"]["epsilon_per_client"] = eps
    result["privacy"]["epsilon_max"] = max(eps.values())
    result["privacy"]["pin"] = pin_digest(result["privacy"])
    (run_dir / "result.json").write_text(json.dumps(result))
    report = audit_run(run_dir, canary=False)
    assert report.status == "FAILED"
    assert any("DP event does not match its σ" in f for f in report.findings), report.findings
    out = CliRunner().invoke(app, ["audit", "--no-canary", str(run_dir)])
    assert out.exit_code == 2, out.output


def test_an_honest_ledger_has_no_event_finding(tmp_path):
    run_dir = make_run(tmp_path)
    rewrite_ledger(run_dir, lambda body: body)  # identity rewrite: same chain, same head
    assert audit_run(run_dir, canary=False).findings == []
