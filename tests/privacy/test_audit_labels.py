"""Printed ε labels round up (never below the true bound)."""

import io

from rich.console import Console
from test_audit_report import _audit

from secagg_privacy.audit.report import _canary_warnings


def test_audit_caveat_rounds_the_claimed_epsilon_up():
    (blind,) = _canary_warnings(_audit(theoretical_epsilon=7.9991, gaussian_epsilon_estimate=7.0))
    assert "the claimed ε 8.000 is above" in blind


def test_piped_round_line_rounds_epsilon_up():
    from secagg_training.cli import _round_line

    class Record:
        round, aborted, accuracy, error = 1, False, 0.5, None
        participants, dropped, refused_budget = ["a", "b"], [], []
        seconds = {"total": 1.0}
        epsilon_max = 1.0001

    out = io.StringIO()
    _round_line(Console(file=out, width=200), Record(), 3)  # type: ignore[arg-type]
    assert "ε max 1.001" in out.getvalue()


def test_an_audited_epsilon_other_than_the_ledgers_is_a_finding(tmp_path):
    from test_audit_report import make_run

    from secagg_privacy.audit.report import _client_statuses, _theory_findings
    from secagg_privacy.ledger import KIND_DPSGD, PrivacyLedger

    run_dir = make_run(tmp_path)  # 5 rounds × 10 steps of one mechanism per client
    with PrivacyLedger.open(run_dir / "ledger") as book:
        clients = _client_statuses(book, KIND_DPSGD, {})
        spent = clients[0].epsilon_spent
        whole = {"audited_client": clients[0].client, "steps": 50, "steps_in_run": 50}
        assert _theory_findings(_audit(**whole, theoretical_epsilon=spent), book, clients) == []
        (found,) = _theory_findings(_audit(**whole, theoretical_epsilon=spent / 2), book, clients)
        assert "differs from the ε" in found
