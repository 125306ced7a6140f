"""Printed ε labels round up (never below the true bound)."""

import io

from rich.console import Console
from test_audit_report import _audit

from privacy.audit.report import _canary_warnings


def test_audit_caveat_rounds_the_claimed_epsilon_up():
    (blind,) = _canary_warnings(_audit(theoretical_epsilon=7.9991, gaussian_epsilon_estimate=7.0))
    assert "the claimed ε 8.000 is above" in blind


def test_piped_round_line_rounds_epsilon_up():
    from training.cli import _round_line

    class Record:
        round, aborted, accuracy, error = 1, False, 0.5, None
        participants, dropped, refused_budget = ["a", "b"], [], []
        seconds = {"total": 1.0}
        epsilon_max = 1.0001

    out = io.StringIO()
    _round_line(Console(file=out, width=200), Record(), 3)  # type: ignore[arg-type]
    assert "ε max 1.001" in out.getvalue()
