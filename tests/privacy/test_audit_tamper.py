"""The auditor against a tamperer with file access who rewrites the ledger consistently
(rechains every hash, re-makes the pin) and edits result.json: each lie is a finding."""

import json
import sqlite3

import pytest
from test_audit_report import make_run
from typer.testing import CliRunner

from secagg_privacy import accounting
from secagg_privacy.audit.report import audit_run
from secagg_privacy.ledger import (
    KIND_DPSGD,
    PrivacyLedger,
    _canonical_json,
    _chain_hash,
    pin_digest,
)
from secagg_training.cli import app


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


def edit_result(run_dir, edit, *, repin=True):
    result = json.loads((run_dir / "result.json").read_text())
    edit(result)
    if repin:
        result["privacy"]["pin"] = pin_digest(result["privacy"])
    (run_dir / "result.json").write_text(json.dumps(result))


def with_headline(result):
    """The fields `secagg run` writes beside ε: unit, adjacency, guarantee line, round ε."""
    p = result["privacy"]
    eps = max(p["epsilon_per_client"].values())
    p["unit"], p["adjacency"] = "record-level, per client", "add-or-remove-one"
    p["guarantee"] = accounting.guarantee_label(
        unit="one training record of one client",
        adjacency="add-or-remove-one",
        epsilon=eps,
        delta=p["delta"],
    )
    for record in result["rounds"]:
        record["epsilon"] = {c: 0.0 for c in record["participants"]}  # filled below


@pytest.fixture
def honest_run(tmp_path):
    run_dir = make_run(tmp_path)
    with PrivacyLedger.open(run_dir / "ledger") as book:
        per_round = {(e.client, e.round): e.epsilon for e in book.entries(kind=KIND_DPSGD)}

    def fill(result):
        with_headline(result)
        for record in result["rounds"]:
            record["epsilon"] = {c: per_round[(c, record["round"])] for c in record["participants"]}
            record["epsilon_max"] = max(record["epsilon"].values())

    edit_result(run_dir, fill)
    assert audit_run(run_dir, canary=False).findings == []
    return run_dir


def lower_headline(result):
    p = result["privacy"]
    p["epsilon_max"] = 0.5
    p["guarantee"] = p["guarantee"].replace(
        accounting.format_epsilon(max(p["epsilon_per_client"].values())), "0.5"
    )


def weaker_delta_and_adjacency(result):
    result["privacy"]["delta"] = 1e-9
    result["privacy"]["adjacency"] = "replace-one"


def epsilon_just_below(result):
    for c in result["privacy"]["epsilon_per_client"]:
        result["privacy"]["epsilon_per_client"][c] *= 0.991


def round_epsilon_lowered(result):
    result["rounds"][-1]["epsilon"]["client-0"] *= 0.5
    result["rounds"][-1]["epsilon_max"] *= 0.5


def last_round_dropped(result):
    result["rounds"] = result["rounds"][:-1]


def unit_changed(result):
    result["privacy"]["unit"] = "client-level"


@pytest.mark.parametrize(
    ("lie", "named"),
    [
        (lower_headline, "epsilon_max must be at least"),
        (weaker_delta_and_adjacency, "delta must be the ledger's"),
        (weaker_delta_and_adjacency, "adjacency must be the ledger's"),
        (epsilon_just_below, "result.json reports ε="),
        (round_epsilon_lowered, "client-0@5: result.json round ε"),
        (round_epsilon_lowered, "round 5: result.json epsilon_max is below"),
        (last_round_dropped, "ledger spends in rounds absent from result.json: [5]"),
        (unit_changed, "unit must be 'record-level, per client'"),
        (lower_headline, "guarantee must read"),
    ],
)
def test_a_result_json_lie_with_a_remade_pin_is_a_finding(honest_run, lie, named):
    edit_result(honest_run, lie)
    report = audit_run(honest_run, canary=False)
    assert report.status == "FAILED"
    assert any(named in f for f in report.findings), report.findings


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real `secagg run` directory (record-level DP-SGD over the plain scheme)."""
    out = tmp_path_factory.mktemp("real") / "run"
    args = ["run", "--scheme", "plain", "--clients", "3", "--rounds", "2", "--seed", "1"]
    done = CliRunner().invoke(app, [*args, "--model", "logreg", "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out


def test_a_real_run_passes_every_result_check_and_records_n_in_the_ledger(real_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(real_run, run_dir)
    assert audit_run(run_dir, canary=False).findings == []
    result = json.loads((run_dir / "result.json").read_text())
    n = result["privacy"]["nominal_records"]
    assert n == (1797 - 359) // 3
    with PrivacyLedger.open(run_dir / "ledger") as book:
        assert {e.body["extra"]["nominal_records"] for e in book.entries(kind=KIND_DPSGD)} == {n}
    # a result.json claiming another N (a smaller q would mean a smaller ε) is a finding
    edit_result(run_dir, lambda r: r["privacy"].update(nominal_records=10 * n))
    findings = audit_run(run_dir, canary=False).findings
    assert any("nominal_records must be the ledger's N" in f for f in findings), findings
