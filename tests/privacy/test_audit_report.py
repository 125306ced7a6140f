"""``audit_run`` on synthetic run directories: files, budget arithmetic, findings, errors."""

import json
import math
import sqlite3

import pytest
from privacy_testkit import ChaChaSource
from rich.console import Console

from secagg_privacy import accounting
from secagg_privacy.audit.report import (
    AUDIT_JSON,
    AUDIT_MD,
    AUDIT_PLOT,
    RunDirectoryError,
    audit_run,
    render_console,
)
from secagg_privacy.errors import LedgerIntegrityError, PrivacyError
from secagg_privacy.ledger import PrivacyLedger, pin_digest

DELTA = 1e-5
SIGMA, Q, STEPS, CLIP = 4.0, 0.3, 10, 1.0  # 5 rounds × 10 steps: ε ≈ 2.26 per client
BUDGET = 3.0
CLIENTS = ["client-0", "client-1", "client-2"]


def make_run(tmp_path, *, rounds=5, skip=None, reported=None, budget=BUDGET):
    """A run directory as `secagg run` writes it: result.json (DESIGN §6) + ledger."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    event = accounting.sgd_event(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS)
    with PrivacyLedger.open(run_dir / "ledger") as book:
        for c in CLIENTS:
            book.set_budget(c, epsilon=budget, delta=DELTA, round_index=0)
        for r in range(1, rounds + 1):
            for c in CLIENTS:
                if (c, r) == skip:
                    continue
                book.record_round(
                    c,
                    r,
                    event=event,
                    delta=DELTA,
                    noise_multiplier=SIGMA,
                    sample_rate=Q,
                    steps=STEPS,
                    clip_norm=CLIP,
                )
        eps = {c: book.epsilon_spent(c) for c in CLIENTS}
        head = book.head()
    seconds = {"train": 1.0, "protect": 0.1, "aggregate": 0.1, "decrypt": 0.0, "total": 1.2}
    result = {
        "scheme": "plain",
        "config": {"lr": 0.5, "rounds": rounds, "epsilon": budget, "delta": DELTA},
        "rounds": [
            {
                "round": r,
                "accuracy": 0.5,
                "loss": 1.0,
                "participants": CLIENTS,
                "dropped": [],
                "bytes_up_per_client": 10,
                "bytes_down_per_client": 10,
                "seconds": seconds,
            }
            for r in range(1, rounds + 1)
        ],
        "final_accuracy": 0.5,
        "privacy": {
            "enabled": True,
            "accountant": accounting.ACCOUNTANT,
            "delta": DELTA,
            "epsilon_per_client": reported if reported is not None else eps,
            "epsilon_max": max(eps.values()),
            "budget": budget,
            "ledger_head": list(head),
        },
    }
    result["privacy"]["pin"] = pin_digest(result["privacy"])
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def quick(run_dir, **kw):
    return audit_run(run_dir, canary=False, **kw)


# ----------------------------------------------------------------- the happy path


@pytest.mark.slow
def test_audit_writes_the_three_files_and_a_consistent_canary_verdict(tmp_path):
    run_dir = make_run(tmp_path)
    report = audit_run(run_dir, rng_source=ChaChaSource("report-audit"), canaries=400)
    for name in (AUDIT_JSON, AUDIT_MD, AUDIT_PLOT):
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / AUDIT_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((run_dir / AUDIT_JSON).read_text())
    audit = doc["canary"]
    assert audit["steps"] == 5 * STEPS and audit["noise_multiplier"] == SIGMA
    assert audit["theoretical_epsilon"] == pytest.approx(report.clients[0].epsilon_spent, rel=1e-6)
    assert 0 < audit["lower_bound"] <= audit["theoretical_epsilon"]
    assert audit["verdict"] == "consistent" and report.findings == [] and report.passed
    assert doc["passed"] is True and doc["files"] == [AUDIT_JSON, AUDIT_MD, AUDIT_PLOT]
    md = (run_dir / AUDIT_MD).read_text()
    assert "consistent" in md and "add-or-remove-one" in md and AUDIT_PLOT in md


def test_budget_table_and_remaining_rounds(tmp_path):
    report = quick(make_run(tmp_path))
    per_round = accounting.sgd_event(noise_multiplier=SIGMA, sample_rate=Q, steps=STEPS)
    assert [c.client for c in report.clients] == CLIENTS
    for c in report.clients:
        assert c.rounds_trained == 5 and [r for r, _ in c.rounds] == [1, 2, 3, 4, 5]
        assert c.epsilon_spent == pytest.approx(
            accounting.epsilon(noise_multiplier=SIGMA, sample_rate=Q, steps=5 * STEPS, delta=DELTA)
        )
        assert c.epsilon_rdp >= c.epsilon_spent  # RDP is the looser cross-check
        assert c.remaining_epsilon == pytest.approx(BUDGET - c.epsilon_spent)
        # Oracle: k more rounds fit, k + 1 do not.
        k = c.remaining_rounds
        assert k is not None and k >= 1

        def eps_after(extra):
            total = accounting.compose([per_round] * (5 + extra))
            return accounting.epsilon_of_event(total, delta=DELTA)

        assert eps_after(k) <= BUDGET < eps_after(k + 1)


def test_files_go_to_out_dir_and_console_rendering_lists_clients(tmp_path):
    run_dir = make_run(tmp_path)
    out = tmp_path / "elsewhere"
    report = quick(run_dir, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == sorted([AUDIT_JSON, AUDIT_MD, AUDIT_PLOT])
    assert not (run_dir / AUDIT_JSON).exists()
    console = Console(record=True, width=160)
    console.print(render_console(report))
    text = console.export_text()
    assert all(c in text for c in CLIENTS) and "Guarantee" in text
    assert report.guarantee["all_rounds_covered"] is True
    assert report.guarantee["unit"] == "one training record of one client"


# ----------------------------------------------------------------- findings


def test_a_participant_without_a_ledger_entry_is_reported(tmp_path):
    # Threat covered: a round whose spend was never recorded (under-reported ε).
    report = quick(make_run(tmp_path, skip=("client-1", 3)))
    assert any("client-1@3" in f for f in report.findings)
    assert report.guarantee["all_rounds_covered"] is False and not report.passed
    assert "NOT" in report.guarantee["statement"]


def test_result_json_epsilon_disagreeing_with_the_ledger_is_reported(tmp_path):
    reported = {c: 1.0 for c in CLIENTS}  # claims less than the ledger holds
    report = quick(make_run(tmp_path, reported=reported))
    assert sum("result.json reports" in f for f in report.findings) == len(CLIENTS)


def test_exhausted_budget_leaves_no_rounds(tmp_path):
    report = quick(make_run(tmp_path, budget=2.3))
    assert all(c.remaining_rounds == 0 for c in report.clients)


# ----------------------------------------------------------------- errors


def test_missing_run_dir(tmp_path):
    with pytest.raises(RunDirectoryError, match="run directory must exist"):
        quick(tmp_path / "nope")


def test_missing_or_corrupt_result_json(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "result.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match="valid JSON"):
        quick(run_dir)
    (run_dir / "result.json").write_text(json.dumps({"scheme": "plain"}))
    with pytest.raises(RunDirectoryError, match="privacy"):
        quick(run_dir)
    (run_dir / "result.json").unlink()
    with pytest.raises(RunDirectoryError, match="result.json must exist"):
        quick(run_dir)


def test_missing_ledger_is_not_silently_created(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "ledger").unlink()
    with pytest.raises(RunDirectoryError, match="ledger must exist"):
        quick(run_dir)
    assert not (run_dir / "ledger").exists()


def test_garbage_ledger(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "ledger").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PrivacyError):
        quick(run_dir)


def test_tampered_ledger_is_refused(tmp_path):
    # Threat covered: someone lowers a recorded ε in the ledger file to pass the audit.
    run_dir = make_run(tmp_path)
    conn = sqlite3.connect(run_dir / "ledger")
    conn.execute("DROP TRIGGER entries_no_update")
    body = conn.execute("SELECT body FROM entries WHERE seq = 5").fetchone()[0]
    doc = json.loads(body)
    doc["epsilon"] = 0.01
    conn.execute("UPDATE entries SET body = ? WHERE seq = 5", (json.dumps(doc),))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerIntegrityError):
        quick(run_dir)


def test_ledger_without_spend_entries(tmp_path):
    run_dir = make_run(tmp_path, rounds=0)
    with pytest.raises(RunDirectoryError, match="at least one DP-SGD entry"):
        quick(run_dir)


def test_truncated_ledger_against_a_pinned_head(tmp_path):
    run_dir = make_run(tmp_path)
    with PrivacyLedger.open(run_dir / "ledger") as book:
        count, digest = book.head()
    doc = json.loads((run_dir / "result.json").read_text())
    doc["privacy"]["ledger_head"] = [count + 1, digest]  # result.json pinned one more entry
    (run_dir / "result.json").write_text(json.dumps(doc))
    with pytest.raises(LedgerIntegrityError):
        quick(run_dir)


def _audit(**kw):
    from secagg_privacy.audit.report import CanaryAudit
    from secagg_privacy.audit.stats import NoiseScaleCheck

    base = dict(
        audited_client="c",
        noise_multiplier=1.0,
        trained_noise_multiplier=1.0,
        sample_rate=0.1,
        steps=10,
        steps_in_run=10,
        clip_norm=1.0,
        lr=0.1,
        delta=DELTA,
        canaries=1000,
        theoretical_epsilon=2.0,
        lower_bound=0.5,
        beta=0.05,
        guesses=100,
        correct=70,
        gaussian_mu=0.5,
        gaussian_epsilon_estimate=2.1,
        ceiling=5.27,
        verdict="consistent",
        seconds=1.0,
        method="m",
        noise=NoiseScaleCheck(1.0, 1.0, 1.0, 0.99, 1.01, 10_000, 0.01, "consistent"),
    )
    return CanaryAudit(**(base | kw))


def test_canary_caveats_blind_spot_and_suspicious_estimate():
    from secagg_privacy.audit.report import _canary_warnings

    assert _canary_warnings(_audit()) == []
    blind = _canary_warnings(_audit(theoretical_epsilon=8.0, gaussian_epsilon_estimate=7.0))
    assert len(blind) == 1 and "could not reveal a violation" in blind[0]
    loud = _canary_warnings(_audit(gaussian_epsilon_estimate=9.0))
    assert len(loud) == 1 and "noise may be smaller than recorded" in loud[0]


# ----------------------------------------------------------------- forged ledgers and results
# The attacker holds both files and uses the ledger's own API, so the hash chain verifies;
# `repin` models the strongest variant, which also rewrites result.json's head and pin.


def _forge(run_dir, append, *, repin):
    with PrivacyLedger.open(run_dir / "ledger") as book:
        append(book)
        head = book.head()
    if repin:
        doc = json.loads((run_dir / "result.json").read_text())
        doc["privacy"]["ledger_head"] = list(head)
        doc["privacy"]["pin"] = pin_digest(doc["privacy"])
        (run_dir / "result.json").write_text(json.dumps(doc))


def _noop_with_large_delta(book):
    """Past the API's own δ check: the attacker computes the chain itself (``_append``)."""
    body = dict(book.entries(client="client-0")[-1].body)
    for key in ("client", "round", "kind"):
        del body[key]
    body |= {
        "delta": 0.5,
        "steps": 0,
        "event": accounting.event_to_json(
            accounting.sgd_event(noise_multiplier=1.0, sample_rate=0.1, steps=0)
        ),
    }
    book._append("client-0", 99, "dp-sgd", body)


def _budget_raise(book):
    book.set_budget("client-0", epsilon=100.0, delta=DELTA, round_index=6)


def _zero_step_round(book):
    book.record_round(
        "client-1",
        6,
        event=accounting.sgd_event(noise_multiplier=1.0, sample_rate=0.1, steps=0),
        delta=DELTA,
        noise_multiplier=1.0,
        sample_rate=0.1,
        steps=0,
        clip_norm=CLIP,
    )


def _extra_client(book):
    book.set_budget("client-9", epsilon=BUDGET, delta=DELTA, round_index=0)


FORGERIES = {
    "noop-delta-0.5": (_noop_with_large_delta, "δ changed after round 0"),
    "budget-raise": (_budget_raise, "budget changed after round 0"),
    "zero-step-round": (_zero_step_round, "records no DP mechanism"),
    "extra-client": (_extra_client, "in the ledger but missing from result.json"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_an_appended_entry_fails_the_exact_pin(tmp_path, name):
    run_dir = make_run(tmp_path)
    _forge(run_dir, FORGERIES[name][0], repin=False)
    with pytest.raises(LedgerIntegrityError, match="exactly the pinned"):
        quick(run_dir)


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_an_appended_entry_with_a_rewritten_pin_is_still_a_finding(tmp_path, name):
    run_dir = make_run(tmp_path)
    honest = [c.epsilon_spent for c in quick(run_dir).clients]
    append, finding = FORGERIES[name]
    _forge(run_dir, append, repin=True)
    report = quick(run_dir)
    assert report.status == "FAILED" and any(finding in f for f in report.findings), report.findings
    # ε is recomputed from all events at the budget's δ: a δ = 0.5 entry cannot lower it
    assert [c.epsilon_spent for c in report.clients][:3] == pytest.approx(honest)


def test_result_json_edited_after_the_run_breaks_its_pin(tmp_path):
    run_dir = make_run(tmp_path)
    doc = json.loads((run_dir / "result.json").read_text())
    doc["privacy"]["budget"] = 100.0
    (run_dir / "result.json").write_text(json.dumps(doc))
    assert any("does not match its pin" in f for f in quick(run_dir).findings)
    del doc["privacy"]["pin"]
    (run_dir / "result.json").write_text(json.dumps(doc))
    assert any("carries no pin" in f for f in quick(run_dir).findings)


@pytest.mark.parametrize("head", [None, [0, "0" * 64], [-3, "x"], [True, "x"], ["2", "x"], [5]])
def test_a_missing_or_non_positive_pin_is_refused_in_one_line(tmp_path, head):
    run_dir = make_run(tmp_path)
    doc = json.loads((run_dir / "result.json").read_text())
    doc["privacy"]["ledger_head"] = head
    (run_dir / "result.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirectoryError, match="ledger_head must pin the ledger"):
        quick(run_dir)


@pytest.mark.parametrize(
    "rounds", [5, [1, 2], [{"round": "1", "participants": []}], [{"round": 1, "participants": 3}]]
)
def test_malformed_rounds_are_a_named_error_not_a_type_error(tmp_path, rounds):
    run_dir = make_run(tmp_path)
    doc = json.loads((run_dir / "result.json").read_text())
    doc["rounds"] = rounds
    (run_dir / "result.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirectoryError, match="rounds must be a list"):
        quick(run_dir)


def test_a_non_numeric_reported_epsilon_is_a_finding_not_a_skipped_check(tmp_path):
    run_dir = make_run(tmp_path, reported={"client-0": "0.1", "client-1": 1.0, "client-2": None})
    findings = quick(run_dir).findings
    assert sum("must be a number" in f for f in findings) == 2


def test_the_audit_opens_the_ledger_read_only(tmp_path):
    run_dir = make_run(tmp_path)
    before = (run_dir / "ledger").read_bytes()
    (run_dir / "ledger").chmod(0o444)
    report = quick(run_dir)
    assert (run_dir / "ledger").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("ledger")) == ["ledger"]
    # without the canary nothing could have caught a noise bug: not "passed"
    assert report.findings == [] and report.status == "incomplete" and not report.passed


def test_the_printed_guarantee_names_unit_adjacency_epsilon_up_delta_and_threat_model(tmp_path):
    report = quick(make_run(tmp_path))
    eps = max(c.epsilon_spent for c in report.clients)
    up = f"{math.ceil(eps * 1000) / 1000:.3f}"
    statement = report.guarantee["statement"]
    assert f"ε ≤ {up} and δ = 1e-05" in statement
    assert "for the unit 'one training record of one client'" in statement
    assert "under add-or-remove-one adjacency" in statement
    assert "Threat model: record-level DP of each client's local dataset" in statement
    console = Console(record=True, width=200)
    console.print(render_console(report))
    text = " ".join(console.export_text().split())
    assert f"ε ≤ {up}" in text and "add-or-remove-one" in text and "Threat model" in text
